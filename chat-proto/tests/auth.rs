//! The AUTH capability in the state machine, without sockets: negotiation
//! (only with ROOMS), which requests may name a client and until when, the
//! stricter frame limit before a client is named, and secrets kept out of
//! `Debug` (PROTOCOL.md section 10).

mod common;

use common::{ADDR, addr, events, frame, pair, pump};

use chat_proto::{
    Connection, DecodeError, Event, HANDSHAKE_FRAME_LEN, HANDSHAKE_FRAME_MIN, Message,
    ProtocolError, Secret, SendError, ServerConfig, State, features,
};

const AUTH: u64 = features::ROOMS | features::AUTH;

fn login() -> Message {
    Message::Login {
        name: "alice".into(),
        password: "correct horse".into(),
    }
}

fn join() -> Message {
    Message::Join {
        room: "大厅".into(),
    }
}

#[test]
fn auth_is_granted_only_with_rooms() {
    let (client, _) = pair(features::ALL, features::AUTH);
    assert_eq!(client.negotiated().unwrap().features, features::NONE);
    let (client, _) = pair(features::ALL, AUTH);
    assert_eq!(client.negotiated().unwrap().features, AUTH);
    let (client, _) = pair(features::ROOMS, AUTH);
    assert_eq!(client.negotiated().unwrap().features, features::ROOMS);
}

#[test]
fn login_register_and_token_may_name_a_client_until_the_server_names_it() {
    let (mut client, mut server) = pair(features::ALL, AUTH);
    let attempts = [
        login(),
        Message::Register {
            name: "张三".into(),
            password: "密码 correct horse".into(),
        },
        Message::LoginToken {
            token: "00ff.c2VjcmV0".into(),
        },
        // A guest's Nick, refused by a server that takes no guests: the
        // client is still unnamed and may log in after it.
        Message::Nick { name: "bob".into() },
        login(),
    ];
    for msg in &attempts {
        client.send(msg).unwrap();
        pump(&mut client, &mut server);
        assert_eq!(events(&mut server).unwrap(), [Event::Message(msg.clone())]);
        assert!(server.naming(), "{msg:?}");
    }
    // Until Named, no other request, on either side.
    assert_eq!(
        client.send(&join()).unwrap_err(),
        SendError::NickFirst { name: "Join" }
    );
    server.named();
    let named = Message::Named {
        name: "alice".into(),
    };
    server.send(&named).unwrap();
    pump(&mut server, &mut client);
    assert_eq!(events(&mut client).unwrap(), [Event::Message(named)]);
    assert!(!client.naming());
    client.send(&join()).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(events(&mut server).unwrap(), [Event::Message(join())]);
    // Named now: logging in again is out of turn.
    assert_eq!(
        client.send(&login()).unwrap_err(),
        SendError::AlreadyNamed { name: "Login" }
    );
    server.receive(&frame(&login()));
    let (_, err) = events(&mut server).unwrap_err();
    assert_eq!(
        err.to_string(),
        "protocol violation: Login after the client was named"
    );
}

#[test]
fn a_request_before_the_name_is_out_of_turn_and_names_the_ways_in() {
    let (_, mut server) = pair(features::ALL, AUTH);
    server.receive(&frame(&join()));
    let (_, err) = events(&mut server).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected Nick, Register, Login or LoginToken first, got Join"
    );
    assert_eq!(server.state(), State::Closed);
}

#[test]
fn without_auth_a_login_is_not_negotiated_and_a_nick_names_at_once() {
    let (mut client, mut server) = pair(features::ALL, features::ROOMS);
    assert_eq!(
        client.send(&login()).unwrap_err(),
        SendError::NotNegotiated { name: "Login" }
    );
    client.send(&Message::Nick { name: "bob".into() }).unwrap();
    client.send(&join()).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(events(&mut server).unwrap().len(), 2);
    assert!(!server.naming());
    server.receive(&frame(&login()));
    let (_, err) = events(&mut server).unwrap_err();
    assert!(
        matches!(err, ProtocolError::NotNegotiated { got: "Login" }),
        "{err}"
    );
}

#[test]
fn logout_comes_only_after_the_name() {
    let (mut client, mut server) = pair(features::ALL, AUTH);
    assert_eq!(
        client.send(&Message::Logout).unwrap_err(),
        SendError::NickFirst { name: "Logout" }
    );
    server.receive(&frame(&Message::Logout));
    let (_, err) = events(&mut server).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected Nick, Register, Login or LoginToken first, got Logout"
    );
}

/// The longest frame a client may send before it is named.
fn guard_of(server: &ServerConfig) -> usize {
    server
        .handshake_frame_len
        .max(HANDSHAKE_FRAME_MIN)
        .min(server.client_max_frame())
}

#[test]
fn frames_before_the_name_have_the_stricter_limit() {
    assert_eq!(
        ServerConfig::default().handshake_frame_len,
        HANDSHAKE_FRAME_LEN
    );
    // A long password before the name: refused from its header alone.
    let (_, mut server) = pair(features::ALL, AUTH);
    let long = Message::Login {
        name: "alice".into(),
        password: "x".repeat(HANDSHAKE_FRAME_LEN).into(),
    };
    let bytes = frame(&long);
    server.receive(&bytes[..8]);
    let (_, err) = events(&mut server).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::Frame(DecodeError::FrameTooLarge {
            len: (bytes.len() - 4) as u64,
            max: HANDSHAKE_FRAME_LEN,
        })
    );
    // Within it, then named: the session's limit applies again.
    let (mut client, mut server) = pair(features::ALL, AUTH);
    client.send(&login()).unwrap();
    pump(&mut client, &mut server);
    events(&mut server).unwrap();
    server.named();
    let say = Message::Say {
        room: "lobby".into(),
        text: "长".repeat(10_000),
    };
    server.receive(&frame(&say));
    assert_eq!(events(&mut server).unwrap(), [Event::Message(say)]);
}

#[test]
fn a_version_1_client_is_held_to_the_stricter_limit_for_its_hello_only() {
    let mut server = Connection::server(ServerConfig::default());
    let mut hello = frame(&Message::Hello {
        version: 1,
        features: 0,
    });
    let send = Message::Send {
        text: "x".repeat(5_000),
    };
    hello.extend(frame(&send));
    server.receive(&hello);
    assert!(matches!(
        events(&mut server).unwrap()[..],
        [Event::Hello { .. }]
    ));
    server.accept(addr(ADDR)).unwrap();
    assert_eq!(events(&mut server).unwrap(), [Event::Message(send)]);

    // The Hello itself may not exceed it.
    let mut server = Connection::server(ServerConfig::default());
    server.receive(&[0, 0, 0x10, 0]);
    let (_, err) = events(&mut server).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::Frame(DecodeError::FrameTooLarge {
            len: 4096,
            max: HANDSHAKE_FRAME_LEN
        })
    ));
}

#[test]
fn the_stricter_limit_is_never_below_the_minimum_nor_above_the_session_limit() {
    let mut config = ServerConfig::default();
    config.handshake_frame_len = 10;
    assert_eq!(guard_of(&config), HANDSHAKE_FRAME_MIN);
    let mut small = ServerConfig::with_max_frame_len(300).unwrap();
    small.handshake_frame_len = 100_000;
    assert_eq!(guard_of(&small), 280);
    for config in [config, small] {
        let guard = guard_of(&config);
        let mut server = Connection::server(config);
        let mut wire = (u32::try_from(guard).unwrap()).to_be_bytes().to_vec();
        wire.push(0);
        server.receive(&wire);
        // A frame of exactly the limit is waited for, not refused.
        assert_eq!(events(&mut server).unwrap(), []);
        let mut server = Connection::server(config);
        server.receive(&(u32::try_from(guard + 1).unwrap()).to_be_bytes());
        assert!(events(&mut server).is_err());
    }
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let msgs = [
        Message::Register {
            name: "alice".into(),
            password: "hunter2-hunter2".into(),
        },
        Message::Login {
            name: "alice".into(),
            password: "hunter2-hunter2".into(),
        },
        Message::LoginToken {
            token: "hunter2-hunter2".into(),
        },
        Message::LoggedIn {
            name: "alice".into(),
            token: "hunter2-hunter2".into(),
            expires: 1,
        },
    ];
    for msg in msgs {
        let shown = format!("{msg:?} {msg:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Secret(***)"), "{shown}");
    }
    assert_eq!(Secret::from("abc").expose(), "abc");
}
