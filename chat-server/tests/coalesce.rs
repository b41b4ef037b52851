//! Write coalescing (`Config::coalesce`): a busy client's writes wait out
//! the gap and share one write, and nothing is lost or reordered.

mod common;

use std::time::{Duration, Instant};

use chat_proto::Message;
use chat_server::Config;
use common::{T, TestServer, config, join};
use tokio::time::timeout;

fn coalescing(gap: Duration) -> Config {
    Config {
        coalesce: gap,
        rate: 0,
        presence: false,
        ..config()
    }
}

async fn relay_text(client: &mut common::Client) -> String {
    match timeout(T, client.recv()).await.expect("a relay in time") {
        Message::Relay { text, .. } => text,
        other => panic!("expected a relay, got {other:?}"),
    }
}

/// Three clients each send 300 messages in bursts of 30: each gets the
/// others' 600, exactly once and in each sender's order.
#[tokio::test]
async fn coalesced_writes_deliver_everything_in_order() {
    let server = TestServer::start(coalescing(Duration::from_millis(2))).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(join(server.addr).await);
    }
    let addrs: Vec<_> = clients.iter().map(|c| c.addr).collect();
    let mut readers = Vec::new();
    for mut client in clients {
        let addrs = addrs.clone();
        readers.push(tokio::spawn(async move {
            let me = client.addr;
            let mut next = vec![0u32; addrs.len()];
            let mut sent = 0u32;
            let mut got = 0;
            while got < 600 || sent < 300 {
                if sent < 300 {
                    for _ in 0..30 {
                        client
                            .feed(Message::Send {
                                text: format!("{me} {sent} 你好"),
                            })
                            .await;
                        sent += 1;
                    }
                    client.flush().await;
                }
                // Read what has come, without waiting once all is sent.
                while got < 600 {
                    let wait = if sent < 300 {
                        Duration::from_millis(1)
                    } else {
                        T
                    };
                    let Ok(msg) = timeout(wait, client.recv()).await else {
                        break;
                    };
                    let Message::Relay { ip, port, text } = msg else {
                        panic!("expected a relay, got {msg:?}");
                    };
                    let from = addrs
                        .iter()
                        .position(|a| (a.ip(), a.port()) == (ip, port))
                        .expect("a known sender");
                    assert_ne!(addrs[from], me, "own message relayed back");
                    assert_eq!(text, format!("{} {} 你好", addrs[from], next[from]));
                    next[from] += 1;
                    got += 1;
                }
            }
            client
        }));
    }
    for reader in readers {
        timeout(T * 4, reader)
            .await
            .expect("done in time")
            .expect("reader ok");
    }
    server.stop().await;
}

/// A client written to a moment ago waits out the gap before its next
/// write; one written to long ago (here: never since its welcome) does not
/// wait. The gap is the largest allowed, so that a slow machine can only
/// make the measured wait longer, never fake it.
#[tokio::test]
async fn a_client_just_written_to_waits_out_the_gap() {
    let gap = Config::MAX_COALESCE;
    let server = TestServer::start(coalescing(gap)).await;
    let mut sender = join(server.addr).await;
    let mut reader = join(server.addr).await;
    // Or the sender's own Nagle would hold "second" for the server's ACK.
    sender.stream.set_nodelay(true).unwrap();
    sender.say("first").await;
    assert_eq!(relay_text(&mut reader).await, "first");
    let written = Instant::now();
    sender.say("second").await;
    assert_eq!(relay_text(&mut reader).await, "second");
    let waited = written.elapsed();
    assert!(waited >= gap / 2, "the second relay came after {waited:?}");
    drop((sender, reader));
    server.stop().await;
}
