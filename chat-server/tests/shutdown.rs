//! Shutdown under load: every message accepted before the signal reaches
//! every client that keeps reading, before its `Exit`; none reaches only some.

mod common;

use std::net::SocketAddr;

use chat_proto::Message;
use common::{Client, T, TestServer, config, join};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

const READERS: usize = 48;
/// The race is narrow: run the scenario several times.
const RUNS: usize = 6;

/// What a reader got from `from` before its `Exit`: the numbers, in order.
async fn read_until_exit(
    mut c: Client,
    from: SocketAddr,
    progress: watch::Sender<usize>,
) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        match c.recv().await {
            Message::Relay { ip, port, text } => {
                assert_eq!((ip, port), (from.ip(), from.port()));
                got.push(text.parse().expect("a number"));
                progress.send_replace(got.len());
            }
            Message::Joined { .. } | Message::Left { .. } => {}
            Message::Exit => break,
            other => panic!("{}: unexpected {other:?}", c.addr),
        }
    }
    c.expect_eof().await;
    got
}

/// A message used to reach 6 readers of 11 and not the others, all of which
/// got their `Exit` within milliseconds of the signal: the sender's session
/// went on relaying while the readers were leaving, one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reader_gets_the_same_messages_before_exit() {
    for run in 0..RUNS {
        one_run(run).await;
    }
}

async fn one_run(run: usize) {
    let mut server = TestServer::start(chat_server::Config {
        rate: 0,
        ..config()
    })
    .await;
    // Readers on both sides of the sender in the server's order of
    // sessions, which is the order they hear the signal in.
    let mut early = Vec::new();
    for _ in 0..READERS / 2 {
        early.push(join(server.addr).await);
    }
    let mut sender = join(server.addr).await;
    let from = sender.addr;
    for c in &mut early {
        // Everyone is a member before the first message.
        c.expect_joined(from).await;
    }
    let mut all = early;
    for _ in 0..READERS / 2 {
        let c = join(server.addr).await;
        sender.expect_joined(c.addr).await;
        all.push(c);
    }
    let mut readers = JoinSet::new();
    let (progress_tx, mut progress) = watch::channel(0);
    for (i, c) in all.into_iter().enumerate() {
        let tx = if i == 0 {
            progress_tx.clone()
        } else {
            watch::channel(0).0
        };
        readers.spawn(read_until_exit(c, from, tx));
    }
    drop(progress_tx);
    // The sender writes numbers without pause, many frames per write, until
    // the server stops reading it; it then waits for its own Exit.
    let writer = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            for _ in 0..1000 {
                sender
                    .feed(Message::Send {
                        text: n.to_string(),
                    })
                    .await;
                n += 1;
            }
            let Some(bytes) = sender.conn.transmit() else {
                continue;
            };
            use tokio::io::AsyncWriteExt;
            if sender.stream.write_all(&bytes).await.is_err() || n > 2_000_000 {
                return n;
            }
            // Stop once the server has said goodbye.
            if let Ok(Some(Message::Exit)) = timeout(std::time::Duration::ZERO, sender.next()).await
            {
                return n;
            }
        }
    });
    // Signal in the middle of the stream.
    timeout(T, progress.wait_for(|&n| n >= 2_000))
        .await
        .expect("messages flow")
        .expect("reader 0 alive");
    server.signal();
    let mut all = Vec::new();
    while let Some(got) = timeout(T, readers.join_next()).await.expect("readers end") {
        all.push(got.expect("reader ok"));
    }
    let sent = timeout(T, writer).await.expect("writer ends").unwrap();
    let first = &all[0];
    assert!(first.len() >= 2_000, "{} received", first.len());
    for (i, got) in all.iter().enumerate() {
        assert_eq!(
            got.len(),
            first.len(),
            "run {run}: reader {i} got a different count"
        );
        assert_eq!(got, first, "run {run}: reader {i} got different messages");
    }
    let expected: Vec<u64> = (0..first.len() as u64).collect();
    assert_eq!(first, &expected, "a prefix of what was sent, in order");
    assert!(first.len() as u64 <= sent);
    server.stop().await;
}
