//! Unit tests of the codec: every error variant, buffering edge cases, the
//! blocking helpers over memory and a loopback TCP pair, and (with the
//! `tokio-codec` feature) `Framed` over a loopback tokio TCP pair.

use std::io::{Cursor, Read, Write};
use std::net::{IpAddr, Ipv6Addr, Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use chat_proto::{
    ChatCodec, DecodeError, EncodeError, HEADER_LEN, LimitError, MAX_FRAME_LEN,
    MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN, Message, Refusal, RoomInfo, StreamError, blocking,
};

/// A frame around a hand-written payload.
fn frame(payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf
}

fn encoded(msgs: &[Message]) -> BytesMut {
    let codec = ChatCodec::new();
    let mut buf = BytesMut::new();
    for msg in msgs {
        codec.encode(msg, &mut buf).unwrap();
    }
    buf
}

fn sample() -> Vec<Message> {
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    vec![
        Message::hello(),
        Message::Welcome {
            version: 1,
            features: 0,
            max_frame: 65536,
            ip: "127.0.0.1".parse().unwrap(),
            port: 3076,
        },
        Message::Send {
            text: "hello I am jjj".into(),
        },
        Message::Send {
            text: "是的你是对的，我是中国人 👍".into(),
        },
        Message::relay("127.0.0.1:3075".parse().unwrap(), "hello!!"),
        Message::Relay {
            ip: v6,
            port: 8080,
            text: "你好".into(),
        },
        Message::Joined {
            ip: v6,
            port: 50000,
        },
        Message::Left {
            ip: "127.0.0.1".parse().unwrap(),
            port: 3083,
        },
        Message::Ping { nonce: 1 },
        Message::Pong { nonce: u64::MAX },
        Message::Error {
            reason: "slow consumer".into(),
        },
        Message::Exit,
    ]
}

/// Decodes everything in `buf`, which must hold only whole, valid frames.
fn decode_all(codec: &ChatCodec, buf: &mut BytesMut) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(msg) = codec.decode(buf).unwrap() {
        out.push(msg);
    }
    assert!(buf.is_empty(), "{} byte(s) left over", buf.len());
    out
}

// ---------------------------------------------------------------- FrameTooLarge

#[test]
fn frame_too_large_is_rejected_from_the_header_alone() {
    let codec = ChatCodec::new();
    // 9_000_000 = 0x0089_5440, followed by a few payload bytes.
    let mut buf = BytesMut::from(&[0x00, 0x89, 0x54, 0x40, 0x00, 0x01, 0x41][..]);
    let before = buf.clone();
    let cap = buf.capacity();

    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        DecodeError::FrameTooLarge {
            len: 9_000_000,
            max: 65536
        }
    );
    assert_eq!(
        err.to_string(),
        "frame of 9000000 bytes exceeds the 65536-byte limit"
    );
    // Untouched and not grown: nothing was reserved for the claimed payload.
    assert_eq!(buf, before);
    assert_eq!(buf.capacity(), cap);

    // Stays fatal: asking again, or at EOF, gives the same answer.
    assert_eq!(codec.decode(&mut buf).unwrap_err(), err);
    assert_eq!(codec.decode_eof(&mut buf).unwrap_err(), err);
    assert_eq!(buf, before);
}

#[test]
fn frame_limit_is_inclusive_and_configurable() {
    let small = ChatCodec::with_max_frame_len(100).unwrap();
    assert_eq!(small.max_frame_len(), 100);

    // Exactly the limit: a valid header, so the codec waits for the payload
    // and reserves room for it.
    let mut buf = BytesMut::new();
    buf.put_u32(100);
    assert_eq!(small.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() >= HEADER_LEN + 100);
    assert_eq!(buf.len(), HEADER_LEN);

    // One more is fatal.
    let mut buf = BytesMut::new();
    buf.put_u32(101);
    assert_eq!(
        small.decode(&mut buf).unwrap_err().to_string(),
        "frame of 101 bytes exceeds the 100-byte limit"
    );

    // The largest u32 against the default limit.
    let mut buf = BytesMut::from(&[0xff; 4][..]);
    assert_eq!(
        ChatCodec::new().decode(&mut buf).unwrap_err(),
        DecodeError::FrameTooLarge {
            len: u32::MAX.into(),
            max: MAX_FRAME_LEN
        }
    );
}

// ------------------------------------------------------------------- EmptyFrame

#[test]
fn empty_frame_is_an_error_and_is_consumed() {
    let codec = ChatCodec::new();
    let mut buf = frame(&[]);
    buf.unsplit(encoded(&[Message::Exit]));

    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err, DecodeError::EmptyFrame);
    assert_eq!(err.to_string(), "empty frame (length prefix 0)");
    // The empty frame is gone; the next one decodes.
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Exit));
    assert!(buf.is_empty());
}

// --------------------------------------------------------------- UnknownVariant

#[test]
fn unknown_variant_is_consumed_and_the_stream_stays_in_step() {
    let codec = ChatCodec::new();
    // Tag 38 (the first unused one) with some fields a newer peer might send,
    // tag 0x1234 as a 3-byte varint, and the largest u32 tag.
    let mut buf = frame(&[38, 0x03, b'a', b'b', b'c']);
    buf.unsplit(frame(&[0xfb, 0x34, 0x12]));
    buf.unsplit(frame(&[0xfc, 0xff, 0xff, 0xff, 0xff, 0x00]));
    buf.unsplit(encoded(&[Message::Ping { nonce: 7 }]));

    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err, DecodeError::UnknownVariant { tag: 38 });
    assert_eq!(err.to_string(), "unknown message variant 38");
    assert_eq!(
        codec.decode(&mut buf).unwrap_err(),
        DecodeError::UnknownVariant { tag: 0x1234 }
    );
    assert_eq!(
        codec.decode(&mut buf).unwrap_err(),
        DecodeError::UnknownVariant { tag: u32::MAX }
    );
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Message::Ping { nonce: 7 })
    );
    assert!(buf.is_empty());
}

// ------------------------------------------------------------------ InvalidUtf8

#[test]
fn invalid_utf8_in_every_text_field() {
    let codec = ChatCodec::new();
    // Send "ab\xff".
    let mut buf = frame(&[0x00, 0x03, b'a', b'b', 0xff]);
    // Relay 127.0.0.1:1 with "你" cut after two of its three bytes.
    buf.unsplit(frame(&[0x02, 0x00, 127, 0, 0, 1, 0x01, 0x02, 0xe4, 0xbd]));
    // Error with a lone continuation byte.
    buf.unsplit(frame(&[0x05, 0x01, 0x80]));
    buf.unsplit(encoded(&[Message::Exit]));

    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err, DecodeError::InvalidUtf8 { valid_up_to: 2 });
    assert_eq!(
        err.to_string(),
        "text is not valid UTF-8 (valid up to byte 2)"
    );
    assert_eq!(
        codec.decode(&mut buf).unwrap_err(),
        DecodeError::InvalidUtf8 { valid_up_to: 0 }
    );
    assert_eq!(
        codec.decode(&mut buf).unwrap_err(),
        DecodeError::InvalidUtf8 { valid_up_to: 0 }
    );
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Exit));
}

// ---------------------------------------------------------------- TrailingBytes

#[test]
fn trailing_bytes_after_a_message() {
    let codec = ChatCodec::new();
    let mut buf = frame(&[0x01, 0x00]); // Exit + one stray byte
    buf.unsplit(frame(&[0x08, 0x05, 0xaa, 0xbb, 0xcc])); // Ping 5 + three
    buf.unsplit(encoded(&[Message::Exit]));

    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err, DecodeError::TrailingBytes { len: 2, used: 1 });
    assert_eq!(
        err.to_string(),
        "frame has 1 trailing byte(s) after the message (1 of 2 used)"
    );
    assert_eq!(
        codec.decode(&mut buf).unwrap_err(),
        DecodeError::TrailingBytes { len: 5, used: 2 }
    );
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Exit));
}

// -------------------------------------------------------------------- Malformed

fn assert_malformed(payload: &[u8]) -> String {
    let codec = ChatCodec::new();
    let mut buf = frame(payload);
    buf.unsplit(encoded(&[Message::Exit]));
    let err = codec.decode(&mut buf).unwrap_err();
    let DecodeError::Malformed(text) = &err else {
        panic!("{payload:02x?}: expected Malformed, got {err:?}");
    };
    assert!(err.to_string().starts_with("malformed payload: "), "{err}");
    // The bad frame was consumed; the stream continues.
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Exit));
    text.clone()
}

#[test]
fn malformed_payloads() {
    // Joined with IpAddr tag 2 (only 0 = V4 and 1 = V6 exist).
    assert_malformed(&[0x06, 0x02, 127, 0, 0, 1, 0x0c]);
    // Ping whose u64 varint says "8 bytes follow" but only 2 do.
    let text = assert_malformed(&[0x08, 0xfd, 0xff, 0xff]);
    assert!(text.contains("byte(s) before the message does"), "{text}");
    // Relay with nothing after the tag.
    assert_malformed(&[0x02]);
    // IPv6 Joined cut inside the address.
    assert_malformed(&[0x06, 0x01, 0x20, 0x01, 0x0d]);
    // Port 65536 does not fit a u16: a u32 marker where a u16 is expected.
    assert_malformed(&[0x06, 0x00, 127, 0, 0, 1, 0xfc, 0x00, 0x00, 0x01, 0x00]);
    // Hello version with a u64 marker.
    assert_malformed(&[0x03, 0xfd, 1, 0, 0, 0, 0, 0, 0, 0, 0x00]);
    // The reserved varint marker 0xff.
    assert_malformed(&[0x08, 0xff]);
    // A u64 marker on the variant tag itself, which is a u32.
    assert_malformed(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0]);
    // A variant tag cut inside its varint.
    assert_malformed(&[0xfb, 0x01]);
}

#[test]
fn malformed_rooms_payloads() {
    // Roster "" with no members and `more` = 2: a bool is 00 or 01.
    assert_malformed(&[0x17, 0x00, 0x00, 0x02]);
    // Rooms with no rooms and `more` = ff.
    assert_malformed(&[0x18, 0x00, 0xff]);
    // Roster whose list claims 2^64 - 1 members in a 12-byte payload: fails
    // at the first missing member, having reserved nothing for the claim
    // (the fuzz crate's allocation test checks that part).
    let huge = [
        0x17, 0x00, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
    ];
    let text = assert_malformed(&huge);
    assert!(text.contains("byte(s) before the message does"), "{text}");
    // Rooms claiming 2^32 - 1 rooms, with one present.
    assert_malformed(&[0x18, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x01, b'a', 0x02, 0x00]);
    // Roster claiming 2 members with only one present, then `more`.
    assert_malformed(&[0x17, 0x00, 0x02, 0x01, b'a', 0x00, 127, 0, 0, 1, 0x01, 0x00]);
    // A Member whose IpAddr tag is 2.
    assert_malformed(&[0x14, 0x00, 0x01, b'a', 0x02, 127, 0, 0, 1, 0x01]);
    // A Refused code is a u16: a u32 marker is too wide.
    assert_malformed(&[0x19, 0xfc, 0xe7, 0x03, 0x00, 0x00, 0x00, 0x00]);
    // A RoomInfo count is a u32: a u64 marker is too wide.
    assert_malformed(&[0x18, 0x01, 0x01, b'a', 0xfd, 1, 0, 0, 0, 0, 0, 0, 0, 0x00]);
}

#[test]
fn rooms_lists_and_flags_decode_at_their_edges() {
    let codec = ChatCodec::new();
    // An empty roster, `more` = 01; the varint count may be non-canonical.
    let mut buf = frame(&[0x17, 0x01, b'r', 0xfb, 0x00, 0x00, 0x01]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Message::Roster {
            room: "r".into(),
            members: Vec::new(),
            more: true
        })
    );
    // A Rooms frame of 20,000 entries of 3 bytes each.
    let rooms: Vec<RoomInfo> = (0..20_000u32)
        .map(|i| RoomInfo {
            name: char::from(b'a' + (i % 26) as u8).to_string(),
            members: i % 250,
        })
        .collect();
    let msg = Message::Rooms { rooms, more: false };
    let mut buf = BytesMut::new();
    codec.encode(&msg, &mut buf).unwrap();
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(msg));
    // Trailing bytes after `more` are still an error.
    let mut buf = frame(&[0x18, 0x00, 0x00, 0x00]);
    assert_eq!(
        codec.decode(&mut buf).unwrap_err(),
        DecodeError::TrailingBytes { len: 4, used: 3 }
    );
    // A Refused code of 65,535 is the widest u16, and unknown.
    let mut buf = frame(&[0x19, 0xfb, 0xff, 0xff, 0x00, 0x00]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Message::Refused {
            code: Refusal::Other(u16::MAX),
            subject: String::new(),
            detail: String::new()
        })
    );
}

#[test]
fn non_canonical_varints_are_accepted() {
    // Encoders use the shortest form; the decoder accepts any form that fits
    // the field (documented in PROTOCOL.md).
    let codec = ChatCodec::new();
    let mut buf = frame(&[0xfb, 0x08, 0x00, 0xfc, 0x05, 0, 0, 0]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Message::Ping { nonce: 5 })
    );
}

#[test]
fn huge_string_length_claims_fail_without_allocating() {
    let codec = ChatCodec::new();
    let claims: [&[u8]; 4] = [
        &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // u64::MAX
        &[0xfd, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00], // 4 GiB
        &[0xfc, 0xff, 0xff, 0xff, 0xff],                         // 4 GiB - 1
        &[0xfc, 0x00, 0x00, 0x00, 0x01],                         // 16 MiB
    ];
    for claim in claims {
        // Send, Relay and Error each carry a string.
        let mut send = vec![0x00];
        send.extend_from_slice(claim);
        send.extend_from_slice(b"short");
        let mut relay = vec![0x02, 0x00, 127, 0, 0, 1, 0x01];
        relay.extend_from_slice(claim);
        let mut error = vec![0x05];
        error.extend_from_slice(claim);
        for payload in [send, relay, error] {
            let err = codec.decode(&mut frame(&payload)).unwrap_err();
            assert!(
                matches!(err, DecodeError::Malformed(_)),
                "{payload:02x?}: {err:?}"
            );
            let err = blocking::read_message(&mut &frame(&payload)[..], &codec).unwrap_err();
            assert!(
                matches!(err, StreamError::Decode(DecodeError::Malformed(_))),
                "{err:?}"
            );
        }
    }
}

// -------------------------------------------------------------------- Truncated

#[test]
fn truncated_at_eof() {
    let codec = ChatCodec::new();

    // Clean end: nothing buffered.
    assert_eq!(codec.decode_eof(&mut BytesMut::new()).unwrap(), None);

    // Inside the header.
    let mut buf = BytesMut::from(&[0x00, 0x00][..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert_eq!(err, DecodeError::Truncated { have: 2, need: 4 });
    assert_eq!(
        err.to_string(),
        "connection closed mid-frame (2 of 4 bytes received)"
    );

    // Inside the payload: Send "hello I am jjj" is 4 + 16 bytes.
    let whole = encoded(&[Message::Send {
        text: "hello I am jjj".into(),
    }]);
    let mut buf = BytesMut::from(&whole[..11]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(
        codec.decode_eof(&mut buf).unwrap_err(),
        DecodeError::Truncated { have: 11, need: 20 }
    );

    // A whole frame then a partial one: the whole one still comes out first.
    let mut buf = encoded(&[Message::Exit]);
    buf.put_slice(&[0x00, 0x00, 0x00]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(Message::Exit));
    assert_eq!(
        codec.decode_eof(&mut buf).unwrap_err(),
        DecodeError::Truncated { have: 3, need: 4 }
    );
}

#[test]
fn truncated_via_blocking_read() {
    let codec = ChatCodec::new();
    let whole = encoded(&[Message::Send {
        text: "hello I am jjj".into(),
    }]);

    let mut r = Cursor::new(whole[..3].to_vec());
    let err = blocking::read_message(&mut r, &codec).unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::Decode(DecodeError::Truncated { have: 3, need: 4 })
        ),
        "{err:?}"
    );

    let mut r = Cursor::new(whole[..11].to_vec());
    let err = blocking::read_message(&mut r, &codec).unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::Decode(DecodeError::Truncated { have: 11, need: 20 })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "connection closed mid-frame (11 of 20 bytes received)"
    );
}

// ---------------------------------------------------------- EncodeError, limits

#[test]
fn encode_too_large_leaves_dst_unchanged() {
    let small = ChatCodec::with_max_frame_len(MIN_FRAME_LEN).unwrap();
    let mut dst = BytesMut::from(&b"abc"[..]);
    let msg = Message::Send {
        text: "x".repeat(100),
    };
    let err = small.encode(&msg, &mut dst).unwrap_err();
    assert_eq!(err, EncodeError::TooLarge { len: 102, max: 64 });
    assert_eq!(
        err.to_string(),
        "message of 102 bytes exceeds the 64-byte frame limit"
    );
    assert_eq!(&dst[..], b"abc");
    assert!(small.frame(&msg).is_err());

    // Default limit: 65532 bytes of text is the most that fits
    // (1 tag + 3 length + 65532 = 65536); one more does not.
    let codec = ChatCodec::new();
    let mut dst = BytesMut::new();
    let fits = Message::Send {
        text: "x".repeat(65532),
    };
    codec.encode(&fits, &mut dst).unwrap();
    assert_eq!(dst.len(), HEADER_LEN + MAX_FRAME_LEN);
    assert_eq!(codec.decode(&mut dst).unwrap(), Some(fits));
    let over = Message::Send {
        text: "x".repeat(65533),
    };
    assert_eq!(
        codec.encode(&over, &mut dst).unwrap_err(),
        EncodeError::TooLarge {
            len: 65537,
            max: MAX_FRAME_LEN
        }
    );
    assert!(dst.is_empty());

    // Nothing is written by the blocking writer either.
    let mut out = Vec::new();
    let err = blocking::write_message(&mut out, &codec, &over).unwrap_err();
    assert!(
        matches!(err, StreamError::Encode(EncodeError::TooLarge { .. })),
        "{err:?}"
    );
    assert!(out.is_empty());
}

#[test]
fn frame_limit_bounds() {
    for bad in [
        0,
        1,
        MIN_FRAME_LEN - 1,
        MAX_FRAME_LEN_CEILING + 1,
        usize::MAX,
    ] {
        let err = ChatCodec::with_max_frame_len(bad).unwrap_err();
        assert_eq!(
            err,
            LimitError {
                value: bad,
                min: MIN_FRAME_LEN,
                max: MAX_FRAME_LEN_CEILING
            }
        );
    }
    assert_eq!(
        ChatCodec::with_max_frame_len(63).unwrap_err().to_string(),
        "frame limit 63 is outside 64..=16777216"
    );
    for good in [MIN_FRAME_LEN, MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING] {
        assert_eq!(
            ChatCodec::with_max_frame_len(good).unwrap().max_frame_len(),
            good
        );
    }
    assert_eq!(ChatCodec::default(), ChatCodec::new());
    assert_eq!(ChatCodec::new().max_frame_len(), MAX_FRAME_LEN);
}

#[test]
fn every_fixed_size_message_fits_the_smallest_limit() {
    let small = ChatCodec::with_max_frame_len(MIN_FRAME_LEN).unwrap();
    let ip = IpAddr::V6(Ipv6Addr::new(
        0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
    ));
    let biggest = [
        Message::Welcome {
            version: u16::MAX,
            features: u64::MAX,
            max_frame: u32::MAX,
            ip,
            port: u16::MAX,
        },
        Message::Hello {
            version: u16::MAX,
            features: u64::MAX,
        },
        Message::Joined { ip, port: u16::MAX },
        Message::Left { ip, port: u16::MAX },
        Message::Ping { nonce: u64::MAX },
        Message::Pong { nonce: u64::MAX },
        Message::Exit,
        Message::ListRooms,
    ];
    let mut buf = BytesMut::new();
    for msg in &biggest {
        small.encode(msg, &mut buf).unwrap();
    }
    assert_eq!(decode_all(&small, &mut buf), biggest);
}

// ------------------------------------------------------------ buffering

#[test]
fn bytes_fed_one_at_a_time() {
    let codec = ChatCodec::new();
    let msgs = sample();
    let wire = encoded(&msgs);
    let mut rx = BytesMut::new();
    let mut out = Vec::new();
    for &byte in wire.iter() {
        rx.put_u8(byte);
        if let Some(msg) = codec.decode(&mut rx).unwrap() {
            out.push(msg);
        }
    }
    assert_eq!(out, msgs);
    assert!(rx.is_empty());
    assert_eq!(codec.decode_eof(&mut rx).unwrap(), None);
}

#[test]
fn two_frames_in_one_buffer() {
    let codec = ChatCodec::new();
    let a = Message::Send {
        text: "hello I am jjj".into(),
    };
    let b = Message::Send {
        text: "是的你是对的，我是中国人".into(),
    };
    let mut buf = encoded(&[a.clone(), b.clone()]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(a));
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(b));
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
}

#[test]
fn frame_is_encoded_once_and_shared() {
    let codec = ChatCodec::new();
    let msg = Message::relay("[::1]:4000".parse().unwrap(), "群发 broadcast");
    let frame = codec.frame(&msg).unwrap();
    assert_eq!(
        &frame.as_bytes()[..],
        &encoded(std::slice::from_ref(&msg))[..]
    );
    assert_eq!(frame.len(), frame.as_ref().len());
    assert!(!frame.is_empty());

    let copies: Vec<_> = (0..1000).map(|_| frame.clone()).collect();
    assert!(
        copies
            .iter()
            .all(|c| c.as_bytes().as_ptr() == frame.as_bytes().as_ptr())
    );
    let mut buf = BytesMut::from(&copies[999].clone().into_bytes()[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(msg));
}

#[test]
fn stream_error_maps_to_io_error_kinds() {
    let io: std::io::Error = StreamError::from(DecodeError::EmptyFrame).into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(io.to_string(), "empty frame (length prefix 0)");
    let io: std::io::Error = StreamError::from(EncodeError::TooLarge { len: 9, max: 8 }).into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    let io: std::io::Error =
        StreamError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).into();
    assert_eq!(io.kind(), std::io::ErrorKind::BrokenPipe);
}

#[test]
fn who_may_send_what() {
    for msg in sample() {
        let (client, server) = match msg {
            Message::Send { .. } | Message::Hello { .. } => (true, false),
            Message::Relay { .. }
            | Message::Welcome { .. }
            | Message::Joined { .. }
            | Message::Left { .. } => (false, true),
            _ => (true, true), // Exit, Error, Ping, Pong
        };
        assert_eq!(msg.from_client(), client, "{msg:?}");
        assert_eq!(msg.from_server(), server, "{msg:?}");
    }
}

// ------------------------------------------------------------ blocking helpers

#[test]
fn blocking_round_trip_over_a_cursor() {
    let codec = ChatCodec::new();
    let msgs = sample();
    let mut wire = Cursor::new(Vec::new());
    for msg in &msgs {
        blocking::write_message(&mut wire, &codec, msg).unwrap();
    }
    let bytes = wire.into_inner();
    assert_eq!(bytes, encoded(&msgs)[..]);

    let mut rx = Cursor::new(bytes);
    let mut out = Vec::new();
    while let Some(msg) = blocking::read_message(&mut rx, &codec).unwrap() {
        out.push(msg);
    }
    assert_eq!(out, msgs);
    // A clean EOF stays clean.
    assert!(blocking::read_message(&mut rx, &codec).unwrap().is_none());
}

#[test]
fn blocking_read_rejects_oversize_before_reading_the_payload() {
    let codec = ChatCodec::new();
    let mut bytes = vec![0x00, 0x89, 0x54, 0x40];
    bytes.extend_from_slice(&[0x42; 32]);
    let mut rx = Cursor::new(bytes);
    let err = blocking::read_message(&mut rx, &codec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame of 9000000 bytes exceeds the 65536-byte limit"
    );
    assert_eq!(rx.position(), HEADER_LEN as u64);
}

#[test]
fn blocking_read_reports_bad_frames_and_stays_in_step() {
    let codec = ChatCodec::new();
    let mut bytes = frame(&[]).to_vec();
    bytes.extend_from_slice(&frame(&[0x2a]));
    bytes.extend_from_slice(&encoded(&[Message::Exit]));
    let mut rx = Cursor::new(bytes);
    assert!(matches!(
        blocking::read_message(&mut rx, &codec),
        Err(StreamError::Decode(DecodeError::EmptyFrame))
    ));
    assert!(matches!(
        blocking::read_message(&mut rx, &codec),
        Err(StreamError::Decode(DecodeError::UnknownVariant { tag: 42 }))
    ));
    assert_eq!(
        blocking::read_message(&mut rx, &codec).unwrap(),
        Some(Message::Exit)
    );
}

/// A reader that hands out one byte per call and is interrupted in between.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    interrupt: bool,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let Some(&b) = self.data.get(self.pos) else {
            return Ok(0);
        };
        buf[0] = b;
        self.pos += 1;
        Ok(1)
    }
}

#[test]
fn blocking_read_survives_short_reads_and_interrupts() {
    let codec = ChatCodec::new();
    let msgs = sample();
    let mut rx = Trickle {
        data: encoded(&msgs).to_vec(),
        pos: 0,
        interrupt: false,
    };
    let mut out = Vec::new();
    while let Some(msg) = blocking::read_message(&mut rx, &codec).unwrap() {
        out.push(msg);
    }
    assert_eq!(out, msgs);
}

#[test]
fn blocking_helpers_over_loopback_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let timeout = Some(Duration::from_secs(10));

    // The "server": for each Send, answer a Relay tagged with the peer's
    // address; answer Exit with Exit and close.
    let server = thread::spawn(move || {
        let codec = ChatCodec::new();
        let (mut sock, peer) = listener.accept().unwrap();
        sock.set_read_timeout(timeout).unwrap();
        let mut got = Vec::new();
        while let Some(msg) = blocking::read_message(&mut sock, &codec).unwrap() {
            got.push(msg.clone());
            let reply = match msg {
                Message::Send { text } => Message::relay(peer, text),
                Message::Exit => Message::Exit,
                other => panic!("unexpected {other:?}"),
            };
            blocking::write_message(&mut sock, &codec, &reply).unwrap();
            if reply == Message::Exit {
                break;
            }
        }
        got
    });

    let codec = ChatCodec::new();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(timeout).unwrap();
    let me = sock.local_addr().unwrap();
    let long = "长".repeat(20_000); // 60 000 bytes: several TCP segments
    let texts = ["hello I am jjj", "是的你是对的，我是中国人", long.as_str()];
    for text in texts {
        blocking::write_message(&mut sock, &codec, &Message::Send { text: text.into() }).unwrap();
        assert_eq!(
            blocking::read_message(&mut sock, &codec).unwrap(),
            Some(Message::relay(me, text))
        );
    }
    blocking::write_message(&mut sock, &codec, &Message::Exit).unwrap();
    assert_eq!(
        blocking::read_message(&mut sock, &codec).unwrap(),
        Some(Message::Exit)
    );
    // The server closed after Exit: a clean end of stream.
    assert_eq!(blocking::read_message(&mut sock, &codec).unwrap(), None);

    let got = server.join().unwrap();
    assert_eq!(got.len(), texts.len() + 1);
}

#[test]
fn blocking_read_over_tcp_reports_a_peer_that_dies_mid_frame() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let writer = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let whole = encoded(&[Message::Send {
            text: "cut short".into(),
        }]);
        sock.write_all(&whole[..7]).unwrap();
        sock.shutdown(Shutdown::Write).unwrap();
    });
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let err = blocking::read_message(&mut sock, &ChatCodec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::Decode(DecodeError::Truncated { have: 7, need: 15 })
        ),
        "{err:?}"
    );
    writer.join().unwrap();
}

// ------------------------------------------------------------ tokio Framed

#[cfg(feature = "tokio-codec")]
mod framed {
    use std::time::Duration;

    use bytes::BytesMut;
    use chat_proto::{ChatCodec, DecodeError, EncodeError, Frame, Message, StreamError};
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;
    use tokio_util::codec::{Encoder, Framed};

    const WAIT: Duration = Duration::from_secs(10);

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    async fn next(f: &mut Framed<TcpStream, ChatCodec>) -> Option<Result<Message, StreamError>> {
        timeout(WAIT, f.next())
            .await
            .expect("timed out waiting for a frame")
    }

    #[tokio::test]
    async fn framed_round_trip_over_loopback() {
        let (client, server) = pair().await;
        let peer = client.local_addr().unwrap();
        let mut client = Framed::new(client, ChatCodec::new());
        let mut server = Framed::new(server, ChatCodec::new());

        let msgs = super::sample();
        for msg in &msgs {
            timeout(WAIT, client.send(msg)).await.unwrap().unwrap();
        }
        for msg in &msgs {
            assert_eq!(&next(&mut server).await.unwrap().unwrap(), msg);
        }

        // Server to client: one pre-encoded Frame, sent as is, and an owned message.
        let frame = ChatCodec::new()
            .frame(&Message::relay(peer, "你好 👋"))
            .unwrap();
        timeout(WAIT, server.send(frame.clone()))
            .await
            .unwrap()
            .unwrap();
        timeout(WAIT, server.send(Message::Exit))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            next(&mut client).await.unwrap().unwrap(),
            Message::relay(peer, "你好 👋")
        );
        assert_eq!(next(&mut client).await.unwrap().unwrap(), Message::Exit);

        // The server closes: the client's stream ends cleanly.
        drop(server);
        assert!(next(&mut client).await.is_none());
    }

    #[tokio::test]
    async fn framed_surfaces_decode_errors() {
        // A peer that sends an oversized header.
        let (mut raw, server) = pair().await;
        let mut server = Framed::new(server, ChatCodec::new());
        raw.write_all(&[0x00, 0x89, 0x54, 0x40]).await.unwrap();
        let err = next(&mut server).await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                StreamError::Decode(DecodeError::FrameTooLarge { len: 9_000_000, .. })
            ),
            "{err:?}"
        );

        // A peer that closes mid-frame.
        let (mut raw, server) = pair().await;
        let mut server = Framed::new(server, ChatCodec::new());
        raw.write_all(&[0x00, 0x00, 0x00, 0x05, 0x00])
            .await
            .unwrap();
        raw.shutdown().await.unwrap();
        let err = next(&mut server).await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                StreamError::Decode(DecodeError::Truncated { have: 5, need: 9 })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn frame_encoder_respects_a_smaller_limit() {
        let big = ChatCodec::new()
            .frame(&Message::Send {
                text: "x".repeat(100),
            })
            .unwrap();
        let mut small = ChatCodec::with_max_frame_len(64).unwrap();
        let mut dst = BytesMut::from(&b"kept"[..]);
        let err = Encoder::<Frame>::encode(&mut small, big.clone(), &mut dst).unwrap_err();
        assert!(
            matches!(
                err,
                StreamError::Encode(EncodeError::TooLarge { len: 102, max: 64 })
            ),
            "{err:?}"
        );
        assert_eq!(&dst[..], b"kept");

        // The default codec copies it through byte for byte.
        let mut codec = ChatCodec::new();
        Encoder::<Frame>::encode(&mut codec, big.clone(), &mut dst).unwrap();
        assert_eq!(&dst[4..], &big.as_bytes()[..]);

        // Message encoders behave like ChatCodec::encode.
        let mut dst = BytesMut::new();
        Encoder::<&Message>::encode(&mut small, &Message::Exit, &mut dst).unwrap();
        Encoder::<Message>::encode(&mut small, Message::Exit, &mut dst).unwrap();
        assert_eq!(&dst[..], &[0, 0, 0, 1, 1, 0, 0, 0, 1, 1]);
    }
}

#[test]
fn encode_refuses_a_huge_text_with_its_exact_size() {
    // 20 MiB of text: over even the largest limit. The error still gives the
    // exact payload size (tag 1 byte + 0xfc and a u32 length + the text).
    let text = "是".repeat(20 * 1024 * 1024 / 3);
    let len = 1 + 5 + text.len();
    let msg = Message::Relay {
        ip: "::1".parse().unwrap(),
        port: 8080,
        text,
    };
    let codec = ChatCodec::with_max_frame_len(MAX_FRAME_LEN_CEILING).unwrap();
    let mut dst = BytesMut::new();
    let err = codec.encode(&msg, &mut dst).unwrap_err();
    // Relay adds the address: tag 1, ip tag 1 + 16, port 0xfb + u16.
    assert_eq!(
        err,
        EncodeError::TooLarge {
            len: len + 17 + 3,
            max: MAX_FRAME_LEN_CEILING
        }
    );
    assert!(dst.is_empty());
    assert_eq!(dst.capacity(), 0, "nothing was copied into the buffer");
}
