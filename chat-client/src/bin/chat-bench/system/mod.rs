//! The protocol adapters `fanout` and `rooms` drive: one per system under
//! test.
//!
//! Each gives a client what the workload needs and nothing more: publish
//! one payload, write and read without waiting, wait for readiness, and
//! hand over every payload a read completed. The workload, the payload
//! format (`crate::payload`) and the verification are the same for all;
//! NATS and Redis do not tag a delivery with its sender, so the sender is
//! the one the payload names.
//!
//! - `chat`: this repository's server, over [`crate::conn::Client`]; a
//!   delivery carries the sender's address, which is checked too. A named
//!   client says its payloads in its rooms (`Say`, `Said`), where a
//!   delivery also carries the sender's name and the room.
//! - `nats`: NATS core protocol, `CONNECT` with echo off, `SUB`, `PUB`.
//! - `redis`: RESP2, one `SUBSCRIBE` connection per client and one
//!   `PUBLISH` connection per client that sends; Redis echoes to the
//!   sender, counted apart.
//!
//! An anchor's client is given its channels when it connects: [`CHANNEL`]
//! in `fanout`'s one room, its rooms' names (`room.<i>`) in `rooms`. A
//! delivery names the channel it came on, checked as a chat room is.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{Interest, Ready};

use crate::error::Error;

mod chat;
pub(crate) mod nats;
pub(crate) mod redis;

/// The channel (NATS subject, Redis channel) of `fanout`'s one room.
pub(crate) const CHANNEL: &str = "chat";

/// Which system `fanout` and `rooms` drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum System {
    /// This repository's chat server.
    #[default]
    Chat,
    /// A NATS server (core protocol).
    Nats,
    /// A Redis server (pub/sub, RESP2).
    Redis,
}

impl System {
    /// Whether the system delivers a client's own messages back to it.
    pub(crate) fn echoes(self) -> bool {
        self == System::Redis
    }
}

/// What a read brought in.
#[derive(Debug)]
pub(crate) enum Got<'a> {
    /// A delivered payload, with the sender's address when the system
    /// tags deliveries with one, and the channel it came on (an anchor's).
    Message {
        from: Option<SocketAddr>,
        room: Option<&'a [u8]>,
        text: &'a [u8],
    },
    /// A payload said in a named room (the chat server's `Said`): the
    /// sender's address and name, and the room.
    Said {
        from: SocketAddr,
        name: &'a str,
        room: &'a str,
        text: &'a [u8],
    },
    /// The chat server's notice that the client at this address left.
    Left(SocketAddr),
}

/// One client of a run, as the workload drives it. Whoever holds it is the
/// only owner of its sockets.
pub(crate) trait Peer: Send + 'static {
    /// Which client of the run.
    fn id(&self) -> usize;
    /// An error naming this client.
    fn lost(&self, reason: String) -> Error {
        Error::Disconnected {
            id: self.id(),
            reason,
        }
    }
    /// Queues one payload for publishing in the client's room number
    /// `room` (the systems with one room have only room 0).
    fn publish(&mut self, room: usize, text: String) -> Result<(), Error>;
    /// Whether output is waiting to be written.
    fn sending(&self) -> bool;
    /// Waits until a socket is ready for `interest`.
    fn ready(&mut self, interest: Interest) -> impl Future<Output = Result<Ready, Error>> + Send;
    /// Writes what it can without waiting; `true` once everything is written.
    fn write(&mut self) -> Result<bool, Error>;
    /// Reads once without waiting: `Some(0)` is the end of a stream, `None`
    /// means nothing was there.
    fn read(&mut self) -> Result<Option<usize>, Error>;
    /// Hands every complete delivery read so far to `f`. An error is the
    /// server's (an eviction, a protocol error) and ends the client.
    fn take(&mut self, f: impl FnMut(Got<'_>)) -> Result<(), Error>;
    /// Whether the server has closed the connection.
    fn is_closed(&self) -> bool;
}

/// Whether `channel` is one of `channels`: an anchor sends nothing else.
pub(crate) fn subscribed(channels: &[String], channel: &[u8]) -> bool {
    channels.iter().any(|c| c.as_bytes() == channel)
}

/// The position of the first `\r\n` in `buf`.
pub(crate) fn crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A decimal number (ASCII digits only, no sign).
pub(crate) fn decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + usize::from(c - b'0'))
    })
}
