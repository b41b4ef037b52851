//! The client's errors, one variant per thing a caller may want to tell apart.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use chat_proto::{DecodeError, ProtocolError};

use crate::fingerprint::Fingerprint;

/// Everything that can go wrong talking to a chat server.
///
/// Variants say who is at fault: the network ([`Refused`](Error::Refused),
/// [`Connect`](Error::Connect), [`Io`](Error::Io)), the server's decision
/// ([`Rejected`](Error::Rejected), [`ServerClosed`](Error::ServerClosed)), a
/// server that broke the protocol ([`Decode`](Error::Decode),
/// [`Protocol`](Error::Protocol), [`TooMany`](Error::TooMany)), or the
/// caller ([`TooLong`](Error::TooLong), [`Unsupported`](Error::Unsupported),
/// [`Disconnected`](Error::Disconnected)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address could not be resolved to any socket address.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// Why resolution failed.
        #[source]
        source: io::Error,
    },
    /// Nothing listens at the address.
    #[error("cannot connect to {addr}: connection refused")]
    Refused {
        /// The address as given.
        addr: String,
    },
    /// The TCP connection could not be made for another reason.
    #[error("cannot connect to {addr}: {}", describe(.source))]
    Connect {
        /// The address as given.
        addr: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed: the server's certificate is not trusted,
    /// or the server refused or broke off the handshake.
    #[error("TLS with {addr} failed: {failure}")]
    Tls {
        /// The address as given.
        addr: String,
        /// What went wrong.
        failure: TlsFailure,
    },
    /// TLS was asked for, but the server answered in plaintext: this port
    /// serves plaintext chat (its TLS port, if any, is another).
    #[error("the server at {addr} does not speak TLS on this port")]
    NotTls {
        /// The address as given.
        addr: String,
    },
    /// The CA file given for TLS cannot be used.
    #[error("cannot use CA file {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why: unreadable, not PEM, no certificate.
        reason: String,
    },
    /// The server answered the handshake with `Error` (for example "server full").
    #[error("the server rejected the connection: {reason}")]
    Rejected {
        /// The server's reason, as it sent it.
        reason: String,
    },
    /// Something the server should have done did not happen in time.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// What was awaited, e.g. "the server's Welcome".
        waiting_for: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// The server closed the connection without saying goodbye with `Exit`.
    #[error("the server closed the connection")]
    ServerClosed,
    /// The server sent bytes that are not a valid frame (or closed the
    /// connection inside one).
    #[error("protocol error: {0}")]
    Decode(#[from] DecodeError),
    /// The server broke another rule of the protocol: a message out of
    /// turn, one only clients send, or an unusable `Welcome`. The client
    /// told the server why (an `Error` frame) before closing.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// The text is longer than the server accepts; nothing was sent, the
    /// session goes on. For `say` and `tell` the limit is what fits beside
    /// the room or name; for a name or room alone (`nick`, `join`, ...),
    /// `len` and `max` measure that name.
    #[error("text too long: {len} bytes, the server accepts at most {max}")]
    TooLong {
        /// The text's length in bytes (UTF-8).
        len: usize,
        /// The longest text the server accepts here, in bytes.
        max: usize,
    },
    /// A request of names and rooms on a version 1 session (the server does
    /// not offer them, or [`Options::rooms`](crate::Options::rooms) was
    /// off); nothing was sent, the session goes on.
    #[error("{request} needs names and rooms, which this session does not have (version 1)")]
    Unsupported {
        /// The request, e.g. "Join".
        request: &'static str,
    },
    /// The server sent a `Roster` or `Rooms` answer longer than
    /// [`Options::max_listed`](crate::Options::max_listed) entries (or
    /// several answers at once that add up to more), or, with history, so
    /// many live messages while pages were awaited that holding them would
    /// pass 100,000 (`what` is then "held live"). The client told the
    /// server why (an `Error` frame) before closing.
    #[error("the server's {what} answer has more than {max} entries")]
    TooMany {
        /// The message, "Roster" or "Rooms", or "held live".
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A request of history ([`Sender::resume`](crate::Sender::resume),
    /// [`Sender::recent`](crate::Sender::recent)) on a session without it
    /// (the server does not offer it, or
    /// [`Options::history`](crate::Options::history) was off); nothing was
    /// sent, the session goes on.
    #[error("{request} needs history, which this session does not have")]
    NoHistory {
        /// The request, e.g. "Resume".
        request: &'static str,
    },
    /// The server answered something we did not ask: a `Page` of a
    /// conversation with no `Resume` or `Recent` outstanding, or a second
    /// answer to one numbered request. The client told the server why (an
    /// `Error` frame) before closing.
    #[error("protocol violation: {got} of {what}, which the client did not ask for")]
    Unasked {
        /// The message, e.g. "Page".
        got: &'static str,
        /// What it was about.
        what: String,
    },
    /// The server refused to log us in ([`Options::login`](crate::Options::login)):
    /// a wrong password, a taken name, too many attempts, no guests taken...
    /// `code` says which (PROTOCOL.md section 10.4).
    #[error("login refused: {code}: {detail}")]
    Login {
        /// Why, as a code.
        code: chat_proto::Refusal,
        /// Why, for a human, as the server said it.
        detail: String,
    },
    /// A password or token would have gone in plaintext to a server that
    /// is not on this machine; nothing was sent. Connect with TLS.
    #[error("will not send a password or token in plaintext to {addr}: connect with TLS")]
    Insecure {
        /// The server's address.
        addr: std::net::SocketAddr,
    },
    /// A request of accounts ([`Options::login`](crate::Options::login),
    /// [`Sender::logout`](crate::Sender::logout)) where there are none: the
    /// server keeps no accounts, or the session is a guest's.
    #[error("{request} needs an account, and {why}")]
    NoAccount {
        /// The request, e.g. "Login".
        request: &'static str,
        /// What is missing.
        why: &'static str,
    },
    /// The session has ended (left, or lost); nothing more can be sent.
    #[error("not connected: the session has ended")]
    Disconnected,
    /// Reading from or writing to the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl From<ProtocolError> for Error {
    /// A bad frame is [`Error::Decode`]; any other broken rule is
    /// [`Error::Protocol`].
    fn from(err: ProtocolError) -> Self {
        match err {
            ProtocolError::Frame(e) => Error::Decode(e),
            other => Error::Protocol(other),
        }
    }
}

impl Error {
    /// A copy for a second recipient (the driver reports one failure both to
    /// the sender that hit it and to the event stream). `io::Error` is not
    /// `Clone`, so its copy keeps the kind and message.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Resolve { addr, source } => Error::Resolve {
                addr: addr.clone(),
                source: copy_io(source),
            },
            Error::Refused { addr } => Error::Refused { addr: addr.clone() },
            Error::Connect { addr, source } => Error::Connect {
                addr: addr.clone(),
                source: copy_io(source),
            },
            Error::Tls { addr, failure } => Error::Tls {
                addr: addr.clone(),
                failure: failure.clone(),
            },
            Error::NotTls { addr } => Error::NotTls { addr: addr.clone() },
            Error::Ca { path, reason } => Error::Ca {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Rejected { reason } => Error::Rejected {
                reason: reason.clone(),
            },
            Error::Timeout { waiting_for, after } => Error::Timeout {
                waiting_for,
                after: *after,
            },
            Error::ServerClosed => Error::ServerClosed,
            Error::Decode(e) => Error::Decode(e.clone()),
            Error::Protocol(s) => Error::Protocol(s.clone()),
            Error::TooLong { len, max } => Error::TooLong {
                len: *len,
                max: *max,
            },
            Error::Unsupported { request } => Error::Unsupported { request },
            Error::TooMany { what, max } => Error::TooMany { what, max: *max },
            Error::NoHistory { request } => Error::NoHistory { request },
            Error::Unasked { got, what } => Error::Unasked {
                got,
                what: what.clone(),
            },
            Error::Login { code, detail } => Error::Login {
                code: *code,
                detail: detail.clone(),
            },
            Error::Insecure { addr } => Error::Insecure { addr: *addr },
            Error::NoAccount { request, why } => Error::NoAccount { request, why },
            Error::Disconnected => Error::Disconnected,
            Error::Io(e) => Error::Io(copy_io(e)),
        }
    }
}

/// Why a TLS handshake failed, in the terms a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate is not issued by a trusted CA (another CA,
    /// or self-signed: trust its fingerprint instead).
    UnknownIssuer,
    /// The server's certificate has expired.
    Expired,
    /// The server's certificate is not valid yet.
    NotYetValid,
    /// The server's certificate does not name the host dialed.
    WrongName {
        /// The name checked.
        name: String,
    },
    /// The name to check is neither a DNS name nor an IP address.
    BadName {
        /// The name.
        name: String,
    },
    /// The server's certificate is not the one whose fingerprint is trusted.
    Fingerprint {
        /// The fingerprint of the certificate the server presented.
        got: Fingerprint,
    },
    /// The server sent a TLS alert: it refused the handshake.
    Alert(String),
    /// The server closed the connection during the handshake.
    Closed,
    /// Anything else, in rustls's words.
    Other(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::UnknownIssuer => {
                f.write_str("the server's certificate is not issued by a trusted CA")
            }
            TlsFailure::Expired => f.write_str("the server's certificate has expired"),
            TlsFailure::NotYetValid => f.write_str("the server's certificate is not valid yet"),
            TlsFailure::WrongName { name } => {
                write!(f, "the server's certificate is not valid for {name}")
            }
            TlsFailure::BadName { name } => {
                write!(
                    f,
                    "{name:?} is not a DNS name or IP address to check a certificate against"
                )
            }
            TlsFailure::Fingerprint { got } => write!(
                f,
                "the server's certificate has fingerprint {got}, not the one trusted"
            ),
            TlsFailure::Alert(alert) => write!(f, "the server refused the handshake ({alert})"),
            TlsFailure::Closed => {
                f.write_str("the server closed the connection during the handshake")
            }
            TlsFailure::Other(reason) => f.write_str(reason),
        }
    }
}

fn copy_io(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// Short lower-case wording for the common connect failures, instead of the
/// OS's "Connection timed out (os error 110)".
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        io::ErrorKind::AddrNotAvailable => "address not available".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}
