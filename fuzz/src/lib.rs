//! What the fuzz targets share: an allocator that records the largest single
//! allocation, and the codecs under test.
//!
//! bincode 2 has been reported (its issue #764) to allocate whatever size a
//! hostile length prefix claims. The decode target runs every codec call
//! under [`bounded`], so a claimed length can never turn into an allocation
//! larger than the frame limit allows: the fuzzer would report it as a crash.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use chat_proto::{ChatCodec, Entry, MIN_FRAME_LEN, Member, RoomInfo};

/// Room for small bookkeeping allocations (error messages and the like) on
/// top of a bound derived from the frame limit.
pub const SLACK: usize = 1024;

/// The codecs every target exercises: the default 64 KiB limit, and the
/// smallest limit allowed, where oversize frames and messages are common.
pub fn codecs() -> [ChatCodec; 2] {
    [
        ChatCodec::new(),
        ChatCodec::with_max_frame_len(MIN_FRAME_LEN).expect("MIN_FRAME_LEN is a valid limit"),
    ]
}

/// The largest single allocation decoding `payload` bytes may need for the
/// message itself: a list grows with the elements actually present, and an
/// element takes more room in memory than on the wire (a `RoomInfo` is 2
/// bytes at least on the wire, 32 in memory; a `Member` 7 and 48; an
/// `Entry` 11 and 96), doubled because a growing `Vec` may reserve twice
/// what it holds.
pub fn decoded_bound(payload: usize) -> usize {
    let member = size_of::<Member>().div_ceil(7);
    let room = size_of::<RoomInfo>().div_ceil(2);
    let entry = size_of::<Entry>().div_ceil(11);
    2 * payload * member.max(room).max(entry)
}

/// The system allocator, recording the largest size requested.
#[derive(Debug)]
pub struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static GLOBAL: Tracking = Tracking;

// SAFETY: each method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract; the only addition is an atomic max on
// the requested size, which neither allocates nor touches the memory. This is
// the project's only `unsafe`, allowed in this fuzz-only crate because a
// global allocator cannot be written without it; the library crates forbid it.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f`, then panics if any single allocation made meanwhile was larger
/// than `bound` bytes. The fuzz targets are single-threaded, so everything
/// recorded between the two points is `f`'s.
pub fn bounded<T>(bound: usize, what: &str, f: impl FnOnce() -> T) -> T {
    LARGEST.store(0, Ordering::Relaxed);
    let out = f();
    let largest = LARGEST.swap(0, Ordering::Relaxed);
    assert!(
        largest <= bound,
        "{what}: one allocation of {largest} bytes, above the bound of {bound}"
    );
    out
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use chat_proto::{ChatCodec, DecodeError};

    use super::bounded;

    /// A `Roster`, `Rooms` or `Page` payload claiming 2^64 - 1 elements in a few
    /// bytes: serde's own `Vec` would reserve up to 1 MiB for the claim;
    /// chat-proto's list decoder reserves nothing it has not read.
    #[test]
    fn a_huge_list_count_reserves_nothing() {
        let count = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let roster = [&[0x17, 0x00][..], &count, &[0x01, b'a']].concat();
        let rooms = [&[0x18][..], &count, &[0x01, b'a', 0x05]].concat();
        // Page { Room("a"), entries: 2^64 - 1 claimed, one id present }.
        let page = [&[0x20, 0x00, 0x01, b'a'][..], &count, &[0x01]].concat();
        for payload in [roster, rooms, page] {
            let mut buf = BytesMut::from(&(payload.len() as u32).to_be_bytes()[..]);
            buf.extend_from_slice(&payload);
            let got = bounded(1024, "hostile list", || ChatCodec::new().decode(&mut buf));
            assert!(matches!(got, Err(DecodeError::Malformed(_))), "{got:?}");
        }
    }

    #[test]
    fn the_tracker_sees_a_large_allocation() {
        assert_eq!(bounded(64, "small", || vec![1u8; 64]).len(), 64);
        let big = std::panic::catch_unwind(|| bounded(64, "big", || vec![1u8; 65]));
        assert!(big.is_err());
        let grown = std::panic::catch_unwind(|| {
            let mut v = vec![1u8; 8];
            bounded(64, "grown", || v.resize(1000, 0));
        });
        assert!(grown.is_err());
    }
}
