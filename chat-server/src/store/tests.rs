//! The stores' semantics, each check run on both backends where it applies.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_proto::Member;

use super::codec;
use super::{Kind, MemoryStore, Record, RedbStore, Retention, Store, StoreError, TRIM_MAX, Topic};

fn member(name: &str) -> Member {
    Member::new(name, "127.0.0.1:4000".parse().expect("address"))
}

fn rec(id: u64, prev: u64, at_ms: u64, topic: &Topic, text: &str) -> Record {
    Record {
        id,
        prev,
        at_ms,
        topic: topic.clone(),
        from: member("alice"),
        to: topic.parties().map(|(_, b)| b.to_string()),
        text: text.to_string(),
    }
}

/// Appends `n` records to each of `topics`, interleaved, ids from `first`,
/// `at_ms` = id × 10; returns them in id order.
fn fill(store: &dyn Store, topics: &[Topic], first: u64, n: usize) -> Vec<Record> {
    let mut heads = vec![0; topics.len()];
    let mut id = first;
    let mut all = Vec::new();
    for i in 0..n {
        for (t, topic) in topics.iter().enumerate() {
            all.push(rec(id, heads[t], id * 10, topic, &format!("m{i}")));
            heads[t] = id;
            id += 1;
        }
    }
    for chunk in all.chunks(7) {
        store.append(chunk).expect("append");
    }
    all
}

fn of(all: &[Record], topic: &Topic) -> Vec<Record> {
    all.iter().filter(|r| &r.topic == topic).cloned().collect()
}

/// A temporary store file, removed with its directory.
struct Temp {
    dir: tempfile::TempDir,
}

impl Temp {
    fn new() -> Temp {
        Temp {
            dir: tempfile::Builder::new()
                .prefix("chat-store-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("history.redb")
    }

    fn open(&self) -> RedbStore {
        RedbStore::open(self.path()).expect("open")
    }
}

/// Runs `check` on a memory store and on a fresh redb store.
fn both(check: impl Fn(&dyn Store)) {
    check(&MemoryStore::new());
    let temp = Temp::new();
    check(&temp.open());
}

fn room(name: &str) -> Topic {
    Topic::room(name)
}

#[test]
fn direct_topic_is_symmetric() {
    let ab = Topic::direct("alice", "bob");
    let ba = Topic::direct("bob", "alice");
    assert_eq!(ab, ba);
    assert_eq!(ab.key(), ba.key());
    assert_eq!(ab.parties(), Some(("alice", "bob")));
    assert!(ab.is_party("bob") && ab.is_party("alice") && !ab.is_party("carol"));
    assert_ne!(ab.key(), room("alice").key());
    // The length prefix keeps pairs apart whatever the names hold.
    assert_ne!(
        Topic::direct("a\0b", "c").key(),
        Topic::direct("a", "b\0c").key()
    );
    both(|store| {
        store.append(&[rec(1, 0, 1, &ab, "hi")]).expect("append");
        store.append(&[rec(2, 1, 2, &ba, "hello")]).expect("append");
        let page = store
            .after(&Topic::direct("bob", "alice"), 0, 10)
            .expect("after");
        assert_eq!(page.records.len(), 2);
        assert_eq!(store.head(&ab).expect("head"), 2);
    });
}

#[test]
fn unordered_direct_topic_does_not_decode() {
    let mut record = rec(1, 0, 1, &room("x"), "hi");
    record.topic = Topic(Kind::Direct("zed".into(), "amy".into()));
    let mut bytes = Vec::new();
    codec::encode(&record, &mut bytes).expect("encode");
    let err = codec::decode(&bytes).expect_err("unordered pair accepted");
    assert!(err.contains("unordered"), "{err}");
}

#[test]
fn codec_round_trips_and_checks_the_version() {
    let record = rec(7, 3, 99, &Topic::direct("b", "a"), "hé");
    let mut bytes = Vec::new();
    codec::encode(&record, &mut bytes).expect("encode");
    assert_eq!(bytes[0], codec::FORMAT);
    assert_eq!(codec::decode(&bytes), Ok(record));
    assert_eq!(codec::at_ms(&bytes), Ok(99));
    bytes[0] = 2;
    assert!(codec::decode(&bytes).is_err());
    assert!(codec::at_ms(&bytes).is_err());
    assert!(codec::decode(&[]).is_err());
    // A huge claimed length is refused, not allocated.
    assert!(codec::decode(&[codec::FORMAT, 1, 0, 1, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
}

#[test]
fn after_and_last_page_through_a_topic() {
    both(|store| {
        let (a, b) = (room("a"), room("b"));
        let all = fill(store, &[a.clone(), b.clone()], 1, 10);
        let want = of(&all, &a);
        // Page through `a` three at a time.
        let mut got = Vec::new();
        let mut after = 0;
        loop {
            let page = store.after(&a, after, 3).expect("after");
            assert!(!page.missing);
            assert!(page.records.len() <= 3);
            let Some(last) = page.records.last() else {
                break;
            };
            after = last.id;
            got.extend(page.records);
        }
        assert_eq!(got, want);
        assert_eq!(store.last(&a, 4).expect("last"), want[6..].to_vec());
        assert_eq!(store.last(&a, 100).expect("last"), want);
        assert_eq!(store.last(&a, 0).expect("last"), Vec::new());
        assert!(store.last(&room("none"), 5).expect("last").is_empty());
        assert!(
            store
                .after(&room("none"), 0, 5)
                .expect("after")
                .records
                .is_empty()
        );
        assert!(
            store
                .after(&a, u64::MAX, 5)
                .expect("after")
                .records
                .is_empty()
        );
        // Each topic's prev chain.
        for topic in [&a, &b] {
            let recs = store.after(topic, 0, 100).expect("after").records;
            let mut prev = 0;
            for r in &recs {
                assert_eq!(r.prev, prev);
                assert!(r.id > prev);
                prev = r.id;
            }
            assert_eq!(store.head(topic).expect("head"), prev);
        }
        assert_eq!(store.last_id().expect("last id"), 20);
        assert_eq!(store.head(&room("none")).expect("head"), 0);
    });
}

#[test]
fn missing_is_exact_after_trimming_by_count() {
    both(|store| {
        let (a, b) = (room("a"), room("b"));
        let all = fill(store, &[a.clone(), b.clone()], 1, 10);
        let want = of(&all, &a);
        let keep = Retention {
            per_topic: Some(4),
            max_age: None,
        };
        assert_eq!(store.trim(&keep, 0).expect("trim"), 12);
        assert_eq!(store.trim(&keep, 0).expect("trim again"), 0);
        // `a` keeps its last four; the newest trimmed is want[5].
        let page = store.after(&a, 0, 100).expect("after");
        assert!(page.missing);
        assert_eq!(page.records, want[6..].to_vec());
        let page = store.after(&a, want[4].id, 100).expect("after");
        assert!(page.missing, "want[5] was trimmed");
        let page = store.after(&a, want[5].id, 100).expect("after");
        assert!(!page.missing, "nothing after want[5] was trimmed");
        assert_eq!(page.records, want[6..].to_vec());
        assert_eq!(store.last(&a, 10).expect("last"), want[6..].to_vec());
        // Never-trimmed topics and ids past the head are not missing.
        let c = room("c");
        store.append(&[rec(21, 0, 210, &c, "x")]).expect("append");
        assert!(!store.after(&c, 0, 10).expect("after").missing);
        assert!(!store.after(&a, 1000, 10).expect("after").missing);
    });
}

#[test]
fn trimming_by_age_drops_the_oldest() {
    both(|store| {
        let a = room("a");
        let all = fill(store, std::slice::from_ref(&a), 1, 10);
        // at_ms = id × 10: at now = 200, an age of 125 ms keeps at_ms >= 75,
        // so ids 8, 9, 10.
        let keep = Retention {
            per_topic: None,
            max_age: Some(Duration::from_millis(125)),
        };
        assert_eq!(store.trim(&keep, 200).expect("trim"), 7);
        let page = store.after(&a, 0, 100).expect("after");
        assert!(page.missing);
        assert_eq!(page.records, all[7..].to_vec());
        // Count and age together: the stricter wins.
        let keep = Retention {
            per_topic: Some(1),
            max_age: Some(Duration::from_millis(1000)),
        };
        assert_eq!(store.trim(&keep, 200).expect("trim"), 2);
        assert_eq!(store.last(&a, 10).expect("last"), all[9..].to_vec());
    });
}

#[test]
fn last_id_and_head_survive_trimming_everything() {
    both(|store| {
        let a = room("a");
        fill(store, std::slice::from_ref(&a), 1, 5);
        let keep = Retention {
            per_topic: Some(0),
            max_age: None,
        };
        assert_eq!(store.trim(&keep, 0).expect("trim"), 5);
        assert_eq!(store.last_id().expect("last id"), 5);
        assert_eq!(store.head(&a).expect("head"), 5);
        let page = store.after(&a, 0, 10).expect("after");
        assert!(page.missing && page.records.is_empty());
        assert!(!store.after(&a, 5, 10).expect("after").missing);
    });
}

#[test]
fn reopening_keeps_everything() {
    let temp = Temp::new();
    let (a, d) = (room("a"), Topic::direct("x", "y"));
    let all = {
        let store = temp.open();
        let all = fill(&store, &[a.clone(), d.clone()], 1, 20);
        let keep = Retention {
            per_topic: Some(15),
            max_age: None,
        };
        assert_eq!(store.trim(&keep, 0).expect("trim"), 10);
        all
    };
    let store = temp.open();
    assert_eq!(store.last_id().expect("last id"), 40);
    for topic in [&a, &d] {
        let page = store.after(topic, 0, 100).expect("after");
        assert!(page.missing);
        assert_eq!(page.records, of(&all, topic)[5..].to_vec());
        assert_eq!(store.head(topic).expect("head"), of(&all, topic)[19].id);
    }
}

#[test]
fn a_second_open_is_refused_as_locked() {
    let temp = Temp::new();
    let _first = temp.open();
    match RedbStore::open(temp.path()) {
        Err(StoreError::Locked { path }) => assert_eq!(path, temp.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

fn expect_corrupt(temp: &Temp) -> String {
    match RedbStore::open(temp.path()) {
        Err(e @ StoreError::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&temp.path().display().to_string()), "{text}");
            text
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn garbage_is_corrupt() {
    let temp = Temp::new();
    fs::write(temp.path(), vec![0x5a; 10_000]).expect("write");
    expect_corrupt(&temp);
}

#[test]
fn an_empty_file_is_corrupt_not_a_new_store() {
    let temp = Temp::new();
    fs::write(temp.path(), b"").expect("write");
    expect_corrupt(&temp);
}

#[test]
fn a_truncated_file_is_corrupt() {
    for keep in [100, 600, 4096] {
        let temp = Temp::new();
        {
            let store = temp.open();
            fill(&store, &[room("a")], 1, 200);
        }
        let len = fs::metadata(temp.path()).expect("stat").len();
        assert!(len > keep);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(temp.path())
            .expect("open");
        file.set_len(keep).expect("truncate");
        drop(file);
        expect_corrupt(&temp);
    }
}

#[test]
fn a_redb_file_of_another_layout_is_corrupt() {
    let temp = Temp::new();
    temp.open().set_layout(2).expect("set layout");
    let text = expect_corrupt(&temp);
    assert!(text.contains("layout version 2"), "{text}");
    // And a redb file that is not ours at all.
    let other = Temp::new();
    let db = ::redb::Database::create(other.path()).expect("create");
    drop(db);
    expect_corrupt(&other);
}

#[test]
fn a_record_of_an_unknown_format_is_corrupt() {
    let temp = Temp::new();
    let store = temp.open();
    let a = room("a");
    store.append(&[rec(1, 0, 1, &a, "ok")]).expect("append");
    store.put_raw(&a, 2, &[9, 1, 2, 3]).expect("put");
    for result in [
        store.after(&a, 0, 10).map(drop),
        store.last(&a, 10).map(drop),
    ] {
        match result {
            Err(StoreError::Corrupt { detail, .. }) => {
                assert!(detail.contains("format version 9"), "{detail}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    // The good record before it still reads.
    assert_eq!(store.after(&a, 0, 1).expect("after").records.len(), 1);
}

#[test]
fn a_full_disk_fails_appends_and_history_still_reads() {
    let temp = Temp::new();
    let full = Arc::new(AtomicBool::new(false));
    let store = RedbStore::open_full(&temp.path(), full.clone()).expect("open");
    let a = room("a");
    let before = fill(&store, std::slice::from_ref(&a), 1, 20);
    full.store(true, Ordering::SeqCst);
    // Big enough that the file must grow.
    let big: Vec<Record> = (21..=2020)
        .map(|id| rec(id, id - 1, id * 10, &a, &"x".repeat(1000)))
        .collect();
    match store.append(&big) {
        Err(StoreError::Full { path }) => assert_eq!(path, temp.path()),
        other => panic!("expected Full, got {other:?}"),
    }
    // History still reads, without any of the failed batch; and again.
    for _ in 0..2 {
        assert_eq!(store.after(&a, 0, 100).expect("after").records, before);
        assert_eq!(store.last(&a, 5).expect("last"), before[15..].to_vec());
        assert_eq!(store.last_id().expect("last id"), 20);
        assert_eq!(store.head(&a).expect("head"), 20);
    }
    assert!(matches!(store.append(&big), Err(StoreError::Full { .. })));
    // Once there is room, appends work again.
    full.store(false, Ordering::SeqCst);
    store.append(&big).expect("append once there is room");
    assert_eq!(store.last_id().expect("last id"), 2020);
    drop(store);
    let store = temp.open();
    let all = store.after(&a, 0, 10_000).expect("after").records;
    assert_eq!(all.len(), 2020);
    assert_eq!(all[..20].to_vec(), before);
}

#[test]
fn one_trim_drops_at_most_trim_max() {
    both(|store| {
        let (a, b) = (room("a"), room("b"));
        let n = TRIM_MAX / 2 + 10;
        for topic in [&a, &b] {
            let first = store.last_id().expect("last id") + 1;
            let batch: Vec<Record> = (first..first + n)
                .map(|id| rec(id, if id == first { 0 } else { id - 1 }, id, topic, ""))
                .collect();
            store.append(&batch).expect("append");
        }
        let keep = Retention {
            per_topic: Some(5),
            max_age: None,
        };
        assert_eq!(store.trim(&keep, 0).expect("trim"), TRIM_MAX);
        assert_eq!(store.trim(&keep, 0).expect("trim"), 2 * (n - 5) - TRIM_MAX);
        assert_eq!(store.trim(&keep, 0).expect("trim"), 0);
        for topic in [&a, &b] {
            let page = store.after(topic, 0, 100).expect("after");
            assert!(page.missing);
            assert_eq!(page.records.len(), 5);
            let head = store.head(topic).expect("head");
            assert_eq!(page.records[4].id, head);
        }
    });
}

#[test]
fn age_trimming_skips_young_topics_and_follows_the_oldest() {
    both(|store| {
        let (a, b) = (room("a"), room("b"));
        // `a` old, `b` young; then `b` ages.
        store
            .append(&[rec(1, 0, 100, &a, ""), rec(2, 1, 200, &a, "")])
            .expect("append");
        store
            .append(&[rec(3, 0, 1000, &b, ""), rec(4, 3, 2000, &b, "")])
            .expect("append");
        let keep = Retention {
            per_topic: None,
            max_age: Some(Duration::from_millis(500)),
        };
        assert_eq!(store.trim(&keep, 1100).expect("trim"), 2);
        assert_eq!(store.trim(&keep, 2400).expect("trim"), 1);
        assert_eq!(store.last(&b, 10).expect("last")[0].id, 4);
        assert_eq!(store.trim(&keep, 2499).expect("trim"), 0);
        assert_eq!(store.trim(&keep, 2501).expect("trim"), 1);
        assert!(store.after(&b, 0, 10).expect("after").records.is_empty());
    });
}
