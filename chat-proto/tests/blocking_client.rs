//! `blocking::Client` over loopback TCP against a one-client server thread
//! that drives a server-role `Connection`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use chat_proto::blocking::Client;
use chat_proto::{
    ChatCodec, ClientConfig, ClientError, Connection, EncodeError, Event, Message, ProtocolError,
    SendError, ServerConfig, State, blocking,
};

/// Long enough for any loopback exchange; only reached if something hangs.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the server saw: every event, and the rule broken, if any.
type Seen = (Vec<Event>, Option<ProtocolError>);

/// Accepts one client and drives a server machine over it: admits it if
/// `admit`, else refuses it as full; calls `on` for every event until the
/// machine closes or the client goes.
fn server(
    admit: bool,
    mut on: impl FnMut(&mut Connection, &Event) + Send + 'static,
) -> (String, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (mut sock, peer) = listener.accept().unwrap();
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut conn = Connection::server(ServerConfig::default());
        let mut seen = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let broken = loop {
                match conn.poll() {
                    Ok(Some(event)) => {
                        if let Event::Hello { .. } = event {
                            if admit {
                                conn.accept(peer);
                            } else {
                                conn.refuse("server full");
                            }
                        }
                        on(&mut conn, &event);
                        seen.push(event);
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            if let Some(bytes) = conn.transmit() {
                sock.write_all(&bytes).unwrap();
            }
            if broken.is_some() || conn.is_closed() {
                return (seen, broken);
            }
            let n = sock.read(&mut buf).unwrap();
            if n == 0 {
                let end = conn.eof().err();
                return (seen, end);
            }
            conn.receive(&buf[..n]);
        }
    });
    (addr, handle)
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Issue 8: a blocking client on defaults was disconnected for a 65,516-byte
/// text its API accepted. `Client` takes the limit from `Welcome`: the
/// longest text it accepts goes through, a longer one is refused locally and
/// the connection stays up.
#[test]
fn the_longest_text_goes_through_and_a_longer_one_is_refused_locally() {
    let (addr, server) = server(true, |conn, event| {
        if let Event::Message(Message::Send { text }) = event {
            // Relayed back, from the widest address, as to another client.
            let from = "[2001:db8::1]:65535".parse().unwrap();
            conn.send(&Message::relay(from, text.len().to_string()))
                .unwrap();
        }
        if *event == Event::Exit {
            conn.exit().unwrap();
        }
    });
    let mut client = Client::connect(connect(&addr), ClientConfig::default()).unwrap();
    assert_eq!(client.negotiated().max_frame, 65_516);
    assert_eq!(client.max_text_len(), 65_512);

    // Where the old default codec let this through, the server closed.
    assert!(
        ChatCodec::new()
            .frame(&Message::Send {
                text: "x".repeat(65_516)
            })
            .is_ok()
    );
    for len in [65_513, 65_516, 65_532] {
        assert!(matches!(
            client.send(&"x".repeat(len)),
            Err(ClientError::Send(SendError::TooLarge(
                EncodeError::TooLarge { max: 65_516, .. }
            )))
        ));
    }
    let longest = "中".repeat(21_837) + "a"; // 65,512 bytes
    assert_eq!(longest.len(), 65_512);
    client.send(&longest).unwrap();
    client.exit().unwrap();

    let mut events = Vec::new();
    while let Some(event) = client.next_event().unwrap() {
        events.push(event);
    }
    let Event::Message(Message::Relay { text, .. }) = &events[0] else {
        panic!("{events:?}");
    };
    assert_eq!(text, "65512", "only the longest text reached the server");
    assert_eq!(events[1..], [Event::Exit]);
    assert_eq!(client.connection().state(), State::Closed);

    let (seen, broken) = server.join().unwrap();
    assert_eq!(broken, None);
    assert_eq!(
        seen[1..],
        [Event::Message(Message::Send { text: longest }), Event::Exit]
    );
}

#[test]
fn ping_is_answered_while_reading() {
    let (addr, server) = server(true, |conn, event| match event {
        Event::Hello { .. } => conn.ping(41).unwrap(),
        Event::Message(Message::Pong { nonce: 41 }) => conn.ping(42).unwrap(),
        Event::Message(Message::Pong { nonce: 42 }) => {
            conn.send(&Message::Joined {
                ip: "127.0.0.1".parse().unwrap(),
                port: 9,
            })
            .unwrap();
            conn.shutdown();
        }
        _ => {}
    });
    let mut client = Client::connect(connect(&addr), ClientConfig::default()).unwrap();
    assert!(matches!(
        client.next_event().unwrap(),
        Some(Event::Message(Message::Joined { port: 9, .. }))
    ));
    // The server's shutdown: Exit, then the end.
    assert_eq!(client.next_event().unwrap(), Some(Event::Exit));
    assert_eq!(client.next_event().unwrap(), None);
    let (seen, _) = server.join().unwrap();
    assert!(seen.contains(&Event::Message(Message::Pong { nonce: 42 })));
}

#[test]
fn a_refusal_is_reported_with_its_reason() {
    let (addr, server) = server(false, |_, _| {});
    let err = Client::connect(connect(&addr), ClientConfig::default()).unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r == "server full"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the server refused the connection: server full"
    );
    server.join().unwrap();
}

#[test]
fn a_server_that_hangs_up_during_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hangup = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut hello = [0; 7];
        sock.read_exact(&mut hello).unwrap();
    });
    let err = Client::connect(connect(&addr), ClientConfig::default()).unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err}");
    hangup.join().unwrap();
}

/// A server that breaks a rule is told why, and the client reports it.
#[test]
fn a_protocol_violation_is_reported_and_explained() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let rogue = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        let codec = ChatCodec::new();
        let hello = blocking::read_message(&mut sock, &codec).unwrap();
        assert_eq!(hello, Some(Message::hello()));
        // Only Welcome or Error may come first.
        blocking::write_message(&mut sock, &codec, &Message::Ping { nonce: 1 }).unwrap();
        blocking::read_message(&mut sock, &codec).unwrap()
    });
    let err = Client::connect(connect(&addr), ClientConfig::default()).unwrap_err();
    assert!(
        matches!(err, ClientError::Protocol(ProtocolError::OutOfTurn { .. })),
        "{err}"
    );
    assert_eq!(
        rogue.join().unwrap(),
        Some(Message::Error {
            reason: "expected Welcome first, got Ping".into()
        })
    );
}

/// A ROOMS client names itself through `request`; the machine keeps it from
/// sending anything else first, and the server's `Named` comes as an event.
#[test]
fn a_rooms_client_names_itself_with_request() {
    let (addr, handle) = server(true, |conn, event| {
        if let Event::Message(Message::Nick { name }) = event {
            conn.send(&Message::Named { name: name.clone() }).unwrap();
        }
        if *event == Event::Exit {
            conn.exit().unwrap();
        }
    });
    let mut config = ClientConfig::default();
    config.features = chat_proto::features::ROOMS;
    let mut client = Client::connect(connect(&addr), config).unwrap();
    assert!(client.negotiated().has(chat_proto::features::ROOMS));
    assert!(matches!(
        client.send("too early"),
        Err(ClientError::Send(SendError::NickFirst { name: "Send" }))
    ));
    let nick = Message::Nick {
        name: "张三".into(),
    };
    client.request(&nick).unwrap();
    assert_eq!(
        client.next_event().unwrap(),
        Some(Event::Message(Message::Named {
            name: "张三".into()
        }))
    );
    // A server-only message is refused locally.
    assert!(matches!(
        client.request(&Message::Named { name: "x".into() }),
        Err(ClientError::Send(SendError::NotAllowed { .. }))
    ));
    client.exit().unwrap();
    assert_eq!(client.next_event().unwrap(), Some(Event::Exit));
    let (seen, broken) = handle.join().unwrap();
    assert_eq!(broken, None);
    assert!(seen.contains(&Event::Message(nick)));
}
