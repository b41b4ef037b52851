//! The library against a scripted fake server on loopback, so each test can
//! make the server misbehave exactly as it wants.
//!
//! What a well-behaved server does (reading `Hello`, answering `Welcome`,
//! sending relays, `Exit`, `Error`) goes through chat-proto's server-role
//! [`Connection`], as the real server does; only the misbehaviour under test
//! is written as raw bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use chat_client::{Client, Error, Event, Events, Options};
use chat_proto::{
    ChatCodec, Connection, MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING, Message, ProtocolError,
    ServerConfig, VERSION, features,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Every await on the network is bounded: a hang fails the test instead.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(10), fut)
        .await
        .expect("timed out after 10s")
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// One accepted client, seen through a server-role machine.
struct Fake {
    stream: TcpStream,
    conn: Connection,
}

impl Fake {
    async fn accept(listener: &TcpListener) -> Fake {
        Fake::accept_with(listener, ServerConfig::default()).await
    }

    async fn accept_with(listener: &TcpListener, config: ServerConfig) -> Fake {
        let (stream, _) = within(listener.accept()).await.unwrap();
        Fake {
            stream,
            conn: Connection::server(config),
        }
    }

    /// The next event from the client; `None` once it has closed.
    async fn next(&mut self) -> Option<chat_proto::Event> {
        loop {
            if let Some(event) = self.conn.poll().expect("the client broke the protocol") {
                return Some(event);
            }
            self.flush().await;
            let read = within(self.stream.read_buf(self.conn.input())).await;
            if read.expect("read failed") == 0 {
                self.conn.eof().expect("the client closed mid-frame");
                return None;
            }
        }
    }

    /// The client's next message; it must be one.
    async fn recv(&mut self) -> Message {
        match self.next().await {
            Some(chat_proto::Event::Message(msg)) => msg,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Reads the client's `Hello`.
    async fn hello(&mut self) {
        assert_eq!(
            self.next().await,
            Some(chat_proto::Event::Hello {
                version: VERSION,
                features: features::ALL
            })
        );
    }

    /// Reads `Hello` and answers `Welcome`, as the real server does.
    async fn welcome(&mut self) {
        self.hello().await;
        let peer = self.stream.peer_addr().unwrap();
        self.conn.accept(peer).unwrap();
        self.flush().await;
    }

    /// Sends a message the server role may send.
    async fn send(&mut self, msg: Message) {
        self.conn.send(&msg).unwrap();
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

    async fn flush(&mut self) {
        if let Some(bytes) = self.conn.transmit() {
            within(self.stream.write_all(&bytes)).await.unwrap();
        }
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
    let session = *client.session();
    assert_eq!(session.server, addr);
    assert_eq!(session.me.ip(), addr.ip());
    assert_ne!(session.me.port(), addr.port());
    assert_eq!(session.version, VERSION);
    assert_eq!(session.features, features::ALL);
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
        let config = ServerConfig::with_max_frame_len(4096).unwrap();
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
        assert_eq!(fake.raw_recv().await, Some(Message::hello()));
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
        let config = ServerConfig::with_max_frame_len(120).unwrap();
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
