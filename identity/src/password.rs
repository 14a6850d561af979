//! Passwords: the rules a new one must pass, and argon2id hashes computed off the async runtime.
//!
//! The parameters are OWASP's (Password Storage Cheat Sheet, argon2id, first configuration):
//! 19 MiB of memory (m = 19456 KiB), 2 iterations (t = 2), 1 lane (p = 1), a 16-byte random
//! salt and a 32-byte hash, stored in the PHC string format (`$argon2id$v=19$m=19456,t=2,p=1$...`)
//! so that a later change of parameters still verifies older hashes. Hashing runs on tokio's
//! blocking pool, at most [`CONCURRENT_HASHES`] at a time, so a burst of logins bounds its memory
//! and never stalls the threads that serve requests.

use std::collections::HashSet;
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use domain::ids::FieldError;
use tokio::sync::Semaphore;

use crate::error::IdentityError;

/// argon2id memory cost in KiB (19 MiB).
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
/// argon2id iterations.
pub const ARGON2_ITERATIONS: u32 = 2;
/// argon2id lanes.
pub const ARGON2_PARALLELISM: u32 = 1;
/// How many hashes are computed at once, at most (each holds 19 MiB while it runs).
pub const CONCURRENT_HASHES: usize = 4;

/// The fewest characters a password may have (OWASP ASVS 2.1.1).
pub const PASSWORD_MIN_CHARS: usize = 12;
/// The most characters a password may have (ASVS 2.1.2 asks to allow at least 64).
pub const PASSWORD_MAX_CHARS: usize = 128;

/// 20,000 common passwords, lower case (Django's list, compiled by Royce Williams; see
/// `identity/data/README.md`).
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

static HASHING: Semaphore = Semaphore::const_new(CONCURRENT_HASHES);

fn argon2() -> Argon2<'static> {
    // The parameters are constants within argon2's limits.
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        Some(32),
    )
    .unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a new password against the rules: [`PASSWORD_MIN_CHARS`] to [`PASSWORD_MAX_CHARS`]
/// characters, not one character repeated, and not a common password (nor a common one with
/// digits or punctuation added at its end, such as `password123456`), nor the account's email
/// address. `field` names the input in the error.
pub fn check_new_password(
    field: &'static str,
    password: &str,
    email: Option<&str>,
) -> Result<(), FieldError> {
    let length = password.chars().count();
    if length < PASSWORD_MIN_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at least {PASSWORD_MIN_CHARS} characters, got {length}"),
        ));
    }
    if length > PASSWORD_MAX_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at most {PASSWORD_MAX_CHARS} characters, got {length}"),
        ));
    }
    if password.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    let lower = password.to_lowercase();
    let mut characters = lower.chars();
    let first = characters.next();
    if characters.all(|c| Some(c) == first) {
        return Err(FieldError::new(field, "must not be one character repeated"));
    }
    let stem = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    if COMMON_PASSWORDS.contains(lower.as_str())
        || (stem.chars().count() >= 4 && COMMON_PASSWORDS.contains(stem))
    {
        return Err(FieldError::new(
            field,
            "is one of the most common passwords (or one with digits added): choose another, a few unrelated words make a good one",
        ));
    }
    if let Some(email) = email
        && (lower == email.to_lowercase()
            || email
                .split('@')
                .next()
                .is_some_and(|local| local.len() >= 4 && lower.contains(&local.to_lowercase())))
    {
        return Err(FieldError::new(
            field,
            "must not be or contain the account's email address",
        ));
    }
    Ok(())
}

/// The argon2id hash of `password` in PHC format, computed on the blocking pool.
pub async fn hash_password(password: String) -> Result<String, IdentityError> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|error| IdentityError::Hashing(error.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let mut salt_bytes = [0_u8; 16];
        rand::fill(&mut salt_bytes);
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|error| IdentityError::Hashing(error.to_string()))?;
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| IdentityError::Hashing(error.to_string()))
    })
    .await
    .map_err(|error| IdentityError::Hashing(error.to_string()))?
}

/// Whether `password` matches `hash` (a PHC string; a hash that does not parse matches nothing),
/// computed on the blocking pool with the parameters the hash names.
pub async fn verify_password(password: String, hash: String) -> Result<bool, IdentityError> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|error| IdentityError::Hashing(error.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(|error| IdentityError::Hashing(error.to_string()))
}

/// A hash of a random password with the same parameters, to verify against when the account
/// does not exist: a login for an unknown email then costs what a wrong password costs.
pub async fn decoy_hash() -> Result<String, IdentityError> {
    let mut random = [0_u8; 24];
    rand::fill(&mut random);
    hash_password(crate::encode(&random)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_of_12_to_128_characters_that_is_not_common_passes() {
        assert_eq!(
            check_new_password("password", "correct horse battery", None),
            Ok(())
        );
        assert_eq!(
            check_new_password("password", &"ab".repeat(64), None),
            Ok(())
        );
        let short = check_new_password("password", "short pass", None).unwrap_err();
        assert!(short.message.contains("at least 12"), "{short}");
        let long = check_new_password("new_password", &"ab".repeat(65), None).unwrap_err();
        assert_eq!(long.field, "new_password");
        assert!(long.message.contains("at most 128"), "{long}");
    }

    #[test]
    fn common_passwords_repeated_characters_and_the_email_are_refused() {
        for common in [
            "qwertyuiop123",
            "Password123456",
            "1q2w3e4r5t6y",
            "iloveyou!!!!!!",
        ] {
            let error = check_new_password("password", common, None).expect_err(common);
            assert!(error.message.contains("common"), "{common}: {error}");
        }
        assert!(check_new_password("password", "aaaaaaaaaaaaaa", None).is_err());
        let error = check_new_password("password", "annalee-secret-9", Some("annalee@example.com"))
            .unwrap_err();
        assert!(error.message.contains("email"), "{error}");
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hash = hash_password("correct horse battery".to_owned())
            .await
            .expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            verify_password("correct horse battery".to_owned(), hash.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify_password("correct horse batterY".to_owned(), hash)
                .await
                .unwrap()
        );
        assert!(
            !verify_password("anything".to_owned(), "not a hash".to_owned())
                .await
                .unwrap()
        );
    }
}
