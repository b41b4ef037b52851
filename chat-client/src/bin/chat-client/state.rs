//! Where we are: our name, the rooms we are in and the current room. Kept
//! across reconnections, so a new session can ask for the same name and
//! rooms again.

use std::net::SocketAddr;

use chat_client::{Event, Member, Refusal};

use crate::ui::PromptText;

/// The room every client starts in.
pub(crate) const LOBBY: &str = "lobby";

/// What an event meant for us, beyond its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// A roster answering our join (or, after connecting, the lobby's).
    Joined {
        /// Our address, to leave us out of the list.
        me: SocketAddr,
    },
    /// It concerns us: we departed, or we were renamed.
    Ours,
    /// Anything else.
    Other,
}

/// Our name and rooms, as the server last told us.
#[derive(Debug)]
pub(crate) struct State {
    /// Our address in the current session (`None` while disconnected).
    me: Option<SocketAddr>,
    /// Whether to show `(offline)`: the connection was lost.
    offline: bool,
    /// Whether the session has names and rooms.
    pub(crate) rooms_on: bool,
    /// Our name: what to ask for when connecting again.
    pub(crate) name: Option<String>,
    /// The rooms we are in, in the order we entered them.
    pub(crate) rooms: Vec<String>,
    /// Where a plain line goes.
    pub(crate) current: Option<String>,
    /// Rooms we asked to join and have no answer for yet (folded), and
    /// whether the answer makes the room current.
    joining: Vec<(String, bool)>,
    prompt: PromptText,
}

impl State {
    pub(crate) fn new(name: Option<String>, prompt: PromptText) -> State {
        let state = State {
            me: None,
            // The first connection is made before the prompt shows.
            offline: false,
            rooms_on: true,
            name,
            rooms: Vec::new(),
            current: Some(LOBBY.to_owned()),
            joining: Vec::new(),
            prompt,
        };
        state.show();
        state
    }

    /// A session began: we are `me`, called `name`, in no room until the
    /// lobby's roster arrives. Returns the rooms to join again (all we were
    /// in) and whether to leave the lobby (we had left it).
    pub(crate) fn connected(
        &mut self,
        me: SocketAddr,
        name: Option<String>,
        rooms_on: bool,
    ) -> (Vec<String>, bool) {
        self.me = Some(me);
        self.offline = false;
        self.rooms_on = rooms_on;
        self.joining.clear();
        if !rooms_on {
            self.show();
            return (Vec::new(), false);
        }
        self.name = name;
        let before = std::mem::take(&mut self.rooms);
        // The first session, or one where we had left every room: the lobby.
        let part_lobby = !before.is_empty() && !before.iter().any(|r| same(r, LOBBY));
        let again: Vec<String> = before.into_iter().filter(|r| !same(r, LOBBY)).collect();
        for room in &again {
            self.joining.push((fold(room), false));
        }
        self.show();
        (again, part_lobby)
    }

    /// The session ended; the rooms are remembered for the next one.
    pub(crate) fn disconnected(&mut self) {
        self.me = None;
        self.offline = true;
        self.show();
    }

    /// Whether `member` is us.
    pub(crate) fn is_me(&self, member: &Member) -> bool {
        self.me == Some(member.addr())
    }

    /// We asked to join `room`; its roster will make it current.
    pub(crate) fn asked_to_join(&mut self, room: &str) {
        self.joining.push((fold(room), true));
    }

    /// Takes in what `event` says about us.
    pub(crate) fn apply(&mut self, event: &Event) -> Meaning {
        let meaning = self.meaning(event);
        self.show();
        meaning
    }

    fn meaning(&mut self, event: &Event) -> Meaning {
        match event {
            Event::Roster { room, members } => {
                let Some(me) = self.me.filter(|me| members.iter().any(|m| m.addr() == *me)) else {
                    return Meaning::Other;
                };
                let key = fold(room);
                let asked = self.joining.iter().position(|(k, _)| *k == key);
                let switch = asked.map(|i| self.joining.remove(i).1);
                let new = !self.rooms.iter().any(|r| same(r, room));
                if new {
                    self.rooms.push(room.clone());
                }
                if switch == Some(true) || self.current.is_none() {
                    self.current = Some(room.clone());
                }
                if new || asked.is_some() {
                    Meaning::Joined { me }
                } else {
                    // `/who` for a room we are in.
                    Meaning::Other
                }
            }
            Event::Departed { room, member } if self.is_me(member) => {
                self.rooms.retain(|r| !same(r, room));
                if self.current.as_deref().is_some_and(|c| same(c, room)) {
                    self.current = self
                        .rooms
                        .iter()
                        .find(|r| same(r, LOBBY))
                        .or(self.rooms.last())
                        .cloned();
                }
                Meaning::Ours
            }
            Event::Renamed { member, .. } if self.is_me(member) => {
                self.name = Some(member.name.clone());
                Meaning::Ours
            }
            Event::Named(name) => {
                self.name = Some(name.clone());
                Meaning::Ours
            }
            Event::Refused {
                code: Refusal::RoomInvalid | Refusal::TooManyRooms | Refusal::RoomFull,
                subject,
                ..
            } => {
                // A refused join: stop waiting for its roster.
                let key = fold(subject);
                self.joining.retain(|(k, _)| *k != key);
                Meaning::Other
            }
            _ => Meaning::Other,
        }
    }

    /// Puts where we are in the prompt.
    fn show(&self) {
        let mut text = String::new();
        if self.offline {
            text.push_str("(offline) ");
        }
        if self.rooms_on {
            match &self.current {
                Some(room) => {
                    text.push('#');
                    text.push_str(&crate::neutral::neutral(room));
                }
                None => text.push_str("(no room)"),
            }
        }
        text.push_str("> ");
        self.prompt.set(text);
    }
}

/// Room and name comparison as the server does it, near enough: case does
/// not matter.
fn fold(name: &str) -> String {
    name.to_lowercase()
}

fn same(a: &str, b: &str) -> bool {
    fold(a) == fold(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, port: u16) -> Member {
        Member::new(name, ([127, 0, 0, 1], port).into())
    }

    fn roster(room: &str, members: &[&Member]) -> Event {
        Event::Roster {
            room: room.into(),
            members: members.iter().map(|m| (*m).clone()).collect(),
        }
    }

    #[test]
    fn joins_parts_and_reconnects() {
        let prompt = PromptText::default();
        let mut state = State::new(Some("me".into()), prompt.clone());
        assert_eq!(prompt.get(), "#lobby> ");
        let me = member("me", 5000);
        let bob = member("bob", 5001);
        assert_eq!(
            state.connected(me.addr(), Some("me".into()), true),
            (vec![], false)
        );
        let lobby = roster("lobby", &[&bob, &me]);
        assert_eq!(state.apply(&lobby), Meaning::Joined { me: me.addr() });
        assert_eq!(prompt.get(), "#lobby> ");
        // `/who lobby`: not a join.
        assert_eq!(state.apply(&lobby), Meaning::Other);

        state.asked_to_join("Rust");
        assert_eq!(
            state.apply(&roster("rust", &[&me])),
            Meaning::Joined { me: me.addr() }
        );
        assert_eq!(state.current.as_deref(), Some("rust"));
        assert_eq!(prompt.get(), "#rust> ");
        // Someone else's roster is a `/who`.
        assert_eq!(state.apply(&roster("go", &[&bob])), Meaning::Other);

        // Leaving the current room falls back to the lobby.
        let part = Event::Departed {
            room: "rust".into(),
            member: me.clone(),
        };
        assert_eq!(state.apply(&part), Meaning::Ours);
        assert_eq!(state.current.as_deref(), Some("lobby"));
        state.asked_to_join("rust");
        state.apply(&roster("rust", &[&me]));
        state.apply(&Event::Departed {
            room: "lobby".into(),
            member: me.clone(),
        });
        assert_eq!(state.rooms, ["rust"]);

        // A new session: rooms again, the lobby left again, rust stays current.
        state.disconnected();
        assert_eq!(prompt.get(), "(offline) #rust> ");
        let me2 = member("me", 6000);
        assert_eq!(
            state.connected(me2.addr(), Some("me".into()), true),
            (vec!["rust".to_owned()], true)
        );
        state.apply(&roster("lobby", &[&me2]));
        state.apply(&roster("rust", &[&me2]));
        assert_eq!(state.current.as_deref(), Some("rust"));
        state.apply(&Event::Departed {
            room: "lobby".into(),
            member: me2.clone(),
        });
        assert_eq!(state.rooms, ["rust"]);
        state.apply(&Event::Departed {
            room: "rust".into(),
            member: me2.clone(),
        });
        assert_eq!(state.current, None);
        assert_eq!(prompt.get(), "(no room)> ");
    }

    #[test]
    fn a_refused_join_changes_nothing() {
        let mut state = State::new(None, PromptText::default());
        let me = member("me", 5000);
        state.connected(me.addr(), Some("me".into()), true);
        state.apply(&roster("lobby", &[&me]));
        state.asked_to_join("full");
        let refused = Event::Refused {
            code: Refusal::RoomFull,
            subject: "full".into(),
            detail: String::new(),
        };
        assert_eq!(state.apply(&refused), Meaning::Other);
        // A later `/who full` that lists us is not taken for the join.
        let bob = member("bob", 5001);
        assert_eq!(state.apply(&roster("full", &[&bob])), Meaning::Other);
        assert_eq!(state.current.as_deref(), Some("lobby"));
        assert_eq!(state.rooms, ["lobby"]);
    }

    #[test]
    fn renames() {
        let mut state = State::new(None, PromptText::default());
        let me = member("guest-1", 5000);
        state.connected(me.addr(), Some("guest-1".into()), true);
        let renamed = Event::Renamed {
            old: "guest-1".into(),
            member: member("小明", 5000),
        };
        assert_eq!(state.apply(&renamed), Meaning::Ours);
        assert_eq!(state.name.as_deref(), Some("小明"));
        let other = Event::Renamed {
            old: "a".into(),
            member: member("b", 5001),
        };
        assert_eq!(state.apply(&other), Meaning::Other);
        assert_eq!(state.name.as_deref(), Some("小明"));
    }
}
