//! Errors, typed by layer: what went wrong decoding bytes, encoding a message,
//! or moving frames over a byte stream.

use std::io;

/// A frame could not be decoded: the peer sent something this protocol does
/// not allow.
///
/// Every variant except [`FrameTooLarge`](DecodeError::FrameTooLarge) and
/// [`Truncated`](DecodeError::Truncated) is raised after the offending frame
/// has been removed from the buffer, so the stream stays in step and a caller
/// may choose to skip the frame (useful for [`UnknownVariant`](DecodeError::UnknownVariant)
/// from a newer peer). After `FrameTooLarge` the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix exceeds the codec's maximum. Detected from the 4-byte
    /// header alone: nothing of the payload is buffered or allocated.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The length the peer claimed.
        len: u64,
        /// The codec's maximum payload length.
        max: usize,
    },
    /// A length prefix of zero: no message is empty.
    #[error("empty frame (length prefix 0)")]
    EmptyFrame,
    /// The payload's variant tag names no message this version knows.
    #[error("unknown message variant {tag}")]
    UnknownVariant {
        /// The tag that was read.
        tag: u32,
    },
    /// A text field is not valid UTF-8.
    #[error("text is not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// How many bytes of the string were valid.
        valid_up_to: usize,
    },
    /// The payload decoded to a message but bytes were left over.
    #[error("frame has {} trailing byte(s) after the message ({used} of {len} used)", len - used)]
    TrailingBytes {
        /// The payload length.
        len: usize,
        /// How many bytes the message used.
        used: usize,
    },
    /// The payload does not decode as a message.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The stream ended inside a frame.
    #[error("connection closed mid-frame ({have} of {need} bytes received)")]
    Truncated {
        /// Bytes of the frame received.
        have: usize,
        /// Bytes the frame needed (header included, when known).
        need: usize,
    },
}

/// A message could not be encoded. This is local misuse, not a peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message is larger than the codec's maximum frame length;
    /// nothing was written.
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge {
        /// The encoded payload length.
        len: usize,
        /// The codec's maximum payload length.
        max: usize,
    },
}

/// A frame limit outside the range the codec supports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame limit {value} is outside {min}..={max}")]
pub struct LimitError {
    /// The requested limit.
    pub value: usize,
    /// The smallest allowed limit.
    pub min: usize,
    /// The largest allowed limit.
    pub max: usize,
}

/// An error moving frames over a byte stream: the blocking helpers and the
/// tokio codec return this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream itself failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A message to send could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl From<StreamError> for io::Error {
    fn from(err: StreamError) -> Self {
        match err {
            StreamError::Io(e) => e,
            StreamError::Decode(e) => io::Error::new(io::ErrorKind::InvalidData, e),
            StreamError::Encode(e) => io::Error::new(io::ErrorKind::InvalidInput, e),
        }
    }
}

/// A rule of the protocol broken by the peer, as a [`Connection`](crate::Connection)
/// detects it. Its text is the `reason` of the `Error` the machine sends
/// the peer before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame could not be decoded (or the stream ended inside one).
    #[error("invalid frame: {0}")]
    Frame(#[from] DecodeError),
    /// A server was sent an HTTP request.
    #[error("this is a chat server, not an HTTP server")]
    Http,
    /// A server's plaintext port was sent a TLS handshake.
    #[error("this port speaks plaintext chat, not TLS")]
    Tls,
    /// A version this end cannot speak: 0 in `Hello`, or one in `Welcome`
    /// that the client did not offer.
    #[error(
        "unsupported protocol version {version} (this end speaks 1..={})",
        crate::VERSION
    )]
    Version {
        /// The version received.
        version: u16,
    },
    /// The handshake's message was expected first.
    #[error("expected {expected} first, got {got}")]
    OutOfTurn {
        /// What the rules call for (`Hello` or `Welcome`).
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// A handshake message after the handshake.
    #[error("protocol violation: {got} after the handshake")]
    Repeated {
        /// `Hello` or `Welcome`.
        got: &'static str,
    },
    /// A message the peer's role may not send.
    #[error("protocol violation: {role}s may not send {got}")]
    NotAllowed {
        /// The peer's role.
        role: crate::Role,
        /// The message's name.
        got: &'static str,
    },
    /// A `Welcome` the client cannot work with.
    #[error("unusable Welcome: {0}")]
    BadWelcome(String),
    /// A message of a capability the handshake did not agree on.
    #[error("protocol violation: {got} belongs to a capability not negotiated in the handshake")]
    NotNegotiated {
        /// The message's name.
        got: &'static str,
    },
    /// A `Stored` or `Unstored` whose number names no request the client
    /// sent ([`features::HISTORY`](crate::features::HISTORY)).
    #[error("protocol violation: {got} answers request {seq}, but the client sent {sent}")]
    UnknownSeq {
        /// `Stored` or `Unstored`.
        got: &'static str,
        /// The number it carries.
        seq: u64,
        /// How many numbered requests the client sent.
        sent: u64,
    },
    /// A message that a [`features::HISTORY`](crate::features::HISTORY)
    /// session replaces with another (`Said` by `Posted`, `Told` by `Direct`).
    #[error("protocol violation: {got} in a HISTORY session, which uses {by}")]
    Replaced {
        /// The message's name.
        got: &'static str,
        /// What the session uses instead.
        by: &'static str,
    },
    /// A login request (`Register`, `Login`, `LoginToken`) from a client
    /// already named ([`features::AUTH`](crate::features::AUTH)).
    #[error("protocol violation: {got} after the client was named")]
    AlreadyNamed {
        /// The message's name.
        got: &'static str,
    },
}

/// Why [`Connection`](crate::Connection) refused to send a message (caller
/// misuse; nothing was queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is not in its open state.
    #[error("the connection is not open (state {state:?})")]
    NotOpen {
        /// Its state.
        state: crate::State,
    },
    /// This role may not send this message, or it has its own call
    /// (`Hello`, `Welcome`, `Exit`, `Error`).
    #[error("a {role} does not send {name} this way")]
    NotAllowed {
        /// This end's role.
        role: crate::Role,
        /// The message's name.
        name: &'static str,
    },
    /// Over the peer's frame limit.
    #[error(transparent)]
    TooLarge(#[from] EncodeError),
    /// A message of a capability the handshake did not agree on.
    #[error("{name} belongs to a capability the server did not grant")]
    NotNegotiated {
        /// The message's name.
        name: &'static str,
    },
    /// With [`features::ROOMS`](crate::features::ROOMS) in force, a client's
    /// first request after `Welcome` must be `Nick`.
    #[error("send Nick before {name}: the first request after Welcome names the client")]
    NickFirst {
        /// The message's name.
        name: &'static str,
    },
    /// With [`features::AUTH`](crate::features::AUTH) in force, `Register`,
    /// `Login` and `LoginToken` come only before the client is named.
    #[error("{name} comes only before the client is named: log in when connecting")]
    AlreadyNamed {
        /// The message's name.
        name: &'static str,
    },
    /// With [`features::HISTORY`](crate::features::HISTORY) in force, a
    /// server sends `Posted` instead of `Said` and `Direct` instead of `Told`.
    #[error("{name} is replaced by {by} in a HISTORY session")]
    Replaced {
        /// The message's name.
        name: &'static str,
        /// What to send instead.
        by: &'static str,
    },
    /// A server's `Stored` or `Unstored` for a request number it has not
    /// received (numbers run from 1 to [`Connection::seq`](crate::Connection::seq)).
    #[error("{name} for request {seq}, but only {received} were received")]
    UnknownSeq {
        /// `Stored` or `Unstored`.
        name: &'static str,
        /// The number it carries.
        seq: u64,
        /// How many numbered requests were received.
        received: u64,
    },
}

/// Why a [`blocking::Client`](crate::blocking::Client) call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The stream itself failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The server broke a rule of the protocol; it was told why before the
    /// connection closed.
    #[error("the server broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// A message this client was asked to send could not be sent (too long
    /// for the server, or the connection is not open); nothing was sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The server answered `Hello` with `Error { reason }` (full, shutting
    /// down, ...).
    #[error("the server refused the connection: {0}")]
    Refused(String),
    /// The stream ended before the server's `Welcome`.
    #[error("the server closed the connection during the handshake")]
    Closed,
}
