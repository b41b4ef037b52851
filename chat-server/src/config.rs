//! Every limit of the server in one place, and the rules that keep them
//! consistent ([`Config::validate`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chat_proto::{
    HEADER_LEN, HISTORY_OVERHEAD, MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN,
};
use tokio::sync::Semaphore;

use crate::error::Error;

pub use chat_proto::RELAY_OVERHEAD;

/// Longest presence notice, header included: a `Renamed`, `Entered` or
/// `Departed` with two names of 32 four-byte characters, an IPv6 address
/// and a 3-byte port varint (a `Joined`/`Left` takes at most 25).
const NOTICE_MAX: usize = 288;
/// How much longer than `max_frame_len` a frame for a client of the ROOMS
/// and HISTORY capabilities may be: a `Posted` carries a room, a name and
/// ids besides the text (a ROOMS client's `Said`, 20 bytes less).
const ROOMS_EXTRA: usize = HISTORY_OVERHEAD - RELAY_OVERHEAD;
/// Longest `Ping`/`Pong` frame, header included (a 10-byte nonce varint).
const CONTROL_MAX: usize = 16;

/// The server's limits. Every field is public; start from
/// [`Config::default()`] and change what you need.
///
/// A zero `rate` or `idle_timeout` turns that check off.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use chat_server::Config;
///
/// let config = Config {
///     max_clients: 100,
///     idle_timeout: Duration::from_secs(30),
///     ..Config::default()
/// };
/// assert_eq!(config.outbox_depth, 1024);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Most clients connected at once, handshaking ones included; the next
    /// one gets `Error { reason: "server full" }` and is closed.
    /// Default: 10,000.
    pub max_clients: usize,
    /// Largest frame payload the server sends, in bytes. A client may send
    /// payloads of up to `max_frame_len - RELAY_OVERHEAD` bytes (announced in
    /// `Welcome`). Must be within
    /// `MIN_FRAME_LEN + RELAY_OVERHEAD ..=` [`Config::MAX_FRAME_LEN`]
    /// (`MAX_FRAME_LEN_CEILING` less 300: a client of the HISTORY capability is
    /// sent frames of up to `max_frame_len + 300` bytes). Default: 65,536 ([`chat_proto::MAX_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// Depth of each client's outgoing queue, in queued buffers (a buffer is
    /// one frame, or the relays of several `Send`s that arrived together from
    /// one sender, shared with the other recipients). Once a quarter of it is
    /// in use, frames of up to 1 KiB are copied into one buffer of the
    /// client's own instead, so that many senders' small relays are held to
    /// `outbox_bytes` rather than to the depth. A client whose queue is full
    /// is a slow consumer: it gets `Error { reason: "slow consumer" }` (best
    /// effort) and is disconnected. At least [`Config::MIN_OUTBOX_DEPTH`].
    /// Default: 1024.
    pub outbox_depth: usize,
    /// Most bytes queued for one client; a client whose queue would grow past
    /// it is a slow consumer too. Together with `outbox_depth` this bounds the
    /// server's memory per client whatever the frame sizes. At least
    /// [`Config::min_outbox_bytes`], so that a client that keeps up is never
    /// evicted. Default: 8 MiB.
    pub outbox_bytes: usize,
    /// How long a new client has to send its `Hello`. Not zero.
    /// Default: 10 s.
    pub handshake_timeout: Duration,
    /// A client silent for half of this is sent a `Ping`; one still silent
    /// after all of it gets `Error { reason: "idle timeout" }` and is closed.
    /// Any frame from the client (a `Pong`, a `Send`, ...) counts as a sign of
    /// life. Zero disables the check. Default: 60 s.
    pub idle_timeout: Duration,
    /// Sustained messages per second a client may send (token bucket refill
    /// rate). A client that goes beyond `rate` plus `burst` is disconnected
    /// with `Error { reason: "flood: more than RATE messages/s" }`; the
    /// messages it sent within the limit are relayed. Zero disables flood
    /// control. Default: 1000.
    pub rate: u32,
    /// Messages a client may send in a burst above `rate` (the bucket's
    /// size). Default: 4000.
    pub burst: u32,
    /// On shutdown, how long sessions get to deliver what is queued and the
    /// final `Exit` before they are dropped. Not zero. Default: 5 s.
    pub shutdown_grace: Duration,
    /// How long the server keeps trying to deliver a final `Error` or `Exit`
    /// to a client that is not reading, and waits for it to close its end,
    /// before dropping the connection. Not zero. A client refused because
    /// the server is full is given at most 1 s of it. Default: 2 s.
    pub close_timeout: Duration,
    /// Whether peers are told of joins and leaves (`Joined`/`Left`). Every
    /// join is announced to everyone already connected, so a crowd arriving
    /// at once costs N²/2 notices; very large rooms may turn this off, as
    /// large chat channels often do. Default: on.
    pub presence: bool,
    /// Longest a join or leave notice waits for others to share its batch
    /// (notices always go out before the next relay). Zero: no waiting.
    /// Default: 10 ms.
    pub presence_delay: Duration,
    /// A batch of notices this large is sent at once rather than after
    /// `presence_delay`. Zero: every notice is sent at once.
    /// Default: 16 KiB.
    pub presence_batch: usize,
    /// Once a client has started a frame, the rest of it must arrive within
    /// this time, or the client gets `Error { reason: "frame timeout" }`
    /// and is closed: trickling one byte at a time cannot hold a slot.
    /// Not zero. Default: 20 s.
    pub frame_timeout: Duration,
    /// Relays of `Send`s that arrive together from one client are encoded
    /// into one shared buffer of at most this many bytes (plus one frame)
    /// before being handed to the recipients. Zero: one buffer per relay.
    /// Default: 64 KiB.
    pub relay_batch: usize,
    /// Bytes reserved for one read from a client. At least
    /// [`Config::MIN_READ_CHUNK`]. Default: 16 KiB.
    pub read_chunk: usize,
    /// Most buffers handed to one vectored write, 1 to [`Config::MAX_IOV`].
    /// Default: 64.
    pub max_iov: usize,
    /// Vectored writes in a row before a session lets other tasks run. Not
    /// zero. Default: 16.
    pub flush_rounds: usize,
    /// Shortest time between two writes to one client while what it has
    /// queued is short (under `max_iov` buffers): output due sooner waits
    /// for the rest of the gap and shares one write with whatever joins it
    /// meanwhile. A client written to less often is written to at once, so
    /// quiet rooms see no delay; busy ones trade at most this much latency
    /// for fewer system calls. Zero: every write at once. At most
    /// [`Config::MAX_COALESCE`]. Default: 250 µs.
    pub coalesce: Duration,
    /// Length of the listening socket's queue of connections not yet
    /// accepted, 1 to [`Config::MAX_BACKLOG`]. `None`: `max_clients`, clamped
    /// to 1,024..=65,535 (see [`Config::listen_backlog`]; the kernel may cap
    /// it further, see `net.core.somaxconn`). Default: `None`.
    pub backlog: Option<u32>,
    /// Connections beyond `max_clients` held at once just to tell them
    /// `Error { reason: "server full" }`; past it, new connections wait in
    /// the listen queue until a slot frees. Zero: nobody is told, every
    /// connection beyond `max_clients` waits in the listen queue.
    /// Default: 64.
    pub reject_slots: usize,
    /// Whether clients from any address are served. `false` (protected
    /// mode, the default): a client whose address is not loopback (`127/8`,
    /// `::1`, or IPv4 loopback mapped into IPv6) is answered
    /// `Error { reason: "protected mode: ..." }` and closed before its
    /// session starts, so a server started without thinking about it is
    /// not open to the network. Such a client (and one over `max_per_ip`)
    /// holds no client slot: it is told why on one of the `reject_slots`,
    /// or, with none free, closed without a word. Default: `false`.
    pub public: bool,
    /// Most connections at once from one IP address, loopback included; the
    /// next one is answered `Error { reason: "too many connections from IP" }`
    /// and closed. Zero: no cap. Default: 256.
    pub max_per_ip: usize,
    /// Largest frame a client may send before its handshake is over (before
    /// `Named`), when the usual limit is larger: a client nobody knows yet
    /// gets little to work with. At least [`Config::MIN_HANDSHAKE_FRAME_LEN`],
    /// at most [`Config::MAX_FRAME_LEN`]. Default: 1,024.
    pub handshake_frame_len: usize,
    /// Most rooms one client may be in at once, the lobby included; a `Join`
    /// past it is refused with `TooManyRooms`. Not zero. Default: 100.
    pub max_rooms: usize,
    /// Longest nickname, in characters (Unicode scalar values, after NFC
    /// normalisation), 1 to [`Config::MAX_NAME_CHARS`]. A longer one is
    /// refused with `NameInvalid`. Default: 32.
    pub max_name_chars: usize,
    /// Longest room name, in characters (after NFC normalisation), 1 to
    /// [`Config::MAX_NAME_CHARS`], at least [`Config::MIN_ROOM_CHARS`] so that
    /// `lobby` is a valid room name. A longer
    /// one is refused with `RoomInvalid`. Default: 32.
    pub max_room_chars: usize,
    /// Most members in one room; a `Join` past it is refused with
    /// `RoomFull`. Newcomers enter the lobby whatever its size (that is
    /// bounded by `max_clients`); one that left it joins it again under this
    /// cap like any room. Not zero. Default: 10,000.
    pub room_members: usize,
    /// Sustained direct messages (`Tell`) per second a client may send; one
    /// beyond `tell_rate` plus `tell_burst` is refused with `RateLimited` and
    /// not delivered (the connection stays open). Zero disables the limit
    /// (`rate` still counts every `Tell`). Default: 10.
    pub tell_rate: u32,
    /// Direct messages a client may send in a burst above `tell_rate`. Not
    /// zero unless `tell_rate` is. Default: 20.
    pub tell_burst: u32,
    /// Where accounts (registered names, password hashes, session tokens)
    /// are kept: [`Storage::Off`] offers no accounts (the AUTH capability
    /// is not offered), [`Storage::Disk`] keeps them in `accounts.redb` in
    /// that directory, apart from history. Default: [`Storage::Memory`]
    /// (the `chat-server` binary's default is on disk, beside history).
    pub accounts: Storage,
    /// Whether clients may use an unregistered name without logging in. A
    /// registered name is its owner's either way. Off requires
    /// `accounts`. Default: on.
    pub guests: bool,
    /// How long a session token from a login stays valid, 1 s to 365 days.
    /// Default: 30 days.
    pub token_ttl: Duration,
    /// Password logins per account per minute, counted before the password
    /// is checked, failed or not (a burst of this many, then one every
    /// minute / `login_rate`). Zero: no limit. Default: 3.
    pub login_rate: u32,
    /// Password and token logins per client address per minute (an IPv6
    /// address counts by its /64). Zero: no limit. Default: 30.
    pub login_rate_ip: u32,
    /// Registrations per client address per hour. Zero: no limit.
    /// Default: 20.
    pub register_rate: u32,
    /// Most password hashes computed at once (each takes about 19 MiB and
    /// tens of milliseconds of a core, off the async workers), 1 to
    /// [`Config::MAX_HASH_WORKERS`]. Default: 2.
    pub hash_workers: usize,
    /// Where history is kept, if anywhere. Default: [`Storage::Memory`]
    /// (the `chat-server` binary's default is on disk, `chat-data`).
    pub storage: Storage,
    /// Most messages kept per conversation (a room, or the direct messages
    /// between two names); older ones are dropped, a second or so after
    /// the limit is passed. Zero: no limit. Default: 100,000.
    pub history_size: u64,
    /// Messages older than this are dropped. Zero: kept whatever their age.
    /// Default: zero.
    pub history_age: Duration,
    /// Most entries in one `Page`, the server's page size: 1 to
    /// [`Config::MAX_HISTORY_PAGE`]. Default: 500.
    pub history_page: usize,
    /// Most messages stored in one transaction (one fsync). Not zero.
    /// Default: 1,024.
    pub history_batch: usize,
    /// How long the history writer waits for more messages to share a
    /// transaction that is not full: latency every message pays for fewer
    /// fsyncs. Zero: write what is there (while one transaction is on the
    /// disk, the next fills anyway). Default: zero.
    pub history_window: Duration,
    /// Most messages waiting to be stored; a send beyond it is refused with
    /// `Unavailable` (the sender is told, nothing is half sent). Not zero.
    /// Default: 16,384.
    pub history_queue: usize,
    /// Where the admin listener serves `/metrics` (Prometheus text) and
    /// `/health` over HTTP/1.1; `None`, the default: nowhere. Anyone who
    /// can reach it reads the metrics: keep it on a loopback or private
    /// address (port 0 picks a free port: see
    /// [`Server::admin_addr`](crate::Server::admin_addr)).
    pub admin: Option<SocketAddr>,
}

/// Where the server keeps history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Storage {
    /// Nowhere: messages are relayed, never stored, and the HISTORY
    /// capability is not offered.
    Off,
    /// In memory: lost when the server stops.
    #[default]
    Memory,
    /// Durably, in a file in this directory (created if missing): nothing
    /// a client received or was told is stored is lost by a crash.
    Disk(PathBuf),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_clients: 10_000,
            max_frame_len: MAX_FRAME_LEN,
            outbox_depth: 1024,
            outbox_bytes: 8 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            rate: 1000,
            burst: 4000,
            shutdown_grace: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            presence: true,
            presence_delay: Duration::from_millis(10),
            presence_batch: 16 * 1024,
            frame_timeout: Duration::from_secs(20),
            relay_batch: 64 * 1024,
            read_chunk: 16 * 1024,
            max_iov: 64,
            flush_rounds: 16,
            coalesce: Duration::from_micros(250),
            backlog: None,
            reject_slots: 64,
            public: false,
            max_per_ip: 256,
            handshake_frame_len: 1024,
            max_rooms: 100,
            max_name_chars: Self::MAX_NAME_CHARS,
            max_room_chars: Self::MAX_NAME_CHARS,
            room_members: 10_000,
            tell_rate: 10,
            tell_burst: 20,
            accounts: Storage::Memory,
            guests: true,
            token_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            login_rate: 3,
            login_rate_ip: 30,
            register_rate: 20,
            hash_workers: 2,
            storage: Storage::Memory,
            history_size: 100_000,
            history_age: Duration::ZERO,
            history_page: 500,
            history_batch: 1024,
            history_window: Duration::ZERO,
            history_queue: 16 * 1024,
            admin: None,
        }
    }
}

impl Config {
    /// Longest duration any field may hold: 365 days.
    pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
    /// Smallest `outbox_depth`: a newcomer may have, queued at the same
    /// moment, its roster (up to two buffers), a batch of notices, a relay
    /// buffer, the replies of one turn (`Pong`s) and the server's `Ping`.
    pub const MIN_OUTBOX_DEPTH: usize = 6;
    /// Smallest `read_chunk`.
    pub const MIN_READ_CHUNK: usize = 64;
    /// Largest `max_iov`: the usual `IOV_MAX`.
    pub const MAX_IOV: usize = 1024;
    /// Largest `hash_workers`: each hash holds 19 MiB while it runs.
    pub const MAX_HASH_WORKERS: usize = 256;
    /// Largest `history_page`.
    pub const MAX_HISTORY_PAGE: usize = 10_000;
    /// Longest `coalesce`: it is latency every busy client pays.
    pub const MAX_COALESCE: Duration = Duration::from_millis(100);
    /// Largest `backlog`.
    pub const MAX_BACKLOG: u32 = 65_535;
    /// Largest `max_frame_len`: a client of the ROOMS capability is sent
    /// frames of up to `max_frame_len + ROOMS_OVERHEAD - RELAY_OVERHEAD`
    /// bytes, which must stay within `MAX_FRAME_LEN_CEILING`.
    pub const MAX_FRAME_LEN: usize = MAX_FRAME_LEN_CEILING - ROOMS_EXTRA;
    /// Longest `max_name_chars` and `max_room_chars`: what the protocol
    /// promises a client may ask for.
    pub const MAX_NAME_CHARS: usize = 32;
    /// Smallest `max_room_chars`: the lobby's name must be one a client can
    /// join.
    pub const MIN_ROOM_CHARS: usize = 5;
    /// Smallest `handshake_frame_len`: room for a `Register` with the
    /// longest name (32 four-byte characters) and password (256 bytes).
    pub const MIN_HANDSHAKE_FRAME_LEN: usize = 512;
    /// Smallest listen queue derived from `max_clients`.
    const MIN_DEFAULT_BACKLOG: u32 = 1024;

    /// Checks that the limits make sense together.
    /// [`Server::bind`](crate::Server::bind) calls it, and refuses any
    /// combination under which the server could misbehave:
    ///
    /// - **No eviction of a client that keeps up.** A client is evicted
    ///   when its outbox overflows. One turn of a sender's session hands the
    ///   room at most one buffer of relays, cut once it reaches
    ///   `relay_batch` bytes: up to `relay_batch` plus one frame and its
    ///   4-byte header (`max_frame_len`, 300 bytes more for a client of the
    ///   HISTORY capability, whose `Posted` names a room, a sender and ids). A client that keeps up (its
    ///   session empties its outbox into the socket between two such turns)
    ///   can still be handed, at one moment, that buffer, one batch of
    ///   presence notices (`presence_batch` plus one notice), a `Ping` and a
    ///   `Pong`, and a newcomer its roster (held to the depth, not to the
    ///   bytes). So `outbox_bytes` must be at least
    ///   [`Config::min_outbox_bytes`] and `outbox_depth` at least
    ///   [`Config::MIN_OUTBOX_DEPTH`]. (`outbox_bytes` equal to
    ///   `max_frame_len` used to be accepted: one maximal relay, 4 header
    ///   bytes longer, evicted its reader.)
    /// - **No time arithmetic overflow.** Every duration is at most
    ///   [`Config::MAX_DURATION`] (365 days), so `Instant::now() + d` cannot
    ///   panic; `Duration::MAX` used to panic in every session.
    /// - **No zero that means nothing.** `max_clients`, `outbox_depth`,
    ///   `max_iov`, `flush_rounds`, `backlog`, `handshake_timeout`,
    ///   `frame_timeout`, `close_timeout` and `shutdown_grace` must be non-zero,
    ///   `read_chunk` at least [`Config::MIN_READ_CHUNK`], and `burst` non-zero
    ///   when `rate` is. Zero is meaningful, and allowed, for `idle_timeout` and
    ///   `rate` (the check is off), `presence_delay`, `presence_batch` and
    ///   `relay_batch` (no batching) and `reject_slots` (nobody is told "server
    ///   full": new connections wait in the listen queue), and `tell_rate`
    ///   (no limit on direct messages; `tell_burst` must be non-zero otherwise).
    ///   `max_rooms` and `room_members` are at least 1; `max_name_chars` is
    ///   1 to [`Config::MAX_NAME_CHARS`], `max_room_chars`
    ///   [`Config::MIN_ROOM_CHARS`] to [`Config::MAX_NAME_CHARS`].
    /// - **Within what the system takes.** `max_frame_len` within
    ///   `MIN_FRAME_LEN + RELAY_OVERHEAD ..=` [`Config::MAX_FRAME_LEN`] (so
    ///   that the longest frame for a HISTORY client, `max_frame_len + 300`,
    ///   stays within `MAX_FRAME_LEN_CEILING`); `max_iov` at
    ///   most [`Config::MAX_IOV`] (`IOV_MAX`); `backlog` at most
    ///   [`Config::MAX_BACKLOG`]; `read_chunk`, `relay_batch` and
    ///   `presence_batch` at most `MAX_FRAME_LEN_CEILING`; `max_clients` and
    ///   `reject_slots` at most tokio's `Semaphore::MAX_PERMITS`;
    ///   `handshake_frame_len` within
    ///   [`Config::MIN_HANDSHAKE_FRAME_LEN`]`..=`[`Config::MAX_FRAME_LEN`].
    ///   `max_per_ip` may be zero (no cap).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first field at fault; its reason may
    /// name others. The `chat-server` binary shows both as flags.
    pub fn validate(&self) -> Result<(), Error> {
        self.check()
            .map_err(|(field, reason)| Error::Config { field, reason })
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let permits = Semaphore::MAX_PERMITS;
        within("max_clients", self.max_clients, 1, permits)?;
        within("reject_slots", self.reject_slots, 0, permits)?;
        within(
            "handshake_frame_len",
            self.handshake_frame_len,
            Self::MIN_HANDSHAKE_FRAME_LEN,
            Self::MAX_FRAME_LEN,
        )?;
        let min = MIN_FRAME_LEN + RELAY_OVERHEAD;
        within(
            "max_frame_len",
            self.max_frame_len,
            min,
            Self::MAX_FRAME_LEN,
        )?;
        within("relay_batch", self.relay_batch, 0, MAX_FRAME_LEN_CEILING)?;
        within(
            "presence_batch",
            self.presence_batch,
            0,
            MAX_FRAME_LEN_CEILING,
        )?;
        within(
            "outbox_depth",
            self.outbox_depth,
            Self::MIN_OUTBOX_DEPTH,
            usize::MAX,
        )?;
        let min = self.min_outbox_bytes();
        if self.outbox_bytes < min {
            return Err((
                "outbox_bytes",
                format!(
                    "{} is less than the minimum, {min}: one relay buffer \
                     (relay_batch + max_frame_len + {}), one batch of notices \
                     (presence_batch + {NOTICE_MAX}), a Ping and a Pong ({}); \
                     less could evict a client that keeps up",
                    self.outbox_bytes,
                    ROOMS_EXTRA + HEADER_LEN,
                    2 * CONTROL_MAX
                ),
            ));
        }
        within(
            "read_chunk",
            self.read_chunk,
            Self::MIN_READ_CHUNK,
            MAX_FRAME_LEN_CEILING,
        )?;
        within("max_iov", self.max_iov, 1, Self::MAX_IOV)?;
        within("flush_rounds", self.flush_rounds, 1, usize::MAX)?;
        if let Some(backlog) = self.backlog {
            within("backlog", backlog, 1, Self::MAX_BACKLOG)?;
        }
        for (field, value, zero_ok) in [
            ("handshake_timeout", self.handshake_timeout, false),
            ("idle_timeout", self.idle_timeout, true),
            ("shutdown_grace", self.shutdown_grace, false),
            ("close_timeout", self.close_timeout, false),
            ("presence_delay", self.presence_delay, true),
            ("frame_timeout", self.frame_timeout, false),
        ] {
            if value.is_zero() && !zero_ok {
                return Err((field, "must be more than zero".into()));
            }
            if value > Self::MAX_DURATION {
                return Err((
                    field,
                    format!("{value:?} is more than the maximum, 365 days"),
                ));
            }
        }
        if self.coalesce > Self::MAX_COALESCE {
            return Err((
                "coalesce",
                format!("{:?} is more than the maximum, 100ms", self.coalesce),
            ));
        }
        if self.rate > 0 && self.burst == 0 {
            return Err(("burst", "must be at least 1 unless rate is 0".into()));
        }
        within("max_rooms", self.max_rooms, 1, usize::MAX)?;
        within(
            "max_name_chars",
            self.max_name_chars,
            1,
            Self::MAX_NAME_CHARS,
        )?;
        within(
            "max_room_chars",
            self.max_room_chars,
            Self::MIN_ROOM_CHARS,
            Self::MAX_NAME_CHARS,
        )?;
        within("room_members", self.room_members, 1, usize::MAX)?;
        within("history_page", self.history_page, 1, Self::MAX_HISTORY_PAGE)?;
        within("history_batch", self.history_batch, 1, usize::MAX)?;
        within("history_queue", self.history_queue, 1, usize::MAX)?;
        if self.history_window > Self::MAX_COALESCE {
            return Err((
                "history_window",
                format!("{:?} is more than the maximum, 100ms", self.history_window),
            ));
        }
        if self.history_age > Self::MAX_DURATION {
            return Err((
                "history_age",
                format!("{:?} is more than the maximum, 365 days", self.history_age),
            ));
        }
        if self.tell_rate > 0 && self.tell_burst == 0 {
            return Err((
                "tell_burst",
                "must be at least 1 unless tell_rate is 0".into(),
            ));
        }
        if self.token_ttl < Duration::from_secs(1) {
            return Err(("token_ttl", "must be at least 1s".into()));
        }
        if self.token_ttl > Self::MAX_DURATION {
            return Err((
                "token_ttl",
                format!("{:?} is more than the maximum, 365 days", self.token_ttl),
            ));
        }
        within("hash_workers", self.hash_workers, 1, Self::MAX_HASH_WORKERS)?;
        if !self.guests && self.accounts == Storage::Off {
            return Err((
                "guests",
                "cannot be off without accounts: nobody could join".into(),
            ));
        }
        Ok(())
    }

    /// The least `outbox_bytes` that can never evict a client that keeps
    /// up: one relay buffer (`relay_batch` plus one frame of a ROOMS client,
    /// `max_frame_len + 300`, and its header), one batch of presence notices
    /// (`presence_batch` plus the longest notice, 288 bytes), a `Ping` and a
    /// `Pong`. 148,080 with the defaults.
    pub fn min_outbox_bytes(&self) -> usize {
        self.relay_batch
            .saturating_add(self.max_frame_len)
            .saturating_add(ROOMS_EXTRA + HEADER_LEN)
            .saturating_add(self.presence_batch)
            .saturating_add(NOTICE_MAX)
            .saturating_add(2 * CONTROL_MAX)
    }

    /// Most relay bytes one session hands to the room before it lets the
    /// recipients run: what the outbox holds beyond the reserve that
    /// [`min_outbox_bytes`](Self::min_outbox_bytes) keeps for notices and
    /// replies, so that a recipient that drains between turns is never
    /// evicted. At least `relay_batch` in a valid configuration; about
    /// 8 MiB with the defaults, so that a busy sender rarely yields early.
    pub fn relay_budget(&self) -> usize {
        let reserve = self.min_outbox_bytes().saturating_sub(self.relay_batch);
        self.outbox_bytes.saturating_sub(reserve).max(1)
    }

    /// The largest payload a client may send: what `Welcome` announces.
    pub fn client_max_frame(&self) -> usize {
        self.max_frame_len.saturating_sub(RELAY_OVERHEAD)
    }

    /// The listen queue's length: `backlog`, or by default `max_clients`
    /// clamped to 1,024..=65,535, so that a crowd arriving at once is not
    /// dropped by the kernel while the server accepts.
    pub fn listen_backlog(&self) -> u32 {
        self.backlog.unwrap_or_else(|| {
            u32::try_from(self.max_clients)
                .unwrap_or(u32::MAX)
                .clamp(Self::MIN_DEFAULT_BACKLOG, Self::MAX_BACKLOG)
        })
    }
}

/// `Ok` if `min <= value <= max`, else why not.
fn within<T>(field: &'static str, value: T, min: T, max: T) -> Result<(), (&'static str, String)>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value < min {
        return Err((field, format!("{value} is less than the minimum, {min}")));
    }
    if value > max {
        return Err((field, format!("{value} is more than the maximum, {max}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field `config` is refused for, and the reason.
    fn refused(config: Config) -> (&'static str, String) {
        match config.validate() {
            Err(Error::Config { field, reason }) => (field, reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn default_is_valid() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.client_max_frame(), MAX_FRAME_LEN - 20);
        assert_eq!(config.min_outbox_bytes(), 148_080);
        assert_eq!(config.listen_backlog(), 10_000);
    }

    #[test]
    fn the_relay_budget_is_what_the_outbox_leaves_for_relays() {
        let config = Config::default();
        let reserve = config.min_outbox_bytes() - config.relay_batch;
        assert_eq!(config.relay_budget(), 8 * 1024 * 1024 - reserve);
        // At the smallest valid outbox, one relay buffer between yields.
        let tight = Config {
            outbox_bytes: config.min_outbox_bytes(),
            ..Config::default()
        };
        tight.validate().unwrap();
        assert_eq!(tight.relay_budget(), tight.relay_batch);
    }

    #[test]
    fn bad_limits_are_named() {
        let err = Config {
            max_frame_len: 10,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: max_frame_len: 10 is less than the minimum, 84"
        );
    }

    #[test]
    fn outbox_must_hold_what_a_client_that_keeps_up_is_sent() {
        // The defect: equal to the frame limit was accepted, and one maximal
        // relay (a frame of max_frame_len plus its header) evicted its reader.
        let (field, reason) = refused(Config {
            outbox_bytes: MAX_FRAME_LEN,
            ..Config::default()
        });
        assert_eq!(field, "outbox_bytes");
        assert!(reason.contains("less than the minimum, 148080"), "{reason}");
        // Exactly the minimum is fine, one byte less is not.
        let base = Config {
            relay_batch: 1000,
            presence_batch: 100,
            max_frame_len: 5000,
            ..Config::default()
        };
        let min = 1000 + 5000 + 300 + 4 + 100 + 288 + 32;
        assert_eq!(base.min_outbox_bytes(), min);
        Config {
            outbox_bytes: min,
            ..base.clone()
        }
        .validate()
        .unwrap();
        assert_eq!(
            refused(Config {
                outbox_bytes: min - 1,
                ..base
            })
            .0,
            "outbox_bytes"
        );
        // A bigger relay batch needs a bigger outbox.
        let (field, _) = refused(Config {
            relay_batch: 8 * 1024 * 1024,
            ..Config::default()
        });
        assert_eq!(field, "outbox_bytes");
        for depth in [0, Config::MIN_OUTBOX_DEPTH - 1] {
            let config = Config {
                outbox_depth: depth,
                ..Config::default()
            };
            assert_eq!(refused(config).0, "outbox_depth");
        }
    }

    #[test]
    fn zeros_that_mean_nothing_are_refused() {
        let zero = Duration::ZERO;
        let cases: Vec<(&str, Config)> = vec![
            (
                "coalesce",
                Config {
                    coalesce: Config::MAX_COALESCE + Duration::from_nanos(1),
                    ..Config::default()
                },
            ),
            (
                "max_clients",
                Config {
                    max_clients: 0,
                    ..Config::default()
                },
            ),
            (
                "read_chunk",
                Config {
                    read_chunk: 0,
                    ..Config::default()
                },
            ),
            (
                "read_chunk",
                Config {
                    read_chunk: 63,
                    ..Config::default()
                },
            ),
            (
                "max_iov",
                Config {
                    max_iov: 0,
                    ..Config::default()
                },
            ),
            (
                "flush_rounds",
                Config {
                    flush_rounds: 0,
                    ..Config::default()
                },
            ),
            (
                "backlog",
                Config {
                    backlog: Some(0),
                    ..Config::default()
                },
            ),
            (
                "handshake_timeout",
                Config {
                    handshake_timeout: zero,
                    ..Config::default()
                },
            ),
            (
                "shutdown_grace",
                Config {
                    shutdown_grace: zero,
                    ..Config::default()
                },
            ),
            (
                "close_timeout",
                Config {
                    close_timeout: zero,
                    ..Config::default()
                },
            ),
            (
                "frame_timeout",
                Config {
                    frame_timeout: zero,
                    ..Config::default()
                },
            ),
            (
                "burst",
                Config {
                    burst: 0,
                    ..Config::default()
                },
            ),
        ];
        for (field, config) in cases {
            assert_eq!(refused(config).0, field);
        }
    }

    #[test]
    fn meaningful_zeros_are_allowed() {
        Config {
            idle_timeout: Duration::ZERO,
            rate: 0,
            burst: 0,
            presence_delay: Duration::ZERO,
            presence_batch: 0,
            relay_batch: 0,
            reject_slots: 0,
            max_per_ip: 0,
            ..Config::default()
        }
        .validate()
        .unwrap();
        // The edges of the handshake frame limit are allowed.
        for handshake_frame_len in [Config::MIN_HANDSHAKE_FRAME_LEN, Config::MAX_FRAME_LEN] {
            Config {
                handshake_frame_len,
                ..Config::default()
            }
            .validate()
            .unwrap();
        }
    }

    #[test]
    fn account_limits_are_checked() {
        Config {
            login_rate: 0,
            login_rate_ip: 0,
            register_rate: 0,
            accounts: Storage::Off,
            token_ttl: Config::MAX_DURATION,
            hash_workers: Config::MAX_HASH_WORKERS,
            ..Config::default()
        }
        .validate()
        .unwrap();
        let cases = [
            (
                "token_ttl",
                Config {
                    token_ttl: Duration::from_millis(999),
                    ..Config::default()
                },
            ),
            (
                "token_ttl",
                Config {
                    token_ttl: Config::MAX_DURATION + Duration::from_secs(1),
                    ..Config::default()
                },
            ),
            (
                "hash_workers",
                Config {
                    hash_workers: 0,
                    ..Config::default()
                },
            ),
            (
                "hash_workers",
                Config {
                    hash_workers: Config::MAX_HASH_WORKERS + 1,
                    ..Config::default()
                },
            ),
            (
                "guests",
                Config {
                    guests: false,
                    accounts: Storage::Off,
                    ..Config::default()
                },
            ),
        ];
        for (field, config) in cases {
            assert_eq!(refused(config).0, field);
        }
    }

    #[test]
    fn durations_that_could_overflow_are_refused() {
        let fields = [
            "handshake_timeout",
            "idle_timeout",
            "shutdown_grace",
            "close_timeout",
            "presence_delay",
            "frame_timeout",
        ];
        for field in fields {
            for (value, ok) in [
                (Config::MAX_DURATION, true),
                (Config::MAX_DURATION + Duration::from_nanos(1), false),
                (Duration::MAX, false),
            ] {
                let mut config = Config::default();
                *match field {
                    "handshake_timeout" => &mut config.handshake_timeout,
                    "idle_timeout" => &mut config.idle_timeout,
                    "shutdown_grace" => &mut config.shutdown_grace,
                    "close_timeout" => &mut config.close_timeout,
                    "presence_delay" => &mut config.presence_delay,
                    _ => &mut config.frame_timeout,
                } = value;
                if ok {
                    config.validate().unwrap();
                    // The largest allowed duration is safe to add to now.
                    let _ = std::time::Instant::now() + value;
                    let _ = tokio::time::Instant::now() + value;
                } else {
                    let (got, reason) = refused(config);
                    assert_eq!(got, field);
                    assert!(reason.contains("365 days"), "{reason}");
                }
            }
        }
    }

    #[test]
    fn upper_bounds() {
        let big = MAX_FRAME_LEN_CEILING + 1;
        let cases: Vec<(&str, Config)> = vec![
            (
                "max_frame_len",
                Config {
                    max_frame_len: big,
                    ..Config::default()
                },
            ),
            (
                "relay_batch",
                Config {
                    relay_batch: big,
                    ..Config::default()
                },
            ),
            (
                "presence_batch",
                Config {
                    presence_batch: big,
                    ..Config::default()
                },
            ),
            (
                "read_chunk",
                Config {
                    read_chunk: big,
                    ..Config::default()
                },
            ),
            (
                "max_iov",
                Config {
                    max_iov: Config::MAX_IOV + 1,
                    ..Config::default()
                },
            ),
            (
                "backlog",
                Config {
                    backlog: Some(65_536),
                    ..Config::default()
                },
            ),
            (
                "max_clients",
                Config {
                    max_clients: usize::MAX,
                    ..Config::default()
                },
            ),
            (
                "reject_slots",
                Config {
                    reject_slots: usize::MAX,
                    ..Config::default()
                },
            ),
            (
                "handshake_frame_len",
                Config {
                    handshake_frame_len: Config::MAX_FRAME_LEN + 1,
                    ..Config::default()
                },
            ),
            (
                "handshake_frame_len",
                Config {
                    handshake_frame_len: Config::MIN_HANDSHAKE_FRAME_LEN - 1,
                    ..Config::default()
                },
            ),
        ];
        for (field, config) in cases {
            assert_eq!(refused(config).0, field);
        }
        // What validation lets through, the semaphores take.
        let _ = Semaphore::new(Semaphore::MAX_PERMITS);
    }

    #[test]
    fn room_limits_are_checked() {
        let cases: Vec<(&str, Config, &str)> = vec![
            (
                "max_rooms",
                Config {
                    max_rooms: 0,
                    ..Config::default()
                },
                "0 is less than the minimum, 1",
            ),
            (
                "room_members",
                Config {
                    room_members: 0,
                    ..Config::default()
                },
                "0 is less than the minimum, 1",
            ),
            (
                "max_name_chars",
                Config {
                    max_name_chars: 0,
                    ..Config::default()
                },
                "0 is less than the minimum, 1",
            ),
            (
                "max_name_chars",
                Config {
                    max_name_chars: 33,
                    ..Config::default()
                },
                "33 is more than the maximum, 32",
            ),
            (
                "max_room_chars",
                Config {
                    max_room_chars: 4,
                    ..Config::default()
                },
                "4 is less than the minimum, 5",
            ),
            (
                "max_room_chars",
                Config {
                    max_room_chars: 33,
                    ..Config::default()
                },
                "33 is more than the maximum, 32",
            ),
            (
                "tell_burst",
                Config {
                    tell_burst: 0,
                    ..Config::default()
                },
                "must be at least 1 unless tell_rate is 0",
            ),
        ];
        for (field, config, reason) in cases {
            assert_eq!(refused(config), (field, reason.to_string()));
        }
        // The edges that are allowed, and a zero tell_rate (no DM limit).
        Config {
            max_rooms: 1,
            room_members: 1,
            max_name_chars: 1,
            max_room_chars: Config::MIN_ROOM_CHARS,
            tell_rate: 0,
            tell_burst: 0,
            ..Config::default()
        }
        .validate()
        .unwrap();
        Config {
            max_name_chars: Config::MAX_NAME_CHARS,
            max_room_chars: Config::MAX_NAME_CHARS,
            max_rooms: usize::MAX,
            room_members: usize::MAX,
            tell_rate: u32::MAX,
            tell_burst: u32::MAX,
            ..Config::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn a_rooms_frame_stays_within_the_ceiling() {
        // A HISTORY client is sent frames of up to max_frame_len + 300: the
        // largest frame limit leaves room for that, one more byte does not.
        let largest = Config::MAX_FRAME_LEN;
        assert_eq!(largest + 300, MAX_FRAME_LEN_CEILING);
        let at = |max_frame_len| Config {
            max_frame_len,
            outbox_bytes: 64 * 1024 * 1024,
            ..Config::default()
        };
        at(largest).validate().unwrap();
        let (field, reason) = refused(at(largest + 1));
        assert_eq!(field, "max_frame_len");
        assert_eq!(
            reason,
            format!("{} is more than the maximum, {largest}", largest + 1)
        );
        let mut server = chat_proto::ServerConfig::default();
        server.max_frame_len = largest;
        assert_eq!(
            server
                .outbound_for(chat_proto::features::ROOMS | chat_proto::features::HISTORY)
                .max_frame_len(),
            largest + 300
        );
    }

    #[test]
    fn backlog_follows_max_clients_within_bounds() {
        let with = |max_clients, backlog| Config {
            max_clients,
            backlog,
            ..Config::default()
        };
        assert_eq!(with(1, None).listen_backlog(), 1024);
        assert_eq!(with(5000, None).listen_backlog(), 5000);
        assert_eq!(with(1 << 20, None).listen_backlog(), 65_535);
        assert_eq!(with(1 << 20, Some(7)).listen_backlog(), 7);
    }

    #[test]
    fn frame_bounds_cover_the_worst_case() {
        use bytes::BytesMut;
        use chat_proto::{ChatCodec, Message};
        let codec = ChatCodec::with_max_frame_len(MAX_FRAME_LEN_CEILING).unwrap();
        let len = |msg: &Message| {
            let mut buf = BytesMut::new();
            codec.encode(msg, &mut buf).unwrap();
            buf.len()
        };
        let from: std::net::SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        for text in ["", "x", &"y".repeat(200), &"z".repeat(70_000)] {
            let send = len(&Message::Send { text: text.into() });
            assert!(len(&Message::relay(from, text)) - send <= RELAY_OVERHEAD);
        }
        // A ROOMS client's relay and notices, with the longest names.
        let name = "𠀀".repeat(Config::MAX_NAME_CHARS);
        let member = chat_proto::Member::new(name.clone(), from);
        for text in ["", &"y".repeat(200), &"z".repeat(70_000)] {
            let room = name.clone();
            let say = len(&Message::Say {
                room: room.clone(),
                text: text.into(),
            });
            let said = Message::Said {
                room,
                from: member.clone(),
                text: text.into(),
            };
            assert!(len(&said) - say <= chat_proto::ROOMS_OVERHEAD);
        }
        let notices = [
            Message::Entered {
                room: name.clone(),
                member: member.clone(),
            },
            Message::Departed {
                room: name.clone(),
                member: member.clone(),
            },
            Message::Renamed {
                old: name.clone(),
                member,
            },
        ];
        for notice in &notices {
            assert!(len(notice) <= NOTICE_MAX, "{} bytes", len(notice));
        }
        let (ip, port) = (from.ip(), from.port());
        assert!(len(&Message::Joined { ip, port }) <= NOTICE_MAX);
        assert!(len(&Message::Left { ip, port }) <= NOTICE_MAX);
        assert!(len(&Message::Ping { nonce: u64::MAX }) <= CONTROL_MAX);
        assert!(len(&Message::Pong { nonce: u64::MAX }) <= CONTROL_MAX);
    }
}
