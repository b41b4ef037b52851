//! [`RedbFile`]: a store's redb file and its open handle, with the rules
//! both durable stores (history, accounts) keep:
//!
//! - a file that exists is only opened, never initialized: a new store is
//!   built under a temporary name and renamed into place, so a
//!   half-created file cannot pass for an empty store;
//! - a file without the `meta` table, this [`Layout`]'s version or its
//!   tables is [`StoreError::Corrupt`], naming it;
//! - a panic inside redb (a damaged page can cause one) is `Corrupt`, not
//!   a crash;
//! - after an I/O error (a full disk, say) redb refuses every further call
//!   on that handle, reads included; so the handle is let go and the file
//!   opened again on the next call.
//!
//! What differs between the stores is their [`Layout`].

use std::fs::{self, File};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use ::redb::{Database, ReadTransaction, TableDefinition, WriteTransaction};

use super::StoreError;

/// Every store's first table: `"layout"` → the [`Layout::version`], and
/// whatever else a store keeps there.
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The key of the layout version in [`META`].
pub(crate) const LAYOUT_KEY: &str = "layout";

/// What sets one store's file apart from another's.
pub(crate) struct Layout {
    /// What the file holds, for messages: "chat history store".
    pub(crate) kind: &'static str,
    /// The version of the tables; a file with another is refused.
    pub(crate) version: u64,
    /// redb's page cache, in bytes (redb's default is 1 GiB).
    pub(crate) cache: usize,
    /// How long a reopen waits for calls still using the old handle (which
    /// holds the file's lock) to finish; after that, or at once if zero,
    /// the call fails with [`StoreError::Locked`] and a later one reopens.
    pub(crate) reopen_wait: Duration,
    /// Creates the tables, and any `meta` entry but the layout version, in
    /// a new file.
    pub(crate) create: fn(&WriteTransaction, &Path) -> Result<(), StoreError>,
    /// Opens each table but `meta`: a missing or mistyped one is `Corrupt`.
    pub(crate) check: fn(&ReadTransaction, &Path) -> Result<(), StoreError>,
}

/// How the file is opened: as a file, or in tests through a backend that
/// can run out of room.
#[derive(Clone)]
pub(crate) enum Opener {
    /// The file itself.
    File,
    /// The file, failing to grow while the switch is on.
    #[cfg(test)]
    Full(Arc<AtomicBool>),
}

/// A store's file, opened by one process at a time, and its handle.
pub(crate) struct RedbFile {
    path: PathBuf,
    layout: &'static Layout,
    opener: Opener,
    /// The open file; `None` after an I/O error, until reopened.
    db: RwLock<Option<Arc<Database>>>,
}

impl std::fmt::Debug for RedbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbFile {
    /// Opens the store in the file `path`, creating it (and nothing else:
    /// the directory must exist) if there is no such file.
    pub(crate) fn open(
        path: &Path,
        layout: &'static Layout,
        opener: Opener,
    ) -> Result<RedbFile, StoreError> {
        match fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(path, layout)?,
            Err(e) => return Err(StoreError::io(path, e)),
        }
        let db = open_db(path, layout, &opener)?;
        check(path, layout, &db)?;
        Ok(RedbFile {
            path: path.to_path_buf(),
            layout,
            opener,
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    /// The store's file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `detail` as [`StoreError::Corrupt`], naming the file.
    pub(crate) fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    /// Runs `op` on the open file and its path (reopening the file if an
    /// earlier I/O error let it go); lets the handle go if `op` meets an
    /// I/O error. A panic inside redb is reported as `Corrupt`, and the
    /// handle let go too, rather than taking the caller down.
    pub(crate) fn with<T>(
        &self,
        op: impl FnOnce(&Database, &Path) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db()?;
        let (result, broken) = match panic::catch_unwind(AssertUnwindSafe(|| op(&db, &self.path))) {
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
        let deadline = Instant::now() + self.layout.reopen_wait;
        let db = loop {
            match open_db(&self.path, self.layout, &self.opener) {
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(2));
                }
                other => break other?,
            }
        };
        check(&self.path, self.layout, &db)?;
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }
}

/// Refuses a file without the layout's tables and version.
fn check(path: &Path, layout: &Layout, db: &Database) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let txn = db.begin_read().at(path)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(::redb::TableError::TableDoesNotExist(_)) => {
            return Err(corrupt(format!("not a {} (no meta table)", layout.kind)));
        }
        Err(e) => return Err(map(path, e.into())),
    };
    match meta.get(LAYOUT_KEY).at(path)?.map(|v| v.value()) {
        Some(version) if version == layout.version => {}
        Some(other) => {
            return Err(corrupt(format!(
                "unknown {} layout version {other}",
                layout.kind
            )));
        }
        None => return Err(corrupt("no layout version".into())),
    }
    (layout.check)(&txn, path)
}

/// Builds an empty store under a temporary name, then renames it to `path`
/// and syncs the directory, so `path` only ever names a complete store.
fn create(path: &Path, layout: &Layout) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&tmp, e)),
    }
    {
        let db = builder(layout).create(&tmp).at(&tmp)?;
        let txn = db.begin_write().at(&tmp)?;
        txn.open_table(META)
            .at(&tmp)?
            .insert(LAYOUT_KEY, layout.version)
            .at(&tmp)?;
        (layout.create)(&txn, &tmp)?;
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

/// redb's settings: the layout's cache, and new files in the file format
/// that later redb versions read.
fn builder(layout: &Layout) -> ::redb::Builder {
    let mut builder = Database::builder();
    builder.set_cache_size(layout.cache);
    builder.create_with_file_format_v3(true);
    builder
}

/// Opens an existing file. redb checks it and may panic on some damage
/// rather than return an error: that is a corrupt file too.
fn open_db(path: &Path, layout: &Layout, opener: &Opener) -> Result<Database, StoreError> {
    let open = || match opener {
        Opener::File => builder(layout).open(path),
        #[cfg(test)]
        Opener::Full(full) => {
            let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
            let backend = full::Backend::new(file, full.clone())?;
            builder(layout).create_with_backend(backend)
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
