//! The embedded SQLite adapter: one writer task with group commit, a pool of readers.
//!
//! SQLite allows one writer at a time, so the store does not pretend otherwise: one task owns
//! the write connection. It takes every append queued while the previous commit was being
//! flushed, runs each inside its own SAVEPOINT (a refused append does not fail the others),
//! commits them with one durable flush (WAL, `synchronous=FULL`), and only then answers each
//! caller. Positions are SQLite rowids: dense, and committed in order, because each group
//! commit holds the write lock from its first insert to its commit.

mod bulk;
mod chain;
mod rows;
mod subscription;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemas::RecordedEvent;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{
    AppendRequest, AppendResult, Backend, DEFAULT_BATCH_SIZE, EventStore, Snapshot, Subscription,
    SubscriptionSource,
};
use rows::{recorded_event, to_i64, to_u64};
pub(crate) use subscription::SqliteSubscription;
use writer::WriteJob;

/// How long a statement waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many appends may wait for the writer before callers are slowed down.
const WRITE_QUEUE_CAPACITY: usize = 4096;
/// How many reader connections the store keeps.
const MAX_READERS: u32 = 4;

/// The migrations of the SQLite adapter. Other crates may keep their own migrations in the
/// same database: versions this migrator does not know are ignored.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

/// The event store in an SQLite file. Cheap to clone: clones share the writer and the readers.
#[derive(Clone, Debug)]
pub struct SqliteEventStore {
    inner: Arc<SqliteInner>,
}

#[derive(Debug)]
struct SqliteInner {
    jobs: mpsc::Sender<WriteJob>,
    readers: SqlitePool,
    /// The readers of the log in position order (`read_all`, `read_chain`).
    bulk: Arc<bulk::BulkReader>,
    /// The last committed position, published by the writer after each group commit.
    head: watch::Receiver<u64>,
}

/// The connect options of a `sqlite://PATH` URL, refusing in-memory databases (the writer and
/// the readers could not share one).
fn connect_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(StoreError::InvalidUrl(
            "an in-memory sqlite database cannot be shared by the writer and the readers: use sqlite://PATH"
                .to_owned(),
        ));
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|error| StoreError::InvalidUrl(format!("{url}: {error}")))?;
    Ok(options.busy_timeout(BUSY_TIMEOUT))
}

async fn create_parent_directory(path: &Path) -> Result<(), StoreError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    if parent.as_os_str().is_empty() {
        return Ok(());
    }
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|source| StoreError::CreateDirectory {
            path: parent.display().to_string(),
            source,
        })
}

impl SqliteEventStore {
    /// Opens (creating it and its directory if needed) the database of a `sqlite://PATH` URL,
    /// applies the migrations and starts the writer task. Must be called inside a tokio runtime.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        create_parent_directory(options.get_filename()).await?;
        let writer_options = options
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let mut writer_connection = SqliteConnection::connect_with(&writer_options).await?;
        migrator().run(&mut writer_connection).await?;
        chain::backfill_hashes(&mut writer_connection).await?;
        let head_position: i64 =
            sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events")
                .fetch_one(&mut writer_connection)
                .await?;
        let bulk = Arc::new(bulk::BulkReader::new(
            options.get_filename().to_path_buf(),
            BUSY_TIMEOUT,
        ));
        let readers = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .connect_with(options)
            .await?;
        let (head_sender, head) = watch::channel(to_u64(head_position, "position")?);
        let (jobs, job_queue) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        tokio::spawn(writer::run(writer_connection, job_queue, head_sender));
        Ok(Self {
            inner: Arc::new(SqliteInner {
                jobs,
                readers,
                bulk,
                head,
            }),
        })
    }

    /// Whether the file of a `sqlite://PATH` URL exists and holds the `events` table; creates
    /// nothing.
    pub async fn exists(url: &str) -> Result<bool, StoreError> {
        let options = connect_options(url)?;
        if !options.get_filename().is_file() {
            return Ok(false);
        }
        let mut connection =
            SqliteConnection::connect_with(&options.create_if_missing(false).read_only(true))
                .await?;
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
        )
        .fetch_one(&mut connection)
        .await?;
        connection.close().await?;
        Ok(found)
    }

    /// Applies the migrations to the database of a `sqlite://PATH` URL without starting a store.
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let options = connect_options(url)?;
        create_parent_directory(options.get_filename()).await?;
        let mut connection = SqliteConnection::connect_with(
            &options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await?;
        migrator().run(&mut connection).await?;
        chain::backfill_hashes(&mut connection).await?;
        connection.close().await?;
        Ok(())
    }

    /// The pool the store reads with.
    pub fn reader_pool(&self) -> &SqlitePool {
        &self.inner.readers
    }

    /// Hands a job to the writer and waits for its commit.
    async fn write(
        &self,
        requests: Vec<AppendRequest>,
        snapshot: Option<Snapshot>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        for request in &requests {
            request.validate()?;
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .jobs
            .send(WriteJob {
                requests,
                snapshot,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        let mut results = self.write(vec![request], None).await?;
        results.pop().ok_or(StoreError::CommitFailed(
            "the writer returned no result".to_owned(),
        ))
    }

    async fn append_atomic(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.write(requests, None).await
    }

    async fn append_with_snapshot(
        &self,
        request: AppendRequest,
        snapshot: Snapshot,
    ) -> Result<AppendResult, StoreError> {
        let mut results = self.write(vec![request], Some(snapshot)).await?;
        results.pop().ok_or(StoreError::CommitFailed(
            "the writer returned no result".to_owned(),
        ))
    }

    async fn read_stream(
        &self,
        stream_type: &str,
        stream_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const READ_STREAM: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_type = ? AND stream_id = ? AND stream_version > ? \
             ORDER BY stream_version LIMIT ?"
        );
        let rows = sqlx::query(READ_STREAM)
            .bind(stream_type)
            .bind(stream_id)
            .bind(to_i64(after_version))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.readers)
            .await?;
        rows.iter().map(recorded_event).collect()
    }

    async fn stream_version(&self, stream_type: &str, stream_id: &str) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(max(stream_version), 0) FROM events \
             WHERE stream_type = ? AND stream_id = ?",
        )
        .bind(stream_type)
        .bind(stream_id)
        .fetch_one(&self.inner.readers)
        .await?;
        to_u64(version, "stream_version")
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.bulk.read_all(after_position, limit).await
    }

    async fn read_correlated(
        &self,
        correlation_id: &str,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const READ_CORRELATED: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE correlation_id = ? AND position > ? ORDER BY position LIMIT ?"
        );
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(READ_CORRELATED)
            .bind(correlation_id)
            .bind(to_i64(after_position))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.readers)
            .await?;
        rows.iter().map(recorded_event).collect()
    }

    async fn read_chain(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::ChainRow>, StoreError> {
        self.inner
            .bulk
            .read_chain(after_position, limit, Vec::new())
            .await
    }

    async fn read_chain_reusing(
        &self,
        after_position: u64,
        limit: usize,
        spare: Vec<crate::audit::ChainRow>,
    ) -> Result<Vec<crate::audit::ChainRow>, StoreError> {
        self.inner
            .bulk
            .read_chain(after_position, limit, spare)
            .await
    }

    async fn read_stream_chain(
        &self,
        stream_type: &str,
        stream_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::ChainRow>, StoreError> {
        chain::read_stream_chain(
            &self.inner.readers,
            stream_type,
            stream_id,
            after_version,
            limit,
        )
        .await
    }

    async fn audit_checkpoints(&self) -> Result<Vec<crate::audit::Checkpoint>, StoreError> {
        chain::audit_checkpoints(&self.inner.readers).await
    }

    async fn last_audit_checkpoint(&self) -> Result<Option<crate::audit::Checkpoint>, StoreError> {
        chain::last_audit_checkpoint(&self.inner.readers).await
    }

    async fn sealed_heads(
        &self,
        stream: Option<(&str, &str)>,
    ) -> Result<Vec<crate::audit::SealedHead>, StoreError> {
        chain::sealed_heads(&self.inner.readers, stream).await
    }

    async fn write_audit_seal(
        &self,
        expected_last: Option<u64>,
        checkpoints: Vec<crate::audit::Checkpoint>,
        heads: Vec<crate::audit::SealedHead>,
    ) -> Result<bool, StoreError> {
        chain::write_audit_seal(&self.inner.readers, expected_last, checkpoints, heads).await
    }

    async fn find_events(&self, event_ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = Vec::new();
        for chunk in event_ids.chunks(rows::IDS_PER_QUERY) {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE event_id IN "
            ));
            builder.push_tuples(chunk, |mut tuple, event_id| {
                tuple.push_bind(event_id.to_string());
            });
            let rows = builder.build().fetch_all(&self.inner.readers).await?;
            for row in &rows {
                events.push(recorded_event(row)?);
            }
        }
        events.sort_by_key(|event| event.position);
        Ok(events)
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events")
            .fetch_one(&self.inner.readers)
            .await?;
        to_u64(head, "position")
    }

    async fn subscribe(&self, after_position: u64) -> Result<Subscription, StoreError> {
        Ok(Subscription {
            source: SubscriptionSource::Sqlite(SqliteSubscription::new(
                self.clone(),
                self.inner.head.clone(),
                after_position,
                DEFAULT_BATCH_SIZE,
            )),
        })
    }

    async fn log_changes(&self) -> Result<watch::Receiver<u64>, StoreError> {
        Ok(self.inner.head.clone())
    }

    async fn load_snapshot(
        &self,
        stream_type: &str,
        stream_id: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(
            "SELECT version, state FROM snapshots WHERE stream_type = ? AND stream_id = ?",
        )
        .bind(stream_type)
        .bind(stream_id)
        .fetch_optional(&self.inner.readers)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Snapshot::from_stored(
            stream_type,
            stream_id,
            row.try_get("version")?,
            row.try_get("state")?,
        )
        .map(Some)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.write(Vec::new(), Some(snapshot)).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.inner.readers).await?;
        if self.inner.jobs.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }
}
