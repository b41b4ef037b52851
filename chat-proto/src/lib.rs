//! Typed messages and a length-prefixed codec for a small TCP chat protocol.
//!
//! A client says `Hello`, the server answers `Welcome`, then the client sends
//! [`Message::Send`] and every *other* connected client receives it as a
//! [`Message::Relay`] tagged with the sender's address. [`Message::Exit`]
//! leaves; the server acknowledges it with `Exit` before closing.
//!
//! The core is sans-I/O: [`ChatCodec`] turns messages into bytes and bytes
//! into messages over [`bytes::BytesMut`], and never touches a socket. On top
//! of it sit [`blocking`] helpers for `std::io` streams and, with the
//! `tokio-codec` feature, tokio-util's `Decoder`/`Encoder` so that
//! `Framed<TcpStream, ChatCodec>` works.
//!
//! # Wire format
//!
//! Every message travels as one frame:
//!
//! ```text
//! +----------------+--------------------------------+
//! | length: u32 BE |      payload: length bytes      |
//! +----------------+--------------------------------+
//!    4 bytes          1 ..= max_frame_len (64 KiB)
//! ```
//!
//! The payload is the message in bincode 2's standard encoding: a varint
//! variant tag, then the fields in order (varint integers, strings as a
//! varint byte length plus UTF-8, `IpAddr` as tag 0 + 4 bytes or tag 1 + 16
//! bytes). An oversized length is rejected from the header alone, before any
//! payload is buffered. `PROTOCOL.md` beside this crate gives every byte,
//! the handshake and the limits, with hex examples that the tests check.
//!
//! # Examples
//!
//! ```
//! use bytes::BytesMut;
//! use chat_proto::{ChatCodec, DecodeError, Message};
//!
//! let codec = ChatCodec::new();
//! let mut buf = BytesMut::new();
//! codec.encode(&Message::Send { text: "hello I am jjj".into() }, &mut buf)?;
//! codec.encode(&Message::Send { text: "是的你是对的，我是中国人".into() }, &mut buf)?;
//!
//! // Two frames in one buffer come out as two messages, then "need more bytes".
//! assert_eq!(codec.decode(&mut buf)?, Some(Message::Send { text: "hello I am jjj".into() }));
//! assert_eq!(codec.decode(&mut buf)?, Some(Message::Send { text: "是的你是对的，我是中国人".into() }));
//! assert_eq!(codec.decode(&mut buf)?, None);
//!
//! // A hostile 4 GiB length prefix is refused before anything is allocated.
//! let mut evil = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
//! assert_eq!(
//!     codec.decode(&mut evil).unwrap_err().to_string(),
//!     "frame of 4294967295 bytes exceeds the 65536-byte limit",
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `tokio-codec`: `tokio_util::codec::{Decoder, Encoder}` for [`ChatCodec`].
//! - `arbitrary`: `arbitrary::Arbitrary` for [`Message`], for fuzzing.
//!
//! With no features the crate depends only on `bytes`, `serde`, `thiserror`
//! and `bincode`.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod blocking;
mod codec;
pub mod connection;
mod error;
mod message;
#[cfg(feature = "tokio-codec")]
mod tokio_codec;
mod wire;

pub use codec::{
    ChatCodec, Frame, HEADER_LEN, MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN,
};
pub use connection::{
    ClientConfig, Connection, Event, Negotiated, RELAY_OVERHEAD, Role, ServerConfig, State,
};
pub use error::{DecodeError, EncodeError, LimitError, ProtocolError, SendError, StreamError};
pub use message::{Message, VERSION, features};
