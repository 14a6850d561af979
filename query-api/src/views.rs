//! Product views: recorded as `ProductViewed` events off the request's path, in batches, in a
//! stream of this process's own (`product_views/<process id>`), never in the product's stream.
//! Only customers' views are recorded, each product once per customer within a window
//! ([`ViewRecorder::record`]).

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

/// A customer's views count once per product within this window.
pub const VIEW_WINDOW: Duration = Duration::from_secs(30 * 60);
/// The most products one customer's views count for within a window (a script walking the
/// catalogue does not buy popularity).
pub const VIEWS_PER_WINDOW: usize = 100;
/// Customers remembered at most; beyond, those whose window has passed are forgotten.
const REMEMBERED: usize = 50_000;

/// Where product reads drop their views.
#[derive(Clone, Debug)]
pub struct ViewRecorder {
    sender: mpsc::Sender<(Uuid, Option<CustomerId>)>,
    seen: Arc<std::sync::Mutex<std::collections::HashMap<CustomerId, Seen>>>,
}

/// What one customer's views counted for in their current window.
#[derive(Debug)]
struct Seen {
    since: std::time::Instant,
    products: std::collections::HashSet<Uuid>,
}

impl ViewRecorder {
    /// Starts the task that appends views to `store`; it stops once every recorder is dropped,
    /// after appending what it holds.
    pub fn start(store: Arc<dyn EventStore>) -> (ViewRecorder, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let handle = tokio::spawn(run(store, receiver));
        (
            ViewRecorder {
                sender,
                seen: Arc::default(),
            },
            handle,
        )
    }

    /// Records a customer's view of a product; never waits. Views are signals that must not
    /// be forged cheaply: an anonymous reader's count for nothing, a customer's count once per
    /// product within [`VIEW_WINDOW`] and for at most [`VIEWS_PER_WINDOW`] products in it (per
    /// process).
    pub fn record(&self, product_id: Uuid, customer_id: Option<CustomerId>) {
        let Some(customer_id) = customer_id else {
            return;
        };
        if !self.first_in_window(&customer_id, product_id) {
            return;
        }
        if self
            .sender
            .try_send((product_id, Some(customer_id)))
            .is_err()
        {
            tracing::warn!(%product_id, "the view queue is full; a product view was not recorded");
        }
    }
}

impl ViewRecorder {
    /// Whether this is `customer_id`'s first view of `product_id` in their window, with room
    /// left in it.
    fn first_in_window(&self, customer_id: &CustomerId, product_id: Uuid) -> bool {
        let now = std::time::Instant::now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= REMEMBERED && !seen.contains_key(customer_id) {
            seen.retain(|_, customer| now.duration_since(customer.since) < VIEW_WINDOW);
        }
        let customer = seen.entry(customer_id.clone()).or_insert_with(|| Seen {
            since: now,
            products: Default::default(),
        });
        if now.duration_since(customer.since) >= VIEW_WINDOW {
            customer.since = now;
            customer.products.clear();
        }
        customer.products.len() < VIEWS_PER_WINDOW && customer.products.insert(product_id)
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
                        traceparent: None,
                        tracestate: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_customers_views_count_once_per_product_and_up_to_a_bound_per_window() {
        let (sender, _receiver) = mpsc::channel(QUEUE);
        let recorder = ViewRecorder {
            sender,
            seen: Arc::default(),
        };
        let ada = CustomerId::parse("ada").unwrap();
        let grace = CustomerId::parse("grace").unwrap();
        let mug = Uuid::new_v4();
        assert!(recorder.first_in_window(&ada, mug));
        assert!(!recorder.first_in_window(&ada, mug), "the same view again");
        assert!(recorder.first_in_window(&grace, mug), "another customer's");
        for _ in 1..VIEWS_PER_WINDOW {
            assert!(recorder.first_in_window(&ada, Uuid::new_v4()));
        }
        assert!(
            !recorder.first_in_window(&ada, Uuid::new_v4()),
            "beyond the bound of the window"
        );
    }
}
