//! A load generator that drives a running chat server and proves delivery.
//!
//! [`fanout`]: N clients each send M messages; every receiver checks that it
//! got every other client's messages exactly once, in per-sender order, intact
//! and tagged with the right sender address. [`idle`]: K clients connect and
//! sit still, to measure what an idle connection costs the server.
//!
//! Each message's text carries its sender id, sequence number and send time,
//! then a fixed filler (ASCII and Chinese) up to the requested size:
//!
//! ```text
//! 0003:0000002a:00000000075bcd15:聊天abc聊天abc...
//! id   seq      send time (ns)   filler
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chat_proto::{ChatCodec, Message};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Barrier, Notify};
use tokio::task::JoinSet;

/// Bytes of the header at the front of every bench message.
pub const HEADER: usize = 4 + 1 + 8 + 1 + 16 + 1;

/// An error that ends a run early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client could not connect or handshake.
    #[error("client {id}: cannot connect to {addr}: {source}")]
    Connect {
        /// Which client.
        id: usize,
        /// The server address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused or broke the handshake.
    #[error("client {id}: handshake failed: {reason}")]
    Handshake {
        /// Which client.
        id: usize,
        /// What the server said or did.
        reason: String,
    },
    /// The server closed a client's connection during the run.
    #[error("client {id} was disconnected by the server: {reason}")]
    Disconnected {
        /// Which client.
        id: usize,
        /// The server's `Error` reason, or what happened.
        reason: String,
    },
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Options for [`fanout`].
#[derive(Debug, Clone)]
pub struct Fanout {
    /// The server.
    pub server: SocketAddr,
    /// Clients that send and receive.
    pub clients: usize,
    /// Messages each client sends.
    pub messages: usize,
    /// Text size of each message, in bytes (at least [`HEADER`]).
    pub size: usize,
    /// Messages per second per client; `None` sends as fast as possible.
    pub rate: Option<f64>,
    /// Extra clients that connect but never read (expected to be evicted).
    pub stalled: usize,
    /// Most messages a sender may have ahead of its slowest receiver
    /// (0: unlimited). Keeps a full-speed run measuring the server rather than
    /// overflowing every outbox.
    pub window: usize,
    /// Give up when no message arrives for this long.
    pub timeout: Duration,
    /// Print a progress line every second to stderr.
    pub progress: bool,
}

/// What a [`fanout`] run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Clients that sent and received.
    pub clients: usize,
    /// Messages per client.
    pub messages: usize,
    /// Text size.
    pub size: usize,
    /// Deliveries expected: clients × (clients − 1) × messages.
    pub expected: u64,
    /// Deliveries received intact, exactly once, in order.
    pub deliveries: u64,
    /// Seconds from the start signal to the last delivery.
    pub seconds: f64,
    /// Deliveries per second.
    pub rate: f64,
    /// Latency percentiles, microseconds.
    pub latency_us: Latency,
    /// Expected deliveries that never arrived.
    pub losses: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Messages received out of per-sender order.
    pub order_violations: u64,
    /// Messages whose text or sender address was wrong.
    pub corrupt: u64,
    /// Stalled clients the server evicted, out of how many there were.
    pub stalled_evicted: usize,
    /// Stalled clients.
    pub stalled: usize,
    /// Server figures, if its pid was given.
    pub server: Option<ServerCost>,
}

impl FanoutReport {
    /// A run passes when every expected delivery arrived exactly once, in
    /// order and intact.
    pub fn passed(&self) -> bool {
        self.losses == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.corrupt == 0
            && self.deliveries == self.expected
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

/// What the server process spent, read from `/proc`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCost {
    /// CPU seconds (user + system) during the measured interval.
    pub cpu_seconds: f64,
    /// CPU microseconds per delivery (or per connection, for `idle`).
    pub cpu_us_per_unit: f64,
    /// Peak resident set size of the process, KiB.
    pub peak_rss_kib: u64,
    /// Resident set size at the end, KiB.
    pub rss_kib: u64,
}

/// A server process to watch.
#[derive(Debug, Clone, Copy)]
pub struct Proc(pub u32);

impl Proc {
    /// CPU time used by all the process's threads so far.
    pub fn cpu(&self) -> std::io::Result<Duration> {
        // schedstat counts nanoseconds per thread; stat only clock ticks.
        let mut total = 0u64;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.0))? {
            let path = task?.path().join("schedstat");
            if let Ok(s) = std::fs::read_to_string(path) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
        }
        Ok(Duration::from_nanos(total))
    }

    /// `(VmRSS, VmHWM)` in KiB.
    pub fn rss(&self) -> std::io::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    fn cost(&self, cpu_before: Duration, units: u64) -> std::io::Result<ServerCost> {
        let cpu = self.cpu()?.saturating_sub(cpu_before).as_secs_f64();
        let (rss, peak) = self.rss()?;
        Ok(ServerCost {
            cpu_seconds: cpu,
            cpu_us_per_unit: cpu * 1e6 / units.max(1) as f64,
            peak_rss_kib: peak,
            rss_kib: rss,
        })
    }
}

/// The fixed filler after the header, `size - HEADER` bytes of mixed text.
fn filler(size: usize) -> String {
    let mut s = String::with_capacity(size);
    let want = size.saturating_sub(HEADER);
    for c in "聊天abc你好xyz".chars().cycle() {
        if s.len() + c.len_utf8() > want {
            break;
        }
        s.push(c);
    }
    while s.len() < want {
        s.push('.');
    }
    s
}

fn text(id: usize, seq: u32, ts: u64, filler: &str) -> String {
    format!("{id:04x}:{seq:08x}:{ts:016x}:{filler}")
}

/// Parses the header of a bench message: `(id, seq, ts)`.
fn parse(text: &str) -> Option<(usize, u32, u64)> {
    let h = text.get(..HEADER)?.as_bytes();
    if h[4] != b':' || h[13] != b':' || h[30] != b':' {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(text.get(r)?, 16).ok();
    Some((hex(0..4)? as usize, hex(5..13)? as u32, hex(14..30)?))
}

/// One connected, welcomed client.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
    /// Our address as the server sees it (from `Welcome`).
    me: SocketAddr,
}

async fn connect(id: usize, server: SocketAddr, codec: &ChatCodec) -> Result<Conn, Error> {
    let sock = TcpStream::connect(server)
        .await
        .map_err(|source| Error::Connect {
            id,
            addr: server,
            source,
        })?;
    sock.set_nodelay(true)?;
    let (mut rd, mut wr) = sock.into_split();
    let mut buf = BytesMut::new();
    codec
        .encode(&Message::hello(), &mut buf)
        .expect("hello fits any frame");
    wr.write_all(&buf).await?;
    buf.clear();
    let reply = read_one(&mut rd, &mut buf, codec)
        .await
        .map_err(|reason| Error::Handshake { id, reason })?;
    match reply {
        Message::Welcome { ip, port, .. } => Ok(Conn {
            rd,
            wr,
            buf,
            me: SocketAddr::new(ip, port),
        }),
        Message::Error { reason } => Err(Error::Handshake { id, reason }),
        other => Err(Error::Handshake {
            id,
            reason: format!("expected Welcome, got {}", other.name()),
        }),
    }
}

async fn read_one(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    codec: &ChatCodec,
) -> Result<Message, String> {
    loop {
        match codec.decode(buf) {
            Ok(Some(msg)) => return Ok(msg),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Shared state of one fan-out run.
struct Run {
    base: Instant,
    /// Per sender: deliveries of its messages so far, over all receivers.
    got: Vec<AtomicU64>,
    /// Total deliveries, for the progress line.
    total: AtomicU64,
    progress: Notify,
}

/// What one receiver saw.
#[derive(Default)]
struct Tally {
    deliveries: u64,
    duplicates: u64,
    order: u64,
    corrupt: u64,
    last: Option<Instant>,
    hist: Option<Histogram<u64>>,
}

/// Runs the fan-out workload.
///
/// # Errors
///
/// Fails if a client cannot connect or handshake, or if the server
/// disconnects a client that reads (a stalled client's eviction is expected).
pub async fn fanout(opts: &Fanout, server: Option<Proc>) -> Result<FanoutReport, Error> {
    if opts.clients < 2 {
        return Err(Error::Options("fanout needs at least 2 clients".into()));
    }
    if opts.size < HEADER {
        return Err(Error::Options(format!(
            "message size must be at least {HEADER} bytes"
        )));
    }
    let codec = ChatCodec::new();
    // The first client connects alone; once it has seen every other client
    // join, all are registered with the server and the run can start.
    let mut conns = Vec::with_capacity(opts.clients);
    conns.push(connect(0, opts.server, &codec).await?);
    let mut set = JoinSet::new();
    for id in 1..opts.clients + opts.stalled {
        let server = opts.server;
        set.spawn(async move { (id, connect(id, server, &codec).await) });
    }
    let mut rest: Vec<(usize, Conn)> = Vec::new();
    while let Some(r) = set.join_next().await {
        let (id, c) = r.expect("connect task panicked");
        rest.push((id, c?));
    }
    rest.sort_by_key(|(id, _)| *id);
    let mut stalled: Vec<Conn> = Vec::new();
    for (id, c) in rest {
        if id < opts.clients {
            conns.push(c);
        } else {
            stalled.push(c);
        }
    }
    let others = opts.clients + opts.stalled - 1;
    let first = &mut conns[0];
    let mut joined = 0;
    while joined < others {
        match tokio::time::timeout(
            opts.timeout,
            read_one(&mut first.rd, &mut first.buf, &codec),
        )
        .await
        {
            Ok(Ok(Message::Joined { .. })) => joined += 1,
            Ok(Ok(_)) => {}
            Ok(Err(reason)) => return Err(Error::Disconnected { id: 0, reason }),
            Err(_) => {
                return Err(Error::Handshake {
                    id: 0,
                    reason: format!("saw {joined} of {others} joins before timing out"),
                });
            }
        }
    }

    let addrs: Arc<Vec<SocketAddr>> = Arc::new(conns.iter().map(|c| c.me).collect());
    let run = Arc::new(Run {
        base: Instant::now(),
        got: (0..opts.clients).map(|_| AtomicU64::new(0)).collect(),
        total: AtomicU64::new(0),
        progress: Notify::new(),
    });
    let fill: Arc<str> = filler(opts.size).into();
    let paced = opts.rate.is_some();
    let tasks_per_client = if paced { 1 } else { 2 };
    let start = Arc::new(Barrier::new(tasks_per_client * opts.clients + 1));
    let cpu_before = match server {
        Some(p) => Some(p.cpu()?),
        None => None,
    };

    let mut receivers = JoinSet::new();
    let mut senders = JoinSet::new();
    let mut open = Vec::with_capacity(opts.clients);
    let mut paced_out = Vec::new();
    for (id, c) in conns.into_iter().enumerate() {
        let Conn { rd, wr, buf, .. } = c;
        let rd = if paced {
            // Paced sends come from one thread with a precise clock; it
            // writes through a clone of the socket. The tokio write half
            // stays open: dropping it would look like leaving.
            let (rd, wr, std) = clone_for_pacer(rd, wr)?;
            open.push(wr);
            paced_out.push(std);
            rd
        } else {
            let (run3, start3, fill3) = (run.clone(), start.clone(), fill.clone());
            let o = opts.clone();
            senders.spawn(async move { send(id, wr, &o, &run3, &fill3, &start3).await });
            rd
        };
        let (run2, addrs, fill2, start2) =
            (run.clone(), addrs.clone(), fill.clone(), start.clone());
        let o = opts.clone();
        receivers
            .spawn(async move { receive(id, rd, buf, &o, &run2, &addrs, &fill2, &start2).await });
    }
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let evictions = tokio::spawn(watch_stalled(stalled, done, opts.timeout));
    start.wait().await;
    let t0 = Instant::now();
    let ticker = opts.progress.then(|| {
        let run = run.clone();
        let expected = (opts.clients * (opts.clients - 1) * opts.messages) as u64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = run.total.load(Ordering::Relaxed);
                eprintln!(
                    "  {n}/{expected} deliveries, {:.0}/s",
                    n as f64 / t0.elapsed().as_secs_f64()
                );
            }
        })
    });
    let mut keep = Vec::new();
    if let Some(rate) = opts.rate {
        let (o, run, fill) = (opts.clone(), run.clone(), fill.clone());
        let pacer = tokio::task::spawn_blocking(move || pace(paced_out, rate, &o, &run, &fill));
        keep = pacer.await.expect("pacer panicked")?;
    }
    while let Some(r) = senders.join_next().await {
        open.push(r.expect("sender panicked")?);
    }
    let mut total = Tally::default();
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram");
    let mut failure = None;
    while let Some(r) = receivers.join_next().await {
        match r.expect("receiver panicked") {
            Ok(t) => {
                total.deliveries += t.deliveries;
                total.duplicates += t.duplicates;
                total.order += t.order;
                total.corrupt += t.corrupt;
                total.last = total.last.max(t.last);
                if let Some(h) = &t.hist {
                    hist.add(h).expect("same histogram bounds");
                }
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    drop((open, keep));
    let _ = done_tx.send(true);
    let stalled_evicted = evictions.await.expect("watcher panicked");
    if let Some(e) = failure {
        return Err(e);
    }
    let expected = (opts.clients * (opts.clients - 1) * opts.messages) as u64;
    let seconds = total
        .last
        .map_or(0.0, |l| l.duration_since(t0).as_secs_f64());
    let server = match (server, cpu_before) {
        (Some(p), Some(before)) => Some(p.cost(before, total.deliveries)?),
        _ => None,
    };
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(FanoutReport {
        clients: opts.clients,
        messages: opts.messages,
        size: opts.size,
        expected,
        deliveries: total.deliveries,
        seconds,
        rate: total.deliveries as f64 / seconds.max(1e-9),
        latency_us: Latency {
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
            max: hist.max() as f64 / 1000.0,
        },
        losses: expected.saturating_sub(total.deliveries + total.corrupt),
        duplicates: total.duplicates,
        order_violations: total.order,
        corrupt: total.corrupt,
        stalled_evicted,
        stalled: opts.stalled,
        server,
    })
}

/// Splits a connection so that a plain thread can write to it while tokio
/// reads: returns the read half, the (idle) tokio write half and a clone of
/// the socket for writing.
fn clone_for_pacer(
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, std::net::TcpStream), Error> {
    let stream = rd.reunite(wr).map_err(|e| Error::Options(e.to_string()))?;
    let std = stream.into_std()?;
    let clone = std.try_clone()?;
    let (rd, wr) = TcpStream::from_std(std)?.into_split();
    Ok((rd, wr, clone))
}

/// Sends every client's messages at `rate` per client from one thread, the
/// clients' turns spread evenly over each period, as independent people's
/// would be. tokio's timers tick in whole milliseconds, which would bunch
/// the sends up and measure the bunching rather than the server.
fn pace(
    mut streams: Vec<std::net::TcpStream>,
    rate: f64,
    opts: &Fanout,
    run: &Run,
    fill: &str,
) -> Result<Vec<std::net::TcpStream>, Error> {
    use std::io::Write;
    let codec = ChatCodec::new();
    let period = Duration::from_secs_f64(1.0 / rate);
    let n = streams.len();
    let t0 = Instant::now();
    let mut buf = BytesMut::new();
    for seq in 0..opts.messages as u32 {
        for (id, stream) in streams.iter_mut().enumerate() {
            let at = t0 + period * seq + period.mul_f64(id as f64 / n as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let ts = run.base.elapsed().as_nanos() as u64;
            let msg = Message::Send {
                text: text(id, seq, ts, fill),
            };
            buf.clear();
            codec
                .encode(&msg, &mut buf)
                .map_err(|e| Error::Options(e.to_string()))?;
            let mut rest = &buf[..];
            while !rest.is_empty() {
                // The socket is non-blocking (tokio reads the other handle).
                match stream.write(rest) {
                    Ok(k) => rest = &rest[k..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(streams)
}

/// Sends this client's messages as fast as the window allows.
async fn send(
    id: usize,
    mut wr: OwnedWriteHalf,
    opts: &Fanout,
    run: &Run,
    fill: &str,
    start: &Barrier,
) -> Result<OwnedWriteHalf, Error> {
    let codec = ChatCodec::new();
    let receivers = (opts.clients - 1) as u64;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    start.wait().await;
    for seq in 0..opts.messages as u32 {
        if opts.window > 0 {
            // Wait until the slowest receiver is within the window of us.
            let floor = (u64::from(seq).saturating_sub(opts.window as u64)) * receivers;
            while run.got[id].load(Ordering::Acquire) < floor {
                if !buf.is_empty() {
                    wr.write_all(&buf).await?;
                    buf.clear();
                }
                let wake = run.progress.notified();
                if run.got[id].load(Ordering::Acquire) >= floor {
                    break;
                }
                wake.await;
            }
        }
        let ts = run.base.elapsed().as_nanos() as u64;
        let msg = Message::Send {
            text: text(id, seq, ts, fill),
        };
        codec
            .encode(&msg, &mut buf)
            .map_err(|e| Error::Options(e.to_string()))?;
        if buf.len() >= 32 * 1024 {
            wr.write_all(&buf).await?;
            buf.clear();
        }
    }
    wr.write_all(&buf).await?;
    // The caller keeps the write half open: closing it would look like leaving.
    Ok(wr)
}

/// Reads until every other client's messages have arrived, checking each.
#[allow(clippy::too_many_arguments)]
async fn receive(
    id: usize,
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    opts: &Fanout,
    run: &Run,
    addrs: &[SocketAddr],
    fill: &str,
    start: &Barrier,
) -> Result<Tally, Error> {
    let codec = ChatCodec::new();
    let expected = ((opts.clients - 1) * opts.messages) as u64;
    let mut next = vec![0u32; opts.clients];
    let mut batch = vec![0u64; opts.clients];
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram");
    let mut t = Tally::default();
    buf.reserve(256 * 1024);
    start.wait().await;
    while t.deliveries + t.corrupt < expected {
        // Everything in one read arrived at the same moment: one clock read.
        let now = run.base.elapsed().as_nanos() as u64;
        loop {
            let msg = match codec.decode(&mut buf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::Disconnected {
                        id,
                        reason: format!("bad frame: {e}"),
                    });
                }
            };
            match msg {
                Message::Relay { ip, port, text } => {
                    let Some((from, seq, ts)) = parse(&text) else {
                        t.corrupt += 1;
                        continue;
                    };
                    if from >= opts.clients
                        || from == id
                        || addrs[from] != SocketAddr::new(ip, port)
                        || &text[HEADER..] != fill
                    {
                        t.corrupt += 1;
                        continue;
                    }
                    let want = next[from];
                    if seq < want {
                        t.duplicates += 1;
                        continue;
                    }
                    if seq > want {
                        t.order += 1;
                    }
                    next[from] = seq + 1;
                    t.deliveries += 1;
                    batch[from] += 1;
                    hist.saturating_record(now.saturating_sub(ts).max(1));
                }
                Message::Error { reason } => return Err(Error::Disconnected { id, reason }),
                Message::Exit => {
                    return Err(Error::Disconnected {
                        id,
                        reason: "server sent Exit".into(),
                    });
                }
                Message::Ping { nonce } => {
                    // The write half belongs to the sender; a bench run is far
                    // shorter than any idle timeout, so pings need no answer.
                    let _ = nonce;
                }
                _ => {}
            }
        }
        // Publish progress once per read, not once per message.
        let mut n = 0;
        for (from, b) in batch.iter_mut().enumerate() {
            if *b > 0 {
                run.got[from].fetch_add(*b, Ordering::Release);
                n += *b;
                *b = 0;
            }
        }
        if n > 0 {
            run.total.fetch_add(n, Ordering::Relaxed);
            run.progress.notify_waiters();
            t.last = Some(Instant::now());
        }
        if t.deliveries + t.corrupt >= expected {
            break;
        }
        match tokio::time::timeout(opts.timeout, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) => {
                return Err(Error::Disconnected {
                    id,
                    reason: "server closed the connection".into(),
                });
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::Disconnected {
                    id,
                    reason: e.to_string(),
                });
            }
            // No progress for the whole timeout: report what arrived.
            Err(_) => break,
        }
    }
    t.hist = Some(hist);
    Ok(t)
}

/// Waits for the server to evict each stalled client; returns how many were.
async fn watch_stalled(
    stalled: Vec<Conn>,
    done: tokio::sync::watch::Receiver<bool>,
    timeout: Duration,
) -> usize {
    let mut set = JoinSet::new();
    for c in stalled {
        let mut done = done.clone();
        set.spawn(async move {
            // Never read until the run is over, then look for the end: an
            // eviction shows as `Error` then EOF, or a reset.
            let Conn { mut rd, wr, .. } = c;
            let _keep = wr;
            let _ = done.wait_for(|d| *d).await;
            let mut sink = vec![0u8; 64 * 1024];
            loop {
                match tokio::time::timeout(timeout, rd.read(&mut sink)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => {}
                    Err(_) => return false,
                }
            }
        });
    }
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        n += usize::from(r.unwrap_or(false));
    }
    n
}

/// Options for [`idle`].
#[derive(Debug, Clone)]
pub struct Idle {
    /// The server.
    pub server: SocketAddr,
    /// Connections to open and hold.
    pub connections: usize,
    /// Connections handshaking at once.
    pub parallel: usize,
    /// How long to hold them once all are open.
    pub hold: Duration,
    /// Whether the server announces joins (its default). If so, every client
    /// reads the K(K-1)/2 notices and the measurement starts once all have
    /// arrived; if not, it starts as soon as all are connected.
    pub presence: bool,
}

/// What an [`idle`] run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Connections held.
    pub connections: usize,
    /// Seconds to open them all.
    pub connect_seconds: f64,
    /// Seconds until every join notice had arrived.
    pub settle_seconds: f64,
    /// Server RSS before, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server RSS with all connections held, KiB.
    pub rss_after_kib: Option<u64>,
    /// Server RSS added per connection, bytes.
    pub rss_per_connection: Option<f64>,
    /// Server CPU for the whole run.
    pub server: Option<ServerCost>,
}

/// Opens and holds idle connections.
///
/// # Errors
///
/// Fails if any connection cannot be made or is closed by the server.
pub async fn idle(opts: &Idle, server: Option<Proc>) -> Result<IdleReport, Error> {
    let before = match server {
        Some(p) => Some((p.rss()?.0, p.cpu()?)),
        None => None,
    };
    let t0 = Instant::now();
    let codec = ChatCodec::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1)));
    let mut set = JoinSet::new();
    for id in 0..opts.connections {
        let (gate, server) = (gate.clone(), opts.server);
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            connect(id, server, &codec).await
        });
    }
    let mut held = Vec::with_capacity(opts.connections);
    while let Some(r) = set.join_next().await {
        held.push(r.expect("connect task panicked")?);
    }
    let connect_seconds = t0.elapsed().as_secs_f64();
    // Every join is announced to the clients already there: K(K-1)/2 notices
    // in all. Read them (a client that did not would be a slow consumer) and
    // measure once they have all arrived, when the outboxes are empty again.
    let k = opts.connections as u64;
    let expected = if opts.presence { k * (k - 1) / 2 } else { 0 };
    let notices = Arc::new(AtomicU64::new(0));
    let settled = Arc::new(Notify::new());
    let mut readers = JoinSet::new();
    for (id, mut c) in held.into_iter().enumerate() {
        let (notices, settled) = (notices.clone(), settled.clone());
        readers.spawn(async move {
            loop {
                match read_one(&mut c.rd, &mut c.buf, &codec).await {
                    Ok(Message::Joined { .. }) => {
                        if notices.fetch_add(1, Ordering::Relaxed) + 1 == expected {
                            settled.notify_one();
                        }
                    }
                    Ok(Message::Ping { nonce }) => {
                        let mut b = BytesMut::new();
                        codec
                            .encode(&Message::Pong { nonce }, &mut b)
                            .expect("pong fits");
                        if let Err(e) = c.wr.write_all(&b).await {
                            return (id, e.to_string());
                        }
                    }
                    Ok(Message::Error { reason }) => return (id, reason),
                    Ok(_) => {}
                    Err(reason) => return (id, reason),
                }
            }
        });
    }
    if expected == 0 {
        settled.notify_one();
    }
    let wait = tokio::time::timeout(opts.hold.max(Duration::from_secs(30)), settled.notified());
    tokio::select! {
        r = wait => if r.is_err() {
            return Err(Error::Options(format!(
                "only {} of {expected} join notices arrived (is the server's presence setting the same as ours?)",
                notices.load(Ordering::Relaxed),
            )));
        },
        Some(r) = readers.join_next() => {
            let (id, reason) = r.expect("reader panicked");
            return Err(Error::Disconnected { id, reason });
        }
    }
    let settle_seconds = t0.elapsed().as_secs_f64() - connect_seconds;
    let mut after = None;
    let hold = tokio::time::sleep(opts.hold);
    tokio::pin!(hold);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = &mut hold => break,
            _ = tick.tick() => {
                if let Some(p) = server {
                    after = after.max(Some(p.rss()?.0));
                }
            }
            Some(r) = readers.join_next() => {
                let (id, reason) = r.expect("reader panicked");
                return Err(Error::Disconnected { id, reason });
            }
        }
    }
    readers.abort_all();
    let cost = match (server, before) {
        (Some(p), Some((_, cpu))) => Some(p.cost(cpu, opts.connections as u64)?),
        _ => None,
    };
    let rss_before = before.map(|b| b.0);
    Ok(IdleReport {
        connections: opts.connections,
        connect_seconds,
        settle_seconds,
        rss_before_kib: rss_before,
        rss_after_kib: after,
        rss_per_connection: rss_before
            .zip(after)
            .map(|(b, a)| (a.saturating_sub(b) * 1024) as f64 / opts.connections as f64),
        server: cost,
    })
}

impl fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fanout: {} clients x {} messages x {} B",
            self.clients, self.messages, self.size
        )?;
        writeln!(
            f,
            "  deliveries        {} of {}",
            self.deliveries, self.expected
        )?;
        writeln!(f, "  seconds           {:.3}", self.seconds)?;
        writeln!(f, "  deliveries/s      {:.0}", self.rate)?;
        let l = &self.latency_us;
        writeln!(
            f,
            "  latency us        p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
            l.p50, l.p99, l.p999, l.max
        )?;
        writeln!(f, "  losses            {}", self.losses)?;
        writeln!(f, "  duplicates        {}", self.duplicates)?;
        writeln!(f, "  order violations  {}", self.order_violations)?;
        writeln!(f, "  corrupt           {}", self.corrupt)?;
        if self.stalled > 0 {
            writeln!(
                f,
                "  stalled evicted   {} of {}",
                self.stalled_evicted, self.stalled
            )?;
        }
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  server cpu        {:.3} s, {:.4} us/delivery",
                s.cpu_seconds, s.cpu_us_per_unit
            )?;
            writeln!(
                f,
                "  server rss        {} KiB now, {} KiB peak",
                s.rss_kib, s.peak_rss_kib
            )?;
        }
        write!(
            f,
            "  result            {}",
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "idle: {} connections", self.connections)?;
        writeln!(f, "  connect seconds   {:.3}", self.connect_seconds)?;
        writeln!(f, "  settle seconds    {:.3}", self.settle_seconds)?;
        if let (Some(b), Some(a)) = (self.rss_before_kib, self.rss_after_kib) {
            writeln!(
                f,
                "  server rss        {b} KiB before, {a} KiB with all held"
            )?;
        }
        if let Some(p) = self.rss_per_connection {
            writeln!(f, "  rss/connection    {:.0} B ({:.2} KiB)", p, p / 1024.0)?;
        }
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  server cpu        {:.3} s, peak rss {} KiB",
                s.cpu_seconds, s.peak_rss_kib
            )?;
        }
        Ok(())
    }
}
