//! Accounts: registered names with passwords, and the session tokens a
//! login hands out. A service the session's auth phase calls; it knows
//! nothing of connections.
//!
//! - **Passwords** are 8 to 256 bytes of UTF-8, kept as Argon2id hashes
//!   (`password.rs`). Hashing costs tens of milliseconds of a core, so it
//!   runs on `spawn_blocking`, at most [`Config::hash_workers`] at once;
//!   store writes go the same way.
//! - **Throttling** (`throttle.rs`) comes before any hash: password
//!   attempts per account ([`Config::login_rate`]) and per IP
//!   ([`Config::login_rate_ip`], token logins too), registrations per IP
//!   ([`Config::register_rate`]). A brute force is refused without costing
//!   a hash.
//! - **No oracle.** A login for a name with no account spends one hash
//!   (against a fixed dummy) and fails exactly as a wrong password does.
//! - **Tokens** (`token.rs`): `"<selector>.<secret>"`, stored as the
//!   selector → (account, SHA-256 of the secret, expiry), compared in
//!   constant time; expired is refused like unknown; logout deletes.
//!   Each account holds at most 64 live tokens.
//! - **Storage** follows [`Config::accounts`]: in memory, or durably in
//!   `accounts.redb` in the given directory (`redb.rs`), apart from
//!   history. A file that cannot be opened fails `Server::bind`.
//!
//! Secrets (passwords, tokens, hashes) appear in no `Debug` output, log or
//! error.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

use crate::config::{Config, Storage};
use crate::names::Name;
use crate::store::StoreError;

mod memory;
mod password;
mod redb;
mod store;
#[cfg(test)]
mod tests;
mod throttle;
mod token;

pub(crate) use token::TokenId;

use self::store::{Account, Backend, Grant};
use self::throttle::Throttle;

/// The accounts file in a [`Storage::Disk`] directory.
pub(crate) const FILE: &str = "accounts.redb";

/// The accounts service. Cheap to clone: clones share everything.
#[derive(Clone)]
pub(crate) struct Accounts {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Box<dyn Backend>,
    /// Keys of every account, so `is_registered` never waits on the store.
    registered: RwLock<HashSet<Box<str>>>,
    throttle: Throttle,
    /// Bounds the hashes (and store writes) running at once.
    workers: Arc<Semaphore>,
    ttl: Duration,
    clock: Clock,
    /// Password hashes computed (registrations and login checks alike).
    hashes: AtomicU64,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field("backend", &self.inner.backend)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

/// A successful registration or login.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Login {
    /// The name as registered (NFC), whatever case it was typed in.
    pub(crate) name: String,
    /// Its folded key.
    pub(crate) key: String,
    /// The new token to hand the client; `None` after a token login.
    pub(crate) token: Option<String>,
    /// When the token expires, Unix seconds.
    pub(crate) expires: u64,
    /// The token this session holds, for [`Accounts::logout`].
    pub(crate) token_id: TokenId,
}

impl Login {
    /// A login handing the client `fresh`, the token stored as `grant`
    /// (whose key is the account's).
    fn granted(name: String, fresh: token::Fresh, grant: Grant) -> Login {
        Login {
            name,
            key: grant.key,
            token: Some(fresh.text),
            expires: grant.expires,
            token_id: fresh.id,
        }
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("expires", &self.expires)
            .field("token_id", &self.token_id)
            .finish()
    }
}

/// Why a registration, login or logout did not succeed. No text holds a
/// secret, and a failed login does not say whether the name exists. All but
/// `Unavailable` may be shown to the client as they are; `Unavailable`'s
/// names the store's file: log it, and tell the client only that accounts
/// are unavailable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// Wrong name or password, or a token that is unknown, malformed,
    /// expired or revoked.
    #[error("wrong name or password, or an invalid token")]
    Failed,
    /// Too many attempts from this address or on this account: try again
    /// after `retry`.
    #[error("too many attempts: try again in {} s", retry.as_secs().max(1))]
    Throttled {
        /// How long until the next attempt may pass.
        retry: Duration,
    },
    /// The name is registered already.
    #[error("this name is registered already")]
    Taken,
    /// The password is not acceptable; why, for its owner.
    #[error("{0}")]
    Weak(String),
    /// The store failed (a full disk, say); nothing was changed.
    #[error("accounts unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        AuthError::Unavailable(err.to_string())
    }
}

/// Wall-clock time in Unix seconds; tests set it by hand.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// A clock at `secs` that moves only when set (for tests).
    #[cfg(test)]
    pub(crate) fn fixed(secs: u64) -> Clock {
        Clock(Some(Arc::new(AtomicU64::new(secs))))
    }

    /// Moves a fixed clock forward.
    #[cfg(test)]
    pub(crate) fn advance(&self, by: Duration) {
        if let Some(now) = &self.0 {
            now.fetch_add(by.as_secs(), Ordering::Relaxed);
        }
    }

    fn now(&self) -> u64 {
        match &self.0 {
            Some(now) => now.load(Ordering::Relaxed),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

impl Accounts {
    /// The accounts `config` asks for: `None` when [`Config::accounts`] is
    /// [`Storage::Off`]; in memory; or in `accounts.redb` in the given
    /// directory (created if missing). `config` must have been validated.
    ///
    /// # Errors
    ///
    /// The file cannot be opened: [`StoreError::Corrupt`] (naming it),
    /// `Locked`, `Full` or `Io`.
    pub(crate) fn open(config: &Config) -> Result<Option<Accounts>, StoreError> {
        Accounts::open_with(config, Clock::default())
    }

    /// [`open`](Self::open) with a clock.
    pub(crate) fn open_with(config: &Config, clock: Clock) -> Result<Option<Accounts>, StoreError> {
        let backend: Box<dyn Backend> = match &config.accounts {
            Storage::Off => return Ok(None),
            Storage::Memory => Box::new(memory::Memory::default()),
            Storage::Disk(dir) => {
                fs_dir(dir)?;
                Box::new(redb::Redb::open(&dir.join(FILE))?)
            }
        };
        // Tokens of accounts that never came back would stay forever.
        backend.sweep(clock.now())?;
        let registered = backend.keys()?.into_iter().map(Box::from).collect();
        Ok(Some(Accounts {
            inner: Arc::new(Inner {
                backend,
                registered: RwLock::new(registered),
                throttle: Throttle::new(
                    config.login_rate,
                    config.login_rate_ip,
                    config.register_rate,
                ),
                workers: Arc::new(Semaphore::new(config.hash_workers.max(1))),
                ttl: config.token_ttl,
                clock,
                hashes: AtomicU64::new(0),
            }),
        }))
    }

    /// Whether the folded name `key` is registered. Never waits.
    pub(crate) fn is_registered(&self, key: &str) -> bool {
        self.inner
            .registered
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    /// Registers `name` with `password` for a client at `ip`, and logs it
    /// in: the [`Login`] carries a new token.
    ///
    /// # Errors
    ///
    /// `Weak` for a password of the wrong length, `Throttled` past
    /// [`Config::register_rate`], `Taken` if the name is registered (in any
    /// case), `Unavailable` if the store fails.
    pub(crate) async fn register(
        &self,
        name: &Name,
        password: &str,
        ip: IpAddr,
    ) -> Result<Login, AuthError> {
        password::check(password).map_err(AuthError::Weak)?;
        self.inner
            .throttle
            .register(ip)
            .map_err(|retry| AuthError::Throttled { retry })?;
        if self.is_registered(name.key()) {
            return Err(AuthError::Taken);
        }
        let (shown, key, password) = (
            name.as_str().to_owned(),
            name.key().to_owned(),
            password.to_owned(),
        );
        let login = self
            .blocking(move |inner| {
                inner.hashes.fetch_add(1, Ordering::Relaxed);
                let phc = password::hash(&password).map_err(AuthError::Unavailable)?;
                let now = inner.clock.now();
                let account = Account {
                    name: shown,
                    phc,
                    created: now,
                };
                let (fresh, grant) = inner.token(&key, now)?;
                if !inner.backend.create(&key, &account, fresh.id, &grant)? {
                    return Err(AuthError::Taken);
                }
                Ok(Login::granted(account.name, fresh, grant))
            })
            .await?;
        self.inner
            .registered
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(login.key.as_str().into());
        Ok(login)
    }

    /// Logs `name` in with `password` for a client at `ip`: a new token.
    ///
    /// # Errors
    ///
    /// `Throttled` past [`Config::login_rate`] on this account or
    /// [`Config::login_rate_ip`] from this address (before any hash);
    /// `Failed` for a wrong password and for a name with no account alike;
    /// `Unavailable` if the store fails.
    pub(crate) async fn login(
        &self,
        name: &Name,
        password: &str,
        ip: IpAddr,
    ) -> Result<Login, AuthError> {
        self.inner
            .throttle
            .login(name.key(), ip)
            .map_err(|retry| AuthError::Throttled { retry })?;
        if password::check(password).is_err() {
            // No account has such a password: nothing to hash.
            return Err(AuthError::Failed);
        }
        let (key, password) = (name.key().to_owned(), password.to_owned());
        self.blocking(move |inner| {
            let account = inner.backend.account(&key)?;
            let phc = account.as_ref().map_or(password::DUMMY, |a| a.phc.as_str());
            inner.hashes.fetch_add(1, Ordering::Relaxed);
            let right = password::verify(&password, phc);
            let Some(account) = account.filter(|_| right) else {
                return Err(AuthError::Failed);
            };
            let now = inner.clock.now();
            let (fresh, grant) = inner.token(&key, now)?;
            inner.backend.grant(fresh.id, &grant, now)?;
            Ok(Login::granted(account.name, fresh, grant))
        })
        .await
    }

    /// Logs in with a token from an earlier login, for a client at `ip`.
    /// The [`Login`] carries no new token; the old one stays valid until
    /// it expires or is revoked.
    ///
    /// # Errors
    ///
    /// `Throttled` past [`Config::login_rate_ip`] from this address;
    /// `Failed` for a token that is malformed, unknown, revoked, expired,
    /// or whose account is gone; `Unavailable` if the store fails.
    pub(crate) async fn login_token(&self, token: &str, ip: IpAddr) -> Result<Login, AuthError> {
        self.inner
            .throttle
            .token(ip)
            .map_err(|retry| AuthError::Throttled { retry })?;
        let (id, digest) = token::parse(token).ok_or(AuthError::Failed)?;
        self.store(move |inner| {
            let grant = inner.backend.token(id)?.ok_or(AuthError::Failed)?;
            if !token::matches(&grant.digest, &digest) {
                return Err(AuthError::Failed);
            }
            if grant.expires <= inner.clock.now() {
                inner.backend.revoke(id)?;
                return Err(AuthError::Failed);
            }
            let account = inner
                .backend
                .account(&grant.key)?
                .ok_or(AuthError::Failed)?;
            Ok(Login {
                name: account.name,
                key: grant.key,
                token: None,
                expires: grant.expires,
                token_id: id,
            })
        })
        .await
    }

    /// Revokes the token `token`: it logs nobody in any more. Revoking one
    /// that is gone already is not an error.
    ///
    /// # Errors
    ///
    /// `Unavailable` if the store fails.
    pub(crate) async fn logout(&self, token: TokenId) -> Result<(), AuthError> {
        self.store(move |inner| {
            inner.backend.revoke(token)?;
            Ok(())
        })
        .await
    }

    /// Runs `work` (a hash) on the blocking pool, once one of the
    /// `hash_workers` permits is free. The permit goes with the work, so a
    /// caller that gives up does not free it before the hash is done.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = self
            .inner
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Unavailable("accounts closed".into()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&inner)
        })
        .await
        .unwrap_or_else(|e| Err(AuthError::Unavailable(format!("accounts task failed: {e}"))))
    }

    /// Runs `work` (store reads and small writes, no hash) on the blocking
    /// pool, without waiting for a hash permit: token logins and logouts
    /// are not delayed behind password hashing.
    async fn store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .unwrap_or_else(|e| Err(AuthError::Unavailable(format!("accounts task failed: {e}"))))
    }

    /// How many password hashes have been computed: registrations and
    /// login checks, the dummy one for unknown names included.
    #[cfg(test)]
    pub(crate) fn hashes(&self) -> u64 {
        self.inner.hashes.load(Ordering::Relaxed)
    }

    /// The throttle's keys held (for tests).
    #[cfg(test)]
    fn throttled_keys(&self) -> usize {
        self.inner.throttle.keys()
    }
}

impl Inner {
    /// A new token for `key` issued at `now`, and what to store of it.
    fn token(&self, key: &str, now: u64) -> Result<(token::Fresh, Grant), AuthError> {
        let fresh = token::fresh()
            .map_err(|e| AuthError::Unavailable(format!("no randomness for a token: {e}")))?;
        let grant = Grant {
            key: key.to_owned(),
            digest: fresh.digest,
            expires: now.saturating_add(self.ttl.as_secs()),
        };
        Ok((fresh, grant))
    }
}

/// Creates the store's directory if missing.
fn fs_dir(dir: &std::path::Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))
}
