//! From an `Authorization` header to a [`Principal`].
//!
//! `Bearer <JWT>` is an access token of mercato's own (or of the configured OIDC issuer, by its
//! `iss`); `Bearer mk_...` an API key; no header, anonymous. A token once verified is remembered
//! for a minute at most (and never past its expiry; at most 50,000 of them), so a client that
//! sends the same token with every request pays for one signature check a minute. Each time one
//! of mercato's own tokens is verified, its account must still be active: a deactivated or
//! erased account's tokens stop working within that minute, not only when they expire.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use domain::Role;
use uuid::Uuid;

use crate::api_keys::{ApiKeyError, ApiKeys, is_api_key};
use crate::credentials::Credentials;
use crate::error::IdentityError;
use crate::oidc::OidcVerifier;
use crate::principal::Principal;
use crate::signing::{AccessClaims, SigningKeys, TokenError};

/// The most verified tokens remembered.
const VERIFIED_CAPACITY: usize = 50_000;
/// How long a verified token is remembered before its account is looked at again (seconds).
const VERIFIED_FOR: i64 = 60;

/// Why a request's credentials were refused (answered 401, or 503 when the store is down).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The header is not `Bearer <credential>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    ApiKey(#[from] ApiKeyError),
    /// The secret store could not be read to check an API key.
    #[error(transparent)]
    Unavailable(#[from] IdentityError),
}

impl AuthError {
    /// The `error` of RFC 6750's `WWW-Authenticate` (`invalid_request` or `invalid_token`).
    pub fn bearer_error(&self) -> &'static str {
        match self {
            AuthError::Malformed => "invalid_request",
            _ => "invalid_token",
        }
    }
}

/// What a request's credentials proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub principal: Principal,
    /// The session of one of mercato's access tokens (its `sid`), which `DELETE
    /// /sessions/current` ends.
    pub session_id: Option<String>,
}

impl Authenticated {
    fn anonymous() -> Authenticated {
        Authenticated {
            principal: Principal::Anonymous,
            session_id: None,
        }
    }
}

/// A verified token's principal and when it stops being valid (seconds since the epoch).
#[derive(Clone, Debug)]
struct Verified {
    authenticated: Authenticated,
    expires_at: i64,
}

/// Resolves credentials to principals.
#[derive(Debug, Clone)]
pub struct Authenticator {
    signing: SigningKeys,
    api_keys: ApiKeys,
    credentials: Credentials,
    oidc: Option<Arc<OidcVerifier>>,
    verified: Arc<RwLock<HashMap<Box<str>, Verified>>>,
}

/// The principal mercato's own access token stands for.
pub fn principal_of_claims(claims: &AccessClaims) -> Result<Principal, TokenError> {
    let user_id = Uuid::parse_str(&claims.sub)
        .map_err(|_| TokenError::Invalid("its subject is not a user id".to_owned()))?;
    Ok(match claims.kind.as_str() {
        "staff" => Principal::Staff {
            user_id,
            roles: claims
                .roles
                .iter()
                .filter_map(|name| Role::parse(name))
                .collect::<BTreeSet<Role>>(),
        },
        "customer" => Principal::Customer { user_id },
        other => {
            return Err(TokenError::Invalid(format!(
                "its kind {other:?} is neither customer nor staff"
            )));
        }
    })
}

/// The issuer a JWT names, read without checking anything (to pick the verifier).
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = crate::decode(payload)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

impl Authenticator {
    pub fn new(
        signing: SigningKeys,
        api_keys: ApiKeys,
        credentials: Credentials,
        oidc: Option<Arc<OidcVerifier>>,
    ) -> Self {
        Authenticator {
            signing,
            api_keys,
            credentials,
            oidc,
            verified: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// What a request with this `Authorization` header value (or none) is.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Authenticated, AuthError> {
        let Some(value) = authorization else {
            return Ok(Authenticated::anonymous());
        };
        let credential = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|credential| !credential.is_empty() && !credential.contains(' '))
            .ok_or(AuthError::Malformed)?;
        if is_api_key(credential) {
            return Ok(Authenticated {
                principal: self.api_keys.authenticate(credential).await??,
                session_id: None,
            });
        }
        let now = chrono::Utc::now().timestamp();
        if let Some(verified) = self
            .verified
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(credential)
            && verified.expires_at > now
        {
            return Ok(verified.authenticated.clone());
        }
        let (authenticated, expires_at) = match (&self.oidc, unverified_issuer(credential)) {
            (Some(oidc), Some(issuer)) if oidc.is_issuer(&issuer) => {
                let (principal, expires_at) = oidc.verify(credential).await?;
                let authenticated = Authenticated {
                    principal,
                    session_id: None,
                };
                (authenticated, expires_at)
            }
            _ => {
                let claims = self.signing.verify(credential).await?;
                let principal = principal_of_claims(&claims)?;
                self.require_active(&principal).await?;
                let authenticated = Authenticated {
                    principal,
                    session_id: Some(claims.sid.clone()),
                };
                (authenticated, claims.exp)
            }
        };
        self.remember(
            credential,
            &authenticated,
            expires_at.min(now + VERIFIED_FOR),
            now,
        );
        Ok(authenticated)
    }

    /// Refuses the token of an account that can no longer log in (deactivated, or erased and
    /// its credentials gone).
    async fn require_active(&self, principal: &Principal) -> Result<(), AuthError> {
        let Some(user_id) = principal.user_id() else {
            return Ok(());
        };
        let active = self
            .credentials
            .by_user(user_id)
            .await?
            .is_some_and(|credential| credential.status == domain::UserStatus::Active);
        if active {
            Ok(())
        } else {
            Err(AuthError::Token(TokenError::Invalid(
                "its account was deactivated or erased".to_owned(),
            )))
        }
    }

    fn remember(&self, credential: &str, authenticated: &Authenticated, expires_at: i64, now: i64) {
        let mut verified = self
            .verified
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, entry| entry.expires_at > now);
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(
            credential.into(),
            Verified {
                authenticated: authenticated.clone(),
                expires_at,
            },
        );
    }
}
