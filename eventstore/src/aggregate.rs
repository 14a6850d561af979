//! The command path: load an aggregate, let it decide, append what it decided.
//!
//! [`execute`] loads the latest snapshot and the events after it, runs the aggregate's
//! `handle`, and appends the new events with [`ExpectedVersion::Exact`] of the version it
//! loaded. If another writer got there first ([`StoreError::Conflict`]) it loads again and
//! decides again, a few times. Events are encoded and decoded by the `schemas` codec, so the
//! store holds exactly what every other reader of the log reads.

use chrono::Utc;
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use schemas::{CodecError, EventMetadata, NewEvent, RecordedEvent};
use serde_json::value::RawValue;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{AppendRequest, EventStore, ExpectedVersion, Snapshot};

/// Save a snapshot every this many events unless told otherwise.
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 100;
/// How many times a command is decided before a conflict is given up on.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// How many events one read of a stream fetches while loading.
const LOAD_PAGE: usize = 1_000;

/// How [`execute`] runs a command.
#[derive(Clone, Debug)]
pub struct CommandOptions {
    /// When set, event ids are derived from it (uuid v5 of this id and
    /// `"{stream_type}/{stream_id}/{event_index}"`), so that a retried command (same cause)
    /// finds its events already stored and returns them instead of deciding again.
    pub cause_id: Option<Uuid>,
    /// Save a snapshot whenever the stream crosses a multiple of this many events (0: never).
    pub snapshot_interval: u64,
    /// How many times to load, decide and append before a conflict is returned (at least 1).
    pub max_attempts: u32,
    /// With `cause_id`: look the command's events up before deciding (one query), so that a
    /// retried command answers the stored events. A caller whose aggregates are idempotent (a
    /// repeated command decides nothing new) can skip the lookup: a repeated append is still
    /// recognised by its derived event ids, and a repeat the aggregate refuses (the state its
    /// first run left has nothing more to do) is looked up then, so it answers the stored
    /// events instead of the refusal.
    pub look_up_cause_first: bool,
}

impl Default for CommandOptions {
    fn default() -> Self {
        Self {
            cause_id: None,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            look_up_cause_first: true,
        }
    }
}

impl CommandOptions {
    /// Default options with event ids derived from `cause_id` (a request or message id).
    pub fn caused_by(cause_id: Uuid) -> Self {
        Self {
            cause_id: Some(cause_id),
            ..Self::default()
        }
    }
}

/// The id of the `event_index`-th event a command caused by `cause_id` appends to a stream.
pub fn derived_event_id(
    cause_id: Uuid,
    stream_type: &str,
    stream_id: &str,
    event_index: usize,
) -> Uuid {
    Uuid::new_v5(
        &cause_id,
        format!("{stream_type}/{stream_id}/{event_index}").as_bytes(),
    )
}

/// An aggregate as its stream leaves it.
#[derive(Debug)]
pub struct Loaded<A> {
    pub state: A,
    /// The stream version the state is at (0 for a stream without events).
    pub version: u64,
}

/// What a command did.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The events the command appended (empty if it decided that nothing changes).
    pub events: Vec<A::Event>,
    /// Their global positions.
    pub positions: Vec<u64>,
    /// The state after the command.
    pub state: A,
    /// The stream version after the command.
    pub version: u64,
    /// True when the command had already been applied (same cause id): `events` and
    /// `positions` are the stored ones, nothing new was appended.
    pub duplicate: bool,
}

impl<A: Aggregate> Executed<A> {
    /// The position of the command's last event, if it appended any.
    pub fn last_position(&self) -> Option<u64> {
        self.positions.last().copied()
    }
}

/// Why an aggregate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event {stream_version} of {stream_type}/{stream_id} cannot be decoded: {source}")]
    Codec {
        stream_type: String,
        stream_id: String,
        stream_version: u64,
        #[source]
        source: CodecError,
    },
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command (a business rule).
    #[error("{0}")]
    Domain(E),
    /// The store failed, or the stream kept changing under the command
    /// ([`StoreError::Conflict`] after every attempt).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event could not be encoded or a stored one decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl<E: std::error::Error> CommandError<E> {
    /// Whether the command failed on optimistic concurrency (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, CommandError::Store(error) if error.is_conflict())
    }
}

/// Loads an aggregate: its latest snapshot, then every event after it.
///
/// A snapshot that no longer deserialises (the state's shape changed) is ignored and the
/// stream is replayed from its first event.
pub async fn load<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
) -> Result<Loaded<A>, LoadError> {
    let mut state = A::default();
    let mut version = 0;
    if let Some(snapshot) = store.load_snapshot(A::TYPE, stream_id).await? {
        match serde_json::from_str::<A>(snapshot.state.get()) {
            Ok(snapshot_state) => {
                state = snapshot_state;
                version = snapshot.version;
            }
            Err(error) => tracing::warn!(
                %error,
                stream_type = A::TYPE,
                stream_id,
                "ignoring a snapshot that no longer deserialises; replaying the stream"
            ),
        }
    }
    loop {
        let page = store
            .read_stream(A::TYPE, stream_id, version, LOAD_PAGE)
            .await?;
        for recorded in &page {
            state.apply(decode_event::<A>(recorded)?);
            version = recorded.stream_version;
        }
        if page.len() < LOAD_PAGE {
            return Ok(Loaded { state, version });
        }
    }
}

/// The aggregate in `stream_id` as it stood at a moment: folded from its events (without
/// snapshots) up to the first one `includes` refuses. A stream's events are in position order,
/// so a later event with an earlier clock reading stays out too. Answers the state and the last
/// event folded in (`None`: the stream had no event then).
pub async fn state_at<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    includes: impl Fn(&RecordedEvent) -> bool,
) -> Result<(A, Option<RecordedEvent>), LoadError> {
    let mut state = A::default();
    let mut last: Option<RecordedEvent> = None;
    let mut after_version = 0;
    loop {
        let page = store
            .read_stream(A::TYPE, stream_id, after_version, LOAD_PAGE)
            .await?;
        let full = page.len() == LOAD_PAGE;
        for recorded in page {
            if !includes(&recorded) {
                return Ok((state, last));
            }
            state.apply(decode_event::<A>(&recorded)?);
            after_version = recorded.stream_version;
            last = Some(recorded);
        }
        if !full {
            return Ok((state, last));
        }
    }
}

fn decode_event<A: Aggregate>(recorded: &RecordedEvent) -> Result<A::Event, LoadError> {
    schemas::decode(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.payload,
    )
    .map_err(|source| LoadError::Codec {
        stream_type: recorded.stream_type.clone(),
        stream_id: recorded.stream_id.clone(),
        stream_version: recorded.stream_version,
        source,
    })
}

/// What an aggregate decided, not yet appended: see [`decide`].
#[derive(Debug)]
pub struct Decided<A: Aggregate> {
    /// The events the command causes (empty if nothing changes).
    pub events: Vec<A::Event>,
    /// Their append, expecting the stream at the loaded version (no events if nothing changes).
    pub request: AppendRequest,
    /// A snapshot of `state`, when the append crosses a snapshot interval.
    pub snapshot: Option<Snapshot>,
    /// The state after the events.
    pub state: A,
    /// The stream version the decision was made on.
    pub loaded_version: u64,
}

/// Loads the aggregate and runs `command` without appending anything.
///
/// For commands that change several aggregates in one transaction (a checkout writes a cart
/// and an order): decide each, append their requests with [`EventStore::append_atomic`], and
/// decide again on [`StoreError::Conflict`]. Single-aggregate commands use [`execute`].
pub async fn decide<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    command: A::Command,
    services: &A::Services,
    metadata: &EventMetadata,
    options: &CommandOptions,
) -> Result<Decided<A>, CommandError<A::Error>> {
    let Loaded { mut state, version } = load::<A>(store, stream_id)
        .instrument(store_span("store read", A::TYPE, stream_id))
        .await?;
    let sink = EventSink::default();
    state
        .handle(command, services, &sink)
        .await
        .map_err(CommandError::Domain)?;
    let events = sink.collect().await;
    let new_events = encode_events::<A>(&events, stream_id, metadata, options)?;
    let new_version = version + events.len() as u64;
    let snapshot = snapshot_due(options.snapshot_interval, version, new_version)
        .then(|| snapshot_of(&state, stream_id, new_version))
        .flatten();
    Ok(Decided {
        events,
        request: AppendRequest::new(
            A::TYPE,
            stream_id,
            ExpectedVersion::Exact(version),
            new_events,
        ),
        snapshot,
        state,
        loaded_version: version,
    })
}

/// Runs `command` against the aggregate in stream `stream_id` and appends what it decides.
///
/// Retries the whole load, decide, append on [`StoreError::Conflict`] up to
/// `options.max_attempts` times. With `options.cause_id`, a command whose events are already
/// stored is answered from them with `duplicate: true`, whether the aggregate decides them again
/// or refuses the repeat.
pub async fn execute<A>(
    store: &dyn EventStore,
    stream_id: &str,
    command: A::Command,
    services: &A::Services,
    metadata: &EventMetadata,
    options: &CommandOptions,
) -> Result<Executed<A>, CommandError<A::Error>>
where
    A: Aggregate,
    A::Command: Clone,
{
    let run = execute_untraced::<A>(store, stream_id, command, services, metadata, options);
    if !telemetry::traced() {
        return run.await;
    }
    let span = tracing::info_span!(
        "command",
        otel.name = %format_args!("{} command", A::TYPE),
        aggregate = A::TYPE,
        stream_id,
        conflict_retries = 0,
        expected_version = tracing::field::Empty,
        duplicate = tracing::field::Empty,
    );
    let executed = run.instrument(span.clone()).await;
    if let Ok(executed) = &executed {
        span.record("duplicate", executed.duplicate);
    }
    executed
}

/// [`execute`], in the caller's span.
async fn execute_untraced<A>(
    store: &dyn EventStore,
    stream_id: &str,
    command: A::Command,
    services: &A::Services,
    metadata: &EventMetadata,
    options: &CommandOptions,
) -> Result<Executed<A>, CommandError<A::Error>>
where
    A: Aggregate,
    A::Command: Clone,
{
    let max_attempts = options.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        if let Some(cause_id) = options.cause_id
            && options.look_up_cause_first
            && let Some(executed) = already_executed::<A>(store, stream_id, cause_id).await?
        {
            return Ok(executed);
        }
        let decided = match decide::<A>(
            store,
            stream_id,
            command.clone(),
            services,
            metadata,
            options,
        )
        .await
        {
            Ok(decided) => decided,
            Err(CommandError::Domain(refusal)) => {
                // A command that was applied may be refused by the state it left (a sale
                // committed twice finds nothing left to commit): when its events are stored, the
                // repeat is answered from them, as the lookup before deciding would have.
                if let Some(cause_id) = options.cause_id
                    && !options.look_up_cause_first
                    && let Some(executed) =
                        already_executed::<A>(store, stream_id, cause_id).await?
                {
                    return Ok(executed);
                }
                return Err(CommandError::Domain(refusal));
            }
            Err(error) => return Err(error),
        };
        if decided.events.is_empty() {
            return Ok(Executed {
                events: decided.events,
                positions: Vec::new(),
                state: decided.state,
                version: decided.loaded_version,
                duplicate: false,
            });
        }
        if telemetry::traced() {
            tracing::Span::current().record("expected_version", decided.loaded_version);
        }
        let append = store_span("store append", A::TYPE, stream_id);
        let appended = match decided.snapshot {
            Some(snapshot) => {
                store
                    .append_with_snapshot(decided.request, snapshot)
                    .instrument(append)
                    .await
            }
            None => store.append(decided.request).instrument(append).await,
        };
        match appended {
            Ok(result) if result.duplicate => {
                // A concurrent run of the same command (same cause) stored its events first.
                if let Some(cause_id) = options.cause_id
                    && let Some(executed) =
                        already_executed::<A>(store, stream_id, cause_id).await?
                {
                    return Ok(executed);
                }
                let loaded = load::<A>(store, stream_id).await?;
                return Ok(Executed {
                    events: decided.events,
                    positions: result.positions,
                    state: loaded.state,
                    version: loaded.version,
                    duplicate: true,
                });
            }
            Ok(result) => {
                return Ok(Executed {
                    events: decided.events,
                    positions: result.positions,
                    state: decided.state,
                    version: result.stream_version,
                    duplicate: false,
                });
            }
            Err(error) if error.is_conflict() && attempt < max_attempts => {
                if telemetry::traced() {
                    tracing::Span::current().record("conflict_retries", attempt);
                }
                tracing::debug!(
                    stream_type = A::TYPE,
                    stream_id,
                    attempt,
                    "command lost an optimistic-concurrency race, deciding again"
                );
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// A client span of a call to the event store (`store read`, `store append`), when spans are
/// exported.
pub fn store_span(operation: &'static str, stream_type: &str, stream_id: &str) -> tracing::Span {
    if !telemetry::traced() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "event store",
        otel.name = operation,
        otel.kind = "client",
        db.operation.name = operation,
        stream_type,
        stream_id,
    )
}

/// Whether going from `version` to `new_version` crosses a multiple of `interval`.
fn snapshot_due(interval: u64, version: u64, new_version: u64) -> bool {
    interval > 0 && new_version / interval > version / interval
}

fn snapshot_of<A: Aggregate>(state: &A, stream_id: &str, version: u64) -> Option<Snapshot> {
    let state = serde_json::to_string(state)
        .and_then(RawValue::from_string)
        .map_err(|error| {
            tracing::warn!(%error, stream_type = A::TYPE, stream_id, "state cannot be snapshotted");
        })
        .ok()?;
    Some(Snapshot {
        stream_type: A::TYPE.to_owned(),
        stream_id: stream_id.to_owned(),
        version,
        state,
    })
}

fn encode_events<A: Aggregate>(
    events: &[A::Event],
    stream_id: &str,
    metadata: &EventMetadata,
    options: &CommandOptions,
) -> Result<Vec<NewEvent>, CodecError> {
    let occurred_at = Utc::now();
    events
        .iter()
        .enumerate()
        .map(|(event_index, event)| {
            let encoded = schemas::encode(event)?;
            let event_id = match options.cause_id {
                Some(cause_id) => derived_event_id(cause_id, A::TYPE, stream_id, event_index),
                None => Uuid::new_v4(),
            };
            Ok(NewEvent::from_encoded(
                encoded,
                event_id,
                occurred_at,
                metadata.clone(),
            ))
        })
        .collect()
}

/// The stored result of an earlier run of the command caused by `cause_id`, if there was one.
async fn already_executed<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    cause_id: Uuid,
) -> Result<Option<Executed<A>>, CommandError<A::Error>> {
    let first_id = derived_event_id(cause_id, A::TYPE, stream_id, 0);
    let Some(first) = store.find_events(&[first_id]).await?.into_iter().next() else {
        return Ok(None);
    };
    if first.stream_type != A::TYPE || first.stream_id != stream_id {
        return Err(StoreError::EventIdReused { event_id: first_id }.into());
    }
    // The command's events are consecutive in the stream, with ids derived in order.
    let mut events = Vec::new();
    let mut positions = Vec::new();
    let mut after_version = first.stream_version.saturating_sub(1);
    'pages: loop {
        let page = store
            .read_stream(A::TYPE, stream_id, after_version, LOAD_PAGE)
            .await?;
        for recorded in &page {
            if recorded.event_id != derived_event_id(cause_id, A::TYPE, stream_id, events.len()) {
                break 'pages;
            }
            events.push(decode_event::<A>(recorded)?);
            positions.push(recorded.position);
            after_version = recorded.stream_version;
        }
        if page.len() < LOAD_PAGE {
            break;
        }
    }
    let loaded = load::<A>(store, stream_id).await?;
    Ok(Some(Executed {
        events,
        positions,
        state: loaded.state,
        version: loaded.version,
        duplicate: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_when_the_stream_crosses_a_multiple_of_the_interval() {
        assert!(!snapshot_due(100, 0, 99));
        assert!(snapshot_due(100, 99, 100));
        assert!(snapshot_due(100, 98, 102));
        assert!(!snapshot_due(100, 100, 101));
        assert!(snapshot_due(100, 150, 250));
        assert!(!snapshot_due(0, 0, 1_000));
    }

    #[test]
    fn derived_event_ids_depend_on_cause_stream_and_index() {
        let cause_id = Uuid::new_v4();
        let first = derived_event_id(cause_id, "product", "p-1", 0);
        assert_eq!(first, derived_event_id(cause_id, "product", "p-1", 0));
        assert_ne!(first, derived_event_id(cause_id, "product", "p-1", 1));
        assert_ne!(first, derived_event_id(cause_id, "product", "p-2", 0));
        assert_ne!(first, derived_event_id(Uuid::new_v4(), "product", "p-1", 0));
    }
}
