//! Cart and order tokens: how a guest, who has no account, proves a cart or an order is theirs.
//! A token is an HMAC-SHA-256 of the resource's id under a key of the shop (made on first start,
//! kept in the secret store), so nothing is stored per cart or order, every process of the
//! deployment checks it alike, and no one without the key can make one for an id they guessed.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::IdentityError;
use crate::store::SecretStore;

type HmacSha256 = Hmac<Sha256>;

/// The kinds of resource a guest holds a token for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Cart,
    Order,
}

impl Resource {
    fn label(self) -> &'static str {
        match self {
            Resource::Cart => "cart",
            Resource::Order => "order",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Resource::Cart => "ct_",
            Resource::Order => "ot_",
        }
    }
}

/// Makes and checks cart and order tokens.
#[derive(Clone)]
pub struct ResourceTokens {
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ResourceTokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ResourceTokens { .. }")
    }
}

impl ResourceTokens {
    /// The tokens of this deployment, with their key made on first use.
    pub async fn open(secrets: &SecretStore) -> Result<ResourceTokens, IdentityError> {
        let text = secrets
            .setting_or_insert("resource_token_key", || {
                let mut key = [0_u8; 32];
                rand::fill(&mut key);
                crate::encode(&key)
            })
            .await?;
        let key = crate::decode(&text)
            .filter(|key| key.len() == 32)
            .ok_or_else(|| IdentityError::Crypto("the resource token key is corrupt".to_owned()))?;
        Ok(ResourceTokens {
            key: Zeroizing::new(key),
        })
    }

    fn mac(&self, resource: Resource, id: &str) -> HmacSha256 {
        #[allow(clippy::expect_used)]
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(resource.label().as_bytes());
        mac.update(b":");
        mac.update(id.as_bytes());
        mac
    }

    /// The token of `resource` `id`.
    pub fn token(&self, resource: Resource, id: &str) -> String {
        format!(
            "{}{}",
            resource.prefix(),
            crate::encode(&self.mac(resource, id).finalize().into_bytes())
        )
    }

    /// Whether `token` is the token of `resource` `id` (compared in constant time).
    pub fn verify(&self, resource: Resource, id: &str, token: &str) -> bool {
        let Some(tag) = token
            .strip_prefix(resource.prefix())
            .and_then(crate::decode)
        else {
            return false;
        };
        self.mac(resource, id).verify_slice(&tag).is_ok()
    }
}
