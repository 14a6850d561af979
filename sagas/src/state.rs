//! The saga's durable state: one row per checkout (its state, its timer, its retries) and the
//! intake that creates the rows from the log. (The lease that lets one worker run at a time is
//! `projections::lease`, shared with the Kafka relay.)
//!
//! The rows live in the read-model database. They are not a read model: only the saga writes
//! them. Each row's `next_run_at` is the saga's durable timer: a worker that starts (after a
//! crash, or taking over a lease) runs every row that is due, and nothing waits in memory only.

use async_trait::async_trait;
use domain::{OrderEvent, PaymentEvent};
use eventstore::RecordedEvent;
use projections::readdb::ReadDb;
use projections::{Feed, Projection, ProjectionError, decode};
use sqlx::Row;
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::SagaError;

/// Statements that create the saga's tables; idempotent.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS checkout_sagas (
        order_id TEXT PRIMARY KEY,
        order_event_id TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        -- The vault reference of the order's payment token (`vault:<order id>`); a saga
        -- started before payment tokens left the log holds the token itself.
        payment_token TEXT NOT NULL,
        state TEXT NOT NULL,
        outcome TEXT,
        next_run_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        last_error TEXT,
        started_at BIGINT NOT NULL,
        finished_at BIGINT,
        updated_at TEXT NOT NULL,
        wakes BIGINT NOT NULL DEFAULT 0,
        -- The trace context of the order's creation, which the saga's steps continue.
        trace_context TEXT)",
    "CREATE INDEX IF NOT EXISTS checkout_sagas_due ON checkout_sagas (state, next_run_at)",
];

/// Where a saga is: `running` (has work or a timer), `done`, or `failed` (parked after its
/// retries; its order stays `PENDING`).
pub const RUNNING: &str = "running";
pub const DONE: &str = "done";
pub const FAILED: &str = "failed";

/// Creates the saga's tables in `db`, adding `wakes` and `trace_context` to a table made before
/// they existed.
pub async fn ensure_schema(db: &ReadDb) -> Result<(), SagaError> {
    db.ensure_schema(SCHEMA).await?;
    // `wakes` and `trace_context` came after the table was first released.
    db.ensure_columns(&[
        ("checkout_sagas", "wakes", "BIGINT NOT NULL DEFAULT 0"),
        ("checkout_sagas", "trace_context", "TEXT"),
    ])
    .await?;
    Ok(())
}

/// Milliseconds since the epoch, the unit of every saga time column.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One checkout saga as a worker runs it.
#[derive(Clone, Debug)]
pub struct SagaRun {
    pub order_id: Uuid,
    /// The `OrderCreated` event: the cause every command of the saga derives its id from.
    pub order_event_id: Uuid,
    pub correlation_id: String,
    /// Where the payment token is: the vault's reference (`vault:<order id>`), or, for a saga
    /// started before payment tokens left the log, the token itself; empty if the order
    /// named none.
    pub payment_ref: String,
    /// Failed attempts of the current step.
    pub attempts: u32,
    /// When the order was created (ms): the saga's duration counts from it.
    pub started_at: i64,
    /// Set when the saga already ended once (a late payment woke it up again).
    pub outcome: Option<String>,
    /// How many times the log woke the saga, as read when this run started: a step stores its
    /// end or its timer only if no wake-up came meanwhile (else it runs again).
    pub wakes: i64,
    /// The trace context of the order's creation (as stored: `traceparent`, then `tracestate`
    /// after a line break), which the saga's steps continue; none when it was not traced.
    pub trace_context: Option<String>,
}

impl SagaRun {
    /// The work of a step of this saga (`name`), in a span that carries the order, the saga and
    /// the correlation id, and, when spans are exported, continues the trace of the order's
    /// creation ([`telemetry::follow`]).
    pub fn work(&self, name: &'static str) -> telemetry::Work {
        use tracing::field::Empty;
        let (parent, state) = (self.trace_context.as_deref())
            .map(schemas::split_trace_context)
            .unzip();
        telemetry::follow(parent, state.flatten(), || {
            tracing::info_span!(
                "saga",
                otel.name = name,
                order_id = %self.order_id,
                saga_id = %self.saga_id(),
                correlation_id = %self.correlation_id,
                trace_id = Empty,
                span_id = Empty,
            )
        })
    }

    /// The reference `PaymentRequested` carries: the vault's, or empty for a saga whose token
    /// was never in the vault.
    pub fn event_payment_ref(&self) -> String {
        if self.payment_ref.starts_with(identity::vault::VAULT_PREFIX) {
            self.payment_ref.clone()
        } else {
            String::new()
        }
    }

    /// The saga's id in event metadata: derived from the order's creation, the same on every run.
    pub fn saga_id(&self) -> Uuid {
        crate::steps::saga_id(self.order_event_id)
    }
}

/// A saga as stored, for status answers and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaStatus {
    pub order_id: Uuid,
    pub state: String,
    pub outcome: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// The saga of `order_id`, if it started.
pub async fn saga_status(db: &ReadDb, order_id: Uuid) -> Result<Option<SagaStatus>, SagaError> {
    let row = sqlx::query(
        "SELECT state, outcome, attempts, last_error FROM checkout_sagas WHERE order_id = $1",
    )
    .bind(order_id.to_string())
    .fetch_optional(db.pool())
    .await?;
    row.map(|row| {
        Ok(SagaStatus {
            order_id,
            state: row.try_get(0)?,
            outcome: row.try_get(1)?,
            attempts: row.try_get(2)?,
            last_error: row.try_get(3)?,
        })
    })
    .transpose()
}

/// Counts of sagas by state, for tests and metrics.
pub async fn count_by_state(db: &ReadDb) -> Result<Vec<(String, i64)>, SagaError> {
    let rows = sqlx::query("SELECT state, COUNT(*) FROM checkout_sagas GROUP BY state")
        .fetch_all(db.pool())
        .await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// A parked saga: its order stays `PENDING` until it is run again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedSaga {
    pub order_id: Uuid,
    pub correlation_id: String,
    /// Failed attempts of the step it parked at.
    pub attempts: i64,
    /// Why it parked.
    pub last_error: Option<String>,
    /// When the order was created (ms).
    pub started_at: i64,
    /// When it parked (RFC 3339).
    pub parked_at: String,
}

/// Up to `limit` parked sagas, the most recently parked first.
pub async fn parked(db: &ReadDb, limit: usize) -> Result<Vec<ParkedSaga>, SagaError> {
    let rows = sqlx::query(
        "SELECT order_id, correlation_id, attempts, last_error, started_at, updated_at
         FROM checkout_sagas WHERE state = 'failed' ORDER BY updated_at DESC, order_id LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|row| {
            let order_id: String = row.try_get(0)?;
            Ok(ParkedSaga {
                order_id: parse_uuid(&order_id)?,
                correlation_id: row.try_get(1)?,
                attempts: row.try_get(2)?,
                last_error: row.try_get(3)?,
                started_at: row.try_get(4)?,
                parked_at: row.try_get(5)?,
            })
        })
        .collect()
}

/// Up to `limit` running sagas whose timer is due at `now`, oldest timer first.
pub(crate) async fn due(db: &ReadDb, now: i64, limit: usize) -> Result<Vec<SagaRun>, SagaError> {
    let rows = sqlx::query(
        "SELECT order_id, order_event_id, correlation_id, payment_token, attempts, started_at,
                outcome, wakes, trace_context
         FROM checkout_sagas WHERE state = 'running' AND next_run_at <= $1
         ORDER BY next_run_at LIMIT $2",
    )
    .bind(now)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|row| {
            let order_id: String = row.try_get(0)?;
            let order_event_id: String = row.try_get(1)?;
            let attempts: i64 = row.try_get(4)?;
            Ok(SagaRun {
                order_id: parse_uuid(&order_id)?,
                order_event_id: parse_uuid(&order_event_id)?,
                correlation_id: row.try_get(2)?,
                payment_ref: row.try_get(3)?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                started_at: row.try_get(5)?,
                outcome: row.try_get(6)?,
                wakes: row.try_get(7)?,
                trace_context: row.try_get(8)?,
            })
        })
        .collect()
}

/// When the earliest running saga's timer is due (ms), if any saga runs.
pub(crate) async fn next_due(db: &ReadDb) -> Result<Option<i64>, SagaError> {
    let row = sqlx::query("SELECT MIN(next_run_at) FROM checkout_sagas WHERE state = 'running'")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?)
}

fn parse_uuid(text: &str) -> Result<Uuid, SagaError> {
    Uuid::parse_str(text)
        .map_err(|error| SagaError::Storage(format!("stored id {text:?} is not a UUID: {error}")))
}

/// The saga of `run` ended (`outcome` is `CONFIRMED` or `CANCELLED`); answers `false` when
/// the log woke it while the step ran (it stays running, due at once, and runs again).
pub(crate) async fn finish(db: &ReadDb, run: &SagaRun, outcome: &str) -> Result<bool, SagaError> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE checkout_sagas SET state = 'done', outcome = $1, finished_at = $2, attempts = 0,
             last_error = NULL, updated_at = $3
         WHERE order_id = $4 AND wakes = $5",
    )
    .bind(outcome)
    .bind(now)
    .bind(chrono::Utc::now().to_rfc3339())
    .bind(run.order_id.to_string())
    .bind(run.wakes)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The saga of `run` waits for its timer: it runs again at `at` (ms), unless the log woke it
/// while the step ran (it is then due at once).
pub(crate) async fn wait_until(db: &ReadDb, run: &SagaRun, at: i64) -> Result<(), SagaError> {
    sqlx::query(
        "UPDATE checkout_sagas SET next_run_at = $1, attempts = 0, last_error = NULL,
             updated_at = $2
         WHERE order_id = $3 AND wakes = $4",
    )
    .bind(at)
    .bind(chrono::Utc::now().to_rfc3339())
    .bind(run.order_id.to_string())
    .bind(run.wakes)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The saga's charge waits for the gateway: the timer is set to the payment deadline `at` (ms),
/// keeping the count of failed attempts (a gateway that fails keeps backing off).
pub(crate) async fn set_charge_timer(
    db: &ReadDb,
    order_id: Uuid,
    at: i64,
) -> Result<(), SagaError> {
    sqlx::query("UPDATE checkout_sagas SET next_run_at = $1, updated_at = $2 WHERE order_id = $3")
        .bind(at)
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(order_id.to_string())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// A step failed: retry at `retry_at` (ms), or park the saga when `retry_at` is `None`.
pub(crate) async fn record_failure(
    db: &ReadDb,
    order_id: Uuid,
    attempts: u32,
    error: &str,
    retry_at: Option<i64>,
) -> Result<(), SagaError> {
    sqlx::query(
        "UPDATE checkout_sagas SET state = $1, attempts = $2, last_error = $3, next_run_at = $4,
             updated_at = $5
         WHERE order_id = $6",
    )
    .bind(if retry_at.is_some() { RUNNING } else { FAILED })
    .bind(i64::from(attempts))
    .bind(error)
    .bind(retry_at.unwrap_or(i64::MAX))
    .bind(chrono::Utc::now().to_rfc3339())
    .bind(order_id.to_string())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Runs parked sagas again (all, or one order's): their orders are still `PENDING`.
pub async fn retry_failed(db: &ReadDb, order_id: Option<Uuid>) -> Result<u64, SagaError> {
    let now = now_ms();
    let result = match order_id {
        Some(order_id) => {
            sqlx::query(
                "UPDATE checkout_sagas SET state = 'running', attempts = 0, next_run_at = $1
                 WHERE state = 'failed' AND order_id = $2",
            )
            .bind(now)
            .bind(order_id.to_string())
            .execute(db.pool())
            .await?
        }
        None => {
            sqlx::query(
                "UPDATE checkout_sagas SET state = 'running', attempts = 0, next_run_at = $1
                 WHERE state = 'failed'",
            )
            .bind(now)
            .execute(db.pool())
            .await?
        }
    };
    Ok(result.rows_affected())
}

/// The projection that starts sagas: each `OrderCreated` becomes a running saga row (in the
/// same transaction as the checkpoint, so a saga is started exactly once), a payment's answer
/// (`PaymentSucceeded`, `PaymentFailed`) wakes its running saga (the worker that recorded it
/// wakes it too; this covers a crash in between), and a `PaymentSucceeded` wakes an already
/// cancelled saga (a late charge to refund).
#[derive(Debug)]
pub struct SagaIntake {
    db: ReadDb,
    wake: Arc<Notify>,
}

impl SagaIntake {
    pub const NAME: &'static str = "checkout_saga";

    pub fn new(db: ReadDb, wake: Arc<Notify>) -> Self {
        Self { db, wake }
    }
}

#[async_trait]
impl Projection for SagaIntake {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.db.checkpoint(&feed.checkpoint_name(Self::NAME)).await
    }

    async fn apply(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        if events.is_empty() {
            return Ok(());
        }
        let relevant = events.iter().any(|event| {
            matches!(
                (event.stream_type.as_str(), event.event_type.as_str()),
                ("order", "OrderCreated")
                    | ("order", "OrderCancelled")
                    | ("order", "ReturnReceived")
                    | ("payment", "PaymentSucceeded")
                    | ("payment", "PaymentFailed")
                    | ("payment", "RefundRequested")
            )
        });
        let mut write = self.db.begin_write().await?;
        let mut started = 0_u64;
        let now = now_ms();
        let updated_at = chrono::Utc::now().to_rfc3339();
        for event in events {
            match (event.stream_type.as_str(), event.event_type.as_str()) {
                ("order", "OrderCreated") => {
                    let OrderEvent::OrderCreated(created) = decode(event)? else {
                        continue;
                    };
                    let inserted = sqlx::query(
                        "INSERT INTO checkout_sagas (order_id, order_event_id, correlation_id,
                             payment_token, state, outcome, next_run_at, attempts, last_error,
                             started_at, finished_at, updated_at, trace_context)
                         VALUES ($1, $2, $3, $4, 'running', NULL, $5, 0, NULL, $6, NULL, $7, $8)
                         ON CONFLICT (order_id) DO NOTHING",
                    )
                    .bind(created.order_id.to_string())
                    .bind(event.event_id.to_string())
                    .bind(&event.metadata.correlation_id)
                    .bind(created.payment_ref.as_deref().unwrap_or_default())
                    .bind(now)
                    .bind(event.occurred_at.timestamp_millis())
                    .bind(&updated_at)
                    .bind(event.metadata.stored_trace_context())
                    .execute(&mut *write.transaction)
                    .await?;
                    started += inserted.rows_affected();
                }
                ("payment", "PaymentSucceeded") => {
                    let PaymentEvent::PaymentSucceeded(succeeded) = decode(event)? else {
                        continue;
                    };
                    sqlx::query(
                        "UPDATE checkout_sagas SET state = 'running', next_run_at = $1,
                             updated_at = $2
                         WHERE order_id = $3 AND ((state = 'done' AND outcome = 'CANCELLED')
                             OR (state = 'running' AND next_run_at > $1))",
                    )
                    .bind(now)
                    .bind(&updated_at)
                    .bind(succeeded.order_id.to_string())
                    .execute(&mut *write.transaction)
                    .await?;
                }
                // What a person asked for after checkout (a cancellation, a return, a refund)
                // runs the saga again, ended or not: it compensates, restocks and refunds. The
                // wake-up is counted, so that a step running meanwhile does not store its end or
                // timer over it (it runs again instead).
                ("order", "OrderCancelled")
                | ("order", "ReturnReceived")
                | ("payment", "RefundRequested") => {
                    if event.event_type == "OrderCancelled"
                        && let OrderEvent::OrderCancelled(cancelled) = decode(event)?
                        && !cancelled.reason.is_requested()
                    {
                        // The saga's own decision: it compensates in the same step.
                        continue;
                    }
                    sqlx::query(
                        "UPDATE checkout_sagas SET state = 'running', next_run_at = $1,
                             updated_at = $2, wakes = wakes + 1
                         WHERE order_id = $3 AND state IN ('done', 'running')",
                    )
                    .bind(now)
                    .bind(&updated_at)
                    .bind(&event.stream_id)
                    .execute(&mut *write.transaction)
                    .await?;
                }
                ("payment", "PaymentFailed") => {
                    sqlx::query(
                        "UPDATE checkout_sagas SET next_run_at = $1, updated_at = $2
                         WHERE order_id = $3 AND state = 'running' AND next_run_at > $1",
                    )
                    .bind(now)
                    .bind(&updated_at)
                    .bind(&event.stream_id)
                    .execute(&mut *write.transaction)
                    .await?;
                }
                _ => {}
            }
        }
        write.commit_batch(feed, Self::NAME, events).await?;
        if started > 0 {
            metrics::counter!("mercato_saga_started_total").increment(started);
        }
        if relevant {
            self.wake.notify_one();
        }
        Ok(())
    }
}
