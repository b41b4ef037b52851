//! The history workloads (the HISTORY capability, PROTOCOL.md section 9).
//!
//! **`ack`**: N HISTORY clients, in the lobby or in rooms of S, each say M
//! messages, paced (`crate::pace`) or with at most W unanswered. Each
//! sender numbers its `Say`s from 1 as the server does and times each from
//! its writing to its `Stored { seq }`; every seq must be answered exactly
//! once, never `Unstored`. Each receiver checks what it gets as `fanout`
//! does (every message of its room's other members once, in per-sender
//! order, intact) and checks the room's numbering: ids strictly increasing
//! over its `Posted` and its own `Stored`, and every `Posted`'s `prev` the
//! last id it had (it was in the room throughout).
//!
//! **`resume`**: one client says K messages in a fresh room and waits for
//! every `Stored`; then a fresh HISTORY client joins the room and times,
//! again and again, `Resume { after: 0, limit: 0 }` paged until `more =
//! false` (the next `Resume` sent on each page), checking it got exactly
//! the K in order; then as often `Recent { count }`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_proto::{Conversation, Entry, Event, Message, features};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::conn::{Ask, Client, Woke};
use crate::crowd::{self, Run};
use crate::error::Error;
use crate::fanout::Lost;
use crate::latency::{Latency, histogram};
use crate::payload::{HEADER, check_fits, check_size, filler, parse, text};
use crate::plan::Plan;
use crate::procfs::{Cost, Proc};
use crate::rooms::Seats;

/// What a HISTORY client asks for.
const HISTORY: u64 = features::ROOMS | features::HISTORY;

/// Options of an `ack` run.
#[derive(Debug, Clone)]
pub(crate) struct AckOptions {
    pub(crate) server: SocketAddr,
    /// Who is in which room: everyone in the lobby ([`Plan::one_room`]), or
    /// named rooms of S, one each.
    pub(crate) plan: Plan,
    /// Messages each client says.
    pub(crate) messages: u32,
    /// Text size, in bytes (at least [`HEADER`]).
    pub(crate) size: usize,
    /// Messages per second per client; `None`: at most `window` unanswered.
    pub(crate) rate: Option<f64>,
    /// Most unanswered messages per client, unpaced.
    pub(crate) window: u32,
    /// Handshakes in flight at once.
    pub(crate) parallel: usize,
    /// What this run's client names start with.
    pub(crate) tag: String,
    /// Give up when nothing arrives for this long.
    pub(crate) timeout: Duration,
    /// Print a progress line every second to stderr.
    pub(crate) progress: bool,
}

/// What an `ack` run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AckReport {
    /// `"ack"`.
    pub(crate) mode: &'static str,
    pub(crate) clients: usize,
    /// Members of each room; `None`: everyone in the lobby.
    pub(crate) room_size: Option<usize>,
    /// Messages each client says.
    pub(crate) messages: u32,
    pub(crate) size: usize,
    /// Messages a second per client asked for (`None`: windowed).
    pub(crate) target_rate: Option<f64>,
    /// Messages said: clients × messages, each to be acknowledged once.
    pub(crate) expected_acks: u64,
    /// `Stored` answers, each for a seq not answered before.
    pub(crate) acks: u64,
    /// `Stored` answers for a seq already answered.
    pub(crate) duplicate_acks: u64,
    /// `Unstored` answers (each stops the run).
    pub(crate) unstored: u64,
    /// Deliveries expected: every message to every other member of its room.
    pub(crate) expected: u64,
    /// `Posted` deliveries taken, intact and in order.
    pub(crate) deliveries: u64,
    /// Seconds from the start to the last answer or delivery.
    pub(crate) seconds: f64,
    /// Deliveries per second.
    pub(crate) rate: f64,
    /// Acknowledgements per second.
    pub(crate) ack_rate: f64,
    /// Send-to-`Stored` latency, microseconds.
    pub(crate) latency_us: Latency,
    /// Send-to-`Posted` latency (sender's clock in the text), microseconds.
    pub(crate) delivery_latency_us: Latency,
    /// Expected deliveries that never came.
    pub(crate) losses: u64,
    pub(crate) duplicates: u64,
    pub(crate) order_violations: u64,
    /// Deliveries whose text, sender or room was wrong.
    pub(crate) corrupt: u64,
    /// Ids (of `Posted` or own `Stored`) not above the last one the
    /// receiver had in the room.
    pub(crate) id_violations: u64,
    /// `Posted` whose `prev` was not the last id the receiver had.
    pub(crate) broken_links: u64,
    /// Clients the server disconnected or refused, with the reason.
    pub(crate) evicted: Vec<Lost>,
    /// Nothing arrived for the whole timeout.
    pub(crate) timed_out: bool,
    /// Server figures, if its pid was given: CPU per delivery.
    pub(crate) server: Option<Cost>,
    /// Server CPU microseconds per message stored (and fanned out).
    pub(crate) cpu_us_per_message: Option<f64>,
    /// CPU seconds the load generator itself used during the run.
    pub(crate) load_cpu_seconds: f64,
}

impl AckReport {
    /// Every message stored and acknowledged once, delivered once to every
    /// other member, in order, intact, with ids and links unbroken.
    pub(crate) fn passed(&self) -> bool {
        self.acks == self.expected_acks
            && self.duplicate_acks == 0
            && self.unstored == 0
            && self.deliveries == self.expected
            && self.losses == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.corrupt == 0
            && self.id_violations == 0
            && self.broken_links == 0
            && self.evicted.is_empty()
            && !self.timed_out
    }
}

/// What every `ack` client task shares.
type Shared = crowd::Shared<Job>;

/// The `ack` run's own part of what its client tasks share.
struct Job {
    plan: Plan,
    window: u32,
}

/// What one `ack` client saw.
#[derive(Debug)]
struct Tally {
    acks: u64,
    duplicate_acks: u64,
    unstored: u64,
    got: u64,
    duplicates: u64,
    order: u64,
    corrupt: u64,
    id_violations: u64,
    broken_links: u64,
    last: Option<Instant>,
    ack_hist: Histogram<u64>,
    delivery_hist: Histogram<u64>,
}

/// Runs the `ack` workload once.
///
/// # Errors
///
/// Fails if a client cannot connect, be named, or take its seat.
/// Refusals, evictions and losses during the run are in the report.
pub(crate) async fn ack(opts: &AckOptions, server: Option<Proc>) -> Result<AckReport, Error> {
    check_size(opts.size)?;
    if opts.window == 0 && opts.rate.is_none() {
        return Err(Error::Options(
            "unpaced, --window must be at least 1 message".into(),
        ));
    }
    let clients = connect(opts).await?;
    check_fits(opts.size, clients[0].conn.max_text_len())?;
    let n = clients.len();
    let job = Job {
        plan: opts.plan.clone(),
        window: opts.window,
    };
    let ctx = Arc::new(Shared::new(
        &clients,
        n,
        opts.rate.is_some(),
        (opts.messages, opts.size),
        job,
    ));
    let mut run = Run::start(&ctx, clients, server, opts.rate, |c, ctx| async move {
        drive(c, &ctx).await
    })
    .await?;

    let expected_acks = n as u64 * u64::from(opts.messages);
    let expected: u64 = (0..n)
        .map(|c| opts.plan.heard(c).len() as u64 * u64::from(opts.messages))
        .sum();
    let progress = opts
        .progress
        .then_some((expected_acks + expected, "answers and deliveries"));
    let ended = run.watch(opts.timeout, "nothing", progress).await;
    let (evicted, timed_out) = (ended.evicted, ended.timed_out);
    let mut t = Tally::new();
    for (_, x) in &ended.tallies {
        t.acks += x.acks;
        t.duplicate_acks += x.duplicate_acks;
        t.unstored += x.unstored;
        t.got += x.got;
        t.duplicates += x.duplicates;
        t.order += x.order;
        t.corrupt += x.corrupt;
        t.id_violations += x.id_violations;
        t.broken_links += x.broken_links;
        t.last = t.last.max(x.last);
        t.ack_hist.add(&x.ack_hist).expect("same histogram bounds");
        t.delivery_hist
            .add(&x.delivery_hist)
            .expect("same histogram bounds");
    }
    let t0 = run.t0;
    let (cost, load_cpu) = run.finish(t.got, ended.held).await?;
    let seconds = t
        .last
        .map_or(0.0, |l: Instant| l.duration_since(t0).as_secs_f64());
    let cpu_us_per_message = cost
        .as_ref()
        .map(|c| c.cpu_seconds * 1e6 / t.acks.max(1) as f64);
    Ok(AckReport {
        mode: "ack",
        clients: n,
        room_size: opts.plan.named().then(|| opts.plan.room_size()),
        messages: opts.messages,
        size: opts.size,
        target_rate: opts.rate,
        expected_acks,
        acks: t.acks,
        duplicate_acks: t.duplicate_acks,
        unstored: t.unstored,
        expected,
        deliveries: t.got,
        seconds,
        rate: t.got as f64 / seconds.max(1e-9),
        ack_rate: t.acks as f64 / seconds.max(1e-9),
        latency_us: Latency::of(&t.ack_hist),
        delivery_latency_us: Latency::of(&t.delivery_hist),
        losses: expected.saturating_sub(t.got + t.corrupt),
        duplicates: t.duplicates,
        order_violations: t.order,
        corrupt: t.corrupt,
        id_violations: t.id_violations,
        broken_links: t.broken_links,
        evicted,
        timed_out,
        server: cost,
        cpu_us_per_message,
        load_cpu_seconds: load_cpu.as_secs_f64(),
    })
}

impl Tally {
    fn new() -> Tally {
        Tally {
            acks: 0,
            duplicate_acks: 0,
            unstored: 0,
            got: 0,
            duplicates: 0,
            order: 0,
            corrupt: 0,
            id_violations: 0,
            broken_links: 0,
            last: None,
            ack_hist: histogram(),
            delivery_hist: histogram(),
        }
    }
}

/// Connects the N HISTORY clients, named `{tag}.{id}`, each in its room
/// (the lobby, or its named room out of the lobby), in id order.
async fn connect(opts: &AckOptions) -> Result<Vec<Client>, Error> {
    let seats = Seats {
        server: opts.server,
        plan: &opts.plan,
        tag: &opts.tag,
        features: HISTORY,
        parallel: opts.parallel,
        timeout: opts.timeout,
    };
    seats
        .fill(&format!("seat all {} clients", opts.plan.clients()))
        .await
}

/// One client's run: says its messages as its turns (or its window) allow,
/// and takes every answer and delivery.
async fn drive(mut c: Client, ctx: &Shared) -> (Tally, Client, Option<Error>) {
    let id = c.id;
    let mut t = Tally::new();
    let mut state = State {
        sent_at: Vec::with_capacity(ctx.messages as usize),
        answered: vec![false; ctx.messages as usize],
        next: vec![0; ctx.job.plan.clients()],
        last_id: None,
    };
    let room = c.rooms[0].clone();
    let expected = ctx.job.plan.heard(id).len() as u64 * u64::from(ctx.messages);
    let mut sent = 0u32;
    let mut write_failed = false;
    let aborted = ctx.abort.cancelled();
    tokio::pin!(aborted);
    let failure = loop {
        let limit = match &ctx.allowed {
            Some(allowed) => allowed[id].load(Ordering::Acquire).min(ctx.messages),
            None => (t.acks as u32)
                .saturating_add(ctx.job.window)
                .min(ctx.messages),
        };
        let mut refused = None;
        while sent < limit && !write_failed {
            let ts = ctx.base.elapsed().as_nanos() as u64;
            let msg = Message::Say {
                room: room.clone(),
                text: text(id, sent, ts, &ctx.fill),
            };
            if let Err(e) = c.conn.send(&msg) {
                refused = Some(c.lost(format!("cannot send: {e}")));
                break;
            }
            sent += 1;
            if c.conn.seq() != u64::from(sent) {
                refused = Some(c.lost(format!(
                    "the protocol machine numbered Say {sent} as {}",
                    c.conn.seq()
                )));
                break;
            }
            state.sent_at.push(ts);
        }
        if let Some(e) = refused {
            break Some(e);
        }
        if t.acks + t.unstored >= u64::from(ctx.messages)
            && t.got + t.corrupt >= expected
            && !c.sending()
        {
            break None;
        }
        let waiting = ctx.allowed.is_some() && sent == limit && sent < ctx.messages;
        let turn = waiting.then(|| &ctx.wake[id]);
        match c.wait(&mut write_failed, turn, &mut aborted).await {
            Err(e) => break Some(e),
            Ok(Woke::Stopped) => break None,
            Ok(Woke::Again) => {}
            Ok(Woke::Read) => {
                let before = t.acks + t.got;
                let r = take(&mut c, ctx, &room, &mut state, &mut t);
                ctx.total
                    .fetch_add(t.acks + t.got - before, Ordering::Relaxed);
                if let Err(e) = r {
                    break Some(e);
                }
                if c.conn.is_closed() {
                    break Some(c.lost("the server closed the connection".into()));
                }
            }
        }
    };
    (t, c, failure)
}

/// A client's bookkeeping beside its tally.
struct State {
    /// When each of its `Say`s was written (ns since the base), by seq - 1.
    sent_at: Vec<u64>,
    /// Which of its `Say`s have an answer, by seq - 1.
    answered: Vec<bool>,
    /// Per sender, the sequence number expected next.
    next: Vec<u32>,
    /// The last id it has in its room (from `Posted` and its own `Stored`).
    last_id: Option<u64>,
}

/// Takes every event the last read completed.
fn take(
    c: &mut Client,
    ctx: &Shared,
    room: &str,
    s: &mut State,
    t: &mut Tally,
) -> Result<(), Error> {
    let now = ctx.base.elapsed().as_nanos() as u64;
    let mut got = false;
    loop {
        let (posted_room, entry) = match c.poll()? {
            None => break,
            Some(Event::Message(Message::Stored { seq, id, .. })) => {
                got = true;
                // The machine refuses a seq of 0 or above what was sent.
                let i = (seq - 1) as usize;
                if s.answered[i] {
                    t.duplicate_acks += 1;
                    continue;
                }
                s.answered[i] = true;
                t.acks += 1;
                t.ack_hist
                    .saturating_record(now.saturating_sub(s.sent_at[i]).max(1));
                if s.last_id.is_some_and(|l| id <= l) {
                    t.id_violations += 1;
                }
                s.last_id = s.last_id.max(Some(id));
                continue;
            }
            Some(Event::Message(Message::Unstored { seq, code, detail })) => {
                t.unstored += 1;
                return Err(c.lost(format!(
                    "the server did not store Say {seq}: {code:?}: {detail}"
                )));
            }
            Some(Event::Message(Message::Posted { room, entry })) => (room, entry),
            Some(other) => {
                c.check(other)?;
                continue;
            }
        };
        got = true;
        if posted_room != room {
            t.corrupt += 1;
            continue;
        }
        if let Some(last) = s.last_id {
            if entry.id <= last {
                t.id_violations += 1;
            }
            if entry.prev != last {
                t.broken_links += 1;
            }
        }
        s.last_id = s.last_id.max(Some(entry.id));
        let Some((who, seq, ts)) = parse(entry.text.as_bytes()) else {
            t.corrupt += 1;
            continue;
        };
        if ctx.job.plan.heard_slot(c.id, who).is_none()
            || entry.from.name != ctx.names[who]
            || entry.from.addr() != ctx.addrs[who]
            || entry.text.as_bytes()[HEADER..] != *ctx.fill.as_bytes()
        {
            t.corrupt += 1;
            continue;
        }
        let next = &mut s.next[who];
        if seq < *next {
            t.duplicates += 1;
            continue;
        }
        if seq > *next {
            t.order += 1;
        }
        *next = seq + 1;
        t.got += 1;
        t.delivery_hist
            .saturating_record(now.saturating_sub(ts).max(1));
    }
    if got {
        t.last = Some(Instant::now());
    }
    Ok(())
}

/// Options of a `resume` run.
#[derive(Debug, Clone)]
pub(crate) struct ResumeOptions {
    pub(crate) server: SocketAddr,
    /// Messages stored in the room, K.
    pub(crate) messages: u32,
    /// Text size, in bytes (at least [`HEADER`]).
    pub(crate) size: usize,
    /// Resumes (and `Recent`s) timed.
    pub(crate) repeat: u32,
    /// `Recent { count }`.
    pub(crate) recent: u32,
    /// Most unanswered `Say`s while storing.
    pub(crate) window: u32,
    /// The run's client and room names start with this.
    pub(crate) tag: String,
    /// Give up on any one step that takes longer.
    pub(crate) timeout: Duration,
}

/// What a `resume` run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResumeReport {
    /// `"resume"`.
    pub(crate) mode: &'static str,
    /// Messages stored in the room, K.
    pub(crate) messages: u32,
    pub(crate) size: usize,
    /// Resumes timed (and `Recent`s).
    pub(crate) repeat: u32,
    /// Seconds to store the K (from the first `Say` to the last `Stored`).
    pub(crate) store_seconds: f64,
    /// Resumes that completed (each checked).
    pub(crate) resumes: u32,
    /// Pages per resume (the last one's).
    pub(crate) pages: u32,
    /// Seconds over all the resumes.
    pub(crate) seconds: f64,
    /// Messages per second paged in, over all the resumes.
    pub(crate) rate: f64,
    /// One resume of the K end to end, microseconds.
    pub(crate) latency_us: Latency,
    /// `Recent { count }`.
    pub(crate) recent_count: u32,
    /// `Recent`s that completed (each checked).
    pub(crate) recents: u32,
    /// One `Recent` round trip, microseconds.
    pub(crate) recent_latency_us: Latency,
    /// Resumes or `Recent`s that did not give exactly the messages stored,
    /// in order, linked, with nothing said missing.
    pub(crate) wrong: u32,
    /// The first wrong answer, described.
    pub(crate) first_wrong: Option<String>,
    /// What stopped the measurement early, if anything.
    pub(crate) failure: Option<String>,
    /// Server figures over the resumes, if its pid was given: CPU per resume.
    pub(crate) server: Option<Cost>,
    /// Server CPU microseconds per `Recent`.
    pub(crate) recent_cpu_us: Option<f64>,
    /// CPU seconds the load generator itself used while measuring.
    pub(crate) load_cpu_seconds: f64,
}

impl ResumeReport {
    /// Every resume and `Recent` completed and gave exactly what was stored.
    pub(crate) fn passed(&self) -> bool {
        self.failure.is_none()
            && self.wrong == 0
            && self.resumes == self.repeat
            && self.recents == self.repeat
    }
}

/// Runs the `resume` workload once.
///
/// # Errors
///
/// Fails if a client cannot connect, be seated, or the K cannot be stored.
/// What goes wrong while measuring is in the report.
pub(crate) async fn resume(
    opts: &ResumeOptions,
    server: Option<Proc>,
) -> Result<ResumeReport, Error> {
    check_size(opts.size)?;
    if opts.messages == 0 || opts.repeat == 0 || opts.recent == 0 || opts.window == 0 {
        return Err(Error::Options(
            "-k, --repeat, --recent and --window must be at least 1".into(),
        ));
    }
    let room = format!("{}-r", opts.tag);
    let seat = |id: usize, name: String| {
        let join = vec![room.clone()];
        async move {
            let ask = Ask {
                name: &name,
                join: &join,
                part_lobby: true,
            };
            Client::named_with(id, opts.server, ask, HISTORY, |_, _| {}).await
        }
    };
    let within = |what: String| Error::Timeout(format!("{what} took over {:?}", opts.timeout));
    let writer = tokio::time::timeout(opts.timeout, seat(0, format!("{}.w", opts.tag)))
        .await
        .map_err(|_| within("seating the writer".into()))??;
    check_fits(opts.size, writer.conn.max_text_len())?;
    let t0 = Instant::now();
    let (ids, writer) = tokio::time::timeout(opts.timeout, store(writer, opts, &room))
        .await
        .map_err(|_| within(format!("storing {} messages", opts.messages)))??;
    let store_seconds = t0.elapsed().as_secs_f64();
    let sender = chat_proto::Member::new(writer.name.clone(), writer.me);
    drop(writer);

    let mut reader = tokio::time::timeout(opts.timeout, seat(1, format!("{}.r", opts.tag)))
        .await
        .map_err(|_| within("seating the reader".into()))??;
    let conversation = Conversation::Room(room.clone());
    let check = Check {
        ids: &ids,
        sender,
        fill: filler(opts.size),
    };
    let mut r = ResumeReport {
        mode: "resume",
        messages: opts.messages,
        size: opts.size,
        repeat: opts.repeat,
        store_seconds,
        resumes: 0,
        pages: 0,
        seconds: 0.0,
        rate: 0.0,
        latency_us: Latency::default(),
        recent_count: opts.recent,
        recents: 0,
        recent_latency_us: Latency::default(),
        wrong: 0,
        first_wrong: None,
        failure: None,
        server: None,
        recent_cpu_us: None,
        load_cpu_seconds: 0.0,
    };
    let cpu_before = server.map(Proc::sched).transpose().map_err(Error::Proc)?;
    let load_before = Proc::me().cpu().map_err(Error::Proc)?;
    let mut hist = histogram();
    let t1 = Instant::now();
    for _ in 0..opts.repeat {
        let t = Instant::now();
        let step = tokio::time::timeout(opts.timeout, page_all(&mut reader, &conversation)).await;
        let elapsed = t.elapsed();
        let (entries, pages, missing) = match step {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => {
                r.failure = Some(e.to_string());
                break;
            }
            Err(_) => {
                r.failure = Some(format!("a resume took over {:?}", opts.timeout));
                break;
            }
        };
        hist.saturating_record(elapsed.as_nanos() as u64);
        r.resumes += 1;
        r.pages = pages;
        if let Err(why) = check.all(&entries, missing) {
            wrong(&mut r, format!("resume: {why}"));
        }
    }
    r.seconds = t1.elapsed().as_secs_f64();
    r.rate = f64::from(r.resumes) * f64::from(opts.messages) / r.seconds.max(1e-9);
    r.latency_us = Latency::of(&hist);
    if let (Some(p), Some(before)) = (server, cpu_before) {
        r.server = Some(p.cost(before, u64::from(r.resumes)).map_err(Error::Proc)?);
    }

    let recent_before = server.map(Proc::sched).transpose().map_err(Error::Proc)?;
    let mut hist = histogram();
    let want = (opts.recent as usize).min(ids.len());
    for _ in 0..opts.repeat {
        if r.failure.is_some() {
            break;
        }
        let t = Instant::now();
        let ask = Message::Recent {
            conversation: conversation.clone(),
            count: opts.recent,
        };
        let step = tokio::time::timeout(opts.timeout, request(&mut reader, &ask)).await;
        let elapsed = t.elapsed();
        let (entries, missing, more) = match step {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => {
                r.failure = Some(e.to_string());
                break;
            }
            Err(_) => {
                r.failure = Some(format!("a Recent took over {:?}", opts.timeout));
                break;
            }
        };
        hist.saturating_record(elapsed.as_nanos() as u64);
        r.recents += 1;
        // A page stops early (more) only past the server's page size or a frame.
        if !more && let Err(why) = check.last(&entries, want, missing) {
            wrong(&mut r, format!("recent: {why}"));
        }
    }
    r.recent_latency_us = Latency::of(&hist);
    if let (Some(p), Some(before)) = (server, recent_before) {
        let c = p.sched().map_err(Error::Proc)?;
        r.recent_cpu_us = Some(
            c.cpu.saturating_sub(before.cpu).as_secs_f64() * 1e6 / f64::from(r.recents.max(1)),
        );
    }
    r.load_cpu_seconds = Proc::me()
        .cpu()
        .map_err(Error::Proc)?
        .saturating_sub(load_before)
        .as_secs_f64();
    drop(reader);
    Ok(r)
}

/// Counts a wrong answer, keeping the first one's description.
fn wrong(r: &mut ResumeReport, why: String) {
    r.wrong += 1;
    r.first_wrong.get_or_insert(why);
}

/// Says K messages in `room` with at most `window` unanswered; returns the
/// ids of their `Stored`, in seq order.
async fn store(
    mut c: Client,
    opts: &ResumeOptions,
    room: &str,
) -> Result<(Vec<u64>, Client), Error> {
    let k = opts.messages as usize;
    let fill = filler(opts.size);
    let base = Instant::now();
    let mut ids = vec![0u64; k];
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < k {
        while sent < k && sent < acked + opts.window as usize {
            let ts = base.elapsed().as_nanos() as u64;
            let msg = Message::Say {
                room: room.into(),
                text: text(c.id, sent as u32, ts, &fill),
            };
            c.conn
                .send(&msg)
                .map_err(|e| c.lost(format!("cannot send: {e}")))?;
            sent += 1;
        }
        match c.next_event().await? {
            Event::Message(Message::Stored { seq, id, .. }) => {
                let slot = &mut ids[(seq - 1) as usize];
                if *slot != 0 {
                    return Err(c.lost(format!("Say {seq} was acknowledged twice")));
                }
                *slot = id;
                acked += 1;
            }
            Event::Message(Message::Unstored { seq, code, detail }) => {
                return Err(c.lost(format!(
                    "the server did not store Say {seq}: {code:?}: {detail}"
                )));
            }
            Event::Error(reason) => return Err(c.lost(format!("evicted by the server: {reason}"))),
            _ => {}
        }
    }
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(c.lost("the server numbered the room's messages out of order".into()));
    }
    Ok((ids, c))
}

/// One `Resume { after: 0, limit: 0 }` paged to the end: every entry, the
/// pages it took, and whether any page said `missing`.
async fn page_all(
    c: &mut Client,
    conversation: &Conversation,
) -> Result<(Vec<Entry>, u32, bool), Error> {
    let (mut all, mut pages, mut missing_any, mut after) = (Vec::new(), 0, false, 0);
    loop {
        let ask = Message::Resume {
            conversation: conversation.clone(),
            after,
            limit: 0,
        };
        let (entries, missing, more) = request(c, &ask).await?;
        pages += 1;
        missing_any |= missing;
        if more {
            let Some(last) = entries.last() else {
                return Err(c.lost("a Page with more = true held no entry".into()));
            };
            after = last.id;
        }
        all.extend(entries);
        if !more {
            return Ok((all, pages, missing_any));
        }
    }
}

/// Sends `ask` and waits for its `Page`: `(entries, missing, more)`.
async fn request(c: &mut Client, ask: &Message) -> Result<(Vec<Entry>, bool, bool), Error> {
    c.conn
        .send(ask)
        .map_err(|e| c.lost(format!("cannot send {}: {e}", ask.name())))?;
    loop {
        match c.next_event().await? {
            Event::Message(Message::Page {
                entries,
                missing,
                more,
                ..
            }) => return Ok((entries, missing, more)),
            Event::Message(Message::Refused {
                code,
                subject,
                detail,
            }) => {
                return Err(c.lost(format!(
                    "the server refused {}: {code:?} for {subject:?}: {detail}",
                    ask.name()
                )));
            }
            Event::Error(reason) => return Err(c.lost(format!("evicted by the server: {reason}"))),
            Event::Exit => return Err(c.lost("the server sent Exit (shutting down)".into())),
            _ => {}
        }
    }
}

/// What the stored messages were: their ids, their sender, their filler.
struct Check<'a> {
    ids: &'a [u64],
    sender: chat_proto::Member,
    fill: String,
}

impl Check<'_> {
    /// `entries` are exactly the stored messages, in order, linked.
    fn all(&self, entries: &[Entry], missing: bool) -> Result<(), String> {
        if entries.len() != self.ids.len() {
            return Err(format!(
                "{} entries, {} were stored",
                entries.len(),
                self.ids.len()
            ));
        }
        self.run(entries, 0, missing)
    }

    /// `entries` are the last `want` stored messages, in order, linked.
    fn last(&self, entries: &[Entry], want: usize, missing: bool) -> Result<(), String> {
        if entries.len() != want {
            return Err(format!("{} entries, {want} asked for", entries.len()));
        }
        self.run(entries, self.ids.len() - want, missing)
    }

    /// `entries` are the stored messages from number `from` on.
    fn run(&self, entries: &[Entry], from: usize, missing: bool) -> Result<(), String> {
        if missing {
            return Err("the page says earlier messages are missing".into());
        }
        let mut prev = if from == 0 { 0 } else { self.ids[from - 1] };
        for (i, e) in entries.iter().enumerate() {
            let q = from + i;
            let want = self.ids[q];
            if e.id != want {
                return Err(format!("entry {q} has id {}, stored as {want}", e.id));
            }
            if e.prev != prev {
                return Err(format!("entry {q} links to {}, not {prev}", e.prev));
            }
            prev = e.id;
            let ok = parse(e.text.as_bytes()).is_some_and(|(_, seq, _)| seq as usize == q)
                && e.text.as_bytes()[HEADER..] == *self.fill.as_bytes()
                && e.from == self.sender;
            if !ok {
                return Err(format!("entry {q} (id {}) is not the message stored", e.id));
            }
        }
        Ok(())
    }
}
