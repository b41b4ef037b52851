//! What ends a run early.

use std::net::SocketAddr;

/// An error that stops a workload before it can report.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A client could not connect.
    #[error("client {id}: cannot connect to {addr}: {source}")]
    Connect {
        id: usize,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The server refused the handshake (`Error` instead of `Welcome`).
    #[error("client {id}: the server refused it: {reason}")]
    Refused { id: usize, reason: String },
    /// The server ended a client's connection, broke the protocol, or the
    /// socket failed.
    #[error("client {id}: {reason}")]
    Disconnected { id: usize, reason: String },
    /// Something did not happen in time.
    #[error("{0}")]
    Timeout(String),
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// Reading the server's `/proc` entries failed.
    #[error("cannot read the server's /proc entries: {0}")]
    Proc(std::io::Error),
}
