//! A client for the chat protocol of `chat-proto`: connect, send text, read
//! what the others say, leave.
//!
//! [`Client::connect`] opens a TCP connection (host names, IPv4 and IPv6)
//! and performs the handshake through chat-proto's protocol machine,
//! [`chat_proto::Connection`]: `Hello`, then the server's `Welcome`, which
//! tells the client its own address as others see it and the longest text
//! the server accepts ([`Session::max_text_len`]). From then on one driver
//! task owns the socket and drives the machine; the caller holds a
//! [`Sender`] (clonable) and an [`Events`] stream, so sending and receiving
//! run concurrently. The machine answers the server's `Ping`s by itself, so
//! a client that neither sends nor reads stays connected past the server's
//! idle timeout; it also skips message kinds a newer server may send.
//!
//! ```no_run
//! use chat_client::{Client, Event};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), chat_client::Error> {
//!     let client = Client::connect("127.0.0.1:8080").await?;
//!     let (sender, mut events) = client.split();
//!
//!     // Receive in the background while this task sends.
//!     let printer = tokio::spawn(async move {
//!         while let Some(event) = events.next_event().await? {
//!             if let Event::Message { from, text } = event {
//!                 println!("[{from}] {text}");
//!             }
//!         }
//!         Ok::<_, chat_client::Error>(())
//!     });
//!
//!     sender.send("hello I am jjj").await?;
//!     sender.send("是的你是对的，我是中国人").await?;
//!     sender.exit().await?; // the server acknowledges, the events end
//!     printer.await.expect("printer task panicked")?;
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//!
//! - `client`: connecting, [`Client`], [`Sender`], [`Events`], [`Session`],
//!   [`Options`].
//! - `driver`: the handshake, and the task that owns the socket and moves
//!   bytes between it and the protocol machine; every protocol rule is the
//!   machine's.
//! - `event`: [`Event`], what the server says in the client's terms.
//! - `error`: [`Error`].
//!
//! The `chat-client` binary (feature `cli`, on by default) is a thin
//! terminal front end over this library: `src/bin/chat-client/` (`main.rs`
//! the conversation, `command.rs` what a line means, `ui.rs` the terminal
//! and the pipe).
#![forbid(unsafe_code)]

mod client;
mod driver;
mod error;
mod event;

pub use client::{Client, Events, Options, Sender, Session};
pub use error::Error;
pub use event::Event;
