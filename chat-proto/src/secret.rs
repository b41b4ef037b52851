//! [`Secret`]: a password or token that never shows in `Debug` output.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A password or a login token, as carried by [`Message::Register`],
/// [`Message::Login`], [`Message::LoginToken`] and [`Message::LoggedIn`].
///
/// On the wire it is a plain string. `Debug` prints `Secret(***)`, so that
/// logging a message never logs its secret; [`expose`](Secret::expose)
/// gives the text to whoever must check it.
///
/// ```
/// use chat_proto::Secret;
/// let password = Secret::from("correct horse");
/// assert_eq!(format!("{password:?}"), "Secret(***)");
/// assert_eq!(password.expose(), "correct horse");
/// ```
///
/// [`Message::Register`]: crate::Message::Register
/// [`Message::Login`]: crate::Message::Login
/// [`Message::LoginToken`]: crate::Message::LoginToken
/// [`Message::LoggedIn`]: crate::Message::LoggedIn
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(transparent)]
pub struct Secret(#[serde(deserialize_with = "crate::message::text::de")] String);

impl Secret {
    /// The secret's text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (a `LoggedIn` after `LoginToken` carries none).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Whether a password or token may pass between this end and `peer` (the
/// other end's address) over this connection (PROTOCOL.md section 10.3):
/// over TLS always, in plaintext only when `peer` is a loopback address
/// (an IPv4-mapped one included). A server refuses a secret that breaks
/// this rule (`Insecure`); a client does not send it.
///
/// ```
/// use chat_proto::secret_may_travel;
/// assert!(secret_may_travel("127.0.0.1".parse().unwrap(), false));
/// assert!(!secret_may_travel("192.0.2.7".parse().unwrap(), false));
/// assert!(secret_may_travel("192.0.2.7".parse().unwrap(), true));
/// ```
pub fn secret_may_travel(peer: IpAddr, encrypted: bool) -> bool {
    encrypted || peer.to_canonical().is_loopback()
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_travel_in_plaintext_only_over_loopback() {
        for (ip, local) in [
            ("127.0.0.1", true),
            ("127.3.2.1", true),
            ("127.8.9.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("192.168.1.2", false),
            ("::ffff:10.0.0.1", false),
            ("2001:db8::1", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(secret_may_travel(ip, false), local, "{ip}");
            assert!(secret_may_travel(ip, true), "{ip} over TLS");
        }
    }
}
