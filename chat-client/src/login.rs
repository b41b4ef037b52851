//! Logging in: how a client asks to be named with an account (the AUTH
//! capability, PROTOCOL.md section 10), and what it got.

use std::net::SocketAddr;

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

/// Whether a secret may be sent to `server` over this connection: over TLS
/// always, in plaintext only to a loopback address.
pub(crate) fn may_send_secret(server: SocketAddr, tls: bool) -> bool {
    tls || server.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_go_in_plaintext_only_to_loopback() {
        for (addr, ok) in [
            ("127.0.0.1:1", true),
            ("127.8.9.1:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("192.168.1.2:1", false),
            ("[2001:db8::1]:1", false),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(may_send_secret(addr, false), ok, "{addr}");
            assert!(may_send_secret(addr, true), "{addr}");
        }
    }

    #[test]
    fn a_login_shows_no_secret() {
        let login = Login::Password {
            name: "alice".into(),
            password: "hunter2-hunter2".into(),
        };
        assert!(!format!("{login:?} {:?}", login.message()).contains("hunter2"));
    }
}
