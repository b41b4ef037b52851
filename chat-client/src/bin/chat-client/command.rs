//! What a line of input means.

/// One line of input, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Say this text in the current room (to everyone, on a version 1 server).
    Say(String),
    /// Ask for this name.
    Nick(String),
    /// Join this room (and make it the current one).
    Join(String),
    /// Leave this room, or the current one.
    Part(Option<String>),
    /// List the rooms.
    Rooms,
    /// Show who is in this room, or the current one.
    Who(Option<String>),
    /// Send a direct message.
    Msg {
        /// The recipient's name.
        to: String,
        /// The text.
        text: String,
    },
    /// Show the last N messages of the current room (`None`: the default).
    History(Option<u32>),
    /// Leave the chat.
    Leave,
    /// Log out (the saved token stops working) and leave.
    Logout,
    /// Show the commands.
    Help,
    /// Nothing to do (an empty line).
    Nothing,
    /// A mistake to report; nothing is sent.
    Invalid(String),
}

/// Interprets one line (without its line ending).
pub(crate) fn parse(line: &str) -> Input {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Input::Nothing;
    }
    match trimmed {
        "exit;" | "/quit" | "/exit" => return Input::Leave,
        "/help" => return Input::Help,
        "/logout" => return Input::Logout,
        "/rooms" => return Input::Rooms,
        "/history" => return Input::History(None),
        _ => {}
    }
    if let Some(text) = line.trim_start().strip_prefix("send:") {
        // The text after `send:` goes out exactly as typed.
        return if text.trim().is_empty() {
            Input::Nothing
        } else {
            Input::Say(text.to_owned())
        };
    }
    if let Some(rest) = line.trim_start().strip_prefix('/') {
        return slash(rest, trimmed);
    }
    Input::Say(line.to_owned())
}

/// A `/command` (`rest` is what follows the slash).
fn slash(rest: &str, trimmed: &str) -> Input {
    let (word, args) = match rest.split_once(char::is_whitespace) {
        Some((word, args)) => (word, args.trim_start()),
        None => (rest, ""),
    };
    let words: Vec<&str> = args.split_whitespace().collect();
    // At most one argument (a room or a name).
    let one = |usage: &str| match words[..] {
        [] => Ok(None),
        [word] => Ok(Some(room_or_name(word))),
        _ => Err(Input::Invalid(format!("usage: {usage}"))),
    };
    let required = |usage: &str| Input::Invalid(format!("usage: {usage}"));
    match word {
        "nick" => match one("/nick NAME") {
            Ok(Some(name)) => Input::Nick(name),
            Ok(None) => required("/nick NAME"),
            Err(invalid) => invalid,
        },
        "join" => match one("/join ROOM") {
            Ok(Some(room)) => Input::Join(room),
            Ok(None) => required("/join ROOM"),
            Err(invalid) => invalid,
        },
        "part" | "leave" => match one("/part [ROOM]") {
            Ok(room) => Input::Part(room),
            Err(invalid) => invalid,
        },
        "who" => match one("/who [ROOM]") {
            Ok(room) => Input::Who(room),
            Err(invalid) => invalid,
        },
        "history" => match words[..] {
            [n] => match n.parse::<u32>() {
                Ok(n) if (1..=MAX_HISTORY).contains(&n) => Input::History(Some(n)),
                _ => Input::Invalid(format!(
                    "usage: /history [N], N from 1 to {MAX_HISTORY} (got {n})"
                )),
            },
            _ => required("/history [N]"),
        },
        "msg" | "tell" => match args.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim().is_empty() => Input::Msg {
                to: to.to_owned(),
                // The text goes out as typed, after the one separating space.
                text: text.to_owned(),
            },
            _ => required("/msg NAME TEXT"),
        },
        _ => Input::Invalid(format!(
            "unknown command /{word} (try /help; to send a line starting with '/', write send:{trimmed})"
        )),
    }
}

/// Most messages `/history N` asks for.
pub(crate) const MAX_HISTORY: u32 = 1000;

/// A room as typed: `#rust` and `rust` are the same room (`#` is never part
/// of a room's name).
fn room_or_name(word: &str) -> String {
    word.strip_prefix('#').unwrap_or(word).to_owned()
}

/// The commands, for `--help` and `/help` (a macro, so `concat!` can use it).
macro_rules! commands {
    () => {
        "\
Each line you type is one of:
  TEXT            say TEXT in the current room (the prompt shows it)
  send:TEXT       say TEXT (the original lab's form; TEXT may start with '/')
  /join ROOM      join ROOM (created if nobody is in it) and make it current
  /part [ROOM]    leave ROOM (default: the current room)
  /rooms          list the rooms and how many are in each
  /who [ROOM]     who is in ROOM (default: the current room), with addresses
  /msg NAME TEXT  send TEXT to NAME only
  /history [N]    show the last N messages of the current room (default 20)
  /nick NAME      change your name
  /help           show this list
  exit;           leave: the server acknowledges, then the program ends (status 0)
  /quit           leave, like exit;
  /logout         log out (your token stops working) and leave
  (empty line)    nothing is sent
End of input (Ctrl-D, or the end of a pipe) and Ctrl-C leave too.
A version 1 server has one room and no names: there /join, /part, /rooms,
/who, /msg and /nick are refused with a message, and lines go to everyone.
A server that keeps history shows each room's last 20 messages when you
join it (marked ~, with the time they were sent), and after a reconnect
everything you missed, once; your own lines show once the server has
stored them (until then they are not shown), and a line it refused shows
as `! not sent ...` with the text."
    };
}

/// The commands, for `/help`.
pub(crate) const COMMANDS: &str = commands!();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse("send:hello!!"), Input::Say("hello!!".into()));
        assert_eq!(
            parse("send:是的你是对的，我是中国人"),
            Input::Say("是的你是对的，我是中国人".into())
        );
        assert_eq!(parse("send: spaced "), Input::Say(" spaced ".into()));
        assert_eq!(parse("plain words"), Input::Say("plain words".into()));
        assert_eq!(parse("exit;"), Input::Leave);
        assert_eq!(parse("  exit;  "), Input::Leave);
        assert_eq!(parse("/quit"), Input::Leave);
        assert_eq!(parse("/help"), Input::Help);
        assert_eq!(parse(""), Input::Nothing);
        assert_eq!(parse("   "), Input::Nothing);
        assert_eq!(parse("send:"), Input::Nothing);
        assert_eq!(parse("send:/quit"), Input::Say("/quit".into()));
        assert!(
            matches!(parse("/qiut now"), Input::Invalid(m) if m.starts_with("unknown command /qiut"))
        );
        assert_eq!(parse("exit; now"), Input::Say("exit; now".into()));
    }

    #[test]
    fn room_commands() {
        assert_eq!(parse("/nick 小明"), Input::Nick("小明".into()));
        assert_eq!(parse("/join rust"), Input::Join("rust".into()));
        assert_eq!(parse("/join #rust"), Input::Join("rust".into()));
        assert_eq!(parse("/part"), Input::Part(None));
        assert_eq!(parse("/part #rust"), Input::Part(Some("rust".into())));
        assert_eq!(parse("/who"), Input::Who(None));
        assert_eq!(parse("/who lobby"), Input::Who(Some("lobby".into())));
        assert_eq!(parse("/rooms"), Input::Rooms);
        assert_eq!(parse("/history"), Input::History(None));
        assert_eq!(parse("/history 5"), Input::History(Some(5)));
        assert_eq!(
            parse("/msg bob  two  spaces "),
            Input::Msg {
                to: "bob".into(),
                text: " two  spaces ".into()
            }
        );
        for bad in [
            "/nick",
            "/nick a b",
            "/join",
            "/join a b",
            "/msg bob",
            "/msg",
            "/history 1 2",
            "/history x",
            "/history 0",
        ] {
            assert!(
                matches!(parse(bad), Input::Invalid(m) if m.starts_with("usage: /")),
                "{bad}"
            );
        }
    }
}
