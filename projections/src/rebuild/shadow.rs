//! Rebuilding read models beside the ones in service, and swapping them in.
//!
//! A replay feeds the whole log (or the log from a position) to fresh instances of the read
//! models that write into a *shadow*: on PostgreSQL the schema `mercato_replay` of the same
//! database, on SQLite a file beside the read-model database (`mercato-read.replay.db`). The
//! live read models keep answering meanwhile. Once a rebuilt read model has caught up with the
//! head of the log, one transaction of the read-model database replaces the live tables' rows
//! with the shadow's and moves the live checkpoints to the shadow's: readers see the old read
//! model or the new one, never a mix. A projection of the serving process whose batch started
//! before the swap finds its checkpoint moved ([`crate::readdb::WriteTransaction::commit_batch`])
//! and reads on from the new checkpoint.
//!
//! The shadow keeps its checkpoints: an interrupted replay resumes where it stopped, or
//! [`discard`] drops what it built. Nothing of a shadow is ever read by the live system.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventstore::{EventStore, RecordedEvent};
use sqlx::{Executor, Row};

use crate::ProjectionError;
use crate::readdb::{ReadBackend, ReadDb};
use crate::runner::{Feed, Projection, apply_new};

/// The PostgreSQL schema rebuilt read models are built in.
pub const SHADOW_SCHEMA: &str = "mercato_replay";

/// The SQLite attachment name of the shadow file during a swap.
const SHADOW_ATTACHMENT: &str = "replay";

/// The shadow's own bookkeeping: which replay runs, from where, into which search generation.
const SHADOW_SCHEMA_STATEMENTS: &[&str] = &["CREATE TABLE IF NOT EXISTS replay_runs (
        projection TEXT PRIMARY KEY,
        from_position BIGINT NOT NULL,
        generation TEXT,
        started_at TEXT NOT NULL)"];

/// Where the rebuilt read models of the read-model database at `read_url` are built.
pub fn shadow_url(read_url: &str) -> String {
    if let Some(path) = read_url.strip_prefix("sqlite://") {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let shadow = match path.rsplit_once('.') {
            Some((stem, extension)) if !extension.contains('/') => {
                format!("{stem}.replay.{extension}")
            }
            _ => format!("{path}.replay"),
        };
        return match query {
            Some(query) => format!("sqlite://{shadow}?{query}"),
            None => format!("sqlite://{shadow}"),
        };
    }
    let separator = if read_url.contains('?') { '&' } else { '?' };
    format!("{read_url}{separator}options=-c%20search_path%3D{SHADOW_SCHEMA}")
}

/// The file of an SQLite shadow (for attaching it during a swap, and deleting it).
fn sqlite_path(url: &str) -> Option<&str> {
    let path = url.strip_prefix("sqlite://")?;
    Some(path.split('?').next().unwrap_or(path))
}

/// The shadow database beside the live read-model database `live` (at `live_url`), created if
/// needed.
pub async fn open_shadow(live: &ReadDb, live_url: &str) -> Result<ReadDb, ProjectionError> {
    if live.backend() == ReadBackend::Postgres {
        live.pool()
            .execute(format!("CREATE SCHEMA IF NOT EXISTS {SHADOW_SCHEMA}").as_str())
            .await?;
    }
    let shadow = ReadDb::open_for_rebuild(&shadow_url(live_url)).await?;
    shadow.ensure_schema(SHADOW_SCHEMA_STATEMENTS).await?;
    Ok(shadow)
}

/// What a shadow holds of one projection's replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayRun {
    pub projection: String,
    /// The replay applies events after this position.
    pub from_position: u64,
    /// The search index generation it builds, for the Tantivy index.
    pub generation: Option<String>,
    pub started_at: String,
}

/// The replay of `projection` in the shadow, if one was started and not finished.
pub async fn run_of(
    shadow: &ReadDb,
    projection: &str,
) -> Result<Option<ReplayRun>, ProjectionError> {
    let row = sqlx::query(
        "SELECT from_position, generation, started_at FROM replay_runs WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(shadow.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(ReplayRun {
        projection: projection.to_owned(),
        from_position: u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
        generation: row.try_get(1)?,
        started_at: row.try_get(2)?,
    }))
}

/// Every unfinished replay in the shadow.
pub async fn runs(shadow: &ReadDb) -> Result<Vec<ReplayRun>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT projection, from_position, generation, started_at FROM replay_runs ORDER BY projection",
    )
    .fetch_all(shadow.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ReplayRun {
                projection: row.try_get(0)?,
                from_position: u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0),
                generation: row.try_get(2)?,
                started_at: row.try_get(3)?,
            })
        })
        .collect()
}

/// Records that a replay of `run.projection` started: it starts after `run.from_position`, whose
/// checkpoint the shadow then holds.
pub async fn start_run(
    shadow: &ReadDb,
    run: &ReplayRun,
    tables: &[&str],
) -> Result<(), ProjectionError> {
    clear(shadow, &run.projection, tables).await?;
    let mut write = shadow.begin_write().await?;
    sqlx::query(
        "INSERT INTO replay_runs (projection, from_position, generation, started_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&run.projection)
    .bind(i64::try_from(run.from_position).unwrap_or(i64::MAX))
    .bind(run.generation.as_deref())
    .bind(&run.started_at)
    .execute(&mut *write.transaction)
    .await?;
    write.commit_at(&run.projection, run.from_position).await
}

/// Drops what the shadow holds of `projection`: its tables' rows, its checkpoints, its run.
pub async fn clear(
    shadow: &ReadDb,
    projection: &str,
    tables: &[&str],
) -> Result<(), ProjectionError> {
    let mut write = shadow.begin_write().await?;
    for table in tables {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *write.transaction)
            .await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1 OR name LIKE $2")
        .bind(projection)
        .bind(format!("{projection}@%"))
        .execute(&mut *write.transaction)
        .await?;
    sqlx::query("DELETE FROM replay_runs WHERE projection = $1")
        .bind(projection)
        .execute(&mut *write.transaction)
        .await?;
    write.transaction.commit().await?;
    Ok(())
}

/// Deletes the whole shadow (every unfinished replay): the schema on PostgreSQL, the file on
/// SQLite.
pub async fn discard(live: &ReadDb, live_url: &str) -> Result<(), ProjectionError> {
    match live.backend() {
        ReadBackend::Postgres => {
            live.pool()
                .execute(format!("DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE").as_str())
                .await?;
        }
        ReadBackend::Sqlite => {
            let shadow = shadow_url(live_url);
            if let Some(path) = sqlite_path(&shadow) {
                for suffix in ["", "-wal", "-shm"] {
                    let file = format!("{path}{suffix}");
                    match std::fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                        Err(error) => {
                            return Err(ProjectionError::Storage(format!(
                                "cannot delete the replay file {file}: {error}"
                            )));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether a shadow exists beside the live read-model database (without creating one).
pub async fn shadow_exists(live: &ReadDb, live_url: &str) -> Result<bool, ProjectionError> {
    match live.backend() {
        ReadBackend::Postgres => {
            let row = sqlx::query(
                "SELECT count(*) FROM information_schema.tables
                 WHERE table_schema = $1 AND table_name = 'replay_runs'",
            )
            .bind(SHADOW_SCHEMA)
            .fetch_one(live.pool())
            .await?;
            Ok(row.try_get::<i64, _>(0)? > 0)
        }
        ReadBackend::Sqlite => Ok(sqlite_path(&shadow_url(live_url))
            .is_some_and(|path| std::path::Path::new(path).exists())),
    }
}

/// What [`swap_tables`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swap {
    /// The rebuilt tables are in service, at the checkpoint the shadow had.
    Swapped,
    /// The live read model is ahead of the rebuilt one (at this position): catch up and retry.
    Behind(u64),
    /// The database chose the swap as the victim of a deadlock or serialization conflict with a
    /// projection's batch: nothing changed; try again.
    Contended,
}

/// Whether `error` is PostgreSQL aborting the transaction to break a deadlock or a
/// serialization conflict (worth trying again).
fn is_contention(error: &ProjectionError) -> bool {
    matches!(
        error,
        ProjectionError::Database(sqlx::Error::Database(error))
            if matches!(error.code().as_deref(), Some("40P01" | "40001"))
    )
}

/// Replaces the rows of `projection`'s `tables` in the live database with the shadow's, and its
/// live checkpoints (the log's and each Kafka partition's) with the shadow's `checkpoint`, in one
/// transaction, unless a live checkpoint is beyond `checkpoint` (then nothing changes). Then
/// clears the projection from the shadow.
pub async fn swap_tables(
    live: &ReadDb,
    live_url: &str,
    shadow: &ReadDb,
    projection: &str,
    tables: &[&str],
    checkpoint: u64,
) -> Result<Swap, ProjectionError> {
    swap_tables_with(
        live,
        live_url,
        shadow,
        projection,
        tables,
        checkpoint,
        || async { Ok(()) },
    )
    .await
}

/// As [`swap_tables`], and runs `before_commit` inside the swap's transaction, once the rows and
/// checkpoints are replaced and before the commit: for a read model that lives partly outside
/// the database (the OpenSearch index, whose alias moves there). The projection's writers stay
/// locked out meanwhile; if `before_commit` fails, nothing changes. (If the commit itself fails
/// after `before_commit` succeeded, undoing what it did is the caller's part.)
pub async fn swap_tables_with<F, Fut>(
    live: &ReadDb,
    live_url: &str,
    shadow: &ReadDb,
    projection: &str,
    tables: &[&str],
    checkpoint: u64,
    before_commit: F,
) -> Result<Swap, ProjectionError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), ProjectionError>>,
{
    let swap = match live.backend() {
        ReadBackend::Postgres => {
            match swap_postgres(live, projection, tables, checkpoint, before_commit).await {
                Err(error) if is_contention(&error) => Swap::Contended,
                other => other?,
            }
        }
        ReadBackend::Sqlite => {
            let shadow_url = shadow_url(live_url);
            let path = sqlite_path(&shadow_url).ok_or_else(|| {
                ProjectionError::Storage(format!("{shadow_url} is not an SQLite file"))
            })?;
            swap_sqlite(live, path, projection, tables, checkpoint, before_commit).await?
        }
    };
    if swap == Swap::Swapped {
        clear(shadow, projection, tables).await?;
    }
    Ok(swap)
}

async fn swap_postgres<F, Fut>(
    live: &ReadDb,
    projection: &str,
    tables: &[&str],
    checkpoint: u64,
    before_commit: F,
) -> Result<Swap, ProjectionError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), ProjectionError>>,
{
    let mut transaction = live.pool().begin().await?;
    // The same order as a projection's own transactions (its tables, then the checkpoints), so
    // that a batch in flight finishes first instead of deadlocking with the swap. Readers are not
    // blocked: SHARE ROW EXCLUSIVE only excludes writers.
    for table in tables {
        sqlx::query(&format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
            .execute(&mut *transaction)
            .await?;
    }
    sqlx::query("LOCK TABLE projection_checkpoints IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *transaction)
        .await?;
    let live_at = checkpoint_in(&mut transaction, projection).await?;
    if live_at > checkpoint {
        transaction.rollback().await?;
        return Ok(Swap::Behind(live_at));
    }
    for table in tables {
        let columns = columns_postgres(&mut transaction, table).await?;
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *transaction)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM {SHADOW_SCHEMA}.{table}"
        ))
        .execute(&mut *transaction)
        .await?;
    }
    move_checkpoints(&mut transaction, projection, checkpoint).await?;
    before_commit().await?;
    transaction.commit().await?;
    Ok(Swap::Swapped)
}

async fn swap_sqlite<F, Fut>(
    live: &ReadDb,
    shadow_path: &str,
    projection: &str,
    tables: &[&str],
    checkpoint: u64,
    before_commit: F,
) -> Result<Swap, ProjectionError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), ProjectionError>>,
{
    let mut connection = live.pool().acquire().await?;
    sqlx::query(&format!("ATTACH DATABASE $1 AS {SHADOW_ATTACHMENT}"))
        .bind(shadow_path)
        .execute(&mut *connection)
        .await?;
    let swapped = async {
        // Takes the write lock at once: the serving process's projections wait (or find their
        // snapshot outdated and read again), readers keep reading the old rows until the commit.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *connection).await?;
        let result = async {
            let live_at = checkpoint_in(&mut connection, projection).await?;
            if live_at > checkpoint {
                return Ok(Swap::Behind(live_at));
            }
            for table in tables {
                let rows = sqlx::query(&format!(
                    "SELECT name FROM {SHADOW_ATTACHMENT}.pragma_table_info('{table}')"
                ))
                .fetch_all(&mut *connection)
                .await?;
                let columns = rows
                    .iter()
                    .map(|row| row.try_get::<String, _>(0))
                    .collect::<Result<Vec<_>, _>>()?
                    .join(", ");
                sqlx::query(&format!("DELETE FROM main.{table}"))
                    .execute(&mut *connection)
                    .await?;
                sqlx::query(&format!(
                    "INSERT INTO main.{table} ({columns}) SELECT {columns} FROM {SHADOW_ATTACHMENT}.{table}"
                ))
                .execute(&mut *connection)
                .await?;
            }
            move_checkpoints(&mut connection, projection, checkpoint).await?;
            before_commit().await?;
            Ok::<_, ProjectionError>(Swap::Swapped)
        }
        .await;
        let end = match result {
            Ok(Swap::Swapped) => "COMMIT",
            _ => "ROLLBACK",
        };
        sqlx::query(end).execute(&mut *connection).await?;
        result
    }
    .await;
    let detached = sqlx::query(&format!("DETACH DATABASE {SHADOW_ATTACHMENT}"))
        .execute(&mut *connection)
        .await;
    if detached.is_err() {
        // A connection left attached is not reused.
        connection.detach();
    }
    swapped
}

/// The highest of the live checkpoints of `projection` over every feed it is fed from (the log,
/// Kafka partitions; not dead-letter replays).
async fn checkpoint_in(
    connection: &mut sqlx::AnyConnection,
    projection: &str,
) -> Result<u64, ProjectionError> {
    let row = sqlx::query(
        "SELECT COALESCE(MAX(position), 0) FROM projection_checkpoints
         WHERE (name = $1 OR name LIKE $2) AND name <> $3",
    )
    .bind(projection)
    .bind(format!("{projection}@%"))
    .bind(Feed::Replay.checkpoint_name(projection).as_ref())
    .fetch_one(&mut *connection)
    .await?;
    Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
}

/// Sets every live checkpoint of `projection` (log and partitions) to `checkpoint`: the rebuilt
/// read model holds every event up to it, whichever feed brings the next ones.
async fn move_checkpoints(
    connection: &mut sqlx::AnyConnection,
    projection: &str,
    checkpoint: u64,
) -> Result<(), ProjectionError> {
    let now = chrono::Utc::now().to_rfc3339();
    let position = i64::try_from(checkpoint).unwrap_or(i64::MAX);
    sqlx::query(
        "UPDATE projection_checkpoints SET position = $1, updated_at = $2
         WHERE name LIKE $3 AND name <> $4",
    )
    .bind(position)
    .bind(&now)
    .bind(format!("{projection}@%"))
    .bind(Feed::Replay.checkpoint_name(projection).as_ref())
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, position, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position,
             updated_at = excluded.updated_at",
    )
    .bind(projection)
    .bind(position)
    .bind(&now)
    .execute(&mut *connection)
    .await?;
    record_swap_on(connection, projection).await
}

/// Counts a swap of read model `projection` (in the swap's transaction where it has one): the
/// serving processes watch the count and drop every cached answer when it moves.
pub(crate) async fn record_swap_on(
    connection: &mut sqlx::AnyConnection,
    projection: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO read_model_swaps (name, swaps, swapped_at) VALUES ($1, 1, $2)
         ON CONFLICT (name) DO UPDATE SET swaps = read_model_swaps.swaps + 1,
             swapped_at = excluded.swapped_at",
    )
    .bind(projection)
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

async fn columns_postgres(
    connection: &mut sqlx::AnyConnection,
    table: &str,
) -> Result<String, ProjectionError> {
    let rows = sqlx::query(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
    )
    .bind(SHADOW_SCHEMA)
    .bind(table)
    .fetch_all(&mut *connection)
    .await?;
    if rows.is_empty() {
        return Err(ProjectionError::Storage(format!(
            "the rebuilt table {SHADOW_SCHEMA}.{table} does not exist"
        )));
    }
    Ok(rows
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?
        .join(", "))
}

/// How far a catch-up got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Events read from the log.
    pub read: u64,
    /// The position of the last event read.
    pub position: u64,
}

/// How many pages a projection may fall behind the reader before the reader waits for it.
const PAGES_AHEAD: usize = 2;

/// Feeds `projections` every event after the lowest of their checkpoints up to the head of the
/// log, in pages of `page` events (each projection skips what it already has). One task reads
/// the log and one task per projection applies the pages, so that reading and the projections
/// run on every core and a slow projection does not hold the others back by more than
/// [`PAGES_AHEAD`] pages. Calls `progress` after each page read with what every projection has
/// applied.
pub async fn catch_up(
    store: Arc<dyn EventStore>,
    projections: &[Arc<dyn Projection>],
    page: usize,
    mut progress: impl FnMut(CatchUp),
) -> Result<CatchUp, ProjectionError> {
    let mut from = u64::MAX;
    for projection in projections {
        from = from.min(projection.checkpoint(&Feed::Log).await?);
    }
    if projections.is_empty() {
        return Ok(CatchUp::default());
    }
    let (pages, mut incoming) =
        tokio::sync::mpsc::channel::<Result<Vec<RecordedEvent>, ProjectionError>>(1);
    let reader = tokio::spawn({
        let store = store.clone();
        async move {
            let mut after = from;
            loop {
                let events = match store.read_all(after, page).await {
                    Ok(events) => events,
                    Err(error) => {
                        let _ = pages.send(Err(error.into())).await;
                        return;
                    }
                };
                let Some(last) = events.last() else { return };
                after = last.position;
                let full = events.len() >= page;
                if pages.send(Ok(events)).await.is_err() || !full {
                    return;
                }
            }
        }
    });
    // What each projection has applied: events, and the position of the last one.
    let applied: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new(
        projections
            .iter()
            .map(|_| (AtomicU64::new(0), AtomicU64::new(from)))
            .collect(),
    );
    let mut feeds = Vec::with_capacity(projections.len());
    let mut workers = Vec::with_capacity(projections.len());
    for (index, projection) in projections.iter().enumerate() {
        let (feed, mut pages) = tokio::sync::mpsc::channel::<Arc<Vec<RecordedEvent>>>(PAGES_AHEAD);
        let projection = projection.clone();
        let applied = applied.clone();
        workers.push(tokio::spawn(async move {
            while let Some(events) = pages.recv().await {
                apply_new(projection.as_ref(), &Feed::Log, &events).await?;
                let (count, position) = &applied[index];
                count.fetch_add(events.len() as u64, Ordering::Relaxed);
                if let Some(last) = events.last() {
                    position.store(last.position, Ordering::Relaxed);
                }
            }
            Ok::<(), ProjectionError>(())
        }));
        feeds.push(feed);
    }
    let so_far = |applied: &[(AtomicU64, AtomicU64)]| CatchUp {
        read: applied
            .iter()
            .map(|(count, _)| count.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0),
        position: applied
            .iter()
            .map(|(_, position)| position.load(Ordering::Relaxed))
            .min()
            .unwrap_or(from),
    };
    let mut failure = None;
    'pages: while let Some(events) = incoming.recv().await {
        let events = match events {
            Ok(events) => Arc::new(events),
            Err(error) => {
                failure = Some(error);
                break;
            }
        };
        for feed in &feeds {
            // A worker that stopped has failed: its error is collected below.
            if feed.send(events.clone()).await.is_err() {
                break 'pages;
            }
        }
        progress(so_far(&applied));
    }
    drop(incoming);
    drop(feeds);
    // Every task is awaited, a failed one too, so none still writes when this returns.
    for worker in workers {
        let result = worker.await.unwrap_or_else(|error| {
            Err(ProjectionError::Storage(format!(
                "a projection's rebuild task failed: {error}"
            )))
        });
        if let Err(error) = result {
            failure.get_or_insert(error);
        }
    }
    let _ = reader.await;
    if let Some(error) = failure {
        return Err(error);
    }
    let done = so_far(&applied);
    progress(done);
    Ok(done)
}
