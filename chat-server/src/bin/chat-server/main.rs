//! `chat-server`: flags, logging, signals; the library does the rest.
//!
//! Every field of [`Config`] has a flag. Once bound it prints exactly one
//! line to stdout, `listening on ADDR`, so that scripts started with
//! `--bind 127.0.0.1:0` can learn the port; with `--tls-bind`, two more
//! follow, `tls listening on ADDR` and `tls fingerprint SHA256:HEX`, and
//! with `--admin`, `admin on ADDR`. Logs go to stderr. A limit the library
//! refuses is reported with the flag's name, not the field's. `--config
//! FILE` reads the same flags from a TOML file (see `file.rs`).

mod file;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chat_server::{Config, Server, Storage, Tls};
use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

/// Shown after the flags in `--help`.
const AFTER_HELP: &str = "\
Durations: 500ms, 10s, 2m, 1h, 1d, or plain seconds (at most 365 days).
Sizes: bytes, or with a unit: 64KiB (or 64k), 8MiB (or 8M).

Config file (--config FILE, TOML): one key per flag, by its long name
(`max-clients = 100`, `coalesce = \"1ms\"`, `public = true`); flags given
on the command line override it. See chat.example.toml.

Load tests: flood control cuts off any client sending more than --rate
messages per second beyond a --burst. A load generator such as chat-bench
sends far faster than a person: start the server with --rate 0 for it.";

/// A chat relay server: every message a client sends reaches all the others.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A chat relay server: every message a client sends reaches all the others",
    after_help = AFTER_HELP
)]
struct Args {
    /// Read flags from this TOML file: `max-clients = 100`, `coalesce = "1ms"`,
    /// `public = true`... (keys are the flags' names; flags given here override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on: IPv4, IPv6 (`[::]:8080`) or a host name; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    bind: String,
    /// Most clients connected at once, handshaking ones included.
    #[arg(long, value_name = "N", default_value = "10000")]
    max_clients: usize,
    /// Connections beyond --max-clients held at once just to tell them "server full";
    /// past it, they wait in the listen queue. 0: nobody is told.
    #[arg(long, value_name = "N", default_value = "64")]
    reject_slots: usize,
    /// Serve clients from any address. Without it (protected mode) only clients on this
    /// machine (loopback) are served; others are told how to open the server.
    #[arg(long)]
    public: bool,
    /// Most connections at once from one IP address, loopback included. 0: no cap.
    #[arg(long, value_name = "N", default_value = "256")]
    max_per_ip: usize,
    /// Largest frame a client may send before its handshake is over (at least 512).
    #[arg(long, value_name = "BYTES", default_value = "1KiB", value_parser = size)]
    handshake_frame: usize,
    /// Listen queue length [default: --max-clients, clamped to 1024..=65535].
    #[arg(long, value_name = "N")]
    backlog: Option<u32>,
    /// Largest frame payload the server sends (280 bytes more to a client of names and rooms);
    /// clients may send 20 bytes less.
    #[arg(long, value_name = "BYTES", default_value = "65536", value_parser = size)]
    max_frame: usize,
    /// Outgoing queue depth per client, in buffers (at least 6); a client that lets it fill
    /// is evicted.
    #[arg(long, value_name = "N", default_value = "1024")]
    outbox: usize,
    /// Most bytes queued for one client; past it the client is evicted as a slow consumer.
    /// At least --relay-batch + --max-frame + --presence-batch + 604.
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = size)]
    outbox_bytes: usize,
    /// Relays of Sends that arrive together from one client are shared as one buffer of
    /// up to this many bytes (plus one frame). 0: one buffer per relay.
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = size)]
    relay_batch: usize,
    /// Time a new client has to say Hello.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    handshake_timeout: Duration,
    /// Silence after which a client is pinged (half of it) and closed (all of it); 0 disables.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    idle_timeout: Duration,
    /// Time a client that started a frame has to finish it.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = duration)]
    frame_timeout: Duration,
    /// Sustained messages per second a client may send; 0 disables flood control
    /// (needed for load tests).
    #[arg(long, value_name = "N", default_value = "1000")]
    rate: u32,
    /// Messages a client may send in a burst above the rate.
    #[arg(long, value_name = "N", default_value = "4000")]
    burst: u32,
    /// On shutdown, time given to clients to receive what is queued and the final Exit.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    shutdown_grace: Duration,
    /// How long a client that is sent a final Error or Exit gets to take it and close
    /// (at most 1s for "server full").
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
    close_timeout: Duration,
    /// Don't announce joins and leaves (for very large rooms: a crowd of N
    /// arriving at once otherwise costs N²/2 notices).
    #[arg(long)]
    no_presence: bool,
    /// Longest a join or leave notice waits for others to share its batch; 0: no wait.
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = duration)]
    presence_delay: Duration,
    /// A batch of notices this large goes out at once; 0: every notice at once.
    #[arg(long, value_name = "BYTES", default_value = "16KiB", value_parser = size)]
    presence_batch: usize,
    /// Bytes reserved for one read from a client (at least 64).
    #[arg(long, value_name = "BYTES", default_value = "16KiB", value_parser = size)]
    read_chunk: usize,
    /// Most buffers handed to one vectored write (1 to 1024).
    #[arg(long, value_name = "N", default_value = "64")]
    max_iov: usize,
    /// Vectored writes in a row before a session lets others run.
    #[arg(long, value_name = "N", default_value = "16")]
    flush_rounds: usize,
    /// Shortest gap between two writes to a busy client; what comes sooner
    /// shares the next write (0: write at once).
    #[arg(long, value_name = "DURATION", default_value = "250us", value_parser = duration)]
    coalesce: Duration,
    /// Most rooms one client may be in at once, the lobby included.
    #[arg(long, value_name = "N", default_value = "100")]
    max_rooms: usize,
    /// Most members in one room (newcomers enter the lobby whatever its size).
    #[arg(long, value_name = "N", default_value = "10000")]
    room_members: usize,
    /// Longest nickname, in characters (1 to 32).
    #[arg(long, value_name = "N", default_value = "32")]
    max_name_chars: usize,
    /// Longest room name, in characters (5 to 32: `lobby` must fit).
    #[arg(long, value_name = "N", default_value = "32")]
    max_room_chars: usize,
    /// Sustained direct messages per second a client may send; beyond --tell-burst more,
    /// they are refused (not delivered), the client stays. 0: no limit besides --rate.
    #[arg(long, value_name = "N", default_value = "10")]
    tell_rate: u32,
    /// Direct messages a client may send in a burst above --tell-rate.
    #[arg(long, value_name = "N", default_value = "20")]
    tell_burst: u32,
    /// No accounts: nobody can register or log in, every name is a guest's.
    #[arg(long, conflicts_with = "no_guests")]
    no_accounts: bool,
    /// Only registered names: clients must register or log in.
    #[arg(long)]
    no_guests: bool,
    /// How long a login's session token stays valid.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = duration)]
    token_ttl: Duration,
    /// Password logins per account per minute, failed or not; 0: no limit.
    #[arg(long, value_name = "N", default_value = "3")]
    login_rate: u32,
    /// Password and token logins per client address (IPv6: per /64) per minute; 0: no limit.
    #[arg(long, value_name = "N", default_value = "30")]
    login_rate_ip: u32,
    /// Registrations per client address per hour; 0: no limit.
    #[arg(long, value_name = "N", default_value = "20")]
    register_rate: u32,
    /// Most password hashes computed at once (about 19 MiB and 20 ms of a core each).
    #[arg(long, value_name = "N", default_value = "2")]
    hash_workers: usize,
    /// Where history and accounts are kept: a directory, created if missing, holding
    /// history.redb and accounts.redb. Every message is stored there before anyone gets it
    /// [default: chat-data].
    #[arg(long, value_name = "DIR", conflicts_with = "ephemeral")]
    data: Option<PathBuf>,
    /// Keep history and accounts in memory only: lost when the server stops.
    #[arg(long)]
    ephemeral: bool,
    /// Keep no history: messages are relayed, never stored, and clients
    /// are not offered history. Accounts are then kept in memory unless --data is given.
    #[arg(long)]
    no_history: bool,
    /// Most messages kept per room or pair of names (0: no limit).
    #[arg(long, value_name = "N", default_value = "100000")]
    history_size: u64,
    /// Messages older than this are dropped (0: kept whatever their age).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = duration)]
    history_age: Duration,
    /// Most messages in one page of history (1 to 10000).
    #[arg(long, value_name = "N", default_value = "500")]
    history_page: usize,
    /// Most messages stored in one transaction (one fsync).
    #[arg(long, value_name = "N", default_value = "1024")]
    history_batch: usize,
    /// How long the writer waits for more messages to share a transaction (0: no wait).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = duration)]
    history_window: Duration,
    /// Most messages waiting to be stored; beyond, sends are refused (the sender is told).
    #[arg(long, value_name = "N", default_value = "16384")]
    history_queue: usize,
    /// Serve /metrics (Prometheus text) and /health over HTTP on this address, e.g.
    /// 127.0.0.1:9090, or on 127.0.0.1 at a port alone (9090). Off by default; anyone
    /// who can reach it reads the metrics, so a non-loopback address is logged as a
    /// warning.
    #[arg(long, value_name = "ADDR", value_parser = admin_addr)]
    admin: Option<SocketAddr>,
    /// Also serve TLS clients on this address, beside the plaintext --bind
    /// (needs --tls-cert and --tls-key, or --tls-self-signed).
    #[arg(long, value_name = "ADDR", requires = "tls_source")]
    tls_bind: Option<String>,
    /// The TLS certificate chain, PEM (the server's certificate first).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_bind"], group = "tls_source")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Generate a self-signed certificate for a trial; its fingerprint is
    /// printed for clients to trust (chat-client --tls --fingerprint ...).
    #[arg(
        long,
        requires = "tls_bind",
        group = "tls_source",
        conflicts_with = "tls_key"
    )]
    tls_self_signed: bool,
    /// Worker threads (default: half the cores, at least one). A delivery
    /// costs less on fewer threads (no wake-up crosses to another core), and
    /// the kernel's share of each write lands on the writing thread anyway.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// More logs: -v for debug, -vv for trace. RUST_LOG, when set, takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl Args {
    /// The library's configuration these flags describe.
    fn config(&self) -> Config {
        Config {
            max_clients: self.max_clients,
            max_frame_len: self.max_frame,
            outbox_depth: self.outbox,
            outbox_bytes: self.outbox_bytes,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            rate: self.rate,
            burst: self.burst,
            shutdown_grace: self.shutdown_grace,
            close_timeout: self.close_timeout,
            presence: !self.no_presence,
            presence_delay: self.presence_delay,
            presence_batch: self.presence_batch,
            frame_timeout: self.frame_timeout,
            relay_batch: self.relay_batch,
            read_chunk: self.read_chunk,
            max_iov: self.max_iov,
            flush_rounds: self.flush_rounds,
            coalesce: self.coalesce,
            backlog: self.backlog,
            reject_slots: self.reject_slots,
            public: self.public,
            max_per_ip: self.max_per_ip,
            handshake_frame_len: self.handshake_frame,
            max_rooms: self.max_rooms,
            max_name_chars: self.max_name_chars,
            max_room_chars: self.max_room_chars,
            room_members: self.room_members,
            tell_rate: self.tell_rate,
            tell_burst: self.tell_burst,
            accounts: self.accounts(),
            guests: !self.no_guests,
            token_ttl: self.token_ttl,
            login_rate: self.login_rate,
            login_rate_ip: self.login_rate_ip,
            register_rate: self.register_rate,
            hash_workers: self.hash_workers,
            storage: self.storage(),
            history_size: self.history_size,
            history_age: self.history_age,
            history_page: self.history_page,
            history_batch: self.history_batch,
            history_window: self.history_window,
            history_queue: self.history_queue,
            admin: self.admin,
        }
    }

    /// Where history goes: on disk unless told otherwise.
    fn storage(&self) -> Storage {
        if self.no_history {
            Storage::Off
        } else if self.ephemeral {
            Storage::Memory
        } else {
            Storage::Disk(self.data_dir())
        }
    }

    /// Where accounts go: beside history, on disk or in memory. With
    /// --no-history, on disk only if --data says where: a server told to
    /// store nothing writes nothing unasked.
    fn accounts(&self) -> Storage {
        if self.no_accounts {
            Storage::Off
        } else if self.ephemeral || (self.no_history && self.data.is_none()) {
            Storage::Memory
        } else {
            Storage::Disk(self.data_dir())
        }
    }

    /// The --data directory.
    fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| "chat-data".into())
    }
}

impl Args {
    /// The TLS listener's address and certificate, if asked for: loaded
    /// before anything is bound, so a bad file stops the start at once.
    fn tls(&self) -> anyhow::Result<Option<(&str, Tls)>> {
        let Some(addr) = &self.tls_bind else {
            return Ok(None);
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Tls::from_pem_files(cert, key)?,
            _ => Tls::self_signed(&[])?,
        };
        Ok(Some((addr, tls)))
    }
}

/// The flag that sets each field of [`Config`].
const FLAGS: &[(&str, &str)] = &[
    ("max_clients", "--max-clients"),
    ("max_frame_len", "--max-frame"),
    ("outbox_depth", "--outbox"),
    ("outbox_bytes", "--outbox-bytes"),
    ("handshake_timeout", "--handshake-timeout"),
    ("idle_timeout", "--idle-timeout"),
    ("rate", "--rate"),
    ("burst", "--burst"),
    ("shutdown_grace", "--shutdown-grace"),
    ("close_timeout", "--close-timeout"),
    ("presence", "--no-presence"),
    ("presence_delay", "--presence-delay"),
    ("presence_batch", "--presence-batch"),
    ("frame_timeout", "--frame-timeout"),
    ("relay_batch", "--relay-batch"),
    ("read_chunk", "--read-chunk"),
    ("max_iov", "--max-iov"),
    ("flush_rounds", "--flush-rounds"),
    ("coalesce", "--coalesce"),
    ("backlog", "--backlog"),
    ("reject_slots", "--reject-slots"),
    ("public", "--public"),
    ("max_per_ip", "--max-per-ip"),
    ("handshake_frame_len", "--handshake-frame"),
    ("max_rooms", "--max-rooms"),
    ("max_name_chars", "--max-name-chars"),
    ("max_room_chars", "--max-room-chars"),
    ("room_members", "--room-members"),
    ("tell_rate", "--tell-rate"),
    ("tell_burst", "--tell-burst"),
    ("accounts", "--no-accounts"),
    ("guests", "--no-guests"),
    ("token_ttl", "--token-ttl"),
    ("login_rate", "--login-rate"),
    ("login_rate_ip", "--login-rate-ip"),
    ("register_rate", "--register-rate"),
    ("hash_workers", "--hash-workers"),
    ("storage", "--data"),
    ("history_size", "--history-size"),
    ("history_age", "--history-age"),
    ("history_page", "--history-page"),
    ("history_batch", "--history-batch"),
    ("history_window", "--history-window"),
    ("history_queue", "--history-queue"),
    ("admin", "--admin"),
];

/// The flag for a `Config` field (the field itself if it has none).
fn flag(field: &str) -> &str {
    FLAGS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(field, |(_, flag)| flag)
}

/// `text` with every field name that appears as a word replaced by its flag.
fn with_flags(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while !rest.is_empty() {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let end = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
        if end == 0 {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        } else {
            out.push_str(flag(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

/// Parses a byte size: `65536`, `64KiB` or `64k`, `8MiB` or `8M`, `1GiB` or `1G`.
fn size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 65536, 64KiB or 8MiB"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` (use KiB, MiB or GiB)")),
    };
    num.checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses the admin listener's address: `IP:PORT`, or a port alone, which
/// means loopback (`127.0.0.1:PORT`): metrics are for the operator.
fn admin_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("expected IP:PORT or a port, got {s:?}"))
}

/// Parses `1.5s`, `500ms`, `2m`, `1h`, `1d`, or a plain number of seconds.
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
        "us" | "µs" => 0.000_001,
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => return Err(format!("unknown unit `{other}` (use us, ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(num * scale).map_err(|e| format!("`{s}`: {e}"))
}

fn main() -> ExitCode {
    let merged = match file::merge(&Args::command(), std::env::args_os().collect()) {
        Ok(merged) => merged,
        Err(e) => {
            eprintln!("chat-server: {e}");
            return ExitCode::from(2);
        }
    };
    let args = Args::parse_from(&merged.argv);
    init_logs(args.verbose);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    rt.worker_threads(args.threads.map_or((cores / 2).max(1), usize::from));
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args, &merged)) {
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

/// Runs the server `args` describe; `merged` tells which flags came from
/// a config file, so that a value the library refuses is traced to its line.
async fn serve(args: Args, merged: &file::Merged) -> anyhow::Result<()> {
    let config = args.config();
    let tls = args.tls()?;
    let stop = signals()?;
    let server = match Server::bind(args.bind.as_str(), config).await {
        Ok(server) => server,
        Err(chat_server::Error::Bind(e)) => anyhow::bail!("cannot bind {}: {e}", args.bind),
        Err(chat_server::Error::Config { field, reason }) => {
            let (flag, reason) = (flag(field), with_flags(&reason));
            match merged.origin(flag) {
                Some(origin) => anyhow::bail!("{origin}: {reason}"),
                None => anyhow::bail!("invalid {flag}: {reason}"),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let server = match &tls {
        Some((addr, tls)) => match server.tls(*addr, tls.clone()).await {
            Ok(server) => server,
            Err(e) => anyhow::bail!("cannot bind {addr} (--tls-bind): {e}"),
        },
        None => server,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr())?;
    if let (Some(addr), Some((_, tls))) = (server.tls_addr(), &tls) {
        writeln!(stdout, "tls listening on {addr}")?;
        writeln!(stdout, "tls fingerprint {}", tls.fingerprint())?;
    }
    if let Some(admin) = server.admin_addr() {
        writeln!(stdout, "admin on {admin}")?;
    }
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
    fn an_admin_port_alone_means_loopback() {
        assert_eq!(admin_addr("9090"), Ok("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(admin_addr("[::1]:9090"), Ok("[::1]:9090".parse().unwrap()));
        assert_eq!(admin_addr("0.0.0.0:80"), Ok("0.0.0.0:80".parse().unwrap()));
        assert!(
            admin_addr("localhost")
                .unwrap_err()
                .contains("IP:PORT or a port")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(duration("ten").is_err());
        assert!(duration("5 days").is_err());
        assert!(duration("1e300").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("65536"), Ok(65_536));
        assert_eq!(size("64KiB"), Ok(65_536));
        assert_eq!(size("64k"), Ok(65_536));
        assert_eq!(size("8MiB"), Ok(8 << 20));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert!(size("8 MB").is_err());
        assert!(size("-1").is_err());
        assert!(size("99999999999999999999").is_err());
        assert!(size(&format!("{}G", usize::MAX)).is_err());
    }

    #[test]
    fn flags_parse() {
        Args::command().debug_assert();
        let args = Args::parse_from(["chat-server", "--bind", "[::1]:0", "-vv", "--rate", "0"]);
        assert_eq!(args.bind, "[::1]:0");
        assert_eq!(args.verbose, 2);
        assert_eq!(args.config().rate, 0);
    }

    #[test]
    fn no_flags_means_the_library_defaults_but_history_on_disk() {
        let config = Args::parse_from(["chat-server"]).config();
        assert_eq!(config.storage, Storage::Disk("chat-data".into()));
        assert_eq!(config.accounts, Storage::Disk("chat-data".into()));
        assert_eq!(
            Config {
                storage: Storage::Memory,
                accounts: Storage::Memory,
                ..config
            },
            Config::default()
        );
        let config = |flags: &[&str]| {
            let config = Args::parse_from([&["chat-server"], flags].concat()).config();
            (config.storage, config.accounts)
        };
        let (memory, off) = (Storage::Memory, Storage::Off);
        let x = Storage::Disk("x".into());
        assert_eq!(config(&["--ephemeral"]), (memory.clone(), memory.clone()));
        assert_eq!(config(&["--no-history"]), (off.clone(), memory.clone()));
        assert_eq!(
            config(&["--no-history", "--data", "x"]),
            (off.clone(), x.clone())
        );
        assert_eq!(
            config(&["--no-history", "--ephemeral"]),
            (off.clone(), memory)
        );
        assert_eq!(config(&["--no-accounts", "--data", "x"]), (x, off.clone()));
        assert!(Args::try_parse_from(["chat-server", "--ephemeral", "--data", "x"]).is_err());
        assert!(Args::try_parse_from(["chat-server", "--no-accounts", "--no-guests"]).is_err());
    }

    #[test]
    fn every_field_has_a_flag_that_sets_it() {
        // The field names, from the Debug output: adding a field to Config
        // without a flag fails here.
        let debug = format!("{:?}", Config::default());
        let fields: Vec<&str> = debug
            .trim_start_matches("Config {")
            .split(", ")
            .filter_map(|kv| kv.trim().split(':').next())
            .collect();
        assert_eq!(fields.len(), FLAGS.len(), "{fields:?}");
        let command = Args::command();
        for field in fields {
            let flag = flag(field);
            assert!(flag.starts_with("--"), "no flag for {field}");
            let long = &flag[2..];
            assert!(
                command.get_arguments().any(|a| a.get_long() == Some(long)),
                "{flag} (for {field}) is not a flag"
            );
        }
        // And each flag changes its field.
        let changed = Args::parse_from([
            "chat-server",
            "--max-clients=7",
            "--max-frame=1KiB",
            "--outbox=9",
            "--outbox-bytes=1MiB",
            "--handshake-timeout=1s",
            "--idle-timeout=2s",
            "--rate=3",
            "--burst=4",
            "--shutdown-grace=55s",
            "--close-timeout=6s",
            "--no-presence",
            "--presence-delay=7ms",
            "--presence-batch=8",
            "--frame-timeout=9s",
            "--relay-batch=10",
            "--read-chunk=1100",
            "--max-iov=12",
            "--flush-rounds=13",
            "--coalesce=1ms",
            "--backlog=14",
            "--reject-slots=15",
            "--public",
            "--max-per-ip=3",
            "--handshake-frame=2KiB",
            "--max-rooms=16",
            "--max-name-chars=17",
            "--max-room-chars=18",
            "--room-members=19",
            "--tell-rate=20",
            "--tell-burst=21",
            "--no-guests",
            "--token-ttl=1h",
            "--login-rate=5",
            "--login-rate-ip=6",
            "--register-rate=7",
            "--hash-workers=3",
            "--data=somewhere",
            "--history-size=22",
            "--history-age=23s",
            "--history-page=24",
            "--history-batch=25",
            "--history-window=26ms",
            "--history-queue=27",
            "--admin=127.0.0.1:9090",
        ])
        .config();
        let default = Config::default();
        let (a, b) = (format!("{changed:?}"), format!("{default:?}"));
        let differ = a
            .split(", ")
            .zip(b.split(", "))
            .filter(|(x, y)| x != y)
            .count();
        assert_eq!(differ, FLAGS.len(), "{a}\n{b}");
        changed.validate().unwrap();
    }

    #[test]
    fn config_errors_name_flags() {
        let refusal = |config: Config| match config.validate() {
            Err(chat_server::Error::Config { field, reason }) => {
                format!("{}: {}", flag(field), with_flags(&reason))
            }
            other => panic!("expected a refusal, got {other:?}"),
        };
        let bad = [
            Config {
                outbox_bytes: 65_536,
                ..Config::default()
            },
            Config {
                rate: 5,
                burst: 0,
                ..Config::default()
            },
            Config {
                idle_timeout: Duration::MAX,
                ..Config::default()
            },
            Config {
                max_iov: 0,
                ..Config::default()
            },
            Config {
                max_rooms: 0,
                ..Config::default()
            },
            Config {
                room_members: 0,
                ..Config::default()
            },
            Config {
                max_room_chars: 2,
                ..Config::default()
            },
            Config {
                backlog: Some(0),
                ..Config::default()
            },
        ];
        for config in bad {
            let text = refusal(config);
            assert!(text.starts_with("--"), "{text}");
            assert!(!text.contains('_'), "a field name left in {text:?}");
        }
        assert_eq!(
            refusal(Config {
                outbox_depth: 0,
                ..Config::default()
            }),
            "--outbox: 0 is less than the minimum, 6"
        );
        let text = refusal(Config {
            outbox_bytes: 65_536,
            ..Config::default()
        });
        assert!(
            text.starts_with("--outbox-bytes: 65536 is less than the minimum, 148080"),
            "{text}"
        );
        assert!(
            text.contains("(--relay-batch + --max-frame + 304)"),
            "{text}"
        );
        assert_eq!(
            refusal(Config {
                rate: 5,
                burst: 0,
                ..Config::default()
            }),
            "--burst: must be at least 1 unless --rate is 0"
        );
        assert_eq!(
            refusal(Config {
                tell_rate: 5,
                tell_burst: 0,
                ..Config::default()
            }),
            "--tell-burst: must be at least 1 unless --tell-rate is 0"
        );
        assert_eq!(
            refusal(Config {
                max_name_chars: 33,
                ..Config::default()
            }),
            "--max-name-chars: 33 is more than the maximum, 32"
        );
    }

    #[test]
    fn help_says_load_tests_need_rate_0() {
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("--rate 0"), "{help}");
    }
}
