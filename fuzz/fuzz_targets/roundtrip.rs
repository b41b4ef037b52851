//! Any message encodes and decodes to itself, through the sans-I/O codec, a
//! shared `Frame` and the blocking reader, or is refused as too large with
//! nothing written.
#![no_main]

use bytes::BytesMut;
use chat_proto::{EncodeError, HEADER_LEN, Message, blocking};
use chat_proto_fuzz::codecs;
use libfuzzer_sys::fuzz_target;

const PREFIX: &[u8] = b"earlier frames";

fuzz_target!(|msg: Message| {
    for codec in codecs() {
        let mut buf = BytesMut::from(PREFIX);
        match codec.encode(&msg, &mut buf) {
            Ok(()) => {
                let mut rx = buf.split_off(PREFIX.len());
                let len = u32::from_be_bytes(rx[..HEADER_LEN].try_into().unwrap()) as usize;
                assert_eq!(len, rx.len() - HEADER_LEN);
                assert!(len <= codec.max_frame_len());

                let frame = codec.frame(&msg).expect("encode succeeded, so frame must");
                assert_eq!(&frame.as_bytes()[..], &rx[..]);

                assert_eq!(codec.decode(&mut rx).unwrap().as_ref(), Some(&msg));
                assert!(rx.is_empty());

                let mut r = &frame.as_bytes()[..];
                let read = blocking::read_message(&mut r, &codec).unwrap();
                assert_eq!(read.as_ref(), Some(&msg));
                assert!(r.is_empty());
            }
            Err(EncodeError::TooLarge { len, max }) => {
                assert!(len > max);
                assert_eq!(max, codec.max_frame_len());
                assert_eq!(&buf[..], PREFIX, "a refused message wrote something");
                assert!(codec.frame(&msg).is_err());
            }
            Err(err) => panic!("unexpected encode error: {err}"),
        }
    }
});
