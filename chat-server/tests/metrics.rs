//! The admin listener: `/metrics` counts what real clients do (connect,
//! send, get evicted, send bad frames, fail handshakes), `/health` says
//! when the server shuts down, and a bad or slow request is cut off.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::Message;
use chat_server::{Config, Server};
use common::{Client, T, TestServer, config, connect, connect_with, join, named, rooms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, timeout};

/// The test config with an admin listener on a free loopback port.
fn with_admin(config: Config) -> Config {
    Config {
        admin: Some("127.0.0.1:0".parse().unwrap()),
        ..config
    }
}

/// A server with an admin listener, and that listener's address.
async fn start(config: Config) -> (TestServer, SocketAddr) {
    let server = Server::bind("127.0.0.1:0", with_admin(config))
        .await
        .unwrap();
    let admin = server.admin_addr().expect("an admin listener");
    (TestServer::running(server), admin)
}

/// A response: status code, head, body.
struct Response {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as it is, reads the whole response until the server
/// closes.
async fn request(admin: SocketAddr, request: &[u8]) -> Response {
    let mut stream = timeout(T, TcpStream::connect(admin))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.write_all(request).await.unwrap();
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    timeout(T, stream.read_to_end(&mut raw))
        .await
        .expect("the server closes in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("text");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn get(admin: SocketAddr, path: &str) -> Response {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    request(admin, req.as_bytes()).await
}

/// The value of `series` (its name and labels, exactly as printed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Scrapes until `series` reads `want` (counts are made on other threads
/// than the one that answers a client), for up to `T`.
async fn wait_for(admin: SocketAddr, series: &str, want: f64) {
    let end = Instant::now() + T;
    loop {
        let scraped = get(admin, "/metrics").await;
        assert_eq!(scraped.status, 200);
        let got = value(&scraped.body, series);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < end,
            "{series} is {got:?}, not {want}:\n{}",
            scraped.body
        );
        sleep(Duration::from_millis(10)).await;
    }
}

async fn scrape(admin: SocketAddr, series: &str) -> f64 {
    let scraped = get(admin, "/metrics").await;
    value(&scraped.body, series).unwrap_or_else(|| panic!("no {series} in\n{}", scraped.body))
}

const OPEN: &str = "chat_clients{transport=\"tcp\",state=\"open\"}";
const HANDSHAKE: &str = "chat_clients{transport=\"tcp\",state=\"handshake\"}";

#[tokio::test]
async fn clients_messages_deliveries_and_rooms_are_counted() {
    let (server, admin) = start(config()).await;
    let scraped = get(admin, "/metrics").await;
    assert!(
        scraped
            .head
            .contains("Content-Type: text/plain; version=0.0.4"),
        "{}",
        scraped.head
    );
    assert_eq!(value(&scraped.body, OPEN), Some(0.0));
    assert_eq!(value(&scraped.body, "chat_rooms"), Some(1.0), "the lobby");

    let mut a = join(server.addr).await;
    let mut b = join(server.addr).await;
    wait_for(admin, OPEN, 2.0).await;
    assert_eq!(scrape(admin, HANDSHAKE).await, 0.0);
    for i in 0..3 {
        a.say(&format!("m{i}")).await;
    }
    for i in 0..3 {
        b.expect_relay(a.addr, &format!("m{i}")).await;
    }
    wait_for(admin, "chat_messages_received_total", 3.0).await;
    wait_for(admin, "chat_deliveries_total", 3.0).await;
    // Stored first (history is on): each batch's append was timed.
    assert!(scrape(admin, "chat_history_append_seconds_count").await >= 1.0);

    // A rooms client is in the handshake state until it is named.
    let mut c = connect_with(server.addr, rooms()).await;
    c.hello().await;
    c.welcomed().await;
    wait_for(admin, HANDSHAKE, 1.0).await;
    c.nick("carol").await;
    c.expect_named().await;
    wait_for(admin, OPEN, 3.0).await;
    assert_eq!(scrape(admin, HANDSHAKE).await, 0.0);
    // One more message reaches two.
    a.say("to both").await;
    b.expect_relay(a.addr, "to both").await;
    wait_for(admin, "chat_deliveries_total", 5.0).await;
    // A room made, then gone with its last member.
    let (mut d, _) = named(server.addr, "dave").await;
    d.enter("den").await;
    wait_for(admin, "chat_rooms", 2.0).await;
    d.leave("den").await;
    wait_for(admin, "chat_rooms", 1.0).await;

    // A connection that never says Hello: handshaking, then a failure
    // once it hangs up.
    let silent = connect(server.addr).await;
    wait_for(admin, HANDSHAKE, 1.0).await;
    drop(silent);
    wait_for(
        admin,
        "chat_handshake_failures_total{reason=\"closed\"}",
        1.0,
    )
    .await;
    wait_for(admin, HANDSHAKE, 0.0).await;
    // Leaving clients are no longer counted; nothing was a failure.
    drop((a, b, c, d));
    wait_for(admin, OPEN, 0.0).await;
    let text = get(admin, "/metrics").await.body;
    for reason in ["slow_consumer", "flood", "idle", "frame_timeout"] {
        let series = format!("chat_evictions_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&text, &series), Some(0.0), "{series}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_is_counted_as_evicted() {
    const MAX: usize = 5_000;
    let (server, admin) = start(Config {
        outbox_depth: 64,
        rate: 0,
        ..config()
    })
    .await;
    let mut sender = join(server.addr).await;
    // Says Hello, then never reads, with a tiny receive buffer.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = timeout(T, socket.connect(server.addr))
        .await
        .unwrap()
        .unwrap();
    let mut slow = Client::over(stream);
    slow.send(Message::hello()).await;
    slow.welcomed().await;
    wait_for(admin, OPEN, 2.0).await;

    let series = "chat_evictions_total{reason=\"slow_consumer\"}";
    let pad = "慢".repeat(1000);
    let mut sent = 0;
    while sent < MAX {
        sender
            .feed(Message::Send {
                text: format!("{sent} {pad}"),
            })
            .await;
        sent += 1;
        if sent % 64 == 0 {
            sender.flush().await;
            if scrape(admin, series).await == 1.0 {
                break;
            }
        }
    }
    assert!(sent < MAX, "not evicted after {MAX} messages");
    // The evicted client's outbox was drained while it kept up: the mark
    // is above zero and within the limit.
    let high = scrape(admin, "chat_outbox_high_water_bytes").await;
    assert!(high > 0.0 && high <= 8.0 * 1024.0 * 1024.0, "{high}");
    drop(slow);
    wait_for(admin, OPEN, 1.0).await;
    let text = get(admin, "/metrics").await.body;
    assert_eq!(
        value(
            &text,
            "chat_handshake_failures_total{reason=\"slow_consumer\"}"
        ),
        None,
        "an open client's eviction is not a failed handshake"
    );
    drop(sender);
    server.stop().await;
}

#[tokio::test]
async fn floods_idlers_bad_frames_and_failed_handshakes_are_counted() {
    let (server, admin) = start(Config {
        rate: 10,
        burst: 10,
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(400),
        ..config()
    })
    .await;

    // A flood: more than the burst at once.
    let mut flooder = join(server.addr).await;
    for i in 0..30 {
        flooder
            .feed(Message::Send {
                text: format!("{i}"),
            })
            .await;
    }
    flooder.flush().await;
    flooder.expect_error("flood: more than 10 messages/s").await;
    wait_for(admin, "chat_evictions_total{reason=\"flood\"}", 1.0).await;

    // An idler that does not answer the server's Ping.
    let mut idler = join(server.addr).await;
    assert!(matches!(idler.recv_raw().await, Message::Ping { .. }));
    wait_for(admin, "chat_evictions_total{reason=\"idle\"}", 1.0).await;
    drop(idler);

    // An oversized length prefix after the handshake: a bad frame, not a
    // handshake failure.
    let mut big = join(server.addr).await;
    big.write_raw(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    assert!(matches!(big.recv_raw().await, Message::Error { .. }));
    wait_for(admin, "chat_bad_frames_total{kind=\"too_large\"}", 1.0).await;

    // An HTTP request on the chat port: a bad frame and a failed handshake.
    let mut http = connect(server.addr).await;
    http.write_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    http.expect_error("this is a chat server, not an HTTP server")
        .await;
    wait_for(admin, "chat_bad_frames_total{kind=\"http\"}", 1.0).await;
    wait_for(
        admin,
        "chat_handshake_failures_total{reason=\"bad_frame\"}",
        1.0,
    )
    .await;

    // Silence: no Hello; then a rooms client that never names itself.
    let mut silent = connect(server.addr).await;
    silent.expect_error("handshake timeout").await;
    let mut nameless = connect_with(server.addr, rooms()).await;
    nameless.hello().await;
    nameless.welcomed().await;
    nameless.expect_error("handshake timeout").await;
    wait_for(
        admin,
        "chat_handshake_failures_total{reason=\"timeout\"}",
        2.0,
    )
    .await;

    let text = get(admin, "/metrics").await.body;
    assert_eq!(
        value(&text, "chat_evictions_total{reason=\"slow_consumer\"}"),
        Some(0.0)
    );
    drop((flooder, big, http, silent, nameless));
    wait_for(admin, OPEN, 0.0).await;
    wait_for(admin, HANDSHAKE, 0.0).await;
    server.stop().await;
}

#[tokio::test]
async fn health_is_ok_while_serving_and_503_while_shutting_down() {
    let (mut server, admin) = start(config()).await;
    let health = get(admin, "/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    // A client that does not close its end keeps the server in its
    // goodbye (up to the grace period) after the signal.
    let mut lingering = join(server.addr).await;
    server.signal();
    let end = Instant::now() + T;
    loop {
        let health = get(admin, "/health").await;
        if health.status == 503 {
            assert_eq!(health.body, "shutting down\n");
            break;
        }
        assert_eq!(health.status, 200);
        assert!(Instant::now() < end, "/health never said 503");
        sleep(Duration::from_millis(10)).await;
    }
    lingering.expect_exit().await;
    drop(lingering);
    server.stop().await;
    // Stopped with the server.
    assert!(TcpStream::connect(admin).await.is_err(), "admin still open");
}

#[tokio::test]
async fn other_paths_methods_and_bad_requests_are_refused() {
    let (server, admin) = start(config()).await;
    let nope = get(admin, "/nope").await;
    assert_eq!((nope.status, nope.body.as_str()), (404, "not found\n"));
    let post = request(
        admin,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(post.status, 405);
    assert!(post.head.contains("Allow: GET, HEAD"), "{}", post.head);
    let head = request(admin, b"HEAD /health HTTP/1.1\r\n\r\n").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert!(head.head.contains("Content-Length: 3"), "{}", head.head);
    let query = get(admin, "/health?verbose=1").await;
    assert_eq!(query.status, 200);
    assert_eq!(request(admin, b"nonsense\r\n\r\n").await.status, 400);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_is_cut_off() {
    let (server, admin) = start(config()).await;
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while req.len() < 9 * 1024 {
        req.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    // Written without its blank line: the server must not wait for it.
    let _ = stream.write_all(&req).await;
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 431);
    server.stop().await;
}

/// A slow request is cut off after 5 s; meanwhile at most 16 admin
/// connections are served, and the next one is answered once a slot frees.
#[tokio::test]
async fn slow_requests_are_cut_off_and_admin_connections_are_bounded() {
    let (server, admin) = start(config()).await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // The 17th waits for a slot, however complete its request.
    let waiting = tokio::spawn(async move {
        let response = get(admin, "/health").await;
        (response.status, Instant::now())
    });
    for stream in &mut slow {
        let response = read_response(stream).await;
        assert_eq!(response.status, 408);
    }
    let cut = started.elapsed();
    assert!(
        cut >= Duration::from_millis(4500),
        "cut off after {cut:?}, before the 5 s allowed"
    );
    let (status, answered) = timeout(T, waiting).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert!(
        answered.duration_since(started) >= Duration::from_millis(4500),
        "the 17th connection was served while 16 were held"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_admin_listener_is_off_by_default_and_bind_errors_name_it() {
    let server = Server::bind("127.0.0.1:0", config()).await.unwrap();
    assert_eq!(server.admin_addr(), None);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    let err = Server::bind(
        "127.0.0.1:0",
        Config {
            admin: Some(at),
            ..config()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, chat_server::Error::Admin { addr, .. } if *addr == at),
        "{err}"
    );
    assert!(err.to_string().contains("admin listener"), "{err}");
}

/// A client named by a login is open like one named by its `Nick`, leaves
/// without counting as a failed handshake, and a refused login is counted
/// by its reason.
#[tokio::test]
async fn logins_are_counted() {
    use chat_proto::{ClientConfig, Refusal, features};

    let (server, admin) = start(config()).await;
    let mut auth = ClientConfig::default();
    auth.features = features::ROOMS | features::AUTH;
    let mut c = connect_with(server.addr, auth).await;
    c.hello().await;
    c.welcomed().await;
    c.send(Message::Login {
        name: "nobody".into(),
        password: "a wrong password".into(),
    })
    .await;
    c.expect_refused(Refusal::AuthFailed, "nobody").await;
    wait_for(admin, "chat_auth_failures_total{reason=\"failed\"}", 1.0).await;
    assert_eq!(scrape(admin, HANDSHAKE).await, 1.0, "still unnamed");
    c.send(Message::Register {
        name: "alice".into(),
        password: "correct horse battery".into(),
    })
    .await;
    assert!(matches!(c.recv().await, Message::LoggedIn { .. }));
    c.expect_named().await;
    wait_for(admin, OPEN, 1.0).await;
    assert_eq!(scrape(admin, HANDSHAKE).await, 0.0);
    // It hangs up: the end of an open session, not a failed handshake.
    drop(c);
    wait_for(admin, OPEN, 0.0).await;
    let body = get(admin, "/metrics").await.body;
    let failures: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("chat_handshake_failures_total{"))
        .collect();
    assert!(!failures.is_empty(), "{body}");
    assert!(failures.iter().all(|l| l.ends_with(" 0")), "{failures:?}");
    server.stop().await;
}
