//! The relay: follows the store's global log from its own checkpoint and publishes every event
//! to Kafka. The checkpoint moves only after the broker acknowledged every message of a batch
//! (idempotent producer, `acks=all`), so an event is published at least once and, within its
//! partition, in log order; consumers skip the duplicates a retry can make.
//!
//! One relay publishes at a time: it holds the lease `kafka_relay` (`projections::lease`) and
//! stores each checkpoint only while it still holds it, in the same transaction. Other relays
//! stand by and take over from the stored checkpoint when the lease expires (its holder died)
//! or is given up (its holder shut down). A takeover publishes again what the last holder
//! published after its last checkpoint: duplicates, never a gap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{EventStore, RecordedEvent};
use projections::lease::{self, Lease, LeaseStatus, Tenure};
use projections::readdb::ReadDb;
use projections::runner::pause;
use projections::{Progress, ProgressState, ProjectionError};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use schemas::topics::partition_for;

use crate::{Health, KafkaError, KafkaSettings, event_headers, partition_count};

/// The relay's name: its checkpoint and its lease in the read-model database, its progress and
/// metrics.
pub const NAME: &str = "kafka_relay";
/// How long the relay's lease lasts without renewal (renewed every third of it): a standby
/// takes over at most this long, and a third more, after its holder died.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often a standby relay reads the checkpoint its holder moves.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// How many events the relay reads and publishes per batch.
const BATCH: usize = 1_000;
/// How long librdkafka keeps trying one message before reporting it failed.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reports the relay unready as soon as librdkafka finds every broker unreachable, even while
/// the relay has nothing to publish.
#[derive(Clone, Debug)]
struct RelayContext(Arc<dyn Health>);

impl ClientContext for RelayContext {
    fn error(&self, error: ClientError, reason: &str) {
        tracing::warn!(%error, reason, "relay: Kafka client error");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            fail(
                &self.0,
                &format!("every Kafka broker is unreachable: {reason}"),
            );
        }
    }
}

/// The producer the relay publishes with: idempotent, `acks=all`, and failing loudly rather than
/// leaving a gap in a partition (`enable.gapless.guarantee`).
fn producer(
    settings: &KafkaSettings,
    health: &Arc<dyn Health>,
) -> Result<FutureProducer<RelayContext>, ClientError> {
    settings
        .producer_config()
        .set("enable.gapless.guarantee", "true")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            MESSAGE_TIMEOUT.as_millis().to_string(),
        )
        .set("queue.buffering.max.messages", "100000")
        .create_with_context(RelayContext(health.clone()))
}

/// Runs the relay until `shutdown`: waits for the relay's lease, then publishes every event
/// after its checkpoint, in log order, for as long as it holds the lease. Several processes
/// may run it: one holds the lease and publishes, the others stand by (following the stored
/// checkpoint for `/ready` and the lag metrics) and take over once the lease expires, or at once
/// when its holder gives it up on shutdown. While the broker is unreachable the holder reports
/// `kafka` unready to `health`, keeps its checkpoint, and retries with backoff; it resumes where
/// it stopped.
pub async fn run_relay(
    store: Arc<dyn EventStore>,
    db: ReadDb,
    settings: KafkaSettings,
    progress: Progress,
    health: Arc<dyn Health>,
    shutdown: CancellationToken,
) {
    let sender = progress.sender(NAME);
    let lease = Lease::new(db.clone(), NAME, lease::process_owner(), LEASE_TTL);
    loop {
        // A standby publishes nothing: what it last found of Kafka is not the relay's state.
        health.report(NAME, Ok(()));
        metrics::gauge!("mercato_relay_up").set(0.0);
        metrics::gauge!("mercato_relay_lease_held").set(0.0);
        sender.send_modify(|state| state.lease = Some(LeaseStatus::Standby));
        let tenure = tokio::select! {
            tenure = lease.acquire(&shutdown) => tenure,
            () = follow_checkpoint(&db, &sender) => None,
        };
        let Some(tenure) = tenure else { break };
        tracing::info!(
            owner = lease.owner(),
            fence = tenure.fence,
            "relay holds the lease"
        );
        metrics::gauge!("mercato_relay_lease_held").set(1.0);
        sender.send_modify(|state| state.lease = Some(LeaseStatus::Held));
        let (store, db, settings, sender, health, tenure) =
            (&store, &db, &settings, &sender, &health, &tenure);
        lease
            .hold(&shutdown, |held| async move {
                publish_while_held(store, db, settings, sender, health, tenure, &held).await;
            })
            .await;
        if shutdown.is_cancelled() {
            break;
        }
        tracing::warn!(
            owner = lease.owner(),
            "relay lease lost: another process publishes; standing by"
        );
    }
    lease.release().await;
    metrics::gauge!("mercato_relay_lease_held").set(0.0);
    tracing::info!("relay stopped");
}

/// While standing by: copies the stored checkpoint, which the holder moves, into the relay's
/// progress every [`STANDBY_POLL`]. Never returns.
async fn follow_checkpoint(db: &ReadDb, sender: &watch::Sender<ProgressState>) {
    loop {
        if let Ok(checkpoint) = db.checkpoint(NAME).await {
            sender.send_if_modified(|state| {
                let moved = checkpoint > state.position;
                state.position = state.position.max(checkpoint);
                moved
            });
        }
        tokio::time::sleep(STANDBY_POLL).await;
    }
}

/// Publishes every event after the checkpoint, in log order, until `held` is cancelled (on
/// shutdown, or when the lease is lost). Each checkpoint it stores is fenced by `tenure`: once
/// another process holds the lease, the write is refused and publishing stops at once.
async fn publish_while_held(
    store: &Arc<dyn EventStore>,
    db: &ReadDb,
    settings: &KafkaSettings,
    sender: &watch::Sender<ProgressState>,
    health: &Arc<dyn Health>,
    tenure: &Tenure,
    held: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut topics_ready = false;
    'restart: while !held.is_cancelled() {
        if !topics_ready {
            match settings.ensure_topics().await {
                Ok(()) => topics_ready = true,
                Err(error) => {
                    fail(health, &error.to_string());
                    if pause(held, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            }
        }
        // Each topic's partition count: the relay picks a stream's partition itself.
        let counts = match partition_counts(settings).await {
            Ok(counts) => counts,
            Err(error) => {
                fail(health, &error.to_string());
                if pause(held, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        // A fresh producer after any failure: a gapless-guarantee error leaves the old one unusable.
        let producer = match producer(settings, health) {
            Ok(producer) => producer,
            Err(error) => {
                fail(health, &format!("cannot create the producer: {error}"));
                if pause(held, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        // Read after taking the lease: a holder that lost it has stored its last checkpoint
        // before this process could take the lease (`commit_at_holding`).
        let checkpoint = match db.checkpoint(NAME).await {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                tracing::warn!(%error, "relay: cannot read its checkpoint; retrying");
                if pause(held, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        sender.send_modify(|state| state.position = state.position.max(checkpoint));
        let mut subscription = match store.subscribe(checkpoint).await {
            Ok(subscription) => subscription.with_batch_size(BATCH),
            Err(error) => {
                tracing::warn!(%error, "relay: cannot read the log; retrying");
                if pause(held, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(checkpoint, "relay publishing the log to Kafka");
        loop {
            let batch = tokio::select! {
                _ = held.cancelled() => break 'restart,
                batch = subscription.next_batch() => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "relay: reading the log failed; retrying");
                    if pause(held, &mut backoff).await {
                        return;
                    }
                    continue 'restart;
                }
            };
            let Some(last) = batch.last() else { continue };
            let (last_position, last_at) = (last.position, last.occurred_at.timestamp());
            let started = Instant::now();
            let spans = publish_spans(&batch);
            let published = tokio::select! {
                _ = held.cancelled() => break 'restart,
                published = spans.run(publish(&producer, settings, &counts, &batch)) => published,
            };
            drop(spans);
            if let Err(error) = published {
                fail(health, &error.to_string());
                if pause(held, &mut backoff).await {
                    return;
                }
                // Again from the stored checkpoint: what was delivered is delivered twice.
                continue 'restart;
            }
            let stored = async {
                db.begin_write()
                    .await?
                    .commit_at_holding(NAME, last_position, tenure)
                    .await
            }
            .await;
            match stored {
                Ok(()) => {}
                Err(ProjectionError::LeaseLost { .. }) => {
                    // Another process took the lease over (this one was stalled past it): its
                    // checkpoint stands, and this process publishes nothing more.
                    tracing::warn!("relay: another process holds the lease; stopping at once");
                    held.cancel();
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "relay: cannot store its checkpoint; retrying");
                    if pause(held, &mut backoff).await {
                        return;
                    }
                    continue 'restart;
                }
            }
            backoff = Duration::from_millis(100);
            health.report(NAME, Ok(()));
            metrics::gauge!("mercato_relay_up").set(1.0);
            metrics::counter!("mercato_relay_events_total").increment(batch.len() as u64);
            metrics::histogram!("mercato_relay_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::gauge!("mercato_relay_position").set(last_position as f64);
            sender.send_modify(|state| {
                state.position = last_position;
                state.last_event_at = Some(last_at);
                state.caught_up = batch.len() < BATCH;
            });
        }
    }
}

/// The partition count of every event topic.
async fn partition_counts(settings: &KafkaSettings) -> Result<HashMap<String, i32>, KafkaError> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let client: rdkafka::consumer::BaseConsumer = settings
            .client_config()
            .create()
            .map_err(KafkaError::client("cannot create a Kafka client"))?;
        schemas::topics::TOPICS
            .iter()
            .map(|topic| {
                let topic = settings.topic(topic);
                partition_count(&client, &topic).map(|count| (topic, count))
            })
            .collect()
    })
    .await
    .map_err(|error| KafkaError::Broker(format!("reading the topics' metadata failed: {error}")))?
}

/// Publishes `batch` in order and waits until the broker acknowledged every message.
/// The spans of one batch's publishing, when spans are exported: producer spans continuing the
/// traces of its events.
fn publish_spans(batch: &[RecordedEvent]) -> telemetry::BatchSpans {
    projections::runner::follow_events(
        || {
            tracing::info_span!(
                "relay publish",
                otel.name = "relay publish",
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.batch.message_count = batch.len(),
            )
        },
        batch,
    )
}

async fn publish(
    producer: &FutureProducer<RelayContext>,
    settings: &KafkaSettings,
    counts: &HashMap<String, i32>,
    batch: &[RecordedEvent],
) -> Result<(), KafkaError> {
    let mut deliveries = Vec::with_capacity(batch.len());
    for event in batch {
        let Some(topic) = schemas::topics::topic_for_stream_type(&event.stream_type) else {
            tracing::error!(
                stream_type = event.stream_type,
                position = event.position,
                "relay: no topic for this stream type; the event is not published"
            );
            metrics::counter!("mercato_relay_unroutable_total").increment(1);
            continue;
        };
        let topic = settings.topic(topic);
        let partition = partition_for(&event.stream_id, counts.get(&topic).copied().unwrap_or(1));
        // What leaves the store is the event as every reader reads it: an event stored before
        // a secret left its type (a v1 payment token) is published without it.
        let current = schemas::upcast::to_current_version(event).map_err(|error| {
            KafkaError::Broker(format!(
                "cannot read event {} at its current version: {error}",
                event.event_id
            ))
        })?;
        let event: &RecordedEvent = &current;
        let payload = serde_json::to_vec(event).map_err(|error| {
            KafkaError::Broker(format!("cannot encode event {}: {error}", event.event_id))
        })?;
        loop {
            let record = FutureRecord::to(&topic)
                .partition(partition)
                .key(event.stream_id.as_str())
                .payload(payload.as_slice())
                .headers(event_headers(event));
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The local queue is full: let librdkafka send some, then enqueue again.
                    producer.poll(Duration::from_millis(10));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => {
                    return Err(KafkaError::Client {
                        what: "cannot enqueue a message".to_owned(),
                        source: error,
                    });
                }
            }
        }
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => {
                return Err(KafkaError::Client {
                    what: "the broker did not take a message".to_owned(),
                    source: error,
                });
            }
            Err(_) => {
                return Err(KafkaError::Broker(
                    "the producer dropped a message".to_owned(),
                ));
            }
        }
    }
    Ok(())
}

/// Reports the relay unready with `error`.
fn fail(health: &Arc<dyn Health>, error: &str) {
    tracing::warn!(
        error,
        "relay: Kafka is not reachable; retrying with backoff"
    );
    metrics::gauge!("mercato_relay_up").set(0.0);
    metrics::counter!("mercato_relay_failures_total").increment(1);
    health.report(NAME, Err(error.to_owned()));
}
