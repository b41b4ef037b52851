//! A store that cannot grow: the server binary runs with a file size limit
//! (`ulimit -f`, with SIGXFSZ ignored, so a write past it fails as on a
//! full disk). Sends past it are refused with `Unavailable`, clearly and to
//! the sender alone; the server stays up, keeps its connections and serves
//! the history it has.

mod common;

use chat_proto::{Conversation, Message, Refusal};
use common::{LOBBY, T, historian, listening};
use tokio::process::Command;
use tokio::time::timeout;

#[tokio::test]
async fn a_full_store_refuses_sends_and_still_serves_history() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB of file: the empty store takes about 3.
    let script = format!(
        "trap '' XFSZ; ulimit -f 8192; exec '{}' --bind 127.0.0.1:0 --data '{}'",
        env!("CARGO_BIN_EXE_chat-server"),
        dir.path().display()
    );
    let mut command = Command::new("bash");
    command.args(["-c", &script]);
    let (mut child, addr) = listening(command).await;

    let mut ann = historian(addr, "ann").await;
    let big = "满".repeat(20_000);
    let mut stored = Vec::new();
    let mut refused = None;
    for seq in 1..=400u64 {
        ann.say_in(LOBBY, &format!("{seq} {big}")).await;
        match timeout(T, ann.recv()).await.expect("an answer in time") {
            Message::Stored { seq: s, id, .. } => {
                assert_eq!(s, seq);
                stored.push((id, seq));
            }
            Message::Unstored {
                seq: s,
                code,
                detail,
            } => {
                assert_eq!((s, code), (seq, Refusal::Unavailable));
                assert!(detail.contains("not stored"), "{detail}");
                refused = Some(seq);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let refused = refused.expect("the store filled up within 400 messages of 60 KB");
    assert!(!stored.is_empty(), "some fitted before it filled");
    // Still up: a newcomer is welcomed and reads what was stored.
    let mut bo = historian(addr, "bo").await;
    bo.send(Message::Recent {
        conversation: Conversation::Room(LOBBY.into()),
        // One: two of these would not fit one frame.
        count: 1,
    })
    .await;
    let (last_id, last_seq) = *stored.last().unwrap();
    loop {
        match timeout(T, bo.recv()).await.expect("a page in time") {
            Message::Page { entries, .. } => {
                let last = entries.last().expect("the stored messages");
                assert_eq!(last.id, last_id);
                assert!(last.text.starts_with(&format!("{last_seq} ")));
                break;
            }
            Message::Entered { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // And the sender's connection is still open: it is answered again.
    ann.say_in(LOBBY, "small").await;
    loop {
        match timeout(T, ann.recv()).await.expect("an answer in time") {
            Message::Stored { seq, .. } | Message::Unstored { seq, .. } => {
                assert_eq!(seq, refused + 1);
                break;
            }
            Message::Entered { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    drop((ann, bo));
    child.start_kill().unwrap();
}
