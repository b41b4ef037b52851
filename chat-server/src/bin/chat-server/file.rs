//! `--config FILE`: the flags, read from a TOML file.
//!
//! Each key is a flag's long name, with `-` or `_` (`max-clients` or
//! `max_clients`); each value is typed as TOML: an integer for a count
//! (`rate = 0`), a string or an integer for a size (`"64KiB"`, `65536`), a
//! string or a number for a duration (`"10s"`, `10`), a string for an
//! address or a path, a boolean for a switch (`public = true`; `false` is
//! the same as leaving it out). Unknown keys and wrong types are errors,
//! and every error names the file, the line and the key.
//!
//! The file is turned into flags placed before the command line's, less
//! those the command line gives itself or contradicts (`--ephemeral`
//! against a `data` key): flags override the file. Clap then parses the
//! whole as one command line, so a value means the same in the file as
//! after its flag, and the file can never set what no flag can.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::Path;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileError {
    /// The file, as given.
    pub(crate) file: String,
    /// The line at fault (1-based), if the file could be read.
    pub(crate) line: Option<usize>,
    /// The key at fault, as written.
    pub(crate) key: Option<String>,
    /// What is wrong.
    pub(crate) message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

/// A command line with its file's flags, and where each came from.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    /// The program name, the file's flags, then the command line's.
    pub(crate) argv: Vec<OsString>,
    /// For each flag taken from the file (its long name): `FILE:LINE: KEY`.
    origins: Vec<(String, String)>,
}

impl Merged {
    /// `FILE:LINE: KEY` if the flag `--long` was taken from the file.
    pub(crate) fn origin(&self, flag: &str) -> Option<&str> {
        let long = flag.trim_start_matches('-');
        self.origins
            .iter()
            .find(|(l, _)| l == long)
            .map(|(_, origin)| origin.as_str())
    }
}

/// The command line `argv` (program name first) with the flags of its
/// `--config` file, if any, put before its own. A command line clap
/// refuses is returned as it is, for clap to report.
pub(crate) fn merge(command: &Command, argv: Vec<OsString>) -> Result<Merged, FileError> {
    let mut command = command.clone();
    let unchanged = |argv| Merged {
        argv,
        origins: Vec::new(),
    };
    let Ok(cli) = command.try_get_matches_from_mut(&argv) else {
        return Ok(unchanged(argv));
    };
    let Some(path) = cli.get_one::<std::path::PathBuf>("config") else {
        return Ok(unchanged(argv));
    };
    let name = path.display().to_string();
    let text = read(path).map_err(|message| FileError {
        file: name.clone(),
        line: None,
        key: None,
        message,
    })?;
    let entries = entries(&command, &cli, &argv, &name, &text)?;
    let mut merged = Merged::default();
    merged.argv.extend(argv.first().cloned());
    for entry in entries {
        let long = find(&command, &entry.key)
            .and_then(Arg::get_long)
            .unwrap_or_default();
        let origin = format!("{name}:{}: {}", entry.line, entry.key);
        merged.origins.push((long.to_string(), origin));
        merged.argv.extend(entry.flags);
    }
    merged.argv.extend(argv.into_iter().skip(1));
    Ok(merged)
}

/// Largest config file read: far more than every flag needs, and a bound
/// if it names something endless (`/dev/zero`).
const MAX_FILE_LEN: u64 = 1 << 20;

fn read(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err("larger than 1 MiB: not a config file".into());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// One key of the file, as flags.
#[derive(Debug)]
struct Entry {
    key: String,
    line: usize,
    id: String,
    flags: Vec<OsString>,
}

/// The keys of the file `text` (named `file`) as flags, in the file's
/// order, less those the command line `argv` (parsed as `cli`) overrides.
fn entries(
    command: &Command,
    cli: &ArgMatches,
    argv: &[OsString],
    file: &str,
    text: &str,
) -> Result<Vec<Entry>, FileError> {
    let at = |line: usize, key: Option<&str>, message: String| FileError {
        file: file.to_string(),
        line: Some(line),
        key: key.map(str::to_string),
        message,
    };
    let table = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |span| line_of(text, span.start));
        let key = key_on(text, line);
        at(line, key, e.message().trim().to_string())
    })?;
    let mut pairs: Vec<_> = table.get_ref().iter().collect();
    pairs.sort_by_key(|(key, _)| key.span().start);
    let bin = argv
        .first()
        .cloned()
        .unwrap_or_else(|| "chat-server".into());
    let mut command = command.clone();
    let mut kept: Vec<Entry> = Vec::new();
    let mut seen: Vec<(String, String, usize)> = Vec::new();
    for (key, value) in pairs {
        let line = line_of(text, key.span().start);
        let name = key.get_ref().as_ref();
        let fail = |message: String| at(line, Some(name), message);
        let arg = find(&command, name)
            .ok_or_else(|| fail("unknown key (the keys are the flags of --help)".into()))?;
        let id = arg.get_id().as_str().to_string();
        if let Some((first, _, first_line)) = seen.iter().find(|(_, i, _)| *i == id) {
            return Err(fail(format!(
                "given twice (as {first} on line {first_line})"
            )));
        }
        seen.push((name.to_string(), id.clone(), line));
        let flags = to_flags(arg, value).map_err(fail)?;
        let entry = Entry {
            key: name.to_string(),
            line,
            id,
            flags,
        };
        // Alone: its value as its flag would take it (wrong even where the
        // command line overrides it: the file is wrong).
        if let Err(e) = parse(&mut command, &bin, &[&entry.flags]) {
            return Err(fail(invalid(&entry.flags, &e)));
        }
        // Then the command line: the file gives way to it.
        let given = argv.get(1..).unwrap_or_default();
        if cli.value_source(&entry.id) == Some(ValueSource::CommandLine)
            || conflict(&mut command, &bin, &[&entry.flags, given])
        {
            continue;
        }
        if let Some(other) = kept
            .iter()
            .find(|k| conflict(&mut command, &bin, &[&k.flags, &entry.flags]))
        {
            return Err(fail(format!(
                "cannot be used with {} (line {})",
                other.key, other.line
            )));
        }
        kept.push(entry);
    }
    Ok(kept)
}

/// The flag `key` names: its long name with `-` or `_`. Not `--config`
/// itself, nor the ones clap adds (help, version).
fn find<'c>(command: &'c Command, key: &str) -> Option<&'c Arg> {
    let long = key.replace('_', "-");
    command
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
        .find(|a| a.get_long() == Some(long.as_str()))
}

/// What a value must be in the file, from how its flag takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Switch,
    Count,
    Integer,
    Size,
    Duration,
    Text,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        match arg.get_action() {
            ArgAction::SetTrue => return Kind::Switch,
            ArgAction::Count => return Kind::Count,
            _ => {}
        }
        let name = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map(|n| n.as_str());
        match name {
            Some("N") => Kind::Integer,
            Some("BYTES") => Kind::Size,
            Some("DURATION") => Kind::Duration,
            _ => Kind::Text,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Switch => "a boolean (true or false)",
            Kind::Count | Kind::Integer => "an integer",
            Kind::Size => "a size: an integer or a string such as \"64KiB\"",
            Kind::Duration => "a duration: a string such as \"10s\" or a number of seconds",
            Kind::Text => "a string",
        }
    }
}

/// The flags `arg` with `value` stands for, or why the value's type is wrong.
fn to_flags(arg: &Arg, value: &Spanned<DeValue<'_>>) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or_default();
    let kind = Kind::of(arg);
    let with = |text: &str| vec![OsString::from(format!("--{long}={text}"))];
    let wrong = || {
        format!(
            "expected {}, found {}",
            kind.expected(),
            type_of(value.get_ref())
        )
    };
    match (kind, value.get_ref()) {
        (Kind::Switch, DeValue::Boolean(on)) => Ok(if *on {
            vec![OsString::from(format!("--{long}"))]
        } else {
            Vec::new()
        }),
        (Kind::Count, DeValue::Integer(n)) => {
            let n = integer(n.as_str(), n.radix())?;
            let n =
                u8::try_from(n).map_err(|_| format!("invalid value \"{n}\": not in 0..=255"))?;
            Ok(vec![OsString::from(format!("--{long}")); usize::from(n)])
        }
        (Kind::Integer | Kind::Size | Kind::Duration, DeValue::Integer(n)) => {
            Ok(with(&integer(n.as_str(), n.radix())?.to_string()))
        }
        // As plain decimals: the flag's parser takes no exponent (`1e3`).
        (Kind::Duration, DeValue::Float(x)) => match x.as_str().parse::<f64>() {
            Ok(secs) if secs.is_finite() => Ok(with(&secs.to_string())),
            _ => Err(format!(
                "invalid value \"{}\": not a number of seconds",
                x.as_str()
            )),
        },
        (Kind::Size | Kind::Duration | Kind::Text, DeValue::String(s)) => Ok(with(s)),
        _ => Err(wrong()),
    }
}

fn integer(digits: &str, radix: u32) -> Result<i128, String> {
    i128::from_str_radix(digits, radix).map_err(|e| format!("invalid integer {digits}: {e}"))
}

fn type_of(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Clap's parse of the program name `bin` and `parts` in turn.
fn parse(
    command: &mut Command,
    bin: &OsStr,
    parts: &[&[OsString]],
) -> Result<ArgMatches, clap::Error> {
    let argv =
        std::iter::once(bin).chain(parts.iter().flat_map(|p| p.iter().map(|s| s.as_os_str())));
    command.try_get_matches_from_mut(argv)
}

/// Whether clap finds two arguments of `parts` that exclude each other.
fn conflict(command: &mut Command, bin: &OsStr, parts: &[&[OsString]]) -> bool {
    matches!(parse(command, bin, parts), Err(e) if e.kind() == ErrorKind::ArgumentConflict)
}

/// `invalid value "x": why`, from clap's refusal of `flags`.
fn invalid(flags: &[OsString], e: &clap::Error) -> String {
    let value = flags
        .first()
        .and_then(|f| f.to_str())
        .and_then(|f| f.split_once('=').map(|(_, v)| v.to_string()))
        .unwrap_or_default();
    let why = std::error::Error::source(e).map_or_else(
        || {
            // Clap's own rendering, less its "error: " and usage lines.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            first.trim_start_matches("error: ").to_string()
        },
        |source| source.to_string(),
    );
    format!("invalid value \"{value}\": {why}")
}

/// The key that line `line` (1-based) of `text` starts with, if any: a
/// syntax error names it too.
fn key_on(text: &str, line: usize) -> Option<&str> {
    let start = text
        .lines()
        .nth(line - 1)?
        .trim_start()
        .trim_start_matches('[');
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let end = start.find(|c: char| !bare(c)).unwrap_or(start.len());
    Some(&start[..end]).filter(|key| !key.is_empty())
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use tempfile::TempDir;

    use super::*;
    use crate::Args;
    use chat_server::Storage;

    /// The example shipped beside the crate.
    fn example() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("chat.example.toml")
    }

    /// `text` as `DIR/chat.toml`, and the command line `--config` it plus `flags`.
    fn load(text: &str, flags: &[&str]) -> (TempDir, Result<Merged, FileError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.toml");
        std::fs::write(&path, text).unwrap();
        let mut argv: Vec<OsString> = vec!["chat-server".into(), "--config".into(), path.into()];
        argv.extend(flags.iter().map(OsString::from));
        let merged = merge(&Args::command(), argv);
        (dir, merged)
    }

    /// The arguments `text` and `flags` make together.
    fn args(text: &str, flags: &[&str]) -> Args {
        let (_dir, merged) = load(text, flags);
        Args::try_parse_from(merged.unwrap().argv).unwrap()
    }

    /// The error `text` makes, without its directory: `chat.toml:LINE: ...`.
    fn error(text: &str) -> String {
        let (dir, merged) = load(text, &[]);
        let e = merged.unwrap_err();
        let shown = e.to_string();
        let prefix = format!("{}/", dir.path().display());
        shown.strip_prefix(&prefix).unwrap_or(&shown).to_string()
    }

    #[test]
    fn the_example_is_valid_and_says_the_defaults() {
        let path = example();
        let merged = merge(
            &Args::command(),
            vec!["chat-server".into(), "--config".into(), path.into()],
        )
        .unwrap();
        let from_file = Args::try_parse_from(&merged.argv).unwrap();
        let plain = Args::parse_from(["chat-server"]);
        assert_eq!(from_file.config(), plain.config());
        assert_eq!(from_file.bind, plain.bind);
        from_file.config().validate().unwrap();
        // Its keys were taken, not ignored: each traced to its line.
        let text = std::fs::read_to_string(example()).unwrap();
        let line = text.lines().position(|l| l.starts_with("rate = ")).unwrap() + 1;
        let origin = format!("{}:{line}: rate", example().display());
        assert_eq!(merged.origin("--rate"), Some(origin.as_str()));
    }

    #[test]
    fn the_example_names_every_flag() {
        let text = std::fs::read_to_string(example()).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .map(|l| l.trim_start_matches(['#', ' ']))
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .collect();
        let command = Args::command();
        let missing: Vec<&str> = command
            .get_arguments()
            .filter_map(Arg::get_long)
            .filter(|l| !["config", "help", "version"].contains(l))
            .filter(|l| !keys.contains(l))
            .collect();
        assert!(missing.is_empty(), "not in chat.example.toml: {missing:?}");
    }

    #[test]
    fn every_value_name_has_a_toml_type() {
        // A flag with a value name not known here would be read as a string:
        // say what TOML type it takes in `Kind::of`.
        for arg in Args::command().get_arguments() {
            if !matches!(arg.get_action(), ArgAction::Set) {
                continue;
            }
            if let Some(names) = arg.get_value_names() {
                let name = names[0].as_str();
                assert!(
                    ["N", "BYTES", "DURATION", "ADDR", "DIR", "FILE"].contains(&name),
                    "--{:?} takes {name}: give it a Kind",
                    arg.get_long()
                );
            }
        }
    }

    #[test]
    fn keys_with_dashes_or_underscores_and_typed_values() {
        let args = args(
            "max_clients = 7\nmax-rooms = 8\nmax-frame = \"1KiB\"\nrelay_batch = 100\n\
             coalesce = \"1ms\"\nidle-timeout = 1.5\nhandshake-timeout = 3\n\
             shutdown-grace = 1e1\nroom-members = 10_000\n\
             public = true\nno-presence = false\nverbose = 2\nbind = \"127.0.0.1:0\"\n\
             ephemeral = true\nthreads = 0x2\n",
            &[],
        );
        let config = args.config();
        assert_eq!(config.max_clients, 7);
        assert_eq!(config.max_rooms, 8);
        assert_eq!(config.max_frame_len, 1024);
        assert_eq!(config.relay_batch, 100);
        assert_eq!(config.coalesce, std::time::Duration::from_millis(1));
        assert_eq!(config.idle_timeout, std::time::Duration::from_millis(1500));
        assert_eq!(config.handshake_timeout, std::time::Duration::from_secs(3));
        assert_eq!(config.shutdown_grace, std::time::Duration::from_secs(10));
        assert_eq!(config.room_members, 10_000);
        assert!(config.public);
        assert!(config.presence);
        assert_eq!(config.storage, Storage::Memory);
        assert_eq!(args.verbose, 2);
        assert_eq!(args.bind, "127.0.0.1:0");
        assert_eq!(args.threads, Some(2));
    }

    #[test]
    fn flags_override_the_file() {
        let text = "rate = 5\nburst = 6\ndata = \"somewhere\"\nverbose = 1\n";
        let args = args(text, &["--rate", "7", "--ephemeral"]);
        assert_eq!(args.config().rate, 7);
        assert_eq!(args.config().burst, 6);
        // --ephemeral on the command line wins over the file's `data`.
        assert_eq!(args.config().storage, Storage::Memory);
        // A count is not added up: the command line's replaces the file's.
        assert_eq!(self::args(text, &["-vv"]).verbose, 2);
        assert_eq!(self::args(text, &["--rate=1"]).verbose, 1);
        // A value the command line overrides must still be valid.
        let (_dir, merged) = load("rate = -1\n", &["--rate", "1"]);
        assert!(merged.is_err());
        // Without the file, nothing changes.
        let (_dir, merged) = load("", &["--rate", "3"]);
        assert_eq!(
            Args::try_parse_from(merged.unwrap().argv)
                .unwrap()
                .config()
                .rate,
            3
        );
        let plain = merge(&Args::command(), vec!["chat-server".into()]).unwrap();
        assert_eq!(plain.argv, vec![OsString::from("chat-server")]);
    }

    #[test]
    fn every_error_names_the_line_and_the_key() {
        let cases = [
            (
                "rate = 5\n\ncolour = \"red\"\n",
                "chat.toml:3: colour: unknown key",
            ),
            (
                "\nrate = \"x\"\n",
                "chat.toml:2: rate: expected an integer, found a string",
            ),
            (
                "rate = -1\n",
                "chat.toml:1: rate: invalid value \"-1\": -1 is not in 0..=4294967295",
            ),
            (
                "max-clients = \"lots\"\n",
                "chat.toml:1: max-clients: expected an integer, found a string",
            ),
            (
                "rate = 1.5\n",
                "chat.toml:1: rate: expected an integer, found a float",
            ),
            (
                "coalesce = \"soon\"\n",
                "chat.toml:1: coalesce: invalid value \"soon\": `soon` is not a duration",
            ),
            (
                "outbox-bytes = \"8 MB\"\n",
                "chat.toml:1: outbox-bytes: invalid value \"8 MB\": unknown unit",
            ),
            (
                "coalesce = true\n",
                "chat.toml:1: coalesce: expected a duration",
            ),
            (
                "coalesce = nan\n",
                "chat.toml:1: coalesce: invalid value \"nan\"",
            ),
            (
                "coalesce = -1.0\n",
                "chat.toml:1: coalesce: invalid value \"-1\"",
            ),
            (
                "public = \"yes\"\n",
                "chat.toml:1: public: expected a boolean",
            ),
            (
                "bind = 8080\n",
                "chat.toml:1: bind: expected a string, found an integer",
            ),
            (
                "threads = 0\n",
                "chat.toml:1: threads: invalid value \"0\": 0 is not in 1..=65535",
            ),
            (
                "verbose = 300\n",
                "chat.toml:1: verbose: invalid value \"300\"",
            ),
            (
                "data = [\"a\"]\n",
                "chat.toml:1: data: expected a string, found an array",
            ),
            ("[server]\nrate = 1\n", "chat.toml:1: server: unknown key"),
            ("a.b = 1\n", "chat.toml:1: a: unknown key"),
            (
                "config = \"other.toml\"\n",
                "chat.toml:1: config: unknown key",
            ),
            ("help = true\n", "chat.toml:1: help: unknown key"),
            (
                "max_clients = 1\n\nmax-clients = 2\n",
                "chat.toml:3: max-clients: given twice (as max_clients on line 1)",
            ),
            ("rate = 1\nrate = 2\n", "chat.toml:2: rate: duplicate key"),
            ("rate = \n", "chat.toml:1: rate: "),
            ("\n\nrate 5\n", "chat.toml:3: rate: "),
            (
                "ephemeral = true\n# why not\ndata = \"x\"\n",
                "chat.toml:3: data: cannot be used with ephemeral (line 1)",
            ),
        ];
        for (text, expected) in cases {
            let got = error(text);
            assert!(got.starts_with(expected), "{text:?}: {got}");
        }
        // A file that cannot be read is named.
        let argv = vec![
            "chat-server".into(),
            "--config".into(),
            "/nonexistent/chat.toml".into(),
        ];
        let e = merge(&Args::command(), argv).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/chat.toml: cannot read: "),
            "{e}"
        );
        let (_dir, merged) = load("rate = \"\u{0}\"", &[]);
        assert!(merged.is_err());
    }

    #[test]
    fn a_value_the_library_refuses_is_traced_to_its_line() {
        let (_dir, merged) = load("rate = 1\nmax-name-chars = 33\n", &[]);
        let merged = merged.unwrap();
        let args = Args::try_parse_from(&merged.argv).unwrap();
        let Err(chat_server::Error::Config { field, .. }) = args.config().validate() else {
            panic!("33 is refused");
        };
        let origin = merged.origin(crate::flag(field)).unwrap();
        assert!(origin.ends_with("chat.toml:2: max-name-chars"), "{origin}");
        // A value from the command line is not the file's.
        let (_dir, merged) = load("rate = 1\n", &["--max-name-chars", "33"]);
        assert_eq!(merged.unwrap().origin("--max-name-chars"), None);
    }

    #[test]
    fn what_is_not_a_text_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.toml");
        std::fs::write(&path, b"rate = \xff\n").unwrap();
        let argv = vec!["chat-server".into(), "--config".into(), path.into()];
        let e = merge(&Args::command(), argv).unwrap_err();
        assert_eq!(e.message, "not UTF-8 text");
        // Something endless is not read to its end.
        let argv = vec!["chat-server".into(), "--config".into(), "/dev/zero".into()];
        let e = merge(&Args::command(), argv).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: larger than 1 MiB: not a config file"
        );
        // A directory is not a file.
        let argv = vec!["chat-server".into(), "--config".into(), dir.path().into()];
        let e = merge(&Args::command(), argv).unwrap_err();
        assert!(e.message.starts_with("cannot read: "), "{e}");
    }
}
