//! Every kind of bad input gets a clear `Error`, a close, and leaves the
//! other clients untouched.

mod common;

use std::time::Duration;

use chat_proto::Message;
use common::{Bystanders, TestServer, config, connect, join};
use tokio::io::AsyncWriteExt;

/// Connects a raw client, writes `bytes`, and expects `reason` then EOF;
/// then checks that two bystanders still talk.
async fn refused_before_hello(bytes: &[u8], reason: &str) {
    let server = TestServer::start(config()).await;
    let mut by = Bystanders::join(server.addr).await;
    let mut bad = connect(server.addr).await;
    bad.write_raw(bytes).await;
    bad.expect_error(reason).await;
    by.still_talk(reason).await;
    drop((by, bad));
    server.stop().await;
}

#[tokio::test]
async fn garbage_bytes() {
    refused_before_hello(
        b"\x13\x37\xde\xad\xbe\xef garbage",
        "invalid frame: frame of 322428589 bytes exceeds the 1024-byte limit",
    )
    .await;
}

#[tokio::test]
async fn http_request() {
    refused_before_hello(
        b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.0\r\n\r\n",
        "this is a chat server, not an HTTP server",
    )
    .await;
}

#[tokio::test]
async fn four_gib_length_prefix() {
    refused_before_hello(
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        "invalid frame: frame of 4294967295 bytes exceeds the 1024-byte limit",
    )
    .await;
}

#[tokio::test]
async fn undecodable_payload() {
    refused_before_hello(
        &[0, 0, 0, 2, 99, 0],
        "invalid frame: unknown message variant 99",
    )
    .await;
}

#[tokio::test]
async fn empty_frame() {
    refused_before_hello(
        &[0, 0, 0, 0],
        "invalid frame: empty frame (length prefix 0)",
    )
    .await;
}

#[tokio::test]
async fn wrong_protocol_version() {
    let server = TestServer::start(config()).await;
    let mut by = Bystanders::join(server.addr).await;
    let mut bad = connect(server.addr).await;
    bad.send_raw(Message::Hello {
        version: 0,
        features: 0,
    })
    .await;
    bad.expect_error("unsupported protocol version 0 (this end speaks 1..=1)")
        .await;
    by.still_talk("version").await;
    drop((by, bad));
    server.stop().await;
}

#[tokio::test]
async fn message_before_hello() {
    let server = TestServer::start(config()).await;
    let mut by = Bystanders::join(server.addr).await;
    let mut bad = connect(server.addr).await;
    bad.send_raw(Message::Send {
        text: "hi, no hello".into(),
    })
    .await;
    bad.expect_error("expected Hello first, got Send").await;
    by.still_talk("no hello").await;
    drop((by, bad));
    server.stop().await;
}

#[tokio::test]
async fn client_sends_relay() {
    let server = TestServer::start(config()).await;
    let mut by = Bystanders::join(server.addr).await;
    let mut bad = join(server.addr).await;
    // Once the others know of it, they must hear of its leaving.
    by.a.expect_joined(bad.addr).await;
    by.b.expect_joined(bad.addr).await;
    let forged = Message::relay("10.9.8.7:6543".parse().unwrap(), "forged");
    bad.send_raw(forged).await;
    bad.expect_error("protocol violation: clients may not send Relay")
        .await;
    // The forgery reached no one: the next thing after the join/leave
    // notices is the bystanders' own traffic.
    by.a.expect_left(bad.addr).await;
    by.b.expect_left(bad.addr).await;
    by.still_talk("relay").await;
    drop((by, bad));
    server.stop().await;
}

#[tokio::test]
async fn client_sends_joined() {
    let server = TestServer::start(config()).await;
    let mut bad = join(server.addr).await;
    bad.send_raw(Message::Joined {
        ip: "127.0.0.1".parse().unwrap(),
        port: 1,
    })
    .await;
    bad.expect_error("protocol violation: clients may not send Joined")
        .await;
    drop(bad);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_after_handshake() {
    let server = TestServer::start(config()).await;
    let mut by = Bystanders::join(server.addr).await;
    let mut bad = join(server.addr).await;
    by.a.expect_joined(bad.addr).await;
    by.b.expect_joined(bad.addr).await;
    // Send (tag 0), text of 2 bytes that are not UTF-8.
    bad.write_raw(&[0, 0, 0, 4, 0, 2, 0xff, 0xfe]).await;
    bad.expect_error("invalid frame: text is not valid UTF-8 (valid up to byte 0)")
        .await;
    by.a.expect_left(bad.addr).await;
    by.b.expect_left(bad.addr).await;
    by.still_talk("utf8").await;
    drop((by, bad));
    server.stop().await;
}

#[tokio::test]
async fn frame_cut_by_half_close() {
    let server = TestServer::start(config()).await;
    let mut by = Bystanders::join(server.addr).await;
    let mut bad = join(server.addr).await;
    by.a.expect_joined(bad.addr).await;
    // A Send frame announcing 10 bytes, of which 3 arrive; then the client
    // shuts down its sending side (it can still read the verdict).
    bad.write_raw(&[0, 0, 0, 10, 0, 8, b'a']).await;
    bad.stream.shutdown().await.unwrap();
    bad.expect_error("invalid frame: connection closed mid-frame (7 of 14 bytes received)")
        .await;
    by.a.expect_left(bad.addr).await;
    by.still_talk("cut").await;
    drop((by, bad));
    server.stop().await;
}

#[tokio::test]
async fn frame_cut_by_disconnect() {
    let server = TestServer::start(config()).await;
    let mut by = Bystanders::join(server.addr).await;
    let mut bad = join(server.addr).await;
    by.a.expect_joined(bad.addr).await;
    by.b.expect_joined(bad.addr).await;
    bad.write_raw(&[0, 0, 0, 10, 0, 8, b'a']).await;
    let addr = bad.addr;
    drop(bad);
    by.a.expect_left(addr).await;
    by.b.expect_left(addr).await;
    by.still_talk("dropped").await;
    drop(by);
    server.stop().await;
}

#[tokio::test]
async fn silent_client_times_out() {
    let server = TestServer::start(chat_server::Config {
        handshake_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut by = Bystanders::join(server.addr).await;
    let mut silent = connect(server.addr).await;
    silent.expect_error("handshake timeout").await;
    by.still_talk("silent").await;
    drop((by, silent));
    server.stop().await;
}
