//! The protocol state machine without sockets: a client and a server
//! `Connection` talking through buffers, and each one fed hand-made bytes
//! to check every rule of PROTOCOL.md it enforces.

mod common;

use common::{ADDR, Polled, WIDE, addr, any_codec, events, frame, pump, sent};
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use chat_proto::{
    ClientConfig, Connection, DecodeError, EncodeError, Event, HEADER_LEN, MAX_FRAME_LEN,
    MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN, Member, Message, ProtocolError, RELAY_OVERHEAD, Refusal,
    Role, SendError, ServerConfig, State, features,
};
use proptest::prelude::*;

/// A frame around a hand-written payload.
fn raw(payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf
}

/// A client and a server with the handshake done, nothing left queued.
fn pair(server: ServerConfig, client: ClientConfig) -> (Connection, Connection) {
    let mut client = Connection::client(client);
    let mut server = Connection::server(server);
    pump(&mut client, &mut server);
    assert!(matches!(
        events(&mut server).unwrap()[..],
        [Event::Hello { .. }]
    ));
    server.accept(addr(ADDR)).unwrap();
    pump(&mut server, &mut client);
    assert!(matches!(
        events(&mut client).unwrap()[..],
        [Event::Welcome(_)]
    ));
    (client, server)
}

fn open() -> (Connection, Connection) {
    pair(ServerConfig::default(), ClientConfig::default())
}

/// A server with the client's `Hello` accepted, fed raw bytes from then on.
fn open_server(config: ServerConfig) -> Connection {
    let mut server = Connection::server(config);
    server.receive(&frame(&Message::hello()));
    server.poll().unwrap();
    server.accept(addr(ADDR)).unwrap();
    sent(&mut server);
    server
}

/// A client that received `Welcome { max_frame }`, fed raw bytes from then on.
fn open_client(config: ClientConfig, max_frame: u32) -> Connection {
    let mut client = Connection::client(config);
    sent(&mut client);
    client.receive(&frame(&welcome(max_frame)));
    assert!(matches!(client.poll(), Ok(Some(Event::Welcome(_)))));
    client
}

fn welcome(max_frame: u32) -> Message {
    Message::Welcome {
        version: 1,
        features: 0,
        max_frame,
        ip: addr(ADDR).ip(),
        port: 3075,
    }
}

/// One of every message, with a given text.
fn every_message(text: &str) -> Vec<Message> {
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    vec![
        Message::Send { text: text.into() },
        Message::Exit,
        Message::Relay {
            ip,
            port: 8080,
            text: text.into(),
        },
        Message::hello(),
        welcome(65_516),
        Message::Error {
            reason: text.into(),
        },
        Message::Joined { ip, port: 50_000 },
        Message::Left { ip, port: 50_000 },
        Message::Ping { nonce: 9 },
        Message::Pong { nonce: 9 },
    ]
}

/// Asserts the machine failed with `err`, told the peer exactly why, and closed.
fn assert_violation(conn: &mut Connection, got: Polled) {
    let (_, err) = got.expect_err("a violation");
    assert_eq!(conn.state(), State::Closed);
    assert!(!conn.wants_read());
    assert_eq!(
        sent(conn),
        [Message::Error {
            reason: err.to_string()
        }],
        "{err}"
    );
}

// ---------------------------------------------------------------- handshake

#[test]
fn handshake_through_buffers() {
    let mut client = Connection::client(ClientConfig::default());
    let mut server = Connection::server(ServerConfig::default());
    assert_eq!((client.role(), server.role()), (Role::Client, Role::Server));
    assert_eq!(client.state(), State::Handshake);
    assert!(client.wants_write(), "Hello is queued at once");

    pump(&mut client, &mut server);
    assert_eq!(
        events(&mut server).unwrap(),
        [Event::Hello {
            version: 1,
            features: features::NONE
        }],
        "a client asks for no capability unless told to"
    );
    assert_eq!(server.state(), State::Admitting);
    assert!(!server.wants_read(), "nothing is read while admitting");
    assert_eq!(server.negotiated(), None);

    let negotiated = server.accept(addr(ADDR)).unwrap();
    assert_eq!(server.accept(addr(ADDR)), None, "accepted once");
    assert_eq!(negotiated.version, 1);
    assert_eq!(negotiated.features, 0);
    assert_eq!(negotiated.max_frame, 65_516);
    assert_eq!(negotiated.addr, addr(ADDR));
    assert_eq!(server.state(), State::Open);
    assert_eq!(server.negotiated(), Some(&negotiated));
    assert_eq!(
        (server.max_frame_in(), server.max_frame_out()),
        (65_516, 65_536)
    );

    let wire = server.transmit().unwrap();
    assert_eq!(
        any_codec().decode(&mut BytesMut::from(&wire[..])).unwrap(),
        Some(welcome(65_516))
    );
    client.receive(&wire);
    assert_eq!(events(&mut client).unwrap(), [Event::Welcome(negotiated)]);
    assert_eq!(client.state(), State::Open);
    assert_eq!(client.negotiated(), Some(&negotiated));
    assert_eq!(
        (client.max_frame_in(), client.max_frame_out()),
        (65_536, 65_516)
    );
    assert_eq!(client.max_text_len(), 65_512);
    assert!(client.wants_read() && server.wants_read());
    assert!(!client.wants_write() && !server.wants_write());
}

#[test]
fn an_ipv4_mapped_address_is_reported_as_ipv4() {
    let mut server = Connection::server(ServerConfig::default());
    server.receive(&frame(&Message::hello()));
    server.poll().unwrap();
    let negotiated = server.accept(addr("[::ffff:127.0.0.1]:3075")).unwrap();
    assert_eq!(negotiated.addr, addr(ADDR));
    assert_eq!(sent(&mut server), [welcome(65_516)]);
}

#[test]
fn the_server_picks_the_lower_version() {
    let mut config = ClientConfig::default();
    config.version = 2;
    let mut client = Connection::client(config);
    let mut server = Connection::server(ServerConfig::default());
    pump(&mut client, &mut server);
    assert_eq!(
        events(&mut server).unwrap(),
        [Event::Hello {
            version: 2,
            features: 0
        }]
    );
    assert_eq!(server.accept(addr(ADDR)).unwrap().version, 1);
    pump(&mut server, &mut client);
    let [Event::Welcome(negotiated)] = &events(&mut client).unwrap()[..] else {
        panic!("no Welcome");
    };
    assert_eq!(negotiated.version, 1);
    assert_eq!(client.state(), State::Open);
}

#[test]
fn hello_version_0_is_refused_with_an_error() {
    let mut server = Connection::server(ServerConfig::default());
    server.receive(&frame(&Message::Hello {
        version: 0,
        features: 0,
    }));
    let got = events(&mut server);
    assert!(matches!(
        got,
        Err((_, ProtocolError::Version { version: 0 }))
    ));
    assert_violation(&mut server, got);
}

#[test]
fn a_welcome_with_a_version_not_offered_is_refused() {
    for version in [0, 2, u16::MAX] {
        let mut client = Connection::client(ClientConfig::default());
        sent(&mut client);
        let mut msg = welcome(65_516);
        if let Message::Welcome { version: v, .. } = &mut msg {
            *v = version;
        }
        client.receive(&frame(&msg));
        let got = events(&mut client);
        assert!(matches!(got, Err((_, ProtocolError::Version { version: v })) if v == version));
        assert_violation(&mut client, got);
    }
}

#[test]
fn a_welcome_the_client_cannot_use_is_refused() {
    let bad = [
        Message::Welcome {
            version: 1,
            features: 1,
            max_frame: 65_516,
            ip: addr(ADDR).ip(),
            port: 1,
        },
        welcome(MIN_FRAME_LEN as u32 - 1),
        welcome(MAX_FRAME_LEN_CEILING as u32 + 1),
    ];
    for msg in bad {
        let mut client = Connection::client(ClientConfig::default());
        sent(&mut client);
        client.receive(&frame(&msg));
        let got = events(&mut client);
        assert!(
            matches!(got, Err((_, ProtocolError::BadWelcome(_)))),
            "{msg:?}"
        );
        assert_violation(&mut client, got);
    }
}

#[test]
fn features_are_the_intersection() {
    let mut server = ServerConfig::default();
    // Bits no capability uses yet (HISTORY, 0b10, and AUTH, 0b100, have a
    // rule of their own).
    server.features = 0b101_0000;
    let mut client = ClientConfig::default();
    client.features = 0b011_0000;
    let (client, server) = pair(server, client);
    assert_eq!(server.negotiated().unwrap().features, 0b001_0000);
    assert_eq!(client.negotiated().unwrap().features, 0b001_0000);
}

#[test]
fn frames_behind_hello_wait_for_the_admission() {
    let mut server = Connection::server(ServerConfig::default());
    let mut wire = frame(&Message::hello());
    wire.extend(frame(&Message::Send { text: "hi".into() }));
    wire.extend(frame(&Message::Ping { nonce: 5 }));
    server.receive(&wire);

    assert!(matches!(server.poll(), Ok(Some(Event::Hello { .. }))));
    assert_eq!(server.poll(), Ok(None));
    assert_eq!(server.poll(), Ok(None));
    assert!(server.buffered() > 0);
    assert!(
        !server.wants_write(),
        "the Ping is not answered before Welcome"
    );

    server.accept(addr(ADDR)).unwrap();
    assert_eq!(
        events(&mut server).unwrap(),
        [Event::Message(Message::Send { text: "hi".into() })]
    );
    assert_eq!(
        sent(&mut server),
        [welcome(65_516), Message::Pong { nonce: 5 }]
    );
}

#[test]
fn refuse_queues_the_reason_and_closes() {
    let mut client = Connection::client(ClientConfig::default());
    let mut server = Connection::server(ServerConfig::default());
    pump(&mut client, &mut server);
    events(&mut server).unwrap();
    server.refuse("server full");
    assert_eq!(server.state(), State::Closed);
    assert_eq!(server.accept(addr(ADDR)), None);
    server.refuse("twice");
    let wire = server.transmit().unwrap();
    assert_eq!(server.transmit(), None, "refused once");

    client.receive(&wire);
    assert_eq!(
        events(&mut client).unwrap(),
        [Event::Error("server full".into())]
    );
    assert_eq!(client.state(), State::Closed);
    assert!(!client.wants_write(), "nothing is said back to an Error");
}

#[test]
fn a_tls_handshake_is_recognised() {
    // The start of a ClientHello: a handshake record of TLS 1.0 to 1.3.
    for version in [0x01, 0x03] {
        let mut server = Connection::server(ServerConfig::default());
        server.receive(&[0x16]);
        assert_eq!(server.poll(), Ok(None), "one byte is not enough");
        server.receive(&[0x03, version, 0x01, 0x00]);
        let got = events(&mut server);
        assert!(matches!(got, Err((_, ProtocolError::Tls))), "{got:?}");
        assert_violation(&mut server, got);
    }
}

#[test]
fn http_requests_are_recognised() {
    for request in [
        "GET / HTTP/1.1\r\n",
        "POST /x HTTP/1.1\r\n",
        "PUT /",
        "HEAD /",
        "DELETE /",
        "OPTIONS *",
        "PATCH /",
        "CONNECT host:80",
        "TRACE /",
        "PRI * HTTP/2.0",
    ] {
        let mut server = Connection::server(ServerConfig::default());
        server.receive(&request.as_bytes()[..3]);
        assert_eq!(server.poll(), Ok(None), "three bytes are not enough");
        server.receive(&request.as_bytes()[3..]);
        let got = events(&mut server);
        assert!(matches!(got, Err((_, ProtocolError::Http))), "{request}");
        assert_violation(&mut server, got);
    }
    // After the handshake the same bytes are only an oversized frame.
    let mut server = open_server(ServerConfig::default());
    server.receive(b"GET / HTTP/1.1\r\n");
    assert!(matches!(
        server.poll(),
        Err(ProtocolError::Frame(DecodeError::FrameTooLarge { .. }))
    ));
}

// -------------------------------------------------------------- "sent by"

#[test]
fn a_server_refuses_whatever_a_client_may_not_send() {
    for msg in every_message("hi") {
        let expected = match &msg {
            Message::Hello { .. } => Some("protocol violation: Hello after the handshake"),
            Message::Welcome { .. } => Some("protocol violation: Welcome after the handshake"),
            Message::Relay { .. } => Some("protocol violation: clients may not send Relay"),
            Message::Joined { .. } => Some("protocol violation: clients may not send Joined"),
            Message::Left { .. } => Some("protocol violation: clients may not send Left"),
            _ => None,
        };
        let mut server = open_server(ServerConfig::default());
        server.receive(&frame(&msg));
        let got = events(&mut server);
        match expected {
            Some(text) => {
                assert!(!msg.from_client() || matches!(msg, Message::Hello { .. }));
                assert_eq!(got.as_ref().unwrap_err().1.to_string(), text);
                assert_violation(&mut server, got);
            }
            None => {
                assert!(msg.from_client(), "{msg:?}");
                assert!(got.is_ok(), "{msg:?}: {got:?}");
            }
        }
    }
}

#[test]
fn a_client_refuses_whatever_a_server_may_not_send() {
    for msg in every_message("hi") {
        let expected = match &msg {
            Message::Hello { .. } => Some("protocol violation: Hello after the handshake"),
            Message::Welcome { .. } => Some("protocol violation: Welcome after the handshake"),
            Message::Send { .. } => Some("protocol violation: servers may not send Send"),
            _ => None,
        };
        let mut client = open_client(ClientConfig::default(), 65_516);
        client.receive(&frame(&msg));
        let got = events(&mut client);
        match expected {
            Some(text) => {
                assert_eq!(got.as_ref().unwrap_err().1.to_string(), text);
                assert_violation(&mut client, got);
            }
            None => {
                assert!(msg.from_server(), "{msg:?}");
                assert!(got.is_ok(), "{msg:?}: {got:?}");
            }
        }
    }
}

#[test]
fn only_the_handshake_message_may_come_first() {
    for msg in every_message("hi") {
        let mut server = Connection::server(ServerConfig::default());
        server.receive(&frame(&msg));
        let got = events(&mut server);
        match msg {
            Message::Hello { .. } => assert!(got.is_ok()),
            // The client is closing: nothing is said back.
            Message::Error { .. } => {
                assert_eq!(got.unwrap(), [Event::Error("hi".into())]);
                assert_eq!(server.state(), State::Closed);
                assert_eq!(server.transmit(), None);
            }
            _ => {
                let want = format!("expected Hello first, got {}", msg.name());
                assert_eq!(got.as_ref().unwrap_err().1.to_string(), want);
                assert_violation(&mut server, got);
            }
        }

        let mut client = Connection::client(ClientConfig::default());
        sent(&mut client);
        client.receive(&frame(&msg));
        let got = events(&mut client);
        match msg {
            Message::Welcome { .. } => assert!(got.is_ok()),
            Message::Error { .. } => {
                assert_eq!(got.unwrap(), [Event::Error("hi".into())]);
                assert_eq!(client.transmit(), None);
            }
            _ => {
                let want = format!("expected Welcome first, got {}", msg.name());
                assert_eq!(got.as_ref().unwrap_err().1.to_string(), want);
                assert_violation(&mut client, got);
            }
        }
    }
}

#[test]
fn send_refuses_what_this_role_may_not_send() {
    let (mut client, mut server) = open();
    for msg in every_message("hi") {
        let client_may = matches!(
            msg,
            Message::Send { .. } | Message::Ping { .. } | Message::Pong { .. }
        );
        let server_may = matches!(
            msg,
            Message::Relay { .. }
                | Message::Joined { .. }
                | Message::Left { .. }
                | Message::Ping { .. }
                | Message::Pong { .. }
        );
        assert_eq!(client.send(&msg).is_ok(), client_may, "{msg:?}");
        assert_eq!(server.send(&msg).is_ok(), server_may, "{msg:?}");
        if !client_may {
            assert_eq!(
                client.send(&msg),
                Err(SendError::NotAllowed {
                    role: Role::Client,
                    name: msg.name()
                })
            );
        }
    }
    // Nothing can be sent before the handshake is done.
    let mut fresh = Connection::client(ClientConfig::default());
    assert_eq!(
        fresh.send(&Message::Send { text: "x".into() }),
        Err(SendError::NotOpen {
            state: State::Handshake
        })
    );
    assert!(fresh.ping(1).is_err());
    assert!(fresh.exit().is_err());
}

// ---------------------------------------------------------------- liveness

#[test]
fn ping_is_answered_by_both_roles_and_pong_surfaces() {
    let (mut client, mut server) = open();

    server.ping(7).unwrap();
    pump(&mut server, &mut client);
    assert_eq!(events(&mut client).unwrap(), []);
    assert_eq!(
        client.transmit().as_deref(),
        Some(&frame(&Message::Pong { nonce: 7 })[..])
    );

    client.ping(u64::MAX).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(events(&mut server).unwrap(), []);
    pump(&mut server, &mut client);
    assert_eq!(
        events(&mut client).unwrap(),
        [Event::Message(Message::Pong { nonce: u64::MAX })]
    );

    server.ping(8).unwrap();
    pump(&mut server, &mut client);
    events(&mut client).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(
        events(&mut server).unwrap(),
        [Event::Message(Message::Pong { nonce: 8 })]
    );
}

// ------------------------------------------------------------------- close

#[test]
fn a_client_leaves_and_the_server_acknowledges() {
    let (mut client, mut server) = open();
    client.exit().unwrap();
    assert_eq!(client.state(), State::Leaving);
    assert!(client.wants_read(), "a leaving client reads until Exit");
    assert!(client.send(&Message::Send { text: "x".into() }).is_err());
    pump(&mut client, &mut server);

    assert_eq!(events(&mut server).unwrap(), [Event::Exit]);
    assert_eq!(server.state(), State::PeerExited);
    assert!(!server.wants_read());
    // What is queued for the client still goes out, before the Exit.
    let relay = Message::relay(addr(WIDE), "last words");
    server.send(&relay).unwrap();
    server.exit().unwrap();
    assert_eq!(server.state(), State::Closed);
    assert_eq!(
        server.exit(),
        Err(SendError::NotOpen {
            state: State::Closed
        })
    );

    server.ping(1).unwrap_err();
    client.receive(&server.transmit().unwrap());
    assert_eq!(
        events(&mut client).unwrap(),
        [Event::Message(relay), Event::Exit]
    );
    assert_eq!(client.state(), State::Closed);
    assert_eq!(client.eof(), Ok(()));
}

#[test]
fn a_leaving_client_still_answers_ping() {
    let (mut client, mut server) = open();
    client.exit().unwrap();
    sent(&mut client);
    server.ping(3).unwrap();
    pump(&mut server, &mut client);
    assert_eq!(events(&mut client).unwrap(), []);
    assert_eq!(sent(&mut client), [Message::Pong { nonce: 3 }]);
}

#[test]
fn a_server_shutting_down_sends_exit_to_an_open_client() {
    let (mut client, mut server) = open();
    server.shutdown();
    assert_eq!(server.state(), State::Closed);
    pump(&mut server, &mut client);
    assert_eq!(events(&mut client).unwrap(), [Event::Exit]);
    assert_eq!(client.state(), State::Closed);
    assert!(!client.wants_write(), "a client needs not answer");
    server.shutdown();
    assert_eq!(server.transmit(), None, "shutdown is said once");
}

/// Issue 8: shutdown sent `Exit` to a client still in its handshake, where
/// only `Welcome` or `Error` may come.
#[test]
fn a_server_shutting_down_sends_error_not_exit_during_the_handshake() {
    // Before Hello, and while admitting.
    for hello in [false, true] {
        let mut client = Connection::client(ClientConfig::default());
        let mut server = Connection::server(ServerConfig::default());
        if hello {
            pump(&mut client, &mut server);
            events(&mut server).unwrap();
            assert_eq!(server.state(), State::Admitting);
        }
        assert_eq!(
            server.exit(),
            Err(SendError::NotOpen {
                state: server.state()
            })
        );
        server.shutdown();
        assert_eq!(server.state(), State::Closed);
        let out = sent(&mut server);
        assert_eq!(
            out,
            [Message::Error {
                reason: "server shutting down".into()
            }]
        );

        client.receive(&frame(&out[0]));
        assert_eq!(
            client.poll(),
            Ok(Some(Event::Error("server shutting down".into())))
        );
        assert_eq!(client.state(), State::Closed);
    }
}

#[test]
fn a_peer_error_closes_without_an_answer() {
    let (mut client, mut server) = open();
    client.refuse("bye");
    pump(&mut client, &mut server);
    assert_eq!(events(&mut server).unwrap(), [Event::Error("bye".into())]);
    assert_eq!(server.state(), State::Closed);
    assert_eq!(server.transmit(), None);
    // Anything after is dropped, not buffered.
    server.receive(&frame(&Message::Send {
        text: "late".into(),
    }));
    assert_eq!(server.poll(), Ok(None));
    assert_eq!(server.buffered(), 0);

    // Also what came in the same read as the Error.
    let mut server = open_server(ServerConfig::default());
    let mut wire = frame(&Message::Error {
        reason: "bye".into(),
    });
    wire.extend(frame(&Message::Send {
        text: "late".into(),
    }));
    server.receive(&wire);
    assert_eq!(server.poll(), Ok(Some(Event::Error("bye".into()))));
    assert!(server.buffered() > 0);
    assert_eq!(server.poll(), Ok(None));
    assert_eq!(server.buffered(), 0);
    assert!(!server.wants_read());
}

#[test]
fn eof_between_frames_is_clean() {
    let mut server = open_server(ServerConfig::default());
    server.receive(&frame(&Message::Send { text: "x".into() }));
    assert_eq!(events(&mut server).unwrap().len(), 1);
    assert_eq!(server.eof(), Ok(()));
    assert_eq!(server.state(), State::Closed);
    assert_eq!(server.transmit(), None);

    let mut client = open_client(ClientConfig::default(), 65_516);
    assert_eq!(client.eof(), Ok(()));
    assert!(client.is_closed());
}

#[test]
fn eof_inside_a_frame_is_an_error() {
    let whole = frame(&Message::Send {
        text: "hello".into(),
    });
    for cut in 1..whole.len() {
        let mut server = open_server(ServerConfig::default());
        server.receive(&whole[..cut]);
        assert_eq!(server.poll(), Ok(None));
        assert_eq!(server.buffered(), cut);
        let need = if cut < HEADER_LEN {
            HEADER_LEN
        } else {
            whole.len()
        };
        let err = server.eof().unwrap_err();
        assert_eq!(
            err,
            ProtocolError::Frame(DecodeError::Truncated { have: cut, need })
        );
        assert_eq!(
            err.to_string(),
            format!("invalid frame: connection closed mid-frame ({cut} of {need} bytes received)")
        );
        assert_violation(&mut server, Err((Vec::new(), err)));
    }
}

/// A client may send Hello and more, then shut down its sending half:
/// the frames behind Hello are still the server's to take after admission.
#[test]
fn eof_while_admitting_keeps_the_frames_behind_hello() {
    let mut server = Connection::server(ServerConfig::default());
    let mut wire = frame(&Message::hello());
    wire.extend(frame(&Message::Send { text: "hi".into() }));
    wire.extend(frame(&Message::Exit));
    server.receive(&wire);
    assert!(matches!(server.poll(), Ok(Some(Event::Hello { .. }))));
    assert_eq!(server.eof(), Ok(()));
    assert_eq!(server.state(), State::Admitting);
    assert!(!server.wants_read());

    server.accept(addr(ADDR)).unwrap();
    assert_eq!(
        events(&mut server).unwrap(),
        [
            Event::Message(Message::Send { text: "hi".into() }),
            Event::Exit
        ]
    );
    // The Exit is still acknowledged, for a peer that reads on.
    server.exit().unwrap();
    assert_eq!(sent(&mut server), [welcome(65_516), Message::Exit]);

    // Admitted with nothing behind Hello: closed at the next poll.
    let mut server = Connection::server(ServerConfig::default());
    server.receive(&frame(&Message::hello()));
    server.poll().unwrap();
    server.eof().unwrap();
    server.accept(addr(ADDR)).unwrap();
    assert_eq!(server.poll(), Ok(None));
    assert!(server.is_closed());

    // An oversized header not yet read is still an error at the end.
    let mut server = Connection::server(ServerConfig::default());
    server.receive(&frame(&Message::hello()));
    server.receive(&[0xff; 4]);
    server.poll().unwrap();
    assert!(matches!(
        server.eof(),
        Err(ProtocolError::Frame(DecodeError::FrameTooLarge { .. }))
    ));
    assert!(server.is_closed());
}

#[test]
fn eof_after_the_peer_exit_still_lets_the_server_acknowledge() {
    let mut server = open_server(ServerConfig::default());
    server.receive(&frame(&Message::Exit));
    assert_eq!(events(&mut server).unwrap(), [Event::Exit]);
    assert_eq!(server.eof(), Ok(()));
    assert_eq!(server.state(), State::PeerExited);
    server.exit().unwrap();
    assert_eq!(sent(&mut server), [Message::Exit]);
}

// ------------------------------------------------------------ frame limits

/// Server limits to try: the default, the smallest, and ones that put the
/// longest text or the payload across a varint boundary.
const LIMITS: [usize; 14] = [
    MAX_FRAME_LEN,
    MIN_FRAME_LEN + RELAY_OVERHEAD,
    270,
    271,
    272,
    273,
    275,
    65_555,
    65_556,
    65_560,
    65_561,
    65_562,
    65_563,
    1_000_000,
];

#[test]
fn the_server_limit_holds_both_ways() {
    for limit in LIMITS {
        let config = ServerConfig::with_max_frame_len(limit).unwrap();
        assert_eq!(config.client_max_frame(), limit - RELAY_OVERHEAD);
        let mut server = Connection::server(config);
        assert_eq!(server.max_frame_in(), limit - RELAY_OVERHEAD);
        assert_eq!(server.max_frame_out(), limit);

        // A payload of exactly max_frame is taken; one byte more is refused.
        server.receive(&frame(&Message::hello()));
        server.poll().unwrap();
        server.accept(addr(ADDR)).unwrap();
        let max = limit - RELAY_OVERHEAD;
        let text = "a".repeat(max_text_brute(max));
        let send = frame(&Message::Send { text: text.clone() });
        assert!(send.len() <= HEADER_LEN + max, "limit {limit}");
        server.receive(&send);
        assert_eq!(
            events(&mut server).unwrap(),
            [Event::Message(Message::Send { text })]
        );
        let mut over = Vec::new();
        over.put_u32(max as u32 + 1);
        server.receive(&over);
        let got = events(&mut server);
        assert_eq!(
            got.as_ref().unwrap_err().1.to_string(),
            format!(
                "invalid frame: frame of {} bytes exceeds the {max}-byte limit",
                max + 1
            )
        );
        assert!(sent(&mut server).len() == 2, "Welcome, then the Error");
        assert!(server.is_closed());
    }
}

/// The longest text a client may send, relayed from the widest address,
/// fits the server's limit and the client's raised inbound limit.
#[test]
fn the_longest_send_relays_within_the_limit() {
    for limit in LIMITS {
        let mut config = ClientConfig::default();
        config.max_frame_len = MIN_FRAME_LEN; // raised by Welcome
        let (mut client, mut server) =
            pair(ServerConfig::with_max_frame_len(limit).unwrap(), config);
        let max = limit - RELAY_OVERHEAD;
        assert_eq!(client.max_frame_out(), max);
        assert_eq!(client.max_frame_in(), limit, "raised to max_frame + 20");
        assert_eq!(client.max_text_len(), max_text_brute(max));

        let text = "中".repeat(client.max_text_len() / 3) + &"a".repeat(client.max_text_len() % 3);
        client.send(&Message::Send { text: text.clone() }).unwrap();
        let wire = client.transmit().unwrap();
        assert_eq!(wire.len(), HEADER_LEN + send_len(text.len()));
        assert!(wire.len() <= HEADER_LEN + max, "limit {limit}");
        server.receive(&wire);
        assert_eq!(
            events(&mut server).unwrap(),
            [Event::Message(Message::Send { text: text.clone() })]
        );

        // The server relays it to another client, from the widest address.
        let relay = Message::relay(addr(WIDE), text);
        server.send(&relay).unwrap();
        let wire = server.transmit().unwrap();
        assert!(wire.len() <= HEADER_LEN + limit, "limit {limit}");
        client.receive(&wire);
        assert_eq!(events(&mut client).unwrap(), [Event::Message(relay)]);

        // One byte more is refused by the client itself, and nothing queued.
        let long = "a".repeat(client.max_text_len() + 1);
        assert_eq!(
            client.send(&Message::Send { text: long }),
            Err(SendError::TooLarge(EncodeError::TooLarge {
                len: send_len(client.max_text_len() + 1),
                max
            }))
        );
        assert!(!client.wants_write());
    }
}

#[test]
fn the_default_longest_text_is_65512() {
    let (mut client, _) = open();
    assert_eq!(client.max_text_len(), 65_512);
    assert!(
        client
            .send(&Message::Send {
                text: "x".repeat(65_512)
            })
            .is_ok()
    );
    assert_eq!(
        client.send(&Message::Send {
            text: "x".repeat(65_513)
        }),
        Err(SendError::TooLarge(EncodeError::TooLarge {
            len: 65_517,
            max: 65_516
        }))
    );
}

/// Text lengths whose `Send` payload is `1 + varint(n) + n`: the varint
/// width is measured by encoding a `Pong` (the same u64 varint), not assumed.
fn send_len(n: usize) -> usize {
    frame(&Message::Pong { nonce: n as u64 }).len() - HEADER_LEN + n
}

/// The longest text whose `Send` fits `max`, by search: down from `max`
/// (no longer text can fit), the first that fits.
fn max_text_brute(max: usize) -> usize {
    (0..=max).rev().find(|&n| send_len(n) <= max).unwrap()
}

#[test]
fn max_text_matches_brute_force() {
    let mut limits: Vec<usize> = (MIN_FRAME_LEN..=70_000).collect();
    for edge in [250, 251, 65_535, 65_536, MAX_FRAME_LEN_CEILING] {
        for delta in 0..12 {
            limits.extend([edge + delta, edge.saturating_sub(delta)]);
        }
    }
    limits.retain(|l| (MIN_FRAME_LEN..=MAX_FRAME_LEN_CEILING).contains(l));
    limits.extend([MAX_FRAME_LEN_CEILING, MAX_FRAME_LEN_CEILING - 1]);

    for max in limits {
        let best = max_text_brute(max);
        let mut client = Connection::client(ClientConfig::default());
        client.receive(&frame(&welcome(max as u32)));
        client.poll().unwrap();
        assert_eq!(client.max_text_len(), best, "max_frame {max}");
    }
}

#[test]
fn the_client_raises_but_never_lowers_its_inbound_limit() {
    let mut config = ClientConfig::default();
    config.max_frame_len = 1_000_000;
    let client = open_client(config, 100);
    assert_eq!(client.max_frame_in(), 1_000_000);
    assert_eq!(client.max_frame_out(), 100);
    let client = open_client(ClientConfig::default(), MAX_FRAME_LEN_CEILING as u32);
    assert_eq!(client.max_frame_in(), MAX_FRAME_LEN_CEILING);
}

#[test]
fn a_frame_over_the_client_limit_is_refused() {
    let mut client = open_client(ClientConfig::default(), 65_516);
    let mut over = Vec::new();
    over.put_u32(65_537);
    client.receive(&over);
    let got = events(&mut client);
    assert_eq!(
        got.as_ref().unwrap_err().1.to_string(),
        "invalid frame: frame of 65537 bytes exceeds the 65536-byte limit"
    );
    assert_violation(&mut client, got);
}

// ------------------------------------------------------- unknown variants

#[test]
fn a_client_skips_unknown_variants_after_the_handshake() {
    let mut client = open_client(ClientConfig::default(), 65_516);
    let mut wire = raw(&[38]); // the first tag this crate does not know
    wire.extend(raw(&[0xfb, 0x00, 0x10, 1, 2, 3])); // tag 4096, any fields
    wire.extend(frame(&Message::Ping { nonce: 1 }));
    wire.extend(raw(&[39]));
    client.receive(&wire);
    assert_eq!(events(&mut client).unwrap(), []);
    assert_eq!(client.skipped(), 3);
    assert_eq!(sent(&mut client), [Message::Pong { nonce: 1 }]);
    assert_eq!(client.state(), State::Open);

    // Before Welcome it is not skippable.
    let mut client = Connection::client(ClientConfig::default());
    sent(&mut client);
    client.receive(&raw(&[38]));
    let got = events(&mut client);
    assert_eq!(
        got.as_ref().unwrap_err().1.to_string(),
        "invalid frame: unknown message variant 38"
    );
    assert_violation(&mut client, got);
}

#[test]
fn an_unknown_variant_is_fatal_for_a_server() {
    let mut server = open_server(ServerConfig::default());
    server.receive(&raw(&[38]));
    let got = events(&mut server);
    assert_eq!(
        got.as_ref().unwrap_err().1,
        ProtocolError::Frame(DecodeError::UnknownVariant { tag: 38 })
    );
    assert_violation(&mut server, got);
}

#[test]
fn every_decode_error_closes_with_its_text() {
    let bad: [&[u8]; 4] = [
        &[0, 0, 0, 0],             // empty frame
        &raw(&[0, 2, 0xff, 0xfe]), // invalid UTF-8
        &raw(&[1, 0]),             // trailing bytes
        &raw(&[0, 9, b'a']),       // string longer than the payload
    ];
    for bytes in bad {
        let mut server = open_server(ServerConfig::default());
        server.receive(bytes);
        let got = events(&mut server);
        assert!(matches!(got, Err((_, ProtocolError::Frame(_)))));
        assert_violation(&mut server, got);
    }
}

// ------------------------------------------------------- error truncation

#[test]
fn a_long_error_reason_is_cut_on_a_character_boundary() {
    let long = format!("x{}", "是的你是对的".repeat(6_000)); // 108,001 bytes
    for limit in [MAX_FRAME_LEN, MIN_FRAME_LEN + RELAY_OVERHEAD, 1_000] {
        let mut server = Connection::server(ServerConfig::with_max_frame_len(limit).unwrap());
        server.refuse(&long);
        let wire = server.transmit().unwrap();
        assert!(wire.len() <= HEADER_LEN + limit, "limit {limit}");

        let mut client = Connection::client(ClientConfig::default());
        client.receive(&wire);
        let Ok(Some(Event::Error(reason))) = client.poll() else {
            panic!("limit {limit}: no Error");
        };
        assert!(long.starts_with(&reason));
        // Cut only as far as needed: less than one character short of the room.
        let room = limit - 1 - 9;
        assert!(
            reason.len() <= room && reason.len() + 3 > room,
            "{}",
            reason.len()
        );
    }

    // A client's reason is cut to the server's limit once known.
    let mut client = open_client(ClientConfig::default(), MIN_FRAME_LEN as u32);
    client.refuse(&long);
    let wire = client.transmit().unwrap();
    assert!(wire.len() <= HEADER_LEN + MIN_FRAME_LEN);
    let mut server =
        open_server(ServerConfig::with_max_frame_len(MIN_FRAME_LEN + RELAY_OVERHEAD).unwrap());
    server.receive(&wire);
    assert!(matches!(server.poll(), Ok(Some(Event::Error(r))) if long.starts_with(&r)));
}

// ------------------------------------------------------------- properties

/// What a machine did with a stream: every event or error, what it sent,
/// and where it ended.
#[derive(Debug, PartialEq)]
struct Trace {
    outcomes: Vec<Result<Event, ProtocolError>>,
    sent: Vec<u8>,
    eof: Option<Result<(), ProtocolError>>,
    state: State,
}

/// Drives `conn` like a socket owner that accepts every Hello and answers
/// every Exit, feeding `chunks` in order; checks on every step that input
/// stays bounded by the limit and output by the input.
fn drive<'a>(mut conn: Connection, chunks: impl IntoIterator<Item = &'a [u8]>) -> Trace {
    let mut trace = Trace {
        outcomes: Vec::new(),
        sent: conn.transmit().map(|b| b.to_vec()).unwrap_or_default(),
        eof: None,
        state: State::Handshake,
    };
    for chunk in chunks {
        if !conn.wants_read() {
            break;
        }
        let before = conn.buffered();
        conn.receive(chunk);
        // Only a frame in progress was left over, so with chunks of at
        // most 8 KiB the input never holds more than limit + header + 8 KiB.
        assert!(before < HEADER_LEN + conn.max_frame_in());
        assert!(conn.buffered() < HEADER_LEN + conn.max_frame_in() + chunk.len());
        loop {
            match conn.poll() {
                Ok(Some(event)) => {
                    match event {
                        Event::Hello { .. } => {
                            conn.accept(addr(WIDE)).unwrap();
                        }
                        Event::Exit if conn.role() == Role::Server => conn.exit().unwrap(),
                        Event::Error(_) => assert!(conn.is_closed()),
                        _ => {}
                    }
                    trace.outcomes.push(Ok(event));
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(conn.is_closed());
                    trace.outcomes.push(Err(e));
                    break;
                }
            }
        }
        let out = conn.transmit().map_or(0, |b| {
            trace.sent.extend_from_slice(&b);
            b.len()
        });
        // Answers (Pong for Ping) are no longer than what they answer; on
        // top, at most one Welcome or Error and one Exit.
        let consumed = before + chunk.len() - conn.buffered();
        assert!(
            out <= consumed + 2 * HEADER_LEN + conn.max_frame_out() + 64,
            "{out} bytes out for {consumed} in"
        );
    }
    if conn.wants_read() {
        trace.eof = Some(conn.eof());
        while let Ok(Some(event)) = conn.poll() {
            trace.outcomes.push(Ok(event));
        }
        trace.sent.extend(conn.transmit().unwrap_or_default());
    }
    trace.state = conn.state();
    trace
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,20}",
        "[\\u{4e00}-\\u{9fff}]{0,10}",
        Just("x".repeat(300)),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let ip = any::<IpAddr>();
    prop_oneof![
        4 => text().prop_map(|text| Message::Send { text }),
        1 => Just(Message::Exit),
        1 => (ip.clone(), any::<u16>(), text()).prop_map(|(ip, port, text)| Message::Relay { ip, port, text }),
        1 => (0u16..3, any::<u64>()).prop_map(|(version, features)| Message::Hello { version, features }),
        1 => (0u16..3, 0u32..70_000).prop_map(|(version, max_frame)| Message::Welcome {
            version, features: 0, max_frame, ip: "::1".parse().unwrap(), port: 1,
        }),
        1 => text().prop_map(|reason| Message::Error { reason }),
        1 => (ip.clone(), any::<u16>()).prop_map(|(ip, port)| Message::Joined { ip, port }),
        1 => (ip, any::<u16>()).prop_map(|(ip, port)| Message::Left { ip, port }),
        2 => any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        1 => any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        2 => text().prop_map(|name| Message::Nick { name }),
        1 => text().prop_map(|room| Message::Join { room }),
        2 => (text(), text()).prop_map(|(room, text)| Message::Say { room, text }),
        1 => Just(Message::ListRooms),
        2 => (text(), text()).prop_map(|(room, text)| Message::Said {
            room, from: Member::new("张三", addr(WIDE)), text,
        }),
        1 => (text(), any::<bool>()).prop_map(|(room, more)| Message::Roster {
            room, members: vec![Member::new("alice", addr(ADDR))], more,
        }),
        1 => (any::<u16>(), text()).prop_map(|(code, subject)| Message::Refused {
            code: Refusal::from_code(code), subject, detail: String::new(),
        }),
    ]
}

/// A stream a peer might send: a plausible first frame, then frames and
/// now and then a bad one.
fn stream(first: Message) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        8 => message().prop_map(|m| frame(&m)),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(|p| raw(&p)),
        1 => prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(piece, 0..12).prop_map(move |pieces| {
        let mut wire = frame(&first);
        wire.extend(pieces.concat());
        wire
    })
}

fn machine(role: Role, limit: usize, rooms: bool) -> Connection {
    match role {
        Role::Server => Connection::server(ServerConfig::with_max_frame_len(limit).unwrap()),
        Role::Client => {
            let mut config = ClientConfig::default();
            config.max_frame_len = limit;
            config.features = if rooms { features::ROOMS } else { 0 };
            Connection::client(config)
        }
    }
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Server), Just(Role::Client)]
}

/// The handshake's first frame, for a version 1 or a ROOMS session.
fn first(role: Role, rooms: bool) -> Message {
    let features = if rooms { features::ROOMS } else { 0 };
    match role {
        Role::Server => Message::Hello {
            version: 1,
            features,
        },
        Role::Client => {
            let mut msg = welcome(200);
            if let Message::Welcome { features: f, .. } = &mut msg {
                *f = features;
            }
            msg
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_gives_the_same_events(
        (role, rooms, wire) in (role(), any::<bool>())
            .prop_flat_map(|(r, rooms)| (Just(r), Just(rooms), stream(first(r, rooms)))),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        limit in prop_oneof![Just(MAX_FRAME_LEN), 84usize..400],
    ) {
        let whole = drive(machine(role, limit, rooms), [&wire[..]]);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        at.extend([0, wire.len()]);
        at.sort_unstable();
        let pieces: Vec<&[u8]> = at.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
        prop_assert_eq!(&whole, &drive(machine(role, limit, rooms), pieces));
        prop_assert_eq!(&whole, &drive(machine(role, limit, rooms), wire.chunks(1)));
    }

    #[test]
    fn arbitrary_input_is_bounded_and_never_panics(
        role in role(),
        rooms in any::<bool>(),
        limit in prop_oneof![Just(MAX_FRAME_LEN), 84usize..2_000],
        head in prop_oneof![Just(true), Just(false)],
        bytes in prop::collection::vec(any::<u8>(), 0..3_000),
        sizes in prop::collection::vec(1usize..=8 * 1024, 1..8),
    ) {
        let mut wire = if head { frame(&first(role, rooms)) } else { Vec::new() };
        wire.extend(&bytes);
        let mut chunks = Vec::new();
        let mut rest = &wire[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(piece);
            rest = tail;
        }
        drive(machine(role, limit, rooms), chunks);
    }
}
