//! The golden vectors in `golden.json` freeze the wire format: every message
//! must encode to exactly its bytes, and those bytes must decode to exactly it.
//! A failure here means the wire format changed; that is only ever deliberate.

use std::collections::BTreeSet;

use bytes::BytesMut;
use chat_proto::{ChatCodec, Message};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    name: String,
    message: Message,
    hex: String,
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str(include_str!("golden.json")).expect("golden.json parses")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

#[test]
fn messages_encode_to_golden_bytes() {
    let codec = ChatCodec::new();
    for v in vectors() {
        let mut buf = BytesMut::new();
        codec.encode(&v.message, &mut buf).unwrap();
        assert_eq!(&buf[..], &unhex(&v.hex)[..], "encoding of {}", v.name);
        let frame = codec.frame(&v.message).unwrap();
        assert_eq!(frame.as_ref(), &unhex(&v.hex)[..], "frame of {}", v.name);
    }
}

#[test]
fn golden_bytes_decode_to_messages() {
    let codec = ChatCodec::new();
    for v in vectors() {
        let mut buf = BytesMut::from(&unhex(&v.hex)[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(v.message),
            "decoding of {}",
            v.name
        );
        assert!(buf.is_empty(), "{} left bytes behind", v.name);
    }
}

#[test]
fn golden_bytes_decode_through_blocking_reader() {
    let codec = ChatCodec::new();
    let vs = vectors();
    let stream: Vec<u8> = vs.iter().flat_map(|v| unhex(&v.hex)).collect();
    let mut rx = &stream[..];
    for v in vs {
        let got = chat_proto::blocking::read_message(&mut rx, &codec).unwrap();
        assert_eq!(got, Some(v.message), "blocking read of {}", v.name);
    }
    assert!(
        chat_proto::blocking::read_message(&mut rx, &codec)
            .unwrap()
            .is_none()
    );
}

#[test]
fn every_variant_has_a_vector() {
    let names: BTreeSet<&str> = vectors().iter().map(|v| v.message.name()).collect();
    let all = [
        "Send", "Exit", "Relay", "Hello", "Welcome", "Error", "Joined", "Left", "Ping", "Pong",
    ];
    assert_eq!(names, all.into_iter().collect::<BTreeSet<_>>());
}

#[test]
fn vectors_cover_chinese_text_and_ipv6_relay() {
    let vs = vectors();
    assert!(vs.iter().any(|v| matches!(&v.message,
        Message::Send { text } if text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)))));
    assert!(
        vs.iter()
            .any(|v| matches!(&v.message, Message::Relay { ip, .. } if ip.is_ipv6()))
    );
}
