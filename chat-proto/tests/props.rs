//! Property tests: round trips, chunking, hostile bytes and truncation.
//! Case counts are kept small enough for the file to run in a few seconds
//! in a debug build.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use chat_proto::{
    ChatCodec, Conversation, DecodeError, EncodeError, Entry, HEADER_LEN, MAX_FRAME_LEN,
    MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN, Member, Message, Refusal, RoomInfo, StreamError,
    blocking,
};
use proptest::prelude::*;

/// Text of every kind: any Unicode scalar values, CJK, emoji (including
/// multi-scalar sequences), and ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\u{4e00}-\\u{9fff}，。！？]{0,40}",
        "[\\u{1f300}-\\u{1f6ff}\\u{200d}\\u{fe0f}]{0,20}",
        "[ -~]{0,80}",
        Just(String::new()),
    ]
}

/// Any message: a third each of version 1, the ROOMS capability and the
/// HISTORY capability.
fn message() -> impl Strategy<Value = Message> {
    // Boxed: the unboxed union is deep enough to overflow a test thread's
    // stack in a debug build.
    prop_oneof![
        v1_message().boxed(),
        rooms_message().boxed(),
        history_message().boxed()
    ]
}

/// Any message of version 1 (tags 0..=9).
fn v1_message() -> impl Strategy<Value = Message> {
    let ip = any::<IpAddr>();
    prop_oneof![
        text().prop_map(|text| Message::Send { text }),
        Just(Message::Exit),
        (ip.clone(), any::<u16>(), text()).prop_map(|(ip, port, text)| Message::Relay {
            ip,
            port,
            text
        }),
        (any::<u16>(), any::<u64>())
            .prop_map(|(version, features)| Message::Hello { version, features }),
        (
            any::<u16>(),
            any::<u64>(),
            any::<u32>(),
            ip.clone(),
            any::<u16>()
        )
            .prop_map(
                |(version, features, max_frame, ip, port)| Message::Welcome {
                    version,
                    features,
                    max_frame,
                    ip,
                    port
                }
            ),
        text().prop_map(|reason| Message::Error { reason }),
        (ip.clone(), any::<u16>()).prop_map(|(ip, port)| Message::Joined { ip, port }),
        (ip, any::<u16>()).prop_map(|(ip, port)| Message::Left { ip, port }),
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
    ]
}

fn member() -> impl Strategy<Value = Member> {
    (text(), any::<IpAddr>(), any::<u16>()).prop_map(|(name, ip, port)| Member { name, ip, port })
}

/// Any message of the ROOMS capability (tags 10..=25).
fn rooms_message() -> impl Strategy<Value = Message> {
    let room_info = (text(), any::<u32>()).prop_map(|(name, members)| RoomInfo { name, members });
    prop_oneof![
        text().prop_map(|name| Message::Nick { name }),
        text().prop_map(|room| Message::Join { room }),
        text().prop_map(|room| Message::Part { room }),
        (text(), text()).prop_map(|(room, text)| Message::Say { room, text }),
        (text(), text()).prop_map(|(name, text)| Message::Tell { name, text }),
        text().prop_map(|room| Message::Who { room }),
        Just(Message::ListRooms),
        text().prop_map(|name| Message::Named { name }),
        (text(), member(), text()).prop_map(|(room, from, text)| Message::Said {
            room,
            from,
            text
        }),
        (member(), text()).prop_map(|(from, text)| Message::Told { from, text }),
        (text(), member()).prop_map(|(room, member)| Message::Entered { room, member }),
        (text(), member()).prop_map(|(room, member)| Message::Departed { room, member }),
        (text(), member()).prop_map(|(old, member)| Message::Renamed { old, member }),
        (text(), prop::collection::vec(member(), 0..6), any::<bool>()).prop_map(
            |(room, members, more)| Message::Roster {
                room,
                members,
                more
            }
        ),
        (prop::collection::vec(room_info, 0..6), any::<bool>())
            .prop_map(|(rooms, more)| Message::Rooms { rooms, more }),
        // Through the wire code, as a decoder builds it: `Other` never holds
        // a known code.
        (any::<u16>(), text(), text()).prop_map(|(code, subject, detail)| Message::Refused {
            code: Refusal::from_code(code),
            subject,
            detail
        }),
    ]
}

/// Ids of every width: small, at the varint boundaries, near `u64::MAX`.
fn id() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..300,
        Just(250u64),
        Just(251u64),
        Just(65_535u64),
        Just(65_536u64),
        Just(u64::from(u32::MAX) + 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn entry() -> BoxedStrategy<Entry> {
    (id(), id(), id(), member(), text())
        .prop_map(|(id, prev, at, from, text)| Entry {
            id,
            prev,
            at,
            from,
            text,
        })
        .boxed()
}

fn conversation() -> impl Strategy<Value = Conversation> {
    prop_oneof![
        text().prop_map(Conversation::Room),
        text().prop_map(Conversation::Direct),
    ]
}

/// Any message of the HISTORY capability (tags 26..=32).
fn history_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (text(), entry()).prop_map(|(room, entry)| Message::Posted { room, entry }),
        entry().prop_map(|entry| Message::Direct { entry }),
        (id(), id(), id()).prop_map(|(seq, id, at)| Message::Stored { seq, id, at }),
        (id(), any::<u16>(), text()).prop_map(|(seq, code, detail)| Message::Unstored {
            seq,
            code: Refusal::from_code(code),
            detail
        }),
        (conversation(), id(), any::<u32>()).prop_map(|(conversation, after, limit)| {
            Message::Resume {
                conversation,
                after,
                limit,
            }
        }),
        (conversation(), any::<u32>()).prop_map(|(conversation, count)| Message::Recent {
            conversation,
            count
        }),
        (
            conversation(),
            prop::collection::vec(entry(), 0..5),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(conversation, entries, missing, more)| Message::Page {
                conversation,
                entries,
                missing,
                more
            }),
    ]
}

fn encode_all(codec: &ChatCodec, msgs: &[Message]) -> BytesMut {
    let mut buf = BytesMut::new();
    for msg in msgs {
        codec.encode(msg, &mut buf).unwrap();
    }
    buf
}

/// A text message whose payload is exactly `MAX_FRAME_LEN` bytes: `unit`
/// repeated, padded with ASCII to the exact length.
fn maximal(kind: u8, ip: IpAddr, port: u16, unit: char) -> Message {
    let with = |text: String| match kind {
        0 => Message::Send { text },
        1 => Message::Relay { ip, port, text },
        _ => Message::Error { reason: text },
    };
    // Payload without the text and its length prefix; a text this long
    // takes a 3-byte length (0xfb + u16).
    let mut buf = BytesMut::new();
    ChatCodec::new()
        .encode(&with(String::new()), &mut buf)
        .unwrap();
    let fixed = buf.len() - HEADER_LEN - 1;
    let want = MAX_FRAME_LEN - fixed - 3;
    let mut text = unit.to_string().repeat(want / unit.len_utf8());
    while text.len() < want {
        text.push('a');
    }
    with(text)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_message_round_trips(msg in message()) {
        let codec = ChatCodec::new();
        let mut buf = BytesMut::new();
        codec.encode(&msg, &mut buf).unwrap();
        let frame = codec.frame(&msg).unwrap();
        prop_assert_eq!(&frame.as_bytes()[..], &buf[..]);

        let mut r = &buf[..];
        prop_assert_eq!(blocking::read_message(&mut r, &codec).unwrap(), Some(msg.clone()));
        prop_assert!(r.is_empty());

        prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(msg));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn a_chunked_stream_decodes_to_the_same_sequence(
        msgs in prop::collection::vec(message(), 1..40),
        cuts in prop::collection::vec(1usize..300, 1..20),
    ) {
        let codec = ChatCodec::new();
        let wire = encode_all(&codec, &msgs);
        let mut rx = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = &wire[..];
        for &cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(cut.min(rest.len()));
            rest = tail;
            rx.extend_from_slice(piece);
            while let Some(msg) = codec.decode(&mut rx).unwrap() {
                out.push(msg);
            }
        }
        prop_assert_eq!(codec.decode_eof(&mut rx).unwrap(), None);
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        limit in MIN_FRAME_LEN..=1024usize,
    ) {
        for codec in [ChatCodec::new(), ChatCodec::with_max_frame_len(limit).unwrap()] {
            drain(&codec, &bytes);
        }
    }

    #[test]
    fn framed_garbage_never_panics(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 1..20),
    ) {
        // Valid headers around random payloads reach the payload decoder far
        // more often than raw random bytes do.
        let mut bytes = Vec::new();
        for p in &payloads {
            bytes.extend_from_slice(&(p.len() as u32).to_be_bytes());
            bytes.extend_from_slice(p);
        }
        let outcomes = drain(&ChatCodec::new(), &bytes);
        // Every frame was consumed, so each gives exactly one outcome.
        prop_assert_eq!(outcomes, payloads.len());
    }

    #[test]
    fn an_oversized_header_never_yields_a_message(
        limit in MIN_FRAME_LEN..=MAX_FRAME_LEN_CEILING,
        over in 1u64..=u64::from(u32::MAX),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let codec = ChatCodec::with_max_frame_len(limit).unwrap();
        let len = (limit as u64 + over).min(u64::from(u32::MAX));
        prop_assume!(len > limit as u64);
        let mut buf = BytesMut::new();
        buf.put_u32(len as u32);
        buf.put_slice(&tail);
        let before = buf.clone();
        let too_large = DecodeError::FrameTooLarge { len, max: limit };
        prop_assert_eq!(codec.decode(&mut buf), Err(too_large.clone()));
        prop_assert_eq!(codec.decode(&mut buf), Err(too_large.clone()));
        prop_assert_eq!(codec.decode_eof(&mut buf), Err(too_large.clone()));
        prop_assert_eq!(&buf, &before);
        let mut r = &before[..];
        let err = blocking::read_message(&mut r, &codec).unwrap_err();
        prop_assert!(matches!(err, StreamError::Decode(e) if e == too_large));
    }

    #[test]
    fn truncated_input_is_none_then_an_eof_error(msg in message(), cut in any::<prop::sample::Index>()) {
        let codec = ChatCodec::new();
        let whole = encode_all(&codec, std::slice::from_ref(&msg));
        let have = 1 + cut.index(whole.len() - 1); // 1 ..= len - 1
        let need = if have < HEADER_LEN { HEADER_LEN } else { whole.len() };
        let truncated = DecodeError::Truncated { have, need };

        let mut buf = BytesMut::from(&whole[..have]);
        prop_assert_eq!(codec.decode(&mut buf), Ok(None));
        prop_assert_eq!(buf.len(), have);
        prop_assert_eq!(codec.decode_eof(&mut buf), Err(truncated.clone()));

        let mut r = &whole[..have];
        let err = blocking::read_message(&mut r, &codec).unwrap_err();
        prop_assert!(matches!(err, StreamError::Decode(e) if e == truncated));

        // The rest of the frame completes it.
        buf.extend_from_slice(&whole[have..]);
        prop_assert_eq!(codec.decode_eof(&mut buf), Ok(Some(msg)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Also checked for every code in `tests/rooms.rs`; here through the
    /// codec, as a `Refused` on the wire.
    #[test]
    fn any_refusal_code_round_trips(code in any::<u16>()) {
        prop_assert_eq!(Refusal::from_code(code).code(), code);
        let msg = Message::Refused {
            code: Refusal::from_code(code),
            subject: String::new(),
            detail: String::new(),
        };
        let codec = ChatCodec::new();
        let mut buf = encode_all(&codec, std::slice::from_ref(&msg));
        let Some(Message::Refused { code: got, .. }) = codec.decode(&mut buf).unwrap() else {
            panic!("not a Refused");
        };
        prop_assert_eq!(got.code(), code);
    }
}

proptest! {
    // 64 KiB messages are slow-ish in a debug build: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn maximal_text_fits_the_default_frame_exactly(
        kind in 0u8..3,
        ip in any::<IpAddr>(),
        port in any::<u16>(),
        unit in prop_oneof![Just('a'), Just('é'), Just('中'), Just('😀'), any::<char>()],
    ) {
        let codec = ChatCodec::new();
        let msg = maximal(kind, ip, port, unit);
        let mut buf = BytesMut::new();
        codec.encode(&msg, &mut buf).unwrap();
        prop_assert_eq!(buf.len(), HEADER_LEN + MAX_FRAME_LEN);
        prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(msg.clone()));

        // One more byte of text no longer fits, and nothing is written.
        let bigger = match msg {
            Message::Send { text } => Message::Send { text: text + "a" },
            Message::Relay { ip, port, text } => Message::Relay { ip, port, text: text + "a" },
            Message::Error { reason } => Message::Error { reason: reason + "a" },
            other => unreachable!("{other:?}"),
        };
        prop_assert_eq!(
            codec.encode(&bigger, &mut buf),
            Err(EncodeError::TooLarge { len: MAX_FRAME_LEN + 1, max: MAX_FRAME_LEN })
        );
        prop_assert!(buf.is_empty());
    }
}

/// Decodes `bytes` to the end like a connection would: skipping bad frames,
/// stopping at a fatal error or at EOF. Checks progress and that the
/// sans-I/O codec and the blocking reader agree; returns how many outcomes
/// (messages or non-fatal errors) there were.
fn drain(codec: &ChatCodec, bytes: &[u8]) -> usize {
    let mut buf = BytesMut::from(bytes);
    let mut outcomes = Vec::new();
    let fatal = loop {
        let len = buf.len();
        match codec.decode(&mut buf) {
            Ok(Some(msg)) => outcomes.push(Ok(msg)),
            Ok(None) => break codec.decode_eof(&mut buf).err(),
            Err(err @ DecodeError::FrameTooLarge { .. }) => {
                assert_eq!(buf.len(), len);
                break Some(err);
            }
            Err(err) => outcomes.push(Err(err)),
        }
        assert!(buf.len() < len, "no progress");
    };
    if let Some(err) = &fatal {
        assert!(
            matches!(
                err,
                DecodeError::FrameTooLarge { .. } | DecodeError::Truncated { .. }
            ),
            "{err:?}"
        );
    }

    let mut r = bytes;
    let mut read = Vec::new();
    let read_fatal = loop {
        match blocking::read_message(&mut r, codec) {
            Ok(Some(msg)) => read.push(Ok(msg)),
            Ok(None) => break None,
            Err(StreamError::Decode(
                err @ (DecodeError::FrameTooLarge { .. } | DecodeError::Truncated { .. }),
            )) => break Some(err),
            Err(StreamError::Decode(err)) => read.push(Err(err)),
            Err(err) => panic!("{err}"),
        }
    };
    assert_eq!(read, outcomes);
    assert_eq!(read_fatal, fatal);
    outcomes.len()
}

/// Payload length of `msg`.
fn payload_len(msg: &Message) -> usize {
    let codec = ChatCodec::with_max_frame_len(MAX_FRAME_LEN_CEILING).unwrap();
    encode_all(&codec, std::slice::from_ref(msg)).len() - HEADER_LEN
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `Message::page` takes exactly as many entries as fit: the page fits
    /// `max_len` (or holds the one entry it always takes), and one entry
    /// more would not fit.
    #[test]
    fn a_page_holds_exactly_the_entries_that_fit(
        conversation in conversation(),
        entries in prop::collection::vec(entry(), 0..12),
        missing in any::<bool>(),
        more in any::<bool>(),
        max_len in 0usize..2_000,
    ) {
        let (page, taken) =
            Message::page(conversation.clone(), &entries, missing, more, max_len);
        let Message::Page { entries: got, missing: got_missing, more: got_more, .. } = &page
        else {
            panic!("not a Page");
        };
        prop_assert_eq!(&got[..], &entries[..taken]);
        prop_assert_eq!(*got_missing, missing);
        prop_assert_eq!(*got_more, more || taken < entries.len());
        prop_assert_eq!(taken == 0, entries.is_empty());
        if taken > 1 {
            prop_assert!(payload_len(&page) <= max_len);
        }
        if taken < entries.len() {
            let bigger = Message::Page {
                conversation,
                entries: entries[..=taken].to_vec(),
                missing,
                more,
            };
            prop_assert!(payload_len(&bigger) > max_len);
        }
    }
}

/// Pages of hundreds of entries cross the count's varint boundary (250).
#[test]
fn a_page_counts_the_width_of_a_long_count() {
    let entry = |id| Entry {
        id,
        prev: id - 1,
        at: 1,
        from: Member {
            name: String::new(),
            ip: IpAddr::from([127, 0, 0, 1]),
            port: 1,
        },
        text: String::new(),
    };
    let entries: Vec<Entry> = (1..=400).map(entry).collect();
    let room = Conversation::Room(String::new());
    // 250 entries of 11 bytes take 2,756 bytes; 251 take 2,769 (a 3-byte count).
    for max_len in 2_700..2_800 {
        let (page, taken) = Message::page(room.clone(), &entries, false, false, max_len);
        assert!(payload_len(&page) <= max_len, "{max_len}");
        let bigger = Message::page(room.clone(), &entries[..=taken], false, false, usize::MAX).0;
        assert!(payload_len(&bigger) > max_len, "{max_len}: {taken}");
    }
}
