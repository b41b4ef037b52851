//! What each request does: a client's name, its rooms, and the answers.
//!
//! A [`Client`] is one session's standing in the hub: its [`Peer`], the
//! rooms it is in ([`Membership`]s, in the order it joined them), and the
//! token bucket of its direct messages. The session hands it every message
//! the protocol machine lets through; it answers into the client's own
//! outbox, so an answer keeps its place among the notices and relays the
//! client is sent. Every refusal is a `Refused` with a code, what the
//! request named, and a sentence; the connection stays open.
//!
//! Answers come in the order asked. A room joined is answered by its
//! batch of notices (its roster, in `presence.rs`), which the pacer sends
//! in the order batches started, so the lobby's roster comes before that of
//! a room joined at once; a request answered on the spot first has the
//! batches holding this client's rosters sent. (A `Join` itself does not:
//! a crowd arriving and joining rooms at once stays in few batches.)
//!
//! Relays are gathered, for one room at a time, into [`Relays`]: the
//! `Send`s and `Say`s that arrived together are encoded back to back, once
//! as `Said` for the room's rooms members and once as `Relay` for its
//! version 1 members (each only if the room has such members), and handed
//! to the room as two shared buffers.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chat_proto::{ChatCodec, Conversation, Member, Message, Refusal};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::accounts::{Accounts, Login, TokenId};
use crate::config::Config;
use crate::directory::Directory;
use crate::flood::Bucket;
use crate::history::{self, History, Request};
use crate::hub::{Hub, LOBBY};
use crate::journal::SubmitError;
use crate::names::{Name, NameError};
use crate::peer::{Label, Peer};
use crate::room::{Membership, Refused, Room};
use crate::roster;
use crate::store::Topic;

/// The request being handled, with its number in a HISTORY session (0
/// otherwise): refusals of a numbered one are `Unstored`.
#[derive(Clone, Copy)]
struct Numbered<'a> {
    cx: &'a Scope<'a>,
    seq: u64,
}

/// What a client's requests work on: the rooms and names, history (when
/// on), and the limits.
pub(crate) struct Scope<'a> {
    pub(crate) hub: &'a Hub,
    pub(crate) history: Option<&'a History>,
    pub(crate) config: &'a Config,
    /// The accounts, when the server keeps them (AUTH).
    pub(crate) accounts: Option<&'a Accounts>,
}

impl Scope<'_> {
    /// Whether `name` belongs to an account.
    fn registered(&self, name: &Name) -> bool {
        self.accounts.is_some_and(|a| a.is_registered(name.key()))
    }
}

/// Why the session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The client's outbox overflowed.
    Evicted,
    /// The hub is closed: the server is shutting down.
    Shutdown,
}

/// Relays gathered for one room, not yet handed to it.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    room: Option<Arc<Room>>,
    /// Bytes to reserve for a buffer when it is first needed.
    hint: usize,
    /// `Relay` frames, for version 1 members (if the room has any).
    relay: BytesMut,
    /// `Said` frames, for rooms members (if the room has any).
    said: BytesMut,
    /// The `Said` each relay of the buffer is, but for its text: one room,
    /// one sender, whose name cannot change meanwhile (a rename is a
    /// request of its own, which hands the buffer over first). Present
    /// only if the room has rooms members.
    template: Option<Message>,
    want_relay: bool,
}

impl Relays {
    /// Room for about `bytes` of relays.
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Relays {
            hint: bytes,
            ..Relays::default()
        }
    }

    /// Bytes gathered for the busier kind of recipient.
    pub(crate) fn len(&self) -> usize {
        self.relay.len().max(self.said.len())
    }
}

/// One session's standing in the hub.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) peer: Arc<Peer>,
    /// In the order joined.
    rooms: Vec<Membership>,
    /// A rooms client that has not sent its first `Nick`: in no room yet.
    naming: bool,
    /// It joined a room whose batch of notices, with its roster, may not
    /// have gone out yet.
    unsent: bool,
    tells: Bucket,
    directory: Arc<Directory>,
}

impl Client {
    /// A client for `peer`. A version 1 client is given a name and put in
    /// the lobby at once; a rooms client waits for its `Nick`.
    pub(crate) fn new(hub: &Hub, config: &Config, peer: Arc<Peer>) -> Result<Client, Stop> {
        let mut client = Client {
            tells: Bucket::new(config.tell_burst, Instant::now()),
            directory: hub.directory().clone(),
            naming: peer.rooms,
            unsent: false,
            rooms: Vec::new(),
            peer,
        };
        if !client.naming {
            hub.directory().assign(&client.peer);
            client.enter_lobby(hub)?;
        }
        Ok(client)
    }

    /// Whether the client still owes its first `Nick`.
    pub(crate) fn naming(&self) -> bool {
        self.naming
    }

    /// The token of the account it is logged in to, if any.
    pub(crate) fn token(&self) -> Option<TokenId> {
        self.peer.token()
    }

    /// Whether `key` is another client's name now.
    pub(crate) fn in_use(&self, key: &str) -> bool {
        self.directory
            .find(key)
            .is_some_and(|p| p.id != self.peer.id)
    }

    /// Logged in to `login`'s account: named after it (which nobody else may
    /// hold: refused as taken otherwise, and `false` returned), told so, and
    /// in the lobby.
    pub(crate) fn logged_in(&mut self, hub: &Hub, login: &Login) -> Result<bool, Stop> {
        let label = Label::new(&login.name, &login.key);
        if hub.directory().claim(&self.peer, label).is_err() {
            self.refuse(
                hub,
                Refusal::NameTaken,
                &login.name,
                &format!("{} is signed in on another connection", login.name),
            )?;
            return Ok(false);
        }
        self.peer.log_in(login.token_id);
        let msg = Message::LoggedIn {
            name: login.name.clone(),
            token: login.token.clone().unwrap_or_default().into(),
            expires: login.expires,
        };
        self.reply(hub, &msg)?;
        self.named(hub)?;
        Ok(true)
    }

    /// Adds the tokens its direct messages earned since the last refill.
    pub(crate) fn refill(&mut self, config: &Config, now: Instant) {
        self.tells.refill(config.tell_rate, config.tell_burst, now);
    }

    fn enter_lobby(&mut self, hub: &Hub) -> Result<(), Stop> {
        match hub.enter_lobby(&self.peer) {
            Ok(member) => {
                // Room for it alone, not the four a first push makes: most
                // clients are in a few rooms, for long (see `join`).
                self.rooms.reserve_exact(1);
                self.rooms.push(member);
                self.unsent = true;
                Ok(())
            }
            Err(_) => Err(Stop::Shutdown),
        }
    }

    /// Applies one message from the client: a request, or a `Send` or
    /// `Say` gathered into `relays`.
    pub(crate) fn handle(
        &mut self,
        cx: &Scope<'_>,
        msg: Message,
        seq: u64,
        relays: &mut Relays,
    ) -> Result<(), Stop> {
        let (hub, config) = (cx.hub, cx.config);
        // A request answered at once: the rosters of the rooms joined
        // before go first (their batches go out now rather than on time).
        // A `Join` of a new room is answered by its batch, after them (the
        // pacer sends batches in the order they started); `Send` and `Say`
        // are not answered. Not sending batches early for those keeps a
        // crowd arriving at once in few batches.
        if self.unsent
            && !matches!(
                msg,
                Message::Send { .. } | Message::Say { .. } | Message::Join { .. }
            )
        {
            self.settle();
            self.unsent = false;
        }
        // Everything else goes out after the relays already gathered, in
        // the order the client asked.
        if !matches!(msg, Message::Send { .. } | Message::Say { .. }) {
            self.flush(relays);
        }
        let numbered = Numbered { cx, seq };
        match msg {
            Message::Send { text } => match self.lobby(hub) {
                Some(room) => self.post(numbered, room, text, relays),
                None => self.unsent(numbered, Refusal::NotInRoom, LOBBY, "you left the lobby"),
            },
            Message::Say { room, text } => match self.find(&room, config) {
                Some(found) => self.post(numbered, found, text, relays),
                None => self.unsent(
                    numbered,
                    Refusal::NotInRoom,
                    &room,
                    "you are not in that room",
                ),
            },
            Message::Tell { name, text } => self.tell(numbered, config, &name, text),
            Message::Resume {
                conversation,
                after,
                limit,
            } => self.read(cx, conversation, Request::After { after, limit }),
            Message::Recent {
                conversation,
                count,
            } => self.read(cx, conversation, Request::Last { count }),
            Message::Nick { name } if self.naming => self.name(cx, &name),
            Message::Nick { name } => self.rename(cx, &name),
            Message::Join { room } => self.join(hub, config, &room),
            Message::Part { room } => self.part(config, &room, hub),
            Message::Who { room } => self.who(hub, config, &room),
            Message::ListRooms => {
                let codecs = hub.codecs();
                let mut buf = BytesMut::new();
                roster::rooms(&codecs.rooms, codecs.limit, &hub.list(), &mut buf);
                self.push(buf.freeze())
            }
            other => {
                debug!(peer = %self.peer.addr, "ignored: {}", other.name());
                Ok(())
            }
        }
    }

    /// The lobby, if the client is in it.
    fn lobby(&self, hub: &Hub) -> Option<&Arc<Room>> {
        // The lobby, if in it, is almost always first.
        self.rooms
            .iter()
            .map(Membership::room)
            .find(|room| Arc::ptr_eq(room, hub.lobby()))
    }

    /// The room `raw` names, if the client is in it.
    fn find(&self, raw: &str, config: &Config) -> Option<&Arc<Room>> {
        // As the room spells itself (the usual case): no need to parse.
        let rooms = || self.rooms.iter().map(Membership::room);
        if let Some(room) = rooms().find(|r| &*r.name == raw) {
            return Some(room);
        }
        let name = Name::parse(raw, config.max_room_chars).ok()?;
        rooms().find(|r| *r.key == *name.key())
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.rooms.iter().position(|m| &*m.room().key == key)
    }

    /// Encodes `text` from this client for `room`, behind what is
    /// gathered (handing that over first if it is for another room).
    fn gather(
        &self,
        hub: &Hub,
        room: &Arc<Room>,
        text: String,
        relays: &mut Relays,
    ) -> Result<(), Stop> {
        if !relays.room.as_ref().is_some_and(|r| Arc::ptr_eq(r, room)) {
            self.flush(relays);
            // Which kinds to encode for is decided once per buffer: a
            // member that arrives meanwhile arrived after these relays.
            let (want_relay, want_said) = room.kinds();
            relays.want_relay = want_relay;
            relays.room = Some(room.clone());
            relays.template = want_said.then(|| Message::Said {
                room: room.name.to_string(),
                from: Member {
                    name: self.peer.name().to_string(),
                    ip: self.peer.addr.ip(),
                    port: self.peer.addr.port(),
                },
                text: String::new(),
            });
            let hint = relays.hint;
            for (want, buf) in [
                (relays.want_relay, &mut relays.relay),
                (want_said, &mut relays.said),
            ] {
                if want && buf.capacity() == 0 {
                    buf.reserve(hint);
                }
            }
        }
        let codecs = hub.codecs();
        let mut text = text;
        if let Some(said) = &mut relays.template {
            // Lend the text to the template rather than build a `Said`
            // (two more strings) per relay.
            swap_text(said, &mut text);
            if let Err(e) = codecs.rooms.encode(said, &mut relays.said) {
                debug!(peer = %self.peer.addr, "Said not relayed: {e}");
            }
            swap_text(said, &mut text);
        }
        if relays.want_relay {
            let relay = Message::relay(self.peer.addr, text);
            // The machine's inbound limit leaves room for the relay's
            // header, so this cannot fail.
            if let Err(e) = codecs.v1.encode(&relay, &mut relays.relay) {
                debug!(peer = %self.peer.addr, "Relay not relayed: {e}");
            }
        }
        Ok(())
    }

    /// Hands what is gathered to its room; the bytes handed (for the busier
    /// kind of recipient). Refused only once the server is shutting down:
    /// the relays then reach no one, never some.
    pub(crate) fn flush(&self, relays: &mut Relays) -> usize {
        // The next buffer looks again at who is in the room.
        let room = relays.room.take();
        let n = relays.len();
        if n == 0 {
            return 0;
        }
        let relay: Bytes = relays.relay.split().freeze();
        let said: Bytes = relays.said.split().freeze();
        if let Some(room) = room {
            room.broadcast(self.peer.id, &relay, &said);
        }
        n
    }

    /// The first `Nick`: the name asked for, or one assigned; then the
    /// lobby. With AUTH at a server that takes no guests, a refusal, and
    /// the client stays unnamed.
    fn name(&mut self, cx: &Scope<'_>, raw: &str) -> Result<(), Stop> {
        let (hub, config) = (cx.hub, cx.config);
        if self.peer.auth && !config.guests {
            let detail = "this server takes no guests: register or log in";
            return self.refuse(hub, Refusal::AuthRequired, raw, detail);
        }
        let dir = hub.directory();
        let refusal = match Name::parse(raw, config.max_name_chars) {
            Ok(name) if cx.registered(&name) => Some((Refusal::NameReserved, reserved(&name))),
            Ok(name) => match dir.claim(&self.peer, label(&name)) {
                Ok(_) => None,
                Err(_) => Some((Refusal::NameTaken, taken(&name))),
            },
            // Nothing asked for: the server picks, without a word.
            Err(NameError::Empty) if raw.is_empty() => {
                dir.assign(&self.peer);
                None
            }
            Err(e) => Some((Refusal::NameInvalid, e.to_string())),
        };
        if let Some((code, detail)) = refusal {
            self.refuse(hub, code, raw, &detail)?;
            dir.assign(&self.peer);
        }
        self.named(hub)
    }

    /// Named (by the directory already): says so, and enters the lobby.
    fn named(&mut self, hub: &Hub) -> Result<(), Stop> {
        self.naming = false;
        self.reply(
            hub,
            &Message::Named {
                name: self.peer.name().to_string(),
            },
        )?;
        self.enter_lobby(hub)
    }

    /// A later `Nick`. An account keeps its name; a registered name is its
    /// account's alone.
    fn rename(&mut self, cx: &Scope<'_>, raw: &str) -> Result<(), Stop> {
        let (hub, config) = (cx.hub, cx.config);
        let name = match Name::parse(raw, config.max_name_chars) {
            Ok(name) => name,
            Err(e) => return self.refuse(hub, Refusal::NameInvalid, raw, &e.to_string()),
        };
        let logged_in = self.peer.token().is_some();
        if logged_in && name.key() != &*self.peer.label().key {
            let detail = format!(
                "you are logged in as {}: an account keeps its name",
                self.peer.name()
            );
            return self.refuse(hub, Refusal::NameReserved, raw, &detail);
        }
        if !logged_in && cx.registered(&name) {
            return self.refuse(hub, Refusal::NameReserved, raw, &reserved(&name));
        }
        if name.as_str() == &*self.peer.name() {
            // No change: the requester alone hears so.
            let member = self.peer.member();
            let old = member.name.clone();
            return self.reply(hub, &Message::Renamed { old, member });
        }
        let rooms = self.rooms.iter().map(Membership::room);
        match hub.rename(&self.peer, label(&name), rooms) {
            Ok(_) => Ok(()),
            Err(_) => self.refuse(hub, Refusal::NameTaken, raw, &taken(&name)),
        }
    }

    fn join(&mut self, hub: &Hub, config: &Config, raw: &str) -> Result<(), Stop> {
        let name = match Name::parse(raw, config.max_room_chars) {
            Ok(name) => name,
            Err(e) => return self.refuse(hub, Refusal::RoomInvalid, raw, &room_error(e)),
        };
        if let Some(i) = self.position(name.key()) {
            let room = self.rooms[i].room().clone();
            return self.roster(&room);
        }
        if self.rooms.len() >= config.max_rooms {
            let detail = format!("you are in {} rooms, the most allowed", config.max_rooms);
            return self.refuse(hub, Refusal::TooManyRooms, raw, &detail);
        }
        match hub.join(&name, &self.peer, config.room_members) {
            Ok(member) => {
                // A client is in few rooms, most of the time for long.
                self.rooms.reserve_exact(1);
                self.rooms.push(member);
                self.unsent = true;
                Ok(())
            }
            Err(Refused::Full) => {
                let detail = format!(
                    "{} has {} members, the most allowed",
                    name, config.room_members
                );
                self.refuse(hub, Refusal::RoomFull, raw, &detail)
            }
            Err(Refused::Already) => match hub.find(name.key()) {
                Some(room) => self.roster(&room),
                None => Ok(()),
            },
            Err(Refused::Closed | Refused::Removed) => Err(Stop::Shutdown),
        }
    }

    fn part(&mut self, config: &Config, raw: &str, hub: &Hub) -> Result<(), Stop> {
        let found = match Name::parse(raw, config.max_room_chars) {
            Ok(name) => self.position(name.key()),
            Err(_) => None,
        };
        match found {
            Some(i) => {
                self.rooms.remove(i).part();
                Ok(())
            }
            None => self.refuse(hub, Refusal::NotInRoom, raw, "you are not in that room"),
        }
    }

    fn tell(
        &mut self,
        numbered: Numbered<'_>,
        config: &Config,
        raw: &str,
        text: String,
    ) -> Result<(), Stop> {
        let hub = numbered.cx.hub;
        // Whatever the length limit: a `guest-N` may be longer.
        let to = Name::parse(raw, usize::MAX)
            .ok()
            .and_then(|name| hub.directory().find(name.key()));
        let Some(to) = to else {
            return self.unsent(numbered, Refusal::NoSuchName, raw, "nobody has that name");
        };
        if !to.rooms {
            let detail = "that client speaks version 1 of the protocol, without direct messages";
            return self.unsent(numbered, Refusal::CannotReceive, raw, detail);
        }
        if !self.tells.take(config.tell_rate) {
            let detail = "too many direct messages too fast; this one was not delivered";
            return self.unsent(numbered, Refusal::RateLimited, raw, detail);
        }
        if let Some(history) = numbered.cx.history {
            let submitted = history.tell(&self.peer, numbered.seq, &to, text);
            return self.submitted(numbered, raw, submitted);
        }
        let told = Message::Told {
            from: self.peer.member(),
            text,
        };
        let mut buf = BytesMut::new();
        match hub.codecs().rooms.encode(&told, &mut buf) {
            // A full outbox evicts the recipient, not the sender.
            Ok(()) => {
                to.outbox.push(buf.freeze());
                hub.delivered().inc();
            }
            Err(e) => debug!(peer = %self.peer.addr, "Told not sent: {e}"),
        }
        Ok(())
    }

    /// A `Send` or `Say` the client may make in `room`: stored first when
    /// history is on, else gathered for the room.
    fn post(
        &self,
        numbered: Numbered<'_>,
        room: &Arc<Room>,
        text: String,
        relays: &mut Relays,
    ) -> Result<(), Stop> {
        match numbered.cx.history {
            Some(history) => {
                let submitted = history.say(&self.peer, numbered.seq, room, text);
                self.submitted(numbered, &room.name, submitted)
            }
            None => self.gather(numbered.cx.hub, room, text, relays),
        }
    }

    /// Answers a message the journal would not take.
    fn submitted(
        &self,
        numbered: Numbered<'_>,
        subject: &str,
        submitted: Result<(), SubmitError>,
    ) -> Result<(), Stop> {
        match submitted {
            Ok(()) => Ok(()),
            Err(SubmitError::Busy) => {
                let detail = "the server is storing messages more slowly than they come; \
                              this one was not stored, nor sent to anyone";
                self.unsent(numbered, Refusal::Unavailable, subject, detail)
            }
            Err(SubmitError::Closed) => Err(Stop::Shutdown),
        }
    }

    /// Refuses a `Send`, `Say` or `Tell`: `Unstored` in a HISTORY session
    /// (it is numbered), `Refused` otherwise.
    fn unsent(
        &self,
        numbered: Numbered<'_>,
        code: Refusal,
        subject: &str,
        detail: &str,
    ) -> Result<(), Stop> {
        let Some(msg) = history::unsent(&self.peer, numbered.seq, code, subject, detail) else {
            // Sessions stop reading well before the history queue is full
            // (see `History::full`); a version 1 client cannot be told.
            warn!(peer = %self.peer.addr, %code, "a message was dropped: {detail}");
            return Ok(());
        };
        self.settle();
        debug!(peer = %self.peer.addr, %code, subject, "not sent: {detail}");
        self.reply_in(
            history::codec_for(&self.peer, numbered.cx.hub.codecs()),
            &msg,
        )
    }

    /// Answers `Resume` or `Recent` with a `Page` (or a `Refused`).
    fn read(
        &self,
        cx: &Scope<'_>,
        conversation: Conversation,
        request: Request,
    ) -> Result<(), Stop> {
        let (hub, config) = (cx.hub, cx.config);
        let Some(history) = cx.history else {
            // The machine lets these through only with HISTORY in force,
            // which the server offers only with history on.
            return Ok(());
        };
        let topic = match &conversation {
            Conversation::Room(raw) => match self.find(raw, config) {
                Some(room) => Topic::room(&*room.key),
                None => {
                    return self.refuse(hub, Refusal::NotInRoom, raw, "you are not in that room");
                }
            },
            Conversation::Direct(raw) => match Name::parse(raw, usize::MAX) {
                Ok(name) => Topic::direct(&*self.peer.label().key, name.key()),
                Err(e) => {
                    let detail = format!("not a valid name: {e}");
                    return self.refuse(hub, Refusal::NoSuchName, raw, &detail);
                }
            },
        };
        let codec = &hub.codecs().history;
        let subject = conversation.name().to_owned();
        match history.page(conversation, &topic, request, codec.max_frame_len()) {
            Ok(page) => {
                self.settle();
                self.reply_in(codec, &page)
            }
            Err(e) => {
                warn!(peer = %self.peer.addr, "history not read: {e}");
                let detail = format!("history could not be read: {e}");
                self.refuse(hub, Refusal::Unavailable, &subject, &detail)
            }
        }
    }

    fn who(&mut self, hub: &Hub, config: &Config, raw: &str) -> Result<(), Stop> {
        let name = match Name::parse(raw, config.max_room_chars) {
            Ok(name) => name,
            Err(e) => return self.refuse(hub, Refusal::RoomInvalid, raw, &room_error(e)),
        };
        match hub.find(name.key()) {
            Some(room) => self.roster(&room),
            None => self.refuse(hub, Refusal::NoSuchRoom, raw, "no room has that name"),
        }
    }

    fn roster(&self, room: &Room) -> Result<(), Stop> {
        self.settle();
        if room.roster_to(&self.peer) {
            Ok(())
        } else {
            Err(Stop::Evicted)
        }
    }

    /// Sends now the batches of the rooms whose rosters this client has
    /// not been sent yet, in the order it joined them.
    fn settle(&self) {
        if self.unsent {
            for member in &self.rooms {
                member.room().flush_presence();
            }
        }
    }

    /// Tells the client a request was not carried out (`Refused`), in its
    /// place among the rest; the connection stays open.
    pub(crate) fn refuse(
        &self,
        hub: &Hub,
        code: Refusal,
        subject: &str,
        detail: &str,
    ) -> Result<(), Stop> {
        self.settle();
        debug!(peer = %self.peer.addr, %code, subject, "refused: {detail}");
        let refused = Message::Refused {
            code,
            subject: subject.to_owned(),
            detail: detail.to_owned(),
        };
        self.reply(hub, &refused)
    }

    /// Sends `msg` to this client alone, in its place among the rest.
    fn reply(&self, hub: &Hub, msg: &Message) -> Result<(), Stop> {
        self.reply_in(&hub.codecs().rooms, msg)
    }

    /// [`reply`](Client::reply) with `codec`'s limit.
    fn reply_in(&self, codec: &ChatCodec, msg: &Message) -> Result<(), Stop> {
        let mut buf = BytesMut::new();
        if let Err(e) = codec.encode(msg, &mut buf) {
            // Only a subject as long as the client's own frame could be
            // too long: the client is told without it.
            debug!(peer = %self.peer.addr, "{} too long: {e}", msg.name());
            return Ok(());
        }
        self.push(buf.freeze())
    }

    fn push(&self, bytes: Bytes) -> Result<(), Stop> {
        if self.peer.outbox.push(bytes) {
            Ok(())
        } else {
            Err(Stop::Evicted)
        }
    }

    /// Leaves every room (each hears it), gives up the name, and closes
    /// the outbox to later pushes. Returns the peer, whose outbox may still
    /// be drained.
    pub(crate) fn leave(self) -> Arc<Peer> {
        self.peer.clone()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Last joined, first left: the lobby's `Departed` goes last.
        while let Some(member) = self.rooms.pop() {
            drop(member);
        }
        self.directory.release(&self.peer);
        self.peer.outbox.close();
    }
}

/// Swaps `text` with the text of `said`, a `Said`.
fn swap_text(said: &mut Message, text: &mut String) {
    if let Message::Said { text: slot, .. } = said {
        std::mem::swap(slot, text);
    }
}

fn label(name: &Name) -> Label {
    Label::new(name.as_str(), name.key())
}

fn taken(name: &Name) -> String {
    format!("another client is called {name}")
}

fn reserved(name: &Name) -> String {
    format!("{name} is a registered name: log in to use it")
}

fn room_error(e: NameError) -> String {
    format!("not a valid room name: {e}")
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use chat_proto::{ChatCodec, ServerConfig, features};

    use super::*;
    use crate::hub::PresencePolicy;
    use crate::outbox::Outbox;
    use crate::peer::PeerId;
    use crate::presence::Codecs;

    fn hub() -> Hub {
        Hub::new(PresencePolicy {
            enabled: true,
            delay: Duration::from_millis(10),
            batch: 16 * 1024,
            codecs: Codecs {
                v1: ChatCodec::new(),
                rooms: ServerConfig::default().outbound_for(features::ROOMS),
                history: ServerConfig::default().outbound_for(features::ROOMS | features::HISTORY),
                limit: chat_proto::MAX_FRAME_LEN,
            },
        })
    }

    fn client(hub: &Hub, n: u16, rooms: bool) -> Client {
        let addr = SocketAddr::from(([127, 0, 0, 1], n));
        let outbox = Outbox::new(64, usize::MAX);
        let peer = Arc::new(Peer::new(PeerId::new(n.into()), addr, rooms, outbox));
        Client::new(hub, &Config::default(), peer).unwrap()
    }

    fn ask(hub: &Hub, c: &mut Client, msg: Message) {
        let mut relays = Relays::default();
        let config = Config::default();
        let cx = Scope {
            hub,
            history: None,
            config: &config,
            accounts: None,
        };
        c.handle(&cx, msg, 0, &mut relays).unwrap();
        c.flush(&mut relays);
    }

    fn drain(c: &Client) -> Vec<Message> {
        let mut got = Vec::new();
        c.peer.outbox.drain_into(&mut got, usize::MAX).unwrap();
        let mut bytes = BytesMut::from(&got.concat()[..]);
        let codec = ServerConfig::default().outbound_for(features::ROOMS);
        std::iter::from_fn(|| codec.decode(&mut bytes).unwrap()).collect()
    }

    fn rostered(msgs: &[Message]) -> Vec<&str> {
        msgs.iter()
            .map(|m| match m {
                Message::Roster { room, .. } => room.as_str(),
                Message::Named { .. } => "(named)",
                other => other.name(),
            })
            .collect()
    }

    /// Answers come in the order asked: the lobby's roster (the
    /// handshake's) before a room's joined at once, and that before the
    /// next answer. (They went out in whichever order the pacer flushed the
    /// rooms in: a client could get the room's roster first.)
    #[test]
    fn rosters_come_in_the_order_asked() {
        let hub = hub();
        let mut a = client(&hub, 1, true);
        ask(&hub, &mut a, Message::Nick { name: "a".into() });
        ask(&hub, &mut a, Message::Join { room: "x".into() });
        ask(&hub, &mut a, Message::Join { room: "y".into() });
        assert_eq!(rostered(&drain(&a)), ["(named)"], "joins are batched");
        ask(
            &hub,
            &mut a,
            Message::Who {
                room: "lobby".into(),
            },
        );
        assert_eq!(rostered(&drain(&a)), ["lobby", "x", "y", "lobby"]);
        // The pacer sends batches in the order they started, whatever
        // order the rooms are kept in.
        for n in 0..20 {
            let mut b = client(&hub, 10 + n, true);
            ask(
                &hub,
                &mut b,
                Message::Nick {
                    name: String::new(),
                },
            );
            let rooms: Vec<String> = (0..5).map(|i| format!("r{n}-{i}")).collect();
            for room in &rooms {
                ask(&hub, &mut b, Message::Join { room: room.clone() });
            }
            hub.flush_all();
            let got = drain(&b);
            let mut expected = vec!["(named)", "lobby"];
            expected.extend(rooms.iter().map(String::as_str));
            assert_eq!(rostered(&got), expected);
        }
    }

    #[test]
    fn a_version_1_client_is_named_but_cannot_be_told() {
        let hub = hub();
        let v = client(&hub, 1, false);
        let mut a = client(&hub, 2, true);
        ask(
            &hub,
            &mut a,
            Message::Nick {
                name: String::new(),
            },
        );
        drain(&a);
        let name = v.peer.name().to_string();
        assert!(name.starts_with("guest-"));
        ask(
            &hub,
            &mut a,
            Message::Tell {
                name: name.to_uppercase(),
                text: "hi".into(),
            },
        );
        let got = drain(&a);
        assert!(
            matches!(
                &got[..],
                [Message::Roster { .. }, Message::Refused { code: Refusal::CannotReceive, subject, .. }]
                    if *subject == name.to_uppercase()
            ),
            "{got:?}"
        );
    }

    #[test]
    fn the_same_name_again_is_answered_to_the_asker_alone() {
        let hub = hub();
        let mut a = client(&hub, 1, true);
        let mut b = client(&hub, 2, true);
        ask(&hub, &mut a, Message::Nick { name: "Ann".into() });
        ask(&hub, &mut b, Message::Nick { name: "Bo".into() });
        hub.lobby().flush_presence();
        drain(&a);
        drain(&b);
        ask(&hub, &mut a, Message::Nick { name: "Ann".into() });
        let renamed = Message::Renamed {
            old: "Ann".into(),
            member: a.peer.member(),
        };
        assert_eq!(drain(&a), [renamed]);
        assert!(drain(&b).is_empty());
        // A change of case is a rename, heard by the room.
        ask(&hub, &mut a, Message::Nick { name: "ANN".into() });
        assert_eq!(drain(&b).len(), 1);
    }
}
