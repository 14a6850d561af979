//! Kafka-fed projections (`--source kafka`): a consumer group per role reads the event topics
//! and applies each partition's messages to the role's projections, then commits the offsets.
//!
//! - **Once per event.** Each projection keeps a checkpoint per partition (the log position of the
//!   last event applied from it, stored with its effects), so a message delivered again, by the
//!   relay or after a rebalance, is skipped. Offsets are committed only after every projection
//!   applied the batch.
//! - **Rebalances.** Messages read before a rebalance and not applied yet are dropped: every
//!   partition of the new assignment starts again from its committed offset.
//! - **Poison messages.** A message that cannot be decoded or that a projection rejects (the
//!   database refuses a statement, the payload does not decode) is tried again with exponential
//!   backoff, then sent to `<topic>.dlq` with headers saying why, where and how often it failed,
//!   and the partition moves on. A failure of the systems themselves (a connection lost) is not
//!   the message's fault: it is retried until it succeeds, and nothing goes to the DLQ.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventstore::RecordedEvent;
use projections::runner::pause;
use projections::{Feed, Projection, ProjectionError, apply_new};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use schemas::topics::headers::dead_letter as dlq_headers;

use crate::{Health, KafkaSettings, header};

/// What a consumer reads and how hard it tries.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub settings: KafkaSettings,
    /// The consumer group, without the deployment prefix: `mercato-projector`, `mercato-saga`.
    pub group: String,
    /// The contract topics it reads.
    pub topics: Vec<&'static str>,
    /// Attempts at a failing message before it goes to the DLQ.
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles it.
    pub first_backoff: Duration,
}

impl ConsumerOptions {
    pub fn new(settings: KafkaSettings, group: &str, topics: Vec<&'static str>) -> Self {
        Self {
            settings,
            group: group.to_owned(),
            topics,
            max_attempts: 5,
            first_backoff: Duration::from_millis(100),
        }
    }
}

/// How many messages one batch takes at most.
const MAX_BATCH: usize = 500;
/// How long a batch waits for more messages once it has one.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// Runs the consumer until `shutdown`: every message of `options.topics` is applied to every
/// projection of `projections` (or dead-lettered) exactly once.
pub async fn run_consumer(
    projections: Vec<Arc<dyn Projection>>,
    options: ConsumerOptions,
    health: Arc<dyn Health>,
    shutdown: CancellationToken,
) {
    let group = options.settings.group(&options.group);
    let topics: Vec<String> = options
        .topics
        .iter()
        .map(|topic| options.settings.topic(topic))
        .collect();
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let context = GroupContext {
            generation: Arc::new(AtomicU64::new(0)),
            health: health.clone(),
            group: group.clone(),
        };
        let created = options
            .settings
            .group_member_config(&group)
            .set("partition.assignment.strategy", "range")
            .create_with_context::<_, StreamConsumer<GroupContext>>(context.clone());
        let producer: Result<FutureProducer, _> = options.settings.producer_config().create();
        let (consumer, producer) = match (created, producer) {
            (Ok(consumer), Ok(producer)) => (consumer, producer),
            (Err(error), _) | (_, Err(error)) => {
                health.report(
                    &group,
                    Err(format!("cannot create a Kafka client: {error}")),
                );
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(error) = consumer.subscribe(&names) {
            health.report(&group, Err(format!("cannot subscribe: {error}")));
            if pause(&shutdown, &mut backoff).await {
                return;
            }
            continue;
        }
        tracing::info!(group, topics = ?names, "kafka consumer started");
        let worker = Worker {
            projections: &projections,
            options: &options,
            group: &group,
            producer: &producer,
            shutdown: &shutdown,
        };
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = consumer.recv() => message,
            };
            let first = match first {
                Ok(message) => message.detach(),
                Err(error) => {
                    health.report(&group, Err(format!("cannot consume: {error}")));
                    tracing::warn!(%error, group, "kafka: consuming failed; retrying");
                    if pause(&shutdown, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            health.report(&group, Ok(()));
            let mut generation = context.generation.load(Ordering::SeqCst);
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                let message = match tokio::time::timeout(BATCH_WINDOW, consumer.recv()).await {
                    Ok(Ok(message)) => message.detach(),
                    _ => break,
                };
                let now = context.generation.load(Ordering::SeqCst);
                if now != generation {
                    // A rebalance ran inside that read: what was read before it belongs to the
                    // old assignment, whose partitions restart from their committed offsets (in
                    // this member or another), so it is dropped unapplied; what comes after it
                    // is the new assignment's.
                    tracing::info!(
                        group,
                        dropped = batch.len(),
                        "kafka: rebalanced while reading; the messages read before are read again"
                    );
                    batch.clear();
                    generation = now;
                }
                batch.push(message);
            }
            let mut partitions: BTreeMap<(String, i32), Vec<OwnedMessage>> = BTreeMap::new();
            for message in batch {
                partitions
                    .entry((message.topic().to_owned(), message.partition()))
                    .or_default()
                    .push(message);
            }
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), messages) in &partitions {
                if !worker.process_partition(topic, *partition, messages).await {
                    return; // shut down
                }
                if let Some(last) = messages.last() {
                    let _ = offsets.add_partition_offset(
                        topic,
                        *partition,
                        Offset::Offset(last.offset() + 1),
                    );
                }
            }
            // Asynchronously: a synchronous commit blocks the runtime's thread until the broker
            // answers, which it may never do (a coordinator gone). The request goes out before
            // the next poll; if it is lost, the messages are delivered again and recognised by
            // their checkpoints.
            if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
                tracing::warn!(%error, group, "kafka: cannot commit offsets");
            }
        }
    }
}

/// The consumer's context: counts rebalances (shared with the loop, which recognises a batch
/// read across one), and reports the consumer ready once the group gave it its partitions.
#[derive(Clone, Debug)]
struct GroupContext {
    generation: Arc<AtomicU64>,
    health: Arc<dyn Health>,
    /// The group's name, which reports the consumer's state.
    group: String,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.health.report(&self.group, Ok(()));
        }
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(
                    n_partitions = partitions.count(),
                    "kafka: partitions assigned"
                );
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(
                    n_partitions = partitions.count(),
                    "kafka: partitions revoked"
                );
            }
            Rebalance::Error(error) => tracing::warn!(%error, "kafka: rebalance failed"),
        }
    }
}

/// One message's failures, per projection, once its attempts are spent.
#[derive(Debug, Default)]
struct Failures {
    by_projection: Vec<(&'static str, String)>,
    attempts: u32,
}

struct Worker<'a> {
    projections: &'a [Arc<dyn Projection>],
    options: &'a ConsumerOptions,
    group: &'a str,
    producer: &'a FutureProducer,
    shutdown: &'a CancellationToken,
}

impl Worker<'_> {
    /// Applies one partition's messages to every projection, dead-lettering the poison ones.
    /// False when shut down before it finished (nothing is committed then).
    async fn process_partition(
        &self,
        topic: &str,
        partition: i32,
        messages: &[OwnedMessage],
    ) -> bool {
        let feed = Feed::Partition {
            topic: self.options.settings.contract_topic(topic).to_owned(),
            partition,
        };
        let mut failures: BTreeMap<usize, Failures> = BTreeMap::new();
        let mut events: Vec<(usize, RecordedEvent)> = Vec::with_capacity(messages.len());
        let mut replays: Vec<(usize, RecordedEvent, Vec<String>)> = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let replay_for = replay_projections(message, self.group);
            if let Some(None) = replay_for {
                continue; // another group's replayed dead letter
            }
            match decode(message) {
                Ok(event) => match replay_for {
                    Some(Some(names)) => replays.push((index, event, names)),
                    _ => events.push((index, event)),
                },
                Err(reason) => {
                    // Decoding does not depend on anything that could change: one try is all.
                    failures.insert(
                        index,
                        Failures {
                            by_projection: vec![("decode", reason)],
                            attempts: 1,
                        },
                    );
                }
            }
        }
        metrics::counter!("mercato_kafka_consumed_total", "group" => self.group.to_owned())
            .increment(messages.len() as u64);
        let batch: Vec<RecordedEvent> = events.iter().map(|(_, event)| event.clone()).collect();
        for projection in self.projections {
            match self
                .apply_retrying(projection.as_ref(), &feed, &batch)
                .await
            {
                Some(Ok(())) => {}
                None => return false,
                Some(Err(_)) => {
                    // Something in the batch is refused: one event at a time finds which.
                    for (index, event) in &events {
                        match self.apply_one(projection.as_ref(), &feed, event).await {
                            None => return false,
                            Some(Ok(())) => {}
                            Some(Err((reason, attempts))) => {
                                let entry = failures.entry(*index).or_default();
                                entry.by_projection.push((projection.name(), reason));
                                entry.attempts = entry.attempts.max(attempts);
                            }
                        }
                    }
                }
            }
        }
        for (index, event, names) in &replays {
            for projection in self
                .projections
                .iter()
                .filter(|projection| names.iter().any(|name| name == projection.name()))
            {
                match self
                    .apply_one(projection.as_ref(), &Feed::Replay, event)
                    .await
                {
                    None => return false,
                    Some(Ok(())) => {
                        tracing::info!(
                            projection = projection.name(),
                            event_id = %event.event_id,
                            "kafka: replayed dead letter applied"
                        );
                    }
                    Some(Err((reason, attempts))) => {
                        let entry = failures.entry(*index).or_default();
                        entry.by_projection.push((projection.name(), reason));
                        entry.attempts = entry.attempts.max(attempts);
                    }
                }
            }
        }
        for (index, failure) in failures {
            if !self.dead_letter(&messages[index], &failure).await {
                return false;
            }
        }
        true
    }

    /// Applies `events` (those not applied yet) to `projection`, retrying failures of the
    /// systems until they pass. `Some(Err)` when the projection refused the batch; `None` when
    /// shut down.
    async fn apply_retrying(
        &self,
        projection: &dyn Projection,
        feed: &Feed,
        events: &[RecordedEvent],
    ) -> Option<Result<(), ProjectionError>> {
        let mut backoff = self.options.first_backoff;
        loop {
            match apply_new(projection, feed, events).await {
                Ok(_) => return Some(Ok(())),
                Err(error) if is_transient(&error) => {
                    tracing::warn!(projection = projection.name(), %error, "kafka: applying failed; retrying");
                    if pause(self.shutdown, &mut backoff).await {
                        return None;
                    }
                }
                Err(error) => return Some(Err(error)),
            }
        }
    }

    /// Applies one event, trying a refused one `max_attempts` times with exponential backoff.
    /// `Some(Err((reason, attempts)))` when it is still refused; `None` when shut down.
    async fn apply_one(
        &self,
        projection: &dyn Projection,
        feed: &Feed,
        event: &RecordedEvent,
    ) -> Option<Result<(), (String, u32)>> {
        let mut backoff = self.options.first_backoff;
        let mut attempts = 0;
        loop {
            match self
                .apply_retrying(projection, feed, std::slice::from_ref(event))
                .await?
            {
                Ok(()) => return Some(Ok(())),
                Err(error) => {
                    attempts += 1;
                    tracing::warn!(
                        projection = projection.name(),
                        event_id = %event.event_id,
                        attempts,
                        %error,
                        "kafka: an event is refused"
                    );
                    if attempts >= self.options.max_attempts {
                        return Some(Err((error.to_string(), attempts)));
                    }
                    if pause(self.shutdown, &mut backoff).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Sends `message` to its topic's DLQ with the failure headers; retries until the broker
    /// took it. False when shut down first.
    async fn dead_letter(&self, message: &OwnedMessage, failure: &Failures) -> bool {
        let settings = &self.options.settings;
        let reason = failure
            .by_projection
            .iter()
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect::<Vec<_>>()
            .join("; ");
        let names = failure
            .by_projection
            .iter()
            .filter(|(name, _)| *name != "decode")
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(",");
        let names = if names.is_empty() {
            self.projections
                .iter()
                .map(|projection| projection.name())
                .collect::<Vec<_>>()
                .join(",")
        } else {
            names
        };
        let attempts = failure.attempts.to_string();
        crate::dlq::send_dead_letter(
            self.producer,
            settings,
            message,
            &[
                (dlq_headers::REASON, reason.as_str()),
                (dlq_headers::PROJECTIONS, names.as_str()),
                (dlq_headers::GROUP, self.group),
                (dlq_headers::ATTEMPTS, attempts.as_str()),
            ],
            self.options.first_backoff,
            self.shutdown,
        )
        .await
    }
}

/// For a replayed dead letter: `Some(Some(projections))` when it is this group's to apply,
/// `Some(None)` when another group's; `None` for an ordinary message.
fn replay_projections(message: &OwnedMessage, group: &str) -> Option<Option<Vec<String>>> {
    let headers = message.headers();
    let names = header(headers, dlq_headers::PROJECTIONS)?;
    if header(headers, dlq_headers::GROUP) != Some(group) {
        return Some(None);
    }
    Some(Some(names.split(',').map(str::to_owned).collect()))
}

/// The event of a message: its JSON envelope.
fn decode(message: &OwnedMessage) -> Result<RecordedEvent, String> {
    let payload = message
        .payload()
        .ok_or_else(|| "the message has no payload".to_owned())?;
    serde_json::from_slice(payload)
        .map_err(|error| format!("the payload is not an event envelope: {error}"))
}

/// Whether `error` is a failure of the systems (worth retrying until they are back) rather than
/// something about the event (worth a few tries, then the DLQ).
fn is_transient(error: &ProjectionError) -> bool {
    match error {
        ProjectionError::Database(error) => matches!(
            error,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_)
        ),
        ProjectionError::Redis(error) => {
            error.is_io_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal()
                || error.is_timeout()
        }
        ProjectionError::Json(_) | ProjectionError::Codec(_) => false,
        ProjectionError::Search(_)
        | ProjectionError::Directory(_)
        | ProjectionError::Store(_)
        | ProjectionError::Storage(_) => true,
        // A replay swapped in a rebuilt read model: applying again skips what it holds.
        ProjectionError::CheckpointMoved { .. } => true,
        // Not about the event: no projection writes under a lease today.
        ProjectionError::LeaseLost { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_statements_are_poison_and_lost_connections_are_not() {
        let refused = ProjectionError::Json(serde_json::from_str::<u8>("x").unwrap_err());
        assert!(!is_transient(&refused));
        let lost = ProjectionError::Database(sqlx::Error::PoolTimedOut);
        assert!(is_transient(&lost));
        let row = ProjectionError::Database(sqlx::Error::RowNotFound);
        assert!(!is_transient(&row));
    }
}
