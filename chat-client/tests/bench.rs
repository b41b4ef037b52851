//! The real `chat-bench` binary against an in-process server (or a scripted
//! one): every delivery must arrive exactly once, in per-sender order,
//! intact; evictions and silence must end a run within its timeout. NATS
//! and Redis (`--system`) are driven against in-test fakes that speak just
//! enough of each protocol: CI needs neither server.

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use chat_proto::{Connection, Event, Message, ServerConfig};
use chat_server::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use common::start;

mod common;

/// Flood control off, as for any load test, and no cap on connections
/// per IP (every client comes from 127.0.0.1).
fn load_config() -> Config {
    Config {
        rate: 0,
        max_per_ip: 0,
        ..Config::default()
    }
}

/// What a `chat-bench` run gave.
struct Bench {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Bench {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs the chat-bench binary against `addr`; gives up after two minutes.
async fn bench(addr: SocketAddr, args: &[&str]) -> Bench {
    let t0 = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .arg("--server")
        .arg(addr.to_string())
        .args(["--threads", "2"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chat-bench starts");
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("chat-bench finishes within two minutes")
        .expect("chat-bench output");
    Bench {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        took: t0.elapsed(),
    }
}

/// Runs `chat-bench --json fanout ARGS` (split at spaces), checks its exit
/// status, and gives back the run and its report.
async fn fanout(addr: SocketAddr, args: &str, code: i32) -> (Bench, Value) {
    let mut all = vec!["--json", "fanout"];
    all.extend(args.split_whitespace());
    let run = bench(addr, &all).await;
    assert_eq!(run.code, Some(code), "{}{}", run.stdout, run.stderr);
    let report = run.json();
    (run, report)
}

fn assert_clean(r: &Value) {
    assert_eq!(r["deliveries"], r["expected"], "{r}");
    for field in ["losses", "duplicates", "order_violations", "corrupt"] {
        assert_eq!(r[field], 0, "{field}: {r}");
    }
    assert_eq!(r["evicted"], Value::Array(vec![]), "{r}");
    assert_eq!(r["timed_out"], false, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_everything_once_in_order() {
    let server = start(load_config()).await;
    let (_, r) = fanout(server.addr, "-n 6 -m 300 --window 50", 0).await;
    assert_eq!(r["expected"], 6 * 5 * 300);
    assert_clean(&r);
    assert!(r["latency_us"]["max"].as_f64().unwrap() > 0.0, "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_fanout_with_large_chinese_text() {
    let server = start(load_config()).await;
    let (_, r) = fanout(server.addr, "-n 3 -m 40 -s 4000 --rate 400", 0).await;
    assert_eq!(r["expected"], 3 * 2 * 40);
    assert_clean(&r);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_clients_is_a_clear_error() {
    let server = start(Config {
        max_clients: 2,
        ..load_config()
    })
    .await;
    let run = bench(server.addr, &["fanout", "-n", "6", "-m", "10"]).await;
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("server full"), "{}", run.stderr);
    server.stop().await;
}

#[tokio::test]
async fn options_are_checked() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let run = bench(addr, &["fanout", "-n", "1"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("at least 2 clients"), "{}", run.stderr);
    let run = bench(addr, &["fanout", "-s", "10"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("at least 31 bytes"), "{}", run.stderr);
    let run = bench(addr, &["soak"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--server-pid"), "{}", run.stderr);
    let run = bench(addr, &["history", "resume", "--recent", "0"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--recent"), "{}", run.stderr);
    let run = bench(addr, &["history", "ack", "--rate", "0", "--window", "0"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--window"), "{}", run.stderr);
}

#[test]
fn help_says_the_server_needs_flood_control_off() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .arg("--help")
        .output()
        .expect("chat-bench runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--rate 0"), "{help}");
    for workload in ["fanout", "rooms", "dm", "history", "idle", "soak"] {
        assert!(help.contains(workload), "{help}");
    }
    for system in ["--system", "chat", "nats", "redis"] {
        assert!(help.contains(system), "{help}");
    }
}

/// A client of our own, driven by the protocol machine, that counts the
/// notices the server sends.
struct Probe {
    stream: TcpStream,
    conn: Connection,
}

impl Probe {
    async fn connect(addr: SocketAddr) -> Probe {
        let mut p = Probe {
            stream: TcpStream::connect(addr).await.expect("probe connects"),
            conn: Connection::client(Default::default()),
        };
        let event = p.next().await;
        assert!(matches!(event, Event::Welcome(_)), "{event:?}");
        p
    }

    async fn next(&mut self) -> Event {
        loop {
            if let Some(event) = self.conn.poll().expect("server follows the protocol") {
                return event;
            }
            if let Some(out) = self.conn.transmit() {
                self.stream.write_all(&out).await.expect("probe writes");
            }
            let n = self
                .stream
                .read_buf(self.conn.input())
                .await
                .expect("probe reads");
            assert_ne!(n, 0, "the server closed the probe");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_seen_by_the_server() {
    let server = start(load_config()).await;
    let mut probe = Probe::connect(server.addr).await;
    let run = bench(
        server.addr,
        &[
            "--json",
            "idle",
            "-k",
            "40",
            "--parallel",
            "8",
            "--hold",
            "0",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    // The bench's clients heard each other arrive (each at least of those
    // after it)...
    let notices = run.json()["joined_notices"].as_u64().unwrap();
    assert!(notices >= 40 * 39 / 2, "{notices}");
    // ...and the server announced 40 distinct clients, and then 40
    // departures, to a client the bench knows nothing about.
    let mut joined = std::collections::HashSet::new();
    let mut left = std::collections::HashSet::new();
    while left.len() < 40 {
        let event = tokio::time::timeout(Duration::from_secs(30), probe.next())
            .await
            .unwrap_or_else(|_| panic!("{} joins and {} leaves seen", joined.len(), left.len()));
        match event {
            Event::Message(Message::Joined { ip, port }) => {
                assert!(joined.insert(SocketAddr::new(ip, port)));
            }
            Event::Message(Message::Left { ip, port }) => {
                let addr = SocketAddr::new(ip, port);
                assert!(joined.contains(&addr), "{addr} left before joining");
                assert!(left.insert(addr));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(joined.len(), 40);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_the_server_keeps_is_a_failure() {
    // Too little traffic to fill anything: the stalled client is not
    // evicted, and the run must say so rather than pass.
    let server = start(load_config()).await;
    let (_, r) = fanout(server.addr, "-n 3 -m 5 --stalled 1 --timeout 1", 1).await;
    assert_clean(&r);
    assert_eq!(r["stalled_evicted"], 0, "{r}");
    assert_eq!(r["stalled_outcomes"][0]["outcome"], "not_evicted", "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_evicted_as_a_slow_consumer() {
    // 18 MB for the stalled client: far more than its server-side socket
    // buffer (4 MiB at most by default) and a 1 MiB outbox can hold; the
    // readers stay within 50 messages (400 KB) of every sender.
    let server = start(Config {
        outbox_bytes: 1 << 20,
        ..load_config()
    })
    .await;
    let (_, r) = fanout(
        server.addr,
        "-n 3 -m 1500 -s 4000 --window 50 --stalled 1",
        0,
    )
    .await;
    assert_clean(&r);
    assert_eq!(r["stalled_evicted"], 1, "{r}");
    assert_eq!(r["stalled_outcomes"][0]["reason"], "slow consumer", "{r}");
    server.stop().await;
}

/// A scripted server: welcomes `clients` clients, tells the first about the
/// others, then evicts the last with `reason` if there is one, and relays
/// nothing. Holds every connection until dropped.
async fn scripted(clients: usize, reason: Option<&'static str>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held: Vec<(TcpStream, Connection)> = Vec::new();
        for _ in 0..clients {
            let (mut stream, peer) = listener.accept().await.expect("accept");
            let mut conn = Connection::server(ServerConfig::default());
            loop {
                stream
                    .read_buf(conn.input())
                    .await
                    .expect("the client says Hello");
                if let Some(Event::Hello { .. }) = conn.poll().expect("a client's Hello") {
                    break;
                }
            }
            conn.accept(peer);
            if let Some((_, first)) = held.first_mut() {
                first
                    .send(&Message::Joined {
                        ip: peer.ip(),
                        port: peer.port(),
                    })
                    .expect("Joined is a server's");
            }
            held.push((stream, conn));
            for (stream, conn) in &mut held {
                if let Some(out) = conn.transmit() {
                    stream.write_all(&out).await.expect("write");
                }
            }
        }
        if let Some(reason) = reason {
            let (mut stream, mut conn) = held.pop().expect("a client");
            conn.refuse(reason);
            stream
                .write_all(&conn.transmit().expect("the Error"))
                .await
                .expect("write");
            stream.shutdown().await.expect("half-close");
            held.push((stream, conn));
        }
        std::future::pending::<()>().await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_stops_the_run_with_the_servers_reason() {
    let (addr, server) = scripted(3, Some("slow consumer")).await;
    // The timeout is long: the run must end because of the eviction.
    let (run, r) = fanout(addr, "-n 3 -m 100 --timeout 60", 1).await;
    server.abort();
    assert!(run.took < Duration::from_secs(30), "took {:?}", run.took);
    assert!(run.stderr.contains("slow consumer"), "{}", run.stderr);
    // The last client the server accepted: 1 or 2, which connect together.
    assert_eq!(r["evicted"].as_array().unwrap().len(), 1, "{r}");
    assert_ne!(r["evicted"][0]["client"], 0, "{r}");
    assert!(
        r["evicted"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("slow consumer"),
        "{r}"
    );
    assert!(r["losses"].as_u64().unwrap() > 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_ends_the_run_at_its_timeout() {
    let (addr, server) = scripted(3, None).await;
    let (run, r) = fanout(addr, "-n 3 -m 100 --timeout 2", 1).await;
    server.abort();
    assert!(run.took >= Duration::from_secs(2), "took {:?}", run.took);
    assert!(run.took < Duration::from_secs(15), "took {:?}", run.took);
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["deliveries"], 0, "{r}");
}

/// A stand-in for a NATS or Redis server on loopback: just enough of each
/// protocol for `chat-bench --system`, so that CI needs neither. Every
/// publish on a channel goes to every connection subscribed to it but the
/// publishing one (for NATS that is echo off; a Redis client subscribes on
/// another connection, so it gets its own messages back, as from Redis).
/// Each frame it sends is written in two halves, so the adapters see split
/// reads.
#[derive(Default)]
struct Broker {
    subs: std::sync::Mutex<Vec<Sub>>,
    /// Deliver every publish on every subscription, whatever its channel:
    /// a broken server, for the checks to catch.
    leaky: bool,
}

/// One subscription: the connection, its channel, its NATS sid, its writer.
struct Sub {
    conn: usize,
    channel: Vec<u8>,
    sid: Vec<u8>,
    tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

impl Broker {
    /// Sends `frame(subscription)` to every subscriber of `channel` but `from`.
    fn publish(&self, from: usize, channel: &[u8], frame: impl Fn(&Sub) -> Vec<u8>) -> usize {
        let subs = self.subs.lock().unwrap();
        let mut n = 0;
        for sub in subs
            .iter()
            .filter(|s| s.conn != from && (self.leaky || s.channel == channel))
        {
            let _ = sub.tx.send(frame(sub));
            n += 1;
        }
        n
    }

    fn subscribe(
        &self,
        conn: usize,
        channel: &[u8],
        sid: &[u8],
        tx: &tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    ) {
        self.subs.lock().unwrap().push(Sub {
            conn,
            channel: channel.to_vec(),
            sid: sid.to_vec(),
            tx: tx.clone(),
        });
    }
}

#[derive(Clone, Copy)]
enum Fake {
    Nats,
    Redis,
}

/// Starts a fake server; gives its address.
async fn fake(kind: Fake) -> SocketAddr {
    fake_broker(kind, Broker::default()).await
}

/// Starts a fake server around `broker`; gives its address.
async fn fake_broker(kind: Fake, broker: Broker) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = std::sync::Arc::new(broker);
    tokio::spawn(async move {
        for id in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(fake_conn(kind, id, stream, broker.clone()));
        }
    });
    addr
}

fn line_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// One command at the front of `buf`, as its words (NATS: the line's
/// words, then the payload for `PUB`; Redis: the bulk strings of an
/// array), and the bytes it takes.
fn command(kind: Fake, buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    let eol = line_end(buf)?;
    let line = &buf[..eol];
    let number = |s: &[u8]| -> usize { std::str::from_utf8(s).unwrap().parse().unwrap() };
    match kind {
        Fake::Nats => {
            let mut words: Vec<Vec<u8>> = line
                .split(|&c| c == b' ')
                .filter(|w| !w.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            if words[0] != b"PUB" {
                return Some((words, eol + 2));
            }
            let len = number(words.last().unwrap());
            let end = eol + 2 + len;
            if buf.len() < end + 2 {
                return None;
            }
            assert_eq!(&buf[end..end + 2], b"\r\n", "PUB payload framing");
            words.push(buf[eol + 2..end].to_vec());
            Some((words, end + 2))
        }
        Fake::Redis => {
            assert_eq!(line[0], b'*', "a command is an array");
            let mut at = eol + 2;
            let mut words = Vec::new();
            for _ in 0..number(&line[1..]) {
                let eol = at + line_end(&buf[at..])?;
                assert_eq!(buf[at], b'$', "a command's words are bulk strings");
                let end = eol + 2 + number(&buf[at + 1..eol]);
                if buf.len() < end + 2 {
                    return None;
                }
                assert_eq!(&buf[end..end + 2], b"\r\n", "bulk string framing");
                words.push(buf[eol + 2..end].to_vec());
                at = end + 2;
            }
            Some((words, at))
        }
    }
}

/// A RESP bulk string.
fn bulk(data: &[u8]) -> Vec<u8> {
    let mut b = format!("${}\r\n", data.len()).into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n");
    b
}

async fn fake_conn(kind: Fake, id: usize, stream: TcpStream, broker: std::sync::Arc<Broker>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let (a, b) = frame.split_at(frame.len() / 2);
            if wr.write_all(a).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            if wr.write_all(b).await.is_err() {
                return;
            }
        }
    });
    if let Fake::Nats = kind {
        let _ = tx.send(b"INFO {\"server_id\":\"fake\",\"max_payload\":1048576}\r\n".to_vec());
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        while let Some((words, used)) = command(kind, &buf) {
            buf.drain(..used);
            let w: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
            match (kind, w.as_slice()) {
                (Fake::Nats, [b"CONNECT", json]) => {
                    assert!(String::from_utf8_lossy(json).contains("\"echo\":false"));
                }
                (Fake::Nats, [b"SUB", subject, sid]) => {
                    broker.subscribe(id, subject, sid, &tx);
                }
                (Fake::Nats, [b"PING"]) => drop(tx.send(b"PONG\r\n".to_vec())),
                (Fake::Nats, [b"PUB", subject, _len, payload]) => {
                    broker.publish(id, subject, |sub| {
                        let mut msg = b"MSG ".to_vec();
                        for part in [&sub.channel[..], b" ", &sub.sid, b" "] {
                            msg.extend_from_slice(part);
                        }
                        msg.extend_from_slice(format!("{}\r\n", payload.len()).as_bytes());
                        msg.extend_from_slice(payload);
                        msg.extend_from_slice(b"\r\n");
                        msg
                    });
                }
                (Fake::Redis, [b"SUBSCRIBE", channels @ ..]) => {
                    for (i, channel) in channels.iter().enumerate() {
                        broker.subscribe(id, channel, b"", &tx);
                        let mut msg = b"*3\r\n$9\r\nsubscribe\r\n".to_vec();
                        msg.extend_from_slice(&bulk(channel));
                        msg.extend_from_slice(format!(":{}\r\n", i + 1).as_bytes());
                        let _ = tx.send(msg);
                    }
                }
                (Fake::Redis, [b"PUBLISH", channel, payload]) => {
                    let n = broker.publish(id, channel, |sub| {
                        let mut msg = b"*3\r\n$7\r\nmessage\r\n".to_vec();
                        msg.extend_from_slice(&bulk(&sub.channel));
                        msg.extend_from_slice(&bulk(payload));
                        msg
                    });
                    let _ = tx.send(format!(":{n}\r\n").into_bytes());
                }
                (_, other) => panic!(
                    "unexpected command: {:?}",
                    other
                        .iter()
                        .map(|w| String::from_utf8_lossy(w))
                        .collect::<Vec<_>>()
                ),
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_drives_a_nats_server() {
    let addr = fake(Fake::Nats).await;
    let mut all = vec!["--system", "nats", "--json", "fanout"];
    all.extend("-n 4 -m 300 --window 50 -s 200".split_whitespace());
    let run = bench(addr, &all).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let r = run.json();
    assert_clean(&r);
    assert_eq!(r["system"], "nats", "{r}");
    assert_eq!(r["deliveries"], 4 * 3 * 300, "{r}");
    assert_eq!(r["self_deliveries"], 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_drives_a_redis_server_and_counts_its_echo_apart() {
    let addr = fake(Fake::Redis).await;
    let mut all = vec!["--system", "redis", "--json", "fanout"];
    all.extend("-n 4 -m 300 --window 50 --rate 2000".split_whitespace());
    let run = bench(addr, &all).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let r = run.json();
    assert_clean(&r);
    assert_eq!(r["system"], "redis", "{r}");
    assert_eq!(r["deliveries"], 4 * 3 * 300, "{r}");
    // Each client's own messages came back to it: counted apart. The last
    // few may still be on their way when a client has all it waits for.
    let own = r["self_deliveries"].as_u64().unwrap();
    assert!(own > 0 && own <= 4 * 300, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_drive_nats_and_redis_with_silent_members() {
    // 24 clients in rooms of 6, each in 2, every third one sending: each
    // room has 2 senders, and a message reaches the 5 others of its room.
    let args = "-n 24 --room-size 6 -k 2 --senders 8 -m 40 --window 10 --rate 1000";
    for (kind, system) in [(Fake::Nats, "nats"), (Fake::Redis, "redis")] {
        let addr = fake(kind).await;
        let mut all = vec!["--system", system, "--json", "rooms"];
        all.extend(args.split_whitespace());
        let run = bench(addr, &all).await;
        assert_eq!(run.code, Some(0), "{system}: {}{}", run.stdout, run.stderr);
        let r = run.json();
        assert_rooms_clean(&r);
        assert_eq!(r["system"], system, "{r}");
        assert_eq!(r["senders"], 8, "{r}");
        assert_eq!(r["expected"], 8 * 40 * 5, "{r}");
        assert_eq!(r["rooms"]["rooms"], 8, "{r}");
        let own = r["self_deliveries"].as_u64().unwrap();
        match kind {
            Fake::Nats => assert_eq!(own, 0, "{r}"),
            Fake::Redis => assert!(own > 0 && own <= 8 * 40, "{r}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchor_delivering_outside_the_room_fails_the_run() {
    let broker = Broker {
        leaky: true,
        ..Broker::default()
    };
    let addr = fake_broker(Fake::Redis, broker).await;
    let mut all = vec!["--system", "redis", "--json", "rooms"];
    all.extend("-n 8 --room-size 4 -k 1 -m 20 --rate 500".split_whitespace());
    let run = bench(addr, &all).await;
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let r = run.json();
    // Everyone also got the other room's 4 x 20 messages on its own channel
    // (the last few may still be on their way when a client has all it
    // waits for).
    assert_eq!(r["deliveries"], r["expected"], "{r}");
    let wrong = r["misdirected"].as_u64().unwrap();
    assert!(wrong > 0 && wrong <= 8 * 4 * 20, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_fanout_and_rooms_drive_the_anchors() {
    let addr = fake(Fake::Nats).await;
    let run = bench(addr, &["--system", "nats", "idle", "-k", "2"]).await;
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("only fanout and rooms"),
        "{}",
        run.stderr
    );
    let run = bench(addr, &["--system", "nats", "fanout", "--stalled", "1"]).await;
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--system chat"), "{}", run.stderr);
}

/// Runs `chat-bench --json WORKLOAD ARGS` (split at spaces), checks its
/// exit status, and gives back the run and its report.
async fn workload(addr: SocketAddr, name: &str, args: &str, code: i32) -> (Bench, Value) {
    let mut all = vec!["--json", name];
    all.extend(args.split_whitespace());
    let run = bench(addr, &all).await;
    assert_eq!(run.code, Some(code), "{}{}", run.stdout, run.stderr);
    let report = run.json();
    (run, report)
}

fn assert_rooms_clean(r: &Value) {
    assert_clean(r);
    assert_eq!(r["misdirected"], 0, "{r}");
    assert_eq!(r["mismatched"], 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_deliver_what_each_room_says_to_its_other_members() {
    let server = start(load_config()).await;
    // 40 clients, 8 rooms of 10, each client in 2: a message reaches the
    // 9 others in the room it is said in, never the rest.
    let (_, r) = workload(
        server.addr,
        "rooms",
        "-n 40 --room-size 10 -m 60 --window 20",
        0,
    )
    .await;
    assert_eq!(r["expected"], 40 * 60 * 9, "{r}");
    assert_eq!(r["rooms"]["rooms"], 8, "{r}");
    assert_eq!(r["rooms"]["per_client"], 2, "{r}");
    assert_rooms_clean(&r);
    // Paced, in rooms of 4, each client in 3 of them.
    let (_, r) = workload(
        server.addr,
        "rooms",
        "-n 12 --room-size 4 -k 3 -m 20 --rate 200",
        0,
    )
    .await;
    assert_eq!(r["expected"], 12 * 20 * 3, "{r}");
    assert_rooms_clean(&r);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_members_get_what_the_senders_say() {
    let server = start(load_config()).await;
    // 40 clients in 8 rooms of 10, each in 2, every fifth one sending: 2
    // senders per room; the 32 others only listen and are checked alike.
    let (_, r) = workload(
        server.addr,
        "rooms",
        "-n 40 --room-size 10 --senders 8 -m 60 --window 20",
        0,
    )
    .await;
    assert_eq!(r["senders"], 8, "{r}");
    assert_eq!(r["clients"], 40, "{r}");
    assert_eq!(r["expected"], 8 * 60 * 9, "{r}");
    assert_rooms_clean(&r);
    server.stop().await;
}

#[tokio::test]
async fn room_numbers_that_do_not_fit_are_a_clear_error() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let run = bench(addr, &["rooms", "-n", "1000", "--rooms", "100"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--rooms 200"), "{}", run.stderr);
    let run = bench(addr, &["rooms", "-n", "35", "--room-size", "10"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("rooms of 10"), "{}", run.stderr);
    let run = bench(addr, &["--system", "redis", "dm"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("only fanout"), "{}", run.stderr);
    let run = bench(addr, &["rooms", "-n", "40", "--senders", "7"]).await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("the same number of senders") && run.stderr.contains("40, 20, 8, 4"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_make_round_trips() {
    let server = start(Config {
        tell_rate: 0,
        ..load_config()
    })
    .await;
    let (_, r) = workload(server.addr, "dm", "-p 5 -m 40 --rate 500", 0).await;
    assert_eq!(r["round_trips"], 200, "{r}");
    assert_eq!(r["dms"], 400, "{r}");
    for field in ["losses", "duplicates", "order_violations", "corrupt"] {
        assert_eq!(r[field], 0, "{field}: {r}");
    }
    assert!(r["latency_us"]["max"].as_f64().unwrap() > 0.0, "{r}");
    // One in flight per pair, as fast as they come back.
    let (_, r) = workload(server.addr, "dm", "-p 3 -m 50 --rate 0", 0).await;
    assert_eq!(r["round_trips"], 150, "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_direct_message_fails_the_run() {
    // The server's default limit: 10 a second, bursts of 20. One pair at
    // 1,000 round trips a second passes it at once.
    let server = start(load_config()).await;
    let (run, r) = workload(server.addr, "dm", "-p 1 -m 200 --rate 1000", 1).await;
    assert!(run.stderr.contains("RateLimited"), "{}", run.stderr);
    assert!(
        r["evicted"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("RateLimited"),
        "{r}"
    );
    assert!(r["round_trips"].as_u64().unwrap() < 200, "{r}");
    server.stop().await;
}

impl Probe {
    /// A named probe (the ROOMS capability), in the lobby.
    async fn named(addr: SocketAddr) -> Probe {
        let mut config = chat_proto::ClientConfig::default();
        config.features = chat_proto::features::ROOMS;
        let mut p = Probe {
            stream: TcpStream::connect(addr).await.expect("probe connects"),
            conn: Connection::client(config),
        };
        let event = p.next().await;
        assert!(matches!(event, Event::Welcome(_)), "{event:?}");
        p.conn
            .send(&Message::Nick {
                name: "probe".into(),
            })
            .expect("Nick first");
        p
    }

    /// Every room and its member count (one `ListRooms` answer).
    async fn rooms(&mut self) -> Vec<chat_proto::RoomInfo> {
        self.conn.send(&Message::ListRooms).expect("ListRooms");
        let mut rooms = Vec::new();
        loop {
            if let Event::Message(Message::Rooms { rooms: part, more }) = self.next().await {
                rooms.extend(part);
                if !more {
                    return rooms;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_named_clients_sit_in_their_rooms() {
    let server = start(load_config()).await;
    let mut probe = Probe::named(server.addr).await;
    let bench_run = tokio::spawn(bench(
        server.addr,
        &[
            "--json",
            "idle",
            "-k",
            "40",
            "--rooms",
            "3",
            "--room-size",
            "10",
            "--hold",
            "5",
        ],
    ));
    // List the rooms every 20 ms until the bench's clients are all seated:
    // 8 rooms of 10 (40 clients, 2 rooms each besides the lobby), and the
    // lobby with them and the probe.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let seated = async {
        loop {
            tick.tick().await;
            let rooms = probe.rooms().await;
            let full = rooms
                .iter()
                .filter(|r| r.name != "lobby" && r.members == 10);
            let lobby = rooms.iter().find(|r| r.name == "lobby").map(|r| r.members);
            if full.count() == 8 && rooms.len() == 9 && lobby == Some(41) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), seated)
        .await
        .expect("the bench's clients seated in 8 rooms of 10");
    let run = bench_run.await.expect("bench task");
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["rooms"], 3, "{r}");
    let notices = r["joined_notices"].as_u64().unwrap();
    assert!(notices >= 40 * 39 / 2, "{notices}");
    server.stop().await;
}

/// How [`faulty_rooms`] gets rooms wrong.
#[derive(Clone, Copy)]
enum Fault {
    /// Relays each `Say` to every other client, in the room or not.
    Leak,
    /// Relays each `Say` to every other client but the first to connect.
    Starve,
}

/// The clients of a [`fake_rooms`] server: address, and a way to send to each.
type Peers = std::sync::Arc<
    std::sync::Mutex<Vec<(SocketAddr, tokio::sync::mpsc::UnboundedSender<Message>)>>,
>;

/// A fake ROOMS server that names, seats and answers every client, and
/// gives every other event to `answer` with the client as it is known and
/// every client so far; what `answer` gives back goes to the client.
async fn fake_rooms<A>(answer: A) -> SocketAddr
where
    A: Fn(Event, &chat_proto::Member, &Peers) -> Option<Message> + Clone + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers: Peers = Default::default();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let (peers, answer) = (peers.clone(), answer.clone());
            tokio::spawn(async move {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let mut conn = Connection::server(ServerConfig::default());
                let mut me = chat_proto::Member::new("", peer);
                loop {
                    while let Some(event) = conn.poll().expect("the bench follows the protocol") {
                        let reply = match event {
                            Event::Hello { .. } => {
                                conn.accept(peer);
                                continue;
                            }
                            Event::Message(Message::Nick { name }) => {
                                me.name = name.clone();
                                peers.lock().unwrap().push((peer, tx.clone()));
                                Message::Named { name }
                            }
                            Event::Message(Message::Part { room }) => Message::Departed {
                                room,
                                member: me.clone(),
                            },
                            Event::Message(Message::Join { room }) => Message::Roster {
                                room,
                                members: vec![me.clone()],
                                more: false,
                            },
                            other => match answer(other, &me, &peers) {
                                Some(reply) => reply,
                                None => continue,
                            },
                        };
                        conn.send(&reply).expect("a server's message");
                    }
                    if let Some(out) = conn.transmit()
                        && stream.write_all(&out).await.is_err()
                    {
                        return;
                    }
                    tokio::select! {
                        r = stream.read_buf(conn.input()) => {
                            if !matches!(r, Ok(n) if n > 0) {
                                return;
                            }
                        }
                        Some(msg) = rx.recv() => conn.send(&msg).expect("a server's message"),
                    }
                }
            });
        }
    });
    addr
}

/// A fake ROOMS server that gets rooms wrong: it names, seats and answers
/// every client, but relays each `Say` as `fault` says. The bench must
/// notice and fail.
async fn faulty_rooms(fault: Fault) -> SocketAddr {
    fake_rooms(move |event, me, peers| {
        if let Event::Message(Message::Say { room, text }) = event {
            let peers = peers.lock().unwrap();
            let skip = match fault {
                Fault::Leak => 0,
                Fault::Starve => 1,
            };
            for (addr, tx) in peers.iter().skip(skip) {
                if *addr != me.addr() {
                    let _ = tx.send(Message::Said {
                        room: room.clone(),
                        from: me.clone(),
                        text: text.clone(),
                    });
                }
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_outside_the_room_fails_the_run() {
    let addr = faulty_rooms(Fault::Leak).await;
    // 2 rooms of 2: each message reaches its one other member, and the
    // leaky server sends it to the 2 clients of the other room too.
    let (_, r) = workload(
        addr,
        "rooms",
        "-n 4 --room-size 2 -k 1 -m 10 --timeout 5",
        1,
    )
    .await;
    assert_eq!(r["expected"], 4 * 10, "{r}");
    assert_eq!(r["deliveries"], 4 * 10, "{r}");
    // Each receiver stops once it has all it expects: the last few leaks
    // may come too late to count.
    let leaked = r["misdirected"].as_u64().unwrap();
    assert!(leaked > 0 && leaked <= 4 * 10 * 2, "{r}");
    assert_eq!(r["mismatched"], 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_short_of_its_rooms_messages_fails_the_run() {
    let addr = faulty_rooms(Fault::Starve).await;
    // Rooms of 4, each client in 2: with everyone getting everything from
    // the other 3 (the fake ignores rooms) but the first client nothing.
    let (_, r) = workload(
        addr,
        "rooms",
        "-n 8 --room-size 4 -k 2 -m 10 --timeout 2",
        1,
    )
    .await;
    assert_eq!(r["timed_out"], true, "{r}");
    assert!(r["mismatched"].as_u64().unwrap() >= 1, "{r}");
    let starved = r["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["got"] == 0)
        .unwrap_or_else(|| panic!("a receiver that got nothing: {r}"));
    assert!(starved["expected"].as_u64().unwrap() > 0, "{r}");
}

fn assert_history_clean(r: &Value) {
    assert_eq!(r["acks"], r["expected_acks"], "{r}");
    assert_eq!(r["deliveries"], r["expected"], "{r}");
    for field in [
        "duplicate_acks",
        "unstored",
        "losses",
        "duplicates",
        "order_violations",
        "corrupt",
        "id_violations",
        "broken_links",
    ] {
        assert_eq!(r[field], 0, "{field}: {r}");
    }
    assert_eq!(r["evicted"], Value::Array(vec![]), "{r}");
    assert!(r["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_acknowledges_every_message_and_resumes_them_all() {
    // History in memory (the library's default), pages of 50.
    let server = start(Config {
        history_page: 50,
        ..load_config()
    })
    .await;
    // Paced, everyone in the lobby.
    let (_, r) = workload(server.addr, "history", "ack -n 4 -m 40 --rate 200", 0).await;
    assert_eq!(r["expected_acks"], 4 * 40, "{r}");
    assert_eq!(r["expected"], 4 * 40 * 3, "{r}");
    assert_history_clean(&r);
    // Windowed, in 2 rooms of 3.
    let (_, r) = workload(
        server.addr,
        "history",
        "ack -n 6 --room-size 3 -m 100 --rate 0 --window 10",
        0,
    )
    .await;
    assert_eq!(r["room_size"], 3, "{r}");
    assert_eq!(r["expected"], 6 * 100 * 2, "{r}");
    assert_history_clean(&r);
    // 120 messages page in as 50, 50 and 20; the last 30 in one.
    let (_, r) = workload(
        server.addr,
        "history",
        "resume -k 120 --repeat 5 --recent 30",
        0,
    )
    .await;
    assert_eq!(
        (r["resumes"].as_u64(), r["recents"].as_u64()),
        (Some(5), Some(5)),
        "{r}"
    );
    assert_eq!(r["pages"], 3, "{r}");
    assert_eq!(r["wrong"], 0, "{r}");
    assert!(r["latency_us"]["p99"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["recent_latency_us"]["p99"].as_f64().unwrap() > 0.0, "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_needs_a_server_with_history_on() {
    let server = start(Config {
        storage: chat_server::Storage::Off,
        ..load_config()
    })
    .await;
    for mode in ["ack", "resume"] {
        let run = bench(server.addr, &["history", mode, "-s", "40"]).await;
        assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("HISTORY capability"), "{}", run.stderr);
    }
    server.stop().await;
}

/// A fake HISTORY server that numbers every message from one counter,
/// acknowledges it and posts it to every other client (whatever its room),
/// and pages what it stored, but links every message to 0 instead of the
/// one before it.
async fn unlinked_history() -> SocketAddr {
    // Every room's messages, with their room.
    let stored = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(String, chat_proto::Entry)>::new(),
    ));
    fake_rooms(move |event, me, peers| {
        let reply = match event {
            Event::Numbered {
                seq,
                message: Message::Say { room, text },
            } => {
                let mut stored = stored.lock().unwrap();
                let entry = chat_proto::Entry {
                    id: stored.len() as u64 + 1,
                    prev: 0,
                    at: 1,
                    from: me.clone(),
                    text,
                };
                stored.push((room.clone(), entry.clone()));
                let (id, at) = (entry.id, entry.at);
                for (addr, tx) in peers.lock().unwrap().iter() {
                    if *addr != me.addr() {
                        let _ = tx.send(Message::Posted {
                            room: room.clone(),
                            entry: entry.clone(),
                        });
                    }
                }
                Message::Stored { seq, id, at }
            }
            Event::Message(Message::Resume {
                conversation,
                after,
                ..
            }) => {
                let entries = stored
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(r, e)| r == conversation.name() && e.id > after)
                    .map(|(_, e)| e.clone())
                    .collect();
                Message::Page {
                    conversation,
                    entries,
                    missing: false,
                    more: false,
                }
            }
            Event::Message(Message::Recent {
                conversation,
                count,
            }) => {
                let mut entries: Vec<_> = stored
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(r, _)| r == conversation.name())
                    .map(|(_, e)| e.clone())
                    .collect();
                entries.drain(..entries.len().saturating_sub(count as usize));
                Message::Page {
                    conversation,
                    entries,
                    missing: false,
                    more: false,
                }
            }
            _ => return None,
        };
        Some(reply)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_with_broken_links_fails_the_run() {
    let addr = unlinked_history().await;
    let (_, r) = workload(addr, "history", "ack -n 3 -m 20 --rate 0 --timeout 5", 1).await;
    // Everything arrives, and every Posted links to 0: all but the few
    // that come before a receiver has any id of the room are broken links.
    // (The fake does not keep a sender's Stored behind the Posted of
    // smaller ids either, so ids may be seen not rising too.)
    assert_eq!(r["acks"], 3 * 20, "{r}");
    assert_eq!(r["deliveries"], 3 * 20 * 2, "{r}");
    assert!(
        r["broken_links"].as_u64().unwrap() >= 3 * (20 * 2 - 1),
        "{r}"
    );
    let (_, r) = workload(addr, "history", "resume -k 10 --repeat 2 --recent 4", 1).await;
    assert_eq!(r["wrong"], 4, "{r}");
    assert!(
        r["first_wrong"].as_str().unwrap().contains("links to 0"),
        "{r}"
    );
}

/// `--tls`: fanout, rooms and idle over TLS, pinning the server's
/// fingerprint, as checked as over plaintext; a wrong pin is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_over_tls() {
    let tls = chat_server::Tls::self_signed(&[]).unwrap();
    let pin = tls.fingerprint().to_owned();
    // TLS in a debug build, beside the other tests of this file: a reader
    // can fall more than the default 1,024 buffers behind without being
    // slow in any real sense. What is tested here is that the workloads run
    // over TLS, not the eviction policy.
    let config = Config {
        outbox_depth: 65_536,
        ..load_config()
    };
    let server = chat_server::Server::bind("127.0.0.1:0", config)
        .await
        .unwrap()
        .tls("127.0.0.1:0", tls)
        .await
        .unwrap();
    let addr = server.tls_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));
    let over_tls = ["--tls", "--fingerprint", pin.as_str(), "--json"];
    let run = bench(
        addr,
        &[&over_tls[..], &["fanout", "-n", "10", "-m", "200"]].concat(),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let r = run.json();
    assert_clean(&r);
    assert_eq!(r["tls"], true);
    assert_eq!(r["deliveries"], 10 * 9 * 200);
    let rooms = [
        "rooms",
        "-n",
        "20",
        "--room-size",
        "5",
        "-k",
        "2",
        "-m",
        "50",
    ];
    let run = bench(addr, &[&over_tls[..], &rooms].concat()).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_clean(&run.json());
    let run = bench(
        addr,
        &[&over_tls[..], &["idle", "-k", "50", "--hold", "0"]].concat(),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["tls"], true);
    assert!(r["handshakes_per_second"].as_f64().unwrap() > 0.0, "{r}");

    let other = chat_server::Tls::self_signed(&[]).unwrap();
    let wrong = [
        "--tls",
        "--fingerprint",
        other.fingerprint(),
        "fanout",
        "-n",
        "2",
        "-m",
        "1",
    ];
    let run = bench(addr, &wrong).await;
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stderr.contains("not the one trusted"), "{}", run.stderr);
}

/// `login` logs in by password and by token as many times as asked, and
/// every one of them through; a server that throttles makes it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_by_password_and_by_token() {
    let server = start(Config {
        login_rate: 0,
        login_rate_ip: 0,
        ..load_config()
    })
    .await;
    for by in ["password", "token"] {
        let run = bench(
            server.addr,
            &[
                "--json",
                "login",
                "--clients",
                "4",
                "--logins",
                "20",
                "--by",
                by,
            ],
        )
        .await;
        assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
        let r = run.json();
        assert_eq!(r["logins"], 20, "{r}");
        assert_eq!(r["failed"], 0, "{r}");
        assert_eq!(r["by"], by, "{r}");
    }
    server.stop().await;
    // Throttled: 3 password attempts per account a minute.
    let server = start(load_config()).await;
    let run = bench(
        server.addr,
        &["--json", "login", "--clients", "1", "--logins", "6"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("too many attempts"), "{}", run.stderr);
    server.stop().await;
}
