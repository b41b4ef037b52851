//! A client that reads normally is never evicted, however its peers batch
//! their messages, at the smallest outbox the configuration allows.

mod common;

use std::net::SocketAddr;

use chat_proto::{HEADER_LEN, Message};
use chat_server::Config;
use common::{Client, T, TestServer, config, join};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The smallest outbox that can hold one relay batch, a maximal frame, a
/// batch of notices and a ping and pong (what `Config::validate` asks).
fn tight() -> Config {
    let base = config();
    Config {
        rate: 0,
        outbox_bytes: base.relay_batch + base.max_frame_len + HEADER_LEN + base.presence_batch + 64,
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
