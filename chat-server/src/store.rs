//! Message history: what is stored ([`Record`]), under which conversation
//! ([`Topic`]), and the [`Store`] trait the backends implement.
//!
//! Two backends: [`RedbStore`], durable (the default), and [`MemoryStore`],
//! the same semantics without a disk (`--ephemeral`). Ids and `prev` links
//! are assigned by the [`Journal`](crate::Journal), the one writer; a store
//! only keeps what it is given.
//!
//! # Guarantees every backend gives
//!
//! - [`append`](Store::append) is all or nothing: after an error none of the
//!   batch is stored (for [`RedbStore`]: one transaction, one fsync).
//! - Records of a topic are read in id order.
//! - Trimming only ever drops the *oldest* records of a topic (a prefix), and
//!   the store remembers per topic the highest id it dropped. So
//!   [`Page::missing`] is exact: it is true if and only if some record of the
//!   topic with an id greater than `after` was stored and has been trimmed.
//! - [`head`](Store::head) and [`last_id`](Store::last_id) survive trimming:
//!   a topic whose records were all trimmed still knows its newest id, so
//!   the next record's `prev` still points at it.
//!
//! Retention is applied by [`trim`](Store::trim) alone, which the journal
//! calls between batches every
//! [`JournalConfig::trim_every`](crate::JournalConfig::trim_every), not
//! inside `append`: an append's transaction holds its batch and nothing
//! else, and a topic may hold up to `trim_every` worth of records beyond its
//! count in between.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use chat_proto::Member;
use serde::{Deserialize, Serialize};

mod codec;
pub(crate) mod file;
mod memory;
mod redb;
#[cfg(test)]
mod tests;

pub use self::memory::MemoryStore;
pub use self::redb::RedbStore;

/// A conversation: a room, or the direct messages between two names.
///
/// Holds *folded* keys (the server's case-folded names), so two spellings of
/// one name are one topic. A direct conversation is the same topic whichever
/// party writes: [`Topic::direct`] orders the pair.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "Kind", into = "Kind")]
pub struct Topic(Kind);

/// The variants behind [`Topic`], private so that a `Direct` pair is always
/// ordered; serde goes through it to check that on the way in.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
enum Kind {
    Room(String),
    Direct(String, String),
}

impl TryFrom<Kind> for Topic {
    type Error = &'static str;

    fn try_from(kind: Kind) -> Result<Self, Self::Error> {
        match &kind {
            Kind::Direct(a, b) if a > b => Err("direct topic with unordered parties"),
            _ => Ok(Topic(kind)),
        }
    }
}

impl From<Topic> for Kind {
    fn from(topic: Topic) -> Self {
        topic.0
    }
}

impl Topic {
    /// The room whose folded name is `key`.
    pub fn room(key: impl Into<String>) -> Topic {
        Topic(Kind::Room(key.into()))
    }

    /// The direct conversation between the folded names `a` and `b`, in
    /// either order.
    pub fn direct(a: impl Into<String>, b: impl Into<String>) -> Topic {
        let (a, b) = (a.into(), b.into());
        if a <= b {
            Topic(Kind::Direct(a, b))
        } else {
            Topic(Kind::Direct(b, a))
        }
    }

    /// The room's folded name, if this is a room.
    pub fn as_room(&self) -> Option<&str> {
        match &self.0 {
            Kind::Room(key) => Some(key),
            Kind::Direct(..) => None,
        }
    }

    /// The two parties (ordered), if this is a direct conversation.
    pub fn parties(&self) -> Option<(&str, &str)> {
        match &self.0 {
            Kind::Room(_) => None,
            Kind::Direct(a, b) => Some((a, b)),
        }
    }

    /// Whether the folded name `key` may read this topic's history as a
    /// party: always for a room (membership is the caller's business), only
    /// its two parties for a direct conversation.
    pub fn is_party(&self, key: &str) -> bool {
        match &self.0 {
            Kind::Room(_) => true,
            Kind::Direct(a, b) => a == key || b == key,
        }
    }

    /// The stable byte encoding used as a storage key: `b'r'` and the room
    /// key, or `b'd'`, the first party's length as 4 big-endian bytes, and
    /// both parties. The length prefix keeps two pairs apart whatever
    /// characters the names hold.
    pub fn key(&self) -> Vec<u8> {
        match &self.0 {
            Kind::Room(key) => {
                let mut out = Vec::with_capacity(1 + key.len());
                out.push(b'r');
                out.extend_from_slice(key.as_bytes());
                out
            }
            Kind::Direct(a, b) => {
                let mut out = Vec::with_capacity(5 + a.len() + b.len());
                out.push(b'd');
                // Names are far shorter than 4 GiB; saturate rather than wrap.
                let len = u32::try_from(a.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(b.as_bytes());
                out
            }
        }
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Room(key) => write!(f, "Room({key:?})"),
            Kind::Direct(a, b) => write!(f, "Direct({a:?}, {b:?})"),
        }
    }
}

/// A message as a session submits it: a [`Record`] before the journal gives
/// it an id, a `prev` link and a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    /// Its conversation.
    pub topic: Topic,
    /// Who sent it.
    pub from: Member,
    /// A direct message's addressee, as typed and displayed; `None` in a room.
    pub to: Option<String>,
    /// The text.
    pub text: String,
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its id: one sequence for the whole store, strictly increasing, never
    /// reused, from 1.
    pub id: u64,
    /// The id of the record before it in the same topic (retained or not),
    /// 0 if it is the topic's first.
    pub prev: u64,
    /// When the server stored it: ms since the Unix epoch, never less than
    /// the record before it.
    pub at_ms: u64,
    /// Its conversation.
    pub topic: Topic,
    /// Who sent it.
    pub from: Member,
    /// A direct message's addressee, as typed and displayed; `None` in a room.
    pub to: Option<String>,
    /// The text.
    pub text: String,
}

impl Record {
    /// `new` with its id, `prev` link and time.
    pub fn new(new: NewRecord, id: u64, prev: u64, at_ms: u64) -> Record {
        let NewRecord {
            topic,
            from,
            to,
            text,
        } = new;
        Record {
            id,
            prev,
            at_ms,
            topic,
            from,
            to,
            text,
        }
    }
}

/// One page of a topic's history, from [`Store::after`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Records oldest first.
    pub records: Vec<Record>,
    /// True if and only if records of this topic with an id greater than the
    /// `after` asked for were stored and have since been trimmed: the start
    /// of what was asked for is gone. With `after` = 0 it says whether the
    /// topic has lost anything to retention.
    pub missing: bool,
}

/// How much history to keep; `None` keeps everything on that count.
/// The default keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// The most records kept per topic (the newest).
    pub per_topic: Option<u64>,
    /// The oldest a record may be, by its `at_ms`.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// True if this keeps everything, so trimming has nothing to do.
    pub fn keeps_all(&self) -> bool {
        self.per_topic.is_none() && self.max_age.is_none()
    }
}

/// The most records one [`Store::trim`] drops, so that working off a large
/// backlog (retention just lowered, a long stop) never holds the one writer
/// for long. A call that returns this many may have left more to drop.
pub const TRIM_MAX: u64 = 10_000;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is unreadable as a store (history or accounts): corrupt,
    /// truncated, not a store at all, or of an unknown format version; or
    /// a record in it does not decode. The server must not start on it.
    #[error("store {path}: corrupt or unreadable: {detail}")]
    Corrupt {
        /// The store's file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The disk or the quota is full (ENOSPC, EDQUOT): nothing was written.
    #[error("store {path}: disk full")]
    Full {
        /// The store's file.
        path: PathBuf,
    },
    /// Another process (or another store in this one) has the file open.
    #[error("store {path}: in use by another process")]
    Locked {
        /// The store's file.
        path: PathBuf,
    },
    /// Any other I/O failure.
    #[error("store {path}: {source}")]
    Io {
        /// The store's file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The store or the journal has been closed.
    #[error("history store closed")]
    Closed,
}

impl StoreError {
    /// `err` on `path`, as [`Full`](StoreError::Full) when the disk or quota
    /// is full, else as [`Io`](StoreError::Io).
    pub fn io(path: impl Into<PathBuf>, err: io::Error) -> StoreError {
        let path = path.into();
        match err.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::Full { path },
            _ => StoreError::Io { path, source: err },
        }
    }
}

/// A history backend. Calls block (disk I/O): run them off the async
/// workers, through `spawn_blocking` or on the journal's thread. Readers may
/// call concurrently with the one writer.
pub trait Store: Send + Sync + 'static {
    /// Appends a batch in one durable transaction (one fsync), all or
    /// nothing. Ids and `prev` links come in assigned; ids must be greater
    /// than every id stored before.
    fn append(&self, batch: &[Record]) -> Result<(), StoreError>;

    /// Records of `topic` with id > `after`, oldest first, at most `limit`,
    /// and whether the start is missing (see [`Page::missing`]).
    fn after(&self, topic: &Topic, after: u64, limit: usize) -> Result<Page, StoreError>;

    /// The last `count` records of `topic`, oldest first.
    fn last(&self, topic: &Topic, count: usize) -> Result<Vec<Record>, StoreError>;

    /// The highest id ever stored (trimming does not lower it), 0 when empty.
    fn last_id(&self) -> Result<u64, StoreError>;

    /// The id of the newest record ever stored in `topic` (trimmed or not),
    /// 0 if none: the `prev` of the topic's next record.
    fn head(&self, topic: &Topic) -> Result<u64, StoreError>;

    /// Drops the records beyond `keep`: beyond the newest `per_topic` of each
    /// topic, and those with `at_ms` older than `now_ms - max_age` (from the
    /// oldest up to the first that is young enough, so only a prefix of each
    /// topic goes). Returns how many were dropped: at most [`TRIM_MAX`], so
    /// a large backlog is worked off over several calls.
    fn trim(&self, keep: &Retention, now_ms: u64) -> Result<u64, StoreError>;
}
