//! Access tokens of an external OpenID Connect issuer (`OIDC_ISSUER_URL`, `OIDC_AUDIENCE`).
//!
//! The issuer's discovery document names its JWKS; its keys are fetched when a token first
//! needs them, kept, and fetched again (at most every 30 s) when a token names a key not among
//! them. Algorithms are pinned:
//! RS256, ES256 and EdDSA only (never `none`, never an HMAC whose "key" is public), and a key
//! that says which algorithm it is for must be used with that one. A token must name the issuer
//! as `iss`, the configured audience in `aud`, and not be expired.
//!
//! Its subject becomes a customer whose id is a UUID derived from the issuer and the subject,
//! the same on every login; a token carrying `mercato_roles` (an array of role names) makes its
//! holder staff with those roles, for a shop whose staff sign in through its own identity
//! provider.

use std::collections::BTreeSet;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use domain::Role;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::IdentityError;
use crate::principal::Principal;
use crate::signing::{CLOCK_LEEWAY, TokenError};

/// The algorithms accepted from an external issuer.
pub const OIDC_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of an external issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer's URL, as its tokens name it in `iss`.
    pub issuer: String,
    /// The audience a token must be for.
    pub audience: String,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Debug, Deserialize)]
struct ExternalClaims {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(default)]
    mercato_roles: Option<Vec<String>>,
}

#[derive(Debug)]
struct Keys {
    jwks_uri: String,
    set: JwkSet,
}

/// A verifier of one external issuer's tokens. It reads the issuer's discovery document and
/// keys when a token first needs them (and again when a token names an unknown key), so a
/// process starts, and an operator's command runs, whether or not the issuer answers.
#[derive(Debug)]
pub struct OidcVerifier {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<Option<Keys>>,
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl OidcVerifier {
    pub fn new(settings: OidcSettings) -> Result<OidcVerifier, IdentityError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| {
                IdentityError::Config(format!("cannot make an HTTP client: {error}"))
            })?;
        Ok(OidcVerifier {
            settings,
            http,
            keys: RwLock::new(None),
            refetch: tokio::sync::Mutex::new(None),
        })
    }

    /// Reads the issuer's discovery document and keys now (what `serve` does at start, to say
    /// early that the issuer cannot be reached).
    pub async fn check(&self) -> Result<(), IdentityError> {
        let keys = self.fetch().await?;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keys);
        Ok(())
    }

    async fn fetch(&self) -> Result<Keys, IdentityError> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let discovery_url = format!("{issuer}/.well-known/openid-configuration");
        let discovery: Discovery = fetch_json(&self.http, &discovery_url).await.map_err(|error| {
            IdentityError::Config(format!(
                "cannot read the OIDC discovery document at {discovery_url} (check OIDC_ISSUER_URL): {error}"
            ))
        })?;
        if discovery.issuer.trim_end_matches('/') != issuer {
            return Err(IdentityError::Config(format!(
                "the OIDC discovery document at {discovery_url} names the issuer {:?}, not OIDC_ISSUER_URL {:?}",
                discovery.issuer, self.settings.issuer
            )));
        }
        let set = fetch_keys(&self.http, &discovery.jwks_uri).await?;
        Ok(Keys {
            jwks_uri: discovery.jwks_uri,
            set,
        })
    }

    /// The issuer this verifier accepts.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Whether a token naming `iss` is this issuer's.
    pub fn is_issuer(&self, iss: &str) -> bool {
        iss.trim_end_matches('/') == self.settings.issuer.trim_end_matches('/')
    }

    fn key_for(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Option<DecodingKey>, TokenError> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(keys) = keys.as_ref() else {
            return Ok(None);
        };
        let found = match kid {
            Some(kid) => keys.set.find(kid),
            None if keys.set.keys.len() == 1 => keys.set.keys.first(),
            None => return Err(TokenError::Invalid("it names no key (kid)".to_owned())),
        };
        let Some(jwk) = found else {
            return Ok(None);
        };
        if let Some(key_algorithm) = jwk.common.key_algorithm {
            let matches = format!("{key_algorithm:?}") == format!("{algorithm:?}");
            if !matches {
                return Err(TokenError::Invalid(format!(
                    "its key is for {key_algorithm:?}, not {algorithm:?}"
                )));
            }
        }
        DecodingKey::from_jwk(jwk)
            .map(Some)
            .map_err(|error| TokenError::Invalid(format!("its key cannot be used: {error}")))
    }

    /// Reads the keys again, at most every [`REFETCH_AT_MOST_EVERY`].
    async fn refetch_keys(&self) {
        let mut last = self.refetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFETCH_AT_MOST_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let known_uri = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|keys| keys.jwks_uri.clone());
        let fetched = match known_uri {
            Some(jwks_uri) => fetch_keys(&self.http, &jwks_uri)
                .await
                .map(|set| Keys { jwks_uri, set }),
            None => self.fetch().await,
        };
        match fetched {
            Ok(keys) => {
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keys);
            }
            Err(error) => tracing::warn!(%error, "cannot fetch the OIDC issuer's keys"),
        }
    }

    /// The principal of an access token of this issuer, and when the token expires (seconds
    /// since the epoch).
    pub async fn verify(&self, token: &str) -> Result<(Principal, i64), TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| TokenError::Invalid(format!("its header does not read: {error}")))?;
        if !OIDC_ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::Invalid(format!(
                "it is signed with {:?}; tokens of {} must use RS256, ES256 or EdDSA",
                header.alg, self.settings.issuer
            )));
        }
        let mut key = self.key_for(header.kid.as_deref(), header.alg)?;
        if key.is_none() {
            self.refetch_keys().await;
            key = self.key_for(header.kid.as_deref(), header.alg)?;
        }
        let key = key.ok_or_else(|| {
            TokenError::Invalid(format!(
                "it is signed by a key {} does not publish (or its keys cannot be read)",
                self.settings.issuer
            ))
        })?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[
            self.settings.issuer.as_str(),
            self.settings.issuer.trim_end_matches('/'),
        ]);
        validation.set_audience(&[self.settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = CLOCK_LEEWAY.as_secs();
        let claims = jsonwebtoken::decode::<ExternalClaims>(token, &key, &validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(error.to_string()),
            })?
            .claims;
        Ok((principal_of(&claims), claims.exp))
    }
}

/// The principal an external token stands for.
fn principal_of(claims: &ExternalClaims) -> Principal {
    let user_id = Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("{}#{}", claims.iss, claims.sub).as_bytes(),
    );
    let roles: BTreeSet<Role> = claims
        .mercato_roles
        .iter()
        .flatten()
        .filter_map(|name| Role::parse(name))
        .collect();
    if roles.is_empty() {
        Principal::Customer { user_id }
    } else {
        Principal::Staff { user_id, roles }
    }
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        return Err(format!("it answered {}", response.status()));
    }
    response.json().await.map_err(|error| error.to_string())
}

async fn fetch_keys(http: &reqwest::Client, jwks_uri: &str) -> Result<JwkSet, IdentityError> {
    fetch_json(http, jwks_uri).await.map_err(|error| {
        IdentityError::Config(format!(
            "cannot read the OIDC issuer's keys at {jwks_uri}: {error}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_external_subject_is_one_customer_and_roles_make_it_staff() {
        let claims = ExternalClaims {
            iss: "https://id.example.com".to_owned(),
            sub: "abc".to_owned(),
            exp: 0,
            mercato_roles: None,
        };
        let first = principal_of(&claims);
        assert_eq!(first, principal_of(&claims));
        assert!(matches!(first, Principal::Customer { .. }));
        let staff = principal_of(&ExternalClaims {
            mercato_roles: Some(vec!["support".to_owned(), "root".to_owned()]),
            ..claims
        });
        assert!(staff.has_role(Role::Support));
        assert!(!staff.has_role(Role::Catalog));
    }
}
