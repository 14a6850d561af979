//! The login throttle: after repeated failed logins, an account (whether or not it exists) and
//! an address must wait before the next try, for longer with each further failure, up to 15
//! minutes. The counts are in the secret store, so every process of a deployment shares them
//! and a restart forgets nothing. A success clears the account's count; an address's count
//! decays on its own once it stops failing for the window.

use std::net::IpAddr;
use std::time::Duration;

use sqlx::Row;

use crate::error::IdentityError;
use crate::store::{SecretStore, now_ms};

/// How a kind of subject is throttled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed within [`ThrottlePolicy::window`] before the first wait.
    pub free_failures: i64,
    /// The first wait; each further failure doubles it.
    pub first_wait: Duration,
    /// The longest wait.
    pub max_wait: Duration,
    /// A subject that has not failed for this long starts again from zero.
    pub window: Duration,
}

/// Per account: five tries, then 30 s, 60 s, ... up to 15 minutes.
pub const ACCOUNT_POLICY: ThrottlePolicy = ThrottlePolicy {
    free_failures: 5,
    first_wait: Duration::from_secs(30),
    max_wait: Duration::from_secs(15 * 60),
    window: Duration::from_secs(15 * 60),
};

/// Per address (many people may share one): twenty tries, then 60 s, ... up to 15 minutes.
pub const ADDRESS_POLICY: ThrottlePolicy = ThrottlePolicy {
    free_failures: 20,
    first_wait: Duration::from_secs(60),
    max_wait: Duration::from_secs(15 * 60),
    window: Duration::from_secs(15 * 60),
};

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl ThrottlePolicy {
    /// How long a subject with `failures` failures must wait after the last one.
    fn wait_after(&self, failures: i64) -> i64 {
        let over = failures - self.free_failures;
        if over < 0 {
            return 0;
        }
        let doubling = u32::try_from(over.min(20)).unwrap_or(20);
        ms(self.first_wait)
            .saturating_mul(1_i64 << doubling)
            .min(ms(self.max_wait))
    }
}

/// A throttled subject: an account (by its email lookup) or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    key: String,
    policy: ThrottlePolicy,
}

impl Subject {
    /// The account an email looks up (the account need not exist).
    pub fn account(email_lookup: &str) -> Subject {
        Subject {
            key: format!("account:{email_lookup}"),
            policy: ACCOUNT_POLICY,
        }
    }

    /// An account by its id (a password change, where the email is not given).
    pub fn user(user_id: uuid::Uuid) -> Subject {
        Subject {
            key: format!("user:{user_id}"),
            policy: ACCOUNT_POLICY,
        }
    }

    /// A peer address.
    pub fn address(address: IpAddr) -> Subject {
        Subject {
            key: format!("address:{address}"),
            policy: ADDRESS_POLICY,
        }
    }
}

/// The throttle.
#[derive(Clone, Debug)]
pub struct LoginThrottle {
    secrets: SecretStore,
}

impl LoginThrottle {
    pub fn new(secrets: SecretStore) -> LoginThrottle {
        LoginThrottle { secrets }
    }

    /// How long the longest of `subjects` must still wait, if any must.
    pub async fn wait(&self, subjects: &[Subject]) -> Result<Option<Duration>, IdentityError> {
        let now = now_ms();
        let mut longest = 0_i64;
        for subject in subjects {
            let row = sqlx::query("SELECT blocked_until FROM login_failures WHERE subject = $1")
                .bind(&subject.key)
                .fetch_optional(self.secrets.pool())
                .await?;
            if let Some(row) = row {
                let blocked_until: i64 = row.try_get(0)?;
                longest = longest.max(blocked_until - now);
            }
        }
        Ok((longest > 0).then(|| Duration::from_millis(u64::try_from(longest).unwrap_or(0))))
    }

    /// Counts a failure of each of `subjects`.
    pub async fn record_failure(&self, subjects: &[Subject]) -> Result<(), IdentityError> {
        let now = now_ms();
        for subject in subjects {
            let row = sqlx::query(
                "SELECT failures, last_failed_at FROM login_failures WHERE subject = $1",
            )
            .bind(&subject.key)
            .fetch_optional(self.secrets.pool())
            .await?;
            let failures = match row {
                Some(row) => {
                    let failures: i64 = row.try_get(0)?;
                    let last_failed_at: i64 = row.try_get(1)?;
                    if now - last_failed_at > ms(subject.policy.window) {
                        1
                    } else {
                        failures + 1
                    }
                }
                None => 1,
            };
            let blocked_until = match subject.policy.wait_after(failures) {
                0 => 0,
                wait => now.saturating_add(wait),
            };
            sqlx::query(
                "INSERT INTO login_failures (subject, failures, last_failed_at, blocked_until)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (subject) DO UPDATE SET failures = excluded.failures,
                     last_failed_at = excluded.last_failed_at,
                     blocked_until = excluded.blocked_until",
            )
            .bind(&subject.key)
            .bind(failures)
            .bind(now)
            .bind(blocked_until)
            .execute(self.secrets.pool())
            .await?;
        }
        Ok(())
    }

    /// Forgets `subject`'s failures (after a successful login of the account).
    pub async fn clear(&self, subject: &Subject) -> Result<(), IdentityError> {
        sqlx::query("DELETE FROM login_failures WHERE subject = $1")
            .bind(&subject.key)
            .execute(self.secrets.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_with_each_failure_past_the_free_ones_up_to_its_limit() {
        assert_eq!(ACCOUNT_POLICY.wait_after(4), 0);
        assert_eq!(ACCOUNT_POLICY.wait_after(5), 30_000);
        assert_eq!(ACCOUNT_POLICY.wait_after(6), 60_000);
        assert_eq!(ACCOUNT_POLICY.wait_after(100), 15 * 60_000);
        assert_eq!(ADDRESS_POLICY.wait_after(19), 0);
        assert_eq!(ADDRESS_POLICY.wait_after(20), 60_000);
    }
}
