//! Clients that never read: the server must evict them as slow consumers.
//!
//! A stalled client shrinks its receive buffer before connecting, so that
//! the kernel cannot absorb what it does not read and the server's outbox
//! for it really fills. It handshakes, then reads nothing until the others
//! see it leave (the server's `Left` notice for its address) or the run is
//! over. Only then does it drain its socket, looking for the server's
//! `Error` and the end of the stream: a server gives an evicted client
//! `close_timeout` (2 s by default) to take that `Error`, and the `Left`
//! reaches the others within milliseconds, so the reason is still there.

use std::time::Duration;

use chat_proto::Event;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::conn::Client;
use crate::error::Error;

/// The receive buffer a stalled client asks for (the kernel doubles it and
/// enforces a minimum of a few KiB).
pub(crate) const RCVBUF: u32 = 4096;

/// The reason a server gives a client it evicts for not reading.
pub(crate) const SLOW_CONSUMER: &str = "slow consumer";

/// What became of a stalled client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub(crate) enum Outcome {
    /// The server sent `Error { reason }` and closed the connection.
    Evicted(String),
    /// The server closed the connection without an `Error` (or with `Exit`).
    Closed(String),
    /// Still connected when the time was up.
    NotEvicted,
    /// The run failed before this client could be checked.
    Unchecked,
}

impl Outcome {
    /// Evicted for the right reason.
    pub(crate) fn slow_consumer(&self) -> bool {
        matches!(self, Outcome::Evicted(reason) if reason == SLOW_CONSUMER)
    }
}

/// Holds `c` without reading until `left` fires (the others saw it leave),
/// then drains it at once. If the run is over (`finished`) first, waits up
/// to `grace` more for `left`, then drains anyway. A drain lasts `grace` at
/// most; `abort` gives up at once.
pub(crate) async fn stall(
    mut c: Client,
    left: &Notify,
    finished: &CancellationToken,
    abort: &CancellationToken,
    grace: Duration,
) -> Outcome {
    let seen = tokio::select! {
        () = abort.cancelled() => return Outcome::Unchecked,
        () = left.notified() => true,
        () = finished.cancelled() => false,
    };
    if !seen {
        tokio::select! {
            () = abort.cancelled() => return Outcome::Unchecked,
            () = left.notified() => {}
            () = tokio::time::sleep(grace) => {}
        }
    }
    let drain = async {
        loop {
            match c.next_event().await {
                Ok(Event::Error(reason)) => return Outcome::Evicted(reason),
                Ok(Event::Exit) => return Outcome::Closed("the server sent Exit".into()),
                Ok(_) => {}
                Err(Error::Disconnected { reason, .. }) => return Outcome::Closed(reason),
                Err(e) => return Outcome::Closed(e.to_string()),
            }
        }
    };
    tokio::select! {
        () = abort.cancelled() => Outcome::Unchecked,
        r = tokio::time::timeout(grace, drain) => r.unwrap_or(Outcome::NotEvicted),
    }
}
