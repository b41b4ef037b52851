//! [`RedbStore`]: history in one redb file, one fsync per appended batch.
//!
//! Three tables:
//! - `meta`: `"layout"` → the layout version ([`LAYOUT`]), `"last_id"` → the
//!   highest id ever stored;
//! - `log`: (topic key, id) → the record ([`codec`]); a topic's records are
//!   one contiguous key range in id order;
//! - `topics`: topic key → (head id, highest trimmed id, records retained,
//!   `at_ms` of the oldest retained).
//!   An entry is kept when all its records are trimmed, so `head` and
//!   `missing` stay exact.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::path::Path;
#[cfg(test)]
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ::redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::codec;
#[cfg(test)]
use super::file::LAYOUT_KEY;
use super::file::{At, Layout, META, Opener, RedbFile};
use super::{Page, Record, Retention, Store, StoreError, TRIM_MAX, Topic};

/// The layout of the tables; a file with another is refused.
const LAYOUT: u64 = 1;

/// The history file: see [`RedbFile`] for what it shares with accounts.
static FILE: Layout = Layout {
    kind: "chat history store",
    version: LAYOUT,
    // Recent history, the part that is read, stays in the cache.
    cache: 64 << 20,
    // A reopen waits for the calls still using the old handle rather than
    // fail: history reads go on while appends meet a full disk.
    reopen_wait: Duration::from_secs(1),
    create: create_tables,
    check: check_tables,
};

const LOG: TableDefinition<'_, (&[u8], u64), &[u8]> = TableDefinition::new("log");
const TOPICS: TableDefinition<'_, &[u8], (u64, u64, u64, u64)> = TableDefinition::new("topics");

const LAST_ID: &str = "last_id";

/// A topic's entry in `topics`.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    /// The newest id ever stored.
    head: u64,
    /// The highest id trimmed, 0 if none.
    trimmed: u64,
    /// How many records are retained.
    count: u64,
    /// The `at_ms` of the oldest retained record, so trimming by age skips
    /// a topic without reading it.
    oldest_at: u64,
}

impl State {
    fn from_tuple((head, trimmed, count, oldest_at): (u64, u64, u64, u64)) -> State {
        State {
            head,
            trimmed,
            count,
            oldest_at,
        }
    }

    fn tuple(self) -> (u64, u64, u64, u64) {
        (self.head, self.trimmed, self.count, self.oldest_at)
    }
}

/// The durable store: one redb file, opened by one process at a time.
///
/// A file that exists is only ever opened, never initialized: a new store is
/// built under a temporary name and renamed into place, so a half-created
/// file cannot pass for an empty store.
///
/// After an I/O error (a full disk, say) redb refuses every further call on
/// that handle, reads included; so the store lets the handle go and opens
/// the file again on the next call. Reads go on serving history while
/// appends fail, and appends work again once there is room.
pub struct RedbStore {
    file: RedbFile,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.file.path())
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store in the file `path`, creating it (and nothing else: the
    /// directory must exist) if there is no such file.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the file is not a readable store of this
    /// layout, [`StoreError::Locked`] if another process has it open,
    /// [`StoreError::Full`] or [`StoreError::Io`] if it cannot be read or
    /// created.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(path.as_ref(), Opener::File)
    }

    fn open_with(path: &Path, opener: Opener) -> Result<RedbStore, StoreError> {
        Ok(RedbStore {
            file: RedbFile::open(path, &FILE, opener)?,
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Writes raw bytes as the record `id` of `topic`, bypassing the codec:
    /// for tests of what a damaged record does.
    #[cfg(test)]
    pub(crate) fn put_raw(&self, topic: &Topic, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.with(|db, p| {
            let txn = db.begin_write().at(p)?;
            {
                let mut log = txn.open_table(LOG).at(p)?;
                let key = topic.key();
                log.insert((key.as_slice(), id), bytes).at(p)?;
            }
            txn.commit().at(p)
        })
    }
}

/// A new file's tables, and `last_id` 0.
fn create_tables(txn: &WriteTransaction, p: &Path) -> Result<(), StoreError> {
    txn.open_table(META).at(p)?.insert(LAST_ID, 0).at(p)?;
    txn.open_table(LOG).at(p)?;
    txn.open_table(TOPICS).at(p)?;
    Ok(())
}

/// Opening the tables checks they exist, with their key and value types.
fn check_tables(txn: &ReadTransaction, p: &Path) -> Result<(), StoreError> {
    txn.open_table(LOG).at(p)?;
    txn.open_table(TOPICS).at(p)?;
    Ok(())
}

impl Store for RedbStore {
    fn append(&self, batch: &[Record]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.file.with(|db, _| self.append_in(db, batch))
    }

    fn after(&self, topic: &Topic, after: u64, limit: usize) -> Result<Page, StoreError> {
        self.file
            .with(|db, _| self.after_in(db, topic, after, limit))
    }

    fn last(&self, topic: &Topic, count: usize) -> Result<Vec<Record>, StoreError> {
        self.file.with(|db, _| self.last_in(db, topic, count))
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        self.file.with(|db, _| self.last_id_in(db))
    }

    fn head(&self, topic: &Topic) -> Result<u64, StoreError> {
        self.file.with(|db, _| self.head_in(db, topic))
    }

    fn trim(&self, keep: &Retention, now_ms: u64) -> Result<u64, StoreError> {
        if keep.keeps_all() {
            return Ok(0);
        }
        self.file.with(|db, _| self.trim_in(db, keep, now_ms))
    }
}

/// The operations, on an open handle.
impl RedbStore {
    fn append_in(&self, db: &Database, batch: &[Record]) -> Result<(), StoreError> {
        let Some(newest) = batch.iter().map(|r| r.id).max() else {
            return Ok(());
        };
        let p = self.file.path();
        let txn = db.begin_write().at(p)?;
        {
            let mut log = txn.open_table(LOG).at(p)?;
            let mut topics = txn.open_table(TOPICS).at(p)?;
            let mut meta = txn.open_table(META).at(p)?;
            let mut touched: HashMap<Vec<u8>, State> = HashMap::new();
            let mut buf = Vec::with_capacity(256);
            for record in batch {
                let key = record.topic.key();
                buf.clear();
                codec::encode(record, &mut buf).map_err(|detail| StoreError::Io {
                    path: p.to_path_buf(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, detail),
                })?;
                log.insert((key.as_slice(), record.id), buf.as_slice())
                    .at(p)?;
                let state = match touched.entry(key) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let state = topics.get(e.key().as_slice()).at(p)?;
                        let state = state.map(|s| State::from_tuple(s.value()));
                        e.insert(state.unwrap_or_default())
                    }
                };
                if state.count == 0 {
                    state.oldest_at = record.at_ms;
                }
                state.head = record.id;
                state.count += 1;
            }
            for (key, state) in &touched {
                topics.insert(key.as_slice(), state.tuple()).at(p)?;
            }
            let last = meta.get(LAST_ID).at(p)?.map_or(0, |v| v.value());
            meta.insert(LAST_ID, last.max(newest)).at(p)?;
        }
        txn.commit().at(p)
    }

    fn after_in(
        &self,
        db: &Database,
        topic: &Topic,
        after: u64,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let p = self.file.path();
        let key = topic.key();
        let txn = db.begin_read().at(p)?;
        let topics = txn.open_table(TOPICS).at(p)?;
        let state = topics.get(key.as_slice()).at(p)?;
        let state = state
            .map(|s| State::from_tuple(s.value()))
            .unwrap_or_default();
        let mut records = Vec::new();
        if let Some(start) = after.checked_add(1) {
            let log = txn.open_table(LOG).at(p)?;
            let range = log
                .range((key.as_slice(), start)..=(key.as_slice(), u64::MAX))
                .at(p)?;
            for entry in range.take(limit) {
                let (_, value) = entry.at(p)?;
                records.push(codec::decode(value.value()).map_err(|d| self.file.corrupt(d))?);
            }
        }
        Ok(Page {
            records,
            missing: state.trimmed > after,
        })
    }

    fn last_in(
        &self,
        db: &Database,
        topic: &Topic,
        count: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let p = self.file.path();
        let key = topic.key();
        let txn = db.begin_read().at(p)?;
        let log = txn.open_table(LOG).at(p)?;
        let range = log
            .range((key.as_slice(), 0)..=(key.as_slice(), u64::MAX))
            .at(p)?;
        let mut records = Vec::with_capacity(count.min(1024));
        for entry in range.rev().take(count) {
            let (_, value) = entry.at(p)?;
            records.push(codec::decode(value.value()).map_err(|d| self.file.corrupt(d))?);
        }
        records.reverse();
        Ok(records)
    }

    fn last_id_in(&self, db: &Database) -> Result<u64, StoreError> {
        let p = self.file.path();
        let txn = db.begin_read().at(p)?;
        let meta = txn.open_table(META).at(p)?;
        let last = meta.get(LAST_ID).at(p)?;
        Ok(last.map_or(0, |v| v.value()))
    }

    fn head_in(&self, db: &Database, topic: &Topic) -> Result<u64, StoreError> {
        let p = self.file.path();
        let txn = db.begin_read().at(p)?;
        let topics = txn.open_table(TOPICS).at(p)?;
        let state = topics.get(topic.key().as_slice()).at(p)?;
        Ok(state.map_or(0, |s| s.value().0))
    }

    fn trim_in(&self, db: &Database, keep: &Retention, now_ms: u64) -> Result<u64, StoreError> {
        if keep.keeps_all() {
            return Ok(0);
        }
        let p = self.file.path();
        let cutoff = keep.max_age.map(|age| {
            let age = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            now_ms.saturating_sub(age)
        });
        let txn = db.begin_write().at(p)?;
        let mut dropped = 0;
        {
            let mut log = txn.open_table(LOG).at(p)?;
            let mut topics = txn.open_table(TOPICS).at(p)?;
            let mut all = Vec::new();
            for entry in topics.iter().at(p)? {
                let (key, state) = entry.at(p)?;
                let state = State::from_tuple(state.value());
                if state.count > 0 {
                    all.push((key.value().to_vec(), state));
                }
            }
            let mut ids = Vec::new();
            for (key, mut state) in all {
                let over = keep.per_topic.map_or(0, |n| state.count.saturating_sub(n));
                if over == 0 && cutoff.is_none_or(|c| state.oldest_at >= c) {
                    continue;
                }
                let budget = TRIM_MAX - dropped;
                if budget == 0 {
                    break;
                }
                ids.clear();
                let range = log
                    .range((key.as_slice(), 0)..=(key.as_slice(), u64::MAX))
                    .at(p)?;
                for entry in range {
                    let (k, value) = entry.at(p)?;
                    let at = codec::at_ms(value.value()).map_err(|d| self.file.corrupt(d))?;
                    let old = (ids.len() as u64) < over || cutoff.is_some_and(|c| at < c);
                    if !old || ids.len() as u64 == budget {
                        state.oldest_at = at;
                        break;
                    }
                    ids.push(k.value().1);
                }
                let Some(&newest) = ids.last() else { continue };
                for &id in &ids {
                    log.remove((key.as_slice(), id)).at(p)?;
                }
                let n = ids.len() as u64;
                state.trimmed = state.trimmed.max(newest);
                state.count -= n;
                topics.insert(key.as_slice(), state.tuple()).at(p)?;
                dropped += n;
            }
        }
        if dropped == 0 {
            // Nothing to make durable: skip the fsync.
            txn.abort().at(p)?;
        } else {
            txn.commit().at(p)?;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
impl RedbStore {
    /// Overwrites the layout version, for tests of a file from elsewhere.
    pub(crate) fn set_layout(&self, version: u64) -> Result<(), StoreError> {
        self.file.with(|db, p| {
            let txn = db.begin_write().at(p)?;
            txn.open_table(META)
                .at(p)?
                .insert(LAYOUT_KEY, version)
                .at(p)?;
            txn.commit().at(p)
        })
    }
}

#[cfg(test)]
impl RedbStore {
    /// Opens `path` through a backend that fails to grow the file while
    /// `full` is set.
    pub(crate) fn open_full(path: &Path, full: Arc<AtomicBool>) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(path, Opener::Full(full))
    }
}
