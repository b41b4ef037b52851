//! What the named-client workloads `dm` and `history` share: the state
//! every client task reads, the clients released together, the pacer, the
//! watch for failures and silence, and the CPU figures at the end.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Barrier, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::conn::Client;
use crate::error::Error;
use crate::fanout::Lost;
use crate::pace::pace;
use crate::payload::filler;
use crate::procfs::{Cost, Proc, Sched};

/// What every client task shares; `job` is the workload's own part.
pub(crate) struct Shared<J> {
    pub(crate) base: Instant,
    pub(crate) messages: u32,
    /// Each client's name and address, by id.
    pub(crate) names: Vec<String>,
    pub(crate) addrs: Vec<SocketAddr>,
    /// Paced runs: how many messages each turn may have had by now.
    pub(crate) allowed: Option<Vec<AtomicU32>>,
    /// Wakes a client waiting for its turn.
    pub(crate) wake: Vec<Notify>,
    /// Progress so far (answers, deliveries), for the timeout.
    pub(crate) total: AtomicU64,
    pub(crate) fill: String,
    pub(crate) abort: CancellationToken,
    pub(crate) job: J,
}

impl<J> Shared<J> {
    /// The state of `clients` with `turns` pacing slots (if `paced`), each
    /// to say `messages` texts of `size` bytes.
    pub(crate) fn new(
        clients: &[Client],
        turns: usize,
        paced: bool,
        (messages, size): (u32, usize),
        job: J,
    ) -> Shared<J> {
        Shared {
            base: Instant::now(),
            messages,
            names: clients.iter().map(|c| c.name.clone()).collect(),
            addrs: clients.iter().map(|c| c.me).collect(),
            allowed: paced.then(|| (0..turns).map(|_| AtomicU32::new(0)).collect()),
            wake: (0..turns).map(|_| Notify::new()).collect(),
            total: AtomicU64::new(0),
            fill: filler(size),
            abort: CancellationToken::new(),
            job,
        }
    }
}

/// What a client task gives back: its tally, the client, what stopped it.
pub(crate) type Done<T> = (T, Client, Option<Error>);

/// A run under way: client tasks released together, and the pacer.
pub(crate) struct Run<J, T> {
    ctx: Arc<Shared<J>>,
    tasks: JoinSet<Done<T>>,
    /// When the clients were released.
    pub(crate) t0: Instant,
    finished: CancellationToken,
    pacer: Option<JoinHandle<()>>,
    server: Option<(Proc, Sched)>,
    load_before: Duration,
}

/// How the run's client tasks ended.
pub(crate) struct Ended<T> {
    /// Each client's id and tally.
    pub(crate) tallies: Vec<(usize, T)>,
    /// The clients, kept connected until the figures are taken.
    pub(crate) held: Vec<Client>,
    /// Clients the server disconnected or refused.
    pub(crate) evicted: Vec<Lost>,
    /// Nothing moved for the whole timeout.
    pub(crate) timed_out: bool,
}

impl<J, T> Run<J, T>
where
    J: Send + Sync + 'static,
    T: Send + 'static,
{
    /// Spawns `drive` for each client, releases them all at once, and
    /// paces the turns at `rate` each (if any).
    ///
    /// # Errors
    ///
    /// Fails if the server's or our own CPU figures cannot be read.
    pub(crate) async fn start<F, Fut>(
        ctx: &Arc<Shared<J>>,
        clients: Vec<Client>,
        server: Option<Proc>,
        rate: Option<f64>,
        drive: F,
    ) -> Result<Run<J, T>, Error>
    where
        F: Fn(Client, Arc<Shared<J>>) -> Fut,
        Fut: Future<Output = Done<T>> + Send + 'static,
    {
        let cpu_before = server.map(Proc::sched).transpose().map_err(Error::Proc)?;
        let load_before = Proc::me().cpu().map_err(Error::Proc)?;
        let start = Arc::new(Barrier::new(clients.len() + 1));
        let mut tasks = JoinSet::new();
        for c in clients {
            let (task, start) = (drive(c, ctx.clone()), start.clone());
            tasks.spawn(async move {
                start.wait().await;
                task.await
            });
        }
        start.wait().await;
        let t0 = Instant::now();
        let finished = CancellationToken::new();
        let pacer = rate.map(|rate| {
            let (ctx, finished) = (ctx.clone(), finished.clone());
            tokio::task::spawn_blocking(move || {
                if let Some(allowed) = &ctx.allowed {
                    let who: Vec<u32> = (0..allowed.len() as u32).collect();
                    pace(allowed, &ctx.wake, &who, ctx.messages, rate, || {
                        ctx.abort.is_cancelled() || finished.is_cancelled()
                    });
                }
            })
        });
        Ok(Run {
            ctx: ctx.clone(),
            tasks,
            t0,
            finished,
            pacer,
            server: server.zip(cpu_before),
            load_before,
        })
    }

    /// Waits for every client task. The first failure stops the run, as
    /// does `total` standing still for `timeout` ("{silence} for …");
    /// `progress`, if given, prints `total` of `expected` `what` each second.
    pub(crate) async fn watch(
        &mut self,
        timeout: Duration,
        silence: &str,
        progress: Option<(u64, &str)>,
    ) -> Ended<T> {
        let ctx = &self.ctx;
        let mut ended = Ended {
            tallies: Vec::new(),
            held: Vec::new(),
            evicted: Vec::new(),
            timed_out: false,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let (mut seen, mut moved, mut shown) = (0, Instant::now(), Instant::now());
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(r) = self.tasks.join_next() => {
                    let (tally, client, failure) = r.expect("client task panicked");
                    if let Some(e) = failure {
                        if ended.evicted.is_empty() {
                            eprintln!("chat-bench: {e}; stopping the run");
                        }
                        ended.evicted.push(Lost { client: client.id, reason: e.to_string() });
                        ctx.abort.cancel();
                    }
                    ended.tallies.push((client.id, tally));
                    ended.held.push(client);
                }
                _ = tick.tick() => {
                    let total = ctx.total.load(Ordering::Relaxed);
                    if total != seen {
                        (seen, moved) = (total, Instant::now());
                    } else if moved.elapsed() >= timeout && !ctx.abort.is_cancelled() {
                        eprintln!("chat-bench: {silence} for {timeout:?}; stopping the run");
                        ended.timed_out = true;
                        ctx.abort.cancel();
                    }
                    if let Some((expected, what)) = progress
                        && shown.elapsed() >= Duration::from_secs(1)
                    {
                        shown = Instant::now();
                        eprintln!("  {total} of {expected} {what}");
                    }
                }
            }
        }
        ended
    }

    /// Ends the run: the server's cost per `units` (if its pid was given)
    /// and our own CPU time; stops the pacer, then lets `held` go.
    ///
    /// # Errors
    ///
    /// Fails if the CPU figures cannot be read.
    pub(crate) async fn finish(
        self,
        units: u64,
        held: Vec<Client>,
    ) -> Result<(Option<Cost>, Duration), Error> {
        let cost = match self.server {
            Some((p, before)) => Some(p.cost(before, units).map_err(Error::Proc)?),
            None => None,
        };
        let load_cpu = Proc::me()
            .cpu()
            .map_err(Error::Proc)?
            .saturating_sub(self.load_before);
        self.finished.cancel();
        if let Some(p) = self.pacer {
            p.await.expect("pacer panicked");
        }
        drop(held);
        Ok((cost, load_cpu))
    }
}
