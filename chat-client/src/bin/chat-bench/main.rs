//! `chat-bench`: a load generator for a running chat server.
//!
//! Workloads: `fanout` (delivery, throughput, latency in one room),
//! `rooms` (the same in named rooms), `dm` (direct-message round trips),
//! `history` (send-to-ack latency and resume, with history on), `idle` (what an idle connection costs) and `soak` (whether memory comes
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
//! system `fanout` and `rooms` drive: `chat`, `nats`, `redis`).
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
    rt.block_on(async {
        match cli.cmd {
            Cmd::Fanout(args) => {
                let opts = args.options(cli.system, cli.server, !json)?;
                let mut ok = true;
                for i in 0..args.load.runs {
                    let r = fanout::run(&opts, server).await?;
                    ok &= r.passed();
                    if args.load.runs > 1 && !json {
                        println!("run {}", i + 1);
                    }
                    show(&r, json)?;
                }
                Ok(ok)
            }
            Cmd::Rooms(args) => {
                let mut ok = true;
                for i in 0..args.load.runs {
                    let opts = args.options(cli.system, cli.server, !json)?;
                    let r = fanout::run(&opts, server).await?;
                    ok &= r.passed();
                    if args.load.runs > 1 && !json {
                        println!("run {}", i + 1);
                    }
                    show(&r, json)?;
                }
                Ok(ok)
            }
            _ if cli.system != System::Chat => {
                anyhow::bail!("--system nats and --system redis drive only fanout and rooms")
            }
            Cmd::Dm(args) => {
                let mut ok = true;
                for i in 0..args.runs {
                    let r = dm::run(&args.options(cli.server, !json)?, server).await?;
                    ok &= r.passed();
                    if args.runs > 1 && !json {
                        println!("run {}", i + 1);
                    }
                    show(&r, json)?;
                }
                Ok(ok)
            }
            Cmd::History(h) => match h.mode {
                HistoryMode::Ack(args) => {
                    let mut ok = true;
                    for i in 0..args.runs {
                        let r = history::ack(&args.options(cli.server, !json)?, server).await?;
                        ok &= r.passed();
                        if args.runs > 1 && !json {
                            println!("run {}", i + 1);
                        }
                        show(&r, json)?;
                    }
                    Ok(ok)
                }
                HistoryMode::Resume(args) => {
                    let mut ok = true;
                    for i in 0..args.runs {
                        let r = history::resume(&args.options(cli.server), server).await?;
                        ok &= r.passed();
                        if args.runs > 1 && !json {
                            println!("run {}", i + 1);
                        }
                        show(&r, json)?;
                    }
                    Ok(ok)
                }
            },
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

/// Prints a report: one line of JSON, or the human form.
fn show<R: serde::Serialize + std::fmt::Display>(report: &R, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
