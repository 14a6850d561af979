//! Turning SQLite rows into events.

use chrono::{DateTime, SecondsFormat, Utc};
use schemas::{EventMetadata, RecordedEvent};
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::error::StoreError;

/// How many ids one `IN (...)` lookup binds.
pub(crate) const IDS_PER_QUERY: usize = 500;

pub(crate) fn to_u64(value: i64, column: &str) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::CorruptRow(format!("{column} is negative: {value}")))
}

/// A `u64` position, version or limit as a bind parameter (saturating).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Timestamps are stored as RFC 3339 text in UTC with microseconds (PostgreSQL's precision), so
/// that both adapters give back the same instant and the text sorts in time order.
pub(crate) fn format_timestamp(timestamp: &DateTime<Utc>) -> String {
    timestamp.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_uuid(text: &str, position: i64) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|error| {
        StoreError::CorruptRow(format!(
            "event_id at position {position} is not a uuid: {error}"
        ))
    })
}

/// An event's stored columns as read from a row, before they are checked and turned into a
/// [`RecordedEvent`]: shared by the sqlx rows and the bulk reader's rusqlite rows.
pub(crate) struct StoredEvent {
    pub position: i64,
    pub event_id: String,
    pub stream_type: String,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    pub schema_version: i64,
    pub occurred_at: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub saga_id: Option<String>,
    pub actor: String,
    pub source: String,
    pub payload: String,
    pub trace_context: Option<String>,
}

impl StoredEvent {
    /// The event, or why the stored row is not one.
    pub(crate) fn into_event(self) -> Result<RecordedEvent, StoreError> {
        let position = self.position;
        let occurred_at = DateTime::parse_from_rfc3339(&self.occurred_at)
            .map_err(|error| {
                StoreError::CorruptRow(format!(
                    "occurred_at at position {position} is not RFC 3339: {error}"
                ))
            })?
            .with_timezone(&Utc);
        let payload = RawValue::from_string(self.payload).map_err(|error| {
            StoreError::CorruptRow(format!(
                "payload at position {position} is not JSON: {error}"
            ))
        })?;
        let schema_version = self.schema_version;
        Ok(RecordedEvent {
            event_id: parse_uuid(&self.event_id, position)?,
            event_type: self.event_type,
            schema_version: u32::try_from(schema_version).map_err(|_| {
                StoreError::CorruptRow(format!(
                    "schema_version at position {position} is out of range: {schema_version}"
                ))
            })?,
            stream_type: self.stream_type,
            stream_id: self.stream_id,
            stream_version: to_u64(self.stream_version, "stream_version")?,
            position: to_u64(position, "position")?,
            occurred_at,
            metadata: EventMetadata {
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                saga_id: self.saga_id,
                actor: self.actor,
                source: self.source,
                traceparent: None,
                tracestate: None,
            }
            .with_stored_trace_context(self.trace_context.as_deref()),
            payload,
        })
    }
}

/// Reads an event from a row holding `event_columns!()`.
pub(crate) fn recorded_event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    StoredEvent {
        position: row.try_get("position")?,
        event_id: row.try_get("event_id")?,
        stream_type: row.try_get("stream_type")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get("stream_version")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        occurred_at: row.try_get("occurred_at")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        saga_id: row.try_get("saga_id")?,
        actor: row.try_get("actor")?,
        source: row.try_get("source")?,
        payload: row.try_get("payload")?,
        trace_context: row.try_get("trace_context")?,
    }
    .into_event()
}
