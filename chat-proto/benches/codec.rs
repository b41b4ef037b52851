//! Codec throughput at four text sizes, against a plain copy of the same bytes.
//!
//! For each size, group `codec/<size>` holds:
//! - `encode`: `ChatCodec::encode` of a `Send` into a reused buffer;
//! - `memcpy`: `BytesMut::extend_from_slice` of as many bytes into a reused
//!   buffer, the floor `encode` is measured against;
//! - `decode`: that frame copied into a reused receive buffer, then
//!   `ChatCodec::decode`d (the message allocates its text);
//! - `utf8_check`: `std::str::from_utf8` over the text alone, the part of
//!   decoding no implementation can skip;
//! - `frame_relay`: `ChatCodec::frame` of a `Relay`, which allocates the frame;
//! - `copy_alloc`: `BytesMut::from` a slice as long as that relay frame, the
//!   floor `frame_relay` is measured against.
//!
//! Throughput is in bytes of frame (header included); messages per second is
//! one over the time per iteration.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use chat_proto::{ChatCodec, Message};
use criterion::{Criterion, Throughput};

const SIZES: [(usize, &str); 4] = [
    (16, "16B"),
    (64, "64B"),
    (1024, "1KiB"),
    (60 * 1024, "60KiB"),
];

/// `len` bytes of text mixing ASCII and Chinese, cut on a character boundary
/// and padded with ASCII to the exact length.
fn text(len: usize) -> String {
    let mut s = String::with_capacity(len);
    for c in "hello 你好 world 世界 ".chars().cycle() {
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    while s.len() < len {
        s.push('.');
    }
    s
}

fn bench(c: &mut Criterion) {
    let codec = ChatCodec::new();
    for (size, name) in SIZES {
        let send = Message::Send { text: text(size) };
        let relay = Message::relay("127.0.0.1:3075".parse().unwrap(), text(size));
        let frame = codec.frame(&send).unwrap();
        let relay_frame = codec.frame(&relay).unwrap();

        let mut g = c.benchmark_group(format!("codec/{name}"));
        g.throughput(Throughput::Bytes(frame.len() as u64));

        let mut buf = BytesMut::with_capacity(frame.len());
        g.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                codec.encode(black_box(&send), &mut buf).unwrap();
            })
        });

        let src = frame.as_bytes().clone();
        g.bench_function("memcpy", |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(black_box(&src));
            })
        });

        // As a connection does it: the frame arrives in a reused receive
        // buffer (one copy, as from a socket read), then is decoded and the
        // message dropped. Fresh buffers per iteration would mostly measure
        // page faults on new memory.
        let mut rx = BytesMut::with_capacity(frame.len());
        g.bench_function("decode", |b| {
            b.iter(|| {
                rx.extend_from_slice(black_box(&src));
                codec.decode(&mut rx).unwrap()
            })
        });

        // The floor for decoding: the text must be checked to be UTF-8.
        let Message::Send { text: sent } = &send else {
            unreachable!()
        };
        g.bench_function("utf8_check", |b| {
            b.iter(|| std::str::from_utf8(black_box(sent.as_bytes())).is_ok())
        });

        g.throughput(Throughput::Bytes(relay_frame.len() as u64));
        g.bench_function("frame_relay", |b| {
            b.iter(|| codec.frame(black_box(&relay)).unwrap())
        });

        let relay_src = relay_frame.as_bytes().clone();
        g.bench_function("copy_alloc", |b| {
            b.iter(|| BytesMut::from(black_box(&relay_src[..])))
        });
        g.finish();
    }
}

fn main() {
    // What `criterion_main!` expands to, written out so no undocumented
    // `pub fn` is generated. The machine is shared: short, repeatable runs.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
