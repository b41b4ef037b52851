//! The journal: the one writer of history. It gives each submitted message
//! its id, `prev` link and time, and commits them in batches (group commit),
//! so a disk's fsync is paid once per batch rather than once per message.
//!
//! Sessions [`submit`](Journal::submit) without blocking; one OS thread,
//! named `journal`, takes what is queued, commits it in one
//! [`Store::append`] and reports the outcome to a [`Sink`], in id order.
//! Readers use the [`Store`] directly.
//!
//! # Ids
//!
//! The thread owns the id sequence: it starts above the store's
//! [`last_id`](Store::last_id), and keeps each topic's head (its newest id)
//! in memory, read from the store the first time a topic is seen. The ids of
//! a batch that fails are never handed out again by this journal, and the
//! heads do not move for it: the next record of the topic links to the last
//! one *stored*. After a failure the heads are read again from the store, so
//! they stay what the store holds even if the failure left it in doubt.
//! (Ids of a failed batch may be reused after a restart; they were never
//! stored, acknowledged or delivered.)

use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::store::{NewRecord, Record, Retention, Store, StoreError, TRIM_MAX, Topic};

#[cfg(test)]
mod tests;

/// The journal's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// How many submitted messages may wait; beyond that
    /// [`submit`](Journal::submit) answers [`SubmitError::Busy`]. Default
    /// 16,384; 0 is taken as 1.
    pub queue: usize,
    /// The most messages committed in one transaction. Default 1,024; 0 is
    /// taken as 1.
    pub batch: usize,
    /// The most bytes of messages (each counted as its text, its sender's
    /// name and 64 bytes: about its frame) in one transaction, the one that
    /// crosses it included: a batch is delivered at once, so this bounds
    /// what one delivery may add to a recipient's queue. Default: no bound.
    pub batch_bytes: usize,
    /// How long the thread waits for more messages when what is queued does
    /// not fill a batch: it sleeps this long, then takes what has come (up to
    /// `batch`). The bound this adds to a message's latency; the queue holds
    /// what comes meanwhile. Default 1 ms; zero commits whatever is queued at
    /// once.
    pub window: Duration,
    /// The least id to hand out, whatever the store holds: a store that
    /// forgets (in memory) must still never see an id again after a
    /// restart, so its server starts ids at the time, in microseconds.
    /// Default: 1.
    pub first_id: u64,
    /// What [`Store::trim`] keeps. Default: everything.
    pub retention: Retention,
    /// How often the thread trims, between batches, when `retention` keeps
    /// less than everything. Default 1 s.
    pub trim_every: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            queue: 16 * 1024,
            batch: 1024,
            batch_bytes: usize::MAX,
            first_id: 1,
            window: Duration::from_millis(1),
            retention: Retention::default(),
            trim_every: Duration::from_secs(1),
        }
    }
}

/// Where the journal reports each batch: called on the journal's thread, in
/// id order, so it must not block for long (hand work to other threads or
/// tasks).
pub trait Sink<O = u64>: Send + Sync + 'static {
    /// These records are durably stored; each comes with the `origin` it
    /// was submitted with.
    fn committed(&self, batch: &[(Record, O)]);
    /// These messages were not stored, because of `err`.
    fn failed(&self, batch: &[(NewRecord, O)], err: &StoreError);
    /// The store took `took` to append (or fail to append) a batch of
    /// `records`, before `committed` or `failed` is called. Does nothing
    /// unless implemented (the server's metrics do).
    fn appended(&self, took: Duration, records: usize) {
        let _ = (took, records);
    }
}

/// Why [`Journal::submit`] refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: the store is falling behind. Nothing was queued.
    #[error("history journal busy")]
    Busy,
    /// The journal has been closed (or its thread has died).
    #[error("history journal closed")]
    Closed,
}

type Item<O> = (NewRecord, O);

/// What a message costs in a batch beyond its text: the most its frame to
/// a client adds (a `Posted` names the room, the sender and ids).
pub const FRAME_EXTRA: usize = chat_proto::HISTORY_OVERHEAD + chat_proto::HEADER_LEN;

/// The most topic heads the journal keeps in memory.
const HEADS_MAX: usize = 100_000;

/// The one writer of history: see the [module docs](self).
pub struct Journal<O = u64> {
    tx: RwLock<Option<SyncSender<Item<O>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    progress: Arc<Progress>,
}

/// Messages queued and messages reported to the sink, for [`Journal::flush`].
#[derive(Debug, Default)]
struct Progress {
    counts: Mutex<(u64, u64)>,
    moved: Condvar,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn done(&self, n: usize) {
        self.lock().1 += n as u64;
        self.moved.notify_all();
    }
}

impl<O> fmt::Debug for Journal<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch by the wall clock.
fn wall_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl<O: Send + 'static> Journal<O> {
    /// Reads the store's last id and starts the journal's thread.
    ///
    /// # Errors
    ///
    /// The store's, if its last id cannot be read; [`StoreError::Io`] if the
    /// thread cannot be started.
    pub fn start(
        store: Arc<dyn Store>,
        config: JournalConfig,
        sink: Arc<dyn Sink<O>>,
    ) -> Result<Journal<O>, StoreError> {
        Journal::start_with_clock(store, config, sink, Box::new(wall_ms))
    }

    /// [`start`](Journal::start) with another clock, for tests.
    pub(crate) fn start_with_clock(
        store: Arc<dyn Store>,
        config: JournalConfig,
        sink: Arc<dyn Sink<O>>,
        clock: Box<dyn FnMut() -> u64 + Send>,
    ) -> Result<Journal<O>, StoreError> {
        let next_id = store.last_id()?.saturating_add(1).max(config.first_id);
        let progress = Arc::new(Progress::default());
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let writer = Writer {
            store,
            sink,
            config,
            clock,
            next_id,
            last_at: 0,
            heads: HashMap::new(),
            next_trim: Instant::now(),
            progress: progress.clone(),
        };
        let thread = thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Io {
                path: "journal thread".into(),
                source: e,
            })?;
        Ok(Journal {
            tx: RwLock::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            progress,
        })
    }

    /// Queues `new` to be stored; `origin` comes back with it in the
    /// [`Sink`]'s calls. Never blocks on the disk.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Busy`] if the queue is full, [`SubmitError::Closed`]
    /// after [`close`](Journal::close).
    pub fn submit(&self, new: NewRecord, origin: O) -> Result<(), SubmitError> {
        let tx = self.tx.read().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = tx.as_ref() else {
            return Err(SubmitError::Closed);
        };
        // Counted before it is sent: the thread may report it at once.
        self.progress.lock().0 += 1;
        tx.try_send((new, origin)).map_err(|e| {
            self.progress.lock().0 -= 1;
            match e {
                TrySendError::Full(_) => SubmitError::Busy,
                TrySendError::Disconnected(_) => SubmitError::Closed,
            }
        })
    }
}

impl<O> Journal<O> {
    /// Messages submitted and not yet reported to the sink.
    pub fn backlog(&self) -> u64 {
        let counts = self.progress.lock();
        counts.0.saturating_sub(counts.1)
    }

    /// Waits until everything submitted before the call has been stored (or
    /// has failed) and reported to the sink, for at most `wait`. Whether it
    /// was.
    pub fn flush(&self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        let mut counts = self.progress.lock();
        let target = counts.0;
        while counts.1 < target {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            counts = self
                .progress
                .moved
                .wait_timeout(counts, end - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Refuses further submissions, commits everything queued (reporting it
    /// to the sink) and waits for the thread to end. Idempotent; also done
    /// on drop. Called from the sink (on the journal's thread), it does not
    /// wait: the thread ends once it has committed what is queued.
    pub fn close(&self) {
        drop(
            self.tx
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.thread().id() == thread::current().id() {
                return;
            }
            if thread.join().is_err() {
                warn!("the history journal's thread panicked");
            }
        }
    }
}

impl<O> Drop for Journal<O> {
    fn drop(&mut self) {
        self.close();
    }
}

/// The state of the journal's thread.
struct Writer<O> {
    store: Arc<dyn Store>,
    sink: Arc<dyn Sink<O>>,
    config: JournalConfig,
    clock: Box<dyn FnMut() -> u64 + Send>,
    /// The next id to hand out.
    next_id: u64,
    /// The newest `at_ms` handed out: times never go back.
    last_at: u64,
    /// Each topic's newest stored id, as far as read so far.
    heads: HashMap<Topic, u64>,
    next_trim: Instant,
    progress: Arc<Progress>,
}

impl<O: 'static> Writer<O> {
    fn run(mut self, rx: Receiver<Item<O>>) {
        let max = self.config.batch.max(1);
        let trims = !self.config.retention.keeps_all();
        loop {
            self.trim_if_due();
            let first = if trims {
                let wait = self.next_trim.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(item) => item,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(item) => item,
                    Err(_) => break,
                }
            };
            let mut batch = Vec::with_capacity(max.min(64));
            let mut bytes = 0;
            let mut take = |item: Item<O>, batch: &mut Vec<Item<O>>| {
                bytes += item.0.text.len() + item.0.from.name.len() + 64;
                batch.push(item);
                batch.len() < max && bytes < self.config.batch_bytes
            };
            let mut room = take(first, &mut batch);
            if room {
                room = self.fill(&rx, &mut batch, &mut take);
            }
            if room && !self.config.window.is_zero() {
                // Sleep rather than block on the queue: a blocked receiver
                // makes every submit pay for waking it.
                thread::sleep(self.config.window);
                self.fill(&rx, &mut batch, &mut take);
            }
            let n = batch.len();
            self.commit(batch);
            self.progress.done(n);
        }
    }

    /// Takes what is queued into `batch` while `take` says there is room;
    /// whether there still is.
    fn fill(
        &self,
        rx: &Receiver<Item<O>>,
        batch: &mut Vec<Item<O>>,
        take: &mut impl FnMut(Item<O>, &mut Vec<Item<O>>) -> bool,
    ) -> bool {
        while let Ok(item) = rx.try_recv() {
            if !take(item, batch) {
                return false;
            }
        }
        true
    }

    fn trim_if_due(&mut self) {
        if self.config.retention.keeps_all() || Instant::now() < self.next_trim {
            return;
        }
        let now = (self.clock)();
        self.next_trim = match self.store.trim(&self.config.retention, now) {
            // More may be left: go on at once, between batches.
            Ok(TRIM_MAX) => Instant::now(),
            Ok(_) => Instant::now() + self.config.trim_every,
            Err(e) => {
                warn!("trimming history: {e}");
                Instant::now() + self.config.trim_every
            }
        };
    }

    /// Assigns ids, links and times to `batch`, stores it, and tells the sink.
    fn commit(&mut self, batch: Vec<Item<O>>) {
        // Bound the cache (direct conversations can be many): the store
        // holds every head, so forgetting them only costs reads.
        if self.heads.len() > HEADS_MAX {
            self.heads.clear();
        }
        // Heads of topics not seen yet, read before anything is assigned so
        // that a failed read leaves the batch whole for `failed`.
        for (new, _) in &batch {
            if !self.heads.contains_key(&new.topic) {
                match self.store.head(&new.topic) {
                    Ok(head) => {
                        self.heads.insert(new.topic.clone(), head);
                    }
                    Err(err) => return self.sink.failed(&batch, &err),
                }
            }
        }
        let at = (self.clock)().max(self.last_at);
        self.last_at = at;
        // This batch's heads, merged into `self.heads` only once stored.
        let mut moved: HashMap<Topic, u64> = HashMap::new();
        let mut records = Vec::with_capacity(batch.len());
        let mut origins = Vec::with_capacity(batch.len());
        for (new, origin) in batch {
            let id = self.next_id;
            self.next_id += 1;
            let prev = match moved.get_mut(&new.topic) {
                Some(head) => std::mem::replace(head, id),
                None => {
                    moved.insert(new.topic.clone(), id);
                    self.heads.get(&new.topic).copied().unwrap_or(0)
                }
            };
            records.push(Record::new(new, id, prev, at));
            origins.push(origin);
        }
        let start = Instant::now();
        let appended = self.store.append(&records);
        self.sink.appended(start.elapsed(), records.len());
        match appended {
            Ok(()) => {
                self.heads.extend(moved);
                let done: Vec<(Record, O)> = records.into_iter().zip(origins).collect();
                self.sink.committed(&done);
            }
            Err(err) => {
                // Read the heads afresh: the store is the truth.
                self.heads.clear();
                if let Ok(last) = self.store.last_id() {
                    self.next_id = self.next_id.max(last.saturating_add(1));
                }
                let back: Vec<Item<O>> = records
                    .into_iter()
                    .zip(origins)
                    .map(|(r, origin)| {
                        let new = NewRecord {
                            topic: r.topic,
                            from: r.from,
                            to: r.to,
                            text: r.text,
                        };
                        (new, origin)
                    })
                    .collect();
                self.sink.failed(&back, &err);
            }
        }
    }
}
