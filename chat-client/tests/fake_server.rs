//! The library against a scripted fake server on loopback: a tokio listener
//! speaking chat-proto frames, so each test can make the server misbehave
//! exactly as it wants.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use chat_client::{Client, Error, Event, Options};
use chat_proto::{ChatCodec, Message, VERSION};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::codec::Framed;

type Conn = Framed<TcpStream, ChatCodec>;

/// Every await on the network is bounded: a hang fails the test instead.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(5), fut)
        .await
        .expect("timed out after 5s")
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn accept(listener: &TcpListener) -> Conn {
    let (stream, _) = within(listener.accept()).await.unwrap();
    Framed::new(stream, ChatCodec::new())
}

async fn recv(conn: &mut Conn) -> Message {
    within(conn.next())
        .await
        .expect("client closed the connection")
        .expect("client sent a bad frame")
}

/// Reads the client's `Hello` and answers `Welcome` with the given limit.
async fn welcome(conn: &mut Conn, max_frame: u32) {
    assert_eq!(recv(conn).await, Message::hello());
    let peer = conn.get_ref().peer_addr().unwrap();
    conn.send(Message::Welcome {
        version: VERSION,
        features: 0,
        max_frame,
        ip: peer.ip(),
        port: peer.port(),
    })
    .await
    .unwrap();
}

/// A fake server that welcomes one client and then runs `script` on it.
fn serve<F, Fut>(listener: TcpListener, script: F) -> tokio::task::JoinHandle<()>
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        welcome(&mut conn, 64 * 1024).await;
        script(conn).await;
    })
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

#[tokio::test]
async fn handshake_reports_the_session() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut conn| async move {
        assert_eq!(recv(&mut conn).await, Message::Exit);
        conn.send(Message::Exit).await.unwrap();
    });
    let client = within(Client::connect(addr)).await.unwrap();
    let session = *client.session();
    assert_eq!(session.server, addr);
    assert_eq!(session.me.ip(), addr.ip());
    assert_ne!(session.me.port(), addr.port());
    assert_eq!(session.version, VERSION);
    // A tag and a 3-byte length come off the 64 KiB frame limit.
    assert_eq!(session.max_text_len, 64 * 1024 - 4);
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
        let mut conn = accept(&v6).await;
        welcome(&mut conn, 4096).await;
    });
    let client = within(Client::connect(format!("[::1]:{}", v6_addr.port())))
        .await
        .unwrap();
    assert_eq!(client.session().me.ip(), v6_addr.ip());
    within(server).await.unwrap();

    let (listener, addr) = listen().await;
    let server = serve(listener, |_conn| async {});
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
        let mut conn = accept(&listener).await;
        assert_eq!(recv(&mut conn).await, Message::hello());
        conn.send(Message::Error {
            reason: "server full".into(),
        })
        .await
        .unwrap();
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
        let mut conn = accept(&listener).await;
        assert_eq!(recv(&mut conn).await, Message::hello());
        // Say nothing until the client gives up.
        assert!(within(conn.next()).await.is_none());
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
        let mut conn = accept(&listener).await;
        assert_eq!(recv(&mut conn).await, Message::hello());
        conn.send(Message::relay(peer(1), "too early"))
            .await
            .unwrap();
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "protocol error: expected Welcome, the server sent Relay"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn garbage_is_a_decode_error() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = within(listener.accept()).await.unwrap();
        // A 4 GiB length prefix.
        stream.write_all(&[0xff; 8]).await.unwrap();
        // Keep the socket open until the client hangs up.
        let mut rest = Vec::new();
        let _ = within(tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest)).await;
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "protocol error: frame of 4294967295 bytes exceeds the 65536-byte limit"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn server_hanging_up_in_the_handshake_is_reported() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        assert_eq!(recv(&mut conn).await, Message::hello());
    });
    let err = within(Client::connect(addr)).await.unwrap_err();
    assert!(matches!(err, Error::ServerClosed), "{err:?}");
    within(server).await.unwrap();
}

#[tokio::test]
async fn events_arrive_in_order_then_the_close_is_reported() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut conn| async move {
        conn.send(Message::Joined {
            ip: peer(1).ip(),
            port: peer(1).port(),
        })
        .await
        .unwrap();
        conn.send(Message::relay(peer(1), "是的你是对的，我是中国人"))
            .await
            .unwrap();
        conn.send(Message::Left {
            ip: peer(1).ip(),
            port: peer(1).port(),
        })
        .await
        .unwrap();
        conn.send(Message::Error {
            reason: "idle for too long".into(),
        })
        .await
        .unwrap();
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
        let mut conn = accept(&listener).await;
        assert_eq!(recv(&mut conn).await, Message::hello());
        let peer_addr = conn.get_ref().peer_addr().unwrap();
        // Welcome and a relay in a single write.
        let codec = ChatCodec::new();
        let mut buf = BytesMut::new();
        codec
            .encode(
                &Message::Welcome {
                    version: VERSION,
                    features: 0,
                    max_frame: 65536,
                    ip: peer_addr.ip(),
                    port: peer_addr.port(),
                },
                &mut buf,
            )
            .unwrap();
        codec
            .encode(&Message::relay(peer(2), "right behind"), &mut buf)
            .unwrap();
        conn.get_mut().write_all(&buf).await.unwrap();
        assert_eq!(recv(&mut conn).await, Message::Exit);
        conn.send(Message::Exit).await.unwrap();
    });
    let (sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    assert_eq!(
        within(events.next_event()).await.unwrap(),
        Some(Event::Message {
            from: peer(2),
            text: "right behind".into()
        })
    );
    within(sender.exit()).await.unwrap();
    assert_eq!(within(events.next_event()).await.unwrap(), None);
    within(server).await.unwrap();
}

#[tokio::test]
async fn unknown_messages_from_a_newer_server_are_skipped() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut conn| async move {
        // A frame whose variant tag (200) this version does not know.
        let mut raw = BytesMut::new();
        raw.put_u32(2);
        raw.put_slice(&[200, 7]);
        conn.get_mut().write_all(&raw).await.unwrap();
        conn.send(Message::relay(peer(3), "still in step"))
            .await
            .unwrap();
        assert_eq!(recv(&mut conn).await, Message::Exit);
        conn.send(Message::Exit).await.unwrap();
    });
    let (sender, mut events) = within(Client::connect(addr)).await.unwrap().split();
    assert_eq!(
        within(events.next_event()).await.unwrap(),
        Some(Event::Message {
            from: peer(3),
            text: "still in step".into()
        })
    );
    within(sender.exit()).await.unwrap();
    within(server).await.unwrap();
}

#[tokio::test]
async fn unexpected_message_after_the_handshake_is_a_protocol_error() {
    let (listener, addr) = listen().await;
    let server = serve(listener, |mut conn| async move {
        conn.send(Message::hello()).await.unwrap();
        // The client hangs up.
        assert!(within(conn.next()).await.is_none());
    });
    let mut client = within(Client::connect(addr)).await.unwrap();
    let err = within(client.next_event()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "protocol error: the server sent Hello after the handshake"
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn pings_are_answered_while_the_caller_only_sends() {
    let (listener, addr) = listen().await;
    let (ponged_tx, ponged) = tokio::sync::oneshot::channel();
    let server = serve(listener, |mut conn| async move {
        assert_eq!(
            recv(&mut conn).await,
            Message::Send {
                text: "before the pings".into()
            }
        );
        for nonce in [7, u64::MAX] {
            conn.send(Message::Ping { nonce }).await.unwrap();
            assert_eq!(recv(&mut conn).await, Message::Pong { nonce });
        }
        ponged_tx.send(()).unwrap();
        assert_eq!(recv(&mut conn).await, Message::Exit);
        conn.send(Message::Exit).await.unwrap();
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
        let mut conn = accept(&listener).await;
        welcome(&mut conn, 100).await;
        // Nothing of the oversized text may arrive: the next frames are these.
        let longest = "x".repeat(98);
        assert_eq!(recv(&mut conn).await, Message::Send { text: longest });
        assert_eq!(
            recv(&mut conn).await,
            Message::Send {
                text: "still here".into()
            }
        );
        assert_eq!(recv(&mut conn).await, Message::Exit);
        conn.send(Message::Exit).await.unwrap();
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
    let server = serve(listener, |mut conn| async move {
        assert_eq!(recv(&mut conn).await, Message::Exit);
        // A relay that crossed our Exit is still delivered.
        conn.send(Message::relay(peer(4), "bye I will go"))
            .await
            .unwrap();
        conn.send(Message::Exit).await.unwrap();
        // Then the client closes its side.
        assert!(within(conn.next()).await.is_none());
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
    let server = tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        welcome(&mut conn, 65536).await;
        assert_eq!(recv(&mut conn).await, Message::Exit);
        // Never answer; the client closes after its timeout.
        assert!(within(conn.next()).await.is_none());
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
    let server = serve(listener, |mut conn| async move {
        conn.send(Message::Exit).await.unwrap();
        assert!(within(conn.next()).await.is_none());
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
    let server = serve(listener, |mut conn| async move {
        assert_eq!(recv(&mut conn).await, Message::Exit);
        conn.send(Message::Exit).await.unwrap();
        assert!(within(conn.next()).await.is_none());
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
    // address, and also pushes its own messages, all interleaved.
    let server = serve(listener, |conn| async move {
        let (mut tx, mut rx) = conn.split();
        let own = tokio::spawn(async move {
            let mut sent = 0;
            let mut echoed = 0;
            while sent < N || echoed < N {
                tokio::select! {
                    msg = within(rx.next()), if echoed < N => {
                        let Some(Ok(Message::Send { text })) = msg else { panic!("{msg:?}") };
                        tx.send(Message::relay(peer(1), text)).await.unwrap();
                        echoed += 1;
                    }
                    res = tx.send(Message::relay(peer(2), format!("server {sent}"))), if sent < N => {
                        res.unwrap();
                        sent += 1;
                    }
                }
            }
            assert_eq!(within(rx.next()).await.unwrap().unwrap(), Message::Exit);
            tx.send(Message::Exit).await.unwrap();
        });
        within(own).await.unwrap();
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
