//! Crash consistency of the durable history store.
//!
//! The test binary runs itself again as a child (the `child` test, selected
//! by an environment variable) that journals records into a `RedbStore` as
//! fast as it can and prints each id the journal reports committed. The
//! parent SIGKILLs it after a random number of those, reopens the store and
//! checks that every reported id is there exactly once, with intact `prev`
//! chains; five times on the same store, then a journal in this process
//! carries on above every earlier id. Seeded from the clock; set
//! `CHAT_STORE_CRASH_SEED` to replay a run.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_proto::Member;
use chat_server::{
    Journal, JournalConfig, NewRecord, Record, RedbStore, Sink, Store, StoreError, SubmitError,
    Topic,
};

/// Set in the child: the store's path.
const CHILD: &str = "CHAT_STORE_CRASH_CHILD";
const ROUNDS: usize = 5;
/// The whole test's bound.
const BUDGET: Duration = Duration::from_secs(20);

fn topics() -> [Topic; 3] {
    [
        Topic::room("lobby"),
        Topic::room("rust"),
        Topic::direct("alice", "bob"),
    ]
}

fn new(topic: &Topic, n: u64) -> NewRecord {
    NewRecord {
        topic: topic.clone(),
        from: Member::new("alice", "127.0.0.1:4000".parse().expect("address")),
        to: topic.parties().map(|(_, b)| b.to_string()),
        text: format!("message {n}"),
    }
}

/// Prints `committed ID` per record, one write per batch; exits when the
/// parent has gone (stdout closed).
struct Printer;

impl Sink for Printer {
    fn committed(&self, batch: &[(Record, u64)]) {
        let mut out = String::with_capacity(batch.len() * 20);
        for (record, _) in batch {
            out.push_str(&format!("committed {}\n", record.id));
        }
        let mut stdout = std::io::stdout().lock();
        if stdout.write_all(out.as_bytes()).is_err() || stdout.flush().is_err() {
            std::process::exit(1);
        }
    }

    fn failed(&self, _: &[(NewRecord, u64)], err: &StoreError) {
        eprintln!("child: append failed: {err}");
        std::process::exit(2);
    }
}

/// The child's role; a no-op when run as a normal test.
#[test]
fn child() {
    let Some(path) = std::env::var_os(CHILD) else {
        return;
    };
    let store = Arc::new(RedbStore::open(&path).expect("child: open"));
    let journal =
        Journal::start(store, JournalConfig::default(), Arc::new(Printer)).expect("child: start");
    let topics = topics();
    // Bounded even if the parent never kills it.
    let end = Instant::now() + BUDGET;
    let mut n = 0u64;
    while Instant::now() < end {
        match journal.submit(new(&topics[(n % 3) as usize], n), n) {
            Ok(()) => n += 1,
            Err(SubmitError::Busy) => thread::sleep(Duration::from_micros(100)),
            Err(SubmitError::Closed) => std::process::exit(3),
        }
    }
    std::process::exit(4);
}

/// xorshift64*: enough to pick kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Runs a child on `path`, kills it once it has reported `kill_after` ids,
/// and returns every id it reported (complete lines only).
fn run_child(path: &Path, kill_after: usize, deadline: Instant) -> Vec<u64> {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill has no newline: not a report.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    if let Some(id) = line.trim_end().strip_prefix("committed ") {
                        let id: u64 = id.parse().expect("child printed a bad id");
                        if tx.send(id).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    let mut ids = Vec::new();
    while ids.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(id) => ids.push(id),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "child reported {} of {kill_after} ids before {e:?}",
                    ids.len()
                );
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child ended by itself: {status}");
    // Whatever it printed before dying was committed too.
    reader.join().expect("reader thread");
    ids.extend(rx.try_iter());
    ids
}

/// Checks the store holds every id in `acked`, once, with intact chains;
/// returns the store's last id.
fn verify(path: &Path, acked: &HashSet<u64>) -> u64 {
    let store = RedbStore::open(path).expect("reopen after the kill");
    let mut seen = HashSet::new();
    let mut newest = 0;
    for topic in topics() {
        let page = store.after(&topic, 0, usize::MAX).expect("read back");
        assert!(!page.missing, "nothing was trimmed");
        let mut prev = 0;
        for record in &page.records {
            assert_eq!(record.topic, topic);
            assert_eq!(record.prev, prev, "prev of {} in {topic:?}", record.id);
            assert!(record.id > prev, "ids out of order in {topic:?}");
            assert!(seen.insert(record.id), "id {} stored twice", record.id);
            prev = record.id;
        }
        assert_eq!(store.head(&topic).expect("head"), prev);
        newest = newest.max(prev);
    }
    let mut lost: Vec<_> = acked.iter().filter(|id| !seen.contains(id)).collect();
    lost.sort();
    assert!(
        lost.is_empty(),
        "{} committed ids lost, from {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let last = store.last_id().expect("last id");
    assert_eq!(last, newest, "last_id is the newest stored id");
    last
}

#[test]
fn sigkill_loses_nothing_committed() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let start = Instant::now();
    let deadline = start + BUDGET;
    let seed = match std::env::var("CHAT_STORE_CRASH_SEED") {
        Ok(s) => s.parse().expect("CHAT_STORE_CRASH_SEED: a number"),
        Err(_) => {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
                | 1
        }
    };
    eprintln!("crash test seed: {seed} (CHAT_STORE_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::Builder::new()
        .prefix("chat-crash-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("history.redb");
    let mut acked = HashSet::new();
    let mut last = 0;
    for round in 0..ROUNDS {
        let kill_after = 1 + (rng.next() % 3000) as usize;
        let ids = run_child(&path, kill_after, deadline);
        let mut prev = last;
        for &id in &ids {
            assert!(id > prev, "round {round}: id {id} after {prev}");
            prev = id;
        }
        acked.extend(ids.iter().copied());
        last = verify(&path, &acked);
        eprintln!(
            "round {round}: killed after {kill_after} (saw {}), store ends at {last}",
            ids.len()
        );
    }
    // A journal here continues above every earlier id, linking to the heads.
    let store = Arc::new(RedbStore::open(&path).expect("reopen"));
    let heads: Vec<u64> = topics()
        .iter()
        .map(|t| store.head(t).expect("head"))
        .collect();
    let (tx, rx) = mpsc::channel();
    struct Collect(Mutex<mpsc::Sender<Record>>);
    impl Sink for Collect {
        fn committed(&self, batch: &[(Record, u64)]) {
            let tx = self.0.lock().expect("lock");
            for (record, _) in batch {
                let _ = tx.send(record.clone());
            }
        }
        fn failed(&self, _: &[(NewRecord, u64)], err: &StoreError) {
            panic!("append failed: {err}");
        }
    }
    let sink = Arc::new(Collect(Mutex::new(tx)));
    let journal = Journal::start(store.clone(), JournalConfig::default(), sink).expect("start");
    for (i, topic) in topics().iter().enumerate() {
        journal.submit(new(topic, i as u64), 0).expect("submit");
    }
    journal.close();
    let records: Vec<Record> = rx.try_iter().collect();
    assert_eq!(records.len(), 3);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.id, last + 1 + i as u64);
        assert_eq!(record.prev, heads[i]);
    }
    drop(store);
    acked.extend(records.iter().map(|r| r.id));
    verify(&path, &acked);
    assert!(start.elapsed() < BUDGET, "took {:?}", start.elapsed());
}
