//! `chat-client`: chat from a terminal or a pipe.
//!
//! A thin front end over the `chat_client` library: parse flags, connect,
//! then pass input lines to the server and print what arrives.
#![forbid(unsafe_code)]

#[macro_use]
mod command;
mod ui;

use std::borrow::Cow;
use std::io::IsTerminal;
use std::process::ExitCode;

use chat_client::{Client, Error, Event, Events, Sender};
use clap::Parser;
use tokio::sync::mpsc;

use crate::command::{COMMANDS, Input};
use crate::ui::Out;

/// Chat with everyone connected to a chat server.
///
/// Lines you type are sent to every other client; what they send is printed
/// as `[IP:PORT] TEXT`, one line each, as it arrives.
#[derive(Debug, Parser)]
#[command(version, after_help = AFTER_HELP)]
struct Args {
    /// The server to connect to: a host name, IPv4 or [IPv6] address, with a port.
    #[arg(
        long,
        short,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:8080"
    )]
    server: String,
}

const AFTER_HELP: &str = concat!(
    commands!(),
    "

Output, one line each:
  connected to SERVER as ME   first; ME is how the others see you
  [IP:PORT] TEXT              a message from IP:PORT
  * IP:PORT joined            (and `left`)
  ! server error: REASON      the server is about to close the connection
  * left the chat             the server acknowledged your exit
Errors go to standard error (above the prompt on a terminal). A text longer
than the server accepts is not sent, and the client keeps running.

Exit status: 0 after leaving; 1 if the server could not be reached, closed
the connection or shut down; 2 for bad usage.

Set RUST_LOG=debug for protocol logs on standard error."
);

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
    let client = match Client::connect(args.server.as_str()).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let session = *client.session();
    // Listen for Ctrl-C before saying we are connected, so that a signal
    // sent from then on always means "leave".
    let interrupted = interrupts();
    println!("connected to {} as {}", session.server, session.me);

    let (inputs_tx, inputs) = mpsc::channel(16);
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (out, editor) = if interactive {
        let (out, editor) = ui::terminal(inputs_tx);
        (out, Some(editor))
    } else {
        ui::pipe(inputs_tx);
        (Out::Plain, None)
    };

    let (sender, events) = client.split();
    let code = chat(sender, events, inputs, interrupted, &out).await;
    drop(out);
    if let Some(editor) = editor {
        let _ = tokio::task::spawn_blocking(move || editor.finish()).await;
    }
    code
}

/// Runs the conversation until we have left or the server has gone.
async fn chat(
    sender: Sender,
    mut events: Events,
    mut inputs: mpsc::Receiver<Input>,
    mut interrupted: mpsc::Receiver<()>,
    out: &Out,
) -> ExitCode {
    let mut leaving = false;
    let mut server_gone = false;
    loop {
        tokio::select! {
            event = events.next_event() => match event {
                Ok(Some(event)) => {
                    server_gone |= event == Event::ServerExit;
                    out.line(render(&event)).await;
                }
                // Our exit was acknowledged, or the server said it is shutting down.
                Ok(None) => break,
                Err(e) => {
                    out.error(e.to_string()).await;
                    return ExitCode::FAILURE;
                }
            },
            input = inputs.recv(), if !leaving => match input.unwrap_or(Input::Leave) {
                Input::Send(text) => match sender.send(text).await {
                    Ok(()) => {}
                    Err(e @ Error::TooLong { .. }) => out.error(format!("not sent: {e}")).await,
                    // The session is over; the events say why.
                    Err(e) => tracing::debug!(error = %e, "send failed"),
                },
                Input::Leave => leaving = leave(&sender),
                Input::Help => out.line(COMMANDS).await,
                Input::Nothing => {}
                Input::Invalid(message) => out.error(message).await,
            },
            Some(()) = interrupted.recv(), if !leaving => leaving = leave(&sender),
        }
    }
    if server_gone {
        ExitCode::FAILURE
    } else {
        out.line("* left the chat").await;
        ExitCode::SUCCESS
    }
}

/// Ctrl-C (SIGINT), as a channel that is listening from the moment this returns.
fn interrupts() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::interrupt()) {
            Ok(mut sigint) => {
                tokio::spawn(async move {
                    while sigint.recv().await.is_some() {
                        let _ = tx.try_send(());
                    }
                });
            }
            Err(e) => tracing::warn!("cannot listen for Ctrl-C: {e}"),
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.try_send(());
        }
    });
    rx
}

/// Starts leaving; the event stream ends once the server has acknowledged.
fn leave(sender: &Sender) -> bool {
    let sender = sender.clone();
    tokio::spawn(async move {
        // A failure (say, no acknowledgement in time) also ends the events,
        // which report it.
        if let Err(e) = sender.exit().await {
            tracing::debug!(error = %e, "exit failed");
        }
    });
    true
}

/// One line for an event.
fn render(event: &Event) -> String {
    match event {
        Event::Message { from, text } => format!("[{from}] {}", printable(text)),
        Event::Joined(who) => format!("* {who} joined"),
        Event::Left(who) => format!("* {who} left"),
        Event::ServerError(reason) => format!("! server error: {}", printable(reason)),
        Event::ServerExit => "* the server is shutting down".to_owned(),
        other => format!("* {other:?}"),
    }
}

/// Text from others with control characters escaped, so one message stays
/// one line and cannot drive the terminal.
fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering() {
        let from = "127.0.0.1:3075".parse().unwrap();
        let msg = Event::Message {
            from,
            text: "hello!!".into(),
        };
        assert_eq!(render(&msg), "[127.0.0.1:3075] hello!!");
        let sneaky = Event::Message {
            from,
            text: "two\nlines\u{1b}[2J 你好".into(),
        };
        assert_eq!(
            render(&sneaky),
            "[127.0.0.1:3075] two\\nlines\\u{1b}[2J 你好"
        );
        assert_eq!(render(&Event::Joined(from)), "* 127.0.0.1:3075 joined");
        assert_eq!(render(&Event::Left(from)), "* 127.0.0.1:3075 left");
    }

    /// Each command as help shows it, a line that uses it, and what that
    /// line must mean: help and the parser cannot drift apart.
    #[test]
    fn help_lists_every_command() {
        let commands = [
            ("send:TEXT", "send:hi", Input::Send("hi".into())),
            ("exit;", "exit;", Input::Leave),
            ("/quit", "/quit", Input::Leave),
            ("/help", "/help", Input::Help),
        ];
        for (shown, line, meaning) in commands {
            assert!(COMMANDS.contains(shown), "/help lacks {shown}");
            assert!(AFTER_HELP.contains(shown), "--help lacks {shown}");
            assert_eq!(command::parse(line), meaning, "{line}");
        }
        // Every `/word` help mentions is one the parser knows.
        for word in AFTER_HELP.split_whitespace().filter(|w| w.starts_with('/')) {
            assert!(
                !matches!(command::parse(word), Input::Invalid(_)),
                "help lists {word}, which the parser refuses"
            );
        }
    }
}
