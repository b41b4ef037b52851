//! Names, rooms, direct messages and rosters (the ROOMS capability) over
//! real loopback TCP, as PROTOCOL.md and issue 9 specify them, alongside
//! version 1 clients that must see exactly the seed's behaviour.
//!
//! Absence ("c is not told") is proven by order, never by waiting: after
//! the action, the same actor does something that reaches c through the
//! same path (a `Said` in a room they share, a `Told`), and c's very next
//! message must be that marker.

mod common;

use std::time::Duration;

use chat_proto::{Member, Message, Refusal};
use chat_server::Config;
use common::{
    Client, LOBBY, TestServer, config, crowd, departed, entered, info, join, joined, left, named,
    renamed, said, told, welcomed_rooms,
};

/// Reads `v1`'s next message, which must be `msg`, and checks that the
/// server sent it nothing of the ROOMS capability (its machine would have
/// skipped it silently).
async fn v1_expect(v1: &mut Client, msg: Message) {
    v1.expect(msg).await;
    assert_eq!(
        v1.conn.skipped(),
        0,
        "a version 1 client was sent ROOMS messages"
    );
}

/// The guest name a version 1 client got, as a ROOMS client in the lobby
/// hears of its arrival.
async fn guest_of(observer: &mut Client, v1: &Client) -> Member {
    match observer.recv().await {
        Message::Entered { room, member } if room == LOBBY && member.addr() == v1.addr => {
            assert!(is_guest(&member.name), "{member:?}");
            member
        }
        other => panic!("expected the Entered of {}, got {other:?}", v1.addr),
    }
}

fn is_guest(name: &str) -> bool {
    name.strip_prefix("guest-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test]
async fn nick_then_named_then_the_lobby_roster() {
    let server = TestServer::start(config()).await;
    let (mut a, roster) = named(server.addr, "Alice").await;
    assert_eq!(a.name, "Alice");
    assert_eq!(roster, vec![a.me()]);
    let (b, roster) = named(server.addr, "张三").await;
    assert_eq!(b.name, "张三");
    assert_eq!(roster, vec![a.me(), b.me()], "in the order they entered");
    a.expect(entered(LOBBY, &b.me())).await;
    // The shown form is NFC whatever was typed.
    let (c, _) = named(server.addr, "Zoe\u{308}").await;
    assert_eq!(c.name, "Zo\u{eb}");
    a.expect(entered(LOBBY, &c.me())).await;
    drop((a, b, c));
    server.stop().await;
}

#[tokio::test]
async fn an_empty_nick_gets_a_guest_name() {
    let server = TestServer::start(config()).await;
    let (mut a, _) = named(server.addr, "").await;
    assert!(is_guest(&a.name), "{}", a.name);
    let (b, roster) = named(server.addr, "").await;
    assert!(is_guest(&b.name), "{}", b.name);
    assert_ne!(a.name, b.name);
    assert_eq!(roster, vec![a.me(), b.me()]);
    a.expect(entered(LOBBY, &b.me())).await;
    drop((a, b));
    server.stop().await;
}

/// Assigned names skip the ones clients asked for, whatever their case.
#[tokio::test]
async fn assigned_names_skip_taken_ones() {
    let server = TestServer::start(config()).await;
    let spellings: Vec<String> = (0..5).map(|n| format!("GUEST-{n}")).collect();
    let names: Vec<&str> = spellings.iter().map(String::as_str).collect();
    let mut all = crowd(server.addr, &names).await;
    for _ in 0..3 {
        let (c, _) = named(server.addr, "").await;
        assert!(is_guest(&c.name), "{}", c.name);
        for other in &mut all {
            assert_ne!(other.name.to_lowercase(), c.name, "assigned a taken name");
            other.expect(entered(LOBBY, &c.me())).await;
        }
        all.push(c);
    }
    drop(all);
    server.stop().await;
}

#[tokio::test]
async fn a_taken_name_is_refused_and_another_assigned() {
    let server = TestServer::start(config()).await;
    let mut all = crowd(server.addr, &["Alice", "Straße", "Caf\u{e9}"]).await;
    for asked in ["ALICE", "alice", "STRASSE", "strasse", "CAFE\u{301}"] {
        let mut c = welcomed_rooms(server.addr).await;
        c.nick(asked).await;
        c.expect_refused(Refusal::NameTaken, asked).await;
        let name = c.expect_named().await;
        assert!(is_guest(&name), "{asked}: assigned {name}");
        let roster = c.roster(LOBBY).await;
        assert_eq!(roster.last(), Some(&c.me()));
        for other in &mut all {
            other.expect(entered(LOBBY, &c.me())).await;
        }
        // Renaming to a taken name later is refused too, the name kept.
        c.nick("aLiCe").await;
        c.expect_refused(Refusal::NameTaken, "aLiCe").await;
        c.tell(&name, "still me").await;
        let me = c.me();
        c.expect(told(&me, "still me")).await;
        c.send(Message::Exit).await;
        c.expect_exit().await;
        for other in &mut all {
            other.expect(departed(LOBBY, &me)).await;
        }
    }
    drop(all);
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_name_is_refused_with_a_readable_reason() {
    let server = TestServer::start(config()).await;
    let long = "n".repeat(33);
    for (asked, says) in [
        ("evil\u{202E}gnp.exe", "U+202E"),
        ("\u{2066}x", "U+2066"),
        ("zero\u{200B}width", "U+200B"),
        ("two words", "U+0020"),
        ("ctl\u{7}", "U+0007"),
        ("smile😀", "U+1F600"),
        ("\u{301}mark", "U+0301"),
        (long.as_str(), "32"),
    ] {
        let mut c = welcomed_rooms(server.addr).await;
        c.nick(asked).await;
        let detail = c.expect_refused(Refusal::NameInvalid, asked).await;
        assert!(detail.contains(says), "{asked:?}: {detail}");
        assert!(
            !detail
                .chars()
                .any(|ch| ch.is_control() || ('\u{2000}'..='\u{206F}').contains(&ch)),
            "the detail carries the raw character: {detail:?}"
        );
        let name = c.expect_named().await;
        assert!(is_guest(&name));
        c.roster(LOBBY).await;
        // A later rename to an invalid name: refused, name kept.
        c.nick(asked).await;
        c.expect_refused(Refusal::NameInvalid, asked).await;
        c.tell(&name, "kept").await;
        let me = c.me();
        c.expect(told(&me, "kept")).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn the_server_lowers_the_name_limit() {
    let server = TestServer::start(chat_server::Config {
        max_name_chars: 4,
        ..config()
    })
    .await;
    let (a, _) = named(server.addr, "四个字符").await;
    assert_eq!(a.name, "四个字符");
    let mut b = welcomed_rooms(server.addr).await;
    b.nick("fiver").await;
    let detail = b.expect_refused(Refusal::NameInvalid, "fiver").await;
    assert!(detail.contains('4'), "{detail}");
    b.expect_named().await;
    drop((a, b));
    server.stop().await;
}

/// A rename reaches the renamer and everyone sharing a room with it, once
/// each however many rooms they share; nobody else, never a v1 client.
#[tokio::test]
async fn a_rename_reaches_room_sharers_once_and_nobody_else() {
    let server = TestServer::start(config()).await;
    let mut v1 = join(server.addr).await;
    let [mut a, mut b, mut c, mut d, mut e]: [Client; 5] = {
        let mut all = Vec::new();
        for name in ["Ann", "Ben", "Cat", "Dan", "Eve"] {
            let (client, _) = named(server.addr, name).await;
            v1_expect(&mut v1, joined(client.addr)).await;
            all.push(client);
        }
        all.try_into().ok().unwrap()
    };
    // Drain the lobby Entered notices everyone got of later arrivals.
    let members = [a.me(), b.me(), c.me(), d.me(), e.me()];
    for (i, client) in [&mut a, &mut b, &mut c, &mut d, &mut e]
        .into_iter()
        .enumerate()
    {
        for later in &members[i + 1..] {
            client.expect(entered(LOBBY, later)).await;
        }
    }
    // a: lobby + side; b: lobby; c: side only; d: far only; e: lobby + side.
    a.enter("side").await;
    c.enter("side").await;
    a.expect(entered("side", &c.me())).await;
    e.enter("side").await;
    a.expect(entered("side", &e.me())).await;
    c.expect(entered("side", &e.me())).await;
    c.leave(LOBBY).await;
    for x in [&mut a, &mut b, &mut d, &mut e] {
        x.expect(departed(LOBBY, &members[2])).await;
    }
    v1_expect(&mut v1, left(c.addr)).await;
    d.leave(LOBBY).await;
    for x in [&mut a, &mut b, &mut e] {
        x.expect(departed(LOBBY, &members[3])).await;
    }
    v1_expect(&mut v1, left(d.addr)).await;
    d.enter("far").await;

    a.nick("Annabel").await;
    a.name = "Annabel".into();
    let rename = renamed("Ann", &a.me());
    a.expect(rename.clone()).await;
    // Markers: a speaks in both rooms, then joins far.
    a.say_in(LOBBY, "after").await;
    a.say_in("side", "after").await;
    a.join_room("far").await;
    let roster = a.roster("far").await;
    assert_eq!(roster, vec![d.me(), a.me()]);
    b.expect(rename.clone()).await;
    b.expect(said(LOBBY, &a.me(), "after")).await;
    c.expect(rename.clone()).await;
    c.expect(said("side", &a.me(), "after")).await;
    e.expect(rename.clone()).await;
    e.expect(said(LOBBY, &a.me(), "after")).await;
    e.expect(said("side", &a.me(), "after")).await;
    // d shared no room at the time: its first news of a is its entrance,
    // under the new name.
    d.expect(entered("far", &a.me())).await;
    v1_expect(&mut v1, Message::relay(a.addr, "after")).await;

    // Asking for one's own name: Renamed old == new, to the requester only.
    a.nick("Annabel").await;
    a.expect(renamed("Annabel", &a.me())).await;
    // A case-only change is a rename, announced.
    a.nick("ANNABEL").await;
    a.name = "ANNABEL".into();
    let rename = renamed("Annabel", &a.me());
    a.expect(rename.clone()).await;
    a.say_in(LOBBY, "again").await;
    b.expect(rename.clone()).await;
    b.expect(said(LOBBY, &a.me(), "again")).await;
    v1_expect(&mut v1, Message::relay(a.addr, "again")).await;
    drop((a, b, c, d, e, v1));
    server.stop().await;
}

/// Entered, Departed and Roster concern the room's members only; a second
/// Join gives the roster again and announces nothing; the last to leave
/// removes the room.
#[tokio::test]
async fn joins_and_parts_reach_that_rooms_members_only() {
    let server = TestServer::start(config()).await;
    let [mut a, mut b, mut c]: [Client; 3] = crowd(server.addr, &["a1", "b2", "c3"])
        .await
        .try_into()
        .ok()
        .unwrap();
    assert_eq!(a.enter("Room").await, vec![a.me()]);
    assert_eq!(
        b.enter("room").await,
        vec![a.me(), b.me()],
        "one room, whatever the case"
    );
    a.expect(entered("Room", &b.me())).await;
    // Again: the roster, no Entered.
    a.join_room("ROOM").await;
    assert_eq!(a.roster("Room").await, vec![a.me(), b.me()]);
    b.part("rOOm").await;
    b.expect(departed("Room", &b.me())).await;
    a.expect(departed("Room", &b.me())).await;
    // Not a member (any more), no such room, not a room name at all.
    for room in ["Room", "nowhere", "no where"] {
        b.part(room).await;
        b.expect_refused(Refusal::NotInRoom, room).await;
    }
    // c heard none of it: its next message is a's marker in the lobby.
    a.say_in(LOBBY, "marker").await;
    c.expect(said(LOBBY, &a.me(), "marker")).await;
    b.expect(said(LOBBY, &a.me(), "marker")).await;
    // The room keeps its creator's spelling.
    let listed = c.list_rooms().await;
    assert_eq!(listed, vec![info(LOBBY, 3), info("Room", 1)]);
    a.part("room").await;
    a.expect(departed("Room", &a.me())).await;
    c.who("Room").await;
    c.expect_refused(Refusal::NoSuchRoom, "Room").await;
    assert_eq!(c.list_rooms().await, vec![info(LOBBY, 3)]);
    drop((a, b, c));
    server.stop().await;
}

#[tokio::test]
async fn say_to_a_room_not_joined_is_refused_and_the_connection_stays() {
    let server = TestServer::start(config()).await;
    let [mut a, mut b, mut c]: [Client; 3] = crowd(server.addr, &["a1", "b2", "c3"])
        .await
        .try_into()
        .ok()
        .unwrap();
    a.say_in("elsewhere", "hello?").await;
    a.expect_refused(Refusal::NotInRoom, "elsewhere").await;
    b.enter("pair").await;
    a.say_in("pair", "let me in").await;
    a.expect_refused(Refusal::NotInRoom, "pair").await;
    // Still usable.
    a.say_in(LOBBY, "still here").await;
    b.expect(said(LOBBY, &a.me(), "still here")).await;
    c.expect(said(LOBBY, &a.me(), "still here")).await;
    // A Say reaches the room's other members only, not its sender.
    c.enter("pair").await;
    b.expect(entered("pair", &c.me())).await;
    b.say_in("pair", "只有我们 🙂").await;
    c.expect(said("pair", &b.me(), "只有我们 🙂")).await;
    b.who("pair").await;
    assert_eq!(
        b.roster("pair").await,
        vec![b.me(), c.me()],
        "no copy to the sender"
    );
    a.say_in(LOBBY, "marker").await;
    b.expect(said(LOBBY, &a.me(), "marker")).await;
    c.expect(said(LOBBY, &a.me(), "marker")).await;
    // Send from a ROOMS client is a Say in the lobby...
    a.say("plain send").await;
    b.expect(said(LOBBY, &a.me(), "plain send")).await;
    c.expect(said(LOBBY, &a.me(), "plain send")).await;
    // ... refused once it left the lobby.
    a.leave(LOBBY).await;
    b.expect(departed(LOBBY, &a.me())).await;
    c.expect(departed(LOBBY, &a.me())).await;
    a.say("nobody hears").await;
    match a.recv().await {
        Message::Refused { code, .. } => assert_eq!(code, Refusal::NotInRoom),
        other => panic!("expected NotInRoom, got {other:?}"),
    }
    drop((a, b, c));
    server.stop().await;
}

#[tokio::test]
async fn a_direct_message_reaches_its_recipient_only() {
    let server = TestServer::start(config()).await;
    let [mut a, mut b, mut c]: [Client; 3] = crowd(server.addr, &["Alice", "Bob", "Carol"])
        .await
        .try_into()
        .ok()
        .unwrap();
    let mut v1 = join(server.addr).await;
    let guest = guest_of(&mut a, &v1).await;
    assert_eq!(guest_of(&mut b, &v1).await, guest);
    assert_eq!(guest_of(&mut c, &v1).await, guest);
    for x in [&a, &b, &c] {
        assert!(
            matches!(v1.recv().await, Message::Joined { .. }),
            "{}",
            x.name
        );
    }

    a.tell("BOB", "psst, 你好").await;
    b.expect(told(&a.me(), "psst, 你好")).await;
    // Nobody else: c's and v1's next messages are a's marker; a got no copy.
    a.say_in(LOBBY, "marker").await;
    c.expect(said(LOBBY, &a.me(), "marker")).await;
    b.expect(said(LOBBY, &a.me(), "marker")).await;
    v1_expect(&mut v1, Message::relay(a.addr, "marker")).await;
    a.tell("nobody", "hello?").await;
    a.expect_refused(Refusal::NoSuchName, "nobody").await;
    // A version 1 client cannot receive one.
    a.tell(&guest.name, "can you read this?").await;
    a.expect_refused(Refusal::CannotReceive, &guest.name).await;
    // To oneself: delivered to oneself.
    a.tell("alice", "note to self").await;
    a.expect(told(&a.me(), "note to self")).await;
    // A v1 client's Send reaches ROOMS clients as a Said from its guest name.
    v1.say("from the past").await;
    for x in [&mut a, &mut b, &mut c] {
        x.expect(said(LOBBY, &guest, "from the past")).await;
    }
    assert_eq!(v1.conn.skipped(), 0);
    drop((a, b, c, v1));
    server.stop().await;
}

#[tokio::test]
async fn direct_messages_past_the_burst_are_refused_not_delivered() {
    let server = TestServer::start(chat_server::Config {
        tell_rate: 1,
        tell_burst: 3,
        ..config()
    })
    .await;
    let [mut a, mut b]: [Client; 2] = crowd(server.addr, &["Alice", "Bob"])
        .await
        .try_into()
        .ok()
        .unwrap();
    // Five in one write: three within the burst, then refusals (a refill
    // takes a second; the five are handled in one turn).
    for i in 0..5 {
        a.feed(Message::Tell {
            name: "Bob".into(),
            text: format!("dm {i}"),
        })
        .await;
    }
    a.flush().await;
    for i in 0..3 {
        b.expect(told(&a.me(), &format!("dm {i}"))).await;
    }
    a.expect_refused(Refusal::RateLimited, "Bob").await;
    a.expect_refused(Refusal::RateLimited, "Bob").await;
    // The connection stays, and the refused ones were not delivered.
    a.say_in(LOBBY, "marker").await;
    b.expect(said(LOBBY, &a.me(), "marker")).await;
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn who_and_list_rooms() {
    let server = TestServer::start(config()).await;
    let [mut a, mut b, mut c]: [Client; 3] = crowd(server.addr, &["a1", "b2", "c3"])
        .await
        .try_into()
        .ok()
        .unwrap();
    c.who("missing").await;
    c.expect_refused(Refusal::NoSuchRoom, "missing").await;
    c.who("bad room").await;
    c.expect_refused(Refusal::RoomInvalid, "bad room").await;
    c.join_room("bad\u{202E}room").await;
    c.expect_refused(Refusal::RoomInvalid, "bad\u{202E}room")
        .await;
    a.enter("zeta").await;
    a.enter("Alpha").await;
    b.enter("alpha").await;
    a.expect(entered("Alpha", &b.me())).await;
    b.enter("Mid").await;
    // Who needs no membership.
    c.who("ALPHA").await;
    assert_eq!(c.roster("Alpha").await, vec![a.me(), b.me()]);
    c.who(LOBBY).await;
    assert_eq!(c.roster(LOBBY).await, vec![a.me(), b.me(), c.me()]);
    // Sorted by folded name, with member counts.
    assert_eq!(
        c.list_rooms().await,
        vec![
            info("Alpha", 2),
            info(LOBBY, 3),
            info("Mid", 1),
            info("zeta", 1)
        ]
    );
    drop((a, b, c));
    server.stop().await;
}

#[tokio::test]
async fn too_many_rooms_and_a_full_room_are_refused() {
    let server = TestServer::start(chat_server::Config {
        max_rooms: 3,
        room_members: 2,
        ..config()
    })
    .await;
    // Two at a time in the lobby too.
    let [mut a, mut b]: [Client; 2] = crowd(server.addr, &["a1", "b2"])
        .await
        .try_into()
        .ok()
        .unwrap();
    b.leave(LOBBY).await;
    a.expect(departed(LOBBY, &b.me())).await;
    let (mut c, _) = named(server.addr, "c3").await;
    a.expect(entered(LOBBY, &c.me())).await;
    // The lobby counts: two more rooms, not three.
    a.enter("one").await;
    a.enter("two").await;
    a.join_room("three").await;
    a.expect_refused(Refusal::TooManyRooms, "three").await;
    // Joining one it is in is not a new room.
    assert_eq!(a.enter("one").await, vec![a.me()]);
    // Leaving one frees a place.
    a.leave("two").await;
    a.enter("three").await;
    // Two members per room.
    b.enter("one").await;
    a.expect(entered("one", &b.me())).await;
    c.join_room("one").await;
    c.expect_refused(Refusal::RoomFull, "one").await;
    c.who("one").await;
    assert_eq!(c.roster("one").await, vec![a.me(), b.me()]);
    b.leave("one").await;
    a.expect(departed("one", &b.me())).await;
    assert_eq!(c.enter("one").await, vec![a.me(), c.me()]);
    a.expect(entered("one", &c.me())).await;
    drop((a, b, c));
    server.stop().await;
}

/// Newcomers enter the lobby whatever the cap on members; one that left it
/// comes back under the cap, like any room.
#[tokio::test]
async fn the_lobby_takes_every_newcomer_but_a_return_is_capped() {
    let server = TestServer::start(chat_server::Config {
        room_members: 2,
        ..config()
    })
    .await;
    let [mut a, mut b, mut c]: [Client; 3] = crowd(server.addr, &["a1", "b2", "c3"])
        .await
        .try_into()
        .ok()
        .unwrap();
    c.leave(LOBBY).await;
    a.expect(departed(LOBBY, &c.me())).await;
    b.expect(departed(LOBBY, &c.me())).await;
    c.join_room(LOBBY).await;
    c.expect_refused(Refusal::RoomFull, LOBBY).await;
    b.leave(LOBBY).await;
    a.expect(departed(LOBBY, &b.me())).await;
    assert_eq!(c.enter(LOBBY).await, vec![a.me(), c.me()]);
    a.expect(entered(LOBBY, &c.me())).await;
    drop((a, b, c));
    server.stop().await;
}

/// A roster and a room list too long for one frame come in several, each
/// within the server's limit, `more` on all but the last, in order.
#[tokio::test]
async fn long_rosters_and_room_lists_are_split() {
    const MEMBERS: usize = 30;
    let server = TestServer::start(chat_server::Config {
        max_frame_len: 200,
        rate: 0,
        ..config()
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..MEMBERS {
        let (client, roster) = named(server.addr, &format!("member-{i:02}")).await;
        let mut expected: Vec<Member> = clients.iter().map(Client::me).collect();
        expected.push(client.me());
        assert_eq!(roster, expected, "joined {i}");
        for other in &mut clients {
            other.expect(entered(LOBBY, &client.me())).await;
        }
        clients.push(client);
    }
    let last = clients.last_mut().unwrap();
    last.who(LOBBY).await;
    let mut frames = 0;
    let mut all = Vec::new();
    loop {
        match last.recv().await {
            Message::Roster {
                room,
                members,
                more,
            } => {
                assert_eq!(room, LOBBY);
                frames += 1;
                all.extend(members);
                if !more {
                    break;
                }
            }
            other => panic!("expected Roster, got {other:?}"),
        }
    }
    assert!(frames > 1, "{frames} frame(s)");
    let expected: Vec<Member> = clients.iter().map(Client::me).collect();
    assert_eq!(all, expected);
    // The same through the checked helper (each frame within L = 200).
    let last = clients.last_mut().unwrap();
    last.who(LOBBY).await;
    assert_eq!(last.roster(LOBBY).await, expected);

    // Many rooms: one client in each.
    let mut names: Vec<String> = (0..MEMBERS).map(|i| format!("room-{i:02}")).collect();
    for (client, room) in clients.iter_mut().zip(&names) {
        client.enter(room).await;
    }
    let listed = clients[0].list_rooms().await;
    names.push(LOBBY.into());
    names.sort();
    let counts: Vec<_> = names
        .iter()
        .map(|n| info(n, if n == LOBBY { MEMBERS as u32 } else { 1 }))
        .collect();
    assert_eq!(listed, counts);
    drop(clients);
    server.stop().await;
}

/// A version 1 client and ROOMS clients share the lobby: each side sees
/// the other in its own terms.
#[tokio::test]
async fn a_version_1_client_and_a_rooms_client_chat_in_the_lobby() {
    let server = TestServer::start(config()).await;
    let mut v1 = join(server.addr).await;
    let (mut r, roster) = named(server.addr, "Ræder").await;
    let guest = roster[0].clone();
    assert_eq!(roster.len(), 2);
    assert_eq!(guest.addr(), v1.addr);
    assert!(is_guest(&guest.name));
    v1_expect(&mut v1, joined(r.addr)).await;

    v1.say("hello, anyone?").await;
    r.expect(said(LOBBY, &guest, "hello, anyone?")).await;
    r.say_in(LOBBY, "hej! 你好").await;
    v1_expect(&mut v1, Message::relay(r.addr, "hej! 你好")).await;
    r.say("plain").await;
    v1_expect(&mut v1, Message::relay(r.addr, "plain")).await;

    // Rooms elsewhere are invisible to v1.
    r.enter("elsewhere").await;
    r.say_in("elsewhere", "not for v1").await;
    r.nick("Raeder").await;
    r.name = "Raeder".into();
    r.expect(renamed("Ræder", &r.me())).await;
    r.say_in(LOBBY, "back").await;
    v1_expect(&mut v1, Message::relay(r.addr, "back")).await;

    // A second v1 client: the ROOMS one hears of it by its guest name.
    let mut v2 = join(server.addr).await;
    let guest2 = guest_of(&mut r, &v2).await;
    v1_expect(&mut v1, joined(v2.addr)).await;
    v2.say("me too").await;
    v1_expect(&mut v1, Message::relay(v2.addr, "me too")).await;
    r.expect(said(LOBBY, &guest2, "me too")).await;
    let v2_addr = v2.addr;
    drop(v2);
    v1_expect(&mut v1, left(v2_addr)).await;
    r.expect(departed(LOBBY, &guest2)).await;
    // The ROOMS client leaves the lobby: v1 sees it leave.
    r.leave(LOBBY).await;
    v1_expect(&mut v1, left(r.addr)).await;
    drop((v1, r));
    server.stop().await;
}

/// Says before and after a rename, written at once (so that the server
/// reads them together and, history off, encodes their relays in one go):
/// each `Said` carries the name the sender had when it was said.
#[tokio::test]
async fn says_around_a_rename_carry_the_name_of_their_time() {
    let off = Config {
        storage: chat_server::Storage::Off,
        ..config()
    };
    for config in [off, config()] {
        says_around_a_rename(config).await;
    }
}

async fn says_around_a_rename(config: Config) {
    let server = TestServer::start(config).await;
    let (mut a, _) = named(server.addr, "Ann").await;
    let (mut b, _) = named(server.addr, "Ben").await;
    a.expect(entered(LOBBY, &b.me())).await;
    let before = a.me();
    for msg in [
        Message::Say {
            room: LOBBY.into(),
            text: "one".into(),
        },
        Message::Say {
            room: LOBBY.into(),
            text: "two".into(),
        },
        Message::Nick {
            name: "Annabel".into(),
        },
        Message::Say {
            room: LOBBY.into(),
            text: "三".into(),
        },
    ] {
        a.feed(msg).await;
    }
    a.flush().await;
    a.name = "Annabel".into();
    let after = a.me();
    b.expect(said(LOBBY, &before, "one")).await;
    b.expect(said(LOBBY, &before, "two")).await;
    b.expect(renamed("Ann", &after)).await;
    b.expect(said(LOBBY, &after, "三")).await;
    a.expect(renamed("Ann", &after)).await;
    drop((a, b));
    server.stop().await;
}

/// PROTOCOL.md §5.3 for version 1 clients, with ROOMS clients around: a v1
/// newcomer hears `Joined` of exactly the lobby's members (not of ROOMS
/// clients that left it, nor of one that has not sent Nick) before any
/// relay.
#[tokio::test]
async fn a_version_1_newcomer_hears_of_the_lobby_only() {
    let server = TestServer::start(config()).await;
    let mut x = join(server.addr).await;
    let [mut a, mut b]: [Client; 2] = {
        let mut all = Vec::new();
        for name in ["in-lobby", "gone-away"] {
            let (client, _) = named(server.addr, name).await;
            v1_expect(&mut x, joined(client.addr)).await;
            all.push(client);
        }
        all.try_into().ok().unwrap()
    };
    a.expect(entered(LOBBY, &b.me())).await;
    b.leave(LOBBY).await;
    a.expect(departed(LOBBY, &b.me())).await;
    v1_expect(&mut x, left(b.addr)).await;
    // Welcomed, never named: in no room yet.
    let unnamed = welcomed_rooms(server.addr).await;

    let mut y = join(server.addr).await;
    x.say("marker").await;
    let mut roster = Vec::new();
    loop {
        match y.recv().await {
            msg @ Message::Joined { .. } => roster.push(msg),
            msg => {
                assert_eq!(msg, Message::relay(x.addr, "marker"));
                break;
            }
        }
    }
    roster.sort_by_key(|m| format!("{m:?}"));
    let mut expected = vec![joined(x.addr), joined(a.addr)];
    expected.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(roster, expected);
    assert_eq!(y.conn.skipped(), 0);
    drop((x, y, a, b, unnamed));
    server.stop().await;
}

/// Until its Nick a ROOMS client may only ping; anything else is a
/// protocol error. Silence past the handshake timeout closes it.
#[tokio::test]
async fn the_first_request_is_nick_and_the_wait_is_bounded() {
    let server = TestServer::start(config()).await;
    let mut a = welcomed_rooms(server.addr).await;
    a.send(Message::Ping { nonce: 5 }).await;
    assert_eq!(a.recv().await, Message::Pong { nonce: 5 });
    a.send_raw(Message::Join {
        room: "early".into(),
    })
    .await;
    match a.recv().await {
        Message::Error { reason } => assert!(reason.contains("Nick"), "{reason}"),
        other => panic!("expected Error, got {other:?}"),
    }
    a.expect_eof().await;
    drop(a);
    server.stop().await;
    let server = TestServer::start(chat_server::Config {
        handshake_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let mut silent = welcomed_rooms(server.addr).await;
    silent.expect_error("handshake timeout").await;
    drop(silent);
    server.stop().await;
}

/// A direct message goes to whoever had the name when the server handled
/// it, and to nobody else, whatever renames come after. Deterministic
/// order: each step waits for the server to have handled the last.
#[tokio::test]
async fn a_direct_message_follows_the_name_at_the_time_it_is_handled() {
    let server = TestServer::start(config()).await;
    let [mut a, mut b, mut c]: [Client; 3] = crowd(server.addr, &["sender", "bob", "carol"])
        .await
        .try_into()
        .ok()
        .unwrap();
    // b is bob now. a's own Told proves its Tell to bob was handled.
    a.tell("bob", "one").await;
    a.tell("sender", "sync 1").await;
    a.expect(told(&a.me(), "sync 1")).await;
    // b renames; then c takes the name.
    b.nick("robert").await;
    b.name = "robert".into();
    b.expect(told(&a.me(), "one")).await;
    b.expect(renamed("bob", &b.me())).await;
    a.expect(renamed("bob", &b.me())).await;
    c.expect(renamed("bob", &b.me())).await;
    c.nick("BOB").await;
    c.name = "BOB".into();
    let c_rename = renamed("carol", &c.me());
    for x in [&mut c, &mut a, &mut b] {
        x.expect(c_rename.clone()).await;
    }
    a.tell("bob", "two").await;
    c.expect(told(&a.me(), "two")).await;
    // Markers through the same path: b never got "two", c never got "one".
    a.tell("robert", "end b").await;
    b.expect(told(&a.me(), "end b")).await;
    a.tell("bob", "end c").await;
    c.expect(told(&a.me(), "end c")).await;
    drop((a, b, c));
    server.stop().await;
}

/// The same with the rename and the take-over racing a stream of direct
/// messages: a's messages are handled in order, so bob (b) gets a prefix,
/// then some are refused (nobody is bob), then carol (now bob) gets the
/// rest. Nobody gets one twice, nobody else gets any.
#[tokio::test]
async fn a_direct_message_races_a_rename_and_reaches_one_holder() {
    const N: usize = 300;
    let server = TestServer::start(chat_server::Config {
        tell_rate: 0,
        rate: 0,
        // Without history a `Told` is pushed when the `Tell` is handled,
        // so none follows b's `Renamed`; with history it is delivered once
        // stored, to the client that held the name when it was handled,
        // which may by then have renamed itself.
        storage: chat_server::Storage::Off,
        ..config()
    })
    .await;
    let [mut a, mut b, mut c, mut d]: [Client; 4] =
        crowd(server.addr, &["sender", "bob", "carol", "dave"])
            .await
            .try_into()
            .ok()
            .unwrap();
    let from = a.me();
    let send = async {
        for i in 0..N {
            a.feed(Message::Tell {
                name: "bob".into(),
                text: format!("{i}"),
            })
            .await;
            if i % 10 == 9 {
                a.flush().await;
                tokio::task::yield_now().await;
            }
        }
        a.tell("sender", "done").await;
        let mut refused = 0;
        loop {
            match a.recv().await {
                Message::Refused { code, subject, .. } => {
                    assert_eq!((code, subject.as_str()), (Refusal::NoSuchName, "bob"));
                    refused += 1;
                }
                Message::Renamed { .. } => {}
                msg => {
                    assert_eq!(msg, told(&from, "done"));
                    return refused;
                }
            }
        }
    };
    // b gives the name up; once that is done, c takes it.
    let swap = async {
        b.nick("robert").await;
        let mut to_b = Vec::new();
        loop {
            match b.recv().await {
                Message::Told { from: f, text } => {
                    assert_eq!(f, from);
                    to_b.push(text.parse::<usize>().unwrap());
                }
                Message::Renamed { old, member } => {
                    assert_eq!((old.as_str(), member.name.as_str()), ("bob", "robert"));
                    break;
                }
                other => panic!("b: unexpected {other:?}"),
            }
        }
        c.nick("bob").await;
        to_b
    };
    let (refused, to_b) = tokio::join!(send, swap);
    b.name = "robert".into();
    c.name = "bob".into();
    // Markers: one last message to each, by its current name.
    a.tell("robert", "end").await;
    a.tell("bob", "end").await;
    assert_eq!(tells_until_end(&mut b, &from).await, Vec::<usize>::new());
    let to_c = tells_until_end(&mut c, &from).await;
    // b got 0..i, c got j..N, and i..j were refused.
    assert_eq!(to_b, (0..to_b.len()).collect::<Vec<_>>());
    let j = N - to_c.len();
    assert_eq!(to_c, (j..N).collect::<Vec<_>>());
    assert_eq!(to_b.len() + refused + to_c.len(), N, "each handled once");
    // d, who shares the lobby, saw the renames and nothing else.
    d.expect(renamed("bob", &b.me())).await;
    d.expect(renamed("carol", &c.me())).await;
    a.say_in(LOBBY, "marker").await;
    d.expect(said(LOBBY, &a.me(), "marker")).await;
    drop((a, b, c, d));
    server.stop().await;
}

/// The numbered direct messages from `from` until its "end", skipping
/// rename notices.
async fn tells_until_end(client: &mut Client, from: &Member) -> Vec<usize> {
    let mut got = Vec::new();
    loop {
        match client.recv().await {
            Message::Told { from: f, text } => {
                assert_eq!(&f, from);
                if text == "end" {
                    return got;
                }
                got.push(text.parse::<usize>().unwrap());
            }
            Message::Renamed { .. } => {}
            other => panic!("{}: unexpected {other:?}", client.name),
        }
    }
}

/// A client that goes away departs every room it was in, each announced
/// to that room's members; an emptied room disappears.
#[tokio::test]
async fn a_disconnect_departs_every_room() {
    let server = TestServer::start(config()).await;
    let mut v1 = join(server.addr).await;
    let [mut a, mut b, mut c]: [Client; 3] = {
        let mut all = Vec::new();
        for name in ["leaver", "b2", "c3"] {
            let (client, _) = named(server.addr, name).await;
            v1_expect(&mut v1, joined(client.addr)).await;
            all.push(client);
        }
        all.try_into().ok().unwrap()
    };
    a.expect(entered(LOBBY, &b.me())).await;
    a.expect(entered(LOBBY, &c.me())).await;
    b.expect(entered(LOBBY, &c.me())).await;
    c.leave(LOBBY).await;
    a.expect(departed(LOBBY, &c.me())).await;
    b.expect(departed(LOBBY, &c.me())).await;
    v1_expect(&mut v1, left(c.addr)).await;
    a.enter("r1").await;
    a.enter("r2").await;
    a.enter("alone").await;
    b.enter("r1").await;
    a.expect(entered("r1", &b.me())).await;
    c.enter("r2").await;
    a.expect(entered("r2", &c.me())).await;
    let gone = a.me();
    drop(a);
    let mut at_b = vec![b.recv().await, b.recv().await];
    at_b.sort_by_key(|m| format!("{m:?}"));
    let mut expected = vec![departed(LOBBY, &gone), departed("r1", &gone)];
    expected.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(at_b, expected);
    c.expect(departed("r2", &gone)).await;
    v1_expect(&mut v1, left(gone.addr())).await;
    // The lobby still has b and the v1 client; "alone" is gone.
    assert_eq!(
        b.list_rooms().await,
        vec![info(LOBBY, 2), info("r1", 1), info("r2", 1)]
    );
    drop((b, c, v1));
    server.stop().await;
}

/// A request naming a huge room or person is refused in a frame the
/// client accepts, and the connection goes on.
#[tokio::test]
async fn huge_names_in_requests_are_refused_within_the_limits() {
    let server = TestServer::start(config()).await;
    let [mut a, mut b]: [Client; 2] = crowd(server.addr, &["a1", "b2"])
        .await
        .try_into()
        .ok()
        .unwrap();
    let max = a.conn.max_text_len();
    let huge = "房".repeat(max / 3 - 20);
    a.join_room(&huge).await;
    assert!(matches!(
        a.recv().await,
        Message::Refused {
            code: Refusal::RoomInvalid,
            ..
        }
    ));
    a.tell(&huge, "hi").await;
    assert!(matches!(
        a.recv().await,
        Message::Refused {
            code: Refusal::NoSuchName,
            ..
        }
    ));
    a.nick(&huge).await;
    assert!(matches!(
        a.recv().await,
        Message::Refused {
            code: Refusal::NameInvalid,
            ..
        }
    ));
    a.say_in(LOBBY, "fine").await;
    b.expect(said(LOBBY, &a.me(), "fine")).await;
    // A Say of the longest text the client may send reaches the others.
    let text = "x".repeat(max - LOBBY.len() - 1);
    a.say_in(LOBBY, &text).await;
    b.expect(said(LOBBY, &a.me(), &text)).await;
    // And the longest Tell.
    let text = "y".repeat(max - b.name.len() - 1);
    a.tell(&b.name.clone(), &text).await;
    b.expect(told(&a.me(), &text)).await;
    // A version 1 client in the lobby gets the longest Say as a Relay
    // within its limit.
    let mut v1 = join(server.addr).await;
    let guest = guest_of(&mut a, &v1).await;
    assert_eq!(guest_of(&mut b, &v1).await, guest);
    for _ in 0..2 {
        assert!(matches!(v1.recv().await, Message::Joined { .. }));
    }
    let text = "z".repeat(max - LOBBY.len() - 1);
    a.say_in(LOBBY, &text).await;
    v1_expect(&mut v1, Message::relay(a.addr, &text)).await;
    drop(v1);
    drop((a, b));
    server.stop().await;
}

/// A ROOMS client that leaves with Exit departs like any other.
#[tokio::test]
async fn exit_departs_too() {
    let server = TestServer::start(config()).await;
    let [mut a, mut b]: [Client; 2] = crowd(server.addr, &["a1", "b2"])
        .await
        .try_into()
        .ok()
        .unwrap();
    b.enter("side").await;
    a.enter("side").await;
    b.expect(entered("side", &a.me())).await;
    a.send(Message::Exit).await;
    a.expect_exit().await;
    let gone = a.me();
    drop(a);
    let mut at_b = vec![b.recv().await, b.recv().await];
    at_b.sort_by_key(|m| format!("{m:?}"));
    let mut expected = vec![departed(LOBBY, &gone), departed("side", &gone)];
    expected.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(at_b, expected);
    drop(b);
    server.stop().await;
}

/// The flood limit (`rate`, `burst`) counts every Say and every Tell, even
/// with no limit on direct messages: past it, the messages within the limit
/// are delivered, in order, then the sender is cut off with the reason.
#[tokio::test]
async fn flood_control_counts_says_and_tells() {
    let server = TestServer::start(chat_server::Config {
        rate: 1,
        burst: 6,
        tell_rate: 0,
        ..config()
    })
    .await;
    for tells in [true, false] {
        let [mut a, mut b]: [Client; 2] = crowd(server.addr, &["flood", "victim"])
            .await
            .try_into()
            .ok()
            .unwrap();
        for i in 0..10 {
            let text = format!("{i}");
            a.feed(if tells {
                Message::Tell {
                    name: "victim".into(),
                    text,
                }
            } else {
                Message::Say {
                    room: LOBBY.into(),
                    text,
                }
            })
            .await;
        }
        a.flush().await;
        a.expect_error("flood: more than 1 messages/s").await;
        let gone = a.me();
        drop(a);
        let mut got = Vec::new();
        loop {
            match b.recv().await {
                Message::Told { from, text } | Message::Said { from, text, .. } => {
                    assert_eq!(from, gone);
                    got.push(text.parse::<usize>().unwrap());
                }
                msg => {
                    assert_eq!(msg, departed(LOBBY, &gone));
                    break;
                }
            }
        }
        assert!(!got.is_empty() && got.len() < 10, "{got:?}");
        assert_eq!(got, (0..got.len()).collect::<Vec<_>>());
        b.send(Message::Exit).await;
        b.expect_exit().await;
    }
    server.stop().await;
}

/// PROTOCOL.md §5.3 per room: `y` joins room R while `x` enters it, speaks
/// and leaves. Whatever the interleaving, `y` hears of `x` consistently: no
/// Said or Departed of someone it does not know to be present, no Entered
/// of someone already there, and by `z`'s marker `x` is gone.
#[tokio::test]
async fn room_presence_is_consistent_while_members_come_and_go() {
    const ROUNDS: usize = 30;
    let server = TestServer::start(chat_server::Config {
        rate: 0,
        ..config()
    })
    .await;
    let (mut z, _) = named(server.addr, "zed").await;
    z.enter("R").await;
    for round in 0..ROUNDS {
        let (mut x, _) = named(server.addr, &format!("x{round}")).await;
        let (mut y, _) = named(server.addr, &format!("y{round}")).await;
        x.expect(entered(LOBBY, &y.me())).await;
        let arrive = async {
            y.join_room("R").await;
            y.roster("R").await
        };
        let speak_and_go = async {
            x.join_room("R").await;
            x.roster("R").await;
            x.say_in("R", "x was here").await;
            x.part("R").await;
            let gone = departed("R", &x.me());
            loop {
                match x.recv().await {
                    msg if msg == gone => break,
                    Message::Entered { room, .. } if room == "R" => {}
                    other => panic!("round {round}: x got {other:?}"),
                }
            }
        };
        let (roster, ()) = tokio::join!(arrive, speak_and_go);
        assert_eq!(roster.last(), Some(&y.me()));
        let mut present: Vec<Member> = roster;
        z.say_in("R", &format!("marker {round}")).await;
        loop {
            match y.recv().await {
                Message::Entered { room, member } if room == "R" => {
                    assert!(!present.contains(&member), "round {round}: Entered twice");
                    present.push(member);
                }
                Message::Departed { room, member } if room == "R" => {
                    assert!(
                        present.contains(&member),
                        "round {round}: Departed of a stranger"
                    );
                    present.retain(|m| *m != member);
                }
                Message::Said { room, from, text } if room == "R" => {
                    assert!(present.contains(&from), "round {round}: Said of a stranger");
                    if text == format!("marker {round}") {
                        break;
                    }
                }
                // Earlier rounds' clients leaving the lobby.
                Message::Departed { room, .. } if room == LOBBY => {}
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(present, vec![z.me(), y.me()], "round {round}");
        y.leave("R").await;
        drop((x, y));
    }
    drop(z);
    server.stop().await;
}

/// A client that pipelines far more requests than its outbox holds
/// (5,000 `Who`s in one write, past the depth of 1,024) and reads the
/// answers promptly gets every one: the server stops taking its requests
/// while its own answers back up, rather than evict it as a slow consumer
/// (it did: every request in the read buffer was answered before any
/// answer was written).
#[tokio::test]
async fn pipelined_requests_are_answered_not_evicted() {
    const N: usize = 5_000;
    let server = TestServer::start(chat_server::Config {
        rate: 0,
        ..config()
    })
    .await;
    let (mut c, _) = named(server.addr, "piper").await;
    for _ in 0..N {
        c.feed(Message::Who { room: LOBBY.into() }).await;
    }
    c.flush().await;
    let me = c.me();
    for i in 0..N {
        let roster = c.roster(LOBBY).await;
        assert_eq!(roster, std::slice::from_ref(&me), "answer {i}");
    }
    // Still served afterwards.
    assert_eq!(c.list_rooms().await, [info(LOBBY, 1)]);
    drop(c);
    server.stop().await;
}
