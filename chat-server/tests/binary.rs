//! The `chat-server` binary: the stdout contract, signals, bind failures.

mod common;

use std::process::Stdio;

use chat_proto::Message;
use common::{T, join};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

fn server(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chat-server"))
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
        err.contains("--outbox-bytes: 65536 is less than the minimum, 147524"),
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
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("--rate 0"), "{help}");
}
