//! History (the HISTORY capability, PROTOCOL.md section 9) over real
//! sockets: ids and links, acknowledgements, pages, retention, direct
//! conversations, and history that survives a restart of the server.

mod common;

use chat_proto::{Conversation, Entry, Message, Refusal};
use chat_server::{Config, Server, Storage};
use common::{Client, LOBBY, T, TestServer, config, historian, join, named};
use tokio::time::timeout;

/// The next message that is not a presence notice.
async fn next(client: &mut Client) -> Message {
    loop {
        match timeout(T, client.recv()).await.expect("a message in time") {
            Message::Entered { .. } | Message::Departed { .. } | Message::Roster { .. } => {}
            Message::Joined { .. } | Message::Left { .. } => {}
            other => return other,
        }
    }
}

/// Says `text` in `room` and returns its `Stored`'s id, checking `seq`.
async fn say(client: &mut Client, room: &str, text: &str, seq: u64) -> u64 {
    client.say_in(room, text).await;
    match next(client).await {
        Message::Stored { seq: got, id, .. } => {
            assert_eq!(got, seq);
            id
        }
        other => panic!("expected Stored, got {other:?}"),
    }
}

async fn posted(client: &mut Client) -> (String, Entry) {
    match next(client).await {
        Message::Posted { room, entry } => (room, entry),
        other => panic!("expected Posted, got {other:?}"),
    }
}

async fn page(client: &mut Client) -> (Vec<Entry>, bool, bool) {
    match next(client).await {
        Message::Page {
            entries,
            missing,
            more,
            ..
        } => (entries, missing, more),
        other => panic!("expected Page, got {other:?}"),
    }
}

fn texts(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.text.as_str()).collect()
}

/// Each kind of member gets the message in its own form; the HISTORY
/// sender learns the id its peers see, and ids link by `prev`.
#[tokio::test]
async fn every_kind_of_client_gets_a_stored_message_and_ids_link() {
    let server = TestServer::start(config()).await;
    let mut v1 = join(server.addr).await;
    let (mut plain, _) = named(server.addr, "plain").await;
    let mut ann = historian(server.addr, "ann").await;
    let mut bo = historian(server.addr, "bo").await;
    let first = say(&mut ann, LOBBY, "你好，大家", 1).await;
    let (room, entry) = posted(&mut bo).await;
    assert_eq!(room, LOBBY);
    assert_eq!(
        (entry.id, entry.text.as_str(), entry.from.name.as_str()),
        (first, "你好，大家", "ann")
    );
    assert!(entry.at > 1_700_000_000_000, "milliseconds since the epoch");
    match next(&mut plain).await {
        Message::Said { room, from, text } => {
            assert_eq!(
                (room.as_str(), from.name.as_str(), text.as_str()),
                (LOBBY, "ann", "你好，大家")
            )
        }
        other => panic!("expected Said, got {other:?}"),
    }
    v1.expect_relay(ann.addr, "你好，大家").await;
    // Bo answers: its message links to ann's.
    let second = say(&mut bo, LOBBY, "hi", 1).await;
    let (_, entry) = posted(&mut ann).await;
    assert_eq!((entry.id, entry.prev), (second, first));
    assert!(second > first);
    // A version 1 client's Send is stored too, and linked.
    v1.say("from v1").await;
    let (_, entry) = posted(&mut ann).await;
    assert_eq!((entry.prev, entry.text.as_str()), (second, "from v1"));
    drop((v1, plain, ann, bo));
    server.stop().await;
}

/// Refusals of numbered requests are `Unstored` with the request's number;
/// the next accepted one is numbered after them.
#[tokio::test]
async fn refused_sends_are_unstored_with_their_number() {
    let server = TestServer::start(config()).await;
    let mut ann = historian(server.addr, "ann").await;
    ann.say_in("nowhere", "lost").await;
    match next(&mut ann).await {
        Message::Unstored { seq, code, .. } => assert_eq!((seq, code), (1, Refusal::NotInRoom)),
        other => panic!("expected Unstored, got {other:?}"),
    }
    ann.send(Message::Tell {
        name: "nobody".into(),
        text: "hello?".into(),
    })
    .await;
    match next(&mut ann).await {
        Message::Unstored { seq, code, .. } => assert_eq!((seq, code), (2, Refusal::NoSuchName)),
        other => panic!("expected Unstored, got {other:?}"),
    }
    say(&mut ann, LOBBY, "here", 3).await;
    // Reading a room one is not in is refused, the connection stays.
    ann.send(Message::Recent {
        conversation: Conversation::Room("nowhere".into()),
        count: 5,
    })
    .await;
    match next(&mut ann).await {
        Message::Refused { code, subject, .. } => {
            assert_eq!((code, subject.as_str()), (Refusal::NotInRoom, "nowhere"))
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    drop(ann);
    server.stop().await;
}

/// `Resume` pages through a room oldest first with `more`; `Recent` gives
/// the last ones; a page never holds more than asked.
#[tokio::test]
async fn resume_and_recent_page_through_a_room() {
    let server = TestServer::start(config()).await;
    let mut ann = historian(server.addr, "ann").await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(say(&mut ann, LOBBY, &format!("m{i}"), i + 1).await);
    }
    let lobby = || Conversation::Room(LOBBY.into());
    let mut after = 0;
    let mut got = Vec::new();
    loop {
        ann.send(Message::Resume {
            conversation: lobby(),
            after,
            limit: 10,
        })
        .await;
        let (entries, missing, more) = page(&mut ann).await;
        assert!(!missing);
        assert!(entries.len() <= 10);
        after = entries.last().map_or(after, |e| e.id);
        got.extend(entries);
        if !more {
            break;
        }
    }
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    for pair in got.windows(2) {
        assert_eq!(pair[1].prev, pair[0].id);
    }
    ann.send(Message::Recent {
        conversation: lobby(),
        count: 3,
    })
    .await;
    let (entries, missing, more) = page(&mut ann).await;
    assert_eq!(texts(&entries), ["m22", "m23", "m24"]);
    assert!(!missing && !more);
    drop(ann);
    server.stop().await;
}

/// With a retention of 5 per conversation, the oldest go; a page that
/// reaches for them says so.
#[tokio::test]
async fn retention_drops_the_oldest_and_pages_say_so() {
    let server = TestServer::start(Config {
        history_size: 5,
        ..config()
    })
    .await;
    let mut ann = historian(server.addr, "ann").await;
    for i in 0..12 {
        say(&mut ann, LOBBY, &format!("m{i}"), i + 1).await;
    }
    // Trimming runs about once a second on the journal's thread: poll for
    // it, within the bound.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        ann.send(Message::Resume {
            conversation: Conversation::Room(LOBBY.into()),
            after: 0,
            limit: 0,
        })
        .await;
        let (entries, missing, more) = page(&mut ann).await;
        assert!(!more);
        if entries.len() == 5 {
            assert!(missing, "the page says its start is gone");
            assert_eq!(texts(&entries), ["m7", "m8", "m9", "m10", "m11"]);
            break;
        }
        assert_eq!(entries.len(), 12, "all or trimmed to 5");
        assert!(!missing);
        assert!(tokio::time::Instant::now() < deadline, "never trimmed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(ann);
    server.stop().await;
}

/// A direct message is stored in the two names' conversation, which both
/// read as `Direct(the other)`; a third reads only its own conversations.
#[tokio::test]
async fn direct_conversations_belong_to_their_two_names() {
    let server = TestServer::start(Config {
        tell_rate: 0,
        ..config()
    })
    .await;
    let mut ann = historian(server.addr, "ann").await;
    let mut bo = historian(server.addr, "bo").await;
    let mut cy = historian(server.addr, "cy").await;
    ann.send(Message::Tell {
        name: "BO".into(),
        text: "secret".into(),
    })
    .await;
    let id = match next(&mut ann).await {
        Message::Stored { seq: 1, id, .. } => id,
        other => panic!("expected Stored, got {other:?}"),
    };
    match next(&mut bo).await {
        Message::Direct { entry } => assert_eq!((entry.id, entry.text.as_str()), (id, "secret")),
        other => panic!("expected Direct, got {other:?}"),
    }
    let read = |who: &str| Message::Recent {
        conversation: Conversation::Direct(who.into()),
        count: 10,
    };
    bo.send(read("ann")).await;
    assert_eq!(texts(&page(&mut bo).await.0), ["secret"]);
    ann.send(read("bo")).await;
    assert_eq!(texts(&page(&mut ann).await.0), ["secret"]);
    cy.send(read("bo")).await;
    assert!(
        page(&mut cy).await.0.is_empty(),
        "cy has no conversation with bo"
    );
    drop((ann, bo, cy));
    server.stop().await;
}

/// On disk, history survives a restart: every acknowledged message is
/// there, and new ids come after the old ones.
#[tokio::test]
async fn history_on_disk_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = || Config {
        storage: Storage::Disk(dir.path().to_path_buf()),
        ..config()
    };
    let server = TestServer::start(on_disk()).await;
    let mut ann = historian(server.addr, "ann").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(say(&mut ann, LOBBY, &format!("before {i}"), i + 1).await);
    }
    drop(ann);
    server.stop().await;

    let server = TestServer::start(on_disk()).await;
    let mut ann = historian(server.addr, "ann").await;
    let new = say(&mut ann, LOBBY, "after", 1).await;
    assert!(new > *ids.last().unwrap(), "ids never go back");
    ann.send(Message::Resume {
        conversation: Conversation::Room(LOBBY.into()),
        after: 0,
        limit: 0,
    })
    .await;
    let (entries, missing, more) = page(&mut ann).await;
    assert!(!missing && !more);
    let mut expected = ids.clone();
    expected.push(new);
    assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), expected);
    drop(ann);
    server.stop().await;
}

/// A data file that is not a history store stops the server before it
/// listens, with an error naming the file.
#[tokio::test]
async fn a_corrupt_store_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("history.redb"), b"not a database at all").unwrap();
    let config = Config {
        storage: Storage::Disk(dir.path().to_path_buf()),
        ..config()
    };
    match Server::bind("127.0.0.1:0", config).await {
        Err(chat_server::Error::Store(e)) => {
            let text = e.to_string();
            assert!(text.contains("history.redb"), "{text}");
        }
        other => panic!("expected a store error, got {other:?}"),
    }
}

/// In memory, history is gone after a restart, but its ids are not handed
/// out again: a client's marks from before never hide new messages.
#[tokio::test]
async fn ids_never_come_back_after_an_in_memory_restart() {
    let server = TestServer::start(config()).await;
    let mut ann = historian(server.addr, "ann").await;
    let before = say(&mut ann, LOBBY, "before", 1).await;
    drop(ann);
    server.stop().await;
    let server = TestServer::start(config()).await;
    let mut ann = historian(server.addr, "ann").await;
    let after = say(&mut ann, LOBBY, "after", 1).await;
    assert!(after > before, "{after} after {before}");
    drop(ann);
    server.stop().await;
}
