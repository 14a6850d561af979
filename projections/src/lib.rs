//! mercato's read side: checkpointed projections that fold the event log into read models,
//! the search port with its embedded Tantivy adapter, and the query cache.
//!
//! - [`catalogue`]: every read model by name, where it lives, and how to open it live or as a
//!   rebuild's shadow.
//! - [`runner`]: follows the store from each projection's checkpoint and publishes progress
//!   (what read-your-writes waits on).
//! - [`rebuild`]: rebuilding read models beside the ones in service and swapping them in.
//! - [`readdb`]: the SQL database of the read models (PostgreSQL or SQLite).
//! - [`sql_models`]: products, orders, carts and popularity in SQL, each batch committed with
//!   its checkpoint.
//! - [`redis_models`]: carts and popularity on Redis, when it is configured.
//! - [`search`]: the search port, with its adapters in folders of their own: the embedded
//!   Tantivy index (a projection too) and OpenSearch/Elasticsearch, when configured.
//! - [`cache`]: the query cache, in process or on Redis, invalidated by the projections.
//! - [`queries`]: what the query API reads from these read models.

pub mod cache;
pub mod catalogue;
pub mod queries;
pub mod readdb;
pub mod rebuild;
pub mod redis_models;
pub mod runner;
pub mod search;
pub mod sql_models;
pub mod users;

use cqrs_es::DomainEvent;
use eventstore::RecordedEvent;

pub use catalogue::{ReadModel, ReadModelStores};
pub use runner::{
    Feed, FeedLocator, Progress, ProgressState, Projection, READY_LAG, apply_new, oldest_unapplied,
    run_projection,
};

/// Popularity points per unit ordered (`OrderCreated`).
pub const ORDER_UNIT_POINTS: i64 = 10;
/// Popularity points per product view (`ProductViewed`): a weaker signal than an order.
pub const VIEW_POINTS: i64 = 1;

/// Why a projection could not read or write its read model.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read model database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("search index: {0}")]
    Search(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("event store: {0}")]
    Store(#[from] eventstore::StoreError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Codec(#[from] schemas::CodecError),
    #[error("{0}")]
    Storage(String),
    /// The stored checkpoint moved past the batch while it was being applied (a replay swapped
    /// in a rebuilt read model): nothing of the batch was kept; read again from the checkpoint.
    #[error(
        "the checkpoint of {name} is at {stored}, past the batch starting at {first}: another writer (a replay) moved it; reading again from there"
    )]
    CheckpointMoved {
        name: String,
        stored: u64,
        first: u64,
    },
}

/// What one event adds to a product's popularity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PopularitySignal {
    pub product_id: String,
    pub points: i64,
    /// The customer who ordered the product (`OrderCreated`); `None` for a view.
    pub ordered_by: Option<String>,
}

/// The popularity signals of an event: one per order line of an `OrderCreated`
/// ([`ORDER_UNIT_POINTS`] per unit), one per `ProductViewed` ([`VIEW_POINTS`]), none otherwise.
/// Every projection that keeps popularity folds these, so they all count alike.
pub fn popularity_signals(event: &RecordedEvent) -> Result<Vec<PopularitySignal>, ProjectionError> {
    Ok(match event.event_type.as_str() {
        "OrderCreated" => match decode::<domain::OrderEvent>(event)? {
            domain::OrderEvent::OrderCreated(created) => created
                .lines
                .iter()
                .map(|line| PopularitySignal {
                    product_id: line.product_id.to_string(),
                    points: ORDER_UNIT_POINTS * i64::from(line.quantity),
                    ordered_by: Some(created.customer_id.as_str().to_owned()),
                })
                .collect(),
            _ => Vec::new(),
        },
        "ProductViewed" => {
            let domain::ProductViewEvent::ProductViewed(viewed) = decode(event)?;
            vec![PopularitySignal {
                product_id: viewed.product_id.to_string(),
                points: VIEW_POINTS,
                ordered_by: None,
            }]
        }
        _ => Vec::new(),
    })
}

/// The popularity points a batch adds per product, and the (customer, product) pairs it orders.
pub fn popularity_of_batch<'a>(
    events: impl IntoIterator<Item = &'a RecordedEvent>,
) -> Result<PopularityBatch, ProjectionError> {
    let mut batch = PopularityBatch::default();
    for event in events {
        for signal in popularity_signals(event)? {
            *batch.scores.entry(signal.product_id.clone()).or_default() += signal.points;
            if let Some(customer_id) = signal.ordered_by {
                batch.ordered.insert((customer_id, signal.product_id));
            }
        }
    }
    Ok(batch)
}

/// See [`popularity_of_batch`].
#[derive(Debug, Default)]
pub struct PopularityBatch {
    pub scores: std::collections::BTreeMap<String, i64>,
    pub ordered: std::collections::BTreeSet<(String, String)>,
}

/// Decodes a stored event as the domain event type `E` (upcasting older versions).
pub fn decode<E: DomainEvent>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    Ok(schemas::decode(
        &event.event_type,
        event.schema_version,
        &event.payload,
    )?)
}
