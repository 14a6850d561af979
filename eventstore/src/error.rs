//! The one error type of the store port.

use uuid::Uuid;

use crate::store::ExpectedVersion;

/// What can go wrong when talking to the event store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: the stream is not at the version the append expected, or another
    /// writer appended to it at the same moment. Load the stream again, decide again, retry.
    #[error(
        "stream {stream_type}/{stream_id} was appended to concurrently: expected version {expected}, the stream is at {actual}"
    )]
    Conflict {
        stream_type: String,
        stream_id: String,
        expected: ExpectedVersion,
        /// The stream's version as the store saw it when it refused the append.
        actual: u64,
    },
    /// Some of the appended event ids are already stored, but not as this very append (other
    /// events, another stream, or only part of the batch): an id was reused for new events.
    #[error("event id {event_id} is already stored as a different event")]
    EventIdReused { event_id: Uuid },
    /// The append request itself is malformed (empty stream id, the same event id twice, ...).
    #[error("invalid append: {0}")]
    InvalidRequest(String),
    /// One transaction can hold at most 2^20 events on PostgreSQL (see the position layout).
    #[error(
        "an append of {n_events} events does not fit in one transaction (at most {max_events})"
    )]
    TooManyEvents { n_events: usize, max_events: usize },
    /// The store URL names a scheme no adapter handles.
    #[error(
        "unsupported event store url scheme `{scheme}`: use postgres://, postgresql:// or sqlite://PATH"
    )]
    UnsupportedUrl { scheme: String },
    /// The store URL could not be understood.
    #[error("invalid event store url: {0}")]
    InvalidUrl(String),
    /// The database refused or failed a statement, or could not be reached.
    #[error("event store database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The embedded store's log reader (see `sqlite::bulk`) could not open the file or read a
    /// page of the log.
    #[error("reading the event log failed: {0}")]
    ReadFailed(String),
    /// Applying the store's migrations failed.
    #[error("event store migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored row cannot be turned back into an event (the table was edited by hand?).
    #[error("stored event is unreadable: {0}")]
    CorruptRow(String),
    /// The group commit that carried this append failed; nothing of the batch was stored.
    #[error("the commit failed, nothing was stored: {0}")]
    CommitFailed(String),
    /// A directory for the embedded store could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDirectory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The store was shut down while the request was in flight.
    #[error("the event store is closed")]
    Closed,
}

impl StoreError {
    /// Whether this is the typed optimistic-concurrency error.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// Whether the database could not be reached (as opposed to refusing the request).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ) | StoreError::Closed
        )
    }
}
