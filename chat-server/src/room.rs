//! A room: its members in the order they entered, its presence batch, and
//! the fan-out of its relays.
//!
//! A room holds each member's [`Peer`] (and through it the outbox), never a
//! socket. A broadcast takes the room's read lock and pushes the same
//! [`Bytes`] into every other member's outbox (a reference count, no copy):
//! one buffer for its rooms members (`Said`), one for its version 1 members
//! (`Relay`, the lobby only), each encoded by the sender only if such
//! members exist. It never waits: a member whose outbox is full is a slow
//! consumer, marked evicted there, and its session closes it. Joins, leaves
//! and presence batches take the write lock briefly; nothing holds a lock
//! across an `.await`. Each room has its own locks, so nothing done in one
//! room stalls the fan-out of another.
//!
//! Locks are taken in one order: the hub's names lock, then a room's
//! presence lock, then its members lock, then a peer's outbox or label.
//! The hub's room map is never held while taking any of them but a
//! presence lock (when removing an empty room).
//!
//! Being in a room is a [`Membership`], a value whose drop leaves the room
//! and announces it: no early return, error or panic in a session can leave
//! a ghost behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::{Bytes, BytesMut};
use chat_proto::Member;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use crate::hub::Rooms;
use crate::peer::{Peer, PeerId};
use crate::presence::{self, Codecs, Presence};
use crate::roster;

/// What every room shares: how to announce, how to encode, the names lock.
#[derive(Debug)]
pub(crate) struct Common {
    /// Whether presence notices are sent at all.
    pub(crate) announce: bool,
    /// A batch of notices this large goes out at once.
    pub(crate) batch: usize,
    pub(crate) codecs: Codecs,
    /// Signalled when some room starts a batch of notices.
    pub(crate) started: Notify,
    /// Held for reading wherever other peers' names are read into a roster
    /// or a notice, for writing by a rename: a roster and the renames
    /// announced after it never disagree.
    pub(crate) names: RwLock<()>,
    /// Set by the hub's close: rooms made after it are born closed.
    pub(crate) closed: AtomicBool,
    /// Counts batches started, to send them in that order.
    pub(crate) batches: AtomicU64,
    /// Chat messages handed to recipients (for the metrics).
    pub(crate) delivered: Counter,
}

impl Common {
    pub(crate) fn names(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.names.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a join did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The peer is in the room already (or on its way in).
    Already,
    /// The room is at its member cap.
    Full,
    /// The hub is closed: the server is shutting down.
    Closed,
    /// The room was removed as it emptied: look it up again.
    Removed,
}

/// A set of members that hear each other.
#[derive(Debug)]
pub(crate) struct Room {
    /// Its name as its creator spelled it.
    pub(crate) name: Arc<str>,
    /// Its folded name, the hub's key.
    pub(crate) key: Arc<str>,
    members: RwLock<Members>,
    /// Taken before `members` wherever both are.
    presence: Mutex<Presence>,
    /// Whether `presence` holds anything: checked on every broadcast
    /// without taking the lock.
    pending: AtomicBool,
    /// Version 1 members and newcomers (the lobby only has any).
    v1: AtomicUsize,
    /// Rooms members and newcomers.
    rooms: AtomicUsize,
    /// Those of `rooms` that speak the history capability.
    history: AtomicUsize,
    /// When the pending batch started, in batches started hub-wide.
    started: AtomicU64,
    common: Arc<Common>,
}

/// Which encodings of a relay a room's members need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wants {
    pub(crate) relay: bool,
    pub(crate) said: bool,
    pub(crate) posted: bool,
}

/// Rooms up to this size find a member by a scan of the list rather than
/// keep an index: most rooms are small, and the index would be most of
/// what they cost.
const SMALL: usize = 32;

/// The members, in the order they entered: removal leaves a hole, filled
/// when holes are many, so order is kept and leaving costs O(1) amortised.
#[derive(Debug, Default)]
struct Members {
    peers: Vec<Slot>,
    /// Where each member is in `peers`, once there are more than `SMALL`
    /// slots.
    index: Option<HashMap<PeerId, usize>>,
    /// Members (slots less holes).
    count: usize,
    holes: usize,
    /// Set by the hub's close.
    closed: bool,
}

/// A place in the member list. The identity and kind are kept here, beside
/// the pointer, so that a broadcast picks its recipients without touching
/// each peer, whose outbox other threads write.
#[derive(Debug)]
struct Slot {
    id: PeerId,
    rooms: bool,
    history: bool,
    /// `None`: a hole left by a member gone.
    peer: Option<Arc<Peer>>,
}

impl Members {
    fn add(&mut self, peer: Arc<Peer>) {
        if let Some(index) = &mut self.index {
            index.insert(peer.id, self.peers.len());
        }
        if self.peers.len() < SMALL {
            // Most rooms stay small: no room for members that never come.
            self.peers.reserve_exact(1);
        }
        self.peers.push(Slot {
            id: peer.id,
            rooms: peer.rooms,
            history: peer.history,
            peer: Some(peer),
        });
        self.count += 1;
        if self.index.is_none() && self.peers.len() > SMALL {
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        let index = self.index.get_or_insert_with(HashMap::new);
        index.clear();
        for (i, slot) in self.peers.iter().enumerate() {
            if slot.peer.is_some() {
                index.insert(slot.id, i);
            }
        }
    }

    fn position(&self, id: PeerId) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&id).copied(),
            None => self
                .peers
                .iter()
                .position(|slot| slot.id == id && slot.peer.is_some()),
        }
    }

    fn contains(&self, id: PeerId) -> bool {
        self.position(id).is_some()
    }

    fn remove(&mut self, id: PeerId) -> Option<Arc<Peer>> {
        let i = self.position(id)?;
        if let Some(index) = &mut self.index {
            index.remove(&id);
        }
        let peer = self.peers.get_mut(i)?.peer.take();
        self.count -= 1;
        self.holes += 1;
        if self.holes > 16 && self.holes * 2 > self.peers.len() {
            self.compact();
        }
        peer
    }

    fn compact(&mut self) {
        self.peers.retain(|slot| slot.peer.is_some());
        self.holes = 0;
        // A crowd gone leaves no large table behind: it would pin the top of
        // the allocator's heap, keeping all that the crowd freed below it.
        if self.peers.capacity() > 64 && self.peers.len() < self.peers.capacity() / 4 {
            self.peers.shrink_to(self.peers.len() * 2);
        }
        if self.peers.len() > SMALL {
            // Rebuilt rather than shrunk: it has the right size then.
            self.index = None;
            self.reindex();
        } else {
            self.index = None;
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Peer>> + Clone {
        self.peers.iter().filter_map(|slot| slot.peer.as_ref())
    }

    fn len(&self) -> usize {
        self.count
    }
}

impl Room {
    /// An empty room called `name` (folded: `key`).
    pub(crate) fn new(name: Arc<str>, key: Arc<str>, common: Arc<Common>) -> Self {
        let closed = common.closed.load(Ordering::Acquire);
        Room {
            name,
            key,
            members: RwLock::new(Members {
                closed,
                ..Members::default()
            }),
            presence: Mutex::new(Presence::default()),
            pending: AtomicBool::new(false),
            v1: AtomicUsize::new(0),
            rooms: AtomicUsize::new(0),
            history: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            common,
        }
    }

    /// Adds `peer`, unless it is in already, the room holds `cap` (when
    /// given), or the hub is closed. With presence on it becomes a member
    /// (and receives relays) when its batch of notices goes out, after its
    /// roster; with presence off at once, and a rooms peer gets its roster
    /// at once.
    pub(crate) fn join(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        cap: Option<usize>,
    ) -> Result<(), Refused> {
        let _names = self.common.names();
        let mut presence = self.lock_presence();
        if presence.removed {
            return Err(Refused::Removed);
        }
        if self.read().closed {
            return Err(Refused::Closed);
        }
        if presence.is_newcomer(peer.id) || self.read().contains(peer.id) {
            return Err(Refused::Already);
        }
        if cap.is_some_and(|cap| self.len() >= cap) {
            return Err(Refused::Full);
        }
        self.count(peer, true);
        if !self.common.announce {
            let mut members = self.write();
            if peer.rooms {
                let mut present: Vec<Member> = members.iter().map(|p| p.member()).collect();
                present.push(peer.member());
                peer.outbox.push_roster(self.roster_frames(&present));
            }
            members.add(peer.clone());
            return Ok(());
        }
        if presence.has_gone(peer.id) {
            // Its departure goes out before its new arrival.
            self.send_batch(&mut presence);
        }
        let first = presence.is_empty();
        presence.arrive(peer.clone());
        self.pending.store(true, Ordering::Release);
        self.kick_batch(presence, first);
        Ok(())
    }

    /// Removes `peer`, announcing it to the members if it was announced and
    /// the hub is not closing. `part`: the peer asked to leave, and gets
    /// its own `Departed` (a newcomer that parts has its batch sent first).
    /// Returns whether the room is now empty.
    pub(crate) fn leave(&self, peer: &Peer, part: bool) -> bool {
        let _names = self.common.names();
        let mut presence = self.lock_presence();
        if presence.is_newcomer(peer.id) {
            if part {
                self.send_batch(&mut presence);
            } else {
                presence.withdraw(peer.id);
                self.count(peer, false);
                return self.len() == 0;
            }
        }
        let mut members = self.write();
        if members.remove(peer.id).is_none() {
            return self.len() == 0;
        }
        self.count(peer, false);
        let codecs = &self.common.codecs;
        if !self.common.announce || members.closed {
            presence.forget();
            if part && !members.closed {
                peer.outbox
                    .push(presence::departed(codecs, peer, &self.name));
            }
            return members.len() == 0;
        }
        drop(members);
        let first = presence.is_empty();
        let (v1, rooms) = self.kinds();
        let own = presence.depart(codecs, peer, &self.name, v1, rooms, part);
        if part {
            if let Some(own) = own {
                peer.outbox.push(own);
            }
        }
        self.pending.store(true, Ordering::Release);
        let empty = self.len() == 0;
        self.kick_batch(presence, first);
        empty
    }

    /// Counts `peer` in (`true`) or out, by kind. Under the presence lock.
    fn count(&self, peer: &Peer, arrive: bool) {
        let kind = if peer.rooms { &self.rooms } else { &self.v1 };
        let tally = |count: &AtomicUsize| {
            if arrive {
                count.fetch_add(1, Ordering::Relaxed);
            } else {
                count.fetch_sub(1, Ordering::Relaxed);
            }
        };
        tally(kind);
        if peer.history {
            tally(&self.history);
        }
    }

    /// Which encodings a relay here needs (members or newcomers): `Relay`
    /// for version 1 peers, `Said` for rooms peers without history,
    /// `Posted` for history peers.
    pub(crate) fn wants(&self) -> Wants {
        let rooms = self.rooms.load(Ordering::Relaxed);
        let history = self.history.load(Ordering::Relaxed);
        Wants {
            relay: self.v1.load(Ordering::Relaxed) > 0,
            said: rooms > history,
            posted: history > 0,
        }
    }

    /// Whether version 1 and rooms peers are in (members or newcomers).
    pub(crate) fn kinds(&self) -> (bool, bool) {
        (
            self.v1.load(Ordering::Relaxed) > 0,
            self.rooms.load(Ordering::Relaxed) > 0,
        )
    }

    /// Members and newcomers.
    pub(crate) fn len(&self) -> usize {
        self.v1.load(Ordering::Relaxed) + self.rooms.load(Ordering::Relaxed)
    }

    /// Members announced (newcomers aside).
    #[cfg(test)]
    pub(crate) fn members(&self) -> usize {
        self.read().len()
    }

    /// Pushes the room's roster to `to` (a `Who`, or a `Join` of a member),
    /// after any pending notices, so that it agrees with them. False if
    /// `to`'s outbox overflowed.
    pub(crate) fn roster_to(&self, to: &Peer) -> bool {
        let _names = self.common.names();
        let mut presence = self.lock_presence();
        if !presence.is_empty() {
            self.send_batch(&mut presence);
        }
        let present: Vec<Member> = self.read().iter().map(|p| p.member()).collect();
        to.outbox.push(self.roster_frames(&present))
    }

    fn roster_frames(&self, members: &[Member]) -> Bytes {
        let codecs = &self.common.codecs;
        let mut buf = BytesMut::new();
        roster::roster(
            &codecs.rooms,
            codecs.limit,
            &self.name,
            members,
            false,
            &mut buf,
        );
        buf.freeze()
    }

    /// Adds to `into` the rooms members that must hear of `id`'s rename:
    /// all of them if `id` is an announced member (a newcomer's arrival,
    /// not yet sent, will carry the new name).
    pub(crate) fn rename_audience(&self, id: PeerId, into: &mut Vec<Arc<Peer>>) {
        let mut presence = self.lock_presence();
        let members = self.read();
        if members.contains(id) {
            presence.forget_names();
            into.extend(members.iter().filter(|p| p.rooms).cloned());
        }
    }

    /// Sends a full batch now, or has the pacer send a new one on time.
    fn kick_batch(&self, mut presence: MutexGuard<'_, Presence>, first: bool) {
        if first {
            let n = self.common.batches.fetch_add(1, Ordering::Relaxed);
            self.started.store(n, Ordering::Relaxed);
        }
        if presence.size() >= self.common.batch {
            self.send_batch(&mut presence);
        } else if first {
            drop(presence);
            self.common.started.notify_one();
        }
    }

    /// When its pending batch started, if it has one: batches go out in
    /// that order, so a client's rosters come in the order it joined.
    pub(crate) fn pending_since(&self) -> Option<u64> {
        self.pending
            .load(Ordering::Acquire)
            .then(|| self.started.load(Ordering::Relaxed))
    }

    /// Sends the pending notices, if any.
    pub(crate) fn flush_presence(&self) {
        if self.pending.load(Ordering::Acquire) {
            let _names = self.common.names();
            self.send_batch(&mut self.lock_presence());
        }
    }

    /// Sends the batch. The caller holds the names lock and `presence`.
    fn send_batch(&self, presence: &mut Presence) {
        // Write-locked while pushing: a broadcast waits here, so no relay
        // overtakes a notice that must come first, and a newcomer becomes a
        // member only once its roster is in its outbox.
        let mut members = self.write();
        self.pending.store(false, Ordering::Release);
        if presence.is_empty() {
            return;
        }
        let (v1, rooms) = self.kinds();
        let batch = presence.take(&self.common.codecs, &self.name, members.iter(), v1, rooms);
        if members.closed {
            return;
        }
        batch.deliver(members.iter());
        for (peer, _) in batch.newcomers {
            members.add(peer);
        }
    }

    /// Offers the relays to every member but `from`, without waiting:
    /// `said` to rooms members, `relay` to version 1 members, neither where
    /// empty. Pending notices go first. False, and nothing sent, once the
    /// hub is closed.
    pub(crate) fn broadcast(&self, from: PeerId, relay: &Bytes, said: &Bytes) -> bool {
        self.broadcast_all(from, relay, said, &Bytes::new())
    }

    /// [`broadcast`](Room::broadcast), with `posted` for the members that
    /// speak the history capability.
    pub(crate) fn broadcast_all(
        &self,
        from: PeerId,
        relay: &Bytes,
        said: &Bytes,
        posted: &Bytes,
    ) -> bool {
        self.flush_presence();
        let members = self.read();
        if members.closed {
            return false;
        }
        // Recipients of each buffer, for the deliveries counted below.
        let mut to = [0u64; 3];
        for slot in &members.peers {
            let Some(peer) = &slot.peer else { continue };
            if slot.id == from {
                continue;
            }
            let kind = match (slot.rooms, slot.history) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            };
            let bytes = [relay, said, posted][kind];
            if !bytes.is_empty() {
                peer.outbox.push(bytes.clone());
                to[kind] += 1;
            }
        }
        // One count per broadcast, not per recipient: the frames in each
        // buffer (a walk over their headers) times its recipients.
        let n: u64 = [relay, said, posted]
            .iter()
            .zip(to)
            .filter(|(_, to)| *to > 0)
            .map(|(bytes, to)| crate::metrics::frames(bytes) * to)
            .sum();
        if n > 0 {
            self.common.delivered.inc_by(n);
        }
        true
    }

    /// The shutdown barrier for this room: waits for its broadcasts under
    /// way, then refuses later ones, and any join.
    pub(crate) fn close(&self) {
        self.write().closed = true;
    }

    /// Marks the room removed if it is empty; true if it was.
    pub(crate) fn remove_if_empty(&self) -> bool {
        let mut presence = self.lock_presence();
        if presence.removed || self.len() > 0 {
            return false;
        }
        presence.removed = true;
        true
    }

    /// Holds the room's locks until the value is dropped.
    #[cfg(test)]
    pub(crate) fn hold(&self) -> impl Sized + '_ {
        (self.lock_presence(), self.write())
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

/// Being in a room. Dropping it leaves the room (announced, with presence
/// on) and removes the room from the hub if that emptied it.
#[derive(Debug)]
pub(crate) struct Membership {
    room: Arc<Room>,
    peer: Arc<Peer>,
    rooms: Arc<Rooms>,
    /// Leaving on request: the leaver hears its own `Departed`.
    part: bool,
}

impl Membership {
    /// Joins `room` (see [`Room::join`]).
    pub(crate) fn join(
        rooms: &Arc<Rooms>,
        room: Arc<Room>,
        peer: &Arc<Peer>,
        cap: Option<usize>,
    ) -> Result<Membership, Refused> {
        room.join(peer, cap)?;
        Ok(Membership {
            room,
            peer: peer.clone(),
            rooms: rooms.clone(),
            part: false,
        })
    }

    /// The room.
    pub(crate) fn room(&self) -> &Arc<Room> {
        &self.room
    }

    /// Leaves on request: every member, the leaver included, hears it.
    pub(crate) fn part(mut self) {
        self.part = true;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.room.leave(&self.peer, self.part) {
            self.rooms.reap(&self.room);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::outbox::Outbox;

    fn peer(n: u64) -> Arc<Peer> {
        let addr = SocketAddr::from(([127, 0, 0, 1], n as u16));
        Arc::new(Peer::new(PeerId::new(n), addr, true, Outbox::new(8, 1024)))
    }

    fn ids(members: &Members) -> Vec<u64> {
        members.iter().map(|p| p.addr.port().into()).collect()
    }

    #[test]
    fn members_keep_the_order_they_entered_in() {
        let mut m = Members::default();
        for n in 1..=100 {
            m.add(peer(n));
        }
        // Leave in an order that makes holes everywhere, compacting often.
        for n in (1..=100).filter(|n| n % 3 != 0) {
            assert!(m.remove(PeerId::new(n)).is_some());
        }
        assert!(m.remove(PeerId::new(1)).is_none(), "gone already");
        let expected: Vec<u64> = (1..=100).filter(|n| n % 3 == 0).collect();
        assert_eq!(ids(&m), expected);
        assert_eq!(m.len(), expected.len());
        m.add(peer(1));
        assert_eq!(ids(&m).last(), Some(&1), "a newcomer goes last");
        // The index still finds everyone after compactions.
        for n in expected {
            assert!(m.contains(PeerId::new(n)));
            assert!(m.remove(PeerId::new(n)).is_some());
        }
        assert_eq!(ids(&m), [1]);
    }

    /// Idle memory per client is a budget (3 KiB with a name and three
    /// rooms, the session's future included): what a client and each of
    /// its memberships hold must stay small.
    #[test]
    fn a_peer_and_its_memberships_are_small() {
        assert!(std::mem::size_of::<Peer>() <= 256);
        assert!(std::mem::size_of::<Membership>() <= 32);
        assert!(std::mem::size_of::<Slot>() <= 24);
    }

    /// A small room, without an index, through churn: every member found,
    /// order kept, holes bounded.
    #[test]
    fn a_small_room_finds_its_members_by_scanning() {
        let mut m = Members::default();
        let mut expected: Vec<u64> = Vec::new();
        for n in 1..=10 {
            m.add(peer(n));
            expected.push(n);
        }
        for round in 0..200u64 {
            let gone = expected.remove((round as usize * 7) % expected.len());
            assert!(m.remove(PeerId::new(gone)).is_some());
            assert!(!m.contains(PeerId::new(gone)));
            let n = 100 + round;
            m.add(peer(n));
            expected.push(n);
            assert_eq!(ids(&m), expected);
            assert!(m.index.is_none());
            assert!(m.peers.len() <= 10 + 17, "holes are filled");
        }
        assert!(expected.iter().all(|&n| m.contains(PeerId::new(n))));
        assert_eq!(m.len(), 10);
    }

    #[test]
    fn a_crowd_gone_leaves_no_large_table() {
        let mut m = Members::default();
        for n in 1..=10_000 {
            m.add(peer(n));
        }
        for n in 1..10_000 {
            m.remove(PeerId::new(n));
        }
        assert_eq!(ids(&m), [10_000]);
        assert!(m.peers.capacity() < 1000, "{}", m.peers.capacity());
    }
}
