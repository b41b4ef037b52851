//! The registry of connected peers and the fan-out policy.
//!
//! The room holds each peer's outbox `Sender` and eviction token, never a
//! socket. A broadcast takes the read lock, offers the same [`Bytes`] to every
//! other peer with `try_send` (a reference-count increment, no copy) and
//! never waits: a peer whose outbox is full is a slow consumer and is told to
//! leave through its token. Joins and leaves take the write lock briefly;
//! nothing holds the lock across an `.await`.

use std::sync::{PoisonError, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

/// A connected (welcomed) peer, as the others see it.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Unique for the server's lifetime; addresses can be reused.
    pub(crate) id: u64,
    /// The peer's bounded outbox of encoded frames.
    pub(crate) tx: mpsc::Sender<Bytes>,
    /// Cancelled to evict the peer as a slow consumer.
    pub(crate) kick: CancellationToken,
}

/// Every welcomed peer.
#[derive(Debug, Default)]
pub(crate) struct Room {
    peers: RwLock<Vec<Peer>>,
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

    /// Offers `bytes` to every peer but `from`, without waiting. A peer whose
    /// outbox is full is evicted (its token cancelled); one that is already
    /// gone is skipped.
    pub(crate) fn broadcast(&self, from: u64, bytes: &Bytes) {
        let peers = self.read();
        for peer in peers.iter().filter(|p| p.id != from) {
            match peer.tx.try_send(bytes.clone()) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(_)) => {
                    if !peer.kick.is_cancelled() {
                        peer.kick.cancel();
                    }
                }
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, depth: usize) -> (Peer, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(depth);
        let kick = CancellationToken::new();
        (Peer { id, tx, kick }, rx)
    }

    #[test]
    fn broadcast_skips_the_sender_and_shares_the_bytes() {
        let room = Room::default();
        let (a, mut ra) = peer(1, 4);
        let (b, mut rb) = peer(2, 4);
        room.join(a);
        room.join(b);
        let bytes = Bytes::from_static(b"frame");
        room.broadcast(1, &bytes);
        assert!(ra.try_recv().is_err());
        let got = rb.try_recv().unwrap();
        assert_eq!(got.as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn full_outbox_evicts_only_that_peer() {
        let room = Room::default();
        let (a, _ra) = peer(1, 1);
        let (b, mut rb) = peer(2, 8);
        let (kick_a, kick_b) = (a.kick.clone(), b.kick.clone());
        room.join(a);
        room.join(b);
        for _ in 0..3 {
            room.broadcast(9, &Bytes::from_static(b"x"));
        }
        assert!(kick_a.is_cancelled());
        assert!(!kick_b.is_cancelled());
        assert_eq!((0..3).filter(|_| rb.try_recv().is_ok()).count(), 3);
        room.leave(1);
        assert_eq!(room.len(), 1);
    }
}
