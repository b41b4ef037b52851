//! History against the real server, run in this process with its default
//! configuration (history kept in memory): acknowledgements, the latest
//! messages on joining, and clients that drop and reconnect mid-stream
//! ending with every message of their room exactly once, in order.

use std::future::Future;
use std::net::SocketAddr;

use chat_client::{Client, Conversation, Event, Events, Options, Sender};
use chat_server::Config;
use common::{start, within_secs};

mod common;

/// Several clients reconnecting: longer than the usual bound.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    within_secs(20, fut).await
}

fn named(name: &str) -> Options {
    let mut options = Options::default();
    options.name = Some(name.into());
    options
}

async fn connect(addr: SocketAddr, options: Options) -> (Sender, Events) {
    let client = within(Client::connect_with(addr, options)).await.unwrap();
    assert!(client.session().history, "the server offers no history");
    client.split()
}

fn rust() -> Conversation {
    Conversation::Room("rust".into())
}

/// Reads events until the roster of `room` that lists us.
async fn joined(events: &mut Events, room: &str) {
    loop {
        match within(events.next_event()).await.unwrap() {
            Some(Event::Roster { room: r, .. }) if r == room => return,
            Some(_) => {}
            None => panic!("the events ended before joining {room}"),
        }
    }
}

/// Our messages come back as `Stored` with growing ids; the other member
/// gets them as `Posted`, chained by `prev`; a newcomer asking for the
/// latest gets them as a page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_posted_and_recent() {
    let server = start(Config::default()).await;
    let (alice, mut alice_events) = connect(server.addr, named("alice")).await;
    let (bob, mut bob_events) = connect(server.addr, named("bob")).await;
    within(alice.join("rust")).await.unwrap();
    joined(&mut alice_events, "rust").await;
    within(bob.join("rust")).await.unwrap();
    joined(&mut bob_events, "rust").await;

    let mut seqs = Vec::new();
    for i in 0..3 {
        seqs.push(
            within(alice.say("rust", format!("消息 {i}")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(seqs, [1, 2, 3]);
    let mut ids = Vec::new();
    while ids.len() < 3 {
        if let Some(Event::Stored {
            seq,
            conversation,
            id,
            ..
        }) = within(alice_events.next_event()).await.unwrap()
        {
            assert_eq!(seq, seqs[ids.len()]);
            assert_eq!(conversation, rust());
            ids.push(id);
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let mut prev = None;
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Some(Event::Posted { room, entry }) = within(bob_events.next_event()).await.unwrap()
        {
            assert_eq!(room, "rust");
            assert_eq!(entry.from.name, "alice");
            if let Some(p) = prev {
                assert_eq!(entry.prev, p);
            }
            prev = Some(entry.id);
            got.push((entry.id, entry.text));
        }
    }
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["消息 0", "消息 1", "消息 2"]);
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);

    let mut options = named("carol");
    options.recent = 2;
    let (carol, mut carol_events) = connect(server.addr, options).await;
    within(carol.join("rust")).await.unwrap();
    let page = loop {
        match within(carol_events.next_event()).await.unwrap() {
            Some(Event::Page {
                conversation,
                entries,
                missing,
                more,
            }) if conversation == rust() => {
                assert!(!missing && !more);
                break entries;
            }
            Some(_) => {}
            None => panic!("no page"),
        }
    };
    let texts: Vec<&str> = page.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["消息 1", "消息 2"]);

    for sender in [alice, bob, carol] {
        within(sender.exit()).await.unwrap();
    }
    server.stop().await;
}

/// A reader that drops and reconnects twice while a writer streams into
/// the room ends with every message exactly once, in order: what it missed
/// comes in pages, resumed from its marks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_reconnects_gives_every_message_once() {
    const N: usize = 300;
    let server = start(Config {
        rate: 0,
        ..Config::default()
    })
    .await;
    let (writer, mut writer_events) = connect(server.addr, named("writer")).await;
    within(writer.join("rust")).await.unwrap();
    joined(&mut writer_events, "rust").await;
    let (mut reader, mut reader_events) = connect(server.addr, named("reader")).await;
    within(reader.join("rust")).await.unwrap();
    // A member before the stream starts (its roster says so), or the first
    // messages go by before it is in the room, with no mark to resume from.
    joined(&mut reader_events, "rust").await;

    // The writer streams; its last message's id is where the reader must end.
    // It waits for each reconnect at 100 and 200 messages, so that the
    // stream goes on after both.
    let (reconnected, mut reconnects_seen) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut writing = tokio::spawn(async move {
        for i in 0..N {
            if i == 100 || i == 200 {
                within(reconnects_seen.recv()).await.unwrap();
            }
            within(writer.say("rust", format!("m{i}"))).await.unwrap();
        }
        let mut last = 0;
        let mut stored = 0;
        while stored < N {
            match within(writer_events.next_event()).await.unwrap() {
                Some(Event::Stored { id, .. }) => {
                    stored += 1;
                    last = last.max(id);
                }
                Some(Event::Unstored { code, detail, .. }) => panic!("unstored: {code} {detail}"),
                Some(_) => {}
                None => panic!("the writer's events ended"),
            }
        }
        within(writer.exit()).await.unwrap();
        last
    });

    let mut texts: Vec<String> = Vec::new();
    let mut ids: Vec<u64> = Vec::new();
    // Reconnect after 50 and after 150 messages read.
    let mut drops = [50, 150].into_iter().peekable();
    let mut last_id = None;
    let mut reconnects = 0;
    // Messages that came in pages: what was missed while away.
    let mut paged = 0;
    loop {
        if let Some(last) = last_id
            && reader_events.marks().get(&rust()) >= Some(last)
        {
            break;
        }
        let event = tokio::select! {
            event = within(reader_events.next_event()) => event.unwrap(),
            last = within(&mut writing), if last_id.is_none() => {
                last_id = Some(last.unwrap());
                continue;
            }
        };
        match event {
            Some(Event::Posted { room, entry }) if room == "rust" => {
                ids.push(entry.id);
                texts.push(entry.text);
            }
            Some(Event::Page {
                conversation,
                entries,
                missing,
                ..
            }) if conversation == rust() => {
                assert!(!missing, "nothing was dropped by retention");
                paged += entries.len();
                for entry in entries {
                    ids.push(entry.id);
                    texts.push(entry.text);
                }
            }
            Some(_) => {}
            None => panic!("the reader's events ended"),
        }
        if drops.next_if(|&at| texts.len() >= at).is_some() {
            // Leave without reading what is queued: the marks say what was
            // read, and the next connection resumes from there.
            let mut options = named("reader");
            options.resume = reader_events.marks().clone();
            drop(reader);
            drop(reader_events);
            (reader, reader_events) = connect(server.addr, options).await;
            within(reader.join("rust")).await.unwrap();
            reconnects += 1;
            reconnected.send(()).unwrap();
        }
    }
    assert_eq!(reconnects, 2);
    assert!(paged > 0, "nothing was resumed");
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing");
    within(reader.exit()).await.unwrap();
    server.stop().await;
}
