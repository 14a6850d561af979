//! Reads of the log in position order, the store's bulk path: subscriptions catching up,
//! projections and rebuilds reading pages of `read_all`, and `audit verify` reading the chain.
//!
//! They go through rusqlite on a blocking thread rather than through the sqlx pool: sqlx's
//! SQLite driver hands every row from its worker thread to the async caller as owned values, which
//! held a page read of the log to about 80,000 events per second; stepping the statement on the
//! thread that decodes the rows reads several times that (see BENCHMARKS.md). The connections
//! are plain readers of the same file (WAL: they never block the writer nor wait for it), kept
//! for reuse and marked `query_only`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use schemas::RecordedEvent;

use super::rows::{StoredEvent, to_i64};
use crate::audit::ChainRow;
use crate::error::StoreError;

/// How many idle connections are kept for the next read.
const MAX_IDLE: usize = 4;

const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
);

const READ_CHAIN: &str = concat!(
    "SELECT ",
    event_columns!(),
    ", hash FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
);

/// The bulk readers of one database file.
#[derive(Debug)]
pub(crate) struct BulkReader {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

fn database_error(error: rusqlite::Error) -> StoreError {
    StoreError::ReadFailed(error.to_string())
}

impl BulkReader {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        // Read-write without create: a WAL reader may need to create the shared-memory file;
        // `query_only` refuses any write through this connection.
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(self.busy_timeout)?;
        connection.pragma_update(None, "query_only", true)?;
        Ok(connection)
    }

    /// Runs `read` on an idle connection (or a new one) on a blocking thread.
    async fn with_connection<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let idle = this.idle.lock().ok().and_then(|mut idle| idle.pop());
            let connection = match idle {
                Some(connection) => connection,
                None => this.connect().map_err(database_error)?,
            };
            let result = read(&connection);
            if let Ok(mut idle) = this.idle.lock()
                && idle.len() < MAX_IDLE
            {
                idle.push(connection);
            }
            result
        })
        .await
        .map_err(|error| StoreError::CommitFailed(format!("a log reader panicked: {error}")))?
    }

    /// The first `limit` events after `after_position`, in position order.
    pub(crate) async fn read_all(
        self: &std::sync::Arc<Self>,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(READ_ALL)
                .map_err(database_error)?;
            let mut rows = statement
                .query((to_i64(after_position), to_i64(limit as u64)))
                .map_err(database_error)?;
            let mut events = Vec::with_capacity(limit.min(10_000));
            while let Some(row) = rows.next().map_err(database_error)? {
                events.push(recorded_event(row)?);
            }
            Ok(events)
        })
        .await
    }

    /// The first `limit` chain rows after `after_position`, in position order, written over the
    /// rows of `spare` (and their strings' allocations) before new ones are made.
    pub(crate) async fn read_chain(
        self: &std::sync::Arc<Self>,
        after_position: u64,
        limit: usize,
        spare: Vec<ChainRow>,
    ) -> Result<Vec<ChainRow>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(READ_CHAIN)
                .map_err(database_error)?;
            let mut rows = statement
                .query((to_i64(after_position), to_i64(limit as u64)))
                .map_err(database_error)?;
            let mut chain = spare;
            chain.reserve(limit.min(10_000).saturating_sub(chain.len()));
            let mut n_rows = 0;
            while let Some(row) = rows.next().map_err(database_error)? {
                if n_rows == chain.len() {
                    chain.push(ChainRow::default());
                }
                fill_chain_row(row, &mut chain[n_rows])?;
                n_rows += 1;
            }
            chain.truncate(n_rows);
            Ok(chain)
        })
        .await
    }
}

fn column<'row>(row: &'row rusqlite::Row<'_>, index: usize) -> Result<ValueRef<'row>, StoreError> {
    row.get_ref(index).map_err(database_error)
}

/// A text column as stored; an event row whose text is not UTF-8 is unreadable.
fn text(row: &rusqlite::Row<'_>, index: usize, name: &str) -> Result<String, StoreError> {
    match column(row, index)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => String::from_utf8(bytes.to_vec())
            .map_err(|_| StoreError::CorruptRow(format!("{name} is not UTF-8 text"))),
        ValueRef::Integer(value) => Ok(value.to_string()),
        ValueRef::Real(value) => Ok(value.to_string()),
        ValueRef::Null => Err(StoreError::CorruptRow(format!("{name} is NULL"))),
    }
}

fn optional_text(
    row: &rusqlite::Row<'_>,
    index: usize,
    name: &str,
) -> Result<Option<String>, StoreError> {
    match column(row, index)? {
        ValueRef::Null => Ok(None),
        _ => text(row, index, name).map(Some),
    }
}

fn integer(row: &rusqlite::Row<'_>, index: usize, name: &str) -> Result<i64, StoreError> {
    match column(row, index)? {
        ValueRef::Integer(value) => Ok(value),
        other => Err(StoreError::CorruptRow(format!(
            "{name} is not an integer ({:?})",
            other.data_type()
        ))),
    }
}

fn unsigned(row: &rusqlite::Row<'_>, index: usize, name: &str) -> Result<u64, StoreError> {
    let value = integer(row, index, name)?;
    u64::try_from(value).map_err(|_| StoreError::CorruptRow(format!("{name} is negative: {value}")))
}

/// An event from a row of `event_columns!()`, checked as the sqlx row decoder checks it.
fn recorded_event(row: &rusqlite::Row<'_>) -> Result<RecordedEvent, StoreError> {
    StoredEvent {
        position: integer(row, 0, "position")?,
        event_id: text(row, 1, "event_id")?,
        stream_type: text(row, 2, "stream_type")?,
        stream_id: text(row, 3, "stream_id")?,
        stream_version: integer(row, 4, "stream_version")?,
        event_type: text(row, 5, "event_type")?,
        schema_version: integer(row, 6, "schema_version")?,
        occurred_at: text(row, 7, "occurred_at")?,
        correlation_id: text(row, 8, "correlation_id")?,
        causation_id: text(row, 9, "causation_id")?,
        saga_id: optional_text(row, 10, "saga_id")?,
        actor: text(row, 11, "actor")?,
        source: text(row, 12, "source")?,
        payload: text(row, 13, "payload")?,
        trace_context: optional_text(row, 14, "trace_context")?,
    }
    .into_event()
}

/// A stored value as text, into `target` (kept allocation): what the verifier hashes. Bytes
/// that are not UTF-8 are replaced, which the hash comparison then reports.
fn put_text(target: &mut String, value: ValueRef<'_>) {
    use std::fmt::Write;
    target.clear();
    match value {
        // Borrowed, without a copy, when the bytes are UTF-8.
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            target.push_str(&String::from_utf8_lossy(bytes));
        }
        ValueRef::Integer(value) => {
            let _ = write!(target, "{value}");
        }
        ValueRef::Real(value) => {
            let _ = write!(target, "{value}");
        }
        ValueRef::Null => {}
    }
}

fn lenient_number(value: ValueRef<'_>) -> i64 {
    match value {
        ValueRef::Integer(value) => value,
        ValueRef::Real(value) => value as i64,
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0),
        ValueRef::Null => 0,
    }
}

/// A chain row: the stored columns as they are, for the verifier to hash, written over
/// `target`. Only the position must be readable (the walk is ordered by it); any other damage
/// shows as a hash mismatch.
fn fill_chain_row(row: &rusqlite::Row<'_>, target: &mut ChainRow) -> Result<(), StoreError> {
    target.position = unsigned(row, 0, "position")?;
    put_text(&mut target.event_id, column(row, 1)?);
    put_text(&mut target.stream_type, column(row, 2)?);
    put_text(&mut target.stream_id, column(row, 3)?);
    target.stream_version = u64::try_from(lenient_number(column(row, 4)?)).unwrap_or(0);
    put_text(&mut target.event_type, column(row, 5)?);
    target.schema_version = lenient_number(column(row, 6)?);
    put_text(&mut target.occurred_at, column(row, 7)?);
    put_text(&mut target.correlation_id, column(row, 8)?);
    put_text(&mut target.causation_id, column(row, 9)?);
    match column(row, 10)? {
        ValueRef::Null => target.saga_id = None,
        value => put_text(target.saga_id.get_or_insert_with(String::new), value),
    }
    put_text(&mut target.actor, column(row, 11)?);
    put_text(&mut target.source, column(row, 12)?);
    put_text(&mut target.payload, column(row, 13)?);
    // Column 14 is the trace context, which the chain does not cover.
    match column(row, 15)? {
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => {
            let hash = target.hash.get_or_insert_with(Vec::new);
            hash.clear();
            hash.extend_from_slice(bytes);
        }
        _ => target.hash = None,
    }
    Ok(())
}
