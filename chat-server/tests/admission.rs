//! Admission under pressure: `--max-clients` bounds the server's sockets, a
//! burst of connections fits the listen queue, and the accept loop recovers
//! at once when file descriptors free up.
//!
//! These tests count or exhaust the file descriptors of this very process
//! (the server runs in it), so they take turns: each runs in `serial`, which
//! builds its runtime (a few descriptors) only once the others are done.
#![cfg(target_os = "linux")]

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chat_proto::Message;
use common::{T, TestServer, config, connect, join};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One test at a time in this process: they count its descriptors.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `test` on a current-thread runtime of its own, alone.
fn serial(test: impl Future<Output = ()>) {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test);
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

#[test]
fn max_clients_bounds_the_sockets_held() {
    serial(async {
        const CROWD: usize = 400;
        const REJECT_SLOTS: usize = 16;
        let server = TestServer::start(chat_server::Config {
            max_clients: 1,
            reject_slots: REJECT_SLOTS,
            // Refused clients here never close: each holds a reject slot for
            // this long, so the crowd is told in rounds.
            close_timeout: Duration::from_millis(100),
            ..config()
        })
        .await;
        let first = join(server.addr).await;
        let baseline = open_fds();

        // A refused client learns why at once.
        let mut probe = connect(server.addr).await;
        let since = Instant::now();
        probe.expect_error("server full").await;
        let waited = since.elapsed();
        assert!(waited < Duration::from_secs(2), "told after {waited:?}");

        // The crowd connects (the kernel completes every handshake, the listen
        // queue is long enough) and then only reads.
        let mut crowd = Vec::with_capacity(CROWD);
        for _ in 0..CROWD {
            crowd.push(connect(server.addr).await);
        }
        let mut told = JoinSet::new();
        for mut client in crowd {
            told.spawn(async move {
                client.expect_error("server full").await;
                client // kept open: the server must not wait for it forever
            });
        }
        let mut most = 0;
        let mut done = Vec::with_capacity(CROWD);
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.len() < CROWD {
            // The crowd's and the probe's sockets are all open: the rest
            // is the server's.
            most = most.max(open_fds().saturating_sub(baseline + CROWD + 1));
            match tokio::time::timeout_at(deadline, told.join_next()).await {
                Ok(Some(client)) => done.push(client.expect("a refused client hears why")),
                Ok(None) => unreachable!("CROWD tasks"),
                Err(_) => panic!("only {} of {CROWD} told in 60 s", done.len()),
            }
        }
        most = most.max(open_fds().saturating_sub(baseline + CROWD + 1));
        assert!(
            most <= REJECT_SLOTS,
            "the server held {most} sockets beyond its one client (reject_slots {REJECT_SLOTS})"
        );
        drop((first, probe, done));
        server.stop().await;
    });
}

#[test]
fn a_burst_of_2000_connections_is_served() {
    serial(async {
        const BURST: usize = 2_000;
        let server = TestServer::start(chat_server::Config {
            max_clients: BURST,
            // All from 127.0.0.1.
            max_per_ip: 0,
            // Joins would cost BURST²/2 notices to clients that do not read.
            presence: false,
            ..config()
        })
        .await;
        let addr = server.addr;
        let mut burst = JoinSet::new();
        for _ in 0..BURST {
            burst.spawn(async move {
                let mut client = connect(addr).await;
                client.send(Message::hello()).await;
                client.welcomed().await;
                client
            });
        }
        let mut welcomed = Vec::with_capacity(BURST);
        let all = async {
            while let Some(client) = burst.join_next().await {
                welcomed.push(client.expect("every client of the burst is welcomed"));
            }
        };
        timeout(Duration::from_secs(60), all)
            .await
            .expect("the burst is served in 60 s");
        assert_eq!(welcomed.len(), BURST);
        drop(welcomed);
        server.stop().await;
    });
}

/// The listen queue is as long as configured: connections beyond it would
/// not complete their TCP handshake while the server accepts nobody. It used
/// to be 1,024 (tokio's), or the kernel's 128 on older systems, whatever
/// `max_clients` was.
#[test]
fn the_listen_queue_is_as_long_as_configured() {
    serial(async {
        const QUEUED: usize = 1_500;
        let server = TestServer::start(chat_server::Config {
            max_clients: 1,
            // Nobody is told "server full": the rest wait in the listen queue.
            reject_slots: 0,
            backlog: Some(QUEUED as u32),
            ..config()
        })
        .await;
        let first = join(server.addr).await;
        let mut queued = Vec::with_capacity(QUEUED);
        for _ in 0..QUEUED {
            // `connect` bounds each handshake by T; a full queue drops the SYN.
            queued.push(connect(server.addr).await);
        }
        // The first one in the queue gets the slot once it frees.
        drop(first);
        let mut next = queued.remove(0);
        next.send(Message::hello()).await;
        next.welcomed().await;
        drop((next, queued));
        server.stop().await;
    });
}

/// Counts the accept loop's error logs ("accept failed").
#[derive(Clone, Default)]
struct AcceptErrors {
    count: Arc<AtomicUsize>,
    logged: Arc<Notify>,
}

impl<S: Subscriber> Layer<S> for AcceptErrors {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target().starts_with("chat_server::listener")
            && *meta.level() == tracing::Level::ERROR
        {
            self.count.fetch_add(1, Ordering::SeqCst);
            self.logged.notify_one();
        }
    }
}

/// Out of descriptors, the accept loop backs off; once they free up, the
/// waiting client is served within a fraction of a second, however long the
/// shortage lasted (it used to wait up to 1 s).
#[test]
fn accept_recovers_quickly_after_fd_exhaustion() {
    serial(async {
        const EMFILE: i32 = 24;
        let errors = AcceptErrors::default();
        // Current-thread runtime: the server's tasks log on this thread.
        let _logs =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(errors.clone()));
        let server = TestServer::start(config()).await;

        // Take every free descriptor but one, which the client's socket takes.
        let mut hog = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(file) => hog.push(file),
                Err(e) if e.raw_os_error() == Some(EMFILE) => break,
                Err(e) => panic!("open /dev/null: {e}"),
            }
            assert!(hog.len() < 1_000_000, "no descriptor limit?");
        }
        hog.pop();
        let mut client = connect(server.addr).await;
        client.send(Message::hello()).await;

        // The server cannot accept it: let the failures pile up (the old
        // backoff reached 1 s by the eighth), then free everything right after one.
        timeout(T, async {
            while errors.count.load(Ordering::SeqCst) < 8 {
                errors.logged.notified().await;
            }
            errors.logged.notified().await;
        })
        .await
        .expect("accept fails while descriptors are exhausted");
        let freed = Instant::now();
        drop(hog);
        client.welcomed().await;
        let waited = freed.elapsed();
        assert!(
            waited < Duration::from_millis(500),
            "welcomed {waited:?} after descriptors freed up"
        );
        drop(client);
        server.stop().await;
    });
}

/// `Server::bind` takes host names and IPv6, like `TcpListener::bind`.
#[test]
fn binds_names_and_ipv6() {
    serial(async {
        for bind in ["localhost:0", "[::1]:0", "127.0.0.1:0"] {
            let server = TestServer::start_on(bind, config()).await;
            assert!(server.addr.ip().is_loopback(), "{bind}: {}", server.addr);
            let mut client = join(server.addr).await;
            client.send(Message::Ping { nonce: 3 }).await;
            assert_eq!(client.recv().await, Message::Pong { nonce: 3 });
            drop(client);
            server.stop().await;
        }
        let err = chat_server::Server::bind("no-such-host.invalid:0", config())
            .await
            .unwrap_err();
        assert!(matches!(err, chat_server::Error::Bind(_)), "{err}");
    });
}
