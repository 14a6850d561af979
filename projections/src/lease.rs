//! Leases: how several processes run a part that must run once at a time (the checkout saga's
//! steps, the Kafka relay). One process holds a part's lease and runs it; the others stand by
//! and take the lease over once it expires, or at once when its holder gives it up on shutdown.
//!
//! A lease is a row of the read-model database: its name, its holder (`owner`), until when it
//! holds (`expires_at`, ms since the epoch) and its **fence**, a number that grows each time the
//! lease passes to another holder. The holder renews the row every third of its time to live
//! ([`Lease::keep`]) and stops before the lease can expire under it: when it cannot renew for
//! two thirds of the time to live, or finds another holder, it cancels what runs under the
//! lease. A write that must never land once another process holds the lease (the relay's
//! checkpoint) checks the row in its own transaction ([`WriteTransaction::commit_at_holding`]):
//! a holder that was paused past its lease cannot undo its successor's work.

use std::time::Duration;

use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::ProjectionError;
use crate::readdb::{ReadDb, WriteTransaction, save_checkpoint};

/// The statements that create the lease table; idempotent. The table keeps the name it had
/// while the checkout saga was its only user, so that processes of that release and of this
/// one share it (and exclude each other) during a rolling upgrade.
pub(crate) const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS saga_leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        fence BIGINT NOT NULL DEFAULT 0)"];

/// Milliseconds since the epoch, the unit of `expires_at`.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A name for this process in the lease table, unique to this run: the process id, then a
/// random part (so a status page or a test can tell which process holds a lease).
pub fn process_owner() -> String {
    format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// Whether this process holds the lease of a part it runs, as `/ready` and metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    /// This process holds the lease and runs the part.
    Held,
    /// Another process holds it (or held it last); this one waits to take it over.
    Standby,
}

impl LeaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseStatus::Held => "held",
            LeaseStatus::Standby => "standby",
        }
    }
}

/// One holding of a lease: from taking it until losing or giving it up. Its `fence` is the
/// lease's fence while this holding lasts; once another process took the lease, or it was given
/// up, every later holding (this process's too) has a greater one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenure {
    pub name: String,
    pub owner: String,
    pub fence: i64,
}

/// The row of lease `name` as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub owner: String,
    pub expires_at: i64,
    pub fence: i64,
}

/// Takes or renews lease `name` for `owner` until `expires_at` (ms), at time `now` (ms): it is
/// `owner`'s when it was free, expired, or already `owner`'s. Answers the lease's fence when
/// `owner` holds it, `None` when another does. Taking the lease from another holder (or after
/// it was given up) raises the fence; renewing keeps it.
pub async fn acquire_lease(
    db: &ReadDb,
    name: &str,
    owner: &str,
    now: i64,
    expires_at: i64,
) -> Result<Option<i64>, ProjectionError> {
    let row = sqlx::query(
        "INSERT INTO saga_leases (name, owner, expires_at, fence) VALUES ($1, $2, $3, 1)
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,
             expires_at = excluded.expires_at,
             fence = CASE WHEN saga_leases.owner = excluded.owner THEN saga_leases.fence
                          ELSE saga_leases.fence + 1 END
         WHERE saga_leases.owner = excluded.owner OR saga_leases.expires_at < $4
         RETURNING fence",
    )
    .bind(name)
    .bind(owner)
    .bind(expires_at)
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|row| row.try_get::<i64, _>(0)).transpose()?)
}

/// Gives lease `name` up, if `owner` holds it: it is free at once, and its next holder (even
/// `owner` again) gets a greater fence.
pub async fn release_lease(db: &ReadDb, name: &str, owner: &str) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE saga_leases SET owner = '', expires_at = 0 WHERE name = $1 AND owner = $2")
        .bind(name)
        .bind(owner)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The stored row of lease `name`, expired or not; `None` if no process ever took it.
pub async fn lease_row(db: &ReadDb, name: &str) -> Result<Option<LeaseRow>, ProjectionError> {
    let row = sqlx::query("SELECT owner, expires_at, fence FROM saga_leases WHERE name = $1")
        .bind(name)
        .fetch_optional(db.pool())
        .await?;
    row.map(|row| {
        Ok(LeaseRow {
            owner: row.try_get(0)?,
            expires_at: row.try_get(1)?,
            fence: row.try_get(2)?,
        })
    })
    .transpose()
}

/// A lease as one process competes for it: its name, this process's name for itself, and how
/// long a holding lasts without renewal.
#[derive(Clone, Debug)]
pub struct Lease {
    db: ReadDb,
    name: &'static str,
    owner: String,
    ttl: Duration,
}

impl Lease {
    pub fn new(db: ReadDb, name: &'static str, owner: String, ttl: Duration) -> Lease {
        Lease {
            db,
            name,
            owner,
            ttl,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// One attempt to take (or renew) the lease: the holding when this process holds it now.
    pub async fn try_acquire(&self) -> Result<Option<Tenure>, ProjectionError> {
        let now = now_ms();
        let fence =
            acquire_lease(&self.db, self.name, &self.owner, now, now + self.ttl_ms()).await?;
        Ok(fence.map(|fence| Tenure {
            name: self.name.to_owned(),
            owner: self.owner.clone(),
            fence,
        }))
    }

    /// Waits until this process holds the lease, trying every third of its time to live;
    /// `None` when `shutdown` comes first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Option<Tenure> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            match self.try_acquire().await {
                Ok(Some(tenure)) => return Some(tenure),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(lease = self.name, %error, "cannot take the lease; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.ttl / 3) => {}
            }
        }
    }

    /// Renews the lease every third of its time to live, until `held` is cancelled; cancels
    /// `held` itself when another process took the lease, or when renewing failed for two
    /// thirds of the time to live (before the lease can expire under this process).
    pub async fn keep(&self, held: CancellationToken) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = held.cancelled() => return,
                _ = tokio::time::sleep(self.ttl / 3) => {}
            }
            match self.try_acquire().await {
                Ok(Some(_)) => last_renewed = tokio::time::Instant::now(),
                Ok(None) => {
                    tracing::warn!(lease = self.name, "another process took the lease");
                    held.cancel();
                    return;
                }
                Err(error) => {
                    tracing::warn!(lease = self.name, %error, "cannot renew the lease");
                    if last_renewed.elapsed() >= self.ttl * 2 / 3 {
                        held.cancel();
                        return;
                    }
                }
            }
        }
    }

    /// Runs `work` for one holding of the lease: keeps the lease renewed meanwhile, and cancels
    /// the token `work` gets when the lease is lost (or at `shutdown`). Returns once `work` has.
    pub async fn hold<Fut>(
        &self,
        shutdown: &CancellationToken,
        work: impl FnOnce(CancellationToken) -> Fut,
    ) where
        Fut: std::future::Future<Output = ()>,
    {
        let held = shutdown.child_token();
        let renewal = {
            let (lease, held) = (self.clone(), held.clone());
            tokio::spawn(async move { lease.keep(held).await })
        };
        work(held.clone()).await;
        held.cancel();
        let _ = renewal.await;
    }

    /// Runs `work` each time this process holds the lease, until `shutdown`: waits for the
    /// lease, runs `work` while it holds it ([`Lease::hold`]), stands by again when it is lost,
    /// and gives it up at the end so that a standby takes over at once.
    pub async fn serve<F, Fut>(&self, shutdown: &CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        while let Some(tenure) = self.acquire(shutdown).await {
            tracing::info!(lease = self.name, owner = %self.owner, fence = tenure.fence, "holding the lease");
            self.hold(shutdown, &mut work).await;
            if !shutdown.is_cancelled() {
                tracing::warn!(lease = self.name, owner = %self.owner, "the lease was lost; standing by");
            }
        }
        self.release().await;
    }

    /// Gives the lease up (if this process holds it), so that a standby takes over at once; a
    /// failure is logged, and the lease then expires by itself.
    pub async fn release(&self) {
        if let Err(error) = release_lease(&self.db, self.name, &self.owner).await {
            tracing::warn!(lease = self.name, %error, "cannot give the lease up; it expires by itself");
        }
    }
}

impl WriteTransaction {
    /// Stores checkpoint `name` at `position` in this transaction and commits, if `tenure` still
    /// holds its lease; otherwise rolls back and answers [`ProjectionError::LeaseLost`]. The
    /// lease's row stays locked until the commit, so a process that takes the lease over after
    /// this check waits for the commit, and then reads the checkpoint it stored.
    pub async fn commit_at_holding(
        mut self,
        name: &str,
        position: u64,
        tenure: &Tenure,
    ) -> Result<(), ProjectionError> {
        let holding = sqlx::query(
            "UPDATE saga_leases SET fence = fence
             WHERE name = $1 AND owner = $2 AND fence = $3",
        )
        .bind(&tenure.name)
        .bind(&tenure.owner)
        .bind(tenure.fence)
        .execute(&mut *self.transaction)
        .await?;
        if holding.rows_affected() != 1 {
            self.transaction.rollback().await?;
            return Err(ProjectionError::LeaseLost {
                name: tenure.name.clone(),
            });
        }
        save_checkpoint(&mut self.transaction, name, position).await?;
        self.transaction.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_statuses_read_as_words() {
        assert_eq!(LeaseStatus::Held.as_str(), "held");
        assert_eq!(LeaseStatus::Standby.as_str(), "standby");
        let owner = process_owner();
        assert!(
            owner.starts_with(&format!("{}-", std::process::id())),
            "{owner}"
        );
        assert_ne!(owner, process_owner());
    }
}
