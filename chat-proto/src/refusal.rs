//! Why a request was refused: the code carried by `Message::Refused`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why the server did not carry out a request. On the wire a `u16`
/// (PROTOCOL.md section 8.7), so that a code added later still decodes, as
/// [`Refusal::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Refusal {
    /// 1: another client has that name (compared case-insensitively).
    NameTaken,
    /// 2: not a valid name (length, characters).
    NameInvalid,
    /// 3: not a valid room name.
    RoomInvalid,
    /// 4: the client is not in that room.
    NotInRoom,
    /// 5: no room by that name exists.
    NoSuchRoom,
    /// 6: nobody has that name.
    NoSuchName,
    /// 7: the client is already in as many rooms as the server allows.
    TooManyRooms,
    /// 8: the room has as many members as the server allows.
    RoomFull,
    /// 9: the recipient cannot receive direct messages (a version 1 client).
    CannotReceive,
    /// 10: too many direct messages too fast; this one was not delivered.
    RateLimited,
    /// 11: the history store could not store the message (a full disk, a
    /// failing store); the connection stays open ([`Message::Unstored`](crate::Message::Unstored)).
    Unavailable,
    /// 12: wrong name or password, or an unknown, expired or revoked token
    /// (one code for all, so that an answer never tells which names exist).
    AuthFailed,
    /// 13: the server takes no guests: register or log in.
    AuthRequired,
    /// 14: the name belongs to an account: log in to use it.
    NameReserved,
    /// 15: a password or token may travel only over TLS or loopback.
    Insecure,
    /// 16: too many login or registration attempts; the detail says when to
    /// try again.
    Throttled,
    /// 17: the password does not meet the rules (8 to 256 bytes of UTF-8).
    BadPassword,
    /// A code this crate does not know, from a newer server. Build one with
    /// [`Refusal::from_code`], which never puts a known code here.
    Other(u16),
}

impl Refusal {
    /// The code on the wire.
    pub fn code(self) -> u16 {
        match self {
            Refusal::NameTaken => 1,
            Refusal::NameInvalid => 2,
            Refusal::RoomInvalid => 3,
            Refusal::NotInRoom => 4,
            Refusal::NoSuchRoom => 5,
            Refusal::NoSuchName => 6,
            Refusal::TooManyRooms => 7,
            Refusal::RoomFull => 8,
            Refusal::CannotReceive => 9,
            Refusal::RateLimited => 10,
            Refusal::Unavailable => 11,
            Refusal::AuthFailed => 12,
            Refusal::AuthRequired => 13,
            Refusal::NameReserved => 14,
            Refusal::Insecure => 15,
            Refusal::Throttled => 16,
            Refusal::BadPassword => 17,
            Refusal::Other(code) => code,
        }
    }

    /// The refusal a wire code stands for.
    ///
    /// ```
    /// use chat_proto::Refusal;
    /// assert_eq!(Refusal::from_code(1), Refusal::NameTaken);
    /// assert_eq!(Refusal::from_code(999), Refusal::Other(999));
    /// assert_eq!(Refusal::from_code(999).code(), 999);
    /// ```
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => Refusal::NameTaken,
            2 => Refusal::NameInvalid,
            3 => Refusal::RoomInvalid,
            4 => Refusal::NotInRoom,
            5 => Refusal::NoSuchRoom,
            6 => Refusal::NoSuchName,
            7 => Refusal::TooManyRooms,
            8 => Refusal::RoomFull,
            9 => Refusal::CannotReceive,
            10 => Refusal::RateLimited,
            11 => Refusal::Unavailable,
            12 => Refusal::AuthFailed,
            13 => Refusal::AuthRequired,
            14 => Refusal::NameReserved,
            15 => Refusal::Insecure,
            16 => Refusal::Throttled,
            17 => Refusal::BadPassword,
            code => Refusal::Other(code),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Refusal::NameTaken => "name taken",
            Refusal::NameInvalid => "invalid name",
            Refusal::RoomInvalid => "invalid room name",
            Refusal::NotInRoom => "not in that room",
            Refusal::NoSuchRoom => "no such room",
            Refusal::NoSuchName => "nobody has that name",
            Refusal::TooManyRooms => "in too many rooms",
            Refusal::RoomFull => "room full",
            Refusal::CannotReceive => "cannot receive direct messages",
            Refusal::RateLimited => "too many direct messages",
            Refusal::Unavailable => "message history unavailable",
            Refusal::AuthFailed => "login failed",
            Refusal::AuthRequired => "login required",
            Refusal::NameReserved => "name registered to an account",
            Refusal::Insecure => "secrets only over TLS or loopback",
            Refusal::Throttled => "too many attempts",
            Refusal::BadPassword => "password not acceptable",
            Refusal::Other(code) => return write!(f, "refusal {code}"),
        };
        f.write_str(text)
    }
}

impl Serialize for Refusal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.code())
    }
}

impl<'de> Deserialize<'de> for Refusal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(Refusal::from_code)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Refusal {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        // Through the wire code, so that `Other` never holds a known code.
        Ok(Refusal::from_code(u.arbitrary()?))
    }
}
