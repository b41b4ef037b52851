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
//! Frames and messages are [`chat_proto`]'s, and so are the conversation's
//! rules: each session drives a [`chat_proto::Connection`] in the server
//! role, which owns the handshake, the "sent by" rules, answering `Ping`
//! and the `Exit` and `Error` sequences.
//!
//! - **Handshake.** The first frame must be `Hello { version, features }`
//!   within [`Config::handshake_timeout`]. Version 0 is refused; otherwise
//!   the server speaks `min(version, chat_proto::VERSION)` and answers
//!   `Welcome { version, features: chat_proto::features::agree(features,
//!   offered), max_frame, ip, port }`, where the server offers ROOMS, and
//!   HISTORY unless [`Config::storage`] is [`Storage::Off`]; where `ip:port` is the client's address as the
//!   server sees it (the address the others will see) and `max_frame` the
//!   largest payload the client may send, [`Config::max_frame_len`] minus
//!   [`RELAY_OVERHEAD`], so that the relay of any `Send` still fits the frame
//!   limit. Anything else first (another message, garbage, an oversized
//!   length prefix, an HTTP request) gets an `Error` saying why, and a
//!   close; so does silence (`"handshake timeout"`).
//! - **Joins and leaves.** After its `Welcome`, a newcomer receives a
//!   `Joined { ip, port }` for every client already there, and they receive
//!   its `Joined`; when it goes (exit, drop, eviction, error, even a bug in
//!   its session) they receive `Left { ip, port }`. Notices are batched for
//!   up to [`Config::presence_delay`] (a crowd arriving at once would
//!   otherwise queue N²/2 of them) but always go out before the next relay,
//!   so a peer's `Joined` precedes its first message, its `Left` follows its
//!   last, and every client that heard of a peer hears of its leaving.
//!   [`Config::presence`] turns them off.
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
//! - **Frames in progress.** Once a client has started a frame, the rest
//!   must arrive within [`Config::frame_timeout`], or it gets
//!   `Error { reason: "frame timeout" }` and is closed: trickling a frame
//!   byte by byte cannot hold a slot.
//! - **Rooms.** A client that asks for `features::ROOMS` must send `Nick`
//!   first (within the handshake timeout): it gets `Named` (or `Refused`
//!   and an assigned `guest-N`), then the lobby's `Roster`, itself last. It
//!   may then rename, `Join`/`Part` rooms (made on first join, removed when
//!   empty; at most [`Config::max_rooms`] per client and
//!   [`Config::room_members`] per room), `Say` in a room (`Said` to its
//!   other members), `Tell` a name (`Told` to that client only,
//!   [`Config::tell_rate`] per second), and ask `Who` and `ListRooms`.
//!   Presence is per room, with the promises above: `Entered`/`Departed`,
//!   and `Renamed` once to everyone sharing a room. A request that cannot be
//!   carried out gets `Refused` with a code, and the connection stays open.
//!   Version 1 clients are in the lobby under an assigned name, see rooms
//!   clients as `ip:port` (`Joined`, `Left`, `Relay` from the lobby only)
//!   and are seen by them as members; they cannot receive `Tell`s.
//!
//! # Limits and policies
//!
//! - **Slow consumers.** Each client has an outbox of
//!   [`Config::outbox_depth`] buffers. Senders never wait: if a client's
//!   outbox is full when a frame is offered, it gets
//!   `Error { reason: "slow consumer" }` (best effort, after the rest of any
//!   partly written frame) and is disconnected. Memory per client is bounded
//!   by the outbox depth and [`Config::outbox_bytes`]. A client that keeps
//!   up is never evicted: the relays of one sender's `Send`s are handed to
//!   the room in batches of at most [`Config::relay_batch`] bytes (plus one
//!   frame), and the sender lets the recipients run before the next batch.
//! - **Idle clients.** A client silent for half of [`Config::idle_timeout`]
//!   is sent `Ping`; any complete frame from it (normally the `Pong`) counts. If it is
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
//! - **Protected mode.** Unless [`Config::public`] is set, a client whose
//!   address is not loopback gets `Error { reason: "protected mode: ..." }`
//!   (saying how to open the server) and is closed before its session
//!   starts; the server logs its mode at start-up.
//! - **Connections per IP.** Beyond [`Config::max_per_ip`] connections from
//!   one address (loopback too), a new one gets
//!   `Error { reason: "too many connections from IP" }` and is closed.
//! - **Closing.** Every `Error` and `Exit` the server sends is followed by a
//!   half-close; the server then waits up to [`Config::close_timeout`] for
//!   the client to close its end, so the last frame is never lost to a reset.
//!
//! # History
//!
//! With [`Config::storage`] other than [`Storage::Off`] (in memory by
//! default for the library; on disk, `chat-data`, for the binary), every
//! room and direct message is stored before it is delivered to anyone, and
//! the server offers the HISTORY capability (PROTOCOL.md section 9): ids,
//! `Stored` acknowledgements, pages of the past. A store that cannot be
//! opened (corrupt, unreadable, held by another process) fails
//! [`Server::bind`] with [`Error::Store`]; one that fails later refuses the
//! messages it could not store (`Unstored`/`Refused` with `Unavailable`)
//! while the server stays up and serves what it has.
//!
//! # Shutdown
//!
//! When the future given to [`Server::run`] completes, the server stops
//! accepting and stops relaying: every message it accepted before that
//! moment reaches every client that keeps reading, and no later one reaches
//! anyone (a relay reaches all of its recipients or none). Each session
//! stops reading, sends its client everything queued for it and then
//! `Exit` (a client still in its handshake gets
//! `Error { reason: "server shutting down" }` instead, the only other
//! answer it may receive), half-closes, and ends. Each session gets
//! [`Config::shutdown_grace`] to do so, after which it is dropped; `run`
//! then returns.
//!
//! # Metrics
//!
//! With [`Config::admin`] set, the server also listens there for HTTP/1.1:
//! `GET /metrics` gives its counters in the Prometheus text format (clients
//! by transport and state, rooms, messages in, deliveries, evictions, bad
//! frames, failed handshakes and logins by reason, the outbox high-water
//! mark, history append latency), `GET /health` answers `200 ok` while it
//! serves and `503` once it is shutting down. The admin listener starts
//! with [`Server::run`] and stops with it; [`Server::admin_addr`] tells its
//! address. Counting costs the relay path a few atomic additions per batch,
//! never a lock or an allocation per message.
//!
//! # Layout
//!
//! - `config.rs`: [`Config`], every limit in one place, and its validation.
//! - `listener.rs`: the accept loop, backoff on accept errors such as running
//!   out of file descriptors; `admission.rs`: the client and reject slots
//!   taken before `accept`, and the screening by address after it
//!   (protected mode, the cap per IP).
//! - `session.rs`: one task per client, the only owner of its transport and
//!   its protocol machine; flood control, timers; `session/goodbye.rs`: how
//!   it ends; `session/auth.rs`: its login attempts and logout, which
//!   `login.rs` runs off the session's task against `accounts.rs`.
//!   `dispatch.rs`: what each request does (the client's name, rooms,
//!   direct messages, refusals), and relays gathered per room.
//! - `transport.rs`: the byte stream a session is served over (TCP, or any
//!   `AsyncRead + AsyncWrite`); `writer.rs`: the queue of shared buffers
//!   being written, and the frame half written.
//! - `tls.rs`: [`Tls`] (a certificate and key, loaded or self-signed) and the
//!   TLS listener's accept path; `tls/io.rs`: a TLS connection as a
//!   transport, on rustls's unbuffered API (an idle client holds no buffer).
//! - `hub.rs`: rooms by name (the lobby always), renames, the pacing of
//!   notices; `room.rs`: one room's members in order (the `Membership`
//!   guard) and its fan-out, one shared buffer per kind of member;
//!   `presence.rs`: join and leave notices of a room, batched, and the
//!   newcomers' rosters; `roster.rs`: `Roster` and `Rooms` answers cut to
//!   the frame limit; `directory.rs`: names → clients; `names.rs`: which
//!   names are valid, and when two are one; `peer.rs`: a client's `PeerId`,
//!   address, name and outbox; `outbox.rs`: a peer's bounded queue;
//!   `flood.rs`: the token bucket; `flusher.rs`: write coalescing's
//!   clock ([`Config::coalesce`]).
//! - `history.rs`: history as the server serves it: submitting messages,
//!   delivering each batch once stored (in id order), reading pages;
//!   `journal.rs`: the one writer, ids, `prev` links and group commit;
//!   `store.rs`: the [`Store`] trait and its two backends, redb on disk
//!   (`store/redb.rs`) and memory (`store/memory.rs`).
//! - `accounts.rs`: registered names, Argon2id passwords, session tokens
//!   and the throttling of attempts, a service the auth phase calls;
//!   `accounts/`: its stores (redb in `accounts.redb`, memory), `password.rs`,
//!   `token.rs`, `throttle.rs`.
//! - `metrics.rs`: what the server counts, in one `Metrics` that every
//!   session shares; `admin.rs`: the admin listener's `/metrics` and
//!   `/health` ([`Config::admin`]).
//! - `error.rs`: [`Error`].
#![forbid(unsafe_code)]

mod accounts;
mod admin;
mod admission;
mod config;
mod directory;
mod dispatch;
mod error;
mod flood;
mod flusher;
mod history;
mod hub;
pub mod journal;
mod listener;
mod login;
mod metrics;
mod names;
mod outbox;
mod peer;
mod presence;
mod room;
mod roster;
mod session;
pub mod store;
mod tls;
mod transport;
mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Config, RELAY_OVERHEAD, Storage};
pub use error::Error;
pub use journal::{Journal, JournalConfig, Sink, SubmitError};
pub use store::{
    MemoryStore, NewRecord, Page, Record, RedbStore, Retention, Store, StoreError, TRIM_MAX, Topic,
};
pub use tls::{Tls, TlsError};

use accounts::Accounts;
use session::Shared;

/// A bound, not yet running, chat server.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    /// The TLS listener beside the plaintext one, its address and what it
    /// serves.
    tls: Option<(TcpListener, SocketAddr, Tls)>,
    config: Config,
    store: Option<Arc<dyn Store>>,
    accounts: Option<Accounts>,
    /// The admin listener ([`Config::admin`]) and its address.
    admin: Option<(TcpListener, SocketAddr)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("tls", &self.tls.as_ref().map(|(_, addr, tls)| (addr, tls)))
            .field("config", &self.config)
            .field("history", &self.store.is_some())
            .field("accounts", &self.accounts.is_some())
            .field("admin", &self.admin_addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Validates `config` and binds a listening socket to `addr` (port 0
    /// picks a free port; see [`local_addr`](Server::local_addr)), with a
    /// listen queue of [`Config::listen_backlog`]. A host name is resolved
    /// and each of its addresses tried in turn, IPv4 or IPv6. With
    /// [`Config::admin`] set, binds the admin listener too.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a limit is out of range (see
    /// [`Config::validate`]), [`Error::Store`] if the history or accounts
    /// store cannot be opened, [`Error::Bind`] if the address cannot be
    /// resolved or bound, [`Error::Admin`] if the admin address cannot be
    /// bound.
    pub async fn bind(addr: impl ToSocketAddrs, config: Config) -> Result<Server, Error> {
        config.validate()?;
        // Before the socket: a server whose history is unreadable does not
        // start at all.
        let store = history::open(&config)?;
        let accounts = Accounts::open(&config)?;
        let listener = listener::bind(addr, config.listen_backlog())
            .await
            .map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let admin = match config.admin {
            Some(at) => {
                let admin = |source| Error::Admin { addr: at, source };
                let listener = TcpListener::bind(at).await.map_err(admin)?;
                let bound = listener.local_addr().map_err(admin)?;
                Some((listener, bound))
            }
            None => None,
        };
        Ok(Server {
            listener,
            addr,
            tls: None,
            config,
            store,
            accounts,
            admin,
        })
    }

    /// Adds a TLS listener on `addr`, beside the plaintext one, serving
    /// `tls`'s certificate; its clients are the same server's, under the
    /// same limits ([`Config::max_clients`] counts both). A client's TLS
    /// handshake must end within [`Config::handshake_timeout`], which then
    /// starts again for the chat handshake. A plaintext chat client on this
    /// port is told `Error { reason: "this port speaks TLS: connect with
    /// TLS" }` and closed. Calling it again replaces the TLS listener.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] if the address cannot be resolved or bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use chat_server::{Config, Server, Tls};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = Tls::self_signed(&[])?;
    /// let server = Server::bind("127.0.0.1:0", Config::default())
    ///     .await?
    ///     .tls("127.0.0.1:0", tls.clone())
    ///     .await?;
    /// println!("TLS on {:?}, fingerprint {}", server.tls_addr(), tls.fingerprint());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn tls(mut self, addr: impl ToSocketAddrs, tls: Tls) -> Result<Server, Error> {
        let listener = listener::bind(addr, self.config.listen_backlog())
            .await
            .map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        self.tls = Some((listener, addr, tls));
        Ok(self)
    }

    /// The address the server listens on (plaintext).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the admin listener listens on (`/metrics`,
    /// `/health`), if [`Config::admin`] asked for one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// The address of the TLS listener, if [`tls`](Server::tls) added one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(_, addr, _)| *addr)
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
            tls,
            config,
            store,
            accounts,
            admin,
        } = self;
        let tls_addr = tls.as_ref().map(|(_, addr, _)| *addr);
        let listeners = listener::Listeners {
            plain: listener,
            tls: tls.map(|(listener, _, tls)| (listener, tls.acceptor())),
        };
        let grace = config.shutdown_grace.max(config.close_timeout);
        let token = CancellationToken::new();
        match &config.accounts {
            Storage::Off => {}
            Storage::Memory => info!("accounts kept in memory only: lost when the server stops"),
            Storage::Disk(dir) => info!(path = %dir.join(accounts::FILE).display(), "accounts"),
        }
        let shared = Arc::new(Shared::new(config, store, accounts, token.clone())?);
        let tracker = TaskTracker::new();
        info!(%addr, "listening");
        info!("{}", admission::mode(&shared.config));
        let admin = admin.map(|(listener, at)| {
            if at.ip().is_loopback() {
                info!(%at, "admin listening: /metrics, /health");
            } else {
                warn!(%at, "admin listening on a non-loopback address: anyone who can reach it can read the metrics");
            }
            admin::Admin::start(listener, shared.clone())
        });
        if let Some(tls) = tls_addr {
            info!(%tls, "listening (TLS)");
        }
        tokio::select! {
            () = shutdown => {}
            () = listener::accept(&listeners, &shared, &tracker) => {}
            () = shared.hub.pace_presence() => {}
        }
        info!("shutting down");
        if let Some(admin) = &admin {
            admin.stopping();
        }
        drop(listeners);
        // What was read before the stop is stored and delivered before the
        // sessions take their final drain.
        if shared.history.is_some() {
            let history = shared.clone();
            let flushed = tokio::task::spawn_blocking(move || {
                history.history.as_ref().is_none_or(|h| h.flush(grace))
            })
            .await;
            if !matches!(flushed, Ok(true)) {
                warn!("history not flushed within {grace:?}; stopping anyway");
            }
        }
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
        // What the sessions submitted is stored before the server returns.
        if let Some(history) = &shared.history {
            history.close();
        }
        if let Some(admin) = admin {
            admin.stop().await;
        }
        info!("stopped");
        Ok(())
    }
}
