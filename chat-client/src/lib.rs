//! A client for the chat protocol of `chat-proto`: connect with a name,
//! join rooms, say things in them, send direct messages, see who is there,
//! leave.
//!
//! [`Client::connect`] opens a TCP connection (host names, IPv4 and IPv6)
//! and performs the handshake through chat-proto's protocol machine,
//! [`chat_proto::Connection`]: `Hello` asking for names and rooms (the
//! `ROOMS` capability), then the server's `Welcome`, which tells the client
//! its own address as others see it and the longest text the server accepts
//! ([`Session::max_text_len`]); then our `Nick` and the server's `Named`,
//! the name we have ([`Session::name`]; [`Options::name`] chooses it, else
//! the server picks one). We start in the `lobby`, whose roster is the first
//! event. A server without names and rooms, or [`Options::rooms`] off, gives
//! a version 1 session ([`Session::rooms`] is `false`): one room, peers
//! known by address, [`Event::Message`]/[`Event::Joined`]/[`Event::Left`].
//!
//! From then on one driver task owns the socket and drives the machine; the
//! caller holds a [`Sender`] (clonable) and an [`Events`] stream, so
//! sending and receiving run concurrently. Requests ([`Sender::join`],
//! [`Sender::say`], [`Sender::tell`], [`Sender::who`], ...) return once
//! written; their answers come as events ([`Event::Roster`],
//! [`Event::Refused`], ...). The machine answers the server's `Ping`s by
//! itself, so a client that neither sends nor reads stays connected past
//! the server's idle timeout; it also skips message kinds a newer server
//! may send.
//!
//! ```no_run
//! use chat_client::{Client, Event, Options};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), chat_client::Error> {
//!     let mut options = Options::default();
//!     options.name = Some("李雷".into());
//!     let client = Client::connect_with("127.0.0.1:8080", options).await?;
//!     // The name we got: ours, or one the server picked (then the first
//!     // event is a `Refused` saying why).
//!     println!("connected as {:?}", client.session().name);
//!     let (sender, mut events) = client.split();
//!
//!     // Receive in the background while this task sends.
//!     let printer = tokio::spawn(async move {
//!         while let Some(event) = events.next_event().await? {
//!             match event {
//!                 Event::Said { room, from, text } => println!("#{room} <{}> {text}", from.name),
//!                 Event::Told { from, text } => println!("*{}* {text}", from.name),
//!                 Event::Roster { room, members } => {
//!                     let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
//!                     println!("#{room}: {}", names.join(", "));
//!                 }
//!                 Event::Entered { room, member } => println!("#{room}: {} entered", member.name),
//!                 Event::Refused { code, subject, detail } => println!("! {code}: {subject}: {detail}"),
//!                 _ => {}
//!             }
//!         }
//!         Ok::<_, chat_client::Error>(())
//!     });
//!
//!     sender.join("rust").await?;
//!     sender.say("rust", "hello I am jjj").await?;
//!     sender.send("是的你是对的，我是中国人").await?; // the lobby
//!     sender.tell("韩梅梅", "hi, just you").await?;
//!     sender.who("lobby").await?;
//!     sender.exit().await?; // the server acknowledges, the events end
//!     printer.await.expect("printer task panicked")?;
//!     Ok(())
//! }
//! ```
//!
//! # History
//!
//! A server that keeps history (the `HISTORY` capability, asked for by
//! default: [`Options::history`], in force when [`Session::history`])
//! numbers every message. Then:
//!
//! - room and direct messages come as [`Event::Posted`] and
//!   [`Event::Direct`] (instead of `Said` and `Told`), each with its
//!   [`Entry`]: `id`, `prev`, the server's time `at`, sender and text;
//! - [`Sender::say`], [`Sender::tell`] and [`Sender::send`] return the
//!   request's number, and the server answers each with [`Event::Stored`]
//!   (its id: "sent" means stored) or [`Event::Unstored`] (why not);
//! - [`Sender::resume`] and [`Sender::recent`] read a conversation's
//!   stored messages, answered with [`Event::Page`]s (the library asks for
//!   the following pages itself).
//!
//! The library delivers every message of a conversation **once, in id
//! order** (PROTOCOL.md section 9.8): it keeps the last id per
//! conversation, drops duplicates, holds live messages while pages of
//! their conversation are awaited, and when a live message's `prev` is not
//! the last id it has (a gap), resumes from there by itself before
//! delivering it. [`Events::marks`] is where the events read have reached;
//! passed to the next connection as [`Options::resume`], it makes the
//! library resume every room (once the caller has joined it again) and
//! direct conversation from there: the missed messages come as pages,
//! without repeats, or with `missing` set when the server no longer keeps
//! the start. [`Options::recent`] asks for a room's latest messages on
//! entering it.
//!
//! ```no_run
//! use chat_client::{Client, Event, Options};
//!
//! # async fn demo() -> Result<(), chat_client::Error> {
//! let mut options = Options::default();
//! options.recent = 20; // each room's last 20 on entering it
//! loop {
//!     let client = Client::connect_with("127.0.0.1:8080", options.clone()).await?;
//!     let (sender, mut events) = client.split();
//!     sender.join("rust").await?; // resumed from its mark once joined
//!     let seq = sender.say("rust", "back again").await?;
//!     loop {
//!         match events.next_event().await {
//!             Ok(Some(Event::Posted { room, entry })) => println!("#{room} <{}> {}", entry.from.name, entry.text),
//!             Ok(Some(Event::Page { conversation, entries, missing, .. })) => {
//!                 if missing {
//!                     println!("{conversation:?}: earlier messages are no longer available");
//!                 }
//!                 for e in entries {
//!                     println!("~ {:?} <{}> {}", conversation, e.from.name, e.text);
//!                 }
//!             }
//!             Ok(Some(Event::Stored { seq: s, id, .. })) if s == seq => println!("stored as {id}"),
//!             Ok(Some(_)) => {}
//!             Ok(None) => return Ok(()),
//!             Err(_) => break, // lost: reconnect, from where we were
//!         }
//!     }
//!     options.resume = events.marks().clone();
//! }
//! # }
//! ```
//!
//! # Accounts and TLS
//!
//! [`Options::login`] logs in (or registers) instead of connecting as a
//! guest; [`Session::account`] then holds the token to log in with next
//! time, and [`Sender::logout`] revokes it. [`Options::tls`] connects with
//! TLS, trusting a CA or one pinned certificate. A password or token is
//! never sent in plaintext to anything but a loopback address
//! ([`Error::Insecure`], before anything is sent).
//!
//! ```no_run
//! use chat_client::{Client, Fingerprint, Login, Options, TlsOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pin: Fingerprint = "SHA256:5e0b3c7a0000000000000000000000000000000000000000000000000000000f".parse()?;
//! let mut options = Options::default();
//! options.tls = Some(TlsOptions::fingerprint(pin));
//! options.login = Some(Login::Password {
//!     name: "alice".into(),
//!     password: "correct horse battery".into(),
//! });
//! let client = Client::connect_with("chat.example.org:8443", options.clone()).await?;
//! let account = client.session().account.clone().expect("logged in");
//! // Next time, no password: the token.
//! options.login = Some(Login::Token(account.token));
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `client`: connecting, [`Client`], [`Sender`], [`Events`], [`Session`],
//!   [`Options`]. `login`: [`Login`], [`Account`]. `transport`: dialling,
//!   plain or TLS ([`TlsOptions`]); `fingerprint`: [`Fingerprint`].
//! - `driver`: the handshake, and the task that owns the socket and moves
//!   bytes between it and the protocol machine; every protocol rule is the
//!   machine's.
//! - `event`: [`Event`], what the server says in the client's terms, and
//!   how its messages become events (long rosters put back together, our
//!   own name and rooms kept up to date).
//! - `history`: [`Marks`], and the seam between pages and live delivery.
//! - `error`: [`Error`].
//!
//! The `chat-client` binary (feature `cli`, on by default) is a thin
//! terminal front end over this library, in `src/bin/chat-client/`:
//! `main.rs` flags and start-up, `chat.rs` the conversation and
//! reconnecting (resuming history from where it was), `command.rs` what a typed line means, `state.rs` our name
//! and rooms, `render.rs` how lines look, `neutral.rs` making others' text
//! safe to print, `clock.rs` the time of day, `address.rs` the server's
//! address as typed, `ui.rs` the terminal and the pipe.
#![forbid(unsafe_code)]

mod client;
mod driver;
mod error;
mod event;
mod fingerprint;
mod history;
mod login;
mod transport;

pub use chat_proto::{Conversation, Entry, Member, Refusal, RoomInfo, Secret};
pub use client::{Client, Events, Options, Sender, Session};
pub use error::{Error, TlsFailure};
pub use event::Event;
pub use fingerprint::{BadFingerprint, Fingerprint};
pub use history::Marks;
pub use login::{Account, Login};
pub use transport::TlsOptions;
#[doc(hidden)]
pub use transport::handshake_error;
