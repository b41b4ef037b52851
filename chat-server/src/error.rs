//! What can stop the server as a whole. Problems with one client (bad input,
//! a slow reader, a dropped socket) never surface here: its session reports
//! them to that client, logs them and ends, and the server goes on.

use std::io;

/// An error from [`Server::bind`](crate::Server::bind) or
/// [`Server::run`](crate::Server::run).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be set up (address in use, no
    /// permission, address not resolvable, ...).
    #[error("cannot bind: {0}")]
    Bind(#[source] io::Error),
    /// A limit in [`Config`](crate::Config) is out of range, or limits
    /// conflict (caller misuse); see
    /// [`Config::validate`](crate::Config::validate).
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The field at fault, as named in `Config` (`"outbox_bytes"`).
        field: &'static str,
        /// Why it is refused, with the bound it breaks; it may name other
        /// fields, as they are named in `Config`.
        reason: String,
    },
    /// The history or accounts store could not be opened or started: a
    /// corrupt or unreadable file (the message names it), one another
    /// process holds, a directory that cannot be created. The server does
    /// not start rather than lose history or accounts.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The admin listener ([`Config::admin`](crate::Config::admin)) could
    /// not be bound.
    #[error("cannot bind the admin listener to {addr}: {source}")]
    Admin {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure of the listening socket.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Bind(e) | Error::Io(e) | Error::Admin { source: e, .. } => e,
            other @ Error::Config { .. } => io::Error::new(io::ErrorKind::InvalidInput, other),
            other @ Error::Store(_) => io::Error::other(other),
        }
    }
}
