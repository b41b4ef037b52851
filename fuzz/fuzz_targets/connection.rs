//! Arbitrary bytes, in arbitrary chunks, into a `Connection` driven as a
//! socket owner drives it: a server-role machine that accepts every `Hello`
//! and answers every `Exit`, or a client-role one. It must never panic, keep
//! its input within the frame limit (plus one read of at most 8 KiB), send
//! no more than the input calls for, and keep the limits' promises: every
//! `Send`, `Say` or `Tell` it accepts relays within the server's limit for
//! the session, and the longest text it computes from `Welcome` is exactly
//! the longest that fits. It reports no message of a capability not
//! negotiated, and a server with ROOMS reports `Nick` before any other
//! request. With HISTORY, a server numbers the `Send`, `Say` and `Tell` it
//! reports 1, 2, 3, ..., and a `Posted`, `Direct` or one-entry `Page` of any
//! text it accepts fits the session's limit.
//!
//! The first byte picks the run: bit 0 the role (0 server, 1 client), bits
//! 1-2 the frame limit, bit 3 whether a client asks for ROOMS and HISTORY (a
//! server always offers both; the client's `Hello` decides, and a client's
//! `Welcome` grants ROOMS, both, or neither), bits 4-7 how the rest is cut
//! into reads (0: one read).
#![no_main]

use std::net::SocketAddr;

use bytes::BytesMut;
use chat_proto::{
    ChatCodec, ClientConfig, Connection, Conversation, Entry, Event, HEADER_LEN, HISTORY_OVERHEAD,
    MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN, Member, Message, ProtocolError,
    RELAY_OVERHEAD, ROOMS_OVERHEAD, Role, ServerConfig, State, features,
};
use chat_proto_fuzz::{SLACK, bounded, decoded_bound};
use libfuzzer_sys::fuzz_target;

/// Most bytes one read hands the machine.
const READ: usize = 8 * 1024;

/// Frame limits to run under: the default, the smallest, and ones whose
/// longest text sits at a varint boundary (250/251, 65,535/65,536).
const LIMITS: [usize; 4] = [
    MAX_FRAME_LEN,
    MIN_FRAME_LEN + RELAY_OVERHEAD,
    252 + RELAY_OVERHEAD,
    65_540 + RELAY_OVERHEAD,
];

/// The widest address a relay carries: IPv6 with a 5-digit port.
fn wide() -> SocketAddr {
    "[2001:db8::1]:65535".parse().unwrap()
}

/// The longest name or room a server shows: 32 characters of 4 bytes.
fn longest_name() -> String {
    "𝕏".repeat(32)
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, stream)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from(knobs >> 1) & 3];
    let conn = if knobs & 1 == 0 {
        Connection::server(ServerConfig::with_max_frame_len(limit).unwrap())
    } else {
        let mut config = ClientConfig::default();
        config.max_frame_len = limit;
        if knobs & 8 != 0 {
            config.features = features::ALL;
        }
        Connection::client(config)
    };
    run(conn, limit, stream, reads(knobs >> 4, stream.len()));
});

/// Read sizes from a small generator seeded by `seed`: a mix of tiny reads,
/// which split headers and characters, and large ones up to [`READ`].
fn reads(seed: u8, len: usize) -> Vec<usize> {
    if seed == 0 {
        return vec![len.clamp(1, READ); len.div_ceil(READ).max(1)];
    }
    let mut x = u32::from(seed).wrapping_mul(0x9e37_79b9) | 1;
    let mut sizes = Vec::new();
    let mut total = 0;
    while total < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let size = match x % 4 {
            0 => 1,
            1 => 1 + (x >> 8) as usize % 8,
            2 => 1 + (x >> 8) as usize % 64,
            _ => 1 + (x >> 8) as usize % READ,
        };
        sizes.push(size);
        total += size;
    }
    sizes
}

/// What the run has seen so far.
struct Seen {
    /// The server's configuration, for the relay limits of each session.
    config: ServerConfig,
    /// Server role with ROOMS: not named yet, so the request must be `Nick`
    /// (or with AUTH, `Register`, `Login`, `LoginToken`).
    naming: bool,
    /// Server role with HISTORY: the number of the last numbered request.
    seq: u64,
}

fn run(mut conn: Connection, limit: usize, stream: &[u8], sizes: Vec<usize>) {
    let server = conn.role() == Role::Server;
    let mut seen = Seen {
        config: ServerConfig::with_max_frame_len(limit).unwrap(),
        naming: false,
        seq: 0,
    };
    let lists = decoded_bound(stream.len());
    conn.transmit();
    let mut rest = stream;
    for size in sizes {
        if rest.is_empty() || !conn.wants_read() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;

        let before = conn.buffered();
        // Only a frame in progress is ever left over.
        assert!(before < HEADER_LEN + conn.max_frame_in());
        let mut welcomed = false;
        let out = bounded(memory_bound(&conn).max(lists), "step", || {
            conn.receive(chunk);
            assert!(conn.buffered() <= HEADER_LEN + conn.max_frame_in() + READ);
            loop {
                match conn.poll() {
                    Ok(Some(event)) => welcomed |= handle(&mut conn, event, &mut seen),
                    Ok(None) => break,
                    Err(err) => {
                        closed_for(&conn, &err);
                        break;
                    }
                }
            }
            let out = conn.transmit().map_or(0, |b| b.len());
            conn.release();
            out
        });
        if welcomed {
            longest_text_fits(&conn);
        }
        let consumed = before + chunk.len() - conn.buffered();
        assert!(
            out <= consumed + 2 * HEADER_LEN + conn.max_frame_out() + 64,
            "{out} bytes out for {consumed} in"
        );
    }
    if conn.wants_read() {
        let eof = conn.eof();
        if let Err(err) = &eof {
            closed_for(&conn, err);
        }
        while let Ok(Some(event)) = conn.poll() {
            if handle(&mut conn, event, &mut seen) {
                longest_text_fits(&conn);
            }
        }
        if server && conn.state() == State::PeerExited {
            conn.exit().unwrap();
        }
        conn.transmit();
    }
}

/// The largest single allocation a step may make: the input buffer (up to
/// a frame in progress plus one read, doubled by buffer growth) and the
/// output (no more than the input, plus one Error and small frames).
fn memory_bound(conn: &Connection) -> usize {
    let input = HEADER_LEN + conn.max_frame_in() + READ;
    let output = input + 2 * HEADER_LEN + conn.max_frame_out() + 64;
    2 * input.max(output) + SLACK
}

/// A rule broken by the peer: the machine is closed and has said why.
fn closed_for(conn: &Connection, err: &ProtocolError) {
    assert!(conn.is_closed(), "{err}: not closed");
    assert!(!conn.wants_read());
}

/// Acts on an event as a socket owner would and checks it; `true` for a
/// `Welcome`, whose limits the caller checks outside the memory bound (a
/// `Welcome` may raise them).
fn handle(conn: &mut Connection, event: Event, seen: &mut Seen) -> bool {
    match event {
        Event::Hello { version, features } => {
            assert!(version >= 1);
            assert_eq!(conn.state(), State::Admitting);
            assert!(!conn.wants_read());
            let negotiated = conn.accept(wide()).unwrap();
            assert_eq!(
                negotiated.features,
                features::agree(features, features::ALL)
            );
            assert!(!negotiated.has(features::HISTORY) || negotiated.has(features::ROOMS));
            assert_eq!(negotiated.max_frame, conn.max_frame_in());
            assert_eq!(
                seen.config
                    .outbound_for(negotiated.features)
                    .max_frame_len(),
                conn.max_frame_out()
            );
            assert_eq!(
                negotiated.max_frame + overhead(negotiated.features),
                conn.max_frame_out()
            );
            seen.naming = negotiated.has(features::ROOMS);
        }
        Event::Welcome(negotiated) => {
            assert_eq!(conn.state(), State::Open);
            assert_eq!(conn.max_frame_out(), negotiated.max_frame);
            assert!(!negotiated.has(features::HISTORY) || negotiated.has(features::ROOMS));
            // Every relay the server may send is accepted.
            let relay_max =
                (negotiated.max_frame + overhead(negotiated.features)).min(MAX_FRAME_LEN_CEILING);
            assert!(conn.max_frame_in() >= relay_max);
            return true;
        }
        Event::Message(msg) => {
            let agreed = conn.negotiated().map_or(0, |n| n.features);
            assert_eq!(msg.feature() & !agreed, 0, "{} not negotiated", msg.name());
            assert!(
                !matches!(msg, Message::Ping { .. }),
                "Ping is answered, not reported"
            );
            let history = agreed & features::HISTORY != 0;
            match conn.role() {
                Role::Server => {
                    assert!(msg.from_client(), "{}", msg.name());
                    assert!(
                        !(history && msg.is_numbered()),
                        "{} not numbered",
                        msg.name()
                    );
                    let login = matches!(
                        msg,
                        Message::Register { .. } | Message::Login { .. } | Message::LoginToken { .. }
                    );
                    if !matches!(msg, Message::Pong { .. }) {
                        if seen.naming {
                            // With AUTH a login may name the client too.
                            let auth = agreed & features::AUTH != 0;
                            assert!(
                                matches!(msg, Message::Nick { .. }) || (auth && login),
                                "{} before the client is named",
                                msg.name()
                            );
                            // As a server does once it has named the client.
                            conn.named();
                        } else {
                            assert!(!login, "{} after the client was named", msg.name());
                        }
                        seen.naming = false;
                    }
                    relays_fit(&seen.config, agreed, &msg);
                }
                Role::Client => {
                    assert!(msg.from_server(), "{}", msg.name());
                    if let Message::Stored { seq, .. } | Message::Unstored { seq, .. } = msg {
                        assert!((1..=conn.seq()).contains(&seq), "an answer to {seq}");
                    }
                    if history {
                        assert!(!matches!(msg, Message::Said { .. } | Message::Told { .. }));
                    }
                }
            }
        }
        Event::Numbered { seq, message } => {
            let agreed = conn.negotiated().map_or(0, |n| n.features);
            assert_eq!(conn.role(), Role::Server);
            assert_ne!(agreed & features::HISTORY, 0, "numbered without HISTORY");
            assert!(message.is_numbered(), "{} numbered", message.name());
            assert!(!seen.naming, "{} before Nick", message.name());
            seen.seq += 1;
            assert_eq!(seq, seen.seq);
            assert_eq!(conn.seq(), seq);
            relays_fit(&seen.config, agreed, &message);
        }
        Event::Exit => match conn.role() {
            Role::Server => conn.exit().unwrap(),
            Role::Client => assert!(conn.is_closed()),
        },
        Event::Error(_) => assert!(conn.is_closed()),
        _ => {}
    }
    false
}

/// What a client with `features` accepts beyond `Welcome.max_frame`.
fn overhead(features: u64) -> usize {
    if features & features::HISTORY != 0 {
        HISTORY_OVERHEAD
    } else if features & features::ROOMS != 0 {
        ROOMS_OVERHEAD
    } else {
        RELAY_OVERHEAD
    }
}

/// The widest stored form of `text`: ids of 9 bytes, the longest name, the
/// widest address.
fn widest(text: &str) -> Entry {
    Entry {
        id: u64::MAX,
        prev: u64::MAX - 1,
        at: u64::MAX,
        from: Member::new(longest_name(), wide()),
        text: text.to_owned(),
    }
}

/// Whatever text a server accepts it can pass on from the widest address
/// and the longest names: as a `Relay` within its limit to a version 1
/// client, as a `Said` or `Told` within the limit of a ROOMS session, and
/// as a `Posted`, `Direct` or one-entry `Page` within that of a HISTORY one.
fn relays_fit(config: &ServerConfig, agreed: u64, msg: &Message) {
    let text = match msg {
        Message::Send { text } | Message::Say { text, .. } | Message::Tell { text, .. } => text,
        _ => return,
    };
    let fits = |codec: ChatCodec, relay: Message| {
        codec
            .encode(&relay, &mut BytesMut::new())
            .unwrap_or_else(|e| panic!("an accepted {} relays: {e}", msg.name()));
    };
    if !matches!(msg, Message::Tell { .. }) {
        fits(config.outbound(), Message::relay(wide(), text.clone()));
    }
    if agreed & features::ROOMS != 0 {
        let from = Member::new(longest_name(), wide());
        let rooms = config.outbound_for(features::ROOMS);
        fits(
            rooms,
            Message::Said {
                room: longest_name(),
                from: from.clone(),
                text: text.clone(),
            },
        );
        fits(
            rooms,
            Message::Told {
                from,
                text: text.clone(),
            },
        );
    }
    if agreed & features::HISTORY != 0 {
        let history = config.outbound_for(features::ROOMS | features::HISTORY);
        fits(
            history,
            Message::Posted {
                room: longest_name(),
                entry: widest(text),
            },
        );
        fits(
            history,
            Message::Direct {
                entry: widest(text),
            },
        );
        fits(
            history,
            Message::Page {
                conversation: Conversation::Direct(longest_name()),
                entries: vec![widest(text)],
                missing: true,
                more: true,
            },
        );
    }
}

/// `max_text_len()` is the longest text whose `Send` the peer accepts.
fn longest_text_fits(conn: &Connection) {
    let max = conn.max_frame_out();
    if max > 70_000 {
        return; // a fuzzed Welcome may announce 16 MiB: too slow to copy
    }
    let codec = ChatCodec::with_max_frame_len(max).unwrap();
    let n = conn.max_text_len();
    let fits = |n: usize| {
        let text = "a".repeat(n);
        codec
            .encode(&Message::Send { text }, &mut BytesMut::new())
            .is_ok()
    };
    assert!(fits(n), "a text of {n} bytes does not fit {max}");
    assert!(!fits(n + 1), "a text of {} bytes fits {max}", n + 1);
}
