//! `chat-client`: chat from a terminal or a pipe.
//!
//! A thin front end over the `chat_client` library: parse flags, connect,
//! then pass input lines to the server and print what arrives; reconnect
//! when the server goes away.
//!
//! Layout: `main.rs` flags and start-up, `chat.rs` the conversation and
//! reconnecting, `command.rs` what a typed line means, `state.rs` our name
//! and rooms, `render.rs` how lines look, `neutral.rs` making others' text
//! safe to print, `clock.rs` the time of day, `address.rs` the server's
//! address as typed, `ui.rs` the terminal and the pipe.
#![forbid(unsafe_code)]

#[macro_use]
mod command;
mod account;
mod address;
mod chat;
mod clock;
mod neutral;
mod render;
mod state;
mod ui;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use chat_client::{Client, Fingerprint, Options, TlsOptions};
use clap::Parser;
use tokio::sync::mpsc;

use crate::chat::Chat;
use crate::render::Painter;
use crate::state::State;
use crate::ui::PromptText;

/// Chat with others on a chat server: in rooms, by name, or directly.
///
/// Lines you type go to the current room (shown in the prompt); what others
/// say is printed one line each, as it arrives, with the time, the room and
/// who said it.
#[derive(Debug, Parser)]
#[command(version, after_help = AFTER_HELP)]
struct Args {
    /// The server: HOST:PORT, HOST (port 8080), [IPv6]:PORT or [IPv6]
    /// [default: 127.0.0.1:8080]
    #[arg(value_name = "HOST:PORT", value_parser = address::parse)]
    address: Option<String>,

    /// The server, as a flag (the same forms as HOST:PORT)
    #[arg(
        long,
        short,
        value_name = "HOST:PORT",
        value_parser = address::parse,
        conflicts_with = "address"
    )]
    server: Option<String>,

    /// The name to ask for; the server picks one (guest-N) if you give none
    /// or if this one is taken or not allowed. With --register or --login:
    /// the account's name
    #[arg(long, short, value_name = "NAME")]
    name: Option<String>,

    /// Register the name (--name) as an account with a password, and log in
    /// to it. The password comes from CHAT_PASSWORD, --password-file, or a
    /// prompt; it is sent only over TLS or to this machine
    #[arg(long, conflicts_with_all = ["login", "v1"])]
    register: bool,

    /// Log in to the account --name with its password (as for --register)
    #[arg(long, conflicts_with = "v1")]
    login: bool,

    /// Read the password from the first line of FILE
    #[arg(long, value_name = "FILE")]
    password_file: Option<std::path::PathBuf>,

    /// Keep the login token in FILE (created readable by you only): after a
    /// login it is saved there, and later runs log in with it, no password
    /// needed
    #[arg(long, value_name = "FILE", conflicts_with = "v1")]
    token_file: Option<std::path::PathBuf>,

    /// Speak protocol version 1, as the original lab's client did: one room,
    /// everyone known by address
    #[arg(long)]
    v1: bool,

    /// Do not ask for the server's history (no past messages on joining,
    /// nothing resumed after a reconnect)
    #[arg(long)]
    no_history: bool,

    /// When the connection is lost, end (status 1) instead of reconnecting
    #[arg(long)]
    no_reconnect: bool,

    /// Connect with TLS (to the server's --tls-bind port), trusting --ca or
    /// --fingerprint
    #[arg(long, requires = "trust")]
    tls: bool,

    /// With --tls: trust the certificate authorities in this PEM file; the
    /// server's certificate must name the host connected to
    #[arg(long, value_name = "FILE", requires = "tls", group = "trust")]
    ca: Option<PathBuf>,

    /// With --tls: trust exactly the certificate with this SHA-256
    /// fingerprint, as `chat-server --tls-self-signed` prints it
    #[arg(long, value_name = "SHA256:HEX", requires = "tls", group = "trust")]
    fingerprint: Option<Fingerprint>,
}

impl Args {
    /// TLS as the flags ask for it.
    fn tls(&self) -> Result<Option<TlsOptions>, chat_client::Error> {
        match (&self.ca, self.fingerprint) {
            (Some(ca), _) => TlsOptions::ca_file(ca).map(Some),
            (None, Some(fingerprint)) => Ok(Some(TlsOptions::fingerprint(fingerprint))),
            (None, None) => Ok(None),
        }
    }
}

const AFTER_HELP: &str = concat!(
    commands!(),
    "

Output, one line each, after the local time (HH:MM):
  * connected to SERVER as NAME   first; NAME is how the others see you
  #ROOM <NAME> TEXT               NAME said TEXT in ROOM (yours look the same)
  *NAME* TEXT                     a direct message from NAME
  HH:MM ~ #ROOM <NAME> TEXT       from history, with the time it was sent
  * earlier messages in #ROOM are no longer available
                                  the server no longer keeps what came before
  ! not sent in #ROOM: WHY: TEXT  the server did not store (nor send) TEXT
  -> *NAME* TEXT                  a direct message you sent
  * NAME joined #ROOM             (and `left`); `* OLD is now NEW` for a rename
  * you are in #ROOM with NAMES   you joined ROOM
  * #ROOM has N members: ...      the answer to /who: names and [IP:PORT]
  * N rooms: #ROOM (N), ...       the answer to /rooms
  ! REASON: SUBJECT (DETAIL)      the server refused a request (name taken, ...)
  [IP:PORT] TEXT                  a message, on a version 1 server
  * left the chat                 the server acknowledged your exit
Others' names and text are shown with control characters and bidirectional
overrides escaped (\\n, \\u{1b}, \\u{202e}), so they cannot drive the terminal.
Colours (your lines, others', news, errors) only on a terminal, and never
when NO_COLOR is set. Mistakes (an unknown command, a text longer than the
server accepts) go to standard error in a pipe, above the prompt on a
terminal; nothing is sent and the client keeps running.

A pasted line is sent whole on Enter, however long (up to what the server
accepts): the client turns on the terminal's bracketed paste, which nearly
every terminal supports. A paste of several lines sends each line.

When the server goes away or restarts, the client says so and reconnects
(after 0.5 s, doubling up to 10 s between attempts; the first five failures
are reported) with the same name and rooms, until you leave (exit;, /quit,
Ctrl-C or Ctrl-D work meanwhile); with history, each room and direct
conversation then resumes from the last message seen, so what was missed
shows once (~), with no gap and no repeat. What you are typing is kept; lines
entered while disconnected are not sent, and the client says so.

Exit status: 0 after leaving; 1 if the server could not be reached at
start (or, with --no-reconnect, when the connection ends); 2 for bad usage.

Set RUST_LOG=debug for protocol logs on standard error."
);

/// Where to connect when no address is given.
const DEFAULT_SERVER: &str = "127.0.0.1:8080";

fn main() -> ExitCode {
    let args = Args::parse();
    // Before any other thread exists: a panic it catches stays silent.
    let zone_warning = clock::probe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(warning) = zone_warning {
        eprintln!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let tls = match args.tls() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let server = args
        .address
        .or(args.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let mut options = Options::default();
    options.name = args.name.clone();
    options.login = match account::login(
        args.register,
        args.login,
        args.name.as_deref(),
        args.password_file.as_ref(),
        args.token_file.as_ref(),
    ) {
        Ok(login) => login,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    options.rooms = !args.v1;
    options.history = !args.no_history;
    // Each room's latest messages on joining it, when there is history.
    options.recent = chat::RECENT;
    options.tls = tls;
    let client = match Client::connect_with(server.as_str(), options.clone()).await {
        Ok(client) => client,
        Err(
            e @ chat_client::Error::Login {
                code: chat_client::Refusal::AuthRequired,
                ..
            },
        ) => {
            eprintln!("{e} (chat-client --register or --login, with --name NAME)");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Listen for Ctrl-C before saying we are connected, so that a signal
    // sent from then on always means "leave".
    let interrupted = chat::interrupts();

    let (inputs_tx, inputs) = mpsc::channel(16);
    let prompt = PromptText::default();
    let state = State::new(args.name, prompt.clone());
    let stdout_terminal = std::io::stdout().is_terminal();
    let painter = Painter::for_stdout(stdout_terminal);
    let interactive = std::io::stdin().is_terminal() && stdout_terminal;
    let (out, editor) = if interactive {
        let (out, editor) = ui::terminal(inputs_tx, painter, prompt);
        (out, Some(editor))
    } else {
        (ui::pipe(inputs_tx, painter), None)
    };

    let chat = Chat {
        server,
        options,
        token_file: args.token_file,
        reconnect: !args.no_reconnect,
        state,
        inputs,
        interrupted,
        out: out.clone(),
        pending: Default::default(),
        asked: Vec::new(),
    };
    let code = chat.run(client).await;
    drop(out);
    if let Some(editor) = editor {
        let _ = tokio::task::spawn_blocking(move || editor.finish()).await;
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{COMMANDS, Input};
    use crate::render::Line;

    /// Each command as help shows it, a line that uses it, and what that
    /// line must mean: help and the parser cannot drift apart.
    #[test]
    fn help_lists_every_command() {
        let commands = [
            ("send:TEXT", "send:hi", Input::Say("hi".into())),
            ("exit;", "exit;", Input::Leave),
            ("/quit", "/quit", Input::Leave),
            ("/help", "/help", Input::Help),
            ("/join ROOM", "/join rust", Input::Join("rust".into())),
            ("/part [ROOM]", "/part", Input::Part(None)),
            ("/rooms", "/rooms", Input::Rooms),
            ("/who [ROOM]", "/who", Input::Who(None)),
            (
                "/msg NAME TEXT",
                "/msg bob hi",
                Input::Msg {
                    to: "bob".into(),
                    text: "hi".into(),
                },
            ),
            ("/nick NAME", "/nick 李雷", Input::Nick("李雷".into())),
            ("/history [N]", "/history 5", Input::History(Some(5))),
        ];
        for (shown, line, meaning) in commands {
            assert!(COMMANDS.contains(shown), "/help lacks {shown}");
            assert!(AFTER_HELP.contains(shown), "--help lacks {shown}");
            assert_eq!(command::parse(line), meaning, "{line}");
        }
        // Every `/word` help mentions is one the parser knows.
        for word in AFTER_HELP.split_whitespace().filter(|w| w.starts_with('/')) {
            let word = word.trim_end_matches([',', '.', ')', ':']);
            assert!(
                !matches!(command::parse(word), Input::Invalid(m) if m.starts_with("unknown")),
                "help lists {word}, which the parser refuses"
            );
        }
    }

    #[test]
    fn own_lines_show_the_text_not_the_command() {
        let Input::Say(text) = command::parse("send:hello") else {
            panic!("send: is not a message");
        };
        assert_eq!(
            render::own(Some("lobby"), "me", &text).plain(),
            "#lobby <me> hello"
        );
        assert_eq!(Line::system("x").plain(), "* x");
    }
}
