//! A client that reads normally is never evicted, however its peers batch
//! their messages, at the smallest outbox the configuration allows.

mod common;

use std::net::SocketAddr;

use chat_proto::{HEADER_LEN, Message};
use chat_server::Config;
use common::{Client, LOBBY, T, TestServer, config, entered, join, named, said};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The smallest outbox that can hold one relay batch, a maximal frame, a
/// batch of notices and a ping and pong (what `Config::validate` asks).
fn tight() -> Config {
    let base = config();
    let min = base.min_outbox_bytes();
    // A maximal frame for a HISTORY client is 300 bytes longer than L, and
    // its longest notice 288 bytes.
    assert_eq!(
        min,
        base.relay_batch + base.max_frame_len + 300 + HEADER_LEN + base.presence_batch + 288 + 32
    );
    Config {
        rate: 0,
        tell_rate: 0,
        outbox_bytes: min,
        // The exact bound is the relay path's: a session hands the room at
        // most its budget per turn and lets the readers run. With history,
        // deliveries come from the journal's thread, bounded per batch and
        // per sender but not in step with the readers (see history.rs).
        storage: chat_server::Storage::Off,
        ..base
    }
}

/// Reads `n` relays from `from` in a task of its own, as a client that
/// keeps up does, and returns their texts' lengths and first characters.
fn read(mut reader: Client, from: SocketAddr, n: usize) -> JoinHandle<Vec<(usize, char)>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < n {
            match reader.recv().await {
                Message::Relay { ip, port, text } => {
                    assert_eq!((ip, port), (from.ip(), from.port()));
                    got.push((text.len(), text.chars().next().unwrap_or(' ')));
                }
                Message::Joined { .. } | Message::Left { .. } => {}
                Message::Error { reason } => panic!("reader closed: {reason}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    })
}

/// Eight 30 KB `Send`s in one write: their relays used to be handed to the
/// room in batches of 90 KB within one turn, 240 KB in all, and the reader
/// was evicted before it could read any of them.
#[tokio::test]
async fn many_large_sends_in_one_write_do_not_evict_a_reader() {
    let server = TestServer::start(tight()).await;
    let mut sender = join(server.addr).await;
    let reader = join(server.addr).await;
    // Once the sender hears of the reader, the reader hears the sender.
    sender.expect_joined(reader.addr).await;
    let texts: Vec<String> = (0..8)
        .map(|i| format!("{i}{}", "字".repeat(10_000)))
        .collect();
    let reading = read(reader, sender.addr, texts.len());
    for text in &texts {
        sender.feed(Message::Send { text: text.clone() }).await;
    }
    sender.flush().await;
    let got = timeout(T, reading)
        .await
        .expect("in time")
        .expect("reader ok");
    let sent: Vec<_> = texts
        .iter()
        .map(|t| (t.len(), t.chars().next().unwrap()))
        .collect();
    assert_eq!(got, sent);
    drop(sender);
    server.stop().await;
}

/// With history on (the default), 40 MB of large messages sent as fast as
/// the sender may: stored, then delivered by the journal in batches of
/// about one relay buffer, while the sender holds at most its budget on its
/// way. A reader that keeps up gets every one, in order, at the default
/// outbox (8 MiB: five times less than what passes).
#[tokio::test]
async fn with_history_a_flood_of_large_messages_does_not_evict_a_reader() {
    let server = TestServer::start(Config {
        rate: 0,
        ..config()
    })
    .await;
    let mut sender = join(server.addr).await;
    let reader = join(server.addr).await;
    sender.expect_joined(reader.addr).await;
    let texts: Vec<String> = (0..1300)
        .map(|i| {
            format!(
                "{}{}",
                char::from(b'a' + (i % 26) as u8),
                "字".repeat(10_000)
            )
        })
        .collect();
    let reading = read(reader, sender.addr, texts.len());
    for chunk in texts.chunks(50) {
        for text in chunk {
            sender.feed(Message::Send { text: text.clone() }).await;
        }
        sender.flush().await;
    }
    let got = timeout(T * 3, reading)
        .await
        .expect("in time")
        .expect("reader ok");
    let sent: Vec<_> = texts
        .iter()
        .map(|t| (t.len(), t.chars().next().unwrap()))
        .collect();
    assert_eq!(got, sent);
    drop(sender);
    server.stop().await;
}

/// One maximal `Send` from an IPv6 peer: its relay is the largest frame
/// the server sends.
#[tokio::test]
async fn a_maximal_send_from_ipv6_does_not_evict_a_reader() {
    let server = TestServer::start_on("[::1]:0", tight()).await;
    let mut sender = join(server.addr).await;
    let reader = join(server.addr).await;
    // Once the sender hears of the reader, the reader hears the sender.
    sender.expect_joined(reader.addr).await;
    let text = "z".repeat(sender.conn.max_text_len());
    let reading = read(reader, sender.addr, 3);
    for _ in 0..3 {
        sender.say(&text).await;
    }
    let got = timeout(T, reading)
        .await
        .expect("in time")
        .expect("reader ok");
    assert_eq!(got, vec![(text.len(), 'z'); 3]);
    drop(sender);
    server.stop().await;
}

/// The longest `Said` there is (the longest room and sender names, an IPv6
/// sender, the longest text) reaches a ROOMS reader at the smallest outbox,
/// three in a row.
#[tokio::test]
async fn the_longest_said_does_not_evict_a_rooms_reader() {
    let server = TestServer::start_on("[::1]:0", tight()).await;
    let long = "𠀀".repeat(32);
    let (mut sender, _) = named(server.addr, &long).await;
    let (mut reader, _) = named(server.addr, "reader").await;
    sender.expect(entered(LOBBY, &reader.me())).await;
    sender.enter(&long).await;
    reader.enter(&long).await;
    sender.expect(entered(&long, &reader.me())).await;
    // The longest text of a Say in that room: the payload is exactly
    // Welcome.max_frame.
    let max = sender.conn.negotiated().unwrap().max_frame;
    let empty = chat_proto::ChatCodec::new()
        .frame(&Message::Say {
            room: long.clone(),
            text: String::new(),
        })
        .unwrap()
        .as_bytes()
        .len()
        - HEADER_LEN;
    let text = "z".repeat(max - empty - 2);
    let say = Message::Say {
        room: long.clone(),
        text: text.clone(),
    };
    let len = chat_proto::ChatCodec::with_max_frame_len(chat_proto::MAX_FRAME_LEN_CEILING)
        .unwrap()
        .frame(&say)
        .unwrap()
        .as_bytes()
        .len();
    assert_eq!(len, max + HEADER_LEN);
    for _ in 0..3 {
        sender.feed(say.clone()).await;
    }
    sender.flush().await;
    let me = sender.me();
    for _ in 0..3 {
        let got = timeout(T, reader.recv()).await.expect("in time");
        assert_eq!(got, said(&long, &me, &text));
    }
    drop((sender, reader));
    server.stop().await;
}
