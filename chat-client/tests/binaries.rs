//! End to end with the real program: `chat-client` processes driven through
//! their standard input, as a person in a terminal (or a script in a pipe)
//! would, against the real server run in this process through the
//! `chat_server` library.
//!
//! Every wait is for a line of output, bounded by a timeout; nothing sleeps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use chat_server::{Config, Server};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound on any single wait; only reached when something is broken.
const T: Duration = Duration::from_secs(10);

const CLIENT: &str = env!("CARGO_BIN_EXE_chat-client");

/// A chat server on 127.0.0.1, run on a runtime of its own in this process.
struct InProcess {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), chat_server::Error>>>,
    runtime: Option<Runtime>,
}

impl InProcess {
    fn start(config: Config) -> InProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime
            .block_on(Server::bind("127.0.0.1:0", config))
            .unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(server.run(async move {
            let _ = stopped.await;
        }));
        InProcess {
            addr,
            stop: Some(stop),
            task: Some(task),
            runtime: Some(runtime),
        }
    }

    /// Shuts down gracefully, as on SIGTERM: every client is told `Exit`.
    fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        let runtime = self.runtime.take().unwrap();
        let ended = runtime.block_on(async { tokio::time::timeout(T, task).await });
        ended
            .expect("the server did not stop in time")
            .expect("the server panicked")
            .expect("the server failed");
    }

    /// Vanishes without a goodbye, as a killed process does: every task is
    /// dropped, and with it every socket.
    fn kill(mut self) {
        self.runtime.take().unwrap().shutdown_timeout(T);
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
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

    /// Starts two clients, `a` then `b`, and reads how each learns of the other.
    fn pair(server: SocketAddr) -> ((Proc, SocketAddr), (Proc, SocketAddr)) {
        let (mut a, a_addr) = Proc::client("a", server);
        let (mut b, b_addr) = Proc::client("b", server);
        a.expect(&format!("* {b_addr} joined"));
        b.expect_joined(&[a_addr]);
        ((a, a_addr), (b, b_addr))
    }

    /// Types `exit;`: the server acknowledges, the program ends with status 0.
    fn leave(mut self) {
        self.type_line("exit;");
        self.expect("* left the chat");
        let name = self.name.clone();
        let status = self.finish();
        assert!(status.success(), "{name} exited with {status}");
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

    /// The next lines announce these peers, in any order: a newcomer is
    /// told who was already there.
    fn expect_joined(&mut self, peers: &[SocketAddr]) {
        let mut want: Vec<String> = peers.iter().map(|p| format!("* {p} joined")).collect();
        let mut got: Vec<String> = peers.iter().map(|_| self.line()).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{}'s next lines", self.name);
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
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let (mut a, a_addr) = Proc::client("client 1", addr);
    let (mut b, b_addr) = Proc::client("client 2", addr);
    a.expect(&format!("* {b_addr} joined"));
    b.expect_joined(&[a_addr]);
    let (mut c, c_addr) = Proc::client("client 3", addr);
    c.expect_joined(&[a_addr, b_addr]);
    a.expect(&format!("* {c_addr} joined"));
    b.expect(&format!("* {c_addr} joined"));

    // Who types what, in the report's order; the other two see it.
    let script = [
        (2, "hello I am jjj"),
        (0, "hello!!"),
        (1, "where r u? I think u r all Chinese?"),
        (2, "是的你是对的，我是中国人"),
        (0, "okfine"),
        (0, "bye I will go"),
    ];
    let addrs = [a_addr, b_addr, c_addr];
    let mut clients = [a, b, c];
    for (speaker, text) in script {
        clients[speaker].type_line(&format!("send:{text}"));
        for (i, listener) in clients.iter_mut().enumerate() {
            if i != speaker {
                listener.expect(&format!("[{}] {text}", addrs[speaker]));
            }
        }
    }
    let [mut a, mut b, mut c] = clients;

    a.type_line("exit;");
    a.expect("* left the chat");
    b.expect(&format!("* {a_addr} left"));
    c.expect(&format!("* {a_addr} left"));

    c.type_line("send:bye");
    b.expect(&format!("[{c_addr}] bye"));

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
    server.stop();
}

#[test]
fn friendlier_forms_and_end_of_input() {
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let ((mut a, a_addr), (mut b, b_addr)) = Proc::pair(addr);

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
    c.expect_joined(&[a_addr]);
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

    server.stop();
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
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let (mut a, _) = Proc::client("a", addr);
    // Returns once every session has ended: the client was told and left.
    server.stop();
    a.expect("* the server is shutting down");
    let status = a.finish();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn server_vanishing_is_reported() {
    let server = InProcess::start(Config::default());
    let (mut a, _) = Proc::client("a", server.addr);
    // No goodbye at all: every server task and socket is dropped.
    server.kill();
    assert_eq!(a.err_line(), "the server closed the connection");
    assert_eq!(a.finish().code(), Some(1));
}

#[test]
fn text_over_the_servers_limit_is_not_sent() {
    // Frames of at most 100 bytes: clients may send 80, so 78 bytes of text.
    let server = InProcess::start(Config {
        max_frame_len: 100,
        ..Config::default()
    });
    let ((mut a, _), (mut b, b_addr)) = Proc::pair(server.addr);

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

    b.leave();
    a.expect(&format!("* {b_addr} left"));
    a.leave();
    server.stop();
}

#[test]
fn ctrl_c_leaves_gracefully() {
    let server = InProcess::start(Config::default());
    let ((mut a, _), (mut b, b_addr)) = Proc::pair(server.addr);
    b.signal("-INT");
    b.expect("* left the chat");
    a.expect(&format!("* {b_addr} left"));
    assert!(b.finish().success());
    a.leave();
    server.stop();
}

/// Every command, in the form help shows it.
const COMMANDS: [&str; 4] = ["send:TEXT", "exit;", "/quit", "/help"];

/// `--help` and `/help` list exactly the commands the program accepts, and
/// each one it lists does what it says.
#[test]
fn help_lists_every_command() {
    let out = Command::new(CLIENT).arg("--help").output().unwrap();
    assert!(out.status.success());
    let long_help = String::from_utf8(out.stdout).unwrap();

    let server = InProcess::start(Config::default());
    let ((mut a, a_addr), (mut b, _)) = Proc::pair(server.addr);

    // Each command is accepted and works: `/help` prints the list, `send:`
    // sends, `exit;` and `/quit` leave (a command the program did not parse
    // would be sent as text or reported as unknown on stderr).
    a.type_line("/help");
    a.type_line("send:probe");
    b.expect(&format!("[{a_addr}] probe"));
    a.type_line("exit;");
    let mut short_help = Vec::new();
    loop {
        match a.line() {
            line if line == "* left the chat" => break,
            line => short_help.push(line),
        }
    }
    let short_help = short_help.join("\n");
    b.expect(&format!("* {a_addr} left"));
    b.type_line("/quit");
    b.expect("* left the chat");
    for client in [a, b] {
        let name = client.name.clone();
        let (status, stderr) = client.finish_with_stderr();
        assert!(status.success(), "{name} exited with {status}");
        assert_eq!(stderr, Vec::<String>::new(), "{name}'s stderr");
    }
    server.stop();

    for help in [&long_help, &short_help] {
        for command in COMMANDS {
            assert!(help.contains(command), "help lacks {command}:\n{help}");
        }
        // Nothing that looks like a command is listed but unknown here.
        for word in help.split_whitespace() {
            let word = word.trim_end_matches([',', '.', ')']);
            if word.starts_with('/') {
                assert!(COMMANDS.contains(&word), "help lists {word}, not a command");
            }
        }
    }
    // `/help` is the list of commands: each line's first word is one (or
    // the text of a plain line), or the line continues prose.
    for line in short_help.lines().filter(|l| l.starts_with("  ")) {
        let first = line.split_whitespace().next().unwrap_or_default();
        assert!(
            COMMANDS.contains(&first) || ["TEXT", "(empty"].contains(&first),
            "/help lists {first:?}, not a command"
        );
    }
}
