//! History (PROTOCOL.md section 9) in the library, against a scripted fake
//! server on loopback: numbering and `Stored` matching, live messages once
//! and in order, the seam between pages and live delivery (held messages,
//! duplicates, `more`, `missing`), gaps resumed by themselves, and marks
//! carried to the next connection.
//!
//! The fake server speaks through chat-proto's server-role machine with
//! HISTORY, so it sees the client's `Say`/`Tell`/`Send` numbered as the real
//! server does.

use std::net::SocketAddr;

use bytes::BytesMut;
use chat_client::{
    Client, Conversation, Entry, Error, Event, Events, Marks, Member, Options, Refusal,
};
use chat_proto::{ChatCodec, Message, ServerConfig, VERSION, features};
use common::{Fake, listen, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;

impl Fake {
    /// Accepts a client, grants what it asks of `offered`, names it `name`
    /// and sends the lobby's roster.
    async fn accept(listener: &TcpListener, offered: u64, name: &str) -> Fake {
        let mut config = ServerConfig::default();
        config.features = offered;
        let mut fake = Fake::accept_with(listener, config).await;
        assert_eq!(
            fake.next().await,
            Some(chat_proto::Event::Hello {
                version: VERSION,
                features: features::ROOMS | features::HISTORY | features::AUTH
            })
        );
        fake.conn.accept(fake.me).unwrap();
        fake.flush().await;
        assert!(matches!(fake.recv().await, Message::Nick { .. }));
        // With AUTH granted, a server says when the client is named.
        fake.conn.named();
        fake.send(Message::Named { name: name.into() }).await;
        fake.roster("lobby", name).await;
        fake
    }

    /// The room's roster with the client alone in it.
    async fn roster(&mut self, room: &str, name: &str) {
        self.send(Message::Roster {
            room: room.into(),
            members: vec![Member::new(name, self.me)],
            more: false,
        })
        .await;
    }

    /// The client's next numbered request: its number and itself.
    async fn numbered(&mut self) -> (u64, Message) {
        match self.next().await {
            Some(chat_proto::Event::Numbered { seq, message }) => (seq, message),
            other => panic!("expected a numbered request, got {other:?}"),
        }
    }

    /// Writes a frame the machine would refuse to send.
    async fn raw(&mut self, msg: &Message) {
        let mut buf = BytesMut::new();
        ChatCodec::new().encode(msg, &mut buf).unwrap();
        self.flush().await;
        within(self.stream.write_all(&buf)).await.unwrap();
    }

    /// After misbehaving: the client's `Error`, then its close.
    async fn told_off(&mut self) -> String {
        let codec = ChatCodec::new();
        let mut reason = None;
        loop {
            while let Some(msg) = codec.decode(self.conn.input()).unwrap() {
                if let Message::Error { reason: r } = msg {
                    reason = Some(r);
                }
            }
            let read = within(self.stream.read_buf(self.conn.input())).await;
            if read.expect("read failed") == 0 {
                return reason.expect("no Error before the close");
            }
        }
    }

    /// Ends the script: the marker, then the client's leaving.
    async fn finish(&mut self) {
        self.send(marker()).await;
        self.goodbye().await;
    }

    async fn goodbye(&mut self) {
        loop {
            match self.next().await {
                Some(chat_proto::Event::Exit) => break,
                None => return,
                Some(_) => {}
            }
        }
        self.conn.exit().unwrap();
        self.flush().await;
        assert_eq!(self.next().await, None);
    }
}

fn peer() -> Member {
    Member::new("bob", "127.0.0.1:4000".parse().unwrap())
}

fn entry(id: u64, prev: u64, text: &str) -> Entry {
    Entry {
        id,
        prev,
        at: 1_764_892_800_000 + id,
        from: peer(),
        text: text.into(),
    }
}

fn posted(room: &str, id: u64, prev: u64) -> Message {
    Message::Posted {
        room: room.into(),
        entry: entry(id, prev, &format!("m{id}")),
    }
}

fn page(conversation: Conversation, ids: &[(u64, u64)], missing: bool, more: bool) -> Message {
    Message::Page {
        conversation,
        entries: ids
            .iter()
            .map(|&(id, prev)| entry(id, prev, &format!("m{id}")))
            .collect(),
        missing,
        more,
    }
}

/// What the library sends to read `conversation` on from `after`.
fn resume_from(conversation: Conversation, after: u64) -> Message {
    Message::Resume {
        conversation,
        after,
        limit: 0,
    }
}

fn room(name: &str) -> Conversation {
    Conversation::Room(name.into())
}

fn direct(name: &str) -> Conversation {
    Conversation::Direct(name.into())
}

async fn connect(addr: SocketAddr, options: Options) -> (chat_client::Sender, Events) {
    let client = within(Client::connect_with(addr, options)).await.unwrap();
    assert!(client.session().history);
    client.split()
}

async fn next(events: &mut Events) -> Event {
    within(events.next_event())
        .await
        .unwrap()
        .expect("the events ended")
}

/// The next event that is not a roster.
async fn next_message(events: &mut Events) -> Event {
    loop {
        match next(events).await {
            Event::Roster { .. } => {}
            other => return other,
        }
    }
}

/// The ids of a live `Posted`, or of a `Page`'s entries.
fn ids(event: &Event) -> Vec<u64> {
    match event {
        Event::Posted { entry, .. } | Event::Direct { entry } => vec![entry.id],
        Event::Page { entries, .. } => entries.iter().map(|e| e.id).collect(),
        other => panic!("expected a message or a page, got {other:?}"),
    }
}

/// The ids of the next event that is not a roster.
async fn next_ids(events: &mut Events) -> Vec<u64> {
    ids(&next_message(events).await)
}

/// The client leaves, and the fake server's script must have passed.
async fn done(sender: chat_client::Sender, server: tokio::task::JoinHandle<()>) {
    within(sender.exit()).await.unwrap();
    within(server).await.unwrap();
}

/// A `Refused` the fake sends as a marker: every event before it has come.
fn marker() -> Message {
    Message::Refused {
        code: Refusal::NoSuchRoom,
        subject: "marker".into(),
        detail: "end of the script".into(),
    }
}

fn is_marker(event: &Event) -> bool {
    matches!(event, Event::Refused { subject, .. } if subject == "marker")
}

/// `say`, `tell` and `send` are numbered 1, 2, 3 together; `Stored` and
/// `Unstored`, in any order, come back with their number and conversation.
#[tokio::test]
async fn stored_and_unstored_match_their_requests() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        assert!(matches!(fake.recv().await, Message::Join { .. }));
        fake.roster("Rust", "alice").await;
        let (one, _) = fake.numbered().await;
        let (two, _) = fake.numbered().await;
        let (three, _) = fake.numbered().await;
        assert_eq!((one, two, three), (1, 2, 3));
        // Out of order: the refusal overtakes the earlier ones.
        fake.send(Message::Unstored {
            seq: 2,
            code: Refusal::NoSuchName,
            detail: "nobody is called nobody".into(),
        })
        .await;
        fake.send(Message::Stored {
            seq: 1,
            id: 42,
            at: 7,
        })
        .await;
        fake.send(Message::Stored {
            seq: 3,
            id: 43,
            at: 8,
        })
        .await;
        fake.goodbye().await;
    });
    let (sender, mut events) = connect(addr, Options::default()).await;
    within(sender.join("rust")).await.unwrap();
    assert_eq!(within(sender.say("rust", "hi")).await.unwrap(), 1);
    assert_eq!(within(sender.tell("nobody", "psst")).await.unwrap(), 2);
    assert_eq!(within(sender.send("lobby hi")).await.unwrap(), 3);
    assert_eq!(
        next_message(&mut events).await,
        Event::Unstored {
            seq: 2,
            conversation: direct("nobody"),
            code: Refusal::NoSuchName,
            detail: "nobody is called nobody".into()
        }
    );
    // The room as the server spells it, though we said "rust".
    assert_eq!(
        next_message(&mut events).await,
        Event::Stored {
            seq: 1,
            conversation: room("Rust"),
            id: 42,
            at: 7
        }
    );
    assert_eq!(
        next_message(&mut events).await,
        Event::Stored {
            seq: 3,
            conversation: room("lobby"),
            id: 43,
            at: 8
        }
    );
    assert_eq!(events.marks().get(&room("rust")), Some(42));
    assert_eq!(events.marks().get(&room("lobby")), Some(43));
    done(sender, server).await;
}

/// Live messages come once: a repeated id is dropped.
#[tokio::test]
async fn live_duplicates_are_dropped() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        fake.send(posted("lobby", 5, 0)).await;
        fake.send(posted("lobby", 5, 0)).await;
        fake.send(posted("lobby", 7, 5)).await;
        fake.send(posted("lobby", 7, 5)).await;
        fake.finish().await;
    });
    let (sender, mut events) = connect(addr, Options::default()).await;
    assert_eq!(next_ids(&mut events).await, [5]);
    assert_eq!(next_ids(&mut events).await, [7]);
    assert!(is_marker(&next_message(&mut events).await));
    done(sender, server).await;
}

/// A live message whose `prev` is not the last id reveals a gap: the client
/// resumes from its last id by itself, holds live messages meanwhile, and
/// delivers the page, then the held ones not in it.
#[tokio::test]
async fn a_gap_is_resumed_and_joined_to_live_delivery() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        fake.send(posted("lobby", 5, 0)).await;
        // 7 was missed.
        fake.send(posted("lobby", 9, 7)).await;
        assert_eq!(fake.recv().await, resume_from(room("lobby"), 5));
        // Stored while the page is read: it comes both ways.
        fake.send(posted("lobby", 10, 9)).await;
        fake.send(page(
            room("lobby"),
            &[(7, 5), (9, 7), (10, 9)],
            false,
            false,
        ))
        .await;
        fake.send(posted("lobby", 11, 10)).await;
        fake.finish().await;
    });
    let (sender, mut events) = connect(addr, Options::default()).await;
    assert_eq!(next_ids(&mut events).await, [5]);
    let got = next_message(&mut events).await;
    assert!(
        matches!(&got, Event::Page { conversation, missing: false, more: false, .. } if *conversation == room("lobby")),
        "{got:?}"
    );
    assert_eq!(ids(&got), [7, 9, 10]);
    assert_eq!(next_ids(&mut events).await, [11]);
    assert!(is_marker(&next_message(&mut events).await));
    assert_eq!(events.marks().get(&room("lobby")), Some(11));
    done(sender, server).await;
}

/// Marks carried to a new connection: direct conversations are resumed at
/// once, rooms once their roster lists us; the library follows `more`,
/// holds live messages until the last page, reports `missing`, and each
/// message comes once.
#[tokio::test]
async fn marks_resume_rooms_and_direct_conversations_on_reconnect() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        // First connection: two messages, then the connection drops.
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        assert!(matches!(fake.recv().await, Message::Join { .. }));
        fake.roster("rust", "alice").await;
        fake.send(posted("rust", 40, 0)).await;
        fake.send(Message::Direct {
            entry: entry(3, 0, "hi alice"),
        })
        .await;
        drop(fake);

        // Second connection.
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        assert_eq!(fake.recv().await, resume_from(direct("bob"), 3));
        // Retention dropped some of them.
        fake.send(page(direct("bob"), &[(8, 6)], true, false)).await;
        assert!(matches!(fake.recv().await, Message::Join { .. }));
        fake.roster("rust", "alice").await;
        assert_eq!(fake.recv().await, resume_from(room("rust"), 40));
        fake.send(posted("rust", 45, 44)).await;
        fake.send(page(room("rust"), &[(42, 40), (44, 42)], false, true))
            .await;
        assert_eq!(fake.recv().await, resume_from(room("rust"), 44));
        fake.send(posted("rust", 47, 45)).await;
        fake.send(page(room("rust"), &[(45, 44)], false, false))
            .await;
        fake.send(posted("rust", 48, 47)).await;
        fake.finish().await;
    });

    let (sender, mut events) = connect(addr, Options::default()).await;
    within(sender.join("rust")).await.unwrap();
    assert_eq!(next_ids(&mut events).await, [40]);
    assert_eq!(next_ids(&mut events).await, [3]);
    assert!(matches!(
        within(events.next_event()).await,
        Err(Error::ServerClosed)
    ));
    let marks = events.marks().clone();
    assert_eq!(marks.get(&room("rust")), Some(40));
    assert_eq!(marks.get(&direct("bob")), Some(3));

    let mut options = Options::default();
    options.resume = marks;
    let (sender, mut events) = connect(addr, options).await;
    let got = next_message(&mut events).await;
    assert!(
        matches!(&got, Event::Page { conversation, missing: true, more: false, .. } if *conversation == direct("bob")),
        "{got:?}"
    );
    assert_eq!(ids(&got), [8]);
    within(sender.join("rust")).await.unwrap();
    let got = next_message(&mut events).await;
    assert!(matches!(&got, Event::Page { more: true, .. }), "{got:?}");
    assert_eq!(ids(&got), [42, 44]);
    let got = next_message(&mut events).await;
    assert!(matches!(&got, Event::Page { more: false, .. }), "{got:?}");
    assert_eq!(ids(&got), [45]);
    // Held: 45 (in the page, dropped), then 47; then live 48.
    assert_eq!(next_ids(&mut events).await, [47]);
    assert_eq!(next_ids(&mut events).await, [48]);
    assert!(is_marker(&next_message(&mut events).await));
    assert_eq!(events.marks().get(&room("rust")), Some(48));
    assert_eq!(events.marks().get(&direct("bob")), Some(8));
    done(sender, server).await;
}

/// Our own message stored while a page is awaited: its `Stored` comes at
/// once, and the page does not bring it a second time.
#[tokio::test]
async fn own_messages_come_once_across_a_page() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        assert!(matches!(fake.recv().await, Message::Recent { .. }));
        let (seq, _) = fake.numbered().await;
        fake.send(Message::Stored { seq, id: 12, at: 1 }).await;
        let mut mine = entry(12, 11, "mine");
        mine.from = Member::new("alice", fake.me);
        fake.send(Message::Page {
            conversation: room("lobby"),
            entries: vec![entry(11, 0, "m11"), mine],
            missing: false,
            more: false,
        })
        .await;
        fake.send(posted("lobby", 13, 12)).await;
        fake.finish().await;
    });
    let mut options = Options::default();
    options.recent = 20;
    let (sender, mut events) = connect(addr, options).await;
    // The lobby's roster (the library asked `Recent` on it), then our line.
    assert!(matches!(next(&mut events).await, Event::Roster { .. }));
    assert_eq!(within(sender.send("mine")).await.unwrap(), 1);
    assert!(matches!(
        next_message(&mut events).await,
        Event::Stored { seq: 1, id: 12, .. }
    ));
    assert_eq!(next_ids(&mut events).await, [11]);
    assert_eq!(next_ids(&mut events).await, [13]);
    assert!(is_marker(&next_message(&mut events).await));
    done(sender, server).await;
}

/// `recent` with a count: the library follows `more` for what is left of
/// the count, and shows entries already delivered too.
#[tokio::test]
async fn recent_follows_more_up_to_its_count() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        fake.send(posted("lobby", 3, 2)).await;
        assert_eq!(
            fake.recv().await,
            Message::Recent {
                conversation: room("lobby"),
                count: 3
            }
        );
        fake.send(page(room("lobby"), &[(2, 1), (3, 2)], false, true))
            .await;
        assert_eq!(
            fake.recv().await,
            Message::Resume {
                conversation: room("lobby"),
                after: 3,
                limit: 1
            }
        );
        fake.send(page(room("lobby"), &[(4, 3)], false, true)).await;
        // The count is reached: no further request, and 4 is not repeated.
        fake.send(posted("lobby", 4, 3)).await;
        fake.send(posted("lobby", 5, 4)).await;
        fake.finish().await;
    });
    let (sender, mut events) = connect(addr, Options::default()).await;
    assert_eq!(next_ids(&mut events).await, [3]);
    within(sender.recent(room("lobby"), 3)).await.unwrap();
    let got = next_message(&mut events).await;
    assert!(matches!(&got, Event::Page { more: true, .. }), "{got:?}");
    assert_eq!(ids(&got), [2, 3]);
    let got = next_message(&mut events).await;
    assert!(matches!(&got, Event::Page { more: false, .. }), "{got:?}");
    assert_eq!(ids(&got), [4]);
    assert_eq!(next_ids(&mut events).await, [5]);
    assert!(is_marker(&next_message(&mut events).await));
    done(sender, server).await;
}

/// A refused resume ends the wait: the held messages come after the
/// refusal. A `Part`'s refusal is not mistaken for it.
#[tokio::test]
async fn a_refused_resume_releases_what_was_held() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        fake.send(posted("lobby", 1, 0)).await;
        assert!(matches!(fake.recv().await, Message::Part { .. }));
        assert!(matches!(fake.recv().await, Message::Resume { .. }));
        fake.send(posted("lobby", 2, 1)).await;
        let refused = Message::Refused {
            code: Refusal::NotInRoom,
            subject: "lobby".into(),
            detail: "not in it".into(),
        };
        // The Part's refusal: the resume is still outstanding.
        fake.send(refused.clone()).await;
        fake.send(posted("lobby", 3, 2)).await;
        // The resume's.
        fake.send(refused).await;
        fake.finish().await;
    });
    let (sender, mut events) = connect(addr, Options::default()).await;
    assert_eq!(next_ids(&mut events).await, [1]);
    within(sender.part("lobby")).await.unwrap();
    within(sender.resume(room("lobby"), 1, 0)).await.unwrap();
    assert!(matches!(
        next_message(&mut events).await,
        Event::Refused {
            code: Refusal::NotInRoom,
            ..
        }
    ));
    assert!(matches!(
        next_message(&mut events).await,
        Event::Refused {
            code: Refusal::NotInRoom,
            ..
        }
    ));
    assert_eq!(next_ids(&mut events).await, [2]);
    assert_eq!(next_ids(&mut events).await, [3]);
    assert!(is_marker(&next_message(&mut events).await));
    done(sender, server).await;
}

/// A page nobody asked for is a protocol violation: the client says why
/// and closes with a typed error.
#[tokio::test]
async fn an_unasked_page_ends_the_session() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        fake.raw(&page(room("nowhere"), &[(1, 0)], false, false))
            .await;
        assert_eq!(
            fake.told_off().await,
            "protocol violation: Page of Room(\"nowhere\"), which the client did not ask for"
        );
    });
    let (_sender, mut events) = connect(addr, Options::default()).await;
    let err = loop {
        match within(events.next_event()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("ended without an error"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Unasked { got: "Page", .. }), "{err:?}");
    within(server).await.unwrap();
}

/// A server without history: numbers are 0, history requests are refused
/// locally, and `Said` comes as before.
#[tokio::test]
async fn without_history_nothing_changes() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ROOMS, "alice").await;
        assert!(matches!(fake.recv().await, Message::Send { .. }));
        fake.goodbye().await;
    });
    let client = within(Client::connect_with(addr, Options::default()))
        .await
        .unwrap();
    assert!(!client.session().history);
    assert_eq!(within(client.send("hi")).await.unwrap(), 0);
    let err = within(client.recent(room("lobby"), 5)).await.unwrap_err();
    assert!(
        matches!(err, Error::NoHistory { request: "Recent" }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Recent needs history, which this session does not have"
    );
    within(client.exit()).await.unwrap();
    within(server).await.unwrap();
}

/// `Marks` compare names as the server does.
#[test]
fn marks_compare_names_as_the_server_does() {
    let mut marks = Marks::new();
    marks.note(&room("Straße"), 9);
    assert_eq!(marks.get(&room("STRASSE")), Some(9));
    assert_eq!(marks.get(&direct("straße")), None);
    marks.set(room("strasse"), 0);
    assert_eq!(marks.get(&room("Straße")), Some(0));
    marks.remove(&room("STRASSE"));
    assert!(marks.is_empty());
}

/// A room read while it was empty (a page, no entries) is marked 0 and
/// resumed from the start next time; a room never read gets `Recent`.
#[tokio::test]
async fn an_empty_room_read_once_is_resumed_from_the_start() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        assert_eq!(
            fake.recv().await,
            Message::Recent {
                conversation: room("lobby"),
                count: 5
            }
        );
        fake.send(page(room("lobby"), &[], false, false)).await;
        drop(fake);
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        assert_eq!(fake.recv().await, resume_from(room("lobby"), 0));
        fake.send(page(room("lobby"), &[(1, 0)], false, false))
            .await;
        fake.goodbye().await;
    });
    let mut options = Options::default();
    options.recent = 5;
    let (_sender, mut events) = connect(addr, options.clone()).await;
    let got = next_message(&mut events).await;
    assert!(
        matches!(&got, Event::Page { entries, .. } if entries.is_empty()),
        "{got:?}"
    );
    assert!(matches!(
        within(events.next_event()).await,
        Err(Error::ServerClosed)
    ));
    assert_eq!(events.marks().get(&room("lobby")), Some(0));
    options.resume = events.marks().clone();
    let (sender, mut events) = connect(addr, options).await;
    assert_eq!(next_ids(&mut events).await, [1]);
    done(sender, server).await;
}

/// A small deterministic generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A server that skips live messages at random (as if the client had not
/// been there), repeats old ones, and answers resumes in pages of random
/// size at random moments while live messages keep coming: the client
/// still ends with every stored message exactly once, in order.
#[tokio::test]
async fn random_gaps_pages_and_duplicates_give_every_message_once() {
    for seed in 1..=6u64 {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
            let mut store: Vec<u64> = Vec::new();
            // What the client has applied, as far as the fake can tell.
            let mut client_last = 0;
            // The `after` of the resume being answered.
            let mut resume: Option<u64> = None;
            // Resumes the client made, gaps and follow-ups.
            let mut resumes = 0;
            let step = |store: &mut Vec<u64>, rng: &mut Rng| {
                let prev = store.last().copied().unwrap_or(0);
                let id = prev + 1 + rng.below(3);
                store.push(id);
                (id, prev)
            };
            for round in 0..200 {
                let last_round = round == 199;
                if let Some(after) = resume
                    && (rng.below(10) < 3 || last_round)
                {
                    // One page: some of what follows `after`.
                    let rest: Vec<u64> = store.iter().copied().filter(|&id| id > after).collect();
                    let take = (1 + rng.below(4) as usize).min(rest.len());
                    let more = rest.len() > take;
                    let entries: Vec<(u64, u64)> = rest[..take]
                        .iter()
                        .map(|&id| {
                            let i = store.iter().position(|&s| s == id).unwrap();
                            (id, if i == 0 { 0 } else { store[i - 1] })
                        })
                        .collect();
                    fake.send(page(room("lobby"), &entries, false, more)).await;
                    if more {
                        let next = rest[take - 1];
                        assert_eq!(
                            fake.recv().await,
                            resume_from(room("lobby"), next),
                            "seed {seed}"
                        );
                        resume = Some(next);
                        resumes += 1;
                    } else {
                        resume = None;
                        client_last = store.last().copied().unwrap_or(0);
                    }
                    if !last_round || resume.is_some() {
                        continue;
                    }
                }
                if last_round
                    && resume.is_none()
                    && client_last == store.last().copied().unwrap_or(0)
                {
                    break;
                }
                // An old message again, now and then.
                if rng.below(10) == 0 && !store.is_empty() {
                    let i = rng.below(store.len() as u64) as usize;
                    if store[i] <= client_last {
                        let prev = if i == 0 { 0 } else { store[i - 1] };
                        fake.send(posted("lobby", store[i], prev)).await;
                    }
                }
                let (id, prev) = step(&mut store, &mut rng);
                // Most are delivered live; the first always (before it the
                // client has no id, so cannot tell a gap), and the last, so
                // the client learns of a skipped tail.
                if rng.below(4) == 0 && !last_round && prev != 0 {
                    continue;
                }
                fake.send(posted("lobby", id, prev)).await;
                if resume.is_some() {
                    continue; // held by the client
                }
                if prev == client_last {
                    client_last = id;
                } else {
                    assert_eq!(
                        fake.recv().await,
                        resume_from(room("lobby"), client_last),
                        "seed {seed}"
                    );
                    resume = Some(client_last);
                    resumes += 1;
                }
            }
            // Finish any resume still being answered, in one page.
            if let Some(after) = resume {
                let entries: Vec<(u64, u64)> = store
                    .iter()
                    .enumerate()
                    .filter(|&(_, &id)| id > after)
                    .map(|(i, &id)| (id, if i == 0 { 0 } else { store[i - 1] }))
                    .collect();
                fake.send(page(room("lobby"), &entries, false, false)).await;
            }
            fake.send(marker()).await;
            fake.goodbye().await;
            (store, resumes)
        });
        let (sender, mut events) = connect(addr, Options::default()).await;
        let mut got = Vec::new();
        loop {
            match next_message(&mut events).await {
                Event::Posted { entry, .. } => got.push(entry.id),
                Event::Page { entries, .. } => got.extend(entries.iter().map(|e| e.id)),
                event if is_marker(&event) => break,
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        within(sender.exit()).await.unwrap();
        let (store, resumes) = within(server).await.unwrap();
        assert_eq!(got, store, "seed {seed}");
        assert!(resumes >= 10, "seed {seed}: only {resumes} resumes");
    }
}

/// A refusal of a resume the library made itself (the room was left before
/// the request arrived) is not the caller's business: it is not passed on,
/// and what was held comes.
#[tokio::test]
async fn a_refusal_of_the_librarys_own_resume_is_not_passed_on() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut fake = Fake::accept(&listener, features::ALL, "alice").await;
        assert_eq!(fake.recv().await, resume_from(room("lobby"), 5));
        fake.send(posted("lobby", 6, 5)).await;
        fake.send(Message::Refused {
            code: Refusal::NotInRoom,
            subject: "lobby".into(),
            detail: "not in it".into(),
        })
        .await;
        fake.finish().await;
    });
    let mut options = Options::default();
    options.resume.note(&room("lobby"), 5);
    let (sender, mut events) = connect(addr, options).await;
    assert_eq!(next_ids(&mut events).await, [6]);
    assert!(is_marker(&next_message(&mut events).await));
    done(sender, server).await;
}
