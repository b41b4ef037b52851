//! Admission: who gets a session, who is told "server full", and who waits.
//!
//! A slot is taken *before* `accept`, as mini-redis does, so the server never
//! holds more sockets than it has slots for:
//!
//! - a client slot (`max_clients` of them) for a session;
//! - when none is free, a reject slot (`reject_slots` of them): the
//!   connection is accepted only to be told `Error { reason: "server full" }`
//!   and closed, within at most 1 s, so a refused client learns why at once;
//! - when both are taken, nothing is accepted: new connections wait in the
//!   kernel's listen queue, which pushes back on the clients.
//!
//! Each slot is a semaphore permit held by the task that owns the socket,
//! so it frees when that task ends, whatever way it ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::{Connection, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::config::Config;

/// Longest a refused client is given to take its "server full" and close.
pub(crate) const REFUSE_WAIT_MAX: Duration = Duration::from_secs(1);
/// Input a refused client may send that is read and dropped before the
/// socket is closed anyway.
const REFUSE_DRAIN_MAX: usize = 64 * 1024;

/// A place for one accepted connection.
#[derive(Debug)]
pub(crate) enum Slot {
    /// Counts against `max_clients`: the connection gets a session.
    Client(OwnedSemaphorePermit),
    /// One of the `reject_slots`: the connection is told "server full".
    Refuse(OwnedSemaphorePermit),
}

/// The two pools of slots, and a signal for when a socket closes.
#[derive(Debug)]
pub(crate) struct Admission {
    clients: Arc<Semaphore>,
    rejects: Arc<Semaphore>,
    /// Notified whenever a task holding a socket ends: a descriptor is free.
    closed: Arc<Notify>,
}

impl Admission {
    /// Pools sized by a validated `config`.
    pub(crate) fn new(config: &Config) -> Self {
        Admission {
            clients: Arc::new(Semaphore::new(config.max_clients)),
            rejects: Arc::new(Semaphore::new(config.reject_slots)),
            closed: Arc::new(Notify::new()),
        }
    }

    /// Waits for a slot: a client slot if one is free, else a reject slot,
    /// else whichever frees first (a client slot if both do). `None` only
    /// if the pools were closed, which they never are.
    pub(crate) async fn slot(&self) -> Option<Slot> {
        if let Ok(permit) = self.clients.clone().try_acquire_owned() {
            return Some(Slot::Client(permit));
        }
        tokio::select! {
            biased;
            Ok(permit) = self.clients.clone().acquire_owned() => Some(Slot::Client(permit)),
            Ok(permit) = self.rejects.clone().acquire_owned() => Some(Slot::Refuse(permit)),
            else => None,
        }
    }

    /// A reject slot becomes a client slot if one freed while accepting:
    /// nobody is refused while there is room.
    pub(crate) fn upgrade(&self, slot: Slot) -> Slot {
        match slot {
            Slot::Refuse(permit) => match self.clients.clone().try_acquire_owned() {
                Ok(client) => Slot::Client(client),
                Err(_) => Slot::Refuse(permit),
            },
            client => client,
        }
    }

    /// A guard to move into a task that owns a socket: when the task ends,
    /// waiters on [`closed`](Self::closed) are woken.
    pub(crate) fn on_close(&self) -> OnClose {
        OnClose(self.closed.clone())
    }

    /// Completes once a socket-owning task has ended since the last call
    /// (or at once if one ended before it).
    pub(crate) async fn closed(&self) {
        self.closed.notified().await;
    }
}

/// Wakes the accept loop when dropped; see [`Admission::on_close`].
#[derive(Debug)]
pub(crate) struct OnClose(Arc<Notify>);

impl Drop for OnClose {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Tells `stream` the server is full and closes it, within
/// `min(close_timeout, 1 s)`. `_slot` is held until then.
pub(crate) async fn refuse(
    stream: TcpStream,
    addr: SocketAddr,
    config: &Config,
    _slot: OwnedSemaphorePermit,
) {
    warn!(peer = %addr, "server full: refusing client");
    let server = ServerConfig::with_max_frame_len(config.max_frame_len).unwrap_or_default();
    let mut conn = Connection::server(server);
    conn.refuse("server full");
    let bytes = conn.transmit().unwrap_or_default();
    let bound = config.close_timeout.min(REFUSE_WAIT_MAX);
    match timeout(bound, goodbye(stream, &bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(peer = %addr, "refusal not delivered: {e}"),
        Err(_) => debug!(peer = %addr, "refused client still open after {bound:?}"),
    }
}

/// Writes `bytes`, half-closes, and waits for the peer to close its end,
/// dropping what it sends: closing with unread input would reset the
/// connection and could destroy the refusal in flight.
pub(crate) async fn goodbye<S>(mut stream: S, bytes: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(bytes).await?;
    stream.shutdown().await?;
    let mut scratch = [0u8; 1024];
    let mut drained = 0;
    while drained <= REFUSE_DRAIN_MAX {
        match stream.read(&mut scratch).await? {
            0 => return Ok(()),
            n => drained += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_clients: usize, reject_slots: usize) -> Admission {
        Admission::new(&Config {
            max_clients,
            reject_slots,
            ..Config::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn clients_first_then_rejects_then_nothing() {
        let pools = admission(1, 1);
        let Some(Slot::Client(client)) = pools.slot().await else {
            panic!("a client slot is free")
        };
        let Some(Slot::Refuse(reject)) = pools.slot().await else {
            panic!("a reject slot is free")
        };
        // Both pools taken: wait.
        let waiting = timeout(Duration::from_secs(3600), pools.slot()).await;
        assert!(waiting.is_err(), "no slot while both pools are taken");
        // A freed client slot goes to the next connection.
        drop(client);
        assert!(matches!(pools.slot().await, Some(Slot::Client(_))));
        drop(reject);
    }

    #[tokio::test]
    async fn a_reject_slot_is_upgraded_when_a_client_slot_frees() {
        let pools = admission(1, 1);
        let client = pools.slot().await;
        let Some(reject) = pools.slot().await else {
            panic!("a reject slot is free")
        };
        assert!(matches!(reject, Slot::Refuse(_)));
        drop(client);
        assert!(matches!(pools.upgrade(reject), Slot::Client(_)));
    }

    #[tokio::test]
    async fn zero_reject_slots_means_waiting() {
        let pools = admission(1, 0);
        let _client = pools.slot().await;
        let waiting = timeout(Duration::from_millis(20), pools.slot()).await;
        assert!(waiting.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn closing_a_socket_wakes_the_waiter() {
        let pools = admission(1, 1);
        let guard = pools.on_close();
        let waiter = pools.closed();
        tokio::pin!(waiter);
        assert!(
            timeout(Duration::from_secs(1), &mut waiter).await.is_err(),
            "nothing closed yet"
        );
        drop(guard);
        timeout(Duration::from_millis(1), waiter)
            .await
            .expect("woken when the guard drops");
    }
}
