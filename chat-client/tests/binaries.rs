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

use chat_server::{Config, Server, Storage};
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
        InProcess::start_at("127.0.0.1:0", config)
    }

    /// A server on `addr` (a given port: a restart on the same address).
    fn start_at(addr: &str, config: Config) -> InProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(Server::bind(addr, config)).unwrap();
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

    /// Starts a client called `name` (positional address), reads its
    /// greeting and the lobby's roster, which must list `others`, in order.
    fn named(name: &str, server: SocketAddr, others: &[&str]) -> Proc {
        let mut cmd = Command::new(CLIENT);
        cmd.args([&server.to_string(), "--name", name]);
        let mut client = Proc::spawn(name, cmd);
        client.expect(&format!("* connected to {server} as {name}"));
        client.expect(&in_room("lobby", others));
        client
    }

    /// Starts a version 1 client and reads its greeting; returns it and its
    /// address.
    fn v1(name: &str, server: SocketAddr) -> (Proc, SocketAddr) {
        let mut cmd = Command::new(CLIENT);
        cmd.args(["--server", &server.to_string(), "--v1"]);
        let mut client = Proc::spawn(name, cmd);
        let line = client.line();
        let me = line
            .strip_prefix(&format!("* connected to {server} as "))
            .unwrap_or_else(|| panic!("{name} said {line:?}"))
            .parse()
            .unwrap();
        (client, me)
    }

    /// Starts two version 1 clients, `a` then `b`, and reads how each learns
    /// of the other.
    fn pair_v1(server: SocketAddr) -> ((Proc, SocketAddr), (Proc, SocketAddr)) {
        let (mut a, a_addr) = Proc::v1("a", server);
        let (mut b, b_addr) = Proc::v1("b", server);
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

    /// The next line of standard output, as printed.
    fn raw_line(&mut self) -> String {
        next(&self.stdout, &self.name, "stdout")
    }

    /// The next line of standard output, which must start with the time
    /// (`HH:MM `), without it.
    fn line(&mut self) -> String {
        let line = self.raw_line();
        match strip_time(&line) {
            Some(rest) => rest.to_owned(),
            None => panic!("{}'s line {line:?} does not start with HH:MM", self.name),
        }
    }

    /// The next line of standard error.
    fn err_line(&mut self) -> String {
        next(&self.stderr, &self.name, "stderr")
    }

    fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want, "{}'s next line", self.name);
    }

    /// The next line is `want`, live or from history (`~ ` first): a line
    /// said right after we joined may be stored before the server reads
    /// the join's request for the room's latest, and then comes in that
    /// page (once, either way).
    fn expect_said(&mut self, want: &str) {
        let line = self.line();
        assert!(
            line == want || line.strip_prefix("~ ") == Some(want),
            "{}'s next line: {line:?}, not {want:?}",
            self.name
        );
    }

    /// Skips lines until `want` (a whole line); returns what was skipped.
    fn expect_eventually(&mut self, want: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            let line = self.line();
            if line == want {
                return skipped;
            }
            skipped.push(line);
        }
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

    /// The next line says the connection was lost (for whatever reason: a
    /// vanished server may close or reset) and that it reconnects.
    fn expect_disconnected(&mut self) {
        let line = self.line();
        assert!(
            line.starts_with("* disconnected: ")
                && line.ends_with("; reconnecting (/quit to stop)"),
            "{}: {line:?}",
            self.name
        );
    }

    /// The next lines are these, in any order.
    fn expect_unordered(&mut self, want: &[String]) {
        let mut want = want.to_vec();
        let mut got: Vec<String> = want.iter().map(|_| self.line()).collect();
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

/// `line` without its leading `HH:MM `, if it has one.
fn strip_time(line: &str) -> Option<&str> {
    let (time, rest) = line.split_at_checked(6)?;
    let b = time.as_bytes();
    let digits = [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit());
    (digits && b[2] == b':' && b[5] == b' ').then_some(rest)
}

/// What a client prints when it has joined `room` with `others` there.
fn in_room(room: &str, others: &[&str]) -> String {
    if others.is_empty() {
        format!("* you are in #{room} (nobody else is here)")
    } else {
        format!("* you are in #{room} with {}", others.join(", "))
    }
}

/// The conversation of the original lab report, with its three clients,
/// English and Chinese, `send:` lines and `exit;`, by version 1 clients:
/// what the seed did, plus the time and one's own lines.
#[test]
fn the_labs_conversation() {
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let (mut a, a_addr) = Proc::v1("client 1", addr);
    let (mut b, b_addr) = Proc::v1("client 2", addr);
    a.expect(&format!("* {b_addr} joined"));
    b.expect_joined(&[a_addr]);
    let (mut c, c_addr) = Proc::v1("client 3", addr);
    c.expect_joined(&[a_addr, b_addr]);
    a.expect(&format!("* {c_addr} joined"));
    b.expect(&format!("* {c_addr} joined"));

    // Who types what, in the report's order; the other two see it, and the
    // speaker sees the text it sent, without `send:`.
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
        for listener in clients.iter_mut() {
            listener.expect(&format!("[{}] {text}", addrs[speaker]));
        }
    }
    let [mut a, mut b, mut c] = clients;

    a.type_line("exit;");
    a.expect("* left the chat");
    b.expect(&format!("* {a_addr} left"));
    c.expect(&format!("* {a_addr} left"));

    c.type_line("send:bye");
    c.expect(&format!("[{c_addr}] bye"));
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

/// Names, rooms, direct messages, `/who`, `/rooms`, `/part` and `/nick`,
/// through three real clients.
#[test]
fn names_rooms_and_direct_messages() {
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let mut alice = Proc::named("alice", addr, &[]);
    let mut bob = Proc::named("bob", addr, &["alice"]);
    alice.expect("* bob joined #lobby");
    let mut carol = Proc::named("小红", addr, &["alice", "bob"]);
    alice.expect("* 小红 joined #lobby");
    bob.expect("* 小红 joined #lobby");

    // A plain line goes to the lobby, where everyone is.
    carol.type_line("大家好");
    carol.expect("#lobby <小红> 大家好");
    alice.expect("#lobby <小红> 大家好");
    bob.expect("#lobby <小红> 大家好");

    // `/join` makes the room current: plain lines go there, to its members only.
    alice.type_line("/join rust");
    alice.expect(&in_room("rust", &[]));
    bob.type_line("/join #rust");
    bob.expect(&in_room("rust", &["alice"]));
    alice.expect("* bob joined #rust");
    alice.type_line("send:only for rust");
    alice.expect("#rust <alice> only for rust");
    bob.expect_said("#rust <alice> only for rust");

    // A direct message reaches its recipient only.
    alice.type_line("/msg 小红 psst, 你好");
    alice.expect("-> *小红* psst, 你好");
    carol.expect("*alice* psst, 你好");
    // The server keeps history: a line is shown once stored, and one it
    // refused is shown as not sent, with its text.
    alice.type_line("/msg nobody hello?");
    alice.expect("! not sent with nobody: nobody has that name: hello?");

    // Anyone may ask who is in a room; the answer has names and addresses.
    carol.type_line("/who rust");
    let who = carol.line();
    let rest = who
        .strip_prefix("* #rust has 2 members: alice [127.0.0.1:")
        .unwrap_or_else(|| panic!("{who}"));
    assert!(rest.contains("], bob [127.0.0.1:"), "{who}");
    carol.type_line("/rooms");
    carol.expect("* 2 rooms: #lobby (3), #rust (2)");

    // Carol's next line is bob's, in the lobby: nothing from #rust reached
    // her (and nothing of alice's direct message reached bob: his next line
    // is carol's).
    bob.type_line("/part lobby");
    bob.expect("* you left #lobby");
    alice.expect("* bob left #lobby");
    carol.expect("* bob left #lobby");
    carol.type_line("still here");
    carol.expect("#lobby <小红> still here");
    alice.expect("#lobby <小红> still here");

    // `/part` without a room leaves the current one; the lobby becomes current.
    alice.type_line("/part");
    alice.expect("* you left #rust");
    bob.expect("* alice left #rust");
    alice.type_line("back in the lobby");
    alice.expect("#lobby <alice> back in the lobby");
    carol.expect("#lobby <alice> back in the lobby");

    // A rename reaches those sharing a room; then the new name is shown.
    alice.type_line("/nick alicia");
    alice.expect("* you are now alicia");
    carol.expect("* alice is now alicia");
    alice.type_line("/nick 小红");
    assert!(alice.line().starts_with("! name taken: 小红"));
    alice.type_line("hi again");
    alice.expect("#lobby <alicia> hi again");
    carol.expect("#lobby <alicia> hi again");

    // Mistakes are reported, not sent.
    carol.type_line("/join");
    assert_eq!(carol.err_line(), "usage: /join ROOM");

    // Leaving is news for those sharing a room (only carol shares one with
    // alice; nobody shares one with bob now).
    alice.leave();
    carol.expect("* alicia left #lobby");
    bob.leave();
    carol.leave();
    server.stop();
}

/// A U+202E override (or any control) from a peer reaches the terminal
/// escaped, so it cannot turn the line around; no output has escape codes
/// when it is not a terminal, or when NO_COLOR is set.
#[test]
fn others_text_is_neutralised_and_pipes_get_no_colours() {
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let mut cmd = Command::new(CLIENT);
    cmd.args([&addr.to_string(), "--name", "alice"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color");
    let mut alice = Proc::spawn("alice", cmd);
    alice.expect(&format!("* connected to {addr} as alice"));
    alice.expect(&in_room("lobby", &[]));
    let mut cmd = Command::new(CLIENT);
    cmd.args([&addr.to_string(), "--name", "eve"])
        .env("NO_COLOR", "1");
    let mut eve = Proc::spawn("eve", cmd);
    eve.expect(&format!("* connected to {addr} as eve"));
    eve.expect(&in_room("lobby", &["alice"]));
    alice.expect("* eve joined #lobby");

    eve.type_line("send:abc\u{202E}fed \u{1b}[2J\u{9b}2J \u{2066}x\u{2069}");
    let raw = alice.raw_line();
    assert!(
        !raw.contains(['\u{202E}', '\u{1b}', '\u{9b}', '\u{2066}', '\u{2069}']),
        "{raw:?}"
    );
    assert_eq!(
        strip_time(&raw),
        Some("#lobby <eve> abc\\u{202e}fed \\u{1b}[2J\\u{9b}2J \\u{2066}x\\u{2069}")
    );
    eve.line();

    // Names with bidi controls are refused by the server, which picks one;
    // the name asked for is shown escaped too.
    let mut cmd = Command::new(CLIENT);
    cmd.args([&addr.to_string(), "--name", "mal\u{202E}lory"]);
    let mut mallory = Proc::spawn("mallory", cmd);
    let greeting = mallory.line();
    assert!(
        greeting.starts_with(&format!("* connected to {addr} as guest-")),
        "{greeting}"
    );
    let refusal = mallory.line();
    assert!(
        refusal.starts_with("! invalid name: mal\\u{202e}lory"),
        "{refusal:?}"
    );
    let guest = greeting.rsplit(' ').next().unwrap().to_owned();
    mallory.expect(&in_room("lobby", &["alice", "eve"]));
    // The lobby's history, escaped as well.
    mallory.expect("~ #lobby <eve> abc\\u{202e}fed \\u{1b}[2J\\u{9b}2J \\u{2066}x\\u{2069}");
    alice.expect(&format!("* {guest} joined #lobby"));
    eve.expect(&format!("* {guest} joined #lobby"));
    mallory.leave();
    alice.expect(&format!("* {guest} left #lobby"));
    eve.expect(&format!("* {guest} left #lobby"));

    alice.leave();
    eve.expect("* alice left #lobby");
    eve.leave();
    server.stop();
}

/// A line of several KiB, from a pipe, goes out and arrives whole.
#[test]
fn a_long_line_arrives_whole() {
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let mut a = Proc::named("a", addr, &[]);
    let mut b = Proc::named("b", addr, &["a"]);
    a.expect("* b joined #lobby");
    let long: String = "长line/".repeat(1024); // 9 KiB, 7,168 characters
    assert!(long.len() > 6 * 1024);
    a.type_line(&long);
    a.expect(&format!("#lobby <a> {long}"));
    b.expect_said(&format!("#lobby <a> {long}"));
    a.leave();
    b.expect("* a left #lobby");
    b.leave();
    server.stop();
}

/// On a terminal, a pasted line of several KiB is sent whole on Enter.
///
/// crossterm (under the line editor) read the first 1,024 bytes of a paste
/// and then waited for the terminal to become readable again, which it did
/// only with the next key press: the rest of the line, Enter included,
/// stayed unread. The client now turns on bracketed paste (`ESC[?2004h`),
/// so the terminal marks a paste and crossterm reads all of it. `script(1)`
/// gives the client a terminal; the test plays the terminal emulator: it
/// answers cursor position queries, and marks the paste only once the
/// client has asked for it, as terminals do.
#[cfg(target_os = "linux")]
#[test]
fn a_paste_on_a_terminal_arrives_whole() {
    use std::sync::{Arc, Mutex};

    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let mut peer = Proc::named("peer", addr, &[]);
    let command = format!("stty cols 80 rows 24; '{CLIENT}' {addr} --name paster");
    let mut script = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script(1), from util-linux, gives the client a terminal");
    let keys = Arc::new(Mutex::new(script.stdin.take().unwrap()));
    let type_keys = |bytes: &[u8]| {
        let mut keys = keys.lock().unwrap();
        keys.write_all(bytes).unwrap();
        keys.flush().unwrap();
    };

    // What the client writes to its terminal, as it comes.
    let (screen_tx, screen) = mpsc::channel::<Vec<u8>>();
    let mut output = script.stdout.take().unwrap();
    let answers = Arc::clone(&keys);
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = output.read(&mut buf) {
            if n == 0 {
                return;
            }
            let chunk = buf[..n].to_vec();
            // The editor asks where the cursor is; a terminal answers.
            for _ in 0..count(&chunk, b"\x1b[6n") {
                let mut keys = answers.lock().unwrap();
                let _ = keys.write_all(b"\x1b[1;1R").and_then(|()| keys.flush());
            }
            if screen_tx.send(chunk).is_err() {
                return;
            }
        }
    });
    let mut shown = Vec::new();
    let mut wait_for = |want: &[u8]| {
        let deadline = Instant::now() + T;
        while count(&shown, want) == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match screen.recv_timeout(left) {
                Ok(chunk) => shown.extend(chunk),
                Err(_) => panic!(
                    "the client never wrote {:?}; it wrote {:?}",
                    String::from_utf8_lossy(want),
                    String::from_utf8_lossy(&shown)
                ),
            }
        }
    };

    peer.expect("* paster joined #lobby");
    wait_for(b"\x1b[?2004h");
    wait_for(b"#lobby> ");
    let text = "pasted/粘贴 ".repeat(512); // 8 KiB
    let mut paste = b"\x1b[200~".to_vec();
    paste.extend(text.as_bytes());
    paste.extend(b"\x1b[201~\r");
    type_keys(&paste);
    peer.expect(&format!("#lobby <paster> {text}"));
    // The typed line leaves the screen (`#lobby <paster> TEXT` replaces
    // it): "#lobby> " and 6,144 columns of text are 77 rows of 80.
    wait_for(b"\x1b[77A\r\x1b[J");
    wait_for(b"#lobby <paster> pasted/");

    type_keys(b"exit;\r");
    peer.expect("* paster left #lobby");
    let deadline = Instant::now() + T;
    while script.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the client did not exit");
        // Output (or its end) paces the wait.
        let _ = screen.recv_timeout(Duration::from_millis(50));
    }
    assert!(script.wait().unwrap().success(), "the client failed");
    // NO_COLOR: no colours, the prompt's included (sequences that move the
    // cursor or reset attributes remain: the line editor needs them).
    shown.extend(screen.iter().flatten());
    for colour in 30..=37 {
        for sgr in [format!("\x1b[{colour}m"), format!("\x1b[{}m", colour + 60)] {
            assert_eq!(count(&shown, sgr.as_bytes()), 0, "{sgr:?} with NO_COLOR");
        }
    }
    peer.leave();
    server.stop();
}

/// How many times `needle` occurs in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Version 1 and names-capable clients share the lobby; room commands on a
/// version 1 session get a clear message.
#[test]
fn version_1_and_named_clients_share_the_lobby() {
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let mut alice = Proc::named("alice", addr, &[]);
    let (mut old, old_addr) = Proc::v1("old", addr);
    let joined = alice.line();
    assert!(
        joined.starts_with("* guest-") && joined.ends_with(" joined #lobby"),
        "{joined}"
    );
    let guest = joined
        .strip_prefix("* ")
        .and_then(|l| l.strip_suffix(" joined #lobby"))
        .unwrap()
        .to_owned();
    // The version 1 client is told of alice by address.
    let alice_joined = old.line();
    assert!(alice_joined.ends_with(" joined"), "{alice_joined}");

    old.type_line("send:hello from 1999");
    old.expect(&format!("[{old_addr}] hello from 1999"));
    alice.expect_said(&format!("#lobby <{guest}> hello from 1999"));
    alice.type_line("hello back");
    alice.expect("#lobby <alice> hello back");
    let relayed = old.line();
    assert!(
        relayed.starts_with("[127.0.0.1:") && relayed.ends_with("] hello back"),
        "{relayed}"
    );

    old.type_line("/join rust");
    assert!(
        old.err_line()
            .starts_with("not available: this server has one room")
    );
    // The name is a guest's; `old` is nobody.
    alice.type_line("/msg old hi");
    alice.expect("! not sent with old: nobody has that name: hi");
    alice.type_line(&format!("/msg {guest} hi"));
    alice.expect(&format!(
        "! not sent with {guest}: cannot receive direct messages (that client speaks \
         version 1 of the protocol, without direct messages): hi"
    ));

    old.leave();
    alice.expect(&format!("* {guest} left #lobby"));
    alice.leave();
    server.stop();
}

/// A server from before names and rooms, played by chat-proto's server
/// machine over a blocking socket: it welcomes one client without the
/// capability, says one line to it, and answers its `Exit`. Returns what
/// the client sent.
fn older_server() -> (SocketAddr, thread::JoinHandle<Vec<chat_proto::Message>>) {
    use chat_proto::{Connection, Event, Message, ServerConfig, features};

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut stream, peer) = listener.accept().unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        let mut config = ServerConfig::default();
        config.features = features::NONE;
        let mut conn = Connection::server(config);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            while let Some(event) = conn.poll().expect("the client broke the protocol") {
                match event {
                    Event::Hello { .. } => {
                        conn.accept(peer).unwrap();
                        conn.send(&Message::Relay {
                            ip: [127, 0, 0, 1].into(),
                            port: 9,
                            text: "from an older server".into(),
                        })
                        .unwrap();
                    }
                    Event::Message(msg) => got.push(msg),
                    Event::Exit => conn.exit().unwrap(),
                    other => panic!("unexpected {other:?}"),
                }
            }
            while let Some(bytes) = conn.transmit() {
                stream.write_all(&bytes).unwrap();
            }
            let n = stream.read(&mut buf).expect("the client went quiet");
            if n == 0 {
                return got;
            }
            conn.input().extend_from_slice(&buf[..n]);
        }
    });
    (addr, server)
}

/// Against a server without names and rooms, the client behaves as the
/// seed did, and answers room commands with a clear message.
#[test]
fn an_older_server_gets_version_1() {
    let (addr, server) = older_server();
    let mut cmd = Command::new(CLIENT);
    cmd.args([&addr.to_string(), "--name", "alice"]);
    let mut alice = Proc::spawn("alice", cmd);
    let greeting = alice.line();
    let me = greeting
        .strip_prefix(&format!("* connected to {addr} as "))
        .unwrap_or_else(|| panic!("{greeting}"))
        .to_owned();
    assert!(me.parse::<SocketAddr>().is_ok(), "{greeting}");
    alice.expect("* this server has one room and no names (protocol version 1)");
    alice.expect("[127.0.0.1:9] from an older server");
    for command in [
        "/join rust",
        "/msg bob hi",
        "/nick bob",
        "/rooms",
        "/who",
        "/part",
    ] {
        alice.type_line(command);
        let said = alice.err_line();
        assert!(
            said.starts_with("not available: this server has one room and no names"),
            "{command}: {said}"
        );
    }
    alice.type_line("send:hello, old friend");
    alice.expect(&format!("[{me}] hello, old friend"));
    alice.leave();
    let got = server.join().unwrap();
    assert_eq!(
        got,
        [chat_proto::Message::Send {
            text: "hello, old friend".into()
        }]
    );
}

/// When the server restarts, the client says so, reconnects with the same
/// name and rooms, and goes on; lines typed meanwhile are reported unsent.
#[test]
fn reconnects_after_the_server_restarts() {
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let mut alice = Proc::named("alice", addr, &[]);
    alice.type_line("/join rust");
    alice.expect(&in_room("rust", &[]));
    alice.type_line("/part lobby");
    alice.expect("* you left #lobby");

    server.kill();
    alice.expect_disconnected();
    alice.type_line("typed while away");
    assert_eq!(alice.err_line(), "not sent: not connected (reconnecting)");

    let server = InProcess::start_at(&addr.to_string(), Config::default());
    // Failed attempts (if the restart took a while) come first.
    let skipped = alice.expect_eventually(&format!("* reconnected to {addr} as alice"));
    for line in skipped {
        assert!(line.starts_with("* reconnect attempt "), "{line}");
    }
    // The server puts it in the lobby; it joins rust again and leaves the
    // lobby again; rust is still the current room.
    alice.expect_unordered(&[
        in_room("lobby", &[]),
        in_room("rust", &[]),
        "* you left #lobby".to_owned(),
    ]);

    let mut bob = Proc::named("bob", addr, &[]);
    bob.type_line("/join rust");
    bob.expect(&in_room("rust", &["alice"]));
    alice.expect("* bob joined #rust");
    alice.type_line("I'm back");
    alice.expect("#rust <alice> I'm back");
    bob.expect_said("#rust <alice> I'm back");

    // Quitting while reconnecting works, at once.
    server.kill();
    bob.expect_disconnected();
    bob.type_line("/quit");
    bob.expect("* left (not connected)");
    assert!(bob.finish().success());
    alice.expect_disconnected();
    alice.signal("-INT");
    alice.expect_eventually("* left (not connected)");
    assert!(alice.finish().success());
}

/// With history: joining a room shows its last messages (marked `~`),
/// `/history N` shows the last N again, and a client that was away while
/// the server restarted (on disk) and others talked gets what it missed
/// once, with nothing repeated.
#[test]
fn history_on_joining_on_request_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        storage: Storage::Disk(dir.path().to_owned()),
        ..Config::default()
    };
    let server = InProcess::start(config());
    let addr = server.addr;
    let mut alice = Proc::named("alice", addr, &[]);
    alice.type_line("/join rust");
    alice.expect(&in_room("rust", &[]));
    alice.type_line("one");
    alice.expect("#rust <alice> one");
    alice.type_line("two");
    alice.expect("#rust <alice> two");

    let mut bob = Proc::named("bob", addr, &["alice"]);
    alice.expect("* bob joined #lobby");
    bob.type_line("/join rust");
    bob.expect(&in_room("rust", &["alice"]));
    bob.expect("~ #rust <alice> one");
    bob.expect("~ #rust <alice> two");
    alice.expect("* bob joined #rust");
    bob.type_line("/history 1");
    bob.expect("~ #rust <alice> two");

    // Bob is frozen while the server restarts and alice talks on.
    bob.signal("-STOP");
    server.kill();
    alice.expect_disconnected();
    let server = InProcess::start_at(&addr.to_string(), config());
    let skipped = alice.expect_eventually(&format!("* reconnected to {addr} as alice"));
    for line in skipped {
        assert!(line.starts_with("* reconnect attempt "), "{line}");
    }
    alice.expect_unordered(&[in_room("lobby", &[]), in_room("rust", &[])]);
    alice.type_line("three");
    alice.expect("#rust <alice> three");

    // Bob wakes up, finds the connection gone, reconnects and resumes.
    bob.signal("-CONT");
    let skipped = bob.expect_eventually("~ #rust <alice> three");
    assert!(
        skipped.iter().all(|l| !l.starts_with("~ ")),
        "history shown again: {skipped:?}"
    );
    assert!(
        skipped.contains(&in_room("rust", &["alice"])),
        "{skipped:?}"
    );
    alice.expect_unordered(&["* bob joined #lobby".into(), "* bob joined #rust".into()]);
    alice.type_line("four");
    alice.expect("#rust <alice> four");
    bob.expect("#rust <alice> four");

    bob.leave();
    alice.expect_unordered(&["* bob left #lobby".into(), "* bob left #rust".into()]);
    alice.leave();
    server.stop();
}

#[test]
fn addresses_as_people_type_them() {
    // `--server` and the positional form; IPv6 with brackets.
    let server = InProcess::start_at("[::1]:0", Config::default());
    let addr = server.addr;
    let typed = format!("[::1]:{}", addr.port());
    let mut cmd = Command::new(CLIENT);
    cmd.args([typed.as_str(), "--name", "six"]);
    let mut six = Proc::spawn("six", cmd);
    six.expect(&format!("* connected to {addr} as six"));
    six.expect(&in_room("lobby", &[]));
    six.leave();
    server.stop();

    // A mistake in the address is a clear usage error, not a parse error.
    for (typed, hint) in [
        ("localhost:http", "is not a port"),
        ("tcp://localhost:8080", "looks like a URL"),
    ] {
        let out = Command::new(CLIENT).arg(typed).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{typed}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(hint), "{typed}: {stderr}");
    }
    // Both forms at once is a mistake too.
    let out = Command::new(CLIENT)
        .args(["127.0.0.1:1", "--server", "127.0.0.1:2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn friendlier_forms_and_end_of_input() {
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let ((mut a, a_addr), (mut b, b_addr)) = Proc::pair_v1(addr);

    // A plain line is a message; empty and blank lines send nothing.
    b.type_line("");
    b.type_line("   ");
    b.type_line("plain words, 你好");
    b.expect(&format!("[{b_addr}] plain words, 你好"));
    a.expect(&format!("[{b_addr}] plain words, 你好"));

    // A mistyped command is reported, not sent.
    b.type_line("/qiut");
    assert!(b.err_line().starts_with("unknown command /qiut"));
    b.type_line("send:/qiut is what I typed");
    b.expect(&format!("[{b_addr}] /qiut is what I typed"));
    a.expect(&format!("[{b_addr}] /qiut is what I typed"));

    // `/quit` leaves.
    b.type_line("/quit");
    b.expect("* left the chat");
    a.expect(&format!("* {b_addr} left"));
    assert!(b.finish().success());

    // So does the end of input, after sending what came before it.
    let (mut c, c_addr) = Proc::v1("c", addr);
    c.expect_joined(&[a_addr]);
    a.expect(&format!("* {c_addr} joined"));
    a.type_line("last words");
    a.expect(&format!("[{a_addr}] last words"));
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
        "[HOST:PORT]",
        "--server <HOST:PORT>",
        "--name <NAME>",
        "127.0.0.1:8080",
        "port 8080",
        "send:TEXT",
        "exit;",
        "/quit",
        "NO_COLOR",
        "reconnect",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn server_shutdown_ends_the_client_with_a_clear_line() {
    let server = InProcess::start(Config::default());
    let addr = server.addr;
    let mut cmd = Command::new(CLIENT);
    cmd.args([&addr.to_string(), "--no-reconnect"]);
    let mut a = Proc::spawn("a", cmd);
    assert!(
        a.line()
            .starts_with(&format!("* connected to {addr} as guest-"))
    );
    a.expect(&in_room("lobby", &[]));
    // Returns once every session has ended: the client was told and left.
    server.stop();
    a.expect("* the server is shutting down");
    let status = a.finish();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn server_vanishing_is_reported() {
    let server = InProcess::start(Config::default());
    let mut cmd = Command::new(CLIENT);
    cmd.args([&server.addr.to_string(), "--no-reconnect", "--v1"]);
    let mut a = Proc::spawn("a", cmd);
    a.line();
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
    let ((mut a, _), (mut b, b_addr)) = Proc::pair_v1(server.addr);

    b.type_line(&format!("send:{}", "长".repeat(30)));
    assert_eq!(
        b.err_line(),
        "not sent: text too long: 90 bytes, the server accepts at most 78"
    );
    // The client keeps running, and the next message is the first to arrive.
    b.type_line("send:this one fits");
    b.expect(&format!("[{b_addr}] this one fits"));
    a.expect(&format!("[{b_addr}] this one fits"));
    b.type_line(&format!("send:{}", "x".repeat(78)));
    b.expect(&format!("[{b_addr}] {}", "x".repeat(78)));
    a.expect(&format!("[{b_addr}] {}", "x".repeat(78)));

    b.leave();
    a.expect(&format!("* {b_addr} left"));
    a.leave();
    server.stop();
}

#[test]
fn ctrl_c_leaves_gracefully() {
    let server = InProcess::start(Config::default());
    let mut a = Proc::named("a", server.addr, &[]);
    let mut b = Proc::named("b", server.addr, &["a"]);
    a.expect("* b joined #lobby");
    b.signal("-INT");
    b.expect("* left the chat");
    a.expect("* b left #lobby");
    assert!(b.finish().success());
    a.leave();
    server.stop();
}

/// Every command, in the form help shows it.
const COMMANDS: [&str; 12] = [
    "send:TEXT",
    "/logout",
    "/history",
    "exit;",
    "/quit",
    "/help",
    "/join",
    "/part",
    "/rooms",
    "/who",
    "/msg",
    "/nick",
];

/// `--help` and `/help` list exactly the commands the program accepts, and
/// each one it lists does what it says.
#[test]
fn help_lists_every_command() {
    let out = Command::new(CLIENT).arg("--help").output().unwrap();
    assert!(out.status.success());
    let long_help = String::from_utf8(out.stdout).unwrap();

    let server = InProcess::start(Config::default());
    let mut a = Proc::named("a", server.addr, &[]);
    let mut b = Proc::named("b", server.addr, &["a"]);
    a.expect("* b joined #lobby");

    // Each command is accepted and works: `/help` prints the list, `send:`
    // sends, `exit;` and `/quit` leave (a command the program did not parse
    // would be sent as text or reported as unknown on stderr).
    a.type_line("/help");
    let mut short_help = Vec::new();
    a.type_line("send:probe");
    loop {
        match a.raw_line() {
            line if strip_time(&line) == Some("#lobby <a> probe") => break,
            line => short_help.push(line),
        }
    }
    b.expect_said("#lobby <a> probe");
    a.type_line("exit;");
    a.expect("* left the chat");
    let short_help = short_help.join("\n");
    b.expect("* a left #lobby");
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
            let word = word.trim_end_matches([',', '.', ')', ';', ':']);
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

/// `--register` with the password from the environment keeps the token in
/// `--token-file`; the next run logs in with it alone; a guest cannot take
/// the name; `/logout` revokes the token and removes the file.
#[test]
fn register_then_log_in_by_the_saved_token_then_log_out() {
    let server = InProcess::start(Config::default());
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let token_arg = token.to_str().unwrap();

    let mut cmd = Command::new(CLIENT);
    cmd.args([
        &addr,
        "--register",
        "--name",
        "艾丽斯",
        "--token-file",
        token_arg,
    ])
    .env("CHAT_PASSWORD", "correct horse battery");
    let mut a = Proc::spawn("a", cmd);
    a.expect(&format!("* connected to {addr} as 艾丽斯"));
    a.expect(&in_room("lobby", &[]));
    a.leave();
    let saved = std::fs::read_to_string(&token).unwrap();
    assert!(saved.trim().len() > 40, "{saved:?}");

    // A guest asking for the name gets another.
    let mut guest = Proc::spawn("guest", {
        let mut cmd = Command::new(CLIENT);
        cmd.args([&addr, "--name", "艾丽斯"]);
        cmd
    });
    let line = guest.line();
    assert!(
        line.starts_with(&format!("* connected to {addr} as guest-")),
        "{line}"
    );
    guest.expect(
        "! name registered to an account: 艾丽斯 (艾丽斯 is a registered name: log in to use it)",
    );
    guest.leave();

    // The token alone logs in; /logout revokes it.
    let mut cmd = Command::new(CLIENT);
    cmd.args([&addr, "--token-file", token_arg]);
    let mut b = Proc::spawn("b", cmd);
    b.expect(&format!("* connected to {addr} as 艾丽斯"));
    b.expect(&in_room("lobby", &[]));
    b.type_line("/logout");
    b.expect("* left the chat");
    assert!(b.finish().success());
    assert!(!token.exists(), "the token file is removed on /logout");

    // The revoked token, saved again by hand, is refused: status 1, one line.
    std::fs::write(&token, saved).unwrap();
    let out = Command::new(CLIENT)
        .args([&addr, "--token-file", token_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("login refused: login failed: "),
        "{stderr}"
    );
    server.stop();
}
