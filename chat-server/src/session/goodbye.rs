//! How a session ends: leaving the hub, the last words the reason calls
//! for, a half-close, and a bounded wait for the client to close its end.

use std::future::poll_fn;
use std::io;

use bytes::BytesMut;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, warn};

use super::{Session, after};
use crate::dispatch::Client;
use crate::peer::Peer;
use crate::transport::Transport;

/// Why a session ends.
#[derive(Debug)]
pub(crate) enum Close {
    /// The client closed its end between frames.
    Eof,
    /// The transport failed (reset, broken pipe, ...).
    Gone(io::Error),
    /// The client sent `Exit`.
    Exit,
    /// The client sent `Error` and is going away.
    ClientError(String),
    /// The server is shutting down.
    Shutdown,
    /// The outbox overflowed: slow consumer.
    Evicted,
    /// The client broke a protocol rule; the machine has queued the `Error`.
    Violation(String),
    /// A limit of the server's: tell the client why, then close.
    Refuse(String),
}

impl Close {
    /// Its name in the metrics (see [`crate::metrics`]).
    fn label(&self) -> &'static str {
        match self {
            Close::Eof => "closed",
            Close::Gone(_) => "io",
            Close::Exit => "exit",
            Close::ClientError(_) => "client_error",
            Close::Shutdown => "shutdown",
            Close::Evicted => "slow_consumer",
            Close::Violation(_) => "bad_frame",
            Close::Refuse(reason) => match reason.as_str() {
                "handshake timeout" => "timeout",
                "frame timeout" => "frame_timeout",
                "idle timeout" => "idle",
                r if r.starts_with("flood") => "flood",
                _ => "refused",
            },
        }
    }
}

impl<T: Transport> Session<T> {
    /// Leaves the room, says goodbye as the reason requires, and closes.
    pub(super) async fn finish(mut self, close: Close) {
        let addr = self.addr;
        self.shared.metrics.ended(self.open, close.label());
        // Nothing more is read but to discard it: let a half-received frame
        // go now rather than hold it through the goodbye.
        self.conn.input().clear();
        self.conn.release();
        // Its messages on their way through history reach the others before
        // its `Left` does (bounded: a stuck store does not keep it here).
        if let Some(client) = self.client.as_ref().filter(|c| c.peer.in_flight() > 0) {
            let until = after(Instant::now(), self.shared.config.close_timeout);
            // Boxed: every idle session's future would otherwise hold room
            // for this wait.
            Box::pin(settle(&client.peer, until)).await;
        }
        // Leaving first: the others hear `Left` (the drop announces it), and
        // nothing more is queued for this client.
        let peer = self.client.take().map(Client::leave);
        let outbox = peer.as_ref().map(|peer| &peer.outbox);
        // A leaving client no longer counts against the limit.
        if let Some(admitted) = &mut self.admitted {
            admitted.leave();
        }
        let config = &self.shared.config;
        let budget = match close {
            Close::Eof => {
                info!(peer = %addr, "client disconnected");
                return;
            }
            Close::Gone(e) => {
                info!(peer = %addr, "client connection lost: {e}");
                return;
            }
            Close::ClientError(reason) => {
                info!(peer = %addr, "client left with an error: {reason}");
                return;
            }
            Close::Exit | Close::Shutdown => {
                // Everything queued for the client goes first: after the
                // shutdown signal nothing more can be (the hub is closed).
                if let Some(outbox) = &outbox {
                    if outbox.drain_into(self.out.queue(), usize::MAX).is_err() {
                        self.out.discard();
                    }
                }
                if matches!(close, Close::Exit) {
                    info!(peer = %addr, "client exited");
                    let _ = self.conn.exit();
                    config.close_timeout
                } else {
                    debug!(peer = %addr, "shutting down");
                    self.conn.shutdown();
                    config.shutdown_grace
                }
            }
            Close::Evicted => {
                warn!(peer = %addr, "slow consumer evicted");
                self.out.discard();
                self.conn.refuse("slow consumer");
                config.close_timeout
            }
            Close::Refuse(reason) => {
                warn!(peer = %addr, "closing: {reason}");
                self.out.discard();
                self.conn.refuse(&reason);
                config.close_timeout
            }
            Close::Violation(reason) => {
                warn!(peer = %addr, "closing: {reason}");
                self.out.discard();
                config.close_timeout
            }
        };
        drop(peer);
        if let Some(bytes) = self.conn.transmit() {
            self.out.push(bytes);
        }
        let deadline = after(Instant::now(), budget);
        match timeout_at(deadline, self.goodbye()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(peer = %addr, "goodbye not delivered: {e}"),
            Err(_) => debug!(peer = %addr, "goodbye not delivered in {budget:?}"),
        }
    }

    /// Writes what is queued, half-closes, and waits for the client to close
    /// its end, discarding what it sends: closing a socket with unread input
    /// would reset the connection and could destroy the final frame in flight.
    async fn goodbye(&mut self) -> io::Result<()> {
        let config = &self.shared.config;
        self.out.finish(&mut self.io, config.max_iov).await?;
        let (chunk, enough) = (config.read_chunk, config.max_frame_len * 16);
        let mut sink = BytesMut::new();
        let mut discarded = 0usize;
        loop {
            sink.clear();
            match poll_fn(|cx| self.io.poll_read(cx, &mut sink, chunk)).await? {
                0 => return Ok(()),
                n => discarded += n,
            }
            if discarded > enough {
                return Ok(()); // enough politeness
            }
        }
    }
}

/// Waits, until `until` at most, for `peer`'s messages on their way through
/// history to be delivered.
async fn settle(peer: &Peer, until: Instant) {
    while peer.in_flight() > 0 {
        if timeout_at(until, peer.outbox.ready()).await.is_err() {
            return;
        }
    }
}
