//! Presence notices of one room, batched.
//!
//! A newcomer is not a member yet when it joins: it waits in the batch. When
//! the batch goes out (at the latest `presence_delay` later, at once when it
//! reaches `presence_batch` bytes, and always before the room's next relay),
//! in one step under the room's write lock:
//!
//! - every member receives the batch's notices, one shared buffer for all
//!   members of a kind: `Joined`/`Left` for version 1 members (only the
//!   lobby has any), `Entered`/`Departed` for rooms members;
//! - every newcomer receives the roster: a version 1 newcomer a `Joined`
//!   for each member, then the `Joined` of the other newcomers of the batch
//!   (slices of the same buffer); a rooms newcomer `Roster` frames listing
//!   the members in order (encoded once for the batch), then the other
//!   newcomers, then itself, last;
//! - the newcomers become members, and only from then on receive relays.
//!
//! So a peer's arrival reaches everyone before any relay from it, a
//! newcomer learns who was there before hearing from them, and a departure
//! reaches exactly the members that were told of the peer: a departure is
//! announced to the members of the moment, and a newcomer that joins in the
//! same batch never heard of the departed peer at all. A newcomer that
//! disconnects before its batch goes out was never announced, and nobody
//! hears of it. (One that parts, or asks for the roster again, has the
//! batch sent first: it was told it is in.) A peer that departed and comes
//! back has the batch with its departure sent before it arrives again, so
//! nobody hears of the two in the wrong order.
//!
//! A crowd of N arriving together costs each member one buffer per batch
//! rather than one per arrival, and each batch one copy of the roster,
//! shared by that batch's newcomers; the roster bytes themselves (N²/2 in
//! all) are the price of the promise, paid in socket writes, not in memory
//! held.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chat_proto::{ChatCodec, Member, Message};

use crate::peer::{Peer, PeerId};
use crate::roster;

/// Rosters longer than this share the members' frames between the
/// newcomers of a batch, and from batch to batch, rather than encode them
/// for each.
const SHARED_ROSTER: usize = 256;

/// A kept roster of more frames than this (a frame or so is added to it
/// per batch) is encoded again, in full frames.
const MAX_CACHED_FRAMES: usize = 32;

/// A newcomer's roster, in up to five slices (empty ones are skipped).
type View = [Bytes; 5];

/// Newcomers of one batch go in frames of this many, shared by the others.
const GROUP: usize = 32;

/// How a room encodes what it sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codecs {
    /// For version 1 clients: frames of at most `limit`.
    pub(crate) v1: ChatCodec,
    /// For rooms clients (`ServerConfig::outbound_for(ROOMS)`).
    pub(crate) rooms: ChatCodec,
    /// For history clients (`ServerConfig::outbound_for(ROOMS | HISTORY)`).
    pub(crate) history: ChatCodec,
    /// The server's frame limit `L`, which rosters are cut to.
    pub(crate) limit: usize,
}

/// Notices not yet sent, and the cached version 1 roster.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    /// Peers waiting to become members, in arrival order.
    newcomers: Vec<Arc<Peer>>,
    /// `Left` frames of members gone since the last batch, for version 1
    /// members.
    lefts: BytesMut,
    /// `Departed` frames of the same, for rooms members.
    departed: BytesMut,
    /// Who departed since the last batch.
    gone: Vec<PeerId>,
    /// A `Joined` frame for every member, in membership order; `None` when
    /// a departure made it stale, or nobody needs it.
    roster: Option<Bytes>,
    /// In a big room, `Roster` frames (all with `more` set) listing every
    /// member in order, and how many frames; `None` when a departure or a
    /// rename made it stale.
    rooms_roster: Option<(Bytes, usize)>,
    /// The room was taken out of the hub: joins must look it up again.
    pub(crate) removed: bool,
}

/// What a batch must do once its notices are built.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// For the version 1 members: the newcomers' `Joined`s, then the `Left`s.
    pub(crate) v1: Bytes,
    /// For the rooms members: the newcomers' `Entered`s, then the `Departed`s.
    pub(crate) rooms: Bytes,
    /// Each newcomer and its roster, in slices.
    pub(crate) newcomers: Vec<(Arc<Peer>, View)>,
}

impl Presence {
    /// Whether nothing waits to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.newcomers.is_empty() && self.lefts.is_empty() && self.departed.is_empty()
    }

    /// Bytes the next batch will carry to the members, about.
    pub(crate) fn size(&self) -> usize {
        // A `Joined` frame is 11 to 25 bytes.
        self.newcomers.len() * 16 + self.lefts.len().max(self.departed.len())
    }

    /// Adds a newcomer to the batch.
    pub(crate) fn arrive(&mut self, peer: Arc<Peer>) {
        self.newcomers.push(peer);
    }

    /// Whether `id` waits in the batch.
    pub(crate) fn is_newcomer(&self, id: PeerId) -> bool {
        self.newcomers.iter().any(|p| p.id == id)
    }

    /// Whether `id` departed since the last batch.
    pub(crate) fn has_gone(&self, id: PeerId) -> bool {
        self.gone.contains(&id)
    }

    /// Takes `id` out of the batch if it is still a newcomer (it was never
    /// announced); false if it is not one.
    pub(crate) fn withdraw(&mut self, id: PeerId) -> bool {
        match self.newcomers.iter().position(|p| p.id == id) {
            Some(i) => {
                self.newcomers.remove(i);
                true
            }
            None => false,
        }
    }

    /// Records that the member `peer` left `room`: a `Left` if version 1
    /// members may hear it (`v1`), a `Departed` if rooms members may
    /// (`rooms`). Returns the `Departed` frame when `rooms` or `own`
    /// (the leaver parted and gets it too).
    pub(crate) fn depart(
        &mut self,
        codecs: &Codecs,
        peer: &Peer,
        room: &str,
        v1: bool,
        rooms: bool,
        own: bool,
    ) -> Option<Bytes> {
        self.roster = None;
        self.rooms_roster = None;
        self.gone.push(peer.id);
        if v1 {
            encode(&codecs.v1, &left(peer.addr), &mut self.lefts);
        }
        if !rooms && !own {
            return None;
        }
        let frame = departed(codecs, peer, room);
        if rooms {
            self.departed.extend_from_slice(&frame);
        }
        Some(frame)
    }

    /// A member was renamed: the kept roster names it as it was.
    pub(crate) fn forget_names(&mut self) {
        self.rooms_roster = None;
    }

    /// A member left without notice (presence off, or shutting down): the
    /// roster is stale all the same.
    pub(crate) fn forget(&mut self) {
        self.roster = None;
        self.rooms_roster = None;
    }

    /// Builds the batch for `room`, whose members are `members`, and empties
    /// the queue. `v1` and `rooms`: whether members or newcomers of each
    /// kind exist (notices for a kind nobody is are not built). The caller
    /// holds the hub's names lock (names are read) and the room's write
    /// lock; it delivers the batch and makes the newcomers members.
    pub(crate) fn take<'a>(
        &mut self,
        codecs: &Codecs,
        room: &str,
        members: impl Iterator<Item = &'a Arc<Peer>> + Clone,
        v1: bool,
        rooms: bool,
    ) -> Batch {
        let newcomers = std::mem::take(&mut self.newcomers);
        self.gone.clear();
        let mut batch = Batch::default();
        let departed = std::mem::take(&mut self.departed).freeze();
        let lefts = std::mem::take(&mut self.lefts).freeze();
        let v1_views = if v1 {
            self.take_v1(codecs, members.clone(), &newcomers, lefts, &mut batch)
        } else {
            self.roster = None;
            Vec::new()
        };
        let rooms_views = if rooms {
            self.take_rooms(codecs, room, members, &newcomers, departed, &mut batch)
        } else {
            self.rooms_roster = None;
            Vec::new()
        };
        let (mut v1_views, mut rooms_views) = (v1_views.into_iter(), rooms_views.into_iter());
        batch.newcomers = newcomers
            .into_iter()
            .map(|peer| {
                let view = if peer.rooms {
                    rooms_views.next()
                } else {
                    v1_views.next()
                };
                (peer, view.unwrap_or_default())
            })
            .collect();
        batch
    }

    /// The version 1 part: `Joined` notices and rosters, as the seed had
    /// them. Returns a roster view per version 1 newcomer, in order.
    fn take_v1<'a>(
        &mut self,
        codecs: &Codecs,
        members: impl Iterator<Item = &'a Arc<Peer>>,
        newcomers: &[Arc<Peer>],
        lefts: Bytes,
        batch: &mut Batch,
    ) -> Vec<View> {
        let roster = match self.roster.take() {
            Some(roster) => roster,
            None => {
                let mut buf = BytesMut::new();
                for peer in members {
                    encode(&codecs.v1, &joined(peer.addr), &mut buf);
                }
                buf.freeze()
            }
        };
        if newcomers.is_empty() {
            self.roster = Some(roster);
            batch.v1 = lefts;
            return Vec::new();
        }
        // roster | newcomers' Joined | lefts, in one buffer.
        let mut buf = BytesMut::with_capacity(roster.len() + newcomers.len() * 16 + lefts.len());
        buf.extend_from_slice(&roster);
        let mut spans = Vec::with_capacity(newcomers.len());
        for peer in newcomers {
            let start = buf.len();
            encode(&codecs.v1, &joined(peer.addr), &mut buf);
            spans.push((peer.rooms, start, buf.len()));
        }
        let joined_end = buf.len();
        buf.extend_from_slice(&lefts);
        let all = buf.freeze();
        self.roster = Some(all.slice(..joined_end));
        batch.v1 = all.slice(roster.len()..);
        spans
            .into_iter()
            .filter(|(rooms, _, _)| !rooms)
            .map(|(_, start, end)| {
                let (before, after) = (all.slice(..start), all.slice(end..joined_end));
                [before, after, Bytes::new(), Bytes::new(), Bytes::new()]
            })
            .collect()
    }
}

impl Presence {
    /// The rooms part: `Entered` notices and `Roster` frames. Returns a
    /// roster view per rooms newcomer, in order.
    fn take_rooms<'a>(
        &mut self,
        codecs: &Codecs,
        room: &str,
        members: impl Iterator<Item = &'a Arc<Peer>> + Clone,
        newcomers: &[Arc<Peer>],
        departed: Bytes,
        batch: &mut Batch,
    ) -> Vec<View> {
        if newcomers.is_empty() {
            batch.rooms = departed;
            return Vec::new();
        }
        let mut notices = BytesMut::with_capacity(newcomers.len() * 48 + departed.len());
        let arrivals: Vec<Member> = newcomers.iter().map(|p| p.member()).collect();
        for member in &arrivals {
            let entered = Message::Entered {
                room: room.to_owned(),
                member: member.clone(),
            };
            encode(&codecs.rooms, &entered, &mut notices);
        }
        notices.extend_from_slice(&departed);
        batch.rooms = notices.freeze();
        let wanted = newcomers.iter().any(|p| p.rooms);
        let count = members.clone().count();
        if count + arrivals.len() <= SHARED_ROSTER {
            // A small room: each newcomer's roster whole (one frame, most
            // likely): the members, the other newcomers, then itself.
            self.rooms_roster = None;
            if !wanted {
                return Vec::new();
            }
            let present: Vec<Member> = members.map(|p| p.member()).collect();
            let mut views = Vec::new();
            let mut list = Vec::with_capacity(present.len() + arrivals.len());
            for (i, peer) in newcomers.iter().enumerate() {
                if !peer.rooms {
                    continue;
                }
                list.clear();
                list.extend(present.iter().cloned());
                list.extend(others(&arrivals, i));
                list.push(arrivals[i].clone());
                let mut buf = BytesMut::new();
                roster::roster(&codecs.rooms, codecs.limit, room, &list, false, &mut buf);
                let whole = buf.freeze();
                views.push([
                    whole,
                    Bytes::new(),
                    Bytes::new(),
                    Bytes::new(),
                    Bytes::new(),
                ]);
            }
            return views;
        }
        // A big room: the members' frames are kept from batch to batch and
        // shared by every newcomer; then one frame per newcomer, each a
        // slice of one buffer, all but itself; then itself, last.
        let prefix = match self.rooms_roster.take() {
            Some((prefix, frames)) if frames <= MAX_CACHED_FRAMES => (prefix, frames),
            _ => {
                let present: Vec<Member> = members.map(|p| p.member()).collect();
                let mut buf = BytesMut::new();
                roster::roster(&codecs.rooms, codecs.limit, room, &present, true, &mut buf);
                (buf.freeze(), 0)
            }
        };
        // The newcomers in groups, a frame each, shared: a newcomer gets
        // the groups but its own, its own group without itself, then itself.
        let mut buf = BytesMut::new();
        let mut spans = Vec::new();
        for group in arrivals.chunks(GROUP) {
            let start = buf.len();
            roster::roster(&codecs.rooms, codecs.limit, room, group, true, &mut buf);
            spans.push((start, buf.len()));
        }
        let mates = buf.freeze();
        let mut views = Vec::new();
        for (i, peer) in newcomers.iter().enumerate() {
            if !peer.rooms {
                continue;
            }
            let g = i / GROUP;
            let (start, end) = spans[g];
            let group = &arrivals[g * GROUP..arrivals.len().min((g + 1) * GROUP)];
            let rest: Vec<Member> = others(group, i - g * GROUP).collect();
            let mut mine = BytesMut::new();
            roster::roster(&codecs.rooms, codecs.limit, room, &rest, true, &mut mine);
            let split = mine.len();
            let me = std::slice::from_ref(&arrivals[i]);
            roster::roster(&codecs.rooms, codecs.limit, room, me, false, &mut mine);
            let mine = mine.freeze();
            views.push([
                prefix.0.clone(),
                mates.slice(..start),
                mine.slice(..split),
                mates.slice(end..),
                mine.slice(split..),
            ]);
        }
        // Next time the newcomers are members: in full frames after the
        // kept ones (a frame more per batch, until they are encoded again).
        let mut next = BytesMut::with_capacity(prefix.0.len() + mates.len());
        next.extend_from_slice(&prefix.0);
        roster::roster(
            &codecs.rooms,
            codecs.limit,
            room,
            &arrivals,
            true,
            &mut next,
        );
        self.rooms_roster = Some((next.freeze(), prefix.1 + 1));
        views
    }
}

/// `members` but the one at `i`.
fn others(members: &[Member], i: usize) -> impl Iterator<Item = Member> + '_ {
    members
        .iter()
        .enumerate()
        .filter(move |&(j, _)| j != i)
        .map(|(_, m)| m.clone())
}

impl Batch {
    /// Pushes the batch: notices to `members` by kind, rosters to the
    /// newcomers. A full outbox marks its peer evicted, as for any push.
    pub(crate) fn deliver<'a>(&self, members: impl Iterator<Item = &'a Arc<Peer>>) {
        if !self.v1.is_empty() || !self.rooms.is_empty() {
            for peer in members {
                let notices = if peer.rooms { &self.rooms } else { &self.v1 };
                if !notices.is_empty() {
                    peer.outbox.push(notices.clone());
                }
            }
        }
        for (peer, view) in &self.newcomers {
            for part in view.iter().filter(|b| !b.is_empty()) {
                peer.outbox.push_roster(part.clone());
            }
        }
    }
}

/// `peer`'s `Departed` from `room`, for rooms clients.
pub(crate) fn departed(codecs: &Codecs, peer: &Peer, room: &str) -> Bytes {
    let mut buf = BytesMut::new();
    let departed = Message::Departed {
        room: room.to_owned(),
        member: peer.member(),
    };
    encode(&codecs.rooms, &departed, &mut buf);
    buf.freeze()
}

fn encode(codec: &ChatCodec, msg: &Message, buf: &mut BytesMut) {
    // A notice is at most 25 bytes for version 1, and within the rooms
    // codec's overhead for rooms clients: it fits.
    let _ = codec.encode(msg, buf);
}

fn joined(addr: SocketAddr) -> Message {
    Message::Joined {
        ip: addr.ip(),
        port: addr.port(),
    }
}

fn left(addr: SocketAddr) -> Message {
    Message::Left {
        ip: addr.ip(),
        port: addr.port(),
    }
}
