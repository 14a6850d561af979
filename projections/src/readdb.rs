//! The SQL database of the read models: the event store's own database on PostgreSQL, a file
//! beside the event store on SQLite (so that projections never contend with event appends for
//! SQLite's one write lock). Read models and their checkpoints live in it together, so a batch
//! and its checkpoint commit in one transaction.

use std::str::FromStr;
use std::sync::{Arc, Once};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

use eventstore::RecordedEvent;

use crate::ProjectionError;
use crate::runner::{Feed, Park};

/// The statements that create the read models, in order; each is idempotent. The SQL is the
/// subset PostgreSQL and SQLite share (`$n` parameters, `ON CONFLICT ... DO UPDATE`).
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS projection_checkpoints (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL,
        updated_at TEXT NOT NULL)",
    // A projection stopped at an event it cannot apply (`crate::runner::Park`), until
    // `mercato projections retry` deletes the row.
    "CREATE TABLE IF NOT EXISTS projection_parks (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        stream TEXT NOT NULL,
        reason TEXT NOT NULL,
        parked_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS read_model_swaps (
        name TEXT PRIMARY KEY,
        swaps BIGINT NOT NULL,
        swapped_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rm_products (
        product_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        price_minor BIGINT NOT NULL,
        stock_qty BIGINT NOT NULL,
        category TEXT,
        popularity BIGINT NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rm_orders (
        order_id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        status TEXT NOT NULL,
        lines TEXT NOT NULL,
        total_minor BIGINT NOT NULL,
        payment_status TEXT NOT NULL,
        cancel_reason TEXT,
        created_at TEXT NOT NULL,
        created_position BIGINT NOT NULL,
        updated_at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rm_orders_by_customer
        ON rm_orders (customer_id, created_position)",
    "CREATE INDEX IF NOT EXISTS rm_orders_by_status ON rm_orders (status, created_position)",
    "CREATE INDEX IF NOT EXISTS rm_orders_by_position ON rm_orders (created_position)",
    "CREATE TABLE IF NOT EXISTS rm_carts (
        cart_id TEXT PRIMARY KEY,
        lines TEXT NOT NULL,
        checked_out_as TEXT,
        version BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        owner TEXT)",
    "CREATE TABLE IF NOT EXISTS rm_popularity (
        product_id TEXT PRIMARY KEY,
        score BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rm_popularity_by_score ON rm_popularity (score)",
    "CREATE TABLE IF NOT EXISTS rm_order_payments (
        order_id TEXT PRIMARY KEY,
        payment_status TEXT NOT NULL,
        version BIGINT NOT NULL)",
    // The concrete OpenSearch index each alias's projection writes (`crate::search::opensearch`).
    "CREATE TABLE IF NOT EXISTS rm_search_index (
        alias TEXT PRIMARY KEY,
        index_name TEXT NOT NULL,
        updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rm_search_popularity (
        product_id TEXT PRIMARY KEY,
        points BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rm_products_early_popularity (
        product_id TEXT PRIMARY KEY,
        points BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rm_customer_products (
        customer_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        PRIMARY KEY (customer_id, product_id))",
    // Accounts, their personal values sealed (`crate::users`).
    "CREATE TABLE IF NOT EXISTS rm_users (
        user_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        roles TEXT NOT NULL,
        status TEXT NOT NULL,
        email_verified BIGINT NOT NULL,
        email TEXT,
        name TEXT,
        phone TEXT,
        addresses TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_login_at TEXT,
        version BIGINT NOT NULL)",
];

/// Columns added to tables of [`SCHEMA`] (or the lease table) after they were first released: `(table, column,
/// type)`. A database made before has them added when it is opened (its `CREATE TABLE IF NOT
/// EXISTS` left the table as it was); the new column is empty in the rows already there.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // The cart's owner (`CartOpened`); carts written before owners existed have none.
    ("rm_carts", "owner", "TEXT"),
    // A lease's fence (`crate::lease`); leases taken before fences existed have 0.
    ("saga_leases", "fence", "BIGINT NOT NULL DEFAULT 0"),
    // The language of a person's messages (`UserProfileChanged` v2); none before.
    ("rm_users", "language", "TEXT"),
];

/// Which SQL database the read models are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBackend {
    Postgres,
    Sqlite,
}

/// The read-model database.
#[derive(Clone, Debug)]
pub struct ReadDb {
    pool: AnyPool,
    backend: ReadBackend,
    /// On SQLite, projections write one at a time: a transaction that reads before it writes
    /// cannot upgrade its snapshot once another writer committed (`SQLITE_BUSY_SNAPSHOT`), and
    /// waiting on the lock would not help it.
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A projection's write transaction (holding SQLite's in-process write turn).
#[derive(Debug)]
pub struct WriteTransaction {
    pub transaction: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTransaction {
    /// Stores projection `name`'s checkpoint in this transaction and commits: the batch and its
    /// checkpoint become visible together.
    pub async fn commit_at(mut self, name: &str, position: u64) -> Result<(), ProjectionError> {
        save_checkpoint(&mut self.transaction, name, position).await?;
        self.transaction.commit().await?;
        Ok(())
    }

    /// Commits projection `projection`'s batch `events` of `feed`: moves the feed's checkpoint
    /// to the last event, but only if it is still below the first one. If another writer moved
    /// it meanwhile (a replay swapped in a rebuilt read model), the transaction rolls back and
    /// the answer is [`ProjectionError::CheckpointMoved`]: the runner reads again from the
    /// stored checkpoint, so no event is applied twice. Dead-letter replays ([`Feed::Replay`])
    /// apply behind the checkpoint by design and are not guarded.
    pub async fn commit_batch(
        mut self,
        feed: &Feed,
        projection: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            self.transaction.commit().await?;
            return Ok(());
        };
        let name = feed.checkpoint_name(projection);
        if *feed == Feed::Replay {
            return self.commit_at(&name, last.position).await;
        }
        let moved = sqlx::query(
            "INSERT INTO projection_checkpoints (name, position, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                 updated_at = excluded.updated_at
             WHERE projection_checkpoints.position < $4",
        )
        .bind(name.as_ref())
        .bind(i64::try_from(last.position).unwrap_or(i64::MAX))
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(i64::try_from(first.position).unwrap_or(i64::MAX))
        .execute(&mut *self.transaction)
        .await?;
        if moved.rows_affected() == 0 {
            let stored = sqlx::query("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(name.as_ref())
                .fetch_one(&mut *self.transaction)
                .await?
                .try_get::<i64, _>(0)?;
            self.transaction.rollback().await?;
            return Err(ProjectionError::CheckpointMoved {
                name: name.into_owned(),
                stored: u64::try_from(stored).unwrap_or(0),
                first: first.position,
            });
        }
        self.transaction.commit().await?;
        Ok(())
    }
}

/// The read-model database URL for an event store URL: the same database on PostgreSQL; on
/// SQLite a file beside the store's, `mercato.db` giving `mercato-read.db`.
pub fn read_db_url(store_url: &str) -> String {
    eventstore::beside_store(store_url, "read")
}

static DRIVERS: Once = Once::new();

/// The most connections a read-model database opens on PostgreSQL unless told otherwise.
const POSTGRES_POOL: u32 = 16;

impl ReadDb {
    /// Opens (creating an SQLite file if needed) and creates the read-model tables.
    pub async fn open(url: &str) -> Result<ReadDb, ProjectionError> {
        Self::open_tuned(url, false, POSTGRES_POOL).await
    }

    /// [`ReadDb::open`] with at most `max_connections` connections on PostgreSQL (SQLite keeps
    /// its 8).
    pub async fn open_with_pool(
        url: &str,
        max_connections: u32,
    ) -> Result<ReadDb, ProjectionError> {
        Self::open_tuned(url, false, max_connections.max(1)).await
    }

    /// Opens a read-model database that a rebuild fills: on SQLite each connection keeps a
    /// larger page cache (64 MiB), keeps statement journals in memory and checkpoints its WAL
    /// every 64 MiB instead of every 4 MiB. Durability is the same as [`ReadDb::open`].
    pub async fn open_for_rebuild(url: &str) -> Result<ReadDb, ProjectionError> {
        Self::open_tuned(url, true, POSTGRES_POOL).await
    }

    async fn open_tuned(
        url: &str,
        rebuild: bool,
        postgres_pool: u32,
    ) -> Result<ReadDb, ProjectionError> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            ReadBackend::Sqlite
        } else {
            ReadBackend::Postgres
        };
        let mut connect_url = url.to_owned();
        if backend == ReadBackend::Sqlite {
            if let Some(path) = url.strip_prefix("sqlite://") {
                let path = path.split('?').next().unwrap_or(path);
                if let Some(parent) = std::path::Path::new(path).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|error| {
                        ProjectionError::Storage(format!(
                            "cannot create the directory {}: {error}",
                            parent.display()
                        ))
                    })?;
                }
            }
            if !connect_url.contains("mode=") {
                connect_url.push_str(if connect_url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let options = AnyConnectOptions::from_str(&connect_url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == ReadBackend::Sqlite {
                8
            } else {
                postgres_pool
            })
            .test_before_acquire(false)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == ReadBackend::Sqlite {
                        // Read models can be rebuilt from the log: a crash may lose the last
                        // commits, never consistency (the checkpoint commits with them).
                        connection.execute("PRAGMA synchronous = NORMAL").await?;
                        connection.execute("PRAGMA busy_timeout = 10000").await?;
                        if rebuild {
                            connection.execute("PRAGMA cache_size = -65536").await?;
                            connection.execute("PRAGMA temp_store = MEMORY").await?;
                            connection
                                .execute("PRAGMA wal_autocheckpoint = 16384")
                                .await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == ReadBackend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let db = ReadDb {
            pool,
            backend,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
        };
        db.ensure_schema(SCHEMA).await?;
        db.ensure_schema(crate::lease::SCHEMA).await?;
        db.ensure_schema(crate::order_details::SCHEMA).await?;
        db.ensure_columns(ADDED_COLUMNS).await?;
        Ok(db)
    }

    /// Adds each of `columns` (`(table, column, type)`, such as [`ADDED_COLUMNS`]) its table
    /// does not have yet: for tables made before the column was released.
    pub async fn ensure_columns(
        &self,
        columns: &[(&str, &str, &str)],
    ) -> Result<(), ProjectionError> {
        for (table, column, column_type) in columns {
            let present = sqlx::query(&format!("SELECT {column} FROM {table} WHERE 1 = 0"))
                .fetch_all(&self.pool)
                .await
                .is_ok();
            if !present {
                let added = self
                    .pool
                    .execute(
                        format!("ALTER TABLE {table} ADD COLUMN {column} {column_type}").as_str(),
                    )
                    .await;
                // Another process may have added it meanwhile.
                if let Err(error) = added {
                    let now_present =
                        sqlx::query(&format!("SELECT {column} FROM {table} WHERE 1 = 0"))
                            .fetch_all(&self.pool)
                            .await
                            .is_ok();
                    if !now_present {
                        return Err(error.into());
                    }
                }
            }
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> ReadBackend {
        self.backend
    }

    /// Runs idempotent `CREATE ... IF NOT EXISTS` statements of another owner of tables in this
    /// database (the saga's state, the test gateway's ledger).
    pub async fn ensure_schema(&self, statements: &[&str]) -> Result<(), ProjectionError> {
        for statement in statements {
            self.pool.execute(*statement).await?;
        }
        Ok(())
    }

    /// Starts a projection's write transaction.
    pub async fn begin_write(&self) -> Result<WriteTransaction, ProjectionError> {
        let turn = match self.backend {
            ReadBackend::Sqlite => Some(self.write_lock.clone().lock_owned().await),
            ReadBackend::Postgres => None,
        };
        // On SQLite the transaction takes the write lock when it starts: a deferred one that
        // read first and then wrote would fail with "database is locked" (SQLITE_BUSY_SNAPSHOT)
        // when another connection committed in between, without waiting for the busy timeout.
        let transaction = match self.backend {
            ReadBackend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            ReadBackend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTransaction {
            transaction,
            _turn: turn,
        })
    }

    /// The stored checkpoint of projection `name` (0 if it never ran).
    pub async fn checkpoint(&self, name: &str) -> Result<u64, ProjectionError> {
        Ok(self.stored_checkpoint(name).await?.unwrap_or(0))
    }

    /// Checkpoint `name` if one was ever stored (`None` for a projection that never ran).
    pub async fn stored_checkpoint(&self, name: &str) -> Result<Option<u64>, ProjectionError> {
        let row = sqlx::query("SELECT position FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0)))
            .transpose()
    }

    /// Parks projection `name` at the event `park` names (replacing a park it had).
    pub async fn park(&self, name: &str, park: &Park) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO projection_parks (name, position, event_type, stream, reason, parked_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                 event_type = excluded.event_type, stream = excluded.stream,
                 reason = excluded.reason, parked_at = excluded.parked_at",
        )
        .bind(name)
        .bind(i64::try_from(park.position).unwrap_or(i64::MAX))
        .bind(&park.event_type)
        .bind(&park.stream)
        .bind(&park.reason)
        .bind(&park.parked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Where projection `name` is parked, if it is.
    pub async fn parked(&self, name: &str) -> Result<Option<Park>, ProjectionError> {
        let row = sqlx::query(
            "SELECT position, event_type, stream, reason, parked_at FROM projection_parks
             WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| park_of_row(&row, 0)).transpose()
    }

    /// Every parked projection, by name.
    pub async fn parks(&self) -> Result<Vec<(String, Park)>, ProjectionError> {
        let rows = sqlx::query(
            "SELECT name, position, event_type, stream, reason, parked_at FROM projection_parks
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, park_of_row(row, 1)?)))
            .collect()
    }

    /// Clears projection `name`'s park (what `mercato projections retry` does): a running
    /// runner sees it within [`crate::runner::PARKED_POLL`] and applies the event again.
    /// Answers the park cleared, `None` when it was not parked.
    pub async fn unpark(&self, name: &str) -> Result<Option<Park>, ProjectionError> {
        let Some(park) = self.parked(name).await? else {
            return Ok(None);
        };
        let cleared = sqlx::query("DELETE FROM projection_parks WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok((cleared.rows_affected() > 0).then_some(park))
    }

    /// How many times a rebuilt read model was swapped in, all read models together: a number
    /// that moves with every swap (see [`crate::cache`]).
    pub async fn swaps(&self) -> Result<u64, ProjectionError> {
        let total: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(swaps), 0) AS BIGINT) FROM read_model_swaps",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// Counts a swap of read model `name` that happened outside this database (Redis keys, a
    /// search index generation).
    pub async fn record_swap(&self, name: &str) -> Result<(), ProjectionError> {
        let mut connection = self.pool.acquire().await?;
        crate::rebuild::shadow::record_swap_on(&mut connection, name).await
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), ProjectionError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// The park in `row`'s columns from `first` on: position, event type, stream, reason, since.
fn park_of_row(row: &sqlx::any::AnyRow, first: usize) -> Result<Park, ProjectionError> {
    Ok(Park {
        position: u64::try_from(row.try_get::<i64, _>(first)?).unwrap_or(0),
        event_type: row.try_get(first + 1)?,
        stream: row.try_get(first + 2)?,
        reason: row.try_get(first + 3)?,
        parked_at: row.try_get(first + 4)?,
    })
}

/// Stores projection `name`'s checkpoint inside the batch's transaction.
pub(crate) async fn save_checkpoint(
    connection: &mut sqlx::AnyConnection,
    name: &str,
    position: u64,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, position, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position,
             updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(i64::try_from(position).unwrap_or(i64::MAX))
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_park_is_kept_beside_the_checkpoints_until_it_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("read.db").display());
        let db = ReadDb::open(&url).await.unwrap();
        assert_eq!(db.parked("products").await.unwrap(), None);
        assert_eq!(db.unpark("products").await.unwrap(), None);
        let park = Park {
            position: 42,
            event_type: "ProductUpdated".to_owned(),
            stream: "product/p-1".to_owned(),
            reason: "read model database: refused".to_owned(),
            parked_at: "2026-12-06T21:00:00Z".to_owned(),
        };
        db.park("products", &park).await.unwrap();
        // Parked again (after a retry that failed again): the new park replaces the old one.
        let again = Park {
            position: 43,
            ..park.clone()
        };
        db.park("products", &again).await.unwrap();
        drop(db);
        // Durable: another process (or a restart) reads it.
        let db = ReadDb::open(&url).await.unwrap();
        assert_eq!(db.parked("products").await.unwrap(), Some(again.clone()));
        assert_eq!(db.parked("orders").await.unwrap(), None);
        assert_eq!(
            db.parks().await.unwrap(),
            vec![("products".to_owned(), again.clone())]
        );
        assert_eq!(db.unpark("products").await.unwrap(), Some(again));
        assert_eq!(db.parked("products").await.unwrap(), None);
        assert!(db.parks().await.unwrap().is_empty());
    }

    #[test]
    fn the_read_models_of_an_sqlite_store_live_in_a_file_beside_it() {
        assert_eq!(
            read_db_url("sqlite://./data/mercato.db"),
            "sqlite://./data/mercato-read.db"
        );
        assert_eq!(
            read_db_url("sqlite:///tmp/x/store?mode=rwc"),
            "sqlite:///tmp/x/store-read?mode=rwc"
        );
        assert_eq!(
            read_db_url("postgres://u@h/db"),
            "postgres://u@h/db",
            "on PostgreSQL the read models share the store's database"
        );
    }
}
