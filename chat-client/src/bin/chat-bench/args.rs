//! The command line.

use std::net::SocketAddr;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;
use crate::plan::Plan;
use crate::rooms::tag;
use crate::system::System;
use crate::{dm, fanout, history, idle, soak};

/// Drives a running chat-server over loopback and checks every delivery.
///
/// Run the server in release mode in its own process, with flood control
/// off for load tests (its default `--rate` disconnects a full-speed sender
/// as a flood) and no cap on connections per IP (every client here comes
/// from 127.0.0.1), and point this at it:
///
///   chat-server --bind 127.0.0.1:8080 --rate 0 --max-per-ip 0 --max-clients 20000
///
/// `dm` also needs the limit on direct messages off (`--tell-rate 0`), or
/// its rate spread over enough pairs that none passes it.
///
/// `history` needs the server with history on (`--data DIR` or
/// `--ephemeral`, not `--no-history`).
///
/// `fanout` and `rooms` also drive the anchors they are compared with, a
/// NATS or a Redis server, with the same workload and checks (`--system`;
/// see chat-client/scripts/anchors.sh).
///
/// Exit status: 0 when the run passed, 1 when it ran and failed (a loss,
/// duplicate, reordering or corruption; a client that reads evicted; a
/// stalled client not evicted as a slow consumer; memory not given back),
/// 2 when it could not run.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
pub(crate) struct Cli {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    pub(crate) server: SocketAddr,
    /// Which system the server is: this repository's chat server, or an
    /// anchor to compare it with, driven by `fanout` and `rooms` with the
    /// same workload, payload and checks: a NATS server (core protocol,
    /// echo off, subject `chat`; in `rooms` subject `room.<i>` for room i,
    /// one SUB per room a client is in) or a Redis server (pub/sub on
    /// channel `chat`, or `room.<i>`; one subscribing connection per client
    /// and one publishing connection per client that sends; Redis echoes a
    /// client's own messages, counted apart as self deliveries). `dm`,
    /// `history`, `idle` and `soak` drive only the chat server.
    #[arg(long, value_enum, default_value_t = System::Chat, global = true)]
    pub(crate) system: System,
    /// The server's pid: report its CPU time per delivery and its memory
    /// (from /proc). Required by `soak`.
    #[arg(long, global = true)]
    pub(crate) server_pid: Option<u32>,
    /// Print the result as JSON on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Worker threads for the clients (default: one per core).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) threads: Option<u16>,
    /// Connect to the chat server with TLS (its --tls-bind port), trusting
    /// --fingerprint or --ca; every connection a full handshake.
    #[arg(long, global = true)]
    pub(crate) tls: bool,
    /// With --tls: trust exactly the certificate with this SHA-256
    /// fingerprint (as `chat-server --tls-self-signed` prints it).
    #[arg(long, global = true, value_name = "SHA256:HEX")]
    pub(crate) fingerprint: Option<chat_client::Fingerprint>,
    /// With --tls: trust the CAs in this PEM file (the certificate must
    /// name the server's IP address).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

impl Cli {
    /// TLS as the flags ask for it (`None`: plaintext).
    pub(crate) fn tls(&self) -> anyhow::Result<Option<chat_client::TlsOptions>> {
        use chat_client::TlsOptions;
        match (self.tls, &self.ca, self.fingerprint) {
            (false, None, None) => Ok(None),
            (false, _, _) => anyhow::bail!("--ca and --fingerprint go with --tls"),
            (true, Some(_), Some(_)) => anyhow::bail!("give --ca or --fingerprint, not both"),
            (true, Some(ca), None) => Ok(Some(TlsOptions::ca_file(ca)?)),
            (true, None, Some(pin)) => Ok(Some(TlsOptions::fingerprint(pin))),
            (true, None, None) => anyhow::bail!("needs --fingerprint SHA256:HEX or --ca FILE"),
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Logins a second and the time from connecting to being named: an
    /// account per client is registered, then --clients tasks log in to
    /// theirs and leave,
    /// --logins times in all, by password (an Argon2id hash on the server
    /// each time) or by token. Start the server with --login-rate 0
    /// --login-rate-ip 0 --register-rate 0, or throttling refuses most.
    Login(LoginArgs),
    /// N clients each send M messages; each checks it got everyone else's.
    Fanout(FanoutArgs),
    /// N named clients in rooms of S, each in K rooms, say M messages each
    /// in their rooms in turn; each checks it got exactly what was said in
    /// its rooms by the others.
    ///
    /// The clients ask for the ROOMS capability, a name, leave the lobby and
    /// join their rooms, laid out so that every room has exactly S members
    /// (N·K = R·S). Otherwise the run is fanout's: the same window, pacing,
    /// checks and report, plus misdirected deliveries and every receiver's
    /// count against what its rooms make. With --senders only some of the
    /// clients speak, the same number in every room; the others only
    /// listen. On NATS and Redis (--system) room i is the subject or
    /// channel `room.<i>`.
    Rooms(RoomsArgs),
    /// Direct-message round trips: in each of P pairs of named clients, A
    /// tells B, B tells it back on receipt; A measures the round trip.
    Dm(DmArgs),
    /// Open K connections, handshake, hold them; report server RSS per connection.
    Idle(IdleArgs),
    /// Rounds of K clients stalled inside a large frame, then closed: does
    /// the server's memory come back? Needs --server-pid.
    ///
    /// Each client handshakes, sends a frame header claiming --claim bytes
    /// and only --sent bytes of it, and stalls. With all of them stalled the
    /// server's RSS is sampled (the round's peak); then all close, and once
    /// the server has closed their sockets (its descriptor count back to the
    /// baseline) and its RSS has settled, it is read again. PASS when after
    /// every round the RSS is within --tolerance of the baseline and the
    /// last round's within --tolerance of the first's. The baseline is the
    /// RSS after a warm-up round of K clients that only handshake and close
    /// (what any K connections leave in the allocator); the fresh process's
    /// RSS is shown beside it.
    Soak(SoakArgs),
    /// History (the HISTORY capability; the server with history on, on
    /// disk or in memory): send-to-ack latency with fan-out (`ack`), or
    /// paging a room's stored messages (`resume`).
    History(HistoryArgs),
}

// `chat-bench history` (its doc is the variant's).
#[derive(Args, Debug)]
pub(crate) struct HistoryArgs {
    #[command(subcommand)]
    pub(crate) mode: HistoryMode,
}

/// What `chat-bench history` measures.
#[derive(Subcommand, Debug)]
pub(crate) enum HistoryMode {
    /// N HISTORY clients, in the lobby or in rooms of S, each say M
    /// messages; each times every message from its Say to its Stored.
    ///
    /// Every seq must be acknowledged exactly once (no Unstored); every
    /// receiver must get every message of its room's other members once,
    /// in order, intact, as Posted, with ids strictly increasing and every
    /// prev the last id it had (its own Stored ids included). Reports the
    /// send-to-ack and send-to-delivery percentiles, deliveries/s, and with
    /// --server-pid the server's CPU per delivery and per message.
    Ack(AckArgs),
    /// One client stores K messages in a fresh room (waiting for every
    /// Stored); a fresh client joins the room and times, --repeat times,
    /// Resume { after: 0, limit: 0 } paged until more = false, then as
    /// often Recent { count }; each answer must be exactly the messages
    /// stored, in order, linked.
    Resume(ResumeArgs),
}

// `chat-bench history ack` (its doc is the variant's).
#[derive(Args, Debug)]
pub(crate) struct AckArgs {
    /// Clients that say and receive.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub(crate) clients: usize,
    /// Seat the clients in named rooms of S (N/S of them), out of the
    /// lobby (default: everyone in the lobby).
    #[arg(long, value_name = "S")]
    pub(crate) room_size: Option<usize>,
    /// Messages each client says.
    #[arg(short = 'm', long, default_value_t = 500)]
    pub(crate) messages: u32,
    /// Text size in bytes (UTF-8, includes Chinese), at least 31.
    #[arg(short = 's', long, default_value_t = 64)]
    pub(crate) size: usize,
    /// Messages per second per client; 0: as fast as --window allows.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Unpaced (--rate 0), most messages a client has unacknowledged.
    #[arg(long, value_name = "W", default_value_t = 100)]
    pub(crate) window: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) parallel: usize,
    /// Stop when nothing arrives for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub(crate) timeout: u64,
    /// Repeat the run and report each.
    #[arg(long, default_value_t = 1)]
    pub(crate) runs: usize,
}

// `chat-bench history resume` (its doc is the variant's).
#[derive(Args, Debug)]
pub(crate) struct ResumeArgs {
    /// Messages stored in the room, K.
    #[arg(short = 'k', long, default_value_t = 500)]
    pub(crate) messages: u32,
    /// Text size in bytes (UTF-8, includes Chinese), at least 31.
    #[arg(short = 's', long, default_value_t = 64)]
    pub(crate) size: usize,
    /// Resumes timed, and as many Recents.
    #[arg(long, default_value_t = 50)]
    pub(crate) repeat: u32,
    /// Recent { count }.
    #[arg(long, default_value_t = 50)]
    pub(crate) recent: u32,
    /// Most Says unacknowledged while storing the K.
    #[arg(long, value_name = "W", default_value_t = 256)]
    pub(crate) window: u32,
    /// Give up on any one step (storing, a resume) that takes longer.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub(crate) timeout: u64,
    /// Repeat the run and report each.
    #[arg(long, default_value_t = 1)]
    pub(crate) runs: usize,
}

// `chat-bench fanout` (its doc is the variant's).
#[derive(Args, Debug)]
pub(crate) struct FanoutArgs {
    /// Clients that send and receive.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub(crate) clients: usize,
    /// Extra clients that connect and never read, with a small receive
    /// buffer; the run passes only if the server evicts each of them with
    /// "slow consumer" (seen through the others' Left notices: presence
    /// must be on, the server's default). The server must be made to
    /// queue more for one than its socket buffer (up to 4 MiB) and its
    /// --outbox-bytes (8 MiB) hold: e.g. -m 10000 at 50 clients. Stalled
    /// clients not yet seen leaving get --timeout again after the run,
    /// and as long to give up the server's reason.
    #[arg(long, default_value_t = 0)]
    pub(crate) stalled: usize,
    #[command(flatten)]
    pub(crate) load: Load,
}

/// How a saturated or paced run goes: what fanout and rooms share.
#[derive(Args, Debug)]
pub(crate) struct Load {
    /// Messages each client sends.
    #[arg(short = 'm', long, default_value_t = 2000)]
    pub(crate) messages: u32,
    /// Text size in bytes (UTF-8, includes Chinese), at least 31.
    #[arg(short = 's', long, default_value_t = 64)]
    pub(crate) size: usize,
    /// Messages per second per client (default: as fast as possible).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// A sender sends its message q only once every client that should
    /// get it has received all its messages before q - W: no sender is
    /// more than W messages ahead of its slowest receiver (0: no limit).
    #[arg(long, value_name = "W", default_value_t = 500)]
    pub(crate) window: u32,
    /// Stop when no delivery arrives for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub(crate) timeout: u64,
    /// Repeat the run and report each.
    #[arg(long, default_value_t = 1)]
    pub(crate) runs: usize,
}

// `chat-bench rooms` (its doc is the variant's).
#[derive(Args, Debug)]
pub(crate) struct RoomsArgs {
    /// Clients that send and receive.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub(crate) clients: usize,
    /// Rooms (default: what the clients make, N·K/S).
    #[arg(long)]
    pub(crate) rooms: Option<usize>,
    /// Members of each room.
    #[arg(long, default_value_t = 10)]
    pub(crate) room_size: usize,
    /// Rooms each client is in (besides none: it leaves the lobby).
    #[arg(short = 'k', long, default_value_t = 2)]
    pub(crate) per_client: usize,
    /// Messages a client says in a row in one room before it moves on to
    /// its next (1: another room for every message). Default: M/(4K), at
    /// most 100 and at least 1, so that each client goes through each of
    /// its rooms at least twice.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) run: Option<u32>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) parallel: usize,
    /// Clients that send, the same number in every room (every N/S-th
    /// client: N/S must divide the room size); the others only receive,
    /// checked as senders are. Default: all of them.
    #[arg(long, value_name = "S")]
    pub(crate) senders: Option<usize>,
    #[command(flatten)]
    pub(crate) load: Load,
}

// `chat-bench dm` (its doc is the variant's).
#[derive(Args, Debug)]
pub(crate) struct DmArgs {
    /// Pairs of clients.
    #[arg(short = 'p', long, default_value_t = 100)]
    pub(crate) pairs: usize,
    /// Round trips per pair.
    #[arg(short = 'm', long, default_value_t = 100)]
    pub(crate) messages: u32,
    /// Text size in bytes (UTF-8, includes Chinese), at least 31.
    #[arg(short = 's', long, default_value_t = 64)]
    pub(crate) size: usize,
    /// Round trips started per second over all pairs (the server carries
    /// twice as many direct messages); 0: one in flight per pair, as fast
    /// as they come back.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) parallel: usize,
    /// Stop when no message arrives for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub(crate) timeout: u64,
    /// Repeat the run and report each.
    #[arg(long, default_value_t = 1)]
    pub(crate) runs: usize,
}

// `chat-bench idle` (its doc is the variant's).
#[derive(Args, Debug)]
pub(crate) struct IdleArgs {
    /// Connections to open.
    #[arg(short = 'k', long, default_value_t = 5000)]
    pub(crate) connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) parallel: usize,
    /// Seconds to hold the connections once open.
    #[arg(long, default_value_t = 2)]
    pub(crate) hold: u64,
    /// The server runs with --no-presence: expect no join notices.
    #[arg(long)]
    pub(crate) no_presence: bool,
    /// Most seconds to connect them all and receive the join notices.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub(crate) timeout: u64,
    /// Named clients (the ROOMS capability), each in this many rooms: the
    /// lobby and R - 1 rooms of --room-size (0: version 1 clients).
    #[arg(long, value_name = "R", default_value_t = 0)]
    pub(crate) rooms: usize,
    /// Members of each room besides the lobby; must divide -k.
    #[arg(long, default_value_t = 10)]
    pub(crate) room_size: usize,
}

// `chat-bench soak` (its doc is the variant's).
#[derive(Args, Debug)]
pub(crate) struct SoakArgs {
    /// Clients per round.
    #[arg(short = 'k', long, default_value_t = 2000)]
    pub(crate) clients: usize,
    /// Rounds.
    #[arg(short = 'r', long, default_value_t = 20)]
    pub(crate) rounds: usize,
    /// Payload length each frame header claims.
    #[arg(long, default_value_t = 65_000)]
    pub(crate) claim: u32,
    /// Payload bytes actually sent.
    #[arg(long, default_value_t = 10)]
    pub(crate) sent: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) parallel: usize,
    /// Milliseconds the RSS is sampled with every client stalled.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub(crate) settle_ms: u64,
    /// Allowed growth, as a fraction (0.25: 25%).
    #[arg(long, default_value_t = 0.25)]
    pub(crate) tolerance: f64,
    /// Most seconds for the whole run.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub(crate) timeout: u64,
}

/// Checks a client count: the payload has 4 hex digits for a client's id.
fn check_clients(clients: usize) -> Result<(), Error> {
    if clients < 2 {
        return Err(Error::Options("a run needs at least 2 clients".into()));
    }
    if clients > 0xffff {
        return Err(Error::Options("a run takes at most 65535 clients".into()));
    }
    Ok(())
}

/// Checks a rate: positive and finite.
fn check_rate(rate: Option<f64>) -> Result<(), Error> {
    if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(Error::Options(
            "--rate must be a positive number of messages per second".into(),
        ));
    }
    Ok(())
}

/// Checks a rate of `what` per second that may be 0 (unpaced): `None` for 0.
fn paced(rate: f64, what: &str) -> Result<Option<f64>, Error> {
    if !(rate >= 0.0 && rate.is_finite()) {
        return Err(Error::Options(format!(
            "--rate must be a number of {what} per second, 0 or more"
        )));
    }
    Ok((rate > 0.0).then_some(rate))
}

impl FanoutArgs {
    /// The run's options; `progress` prints a line a second.
    pub(crate) fn options(
        &self,
        system: System,
        server: SocketAddr,
        progress: bool,
    ) -> Result<fanout::Options, Error> {
        let l = &self.load;
        check_rate(l.rate)?;
        check_clients(self.clients)?;
        Ok(fanout::Options {
            system,
            server,
            plan: Plan::one_room(self.clients),
            parallel: 256,
            tag: String::new(),
            messages: l.messages,
            size: l.size,
            rate: l.rate,
            stalled: self.stalled,
            window: l.window,
            timeout: Duration::from_secs(l.timeout.max(1)),
            progress,
        })
    }
}

impl RoomsArgs {
    /// The options of one run (each run names its clients and rooms
    /// afresh); `progress` prints a line a second.
    pub(crate) fn options(
        &self,
        system: System,
        server: SocketAddr,
        progress: bool,
    ) -> Result<fanout::Options, Error> {
        let l = &self.load;
        check_rate(l.rate)?;
        check_clients(self.clients)?;
        let tag = tag();
        // The chat server's rooms outlive a run for as long as its clients
        // take to leave: fresh names each run. An anchor's channels are
        // nothing once unsubscribed.
        let prefix = match system {
            System::Chat => format!("{tag}-"),
            System::Nats | System::Redis => "room.".into(),
        };
        let mut plan = Plan::rooms(
            self.clients,
            self.rooms,
            self.room_size,
            self.per_client,
            self.run.unwrap_or_else(|| {
                let runs = u32::try_from(self.per_client.saturating_mul(4))
                    .unwrap_or(u32::MAX)
                    .max(1);
                (l.messages / runs).clamp(1, 100)
            }),
            &prefix,
        )?;
        if let Some(s) = self.senders {
            plan = plan.with_senders(s)?;
        }
        Ok(fanout::Options {
            system,
            server,
            plan,
            parallel: self.parallel,
            tag,
            messages: l.messages,
            size: l.size,
            rate: l.rate,
            stalled: 0,
            window: l.window,
            timeout: Duration::from_secs(l.timeout.max(1)),
            progress,
        })
    }
}

impl DmArgs {
    /// The options of one run; `progress` prints a line a second.
    pub(crate) fn options(&self, server: SocketAddr, progress: bool) -> Result<dm::Options, Error> {
        let rate = paced(self.rate, "round trips")?;
        Ok(dm::Options {
            server,
            pairs: self.pairs,
            messages: self.messages,
            size: self.size,
            rate,
            parallel: self.parallel,
            tag: tag(),
            timeout: Duration::from_secs(self.timeout.max(1)),
            progress,
        })
    }
}

impl AckArgs {
    /// The options of one run (each names its clients and rooms afresh);
    /// `progress` prints a line a second.
    pub(crate) fn options(
        &self,
        server: SocketAddr,
        progress: bool,
    ) -> Result<history::AckOptions, Error> {
        let rate = paced(self.rate, "messages")?;
        check_clients(self.clients)?;
        let tag = tag();
        let plan = match self.room_size {
            None => Plan::one_room(self.clients),
            Some(s) => Plan::rooms(self.clients, None, s, 1, 1, &format!("{tag}-"))?,
        };
        Ok(history::AckOptions {
            server,
            plan,
            messages: self.messages,
            size: self.size,
            rate,
            window: self.window,
            parallel: self.parallel,
            tag,
            timeout: Duration::from_secs(self.timeout.max(1)),
            progress,
        })
    }
}

impl ResumeArgs {
    /// The options of one run (each in a fresh room).
    pub(crate) fn options(&self, server: SocketAddr) -> history::ResumeOptions {
        history::ResumeOptions {
            server,
            messages: self.messages,
            size: self.size,
            repeat: self.repeat,
            recent: self.recent,
            window: self.window,
            tag: tag(),
            timeout: Duration::from_secs(self.timeout.max(1)),
        }
    }
}

impl IdleArgs {
    /// The run's options.
    pub(crate) fn options(&self, server: SocketAddr) -> idle::Options {
        idle::Options {
            server,
            connections: self.connections,
            parallel: self.parallel,
            hold: Duration::from_secs(self.hold),
            presence: !self.no_presence,
            timeout: Duration::from_secs(self.timeout.max(1)),
            rooms: self.rooms,
            room_size: self.room_size,
            tag: tag(),
        }
    }
}

impl SoakArgs {
    /// The run's options.
    pub(crate) fn options(&self, server: SocketAddr) -> Result<soak::Options, Error> {
        if !(self.tolerance >= 0.0 && self.tolerance.is_finite()) {
            return Err(Error::Options(
                "--tolerance must be a fraction, 0 or more".into(),
            ));
        }
        Ok(soak::Options {
            server,
            clients: self.clients,
            rounds: self.rounds,
            claim: self.claim,
            sent: self.sent,
            parallel: self.parallel,
            settle: Duration::from_millis(self.settle_ms),
            tolerance: self.tolerance,
            timeout: Duration::from_secs(self.timeout.max(1)),
        })
    }
}

#[derive(Args, Debug)]
pub(crate) struct LoginArgs {
    /// Clients logging in at once.
    #[arg(long, default_value = "8")]
    pub(crate) clients: usize,
    /// Logins in all.
    #[arg(long, default_value = "400")]
    pub(crate) logins: u64,
    /// Log in by password or by token.
    #[arg(long, value_enum, default_value = "password")]
    pub(crate) by: crate::login::By,
}
