//! A session's part in logging in (the AUTH capability): an unnamed
//! client's `Register`, `Login` and `LoginToken`, checked and started here,
//! run by `login.rs` off the session's task, and their outcome; `Logout`.

use chat_proto::{Message, Refusal, secret_may_travel};
use tracing::{debug, info, warn};

use super::{Close, Session, Waiting, closed};
use crate::accounts::AuthError;
use crate::dispatch::Client;
use crate::login::{self, Attempt, Outcome};
use crate::names::{self, Name};
use crate::transport::Transport;

impl<T: Transport> Session<T> {
    /// An unnamed client's `Register`, `Login` or `LoginToken`: refused at
    /// once if it can be without the store, else started (see `login.rs`).
    pub(super) fn attempt(&mut self, msg: Message) -> Result<(), Close> {
        let (Some(client), Some(accounts)) = (&self.client, &self.shared.accounts) else {
            return Err(Close::Shutdown);
        };
        let (hub, metrics) = (&self.shared.hub, &self.shared.metrics);
        let refuse = |code, subject: &str, detail: &str| {
            metrics.auth_failure(login::reason(code));
            client.refuse(hub, code, subject, detail).map_err(closed)
        };
        let register = matches!(msg, Message::Register { .. });
        let (name, secret) = match msg {
            Message::Register { name, password } | Message::Login { name, password } => {
                (Some(name), password)
            }
            Message::LoginToken { token } => (None, token),
            _ => return Ok(()),
        };
        let subject = name.clone().unwrap_or_default();
        let subject = subject.as_str();
        if !secret_may_travel(self.addr.ip(), T::SECURE) {
            let detail = "passwords and tokens travel only over TLS or from this machine: \
                          reconnect with TLS";
            return refuse(Refusal::Insecure, subject, detail);
        }
        let attempt = match name {
            None => Attempt::Token(secret),
            Some(raw) => {
                let name = match Name::parse(&raw, self.shared.config.max_name_chars) {
                    Ok(name) => name,
                    Err(e) if register => {
                        return refuse(Refusal::NameInvalid, subject, &e.to_string());
                    }
                    // No account can have an invalid name.
                    Err(_) => {
                        return refuse(
                            Refusal::AuthFailed,
                            subject,
                            &AuthError::Failed.to_string(),
                        );
                    }
                };
                if register && names::is_guest(&name) {
                    let detail = "guest-N names are the server's to give";
                    return refuse(Refusal::NameInvalid, subject, detail);
                }
                if client.in_use(name.key()) {
                    let detail = format!("{name} is in use by a connected client");
                    return refuse(Refusal::NameTaken, subject, &detail);
                }
                if register {
                    Attempt::Register {
                        name,
                        password: secret,
                    }
                } else {
                    Attempt::Password {
                        name,
                        password: secret,
                    }
                }
            }
        };
        let pending = login::start(accounts, attempt, subject, self.addr.ip());
        self.waiting = Some(Box::new(Waiting::Attempt(pending)));
        Ok(())
    }

    /// `Logout`: revokes the session's token, then ends as `Exit` does (a
    /// guest's ends at once).
    pub(super) fn logout(&mut self) -> Result<(), Close> {
        let token = self.client.as_ref().and_then(Client::token);
        match (token, &self.shared.accounts) {
            (Some(id), Some(accounts)) => {
                let pending = login::start(accounts, Attempt::Logout(id), "", self.addr.ip());
                self.waiting = Some(Box::new(Waiting::Attempt(pending)));
                Ok(())
            }
            _ => Err(Close::Exit),
        }
    }

    /// A login attempt or logout has ended: the client is named, or told
    /// why not; a logout ends the session.
    pub(super) fn attempted(&mut self, outcome: Option<Box<Outcome>>) -> Result<(), Close> {
        let Some(client) = &mut self.client else {
            return Err(Close::Shutdown);
        };
        let hub = &self.shared.hub;
        let outcome = outcome.map_or_else(
            || Outcome::Refused {
                code: Refusal::Unavailable,
                subject: String::new(),
                detail: "the attempt failed on the server's side: try again".into(),
            },
            |o| *o,
        );
        match outcome {
            Outcome::LoggedIn(login) => {
                if client.logged_in(hub, &login).map_err(closed)? {
                    self.named();
                    info!(peer = %self.addr, name = %login.name, "logged in");
                } else if let Some(accounts) = &self.shared.accounts {
                    // Taken meanwhile: the token given for it is of no use.
                    let revoke = Attempt::Logout(login.token_id);
                    drop(login::start(accounts, revoke, "", self.addr.ip()));
                }
            }
            Outcome::Refused {
                code,
                subject,
                detail,
            } => {
                self.shared.metrics.auth_failure(login::reason(code));
                // The store's own error names its file: for the log only.
                let detail = if code == Refusal::Unavailable {
                    warn!(peer = %self.addr, "login failed: {detail}");
                    "the account store is unavailable: try again later".to_owned()
                } else {
                    debug!(peer = %self.addr, %code, "login refused: {detail}");
                    detail
                };
                client
                    .refuse(hub, code, &subject, &detail)
                    .map_err(closed)?;
            }
            Outcome::LoggedOut(Ok(())) => return Err(Close::Exit),
            Outcome::LoggedOut(Err(e)) => {
                warn!(peer = %self.addr, "logout failed: {e}");
                return Err(Close::Refuse(
                    "logout failed: the account store is unavailable; the token may still work"
                        .into(),
                ));
            }
        }
        self.held = false;
        Ok(())
    }
}
