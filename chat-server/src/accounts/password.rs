//! Passwords: which are accepted, and their Argon2id hashes as PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), with OWASP's parameters.
//! A hash costs tens of milliseconds of one core on purpose: call these
//! off the async workers.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password, in bytes.
pub(crate) const MIN_LEN: usize = 8;
/// Longest password, in bytes.
pub(crate) const MAX_LEN: usize = 256;

/// OWASP's Argon2id settings: 19 MiB, 2 passes, 1 lane.
const M_COST: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// The hash of a password nobody knows, with the same parameters: checking
/// a login for a name that has no account against it costs what a real
/// check costs, so timing does not tell which names exist.
pub(super) const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$\
    c29tZSBzYWx0IGZvciB0aW1pbmc$7mBqwSN7vXu7l9JYpEp7jvoE1yIjJYvYQrIzxJcqhh8";

fn argon2() -> Argon2<'static> {
    // The constants are valid parameters; the fallback is never taken.
    let params = Params::new(M_COST, T_COST, P_COST, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why a password may not be registered, as a sentence for its owner; `Ok`
/// if it may.
pub(super) fn check(password: &str) -> Result<(), String> {
    let len = password.len();
    if len < MIN_LEN {
        return Err(format!(
            "a password needs at least {MIN_LEN} bytes (this one has {len})"
        ));
    }
    if len > MAX_LEN {
        return Err(format!(
            "a password has at most {MAX_LEN} bytes (this one has {len})"
        ));
    }
    Ok(())
}

/// The PHC string of `password` with a fresh random salt.
pub(super) fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Whether `password` is the one `phc` was made from. A `phc` that does
/// not parse matches nothing.
pub(super) fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => argon2().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_the_owasp_parameters() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsE", &phc));
        assert!(!verify("correct horse", "not a hash"));
        // Salted: the same password twice gives two hashes.
        assert_ne!(phc, hash("correct horse").unwrap());
    }

    #[test]
    fn the_dummy_costs_what_a_real_hash_costs() {
        let dummy = PasswordHash::new(DUMMY).unwrap();
        let real = hash("whatever you like").unwrap();
        let real = PasswordHash::new(&real).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(dummy.hash.map(|h| h.len()), real.hash.map(|h| h.len()));
        assert!(!verify("", DUMMY));
    }

    #[test]
    fn lengths_are_checked_in_bytes() {
        assert!(check("1234567").is_err());
        assert!(check("12345678").is_ok());
        assert!(check(&"é".repeat(128)).is_ok());
        assert!(check(&"é".repeat(129)).is_err());
    }
}
