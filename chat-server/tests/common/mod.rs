//! Helpers shared by the integration tests: an in-process server and a
//! framed client, every await bounded by a timeout.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::{ChatCodec, Message};
use chat_server::{Config, Server};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::codec::Framed;

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

/// Config for tests: default limits, short timers where a test waits on them.
pub fn config() -> Config {
    Config {
        close_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    }
}

pub type Conn = Framed<TcpStream, ChatCodec>;

/// A connected client.
pub struct Client {
    pub io: Conn,
    /// This client's address, as the server will report it.
    pub addr: SocketAddr,
}

/// A raw connection, no handshake.
pub async fn connect(server: SocketAddr) -> Client {
    let stream = timeout(T, TcpStream::connect(server))
        .await
        .expect("connect in time")
        .expect("connect");
    let addr = stream.local_addr().unwrap();
    Client {
        io: Framed::new(stream, ChatCodec::new()),
        addr,
    }
}

/// A connected and welcomed client.
pub async fn join(server: SocketAddr) -> Client {
    let mut client = connect(server).await;
    client.send(Message::hello()).await;
    client.welcomed().await;
    client
}

impl Client {
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

    pub async fn send(&mut self, msg: Message) {
        timeout(T, self.io.send(msg))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// Queues a message without flushing.
    pub async fn feed(&mut self, msg: Message) {
        timeout(T, self.io.feed(msg))
            .await
            .expect("feed in time")
            .expect("feed");
    }

    pub async fn flush(&mut self) {
        timeout(T, SinkExt::<Message>::flush(&mut self.io))
            .await
            .expect("flush in time")
            .expect("flush");
    }

    pub async fn say(&mut self, text: &str) {
        self.send(Message::Send { text: text.into() }).await;
    }

    /// Writes raw bytes, bypassing the codec.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        let stream = self.io.get_mut();
        timeout(T, stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// The next message; panics on end of stream or error.
    pub async fn recv(&mut self) -> Message {
        match timeout(T, self.io.next()).await.expect("a message in time") {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => panic!("{}: read failed: {e}", self.addr),
            None => panic!("{}: unexpected end of stream", self.addr),
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
        match timeout(T, self.io.next()).await.expect("EOF in time") {
            None => {}
            Some(other) => panic!("{}: expected EOF, got {other:?}", self.addr),
        }
    }

    /// Expects `Error { reason }` and then the close.
    pub async fn expect_error(&mut self, reason: &str) {
        let got = self.recv().await;
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

    /// Expects `Exit` and then the close.
    pub async fn expect_exit(&mut self) {
        assert_eq!(self.recv().await, Message::Exit, "at {}", self.addr);
        self.expect_eof().await;
    }

    /// Waits until the server announces that `who` left.
    pub async fn expect_left(&mut self, who: SocketAddr) {
        loop {
            match self.recv().await {
                Message::Left { ip, port } if (ip, port) == (who.ip(), who.port()) => return,
                Message::Joined { .. } | Message::Left { .. } => continue,
                other => panic!("{}: expected Left of {who}, got {other:?}", self.addr),
            }
        }
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
        let mut b = join(server).await;
        let _ = &mut b;
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
