//! The messages of the protocol.
//!
//! Variants are append-only: each one's position is its tag on the wire, so a
//! new message is added at the end and old ones are never reordered or
//! changed. The enum is `#[non_exhaustive]` so that adding one is not a
//! breaking change for downstream `match`es.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks, sent in [`Message::Hello`].
pub const VERSION: u16 = 1;

/// Optional capabilities, negotiated as a bit set in the handshake.
///
/// A client sets the bits it understands in [`Message::Hello`]; the server
/// answers in [`Message::Welcome`] with the bits both sides support, and never
/// sends a message that belongs to a capability the client did not ask for.
/// Unknown bits are ignored. Version 1 defines none yet: nicknames, rooms,
/// direct messages and history will each arrive as a bit here plus new
/// variants at the end of [`Message`], so a version 1 client keeps working.
pub mod features {
    /// No optional capabilities.
    pub const NONE: u64 = 0;
    /// Every capability this crate knows.
    pub const ALL: u64 = NONE;
}

/// Number of variants in [`Message`]; tags at or above it are unknown.
pub(crate) const VARIANT_COUNT: u32 = 10;

/// One protocol message. The comment on each variant says who may send it.
///
/// # Examples
///
/// ```
/// use chat_proto::Message;
/// let msg = Message::Send { text: "你好, world".into() };
/// assert_eq!(msg.name(), "Send");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Message {
    /// Client → server: relay `text` to every other connected client.
    Send {
        /// UTF-8 text, any language.
        #[serde(deserialize_with = "text::de")]
        text: String,
    },
    /// Either way: leave. A client sends it to leave; the server answers with
    /// `Exit` and closes. A server sends it unprompted when shutting down.
    Exit,
    /// Server → client: `text` sent by the peer at `ip:port`, as the server
    /// saw that peer.
    Relay {
        /// The sender's address.
        ip: IpAddr,
        /// The sender's port.
        port: u16,
        /// The text, unchanged.
        #[serde(deserialize_with = "text::de")]
        text: String,
    },
    /// Client → server, first frame: the highest protocol version the client
    /// speaks and the capabilities it wants.
    Hello {
        /// Highest version the client speaks (at least 1).
        version: u16,
        /// Bit set of [`features`] the client understands.
        features: u64,
    },
    /// Server → client, answer to `Hello`: the version and capabilities in
    /// force, the largest frame the server accepts, and the client's own
    /// address as the server sees it (the address peers will see).
    Welcome {
        /// Version both sides will speak.
        version: u16,
        /// Capabilities both sides support.
        features: u64,
        /// Largest payload the server accepts, in bytes.
        max_frame: u32,
        /// The client's address as the server sees it.
        ip: IpAddr,
        /// The client's port as the server sees it.
        port: u16,
    },
    /// Either way: the sender is about to close because of `reason`
    /// (bad input, server full, slow consumer, ...).
    Error {
        /// Human-readable reason.
        #[serde(deserialize_with = "text::de")]
        reason: String,
    },
    /// Server → client: a peer joined.
    Joined {
        /// The peer's address.
        ip: IpAddr,
        /// The peer's port.
        port: u16,
    },
    /// Server → client: a peer left (exited, dropped, or was evicted).
    Left {
        /// The peer's address.
        ip: IpAddr,
        /// The peer's port.
        port: u16,
    },
    /// Either way: are you alive? The receiver answers `Pong` with the same nonce.
    Ping {
        /// Echoed back in `Pong`.
        nonce: u64,
    },
    /// Either way: answer to `Ping`.
    Pong {
        /// The nonce of the `Ping` being answered.
        nonce: u64,
    },
}

impl Message {
    /// The `Hello` this crate sends: [`VERSION`] with no optional features.
    pub fn hello() -> Self {
        Message::Hello {
            version: VERSION,
            features: features::NONE,
        }
    }

    /// A `Relay` of `text` from `from`.
    pub fn relay(from: SocketAddr, text: impl Into<String>) -> Self {
        Message::Relay {
            ip: from.ip(),
            port: from.port(),
            text: text.into(),
        }
    }

    /// The variant's name, for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Send { .. } => "Send",
            Message::Exit => "Exit",
            Message::Relay { .. } => "Relay",
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Error { .. } => "Error",
            Message::Joined { .. } => "Joined",
            Message::Left { .. } => "Left",
            Message::Ping { .. } => "Ping",
            Message::Pong { .. } => "Pong",
        }
    }

    /// Whether a client may send this message to a server.
    pub fn from_client(&self) -> bool {
        matches!(
            self,
            Message::Send { .. }
                | Message::Exit
                | Message::Hello { .. }
                | Message::Error { .. }
                | Message::Ping { .. }
                | Message::Pong { .. }
        )
    }

    /// Whether a server may send this message to a client.
    pub fn from_server(&self) -> bool {
        !matches!(self, Message::Send { .. } | Message::Hello { .. })
    }
}

/// Text fields are decoded by borrowing from the payload first, so a claimed
/// string length is checked against the bytes actually present before any
/// allocation (bincode's owned path allocates the claimed length up front).
mod text {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, Visitor};

    pub(super) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_str(Text)
    }

    struct Text;

    impl Visitor<'_> for Text {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a UTF-8 string")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }
}
