//! The soak workload, for memory that a server keeps after its clients
//! leave: rounds of K handshaken clients that each start a large frame and
//! stall in it, then all close.
//!
//! Each client sends a frame header claiming `claim` bytes, then only
//! `sent` bytes of payload, and sends nothing more (it keeps reading, but
//! never writes again: any byte would count as part of the frame). Once all
//! are stalled, the server's RSS is sampled for `settle` (the round's
//! peak); then every client closes, the bench waits until the server has
//! closed their sockets too (its open descriptors back to the baseline
//! count, from `/proc/PID/fd`) and its RSS has stopped moving, and reads
//! the RSS again (the round's "after").
//!
//! The baseline is the server's RSS after a warm-up round of K clients that
//! handshake and close without starting a frame: the memory any K
//! connections leave in the allocator's free lists (glibc keeps freed pages
//! that are not at the top of its heap), against which the cost of stalled
//! frames shows. The RSS of the fresh process is reported beside it.
//!
//! It passes when after every round the RSS is within `tolerance` of the
//! baseline, and the last round's "after" is within `tolerance` of the
//! first's: memory goes back, and does not ratchet up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_proto::{Event, HEADER_LEN};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;

use crate::conn::Client;
use crate::error::Error;
use crate::procfs::Proc;

/// Descriptors a server may open beyond its baseline for its own needs
/// and still count as having closed every client's socket.
const FD_SLACK: usize = 4;

/// Longest wait for the server to close its ends of a round's sockets.
const NOTICE_LIMIT: Duration = Duration::from_secs(10);

/// Options of a soak run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) server: SocketAddr,
    /// Clients per round.
    pub(crate) clients: usize,
    /// Rounds.
    pub(crate) rounds: usize,
    /// Payload length each frame header claims.
    pub(crate) claim: u32,
    /// Payload bytes actually sent (fewer than `claim`).
    pub(crate) sent: usize,
    /// Handshakes in flight at once.
    pub(crate) parallel: usize,
    /// How long the RSS is sampled with every client stalled.
    pub(crate) settle: Duration,
    /// Allowed growth over the baseline, and from the first round to the last.
    pub(crate) tolerance: f64,
    /// The whole run's time limit.
    pub(crate) timeout: Duration,
}

/// What a soak run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Clients per round.
    pub(crate) clients: usize,
    /// Rounds asked for.
    pub(crate) rounds_planned: usize,
    /// Payload length each header claimed, and bytes of it sent.
    pub(crate) claim: u32,
    pub(crate) sent: usize,
    /// Allowed growth (0.25: 25%).
    pub(crate) tolerance: f64,
    /// Server RSS before any client connected, KiB.
    pub(crate) fresh_rss_kib: u64,
    /// Server RSS after the warm-up round of idle clients, KiB: the baseline.
    pub(crate) baseline_rss_kib: u64,
    /// Server descriptors before round 1.
    pub(crate) baseline_fds: usize,
    /// Every round run.
    pub(crate) rounds: Vec<Round>,
    /// Why the run stopped early, if it did.
    pub(crate) stopped: Option<String>,
    /// Why the run failed; `None` is a pass.
    pub(crate) failure: Option<String>,
}

/// One soak round's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Round {
    /// 1-based.
    pub(crate) round: usize,
    /// Most server RSS seen with every client stalled, KiB.
    pub(crate) peak_rss_kib: u64,
    /// Server descriptors with every client stalled.
    pub(crate) peak_fds: usize,
    /// Server RSS once every client had closed and the server noticed, KiB.
    pub(crate) after_rss_kib: u64,
    /// Whether the server's descriptors went back to the baseline count.
    pub(crate) noticed: bool,
    /// Clients the server closed before the bench did (with its reason).
    pub(crate) closed_early: usize,
    /// Seconds the round took.
    pub(crate) seconds: f64,
}

impl Report {
    /// Most RSS allowed after a round.
    fn ceiling(&self, base: u64) -> f64 {
        base as f64 * (1.0 + self.tolerance)
    }

    /// What failed, or `None` for a pass.
    fn check(&self) -> Option<String> {
        if let Some(why) = &self.stopped {
            return Some(format!("stopped after {} rounds: {why}", self.rounds.len()));
        }
        if self.rounds.len() < self.rounds_planned {
            return Some(format!(
                "{} of {} rounds ran",
                self.rounds.len(),
                self.rounds_planned
            ));
        }
        let pct = self.tolerance * 100.0;
        for r in &self.rounds {
            if r.after_rss_kib as f64 > self.ceiling(self.baseline_rss_kib) {
                return Some(format!(
                    "after round {}: {} KiB, over {:.0}% above the baseline {} KiB",
                    r.round, r.after_rss_kib, pct, self.baseline_rss_kib
                ));
            }
        }
        if let (Some(first), Some(last)) = (self.rounds.first(), self.rounds.last())
            && last.after_rss_kib as f64 > self.ceiling(first.after_rss_kib)
        {
            return Some(format!(
                "after the last round {} KiB, over {:.0}% above the first's {} KiB",
                last.after_rss_kib, pct, first.after_rss_kib
            ));
        }
        None
    }

    /// Every round's memory came back, and did not ratchet.
    pub(crate) fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Runs the soak rounds against the server process `p`.
///
/// # Errors
///
/// Fails if the options are wrong or `/proc` cannot be read; a client that
/// cannot connect, or a round that overruns the time limit, stops the run
/// and is reported.
pub(crate) async fn run(opts: &Options, p: Proc) -> Result<Report, Error> {
    if opts.sent as u64 >= u64::from(opts.claim) {
        return Err(Error::Options(
            "soak: the bytes sent must be fewer than the frame claims".into(),
        ));
    }
    let deadline = Deadline::now() + opts.timeout;
    let baseline_fds = p.fds().map_err(Error::Proc)?;
    let mut report = Report {
        clients: opts.clients,
        rounds_planned: opts.rounds,
        claim: opts.claim,
        sent: opts.sent,
        tolerance: opts.tolerance,
        fresh_rss_kib: p.rss().map_err(Error::Proc)?.0,
        baseline_rss_kib: 0,
        baseline_fds,
        rounds: Vec::new(),
        stopped: None,
        failure: None,
    };
    let mut partial = Vec::with_capacity(HEADER_LEN + opts.sent);
    partial.extend_from_slice(&opts.claim.to_be_bytes());
    partial.resize(HEADER_LEN + opts.sent, b'x');
    let partial: Arc<[u8]> = partial.into();
    match tokio::time::timeout_at(deadline, one(opts, p, 0, baseline_fds, None)).await {
        Ok(Ok(r)) => report.baseline_rss_kib = r.after_rss_kib,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            report.stopped = Some("the time limit was reached in the warm-up round".into());
            report.failure = report.check();
            return Ok(report);
        }
    }
    for round in 1..=opts.rounds {
        match tokio::time::timeout_at(deadline, one(opts, p, round, baseline_fds, Some(&partial)))
            .await
        {
            Ok(Ok(r)) => report.rounds.push(r),
            Ok(Err(Error::Proc(e))) => return Err(Error::Proc(e)),
            Ok(Err(e)) => {
                report.stopped = Some(e.to_string());
                break;
            }
            Err(_) => {
                report.stopped = Some(format!("the time limit of {:?} was reached", opts.timeout));
                break;
            }
        }
    }
    report.failure = report.check();
    Ok(report)
}

/// One round; round 0, the warm-up, sends no `partial` frame.
async fn one(
    opts: &Options,
    p: Proc,
    round: usize,
    baseline_fds: usize,
    partial: Option<&Arc<[u8]>>,
) -> Result<Round, Error> {
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let stalled = Arc::new(AtomicUsize::new(0));
    let closed_early = Arc::new(AtomicUsize::new(0));
    let changed = Arc::new(Notify::new());
    let close = CancellationToken::new();
    let mut set = JoinSet::new();
    for id in 0..opts.clients {
        let (gate, stalled, closed_early, changed, close, partial) = (
            gate.clone(),
            stalled.clone(),
            closed_early.clone(),
            changed.clone(),
            close.clone(),
            partial.cloned(),
        );
        let server = opts.server;
        set.spawn(async move {
            let mut c = {
                let _permit = gate.acquire_owned().await.expect("semaphore open");
                let mut c = Client::connect(id, server, None).await?;
                c.flush().await?;
                // Past the machine on purpose: half a frame is the point.
                if let Some(partial) = &partial {
                    c.stream
                        .write_all(partial)
                        .await
                        .map_err(|e| c.lost(e.to_string()))?;
                }
                c
            };
            stalled.fetch_add(1, Ordering::Relaxed);
            changed.notify_one();
            // Read (notices, pings) but never write again; stop at `close`.
            loop {
                tokio::select! {
                    () = close.cancelled() => return Ok(()),
                    r = c.stream.readable() => r.map_err(|e| c.lost(e.to_string()))?,
                }
                let ended = matches!(c.read(), Ok(Some(0)) | Err(_));
                loop {
                    match c.poll() {
                        Ok(Some(Event::Error(_) | Event::Exit)) | Err(_) => {
                            closed_early.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                    }
                }
                if ended || c.conn.is_closed() {
                    closed_early.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
        });
    }
    // Every client connected and stalled, or the first failure.
    while stalled.load(Ordering::Relaxed) < opts.clients {
        tokio::select! {
            () = changed.notified() => {}
            Some(r) = set.join_next() => {
                if let Err(e) = r.expect("soak client task panicked") {
                    close.cancel();
                    return Err(e);
                }
            }
        }
    }
    // The round's peak: the most RSS seen while they are all stalled.
    let (mut peak_rss_kib, mut peak_fds) = (0, 0);
    let settle = Instant::now();
    while settle.elapsed() < opts.settle {
        peak_rss_kib = peak_rss_kib.max(p.rss().map_err(Error::Proc)?.0);
        peak_fds = peak_fds.max(p.fds().map_err(Error::Proc)?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    close.cancel();
    while let Some(r) = set.join_next().await {
        r.expect("soak client task panicked")?;
    }
    // Until the server has closed its ends too, then until its RSS settles.
    let noticed = poll_until(NOTICE_LIMIT, Duration::from_millis(20), || {
        Ok(p.fds()? <= baseline_fds + FD_SLACK)
    })
    .await?;
    let mut after_rss_kib = p.rss().map_err(Error::Proc)?.0;
    poll_until(Duration::from_secs(2), Duration::from_millis(100), || {
        let now = p.rss()?.0;
        let still = now.abs_diff(after_rss_kib) * 100 <= after_rss_kib;
        after_rss_kib = now;
        Ok(still)
    })
    .await?;
    Ok(Round {
        round,
        peak_rss_kib,
        peak_fds,
        after_rss_kib,
        noticed,
        closed_early: closed_early.load(Ordering::Relaxed),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Checks `done` every `every` until it holds (`true`) or `limit` passes
/// (`false`).
async fn poll_until(
    limit: Duration,
    every: Duration,
    mut done: impl FnMut() -> std::io::Result<bool>,
) -> Result<bool, Error> {
    let start = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        if done().map_err(Error::Proc)? {
            return Ok(true);
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
    }
}
