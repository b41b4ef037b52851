//! The bytes a session has taken on to write: a queue of shared [`Bytes`]
//! written with vectored writes, and which frame is half written.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};

use crate::transport::Transport;

/// Most slices one vectored write is given, whatever `max_iov` says: the
/// slice array lives on the stack.
const IOV_CEILING: usize = 1024;

/// Outgoing buffers not yet written, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    queue: Vec<Bytes>,
    /// The front buffer has been partly written: it must be finished before
    /// anything else goes out, or the peer would see a cut frame.
    partial: bool,
}

impl Writer {
    /// Whether everything taken on has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Buffers waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Bytes waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.queue.iter().map(Bytes::len).sum()
    }

    /// Queues `bytes` behind what is already waiting.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.queue.push(bytes);
        }
    }

    /// The queue itself, for an outbox to drain into.
    pub(crate) fn queue(&mut self) -> &mut Vec<Bytes> {
        &mut self.queue
    }

    /// One vectored write of up to `max_iov` buffers. `Ready(Ok(()))` when
    /// the transport took some bytes (or nothing was waiting).
    pub(crate) fn poll_write<T: Transport + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut T,
        max_iov: usize,
    ) -> Poll<io::Result<()>> {
        if self.queue.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let mut slices = [IoSlice::new(&[]); 64];
        let mut heap;
        let n = self.queue.len().min(max_iov.clamp(1, IOV_CEILING));
        let slices: &mut [IoSlice<'_>] = if n <= slices.len() {
            &mut slices[..n]
        } else {
            heap = vec![IoSlice::new(&[]); n];
            &mut heap
        };
        for (slice, buf) in slices.iter_mut().zip(&self.queue) {
            *slice = IoSlice::new(buf);
        }
        match io.poll_write(cx, slices) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(written)) => {
                self.advance(written);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes everything, then closes the sending direction.
    pub(crate) async fn finish<T: Transport + ?Sized>(
        &mut self,
        io: &mut T,
        max_iov: usize,
    ) -> io::Result<()> {
        while !self.is_empty() {
            std::future::poll_fn(|cx| self.poll_write(cx, io, max_iov)).await?;
        }
        std::future::poll_fn(|cx| io.poll_shutdown(cx)).await
    }

    fn advance(&mut self, mut written: usize) {
        let done = self
            .queue
            .iter()
            .take_while(|buf| {
                let whole = written >= buf.len();
                if whole {
                    written -= buf.len();
                }
                whole
            })
            .count();
        self.queue.drain(..done);
        if done > 0 {
            self.partial = false;
        }
        if written > 0 {
            self.queue[0].advance(written);
            self.partial = true;
        }
    }

    /// Drops everything queued except the rest of a partly written frame,
    /// which must still go out whole before a final `Error`.
    pub(crate) fn discard(&mut self) {
        let keep = usize::from(self.partial);
        self.queue.truncate(keep);
    }

    /// Gives the queue's memory back once it is empty: an idle connection
    /// holds none (not after every write, which would reallocate it on
    /// every round under load).
    pub(crate) fn release(&mut self) {
        if self.queue.is_empty() {
            self.queue = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_tracks_partial_frames() {
        let mut out = Writer::default();
        out.push(Bytes::from_static(b"abc"));
        out.push(Bytes::from_static(b"defg"));
        out.advance(4);
        assert!(out.partial);
        assert_eq!(out.queue, vec![Bytes::from_static(b"efg")]);
        out.push(Bytes::from_static(b"h"));
        out.discard();
        assert_eq!(out.queue, vec![Bytes::from_static(b"efg")]);
        out.advance(3);
        assert!(!out.partial);
        assert!(out.is_empty());
    }
}
