//! Outgoing webhooks: endpoints staff register, each following the log from its own checkpoint.
//!
//! An endpoint names a URL and the event types it wants. Its worker reads the log after the
//! endpoint's checkpoint and posts each wanted event, one at a time and in position order (so
//! in order per stream too), as a CloudEvents 1.0 JSON body signed as the Standard Webhooks
//! specification says: `webhook-id` (the same for every attempt of one event),
//! `webhook-timestamp` and `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
//! `id.timestamp.body` under the endpoint's secret, `whsec_` and base64). A 2xx answer is a
//! delivery: deliveries are recorded, and the checkpoint moved past them, a batch at a time (64,
//! or 50 ms), so a process that dies in between delivers those events again with the same
//! `webhook-id` (at least once, as the specification expects receivers to handle). Anything
//! else (another status, a redirect, which is never followed, a timeout, a refused destination)
//! is tried again with exponential backoff and jitter, holding the events after it back. An endpoint that has failed for `disable_after` (three days unless
//! configured) is disabled, and every active admin gets an email through the notification
//! outbox. `POST /webhooks/{id}/replay` moves the checkpoint back (and enables it again).
//!
//! Endpoints, their secrets and their delivery log live in identity's secret store, beside the
//! event store: a signing secret is shown once, when the endpoint is registered, and never
//! again. Bodies follow the rule of every reader: events as stored, upcast to their current
//! version, personal values sealed under the person's key (unreadable once the person is
//! erased) and no secret.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use eventstore::{EventStore, RecordedEvent};
use hmac::{Hmac, Mac};
use projections::lease::Lease;
use projections::readdb::ReadDb;
use rand::{Rng, RngCore};
use serde::Serialize;
use sha2::Sha256;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::NotifyError;
use crate::guard::DestinationGuard;
use crate::outbox::{self, Channel, NewMessage};

/// The lease every webhook worker competes for.
pub const LEASE: &str = "webhooks";
/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// What `event_types` may name to get every event.
pub const ALL_TYPES: &str = "*";
/// Endpoints an installation may register.
pub const ENDPOINTS_MAX: i64 = 100;
/// Event types one endpoint may name.
pub const TYPES_MAX: usize = 100;
/// The longest URL taken.
pub const URL_MAX: usize = 2000;
/// Deliveries recorded together at most, and the longest the first of them waits to be.
const RECORD_EVERY: usize = 64;
const RECORD_WITHIN: Duration = Duration::from_millis(50);
/// Events one endpoint reads from the log at once.
const PAGE: usize = 100;
/// How much of an answer's body the delivery log keeps.
const ANSWER_MAX: usize = 500;

/// Statements that create the webhook tables (in the secret store); idempotent.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS webhook_endpoints (
        webhook_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        event_types TEXT NOT NULL,
        secret TEXT NOT NULL,
        status TEXT NOT NULL,
        checkpoint BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        failing_since BIGINT,
        disabled_reason TEXT,
        created_at BIGINT NOT NULL,
        created_by TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS webhook_deliveries (
        webhook_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        first_attempt_at BIGINT NOT NULL,
        last_attempt_at BIGINT NOT NULL,
        delivered_at BIGINT,
        PRIMARY KEY (webhook_id, position))",
    "CREATE TABLE IF NOT EXISTS webhook_attempts (
        webhook_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        attempt BIGINT NOT NULL,
        attempted_at BIGINT NOT NULL,
        status_code BIGINT,
        answer TEXT NOT NULL,
        duration_ms BIGINT NOT NULL,
        PRIMARY KEY (webhook_id, position, attempt))",
];

/// Creates the webhook tables in the secret store's database. Two processes creating them at
/// once can make PostgreSQL refuse one `CREATE TABLE IF NOT EXISTS` (its catalogue's unique
/// index): a refused statement is tried again, and then finds the table.
pub async fn ensure_schema_in(pool: &AnyPool) -> Result<(), NotifyError> {
    for statement in SCHEMA {
        let mut tries = 0;
        loop {
            match sqlx::query(statement).execute(pool).await {
                Ok(_) => break,
                Err(error) if tries < 5 => {
                    tries += 1;
                    tracing::debug!(%error, "creating a webhook table collided; trying again");
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(())
}

/// The signature of `body` for message `id` at `timestamp` (seconds) under `secret`
/// (`whsec_` and base64), as `webhook-signature` carries it: `v1,` and base64.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, NotifyError> {
    let key = BASE64
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .map_err(|error| {
            NotifyError::Invalid(format!("a webhook secret is not base64: {error}"))
        })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|error| NotifyError::Invalid(format!("a webhook secret: {error}")))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// A new signing secret: 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", BASE64.encode(bytes))
}

/// A registered endpoint as the API shows it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub webhook_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// The position of the last event done with (delivered, or not wanted).
    pub checkpoint: u64,
    /// Failed attempts at the event after the checkpoint.
    pub attempts: u32,
    /// When the next attempt is due (ms), while failing.
    pub next_attempt_at: Option<i64>,
    pub failing_since: Option<i64>,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    #[serde(skip)]
    secret: String,
}

const ENDPOINT_COLUMNS: &str = "webhook_id, url, event_types, status, checkpoint, attempts, \
    next_attempt_at, failing_since, disabled_reason, created_at, created_by, secret";

impl Endpoint {
    fn of_row(row: &AnyRow) -> Result<Endpoint, NotifyError> {
        let types: String = row.try_get(2)?;
        let attempts: i64 = row.try_get(5)?;
        let next: i64 = row.try_get(6)?;
        Ok(Endpoint {
            webhook_id: row.try_get(0)?,
            url: row.try_get(1)?,
            event_types: serde_json::from_str(&types).unwrap_or_default(),
            status: row.try_get(3)?,
            checkpoint: u64::try_from(row.try_get::<i64, _>(4)?).unwrap_or(0),
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            next_attempt_at: (attempts > 0).then_some(next),
            failing_since: row.try_get(7)?,
            disabled_reason: row.try_get(8)?,
            created_at: row.try_get(9)?,
            created_by: row.try_get(10)?,
            secret: row.try_get(11)?,
        })
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        self.event_types
            .iter()
            .any(|wanted| wanted == ALL_TYPES || *wanted == event.event_type)
    }
}

/// What a replay did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Deliveries start again at this position.
    From(u64),
    /// The position is after the next event the endpoint waits for (`next`): nothing changed.
    Ahead {
        next: u64,
    },
    NoSuchEndpoint,
}

/// One delivery (an event to an endpoint) with its attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub position: u64,
    pub event_id: String,
    pub event_type: String,
    /// `delivered` or `failing`.
    pub status: String,
    pub attempts: Vec<Attempt>,
    pub delivered_at: Option<i64>,
}

/// One attempt of a delivery and the answer it got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub attempted_at: i64,
    /// The HTTP status, or none when no answer came (refused, unreachable, timed out).
    pub status_code: Option<u16>,
    /// The start of the answer's body, or why there was none.
    pub answer: String,
    pub duration_ms: u64,
}

/// What a registration got wrong.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The field to fix, and what is wrong with it.
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Destination(#[from] crate::guard::DestinationError),
    #[error(transparent)]
    Storage(#[from] NotifyError),
}

/// The endpoints, in the secret store's database.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pool: AnyPool,
}

impl Endpoints {
    pub fn new(pool: AnyPool) -> Endpoints {
        Endpoints { pool }
    }

    /// Creates the tables (once per process: when the server opens its parts, and when a
    /// webhook worker starts).
    pub async fn ensure_schema(&self) -> Result<(), NotifyError> {
        ensure_schema_in(&self.pool).await
    }

    /// Registers an endpoint after checking its URL with `guard` and its event types: answers
    /// the endpoint and its secret (shown this once). It starts at `head`: it gets what happens
    /// from now on (a replay reaches back).
    pub async fn register(
        &self,
        guard: &DestinationGuard,
        url: &str,
        event_types: &[String],
        created_by: &str,
        head: u64,
    ) -> Result<(Endpoint, String), RegistrationError> {
        if url.len() > URL_MAX {
            return Err(RegistrationError::Invalid(
                "url",
                format!("the URL is longer than {URL_MAX} characters"),
            ));
        }
        let types = check_types(event_types)?;
        let url = guard.check_url(url).await?;
        let count: i64 =
            sqlx::query("SELECT COUNT(*) FROM webhook_endpoints WHERE status <> 'deleted'")
                .fetch_one(&self.pool)
                .await
                .map_err(NotifyError::from)?
                .try_get(0)
                .map_err(NotifyError::from)?;
        if count >= ENDPOINTS_MAX {
            return Err(RegistrationError::Invalid(
                "url",
                format!(
                    "there are {count} endpoints already, the most there may be: delete one first"
                ),
            ));
        }
        let webhook_id = Uuid::now_v7().to_string();
        let secret = new_secret();
        sqlx::query(
            "INSERT INTO webhook_endpoints (webhook_id, url, event_types, secret, status,
                 checkpoint, attempts, next_attempt_at, failing_since, disabled_reason, created_at,
                 created_by)
             VALUES ($1, $2, $3, $4, 'active', $5, 0, 0, NULL, NULL, $6, $7)",
        )
        .bind(&webhook_id)
        .bind(url.as_str())
        .bind(serde_json::to_string(&types).unwrap_or_default())
        .bind(&secret)
        .bind(i64::try_from(head).unwrap_or(i64::MAX))
        .bind(outbox::now_ms())
        .bind(created_by)
        .execute(&self.pool)
        .await
        .map_err(NotifyError::from)?;
        let endpoint = self.get(&webhook_id).await?.ok_or_else(|| {
            NotifyError::Invalid("the endpoint just registered is gone".to_owned())
        })?;
        Ok((endpoint, secret))
    }

    /// Every endpoint not deleted, oldest first.
    pub async fn list(&self) -> Result<Vec<Endpoint>, NotifyError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE status <> 'deleted'
             ORDER BY created_at, webhook_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Endpoint::of_row).collect()
    }

    pub async fn get(&self, webhook_id: &str) -> Result<Option<Endpoint>, NotifyError> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
             WHERE webhook_id = $1 AND status <> 'deleted'"
        ))
        .bind(webhook_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Endpoint::of_row).transpose()
    }

    /// Deletes an endpoint: nothing more is delivered to it (its delivery log is kept).
    pub async fn delete(&self, webhook_id: &str) -> Result<bool, NotifyError> {
        let deleted = sqlx::query(
            "UPDATE webhook_endpoints SET status = 'deleted', secret = ''
             WHERE webhook_id = $1 AND status <> 'deleted'",
        )
        .bind(webhook_id)
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Delivers again from `from_position` on (the checkpoint moves back to just before it),
    /// and enables a disabled endpoint. A replay only goes back: a position after the event the
    /// endpoint waits for would skip events, and is [`Replayed::Ahead`].
    pub async fn replay(
        &self,
        webhook_id: &str,
        from_position: u64,
    ) -> Result<Replayed, NotifyError> {
        let Some(endpoint) = self.get(webhook_id).await? else {
            return Ok(Replayed::NoSuchEndpoint);
        };
        if from_position > endpoint.checkpoint + 1 {
            return Ok(Replayed::Ahead {
                next: endpoint.checkpoint + 1,
            });
        }
        let checkpoint = i64::try_from(from_position.saturating_sub(1)).unwrap_or(i64::MAX);
        let replayed = sqlx::query(
            "UPDATE webhook_endpoints SET checkpoint = $1, status = 'active', attempts = 0,
                 next_attempt_at = 0, failing_since = NULL, disabled_reason = NULL
             WHERE webhook_id = $2 AND status <> 'deleted' AND checkpoint >= $1",
        )
        .bind(checkpoint)
        .bind(webhook_id)
        .execute(&self.pool)
        .await?;
        Ok(if replayed.rows_affected() > 0 {
            Replayed::From(from_position)
        } else {
            // Deleted, or moved back further by another replay meanwhile: read it again.
            match self.get(webhook_id).await? {
                None => Replayed::NoSuchEndpoint,
                Some(endpoint) => Replayed::Ahead {
                    next: endpoint.checkpoint + 1,
                },
            }
        })
    }

    /// The deliveries of an endpoint, newest first, with their attempts.
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, NotifyError> {
        let rows = sqlx::query(
            "SELECT position, event_id, event_type, status, delivered_at FROM webhook_deliveries
             WHERE webhook_id = $1 ORDER BY position DESC LIMIT $2",
        )
        .bind(webhook_id)
        .bind(i64::try_from(limit.max(1)).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in rows {
            let position: i64 = row.try_get(0)?;
            let attempts = sqlx::query(
                "SELECT attempt, attempted_at, status_code, answer, duration_ms FROM webhook_attempts
                 WHERE webhook_id = $1 AND position = $2 ORDER BY attempt",
            )
            .bind(webhook_id)
            .bind(position)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(Attempt {
                    attempt: u32::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
                    attempted_at: row.try_get(1)?,
                    status_code: row
                        .try_get::<Option<i64>, _>(2)?
                        .and_then(|code| u16::try_from(code).ok()),
                    answer: row.try_get(3)?,
                    duration_ms: u64::try_from(row.try_get::<i64, _>(4)?).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            deliveries.push(Delivery {
                position: u64::try_from(position).unwrap_or(0),
                event_id: row.try_get(1)?,
                event_type: row.try_get(2)?,
                status: row.try_get(3)?,
                delivered_at: row.try_get(4)?,
                attempts,
            });
        }
        Ok(deliveries)
    }

    async fn due(&self, now: i64) -> Result<Vec<Endpoint>, NotifyError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
             WHERE status = 'active' AND next_attempt_at <= $1"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Endpoint::of_row).collect()
    }

    /// Records attempts (each with the delivery it belongs to) and moves the endpoint's
    /// checkpoint from where this worker read it to `advance_to`, all in one transaction;
    /// `false` (nothing recorded) when the checkpoint is no longer where this worker read it (a
    /// replay, a delete, another worker).
    async fn record_batch(
        &self,
        endpoint: &Endpoint,
        attempts: &[(&RecordedEvent, &Attempt, bool)],
        advance_to: u64,
    ) -> Result<bool, NotifyError> {
        let mut transaction = self.pool.begin().await?;
        if advance_to != endpoint.checkpoint {
            let moved = sqlx::query(
                "UPDATE webhook_endpoints SET checkpoint = $1, attempts = 0, next_attempt_at = 0,
                     failing_since = NULL
                 WHERE webhook_id = $2 AND checkpoint = $3 AND status = 'active'",
            )
            .bind(i64::try_from(advance_to).unwrap_or(i64::MAX))
            .bind(&endpoint.webhook_id)
            .bind(i64::try_from(endpoint.checkpoint).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await?;
            if moved.rows_affected() != 1 {
                transaction.rollback().await?;
                return Ok(false);
            }
        }
        for (event, attempt, delivered) in attempts {
            let position = i64::try_from(event.position).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook_id, position, event_id, event_type,
                     status, attempts, first_attempt_at, last_attempt_at, delivered_at)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7)
                 ON CONFLICT (webhook_id, position) DO UPDATE SET status = excluded.status,
                     attempts = webhook_deliveries.attempts + 1,
                     last_attempt_at = excluded.last_attempt_at,
                     delivered_at = excluded.delivered_at",
            )
            .bind(&endpoint.webhook_id)
            .bind(position)
            .bind(event.event_id.to_string())
            .bind(&event.event_type)
            .bind(if *delivered { "delivered" } else { "failing" })
            .bind(attempt.attempted_at)
            .bind(delivered.then_some(attempt.attempted_at))
            .execute(&mut *transaction)
            .await?;
            // The attempt's number follows the position's earlier attempts (a replay adds to
            // them).
            sqlx::query(
                "INSERT INTO webhook_attempts (webhook_id, position, attempt, attempted_at,
                     status_code, answer, duration_ms)
                 SELECT $1, $2, COALESCE(MAX(attempt), 0) + 1, $3, $4, $5, $6
                 FROM webhook_attempts WHERE webhook_id = $1 AND position = $2",
            )
            .bind(&endpoint.webhook_id)
            .bind(position)
            .bind(attempt.attempted_at)
            .bind(attempt.status_code.map(i64::from))
            .bind(&attempt.answer)
            .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(true)
    }

    /// Records a failed attempt: the next is due at `retry_at`; or the endpoint is disabled
    /// with `reason` (answers whether it was).
    async fn failed(
        &self,
        endpoint: &Endpoint,
        now: i64,
        retry_at: i64,
        disable: Option<&str>,
    ) -> Result<(), NotifyError> {
        sqlx::query(
            "UPDATE webhook_endpoints SET attempts = attempts + 1, next_attempt_at = $1,
                 failing_since = COALESCE(failing_since, $2),
                 status = CASE WHEN $3 IS NULL THEN status ELSE 'disabled' END,
                 disabled_reason = $3
             WHERE webhook_id = $4 AND status = 'active' AND checkpoint = $5",
        )
        .bind(retry_at)
        .bind(now)
        .bind(disable)
        .bind(&endpoint.webhook_id)
        .bind(i64::try_from(endpoint.checkpoint).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn check_types(event_types: &[String]) -> Result<Vec<String>, RegistrationError> {
    if event_types.is_empty() {
        return Err(RegistrationError::Invalid(
            "event_types",
            "name at least one event type to deliver (such as OrderConfirmed), or \"*\" for all"
                .to_owned(),
        ));
    }
    if event_types.len() > TYPES_MAX {
        return Err(RegistrationError::Invalid(
            "event_types",
            format!("name at most {TYPES_MAX} event types"),
        ));
    }
    let mut types: Vec<String> = Vec::new();
    for wanted in event_types {
        let known = wanted == ALL_TYPES
            || domain::EVENT_TYPES
                .iter()
                .any(|(_, event_type, _)| *event_type == wanted);
        if !known {
            let mut names: Vec<&str> = domain::EVENT_TYPES
                .iter()
                .map(|(_, name, _)| *name)
                .collect();
            names.sort_unstable();
            names.dedup();
            return Err(RegistrationError::Invalid(
                "event_types",
                format!(
                    "{wanted:?} is not an event type; give \"*\" or some of {}",
                    names.join(", ")
                ),
            ));
        }
        if !types.contains(wanted) {
            types.push(wanted.clone());
        }
    }
    Ok(types)
}

/// How webhook workers deliver.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// The longest one delivery may take, connecting included.
    pub timeout: Duration,
    /// The first retry's delay; each further one doubles, up to `retry_max`, with jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long an endpoint may keep failing before it is disabled.
    pub disable_after: Duration,
    /// Endpoints delivered to at once (each one event at a time).
    pub concurrency: usize,
    pub lease_ttl: Duration,
    pub worker_id: String,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(3600),
            disable_after: Duration::from_secs(3 * 24 * 3600),
            concurrency: 32,
            lease_ttl: Duration::from_secs(6),
            worker_id: projections::lease::process_owner(),
        }
    }
}

impl WebhookOptions {
    fn retry_delay(&self, attempts: u32) -> Duration {
        let doubled = self
            .retry_base
            .saturating_mul(1_u32 << attempts.min(20))
            .min(self.retry_max);
        doubled.mul_f64(rand::rng().random_range(0.5..1.5))
    }
}

/// What a worker needs.
#[derive(Clone, Debug)]
pub struct Deliverer {
    pub store: Arc<dyn EventStore>,
    pub endpoints: Endpoints,
    /// The read-model database: the lease, and the outbox for staff alerts.
    pub db: ReadDb,
    pub guard: DestinationGuard,
    pub options: WebhookOptions,
}

/// Runs the webhook worker until `shutdown`: under the lease, each due endpoint gets its next
/// events.
pub async fn run_webhooks(
    deliverer: Deliverer,
    shutdown: CancellationToken,
) -> Result<(), NotifyError> {
    deliverer.endpoints.ensure_schema().await?;
    outbox::ensure_schema(&deliverer.db).await?;
    let client = deliverer
        .guard
        .client(deliverer.options.timeout)
        .map_err(|error| NotifyError::Invalid(error.to_string()))?;
    let deliverer = Arc::new(deliverer);
    let lease = Lease::new(
        deliverer.db.clone(),
        LEASE,
        deliverer.options.worker_id.clone(),
        deliverer.options.lease_ttl,
    );
    lease
        .serve(&shutdown, |held| {
            deliver_due(deliverer.clone(), client.clone(), held)
        })
        .await;
    Ok(())
}

async fn deliver_due(deliverer: Arc<Deliverer>, client: reqwest::Client, held: CancellationToken) {
    let mut changes = deliverer.store.log_changes().await.ok();
    let mut running: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut backlog_read: Option<std::time::Instant> = None;
    loop {
        if backlog_read.is_none_or(|read| read.elapsed() >= Duration::from_secs(5)) {
            record_backlog(&deliverer).await;
            backlog_read = Some(std::time::Instant::now());
        }
        match deliverer.endpoints.due(outbox::now_ms()).await {
            Ok(due) => {
                for endpoint in due {
                    if running.len() >= deliverer.options.concurrency {
                        break;
                    }
                    if running.insert(endpoint.webhook_id.clone()) {
                        tasks.spawn(deliver_endpoint(
                            deliverer.clone(),
                            client.clone(),
                            endpoint,
                            held.clone(),
                        ));
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the webhook endpoints; retrying"),
        }
        let log_changed = async {
            match changes.as_mut() {
                Some(changes) => {
                    let _ = changes.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = held.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(id) = done {
                    running.remove(&id);
                }
            }
            _ = log_changed => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    tasks.abort_all();
}

/// The webhooks' backlog: the log's events after each active endpoint's checkpoint, summed.
async fn record_backlog(deliverer: &Deliverer) {
    let (Ok(head), Ok(endpoints)) = (
        deliverer.store.head_position().await,
        deliverer.endpoints.list().await,
    ) else {
        return;
    };
    let backlog: u64 = endpoints
        .iter()
        .filter(|endpoint| endpoint.status == "active")
        .map(|endpoint| head.saturating_sub(endpoint.checkpoint))
        .sum();
    metrics::gauge!("mercato_webhook_backlog_events").set(backlog as f64);
}

/// Delivers the events after `endpoint`'s checkpoint until one fails or the log ends.
async fn deliver_endpoint(
    deliverer: Arc<Deliverer>,
    client: reqwest::Client,
    mut endpoint: Endpoint,
    held: CancellationToken,
) -> String {
    let id = endpoint.webhook_id.clone();
    loop {
        if held.is_cancelled() {
            return id;
        }
        let events = match deliverer.store.read_all(endpoint.checkpoint, PAGE).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, webhook_id = %id, "cannot read the log for a webhook endpoint");
                return id;
            }
        };
        let Some(last) = events.last().map(|event| event.position) else {
            return id;
        };
        // Events not wanted are skipped in memory. Deliveries are recorded, and the checkpoint
        // moved past them, a batch at a time (at most RECORD_EVERY deliveries or RECORD_WITHIN
        // after the first): a process that dies before recording delivers those events again,
        // with the same `webhook-id`, which a receiver recognises.
        let mut done = endpoint.checkpoint;
        let mut delivered_batch: Vec<(&RecordedEvent, Attempt)> = Vec::new();
        let mut batch_started = std::time::Instant::now();
        for event in &events {
            if !endpoint.wants(event) {
                done = event.position;
                continue;
            }
            let attempt = post(&deliverer.guard, &client, &endpoint, event).await;
            let delivered = attempt
                .status_code
                .is_some_and(|code| (200..300).contains(&code));
            metrics::counter!("mercato_webhook_deliveries_total", "outcome" => if delivered { "delivered" } else { "failed" }).increment(1);
            if delivered {
                if delivered_batch.is_empty() {
                    batch_started = std::time::Instant::now();
                }
                delivered_batch.push((event, attempt));
                done = event.position;
                if delivered_batch.len() >= RECORD_EVERY || batch_started.elapsed() >= RECORD_WITHIN
                {
                    if !record(&deliverer, &mut endpoint, &delivered_batch, None, done).await {
                        return id;
                    }
                    delivered_batch.clear();
                }
                continue;
            }
            // What was delivered before it is recorded with the failure, the checkpoint moved
            // up to the failing event (which waits for its retry).
            let before = delivered_batch
                .last()
                .map_or(endpoint.checkpoint, |(event, _)| event.position);
            let skipped_to = events
                .iter()
                .take_while(|earlier| earlier.position < event.position)
                .last()
                .map_or(before, |earlier| earlier.position.max(before));
            if !record(
                &deliverer,
                &mut endpoint,
                &delivered_batch,
                Some((event, &attempt)),
                skipped_to,
            )
            .await
            {
                return id;
            }
            failed(&deliverer, &endpoint, event, &attempt).await;
            return id;
        }
        if (!delivered_batch.is_empty() || done != endpoint.checkpoint)
            && !record(&deliverer, &mut endpoint, &delivered_batch, None, done).await
        {
            return id;
        }
        if last < endpoint.checkpoint || events.len() < PAGE {
            return id;
        }
    }
}

/// Records `delivered` (and a failed attempt) and moves `endpoint`'s checkpoint to
/// `advance_to`; `false` when the worker must stop with this endpoint (it changed meanwhile, or
/// the record failed).
async fn record(
    deliverer: &Deliverer,
    endpoint: &mut Endpoint,
    delivered: &[(&RecordedEvent, Attempt)],
    failed: Option<(&RecordedEvent, &Attempt)>,
    advance_to: u64,
) -> bool {
    let attempts: Vec<(&RecordedEvent, &Attempt, bool)> = delivered
        .iter()
        .map(|(event, attempt)| (*event, attempt, true))
        .chain(failed.map(|(event, attempt)| (event, attempt, false)))
        .collect();
    match deliverer
        .endpoints
        .record_batch(endpoint, &attempts, advance_to)
        .await
    {
        Ok(true) => {
            if advance_to != endpoint.checkpoint {
                endpoint.checkpoint = advance_to;
                endpoint.attempts = 0;
                endpoint.failing_since = None;
            }
            true
        }
        Ok(false) => false,
        Err(error) => {
            tracing::warn!(%error, webhook_id = %endpoint.webhook_id, "cannot record webhook deliveries");
            false
        }
    }
}

/// One attempt to deliver `event` to `endpoint`.
async fn post(
    guard: &DestinationGuard,
    client: &reqwest::Client,
    endpoint: &Endpoint,
    event: &RecordedEvent,
) -> Attempt {
    let attempted_at = outbox::now_ms();
    let started = std::time::Instant::now();
    let answer = |status_code: Option<u16>, answer: String| Attempt {
        attempt: endpoint.attempts + 1,
        attempted_at,
        status_code,
        answer,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let url = match url::Url::parse(&endpoint.url) {
        Ok(url) => url,
        Err(error) => return answer(None, format!("the endpoint's URL cannot be used: {error}")),
    };
    if let Err(error) = guard.check_before_send(&url) {
        return answer(None, format!("refused: {error}"));
    }
    let body = match serde_json::to_vec(&schemas::cloudevents::cloud_event(event)) {
        Ok(body) => body,
        Err(error) => {
            return answer(
                None,
                format!("the event cannot be written as JSON: {error}"),
            );
        }
    };
    let message_id = format!("msg_{}", event.event_id.simple());
    let timestamp = chrono::Utc::now().timestamp();
    let signature = match sign(&endpoint.secret, &message_id, timestamp, &body) {
        Ok(signature) => signature,
        Err(error) => return answer(None, error.to_string()),
    };
    let sent = client
        .post(url)
        .header("content-type", "application/cloudevents+json")
        .header("webhook-id", &message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let text = response.text().await.unwrap_or_default();
            let mut shown: String = text.chars().take(ANSWER_MAX).collect();
            if let Some(location) = location.filter(|_| (300..400).contains(&status)) {
                shown = format!("redirect to {location} not followed; {shown}");
            }
            answer(Some(status), shown)
        }
        Err(error) => {
            let mut detail = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                detail.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            answer(None, detail)
        }
    }
}

/// A failed attempt: the next one later, or the endpoint disabled and admins told.
async fn failed(
    deliverer: &Deliverer,
    endpoint: &Endpoint,
    event: &RecordedEvent,
    attempt: &Attempt,
) {
    let now = outbox::now_ms();
    let options = &deliverer.options;
    let failing_since = endpoint.failing_since.unwrap_or(now);
    let failing_for = Duration::from_millis(u64::try_from(now - failing_since).unwrap_or(0));
    let what = match attempt.status_code {
        Some(code) => format!("HTTP {code}"),
        None => attempt.answer.clone(),
    };
    let disable = (failing_for >= options.disable_after).then(|| {
        format!(
            "every delivery failed for {} s; the last answer was {what}",
            failing_for.as_secs()
        )
    });
    let retry_at =
        now + i64::try_from(options.retry_delay(endpoint.attempts).as_millis()).unwrap_or(i64::MAX);
    if let Err(error) = deliverer
        .endpoints
        .failed(endpoint, now, retry_at, disable.as_deref())
        .await
    {
        tracing::warn!(%error, webhook_id = %endpoint.webhook_id, "cannot record a failed webhook delivery");
        return;
    }
    let Some(reason) = disable else {
        tracing::info!(webhook_id = %endpoint.webhook_id, position = event.position, answer = %what, "a webhook delivery failed; it is tried again later");
        return;
    };
    tracing::warn!(webhook_id = %endpoint.webhook_id, %reason, "a webhook endpoint was disabled");
    metrics::counter!("mercato_webhook_endpoints_disabled_total").increment(1);
    if let Err(error) = tell_admins(deliverer, endpoint, event, &reason, failing_since).await {
        tracing::warn!(%error, "the admins could not be told that a webhook endpoint was disabled");
    }
}

/// Records a `webhook_disabled` message to every active admin account.
async fn tell_admins(
    deliverer: &Deliverer,
    endpoint: &Endpoint,
    event: &RecordedEvent,
    reason: &str,
    failing_since: i64,
) -> Result<(), NotifyError> {
    let admins = sqlx::query(
        "SELECT user_id, roles FROM rm_users WHERE kind = 'staff' AND status = 'active'",
    )
    .fetch_all(deliverer.db.pool())
    .await?;
    for row in admins {
        let (user_id, roles): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if !roles.split(',').any(|role| role == "admin") {
            continue;
        }
        let message = NewMessage {
            event_id: format!("webhook-disabled:{}:{failing_since}", endpoint.webhook_id),
            position: event.position,
            template: "webhook_disabled",
            channel: Channel::Email,
            recipient: crate::intake::user_recipient(&user_id),
            order_id: None,
            correlation_id: event.metadata.correlation_id.clone(),
            variables: serde_json::json!({
                "webhook_id": endpoint.webhook_id,
                "url": endpoint.url,
                "reason": reason,
                "position": event.position,
            }),
            trace_context: event.metadata.stored_trace_context(),
        };
        outbox::insert(deliverer.db.pool(), &message).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .expect("signs");
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_new_secret_is_whsec_and_32_bytes_of_base64() {
        let secret = new_secret();
        let bytes = BASE64
            .decode(secret.strip_prefix(SECRET_PREFIX).expect("prefix"))
            .expect("base64");
        assert_eq!(bytes.len(), 32);
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn event_types_must_be_known_or_all() {
        assert!(check_types(&["OrderConfirmed".to_owned(), "*".to_owned()]).is_ok());
        let error = check_types(&["OrderShipped".to_owned()]).expect_err("unknown type");
        assert!(error.to_string().contains("OrderConfirmed"), "{error}");
        assert!(check_types(&[]).is_err());
    }

    #[test]
    fn retries_back_off_to_the_cap() {
        let options = WebhookOptions::default();
        assert!(options.retry_delay(0) <= Duration::from_millis(1500));
        assert!(options.retry_delay(30) <= Duration::from_secs(5400));
        assert!(options.retry_delay(30) >= Duration::from_secs(1800));
    }
}
