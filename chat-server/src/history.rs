//! History as the server serves it: the store, the journal that writes to
//! it, and the delivery of each message once it is stored.
//!
//! With history on, a session does not relay a room or direct message
//! itself: it checks it and submits it to the [`Journal`], which stores it
//! (one transaction per batch) and hands it back here, on its one thread,
//! in id order. Only then is it delivered, to the room's members (`Posted`,
//! `Said` or `Relay` by kind, each encoded once per run of messages from one
//! sender) or to its recipient (`Direct` or `Told`), and acknowledged to a
//! HISTORY sender (`Stored`). Delivering from one thread in id order is what
//! shows every client a conversation in increasing id, its own `Stored`
//! included (PROTOCOL.md, section 9.6).
//!
//! Pages are read from the [`Store`] by the session that asked, on its own
//! thread: a page is at most [`Config::history_page`] entries.

use std::fmt;
use std::sync::Arc;

use bytes::BytesMut;
use chat_proto::{ChatCodec, Conversation, Entry, Message, Refusal};
use tracing::warn;

use crate::config::{Config, Storage};
use crate::journal::{FRAME_EXTRA, Journal, JournalConfig, Sink, SubmitError};
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::presence::Codecs;
use crate::room::Room;
use crate::store::{
    MemoryStore, NewRecord, Record, RedbStore, Retention, Store, StoreError, Topic,
};

/// Most entries a `Recent` reads, whatever count it asks for: it reads the
/// last `count` to find where its page starts.
const RECENT_MAX: usize = 100_000;

/// The store's file inside the data directory.
const FILE: &str = "history.redb";

/// The history service: see the [module docs](self).
pub(crate) struct History {
    store: Arc<dyn Store>,
    journal: Journal<Origin>,
    page: usize,
    /// `Config::relay_budget`: what a sender may have on its way.
    budget: usize,
    /// `Config::history_queue`.
    queue: u64,
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("page", &self.page)
            .finish_non_exhaustive()
    }
}

/// Who sent a message and where it goes: what the journal carries back.
pub(crate) struct Origin {
    sender: Arc<Peer>,
    /// The request's number in a HISTORY session, else 0.
    seq: u64,
    to: Target,
}

enum Target {
    Room(Arc<Room>),
    Direct(Arc<Peer>),
}

/// What a history request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Request {
    /// `Resume`: after this id, at most `limit` (0: a page).
    After { after: u64, limit: u32 },
    /// `Recent`: the last `count` (0: a page).
    Last { count: u32 },
}

/// Opens the store `config` asks for: `None` when history is off.
///
/// # Errors
///
/// The store's: a corrupt or unreadable file, one in use by another
/// process, a directory that cannot be created.
pub(crate) fn open(config: &Config) -> Result<Option<Arc<dyn Store>>, StoreError> {
    Ok(match &config.storage {
        Storage::Off => None,
        Storage::Memory => Some(Arc::new(MemoryStore::new())),
        Storage::Disk(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            Some(Arc::new(RedbStore::open(dir.join(FILE))?))
        }
    })
}

impl History {
    /// Starts the journal over `store`, delivering with `codecs`.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        config: &Config,
        codecs: Codecs,
        metrics: &Arc<Metrics>,
    ) -> Result<History, StoreError> {
        let retention = Retention {
            per_topic: (config.history_size > 0).then_some(config.history_size),
            max_age: (!config.history_age.is_zero()).then_some(config.history_age),
        };
        let journal = Journal::start(
            store.clone(),
            JournalConfig {
                queue: config.history_queue,
                batch: config.history_batch,
                // A delivery adds at most a quarter of what a sender may
                // have on its way to a recipient's queue (and at least a
                // relay buffer's worth, as a session's relay does without
                // history).
                batch_bytes: (config.relay_budget() / 4).max(config.relay_batch).max(1),
                window: config.history_window,
                retention,
                first_id: match config.storage {
                    // Ids must not come back after a restart that forgot them.
                    Storage::Memory => micros_now(),
                    _ => 1,
                },
                ..JournalConfig::default()
            },
            Arc::new(Deliver {
                codecs,
                budget: config.relay_budget(),
                metrics: metrics.clone(),
            }),
        )?;
        Ok(History {
            store,
            journal,
            page: config.history_page,
            budget: config.relay_budget(),
            queue: config.history_queue as u64,
        })
    }

    /// Submits `text`, said by `sender` in `room`, request `seq`.
    pub(crate) fn say(
        &self,
        sender: &Arc<Peer>,
        seq: u64,
        room: &Arc<Room>,
        text: String,
    ) -> Result<(), SubmitError> {
        let new = NewRecord {
            topic: Topic::room(&*room.key),
            from: sender.member(),
            to: None,
            text,
        };
        let origin = Origin {
            sender: sender.clone(),
            seq,
            to: Target::Room(room.clone()),
        };
        self.submit(new, origin)
    }

    /// Submits `text`, told by `sender` to `to`, request `seq`.
    pub(crate) fn tell(
        &self,
        sender: &Arc<Peer>,
        seq: u64,
        to: &Arc<Peer>,
        text: String,
    ) -> Result<(), SubmitError> {
        let new = NewRecord {
            topic: Topic::direct(&*sender.label().key, &*to.label().key),
            from: sender.member(),
            to: Some(to.name().to_string()),
            text,
        };
        let origin = Origin {
            sender: sender.clone(),
            seq,
            to: Target::Direct(to.clone()),
        };
        self.submit(new, origin)
    }

    fn submit(&self, new: NewRecord, origin: Origin) -> Result<(), SubmitError> {
        let sender = origin.sender.clone();
        let cost = cost(&new.text);
        sender.submitted(cost);
        let submitted = self.journal.submit(new, origin);
        if submitted.is_err() {
            sender.delivered(cost, self.budget);
        }
        submitted
    }

    /// Whether `peer`'s session must read no more for now: it has as much
    /// on its way as it may, or the journal is half full and it has some on
    /// its way (whose delivery, down to none, wakes it). A sender with
    /// nothing on its way is never held here, so it never waits for a wake
    /// that does not come; the other half of the queue is for those.
    pub(crate) fn full(&self, peer: &Peer) -> bool {
        let in_flight = peer.in_flight();
        in_flight >= self.budget || (in_flight > 0 && self.journal.backlog() >= self.queue / 2)
    }

    /// The `Page` answering `request` about `topic`, cut to frames of
    /// `max_len` bytes.
    pub(crate) fn page(
        &self,
        conversation: Conversation,
        topic: &Topic,
        request: Request,
        max_len: usize,
    ) -> Result<Message, StoreError> {
        let wanted = |n: u32| match usize::try_from(n) {
            Ok(0) | Err(_) => self.page,
            Ok(n) => n,
        };
        let (mut records, missing, more) = match request {
            Request::After { after, limit } => {
                let n = wanted(limit).min(self.page);
                // One more than fits tells whether more follow.
                let mut page = self.store.after(topic, after, n + 1)?;
                let more = page.records.len() > n;
                page.records.truncate(n);
                (page.records, page.missing, more)
            }
            Request::Last { count } => {
                let count = wanted(count).min(RECENT_MAX);
                let records = self.store.last(topic, count)?;
                let missing = records.len() < count && self.store.after(topic, 0, 1)?.missing;
                let more = records.len() > self.page;
                (records, missing, more)
            }
        };
        records.truncate(self.page);
        let entries: Vec<Entry> = records.iter().map(entry).collect();
        Ok(Message::page(conversation, &entries, missing, more, max_len).0)
    }

    /// Waits, at most `wait`, until what was submitted so far is stored and
    /// delivered (or refused).
    pub(crate) fn flush(&self, wait: std::time::Duration) -> bool {
        self.journal.flush(wait)
    }

    /// Stores what is queued, delivers it, and stops the journal.
    pub(crate) fn close(&self) {
        self.journal.close();
    }
}

/// Microseconds since the Unix epoch.
fn micros_now() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX / 2)
}

fn entry(record: &Record) -> Entry {
    Entry {
        id: record.id,
        prev: record.prev,
        at: record.at_ms,
        from: record.from.clone(),
        text: record.text.clone(),
    }
}

/// What a message counts against its sender's budget: its largest frame.
fn cost(text: &str) -> usize {
    text.len() + FRAME_EXTRA
}

/// The journal's sink: delivers what is stored, tells senders what is not.
struct Deliver {
    codecs: Codecs,
    budget: usize,
    metrics: Arc<Metrics>,
}

impl Sink<Origin> for Deliver {
    fn appended(&self, took: std::time::Duration, _records: usize) {
        self.metrics.appended(took);
    }

    fn committed(&self, batch: &[(Record, Origin)]) {
        let mut rest = batch;
        while let Some((_, first)) = rest.first() {
            let run = match &first.to {
                // A run of one sender's messages to one room shares buffers.
                Target::Room(room) => rest
                    .iter()
                    .take_while(|(_, o)| {
                        Arc::ptr_eq(&o.sender, &first.sender)
                            && matches!(&o.to, Target::Room(r) if Arc::ptr_eq(r, room))
                    })
                    .count(),
                Target::Direct(_) => 1,
            };
            let (now, later) = rest.split_at(run);
            match &first.to {
                Target::Room(room) => self.room(room, now),
                Target::Direct(to) => self.direct(to, &now[0].0),
            }
            self.ack(&first.sender, now);
            let bytes = now.iter().map(|(r, _)| cost(&r.text)).sum();
            first.sender.delivered(bytes, self.budget);
            rest = later;
        }
    }

    fn failed(&self, batch: &[(NewRecord, Origin)], err: &StoreError) {
        warn!("{} message(s) not stored: {err}", batch.len());
        for (new, origin) in batch {
            origin.sender.delivered(cost(&new.text), self.budget);
            let subject = match &origin.to {
                Target::Room(room) => room.name.to_string(),
                Target::Direct(_) => new.to.clone().unwrap_or_default(),
            };
            let detail = format!("the message was not stored, nor sent to anyone: {err}");
            let sender = &origin.sender;
            let Some(msg) = unsent(sender, origin.seq, Refusal::Unavailable, &subject, &detail)
            else {
                warn!(peer = %sender.addr, "a version 1 client's message was not stored: {err}");
                continue;
            };
            self.push(codec_for(sender, &self.codecs), sender, &msg);
        }
    }
}

impl Deliver {
    /// Delivers one sender's run of messages to `room`'s other members.
    fn room(&self, room: &Room, run: &[(Record, Origin)]) {
        let Some((_, first)) = run.first() else {
            return;
        };
        let wants = room.wants();
        let (mut relay, mut said, mut posted) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
        for (record, _) in run {
            if wants.posted {
                let msg = Message::Posted {
                    room: room.name.to_string(),
                    entry: entry(record),
                };
                encode(&self.codecs.history, &msg, &mut posted);
            }
            if wants.said {
                let msg = Message::Said {
                    room: room.name.to_string(),
                    from: record.from.clone(),
                    text: record.text.clone(),
                };
                encode(&self.codecs.rooms, &msg, &mut said);
            }
            if wants.relay {
                let msg = Message::Relay {
                    ip: record.from.ip,
                    port: record.from.port,
                    text: record.text.clone(),
                };
                encode(&self.codecs.v1, &msg, &mut relay);
            }
        }
        room.broadcast_all(
            first.sender.id,
            &relay.freeze(),
            &said.freeze(),
            &posted.freeze(),
        );
    }

    /// Delivers a direct message to its recipient (also when that is its
    /// sender: a note to oneself).
    fn direct(&self, to: &Arc<Peer>, record: &Record) {
        let msg = if to.history {
            Message::Direct {
                entry: entry(record),
            }
        } else {
            Message::Told {
                from: record.from.clone(),
                text: record.text.clone(),
            }
        };
        // A full outbox evicts the recipient, not the sender.
        self.push(codec_for(to, &self.codecs), to, &msg);
        self.metrics.delivered(1);
    }

    /// Tells a HISTORY sender its messages are stored, after everything
    /// with a smaller id it is to receive.
    fn ack(&self, sender: &Peer, run: &[(Record, Origin)]) {
        if !sender.history {
            return;
        }
        let mut buf = BytesMut::new();
        for (record, origin) in run {
            if origin.seq > 0 {
                let stored = Message::Stored {
                    seq: origin.seq,
                    id: record.id,
                    at: record.at_ms,
                };
                encode(&self.codecs.history, &stored, &mut buf);
            }
        }
        if !buf.is_empty() {
            sender.outbox.push(buf.freeze());
        }
    }

    fn push(&self, codec: &ChatCodec, to: &Peer, msg: &Message) {
        let mut buf = BytesMut::new();
        encode(codec, msg, &mut buf);
        if !buf.is_empty() {
            to.outbox.push(buf.freeze());
        }
    }
}

/// What tells `sender` that its message was neither stored nor sent to
/// anyone: `Unstored` for a numbered request (`seq` > 0, a HISTORY
/// session), `Refused` in a ROOMS session; `None` for a version 1 client,
/// which has no such message (only `Error`, which would close it).
pub(crate) fn unsent(
    sender: &Peer,
    seq: u64,
    code: Refusal,
    subject: &str,
    detail: &str,
) -> Option<Message> {
    if seq > 0 {
        Some(Message::Unstored {
            seq,
            code,
            detail: detail.to_owned(),
        })
    } else if sender.rooms {
        Some(Message::Refused {
            code,
            subject: subject.to_owned(),
            detail: detail.to_owned(),
        })
    } else {
        None
    }
}

/// The codec of the frames `peer` may be sent.
pub(crate) fn codec_for<'a>(peer: &Peer, codecs: &'a Codecs) -> &'a ChatCodec {
    match (peer.rooms, peer.history) {
        (false, _) => &codecs.v1,
        (true, false) => &codecs.rooms,
        (true, true) => &codecs.history,
    }
}

/// Appends `msg`'s frame; a message too long for the codec (a text stored
/// under a larger limit than the server's now) is left out and logged.
fn encode(codec: &ChatCodec, msg: &Message, buf: &mut BytesMut) {
    if let Err(e) = codec.encode(msg, buf) {
        warn!("{} not delivered: {e}", msg.name());
    }
}
