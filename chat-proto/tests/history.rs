//! The HISTORY capability in the state machine, without sockets: its
//! negotiation (only with ROOMS), feature gating both ways, the numbering of
//! `Send`/`Say`/`Tell` in both roles, and the raised frame limits
//! (PROTOCOL.md section 9).

mod common;

use common::{ADDR, WIDE, addr, events, frame, named, pair, pump, sent};

use chat_proto::{
    ClientConfig, Connection, Conversation, Entry, Event, HEADER_LEN, HISTORY_OVERHEAD,
    MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN, Member, Message, ProtocolError,
    RELAY_OVERHEAD, ROOMS_OVERHEAD, Refusal, SendError, ServerConfig, State, features,
};

const BOTH: u64 = features::ROOMS | features::HISTORY;

/// A named HISTORY pair.
fn history() -> (Connection, Connection) {
    named(features::ALL, BOTH)
}

/// The longest name or room a server shows: 32 characters of 4 bytes.
fn longest_name() -> String {
    "𝕏".repeat(32)
}

fn entry(id: u64, text: &str) -> Entry {
    Entry {
        id,
        prev: id - 1,
        at: 1_764_892_800_000,
        from: Member::new("李四", addr(WIDE)),
        text: text.into(),
    }
}

fn say(text: &str) -> Message {
    Message::Say {
        room: "大厅".into(),
        text: text.into(),
    }
}

/// One of every HISTORY message.
fn history_messages() -> Vec<Message> {
    let room = Conversation::Room("大厅".into());
    vec![
        Message::Posted {
            room: "大厅".into(),
            entry: entry(2, "大家好"),
        },
        Message::Direct {
            entry: entry(3, "你好"),
        },
        Message::Stored {
            seq: 1,
            id: 4,
            at: 5,
        },
        Message::Unstored {
            seq: 1,
            code: Refusal::Unavailable,
            detail: "磁盘已满".into(),
        },
        Message::Resume {
            conversation: room.clone(),
            after: 0,
            limit: 0,
        },
        Message::Recent {
            conversation: Conversation::Direct("李四".into()),
            count: 50,
        },
        Message::Page {
            conversation: room,
            entries: vec![entry(2, "a"), entry(3, "b")],
            missing: false,
            more: false,
        },
    ]
}

#[test]
fn history_messages_are_tagged_26_to_32_and_belong_to_history() {
    let all = history_messages();
    assert_eq!(all.len(), 7);
    for (msg, tag) in all.iter().zip(26u8..) {
        assert_eq!(frame(msg)[HEADER_LEN], tag, "{}", msg.name());
        assert_eq!(msg.feature(), features::HISTORY, "{}", msg.name());
        let client = matches!(msg, Message::Resume { .. } | Message::Recent { .. });
        assert_eq!(msg.from_client(), client, "{}", msg.name());
        assert_eq!(msg.from_server(), !client, "{}", msg.name());
        assert!(!msg.is_numbered());
    }
    assert_eq!(Conversation::Room("大厅".into()).name(), "大厅");
    assert_eq!(Conversation::Direct("李四".into()).name(), "李四");
}

#[test]
fn a_conversation_with_an_unknown_tag_is_malformed() {
    // Resume { conversation: tag 2 + "a", after: 0, limit: 0 }; tag 0 passes.
    for (tag, ok) in [(0u8, true), (1, true), (2, false), (0xfb, false)] {
        let payload = [30, tag, 1, b'a', 0, 0];
        let mut wire = bytes::BytesMut::from(&[0, 0, 0, 6][..]);
        wire.extend_from_slice(&payload);
        let got = common::any_codec().decode(&mut wire);
        if ok {
            assert!(matches!(got, Ok(Some(Message::Resume { .. }))), "{got:?}");
        } else {
            assert!(
                matches!(got, Err(chat_proto::DecodeError::Malformed(_))),
                "tag {tag}: {got:?}"
            );
        }
    }
}

// ------------------------------------------------------------ negotiation

#[test]
fn history_is_granted_only_with_rooms() {
    assert_eq!(ClientConfig::default().features, features::NONE);
    assert_eq!(ServerConfig::default().features, features::ALL);
    assert_eq!(features::HISTORY, 0x2);
    assert_eq!(features::ALL, BOTH | features::AUTH);
    // (offered, asked, granted)
    let cases = [
        (BOTH, BOTH, BOTH),
        (BOTH, features::HISTORY, features::NONE),
        (features::HISTORY, BOTH, features::NONE),
        (features::ROOMS, BOTH, features::ROOMS),
        (BOTH, features::ROOMS, features::ROOMS),
        (BOTH, features::NONE, features::NONE),
        (BOTH | 0b1000, features::HISTORY | 0b1000, 0b1000),
        (
            features::ALL,
            features::AUTH | features::HISTORY,
            features::NONE,
        ),
        (features::ALL, features::ALL, features::ALL),
    ];
    for (offered, asked, granted) in cases {
        assert_eq!(features::agree(asked, offered), granted);
        let (client, server) = pair(offered, asked);
        let what = format!("offered {offered:#x}, asked {asked:#x}");
        assert_eq!(server.negotiated().unwrap().features, granted, "{what}");
        assert_eq!(client.negotiated().unwrap().features, granted, "{what}");
    }
}

#[test]
fn a_welcome_granting_history_without_rooms_is_refused() {
    let mut config = ClientConfig::default();
    config.features = BOTH;
    let mut client = Connection::client(config);
    sent(&mut client);
    client.receive(&frame(&Message::Welcome {
        version: 1,
        features: features::HISTORY,
        max_frame: 65_516,
        ip: addr(ADDR).ip(),
        port: 3075,
    }));
    let (_, err) = events(&mut client).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unusable Welcome: features 0x2 grant HISTORY without ROOMS"
    );
    assert_eq!(client.state(), State::Closed);
    assert_eq!(
        sent(&mut client),
        [Message::Error {
            reason: err.to_string()
        }]
    );
}

// ---------------------------------------------------------- feature gating

#[test]
fn a_rooms_only_session_sends_no_history_message_either_way() {
    let (mut client, mut server) = named(features::ALL, features::ROOMS);
    for msg in history_messages() {
        let sender = if msg.from_client() {
            &mut client
        } else {
            &mut server
        };
        assert_eq!(
            sender.send(&msg),
            Err(SendError::NotNegotiated { name: msg.name() })
        );
        assert!(!sender.wants_write());
    }
}

#[test]
fn a_client_skips_history_messages_it_did_not_get() {
    let (mut client, _) = named(features::ALL, features::ROOMS);
    let mut wire = Vec::new();
    for msg in history_messages().iter().filter(|m| m.from_server()) {
        wire.extend(frame(msg));
    }
    wire.extend(frame(&Message::Ping { nonce: 9 }));
    client.receive(&wire);
    assert_eq!(events(&mut client).unwrap(), []);
    assert_eq!(client.skipped(), 5);
    assert_eq!(sent(&mut client), [Message::Pong { nonce: 9 }]);
    assert_eq!(client.state(), State::Open);
}

#[test]
fn a_server_closes_on_a_history_request_it_did_not_grant() {
    for asked in [features::NONE, features::ROOMS] {
        let (_, mut server) = named_or_plain(asked);
        server.receive(&frame(&Message::Recent {
            conversation: Conversation::Room("lobby".into()),
            count: 0,
        }));
        let (_, err) = events(&mut server).unwrap_err();
        assert_eq!(err, ProtocolError::NotNegotiated { got: "Recent" });
        assert_eq!(
            err.to_string(),
            "protocol violation: Recent belongs to a capability not negotiated in the handshake"
        );
        assert_eq!(server.state(), State::Closed);
    }
}

fn named_or_plain(asked: u64) -> (Connection, Connection) {
    if asked & features::ROOMS != 0 {
        named(features::ALL, asked)
    } else {
        pair(features::ALL, asked)
    }
}

#[test]
fn history_requests_wait_for_nick_too() {
    let (mut client, mut server) = pair(features::ALL, BOTH);
    let resume = Message::Resume {
        conversation: Conversation::Room("lobby".into()),
        after: 0,
        limit: 0,
    };
    assert_eq!(
        client.send(&resume),
        Err(SendError::NickFirst { name: "Resume" })
    );
    server.receive(&frame(&resume));
    let (_, err) = events(&mut server).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::OutOfTurn {
            expected: "Nick",
            got: "Resume"
        }
    );
}

#[test]
fn history_requests_and_answers_pass_in_a_history_session() {
    let (mut client, mut server) = history();
    for msg in history_messages() {
        let (from, to) = if msg.from_client() {
            (&mut client, &mut server)
        } else {
            (&mut server, &mut client)
        };
        if matches!(msg, Message::Stored { .. } | Message::Unstored { .. }) {
            continue; // they answer a numbered request: see below
        }
        from.send(&msg).unwrap();
        pump(from, to);
        assert_eq!(events(to).unwrap(), [Event::Message(msg)]);
    }
}

// -------------------------------------------------------------- numbering

#[test]
fn say_tell_and_send_are_numbered_in_both_roles() {
    let (mut client, mut server) = history();
    assert_eq!((client.seq(), server.seq()), (0, 0));
    let requests = [
        say("一"),
        Message::Join {
            room: "rust".into(),
        },
        Message::Tell {
            name: "李四".into(),
            text: "二".into(),
        },
        Message::Send { text: "三".into() },
        Message::Who {
            room: "rust".into(),
        },
        say("四"),
    ];
    let mut numbers = Vec::new();
    for msg in &requests {
        client.send(msg).unwrap();
        numbers.push(client.seq());
    }
    assert_eq!(numbers, [1, 1, 2, 3, 3, 4]);

    pump(&mut client, &mut server);
    let got = events(&mut server).unwrap();
    let want: Vec<Event> = requests
        .iter()
        .zip(&numbers)
        .map(|(msg, &seq)| {
            if msg.is_numbered() {
                Event::Numbered {
                    seq,
                    message: msg.clone(),
                }
            } else {
                Event::Message(msg.clone())
            }
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(server.seq(), 4);

    // Each is answered, in any order, with its number.
    let answers = [
        Message::Unstored {
            seq: 2,
            code: Refusal::NoSuchName,
            detail: "nobody has that name".into(),
        },
        Message::Stored {
            seq: 1,
            id: 41,
            at: 1,
        },
        Message::Stored {
            seq: 4,
            id: 43,
            at: 3,
        },
        Message::Unstored {
            seq: 3,
            code: Refusal::Unavailable,
            detail: "disk full".into(),
        },
    ];
    for msg in &answers {
        server.send(msg).unwrap();
    }
    pump(&mut server, &mut client);
    let got = events(&mut client).unwrap();
    assert_eq!(got, answers.map(Event::Message));
}

#[test]
fn a_request_refused_locally_takes_no_number() {
    let (mut client, _) = history();
    let huge = say(&"a".repeat(MAX_FRAME_LEN));
    assert!(matches!(client.send(&huge), Err(SendError::TooLarge(_))));
    assert_eq!(client.seq(), 0);
    client.send(&say("ok")).unwrap();
    assert_eq!(client.seq(), 1);
}

#[test]
fn nothing_is_numbered_without_history() {
    let (mut client, mut server) = named(features::ALL, features::ROOMS);
    client.send(&say("hi")).unwrap();
    assert_eq!(client.seq(), 0);
    pump(&mut client, &mut server);
    assert_eq!(events(&mut server).unwrap(), [Event::Message(say("hi"))]);
    assert_eq!(server.seq(), 0);
}

#[test]
fn a_server_answers_only_requests_it_received() {
    let (mut client, mut server) = history();
    client.send(&say("hi")).unwrap();
    pump(&mut client, &mut server);
    events(&mut server).unwrap();
    for seq in [0, 2, u64::MAX] {
        let stored = Message::Stored { seq, id: 1, at: 1 };
        assert_eq!(
            server.send(&stored),
            Err(SendError::UnknownSeq {
                name: "Stored",
                seq,
                received: 1
            })
        );
        let unstored = Message::Unstored {
            seq,
            code: Refusal::NotInRoom,
            detail: String::new(),
        };
        assert!(matches!(
            server.send(&unstored),
            Err(SendError::UnknownSeq { .. })
        ));
    }
    assert!(!server.wants_write());
}

#[test]
fn a_client_closes_on_an_answer_to_a_request_it_did_not_send() {
    for seq in [0, 2] {
        let (mut client, _) = history();
        client.send(&say("hi")).unwrap();
        sent(&mut client);
        client.receive(&frame(&Message::Stored { seq, id: 1, at: 1 }));
        let (_, err) = events(&mut client).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::UnknownSeq {
                got: "Stored",
                seq,
                sent: 1
            }
        );
        assert_eq!(client.state(), State::Closed);
        assert_eq!(
            sent(&mut client),
            [Message::Error {
                reason: err.to_string()
            }]
        );
    }
}

#[test]
fn said_and_told_are_replaced_in_a_history_session() {
    let from = Member::new("李四", addr(WIDE));
    let said = Message::Said {
        room: "大厅".into(),
        from: from.clone(),
        text: "hi".into(),
    };
    let told = Message::Told {
        from,
        text: "hi".into(),
    };
    for (msg, by) in [(said, "Posted"), (told, "Direct")] {
        let (mut client, mut server) = history();
        assert_eq!(
            server.send(&msg),
            Err(SendError::Replaced {
                name: msg.name(),
                by
            })
        );
        client.receive(&frame(&msg));
        let (_, err) = events(&mut client).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::Replaced {
                got: msg.name(),
                by
            }
        );
        // A ROOMS-only session still uses them.
        let (mut client, mut server) = named(features::ALL, features::ROOMS);
        server.send(&msg).unwrap();
        pump(&mut server, &mut client);
        assert_eq!(events(&mut client).unwrap(), [Event::Message(msg)]);
    }
}

// ----------------------------------------------------------------- limits

/// Payload length of `msg`.
fn len(msg: &Message) -> usize {
    frame(msg).len() - HEADER_LEN
}

/// The widest entry: ids of 9 bytes, the longest name, IPv6 with a 5-digit port.
fn widest(text: String) -> Entry {
    Entry {
        id: u64::MAX,
        prev: u64::MAX - 1,
        at: u64::MAX,
        from: Member::new(longest_name(), addr(WIDE)),
        text,
    }
}

#[test]
fn history_overhead_covers_the_widest_posted_direct_and_page() {
    for text_len in [0, 250, 251, 65_512] {
        let text = "a".repeat(text_len);
        let send = len(&Message::Send { text: text.clone() });
        let posted = Message::Posted {
            room: longest_name(),
            entry: widest(text.clone()),
        };
        let direct = Message::Direct {
            entry: widest(text.clone()),
        };
        let page = Message::Page {
            conversation: Conversation::Direct(longest_name()),
            entries: vec![widest(text)],
            missing: true,
            more: true,
        };
        // PROTOCOL.md section 9.9's arithmetic.
        assert_eq!(len(&posted) - send, 305);
        assert_eq!(len(&direct) - send, 176);
        assert_eq!(len(&page) - send, 309);
    }
    const { assert!(309 <= HISTORY_OVERHEAD && ROOMS_OVERHEAD < HISTORY_OVERHEAD) };
}

#[test]
fn a_history_client_accepts_max_frame_plus_history_overhead() {
    let (client, server) = history();
    assert_eq!(client.max_frame_in(), 65_516 + HISTORY_OVERHEAD);
    assert_eq!(client.max_frame_in(), 65_836);
    assert_eq!(server.max_frame_out(), 65_836);
    let (client, _) = named(features::ALL, features::ROOMS);
    assert_eq!(client.max_frame_in(), 65_516 + ROOMS_OVERHEAD);

    // The longest Send's Posted, from the widest sender, reaches the client.
    let (mut client, mut server) = history();
    let text = "a".repeat(client.max_text_len());
    let posted = Message::Posted {
        room: longest_name(),
        entry: widest(text),
    };
    assert_eq!(len(&posted), 65_516 + 305);
    server.send(&posted).unwrap();
    pump(&mut server, &mut client);
    assert_eq!(events(&mut client).unwrap(), [Event::Message(posted)]);

    // One byte over the raised limit is still refused from the header.
    let (mut client, _) = history();
    let over = (65_836u32 + 1).to_be_bytes();
    client.receive(&over);
    let (_, err) = events(&mut client).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid frame: frame of 65837 bytes exceeds the 65836-byte limit"
    );
}

#[test]
fn outbound_for_raises_the_limit_for_history_sessions() {
    for limit in [
        MAX_FRAME_LEN,
        MIN_FRAME_LEN + RELAY_OVERHEAD,
        1_000,
        1_000_000,
    ] {
        let config = ServerConfig::with_max_frame_len(limit).unwrap();
        assert_eq!(
            config.outbound_for(BOTH).max_frame_len(),
            limit - RELAY_OVERHEAD + HISTORY_OVERHEAD
        );
        assert_eq!(config.outbound_for(BOTH).max_frame_len(), limit + 300);
        // HISTORY alone is never in force: it changes nothing.
        assert_eq!(
            config.outbound_for(features::HISTORY).max_frame_len(),
            limit
        );
    }
    let top = ServerConfig::with_max_frame_len(MAX_FRAME_LEN_CEILING).unwrap();
    assert_eq!(
        top.outbound_for(BOTH).max_frame_len(),
        MAX_FRAME_LEN_CEILING
    );
    assert_eq!(
        ServerConfig::default().outbound_for(BOTH).max_frame_len(),
        65_836
    );
}

#[test]
fn a_page_is_cut_to_the_clients_limit_and_still_progresses() {
    let (mut client, mut server) = history();
    let limit = server.max_frame_out();
    let conversation = Conversation::Direct(longest_name());
    for (text_len, fit) in [(30_000, 2), (client.max_text_len(), 1), (10, 3)] {
        let entries = vec![widest("a".repeat(text_len)); 3];
        let (page, taken) = Message::page(conversation.clone(), &entries, false, false, limit);
        assert_eq!(taken, fit, "texts of {text_len}");
        assert!(len(&page) <= limit);
        server.send(&page).unwrap();
        pump(&mut server, &mut client);
        let got = events(&mut client).unwrap();
        assert!(
            matches!(&got[..], [Event::Message(Message::Page { entries, more, .. })]
                if entries.len() == fit && *more == (fit < 3)),
            "texts of {text_len}"
        );
    }
}
