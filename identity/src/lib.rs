//! Who calls mercato and what they may do.
//!
//! - [`principal`]: who a request comes from (anonymous, a customer, staff, a service).
//! - [`authenticate`]: from an `Authorization` header to a principal.
//! - [`signing`]: the EdDSA keys that sign access tokens, their rotation, the JWKS.
//! - [`oidc`]: access tokens of an external OpenID Connect issuer.
//! - [`api_keys`]: keys for services.
//! - [`accounts`]: register, log in, refresh, profile, passwords, deactivate, erase.
//! - [`credentials`], [`sessions`], [`throttle`]: what a login needs, refresh and one-time
//!   tokens, and the throttle of failed logins.
//! - [`password`]: the rules of a new password, argon2id hashes off the async runtime.
//! - [`person_keys`], [`profile`]: personal data sealed per person, and erasure by destroying
//!   the key (crypto-shredding).
//! - [`resource_tokens`]: the cart and order tokens of guests.
//! - [`vault`]: the payment-token vault.
//! - [`idempotency`]: the answers kept for `Idempotency-Key` retries.
//! - [`store`]: the secret store all of these keep their rows in.
//!
//! [`Identity::open`] opens all of it for a process.

pub mod accounts;
pub mod api_keys;
pub mod authenticate;
pub mod credentials;
mod error;
pub mod idempotency;
pub mod oidc;
pub mod password;
pub mod person_keys;
pub mod principal;
pub mod profile;
pub mod resource_tokens;
pub mod sessions;
pub mod signing;
pub mod store;
pub mod throttle;
pub mod vault;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eventstore::EventStore;
use sha2::{Digest, Sha256};

pub use accounts::{AccountError, Accounts, OneTimeLink, ProfileInput, Session};
pub use api_keys::ApiKeys;
pub use authenticate::{AuthError, Authenticated, Authenticator};
pub use error::IdentityError;
pub use idempotency::{Claim, IdempotencyRecords, StoredAnswer};
pub use oidc::OidcSettings;
pub use person_keys::{Opened, PersonKeys};
pub use principal::{GUEST_CUSTOMER_ID, Principal, guest_actor};
pub use resource_tokens::{Resource, ResourceTokens};
pub use sessions::Purpose;
pub use signing::SigningKeys;
pub use store::{SecretStore, identity_db_url};
pub use vault::PaymentVault;

/// Unpadded base64url, the encoding of every token and key text here.
pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The bytes of unpadded base64url text, if it is that.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// A random 256-bit secret as text, after `prefix`.
pub(crate) fn random_secret(prefix: &str) -> String {
    let mut bytes = [0_u8; 32];
    rand::fill(&mut bytes);
    format!("{prefix}{}", encode(&bytes))
}

/// The SHA-256 of `text`, in hex: how high-entropy secrets are stored.
pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What identity needs from the configuration.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// The event store's URL: the secret store is beside it ([`identity_db_url`]).
    pub store_url: String,
    /// `MERCATO_SIGNING_KEY`: a PKCS#8 PEM Ed25519 key that signs instead of the stored ones.
    pub signing_key_pem: Option<String>,
    /// `OIDC_ISSUER_URL` and `OIDC_AUDIENCE`.
    pub oidc: Option<OidcSettings>,
    /// Where the shop's pages are, for links in emails.
    pub public_url: String,
}

/// How long the answer to a request with an `Idempotency-Key` is kept (the contract's 24 hours).
pub const IDEMPOTENCY_KEEP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How long a request with a key may hold it before a retry may run it again (its process died):
/// well beyond the longest a request may take.
pub const IDEMPOTENCY_STALE: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything identity holds for a running process.
#[derive(Clone, Debug)]
pub struct Identity {
    pub secrets: SecretStore,
    pub signing: SigningKeys,
    pub api_keys: ApiKeys,
    pub authenticator: Authenticator,
    pub person_keys: PersonKeys,
    pub resource_tokens: ResourceTokens,
    pub vault: PaymentVault,
    pub idempotency: IdempotencyRecords,
    pub accounts: Accounts,
    /// The external issuer, when one is configured.
    pub oidc: Option<Arc<oidc::OidcVerifier>>,
}

impl Identity {
    /// Opens the secret store beside `settings.store_url` (creating it), the signing keys (a
    /// first key made if there is none), the OIDC issuer's keys if one is configured, and the
    /// accounts over `store`.
    pub async fn open(
        settings: &IdentitySettings,
        store: Arc<dyn EventStore>,
    ) -> Result<Identity, IdentityError> {
        // One JOSE backend is built in (RustCrypto); naming it keeps that true whatever else
        // the dependency graph enables.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let secrets = SecretStore::open(&identity_db_url(&settings.store_url)).await?;
        let signing =
            SigningKeys::open(secrets.clone(), settings.signing_key_pem.as_deref()).await?;
        let api_keys = ApiKeys::new(secrets.clone());
        let oidc = match &settings.oidc {
            Some(oidc) => Some(Arc::new(oidc::OidcVerifier::new(oidc.clone())?)),
            None => None,
        };
        let person_keys = PersonKeys::new(secrets.clone());
        let credentials = credentials::Credentials::open(secrets.clone()).await?;
        let accounts = Accounts::new(accounts::AccountParts {
            store,
            credentials: credentials.clone(),
            person_keys: person_keys.clone(),
            sessions: sessions::Sessions::new(secrets.clone()),
            one_time: sessions::OneTimeTokens::new(secrets.clone()),
            throttle: throttle::LoginThrottle::new(secrets.clone()),
            signing: signing.clone(),
            public_url: settings.public_url.clone(),
        });
        Ok(Identity {
            authenticator: Authenticator::new(
                signing.clone(),
                api_keys.clone(),
                credentials,
                oidc.clone(),
            ),
            oidc,
            resource_tokens: ResourceTokens::open(&secrets).await?,
            vault: PaymentVault::new(secrets.clone()),
            idempotency: IdempotencyRecords::new(
                secrets.clone(),
                IDEMPOTENCY_KEEP,
                IDEMPOTENCY_STALE,
            ),
            secrets,
            signing,
            api_keys,
            person_keys,
            accounts,
        })
    }

    /// Whether an administrator exists: an admin account, or an API key with the admin role.
    pub async fn admin_exists(&self) -> Result<bool, IdentityError> {
        Ok(self.accounts.admin_exists().await? || self.api_keys.any_admin().await?)
    }
}
