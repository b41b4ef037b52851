//! Join and leave notices, batched.
//!
//! A newcomer is not a member yet when it joins: it waits in the batch. When
//! the batch goes out (at the latest `presence_delay` later, at once when it
//! reaches `presence_batch` bytes, and always before the room's next relay),
//! in one step under the room's lock:
//!
//! - every member receives the batch's `Joined` and `Left` notices, one
//!   shared buffer for all;
//! - every newcomer receives the roster, a `Joined` for each member, then
//!   the `Joined` of the other newcomers of the batch (slices of the same
//!   buffer);
//! - the newcomers become members, and only from then on receive relays.
//!
//! So a peer's `Joined` reaches everyone before any relay from it, a
//! newcomer learns who was there before hearing from them, and a `Left`
//! reaches exactly the members that were told of the peer: a departure is
//! announced to the members of the moment, and a newcomer that joins in the
//! same batch never heard of the departed peer at all. A newcomer that
//! leaves before its batch goes out was never announced, and nobody hears of
//! it.
//!
//! A crowd of N arriving together costs each member one buffer per batch
//! rather than one per arrival, and each batch one copy of the roster,
//! shared by that batch's newcomers; the roster bytes themselves (a
//! `Joined` per member for each newcomer, N²/2 in all) are the price of the
//! promise, paid in socket writes, not in memory held.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use chat_proto::{ChatCodec, Message};

use crate::outbox::Outbox;
use crate::peer::{Peer, PeerId};

/// Notices not yet sent, and the cached roster.
#[derive(Debug)]
pub(crate) struct Presence {
    codec: ChatCodec,
    /// Peers waiting to become members, in arrival order.
    newcomers: Vec<Peer>,
    /// `Left` frames of members gone since the last batch.
    lefts: BytesMut,
    /// A `Joined` frame for every member, in membership order; `None` when
    /// a departure made it stale.
    roster: Option<Bytes>,
}

/// What a batch must do once its notices are built.
#[derive(Debug)]
pub(crate) struct Batch {
    /// For the members: the newcomers' `Joined`s, then the `Left`s.
    pub(crate) notices: Bytes,
    /// For each newcomer: its roster, in up to two slices.
    pub(crate) newcomers: Vec<(Peer, [Bytes; 2])>,
}

impl Presence {
    /// Notices encoded with `codec` (the server's outbound codec).
    pub(crate) fn new(codec: ChatCodec) -> Self {
        Presence {
            codec,
            newcomers: Vec::new(),
            lefts: BytesMut::new(),
            roster: Some(Bytes::new()),
        }
    }

    /// Whether nothing waits to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.newcomers.is_empty() && self.lefts.is_empty()
    }

    /// Bytes the next batch will carry to the members, about.
    pub(crate) fn size(&self) -> usize {
        // A `Joined` frame is 11 to 25 bytes.
        self.newcomers.len() * 16 + self.lefts.len()
    }

    /// Adds a newcomer to the batch.
    pub(crate) fn arrive(&mut self, peer: Peer) {
        self.newcomers.push(peer);
    }

    /// Takes `id` out of the batch if it is still a newcomer (it was never
    /// announced); false if it is a member.
    pub(crate) fn withdraw(&mut self, id: PeerId) -> bool {
        match self.newcomers.iter().position(|p| p.id == id) {
            Some(i) => {
                self.newcomers.remove(i);
                true
            }
            None => false,
        }
    }

    /// Records that the member at `addr` left.
    pub(crate) fn depart(&mut self, addr: SocketAddr) {
        encode(&self.codec, &left(addr), &mut self.lefts);
        self.roster = None;
    }

    /// A member left without notice (presence off, or shutting down): the
    /// roster is stale all the same.
    pub(crate) fn forget(&mut self) {
        self.roster = None;
    }

    /// Builds the batch for a room whose members are `members`, and empties
    /// the queue. The caller pushes it and makes the newcomers members.
    pub(crate) fn take<'a>(&mut self, members: impl Iterator<Item = &'a Peer> + Clone) -> Batch {
        let roster = match self.roster.take() {
            Some(roster) => roster,
            None => {
                let mut buf = BytesMut::new();
                for peer in members.clone() {
                    encode(&self.codec, &joined(peer.addr), &mut buf);
                }
                buf.freeze()
            }
        };
        let newcomers = std::mem::take(&mut self.newcomers);
        if newcomers.is_empty() {
            self.roster = Some(roster);
            let notices = self.lefts.split().freeze();
            self.lefts = BytesMut::new();
            return Batch {
                notices,
                newcomers: Vec::new(),
            };
        }
        // roster | newcomers' Joined | lefts, in one buffer.
        let mut buf =
            BytesMut::with_capacity(roster.len() + newcomers.len() * 16 + self.lefts.len());
        buf.extend_from_slice(&roster);
        let mut spans = Vec::with_capacity(newcomers.len());
        for peer in &newcomers {
            let start = buf.len();
            encode(&self.codec, &joined(peer.addr), &mut buf);
            spans.push((start, buf.len()));
        }
        let joined_end = buf.len();
        buf.extend_from_slice(&self.lefts);
        self.lefts = BytesMut::new();
        let all = buf.freeze();
        self.roster = Some(all.slice(..joined_end));
        let newcomers = newcomers
            .into_iter()
            .zip(spans)
            .map(|(peer, (start, end))| {
                let view = [all.slice(..start), all.slice(end..joined_end)];
                (peer, view)
            })
            .collect();
        Batch {
            notices: all.slice(roster.len()..),
            newcomers,
        }
    }
}

impl Batch {
    /// Pushes the batch: notices to `members`, rosters to the newcomers.
    /// A full outbox marks its peer evicted, as for any push.
    pub(crate) fn deliver<'a>(&self, members: impl Iterator<Item = &'a Outbox>) {
        if !self.notices.is_empty() {
            for outbox in members {
                outbox.push(self.notices.clone());
            }
        }
        for (peer, view) in &self.newcomers {
            for part in view.iter().filter(|b| !b.is_empty()) {
                peer.outbox.push_roster(part.clone());
            }
        }
    }
}

fn encode(codec: &ChatCodec, msg: &Message, buf: &mut BytesMut) {
    // A notice is at most 25 bytes: it fits the smallest frame limit.
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
