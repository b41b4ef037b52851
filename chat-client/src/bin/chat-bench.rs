//! `chat-bench`: load generator for a running chat server.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chat_client::bench::{self, Fanout, Idle, Proc};
use clap::{Parser, Subcommand};

/// Drives a running chat-server over loopback and checks every delivery.
///
/// Run the server in release mode in its own process, then point this at it.
/// A run with any loss, duplicate, reordering or corruption exits non-zero.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    server: SocketAddr,
    /// The server's pid: report its CPU time per delivery and its RSS (from /proc).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Print the result as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Worker threads for the clients (default: one per core).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// N clients each send M messages; each checks it got everyone else's.
    Fanout {
        /// Clients that send and receive.
        #[arg(short = 'n', long, default_value_t = 50)]
        clients: usize,
        /// Messages each client sends.
        #[arg(short = 'm', long, default_value_t = 2000)]
        messages: usize,
        /// Text size in bytes (UTF-8, includes Chinese), at least 31.
        #[arg(short = 's', long, default_value_t = 64)]
        size: usize,
        /// Messages per second per client (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Extra clients that connect and never read; the server should evict them.
        #[arg(long, default_value_t = 0)]
        stalled: usize,
        /// Most messages a sender runs ahead of its slowest receiver (0: no limit).
        #[arg(long, default_value_t = 500)]
        window: usize,
        /// Give up after this many seconds without a delivery.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Repeat the run and report each.
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// Open K connections, handshake, hold them; report server RSS per connection.
    Idle {
        /// Connections to open.
        #[arg(short = 'k', long, default_value_t = 5000)]
        connections: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 256)]
        parallel: usize,
        /// Seconds to hold the connections once open.
        #[arg(long, default_value_t = 2)]
        hold: u64,
        /// The server runs with --no-presence: expect no join notices.
        #[arg(long)]
        no_presence: bool,
    },
}

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
    rt.block_on(async {
        match cli.cmd {
            Cmd::Fanout {
                clients,
                messages,
                size,
                rate,
                stalled,
                window,
                timeout,
                runs,
            } => {
                let opts = Fanout {
                    server: cli.server,
                    clients,
                    messages,
                    size,
                    rate,
                    stalled,
                    window,
                    timeout: Duration::from_secs(timeout),
                    progress: !cli.json,
                };
                let mut ok = true;
                for i in 0..runs {
                    let r = bench::fanout(&opts, server).await?;
                    ok &= r.passed();
                    if cli.json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        if runs > 1 {
                            println!("run {}", i + 1);
                        }
                        println!("{r}");
                    }
                }
                Ok(ok)
            }
            Cmd::Idle {
                connections,
                parallel,
                hold,
                no_presence,
            } => {
                let opts = Idle {
                    server: cli.server,
                    connections,
                    parallel,
                    hold: Duration::from_secs(hold),
                    presence: !no_presence,
                };
                let r = bench::idle(&opts, server).await?;
                if cli.json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{r}");
                }
                Ok(true)
            }
        }
    })
}
