//! The byte stream under a session: what it reads from and writes to.
//!
//! A session never names a socket type; it reads into its protocol
//! machine's input buffer and writes shared [`Bytes`] slices through a
//! [`Transport`]. Plain TCP implements it with tokio's readiness calls, so
//! an idle connection holds no read buffer and a batch of queued frames goes
//! out in one vectored write. Anything that is `AsyncRead + AsyncWrite`
//! (a TLS stream, a WebSocket adapter, an in-memory pipe) plugs in through
//! [`Stream`].
//!
//! [`Bytes`]: bytes::Bytes

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A bidirectional byte stream a session can be served over.
///
/// Every method follows the `poll` contract: `Poll::Pending` registers the
/// waker in `cx` and the session is woken when progress is possible.
pub(crate) trait Transport: Send + Unpin {
    /// Whether what goes over it is encrypted (TLS): a password or token
    /// may come over it from afar.
    const SECURE: bool = false;

    /// Appends what can be read now to `buf`, at most about `max` bytes.
    /// `Ready(Ok(0))` is the end of the stream. Leaves no spare capacity
    /// behind in an empty `buf` when nothing could be read.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>>;

    /// Writes from `bufs`, in order; returns how many bytes were taken.
    fn poll_write(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>])
    -> Poll<io::Result<usize>>;

    /// Writes out what the transport itself still holds of what it took
    /// (a TLS stream's encrypted records); TCP holds nothing.
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Flushes and closes the sending direction; reading goes on.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Transport for TcpStream {
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            // Room for a chunk, reserved only once data is known to be
            // there; the session gives back what it does not keep.
            if buf.capacity() - buf.len() < max.max(4) / 4 {
                buf.reserve(max.max(1));
            }
            match self.try_read_buf(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                // The readiness was stale; tokio has cleared it, so the next
                // poll registers the waker. Keep no buffer for nothing.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            match self.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(self), cx)
    }
}

/// Any `AsyncRead + AsyncWrite` stream as a [`Transport`]: TLS, WebSocket
/// adapters, test pipes.
///
/// Such streams need a buffer to read into before they know whether data is
/// there; it is taken from the session's input buffer and given back when
/// the read finds nothing, so an idle session still holds none.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // For the WebSocket issue.
pub(crate) struct Stream<S>(pub(crate) S);

impl<S> Transport for Stream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        // The stream needs room before it can say whether data is there;
        // an idle session gives it back below, so it holds none between
        // wake-ups. Read into spare capacity: no zeroing, no copy.
        if buf.capacity() - buf.len() < max.max(4) / 4 {
            buf.reserve(max.max(1));
        }
        let polled = tokio_util::io::poll_read_buf(Pin::new(&mut self.0), cx, buf);
        if polled.is_pending() && buf.is_empty() {
            *buf = BytesMut::new();
        }
        polled
    }

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
