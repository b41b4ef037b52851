//! [`MemoryStore`]: the same semantics as the durable store, in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{PoisonError, RwLock};

use super::{Page, Record, Retention, Store, StoreError, TRIM_MAX, Topic};

/// History kept in memory only (`--ephemeral`): lost when the process ends,
/// otherwise the same as [`RedbStore`](super::RedbStore). Never fails.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last_id: u64,
    topics: HashMap<Topic, Log>,
}

/// One topic: its retained records in id order, its newest id ever and the
/// highest id trimmed from it.
#[derive(Debug, Default)]
struct Log {
    head: u64,
    trimmed: u64,
    records: VecDeque<Record>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn append(&self, batch: &[Record]) -> Result<(), StoreError> {
        // A panic elsewhere cannot leave `Inner` half-updated: every change
        // below is a push or an assignment, so the data stays usable.
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for record in batch {
            inner.last_id = inner.last_id.max(record.id);
            let log = inner.topics.entry(record.topic.clone()).or_default();
            log.head = record.id;
            log.records.push_back(record.clone());
        }
        Ok(())
    }

    fn after(&self, topic: &Topic, after: u64, limit: usize) -> Result<Page, StoreError> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let Some(log) = inner.topics.get(topic) else {
            return Ok(Page::default());
        };
        let start = log.records.partition_point(|r| r.id <= after);
        Ok(Page {
            records: log.records.range(start..).take(limit).cloned().collect(),
            missing: log.trimmed > after,
        })
    }

    fn last(&self, topic: &Topic, count: usize) -> Result<Vec<Record>, StoreError> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let Some(log) = inner.topics.get(topic) else {
            return Ok(Vec::new());
        };
        let start = log.records.len().saturating_sub(count);
        Ok(log.records.range(start..).cloned().collect())
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_id)
    }

    fn head(&self, topic: &Topic) -> Result<u64, StoreError> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        Ok(inner.topics.get(topic).map_or(0, |log| log.head))
    }

    fn trim(&self, keep: &Retention, now_ms: u64) -> Result<u64, StoreError> {
        if keep.keeps_all() {
            return Ok(0);
        }
        let cutoff = keep.max_age.map(|age| {
            let age = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            now_ms.saturating_sub(age)
        });
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut dropped = 0;
        for log in inner.topics.values_mut() {
            let len = log.records.len() as u64;
            let over = keep.per_topic.map_or(0, |n| len.saturating_sub(n));
            let budget = TRIM_MAX - dropped;
            let mut n = 0;
            for record in &log.records {
                let old = n < over || cutoff.is_some_and(|c| record.at_ms < c);
                if !old || n == budget {
                    break;
                }
                n += 1;
            }
            for record in log.records.drain(..n as usize) {
                log.trimmed = log.trimmed.max(record.id);
            }
            dropped += n;
        }
        Ok(dropped)
    }
}
