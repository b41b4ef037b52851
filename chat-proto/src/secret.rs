//! [`Secret`]: a password or token that never shows in `Debug` output.

use std::fmt;

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
