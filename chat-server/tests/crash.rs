//! The server killed with SIGKILL while clients send, several times, and
//! restarted on the same data: every message that was acknowledged
//! (`Stored`) or delivered (`Posted`) before a kill is in history after it,
//! exactly once, in order, with ids that only go up and `prev` links intact.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use chat_proto::{Conversation, Entry, Event, Message};
use common::{LOBBY, T, historian, listening};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// Kills per run.
const ROUNDS: usize = 4;

async fn start(dir: &Path) -> (Child, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command
        .args(["--bind", "127.0.0.1:0", "--rate", "0", "--data"])
        .arg(dir);
    listening(command).await
}

/// A small generator for the kill points (seeded from the clock; the seed
/// is printed so that a failing run can be replayed with CRASH_SEED).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test]
async fn nothing_acknowledged_or_delivered_is_lost_across_kills() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // id -> text, for everything a client was told is stored or was given.
    let mut known: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..ROUNDS {
        let (mut child, addr) = start(dir.path()).await;
        let mut writer = historian(addr, &format!("w{round}")).await;
        let mut reader = historian(addr, &format!("r{round}")).await;
        let kill_after = 20 + rng.below(400);
        let mut texts: BTreeMap<u64, String> = BTreeMap::new();
        let mut seq = 0u64;
        let mut acked = 0u64;
        // Send in bursts, take what comes back, kill mid-stream.
        'run: loop {
            for _ in 0..16 {
                seq += 1;
                let text = format!("round {round} message {seq} 你好");
                writer
                    .feed(Message::Say {
                        room: LOBBY.into(),
                        text: text.clone(),
                    })
                    .await;
                texts.insert(seq, text);
            }
            writer.flush().await;
            while acked < seq {
                match timeout(T, writer.recv()).await.expect("an ack in time") {
                    Message::Stored { seq: s, id, .. } => {
                        known.insert(id, texts[&s].clone());
                        acked += 1;
                        if acked >= kill_after {
                            break 'run;
                        }
                    }
                    Message::Entered { .. } => {}
                    other => panic!("writer: unexpected {other:?}"),
                }
            }
        }
        child.start_kill().expect("SIGKILL");
        timeout(T, child.wait())
            .await
            .expect("killed in time")
            .unwrap();
        // What the reader had received before the kill was stored too.
        // (Read by hand: the kill may cut the last frame, or reset.)
        loop {
            match reader.conn.poll() {
                Ok(Some(Event::Message(Message::Posted { entry, .. }))) => {
                    known.insert(entry.id, entry.text);
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    let read = timeout(T, reader.stream.read_buf(reader.conn.input()))
                        .await
                        .expect("the end in time");
                    if !matches!(read, Ok(n) if n > 0) {
                        break;
                    }
                }
                Err(e) => panic!("reader: {e}"),
            }
        }
    }
    // One last start: read everything back.
    let (child, addr) = start(dir.path()).await;
    let mut reader = historian(addr, "final").await;
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        reader
            .send(Message::Resume {
                conversation: Conversation::Room(LOBBY.into()),
                after: entries.last().map_or(0, |e| e.id),
                limit: 0,
            })
            .await;
        match timeout(T, reader.recv()).await.expect("a page in time") {
            Message::Page {
                entries: got,
                missing,
                more,
                ..
            } => {
                assert!(!missing, "nothing is trimmed here");
                entries.extend(got);
                if !more {
                    break;
                }
            }
            other => panic!("expected Page, got {other:?}"),
        }
    }
    drop(child);
    let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev, pair[0].id, "links intact");
    }
    let stored: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(stored.len(), ids.len(), "each once");
    for (id, text) in &known {
        let entry = entries
            .iter()
            .find(|e| e.id == *id)
            .unwrap_or_else(|| panic!("acknowledged or delivered id {id} lost (seed {seed})"));
        assert_eq!(&entry.text, text);
    }
    assert!(
        known.len() >= ROUNDS * 20,
        "every round acknowledged something"
    );
}
