//! The conversation: lines typed become requests, events become lines; when
//! the connection is lost, reconnecting with backoff, with the same name and
//! rooms, until the user leaves.
//!
//! The inputs (and the line editor behind them) live as long as the
//! program, across connections: what is being typed survives a reconnect.
//!
//! With history, the library carries where we were in each conversation
//! (its marks) to the next connection and resumes each from there; our own
//! lines are shown once the server has stored them.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use chat_client::{Client, Conversation, Error, Event, Login, Options, Sender};
use tokio::sync::mpsc;

use crate::command::{COMMANDS, Input};

/// How many of a room's last messages `/history` shows, and joining one.
pub(crate) const RECENT: u32 = 20;
use crate::render::{self, Line};
use crate::state::{LOBBY, State};
use crate::ui::Out;

/// First wait before reconnecting; it doubles after each failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Failed attempts reported one by one; after this many, the client goes
/// on trying without a line each time.
const QUIET_AFTER: u32 = 5;

/// Everything the conversation needs, across connections.
pub(crate) struct Chat {
    /// The server's address, as given.
    pub(crate) server: String,
    /// How to connect (the name is updated before each reconnection, and
    /// a login becomes the token it gave).
    pub(crate) options: Options,
    /// Where to keep the login token (`--token-file`).
    pub(crate) token_file: Option<std::path::PathBuf>,
    /// Whether to reconnect when the connection is lost.
    pub(crate) reconnect: bool,
    pub(crate) state: State,
    pub(crate) inputs: mpsc::Receiver<Input>,
    pub(crate) interrupted: mpsc::Receiver<()>,
    pub(crate) out: Out,
    /// With history: our lines sent and not yet stored, by number, with
    /// their text (shown once `Stored` comes; the text if `Unstored`).
    pub(crate) pending: HashMap<u64, (Line, String)>,
    /// Rooms of `/history` requests not yet fully answered (lower case),
    /// with the messages shown so far: an empty answer gets a line too.
    pub(crate) asked: Vec<(String, usize)>,
}

/// How one connection ended.
enum End {
    /// We left and the server acknowledged (or leaving failed: the code).
    Left(ExitCode),
    /// The connection was lost; why.
    Lost(String),
}

impl Chat {
    /// Chats over `client`, and over every connection after it, until the
    /// user leaves.
    pub(crate) async fn run(mut self, mut client: Client) -> ExitCode {
        let mut again = false;
        loop {
            let reason = match self.connection(client, again).await {
                End::Left(code) => return code,
                End::Lost(reason) => reason,
            };
            self.state.disconnected();
            if !self.reconnect {
                if !reason.is_empty() {
                    self.out.error(reason).await;
                }
                return ExitCode::FAILURE;
            }
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            self.out
                .line(&Line::system(format!(
                    "disconnected{why}; reconnecting (/quit to stop)"
                )))
                .await;
            match self.reconnect().await {
                Some(next) => client = next,
                None => {
                    self.out.line(&Line::system("left (not connected)")).await;
                    return ExitCode::SUCCESS;
                }
            }
            again = true;
        }
    }

    /// One connection, from its greeting to its end.
    async fn connection(&mut self, client: Client, again: bool) -> End {
        let session = client.session().clone();
        if let Some(account) = &session.account {
            // Reconnect with the token, never the password again.
            self.options.login = Some(Login::Token(account.token.clone()));
            if let Some(file) = &self.token_file
                && let Err(e) = crate::account::save_token(file, &account.token)
            {
                self.out.error(e).await;
            }
        }
        let (rejoin, part_lobby) =
            self.state
                .connected(session.me, session.name.clone(), session.rooms);
        let verb = if again { "reconnected" } else { "connected" };
        let who = match &session.name {
            Some(name) => crate::neutral::neutral(name).into_owned(),
            None => session.me.to_string(),
        };
        self.out
            .line(&Line::system(format!(
                "{verb} to {} as {who}",
                session.server
            )))
            .await;
        // Names were asked for, but the server has none.
        if !session.rooms && self.options.rooms {
            self.out
                .line(&Line::system(
                    "this server has one room and no names (protocol version 1)",
                ))
                .await;
        }

        let (sender, mut events) = client.split();
        for room in rejoin {
            if let Err(e) = sender.join(room).await {
                tracing::debug!(error = %e, "join again failed");
            }
        }
        if part_lobby && let Err(e) = sender.part(LOBBY).await {
            tracing::debug!(error = %e, "part failed");
        }

        let mut leaving = false;
        // The server said it is shutting down: the end is not our leaving.
        let mut server_exit = false;
        let end = loop {
            tokio::select! {
                event = events.next_event() => match event {
                    Ok(Some(event)) => {
                        server_exit |= event == Event::ServerExit;
                        let meaning = self.state.apply(&event);
                        self.show(&event, &meaning).await;
                    }
                    // Our exit was acknowledged, or the server said it is
                    // shutting down (its line is out already).
                    Ok(None) if leaving && !server_exit => {
                        self.out.line(&Line::system("left the chat")).await;
                        break End::Left(ExitCode::SUCCESS);
                    }
                    Ok(None) => break End::Lost(String::new()),
                    Err(e) if leaving => {
                        self.out.error(e.to_string()).await;
                        break End::Left(ExitCode::FAILURE);
                    }
                    Err(e) => break End::Lost(e.to_string()),
                },
                input = self.inputs.recv(), if !leaving => match input.unwrap_or(Input::Leave) {
                    Input::Leave => leaving = leave(&sender, false),
                    Input::Logout if session.account.is_none() => {
                        self.out.error("not logged in (log in with --login or --register)").await;
                    }
                    Input::Logout => {
                        if let Some(file) = &self.token_file {
                            let _ = std::fs::remove_file(file);
                        }
                        leaving = leave(&sender, true);
                    }
                    input => self.act(&sender, input).await,
                },
                Some(()) = self.interrupted.recv(), if !leaving => leaving = leave(&sender, false),
            }
        };
        // Where we were in each conversation: the next connection resumes there.
        self.options.resume = events.marks().clone();
        if matches!(end, End::Lost(_)) && !self.pending.is_empty() {
            let n = self.pending.len();
            let lines = if n == 1 { "line was" } else { "lines were" };
            self.out
                .line(&Line::system(format!(
                    "{n} {lines} sent but not confirmed stored before the connection \
                     dropped; after reconnecting, those stored show as history (~)"
                )))
                .await;
        }
        self.pending.clear();
        self.asked.clear();
        end
    }

    /// Shows an event.
    async fn show(&mut self, event: &Event, meaning: &crate::state::Meaning) {
        match event {
            Event::Stored { seq, .. } => {
                if let Some((line, _)) = self.pending.remove(seq) {
                    self.out.line(&line).await;
                }
            }
            Event::Unstored {
                seq,
                conversation,
                code,
                detail,
            } => {
                let text = self.pending.remove(seq).map(|(_, text)| text);
                let line = render::unstored(conversation, *code, detail, text.as_deref());
                self.out.line(&line).await;
            }
            Event::Page {
                conversation,
                entries,
                missing,
                more,
            } => {
                let me = self.state.name.as_deref();
                for line in render::page(conversation, entries, *missing, me) {
                    self.out.line(&line).await;
                }
                // Answers come in the order asked; the library's own pages
                // carry no news when empty, so only ours are counted.
                let key = conversation.name().to_lowercase();
                let ours = matches!(conversation, Conversation::Room(_))
                    .then(|| self.asked.iter().position(|(k, _)| *k == key))
                    .flatten();
                if let Some(i) = ours {
                    self.asked[i].1 += entries.len();
                    if !*more {
                        let (_, shown) = self.asked.remove(i);
                        if shown == 0 && !*missing {
                            let room = render::room(conversation.name());
                            self.out
                                .line(&Line::system(format!("no messages in {room} yet")))
                                .await;
                        }
                    }
                }
            }
            event => self.out.line(&render::event(event, meaning)).await,
        }
    }

    /// Carries out one input on a live connection.
    async fn act(&mut self, sender: &Sender, input: Input) {
        let rooms_on = sender.session().rooms;
        let result = match input {
            Input::Say(text) if !rooms_on => {
                let me = sender.session().me.to_string();
                let sent = sender.send(text.as_str()).await;
                self.echo(sent, render::own(None, &me, &text), text).await
            }
            Input::Say(text) => match self.state.current.clone() {
                Some(room) => {
                    let sent = sender.say(room.as_str(), text.as_str()).await;
                    let me = self.state.name.clone().unwrap_or_default();
                    let line = render::own(Some(&room), &me, &text);
                    self.echo(sent, line, text).await
                }
                None => {
                    self.out
                        .error("you are in no room: /join ROOM first, or /msg NAME TEXT")
                        .await;
                    Ok(())
                }
            },
            Input::Msg { to, text } => {
                let sent = sender.tell(to.as_str(), text.as_str()).await;
                let line = render::own_direct(&to, &text);
                self.echo(sent, line, text).await
            }
            Input::Nick(name) => sender.nick(name).await,
            Input::Join(room) => {
                let sent = sender.join(room.as_str()).await;
                if sent.is_ok() {
                    self.state.asked_to_join(&room);
                }
                sent
            }
            Input::Part(room) => match room.or_else(|| self.state.current.clone()) {
                Some(room) => sender.part(room).await,
                None if !rooms_on => sender.part(LOBBY).await,
                None => {
                    self.out.error("you are in no room").await;
                    Ok(())
                }
            },
            Input::Who(room) => match room.or_else(|| self.state.current.clone()) {
                Some(room) => sender.who(room).await,
                None if !rooms_on => sender.who(LOBBY).await,
                None => {
                    self.out.error("you are in no room: /who ROOM").await;
                    Ok(())
                }
            },
            Input::Rooms => sender.list_rooms().await,
            Input::History(_) if !sender.session().history => {
                self.out
                    .error("not available: this server keeps no history")
                    .await;
                Ok(())
            }
            Input::History(count) => match self.state.current.clone() {
                Some(room) => {
                    let count = count.unwrap_or(RECENT);
                    let asked = sender.recent(Conversation::Room(room.clone()), count).await;
                    if asked.is_ok() {
                        self.asked.push((room.to_lowercase(), 0));
                    }
                    asked
                }
                None => {
                    self.out.error("you are in no room: /join ROOM first").await;
                    Ok(())
                }
            },
            Input::Help => {
                self.out.text(COMMANDS).await;
                Ok(())
            }
            Input::Invalid(message) => {
                self.out.error(message).await;
                Ok(())
            }
            Input::Nothing | Input::Leave | Input::Logout => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(e @ Error::TooLong { .. }) => self.out.error(format!("not sent: {e}")).await,
            Err(Error::Unsupported { .. }) => {
                self.out
                    .error(
                        "not available: this server has one room and no names (protocol \
                         version 1); only plain lines, /help and /quit work here",
                    )
                    .await;
            }
            // The session is over; the events say why.
            Err(e) => tracing::debug!(error = %e, "request failed"),
        }
    }

    /// Shows what we sent: once it is written, or with history (a number)
    /// once the server has stored it.
    async fn echo(
        &mut self,
        sent: Result<u64, Error>,
        line: Line,
        text: String,
    ) -> Result<(), Error> {
        match sent? {
            0 => self.out.line(&line).await,
            seq => {
                self.pending.insert(seq, (line, text));
            }
        }
        Ok(())
    }

    /// Connects again, waiting longer after each failure, until it works
    /// (the new client) or the user leaves (`None`).
    async fn reconnect(&mut self) -> Option<Client> {
        let mut delay = FIRST_RETRY;
        let mut attempt = 1u32;
        loop {
            let mut options = self.options.clone();
            // The name we had, which the server may have chosen for us.
            options.name = self.state.name.clone().or(options.name);
            let server = self.server.clone();
            let attempt_once = async move {
                tokio::time::sleep(delay).await;
                Client::connect_with(server.as_str(), options).await
            };
            tokio::pin!(attempt_once);
            let result = loop {
                tokio::select! {
                    result = &mut attempt_once => break result,
                    input = self.inputs.recv() => match input.unwrap_or(Input::Leave) {
                        Input::Leave => return None,
                        Input::Help => self.out.text(COMMANDS).await,
                        Input::Nothing => {}
                        Input::Invalid(message) => self.out.error(message).await,
                        _ => self.out.error("not sent: not connected (reconnecting)").await,
                    },
                    Some(()) = self.interrupted.recv() => return None,
                }
            };
            match result {
                Ok(client) => return Some(client),
                // The token no longer works (expired, revoked): trying
                // again will not change that.
                Err(e @ Error::Login { .. }) => {
                    self.out
                        .error(format!("{e}; log in again with --login"))
                        .await;
                    return None;
                }
                Err(e) => {
                    delay = (delay * 2).min(MAX_RETRY);
                    if attempt < QUIET_AFTER {
                        self.out
                            .line(&Line::system(format!(
                                "reconnect attempt {attempt} failed: {e}; next in {:.1} s",
                                delay.as_secs_f32()
                            )))
                            .await;
                    } else if attempt == QUIET_AFTER {
                        self.out
                            .line(&Line::system(format!(
                                "reconnect attempt {attempt} failed: {e}; still trying, every {} s, \
                                 without saying so (/quit to stop)",
                                MAX_RETRY.as_secs()
                            )))
                            .await;
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
}

/// Ctrl-C (SIGINT), as a channel that is listening from the moment this returns.
pub(crate) fn interrupts() -> mpsc::Receiver<()> {
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

/// Starts leaving (by logging out, with `logout`); the event stream ends
/// once the server has acknowledged.
fn leave(sender: &Sender, logout: bool) -> bool {
    let sender = sender.clone();
    tokio::spawn(async move {
        // A failure (say, no acknowledgement in time) also ends the events,
        // which report it.
        let left = if logout {
            sender.logout().await
        } else {
            sender.exit().await
        };
        if let Err(e) = left {
            tracing::debug!(error = %e, logout, "leaving failed");
        }
    });
    true
}
