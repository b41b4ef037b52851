//! TLS: a certificate and its key made ready to serve, and the accept path
//! of a TLS listener.
//!
//! rustls with the *ring* provider, named explicitly rather than taken from
//! a process-wide default. The handshake runs in the new client's own task,
//! under [`Config::handshake_timeout`](crate::Config::handshake_timeout);
//! then the session is served over the TLS stream exactly as over TCP.
//!
//! A client that speaks plaintext chat to the TLS port is recognised by its
//! first byte (every TLS connection starts with a handshake record, 0x16)
//! and told so in a plaintext chat `Error` frame, which it can read, rather
//! than left to fail on a TLS alert it cannot.

use std::fmt;
use std::io as stdio;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::admission::{self, Admitted};
use crate::metrics;
use crate::session::{self, Shared};

mod io;

/// What a plaintext chat client on the TLS port is told.
pub(crate) const PLAIN_ON_TLS: &str = "this port speaks TLS: connect with TLS";

/// The first byte of every TLS connection: a handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// A certificate chain and its private key, ready to serve TLS.
///
/// Made from PEM files ([`Tls::from_pem_files`]), PEM text
/// ([`Tls::from_pem`]), or generated for a trial ([`Tls::self_signed`]);
/// given to [`Server::tls`](crate::Server::tls). Clients that do not have
/// the issuing CA can trust the certificate by its
/// [`fingerprint`](Tls::fingerprint).
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    fingerprint: String,
    /// The certificate in PEM, when this side made it.
    generated: Option<String>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Tls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a certificate or key could not be used. Each names the file at
/// fault, when there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: stdio::Error,
    },
    /// The PEM text is malformed, or holds no item of the kind needed (a
    /// `CERTIFICATE`; a `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE
    /// KEY`).
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file (`<memory>` for PEM given as text).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair: the key does not match the certificate, or
    /// its kind is not supported.
    #[error("certificate {} and key {}: {reason}", cert.display(), key.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// A self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

impl Tls {
    /// Loads a certificate chain (the server's certificate first, then any
    /// intermediates) and its private key (PKCS#8, PKCS#1 or SEC1), both
    /// PEM.
    ///
    /// # Errors
    ///
    /// [`TlsError`] naming the file that cannot be read, is not PEM, holds
    /// no certificate or key, or a key that does not match.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Tls, TlsError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Tls::load(&read(cert)?, cert, &read(key)?, key)
    }

    /// As [`from_pem_files`](Tls::from_pem_files), from PEM text.
    ///
    /// # Errors
    ///
    /// As [`from_pem_files`](Tls::from_pem_files), the files named
    /// `<memory>`.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Tls, TlsError> {
        let memory = Path::new("<memory>");
        Tls::load(cert, memory, key, memory)
    }

    /// Generates a self-signed certificate for `names` (host names or IP
    /// addresses; `localhost`, `127.0.0.1` and `::1` if empty), for a trial:
    /// clients trust it by its [`fingerprint`](Tls::fingerprint).
    ///
    /// # Errors
    ///
    /// [`TlsError::Generate`] if a name is not usable in a certificate.
    pub fn self_signed(names: &[String]) -> Result<Tls, TlsError> {
        let names = if names.is_empty() {
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
        } else {
            names.to_vec()
        };
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let cert = made.cert.pem();
        let key = made.key_pair.serialize_pem();
        let mut tls = Tls::from_pem(cert.as_bytes(), key.as_bytes())?;
        tls.generated = Some(cert);
        Ok(tls)
    }

    /// The SHA-256 fingerprint of the server's certificate, as
    /// `SHA256:` and 64 lowercase hex digits: what a client given
    /// `--fingerprint` compares.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate in PEM, if [`self_signed`](Tls::self_signed) made
    /// it (a client can also trust it as its CA file).
    pub fn certificate_pem(&self) -> Option<&str> {
        self.generated.as_deref()
    }

    /// What accepts TLS connections with this certificate.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    fn load(cert: &[u8], cert_path: &Path, key: &[u8], key_path: &Path) -> Result<Tls, TlsError> {
        let pem = |path: &Path, reason: String| TlsError::Pem {
            path: path.to_owned(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(cert_path, e.to_string()))?;
        let Some(leaf) = chain.first() else {
            return Err(pem(cert_path, "no CERTIFICATE in it".into()));
        };
        let fingerprint = fingerprint(leaf);
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                pem(key_path, "no PRIVATE KEY in it".into())
            }
            other => pem(key_path, other.to_string()),
        })?;
        let unusable = |e: rustls::Error| TlsError::Unusable {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason: e.to_string(),
        };
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(unusable)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(unusable)?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            fingerprint,
            generated: None,
        })
    }
}

/// The *ring* provider. rustls deprecated it for lacking post-quantum key
/// exchange; the only other, aws-lc-rs, needs a C build, and two providers
/// in one process make rustls panic at first use (rustls issue 2148).
/// X25519 first: rustls now lists P-384 first, which costs *ring* about
/// ten times as much per handshake.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![X25519, SECP256R1, SECP384R1],
        ..rustls::crypto::ring::default_provider()
    })
}

/// `SHA256:` and the hex digest of `cert`'s DER.
fn fingerprint(cert: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("SHA256:");
    for byte in digest.as_ref() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// How the start of a connection to the TLS port went.
enum Start {
    Tls(Box<io::Tls>),
    /// The client spoke first, and not TLS.
    Plain(TcpStream),
    /// It closed before saying anything.
    Gone,
}

/// Serves one client accepted on the TLS port: its TLS handshake within the
/// handshake timeout, then the session over the TLS stream.
pub(crate) async fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    mut admitted: Admitted,
    acceptor: TlsAcceptor,
) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(peer = %addr, "cannot set TCP_NODELAY: {e}");
    }
    let config = &shared.config;
    let started = tokio::select! {
        biased;
        () = shared.shutdown.cancelled() => return,
        // Boxed: the handshake's state is larger than a serving session's,
        // and this task's future would otherwise keep room for it while the
        // client is served.
        started = Box::pin(timeout(config.handshake_timeout, start(stream, acceptor))) => started,
    };
    match started {
        Ok(Ok(Start::Tls(tls))) => {
            session::serve(shared, *tls, addr, Some(admitted), metrics::Transport::Tls).await;
        }
        Ok(Ok(Start::Plain(stream))) => {
            info!(peer = %addr, "plaintext client on the TLS port: refusing it");
            let bytes = admission::refusal(config, PLAIN_ON_TLS);
            let bound = config.close_timeout.min(admission::REFUSE_WAIT_MAX);
            admitted.leave();
            if timeout(bound, admission::goodbye(stream, &bytes))
                .await
                .is_err()
            {
                debug!(peer = %addr, "refused client still open after {bound:?}");
            }
        }
        Ok(Ok(Start::Gone)) => debug!(peer = %addr, "closed before the TLS handshake"),
        Ok(Err(e)) => info!(peer = %addr, "TLS handshake failed: {e}"),
        Err(_) => info!(peer = %addr, "TLS handshake timeout"),
    }
}

/// Waits for the client's first byte, then takes the TLS handshake if it
/// starts one.
async fn start(stream: TcpStream, acceptor: TlsAcceptor) -> stdio::Result<Start> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(Start::Gone);
    }
    if first[0] != HANDSHAKE_RECORD {
        return Ok(Start::Plain(stream));
    }
    let tls = io::Tls::accept(stream, acceptor.config().clone()).await?;
    Ok(Start::Tls(Box::new(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_has_a_sha256_fingerprint() {
        let tls = Tls::self_signed(&[]).unwrap();
        let fp = tls.fingerprint();
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert_eq!(fp.len(), 7 + 64);
        assert!(fp[7..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(tls.certificate_pem().unwrap().contains("BEGIN CERTIFICATE"));
        // Each generation is a new key and certificate.
        assert_ne!(Tls::self_signed(&[]).unwrap().fingerprint(), fp);
        // The key stays out of Debug.
        assert!(!format!("{tls:?}").contains("PRIVATE"));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Tls::from_pem_files(&missing, &missing).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        Tls::from_pem_files(&cert, &key).unwrap();

        // Swapped: no certificate in the key file, and the other way round.
        let err = Tls::from_pem_files(&key, &cert).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: no CERTIFICATE in it", key.display())
        );
        let err = Tls::from_pem_files(&cert, &cert).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: no PRIVATE KEY in it", cert.display())
        );

        // Another certificate's key.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&key, other.key_pair.serialize_pem()).unwrap();
        let err = Tls::from_pem_files(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::Unusable { .. }), "{err}");
        assert!(err.to_string().contains("key.pem"), "{err}");
    }
}
