//! The dead letters of the event topics (`mercato dlq list|replay`), and sending them back once
//! their cause is fixed.
//!
//! `list` reads every dead-letter topic from the beginning and commits nothing. `replay` reads
//! them in the consumer group `mercato-dlq-replay`, from where the last replay stopped, publishes
//! each dead letter back to its topic with the headers that say which consumer group and which
//! projections failed it (only those apply it again), and commits: a dead letter is replayed once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;

use schemas::topics::headers::dead_letter as dlq_headers;

use tokio_util::sync::CancellationToken;

use crate::{KafkaError, KafkaSettings};

/// Sends `message` to its topic's dead-letter topic with `fields` (reason, group, attempts, ...)
/// and where it came from (topic, partition, offset, when) as headers, earlier dead-letter
/// headers replaced (a replay's origin kept); retries until the broker took it. False when shut
/// down first.
pub(crate) async fn send_dead_letter(
    producer: &FutureProducer,
    settings: &KafkaSettings,
    message: &OwnedMessage,
    fields: &[(&str, &str)],
    first_backoff: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let contract_topic = settings.contract_topic(message.topic());
    let dlq = settings.topic(&schemas::topics::dlq_topic(contract_topic));
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let failed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut headers = crate::copy_headers(message.headers(), |key| {
        !key.starts_with(dlq_headers::PREFIX) || key == dlq_headers::REPLAYED_FROM
    });
    let origin = [
        (dlq_headers::TOPIC, contract_topic),
        (dlq_headers::PARTITION, partition.as_str()),
        (dlq_headers::OFFSET, offset.as_str()),
        (dlq_headers::FAILED_AT, failed_at.as_str()),
    ];
    for (key, value) in fields.iter().chain(origin.iter()) {
        headers = headers.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let reason = fields
        .iter()
        .find(|(key, _)| *key == dlq_headers::REASON)
        .map_or("", |(_, reason)| *reason);
    let mut backoff = first_backoff;
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(&dlq).headers(headers.clone());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => {
                metrics::counter!("mercato_kafka_dlq_total", "topic" => contract_topic.to_owned())
                    .increment(1);
                tracing::error!(
                    topic = contract_topic,
                    partition = message.partition(),
                    offset = message.offset(),
                    reason,
                    "kafka: message sent to the dead-letter topic"
                );
                return true;
            }
            Err((error, _)) => {
                tracing::warn!(%error, dlq, "kafka: cannot write to the dead-letter topic; retrying");
                if projections::runner::pause(shutdown, &mut backoff).await {
                    return false;
                }
            }
        }
    }
}

/// The consumer group `replay` remembers its place in.
const REPLAY_GROUP: &str = "mercato-dlq-replay";
/// How long reading the dead-letter topics may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The dead-letter topics `filter` names (a topic such as `orders.events`, or its `.dlq`), or all.
pub fn dead_letter_topics(
    settings: &KafkaSettings,
    filter: Option<&str>,
) -> Result<Vec<String>, KafkaError> {
    let all: Vec<&str> = schemas::topics::TOPICS.to_vec();
    let chosen: Vec<&str> = match filter {
        None => all,
        Some(name) => {
            let name = name
                .strip_suffix(schemas::topics::DLQ_SUFFIX)
                .unwrap_or(name);
            match all.iter().find(|topic| **topic == name) {
                Some(topic) => vec![*topic],
                None => {
                    return Err(KafkaError::UnknownTopic {
                        name: name.to_owned(),
                    });
                }
            }
        }
    };
    Ok(chosen
        .into_iter()
        .map(|topic| settings.topic(&schemas::topics::dlq_topic(topic)))
        .collect())
}

/// Reads `topics` up to their current end, from the group's committed offsets (`group`) or
/// from the beginning (`None`). Returns the messages and the end offsets it read up to.
async fn read_to_end(
    settings: &KafkaSettings,
    topics: &[String],
    group: Option<&str>,
) -> Result<(Vec<OwnedMessage>, TopicPartitionList, StreamConsumer), KafkaError> {
    let group_id = match group {
        Some(group) => settings.group(group),
        None => settings.group(&format!(
            "mercato-dlq-list-{}",
            uuid::Uuid::new_v4().simple()
        )),
    };
    let consumer: StreamConsumer = settings
        .consumer_config(&group_id)
        .create()
        .map_err(KafkaError::client("cannot create a Kafka consumer"))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut end_offsets = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(KafkaError::client(format!(
                "cannot read the metadata of {topic}"
            )))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
                .map_err(KafkaError::client(format!(
                    "cannot read the offsets of {topic}"
                )))?;
            let start = if group.is_some() {
                Offset::Stored
            } else {
                Offset::Beginning
            };
            assignment
                .add_partition_offset(topic, partition.id(), start)
                .map_err(KafkaError::client("cannot assign a partition"))?;
            end_offsets
                .add_partition_offset(topic, partition.id(), Offset::Offset(high))
                .map_err(KafkaError::client("cannot assign a partition"))?;
            if high > low {
                ends.insert((topic.clone(), partition.id()), high);
            }
        }
    }
    consumer
        .assign(&assignment)
        .map_err(KafkaError::client("cannot read the dead-letter topics"))?;
    // Where reading starts: partitions already read up to their end have nothing to give.
    if group.is_some() {
        let committed = consumer
            .committed_offsets(assignment.clone(), Duration::from_secs(10))
            .map_err(KafkaError::client("cannot read the replay group's offsets"))?;
        for element in committed.elements() {
            if let Offset::Offset(offset) = element.offset() {
                let key = (element.topic().to_owned(), element.partition());
                if ends.get(&key).is_some_and(|end| offset >= *end) {
                    ends.remove(&key);
                }
            }
        }
    }
    let mut messages = Vec::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    while !ends.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(message)) => message.detach(),
            Ok(Err(error)) => {
                return Err(KafkaError::Client {
                    what: "cannot read the dead-letter topics".to_owned(),
                    source: error,
                });
            }
            Err(_) => {
                return Err(KafkaError::Broker(format!(
                    "reading the dead-letter topics took longer than {}s",
                    READ_TIMEOUT.as_secs()
                )));
            }
        };
        let key = (message.topic().to_owned(), message.partition());
        if let Some(end) = ends.get(&key)
            && message.offset() + 1 >= *end
        {
            ends.remove(&key);
        }
        messages.push(message);
    }
    messages.sort_by(|a, b| {
        (a.topic(), a.partition(), a.offset()).cmp(&(b.topic(), b.partition(), b.offset()))
    });
    Ok((messages, end_offsets, consumer))
}

fn text<'a>(message: &'a OwnedMessage, key: &str) -> &'a str {
    crate::header(message.headers(), key).unwrap_or("")
}

/// One dead letter as `dlq list --format json` prints it.
fn describe(message: &OwnedMessage) -> serde_json::Value {
    let envelope: Option<serde_json::Value> = message
        .payload()
        .and_then(|payload| serde_json::from_slice(payload).ok());
    let field = |name: &str| {
        envelope
            .as_ref()
            .and_then(|envelope| envelope.get(name))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    json!({
        "dlq_topic": message.topic(),
        "dlq_partition": message.partition(),
        "dlq_offset": message.offset(),
        "topic": text(message, dlq_headers::TOPIC),
        "partition": text(message, dlq_headers::PARTITION).parse::<i32>().ok(),
        "offset": text(message, dlq_headers::OFFSET).parse::<i64>().ok(),
        "group": text(message, dlq_headers::GROUP),
        "projections": text(message, dlq_headers::PROJECTIONS),
        "attempts": text(message, dlq_headers::ATTEMPTS).parse::<u32>().ok(),
        "failed_at": text(message, dlq_headers::FAILED_AT),
        "reason": text(message, dlq_headers::REASON),
        "event_id": field("event_id"),
        "event_type": field("event_type"),
        "stream": match (field("stream_type"), field("stream_id")) {
            (serde_json::Value::String(t), serde_json::Value::String(id)) => json!(format!("{t}/{id}")),
            _ => serde_json::Value::Null,
        },
        "key": message.key().map(|key| String::from_utf8_lossy(key).into_owned()),
    })
}

/// Every dead letter of `topic` (or of every topic), oldest first per partition: where it came
/// from, why and how often it failed (`dlq list` prints these).
pub async fn list(
    settings: &KafkaSettings,
    topic: Option<&str>,
) -> Result<Vec<serde_json::Value>, KafkaError> {
    let topics = dead_letter_topics(settings, topic)?;
    let (messages, _, _) = read_to_end(settings, &topics, None).await?;
    Ok(messages.iter().map(describe).collect())
}

/// Publishes every dead letter not replayed yet back to its topic; answers how many.
pub async fn replay(settings: &KafkaSettings, topic: Option<&str>) -> Result<usize, KafkaError> {
    let topics = dead_letter_topics(settings, topic)?;
    let (messages, end_offsets, consumer) =
        read_to_end(settings, &topics, Some(REPLAY_GROUP)).await?;
    let producer: FutureProducer = settings
        .producer_config()
        .create()
        .map_err(KafkaError::client("cannot create a Kafka producer"))?;
    for message in &messages {
        let original = text(message, dlq_headers::TOPIC);
        if !schemas::topics::TOPICS.contains(&original) {
            return Err(KafkaError::Broker(format!(
                "dead letter {}/{}/{} does not name the topic it came from ({} header); \
                 nothing after it was replayed",
                message.topic(),
                message.partition(),
                message.offset(),
                dlq_headers::TOPIC
            )));
        }
        let replayed_from = format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        let headers =
            crate::copy_headers(message.headers(), |key| key != dlq_headers::REPLAYED_FROM);
        let headers = headers.insert(Header {
            key: dlq_headers::REPLAYED_FROM,
            value: Some(replayed_from.as_str()),
        });
        let destination = settings.topic(original);
        let mut record = FutureRecord::<[u8], [u8]>::to(&destination).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| KafkaError::Client {
                what: format!("cannot publish dead letter {replayed_from} to {destination}"),
                source: error,
            })?;
    }
    if !messages.is_empty() {
        consumer
            .commit(&end_offsets, rdkafka::consumer::CommitMode::Sync)
            .map_err(KafkaError::client(
                "the dead letters were replayed, but where the replay stopped could not be stored; a second replay would send them again",
            ))?;
    }
    Ok(messages.len())
}
