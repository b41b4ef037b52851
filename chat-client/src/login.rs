//! Logging in: how a client asks to be named with an account (the AUTH
//! capability, PROTOCOL.md section 10), and what it got.

use chat_proto::{Message, Secret};

/// How [`Options::login`](crate::Options::login) names the client: with an
/// account instead of as a guest. The password or token goes only over TLS
/// or to a loopback address; otherwise connecting fails with
/// [`Error::Insecure`](crate::Error::Insecure) before anything is sent.
///
/// # Examples
///
/// ```
/// use chat_client::{Login, Options};
/// let mut options = Options::default();
/// options.login = Some(Login::Register {
///     name: "张三".into(),
///     password: "correct horse battery".into(),
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Login {
    /// Make an account `name` with `password` and log in to it.
    Register {
        /// The name to register.
        name: String,
        /// Its password: 8 to 256 bytes.
        password: Secret,
    },
    /// Log in to the account `name` with its password.
    Password {
        /// The account's name.
        name: String,
        /// Its password.
        password: Secret,
    },
    /// Log in with a token from an earlier session ([`Account::token`]).
    Token(Secret),
}

impl Login {
    /// The request that asks for it.
    pub(crate) fn message(&self) -> Message {
        match self {
            Login::Register { name, password } => Message::Register {
                name: name.clone(),
                password: password.clone(),
            },
            Login::Password { name, password } => Message::Login {
                name: name.clone(),
                password: password.clone(),
            },
            Login::Token(token) => Message::LoginToken {
                token: token.clone(),
            },
        }
    }
}

/// The account a session is logged in to ([`Session::account`](crate::Session::account)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Account {
    /// The account's name, as registered.
    pub name: String,
    /// The token to log in with next time ([`Login::Token`]): the new one
    /// the server gave, or the one this session logged in with.
    pub token: Secret,
    /// When the token stops working, in seconds since the Unix epoch.
    pub expires: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_shows_no_secret() {
        let login = Login::Password {
            name: "alice".into(),
            password: "hunter2-hunter2".into(),
        };
        assert!(!format!("{login:?} {:?}", login.message()).contains("hunter2"));
    }
}
