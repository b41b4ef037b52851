//! Logging in (the AUTH capability, PROTOCOL.md section 10): the attempts
//! a session makes for an unnamed client, and its logout.
//!
//! An attempt hashes a password (tens of milliseconds) or writes the
//! account store, so it runs in a task of its own, never on the session's;
//! the session waits for its [`Outcome`] without reading further, so one
//! client's attempts are answered one at a time and in order. What may be
//! refused without the store (a secret over plaintext, an invalid name, a
//! name in use) is refused by the session before any of this.

use std::net::IpAddr;

use chat_proto::{Refusal, Secret};
use tokio::sync::oneshot;

use crate::accounts::{Accounts, AuthError, Login, TokenId};
use crate::names::Name;

/// What an unnamed client asked for, checked as far as it can be without
/// the store.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Make an account and log in to it.
    Register { name: Name, password: Secret },
    /// Log in with a password.
    Password { name: Name, password: Secret },
    /// Log in with a token.
    Token(Secret),
    /// Revoke the session's token (then the session ends).
    Logout(TokenId),
}

/// How an attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Logged in: the client is to be named after the account.
    LoggedIn(Box<Login>),
    /// Refused: the client is told why and stays unnamed.
    Refused {
        code: Refusal,
        subject: String,
        detail: String,
    },
    /// The token is revoked (or could not be).
    LoggedOut(Result<(), AuthError>),
}

/// A pending [`Outcome`].
pub(crate) type Pending = oneshot::Receiver<Outcome>;

/// Starts `attempt` for a client at `ip`; a refusal names `subject` (the
/// name as the client sent it, or nothing for a token).
pub(crate) fn start(accounts: &Accounts, attempt: Attempt, subject: &str, ip: IpAddr) -> Pending {
    let (tx, rx) = oneshot::channel();
    let accounts = accounts.clone();
    let subject = subject.to_owned();
    tokio::spawn(async move {
        let result = match attempt {
            Attempt::Register { name, password } => {
                accounts.register(&name, password.expose(), ip).await
            }
            Attempt::Password { name, password } => {
                accounts.login(&name, password.expose(), ip).await
            }
            Attempt::Token(token) => accounts.login_token(token.expose(), ip).await,
            Attempt::Logout(id) => {
                let _ = tx.send(Outcome::LoggedOut(accounts.logout(id).await));
                return;
            }
        };
        let outcome = match result {
            Ok(login) => Outcome::LoggedIn(Box::new(login)),
            Err(e) => Outcome::Refused {
                code: refusal(&e),
                subject,
                detail: e.to_string(),
            },
        };
        // The session may have ended meanwhile: nobody to tell.
        let _ = tx.send(outcome);
    });
    rx
}

/// The refusal code for a failed attempt.
pub(crate) fn refusal(err: &AuthError) -> Refusal {
    match err {
        AuthError::Failed => Refusal::AuthFailed,
        AuthError::Throttled { .. } => Refusal::Throttled,
        AuthError::Taken => Refusal::NameTaken,
        AuthError::Weak(_) => Refusal::BadPassword,
        AuthError::Unavailable(_) => Refusal::Unavailable,
    }
}

/// The metrics' label for a refused attempt (never anything the client sent).
pub(crate) fn reason(code: Refusal) -> &'static str {
    match code {
        Refusal::AuthFailed => "failed",
        Refusal::Throttled => "throttled",
        Refusal::Insecure => "insecure",
        Refusal::NameInvalid => "invalid_name",
        Refusal::NameTaken => "name_taken",
        Refusal::BadPassword => "bad_password",
        Refusal::Unavailable => "unavailable",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_its_code_and_label() {
        let cases = [
            (AuthError::Failed, Refusal::AuthFailed, "failed"),
            (
                AuthError::Throttled {
                    retry: std::time::Duration::from_secs(20),
                },
                Refusal::Throttled,
                "throttled",
            ),
            (AuthError::Taken, Refusal::NameTaken, "name_taken"),
            (
                AuthError::Weak("short".into()),
                Refusal::BadPassword,
                "bad_password",
            ),
            (
                AuthError::Unavailable("disk".into()),
                Refusal::Unavailable,
                "unavailable",
            ),
        ];
        for (err, code, label) in cases {
            assert_eq!(refusal(&err), code, "{err}");
            assert_eq!(reason(code), label);
        }
    }
}
