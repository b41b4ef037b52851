//! [`Redb`]: accounts in their own redb file, `accounts.redb`, apart from
//! history, with the history store's robustness rules: both keep their file
//! through a [`RedbFile`].
//!
//! Four tables:
//! - `meta`: `"layout"` → [`LAYOUT`];
//! - `accounts`: key → (name as registered, PHC string, created);
//! - `tokens`: selector → (account key, SHA-256 of the secret, expires);
//! - `owned`: (account key, selector) → expires, an account's tokens.

use std::path::Path;
use std::time::Duration;

use ::redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use crate::store::StoreError;
#[cfg(test)]
use crate::store::file::META;
use crate::store::file::{At, Layout, Opener, RedbFile};

use super::store::{Account, Backend, Grant, victims};
use super::token::TokenId;

/// The layout of the tables; a file with another is refused.
const LAYOUT: u64 = 1;

/// The accounts file: see [`RedbFile`] for what it shares with history.
static FILE: Layout = Layout {
    kind: "chat accounts store",
    version: LAYOUT,
    // Accounts are small and rarely read.
    cache: 4 << 20,
    // A call still holding the old handle keeps the file locked: the
    // reopening call fails with `Locked` (`Unavailable` to its client) and
    // a later one reopens.
    reopen_wait: Duration::ZERO,
    create: create_tables,
    check: check_tables,
};

const ACCOUNTS: TableDefinition<'_, &str, (&str, &str, u64)> = TableDefinition::new("accounts");
const TOKENS: TableDefinition<'_, &[u8], (&str, &[u8], u64)> = TableDefinition::new("tokens");
const OWNED: TableDefinition<'_, (&str, &[u8]), u64> = TableDefinition::new("owned");

/// The durable backend: one redb file, opened by one process at a time.
#[derive(Debug)]
pub(super) struct Redb {
    file: RedbFile,
}

impl Redb {
    /// Opens the store in the file `path`, creating it if there is no such
    /// file (the directory must exist).
    pub(super) fn open(path: &Path) -> Result<Redb, StoreError> {
        Ok(Redb {
            file: RedbFile::open(path, &FILE, Opener::File)?,
        })
    }

    /// Writes a raw value under a `meta` key, bypassing the types: for
    /// tests of a damaged store.
    #[cfg(test)]
    pub(super) fn put_meta(&self, key: &str, value: u64) -> Result<(), StoreError> {
        self.file.with(|db, path| {
            let txn = db.begin_write().at(path)?;
            txn.open_table(META).at(path)?.insert(key, value).at(path)?;
            txn.commit().at(path)
        })
    }
}

/// A new file's tables.
fn create_tables(txn: &WriteTransaction, path: &Path) -> Result<(), StoreError> {
    txn.open_table(ACCOUNTS).at(path)?;
    txn.open_table(TOKENS).at(path)?;
    txn.open_table(OWNED).at(path)?;
    Ok(())
}

/// Opening the tables checks they exist, with their key and value types.
fn check_tables(txn: &ReadTransaction, path: &Path) -> Result<(), StoreError> {
    txn.open_table(ACCOUNTS).at(path)?;
    txn.open_table(TOKENS).at(path)?;
    txn.open_table(OWNED).at(path)?;
    Ok(())
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
        self.file.with(|db, path| {
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
        self.file.with(|db, path| {
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
        self.file.with(|db, path| {
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
        self.file.with(|db, path| {
            let txn = db.begin_write().at(path)?;
            add(&txn, path, id, grant, now)?;
            txn.commit().at(path)
        })
    }

    fn token(&self, id: TokenId) -> Result<Option<Grant>, StoreError> {
        self.file.with(|db, path| {
            let txn = db.begin_read().at(path)?;
            let tokens = txn.open_table(TOKENS).at(path)?;
            let value = tokens.get(id.0.as_slice()).at(path)?;
            value.map(|v| grant(path, v.value())).transpose()
        })
    }

    fn revoke(&self, id: TokenId) -> Result<bool, StoreError> {
        self.file.with(|db, path| {
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
        self.file.with(|db, path| {
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
