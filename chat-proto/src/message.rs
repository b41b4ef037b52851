//! The messages of the protocol.
//!
//! Variants are append-only: each one's position is its tag on the wire, so a
//! new message is added at the end and old ones are never reordered or
//! changed. The enum is `#[non_exhaustive]` so that adding one is not a
//! breaking change for downstream `match`es.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub use crate::refusal::Refusal;

/// The protocol version this crate speaks, sent in [`Message::Hello`].
pub const VERSION: u16 = 1;

/// Optional capabilities, negotiated as a bit set in the handshake.
///
/// A client sets the bits it understands in [`Message::Hello`]; the server
/// answers in [`Message::Welcome`] with the bits both sides support, and never
/// sends a message that belongs to a capability the client did not ask for.
/// Unknown bits are ignored. Each capability is a bit here plus new variants
/// at the end of [`Message`] ([`Message::feature`] says which bit a variant
/// belongs to), so a version 1 client with no bits keeps working unchanged.
pub mod features {
    /// No optional capabilities: the seed's one room, peers known by `ip:port`.
    pub const NONE: u64 = 0;
    /// Nicknames, named rooms, direct messages and rosters (PROTOCOL.md
    /// section 8). One bit, because each needs the others: a direct message
    /// is addressed by name, a roster lists names, a room's relay names its
    /// sender and its room.
    pub const ROOMS: u64 = 1;
    /// Durable history (PROTOCOL.md section 9): room and direct messages
    /// carry ids, the sender learns its message's id once it is stored, and a
    /// client can page through what it missed. Granted only with [`ROOMS`]:
    /// see [`agree`].
    pub const HISTORY: u64 = 0x2;
    /// Accounts (PROTOCOL.md section 10): a client may register its name
    /// with a password, log in with it or with a token, and log out; a
    /// registered name is its owner's alone. Granted only with [`ROOMS`]:
    /// see [`agree`].
    pub const AUTH: u64 = 0x4;
    /// Every capability this crate knows.
    pub const ALL: u64 = ROOMS | HISTORY | AUTH;

    /// The capabilities a session gets when a client asks for `asked` and
    /// the server offers `offered`: the bits both set, minus [`HISTORY`]
    /// and [`AUTH`] unless [`ROOMS`] is among them (both are about names).
    ///
    /// ```
    /// use chat_proto::features::{self, AUTH, HISTORY, ROOMS};
    /// assert_eq!(features::agree(ROOMS | HISTORY, ROOMS | HISTORY), ROOMS | HISTORY);
    /// assert_eq!(features::agree(HISTORY | AUTH, ROOMS | HISTORY | AUTH), 0);
    /// assert_eq!(features::agree(ROOMS | HISTORY, ROOMS), ROOMS);
    /// assert_eq!(features::agree(ROOMS | AUTH, ROOMS | AUTH), ROOMS | AUTH);
    /// ```
    pub const fn agree(asked: u64, offered: u64) -> u64 {
        let both = asked & offered;
        if both & ROOMS == 0 {
            both & !(HISTORY | AUTH)
        } else {
            both
        }
    }
}

/// Number of variants in [`Message`]; tags at or above it are unknown.
pub(crate) const VARIANT_COUNT: u32 = 38;

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
    /// Client → server, [`features::ROOMS`]: be called `name`. The first
    /// message after `Welcome` (an empty name asks the server to pick one),
    /// and a rename at any time after.
    Nick {
        /// The name asked for, as typed; the server normalises it.
        #[serde(deserialize_with = "text::de")]
        name: String,
    },
    /// Client → server, [`features::ROOMS`]: enter `room`, creating it if
    /// nobody is in it.
    Join {
        /// The room's name.
        #[serde(deserialize_with = "text::de")]
        room: String,
    },
    /// Client → server, [`features::ROOMS`]: leave `room`.
    Part {
        /// The room's name.
        #[serde(deserialize_with = "text::de")]
        room: String,
    },
    /// Client → server, [`features::ROOMS`]: relay `text` to the other
    /// members of `room`.
    Say {
        /// A room the client is in.
        #[serde(deserialize_with = "text::de")]
        room: String,
        /// UTF-8 text, any language.
        #[serde(deserialize_with = "text::de")]
        text: String,
    },
    /// Client → server, [`features::ROOMS`]: a direct message to whoever is
    /// called `name`, and to nobody else.
    Tell {
        /// The recipient's name.
        #[serde(deserialize_with = "text::de")]
        name: String,
        /// UTF-8 text, any language.
        #[serde(deserialize_with = "text::de")]
        text: String,
    },
    /// Client → server, [`features::ROOMS`]: who is in `room`? Answered
    /// with `Roster`.
    Who {
        /// The room's name.
        #[serde(deserialize_with = "text::de")]
        room: String,
    },
    /// Client → server, [`features::ROOMS`]: which rooms exist? Answered
    /// with `Rooms`.
    ListRooms,
    /// Server → client, [`features::ROOMS`]: the answer to the first `Nick`:
    /// the client is now called `name` (the one it asked for, or one the
    /// server picked) and is in the default room.
    Named {
        /// The client's name.
        #[serde(deserialize_with = "text::de")]
        name: String,
    },
    /// Server → client, [`features::ROOMS`]: `text` said in `room` by
    /// `from`.
    Said {
        /// The room it was said in.
        #[serde(deserialize_with = "text::de")]
        room: String,
        /// The sender: its name as the server knows it, and its address.
        from: Member,
        /// The text, unchanged.
        #[serde(deserialize_with = "text::de")]
        text: String,
    },
    /// Server → client, [`features::ROOMS`]: a direct message from `from`.
    Told {
        /// The sender: its name as the server knows it, and its address.
        from: Member,
        /// The text, unchanged.
        #[serde(deserialize_with = "text::de")]
        text: String,
    },
    /// Server → client, [`features::ROOMS`]: a client entered `room`.
    Entered {
        /// The room.
        #[serde(deserialize_with = "text::de")]
        room: String,
        /// Who entered.
        member: Member,
    },
    /// Server → client, [`features::ROOMS`]: a client left `room` (parted,
    /// exited, dropped or evicted). The one who parted gets it too.
    Departed {
        /// The room.
        #[serde(deserialize_with = "text::de")]
        room: String,
        /// Who left.
        member: Member,
    },
    /// Server → client, [`features::ROOMS`]: the client that was called
    /// `old` is now `member` (its new name and its address).
    Renamed {
        /// The name it had.
        #[serde(deserialize_with = "text::de")]
        old: String,
        /// Its new name, and its address.
        member: Member,
    },
    /// Server → client, [`features::ROOMS`]: the members of `room`, in the
    /// order they entered, answering `Join` or `Who`. A long roster comes
    /// in several frames; every one but the last has `more` set.
    Roster {
        /// The room.
        #[serde(deserialize_with = "text::de")]
        room: String,
        /// Members, in the order they entered.
        #[serde(deserialize_with = "seq::de")]
        members: Vec<Member>,
        /// Whether another `Roster` frame for this answer follows.
        more: bool,
    },
    /// Server → client, [`features::ROOMS`]: the rooms that exist, answering
    /// `ListRooms`, in several frames like `Roster`.
    Rooms {
        /// Rooms and their member counts.
        #[serde(deserialize_with = "seq::de")]
        rooms: Vec<RoomInfo>,
        /// Whether another `Rooms` frame for this answer follows.
        more: bool,
    },
    /// Server → client, [`features::ROOMS`]: a request was not carried out,
    /// and the connection stays open.
    Refused {
        /// Why, as a code a program can act on.
        code: Refusal,
        /// What the refused request named: the name, room or recipient.
        #[serde(deserialize_with = "text::de")]
        subject: String,
        /// Why, for a human.
        #[serde(deserialize_with = "text::de")]
        detail: String,
    },
    /// Server → client, [`features::HISTORY`]: a room message with its
    /// place in the room's history. Replaces `Said` in HISTORY sessions.
    Posted {
        /// The room it was said in.
        #[serde(deserialize_with = "text::de")]
        room: String,
        /// The message, its sender and its ids.
        entry: Entry,
    },
    /// Server → client, [`features::HISTORY`]: a direct message with its
    /// place in the conversation. Replaces `Told` in HISTORY sessions.
    Direct {
        /// The message; `entry.from` is the sender, the other party.
        entry: Entry,
    },
    /// Server → client, [`features::HISTORY`]: the client's `Say`, `Tell`
    /// or `Send` numbered `seq` is durably stored as `id`.
    Stored {
        /// The request's number ([`Connection::seq`](crate::Connection::seq)).
        seq: u64,
        /// The id the message got in its conversation.
        id: u64,
        /// The server's time of the message, in ms since the Unix epoch.
        at: u64,
    },
    /// Server → client, [`features::HISTORY`]: the client's `Say`, `Tell`
    /// or `Send` numbered `seq` was neither stored nor sent to anyone.
    /// Replaces `Refused` for those requests in HISTORY sessions.
    Unstored {
        /// The request's number.
        seq: u64,
        /// Why, as a code a program can act on.
        code: Refusal,
        /// Why, for a human.
        #[serde(deserialize_with = "text::de")]
        detail: String,
    },
    /// Client → server, [`features::HISTORY`]: the stored messages of
    /// `conversation` with an id above `after`, oldest first, at most
    /// `limit` (0: the server's page size). Answered with `Page`.
    Resume {
        /// The room or direct conversation.
        conversation: Conversation,
        /// The last id the client has (0: from the start).
        after: u64,
        /// The most entries wanted (0: the server's page size).
        limit: u32,
    },
    /// Client → server, [`features::HISTORY`]: the last `count` stored
    /// messages of `conversation` (0: the server's page size), oldest
    /// first. Answered with `Page`.
    Recent {
        /// The room or direct conversation.
        conversation: Conversation,
        /// How many of the latest messages are wanted.
        count: u32,
    },
    /// Server → client, [`features::HISTORY`]: the answer to `Resume` or
    /// `Recent`.
    Page {
        /// The conversation asked for.
        conversation: Conversation,
        /// Stored messages, in increasing id.
        #[serde(deserialize_with = "seq::de")]
        entries: Vec<Entry>,
        /// Messages that the request reached for are no longer retained:
        /// the page starts at the oldest retained one.
        missing: bool,
        /// More stored messages follow the last entry: ask again with
        /// `after` set to its id.
        more: bool,
    },
    /// Client → server, [`features::AUTH`], instead of the first `Nick`:
    /// make an account called `name` with `password`, and log in to it.
    /// Answered with `LoggedIn` then `Named`, or `Refused`.
    Register {
        /// The name to register, under the rules of `Nick`.
        #[serde(deserialize_with = "text::de")]
        name: String,
        /// The password: 8 to 256 bytes of UTF-8.
        password: Secret,
    },
    /// Client → server, [`features::AUTH`], instead of the first `Nick`:
    /// log in to the account `name`. Answered with `LoggedIn` then `Named`,
    /// or `Refused`.
    Login {
        /// The account's name (compared as names are).
        #[serde(deserialize_with = "text::de")]
        name: String,
        /// Its password.
        password: Secret,
    },
    /// Client → server, [`features::AUTH`], instead of the first `Nick`:
    /// log in with a token from an earlier `LoggedIn`. Answered like `Login`.
    LoginToken {
        /// The token, as `LoggedIn` gave it.
        token: Secret,
    },
    /// Server → client, [`features::AUTH`]: the client is logged in to the
    /// account `name`; `Named` follows.
    LoggedIn {
        /// The account's name, as registered.
        #[serde(deserialize_with = "text::de")]
        name: String,
        /// A new token to log in with next time instead of the password;
        /// empty after `LoginToken` (that token stays valid).
        token: Secret,
        /// When the token stops working, in seconds since the Unix epoch.
        expires: u64,
    },
    /// Client → server, [`features::AUTH`]: revoke the token this session
    /// logged in with or was given, and leave; answered with `Exit`.
    Logout,
}

/// A client as a room's members see it: its name and its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Member {
    /// Its name, as the server knows it.
    #[serde(deserialize_with = "text::de")]
    pub name: String,
    /// Its address.
    pub ip: IpAddr,
    /// Its port.
    pub port: u16,
}

impl Member {
    /// A member called `name` at `addr`.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        Member {
            name: name.into(),
            ip: addr.ip(),
            port: addr.port(),
        }
    }

    /// Its address as one value.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// One line of a room list: a room and how many members it has.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RoomInfo {
    /// The room's name.
    #[serde(deserialize_with = "text::de")]
    pub name: String,
    /// How many clients are in it.
    pub members: u32,
}

/// A stored room or direct message: its place in its conversation, when
/// and by whom it was sent, and its text ([`features::HISTORY`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Entry {
    /// Its id: at least 1, above every earlier id of its conversation,
    /// never reused; not necessarily one more than `prev`.
    pub id: u64,
    /// The id of the message before it in the same conversation (0: none).
    pub prev: u64,
    /// The server's time when it was stored, in ms since the Unix epoch.
    pub at: u64,
    /// Its sender, as the server knew it then.
    pub from: Member,
    /// The text, unchanged.
    #[serde(deserialize_with = "text::de")]
    pub text: String,
}

/// Whose history: a room's, or a direct conversation's
/// ([`features::HISTORY`]). On the wire a tag (0 room, 1 direct) and a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Conversation {
    /// The room of this name.
    Room(#[serde(deserialize_with = "text::de")] String),
    /// The direct messages between the client and the party of this name.
    Direct(#[serde(deserialize_with = "text::de")] String),
}

impl Conversation {
    /// The room's name, or the other party's.
    pub fn name(&self) -> &str {
        match self {
            Conversation::Room(name) | Conversation::Direct(name) => name,
        }
    }
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
            Message::Nick { .. } => "Nick",
            Message::Join { .. } => "Join",
            Message::Part { .. } => "Part",
            Message::Say { .. } => "Say",
            Message::Tell { .. } => "Tell",
            Message::Who { .. } => "Who",
            Message::ListRooms => "ListRooms",
            Message::Named { .. } => "Named",
            Message::Said { .. } => "Said",
            Message::Told { .. } => "Told",
            Message::Entered { .. } => "Entered",
            Message::Departed { .. } => "Departed",
            Message::Renamed { .. } => "Renamed",
            Message::Roster { .. } => "Roster",
            Message::Rooms { .. } => "Rooms",
            Message::Refused { .. } => "Refused",
            Message::Posted { .. } => "Posted",
            Message::Direct { .. } => "Direct",
            Message::Stored { .. } => "Stored",
            Message::Unstored { .. } => "Unstored",
            Message::Resume { .. } => "Resume",
            Message::Recent { .. } => "Recent",
            Message::Page { .. } => "Page",
            Message::Register { .. } => "Register",
            Message::Login { .. } => "Login",
            Message::LoginToken { .. } => "LoginToken",
            Message::LoggedIn { .. } => "LoggedIn",
            Message::Logout => "Logout",
        }
    }

    /// The capability bit this message belongs to ([`features::NONE`] for
    /// version 1's messages). Neither side may send a message whose bit was
    /// not agreed in the handshake.
    pub fn feature(&self) -> u64 {
        match self {
            Message::Send { .. }
            | Message::Exit
            | Message::Relay { .. }
            | Message::Hello { .. }
            | Message::Welcome { .. }
            | Message::Error { .. }
            | Message::Joined { .. }
            | Message::Left { .. }
            | Message::Ping { .. }
            | Message::Pong { .. } => features::NONE,
            Message::Posted { .. }
            | Message::Direct { .. }
            | Message::Stored { .. }
            | Message::Unstored { .. }
            | Message::Resume { .. }
            | Message::Recent { .. }
            | Message::Page { .. } => features::HISTORY,
            Message::Register { .. }
            | Message::Login { .. }
            | Message::LoginToken { .. }
            | Message::LoggedIn { .. }
            | Message::Logout => features::AUTH,
            _ => features::ROOMS,
        }
    }

    /// A `Page` of `conversation` holding as many of `entries`, in order,
    /// as fit a payload of `max_len` bytes (the client's limit, from
    /// [`ServerConfig::outbound_for`](crate::ServerConfig::outbound_for)),
    /// and how many it took. Its `more` is set if `more` is (stored
    /// messages follow `entries`) or if some of `entries` were left out.
    ///
    /// The first entry is always taken: it fits any HISTORY client's limit
    /// if its text came from a request the server accepted under its
    /// current frame limit (PROTOCOL.md section 9.9), so a page that stops
    /// early still makes progress.
    ///
    /// ```
    /// use chat_proto::{Conversation, Entry, Member, Message};
    ///
    /// let entry = |id| Entry {
    ///     id,
    ///     prev: id - 1,
    ///     at: 0,
    ///     from: Member::new("张三", "127.0.0.1:3075".parse().unwrap()),
    ///     text: "x".repeat(100),
    /// };
    /// let entries: Vec<Entry> = (1..=10).map(entry).collect();
    /// let room = Conversation::Room("lobby".into());
    /// let (page, taken) = Message::page(room, &entries, false, false, 400);
    /// assert_eq!(taken, 3);
    /// assert!(matches!(page, Message::Page { more: true, .. }));
    /// ```
    pub fn page(
        conversation: Conversation,
        entries: &[Entry],
        missing: bool,
        more: bool,
        max_len: usize,
    ) -> (Message, usize) {
        // Tag, conversation, the two bools; the count's varint is added
        // below, at its widest for the count reached so far.
        let fixed = 1 + size::conversation(&conversation) + 2;
        let mut len = fixed;
        let mut taken = 0;
        for entry in entries {
            let next = len + size::entry(entry);
            if taken > 0 && next + size::varint(taken as u64 + 1) > max_len {
                break;
            }
            len = next;
            taken += 1;
        }
        let page = Message::Page {
            conversation,
            entries: entries[..taken].to_vec(),
            missing,
            more: more || taken < entries.len(),
        };
        (page, taken)
    }

    /// Whether this is a request that, in a [`features::HISTORY`] session,
    /// is numbered and answered with `Stored` or `Unstored`: `Say`, `Tell`,
    /// and `Send` (a ROOMS client's `Send` is a `Say` to the lobby).
    pub fn is_numbered(&self) -> bool {
        matches!(
            self,
            Message::Send { .. } | Message::Say { .. } | Message::Tell { .. }
        )
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
                | Message::Nick { .. }
                | Message::Join { .. }
                | Message::Part { .. }
                | Message::Say { .. }
                | Message::Tell { .. }
                | Message::Who { .. }
                | Message::ListRooms
                | Message::Resume { .. }
                | Message::Recent { .. }
                | Message::Register { .. }
                | Message::Login { .. }
                | Message::LoginToken { .. }
                | Message::Logout
        )
    }

    /// Whether a server may send this message to a client.
    pub fn from_server(&self) -> bool {
        matches!(
            self,
            Message::Exit
                | Message::Relay { .. }
                | Message::Welcome { .. }
                | Message::Error { .. }
                | Message::Joined { .. }
                | Message::Left { .. }
                | Message::Ping { .. }
                | Message::Pong { .. }
                | Message::Named { .. }
                | Message::Said { .. }
                | Message::Told { .. }
                | Message::Entered { .. }
                | Message::Departed { .. }
                | Message::Renamed { .. }
                | Message::Roster { .. }
                | Message::Rooms { .. }
                | Message::Refused { .. }
                | Message::Posted { .. }
                | Message::Direct { .. }
                | Message::Stored { .. }
                | Message::Unstored { .. }
                | Message::Page { .. }
                | Message::LoggedIn { .. }
        )
    }
}

/// Encoded sizes, for packing pages without encoding them twice; checked
/// against the encoder by the tests.
mod size {
    use std::net::IpAddr;

    use super::{Conversation, Entry, Member};

    pub(super) fn varint(n: u64) -> usize {
        match n {
            0..=250 => 1,
            251..=0xffff => 3,
            0x1_0000..=0xffff_ffff => 5,
            _ => 9,
        }
    }

    fn string(s: &str) -> usize {
        varint(s.len() as u64) + s.len()
    }

    fn member(m: &Member) -> usize {
        let ip = match m.ip {
            IpAddr::V4(_) => 5,
            IpAddr::V6(_) => 17,
        };
        string(&m.name) + ip + varint(u64::from(m.port))
    }

    pub(super) fn entry(e: &Entry) -> usize {
        varint(e.id) + varint(e.prev) + varint(e.at) + member(&e.from) + string(&e.text)
    }

    pub(super) fn conversation(c: &Conversation) -> usize {
        1 + string(c.name())
    }
}

/// Text fields are decoded by borrowing from the payload first, so a claimed
/// string length is checked against the bytes actually present before any
/// allocation (bincode's owned path allocates the claimed length up front).
pub(crate) mod text {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, Visitor};

    pub(crate) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
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

/// Lists are decoded without trusting their claimed length: serde would
/// reserve up to 1 MiB for a count that a 10-byte frame can claim, so the
/// list grows only with the elements actually present.
mod seq {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserializer;
    use serde::de::{Deserialize, SeqAccess, Visitor};

    pub(super) fn de<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        d.deserialize_seq(Seq(PhantomData))
    }

    struct Seq<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Seq<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
}
