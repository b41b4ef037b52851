//! The golden vectors in `golden.json` freeze the wire format: every message
//! must encode to exactly its bytes, and those bytes must decode to exactly it.
//! A failure here means the wire format changed; that is only ever deliberate.

use std::collections::BTreeSet;

use bytes::BytesMut;
use chat_proto::{ChatCodec, Conversation, Member, Message, Refusal, features};
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
        "Send",
        "Exit",
        "Relay",
        "Hello",
        "Welcome",
        "Error",
        "Joined",
        "Left",
        "Ping",
        "Pong",
        "Nick",
        "Join",
        "Part",
        "Say",
        "Tell",
        "Who",
        "ListRooms",
        "Named",
        "Said",
        "Told",
        "Entered",
        "Departed",
        "Renamed",
        "Roster",
        "Rooms",
        "Refused",
        "Posted",
        "Direct",
        "Stored",
        "Unstored",
        "Resume",
        "Recent",
        "Page",
        "Register",
        "Login",
        "LoginToken",
        "LoggedIn",
        "Logout",
    ];
    assert_eq!(names, all.into_iter().collect::<BTreeSet<_>>());
}

/// Version 1's vectors come first and stay as they were; the 20 of the
/// ROOMS capability follow (tags 10..=25 as the first payload byte), then
/// the 11 of HISTORY (tags 26..=32), then those of AUTH (tags 33..=37).
#[test]
fn version_1_vectors_come_first_then_rooms_then_history_then_auth() {
    let vs = vectors();
    let v1 = vs
        .iter()
        .take_while(|v| v.message.feature() == features::NONE);
    assert_eq!(v1.count(), 14, "the 14 frozen vectors of version 1");
    let groups = [
        (&vs[14..34], features::ROOMS, 10..=25),
        (&vs[34..45], features::HISTORY, 26..=32),
        (&vs[45..], features::AUTH, 33..=37),
    ];
    for (group, feature, tags) in groups {
        for v in group {
            assert_eq!(v.message.feature(), feature, "{}", v.name);
            let tag = unhex(&v.hex)[4];
            assert!(tags.contains(&tag), "{}: tag {tag}", v.name);
        }
    }
}

/// The vectors of earlier capabilities, frozen: a digest of their names and
/// bytes in order, so that no edit to golden.json can change one unnoticed.
#[test]
fn the_vectors_before_history_and_before_auth_are_unchanged() {
    let vs = vectors();
    for (n, frozen, before) in [(34, FROZEN, "HISTORY"), (45, FROZEN_AUTH, "AUTH")] {
        let digest = digest(&vs[..n]);
        assert_eq!(
            digest, frozen,
            "a vector before {before} changed: {digest:#x}"
        );
    }
}

/// FNV-1a, 64 bits, of the vectors' names and bytes: enough to notice an
/// edit, no dependency.
fn digest(vs: &[Vector]) -> u64 {
    let old: String = vs
        .iter()
        .map(|v| format!("{} {}\n", v.name, v.hex))
        .collect();
    old.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The digest of the 34 vectors as committed before HISTORY.
const FROZEN: u64 = 0x2b33_009d_078f_842e;
/// The digest of the 45 vectors as committed before AUTH.
const FROZEN_AUTH: u64 = 0xe33a_6b64_3c6c_bcdf;

#[test]
fn history_vectors_cover_both_conversations_addresses_and_edge_values() {
    let vs = vectors();
    let has = |f: &dyn Fn(&Message) -> bool| vs.iter().any(|v| f(&v.message));
    assert!(has(&|m| matches!(m, Message::Posted { room, entry }
        if chinese(room) && chinese(&entry.from.name) && chinese(&entry.text) && entry.from.ip.is_ipv4())));
    assert!(has(&|m| matches!(m, Message::Posted { entry, .. }
        if entry.id > u64::MAX - 2 && entry.from.ip.is_ipv6())));
    assert!(has(&|m| matches!(m, Message::Direct { entry }
        if entry.prev == 0 && entry.from.ip.is_ipv6() && chinese(&entry.text))));
    assert!(has(&|m| matches!(m, Message::Stored { .. })));
    assert!(has(
        &|m| matches!(m, Message::Unstored { code: Refusal::Unavailable, detail, .. } if chinese(detail))
    ));
    assert!(has(&|m| matches!(
        m,
        Message::Unstored {
            code: Refusal::Other(999),
            ..
        }
    )));
    assert!(has(
        &|m| matches!(m, Message::Resume { conversation: Conversation::Room(r), .. } if chinese(r))
    ));
    assert!(has(
        &|m| matches!(m, Message::Resume { conversation: Conversation::Direct(n), .. } if chinese(n))
    ));
    assert!(has(&|m| matches!(m, Message::Recent { .. })));
    assert!(has(
        &|m| matches!(m, Message::Page { entries, missing: false, more: false, .. } if entries.is_empty())
    ));
    assert!(has(
        &|m| matches!(m, Message::Page { entries, missing: true, more: true, .. }
        if entries.len() == 2 && entries[0].from.ip.is_ipv4() && entries[1].from.ip.is_ipv6())
    ));
}

#[test]
fn auth_vectors_cover_chinese_names_tokens_and_edge_values() {
    let vs = vectors();
    let has = |f: &dyn Fn(&Message) -> bool| vs.iter().any(|v| f(&v.message));
    assert!(has(&|m| matches!(m, Message::Register { name, password }
        if chinese(name) && chinese(password.expose()))));
    assert!(has(&|m| matches!(m, Message::Login { .. })));
    assert!(has(
        &|m| matches!(m, Message::LoginToken { token } if !token.is_empty())
    ));
    assert!(has(&|m| matches!(m, Message::LoggedIn { name, token, .. }
        if chinese(name) && !token.is_empty())));
    assert!(has(
        &|m| matches!(m, Message::LoggedIn { token, expires: u64::MAX, .. }
        if token.is_empty())
    ));
    assert!(has(&|m| matches!(m, Message::Logout)));
}

fn chinese(s: &str) -> bool {
    s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

#[test]
fn rooms_vectors_cover_chinese_both_address_kinds_and_unknown_codes() {
    let vs = vectors();
    let has = |f: &dyn Fn(&Message) -> bool| vs.iter().any(|v| f(&v.message));
    assert!(has(
        &|m| matches!(m, Message::Nick { name } if chinese(name))
    ));
    assert!(has(&|m| matches!(m, Message::Said { room, from, text }
        if chinese(room) && chinese(&from.name) && chinese(text))));
    assert!(has(
        &|m| matches!(m, Message::Said { room, .. } if room == "lobby")
    ));
    assert!(has(
        &|m| matches!(m, Message::Told { from, text } if from.ip.is_ipv6() && chinese(text))
    ));
    let member_ip = |m: &Message| -> Option<Member> {
        match m {
            Message::Entered { member, .. } | Message::Departed { member, .. } => {
                Some(member.clone())
            }
            _ => None,
        }
    };
    assert!(has(&|m| member_ip(m).is_some_and(|x| x.ip.is_ipv4())));
    assert!(has(&|m| member_ip(m).is_some_and(|x| x.ip.is_ipv6())));
    assert!(has(
        &|m| matches!(m, Message::Roster { members, more: true, .. } if members.len() == 2)
    ));
    assert!(has(
        &|m| matches!(m, Message::Roster { members, more: false, .. } if members.is_empty())
    ));
    assert!(has(
        &|m| matches!(m, Message::Rooms { rooms, .. } if rooms.len() == 2)
    ));
    assert!(has(&|m| matches!(
        m,
        Message::Refused {
            code: Refusal::NameTaken,
            ..
        }
    )));
    assert!(has(&|m| matches!(
        m,
        Message::Refused {
            code: Refusal::Other(999),
            ..
        }
    )));
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

/// PROTOCOL.md section 4 shows every vector, name and bytes, as here.
#[test]
fn every_vector_is_shown_in_protocol_md() {
    let spec = include_str!("../PROTOCOL.md");
    for v in vectors() {
        let row = format!("| `{}` |", v.name);
        let bytes = format!("`{}` `{}` |", &v.hex[..8], &v.hex[8..]);
        let line = spec
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("{} is not in PROTOCOL.md section 4", v.name));
        assert!(line.ends_with(&bytes), "{}: {line}", v.name);
    }
}
