//! The accept loop: takes a slot (see [`crate::admission`]),
//! then accepts one connection for it and hands the socket to its task.
//!
//! Accept errors that concern one connection are skipped. The others (out
//! of file descriptors, out of memory) leave the connection in the listen
//! queue; the loop pauses briefly and tries again. The pause is capped at
//! [`Backoff::MAX`] and cut short when any socket closes, so the server
//! recovers within tens of milliseconds once descriptors free up.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs, lookup_host};
use tokio::time::sleep;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, error};

use crate::admission::{self, Admission, Admitted, Slot};
use crate::session::{self, Shared};
use crate::tls;

/// Binds a listening socket with a listen queue of `backlog`, trying each
/// address `addr` resolves to, as `TcpListener::bind` does (which would
/// leave the queue at 1,024).
pub(crate) async fn bind(addr: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in lookup_host(addr).await? {
        match listen(addr, backlog) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted server can bind its port
    // while the last run's connections linger in TIME_WAIT.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The listening sockets: plaintext, and TLS beside it if configured.
pub(crate) struct Listeners {
    pub(crate) plain: TcpListener,
    pub(crate) tls: Option<(TcpListener, TlsAcceptor)>,
}

impl Listeners {
    /// The next connection on either socket, with the TLS acceptor for it
    /// if it came to the TLS one.
    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr, Option<TlsAcceptor>)> {
        let Some((tls, acceptor)) = &self.tls else {
            let (stream, addr) = self.plain.accept().await?;
            return Ok((stream, addr, None));
        };
        tokio::select! {
            accepted = self.plain.accept() => accepted.map(|(stream, addr)| (stream, addr, None)),
            accepted = tls.accept() => {
                accepted.map(|(stream, addr)| (stream, addr, Some(acceptor.clone())))
            }
        }
    }
}

/// Accepts until the server's shutdown token is cancelled. Every task it
/// starts is registered in `tracker`, so shutdown can wait for them. One
/// loop serves both sockets: slots are taken before `accept`, and two loops
/// would each hold one while waiting.
pub(crate) async fn accept(listeners: &Listeners, shared: &Arc<Shared>, tracker: &TaskTracker) {
    let admission = Admission::new(&shared.config);
    let mut backoff = Backoff::default();
    loop {
        let slot = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            slot = admission.slot() => slot,
        };
        let Some(slot) = slot else { return };
        let accepted = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            accepted = listeners.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr, tls)) => {
                backoff.reset();
                let closed = admission.on_close();
                let (permit, refusal) = match admission.upgrade(slot) {
                    Slot::Client(permit) => match admission.admit(&shared.config, addr) {
                        Ok(ip) => {
                            debug!(peer = %addr, tls = tls.is_some(), "accepted");
                            let shared = shared.clone();
                            let admitted = Admitted::new(permit, ip, closed);
                            // The session's own future, not one around it.
                            match tls {
                                None => tracker.spawn(session::run(shared, stream, addr, admitted)),
                                Some(acceptor) => tracker
                                    .spawn(tls::run(shared, stream, addr, admitted, acceptor)),
                            };
                            continue;
                        }
                        // Its client slot is given back at once: such
                        // clients never crowd out the others.
                        Err(reason) => {
                            drop(permit);
                            let Some(permit) = admission.reject_slot() else {
                                debug!(peer = %addr, "refused, no reject slot to say why: {reason}");
                                continue;
                            };
                            (permit, reason)
                        }
                    },
                    Slot::Refuse(permit) => (permit, admission::FULL.to_string()),
                };
                let shared = shared.clone();
                tracker.spawn(async move {
                    let _closed = closed;
                    let config = &shared.config;
                    match tls {
                        None => {
                            let open = std::future::ready(Ok(stream));
                            admission::refuse(open, addr, config, permit, &refusal).await;
                        }
                        Some(acceptor) => {
                            let open = acceptor.accept(stream);
                            admission::refuse(open, addr, config, permit, &refusal).await;
                        }
                    }
                });
            }
            // The client gave up before we accepted it: nothing to do.
            Err(e) if transient(&e) => debug!("accept: {e}"),
            // Out of file descriptors or memory: pause rather than spin,
            // until a socket closes or the pause ends. The pending
            // connection stays in the listen queue.
            Err(e) => {
                drop(slot);
                let pause = backoff.next();
                error!("accept failed: {e}; retrying in {pause:?} or when a connection closes");
                tokio::select! {
                    biased;
                    () = shared.shutdown.cancelled() => return,
                    () = admission.closed() => {}
                    () = sleep(pause) => {}
                }
            }
        }
    }
}

/// Errors about one connection, not about the listener.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Pauses between failed accepts: doubling from [`Backoff::MIN`], capped at
/// [`Backoff::MAX`], back to the start after a success. The cap bounds how
/// long a client waits once the shortage is over (it used to be 1 s); a
/// failed accept is a cheap system call, so retrying 20 times a second
/// costs nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    /// First pause.
    pub(crate) const MIN: Duration = Duration::from_millis(5);
    /// Longest pause.
    pub(crate) const MAX: Duration = Duration::from_millis(50);

    /// The pause to take now; the following one is twice as long, up to
    /// [`Backoff::MAX`].
    pub(crate) fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(Self::MAX);
        pause
    }

    /// After a success: the next pause is [`Backoff::MIN`] again.
    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::MIN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let pauses: Vec<_> = (0..8).map(|_| backoff.next()).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            pauses,
            [
                ms(5),
                ms(10),
                ms(20),
                ms(40),
                ms(50),
                ms(50),
                ms(50),
                ms(50)
            ]
        );
        // However long the shortage, no pause exceeds the cap.
        assert!((0..10_000).all(|_| backoff.next() <= Backoff::MAX));
        backoff.reset();
        assert_eq!(backoff.next(), Backoff::MIN);
    }

    #[test]
    fn only_per_connection_errors_are_transient() {
        use io::ErrorKind::*;
        for kind in [
            ConnectionAborted,
            ConnectionReset,
            ConnectionRefused,
            Interrupted,
        ] {
            assert!(transient(&kind.into()), "{kind:?}");
        }
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of resources, back off.
        for errno in [24, 23, 105, 12] {
            assert!(!transient(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
    }
}
