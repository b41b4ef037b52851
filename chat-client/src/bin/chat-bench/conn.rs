//! One bench client: a TCP stream (TLS over it with `--tls`) and the
//! `chat_proto::Connection` (client role) that speaks the protocol over it.
//!
//! A client is either a version 1 one (no capability: `Send` and `Relay` in
//! the one room) or a named one (the ROOMS capability: `Nick`, then `Join`
//! and `Part`, `Say`, `Tell`); [`Client::named`] makes the second kind.
//!
//! The machine does the handshake, answers `Ping`, and checks every frame;
//! this type only moves bytes. Whoever holds a `Client` is the only owner of
//! its socket: the workloads run one task per client that both reads and
//! writes (`TcpStream::ready` over both directions).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use chat_proto::{ClientConfig, Connection, Event, Message, Refusal, features};
use tokio::io::Interest;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::WaitForCancellationFuture;

use crate::error::Error;
use crate::socket::read_into;
use crate::system::Peer;
use crate::tls;

/// The room every client starts in.
pub(crate) const LOBBY: &str = "lobby";

/// What a client's [`Client::wait`] came to.
pub(crate) enum Woke {
    /// The run was stopped.
    Stopped,
    /// Its turn came, or the socket moved without anything read.
    Again,
    /// A read brought bytes (or the end of the stream): events may wait.
    Read,
}

/// What a named client asks for once welcomed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask<'a> {
    /// The name asked for (empty: the server picks one).
    pub(crate) name: &'a str,
    /// Rooms to join.
    pub(crate) join: &'a [String],
    /// Leave the lobby first.
    pub(crate) part_lobby: bool,
}

/// A connected, welcomed client.
#[derive(Debug)]
pub(crate) struct Client {
    /// Which client of the run.
    pub(crate) id: usize,
    pub(crate) stream: TcpStream,
    pub(crate) conn: Connection,
    /// Our address as the server sees it (from `Welcome`).
    pub(crate) me: SocketAddr,
    /// Our name (from `Named`); empty for a version 1 client.
    pub(crate) name: String,
    /// The rooms a workload's messages go to, in turn (empty: `Send`, in
    /// the one room of version 1).
    pub(crate) rooms: Vec<String>,
    /// Output taken from the machine and not yet written.
    out: Bytes,
    /// With `--tls`: the TLS connection over `stream`.
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Client {
    /// Connects to `server` and completes the handshake. `rcvbuf` shrinks
    /// the socket's receive buffer before connecting (a client meant to
    /// stall, so that the kernel cannot absorb what it does not read).
    pub(crate) async fn connect(
        id: usize,
        server: SocketAddr,
        rcvbuf: Option<u32>,
    ) -> Result<Client, Error> {
        Client::open(id, server, rcvbuf, features::NONE).await
    }

    /// Connects with the ROOMS capability, asks for a name, leaves the lobby
    /// and joins rooms as `ask` says, and returns once every answer came
    /// (`Named`, its own `Departed` from the lobby, a final `Roster` per
    /// room joined). Every other event meanwhile (others' notices, the
    /// lobby's roster) goes to `other`, with our address. A name taken or invalid is no failure: the server assigns
    /// one, and [`Client::name`] is what it assigned.
    pub(crate) async fn named(
        id: usize,
        server: SocketAddr,
        ask: Ask<'_>,
        other: impl FnMut(&Event, SocketAddr),
    ) -> Result<Client, Error> {
        Client::named_with(id, server, ask, features::ROOMS, other).await
    }

    /// [`Client::named`], asking for `features` (ROOMS, or ROOMS and
    /// HISTORY); fails unless the server grants them all.
    pub(crate) async fn named_with(
        id: usize,
        server: SocketAddr,
        ask: Ask<'_>,
        features: u64,
        mut other: impl FnMut(&Event, SocketAddr),
    ) -> Result<Client, Error> {
        let mut c = Client::open(id, server, None, features).await?;
        let mut requests = vec![Message::Nick {
            name: ask.name.into(),
        }];
        if ask.part_lobby {
            requests.push(Message::Part { room: LOBBY.into() });
        }
        requests.extend(
            ask.join
                .iter()
                .map(|room| Message::Join { room: room.clone() }),
        );
        for msg in &requests {
            c.conn
                .send(msg)
                .map_err(|e| c.lost(format!("cannot send {}: {e}", msg.name())))?;
        }
        let mut pending: Vec<&str> = ask.join.iter().map(String::as_str).collect();
        let (mut named, mut in_lobby) = (false, ask.part_lobby);
        while !named || in_lobby || !pending.is_empty() {
            let event = c.next_event().await?;
            match &event {
                Event::Message(Message::Named { name }) => {
                    c.name.clone_from(name);
                    named = true;
                }
                Event::Message(Message::Refused { code, .. })
                    if !named && matches!(code, Refusal::NameTaken | Refusal::NameInvalid) => {}
                Event::Message(Message::Refused {
                    code,
                    subject,
                    detail,
                }) => {
                    return Err(Error::Refused {
                        id,
                        reason: format!("{code:?} for {subject:?}: {detail}"),
                    });
                }
                Event::Message(Message::Roster {
                    room, more: false, ..
                }) if pending.contains(&room.as_str()) => {
                    pending.retain(|r| r != room);
                }
                Event::Message(Message::Departed { room, member })
                    if room == LOBBY && member.addr() == c.me =>
                {
                    in_lobby = false;
                }
                Event::Error(reason) => {
                    return Err(Error::Refused {
                        id,
                        reason: reason.clone(),
                    });
                }
                _ => other(&event, c.me),
            }
        }
        c.rooms = ask.join.to_vec();
        Ok(c)
    }

    async fn open(
        id: usize,
        server: SocketAddr,
        rcvbuf: Option<u32>,
        features: u64,
    ) -> Result<Client, Error> {
        let failed = |source| Error::Connect {
            id,
            addr: server,
            source,
        };
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(failed)?;
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).map_err(failed)?;
        }
        let stream = socket.connect(server).await.map_err(failed)?;
        stream.set_nodelay(true).map_err(failed)?;
        let (stream, tls) = tls::start(stream, server).await.map_err(failed)?;
        let mut config = ClientConfig::default();
        config.features = features;
        let mut client = Client {
            id,
            stream,
            conn: Connection::client(config),
            me: server,
            name: String::new(),
            rooms: Vec::new(),
            out: Bytes::new(),
            tls,
        };
        match client.next_event().await? {
            Event::Welcome(session) if session.has(features) => {
                client.me = session.addr;
                Ok(client)
            }
            Event::Welcome(_) if features & features::HISTORY != 0 => Err(client.lost(
                "the server does not offer the HISTORY capability (run it with history on: \
                 --data DIR or --ephemeral, not --no-history)"
                    .into(),
            )),
            Event::Welcome(_) => Err(client.lost(
                "the server does not offer the ROOMS capability (names, rooms, direct messages)"
                    .into(),
            )),
            Event::Error(reason) => Err(Error::Refused { id, reason }),
            other => Err(client.lost(format!("expected Welcome, got {other:?}"))),
        }
    }

    /// An error naming this client.
    pub(crate) fn lost(&self, reason: String) -> Error {
        Error::Disconnected {
            id: self.id,
            reason,
        }
    }

    /// Ends the run on a refusal, an eviction or a shutdown notice; any
    /// other event passes.
    pub(crate) fn check(&self, event: Event) -> Result<(), Error> {
        match event {
            Event::Message(Message::Refused {
                code,
                subject,
                detail,
            }) => Err(self.lost(format!(
                "the server refused a request: {code:?} for {subject:?}: {detail}"
            ))),
            Event::Error(reason) => Err(self.lost(format!("evicted by the server: {reason}"))),
            Event::Exit => Err(self.lost("the server sent Exit (shutting down)".into())),
            _ => Ok(()),
        }
    }

    /// Waits for the socket (writing too while output waits and no write
    /// has failed), for `turn` if given, or for `stop`; reads what came.
    pub(crate) async fn wait(
        &mut self,
        write_failed: &mut bool,
        turn: Option<&Notify>,
        stop: &mut Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Result<Woke, Error> {
        let sending = self.sending() && !*write_failed;
        let interest = if sending {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let notified = async {
            match turn {
                Some(turn) => turn.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.as_mut() => Ok(Woke::Stopped),
            () = notified => Ok(Woke::Again),
            r = self.stream.ready(interest) => {
                let ready = r.map_err(|e| self.lost(e.to_string()))?;
                if ready.is_writable() && sending && self.write().is_err() {
                    *write_failed = true;
                }
                if ready.is_readable() && self.read()?.is_some() {
                    return Ok(Woke::Read);
                }
                Ok(Woke::Again)
            }
        }
    }

    /// Whether output is waiting to be written.
    pub(crate) fn sending(&self) -> bool {
        !self.out.is_empty()
            || self.conn.wants_write()
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Reads once, without waiting, into the machine's input: `Some(0)` is
    /// the end of the stream (already told to the machine), `None` means
    /// nothing was there.
    pub(crate) fn read(&mut self) -> Result<Option<usize>, Error> {
        let got = match &mut self.tls {
            None => read_into(&self.stream, self.conn.input()),
            Some(tls) => tls::read(&self.stream, tls, self.conn.input()),
        }
        .map_err(|e| self.lost(e.to_string()))?;
        if got == Some(0) {
            self.conn
                .eof()
                .map_err(|e| self.lost(format!("the stream ended badly: {e}")))?;
        }
        Ok(got)
    }

    /// Writes what it can of the pending output without waiting; `true` once
    /// everything is written.
    pub(crate) fn write(&mut self) -> Result<bool, Error> {
        if let Some(tls) = &mut self.tls {
            loop {
                if let Some(bytes) = self.out.is_empty().then(|| self.conn.transmit()).flatten() {
                    self.out = bytes;
                }
                match tls::write(&self.stream, tls, &mut self.out) {
                    Ok(true) if self.conn.wants_write() => {}
                    Ok(done) => return Ok(done),
                    Err(e) => return Err(self.lost(e.to_string())),
                }
            }
        }
        loop {
            if self.out.is_empty() {
                match self.conn.transmit() {
                    Some(bytes) => self.out = bytes,
                    None => return Ok(true),
                }
            }
            match self.stream.try_write(&self.out) {
                Ok(n) if n == self.out.len() => {
                    // Let go of the buffer, so the machine can reuse it for
                    // the next frames instead of growing a new one.
                    self.out = Bytes::new();
                }
                Ok(n) => self.out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(self.lost(e.to_string())),
            }
        }
    }

    /// Writes all pending output.
    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        while !self.write()? {
            self.stream
                .writable()
                .await
                .map_err(|e| self.lost(e.to_string()))?;
        }
        Ok(())
    }

    /// The next event from the server, reading as needed and writing what
    /// the machine queues meanwhile (its `Pong`s). The end of the stream is
    /// an error: the server closed the connection.
    pub(crate) async fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(event) = self.poll()? {
                return Ok(event);
            }
            self.flush().await?;
            if self.conn.is_closed() {
                return Err(self.lost("the server closed the connection".into()));
            }
            self.stream
                .readable()
                .await
                .map_err(|e| self.lost(e.to_string()))?;
            self.read()?;
        }
    }

    /// The next event already received, if any.
    pub(crate) fn poll(&mut self) -> Result<Option<Event>, Error> {
        self.conn
            .poll()
            .map_err(|e| self.lost(format!("the server broke the protocol: {e}")))
    }
}

/// Runs `n` handshakes, `parallel` at a time (`start(id)` makes client
/// `id`'s), and gives the clients back in id order: the first error, or
/// a timeout after `timeout` that says "could not connect and {what}".
pub(crate) async fn connect_all<P, F>(
    n: usize,
    parallel: usize,
    timeout: Duration,
    what: &str,
    mut start: impl FnMut(usize) -> F,
) -> Result<Vec<P>, Error>
where
    P: Peer + Send + 'static,
    F: Future<Output = Result<P, Error>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut set = JoinSet::new();
    for id in 0..n {
        let (gate, handshake) = (gate.clone(), start(id));
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            handshake.await
        });
    }
    let all = async {
        let mut clients = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            clients.push(r.expect("connect task panicked")?);
        }
        Ok::<_, Error>(clients)
    };
    let mut clients = tokio::time::timeout(timeout, all)
        .await
        .map_err(|_| Error::Timeout(format!("could not connect and {what} in {timeout:?}")))??;
    clients.sort_by_key(Peer::id);
    Ok(clients)
}
