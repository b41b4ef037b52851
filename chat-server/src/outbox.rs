//! A peer's outbox: the bounded queue of encoded frames that the hub fills
//! and the peer's own session drains.
//!
//! Pushing never waits. A push that finds the queue full marks the peer
//! evicted (a slow consumer) and wakes its session, which closes it; the
//! senders go on. Unlike a channel, the queue holds no memory once drained:
//! a drain that takes everything hands the queue's buffer over to the
//! session's writer, which frees it once written, so an idle peer's outbox
//! costs nothing beyond its own struct.
//!
//! Frames are queued as references to the bytes their senders share. Once
//! a quarter of the depth is queued, small frames are copied instead, back
//! to back, into one buffer of the peer's own (the tail), which counts as
//! one buffer. A member of busy rooms receives a few relays at a time from
//! each of many senders: queued one reference each, a thousand senders'
//! few bytes filled the depth and evicted a client holding a tenth of its
//! byte limit, and each reference was a slice of its own in the writes.
//! Below a quarter of the depth nothing is copied, so a client that keeps
//! up costs no memory of its own.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A queue is made this large at its first push: the few frames that
/// arrive between two drains fit without growing it.
const FIRST: usize = 8;

/// Frames up to this long may be copied into the tail; longer ones are
/// always shared.
const COPY_MAX: usize = 1024;

/// The tail's first allocation.
const TAIL_FIRST: usize = 2048;

/// A tail this long is closed and queued as a buffer; the next small frame
/// starts another (so that the tail never grows by copying much).
const TAIL_MAX: usize = 64 * 1024;

/// A peer's bounded queue of encoded frames, with its eviction mark.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Signalled on every push; a permit is stored when the session is not
    /// waiting, so no wake-up is lost.
    ready: Notify,
    /// Signalled on eviction, which the session must notice even while it
    /// waits for a full socket rather than for frames.
    kick: Notify,
    /// The limits, in four bytes each: this struct is in every client.
    depth: u32,
    max_bytes: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Buffers queued, oldest first; `tail` comes after them.
    frames: Vec<Bytes>,
    /// Small frames pushed since the last of `frames`, copied back to back.
    tail: Vec<u8>,
    /// Bytes in `frames` and `tail` (rosters aside).
    bytes: usize,
    /// Set when a push found the queue full: the peer is a slow consumer.
    evicted: bool,
    /// Set when the session has left: pushes are dropped.
    closed: bool,
}

/// The session must close: its outbox overflowed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Evicted;

impl Outbox {
    /// An empty outbox holding at most `depth` buffers and `max_bytes`
    /// bytes (either past `u32::MAX`: no limit that could be reached).
    pub(crate) fn new(depth: usize, max_bytes: usize) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            kick: Notify::new(),
            depth: clamp(depth),
            max_bytes: clamp(max_bytes),
        }
    }

    fn depth(&self) -> usize {
        self.depth as usize
    }

    fn max_bytes(&self) -> usize {
        self.max_bytes as usize
    }

    /// Queues `frame` without waiting. False if the queue is full (the
    /// peer is then marked evicted and woken) or already evicted.
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        self.offer(frame, true)
    }

    /// Queues `frame` outside the byte limit (not the depth): for a
    /// newcomer's roster, whose size is set by the room rather than by how
    /// fast the peer reads, and whose bytes are shared by every newcomer of
    /// its batch. While it waits, the queue may hold that much more.
    pub(crate) fn push_roster(&self, frame: Bytes) -> bool {
        self.offer(frame, false)
    }

    fn offer(&self, frame: Bytes, limit_bytes: bool) -> bool {
        let mut state = self.lock();
        if state.closed {
            return true;
        }
        if state.evicted {
            return false;
        }
        let tail = state.tail.len();
        let small = frame.len() <= COPY_MAX && (tail > 0 || state.frames.len() >= self.depth() / 4);
        // Whether the push adds a buffer: anything but a small frame that
        // fits the tail under way. (`small`: copied, not shared.)
        let grows = !(small && tail > 0 && tail + frame.len() <= TAIL_MAX);
        let too_many_bytes = limit_bytes && state.bytes + frame.len() > self.max_bytes();
        if (grows && state.buffers() >= self.depth()) || too_many_bytes {
            state.evicted = true;
            state.frames = Vec::new();
            state.tail = Vec::new();
            state.bytes = 0;
            drop(state);
            self.kick.notify_one();
            return false;
        }
        if limit_bytes {
            state.bytes += frame.len();
        }
        if small {
            if tail + frame.len() > TAIL_MAX {
                state.seal();
            }
            if state.tail.capacity() == 0 {
                state.tail.reserve_exact(TAIL_FIRST);
            }
            state.tail.extend_from_slice(&frame);
        } else {
            state.seal();
            state.queue(frame);
        }
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Moves up to `max` buffers into `out`, oldest first. Returns the
    /// bytes the queue held (for the metrics' high-water mark).
    pub(crate) fn drain_into(&self, out: &mut Vec<Bytes>, max: usize) -> Result<usize, Evicted> {
        let mut state = self.lock();
        if state.evicted {
            return Err(Evicted);
        }
        let held = state.bytes;
        if state.buffers() <= max {
            state.seal();
            state.bytes = 0;
            if out.is_empty() {
                // All of it (perhaps nothing) into an empty writer: hand
                // the buffer over rather than copy, so the queue holds no
                // memory until the next push, and the writer, which frees
                // its buffer once written, no allocation of its own. A
                // session always drains into an empty writer before it
                // goes idle.
                *out = std::mem::take(&mut state.frames);
                return Ok(held);
            }
            out.append(&mut state.frames);
        } else {
            let mut taken = 0;
            out.extend(state.frames.drain(..max).inspect(|f| taken += f.len()));
            // Rosters were never counted.
            state.bytes = state.bytes.saturating_sub(taken);
        }
        if state.frames.is_empty() && state.frames.capacity() > FIRST {
            // A burst (a join storm) leaves no large buffer behind.
            state.frames = Vec::new();
        }
        Ok(held)
    }

    /// Whether the queue is half full (frames or bytes): the session then
    /// takes no more requests from its client until its writer has drained
    /// it, so that answers to the client's own requests never evict it.
    pub(crate) fn backed_up(&self) -> bool {
        let state = self.lock();
        state.buffers() >= (self.depth() / 2).max(1) || state.bytes >= (self.max_bytes() / 2).max(1)
    }

    /// Wakes the session as a push would, with nothing pushed: something it
    /// waits for besides its queue has changed.
    pub(crate) fn poke(&self) {
        self.ready.notify_one();
    }

    /// Waits until something was pushed since the last wait. May wake once
    /// spuriously; callers drain and check.
    pub(crate) fn ready(&self) -> Notified<'_> {
        self.ready.notified()
    }

    /// Waits until the peer is evicted.
    pub(crate) fn evicted(&self) -> Notified<'_> {
        self.kick.notified()
    }

    /// The session is leaving: later pushes are dropped.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Buffers queued, the tail counting as one.
    fn buffers(&self) -> usize {
        self.frames.len() + usize::from(!self.tail.is_empty())
    }

    /// Queues `frame` behind the others.
    fn queue(&mut self, frame: Bytes) {
        if self.frames.capacity() == 0 {
            self.frames.reserve_exact(FIRST);
        }
        self.frames.push(frame);
    }

    /// Closes the tail: queues it as a buffer, and the next small frame
    /// starts another.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let tail = Bytes::from(std::mem::take(&mut self.tail));
            self.queue(tail);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A frame too long to copy, each byte `i`: queued as it is.
    fn big(i: u8) -> Bytes {
        Bytes::from(vec![i; COPY_MAX + 1])
    }

    /// Every byte drained, in order, and the buffers they came in.
    fn drained(o: &Outbox, max: usize) -> (Vec<u8>, usize) {
        let mut got = Vec::new();
        o.drain_into(&mut got, max).unwrap();
        (got.iter().flatten().copied().collect(), got.len())
    }

    #[test]
    fn too_many_bytes_evicts() {
        let o = Outbox::new(100, 10);
        assert!(o.push(Bytes::from_static(b"12345")));
        assert!(o.push(Bytes::from_static(b"12345")));
        let mut got = Vec::new();
        o.drain_into(&mut got, 1).unwrap();
        assert!(o.push(Bytes::from_static(b"12345")), "draining frees room");
        assert!(!o.push(Bytes::from_static(b"1")), "11 bytes > 10");
        assert_eq!(o.drain_into(&mut got, 8), Err(Evicted));
    }

    #[test]
    fn too_many_buffers_evicts_and_the_tail_counts_as_one() {
        let o = Outbox::new(3, usize::MAX);
        assert!(o.push(big(1)));
        assert!(o.push(Bytes::from_static(b"a")));
        assert!(o.push(Bytes::from_static(b"b")), "the tail under way");
        assert!(o.push(big(2)));
        assert!(!o.push(big(3)), "a fourth buffer");
    }

    /// A member of busy rooms gets a few relays from each of many senders:
    /// the depth does not run out before the bytes do (a thousand small
    /// buffers used to evict a client holding 100 KB of an 8 MiB limit).
    #[test]
    fn many_senders_small_relays_are_held_to_the_byte_limit() {
        let o = Outbox::new(1024, 8 << 20);
        let relays = Bytes::from(vec![b'r'; 300]);
        for _ in 0..10_000 {
            assert!(o.push(relays.clone()));
        }
        let (bytes, buffers) = drained(&o, usize::MAX);
        assert_eq!(bytes.len(), 3_000_000);
        assert!(
            buffers <= 256 + 3_000_000 / TAIL_MAX + 1,
            "{buffers} buffers"
        );
    }

    /// A client that keeps up holds references only: no copy, no memory of
    /// its own.
    #[test]
    fn a_shallow_queue_shares_small_frames() {
        let o = Outbox::new(1024, usize::MAX);
        let frame = Bytes::from_static(b"relay");
        for _ in 0..3 {
            assert!(o.push(frame.clone()));
        }
        let mut got = Vec::new();
        o.drain_into(&mut got, usize::MAX).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|b| b.as_ptr() == frame.as_ptr()));
    }

    #[test]
    fn a_deep_queue_copies_small_frames_in_order() {
        let o = Outbox::new(16, usize::MAX);
        for i in 0..4 {
            assert!(o.push(big(i)));
        }
        for frame in [&b"ab"[..], b"c", b"d"] {
            assert!(o.push(Bytes::copy_from_slice(frame)));
        }
        assert!(o.push(big(b'e')));
        assert!(o.push(Bytes::from_static(b"f")));
        let (bytes, buffers) = drained(&o, usize::MAX);
        let mut want: Vec<u8> = (0..4).flat_map(big).collect();
        want.extend(b"abcd");
        want.extend(big(b'e'));
        want.push(b'f');
        assert_eq!(bytes, want);
        assert_eq!(buffers, 7, "4 long frames, abcd, the long frame, f");
    }

    #[test]
    fn a_long_tail_is_closed() {
        // From the second frame on, a quarter of the depth is queued.
        let o = Outbox::new(4, usize::MAX);
        let frame = Bytes::from(vec![7; COPY_MAX]);
        let n = 2 * TAIL_MAX / COPY_MAX + 1;
        for _ in 0..n {
            assert!(o.push(frame.clone()));
        }
        let mut got = Vec::new();
        o.drain_into(&mut got, usize::MAX).unwrap();
        assert_eq!(got.len(), 3, "the first frame, two full tails");
        assert!(got.iter().all(|b| b.len() <= TAIL_MAX));
        assert_eq!(got.iter().map(Bytes::len).sum::<usize>(), n * COPY_MAX);
    }

    #[test]
    fn drain_respects_max_and_order() {
        let o = Outbox::new(16, usize::MAX);
        for i in 0..5u8 {
            assert!(o.push(Bytes::from(vec![i])));
        }
        let mut got = Vec::new();
        o.drain_into(&mut got, 2).unwrap();
        o.drain_into(&mut got, 10).unwrap();
        let order: Vec<u8> = got.iter().map(|b| b[0]).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let o = Outbox::new(1024, usize::MAX);
        // Long enough to be queued one buffer each (past a quarter of the
        // depth, shorter ones would share the tail).
        for i in 0..500 {
            assert!(o.push(big(i as u8)));
        }
        let mut got = Vec::new();
        o.drain_into(&mut got, usize::MAX).unwrap();
        assert_eq!(got.len(), 500);
        assert_eq!(o.lock().frames.capacity(), 0);
    }

    /// An idle peer's outbox holds no buffer: the last drain, into an empty
    /// writer, takes it (it used to keep up to 8 slots, 256 bytes, per
    /// client for ever).
    #[test]
    fn a_drained_outbox_holds_no_buffer() {
        let o = Outbox::new(1024, usize::MAX);
        for _ in 0..3 {
            assert!(o.push(Bytes::from_static(b"frame")));
        }
        // Drained into a writer still busy: the queue is kept for more.
        let mut busy = vec![Bytes::from_static(b"half-written")];
        o.drain_into(&mut busy, usize::MAX).unwrap();
        assert_eq!(busy.len(), 4);
        assert!(o.lock().frames.capacity() > 0);
        // The writer is done; the next look finds nothing, and the buffer
        // goes with it.
        let mut idle = Vec::new();
        o.drain_into(&mut idle, usize::MAX).unwrap();
        assert!(idle.is_empty());
        assert_eq!(o.lock().frames.capacity(), 0);
        // Handed over whole, in order.
        for i in 0..5u8 {
            assert!(o.push(Bytes::from(vec![i])));
        }
        let mut got = Vec::new();
        o.drain_into(&mut got, usize::MAX).unwrap();
        assert_eq!(
            got.iter().map(|b| b[0]).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(o.lock().frames.capacity(), 0);
        assert_eq!(o.lock().tail.capacity(), 0);
        assert_eq!(o.lock().bytes, 0);
    }

    #[test]
    fn pushes_after_close_are_dropped() {
        let o = Outbox::new(1, usize::MAX);
        o.close();
        assert!(o.push(Bytes::from_static(b"a")));
        assert!(o.push(Bytes::from_static(b"b")));
        let mut got = Vec::new();
        o.drain_into(&mut got, 8).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn a_roster_is_not_held_to_the_byte_limit() {
        let o = Outbox::new(4, 10);
        assert!(o.push_roster(Bytes::from(vec![0; 100])));
        assert!(o.push(Bytes::from_static(b"12345")));
        let mut got = Vec::new();
        o.drain_into(&mut got, 8).unwrap();
        assert_eq!(got.len(), 2);
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_session() {
        let o = Arc::new(Outbox::new(4, usize::MAX));
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.ready().await }
        });
        o.push(Bytes::from_static(b"x"));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
