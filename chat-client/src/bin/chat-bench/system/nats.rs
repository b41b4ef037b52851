//! A NATS server, core protocol (text, framed by lengths for payloads).
//!
//! On connect the server sends `INFO {...}`; the client sends
//! `CONNECT {"verbose":false,"pedantic":false,"echo":false}`, one `SUB`
//! per channel (subject) it is given (`SUB chat 1` in `fanout`, `SUB
//! room.7 1`, `SUB room.42 2`... in `rooms`) and `PING`, and waits for
//! `PONG`, so that its subscriptions are in place before the run starts. A
//! publish is `PUB <subject> <len>\r\n<payload>\r\n`; a delivery `MSG
//! <subject> <sid> <len>\r\n<payload>\r\n`. The server's `PING` is answered
//! with `PONG`; `-ERR` ends the client. With echo off a client gets
//! everyone else's messages on its subjects, as from the chat server.

use std::net::SocketAddr;
use std::ops::Range;

use bytes::{Buf, BytesMut};
use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;

use super::{Got, Peer, crlf, decimal, subscribed};
use crate::error::Error;
use crate::socket::{READ_CHUNK, read_into, write_from};

/// One frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `MSG <subject> <sid> [reply-to] <len>`: where its subject and its
    /// payload lie.
    Msg {
        subject: Range<usize>,
        payload: Range<usize>,
    },
    Ping,
    Pong,
    /// `INFO`, `+OK`: nothing to do.
    Other,
    /// `-ERR '...'`.
    Err(String),
}

/// The first frame in `buf`, and the bytes it takes; `None` until a whole
/// frame is there. A line the protocol does not have is an error.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    let Some(eol) = crlf(buf) else {
        if buf.len() > 64 * 1024 {
            return Err("a protocol line longer than 64 KiB".into());
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let next = eol + 2;
    if let Some(args) = line.strip_prefix(b"MSG ") {
        let bad = || format!("a bad MSG line: {}", String::from_utf8_lossy(line));
        let len = args
            .rsplit(|&c| c == b' ')
            .next()
            .and_then(decimal)
            .ok_or_else(bad)?;
        let subject = args
            .iter()
            .position(|&c| c == b' ')
            .filter(|&end| end > 0)
            .map(|end| 4..4 + end)
            .ok_or_else(bad)?;
        let end = next + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err("a MSG payload not followed by CRLF".into());
        }
        return Ok(Some((
            Frame::Msg {
                subject,
                payload: next..end,
            },
            end + 2,
        )));
    }
    let f = match line {
        b"PING" => Frame::Ping,
        b"PONG" => Frame::Pong,
        b"+OK" => Frame::Other,
        _ if line.starts_with(b"INFO ") || line == b"INFO" => Frame::Other,
        _ if line.starts_with(b"-ERR") => Frame::Err(String::from_utf8_lossy(line).into_owned()),
        _ => {
            return Err(format!(
                "an unexpected line: {}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ));
        }
    };
    Ok(Some((f, next)))
}

/// Appends the frame that publishes `payload` to `subject`.
pub(crate) fn put_pub(out: &mut BytesMut, subject: &str, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// A connected, subscribed NATS client.
#[derive(Debug)]
pub(crate) struct Nats {
    id: usize,
    /// Its subjects: its rooms, in the order it says its messages in them.
    channels: Vec<String>,
    stream: TcpStream,
    input: BytesMut,
    out: BytesMut,
    closed: bool,
}

impl Nats {
    /// Connects, subscribes to `channels`, and waits for the server to
    /// confirm it (the `PONG` to a `PING` sent after the `SUB`s).
    pub(crate) async fn connect(
        id: usize,
        server: SocketAddr,
        channels: Vec<String>,
    ) -> Result<Nats, Error> {
        let failed = |source| Error::Connect {
            id,
            addr: server,
            source,
        };
        let stream = TcpStream::connect(server).await.map_err(failed)?;
        stream.set_nodelay(true).map_err(failed)?;
        let mut c = Nats {
            id,
            channels,
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(READ_CHUNK),
            closed: false,
        };
        c.out.extend_from_slice(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\n",
        );
        for (i, channel) in c.channels.iter().enumerate() {
            c.out
                .extend_from_slice(format!("SUB {channel} {}\r\n", i + 1).as_bytes());
        }
        c.out.extend_from_slice(b"PING\r\n");
        let mut pongs = 0;
        while pongs == 0 {
            while let Some((f, used)) = frame(&c.input).map_err(|e| c.lost(e))? {
                c.input.advance(used);
                match f {
                    Frame::Pong => pongs += 1,
                    Frame::Ping => c.out.extend_from_slice(b"PONG\r\n"),
                    Frame::Err(e) => return Err(Error::Refused { id, reason: e }),
                    Frame::Msg { .. } => return Err(c.lost("a message before the run".into())),
                    Frame::Other => {}
                }
            }
            if pongs > 0 {
                break;
            }
            while !c.write()? {
                c.stream
                    .writable()
                    .await
                    .map_err(|e| c.lost(e.to_string()))?;
            }
            c.stream
                .readable()
                .await
                .map_err(|e| c.lost(e.to_string()))?;
            if c.read()? == Some(0) {
                return Err(c.lost("the server closed the connection".into()));
            }
        }
        Ok(c)
    }
}

impl Peer for Nats {
    fn id(&self) -> usize {
        self.id
    }

    fn publish(&mut self, room: usize, text: String) -> Result<(), Error> {
        let subject = &self.channels[room % self.channels.len()];
        put_pub(&mut self.out, subject, text.as_bytes());
        Ok(())
    }

    fn sending(&self) -> bool {
        !self.out.is_empty()
    }

    async fn ready(&mut self, interest: Interest) -> Result<Ready, Error> {
        match self.stream.ready(interest).await {
            Ok(ready) => Ok(ready),
            Err(e) => Err(self.lost(e.to_string())),
        }
    }

    fn write(&mut self) -> Result<bool, Error> {
        write_from(&self.stream, &mut self.out).map_err(|e| self.lost(e.to_string()))
    }

    fn read(&mut self) -> Result<Option<usize>, Error> {
        let got = read_into(&self.stream, &mut self.input).map_err(|e| self.lost(e.to_string()))?;
        self.closed |= got == Some(0);
        Ok(got)
    }

    fn take(&mut self, mut f: impl FnMut(Got<'_>)) -> Result<(), Error> {
        let mut at = 0;
        let result = loop {
            match frame(&self.input[at..]) {
                Ok(Some((fr, used))) => {
                    match fr {
                        Frame::Msg { subject, payload } => {
                            let subject = &self.input[at + subject.start..at + subject.end];
                            if !subscribed(&self.channels, subject) {
                                break Err(format!(
                                    "a message on subject {:?}, not subscribed to",
                                    String::from_utf8_lossy(subject)
                                ));
                            }
                            f(Got::Message {
                                from: None,
                                room: Some(subject),
                                text: &self.input[at + payload.start..at + payload.end],
                            });
                        }
                        Frame::Ping => self.out.extend_from_slice(b"PONG\r\n"),
                        Frame::Err(e) => break Err(format!("the server said {e}")),
                        Frame::Pong | Frame::Other => {}
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

    /// Every frame of `stream`, fed in pieces of `step` bytes.
    fn frames(stream: &[u8], step: usize) -> Vec<(Frame, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some((f, used)) = frame(&buf).unwrap() {
                let payload = match &f {
                    Frame::Msg { subject, payload } => {
                        assert_eq!(&buf[subject.clone()], b"chat");
                        buf[payload.clone()].to_vec()
                    }
                    _ => Vec::new(),
                };
                got.push((f, payload));
                buf.drain(..used);
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        got
    }

    #[test]
    fn frames_parse_whole_and_split() {
        let s: &[u8] =
            b"INFO {\"server_id\":\"x\"}\r\n+OK\r\nPONG\r\nMSG chat 1 5\r\na\r\nb\0\r\nPING\r\n\
                         MSG chat 1 reply.to 0\r\n\r\nMSG chat 1 3\r\n\xe8\x81\x8a\r\n";
        for step in [1, 2, 3, 7, s.len()] {
            let got = frames(s, step);
            let kinds: Vec<_> = got
                .iter()
                .map(|(f, p)| match f {
                    Frame::Msg { .. } => format!("msg {p:?}"),
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(
                kinds,
                [
                    "Other".to_string(),
                    "Other".into(),
                    "Pong".into(),
                    format!("msg {:?}", b"a\r\nb\0"),
                    "Ping".into(),
                    format!("msg {:?}", b""),
                    format!("msg {:?}", "聊".as_bytes()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn errors_and_bad_frames() {
        assert_eq!(
            frame(b"-ERR 'Authorization Violation'\r\n").unwrap(),
            Some((Frame::Err("-ERR 'Authorization Violation'".into()), 32))
        );
        assert!(frame(b"MSG chat 1 x\r\n").is_err());
        assert!(frame(b"MSG  1 2\r\nab\r\n").is_err());
        assert!(frame(b"MSG chat 1 2\r\nabcd\r\n").is_err());
        assert!(frame(b"HELLO\r\n").is_err());
        assert_eq!(frame(b"MSG chat 1 2\r\nab").unwrap(), None);
    }

    #[test]
    fn publish_is_length_framed() {
        let mut out = BytesMut::new();
        put_pub(&mut out, "room.7", b"a\r\nb");
        assert_eq!(&out[..], b"PUB room.7 4\r\na\r\nb\r\n");
    }
}
