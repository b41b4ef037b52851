//! The history store: durable appends and reads.
//!
//! - `journal/redb`: records submitted one by one to a [`Journal`] over a
//!   [`RedbStore`] (default settings: batches of up to 1,024, a 1 ms
//!   window), timed until the sink has seen the last one committed; each is
//!   fsync-durable. Throughput is records per second.
//! - `journal/discard`: the same over a store that keeps nothing: the
//!   journal's own cost (ids, links, batching, the sink) without a disk.
//! - `redb/append_100`: [`Store::append`] of 100 records in one transaction
//!   (one fsync), without the journal.
//! - `redb/last_50`: the last 50 records of a room holding 10,000.
//! - `redb/after_500`: 500 records after an id in that room (a resume).
//!
//! Records are 64-byte texts spread over 10 rooms (one room for the reads).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chat_proto::Member;
use chat_server::{
    Journal, JournalConfig, NewRecord, Page, Record, RedbStore, Retention, Sink, Store, StoreError,
    SubmitError, Topic,
};
use criterion::{Criterion, Throughput};

const TEXT: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn new(topic: &Topic) -> NewRecord {
    NewRecord {
        topic: topic.clone(),
        from: Member::new("alice", "127.0.0.1:4000".parse().expect("address")),
        to: None,
        text: TEXT.into(),
    }
}

/// Counts committed records; `wait` blocks until a count is reached.
#[derive(Default)]
struct Counter {
    done: AtomicU64,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Sink for Counter {
    fn committed(&self, batch: &[(Record, u64)]) {
        self.done.fetch_add(batch.len() as u64, Ordering::SeqCst);
        let _guard = self.lock.lock().expect("lock");
        self.cond.notify_all();
    }

    fn failed(&self, _: &[(NewRecord, u64)], err: &StoreError) {
        panic!("append failed: {err}");
    }
}

impl Counter {
    fn wait(&self, target: u64) {
        let mut guard = self.lock.lock().expect("lock");
        while self.done.load(Ordering::SeqCst) < target {
            guard = self
                .cond
                .wait_timeout(guard, Duration::from_secs(10))
                .expect("lock")
                .0;
        }
    }
}

/// Keeps nothing: the journal's cost alone (a memory store would grow by
/// millions of records over a run).
struct Discard;

impl Store for Discard {
    fn append(&self, _: &[Record]) -> Result<(), StoreError> {
        Ok(())
    }
    fn after(&self, _: &Topic, _: u64, _: usize) -> Result<Page, StoreError> {
        Ok(Page::default())
    }
    fn last(&self, _: &Topic, _: usize) -> Result<Vec<Record>, StoreError> {
        Ok(Vec::new())
    }
    fn last_id(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn head(&self, _: &Topic) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn trim(&self, _: &Retention, _: u64) -> Result<u64, StoreError> {
        Ok(0)
    }
}

fn journal(c: &mut Criterion, name: &str, store: Arc<dyn Store>) {
    let counter = Arc::new(Counter::default());
    let journal =
        Journal::start(store, JournalConfig::default(), counter.clone()).expect("start journal");
    let rooms: Vec<Topic> = (0..10).map(|i| Topic::room(format!("room{i}"))).collect();
    let records: Vec<NewRecord> = rooms.iter().map(new).collect();
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let target = counter.done.load(Ordering::SeqCst) + iters;
            let start = Instant::now();
            let mut i = 0;
            while i < iters {
                let record = records[(i % 10) as usize].clone();
                match journal.submit(record, i) {
                    Ok(()) => i += 1,
                    Err(SubmitError::Busy) => std::thread::yield_now(),
                    Err(SubmitError::Closed) => panic!("journal closed"),
                }
            }
            counter.wait(target);
            start.elapsed()
        })
    });
    group.finish();
}

fn filled_room(store: &RedbStore, topic: &Topic, n: u64) {
    let member = Member::new("alice", "127.0.0.1:4000".parse().expect("address"));
    let records: Vec<Record> = (1..=n)
        .map(|id| Record {
            id,
            prev: id - 1,
            at_ms: id,
            topic: topic.clone(),
            from: member.clone(),
            to: None,
            text: TEXT.into(),
        })
        .collect();
    for chunk in records.chunks(1000) {
        store.append(chunk).expect("fill");
    }
}

fn redb(c: &mut Criterion, dir: &std::path::Path) {
    let mut group = c.benchmark_group("redb");

    let store = RedbStore::open(dir.join("append.redb")).expect("open");
    let topic = Topic::room("room");
    let mut next = 1u64;
    group.throughput(Throughput::Elements(100));
    group.bench_function("append_100", |b| {
        b.iter(|| {
            let batch: Vec<Record> = (0..100)
                .map(|k| Record::new(new(&topic), next + k, next + k - 1, 0))
                .collect();
            next += 100;
            store.append(&batch).expect("append");
        })
    });
    drop(store);

    let store = RedbStore::open(dir.join("read.redb")).expect("open");
    filled_room(&store, &topic, 10_000);
    group.throughput(Throughput::Elements(50));
    group.bench_function("last_50", |b| {
        b.iter(|| black_box(store.last(&topic, 50).expect("last")))
    });
    group.throughput(Throughput::Elements(500));
    group.bench_function("after_500", |b| {
        b.iter(|| black_box(store.after(&topic, 5_000, 500).expect("after")))
    });
    group.finish();
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("chat-store-bench-")
        .tempdir()
        .expect("temp dir");
    let mut c = Criterion::default().configure_from_args();
    let store = RedbStore::open(dir.path().join("journal.redb")).expect("open");
    journal(&mut c, "redb", Arc::new(store));
    journal(&mut c, "discard", Arc::new(Discard));
    redb(&mut c, dir.path());
    c.final_summary();
}
