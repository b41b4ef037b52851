//! `chat-server`: flags, logging, signals; the library does the rest.
//!
//! Once bound it prints exactly one line to stdout, `listening on ADDR`, so
//! that scripts started with `--bind 127.0.0.1:0` can learn the port. Logs go
//! to stderr.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use chat_server::{Config, Server};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A chat relay server: every message a client sends reaches all the others.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A chat relay server: every message a client sends reaches all the others"
)]
struct Args {
    /// Address to listen on (IPv6 too, e.g. `[::]:8080`).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    bind: String,
    /// Most clients connected at once.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_clients)]
    max_clients: usize,
    /// Largest frame payload the server sends, in bytes (clients may send 20 less).
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().max_frame_len)]
    max_frame: usize,
    /// Outgoing queue depth per client, in frames; a client that lets it fill is evicted.
    #[arg(long, value_name = "FRAMES", default_value_t = Config::default().outbox_depth)]
    outbox: usize,
    /// Most bytes queued for one client; past it the client is evicted as a slow consumer.
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().outbox_bytes)]
    outbox_bytes: usize,
    /// Time a new client has to say Hello (e.g. 10s, 500ms, 2m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    handshake_timeout: Duration,
    /// Silence after which a client is pinged (half of it) and closed (all of it); 0 disables.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    idle_timeout: Duration,
    /// Sustained messages per second a client may send; 0 disables flood control.
    #[arg(long, value_name = "N", default_value_t = Config::default().rate)]
    rate: u32,
    /// Messages a client may send in a burst above the rate.
    #[arg(long, value_name = "N", default_value_t = Config::default().burst)]
    burst: u32,
    /// On shutdown, time given to clients to receive what is queued and the final Exit.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    shutdown_grace: Duration,
    /// How long a client that is sent a final Error or Exit gets to take it and close.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
    close_timeout: Duration,
    /// Don't announce joins and leaves (for very large rooms: a crowd of N
    /// arriving at once otherwise costs N²/2 notices).
    #[arg(long)]
    no_presence: bool,
    /// Worker threads (default: one per core). On a machine shared with a
    /// load generator, 1 leaves it a core of its own.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// More logs: -v for debug, -vv for trace. RUST_LOG, when set, takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Parses `1.5s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 10s or 500ms"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(num * scale).map_err(|e| format!("`{s}`: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logs(args.verbose);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.into());
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let config = Config {
        max_clients: args.max_clients,
        max_frame_len: args.max_frame,
        outbox_depth: args.outbox,
        outbox_bytes: args.outbox_bytes,
        handshake_timeout: args.handshake_timeout,
        idle_timeout: args.idle_timeout,
        rate: args.rate,
        burst: args.burst,
        shutdown_grace: args.shutdown_grace,
        close_timeout: args.close_timeout,
        presence: !args.no_presence,
        ..Config::default()
    };
    let stop = signals()?;
    let server = match Server::bind(args.bind.as_str(), config).await {
        Ok(server) => server,
        Err(chat_server::Error::Bind(e)) => anyhow::bail!("cannot bind {}: {e}", args.bind),
        Err(e) => return Err(e.into()),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    server.run(stop).await?;
    Ok(())
}

/// Listens for SIGINT and SIGTERM from the moment it is called (so a
/// signal sent right after the `listening on` line is never missed); the
/// returned future completes on the first of them.
fn signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            tracing::info!("{name} received");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(duration("ten").is_err());
        assert!(duration("5 days").is_err());
    }

    #[test]
    fn flags_parse() {
        Args::command().debug_assert();
        let args = Args::parse_from(["chat-server", "--bind", "[::1]:0", "-vv", "--rate", "0"]);
        assert_eq!(args.bind, "[::1]:0");
        assert_eq!(args.verbose, 2);
        assert_eq!(args.rate, 0);
    }

    use clap::CommandFactory;
}
