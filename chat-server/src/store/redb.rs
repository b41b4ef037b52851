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
use std::fs::{self, File};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use ::redb::{Database, ReadableTable, TableDefinition};

use super::codec;
use super::{Page, Record, Retention, Store, StoreError, TRIM_MAX, Topic};

/// redb's page cache (its default is 1 GiB): recent history, the part that
/// is read, stays in it.
const CACHE: usize = 64 << 20;

/// The layout of the tables; a file with another is refused.
const LAYOUT: u64 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const LOG: TableDefinition<'_, (&[u8], u64), &[u8]> = TableDefinition::new("log");
const TOPICS: TableDefinition<'_, &[u8], (u64, u64, u64, u64)> = TableDefinition::new("topics");

const LAYOUT_KEY: &str = "layout";
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
    path: PathBuf,
    opener: Opener,
    /// The open file; `None` after an I/O error, until reopened.
    db: RwLock<Option<Arc<Database>>>,
}

/// How the file is opened: as a file, or in tests through a backend that
/// can run out of room.
#[derive(Clone)]
enum Opener {
    File,
    #[cfg(test)]
    Full(Arc<AtomicBool>),
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How long a reopen waits for calls still using the old handle (which
/// holds the file's lock) to finish.
const REOPEN_WAIT: Duration = Duration::from_secs(1);

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
        let path = path.to_path_buf();
        match fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(&path)?,
            Err(e) => return Err(StoreError::io(&path, e)),
        }
        let db = open_db(&path, &opener)?;
        check(&path, &db)?;
        Ok(RedbStore {
            path,
            opener,
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` on the open file (reopening it if an earlier I/O error let
    /// it go); lets the handle go if `op` meets an I/O error. A panic inside
    /// redb (a damaged page can cause one) is reported as `Corrupt`, and
    /// the handle let go too, rather than taking the caller down.
    fn with<T>(
        &self,
        op: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db()?;
        let (result, broken) = match panic::catch_unwind(AssertUnwindSafe(|| op(&db))) {
            Ok(result) => {
                let io = matches!(result, Err(StoreError::Io { .. } | StoreError::Full { .. }));
                (result, io)
            }
            Err(_) => (
                Err(self.corrupt("the store failed reading the file".into())),
                true,
            ),
        };
        if broken {
            let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
            // Unless another call has already reopened it.
            if slot.as_ref().is_some_and(|open| Arc::ptr_eq(open, &db)) {
                *slot = None;
            }
        }
        result
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = &*self.db.read().unwrap_or_else(PoisonError::into_inner) {
            return Ok(db.clone());
        }
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = &*slot {
            return Ok(db.clone());
        }
        // Calls that took the old handle before it was let go hold the
        // file's lock until they end: wait for them, briefly.
        let deadline = Instant::now() + REOPEN_WAIT;
        let db = loop {
            match open_db(&self.path, &self.opener) {
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(2));
                }
                other => break other?,
            }
        };
        check(&self.path, &db)?;
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    /// Writes raw bytes as the record `id` of `topic`, bypassing the codec:
    /// for tests of what a damaged record does.
    #[cfg(test)]
    pub(crate) fn put_raw(&self, topic: &Topic, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_write().at(&self.path)?;
        {
            let mut log = txn.open_table(LOG).at(&self.path)?;
            let key = topic.key();
            log.insert((key.as_slice(), id), bytes).at(&self.path)?;
        }
        txn.commit().at(&self.path)
    }
}

/// Refuses a file without this layout's tables and version.
fn check(path: &Path, db: &Database) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let txn = db.begin_read().at(path)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(::redb::TableError::TableDoesNotExist(_)) => {
            return Err(corrupt("not a chat history store (no meta table)".into()));
        }
        Err(e) => return Err(map(path, e.into())),
    };
    match meta.get(LAYOUT_KEY).at(path)?.map(|v| v.value()) {
        Some(LAYOUT) => {}
        Some(other) => return Err(corrupt(format!("unknown store layout version {other}"))),
        None => return Err(corrupt("no layout version".into())),
    }
    // Opening them checks they exist, with their key and value types (a
    // missing or mistyped table maps to `Corrupt`).
    txn.open_table(LOG).at(path)?;
    txn.open_table(TOPICS).at(path)?;
    Ok(())
}

/// Builds an empty store under a temporary name, then renames it to `path`
/// and syncs the directory, so `path` only ever names a complete store.
fn create(path: &Path) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&tmp, e)),
    }
    {
        let db = builder().create(&tmp).at(&tmp)?;
        let txn = db.begin_write().at(&tmp)?;
        {
            let mut meta = txn.open_table(META).at(&tmp)?;
            meta.insert(LAYOUT_KEY, LAYOUT).at(&tmp)?;
            meta.insert(LAST_ID, 0).at(&tmp)?;
            txn.open_table(LOG).at(&tmp)?;
            txn.open_table(TOPICS).at(&tmp)?;
        }
        txn.commit().at(&tmp)?;
    }
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// redb's settings: a bounded cache, and new files in the file format
/// that later redb versions read.
fn builder() -> ::redb::Builder {
    let mut builder = Database::builder();
    builder.set_cache_size(CACHE);
    builder.create_with_file_format_v3(true);
    builder
}

/// Opens an existing file. redb checks it and may panic on some damage
/// rather than return an error: that is a corrupt file too.
fn open_db(path: &Path, opener: &Opener) -> Result<Database, StoreError> {
    let open = || match opener {
        Opener::File => builder().open(path),
        #[cfg(test)]
        Opener::Full(full) => {
            let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
            let backend = full::Backend::new(file, full.clone())?;
            builder().create_with_backend(backend)
        }
    };
    match panic::catch_unwind(AssertUnwindSafe(open)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(map(path, e.into())),
        Err(_) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "the file is damaged (the reader failed on it)".into(),
        }),
    }
}

/// redb's error as ours.
pub(crate) fn map(path: &Path, err: ::redb::Error) -> StoreError {
    use ::redb::Error as E;
    let path = path.to_path_buf();
    match err {
        // A short or malformed file: redb says so through `io::Error`s.
        E::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Corrupt {
                path,
                detail: format!("unreadable: {e}"),
            }
        }
        E::Io(e) => StoreError::io(path, e),
        E::DatabaseAlreadyOpen => StoreError::Locked { path },
        E::Corrupted(detail) => StoreError::Corrupt { path, detail },
        E::UpgradeRequired(v) => StoreError::Corrupt {
            path,
            detail: format!("file format version {v} is not the one this server reads"),
        },
        e @ (E::TableTypeMismatch { .. }
        | E::TableIsMultimap(_)
        | E::TableIsNotMultimap(_)
        | E::TypeDefinitionChanged { .. }
        | E::TableDoesNotExist(_)) => StoreError::Corrupt {
            path,
            detail: e.to_string(),
        },
        E::PreviousIo => StoreError::Io {
            path,
            source: io::Error::other("an earlier I/O error left the store unusable until reopened"),
        },
        e => StoreError::Io {
            path,
            source: io::Error::other(e.to_string()),
        },
    }
}

/// `?` on redb results, naming the file.
pub(crate) trait At<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T, E: Into<::redb::Error>> At<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| map(path, e.into()))
    }
}

impl Store for RedbStore {
    fn append(&self, batch: &[Record]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with(|db| self.append_in(db, batch))
    }

    fn after(&self, topic: &Topic, after: u64, limit: usize) -> Result<Page, StoreError> {
        self.with(|db| self.after_in(db, topic, after, limit))
    }

    fn last(&self, topic: &Topic, count: usize) -> Result<Vec<Record>, StoreError> {
        self.with(|db| self.last_in(db, topic, count))
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        self.with(|db| self.last_id_in(db))
    }

    fn head(&self, topic: &Topic) -> Result<u64, StoreError> {
        self.with(|db| self.head_in(db, topic))
    }

    fn trim(&self, keep: &Retention, now_ms: u64) -> Result<u64, StoreError> {
        if keep.keeps_all() {
            return Ok(0);
        }
        self.with(|db| self.trim_in(db, keep, now_ms))
    }
}

/// The operations, on an open handle.
impl RedbStore {
    fn append_in(&self, db: &Database, batch: &[Record]) -> Result<(), StoreError> {
        let Some(newest) = batch.iter().map(|r| r.id).max() else {
            return Ok(());
        };
        let p = &self.path;
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
                    path: p.clone(),
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
        let p = &self.path;
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
                records.push(codec::decode(value.value()).map_err(|d| self.corrupt(d))?);
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
        let p = &self.path;
        let key = topic.key();
        let txn = db.begin_read().at(p)?;
        let log = txn.open_table(LOG).at(p)?;
        let range = log
            .range((key.as_slice(), 0)..=(key.as_slice(), u64::MAX))
            .at(p)?;
        let mut records = Vec::with_capacity(count.min(1024));
        for entry in range.rev().take(count) {
            let (_, value) = entry.at(p)?;
            records.push(codec::decode(value.value()).map_err(|d| self.corrupt(d))?);
        }
        records.reverse();
        Ok(records)
    }

    fn last_id_in(&self, db: &Database) -> Result<u64, StoreError> {
        let p = &self.path;
        let txn = db.begin_read().at(p)?;
        let meta = txn.open_table(META).at(p)?;
        let last = meta.get(LAST_ID).at(p)?;
        Ok(last.map_or(0, |v| v.value()))
    }

    fn head_in(&self, db: &Database, topic: &Topic) -> Result<u64, StoreError> {
        let p = &self.path;
        let txn = db.begin_read().at(p)?;
        let topics = txn.open_table(TOPICS).at(p)?;
        let state = topics.get(topic.key().as_slice()).at(p)?;
        Ok(state.map_or(0, |s| s.value().0))
    }

    fn trim_in(&self, db: &Database, keep: &Retention, now_ms: u64) -> Result<u64, StoreError> {
        if keep.keeps_all() {
            return Ok(0);
        }
        let p = &self.path;
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
                    let at = codec::at_ms(value.value()).map_err(|d| self.corrupt(d))?;
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
        let db = self.db()?;
        let txn = db.begin_write().at(&self.path)?;
        txn.open_table(META)
            .at(&self.path)?
            .insert(LAYOUT_KEY, version)
            .at(&self.path)?;
        txn.commit().at(&self.path)
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

/// A file backend that runs out of room on demand: while the switch is on,
/// growing the file fails as a full disk does; what is already there can
/// still be read and rewritten.
#[cfg(test)]
mod full {
    use std::fs::File;
    use std::io;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use ::redb::StorageBackend;
    use ::redb::backends::FileBackend;

    #[derive(Debug)]
    pub(super) struct Backend {
        file: FileBackend,
        full: Arc<AtomicBool>,
    }

    impl Backend {
        pub(super) fn new(
            file: File,
            full: Arc<AtomicBool>,
        ) -> Result<Backend, ::redb::DatabaseError> {
            Ok(Backend {
                file: FileBackend::new(file)?,
                full,
            })
        }

        fn room(&self, end: u64) -> io::Result<()> {
            if self.full.load(Ordering::SeqCst) && end > self.file.len()? {
                return Err(io::ErrorKind::StorageFull.into());
            }
            Ok(())
        }
    }

    impl StorageBackend for Backend {
        fn len(&self) -> io::Result<u64> {
            self.file.len()
        }
        fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
            self.file.read(offset, len)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.room(len)?;
            self.file.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> io::Result<()> {
            self.file.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.room(offset + data.len() as u64)?;
            self.file.write(offset, data)
        }
    }
}
