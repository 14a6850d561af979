//! The keys that sign access tokens, and the access tokens themselves.
//!
//! Access tokens are JWTs signed with Ed25519 (`alg: EdDSA`), each naming its key (`kid`). The
//! keys live in the secret store (`signing_keys`; on the embedded setup that is the owner-only
//! file `mercato-identity.db` under `--data-dir`). The first start makes one; `mercato
//! signing-keys rotate` makes a new one that signs from then on and retires the others, which
//! keep verifying (and stay in the JWKS) until the last token they signed has expired. A key
//! given in `MERCATO_SIGNING_KEY` (PKCS#8 PEM) signs instead of the stored ones, which still
//! verify. Every process reloads the key ring once a minute, and at once (at most every five
//! seconds) when a token names a key it does not know or the JWKS is asked for, so a rotation in
//! one process reaches the others without a restart; a process signs with the new key within a
//! minute of the rotation.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use zeroize::Zeroizing;

use crate::error::IdentityError;
use crate::store::{SecretStore, now_ms};

/// The issuer and audience of mercato's own access tokens.
pub const TOKEN_ISSUER: &str = "mercato";
pub const TOKEN_AUDIENCE: &str = "mercato";
/// How long an access token is valid.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Clock skew tolerated when checking `exp` and `iat`.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(30);
/// How often every process reads the key ring again.
const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// How soon an unknown `kid`, or a request for the JWKS, may make a process read the key ring
/// again.
const RELOAD_ON_UNKNOWN_KID_EVERY: Duration = Duration::from_secs(5);

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// This token's own id.
    pub jti: String,
    /// The session (the refresh-token family) the token belongs to.
    pub sid: String,
    /// `customer` or `staff`.
    pub kind: String,
    /// The staff roles (empty for a customer).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// One key of the ring.
#[derive(Clone)]
struct RingKey {
    kid: String,
    public: [u8; 32],
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    created_at: i64,
    retired_at: Option<i64>,
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RingKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl RingKey {
    fn of(
        signing_key: &SigningKey,
        created_at: i64,
        retired_at: Option<i64>,
    ) -> Result<RingKey, IdentityError> {
        let public = signing_key.verifying_key().to_bytes();
        let der = Zeroizing::new(
            signing_key
                .to_pkcs8_der()
                .map_err(|error| IdentityError::Crypto(error.to_string()))?
                .as_bytes()
                .to_vec(),
        );
        Ok(RingKey {
            kid: key_id(&public),
            public,
            signing: Some(EncodingKey::from_ed_der(&der)),
            verifying: DecodingKey::from_ed_components(&crate::encode(&public))
                .map_err(|error| IdentityError::Crypto(error.to_string()))?,
            created_at,
            retired_at,
        })
    }

    /// Whether the key still verifies at `now`: a retired key verifies for as long as a token
    /// it signed just before its retirement can live.
    fn verifies_at(&self, now: i64) -> bool {
        let grace =
            i64::try_from((ACCESS_TOKEN_TTL + CLOCK_LEEWAY).as_millis()).unwrap_or(i64::MAX);
        self.retired_at
            .is_none_or(|retired_at| now < retired_at.saturating_add(grace))
    }

    fn jwk(&self) -> Value {
        json!({ "kty": "OKP", "crv": "Ed25519", "x": crate::encode(&self.public), "kid": self.kid,
            "alg": "EdDSA", "use": "sig" })
    }
}

/// The key id of a public key: its SHA-256 thumbprint, shortened.
fn key_id(public: &[u8; 32]) -> String {
    let digest = Sha256::digest(public);
    crate::encode(&digest[..12])
}

#[derive(Debug, Default)]
struct Ring {
    /// Newest first.
    keys: Vec<RingKey>,
    loaded_at: Option<Instant>,
}

/// The signing keys of this deployment.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    secrets: SecretStore,
    configured: Option<RingKey>,
    ring: RwLock<Ring>,
    last_unknown_reload: std::sync::Mutex<Option<Instant>>,
}

/// Why an access token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid: {0}")]
    Invalid(String),
}

fn random_signing_key() -> SigningKey {
    let mut seed = Zeroizing::new([0_u8; 32]);
    rand::fill(seed.as_mut_slice());
    SigningKey::from_bytes(&seed)
}

impl SigningKeys {
    /// The key ring of `secrets`, with a first key made if there is none, and the key of
    /// `configured_pem` (PKCS#8 PEM of an Ed25519 key, from `MERCATO_SIGNING_KEY`) signing if
    /// given.
    pub async fn open(
        secrets: SecretStore,
        configured_pem: Option<&str>,
    ) -> Result<SigningKeys, IdentityError> {
        let configured = match configured_pem {
            Some(pem) => {
                let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|error| {
                    IdentityError::Config(format!(
                        "MERCATO_SIGNING_KEY is not a PKCS#8 PEM Ed25519 private key ({error}); make one with `openssl genpkey -algorithm ed25519`"
                    ))
                })?;
                Some(RingKey::of(&key, 0, None)?)
            }
            None => None,
        };
        let keys = SigningKeys {
            inner: Arc::new(Inner {
                secrets,
                configured,
                ring: RwLock::new(Ring::default()),
                last_unknown_reload: std::sync::Mutex::new(None),
            }),
        };
        if keys.inner.configured.is_none() && keys.stored().await?.is_empty() {
            keys.insert_new_key().await?;
        }
        keys.reload().await?;
        Ok(keys)
    }

    /// The stored keys: those that sign first, then the retired ones, newest first (a rotation
    /// within the same millisecond as the key it retires still lists the new key first).
    async fn stored(&self) -> Result<Vec<RingKey>, IdentityError> {
        let rows = sqlx::query(
            "SELECT private_key, created_at, retired_at FROM signing_keys
             WHERE algorithm = 'EdDSA'
             ORDER BY CASE WHEN retired_at IS NULL THEN 0 ELSE 1 END, created_at DESC,
                 retired_at DESC, kid",
        )
        .fetch_all(self.inner.secrets.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let private: String = row.try_get(0)?;
                let der = Zeroizing::new(crate::decode(&private).ok_or_else(|| {
                    IdentityError::Crypto("a stored signing key is not base64".to_owned())
                })?);
                let key = SigningKey::from_pkcs8_der(&der).map_err(|error| {
                    IdentityError::Crypto(format!("a stored signing key: {error}"))
                })?;
                RingKey::of(&key, row.try_get(1)?, row.try_get(2)?)
            })
            .collect()
    }

    async fn insert_new_key(&self) -> Result<String, IdentityError> {
        let key = random_signing_key();
        let now = now_ms();
        let ring_key = RingKey::of(&key, now, None)?;
        let der = Zeroizing::new(
            key.to_pkcs8_der()
                .map_err(|error| IdentityError::Crypto(error.to_string()))?
                .as_bytes()
                .to_vec(),
        );
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, created_at, retired_at)
             VALUES ($1, 'EdDSA', $2, $3, NULL)",
        )
        .bind(&ring_key.kid)
        .bind(crate::encode(&der))
        .bind(now)
        .execute(self.inner.secrets.pool())
        .await?;
        Ok(ring_key.kid)
    }

    /// Makes a new signing key and retires the others (they verify until their tokens
    /// expire); answers the new key's id. Other processes pick it up within a minute, or as
    /// soon as a token signed with it reaches them.
    pub async fn rotate(&self) -> Result<String, IdentityError> {
        let kid = self.insert_new_key().await?;
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND kid <> $2",
        )
        .bind(now_ms())
        .bind(&kid)
        .execute(self.inner.secrets.pool())
        .await?;
        self.reload().await?;
        Ok(kid)
    }

    /// Reads the key ring from the secret store.
    pub async fn reload(&self) -> Result<(), IdentityError> {
        let stored = self.stored().await?;
        let mut ring = self
            .inner
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.keys = stored;
        ring.loaded_at = Some(Instant::now());
        Ok(())
    }

    async fn reload_if_stale(&self) {
        let stale = self
            .inner
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .loaded_at
            .is_none_or(|loaded_at| loaded_at.elapsed() >= RELOAD_EVERY);
        if stale && let Err(error) = self.reload().await {
            tracing::warn!(%error, "cannot read the signing keys again; using the ones loaded");
        }
    }

    /// The key that signs: the configured one, else the newest stored one not retired.
    fn signer(&self) -> Result<(String, EncodingKey), IdentityError> {
        if let Some(configured) = &self.inner.configured
            && let Some(signing) = &configured.signing
        {
            return Ok((configured.kid.clone(), signing.clone()));
        }
        let ring = self
            .inner
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.keys
            .iter()
            .find(|key| key.retired_at.is_none())
            .or_else(|| ring.keys.first())
            .and_then(|key| Some((key.kid.clone(), key.signing.clone()?)))
            .ok_or_else(|| IdentityError::Config("there is no signing key".to_owned()))
    }

    /// Signs `claims` as an access token.
    pub async fn sign(&self, claims: &AccessClaims) -> Result<String, IdentityError> {
        self.reload_if_stale().await;
        let (kid, key) = self.signer()?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid);
        header.typ = Some("at+jwt".to_owned());
        jsonwebtoken::encode(&header, claims, &key)
            .map_err(|error| IdentityError::Crypto(format!("signing an access token: {error}")))
    }

    /// The verifying key named `kid`, if it still verifies.
    fn verifier(&self, kid: &str) -> Option<DecodingKey> {
        let now = now_ms();
        if let Some(configured) = &self.inner.configured
            && configured.kid == kid
        {
            return Some(configured.verifying.clone());
        }
        let ring = self
            .inner
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.keys
            .iter()
            .find(|key| key.kid == kid && key.verifies_at(now))
            .map(|key| key.verifying.clone())
    }

    /// Whether an unknown key id may make this process read the ring again now.
    fn may_reload_for_unknown_kid(&self) -> bool {
        let mut last = self
            .inner
            .last_unknown_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < RELOAD_ON_UNKNOWN_KID_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Verifies an access token of mercato's own: `alg` must be EdDSA, the `kid` a key of the
    /// ring that still verifies, the signature good, issuer and audience mercato's, and the
    /// token not expired (30 s of clock skew allowed).
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| TokenError::Invalid(format!("its header does not read: {error}")))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(format!(
                "it is signed with {:?}; mercato's tokens are EdDSA",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("it names no key (kid)".to_owned()))?;
        self.reload_if_stale().await;
        let mut key = self.verifier(&kid);
        if key.is_none() && self.may_reload_for_unknown_kid() {
            if let Err(error) = self.reload().await {
                tracing::warn!(%error, "cannot read the signing keys again");
            }
            key = self.verifier(&kid);
        }
        let key = key.ok_or_else(|| {
            TokenError::Invalid(
                "it is signed by a key this shop does not know (or no longer trusts)".to_owned(),
            )
        })?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = CLOCK_LEEWAY.as_secs();
        jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(error.to_string()),
            })
    }

    /// The public keys that verify tokens now, as a JSON Web Key Set. The ring is read again
    /// first when the last read is a few seconds old, so a rotation shows at once.
    pub async fn jwks(&self) -> Value {
        if self.may_reload_for_unknown_kid() {
            if let Err(error) = self.reload().await {
                tracing::warn!(%error, "cannot read the signing keys again; using the ones loaded");
            }
        } else {
            self.reload_if_stale().await;
        }
        let now = now_ms();
        let ring = self
            .inner
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys: Vec<Value> = self
            .inner
            .configured
            .iter()
            .chain(ring.keys.iter().filter(|key| key.verifies_at(now)))
            .map(RingKey::jwk)
            .collect();
        json!({ "keys": keys })
    }

    /// The stored keys as `(kid, created_at, retired_at)` (ms), the signing ones first, for
    /// operators.
    pub async fn list(&self) -> Result<Vec<(String, i64, Option<i64>)>, IdentityError> {
        Ok(self
            .stored()
            .await?
            .into_iter()
            .map(|key| (key.kid, key.created_at, key.retired_at))
            .collect())
    }

    /// The public key of `kid` (raw 32 bytes), for tests and tools.
    pub fn public_key(&self, kid: &str) -> Option<VerifyingKey> {
        let ring = self
            .inner
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.keys
            .iter()
            .chain(self.inner.configured.iter())
            .find(|key| key.kid == kid)
            .and_then(|key| VerifyingKey::from_bytes(&key.public).ok())
    }
}
