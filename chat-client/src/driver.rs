//! The one task that owns the socket.
//!
//! It `select!`s over three things: commands from [`Sender`](crate::Sender)s,
//! frames from the server, and (while leaving) the exit deadline. Owning both
//! halves in one task means a `Ping` is answered even when the caller only
//! ever sends, and writes never interleave.
//!
//! Backpressure: an event read from the socket waits in `pending` until the
//! event queue has room, and nothing more is read meanwhile, so a caller who
//! stops reading slows the server down instead of growing a buffer. A caller
//! who drops [`Events`](crate::Events) has its events discarded.

use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::{ChatCodec, Frame, Message};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::codec::SkipUnknown;
use crate::error::Error;
use crate::event::Event;

/// What a [`Sender`](crate::Sender) asks of the driver; `done` gets the outcome.
#[derive(Debug)]
pub(crate) enum Command {
    /// Write this already-checked `Send` frame.
    Send {
        frame: Frame,
        done: oneshot::Sender<Result<(), Error>>,
    },
    /// Leave: reply once the server has acknowledged (or not, in time).
    Exit {
        done: oneshot::Sender<Result<(), Error>>,
    },
}

type Waiter = oneshot::Sender<Result<(), Error>>;

/// How a session ended without an error.
enum End {
    /// We left and the server acknowledged (or closed, which is as good).
    Left,
    /// The server sent `Exit` unprompted: it is shutting down.
    ServerExit,
}

pub(crate) struct Driver {
    reader: FramedRead<OwnedReadHalf, SkipUnknown>,
    writer: FramedWrite<OwnedWriteHalf, ChatCodec>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Result<Event, Error>>,
    exit_timeout: Duration,
}

impl Driver {
    pub(crate) fn new(
        reader: FramedRead<OwnedReadHalf, SkipUnknown>,
        writer: FramedWrite<OwnedWriteHalf, ChatCodec>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Result<Event, Error>>,
        exit_timeout: Duration,
    ) -> Self {
        Driver {
            reader,
            writer,
            commands,
            events,
            exit_timeout,
        }
    }

    /// Runs the session to its end, then reports how it ended to everyone
    /// waiting: `exit()` callers, then the event stream.
    pub(crate) async fn run(mut self) {
        let mut waiters = Vec::new();
        let outcome = self.serve(&mut waiters).await;
        // Refuse further commands; queued ones see `Disconnected`.
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            let done = match cmd {
                Command::Send { done, .. } => done,
                Command::Exit { done } => {
                    waiters.push(done);
                    continue;
                }
            };
            let _ = done.send(Err(Error::Disconnected));
        }
        // Half-close so the server sees a clean end; bounded in case the
        // server stopped reading.
        let _ = timeout(Duration::from_secs(1), self.writer.get_mut().shutdown()).await;
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
        // An event read but not yet handed over (see the module docs).
        let mut pending: Option<Event> = None;
        // Set once we have sent `Exit`: the acknowledgement must come by then.
        let mut deadline: Option<Instant> = None;
        let mut commands_open = true;
        loop {
            if !commands_open && deadline.is_none() {
                // Every Sender is gone: nobody can send, so leave.
                deadline = Some(begin_leave(&mut self.writer, self.exit_timeout).await?);
            }
            tokio::select! {
                cmd = self.commands.recv(), if commands_open => match cmd {
                    None => commands_open = false,
                    Some(Command::Send { frame, done }) => {
                        if deadline.is_some() {
                            let _ = done.send(Err(Error::Disconnected));
                        } else if let Err(e) = self.writer.send(frame).await {
                            let err = Error::from(e);
                            let _ = done.send(Err(err.duplicate()));
                            return Err(err);
                        } else {
                            let _ = done.send(Ok(()));
                        }
                    }
                    Some(Command::Exit { done }) => {
                        waiters.push(done);
                        if deadline.is_none() {
                            deadline = Some(begin_leave(&mut self.writer, self.exit_timeout).await?);
                        }
                    }
                },
                permit = self.events.reserve(), if pending.is_some() => {
                    // If nobody reads events any more, the event is dropped.
                    if let (Ok(permit), Some(event)) = (permit, pending.take()) {
                        permit.send(Ok(event));
                    }
                }
                frame = self.reader.next(), if pending.is_none() => {
                    let msg = match frame {
                        // Closing instead of acknowledging our Exit still means we are out.
                        None if deadline.is_some() => return Ok(End::Left),
                        None => return Err(Error::ServerClosed),
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(msg)) => msg,
                    };
                    match msg {
                        Message::Relay { ip, port, text } => {
                            pending = Some(Event::Message { from: SocketAddr::new(ip, port), text });
                        }
                        Message::Joined { ip, port } => pending = Some(Event::Joined(SocketAddr::new(ip, port))),
                        Message::Left { ip, port } => pending = Some(Event::Left(SocketAddr::new(ip, port))),
                        Message::Error { reason } => pending = Some(Event::ServerError(reason)),
                        Message::Exit if deadline.is_some() => return Ok(End::Left),
                        Message::Exit => return Ok(End::ServerExit),
                        Message::Ping { nonce } => self.writer.send(Message::Pong { nonce }).await?,
                        Message::Pong { nonce } => tracing::debug!(nonce, "unsolicited Pong"),
                        other => {
                            return Err(Error::Protocol(format!(
                                "the server sent {} after the handshake",
                                other.name()
                            )));
                        }
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
}

/// Sends `Exit`; returns the deadline for the server's answer.
async fn begin_leave(
    writer: &mut FramedWrite<OwnedWriteHalf, ChatCodec>,
    exit_timeout: Duration,
) -> Result<Instant, Error> {
    let deadline = Instant::now() + exit_timeout;
    match timeout(exit_timeout, writer.send(Message::Exit)).await {
        Ok(sent) => sent?,
        Err(_) => {
            return Err(Error::Timeout {
                waiting_for: "the socket to take our Exit",
                after: exit_timeout,
            });
        }
    }
    Ok(deadline)
}
