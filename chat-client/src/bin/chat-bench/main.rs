//! `chat-bench`: a load generator for a running chat server.
//!
//! Workloads: `fanout` (delivery, throughput, latency in one room),
//! `rooms` (the same in named rooms), `dm` (direct-message round trips),
//! `history` (send-to-ack latency and resume, with history on), `login`
//! (logins a second, by password or token), `idle` (what an idle connection costs) and `soak` (whether memory comes
//! back after rounds of stalled clients). Every client is a TCP stream
//! driven by `chat_proto::Connection`, owned by one task. `fanout` and
//! `rooms` also drive NATS and Redis (`--system`), the anchors they are
//! compared with.
//!
//! Layout: `args` (the command line), `conn` (one client, version 1 or
//! named), `socket` (reads and writes without waiting, for every system),
//! `payload` (the text of a bench message), `plan` (who is in which room),
//! `pace` (turns at a steady rate), `latency` (histograms, percentiles),
//! `fanout` (the run of `fanout` and `rooms`), `rooms` (seating named
//! clients in their rooms), `dm`, `history`, `stalled` (clients that never read),
//! `idle`, `soak`, `procfs` (the server's CPU, memory and descriptors),
//! `report` (human output), `error`, `system` (the protocol adapter per
//! system `fanout` and `rooms` drive: `chat`, `nats`, `redis`), `tls` (the
//! chat clients' TLS, `--tls`).
#![forbid(unsafe_code)]

mod args;
mod conn;
mod crowd;
mod dm;
mod error;
mod fanout;
mod history;
mod idle;
mod latency;
mod login;
mod pace;
mod payload;
mod plan;
mod procfs;
mod report;
mod rooms;
mod soak;
mod socket;
mod stalled;
mod system;
mod tls;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::args::{Cli, Cmd, HistoryMode};
use crate::procfs::Proc;
use crate::system::System;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chat-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; `Ok(false)` when it ran and failed.
fn run(cli: Cli) -> anyhow::Result<bool> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.into());
    }
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let server = cli.server_pid.map(Proc);
    if let Some(p) = server {
        p.cpu()
            .with_context(|| format!("cannot read /proc/{} (is the server running?)", p.0))?;
    }
    let json = cli.json;
    let tls = cli.tls().context("--tls")?;
    if tls.is_some() && cli.system != System::Chat {
        anyhow::bail!("--tls drives only the chat server");
    }
    tls::init(tls.clone());
    rt.block_on(async {
        match cli.cmd {
            Cmd::Fanout(args) => {
                let opts = &args.options(cli.system, cli.server, !json)?;
                repeat(
                    args.load.runs,
                    json,
                    fanout::Report::passed,
                    || async move { Ok(fanout::run(opts, server).await?) },
                )
                .await
            }
            Cmd::Rooms(args) => {
                let args = &args;
                repeat(
                    args.load.runs,
                    json,
                    fanout::Report::passed,
                    || async move {
                        let opts = args.options(cli.system, cli.server, !json)?;
                        Ok(fanout::run(&opts, server).await?)
                    },
                )
                .await
            }
            _ if cli.system != System::Chat => {
                anyhow::bail!("--system nats and --system redis drive only fanout and rooms")
            }
            Cmd::Dm(args) => {
                let args = &args;
                repeat(args.runs, json, dm::Report::passed, || async move {
                    Ok(dm::run(&args.options(cli.server, !json)?, server).await?)
                })
                .await
            }
            Cmd::History(h) => match h.mode {
                HistoryMode::Ack(args) => {
                    let args = &args;
                    repeat(args.runs, json, history::AckReport::passed, || async move {
                        Ok(history::ack(&args.options(cli.server, !json)?, server).await?)
                    })
                    .await
                }
                HistoryMode::Resume(args) => {
                    let args = &args;
                    repeat(args.runs, json, history::ResumeReport::passed, || async move {
                        Ok(history::resume(&args.options(cli.server), server).await?)
                    })
                    .await
                }
            },
            Cmd::Login(args) => {
                let plan = login::Plan {
                    server: cli.server,
                    clients: args.clients,
                    logins: args.logins,
                    by: args.by,
                    tls,
                };
                let r = login::run(&plan, server).await?;
                show(&r, json)?;
                Ok(r.passed())
            }
            Cmd::Idle(args) => {
                show(&idle::run(&args.options(cli.server), server).await?, json)?;
                Ok(true)
            }
            Cmd::Soak(args) => {
                let p =
                    server.context("soak needs --server-pid: it measures the server's memory")?;
                let r = soak::run(&args.options(cli.server)?, p).await?;
                show(&r, json)?;
                Ok(r.passed())
            }
        }
    })
}

/// Runs a workload `runs` times (`once` is one run), showing each report,
/// numbered in the human form when there are several; `Ok(true)` if every
/// run `passed`.
async fn repeat<R, F>(
    runs: usize,
    json: bool,
    passed: fn(&R) -> bool,
    mut once: impl FnMut() -> F,
) -> anyhow::Result<bool>
where
    R: serde::Serialize + std::fmt::Display,
    F: Future<Output = anyhow::Result<R>>,
{
    let mut ok = true;
    for i in 0..runs {
        let r = once().await?;
        ok &= passed(&r);
        if runs > 1 && !json {
            println!("run {}", i + 1);
        }
        show(&r, json)?;
    }
    Ok(ok)
}

/// Prints a report: one line of JSON, or the human form.
fn show<R: serde::Serialize + std::fmt::Display>(report: &R, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
