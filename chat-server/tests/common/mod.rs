//! Helpers shared by the integration tests: an in-process server and a test
//! client driven by `chat_proto::Connection` in the client role (the same
//! handshake and rules as every other client), every await bounded by a
//! timeout.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::{
    ChatCodec, ClientConfig, Connection, Event, HEADER_LEN, MAX_FRAME_LEN_CEILING, Member, Message,
    RELAY_OVERHEAD, Refusal, RoomInfo, features,
};
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
        Self::running(Server::bind(bind, config).await.expect("bind"))
    }

    /// Runs a bound server.
    pub fn running(server: Server) -> Self {
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
    /// The name the server gave this client (ROOMS clients), else empty.
    pub name: String,
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
        Self::over_with(stream, ClientConfig::default())
    }

    /// A client with `config` over a connected stream, its `Hello` queued.
    pub fn over_with(stream: TcpStream, config: ClientConfig) -> Self {
        let addr = stream.local_addr().unwrap();
        let mut conn = Connection::client(config);
        let hello = conn.transmit();
        Client {
            stream,
            conn,
            addr,
            raw: bytes::BytesMut::new(),
            hello,
            name: String::new(),
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

// ---- Names, rooms and direct messages (the ROOMS capability) ----

/// The room every client starts in.
pub const LOBBY: &str = "lobby";

/// A client configuration that asks for the ROOMS capability.
pub fn rooms() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.features = features::ROOMS;
    config
}

/// A connection with `config` whose `Hello` is queued but not sent.
pub async fn connect_with(server: SocketAddr, config: ClientConfig) -> Client {
    let stream = timeout(T, TcpStream::connect(server))
        .await
        .expect("connect in time")
        .expect("connect");
    Client::over_with(stream, config)
}

/// A ROOMS client, welcomed with the capability, that has not sent `Nick`.
pub async fn welcomed_rooms(server: SocketAddr) -> Client {
    let mut client = connect_with(server, rooms()).await;
    client.hello().await;
    match client.welcomed().await {
        Message::Welcome { features, .. } => assert_eq!(features, features::ROOMS),
        _ => unreachable!(),
    }
    client
}

/// A ROOMS client that asked for `asked` and got it (its NFC form), and
/// the lobby's roster it was given (itself last).
pub async fn named(server: SocketAddr, asked: &str) -> (Client, Vec<Member>) {
    let mut client = welcomed_rooms(server).await;
    client.nick(asked).await;
    let name = client.expect_named().await;
    assert!(!name.is_empty());
    let roster = client.roster(LOBBY).await;
    assert_eq!(roster.last(), Some(&client.me()), "the newcomer comes last");
    (client, roster)
}

/// ROOMS clients named `names`, in that order, each in the lobby; every
/// earlier one has taken the `Entered` of every later one, so all queues
/// are empty.
pub async fn crowd(server: SocketAddr, names: &[&str]) -> Vec<Client> {
    let mut all: Vec<Client> = Vec::new();
    for name in names {
        let (client, roster) = named(server, name).await;
        let before: Vec<Member> = all.iter().map(Client::me).collect();
        assert_eq!(roster[..roster.len() - 1], before[..], "the lobby's roster");
        for other in &mut all {
            other.expect(entered(LOBBY, &client.me())).await;
        }
        all.push(client);
    }
    all
}

impl Client {
    /// This client as others see it.
    pub fn me(&self) -> Member {
        Member::new(self.name.clone(), self.addr)
    }

    /// The frame limit `L` of the server (what `Welcome` implies).
    pub fn server_limit(&self) -> usize {
        self.conn.negotiated().expect("welcomed").max_frame + RELAY_OVERHEAD
    }

    pub async fn nick(&mut self, name: &str) {
        self.send(Message::Nick { name: name.into() }).await;
    }

    pub async fn join_room(&mut self, room: &str) {
        self.send(Message::Join { room: room.into() }).await;
    }

    pub async fn part(&mut self, room: &str) {
        self.send(Message::Part { room: room.into() }).await;
    }

    pub async fn say_in(&mut self, room: &str, text: &str) {
        self.send(Message::Say {
            room: room.into(),
            text: text.into(),
        })
        .await;
    }

    pub async fn tell(&mut self, name: &str, text: &str) {
        self.send(Message::Tell {
            name: name.into(),
            text: text.into(),
        })
        .await;
    }

    pub async fn who(&mut self, room: &str) {
        self.send(Message::Who { room: room.into() }).await;
    }

    /// Expects exactly `msg` next.
    pub async fn expect(&mut self, msg: Message) {
        let got = self.recv().await;
        assert_eq!(got, msg, "at {} ({})", self.addr, self.name);
    }

    /// Expects `Named`, and keeps the name.
    pub async fn expect_named(&mut self) -> String {
        match self.recv().await {
            Message::Named { name } => {
                self.name = name.clone();
                name
            }
            other => panic!("{}: expected Named, got {other:?}", self.addr),
        }
    }

    /// Expects `Refused` with `code` about `subject`; returns the detail.
    pub async fn expect_refused(&mut self, code: Refusal, subject: &str) -> String {
        match self.recv().await {
            Message::Refused {
                code: got,
                subject: got_subject,
                detail,
            } => {
                assert_eq!((got, got_subject.as_str()), (code, subject), "{detail}");
                assert!(!detail.is_empty(), "a refusal says why");
                detail
            }
            other => panic!(
                "{} ({}): expected Refused {code:?}, got {other:?}",
                self.addr, self.name
            ),
        }
    }

    /// Joins `room` and expects its roster (which it returns), this client
    /// last.
    pub async fn enter(&mut self, room: &str) -> Vec<Member> {
        self.join_room(room).await;
        let roster = self.roster(room).await;
        assert_eq!(roster.last(), Some(&self.me()), "the joiner comes last");
        roster
    }

    /// Parts `room` and expects its own `Departed`.
    pub async fn leave(&mut self, room: &str) {
        self.part(room).await;
        let me = self.me();
        self.expect(departed(room, &me)).await;
    }

    /// The next messages, a `Roster` of `room` (in any case: the room keeps
    /// its creator's spelling) in one or more frames; each
    /// frame within the server's limit. The members, assembled.
    pub async fn roster(&mut self, room: &str) -> Vec<Member> {
        let mut all = Vec::new();
        loop {
            let msg = self.recv().await;
            self.within_limit(&msg);
            match msg {
                Message::Roster {
                    room: got,
                    members,
                    more,
                } if got.to_lowercase() == room.to_lowercase() => {
                    all.extend(members);
                    if !more {
                        return all;
                    }
                }
                other => panic!(
                    "{} ({}): expected the Roster of {room}, got {other:?}",
                    self.addr, self.name
                ),
            }
        }
    }

    /// Sends `ListRooms` and returns the answer, assembled.
    pub async fn list_rooms(&mut self) -> Vec<RoomInfo> {
        self.send(Message::ListRooms).await;
        let mut all = Vec::new();
        loop {
            let msg = self.recv().await;
            self.within_limit(&msg);
            match msg {
                Message::Rooms { rooms, more } => {
                    all.extend(rooms);
                    if !more {
                        return all;
                    }
                }
                other => panic!("{}: expected Rooms, got {other:?}", self.addr),
            }
        }
    }

    /// Panics unless `msg` fits the server's frame limit `L` (rosters and
    /// room lists are split to fit it).
    fn within_limit(&self, msg: &Message) {
        let codec = ChatCodec::with_max_frame_len(MAX_FRAME_LEN_CEILING).unwrap();
        let len = codec.frame(msg).unwrap().as_bytes().len() - HEADER_LEN;
        assert!(
            len <= self.server_limit(),
            "a {}-byte {} frame, over L = {}",
            len,
            msg.name(),
            self.server_limit()
        );
    }
}

pub fn entered(room: &str, member: &Member) -> Message {
    Message::Entered {
        room: room.into(),
        member: member.clone(),
    }
}

pub fn departed(room: &str, member: &Member) -> Message {
    Message::Departed {
        room: room.into(),
        member: member.clone(),
    }
}

pub fn said(room: &str, from: &Member, text: &str) -> Message {
    Message::Said {
        room: room.into(),
        from: from.clone(),
        text: text.into(),
    }
}

pub fn told(from: &Member, text: &str) -> Message {
    Message::Told {
        from: from.clone(),
        text: text.into(),
    }
}

pub fn renamed(old: &str, member: &Member) -> Message {
    Message::Renamed {
        old: old.into(),
        member: member.clone(),
    }
}

pub fn info(name: &str, members: u32) -> RoomInfo {
    RoomInfo {
        name: name.into(),
        members,
    }
}

// ---- History (the HISTORY capability) ----

/// A client configuration that asks for ROOMS and HISTORY.
pub fn historic() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.features = features::ROOMS | features::HISTORY;
    config
}

/// A HISTORY client called `name`, in the lobby, its roster taken.
pub async fn historian(server: SocketAddr, name: &str) -> Client {
    let mut client = connect_with(server, historic()).await;
    client.hello().await;
    match client.welcomed().await {
        Message::Welcome { features: got, .. } => {
            assert_eq!(got, features::ROOMS | features::HISTORY)
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    client.nick(name).await;
    assert_eq!(client.expect_named().await, name);
    client.roster(LOBBY).await;
    client
}

// ---- The binary ----

/// Starts `command` (the chat-server binary, or a shell that execs it),
/// its stdout piped, and reads its `listening on ADDR` line.
pub async fn listening(
    mut command: tokio::process::Command,
) -> (tokio::process::Child, SocketAddr) {
    let mut child = command
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let addr = listening_on(&mut child).await;
    (child, addr)
}

/// The address in the `listening on ADDR` line a started server prints
/// first (its stdout is taken).
pub async fn listening_on(child: &mut tokio::process::Child) -> SocketAddr {
    use tokio::io::AsyncBufReadExt;
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    timeout(T, stdout.read_line(&mut line))
        .await
        .expect("listening line in time")
        .unwrap();
    line.trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap()
}
