//! A peer as the hub knows it: an identity, the address shown to the
//! others, and the outbox that reaches it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

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

/// A member of a room, as the others see it.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) id: PeerId,
    /// The address shown to the others in `Relay`, `Joined` and `Left`.
    pub(crate) addr: SocketAddr,
    pub(crate) outbox: Arc<Outbox>,
}
