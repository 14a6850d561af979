//! The relay: follows the store's global log from its own checkpoint and publishes every event
//! to Kafka. The checkpoint moves only after the broker acknowledged every message of a batch
//! (idempotent producer, `acks=all`), so an event is published at least once and, within its
//! partition, in log order; consumers skip the duplicates a retry can make.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{EventStore, RecordedEvent};
use projections::Progress;
use projections::readdb::ReadDb;
use projections::runner::pause;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use schemas::topics::partition_for;

use crate::{Health, KafkaError, KafkaSettings, event_headers, partition_count};

/// The relay's name: its checkpoint in the read-model database, its progress and metrics.
pub const NAME: &str = "kafka_relay";

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

/// Runs the relay until `shutdown`: publishes every event after its checkpoint, in log order.
/// While the broker is unreachable it reports `kafka` unready to `health`, keeps its
/// checkpoint, and retries with backoff; it resumes where it stopped.
pub async fn run_relay(
    store: Arc<dyn EventStore>,
    db: ReadDb,
    settings: KafkaSettings,
    progress: Progress,
    health: Arc<dyn Health>,
    shutdown: CancellationToken,
) {
    let sender = progress.sender(NAME);
    let mut backoff = Duration::from_millis(100);
    let mut topics_ready = false;
    'restart: while !shutdown.is_cancelled() {
        if !topics_ready {
            match settings.ensure_topics().await {
                Ok(()) => topics_ready = true,
                Err(error) => {
                    fail(&health, &error.to_string());
                    if pause(&shutdown, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            }
        }
        // Each topic's partition count: the relay picks a stream's partition itself.
        let counts = match partition_counts(&settings).await {
            Ok(counts) => counts,
            Err(error) => {
                fail(&health, &error.to_string());
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        // A fresh producer after any failure: a gapless-guarantee error leaves the old one unusable.
        let producer = match producer(&settings, &health) {
            Ok(producer) => producer,
            Err(error) => {
                fail(&health, &format!("cannot create the producer: {error}"));
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        let checkpoint = match db.checkpoint(NAME).await {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                tracing::warn!(%error, "relay: cannot read its checkpoint; retrying");
                if pause(&shutdown, &mut backoff).await {
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
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(checkpoint, "relay publishing the log to Kafka");
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break 'restart,
                batch = subscription.next_batch() => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "relay: reading the log failed; retrying");
                    if pause(&shutdown, &mut backoff).await {
                        return;
                    }
                    continue 'restart;
                }
            };
            let Some(last) = batch.last() else { continue };
            let (last_position, last_at) = (last.position, last.occurred_at.timestamp());
            let started = Instant::now();
            let published = tokio::select! {
                _ = shutdown.cancelled() => break 'restart,
                published = publish(&producer, &settings, &counts, &batch) => published,
            };
            if let Err(error) = published {
                fail(&health, &error.to_string());
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                // Again from the stored checkpoint: what was delivered is delivered twice.
                continue 'restart;
            }
            let stored =
                async { db.begin_write().await?.commit_at(NAME, last_position).await }.await;
            if let Err(error) = stored {
                tracing::warn!(%error, "relay: cannot store its checkpoint; retrying");
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue 'restart;
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
    tracing::info!("relay stopped");
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
