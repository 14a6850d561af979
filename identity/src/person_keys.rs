//! Personal data sealed per person (crypto-shredding). Each person (an account, by its user id)
//! has a random 256-bit key in the secret store; every personal value that goes into an event
//! is sealed under it with XChaCha20-Poly1305 (a random 192-bit nonce per value, so nonces never
//! repeat in practice), bound to its person and field as associated data, so that a sealed value
//! copied into another person's event or another field does not open. Erasing the person deletes
//! the key: every sealed value of theirs, in the log, in read models, in Kafka messages and in
//! any backup, can no longer be opened, while the events themselves (and the hash chain over
//! their bytes) stay as they were.
//!
//! A sealed value is text: `pd1.` followed by the nonce and the ciphertext (with its tag) in
//! unpadded base64url.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use domain::Sealed;
use sqlx::Row;
use zeroize::Zeroizing;

use crate::error::IdentityError;
use crate::store::{SecretStore, now_ms};

/// The prefix of a sealed value of this format.
const SEALED_PREFIX: &str = "pd1.";
const NONCE_BYTES: usize = 24;

/// What a sealed value opened to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    Plain(String),
    /// The person's key was destroyed: the value is gone for good.
    Erased,
}

impl Opened {
    /// The plain text, or `None` once erased.
    pub fn into_plain(self) -> Option<String> {
        match self {
            Opened::Plain(text) => Some(text),
            Opened::Erased => None,
        }
    }
}

/// The person an order's personal data (its addresses) is sealed for: its customer, or, for a
/// guest's order, the order itself (a guest has no account; its order is its only record).
pub fn order_person(customer_id: &str, order_id: &str) -> String {
    if customer_id == crate::GUEST_CUSTOMER_ID {
        format!("order:{order_id}")
    } else {
        customer_id.to_owned()
    }
}

/// The keys of every person, and sealing and opening with them.
#[derive(Clone, Debug)]
pub struct PersonKeys {
    secrets: SecretStore,
}

fn associated_data(subject: &str, field: &str) -> Vec<u8> {
    format!("mercato:pd1:{subject}:{field}").into_bytes()
}

impl PersonKeys {
    pub fn new(secrets: SecretStore) -> PersonKeys {
        PersonKeys { secrets }
    }

    /// The key of `subject`, if it exists (it does not before the first seal, nor after erasure).
    pub(crate) async fn key(
        &self,
        subject: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, IdentityError> {
        let row = sqlx::query("SELECT key_material FROM person_keys WHERE subject = $1")
            .bind(subject)
            .fetch_optional(self.secrets.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let text: String = row.try_get(0)?;
        let key = crate::decode(&text)
            .filter(|key| key.len() == 32)
            .ok_or_else(|| IdentityError::Crypto(format!("the key of {subject} is corrupt")))?;
        Ok(Some(Zeroizing::new(key)))
    }

    /// The key of `subject`, made on first use.
    async fn key_or_create(&self, subject: &str) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        if let Some(key) = self.key(subject).await? {
            return Ok(key);
        }
        let mut fresh = Zeroizing::new(vec![0_u8; 32]);
        rand::fill(fresh.as_mut_slice());
        sqlx::query(
            "INSERT INTO person_keys (subject, key_material, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (subject) DO NOTHING",
        )
        .bind(subject)
        .bind(crate::encode(&fresh))
        .bind(now_ms())
        .execute(self.secrets.pool())
        .await?;
        // Another process may have made it first: use the stored one.
        self.key(subject)
            .await?
            .ok_or_else(|| IdentityError::Crypto(format!("the key of {subject} vanished")))
    }

    /// Seals `plain`, the value of `field` of person `subject`, creating the person's key if it
    /// does not exist yet.
    pub async fn seal(
        &self,
        subject: &str,
        field: &str,
        plain: &str,
    ) -> Result<Sealed, IdentityError> {
        let key = self.key_or_create(subject).await?;
        seal_with(&key, subject, field, plain)
    }

    /// Opens a value sealed by [`PersonKeys::seal`] for the same person and field.
    pub async fn open(
        &self,
        subject: &str,
        field: &str,
        sealed: &Sealed,
    ) -> Result<Opened, IdentityError> {
        let Some(key) = self.key(subject).await? else {
            return Ok(Opened::Erased);
        };
        open_with(&key, subject, field, sealed).map(Opened::Plain)
    }

    /// Whether `subject`'s key still exists.
    pub async fn exists(&self, subject: &str) -> Result<bool, IdentityError> {
        Ok(self.key(subject).await?.is_some())
    }

    /// Destroys `subject`'s key: every value sealed under it is erased, wherever it was copied.
    pub async fn destroy(&self, subject: &str) -> Result<(), IdentityError> {
        sqlx::query("DELETE FROM person_keys WHERE subject = $1")
            .bind(subject)
            .execute(self.secrets.pool())
            .await?;
        self.secrets.flush_deleted().await
    }
}

fn cipher(key: &[u8]) -> Result<XChaCha20Poly1305, IdentityError> {
    XChaCha20Poly1305::new_from_slice(key)
        .map_err(|_| IdentityError::Crypto("a person key is not 32 bytes".to_owned()))
}

fn seal_with(key: &[u8], subject: &str, field: &str, plain: &str) -> Result<Sealed, IdentityError> {
    let mut nonce = [0_u8; NONCE_BYTES];
    rand::fill(&mut nonce);
    let aad = associated_data(subject, field);
    let ciphertext = cipher(key)?
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| IdentityError::Crypto("sealing failed".to_owned()))?;
    let mut bytes = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&ciphertext);
    Ok(Sealed::from_sealed_text(format!(
        "{SEALED_PREFIX}{}",
        crate::encode(&bytes)
    )))
}

pub(crate) fn open_with(
    key: &[u8],
    subject: &str,
    field: &str,
    sealed: &Sealed,
) -> Result<String, IdentityError> {
    let corrupt = || IdentityError::Crypto(format!("a sealed {field} of {subject} does not open"));
    let bytes = sealed
        .as_sealed_text()
        .strip_prefix(SEALED_PREFIX)
        .and_then(crate::decode)
        .filter(|bytes| bytes.len() > NONCE_BYTES)
        .ok_or_else(corrupt)?;
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let aad = associated_data(subject, field);
    let plain = cipher(key)?
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| corrupt())?;
    String::from_utf8(plain).map_err(|_| corrupt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_person_and_field() {
        let key = [7_u8; 32];
        let sealed = seal_with(&key, "ann", "email", "ann@example.com").expect("seal");
        assert!(sealed.as_sealed_text().starts_with("pd1."));
        assert!(!sealed.as_sealed_text().contains("ann@example.com"));
        assert_eq!(
            open_with(&key, "ann", "email", &sealed).expect("open"),
            "ann@example.com"
        );
        assert!(open_with(&key, "bob", "email", &sealed).is_err());
        assert!(open_with(&key, "ann", "name", &sealed).is_err());
        assert!(open_with(&[8_u8; 32], "ann", "email", &sealed).is_err());
        let again = seal_with(&key, "ann", "email", "ann@example.com").expect("seal");
        assert_ne!(again, sealed, "every seal has its own nonce");
    }
}
