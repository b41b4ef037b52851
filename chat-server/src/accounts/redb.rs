//! [`Redb`]: accounts in their own redb file, `accounts.redb`, apart from
//! history, with the history store's robustness rules: a file that exists
//! is only opened, never initialized (a new one is built under a temporary
//! name and renamed into place); a damaged or foreign file is
//! [`StoreError::Corrupt`], naming it; a panic inside redb is an error, not
//! a crash; after an I/O error the handle is let go and the file opened
//! again on the next call.
//!
//! Four tables:
//! - `meta`: `"layout"` → [`LAYOUT`];
//! - `accounts`: key → (name as registered, PHC string, created);
//! - `tokens`: selector → (account key, SHA-256 of the secret, expires);
//! - `owned`: (account key, selector) → expires, an account's tokens.

use std::fs::{self, File};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use ::redb::{Database, ReadableTable, TableDefinition};

use crate::store::{At, StoreError, redb_error};

use super::store::{Account, Backend, Grant, victims};
use super::token::TokenId;

/// The layout of the tables; a file with another is refused.
const LAYOUT: u64 = 1;
/// redb's page cache: accounts are small and rarely read.
const CACHE: usize = 4 << 20;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const ACCOUNTS: TableDefinition<'_, &str, (&str, &str, u64)> = TableDefinition::new("accounts");
const TOKENS: TableDefinition<'_, &[u8], (&str, &[u8], u64)> = TableDefinition::new("tokens");
const OWNED: TableDefinition<'_, (&str, &[u8]), u64> = TableDefinition::new("owned");

const LAYOUT_KEY: &str = "layout";

/// The durable backend: one redb file, opened by one process at a time.
pub(super) struct Redb {
    path: PathBuf,
    /// The open file; `None` after an I/O error, until reopened.
    db: RwLock<Option<Arc<Database>>>,
}

impl std::fmt::Debug for Redb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redb")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Redb {
    /// Opens the store in the file `path`, creating it if there is no such
    /// file (the directory must exist).
    pub(super) fn open(path: &Path) -> Result<Redb, StoreError> {
        match fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(path)?,
            Err(e) => return Err(StoreError::io(path, e)),
        }
        let db = open_db(path)?;
        check(path, &db)?;
        Ok(Redb {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    /// Runs `op` on the open file (reopening it if needed); lets the handle
    /// go on an I/O error or a panic inside redb.
    fn with<T>(
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
                Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: "the store failed reading the file".into(),
                }),
                true,
            ),
        };
        if broken {
            let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
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
        // A call still holding the old handle keeps the file locked: this
        // call fails with `Locked` (`Unavailable` to its client) and a
        // later one reopens.
        let db = open_db(&self.path)?;
        check(&self.path, &db)?;
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Writes a raw value under an account key, bypassing the types: for
    /// tests of a damaged store.
    #[cfg(test)]
    pub(super) fn put_meta(&self, key: &str, value: u64) -> Result<(), StoreError> {
        self.with(|db, path| {
            let txn = db.begin_write().at(path)?;
            txn.open_table(META).at(path)?.insert(key, value).at(path)?;
            txn.commit().at(path)
        })
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
            return Err(corrupt("not a chat accounts store (no meta table)".into()));
        }
        Err(e) => return Err(redb_error(path, e.into())),
    };
    match meta.get(LAYOUT_KEY).at(path)?.map(|v| v.value()) {
        Some(LAYOUT) => {}
        Some(other) => return Err(corrupt(format!("unknown accounts layout version {other}"))),
        None => return Err(corrupt("no layout version".into())),
    }
    txn.open_table(ACCOUNTS).at(path)?;
    txn.open_table(TOKENS).at(path)?;
    txn.open_table(OWNED).at(path)?;
    Ok(())
}

fn builder() -> ::redb::Builder {
    let mut builder = Database::builder();
    builder.set_cache_size(CACHE);
    builder.create_with_file_format_v3(true);
    builder
}

/// Builds an empty store under a temporary name, renames it to `path` and
/// syncs the directory, so `path` only ever names a complete store.
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
            txn.open_table(META)
                .at(&tmp)?
                .insert(LAYOUT_KEY, LAYOUT)
                .at(&tmp)?;
            txn.open_table(ACCOUNTS).at(&tmp)?;
            txn.open_table(TOKENS).at(&tmp)?;
            txn.open_table(OWNED).at(&tmp)?;
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

/// Opens an existing file; a panic in redb on a damaged one is `Corrupt`.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    match panic::catch_unwind(AssertUnwindSafe(|| builder().open(path))) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(redb_error(path, e.into())),
        Err(_) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "the file is damaged (the reader failed on it)".into(),
        }),
    }
}

/// A stored token's value as a [`Grant`]; a digest of the wrong length is
/// damage.
fn grant(path: &Path, (key, digest, expires): (&str, &[u8], u64)) -> Result<Grant, StoreError> {
    let digest = digest.try_into().map_err(|_| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("a token of {key:?} has a digest of {} bytes", digest.len()),
    })?;
    Ok(Grant {
        key: key.to_owned(),
        digest,
        expires,
    })
}

/// Adds a token and drops the account's stale ones, inside `txn`.
fn add(
    txn: &::redb::WriteTransaction,
    path: &Path,
    id: TokenId,
    grant: &Grant,
    now: u64,
) -> Result<(), StoreError> {
    let mut tokens = txn.open_table(TOKENS).at(path)?;
    let mut owned = txn.open_table(OWNED).at(path)?;
    let key = grant.key.as_str();
    owned
        .insert((key, id.0.as_slice()), grant.expires)
        .at(path)?;
    tokens
        .insert(
            id.0.as_slice(),
            (key, grant.digest.as_slice(), grant.expires),
        )
        .at(path)?;
    let mut held = Vec::new();
    let low: &[u8] = &[];
    for entry in owned.range((key, low)..).at(path)? {
        let (k, v) = entry.at(path)?;
        let (owner, selector) = k.value();
        if owner != key {
            break;
        }
        if let Ok(selector) = <[u8; 16]>::try_from(selector) {
            held.push((v.value(), selector));
        }
    }
    for selector in victims(held, (grant.expires, id.0), now) {
        owned.remove((key, selector.as_slice())).at(path)?;
        tokens.remove(selector.as_slice()).at(path)?;
    }
    Ok(())
}

impl Backend for Redb {
    fn keys(&self) -> Result<Vec<String>, StoreError> {
        self.with(|db, path| {
            let txn = db.begin_read().at(path)?;
            let accounts = txn.open_table(ACCOUNTS).at(path)?;
            let mut keys = Vec::new();
            for entry in accounts.iter().at(path)? {
                let (k, _) = entry.at(path)?;
                keys.push(k.value().to_owned());
            }
            Ok(keys)
        })
    }

    fn account(&self, key: &str) -> Result<Option<Account>, StoreError> {
        self.with(|db, path| {
            let txn = db.begin_read().at(path)?;
            let accounts = txn.open_table(ACCOUNTS).at(path)?;
            Ok(accounts.get(key).at(path)?.map(|v| {
                let (name, phc, created) = v.value();
                Account {
                    name: name.to_owned(),
                    phc: phc.to_owned(),
                    created,
                }
            }))
        })
    }

    fn create(
        &self,
        key: &str,
        account: &Account,
        id: TokenId,
        grant: &Grant,
    ) -> Result<bool, StoreError> {
        self.with(|db, path| {
            let txn = db.begin_write().at(path)?;
            {
                let mut accounts = txn.open_table(ACCOUNTS).at(path)?;
                if accounts.get(key).at(path)?.is_some() {
                    return Ok(false);
                }
                accounts
                    .insert(
                        key,
                        (account.name.as_str(), account.phc.as_str(), account.created),
                    )
                    .at(path)?;
            }
            add(&txn, path, id, grant, 0)?;
            txn.commit().at(path)?;
            Ok(true)
        })
    }

    fn grant(&self, id: TokenId, grant: &Grant, now: u64) -> Result<(), StoreError> {
        self.with(|db, path| {
            let txn = db.begin_write().at(path)?;
            add(&txn, path, id, grant, now)?;
            txn.commit().at(path)
        })
    }

    fn token(&self, id: TokenId) -> Result<Option<Grant>, StoreError> {
        self.with(|db, path| {
            let txn = db.begin_read().at(path)?;
            let tokens = txn.open_table(TOKENS).at(path)?;
            let value = tokens.get(id.0.as_slice()).at(path)?;
            value.map(|v| grant(path, v.value())).transpose()
        })
    }

    fn revoke(&self, id: TokenId) -> Result<bool, StoreError> {
        self.with(|db, path| {
            let txn = db.begin_write().at(path)?;
            let existed = {
                let mut tokens = txn.open_table(TOKENS).at(path)?;
                let mut owned = txn.open_table(OWNED).at(path)?;
                let removed = tokens.remove(id.0.as_slice()).at(path)?;
                match removed {
                    Some(v) => {
                        let (key, _, _) = v.value();
                        owned.remove((key, id.0.as_slice())).at(path)?;
                        true
                    }
                    None => false,
                }
            };
            txn.commit().at(path)?;
            Ok(existed)
        })
    }

    fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        self.with(|db, path| {
            let txn = db.begin_write().at(path)?;
            let swept = {
                let mut tokens = txn.open_table(TOKENS).at(path)?;
                let mut owned = txn.open_table(OWNED).at(path)?;
                let mut expired = Vec::new();
                for entry in tokens.iter().at(path)? {
                    let (k, v) = entry.at(path)?;
                    let (key, _, expires) = v.value();
                    if expires <= now {
                        expired.push((k.value().to_vec(), key.to_owned()));
                    }
                }
                for (selector, key) in &expired {
                    tokens.remove(selector.as_slice()).at(path)?;
                    owned.remove((key.as_str(), selector.as_slice())).at(path)?;
                }
                expired.len()
            };
            if swept > 0 {
                txn.commit().at(path)?;
            }
            Ok(swept)
        })
    }
}
