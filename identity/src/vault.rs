//! The payment-token vault: where the gateway token a customer paid with waits until the saga
//! has charged it. Events carry only the vault's reference (`vault:<order id>`), so the token is
//! never in the log, in Kafka or in an answer; once the payment has an outcome the saga deletes
//! the token.

use uuid::Uuid;

use crate::error::IdentityError;
use crate::store::{SecretStore, now_ms};

/// The prefix of a vault reference.
pub const VAULT_PREFIX: &str = "vault:";

/// The vault.
#[derive(Clone, Debug)]
pub struct PaymentVault {
    secrets: SecretStore,
}

impl PaymentVault {
    pub fn new(secrets: SecretStore) -> PaymentVault {
        PaymentVault { secrets }
    }

    /// The reference of order `order_id`'s payment token.
    pub fn reference(order_id: Uuid) -> String {
        format!("{VAULT_PREFIX}{order_id}")
    }

    /// Keeps `token` for order `order_id` and answers its reference. Keeping the same order's
    /// token again (a retried checkout) keeps the first.
    pub async fn keep(&self, order_id: Uuid, token: &str) -> Result<String, IdentityError> {
        let reference = Self::reference(order_id);
        sqlx::query(
            "INSERT INTO payment_secrets (reference, token, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (reference) DO NOTHING",
        )
        .bind(&reference)
        .bind(token)
        .bind(now_ms())
        .execute(self.secrets.pool())
        .await?;
        Ok(reference)
    }

    /// The token kept under `reference`, if it is still there.
    pub async fn token(&self, reference: &str) -> Result<Option<String>, IdentityError> {
        Ok(
            sqlx::query_scalar("SELECT token FROM payment_secrets WHERE reference = $1")
                .bind(reference)
                .fetch_optional(self.secrets.pool())
                .await?,
        )
    }

    /// Deletes the token kept under `reference`.
    pub async fn forget(&self, reference: &str) -> Result<(), IdentityError> {
        sqlx::query("DELETE FROM payment_secrets WHERE reference = $1")
            .bind(reference)
            .execute(self.secrets.pool())
            .await?;
        Ok(())
    }
}
