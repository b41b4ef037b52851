//! A frame once begun must complete within `frame_timeout`: a client that
//! trickles a frame one byte at a time cannot hold its slot for ever.

mod common;

use std::time::Duration;

use chat_proto::Message;
use common::{Bystanders, TestServer, config, join};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

#[tokio::test]
async fn a_trickled_frame_is_cut_off() {
    let server = TestServer::start(chat_server::Config {
        frame_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    let mut by = Bystanders::join(server.addr).await;
    let mut slow = join(server.addr).await;
    // A Send of 1,000 bytes of text (payload 1,004: tag, `fb e8 03`, text):
    // the header and the start arrive, then one byte every 50 ms. The
    // client is never silent for long, and used to be served for as long
    // as it went on (here 5 s, ten times the frame timeout).
    slow.write_raw(&[0, 0, 0x03, 0xec, 0, 0xfb, 0xe8, 0x03])
        .await;
    let mut verdict = None;
    for _ in 0..100 {
        let _ = slow.stream.write_all(b"x").await;
        match timeout(Duration::from_millis(50), slow.next()).await {
            Err(_) => {}
            Ok(Some(Message::Joined { .. } | Message::Left { .. })) => {}
            Ok(other) => {
                verdict = other;
                break;
            }
        }
    }
    assert_eq!(
        verdict,
        Some(Message::Error {
            reason: "frame timeout".into()
        })
    );
    slow.expect_eof().await;
    by.still_talk("after the trickle").await;
    drop((by, slow));
    server.stop().await;
}

/// Frames that keep completing are not cut off, however long the stream
/// of them lasts: the deadline is per frame.
#[tokio::test]
async fn whole_frames_in_pieces_are_fine() {
    let server = TestServer::start(chat_server::Config {
        frame_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    let mut a = join(server.addr).await;
    let mut b = join(server.addr).await;
    a.expect_joined(b.addr).await;
    // Each frame arrives in two halves 100 ms apart; twenty frames take
    // twice the frame timeout in all.
    for i in 0..20u8 {
        let frame = chat_proto::ChatCodec::new()
            .frame(&Message::Send {
                text: format!("piece {i}"),
            })
            .unwrap();
        let (head, tail) = frame.as_bytes().split_at(5);
        a.write_raw(head).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.write_raw(tail).await;
        b.expect_relay(a.addr, &format!("piece {i}")).await;
    }
    drop((a, b));
    server.stop().await;
}
