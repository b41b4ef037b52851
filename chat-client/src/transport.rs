//! Dialing the server: TCP, and TLS over it when [`Options::tls`] asks.
//!
//! The driver moves bytes through [`Stream`], one type for both: plain TCP
//! keeps its readiness calls (no buffer of its own, no copy), TLS goes
//! through tokio-rustls. rustls uses the *ring* provider only.
//!
//! [`Options::tls`]: crate::Options::tls

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, ToSocketAddrs, lookup_host};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::{Error, TlsFailure};
use crate::fingerprint::Fingerprint;

/// How to reach the server over TLS: which certificate to trust, and the
/// name to check it against.
///
/// # Examples
///
/// ```
/// use chat_client::{Fingerprint, Options, TlsOptions};
///
/// // A server started with `--tls-self-signed` prints its fingerprint.
/// let pin: Fingerprint = "SHA256:5e0b3c7a8f0d6f7e1c1b1a2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d"
///     .parse()
///     .unwrap();
/// let mut options = Options::default();
/// options.tls = Some(TlsOptions::fingerprint(pin));
/// ```
#[derive(Clone)]
pub struct TlsOptions {
    config: Arc<rustls::ClientConfig>,
    /// The name the certificate must be valid for; `None`: the host of the
    /// address dialed.
    name: Option<String>,
    /// What is trusted, for `Debug`.
    trust: String,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("trust", &self.trust)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsOptions {
    /// Trusts the certificate authorities in a PEM file: the server's
    /// certificate must be issued by one of them, be valid now, and name
    /// the host dialed (or [`server_name`](TlsOptions::server_name)).
    ///
    /// # Errors
    ///
    /// [`Error::Ca`] if the file cannot be read or holds no usable
    /// certificate.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<TlsOptions, Error> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| Error::Ca {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        TlsOptions::ca(&pem, path)
    }

    /// As [`ca_file`](TlsOptions::ca_file), from PEM text.
    ///
    /// # Errors
    ///
    /// [`Error::Ca`] (its path `<memory>`) if the text holds no usable
    /// certificate.
    pub fn ca_pem(pem: &[u8]) -> Result<TlsOptions, Error> {
        TlsOptions::ca(pem, Path::new("<memory>"))
    }

    /// Trusts exactly the certificate with this SHA-256 fingerprint, as a
    /// server started with `--tls-self-signed` prints it: its issuer, names
    /// and dates are not checked, only that the server holds its key.
    pub fn fingerprint(fingerprint: Fingerprint) -> TlsOptions {
        let provider = provider();
        let verifier = Pinned {
            expected: fingerprint,
            algorithms: provider.signature_verification_algorithms,
        };
        let config = builder(provider)
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        TlsOptions {
            config: Arc::new(config),
            name: None,
            trust: fingerprint.to_string(),
        }
    }

    /// Checks the certificate against `name` rather than the host dialed
    /// (for a server reached by an address its certificate does not name).
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> TlsOptions {
        self.name = Some(name.into());
        self
    }

    /// Whether a reconnect may resume the previous TLS session, skipping
    /// the certificate exchange (default: yes).
    #[must_use]
    pub fn resumption(mut self, on: bool) -> TlsOptions {
        Arc::make_mut(&mut self.config).resumption = if on {
            rustls::client::Resumption::default()
        } else {
            rustls::client::Resumption::disabled()
        };
        self
    }

    /// The rustls configuration these options make, for a caller that
    /// drives rustls itself (chat-bench). Not a stable API.
    #[doc(hidden)]
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    fn ca(pem: &[u8], path: &Path) -> Result<TlsOptions, Error> {
        let bad = |reason: String| Error::Ca {
            path: path.to_owned(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no CERTIFICATE in it".into()));
        }
        let config = builder(provider())
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsOptions {
            config: Arc::new(config),
            name: None,
            trust: format!("CA {}", path.display()),
        })
    }
}

/// The *ring* provider, the only one linked. rustls deprecated it for
/// lacking post-quantum key exchange; the other, aws-lc-rs, needs a C build,
/// and two providers in one process make rustls panic at first use. X25519
/// first, as the server has it: rustls now lists P-384 first, which costs
/// *ring* about ten times as much per handshake.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    CryptoProvider {
        kx_groups: vec![X25519, SECP256R1, SECP384R1],
        ..rustls::crypto::ring::default_provider()
    }
}

fn builder(
    provider: CryptoProvider,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    // The ring provider supports the default versions: cannot fail.
    rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
}

/// Trusts one certificate, by fingerprint; the handshake's signatures are
/// still checked, so the server must hold that certificate's key.
#[derive(Debug)]
struct Pinned {
    expected: Fingerprint,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

/// The server's certificate is not the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("fingerprint {0}")]
struct Mismatch(Fingerprint);

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity);
        if got == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(Mismatch(got))),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The connection to the server: plain TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The server's address.
    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr(),
            Stream::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }

    /// Appends what can be read now to `buf`, whose spare capacity the
    /// caller has made. `Ready(Ok(0))`: the end of the stream.
    pub(crate) fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => loop {
                ready!(s.poll_read_ready(cx))?;
                match s.try_read_buf(buf) {
                    // Stale readiness, now cleared: the next poll registers.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => return Poll::Ready(other),
                }
            },
            Stream::Tls(s) => tokio_util::io::poll_read_buf(Pin::new(s), cx, buf),
        }
    }

    /// Writes some of `out`; with `out` empty, writes what TLS still holds
    /// of earlier writes (then `Ready(Ok(0))`).
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        out: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => loop {
                ready!(s.poll_write_ready(cx))?;
                match s.try_write(out) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => return Poll::Ready(other),
                }
            },
            Stream::Tls(s) if out.is_empty() => Pin::new(s).poll_flush(cx).map_ok(|()| 0),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, out),
        }
    }

    /// Whether TLS holds encrypted bytes not yet written to the socket.
    pub(crate) fn unflushed(&self) -> bool {
        match self {
            Stream::Tcp(_) => false,
            Stream::Tls(s) => s.get_ref().1.wants_write(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Resolves `addr`, connects to the first address that accepts, and with
/// `tls` takes the TLS handshake within `handshake`.
pub(crate) async fn dial<A: ToSocketAddrs>(
    addr: A,
    shown: &str,
    wait: Duration,
    tls: Option<&TlsOptions>,
    handshake: Duration,
) -> Result<Stream, Error> {
    let tcp = connect(addr, shown, wait).await?;
    let Some(tls) = tls else {
        return Ok(Stream::Tcp(tcp));
    };
    let host = match &tls.name {
        Some(name) => name.clone(),
        None => host(shown).to_owned(),
    };
    let fail = |failure| Error::Tls {
        addr: shown.to_owned(),
        failure,
    };
    let name = ServerName::try_from(host.clone())
        .map_err(|_| fail(TlsFailure::BadName { name: host.clone() }))?;
    let connector = TlsConnector::from(tls.config.clone());
    match timeout(handshake, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(Stream::Tls(Box::new(stream))),
        Ok(Err(e)) => Err(failed(e, shown, &host)),
        Err(_) => Err(Error::Timeout {
            waiting_for: "the TLS handshake",
            after: handshake,
        }),
    }
}

/// The host part of `HOST:PORT`, `[IPv6]:PORT` or a bare host.
fn host(shown: &str) -> &str {
    if let Ok(addr) = shown.parse::<SocketAddr>() {
        // An IPv6 address's text without its brackets.
        let text = shown.rsplit_once(':').map_or(shown, |(h, _)| h);
        return if addr.is_ipv6() {
            text.trim_start_matches('[').trim_end_matches(']')
        } else {
            text
        };
    }
    match shown.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => shown,
    }
}

/// The caller's error for a TLS handshake with `addr` (checked against
/// `host`) that failed with `e`, for a caller that drives rustls itself
/// (chat-bench). Not a stable API.
#[doc(hidden)]
pub fn handshake_error(e: io::Error, addr: &str, host: &str) -> Error {
    failed(e, addr, host)
}

/// The caller's error for a failed TLS handshake.
fn failed(e: io::Error, shown: &str, host: &str) -> Error {
    let addr = shown.to_owned();
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::Tls {
                addr,
                failure: TlsFailure::Closed,
            }
        } else {
            Error::Io(e)
        };
    };
    let failure = match tls {
        // Not a TLS record at all: a plaintext chat server's `Error` frame.
        rustls::Error::InvalidMessage(_) => return Error::NotTls { addr },
        rustls::Error::InvalidCertificate(cert) => match cert {
            // Or signed by another key than that of the trusted CA of the
            // same name.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                TlsFailure::UnknownIssuer
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFailure::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::WrongName {
                    name: host.to_owned(),
                }
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<Mismatch>() {
                Some(Mismatch(got)) => TlsFailure::Fingerprint { got: *got },
                None => TlsFailure::Other(tls.to_string()),
            },
            _ => TlsFailure::Other(tls.to_string()),
        },
        rustls::Error::AlertReceived(alert) => TlsFailure::Alert(format!("{alert:?}")),
        other => TlsFailure::Other(other.to_string()),
    };
    Error::Tls { addr, failure }
}

/// Resolves `addr` and connects to the first address that accepts.
async fn connect<A: ToSocketAddrs>(
    addr: A,
    shown: &str,
    wait: Duration,
) -> Result<TcpStream, Error> {
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
            Err(_) => last = Some(io::ErrorKind::TimedOut.into()),
        }
    }
    Err(match last {
        None => resolve(io::Error::new(
            io::ErrorKind::NotFound,
            "no addresses found",
        )),
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => Error::Refused {
            addr: shown.to_owned(),
        },
        Some(source) => Error::Connect {
            addr: shown.to_owned(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_any_usual_form() {
        let hex = "a769feca2e4f49f9d330709f395b86766e25a3d3e681c7519dc7545a4dad4495";
        let fp: Fingerprint = format!("SHA256:{hex}").parse().unwrap();
        assert_eq!(fp.to_string(), format!("SHA256:{hex}"));
        assert_eq!(hex.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(hex.to_uppercase().parse::<Fingerprint>(), Ok(fp));
        let colons: Vec<String> = hex
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(format!("sha256:{}", colons.join(":")).parse(), Ok(fp));
        for bad in [
            "",
            "SHA256:",
            &hex[1..],
            &format!("{hex}00"),
            &hex.replace('a', "g"),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_of_an_address() {
        assert_eq!(host("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host("[::1]:8443"), "::1");
        assert_eq!(host("chat.example:8443"), "chat.example");
        assert_eq!(host("chat.example"), "chat.example");
        assert_eq!(host("::1"), "::1");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let err = TlsOptions::ca_pem(b"not pem").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot use CA file <memory>: no CERTIFICATE in it"
        );
    }
}
