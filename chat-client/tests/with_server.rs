//! The library against the real server, run in this process.
//!
//! The first tests are version 1 clients ([`Options::rooms`] off), as
//! before names and rooms; the rest use names and rooms, and mix both.

use std::net::SocketAddr;
use std::time::Duration;

use chat_client::{Client, Error, Event, Events, Member, Options, Refusal, RoomInfo, Sender};
use chat_server::{Config, Server};
use common::{start, within};
use tokio::sync::oneshot;
use tokio::time::timeout;

mod common;

/// Options of a version 1 client: no names, no rooms.
fn v1() -> Options {
    let mut options = Options::default();
    options.rooms = false;
    options
}

async fn joined(events: &mut Events) -> SocketAddr {
    match within(events.next_event()).await.unwrap() {
        Some(Event::Joined(who)) => who,
        other => panic!("expected a join, got {other:?}"),
    }
}

/// Two clients each send a stream of messages while reading the other's:
/// nothing is lost, nothing reordered, neither side waits for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_send_and_receive_at_once() {
    const N: usize = 300;
    // No flood control: this is about concurrency.
    let server = start(Config {
        rate: 0,
        ..Config::default()
    })
    .await;
    let (a_tx, mut a_rx) = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap()
        .split();
    let (b_tx, mut b_rx) = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap()
        .split();
    let b_addr = joined(&mut a_rx).await;
    let a_addr = a_tx.session().me;
    assert_eq!(b_addr, b_tx.session().me);
    // A newcomer is told who was already there.
    assert_eq!(joined(&mut b_rx).await, a_addr);

    let talk = |tx: chat_client::Sender, name: &'static str| {
        tokio::spawn(async move {
            for i in 0..N {
                within(tx.send(format!("{name} {i} 你好"))).await.unwrap();
            }
            tx
        })
    };
    let listen = |mut rx: Events, from: SocketAddr, name: &'static str| {
        tokio::spawn(async move {
            for i in 0..N {
                let event = within(rx.next_event()).await.unwrap();
                assert_eq!(
                    event,
                    Some(Event::Message {
                        from,
                        text: format!("{name} {i} 你好")
                    })
                );
            }
            rx
        })
    };
    let a_talks = talk(a_tx, "a");
    let b_talks = talk(b_tx, "b");
    let a_hears = listen(a_rx, b_addr, "b");
    let b_hears = listen(b_rx, a_addr, "a");
    let a_tx = within(a_talks).await.unwrap();
    let b_tx = within(b_talks).await.unwrap();
    let mut a_rx = within(a_hears).await.unwrap();
    let mut b_rx = within(b_hears).await.unwrap();

    within(a_tx.exit()).await.unwrap();
    assert_eq!(within(a_rx.next_event()).await.unwrap(), None);
    assert_eq!(
        within(b_rx.next_event()).await.unwrap(),
        Some(Event::Left(a_addr))
    );
    within(b_tx.exit()).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_full_server_rejects_with_its_reason() {
    let server = start(Config {
        max_clients: 1,
        ..Config::default()
    })
    .await;
    let first = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap();
    let err = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { reason } if reason == "server full"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the server rejected the connection: server full"
    );
    within(first.exit()).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn shutdown_reaches_a_connected_client() {
    let server = start(Config::default()).await;
    let (tx, mut rx) = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap()
        .split();
    let _ = server.stop.send(());
    assert_eq!(
        within(rx.next_event()).await.unwrap(),
        Some(Event::ServerExit)
    );
    assert_eq!(within(rx.next_event()).await.unwrap(), None);
    // The server's run returns once this session has ended.
    within(server.task).await.unwrap().unwrap();
    drop(tx);
}

#[tokio::test]
async fn the_servers_limit_is_enforced_before_sending() {
    let server = start(Config {
        max_frame_len: 1000,
        ..Config::default()
    })
    .await;
    let (a_tx, mut a_rx) = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap()
        .split();
    let (b_tx, _b_rx) = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap()
        .split();
    joined(&mut a_rx).await;
    // Frames of at most 1000 bytes: clients may send 980, a tag byte and a
    // 3-byte length leave 976 bytes of text.
    let max = b_tx.session().max_text_len;
    assert_eq!(max, 976);
    let err = within(b_tx.send("x".repeat(max + 1))).await.unwrap_err();
    assert!(matches!(err, Error::TooLong { .. }), "{err:?}");
    // The longest allowed text goes through, and arrives first.
    within(b_tx.send("y".repeat(max))).await.unwrap();
    match within(a_rx.next_event()).await.unwrap() {
        Some(Event::Message { text, .. }) => assert_eq!(text, "y".repeat(max)),
        other => panic!("{other:?}"),
    }
    within(a_tx.exit()).await.unwrap();
    within(b_tx.exit()).await.unwrap();
    server.stop().await;
}

/// Issue 8, frame limit: a client on defaults is never disconnected for a
/// text its API accepted. The longest text goes through and arrives intact,
/// relayed with the longest (IPv6) sender address, so the receiver must take
/// a relay of the server's full 65,536-byte limit, 20 bytes over the
/// `max_frame` it was told; one byte more is refused locally and the
/// connection stays open.
#[tokio::test]
async fn the_longest_text_goes_through_on_defaults() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let server = Server::bind(bind, Config::default()).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));

        let (a_tx, mut a_rx) = within(Client::connect_with(addr, v1()))
            .await
            .unwrap()
            .split();
        let (b_tx, mut b_rx) = within(Client::connect_with(addr, v1()))
            .await
            .unwrap()
            .split();
        let b_addr = joined(&mut a_rx).await;
        assert_eq!(joined(&mut b_rx).await, a_tx.session().me);
        assert_eq!(b_addr.is_ipv6(), addr.is_ipv6());
        let max = b_tx.session().max_text_len;
        assert_eq!(max, 65_512, "{bind}");

        let err = within(b_tx.send("x".repeat(max + 1))).await.unwrap_err();
        assert!(
            matches!(err, Error::TooLong { len, max: m } if len == max + 1 && m == max),
            "{err:?}"
        );
        // Multi-byte text, cut to the limit on a character boundary.
        let longest: String = "是的你是对的，我是中国人 ok"
            .chars()
            .cycle()
            .scan(0, |len, c| {
                *len += c.len_utf8();
                (*len <= max).then_some(c)
            })
            .collect();
        let longest = format!("{longest}{}", "!".repeat(max - longest.len()));
        assert_eq!(longest.len(), max);
        within(b_tx.send(longest.clone())).await.unwrap();
        assert_eq!(
            within(a_rx.next_event()).await.unwrap(),
            Some(Event::Message {
                from: b_addr,
                text: longest.clone(),
            })
        );
        // Both ways: the other client's longest text reaches this one too.
        within(a_tx.send(longest.clone())).await.unwrap();
        assert_eq!(
            within(b_rx.next_event()).await.unwrap(),
            Some(Event::Message {
                from: a_tx.session().me,
                text: longest,
            })
        );
        // The refused text closed nothing: the session goes on.
        within(b_tx.send("after")).await.unwrap();
        assert_eq!(
            within(a_rx.next_event()).await.unwrap(),
            Some(Event::Message {
                from: b_addr,
                text: "after".into(),
            })
        );
        within(b_tx.exit()).await.unwrap();
        assert_eq!(within(b_rx.next_event()).await.unwrap(), None);
        assert_eq!(
            within(a_rx.next_event()).await.unwrap(),
            Some(Event::Left(b_addr))
        );
        within(a_tx.exit()).await.unwrap();
        let _ = stop.send(());
        within(task).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn ipv6_loopback_works_end_to_end() {
    let server = Server::bind("[::1]:0", Config::default()).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let (a_tx, mut a_rx) = within(Client::connect_with(format!("[::1]:{}", addr.port()), v1()))
        .await
        .unwrap()
        .split();
    let b = within(Client::connect_with(addr, v1())).await.unwrap();
    let b_addr = joined(&mut a_rx).await;
    assert!(b_addr.is_ipv6());
    b.send("over IPv6").await.unwrap();
    assert_eq!(
        within(a_rx.next_event()).await.unwrap(),
        Some(Event::Message {
            from: b_addr,
            text: "over IPv6".into()
        })
    );
    within(b.exit()).await.unwrap();
    within(a_tx.exit()).await.unwrap();
    let _ = stop.send(());
    within(task).await.unwrap().unwrap();
}

/// The server pings quiet clients and closes those that do not answer; the
/// library answers by itself, even when the caller neither sends nor reads.
/// Three idle timeouts pass; a client that did not answer would have been
/// closed after one (`! server error: idle timeout`, then the end).
#[tokio::test]
async fn quiet_clients_survive_the_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(1);
    let server = start(Config {
        idle_timeout: IDLE,
        ..Config::default()
    })
    .await;
    let (a_tx, mut a_rx) = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap()
        .split();
    let (b_tx, mut b_rx) = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap()
        .split();
    let b_addr = joined(&mut a_rx).await;
    assert_eq!(joined(&mut b_rx).await, a_tx.session().me);
    // Nobody sends or reads: the only traffic is the server's pings.
    let (quiet_a, quiet_b) = tokio::join!(
        timeout(3 * IDLE, a_rx.next_event()),
        timeout(3 * IDLE, b_rx.next_event()),
    );
    assert!(quiet_a.is_err(), "expected no event, got {quiet_a:?}");
    assert!(quiet_b.is_err(), "expected no event, got {quiet_b:?}");
    within(b_tx.send("still here")).await.unwrap();
    assert_eq!(
        within(a_rx.next_event()).await.unwrap(),
        Some(Event::Message {
            from: b_addr,
            text: "still here".into()
        })
    );
    within(a_tx.send("me too")).await.unwrap();
    assert_eq!(
        within(b_rx.next_event()).await.unwrap(),
        Some(Event::Message {
            from: a_tx.session().me,
            text: "me too".into()
        })
    );
    within(a_tx.exit()).await.unwrap();
    assert_eq!(
        within(b_rx.next_event()).await.unwrap(),
        Some(Event::Left(a_tx.session().me))
    );
    within(b_tx.exit()).await.unwrap();
    server.stop().await;
}

// Names and rooms, as a client without history sees them (section 8:
// `Said`, `Told`, `Refused`); history has its own tests, history_server.rs.

/// Options of a client with names and rooms but no history.
fn rooms_only() -> Options {
    let mut options = Options::default();
    options.history = false;
    options
}

fn named(name: &str) -> Options {
    let mut options = rooms_only();
    options.name = Some(name.into());
    options
}

/// Connects with names and rooms, asking for `name` (or none).
async fn enter(addr: SocketAddr, name: Option<&str>) -> (Sender, Events) {
    let options = name.map_or_else(rooms_only, named);
    let (sender, events) = within(Client::connect_with(addr, options))
        .await
        .unwrap()
        .split();
    assert!(sender.session().rooms);
    (sender, events)
}

/// The next event, which must be there.
async fn next(events: &mut Events) -> Event {
    within(events.next_event())
        .await
        .unwrap()
        .expect("the events ended")
}

/// The client as others see it now.
fn member(sender: &Sender) -> Member {
    Member::new(sender.name().unwrap(), sender.session().me)
}

fn roster(room: &str, members: &[&Sender]) -> Event {
    Event::Roster {
        room: room.into(),
        members: members.iter().map(|s| member(s)).collect(),
    }
}

fn entered(room: &str, who: &Sender) -> Event {
    Event::Entered {
        room: room.into(),
        member: member(who),
    }
}

/// Leaves, and checks that the events end.
async fn leave(sender: Sender, mut events: Events) {
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = events.next_event().await {} });
    within(sender.exit()).await.unwrap();
    within(reader).await.unwrap();
}

/// Two clients with names: the lobby's roster first, then joins, rooms,
/// `Said` without an echo, parts, and departures on exit.
#[tokio::test]
async fn names_rooms_and_messages_between_two_clients() {
    let server = start(Config::default()).await;
    let (a, mut a_rx) = enter(server.addr, Some("李雷")).await;
    assert_eq!(a.session().name.as_deref(), Some("李雷"));
    assert_eq!(next(&mut a_rx).await, roster("lobby", &[&a]));
    assert_eq!(a.rooms(), ["lobby"]);

    // No name asked for: the server picks one.
    let (b, mut b_rx) = enter(server.addr, None).await;
    let b_name = b.session().name.clone().unwrap();
    assert!(b_name.starts_with("guest-"), "{b_name}");
    assert_eq!(next(&mut b_rx).await, roster("lobby", &[&a, &b]));
    assert_eq!(next(&mut a_rx).await, entered("lobby", &b));

    within(a.join("rust")).await.unwrap();
    assert_eq!(next(&mut a_rx).await, roster("rust", &[&a]));
    // Room names compare without case; the room keeps its creator's spelling.
    within(b.join("RUST")).await.unwrap();
    assert_eq!(next(&mut b_rx).await, roster("rust", &[&a, &b]));
    assert_eq!(next(&mut a_rx).await, entered("rust", &b));
    assert_eq!(b.rooms(), ["lobby", "rust"]);

    within(b.say("rust", "你好 rust")).await.unwrap();
    assert_eq!(
        next(&mut a_rx).await,
        Event::Said {
            room: "rust".into(),
            from: member(&b),
            text: "你好 rust".into()
        }
    );
    // The server has taken b's line: an echo would reach b before this.
    within(a.send("in the lobby")).await.unwrap();
    assert_eq!(
        next(&mut b_rx).await,
        Event::Said {
            room: "lobby".into(),
            from: member(&a),
            text: "in the lobby".into()
        }
    );

    within(b.part("rust")).await.unwrap();
    let departed = Event::Departed {
        room: "rust".into(),
        member: member(&b),
    };
    assert_eq!(next(&mut b_rx).await, departed);
    assert_eq!(next(&mut a_rx).await, departed);
    assert_eq!(b.rooms(), ["lobby"]);
    // Not in it any more: refused, and the session goes on.
    within(b.say("rust", "still there?")).await.unwrap();
    match next(&mut b_rx).await {
        Event::Refused { code, subject, .. } => {
            assert_eq!((code, subject.as_str()), (Refusal::NotInRoom, "rust"));
        }
        other => panic!("{other:?}"),
    }

    let b_member = member(&b);
    leave(b, b_rx).await;
    assert_eq!(
        next(&mut a_rx).await,
        Event::Departed {
            room: "lobby".into(),
            member: b_member
        }
    );
    leave(a, a_rx).await;
    server.stop().await;
}

/// A taken name (compared without case) does not fail the connection: the
/// refusal is the first event, and the server picks another name.
#[tokio::test]
async fn a_taken_name_is_refused_and_another_given() {
    let server = start(Config::default()).await;
    let (a, mut a_rx) = enter(server.addr, Some("Alice")).await;
    assert_eq!(next(&mut a_rx).await, roster("lobby", &[&a]));
    let (b, mut b_rx) = enter(server.addr, Some("aLICE")).await;
    match next(&mut b_rx).await {
        Event::Refused { code, subject, .. } => {
            assert_eq!((code, subject.as_str()), (Refusal::NameTaken, "aLICE"));
        }
        other => panic!("{other:?}"),
    }
    let b_name = b.session().name.clone().unwrap();
    assert!(b_name.starts_with("guest-"), "{b_name}");
    assert_eq!(next(&mut b_rx).await, roster("lobby", &[&a, &b]));
    // An invalid name is refused the same way.
    let (c, mut c_rx) = enter(server.addr, Some("bad name")).await;
    assert!(
        matches!(
            next(&mut c_rx).await,
            Event::Refused {
                code: Refusal::NameInvalid,
                ..
            }
        ),
        "the space is not allowed"
    );
    assert!(c.name().unwrap().starts_with("guest-"));
    leave(c, c_rx).await;
    leave(b, b_rx).await;
    leave(a, a_rx).await;
    server.stop().await;
}

/// Three clients in the lobby: a direct message reaches its recipient
/// (named without regard to case) and nobody else; one to nobody is refused.
#[tokio::test]
async fn direct_messages_reach_only_their_recipient() {
    let server = start(Config::default()).await;
    // Each is in the lobby (its roster came) before the next connects.
    let (a, mut a_rx) = enter(server.addr, Some("ann")).await;
    assert_eq!(next(&mut a_rx).await, roster("lobby", &[&a]));
    let (b, mut b_rx) = enter(server.addr, Some("韩梅梅")).await;
    assert_eq!(next(&mut b_rx).await, roster("lobby", &[&a, &b]));
    let (c, mut c_rx) = enter(server.addr, Some("Carl")).await;
    assert_eq!(next(&mut c_rx).await, roster("lobby", &[&a, &b, &c]));
    assert_eq!(next(&mut a_rx).await, entered("lobby", &b));
    assert_eq!(next(&mut a_rx).await, entered("lobby", &c));
    assert_eq!(next(&mut b_rx).await, entered("lobby", &c));

    within(a.tell("韩梅梅", "只给你")).await.unwrap();
    within(c.tell("ANN", "case does not matter")).await.unwrap();
    assert_eq!(
        next(&mut b_rx).await,
        Event::Told {
            from: member(&a),
            text: "只给你".into()
        }
    );
    assert_eq!(
        next(&mut a_rx).await,
        Event::Told {
            from: member(&c),
            text: "case does not matter".into()
        }
    );
    // A line everyone gets: c's next event is it, so c saw no Told.
    within(a.send("marker")).await.unwrap();
    let marker = Event::Said {
        room: "lobby".into(),
        from: member(&a),
        text: "marker".into(),
    };
    assert_eq!(next(&mut c_rx).await, marker);
    assert_eq!(next(&mut b_rx).await, marker);

    within(a.tell("nobody", "hello?")).await.unwrap();
    match next(&mut a_rx).await {
        Event::Refused { code, subject, .. } => {
            assert_eq!((code, subject.as_str()), (Refusal::NoSuchName, "nobody"));
        }
        other => panic!("{other:?}"),
    }
    leave(c, c_rx).await;
    leave(b, b_rx).await;
    leave(a, a_rx).await;
    server.stop().await;
}

/// A rename reaches the renamer and those who share a room with it, not
/// others; the client follows its own name.
#[tokio::test]
async fn renames_reach_the_renamer_and_its_rooms() {
    let server = start(Config::default()).await;
    let (a, mut a_rx) = enter(server.addr, Some("old")).await;
    assert_eq!(next(&mut a_rx).await, roster("lobby", &[&a]));
    let (b, mut b_rx) = enter(server.addr, None).await;
    assert_eq!(next(&mut b_rx).await, roster("lobby", &[&a, &b]));
    let (c, mut c_rx) = enter(server.addr, None).await;
    assert_eq!(next(&mut c_rx).await, roster("lobby", &[&a, &b, &c]));
    assert_eq!(next(&mut a_rx).await, entered("lobby", &b));
    assert_eq!(next(&mut a_rx).await, entered("lobby", &c));
    assert_eq!(next(&mut b_rx).await, entered("lobby", &c));
    // c leaves the lobby: it shares no room with a any more.
    within(c.part("lobby")).await.unwrap();
    let departed = Event::Departed {
        room: "lobby".into(),
        member: member(&c),
    };
    assert_eq!(next(&mut c_rx).await, departed);
    assert_eq!(next(&mut a_rx).await, departed);
    assert_eq!(next(&mut b_rx).await, departed);
    assert!(c.rooms().is_empty());

    within(a.nick("新名字")).await.unwrap();
    let renamed = Event::Renamed {
        old: "old".into(),
        member: Member::new("新名字", a.session().me),
    };
    assert_eq!(next(&mut a_rx).await, renamed);
    assert_eq!(a.name().as_deref(), Some("新名字"));
    assert_eq!(a.session().name.as_deref(), Some("old"));
    assert_eq!(next(&mut b_rx).await, renamed);
    // c's next event is a's direct message, under the new name: it was
    // not told of the rename.
    within(a.tell(c.name().unwrap(), "hi")).await.unwrap();
    assert_eq!(
        next(&mut c_rx).await,
        Event::Told {
            from: member(&a),
            text: "hi".into()
        }
    );
    // The name we have already: told to us only.
    within(a.nick("新名字")).await.unwrap();
    assert_eq!(
        next(&mut a_rx).await,
        Event::Renamed {
            old: "新名字".into(),
            member: member(&a)
        }
    );
    // Taken: refused, the name stays.
    within(a.nick(b.name().unwrap())).await.unwrap();
    assert!(matches!(
        next(&mut a_rx).await,
        Event::Refused {
            code: Refusal::NameTaken,
            ..
        }
    ));
    assert_eq!(a.name().as_deref(), Some("新名字"));
    within(b.send("marker")).await.unwrap();
    assert!(matches!(next(&mut a_rx).await, Event::Said { text, .. } if text == "marker"));
    leave(c, c_rx).await;
    leave(b, b_rx).await;
    leave(a, a_rx).await;
    server.stop().await;
}

/// With a small frame limit a roster takes several frames (a roster of 42
/// in one frame would be over what the client accepts, 480 bytes); the
/// client puts them back into one event. A client whose cap is below the roster's
/// length ends its session cleanly instead of holding it.
#[tokio::test]
async fn long_rosters_come_as_one_event_and_are_bounded() {
    const CROWD: usize = 40;
    // 200-byte frames: a roster frame holds about ten members.
    let server = start(Config {
        max_frame_len: 200,
        ..Config::default()
    })
    .await;
    let mut small = named("small");
    small.max_listed = 30;
    let (w, mut w_rx) = within(Client::connect_with(server.addr, small))
        .await
        .unwrap()
        .split();
    assert_eq!(next(&mut w_rx).await, roster("lobby", &[&w]));
    let mut crowd = Vec::new();
    for _ in 0..CROWD {
        let (s, mut e) = enter(server.addr, None).await;
        // In the lobby before the next one comes.
        assert!(
            matches!(next(&mut e).await, Event::Roster { members, .. } if members.last() == Some(&member(&s)))
        );
        crowd.push((s, e));
    }
    let (x, mut x_rx) = enter(server.addr, Some("x")).await;
    let mut all: Vec<&Sender> = vec![&w];
    all.extend(crowd.iter().map(|(s, _)| s));
    all.push(&x);
    let expected = roster("lobby", &all);
    // On connecting, and on request.
    assert_eq!(next(&mut x_rx).await, expected);
    within(x.who("lobby")).await.unwrap();
    assert_eq!(next(&mut x_rx).await, expected);

    // w's first roster was short; this one is over its cap.
    within(w.who("lobby")).await.unwrap();
    let err = loop {
        match within(w_rx.next_event()).await {
            Ok(Some(Event::Entered { .. })) => {}
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            Error::TooMany {
                what: "Roster",
                max: 30
            }
        ),
        "{err:?}"
    );
    assert_eq!(within(w_rx.next_event()).await.unwrap(), None);
    // The others go on: x sees w depart.
    let mut seen = Vec::new();
    loop {
        match next(&mut x_rx).await {
            Event::Departed { member, .. } if member.name == "small" => break,
            other => seen.push(other),
        }
    }
    assert!(seen.is_empty(), "{seen:?}");
    drop(w);
    leave(x, x_rx).await;
    for (s, e) in crowd {
        drop(e);
        within(s.exit()).await.unwrap();
    }
    server.stop().await;
}

/// The room list, with member counts, sorted by name without case.
#[tokio::test]
async fn rooms_are_listed_with_their_counts() {
    let server = start(Config::default()).await;
    let (a, mut a_rx) = enter(server.addr, None).await;
    assert_eq!(next(&mut a_rx).await, roster("lobby", &[&a]));
    let (b, mut b_rx) = enter(server.addr, None).await;
    assert_eq!(next(&mut b_rx).await, roster("lobby", &[&a, &b]));
    assert_eq!(next(&mut a_rx).await, entered("lobby", &b));
    within(a.join("Zebra")).await.unwrap();
    assert_eq!(next(&mut a_rx).await, roster("Zebra", &[&a]));
    within(b.join("apple")).await.unwrap();
    assert_eq!(next(&mut b_rx).await, roster("apple", &[&b]));
    within(b.join("zebra")).await.unwrap();
    assert_eq!(next(&mut b_rx).await, roster("Zebra", &[&a, &b]));
    assert_eq!(next(&mut a_rx).await, entered("Zebra", &b));
    within(a.list_rooms()).await.unwrap();
    let info = |name: &str, members| RoomInfo {
        name: name.into(),
        members,
    };
    assert_eq!(
        next(&mut a_rx).await,
        Event::Rooms(vec![info("apple", 1), info("lobby", 2), info("Zebra", 2)])
    );
    // Who in a room we are not in; and in none.
    within(a.who("apple")).await.unwrap();
    assert_eq!(next(&mut a_rx).await, roster("apple", &[&b]));
    within(a.who("nowhere")).await.unwrap();
    assert!(matches!(
        next(&mut a_rx).await,
        Event::Refused {
            code: Refusal::NoSuchRoom,
            ..
        }
    ));
    leave(b, b_rx).await;
    leave(a, a_rx).await;
    server.stop().await;
}

/// A version 1 client and a client with names share the lobby: each sees
/// the other in its own terms.
#[tokio::test]
async fn a_version_1_client_and_a_named_one_share_the_lobby() {
    let server = start(Config::default()).await;
    let (r, mut r_rx) = enter(server.addr, Some("李雷")).await;
    assert_eq!(next(&mut r_rx).await, roster("lobby", &[&r]));
    let (v, mut v_rx) = within(Client::connect_with(server.addr, v1()))
        .await
        .unwrap()
        .split();
    assert!(!v.session().rooms);
    assert_eq!(v.session().name, None);
    let v_addr = v.session().me;
    // The version 1 client is told who was there; the named one learns the
    // newcomer's assigned name.
    assert_eq!(joined(&mut v_rx).await, r.session().me);
    let v_member = match next(&mut r_rx).await {
        Event::Entered { room, member } if room == "lobby" && member.addr() == v_addr => member,
        other => panic!("{other:?}"),
    };
    assert!(v_member.name.starts_with("guest-"), "{v_member:?}");

    within(v.send("from version 1")).await.unwrap();
    assert_eq!(
        next(&mut r_rx).await,
        Event::Said {
            room: "lobby".into(),
            from: v_member.clone(),
            text: "from version 1".into()
        }
    );
    within(r.send("from names")).await.unwrap();
    within(r.say("lobby", "说也行")).await.unwrap();
    for text in ["from names", "说也行"] {
        assert_eq!(
            next(&mut v_rx).await,
            Event::Message {
                from: r.session().me,
                text: text.into()
            }
        );
    }
    // A version 1 client cannot receive direct messages.
    within(r.tell(&v_member.name, "psst")).await.unwrap();
    match next(&mut r_rx).await {
        Event::Refused { code, subject, .. } => {
            assert_eq!(code, Refusal::CannotReceive);
            assert_eq!(subject, v_member.name);
        }
        other => panic!("{other:?}"),
    }
    // And asks for nothing of names and rooms.
    let err = within(v.join("rust")).await.unwrap_err();
    assert!(
        matches!(err, Error::Unsupported { request: "Join" }),
        "{err:?}"
    );
    let err = within(v.tell("李雷", "hi")).await.unwrap_err();
    assert!(
        matches!(err, Error::Unsupported { request: "Tell" }),
        "{err:?}"
    );
    // Room-only traffic does not reach it: its next event is r's leaving.
    within(r.join("rust")).await.unwrap();
    within(r.say("rust", "not for v")).await.unwrap();
    let r_addr = r.session().me;
    leave(r, r_rx).await;
    assert_eq!(next(&mut v_rx).await, Event::Left(r_addr));
    within(v.exit()).await.unwrap();
    server.stop().await;
}

/// The longest text goes through on defaults with names and rooms too: a
/// `Said` carries the room and the sender's name beyond the text, and the
/// client takes it. One byte more is refused locally.
#[tokio::test]
async fn the_longest_say_goes_through_on_defaults() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let server = Server::bind(bind, Config::default()).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        // The longest names and room: 32 characters of 3 bytes.
        let name = "名".repeat(32);
        let room = "房".repeat(32);
        let (a, mut a_rx) = enter(addr, Some("a")).await;
        assert_eq!(next(&mut a_rx).await, roster("lobby", &[&a]));
        let (b, mut b_rx) = enter(addr, Some(&name)).await;
        assert_eq!(b.name().as_deref(), Some(name.as_str()));
        assert_eq!(next(&mut b_rx).await, roster("lobby", &[&a, &b]));
        assert_eq!(next(&mut a_rx).await, entered("lobby", &b));
        within(a.join(&room)).await.unwrap();
        assert_eq!(next(&mut a_rx).await, roster(&room, &[&a]));
        within(b.join(&room)).await.unwrap();
        assert_eq!(next(&mut b_rx).await, roster(&room, &[&a, &b]));
        assert_eq!(next(&mut a_rx).await, entered(&room, &b));
        // A tag, the room (96 bytes and its length), the text's length.
        let max = 65_516 - 1 - 97 - 3;
        let err = within(b.say(&room, "x".repeat(max + 1))).await.unwrap_err();
        assert!(
            matches!(err, Error::TooLong { len, max: m } if len == max + 1 && m == max),
            "{err:?}"
        );
        within(b.say(&room, "y".repeat(max))).await.unwrap();
        // And the longest Send, in the lobby.
        let longest = "z".repeat(b.session().max_text_len);
        within(b.send(longest.clone())).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            match next(&mut a_rx).await {
                Event::Said { room, from, text } => got.push((room, from, text.len())),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            got,
            [
                (room.clone(), member(&b), max),
                ("lobby".into(), member(&b), 65_512)
            ]
        );
        leave(b, b_rx).await;
        leave(a, a_rx).await;
        let _ = stop.send(());
        within(task).await.unwrap().unwrap();
    }
}

/// A shutdown reaches a named client as it does a version 1 one.
#[tokio::test]
async fn shutdown_reaches_a_named_client() {
    let server = start(Config::default()).await;
    let (tx, mut rx) = enter(server.addr, Some("bye")).await;
    assert!(matches!(next(&mut rx).await, Event::Roster { .. }));
    let _ = server.stop.send(());
    assert_eq!(next(&mut rx).await, Event::ServerExit);
    assert_eq!(within(rx.next_event()).await.unwrap(), None);
    within(server.task).await.unwrap().unwrap();
    drop(tx);
}

/// The lobby's roster is the first event, even when the client asks for
/// something at once: a request sent right after connecting is answered
/// after it.
#[tokio::test]
async fn the_lobby_roster_comes_before_the_first_answer() {
    let server = start(Config::default()).await;
    for _ in 0..20 {
        let (a, mut a_rx) = enter(server.addr, None).await;
        within(a.join("at-once")).await.unwrap();
        assert_eq!(next(&mut a_rx).await, roster("lobby", &[&a]));
        assert_eq!(next(&mut a_rx).await, roster("at-once", &[&a]));
        assert_eq!(a.rooms(), ["lobby", "at-once"]);
        leave(a, a_rx).await;
    }
    server.stop().await;
}

/// Two named clients in a room each say a stream of lines while reading
/// the other's: nothing is lost, nothing reordered, no echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_named_clients_say_and_hear_at_once() {
    const N: usize = 300;
    let server = start(Config {
        rate: 0,
        ..Config::default()
    })
    .await;
    let (a, mut a_rx) = enter(server.addr, Some("甲")).await;
    assert_eq!(next(&mut a_rx).await, roster("lobby", &[&a]));
    let (b, mut b_rx) = enter(server.addr, Some("乙")).await;
    assert_eq!(next(&mut b_rx).await, roster("lobby", &[&a, &b]));
    assert_eq!(next(&mut a_rx).await, entered("lobby", &b));
    within(a.join("duo")).await.unwrap();
    assert_eq!(next(&mut a_rx).await, roster("duo", &[&a]));
    within(b.join("duo")).await.unwrap();
    assert_eq!(next(&mut b_rx).await, roster("duo", &[&a, &b]));
    assert_eq!(next(&mut a_rx).await, entered("duo", &b));

    let talk = |tx: Sender| {
        tokio::spawn(async move {
            let name = tx.name().unwrap();
            for i in 0..N {
                within(tx.say("duo", format!("{name} {i} 你好")))
                    .await
                    .unwrap();
            }
            tx
        })
    };
    let listen = |mut rx: Events, from: Member| {
        tokio::spawn(async move {
            for i in 0..N {
                assert_eq!(
                    next(&mut rx).await,
                    Event::Said {
                        room: "duo".into(),
                        text: format!("{} {i} 你好", from.name),
                        from: from.clone(),
                    }
                );
            }
            rx
        })
    };
    let (a_member, b_member) = (member(&a), member(&b));
    let a_talks = talk(a);
    let b_talks = talk(b);
    let a_hears = listen(a_rx, b_member);
    let b_hears = listen(b_rx, a_member);
    let a = within(a_talks).await.unwrap();
    let b = within(b_talks).await.unwrap();
    let a_rx = within(a_hears).await.unwrap();
    let b_rx = within(b_hears).await.unwrap();
    leave(a, a_rx).await;
    leave(b, b_rx).await;
    server.stop().await;
}
