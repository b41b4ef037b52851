//! Connecting, and the handles a caller holds afterwards.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::{ClientConfig, Connection, Conversation, Message, features, secret_may_travel};
use tokio::net::ToSocketAddrs;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::driver::{Command, Driver, named, welcome};
use crate::error::Error;
use crate::event::{Event, Inbox, Shared};
use crate::history::{History, Marks};
use crate::login::{Account, Login};
use crate::transport::{TlsOptions, dial};

/// How many commands may wait for the driver before `send` waits too.
const COMMAND_QUEUE: usize = 64;
/// How many events may wait for the reader before the driver stops reading
/// the socket (TCP then pushes back on the server).
const EVENT_QUEUE: usize = 256;

/// How [`Client::connect_with`] connects: the name to ask for, whether to
/// ask for names and rooms at all, timeouts and limits.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let mut options = chat_client::Options::default();
/// options.name = Some("李雷".into());
/// options.exit_timeout = Duration::from_secs(1);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The name to ask for; `None` lets the server pick one (`guest-N`).
    /// If the name is taken or invalid the server picks one anyway: the
    /// session starts with the picked name in [`Session::name`] and an
    /// [`Event::Refused`] saying why as the first event. Unused when
    /// `rooms` is off, and when `login` is set (the account names us).
    pub name: Option<String>,
    /// Log in to an account (or register one) instead of connecting as a
    /// guest (turns `rooms` on, which accounts need). Default: none, a
    /// guest; a server that takes no guests then refuses with
    /// [`Error::Login`] and `Refusal::AuthRequired`. If the server refuses, connecting fails with
    /// [`Error::Login`]; if it keeps no accounts, with
    /// [`Error::NoAccount`]. On success [`Session::account`] holds the
    /// token to log in with next time.
    pub login: Option<Login>,
    /// Ask for names, rooms and direct messages (the `ROOMS` capability).
    /// Default `true`; `false` makes a version 1 client, which sees the
    /// seed's one room and peers by address. A server that does not offer
    /// the capability also gives a version 1 session ([`Session::rooms`]).
    pub rooms: bool,
    /// Ask for durable history too (the `HISTORY` capability; only with
    /// `rooms`). Default `true`. A server that offers it numbers every
    /// message: see [`Session::history`] and [`Event::Posted`].
    pub history: bool,
    /// With history: the last id per conversation from a previous
    /// connection ([`Events::marks`] at its end). The library resumes each
    /// room from its mark once it is in it again (after the caller's
    /// [`Sender::join`], or at once for the lobby), and each direct
    /// conversation right after connecting, delivering what was missed as
    /// [`Event::Page`]s: no duplicate, no gap, or a page with `missing`
    /// when the start is no longer kept. Default: none.
    pub resume: Marks,
    /// With history: on entering a room that has no mark, ask for its last
    /// `recent` messages (an [`Event::Page`]); 0, the default, asks nothing.
    pub recent: u32,
    /// Longest wait for the TCP connection (per address tried).
    pub connect_timeout: Duration,
    /// Longest wait for the server's `Welcome` once connected, and its
    /// `Named` after that.
    pub handshake_timeout: Duration,
    /// Longest wait for the server to acknowledge our `Exit`.
    pub exit_timeout: Duration,
    /// Connect with TLS, trusting what this says; `None` (the default):
    /// plaintext. The TLS handshake must end within `handshake_timeout`.
    pub tls: Option<TlsOptions>,
    /// Most entries held for `Roster` and `Rooms` answers still coming in
    /// several frames (one answer, or several at once, together); a server
    /// that sends more ends the session with [`Error::TooMany`]. Default
    /// 1,000,000.
    pub max_listed: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: None,
            login: None,
            rooms: true,
            history: true,
            resume: Marks::new(),
            recent: 0,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            exit_timeout: Duration::from_secs(5),
            max_listed: 1_000_000,
            tls: None,
        }
    }
}

/// What the handshake settled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// The server's address (the one the connection reached).
    pub server: SocketAddr,
    /// This client's address as the server sees it: what peers are shown.
    pub me: SocketAddr,
    /// Longest text the server accepts, in bytes of UTF-8: what a `Send`
    /// within the `Welcome`'s `max_frame` can carry
    /// ([`chat_proto::Connection::max_text_len`]; 65,512 on a default
    /// server). [`Sender::send`] refuses longer texts locally.
    pub max_text_len: usize,
    /// Protocol version in force.
    pub version: u16,
    /// Capabilities in force (a bit set of `chat_proto::features`).
    pub features: u64,
    /// Whether names, rooms and direct messages are in force (the `ROOMS`
    /// capability). Without them the session is a version 1 one: one room,
    /// peers known by address, and the requests of names and rooms
    /// ([`Sender::join`] and the like) fail with [`Error::Unsupported`].
    pub rooms: bool,
    /// Whether durable history is in force (the `HISTORY` capability):
    /// messages carry ids ([`Event::Posted`], [`Event::Direct`]), our own are
    /// acknowledged ([`Event::Stored`]), and [`Sender::resume`] and
    /// [`Sender::recent`] work.
    pub history: bool,
    /// The name the server gave us when we connected: the one asked for in
    /// [`Options::name`], or one it picked. `None` on a version 1 session.
    /// [`Sender::name`] follows later renames.
    pub name: Option<String>,
    /// The account we are logged in to, with the token for next time
    /// ([`Options::login`]); `None` for a guest.
    pub account: Option<Account>,
}

/// A connected chat client.
///
/// Connecting performs the handshake and starts a driver task that owns the
/// socket and drives chat-proto's protocol machine: it writes what
/// [`Sender`]s ask for, answers the server's `Ping`s, and passes everything
/// else on as [`Event`]s. Use the client as is, or
/// [`split`](Client::split) it to send and receive from different tasks.
///
/// # Examples
///
/// ```no_run
/// use chat_client::{Client, Event};
///
/// # async fn demo() -> Result<(), chat_client::Error> {
/// let client = Client::connect("127.0.0.1:8080").await?;
/// let session = client.session();
/// match &session.name {
///     Some(name) => println!("connected as {name} ({})", session.me),
///     None => println!("connected as {} (version 1: no names or rooms)", session.me),
/// }
/// let (sender, mut events) = client.split();
///
/// sender.send("hello, 你好").await?;
/// while let Some(event) = events.next_event().await? {
///     match event {
///         // Names and rooms.
///         Event::Said { room, from, text } => println!("#{room} <{}> {text}", from.name),
///         Event::Entered { room, member } => println!("#{room} * {} entered", member.name),
///         Event::Departed { room, member } => println!("#{room} * {} left", member.name),
///         Event::Refused { code, subject, detail } => println!("! {code} ({subject}): {detail}"),
///         // Version 1.
///         Event::Message { from, text } => println!("[{from}] {text}"),
///         Event::Joined(who) => println!("* {who} joined"),
///         Event::Left(who) => println!("* {who} left"),
///         Event::ServerError(reason) => println!("! server: {reason}"),
///         Event::ServerExit => break,
///         _ => {}
///     }
/// }
/// sender.exit().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Client {
    sender: Sender,
    events: Events,
}

impl Client {
    /// Connects to `addr` (`"host:port"`, `"127.0.0.1:8080"`, `"[::1]:8080"`
    /// or a `SocketAddr`) with default [`Options`] and performs the handshake:
    /// names and rooms if the server offers them, with a name it picks.
    ///
    /// Must be called inside a tokio runtime: it spawns the driver task.
    ///
    /// # Errors
    ///
    /// [`Error::Resolve`], [`Error::Refused`] or [`Error::Connect`] if no
    /// connection could be made; [`Error::Rejected`] if the server said no;
    /// [`Error::Timeout`], [`Error::ServerClosed`], [`Error::Decode`],
    /// [`Error::Protocol`] or [`Error::Io`] if the handshake went wrong;
    /// [`Error::TooLong`] if [`Options::name`] is too long to send at all.
    /// With [`Options::tls`]: [`Error::Tls`] if the TLS handshake failed
    /// (an untrusted, expired or wrongly named certificate, ...),
    /// [`Error::NotTls`] if the server answered in plaintext. A plaintext
    /// client on a TLS port gets [`Error::Rejected`] saying so.
    /// A name the server refuses is not an error (see [`Options::name`]).
    pub async fn connect<A>(addr: A) -> Result<Client, Error>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        Client::connect_with(addr, Options::default()).await
    }

    /// [`connect`](Client::connect) with chosen [`Options`].
    ///
    /// # Errors
    ///
    /// As [`connect`](Client::connect).
    pub async fn connect_with<A>(addr: A, options: Options) -> Result<Client, Error>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let shown = addr.to_string();
        let tls = options.tls.as_ref();
        let waits = (options.connect_timeout, options.handshake_timeout);
        let mut stream = dial(addr, &shown, waits.0, tls, waits.1).await?;
        let server = stream.peer_addr()?;
        // Before the Hello: nothing is sent to a server a secret may not go to.
        if options.login.is_some() && !secret_may_travel(server.ip(), options.tls.is_some()) {
            return Err(Error::Insecure { addr: server });
        }
        // The machine keeps whatever arrives right behind the Welcome (or
        // Named) in its input buffer, and goes on to the driver with it.
        let mut config = ClientConfig::default();
        if options.rooms || options.login.is_some() {
            // AUTH even for a guest: a server that takes no guests then says
            // so with a refusal a caller can act on (`Error::Login` with
            // `AuthRequired`), not a closed connection.
            config.features = features::ROOMS | features::AUTH;
            if options.history {
                config.features |= features::HISTORY;
            }
        }
        let mut conn = Connection::client(config);
        let waited = options.handshake_timeout;
        let deadline = Instant::now() + waited;
        let late = |waiting_for| Error::Timeout {
            waiting_for,
            after: waited,
        };
        let negotiated = timeout_at(deadline, welcome(&mut stream, &mut conn))
            .await
            .map_err(|_| late("the server's Welcome"))??;
        let rooms = negotiated.has(features::ROOMS);
        let history = negotiated.has(features::HISTORY);
        let own = Shared::default();
        let seam = history.then(|| History::new(&options.resume, options.recent));
        let mut inbox = Inbox::new(negotiated.addr, own.clone(), options.max_listed, seam);
        let first = match &options.login {
            Some(login) if negotiated.has(features::AUTH) => login.message(),
            Some(login) => {
                return Err(Error::NoAccount {
                    request: login.message().name(),
                    why: "the server keeps none (it does not offer the AUTH capability)",
                });
            }
            None => Message::Nick {
                name: options.name.clone().unwrap_or_default(),
            },
        };
        let (name, account) = if rooms {
            let (name, logged_in) =
                timeout_at(deadline, named(&mut stream, &mut conn, &mut inbox, &first))
                    .await
                    .map_err(|_| late("the server's Named"))??;
            let account = logged_in.map(|l| Account {
                name: l.name,
                // An empty token: the one we logged in with stays valid.
                token: match (&options.login, l.token.is_empty()) {
                    (Some(Login::Token(token)), true) => token.clone(),
                    _ => l.token,
                },
                expires: l.expires,
            });
            (Some(name), account)
        } else {
            (None, None)
        };
        let session = Session {
            server,
            me: negotiated.addr,
            max_text_len: conn.max_text_len(),
            version: negotiated.version,
            features: negotiated.features,
            rooms,
            history,
            name,
            account,
        };

        let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let driver = Driver::new(
            (stream, conn),
            inbox,
            command_rx,
            event_tx,
            options.exit_timeout,
        );
        tokio::spawn(driver.run());
        Ok(Client {
            sender: Sender {
                commands: command_tx,
                session,
                own,
            },
            events: Events {
                rx: event_rx,
                marks: options.resume,
            },
        })
    }

    /// What the handshake settled: addresses, limits, our first name.
    pub fn session(&self) -> &Session {
        &self.sender.session
    }

    /// Our name now. See [`Sender::name`].
    pub fn name(&self) -> Option<String> {
        self.sender.name()
    }

    /// The rooms we are in now. See [`Sender::rooms`].
    pub fn rooms(&self) -> Vec<String> {
        self.sender.rooms()
    }

    /// Asks to be called `name`. See [`Sender::nick`].
    ///
    /// # Errors
    ///
    /// As [`Sender::nick`].
    pub async fn nick(&self, name: impl Into<String>) -> Result<(), Error> {
        self.sender.nick(name).await
    }

    /// Enters `room`. See [`Sender::join`].
    ///
    /// # Errors
    ///
    /// As [`Sender::join`].
    pub async fn join(&self, room: impl Into<String>) -> Result<(), Error> {
        self.sender.join(room).await
    }

    /// Leaves `room`. See [`Sender::part`].
    ///
    /// # Errors
    ///
    /// As [`Sender::part`].
    pub async fn part(&self, room: impl Into<String>) -> Result<(), Error> {
        self.sender.part(room).await
    }

    /// Says `text` in `room`. See [`Sender::say`].
    ///
    /// # Errors
    ///
    /// As [`Sender::say`].
    pub async fn say(
        &self,
        room: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<u64, Error> {
        self.sender.say(room, text).await
    }

    /// Sends `text` to `name` only. See [`Sender::tell`].
    ///
    /// # Errors
    ///
    /// As [`Sender::tell`].
    pub async fn tell(
        &self,
        name: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<u64, Error> {
        self.sender.tell(name, text).await
    }

    /// Asks who is in `room`. See [`Sender::who`].
    ///
    /// # Errors
    ///
    /// As [`Sender::who`].
    pub async fn who(&self, room: impl Into<String>) -> Result<(), Error> {
        self.sender.who(room).await
    }

    /// Asks which rooms exist. See [`Sender::list_rooms`].
    ///
    /// # Errors
    ///
    /// As [`Sender::list_rooms`].
    pub async fn list_rooms(&self) -> Result<(), Error> {
        self.sender.list_rooms().await
    }

    /// Sends `text` to the lobby. See [`Sender::send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    pub async fn send(&self, text: impl Into<String>) -> Result<u64, Error> {
        self.sender.send(text).await
    }

    /// Asks for stored messages of `conversation` after `after`. See
    /// [`Sender::resume`].
    ///
    /// # Errors
    ///
    /// As [`Sender::resume`].
    pub async fn resume(
        &self,
        conversation: Conversation,
        after: u64,
        limit: u32,
    ) -> Result<(), Error> {
        self.sender.resume(conversation, after, limit).await
    }

    /// Asks for the last `count` messages of `conversation`. See
    /// [`Sender::recent`].
    ///
    /// # Errors
    ///
    /// As [`Sender::recent`].
    pub async fn recent(&self, conversation: Conversation, count: u32) -> Result<(), Error> {
        self.sender.recent(conversation, count).await
    }

    /// Where the events read so far have reached. See [`Events::marks`].
    pub fn marks(&self) -> &Marks {
        self.events.marks()
    }

    /// The next event from the server. See [`Events::next_event`].
    ///
    /// # Errors
    ///
    /// As [`Events::next_event`].
    pub async fn next_event(&mut self) -> Result<Option<Event>, Error> {
        self.events.next_event().await
    }

    /// Leaves gracefully, discarding events not yet read (split first to
    /// read them). See [`Sender::exit`].
    ///
    /// # Errors
    ///
    /// As [`Sender::exit`].
    pub async fn exit(self) -> Result<(), Error> {
        drop(self.events);
        self.sender.exit().await
    }

    /// Splits the client so one task can send while another receives.
    pub fn split(self) -> (Sender, Events) {
        (self.sender, self.events)
    }
}

/// The sending half: cheap to clone, usable from any task.
///
/// Dropping every `Sender` leaves the chat as [`exit`](Sender::exit) does;
/// the [`Events`] then end once the server has acknowledged.
#[derive(Debug, Clone)]
pub struct Sender {
    commands: mpsc::Sender<Command>,
    session: Session,
    own: Shared,
}

impl Sender {
    /// Sends `text` to every other client in the lobby (on a version 1
    /// session, the one room); returns once it is written to the socket.
    /// With names and rooms it is [`say`](Sender::say) in the lobby.
    ///
    /// Returns the request's number: with history, the [`Event::Stored`]
    /// or [`Event::Unstored`] that answers it carries it (`say`, `tell`
    /// and `send` count 1, 2, 3, ... together); 0 without history.
    ///
    /// # Errors
    ///
    /// [`Error::TooLong`] if the server would refuse the text (nothing is
    /// sent, the session goes on); [`Error::Disconnected`] if the session has
    /// ended or is ending; [`Error::Io`] if the write failed.
    pub async fn send(&self, text: impl Into<String>) -> Result<u64, Error> {
        self.request(Message::Send { text: text.into() }).await
    }

    /// Asks to be called `name` from now on. The answer is an
    /// [`Event::Renamed`] (to us and to everyone who shares a room with us),
    /// or an [`Event::Refused`] if the name is taken or invalid.
    ///
    /// The requests of names and rooms return once the request is written;
    /// the answer comes as an event.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on a version 1 session; otherwise as
    /// [`send`](Sender::send).
    pub async fn nick(&self, name: impl Into<String>) -> Result<(), Error> {
        self.rooms_request(Message::Nick { name: name.into() })
            .await
            .map(drop)
    }

    /// Enters `room`, creating it if nobody is in it. The answer is an
    /// [`Event::Roster`] of the room, with us last (and an
    /// [`Event::Entered`] to the others), or an [`Event::Refused`].
    ///
    /// # Errors
    ///
    /// As [`nick`](Sender::nick).
    pub async fn join(&self, room: impl Into<String>) -> Result<(), Error> {
        self.rooms_request(Message::Join { room: room.into() })
            .await
            .map(drop)
    }

    /// Leaves `room`. The answer is an [`Event::Departed`] with us as the
    /// member (everyone in the room gets it), or an [`Event::Refused`].
    ///
    /// # Errors
    ///
    /// As [`nick`](Sender::nick).
    pub async fn part(&self, room: impl Into<String>) -> Result<(), Error> {
        self.rooms_request(Message::Part { room: room.into() })
            .await
            .map(drop)
    }

    /// Says `text` to the other members of `room`, a room we are in (there
    /// is no echo; an [`Event::Refused`] if we are not in it, or with
    /// history an [`Event::Unstored`]). Returns the request's number, as
    /// [`send`](Sender::send) does.
    ///
    /// # Errors
    ///
    /// As [`nick`](Sender::nick); [`Error::TooLong`] if the text is longer
    /// than fits beside the room's name ([`Session::max_text_len`] minus a
    /// little).
    pub async fn say(
        &self,
        room: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<u64, Error> {
        self.rooms_request(Message::Say {
            room: room.into(),
            text: text.into(),
        })
        .await
    }

    /// Sends `text` to whoever is called `name` (compared as the server
    /// does, ignoring case), and to nobody else: it arrives as an
    /// [`Event::Told`]. An [`Event::Refused`] if nobody has that name, if
    /// its holder is a version 1 client, or if we send too many too fast
    /// (with history: an [`Event::Direct`], and [`Event::Unstored`] for
    /// those). Returns the request's number, as [`send`](Sender::send) does.
    ///
    /// # Errors
    ///
    /// As [`say`](Sender::say).
    pub async fn tell(
        &self,
        name: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<u64, Error> {
        self.rooms_request(Message::Tell {
            name: name.into(),
            text: text.into(),
        })
        .await
    }

    /// Asks who is in `room` (we need not be in it). The answer is an
    /// [`Event::Roster`], or an [`Event::Refused`] if there is no such room.
    ///
    /// # Errors
    ///
    /// As [`nick`](Sender::nick).
    pub async fn who(&self, room: impl Into<String>) -> Result<(), Error> {
        self.rooms_request(Message::Who { room: room.into() })
            .await
            .map(drop)
    }

    /// Asks which rooms exist. The answer is an [`Event::Rooms`].
    ///
    /// # Errors
    ///
    /// As [`nick`](Sender::nick).
    pub async fn list_rooms(&self) -> Result<(), Error> {
        self.rooms_request(Message::ListRooms).await.map(drop)
    }

    /// With history: asks for the stored messages of `conversation` (a room
    /// we are in, or the direct conversation with a name) with an id above
    /// `after` (0: from the start), oldest first, at most `limit` of them
    /// (0: all there are). The answer comes as [`Event::Page`]s, every
    /// entry the server sends; the library asks for the next page itself
    /// until `limit` or the latest message is reached, and holds the
    /// conversation's live messages meanwhile, so none is lost or doubled.
    /// An [`Event::Refused`] (`NotInRoom`, `NoSuchName`) if it cannot be
    /// read.
    ///
    /// Resuming after a reconnect needs no call: see [`Options::resume`].
    ///
    /// # Errors
    ///
    /// [`Error::NoHistory`] without history; otherwise as
    /// [`send`](Sender::send).
    pub async fn resume(
        &self,
        conversation: Conversation,
        after: u64,
        limit: u32,
    ) -> Result<(), Error> {
        self.history_request(Message::Resume {
            conversation,
            after,
            limit,
        })
        .await
    }

    /// With history: asks for the last `count` stored messages of
    /// `conversation` (0: the server's page size), oldest first, as
    /// [`resume`](Sender::resume) does: every entry comes, even those
    /// already delivered.
    ///
    /// # Errors
    ///
    /// As [`resume`](Sender::resume).
    pub async fn recent(&self, conversation: Conversation, count: u32) -> Result<(), Error> {
        self.history_request(Message::Recent {
            conversation,
            count,
        })
        .await
    }

    /// A request of history: refused here without it.
    async fn history_request(&self, msg: Message) -> Result<(), Error> {
        if !self.session.history {
            return Err(Error::NoHistory {
                request: msg.name(),
            });
        }
        self.request(msg).await.map(drop)
    }

    /// Our name now: [`Session::name`] at first, then whatever the server
    /// last said (a [`Event::Renamed`] of ours, or a later
    /// [`Event::Named`]). `None` on a version 1 session.
    ///
    /// It follows the server's messages as the driver takes them, which
    /// may be ahead of the events read so far (up to the event queue): the
    /// name to ask for again when reconnecting.
    pub fn name(&self) -> Option<String> {
        self.own.lock().name.clone()
    }

    /// The rooms we are in now, in the order we entered them, as the
    /// server last said: a room is added by a [`Event::Roster`] that lists
    /// us (after [`join`](Sender::join); the lobby's comes first), and
    /// removed by our own [`Event::Departed`]. Empty on a version 1 session.
    /// Like [`name`](Sender::name), it may be ahead of the events read.
    pub fn rooms(&self) -> Vec<String> {
        self.own.lock().rooms.clone()
    }

    /// A request of names and rooms: refused here on a version 1 session.
    async fn rooms_request(&self, msg: Message) -> Result<u64, Error> {
        if !self.session.rooms {
            return Err(Error::Unsupported {
                request: msg.name(),
            });
        }
        self.request(msg).await
    }

    /// Hands `msg` to the driver and waits until it is written; its number.
    async fn request(&self, msg: Message) -> Result<u64, Error> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Send { msg, done })
            .await
            .map_err(|_| Error::Disconnected)?;
        result.await.map_err(|_| Error::Disconnected)?
    }

    /// Leaves: sends `Exit` and waits for the server to answer `Exit`, then
    /// the connection is closed and [`Events`] ends with `Ok(None)`.
    ///
    /// Keep reading (or drop) the [`Events`] meanwhile: events that arrive
    /// before the acknowledgement are still delivered, and a full, unread
    /// event queue stops the driver from reading the acknowledgement.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the server does not answer within
    /// [`Options::exit_timeout`] (the connection is closed anyway);
    /// [`Error::Disconnected`] if the session had already ended; whatever
    /// ended the session if it failed meanwhile.
    pub async fn exit(&self) -> Result<(), Error> {
        self.leave(false).await
    }

    /// Logs out and leaves: the server revokes the session's token
    /// ([`Session::account`]), so it no longer logs anyone in, then
    /// acknowledges as it does [`exit`](Sender::exit). Other tokens of the
    /// account stay valid.
    ///
    /// # Errors
    ///
    /// [`Error::NoAccount`] if the session is not logged in (nothing is
    /// sent; [`exit`](Sender::exit) to leave); otherwise as
    /// [`exit`](Sender::exit).
    pub async fn logout(&self) -> Result<(), Error> {
        if self.session.account.is_none() {
            return Err(Error::NoAccount {
                request: "Logout",
                why: "this session is a guest's",
            });
        }
        self.leave(true).await
    }

    async fn leave(&self, logout: bool) -> Result<(), Error> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Exit { done, logout })
            .await
            .map_err(|_| Error::Disconnected)?;
        result.await.map_err(|_| Error::Disconnected)?
    }

    /// What the handshake settled: addresses, limits, our first name.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// The receiving half: what the server sends, in order.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Result<Event, Error>>,
    /// Where the events read so far have reached, per conversation.
    marks: Marks,
}

impl Events {
    /// Waits for the next event.
    ///
    /// Returns `Ok(None)` once the session has ended cleanly: after our
    /// `Exit` was acknowledged, or right after [`Event::ServerExit`]. Unknown
    /// message kinds from a newer server are skipped.
    ///
    /// # Errors
    ///
    /// The error that ended the session, once, after which `Ok(None)`:
    /// [`Error::ServerClosed`] if the server hung up without `Exit` (after an
    /// [`Event::ServerError`] if it gave a reason), [`Error::Decode`] or
    /// [`Error::Protocol`] if it broke the protocol, [`Error::Timeout`] if it
    /// never acknowledged our `Exit`, [`Error::Io`] if the socket failed.
    pub async fn next_event(&mut self) -> Result<Option<Event>, Error> {
        let next = self.rx.recv().await.transpose();
        if let Ok(Some(event)) = &next {
            self.marks.see(event);
        }
        next
    }

    /// With history: the last id per conversation of the events read so
    /// far ([`Event::Posted`], [`Event::Direct`], [`Event::Stored`],
    /// [`Event::Page`]), starting from [`Options::resume`]. Give it to the
    /// next connection's [`Options::resume`] to get what was missed, once.
    pub fn marks(&self) -> &Marks {
        &self.marks
    }
}
