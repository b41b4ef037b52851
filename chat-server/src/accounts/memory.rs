//! [`Memory`]: accounts in memory, lost when the server stops
//! (`--ephemeral`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use crate::store::StoreError;

use super::store::{Account, Backend, Grant, victims};
use super::token::TokenId;

/// The in-memory backend.
#[derive(Debug, Default)]
pub(super) struct Memory {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<String, Account>,
    tokens: HashMap<TokenId, Grant>,
    /// Each account's tokens, by expiry.
    owned: HashMap<String, BTreeSet<(u64, [u8; 16])>>,
}

impl State {
    fn add(&mut self, id: TokenId, grant: &Grant, now: u64) {
        let owned = self.owned.entry(grant.key.clone()).or_default();
        let new = (grant.expires, id.0);
        owned.insert(new);
        for selector in victims(owned.iter().copied().collect(), new, now) {
            if let Some(old) = self.tokens.remove(&TokenId(selector)) {
                owned.remove(&(old.expires, selector));
            }
        }
        self.tokens.insert(id, grant.clone());
    }
}

impl Memory {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for Memory {
    fn keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.state().accounts.keys().cloned().collect())
    }

    fn account(&self, key: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.state().accounts.get(key).cloned())
    }

    fn create(
        &self,
        key: &str,
        account: &Account,
        id: TokenId,
        grant: &Grant,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        if state.accounts.contains_key(key) {
            return Ok(false);
        }
        state.accounts.insert(key.to_owned(), account.clone());
        state.add(id, grant, 0);
        Ok(true)
    }

    fn grant(&self, id: TokenId, grant: &Grant, now: u64) -> Result<(), StoreError> {
        self.state().add(id, grant, now);
        Ok(())
    }

    fn token(&self, id: TokenId) -> Result<Option<Grant>, StoreError> {
        Ok(self.state().tokens.get(&id).cloned())
    }

    fn revoke(&self, id: TokenId) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(grant) = state.tokens.remove(&id) else {
            return Ok(false);
        };
        if let Some(owned) = state.owned.get_mut(&grant.key) {
            owned.remove(&(grant.expires, id.0));
        }
        Ok(true)
    }

    fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        let mut state = self.state();
        let before = state.tokens.len();
        state.tokens.retain(|_, grant| grant.expires > now);
        for owned in state.owned.values_mut() {
            owned.retain(|&(expires, _)| expires > now);
        }
        state.owned.retain(|_, owned| !owned.is_empty());
        Ok(before - state.tokens.len())
    }
}
