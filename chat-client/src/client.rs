//! Connecting, and the handles a caller holds afterwards.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::{ClientConfig, Connection};
use tokio::net::{TcpStream, ToSocketAddrs, lookup_host};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::driver::{Command, Driver, handshake};
use crate::error::Error;
use crate::event::Event;

/// How many commands may wait for the driver before `send` waits too.
const COMMAND_QUEUE: usize = 64;
/// How many events may wait for the reader before the driver stops reading
/// the socket (TCP then pushes back on the server).
const EVENT_QUEUE: usize = 256;

/// Timeouts for [`Client::connect_with`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let mut options = chat_client::Options::default();
/// options.exit_timeout = Duration::from_secs(1);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Longest wait for the TCP connection (per address tried).
    pub connect_timeout: Duration,
    /// Longest wait for the server's `Welcome` once connected.
    pub handshake_timeout: Duration,
    /// Longest wait for the server to acknowledge our `Exit`.
    pub exit_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            exit_timeout: Duration::from_secs(5),
        }
    }
}

/// What the handshake settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
/// println!("connected as {}", client.session().me);
/// let (sender, mut events) = client.split();
///
/// sender.send("hello, 你好").await?;
/// while let Some(event) = events.next_event().await? {
///     match event {
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
    /// or a `SocketAddr`) with default [`Options`] and performs the handshake.
    ///
    /// Must be called inside a tokio runtime: it spawns the driver task.
    ///
    /// # Errors
    ///
    /// [`Error::Resolve`], [`Error::Refused`] or [`Error::Connect`] if no
    /// connection could be made; [`Error::Rejected`] if the server said no;
    /// [`Error::Timeout`], [`Error::ServerClosed`], [`Error::Decode`],
    /// [`Error::Protocol`] or [`Error::Io`] if the handshake went wrong.
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
        let mut stream = dial(addr, &shown, options.connect_timeout).await?;
        let server = stream.peer_addr()?;
        // The machine keeps whatever arrives right behind the Welcome in its
        // input buffer, and goes on to the driver with it.
        let mut conn = Connection::client(ClientConfig::default());
        let waited = options.handshake_timeout;
        let negotiated = timeout(waited, handshake(&mut stream, &mut conn))
            .await
            .map_err(|_| Error::Timeout {
                waiting_for: "the server's Welcome",
                after: waited,
            })??;
        let session = Session {
            server,
            me: negotiated.addr,
            max_text_len: conn.max_text_len(),
            version: negotiated.version,
            features: negotiated.features,
        };

        let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let driver = Driver::new(stream, conn, command_rx, event_tx, options.exit_timeout);
        tokio::spawn(driver.run());
        Ok(Client {
            sender: Sender {
                commands: command_tx,
                session,
            },
            events: Events { rx: event_rx },
        })
    }

    /// What the handshake settled: addresses and limits.
    pub fn session(&self) -> &Session {
        &self.sender.session
    }

    /// Sends `text` to every other client. See [`Sender::send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    pub async fn send(&self, text: impl Into<String>) -> Result<(), Error> {
        self.sender.send(text).await
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
}

impl Sender {
    /// Sends `text` to every other client; returns once it is written to the
    /// socket.
    ///
    /// # Errors
    ///
    /// [`Error::TooLong`] if the server would refuse the text (nothing is
    /// sent, the session goes on); [`Error::Disconnected`] if the session has
    /// ended or is ending; [`Error::Io`] if the write failed.
    pub async fn send(&self, text: impl Into<String>) -> Result<(), Error> {
        let text = text.into();
        let max = self.session.max_text_len;
        if text.len() > max {
            return Err(Error::TooLong {
                len: text.len(),
                max,
            });
        }
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Send { text, done })
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
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Exit { done })
            .await
            .map_err(|_| Error::Disconnected)?;
        result.await.map_err(|_| Error::Disconnected)?
    }

    /// What the handshake settled: addresses and limits.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// The receiving half: what the server sends, in order.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Result<Event, Error>>,
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
        self.rx.recv().await.transpose()
    }
}

/// Resolves `addr` and connects to the first address that accepts.
async fn dial<A: ToSocketAddrs>(addr: A, shown: &str, wait: Duration) -> Result<TcpStream, Error> {
    let resolve = |source| Error::Resolve {
        addr: shown.to_owned(),
        source,
    };
    let candidates = lookup_host(addr).await.map_err(resolve)?;
    let mut last = None;
    for candidate in candidates {
        match timeout(wait, TcpStream::connect(candidate)).await {
            Ok(Ok(stream)) => {
                // Chat lines are small and interactive: send them at once.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) => {
                tracing::debug!(%candidate, error = %e, "connect failed");
                last = Some(e);
            }
            Err(_) => last = Some(std::io::ErrorKind::TimedOut.into()),
        }
    }
    Err(match last {
        None => resolve(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no addresses found",
        )),
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Error::Refused {
            addr: shown.to_owned(),
        },
        Some(source) => Error::Connect {
            addr: shown.to_owned(),
            source,
        },
    })
}
