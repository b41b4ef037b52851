//! The `chat-server` binary: the stdout contract, signals, bind failures.

mod common;

use std::process::Stdio;

use chat_proto::Message;
use common::{T, join, listening_on};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// The binary, run in a directory of its own: its history (`chat-data`,
/// the default) is that run's alone.
fn server(args: &[&str]) -> Child {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a temporary directory")
        .keep();
    Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-server")
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
}

async fn read_all(mut r: impl AsyncReadExt + Unpin) -> String {
    let mut s = String::new();
    timeout(T, r.read_to_string(&mut s))
        .await
        .expect("output in time")
        .expect("read output");
    s
}

/// `--admin`: a second stdout line names the admin listener, which serves
/// `/health` and `/metrics` until the server stops.
#[tokio::test]
async fn admin_flag_serves_health_and_metrics() {
    let mut child = server(&["--bind", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        timeout(T, stdout.read_line(&mut line))
            .await
            .expect("a line in time")
            .unwrap();
        lines.push(line);
    }
    assert!(lines[0].starts_with("listening on "), "{lines:?}");
    let admin: std::net::SocketAddr = lines[1]
        .strip_prefix("admin on ")
        .and_then(|a| a.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("unexpected second line {:?}", lines[1]))
        .parse()
        .unwrap();
    let get = |path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes())
            .await
            .unwrap();
        read_all(stream).await
    };
    let health = get("/health").await;
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
    let metrics = get("/metrics").await;
    assert!(metrics.contains("\nchat_rooms 1\n"), "{metrics}");
    signal(&child, "TERM");
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(read_all(stdout).await, "", "two lines on stdout");
    let logs = read_all(child.stderr.take().unwrap()).await;
    assert!(logs.contains("admin listening"), "{logs}");
}

#[tokio::test]
async fn prints_address_relays_and_stops_on_sigterm() {
    let mut child = server(&["--bind", "127.0.0.1:0", "-v"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    timeout(T, stdout.read_line(&mut line))
        .await
        .expect("listening line in time")
        .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let mut a = join(addr).await;
    let mut b = join(addr).await;
    assert!(matches!(a.recv().await, Message::Joined { .. }));
    a.say("via the binary 二进制").await;
    b.expect_relay(a.addr, "via the binary 二进制").await;

    signal(&child, "TERM");
    a.expect_exit().await;
    b.expect_exit().await;
    drop((a, b));
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(read_all(stdout).await, "", "exactly one line on stdout");
    let logs = read_all(child.stderr.take().unwrap()).await;
    assert!(logs.contains("client connected"), "{logs}");
    // It said it serves only this machine, and how to open it.
    assert!(
        logs.contains("protected mode") && logs.contains("--public"),
        "{logs}"
    );
}

#[tokio::test]
async fn sigint_stops_it_too() {
    let mut child = server(&["--bind", "127.0.0.1:0"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    timeout(T, stdout.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert!(line.starts_with("listening on 127.0.0.1:"), "{line:?}");
    signal(&child, "INT");
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn bind_failure_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = server(&["--bind", &addr]);
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(!status.success());
    assert_eq!(read_all(child.stdout.take().unwrap()).await, "");
    let err = read_all(child.stderr.take().unwrap()).await;
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("cannot bind") && err.contains(&addr),
        "{err:?}"
    );
    assert!(!err.contains("backtrace"), "{err:?}");
}

#[tokio::test]
async fn invalid_limit_is_refused() {
    let mut child = server(&["--bind", "127.0.0.1:0", "--outbox", "0"]);
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(!status.success());
    let err = read_all(child.stderr.take().unwrap()).await;
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("--outbox:"), "{err:?}");
    assert!(!err.contains("outbox_depth"), "{err:?}");
}

/// `--outbox-bytes` equal to `--max-frame` used to be accepted, and one
/// maximal relay evicted a client that was reading normally. The refusal
/// names the flags and gives the minimum.
#[tokio::test]
async fn a_bad_combination_names_the_flags() {
    let mut child = server(&[
        "--bind",
        "127.0.0.1:0",
        "--max-frame",
        "65536",
        "--outbox-bytes",
        "65536",
    ]);
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(!status.success());
    assert_eq!(read_all(child.stdout.take().unwrap()).await, "");
    let err = read_all(child.stderr.take().unwrap()).await;
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("--outbox-bytes: 65536 is less than the minimum, 148080"),
        "{err:?}"
    );
    assert!(
        err.contains("--max-frame") && err.contains("--relay-batch"),
        "{err:?}"
    );
    assert!(
        !err.contains("outbox_bytes") && !err.contains("max_frame_len"),
        "{err:?}"
    );
}

/// A duration that would overflow the clock is refused up front (it used
/// to panic in every session).
#[tokio::test]
async fn an_endless_timeout_is_refused() {
    let mut child = server(&["--bind", "127.0.0.1:0", "--idle-timeout", "1000000d"]);
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(!status.success());
    let err = read_all(child.stderr.take().unwrap()).await;
    assert!(
        err.contains("--idle-timeout") && err.contains("365 days"),
        "{err:?}"
    );
}

/// Every limit of names, rooms and direct messages that the library refuses
/// is reported in one line that names the flag (not the `Config` field).
#[tokio::test]
async fn bad_room_limits_name_their_flags() {
    let cases: [(&[&str], &str); 8] = [
        (
            &["--max-rooms", "0"],
            "--max-rooms: 0 is less than the minimum, 1",
        ),
        (
            &["--room-members", "0"],
            "--room-members: 0 is less than the minimum, 1",
        ),
        (
            &["--max-name-chars", "0"],
            "--max-name-chars: 0 is less than the minimum, 1",
        ),
        (
            &["--max-name-chars", "33"],
            "--max-name-chars: 33 is more than the maximum, 32",
        ),
        (
            &["--max-room-chars", "4"],
            "--max-room-chars: 4 is less than the minimum, 5",
        ),
        (
            &["--max-room-chars", "33"],
            "--max-room-chars: 33 is more than the maximum, 32",
        ),
        (
            &["--tell-rate", "5", "--tell-burst", "0"],
            "--tell-burst: must be at least 1 unless --tell-rate is 0",
        ),
        // A ROOMS client is sent frames of up to --max-frame + 280, which
        // must stay within the protocol's ceiling of 16 MiB.
        (
            &["--max-frame", "16MiB", "--outbox-bytes", "64MiB"],
            "--max-frame: 16777216 is more than the maximum, 16776916",
        ),
    ];
    let runs = cases.iter().map(|(flags, expected)| async move {
        let mut args = vec!["--bind", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let mut child = server(&args);
        let status = timeout(T, child.wait()).await.unwrap().unwrap();
        assert!(!status.success(), "{flags:?} accepted");
        assert_eq!(read_all(child.stdout.take().unwrap()).await, "");
        let err = read_all(child.stderr.take().unwrap()).await;
        assert_eq!(
            err,
            format!("chat-server: invalid {expected}\n"),
            "for {flags:?}"
        );
    });
    futures::future::join_all(runs).await;
    // Not a number at all: clap names the flag.
    let mut child = server(&["--bind", "127.0.0.1:0", "--tell-rate", "many"]);
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(!status.success());
    let err = read_all(child.stderr.take().unwrap()).await;
    assert!(err.contains("--tell-rate"), "{err:?}");
}

/// The edges the flags allow start a server: one room per client, names
/// of one character, no limit on direct messages.
#[tokio::test]
async fn the_smallest_room_limits_are_accepted() {
    let mut child = server(&[
        "--bind",
        "127.0.0.1:0",
        "--max-rooms",
        "1",
        "--room-members",
        "1",
        "--max-name-chars",
        "1",
        "--max-room-chars",
        "5",
        "--tell-rate",
        "0",
        "--tell-burst",
        "0",
    ]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    timeout(T, stdout.read_line(&mut line))
        .await
        .expect("listening line in time")
        .unwrap();
    assert!(line.starts_with("listening on 127.0.0.1:"), "{line:?}");
    signal(&child, "TERM");
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn help_lists_every_flag_and_the_load_test_setting() {
    let mut child = server(&["--help"]);
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let help = read_all(child.stdout.take().unwrap()).await;
    for flag in [
        "--bind",
        "--max-clients",
        "--reject-slots",
        "--backlog",
        "--max-frame",
        "--outbox ",
        "--outbox-bytes",
        "--relay-batch",
        "--handshake-timeout",
        "--idle-timeout",
        "--frame-timeout",
        "--rate",
        "--burst",
        "--shutdown-grace",
        "--close-timeout",
        "--no-presence",
        "--presence-delay",
        "--presence-batch",
        "--read-chunk",
        "--max-iov",
        "--flush-rounds",
        "--threads",
        "--verbose",
        "--max-rooms",
        "--room-members",
        "--max-name-chars",
        "--max-room-chars",
        "--tell-rate",
        "--tell-burst",
        "--config",
        "--public",
        "--max-per-ip",
        "--handshake-frame",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("--rate 0"), "{help}");
}

/// `text` as a config file of its own.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}

/// A config file sets the flags, the command line overrides it: the cap
/// per IP is the command line's 2, not the file's 1; the address and the
/// rest are the file's.
#[tokio::test]
async fn a_config_file_sets_flags_and_the_command_line_overrides_it() {
    let (_dir, path) = config_file(
        "# a test\nbind = \"127.0.0.1:0\"\nmax_per_ip = 1\nno-history = true\n\
         rate = 0\nhandshake-timeout = \"5s\"\npublic = true\n",
    );
    let mut child = server(&["--config", &path, "--max-per-ip", "2"]);
    let addr = listening_on(&mut child).await;
    assert!(addr.ip().is_loopback());
    let a = join(addr).await;
    let b = join(addr).await;
    let mut c = common::connect(addr).await;
    c.hello().await;
    c.expect_error("too many connections from 127.0.0.1").await;
    drop((a, b, c));
    signal(&child, "TERM");
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let logs = read_all(child.stderr.take().unwrap()).await;
    assert!(logs.contains("public"), "{logs}");
    assert!(!logs.contains("protected mode"), "{logs}");
}

/// The example shipped with the crate starts the binary (its address and
/// history overridden so that the test stays on loopback, in memory).
#[tokio::test]
async fn the_example_config_starts_the_binary() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/chat.example.toml");
    let mut child = server(&["--config", example, "--bind", "127.0.0.1:0", "--ephemeral"]);
    let addr = listening_on(&mut child).await;
    drop(join(addr).await);
    signal(&child, "TERM");
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Every error in a config file is one line naming the file, the line and
/// the key, whether the file is malformed or a value is refused by the
/// library.
#[tokio::test]
async fn config_file_errors_name_the_file_the_line_and_the_key() {
    let cases = [
        (
            "bind = \"127.0.0.1:0\"\n\nrate = \"x\"\n",
            "3: rate: expected an integer, found a string",
        ),
        (
            "bind = \"127.0.0.1:0\"\ncolour = 1\n",
            "2: colour: unknown key",
        ),
        (
            "bind = \"127.0.0.1:0\"\nmax-name-chars = 33\n",
            "2: max-name-chars: 33 is more than the maximum, 32",
        ),
        (
            "bind = \"127.0.0.1:0\"\nhandshake_frame = 100\n",
            "2: handshake_frame: 100 is less than the minimum, 512",
        ),
        ("rate = \n", "1: rate: "),
    ];
    for (text, expected) in cases {
        let (_dir, path) = config_file(text);
        let mut child = server(&["--config", &path, "--no-history"]);
        let status = timeout(T, child.wait()).await.unwrap().unwrap();
        assert!(!status.success(), "{text:?} accepted");
        assert_eq!(read_all(child.stdout.take().unwrap()).await, "");
        let err = read_all(child.stderr.take().unwrap()).await;
        assert_eq!(err.lines().count(), 1, "{err:?}");
        let expected = format!("chat-server: {path}:{expected}");
        assert!(err.starts_with(&expected), "{err:?} is not {expected:?}");
    }
    let mut child = server(&["--config", "/nonexistent/chat.toml"]);
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(!status.success());
    let err = read_all(child.stderr.take().unwrap()).await;
    assert!(
        err.starts_with("chat-server: /nonexistent/chat.toml: cannot read"),
        "{err:?}"
    );
}
