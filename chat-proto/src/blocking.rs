//! Blocking helpers over `std::io`, for programs without an async runtime
//! (a thread per client, as in the original lab).
//!
//! They read exactly one frame and no further, so the reader needs no buffer
//! of its own and can be shared with other code between calls. Wrap a raw
//! socket in a [`std::io::BufWriter`] if you write many small messages.

use std::io::{self, Read, Write};

use bytes::BytesMut;

use crate::codec::{ChatCodec, HEADER_LEN};
use crate::error::{DecodeError, StreamError};
use crate::message::Message;
use crate::wire;

/// Reads one message from `r`.
///
/// Returns `Ok(None)` on a clean end of stream before a frame starts.
///
/// # Errors
///
/// [`StreamError::Io`] if reading fails; [`StreamError::Decode`] if the frame
/// is invalid, including [`DecodeError::Truncated`] when the stream ends
/// inside a frame. An oversized length is rejected before any payload is read.
///
/// # Examples
///
/// ```
/// use chat_proto::{blocking, ChatCodec, Message};
///
/// let codec = ChatCodec::new();
/// let mut wire = Vec::new();
/// blocking::write_message(&mut wire, &codec, &Message::Exit).unwrap();
/// let mut rx = &wire[..];
/// assert_eq!(blocking::read_message(&mut rx, &codec).unwrap(), Some(Message::Exit));
/// assert_eq!(blocking::read_message(&mut rx, &codec).unwrap(), None);
/// ```
pub fn read_message<R: Read + ?Sized>(
    r: &mut R,
    codec: &ChatCodec,
) -> Result<Option<Message>, StreamError> {
    let mut head = [0u8; HEADER_LEN];
    let got = read_full(r, &mut head)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(DecodeError::Truncated {
            have: got,
            need: HEADER_LEN,
        }
        .into());
    }
    let len = codec.header(&head)?.expect("a whole header was read");
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(DecodeError::Truncated {
            have: HEADER_LEN + got,
            need: HEADER_LEN + len,
        }
        .into());
    }
    Ok(Some(wire::decode(&payload)?))
}

/// Writes `msg` to `w` as one frame, in a single `write_all`.
///
/// # Errors
///
/// [`StreamError::Encode`] if the message exceeds the codec's limit (nothing
/// is written); [`StreamError::Io`] if writing fails.
pub fn write_message<W: Write + ?Sized>(
    w: &mut W,
    codec: &ChatCodec,
    msg: &Message,
) -> Result<(), StreamError> {
    let mut buf = BytesMut::new();
    codec.encode(msg, &mut buf)?;
    w.write_all(&buf)?;
    Ok(())
}

/// Fills `buf` as far as the stream allows; returns how many bytes were read.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
