//! The chat protocol: typed messages, a length-prefixed codec, and the
//! protocol's rules as a state machine, with no I/O of their own.
//!
//! A client says `Hello`, the server answers `Welcome`, then the client sends
//! [`Message::Send`] and every *other* connected client receives it as a
//! [`Message::Relay`] tagged with the sender's address. [`Message::Exit`]
//! leaves; the server acknowledges it with `Exit` before closing. The
//! optional ROOMS capability adds names, rooms and direct messages (see
//! below).
//!
//! # Speaking the protocol: `Connection`
//!
//! [`Connection`] is one end of a chat connection, client or server
//! ([`Role`]), in the manner of quinn-proto and rustls: bytes in, events and
//! bytes out, no socket and no clock. It owns everything `PROTOCOL.md` says
//! about a conversation: the handshake and the version and feature
//! negotiation, who may send what, answering `Ping`, the `Exit` and `Error`
//! close sequences, and the frame limit in each direction: a server with
//! frame limit `L` accepts payloads of `L -` [`RELAY_OVERHEAD`] from a
//! client and announces that in `Welcome`, so that every relay fits `L`; the
//! client raises its own inbound limit to match, and
//! [`Connection::max_text_len`] is then the longest text it may send
//! (65,512 bytes by default). Whoever owns the socket only moves bytes:
//!
//! 1. read from the socket into [`Connection::input`];
//! 2. call [`Connection::poll`] until `Ok(None)`, handling each [`Event`];
//! 3. write what [`Connection::transmit`] hands out (the `Hello`, `Pong`
//!    answers, a final `Error` or `Exit`);
//! 4. at the end of the stream, call [`Connection::eof`].
//!
//! A client over a tokio `TcpStream`, which stays connected as long as the
//! server does (it answers the server's `Ping`s without being asked):
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use chat_proto::{Connection, Event, Message};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::TcpStream;
//!
//! async fn chat(mut stream: TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut conn = Connection::client(Default::default());
//!     loop {
//!         // Take every complete frame; Ping is answered inside `poll`.
//!         let polled = loop {
//!             match conn.poll() {
//!                 Ok(Some(Event::Welcome(session))) => {
//!                     println!("connected as {}", session.addr);
//!                     conn.send(&Message::Send {
//!                         text: "你好, world".into(),
//!                     })?;
//!                 }
//!                 Ok(Some(Event::Message(Message::Relay { ip, port, text }))) => {
//!                     println!("{}: {text}", SocketAddr::new(ip, port));
//!                 }
//!                 Ok(Some(other)) => println!("{other:?}"),
//!                 Ok(None) => break Ok(()),
//!                 Err(broken) => break Err(broken),
//!             }
//!         };
//!         // Write what the machine queued: Hello, Pongs, our Send, a last Error.
//!         if let Some(bytes) = conn.transmit() {
//!             stream.write_all(&bytes).await?;
//!         }
//!         polled?;
//!         if conn.is_closed() {
//!             return Ok(()); // the server's Exit or Error
//!         }
//!         if stream.read_buf(conn.input()).await? == 0 {
//!             return Ok(conn.eof()?);
//!         }
//!     }
//! }
//! ```
//!
//! A server drives the same machine in the [`Role::Server`] role: it is told
//! of the client's `Hello` ([`Event::Hello`]), admits it with
//! [`Connection::accept`] or turns it away with [`Connection::refuse`], and
//! ends with [`Connection::exit`] or [`Connection::shutdown`]. The
//! [`connection`] module shows both ends talking through buffers.
//!
//! Without an async runtime, [`blocking::Client`] drives a `Connection`
//! over any `std::io::Read + Write` stream.
//!
//! # Names, rooms and direct messages: the ROOMS capability
//!
//! A client that sets [`features::ROOMS`] in its [`ClientConfig`] gets, from
//! a server that offers it (the default [`ServerConfig`] does), a name
//! ([`Message::Nick`], answered by [`Message::Named`]), named rooms
//! ([`Message::Join`], [`Message::Say`], relayed as [`Message::Said`]),
//! direct messages ([`Message::Tell`] → [`Message::Told`]), rosters and
//! typed refusals ([`Message::Refused`] with a [`Refusal`] code). The
//! machine enforces the capability's rules: neither side may send its
//! messages unless it was negotiated, the client's first request is `Nick`,
//! and such a client accepts frames of up to `max_frame +`
//! [`ROOMS_OVERHEAD`]. `PROTOCOL.md` section 8 specifies it; what the
//! server does with the requests is the server's.
//!
//! ```
//! use chat_proto::{ClientConfig, Connection, Event, Message, features};
//!
//! let mut config = ClientConfig::default();
//! config.features = features::ROOMS;
//! let mut client = Connection::client(config);
//! let mut server = Connection::server(Default::default()); // offers ROOMS
//!
//! server.receive(&client.transmit().unwrap());
//! let Some(Event::Hello { features: asked, .. }) = server.poll()? else { panic!() };
//! assert_eq!(asked, features::ROOMS);
//! server.accept("127.0.0.1:3075".parse()?);
//!
//! client.receive(&server.transmit().unwrap());
//! let Some(Event::Welcome(session)) = client.poll()? else { panic!() };
//! assert!(session.has(features::ROOMS));
//! assert_eq!(client.max_frame_in(), 65_816); // max_frame + ROOMS_OVERHEAD
//!
//! // The first request names the client; the server answers Named.
//! let nick = Message::Nick { name: "张三".into() };
//! client.send(&nick)?;
//! server.receive(&client.transmit().unwrap());
//! assert_eq!(server.poll()?, Some(Event::Message(nick)));
//! let named = Message::Named { name: "张三".into() };
//! server.send(&named)?;
//! client.receive(&server.transmit().unwrap());
//! assert_eq!(client.poll()?, Some(Event::Message(named)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Durable history: the HISTORY capability
//!
//! A client that asks for [`features::HISTORY`] together with ROOMS (it is
//! never granted alone: [`features::agree`]) gets its room and direct
//! messages as [`Message::Posted`] and [`Message::Direct`], each an
//! [`Entry`] with its id, the id before it in its [`Conversation`] (to
//! detect gaps) and the server's timestamp; it pages through stored
//! messages with [`Message::Resume`] and [`Message::Recent`], answered by
//! [`Message::Page`]. Every `Say`, `Tell` and `Send` of such a session is
//! numbered by both machines ([`Connection::seq`] on the client side,
//! [`Event::Numbered`] on the server side) and answered with
//! [`Message::Stored`] (its id) or [`Message::Unstored`]. Such a client
//! accepts frames of up to `max_frame +` [`HISTORY_OVERHEAD`].
//! `PROTOCOL.md` section 9 specifies it, including how pages join live
//! delivery without a gap or a duplicate.
//!
//! ```
//! use chat_proto::{ClientConfig, Connection, Event, Message, features};
//!
//! let mut config = ClientConfig::default();
//! config.features = features::ROOMS | features::HISTORY;
//! let mut client = Connection::client(config);
//! let mut server = Connection::server(Default::default()); // offers both
//! server.receive(&client.transmit().unwrap());
//! server.poll()?; // Hello
//! server.accept("127.0.0.1:3075".parse()?);
//! client.receive(&server.transmit().unwrap());
//! client.poll()?; // Welcome
//! assert_eq!(client.max_frame_in(), 65_836); // max_frame + HISTORY_OVERHEAD
//!
//! client.send(&Message::Nick { name: "张三".into() })?;
//! let say = Message::Say { room: "lobby".into(), text: "大家好".into() };
//! client.send(&say)?;
//! assert_eq!(client.seq(), 1); // this Say is request 1
//!
//! server.receive(&client.transmit().unwrap());
//! server.poll()?; // Nick
//! let Some(Event::Numbered { seq, message }) = server.poll()? else { panic!() };
//! assert_eq!((seq, message), (1, say));
//! // Once the message is durably stored, as id 42:
//! server.send(&Message::Stored { seq, id: 42, at: 1_764_892_800_000 })?;
//! client.receive(&server.transmit().unwrap());
//! assert!(matches!(client.poll()?, Some(Event::Message(Message::Stored { seq: 1, id: 42, .. }))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Underneath, [`ChatCodec`] turns messages into frames and frames into
//! messages over [`bytes::BytesMut`]. [`blocking::read_message`] and
//! [`blocking::write_message`] move frames over `std::io` streams and, with
//! the `tokio-codec` feature, `ChatCodec` implements tokio-util's
//! `Decoder`/`Encoder` for `Framed<TcpStream, ChatCodec>`; these move frames
//! only, and leave the protocol's rules (answering `Ping` included) to their
//! caller.
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
mod refusal;
mod secret;
#[cfg(feature = "tokio-codec")]
mod tokio_codec;
mod wire;

pub use codec::{
    ChatCodec, Frame, HEADER_LEN, MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN,
};
pub use connection::{
    ClientConfig, Connection, Event, HANDSHAKE_FRAME_LEN, HANDSHAKE_FRAME_MIN, HISTORY_OVERHEAD,
    Negotiated, RELAY_OVERHEAD, ROOMS_OVERHEAD, Role, ServerConfig, State,
};
pub use error::{
    ClientError, DecodeError, EncodeError, LimitError, ProtocolError, SendError, StreamError,
};
pub use message::{Conversation, Entry, Member, Message, Refusal, RoomInfo, VERSION, features};
pub use secret::{Secret, secret_may_travel};
