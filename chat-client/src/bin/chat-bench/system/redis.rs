//! A Redis server, pub/sub over RESP2.
//!
//! Each client holds a connection that sends `SUBSCRIBE` with its channels
//! (`chat` in `fanout`, its rooms' `room.<i>` in `rooms`) and waits for
//! every confirmation before the run starts; a client that sends also
//! holds one that sends `PUBLISH <channel> <payload>` (arrays of bulk
//! strings, pipelined) and reads and discards the integer replies (a
//! silent member has none: 10,000 clients of which 1,000 send take 11,000
//! connections). A delivery is `*3 $7 message $<n> <channel> $<len>
//! <payload>`. Redis delivers a client's own messages to its own
//! subscription too: the workload counts those apart.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::{Buf, BytesMut};
use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;

use super::{Got, Peer, crlf, decimal, subscribed};
use crate::error::Error;
use crate::socket::{read_into, write_from};

/// One RESP2 value that is not an array.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// `$<len>`: where its bytes lie.
    Bulk(Range<usize>),
    /// `:<n>`.
    Int(i64),
    /// `+...`.
    Simple,
    /// `-...`.
    Error(String),
    /// `*<n>`: the next `n` values are its elements.
    Array(usize),
    /// `$-1`, `*-1`.
    Nil,
}

/// The value at the front of `buf` and the bytes it takes (for an array,
/// only its header); `None` until it is all there.
pub(crate) fn value(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    let Some(eol) = crlf(buf) else {
        if buf.len() > 64 * 1024 {
            return Err("a RESP line longer than 64 KiB".into());
        }
        return Ok(None);
    };
    let line = &buf[1..eol];
    let next = eol + 2;
    let bad = || format!("a bad RESP line: {}", String::from_utf8_lossy(&buf[..eol]));
    let v = match buf[0] {
        b'$' if line == b"-1" => Value::Nil,
        b'*' if line == b"-1" => Value::Nil,
        b'$' => {
            let len = decimal(line).ok_or_else(bad)?;
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("a bulk string not followed by CRLF".into());
            }
            return Ok(Some((Value::Bulk(next..end), end + 2)));
        }
        b'*' => Value::Array(decimal(line).ok_or_else(bad)?),
        b':' => {
            let s = std::str::from_utf8(line).map_err(|_| bad())?;
            Value::Int(s.parse().map_err(|_| bad())?)
        }
        b'+' => Value::Simple,
        b'-' => Value::Error(String::from_utf8_lossy(line).into_owned()),
        _ => return Err(bad()),
    };
    Ok(Some((v, next)))
}

/// A push on the subscribing connection: `[kind, channel, data]`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// `message <channel> <payload>`: where the channel and the payload lie.
    Message {
        channel: Range<usize>,
        payload: Range<usize>,
    },
    /// `subscribe <channel> <count>`: where the channel lies.
    Subscribed(Range<usize>),
}

/// The push at the front of `buf` and the bytes it takes; `None` until it
/// is all there.
pub(crate) fn push(buf: &[u8]) -> Result<Option<(Push, usize)>, String> {
    let Some((head, mut at)) = value(buf)? else {
        return Ok(None);
    };
    match head {
        Value::Array(3) => {}
        Value::Error(e) => return Err(format!("the server said {e}")),
        other => return Err(format!("expected a push of 3 elements, got {other:?}")),
    }
    let mut items = [Value::Nil, Value::Nil, Value::Nil];
    for item in &mut items {
        let Some((v, used)) = value(&buf[at..])? else {
            return Ok(None);
        };
        *item = match v {
            Value::Bulk(r) => Value::Bulk(at + r.start..at + r.end),
            Value::Int(n) => Value::Int(n),
            other => return Err(format!("an unexpected element in a push: {other:?}")),
        };
        at += used;
    }
    let [Value::Bulk(kind), Value::Bulk(channel), data] = items else {
        return Err("a push without its kind and channel".into());
    };
    match (&buf[kind], data) {
        (b"message", Value::Bulk(payload)) => Ok(Some((Push::Message { channel, payload }, at))),
        (b"subscribe", Value::Int(_)) => Ok(Some((Push::Subscribed(channel), at))),
        (k, _) => Err(format!(
            "an unexpected push: {}",
            String::from_utf8_lossy(k)
        )),
    }
}

/// Appends the command `PUBLISH <channel> <payload>`.
pub(crate) fn put_publish(out: &mut BytesMut, channel: &str, payload: &[u8]) {
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$");
    out.extend_from_slice(channel.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(b"\r\n$");
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// A client: a subscribed connection, and a publishing one if it sends.
#[derive(Debug)]
pub(crate) struct Redis {
    id: usize,
    /// Its channels: its rooms, in the order it says its messages in them.
    channels: Vec<String>,
    sub: TcpStream,
    publ: Option<TcpStream>,
    /// What the subscribing connection has read.
    input: BytesMut,
    /// What the publishing connection has read (its replies).
    replies: BytesMut,
    /// Commands not yet written to the publishing connection.
    out: BytesMut,
    closed: bool,
}

impl Redis {
    /// Opens its connections (the publishing one if it `sends`), subscribes
    /// to `channels`, and waits for every confirmation.
    pub(crate) async fn connect(
        id: usize,
        server: SocketAddr,
        channels: Vec<String>,
        sends: bool,
    ) -> Result<Redis, Error> {
        let failed = |source| Error::Connect {
            id,
            addr: server,
            source,
        };
        let sub = TcpStream::connect(server).await.map_err(failed)?;
        sub.set_nodelay(true).map_err(failed)?;
        let publ = if sends {
            let publ = TcpStream::connect(server).await.map_err(failed)?;
            publ.set_nodelay(true).map_err(failed)?;
            Some(publ)
        } else {
            None
        };
        let mut c = Redis {
            id,
            channels,
            sub,
            publ,
            input: BytesMut::with_capacity(256 * 1024),
            replies: BytesMut::with_capacity(4096),
            out: BytesMut::new(),
            closed: false,
        };
        let mut cmd = format!("*{}\r\n$9\r\nSUBSCRIBE\r\n", c.channels.len() + 1);
        for channel in &c.channels {
            cmd.push_str(&format!("${}\r\n{channel}\r\n", channel.len()));
        }
        let mut cmd = cmd.as_bytes();
        while !cmd.is_empty() {
            c.sub.writable().await.map_err(|e| c.lost(e.to_string()))?;
            match c.sub.try_write(cmd) {
                Ok(n) => cmd = &cmd[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(c.lost(e.to_string())),
            }
        }
        let mut pending = c.channels.len();
        loop {
            match push(&c.input) {
                Ok(Some((Push::Subscribed(channel), used))) => {
                    if !subscribed(&c.channels, &c.input[channel]) {
                        return Err(c.lost("a confirmation for another channel".into()));
                    }
                    c.input.advance(used);
                    pending -= 1;
                    if pending == 0 {
                        return Ok(c);
                    }
                    continue;
                }
                Ok(Some((Push::Message { .. }, _))) => {
                    return Err(c.lost("a message before the run".into()));
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Refused { id, reason: e }),
            }
            c.sub.readable().await.map_err(|e| c.lost(e.to_string()))?;
            if read_into(&c.sub, &mut c.input).map_err(|e| c.lost(e.to_string()))? == Some(0) {
                c.closed = true;
                return Err(c.lost("the server closed the connection".into()));
            }
        }
    }

    /// Reads and discards the publishing connection's integer replies.
    fn replies(&mut self) -> Result<(), String> {
        let mut at = 0;
        let result = loop {
            match value(&self.replies[at..]) {
                Ok(Some((Value::Int(_), used))) => at += used,
                Ok(Some((Value::Error(e), _))) => break Err(format!("PUBLISH failed: {e}")),
                Ok(Some((other, _))) => break Err(format!("PUBLISH answered {other:?}")),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.replies.advance(at);
        result
    }
}

impl Peer for Redis {
    fn id(&self) -> usize {
        self.id
    }

    fn publish(&mut self, room: usize, text: String) -> Result<(), Error> {
        if self.publ.is_none() {
            return Err(
                self.lost("a client that does not send has no connection to publish".into())
            );
        }
        let channel = &self.channels[room % self.channels.len()];
        put_publish(&mut self.out, channel, text.as_bytes());
        Ok(())
    }

    fn sending(&self) -> bool {
        !self.out.is_empty()
    }

    async fn ready(&mut self, interest: Interest) -> Result<Ready, Error> {
        let r = match &self.publ {
            Some(publ) => tokio::select! {
                r = self.sub.ready(Interest::READABLE) => r,
                r = publ.ready(interest | Interest::READABLE) => r,
            },
            None => self.sub.ready(Interest::READABLE).await,
        };
        r.map_err(|e| self.lost(e.to_string()))
    }

    fn write(&mut self) -> Result<bool, Error> {
        match &self.publ {
            Some(publ) => write_from(publ, &mut self.out).map_err(|e| self.lost(e.to_string())),
            None => Ok(true),
        }
    }

    fn read(&mut self) -> Result<Option<usize>, Error> {
        let replies = match &self.publ {
            Some(publ) => {
                read_into(publ, &mut self.replies).map_err(|e| self.lost(e.to_string()))?
            }
            None => None,
        };
        if replies == Some(0) {
            self.closed = true;
            return Ok(Some(0));
        }
        let got = read_into(&self.sub, &mut self.input).map_err(|e| self.lost(e.to_string()))?;
        self.closed |= got == Some(0);
        match (replies, got) {
            (_, Some(n)) => Ok(Some(n)),
            (Some(_), None) => Ok(Some(1)),
            (None, None) => Ok(None),
        }
    }

    fn take(&mut self, mut f: impl FnMut(Got<'_>)) -> Result<(), Error> {
        self.replies().map_err(|e| self.lost(e))?;
        let mut at = 0;
        let result = loop {
            match push(&self.input[at..]) {
                Ok(Some((p, used))) => {
                    if let Push::Message { channel, payload } = p {
                        let channel = &self.input[at + channel.start..at + channel.end];
                        if !subscribed(&self.channels, channel) {
                            break Err(format!(
                                "a message on channel {:?}, not subscribed to",
                                String::from_utf8_lossy(channel)
                            ));
                        }
                        f(Got::Message {
                            from: None,
                            room: Some(channel),
                            text: &self.input[at + payload.start..at + payload.end],
                        });
                    }
                    at += used;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("the server broke the protocol: {e}")),
            }
        };
        self.input.advance(at);
        result.map_err(|e| self.lost(e))
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_parse_whole_and_split() {
        let s: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nchat\r\n:1\r\n\
                         *3\r\n$7\r\nmessage\r\n$4\r\nchat\r\n$5\r\na\r\nb\0\r\n\
                         *3\r\n$7\r\nmessage\r\n$4\r\nchat\r\n$0\r\n\r\n";
        for step in [1, 2, 5, s.len()] {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for piece in s.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some((p, used)) = push(&buf).unwrap() {
                    got.push(match p {
                        Push::Message { channel, payload } => {
                            assert_eq!(&buf[channel], b"chat");
                            buf[payload].to_vec()
                        }
                        Push::Subscribed(channel) => {
                            assert_eq!(&buf[channel], b"chat");
                            b"subscribed".to_vec()
                        }
                    });
                    buf.drain(..used);
                }
            }
            assert!(buf.is_empty(), "step {step}");
            assert_eq!(
                got,
                [b"subscribed".to_vec(), b"a\r\nb\0".to_vec(), Vec::new()],
                "step {step}"
            );
        }
    }

    #[test]
    fn errors_and_replies() {
        assert!(push(b"-ERR unknown command\r\n").is_err());
        assert!(push(b"*3\r\n$7\r\nunknown\r\n$5\r\nother\r\n$1\r\nx\r\n").is_err());
        assert!(push(b"*3\r\n$7\r\nmessage\r\n$4\r\nchat\r\n$1\r\nxy\r\n").is_err());
        assert_eq!(value(b":42\r\n").unwrap(), Some((Value::Int(42), 5)));
        assert_eq!(value(b":4").unwrap(), None);
        assert_eq!(
            value(b"-ERR x\r\n").unwrap(),
            Some((Value::Error("ERR x".into()), 8))
        );
    }

    #[test]
    fn publish_is_an_array_of_bulk_strings() {
        let mut out = BytesMut::new();
        put_publish(&mut out, "room.7", b"a\r\nb");
        assert_eq!(
            &out[..],
            b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nroom.7\r\n$4\r\na\r\nb\r\n"
        );
    }
}
