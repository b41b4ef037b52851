//! `Roster` and `Rooms` answers, cut into frames that fit the server's
//! frame limit `L`: every frame but the last of an answer has `more` set.
//!
//! Sizes are computed from the wire format (PROTOCOL.md section 3) rather
//! than by trial encoding, so an answer of N entries costs one pass. An
//! entry too large to share a frame with anything (possible only with a
//! very small `L`) goes alone, in a frame still within the codec's limit
//! for rooms clients (`L + ROOMS_OVERHEAD - RELAY_OVERHEAD`).

use std::ops::Range;

use bytes::BytesMut;
use chat_proto::{ChatCodec, Member, Message, RoomInfo};

/// Bytes of a varint encoding `n`.
fn varint(n: usize) -> usize {
    match n {
        0..=250 => 1,
        251..=65_535 => 3,
        65_536..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn string(s: &str) -> usize {
    varint(s.len()) + s.len()
}

/// Bytes of one `Member` on the wire.
fn member(m: &Member) -> usize {
    let ip = if m.ip.is_ipv4() { 4 } else { 16 };
    string(&m.name) + 1 + ip + varint(usize::from(m.port))
}

/// Bytes of one `RoomInfo` on the wire.
fn room_info(r: &RoomInfo) -> usize {
    string(&r.name) + varint(r.members as usize)
}

/// Cuts `items` into frame-sized ranges: `base` bytes per frame, `limit`
/// at most, sizes from `size`, at least one item a range. An empty list is
/// one empty range.
fn split<T>(
    items: &[T],
    base: usize,
    limit: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Range<usize>> {
    let room = limit.saturating_sub(base);
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let size = size(item);
        if i > start && used + size > room {
            out.push(start..i);
            (start, used) = (i, 0);
        }
        used += size;
    }
    out.push(start..items.len());
    out
}

/// Appends `Roster { room, members }` to `buf` in frames of at most
/// `limit` bytes; the last frame's `more` is `more` (so that a caller can
/// append the rest of the answer), the others' `true`. Nothing at all for
/// no members with `more` set.
pub(crate) fn roster(
    codec: &ChatCodec,
    limit: usize,
    room: &str,
    members: &[Member],
    more: bool,
    buf: &mut BytesMut,
) {
    if members.is_empty() && more {
        return;
    }
    // Tag, room, count (a u64 varint, 5 bytes up to 2³²), `more`.
    let base = 1 + string(room) + 5 + 1;
    let parts = split(members, base, limit, member);
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let msg = Message::Roster {
            room: room.to_owned(),
            members: members[part].to_vec(),
            more: more || i + 1 < n,
        };
        encode(codec, &msg, buf);
    }
}

/// Appends the whole `Rooms { rooms }` answer to `buf`, in frames of at
/// most `limit` bytes.
pub(crate) fn rooms(codec: &ChatCodec, limit: usize, rooms: &[RoomInfo], buf: &mut BytesMut) {
    let base = 1 + 5 + 1;
    let parts = split(rooms, base, limit, room_info);
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let msg = Message::Rooms {
            rooms: rooms[part].to_vec(),
            more: i + 1 < n,
        };
        encode(codec, &msg, buf);
    }
}

fn encode(codec: &ChatCodec, msg: &Message, buf: &mut BytesMut) {
    // Sized to fit above; the rooms codec's extra room covers a lone
    // oversized entry. Nothing else can fail.
    if let Err(e) = codec.encode(msg, buf) {
        tracing::error!("{} not sent: {e}", msg.name());
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use chat_proto::{ServerConfig, features};

    use super::*;

    fn decode_all(buf: BytesMut, codec: &ChatCodec) -> Vec<(usize, Message)> {
        let mut buf = buf;
        let mut out = Vec::new();
        while !buf.is_empty() {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            let msg = codec.decode(&mut buf).unwrap().unwrap();
            out.push((len, msg));
        }
        out
    }

    fn members(n: usize, name: &str) -> Vec<Member> {
        (0..n)
            .map(|i| {
                let addr: SocketAddr = if i % 2 == 0 {
                    SocketAddr::from(([127, 0, 0, 1], 40_000 + i as u16))
                } else {
                    SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], i as u16))
                };
                Member::new(format!("{name}{i}"), addr)
            })
            .collect()
    }

    #[test]
    fn a_long_roster_is_cut_into_frames_within_the_limit() {
        let limit = 1000;
        let server = ServerConfig::with_max_frame_len(limit).unwrap();
        let codec = server.outbound_for(features::ROOMS);
        for n in [0, 1, 7, 40, 300] {
            for name in ["m", "成员名字很长的人"] {
                let all = members(n, name);
                let mut buf = BytesMut::new();
                roster(&codec, limit, "大厅", &all, false, &mut buf);
                let frames = decode_all(buf, &codec);
                let mut got = Vec::new();
                for (i, (len, msg)) in frames.iter().enumerate() {
                    assert!(*len <= limit, "{len} > {limit}");
                    let Message::Roster {
                        room,
                        members,
                        more,
                    } = msg
                    else {
                        panic!("{msg:?}")
                    };
                    assert_eq!(room, "大厅");
                    assert_eq!(*more, i + 1 < frames.len());
                    got.extend(members.iter().cloned());
                }
                assert_eq!(got, all, "{n} members, in order");
                if n > 40 {
                    assert!(frames.len() > 1);
                    // Frames are reasonably full, not one member each.
                    assert!(frames.len() < n / 5);
                }
            }
        }
    }

    #[test]
    fn a_roster_prefix_ends_with_more_set() {
        let codec = ChatCodec::new();
        let mut buf = BytesMut::new();
        roster(&codec, 65_536, "lobby", &members(3, "a"), true, &mut buf);
        roster(&codec, 65_536, "lobby", &[], true, &mut buf);
        roster(&codec, 65_536, "lobby", &members(1, "me"), false, &mut buf);
        let frames = decode_all(buf, &codec);
        let mores: Vec<bool> = frames
            .iter()
            .map(|(_, m)| matches!(m, Message::Roster { more: true, .. }))
            .collect();
        assert_eq!(mores, [true, false]);
    }

    #[test]
    fn an_empty_answer_is_one_frame() {
        let codec = ChatCodec::new();
        let mut buf = BytesMut::new();
        roster(&codec, 65_536, "lobby", &[], false, &mut buf);
        rooms(&codec, 65_536, &[], &mut buf);
        let frames: Vec<_> = decode_all(buf, &codec).into_iter().map(|f| f.1).collect();
        assert_eq!(
            frames,
            [
                Message::Roster {
                    room: "lobby".into(),
                    members: vec![],
                    more: false
                },
                Message::Rooms {
                    rooms: vec![],
                    more: false
                }
            ]
        );
    }

    #[test]
    fn a_long_room_list_is_cut_too() {
        let limit = 200;
        let server = ServerConfig::with_max_frame_len(limit).unwrap();
        let codec = server.outbound_for(features::ROOMS);
        let all: Vec<RoomInfo> = (0..100)
            .map(|i| RoomInfo {
                name: format!("房间{i}"),
                members: i * 1000,
            })
            .collect();
        let mut buf = BytesMut::new();
        rooms(&codec, limit, &all, &mut buf);
        let frames = decode_all(buf, &codec);
        assert!(frames.len() > 5);
        let mut got = Vec::new();
        for (i, (len, msg)) in frames.iter().enumerate() {
            assert!(*len <= limit);
            let Message::Rooms { rooms, more } = msg else {
                panic!()
            };
            assert_eq!(*more, i + 1 < frames.len());
            got.extend(rooms.iter().cloned());
        }
        assert_eq!(got, all);
    }

    #[test]
    fn a_lone_entry_too_big_for_the_limit_still_goes() {
        // The smallest limit there is; a 32-character name in 4-byte
        // characters takes 129 bytes alone.
        let limit = 84;
        let server = ServerConfig::with_max_frame_len(limit).unwrap();
        let codec = server.outbound_for(features::ROOMS);
        let all = members(3, &"𝕏".repeat(31));
        let mut buf = BytesMut::new();
        roster(&codec, limit, &"𝕏".repeat(32), &all, false, &mut buf);
        let frames = decode_all(buf, &codec);
        assert_eq!(frames.len(), 3, "one member a frame");
    }
}
