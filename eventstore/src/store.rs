//! The store port: what every adapter provides, and the types it speaks in.

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;
use schemas::{NewEvent, RecordedEvent};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::StoreError;

/// Which version a stream must be at for an append to go through (optimistic concurrency).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version (no concurrency check).
    Any,
    /// The stream must not exist yet (the same as `Exact(0)`).
    NoStream,
    /// The stream must be at exactly this version (its number of events).
    Exact(u64),
}

impl ExpectedVersion {
    /// The version the stream must be at, or `None` for [`ExpectedVersion::Any`].
    pub fn required_version(self) -> Option<u64> {
        match self {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(version) => Some(version),
        }
    }

    /// Whether a stream at `current_version` satisfies this expectation.
    pub fn is_satisfied_by(self, current_version: u64) -> bool {
        self.required_version()
            .is_none_or(|required| required == current_version)
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => formatter.write_str("any"),
            ExpectedVersion::NoStream => formatter.write_str("no stream"),
            ExpectedVersion::Exact(version) => write!(formatter, "{version}"),
        }
    }
}

/// Events to append to one stream.
#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub stream_type: String,
    pub stream_id: String,
    pub expected: ExpectedVersion,
    /// In stream order: the first gets version `current + 1`.
    pub events: Vec<NewEvent>,
}

/// Gives `events` that carry no trace context the current span's, when spans are exported: the
/// work that appends them (a request's command, a saga step) is what later work continues.
pub fn stamp_trace_context(events: &mut [NewEvent]) {
    if !telemetry::enabled()
        || events
            .iter()
            .all(|event| event.metadata.traceparent.is_some())
    {
        return;
    }
    if let Some(context) = telemetry::TraceContext::current() {
        for event in events
            .iter_mut()
            .filter(|event| event.metadata.traceparent.is_none())
        {
            event.metadata.traceparent = Some(context.traceparent.clone());
            event.metadata.tracestate = context.tracestate.clone();
        }
    }
}

impl AppendRequest {
    pub fn new(
        stream_type: impl Into<String>,
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        let mut events = events;
        stamp_trace_context(&mut events);
        Self {
            stream_type: stream_type.into(),
            stream_id: stream_id.into(),
            expected,
            events,
        }
    }

    /// Refuses requests no adapter should store: empty names, one event id twice.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.stream_type.is_empty() {
            return Err(StoreError::InvalidRequest(
                "stream_type must not be empty".to_owned(),
            ));
        }
        if self.stream_id.is_empty() {
            return Err(StoreError::InvalidRequest(format!(
                "stream_id of a {} stream must not be empty",
                self.stream_type
            )));
        }
        if let Some(event) = self
            .events
            .iter()
            .find(|event| i32::try_from(event.schema_version).is_err())
        {
            return Err(StoreError::InvalidRequest(format!(
                "schema_version {} of event {} is too large",
                event.schema_version, event.event_id
            )));
        }
        if self.events.len() > 1 {
            let mut seen = HashSet::with_capacity(self.events.len());
            for event in &self.events {
                if !seen.insert(event.event_id) {
                    return Err(StoreError::InvalidRequest(format!(
                        "event id {} appears twice in one append",
                        event.event_id
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn event_ids(&self) -> Vec<Uuid> {
        self.events.iter().map(|event| event.event_id).collect()
    }

    pub(crate) fn conflict(&self, actual: u64) -> StoreError {
        StoreError::Conflict {
            stream_type: self.stream_type.clone(),
            stream_id: self.stream_id.clone(),
            expected: self.expected,
            actual,
        }
    }
}

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The global position of each appended event, in the order they were given.
    pub positions: Vec<u64>,
    /// The stream's version after the append (the version of its last event).
    pub stream_version: u64,
    /// True when every event id was already stored: nothing was written, and `positions` and
    /// `stream_version` describe the events as they were stored the first time.
    pub duplicate: bool,
}

impl AppendResult {
    /// The result of an append from the `(stream_version, position)` of each inserted row, in
    /// any order.
    pub(crate) fn from_inserted_rows(mut inserted: Vec<(i64, i64)>) -> AppendResult {
        inserted.sort_unstable();
        let stream_version = inserted
            .last()
            .map_or(0, |(stream_version, _)| *stream_version);
        AppendResult {
            positions: inserted
                .into_iter()
                .map(|(_, position)| u64::try_from(position).unwrap_or(0))
                .collect(),
            stream_version: u64::try_from(stream_version).unwrap_or(0),
            duplicate: false,
        }
    }

    /// The position of the last event of this append, if it had any.
    pub fn last_position(&self) -> Option<u64> {
        self.positions.last().copied()
    }
}

/// The saved state of a stream at a version: a cache that spares replaying the whole stream.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub stream_type: String,
    pub stream_id: String,
    /// The stream version whose state `state` is (the state after applying events 1..=version).
    pub version: u64,
    /// The state as JSON text.
    pub state: Box<RawValue>,
}

impl Snapshot {
    /// A snapshot from its stored columns; a state that is not JSON is a corrupt row.
    pub(crate) fn from_stored(
        stream_type: &str,
        stream_id: &str,
        version: i64,
        state: String,
    ) -> Result<Snapshot, StoreError> {
        let state = RawValue::from_string(state).map_err(|error| {
            StoreError::CorruptRow(format!(
                "snapshot of {stream_type}/{stream_id} is not JSON: {error}"
            ))
        })?;
        let version = u64::try_from(version).map_err(|_| {
            StoreError::CorruptRow(format!("snapshot version is negative: {version}"))
        })?;
        Ok(Snapshot {
            stream_type: stream_type.to_owned(),
            stream_id: stream_id.to_owned(),
            version,
            state,
        })
    }
}

/// Which adapter a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        })
    }
}

/// The event store port. Two adapters implement it: [`crate::postgres::PgEventStore`] and
/// [`crate::sqlite::SqliteEventStore`]; [`crate::open`] picks one from a URL.
///
/// Positions are global, strictly increasing in the order [`EventStore::read_all`] returns
/// events, and never reused; they are not dense on PostgreSQL. A reader that remembers the
/// last position it processed and asks for what comes after it never skips an event.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug {
    /// Which adapter this is.
    fn backend(&self) -> Backend;

    /// Appends events to one stream if it is at the expected version.
    ///
    /// If every event id is already stored (a retried request), nothing is written and the
    /// stored positions are returned with `duplicate: true`. If only some are, or they belong to
    /// other events, the answer is [`StoreError::EventIdReused`]. A stream at another version
    /// is [`StoreError::Conflict`].
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError>;

    /// Appends to several streams in one transaction: all are stored, or none.
    ///
    /// Each request is checked as [`EventStore::append`] checks it. If every request is a
    /// duplicate, the stored results come back with `duplicate: true`; a mix of duplicate and
    /// new requests is [`StoreError::EventIdReused`].
    async fn append_atomic(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<AppendResult>, StoreError>;

    /// Appends like [`EventStore::append`] and, in the same transaction, saves `snapshot`
    /// (unless the append was a duplicate).
    async fn append_with_snapshot(
        &self,
        request: AppendRequest,
        snapshot: Snapshot,
    ) -> Result<AppendResult, StoreError>;

    /// Up to `limit` events of one stream with a version above `after_version`, in version
    /// order (`after_version = 0` reads from the start).
    async fn read_stream(
        &self,
        stream_type: &str,
        stream_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The stream's current version (0 when it has no events).
    async fn stream_version(&self, stream_type: &str, stream_id: &str) -> Result<u64, StoreError>;

    /// Up to `limit` events of the global log with a position above `after_position`, in
    /// position order (`after_position = 0` reads from the start). Only events that can no
    /// longer be preceded by another one are returned: a later call never returns an event
    /// with a position at or below one already returned.
    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events whose `metadata.correlation_id` is `correlation_id`, with a position
    /// above `after_position`, in position order (only events `read_all` could return).
    async fn read_correlated(
        &self,
        correlation_id: &str,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events of the global log after `after_position` as the audit hash chain
    /// sees them (raw stored columns and hash), in position order; only events
    /// [`EventStore::read_all`] could return.
    async fn read_chain(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::ChainRow>, StoreError>;

    /// [`EventStore::read_chain`], reusing the rows of `spare` (a page the caller is done with)
    /// where the adapter can: a verifier reading millions of rows then allocates almost nothing
    /// per row. Adapters that cannot reuse rows read a fresh page.
    async fn read_chain_reusing(
        &self,
        after_position: u64,
        limit: usize,
        spare: Vec<crate::audit::ChainRow>,
    ) -> Result<Vec<crate::audit::ChainRow>, StoreError> {
        drop(spare);
        self.read_chain(after_position, limit).await
    }

    /// Up to `limit` events of one stream after `after_version` as the audit hash chain sees
    /// them, in version order.
    async fn read_stream_chain(
        &self,
        stream_type: &str,
        stream_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::ChainRow>, StoreError>;

    /// Every audit checkpoint, in position order.
    async fn audit_checkpoints(&self) -> Result<Vec<crate::audit::Checkpoint>, StoreError>;

    /// The audit checkpoint with the highest position.
    async fn last_audit_checkpoint(&self) -> Result<Option<crate::audit::Checkpoint>, StoreError>;

    /// The last sealed version of every stream (or of one).
    async fn sealed_heads(
        &self,
        stream: Option<(&str, &str)>,
    ) -> Result<Vec<crate::audit::SealedHead>, StoreError>;

    /// Stores checkpoints and the stream heads they seal, in one transaction, if the last
    /// stored checkpoint is still at `expected_last` (`None`: no checkpoint yet). `false` when
    /// it is not (another sealer went first): nothing is written.
    async fn write_audit_seal(
        &self,
        expected_last: Option<u64>,
        checkpoints: Vec<crate::audit::Checkpoint>,
        heads: Vec<crate::audit::SealedHead>,
    ) -> Result<bool, StoreError>;

    /// The stored events among `event_ids`, in position order (missing ids are left out).
    async fn find_events(&self, event_ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last event [`EventStore::read_all`] can return now (0 when none).
    async fn head_position(&self) -> Result<u64, StoreError>;

    /// Follows the global log from `after_position`: catches up in pages, then waits for new
    /// events. See [`Subscription::next_batch`].
    async fn subscribe(&self, after_position: u64) -> Result<Subscription, StoreError>;

    /// A signal that changes whenever the log may have grown: on every commit of this process,
    /// and on PostgreSQL on every other process's too (`LISTEN`). Wait on it, then read
    /// [`EventStore::head_position`]; it carries no position itself. On PostgreSQL an event
    /// becomes readable once the transactions that started before it end, which nothing
    /// signals, so a follower also reads now and then without a change.
    async fn log_changes(&self) -> Result<tokio::sync::watch::Receiver<u64>, StoreError>;

    /// The latest snapshot of a stream, if one was saved.
    async fn load_snapshot(
        &self,
        stream_type: &str,
        stream_id: &str,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Saves a snapshot unless a newer one (higher version) is already stored.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// Checks that the database answers (for readiness probes).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The default number of events one [`Subscription::next_batch`] returns at most.
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// A follower of the global log, made by [`EventStore::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    pub(crate) source: SubscriptionSource,
}

#[derive(Debug)]
pub(crate) enum SubscriptionSource {
    Postgres(crate::postgres::PgSubscription),
    Sqlite(crate::sqlite::SqliteSubscription),
}

impl Subscription {
    /// The next events after the checkpoint, in position order: at least one, at most the batch
    /// size. While catching up it returns full pages; once caught up it waits (without busy
    /// polling) until new events can be read. Each event is returned exactly once.
    ///
    /// Cancel-safe: if the future is dropped before it completes, no event is lost and the
    /// checkpoint does not move. An error leaves the checkpoint where it was, so calling again
    /// retries.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        match &mut self.source {
            SubscriptionSource::Postgres(subscription) => subscription.next_batch().await,
            SubscriptionSource::Sqlite(subscription) => subscription.next_batch().await,
        }
    }

    /// The position of the last event returned (or the starting position): store it, and
    /// subscribe again from it after a restart.
    pub fn checkpoint(&self) -> u64 {
        match &self.source {
            SubscriptionSource::Postgres(subscription) => subscription.checkpoint,
            SubscriptionSource::Sqlite(subscription) => subscription.checkpoint,
        }
    }

    /// Sets how many events one batch holds at most (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        let batch_size = batch_size.max(1);
        match &mut self.source {
            SubscriptionSource::Postgres(subscription) => subscription.batch_size = batch_size,
            SubscriptionSource::Sqlite(subscription) => subscription.batch_size = batch_size,
        }
        self
    }
}
