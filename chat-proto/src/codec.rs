//! The length-prefixed frame codec, with no I/O of its own.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError, LimitError};
use crate::message::Message;
use crate::wire;

/// Length of the frame header: a big-endian `u32` payload length.
pub const HEADER_LEN: usize = 4;

/// Default largest payload, in bytes (64 KiB).
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Smallest frame limit a codec may be given: room for every fixed-size message.
pub const MIN_FRAME_LEN: usize = 64;

/// Largest frame limit a codec may be given (16 MiB).
pub const MAX_FRAME_LEN_CEILING: usize = 16 * 1024 * 1024;

/// Most bytes `decode` reserves ahead of what has arrived of a frame.
const RESERVE_AHEAD: usize = 8 * 1024;

/// Encodes messages into frames and decodes frames into messages.
///
/// The codec works on [`BytesMut`] buffers and never touches a socket:
/// [`decode`](ChatCodec::decode) takes one frame off the front of a buffer and
/// returns `Ok(None)` while the frame is incomplete;
/// [`encode`](ChatCodec::encode) appends one frame. The same limit applies
/// both ways, so a peer can never be sent a frame it would reject.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use chat_proto::{ChatCodec, Message};
///
/// let codec = ChatCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode(&Message::Send { text: "hi".into() }, &mut buf).unwrap();
///
/// // Half a frame is not a message yet.
/// let mut rx = buf.split_to(3);
/// assert_eq!(codec.decode(&mut rx).unwrap(), None);
/// rx.unsplit(buf);
/// assert_eq!(codec.decode(&mut rx).unwrap(), Some(Message::Send { text: "hi".into() }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatCodec {
    max_frame_len: usize,
}

impl Default for ChatCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatCodec {
    /// A codec with the default limit, [`MAX_FRAME_LEN`].
    pub const fn new() -> Self {
        ChatCodec {
            max_frame_len: MAX_FRAME_LEN,
        }
    }

    /// A codec whose largest payload is `max` bytes.
    ///
    /// # Errors
    ///
    /// [`LimitError`] unless `max` is within
    /// [`MIN_FRAME_LEN`]`..=`[`MAX_FRAME_LEN_CEILING`].
    pub const fn with_max_frame_len(max: usize) -> Result<Self, LimitError> {
        if max < MIN_FRAME_LEN || max > MAX_FRAME_LEN_CEILING {
            return Err(LimitError {
                value: max,
                min: MIN_FRAME_LEN,
                max: MAX_FRAME_LEN_CEILING,
            });
        }
        Ok(ChatCodec { max_frame_len: max })
    }

    /// The largest payload this codec accepts or produces.
    pub const fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Appends `msg` as one frame to `dst`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::TooLarge`] if the payload exceeds the limit; `dst` is
    /// then left as it was.
    pub fn encode(&self, msg: &Message, dst: &mut BytesMut) -> Result<(), EncodeError> {
        // A text longer than the limit cannot fit: say so without first
        // copying a possibly huge message into the buffer.
        if text(msg).is_some_and(|t| t.len() > self.max_frame_len) {
            return Err(EncodeError::TooLarge {
                len: wire::encoded_len(msg),
                max: self.max_frame_len,
            });
        }
        let start = dst.len();
        dst.put_u32(0); // patched below, once the payload length is known
        wire::encode(msg, dst);
        let len = dst.len() - start - HEADER_LEN;
        if len > self.max_frame_len {
            dst.truncate(start);
            return Err(EncodeError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        // `len <= MAX_FRAME_LEN_CEILING`, so it fits in a u32.
        dst[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Encodes `msg` into a standalone [`Frame`]: encode once, send the same
    /// bytes to any number of peers.
    ///
    /// # Errors
    ///
    /// [`EncodeError::TooLarge`] if the payload exceeds the limit.
    pub fn frame(&self, msg: &Message) -> Result<Frame, EncodeError> {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + estimate(msg));
        self.encode(msg, &mut buf)?;
        Ok(Frame(buf.freeze()))
    }

    /// Takes one frame off the front of `src` and decodes it.
    ///
    /// Returns `Ok(None)` while the frame is incomplete, having reserved room
    /// for the next 8 KiB of it at most, so memory follows the bytes that
    /// arrive rather than the length a peer claims.
    ///
    /// # Errors
    ///
    /// [`DecodeError::FrameTooLarge`] straight from the header, leaving `src`
    /// untouched; any other [`DecodeError`] after removing the bad frame.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        let Some(len) = self.check(src)? else {
            return Ok(None);
        };
        // Decode in place, then drop the frame: cheaper than splitting it off.
        let msg = wire::decode(&src[HEADER_LEN..HEADER_LEN + len]);
        src.advance(HEADER_LEN + len);
        msg.map(Some)
    }

    /// Like [`decode`](ChatCodec::decode), for when the stream has ended:
    /// an empty buffer is a clean end (`Ok(None)`), a partial frame is an error.
    ///
    /// # Errors
    ///
    /// As `decode`, plus [`DecodeError::Truncated`] for a partial frame.
    pub fn decode_eof(&self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(DecodeError::Truncated {
                have: src.len(),
                need: self.needed(src),
            }),
        }
    }

    /// Validates the header at the front of `src`. Returns the payload length
    /// once the whole frame is buffered, `None` (after reserving room) before.
    fn check(&self, src: &mut BytesMut) -> Result<Option<usize>, DecodeError> {
        let Some(len) = self.header(src)? else {
            return Ok(None);
        };
        let need = HEADER_LEN + len;
        if src.len() < need {
            // Room for the next part of the frame, not all of it: a peer
            // that claims 64 KiB and sends 10 bytes must not cost 64 KiB.
            src.reserve((need - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        Ok(Some(len))
    }

    /// Reads and checks the length prefix, if all four bytes are there.
    pub(crate) fn header(&self, src: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(head) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = (&head[..]).get_u32();
        if len as usize > self.max_frame_len {
            return Err(DecodeError::FrameTooLarge {
                len: len.into(),
                max: self.max_frame_len,
            });
        }
        Ok(Some(len as usize))
    }

    /// Total bytes the frame at the front of `src` needs, as far as known.
    fn needed(&self, src: &[u8]) -> usize {
        match self.header(src) {
            Ok(Some(len)) => HEADER_LEN + len,
            _ => HEADER_LEN,
        }
    }
}

/// The message's text, if it carries one.
fn text(msg: &Message) -> Option<&str> {
    match msg {
        Message::Send { text } | Message::Relay { text, .. } | Message::Error { reason: text } => {
            Some(text)
        }
        _ => None,
    }
}

/// A rough payload size, so a frame's buffer is allocated once.
fn estimate(msg: &Message) -> usize {
    text(msg).map_or(0, str::len) + 32
}

/// One encoded frame, header included, ready to be written as is.
///
/// Cloning is cheap (a reference count), so a server encodes a
/// [`Message::Relay`] once and hands the same bytes to every recipient.
///
/// # Examples
///
/// ```
/// use chat_proto::{ChatCodec, Message};
///
/// let frame = ChatCodec::new()
///     .frame(&Message::relay("127.0.0.1:3075".parse().unwrap(), "hello!!"))
///     .unwrap();
/// let copy = frame.clone(); // no copy of the payload
/// assert_eq!(frame.as_bytes().as_ptr(), copy.as_bytes().as_ptr());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame(Bytes);

impl Frame {
    /// The frame's bytes: header then payload.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The frame's bytes, by value.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Total length, header included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a frame has at least a header. Present for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Frame> for Bytes {
    fn from(frame: Frame) -> Bytes {
        frame.0
    }
}
