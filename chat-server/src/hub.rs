//! The registry: rooms by name, who holds which name, and the pacing of
//! presence notices.
//!
//! Rooms are kept by folded name (see [`crate::names`]). The lobby always
//! exists: every client starts there, and it behaves as the single room of
//! earlier versions, version 1 clients and rooms clients side by side.
//! Other rooms are made by their first `Join` (keeping their creator's
//! spelling) and removed when their last member leaves. The map of rooms is
//! locked only to look a room up, add or remove one, never while a room
//! fans out: each [`Room`] has its own locks, so a join or a big room's
//! fan-out never stalls another room.
//!
//! Names are in a [`Directory`]; renames are announced here, to every rooms
//! client sharing a room with the renamer, once, under the names lock that
//! rosters are built under, so a roster and the `Renamed`s after it agree.
//!
//! On shutdown the hub is [closed](Hub::close) before sessions are told:
//! closing waits for the broadcasts under way and refuses later ones, so
//! each relay reaches either every member's outbox or none, and a session
//! that drains its outbox after the signal has everything it will ever get.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use chat_proto::{Message, RoomInfo};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use crate::directory::{Directory, Taken};
use crate::names::Name;
use crate::peer::{Label, Peer, PeerId};
use crate::presence::Codecs;
use crate::room::{Common, Membership, Refused, Room};

/// The lobby's name: where every client starts.
pub(crate) const LOBBY: &str = "lobby";

/// How rooms announce joins and leaves, and encode.
#[derive(Debug, Clone)]
pub(crate) struct PresencePolicy {
    /// Whether notices are sent at all.
    pub(crate) enabled: bool,
    /// Longest a notice waits for others to share its batch.
    pub(crate) delay: Duration,
    /// A batch this large goes out at once.
    pub(crate) batch: usize,
    /// Encode everything rooms send.
    pub(crate) codecs: Codecs,
}

/// Every room of the server, and every name.
#[derive(Debug)]
pub(crate) struct Hub {
    rooms: Arc<Rooms>,
    directory: Arc<Directory>,
    next_id: AtomicU64,
    delay: Duration,
    common: Arc<Common>,
}

/// The rooms by folded name; the lobby is one of them.
#[derive(Debug)]
pub(crate) struct Rooms {
    map: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    lobby: Arc<Room>,
    common: Arc<Common>,
}

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Room>>> {
        // Every critical section leaves the map consistent; keep serving.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The room called `name`, created empty if there is none.
    fn get_or_create(&self, name: &Name) -> Arc<Room> {
        let mut map = self.lock();
        if let Some(room) = map.get(name.key()) {
            return room.clone();
        }
        let key: Arc<str> = Arc::from(name.key());
        let room = Arc::new(Room::new(
            Arc::from(name.as_str()),
            key.clone(),
            self.common.clone(),
        ));
        map.insert(key, room.clone());
        room
    }

    /// Removes `room` if it is still empty (and not the lobby).
    pub(crate) fn reap(&self, room: &Arc<Room>) {
        if Arc::ptr_eq(room, &self.lobby) {
            return;
        }
        let mut map = self.lock();
        if room.remove_if_empty() && map.get(&room.key).is_some_and(|r| Arc::ptr_eq(r, room)) {
            map.remove(&room.key);
        }
    }
}

impl Hub {
    /// A hub with an empty lobby.
    pub(crate) fn new(policy: PresencePolicy) -> Self {
        let common = Arc::new(Common {
            announce: policy.enabled,
            batch: policy.batch,
            codecs: policy.codecs,
            started: Notify::new(),
            names: RwLock::new(()),
            closed: Default::default(),
            batches: Default::default(),
            delivered: Counter::default(),
        });
        let key: Arc<str> = Arc::from(LOBBY);
        let lobby = Arc::new(Room::new(key.clone(), key.clone(), common.clone()));
        let map = HashMap::from([(key, lobby.clone())]);
        Hub {
            rooms: Arc::new(Rooms {
                map: Mutex::new(map),
                lobby,
                common: common.clone(),
            }),
            directory: Arc::new(Directory::default()),
            next_id: AtomicU64::new(1),
            delay: policy.delay,
            common,
        }
    }

    /// A fresh peer identity.
    pub(crate) fn next_id(&self) -> PeerId {
        PeerId::new(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The default room, which every client joins first.
    pub(crate) fn lobby(&self) -> &Arc<Room> {
        &self.rooms.lobby
    }

    /// Who holds which name.
    pub(crate) fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Chat messages handed to recipients, counted by the rooms (and by
    /// direct messages' senders); the metrics show it.
    pub(crate) fn delivered(&self) -> &Counter {
        &self.common.delivered
    }

    /// How many rooms exist, the lobby included.
    pub(crate) fn room_count(&self) -> usize {
        self.rooms.lock().len()
    }

    /// How rooms encode.
    pub(crate) fn codecs(&self) -> &Codecs {
        &self.common.codecs
    }

    /// Puts `peer` in the lobby, whatever its member cap.
    pub(crate) fn enter_lobby(&self, peer: &Arc<Peer>) -> Result<Membership, Refused> {
        Membership::join(&self.rooms, self.lobby().clone(), peer, None)
    }

    /// Puts `peer` in the room called `name`, creating it if needed, unless
    /// it holds `cap` members already.
    pub(crate) fn join(
        &self,
        name: &Name,
        peer: &Arc<Peer>,
        cap: usize,
    ) -> Result<Membership, Refused> {
        loop {
            let room = self.rooms.get_or_create(name);
            match Membership::join(&self.rooms, room, peer, Some(cap)) {
                // It emptied and went as we looked: make it again.
                Err(Refused::Removed) => continue,
                other => return other,
            }
        }
    }

    /// The room whose folded name is `key`, if it exists.
    pub(crate) fn find(&self, key: &str) -> Option<Arc<Room>> {
        self.rooms.lock().get(key).cloned()
    }

    /// Every room and its member count, sorted by folded name. Empty rooms
    /// on their way out are left out; the lobby never is.
    pub(crate) fn list(&self) -> Vec<RoomInfo> {
        let mut rooms: Vec<(Arc<str>, RoomInfo)> = self
            .rooms
            .lock()
            .values()
            .map(|room| {
                let info = RoomInfo {
                    name: room.name.to_string(),
                    members: u32::try_from(room.len()).unwrap_or(u32::MAX),
                };
                (room.key.clone(), info)
            })
            .filter(|(key, info)| info.members > 0 || &**key == LOBBY)
            .collect();
        rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rooms.into_iter().map(|(_, info)| info).collect()
    }

    /// Renames `peer` to `label` unless another client holds it, and tells
    /// the peer and every rooms client sharing one of `rooms` with it, once
    /// each, with one shared `Renamed`. Returns the old label.
    pub(crate) fn rename<'a>(
        &self,
        peer: &Arc<Peer>,
        label: Label,
        rooms: impl Iterator<Item = &'a Arc<Room>>,
    ) -> Result<Label, Taken> {
        let _names = self
            .common
            .names
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.directory.claim(peer, label)?;
        let mut audience = Vec::new();
        for room in rooms {
            room.rename_audience(peer.id, &mut audience);
        }
        audience.sort_unstable_by_key(|p| p.id);
        audience.dedup_by_key(|p| p.id);
        let renamed = Message::Renamed {
            old: old.shown.to_string(),
            member: peer.member(),
        };
        let mut buf = BytesMut::new();
        // Two names and an address: within the rooms codec's overhead.
        let _ = self.common.codecs.rooms.encode(&renamed, &mut buf);
        let bytes = buf.freeze();
        for other in audience.iter().filter(|p| p.id != peer.id) {
            other.outbox.push(bytes.clone());
        }
        peer.outbox.push(bytes);
        Ok(old)
    }

    fn all_rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.lock().values().cloned().collect()
    }

    /// Sends each batch of notices `delay` after it starts (unless a
    /// broadcast sent it sooner). Runs until dropped.
    pub(crate) async fn pace_presence(&self) {
        loop {
            self.common.started.notified().await;
            tokio::time::sleep(self.delay).await;
            self.flush_all();
        }
    }

    /// Sends every pending batch, oldest first.
    pub(crate) fn flush_all(&self) {
        let mut pending: Vec<(u64, Arc<Room>)> = self
            .all_rooms()
            .into_iter()
            .filter_map(|room| Some((room.pending_since()?, room)))
            .collect();
        pending.sort_unstable_by_key(|(since, _)| *since);
        for (_, room) in pending {
            room.flush_presence();
        }
    }

    /// The shutdown barrier: waits for every broadcast under way, then
    /// refuses all later ones, and any join (rooms made later are born
    /// closed).
    pub(crate) fn close(&self) {
        let rooms = {
            let map = self.rooms.lock();
            self.common.closed.store(true, Ordering::Release);
            map.values().cloned().collect::<Vec<_>>()
        };
        for room in rooms {
            room.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use chat_proto::{ChatCodec, Member, ServerConfig, features};

    use super::*;
    use crate::outbox::Outbox;

    fn hub(enabled: bool) -> Hub {
        Hub::new(PresencePolicy {
            enabled,
            delay: Duration::from_millis(10),
            batch: 16 * 1024,
            codecs: Codecs {
                v1: ChatCodec::new(),
                rooms: ServerConfig::default().outbound_for(features::ROOMS),
                history: ServerConfig::default().outbound_for(features::ROOMS | features::HISTORY),
                limit: chat_proto::MAX_FRAME_LEN,
            },
        })
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn peer(hub: &Hub, port: u16, depth: usize, rooms: bool) -> Arc<Peer> {
        let outbox = Outbox::new(depth, usize::MAX);
        let peer = Arc::new(Peer::new(hub.next_id(), addr(port), rooms, outbox));
        hub.directory().assign(&peer);
        peer
    }

    /// A version 1 client in the lobby.
    fn enter(hub: &Hub, port: u16, depth: usize) -> (Membership, Arc<Peer>) {
        let p = peer(hub, port, depth, false);
        (hub.enter_lobby(&p).expect("open"), p)
    }

    /// A rooms client called `name` in the lobby.
    fn named(hub: &Hub, port: u16, name: &str) -> (Membership, Arc<Peer>) {
        let p = peer(hub, port, 64, true);
        let name = Name::parse(name, 32).unwrap();
        hub.directory()
            .claim(&p, Label::new(name.as_str(), name.key()))
            .unwrap();
        (hub.enter_lobby(&p).expect("open"), p)
    }

    fn room(name: &str) -> Name {
        Name::parse(name, 32).unwrap()
    }

    /// Relays `v1` (to version 1 members) and `said` (to rooms members)
    /// from `from` in the lobby.
    fn say(hub: &Hub, from: &Peer, v1: &Message, said: &Message) -> bool {
        hub.lobby()
            .broadcast(from.id, &encoded(v1), &encoded_rooms(said))
    }

    fn relay_from(hub: &Hub, from: &Peer, text: &str) -> bool {
        let bytes = encoded(&relay(from.addr.port(), text));
        hub.lobby().broadcast(from.id, &bytes, &Bytes::new())
    }

    /// Everything queued in `o`, decoded.
    fn drain(o: &Outbox) -> Vec<Message> {
        let mut got = Vec::new();
        o.drain_into(&mut got, usize::MAX).unwrap();
        let mut bytes = bytes::BytesMut::from(&got.concat()[..]);
        let codec = ServerConfig::default().outbound_for(features::ROOMS);
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

    fn member(name: &str, port: u16) -> Member {
        Member::new(name, addr(port))
    }

    fn entered(room: &str, name: &str, port: u16) -> Message {
        Message::Entered {
            room: room.into(),
            member: member(name, port),
        }
    }

    fn departed(room: &str, name: &str, port: u16) -> Message {
        Message::Departed {
            room: room.into(),
            member: member(name, port),
        }
    }

    fn roster(room: &str, members: &[(&str, u16)]) -> Message {
        Message::Roster {
            room: room.into(),
            members: members.iter().map(|&(n, p)| member(n, p)).collect(),
            more: false,
        }
    }

    fn encoded(msg: &Message) -> Bytes {
        ChatCodec::new().frame(msg).unwrap().into_bytes()
    }

    fn encoded_rooms(msg: &Message) -> Bytes {
        let codec = ServerConfig::default().outbound_for(features::ROOMS);
        codec.frame(msg).unwrap().into_bytes()
    }

    #[test]
    fn broadcast_skips_the_sender_and_shares_the_bytes() {
        let hub = hub(false);
        let (_a, pa) = enter(&hub, 1, 4);
        let (_b, pb) = enter(&hub, 2, 4);
        let bytes = Bytes::from_static(b"frame");
        assert!(hub.lobby().broadcast(pa.id, &bytes, &Bytes::new()));
        let mut got = Vec::new();
        pa.outbox.drain_into(&mut got, 8).unwrap();
        assert!(got.is_empty());
        pb.outbox.drain_into(&mut got, 8).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn full_outbox_evicts_only_that_peer() {
        let hub = hub(false);
        let (_a, pa) = enter(&hub, 1, 1);
        let (_b, pb) = enter(&hub, 2, 8);
        let (_c, pc) = enter(&hub, 3, 8);
        // Long enough to be queued one buffer each: at this depth, shorter
        // ones would share one copied buffer, held to the byte limit.
        let bytes = Bytes::from(vec![b'x'; 4096]);
        for _ in 0..3 {
            hub.lobby().broadcast(pc.id, &bytes, &Bytes::new());
        }
        let mut got = Vec::new();
        assert!(pa.outbox.drain_into(&mut got, 8).is_err());
        pb.outbox.drain_into(&mut got, 8).unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn dropping_a_membership_leaves_and_announces() {
        let hub = hub(true);
        let (_a, pa) = enter(&hub, 1, 8);
        let (b, _) = enter(&hub, 2, 8);
        hub.lobby().flush_presence();
        assert_eq!(hub.lobby().members(), 2);
        drop(b);
        hub.lobby().flush_presence();
        assert_eq!(hub.lobby().members(), 1);
        assert_eq!(drain(&pa.outbox), [joined(2), left(2)]);
    }

    #[test]
    fn a_panicking_holder_still_leaves() {
        let hub = Arc::new(hub(true));
        let (_a, pa) = enter(&hub, 1, 8);
        let h = hub.clone();
        let result = std::thread::spawn(move || {
            let (_b, _) = enter(&h, 2, 8);
            h.lobby().flush_presence();
            panic!("session bug");
        })
        .join();
        assert!(result.is_err());
        hub.lobby().flush_presence();
        assert_eq!(hub.lobby().members(), 1);
        assert_eq!(drain(&pa.outbox), [joined(2), left(2)]);
    }

    #[test]
    fn newcomers_learn_the_roster_before_any_relay() {
        let hub = hub(true);
        let (_a, pa) = enter(&hub, 1, 8);
        let (b, pb) = enter(&hub, 2, 8);
        hub.lobby().flush_presence();
        assert_eq!(drain(&pa.outbox), [joined(2)]);
        assert_eq!(drain(&pb.outbox), [joined(1)]);
        // Two newcomers in one batch; an old member speaks.
        let (_c, pc) = enter(&hub, 3, 8);
        let (_d, pd) = enter(&hub, 4, 8);
        assert!(drain(&pc.outbox).is_empty(), "nothing before the batch");
        relay_from(&hub, &pa, "hi");
        assert_eq!(
            drain(&pc.outbox),
            [joined(1), joined(2), joined(4), relay(1, "hi")]
        );
        assert_eq!(
            drain(&pd.outbox),
            [joined(1), joined(2), joined(3), relay(1, "hi")]
        );
        assert_eq!(drain(&pb.outbox), [joined(3), joined(4), relay(1, "hi")]);
        assert_eq!(
            drain(&pa.outbox),
            [joined(3), joined(4)],
            "no copy to the sender"
        );
        drop(b);
        let (_e, pe) = enter(&hub, 5, 8);
        hub.lobby().flush_presence();
        // Members in the order they entered.
        assert_eq!(drain(&pe.outbox), [joined(1), joined(3), joined(4)]);
        assert_eq!(drain(&pa.outbox), [joined(5), left(2)]);
    }

    /// The lost `Left`: a newcomer in the same batch as a departure either
    /// never heard of the departed peer, or hears of its departure.
    #[test]
    fn a_left_reaches_everyone_that_heard_of_the_peer() {
        let hub = hub(true);
        let (_a, _) = enter(&hub, 1, 8);
        let (b, pb) = enter(&hub, 2, 8);
        hub.lobby().flush_presence();
        // c arrives; b speaks (so c becomes a member and hears b), b leaves.
        let (_c, pc) = enter(&hub, 3, 8);
        relay_from(&hub, &pb, "last");
        drop(b);
        hub.lobby().flush_presence();
        assert_eq!(
            drain(&pc.outbox),
            [joined(1), joined(2), relay(2, "last"), left(2)]
        );
        // d arrives as e leaves, in one batch: d hears nothing of e.
        let (e, _) = enter(&hub, 5, 8);
        hub.lobby().flush_presence();
        let (_d, pd) = enter(&hub, 4, 8);
        drop(e);
        hub.lobby().flush_presence();
        assert_eq!(drain(&pd.outbox), [joined(1), joined(3)]);
    }

    #[test]
    fn a_newcomer_that_leaves_unannounced_is_never_mentioned() {
        let hub = hub(true);
        let (_a, pa) = enter(&hub, 1, 8);
        hub.lobby().flush_presence();
        let (b, _) = enter(&hub, 2, 8);
        drop(b);
        hub.lobby().flush_presence();
        assert!(drain(&pa.outbox).is_empty());
        assert_eq!(hub.lobby().members(), 1);
    }

    #[test]
    fn without_presence_joins_are_immediate_and_silent() {
        let hub = hub(false);
        let (a, pa) = enter(&hub, 1, 8);
        let (b, pb) = enter(&hub, 2, 8);
        relay_from(&hub, &pa, "x");
        drop(a);
        assert_eq!(drain(&pb.outbox), [relay(1, "x")]);
        assert_eq!(hub.lobby().members(), 1);
        drop(b);
    }

    #[test]
    fn a_closed_hub_refuses_broadcasts_and_joins() {
        let hub = hub(true);
        let (a, pa) = enter(&hub, 1, 8);
        let (_b, pb) = enter(&hub, 2, 8);
        hub.lobby().flush_presence();
        drain(&pb.outbox);
        hub.close();
        assert!(!relay_from(&hub, &pa, "late"));
        assert!(drain(&pb.outbox).is_empty());
        let c = peer(&hub, 3, 8, false);
        assert!(hub.enter_lobby(&c).is_err());
        let d = peer(&hub, 4, 8, true);
        assert!(
            hub.join(&room("new"), &d, 10).is_err(),
            "rooms made after closing are closed"
        );
        drop(a);
        assert!(drain(&pb.outbox).is_empty(), "no Left while shutting down");
    }

    #[test]
    fn rooms_are_made_on_first_join_and_removed_when_empty() {
        let hub = hub(true);
        let p = peer(&hub, 9, 8, true);
        let q = peer(&hub, 10, 8, true);
        let m = hub.join(&room("Rust"), &p, 10).unwrap();
        assert!(Arc::ptr_eq(m.room(), &hub.find("rust").unwrap()));
        let n = hub.join(&room("RUST"), &q, 10).unwrap();
        assert!(
            Arc::ptr_eq(m.room(), n.room()),
            "one room, whatever the case"
        );
        assert_eq!(&*n.room().name, "Rust", "the creator's spelling");
        assert_eq!(
            hub.list(),
            [
                RoomInfo {
                    name: "lobby".into(),
                    members: 0
                },
                RoomInfo {
                    name: "Rust".into(),
                    members: 2
                }
            ]
        );
        drop(m);
        assert!(hub.find("rust").is_some());
        drop(n);
        assert!(hub.find("rust").is_none(), "removed when empty");
        assert!(hub.find("lobby").is_some(), "the lobby stays");
        // Made again by the next join, fresh.
        let m = hub.join(&room("rust"), &p, 10).unwrap();
        assert_eq!(&*m.room().name, "rust");
    }

    #[test]
    fn a_room_at_its_cap_refuses_and_a_member_cannot_join_twice() {
        let hub = hub(true);
        let (p, q) = (peer(&hub, 1, 8, true), peer(&hub, 2, 8, true));
        let _m = hub.join(&room("small"), &p, 1).unwrap();
        assert_eq!(hub.join(&room("small"), &q, 1).unwrap_err(), Refused::Full);
        assert_eq!(
            hub.join(&room("small"), &p, 5).unwrap_err(),
            Refused::Already
        );
    }

    #[test]
    fn the_list_is_sorted_by_folded_name() {
        let hub = hub(false);
        let names = ["b", "A", "c", "Ä"];
        let peers: Vec<_> = (0..4).map(|i| peer(&hub, i, 8, true)).collect();
        let _members: Vec<_> = names
            .iter()
            .zip(&peers)
            .map(|(n, p)| hub.join(&room(n), p, 10).unwrap())
            .collect();
        let listed: Vec<String> = hub.list().into_iter().map(|r| r.name).collect();
        assert_eq!(listed, ["A", "b", "c", "lobby", "Ä"]);
    }

    /// Rooms clients and version 1 clients share the lobby: each hears the
    /// other in its own terms, and a rooms client's roster ends with
    /// itself.
    #[test]
    fn a_mixed_lobby_speaks_both_versions() {
        let hub = hub(true);
        let (_v, pv) = enter(&hub, 1, 64);
        let (_a, pa) = named(&hub, 2, "Ana");
        hub.lobby().flush_presence();
        assert_eq!(drain(&pv.outbox), [joined(2)]);
        let v_name = pv.name();
        assert_eq!(&*v_name, "guest-1");
        assert_eq!(
            drain(&pa.outbox),
            [roster("lobby", &[("guest-1", 1), ("Ana", 2)])]
        );
        let (_b, pb) = named(&hub, 3, "李雷");
        hub.lobby().flush_presence();
        assert_eq!(drain(&pv.outbox), [joined(3)]);
        assert_eq!(drain(&pa.outbox), [entered("lobby", "李雷", 3)]);
        assert_eq!(
            drain(&pb.outbox),
            [roster("lobby", &[("guest-1", 1), ("Ana", 2), ("李雷", 3)])]
        );
        // The v1 client speaks: a Relay for nobody, a Said for both.
        let said = Message::Said {
            room: "lobby".into(),
            from: member("guest-1", 1),
            text: "hi".into(),
        };
        assert!(say(&hub, &pv, &relay(1, "hi"), &said));
        assert_eq!(drain(&pa.outbox), std::slice::from_ref(&said));
        assert_eq!(drain(&pb.outbox), [said]);
        assert!(drain(&pv.outbox).is_empty());
    }

    /// Newcomers of one batch: each rooms newcomer's roster lists the
    /// members, then the other newcomers, then itself; nobody is both in
    /// a roster and `Entered` to the same client.
    #[test]
    fn newcomers_of_one_batch_are_in_each_others_rosters() {
        let hub = hub(true);
        let (_a, pa) = named(&hub, 1, "a");
        hub.lobby().flush_presence();
        drain(&pa.outbox);
        let (_b, pb) = named(&hub, 2, "b");
        let (_c, pc) = named(&hub, 3, "c");
        let (_v, pv) = enter(&hub, 4, 64);
        hub.lobby().flush_presence();
        let v = &*pv.name().to_string();
        assert_eq!(
            drain(&pb.outbox),
            [roster("lobby", &[("a", 1), ("c", 3), (v, 4), ("b", 2)])]
        );
        assert_eq!(
            drain(&pc.outbox),
            [roster("lobby", &[("a", 1), ("b", 2), (v, 4), ("c", 3)])]
        );
        assert_eq!(drain(&pv.outbox), [joined(1), joined(2), joined(3)]);
        assert_eq!(
            drain(&pa.outbox),
            [
                entered("lobby", "b", 2),
                entered("lobby", "c", 3),
                entered("lobby", v, 4)
            ]
        );
    }

    /// In a big room the members' frames are shared by the batch's
    /// newcomers; each still gets every member in order, itself last.
    #[test]
    fn a_big_rooms_roster_shares_its_frames() {
        let hub = hub(true);
        let big = room("big");
        let crowd: Vec<_> = (1..=300).map(|i| peer(&hub, i, 64, true)).collect();
        let mut members: Vec<_> = crowd
            .iter()
            .map(|p| hub.join(&big, p, 1000).unwrap())
            .collect();
        let x = hub.find("big").unwrap();
        x.flush_presence();
        // Members' ports, in order, as a newcomer's roster lists them.
        let listed = |frames: Vec<Message>| -> Vec<(String, u16)> {
            let mut got = Vec::new();
            for (i, frame) in frames.iter().enumerate() {
                let Message::Roster { members, more, .. } = frame else {
                    panic!("{frame:?}")
                };
                assert_eq!(*more, i + 1 < frames.len());
                got.extend(members.iter().map(|m| (m.name.clone(), m.port)));
            }
            got
        };
        let mut expected: Vec<(String, u16)> = crowd
            .iter()
            .map(|p| (p.name().to_string(), p.addr.port()))
            .collect();
        // Three batches: the kept roster is built; stale after a rename,
        // built again; stale after a departure, built again.
        for round in 0..3u16 {
            if round == 1 {
                let renamed = &crowd[5];
                let rooms = [x.clone()];
                hub.rename(renamed, Label::new("Renamed", "renamed"), rooms.iter())
                    .unwrap();
                expected[5].0 = "Renamed".into();
            }
            if round == 2 {
                drop(members.remove(0));
                expected.remove(0);
            }
            let ports = [1001 + 2 * round, 1002 + 2 * round];
            let (p, q) = (
                peer(&hub, ports[0], 64, true),
                peer(&hub, ports[1], 64, true),
            );
            members.push(hub.join(&big, &p, 1000).unwrap());
            members.push(hub.join(&big, &q, 1000).unwrap());
            x.flush_presence();
            let entry = |c: &Arc<Peer>| (c.name().to_string(), c.addr.port());
            for (me, other) in [(&p, &q), (&q, &p)] {
                let frames = drain(&me.outbox);
                assert!(frames.len() >= 2, "shared frames, then its own");
                let mut want = expected.clone();
                want.extend([entry(other), entry(me)]);
                assert_eq!(listed(frames), want, "round {round}");
            }
            expected.extend([entry(&p), entry(&q)]);
        }
    }

    /// A crowd arriving in a big room at once: each newcomer's roster is
    /// every member, the others of its batch, then itself, in a few frames.
    #[test]
    fn a_crowd_joining_a_big_room_gets_whole_rosters() {
        let hub = hub(true);
        let big = room("big");
        let old: Vec<_> = (1..=300).map(|i| peer(&hub, i, 64, true)).collect();
        let mut held: Vec<_> = old
            .iter()
            .map(|p| hub.join(&big, p, 1000).unwrap())
            .collect();
        let x = hub.find("big").unwrap();
        x.flush_presence();
        let crowd: Vec<_> = (1001..=1070).map(|i| peer(&hub, i, 64, true)).collect();
        held.extend(crowd.iter().map(|p| hub.join(&big, p, 1000).unwrap()));
        x.flush_presence();
        for i in [0, 1, 31, 32, 33, 63, 64, 69] {
            let frames = drain(&crowd[i].outbox);
            assert!(frames.len() <= 8, "{} frames", frames.len());
            let mut ports = Vec::new();
            for (n, frame) in frames.iter().enumerate() {
                let Message::Roster { members, more, .. } = frame else {
                    panic!("{frame:?}")
                };
                assert_eq!(*more, n + 1 < frames.len());
                ports.extend(members.iter().map(|m| m.port));
            }
            let mut expected: Vec<u16> = (1..=300).collect();
            expected.extend((1001..=1070).filter(|&p| p != 1001 + i as u16));
            expected.push(1001 + i as u16);
            assert_eq!(ports, expected, "newcomer {i}");
        }
    }

    /// A part reaches every member and the leaver; parting and coming back
    /// at once is heard in that order; a newcomer that parts before its
    /// batch went out gets its roster first.
    #[test]
    fn parting_and_coming_back_keep_their_order() {
        let hub = hub(true);
        let (_a, pa) = named(&hub, 1, "a");
        let (b, pb) = named(&hub, 2, "b");
        hub.lobby().flush_presence();
        drain(&pa.outbox);
        drain(&pb.outbox);
        b.part();
        assert_eq!(drain(&pb.outbox), [departed("lobby", "b", 2)]);
        let _b = hub.enter_lobby(&pb).unwrap();
        hub.lobby().flush_presence();
        assert_eq!(
            drain(&pa.outbox),
            [departed("lobby", "b", 2), entered("lobby", "b", 2)]
        );
        assert_eq!(drain(&pb.outbox), [roster("lobby", &[("a", 1), ("b", 2)])]);
        // Join and part before the batch goes out.
        let c = peer(&hub, 3, 64, true);
        let m = hub.join(&room("x"), &c, 10).unwrap();
        m.part();
        assert_eq!(
            drain(&c.outbox),
            [roster("x", &[(&c.name(), 3)]), departed("x", &c.name(), 3)]
        );
        assert!(hub.find("x").is_none());
    }

    /// A `Who` answer includes what the notices already said, and nothing
    /// they have yet to say.
    #[test]
    fn a_roster_on_request_agrees_with_the_notices() {
        let hub = hub(true);
        let (_a, pa) = named(&hub, 1, "a");
        let (b, _) = named(&hub, 2, "b");
        hub.lobby().flush_presence();
        drain(&pa.outbox);
        drop(b);
        let (_c, _) = named(&hub, 3, "c");
        assert!(hub.lobby().roster_to(&pa));
        assert_eq!(
            drain(&pa.outbox),
            [
                entered("lobby", "c", 3),
                departed("lobby", "b", 2),
                roster("lobby", &[("a", 1), ("c", 3)])
            ]
        );
    }

    /// A rename reaches the renamer and every rooms client sharing a room
    /// with it, once, however many rooms they share; never a v1 client.
    #[test]
    fn a_rename_is_heard_once_by_each_room_mate() {
        let hub = hub(false);
        let (la, pa) = named(&hub, 1, "a");
        let (_lb, pb) = named(&hub, 2, "b");
        let (_v, pv) = enter(&hub, 3, 64);
        let ma = hub.join(&room("x"), &pa, 10).unwrap();
        let _mb = hub.join(&room("x"), &pb, 10).unwrap();
        let pc = peer(&hub, 4, 64, true);
        let _mc = hub.join(&room("y"), &pc, 10).unwrap();
        for p in [&pa, &pb, &pv, &pc] {
            drain(&p.outbox);
        }
        let new = Label::new("Alpha", "alpha");
        let rooms = [la.room(), ma.room()];
        let old = hub.rename(&pa, new, rooms.into_iter()).unwrap();
        assert_eq!(&*old.shown, "a");
        let renamed = Message::Renamed {
            old: "a".into(),
            member: member("Alpha", 1),
        };
        assert_eq!(drain(&pa.outbox), std::slice::from_ref(&renamed));
        assert_eq!(drain(&pb.outbox), [renamed]);
        assert!(drain(&pv.outbox).is_empty());
        assert!(drain(&pc.outbox).is_empty());
        assert_eq!(hub.directory().find("alpha").unwrap().id, pa.id);
        assert!(hub.directory().find("a").is_none());
        // Taken: nothing changes, nobody hears.
        let taken = hub.rename(&pb, Label::new("ALPHA", "alpha"), [la.room()].into_iter());
        assert!(taken.is_err());
        assert_eq!(&*pb.name(), "b");
        assert!(drain(&pa.outbox).is_empty());
    }

    /// Fan-out in one room does not wait for a join in another: the other
    /// room's locks are its own.
    #[test]
    fn a_room_fans_out_while_another_is_locked() {
        let hub = Arc::new(hub(true));
        let p = peer(&hub, 1, 64, true);
        let q = peer(&hub, 2, 64, true);
        let _m = hub.join(&room("x"), &p, 10).unwrap();
        let _n = hub.join(&room("x"), &q, 10).unwrap();
        let x = hub.find("x").unwrap();
        x.flush_presence();
        let r = peer(&hub, 3, 64, true);
        let _o = hub.join(&room("y"), &r, 10).unwrap();
        let y = hub.find("y").unwrap();
        // Hold y's locks (as a big batch does) while x fans out.
        let guard = y.hold();
        let (done, fanned) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let sent = x.broadcast(p.id, &Bytes::new(), &Bytes::from_static(b"s"));
            let _ = done.send(sent);
        });
        let sent = fanned.recv_timeout(Duration::from_secs(10));
        drop(guard);
        assert_eq!(sent, Ok(true), "x fanned out while y was locked");
        let mut got = Vec::new();
        q.outbox.drain_into(&mut got, 64).unwrap();
        assert_eq!(got.last().map(|b| &b[..]), Some(&b"s"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_goes_out_after_the_delay_on_its_own() {
        let hub = Arc::new(hub(true));
        let (_a, pa) = enter(&hub, 1, 8);
        hub.lobby().flush_presence();
        let (_b, _) = enter(&hub, 2, 8);
        let pacer = tokio::spawn({
            let hub = hub.clone();
            async move { hub.pace_presence().await }
        });
        let t0 = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(1), pa.outbox.ready())
            .await
            .expect("the batch goes out");
        assert!(t0.elapsed() >= Duration::from_millis(10));
        assert_eq!(drain(&pa.outbox), [joined(2)]);
        assert_eq!(hub.lobby().members(), 2);
        pacer.abort();
    }
}
