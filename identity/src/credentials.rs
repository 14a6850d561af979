//! The credentials table: one row per account that logs in with a password. It holds what a
//! login needs and no event may: the password hash, and the account's email as a keyed hash
//! (HMAC-SHA-256 under a key of the shop), so an account is found by its address without the
//! address being stored in the clear. It also holds the account's kind, roles and status as they
//! were last set, so a login and a token refresh read one row.

use std::collections::BTreeSet;

use domain::{AccountKind, Role, UserStatus};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::Row;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::IdentityError;
use crate::store::{SecretStore, column, now_ms, roles_of, roles_text};

/// An account's credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub user_id: Uuid,
    pub password_hash: String,
    pub kind: AccountKind,
    pub roles: BTreeSet<Role>,
    pub status: UserStatus,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credential")
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("roles", &self.roles)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// What an attempt to add credentials found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    Added,
    /// Another account has this email.
    EmailTaken {
        user_id: Uuid,
    },
}

/// The credentials of every account.
#[derive(Clone)]
pub struct Credentials {
    secrets: SecretStore,
    lookup_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Credentials { .. }")
    }
}

fn status_text(status: UserStatus) -> &'static str {
    status.as_str()
}

fn status_of(text: &str) -> UserStatus {
    match text {
        "deactivated" => UserStatus::Deactivated,
        "erased" => UserStatus::Erased,
        _ => UserStatus::Active,
    }
}

fn kind_of(text: &str) -> AccountKind {
    match text {
        "staff" => AccountKind::Staff,
        _ => AccountKind::Customer,
    }
}

impl Credentials {
    /// The credentials table of `secrets`, with the email lookup key made on first use.
    pub async fn open(secrets: SecretStore) -> Result<Credentials, IdentityError> {
        let text = secrets
            .setting_or_insert("email_lookup_key", || {
                let mut key = [0_u8; 32];
                rand::fill(&mut key);
                crate::encode(&key)
            })
            .await?;
        let lookup_key = crate::decode(&text)
            .filter(|key| key.len() == 32)
            .ok_or_else(|| IdentityError::Crypto("the email lookup key is corrupt".to_owned()))?;
        Ok(Credentials {
            secrets,
            lookup_key: Zeroizing::new(lookup_key),
        })
    }

    /// The keyed hash an account is found by, of a normalized email address (any case).
    pub fn email_lookup(&self, normalized_email: &str) -> String {
        #[allow(clippy::expect_used)]
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.lookup_key)
            .expect("HMAC takes a key of any length");
        mac.update(domain::personal::email_lookup_form(normalized_email).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Adds credentials for a new account. An address another account has is refused, unless
    /// that account's registration never finished (no event of it was stored: `exists` says
    /// so), whose row is then taken over.
    pub async fn add<F, Fut>(
        &self,
        user_id: Uuid,
        email_lookup: &str,
        password_hash: &str,
        kind: AccountKind,
        roles: &BTreeSet<Role>,
        exists: F,
    ) -> Result<Added, IdentityError>
    where
        F: FnOnce(Uuid) -> Fut,
        Fut: std::future::Future<Output = Result<bool, IdentityError>>,
    {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO credentials (user_id, email_lookup, password_hash, kind, roles, status,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'active', $6, $6)
             ON CONFLICT (email_lookup) DO NOTHING",
        )
        .bind(user_id.to_string())
        .bind(email_lookup)
        .bind(password_hash)
        .bind(kind.as_str())
        .bind(roles_text(roles))
        .bind(now)
        .execute(self.secrets.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Added::Added);
        }
        let holder: String =
            sqlx::query_scalar("SELECT user_id FROM credentials WHERE email_lookup = $1")
                .bind(email_lookup)
                .fetch_one(self.secrets.pool())
                .await?;
        let holder = Uuid::parse_str(&holder).map_err(|_| {
            IdentityError::Storage("a credential's user id is not a UUID".to_owned())
        })?;
        if exists(holder).await? {
            return Ok(Added::EmailTaken { user_id: holder });
        }
        // An abandoned registration: take its row over, if no one else did meanwhile.
        let taken = sqlx::query(
            "UPDATE credentials SET user_id = $1, password_hash = $2, kind = $3, roles = $4,
                 status = 'active', created_at = $5, updated_at = $5
             WHERE email_lookup = $6 AND user_id = $7",
        )
        .bind(user_id.to_string())
        .bind(password_hash)
        .bind(kind.as_str())
        .bind(roles_text(roles))
        .bind(now)
        .bind(email_lookup)
        .bind(holder.to_string())
        .execute(self.secrets.pool())
        .await?;
        Ok(if taken.rows_affected() == 1 {
            Added::Added
        } else {
            Added::EmailTaken { user_id: holder }
        })
    }

    fn credential_of(row: &sqlx::any::AnyRow) -> Result<Credential, IdentityError> {
        let user_id: String = column(row, 0)?;
        let kind: String = column(row, 2)?;
        let roles: String = column(row, 3)?;
        let status: String = column(row, 4)?;
        Ok(Credential {
            user_id: Uuid::parse_str(&user_id).map_err(|_| {
                IdentityError::Storage("a credential's user id is not a UUID".to_owned())
            })?,
            password_hash: column(row, 1)?,
            kind: kind_of(&kind),
            roles: roles_of(&roles),
            status: status_of(&status),
        })
    }

    /// The credentials of the account an email lookup finds.
    pub async fn by_email(&self, email_lookup: &str) -> Result<Option<Credential>, IdentityError> {
        let row = sqlx::query(
            "SELECT user_id, password_hash, kind, roles, status FROM credentials
             WHERE email_lookup = $1",
        )
        .bind(email_lookup)
        .fetch_optional(self.secrets.pool())
        .await?;
        row.as_ref().map(Self::credential_of).transpose()
    }

    /// The credentials of account `user_id`.
    pub async fn by_user(&self, user_id: Uuid) -> Result<Option<Credential>, IdentityError> {
        let row = sqlx::query(
            "SELECT user_id, password_hash, kind, roles, status FROM credentials WHERE user_id = $1",
        )
        .bind(user_id.to_string())
        .fetch_optional(self.secrets.pool())
        .await?;
        row.as_ref().map(Self::credential_of).transpose()
    }

    /// Sets a new password hash.
    pub async fn set_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
    ) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE credentials SET password_hash = $1, updated_at = $2 WHERE user_id = $3",
        )
        .bind(password_hash)
        .bind(now_ms())
        .bind(user_id.to_string())
        .execute(self.secrets.pool())
        .await?;
        Ok(())
    }

    /// Sets the account's status (a deactivated account cannot log in).
    pub async fn set_status(&self, user_id: Uuid, status: UserStatus) -> Result<(), IdentityError> {
        sqlx::query("UPDATE credentials SET status = $1, updated_at = $2 WHERE user_id = $3")
            .bind(status_text(status))
            .bind(now_ms())
            .bind(user_id.to_string())
            .execute(self.secrets.pool())
            .await?;
        Ok(())
    }

    /// Deletes the account's credentials (erasure): its email lookup and password hash go.
    pub async fn delete(&self, user_id: Uuid) -> Result<(), IdentityError> {
        sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(user_id.to_string())
            .execute(self.secrets.pool())
            .await?;
        Ok(())
    }

    /// Whether an active account holds the admin role.
    pub async fn any_admin(&self) -> Result<bool, IdentityError> {
        let rows =
            sqlx::query("SELECT roles FROM credentials WHERE status = 'active' AND kind = 'staff'")
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
}
