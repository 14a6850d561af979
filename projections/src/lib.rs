//! mercato's read side: checkpointed projections that fold the event log into read models,
//! the search port with its embedded Tantivy adapter, and the query cache.
//!
//! - [`catalogue`]: every read model by name, where it lives, and how to open it live or as a
//!   rebuild's shadow.
//! - [`runner`]: follows the store from each projection's checkpoint and publishes progress
//!   (what read-your-writes waits on).
//! - [`rebuild`]: rebuilding read models beside the ones in service and swapping them in.
//! - [`readdb`]: the SQL database of the read models (PostgreSQL or SQLite).
//! - [`lease`]: leases in that database, so that a part runs in one process at a time (the
//!   checkout saga, the Kafka relay) while others stand by.
//! - [`sql_models`]: products, orders, carts and popularity in SQL, each batch committed with
//!   its checkpoint.
//! - [`redis_models`]: carts and popularity on Redis, when it is configured.
//! - [`search`]: the search port, with its adapters in folders of their own: the embedded
//!   Tantivy index (a projection too) and OpenSearch/Elasticsearch, when configured.
//! - [`cache`]: the query cache, in process or on Redis, invalidated by the projections.
//! - [`queries`]: what the query API reads from these read models.

pub mod cache;
pub mod catalogue;
pub mod lease;
pub mod order_details;
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
    Feed, FeedLocator, PARK_AFTER_ATTEMPTS, Park, Progress, ProgressState, Projection, READY_LAG,
    apply_new, oldest_unapplied, run_projection,
};

/// Popularity points per unit sold: a unit of a confirmed order (`StockCommitted`).
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
    /// A write that only a lease's holder may make found another holder (or none): this
    /// process lost the lease, and the write was rolled back.
    #[error("the lease {name} is no longer this process's: another process holds it")]
    LeaseLost { name: String },
}

impl ProjectionError {
    /// Whether this is a failure of the systems a projection reads or writes (a connection
    /// lost, a timeout, a lock, a deadlock, a full disk, a search index or cluster that
    /// fails), worth retrying until they are back, rather than something about the event (it
    /// does not decode, the database refuses its values), which fails again however often it is
    /// retried. The runner parks a projection on an event only for the latter.
    pub fn is_transient(&self) -> bool {
        match self {
            ProjectionError::Database(error) => database_error_is_transient(error),
            ProjectionError::Redis(error) => {
                error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
                    || error.is_timeout()
                    || matches!(
                        error.kind(),
                        redis::ErrorKind::BusyLoadingError
                            | redis::ErrorKind::TryAgain
                            | redis::ErrorKind::ClusterDown
                            | redis::ErrorKind::MasterDown
                            | redis::ErrorKind::ReadOnly
                    )
            }
            ProjectionError::Json(_) | ProjectionError::Codec(_) => false,
            // Not known to be about the event: retried as long as they last.
            ProjectionError::Search(_)
            | ProjectionError::Directory(_)
            | ProjectionError::Store(_)
            | ProjectionError::Storage(_)
            | ProjectionError::CheckpointMoved { .. }
            | ProjectionError::LeaseLost { .. } => true,
        }
    }
}

/// See [`ProjectionError::is_transient`]: the connection and the pool's failures, and the
/// database's own answers that say "not now" rather than "not this": on PostgreSQL the SQLSTATE
/// classes 08 (connection), 40 (serialization failure, deadlock), 53 (insufficient resources),
/// 57 (operator intervention: a cancel, a shutdown), 58 (system error) and 55P03 (lock not
/// available); on SQLite BUSY, LOCKED, IOERR, FULL and CANTOPEN (with their extended codes).
fn database_error_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(error) => {
            let Some(code) = error.code() else {
                return false;
            };
            if error
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some()
            {
                // SQLite's extended result code: the primary code is its low byte.
                code.parse::<u32>()
                    .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 13 | 14))
            } else {
                // PostgreSQL's SQLSTATE.
                ["08", "40", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || code == "55P03"
            }
        }
        _ => false,
    }
}

/// What one event adds to a product's popularity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PopularitySignal {
    pub product_id: String,
    pub points: i64,
}

/// The popularity signals of an event: one per `StockCommitted` ([`ORDER_UNIT_POINTS`] per
/// unit; the product stream's id is the product), one per `ProductViewed` ([`VIEW_POINTS`]),
/// none otherwise. An order counts once it is confirmed: the checkout saga commits each of its
/// reservations (one `StockCommitted` per order and product) exactly when it confirms the order,
/// so an order that is declined, times out or finds no stock, which costs nothing to place,
/// adds nothing. `OrderCreated` adds no points. Every projection that keeps popularity folds
/// these, so they all count alike.
pub fn popularity_signals(event: &RecordedEvent) -> Result<Vec<PopularitySignal>, ProjectionError> {
    Ok(match event.event_type.as_str() {
        "StockCommitted" => match decode::<domain::ProductEvent>(event)? {
            domain::ProductEvent::StockCommitted(committed) => vec![PopularitySignal {
                product_id: event.stream_id.clone(),
                points: ORDER_UNIT_POINTS * i64::from(committed.quantity),
            }],
            _ => Vec::new(),
        },
        "ProductViewed" => {
            let domain::ProductViewEvent::ProductViewed(viewed) = decode(event)?;
            vec![PopularitySignal {
                product_id: viewed.product_id.to_string(),
                points: VIEW_POINTS,
            }]
        }
        _ => Vec::new(),
    })
}

/// Whether `event_type` can carry a popularity signal (see [`popularity_signals`]): what a
/// projection that keeps popularity must read.
pub fn is_popularity_event(event_type: &str) -> bool {
    matches!(event_type, "StockCommitted" | "ProductViewed")
}

/// The (customer, product) pairs an event says were ordered, which keep a product out of its
/// customer's recommendations: one per line of an `OrderCreated`, none otherwise.
///
/// These come from the placed order, not the confirmed one. No event of a confirmation names the
/// customer (`OrderConfirmed` holds the order id, `StockCommitted` the order id and units), and
/// a new `OrderConfirmed` version could not name it for orders confirmed before it (an upcaster
/// sees one event), so a replay would lose what existing shops' customers ordered; pairing the
/// confirmation with its order would need state of every open order in every adapter. A pair is
/// not a count and touches no score: it only leaves the product out of that same customer's
/// own recommendations, so placing orders that never get paid moves nothing anyone else sees.
pub fn ordered_pairs(event: &RecordedEvent) -> Result<Vec<(String, String)>, ProjectionError> {
    if event.event_type != "OrderCreated" {
        return Ok(Vec::new());
    }
    Ok(match decode::<domain::OrderEvent>(event)? {
        domain::OrderEvent::OrderCreated(created) => created
            .lines
            .iter()
            .map(|line| {
                (
                    created.customer_id.as_str().to_owned(),
                    line.product_id.to_string(),
                )
            })
            .collect(),
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
            *batch.scores.entry(signal.product_id).or_default() += signal.points;
        }
        batch.ordered.extend(ordered_pairs(event)?);
    }
    Ok(batch)
}

/// See [`popularity_of_batch`].
#[derive(Debug, Default)]
pub struct PopularityBatch {
    pub scores: std::collections::BTreeMap<String, i64>,
    /// (customer, product) pairs, from placed orders ([`ordered_pairs`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(event: &impl DomainEvent, stream_type: &str, stream_id: &str) -> RecordedEvent {
        let encoded = schemas::encode(event).unwrap();
        RecordedEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: encoded.event_type,
            schema_version: encoded.schema_version,
            stream_type: stream_type.to_owned(),
            stream_id: stream_id.to_owned(),
            stream_version: 1,
            position: 1,
            occurred_at: chrono::Utc::now(),
            metadata: eventstore::EventMetadata {
                correlation_id: "test".to_owned(),
                causation_id: "test".to_owned(),
                saga_id: None,
                actor: "test".to_owned(),
                source: "test".to_owned(),
                traceparent: None,
                tracestate: None,
            },
            payload: encoded.payload,
        }
    }

    /// A placed order names what its customer ordered and adds no points; only the units its
    /// confirmation sells do, and a reservation given back adds nothing.
    #[test]
    fn only_sold_units_and_views_make_popularity() {
        let (kettle, mug, order_id) = (
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
        );
        let line = |product_id, quantity| domain::order::OrderLine {
            product_id,
            quantity,
            unit_price: domain::Money::from_minor(100),
        };
        let placed = recorded(
            &domain::OrderEvent::OrderCreated(domain::order::OrderCreated {
                order_id,
                customer_id: domain::CustomerId::parse("ada").unwrap(),
                lines: vec![line(kettle, 999), line(mug, 2)],
                total: domain::Money::from_minor(100_100),
                payment_ref: Some("vault:order".to_owned()),
                cart_id: None,
                shipping_address: None,
                billing_address: None,
                payment_method: domain::PaymentMethod::Card,
            }),
            "order",
            &order_id.to_string(),
        );
        assert!(popularity_signals(&placed).unwrap().is_empty());
        assert_eq!(
            ordered_pairs(&placed).unwrap(),
            [
                ("ada".to_owned(), kettle.to_string()),
                ("ada".to_owned(), mug.to_string())
            ]
        );
        let sold = recorded(
            &domain::ProductEvent::StockCommitted(domain::product::StockCommitted {
                order_id,
                quantity: 2,
            }),
            "product",
            &mug.to_string(),
        );
        assert_eq!(
            popularity_signals(&sold).unwrap(),
            [PopularitySignal {
                product_id: mug.to_string(),
                points: 2 * ORDER_UNIT_POINTS,
            }]
        );
        assert!(ordered_pairs(&sold).unwrap().is_empty());
        let released = recorded(
            &domain::ProductEvent::StockReleased(domain::product::StockReleased {
                order_id,
                quantity: 999,
            }),
            "product",
            &kettle.to_string(),
        );
        assert!(popularity_signals(&released).unwrap().is_empty());
        for event in [&placed, &sold, &released] {
            assert_eq!(
                is_popularity_event(&event.event_type),
                !popularity_signals(event).unwrap().is_empty(),
                "{}",
                event.event_type
            );
        }
        let batch = popularity_of_batch([&placed, &sold, &released]).unwrap();
        assert_eq!(
            batch.scores,
            [(mug.to_string(), 2 * ORDER_UNIT_POINTS)].into()
        );
        assert_eq!(batch.ordered.len(), 2);
    }

    #[test]
    fn refused_values_are_the_events_fault_and_lost_connections_are_not() {
        let undecodable = ProjectionError::Json(serde_json::from_str::<u8>("x").unwrap_err());
        assert!(!undecodable.is_transient());
        assert!(ProjectionError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!ProjectionError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(
            ProjectionError::Storage("OpenSearch bulk: connection refused".to_owned())
                .is_transient()
        );
    }

    /// The database's own answers, as the read-model database gives them: a NUL PostgreSQL's
    /// text cannot hold and a broken CHECK are the event's; a lock held too long is not.
    #[tokio::test]
    async fn the_databases_answers_say_whose_fault_a_failure_is() {
        let dir = tempfile::tempdir().unwrap();
        let db = readdb::ReadDb::open(&format!("sqlite://{}", dir.path().join("r.db").display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (v TEXT CHECK (v <> 'bad'))")
            .execute(db.pool())
            .await
            .unwrap();
        let refused = sqlx::query("INSERT INTO t (v) VALUES ('bad')")
            .execute(db.pool())
            .await
            .unwrap_err();
        assert!(!ProjectionError::from(refused).is_transient());
        let unknown = sqlx::query("INSERT INTO t (w) VALUES ('x')")
            .execute(db.pool())
            .await
            .unwrap_err();
        assert!(!ProjectionError::from(unknown).is_transient());
        // Another connection holds the write lock past the busy timeout: SQLITE_BUSY.
        let mut holder = db.pool().acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *holder)
            .await
            .unwrap();
        let mut waiter = db.pool().acquire().await.unwrap();
        sqlx::query("PRAGMA busy_timeout = 10")
            .execute(&mut *waiter)
            .await
            .unwrap();
        let busy = sqlx::query("INSERT INTO t (v) VALUES ('fine')")
            .execute(&mut *waiter)
            .await
            .unwrap_err();
        assert!(ProjectionError::from(busy).is_transient());
        sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();

        // PostgreSQL's SQLSTATEs are digits too (22021 is no SQLite code).
        let Some(database) = eventstore::testing::TestDatabase::create("whose_fault").await else {
            return;
        };
        let db = readdb::ReadDb::open(database.url()).await.unwrap();
        let nul = sqlx::query("SELECT $1")
            .bind("a\0b")
            .execute(db.pool())
            .await
            .unwrap_err();
        assert!(!ProjectionError::from(nul).is_transient());
        let mut connection = db.pool().acquire().await.unwrap();
        sqlx::query("SET statement_timeout = 1")
            .execute(&mut *connection)
            .await
            .unwrap();
        let cancelled = sqlx::query("SELECT pg_sleep(1)")
            .execute(&mut *connection)
            .await
            .unwrap_err();
        assert!(ProjectionError::from(cancelled).is_transient(), "57014");
    }
}
