//! What the socket-free machine tests share: addresses, a codec that reads
//! anything, and moving bytes between two machines.
#![allow(dead_code)] // Each test file uses some of these.

use std::net::SocketAddr;

use bytes::BytesMut;
use chat_proto::{
    ChatCodec, ClientConfig, Connection, Event, MAX_FRAME_LEN_CEILING, Message, ProtocolError,
    ServerConfig, features,
};

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

/// A client and a server with the handshake done and nothing queued; the
/// client asked for `asked`, the server offered `offered`, and both agree
/// on [`features::agree`] of them.
pub(crate) fn pair(offered: u64, asked: u64) -> (Connection, Connection) {
    let mut server_config = ServerConfig::default();
    server_config.features = offered;
    let mut client_config = ClientConfig::default();
    client_config.features = asked;
    let mut client = Connection::client(client_config);
    let mut server = Connection::server(server_config);
    pump(&mut client, &mut server);
    assert_eq!(
        events(&mut server).unwrap(),
        [Event::Hello {
            version: 1,
            features: asked
        }]
    );
    let negotiated = server.accept(addr(ADDR)).unwrap();
    assert_eq!(negotiated.features, features::agree(asked, offered));
    pump(&mut server, &mut client);
    assert_eq!(events(&mut client).unwrap(), [Event::Welcome(negotiated)]);
    (client, server)
}

/// A [`pair`] whose client has sent its `Nick` and the server taken it.
pub(crate) fn named(offered: u64, asked: u64) -> (Connection, Connection) {
    let (mut client, mut server) = pair(offered, asked);
    let nick = Message::Nick {
        name: "张三".into(),
    };
    client.send(&nick).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(events(&mut server).unwrap(), [Event::Message(nick)]);
    (client, server)
}
