//! Helpers shared by the integration tests: an in-process server and a test
//! client driven by `chat_proto::Connection` in the client role (the same
//! handshake and rules as every other client), every await bounded by a
//! timeout.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::{ChatCodec, ClientConfig, Connection, Event, Message};
use chat_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound on any single wait. Only reached when something is broken.
pub const T: Duration = Duration::from_secs(10);

/// A server running in this process until `stop`.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), chat_server::Error>>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        Self::start_on("127.0.0.1:0", config).await
    }

    pub async fn start_on(bind: &str, config: Config) -> Self {
        let server = Server::bind(bind, config).await.expect("bind");
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// Fires the shutdown signal without waiting.
    pub fn signal(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Fires the shutdown signal and waits for `run` to return.
    pub async fn stop(mut self) {
        self.signal();
        timeout(T, self.task)
            .await
            .expect("run() returns within the bound")
            .expect("server task did not panic")
            .expect("run() returns Ok");
    }
}

/// Config for tests: default limits, long grace periods (nothing waits on
/// them unless something is broken).
pub fn config() -> Config {
    Config {
        close_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    }
}

/// A test client: a socket and the protocol's client machine.
pub struct Client {
    pub stream: TcpStream,
    pub conn: Connection,
    /// This client's address, as the server will report it.
    pub addr: SocketAddr,
    /// Bytes read but not yet taken by [`Client::recv_raw`].
    raw: bytes::BytesMut,
    /// The machine's `Hello`, until [`Client::hello`] sends it.
    hello: Option<bytes::Bytes>,
}

/// A connection whose `Hello` is queued but not sent.
pub async fn connect(server: SocketAddr) -> Client {
    let stream = timeout(T, TcpStream::connect(server))
        .await
        .expect("connect in time")
        .expect("connect");
    Client::over(stream)
}

/// A connected and welcomed client.
pub async fn join(server: SocketAddr) -> Client {
    let mut client = connect(server).await;
    client.hello().await;
    client.welcomed().await;
    client
}

impl Client {
    /// A client over a connected stream, its `Hello` queued.
    pub fn over(stream: TcpStream) -> Self {
        let addr = stream.local_addr().unwrap();
        let mut conn = Connection::client(ClientConfig::default());
        let hello = conn.transmit();
        Client {
            stream,
            conn,
            addr,
            raw: bytes::BytesMut::new(),
            hello,
        }
    }

    /// Sends the machine's `Hello` (once).
    pub async fn hello(&mut self) {
        if let Some(hello) = self.hello.take() {
            self.write_raw(&hello).await;
        }
    }

    /// Reads the `Welcome` and checks the address the server saw.
    pub async fn welcomed(&mut self) -> Message {
        let welcome = self.recv().await;
        match &welcome {
            Message::Welcome {
                version, ip, port, ..
            } => {
                assert_eq!(*version, chat_proto::VERSION);
                assert_eq!((*ip, *port), (self.addr.ip(), self.addr.port()));
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
        welcome
    }

    /// Queues `msg` through the machine without writing: `Send`, `Ping`,
    /// `Pong`, `Exit`; `Hello` is the one queued at connection. Anything a
    /// client machine refuses to send goes through [`Client::send_raw`].
    pub async fn feed(&mut self, msg: Message) {
        match msg {
            Message::Exit => self.conn.exit().expect("exit while open"),
            Message::Hello { .. } if msg == Message::hello() => self.hello().await,
            Message::Hello { .. } => panic!("a non-default Hello goes through send_raw"),
            msg => self.conn.send(&msg).expect("the client machine sends it"),
        }
    }

    /// Sends `msg` through the machine (see [`Client::feed`]).
    pub async fn send(&mut self, msg: Message) {
        self.feed(msg).await;
        self.flush().await;
    }

    /// Writes what the machine has queued.
    pub async fn flush(&mut self) {
        if let Some(bytes) = self.conn.transmit() {
            self.write_raw(&bytes).await;
        }
    }

    pub async fn say(&mut self, text: &str) {
        self.send(Message::Send { text: text.into() }).await;
    }

    /// Encodes `msg` and writes it, whatever the rules say: for tests of
    /// what the server does with a rule broken.
    pub async fn send_raw(&mut self, msg: Message) {
        let frame = ChatCodec::new().frame(&msg).expect("encodable");
        self.write_raw(frame.as_bytes()).await;
    }

    /// Writes raw bytes, bypassing the machine.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        timeout(T, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// Reads once from the socket into `buf`; false at the end of stream.
    async fn read_into(stream: &mut TcpStream, buf: &mut bytes::BytesMut) -> bool {
        buf.reserve(16 * 1024);
        match timeout(T, stream.read_buf(buf))
            .await
            .expect("input in time")
        {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// The next event from the machine, as the message that carried it;
    /// `None` at the end of the stream. `Ping` is answered by the machine
    /// and never shown (see [`Client::recv_raw`]).
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            let event = self.conn.poll();
            // Answers (Pong) go out at once, as a real client's would.
            self.flush().await;
            match event {
                Ok(Some(event)) => return Some(message(event)),
                Ok(None) => {}
                Err(e) => panic!("{}: the server broke the protocol: {e}", self.addr),
            }
            if !Self::read_into(&mut self.stream, self.conn.input()).await {
                if let Err(e) = self.conn.eof() {
                    panic!("{}: stream ended badly: {e}", self.addr);
                }
                return None;
            }
        }
    }

    /// The next message; panics on end of stream.
    pub async fn recv(&mut self) -> Message {
        match self.next().await {
            Some(msg) => msg,
            None => panic!("{}: unexpected end of stream", self.addr),
        }
    }

    /// The next frame as it is on the wire, bypassing the machine (so a
    /// `Ping` is seen and not answered). Do not mix with [`Client::recv`]
    /// mid-stream.
    pub async fn recv_raw(&mut self) -> Message {
        let codec = ChatCodec::with_max_frame_len(self.conn.max_frame_in()).unwrap();
        loop {
            if let Some(msg) = codec.decode(&mut self.raw).expect("a valid frame") {
                return msg;
            }
            assert!(
                Self::read_into(&mut self.stream, &mut self.raw).await,
                "{}: unexpected end of stream",
                self.addr
            );
        }
    }

    /// The next message that is not a `Joined`/`Left` notice.
    pub async fn recv_skip_presence(&mut self) -> Message {
        loop {
            match self.recv().await {
                Message::Joined { .. } | Message::Left { .. } => continue,
                other => return other,
            }
        }
    }

    /// Expects a relay of `text` from `from`, skipping presence notices.
    pub async fn expect_relay(&mut self, from: SocketAddr, text: &str) {
        let got = self.recv_skip_presence().await;
        assert_eq!(got, Message::relay(from, text), "at {}", self.addr);
    }

    /// Expects the server to close: end of stream, nothing more.
    pub async fn expect_eof(&mut self) {
        if let Some(other) = self.next().await {
            panic!("{}: expected EOF, got {other:?}", self.addr);
        }
    }

    /// Expects `Error { reason }` (after any presence notices) and then
    /// the close.
    pub async fn expect_error(&mut self, reason: &str) {
        let got = self.recv_skip_presence().await;
        assert_eq!(
            got,
            Message::Error {
                reason: reason.into()
            },
            "at {}",
            self.addr
        );
        self.expect_eof().await;
    }

    /// Expects `Exit` (after any presence notices) and then the close.
    pub async fn expect_exit(&mut self) {
        let got = self.recv_skip_presence().await;
        assert_eq!(got, Message::Exit, "at {}", self.addr);
        self.expect_eof().await;
    }

    /// Waits until the server announces that `who` left.
    pub async fn expect_left(&mut self, who: SocketAddr) {
        self.expect_notice(left(who)).await;
    }

    /// Waits until the server announces that `who` joined.
    pub async fn expect_joined(&mut self, who: SocketAddr) {
        self.expect_notice(joined(who)).await;
    }

    /// Skips presence notices until `notice`; anything else is an error.
    async fn expect_notice(&mut self, notice: Message) {
        loop {
            match self.recv().await {
                msg if msg == notice => return,
                Message::Joined { .. } | Message::Left { .. } => continue,
                other => panic!("{}: expected {notice:?}, got {other:?}", self.addr),
            }
        }
    }
}

/// `Joined` of `who`.
pub fn joined(who: SocketAddr) -> Message {
    Message::Joined {
        ip: who.ip(),
        port: who.port(),
    }
}

/// `Left` of `who`.
pub fn left(who: SocketAddr) -> Message {
    Message::Left {
        ip: who.ip(),
        port: who.port(),
    }
}

/// The message an event reports.
fn message(event: Event) -> Message {
    match event {
        Event::Welcome(n) => Message::Welcome {
            version: n.version,
            features: n.features,
            max_frame: u32::try_from(n.max_frame).unwrap(),
            ip: n.addr.ip(),
            port: n.addr.port(),
        },
        Event::Message(msg) => msg,
        Event::Exit => Message::Exit,
        Event::Error(reason) => Message::Error { reason },
        other => panic!("a client machine reported {other:?}"),
    }
}

/// Two welcomed clients that prove the server still works for others.
pub struct Bystanders {
    pub a: Client,
    pub b: Client,
}

impl Bystanders {
    pub async fn join(server: SocketAddr) -> Self {
        let a = join(server).await;
        let b = join(server).await;
        Bystanders { a, b }
    }

    /// Both directions still relay, with the right sender.
    pub async fn still_talk(&mut self, tag: &str) {
        let (a, b) = (self.a.addr, self.b.addr);
        self.a.say(&format!("{tag}: still here")).await;
        self.b.expect_relay(a, &format!("{tag}: still here")).await;
        self.b.say(&format!("{tag}: 我也在")).await;
        self.a.expect_relay(b, &format!("{tag}: 我也在")).await;
    }
}
