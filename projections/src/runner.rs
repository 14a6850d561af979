//! The projection runner: follows the event store from a projection's checkpoint and hands it
//! batches, and tells readers how far each projection got.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventstore::{EventStore, RecordedEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ProjectionError;
use crate::readdb::ReadDb;

/// An ordered feed of events that a projection keeps a checkpoint for.
///
/// Events reach a projection either from the store's global log, in position order with none
/// skipped, or from Kafka, where each partition carries a subset of the log in position order
/// (the relay publishes in log order and Kafka keeps each partition's order). A projection keeps
/// one checkpoint per feed, so an event redelivered on a partition is recognised by its position
/// and applied once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Feed {
    /// The store's global log.
    Log,
    /// One partition of a Kafka topic.
    Partition { topic: String, partition: i32 },
    /// Dead letters replayed after their cause was fixed: applied even behind a partition's
    /// checkpoint (the read models' own version checks keep newer state).
    Replay,
}

impl Feed {
    /// The name projection `projection` keeps this feed's checkpoint under: the projection's own
    /// name for the log, `name@topic/partition` for a partition, `name@dlq` for replays.
    pub fn checkpoint_name(&self, projection: &str) -> std::borrow::Cow<'static, str> {
        match self {
            Feed::Log => std::borrow::Cow::Owned(projection.to_owned()),
            Feed::Partition { topic, partition } => {
                std::borrow::Cow::Owned(format!("{projection}@{topic}/{partition}"))
            }
            Feed::Replay => std::borrow::Cow::Owned(format!("{projection}@dlq")),
        }
    }
}

/// A read model fed from the event log.
///
/// `apply` must store the batch's effects and the feed's new checkpoint (the last event's
/// position) atomically, or make applying an event twice give the same result: after a crash the
/// runner starts again from [`Projection::checkpoint`].
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The projection's name, unique: it keys the checkpoints and the metrics.
    fn name(&self) -> &'static str;

    /// The position of the last event applied from `feed` (0 before the first).
    async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError>;

    /// Applies a batch of events of `feed` (in position order, all after the feed's checkpoint)
    /// and moves that checkpoint to the last one.
    async fn apply(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError>;
}

/// Applies the events of `events` that `projection` has not applied from `feed` yet (those after
/// its checkpoint and after every earlier event of the batch; all of them for [`Feed::Replay`]).
/// Returns how many it applied.
pub async fn apply_new(
    projection: &dyn Projection,
    feed: &Feed,
    events: &[RecordedEvent],
) -> Result<usize, ProjectionError> {
    let fresh: Cow<'_, [RecordedEvent]> = if *feed == Feed::Replay {
        Cow::Borrowed(events)
    } else {
        let checkpoint = projection.checkpoint(feed).await?;
        let first_fresh = events
            .iter()
            .position(|event| event.position > checkpoint)
            .unwrap_or(events.len());
        let rest = &events[first_fresh..];
        if rest
            .windows(2)
            .all(|pair| pair[0].position < pair[1].position)
        {
            // The usual batch: rising positions, the fresh ones at its end; applied as it is.
            Cow::Borrowed(rest)
        } else {
            // A feed's positions rise; a repeat (a relay's retry) sits at or below the highest
            // seen, whether that was applied before or earlier in this batch.
            let mut highest = checkpoint;
            Cow::Owned(
                rest.iter()
                    .filter(|event| {
                        let fresh = event.position > highest;
                        highest = highest.max(event.position);
                        fresh
                    })
                    .cloned()
                    .collect(),
            )
        }
    };
    if fresh.is_empty() {
        return Ok(0);
    }
    let spans = batch_spans(projection.name(), &fresh);
    spans.run(projection.apply(feed, &fresh)).await?;
    Ok(fresh.len())
}

/// The spans of one projection batch, when spans are exported ([`follow_events`]). Without
/// export, none at all.
pub fn batch_spans(projection: &str, events: &[RecordedEvent]) -> telemetry::BatchSpans {
    follow_events(
        || {
            tracing::info_span!(
                "projection batch",
                otel.name = %format_args!("project {projection}"),
                projection,
                events = events.len(),
                first_position = events.first().map_or(0, |event| event.position),
                last_position = events.last().map_or(0, |event| event.position),
            )
        },
        events,
    )
}

/// Spans made by `make` for the work on `events`, one continuing each trace among them
/// ([`telemetry::BatchSpans`]): work on a batch serves the events of many requests.
pub fn follow_events(
    make: impl Fn() -> tracing::Span,
    events: &[RecordedEvent],
) -> telemetry::BatchSpans {
    telemetry::BatchSpans::new(
        make,
        events.iter().filter_map(|event| {
            event
                .metadata
                .traceparent
                .as_deref()
                .map(|traceparent| (traceparent, event.metadata.tracestate.as_deref()))
        }),
    )
}

/// How far one projection got, as this process knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgressState {
    /// The checkpoint: the position of the last event applied.
    pub position: u64,
    /// When the last applied event happened (seconds since the epoch), for lag in seconds.
    pub last_event_at: Option<i64>,
    /// Whether the projection has caught up with the head of the log (the last batch it got
    /// was not a full page).
    pub caught_up: bool,
    /// Whether it has been caught up at least once since this process started: until then
    /// its read model may be far behind (a fresh data directory, say), and its answers are not
    /// shared through a cache.
    pub reached_head: bool,
    /// Since when (seconds since the epoch) applying its next batch fails, if it does.
    pub failing_since: Option<i64>,
    /// The position of the event it is parked at, if it is (see [`Park`]): it applies nothing
    /// until `mercato projections retry` clears the park.
    pub parked_at: Option<u64>,
    /// For a part that runs under a lease (the relay): whether this process holds it. A
    /// standby's position is the stored checkpoint its holder moves.
    pub lease: Option<crate::lease::LeaseStatus>,
}

/// How old the oldest event a projection has not applied may be for its process to be ready.
pub const READY_LAG: Duration = Duration::from_secs(5);

/// How long ago the oldest event after `position` happened (`None` when there is none: caught
/// up).
pub async fn oldest_unapplied(
    store: &dyn EventStore,
    position: u64,
) -> Result<Option<Duration>, eventstore::StoreError> {
    let next = store.read_all(position, 1).await?;
    Ok(next.first().map(|event| {
        (chrono::Utc::now() - event.occurred_at)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }))
}

/// The progress of every projection a process runs or reads: read-your-writes waits on it.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    watches: Arc<std::sync::RwLock<HashMap<&'static str, watch::Sender<ProgressState>>>>,
    /// Set when the read models are fed from Kafka partitions (see [`Progress::follow_partitions`]).
    partitions: Arc<std::sync::OnceLock<PartitionProgress>>,
}

/// Which feed carries the event at a position: the Kafka partition of its stream.
#[async_trait]
pub trait FeedLocator: Send + Sync + std::fmt::Debug {
    /// The feed of the event at `position`, or `None` when no event is there (yet).
    async fn feed_of(&self, position: u64) -> Option<Feed>;
}

/// How read-your-writes waits when the read models are fed from Kafka: a position is applied by
/// a projection once its checkpoint of the partition that carries the event reached it.
#[derive(Clone, Debug)]
struct PartitionProgress {
    locator: Arc<dyn FeedLocator>,
    projections: HashMap<&'static str, Arc<dyn Projection>>,
}

impl std::fmt::Debug for dyn Projection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// How often a wait on a Kafka-fed projection reads its checkpoint.
const PARTITION_POLL: Duration = Duration::from_millis(10);

impl Progress {
    /// The watch of projection `name` (created on first use).
    pub fn sender(&self, name: &'static str) -> watch::Sender<ProgressState> {
        if let Some(sender) = self
            .watches
            .read()
            .ok()
            .and_then(|watches| watches.get(name).cloned())
        {
            return sender;
        }
        let mut watches = match self.watches.write() {
            Ok(watches) => watches,
            Err(poisoned) => poisoned.into_inner(),
        };
        watches
            .entry(name)
            .or_insert_with(|| watch::channel(ProgressState::default()).0)
            .clone()
    }

    /// The current state of every projection known here, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, ProgressState)> {
        let watches = match self.watches.read() {
            Ok(watches) => watches,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut states: Vec<_> = watches
            .iter()
            .map(|(name, sender)| (*name, *sender.borrow()))
            .collect();
        states.sort_by_key(|(name, _)| *name);
        states
    }

    /// Makes waits follow Kafka partitions: `projections` are fed from Kafka, and `locator`
    /// says which partition carries an event. (Once per process; later calls change nothing.)
    pub fn follow_partitions(
        &self,
        locator: Arc<dyn FeedLocator>,
        projections: &[Arc<dyn Projection>],
    ) {
        let projections = projections
            .iter()
            .map(|projection| (projection.name(), projection.clone()))
            .collect();
        let _ = self.partitions.set(PartitionProgress {
            locator,
            projections,
        });
    }

    /// Waits until projection `name` has applied `position`, at most `timeout`. True when it has.
    pub async fn wait_for(&self, name: &'static str, position: u64, timeout: Duration) -> bool {
        if let Some(partitions) = self.partitions.get()
            && let Some(projection) = partitions.projections.get(name)
        {
            let reached = async {
                let feed = loop {
                    if let Some(feed) = partitions.locator.feed_of(position).await {
                        break feed;
                    }
                    tokio::time::sleep(PARTITION_POLL).await;
                };
                loop {
                    if projection
                        .checkpoint(&feed)
                        .await
                        .is_ok_and(|checkpoint| checkpoint >= position)
                    {
                        return;
                    }
                    tokio::time::sleep(PARTITION_POLL).await;
                }
            };
            return tokio::time::timeout(timeout, reached).await.is_ok();
        }
        let mut receiver = self.sender(name).subscribe();
        let reached = receiver.wait_for(|state| state.position >= position);
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)))
    }

    /// Whether projection `name`'s read model may be answered from and its answers shared: it
    /// has caught up since this process started and is neither failing nor parked. (A
    /// projection fed from Kafka partitions is not followed here, and counts as serving.)
    pub fn serving(&self, name: &'static str) -> bool {
        if let Some(partitions) = self.partitions.get()
            && partitions.projections.contains_key(name)
        {
            return true;
        }
        let state = *self.sender(name).borrow();
        state.reached_head && state.failing_since.is_none() && state.parked_at.is_none()
    }
}

/// How long a projection fails before its failures are logged as errors (until then, warnings:
/// most failures are mended by the retry).
const FAILING_IS_AN_ERROR_AFTER: Duration = Duration::from_secs(30);

/// The longest pause between two attempts of a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How many times in a row an event is tried alone, failing each time for a reason of its own
/// (not [`ProjectionError::is_transient`]), before its projection parks on it. With the backoff
/// (50 ms doubling) the tries span one to two seconds.
pub const PARK_AFTER_ATTEMPTS: u32 = 5;

/// How often a parked projection looks whether its park was cleared.
pub const PARKED_POLL: Duration = Duration::from_secs(1);

/// The longest reason a park keeps (in characters); the log has the whole error.
const PARK_REASON_LIMIT: usize = 2_000;

/// Where and why a projection stopped: the event it cannot apply, kept in the read-model
/// database (`projection_parks`, beside the checkpoints) so that a restart stays parked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Park {
    /// The event's position in the log: the first the projection has not applied.
    pub position: u64,
    pub event_type: String,
    /// `stream_type/stream_id`.
    pub stream: String,
    /// Why it cannot be applied: the error's text.
    pub reason: String,
    /// When the projection parked (RFC 3339).
    pub parked_at: String,
}

impl Park {
    /// The park of a projection that cannot apply `event` because of `error`.
    pub fn of(event: &RecordedEvent, error: &ProjectionError) -> Park {
        // What a text column of either database holds: no NUL, and not without end.
        let clean = |text: &str, limit: usize| -> String {
            text.chars()
                .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
                .take(limit)
                .collect()
        };
        Park {
            position: event.position,
            event_type: clean(&event.event_type, 200),
            stream: clean(&format!("{}/{}", event.stream_type, event.stream_id), 400),
            reason: clean(&error.to_string(), PARK_REASON_LIMIT),
            parked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

impl std::fmt::Display for Park {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "parked at position {} ({} of {}) since {}: {}",
            self.position, self.event_type, self.stream, self.parked_at, self.reason
        )
    }
}

/// How the runner tells one event that cannot be applied from a batch that fails.
#[derive(Debug, Default)]
struct Isolation {
    /// After a batch failed for a reason of its own: events are applied one at a time up to
    /// this position (the batch's last), so that the one that fails is known.
    one_at_a_time_until: Option<u64>,
    /// The event tried alone that failed for a reason of its own, and how many times in a row.
    strikes: Option<(u64, u32)>,
}

impl Isolation {
    /// Takes a failure of `batch` in; answers the event to park on once it failed alone
    /// [`PARK_AFTER_ATTEMPTS`] times in a row for a reason of its own.
    fn failed<'a>(
        &mut self,
        batch: &'a [RecordedEvent],
        error: &ProjectionError,
    ) -> Option<&'a RecordedEvent> {
        if error.is_transient() {
            // Not the event's fault: tried again as long as it lasts, as a whole batch.
            return None;
        }
        match batch {
            [event] => {
                let strikes = match self.strikes {
                    Some((position, strikes)) if position == event.position => strikes + 1,
                    _ => 1,
                };
                self.strikes = Some((event.position, strikes));
                self.one_at_a_time_until = Some(
                    self.one_at_a_time_until
                        .map_or(event.position, |until| until.max(event.position)),
                );
                (strikes >= PARK_AFTER_ATTEMPTS).then_some(event)
            }
            [.., last] => {
                self.one_at_a_time_until = Some(last.position);
                None
            }
            [] => None,
        }
    }

    /// Takes a batch applied up to `position` in; true when one event at a time is over (the
    /// subscription may take whole batches again).
    fn applied(&mut self, position: u64) -> bool {
        self.strikes = None;
        match self.one_at_a_time_until {
            Some(until) if position >= until => {
                self.one_at_a_time_until = None;
                true
            }
            _ => false,
        }
    }

    /// How many events the next subscription takes per batch.
    fn batch_size(&self, batch_size: usize) -> usize {
        if self.one_at_a_time_until.is_some() {
            1
        } else {
            batch_size
        }
    }
}

/// Runs `projection` until `shutdown` is cancelled: subscribe from its checkpoint, apply each
/// batch, publish progress. A failing batch is retried with exponential backoff from the stored
/// checkpoint; stopping happens between batches, so the stored checkpoint is always the last
/// batch applied.
///
/// A batch that fails for a reason of its own ([`ProjectionError::is_transient`] is false) is
/// applied again one event at a time; an event that then fails [`PARK_AFTER_ATTEMPTS`] times
/// in a row parks the projection: the [`Park`] is stored in `parks` (the read-model database),
/// and the projection applies nothing, and skips nothing, until the park is cleared (`mercato
/// projections retry`, [`ReadDb::unpark`]) or a rebuilt read model swapped in is past the event.
/// It then tries the event again. A projection parked before a restart is still parked after.
/// Other projections run on their own and carry on.
pub async fn run_projection(
    store: Arc<dyn EventStore>,
    projection: Arc<dyn Projection>,
    parks: ReadDb,
    progress: Progress,
    shutdown: CancellationToken,
    batch_size: usize,
) {
    let name = projection.name();
    let sender = progress.sender(name);
    let mut backoff = Duration::from_millis(50);
    let mut isolation = Isolation::default();
    // Whether this loop parked it just now (and logged so).
    let mut just_parked = false;
    metrics::gauge!("mercato_projection_parked", "projection" => name).set(0.0);
    'resubscribe: while !shutdown.is_cancelled() {
        match parks.parked(name).await {
            Ok(None) => {}
            Ok(Some(park)) => {
                let announced = std::mem::take(&mut just_parked);
                let Some(position) = wait_while_parked(
                    projection.as_ref(),
                    &parks,
                    &sender,
                    park,
                    announced,
                    &shutdown,
                )
                .await
                else {
                    return;
                };
                // Retried: the event it stopped at is tried again, alone.
                backoff = Duration::from_millis(50);
                isolation = Isolation {
                    one_at_a_time_until: Some(position),
                    strikes: None,
                };
                continue 'resubscribe;
            }
            Err(error) => {
                tracing::warn!(projection = name, %error, "cannot read whether the projection is parked; retrying");
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
        }
        let checkpoint = match projection.checkpoint(&Feed::Log).await {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                tracing::warn!(projection = name, %error, "cannot read the checkpoint; retrying");
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        sender.send_modify(|state| state.position = state.position.max(checkpoint));
        // Nothing to apply yet: caught up (the subscription answers only when events come).
        if store
            .read_all(checkpoint, 1)
            .await
            .is_ok_and(|next| next.is_empty())
        {
            sender.send_modify(|state| {
                state.caught_up = true;
                state.reached_head = true;
            });
        }
        let this_batch_size = isolation.batch_size(batch_size);
        let mut subscription = match store.subscribe(checkpoint).await {
            Ok(subscription) => subscription.with_batch_size(this_batch_size),
            Err(error) => {
                tracing::warn!(projection = name, %error, "cannot subscribe; retrying");
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(
            projection = name,
            checkpoint,
            batch_size = this_batch_size,
            "projection following the log"
        );
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = subscription.next_batch() => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(projection = name, %error, "reading the log failed; retrying");
                    if pause(&shutdown, &mut backoff).await {
                        return;
                    }
                    continue 'resubscribe;
                }
            };
            let Some(last) = batch.last() else { continue };
            let (last_position, last_at) = (last.position, last.occurred_at.timestamp());
            let started = Instant::now();
            let spans = batch_spans(name, &batch);
            let applied = spans.run(projection.apply(&Feed::Log, &batch)).await;
            drop(spans);
            if let Err(error) = applied {
                if let ProjectionError::CheckpointMoved { stored, .. } = &error {
                    // A replay swapped in a rebuilt read model: follow on from its checkpoint.
                    tracing::info!(
                        projection = name,
                        checkpoint = *stored,
                        "read model replaced by a replay; following the log from its checkpoint"
                    );
                    sender.send_modify(|state| state.position = state.position.max(*stored));
                    continue 'resubscribe;
                }
                metrics::counter!("mercato_projection_failures_total", "projection" => name)
                    .increment(1);
                let now = chrono::Utc::now().timestamp();
                let mut since = now;
                sender.send_modify(|state| {
                    since = *state.failing_since.get_or_insert(now);
                });
                let first_position = batch.first().map_or(0, |event| event.position);
                if let Some(event) = isolation.failed(&batch, &error) {
                    let park = Park::of(event, &error);
                    match parks.park(name, &park).await {
                        Ok(()) => {
                            tracing::error!(
                                projection = name,
                                position = park.position,
                                event_type = %park.event_type,
                                stream = %park.stream,
                                %error,
                                attempts = PARK_AFTER_ATTEMPTS,
                                "projection parked: it cannot apply this event and applies nothing after it until `mercato projections retry {name}` once the cause is fixed"
                            );
                            // The loop's start finds the park and waits.
                            just_parked = true;
                            continue 'resubscribe;
                        }
                        Err(park_error) => tracing::warn!(
                            projection = name,
                            %error,
                            %park_error,
                            position = park.position,
                            "cannot park the projection; retrying the event"
                        ),
                    }
                } else if now - since >= FAILING_IS_AN_ERROR_AFTER.as_secs() as i64 {
                    // A failure that a retry mends (a busy database) is a warning; one that
                    // lasts is an error an operator has to act on.
                    tracing::error!(
                        projection = name,
                        %error,
                        first_position,
                        failing_for_s = now - since,
                        "applying a batch keeps failing; retrying from the stored checkpoint"
                    );
                } else {
                    tracing::warn!(
                        projection = name,
                        %error,
                        first_position,
                        n_events = batch.len(),
                        "applying a batch failed; retrying from the stored checkpoint"
                    );
                }
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue 'resubscribe;
            }
            backoff = Duration::from_millis(50);
            tracing::debug!(
                projection = name,
                n_events = batch.len(),
                last_position,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "batch applied"
            );
            let whole_batches_again = isolation.applied(last_position);
            let caught_up = batch.len() < this_batch_size;
            metrics::counter!("mercato_projection_events_total", "projection" => name)
                .increment(batch.len() as u64);
            metrics::histogram!("mercato_projection_batch_seconds", "projection" => name)
                .record(started.elapsed().as_secs_f64());
            metrics::gauge!("mercato_projection_position", "projection" => name)
                .set(last_position as f64);
            sender.send_modify(|state| {
                state.position = last_position;
                state.last_event_at = Some(last_at);
                state.caught_up = caught_up;
                state.reached_head |= caught_up;
                state.failing_since = None;
            });
            if whole_batches_again {
                continue 'resubscribe;
            }
        }
    }
}

/// Waits while projection `projection` is parked at `park`: until the park is cleared, or its
/// checkpoint is past the event (a rebuilt read model was swapped in), when the park is cleared
/// here. Shows the park in `sender` and the `mercato_projection_parked` gauge meanwhile; logs
/// it unless `announced` (this process parked it and said so). Answers the position it was
/// parked at, `None` when shut down meanwhile.
async fn wait_while_parked(
    projection: &dyn Projection,
    parks: &ReadDb,
    sender: &watch::Sender<ProgressState>,
    park: Park,
    announced: bool,
    shutdown: &CancellationToken,
) -> Option<u64> {
    let name = projection.name();
    if !announced {
        // Parked before this process started (or by another one).
        tracing::warn!(
            projection = name,
            position = park.position,
            event_type = %park.event_type,
            stream = %park.stream,
            reason = %park.reason,
            parked_at = %park.parked_at,
            "projection parked; it applies nothing until `mercato projections retry {name}`"
        );
    }
    let gauge = metrics::gauge!("mercato_projection_parked", "projection" => name);
    gauge.set(1.0);
    sender.send_modify(|state| state.parked_at = Some(park.position));
    let mut position = park.position;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(PARKED_POLL) => {}
        }
        let cleared = match parks.parked(name).await {
            Ok(None) => true,
            Ok(Some(park)) => {
                // On each look: another runner of this name in the process may have reset it.
                gauge.set(1.0);
                position = park.position;
                sender.send_if_modified(|state| {
                    let moved = state.parked_at != Some(position);
                    state.parked_at = Some(position);
                    moved
                });
                match projection.checkpoint(&Feed::Log).await {
                    Ok(checkpoint) if checkpoint >= position => {
                        tracing::info!(
                            projection = name,
                            checkpoint,
                            position,
                            "the read model in service is past the parked event (a rebuild was swapped in): the park is cleared"
                        );
                        if let Err(error) = parks.unpark(name).await {
                            tracing::debug!(projection = name, %error, "cannot clear the park");
                            false
                        } else {
                            true
                        }
                    }
                    _ => false,
                }
            }
            Err(error) => {
                tracing::debug!(projection = name, %error, "cannot read the park");
                false
            }
        };
        if cleared {
            tracing::info!(
                projection = name,
                position,
                "projection retried: applying the event it was parked at again"
            );
            gauge.set(0.0);
            sender.send_modify(|state| state.parked_at = None);
            return Some(position);
        }
    }
}

/// Sleeps for the backoff (doubling it, up to [`MAX_BACKOFF`]); true when shut down meanwhile.
pub async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it applies, per feed, with a checkpoint per feed.
    #[derive(Default)]
    struct Recorder {
        applied: std::sync::Mutex<Vec<(Feed, u64)>>,
        checkpoints: std::sync::Mutex<HashMap<Feed, u64>>,
    }

    #[async_trait]
    impl Projection for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }

        async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError> {
            Ok(self
                .checkpoints
                .lock()
                .unwrap()
                .get(feed)
                .copied()
                .unwrap_or(0))
        }

        async fn apply(
            &self,
            feed: &Feed,
            events: &[RecordedEvent],
        ) -> Result<(), ProjectionError> {
            let mut applied = self.applied.lock().unwrap();
            for event in events {
                applied.push((feed.clone(), event.position));
            }
            if let Some(last) = events.last() {
                self.checkpoints
                    .lock()
                    .unwrap()
                    .insert(feed.clone(), last.position);
            }
            Ok(())
        }
    }

    fn event(position: u64) -> RecordedEvent {
        serde_json::from_value(serde_json::json!({
            "event_id": uuid::Uuid::new_v4(),
            "event_type": "ProductUpdated",
            "schema_version": 1,
            "stream_type": "product",
            "stream_id": "p",
            "stream_version": position,
            "position": position,
            "occurred_at": "2026-11-22T10:00:00Z",
            "metadata": {"correlation_id": "c", "causation_id": "c", "actor": "a", "source": "s"},
            "payload": {}
        }))
        .unwrap()
    }

    fn poison() -> ProjectionError {
        ProjectionError::Json(serde_json::from_str::<u8>("x").unwrap_err())
    }

    fn lost_connection() -> ProjectionError {
        ProjectionError::Database(sqlx::Error::PoolTimedOut)
    }

    #[test]
    fn an_event_that_fails_alone_for_a_reason_of_its_own_parks_after_the_last_attempt() {
        let mut isolation = Isolation::default();
        let batch: Vec<_> = (3..=7).map(event).collect();
        // A batch that fails: which event fails is not known yet; none is blamed.
        assert!(isolation.failed(&batch, &poison()).is_none());
        assert_eq!(isolation.batch_size(500), 1, "one event at a time");
        // 3 applies alone; 4 does not.
        assert!(!isolation.applied(3));
        for attempt in 1..PARK_AFTER_ATTEMPTS {
            assert!(
                isolation.failed(&batch[1..2], &poison()).is_none(),
                "parked after {attempt} attempts"
            );
        }
        // A lost connection meanwhile is no attempt of the event's.
        assert!(isolation.failed(&batch[1..2], &lost_connection()).is_none());
        let parked = isolation.failed(&batch[1..2], &poison());
        assert_eq!(parked.map(|event| event.position), Some(4));
    }

    #[test]
    fn failures_of_the_systems_never_park_and_an_applied_event_starts_the_count_again() {
        let mut isolation = Isolation::default();
        let batch: Vec<_> = (3..=7).map(event).collect();
        for _ in 0..3 * PARK_AFTER_ATTEMPTS {
            assert!(isolation.failed(&batch[..1], &lost_connection()).is_none());
            assert!(isolation.failed(&batch, &lost_connection()).is_none());
        }
        assert_eq!(
            isolation.batch_size(500),
            500,
            "a lost connection says nothing about the events: whole batches"
        );
        for _ in 1..PARK_AFTER_ATTEMPTS {
            assert!(isolation.failed(&batch[..1], &poison()).is_none());
        }
        // Mended before the last attempt (the read model's table was fixed, say).
        assert!(
            isolation.applied(3),
            "past the failing event: whole batches again"
        );
        assert_eq!(isolation.batch_size(500), 500);
        for _ in 1..PARK_AFTER_ATTEMPTS {
            assert!(isolation.failed(&batch[1..2], &poison()).is_none());
        }
        // Another event's failures are counted from one.
        assert!(isolation.failed(&batch[2..3], &poison()).is_none());
    }

    #[test]
    fn a_park_names_the_event_and_keeps_no_nul_and_no_endless_reason() {
        let mut poisoned = event(9);
        poisoned.stream_id = "p\0q".to_owned();
        let error = ProjectionError::Storage(format!("bad \0 value {}", "x".repeat(5_000)));
        let park = Park::of(&poisoned, &error);
        assert_eq!(park.position, 9);
        assert_eq!(park.event_type, "ProductUpdated");
        assert_eq!(park.stream, "product/p\u{FFFD}q");
        assert!(park.reason.starts_with("bad \u{FFFD} value xxx"));
        assert_eq!(park.reason.chars().count(), PARK_REASON_LIMIT);
        assert!(
            park.to_string()
                .starts_with("parked at position 9 (ProductUpdated of product/p\u{FFFD}q) since "),
            "{park}"
        );
    }

    #[tokio::test]
    async fn a_partition_applies_each_position_once_even_when_repeated_in_one_batch() {
        let recorder = Recorder::default();
        let partition = Feed::Partition {
            topic: "orders.events".to_owned(),
            partition: 1,
        };
        // A relay retry: 3 and 4 delivered, then 3, 4 and 5 again.
        let batch: Vec<_> = [3, 4, 3, 4, 5].into_iter().map(event).collect();
        assert_eq!(apply_new(&recorder, &partition, &batch).await.unwrap(), 3);
        // Delivered again later (a rebalance): nothing new.
        assert_eq!(apply_new(&recorder, &partition, &batch).await.unwrap(), 0);
        // Another feed keeps its own checkpoint.
        let other = Feed::Partition {
            topic: "orders.events".to_owned(),
            partition: 2,
        };
        assert_eq!(apply_new(&recorder, &other, &[event(4)]).await.unwrap(), 1);
        // Replayed dead letters are applied behind the checkpoint.
        assert_eq!(
            apply_new(&recorder, &Feed::Replay, &[event(2)])
                .await
                .unwrap(),
            1
        );
        let applied: Vec<u64> = recorder
            .applied
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(applied, [3, 4, 5, 4, 2]);
        assert_eq!(Feed::Log.checkpoint_name("products"), "products");
        assert_eq!(
            partition.checkpoint_name("products"),
            "products@orders.events/1"
        );
        assert_eq!(Feed::Replay.checkpoint_name("products"), "products@dlq");
    }
}
