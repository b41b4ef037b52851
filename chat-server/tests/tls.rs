//! TLS over loopback, with a CA made here by rcgen: a conversation over
//! TLS, each way a certificate can be refused, and both mix-ups (plaintext
//! to the TLS port, TLS to the plaintext port), each failing fast with a
//! clear error on both sides: the client library's error, and the server's
//! log (captured here) or the `Error` frame it sends.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_client::{Client, Error, Event, Fingerprint, Options, TlsFailure, TlsOptions};
use chat_proto::{ClientConfig, Connection};
use chat_server::{Config, Server, Tls};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, timeout};

/// Upper bound on any wait; only reached when something is broken.
const T: Duration = Duration::from_secs(10);
/// What "fast" means for a failure: well under the handshake timeout.
const FAST: Duration = Duration::from_secs(3);

/// A certificate authority made for the test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for `names`, valid from `from` to `until`
    /// (years), and its key, both PEM.
    fn issue(&self, names: &[&str], from: i32, until: i32) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A certificate valid now for this host.
    fn good(&self) -> Tls {
        let (cert, key) = self.issue(&["localhost", "127.0.0.1"], 2020, 4000);
        Tls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
    }

    fn trust(&self) -> TlsOptions {
        TlsOptions::ca_pem(self.cert.pem().as_bytes()).unwrap()
    }
}

/// The server's log, captured: each test runs on one thread, and so does
/// its server.
#[derive(Clone, Default)]
struct Logs {
    text: Arc<Mutex<String>>,
    written: Arc<Notify>,
}

struct LogWriter(Logs);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .text
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(buf));
        self.0.written.notify_waiters();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Waits until the log has a line containing `what`; returns it.
    async fn line(&self, what: &str) -> String {
        let deadline = Instant::now() + T;
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            if let Some(line) = self.text.lock().unwrap().lines().find(|l| l.contains(what)) {
                return line.to_owned();
            }
            if tokio::time::timeout_at(deadline, written).await.is_err() {
                panic!(
                    "no log line with {what:?}; the log:\n{}",
                    self.text.lock().unwrap()
                );
            }
        }
    }
}

/// A server with a plaintext and a TLS listener, until dropped.
struct TestServer {
    plain: SocketAddr,
    tls: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn server(tls: Tls, config: Config) -> TestServer {
    let server = Server::bind("127.0.0.1:0", config)
        .await
        .unwrap()
        .tls("127.0.0.1:0", tls)
        .await
        .unwrap();
    let (plain, tls) = (server.local_addr(), server.tls_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    TestServer {
        plain,
        tls,
        _stop: stop,
    }
}

/// Limits that keep a failed handshake from being ended by a timeout: a
/// failure must be quick on its own.
fn config() -> Config {
    Config {
        handshake_timeout: Duration::from_secs(60),
        // One client at a time: the next one gets in only once the server
        // has let go of the last.
        max_clients: 1,
        reject_slots: 0,
        ..Config::default()
    }
}

fn options(name: &str, tls: Option<TlsOptions>) -> Options {
    let mut options = Options::default();
    options.name = Some(name.into());
    options.tls = tls;
    options
}

/// Connects and returns the error, checking it came fast.
async fn refused(addr: SocketAddr, options: Options) -> Error {
    let started = Instant::now();
    let result = timeout(T, Client::connect_with(addr, options))
        .await
        .expect("the connection ends within the bound");
    let Err(err) = result else {
        panic!("connected, but should have been refused");
    };
    assert!(
        started.elapsed() < FAST,
        "{err} after {:?}",
        started.elapsed()
    );
    err
}

/// A client over TLS gets in and leaves: the server has let go of any
/// connection before (it serves one at a time).
async fn gets_in(addr: SocketAddr, tls: TlsOptions) {
    let client = timeout(T, Client::connect_with(addr, options("ok", Some(tls))))
        .await
        .unwrap()
        .unwrap();
    timeout(T, client.exit()).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_conversation_over_tls() {
    let ca = Ca::new("test CA");
    let server = server(ca.good(), Config::default()).await;
    let alice = Client::connect_with(server.tls, options("alice", Some(ca.trust())))
        .await
        .unwrap();
    let bob = Client::connect_with(server.tls, options("bob", Some(ca.trust())))
        .await
        .unwrap();
    // And one over plaintext, in the same lobby.
    let carol = Client::connect_with(server.plain, options("carol", None))
        .await
        .unwrap();
    let (alice_tx, _alice_rx) = alice.split();
    let (_bob_tx, mut bob_rx) = bob.split();
    let (_carol_tx, mut carol_rx) = carol.split();
    let long = "长".repeat(20_000); // Several TLS records.
    alice_tx.say("lobby", "hello over TLS").await.unwrap();
    alice_tx.say("lobby", &long).await.unwrap();
    for events in [&mut bob_rx, &mut carol_rx] {
        let mut heard = Vec::new();
        while heard.len() < 2 {
            match timeout(T, events.next_event()).await.unwrap().unwrap() {
                Some(Event::Said { from, text, .. })
                | Some(Event::Posted {
                    entry: chat_client::Entry { from, text, .. },
                    ..
                }) if from.name == "alice" => heard.push(text),
                Some(_) => {}
                None => panic!("the session ended"),
            }
        }
        assert_eq!(heard, ["hello over TLS", long.as_str()]);
    }
    alice_tx.exit().await.unwrap();
}

#[tokio::test]
async fn a_fingerprint_is_trusted_without_a_ca() {
    let tls = Tls::self_signed(&[]).unwrap();
    let pin: Fingerprint = tls.fingerprint().parse().unwrap();
    let server = server(tls, config()).await;
    gets_in(server.tls, TlsOptions::fingerprint(pin)).await;

    // Another certificate's fingerprint is refused, naming the one found.
    let other: Fingerprint = Tls::self_signed(&[])
        .unwrap()
        .fingerprint()
        .parse()
        .unwrap();
    let err = refused(
        server.tls,
        options("x", Some(TlsOptions::fingerprint(other))),
    )
    .await;
    assert!(
        matches!(&err, Error::Tls { failure: TlsFailure::Fingerprint { got }, .. } if *got == pin),
        "{err}"
    );
    gets_in(server.tls, TlsOptions::fingerprint(pin)).await;
}

#[tokio::test]
async fn another_ca_is_refused() {
    let (logs, _guard) = Logs::capture();
    let ca = Ca::new("test CA");
    let server = server(ca.good(), config()).await;
    let err = refused(
        server.tls,
        options("x", Some(Ca::new("another CA").trust())),
    )
    .await;
    assert!(
        matches!(
            &err,
            Error::Tls {
                failure: TlsFailure::UnknownIssuer,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "TLS with {} failed: the server's certificate is not issued by a trusted CA",
            server.tls
        )
    );
    let line = logs.line("TLS handshake failed").await;
    assert!(line.contains("UnknownCA"), "{line}");
    gets_in(server.tls, ca.trust()).await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let (logs, _guard) = Logs::capture();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"], 2020, 2021);
    let tls = Tls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let server = server(tls, config()).await;
    let err = refused(server.tls, options("x", Some(ca.trust()))).await;
    assert!(
        matches!(
            &err,
            Error::Tls {
                failure: TlsFailure::Expired,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("the server's certificate has expired"),
        "{err}"
    );
    let line = logs.line("TLS handshake failed").await;
    assert!(line.contains("CertificateExpired"), "{line}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let (logs, _guard) = Logs::capture();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["chat.example"], 2020, 4000);
    let tls = Tls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let server = server(tls, config()).await;
    let err = refused(server.tls, options("x", Some(ca.trust()))).await;
    assert!(
        matches!(&err, Error::Tls { failure: TlsFailure::WrongName { name }, .. } if name == "127.0.0.1"),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("the server's certificate is not valid for 127.0.0.1"),
        "{err}"
    );
    let line = logs.line("TLS handshake failed").await;
    assert!(line.contains("BadCertificate"), "{line}");
    // The name it does have, given explicitly.
    gets_in(server.tls, ca.trust().server_name("chat.example")).await;
}

#[tokio::test]
async fn a_plaintext_client_on_the_tls_port_is_told() {
    let (logs, _guard) = Logs::capture();
    let ca = Ca::new("test CA");
    let server = server(ca.good(), config()).await;
    // The library: refused with the server's reason.
    let err = refused(server.tls, options("x", None)).await;
    assert!(
        matches!(&err, Error::Rejected { reason } if reason == "this port speaks TLS: connect with TLS"),
        "{err}"
    );
    logs.line("plaintext client on the TLS port").await;
    // Any chat client: the answer is a plaintext `Error` frame, then the end.
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.tls).await.unwrap();
    let mut conn = Connection::client(ClientConfig::default());
    stream.write_all(&conn.transmit().unwrap()).await.unwrap();
    let mut got = Vec::new();
    timeout(T, stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < FAST);
    conn.receive(&got);
    let reason = match conn.poll() {
        Ok(Some(chat_proto::Event::Error(reason))) => reason,
        other => panic!("expected an Error, got {other:?}"),
    };
    assert_eq!(reason, "this port speaks TLS: connect with TLS");
    gets_in(server.tls, ca.trust()).await;
}

#[tokio::test]
async fn a_tls_client_on_the_plaintext_port_is_told() {
    let (logs, _guard) = Logs::capture();
    let ca = Ca::new("test CA");
    let server = server(ca.good(), config()).await;
    let err = refused(server.plain, options("x", Some(ca.trust()))).await;
    assert!(matches!(&err, Error::NotTls { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "the server at {} does not speak TLS on this port",
            server.plain
        )
    );
    logs.line("this port speaks plaintext chat, not TLS").await;
    // Any TLS client: the start of a ClientHello gets a chat `Error`.
    let mut stream = TcpStream::connect(server.plain).await.unwrap();
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc0])
        .await
        .unwrap();
    let mut got = Vec::new();
    timeout(T, stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let mut conn = Connection::client(ClientConfig::default());
    let _hello = conn.transmit();
    conn.receive(&got);
    assert!(
        matches!(conn.poll(), Ok(Some(chat_proto::Event::Error(r))) if r == "this port speaks plaintext chat, not TLS"),
    );
    gets_in(server.tls, ca.trust()).await;
}

#[tokio::test]
async fn a_full_server_says_so_over_tls() {
    let ca = Ca::new("test CA");
    let config = Config {
        max_clients: 1,
        reject_slots: 1,
        ..Config::default()
    };
    let server = server(ca.good(), config).await;
    let first = Client::connect_with(server.tls, options("first", Some(ca.trust())))
        .await
        .unwrap();
    let err = refused(server.tls, options("second", Some(ca.trust()))).await;
    assert!(
        matches!(&err, Error::Rejected { reason } if reason == "server full"),
        "{err}"
    );
    first.exit().await.unwrap();
}

/// The binary with `--tls-self-signed`: three lines on stdout, the TLS
/// port serving clients that trust the fingerprint printed, the plaintext
/// port beside it, a clean stop on SIGTERM.
#[tokio::test]
async fn the_binary_serves_tls_with_a_self_signed_certificate() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .current_dir(dir.path())
        .args(["--bind", "127.0.0.1:0", "--ephemeral"])
        .args(["--tls-bind", "127.0.0.1:0", "--tls-self-signed"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut line = async || {
        timeout(T, stdout.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    let plain: SocketAddr = line()
        .await
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let tls: SocketAddr = line()
        .await
        .strip_prefix("tls listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let pin: Fingerprint = line()
        .await
        .strip_prefix("tls fingerprint ")
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(plain, tls);

    let client = Client::connect_with(tls, options("alice", Some(TlsOptions::fingerprint(pin))))
        .await
        .unwrap();
    assert_eq!(client.session().name.as_deref(), Some("alice"));
    let err = refused(tls, options("bob", None)).await;
    assert!(matches!(&err, Error::Rejected { .. }), "{err}");
    let err = refused(plain, options("bob", Some(TlsOptions::fingerprint(pin)))).await;
    assert!(matches!(&err, Error::NotTls { .. }), "{err}");
    client.exit().await.unwrap();

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

/// A certificate the binary cannot use stops it at once, naming the file.
#[tokio::test]
async fn the_binary_names_a_bad_certificate_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let key = dir.path().join("missing-key.pem");
    let out = timeout(
        T,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .current_dir(dir.path())
            .args([
                "--bind",
                "127.0.0.1:0",
                "--ephemeral",
                "--tls-bind",
                "127.0.0.1:0",
            ])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing bound, nothing printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing-key.pem"), "{stderr}");
    // With the key there, the certificate file is the one named.
    std::fs::write(&key, Ca::new("test CA").issue(&["localhost"], 2020, 4000).1).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .current_dir(dir.path())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--ephemeral",
            "--tls-bind",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cert.pem: no CERTIFICATE in it"),
        "{stderr}"
    );
}

/// A server shutting down says goodbye over TLS too: the client gets its
/// `Exit`, then a clean end (the server's `close_notify`).
#[tokio::test]
async fn shutdown_reaches_tls_clients() {
    let ca = Ca::new("test CA");
    let server = server(ca.good(), Config::default()).await;
    let alice = Client::connect_with(server.tls, options("alice", Some(ca.trust())))
        .await
        .unwrap();
    let (_tx, mut events) = alice.split();
    drop(server);
    loop {
        match timeout(T, events.next_event()).await.unwrap() {
            Ok(Some(Event::ServerExit)) => break,
            Ok(Some(_)) => {}
            other => panic!("expected the server's Exit, got {other:?}"),
        }
    }
    assert!(matches!(
        timeout(T, events.next_event()).await.unwrap(),
        Ok(None)
    ));
}

/// A TLS client that stops reading is evicted as a slow consumer, as a
/// plaintext one is: what the socket does not take waits, bounded, and
/// the outbox behind it fills.
#[tokio::test]
async fn a_tls_client_that_stops_reading_is_evicted() {
    let (logs, _guard) = Logs::capture();
    let tls = Tls::self_signed(&[]).unwrap();
    let pin: Fingerprint = tls.fingerprint().parse().unwrap();
    let config = Config {
        outbox_bytes: 256 * 1024,
        rate: 0,
        presence: false,
        ..Config::default()
    };
    let server = server(tls, config).await;
    // A version 1 client over TLS that says Hello and never reads.
    let tcp = TcpStream::connect(server.tls).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(TlsOptions::fingerprint(pin).rustls_config());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stalled = connector.connect(name, tcp).await.unwrap();
    let mut conn = Connection::client(ClientConfig::default());
    stalled.write_all(&conn.transmit().unwrap()).await.unwrap();
    stalled.flush().await.unwrap();
    logs.line("client connected").await;

    let mut sender = Options::default();
    sender.rooms = false;
    let sender = Client::connect_with(server.plain, sender).await.unwrap();
    let text = "x".repeat(60_000);
    let mut sent = 0;
    while !logs.text.lock().unwrap().contains("slow consumer evicted") {
        assert!(sent < 1000, "not evicted after {sent} messages of 60 kB");
        timeout(T, sender.send(text.as_str()))
            .await
            .unwrap()
            .unwrap();
        sent += 1;
    }
    drop(stalled);
}
