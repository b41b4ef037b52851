//! Names → peers: who holds which name, for uniqueness and direct messages.
//!
//! Keyed by the folded name, so `Alice` and `alice` are one entry. Claiming
//! a name (the first one, or a rename) checks and takes it in one step under
//! one lock: of two clients racing for a name exactly one gets it. A name is
//! released when its holder renames or disconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::names;
use crate::peer::{Label, Peer};

/// Another client holds that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken;

/// Every name in use.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    names: Mutex<HashMap<Arc<str>, Arc<Peer>>>,
    /// The last `guest-N` handed out.
    guests: AtomicU64,
}

impl Directory {
    /// Gives `peer` the name `label` unless someone else holds it, releasing
    /// the one it had. Returns the old label (empty for a first name).
    pub(crate) fn claim(&self, peer: &Arc<Peer>, label: Label) -> Result<Label, Taken> {
        let mut names = self.lock();
        if names.get(&label.key).is_some_and(|p| p.id != peer.id) {
            return Err(Taken);
        }
        let old = peer.label();
        if !old.key.is_empty() && old.key != label.key {
            names.remove(&old.key);
        }
        names.insert(label.key.clone(), peer.clone());
        peer.set_label(label);
        Ok(old)
    }

    /// Gives `peer` the first free `guest-N` (N counting up), releasing the
    /// name it had. Returns the old label.
    pub(crate) fn assign(&self, peer: &Arc<Peer>) -> Label {
        let mut taken = self.lock();
        let label = loop {
            let n = self.guests.fetch_add(1, Ordering::Relaxed) + 1;
            let name = names::guest(n);
            if !taken.contains_key(name.key()) {
                break Label::new(name.as_str(), name.key());
            }
        };
        let old = peer.label();
        if !old.key.is_empty() {
            taken.remove(&old.key);
        }
        taken.insert(label.key.clone(), peer.clone());
        peer.set_label(label);
        old
    }

    /// Who holds the name whose key is `key`, if anyone.
    pub(crate) fn find(&self, key: &str) -> Option<Arc<Peer>> {
        self.lock().get(key).cloned()
    }

    /// Frees `peer`'s name (it is leaving).
    pub(crate) fn release(&self, peer: &Peer) {
        let key = peer.label().key;
        let mut names = self.lock();
        if names.get(&key).is_some_and(|p| p.id == peer.id) {
            names.remove(&key);
        }
    }

    /// Names in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Peer>>> {
        // Every critical section leaves the map consistent; keep serving.
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::outbox::Outbox;
    use crate::peer::PeerId;

    fn peer(n: u64) -> Arc<Peer> {
        let addr = SocketAddr::from(([127, 0, 0, 1], n as u16));
        Arc::new(Peer::new(PeerId::new(n), addr, true, Outbox::new(8, 1024)))
    }

    fn label(shown: &str) -> Label {
        Label::new(shown, &shown.to_lowercase())
    }

    #[test]
    fn a_name_is_held_once_whatever_its_case() {
        let dir = Directory::default();
        let (a, b) = (peer(1), peer(2));
        assert!(dir.claim(&a, label("Alice")).is_ok());
        assert_eq!(dir.claim(&b, label("ALICE")), Err(Taken));
        assert_eq!(&*b.name(), "", "the loser keeps its name");
        assert_eq!(dir.find("alice").unwrap().id, a.id);
        // A case-only change by the holder is a rename.
        let old = dir.claim(&a, label("ALICE")).unwrap();
        assert_eq!(&*old.shown, "Alice");
        assert_eq!(&*a.name(), "ALICE");
        assert_eq!(dir.len(), 1);
    }

    #[test]
    fn a_rename_frees_the_old_name() {
        let dir = Directory::default();
        let (a, b) = (peer(1), peer(2));
        dir.claim(&a, label("alice")).unwrap();
        dir.claim(&a, label("bob")).unwrap();
        assert!(dir.find("alice").is_none());
        assert!(dir.claim(&b, label("alice")).is_ok());
        dir.release(&a);
        assert!(dir.find("bob").is_none());
        assert_eq!(dir.len(), 1);
    }

    #[test]
    fn guests_count_up_and_skip_taken_names() {
        let dir = Directory::default();
        let (a, b, c) = (peer(1), peer(2), peer(3));
        dir.claim(&a, label("guest-2")).unwrap();
        dir.assign(&b);
        dir.assign(&c);
        assert_eq!(&*b.name(), "guest-1");
        assert_eq!(&*c.name(), "guest-3");
        assert_eq!(dir.claim(&a, label("Guest-3")), Err(Taken));
    }

    #[test]
    fn releasing_leaves_a_name_taken_since_alone() {
        let dir = Directory::default();
        let (a, b) = (peer(1), peer(2));
        dir.claim(&a, label("x")).unwrap();
        dir.claim(&a, label("y")).unwrap();
        dir.claim(&b, label("x")).unwrap();
        // `a` leaves: its stale view of "x" must not free b's name.
        dir.release(&a);
        assert_eq!(dir.find("x").unwrap().id, b.id);
    }

    /// Two clients racing for one name: exactly one gets it, every time.
    #[test]
    fn of_racing_claims_exactly_one_wins() {
        for round in 0..200 {
            let dir = Arc::new(Directory::default());
            let peers: Vec<_> = (1..=4).map(peer).collect();
            let barrier = Arc::new(std::sync::Barrier::new(peers.len()));
            let handles: Vec<_> = peers
                .iter()
                .map(|p| {
                    let (dir, p, barrier) = (dir.clone(), p.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        dir.claim(&p, label("Zoë")).is_ok()
                    })
                })
                .collect();
            let wins = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|&won| won)
                .count();
            assert_eq!(wins, 1, "round {round}");
            let winners = peers.iter().filter(|p| &*p.name() == "Zoë").count();
            assert_eq!(winners, 1, "round {round}");
            assert_eq!(dir.len(), 1);
        }
    }
}
