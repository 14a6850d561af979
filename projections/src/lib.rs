//! mercato's read side: checkpointed projections that fold the event log into read models,
//! the search port with its embedded Tantivy adapter, and the query cache.
//!
//! - [`runner`]: follows the store from each projection's checkpoint and publishes progress
//!   (what read-your-writes waits on).
//! - [`readdb`]: the SQL database of the read models (PostgreSQL or SQLite).
//! - [`sql_models`]: products, orders, carts and popularity in SQL, each batch committed with
//!   its checkpoint.
//! - [`redis_models`]: carts and popularity on Redis, when it is configured.
//! - [`search`]: the search port and the Tantivy index (a projection too).
//! - [`cache`]: the query cache, in process or on Redis, invalidated by the projections.

pub mod cache;
pub mod readdb;
pub mod redis_models;
pub mod runner;
pub mod search;
pub mod sql_models;

use cqrs_es::DomainEvent;
use eventstore::RecordedEvent;

pub use runner::{Progress, ProgressState, Projection, run_projection};

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
}

/// Decodes a stored event as the domain event type `E` (upcasting older versions).
pub fn decode<E: DomainEvent>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    Ok(schemas::decode(
        &event.event_type,
        event.schema_version,
        &event.payload,
    )?)
}
