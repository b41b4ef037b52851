//! Arbitrary bytes into the decoder: it must never panic, never allocate
//! beyond what the frame limit allows, always make progress or stop, agree
//! with itself however the bytes are chunked and with the blocking reader,
//! and every message it yields must re-encode and decode to itself.
#![no_main]

use bytes::BytesMut;
use chat_proto::{ChatCodec, DecodeError, HEADER_LEN, Message, StreamError, blocking};
use chat_proto_fuzz::{SLACK, bounded, codecs, decoded_bound};
use libfuzzer_sys::fuzz_target;

type Outcome = Result<Message, DecodeError>;

fuzz_target!(|data: &[u8]| {
    for codec in codecs() {
        let whole = sans_io(&codec, data, data.len().max(1));
        // The first byte picks a chunk size; the whole input is still the stream.
        let chunk = 1 + usize::from(data.first().copied().unwrap_or(0) % 16);
        assert_eq!(whole, sans_io(&codec, data, chunk), "chunks of {chunk}");
        assert_eq!(whole, from_reader(&codec, data), "blocking reader");
    }
});

/// Feeds `data` to the sans-I/O decoder `chunk` bytes at a time, then ends
/// the stream, and returns every message and error in order.
fn sans_io(codec: &ChatCodec, data: &[u8], chunk: usize) -> Vec<Outcome> {
    // `BytesMut::reserve` may round a growing buffer up to twice its size,
    // so a buffer for one frame may take up to twice header plus limit; a
    // decoded list takes room in proportion to the bytes actually there.
    let payload = codec.max_frame_len().min(data.len());
    let bound = (2 * (HEADER_LEN + codec.max_frame_len())).max(decoded_bound(payload)) + SLACK;
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let (len, cap) = (buf.len(), buf.capacity());
            match bounded(bound, "decode", || codec.decode(&mut buf)) {
                Ok(Some(msg)) => {
                    assert!(buf.len() < len, "a message consumed nothing");
                    reencode(codec, &msg);
                    out.push(Ok(msg));
                }
                Ok(None) => break,
                Err(err @ DecodeError::FrameTooLarge { .. }) => {
                    // Fatal, and detected from the header: nothing consumed or reserved.
                    assert_eq!((buf.len(), buf.capacity()), (len, cap));
                    out.push(Err(err));
                    return out;
                }
                Err(err) => {
                    assert!(buf.len() < len, "{err}: the bad frame was not consumed");
                    assert!(!matches!(err, DecodeError::Truncated { .. }));
                    out.push(Err(err));
                }
            }
        }
    }
    match bounded(bound, "decode_eof", || codec.decode_eof(&mut buf)) {
        Ok(None) => assert!(buf.is_empty()),
        Ok(Some(msg)) => panic!("decode_eof found {msg:?} where decode found none"),
        Err(err @ DecodeError::Truncated { .. }) => out.push(Err(err)),
        Err(err) => panic!("decode_eof: {err} where decode found none"),
    }
    out
}

/// Reads `data` with the blocking helper until it stops.
fn from_reader(codec: &ChatCodec, data: &[u8]) -> Vec<Outcome> {
    // `read_message` allocates the payload at its exact length.
    let payload = codec.max_frame_len().min(data.len());
    let bound = codec.max_frame_len().max(decoded_bound(payload)) + SLACK;
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        let left = rest.len();
        match bounded(bound, "read_message", || {
            blocking::read_message(&mut rest, codec)
        }) {
            Ok(Some(msg)) => out.push(Ok(msg)),
            Ok(None) => {
                assert!(rest.is_empty());
                return out;
            }
            Err(StreamError::Decode(err)) => {
                let fatal = matches!(
                    err,
                    DecodeError::FrameTooLarge { .. } | DecodeError::Truncated { .. }
                );
                out.push(Err(err));
                if fatal {
                    return out;
                }
            }
            Err(err) => panic!("reading from memory failed: {err}"),
        }
        assert!(rest.len() < left, "read_message consumed nothing");
    }
}

/// A decoded message encodes (its canonical form is never longer than what
/// was read) and decodes back to itself.
fn reencode(codec: &ChatCodec, msg: &Message) {
    let mut buf = BytesMut::new();
    codec
        .encode(msg, &mut buf)
        .expect("a decoded message re-encodes within the same limit");
    assert_eq!(codec.decode(&mut buf).unwrap().as_ref(), Some(msg));
    assert!(buf.is_empty());
}
