//! The protocol's rules as a state machine: bytes in, events and bytes out,
//! no socket and no clock.
//!
//! A [`Connection`] is one end of one chat connection, in the client or the
//! server [`Role`]. It owns everything PROTOCOL.md says about a conversation:
//! the handshake and the version and feature negotiation, who may send what,
//! answering `Ping`, the `Exit` and `Error` close sequences, and the frame
//! limit in each direction. Whoever owns the socket only moves bytes:
//!
//! 1. while [`Connection::wants_read`], append what the socket gave to
//!    [`Connection::input`] (or call [`Connection::receive`]);
//! 2. call [`Connection::poll`] until it returns `Ok(None)`, handling each
//!    [`Event`];
//! 3. write what [`Connection::transmit`] hands out;
//! 4. at the end of the stream, call [`Connection::eof`].
//!
//! A rule broken by the peer comes out of `poll` as a [`ProtocolError`];
//! by then the machine has already queued the `Error` frame that tells the
//! peer why, and is closed: write the output, then close the socket.
//!
//! # Examples
//!
//! A client and a server machine talking through two buffers:
//!
//! ```
//! use chat_proto::{Connection, Event, Message};
//!
//! let mut client = Connection::client(Default::default());
//! let mut server = Connection::server(Default::default());
//!
//! // Client -> server: Hello.
//! server.receive(&client.transmit().unwrap());
//! assert!(matches!(server.poll()?, Some(Event::Hello { version: 1, .. })));
//! server.accept("127.0.0.1:3075".parse().unwrap());
//!
//! // Server -> client: Welcome.
//! client.receive(&server.transmit().unwrap());
//! let Some(Event::Welcome(session)) = client.poll()? else { panic!() };
//! assert_eq!(session.max_frame, 65_516);
//! assert_eq!(client.max_text_len(), 65_512);
//!
//! // The server pings; the client answers by itself.
//! server.ping(7);
//! client.receive(&server.transmit().unwrap());
//! assert_eq!(client.poll()?, None);
//! server.receive(&client.transmit().unwrap());
//! assert_eq!(server.poll()?, Some(Event::Message(Message::Pong { nonce: 7 })));
//! # Ok::<(), chat_proto::ProtocolError>(())
//! ```

use std::fmt;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use crate::codec::{ChatCodec, HEADER_LEN, MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN};
use crate::error::{DecodeError, LimitError, ProtocolError, SendError};
use crate::message::{Message, VERSION, features};

/// Bytes a `Relay` payload can take beyond the `Send` it relays: the
/// sender's address (an IP tag plus up to 16 octets) and port (a varint of
/// up to 3 bytes).
///
/// A server with frame limit `L` accepts `Send` payloads of up to
/// `L - RELAY_OVERHEAD` bytes and announces that figure in
/// `Welcome.max_frame`, so that the relay of any `Send` it accepts fits `L`.
/// A client therefore receives frames of up to `max_frame + RELAY_OVERHEAD`.
pub const RELAY_OVERHEAD: usize = 20;

/// Bytes a frame to a client with [`features::ROOMS`] can take beyond
/// `Welcome.max_frame`: a `Said` carries the room and the sender's name
/// (up to 128 bytes each) and address beyond the text of the `Send` or `Say`
/// it relays.
///
/// Such a client accepts frames of up to `max_frame + ROOMS_OVERHEAD`, so a
/// server with frame limit `L` sends it frames of up to
/// `L - RELAY_OVERHEAD + ROOMS_OVERHEAD`; a version 1 client never gets a
/// frame over `L`.
pub const ROOMS_OVERHEAD: usize = 300;

/// Bytes a frame to a client with [`features::HISTORY`] can take beyond
/// `Welcome.max_frame`: a `Page` of one entry carries the conversation, the
/// entry's three ids and its sender beside the text, at most 309 bytes more
/// than the `Send` of that text (PROTOCOL.md section 9.9 has the arithmetic).
///
/// Such a client accepts frames of up to `max_frame + HISTORY_OVERHEAD`, so
/// a server with frame limit `L` sends it frames of up to
/// `L - RELAY_OVERHEAD + HISTORY_OVERHEAD = L + 300`.
pub const HISTORY_OVERHEAD: usize = 320;

/// Which end of the connection a [`Connection`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Connects, says `Hello`, sends `Send`.
    Client,
    /// Accepts, answers `Welcome`, sends `Relay`, `Joined`, `Left`.
    Server,
}

impl Role {
    /// Whether this role may send `msg` (the "sent by" column of PROTOCOL.md).
    pub fn may_send(self, msg: &Message) -> bool {
        match self {
            Role::Client => msg.from_client(),
            Role::Server => msg.from_server(),
        }
    }

    fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Server => "server",
        })
    }
}

/// Settings of a client-role [`Connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Highest version to offer in `Hello`. Default: [`VERSION`].
    pub version: u16,
    /// Capabilities to ask for in `Hello`. Default: [`features::NONE`], the
    /// seed's conversation; ask for [`features::ROOMS`] to get names, rooms
    /// and direct messages (the first request after `Welcome` is then `Nick`).
    pub features: u64,
    /// Largest frame payload this client accepts. The server's
    /// `max_frame + RELAY_OVERHEAD` raises it once known, so no relay the
    /// server may send is refused. Default: [`MAX_FRAME_LEN`].
    pub max_frame_len: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            version: VERSION,
            features: features::NONE,
            max_frame_len: MAX_FRAME_LEN,
        }
    }
}

/// Settings of a server-role [`Connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Capabilities the server offers; `Welcome` carries what
    /// [`features::agree`] makes of them and the client's. Default:
    /// [`features::ALL`].
    pub features: u64,
    /// The server's frame limit `L`: no frame it sends is longer. It
    /// accepts `L - RELAY_OVERHEAD` from clients and says so in `Welcome`.
    /// Default: [`MAX_FRAME_LEN`].
    pub max_frame_len: usize,
    /// Largest payload accepted before the client is named (before `Named`
    /// for a [`features::ROOMS`] client, before `Welcome` for a version 1
    /// one): the stricter limit of a client nobody knows yet. Raised to
    /// [`HANDSHAKE_FRAME_MIN`] if below, and never above the open
    /// session's limit nor 65,535. Default: [`HANDSHAKE_FRAME_LEN`].
    pub handshake_frame_len: usize,
}

/// The default [`ServerConfig::handshake_frame_len`]: room for the longest
/// `Register` (a 32-character name, a 256-byte password) and then some.
pub const HANDSHAKE_FRAME_LEN: usize = 1024;

/// The least [`ServerConfig::handshake_frame_len`]: the longest `Register`
/// or `Login` (a name of 32 characters of up to 4 bytes, a password of 256
/// bytes, their lengths and the tag) fits.
pub const HANDSHAKE_FRAME_MIN: usize = 512;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            features: features::ALL,
            max_frame_len: MAX_FRAME_LEN,
            handshake_frame_len: HANDSHAKE_FRAME_LEN,
        }
    }
}

impl ServerConfig {
    /// A server configuration with frame limit `max_frame_len`.
    ///
    /// # Errors
    ///
    /// [`LimitError`] unless `max_frame_len` is within
    /// `MIN_FRAME_LEN + RELAY_OVERHEAD ..= MAX_FRAME_LEN_CEILING`.
    pub fn with_max_frame_len(max_frame_len: usize) -> Result<Self, LimitError> {
        let min = MIN_FRAME_LEN + RELAY_OVERHEAD;
        if !(min..=MAX_FRAME_LEN_CEILING).contains(&max_frame_len) {
            return Err(LimitError {
                value: max_frame_len,
                min,
                max: MAX_FRAME_LEN_CEILING,
            });
        }
        Ok(ServerConfig {
            max_frame_len,
            ..ServerConfig::default()
        })
    }

    /// What `Welcome.max_frame` announces: the largest payload a client may send.
    pub fn client_max_frame(&self) -> usize {
        self.max_frame_len.saturating_sub(RELAY_OVERHEAD)
    }

    /// The codec for everything the server sends, relays included, to a
    /// version 1 client.
    pub fn outbound(&self) -> ChatCodec {
        codec(self.max_frame_len)
    }

    /// The codec for everything the server sends to a client with the
    /// capabilities `features`: [`outbound`](Self::outbound), raised by
    /// `ROOMS_OVERHEAD - RELAY_OVERHEAD` for a [`features::ROOMS`] client
    /// and by `HISTORY_OVERHEAD - RELAY_OVERHEAD` for a
    /// [`features::HISTORY`] one.
    pub fn outbound_for(&self, features: u64) -> ChatCodec {
        codec(out_limit(self.client_max_frame(), features))
    }
}

/// The largest frame a client with `features` accepts from a server that
/// announced `max_frame`.
fn out_limit(max_frame: usize, features: u64) -> usize {
    // HISTORY without ROOMS is never in force.
    let features = features::agree(features, features);
    let overhead = if features & features::HISTORY != 0 {
        HISTORY_OVERHEAD
    } else if features & features::ROOMS != 0 {
        ROOMS_OVERHEAD
    } else {
        RELAY_OVERHEAD
    };
    (max_frame + overhead).min(MAX_FRAME_LEN_CEILING)
}

/// What the handshake settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Negotiated {
    /// Version both sides speak.
    pub version: u16,
    /// Capabilities in force.
    pub features: u64,
    /// Largest payload the server accepts from the client.
    pub max_frame: usize,
    /// The client's address as the server sees it: what peers are shown.
    pub addr: SocketAddr,
}

impl Negotiated {
    /// Whether the capability `feature` (a [`features`] bit) is in force.
    pub fn has(&self, feature: u64) -> bool {
        self.features & feature == feature
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Before the handshake is done: a client waits for `Welcome`, a server
    /// for `Hello`.
    Handshake,
    /// Server role: `Hello` received; waiting for [`Connection::accept`] or
    /// [`Connection::refuse`].
    Admitting,
    /// The handshake is done: chat.
    Open,
    /// Client role: our `Exit` is sent; waiting for the server's.
    Leaving,
    /// Server role: the client sent `Exit`; waiting for
    /// [`Connection::exit`] to acknowledge it once queued frames are out.
    PeerExited,
    /// Nothing more will be read or sent (output already queued aside).
    Closed,
}

/// What the peer did, as [`Connection::poll`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Server role: the client said `Hello`. Call [`Connection::accept`] or
    /// [`Connection::refuse`]; nothing more is read until then.
    Hello {
        /// Highest version the client speaks (at least 1).
        version: u16,
        /// Capabilities it asks for.
        features: u64,
    },
    /// Client role: the server's `Welcome`; the session is open.
    Welcome(Negotiated),
    /// A message for the application, allowed in this state: `Send` (and
    /// with [`features::ROOMS`] `Nick`, `Join`, `Say`, ...) to a server;
    /// `Relay`, `Joined`, `Left` (and with ROOMS `Named`, `Said`, `Roster`,
    /// ...) to a client; `Pong` to either. (`Ping` is answered by the
    /// machine and never reported; a HISTORY server gets `Send`, `Say` and
    /// `Tell` as [`Event::Numbered`].)
    Message(Message),
    /// Server role, with [`features::HISTORY`] in force: a `Send`, `Say` or
    /// `Tell` ([`Message::is_numbered`]) and its number, 1 for the first
    /// of the session, 2 for the next, ... Answer it with exactly one
    /// `Stored { seq, .. }` or `Unstored { seq, .. }`. (Without HISTORY
    /// these come as [`Event::Message`].)
    Numbered {
        /// The request's number in the session.
        seq: u64,
        /// The `Send`, `Say` or `Tell`.
        message: Message,
    },
    /// The peer sent `Exit`. A server answers with [`Connection::exit`]
    /// after what is queued for the client; for a client this is the
    /// server's acknowledgement, or, unprompted, its shutdown.
    Exit,
    /// The peer sent `Error { reason }` and is closing; so is this machine.
    Error(String),
}

/// One end of a chat connection; see the [module docs](self).
#[derive(Debug)]
pub struct Connection {
    role: Role,
    state: State,
    /// Limits what we accept.
    inbound: ChatCodec,
    /// Limits what we send.
    outbound: ChatCodec,
    /// Server role: what we offer. Client role: what we asked for.
    features: u64,
    /// Client role: the version offered in `Hello`.
    version: u16,
    negotiated: Option<Negotiated>,
    /// Server role: the `Hello` being admitted.
    hello: Option<(u16, u64)>,
    rx: BytesMut,
    tx: BytesMut,
    /// Client role: frames of unknown kinds skipped so far.
    skipped: u64,
    /// The peer's stream has ended ([`Connection::eof`]): once the frames
    /// still buffered are taken, the connection closes.
    ended: bool,
    /// [`features::ROOMS`] is in force and the client is not named yet: its
    /// first `Nick` (or with [`features::AUTH`], a successful `Register`,
    /// `Login` or `LoginToken`) must come before any other request.
    naming: bool,
    /// Server role: the frame limit until the client is named (a `u16`:
    /// a limit for strangers needs no more, and this struct is in every
    /// server session).
    guard: u16,
    /// [`features::HISTORY`]: numbered requests sent (client role) or
    /// received (server role) so far.
    seq: u64,
}

impl Connection {
    /// A client that has queued its `Hello`: [`transmit`](Self::transmit) it.
    pub fn client(config: ClientConfig) -> Self {
        let max = config
            .max_frame_len
            .clamp(MIN_FRAME_LEN, MAX_FRAME_LEN_CEILING);
        let mut conn = Connection::new(Role::Client, codec(max), codec(max), config.features);
        conn.version = config.version;
        conn.queue(&Message::Hello {
            version: config.version,
            features: config.features,
        });
        conn
    }

    /// A server waiting for the client's `Hello`.
    pub fn server(config: ServerConfig) -> Self {
        let max = config
            .max_frame_len
            .clamp(MIN_FRAME_LEN + RELAY_OVERHEAD, MAX_FRAME_LEN_CEILING);
        let mut conn = Connection::new(
            Role::Server,
            codec(max - RELAY_OVERHEAD),
            codec(max),
            config.features,
        );
        // Not `clamp`: a server limit below the minimum wins over it.
        let guard = config
            .handshake_frame_len
            .clamp(HANDSHAKE_FRAME_MIN, usize::from(u16::MAX))
            .min(max - RELAY_OVERHEAD);
        conn.guard = u16::try_from(guard).unwrap_or(u16::MAX);
        conn
    }

    fn new(role: Role, inbound: ChatCodec, outbound: ChatCodec, features: u64) -> Self {
        Connection {
            role,
            state: State::Handshake,
            inbound,
            outbound,
            features,
            version: VERSION,
            negotiated: None,
            hello: None,
            rx: BytesMut::new(),
            tx: BytesMut::new(),
            skipped: 0,
            ended: false,
            naming: false,
            guard: 0,
            seq: 0,
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the connection is over: nothing more is read or sent once the
    /// output already queued is written.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// What the handshake settled, once it is done.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Longest payload this end accepts now.
    pub fn max_frame_in(&self) -> usize {
        self.inbound.max_frame_len()
    }

    /// Longest payload this end sends now (the peer's limit, once known).
    pub fn max_frame_out(&self) -> usize {
        self.outbound.max_frame_len()
    }

    /// Longest text a `Send` may carry now, in bytes of UTF-8.
    pub fn max_text_len(&self) -> usize {
        max_text(self.outbound.max_frame_len())
    }

    /// With [`features::HISTORY`] in force, the number of the last `Send`,
    /// `Say` or `Tell` ([`Message::is_numbered`]): in the client role the
    /// last one [`send`](Self::send) queued, in the server role the last
    /// one [`poll`](Self::poll) reported (as [`Event::Numbered`]). 0 before
    /// the first, and always 0 without HISTORY.
    ///
    /// A client reads it right after sending, to match the server's
    /// `Stored { seq, .. }` or `Unstored { seq, .. }` to its request.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Client role: frames of message kinds this crate does not know that
    /// were skipped (a newer server's, sent despite the negotiation).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The input buffer: append bytes read from the peer, then [`poll`](Self::poll).
    ///
    /// Reading straight into it saves a copy; [`receive`](Self::receive)
    /// does the same from a slice.
    pub fn input(&mut self) -> &mut BytesMut {
        &mut self.rx
    }

    /// Appends bytes read from the peer (dropped once the connection is
    /// closed: nothing more is read then).
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.state != State::Closed {
            self.rx.extend_from_slice(bytes);
        }
    }

    /// Whether the machine takes more input now. `false` while a server is
    /// admitting (until [`accept`](Self::accept) or [`refuse`](Self::refuse)),
    /// after the peer's `Exit` reached a server, after the end of the stream,
    /// and once closed: stop reading then, so that input cannot pile up.
    pub fn wants_read(&self) -> bool {
        !self.ended && matches!(self.state, State::Handshake | State::Open | State::Leaving)
    }

    /// Bytes received but not yet part of a complete frame. Non-zero after
    /// `poll` returned `Ok(None)` means the peer is in the middle of a frame.
    pub fn buffered(&self) -> usize {
        self.rx.len()
    }

    /// Gives back the memory of empty buffers: call when the connection goes
    /// idle, so an idle connection holds no buffer.
    pub fn release(&mut self) {
        if self.rx.is_empty() {
            self.rx = BytesMut::new();
        }
        if self.tx.is_empty() {
            self.tx = BytesMut::new();
        }
    }

    /// Bytes to write to the peer, if any: frames are whole and in order.
    pub fn transmit(&mut self) -> Option<Bytes> {
        if self.tx.is_empty() {
            None
        } else {
            Some(self.tx.split().freeze())
        }
    }

    /// Whether [`transmit`](Self::transmit) has something.
    pub fn wants_write(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Takes the next frame off the input and applies the protocol's rules.
    ///
    /// `Ok(None)`: nothing more until more bytes arrive (or ever, once
    /// closed or while a server is admitting). `Ping` is answered here and
    /// never reported; a client skips message kinds it does not know.
    ///
    /// # Errors
    ///
    /// [`ProtocolError`] when the peer broke a rule. The machine has then
    /// queued `Error { reason }` with the error's text and is closed.
    pub fn poll(&mut self) -> Result<Option<Event>, ProtocolError> {
        loop {
            match self.state {
                State::Closed => {
                    // Nothing more is read: let go of what the peer sent after.
                    self.rx.clear();
                    return Ok(None);
                }
                State::Admitting | State::PeerExited => return Ok(None),
                _ => {}
            }
            if self.role == Role::Server
                && self.state == State::Handshake
                && self.rx.get(..HEADER_LEN).is_some_and(is_http)
            {
                return Err(self.violation(ProtocolError::Http));
            }
            // A TLS handshake record (type 22, version 3.x): no chat frame
            // claims 369 MB, so this is never a valid frame either.
            if self.role == Role::Server
                && self.state == State::Handshake
                && self.rx.starts_with(&[0x16, 0x03])
            {
                return Err(self.violation(ProtocolError::Tls));
            }
            // A client nobody knows yet gets the stricter limit; the switch
            // happens between frames, as frames are decoded one by one.
            let decoded = if self.guarded() {
                codec(self.guard as usize).decode(&mut self.rx)
            } else {
                self.inbound.decode(&mut self.rx)
            };
            let msg = match decoded {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    if self.ended {
                        // `eof` checked that the stream ended between frames.
                        self.state = State::Closed;
                    }
                    return Ok(None);
                }
                Err(DecodeError::UnknownVariant { .. })
                    if self.role == Role::Client && self.state != State::Handshake =>
                {
                    // A capability we did not ask for: skippable by design.
                    self.skipped += 1;
                    continue;
                }
                Err(e) => return Err(self.violation(ProtocolError::Frame(e))),
            };
            match self.role {
                Role::Server => {
                    if let Some(event) = self.server_rules(msg)? {
                        return Ok(Some(event));
                    }
                }
                Role::Client => {
                    if let Some(event) = self.client_rules(msg)? {
                        return Ok(Some(event));
                    }
                }
            }
        }
    }

    fn server_rules(&mut self, msg: Message) -> Result<Option<Event>, ProtocolError> {
        if self.state == State::Handshake {
            return match msg {
                Message::Hello { version: 0, .. } => {
                    Err(self.violation(ProtocolError::Version { version: 0 }))
                }
                Message::Hello { version, features } => {
                    self.hello = Some((version, features));
                    self.state = State::Admitting;
                    Ok(Some(Event::Hello { version, features }))
                }
                // The peer is closing: nothing is sent back to an `Error`.
                Message::Error { reason } => {
                    self.state = State::Closed;
                    Ok(Some(Event::Error(reason)))
                }
                other => Err(self.violation(ProtocolError::OutOfTurn {
                    expected: "Hello",
                    got: other.name(),
                })),
            };
        }
        self.common_rules(msg)
    }

    fn client_rules(&mut self, msg: Message) -> Result<Option<Event>, ProtocolError> {
        if self.state == State::Handshake {
            return match msg {
                Message::Welcome {
                    version,
                    features,
                    max_frame,
                    ip,
                    port,
                } => self.welcomed(version, features, max_frame, SocketAddr::new(ip, port)),
                Message::Error { reason } => {
                    self.state = State::Closed;
                    Ok(Some(Event::Error(reason)))
                }
                other => Err(self.violation(ProtocolError::OutOfTurn {
                    expected: "Welcome",
                    got: other.name(),
                })),
            };
        }
        self.common_rules(msg)
    }

    /// The rules once the handshake is done, the same for both roles.
    fn common_rules(&mut self, msg: Message) -> Result<Option<Event>, ProtocolError> {
        match msg {
            Message::Ping { nonce } => {
                self.queue(&Message::Pong { nonce });
                Ok(None)
            }
            Message::Exit => {
                self.state = match self.role {
                    Role::Server => State::PeerExited,
                    Role::Client => State::Closed,
                };
                Ok(Some(Event::Exit))
            }
            Message::Error { reason } => {
                self.state = State::Closed;
                Ok(Some(Event::Error(reason)))
            }
            Message::Hello { .. } | Message::Welcome { .. } => {
                Err(self.violation(ProtocolError::Repeated { got: msg.name() }))
            }
            msg if !self.role.peer().may_send(&msg) => {
                Err(self.violation(ProtocolError::NotAllowed {
                    role: self.role.peer(),
                    got: msg.name(),
                }))
            }
            msg if msg.feature() & !self.agreed() != 0 => match self.role {
                // As a version 1 client would: skip what it did not ask for.
                Role::Client => {
                    self.skipped += 1;
                    Ok(None)
                }
                Role::Server => {
                    Err(self.violation(ProtocolError::NotNegotiated { got: msg.name() }))
                }
            },
            Message::Pong { .. } => Ok(Some(Event::Message(msg))),
            msg if self.naming && self.role == Role::Server => {
                let auth = self.has(features::AUTH);
                match msg {
                    // Without AUTH the first `Nick` always names the
                    // client; with it, the server says when (`named`).
                    Message::Nick { .. } => self.naming = auth,
                    Message::Register { .. }
                    | Message::Login { .. }
                    | Message::LoginToken { .. } => {}
                    msg => {
                        return Err(self.violation(ProtocolError::OutOfTurn {
                            expected: if auth {
                                "Nick, Register, Login or LoginToken"
                            } else {
                                "Nick"
                            },
                            got: msg.name(),
                        }));
                    }
                }
                Ok(Some(Event::Message(msg)))
            }
            Message::Register { .. } | Message::Login { .. } | Message::LoginToken { .. }
                if self.role == Role::Server =>
            {
                Err(self.violation(ProtocolError::AlreadyNamed { got: msg.name() }))
            }
            Message::Named { .. } if self.role == Role::Client => {
                self.naming = false;
                Ok(Some(Event::Message(msg)))
            }
            msg if !self.has(features::HISTORY) => Ok(Some(Event::Message(msg))),
            msg if self.role == Role::Server && msg.is_numbered() => {
                self.seq += 1;
                Ok(Some(Event::Numbered {
                    seq: self.seq,
                    message: msg,
                }))
            }
            Message::Stored { seq, .. } | Message::Unstored { seq, .. }
                if seq == 0 || seq > self.seq =>
            {
                Err(self.violation(ProtocolError::UnknownSeq {
                    got: msg.name(),
                    seq,
                    sent: self.seq,
                }))
            }
            Message::Said { .. } | Message::Told { .. } => {
                Err(self.violation(ProtocolError::Replaced {
                    got: msg.name(),
                    by: replacement(&msg),
                }))
            }
            msg => Ok(Some(Event::Message(msg))),
        }
    }

    fn welcomed(
        &mut self,
        version: u16,
        features: u64,
        max_frame: u32,
        addr: SocketAddr,
    ) -> Result<Option<Event>, ProtocolError> {
        if version == 0 || version > self.version {
            return Err(self.violation(ProtocolError::Version { version }));
        }
        if features & !self.features != 0 {
            return Err(self.violation(ProtocolError::BadWelcome(format!(
                "features {features:#x} include some this client did not ask for ({:#x})",
                self.features
            ))));
        }
        if features::agree(features, features) != features {
            return Err(self.violation(ProtocolError::BadWelcome(format!(
                "features {features:#x} grant HISTORY without ROOMS"
            ))));
        }
        let max_frame = max_frame as usize;
        let Ok(outbound) = ChatCodec::with_max_frame_len(max_frame) else {
            return Err(self.violation(ProtocolError::BadWelcome(format!(
                "max_frame {max_frame} is outside {MIN_FRAME_LEN}..={MAX_FRAME_LEN_CEILING}"
            ))));
        };
        self.outbound = outbound;
        // The server's relays may be longer than our sends by the overhead
        // of the capabilities in force.
        let inbound = out_limit(max_frame, features)
            .max(self.inbound.max_frame_len())
            .min(MAX_FRAME_LEN_CEILING);
        self.inbound = codec(inbound);
        self.naming = features & features::ROOMS != 0;
        let negotiated = Negotiated {
            version,
            features,
            max_frame,
            addr,
        };
        self.negotiated = Some(negotiated);
        self.state = State::Open;
        Ok(Some(Event::Welcome(negotiated)))
    }

    /// Server role: admits the client whose `Hello` was just reported, as
    /// seen from `addr`. Queues `Welcome` with the negotiated version and
    /// features and the longest payload the client may send.
    ///
    /// Returns `None`, doing nothing, unless the state is
    /// [`State::Admitting`].
    pub fn accept(&mut self, addr: SocketAddr) -> Option<Negotiated> {
        if self.state != State::Admitting {
            return None;
        }
        let (version, features) = self.hello.take()?;
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let negotiated = Negotiated {
            version: version.min(VERSION),
            features: features::agree(features, self.features),
            max_frame: self.inbound.max_frame_len(),
            addr,
        };
        self.queue(&Message::Welcome {
            version: negotiated.version,
            features: negotiated.features,
            max_frame: u32::try_from(negotiated.max_frame).unwrap_or(u32::MAX),
            ip: addr.ip(),
            port: addr.port(),
        });
        if negotiated.has(features::ROOMS) {
            self.outbound = codec(out_limit(negotiated.max_frame, negotiated.features));
            self.naming = true;
        }
        self.negotiated = Some(negotiated);
        self.state = State::Open;
        Some(negotiated)
    }

    /// Server role, [`features::AUTH`]: the client is named (the server has
    /// sent `Named`), so the stricter handshake limit and the rule that only
    /// naming requests may come are lifted. Without AUTH the first `Nick`
    /// does this by itself.
    pub fn named(&mut self) {
        if self.role == Role::Server {
            self.naming = false;
        }
    }

    /// Whether the client is not named yet (server role) or we have not
    /// sent our first `Nick` nor been named (client role).
    pub fn naming(&self) -> bool {
        self.naming
    }

    /// Refuses the peer: queues `Error { reason }` and closes. Works in any
    /// state but `Closed` (a server full, a name taken, a shutdown...).
    pub fn refuse(&mut self, reason: &str) {
        if self.state != State::Closed {
            self.queue_error(reason);
            self.state = State::Closed;
        }
    }

    /// Leaves cleanly. Client role: queues `Exit` and waits for the server's
    /// (state [`State::Leaving`]). Server role: queues `Exit`, the answer to
    /// the client's or a shutdown notice, and closes; call it once every
    /// frame that must precede it is written.
    ///
    /// # Errors
    ///
    /// [`SendError::NotOpen`] before the handshake is done (a server then
    /// [`refuse`](Self::refuse)s instead, as [`shutdown`](Self::shutdown)
    /// does) or after the connection closed.
    pub fn exit(&mut self) -> Result<(), SendError> {
        match (self.role, self.state) {
            (Role::Client, State::Open) => {
                self.queue(&Message::Exit);
                self.state = State::Leaving;
                Ok(())
            }
            (Role::Server, State::Open | State::PeerExited) => {
                self.queue(&Message::Exit);
                self.state = State::Closed;
                Ok(())
            }
            (_, state) => Err(SendError::NotOpen { state }),
        }
    }

    /// Server role, on shutdown: `Exit` to an open session, `Error` to a
    /// client still in its handshake (which may only be sent `Welcome` or
    /// `Error`), nothing once closed.
    pub fn shutdown(&mut self) {
        if self.exit().is_err() {
            self.refuse("server shutting down");
        }
    }

    /// Sends `Ping { nonce }`; the answer comes back as a `Pong` message event.
    ///
    /// # Errors
    ///
    /// [`SendError::NotOpen`] outside the open session.
    pub fn ping(&mut self, nonce: u64) -> Result<(), SendError> {
        self.send(&Message::Ping { nonce })
    }

    /// Queues an application message: `Send` for a client; `Relay`,
    /// `Joined`, `Left` for a server; `Ping` or `Pong` for either; and with
    /// [`features::ROOMS`] the capability's messages of this role. The
    /// handshake and the close sequences have their own calls.
    ///
    /// # Errors
    ///
    /// [`SendError::NotOpen`] outside the open session,
    /// [`SendError::NotAllowed`] for a message this role may not send or one
    /// with its own call, [`SendError::NotNegotiated`] for a message of a
    /// capability not agreed, [`SendError::NickFirst`] for a ROOMS client's
    /// request before its first `Nick`, [`SendError::Replaced`] for a
    /// server's `Said` or `Told` in a HISTORY session,
    /// [`SendError::UnknownSeq`] for a server's `Stored` or `Unstored` of a
    /// request number not received, [`SendError::TooLarge`] over the
    /// peer's limit (nothing is queued in every case).
    ///
    /// In a HISTORY session a client's `Send`, `Say` and `Tell` are
    /// numbered as they are queued: [`seq`](Self::seq) is then this one's.
    pub fn send(&mut self, msg: &Message) -> Result<(), SendError> {
        let open = self.state == State::Open
            || (self.role == Role::Server && self.state == State::PeerExited);
        if !open {
            return Err(SendError::NotOpen { state: self.state });
        }
        if !self.role.may_send(msg)
            || matches!(
                msg,
                Message::Hello { .. }
                    | Message::Welcome { .. }
                    | Message::Exit
                    | Message::Error { .. }
            )
        {
            return Err(SendError::NotAllowed {
                role: self.role,
                name: msg.name(),
            });
        }
        if msg.feature() & !self.agreed() != 0 {
            return Err(SendError::NotNegotiated { name: msg.name() });
        }
        if self.has(features::HISTORY) {
            self.history_send_rules(msg)?;
        }
        let nick = matches!(msg, Message::Nick { .. });
        let login = matches!(
            msg,
            Message::Register { .. } | Message::Login { .. } | Message::LoginToken { .. }
        );
        if self.role == Role::Client {
            let either =
                nick || login || matches!(msg, Message::Ping { .. } | Message::Pong { .. });
            if self.naming && !either {
                return Err(SendError::NickFirst { name: msg.name() });
            }
            if !self.naming && login {
                return Err(SendError::AlreadyNamed { name: msg.name() });
            }
        }
        self.outbound.encode(msg, &mut self.tx)?;
        // With AUTH a guest's `Nick` may be refused (no guests taken) and
        // followed by a `Login`: only `Named` ends the naming then.
        if nick && self.role == Role::Client && !self.has(features::AUTH) {
            self.naming = false;
        }
        if self.role == Role::Client && msg.is_numbered() && self.has(features::HISTORY) {
            self.seq += 1;
        }
        Ok(())
    }

    /// What a HISTORY session forbids a sender: a server's `Said` and
    /// `Told` (replaced), and answers to requests it has not received.
    fn history_send_rules(&self, msg: &Message) -> Result<(), SendError> {
        match *msg {
            Message::Said { .. } | Message::Told { .. } => Err(SendError::Replaced {
                name: msg.name(),
                by: replacement(msg),
            }),
            Message::Stored { seq, .. } | Message::Unstored { seq, .. }
                if seq == 0 || seq > self.seq =>
            {
                Err(SendError::UnknownSeq {
                    name: msg.name(),
                    seq,
                    received: self.seq,
                })
            }
            _ => Ok(()),
        }
    }

    /// At the end of the peer's stream: `Ok` if it ended between frames.
    ///
    /// The connection then closes, except that frames still buffered stay
    /// to be taken: a server that is admitting can still
    /// [`accept`](Self::accept) and [`poll`](Self::poll) the rest (the
    /// machine closes once they are taken), and one that received `Exit`
    /// can still answer it with [`exit`](Self::exit), in case the peer
    /// only shut down its sending half.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Frame`] with [`DecodeError::Truncated`] if it ended
    /// inside a frame (or with [`DecodeError::FrameTooLarge`] if a frame not
    /// yet polled announced more than the limit); an `Error` saying so is
    /// queued, in case the peer still reads.
    pub fn eof(&mut self) -> Result<(), ProtocolError> {
        if self.state == State::Closed {
            return Ok(());
        }
        // Walk the frames left, without taking them: they may be a server's
        // to poll after `accept`.
        let mut at = 0;
        while at < self.rx.len() {
            let have = self.rx.len() - at;
            let need = match self.inbound.header(&self.rx[at..]) {
                Ok(Some(len)) => HEADER_LEN + len,
                Ok(None) => HEADER_LEN,
                Err(e) => return Err(self.violation(ProtocolError::Frame(e))),
            };
            if need > have {
                let truncated = DecodeError::Truncated { have, need };
                return Err(self.violation(ProtocolError::Frame(truncated)));
            }
            at += need;
        }
        self.ended = true;
        let waiting = matches!(self.state, State::Admitting | State::PeerExited);
        if self.rx.is_empty() && !waiting {
            self.state = State::Closed;
        }
        Ok(())
    }

    /// The capabilities in force (none before the handshake is done).
    /// Whether the stricter handshake limit applies to the next frame.
    fn guarded(&self) -> bool {
        self.role == Role::Server && (self.state == State::Handshake || self.naming)
    }

    fn agreed(&self) -> u64 {
        self.negotiated.map_or(features::NONE, |n| n.features)
    }

    /// Whether the capability `feature` is in force.
    fn has(&self, feature: u64) -> bool {
        self.agreed() & feature == feature
    }

    /// Records a violation: the peer is told why, and the machine closes.
    fn violation(&mut self, err: ProtocolError) -> ProtocolError {
        self.refuse(&err.to_string());
        err
    }

    fn queue(&mut self, msg: &Message) {
        if let Err(e) = self.outbound.encode(msg, &mut self.tx) {
            // Only an `Error` carries text of our own making; it is cut to
            // fit. Every other control message fits the smallest limit.
            debug_assert!(false, "a {} exceeds the frame limit: {e}", msg.name());
        }
    }

    /// Queues `Error { reason }`, cut on a character boundary to fit the
    /// peer's limit.
    fn queue_error(&mut self, reason: &str) {
        let room = self.outbound.max_frame_len() - 1 - 9; // tag, widest length varint
        let mut end = reason.len().min(room);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.queue(&Message::Error {
            reason: reason[..end].to_owned(),
        });
    }
}

/// What a HISTORY session sends instead of `Said` or `Told`.
fn replacement(msg: &Message) -> &'static str {
    match msg {
        Message::Told { .. } => "Direct",
        _ => "Posted",
    }
}

/// Longest text whose `Send` payload fits `max`: 1 tag byte, the length
/// varint, the text.
pub(crate) fn max_text(max: usize) -> usize {
    let mut text = max.saturating_sub(2);
    // The varint is at most 9 bytes, so this steps back at most 8 times.
    while text > 0 && 1 + varint_width(text) + text > max {
        text -= 1;
    }
    text
}

fn varint_width(n: usize) -> usize {
    match n {
        0..=250 => 1,
        251..=65_535 => 3,
        65_536..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn codec(max: usize) -> ChatCodec {
    ChatCodec::with_max_frame_len(max).unwrap_or_else(|_| ChatCodec::new())
}

/// Whether a stream starts with an HTTP method, as a browser or curl would.
fn is_http(head: &[u8]) -> bool {
    const METHODS: [&[u8; 4]; 10] = [
        b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI ",
    ];
    METHODS.iter().any(|m| head == &m[..])
}
