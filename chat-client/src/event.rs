//! What the server tells a client, in the client's terms, and how its
//! messages become [`Event`]s: long `Roster` and `Rooms` answers come in
//! several frames and are put back together here, and the client's own name
//! and rooms are kept up to date from what the server reports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use std::collections::VecDeque;

use chat_proto::{Conversation, Entry, Member, Message, Refusal, RoomInfo};

use crate::error::Error;
use crate::history::History;

/// Something the server sent. `Ping`/`Pong` are answered by the client itself
/// and never show up here.
///
/// A version 1 session (no names or rooms) sees [`Message`](Event::Message),
/// [`Joined`](Event::Joined) and [`Left`](Event::Left); a session with names
/// and rooms sees [`Said`](Event::Said), [`Entered`](Event::Entered),
/// [`Departed`](Event::Departed) and the rest instead, the lobby included.
/// [`ServerError`](Event::ServerError) and [`ServerExit`](Event::ServerExit)
/// reach both.
///
/// A session with history ([`Session::history`](crate::Session::history))
/// sees [`Posted`](Event::Posted) and [`Direct`](Event::Direct) instead of
/// `Said` and `Told`, each message once per conversation, in id order,
/// with its place in history; what was missed (while disconnected, or a
/// gap the library noticed) comes as [`Page`](Event::Page)s; our own
/// `say`, `tell` and `send` are answered with [`Stored`](Event::Stored) or
/// [`Unstored`](Event::Unstored).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Version 1: another client said `text`.
    Message {
        /// That client's address, as the server sees it.
        from: SocketAddr,
        /// What it said, unchanged.
        text: String,
    },
    /// Version 1: a client joined the chat.
    Joined(SocketAddr),
    /// Version 1: a client left (exited, dropped or was evicted).
    Left(SocketAddr),
    /// The server reported an error and is about to close the connection.
    ServerError(String),
    /// The server is shutting down; the events end after this one.
    ServerExit,
    /// Another member of `room` said `text` (our own lines are not echoed).
    Said {
        /// The room it was said in.
        room: String,
        /// Who said it: its name as the server knows it, and its address.
        from: Member,
        /// What it said, unchanged.
        text: String,
    },
    /// A direct message, to us only.
    Told {
        /// Who sent it.
        from: Member,
        /// What it said, unchanged.
        text: String,
    },
    /// `member` entered `room`, a room we are in.
    Entered {
        /// The room.
        room: String,
        /// Who entered.
        member: Member,
    },
    /// `member` left `room` (parted, exited, dropped or evicted). When we
    /// part, we get this too, with ourselves as `member`.
    Departed {
        /// The room.
        room: String,
        /// Who left.
        member: Member,
    },
    /// The client that was called `old` is now `member.name`: someone who
    /// shares a room with us, or we ourselves (then [`Sender::name`] has
    /// already changed). `old == member.name` answers a [`Sender::nick`] to
    /// the name we already have.
    ///
    /// [`Sender::name`]: crate::Sender::name
    /// [`Sender::nick`]: crate::Sender::nick
    Renamed {
        /// The name it had.
        old: String,
        /// Its new name, and its address.
        member: Member,
    },
    /// Who is in `room`, in the order they entered: the answer to
    /// [`Sender::join`] (we are then last) or [`Sender::who`], and, right
    /// after connecting, the lobby's. Put together from every frame of one
    /// answer: one event per answer.
    ///
    /// [`Sender::join`]: crate::Sender::join
    /// [`Sender::who`]: crate::Sender::who
    Roster {
        /// The room.
        room: String,
        /// Its members, in the order they entered.
        members: Vec<Member>,
    },
    /// The rooms that exist and their member counts, answering
    /// [`Sender::list_rooms`](crate::Sender::list_rooms); one event per
    /// answer, like [`Roster`](Event::Roster).
    Rooms(Vec<RoomInfo>),
    /// A request was not carried out; the session goes on. Also the first
    /// event after connecting if the name asked for in
    /// [`Options::name`](crate::Options::name) was taken or invalid (then
    /// [`Session::name`](crate::Session::name) is the one the server
    /// picked).
    Refused {
        /// Why, as a code a program can act on.
        code: Refusal,
        /// What the request named: the name, room or recipient, as sent.
        subject: String,
        /// Why, for a human.
        detail: String,
    },
    /// The server (re)named us outside a rename; the first name is in
    /// [`Session::name`](crate::Session::name), so this is rare.
    Named(String),
    /// With history: another member of `room` said something, live.
    /// `entry.id` is its place in the room's history, `entry.from` its
    /// sender. Delivered once, in increasing id: a duplicate of what a
    /// page brought is dropped, and a message after a gap waits until the
    /// library has fetched what is missing (as [`Page`](Event::Page)s).
    Posted {
        /// The room, as the server spells it.
        room: String,
        /// The message.
        entry: Entry,
    },
    /// With history: a direct message, live; its conversation is
    /// `Conversation::Direct(entry.from.name)`. As [`Posted`](Event::Posted).
    Direct {
        /// The message; `entry.from` is the other party.
        entry: Entry,
    },
    /// With history: our request number `seq` (the number
    /// [`Sender::say`](crate::Sender::say), `tell` or `send` returned) is
    /// durably stored as `id` in `conversation`: "sent" means this. We get
    /// no `Posted` of our own room messages.
    Stored {
        /// The request's number.
        seq: u64,
        /// Where it went: the room (spelled as the server does once we
        /// have been in it), or the direct conversation with the recipient.
        conversation: Conversation,
        /// Its id there.
        id: u64,
        /// The server's time of it, in ms since the Unix epoch.
        at: u64,
    },
    /// With history: our request number `seq` was neither stored nor sent
    /// to anyone (not in the room, no such name, rate limited, or the
    /// server's store failed: `Refusal::Unavailable`).
    Unstored {
        /// The request's number.
        seq: u64,
        /// Where it was meant to go.
        conversation: Conversation,
        /// Why, as a code a program can act on.
        code: Refusal,
        /// Why, for a human.
        detail: String,
    },
    /// With history: one page of stored messages of `conversation`, oldest
    /// first. The answer to [`Sender::resume`](crate::Sender::resume) or
    /// [`Sender::recent`](crate::Sender::recent) (every entry the server
    /// sent), or to one the library made itself: on entering a room it has
    /// a mark for, or when [`Options::recent`](crate::Options::recent) is
    /// set; for a direct conversation with a mark, right after connecting;
    /// after a gap. Those carry only messages not delivered yet, so each
    /// message comes once; a `Refused` of one of them (the room was left
    /// before it arrived) is not passed on.
    ///
    /// The library follows `more` itself: `more` here says another page of
    /// the same answer comes next. Live messages of the conversation wait
    /// until the last page, then come as [`Posted`](Event::Posted) or
    /// [`Direct`](Event::Direct) if they were not in a page.
    Page {
        /// The conversation, as the request named it.
        conversation: Conversation,
        /// Stored messages, in increasing id.
        entries: Vec<Entry>,
        /// Messages the request reached for are no longer kept: "earlier
        /// messages are no longer available".
        missing: bool,
        /// Another page of this answer follows.
        more: bool,
    },
}

/// Who we are, as the server last told us: shared between the driver, which
/// updates it as events arrive, and every [`Sender`](crate::Sender).
#[derive(Debug, Default)]
pub(crate) struct Own {
    /// Our name (`None` on a version 1 session).
    pub(crate) name: Option<String>,
    /// The rooms we are in, in the order we entered them.
    pub(crate) rooms: Vec<String>,
}

/// [`Own`], behind a lock that a panicking holder cannot poison for good.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shared(Arc<Mutex<Own>>);

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Own> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Turns the messages the machine lets through into [`Event`]s.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// Our address as the server sees it: how we recognise ourselves.
    me: SocketAddr,
    own: Shared,
    /// Roster answers still coming, by room.
    rosters: HashMap<String, Vec<Member>>,
    /// A `Rooms` answer still coming.
    rooms: Option<Vec<RoomInfo>>,
    /// Entries held in `rosters` and `rooms` together.
    held: usize,
    /// Most entries one answer may have, and `held` may reach.
    max: usize,
    /// With history: the seam between pages and live delivery.
    history: Option<History>,
    /// Events made and not yet handed over, oldest first.
    ready: VecDeque<Event>,
}

impl Inbox {
    pub(crate) fn new(me: SocketAddr, own: Shared, max: usize, history: Option<History>) -> Self {
        Inbox {
            me,
            own,
            rosters: HashMap::new(),
            rooms: None,
            held: 0,
            max,
            history,
            ready: VecDeque::new(),
        }
    }

    /// The next event made, if any.
    pub(crate) fn pop(&mut self) -> Option<Event> {
        self.ready.pop_front()
    }

    /// Whether an event waits to be handed over.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// How many events wait to be handed over.
    pub(crate) fn ready(&self) -> usize {
        self.ready.len()
    }

    /// Adds an event made elsewhere (the server's `Error`) behind the others.
    pub(crate) fn push(&mut self, event: Event) {
        self.ready.push_back(event);
    }

    /// With history: the caller's request `msg` was queued as number `seq`.
    pub(crate) fn sent(&mut self, msg: &Message, seq: u64) {
        if let Some(h) = &mut self.history {
            h.sent(msg, seq);
        }
    }

    /// Requests the library makes itself (resumes), for the driver to send.
    pub(crate) fn requests(&mut self) -> Vec<Message> {
        self.history
            .as_mut()
            .map(History::requests)
            .unwrap_or_default()
    }

    /// Once named: resumes the direct conversations with a mark.
    pub(crate) fn start(&mut self) {
        if let Some(h) = &mut self.history {
            h.start();
        }
    }

    /// Who we are, as this inbox keeps it.
    pub(crate) fn own(&self) -> &Shared {
        &self.own
    }

    /// Takes `msg`: the events it completes are ready to [`pop`](Self::pop).
    ///
    /// # Errors
    ///
    /// [`Error::TooMany`] when a `Roster` or `Rooms` answer, or all those
    /// still coming together, would hold more than the limit, or too many
    /// live messages wait for pages; [`Error::Unasked`] for an answer to
    /// nothing we asked.
    pub(crate) fn take(&mut self, msg: Message) -> Result<(), Error> {
        let history = self.history.is_some();
        if let Some(h) = &mut self.history {
            let out = &mut self.ready;
            match msg {
                Message::Posted { room, entry } => return h.posted(room, entry, out),
                Message::Direct { entry } => return h.direct(entry, out),
                Message::Stored { seq, id, at } => return h.stored(seq, id, at, out),
                Message::Unstored { seq, code, detail } => {
                    return h.unstored(seq, code, detail, out);
                }
                Message::Page {
                    conversation,
                    entries,
                    missing,
                    more,
                } => return h.page(conversation, entries, missing, more, out),
                _ => {}
            }
        }
        if let Some(event) = self.event(msg)? {
            let refused = match &event {
                Event::Refused { code, subject, .. } if history => Some((*code, subject.clone())),
                _ => None,
            };
            if let (Some((code, subject)), Some(h)) = (refused, &mut self.history) {
                // The refusal comes before what it releases.
                let mut released = VecDeque::new();
                if !h.refused(code, &subject, &mut released) {
                    self.ready.push_back(event);
                }
                self.ready.extend(released);
            } else {
                self.ready.push_back(event);
            }
        }
        Ok(())
    }

    /// The event `msg` completes, if any (everything but history's).
    fn event(&mut self, msg: Message) -> Result<Option<Event>, Error> {
        let event = match msg {
            Message::Relay { ip, port, text } => Event::Message {
                from: SocketAddr::new(ip, port),
                text,
            },
            Message::Joined { ip, port } => Event::Joined(SocketAddr::new(ip, port)),
            Message::Left { ip, port } => Event::Left(SocketAddr::new(ip, port)),
            Message::Named { name } => {
                self.own.lock().name = Some(name.clone());
                Event::Named(name)
            }
            Message::Said { room, from, text } => Event::Said { room, from, text },
            Message::Told { from, text } => Event::Told { from, text },
            Message::Entered { room, member } => Event::Entered { room, member },
            Message::Departed { room, member } => {
                if member.addr() == self.me {
                    self.own.lock().rooms.retain(|r| *r != room);
                    if let Some(h) = &mut self.history {
                        h.departed(&room);
                    }
                }
                Event::Departed { room, member }
            }
            Message::Renamed { old, member } => {
                let mut own = self.own.lock();
                if member.addr() == self.me || own.name.as_deref() == Some(old.as_str()) {
                    own.name = Some(member.name.clone());
                }
                drop(own);
                Event::Renamed { old, member }
            }
            Message::Roster {
                room,
                members,
                more,
            } => return self.roster(room, members, more),
            Message::Rooms { rooms, more } => return self.rooms(rooms, more),
            Message::Refused {
                code,
                subject,
                detail,
            } => Event::Refused {
                code,
                subject,
                detail,
            },
            // We never ping, so a Pong is unsolicited; nothing else reaches here.
            other => {
                tracing::debug!(message = other.name(), "ignored");
                return Ok(None);
            }
        };
        Ok(Some(event))
    }

    fn roster(
        &mut self,
        room: String,
        members: Vec<Member>,
        more: bool,
    ) -> Result<Option<Event>, Error> {
        self.hold(members.len(), "Roster")?;
        let mut all = self.rosters.remove(&room).unwrap_or_default();
        all.extend(members);
        if more {
            self.rosters.insert(room, all);
            return Ok(None);
        }
        self.held -= all.len();
        if all.iter().any(|m| m.addr() == self.me) {
            let mut own = self.own.lock();
            if !own.rooms.contains(&room) {
                own.rooms.push(room.clone());
                drop(own);
                // Now a member: pages of the room join live delivery (9.8).
                if let Some(h) = &mut self.history {
                    h.entered(&room);
                }
            }
        }
        Ok(Some(Event::Roster { room, members: all }))
    }

    fn rooms(&mut self, rooms: Vec<RoomInfo>, more: bool) -> Result<Option<Event>, Error> {
        self.hold(rooms.len(), "Rooms")?;
        let mut all = self.rooms.take().unwrap_or_default();
        all.extend(rooms);
        if more {
            self.rooms = Some(all);
            return Ok(None);
        }
        self.held -= all.len();
        Ok(Some(Event::Rooms(all)))
    }

    /// Counts `n` more entries held, refusing past the limit.
    fn hold(&mut self, n: usize, what: &'static str) -> Result<(), Error> {
        match self.held.checked_add(n) {
            Some(held) if held <= self.max => {
                self.held = held;
                Ok(())
            }
            _ => Err(Error::TooMany {
                what,
                max: self.max,
            }),
        }
    }
}
