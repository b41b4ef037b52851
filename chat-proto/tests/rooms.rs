//! The ROOMS capability in the state machine, without sockets: feature
//! gating both ways, the Nick-first rule, the raised frame limits, and the
//! refusal codes (PROTOCOL.md section 8).

mod common;

use common::{ADDR, Polled, WIDE, addr, events, frame, named, pair, pump, sent};
use std::net::IpAddr;

use bytes::BufMut;
use chat_proto::{
    ClientConfig, Connection, DecodeError, Event, HEADER_LEN, MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING,
    MIN_FRAME_LEN, Member, Message, ProtocolError, RELAY_OVERHEAD, ROOMS_OVERHEAD, Refusal, Role,
    RoomInfo, SendError, ServerConfig, State, features,
};

/// Asserts the machine failed with `want`, told the peer exactly why, and closed.
fn assert_violation(conn: &mut Connection, got: Polled, want: ProtocolError) {
    let (_, err) = got.expect_err("a violation");
    assert_eq!(err, want);
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(
        sent(conn),
        [Message::Error {
            reason: err.to_string()
        }]
    );
}

fn rooms_client() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.features = features::ROOMS;
    config
}

/// A ROOMS pair, before the client's Nick.
fn rooms_pair() -> (Connection, Connection) {
    pair(features::ALL, features::ROOMS)
}

/// A ROOMS pair whose client has sent its Nick and the server taken it.
fn named_pair() -> (Connection, Connection) {
    named(features::ALL, features::ROOMS)
}

fn member(name: &str, at: &str) -> Member {
    Member::new(name, addr(at))
}

/// One of every ROOMS message.
fn rooms_messages() -> Vec<Message> {
    let alice = member("alice", ADDR);
    vec![
        Message::Nick {
            name: "张三".into(),
        },
        Message::Join {
            room: "大厅".into(),
        },
        Message::Part {
            room: "大厅".into(),
        },
        Message::Say {
            room: "大厅".into(),
            text: "大家好".into(),
        },
        Message::Tell {
            name: "李四".into(),
            text: "你好".into(),
        },
        Message::Who {
            room: "lobby".into(),
        },
        Message::ListRooms,
        Message::Named {
            name: "张三".into(),
        },
        Message::Said {
            room: "大厅".into(),
            from: alice.clone(),
            text: "hi".into(),
        },
        Message::Told {
            from: member("李四", WIDE),
            text: "收到".into(),
        },
        Message::Entered {
            room: "lobby".into(),
            member: alice.clone(),
        },
        Message::Departed {
            room: "lobby".into(),
            member: alice.clone(),
        },
        Message::Renamed {
            old: "guest-1".into(),
            member: alice.clone(),
        },
        Message::Roster {
            room: "lobby".into(),
            members: vec![alice, member("张三", WIDE)],
            more: true,
        },
        Message::Rooms {
            rooms: vec![RoomInfo {
                name: "lobby".into(),
                members: 2,
            }],
            more: false,
        },
        Message::Refused {
            code: Refusal::NameTaken,
            subject: "Alice".into(),
            detail: "name taken".into(),
        },
    ]
}

#[test]
fn rooms_messages_are_tagged_10_to_25_and_belong_to_rooms() {
    let all = rooms_messages();
    assert_eq!(all.len(), 16);
    for (msg, tag) in all.iter().zip(10u8..) {
        assert_eq!(frame(msg)[HEADER_LEN], tag, "{}", msg.name());
        assert_eq!(msg.feature(), features::ROOMS, "{}", msg.name());
        let client = tag <= 16;
        assert_eq!(msg.from_client(), client, "{}", msg.name());
        assert_eq!(msg.from_server(), !client, "{}", msg.name());
    }
    assert_eq!(Message::hello().feature(), features::NONE);
}

// ------------------------------------------------------------- handshake

#[test]
fn the_default_client_asks_for_nothing_and_the_default_server_offers_rooms() {
    assert_eq!(ClientConfig::default().features, features::NONE);
    assert_eq!(ServerConfig::default().features, features::ALL);
    assert_eq!(
        features::ALL,
        features::ROOMS | features::HISTORY | features::AUTH
    );
    assert_eq!(features::ROOMS, 1);

    let (client, server) = pair(features::ALL, features::NONE);
    assert!(!client.negotiated().unwrap().has(features::ROOMS));
    assert!(!server.negotiated().unwrap().has(features::ROOMS));
    let (client, server) = rooms_pair();
    assert!(client.negotiated().unwrap().has(features::ROOMS));
    assert!(server.negotiated().unwrap().has(features::ROOMS));
    // A server that does not offer it: the client gets version 1.
    let (client, _) = pair(features::NONE, features::ROOMS);
    assert!(!client.negotiated().unwrap().has(features::ROOMS));
}

#[test]
fn a_welcome_with_rooms_the_client_did_not_ask_for_is_refused() {
    let mut client = Connection::client(ClientConfig::default());
    sent(&mut client);
    client.receive(&frame(&Message::Welcome {
        version: 1,
        features: features::ROOMS,
        max_frame: 65_516,
        ip: addr(ADDR).ip(),
        port: 3075,
    }));
    let got = events(&mut client);
    assert!(matches!(got, Err((_, ProtocolError::BadWelcome(_)))));
    assert_eq!(client.state(), State::Closed);
}

// ---------------------------------------------------------- feature gating

#[test]
fn a_server_refuses_a_rooms_message_from_a_version_1_session() {
    for msg in rooms_messages().into_iter().filter(Message::from_client) {
        // Asked for nothing, or asked for ROOMS from a server not offering it.
        for (offered, asked) in [
            (features::ALL, features::NONE),
            (features::NONE, features::ROOMS),
        ] {
            let (_, mut server) = pair(offered, asked);
            server.receive(&frame(&msg));
            let got = events(&mut server);
            let want = ProtocolError::NotNegotiated { got: msg.name() };
            assert_eq!(
                want.to_string(),
                format!(
                    "protocol violation: {} belongs to a capability not negotiated in the handshake",
                    msg.name()
                )
            );
            assert_violation(&mut server, got, want);
        }
    }
}

#[test]
fn a_version_1_client_skips_rooms_messages_it_did_not_ask_for() {
    let (mut client, _) = pair(features::ALL, features::NONE);
    let relay = Message::relay(addr(WIDE), "still here");
    let mut wire = Vec::new();
    let from_server: Vec<Message> = rooms_messages()
        .into_iter()
        .filter(Message::from_server)
        .collect();
    for msg in &from_server {
        wire.extend(frame(msg));
    }
    wire.extend(frame(&relay));
    client.receive(&wire);
    assert_eq!(events(&mut client).unwrap(), [Event::Message(relay)]);
    assert_eq!(client.skipped(), from_server.len() as u64);
    assert_eq!(client.state(), State::Open);
    assert_eq!(sent(&mut client), []);
}

#[test]
fn neither_side_sends_a_rooms_message_it_was_not_granted() {
    let (mut client, mut server) = pair(features::ALL, features::NONE);
    for msg in rooms_messages() {
        if msg.from_client() {
            assert_eq!(
                client.send(&msg),
                Err(SendError::NotNegotiated { name: msg.name() })
            );
        } else {
            assert_eq!(
                server.send(&msg),
                Err(SendError::NotNegotiated { name: msg.name() })
            );
        }
    }
    assert!(!client.wants_write() && !server.wants_write());
    assert_eq!(
        SendError::NotNegotiated { name: "Join" }.to_string(),
        "Join belongs to a capability the server did not grant"
    );
}

#[test]
fn with_rooms_each_side_takes_its_peers_messages_and_refuses_the_others() {
    for msg in rooms_messages() {
        let (mut client, mut server) = named_pair();
        if msg.from_client() {
            client.send(&msg).unwrap();
            pump(&mut client, &mut server);
            assert_eq!(events(&mut server).unwrap(), [Event::Message(msg.clone())]);
            // A server-only message may not come from a client.
            assert_eq!(
                server.send(&msg),
                Err(SendError::NotAllowed {
                    role: Role::Server,
                    name: msg.name()
                })
            );
            let (mut client, _) = named_pair();
            client.receive(&frame(&msg));
            let got = events(&mut client);
            let want = ProtocolError::NotAllowed {
                role: Role::Server,
                got: msg.name(),
            };
            assert_violation(&mut client, got, want);
        } else {
            server.send(&msg).unwrap();
            pump(&mut server, &mut client);
            assert_eq!(events(&mut client).unwrap(), [Event::Message(msg.clone())]);
            assert_eq!(
                client.send(&msg),
                Err(SendError::NotAllowed {
                    role: Role::Client,
                    name: msg.name()
                })
            );
            let (_, mut server) = named_pair();
            server.receive(&frame(&msg));
            let got = events(&mut server);
            let want = ProtocolError::NotAllowed {
                role: Role::Client,
                got: msg.name(),
            };
            assert_violation(&mut server, got, want);
        }
    }
}

// ------------------------------------------------------------ Nick first

#[test]
fn a_server_takes_nothing_but_nick_as_the_first_request() {
    let requests = [
        Message::Send { text: "hi".into() },
        Message::Join {
            room: "大厅".into(),
        },
        Message::Say {
            room: "lobby".into(),
            text: "hi".into(),
        },
        Message::ListRooms,
    ];
    for msg in requests {
        let (_, mut server) = rooms_pair();
        server.receive(&frame(&msg));
        let got = events(&mut server);
        let want = ProtocolError::OutOfTurn {
            expected: "Nick",
            got: msg.name(),
        };
        assert_eq!(
            want.to_string(),
            format!("expected Nick first, got {}", msg.name())
        );
        assert_violation(&mut server, got, want);
    }
}

#[test]
fn ping_pong_and_exit_may_come_before_nick() {
    let (_, mut server) = rooms_pair();
    let mut wire = frame(&Message::Ping { nonce: 4 });
    wire.extend(frame(&Message::Pong { nonce: 5 }));
    wire.extend(frame(&Message::Nick {
        name: String::new(),
    }));
    wire.extend(frame(&Message::Join {
        room: "rust".into(),
    }));
    wire.extend(frame(&Message::Nick {
        name: "alice".into(),
    }));
    server.receive(&wire);
    assert_eq!(
        events(&mut server).unwrap(),
        [
            Event::Message(Message::Pong { nonce: 5 }),
            Event::Message(Message::Nick {
                name: String::new()
            }),
            Event::Message(Message::Join {
                room: "rust".into()
            }),
            // A later Nick is a rename.
            Event::Message(Message::Nick {
                name: "alice".into()
            }),
        ]
    );
    assert_eq!(sent(&mut server), [Message::Pong { nonce: 4 }]);

    // Exit before Nick is a plain leave.
    let (_, mut server) = rooms_pair();
    server.receive(&frame(&Message::Exit));
    assert_eq!(events(&mut server).unwrap(), [Event::Exit]);
    server.exit().unwrap();
    assert_eq!(sent(&mut server), [Message::Exit]);

    // So is an Error.
    let (_, mut server) = rooms_pair();
    server.receive(&frame(&Message::Error {
        reason: "bye".into(),
    }));
    assert_eq!(events(&mut server).unwrap(), [Event::Error("bye".into())]);
    assert!(server.is_closed());
}

#[test]
fn a_rooms_client_sends_nick_before_anything_else() {
    let (mut client, mut server) = rooms_pair();
    for msg in [
        Message::Send { text: "hi".into() },
        Message::Join {
            room: "rust".into(),
        },
        Message::Who {
            room: "lobby".into(),
        },
    ] {
        let err = client.send(&msg).unwrap_err();
        assert_eq!(err, SendError::NickFirst { name: msg.name() });
        assert_eq!(
            err.to_string(),
            format!(
                "send Nick before {}: the first request after Welcome names the client",
                msg.name()
            )
        );
    }
    assert!(!client.wants_write(), "nothing was queued");
    client.ping(1).unwrap();
    client
        .send(&Message::Nick {
            name: "张三".into(),
        })
        .unwrap();
    client
        .send(&Message::Join {
            room: "rust".into(),
        })
        .unwrap();
    client.send(&Message::Send { text: "hi".into() }).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(events(&mut server).unwrap().len(), 3, "Nick, Join, Send");

    // A client that leaves before naming itself may.
    let (mut client, _) = rooms_pair();
    client.exit().unwrap();
    assert_eq!(client.state(), State::Leaving);
}

#[test]
fn version_1_sessions_have_no_nick_rule() {
    let (mut client, mut server) = pair(features::ALL, features::NONE);
    client.send(&Message::Send { text: "hi".into() }).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(
        events(&mut server).unwrap(),
        [Event::Message(Message::Send { text: "hi".into() })]
    );
}

#[test]
fn the_nick_rule_binds_only_the_clients_requests() {
    // The machine does not hold back what a server sends before the
    // client's Nick: when to send what is the server's to decide (PROTOCOL.md
    // section 8.3: nothing of the capability before the answer to Nick).
    let (mut client, mut server) = rooms_pair();
    let entered = Message::Entered {
        room: "lobby".into(),
        member: member("alice", WIDE),
    };
    server.send(&entered).unwrap();
    pump(&mut server, &mut client);
    assert_eq!(events(&mut client).unwrap(), [Event::Message(entered)]);
}

// ------------------------------------------------------------ frame limits

/// A `Said` as large as a ROOMS session can carry: the longest text a
/// `Send` may have, a room and a name of 32 four-byte characters each, and
/// the widest address.
fn widest_said(text_len: usize) -> Message {
    let long = "𝕏".repeat(32); // 128 bytes of UTF-8
    Message::Said {
        room: long.clone(),
        from: Member::new(long, addr(WIDE)),
        text: "a".repeat(text_len),
    }
}

#[test]
fn outbound_for_raises_the_limit_for_rooms_sessions_only() {
    for limit in [
        MAX_FRAME_LEN,
        MIN_FRAME_LEN + RELAY_OVERHEAD,
        1_000,
        65_556,
        1_000_000,
    ] {
        let config = ServerConfig::with_max_frame_len(limit).unwrap();
        assert_eq!(config.outbound().max_frame_len(), limit);
        assert_eq!(config.outbound_for(features::NONE).max_frame_len(), limit);
        assert_eq!(
            config.outbound_for(features::ROOMS).max_frame_len(),
            limit - RELAY_OVERHEAD + ROOMS_OVERHEAD
        );
        // Unknown bits change nothing.
        assert_eq!(config.outbound_for(0b110).max_frame_len(), limit);
    }
    // Never above the ceiling.
    let top = ServerConfig::with_max_frame_len(MAX_FRAME_LEN_CEILING).unwrap();
    assert_eq!(
        top.outbound_for(features::ROOMS).max_frame_len(),
        MAX_FRAME_LEN_CEILING
    );
    // The default: 65,536 for version 1, 65,816 with ROOMS.
    let default = ServerConfig::default();
    assert_eq!(default.outbound_for(features::NONE).max_frame_len(), 65_536);
    assert_eq!(
        default.outbound_for(features::ROOMS).max_frame_len(),
        65_816
    );
}

#[test]
fn a_rooms_session_raises_both_ends_by_the_rooms_overhead() {
    for limit in [
        MAX_FRAME_LEN,
        MIN_FRAME_LEN + RELAY_OVERHEAD,
        300,
        1_000_000,
    ] {
        let mut server_config = ServerConfig::with_max_frame_len(limit).unwrap();
        server_config.features = features::ROOMS;
        let mut client_config = rooms_client();
        client_config.max_frame_len = MIN_FRAME_LEN; // raised by Welcome
        let mut client = Connection::client(client_config);
        let mut server = Connection::server(server_config);
        pump(&mut client, &mut server);
        events(&mut server).unwrap();
        let negotiated = server.accept(addr(ADDR)).unwrap();
        let max = limit - RELAY_OVERHEAD;
        assert_eq!(negotiated.max_frame, max);
        assert_eq!(server.max_frame_in(), max);
        assert_eq!(server.max_frame_out(), max + ROOMS_OVERHEAD);
        assert_eq!(
            server.max_frame_out(),
            server_config
                .outbound_for(negotiated.features)
                .max_frame_len()
        );
        pump(&mut server, &mut client);
        events(&mut client).unwrap();
        assert_eq!(client.max_frame_out(), max);
        assert_eq!(client.max_frame_in(), max + ROOMS_OVERHEAD);

        // The widest Said of the longest text fits both.
        client
            .send(&Message::Nick {
                name: String::new(),
            })
            .unwrap();
        let said = widest_said(client.max_text_len());
        server.send(&said).unwrap();
        pump(&mut server, &mut client);
        assert_eq!(events(&mut client).unwrap(), [Event::Message(said)]);
    }
}

#[test]
fn a_rooms_client_takes_frames_of_max_frame_plus_300_and_no_more() {
    let mut client = Connection::client(rooms_client());
    sent(&mut client);
    client.receive(&frame(&Message::Welcome {
        version: 1,
        features: features::ROOMS,
        max_frame: 65_516,
        ip: addr(ADDR).ip(),
        port: 3075,
    }));
    assert!(matches!(client.poll(), Ok(Some(Event::Welcome(_)))));
    assert_eq!(client.max_frame_in(), 65_816);

    // A Said of exactly 65,816 bytes: the text fills what the rest leaves.
    let fixed = frame(&widest_said(0)).len() - HEADER_LEN - 1; // minus the 1-byte length
    let text_len = 65_816 - fixed - 3; // the text takes a 3-byte length
    let said = widest_said(text_len);
    let wire = frame(&said);
    assert_eq!(wire.len(), HEADER_LEN + 65_816);
    client.receive(&wire);
    assert_eq!(events(&mut client).unwrap(), [Event::Message(said)]);

    // One byte more is refused from the header.
    let mut over = Vec::new();
    over.put_u32(65_817);
    client.receive(&over);
    let got = events(&mut client);
    let want = ProtocolError::Frame(DecodeError::FrameTooLarge {
        len: 65_817,
        max: 65_816,
    });
    let (_, err) = got.as_ref().unwrap_err();
    assert_eq!(err, &want);
    assert_eq!(client.state(), State::Closed);

    // A version 1 client of the same server takes max_frame + 20 only.
    let mut v1 = Connection::client(ClientConfig::default());
    sent(&mut v1);
    v1.receive(&frame(&Message::Welcome {
        version: 1,
        features: features::NONE,
        max_frame: 65_516,
        ip: addr(ADDR).ip(),
        port: 3075,
    }));
    v1.poll().unwrap();
    assert_eq!(v1.max_frame_in(), 65_536);
}

#[test]
fn say_and_tell_are_bounded_by_max_frame_like_send() {
    let (mut client, mut server) = named_pair();
    let max = client.max_frame_out();
    assert_eq!(max, 65_516);
    let fixed = frame(&Message::Say {
        room: "lobby".into(),
        text: String::new(),
    })
    .len()
        - HEADER_LEN
        - 1;
    let text = "a".repeat(max - fixed - 3);
    let say = Message::Say {
        room: "lobby".into(),
        text: text.clone(),
    };
    client.send(&say).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(events(&mut server).unwrap(), [Event::Message(say)]);
    let too_long = Message::Tell {
        name: "lobby".into(),
        text: text + "a",
    };
    assert!(matches!(
        client.send(&too_long),
        Err(SendError::TooLarge(_))
    ));
}

// --------------------------------------------------------------- refusals

#[test]
fn every_refusal_code_round_trips() {
    for code in 0..=u16::MAX {
        let refusal = Refusal::from_code(code);
        assert_eq!(refusal.code(), code);
        let known = (1..=17).contains(&code);
        assert_eq!(
            !matches!(refusal, Refusal::Other(_)),
            known,
            "code {code}: {refusal:?}"
        );
    }
    let named = [
        (Refusal::NameTaken, 1, "name taken"),
        (Refusal::NameInvalid, 2, "invalid name"),
        (Refusal::RoomInvalid, 3, "invalid room name"),
        (Refusal::NotInRoom, 4, "not in that room"),
        (Refusal::NoSuchRoom, 5, "no such room"),
        (Refusal::NoSuchName, 6, "nobody has that name"),
        (Refusal::TooManyRooms, 7, "in too many rooms"),
        (Refusal::RoomFull, 8, "room full"),
        (Refusal::CannotReceive, 9, "cannot receive direct messages"),
        (Refusal::RateLimited, 10, "too many direct messages"),
        (Refusal::Unavailable, 11, "message history unavailable"),
        (Refusal::AuthFailed, 12, "login failed"),
        (Refusal::AuthRequired, 13, "login required"),
        (Refusal::NameReserved, 14, "name registered to an account"),
        (Refusal::Insecure, 15, "secrets only over TLS or loopback"),
        (Refusal::Throttled, 16, "too many attempts"),
        (Refusal::BadPassword, 17, "password not acceptable"),
        (Refusal::Other(0), 0, "refusal 0"),
        (Refusal::Other(999), 999, "refusal 999"),
    ];
    for (refusal, code, text) in named {
        assert_eq!(refusal.code(), code);
        assert_eq!(Refusal::from_code(code), refusal);
        assert_eq!(refusal.to_string(), text);
    }
}

#[test]
fn a_refused_with_an_unknown_code_reaches_the_client() {
    let (mut client, mut server) = named_pair();
    let refused = Message::Refused {
        code: Refusal::from_code(999),
        subject: "大厅".into(),
        detail: "新原因".into(),
    };
    server.send(&refused).unwrap();
    pump(&mut server, &mut client);
    assert_eq!(events(&mut client).unwrap(), [Event::Message(refused)]);
    assert_eq!(client.state(), State::Open, "a refusal closes nothing");
}

#[test]
fn members_and_room_infos_are_plain_values() {
    let m = Member::new("张三", addr(WIDE));
    assert_eq!(m.addr(), addr(WIDE));
    assert_eq!(m.ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    assert_eq!((m.name.as_str(), m.port), ("张三", 65_535));
    let r = RoomInfo {
        name: "lobby".into(),
        members: 3,
    };
    assert_eq!(r.clone(), r);
}
