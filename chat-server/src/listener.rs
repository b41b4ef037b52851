//! The accept loop: admits clients up to `max_clients` and gives each its
//! own session task.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::sleep;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use crate::session::{self, Shared};

/// First pause after an accept error that means "out of resources".
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts until the server's shutdown token is cancelled. Every task it
/// starts is registered in `tracker`, so shutdown can wait for them.
pub(crate) async fn accept(listener: &TcpListener, shared: &Arc<Shared>, tracker: &TaskTracker) {
    let slots = Arc::new(Semaphore::new(shared.config.max_clients));
    let mut backoff = BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff = BACKOFF_MIN;
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        debug!(peer = %addr, "accepted");
                        tracker.spawn(session::run(shared.clone(), stream, addr, permit));
                    }
                    Err(_) => {
                        warn!(peer = %addr, "server full: refusing client");
                        tracker.spawn(session::reject(shared.clone(), stream, addr));
                    }
                }
            }
            // The client gave up before we accepted it: nothing to do.
            Err(e) if transient(&e) => debug!("accept: {e}"),
            // Out of file descriptors or memory: wait for sessions to end
            // rather than spin. The pending connection stays in the backlog.
            Err(e) => {
                error!("accept failed: {e}; retrying in {backoff:?}");
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
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
