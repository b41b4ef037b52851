//! Blocking helpers over `std::io`, for programs without an async runtime
//! (a thread per client, as in the original lab).
//!
//! [`Client`] speaks the protocol over any `Read + Write` stream: its rules
//! come from a client-role [`Connection`], so it answers `Ping`, sends no
//! text longer than the server's `Welcome` allows, and leaves with the
//! protocol's `Exit` sequence. Use it unless you need frames only.
//!
//! [`read_message`] and [`write_message`] move single frames and apply no
//! rule beyond the codec's limit: answering `Ping` is then yours, and after
//! the handshake write with `ChatCodec::with_max_frame_len(max_frame)` from
//! the server's `Welcome`, not `ChatCodec::new()`, whose limit is the
//! server's own and 20 bytes more than it accepts from a client.
//! [`read_message`] reads exactly one frame and no further, so the reader
//! needs no buffer of its own and can be shared with other code between
//! calls. Wrap a raw socket in a [`std::io::BufWriter`] if you write many
//! small messages.

use std::io::{self, Read, Write};

use bytes::BytesMut;

use crate::codec::{ChatCodec, HEADER_LEN};
use crate::connection::{ClientConfig, Connection, Event, Negotiated};
use crate::error::{ClientError, DecodeError, StreamError};
use crate::message::Message;
use crate::wire;

/// Most bytes one read asks the stream for.
const READ_CHUNK: usize = 8 * 1024;

/// A blocking chat client over a `Read + Write` stream, such as a
/// [`std::net::TcpStream`].
///
/// Everything goes through a client-role [`Connection`]: [`connect`]
/// does the handshake, [`next_event`](Client::next_event) reads and answers
/// `Ping` by itself, [`send`](Client::send) refuses (with
/// [`SendError::TooLarge`](crate::SendError::TooLarge), sending nothing) a
/// text longer than [`max_text_len`](Client::max_text_len), which the
/// server's `Welcome` decides.
///
/// [`connect`]: Client::connect
///
/// # Examples
///
/// ```no_run
/// use std::net::TcpStream;
///
/// use chat_proto::{Event, Message, blocking::Client};
///
/// let stream = TcpStream::connect("127.0.0.1:8080")?;
/// let mut client = Client::connect(stream, Default::default())?;
/// println!("connected as {}", client.negotiated().addr);
/// client.send("hello I am jjj")?;
/// client.exit()?;
/// // Read what was already on its way, up to the server's Exit.
/// while let Some(event) = client.next_event()? {
///     if let Event::Message(Message::Relay { text, .. }) = event {
///         println!("{text}");
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Client<S> {
    stream: S,
    conn: Connection,
    negotiated: Negotiated,
}

impl<S: Read + Write> Client<S> {
    /// Says `Hello` over `stream` and waits for the server's `Welcome`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] if the server answered `Error`,
    /// [`ClientError::Closed`] if the stream ended first,
    /// [`ClientError::Protocol`] for an unusable answer (the server is told
    /// why), [`ClientError::Io`] if the stream failed.
    pub fn connect(stream: S, config: ClientConfig) -> Result<Self, ClientError> {
        let mut conn = Connection::client(config);
        let mut stream = stream;
        loop {
            match step(&mut stream, &mut conn)? {
                Some(Event::Welcome(negotiated)) => {
                    return Ok(Client {
                        stream,
                        conn,
                        negotiated,
                    });
                }
                Some(Event::Error(reason)) => return Err(ClientError::Refused(reason)),
                Some(_) => {}
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// What the handshake settled: version, features, the server's limit
    /// and this client's address as the server sees it.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The longest text [`send`](Self::send) accepts, in bytes of UTF-8.
    pub fn max_text_len(&self) -> usize {
        self.conn.max_text_len()
    }

    /// Sends `text` to every other client.
    ///
    /// # Errors
    ///
    /// [`ClientError::Send`] if the text is longer than
    /// [`max_text_len`](Self::max_text_len) or the session is over (nothing
    /// is sent); [`ClientError::Io`] if writing fails.
    pub fn send(&mut self, text: &str) -> Result<(), ClientError> {
        self.conn.send(&Message::Send { text: text.into() })?;
        self.flush()
    }

    /// Sends any request this client may send in its session: with
    /// [`features::ROOMS`](crate::features::ROOMS), `Nick` first, then
    /// `Join`, `Say`, `Tell`, `Who`, ... (answers come as message events).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and [`ClientError::Send`] for a message of
    /// a capability not negotiated, one a client may not send, or a ROOMS
    /// request before `Nick` (nothing is sent).
    pub fn request(&mut self, msg: &Message) -> Result<(), ClientError> {
        self.conn.send(msg)?;
        self.flush()
    }

    /// Sends `Ping { nonce }`; the answer comes as a `Pong` message event.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        self.conn.ping(nonce)?;
        self.flush()
    }

    /// Leaves: sends `Exit`. Keep calling [`next_event`](Self::next_event):
    /// what the server had already queued arrives, then its `Exit`
    /// ([`Event::Exit`]), then `None`.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn exit(&mut self) -> Result<(), ClientError> {
        self.conn.exit()?;
        self.flush()
    }

    /// The next event from the server, reading as needed (and answering
    /// `Ping` meanwhile): a `Relay`, `Joined`, `Left` or `Pong` message,
    /// the server's `Exit` or `Error`. `None` once the connection is over.
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] if the server broke a rule (it is told
    /// why), [`ClientError::Io`] if the stream failed.
    pub fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        step(&mut self.stream, &mut self.conn)
    }

    /// The state machine, to look at (its state, limits, skipped frames).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The stream, e.g. to set a read timeout.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.stream
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        write_out(&mut self.stream, &mut self.conn)
    }
}

/// Writes what the machine queued.
fn write_out<S: Write>(stream: &mut S, conn: &mut Connection) -> Result<(), ClientError> {
    if let Some(bytes) = conn.transmit() {
        stream.write_all(&bytes)?;
        stream.flush()?;
    }
    Ok(())
}

/// Polls, reading when the machine needs bytes and writing what it queued,
/// until an event or the end.
fn step<S: Read + Write>(
    stream: &mut S,
    conn: &mut Connection,
) -> Result<Option<Event>, ClientError> {
    loop {
        let polled = conn.poll();
        // Answers (Pong) and a last Error go out before the caller hears.
        let written = write_out(stream, conn);
        match polled {
            Ok(Some(event)) => {
                written?;
                return Ok(Some(event));
            }
            Ok(None) => written?,
            // The server is told why, if it still listens; the violation
            // matters more than a failed write.
            Err(broken) => return Err(broken.into()),
        }
        if !conn.wants_read() {
            return Ok(None);
        }
        let input = conn.input();
        let len = input.len();
        input.resize(len + READ_CHUNK, 0);
        let got = loop {
            match stream.read(&mut input[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        input.truncate(len + *got.as_ref().unwrap_or(&0));
        if got? == 0 {
            let end = conn.eof();
            write_out(stream, conn)?;
            end?;
        }
    }
}

/// Reads one message from `r`.
///
/// Returns `Ok(None)` on a clean end of stream before a frame starts.
///
/// # Errors
///
/// [`StreamError::Io`] if reading fails; [`StreamError::Decode`] if the frame
/// is invalid, including [`DecodeError::Truncated`] when the stream ends
/// inside a frame. An oversized length is rejected before any payload is read.
///
/// # Examples
///
/// ```
/// use chat_proto::{blocking, ChatCodec, Message};
///
/// let codec = ChatCodec::new();
/// let mut wire = Vec::new();
/// blocking::write_message(&mut wire, &codec, &Message::Exit).unwrap();
/// let mut rx = &wire[..];
/// assert_eq!(blocking::read_message(&mut rx, &codec).unwrap(), Some(Message::Exit));
/// assert_eq!(blocking::read_message(&mut rx, &codec).unwrap(), None);
/// ```
pub fn read_message<R: Read + ?Sized>(
    r: &mut R,
    codec: &ChatCodec,
) -> Result<Option<Message>, StreamError> {
    let mut head = [0u8; HEADER_LEN];
    let got = read_full(r, &mut head)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(DecodeError::Truncated {
            have: got,
            need: HEADER_LEN,
        }
        .into());
    }
    let len = codec.header(&head)?.expect("a whole header was read");
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(DecodeError::Truncated {
            have: HEADER_LEN + got,
            need: HEADER_LEN + len,
        }
        .into());
    }
    Ok(Some(wire::decode(&payload)?))
}

/// Writes `msg` to `w` as one frame, in a single `write_all`.
///
/// # Errors
///
/// [`StreamError::Encode`] if the message exceeds the codec's limit (nothing
/// is written); [`StreamError::Io`] if writing fails.
pub fn write_message<W: Write + ?Sized>(
    w: &mut W,
    codec: &ChatCodec,
    msg: &Message,
) -> Result<(), StreamError> {
    let mut buf = BytesMut::new();
    codec.encode(msg, &mut buf)?;
    w.write_all(&buf)?;
    Ok(())
}

/// Fills `buf` as far as the stream allows; returns how many bytes were read.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
