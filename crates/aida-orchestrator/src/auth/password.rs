//! Passwords: the policy a new one must meet, and argon2id hashing with
//! OWASP's parameters (19 MiB of memory, 2 iterations, 1 lane).

use std::sync::LazyLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// The shortest password accepted.
pub const MIN_LEN: usize = 12;
/// The longest: more only costs hashing time.
pub const MAX_LEN: usize = 1024;

fn argon2() -> Argon2<'static> {
    // 19 MiB = 19456 KiB, t = 2, p = 1: OWASP's first recommendation.
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Names every rule `password` breaks, or `Ok` if it meets the policy.
pub fn check_policy(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    let mut missing = Vec::new();
    if chars < MIN_LEN {
        missing.push(format!("at least {MIN_LEN} characters (it has {chars})"));
    }
    if password.len() > MAX_LEN {
        missing.push(format!("at most {MAX_LEN} bytes"));
    }
    if !password.chars().any(char::is_uppercase) {
        missing.push("an uppercase letter".to_owned());
    }
    if !password.chars().any(char::is_lowercase) {
        missing.push("a lowercase letter".to_owned());
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        missing.push("a digit".to_owned());
    }
    if !password
        .chars()
        .any(|c| !c.is_alphanumeric() && !c.is_whitespace())
    {
        missing.push("a symbol (such as ! or #)".to_owned());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the password does not meet the policy: it needs {}",
            missing.join(", ")
        ))
    }
}

/// An argon2id PHC string of `password` with a fresh salt. Slow on
/// purpose (tens of milliseconds): call it off the async runtime.
pub fn hash(password: &str) -> anyhow::Result<String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password failed: {e}"))
}

/// Whether `password` matches the stored `phc` string. As slow as
/// [`hash`]; a malformed `phc` never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash no password matches by chance, checked when the user does not
/// exist, so that an unknown name takes as long as a wrong password.
static DECOY: LazyLock<String> =
    LazyLock::new(|| hash(&aida_core::secret::random_hex(32)).unwrap_or_default());

/// Spends the time of one verification, for unknown users.
pub fn verify_decoy(password: &str) {
    let _ = verify(password, &DECOY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_each_rule_that_fails() {
        assert!(check_policy("Correct-Horse-9").is_ok());
        let err = check_policy("short").unwrap_err();
        for rule in [
            "at least 12 characters (it has 5)",
            "an uppercase letter",
            "a digit",
            "a symbol",
        ] {
            assert!(err.contains(rule), "{err}");
        }
        assert!(!err.contains("lowercase"), "{err}");
        let err = check_policy("ALLUPPERCASE123!").unwrap_err();
        assert!(err.ends_with("it needs a lowercase letter"), "{err}");
    }

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let phc = hash("Correct-Horse-9").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("Correct-Horse-9", &phc));
        assert!(!verify("Correct-Horse-8", &phc));
        assert!(!verify("Correct-Horse-9", "not a hash"));
        assert_ne!(hash("Correct-Horse-9").unwrap(), phc, "salted");
    }
}
