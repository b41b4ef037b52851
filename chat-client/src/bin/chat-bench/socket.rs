//! Moving bytes on a client's socket without waiting, for every system the
//! bench drives: one read into a growing buffer, one drain of pending output.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::net::TcpStream;

/// Room made for a read when less than a quarter of it is left: large
/// reads keep a fast receiver's syscalls and bookkeeping per message low.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// Reads once without waiting into `input`, making room first when little
/// is left: `Some(0)` at the end of the stream, `None` when nothing was there.
pub(crate) fn read_into(stream: &TcpStream, input: &mut BytesMut) -> io::Result<Option<usize>> {
    if input.capacity() - input.len() < READ_CHUNK / 4 {
        input.reserve(READ_CHUNK);
    }
    match stream.try_read_buf(input) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes what it can of `out` without waiting; `true` once all is written.
pub(crate) fn write_from(stream: &TcpStream, out: &mut BytesMut) -> io::Result<bool> {
    while !out.is_empty() {
        match stream.try_write(out) {
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
