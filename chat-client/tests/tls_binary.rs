//! The `chat-client` program over TLS (`--tls` with `--fingerprint` or
//! `--ca`), in a pipe, against the real server run in this process; and the
//! one clear line it prints for each way TLS can fail.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chat_server::{Config, Server, Tls};

const CLIENT: &str = env!("CARGO_BIN_EXE_chat-client");
/// Upper bound on a client's run; only reached when something is broken.
const T: Duration = Duration::from_secs(10);

/// A server with a plaintext and a TLS port, on a runtime of its own.
fn server(tls: Tls) -> (tokio::runtime::Runtime, SocketAddr, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(async {
        Server::bind("127.0.0.1:0", Config::default())
            .await
            .unwrap()
            .tls("127.0.0.1:0", tls)
            .await
            .unwrap()
    });
    let (plain, tls) = (server.local_addr(), server.tls_addr().unwrap());
    runtime.spawn(server.run(std::future::pending()));
    (runtime, plain, tls)
}

/// Runs the client with `args`, typing `input`; bounded by [`T`].
fn client(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(CLIENT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    wait.recv_timeout(T)
        .expect("the client ends in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_conversation_over_tls_and_each_failure_in_one_line() {
    let tls = Tls::self_signed(&[]).unwrap();
    let pin = tls.fingerprint().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("server.pem");
    std::fs::write(&ca, tls.certificate_pem().unwrap()).unwrap();
    let ca = ca.to_str().unwrap();
    let (_runtime, plain, tls_addr) = server(tls);
    let (plain, tls_addr) = (plain.to_string(), tls_addr.to_string());

    // Trusting the fingerprint, and the certificate itself as the CA.
    for trust in [["--fingerprint", pin.as_str()], ["--ca", ca]] {
        let out = client(
            &[&tls_addr, "--name", "alice", "--tls", trust[0], trust[1]],
            "hello over TLS\nexit;\n",
        );
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(
            stdout.contains(&format!("* connected to {tls_addr} as alice")),
            "{stdout}"
        );
        assert!(stdout.contains("#lobby <alice> hello over TLS"), "{stdout}");
        assert!(stdout.contains("* left the chat"), "{stdout}");
    }

    // Each failure: status 1, one line on stderr saying what is wrong.
    let other = Tls::self_signed(&[]).unwrap().fingerprint().to_owned();
    let cases = [
        (
            vec![tls_addr.as_str(), "--tls", "--fingerprint", other.as_str()],
            "not the one trusted".to_owned(),
        ),
        (
            vec![tls_addr.as_str(), "--no-reconnect"],
            "the server rejected the connection: this port speaks TLS: connect with TLS".to_owned(),
        ),
        (
            vec![plain.as_str(), "--tls", "--fingerprint", pin.as_str()],
            format!("the server at {plain} does not speak TLS on this port"),
        ),
    ];
    for (args, want) in cases {
        let out = client(&args, "");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(&want), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }

    // A CA file that is not one is refused before connecting.
    let out = client(&[&tls_addr, "--tls", "--ca", "/nonexistent.pem"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot use CA file /nonexistent.pem"),
        "{}",
        text(&out.stderr)
    );
}
