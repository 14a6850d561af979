//! Read-your-writes on Kafka-fed read models: the partition that carries the event at a position
//! is the one the relay chose for its stream (`schemas::topics::partition_for`), so a read
//! waiting for that position waits for the projection's checkpoint of that partition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use eventstore::EventStore;
use projections::{Feed, FeedLocator};
use rdkafka::consumer::BaseConsumer;

use schemas::topics::partition_for;

use crate::{KafkaError, KafkaSettings, partition_count};

/// Finds an event's partition from the store (its stream) and the topic's partition count.
pub struct KafkaLocator {
    store: Arc<dyn EventStore>,
    settings: KafkaSettings,
    client: Arc<BaseConsumer>,
    counts: Mutex<HashMap<String, i32>>,
}

impl std::fmt::Debug for KafkaLocator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaLocator")
            .field("bootstrap", &self.settings.bootstrap)
            .finish_non_exhaustive()
    }
}

impl KafkaLocator {
    pub fn new(store: Arc<dyn EventStore>, settings: KafkaSettings) -> Result<Self, KafkaError> {
        let client: BaseConsumer = settings
            .client_config()
            .create()
            .map_err(KafkaError::client("cannot create a Kafka client"))?;
        Ok(Self {
            store,
            settings,
            client: Arc::new(client),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The partition count of `topic` (deployment name), asked of the brokers once.
    async fn count(&self, topic: &str) -> Option<i32> {
        if let Some(count) = self.counts.lock().ok()?.get(topic) {
            return Some(*count);
        }
        let client = self.client.clone();
        let name = topic.to_owned();
        let count = tokio::task::spawn_blocking(move || partition_count(&client, &name))
            .await
            .ok()?
            .map_err(|error| tracing::warn!(%error, "read-your-writes cannot locate a partition"))
            .ok()?;
        self.counts.lock().ok()?.insert(topic.to_owned(), count);
        Some(count)
    }
}

#[async_trait]
impl FeedLocator for KafkaLocator {
    async fn feed_of(&self, position: u64) -> Option<Feed> {
        let events = self
            .store
            .read_all(position.checked_sub(1)?, 1)
            .await
            .ok()?;
        let event = events.first().filter(|event| event.position == position)?;
        let topic = schemas::topics::topic_for_stream_type(&event.stream_type)?;
        let count = self.count(&self.settings.topic(topic)).await?;
        Some(Feed::Partition {
            topic: topic.to_owned(),
            partition: partition_for(&event.stream_id, count),
        })
    }
}
