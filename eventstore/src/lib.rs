//! mercato's event store: one port ([`EventStore`]), two adapters (PostgreSQL for production,
//! SQLite for the embedded default), the aggregate command path on top of it ([`aggregate`]) and
//! a `cqrs_es::persist::PersistedEventRepository` over it ([`cqrs`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), eventstore::StoreError> {
//! let store = eventstore::open("sqlite://./data/mercato.db").await?;
//! let mut subscription = store.subscribe(0).await?;
//! let batch = subscription.next_batch().await?; // catches up, then waits for new events
//! # Ok(()) }
//! ```
//!
//! Every event has a global position. Positions are strictly increasing in the order the log
//! is read and no reader can skip one: see README.md for how the PostgreSQL adapter achieves it
//! with concurrent writers and no global lock.

/// The columns every read of events selects, in the order both adapters' row readers take them
/// by index: `concat!("SELECT ", event_columns!(), " FROM events ...")`.
macro_rules! event_columns {
    () => {
        "position, event_id, stream_type, stream_id, stream_version, event_type, \
         schema_version, occurred_at, correlation_id, causation_id, saga_id, actor, source, payload, \
         trace_context"
    };
}

pub mod aggregate;
pub mod audit;
pub mod cqrs;
mod error;
pub mod postgres;
pub mod sqlite;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod verdict;

use std::sync::Arc;

pub use error::StoreError;
pub use postgres::{PgEventStore, PgStoreOptions};
pub use schemas::{EventMetadata, NewEvent, RecordedEvent};
pub use sqlite::SqliteEventStore;
pub use store::{
    AppendRequest, AppendResult, Backend, DEFAULT_BATCH_SIZE, EventStore, ExpectedVersion,
    Snapshot, Subscription,
};

/// The URL of a database kept beside the event store at `store_url`: on PostgreSQL the store's
/// own database; on SQLite a file beside the store's, named with `suffix` (`mercato.db` and
/// `read` give `mercato-read.db`). Where the read models and identity's secret store live.
pub fn beside_store(store_url: &str, suffix: &str) -> String {
    let Some(path) = store_url.strip_prefix("sqlite://") else {
        return store_url.to_owned();
    };
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let beside = match path.rsplit_once('.') {
        Some((stem, extension)) if !extension.contains('/') => {
            format!("{stem}-{suffix}.{extension}")
        }
        _ => format!("{path}-{suffix}"),
    };
    match query {
        Some(query) => format!("sqlite://{beside}?{query}"),
        None => format!("sqlite://{beside}"),
    }
}

/// Which adapter a store URL asks for.
fn backend_of(url: &str) -> Result<Backend, StoreError> {
    let Some((scheme, _)) = url.split_once(':') else {
        return Err(StoreError::InvalidUrl(
            "the url has no scheme: use postgres://, postgresql:// or sqlite://PATH".to_owned(),
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => Ok(Backend::Postgres),
        "sqlite" => Ok(Backend::Sqlite),
        _ => Err(StoreError::UnsupportedUrl {
            scheme: scheme.to_owned(),
        }),
    }
}

/// Opens the store a URL names, applying its migrations: `postgres://...` or
/// `postgresql://...` for PostgreSQL, `sqlite://PATH` for an SQLite file (created with its
/// directory if missing). Must be called inside a tokio runtime.
pub async fn open(url: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    open_with_pool(url, PgStoreOptions::default().max_connections).await
}

/// [`open`], with at most `max_connections` PostgreSQL connections in the store's pool (and one
/// more for `LISTEN`). SQLite keeps its one writer and its readers.
pub async fn open_with_pool(
    url: &str,
    max_connections: u32,
) -> Result<Arc<dyn EventStore>, StoreError> {
    match backend_of(url)? {
        Backend::Postgres => {
            let options = PgStoreOptions {
                max_connections: max_connections.max(1),
                ..PgStoreOptions::default()
            };
            Ok(Arc::new(PgEventStore::connect_with(url, options).await?))
        }
        Backend::Sqlite => Ok(Arc::new(SqliteEventStore::open(url).await?)),
    }
}

/// Whether the database a URL names holds an event store (its `events` table), without creating
/// anything: an SQLite file that is missing is no store; a PostgreSQL database that cannot be
/// reached is an error. What a command that must not create a store checks first.
pub async fn exists(url: &str) -> Result<bool, StoreError> {
    match backend_of(url)? {
        Backend::Postgres => {
            let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
            let found: bool = sqlx::query_scalar("SELECT to_regclass('events') IS NOT NULL")
                .fetch_one(&mut connection)
                .await?;
            let _ = sqlx::Connection::close(connection).await;
            Ok(found)
        }
        Backend::Sqlite => SqliteEventStore::exists(url).await,
    }
}

/// Applies the store's migrations to the database a URL names (what `mercato migrate` runs).
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    match backend_of(url)? {
        Backend::Postgres => {
            // A direct connection, so an unreachable server is reported with its own reason.
            let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
            postgres::migrator().run(&mut connection).await?;
            let _ = sqlx::Connection::close(connection).await;
            Ok(())
        }
        Backend::Sqlite => SqliteEventStore::migrate(url).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_pick_the_adapter_by_scheme() {
        assert_eq!(
            backend_of("postgres://user@host/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            backend_of("postgresql://host/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            backend_of("sqlite://./data/mercato.db").ok(),
            Some(Backend::Sqlite)
        );
    }

    #[test]
    fn an_unknown_scheme_is_an_error_naming_the_accepted_ones() {
        let error = backend_of("mysql://host/db")
            .err()
            .map(|error| error.to_string());
        let message = error.unwrap_or_default();
        assert!(message.contains("`mysql`"), "{message}");
        assert!(message.contains("postgres://"), "{message}");
        assert!(message.contains("sqlite://PATH"), "{message}");
        assert!(backend_of("no scheme here").is_err());
    }
}
