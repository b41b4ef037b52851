//! The limits: slow consumers, server full, idle clients, floods, and the
//! configurations `Server::bind` refuses.

mod common;

use std::time::Duration;

use chat_proto::Message;
use common::{Bystanders, Client, T, TestServer, config, connect, join};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};

#[tokio::test]
async fn slow_consumer_is_evicted_and_others_get_everything() {
    const MAX: usize = 5_000; // messages; eviction must happen well before
    let server = TestServer::start(chat_server::Config {
        outbox_depth: 64,
        rate: 0,
        ..config()
    })
    .await;
    let mut sender = join(server.addr).await;
    let mut fast = join(server.addr).await;
    assert!(matches!(sender.recv().await, Message::Joined { .. }));

    // The slow client: tiny receive buffer, says Hello, then never reads.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = timeout(T, socket.connect(server.addr))
        .await
        .unwrap()
        .unwrap();
    let mut slow = Client::over(stream);
    slow.send(Message::hello()).await;
    slow.welcomed().await;
    let slow_addr = slow.addr;

    // The fast client reads everything in its own task and reports when it
    // learns that the slow one is gone.
    // The sender stays at most WINDOW messages ahead of the fast reader, so
    // the fast client never has more than WINDOW buffers queued (fewer than
    // the outbox depth) however the tasks are scheduled; only the slow
    // client can fall behind.
    const WINDOW: usize = 16;
    let (evicted_tx, mut evicted_rx) = mpsc::channel(1);
    let (progress_tx, mut progress) = watch::channel(0usize);
    let from = sender.addr;
    let reader = tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            match fast.recv().await {
                Message::Joined { .. } => {}
                Message::Left { ip, port } => {
                    assert_eq!((ip, port), (slow_addr.ip(), slow_addr.port()));
                    evicted_tx.send(next).await.unwrap();
                }
                Message::Relay { ip, port, text } => {
                    assert_eq!((ip, port), (from.ip(), from.port()));
                    if text == "done" {
                        return next;
                    }
                    let n: usize = text[..text.find(' ').unwrap()].parse().unwrap();
                    assert_eq!(n, next, "in order, none lost");
                    next += 1;
                    progress_tx.send_replace(next);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });

    let pad = "慢".repeat(1000); // ~3 KiB per message
    let mut sent = 0;
    while sent < MAX && evicted_rx.try_recv().is_err() {
        if sent % 8 == 0 {
            sender.flush().await;
            timeout(T, progress.wait_for(|&got| got + WINDOW > sent))
                .await
                .expect("fast client keeps up")
                .unwrap();
        }
        sender
            .feed(Message::Send {
                text: format!("{sent} {pad}"),
            })
            .await;
        sent += 1;
    }
    assert!(sent < MAX, "slow consumer not evicted after {MAX} messages");
    sender.say("done").await;
    let received = timeout(T, reader).await.unwrap().unwrap();
    assert_eq!(received, sent, "the fast client got every message");

    // The slow client, read at last: relays in order (those that fit in its
    // buffers and outbox, a bounded number), then the reason, then EOF.
    let mut got = 0;
    loop {
        match slow.recv().await {
            Message::Relay { text, .. } => {
                assert!(text.starts_with(&format!("{got} ")));
                got += 1;
            }
            Message::Error { reason } => {
                assert_eq!(reason, "slow consumer");
                break;
            }
            // Who was there when it joined.
            Message::Joined { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got < sent, "{got} of {sent}");
    slow.expect_eof().await;
    drop((slow, sender));
    server.stop().await;
}

#[tokio::test]
async fn server_full() {
    let server = TestServer::start(chat_server::Config {
        max_clients: 2,
        ..config()
    })
    .await;
    let mut by = Bystanders::join(server.addr).await;
    let mut third = connect(server.addr).await;
    third.expect_error("server full").await;
    by.still_talk("full").await;

    // A place frees up when someone leaves.
    let b_addr = by.b.addr;
    by.b.send(Message::Exit).await;
    by.b.expect_exit().await;
    by.a.expect_left(b_addr).await;
    let mut fourth = join(server.addr).await;
    fourth.say("made it").await;
    by.a.expect_relay(fourth.addr, "made it").await;
    drop((by, third, fourth));
    server.stop().await;
}

/// The client's machine would answer the `Ping` by itself: these tests
/// read raw frames so the client stays silent unless told to answer.
#[tokio::test]
async fn idle_client_is_pinged_then_closed() {
    let idle = Duration::from_millis(400);
    let server = TestServer::start(chat_server::Config {
        idle_timeout: idle,
        ..config()
    })
    .await;
    let mut quiet = join(server.addr).await;
    let since = Instant::now();
    assert!(matches!(quiet.recv_raw().await, Message::Ping { .. }));
    assert_eq!(
        quiet.recv_raw().await,
        Message::Error {
            reason: "idle timeout".into()
        }
    );
    assert!(since.elapsed() >= idle / 2, "{:?}", since.elapsed());
    let mut rest = Vec::new();
    let read = timeout(T, quiet.stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "then the close: {read:?}");
    drop(quiet);
    server.stop().await;
}

#[tokio::test]
async fn pong_keeps_a_quiet_client_alive() {
    let idle = Duration::from_millis(400);
    let server = TestServer::start(chat_server::Config {
        idle_timeout: idle,
        ..config()
    })
    .await;
    let mut quiet = join(server.addr).await;
    let since = Instant::now();
    for _ in 0..3 {
        let Message::Ping { nonce } = quiet.recv_raw().await else {
            panic!("expected Ping")
        };
        quiet.send_raw(Message::Pong { nonce }).await;
    }
    assert!(
        since.elapsed() > idle,
        "three pings span more than the timeout"
    );
    // Still connected and served.
    quiet.send_raw(Message::Ping { nonce: 5 }).await;
    loop {
        match quiet.recv_raw().await {
            Message::Pong { nonce: 5 } => break,
            Message::Ping { nonce } => quiet.send_raw(Message::Pong { nonce }).await,
            other => panic!("expected Pong, got {other:?}"),
        }
    }
    drop(quiet);
    server.stop().await;
}

/// A client that only reads is kept however long it stays: its machine
/// answers every `Ping` (the README's library example relies on it).
#[tokio::test]
async fn a_reading_client_outlives_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let server = TestServer::start(chat_server::Config {
        idle_timeout: idle,
        ..config()
    })
    .await;
    let mut reader = join(server.addr).await;
    let since = Instant::now();
    // After several idle periods, someone comes and speaks.
    let addr = server.addr;
    let speaker = async {
        tokio::time::sleep_until(since + idle * 4).await;
        let mut speaker = join(addr).await;
        speaker.say("still there?").await;
        speaker
    };
    let (speaker, got) = timeout(T, async {
        tokio::join!(speaker, reader.recv_skip_presence())
    })
    .await
    .expect("the relay in time");
    assert_eq!(got, Message::relay(speaker.addr, "still there?"));
    assert!(since.elapsed() >= idle * 4);
    drop((reader, speaker));
    server.stop().await;
}

#[tokio::test]
async fn flood_is_cut_off_after_the_burst() {
    let server = TestServer::start(chat_server::Config {
        rate: 20,
        burst: 5,
        ..config()
    })
    .await;
    let mut by = Bystanders::join(server.addr).await;
    let mut flooder = join(server.addr).await;
    for i in 0..50 {
        flooder
            .feed(Message::Send {
                text: format!("{i}"),
            })
            .await;
    }
    flooder.flush().await;
    flooder.expect_error("flood: more than 20 messages/s").await;

    // Both bystanders got the messages within the limit, in order, then the leave.
    let a = within_limit(&mut by.a, flooder.addr).await;
    let b = within_limit(&mut by.b, flooder.addr).await;
    assert_eq!(a, b);
    assert!((5..=10).contains(&a), "{a} relayed");
    by.still_talk("flood").await;
    drop((by, flooder));
    server.stop().await;
}

/// Counts the relays `0`, `1`, ... from `flooder` until it leaves.
async fn within_limit(client: &mut Client, flooder: std::net::SocketAddr) -> usize {
    let mut got = 0;
    loop {
        match client.recv().await {
            Message::Joined { .. } => {}
            Message::Relay { ip, port, text } => {
                assert_eq!((ip, port), (flooder.ip(), flooder.port()));
                assert_eq!(text, got.to_string());
                got += 1;
            }
            Message::Left { port, .. } if port == flooder.port() => return got,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Limits under which the server could misbehave are refused up front:
/// `outbox_bytes` equal to `max_frame_len` (one maximal relay from an IPv6
/// peer evicted a client that was reading normally) and an endless idle
/// timeout (it panicked in every session).
#[tokio::test]
async fn bind_refuses_limits_that_could_evict_or_overflow() {
    for (config, field) in [
        (
            chat_server::Config {
                outbox_bytes: chat_proto::MAX_FRAME_LEN,
                ..config()
            },
            "outbox_bytes",
        ),
        (
            chat_server::Config {
                idle_timeout: Duration::MAX,
                ..config()
            },
            "idle_timeout",
        ),
    ] {
        match chat_server::Server::bind("127.0.0.1:0", config).await {
            Err(chat_server::Error::Config { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected a refusal, got {other:?}"),
        }
    }
}

/// At the smallest outbox `Config::validate` allows, a client that reads
/// what it is sent is never evicted: not by the longest relay (from an IPv6
/// peer, whose address is the longest), nor by four 30 KB messages in one
/// write, nor by more than a relay batch in one write.
#[tokio::test]
async fn the_smallest_valid_outbox_keeps_a_reader() {
    let base = chat_server::Config {
        rate: 0,
        outbox_depth: chat_server::Config::MIN_OUTBOX_DEPTH,
        // The exact bound is the relay path's (see keeping_up.rs).
        storage: chat_server::Storage::Off,
        ..config()
    };
    let server = TestServer::start_on(
        "[::1]:0",
        chat_server::Config {
            outbox_bytes: base.min_outbox_bytes(),
            ..base
        },
    )
    .await;
    let mut reader = join(server.addr).await;
    let mut sender = join(server.addr).await;
    assert!(matches!(reader.recv().await, Message::Joined { .. }));
    assert!(sender.addr.is_ipv6());

    let longest = "x".repeat(chat_proto::MAX_FRAME_LEN - 24);
    sender.say(&longest).await;
    reader.expect_relay(sender.addr, &longest).await;

    let texts: Vec<String> = (0..4).map(|i| format!("{i}").repeat(30_000)).collect();
    for text in &texts {
        sender.feed(Message::Send { text: text.clone() }).await;
    }
    sender.flush().await;
    for text in &texts {
        reader.expect_relay(sender.addr, text).await;
    }

    for _ in 0..4 {
        sender
            .feed(Message::Send {
                text: longest.clone(),
            })
            .await;
    }
    sender.flush().await;
    for _ in 0..4 {
        reader.expect_relay(sender.addr, &longest).await;
    }
    sender.say("still here").await;
    reader.expect_relay(sender.addr, "still here").await;
    drop((reader, sender));
    server.stop().await;
}
