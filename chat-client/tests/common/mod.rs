//! Helpers shared by the integration tests: bounded awaits, an in-process
//! server, and the core of a scripted fake server (a server-role
//! `chat_proto::Connection` over one accepted socket).
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::{Connection, Event, Message, ServerConfig};
use chat_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Every await on the network is bounded: a hang fails the test instead.
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    within_secs(10, fut).await
}

/// [`within`] for tests that need longer (several clients reconnecting).
pub async fn within_secs<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s"))
}

/// A real server running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<Result<(), chat_server::Error>>,
}

/// Starts a server on an ephemeral loopback port.
pub async fn start(config: Config) -> Running {
    let server = Server::bind("127.0.0.1:0", config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

impl Running {
    /// Shuts the server down; it must end cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        within_secs(30, self.task).await.unwrap().unwrap();
    }
}

/// A listener on an ephemeral loopback port, and its address.
pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// One accepted client, seen through a server-role machine.
pub struct Fake {
    pub stream: TcpStream,
    pub conn: Connection,
    /// The client's address, as it sees itself.
    pub me: SocketAddr,
}

impl Fake {
    /// Accepts a client; nothing is read or sent yet.
    pub async fn accept_with(listener: &TcpListener, config: ServerConfig) -> Fake {
        let (stream, me) = within(listener.accept()).await.unwrap();
        // Many small frames, each awaited: no waiting for delayed ACKs.
        stream.set_nodelay(true).unwrap();
        Fake {
            stream,
            conn: Connection::server(config),
            me,
        }
    }

    /// The next event from the client; `None` once it has closed.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.conn.poll().expect("the client broke the protocol") {
                return Some(event);
            }
            self.flush().await;
            let read = within(self.stream.read_buf(self.conn.input())).await;
            if read.expect("read failed") == 0 {
                self.conn.eof().expect("the client closed mid-frame");
                return None;
            }
        }
    }

    /// The client's next message; it must be one.
    pub async fn recv(&mut self) -> Message {
        match self.next().await {
            Some(Event::Message(msg)) => msg,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Sends a message the server role may send.
    pub async fn send(&mut self, msg: Message) {
        self.conn.send(&msg).unwrap();
        self.flush().await;
    }

    /// Writes what the machine has queued.
    pub async fn flush(&mut self) {
        if let Some(bytes) = self.conn.transmit() {
            within(self.stream.write_all(&bytes)).await.unwrap();
        }
    }
}
