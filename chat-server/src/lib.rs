//! The chat server: relays each client's messages to every other client,
//! and keeps slow or hostile clients from hurting anyone else.
//!
//! Embed it with [`Server::bind`] and [`Server::run`]; the `chat-server`
//! binary does exactly that, with flags for every field of [`Config`].
//!
//! # Examples
//!
//! Start a server on a free port, then stop it:
//!
//! ```
//! use chat_server::{Config, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), chat_server::Error> {
//! let server = Server::bind("127.0.0.1:0", Config::default()).await?;
//! println!("listening on {}", server.local_addr());
//!
//! // Any future can be the stop signal: `tokio::signal::ctrl_c()`, a
//! // oneshot receiver... Here the server stops at once.
//! server.run(async {}).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Protocol, as this server applies it
//!
//! Frames and messages are [`chat_proto`]'s.
//!
//! - **Handshake.** The first frame must be `Hello { version, features }`
//!   within [`Config::handshake_timeout`]. Version 0 is refused; otherwise
//!   the server speaks `min(version, chat_proto::VERSION)` and answers
//!   `Welcome { version, features: features & chat_proto::features::ALL,
//!   max_frame, ip, port }`, where `ip:port` is the client's address as the
//!   server sees it (the address the others will see) and `max_frame` the
//!   largest payload the client may send, [`Config::max_frame_len`] minus
//!   [`RELAY_OVERHEAD`], so that the relay of any `Send` still fits the frame
//!   limit. Anything else first (another message, garbage, an oversized
//!   length prefix, an HTTP request) gets an `Error` saying why, and a
//!   close; so does silence (`"handshake timeout"`).
//! - **Joins and leaves.** After its `Welcome`, the others receive
//!   `Joined { ip, port }`; when it goes (exit, drop, eviction, error) they
//!   receive `Left { ip, port }`. Notices are batched for up to 10 ms (a
//!   crowd arriving at once would otherwise queue N²/2 of them) but always
//!   go out before the next relay, so a peer's `Joined` precedes its first
//!   message and its `Left` follows its last. [`Config::presence`] turns
//!   them off.
//! - **Relay.** `Send { text }` reaches every *other* client as
//!   `Relay { ip, port, text }`, encoded once and shared by all recipients,
//!   in the order the server received it; one sender's messages are never
//!   reordered.
//! - **Exit.** `Exit` is answered with `Exit` after everything already queued
//!   for that client, then the server closes. `Ping { nonce }` is answered
//!   with `Pong { nonce }`. A client that sends `Error` is taken at its word
//!   and closed. A client that sends a server-only message (`Relay`,
//!   `Welcome`, `Joined`, `Left`) or a second `Hello` gets
//!   `Error { reason: "protocol violation: clients may not send Relay" }`
//!   (or similar) and is closed.
//! - **Bad frames.** An invalid frame (oversized length prefix, undecodable
//!   payload, a frame cut off by the end of the stream) gets
//!   `Error { reason: "invalid frame: ..." }` with the codec's explanation,
//!   then a close. A claimed length is checked before anything is buffered.
//!
//! # Limits and policies
//!
//! - **Slow consumers.** Each client has an outbox of
//!   [`Config::outbox_depth`] buffers. Senders never wait: if a client's
//!   outbox is full when a frame is offered, it gets
//!   `Error { reason: "slow consumer" }` (best effort, after the rest of any
//!   partly written frame) and is disconnected. Memory per client is bounded
//!   by the outbox depth.
//! - **Idle clients.** A client silent for half of [`Config::idle_timeout`]
//!   is sent `Ping`; any frame from it (normally the `Pong`) counts. If it is
//!   still silent when the whole timeout has passed, it gets
//!   `Error { reason: "idle timeout" }` and is closed.
//! - **Flood control.** A token bucket per client: [`Config::rate`] messages
//!   per second sustained, [`Config::burst`] at once. A client that exceeds
//!   it has the messages it sent within the limit relayed, then gets
//!   `Error { reason: "flood: more than RATE messages/s" }` and is
//!   disconnected. Dropping the excess silently would lose messages without
//!   anyone knowing, and slowing the reader down would hide a broken or
//!   hostile client behind TCP backpressure; a disconnect with a reason is
//!   visible and cheap.
//! - **Server full.** Beyond [`Config::max_clients`] connections a new client
//!   gets `Error { reason: "server full" }` and is closed.
//! - **Closing.** Every `Error` and `Exit` the server sends is followed by a
//!   half-close; the server then waits up to [`Config::close_timeout`] for
//!   the client to close its end, so the last frame is never lost to a reset.
//!
//! # Shutdown
//!
//! When the future given to [`Server::run`] completes, the server stops
//! accepting, sends every client what is already queued for it and then
//! `Exit`, half-closes, and waits for the sessions to end. Each session gets
//! [`Config::shutdown_grace`] to do so, after which it is dropped; `run`
//! then returns.
//!
//! # Layout
//!
//! - `config.rs`: [`Config`], every limit in one place.
//! - `listener.rs`: the accept loop, the `max_clients` semaphore, backoff on
//!   accept errors such as running out of file descriptors.
//! - `session.rs`: one task per client, the only owner of its socket.
//! - `room.rs`: the registry of peers' outboxes and the fan-out policy.
//! - `error.rs`: [`Error`].
#![forbid(unsafe_code)]

mod admission;
mod config;
mod error;
mod flood;
mod hub;
mod listener;
mod outbox;
mod presence;
mod session;
mod transport;
mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Config, RELAY_OVERHEAD};
pub use error::Error;

use session::Shared;

/// A bound, not yet running, chat server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    config: Config,
}

impl Server {
    /// Validates `config` and binds a listening socket to `addr` (port 0
    /// picks a free port; see [`local_addr`](Server::local_addr)), with a
    /// listen queue of [`Config::listen_backlog`]. A host name is resolved
    /// and each of its addresses tried in turn, IPv4 or IPv6.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a limit is out of range (see
    /// [`Config::validate`]), [`Error::Bind`] if the address cannot be
    /// resolved or bound.
    pub async fn bind(addr: impl ToSocketAddrs, config: Config) -> Result<Server, Error> {
        config.validate()?;
        let listener = listener::bind(addr, config.listen_backlog())
            .await
            .map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        Ok(Server {
            listener,
            addr,
            config,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves clients until `shutdown` completes, then shuts down gracefully
    /// (see the crate docs) and returns.
    ///
    /// # Errors
    ///
    /// None today: problems with single clients are handled and logged, and
    /// accept errors are retried with backoff. The `Result` leaves room for
    /// fatal listener errors.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            listener,
            addr,
            config,
        } = self;
        let grace = config.shutdown_grace.max(config.close_timeout);
        let token = CancellationToken::new();
        let shared = Arc::new(Shared::new(config, token.clone()));
        let tracker = TaskTracker::new();
        info!(%addr, "listening");
        tokio::select! {
            () = shutdown => {}
            () = listener::accept(&listener, &shared, &tracker) => {}
            () = shared.hub.pace_presence() => {}
        }
        info!("shutting down");
        drop(listener);
        // Closed before the sessions are told: every broadcast under way
        // completes and later ones are refused, so each relay is in every
        // outbox or in none when the sessions take their final drain.
        shared.hub.close();
        token.cancel();
        tracker.close();
        // Every session bounds its own goodbye by the grace period; this
        // outer bound only guards against a bug keeping one alive.
        let outer = grace + std::time::Duration::from_secs(1);
        if tokio::time::timeout(outer, tracker.wait()).await.is_err() {
            warn!(
                sessions = tracker.len(),
                "sessions still running after {outer:?}; leaving them"
            );
        }
        info!("stopped");
        Ok(())
    }
}
