//! API keys for services: integrations, and the roles of a scaled-out deployment. A key is
//! `mk_<key id>_<secret>`, shown once when made; the secret store keeps the key id, the roles and
//! a SHA-256 hash of the secret. Keys are checked against a short-lived cache of their rows, so a
//! revocation reaches every process within [`CACHE_FOR`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::Role;
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::error::IdentityError;
use crate::principal::Principal;
use crate::store::{SecretStore, now_ms, roles_of, roles_text};

/// How long a process trusts what it read of a key.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
const KEY_PREFIX: &str = "mk_";
const KEY_ID_CHARS: usize = 16;

/// A key as listed for an operator (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub key_id: String,
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Debug)]
struct CachedKey {
    secret_hash: String,
    roles: BTreeSet<Role>,
    revoked: bool,
    read_at: Instant,
}

/// The API keys of this deployment.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    secrets: SecretStore,
    cache: Arc<Mutex<HashMap<String, CachedKey>>>,
}

/// Why an API key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("the API key is not in the form mk_<key id>_<secret>")]
    Malformed,
    #[error("the API key is not known, or its secret is wrong")]
    Unknown,
    #[error("the API key was revoked")]
    Revoked,
}

/// Splits `mk_<key id>_<secret>`.
fn parts(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    if rest.len() <= KEY_ID_CHARS + 1 || !rest.is_char_boundary(KEY_ID_CHARS) {
        return None;
    }
    let (key_id, secret) = rest.split_at(KEY_ID_CHARS);
    let secret = secret.strip_prefix('_')?;
    key_id
        .bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some((key_id, secret))
}

/// Whether a bearer credential is an API key rather than a JWT.
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(KEY_PREFIX)
}

impl ApiKeys {
    pub fn new(secrets: SecretStore) -> ApiKeys {
        ApiKeys {
            secrets,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Makes a key with `roles`; answers its id and the whole key (shown once, never stored).
    pub async fn create(
        &self,
        name: &str,
        roles: &BTreeSet<Role>,
    ) -> Result<(String, String), IdentityError> {
        let mut id_bytes = [0_u8; KEY_ID_CHARS / 2];
        rand::fill(&mut id_bytes);
        let key_id: String = id_bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        let secret = crate::random_secret("");
        sqlx::query(
            "INSERT INTO api_keys (key_id, secret_hash, roles, name, created_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&key_id)
        .bind(crate::sha256_hex(&secret))
        .bind(roles_text(roles))
        .bind(name)
        .bind(now_ms())
        .execute(self.secrets.pool())
        .await?;
        Ok((key_id.clone(), format!("{KEY_PREFIX}{key_id}_{secret}")))
    }

    /// Every key, newest first.
    pub async fn list(&self) -> Result<Vec<ApiKeyInfo>, IdentityError> {
        let rows = sqlx::query(
            "SELECT key_id, name, roles, created_at, revoked_at FROM api_keys
             ORDER BY created_at DESC, key_id",
        )
        .fetch_all(self.secrets.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let roles: String = row.try_get(2)?;
                Ok(ApiKeyInfo {
                    key_id: row.try_get(0)?,
                    name: row.try_get(1)?,
                    roles: roles_of(&roles),
                    created_at: row.try_get(3)?,
                    revoked_at: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// Revokes key `key_id`; answers whether it existed and was not revoked already.
    pub async fn revoke(&self, key_id: &str) -> Result<bool, IdentityError> {
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(key_id)
        .execute(self.secrets.pool())
        .await?;
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key_id);
        Ok(revoked.rows_affected() == 1)
    }

    /// Whether any key that is not revoked holds the admin role.
    pub async fn any_admin(&self) -> Result<bool, IdentityError> {
        let rows = sqlx::query("SELECT roles FROM api_keys WHERE revoked_at IS NULL")
            .fetch_all(self.secrets.pool())
            .await?;
        for row in rows {
            let roles: String = row.try_get(0)?;
            if roles_of(&roles).contains(&Role::Admin) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn read(&self, key_id: &str) -> Result<Option<CachedKey>, IdentityError> {
        if let Some(cached) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key_id)
            && cached.read_at.elapsed() < CACHE_FOR
        {
            return Ok(Some(cached.clone()));
        }
        let row =
            sqlx::query("SELECT secret_hash, roles, revoked_at FROM api_keys WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(self.secrets.pool())
                .await?;
        let key = match row {
            Some(row) => {
                let roles: String = row.try_get(1)?;
                let revoked_at: Option<i64> = row.try_get(2)?;
                Some(CachedKey {
                    secret_hash: row.try_get(0)?,
                    roles: roles_of(&roles),
                    revoked: revoked_at.is_some(),
                    read_at: Instant::now(),
                })
            }
            None => None,
        };
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= 10_000 {
            cache.clear();
        }
        // Unknown ids are not cached: a flood of made-up ids must not fill the cache.
        if let Some(key) = &key {
            cache.insert(key_id.to_owned(), key.clone());
        }
        Ok(key)
    }

    /// The service principal of `key`.
    pub async fn authenticate(
        &self,
        key: &str,
    ) -> Result<Result<Principal, ApiKeyError>, IdentityError> {
        let Some((key_id, secret)) = parts(key) else {
            return Ok(Err(ApiKeyError::Malformed));
        };
        let Some(stored) = self.read(key_id).await? else {
            return Ok(Err(ApiKeyError::Unknown));
        };
        let hash = crate::sha256_hex(secret);
        if !bool::from(hash.as_bytes().ct_eq(stored.secret_hash.as_bytes())) {
            return Ok(Err(ApiKeyError::Unknown));
        }
        if stored.revoked {
            return Ok(Err(ApiKeyError::Revoked));
        }
        Ok(Ok(Principal::Service {
            key_id: key_id.to_owned(),
            roles: stored.roles,
        }))
    }
}
