//! The registry of connected peers and the fan-out policy.
//!
//! The room holds each peer's [`Outbox`], never a socket. A broadcast takes
//! the read lock and pushes the same [`Bytes`] into every other peer's
//! outbox (a reference-count increment, no copy) and never waits: a peer
//! whose outbox is full is a slow consumer, marked evicted there, and its
//! session closes it. Joins and leaves take the write lock briefly; nothing
//! holds the lock across an `.await`.
//!
//! Join and leave notices are batched: they collect in one buffer that is
//! pushed to everyone as a single shared frame run, at the latest
//! [`PRESENCE_DELAY`] later and always before the next relay (so a peer's
//! `Joined` still precedes its first message, and its last message its
//! `Left`). A crowd of N arriving at once would otherwise queue N²/2
//! separate notices; batched, each peer queues one buffer per batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// Longest a join or leave notice waits for others to share its batch.
pub(crate) const PRESENCE_DELAY: Duration = Duration::from_millis(10);

/// A batch this large is sent at once rather than after the delay.
const PRESENCE_BATCH: usize = 16 * 1024;

/// A queue this small is kept when drained; a larger one is freed, so that a
/// burst (a join storm, a busy minute) leaves no memory behind on an idle
/// connection.
const KEEP: usize = 8;

/// A peer's bounded queue of encoded frames: the room pushes, the peer's own
/// session drains. Unlike a channel, it gives its memory back when drained,
/// and it carries the eviction mark, so an idle peer costs one small
/// allocation.
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
        let mut state = self.lock();
        if state.closed {
            return true;
        }
        if state.evicted {
            return false;
        }
        if state.frames.len() >= self.depth || state.bytes + frame.len() > self.max_bytes {
            state.evicted = true;
            state.frames = VecDeque::new();
            state.bytes = 0;
            drop(state);
            self.kick.notify_one();
            return false;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Moves up to `max` frames into `out`, oldest first.
    pub(crate) fn drain_into(&self, out: &mut Vec<Bytes>, max: usize) -> Result<(), Evicted> {
        let mut state = self.lock();
        if state.evicted {
            return Err(Evicted);
        }
        let n = state.frames.len().min(max);
        let mut taken = 0;
        out.extend(state.frames.drain(..n).inspect(|f| taken += f.len()));
        state.bytes -= taken;
        if state.frames.is_empty() && state.frames.capacity() > KEEP {
            state.frames = VecDeque::new();
        }
        Ok(())
    }

    /// Waits until something was pushed since the last wait. May wake once
    /// spuriously; callers drain and check.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Waits until the peer is evicted.
    pub(crate) async fn evicted(&self) {
        self.kick.notified().await;
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

/// A connected (welcomed) peer, as the others see it.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Unique for the server's lifetime; addresses can be reused.
    pub(crate) id: u64,
    /// The peer's bounded outbox of encoded frames.
    pub(crate) outbox: Arc<Outbox>,
}

/// Every welcomed peer.
#[derive(Debug, Default)]
pub(crate) struct Room {
    peers: RwLock<Vec<Peer>>,
    /// Join and leave notices not yet sent.
    presence: Mutex<Presence>,
    /// Whether `presence` holds anything: checked on every broadcast
    /// without taking the lock.
    pending: AtomicBool,
    /// Signalled when a batch starts, for the task that sends it on time.
    started: Notify,
}

#[derive(Debug, Default)]
struct Presence {
    /// `Joined`/`Left` frames, back to back.
    frames: BytesMut,
    /// Peers whose own `Joined` is in `frames`, with the offset just past
    /// it: they receive only what follows, not their own notice.
    joiners: Vec<(u64, usize)>,
}

impl Room {
    /// Adds `peer`; it receives every broadcast made from now on.
    pub(crate) fn join(&self, peer: Peer) {
        self.write().push(peer);
    }

    /// Removes the peer `id`, if present.
    pub(crate) fn leave(&self, id: u64) {
        let mut peers = self.write();
        if let Some(i) = peers.iter().position(|p| p.id == id) {
            peers.swap_remove(i);
        }
    }

    /// Number of peers in the room.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    /// Queues a `Joined` or `Left` frame for everyone in the room; `joiner`
    /// is the peer a `Joined` announces, who must not receive it.
    pub(crate) fn announce(&self, frame: &[u8], joiner: Option<u64>) {
        let mut presence = self.lock_presence();
        let first = presence.frames.is_empty();
        presence.frames.extend_from_slice(frame);
        if let Some(id) = joiner {
            let end = presence.frames.len();
            presence.joiners.push((id, end));
        }
        self.pending.store(true, Ordering::Release);
        let full = presence.frames.len() >= PRESENCE_BATCH;
        drop(presence);
        if full {
            self.flush_presence();
        } else if first {
            self.started.notify_one();
        }
    }

    /// Sends each batch of notices [`PRESENCE_DELAY`] after it starts
    /// (unless a broadcast sent it sooner). Runs until dropped.
    pub(crate) async fn send_presence(&self) {
        loop {
            self.started.notified().await;
            tokio::time::sleep(PRESENCE_DELAY).await;
            self.flush_presence();
        }
    }

    /// Sends the pending notices, if any, to everyone in the room.
    pub(crate) fn flush_presence(&self) {
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        // Held while pushing: a broadcast racing this one waits here, so its
        // relay cannot overtake a notice that must come first.
        let mut presence = self.lock_presence();
        if presence.frames.is_empty() {
            return;
        }
        let batch = presence.frames.split().freeze();
        let joiners = std::mem::take(&mut presence.joiners);
        for peer in self.read().iter() {
            let bytes = match joiners.iter().find(|(id, _)| *id == peer.id) {
                Some(&(_, end)) if end == batch.len() => continue,
                Some(&(_, end)) => batch.slice(end..),
                None => batch.clone(),
            };
            peer.outbox.push(bytes);
        }
        self.pending.store(false, Ordering::Release);
    }

    /// Offers `bytes` to every peer but `from`, without waiting. A peer whose
    /// outbox is full is evicted; one that is already gone is skipped.
    /// Pending notices go first.
    pub(crate) fn broadcast(&self, from: u64, bytes: &Bytes) {
        self.flush_presence();
        let peers = self.read();
        for peer in peers.iter().filter(|p| p.id != from) {
            peer.outbox.push(bytes.clone());
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Peer>> {
        // A panic elsewhere cannot leave the list half-updated: push and
        // swap_remove either happen or not. Keep serving.
        self.peers.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Peer>> {
        self.peers.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_presence(&self) -> MutexGuard<'_, Presence> {
        self.presence.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, depth: usize) -> (Peer, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(depth, usize::MAX));
        (
            Peer {
                id,
                outbox: outbox.clone(),
            },
            outbox,
        )
    }

    #[test]
    fn broadcast_skips_the_sender_and_shares_the_bytes() {
        let room = Room::default();
        let (a, oa) = peer(1, 4);
        let (b, ob) = peer(2, 4);
        room.join(a);
        room.join(b);
        let bytes = Bytes::from_static(b"frame");
        room.broadcast(1, &bytes);
        let mut got = Vec::new();
        oa.drain_into(&mut got, 8).unwrap();
        assert!(got.is_empty());
        ob.drain_into(&mut got, 8).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn full_outbox_evicts_only_that_peer() {
        let room = Room::default();
        let (a, oa) = peer(1, 1);
        let (b, ob) = peer(2, 8);
        room.join(a);
        room.join(b);
        for _ in 0..3 {
            room.broadcast(9, &Bytes::from_static(b"x"));
        }
        let mut got = Vec::new();
        assert_eq!(oa.drain_into(&mut got, 8), Err(Evicted));
        ob.drain_into(&mut got, 8).unwrap();
        assert_eq!(got.len(), 3);
        room.leave(1);
        assert_eq!(room.len(), 1);
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

    fn drain(o: &Outbox) -> Vec<u8> {
        let mut got = Vec::new();
        o.drain_into(&mut got, usize::MAX).unwrap();
        got.concat()
    }

    #[test]
    fn joiners_get_later_notices_but_not_their_own() {
        let room = Room::default();
        let (a, oa) = peer(1, 8);
        let (b, ob) = peer(2, 8);
        let (c, oc) = peer(3, 8);
        room.join(a);
        room.join(b);
        room.announce(b"J2", Some(2));
        room.join(c);
        room.announce(b"J3", Some(3));
        room.announce(b"L9", None);
        assert!(drain(&oa).is_empty(), "nothing is sent before the flush");
        room.flush_presence();
        assert_eq!(drain(&oa), b"J2J3L9");
        assert_eq!(drain(&ob), b"J3L9");
        assert_eq!(drain(&oc), b"L9");
        room.flush_presence();
        assert!(drain(&oa).is_empty(), "a batch is sent once");
    }

    #[test]
    fn a_relay_never_overtakes_its_senders_join() {
        let room = Room::default();
        let (a, oa) = peer(1, 8);
        let (b, _ob) = peer(2, 8);
        room.join(a);
        room.join(b);
        room.announce(b"J2", Some(2));
        room.broadcast(2, &Bytes::from_static(b"R2"));
        assert_eq!(drain(&oa), b"J2R2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_goes_out_after_the_delay_on_its_own() {
        let room = Arc::new(Room::default());
        let (a, oa) = peer(1, 8);
        room.join(a);
        let pacer = tokio::spawn({
            let room = room.clone();
            async move { room.send_presence().await }
        });
        room.announce(b"J7", Some(7));
        let t0 = tokio::time::Instant::now();
        tokio::time::timeout(std::time::Duration::from_secs(1), oa.ready())
            .await
            .expect("the notice arrives");
        assert!(t0.elapsed() >= PRESENCE_DELAY);
        assert_eq!(drain(&oa), b"J7");
        pacer.abort();
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
