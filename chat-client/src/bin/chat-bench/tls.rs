//! TLS for the chat clients (`--tls`): rustls driven by hand over the
//! socket's readiness, as the plaintext clients are, so that every
//! workload of the chat server runs over either unchanged. The handshake is
//! tokio-rustls's; after it each client holds the socket and the rustls
//! connection, and moves records without waiting.
//!
//! Session resumption is off: every connection is a full handshake, what a
//! new client costs the server.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::{Buf, Bytes, BytesMut};
use chat_client::TlsOptions;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Most plaintext gathered by one read: a fast receiver's reads stay large.
const READ_MAX: usize = 256 * 1024;

/// How this run's clients dial, set once at start (`None`: plaintext).
static DIAL: OnceLock<Option<TlsConnector>> = OnceLock::new();

/// Sets how every client of the run connects: with TLS trusting `tls`, or
/// in plaintext.
pub(crate) fn init(tls: Option<TlsOptions>) {
    let connector = tls.map(|t| TlsConnector::from(t.resumption(false).rustls_config()));
    // Set once, from main, before any client.
    let _ = DIAL.set(connector);
}

/// Whether the clients connect with TLS.
pub(crate) fn on() -> bool {
    DIAL.get().is_some_and(Option::is_some)
}

/// Takes the TLS handshake on `tcp` if the run uses TLS.
pub(crate) async fn start(
    tcp: TcpStream,
    server: SocketAddr,
) -> io::Result<(TcpStream, Option<Box<ClientConnection>>)> {
    let Some(Some(connector)) = DIAL.get() else {
        return Ok((tcp, None));
    };
    let name = ServerName::IpAddress(server.ip().into());
    let tls = connector.connect(name, tcp).await.map_err(|e| {
        let (addr, host) = (server.to_string(), server.ip().to_string());
        io::Error::other(chat_client::handshake_error(e, &addr, &host).to_string())
    })?;
    let (tcp, conn) = tls.into_inner();
    Ok((tcp, Some(Box::new(conn))))
}

/// The socket as `std::io` without waiting: `WouldBlock` when not ready.
struct Nonblocking<'a>(&'a TcpStream);

impl Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads what records have come without waiting and appends their
/// plaintext to `input`: `Some(0)` at the end of the stream, `None` when
/// no plaintext came.
pub(crate) fn read(
    stream: &TcpStream,
    tls: &mut ClientConnection,
    input: &mut BytesMut,
) -> io::Result<Option<usize>> {
    let mut got = 0;
    let mut eof = false;
    while got < READ_MAX {
        let more = match tls.read_tls(&mut Nonblocking(stream)) {
            Ok(0) => {
                eof = true;
                false
            }
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => return Err(e),
        };
        let state = tls
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let start = input.len();
            input.resize(start + n, 0);
            tls.reader().read_exact(&mut input[start..])?;
            got += n;
        }
        if state.peer_has_closed() {
            eof = true;
        }
        if !more {
            break;
        }
    }
    match (got, eof) {
        (0, true) => Ok(Some(0)),
        (0, false) => Ok(None),
        (n, _) => Ok(Some(n)),
    }
}

/// Encrypts what `out` holds (as much as rustls takes) and writes records
/// without waiting; `true` once `out` is empty and every record written.
pub(crate) fn write(
    stream: &TcpStream,
    tls: &mut ClientConnection,
    out: &mut Bytes,
) -> io::Result<bool> {
    loop {
        if !out.is_empty() {
            let n = tls.writer().write(out)?;
            out.advance(n);
        }
        while tls.wants_write() {
            match tls.write_tls(&mut Nonblocking(stream)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() {
            return Ok(true);
        }
    }
}
