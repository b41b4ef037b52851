//! The admin listener: a tiny HTTP/1.1 server on [`Config::admin`], off
//! unless configured, for monitoring and orchestration.
//!
//! - `GET /metrics`: the [metrics](crate::metrics) in the Prometheus text
//!   format.
//! - `GET /health`: `200 ok` while the server serves, `503 shutting down`
//!   from the moment it starts to shut down until it has stopped.
//! - Anything else: `404` (`405` for another method on those two paths).
//!
//! One connection is one request (`Connection: close`). What a client can
//! hold is bounded: the request head must fit [`HEAD_MAX`] bytes
//! (`431` otherwise) and arrive within [`HEAD_TIME`] (`408` otherwise), a
//! request body is never read, and at most [`CONNECTIONS`] admin
//! connections are served at once (more wait in the listen queue). The
//! admin listener has its own task and never touches a chat session.
//!
//! [`Config::admin`]: crate::Config::admin

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::metrics::CONTENT_TYPE;
use crate::session::Shared;

/// Largest request head (request line and headers) read.
pub(crate) const HEAD_MAX: usize = 8 * 1024;
/// Time a client has to send its whole request head.
pub(crate) const HEAD_TIME: Duration = Duration::from_secs(5);
/// Admin connections served at once.
pub(crate) const CONNECTIONS: usize = 16;
/// Time a client has to take the response.
const WRITE_TIME: Duration = Duration::from_secs(5);
/// After the response: how long, and how much, input is read and dropped
/// while waiting for the client to close (closing with unread input would
/// reset the connection, and could destroy the response in flight).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_MAX: usize = 64 * 1024;

/// The running admin listener.
#[derive(Debug)]
pub(crate) struct Admin {
    stopping: Arc<AtomicBool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Admin {
    /// Serves `listener` in a task of its own until [`stop`](Self::stop).
    pub(crate) fn start(listener: TcpListener, shared: Arc<Shared>) -> Admin {
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(listener, shared, stopping.clone(), stop.clone()));
        Admin {
            stopping,
            stop,
            task,
        }
    }

    /// The server is shutting down: `/health` says so from now on.
    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Closes the listener and every admin connection.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Accepts until `stop`, each connection in a task of its own holding one
/// of [`CONNECTIONS`] slots; ending drops (aborts) those still running.
async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    stopping: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let slot = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => slot,
        };
        // Never closed; but if it were, serving nobody is the answer.
        let Ok(slot) = slot else { return };
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                debug!(%peer, "admin connection");
                let (shared, stopping) = (shared.clone(), stopping.clone());
                conns.spawn(async move {
                    let _slot = slot;
                    handle(stream, &shared, &stopping).await;
                });
            }
            Err(e) => {
                // Out of descriptors, most likely: the chat listener backs
                // off too; do not spin.
                debug!("admin accept: {e}");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// Why no request head was read.
enum Unread {
    TooLarge,
    /// The client closed, or the connection failed, first.
    Gone,
}

/// Serves one request on `stream`, then closes it.
async fn handle(mut stream: TcpStream, shared: &Shared, stopping: &AtomicBool) {
    let mut head = Vec::with_capacity(1024);
    let deadline = Instant::now() + HEAD_TIME;
    let response = match timeout_at(deadline, read_head(&mut stream, &mut head)).await {
        Ok(Ok(())) => route(&head, shared, stopping.load(Ordering::Relaxed)),
        Ok(Err(Unread::TooLarge)) => {
            let body = format!("request head larger than {HEAD_MAX} bytes\n");
            Response::text(431, "Request Header Fields Too Large", body)
        }
        Ok(Err(Unread::Gone)) => return,
        Err(_) => Response::text(408, "Request Timeout", "request timeout\n".into()),
    };
    let sent = timeout(WRITE_TIME, async {
        stream.write_all(&response.encode()).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let _ = timeout(LINGER_TIME, async {
        let mut scratch = [0u8; 1024];
        let mut read = 0;
        while read < LINGER_MAX {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// Reads into `head` until the blank line that ends a request head.
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> Result<(), Unread> {
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(head) {
            return if end <= HEAD_MAX {
                Ok(())
            } else {
                Err(Unread::TooLarge)
            };
        }
        if head.len() >= HEAD_MAX {
            return Err(Unread::TooLarge);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Unread::Gone),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Where the head ends (after its blank line), if it does: CRLF line ends,
/// or bare LF.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An answer, always with `Connection: close`.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    /// A `HEAD` request: the headers only.
    head_only: bool,
    allow: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: String) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body,
            head_only: false,
            allow: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let allow = if self.allow {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// The answer to a whole request head.
fn route(head: &[u8], shared: &Shared, stopping: bool) -> Response {
    let bad = || Response::text(400, "Bad Request", "bad request\n".into());
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return bad();
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad();
    };
    if !version.starts_with("HTTP/1.") {
        return bad();
    }
    let path = target.split('?').next().unwrap_or_default();
    let known = matches!(path, "/metrics" | "/health");
    let mut response = match (method, path) {
        (_, _) if !known => return Response::text(404, "Not Found", "not found\n".into()),
        ("GET" | "HEAD", "/metrics") => Response {
            content_type: CONTENT_TYPE,
            ..Response::text(200, "OK", shared.metrics.render(shared.hub.room_count()))
        },
        ("GET" | "HEAD", _) if stopping => {
            Response::text(503, "Service Unavailable", "shutting down\n".into())
        }
        ("GET" | "HEAD", _) => Response::text(200, "OK", "ok\n".into()),
        _ => Response {
            allow: true,
            ..Response::text(405, "Method Not Allowed", "use GET\n".into())
        },
    };
    response.head_only = method == "HEAD";
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn responses_say_how_long_they_are_and_close() {
        let r = Response::text(404, "Not Found", "not found\n".into()).encode();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 10\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nnot found\n"));
    }
}
