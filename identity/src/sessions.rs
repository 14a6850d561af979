//! Refresh tokens and one-time tokens: opaque random secrets, of which the secret store keeps
//! only a SHA-256 hash (they carry 256 random bits, so a fast hash is as good as a slow one).
//!
//! A refresh token belongs to a family: the session a login started. Each use rotates it (the
//! token is marked used and a new one of the same family is issued); a token used a second time
//! means it was copied, so the whole family is revoked and both holders must log in again.

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use crate::error::IdentityError;
use crate::store::{SecretStore, now_ms};

/// How long a refresh token is valid.
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a password-reset token is valid (CONTRACT.md: 30 minutes).
pub const RESET_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);
/// How long an email-verification token is valid.
pub const VERIFY_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A refresh token just issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedRefresh {
    pub token: String,
    pub family_id: String,
}

/// Why a refresh token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("the refresh token is not known")]
    Unknown,
    #[error("the refresh token has expired")]
    Expired,
    #[error("the refresh token was revoked")]
    Revoked,
    /// A rotated token came back: the family is revoked.
    #[error("the refresh token was used already; the session was ended")]
    Reused,
}

/// What a refresh token stood for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refreshed {
    pub user_id: Uuid,
    pub family_id: String,
    /// The token that replaces it.
    pub token: String,
}

/// The refresh tokens of every session.
#[derive(Clone, Debug)]
pub struct Sessions {
    secrets: SecretStore,
}

impl Sessions {
    pub fn new(secrets: SecretStore) -> Sessions {
        Sessions { secrets }
    }

    async fn insert(&self, user_id: Uuid, family_id: &str) -> Result<String, IdentityError> {
        let token = crate::random_secret("rt_");
        let now = now_ms();
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_at, expires_at,
                 used_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
        )
        .bind(crate::sha256_hex(&token))
        .bind(family_id)
        .bind(user_id.to_string())
        .bind(now)
        .bind(now.saturating_add(ms(REFRESH_TOKEN_TTL)))
        .execute(self.secrets.pool())
        .await?;
        Ok(token)
    }

    /// Starts a session of `user_id`: a new family with its first refresh token.
    pub async fn start(&self, user_id: Uuid) -> Result<IssuedRefresh, IdentityError> {
        let family_id = Uuid::new_v4().to_string();
        let token = self.insert(user_id, &family_id).await?;
        Ok(IssuedRefresh { token, family_id })
    }

    /// Rotates `token`: marks it used and issues its successor. A token that was used already
    /// revokes its family.
    pub async fn rotate(
        &self,
        token: &str,
    ) -> Result<Result<Refreshed, RefreshError>, IdentityError> {
        let hash = crate::sha256_hex(token);
        let now = now_ms();
        // Marking it used is the compare-and-set: of two requests with one token, one wins.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(&hash)
        .execute(self.secrets.pool())
        .await?;
        let row = sqlx::query(
            "SELECT family_id, user_id, expires_at, used_at, revoked_at FROM refresh_tokens
             WHERE token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(self.secrets.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Err(RefreshError::Unknown));
        };
        let family_id: String = row.try_get(0)?;
        let user_id: String = row.try_get(1)?;
        let user_id = Uuid::parse_str(&user_id).map_err(|_| {
            IdentityError::Storage("a refresh token's user id is not a UUID".to_owned())
        })?;
        if claimed.rows_affected() == 0 {
            let expires_at: i64 = row.try_get(2)?;
            let revoked_at: Option<i64> = row.try_get(4)?;
            if revoked_at.is_some() {
                return Ok(Err(RefreshError::Revoked));
            }
            if expires_at <= now {
                return Ok(Err(RefreshError::Expired));
            }
            // Used before: whoever holds either copy loses the session.
            self.revoke_family(&family_id).await?;
            tracing::warn!(%user_id, "a rotated refresh token was presented again; its session was revoked");
            return Ok(Err(RefreshError::Reused));
        }
        let token = self.insert(user_id, &family_id).await?;
        Ok(Ok(Refreshed {
            user_id,
            family_id,
            token,
        }))
    }

    /// Ends session `family_id`: none of its refresh tokens works again.
    pub async fn revoke_family(&self, family_id: &str) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(family_id)
        .execute(self.secrets.pool())
        .await?;
        Ok(())
    }

    /// Ends every session of `user_id` (a password change or reset, a deactivation).
    pub async fn revoke_user(&self, user_id: Uuid) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(user_id.to_string())
        .execute(self.secrets.pool())
        .await?;
        Ok(())
    }

    /// Forgets every token of `user_id` (erasure).
    pub async fn forget_user(&self, user_id: Uuid) -> Result<(), IdentityError> {
        for statement in [
            "DELETE FROM refresh_tokens WHERE user_id = $1",
            "DELETE FROM one_time_tokens WHERE user_id = $1",
        ] {
            sqlx::query(statement)
                .bind(user_id.to_string())
                .execute(self.secrets.pool())
                .await?;
        }
        Ok(())
    }
}

/// What a one-time token is for; a token of one purpose never passes for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "ve_",
            Purpose::ResetPassword => "pr_",
        }
    }

    /// How long a token of this purpose works.
    pub fn ttl(self) -> Duration {
        match self {
            Purpose::VerifyEmail => VERIFY_TOKEN_TTL,
            Purpose::ResetPassword => RESET_TOKEN_TTL,
        }
    }
}

/// Why a one-time token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OneTimeError {
    #[error("the token is not known (or is for something else)")]
    Unknown,
    #[error("the token has expired")]
    Expired,
    #[error("the token was used already")]
    Used,
}

/// Email-verification and password-reset tokens.
#[derive(Clone, Debug)]
pub struct OneTimeTokens {
    secrets: SecretStore,
}

impl OneTimeTokens {
    pub fn new(secrets: SecretStore) -> OneTimeTokens {
        OneTimeTokens { secrets }
    }

    /// Issues a token of `purpose` for `user_id`; a reset token replaces earlier unused ones.
    pub async fn issue(&self, purpose: Purpose, user_id: Uuid) -> Result<String, IdentityError> {
        let token = crate::random_secret(purpose.prefix());
        let now = now_ms();
        if purpose == Purpose::ResetPassword {
            sqlx::query(
                "UPDATE one_time_tokens SET used_at = $1
                 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
            )
            .bind(now)
            .bind(user_id.to_string())
            .bind(purpose.as_str())
            .execute(self.secrets.pool())
            .await?;
        }
        sqlx::query(
            "INSERT INTO one_time_tokens (token_hash, purpose, user_id, issued_at, expires_at, used_at)
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(crate::sha256_hex(&token))
        .bind(purpose.as_str())
        .bind(user_id.to_string())
        .bind(now)
        .bind(now.saturating_add(ms(purpose.ttl())))
        .execute(self.secrets.pool())
        .await?;
        Ok(token)
    }

    /// Whose token of `purpose` `token` is, if it can still be used (nothing is consumed).
    pub async fn peek(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<Result<Uuid, OneTimeError>, IdentityError> {
        self.read(purpose, token).await
    }

    async fn read(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<Result<Uuid, OneTimeError>, IdentityError> {
        let row = sqlx::query(
            "SELECT user_id, expires_at, used_at FROM one_time_tokens
             WHERE token_hash = $1 AND purpose = $2",
        )
        .bind(crate::sha256_hex(token))
        .bind(purpose.as_str())
        .fetch_optional(self.secrets.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Err(OneTimeError::Unknown));
        };
        let used_at: Option<i64> = row.try_get(2)?;
        if used_at.is_some() {
            return Ok(Err(OneTimeError::Used));
        }
        let expires_at: i64 = row.try_get(1)?;
        if expires_at <= now_ms() {
            return Ok(Err(OneTimeError::Expired));
        }
        let user_id: String = row.try_get(0)?;
        Uuid::parse_str(&user_id)
            .map(Ok)
            .map_err(|_| IdentityError::Storage("a token's user id is not a UUID".to_owned()))
    }

    /// Uses `token` of `purpose`: answers whose it was, once; never again after.
    pub async fn consume(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<Result<Uuid, OneTimeError>, IdentityError> {
        let now = now_ms();
        let consumed = sqlx::query(
            "UPDATE one_time_tokens SET used_at = $1
             WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(crate::sha256_hex(token))
        .bind(purpose.as_str())
        .execute(self.secrets.pool())
        .await?;
        let found = self.read(purpose, token).await?;
        if consumed.rows_affected() == 1 {
            // Read back as used now; the owner is what counts.
            let row = sqlx::query("SELECT user_id FROM one_time_tokens WHERE token_hash = $1")
                .bind(crate::sha256_hex(token))
                .fetch_one(self.secrets.pool())
                .await?;
            let user_id: String = row.try_get(0)?;
            return Uuid::parse_str(&user_id)
                .map(Ok)
                .map_err(|_| IdentityError::Storage("a token's user id is not a UUID".to_owned()));
        }
        Ok(Err(found.err().unwrap_or(OneTimeError::Used)))
    }

    /// Makes `token` expire now (tests of expiry, and an operator's revocation).
    pub async fn expire(&self, token: &str) -> Result<(), IdentityError> {
        sqlx::query("UPDATE one_time_tokens SET expires_at = $1 WHERE token_hash = $2")
            .bind(now_ms() - 1)
            .bind(crate::sha256_hex(token))
            .execute(self.secrets.pool())
            .await?;
        Ok(())
    }
}
