//! One task per client: it owns the socket, reads and writes it, and is the
//! only thing that ever touches it.
//!
//! The task waits on whichever comes first: bytes to read, room in the socket
//! for queued output, new frames in its outbox, its idle timer, an eviction
//! (slow consumer) or the server's shutdown. Reads and writes use tokio's
//! readiness API (`readable`/`try_read_buf`, `writable`/`try_write_vectored`)
//! so a read and a pending write never block each other and no buffer lives
//! across an `.await` that is not needed: an idle session holds no read
//! buffer and no write queue.
//!
//! Output is a queue of shared [`Bytes`] written with one vectored write per
//! wake-up, however many frames are queued. Input is decoded in place; the
//! relays of all `Send`s that arrived in one read are encoded back to back
//! into one buffer and handed to the room once, so the fan-out cost is paid
//! per read, not per message.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use chat_proto::{ChatCodec, DecodeError, Message, VERSION, features};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::room::{Outbox, Peer, Room};

/// Bytes reserved for a read when the read buffer is empty.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes reserved for a read during the handshake: a `Hello` is 7 bytes, and
/// thousands of clients connecting at once should not each touch 16 KiB.
const HELLO_CHUNK: usize = 64;
/// Relays are sent on once their batch reaches this size.
const BATCH_BYTES: usize = 64 * 1024;
/// Most buffers written by one vectored write (and held out of the outbox).
const MAX_IOV: usize = 64;
/// Vectored writes in a row before the session yields to other tasks.
const FLUSH_ROUNDS: usize = 16;

/// Why a flush stopped early.
enum Flush {
    Evicted,
    Gone(io::Error),
    /// Still more to write after `FLUSH_ROUNDS`: yield, then go on.
    Busy,
}

/// What every session shares: limits, codecs, the room, the stop signal.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) room: Room,
    /// Decodes what clients send: at most `config.client_max_frame()`.
    pub(crate) inbound: ChatCodec,
    /// Encodes what the server sends: at most `config.max_frame_len`.
    pub(crate) outbound: ChatCodec,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
    next_id: AtomicU64,
}

impl Shared {
    /// `config` must have been validated.
    pub(crate) fn new(config: Config, shutdown: CancellationToken) -> Self {
        let codec = |len| ChatCodec::with_max_frame_len(len).expect("validated by Config");
        Shared {
            inbound: codec(config.client_max_frame()),
            outbound: codec(config.max_frame_len),
            config,
            room: Room::default(),
            shutdown,
            next_id: AtomicU64::new(1),
        }
    }

    /// Encodes a server message of the server's own making (never a relay).
    /// All fit the smallest frame limit but an `Error` with a long reason,
    /// which is cut to fit.
    fn frame(&self, msg: &Message) -> Bytes {
        match (self.outbound.frame(msg), msg) {
            (Ok(frame), _) => frame.into_bytes(),
            (Err(_), Message::Error { reason }) => {
                let mut end = self.config.max_frame_len - 16;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                self.frame(&error(&reason[..end]))
            }
            (Err(e), _) => unreachable!("a {} never exceeds the frame limit: {e}", msg.name()),
        }
    }
}

/// Serves one accepted client until it leaves, then closes its socket.
pub(crate) async fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let mut session = Session::new(shared, stream, addr, Some(permit));
    let close = match session.handshake().await {
        Ok(()) => session.serve().await,
        Err(close) => close,
    };
    session.finish(close).await;
}

/// Tells a client the server is full, and closes.
pub(crate) async fn reject(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let session = Session::new(shared, stream, addr, None);
    session
        .finish(Close::Refuse("server full".to_owned()))
        .await;
}

/// Why a session ends.
#[derive(Debug)]
enum Close {
    /// The client closed its socket between frames.
    Eof,
    /// The socket failed (reset, broken pipe, ...).
    Gone(io::Error),
    /// The client sent `Exit`.
    Exit,
    /// The client sent `Error` and is going away.
    ClientError(String),
    /// The server is shutting down.
    Shutdown,
    /// The outbox overflowed: slow consumer.
    Evicted,
    /// The client broke a rule: tell it why, then close.
    Refuse(String),
}

/// The outgoing bytes taken from the outbox but not yet written.
#[derive(Debug, Default)]
struct Out {
    queue: Vec<Bytes>,
    /// The front buffer has been partly written: it must be finished before
    /// anything else goes out, or the peer would see a cut frame.
    partial: bool,
}

impl Out {
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Writes as much as the socket takes now. `Ok(true)` once all is written.
    fn write(&mut self, stream: &TcpStream) -> io::Result<bool> {
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = self.queue.len().min(MAX_IOV);
            for (slice, buf) in slices.iter_mut().zip(&self.queue) {
                *slice = IoSlice::new(buf);
            }
            match stream.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn advance(&mut self, mut written: usize) {
        let done = self
            .queue
            .iter()
            .take_while(|buf| {
                let whole = written >= buf.len();
                if whole {
                    written -= buf.len();
                }
                whole
            })
            .count();
        self.queue.drain(..done);
        if done > 0 {
            self.partial = false;
        }
        if written > 0 {
            self.queue[0].advance(written);
            self.partial = true;
        }
    }

    /// Drops everything queued except the rest of a partly written frame.
    fn discard(&mut self) {
        let keep = usize::from(self.partial);
        self.queue.truncate(keep);
    }
}

/// Token bucket for flood control.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(config: &Config, now: Instant) -> Self {
        let burst = f64::from(config.burst.max(1));
        Bucket {
            rate: f64::from(config.rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + secs * self.rate).min(self.burst);
        self.last = now;
    }

    fn take(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What woke the session up.
enum Event {
    Shutdown,
    Evicted,
    Writable(io::Result<()>),
    Queued,
    Readable(io::Result<()>),
    Timer,
}

struct Session {
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    id: u64,
    rbuf: BytesMut,
    out: Out,
    /// Present while the client counts against `max_clients`.
    permit: Option<OwnedSemaphorePermit>,
    /// Set once welcomed: the client is in the room.
    peer: Option<Link>,
    bucket: Bucket,
    last_rx: Instant,
    pinged: bool,
    nonce: u64,
}

/// A welcomed session's end of its outbox.
struct Link {
    outbox: Arc<Outbox>,
}

impl Session {
    fn new(
        shared: Arc<Shared>,
        stream: TcpStream,
        addr: SocketAddr,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        // Peers see the address in its plain form, not IPv4-mapped IPv6.
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        // Relays must go out at once; batching is done by the writer.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(peer = %addr, "cannot set TCP_NODELAY: {e}");
        }
        let now = Instant::now();
        Session {
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            bucket: Bucket::new(&shared.config, now),
            shared,
            stream,
            addr,
            rbuf: BytesMut::new(),
            out: Out::default(),
            permit,
            peer: None,
            last_rx: now,
            pinged: false,
            nonce: 0,
        }
    }

    /// Reads once into the read buffer. `Ok(None)`: nothing to read after all.
    fn read(&mut self, chunk: usize) -> io::Result<Option<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < chunk / 4 {
            self.rbuf.reserve(chunk);
        }
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(n) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                // A readiness wake-up can be stale (tokio clears it only on
                // WouldBlock): don't keep a buffer reserved for nothing, or
                // every idle connection would hold one.
                self.release_rbuf();
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// After a read returned 0: a clean end, or a frame cut short.
    fn eof(&mut self) -> Close {
        match self.shared.inbound.decode_eof(&mut self.rbuf) {
            Ok(None) => Close::Eof,
            Ok(Some(_)) => unreachable!("complete frames are decoded before reading on"),
            Err(e) => bad_frame(&e),
        }
    }

    /// Waits for `Hello` and answers `Welcome`, then joins the room.
    async fn handshake(&mut self) -> Result<(), Close> {
        let deadline = Instant::now() + self.shared.config.handshake_timeout;
        loop {
            if let Some(head) = self.rbuf.get(..4) {
                if is_http(head) {
                    return Err(Close::Refuse(
                        "this is a chat server, not an HTTP server".into(),
                    ));
                }
            }
            match self.shared.inbound.decode(&mut self.rbuf) {
                Ok(None) => {}
                Ok(Some(Message::Hello { version: 0, .. })) => {
                    return Err(Close::Refuse(format!(
                        "unsupported protocol version 0 (this server speaks 1..={VERSION})"
                    )));
                }
                Ok(Some(Message::Hello { version, features })) => {
                    self.welcome(version.min(VERSION), features & features::ALL);
                    return Ok(());
                }
                Ok(Some(other)) => {
                    return Err(Close::Refuse(format!(
                        "expected Hello first, got {}",
                        other.name()
                    )));
                }
                Err(e) => return Err(bad_frame(&e)),
            }
            tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => return Err(Close::Shutdown),
                () = sleep_until(deadline) => {
                    return Err(Close::Refuse("handshake timeout".into()));
                }
                ready = self.stream.readable() => {
                    ready.map_err(Close::Gone)?;
                    match self.read(HELLO_CHUNK).map_err(Close::Gone)? {
                        Some(0) => return Err(self.eof()),
                        _ => continue,
                    }
                }
            }
        }
    }

    fn welcome(&mut self, version: u16, features: u64) {
        let (ip, port) = (self.addr.ip(), self.addr.port());
        let max_frame = u32::try_from(self.shared.config.client_max_frame()).unwrap_or(u32::MAX);
        let welcome = Message::Welcome {
            version,
            features,
            max_frame,
            ip,
            port,
        };
        // Queued before joining, so it precedes anything the room sends.
        self.out.queue.push(self.shared.frame(&welcome));
        let config = &self.shared.config;
        let outbox = Arc::new(Outbox::new(config.outbox_depth, config.outbox_bytes));
        self.shared.room.join(Peer {
            id: self.id,
            outbox: outbox.clone(),
        });
        self.peer = Some(Link { outbox });
        if self.shared.config.presence {
            let joined = self.shared.frame(&Message::Joined { ip, port });
            self.shared.room.announce(&joined, Some(self.id));
        }
        let peers = self.shared.room.len();
        info!(peer = %self.addr, version, peers, "client connected");
        self.last_rx = Instant::now();
        // Most clients say nothing more for a while.
        self.release_rbuf();
    }

    /// An idle connection holds no read buffer: drop it once it is empty.
    fn release_rbuf(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
    }

    /// The welcomed client's life: relay, answer, watch the clock.
    async fn serve(&mut self) -> Close {
        let idle = self.shared.config.idle_timeout;
        let timer = sleep_until(self.last_rx + idle / 2);
        tokio::pin!(timer);
        // Frames pipelined behind the Hello.
        if !self.rbuf.is_empty() {
            if let Err(close) = self.process() {
                return close;
            }
        }
        let Some(outbox) = self.peer.as_ref().map(|link| link.outbox.clone()) else {
            unreachable!("serve runs after the handshake")
        };
        // Futures that wait on a `Notify` are made once and kept across
        // iterations: re-creating them on every wake-up would register and
        // unregister with each notifier every time, a cost paid per delivery.
        let token = self.shared.shutdown.clone();
        let shutdown = token.cancelled();
        let evicted = outbox.evicted();
        let ready = outbox.ready();
        tokio::pin!(shutdown, evicted, ready);
        loop {
            // Write what is queued until the socket is full or nothing is
            // left. When this ends with nothing to write, the outbox was
            // empty at the last look, so any later push wakes `ready`.
            let busy = match self.flush(&outbox) {
                Ok(()) => false,
                Err(Flush::Evicted) => return Close::Evicted,
                Err(Flush::Gone(e)) => return Close::Gone(e),
                Err(Flush::Busy) => {
                    tokio::task::yield_now().await;
                    true
                }
            };
            // Unbiased: with a busy outbox and a busy socket, reading and
            // writing must both get their turn. A busy flush may have left
            // frames in the outbox without a wake-up pending: go round again.
            let event = tokio::select! {
                () = &mut shutdown => Event::Shutdown,
                () = &mut evicted => Event::Evicted,
                ready = self.stream.writable(), if !self.out.is_empty() => Event::Writable(ready),
                () = &mut ready, if self.out.is_empty() && !busy => {
                    ready.set(outbox.ready());
                    Event::Queued
                }
                () = std::future::ready(()), if self.out.is_empty() && busy => Event::Queued,
                ready = self.stream.readable() => Event::Readable(ready),
                () = &mut timer, if !idle.is_zero() => Event::Timer,
            };
            match event {
                Event::Shutdown => return Close::Shutdown,
                Event::Evicted => return Close::Evicted,
                Event::Writable(Err(e)) | Event::Readable(Err(e)) => return Close::Gone(e),
                Event::Writable(Ok(())) | Event::Queued => {}
                Event::Readable(Ok(())) => match self.read(READ_CHUNK) {
                    Err(e) => return Close::Gone(e),
                    Ok(None) => {}
                    Ok(Some(0)) => return self.eof(),
                    Ok(Some(_)) => {
                        if let Err(close) = self.process() {
                            return close;
                        }
                    }
                },
                Event::Timer => {
                    let now = Instant::now();
                    let silent = now.saturating_duration_since(self.last_rx);
                    if silent >= idle {
                        return Close::Refuse("idle timeout".into());
                    }
                    let next = if silent >= idle / 2 && !self.pinged {
                        self.pinged = true;
                        self.nonce += 1;
                        let ping = self.shared.frame(&Message::Ping { nonce: self.nonce });
                        debug!(peer = %self.addr, "silent for {silent:?}: ping");
                        if !self.enqueue(ping) {
                            return Close::Evicted;
                        }
                        self.last_rx + idle
                    } else if self.pinged {
                        self.last_rx + idle
                    } else {
                        self.last_rx + idle / 2
                    };
                    timer.as_mut().reset(next);
                }
            }
        }
    }

    /// Moves queued frames from the outbox to the socket until the socket
    /// would block or both are empty. Gives up the turn after a while so a
    /// client with a never-ending stream of relays cannot starve the others.
    fn flush(&mut self, outbox: &Outbox) -> Result<(), Flush> {
        for _ in 0..FLUSH_ROUNDS {
            let room = MAX_IOV.saturating_sub(self.out.queue.len());
            if room > 0 {
                outbox
                    .drain_into(&mut self.out.queue, room)
                    .map_err(|_| Flush::Evicted)?;
            }
            if self.out.is_empty() {
                // Nothing left to send: the session is about to wait, so give
                // the queue's memory back (not after every write, which would
                // reallocate it on every round under load).
                self.out.queue = Vec::new();
                return Ok(());
            }
            match self.out.write(&self.stream) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(Flush::Gone(e)),
            }
        }
        Err(Flush::Busy)
    }

    /// Queues a reply to this client through its own outbox, so replies
    /// obey the same bound as relays. False if the outbox is full.
    fn enqueue(&mut self, frame: Bytes) -> bool {
        match &self.peer {
            Some(link) => link.outbox.push(frame),
            None => {
                self.out.queue.push(frame);
                true
            }
        }
    }

    /// Handles every complete frame in the read buffer.
    fn process(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        self.last_rx = now;
        self.pinged = false;
        self.bucket.refill(now);
        let mut batch = BytesMut::new();
        let result = self.decode_all(&mut batch);
        if !batch.is_empty() {
            self.shared.room.broadcast(self.id, &batch.freeze());
        }
        self.release_rbuf();
        result
    }

    fn decode_all(&mut self, batch: &mut BytesMut) -> Result<(), Close> {
        loop {
            let msg = match self.shared.inbound.decode(&mut self.rbuf) {
                Ok(Some(msg)) => msg,
                Ok(None) => return Ok(()),
                Err(e) => return Err(bad_frame(&e)),
            };
            if !self.bucket.take() {
                let rate = self.shared.config.rate;
                return Err(Close::Refuse(format!("flood: more than {rate} messages/s")));
            }
            match msg {
                Message::Send { text } => {
                    debug!(peer = %self.addr, len = text.len(), "send");
                    let relay = Message::relay(self.addr, text);
                    // The inbound limit leaves room for the relay's header.
                    if let Err(e) = self.shared.outbound.encode(&relay, batch) {
                        return Err(Close::Refuse(format!("message too long: {e}")));
                    }
                    if batch.len() >= BATCH_BYTES {
                        self.shared.room.broadcast(self.id, &batch.split().freeze());
                    }
                }
                Message::Ping { nonce } => {
                    let pong = self.shared.frame(&Message::Pong { nonce });
                    if !self.enqueue(pong) {
                        return Err(Close::Evicted);
                    }
                }
                Message::Pong { .. } => {}
                Message::Exit => return Err(Close::Exit),
                Message::Error { reason } => return Err(Close::ClientError(reason)),
                Message::Hello { .. } => {
                    return Err(Close::Refuse(
                        "protocol violation: Hello after the handshake".into(),
                    ));
                }
                other => {
                    return Err(Close::Refuse(format!(
                        "protocol violation: clients may not send {}",
                        other.name()
                    )));
                }
            }
        }
    }

    /// Leaves the room, says goodbye as the reason requires, and closes.
    async fn finish(mut self, close: Close) {
        let addr = self.addr;
        let shutting_down = matches!(close, Close::Shutdown);
        let mut link = self.peer.take();
        if let Some(link) = &mut link {
            self.shared.room.leave(self.id);
            link.outbox.close();
        }
        // A leaving client no longer counts against the limit.
        self.permit.take();
        if link.is_some() && !shutting_down && self.shared.config.presence {
            let left = self.shared.frame(&Message::Left {
                ip: addr.ip(),
                port: addr.port(),
            });
            self.shared.room.announce(&left, None);
        }
        let config = &self.shared.config;
        let (goodbye, budget) = match close {
            Close::Eof => {
                info!(peer = %addr, "client disconnected");
                return;
            }
            Close::Gone(e) => {
                info!(peer = %addr, "client connection lost: {e}");
                return;
            }
            Close::ClientError(reason) => {
                info!(peer = %addr, "client left with an error: {reason}");
                return;
            }
            Close::Exit | Close::Shutdown => {
                // Deliver everything already queued for the client, then Exit.
                if let Some(link) = &link {
                    // Evicted meanwhile: what is queued was discarded.
                    let _ = link.outbox.drain_into(&mut self.out.queue, usize::MAX);
                }
                let budget = if shutting_down {
                    debug!(peer = %addr, "shutting down: sending Exit");
                    config.shutdown_grace
                } else {
                    info!(peer = %addr, "client exited");
                    config.close_timeout
                };
                (Message::Exit, budget)
            }
            Close::Evicted => {
                warn!(peer = %addr, "slow consumer evicted");
                self.out.discard();
                (error("slow consumer"), config.close_timeout)
            }
            Close::Refuse(reason) => {
                warn!(peer = %addr, "closing: {reason}");
                self.out.discard();
                (error(&reason), config.close_timeout)
            }
        };
        drop(link);
        self.out.queue.push(self.shared.frame(&goodbye));
        let deadline = Instant::now() + budget;
        match timeout_at(deadline, self.goodbye()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(peer = %addr, "goodbye not delivered: {e}"),
            Err(_) => debug!(peer = %addr, "goodbye not delivered in {budget:?}"),
        }
    }

    /// Flushes the queue, half-closes, and waits for the client to close its
    /// end, discarding what it sends: closing a socket with unread input
    /// would reset the connection and could destroy the final frame in flight.
    async fn goodbye(&mut self) -> io::Result<()> {
        while !self.out.write(&self.stream)? {
            self.stream.writable().await?;
        }
        self.stream.shutdown().await?;
        let mut discarded = 0usize;
        loop {
            self.stream.readable().await?;
            self.rbuf.clear();
            match self.read(READ_CHUNK)? {
                Some(0) => return Ok(()),
                Some(n) => discarded += n,
                None => {}
            }
            if discarded > self.shared.config.max_frame_len * 16 {
                return Ok(()); // enough politeness
            }
        }
    }
}

fn error(reason: &str) -> Message {
    Message::Error {
        reason: reason.to_owned(),
    }
}

fn bad_frame(e: &DecodeError) -> Close {
    Close::Refuse(format!("invalid frame: {e}"))
}

/// Whether a stream starts with an HTTP method, as a browser or curl would.
fn is_http(head: &[u8]) -> bool {
    const METHODS: [&[u8; 4]; 10] = [
        b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI ",
    ];
    METHODS.iter().any(|m| head == &m[..])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn out_advance_tracks_partial_frames() {
        let mut out = Out {
            queue: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")],
            partial: false,
        };
        out.advance(4);
        assert!(out.partial);
        assert_eq!(out.queue, vec![Bytes::from_static(b"efg")]);
        out.queue.push(Bytes::from_static(b"h"));
        out.discard();
        assert_eq!(out.queue, vec![Bytes::from_static(b"efg")]);
        out.advance(3);
        assert!(!out.partial);
        assert!(out.queue.is_empty());
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let config = Config {
            rate: 10,
            burst: 3,
            ..Config::default()
        };
        let t0 = Instant::now();
        let mut b = Bucket::new(&config, t0);
        assert!((0..3).all(|_| b.take()));
        assert!(!b.take());
        b.refill(t0 + Duration::from_millis(100));
        assert!(b.take());
        assert!(!b.take());
    }

    #[test]
    fn http_is_recognised() {
        assert!(is_http(b"GET "));
        assert!(is_http(b"POST"));
        assert!(!is_http(&[0, 0, 0, 5]));
    }
}
