//! `cqrs_es::persist::PersistedEventRepository` over any [`EventStore`], so that a
//! `CqrsFramework` runs on mercato's store unchanged:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use cqrs_es::CqrsFramework;
//! # use cqrs_es::persist::PersistedEventStore;
//! # use eventstore::cqrs::CqrsEventRepository;
//! # async fn example(store: Arc<dyn eventstore::EventStore>) {
//! let repository = CqrsEventRepository::new(store);
//! let cqrs_store = PersistedEventStore::<_, domain::Product>::new_event_store(repository);
//! let cqrs = CqrsFramework::new(cqrs_store, vec![], ());
//! # }
//! ```
//!
//! Mapping: the aggregate type is the stream type, the aggregate id the stream id, `sequence`
//! the stream version. cqrs-es hands over the externally tagged event `{"Type":{...}}`; the
//! store keeps the inner object as the payload (as the `schemas` codec does) and wraps it back
//! on reading. The metadata keys `correlation_id`, `causation_id`, `saga_id`, `actor` and
//! `source` fill the envelope's metadata (other keys are not stored); reading adds `event_id`,
//! `position` and `occurred_at`.
//!
//! Snapshots: cqrs-es passes a snapshot with its events but not the version it was taken at.
//! With `new_aggregate_store` it covers every event, which is what [`CqrsEventRepository::new`]
//! assumes; with `new_snapshot_store(repository, n)` build the repository with
//! [`CqrsEventRepository::for_snapshot_store`] and the same `n`. The snapshot is stored in the
//! same transaction as the events. In aggregate-store mode cqrs-es reads no events after the
//! snapshot; when other writers appended since, [`CqrsEventRepository`] hands over a snapshot
//! that does not deserialise, and cqrs-es replays the stream instead of deciding on stale state.

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use schemas::{EventMetadata, NewEvent, RecordedEvent};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{AppendRequest, EventStore, ExpectedVersion, Snapshot};

/// How many events one read fetches while loading or replaying.
const PAGE: usize = 1_000;
/// How many events a replay stream buffers.
const REPLAY_BUFFER: usize = 256;

/// Which stream version a snapshot handed over by cqrs-es was taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPolicy {
    /// The snapshot covers every event of the commit (cqrs-es `new_aggregate_store`).
    CoversAllEvents,
    /// The snapshot was taken at the last multiple of this many events (cqrs-es
    /// `new_snapshot_store` with the same size).
    Every(usize),
}

/// The cqrs-es repository over a mercato [`EventStore`].
#[derive(Clone, Debug)]
pub struct CqrsEventRepository {
    store: Arc<dyn EventStore>,
    snapshot_policy: SnapshotPolicy,
}

impl CqrsEventRepository {
    /// For cqrs-es `new_event_store` (no snapshots) and `new_aggregate_store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            snapshot_policy: SnapshotPolicy::CoversAllEvents,
        }
    }

    /// For cqrs-es `new_snapshot_store(repository, snapshot_size)`.
    pub fn for_snapshot_store(store: Arc<dyn EventStore>, snapshot_size: usize) -> Self {
        Self {
            store,
            snapshot_policy: SnapshotPolicy::Every(snapshot_size.max(1)),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    async fn read_stream_from(
        &self,
        stream_type: &str,
        stream_id: &str,
        mut after_version: u64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut events = Vec::new();
        loop {
            let page = self
                .store
                .read_stream(stream_type, stream_id, after_version, PAGE)
                .await
                .map_err(persistence_error)?;
            for recorded in &page {
                events.push(serialized_event(recorded)?);
                after_version = recorded.stream_version;
            }
            if page.len() < PAGE {
                return Ok(events);
            }
        }
    }
}

/// Maps store errors to what cqrs-es expects (a conflict becomes its optimistic lock error).
fn persistence_error(error: StoreError) -> PersistenceError {
    match error {
        StoreError::Conflict { .. } => PersistenceError::OptimisticLockError,
        StoreError::CorruptRow(_) => PersistenceError::DeserializationError(Box::new(error)),
        error if error.is_unavailable() => PersistenceError::ConnectionError(Box::new(error)),
        error => PersistenceError::UnknownError(Box::new(error)),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct MappingError(String);

fn mapping_error(message: String) -> PersistenceError {
    PersistenceError::DeserializationError(Box::new(MappingError(message)))
}

/// The store's event as cqrs-es reads it.
fn serialized_event(recorded: &RecordedEvent) -> Result<SerializedEvent, PersistenceError> {
    let inner: Value = serde_json::from_str(recorded.payload.get())?;
    let mut tagged = serde_json::Map::with_capacity(1);
    tagged.insert(recorded.event_type.clone(), inner);
    // Built as the JSON object cqrs-es reads, without an intermediate map.
    let mut metadata = serde_json::Map::with_capacity(8);
    let mut put = |key: &str, value: String| {
        metadata.insert(key.to_owned(), Value::String(value));
    };
    put("correlation_id", recorded.metadata.correlation_id.clone());
    put("causation_id", recorded.metadata.causation_id.clone());
    put("actor", recorded.metadata.actor.clone());
    put("source", recorded.metadata.source.clone());
    put("event_id", recorded.event_id.to_string());
    put("position", recorded.position.to_string());
    put(
        "occurred_at",
        recorded
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    if let Some(saga_id) = &recorded.metadata.saga_id {
        put("saga_id", saga_id.clone());
    }
    Ok(SerializedEvent {
        aggregate_id: recorded.stream_id.clone(),
        sequence: usize::try_from(recorded.stream_version).unwrap_or(usize::MAX),
        aggregate_type: recorded.stream_type.clone(),
        event_type: recorded.event_type.clone(),
        event_version: recorded.schema_version.to_string(),
        payload: Value::Object(tagged),
        metadata: Value::Object(metadata),
    })
}

/// The schema version in a cqrs-es event version: `"2"`, or the major part of `"2.1"`.
fn schema_version_of(event: &SerializedEvent) -> Result<u32, PersistenceError> {
    let major = event
        .event_version
        .split('.')
        .next()
        .unwrap_or(&event.event_version);
    major.trim().parse().map_err(|_| {
        mapping_error(format!(
            "event version `{}` of {} does not start with a number",
            event.event_version, event.event_type
        ))
    })
}

/// The payload to store: the inner object of `{"Type":{...}}`, or `null` for a unit variant.
fn stored_payload(event: &SerializedEvent) -> Result<Box<RawValue>, PersistenceError> {
    let inner = match &event.payload {
        Value::Object(tagged) if tagged.len() == 1 => match tagged.get(&event.event_type) {
            Some(inner) => inner,
            None => {
                return Err(mapping_error(format!(
                    "the event's variant is not named like its event type {}",
                    event.event_type
                )));
            }
        },
        Value::String(variant) if *variant == event.event_type => &Value::Null,
        _ => {
            return Err(mapping_error(format!(
                "event {} is not an externally tagged enum variant",
                event.event_type
            )));
        }
    };
    Ok(RawValue::from_string(serde_json::to_string(inner)?)?)
}

fn metadata_of(event: &SerializedEvent) -> EventMetadata {
    let field = |key: &str| {
        event
            .metadata
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    EventMetadata {
        correlation_id: field("correlation_id").unwrap_or_default(),
        causation_id: field("causation_id").unwrap_or_default(),
        saga_id: field("saga_id"),
        actor: field("actor").unwrap_or_default(),
        source: field("source").unwrap_or_default(),
        traceparent: None,
        tracestate: None,
    }
}

fn new_event(event: &SerializedEvent) -> Result<NewEvent, PersistenceError> {
    Ok(NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event.event_type.clone(),
        schema_version: schema_version_of(event)?,
        occurred_at: Utc::now(),
        payload: stored_payload(event)?,
        metadata: metadata_of(event),
    })
}

/// What a replay stream reads.
#[derive(Debug)]
enum ReplaySource {
    /// One stream, in version order.
    Stream {
        stream_type: &'static str,
        stream_id: String,
    },
    /// Every stream of a type, in position order. The log is not indexed by stream type: this
    /// pages through all of it (cqrs-es uses it to rebuild a view from scratch).
    StreamType { stream_type: &'static str },
}

/// Feeds a replay stream page by page from a task.
fn replay(store: Arc<dyn EventStore>, source: ReplaySource) -> ReplayStream {
    let (mut feed, stream) = ReplayStream::new(REPLAY_BUFFER);
    tokio::spawn(async move {
        let mut cursor = 0;
        loop {
            let page = match &source {
                ReplaySource::Stream {
                    stream_type,
                    stream_id,
                } => {
                    store
                        .read_stream(stream_type, stream_id, cursor, PAGE)
                        .await
                }
                ReplaySource::StreamType { .. } => store.read_all(cursor, PAGE).await,
            };
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    let _ = feed.push(Err(persistence_error(error))).await;
                    return;
                }
            };
            let next_cursor = match (&source, page.last()) {
                (ReplaySource::Stream { .. }, Some(last)) => last.stream_version,
                (ReplaySource::StreamType { .. }, Some(last)) => last.position,
                (_, None) => cursor,
            };
            let full_page = page.len() == PAGE;
            for recorded in &page {
                if let ReplaySource::StreamType { stream_type } = &source
                    && recorded.stream_type != *stream_type
                {
                    continue;
                }
                if feed.push(serialized_event(recorded)).await.is_err() {
                    return; // the reader went away
                }
            }
            if !full_page {
                return;
            }
            cursor = next_cursor;
        }
    });
    stream
}

impl PersistedEventRepository for CqrsEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.read_stream_from(A::TYPE, aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.read_stream_from(A::TYPE, aggregate_id, last_sequence as u64)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let Some(snapshot) = self
            .store
            .load_snapshot(A::TYPE, aggregate_id)
            .await
            .map_err(persistence_error)?
        else {
            return Ok(None);
        };
        let version = usize::try_from(snapshot.version).unwrap_or(usize::MAX);
        let mut aggregate: Value = serde_json::from_str(snapshot.state.get())?;
        if self.snapshot_policy == SnapshotPolicy::CoversAllEvents {
            // cqrs-es's aggregate-store mode trusts the snapshot and reads no events after it.
            // If another writer (the command path, another process) appended since, hand over
            // a state that does not deserialise: cqrs-es then replays the whole stream.
            let stream_version = self
                .store
                .stream_version(A::TYPE, aggregate_id)
                .await
                .map_err(persistence_error)?;
            if stream_version != snapshot.version {
                aggregate = Value::Null;
            }
        }
        Ok(Some(SerializedSnapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            current_sequence: version,
            current_snapshot: version,
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            if let Some((aggregate_id, aggregate, _)) = snapshot_update {
                // cqrs-es only sends a snapshot without events when nothing changed; keep it
                // only if it is the first one.
                let Ok(state) = RawValue::from_string(serde_json::to_string(&aggregate)?) else {
                    return Ok(());
                };
                let stored = self
                    .store
                    .load_snapshot(A::TYPE, &aggregate_id)
                    .await
                    .map_err(persistence_error)?;
                if stored.is_none() {
                    let version = self
                        .store
                        .stream_version(A::TYPE, &aggregate_id)
                        .await
                        .map_err(persistence_error)?;
                    let snapshot = Snapshot {
                        stream_type: A::TYPE.to_owned(),
                        stream_id: aggregate_id,
                        version,
                        state,
                    };
                    self.store
                        .save_snapshot(snapshot)
                        .await
                        .map_err(persistence_error)?;
                }
            }
            return Ok(());
        };
        let stream_id = first.aggregate_id.clone();
        let expected = ExpectedVersion::Exact(first.sequence.saturating_sub(1) as u64);
        for (event_index, event) in events.iter().enumerate() {
            if event.aggregate_id != stream_id || event.sequence != first.sequence + event_index {
                return Err(mapping_error(
                    "one commit must hold consecutive events of one aggregate".to_owned(),
                ));
            }
        }
        let new_events = events.iter().map(new_event).collect::<Result<_, _>>()?;
        let request = AppendRequest::new(A::TYPE, stream_id.clone(), expected, new_events);
        let snapshot = match snapshot_update {
            Some((_, aggregate, _)) => {
                let last_sequence = first.sequence + events.len() - 1;
                let version = match self.snapshot_policy {
                    SnapshotPolicy::CoversAllEvents => last_sequence,
                    SnapshotPolicy::Every(size) => last_sequence - last_sequence % size,
                };
                Some(Snapshot {
                    stream_type: A::TYPE.to_owned(),
                    stream_id,
                    version: version as u64,
                    state: RawValue::from_string(serde_json::to_string(&aggregate)?)?,
                })
            }
            None => None,
        };
        match snapshot {
            Some(snapshot) => self.store.append_with_snapshot(request, snapshot).await,
            None => self.store.append(request).await,
        }
        .map_err(persistence_error)?;
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        Ok(replay(
            self.store.clone(),
            ReplaySource::Stream {
                stream_type: A::TYPE,
                stream_id: aggregate_id.to_owned(),
            },
        ))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Ok(replay(
            self.store.clone(),
            ReplaySource::StreamType {
                stream_type: A::TYPE,
            },
        ))
    }
}
