//! What the socket-free machine tests share: addresses, a codec that reads
//! anything, and moving bytes between two machines.

use std::net::SocketAddr;

use bytes::BytesMut;
use chat_proto::{ChatCodec, Connection, Event, MAX_FRAME_LEN_CEILING, Message, ProtocolError};

/// How the server sees the client in most tests.
pub(crate) const ADDR: &str = "127.0.0.1:3075";
/// The widest address a relay can carry: IPv6 with a 5-digit port.
pub(crate) const WIDE: &str = "[2001:db8::1]:65535";

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A codec that takes any frame, to read what a machine sent.
pub(crate) fn any_codec() -> ChatCodec {
    ChatCodec::with_max_frame_len(MAX_FRAME_LEN_CEILING).unwrap()
}

/// `msg` as one frame, whatever its size.
pub(crate) fn frame(msg: &Message) -> Vec<u8> {
    let mut buf = BytesMut::new();
    any_codec().encode(msg, &mut buf).unwrap();
    buf.to_vec()
}

/// Every message the machine has queued, in order.
pub(crate) fn sent(conn: &mut Connection) -> Vec<Message> {
    let Some(bytes) = conn.transmit() else {
        return Vec::new();
    };
    let mut buf = BytesMut::from(&bytes[..]);
    let mut out = Vec::new();
    while let Some(msg) = any_codec().decode(&mut buf).unwrap() {
        out.push(msg);
    }
    assert!(buf.is_empty(), "a partial frame was queued");
    out
}

/// What [`events`] returns: the events, or those before the failure and it.
pub(crate) type Polled = Result<Vec<Event>, (Vec<Event>, ProtocolError)>;

/// Polls until the machine wants more bytes, or fails.
pub(crate) fn events(conn: &mut Connection) -> Polled {
    let mut out = Vec::new();
    loop {
        match conn.poll() {
            Ok(Some(event)) => out.push(event),
            Ok(None) => return Ok(out),
            Err(e) => return Err((out, e)),
        }
    }
}

/// Moves everything `from` queued into `to`.
pub(crate) fn pump(from: &mut Connection, to: &mut Connection) {
    if let Some(bytes) = from.transmit() {
        to.receive(&bytes);
    }
}
