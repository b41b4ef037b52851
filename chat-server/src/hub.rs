//! The registry: rooms by name, their members, and the fan-out policy.
//!
//! A room holds each member's [`Outbox`], never a socket. A broadcast takes
//! the room's read lock and pushes the same [`Bytes`] into every other
//! member's outbox (a reference count, no copy) and never waits: a member
//! whose outbox is full is a slow consumer, marked evicted there, and its
//! session closes it. Joins, leaves and presence batches take the write lock
//! briefly; nothing holds a lock across an `.await`.
//!
//! Being in a room is a [`Membership`], a value whose drop leaves the room
//! and announces `Left`: no early return, error or panic in a session can
//! leave a ghost behind.
//!
//! Every session joins the hub's default room, the lobby, which behaves as
//! the single room of earlier versions; named rooms are ready for the
//! protocol capability that will let clients choose one.
//!
//! On shutdown the hub is [closed](Hub::close) before sessions are told:
//! closing waits for the broadcasts under way and refuses later ones, so
//! each relay reaches either every member's outbox or none, and a session
//! that drains its outbox after the signal has everything it will ever get.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use chat_proto::ChatCodec;
use tokio::sync::Notify;

use crate::outbox::Outbox;
use crate::peer::{Peer, PeerId};
use crate::presence::Presence;

/// How rooms announce joins and leaves.
#[derive(Debug, Clone)]
pub(crate) struct PresencePolicy {
    /// Whether notices are sent at all.
    pub(crate) enabled: bool,
    /// Longest a notice waits for others to share its batch.
    pub(crate) delay: Duration,
    /// A batch this large goes out at once.
    pub(crate) batch: usize,
    /// Encodes the notices.
    pub(crate) codec: ChatCodec,
}

/// Every room of the server.
#[derive(Debug)]
pub(crate) struct Hub {
    lobby: Arc<Room>,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    next_id: AtomicU64,
    policy: PresencePolicy,
    /// Signalled when some room starts a batch of notices.
    started: Arc<Notify>,
}

impl Hub {
    /// A hub with an empty lobby.
    pub(crate) fn new(policy: PresencePolicy) -> Self {
        let started = Arc::new(Notify::new());
        Hub {
            lobby: Arc::new(Room::new(&policy, started.clone())),
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            policy,
            started,
        }
    }

    /// A fresh peer identity.
    pub(crate) fn next_id(&self) -> PeerId {
        PeerId::new(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The default room, which every client joins.
    pub(crate) fn lobby(&self) -> &Arc<Room> {
        &self.lobby
    }

    /// The room called `name`, created empty if there is none yet.
    #[allow(dead_code)] // The rooms capability is the next issue's.
    pub(crate) fn room(&self, name: &str) -> Arc<Room> {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        rooms
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Room::new(&self.policy, self.started.clone())))
            .clone()
    }

    fn all_rooms(&self) -> Vec<Arc<Room>> {
        let rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        std::iter::once(self.lobby.clone())
            .chain(rooms.values().cloned())
            .collect()
    }

    /// Sends each batch of notices `delay` after it starts (unless a
    /// broadcast sent it sooner). Runs until dropped.
    pub(crate) async fn pace_presence(&self) {
        loop {
            self.started.notified().await;
            tokio::time::sleep(self.policy.delay).await;
            for room in self.all_rooms() {
                room.flush_presence();
            }
        }
    }

    /// The shutdown barrier: waits for every broadcast under way, then
    /// refuses all later ones, and any join.
    pub(crate) fn close(&self) {
        for room in self.all_rooms() {
            room.write().closed = true;
        }
    }
}

/// A set of members that hear each other.
#[derive(Debug)]
pub(crate) struct Room {
    members: RwLock<Members>,
    /// Taken before `members` wherever both are.
    presence: Mutex<Presence>,
    /// Whether `presence` holds anything: checked on every broadcast
    /// without taking the lock.
    pending: AtomicBool,
    announce: bool,
    batch: usize,
    started: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Members {
    peers: Vec<Peer>,
    /// Where each member is in `peers`.
    index: HashMap<PeerId, usize>,
    /// Set by [`Hub::close`].
    closed: bool,
}

impl Members {
    fn add(&mut self, peer: Peer) {
        self.index.insert(peer.id, self.peers.len());
        self.peers.push(peer);
    }

    fn remove(&mut self, id: PeerId) -> bool {
        let Some(i) = self.index.remove(&id) else {
            return false;
        };
        self.peers.swap_remove(i);
        if let Some(moved) = self.peers.get(i) {
            self.index.insert(moved.id, i);
        }
        // A crowd gone leaves no large table behind: it would pin the top of
        // the allocator's heap, keeping all that the crowd freed below it.
        if self.peers.capacity() > 64 && self.peers.len() < self.peers.capacity() / 4 {
            self.peers.shrink_to(self.peers.len() * 2);
            self.index.shrink_to(self.peers.len() * 2);
        }
        true
    }
}

impl Room {
    fn new(policy: &PresencePolicy, started: Arc<Notify>) -> Self {
        Room {
            members: RwLock::new(Members::default()),
            presence: Mutex::new(Presence::new(policy.codec)),
            pending: AtomicBool::new(false),
            announce: policy.enabled,
            batch: policy.batch,
            started,
        }
    }

    /// Adds a peer. With presence on it becomes a member (and receives
    /// relays) when its batch of notices goes out, after its roster.
    /// `None` once the hub is closed.
    pub(crate) fn join(self: &Arc<Self>, peer: Peer) -> Option<Membership> {
        let membership = Membership {
            room: self.clone(),
            id: peer.id,
            addr: peer.addr,
            outbox: peer.outbox.clone(),
        };
        if !self.announce {
            let mut members = self.write();
            if members.closed {
                return None;
            }
            members.add(peer);
            return Some(membership);
        }
        let mut presence = self.lock_presence();
        if self.read().closed {
            return None;
        }
        let first = presence.is_empty();
        presence.arrive(peer);
        self.pending.store(true, Ordering::Release);
        self.kick_batch(presence, first);
        Some(membership)
    }

    /// Removes `id`, announcing `Left` to the members if it was announced
    /// and the hub is not closing.
    fn leave(&self, id: PeerId, addr: SocketAddr) {
        let mut presence = self.lock_presence();
        if presence.withdraw(id) {
            return;
        }
        let mut members = self.write();
        if !members.remove(id) {
            return;
        }
        if !self.announce || members.closed {
            presence.forget();
            return;
        }
        drop(members);
        let first = presence.is_empty();
        presence.depart(addr);
        self.pending.store(true, Ordering::Release);
        self.kick_batch(presence, first);
    }

    /// Sends a full batch now, or has the pacer send a new one on time.
    fn kick_batch(&self, presence: MutexGuard<'_, Presence>, first: bool) {
        if presence.size() >= self.batch {
            self.send_batch(presence);
        } else if first {
            drop(presence);
            self.started.notify_one();
        }
    }

    /// Number of members (newcomers not yet announced aside).
    pub(crate) fn len(&self) -> usize {
        self.read().peers.len()
    }

    /// Sends the pending notices, if any.
    pub(crate) fn flush_presence(&self) {
        if self.pending.load(Ordering::Acquire) {
            self.send_batch(self.lock_presence());
        }
    }

    fn send_batch(&self, mut presence: MutexGuard<'_, Presence>) {
        // Write-locked while pushing: a broadcast waits here, so no relay
        // overtakes a notice that must come first, and a newcomer becomes a
        // member only once its roster is in its outbox.
        let mut members = self.write();
        self.pending.store(false, Ordering::Release);
        if presence.is_empty() {
            return;
        }
        let batch = presence.take(members.peers.iter());
        if members.closed {
            return;
        }
        batch.deliver(members.peers.iter().map(|p| &*p.outbox));
        for (peer, _) in batch.newcomers {
            members.add(peer);
        }
    }

    /// Offers `bytes` to every member but `from`, without waiting; pending
    /// notices go first. False, and nothing sent, once the hub is closed.
    fn broadcast(&self, from: PeerId, bytes: &Bytes) -> bool {
        self.flush_presence();
        let members = self.read();
        if members.closed {
            return false;
        }
        for peer in members.peers.iter().filter(|p| p.id != from) {
            peer.outbox.push(bytes.clone());
        }
        true
    }

    fn read(&self) -> RwLockReadGuard<'_, Members> {
        // Every critical section leaves the members consistent (a panic
        // inside one cannot happen between its updates). Keep serving.
        self.members.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Members> {
        self.members.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_presence(&self) -> MutexGuard<'_, Presence> {
        self.presence.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Being in a room. Dropping it leaves the room: `Left` is announced (with
/// presence on) and pushes to the outbox stop.
#[derive(Debug)]
pub(crate) struct Membership {
    room: Arc<Room>,
    id: PeerId,
    addr: SocketAddr,
    outbox: Arc<Outbox>,
}

impl Membership {
    /// This member's outbox.
    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Relays `bytes` (encoded frames) to every other member. False once
    /// the hub is closed: the bytes went to no one.
    pub(crate) fn broadcast(&self, bytes: &Bytes) -> bool {
        self.room.broadcast(self.id, bytes)
    }

    /// Members of the room.
    pub(crate) fn peers(&self) -> usize {
        self.room.len()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.room.leave(self.id, self.addr);
        self.outbox.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chat_proto::Message;

    use super::*;

    fn hub(enabled: bool) -> Hub {
        Hub::new(PresencePolicy {
            enabled,
            delay: Duration::from_millis(10),
            batch: 16 * 1024,
            codec: ChatCodec::new(),
        })
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn enter(hub: &Hub, port: u16, depth: usize) -> (Membership, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(depth, usize::MAX));
        let peer = Peer {
            id: hub.next_id(),
            addr: addr(port),
            outbox: outbox.clone(),
        };
        (hub.lobby().join(peer).expect("open"), outbox)
    }

    /// Everything queued in `o`, decoded.
    fn drain(o: &Outbox) -> Vec<Message> {
        let mut got = Vec::new();
        o.drain_into(&mut got, usize::MAX).unwrap();
        let mut bytes = bytes::BytesMut::from(&got.concat()[..]);
        let codec = ChatCodec::new();
        std::iter::from_fn(|| codec.decode(&mut bytes).unwrap()).collect()
    }

    fn joined(port: u16) -> Message {
        Message::Joined {
            ip: addr(port).ip(),
            port,
        }
    }

    fn left(port: u16) -> Message {
        Message::Left {
            ip: addr(port).ip(),
            port,
        }
    }

    fn relay(port: u16, text: &str) -> Message {
        Message::relay(addr(port), text)
    }

    fn encoded(msg: &Message) -> Bytes {
        ChatCodec::new().frame(msg).unwrap().into_bytes()
    }

    #[test]
    fn broadcast_skips_the_sender_and_shares_the_bytes() {
        let hub = hub(false);
        let (a, oa) = enter(&hub, 1, 4);
        let (_b, ob) = enter(&hub, 2, 4);
        let bytes = Bytes::from_static(b"frame");
        assert!(a.broadcast(&bytes));
        let mut got = Vec::new();
        oa.drain_into(&mut got, 8).unwrap();
        assert!(got.is_empty());
        ob.drain_into(&mut got, 8).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn full_outbox_evicts_only_that_peer() {
        let hub = hub(false);
        let (_a, oa) = enter(&hub, 1, 1);
        let (_b, ob) = enter(&hub, 2, 8);
        let (c, _) = enter(&hub, 3, 8);
        for _ in 0..3 {
            c.broadcast(&Bytes::from_static(b"x"));
        }
        let mut got = Vec::new();
        assert!(oa.drain_into(&mut got, 8).is_err());
        ob.drain_into(&mut got, 8).unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn dropping_a_membership_leaves_and_announces() {
        let hub = hub(true);
        let (_a, oa) = enter(&hub, 1, 8);
        let (b, _) = enter(&hub, 2, 8);
        hub.lobby().flush_presence();
        assert_eq!(hub.lobby().len(), 2);
        drop(b);
        hub.lobby().flush_presence();
        assert_eq!(hub.lobby().len(), 1);
        assert_eq!(drain(&oa), [joined(2), left(2)]);
    }

    #[test]
    fn a_panicking_holder_still_leaves() {
        let hub = Arc::new(hub(true));
        let (_a, oa) = enter(&hub, 1, 8);
        let h = hub.clone();
        let result = std::thread::spawn(move || {
            let (_b, _) = enter(&h, 2, 8);
            h.lobby().flush_presence();
            panic!("session bug");
        })
        .join();
        assert!(result.is_err());
        hub.lobby().flush_presence();
        assert_eq!(hub.lobby().len(), 1);
        assert_eq!(drain(&oa), [joined(2), left(2)]);
    }

    #[test]
    fn newcomers_learn_the_roster_before_any_relay() {
        let hub = hub(true);
        let (a, oa) = enter(&hub, 1, 8);
        let (b, ob) = enter(&hub, 2, 8);
        hub.lobby().flush_presence();
        assert_eq!(drain(&oa), [joined(2)]);
        assert_eq!(drain(&ob), [joined(1)]);
        // Two newcomers in one batch; an old member speaks.
        let (_c, oc) = enter(&hub, 3, 8);
        let (_d, od) = enter(&hub, 4, 8);
        assert!(drain(&oc).is_empty(), "nothing before the batch");
        a.broadcast(&encoded(&relay(1, "hi")));
        assert_eq!(
            drain(&oc),
            [joined(1), joined(2), joined(4), relay(1, "hi")]
        );
        assert_eq!(
            drain(&od),
            [joined(1), joined(2), joined(3), relay(1, "hi")]
        );
        assert_eq!(drain(&ob), [joined(3), joined(4), relay(1, "hi")]);
        assert_eq!(drain(&oa), [joined(3), joined(4)], "no copy to the sender");
        drop(b);
        let (_e, oe) = enter(&hub, 5, 8);
        hub.lobby().flush_presence();
        let mut roster = drain(&oe);
        roster.sort_by_key(|m| format!("{m:?}"));
        assert_eq!(roster, [joined(1), joined(3), joined(4)]);
        assert_eq!(drain(&oa), [joined(5), left(2)]);
    }

    /// The lost `Left`: a newcomer in the same batch as a departure either
    /// never heard of the departed peer, or hears of its departure.
    #[test]
    fn a_left_reaches_everyone_that_heard_of_the_peer() {
        let hub = hub(true);
        let (_a, _) = enter(&hub, 1, 8);
        let (b, _) = enter(&hub, 2, 8);
        hub.lobby().flush_presence();
        // c arrives; b speaks (so c becomes a member and hears b), b leaves.
        let (_c, oc) = enter(&hub, 3, 8);
        b.broadcast(&encoded(&relay(2, "last")));
        drop(b);
        hub.lobby().flush_presence();
        assert_eq!(
            drain(&oc),
            [joined(1), joined(2), relay(2, "last"), left(2)]
        );
        // d arrives as e leaves, in one batch: d hears nothing of e.
        let (e, _) = enter(&hub, 5, 8);
        hub.lobby().flush_presence();
        let (_d, od) = enter(&hub, 4, 8);
        drop(e);
        hub.lobby().flush_presence();
        assert_eq!(drain(&od), [joined(1), joined(3)]);
    }

    #[test]
    fn a_newcomer_that_leaves_unannounced_is_never_mentioned() {
        let hub = hub(true);
        let (_a, oa) = enter(&hub, 1, 8);
        hub.lobby().flush_presence();
        let (b, _) = enter(&hub, 2, 8);
        drop(b);
        hub.lobby().flush_presence();
        assert!(drain(&oa).is_empty());
        assert_eq!(hub.lobby().len(), 1);
    }

    #[test]
    fn without_presence_joins_are_immediate_and_silent() {
        let hub = hub(false);
        let (a, _) = enter(&hub, 1, 8);
        let (b, ob) = enter(&hub, 2, 8);
        a.broadcast(&encoded(&relay(1, "x")));
        drop(a);
        assert_eq!(drain(&ob), [relay(1, "x")]);
        assert_eq!(hub.lobby().len(), 1);
        drop(b);
    }

    #[test]
    fn a_closed_hub_refuses_broadcasts_and_joins() {
        let hub = hub(true);
        let (a, _) = enter(&hub, 1, 8);
        let (_b, ob) = enter(&hub, 2, 8);
        hub.lobby().flush_presence();
        drain(&ob);
        hub.close();
        assert!(!a.broadcast(&encoded(&relay(1, "late"))));
        assert!(drain(&ob).is_empty());
        let outbox = Arc::new(Outbox::new(8, usize::MAX));
        let peer = Peer {
            id: hub.next_id(),
            addr: addr(3),
            outbox,
        };
        assert!(hub.lobby().join(peer).is_none());
        drop(a);
        assert!(drain(&ob).is_empty(), "no Left while shutting down");
    }

    #[test]
    fn named_rooms_are_separate() {
        let hub = hub(false);
        let room = hub.room("rust");
        assert!(Arc::ptr_eq(&room, &hub.room("rust")));
        let outbox = Arc::new(Outbox::new(8, usize::MAX));
        let m = room
            .join(Peer {
                id: hub.next_id(),
                addr: addr(9),
                outbox,
            })
            .unwrap();
        assert_eq!(room.len(), 1);
        assert_eq!(hub.lobby().len(), 0);
        drop(m);
        assert_eq!(room.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_goes_out_after_the_delay_on_its_own() {
        let hub = Arc::new(hub(true));
        let (_a, oa) = enter(&hub, 1, 8);
        hub.lobby().flush_presence();
        let (_b, _) = enter(&hub, 2, 8);
        let pacer = tokio::spawn({
            let hub = hub.clone();
            async move { hub.pace_presence().await }
        });
        let t0 = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(1), oa.ready())
            .await
            .expect("the batch goes out");
        assert!(t0.elapsed() >= Duration::from_millis(10));
        assert_eq!(drain(&oa), [joined(2)]);
        assert_eq!(hub.lobby().len(), 2);
        pacer.abort();
    }
}
