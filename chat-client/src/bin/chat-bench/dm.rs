//! The direct-message workload: round trips between pairs of named clients.
//!
//! P pairs (A, B) of clients with the ROOMS capability, out of the lobby.
//! A tells B a message (its id, a sequence number and the send time, as in
//! every bench message); B, on receipt, tells it back to A unchanged; A
//! records the round trip. Each side checks that what it got came from its
//! partner (name and address), exactly once, in order, intact.
//!
//! **Rate.** With a rate, A's turns come from the pacer (`crate::pace`):
//! `rate` round trips a second over all pairs, so the server carries twice
//! as many `Tell`s. Without one, each A keeps one message in flight.
//!
//! Any `Refused` (a `RateLimited` above all: run the server with
//! `--tell-rate 0`, or spread the rate over enough pairs) stops the run as a
//! failure, as does a client the server disconnects, or no delivery for
//! `timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_proto::{Event, Message};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::conn::{Ask, Client, Woke, connect_all};
use crate::crowd::{self, Run};
use crate::error::Error;
use crate::fanout::Lost;
use crate::latency::{Latency, histogram};
use crate::payload::{HEADER, check_fits, check_size, parse, text};
use crate::procfs::{Cost, Proc};

/// Options of a direct-message run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) server: SocketAddr,
    /// Pairs of clients.
    pub(crate) pairs: usize,
    /// Round trips per pair.
    pub(crate) messages: u32,
    /// Text size of each message, in bytes (at least [`HEADER`]).
    pub(crate) size: usize,
    /// Round trips started per second, over all pairs; `None`: one in
    /// flight per pair.
    pub(crate) rate: Option<f64>,
    /// Handshakes in flight at once.
    pub(crate) parallel: usize,
    /// What this run's client names start with.
    pub(crate) tag: String,
    /// Give up when no message arrives for this long.
    pub(crate) timeout: Duration,
    /// Print a progress line every second to stderr.
    pub(crate) progress: bool,
}

/// What a direct-message run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) pairs: usize,
    /// Round trips per pair.
    pub(crate) messages: u32,
    /// Text size.
    pub(crate) size: usize,
    /// Round trips a second asked for (`None`: one in flight per pair).
    pub(crate) target_rate: Option<f64>,
    /// Round trips expected: pairs × messages.
    pub(crate) expected: u64,
    /// Round trips completed, intact and in order.
    pub(crate) round_trips: u64,
    /// Direct messages delivered (both ways, each checked).
    pub(crate) dms: u64,
    /// Seconds from the start to the last reply.
    pub(crate) seconds: f64,
    /// Round trips per second.
    pub(crate) rate: f64,
    /// Round-trip latency percentiles, microseconds.
    pub(crate) latency_us: Latency,
    /// Expected direct messages (2 per round trip) that never arrived.
    pub(crate) losses: u64,
    /// Messages received more than once.
    pub(crate) duplicates: u64,
    /// Messages received out of order.
    pub(crate) order_violations: u64,
    /// Messages whose text or sender (name, address) was wrong.
    pub(crate) corrupt: u64,
    /// Clients the server disconnected or refused, with the reason.
    pub(crate) evicted: Vec<Lost>,
    /// No message arrived for the whole timeout.
    pub(crate) timed_out: bool,
    /// Server figures, if its pid was given: CPU per direct message.
    pub(crate) server: Option<Cost>,
    /// Server CPU microseconds per round trip (two direct messages).
    pub(crate) cpu_us_per_round_trip: Option<f64>,
    /// CPU seconds the load generator itself used during the run.
    pub(crate) load_cpu_seconds: f64,
}

impl Report {
    /// A run passes when every round trip completed exactly once, in order
    /// and intact, and nothing was refused or disconnected.
    pub(crate) fn passed(&self) -> bool {
        self.round_trips == self.expected
            && self.dms == 2 * self.expected
            && self.losses == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.corrupt == 0
            && self.evicted.is_empty()
            && !self.timed_out
    }
}

/// What every client task shares; pair `p` is clients `2p` (A) and
/// `2p + 1` (B), and the pacer's turns are the pairs'.
type Shared = crowd::Shared<()>;

/// What one client saw.
#[derive(Debug)]
struct Tally {
    /// Messages taken from the partner, intact and in order.
    got: u64,
    duplicates: u64,
    order: u64,
    corrupt: u64,
    last: Option<Instant>,
    /// A's round trips.
    hist: Histogram<u64>,
}

/// Runs the direct-message workload once.
///
/// # Errors
///
/// Fails if a client cannot connect, be named, or leave the lobby.
/// Refusals, evictions and losses during the run are in the report.
pub(crate) async fn run(opts: &Options, server: Option<Proc>) -> Result<Report, Error> {
    if opts.pairs == 0 || opts.pairs > 0x7fff {
        return Err(Error::Options("dm takes 1 to 32767 pairs".into()));
    }
    check_size(opts.size)?;
    let clients = connect(opts).await?;
    check_fits(opts.size, clients[0].conn.max_text_len())?;
    let ctx = Arc::new(Shared::new(
        &clients,
        opts.pairs,
        opts.rate.is_some(),
        (opts.messages, opts.size),
        (),
    ));
    let per_pair = opts.rate.map(|rate| rate / opts.pairs as f64);
    let mut run = Run::start(&ctx, clients, server, per_pair, |c, ctx| async move {
        drive(c, &ctx).await
    })
    .await?;
    let expected = opts.pairs as u64 * u64::from(opts.messages);
    let progress = opts.progress.then_some((2 * expected, "direct messages"));
    let ended = run.watch(opts.timeout, "no message", progress).await;
    let (tallies, evicted, timed_out) = (ended.tallies, ended.evicted, ended.timed_out);
    let dms = ctx.total.load(Ordering::Relaxed);
    let t0 = run.t0;
    let (cost, load_cpu) = run.finish(dms, ended.held).await?;

    let mut hist = histogram();
    let (mut round_trips, mut got, mut duplicates, mut order, mut corrupt) = (0, 0, 0, 0, 0);
    let mut last = None;
    for (id, t) in &tallies {
        if id.is_multiple_of(2) {
            round_trips += t.got;
        }
        got += t.got;
        duplicates += t.duplicates;
        order += t.order;
        corrupt += t.corrupt;
        last = last.max(t.last);
        hist.add(&t.hist).expect("same histogram bounds");
    }
    let seconds = last.map_or(0.0, |l: Instant| l.duration_since(t0).as_secs_f64());
    let cpu_us_per_round_trip = cost
        .as_ref()
        .map(|c| c.cpu_seconds * 1e6 / round_trips.max(1) as f64);
    Ok(Report {
        pairs: opts.pairs,
        messages: opts.messages,
        size: opts.size,
        target_rate: opts.rate,
        expected,
        round_trips,
        dms: got,
        seconds,
        rate: round_trips as f64 / seconds.max(1e-9),
        latency_us: Latency::of(&hist),
        losses: (2 * expected).saturating_sub(got + corrupt),
        duplicates,
        order_violations: order,
        corrupt,
        evicted,
        timed_out,
        server: cost,
        cpu_us_per_round_trip,
        load_cpu_seconds: load_cpu.as_secs_f64(),
    })
}

/// Connects the 2P clients, named `{tag}.{id}`, out of the lobby, in id order.
async fn connect(opts: &Options) -> Result<Vec<Client>, Error> {
    let n = 2 * opts.pairs;
    let what = format!("name all {n} clients");
    connect_all(n, opts.parallel, opts.timeout, &what, |id| {
        let (server, name) = (opts.server, format!("{}.{id}", opts.tag));
        async move {
            let ask = Ask {
                name: &name,
                join: &[],
                part_lobby: true,
            };
            Client::named(id, server, ask, |_, _| {}).await
        }
    })
    .await
}

/// One client's whole run. An A (even id) starts round trips as its turns
/// allow and takes the replies; a B (odd id) answers each message at once.
async fn drive(mut c: Client, ctx: &Shared) -> (Tally, Client, Option<Error>) {
    let id = c.id;
    let (pair, starter) = (id / 2, id.is_multiple_of(2));
    let partner = id ^ 1;
    let mut tally = Tally {
        got: 0,
        duplicates: 0,
        order: 0,
        corrupt: 0,
        last: None,
        hist: histogram(),
    };
    let to = ctx.names[partner].clone();
    let messages = u64::from(ctx.messages);
    // A: round trips started. Both: the next sequence number expected.
    let (mut sent, mut next) = (0u32, 0u32);
    let mut write_failed = false;
    let aborted = ctx.abort.cancelled();
    tokio::pin!(aborted);
    let failure = loop {
        let mut limit = sent;
        if starter && !write_failed {
            limit = match &ctx.allowed {
                Some(allowed) => allowed[pair].load(Ordering::Acquire).min(ctx.messages),
                // Closed loop: the next one once the last one came back.
                None => next.saturating_add(1).min(ctx.messages),
            };
            let mut refused = None;
            while sent < limit {
                let ts = ctx.base.elapsed().as_nanos() as u64;
                let msg = Message::Tell {
                    name: to.clone(),
                    text: text(id, sent, ts, &ctx.fill),
                };
                if let Err(e) = c.conn.send(&msg) {
                    refused = Some(c.lost(format!("cannot send: {e}")));
                    break;
                }
                sent += 1;
            }
            if let Some(e) = refused {
                break Some(e);
            }
        }
        if tally.got + tally.corrupt >= messages && !c.sending() {
            break None;
        }
        let waiting = starter && ctx.allowed.is_some() && sent == limit && sent < ctx.messages;
        let turn = waiting.then(|| &ctx.wake[pair]);
        match c.wait(&mut write_failed, turn, &mut aborted).await {
            Err(e) => break Some(e),
            Ok(Woke::Stopped) => break None,
            Ok(Woke::Again) => {}
            Ok(Woke::Read) => {
                let before = tally.got;
                if let Err(e) = take(&mut c, ctx, partner, &to, &mut next, &mut tally) {
                    break Some(e);
                }
                ctx.total.fetch_add(tally.got - before, Ordering::Relaxed);
                if c.conn.is_closed() {
                    break Some(c.lost("the server closed the connection".into()));
                }
            }
        }
    };
    (tally, c, failure)
}

/// Takes every event the last read completed: checks each message from
/// the partner; an A records its round trip, a B tells it back.
fn take(
    c: &mut Client,
    ctx: &Shared,
    partner: usize,
    to: &str,
    next: &mut u32,
    t: &mut Tally,
) -> Result<(), Error> {
    let now = ctx.base.elapsed().as_nanos() as u64;
    let starter = c.id.is_multiple_of(2);
    // Whose id the text carries: an A gets its own messages back.
    let origin = if starter { c.id } else { partner };
    let mut got = false;
    loop {
        let event = c.poll()?;
        let (from, text) = match event {
            None => break,
            Some(Event::Message(Message::Told { from, text })) => (from, text),
            Some(other) => {
                c.check(other)?;
                continue;
            }
        };
        got = true;
        let Some((who, seq, ts)) = parse(text.as_bytes()) else {
            t.corrupt += 1;
            continue;
        };
        if who != origin
            || from.name != ctx.names[partner]
            || from.addr() != ctx.addrs[partner]
            || text.as_bytes()[HEADER..] != *ctx.fill.as_bytes()
        {
            t.corrupt += 1;
            continue;
        }
        if seq < *next {
            t.duplicates += 1;
            continue;
        }
        if seq > *next {
            t.order += 1;
        }
        *next = seq + 1;
        t.got += 1;
        if starter {
            t.hist.saturating_record(now.saturating_sub(ts).max(1));
        } else {
            let reply = Message::Tell {
                name: to.to_owned(),
                text,
            };
            c.conn
                .send(&reply)
                .map_err(|e| c.lost(format!("cannot send: {e}")))?;
        }
    }
    if got {
        t.last = Some(Instant::now());
    }
    Ok(())
}
