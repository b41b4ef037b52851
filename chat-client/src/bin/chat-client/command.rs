//! What a line of input means.

/// One line of input, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Send this text.
    Send(String),
    /// Leave the chat.
    Leave,
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
        "exit;" | "/quit" => return Input::Leave,
        "/help" => return Input::Help,
        _ => {}
    }
    if let Some(text) = line.trim_start().strip_prefix("send:") {
        // The text after `send:` goes out exactly as typed.
        return if text.trim().is_empty() {
            Input::Nothing
        } else {
            Input::Send(text.to_owned())
        };
    }
    if trimmed.starts_with('/') {
        let word = trimmed.split_whitespace().next().unwrap_or(trimmed);
        return Input::Invalid(format!(
            "unknown command {word} (try /help; to send a line starting with '/', write send:{trimmed})"
        ));
    }
    Input::Send(line.to_owned())
}

/// The commands, for `--help` and `/help` (a macro, so `concat!` can use it).
macro_rules! commands {
    () => {
        "\
Each line you type is one of:
  TEXT          send TEXT to everyone else
  send:TEXT     send TEXT (the original lab's form)
  exit;         leave: the server acknowledges, then the program ends (status 0)
  /quit         leave, like exit;
  /help         show this list
  (empty line)  nothing is sent
End of input (Ctrl-D, or the end of a pipe) and Ctrl-C leave too."
    };
}

/// The commands, for `/help`.
pub(crate) const COMMANDS: &str = commands!();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse("send:hello!!"), Input::Send("hello!!".into()));
        assert_eq!(
            parse("send:是的你是对的，我是中国人"),
            Input::Send("是的你是对的，我是中国人".into())
        );
        assert_eq!(parse("send: spaced "), Input::Send(" spaced ".into()));
        assert_eq!(parse("plain words"), Input::Send("plain words".into()));
        assert_eq!(parse("exit;"), Input::Leave);
        assert_eq!(parse("  exit;  "), Input::Leave);
        assert_eq!(parse("/quit"), Input::Leave);
        assert_eq!(parse("/help"), Input::Help);
        assert_eq!(parse(""), Input::Nothing);
        assert_eq!(parse("   "), Input::Nothing);
        assert_eq!(parse("send:"), Input::Nothing);
        assert_eq!(parse("send:/quit"), Input::Send("/quit".into()));
        assert!(
            matches!(parse("/qiut now"), Input::Invalid(m) if m.starts_with("unknown command /qiut"))
        );
        assert_eq!(parse("exit; now"), Input::Send("exit; now".into()));
    }
}
