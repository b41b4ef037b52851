//! The fan-out workload: N clients each send M messages; every receiver
//! checks that it got every other client's messages exactly once, in
//! per-sender order, intact and (from the chat server, which tags each
//! delivery) with the right sender address.
//!
//! **Rooms.** Who hears whom is a [`Plan`]: for `fanout` one room holding
//! everyone (version 1 `Send`s); for `rooms`, named rooms (the ROOMS
//! capability), each client in a few, saying its messages in them in turn.
//! A receiver then expects from each sender exactly the messages said in
//! the rooms they share, checks that each `Said` names the room and the
//! sender it should, and counts a delivery it should not have got apart
//! (`misdirected`). Every receiver's count is compared with what its rooms
//! make. Only some of the clients may send (`rooms --senders`): the others
//! only receive, checked the same way.
//!
//! **Systems.** The workload is written once over [`Peer`], the protocol
//! adapter of `crate::system`: our chat server, NATS or Redis, in one room
//! or in the plan's rooms (NATS subjects, Redis channels). The sender of a
//! delivery is the one its payload names. A system that echoes a
//! client's own messages (Redis) has them counted apart, as
//! `self_deliveries`: neither deliveries nor duplicates.
//!
//! One task per client owns its socket and its protocol machine, and both
//! sends and receives (`TcpStream::ready` over both directions), so the
//! machine sees the whole conversation and answers the server's `Ping`s.
//!
//! **Window.** With `window = W > 0`, sender `s` sends its message `q` only
//! once every other client has received all of `s`'s messages before
//! `q - W`: no sender is ever more than `W` messages ahead of its slowest
//! receiver. That keeps a full-speed run measuring the server rather than
//! overflowing outboxes. Receivers publish, per read, how many of each
//! sender's messages they have taken, and wake the senders concerned. A
//! sender at full speed that has reached its window resumes once there is
//! room for a batch (a quarter of the window, or 32 KiB of messages if
//! less), so that its writes stay large.
//!
//! **Pacing.** With a rate, one thread with a precise clock decides when
//! each client may send its next message (the clients' turns spread evenly
//! over each period, as independent people's would be: tokio's timers tick
//! in whole milliseconds, which would bunch the sends up); the client's own
//! task sends it and stamps it with the time it does.
//!
//! **Ending.** A run ends when every client has sent and received
//! everything; when the server disconnects a client that reads (an
//! eviction: the run stops at once and reports the server's reason); or
//! when no delivery arrives for `timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_proto::{Event, Message};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::Interest;
use tokio::sync::{Barrier, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::conn::{Client, connect_all};
use crate::error::Error;
use crate::latency::{Latency, histogram};
use crate::pace::pace;
use crate::payload::{HEADER, check_fits, check_size, filler, parse, text};
use crate::plan::Plan;
use crate::procfs::{Cost, Proc};
use crate::stalled::{self, Outcome};
use crate::system::nats::Nats;
use crate::system::redis::Redis;
use crate::system::{CHANNEL, Got, Peer, System};

/// Output a client batches before writing, in bytes.
const BATCH_BYTES: usize = 32 * 1024;

/// Latency histograms the receivers share, client `c` recording into
/// number `c % HISTOGRAMS`: one of ours is 220 KiB, and one per client
/// made 10,000 clients zero 2 GiB as the run started, which stalled it for
/// a second.
const HISTOGRAMS: usize = 64;

/// Options of a fan-out run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Which system the server is.
    pub(crate) system: System,
    pub(crate) server: SocketAddr,
    /// Who hears whom; how many clients send and receive.
    pub(crate) plan: Plan,
    /// Handshakes in flight at once (named clients).
    pub(crate) parallel: usize,
    /// What the names of this run's clients and rooms start with (named
    /// clients).
    pub(crate) tag: String,
    /// Messages each client sends.
    pub(crate) messages: u32,
    /// Text size of each message, in bytes (at least [`HEADER`]).
    pub(crate) size: usize,
    /// Messages per second per client; `None` sends as fast as possible.
    pub(crate) rate: Option<f64>,
    /// Extra clients that connect but never read: the server must evict them.
    pub(crate) stalled: usize,
    /// Most messages a sender may be ahead of its slowest receiver (0: no limit).
    pub(crate) window: u32,
    /// Give up when no delivery arrives for this long.
    pub(crate) timeout: Duration,
    /// Print a progress line every second to stderr.
    pub(crate) progress: bool,
}

/// What a fan-out run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Which system the server is.
    pub(crate) system: System,
    /// Whether the clients spoke TLS (`--tls`).
    pub(crate) tls: bool,
    /// Clients that received (all of them) and sent (`senders` of them).
    pub(crate) clients: usize,
    /// Clients that sent.
    pub(crate) senders: usize,
    /// The rooms of a `rooms` run (`None`: `fanout`'s one room).
    pub(crate) rooms: Option<Shape>,
    /// Messages per sender.
    pub(crate) messages: u32,
    /// Text size.
    pub(crate) size: usize,
    /// Deliveries expected: clients × (clients − 1) × messages in one
    /// room; in rooms, the sum over receivers of what their rooms' senders
    /// make.
    pub(crate) expected: u64,
    /// Deliveries received intact, in order (a gap counts as an order violation).
    pub(crate) deliveries: u64,
    /// Seconds from the start to the last delivery.
    pub(crate) seconds: f64,
    /// Deliveries per second (to others: not counting `self_deliveries`).
    pub(crate) rate: f64,
    /// A client's own messages delivered back to it (Redis echoes them;
    /// counted apart, neither deliveries nor duplicates).
    pub(crate) self_deliveries: u64,
    /// Latency percentiles, microseconds.
    pub(crate) latency_us: Latency,
    /// Expected deliveries that never arrived.
    pub(crate) losses: u64,
    /// Messages received more than once.
    pub(crate) duplicates: u64,
    /// Messages received out of per-sender order.
    pub(crate) order_violations: u64,
    /// Messages whose text or sender (address, name) was wrong.
    pub(crate) corrupt: u64,
    /// Deliveries to a client that is not in the room, or naming another
    /// room than the one the sender said the message in.
    pub(crate) misdirected: u64,
    /// Receivers whose count of deliveries is not what their rooms make.
    pub(crate) mismatched: usize,
    /// The first few of them.
    pub(crate) mismatches: Vec<Mismatch>,
    /// Clients that read but were disconnected anyway, with the server's reason.
    pub(crate) evicted: Vec<Lost>,
    /// No delivery arrived for the whole timeout.
    pub(crate) timed_out: bool,
    /// Stalled clients the server evicted with "slow consumer".
    pub(crate) stalled_evicted: usize,
    /// Stalled clients.
    pub(crate) stalled: usize,
    /// What became of each stalled client.
    pub(crate) stalled_outcomes: Vec<Outcome>,
    /// Server figures, if its pid was given.
    pub(crate) server: Option<Cost>,
    /// CPU seconds the load generator itself used during the run: near
    /// its threads × `seconds`, the run measured the load generator.
    pub(crate) load_cpu_seconds: f64,
}

/// A client the server disconnected while it was reading.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Lost {
    /// Which client.
    pub(crate) client: usize,
    /// The server's `Error` reason, or what happened.
    pub(crate) reason: String,
}

/// The rooms of a `rooms` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Shape {
    pub(crate) rooms: usize,
    /// Members per room.
    pub(crate) room_size: usize,
    /// Rooms per client.
    pub(crate) per_client: usize,
    /// Messages a client says in a row in one room.
    pub(crate) run: u32,
}

/// A receiver that got another number of deliveries than it should have.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Mismatch {
    pub(crate) client: usize,
    pub(crate) got: u64,
    pub(crate) expected: u64,
}

/// Mismatched receivers a report lists.
const MISMATCHES_SHOWN: usize = 10;

impl Report {
    /// A run passes when every client that reads got every expected delivery
    /// exactly once, in order and intact, none was disconnected, and every
    /// stalled client was evicted as a slow consumer.
    pub(crate) fn passed(&self) -> bool {
        self.losses == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.corrupt == 0
            && self.misdirected == 0
            && self.mismatched == 0
            && self.deliveries == self.expected
            && self.evicted.is_empty()
            && !self.timed_out
            && self.stalled_evicted == self.stalled
    }
}

/// What every client task shares.
struct Shared {
    base: Instant,
    clients: usize,
    plan: Plan,
    /// Deliveries each receiver expects.
    expected: Vec<u64>,
    messages: u32,
    window: u32,
    /// `seen[rows[s] + i]`: how many of sender `s`'s messages its `i`-th
    /// peer (`plan.peers(s)[i]`) has taken, the next sequence number it
    /// expects from `s`. Rows for senders only: 10,000 clients in rooms of
    /// 100 make a million counters, not a hundred million.
    seen: Vec<AtomicU32>,
    /// Where each client's row of `seen` starts; `rows[n]` is its length.
    rows: Vec<usize>,
    /// Paced runs: how many messages each client may have sent by now.
    allowed: Option<Vec<AtomicU32>>,
    /// Wakes a sender waiting for its window or its turn.
    wake: Vec<Notify>,
    /// Whether a sender waits for its window: only then do receivers wake
    /// it (at a paced rate a sender waits for its turns, and waking it at
    /// every read would cost more than the server being measured).
    windowed: Vec<AtomicBool>,
    /// Deliveries so far, over all receivers.
    total: AtomicU64,
    /// Each client's address as the server shows it (chat only; the
    /// others do not tag deliveries).
    addrs: Vec<SocketAddr>,
    /// Each client's name (named chat clients only).
    names: Vec<String>,
    /// The system delivers a client's own messages back to it.
    echo: bool,
    /// Stalled clients' addresses, and what to tell each when it is seen to leave.
    stalled: Vec<(SocketAddr, Notify)>,
    fill: String,
    /// Stops every client: a client failed, or the run timed out.
    abort: CancellationToken,
    /// Latencies, nanoseconds, shared by the receivers (see [`HISTOGRAMS`]).
    hists: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    /// How many messages sender `s` may have sent now: as its turns allow,
    /// and as its window allows.
    fn limits(&self, s: usize) -> (u32, u32) {
        let mut paced = self.messages;
        if let Some(allowed) = &self.allowed {
            paced = paced.min(allowed[s].load(Ordering::Acquire));
        }
        let mut window = self.messages;
        if self.window > 0 {
            let slowest = self.seen[self.rows[s]..self.rows[s + 1]]
                .iter()
                .map(|seen| seen.load(Ordering::SeqCst))
                .min()
                .unwrap_or(self.messages);
            window = window.min(slowest.saturating_add(self.window));
        }
        (paced, window)
    }
}

/// What one receiver saw.
#[derive(Debug)]
struct Tally {
    client: usize,
    deliveries: u64,
    self_deliveries: u64,
    duplicates: u64,
    order: u64,
    corrupt: u64,
    misdirected: u64,
    last: Option<Instant>,
}

/// Runs the fan-out workload once.
///
/// # Errors
///
/// Fails if a client cannot connect or handshake, or the join notices do
/// not all arrive in time. Evictions and losses during the run are in the
/// report.
pub(crate) async fn run(opts: &Options, server: Option<Proc>) -> Result<Report, Error> {
    let clients = opts.plan.clients();
    if clients < 2 {
        return Err(Error::Options("fanout needs at least 2 clients".into()));
    }
    if clients > 0xffff {
        return Err(Error::Options("fanout takes at most 65535 clients".into()));
    }
    check_size(opts.size)?;
    let fill = filler(opts.size);
    if opts.system != System::Chat && opts.stalled > 0 {
        return Err(Error::Options("--stalled needs --system chat".into()));
    }
    match opts.system {
        System::Chat => {
            let (clients, stalled) = if opts.plan.named() {
                (crate::rooms::connect(opts).await?, Vec::new())
            } else {
                connect(opts).await?
            };
            check_fits(opts.size, clients[0].conn.max_text_len())?;
            let addrs = clients.iter().map(|c| c.me).collect();
            let names = clients.iter().map(|c| c.name.clone()).collect();
            measure(opts, server, clients, stalled, (addrs, names), fill).await
        }
        System::Nats => {
            let clients = subscribe(opts, "NATS", |id, server, channels| {
                Nats::connect(id, server, channels)
            })
            .await?;
            measure(opts, server, clients, Vec::new(), Default::default(), fill).await
        }
        System::Redis => {
            let clients = subscribe(opts, "Redis", |id, server, channels| {
                // A publishing connection only for a client that sends.
                Redis::connect(id, server, channels, opts.plan.sends(id))
            })
            .await?;
            measure(opts, server, clients, Vec::new(), Default::default(), fill).await
        }
    }
}

/// Connects every client of an anchor, `opts.parallel` at a time, each
/// subscribed to its channels (its rooms' names; [`CHANNEL`] in one
/// unnamed room) before it is given back; returns them in id order.
async fn subscribe<P, F, C>(opts: &Options, what: &str, connect: C) -> Result<Vec<P>, Error>
where
    P: Peer,
    F: Future<Output = Result<P, Error>> + Send + 'static,
    C: Fn(usize, SocketAddr, Vec<String>) -> F,
{
    let n = opts.plan.clients();
    let what = format!("subscribe all {n} clients to {what}");
    connect_all(n, opts.parallel, opts.timeout, &what, |id| {
        let channels = if opts.plan.named() {
            opts.plan.names_of(id)
        } else {
            vec![CHANNEL.to_string()]
        };
        connect(id, opts.server, channels)
    })
    .await
}

/// Runs the workload with connected clients: the part every system shares.
async fn measure<P: Peer>(
    opts: &Options,
    server: Option<Proc>,
    mut clients: Vec<P>,
    stalled: Vec<Client>,
    (addrs, names): (Vec<SocketAddr>, Vec<String>),
    fill: String,
) -> Result<Report, Error> {
    let n = opts.plan.clients();
    let expected: Vec<u64> = (0..n)
        .map(|r| opts.plan.expected(r, opts.messages))
        .collect();
    let mut rows = Vec::with_capacity(n + 1);
    rows.push(0);
    for s in 0..n {
        let len = if opts.plan.sends(s) {
            opts.plan.peers(s).len()
        } else {
            0
        };
        rows.push(rows[s] + len);
    }
    let ctx = Arc::new(Shared {
        base: Instant::now(),
        clients: n,
        plan: opts.plan.clone(),
        expected,
        messages: opts.messages,
        window: opts.window,
        seen: (0..rows[n]).map(|_| AtomicU32::new(0)).collect(),
        rows,
        allowed: opts
            .rate
            .map(|_| (0..n).map(|_| AtomicU32::new(0)).collect()),
        wake: (0..n).map(|_| Notify::new()).collect(),
        windowed: (0..n).map(|_| AtomicBool::new(false)).collect(),
        total: AtomicU64::new(0),
        addrs,
        names,
        echo: opts.system.echoes(),
        stalled: stalled.iter().map(|c| (c.me, Notify::new())).collect(),
        fill,
        abort: CancellationToken::new(),
        hists: (0..n.min(HISTOGRAMS))
            .map(|_| Mutex::new(histogram()))
            .collect(),
    });
    let finished = CancellationToken::new();
    let mut watchers = JoinSet::new();
    for (i, c) in stalled.into_iter().enumerate() {
        let (ctx, finished, grace) = (ctx.clone(), finished.clone(), opts.timeout);
        watchers.spawn(async move {
            let outcome = stalled::stall(c, &ctx.stalled[i].1, &finished, &ctx.abort, grace).await;
            (i, outcome)
        });
    }
    let cpu_before = server.map(Proc::sched).transpose().map_err(Error::Proc)?;
    let load_before = Proc::me().cpu().map_err(Error::Proc)?;
    let start = Arc::new(Barrier::new(n + 1));
    let mut tasks = JoinSet::new();
    let size = opts.size;
    for c in clients.drain(..) {
        let (ctx, start) = (ctx.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            drive(c, &ctx, size).await
        });
    }
    start.wait().await;
    let t0 = Instant::now();
    let pacer = opts.rate.map(|rate| {
        let (ctx, finished) = (ctx.clone(), finished.clone());
        tokio::task::spawn_blocking(move || {
            if let Some(allowed) = &ctx.allowed {
                let who = ctx.plan.sender_ids();
                pace(allowed, &ctx.wake, &who, ctx.messages, rate, || {
                    ctx.abort.is_cancelled() || finished.is_cancelled()
                });
            }
        })
    });

    // Watch: collect the clients, print progress, stop everything on the
    // first eviction or when deliveries stop.
    let expected: u64 = ctx.expected.iter().sum();
    let mut tallies = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    let mut evicted = Vec::new();
    let mut timed_out = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (mut seen, mut moved, mut shown) = (0, Instant::now(), Instant::now());
    while !tasks.is_empty() {
        tokio::select! {
            Some(r) = tasks.join_next() => {
                let (tally, client, failure) = r.expect("client task panicked");
                if let Some(e) = failure {
                    if evicted.is_empty() {
                        eprintln!("chat-bench: {e}; stopping the run");
                    }
                    evicted.push(Lost { client: client.id(), reason: reason(e) });
                    ctx.abort.cancel();
                }
                tallies.push(tally);
                held.push(client);
            }
            _ = tick.tick() => {
                let total = ctx.total.load(Ordering::Relaxed);
                if total != seen {
                    (seen, moved) = (total, Instant::now());
                } else if moved.elapsed() >= opts.timeout && !ctx.abort.is_cancelled() {
                    eprintln!("chat-bench: no delivery for {:?}; stopping the run", opts.timeout);
                    timed_out = true;
                    ctx.abort.cancel();
                }
                if opts.progress && shown.elapsed() >= Duration::from_secs(1) {
                    shown = Instant::now();
                    eprintln!("  {total} of {expected} deliveries");
                }
            }
        }
    }
    let cost = match (server, cpu_before) {
        (Some(p), Some(before)) => {
            let deliveries = ctx.total.load(Ordering::Relaxed);
            Some(p.cost(before, deliveries).map_err(Error::Proc)?)
        }
        _ => None,
    };
    let load_cpu = Proc::me()
        .cpu()
        .map_err(Error::Proc)?
        .saturating_sub(load_before);
    finished.cancel();
    if let Some(p) = pacer {
        p.await.expect("pacer panicked");
    }
    let mut stalled_outcomes = vec![Outcome::Unchecked; opts.stalled];
    while let Some(r) = watchers.join_next().await {
        let (i, outcome) = r.expect("stalled client task panicked");
        stalled_outcomes[i] = outcome;
    }
    drop(held);

    let mut hist = histogram();
    for h in &ctx.hists {
        hist.add(&*h.lock().expect("no receiver panicked"))
            .expect("same histogram bounds");
    }
    let (mut deliveries, mut duplicates, mut order, mut corrupt) = (0, 0, 0, 0);
    let (mut self_deliveries, mut misdirected) = (0, 0);
    let mut last = None;
    tallies.sort_by_key(|t| t.client);
    let mut mismatches = Vec::new();
    for t in &tallies {
        deliveries += t.deliveries;
        self_deliveries += t.self_deliveries;
        duplicates += t.duplicates;
        order += t.order;
        corrupt += t.corrupt;
        misdirected += t.misdirected;
        last = last.max(t.last);
        if t.deliveries != ctx.expected[t.client] {
            mismatches.push(Mismatch {
                client: t.client,
                got: t.deliveries,
                expected: ctx.expected[t.client],
            });
        }
    }
    // A receiver whose task never reported got nothing.
    let mismatched = mismatches.len() + (n - tallies.len());
    mismatches.truncate(MISMATCHES_SHOWN);
    let seconds = last.map_or(0.0, |l: Instant| l.duration_since(t0).as_secs_f64());
    let plan = &opts.plan;
    Ok(Report {
        system: opts.system,
        tls: crate::tls::on(),
        clients: n,
        senders: plan.senders(),
        rooms: plan.named().then(|| Shape {
            rooms: plan.count(),
            room_size: plan.room_size(),
            per_client: plan.per_client(),
            run: plan.run(),
        }),
        messages: opts.messages,
        size: opts.size,
        expected,
        deliveries,
        seconds,
        rate: deliveries as f64 / seconds.max(1e-9),
        self_deliveries,
        latency_us: Latency::of(&hist),
        losses: expected.saturating_sub(deliveries + corrupt),
        duplicates,
        order_violations: order,
        corrupt,
        misdirected,
        mismatched,
        mismatches,
        evicted,
        timed_out,
        stalled_evicted: stalled_outcomes
            .iter()
            .filter(|o| o.slow_consumer())
            .count(),
        stalled: opts.stalled,
        stalled_outcomes,
        server: cost,
        load_cpu_seconds: load_cpu.as_secs_f64(),
    })
}

fn reason(e: Error) -> String {
    match e {
        Error::Disconnected { reason, .. } | Error::Refused { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Connects every client and waits until the server has registered them
/// all: the first connects alone and watches the others join. Returns the
/// clients that read and the stalled ones.
async fn connect(opts: &Options) -> Result<(Vec<Client>, Vec<Client>), Error> {
    let clients = opts.plan.clients();
    let mut first = Client::connect(0, opts.server, None).await?;
    let mut set = JoinSet::new();
    for id in 1..clients + opts.stalled {
        let server = opts.server;
        let rcvbuf = (id >= clients).then_some(stalled::RCVBUF);
        set.spawn(Client::connect(id, server, rcvbuf));
    }
    let mut rest = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        rest.push(r.expect("connect task panicked")?);
    }
    rest.sort_by_key(|c| c.id);
    let others = rest.len();
    let mut joined = 0;
    let wait = async {
        while joined < others {
            if let Event::Message(Message::Joined { .. }) = first.next_event().await? {
                joined += 1;
            }
        }
        Ok::<_, Error>(())
    };
    match tokio::time::timeout(opts.timeout, wait).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Timeout(format!(
                "saw {joined} of {others} join notices in {:?} (fanout needs the server's presence notices)",
                opts.timeout
            )));
        }
    }
    let stalled = rest.split_off(clients - 1);
    let mut clients = Vec::with_capacity(clients);
    clients.push(first);
    clients.extend(rest);
    Ok((clients, stalled))
}

/// One client's whole run: sends its messages as its window and pace allow,
/// and checks everything it receives. Gives back what it saw, its client
/// (the socket stays open until the run is over: closing it would look like
/// leaving), and what stopped it early, if anything did.
async fn drive<P: Peer>(mut c: P, ctx: &Shared, size: usize) -> (Tally, P, Option<Error>) {
    let id = c.id();
    let expected = ctx.expected[id];
    // What this client sends: all the messages, or none (a silent member).
    let mine = ctx.plan.messages_of(id, ctx.messages);
    let per_batch = (BATCH_BYTES / (size + 8)).max(1) as u32;
    let heard = ctx.plan.heard(id);
    let next: Vec<u32> = heard
        .iter()
        .map(|&s| ctx.plan.next(s as usize, id, 0, ctx.messages))
        .collect();
    let slots = heard
        .iter()
        .map(|&s| {
            let s = s as usize;
            let at = ctx
                .plan
                .peer_slot(s, id)
                .expect("a sender heard hears back");
            ctx.rows[s] + at
        })
        .collect();
    let mut rx = Receiver {
        id,
        published: next.clone(),
        next,
        slots,
        tally: Tally {
            client: id,
            deliveries: 0,
            self_deliveries: 0,
            duplicates: 0,
            order: 0,
            corrupt: 0,
            misdirected: 0,
            last: None,
        },
        latencies: Vec::new(),
    };
    let mut seq = 0u32;
    // A failed write stops the sending, not the reading: the server's
    // `Error` saying why it closed is likely still to be read.
    let mut write_failed = false;
    // One registration for the whole run, not one per turn of the loop.
    let aborted = ctx.abort.cancelled();
    tokio::pin!(aborted);
    let failure = loop {
        // Queue the next batch once the previous one is written.
        let mut limit = mine;
        let sending = c.sending() && !write_failed;
        if seq < mine && !sending && !write_failed {
            // Say we wait for the window before reading it: a receiver that
            // moves it on then either is seen here or sees the flag and
            // wakes us (both sides SeqCst), so no wake-up is lost.
            if ctx.window > 0 {
                ctx.windowed[id].store(true, Ordering::SeqCst);
            }
            let (paced, window) = ctx.limits(id);
            // Full speed: once the window has closed, wait until it has room
            // for a real batch, so that sends stay large (small writes cost
            // the server more per delivery than what it is measured on).
            let batch = if ctx.allowed.is_none() && ctx.window > 0 {
                per_batch.min(ctx.window / 4).min(mine - seq).max(1)
            } else {
                1
            };
            let open = window >= seq.saturating_add(batch);
            if ctx.window > 0 && open {
                ctx.windowed[id].store(false, Ordering::Relaxed);
            }
            limit = if open { paced.min(window) } else { seq };
            let end = limit.min(seq.saturating_add(per_batch));
            let mut refused = None;
            while seq < end {
                let ts = ctx.base.elapsed().as_nanos() as u64;
                if let Err(e) = c.publish(ctx.plan.turn(seq), text(id, seq, ts, &ctx.fill)) {
                    refused = Some(e);
                    break;
                }
                seq += 1;
            }
            if let Some(e) = refused {
                break Some(e);
            }
        }
        let t = &rx.tally;
        if t.deliveries + t.corrupt >= expected && seq == mine && !c.sending() {
            break None;
        }
        let sending = c.sending() && !write_failed;
        let blocked = seq < mine && !sending && !write_failed && seq >= limit;
        let interest = if sending {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        tokio::select! {
            () = &mut aborted => break None,
            () = ctx.wake[id].notified(), if blocked => {}
            r = c.ready(interest) => {
                let ready = match r {
                    Ok(ready) => ready,
                    Err(e) => break Some(e),
                };
                if ready.is_writable() && sending && c.write().is_err() {
                    write_failed = true;
                }
                if ready.is_readable() {
                    match c.read() {
                        Err(e) => break Some(e),
                        Ok(None) => {}
                        Ok(Some(_)) => {
                            if let Err(e) = rx.take(&mut c, ctx) {
                                break Some(e);
                            }
                            if c.is_closed() {
                                break Some(c.lost("the server closed the connection".into()));
                            }
                        }
                    }
                }
            }
        }
    };
    (rx.tally, c, failure)
}

/// The checking side of one client.
struct Receiver {
    id: usize,
    /// Per sender heard (`plan.heard(id)`): the next sequence number expected.
    next: Vec<u32>,
    /// Per sender heard: `next` as last published to [`Shared::seen`].
    published: Vec<u32>,
    /// Per sender heard: where this receiver's counter is in [`Shared::seen`].
    slots: Vec<usize>,
    tally: Tally,
    /// Latencies of the read being taken, for [`Shared::hists`].
    latencies: Vec<u64>,
}

impl Receiver {
    /// Takes every event the last read completed, then publishes progress
    /// once for the whole read.
    fn take<P: Peer>(&mut self, c: &mut P, ctx: &Shared) -> Result<(), Error> {
        // Everything in one read arrived at the same moment: one clock read.
        let now = ctx.base.elapsed().as_nanos() as u64;
        let mut got = 0;
        let before = self.tally.deliveries;
        let result = c.take(|delivery| match delivery {
            Got::Message { from, room, text } => {
                got += 1;
                self.check(from, None, room, text, now, ctx);
            }
            Got::Said {
                from,
                name,
                room,
                text,
            } => {
                got += 1;
                self.check(
                    Some(from),
                    Some(name),
                    Some(room.as_bytes()),
                    text,
                    now,
                    ctx,
                );
            }
            Got::Left(addr) => {
                if let Some((_, left)) = ctx.stalled.iter().find(|(a, _)| *a == addr) {
                    left.notify_one();
                }
            }
        });
        if !self.latencies.is_empty() {
            let mut hist = ctx.hists[self.id % ctx.hists.len()]
                .lock()
                .expect("no receiver panicked");
            for &ns in &self.latencies {
                hist.saturating_record(ns);
            }
            drop(hist);
            self.latencies.clear();
        }
        if got > 0 {
            self.tally.last = Some(Instant::now());
            for (i, &from) in ctx.plan.heard(self.id).iter().enumerate() {
                let (next, published) = (self.next[i], &mut self.published[i]);
                if next != *published {
                    *published = next;
                    ctx.seen[self.slots[i]].store(next, Ordering::SeqCst);
                    let from = from as usize;
                    if ctx.window > 0 && ctx.windowed[from].load(Ordering::SeqCst) {
                        ctx.wake[from].notify_one();
                    }
                }
            }
            let delivered = self.tally.deliveries - before;
            ctx.total.fetch_add(delivered, Ordering::Relaxed);
        }
        result
    }

    /// Checks one delivery: sender (its address, when the system tags
    /// deliveries with one; its name, for a `Said`), the room (a `Said`'s,
    /// an anchor's channel) against the plan's, text, sequence. Inlined
    /// into the adapter's loop, so that the chat path compares what it
    /// decoded without building a `Got` first.
    #[inline(always)]
    fn check(
        &mut self,
        from_addr: Option<SocketAddr>,
        name: Option<&str>,
        room: Option<&[u8]>,
        text: &[u8],
        now: u64,
        ctx: &Shared,
    ) {
        let t = &mut self.tally;
        let Some((from, seq, ts)) = parse(text) else {
            t.corrupt += 1;
            return;
        };
        if from >= ctx.clients
            || from_addr.is_some_and(|a| ctx.addrs[from] != a)
            || name.is_some_and(|name| ctx.names.get(from).is_none_or(|n| n != name))
            || text[HEADER..] != *ctx.fill.as_bytes()
        {
            t.corrupt += 1;
            return;
        }
        if from == self.id {
            if ctx.echo {
                t.self_deliveries += 1;
            } else {
                t.corrupt += 1;
            }
            return;
        }
        let plan = &ctx.plan;
        if plan.named()
            && (seq >= plan.messages_of(from, ctx.messages)
                || room.is_some_and(|r| r != plan.room_name(from, seq).as_bytes())
                || !plan.hears(from, self.id, seq))
        {
            t.misdirected += 1;
            return;
        }
        let Some(i) = plan.heard_slot(self.id, from) else {
            // A silent member's id: it never sends.
            t.misdirected += 1;
            return;
        };
        let want = self.next[i];
        if seq < want {
            t.duplicates += 1;
            return;
        }
        if seq > want {
            t.order += 1;
        }
        self.next[i] = plan.next(from, self.id, seq + 1, ctx.messages);
        t.deliveries += 1;
        self.latencies.push(now.saturating_sub(ts).max(1));
    }
}
