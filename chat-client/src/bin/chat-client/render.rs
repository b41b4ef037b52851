//! Lines as they are shown: the time of day, then who and where, then the
//! text; coloured by whose line it is when the output is a terminal.

use std::fmt::Write as _;

use chat_client::{Conversation, Entry, Event, Member, Refusal, RoomInfo};

use crate::clock;
use crate::neutral::neutral;
use crate::state::Meaning;

/// Whose line it is, which decides its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Something we said.
    Own,
    /// Something another client said in a room.
    Other,
    /// A direct message, to us or from us.
    Direct,
    /// News from the server or the program: joins, renames, rosters.
    System,
    /// A refusal or an error.
    Error,
}

/// One line to print, before the time and colours are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// Whose line it is.
    pub(crate) kind: Kind,
    /// Where and who (`#lobby <alice>`), coloured; may be empty.
    pub(crate) head: String,
    /// The rest.
    pub(crate) body: String,
    /// For a message from history: the server's time of it (ms since the
    /// Unix epoch), shown instead of now, with the line marked `~` and dim.
    pub(crate) stored: Option<u64>,
}

impl Line {
    pub(crate) fn new(kind: Kind, head: impl Into<String>, body: impl Into<String>) -> Line {
        Line {
            kind,
            head: head.into(),
            body: body.into(),
            stored: None,
        }
    }

    /// This line as a message from history, stored at `at`.
    pub(crate) fn stored_at(mut self, at: u64) -> Line {
        self.stored = Some(at);
        self
    }

    /// A line of news: `* ...`.
    pub(crate) fn system(body: impl Into<String>) -> Line {
        Line::new(Kind::System, "", format!("* {}", body.into()))
    }

    /// A line of trouble: `! ...`.
    pub(crate) fn error(body: impl Into<String>) -> Line {
        Line::new(Kind::Error, "", format!("! {}", body.into()))
    }

    /// The line without time or colours (`~ ` first for history).
    pub(crate) fn plain(&self) -> String {
        let mark = if self.stored.is_some() { "~ " } else { "" };
        if self.head.is_empty() {
            format!("{mark}{}", self.body)
        } else {
            format!("{mark}{} {}", self.head, self.body)
        }
    }
}

/// Adds the time, and colours if wanted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Painter {
    /// Whether to use ANSI colours.
    pub(crate) colour: bool,
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

impl Painter {
    /// Colours when `stdout` is a terminal, unless `NO_COLOR` is set to
    /// anything non-empty (<https://no-color.org>) or `TERM` is `dumb`.
    pub(crate) fn for_stdout(terminal: bool) -> Painter {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Painter {
            colour: terminal && !no_color && !dumb,
        }
    }

    /// `HH:MM head body`, coloured; a message from history has its own
    /// time and is dim throughout.
    pub(crate) fn paint(&self, line: &Line) -> String {
        let time = line.stored.map_or_else(clock::now, clock::at);
        if !self.colour {
            return format!("{time} {}", line.plain());
        }
        if line.stored.is_some() {
            return format!("{DIM}{time} {}{RESET}", line.plain());
        }
        let mut out = String::with_capacity(line.head.len() + line.body.len() + 32);
        let _ = write!(out, "{DIM}{time}{RESET} ");
        let (head, body) = match line.kind {
            Kind::Own => ("\x1b[1;32m", ""),
            Kind::Other => ("\x1b[1;36m", ""),
            Kind::Direct => ("\x1b[1;35m", ""),
            Kind::System => ("\x1b[33m", "\x1b[33m"),
            Kind::Error => ("\x1b[1;31m", "\x1b[31m"),
        };
        if !line.head.is_empty() {
            let _ = write!(out, "{head}{}{RESET} ", line.head);
        }
        if body.is_empty() {
            out.push_str(&line.body);
        } else {
            let _ = write!(out, "{body}{}{RESET}", line.body);
        }
        out
    }
}

/// `#room`, neutralised.
pub(crate) fn room(name: &str) -> String {
    format!("#{}", neutral(name))
}

/// A member's name, neutralised.
pub(crate) fn name(member: &Member) -> String {
    neutral(&member.name).into_owned()
}

/// What we said in a room (version 1: `room` is `None`).
pub(crate) fn own(room_name: Option<&str>, me: &str, text: &str) -> Line {
    let head = match room_name {
        Some(r) => format!("{} <{}>", room(r), neutral(me)),
        None => format!("[{}]", neutral(me)),
    };
    Line::new(Kind::Own, head, neutral(text))
}

/// A direct message we sent.
pub(crate) fn own_direct(to: &str, text: &str) -> Line {
    Line::new(Kind::Direct, format!("-> *{}*", neutral(to)), neutral(text))
}

/// A message of a room, live or from history.
pub(crate) fn posted(r: &str, entry: &Entry) -> Line {
    Line::new(
        Kind::Other,
        format!("{} <{}>", room(r), name(&entry.from)),
        neutral(&entry.text),
    )
}

/// A direct message, live or from history; `me` tells ours from theirs
/// (a page of a direct conversation has both).
pub(crate) fn direct(with: &str, entry: &Entry, me: Option<&str>) -> Line {
    if me.is_some_and(|me| same(me, &entry.from.name)) && !same(with, &entry.from.name) {
        own_direct(with, &entry.text)
    } else {
        Line::new(
            Kind::Direct,
            format!("*{}*", name(&entry.from)),
            neutral(&entry.text),
        )
    }
}

/// A page of history: its messages, marked as such, after a line saying
/// that the earlier ones are gone if they are.
pub(crate) fn page(
    conversation: &Conversation,
    entries: &[Entry],
    missing: bool,
    me: Option<&str>,
) -> Vec<Line> {
    let mut lines = Vec::with_capacity(entries.len() + 1);
    if missing {
        lines.push(Line::system(format!(
            "earlier messages {} are no longer available",
            place(conversation)
        )));
    }
    for entry in entries {
        let line = match conversation {
            Conversation::Room(r) => {
                let mut line = posted(r, entry);
                if me.is_some_and(|me| same(me, &entry.from.name)) {
                    line.kind = Kind::Own;
                }
                line
            }
            Conversation::Direct(with) => direct(with, entry, me),
        };
        lines.push(line.stored_at(entry.at));
    }
    lines
}

/// Our message that the server did not store: why, and what it was.
pub(crate) fn unstored(
    conversation: &Conversation,
    code: Refusal,
    detail: &str,
    text: Option<&str>,
) -> Line {
    let mut body = format!("not sent {}: {code}", place(conversation));
    if !detail.is_empty() && detail != code.to_string() {
        let _ = write!(body, " ({})", neutral(detail));
    }
    if let Some(text) = text {
        let _ = write!(body, ": {}", neutral(text));
    }
    Line::error(body)
}

/// `in #room`, or `with NAME`.
fn place(conversation: &Conversation) -> String {
    match conversation {
        Conversation::Room(r) => format!("in {}", room(r)),
        Conversation::Direct(n) => format!("with {}", neutral(n)),
    }
}

/// Names compare without case, as the server compares them (near enough).
fn same(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// The line for an event, given what it meant for us.
pub(crate) fn event(event: &Event, meaning: &Meaning) -> Line {
    match event {
        Event::Said {
            room: r,
            from,
            text,
        } => Line::new(
            Kind::Other,
            format!("{} <{}>", room(r), name(from)),
            neutral(text),
        ),
        Event::Told { from, text } => {
            Line::new(Kind::Direct, format!("*{}*", name(from)), neutral(text))
        }
        Event::Posted { room: r, entry } => posted(r, entry),
        Event::Direct { entry } => direct(&entry.from.name, entry, None),
        Event::Entered { room: r, member } => {
            Line::system(format!("{} joined {}", name(member), room(r)))
        }
        Event::Departed { room: r, member } => match meaning {
            Meaning::Ours => Line::system(format!("you left {}", room(r))),
            _ => Line::system(format!("{} left {}", name(member), room(r))),
        },
        Event::Renamed { old, member } => match meaning {
            Meaning::Ours if *old == member.name => {
                Line::system(format!("you are already {}", name(member)))
            }
            Meaning::Ours => Line::system(format!("you are now {}", name(member))),
            _ => Line::system(format!("{} is now {}", neutral(old), name(member))),
        },
        Event::Roster { room: r, members } => match meaning {
            Meaning::Joined { me } => joined(r, members, *me),
            _ => roster(r, members),
        },
        Event::Rooms(rooms) => list(rooms),
        Event::Refused {
            code,
            subject,
            detail,
        } => {
            let mut body = format!("{code}: {}", neutral(subject));
            if !detail.is_empty() {
                let _ = write!(body, " ({})", neutral(detail));
            }
            Line::error(body)
        }
        Event::Named(n) => Line::system(format!("the server calls you {}", neutral(n))),
        Event::Message { from, text } => Line::new(Kind::Other, format!("[{from}]"), neutral(text)),
        Event::Joined(who) => Line::system(format!("{who} joined")),
        Event::Left(who) => Line::system(format!("{who} left")),
        Event::ServerError(reason) => Line::error(format!("server error: {}", neutral(reason))),
        Event::ServerExit => Line::system("the server is shutting down"),
        // A kind of event added to the library later.
        other => Line::system(neutral(&format!("{other:?}"))),
    }
}

/// The answer to our join: who else is there.
fn joined(r: &str, members: &[Member], me: std::net::SocketAddr) -> Line {
    let others: Vec<String> = members
        .iter()
        .filter(|m| m.addr() != me)
        .map(name)
        .collect();
    if others.is_empty() {
        Line::system(format!("you are in {} (nobody else is here)", room(r)))
    } else {
        Line::system(format!("you are in {} with {}", room(r), others.join(", ")))
    }
}

/// The answer to `/who`: names and addresses.
fn roster(r: &str, members: &[Member]) -> Line {
    let listed: Vec<String> = members
        .iter()
        .map(|m| format!("{} [{}]", name(m), m.addr()))
        .collect();
    let count = match members.len() {
        1 => "1 member".to_owned(),
        n => format!("{n} members"),
    };
    Line::system(format!("{} has {count}: {}", room(r), listed.join(", ")))
}

/// The answer to `/rooms`.
fn list(rooms: &[RoomInfo]) -> Line {
    let listed: Vec<String> = rooms
        .iter()
        .map(|r| format!("{} ({})", room(&r.name), r.members))
        .collect();
    match rooms.len() {
        0 => Line::system("no rooms"),
        1 => Line::system(format!("1 room: {}", listed.join(", "))),
        n => Line::system(format!("{n} rooms: {}", listed.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, port: u16) -> Member {
        Member::new(name, ([127, 0, 0, 1], port).into())
    }

    #[test]
    fn lines() {
        let alice = member("alice", 4000);
        let said = Event::Said {
            room: "lobby".into(),
            from: alice.clone(),
            text: "hello".into(),
        };
        assert_eq!(
            event(&said, &Meaning::Other).plain(),
            "#lobby <alice> hello"
        );
        let told = Event::Told {
            from: alice.clone(),
            text: "hi".into(),
        };
        assert_eq!(event(&told, &Meaning::Other).plain(), "*alice* hi");
        let entered = Event::Entered {
            room: "lobby".into(),
            member: member("bob", 4001),
        };
        assert_eq!(
            event(&entered, &Meaning::Other).plain(),
            "* bob joined #lobby"
        );
        let who = Event::Roster {
            room: "rust".into(),
            members: vec![alice.clone(), member("bob", 4001)],
        };
        assert_eq!(
            event(&who, &Meaning::Other).plain(),
            "* #rust has 2 members: alice [127.0.0.1:4000], bob [127.0.0.1:4001]"
        );
        assert_eq!(
            event(&who, &Meaning::Joined { me: alice.addr() }).plain(),
            "* you are in #rust with bob"
        );
        assert_eq!(own(Some("lobby"), "me", "hi").plain(), "#lobby <me> hi");
        let entry = |id, from: &Member, text: &str| Entry {
            id,
            prev: id - 1,
            at: 1_764_892_800_000,
            from: from.clone(),
            text: text.into(),
        };
        let lines = page(
            &Conversation::Room("rust".into()),
            &[
                entry(2, &alice, "old"),
                entry(3, &member("me", 4002), "mine"),
            ],
            true,
            Some("me"),
        );
        let plain: Vec<String> = lines.iter().map(Line::plain).collect();
        assert_eq!(
            plain,
            [
                "* earlier messages in #rust are no longer available",
                "~ #rust <alice> old",
                "~ #rust <me> mine"
            ]
        );
        assert_eq!(lines[2].kind, Kind::Own);
        let dm = page(
            &Conversation::Direct("alice".into()),
            &[
                entry(5, &alice, "hi"),
                entry(6, &member("me", 4002), "hello"),
            ],
            false,
            Some("me"),
        );
        let plain: Vec<String> = dm.iter().map(Line::plain).collect();
        assert_eq!(plain, ["~ *alice* hi", "~ -> *alice* hello"]);
        assert_eq!(
            unstored(
                &Conversation::Room("rust".into()),
                Refusal::NotInRoom,
                "you are not in rust",
                Some("hi")
            )
            .plain(),
            "! not sent in #rust: not in that room (you are not in rust): hi"
        );
        assert_eq!(own_direct("bob", "psst").plain(), "-> *bob* psst");
    }

    #[test]
    fn others_cannot_drive_the_terminal() {
        let sneaky = Event::Said {
            room: "lobby".into(),
            from: member("eve\u{202E}", 4000),
            text: "abc\u{202E}fed\x1b[2J\nnext".into(),
        };
        assert_eq!(
            event(&sneaky, &Meaning::Other).plain(),
            "#lobby <eve\\u{202e}> abc\\u{202e}fed\\u{1b}[2J\\nnext"
        );
        let v1 = Event::Message {
            from: "127.0.0.1:3075".parse().unwrap(),
            text: "two\nlines\u{1b}[2J 你好".into(),
        };
        assert_eq!(
            event(&v1, &Meaning::Other).plain(),
            "[127.0.0.1:3075] two\\nlines\\u{1b}[2J 你好"
        );
    }

    #[test]
    fn colours_only_when_asked() {
        let line = own(Some("lobby"), "me", "hi");
        let plain = Painter { colour: false }.paint(&line);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        assert!(plain.ends_with(" #lobby <me> hi"), "{plain:?}");
        let coloured = Painter { colour: true }.paint(&line);
        assert!(
            coloured.contains("\x1b[1;32m#lobby <me>\x1b[0m hi"),
            "{coloured:?}"
        );
    }
}
