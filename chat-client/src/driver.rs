//! The one task that owns the socket and drives the protocol machine.
//!
//! Every rule of the conversation (the handshake, answering `Ping`,
//! skipping message kinds a newer server may send, the `Exit` sequence, the
//! frame limits) lives in [`chat_proto::Connection`]; this file only moves
//! bytes between it and the [`Stream`] (TCP or TLS), and hands the messages it lets
//! through to the [`Inbox`], which makes [`Event`]s of them for the caller.
//!
//! [`welcome`] runs first, inside [`Client::connect`](crate::Client::connect),
//! then, when names and rooms are in force, [`named`] (our `Nick`, the
//! server's `Named`); bytes that arrive right behind stay in the machine's
//! input buffer for the [`Driver`]. The driver then `select!`s over commands from
//! [`Sender`](crate::Sender)s, the socket becoming readable or writable, and
//! (while leaving) the exit deadline. Reads and writes wait on readiness
//! rather than on each other, so a `Ping` is answered even while a large
//! `Send` is still being written, and writes never interleave.
//!
//! Backpressure, both ways:
//! - an event taken from the machine waits in `pending` until the event
//!   queue has room, and nothing more is read meanwhile, so a caller who
//!   stops reading slows the server down instead of growing a buffer (a
//!   caller who drops [`Events`](crate::Events) has its events discarded);
//! - while more than [`HIGH_WATER`] bytes wait to be written, the driver
//!   takes no command and reads nothing, so neither the caller nor a server
//!   that pings without reading can grow the output buffer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use chat_proto::{
    Connection, EncodeError, Message, Negotiated, ProtocolError, Refusal, Secret, SendError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};

use crate::error::Error;
use crate::event::{Event, Inbox};
use crate::transport::Stream;

/// Bytes waiting to be written above which the driver stops taking commands
/// and reading: one maximal frame fits below it, a few small ones batch.
const HIGH_WATER: usize = 64 * 1024;
/// Spare room made in the input buffer before a read.
const READ_CHUNK: usize = 8 * 1024;
/// Longest wait, at the end, to write what is queued (an `Error` telling a
/// misbehaving server why) and to half-close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a [`Sender`](crate::Sender) asks of the driver; `done` gets the outcome.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send this request (`Send`, `Nick`, `Join`, ...); reply once it is
    /// written to the socket (with its number if it is numbered, else 0),
    /// or at once if the machine refuses it.
    Send { msg: Message, done: Done },
    /// Leave: reply once the server has acknowledged (or not, in time).
    /// With `logout`, by `Logout` rather than `Exit`: the server revokes
    /// the session's token first.
    Exit { done: Waiter, logout: bool },
}

type Waiter = oneshot::Sender<Result<(), Error>>;
type Done = oneshot::Sender<Result<u64, Error>>;

/// How a session ended without an error.
enum End {
    /// We left and the server acknowledged (or closed, which is as good).
    Left,
    /// The server sent `Exit` unprompted: it is shutting down.
    ServerExit,
}

/// Most events kept between `Welcome` and `Named` (the server should send
/// none but a refused name's `Refused`).
const EARLY_EVENTS: usize = 64;

/// Sends the machine's `Hello` and feeds it the server's bytes until the
/// `Welcome` has come.
///
/// # Errors
///
/// [`Error::Rejected`] if the server answered `Error`, [`Error::ServerClosed`]
/// if it hung up, [`Error::Decode`]/[`Error::Protocol`] if it broke the
/// protocol (the server is told why), [`Error::Io`].
pub(crate) async fn welcome(
    stream: &mut Stream,
    conn: &mut Connection,
) -> Result<Negotiated, Error> {
    loop {
        if let Some(bytes) = conn.transmit() {
            stream.write_all(&bytes).await?;
        }
        match conn.poll() {
            Ok(Some(chat_proto::Event::Welcome(negotiated))) => return Ok(negotiated),
            Ok(Some(chat_proto::Event::Error(reason))) => return Err(Error::Rejected { reason }),
            // A client machine reports nothing else before its Welcome.
            Ok(Some(other)) => tracing::debug!(?other, "ignored during the handshake"),
            // Only once every frame already received is taken.
            Ok(None) => read(stream, conn).await?,
            Err(e) => return Err(last_words(stream, conn, e.into()).await),
        }
    }
}

/// With names and rooms in force: sends `first` (our `Nick`, or with
/// accounts a `Register`, `Login` or `LoginToken`) and reads until the
/// server's `Named`, which it returns with the `LoggedIn` that came before
/// it, if any; the events that came before it (a `Refused` if the name was
/// taken or invalid) wait in the inbox.
///
/// # Errors
///
/// As [`welcome`]; [`Error::TooLong`] for a name over the frame limit;
/// [`Error::Login`] if the server refused the login (or, taking no guests,
/// our `Nick`); [`Error::Protocol`] if the server sends more than a few
/// messages before `Named`.
pub(crate) async fn named(
    stream: &mut Stream,
    conn: &mut Connection,
    inbox: &mut Inbox,
    first: &Message,
) -> Result<(String, Option<LoggedIn>), Error> {
    if let Err(e) = conn.send(first) {
        return Err(refused(first, e, conn));
    }
    let login = !matches!(first, Message::Nick { .. });
    let mut logged_in = None;
    loop {
        if let Some(bytes) = conn.transmit() {
            stream.write_all(&bytes).await?;
        }
        match conn.poll() {
            Ok(Some(chat_proto::Event::Message(Message::Named { name }))) => {
                inbox.own().lock().name = Some(name.clone());
                return Ok((name, logged_in));
            }
            Ok(Some(chat_proto::Event::Message(Message::LoggedIn {
                name,
                token,
                expires,
            }))) if login && logged_in.is_none() => {
                logged_in = Some(LoggedIn {
                    name,
                    token,
                    expires,
                });
            }
            // No `Named` follows a refused login, nor a guest's `Nick` at a
            // server that takes no guests.
            Ok(Some(chat_proto::Event::Message(Message::Refused { code, detail, .. })))
                if login || code == Refusal::AuthRequired =>
            {
                return Err(Error::Login { code, detail });
            }
            Ok(Some(chat_proto::Event::Message(msg))) => {
                let got = msg.name();
                match inbox.take(msg) {
                    Ok(()) if inbox.ready() <= EARLY_EVENTS => {}
                    Ok(()) => {
                        let e = ProtocolError::OutOfTurn {
                            expected: "Named",
                            got,
                        };
                        conn.refuse(&e.to_string());
                        return Err(last_words(stream, conn, Error::Protocol(e)).await);
                    }
                    Err(e) => {
                        conn.refuse(&e.to_string());
                        return Err(last_words(stream, conn, e).await);
                    }
                }
            }
            Ok(Some(chat_proto::Event::Error(reason))) => return Err(Error::Rejected { reason }),
            // The server is shutting down before it named us.
            Ok(Some(chat_proto::Event::Exit)) => return Err(Error::ServerClosed),
            Ok(Some(other)) => tracing::debug!(?other, "ignored during the handshake"),
            // Only once every frame already received is taken.
            Ok(None) => read(stream, conn).await?,
            Err(e) => return Err(last_words(stream, conn, e.into()).await),
        }
    }
}

/// The server's `LoggedIn`, as it came.
#[derive(Debug)]
pub(crate) struct LoggedIn {
    pub(crate) name: String,
    pub(crate) token: Secret,
    pub(crate) expires: u64,
}

/// Reads what the server sent into the machine; the end of the stream is
/// [`Error::ServerClosed`] (or a truncated frame).
async fn read(stream: &mut Stream, conn: &mut Connection) -> Result<(), Error> {
    reserve(conn);
    if stream.read_buf(conn.input()).await? == 0 {
        conn.eof()?;
        return Err(Error::ServerClosed);
    }
    Ok(())
}

/// Writes what the machine queued to tell the server why we leave
/// (bounded), and returns `err`.
async fn last_words(stream: &mut Stream, conn: &mut Connection, err: Error) -> Error {
    if let Some(bytes) = conn.transmit() {
        let _ = timeout(CLOSE_TIMEOUT, stream.write_all(&bytes)).await;
    }
    err
}

/// The caller's error for a request the machine would not queue.
fn refused(msg: &Message, err: SendError, conn: &Connection) -> Error {
    match err {
        SendError::TooLarge(EncodeError::TooLarge { len, max }) => too_long(msg, len, max),
        SendError::NotNegotiated { name } => Error::Unsupported { request: name },
        // Leaving (or closed): nothing more goes out.
        other => {
            tracing::debug!(error = %other, state = ?conn.state(), "not sent");
            Error::Disconnected
        }
    }
}

/// [`Error::TooLong`] for `msg`, whose payload of `payload` bytes is over
/// the server's `max`: the length of its text (or name), and the longest one
/// that would fit beside its other fields.
fn too_long(msg: &Message, payload: usize, max: usize) -> Error {
    let field = match msg {
        Message::Send { text } | Message::Say { text, .. } | Message::Tell { text, .. } => text,
        Message::Nick { name } => name,
        Message::Join { room } | Message::Part { room } | Message::Who { room } => room,
        _ => "",
    };
    let len = field.len();
    // Everything but this field, and what its length prefix would take.
    let rest = payload.saturating_sub(len + varint_width(len));
    let room = max.saturating_sub(rest);
    let mut longest = room.saturating_sub(1);
    while longest > 0 && longest + varint_width(longest) > room {
        longest -= 1;
    }
    Error::TooLong { len, max: longest }
}

/// Bytes of the varint that prefixes a string of `n` bytes on the wire.
fn varint_width(n: usize) -> usize {
    match n {
        0..=250 => 1,
        251..=65_535 => 3,
        65_536..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Makes room in the machine's input buffer for the next read.
fn reserve(conn: &mut Connection) {
    let input = conn.input();
    if input.capacity() - input.len() < READ_CHUNK / 4 {
        input.reserve(READ_CHUNK);
    }
}

/// What the socket did.
enum Io {
    Read(usize),
    Wrote(usize),
    Failed(io::Error),
}

/// Writes what waits in `out` (or what TLS still holds), else reads into
/// the machine's input if `reading`; whichever can go first.
fn poll_io(
    cx: &mut Context<'_>,
    stream: &mut Stream,
    conn: &mut Connection,
    out: &[u8],
    reading: bool,
) -> Poll<Io> {
    if !out.is_empty() || stream.unflushed() {
        match stream.poll_send(cx, out) {
            Poll::Ready(Ok(n)) => return Poll::Ready(Io::Wrote(n)),
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Failed(e)),
            Poll::Pending => {}
        }
    }
    if reading {
        reserve(conn);
        match stream.poll_read_buf(cx, conn.input()) {
            Poll::Ready(Ok(n)) => return Poll::Ready(Io::Read(n)),
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Failed(e)),
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

/// The session after the handshake; see the module docs.
#[derive(Debug)]
pub(crate) struct Driver {
    stream: Stream,
    conn: Connection,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Result<Event, Error>>,
    exit_timeout: Duration,
    /// Makes events of what the server sends; holds those not yet handed
    /// over (the handshake's first).
    inbox: Inbox,
    /// Bytes taken from the machine, not yet written.
    out: BytesMut,
    /// Bytes ever written, and ever taken from the machine: a send is done
    /// once `written` reaches where its frame ended.
    written: u64,
    queued: u64,
    /// Senders waiting for their frame to be written, with its end offset
    /// and its number.
    sends: VecDeque<(u64, u64, Done)>,
}

impl Driver {
    pub(crate) fn new(
        (stream, conn): (Stream, Connection),
        inbox: Inbox,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Result<Event, Error>>,
        exit_timeout: Duration,
    ) -> Self {
        Driver {
            stream,
            conn,
            commands,
            events,
            exit_timeout,
            inbox,
            out: BytesMut::new(),
            written: 0,
            queued: 0,
            sends: VecDeque::new(),
        }
    }

    /// Runs the session to its end, then reports how it ended to everyone
    /// waiting: senders, `exit()` callers, then the event stream.
    pub(crate) async fn run(mut self) {
        let mut waiters = Vec::new();
        let outcome = self.serve(&mut waiters).await;
        // Refuse further commands; queued ones see `Disconnected`.
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Send { done, .. } => {
                    let _ = done.send(Err(Error::Disconnected));
                }
                Command::Exit { done, .. } => waiters.push(done),
            }
        }
        // Write what is left (sends already accepted, the `Error` that tells
        // a misbehaving server why), then half-close so the server sees a
        // clean end; bounded in case the server stopped reading.
        let flushed = match &outcome {
            Err(Error::Io(_)) => false,
            _ => timeout(CLOSE_TIMEOUT, self.flush())
                .await
                .is_ok_and(|r| r.is_ok()),
        };
        if flushed {
            let _ = timeout(CLOSE_TIMEOUT, self.stream.shutdown()).await;
        }
        for (end, seq, done) in self.sends.drain(..) {
            let result = if self.written >= end {
                Ok(seq)
            } else {
                match &outcome {
                    Err(e) => Err(e.duplicate()),
                    Ok(_) => Err(Error::Disconnected),
                }
            };
            let _ = done.send(result);
        }
        match outcome {
            Ok(end) => {
                tracing::debug!(
                    server_exit = matches!(end, End::ServerExit),
                    "session ended"
                );
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
                if let End::ServerExit = end {
                    let _ = self.events.send(Ok(Event::ServerExit)).await;
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "session failed");
                for w in waiters {
                    let _ = w.send(Err(err.duplicate()));
                }
                let _ = self.events.send(Err(err)).await;
            }
        }
    }

    async fn serve(&mut self, waiters: &mut Vec<Waiter>) -> Result<End, Error> {
        // The server sent `Error`: once its event is handed over, the session is over.
        let mut server_error = false;
        // Set once we have sent `Exit`: the acknowledgement must come by then.
        let mut deadline: Option<Instant> = None;
        let mut commands_open = true;
        // A handle of our own, so a reserved slot does not borrow `self`.
        let events = self.events.clone();
        // With history: resume the direct conversations we have marks for.
        self.inbox.start();
        self.ask();
        loop {
            while !self.inbox.has_ready() && !server_error {
                let Some(event) = self.conn.poll()? else {
                    break;
                };
                match event {
                    chat_proto::Event::Message(msg) => match self.inbox.take(msg) {
                        Ok(()) => self.ask(),
                        Err(e) => {
                            // Tell the server why we leave.
                            self.conn.refuse(&e.to_string());
                            return Err(e);
                        }
                    },
                    chat_proto::Event::Exit if deadline.is_some() => return Ok(End::Left),
                    chat_proto::Event::Exit => return Ok(End::ServerExit),
                    chat_proto::Event::Error(reason) => {
                        self.inbox.push(Event::ServerError(reason));
                        server_error = true;
                    }
                    other => tracing::debug!(?other, "ignored"),
                }
            }
            let has_events = self.inbox.has_ready();
            if server_error && !has_events {
                return Err(Error::ServerClosed);
            }
            if !commands_open && deadline.is_none() {
                // Every Sender is gone: nobody can send, so leave.
                deadline = Some(self.leave(false));
            }
            self.take_output();
            let room = self.out.len() < HIGH_WATER;
            let reading = !has_events && !server_error && room;
            let writing = !self.out.is_empty() || self.stream.unflushed();
            tokio::select! {
                cmd = self.commands.recv(), if commands_open && room => match cmd {
                    None => commands_open = false,
                    Some(Command::Send { msg, done }) => self.send(&msg, done),
                    Some(Command::Exit { done, logout }) => {
                        waiters.push(done);
                        if deadline.is_none() {
                            deadline = Some(self.leave(logout));
                        }
                    }
                },
                permit = events.reserve(), if has_events => {
                    // If nobody reads events any more, the event is dropped.
                    let event = self.inbox.pop();
                    if let (Ok(permit), Some(event)) = (permit, event) {
                        permit.send(Ok(event));
                    }
                }
                io = poll_fn(|cx| poll_io(cx, &mut self.stream, &mut self.conn, &self.out, reading)),
                    if reading || writing =>
                {
                    match io {
                        Io::Read(0) => {
                            self.conn.eof()?;
                            // Closing instead of acknowledging our Exit still means we are out.
                            return if deadline.is_some() {
                                Ok(End::Left)
                            } else {
                                Err(Error::ServerClosed)
                            };
                        }
                        Io::Read(_) => {}
                        Io::Wrote(n) => self.wrote(n),
                        Io::Failed(e) => return Err(e.into()),
                    }
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    return Err(Error::Timeout {
                        waiting_for: "the server to acknowledge Exit",
                        after: self.exit_timeout,
                    });
                }
            }
        }
    }

    /// Queues a request; its waiter is answered once the frame is written.
    fn send(&mut self, msg: &Message, done: Done) {
        match self.conn.send(msg) {
            Ok(()) => {
                // The machine numbers what needs numbering (HISTORY only).
                let seq = if msg.is_numbered() {
                    self.conn.seq()
                } else {
                    0
                };
                self.inbox.sent(msg, seq);
                self.take_output();
                self.sends.push_back((self.queued, seq, done));
            }
            Err(e) => {
                let _ = done.send(Err(refused(msg, e, &self.conn)));
            }
        }
    }

    /// Queues the requests the library makes itself (resumes); nothing to
    /// report if one cannot go (only while leaving, when it does not matter).
    fn ask(&mut self) {
        for msg in self.inbox.requests() {
            if let Err(e) = self.conn.send(&msg) {
                tracing::debug!(error = %e, request = msg.name(), "not sent");
            }
        }
    }

    /// Queues `Exit` (or `Logout`, which the server answers the same way);
    /// returns the deadline for the server's answer.
    fn leave(&mut self, logout: bool) -> Instant {
        let queued = if logout {
            self.conn.send(&Message::Logout)
        } else {
            self.conn.exit()
        };
        if let Err(e) = queued {
            tracing::debug!(error = %e, logout, "not leaving");
        }
        Instant::now() + self.exit_timeout
    }

    /// Moves what the machine has to send into the output buffer.
    fn take_output(&mut self) {
        if let Some(bytes) = self.conn.transmit() {
            self.queued += bytes.len() as u64;
            self.out.extend_from_slice(&bytes);
        }
    }

    /// Records `n` bytes written and answers the sends they completed.
    fn wrote(&mut self, n: usize) {
        self.out.advance(n);
        self.written += n as u64;
        while let Some((end, _, _)) = self.sends.front() {
            if *end > self.written {
                break;
            }
            if let Some((_, seq, done)) = self.sends.pop_front() {
                let _ = done.send(Ok(seq));
            }
        }
    }

    /// Writes everything queued, the machine's last words included.
    async fn flush(&mut self) -> io::Result<()> {
        self.take_output();
        while !self.out.is_empty() {
            let n = self.stream.write(&self.out).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.wrote(n);
        }
        Ok(())
    }
}
