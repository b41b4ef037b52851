//! One task per client: it owns the client's transport and its protocol
//! machine, and is the only thing that ever touches either.
//!
//! The rules of the conversation (handshake, HTTP detection, versions,
//! feature gating, the first `Nick` of a rooms client, who may send what,
//! answering `Ping`, the `Exit` and `Error` sequences, frame limits) are
//! [`chat_proto::Connection`]'s, in the server role; the session moves
//! bytes between it and the transport, and adds what is the server's own:
//! flood control, timers (the handshake's, which also bounds the wait for a
//! rooms client's first `Nick`, a frame's, idleness), eviction and
//! shutdown. What each request does is `dispatch.rs`'s; how a session
//! ends is `goodbye.rs`'s; its logins are `auth.rs`'s.
//!
//! The task waits on whichever comes first: bytes to read, room in the
//! transport for queued output, new frames in its outbox, its timer, an
//! eviction or the server's shutdown. Output is a queue of shared [`Bytes`]
//! written with vectored writes. The relays of the `Send`s and `Say`s that
//! arrived together for one room are encoded back to back into one buffer
//! per kind of recipient, handed to the room once and shared by every
//! recipient, so the fan-out cost is paid per batch, not per message; a
//! batch never exceeds what the outbox of a client that keeps up can take.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chat_proto::{Connection, Event, HEADER_LEN, Message, ProtocolError, ServerConfig, features};
use tokio::net::TcpStream;
use tokio::sync::futures::Notified;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::{debug, info};

use crate::accounts::Accounts;
use crate::admission::Admitted;
use crate::config::Config;
use crate::dispatch::{Client, Relays, Scope, Stop};
use crate::flood::Bucket;
use crate::flusher::Flusher;
use crate::history::History;
use crate::hub::{Hub, PresencePolicy};
use crate::login::{Outcome, Pending};
use crate::metrics::{self, Metrics};
use crate::outbox::Outbox;
use crate::peer::Peer;
use crate::presence::Codecs;
use crate::store::{Store, StoreError};
use crate::transport::Transport;
use crate::writer::Writer;

mod auth;
mod goodbye;

use goodbye::Close;

/// Stand-in for "never" where a duration would overflow `Instant`.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// What every session shares: limits, codecs, the hub, the stop signal.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) hub: Hub,
    /// Each session's protocol machine is made from this.
    server: ServerConfig,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Where room and direct messages go first, when history is on.
    pub(crate) history: Option<History>,
    /// Registered names and logins, when accounts are on.
    pub(crate) accounts: Option<Accounts>,
    /// Wakes sessions whose output waits out `Config::coalesce` (`None`:
    /// every write at once).
    flusher: Option<Flusher>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Shared {
    /// `config` must have been validated; `store` is where history goes
    /// (`None`: history is off), `accounts` the accounts (`None`: off).
    pub(crate) fn new(
        config: Config,
        store: Option<Arc<dyn Store>>,
        accounts: Option<Accounts>,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let mut server = ServerConfig::with_max_frame_len(config.max_frame_len)
            .unwrap_or_else(|_| ServerConfig::default());
        server.handshake_frame_len = config.handshake_frame_len;
        server.features = features::ROOMS;
        if store.is_some() {
            server.features |= features::HISTORY;
        }
        if accounts.is_some() {
            server.features |= features::AUTH;
        }
        let codecs = Codecs {
            v1: server.outbound(),
            rooms: server.outbound_for(features::ROOMS),
            history: server.outbound_for(features::ROOMS | features::HISTORY),
            limit: config.max_frame_len,
        };
        let hub = Hub::new(PresencePolicy {
            enabled: config.presence,
            delay: config.presence_delay,
            batch: config.presence_batch,
            codecs,
        });
        let metrics = Arc::new(Metrics::new(hub.delivered().clone()));
        let history = match store {
            Some(store) => Some(History::start(store, &config, codecs, &metrics)?),
            None => None,
        };
        let flusher = if config.coalesce.is_zero() {
            None
        } else {
            Flusher::start(config.coalesce)
        };
        Ok(Shared {
            config,
            hub,
            history,
            accounts,
            server,
            shutdown,
            flusher,
            metrics,
        })
    }

    /// What a client's requests work on.
    fn scope(&self) -> Scope<'_> {
        Scope {
            hub: &self.hub,
            history: self.history.as_ref(),
            config: &self.config,
            accounts: self.accounts.as_ref(),
        }
    }

    /// Whether `peer`'s session must read no more for now: its own answers
    /// back up its outbox, or it has as much on its way through history as
    /// it may.
    fn holds(&self, peer: &Peer) -> bool {
        peer.outbox.backed_up() || self.history.as_ref().is_some_and(|h| h.full(peer))
    }

    /// Largest relay buffer handed to the room at once: `relay_batch`,
    /// and with one more frame still within the outbox of a client that had
    /// drained its own.
    fn piece(&self) -> usize {
        let frame = self.config.max_frame_len + HEADER_LEN;
        self.config
            .relay_batch
            .min(self.config.outbox_bytes.saturating_sub(frame))
            .max(1)
    }
}

/// How a session ends when its client's standing must end.
fn closed(stop: Stop) -> Close {
    match stop {
        Stop::Evicted => Close::Evicted,
        Stop::Shutdown => Close::Shutdown,
    }
}

/// Whole frames in `bytes`, counted from their length prefixes.
fn frames_in(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut n = 0;
    while let Some((head, _)) = rest.split_first_chunk::<HEADER_LEN>() {
        let len = HEADER_LEN + u32::from_be_bytes(*head) as usize;
        rest = rest.get(len..).unwrap_or_default();
        n += 1;
    }
    n
}

/// `now + d`, or a far future where that overflows.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// Serves one accepted TCP client until it leaves, then closes its socket.
///
/// Not an `async fn`, nor is [`serve`]: the session is built before its
/// future is, which then holds the session alone, not also the arguments it
/// was built from (an `async fn` keeps room for its arguments for its whole
/// life, and every idle client holds this future).
pub(crate) fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send + 'static {
    // Relays must go out at once; batching is done by the writer.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(peer = %addr, "cannot set TCP_NODELAY: {e}");
    }
    serve(
        shared,
        stream,
        addr,
        Some(admitted),
        metrics::Transport::Tcp,
    )
}

/// Serves one client over any transport until it leaves: handshake,
/// service, goodbye. `via` labels it in the metrics.
pub(crate) fn serve<T: Transport + 'static>(
    shared: Arc<Shared>,
    io: T,
    addr: SocketAddr,
    admitted: Option<Admitted>,
    via: metrics::Transport,
) -> impl Future<Output = ()> + Send + 'static {
    // The block captures the session and keeps it in place: an `async fn`
    // taking it would keep it twice (as its argument and as a local).
    let mut session = Session::new(shared, io, addr, admitted, via);
    async move {
        // Not a `match`: its scrutinee, the handshake's result, would be
        // kept, taking room, for as long as the client is served.
        let close = if let Err(close) = session.handshake().await {
            close
        } else {
            session.serve().await
        };
        // Boxed: the goodbye's state is as large as the rest of the
        // session's put together, and only a closing session needs it, not
        // an idle one.
        Box::pin(session.finish(close)).await;
    }
}

/// The wake-ups a serving session waits on besides its transport, made
/// once and kept across wake-ups: re-creating them every time would
/// register and unregister with each notifier, a cost paid per delivery.
struct Waits<'a, 'p> {
    /// The client's outbox, which `evicted` and `ready` wait on. (Kept
    /// here rather than beside: every byte of this future is held by every
    /// idle client.)
    outbox: &'a Outbox,
    shutdown: Pin<&'p mut WaitForCancellationFuture<'a>>,
    evicted: Pin<&'p mut Notified<'a>>,
    ready: Pin<&'p mut Notified<'a>>,
    timer: Pin<&'p mut Sleep>,
}

/// Output of at least this many bytes is written at once, never held back
/// by write coalescing.
const COALESCE_BYTES: usize = 16 * 1024;

/// What a session waits for before it reads on.
enum Waiting {
    /// A `Part` or `Nick` whose notice must not overtake the client's
    /// messages still on their way through history.
    Event(Event),
    /// A login attempt or logout (see `login.rs`).
    Attempt(Pending),
}

/// What woke the serving session up.
enum Wake {
    Shutdown,
    Evicted,
    Gone(io::Error),
    /// Bytes arrived (or the stream ended: `false`).
    Input(bool),
    /// A login attempt ended (`None`: its task failed). Boxed: a `Wake`
    /// is part of every idle session's future.
    Attempt(Option<Box<Outcome>>),
    /// Complete frames are still waiting, or output is: let others run first.
    Busy,
    Timer,
}

struct Session<T> {
    shared: Arc<Shared>,
    io: T,
    /// The client's address as the others see it.
    addr: SocketAddr,
    conn: Connection,
    out: Writer,
    /// Its slot (while it counts against `max_clients`) and guards; none
    /// in unit tests.
    admitted: Option<Admitted>,
    /// Set once welcomed: the client's name and rooms.
    client: Option<Client>,
    /// A rooms client must have sent its first `Nick` by then.
    named_by: Option<Instant>,
    bucket: Bucket,
    /// When the last complete frame arrived.
    last_rx: Instant,
    pinged: bool,
    /// The last `Ping`'s (a `u32`: this struct is in every idle client).
    nonce: u32,
    /// When the frame under way must be complete.
    frame_deadline: Option<Instant>,
    /// Complete frames left unread in the machine after a full batch.
    backlog: bool,
    /// A request that waits for the client's messages to be delivered, or
    /// a login attempt (or logout) under way: nothing more is read until
    /// it is done. (One field: this struct is in every idle client.)
    waiting: Option<Box<Waiting>>,
    /// Requests wait, unread, until the writer has drained the client's
    /// outbox, which its own answers have backed up: they are never a
    /// reason to evict it (relays from others still are).
    held: bool,
    /// When the last write to the client began, in the flusher's clock
    /// (for `Config::coalesce`; a `u32`: this struct is in every client).
    last_tx: u32,
    /// Output waits for the flusher's tick after `deferred`.
    coalescing: bool,
    deferred: u16,
    /// Relay bytes handed to the room since the session last let the other
    /// tasks run: the recipients drain their outboxes in between, so this
    /// is what the outbox of a client that keeps up must hold at most.
    relayed: usize,
    /// For the metrics: how the client came, and whether it is welcomed
    /// and named.
    via: metrics::Transport,
    open: bool,
}

impl<T> Drop for Session<T> {
    fn drop(&mut self) {
        // However the session ends, a panic included.
        self.shared.metrics.disconnected(self.via, self.open);
    }
}

impl<T: Transport> Session<T> {
    fn new(
        shared: Arc<Shared>,
        io: T,
        addr: SocketAddr,
        admitted: Option<Admitted>,
        via: metrics::Transport,
    ) -> Self {
        shared.metrics.connected(via);
        // Peers see the address in its plain form, not IPv4-mapped IPv6.
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let now = Instant::now();
        // As if last written a gap ago: a client's first output never waits.
        let last_tx = shared.flusher.as_ref().map_or(0, |f| f.since_ago());
        Session {
            bucket: Bucket::new(shared.config.burst, now),
            conn: Connection::server(shared.server),
            shared,
            io,
            addr,
            out: Writer::default(),
            admitted,
            client: None,
            named_by: None,
            last_rx: now,
            pinged: false,
            nonce: 0,
            frame_deadline: None,
            backlog: false,
            waiting: None,
            held: false,
            last_tx,
            coalescing: false,
            deferred: 0,
            relayed: 0,
            via,
            open: false,
        }
    }

    /// Waits for `Hello`, then welcomes the client into the lobby.
    async fn handshake(&mut self) -> Result<(), Close> {
        let deadline = after(Instant::now(), self.shared.config.handshake_timeout);
        let chunk = self.shared.config.read_chunk;
        loop {
            match self.conn.poll() {
                Ok(Some(Event::Hello { version, features })) => {
                    return self.admit(version, features, deadline);
                }
                Ok(Some(Event::Error(reason))) => return Err(Close::ClientError(reason)),
                Ok(Some(other)) => debug!(peer = %self.addr, "ignored in handshake: {other:?}"),
                Ok(None) => {}
                Err(e) => return Err(self.violation(&e)),
            }
            let read = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => return Err(Close::Shutdown),
                () = sleep_until(deadline) => {
                    return Err(Close::Refuse("handshake timeout".into()));
                }
                read = poll_fn(|cx| self.io.poll_read(cx, self.conn.input(), chunk)) => read,
            };
            match read {
                Ok(0) => return Err(self.eof()),
                Ok(_) => {}
                Err(e) => return Err(Close::Gone(e)),
            }
        }
    }

    /// Welcomes the client. A version 1 client joins the lobby first (a
    /// closed hub, shutting down, refuses, and the client is then told so
    /// instead of being welcomed); a rooms client joins nothing before its
    /// `Nick`, which must come by `deadline`, the handshake's.
    fn admit(&mut self, version: u16, asked: u64, deadline: Instant) -> Result<(), Close> {
        let shared = &self.shared;
        let config = &shared.config;
        let outbox = Outbox::new(config.outbox_depth, config.outbox_bytes);
        let id = shared.hub.next_id();
        let agreed = features::agree(asked, shared.server.features);
        let rooms = agreed & features::ROOMS != 0;
        let history = agreed & features::HISTORY != 0;
        let auth = agreed & features::AUTH != 0;
        if shared.accounts.is_some() && !config.guests && !auth {
            return Err(Close::Refuse(
                "this server requires an account: connect with a client that can log in \
                 (the AUTH capability)"
                    .into(),
            ));
        }
        let peer = Peer::new(id, self.addr, rooms, outbox)
            .with_history(history)
            .with_auth(auth);
        let client =
            Client::new(&shared.hub, config, Arc::new(peer)).map_err(|_| Close::Shutdown)?;
        self.conn.accept(self.addr);
        // The Welcome goes out before anything the room queues.
        self.out.push(self.conn.transmit().unwrap_or_default());
        let peers = shared.hub.lobby().len();
        info!(peer = %self.addr, %id, version, rooms, peers, "client connected");
        if client.naming() {
            self.named_by = Some(deadline);
        } else {
            self.opened();
        }
        self.client = Some(client);
        self.last_rx = Instant::now();
        Ok(())
    }

    /// After the end of the stream: a clean end, or a frame cut short.
    fn eof(&mut self) -> Close {
        match self.conn.eof() {
            Ok(()) => Close::Eof,
            Err(e) => self.violation(&e),
        }
    }

    /// A broken rule or frame, counted.
    fn violation(&self, e: &ProtocolError) -> Close {
        self.shared.metrics.bad_frame(e);
        Close::Violation(e.to_string())
    }

    /// The client is welcomed and named.
    fn opened(&mut self) {
        if !self.open {
            self.open = true;
            self.shared.metrics.opened(self.via);
        }
    }

    /// The welcomed client's life: relay, answer, watch the clock.
    async fn serve(&mut self) -> Close {
        let Some(peer) = self.client.as_ref().map(|c| c.peer.clone()) else {
            return Close::Shutdown;
        };
        let token = self.shared.shutdown.clone();
        let shutdown = token.cancelled();
        let evicted = peer.outbox.evicted();
        let ready = peer.outbox.ready();
        let timer = sleep_until(self.next_timer());
        tokio::pin!(shutdown, evicted, ready, timer);
        let mut waits = Waits {
            outbox: &peer.outbox,
            shutdown,
            evicted,
            ready,
            timer,
        };
        // Frames pipelined behind the Hello.
        if let Err(close) = self.process() {
            return close;
        }
        loop {
            let wake = poll_fn(|cx| self.poll_wake(cx, &mut waits)).await;
            match wake {
                Wake::Shutdown => return Close::Shutdown,
                Wake::Evicted => return Close::Evicted,
                Wake::Gone(e) => return Close::Gone(e),
                Wake::Input(false) => return self.eof(),
                Wake::Input(true) => {
                    if let Err(close) = self.process() {
                        return close;
                    }
                    let timer = &mut waits.timer;
                    if let Some(at) = self.frame_deadline.filter(|&at| at < timer.deadline()) {
                        timer.as_mut().reset(at);
                    }
                }
                Wake::Busy => {
                    tokio::task::yield_now().await;
                    self.relayed = 0;
                    if self.backlog {
                        if let Err(close) = self.process() {
                            return close;
                        }
                    }
                }
                Wake::Attempt(outcome) => {
                    if let Err(close) = self.attempted(outcome).and_then(|()| self.process()) {
                        return close;
                    }
                }
                Wake::Timer => match self.tick() {
                    Ok(next) => waits.timer.as_mut().reset(next),
                    Err(close) => return close,
                },
            }
        }
    }

    /// One look at everything the session waits on: writes what it can,
    /// then reports the first thing that needs the session.
    fn poll_wake(&mut self, cx: &mut Context<'_>, waits: &mut Waits<'_, '_>) -> Poll<Wake> {
        let outbox = waits.outbox;
        loop {
            if waits.shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Shutdown);
            }
            if waits.evicted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Evicted);
            }
            // Write what is queued until the transport is full or nothing
            // is left; give up the turn after a while, so that a client
            // with a never-ending stream of relays cannot starve the others.
            let config = &self.shared.config;
            let (max_iov, rounds) = (config.max_iov.max(1), config.flush_rounds.max(1));
            let mut busy = true;
            for _ in 0..rounds {
                let room = max_iov.saturating_sub(self.out.len());
                if room > 0 {
                    match outbox.drain_into(self.out.queue(), room) {
                        Ok(held) => self.shared.metrics.outbox(held),
                        Err(_) => return Poll::Ready(Wake::Evicted),
                    }
                }
                if self.out.is_empty() {
                    // What a TLS stream still holds goes out too; if it
                    // cannot yet, the transport's readiness wakes us.
                    if let Poll::Ready(Err(e)) = self.io.poll_flush(cx) {
                        return Poll::Ready(Wake::Gone(e));
                    }
                    self.out.release();
                    self.coalescing = false;
                    busy = false;
                    break;
                }
                // A busy client's next write waits for the flusher's next
                // tick, taking along whatever is queued for it meanwhile.
                if let Some(flusher) = &self.shared.flusher {
                    let now = flusher.now();
                    let tick = flusher.tick();
                    // Only small output waits (fewer than `max_iov` buffers
                    // means the outbox was drained whole): a full vector or
                    // a large buffer is one efficient write already, and
                    // holding it back would let the outbox of a client that
                    // keeps up fill while the flusher is late.
                    let waiting = self.out.len() < max_iov
                        && self.out.bytes() < COALESCE_BYTES
                        && if self.coalescing {
                            tick == self.deferred
                        } else {
                            flusher.within_gap(self.last_tx, now)
                        };
                    if waiting {
                        if !self.coalescing {
                            self.coalescing = true;
                            self.deferred = tick;
                            flusher.defer(cx.waker().clone());
                        }
                        busy = false;
                        break;
                    }
                    self.last_tx = now;
                }
                self.coalescing = false;
                match self.out.poll_write(cx, &mut self.io, max_iov) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Wake::Gone(e)),
                    Poll::Pending => {
                        busy = false;
                        break;
                    }
                }
            }
            if let Some(Waiting::Attempt(pending)) = self.waiting.as_deref_mut() {
                if let Poll::Ready(outcome) = Pin::new(pending).poll(cx) {
                    self.waiting = None;
                    return Poll::Ready(Wake::Attempt(outcome.ok().map(Box::new)));
                }
            }
            // Held requests resume once the writer has drained the outbox
            // (its progress, driven by the transport's readiness, wakes us)
            // and history has delivered enough of its messages (a poke).
            if self.held && !self.still_held() {
                self.held = false;
                self.backlog = true;
            }
            if busy || self.backlog || self.relayed >= self.shared.config.relay_budget() {
                return Poll::Ready(Wake::Busy);
            }
            if !self.held {
                match self.io.poll_read(cx, self.conn.input(), config.read_chunk) {
                    Poll::Ready(Ok(n)) => return Poll::Ready(Wake::Input(n > 0)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Wake::Gone(e)),
                    Poll::Pending => self.trim_input(),
                }
            }
            if waits.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
            // With output pending, the transport's readiness wakes us; with
            // none, a push to the outbox does. A push since the last drain
            // has left a permit: re-arm, and go round again.
            if self.out.is_empty() && waits.ready.as_mut().poll(cx).is_ready() {
                waits.ready.set(outbox.ready());
                continue;
            }
            return Poll::Pending;
        }
    }

    /// The timer fired: closes a frame that took too long or a client
    /// silent for too long, pings one silent for half of that, and says
    /// when to look again.
    fn tick(&mut self) -> Result<Instant, Close> {
        let now = Instant::now();
        if self.frame_deadline.is_some_and(|at| now >= at) {
            return Err(Close::Refuse("frame timeout".into()));
        }
        if self.named_by.is_some_and(|at| now >= at) {
            return Err(Close::Refuse("handshake timeout".into()));
        }
        let idle = self.shared.config.idle_timeout;
        if !idle.is_zero() {
            let silent = now.saturating_duration_since(self.last_rx);
            if silent >= idle {
                return Err(Close::Refuse("idle timeout".into()));
            }
            if silent >= idle / 2 && !self.pinged {
                self.pinged = true;
                self.nonce = self.nonce.wrapping_add(1);
                debug!(peer = %self.addr, "silent for {silent:?}: ping");
                // Open until the session ends: cannot fail here.
                let _ = self.conn.ping(self.nonce.into());
                let ping = self.conn.transmit();
                self.queue_replies(ping)?;
            }
        }
        Ok(self.next_timer())
    }

    /// When the timer must fire next.
    fn next_timer(&self) -> Instant {
        let idle = self.shared.config.idle_timeout;
        let idle_at = if idle.is_zero() {
            after(self.last_rx, FAR)
        } else if self.pinged {
            after(self.last_rx, idle)
        } else {
            after(self.last_rx, idle / 2)
        };
        let at = self.frame_deadline.map_or(idle_at, |at| at.min(idle_at));
        self.named_by.map_or(at, |named| named.min(at))
    }

    /// Handles the complete frames in the machine's input. Relays go to the
    /// room in buffers of at most `piece` bytes (plus one frame), and only
    /// until the relay budget since the session last yielded is spent; what
    /// is left waits for the next turn (`backlog`).
    fn process(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        let config = &self.shared.config;
        self.bucket.refill(config.rate, config.burst, now);
        if let Some(client) = &mut self.client {
            client.refill(config, now);
        }
        let before = self.conn.buffered();
        let (piece, budget) = (self.shared.piece(), self.shared.config.relay_budget());
        // Sized once for the relays of what is buffered (a relay is a few
        // bytes longer than its `Send`), rather than grown frame by frame.
        let mut batch = Relays::with_capacity((before + before / 4).min(piece + 64));
        self.backlog = false;
        self.held = false;
        let mut received = 0;
        let result = loop {
            if batch.len() >= piece {
                self.relay(&mut batch);
            }
            if self.relayed + batch.len() >= budget {
                self.backlog = true;
                break Ok(());
            }
            if self
                .client
                .as_ref()
                .is_some_and(|c| self.shared.holds(&c.peer))
            {
                self.held = true;
                break Ok(());
            }
            let stashed = match self.waiting.take().map(|w| *w) {
                Some(Waiting::Event(event)) => Some(event),
                Some(attempt @ Waiting::Attempt(_)) => {
                    self.waiting = Some(Box::new(attempt));
                    self.held = true;
                    break Ok(());
                }
                None => None,
            };
            let event = match stashed {
                Some(event) => event,
                None => match self.conn.poll() {
                    Ok(Some(event)) => event,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(self.violation(&e)),
                },
            };
            if self.must_settle(&event) {
                // Its `Departed` or `Renamed` must not overtake its messages
                // still on their way through history: it waits for them.
                self.waiting = Some(Box::new(Waiting::Event(event)));
                self.held = true;
                break Ok(());
            }
            received += 1;
            if let Err(close) = self.dispatch(event, &mut batch) {
                break Err(close);
            }
        };
        self.shared.metrics.received(received);
        self.relay(&mut batch);
        result?;
        // The machine answered any `Ping` itself: each `Pong` it queued
        // counts against the flood limit like any other message.
        let pongs = self.conn.transmit();
        let answered = pongs.as_deref().map_or(0, frames_in);
        let rate = self.shared.config.rate;
        if (0..answered).any(|_| !self.bucket.take(rate)) {
            return Err(self.flood());
        }
        self.queue_replies(pongs)?;
        let left = self.conn.buffered();
        // A frame arrived whole if the input shrank (`Ping`s included,
        // which the machine answers without a word to us).
        if left < before {
            self.last_rx = now;
            self.pinged = false;
            self.frame_deadline = None;
        }
        if left == 0 {
            self.frame_deadline = None;
            // Most clients say nothing more for a while.
            self.conn.release();
        } else if !self.backlog && !self.held && self.frame_deadline.is_none() {
            // A frame is under way: it has so long to complete.
            self.frame_deadline = Some(after(now, self.shared.config.frame_timeout));
        }
        Ok(())
    }

    /// Hands encoded relays to the room (refused only once the server is
    /// shutting down: they then reach no one, never some).
    fn relay(&mut self, batch: &mut Relays) {
        if let Some(client) = &self.client {
            self.relayed += client.flush(batch);
        }
    }

    /// The socket has nothing more for now. A client that stalls inside a
    /// frame should not hold the room reserved for the rest of it: keep only
    /// what came. (Done here, not after every read, where under load most
    /// reads end inside a frame and the next read would grow it again.)
    fn trim_input(&mut self) {
        let input = self.conn.input();
        if !input.is_empty() && input.capacity() > 4 * input.len() + 1024 {
            *input = BytesMut::from(&input[..]);
        }
    }

    /// Applies one event from the machine.
    fn dispatch(&mut self, event: Event, batch: &mut Relays) -> Result<(), Close> {
        if !self.bucket.take(self.shared.config.rate) {
            return Err(self.flood());
        }
        match event {
            Event::Message(Message::Pong { .. }) => {}
            Event::Message(
                msg @ (Message::Register { .. }
                | Message::Login { .. }
                | Message::LoginToken { .. }),
            ) => {
                // Answers go after the relays gathered so far.
                self.relay(batch);
                self.attempt(msg)?;
            }
            Event::Message(Message::Logout) => {
                self.relay(batch);
                self.logout()?;
            }
            Event::Message(msg) => self.handle(msg, 0, batch)?,
            Event::Numbered { seq, message } => self.handle(message, seq, batch)?,
            Event::Exit => return Err(Close::Exit),
            Event::Error(reason) => return Err(Close::ClientError(reason)),
            other => debug!(peer = %self.addr, "ignored: {other:?}"),
        }
        Ok(())
    }

    /// Hands one message (`seq`: its number, in a HISTORY session) to the
    /// client's standing in the hub.
    fn handle(&mut self, msg: Message, seq: u64, batch: &mut Relays) -> Result<(), Close> {
        #[cfg(test)]
        if matches!(&msg, Message::Send { text } if text == tests::PANIC) {
            panic!("the test hook asked for a panic");
        }
        let Some(client) = &mut self.client else {
            return Err(Close::Shutdown);
        };
        client
            .handle(&self.shared.scope(), msg, seq, batch)
            .map_err(closed)?;
        if self.named_by.is_some() && !client.naming() {
            self.named();
        }
        Ok(())
    }

    /// The client is named (by its first `Nick`, or a login): no naming
    /// deadline any more, its machine lifts the rules and the limit of the
    /// unnamed, and it counts as open.
    pub(super) fn named(&mut self) {
        self.named_by = None;
        self.conn.named();
        self.opened();
    }

    /// Whether `event` changes what others are told of this client (a
    /// part, a rename) while some of its messages are still on their way.
    fn must_settle(&self, event: &Event) -> bool {
        matches!(
            event,
            Event::Message(Message::Part { .. } | Message::Nick { .. })
        ) && self.client.as_ref().is_some_and(|c| c.peer.in_flight() > 0)
    }

    /// Whether a held session must still wait.
    fn still_held(&self) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        match self.waiting.as_deref() {
            Some(Waiting::Attempt(_)) => true,
            Some(Waiting::Event(_)) => {
                client.peer.in_flight() > 0 || self.shared.holds(&client.peer)
            }
            None => self.shared.holds(&client.peer),
        }
    }

    fn flood(&self) -> Close {
        let rate = self.shared.config.rate;
        Close::Refuse(format!("flood: more than {rate} messages/s"))
    }

    /// Moves the machine's own frames (`Pong`, `Ping`) to the outbox, so
    /// they obey the same bound as relays.
    fn queue_replies(&mut self, frames: Option<Bytes>) -> Result<(), Close> {
        let (Some(bytes), Some(client)) = (frames, &self.client) else {
            return Ok(());
        };
        if client.peer.outbox.push(bytes) {
            Ok(())
        } else {
            Err(Close::Evicted)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
