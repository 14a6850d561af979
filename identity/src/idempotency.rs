//! The answers kept for `Idempotency-Key` (IETF draft-ietf-httpapi-idempotency-key-header): per
//! caller and key, the fingerprint of the first request and, once it finished, its answer. They
//! live in the secret store because an answer may hold a guest's cart or order token, and
//! because no event could bring them back.
//!
//! A record is claimed before its request runs ([`IdempotencyRecords::begin`]), so that two
//! requests with one key never run at once; a claim whose process died is taken over once it is
//! older than the stale time, and the request then runs again. What makes that second run safe
//! is the command side's own idempotency: the request's events get ids derived from the key
//! (`RequestContext::cause_id`), so a command that was applied returns its stored events instead
//! of deciding again, and ids it creates (an order's, a product's) are derived from the key too.

use crate::error::IdentityError;
use crate::store::{SecretStore, column, now_ms};

/// The statements that create the records' table (run by [`SecretStore::open`]).
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS idempotency_keys (
        scope TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status BIGINT,
        headers TEXT,
        body TEXT,
        started_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (scope, idem_key))",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_by_expiry ON idempotency_keys (expires_at)",
];

/// A finished request's answer, as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    /// The headers worth giving again (`content-type`, `location`, `x-event-position`).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What a request with a key may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Run: the key is new (or its claim went stale, or its record expired).
    Run,
    /// Answer again what the first request with this key answered.
    Replay(StoredAnswer),
    /// The key was used for another request (another body or route): refuse.
    Mismatch,
    /// The first request with this key is still running: refuse for now.
    Running,
}

/// The records.
#[derive(Clone, Debug)]
pub struct IdempotencyRecords {
    secrets: SecretStore,
    /// How long a finished answer is kept.
    keep_ms: i64,
    /// How long a claim holds before another request may take it over.
    stale_ms: i64,
}

impl IdempotencyRecords {
    /// Records kept `keep` (at least 24 hours by the contract), claims stale after `stale`
    /// (longer than any request may run).
    pub fn new(
        secrets: SecretStore,
        keep: std::time::Duration,
        stale: std::time::Duration,
    ) -> IdempotencyRecords {
        IdempotencyRecords {
            secrets,
            keep_ms: i64::try_from(keep.as_millis()).unwrap_or(i64::MAX),
            stale_ms: i64::try_from(stale.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Claims `key` of `scope` for a request of `fingerprint`, or says why not.
    pub async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<Claim, IdentityError> {
        let pool = self.secrets.pool();
        // Twice at most: a record found expired is deleted and the key claimed afresh.
        for _ in 0..2 {
            let now = now_ms();
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys
                 (scope, idem_key, fingerprint, status, headers, body, started_at, expires_at)
                 VALUES ($1, $2, $3, NULL, NULL, NULL, $4, $5)
                 ON CONFLICT (scope, idem_key) DO NOTHING",
            )
            .bind(scope)
            .bind(key)
            .bind(fingerprint)
            .bind(now)
            .bind(now.saturating_add(self.keep_ms))
            .execute(pool)
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(Claim::Run);
            }
            let Some(row) = sqlx::query(
                "SELECT fingerprint, status, headers, body, started_at, expires_at
                 FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(pool)
            .await?
            else {
                // Deleted between the two statements (expired): claim it again.
                continue;
            };
            let stored_fingerprint: String = column(&row, 0)?;
            let status: Option<i64> = column(&row, 1)?;
            let headers: Option<String> = column(&row, 2)?;
            let body: Option<String> = column(&row, 3)?;
            let started_at: i64 = column(&row, 4)?;
            let expires_at: i64 = column(&row, 5)?;
            if expires_at <= now {
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2
                     AND expires_at = $3",
                )
                .bind(scope)
                .bind(key)
                .bind(expires_at)
                .execute(pool)
                .await?;
                continue;
            }
            if stored_fingerprint != fingerprint {
                return Ok(Claim::Mismatch);
            }
            return match status {
                Some(status) => Ok(Claim::Replay(StoredAnswer {
                    status: u16::try_from(status).unwrap_or(500),
                    headers: headers
                        .and_then(|text| serde_json::from_str(&text).ok())
                        .unwrap_or_default(),
                    body: body.unwrap_or_default(),
                })),
                None if started_at <= now.saturating_sub(self.stale_ms) => {
                    // Its process died mid-request: take the claim over (one taker wins).
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET started_at = $1
                         WHERE scope = $2 AND idem_key = $3 AND status IS NULL
                         AND started_at = $4",
                    )
                    .bind(now)
                    .bind(scope)
                    .bind(key)
                    .bind(started_at)
                    .execute(pool)
                    .await?;
                    Ok(if taken.rows_affected() == 1 {
                        Claim::Run
                    } else {
                        Claim::Running
                    })
                }
                None => Ok(Claim::Running),
            };
        }
        Ok(Claim::Running)
    }

    /// Keeps the answer of the request that claimed `key`.
    pub async fn finish(
        &self,
        scope: &str,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<(), IdentityError> {
        let headers = serde_json::to_string(&answer.headers).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, headers = $2, body = $3, expires_at = $4
             WHERE scope = $5 AND idem_key = $6",
        )
        .bind(i64::from(answer.status))
        .bind(headers)
        .bind(&answer.body)
        .bind(now_ms().saturating_add(self.keep_ms))
        .bind(scope)
        .bind(key)
        .execute(self.secrets.pool())
        .await?;
        Ok(())
    }

    /// Gives `key` up: its request ended without an answer worth keeping (a failure to retry),
    /// and the next request with it runs.
    pub async fn abandon(&self, scope: &str, key: &str) -> Result<(), IdentityError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND status IS NULL",
        )
        .bind(scope)
        .bind(key)
        .execute(self.secrets.pool())
        .await?;
        Ok(())
    }

    /// Deletes the records past their time; answers how many.
    pub async fn forget_expired(&self) -> Result<u64, IdentityError> {
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(self.secrets.pool())
            .await?;
        Ok(deleted.rows_affected())
    }
}
