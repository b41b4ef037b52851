//! Limits by client address, over real sockets on 127.0.0.1: the cap on
//! connections per IP (loopback counts too), and protected mode's default,
//! under which loopback clients are served. (Protected mode turning away a
//! remote client is tried in `admission.rs`'s unit tests: tests use no
//! address but loopback.)

mod common;

use chat_proto::Message;
use chat_server::Config;
use common::{T, TestServer, config, connect, join};
use tokio::time::{Instant, timeout};

#[tokio::test]
async fn connections_beyond_the_cap_per_ip_are_told_and_closed() {
    let server = TestServer::start(Config {
        max_per_ip: 2,
        ..config()
    })
    .await;
    let first = join(server.addr).await;
    let mut second = join(server.addr).await;
    // The third is refused before any handshake, whatever it sends.
    let mut third = connect(server.addr).await;
    third.hello().await;
    third
        .expect_error("too many connections from 127.0.0.1")
        .await;
    drop(third);
    // The two admitted ones are unaffected.
    second.say("still here").await;
    // A closed connection gives its place back. The server counts it
    // released once its session ends, just after the client sees the
    // end: retry until admitted, each try a full round trip.
    drop(first);
    let deadline = Instant::now() + T;
    let again = loop {
        let mut client = connect(server.addr).await;
        client.hello().await;
        match timeout(T, client.recv_raw()).await.expect("an answer") {
            Message::Welcome { .. } => break client,
            Message::Error { reason } => {
                assert_eq!(reason, "too many connections from 127.0.0.1");
                assert!(Instant::now() < deadline, "never released");
                tokio::task::yield_now().await;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    drop((second, again));
    server.stop().await;
}

#[tokio::test]
async fn the_default_serves_loopback_clients() {
    // Protected mode is the default, and loopback clients are local.
    assert!(!chat_server::Config::default().public);
    let server = TestServer::start(config()).await;
    let mut a = join(server.addr).await;
    let b = join(server.addr).await;
    a.say("hi").await;
    drop((a, b));
    server.stop().await;
}
