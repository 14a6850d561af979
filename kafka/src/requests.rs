//! Requests other services send mercato on Kafka (`notifications.commands`): JSON messages that
//! are not events, each handed to a [`RequestHandler`] and committed once it was taken.
//!
//! A request the handler refuses for what it says ([`RequestRefusal::Invalid`]) goes to the
//! topic's dead-letter topic with the reason, at once (sending it again changes nothing); one it
//! cannot take now ([`RequestRefusal::Unavailable`]) is tried again with backoff, holding the
//! partition's later requests back, until it is taken. The offset is committed after the
//! handler took the request (or it was dead-lettered): a crash in between delivers it again,
//! and the handler recognises it by its own id.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use projections::runner::pause;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use schemas::topics::headers::dead_letter as dlq_headers;

use crate::{Health, KafkaSettings};

/// Why a request was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestRefusal {
    /// The request is wrong (not JSON, an unknown template, ...): what is wrong.
    Invalid(String),
    /// It cannot be recorded now (a database is down): tried again.
    Unavailable(String),
}

/// What takes the requests of one topic.
#[async_trait]
pub trait RequestHandler: Send + Sync + std::fmt::Debug {
    /// Takes one request (its key, if any, and payload); `Ok` once it is recorded durably.
    async fn handle(&self, key: Option<&[u8]>, payload: &[u8]) -> Result<(), RequestRefusal>;
}

/// Reads `topic` (a contract name) in consumer group `group` until `shutdown`, handing each
/// request to `handler`.
pub async fn run_requests(
    settings: KafkaSettings,
    group: &str,
    topic: &'static str,
    handler: Arc<dyn RequestHandler>,
    health: Arc<dyn Health>,
    shutdown: CancellationToken,
) {
    let group = settings.group(group);
    let name = settings.topic(topic);
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        if let Err(error) = settings.ensure_topics().await {
            health.report(&group, Err(format!("cannot create the topics: {error}")));
            if pause(&shutdown, &mut backoff).await {
                return;
            }
            continue;
        }
        let consumer: Result<StreamConsumer, _> = settings.group_member_config(&group).create();
        let producer: Result<FutureProducer, _> = settings.producer_config().create();
        let (consumer, producer) = match (consumer, producer) {
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
        if let Err(error) = consumer.subscribe(&[name.as_str()]) {
            health.report(&group, Err(format!("cannot subscribe: {error}")));
            if pause(&shutdown, &mut backoff).await {
                return;
            }
            continue;
        }
        health.report(&group, Ok(()));
        tracing::info!(group, topic = name, "kafka: taking requests");
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = consumer.recv() => received,
            };
            let message = match received {
                Ok(message) => message.detach(),
                Err(error) => {
                    health.report(&group, Err(format!("cannot consume: {error}")));
                    if pause(&shutdown, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            health.report(&group, Ok(()));
            let payload = message.payload().unwrap_or_default();
            let mut retry = Duration::from_millis(100);
            loop {
                match handler.handle(message.key(), payload).await {
                    Ok(()) => {
                        metrics::counter!("mercato_kafka_requests_total", "topic" => topic, "outcome" => "taken").increment(1);
                        break;
                    }
                    Err(RequestRefusal::Invalid(reason)) => {
                        metrics::counter!("mercato_kafka_requests_total", "topic" => topic, "outcome" => "invalid").increment(1);
                        let sent = crate::dlq::send_dead_letter(
                            &producer,
                            &settings,
                            &message,
                            &[
                                (dlq_headers::REASON, reason.as_str()),
                                (dlq_headers::GROUP, group.as_str()),
                                (dlq_headers::ATTEMPTS, "1"),
                            ],
                            Duration::from_millis(100),
                            &shutdown,
                        )
                        .await;
                        if !sent {
                            return;
                        }
                        break;
                    }
                    Err(RequestRefusal::Unavailable(error)) => {
                        tracing::warn!(%error, topic, "kafka: a request cannot be taken now; retrying");
                        if pause(&shutdown, &mut retry).await {
                            return;
                        }
                    }
                }
            }
            let mut offsets = rdkafka::TopicPartitionList::new();
            let _ = offsets.add_partition_offset(
                message.topic(),
                message.partition(),
                rdkafka::Offset::Offset(message.offset() + 1),
            );
            if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
                tracing::warn!(%error, group, "kafka: cannot commit a request's offset");
            }
        }
    }
}
