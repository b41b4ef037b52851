//! The library against a scripted fake server on loopback, so each test can
//! make the server misbehave exactly as it wants.
//!
//! What a well-behaved server does (reading `Hello`, answering `Welcome`,
//! sending relays, `Exit`, `Error`) goes through chat-proto's server-role
//! [`Connection`], as the real server does; only the misbehaviour under test
//! is written as raw bytes.
//!
//! Most tests play an older server, without names and rooms (the client
//! asks for them and gets a version 1 session); those of names and rooms
//! play one that grants them.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use chat_client::{Client, Error, Event, Events, Member, Options, Refusal, RoomInfo};
use chat_proto::{
    ChatCodec, MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING, Message, ProtocolError, ServerConfig, VERSION,
    features,
};
use common::{Fake, listen, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;

/// `config` as a server that predates names and rooms.
fn older(mut config: ServerConfig) -> ServerConfig {
    config.features = features::NONE;
    config
}

impl Fake {
    /// An older server: no names and rooms.
    async fn accept(listener: &TcpListener) -> Fake {
        Fake::accept_with(listener, older(ServerConfig::default())).await
    }

    /// A server with names and rooms (history is tests/history_fake.rs's).
    async fn accept_rooms(listener: &TcpListener) -> Fake {
        let mut config = ServerConfig::default();
        config.features = features::ROOMS;
        Fake::accept_with(listener, config).await
    }

    /// Reads the client's `Hello`, which asks for names and rooms.
    async fn hello(&mut self) {
        assert_eq!(
            self.next().await,
            Some(chat_proto::Event::Hello {
                version: VERSION,
                features: features::ROOMS | features::HISTORY | features::AUTH
            })
        );
    }

    /// With names and rooms: `Hello`, `Welcome`, then the client's `Nick`,
    /// which must ask for `asked`; returns our address as the client's own.
    async fn nick(&mut self, asked: &str) -> SocketAddr {
        self.welcome().await;
        assert_eq!(self.recv().await, Message::Nick { name: asked.into() });
        self.conn.negotiated().unwrap().addr
    }

    /// As the real server: `Named`, then the lobby's roster, `me` last.
    async fn named(&mut self, name: &str, me: SocketAddr) {
        self.send(Message::Named { name: name.into() }).await;
        self.send(Message::Roster {
            room: "lobby".into(),
            members: vec![Member::new(name, me)],
            more: false,
        })
        .await;
    }

    /// Reads `Hello` and answers `Welcome`, as the real server does.
    async fn welcome(&mut self) {
        self.hello().await;
        let peer = self.stream.peer_addr().unwrap();
        self.conn.accept(peer).unwrap();
        self.flush().await;
    }

    /// Writes a frame the machine would refuse to send.
    async fn raw(&mut self, msg: &Message) {
        let mut buf = BytesMut::new();
        // Any size: some of these frames are over the client's limit on purpose.
        ChatCodec::with_max_frame_len(MAX_FRAME_LEN_CEILING)
            .unwrap()
            .encode(msg, &mut buf)
            .unwrap();
        self.raw_bytes(&buf).await;
    }

    async fn raw_bytes(&mut self, bytes: &[u8]) {
        self.flush().await;
        within(self.stream.write_all(bytes)).await.unwrap();
    }

    /// The next frame, read without the machine's rules (after the client
    /// saw the server misbehave, it may say why with `Error`).
    async fn raw_recv(&mut self) -> Option<Message> {
        let codec = ChatCodec::new();
        loop {
            if let Some(msg) = codec.decode(self.conn.input()).unwrap() {
                return Some(msg);
            }
            let read = within(self.stream.read_buf(self.conn.input())).await;
            if read.expect("read failed") == 0 {
                return None;
            }
        }
    }

    /// Waits for the client to close its end; nothing more may come.
    async fn closed(&mut self) {
        assert_eq!(self.next().await, None);
    }

    /// The client leaves: its `Exit`, our answer, its close.
    async fn goodbye(&mut self) {
        assert_eq!(self.next().await, Some(chat_proto::Event::Exit));
        self.exit().await;
        self.closed().await;
    }

    /// After the server misbehaved, the client says why (an `Error`) and
    /// closes; returns its reason.
    async fn told_off(&mut self) -> String {
        let reason = match self.raw_recv().await {
            Some(Message::Error { reason }) => reason,
            other => panic!("expected an Error, got {other:?}"),
        };
        assert_eq!(self.raw_recv().await, None);
        reason
    }

    /// Sends `Exit`: the answer to the client's, or a shutdown notice.
    async fn exit(&mut self) {
        self.conn.exit().unwrap();
        self.flush().await;
    }
}

/// A fake server that welcomes one client and then runs `script` on it.
fn serve<F, Fut>(listener: TcpListener, script: F) -> tokio::task::JoinHandle<()>
where
    F: FnOnce(Fake) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut fake = Fake::accept(&listener).await;
        fake.welcome().await;
        script(fake).await;
    })
}

/// A fake server with names and rooms that names the client `name` (it
/// must ask for `asked`), puts it in the lobby and runs `script` on it with
/// the client's address.
fn serve_rooms<F, Fut>(
    listener: TcpListener,
    asked: &'static str,
    name: &'static str,
    script: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnOnce(Fake, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut fake = Fake::accept_rooms(&listener).await;
        let me = fake.nick(asked).await;
        fake.named(name, me).await;
        script(fake, me).await;
    })
}

fn named(name: &str) -> Options {
    let mut options = Options::default();
    options.name = Some(name.into());
    options
}

/// The next event, which must be there.
async fn next(events: &mut Events) -> Event {
    within(events.next_event())
        .await
        .unwrap()
        .expect("the events ended")
}

/// The next event must be a message; returns its sender and text.
async fn message(events: &mut Events) -> (SocketAddr, String) {
    match within(events.next_event()).await.unwrap() {
        Some(Event::Message { from, text }) => (from, text),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn quick() -> Options {
    let mut options = Options::default();
    options.handshake_timeout = Duration::from_millis(300);
    options.exit_timeout = Duration::from_millis(300);
    options
}

fn peer(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3000 + n))
}

fn relay(n: u16, text: &str) -> Message {
    Message::relay(peer(n), text)
}

#[tokio::test]
async fn handshake_reports_the_session() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        fake.goodbye().await;
    });
    let client = within(Client::connect(addr)).await.unwrap();
    let session = client.session().clone();
    assert_eq!(session.server, addr);
    assert_eq!(session.me.ip(), addr.ip());
    assert_ne!(session.me.port(), addr.port());
    assert_eq!(session.version, VERSION);
    // An older server: the client asked for names and rooms, got neither.
    assert_eq!(session.features, features::NONE);
    assert!(!session.rooms);
    assert_eq!(session.name, None);
    // The server takes 65,516-byte payloads (its 65,536 minus the relay
    // overhead); a tag and a 3-byte length leave 65,512 bytes of text.
    assert_eq!(session.max_text_len, 65_512);
    within(client.exit()).await.unwrap();
    within(server).await.unwrap();
}

#[tokio::test]
async fn connection_refused_names_the_address() {
    let (listener, addr) = listen().await;
    drop(listener);
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to {addr}: connection refused")
    );
}

#[tokio::test]
async fn host_names_and_ipv6_connect() {
    let v6 = TcpListener::bind("[::1]:0").await.unwrap();
    let v6_addr = v6.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let config = older(ServerConfig::with_max_frame_len(4096).unwrap());
        let mut fake = Fake::accept_with(&v6, config).await;
        fake.welcome().await;
        fake
    });
    let client = within(Client::connect(format!("[::1]:{}", v6_addr.port())))
        .await
        .unwrap();
    assert_eq!(client.session().me.ip(), v6_addr.ip());
    assert_eq!(client.session().max_text_len, 4096 - 20 - 4);
    drop(within(server).await.unwrap());

    let (listener, addr) = listen().await;
    let server = serve(listener, |_fake| async {});
    let client = within(Client::connect(format!("localhost:{}", addr.port())))
        .await
        .unwrap();
    assert_eq!(client.session().server, addr);
    within(server).await.unwrap();
}

#[tokio::test]
async fn unresolvable_host_is_reported() {
    let err = within(Client::connect("no-such-host.invalid:8080"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Resolve { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot resolve no-such-host.invalid:8080: "),
        "{err}"
    );
}

#[tokio::test]
async fn rejection_carries_the_servers_reason() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener).await;
        fake.hello().await;
        fake.conn.refuse("server full");
        fake.flush().await;
        fake.closed().await;
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { reason } if reason == "server full"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the server rejected the connection: server full"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn silent_server_times_out_the_handshake() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener).await;
        fake.hello().await;
        // Say nothing until the client gives up.
        assert_eq!(fake.raw_recv().await, None);
    });
    let err = within(Client::connect_with(addr, quick()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "timed out after 300ms waiting for the server's Welcome"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn wrong_first_message_is_a_protocol_error() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener).await;
        fake.hello().await;
        fake.raw(&relay(1, "too early")).await;
        // The client says why it leaves, then closes.
        assert_eq!(fake.told_off().await, "expected Welcome first, got Relay");
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol(ProtocolError::OutOfTurn {
                expected: "Welcome",
                got: "Relay"
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "protocol error: expected Welcome first, got Relay"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn a_version_the_client_did_not_offer_is_refused() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener).await;
        fake.hello().await;
        let peer = fake.stream.peer_addr().unwrap();
        fake.raw(&Message::Welcome {
            version: VERSION + 1,
            features: 0,
            max_frame: 65_516,
            ip: peer.ip(),
            port: peer.port(),
        })
        .await;
        assert_eq!(
            fake.told_off().await,
            format!(
                "unsupported protocol version {} (this end speaks 1..={VERSION})",
                VERSION + 1
            )
        );
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ProtocolError::Version { version }) if version == VERSION + 1),
        "{err:?}"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn garbage_is_a_decode_error() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener).await;
        // A 4 GiB length prefix.
        fake.raw_bytes(&[0xff; 8]).await;
        // The client says why, then hangs up (its Hello came first).
        assert_eq!(
            fake.raw_recv().await,
            Some(Message::Hello {
                version: VERSION,
                features: features::ROOMS | features::HISTORY | features::AUTH
            })
        );
        assert_eq!(
            fake.told_off().await,
            "invalid frame: frame of 4294967295 bytes exceeds the 65536-byte limit"
        );
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "protocol error: frame of 4294967295 bytes exceeds the 65536-byte limit"
    );
    within(server).await.unwrap();
}

/// The client takes relays of up to the server's `max_frame` plus the relay
/// overhead, and not one byte more.
#[tokio::test]
async fn relays_past_the_servers_limit_are_refused() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        // 65,536 bytes of payload: the longest relay a default server sends.
        let longest = "x".repeat(MAX_FRAME_LEN - 1 - 5 - 3 - 3);
        fake.send(relay(251, &longest)).await;
        fake.raw(&relay(251, &format!("{longest}x"))).await;
        assert_eq!(
            fake.told_off().await,
            "invalid frame: frame of 65537 bytes exceeds the 65536-byte limit"
        );
    });
    let (_sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    let (from, text) = message(&mut events).await;
    assert_eq!((from, text.len()), (peer(251), 65_524));
    let err = within(events.next_event()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "protocol error: frame of 65537 bytes exceeds the 65536-byte limit"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn server_hanging_up_in_the_handshake_is_reported() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener).await;
        fake.hello().await;
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(matches!(err, Error::ServerClosed), "{err:?}");
    within(server).await.unwrap();
}

#[tokio::test]
async fn events_arrive_in_order_then_the_close_is_reported() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        let who = peer(1);
        fake.send(Message::Joined {
            ip: who.ip(),
            port: who.port(),
        })
        .await;
        fake.send(relay(1, "是的你是对的，我是中国人")).await;
        fake.send(Message::Left {
            ip: who.ip(),
            port: who.port(),
        })
        .await;
        fake.conn.refuse("idle for too long");
        fake.flush().await;
    });
    let mut client = within(Client::connect(addr)).await.unwrap();
    let mut seen = Vec::new();
    let end = loop {
        match within(client.next_event()).await {
            Ok(Some(event)) => seen.push(event),
            other => break other,
        }
    };
    assert_eq!(
        seen,
        [
            Event::Joined(peer(1)),
            Event::Message {
                from: peer(1),
                text: "是的你是对的，我是中国人".into()
            },
            Event::Left(peer(1)),
            Event::ServerError("idle for too long".into()),
        ]
    );
    let err = end.unwrap_err();
    assert!(matches!(err, Error::ServerClosed), "{err:?}");
    assert_eq!(err.to_string(), "the server closed the connection");
    // After the error, the stream is over.
    assert!(within(client.next_event()).await.unwrap().is_none());
    assert!(matches!(
        within(client.send("anyone?")).await,
        Err(Error::Disconnected)
    ));
    within(server).await.unwrap();
}

#[tokio::test]
async fn frames_right_behind_the_welcome_are_kept() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener).await;
        fake.hello().await;
        let peer_addr = fake.stream.peer_addr().unwrap();
        // Welcome and a relay in a single write.
        fake.conn.accept(peer_addr).unwrap();
        fake.conn.send(&relay(2, "right behind")).unwrap();
        fake.flush().await;
        fake.goodbye().await;
    });
    let (sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    assert_eq!(message(&mut events).await, (peer(2), "right behind".into()));
    within(sender.exit()).await.unwrap();
    assert_eq!(within(events.next_event()).await.unwrap(), None);
    within(server).await.unwrap();
}

#[tokio::test]
async fn unknown_messages_from_a_newer_server_are_skipped() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        // A frame whose variant tag (200) this version does not know.
        let mut raw = BytesMut::new();
        raw.put_u32(2);
        raw.put_slice(&[200, 7]);
        fake.raw_bytes(&raw).await;
        fake.send(relay(3, "still in step")).await;
        fake.goodbye().await;
    });
    let (sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    assert_eq!(
        message(&mut events).await,
        (peer(3), "still in step".into())
    );
    within(sender.exit()).await.unwrap();
    within(server).await.unwrap();
}

#[tokio::test]
async fn unexpected_message_after_the_handshake_is_a_protocol_error() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        fake.raw(&Message::hello()).await;
        // The client says why, then hangs up.
        assert_eq!(
            fake.told_off().await,
            "protocol violation: Hello after the handshake"
        );
    });
    let mut client = within(Client::connect(addr)).await.unwrap();
    let err = within(client.next_event()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "protocol error: protocol violation: Hello after the handshake"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn pings_are_answered_while_the_caller_only_sends() {
    let (listener, addr) = listen().await;
    let (ponged_tx, ponged) = tokio::sync::oneshot::channel();
    let server = serve(listener, |mut fake| async move {
        assert_eq!(
            fake.recv().await,
            Message::Send {
                text: "before the pings".into()
            }
        );
        for nonce in [7, u64::MAX] {
            fake.conn.ping(nonce).unwrap();
            fake.flush().await;
            assert_eq!(fake.recv().await, Message::Pong { nonce });
        }
        ponged_tx.send(()).unwrap();
        fake.goodbye().await;
    });
    // Events are never read: the driver answers by itself.
    let (sender, _events) = within(Client::connect(addr)).await.unwrap().split();
    within(sender.send("before the pings")).await.unwrap();
    within(ponged).await.unwrap();
    within(sender.exit()).await.unwrap();
    within(server).await.unwrap();
}

#[tokio::test]
async fn text_over_the_limit_is_refused_locally() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        // Frames of 120 bytes: clients may send 100.
        let config = older(ServerConfig::with_max_frame_len(120).unwrap());
        let mut fake = Fake::accept_with(&listener, config).await;
        fake.welcome().await;
        // Nothing of the oversized text may arrive: the next frames are these.
        let longest = "x".repeat(98);
        assert_eq!(fake.recv().await, Message::Send { text: longest });
        assert_eq!(
            fake.recv().await,
            Message::Send {
                text: "still here".into()
            }
        );
        fake.goodbye().await;
    });
    let client = within(Client::connect(addr)).await.unwrap();
    // 100 bytes of payload: a tag byte and a one-byte length, then 98 bytes.
    assert_eq!(client.session().max_text_len, 98);
    let err = within(client.send("x".repeat(99))).await.unwrap_err();
    assert!(
        matches!(err, Error::TooLong { len: 99, max: 98 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "text too long: 99 bytes, the server accepts at most 98"
    );
    // Multi-byte text is measured in bytes: 33 × 3 = 99.
    let err = within(client.send("你".repeat(33))).await.unwrap_err();
    assert!(
        matches!(err, Error::TooLong { len: 99, max: 98 }),
        "{err:?}"
    );
    within(client.send("x".repeat(98))).await.unwrap();
    within(client.send("still here")).await.unwrap();
    within(client.exit()).await.unwrap();
    within(server).await.unwrap();
}

#[tokio::test]
async fn exit_is_acknowledged_and_ends_the_events() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        assert_eq!(fake.next().await, Some(chat_proto::Event::Exit));
        // A relay that crossed our Exit is still delivered.
        fake.send(relay(4, "bye I will go")).await;
        fake.exit().await;
        // Then the client closes its side.
        fake.closed().await;
    });
    let (sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(event) = within(events.next_event()).await.unwrap() {
            seen.push(event);
        }
        seen
    });
    within(sender.exit()).await.unwrap();
    assert_eq!(
        within(reader).await.unwrap(),
        [Event::Message {
            from: peer(4),
            text: "bye I will go".into()
        }]
    );
    assert!(matches!(
        within(sender.send("too late")).await,
        Err(Error::Disconnected)
    ));
    assert!(matches!(
        within(sender.exit()).await,
        Err(Error::Disconnected)
    ));
    within(server).await.unwrap();
}

#[tokio::test]
async fn unacknowledged_exit_times_out() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        assert_eq!(fake.next().await, Some(chat_proto::Event::Exit));
        // Never answer; the client closes after its timeout.
        fake.closed().await;
    });
    let client = within(Client::connect_with(addr, quick())).await.unwrap();
    let (sender, mut events) = client.split();
    let err = within(sender.exit()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out after 300ms waiting for the server to acknowledge Exit"
    );
    let err = within(events.next_event()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    within(server).await.unwrap();
}

#[tokio::test]
async fn server_shutdown_is_an_event_then_the_end() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        fake.conn.shutdown();
        fake.flush().await;
        fake.closed().await;
    });
    let mut client = within(Client::connect(addr)).await.unwrap();
    assert_eq!(
        within(client.next_event()).await.unwrap(),
        Some(Event::ServerExit)
    );
    assert_eq!(within(client.next_event()).await.unwrap(), None);
    assert!(matches!(
        within(client.send("anyone?")).await,
        Err(Error::Disconnected)
    ));
    within(server).await.unwrap();
}

#[tokio::test]
async fn dropping_every_handle_leaves_gracefully() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        fake.goodbye().await;
    });
    let client = within(Client::connect(addr)).await.unwrap();
    let (sender, events) = client.split();
    let second = sender.clone();
    drop(sender);
    drop(second);
    drop(events);
    within(server).await.unwrap();
}

#[tokio::test]
async fn sending_and_receiving_run_concurrently() {
    const N: usize = 200;
    let (listener, addr) = listen().await;
    // The server relays every Send straight back, tagged with a peer
    // address, and also pushes its own messages, all interleaved: it reads
    // and writes as the socket allows, never waiting for one to write the
    // other.
    let server = serve(listener, |mut fake| async move {
        let (mut sent, mut echoed) = (0, 0);
        let mut out = BytesMut::new();
        while sent < N || echoed < N || !out.is_empty() {
            while sent < N && out.len() < 4096 {
                fake.conn
                    .send(&relay(2, &format!("server {sent}")))
                    .unwrap();
                sent += 1;
            }
            while let Some(event) = fake.conn.poll().unwrap() {
                let chat_proto::Event::Message(Message::Send { text }) = event else {
                    panic!("{event:?}")
                };
                fake.conn.send(&relay(1, &text)).unwrap();
                echoed += 1;
            }
            if let Some(bytes) = fake.conn.transmit() {
                out.extend_from_slice(&bytes);
            }
            tokio::select! {
                ready = fake.stream.readable(), if echoed < N => {
                    ready.unwrap();
                    match fake.stream.try_read_buf(fake.conn.input()) {
                        Ok(0) => panic!("the client closed"),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                ready = fake.stream.writable(), if !out.is_empty() => {
                    ready.unwrap();
                    match fake.stream.try_write(&out) {
                        Ok(n) => drop(out.split_to(n)),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        fake.goodbye().await;
    });
    let (sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    let writer = tokio::spawn(async move {
        for i in 0..N {
            within(sender.send(format!("client {i}"))).await.unwrap();
        }
        sender
    });
    let (mut mine, mut theirs) = (0, 0);
    while mine < N || theirs < N {
        match within(events.next_event()).await.unwrap() {
            Some(Event::Message { from, text }) if from == peer(1) => {
                assert_eq!(text, format!("client {mine}"));
                mine += 1;
            }
            Some(Event::Message { from, text }) if from == peer(2) => {
                assert_eq!(text, format!("server {theirs}"));
                theirs += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let sender = within(writer).await.unwrap();
    within(sender.exit()).await.unwrap();
    assert_eq!(within(events.next_event()).await.unwrap(), None);
    within(server).await.unwrap();
}

// Names and rooms.

#[tokio::test]
async fn a_name_is_asked_for_and_the_lobby_roster_comes_first() {
    let (listener, addr) = listen().await;
    let server = serve_rooms(listener, "李雷", "李雷", |mut fake, _me| async move {
        fake.goodbye().await;
    });
    let client = within(Client::connect_with(addr, named("李雷")))
        .await
        .unwrap();
    let session = client.session().clone();
    assert!(session.rooms);
    assert_eq!(session.features, features::ROOMS);
    assert_eq!(session.name.as_deref(), Some("李雷"));
    let (sender, mut events) = client.split();
    assert_eq!(
        next(&mut events).await,
        Event::Roster {
            room: "lobby".into(),
            members: vec![Member::new("李雷", session.me)]
        }
    );
    assert_eq!(sender.name().as_deref(), Some("李雷"));
    assert_eq!(sender.rooms(), ["lobby"]);
    within(sender.exit()).await.unwrap();
    assert_eq!(within(events.next_event()).await.unwrap(), None);
    within(server).await.unwrap();
}

/// Without a name the client asks for none (an empty `Nick`) and takes the
/// one the server picks.
#[tokio::test]
async fn without_a_name_the_server_picks_one() {
    let (listener, addr) = listen().await;
    let server = serve_rooms(listener, "", "guest-7", |mut fake, _me| async move {
        fake.goodbye().await;
    });
    let client = within(Client::connect(addr)).await.unwrap();
    assert_eq!(client.session().name.as_deref(), Some("guest-7"));
    assert_eq!(client.name().as_deref(), Some("guest-7"));
    within(client.exit()).await.unwrap();
    within(server).await.unwrap();
}

/// A taken name does not fail the connection: the server's refusal is the
/// first event, and the session goes on under the name it picked.
#[tokio::test]
async fn a_refused_name_is_the_first_event() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept_rooms(&listener).await;
        let me = fake.nick("Alice").await;
        fake.send(Message::Refused {
            code: Refusal::NameTaken,
            subject: "Alice".into(),
            detail: "someone is called alice".into(),
        })
        .await;
        fake.named("guest-1", me).await;
        fake.goodbye().await;
    });
    let client = within(Client::connect_with(addr, named("Alice")))
        .await
        .unwrap();
    assert_eq!(client.session().name.as_deref(), Some("guest-1"));
    let me = client.session().me;
    let (sender, mut events) = client.split();
    assert_eq!(
        next(&mut events).await,
        Event::Refused {
            code: Refusal::NameTaken,
            subject: "Alice".into(),
            detail: "someone is called alice".into(),
        }
    );
    assert_eq!(
        next(&mut events).await,
        Event::Roster {
            room: "lobby".into(),
            members: vec![Member::new("guest-1", me)]
        }
    );
    within(sender.exit()).await.unwrap();
    within(server).await.unwrap();
}

#[tokio::test]
async fn a_server_that_never_names_us_times_out() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept_rooms(&listener).await;
        fake.nick("").await;
        // Never answer; the client gives up and closes.
        assert_eq!(fake.raw_recv().await, None);
    });
    let err = within(Client::connect_with(addr, quick()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out after 300ms waiting for the server's Named"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn a_rejection_while_naming_carries_the_reason() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept_rooms(&listener).await;
        fake.nick("").await;
        fake.conn.refuse("server shutting down");
        fake.flush().await;
        fake.closed().await;
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { reason } if reason == "server shutting down"),
        "{err:?}"
    );
    within(server).await.unwrap();
}

/// Before `Named` a server has nothing to say but a refused name; one that
/// keeps talking instead is told off rather than buffered without end.
#[tokio::test]
async fn chatter_before_named_is_bounded() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept_rooms(&listener).await;
        let me = fake.nick("").await;
        // The client keeps 64 (sending more than it reads would make its
        // close a reset).
        for i in 0..65 {
            let said = Message::Said {
                room: "lobby".into(),
                from: Member::new("x", me),
                text: format!("{i}"),
            };
            fake.conn.send(&said).unwrap();
        }
        fake.flush().await;
        assert_eq!(fake.told_off().await, "expected Named first, got Said");
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol(ProtocolError::OutOfTurn {
                expected: "Named",
                got: "Said"
            })
        ),
        "{err:?}"
    );
    within(server).await.unwrap();
}

/// Every request goes out as the message it names, in order.
#[tokio::test]
async fn requests_go_out_as_called() {
    let (listener, addr) = listen().await;
    let server = serve_rooms(listener, "", "guest-1", |mut fake, _me| async move {
        let expected = [
            Message::Nick {
                name: "韩梅梅".into(),
            },
            Message::Join {
                room: "中文".into(),
            },
            Message::Say {
                room: "中文".into(),
                text: "你好".into(),
            },
            Message::Send {
                text: "to the lobby".into(),
            },
            Message::Tell {
                name: "李雷".into(),
                text: "just you".into(),
            },
            Message::Who {
                room: "lobby".into(),
            },
            Message::ListRooms,
            Message::Part {
                room: "中文".into(),
            },
        ];
        for msg in expected {
            assert_eq!(fake.recv().await, msg);
        }
        fake.goodbye().await;
    });
    let client = within(Client::connect(addr)).await.unwrap();
    within(client.nick("韩梅梅")).await.unwrap();
    within(client.join("中文")).await.unwrap();
    within(client.say("中文", "你好")).await.unwrap();
    within(client.send("to the lobby")).await.unwrap();
    within(client.tell("李雷", "just you")).await.unwrap();
    within(client.who("lobby")).await.unwrap();
    within(client.list_rooms()).await.unwrap();
    within(client.part("中文")).await.unwrap();
    within(client.exit()).await.unwrap();
    within(server).await.unwrap();
}

/// A roster or room list sent in several frames is one event, even when
/// other messages and another room's roster come between its frames; the
/// rooms whose roster lists us are ours.
#[tokio::test]
async fn long_answers_are_put_back_together() {
    let (listener, addr) = listen().await;
    let server = serve_rooms(listener, "", "me", |mut fake, me| async move {
        let m = |n: u16| Member::new(format!("p{n}"), peer(n));
        let info = |name: &str, members| RoomInfo {
            name: name.into(),
            members,
        };
        for msg in [
            Message::Roster {
                room: "a".into(),
                members: vec![m(1), m(2)],
                more: true,
            },
            Message::Rooms {
                rooms: vec![info("a", 4)],
                more: true,
            },
            Message::Said {
                room: "lobby".into(),
                from: m(9),
                text: "in between".into(),
            },
            Message::Roster {
                room: "b".into(),
                members: vec![m(3)],
                more: false,
            },
            Message::Roster {
                room: "a".into(),
                members: vec![],
                more: true,
            },
            Message::Roster {
                room: "a".into(),
                members: vec![m(4), Member::new("me", me)],
                more: false,
            },
            Message::Rooms {
                rooms: vec![info("b", 1), info("lobby", 2)],
                more: false,
            },
        ] {
            fake.send(msg).await;
        }
        fake.goodbye().await;
    });
    let (sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    let me = sender.session().me;
    let m = |n: u16| Member::new(format!("p{n}"), peer(n));
    let info = |name: &str, members| RoomInfo {
        name: name.into(),
        members,
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next(&mut events).await);
    }
    assert_eq!(
        seen,
        [
            Event::Roster {
                room: "lobby".into(),
                members: vec![Member::new("me", me)]
            },
            Event::Said {
                room: "lobby".into(),
                from: m(9),
                text: "in between".into()
            },
            Event::Roster {
                room: "b".into(),
                members: vec![m(3)]
            },
            Event::Roster {
                room: "a".into(),
                members: vec![m(1), m(2), m(4), Member::new("me", me)]
            },
            Event::Rooms(vec![info("a", 4), info("b", 1), info("lobby", 2)]),
        ]
    );
    // We are in the lobby and in a; b's roster does not list us.
    assert_eq!(sender.rooms(), ["lobby", "a"]);
    within(sender.exit()).await.unwrap();
    within(server).await.unwrap();
}

/// Entries held for answers still coming are capped: an answer of exactly
/// the cap is delivered, one more entry held ends the session, and the
/// server is told why.
#[tokio::test]
async fn long_answers_are_bounded() {
    let (listener, addr) = listen().await;
    let server = serve_rooms(listener, "", "me", |mut fake, _me| async move {
        let members = |n: u16| (0..n).map(|i| Member::new("p", peer(i))).collect();
        fake.send(Message::Roster {
            room: "full".into(),
            members: members(5),
            more: false,
        })
        .await;
        fake.send(Message::Roster {
            room: "r".into(),
            members: members(3),
            more: true,
        })
        .await;
        fake.send(Message::Rooms {
            rooms: vec![
                RoomInfo {
                    name: "r".into(),
                    members: 4,
                };
                2
            ],
            more: true,
        })
        .await;
        fake.send(Message::Roster {
            room: "r".into(),
            members: members(1),
            more: true,
        })
        .await;
        assert_eq!(
            fake.told_off().await,
            "the server's Roster answer has more than 5 entries"
        );
    });
    let mut options = Options::default();
    options.max_listed = 5;
    let (_sender, mut events) = within(Client::connect_with(addr, options))
        .await
        .unwrap()
        .split();
    assert!(matches!(next(&mut events).await, Event::Roster { room, .. } if room == "lobby"));
    match next(&mut events).await {
        Event::Roster { room, members } => assert_eq!((room.as_str(), members.len()), ("full", 5)),
        other => panic!("{other:?}"),
    }
    let err = within(events.next_event()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooMany {
                what: "Roster",
                max: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(within(events.next_event()).await.unwrap(), None);
    within(server).await.unwrap();
}

/// The client follows its own name and rooms from what the server says:
/// a rename of ours (recognised by our address, or by our old name), not
/// someone else's; our own departure; a later `Named`.
#[tokio::test]
async fn own_name_and_rooms_follow_the_server() {
    let (listener, addr) = listen().await;
    // The driver reads ahead of the caller: the server waits for these
    // steps so that each check sees the state before the next message.
    let (step_tx, mut step) = tokio::sync::mpsc::channel::<()>(3);
    let server = serve_rooms(listener, "", "guest-1", |mut fake, me| async move {
        let other = Member::new("dave", peer(1));
        fake.send(Message::Entered {
            room: "lobby".into(),
            member: Member::new("carol", peer(1)),
        })
        .await;
        fake.send(Message::Renamed {
            old: "carol".into(),
            member: other.clone(),
        })
        .await;
        step.recv().await.unwrap();
        fake.send(Message::Renamed {
            old: "guest-1".into(),
            member: Member::new("李雷", me),
        })
        .await;
        step.recv().await.unwrap();
        fake.send(Message::Told {
            from: other.clone(),
            text: "psst".into(),
        })
        .await;
        fake.send(Message::Departed {
            room: "lobby".into(),
            member: other,
        })
        .await;
        step.recv().await.unwrap();
        fake.send(Message::Departed {
            room: "lobby".into(),
            member: Member::new("李雷", me),
        })
        .await;
        fake.send(Message::Named {
            name: "renamed".into(),
        })
        .await;
        fake.goodbye().await;
    });
    let (sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    let me = sender.session().me;
    assert!(matches!(next(&mut events).await, Event::Roster { .. }));
    assert_eq!(
        next(&mut events).await,
        Event::Entered {
            room: "lobby".into(),
            member: Member::new("carol", peer(1))
        }
    );
    assert!(matches!(next(&mut events).await, Event::Renamed { old, .. } if old == "carol"));
    // Someone else's rename is not ours.
    assert_eq!(sender.name().as_deref(), Some("guest-1"));
    step_tx.send(()).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        Event::Renamed {
            old: "guest-1".into(),
            member: Member::new("李雷", me)
        }
    );
    assert_eq!(sender.name().as_deref(), Some("李雷"));
    // The session keeps the name we connected with.
    assert_eq!(sender.session().name.as_deref(), Some("guest-1"));
    step_tx.send(()).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        Event::Told {
            from: Member::new("dave", peer(1)),
            text: "psst".into()
        }
    );
    assert!(
        matches!(next(&mut events).await, Event::Departed { member, .. } if member.name == "dave")
    );
    assert_eq!(sender.rooms(), ["lobby"]);
    step_tx.send(()).await.unwrap();
    assert!(
        matches!(next(&mut events).await, Event::Departed { member, .. } if member.addr() == me)
    );
    assert!(sender.rooms().is_empty());
    assert_eq!(next(&mut events).await, Event::Named("renamed".into()));
    assert_eq!(sender.name().as_deref(), Some("renamed"));
    within(sender.exit()).await.unwrap();
    within(server).await.unwrap();
}

/// Our own rename is recognised by our old name too, when the address the
/// server reports is not the one we know (a proxy in between, say).
#[tokio::test]
async fn own_rename_is_recognised_by_the_old_name_too() {
    let (listener, addr) = listen().await;
    let server = serve_rooms(listener, "", "guest-1", |mut fake, _me| async move {
        fake.send(Message::Renamed {
            old: "guest-1".into(),
            member: Member::new("new", peer(5)),
        })
        .await;
        fake.goodbye().await;
    });
    let (sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    assert!(matches!(next(&mut events).await, Event::Roster { .. }));
    assert!(matches!(next(&mut events).await, Event::Renamed { .. }));
    assert_eq!(sender.name().as_deref(), Some("new"));
    within(sender.exit()).await.unwrap();
    within(server).await.unwrap();
}

/// On a version 1 session the requests of names and rooms fail locally,
/// send nothing and end nothing; `send` goes on working.
#[tokio::test]
async fn rooms_requests_on_a_version_1_session_are_unsupported() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut fake| async move {
        assert_eq!(
            fake.recv().await,
            Message::Send {
                text: "still works".into()
            }
        );
        fake.goodbye().await;
    });
    let client = within(Client::connect(addr)).await.unwrap();
    assert!(!client.session().rooms);
    assert_eq!(client.name(), None);
    assert!(client.rooms().is_empty());
    let results = [
        ("Nick", within(client.nick("bob")).await),
        ("Join", within(client.join("r")).await),
        ("Part", within(client.part("r")).await),
        ("Say", within(client.say("r", "hi")).await.map(drop)),
        ("Tell", within(client.tell("bob", "hi")).await.map(drop)),
        ("Who", within(client.who("r")).await),
        ("ListRooms", within(client.list_rooms()).await),
    ];
    for (name, result) in results {
        match result {
            Err(Error::Unsupported { request }) => assert_eq!(request, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(
        within(client.join("r")).await.unwrap_err().to_string(),
        "Join needs names and rooms, which this session does not have (version 1)"
    );
    within(client.send("still works")).await.unwrap();
    within(client.exit()).await.unwrap();
    within(server).await.unwrap();
}

/// `Options::rooms` off: the client asks for nothing, even from a server
/// that offers names and rooms, and gets a version 1 session.
#[tokio::test]
async fn a_version_1_client_asks_for_nothing() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept_rooms(&listener).await;
        assert_eq!(
            fake.next().await,
            Some(chat_proto::Event::Hello {
                version: VERSION,
                features: features::NONE
            })
        );
        let peer_addr = fake.stream.peer_addr().unwrap();
        fake.conn.accept(peer_addr).unwrap();
        fake.flush().await;
        // No Nick: the first request is a Send.
        assert_eq!(fake.recv().await, Message::Send { text: "v1".into() });
        fake.goodbye().await;
    });
    let mut options = named("ignored");
    options.rooms = false;
    let client = within(Client::connect_with(addr, options)).await.unwrap();
    assert!(!client.session().rooms);
    assert_eq!(client.session().features, features::NONE);
    assert_eq!(client.session().name, None);
    within(client.send("v1")).await.unwrap();
    within(client.exit()).await.unwrap();
    within(server).await.unwrap();
}

/// `Say` and `Tell` texts are limited to what fits in a frame beside the
/// room or name: one byte more is refused locally, with the longest that
/// fits, nothing is sent, and the session goes on.
#[tokio::test]
async fn say_and_tell_over_the_limit_are_refused_locally() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        // Frames of 120 bytes: clients may send 100.
        let mut config = ServerConfig::with_max_frame_len(120).unwrap();
        config.features = features::ROOMS;
        let mut fake = Fake::accept_with(&listener, config).await;
        let me = fake.nick("").await;
        fake.named("guest-1", me).await;
        // A tag, "rust" with its length, the text's length: 93 bytes left.
        assert_eq!(
            fake.recv().await,
            Message::Say {
                room: "rust".into(),
                text: "x".repeat(93)
            }
        );
        // "李雷" is 6 bytes: 91 left.
        assert_eq!(
            fake.recv().await,
            Message::Tell {
                name: "李雷".into(),
                text: "y".repeat(91)
            }
        );
        assert_eq!(
            fake.recv().await,
            Message::Join {
                room: "r".repeat(98)
            }
        );
        fake.goodbye().await;
    });
    let client = within(Client::connect(addr)).await.unwrap();
    let err = within(client.say("rust", "x".repeat(94)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLong { len: 94, max: 93 }),
        "{err:?}"
    );
    within(client.say("rust", "x".repeat(93))).await.unwrap();
    let err = within(client.tell("李雷", "y".repeat(92)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLong { len: 92, max: 91 }),
        "{err:?}"
    );
    within(client.tell("李雷", "y".repeat(91))).await.unwrap();
    // A room name is measured the same way.
    let err = within(client.join("r".repeat(99))).await.unwrap_err();
    assert!(
        matches!(err, Error::TooLong { len: 99, max: 98 }),
        "{err:?}"
    );
    within(client.join("r".repeat(98))).await.unwrap();
    within(client.exit()).await.unwrap();
    within(server).await.unwrap();
}
