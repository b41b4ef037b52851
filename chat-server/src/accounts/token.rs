//! Session tokens: `"<selector>.<secret>"`, the selector 16 random bytes in
//! hex (the store's key for the token, not a secret on its own), the
//! secret 32 random bytes in unpadded base64url. The store keeps only the
//! secret's SHA-256 digest, compared in constant time, so a copy of the
//! store logs nobody in.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of a selector.
const SELECTOR: usize = 16;
/// Bytes of a secret.
const SECRET: usize = 32;
/// Characters of a token: the selector's hex, a dot, the secret's base64.
const TEXT_LEN: usize = 2 * SELECTOR + 1 + 43;

/// Which token: its selector. Enough to revoke it, not to log in with.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TokenId(pub(super) [u8; SELECTOR]);

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({})", hex(&self.0))
    }
}

/// The SHA-256 digest of a token's secret: what the store keeps.
pub(super) type Digest32 = [u8; 32];

/// A new token: its id, the text handed to the client once, and the digest
/// to store.
pub(super) struct Fresh {
    pub(super) id: TokenId,
    pub(super) text: String,
    pub(super) digest: Digest32,
}

impl fmt::Debug for Fresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fresh")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Makes a token from the OS's random number generator.
pub(super) fn fresh() -> Result<Fresh, getrandom::Error> {
    let mut selector = [0u8; SELECTOR];
    let mut secret = [0u8; SECRET];
    getrandom::fill(&mut selector)?;
    getrandom::fill(&mut secret)?;
    let mut text = hex(&selector);
    text.push('.');
    text.push_str(&Base64UrlUnpadded::encode_string(&secret));
    Ok(Fresh {
        id: TokenId(selector),
        text,
        digest: Sha256::digest(secret).into(),
    })
}

/// The id and the secret's digest of a token's text; `None` if it is not
/// shaped like a token.
pub(super) fn parse(text: &str) -> Option<(TokenId, Digest32)> {
    if text.len() != TEXT_LEN {
        return None;
    }
    let (selector, secret) = text.split_once('.')?;
    let mut id = [0u8; SELECTOR];
    if selector.len() != 2 * SELECTOR {
        return None;
    }
    for (byte, pair) in id.iter_mut().zip(selector.as_bytes().chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    let mut raw = [0u8; SECRET];
    let decoded = Base64UrlUnpadded::decode(secret, &mut raw).ok()?;
    if decoded.len() != SECRET {
        return None;
    }
    Some((TokenId(id), Sha256::digest(raw).into()))
}

/// Whether two digests are equal, in time independent of where they differ.
pub(super) fn matches(stored: &Digest32, given: &Digest32) -> bool {
    stored.ct_eq(given).into()
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// A lowercase hex digit's value.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}
