//! A TLS connection as a session's [`Transport`], on rustls's unbuffered
//! API: the ciphertext read waits in a buffer of ours, given back once
//! decrypted, and so does the ciphertext to write once written. An idle
//! TLS client holds no buffer at all (rustls's buffered connection keeps a
//! 4 KiB read buffer for the connection's life).
//!
//! rustls's state machine is driven by `Tls::step`: decrypted records go
//! to the plaintext the session reads next, handshake and alert records it
//! encodes (session tickets after the handshake, a `close_notify`) go to
//! the ciphertext to write, which the session's flush writes out.
//! Application data is encrypted into a scratch buffer of the thread's and
//! written from there; only what the socket does not take at once is kept.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::net::TcpStream;

use crate::transport::Transport;

/// Most ciphertext read from the socket at once.
const READ_MAX: usize = 16 * 1024 + 256;
/// Small writes are gathered into one record up to this size.
const RECORD: usize = 16 * 1024;
/// Most plaintext taken by one write: about four full records.
const WRITE_MAX: usize = 4 * RECORD;

/// A server's TLS connection over TCP.
pub(crate) struct Tls {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received, not yet processed (at most a partial record
    /// between reads).
    rx: BytesMut,
    /// Plaintext decrypted, not yet handed to the session.
    plain: BytesMut,
    /// Ciphertext to write, from `sent` on.
    tx: Vec<u8>,
    sent: usize,
    /// The peer sent `close_notify`, or closed the connection.
    eof: bool,
    /// Our `close_notify` is queued.
    shut: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

/// What one step of the state machine came to.
enum Step {
    /// Something was done: step again.
    Again,
    /// Nothing more without more ciphertext; writing is possible.
    Idle,
    /// Nothing more without more ciphertext, and the handshake is not over.
    Blocked,
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Tls {
    /// Takes the server's side of the handshake on `tcp`.
    pub(crate) async fn accept(
        tcp: TcpStream,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> io::Result<Tls> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
        let mut tls = Tls {
            tcp,
            conn,
            rx: BytesMut::new(),
            plain: BytesMut::new(),
            tx: Vec::new(),
            sent: 0,
            eof: false,
            shut: false,
        };
        loop {
            let settled = match tls.settle() {
                Ok(step) => step,
                Err(e) => {
                    tls.last_words();
                    return Err(e);
                }
            };
            if matches!(settled, Step::Idle) && !tls.conn.is_handshaking() {
                break;
            }
            if tls.eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the handshake",
                ));
            }
            std::future::poll_fn(|cx| tls.poll_send(cx)).await?;
            if std::future::poll_fn(|cx| tls.poll_fill(cx)).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the handshake",
                ));
            }
        }
        // The server's last flight (and its session tickets) go out now.
        std::future::poll_fn(|cx| tls.poll_send(cx)).await?;
        Ok(tls)
    }

    /// One step of rustls's state machine over the ciphertext received.
    fn step(&mut self) -> io::Result<Step> {
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.rx);
        let step = match state.map_err(invalid)? {
            ConnectionState::ReadTraffic(mut read) => {
                while let Some(record) = read.next_record() {
                    let record = record.map_err(invalid)?;
                    self.plain.extend_from_slice(record.payload);
                }
                Step::Again
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                let start = self.tx.len();
                let mut want = 1024;
                loop {
                    self.tx.resize(start + want, 0);
                    match encode.encode(&mut self.tx[start..]) {
                        Ok(n) => {
                            self.tx.truncate(start + n);
                            break;
                        }
                        Err(EncodeError::InsufficientSize(s)) => want = s.required_size,
                        Err(e) => {
                            self.tx.truncate(start);
                            return Err(io::Error::other(e.to_string()));
                        }
                    }
                }
                Step::Again
            }
            // What was encoded waits in `tx`; the session's next flush
            // writes it, before anything encrypted after it.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                Step::Again
            }
            ConnectionState::BlockedHandshake => Step::Blocked,
            ConnectionState::WriteTraffic(_) => Step::Idle,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                self.eof = true;
                Step::Idle
            }
            // Early data is never accepted (the configuration offers none).
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected TLS state",
                ));
            }
        };
        self.rx.advance(discard);
        if self.rx.is_empty() {
            // Between records: keep no buffer.
            self.rx = BytesMut::new();
        }
        Ok(step)
    }

    /// After a failed handshake: sends the alert rustls queued saying why
    /// (a client that offers only TLS 1.1 is told `protocol_version`), if
    /// the socket takes it at once.
    fn last_words(&mut self) {
        while let UnbufferedStatus {
            state: Ok(ConnectionState::EncodeTlsData(mut encode)),
            ..
        } = self.conn.process_tls_records(&mut [])
        {
            let start = self.tx.len();
            self.tx.resize(start + 64, 0);
            match encode.encode(&mut self.tx[start..]) {
                Ok(n) => self.tx.truncate(start + n),
                Err(_) => {
                    self.tx.truncate(start);
                    break;
                }
            }
        }
        let _ = self.tcp.try_write(&self.tx[self.sent..]);
    }

    /// Steps until the state machine waits for more ciphertext.
    fn settle(&mut self) -> io::Result<Step> {
        loop {
            match self.step()? {
                Step::Again => {}
                other => return Ok(other),
            }
        }
    }

    /// Reads ciphertext into `rx`; `Ready(Ok(0))` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            if self.rx.capacity() - self.rx.len() < 1024 {
                self.rx.reserve(READ_MAX);
            }
            match self.tcp.try_read_buf(&mut self.rx) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.rx.is_empty() {
                        self.rx = BytesMut::new();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return Poll::Ready(other),
            }
        }
    }

    /// Writes the ciphertext waiting in `tx`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.tx.len() {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write(&self.tx[self.sent..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // All written: give the buffer back.
        self.tx = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Encrypts `data` as application data records into `out` from `at`
    /// (growing it as needed); returns where they end.
    fn encrypt(&mut self, data: &[u8], out: &mut Vec<u8>, at: usize) -> io::Result<usize> {
        let ConnectionState::WriteTraffic(mut write) = ({
            // Nothing but handshake records can precede: they were
            // settled when the session last read or wrote.
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut []);
            debug_assert_eq!(discard, 0);
            state.map_err(invalid)?
        }) else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection is not open for writing",
            ));
        };
        loop {
            match write.encrypt(data, &mut out[at..]) {
                Ok(n) => return Ok(at + n),
                // Grown once and kept: a scratch buffer is zeroed only
                // when it grows.
                Err(EncryptError::InsufficientSize(s)) => out.resize(at + s.required_size, 0),
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
    }
}

impl Tls {
    /// Encrypts up to [`WRITE_MAX`] bytes of `bufs` into `out`, small ones
    /// gathered into records of up to [`RECORD`] bytes, writes what the
    /// socket takes at once and keeps the rest in `tx`; returns how many
    /// bytes of `bufs` were taken.
    fn seal(
        &mut self,
        bufs: &[IoSlice<'_>],
        out: &mut Vec<u8>,
        gather: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let mut end = 0;
        let mut taken = 0;
        gather.clear();
        for buf in bufs {
            if taken >= WRITE_MAX {
                break;
            }
            let buf = &buf[..buf.len().min(WRITE_MAX - taken)];
            if buf.len() >= RECORD {
                if !gather.is_empty() {
                    end = self.encrypt(gather, out, end)?;
                    gather.clear();
                }
                end = self.encrypt(buf, out, end)?;
            } else {
                if gather.len() + buf.len() > RECORD {
                    end = self.encrypt(gather, out, end)?;
                    gather.clear();
                }
                gather.extend_from_slice(buf);
            }
            taken += buf.len();
        }
        if !gather.is_empty() {
            end = self.encrypt(gather, out, end)?;
            gather.clear();
        }
        // `tx` is empty here (written before anything new is sealed).
        let mut written = 0;
        while written < end {
            match self.tcp.try_write(&out[written..end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.tx.extend_from_slice(&out[written..end]);
        Ok(taken)
    }
}

thread_local! {
    /// Records are encrypted here and written from here: what the socket
    /// takes at once never touches a buffer of the connection's own.
    static SEALED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Small writes gathered into one record.
    static GATHER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Transport for Tls {
    const SECURE: bool = true;

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        _max: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            self.settle()?;
            if !self.plain.is_empty() {
                let n = self.plain.len();
                if buf.is_empty() {
                    // Hand the buffer over whole rather than copy it.
                    std::mem::swap(buf, &mut self.plain);
                    self.plain = BytesMut::new();
                } else {
                    buf.extend_from_slice(&self.plain);
                    self.plain = BytesMut::new();
                }
                return Poll::Ready(Ok(n));
            }
            if self.eof {
                return Poll::Ready(Ok(0));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                // Closed without `close_notify` between records: an end
                // like any other (the session checks frames are whole); in
                // the middle of a record, cut data.
                if !self.rx.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a TLS record",
                    )));
                }
                self.eof = true;
            }
        }
    }

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // What is already encrypted goes first, and bounds what waits.
        ready!(self.poll_send(cx))?;
        self.settle()?;
        let taken = SEALED
            .with_borrow_mut(|out| GATHER.with_borrow_mut(|gather| self.seal(bufs, out, gather)))?;
        // What the socket did not take: written once it can (this
        // registers for its readiness).
        if let Poll::Ready(Err(e)) = self.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        if !self.shut {
            // Tell the client we are done, once.
            self.shut = true;
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            if let Ok(ConnectionState::WriteTraffic(mut write)) = state {
                let mut alert = vec![0; 64];
                if let Ok(n) = write.queue_close_notify(&mut alert) {
                    alert.truncate(n);
                    self.tx = alert;
                    self.sent = 0;
                }
            }
            ready!(self.poll_send(cx))?;
        }
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
