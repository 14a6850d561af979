//! Product views: recorded as `ProductViewed` events off the request's path, in batches, in a
//! stream of this process's own (`product_views/<process id>`), never in the product's stream.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::CustomerId;
use domain::views::{ProductViewEvent, ProductViewed, VIEWS_STREAM_TYPE};
use eventstore::{AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How many views one append carries at most.
const BATCH: usize = 256;
/// How long views gather before they are appended.
const GATHER: Duration = Duration::from_millis(100);
/// Views waiting beyond this are dropped (with a warning) rather than slowing reads down.
const QUEUE: usize = 10_000;

/// Where product reads drop their views.
#[derive(Clone, Debug)]
pub struct ViewRecorder {
    sender: mpsc::Sender<(Uuid, Option<CustomerId>)>,
}

impl ViewRecorder {
    /// Starts the task that appends views to `store`; it stops once every recorder is dropped,
    /// after appending what it holds.
    pub fn start(store: Arc<dyn EventStore>) -> (ViewRecorder, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let handle = tokio::spawn(run(store, receiver));
        (ViewRecorder { sender }, handle)
    }

    /// Records a view; never waits.
    pub fn record(&self, product_id: Uuid, customer_id: Option<CustomerId>) {
        if self.sender.try_send((product_id, customer_id)).is_err() {
            tracing::warn!(%product_id, "the view queue is full; a product view was not recorded");
        }
    }
}

async fn run(store: Arc<dyn EventStore>, mut receiver: mpsc::Receiver<(Uuid, Option<CustomerId>)>) {
    let stream_id = Uuid::new_v4().to_string();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = receiver.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + GATHER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(view)) => batch.push(view),
                Ok(None) | Err(_) => break,
            }
        }
        let occurred_at = Utc::now();
        let events: Vec<NewEvent> = batch
            .drain(..)
            .filter_map(|(product_id, customer_id)| {
                // A view names its customer only when the customer asked for it themselves.
                let actor = customer_id.as_ref().map_or_else(
                    || "anonymous".to_owned(),
                    |customer_id| format!("user:{customer_id}"),
                );
                let event = ProductViewEvent::ProductViewed(ProductViewed {
                    product_id,
                    customer_id,
                });
                let encoded = schemas::encode(&event).ok()?;
                Some(NewEvent {
                    event_id: Uuid::new_v4(),
                    event_type: encoded.event_type,
                    schema_version: encoded.schema_version,
                    occurred_at,
                    payload: encoded.payload,
                    metadata: EventMetadata {
                        correlation_id: Uuid::new_v4().to_string(),
                        causation_id: String::new(),
                        saga_id: None,
                        actor,
                        source: "query-api".to_owned(),
                    },
                })
            })
            .collect();
        let request = AppendRequest::new(
            VIEWS_STREAM_TYPE,
            stream_id.clone(),
            ExpectedVersion::Any,
            events,
        );
        if let Err(error) = store.append(request).await {
            tracing::warn!(%error, "product views could not be recorded");
        }
    }
}
