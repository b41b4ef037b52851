//! The journal: id assignment, group commit, failures, back-pressure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_proto::Member;

use super::{Journal, JournalConfig, Sink, SubmitError};
use crate::store::{MemoryStore, NewRecord, Page, Record, Retention, Store, StoreError, Topic};

const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Event {
    Committed(Vec<(Record, u64)>),
    Failed(Vec<(NewRecord, u64)>, String),
}

/// Sends each call to the test; `gate`, when set, holds `committed` until
/// the test sends on it.
struct Probe {
    events: Mutex<Sender<Event>>,
    entered: Mutex<Sender<()>>,
    gate: Option<Mutex<Receiver<()>>>,
}

impl Sink for Probe {
    fn committed(&self, batch: &[(Record, u64)]) {
        let _ = self.entered.lock().expect("lock").send(());
        if let Some(gate) = &self.gate {
            let _ = gate.lock().expect("lock").recv_timeout(WAIT);
        }
        let _ = self
            .events
            .lock()
            .expect("lock")
            .send(Event::Committed(batch.to_vec()));
    }

    fn failed(&self, batch: &[(NewRecord, u64)], err: &StoreError) {
        let _ = self
            .events
            .lock()
            .expect("lock")
            .send(Event::Failed(batch.to_vec(), err.to_string()));
    }
}

struct Rig {
    events: Receiver<Event>,
    entered: Receiver<()>,
    gate: Option<Sender<()>>,
    sink: Arc<Probe>,
}

fn rig(gated: bool) -> Rig {
    let (events_tx, events) = mpsc::channel();
    let (entered_tx, entered) = mpsc::channel();
    let (gate, gate_rx) = if gated {
        let (tx, rx) = mpsc::channel();
        (Some(tx), Some(Mutex::new(rx)))
    } else {
        (None, None)
    };
    let sink = Arc::new(Probe {
        events: Mutex::new(events_tx),
        entered: Mutex::new(entered_tx),
        gate: gate_rx,
    });
    Rig {
        events,
        entered,
        gate,
        sink,
    }
}

impl Rig {
    fn next(&self) -> Event {
        self.events
            .recv_timeout(WAIT)
            .expect("no sink call in time")
    }

    /// The committed records until `n` have come, in order.
    fn committed(&self, n: usize) -> Vec<(Record, u64)> {
        let mut all = Vec::new();
        while all.len() < n {
            match self.next() {
                Event::Committed(batch) => all.extend(batch),
                Event::Failed(_, err) => panic!("unexpected failure: {err}"),
            }
        }
        assert_eq!(all.len(), n, "more committed than submitted");
        all
    }
}

fn new(topic: &Topic, text: &str) -> NewRecord {
    NewRecord {
        topic: topic.clone(),
        from: Member::new("alice", "127.0.0.1:4000".parse().expect("address")),
        to: None,
        text: text.into(),
    }
}

/// A memory store whose appends fail while `fail` is set, as a full disk's
/// would; `fail_heads` makes `head` fail too.
#[derive(Default)]
struct Flaky {
    inner: MemoryStore,
    fail: AtomicBool,
    fail_heads: AtomicBool,
    appends: AtomicU64,
}

impl Flaky {
    fn full() -> StoreError {
        StoreError::Full {
            path: "flaky".into(),
        }
    }
}

impl Store for Flaky {
    fn append(&self, batch: &[Record]) -> Result<(), StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(Flaky::full());
        }
        self.inner.append(batch)
    }
    fn after(&self, topic: &Topic, after: u64, limit: usize) -> Result<Page, StoreError> {
        self.inner.after(topic, after, limit)
    }
    fn last(&self, topic: &Topic, count: usize) -> Result<Vec<Record>, StoreError> {
        self.inner.last(topic, count)
    }
    fn last_id(&self) -> Result<u64, StoreError> {
        self.inner.last_id()
    }
    fn head(&self, topic: &Topic) -> Result<u64, StoreError> {
        if self.fail_heads.load(Ordering::SeqCst) {
            return Err(Flaky::full());
        }
        self.inner.head(topic)
    }
    fn trim(&self, keep: &Retention, now_ms: u64) -> Result<u64, StoreError> {
        self.inner.trim(keep, now_ms)
    }
}

fn check_chains(records: &[Record]) {
    let mut heads = std::collections::HashMap::new();
    let mut last_id = 0;
    let mut last_at = 0;
    for r in records {
        assert!(
            r.id > last_id,
            "ids not increasing: {} after {last_id}",
            r.id
        );
        assert!(r.at_ms >= last_at, "time went back");
        let head = heads.insert(r.topic.clone(), r.id).unwrap_or(0);
        assert_eq!(r.prev, head, "prev of {}", r.id);
        last_id = r.id;
        last_at = r.at_ms;
    }
}

#[test]
fn ids_increase_and_prev_links_each_topic() {
    let store = Arc::new(MemoryStore::new());
    let rig = rig(false);
    let config = JournalConfig {
        batch: 5,
        ..JournalConfig::default()
    };
    let journal = Journal::start(store.clone(), config, rig.sink.clone()).expect("start");
    let topics = [
        Topic::room("a"),
        Topic::room("b"),
        Topic::direct("x", "y"),
        Topic::direct("y", "x"),
    ];
    for i in 0..100 {
        let topic = &topics[i % topics.len()];
        journal
            .submit(new(topic, &format!("m{i}")), i as u64)
            .expect("submit");
    }
    let done = rig.committed(100);
    // In submission order, origins intact, ids from 1 with no gap.
    for (i, (record, origin)) in done.iter().enumerate() {
        assert_eq!(*origin, i as u64);
        assert_eq!(record.id, i as u64 + 1);
        assert_eq!(record.text, format!("m{i}"));
    }
    let records: Vec<Record> = done.into_iter().map(|(r, _)| r).collect();
    check_chains(&records);
    // Direct messages either way round are one conversation.
    let dm = store.after(&topics[2], 0, 1000).expect("after").records;
    assert_eq!(dm.len(), 50);
    journal.close();
    assert_eq!(
        journal.submit(new(&topics[0], "late"), 0),
        Err(SubmitError::Closed)
    );
}

#[test]
fn time_never_goes_back() {
    let store = Arc::new(MemoryStore::new());
    let rig = rig(false);
    // A wall clock that steps back by a second on every reading.
    let mut now = 1_000_000u64;
    let clock = Box::new(move || {
        now -= 1000;
        now
    });
    let config = JournalConfig {
        batch: 1,
        window: Duration::ZERO,
        ..JournalConfig::default()
    };
    let journal = Journal::start_with_clock(store, config, rig.sink.clone(), clock).expect("start");
    for i in 0..10 {
        journal
            .submit(new(&Topic::room("a"), "t"), i)
            .expect("submit");
    }
    let done = rig.committed(10);
    assert!(done.iter().all(|(r, _)| r.at_ms == done[0].0.at_ms));
}

#[test]
fn a_new_journal_continues_where_the_store_ends() {
    let store = Arc::new(MemoryStore::new());
    let (a, b) = (Topic::room("a"), Topic::room("b"));
    let first = {
        let rig = rig(false);
        let journal = Journal::start(store.clone(), JournalConfig::default(), rig.sink.clone())
            .expect("start");
        for (i, topic) in [&a, &b, &a].into_iter().enumerate() {
            journal.submit(new(topic, "x"), i as u64).expect("submit");
        }
        // Closing commits what is queued.
        journal.close();
        rig.committed(3)
    };
    assert_eq!(first.last().map(|(r, _)| r.id), Some(3));
    let rig = rig(false);
    let journal =
        Journal::start(store.clone(), JournalConfig::default(), rig.sink.clone()).expect("start");
    journal.submit(new(&b, "y"), 0).expect("submit");
    journal.submit(new(&a, "y"), 1).expect("submit");
    let done = rig.committed(2);
    assert_eq!((done[0].0.id, done[0].0.prev), (4, 2));
    assert_eq!((done[1].0.id, done[1].0.prev), (5, 3));
}

#[test]
fn a_failed_batch_advances_neither_ids_nor_links() {
    let store = Arc::new(Flaky::default());
    let rig = rig(false);
    let config = JournalConfig {
        window: Duration::ZERO,
        ..JournalConfig::default()
    };
    let journal = Journal::start(store.clone(), config, rig.sink.clone()).expect("start");
    let a = Topic::room("a");
    journal.submit(new(&a, "one"), 1).expect("submit");
    let one = rig.committed(1);
    assert_eq!((one[0].0.id, one[0].0.prev), (1, 0));

    store.fail.store(true, Ordering::SeqCst);
    journal.submit(new(&a, "two"), 2).expect("submit");
    match rig.next() {
        Event::Failed(batch, err) => {
            assert_eq!(batch.len(), 1);
            assert_eq!(batch[0].0.text, "two");
            assert_eq!(batch[0].1, 2);
            assert!(err.contains("disk full"), "{err}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }

    store.fail.store(false, Ordering::SeqCst);
    journal.submit(new(&a, "three"), 3).expect("submit");
    let three = rig.committed(1);
    // Id 2 is not handed out again; "three" links to "one", the last stored.
    assert_eq!((three[0].0.id, three[0].0.prev), (3, 1));
    let page = store.after(&a, 0, 10).expect("after");
    let ids: Vec<u64> = page.records.iter().map(|r| r.id).collect();
    assert_eq!(ids, [1, 3]);
}

#[test]
fn a_failed_head_read_fails_the_batch_whole() {
    let store = Arc::new(Flaky::default());
    store.fail_heads.store(true, Ordering::SeqCst);
    let rig = rig(false);
    let journal =
        Journal::start(store.clone(), JournalConfig::default(), rig.sink.clone()).expect("start");
    let a = Topic::room("a");
    journal.submit(new(&a, "one"), 1).expect("submit");
    assert!(matches!(rig.next(), Event::Failed(batch, _) if batch.len() == 1));
    assert_eq!(store.appends.load(Ordering::SeqCst), 0);
    store.fail_heads.store(false, Ordering::SeqCst);
    journal.submit(new(&a, "two"), 2).expect("submit");
    let two = rig.committed(1);
    assert_eq!(two[0].0.prev, 0);
}

#[test]
fn a_full_queue_is_busy() {
    let store = Arc::new(MemoryStore::new());
    let mut rig = rig(true);
    let config = JournalConfig {
        queue: 2,
        window: Duration::ZERO,
        ..JournalConfig::default()
    };
    let journal = Journal::start(store, config, rig.sink.clone()).expect("start");
    let a = Topic::room("a");
    journal.submit(new(&a, "0"), 0).expect("submit");
    // The thread is now held in the sink: the queue fills.
    rig.entered.recv_timeout(WAIT).expect("sink entered");
    journal.submit(new(&a, "1"), 1).expect("submit");
    journal.submit(new(&a, "2"), 2).expect("submit");
    assert_eq!(journal.submit(new(&a, "3"), 3), Err(SubmitError::Busy));
    // Let it go: everything accepted is committed, in order.
    let gate = rig.gate.take().expect("gate");
    gate.send(()).expect("release");
    let done = rig.committed(1);
    assert_eq!(done[0].1, 0);
    rig.entered.recv_timeout(WAIT).expect("sink entered");
    gate.send(()).expect("release");
    let done = rig.committed(2);
    assert_eq!(done.iter().map(|d| d.1).collect::<Vec<_>>(), [1, 2]);
    journal.submit(new(&a, "4"), 4).expect("room again");
    drop(gate);
    journal.close();
}

#[test]
fn batches_are_bounded() {
    let store = Arc::new(Flaky::default());
    let mut rig = rig(true);
    let config = JournalConfig {
        batch: 3,
        window: Duration::ZERO,
        ..JournalConfig::default()
    };
    let journal = Journal::start(store.clone(), config, rig.sink.clone()).expect("start");
    let a = Topic::room("a");
    journal.submit(new(&a, "0"), 0).expect("submit");
    rig.entered.recv_timeout(WAIT).expect("sink entered");
    for i in 1..=7 {
        journal.submit(new(&a, "n"), i).expect("submit");
    }
    drop(rig.gate.take());
    let mut sizes = Vec::new();
    let mut seen = 0;
    while seen < 8 {
        match rig.next() {
            Event::Committed(batch) => {
                seen += batch.len();
                sizes.push(batch.len());
            }
            Event::Failed(_, err) => panic!("{err}"),
        }
    }
    assert_eq!(sizes, [1, 3, 3, 1]);
    assert_eq!(store.appends.load(Ordering::SeqCst), 4);
}

#[test]
fn the_journal_trims_by_its_retention() {
    let store = Arc::new(MemoryStore::new());
    let rig = rig(false);
    let config = JournalConfig {
        retention: Retention {
            per_topic: Some(3),
            max_age: None,
        },
        trim_every: Duration::from_millis(10),
        ..JournalConfig::default()
    };
    let journal = Journal::start(store.clone(), config, rig.sink.clone()).expect("start");
    let a = Topic::room("a");
    for i in 0..10 {
        journal.submit(new(&a, "x"), i).expect("submit");
    }
    rig.committed(10);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let page = store.after(&a, 0, 100).expect("after");
        if page.records.len() == 3 {
            assert!(page.missing);
            assert_eq!(page.records[0].id, 8);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never trimmed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Closes its journal from inside `committed`.
struct Closer {
    journal: Mutex<Option<Arc<Journal>>>,
    done: Mutex<Sender<()>>,
}

impl Sink for Closer {
    fn committed(&self, _: &[(Record, u64)]) {
        if let Some(journal) = self.journal.lock().expect("lock").take() {
            journal.close();
            assert_eq!(
                journal.submit(new(&Topic::room("a"), "late"), 9),
                Err(SubmitError::Closed)
            );
            // The last handle may go here, on the journal's own thread.
            drop(journal);
        }
        let _ = self.done.lock().expect("lock").send(());
    }

    fn failed(&self, _: &[(NewRecord, u64)], err: &StoreError) {
        panic!("{err}");
    }
}

#[test]
fn closing_from_the_sink_does_not_deadlock() {
    let (tx, rx) = mpsc::channel();
    let sink = Arc::new(Closer {
        journal: Mutex::new(None),
        done: Mutex::new(tx),
    });
    let journal = Arc::new(
        Journal::start(
            Arc::new(MemoryStore::new()),
            JournalConfig::default(),
            sink.clone(),
        )
        .expect("start"),
    );
    *sink.journal.lock().expect("lock") = Some(journal.clone());
    journal
        .submit(new(&Topic::room("a"), "x"), 0)
        .expect("submit");
    drop(journal);
    rx.recv_timeout(WAIT).expect("the sink returned");
}

#[test]
fn journal_is_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Journal>();
}

#[test]
fn a_full_disk_under_the_journal_fails_sends_then_recovers() {
    use crate::store::RedbStore;
    let dir = tempfile::Builder::new()
        .prefix("chat-journal-")
        .tempdir()
        .expect("temp dir");
    let full = Arc::new(AtomicBool::new(false));
    let store = Arc::new(
        RedbStore::open_full(&dir.path().join("history.redb"), full.clone()).expect("open"),
    );
    let rig = rig(false);
    let journal =
        Journal::start(store.clone(), JournalConfig::default(), rig.sink.clone()).expect("start");
    let a = Topic::room("a");
    journal.submit(new(&a, "one"), 1).expect("submit");
    assert_eq!(rig.committed(1)[0].0.id, 1);

    full.store(true, Ordering::SeqCst);
    // Enough text that the file must grow.
    let big = "x".repeat(4000);
    let (mut seen, mut failed) = (0, 0);
    for i in 0..1000 {
        journal.submit(new(&a, &big), 100 + i).expect("submit");
    }
    while seen < 1000 {
        match rig.next() {
            Event::Failed(batch, err) => {
                assert!(err.contains("disk full"), "{err}");
                seen += batch.len();
                failed += batch.len();
            }
            // A small batch may still fit in the file's free pages.
            Event::Committed(batch) => seen += batch.len(),
        }
    }
    assert!(failed > 0, "nothing failed");
    // History still reads while the disk is full.
    let page = store.after(&a, 0, 10).expect("reads while full");
    assert_eq!(page.records[0].text, "one");

    full.store(false, Ordering::SeqCst);
    journal.submit(new(&a, "two"), 2).expect("submit");
    let two = rig.committed(1);
    let stored = store.last(&a, 2).expect("last");
    assert_eq!(stored.last(), Some(&two[0].0));
    // It links to the newest record stored, whatever got in before the disk
    // filled up.
    assert_eq!(two[0].0.prev, stored[0].id);
    assert!(two[0].0.id > 1001);
}
