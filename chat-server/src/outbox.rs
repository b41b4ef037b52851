//! A peer's outbox: the bounded queue of encoded frames that the hub fills
//! and the peer's own session drains.
//!
//! Pushing never waits. A push that finds the queue full marks the peer
//! evicted (a slow consumer) and wakes its session, which closes it; the
//! senders go on. Unlike a channel, the queue holds no memory once drained:
//! a drain that takes everything hands the queue's buffer over to the
//! session's writer, which frees it once written, so an idle peer's outbox
//! costs nothing beyond its own struct.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A queue is made this large at its first push: the few frames that
/// arrive between two drains fit without growing it.
const FIRST: usize = 8;

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
    depth: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Bytes in `frames`.
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
    /// An empty outbox holding at most `depth` frames and `max_bytes` bytes.
    pub(crate) fn new(depth: usize, max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            kick: Notify::new(),
            depth,
            max_bytes,
        }
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
        let too_many_bytes = limit_bytes && state.bytes + frame.len() > self.max_bytes;
        if state.frames.len() >= self.depth || too_many_bytes {
            state.evicted = true;
            state.frames = VecDeque::new();
            state.bytes = 0;
            drop(state);
            self.kick.notify_one();
            return false;
        }
        if limit_bytes {
            state.bytes += frame.len();
        }
        if state.frames.capacity() == 0 {
            state.frames.reserve_exact(FIRST);
        }
        state.frames.push_back(frame);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Moves up to `max` frames into `out`, oldest first. Returns the
    /// bytes the queue held (for the metrics' high-water mark).
    pub(crate) fn drain_into(&self, out: &mut Vec<Bytes>, max: usize) -> Result<usize, Evicted> {
        let mut state = self.lock();
        if state.evicted {
            return Err(Evicted);
        }
        let held = state.bytes;
        let n = state.frames.len().min(max);
        if n == state.frames.len() && out.is_empty() {
            // All of it (perhaps nothing) into an empty writer: hand the
            // buffer over rather than copy, so the queue holds no memory
            // until the next push, and the writer, which frees its buffer
            // once written, no allocation of its own (one allocation per
            // drain either way). A session always drains into an empty
            // writer before it goes idle.
            *out = Vec::from(std::mem::take(&mut state.frames));
            state.bytes = 0;
            return Ok(held);
        }
        let mut taken = 0;
        out.extend(state.frames.drain(..n).inspect(|f| taken += f.len()));
        // Rosters were never counted.
        state.bytes = state.bytes.saturating_sub(taken);
        if state.frames.is_empty() && state.frames.capacity() > FIRST {
            // A burst (a join storm) leaves no large buffer behind.
            state.frames = VecDeque::new();
        }
        Ok(held)
    }

    /// Whether the queue is half full (frames or bytes): the session then
    /// takes no more requests from its client until its writer has drained
    /// it, so that answers to the client's own requests never evict it.
    pub(crate) fn backed_up(&self) -> bool {
        let state = self.lock();
        state.frames.len() >= (self.depth / 2).max(1) || state.bytes >= (self.max_bytes / 2).max(1)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

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
        for _ in 0..500 {
            assert!(o.push(Bytes::from_static(b"joined")));
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
