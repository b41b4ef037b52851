//! What the server tells a client, in the client's terms.

use std::net::SocketAddr;

/// Something the server sent. `Ping`/`Pong` are answered by the client itself
/// and never show up here.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Another client said `text`.
    Message {
        /// That client's address, as the server sees it.
        from: SocketAddr,
        /// What it said, unchanged.
        text: String,
    },
    /// A client joined the chat.
    Joined(SocketAddr),
    /// A client left (exited, dropped or was evicted).
    Left(SocketAddr),
    /// The server reported an error and is about to close the connection.
    ServerError(String),
    /// The server is shutting down; the events end after this one.
    ServerExit,
}
