use std::time::Duration;

use chat_proto::{ClientConfig, Connection, Event, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::*;
use crate::admission::{Admission, PerIp};
use crate::transport::Stream;

/// A `Send` with this text makes the session panic (unit tests only).
pub(crate) const PANIC: &str = "\u{0}panic";

const T: Duration = Duration::from_secs(10);

/// A minimal client on the protocol's client machine.
struct Client {
    stream: TcpStream,
    conn: Connection,
    addr: SocketAddr,
}

impl Client {
    async fn join(server: SocketAddr) -> Client {
        let stream = TcpStream::connect(server).await.unwrap();
        let addr = stream.local_addr().unwrap();
        let mut client = Client {
            stream,
            conn: Connection::client(ClientConfig::default()),
            addr,
        };
        client.flush().await;
        assert!(matches!(client.next().await, Some(Event::Welcome(_))));
        client
    }

    async fn flush(&mut self) {
        if let Some(bytes) = self.conn.transmit() {
            self.stream.write_all(&bytes).await.unwrap();
        }
    }

    async fn say(&mut self, text: &str) {
        self.conn
            .send(&Message::Send { text: text.into() })
            .unwrap();
        self.flush().await;
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.conn.poll().unwrap() {
                self.flush().await;
                return Some(event);
            }
            self.flush().await;
            let input = self.conn.input();
            input.reserve(4096);
            let read = timeout(T, self.stream.read_buf(input)).await;
            if read.expect("input in time").unwrap() == 0 {
                return None;
            }
        }
    }

    async fn recv(&mut self) -> Message {
        match self.next().await.expect("a message") {
            Event::Message(msg) => msg,
            Event::Exit => Message::Exit,
            other => panic!("{other:?}"),
        }
    }
}

fn joined(addr: SocketAddr) -> Message {
    Message::Joined {
        ip: addr.ip(),
        port: addr.port(),
    }
}

/// Every idle connection holds its session's future: keep it small. It
/// was 1,880 bytes while the goodbye's state was inline, then 1,080 while
/// the future also kept the arguments the session was built from, the
/// handshake's result and per-client copies of the flood limits. The task
/// around it, in a release build, is allocated in steps of 128 bytes, its
/// own header and trailer taking about 100: 1,536 a client then, 1,152
/// now. (It was 1,280 for a while: the accept loop spawned a block around
/// the session to hold the client's guards, which kept room for its
/// arguments beside the session; the guards are the session's now, in
/// `Admitted`.) 1,000 bytes keeps a margin within the 1,152 step.
#[tokio::test]
async fn an_idle_session_is_small() {
    let shared =
        Arc::new(Shared::new(Config::default(), None, None, CancellationToken::new()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    // What the accept loop spawns, guards and all.
    let admission = Admission::new(&shared.config);
    let slot = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
    let ip = PerIp::new(1).take(addr.ip()).unwrap();
    let admitted = Admitted::new(slot, ip, admission.on_close());
    let session = run(shared, stream, addr, admitted);
    let size = std::mem::size_of_val(&session);
    assert!(size <= 1_000, "a session's future takes {size} bytes");
}

#[test]
fn deadlines_never_overflow() {
    let now = Instant::now();
    assert!(after(now, Duration::MAX) > now + Duration::from_secs(3600));
    assert_eq!(
        after(now, Duration::from_secs(1)),
        now + Duration::from_secs(1)
    );
}

/// A session that panics still leaves the room: the others hear `Left`
/// and a newcomer's roster does not name it. (It used to stay a member,
/// silently, for ever.)
#[tokio::test]
async fn a_panicking_session_leaves_the_room() {
    let server = crate::Server::bind("127.0.0.1:0", Config::default())
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let mut a = Client::join(addr).await;
    let mut b = Client::join(addr).await;
    assert_eq!(a.recv().await, joined(b.addr));
    assert_eq!(b.recv().await, joined(a.addr));
    b.say(PANIC).await;
    assert_eq!(
        a.recv().await,
        Message::Left {
            ip: b.addr.ip(),
            port: b.addr.port()
        }
    );
    let mut c = Client::join(addr).await;
    a.say("after the panic").await;
    assert_eq!(c.recv().await, joined(a.addr), "the roster is a alone");
    assert_eq!(c.recv().await, Message::relay(a.addr, "after the panic"));
    drop((a, b, c));
    stop.send(()).unwrap();
    timeout(T, running).await.unwrap().unwrap().unwrap();
}

/// A whole conversation through the generic `AsyncRead + AsyncWrite`
/// adapter, as a TLS or WebSocket stream would be served.
#[tokio::test]
async fn a_session_runs_over_any_async_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared =
        Arc::new(Shared::new(Config::default(), None, None, CancellationToken::new()).unwrap());
    let pacer = tokio::spawn({
        let shared = shared.clone();
        async move { shared.hub.pace_presence().await }
    });
    let accepting = tokio::spawn({
        let shared = shared.clone();
        async move {
            let mut sessions = Vec::new();
            for _ in 0..2 {
                let (stream, peer) = listener.accept().await.unwrap();
                let session = serve(
                    shared.clone(),
                    Stream(stream),
                    peer,
                    None,
                    metrics::Transport::Tcp,
                );
                sessions.push(tokio::spawn(session));
            }
            for session in sessions {
                session.await.unwrap();
            }
        }
    });
    let mut a = Client::join(addr).await;
    let mut b = Client::join(addr).await;
    assert_eq!(a.recv().await, joined(b.addr));
    assert_eq!(b.recv().await, joined(a.addr));
    a.say("über den Adapter").await;
    assert_eq!(b.recv().await, Message::relay(a.addr, "über den Adapter"));
    b.conn.send(&Message::Ping { nonce: 9 }).unwrap();
    b.flush().await;
    assert_eq!(b.recv().await, Message::Pong { nonce: 9 });
    a.conn.exit().unwrap();
    a.flush().await;
    assert_eq!(a.recv().await, Message::Exit);
    assert_eq!(
        b.recv().await,
        Message::Left {
            ip: a.addr.ip(),
            port: a.addr.port()
        }
    );
    b.conn.exit().unwrap();
    b.flush().await;
    assert_eq!(b.recv().await, Message::Exit);
    timeout(T, accepting).await.unwrap().unwrap();
    pacer.abort();
}
