//! End to end with the real programs: a `chat-server` process and
//! `chat-client` processes driven through their standard input, as a person
//! in a terminal (or a script in a pipe) would.
//!
//! Every wait is for a line of output, bounded by a timeout; nothing sleeps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound on any single wait; only reached when something is broken.
const T: Duration = Duration::from_secs(10);

const CLIENT: &str = env!("CARGO_BIN_EXE_chat-client");

/// The `chat-server` binary, built once per test run.
///
/// It belongs to another package, so cargo does not hand us its path:
/// ask cargo to build it (a no-op when it is up to date) and read the path
/// from its JSON messages. Cargo releases its build lock before running
/// tests, so this nested call does not wait on the outer `cargo test`.
fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // A second attempt, because a nested cargo can trip over the outer
        // one's transient state; a real build failure fails both, and its
        // messages are shown.
        let mut why = String::new();
        for _ in 0..2 {
            match build_server() {
                Ok(path) => return path,
                Err(e) => why.push_str(&e),
            }
        }
        panic!("building chat-server failed:\n{why}");
    })
}

fn build_server() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "chat-server",
            "--bin",
            "chat-server",
        ])
        .args(["--message-format=json", "--manifest-path"])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}\n"))?;
    let messages: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    if !out.status.success() {
        let rendered: String = messages
            .iter()
            .filter_map(|msg| msg["message"]["rendered"].as_str())
            .collect();
        return Err(format!(
            "cargo exited with {}\n{}{rendered}\n",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    messages
        .iter()
        .filter(|msg| {
            msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "chat-server"
        })
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo reported no chat-server executable\n".to_owned())
}

/// A child process that is killed if the test fails before it ends.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    name: String,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdin = child.stdin.take();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Proc {
            child,
            stdin,
            stdout,
            stderr,
            name: name.to_owned(),
        }
    }

    fn server(extra: &[&str]) -> (Proc, SocketAddr) {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--bind", "127.0.0.1:0"]).args(extra);
        let mut server = Proc::spawn("server", cmd);
        let line = server.line();
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .parse()
            .unwrap();
        (server, addr)
    }

    /// Starts a client and reads its greeting; returns it and its address.
    fn client(name: &str, server: SocketAddr) -> (Proc, SocketAddr) {
        let mut cmd = Command::new(CLIENT);
        cmd.args(["--server", &server.to_string()]);
        let mut client = Proc::spawn(name, cmd);
        let line = client.line();
        let me = line
            .strip_prefix(&format!("connected to {server} as "))
            .unwrap_or_else(|| panic!("{name} said {line:?}"))
            .parse()
            .unwrap();
        (client, me)
    }

    /// Types one line.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is closed");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Ends the input, as Ctrl-D or the end of a pipe does.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next line of standard output.
    fn line(&mut self) -> String {
        next(&self.stdout, &self.name, "stdout")
    }

    /// The next line of standard error.
    fn err_line(&mut self) -> String {
        next(&self.stderr, &self.name, "stderr")
    }

    fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want, "{}'s next line", self.name);
    }

    /// Waits for the process to end; nothing more may have been printed.
    fn finish(mut self) -> ExitStatus {
        self.stdin = None;
        let deadline = Instant::now() + T;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            // Wait on output (or its end) instead of sleeping.
            match self.stdout.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => panic!("{} printed more: {line:?}", self.name),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    break self.child.wait().unwrap();
                }
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
        };
        let rest: Vec<String> = self.stdout.try_iter().collect();
        assert!(rest.is_empty(), "{} printed more: {rest:?}", self.name);
        status
    }

    /// [`finish`](Proc::finish), plus whatever is left on standard error.
    fn finish_with_stderr(mut self) -> (ExitStatus, Vec<String>) {
        let stderr = std::mem::replace(&mut self.stderr, mpsc::channel().1);
        let status = self.finish();
        // The process has ended, so its stderr ends too.
        let mut rest = Vec::new();
        loop {
            match stderr.recv_timeout(T) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("stderr still open"),
            }
        }
        (status, rest)
    }

    /// Sends SIGTERM, as `kill` or a service manager would.
    fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends a signal with `kill(1)` (our crates forbid `unsafe`, so no libc).
    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only reached with the child still running if the test failed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn next(rx: &Receiver<String>, name: &str, stream: &str) -> String {
    match rx.recv_timeout(T) {
        Ok(line) => line,
        Err(RecvTimeoutError::Timeout) => panic!("{name} printed nothing on {stream} for {T:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{name} closed {stream}"),
    }
}

/// The conversation of the original lab report, with its three clients,
/// English and Chinese, `send:` lines and `exit;`.
#[test]
fn the_labs_conversation() {
    let (server, addr) = Proc::server(&[]);
    let (mut a, a_addr) = Proc::client("client 1", addr);
    let (mut b, b_addr) = Proc::client("client 2", addr);
    a.expect(&format!("* {b_addr} joined"));
    let (mut c, c_addr) = Proc::client("client 3", addr);
    a.expect(&format!("* {c_addr} joined"));
    b.expect(&format!("* {c_addr} joined"));

    let say = |from: SocketAddr, text: &str| format!("[{from}] {text}");

    c.type_line("send:hello I am jjj");
    a.expect(&say(c_addr, "hello I am jjj"));
    b.expect(&say(c_addr, "hello I am jjj"));

    a.type_line("send:hello!!");
    b.expect(&say(a_addr, "hello!!"));
    c.expect(&say(a_addr, "hello!!"));

    b.type_line("send:where r u? I think u r all Chinese?");
    a.expect(&say(b_addr, "where r u? I think u r all Chinese?"));
    c.expect(&say(b_addr, "where r u? I think u r all Chinese?"));

    c.type_line("send:是的你是对的，我是中国人");
    a.expect(&say(c_addr, "是的你是对的，我是中国人"));
    b.expect(&say(c_addr, "是的你是对的，我是中国人"));

    a.type_line("send:okfine");
    b.expect(&say(a_addr, "okfine"));
    c.expect(&say(a_addr, "okfine"));

    a.type_line("send:bye I will go");
    b.expect(&say(a_addr, "bye I will go"));
    c.expect(&say(a_addr, "bye I will go"));

    a.type_line("exit;");
    a.expect("* left the chat");
    b.expect(&format!("* {a_addr} left"));
    c.expect(&format!("* {a_addr} left"));

    c.type_line("send:bye");
    b.expect(&say(c_addr, "bye"));

    c.type_line("exit;");
    c.expect("* left the chat");
    b.expect(&format!("* {c_addr} left"));

    b.type_line("exit;");
    b.expect("* left the chat");

    for client in [a, b, c] {
        let name = client.name.clone();
        let (status, stderr) = client.finish_with_stderr();
        assert!(status.success(), "{name} exited with {status}");
        assert_eq!(stderr, Vec::<String>::new(), "{name}'s stderr");
    }
    server.terminate();
    assert!(server.finish().success());
}

#[test]
fn friendlier_forms_and_end_of_input() {
    let (server, addr) = Proc::server(&[]);
    let (mut a, a_addr) = Proc::client("a", addr);
    let (mut b, b_addr) = Proc::client("b", addr);
    a.expect(&format!("* {b_addr} joined"));

    // A plain line is a message; empty and blank lines send nothing.
    b.type_line("");
    b.type_line("   ");
    b.type_line("plain words, 你好");
    a.expect(&format!("[{b_addr}] plain words, 你好"));

    // A mistyped command is reported, not sent.
    b.type_line("/qiut");
    assert!(b.err_line().starts_with("unknown command /qiut"));
    b.type_line("send:/qiut is what I typed");
    a.expect(&format!("[{b_addr}] /qiut is what I typed"));

    // `/quit` leaves.
    b.type_line("/quit");
    b.expect("* left the chat");
    a.expect(&format!("* {b_addr} left"));
    assert!(b.finish().success());

    // So does the end of input, after sending what came before it.
    let (mut c, c_addr) = Proc::client("c", addr);
    a.expect(&format!("* {c_addr} joined"));
    a.type_line("last words");
    c.expect(&format!("[{a_addr}] last words"));
    a.close_stdin();
    a.expect("* left the chat");
    c.expect(&format!("* {a_addr} left"));
    assert!(a.finish().success());
    c.close_stdin();
    c.expect("* left the chat");
    assert!(c.finish().success());

    server.terminate();
    assert!(server.finish().success());
}

#[test]
fn connection_refused_is_one_clear_line() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = Command::new(CLIENT)
        .args(["--server", &addr.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("cannot connect to {addr}: connection refused\n")
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_usage_exits_2() {
    let out = Command::new(CLIENT)
        .arg("--no-such-flag")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let help = Command::new(CLIENT).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--server <HOST:PORT>",
        "127.0.0.1:8080",
        "send:TEXT",
        "exit;",
        "/quit",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn server_shutdown_ends_the_client_with_a_clear_line() {
    let (server, addr) = Proc::server(&[]);
    let (mut a, _) = Proc::client("a", addr);
    server.terminate();
    a.expect("* the server is shutting down");
    let status = a.finish();
    assert_eq!(status.code(), Some(1));
    assert!(server.finish().success());
}

#[test]
fn server_vanishing_is_reported() {
    let (mut server, addr) = Proc::server(&[]);
    let (mut a, _) = Proc::client("a", addr);
    // No goodbye at all: the process is killed.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(a.err_line(), "the server closed the connection");
    assert_eq!(a.finish().code(), Some(1));
}

#[test]
fn text_over_the_servers_limit_is_not_sent() {
    // Frames of at most 100 bytes: clients may send 80, so 78 bytes of text.
    let (server, addr) = Proc::server(&["--max-frame", "100"]);
    let (mut a, _) = Proc::client("a", addr);
    let (mut b, b_addr) = Proc::client("b", addr);
    a.expect(&format!("* {b_addr} joined"));

    b.type_line(&format!("send:{}", "长".repeat(30)));
    assert_eq!(
        b.err_line(),
        "not sent: text too long: 90 bytes, the server accepts at most 78"
    );
    // The client keeps running, and the next message is the first to arrive.
    b.type_line("send:this one fits");
    a.expect(&format!("[{b_addr}] this one fits"));
    b.type_line(&format!("send:{}", "x".repeat(78)));
    a.expect(&format!("[{b_addr}] {}", "x".repeat(78)));

    b.type_line("exit;");
    b.expect("* left the chat");
    assert!(b.finish().success());
    a.expect(&format!("* {b_addr} left"));
    a.type_line("exit;");
    a.expect("* left the chat");
    assert!(a.finish().success());
    server.terminate();
    assert!(server.finish().success());
}

#[test]
fn ctrl_c_leaves_gracefully() {
    let (server, addr) = Proc::server(&[]);
    let (mut a, _) = Proc::client("a", addr);
    let (mut b, b_addr) = Proc::client("b", addr);
    a.expect(&format!("* {b_addr} joined"));
    b.signal("-INT");
    b.expect("* left the chat");
    a.expect(&format!("* {b_addr} left"));
    assert!(b.finish().success());
    a.type_line("exit;");
    a.expect("* left the chat");
    assert!(a.finish().success());
    server.terminate();
    assert!(server.finish().success());
}
