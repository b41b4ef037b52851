//! What the accounts store keeps, and the [`Backend`] trait its two
//! backends implement: [`super::memory::Memory`] and [`super::redb::Redb`].
//! Calls block (disk I/O): run them off the async workers.

use crate::store::StoreError;

use super::token::{Digest32, TokenId};

/// A registered account, under its folded name (its key).
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Account {
    /// The name as registered (NFC), shown to others.
    pub(super) name: String,
    /// The password's Argon2id hash, a PHC string.
    pub(super) phc: String,
    /// When it was registered, Unix seconds.
    pub(super) created: u64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// A token as stored: whose it is, its secret's digest, when it expires.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Grant {
    /// The account's key.
    pub(super) key: String,
    /// SHA-256 of the token's secret.
    pub(super) digest: Digest32,
    /// Unix seconds; the token is refused from then on.
    pub(super) expires: u64,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("key", &self.key)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Most live tokens one account holds; a login beyond it drops the one
/// closest to expiring.
pub(super) const TOKENS_PER_ACCOUNT: usize = 64;

/// An accounts backend. Every write is one durable transaction.
pub(super) trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The keys of every account.
    fn keys(&self) -> Result<Vec<String>, StoreError>;

    /// The account with this key, if any.
    fn account(&self, key: &str) -> Result<Option<Account>, StoreError>;

    /// Creates the account `key` with its first token, unless that key is
    /// taken: `Ok(false)`, and nothing written.
    fn create(
        &self,
        key: &str,
        account: &Account,
        id: TokenId,
        grant: &Grant,
    ) -> Result<bool, StoreError>;

    /// Stores a new token of `grant.key`, and drops that account's tokens
    /// expired at `now` and, beyond [`TOKENS_PER_ACCOUNT`], those closest
    /// to expiring.
    fn grant(&self, id: TokenId, grant: &Grant, now: u64) -> Result<(), StoreError>;

    /// The token `id`, if it exists.
    fn token(&self, id: TokenId) -> Result<Option<Grant>, StoreError>;

    /// Deletes the token `id`; whether it existed.
    fn revoke(&self, id: TokenId) -> Result<bool, StoreError>;

    /// Deletes every token expired at `now`; how many there were.
    fn sweep(&self, now: u64) -> Result<usize, StoreError>;
}

/// Which of an account's tokens (`(expires, selector)`, `new` among them)
/// to drop when `new` is added at `now`: the expired ones, then the ones
/// closest to expiring beyond [`TOKENS_PER_ACCOUNT`]; never `new` itself.
pub(super) fn victims(
    mut owned: Vec<(u64, [u8; 16])>,
    new: (u64, [u8; 16]),
    now: u64,
) -> Vec<[u8; 16]> {
    owned.sort_unstable();
    let mut left = owned.len();
    let mut out = Vec::new();
    for entry in owned {
        if entry == new {
            continue;
        }
        if entry.0 <= now || left > TOKENS_PER_ACCOUNT {
            out.push(entry.1);
            left -= 1;
        }
    }
    out
}
