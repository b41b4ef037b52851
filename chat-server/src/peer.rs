//! A peer as the hub knows it: an identity, the address shown to the
//! others, its name, whether it speaks the rooms capability, and the outbox
//! that reaches it. Rooms and the directory share one `Arc<Peer>` each.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use chat_proto::Member;

use crate::accounts::TokenId;
use crate::outbox::Outbox;

/// A peer's identity inside the server: unique for the server's lifetime,
/// unlike addresses, which the kernel reuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerId(u64);

impl PeerId {
    /// The identity numbered `n` (the hub hands out each once).
    pub(crate) fn new(n: u64) -> Self {
        PeerId(n)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A client's name: as shown, and folded (the directory's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Label {
    /// The holder's NFC spelling, shared by every frame and roster.
    pub(crate) shown: Arc<str>,
    /// The uniqueness key.
    pub(crate) key: Arc<str>,
}

impl Label {
    /// A label from its two forms.
    pub(crate) fn new(shown: &str, key: &str) -> Self {
        let shown: Arc<str> = Arc::from(shown);
        // Most names fold to themselves: share the allocation then.
        let key = if *key == *shown {
            shown.clone()
        } else {
            Arc::from(key)
        };
        Label { shown, key }
    }
}

/// A connected client, as rooms and the directory see it.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) id: PeerId,
    /// The address shown to the others in `Relay`, `Joined`, `Left` and
    /// every `Member`.
    pub(crate) addr: SocketAddr,
    /// Speaks the rooms capability: gets `Said`, `Entered`, `Departed`;
    /// otherwise version 1: `Relay`, `Joined`, `Left`, lobby only.
    pub(crate) rooms: bool,
    /// Speaks the history capability too: gets `Posted` for `Said`,
    /// `Direct` for `Told`, and `Stored` for its own messages.
    pub(crate) history: bool,
    /// Speaks the accounts capability: named by a login, or by a `Nick`
    /// only where guests are taken.
    pub(crate) auth: bool,
    /// Logged in to an account: the token its session holds.
    token: OnceLock<TokenId>,
    pub(crate) outbox: Outbox,
    /// Bytes of its messages submitted to history and not yet delivered:
    /// its session reads no more while they pass `Config::relay_budget`.
    in_flight: AtomicUsize,
    /// Changed only by the peer's own session, under the hub's rename
    /// lock; read by others building rosters under the same lock.
    label: Mutex<Label>,
}

impl Peer {
    /// A peer not yet named (its label is empty until it is).
    pub(crate) fn new(id: PeerId, addr: SocketAddr, rooms: bool, outbox: Outbox) -> Self {
        Peer {
            id,
            addr,
            rooms,
            history: false,
            auth: false,
            token: OnceLock::new(),
            outbox,
            in_flight: AtomicUsize::new(0),
            label: Mutex::new(Label::new("", "")),
        }
    }

    /// The same peer, speaking the history capability (if `history`).
    pub(crate) fn with_history(mut self, history: bool) -> Self {
        self.history = history && self.rooms;
        self
    }

    /// The same peer, speaking the accounts capability (if `auth`).
    pub(crate) fn with_auth(mut self, auth: bool) -> Self {
        self.auth = auth && self.rooms;
        self
    }

    /// Logged in, holding `token` (once: a session logs in at most once).
    pub(crate) fn log_in(&self, token: TokenId) {
        let _ = self.token.set(token);
    }

    /// The token of the account it is logged in to, if any.
    pub(crate) fn token(&self) -> Option<TokenId> {
        self.token.get().copied()
    }

    /// Its name as shown.
    pub(crate) fn name(&self) -> Arc<str> {
        self.lock().shown.clone()
    }

    /// Its name, both forms.
    pub(crate) fn label(&self) -> Label {
        self.lock().clone()
    }

    /// Renames it (the directory has checked the new name is free).
    pub(crate) fn set_label(&self, label: Label) {
        *self.lock() = label;
    }

    /// It as a `Member` of a roster or a relay.
    pub(crate) fn member(&self) -> Member {
        Member {
            name: self.name().to_string(),
            ip: self.addr.ip(),
            port: self.addr.port(),
        }
    }

    /// Bytes of its messages on their way through history.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// `bytes` more of its messages are on their way.
    pub(crate) fn submitted(&self, bytes: usize) {
        self.in_flight.fetch_add(bytes, Ordering::AcqRel);
    }

    /// `bytes` of its messages have been delivered (or refused); wakes its
    /// session if they held it (at `budget` or more before), or if none are
    /// left (a part or a farewell waits for that).
    pub(crate) fn delivered(&self, bytes: usize, budget: usize) {
        let before = self.in_flight.fetch_sub(bytes, Ordering::AcqRel);
        if before >= budget || before == bytes {
            self.outbox.poke();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Label> {
        self.label.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
