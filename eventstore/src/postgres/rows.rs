//! Turning PostgreSQL rows into events, and events into the append statement's arrays.

use chrono::{DateTime, Utc};
use schemas::{EventMetadata, NewEvent, RecordedEvent};
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

/// Reads a row selected with `event_columns!()`, by column index (the order of that list).
///
/// The columns' types are fixed by the migration, so values are decoded without sqlx's per-value
/// type check (`try_get_unchecked`): on long reads that check, a name lookup and the type
/// metadata it clones cost about a tenth of the client's time. A value of another type than the
/// one expected still fails to decode (wrong length) rather than being misread.
pub(crate) fn recorded_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get_unchecked(0)?;
    let payload: String = row.try_get_unchecked(13)?;
    let payload = RawValue::from_string(payload).map_err(|error| {
        StoreError::CorruptRow(format!(
            "payload at position {position} is not JSON: {error}"
        ))
    })?;
    let schema_version: i32 = row.try_get_unchecked(6)?;
    Ok(RecordedEvent {
        event_id: row.try_get_unchecked(1)?,
        event_type: row.try_get_unchecked(5)?,
        schema_version: u32::try_from(schema_version).map_err(|_| {
            StoreError::CorruptRow(format!(
                "schema_version at position {position} is negative: {schema_version}"
            ))
        })?,
        stream_type: row.try_get_unchecked(2)?,
        stream_id: row.try_get_unchecked(3)?,
        stream_version: to_u64(row.try_get_unchecked(4)?, "stream_version")?,
        position: to_u64(position, "position")?,
        occurred_at: row.try_get_unchecked(7)?,
        metadata: EventMetadata {
            correlation_id: row.try_get_unchecked(8)?,
            causation_id: row.try_get_unchecked(9)?,
            saga_id: row.try_get_unchecked(10)?,
            actor: row.try_get_unchecked(11)?,
            source: row.try_get_unchecked(12)?,
            traceparent: None,
            tracestate: None,
        }
        .with_stored_trace_context(row.try_get_unchecked::<Option<&str>, _>(14)?),
        payload,
    })
}

pub(crate) fn schema_version(schema_version: u32) -> i32 {
    i32::try_from(schema_version).unwrap_or(i32::MAX)
}

/// One array per column, as the append statement binds them.
/// The per-event arrays of an append statement (`UNNEST`ed by it), borrowed from the events.
#[derive(Debug, Default)]
pub(crate) struct EventColumns<'a> {
    pub event_ids: Vec<Uuid>,
    pub event_types: Vec<&'a str>,
    pub schema_versions: Vec<i32>,
    pub occurred_at: Vec<DateTime<Utc>>,
    pub correlation_ids: Vec<&'a str>,
    pub causation_ids: Vec<&'a str>,
    pub saga_ids: Vec<Option<&'a str>>,
    pub actors: Vec<&'a str>,
    pub sources: Vec<&'a str>,
    pub payloads: Vec<&'a str>,
    pub trace_contexts: Vec<Option<String>>,
}

impl<'a> EventColumns<'a> {
    pub(crate) fn with_capacity(n_events: usize) -> Self {
        EventColumns {
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
            trace_contexts: Vec::with_capacity(n_events),
        }
    }

    /// The columns of one request's events.
    pub(crate) fn of(request: &'a AppendRequest) -> Self {
        let mut columns = EventColumns::with_capacity(request.events.len());
        for event in &request.events {
            columns.push(event);
        }
        columns
    }

    pub(crate) fn push(&mut self, event: &'a NewEvent) {
        self.event_ids.push(event.event_id);
        self.event_types.push(&event.event_type);
        self.schema_versions
            .push(schema_version(event.schema_version));
        self.occurred_at.push(event.occurred_at);
        self.correlation_ids.push(&event.metadata.correlation_id);
        self.causation_ids.push(&event.metadata.causation_id);
        self.saga_ids.push(event.metadata.saga_id.as_deref());
        self.actors.push(&event.metadata.actor);
        self.sources.push(&event.metadata.source);
        self.payloads.push(event.payload.get());
        self.trace_contexts
            .push(event.metadata.stored_trace_context());
    }

    /// Binds the eleven arrays, in this order, as the statement's next parameters.
    pub(crate) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.event_ids)
            .bind(&self.event_types)
            .bind(&self.schema_versions)
            .bind(&self.occurred_at)
            .bind(&self.correlation_ids)
            .bind(&self.causation_ids)
            .bind(&self.saga_ids)
            .bind(&self.actors)
            .bind(&self.sources)
            .bind(&self.payloads)
            .bind(&self.trace_contexts)
    }
}

/// A PostgreSQL statement with its parameters.
pub(crate) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;
