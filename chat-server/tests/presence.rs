//! Joins and leaves as PROTOCOL.md §5.3 promises them: a newcomer hears of
//! everyone already there before any of their messages, and every client
//! that heard of a peer hears of its leaving.

mod common;

use chat_proto::Message;
use common::{Client, TestServer, config, connect, join, joined, left};

/// Two clients that have heard of each other.
async fn pair(server: &TestServer) -> (Client, Client) {
    let mut a = join(server.addr).await;
    let mut b = join(server.addr).await;
    assert_eq!(a.recv().await, joined(b.addr));
    assert_eq!(b.recv().await, joined(a.addr));
    (a, b)
}

/// A client arriving later used to learn nothing of who was there: its
/// first frame from the others was a relay from a peer it had never heard of.
#[tokio::test]
async fn a_newcomer_hears_of_everyone_before_their_messages() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server).await;
    let mut c = join(server.addr).await;
    b.say("welcome, c").await;
    let mut first = vec![c.recv().await, c.recv().await];
    first.sort_by_key(|m| format!("{m:?}"));
    let mut roster = vec![joined(a.addr), joined(b.addr)];
    roster.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(first, roster, "the roster comes first");
    assert_eq!(c.recv().await, Message::relay(b.addr, "welcome, c"));
    // The others hear of c before b's message (b sent it after c's Welcome).
    assert_eq!(a.recv().await, joined(c.addr));
    assert_eq!(a.recv().await, Message::relay(b.addr, "welcome, c"));
    assert_eq!(b.recv().await, joined(c.addr));
    drop((a, b, c));
    server.stop().await;
}

/// The lost `Left`: a client joining while a peer leaves could receive the
/// peer's relay but never its `Left`. Each round, `x` speaks and exits while
/// `y` arrives; then `z`'s marker (which always follows pending notices)
/// tells `y` that everything about `x` has been said.
#[tokio::test]
async fn whoever_heard_of_a_peer_hears_of_its_leaving() {
    const ROUNDS: usize = 40;
    let server = TestServer::start(config()).await;
    let mut z = join(server.addr).await;
    for round in 0..ROUNDS {
        let mut x = join(server.addr).await;
        let mut y = connect(server.addr).await;
        let arrive = async {
            y.hello().await;
            y.welcomed().await;
        };
        let speak_and_go = async {
            x.say(&format!("x {round}")).await;
            x.send(Message::Exit).await;
            x.expect_exit().await;
        };
        tokio::join!(arrive, speak_and_go);
        z.say(&format!("marker {round}")).await;
        let said = Message::relay(x.addr, format!("x {round}"));
        let marker = Message::relay(z.addr, format!("marker {round}"));
        let mut heard_of_x = false;
        loop {
            let msg = y.recv().await;
            if msg == joined(x.addr) || msg == said {
                heard_of_x = true;
            } else if msg == left(x.addr) {
                assert!(heard_of_x, "round {round}: Left of a peer never announced");
                heard_of_x = false;
            } else if msg == marker {
                break;
            } else {
                assert_eq!(msg, joined(z.addr), "round {round}");
            }
        }
        assert!(
            !heard_of_x,
            "round {round}: y heard of x but never of its leaving"
        );
        y.send(Message::Exit).await;
        y.expect_exit().await;
        // z heard x and y come and go: take all of it before the next round.
        z_drain(&mut z, &x, &y, round).await;
    }
    drop(z);
    server.stop().await;
}

/// Reads `z`'s presence notices until `y`'s `Left`.
async fn z_drain(z: &mut Client, x: &Client, y: &Client, round: usize) {
    loop {
        match z.recv().await {
            msg if msg == left(y.addr) => return,
            Message::Joined { .. } | Message::Left { .. } => {}
            Message::Relay { ip, port, text } => {
                assert_eq!((ip, port), (x.addr.ip(), x.addr.port()), "round {round}");
                assert_eq!(text, format!("x {round}"));
            }
            other => panic!("round {round}: z got {other:?}"),
        }
    }
}
