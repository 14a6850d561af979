//! What can go wrong in identity, by what the caller must do about it.

use domain::ids::FieldError;

/// A failure of identity's own machinery (storage, keys, mail), as opposed to a refusal of what
/// a caller asked (which each operation answers with its own error type).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The secret store could not be read or written.
    #[error("the secret store failed: {0}")]
    Storage(String),
    /// A key or a sealed value is not what it must be (a corrupt row, a changed key).
    #[error("a key or sealed value is unusable: {0}")]
    Crypto(String),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
    /// An aggregate could not be loaded from the event store.
    #[error(transparent)]
    Load(#[from] eventstore::aggregate::LoadError),
    /// A setting is not usable (a signing key that is not an Ed25519 key, an OIDC issuer that
    /// cannot be read).
    #[error("{0}")]
    Config(String),
    /// Hashing a password did not finish (its blocking task failed).
    #[error("hashing a password failed: {0}")]
    Hashing(String),
    /// The input broke a rule (a weak password, a malformed email).
    #[error(transparent)]
    Invalid(#[from] FieldError),
}

impl From<sqlx::Error> for IdentityError {
    fn from(error: sqlx::Error) -> Self {
        IdentityError::Storage(error.to_string())
    }
}
