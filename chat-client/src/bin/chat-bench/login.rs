//! `login`: how many logins a second the server takes, and how long one
//! takes, by password (an Argon2id hash each) or by token, over the
//! protocol as real clients log in (PROTOCOL.md section 10).
//!
//! One account per client is registered first; then `--clients` tasks
//! each connect, log in to theirs, and leave, over and over, until `--logins` have been done. A
//! task's connect-to-`Named` time is one sample. Throttling would refuse
//! most of them: start the server with `--login-rate 0 --login-rate-ip 0
//! --register-rate 0`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_client::{Client, Login, Options, Secret, TlsOptions};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::latency::{Latency, histogram};
use crate::procfs::{Cost, Proc};

/// How the clients log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum By {
    /// With the account's password: a hash on the server each time.
    Password,
    /// With a token from the registration: no hash.
    Token,
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) server: SocketAddr,
    pub(crate) clients: usize,
    pub(crate) logins: u64,
    pub(crate) by: By,
    pub(crate) tls: Option<TlsOptions>,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) by: By,
    pub(crate) tls: bool,
    pub(crate) clients: usize,
    pub(crate) logins: u64,
    pub(crate) failed: u64,
    pub(crate) seconds: f64,
    pub(crate) logins_per_second: f64,
    /// Connect to `Named`, microseconds.
    pub(crate) latency: Latency,
    pub(crate) server: Option<Cost>,
}

impl Report {
    /// Every login went through.
    pub(crate) fn passed(&self) -> bool {
        self.failed == 0 && self.logins > 0
    }
}

/// Registers the bench's account, then logs in `logins` times from
/// `clients` tasks.
pub(crate) async fn run(opts: &Plan, server_pid: Option<Proc>) -> anyhow::Result<Report> {
    let tls = opts.tls.clone();
    // One account per client: an account is logged in on one connection
    // at a time.
    let mut logins = Vec::with_capacity(opts.clients.max(1));
    for i in 0..opts.clients.max(1) {
        logins.push(account(opts, i).await?);
    }
    let left = Arc::new(AtomicU64::new(opts.logins));
    let failed = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(histogram()));
    let before = server_pid.map(Proc::sched).transpose()?;
    let started = Instant::now();
    let tasks: Vec<_> = logins
        .into_iter()
        .map(|options| {
            let (left, failed, hist) = (left.clone(), failed.clone(), hist.clone());
            let server = opts.server;
            tokio::spawn(async move {
                let mut mine = histogram();
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let t = Instant::now();
                    match Client::connect_with(server, options.clone()).await {
                        Ok(client) => {
                            let _ = mine.record(nanos(t.elapsed()));
                            let _ = client.exit().await;
                        }
                        Err(e) => {
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("login failed: {e}");
                            }
                        }
                    }
                }
                let _ = hist.lock().await.add(&mine);
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    let done = opts.logins - failed;
    let server = match (server_pid, before) {
        (Some(p), Some(before)) => Some(p.cost(before, done)?),
        _ => None,
    };
    let hist = hist.lock().await;
    Ok(Report {
        by: opts.by,
        tls: tls.is_some(),
        clients: opts.clients,
        logins: done,
        failed,
        seconds,
        logins_per_second: done as f64 / seconds,
        latency: Latency::of(&hist),
        server,
    })
}

/// Registers account `i` of this run; the options that log in to it.
async fn account(opts: &Plan, i: usize) -> anyhow::Result<Options> {
    let name = format!("bench{}-{i}", std::process::id() % 100_000);
    let password: Secret = "bench password, not secret".into();
    let mut options = Options::default();
    options.tls = opts.tls.clone();
    options.history = false;
    options.login = Some(Login::Register {
        name: name.clone(),
        password: password.clone(),
    });
    let first = Client::connect_with(opts.server, options.clone()).await?;
    let token = first
        .session()
        .account
        .as_ref()
        .map(|a| a.token.clone())
        .ok_or_else(|| anyhow::anyhow!("registered, but no account in the session"))?;
    first.exit().await?;
    options.login = Some(match opts.by {
        By::Password => Login::Password { name, password },
        By::Token => Login::Token(token),
    });
    Ok(options)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let over = if self.tls { " over TLS" } else { "" };
        writeln!(
            f,
            "login by {:?}{over}: {} logins from {} clients in {:.2} s: {:.1} logins/s, {} failed",
            self.by, self.logins, self.clients, self.seconds, self.logins_per_second, self.failed
        )?;
        let l = &self.latency;
        write!(
            f,
            "  connect to Named: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.p50 / 1000.0,
            l.p99 / 1000.0,
            l.max / 1000.0
        )?;
        if let Some(s) = &self.server {
            write!(
                f,
                "\n  server: {:.0} us of CPU per login, peak RSS {} KiB",
                s.cpu_us_per_unit, s.peak_rss_kib
            )?;
        }
        Ok(())
    }
}
