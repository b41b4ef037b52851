//! Flood control counts every message, `Ping`s included, although the
//! protocol machine answers those by itself.

mod common;

use chat_proto::Message;
use common::{Bystanders, TestServer, config, join};

#[tokio::test]
async fn a_ping_flood_is_cut_off() {
    let server = TestServer::start(chat_server::Config {
        rate: 20,
        burst: 5,
        ..config()
    })
    .await;
    let mut by = Bystanders::join(server.addr).await;
    let mut flooder = join(server.addr).await;
    for nonce in 0..50 {
        flooder.feed(Message::Ping { nonce }).await;
    }
    flooder.flush().await;
    flooder.expect_error("flood: more than 20 messages/s").await;
    by.still_talk("after the pings").await;
    drop((by, flooder));
    server.stop().await;
}
