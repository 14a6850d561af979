//! The notification outbox: every message, recorded before it is sent.
//!
//! One row per message, keyed by a hash of (event, recipient, template, channel): the intake
//! inserts a message once however often the log is replayed (`ON CONFLICT DO NOTHING`), and the
//! sender marks it sent only after the mail server or the SMS provider took it. A crash in
//! between sends it again on the next start, with the same Message-ID (derived from the key), so
//! nothing is lost and a duplicate is recognisable as one message.
//!
//! The rows hold no personal data: the recipient is a reference (`user:<id>`), opened with the
//! person's key when the message is sent, and the variables are what the event said (order
//! numbers, amounts, a carrier). After the person's erasure a waiting message is marked
//! `erased` and never sent, and a listing shows the recipient as erased.

use projections::readdb::ReadDb;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::NotifyError;

/// Statements that create the outbox; idempotent.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS notifications (
        notification_key TEXT PRIMARY KEY,
        event_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        template TEXT NOT NULL,
        channel TEXT NOT NULL,
        recipient TEXT NOT NULL,
        order_id TEXT,
        correlation_id TEXT NOT NULL,
        variables TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        last_error TEXT,
        created_at BIGINT NOT NULL,
        sent_at BIGINT,
        provider_id TEXT,
        -- The trace context of the event the message is about, which its sending continues.
        trace_context TEXT)",
    "CREATE INDEX IF NOT EXISTS notifications_due ON notifications (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS notifications_order ON notifications (order_id)",
    "CREATE INDEX IF NOT EXISTS notifications_recipient ON notifications (recipient, status)",
];

/// A message waits to be sent (or sent again after a transient failure).
pub const PENDING: &str = "pending";
/// The mail server or SMS provider took it.
pub const SENT: &str = "sent";
/// It failed for good (a refused address, a template that cannot render) or ran out of
/// retries: `mercato notifications retry` sends it again.
pub const PARKED: &str = "parked";
/// Its recipient was erased before it was sent: it never will be.
pub const ERASED: &str = "erased";
/// Not for sending: the recipient has no address on its channel (no phone number), or it is
/// moot (an email verified already); `last_error` says why.
pub const SKIPPED: &str = "skipped";

/// Email or text message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    fn parse(text: &str) -> Channel {
        if text == "sms" {
            Channel::Sms
        } else {
            Channel::Email
        }
    }
}

/// A message to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    /// The event the message is about (or, for a requested or resent message, the request).
    pub event_id: String,
    pub position: u64,
    pub template: &'static str,
    pub channel: Channel,
    /// Who: `user:<id>`.
    pub recipient: String,
    pub order_id: Option<String>,
    pub correlation_id: String,
    /// The template's own variables (no personal data).
    pub variables: serde_json::Value,
    /// The trace context of the event (as stored in its metadata), when it was traced.
    pub trace_context: Option<String>,
}

impl NewMessage {
    /// The message's key: the same for the same event, recipient, template and channel.
    pub fn key(&self) -> String {
        message_key(&self.event_id, &self.recipient, self.template, self.channel)
    }
}

/// The key of a message: 32 hex digits of SHA-256 over its event, recipient, template and
/// channel.
pub fn message_key(event_id: &str, recipient: &str, template: &str, channel: Channel) -> String {
    let mut hash = Sha256::new();
    for part in [event_id, recipient, template, channel.as_str()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..16])
}

/// A recorded message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub key: String,
    pub event_id: String,
    pub position: u64,
    pub template: String,
    pub channel: Channel,
    pub recipient: String,
    pub order_id: Option<String>,
    pub correlation_id: String,
    pub variables: serde_json::Value,
    pub status: String,
    pub attempts: u32,
    /// When the next attempt is due (ms since the epoch), while pending.
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    /// The SMS provider's id of a sent text message.
    pub provider_id: Option<String>,
    /// The trace context its sending continues (not shown).
    #[serde(skip)]
    pub trace_context: Option<String>,
}

const COLUMNS: &str = "notification_key, event_id, position, template, channel, recipient, \
    order_id, correlation_id, variables, status, attempts, next_attempt_at, last_error, \
    created_at, sent_at, provider_id, trace_context";

impl Message {
    fn of_row(row: &AnyRow) -> Result<Message, NotifyError> {
        let variables: String = row.try_get(8)?;
        Ok(Message {
            key: row.try_get(0)?,
            event_id: row.try_get(1)?,
            position: u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
            template: row.try_get(3)?,
            channel: Channel::parse(&row.try_get::<String, _>(4)?),
            recipient: row.try_get(5)?,
            order_id: row.try_get(6)?,
            correlation_id: row.try_get(7)?,
            variables: serde_json::from_str(&variables).unwrap_or(serde_json::Value::Null),
            status: row.try_get(9)?,
            attempts: u32::try_from(row.try_get::<i64, _>(10)?).unwrap_or(u32::MAX),
            next_attempt_at: row.try_get(11)?,
            last_error: row.try_get(12)?,
            created_at: row.try_get(13)?,
            sent_at: row.try_get(14)?,
            provider_id: row.try_get(15)?,
            trace_context: row.try_get(16)?,
        })
    }
}

/// Milliseconds since the epoch, the unit of every time column here.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Creates the outbox in `db`.
pub async fn ensure_schema(db: &ReadDb) -> Result<(), NotifyError> {
    db.ensure_schema(SCHEMA).await?;
    // `trace_context` came after the outbox was first released.
    db.ensure_columns(&[("notifications", "trace_context", "TEXT")])
        .await?;
    Ok(())
}

/// Records `message` unless a message of the same key exists; answers whether it was new.
pub async fn insert<'c, E>(executor: E, message: &NewMessage) -> Result<bool, NotifyError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let inserted = sqlx::query(
        "INSERT INTO notifications (notification_key, event_id, position, template, channel,
             recipient, order_id, correlation_id, variables, status, attempts, next_attempt_at,
             last_error, created_at, sent_at, provider_id, trace_context)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, NULL, $10, NULL, NULL,
             $11)
         ON CONFLICT (notification_key) DO NOTHING",
    )
    .bind(message.key())
    .bind(&message.event_id)
    .bind(i64::try_from(message.position).unwrap_or(i64::MAX))
    .bind(message.template)
    .bind(message.channel.as_str())
    .bind(&message.recipient)
    .bind(message.order_id.as_deref())
    .bind(&message.correlation_id)
    .bind(message.variables.to_string())
    .bind(now_ms())
    .bind(message.trace_context.as_deref())
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Up to `limit` pending messages due at `now`, oldest first.
pub async fn due(db: &ReadDb, now: i64, limit: usize) -> Result<Vec<Message>, NotifyError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE status = 'pending' AND next_attempt_at <= $1
         ORDER BY next_attempt_at, position LIMIT $2"
    ))
    .bind(now)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(Message::of_row).collect()
}

/// When the earliest pending message is due (ms), if any waits.
pub async fn next_due(db: &ReadDb) -> Result<Option<i64>, NotifyError> {
    let row =
        sqlx::query("SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'pending'")
            .fetch_one(db.pool())
            .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?)
}

/// Message `key` left: it is sent (`provider_id` for a text message).
pub async fn mark_sent(
    db: &ReadDb,
    key: &str,
    provider_id: Option<&str>,
) -> Result<(), NotifyError> {
    sqlx::query(
        "UPDATE notifications SET status = 'sent', sent_at = $1, last_error = NULL,
             provider_id = $2, attempts = attempts + 1
         WHERE notification_key = $3 AND status = 'pending'",
    )
    .bind(now_ms())
    .bind(provider_id)
    .bind(key)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Message `key` failed: it is tried again at `retry_at`, or parked with `error` when `None`.
pub async fn mark_failed(
    db: &ReadDb,
    key: &str,
    error: &str,
    retry_at: Option<i64>,
) -> Result<(), NotifyError> {
    sqlx::query(
        "UPDATE notifications SET status = $1, attempts = attempts + 1, last_error = $2,
             next_attempt_at = $3
         WHERE notification_key = $4 AND status = 'pending'",
    )
    .bind(if retry_at.is_some() { PENDING } else { PARKED })
    .bind(error)
    .bind(retry_at.unwrap_or(i64::MAX))
    .bind(key)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Message `key` waits until `at` without counting an attempt (what it needs is not there yet).
pub async fn postpone(db: &ReadDb, key: &str, at: i64) -> Result<(), NotifyError> {
    sqlx::query(
        "UPDATE notifications SET next_attempt_at = $1
         WHERE notification_key = $2 AND status = 'pending'",
    )
    .bind(at)
    .bind(key)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Message `key` is not for sending, for `reason`.
pub async fn mark_skipped(db: &ReadDb, key: &str, reason: &str) -> Result<(), NotifyError> {
    sqlx::query(
        "UPDATE notifications SET status = 'skipped', last_error = $1
         WHERE notification_key = $2 AND status = 'pending'",
    )
    .bind(reason)
    .bind(key)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Message `key` will never be sent: its recipient was erased.
pub async fn mark_erased(db: &ReadDb, key: &str) -> Result<(), NotifyError> {
    sqlx::query(
        "UPDATE notifications SET status = 'erased', last_error = NULL
         WHERE notification_key = $1 AND status IN ('pending', 'parked')",
    )
    .bind(key)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Every waiting message of `recipient` is erased (run in the intake's transaction).
pub async fn erase_recipient<'c, E>(executor: E, recipient: &str) -> Result<u64, NotifyError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let erased = sqlx::query(
        "UPDATE notifications SET status = 'erased', last_error = NULL
         WHERE recipient = $1 AND status IN ('pending', 'parked')",
    )
    .bind(recipient)
    .execute(executor)
    .await?;
    Ok(erased.rows_affected())
}

/// Which messages a listing shows.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub order_id: Option<String>,
    pub recipient: Option<String>,
    pub limit: usize,
}

/// Recorded messages, newest first.
pub async fn list(db: &ReadDb, filter: &Filter) -> Result<Vec<Message>, NotifyError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR order_id = $2)
             AND ($3 IS NULL OR recipient = $3)
         ORDER BY created_at DESC, position DESC LIMIT $4"
    ))
    .bind(filter.status.as_deref())
    .bind(filter.order_id.as_deref())
    .bind(filter.recipient.as_deref())
    .bind(i64::try_from(filter.limit.max(1)).unwrap_or(i64::MAX))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(Message::of_row).collect()
}

/// One message by key.
pub async fn get(db: &ReadDb, key: &str) -> Result<Option<Message>, NotifyError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE notification_key = $1"
    ))
    .bind(key)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(Message::of_row).transpose()
}

/// Parked messages (all, or the one of `key`) are sent again; answers how many.
pub async fn retry_parked(db: &ReadDb, key: Option<&str>) -> Result<u64, NotifyError> {
    let retried = sqlx::query(
        "UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = $1
         WHERE status = 'parked' AND ($2 IS NULL OR notification_key = $2)",
    )
    .bind(now_ms())
    .bind(key)
    .execute(db.pool())
    .await?;
    Ok(retried.rows_affected())
}

/// Message `key` is sent once more, as a new message (its key derived from the original's and
/// the number of resends): answers the new key, or `None` when there is no such message.
pub async fn resend(db: &ReadDb, key: &str) -> Result<Option<String>, NotifyError> {
    let Some(original) = get(db, key).await? else {
        return Ok(None);
    };
    let count = sqlx::query("SELECT COUNT(*) FROM notifications WHERE event_id LIKE $1")
        .bind(format!("resend:{key}:%"))
        .fetch_one(db.pool())
        .await?
        .try_get::<i64, _>(0)?;
    let template = crate::templates::MESSAGES
        .iter()
        .find(|name| **name == original.template)
        .copied()
        .ok_or_else(|| NotifyError::Invalid(format!("message {key} has an unknown template")))?;
    let message = NewMessage {
        event_id: format!("resend:{key}:{}", count + 1),
        position: original.position,
        template,
        channel: original.channel,
        recipient: original.recipient,
        order_id: original.order_id,
        correlation_id: original.correlation_id,
        variables: original.variables,
        trace_context: original.trace_context,
    };
    insert(db.pool(), &message).await?;
    Ok(Some(message.key()))
}

/// How many messages are in each state, for metrics and `/ready`-style reports.
pub async fn count_by_status(db: &ReadDb) -> Result<Vec<(String, i64)>, NotifyError> {
    let rows = sqlx::query("SELECT status, COUNT(*) FROM notifications GROUP BY status")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}
