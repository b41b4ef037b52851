//! The HISTORY capability on the client side: [`Marks`] (the last id per
//! conversation, carried across connections) and [`History`], which joins
//! pages to live delivery exactly as PROTOCOL.md section 9.8 says.
//!
//! Per conversation it keeps `last`, the highest id delivered (from live
//! `Posted`/`Direct`, pages, and our own `Stored`). While a `Resume` or
//! `Recent` of a conversation is outstanding, its live messages and our
//! own stored ids are held; a page's entries above `last` are delivered,
//! then the held ones above `last`, and the rest dropped as duplicates. A
//! live message whose `prev` is not `last` reveals a gap: it is held and
//! the conversation resumed from `last` at once.
//!
//! Requests are answered in the order sent (section 9.7), so each
//! conversation keeps a queue of what is outstanding: its `Resume`s and
//! `Recent`s, and for a room our `Part`s too, because a `Refused {
//! NotInRoom }` may answer either.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chat_proto::{Conversation, Entry, Message, Refusal};
use unicode_normalization::UnicodeNormalization;

use crate::error::Error;
use crate::event::Event;

/// Most live messages held, over all conversations, while resumes are
/// outstanding; a server that never answers cannot grow the client past it.
const MAX_HELD: usize = 100_000;

/// How the server compares names (section 8.4): a room and a direct
/// conversation of the same name are different conversations.
type Key = (bool, String);

fn key(conversation: &Conversation) -> Key {
    let (direct, name) = match conversation {
        Conversation::Room(name) => (false, name),
        Conversation::Direct(name) => (true, name),
    };
    let nfc: String = name.nfc().collect();
    (
        direct,
        caseless::default_case_fold_str(&nfc).nfc().collect(),
    )
}

/// Where a client is in each conversation: its last id, to resume from on
/// the next connection ([`Options::resume`](crate::Options::resume)). A
/// mark of 0 means "from the start": the conversation was read (a page)
/// while it had nothing stored.
///
/// Names compare as the server compares them (NFC and case folding,
/// PROTOCOL.md section 8.4): `Room("Rust")` and `Room("rust")` are one
/// conversation. [`Events::marks`](crate::Events::marks) keeps one up to
/// date with the events read.
///
/// # Examples
///
/// ```
/// use chat_client::{Conversation, Marks};
/// let mut marks = Marks::new();
/// marks.note(&Conversation::Room("Rust".into()), 42);
/// marks.note(&Conversation::Room("rust".into()), 41); // lower: kept at 42
/// assert_eq!(marks.get(&Conversation::Room("RUST".into())), Some(42));
/// assert_eq!(marks.get(&Conversation::Direct("rust".into())), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    map: BTreeMap<Key, (Conversation, u64)>,
}

impl Marks {
    /// No conversation marked.
    pub fn new() -> Self {
        Marks::default()
    }

    /// The last id of `conversation`, if it has one.
    pub fn get(&self, conversation: &Conversation) -> Option<u64> {
        self.map.get(&key(conversation)).map(|(_, id)| *id)
    }

    /// Records that `conversation` reached `id`; a lower id than the one
    /// kept changes nothing (ids only grow).
    pub fn note(&mut self, conversation: &Conversation, id: u64) {
        let slot = self
            .map
            .entry(key(conversation))
            .or_insert_with(|| (conversation.clone(), 0));
        slot.1 = slot.1.max(id);
    }

    /// Sets the mark of `conversation` to `id`, even lower.
    pub fn set(&mut self, conversation: Conversation, id: u64) {
        self.map.insert(key(&conversation), (conversation, id));
    }

    /// Forgets `conversation`: the next connection does not resume it.
    pub fn remove(&mut self, conversation: &Conversation) {
        self.map.remove(&key(conversation));
    }

    /// Every marked conversation and its id, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&Conversation, u64)> {
        self.map.values().map(|(c, id)| (c, *id))
    }

    /// How many conversations are marked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Notes what `event` delivers: a live message, a page's entries, our
    /// own stored message.
    pub(crate) fn see(&mut self, event: &Event) {
        match event {
            Event::Posted { room, entry } => {
                self.note(&Conversation::Room(room.clone()), entry.id);
            }
            Event::Direct { entry } => {
                self.note(&Conversation::Direct(entry.from.name.clone()), entry.id);
            }
            Event::Stored {
                conversation, id, ..
            } => self.note(conversation, *id),
            Event::Page {
                conversation,
                entries,
                ..
            } => {
                // Even an empty page marks the conversation as read.
                let top = entries.iter().map(|e| e.id).max().unwrap_or(0);
                self.note(conversation, top);
            }
            _ => {}
        }
    }
}

/// One outstanding request of a conversation.
#[derive(Debug)]
enum Ask {
    /// Our `Part` of the room: answered by our `Departed` or a `Refused`.
    Part,
    /// A `Resume` or `Recent`, followed page by page.
    Pages {
        /// The caller's request: its pages are shown whole. The library's
        /// own (reconnect, gap, joining) show only what is new.
        raw: bool,
        /// Entries still wanted (`None`: all there are).
        left: Option<u32>,
    },
}

/// A message held while a conversation's pages come.
#[derive(Debug)]
enum Held {
    /// A live room message.
    Posted { room: String, entry: Entry },
    /// A live direct message.
    Direct { entry: Entry },
    /// The id of our own message (its `Stored` was passed on at once).
    Own(u64),
}

impl Held {
    fn id(&self) -> u64 {
        match self {
            Held::Posted { entry, .. } | Held::Direct { entry } => entry.id,
            Held::Own(id) => *id,
        }
    }
}

/// One conversation.
#[derive(Debug)]
struct Track {
    /// Its name, in the server's spelling once known.
    conversation: Conversation,
    /// The highest id delivered (0: none yet; no gap can be told).
    last: u64,
    /// Whether `last` says where we are: from a mark, a page, or a live
    /// message. Entering the room again resumes from `last` then.
    known: bool,
    /// Outstanding requests, in the order sent.
    asks: VecDeque<Ask>,
    /// How many of `asks` are pages: live messages are held while > 0.
    pages: usize,
    held: Vec<Held>,
}

/// The seam of section 9.8, fed by the driver: see the module docs.
#[derive(Debug)]
pub(crate) struct History {
    tracks: HashMap<Key, Track>,
    /// Our numbered requests not yet answered: their conversations.
    sent: HashMap<u64, Key>,
    /// `Recent` count to ask on entering a room without a mark (0: none).
    recent: u32,
    /// Held messages, all conversations together.
    held: usize,
    /// Requests the library makes itself, for the driver to send.
    requests: Vec<Message>,
}

impl History {
    pub(crate) fn new(marks: &Marks, recent: u32) -> Self {
        let mut history = History {
            tracks: HashMap::new(),
            sent: HashMap::new(),
            recent,
            held: 0,
            requests: Vec::new(),
        };
        for (conversation, id) in marks.iter() {
            let t = history.track(conversation);
            t.last = id;
            t.known = true;
        }
        history
    }

    /// Right after `Named`: resumes every direct conversation with a mark
    /// (rooms wait until we are in them again).
    pub(crate) fn start(&mut self) {
        let direct: Vec<(Key, Conversation, u64)> = self
            .tracks
            .iter()
            .filter(|(k, t)| k.0 && t.known)
            .map(|(k, t)| (k.clone(), t.conversation.clone(), t.last))
            .collect();
        for (k, conversation, after) in direct {
            self.resume(&k, conversation, after);
        }
    }

    /// Requests the library made that the driver must send.
    pub(crate) fn requests(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.requests)
    }

    fn track(&mut self, conversation: &Conversation) -> &mut Track {
        self.tracks
            .entry(key(conversation))
            .or_insert_with(|| Track {
                conversation: conversation.clone(),
                last: 0,
                known: false,
                asks: VecDeque::new(),
                pages: 0,
                held: Vec::new(),
            })
    }

    /// The library's own `Resume { after }` of a conversation.
    fn resume(&mut self, k: &Key, conversation: Conversation, after: u64) {
        if let Some(t) = self.tracks.get_mut(k) {
            t.asks.push_back(Ask::Pages {
                raw: false,
                left: None,
            });
            t.pages += 1;
            self.requests.push(Message::Resume {
                conversation,
                after,
                limit: 0,
            });
        }
    }

    /// The caller's request `msg` was queued; `seq` is its number (numbered
    /// requests only).
    pub(crate) fn sent(&mut self, msg: &Message, seq: u64) {
        let numbered = |c: Conversation| (c, true);
        let (conversation, is_seq) = match msg {
            Message::Send { .. } => numbered(Conversation::Room("lobby".into())),
            Message::Say { room, .. } => numbered(Conversation::Room(room.clone())),
            Message::Tell { name, .. } => numbered(Conversation::Direct(name.clone())),
            Message::Part { room } => (Conversation::Room(room.clone()), false),
            Message::Resume { conversation, .. } | Message::Recent { conversation, .. } => {
                (conversation.clone(), false)
            }
            _ => return,
        };
        let k = key(&conversation);
        let t = self.track(&conversation);
        if is_seq {
            self.sent.insert(seq, k);
            return;
        }
        let left = match *msg {
            Message::Resume { limit: n, .. } | Message::Recent { count: n, .. } => {
                (n > 0).then_some(n)
            }
            _ => {
                t.asks.push_back(Ask::Part);
                return;
            }
        };
        t.asks.push_back(Ask::Pages { raw: true, left });
        t.pages += 1;
    }

    /// We are in `room` now (its `Roster` lists us, spelled as the server
    /// shows it): resume it from where we are, or ask for its latest
    /// messages.
    pub(crate) fn entered(&mut self, room: &str) {
        let conversation = Conversation::Room(room.to_owned());
        let recent = self.recent;
        let t = self.track(&conversation);
        t.conversation = conversation.clone();
        if t.known {
            let after = t.last;
            self.resume(&key(&conversation), conversation, after);
        } else if recent > 0 {
            t.asks.push_back(Ask::Pages {
                raw: false,
                left: Some(recent),
            });
            t.pages += 1;
            self.requests.push(Message::Recent {
                conversation,
                count: recent,
            });
        }
    }

    /// Our own `Departed` from `room`: the answer to our `Part`.
    pub(crate) fn departed(&mut self, room: &str) {
        let t = self.track(&Conversation::Room(room.to_owned()));
        if let Some(i) = t.asks.iter().position(|a| matches!(a, Ask::Part)) {
            t.asks.remove(i);
        }
    }

    /// A `Refused`: it may answer a `Resume` or `Recent`, which then ends.
    /// Returns whether it answers one the library made itself (then it is
    /// not the caller's business: say, a room parted before its resume).
    pub(crate) fn refused(
        &mut self,
        code: Refusal,
        subject: &str,
        out: &mut VecDeque<Event>,
    ) -> bool {
        let conversation = match code {
            Refusal::NotInRoom => Conversation::Room(subject.to_owned()),
            Refusal::NoSuchName => Conversation::Direct(subject.to_owned()),
            _ => return false,
        };
        let k = key(&conversation);
        let Some(t) = self.tracks.get_mut(&k) else {
            return false;
        };
        let Some(Ask::Pages { raw, .. }) = t.asks.pop_front() else {
            return false;
        };
        t.pages -= 1;
        if t.pages == 0 {
            self.release(&k, out);
        }
        !raw
    }

    /// A live room message.
    pub(crate) fn posted(
        &mut self,
        room: String,
        entry: Entry,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let conversation = Conversation::Room(room.clone());
        self.live(&conversation, Held::Posted { room, entry }, out)
    }

    /// A live direct message.
    pub(crate) fn direct(&mut self, entry: Entry, out: &mut VecDeque<Event>) -> Result<(), Error> {
        let conversation = Conversation::Direct(entry.from.name.clone());
        self.live(&conversation, Held::Direct { entry }, out)
    }

    fn live(
        &mut self,
        conversation: &Conversation,
        msg: Held,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let (id, prev) = match &msg {
            Held::Posted { entry, .. } | Held::Direct { entry } => (entry.id, entry.prev),
            Held::Own(id) => (*id, 0),
        };
        let t = self.track(conversation);
        if t.pages > 0 {
            return self.hold(conversation, msg);
        }
        if id <= t.last {
            tracing::debug!(id, last = t.last, "duplicate dropped");
            return Ok(());
        }
        if t.last != 0 && prev != t.last {
            // A gap: fetch what is missing, and deliver this after it.
            let after = t.last;
            let spelled = t.conversation.clone();
            tracing::debug!(id, prev, after, "gap: resuming");
            self.hold(conversation, msg)?;
            self.resume(&key(conversation), spelled, after);
            return Ok(());
        }
        t.last = id;
        t.known = true;
        out.extend(event(msg));
        Ok(())
    }

    fn hold(&mut self, conversation: &Conversation, msg: Held) -> Result<(), Error> {
        if self.held >= MAX_HELD {
            return Err(Error::TooMany {
                what: "held live",
                max: MAX_HELD,
            });
        }
        self.held += 1;
        self.track(conversation).held.push(msg);
        Ok(())
    }

    /// Our request `seq` is stored as `id`.
    pub(crate) fn stored(
        &mut self,
        seq: u64,
        id: u64,
        at: u64,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let k = self.answered(seq, "Stored")?;
        let t = self.tracks.get_mut(&k).ok_or(Error::Unasked {
            got: "Stored",
            what: format!("request {seq}"),
        })?;
        let conversation = t.conversation.clone();
        if t.pages > 0 {
            self.hold(&conversation, Held::Own(id))?;
        } else {
            t.last = t.last.max(id);
            t.known = true;
        }
        out.push_back(Event::Stored {
            seq,
            conversation,
            id,
            at,
        });
        Ok(())
    }

    /// Our request `seq` was not stored.
    pub(crate) fn unstored(
        &mut self,
        seq: u64,
        code: Refusal,
        detail: String,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let k = self.answered(seq, "Unstored")?;
        let conversation =
            self.tracks
                .get(&k)
                .map(|t| t.conversation.clone())
                .ok_or(Error::Unasked {
                    got: "Unstored",
                    what: format!("request {seq}"),
                })?;
        out.push_back(Event::Unstored {
            seq,
            conversation,
            code,
            detail,
        });
        Ok(())
    }

    /// The conversation of request `seq`, which is answered now.
    fn answered(&mut self, seq: u64, got: &'static str) -> Result<Key, Error> {
        self.sent.remove(&seq).ok_or(Error::Unasked {
            got,
            what: format!("request {seq}, already answered"),
        })
    }

    /// A `Page`: delivers what it brings, follows `more`, and once the
    /// conversation has no page outstanding, what was held.
    pub(crate) fn page(
        &mut self,
        conversation: Conversation,
        entries: Vec<Entry>,
        missing: bool,
        more: bool,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let k = key(&conversation);
        let unasked = || Error::Unasked {
            got: "Page",
            what: format!("{conversation:?}"),
        };
        let t = self.tracks.get_mut(&k).ok_or_else(unasked)?;
        let i = t
            .asks
            .iter()
            .position(|a| matches!(a, Ask::Pages { .. }))
            .ok_or_else(unasked)?;
        let Some(Ask::Pages { raw, left }) = t.asks.remove(i) else {
            return Err(unasked());
        };
        t.known = true;
        let tail = entries.last().map(|e| e.id);
        let got = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let own: Vec<u64> = t
            .held
            .iter()
            .filter_map(|h| match h {
                Held::Own(id) => Some(*id),
                _ => None,
            })
            .collect();
        let mut shown = Vec::with_capacity(entries.len());
        for entry in entries {
            let new = entry.id > t.last;
            if new {
                t.last = entry.id;
            }
            // Our own messages were acknowledged with `Stored` already.
            if raw || (new && !own.contains(&entry.id)) {
                shown.push(entry);
            }
        }
        let left = left.map(|n| n.saturating_sub(got));
        let follow = match (more, tail) {
            (true, Some(after)) if left != Some(0) => Some(after),
            _ => None,
        };
        if let Some(after) = follow {
            t.asks.push_back(Ask::Pages { raw, left });
            self.requests.push(Message::Resume {
                conversation: conversation.clone(),
                after,
                limit: left.unwrap_or(0),
            });
        } else {
            t.pages -= 1;
        }
        let done = t.pages == 0;
        out.push_back(Event::Page {
            conversation,
            entries: shown,
            missing,
            more: follow.is_some(),
        });
        if done {
            self.release(&k, out);
        }
        Ok(())
    }

    /// Delivers the held messages above `last`, in id order; drops the
    /// others, which came in a page.
    fn release(&mut self, k: &Key, out: &mut VecDeque<Event>) {
        let Some(t) = self.tracks.get_mut(k) else {
            return;
        };
        let mut held = std::mem::take(&mut t.held);
        self.held -= held.len();
        held.sort_by_key(Held::id);
        for msg in held {
            let id = msg.id();
            if id <= t.last {
                continue;
            }
            t.last = id;
            out.extend(event(msg));
        }
    }
}

/// The event of a held message; none for our own (passed on as `Stored`).
fn event(msg: Held) -> Option<Event> {
    match msg {
        Held::Posted { room, entry } => Some(Event::Posted { room, entry }),
        Held::Direct { entry } => Some(Event::Direct { entry }),
        Held::Own(_) => None,
    }
}
