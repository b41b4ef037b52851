//! The idle workload: K clients connect, handshake and sit still, to
//! measure what an idle connection costs the server.
//!
//! Once all are connected, every client reads (its protocol machine answers
//! the server's `Ping`s), counting the `Joined` notices the server sends: with presence on, K
//! clients arriving get at least K(K-1)/2 of them (each hears of those who
//! come after it; a server that also tells a newcomer who is there sends
//! twice as many). Named clients hear of those who come after them as
//! `Entered`, and of those already there in the lobby's `Roster`: both
//! count. The measurement starts once that many have arrived and
//! no more came for [`QUIET`], when the outboxes are empty again.
//!
//! With `rooms` set, the clients are named ones (the ROOMS capability):
//! each asks for a name and is in `rooms` rooms, the lobby (where every
//! client starts) and `rooms - 1` rooms of `room_size` laid out as in
//! `rooms` runs. The lobby notices are then `Entered`s; each client waits
//! for its name and its rosters before it counts as connected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_proto::{Event, Message};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::conn::{Ask, Client, LOBBY};
use crate::error::Error;
use crate::plan::Plan;
use crate::procfs::{Cost, Proc};

/// How long no notice may arrive before the clients count as settled.
const QUIET: Duration = Duration::from_millis(250);

/// Options of an idle run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) server: SocketAddr,
    /// Connections to open and hold.
    pub(crate) connections: usize,
    /// Handshakes in flight at once.
    pub(crate) parallel: usize,
    /// How long to hold them once all are open and settled.
    pub(crate) hold: Duration,
    /// Whether the server announces joins (its default).
    pub(crate) presence: bool,
    /// Longest wait for the connections and the notices.
    pub(crate) timeout: Duration,
    /// Named clients, each in this many rooms, the lobby included (0:
    /// version 1 clients).
    pub(crate) rooms: usize,
    /// Members of each room besides the lobby.
    pub(crate) room_size: usize,
    /// What this run's client and room names start with.
    pub(crate) tag: String,
}

/// What an idle run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Connections opened and held.
    pub(crate) connections: usize,
    /// Rooms each client is in, the lobby included (0: version 1 clients,
    /// no name).
    pub(crate) rooms: usize,
    /// Lobby notices (`Joined`, or `Entered` for named clients) the
    /// clients received, over all of them.
    pub(crate) joined_notices: u64,
    /// Whether they are TLS connections (`--tls`).
    pub(crate) tls: bool,
    /// Seconds to open them all.
    pub(crate) connect_seconds: f64,
    /// Connections opened per second, each a TCP connect and the chat
    /// handshake (and a full TLS handshake with `--tls`).
    pub(crate) handshakes_per_second: f64,
    /// Seconds until every join notice had arrived.
    pub(crate) settle_seconds: f64,
    /// Server RSS before, KiB.
    pub(crate) rss_before_kib: Option<u64>,
    /// Server RSS with all connections held (most seen), KiB.
    pub(crate) rss_after_kib: Option<u64>,
    /// Server RSS added per connection, bytes.
    pub(crate) rss_per_connection: Option<f64>,
    /// Server CPU for the whole run.
    pub(crate) server: Option<Cost>,
}

/// Opens and holds idle connections.
///
/// # Errors
///
/// Fails if any connection cannot be made or is closed by the server, or if
/// the connections or notices do not all arrive within the timeout.
pub(crate) async fn run(opts: &Options, server: Option<Proc>) -> Result<Report, Error> {
    let plan = match opts.rooms {
        0 | 1 => None,
        n => Some(Arc::new(Plan::rooms(
            opts.connections,
            None,
            opts.room_size,
            n - 1,
            1,
            &format!("{}-", opts.tag),
        )?)),
    };
    let before = match server {
        Some(p) => Some((
            p.rss().map_err(Error::Proc)?.0,
            p.sched().map_err(Error::Proc)?,
        )),
        None => None,
    };
    let k = opts.connections;
    let expected = if opts.presence {
        (k as u64) * (k as u64).saturating_sub(1) / 2
    } else {
        0
    };
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let connected = Arc::new(AtomicUsize::new(0));
    let notices = Arc::new(AtomicU64::new(0));
    let changed = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let all_in = CancellationToken::new();
    let mut set = JoinSet::new();
    for id in 0..k {
        let (gate, connected, notices, changed, stop, all_in) = (
            gate.clone(),
            connected.clone(),
            notices.clone(),
            changed.clone(),
            stop.clone(),
            all_in.clone(),
        );
        let server = opts.server;
        let named = (opts.rooms > 0).then(|| {
            let join = plan.as_ref().map_or(Vec::new(), |p| p.names_of(id));
            (format!("{}.{id}", opts.tag), join)
        });
        set.spawn(async move {
            let mut c = {
                let _permit = gate.acquire_owned().await.expect("semaphore open");
                match named {
                    None => Client::connect(id, server, None).await?,
                    Some((name, join)) => {
                        // Others' arrivals seen while waiting for our own answers.
                        let mut early = 0;
                        let ask = Ask {
                            name: &name,
                            join: &join,
                            part_lobby: false,
                        };
                        let c = Client::named(id, server, ask, |e, me| {
                            early += lobby_notices(e, me);
                        })
                        .await?;
                        notices.fetch_add(early, Ordering::Relaxed);
                        c
                    }
                }
            };
            if connected.fetch_add(1, Ordering::Relaxed) + 1 == k {
                changed.notify_one();
                all_in.cancel();
            }
            // Nobody reads until everyone is in, as the old bench did: the
            // server's notices pile up in large batches instead of being
            // trickled to clients that read each as it comes.
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = all_in.cancelled() => {}
            }
            // Count each read's notices at once, and wake the watcher only
            // when the total crosses what it waits for: millions of notices
            // arrive, and a shared counter touched per notice would cost
            // more than the server being measured.
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    r = c.stream.readable() => r.map_err(|e| c.lost(e.to_string()))?,
                }
                c.read()?;
                let mut joined = 0;
                while let Some(event) = c.poll()? {
                    match event {
                        ref e if lobby_notices(e, c.me) > 0 => joined += lobby_notices(e, c.me),
                        Event::Error(reason) => {
                            return Err(c.lost(format!("the server sent Error: {reason}")));
                        }
                        Event::Exit => return Err(c.lost("the server sent Exit".into())),
                        _ => {}
                    }
                }
                if joined > 0 {
                    let before = notices.fetch_add(joined, Ordering::Relaxed);
                    if before < expected && before + joined >= expected {
                        changed.notify_one();
                    }
                }
                if c.sending() {
                    c.flush().await?; // the machine's Pongs
                }
                if c.conn.is_closed() {
                    return Err(c.lost("the server closed the connection".into()));
                }
            }
        });
    }
    let deadline = tokio::time::Instant::now() + opts.timeout;
    // Wait for the condition, failing on any client's end or the deadline.
    let mut wait = async |what: &str, done: &dyn Fn() -> bool| -> Result<(), Error> {
        while !done() {
            tokio::select! {
                () = changed.notified() => {}
                Some(r) = set.join_next() => {
                    r.expect("client task panicked")?;
                    return Err(Error::Timeout(format!("a client stopped while {what}")));
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Error::Timeout(format!(
                        "timed out after {:?} {what} ({} of {k} connected, {} of {expected} join notices)",
                        opts.timeout,
                        connected.load(Ordering::Relaxed),
                        notices.load(Ordering::Relaxed),
                    )));
                }
            }
        }
        Ok(())
    };
    wait("connecting", &|| connected.load(Ordering::Relaxed) == k).await?;
    let connect_seconds = t0.elapsed().as_secs_f64();
    wait(
        "waiting for the join notices (is the server's presence setting the same as ours?)",
        &|| notices.load(Ordering::Relaxed) >= expected,
    )
    .await?;
    loop {
        let before = notices.load(Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(QUIET) => {
                if notices.load(Ordering::Relaxed) == before {
                    break;
                }
            }
            Some(r) = set.join_next() => {
                r.expect("client task panicked")?;
                return Err(Error::Timeout("a client stopped while settling".into()));
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(Error::Timeout(format!("the notices did not stop within {:?}", opts.timeout)));
            }
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
                    after = after.max(Some(p.rss().map_err(Error::Proc)?.0));
                }
            }
            Some(r) = set.join_next() => {
                r.expect("client task panicked")?;
            }
        }
    }
    let cost = match (server, before) {
        (Some(p), Some((_, cpu))) => Some(p.cost(cpu, k as u64).map_err(Error::Proc)?),
        _ => None,
    };
    stop.cancel();
    while let Some(r) = set.join_next().await {
        r.expect("client task panicked")?;
    }
    let rss_before = before.map(|b| b.0);
    Ok(Report {
        connections: k,
        rooms: opts.rooms,
        joined_notices: notices.load(Ordering::Relaxed),
        tls: crate::tls::on(),
        connect_seconds,
        handshakes_per_second: k as f64 / connect_seconds.max(1e-9),
        settle_seconds,
        rss_before_kib: rss_before,
        rss_after_kib: after,
        rss_per_connection: rss_before
            .zip(after)
            .map(|(b, a)| (a.saturating_sub(b) * 1024) as f64 / k.max(1) as f64),
        server: cost,
    })
}

/// Of how many other clients in the lobby `event` tells the client at `me`.
fn lobby_notices(event: &Event, me: SocketAddr) -> u64 {
    match event {
        Event::Message(Message::Joined { .. }) => 1,
        Event::Message(Message::Entered { room, .. }) if room == LOBBY => 1,
        Event::Message(Message::Roster { room, members, .. }) if room == LOBBY => {
            members.iter().filter(|m| m.addr() != me).count() as u64
        }
        _ => 0,
    }
}
