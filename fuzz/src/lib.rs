//! What the fuzz targets share: an allocator that records the largest single
//! allocation, and the codecs under test.
//!
//! bincode 2 has been reported (its issue #764) to allocate whatever size a
//! hostile length prefix claims. The decode target runs every codec call
//! under [`bounded`], so a claimed length can never turn into an allocation
//! larger than the frame limit allows: the fuzzer would report it as a crash.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use chat_proto::{ChatCodec, MIN_FRAME_LEN};

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
    use super::bounded;

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
