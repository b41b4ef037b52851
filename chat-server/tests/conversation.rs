//! The seed's behaviour over real loopback TCP: relays to every other client,
//! joins and leaves, exits, dropped clients, graceful shutdown.

mod common;

use chat_proto::Message;
use common::{Client, T, TestServer, config, connect, join, joined, left};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Sends `text` from `clients[from]` and checks that every other client
/// receives exactly that relay next. Waiting for delivery before the next
/// line fixes a global order, as in the seed's transcript.
async fn line(clients: &mut [Client], from: usize, text: &str) {
    let sender = clients[from].addr;
    clients[from].say(text).await;
    for (i, client) in clients.iter_mut().enumerate() {
        if i != from {
            assert_eq!(client.recv().await, Message::relay(sender, text));
        }
    }
}

#[tokio::test]
async fn seed_conversation() {
    let server = TestServer::start(config()).await;
    // Clients 1, 2, 3 of the seed's report (ports 3075, 3076, 3083 there).
    let mut c = three(&server).await;

    line(&mut c, 2, "hello I am jjj").await;
    line(&mut c, 0, "hello!!").await;
    line(&mut c, 1, "where r u? I think u r all Chinese?").await;
    line(&mut c, 2, "是的你是对的，我是中国人").await;
    line(&mut c, 0, "okfine").await;
    line(&mut c, 0, "bye I will go").await;

    // Client 1 leaves with `exit;`: acknowledged, then closed; nothing of
    // its own ever came back to it.
    c[0].send(Message::Exit).await;
    c[0].expect_exit().await;
    let l1 = left(c[0].addr);
    assert_eq!(c[1].recv().await, l1);
    assert_eq!(c[2].recv().await, l1);

    let (from, text) = (c[2].addr, "bye");
    c[2].say(text).await;
    assert_eq!(c[1].recv().await, Message::relay(from, text));
    c[2].send(Message::Exit).await;
    c[2].expect_exit().await;
    assert_eq!(c[1].recv().await, left(c[2].addr));
    c[1].send(Message::Exit).await;
    c[1].expect_exit().await;
    drop(c);
    server.stop().await;
}

/// Three clients joined one after another, each join notice consumed: the
/// earlier ones hear of each newcomer, and each newcomer first hears of
/// everyone already there.
async fn three(server: &TestServer) -> Vec<Client> {
    let mut c = vec![join(server.addr).await];
    c.push(join(server.addr).await);
    let j = joined(c[1].addr);
    assert_eq!(c[0].recv().await, j);
    assert_eq!(c[1].recv().await, joined(c[0].addr));
    c.push(join(server.addr).await);
    let j = joined(c[2].addr);
    assert_eq!(c[0].recv().await, j);
    assert_eq!(c[1].recv().await, j);
    let mut roster = vec![c[2].recv().await, c[2].recv().await];
    roster.sort_by_key(|m| format!("{m:?}"));
    let mut expected = vec![joined(c[0].addr), joined(c[1].addr)];
    expected.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(roster, expected);
    c
}

#[tokio::test]
async fn abrupt_disconnect_mid_conversation() {
    let server = TestServer::start(config()).await;
    let mut c = three(&server).await;
    line(&mut c, 0, "before").await;
    // Client 2 vanishes without a word (its socket is simply dropped).
    let gone = c.remove(1);
    let gone_left = left(gone.addr);
    drop(gone);
    for client in &mut c {
        assert_eq!(client.recv().await, gone_left);
    }
    line(&mut c, 1, "after 你好").await;
    line(&mut c, 0, "still fine").await;
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_says_exit_to_everyone() {
    let mut server = TestServer::start(config()).await;
    let mut a = join(server.addr).await;
    let mut b = join(server.addr).await;
    assert_eq!(a.recv().await, joined(b.addr));
    assert_eq!(b.recv().await, joined(a.addr));
    // A client still in its handshake is told too: with an `Error`, the
    // only thing it may receive besides `Welcome` (it used to get `Exit`).
    let mut c = connect(server.addr).await;
    b.say("last words").await;
    a.expect_relay(b.addr, "last words").await;

    let addr = server.addr;
    server.signal();
    a.expect_exit().await;
    b.expect_exit().await;
    c.expect_error("server shutting down").await;
    drop((a, b, c));
    server.stop().await;
    // No longer accepting.
    let refused = timeout(T, TcpStream::connect(addr)).await.expect("in time");
    assert!(refused.is_err(), "connect after shutdown should fail");
}

#[tokio::test]
async fn shutdown_flushes_what_is_queued() {
    let mut server = TestServer::start(config()).await;
    let mut a = join(server.addr).await;
    let mut b = join(server.addr).await;
    assert_eq!(a.recv().await, joined(b.addr));
    assert_eq!(b.recv().await, joined(a.addr));
    // b sends a burst and waits for the Pong behind it: every Send before
    // the Ping has been read and relayed into a's outbox by then.
    for i in 0..200 {
        b.say(&format!("queued {i}")).await;
    }
    b.send(Message::Ping { nonce: 7 }).await;
    assert_eq!(b.recv().await, Message::Pong { nonce: 7 });
    server.signal();
    for i in 0..200 {
        a.expect_relay(b.addr, &format!("queued {i}")).await;
    }
    a.expect_exit().await;
    b.expect_exit().await;
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn ipv6_loopback() {
    let server = TestServer::start_on("[::1]:0", config()).await;
    assert!(server.addr.is_ipv6());
    let mut a = join(server.addr).await;
    let mut b = join(server.addr).await;
    assert_eq!(a.recv().await, joined(b.addr));
    a.say("over IPv6").await;
    b.expect_relay(a.addr, "over IPv6").await;
    assert!(a.addr.is_ipv6());
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn newer_client_gets_our_version_and_no_unknown_features() {
    let server = TestServer::start(config()).await;
    // A client of a later version, asking for every capability there is.
    let mut newer = chat_proto::ClientConfig::default();
    newer.version = 9;
    newer.features = u64::MAX;
    let mut a = common::connect_with(server.addr, newer).await;
    a.hello().await;
    match a.recv().await {
        Message::Welcome {
            version,
            features,
            max_frame,
            ip,
            port,
        } => {
            assert_eq!(version, chat_proto::VERSION);
            assert_eq!(features, chat_proto::features::ALL);
            assert_eq!(max_frame as usize, config().client_max_frame());
            assert_eq!((ip, port), (a.addr.ip(), a.addr.port()));
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    a.send(Message::Ping { nonce: 42 }).await;
    assert_eq!(a.recv().await, Message::Pong { nonce: 42 });
    drop(a);
    server.stop().await;
}

#[tokio::test]
async fn largest_allowed_message_is_relayed_and_received() {
    let server = TestServer::start(config()).await;
    let mut a = join(server.addr).await;
    let mut b = join(server.addr).await;
    assert_eq!(a.recv().await, joined(b.addr));
    // Payload = tag (1) + varint length (3) + text: exactly the announced max.
    let text = "字".repeat((config().client_max_frame() - 4) / 3);
    a.say(&text).await;
    b.expect_relay(a.addr, &text).await;
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn without_presence_nobody_hears_of_joins_or_leaves() {
    let server = TestServer::start(chat_server::Config {
        presence: false,
        ..config()
    })
    .await;
    let mut a = join(server.addr).await;
    let mut b = join(server.addr).await;
    let mut c = join(server.addr).await;
    // The first frame `a` sees after b and c joined is b's message, not a join.
    b.say("hi").await;
    assert_eq!(a.recv().await, Message::relay(b.addr, "hi"));
    assert_eq!(c.recv().await, Message::relay(b.addr, "hi"));
    // c leaves; a and b hear nothing of it, only the next message.
    c.send(Message::Exit).await;
    c.expect_exit().await;
    a.say("still here").await;
    assert_eq!(b.recv().await, Message::relay(a.addr, "still here"));
    drop((a, b, c));
    server.stop().await;
}
