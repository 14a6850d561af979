//! Turning PostgreSQL rows into events, and events into the append statement's arrays.

use chrono::{DateTime, Utc};
use schemas::{EventMetadata, RecordedEvent};
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::AppendRequest;

pub(crate) fn to_u64(value: i64, column: &str) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::CorruptRow(format!("{column} is negative: {value}")))
}

/// A `u64` position, version or limit as a bind parameter (saturating: no stored value is
/// above `i64::MAX`).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads a row selected with [`crate::postgres::sql::EVENT_COLUMNS`], by column index (the
/// order of that list), which spares a name lookup per column per row on long reads.
pub(crate) fn recorded_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get(0)?;
    let payload: String = row.try_get(13)?;
    let payload = RawValue::from_string(payload).map_err(|error| {
        StoreError::CorruptRow(format!(
            "payload at position {position} is not JSON: {error}"
        ))
    })?;
    let schema_version: i32 = row.try_get(6)?;
    Ok(RecordedEvent {
        event_id: row.try_get(1)?,
        event_type: row.try_get(5)?,
        schema_version: u32::try_from(schema_version).map_err(|_| {
            StoreError::CorruptRow(format!(
                "schema_version at position {position} is negative: {schema_version}"
            ))
        })?,
        stream_type: row.try_get(2)?,
        stream_id: row.try_get(3)?,
        stream_version: to_u64(row.try_get(4)?, "stream_version")?,
        position: to_u64(position, "position")?,
        occurred_at: row.try_get(7)?,
        metadata: EventMetadata {
            correlation_id: row.try_get(8)?,
            causation_id: row.try_get(9)?,
            saga_id: row.try_get(10)?,
            actor: row.try_get(11)?,
            source: row.try_get(12)?,
        },
        payload,
    })
}

pub(crate) fn schema_version(schema_version: u32) -> i32 {
    i32::try_from(schema_version).unwrap_or(i32::MAX)
}

/// One array per column, as the append statement binds them.
#[derive(Debug, Default)]
pub(crate) struct EventColumns {
    pub event_ids: Vec<Uuid>,
    pub event_types: Vec<String>,
    pub schema_versions: Vec<i32>,
    pub occurred_at: Vec<DateTime<Utc>>,
    pub correlation_ids: Vec<String>,
    pub causation_ids: Vec<String>,
    pub saga_ids: Vec<Option<String>>,
    pub actors: Vec<String>,
    pub sources: Vec<String>,
    pub payloads: Vec<String>,
}

impl EventColumns {
    pub(crate) fn of(request: &AppendRequest) -> Self {
        let n_events = request.events.len();
        let mut columns = EventColumns {
            event_ids: Vec::with_capacity(n_events),
            event_types: Vec::with_capacity(n_events),
            schema_versions: Vec::with_capacity(n_events),
            occurred_at: Vec::with_capacity(n_events),
            correlation_ids: Vec::with_capacity(n_events),
            causation_ids: Vec::with_capacity(n_events),
            saga_ids: Vec::with_capacity(n_events),
            actors: Vec::with_capacity(n_events),
            sources: Vec::with_capacity(n_events),
            payloads: Vec::with_capacity(n_events),
        };
        for event in &request.events {
            let schema_version = schema_version(event.schema_version);
            columns.event_ids.push(event.event_id);
            columns.event_types.push(event.event_type.clone());
            columns.schema_versions.push(schema_version);
            columns.occurred_at.push(event.occurred_at);
            columns
                .correlation_ids
                .push(event.metadata.correlation_id.clone());
            columns
                .causation_ids
                .push(event.metadata.causation_id.clone());
            columns.saga_ids.push(event.metadata.saga_id.clone());
            columns.actors.push(event.metadata.actor.clone());
            columns.sources.push(event.metadata.source.clone());
            columns.payloads.push(event.payload.get().to_owned());
        }
        columns
    }
}
