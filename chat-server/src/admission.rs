//! Admission: who gets a session, who is told "server full", and who waits.
//!
//! A slot is taken *before* `accept`, as mini-redis does, so the server never
//! holds more sockets than it has slots for:
//!
//! - a client slot (`max_clients` of them) for a session;
//! - when none is free, a reject slot (`reject_slots` of them): the
//!   connection is accepted only to be told `Error { reason: "server full" }`
//!   and closed, within at most 1 s, so a refused client learns why at once;
//! - when both are taken, nothing is accepted: new connections wait in the
//!   kernel's listen queue, which pushes back on the clients.
//!
//! Each slot is a semaphore permit held by the task that owns the socket,
//! so it frees when that task ends, whatever way it ends.
//!
//! Once accepted, a connection that took a client slot is screened by its
//! address ([`Admission::admit`]) before its session starts: in protected
//! mode only loopback clients are served, and no IP may hold more than
//! `max_per_ip` connections. One turned away gives its client slot back at
//! once (so such clients can never crowd out the others) and is told why
//! like a "server full" refusal, on a reject slot, within at most 1 s; with
//! no reject slot free it is closed without a word.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chat_proto::{Connection, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::config::{Config, Storage};

/// What a client is told when every client slot is taken.
pub(crate) const FULL: &str = "server full";
/// Longest a refused client is given to take its "server full" and close.
pub(crate) const REFUSE_WAIT_MAX: Duration = Duration::from_secs(1);
/// Input a refused client may send that is read and dropped before the
/// socket is closed anyway.
const REFUSE_DRAIN_MAX: usize = 64 * 1024;

/// A place for one accepted connection.
#[derive(Debug)]
pub(crate) enum Slot {
    /// Counts against `max_clients`: the connection gets a session.
    Client(OwnedSemaphorePermit),
    /// One of the `reject_slots`: the connection is told "server full".
    Refuse(OwnedSemaphorePermit),
}

/// The two pools of slots, the connections per IP, and a signal for when
/// a socket closes.
#[derive(Debug)]
pub(crate) struct Admission {
    clients: Arc<Semaphore>,
    rejects: Arc<Semaphore>,
    per_ip: PerIp,
    /// Notified whenever a task holding a socket ends: a descriptor is free.
    closed: Arc<Notify>,
}

impl Admission {
    /// Pools sized by a validated `config`.
    pub(crate) fn new(config: &Config) -> Self {
        Admission {
            clients: Arc::new(Semaphore::new(config.max_clients)),
            rejects: Arc::new(Semaphore::new(config.reject_slots)),
            per_ip: PerIp::new(config.max_per_ip),
            closed: Arc::new(Notify::new()),
        }
    }

    /// Screens a connection that has a client slot by its address: a guard
    /// to hold for as long as its session runs, or the reason to refuse it
    /// with (see [`refuse`]).
    pub(crate) fn admit(&self, config: &Config, addr: SocketAddr) -> Result<IpGuard, String> {
        if protected(config, addr.ip()) {
            return Err(PROTECTED.to_string());
        }
        self.per_ip.take(addr.ip())
    }

    /// Waits for a slot: a client slot if one is free, else a reject slot,
    /// else whichever frees first (a client slot if both do). `None` only
    /// if the pools were closed, which they never are.
    pub(crate) async fn slot(&self) -> Option<Slot> {
        if let Ok(permit) = self.clients.clone().try_acquire_owned() {
            return Some(Slot::Client(permit));
        }
        tokio::select! {
            biased;
            Ok(permit) = self.clients.clone().acquire_owned() => Some(Slot::Client(permit)),
            Ok(permit) = self.rejects.clone().acquire_owned() => Some(Slot::Refuse(permit)),
            else => None,
        }
    }

    /// A reject slot becomes a client slot if one freed while accepting:
    /// nobody is refused while there is room.
    pub(crate) fn upgrade(&self, slot: Slot) -> Slot {
        match slot {
            Slot::Refuse(permit) => match self.clients.clone().try_acquire_owned() {
                Ok(client) => Slot::Client(client),
                Err(_) => Slot::Refuse(permit),
            },
            client => client,
        }
    }

    /// A reject slot if one is free: for a connection turned away by
    /// [`admit`](Self::admit), once its client slot is given back.
    pub(crate) fn reject_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.rejects.clone().try_acquire_owned().ok()
    }

    /// A guard to move into a task that owns a socket: when the task ends,
    /// waiters on [`closed`](Self::closed) are woken.
    pub(crate) fn on_close(&self) -> OnClose {
        OnClose(self.closed.clone())
    }

    /// Completes once a socket-owning task has ended since the last call
    /// (or at once if one ended before it).
    pub(crate) async fn closed(&self) {
        self.closed.notified().await;
    }
}

/// What an admitted client's task holds: its client slot, given back as
/// soon as the client leaves, and, until the task ends, its place in its
/// IP's count and the accept loop's wake-up. One value, kept inside the
/// session: a task that wrapped the session to hold them would keep room
/// for its own arguments beside the session's for as long as the client
/// stays (128 bytes more per client, in tokio's allocation steps).
#[derive(Debug)]
pub(crate) struct Admitted {
    slot: Option<OwnedSemaphorePermit>,
    _ip: IpGuard,
    _closed: OnClose,
}

impl Admitted {
    pub(crate) fn new(slot: OwnedSemaphorePermit, ip: IpGuard, closed: OnClose) -> Self {
        Admitted {
            slot: Some(slot),
            _ip: ip,
            _closed: closed,
        }
    }

    /// The client has left: its slot is free for another, before its
    /// goodbye is over.
    pub(crate) fn leave(&mut self) {
        self.slot = None;
    }
}

/// Wakes the accept loop when dropped; see [`Admission::on_close`].
#[derive(Debug)]
pub(crate) struct OnClose(Arc<Notify>);

impl Drop for OnClose {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// What a non-loopback client is told in protected mode.
// With accounts, this names `--no-guests` too.
pub(crate) const PROTECTED: &str = "protected mode: this server serves only clients on its own \
     machine; to serve others, its operator starts it with --public, or with --no-guests so that \
     every client must log in";

/// Whether a client at `ip` is turned away by protected mode: the server is
/// not public and the client is not on this machine. A loopback address
/// mapped into IPv6 (a dual-stack listener's view of `127.0.0.1`) is local.
pub(crate) fn protected(config: &Config, ip: IpAddr) -> bool {
    !open(config) && !is_local(ip)
}

/// Whether clients from anywhere are served: the operator said so, or
/// every client must log in to an account (no guests).
fn open(config: &Config) -> bool {
    config.public || (config.accounts != Storage::Off && !config.guests)
}

fn is_local(ip: IpAddr) -> bool {
    #[cfg(test)]
    if tests::LOOPBACK_IS_REMOTE.get() {
        return false;
    }
    ip.to_canonical().is_loopback()
}

/// What the server says of its mode at start-up.
pub(crate) fn mode(config: &Config) -> &'static str {
    if config.public {
        "public: serving clients from any address"
    } else if open(config) {
        "accounts required: serving clients from any address, each of which must log in"
    } else {
        "protected mode: serving loopback clients only (start with --public to serve others, \
         or with --no-guests to require accounts)"
    }
}

/// Connections at once per IP address, capped at `max` (zero: no cap).
/// Counted in a small map; each connection holds an [`IpGuard`] that gives
/// its place back when dropped, however its task ends.
#[derive(Debug)]
pub(crate) struct PerIp {
    max: usize,
    counts: Counts,
}

impl PerIp {
    pub(crate) fn new(max: usize) -> Self {
        PerIp {
            max,
            counts: Arc::default(),
        }
    }

    /// A place for one more connection from `ip`, or the reason it has none.
    pub(crate) fn take(&self, ip: IpAddr) -> Result<IpGuard, String> {
        let ip = ip.to_canonical();
        if self.max == 0 {
            return Ok(IpGuard(None));
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return Err(format!("too many connections from {ip}"));
        }
        *count += 1;
        Ok(IpGuard(Some((self.counts.clone(), ip))))
    }

    /// Connections counted for `ip`.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

/// Open connections by IP address (only those with some).
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in its IP's count (none when there is no cap).
#[derive(Debug)]
pub(crate) struct IpGuard(Option<(Counts, IpAddr)>);

impl Drop for IpGuard {
    fn drop(&mut self) {
        let Some((counts, ip)) = self.0.take() else {
            return;
        };
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            // The map holds only addresses with connections open.
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// Tells a client why it is refused (`"server full"`, or what
/// [`Admission::admit`] said) and closes its connection, within
/// `min(close_timeout, 1 s)`. `open` gives the stream to say it on: the
/// socket itself, or the TLS session taken on it (a plaintext answer on the
/// TLS port would read as a server that does not speak TLS), and runs
/// within the same bound. `_slot` is held until then.
pub(crate) async fn refuse<S>(
    open: impl Future<Output = io::Result<S>>,
    addr: SocketAddr,
    config: &Config,
    _slot: OwnedSemaphorePermit,
    reason: &str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if reason == FULL {
        warn!(peer = %addr, "server full: refusing client");
    } else {
        // A scanner could flood the log at warn.
        info!(peer = %addr, "refusing client: {reason}");
    }
    let bytes = refusal(config, reason);
    let bound = config.close_timeout.min(REFUSE_WAIT_MAX);
    match timeout(bound, async { goodbye(open.await?, &bytes).await }).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(peer = %addr, "refusal not delivered: {e}"),
        Err(_) => debug!(peer = %addr, "refused client still open after {bound:?}"),
    }
}

/// The `Error { reason }` frame a refused client is sent.
pub(crate) fn refusal(config: &Config, reason: &str) -> Bytes {
    let server = ServerConfig::with_max_frame_len(config.max_frame_len).unwrap_or_default();
    let mut conn = Connection::server(server);
    conn.refuse(reason);
    conn.transmit().unwrap_or_default()
}

/// Writes `bytes`, half-closes, and waits for the peer to close its end,
/// dropping what it sends: closing with unread input would reset the
/// connection and could destroy the refusal in flight.
pub(crate) async fn goodbye<S>(mut stream: S, bytes: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(bytes).await?;
    stream.shutdown().await?;
    let mut scratch = [0u8; 1024];
    let mut drained = 0;
    while drained <= REFUSE_DRAIN_MAX {
        match stream.read(&mut scratch).await? {
            0 => return Ok(()),
            n => drained += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use tokio::net::TcpStream;

    use super::*;

    thread_local! {
        /// Test only: this thread's accept loops take loopback clients
        /// for remote ones, so that protected mode can be tried over
        /// 127.0.0.1 (tests use no other address). Per thread, so other
        /// tests running at the same time are not affected.
        pub(super) static LOOPBACK_IS_REMOTE: Cell<bool> = const { Cell::new(false) };
    }

    #[test]
    fn protected_mode_turns_away_only_remote_clients() {
        let local: [IpAddr; 5] = [
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(127, 9, 8, 7).into(),
            Ipv6Addr::LOCALHOST.into(),
            Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
            Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped().into(),
        ];
        let remote: [IpAddr; 6] = [
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(192, 168, 1, 2).into(),
            Ipv4Addr::new(8, 8, 8, 8).into(),
            Ipv4Addr::UNSPECIFIED.into(),
            Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().into(),
            "2001:db8::1".parse().unwrap(),
        ];
        let closed = Config::default();
        let open = Config {
            public: true,
            ..Config::default()
        };
        assert!(!closed.public, "protected by default");
        for ip in local {
            assert!(!protected(&closed, ip), "{ip} is local");
            assert!(!protected(&open, ip), "{ip}");
        }
        // Requiring accounts opens it too: every client must log in.
        let accounts = Config {
            guests: false,
            ..Config::default()
        };
        let no_accounts = Config {
            guests: false,
            accounts: Storage::Off,
            ..Config::default()
        };
        for ip in remote {
            assert!(protected(&closed, ip), "{ip} is remote");
            assert!(!protected(&open, ip), "{ip} is welcome when public");
            assert!(!protected(&accounts, ip), "{ip} may log in");
            assert!(protected(&no_accounts, ip), "{ip}: no accounts, no guests");
        }
        assert!(mode(&accounts).starts_with("accounts required"));
        assert!(PROTECTED.contains("--no-guests"), "{PROTECTED}");
        // The refusal and the start-up line say how to open the server.
        assert!(PROTECTED.starts_with("protected mode: "), "{PROTECTED}");
        assert!(PROTECTED.contains("--public"), "{PROTECTED}");
        assert!(mode(&closed).contains("--public"));
        assert!(mode(&open).starts_with("public"));
        // Screening applies it: a remote client is refused, a local one is not.
        let pools = Admission::new(&closed);
        let remote = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 5000);
        assert_eq!(pools.admit(&closed, remote).unwrap_err(), PROTECTED);
        let local = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 5000);
        assert!(pools.admit(&closed, local).is_ok());
    }

    #[test]
    fn connections_per_ip_are_capped_and_given_back() {
        let per_ip = PerIp::new(2);
        let a: IpAddr = Ipv4Addr::LOCALHOST.into();
        let b: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let first = per_ip.take(a).unwrap();
        let second = per_ip.take(a).unwrap();
        assert_eq!(
            per_ip.take(a).unwrap_err(),
            "too many connections from 127.0.0.1"
        );
        // The same address mapped into IPv6 is the same client.
        let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped().into();
        assert!(per_ip.take(mapped).is_err());
        // Others are counted apart.
        let other = per_ip.take(b).unwrap();
        assert_eq!((per_ip.count(a), per_ip.count(b)), (2, 1));
        drop(first);
        assert_eq!(per_ip.count(a), 1);
        let third = per_ip.take(a).unwrap();
        drop((second, third, other));
        // Nothing is kept for addresses with no connection.
        let counts = per_ip.counts.lock().unwrap();
        assert!(counts.is_empty(), "{counts:?}");
    }

    #[test]
    fn zero_means_no_cap() {
        let per_ip = PerIp::new(0);
        let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
        let guards: Vec<_> = (0..10_000).map(|_| per_ip.take(ip).unwrap()).collect();
        assert_eq!(per_ip.count(ip), 0, "not even counted");
        drop(guards);
    }

    /// Frames from `stream` until it closes, within a bound.
    async fn read_all(stream: &mut TcpStream) -> Vec<chat_proto::Message> {
        let codec = chat_proto::ChatCodec::default();
        let mut buf = bytes::BytesMut::new();
        let mut frames = Vec::new();
        loop {
            let read = timeout(Duration::from_secs(10), stream.read_buf(&mut buf)).await;
            let n = read.expect("the server closes in time").expect("read");
            while let Some(msg) = codec.decode(&mut buf).expect("a valid frame") {
                frames.push(msg);
            }
            if n == 0 {
                return frames;
            }
        }
    }

    #[tokio::test]
    async fn a_remote_client_is_told_and_closed_before_its_session() {
        LOOPBACK_IS_REMOTE.set(true);
        let config = Config {
            max_clients: 1,
            reject_slots: 2,
            ..Config::default()
        };
        let server = crate::Server::bind("127.0.0.1:0", config).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Spawned on this thread's runtime (current-thread): its accept loop
        // sees the flag.
        let running = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        // Not even a Hello is needed: the refusal comes first. Each refused
        // client gives its client slot back (there is one): two that hold
        // their sockets open are both told why, on the two reject slots,
        // rather than "server full".
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let frames = read_all(&mut stream).await;
            let told = chat_proto::Message::Error {
                reason: PROTECTED.into(),
            };
            assert_eq!(frames, [told]);
            held.push(stream);
        }
        // With no reject slot left, the next is closed without a word.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut scratch = [0u8; 64];
        let read = timeout(Duration::from_secs(10), stream.read(&mut scratch)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        drop((stream, held));
        // Local again, the same server serves it, on its one client slot.
        LOOPBACK_IS_REMOTE.set(false);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut client = Connection::client(chat_proto::ClientConfig::default());
        let hello = client.transmit().unwrap_or_default();
        stream.write_all(&hello).await.unwrap();
        let mut buf = bytes::BytesMut::new();
        let codec = chat_proto::ChatCodec::default();
        let first = loop {
            if let Some(msg) = codec.decode(&mut buf).unwrap() {
                break msg;
            }
            let n = timeout(Duration::from_secs(10), stream.read_buf(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_ne!(n, 0, "closed without a Welcome");
        };
        assert!(
            matches!(first, chat_proto::Message::Welcome { .. }),
            "{first:?}"
        );
        drop(stream);
        stop.send(()).unwrap();
        timeout(Duration::from_secs(10), running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    fn admission(max_clients: usize, reject_slots: usize) -> Admission {
        Admission::new(&Config {
            max_clients,
            reject_slots,
            ..Config::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn clients_first_then_rejects_then_nothing() {
        let pools = admission(1, 1);
        let Some(Slot::Client(client)) = pools.slot().await else {
            panic!("a client slot is free")
        };
        let Some(Slot::Refuse(reject)) = pools.slot().await else {
            panic!("a reject slot is free")
        };
        // Both pools taken: wait.
        let waiting = timeout(Duration::from_secs(3600), pools.slot()).await;
        assert!(waiting.is_err(), "no slot while both pools are taken");
        // A freed client slot goes to the next connection.
        drop(client);
        assert!(matches!(pools.slot().await, Some(Slot::Client(_))));
        drop(reject);
    }

    #[tokio::test]
    async fn a_reject_slot_is_upgraded_when_a_client_slot_frees() {
        let pools = admission(1, 1);
        let client = pools.slot().await;
        let Some(reject) = pools.slot().await else {
            panic!("a reject slot is free")
        };
        assert!(matches!(reject, Slot::Refuse(_)));
        drop(client);
        assert!(matches!(pools.upgrade(reject), Slot::Client(_)));
    }

    #[tokio::test]
    async fn zero_reject_slots_means_waiting() {
        let pools = admission(1, 0);
        let _client = pools.slot().await;
        let waiting = timeout(Duration::from_millis(20), pools.slot()).await;
        assert!(waiting.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn closing_a_socket_wakes_the_waiter() {
        let pools = admission(1, 1);
        let guard = pools.on_close();
        let waiter = pools.closed();
        tokio::pin!(waiter);
        assert!(
            timeout(Duration::from_secs(1), &mut waiter).await.is_err(),
            "nothing closed yet"
        );
        drop(guard);
        timeout(Duration::from_millis(1), waiter)
            .await
            .expect("woken when the guard drops");
    }
}
