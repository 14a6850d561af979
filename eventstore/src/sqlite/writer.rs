//! The writer task: group commit of every append queued while the last commit was flushing.

use std::collections::HashMap;

use chrono::Utc;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use tokio::sync::{mpsc, oneshot, watch};

use super::rows::{IDS_PER_QUERY, format_timestamp, parse_uuid, to_i64, to_u64};
use crate::audit::{self, CanonicalEvent, Hash, ZERO_HASH};
use crate::error::StoreError;
use crate::store::{AppendRequest, AppendResult, Snapshot};
use crate::verdict::{self, StoredId, Verdict};

/// The most appends one commit carries.
const MAX_JOBS_PER_COMMIT: usize = 1024;
/// The most rows one INSERT statement carries (15 parameters each, well below SQLite's limit).
const ROWS_PER_INSERT: usize = 500;

/// One caller's appends (all or nothing) and maybe a snapshot, with where to send the answer.
#[derive(Debug)]
pub(crate) struct WriteJob {
    pub requests: Vec<AppendRequest>,
    pub snapshot: Option<Snapshot>,
    pub reply: oneshot::Sender<Result<Vec<AppendResult>, StoreError>>,
}

/// A job's answer. The outer `Result` of the functions below is for failures of the connection
/// or the transaction, which fail the whole batch.
type JobOutcome = Result<Vec<AppendResult>, StoreError>;

/// Runs until every store handle is dropped: takes all queued jobs, commits them together,
/// answers each caller after the commit, and publishes the new head position.
pub(crate) async fn run(
    mut connection: SqliteConnection,
    mut jobs: mpsc::Receiver<WriteJob>,
    head: watch::Sender<u64>,
) {
    let mut batch = Vec::with_capacity(64);
    let mut known = Known::default();
    while jobs.recv_many(&mut batch, MAX_JOBS_PER_COMMIT).await > 0 {
        commit_batch(
            &mut connection,
            std::mem::take(&mut batch),
            &head,
            &mut known,
        )
        .await;
    }
    if let Err(error) = connection.close().await {
        tracing::warn!(%error, "closing the sqlite event store's write connection failed");
    }
}

/// How many stream heads the writer remembers between commits before it starts over.
const MAX_KNOWN_HEADS: usize = 100_000;

/// What the writer knows of the log from its own commits, so that an append needs no statement
/// besides its insert: the last position, and the version and hash of recently appended streams.
/// It is trusted only while SQLite's `data_version` says no other connection has written since
/// the writer's last commit (another process appending to the same file, or this store's
/// sealer); otherwise it is dropped and read again. It only saves reads: the insert still checks
/// the stream's version itself, and a refused insert drops what was known of the stream.
#[derive(Debug, Default)]
pub(crate) struct Known {
    data_version: Option<i64>,
    last_position: Option<i64>,
    heads: HashMap<StreamKey, (u64, Hash)>,
}

type StreamKey = (String, String);

impl Known {
    fn forget(&mut self) {
        self.data_version = None;
        self.last_position = None;
        self.heads.clear();
    }
}

/// The state of one group commit: what its jobs appended so far (merged into [`Known`] once
/// committed), and the job being run (merged into the batch once its savepoint is released).
struct BatchState<'a> {
    known: &'a mut Known,
    last_position: i64,
    batch_heads: HashMap<StreamKey, (u64, Hash)>,
    job_heads: HashMap<StreamKey, (u64, Hash)>,
}

impl BatchState<'_> {
    fn head_of(&self, request: &AppendRequest) -> Option<(u64, Hash)> {
        let key = (request.stream_type.clone(), request.stream_id.clone());
        self.job_heads
            .get(&key)
            .or_else(|| self.batch_heads.get(&key))
            .or_else(|| self.known.heads.get(&key))
            .copied()
    }

    fn appended(&mut self, request: &AppendRequest, head: &ChainHead) {
        self.last_position = head.last_position;
        self.job_heads.insert(
            (request.stream_type.clone(), request.stream_id.clone()),
            (head.version, head.hash),
        );
    }

    /// A refused insert: what was known of the stream may be wrong, read it next time. Says
    /// whether anything was known.
    fn forget_stream(&mut self, request: &AppendRequest) -> bool {
        let key = (request.stream_type.clone(), request.stream_id.clone());
        let in_job = self.job_heads.remove(&key).is_some();
        let in_batch = self.batch_heads.remove(&key).is_some();
        let known = self.known.heads.remove(&key).is_some();
        in_job || in_batch || known
    }
}

async fn commit_batch(
    connection: &mut SqliteConnection,
    batch: Vec<WriteJob>,
    head: &watch::Sender<u64>,
    known: &mut Known,
) {
    match run_batch(connection, &batch, known).await {
        Ok(outcomes) => {
            let last_position = outcomes
                .iter()
                .filter_map(|outcome| outcome.as_ref().ok())
                .flatten()
                .filter_map(AppendResult::last_position)
                .max();
            if let Some(last_position) = last_position {
                head.send_if_modified(|head_position| {
                    let moved = last_position > *head_position;
                    if moved {
                        *head_position = last_position;
                    }
                    moved
                });
            }
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                // A caller that stopped waiting gets nothing; its events are committed anyway.
                let _ = job.reply.send(outcome);
            }
        }
        Err(error) => {
            known.forget();
            if let Err(rollback_error) = sqlx::query("ROLLBACK").execute(&mut *connection).await {
                tracing::debug!(%rollback_error, "rollback after a failed group commit");
            }
            tracing::error!(%error, n_jobs = batch.len(), "sqlite event store group commit failed");
            let message = error.to_string();
            for job in batch {
                let _ = job
                    .reply
                    .send(Err(StoreError::CommitFailed(message.clone())));
            }
        }
    }
}

async fn run_batch(
    connection: &mut SqliteConnection,
    batch: &[WriteJob],
    known: &mut Known,
) -> Result<Vec<JobOutcome>, sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *connection)
        .await?;
    let data_version: i64 = sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(&mut *connection)
        .await?;
    if known.data_version != Some(data_version) {
        known.forget();
    }
    let last_position = match known.last_position {
        Some(position) => position,
        None => {
            sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events")
                .fetch_one(&mut *connection)
                .await?
        }
    };
    let mut state = BatchState {
        known,
        last_position,
        batch_heads: HashMap::new(),
        job_heads: HashMap::new(),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        let job_start = state.last_position;
        let outcome = run_job(connection, job, &mut state).await?;
        let job_heads = std::mem::take(&mut state.job_heads);
        if outcome.is_ok() {
            state.batch_heads.extend(job_heads);
        } else {
            // Its savepoint was rolled back (or it wrote nothing).
            state.last_position = job_start;
        }
        outcomes.push(outcome);
    }
    sqlx::query("COMMIT").execute(&mut *connection).await?;
    let BatchState {
        known,
        last_position,
        batch_heads,
        ..
    } = state;
    if known.heads.len() + batch_heads.len() > MAX_KNOWN_HEADS {
        known.heads.clear();
    }
    known.heads.extend(batch_heads);
    known.last_position = Some(last_position);
    known.data_version = Some(data_version);
    Ok(outcomes)
}

/// Runs one job inside its own savepoint when it has more than one statement that writes.
async fn run_job(
    connection: &mut SqliteConnection,
    job: &WriteJob,
    state: &mut BatchState<'_>,
) -> Result<JobOutcome, sqlx::Error> {
    let needs_savepoint = job.requests.len() > 1
        || job.snapshot.is_some()
        || job
            .requests
            .iter()
            .any(|request| request.events.len() > ROWS_PER_INSERT);
    if needs_savepoint {
        sqlx::query("SAVEPOINT append_job")
            .execute(&mut *connection)
            .await?;
    }
    let outcome = run_job_steps(connection, job, state).await?;
    if needs_savepoint {
        if outcome.is_err() {
            sqlx::query("ROLLBACK TO append_job")
                .execute(&mut *connection)
                .await?;
        }
        sqlx::query("RELEASE append_job")
            .execute(&mut *connection)
            .await?;
    }
    Ok(outcome)
}

async fn run_job_steps(
    connection: &mut SqliteConnection,
    job: &WriteJob,
    state: &mut BatchState<'_>,
) -> Result<JobOutcome, sqlx::Error> {
    let mut results = Vec::with_capacity(job.requests.len());
    for request in &job.requests {
        match append_one(connection, request, state).await? {
            Ok(result) => results.push(result),
            Err(error) => return Ok(Err(error)),
        }
    }
    // Requests without events go along with the others.
    let mut n_duplicates = 0;
    let mut n_appended = 0;
    let mut first_duplicate_id = None;
    for (request, result) in job.requests.iter().zip(&results) {
        if request.events.is_empty() {
            continue;
        }
        if result.duplicate {
            n_duplicates += 1;
            first_duplicate_id =
                first_duplicate_id.or(request.events.first().map(|event| event.event_id));
        } else {
            n_appended += 1;
        }
    }
    if let (true, Some(event_id)) = (n_appended > 0, first_duplicate_id) {
        return Ok(Err(StoreError::EventIdReused { event_id }));
    }
    if n_duplicates == 0
        && let Some(snapshot) = &job.snapshot
    {
        upsert_snapshot(connection, snapshot).await?;
    }
    Ok(Ok(results))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error) if database_error.is_unique_violation())
}

/// Appends one request inside the open transaction (the writer holds the write lock, so what
/// it reads cannot change before it writes).
async fn append_one(
    connection: &mut SqliteConnection,
    request: &AppendRequest,
    state: &mut BatchState<'_>,
) -> Result<Result<AppendResult, StoreError>, sqlx::Error> {
    if request.events.is_empty() {
        let current_version = current_version(connection, request).await?;
        if !request.expected.is_satisfied_by(current_version) {
            return Ok(Err(request.conflict(current_version)));
        }
        return Ok(Ok(AppendResult {
            positions: Vec::new(),
            stream_version: current_version,
            duplicate: false,
        }));
    }
    if request.events.len() > ROWS_PER_INSERT {
        return append_in_chunks(connection, request, state).await;
    }
    // The common case: one statement checks the version and inserts.
    loop {
        let mut head = match state.head_of(request) {
            Some((version, hash)) => ChainHead {
                version,
                hash,
                last_position: state.last_position,
            },
            // A stream the request says is new, and the writer knows nothing of: it is taken at
            // its word, without a read. The insert's guard checks it; if the stream exists
            // after all, nothing is inserted, and the request is judged from the table below.
            None if request.expected.required_version() == Some(0) => ChainHead {
                version: 0,
                hash: ZERO_HASH,
                last_position: state.last_position,
            },
            None => read_head(connection, request, state).await?,
        };
        if request.expected.is_satisfied_by(head.version) {
            match insert_guarded(connection, request, &mut head).await {
                Ok(Some(result)) => {
                    state.appended(request, &head);
                    return Ok(Ok(result));
                }
                // The stream is not at the version the head says, or a unique index refused
                // a row (an id is stored already).
                Ok(None) => {}
                Err(error) if is_unique_violation(&error) => {}
                Err(error) => return Err(error),
            }
        }
        // A head the writer remembered is read again from the table once; a head read from the
        // table means the append is refused or a duplicate, judged below.
        if !state.forget_stream(request) {
            break;
        }
    }
    let current_version = current_version(connection, request).await?;
    let stored = stored_ids(connection, request).await?;
    Ok(judged(request, &stored, current_version))
}

async fn current_version(
    connection: &mut SqliteConnection,
    request: &AppendRequest,
) -> Result<u64, sqlx::Error> {
    let current_version: Option<i64> = sqlx::query_scalar(
        "SELECT stream_version FROM events WHERE stream_type = ? AND stream_id = ? \
         ORDER BY stream_version DESC LIMIT 1",
    )
    .bind(&request.stream_type)
    .bind(&request.stream_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(u64::try_from(current_version.unwrap_or(0)).unwrap_or(0))
}

/// What the next events of a stream chain to, read inside the writer's transaction (so it sees
/// the earlier jobs of the same group commit): the stream's version and last hash, and the last
/// position of the log (the writer gives positions explicitly, since they are hashed).
#[derive(Debug)]
struct ChainHead {
    version: u64,
    hash: Hash,
    last_position: i64,
}

/// The stream's head read from the table (inside the writer's transaction).
async fn read_head(
    connection: &mut SqliteConnection,
    request: &AppendRequest,
    state: &BatchState<'_>,
) -> Result<ChainHead, sqlx::Error> {
    let row = sqlx::query(
        "SELECT stream_version, hash FROM events WHERE stream_type = ?1 AND stream_id = ?2 \
         ORDER BY stream_version DESC LIMIT 1",
    )
    .bind(&request.stream_type)
    .bind(&request.stream_id)
    .fetch_optional(&mut *connection)
    .await?;
    let (version, hash) = match row {
        Some(row) => {
            let version: i64 = row.try_get(0)?;
            let hash: Option<Vec<u8>> = row.try_get(1)?;
            (version, hash)
        }
        None => (0, None),
    };
    Ok(ChainHead {
        version: u64::try_from(version).unwrap_or(0),
        hash: hash
            .and_then(|hash| Hash::try_from(hash.as_slice()).ok())
            .unwrap_or(ZERO_HASH),
        last_position: state.last_position,
    })
}

/// The stored text of an event's id and time, its position and its chain hash.
#[derive(Debug)]
struct Chained {
    event_id: String,
    occurred_at: String,
    position: i64,
    hash: Vec<u8>,
}

/// Chains `events` as versions `head.version + 1 ..` at positions `head.last_position + 1 ..`,
/// and moves `head` past them.
fn chain_events(
    request: &AppendRequest,
    events: &[schemas::NewEvent],
    head: &mut ChainHead,
) -> Vec<Chained> {
    let mut buffer = Vec::with_capacity(1024);
    events
        .iter()
        .map(|event| {
            head.version += 1;
            head.last_position += 1;
            let event_id = event.event_id.to_string();
            let occurred_at = format_timestamp(&event.occurred_at);
            let hash = audit::event_hash_with(
                &head.hash,
                &CanonicalEvent {
                    position: u64::try_from(head.last_position).unwrap_or(0),
                    event_id: &event_id,
                    stream_type: &request.stream_type,
                    stream_id: &request.stream_id,
                    stream_version: head.version,
                    event_type: &event.event_type,
                    schema_version: i64::from(event.schema_version),
                    occurred_at: &occurred_at,
                    correlation_id: &event.metadata.correlation_id,
                    causation_id: &event.metadata.causation_id,
                    saga_id: event.metadata.saga_id.as_deref(),
                    actor: &event.metadata.actor,
                    source: &event.metadata.source,
                    payload: event.payload.get(),
                },
                &mut buffer,
            );
            head.hash = hash;
            Chained {
                event_id,
                occurred_at,
                position: head.last_position,
                hash: hash.to_vec(),
            }
        })
        .collect()
}

/// The insert statement for `n_rows` events (at most [`ROWS_PER_INSERT`]), built once per row
/// count: it inserts them all if the stream is at version ?3 (the version their hashes chain
/// to), else nothing. ?1 stream_type, ?2 stream_id, then 13 parameters per event.
fn guarded_insert_sql(n_rows: usize) -> std::borrow::Cow<'static, str> {
    static BY_ROW_COUNT: [std::sync::OnceLock<String>; ROWS_PER_INSERT + 1] =
        [const { std::sync::OnceLock::new() }; ROWS_PER_INSERT + 1];
    match BY_ROW_COUNT.get(n_rows) {
        Some(statement) => statement
            .get_or_init(|| build_guarded_insert_sql(n_rows))
            .into(),
        // Callers split larger requests; a larger one is still correct, only not cached.
        None => build_guarded_insert_sql(n_rows).into(),
    }
}

fn build_guarded_insert_sql(n_rows: usize) -> String {
    let rows: Vec<String> = (0..n_rows)
        .map(|row_index| {
            let first = 4 + row_index * 13;
            let parameters: Vec<String> = (first..first + 13)
                .map(|parameter| format!("?{parameter}"))
                .collect();
            format!("({}, {})", row_index + 1, parameters.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, \
         schema_version, occurred_at, correlation_id, causation_id, saga_id, actor, source, \
         payload, position, hash, trace_context) \
         SELECT input.column2, ?1, ?2, seen.current_version + input.column1, input.column3, \
         input.column4, input.column5, input.column6, input.column7, input.column8, \
         input.column9, input.column10, input.column11, input.column12, input.column13, \
         input.column14 \
         FROM (SELECT COALESCE((SELECT stream_version FROM events \
         WHERE stream_type = ?1 AND stream_id = ?2 ORDER BY stream_version DESC LIMIT 1), 0) \
         AS current_version) AS seen, (VALUES {}) AS input \
         WHERE seen.current_version = ?3 \
         RETURNING position, stream_version",
        rows.join(", ")
    )
}

/// Inserts every event of `request` as the versions after `head` if the stream is at `head`'s
/// version; `None` if not. The hashes chain to `head`, and `head` moves past the events (the
/// caller keeps it only if they were inserted).
async fn insert_guarded(
    connection: &mut SqliteConnection,
    request: &AppendRequest,
    head: &mut ChainHead,
) -> Result<Option<AppendResult>, sqlx::Error> {
    let statement = guarded_insert_sql(request.events.len());
    let head_version = to_i64(head.version);
    let chained = chain_events(request, &request.events, head);
    let mut query = sqlx::query(&statement)
        .bind(request.stream_type.as_str())
        .bind(request.stream_id.as_str())
        .bind(head_version);
    for (event, chained) in request.events.iter().zip(&chained) {
        query = query
            .bind(chained.event_id.as_str())
            .bind(event.event_type.as_str())
            .bind(i64::from(event.schema_version))
            .bind(chained.occurred_at.as_str())
            .bind(event.metadata.correlation_id.as_str())
            .bind(event.metadata.causation_id.as_str())
            .bind(event.metadata.saga_id.as_deref())
            .bind(event.metadata.actor.as_str())
            .bind(event.metadata.source.as_str())
            .bind(event.payload.get())
            .bind(chained.position)
            .bind(chained.hash.as_slice())
            .bind(event.metadata.stored_trace_context());
    }
    let rows = query.fetch_all(&mut *connection).await?;
    if rows.len() != request.events.len() {
        return Ok(None);
    }
    let inserted = rows
        .iter()
        .map(|row| Ok((row.try_get("stream_version")?, row.try_get("position")?)))
        .collect::<Result<Vec<(i64, i64)>, sqlx::Error>>()?;
    Ok(Some(AppendResult::from_inserted_rows(inserted)))
}

/// Appends a request too large for one statement, chunk by chunk (inside the job's savepoint).
async fn append_in_chunks(
    connection: &mut SqliteConnection,
    request: &AppendRequest,
    state: &mut BatchState<'_>,
) -> Result<Result<AppendResult, StoreError>, sqlx::Error> {
    // Read from the table: a large append is rare, and its version check is done here.
    state.forget_stream(request);
    let mut head = read_head(connection, request, state).await?;
    let current_version = head.version;
    // Look for stored ids first, so that a unique violation half-way cannot be mistaken for a
    // duplicate of this request's own first rows.
    let stored = stored_ids(connection, request).await?;
    if !request.expected.is_satisfied_by(current_version) || !stored.is_empty() {
        return Ok(judged(request, &stored, current_version));
    }
    let mut positions = Vec::with_capacity(request.events.len());
    for (chunk_index, chunk) in request.events.chunks(ROWS_PER_INSERT).enumerate() {
        let first_version = current_version + 1 + (chunk_index * ROWS_PER_INSERT) as u64;
        let chained = chain_events(request, chunk, &mut head);
        match insert_chunk(connection, request, chunk, &chained, first_version).await {
            Ok(chunk_positions) => positions.extend(chunk_positions),
            Err(error) if is_unique_violation(&error) => {
                return Ok(Err(request.conflict(current_version)));
            }
            Err(error) => return Err(error),
        }
    }
    state.appended(request, &head);
    Ok(Ok(AppendResult {
        positions,
        stream_version: current_version + request.events.len() as u64,
        duplicate: false,
    }))
}

fn judged(
    request: &AppendRequest,
    stored: &[StoredId],
    current_version: u64,
) -> Result<AppendResult, StoreError> {
    match verdict::judge(request, stored, current_version) {
        Verdict::Duplicate(result) => Ok(result),
        Verdict::Refused(error) => Err(error),
        Verdict::Appendable => Err(request.conflict(current_version)),
    }
}

async fn insert_chunk(
    connection: &mut SqliteConnection,
    request: &AppendRequest,
    chunk: &[schemas::NewEvent],
    chained: &[Chained],
    first_version: u64,
) -> Result<Vec<u64>, sqlx::Error> {
    let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, \
         schema_version, occurred_at, correlation_id, causation_id, saga_id, actor, source, \
         payload, position, hash, trace_context) ",
    );
    let rows = chunk.iter().zip(chained).enumerate();
    builder.push_values(rows, |mut row, (event_index, (event, chained))| {
        row.push_bind(chained.event_id.as_str())
            .push_bind(request.stream_type.as_str())
            .push_bind(request.stream_id.as_str())
            .push_bind(to_i64(first_version + event_index as u64))
            .push_bind(event.event_type.as_str())
            .push_bind(i64::from(event.schema_version))
            .push_bind(chained.occurred_at.as_str())
            .push_bind(event.metadata.correlation_id.as_str())
            .push_bind(event.metadata.causation_id.as_str())
            .push_bind(event.metadata.saga_id.as_deref())
            .push_bind(event.metadata.actor.as_str())
            .push_bind(event.metadata.source.as_str())
            .push_bind(event.payload.get())
            .push_bind(chained.position)
            .push_bind(chained.hash.as_slice())
            .push_bind(event.metadata.stored_trace_context());
    });
    builder.push(" RETURNING position, stream_version");
    let rows = builder.build().fetch_all(&mut *connection).await?;
    let mut inserted = Vec::with_capacity(rows.len());
    for row in &rows {
        let position: i64 = row.try_get("position")?;
        let stream_version: i64 = row.try_get("stream_version")?;
        inserted.push((stream_version, position));
    }
    inserted.sort_unstable();
    Ok(inserted
        .into_iter()
        .map(|(_, position)| u64::try_from(position).unwrap_or(0))
        .collect())
}

async fn stored_ids(
    connection: &mut SqliteConnection,
    request: &AppendRequest,
) -> Result<Vec<StoredId>, sqlx::Error> {
    let mut stored = Vec::new();
    let event_ids = request.event_ids();
    for chunk in event_ids.chunks(IDS_PER_QUERY) {
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT event_id, stream_type, stream_id, stream_version, position FROM events \
             WHERE event_id IN ",
        );
        builder.push_tuples(chunk, |mut tuple, event_id| {
            tuple.push_bind(event_id.to_string());
        });
        let rows = builder.build().fetch_all(&mut *connection).await?;
        for row in &rows {
            let position: i64 = row.try_get("position")?;
            let event_id: String = row.try_get("event_id")?;
            let stream_version: i64 = row.try_get("stream_version")?;
            stored.push(StoredId {
                event_id: parse_uuid(&event_id, position)
                    .map_err(|error| sqlx::Error::Decode(error.into()))?,
                stream_type: row.try_get("stream_type")?,
                stream_id: row.try_get("stream_id")?,
                stream_version: to_u64(stream_version, "stream_version")
                    .map_err(|error| sqlx::Error::Decode(error.into()))?,
                position: to_u64(position, "position")
                    .map_err(|error| sqlx::Error::Decode(error.into()))?,
            });
        }
    }
    Ok(stored)
}

async fn upsert_snapshot(
    connection: &mut SqliteConnection,
    snapshot: &Snapshot,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO snapshots (stream_type, stream_id, version, state, taken_at) \
         VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (stream_type, stream_id) DO UPDATE \
         SET version = excluded.version, state = excluded.state, taken_at = excluded.taken_at \
         WHERE snapshots.version <= excluded.version",
    )
    .bind(&snapshot.stream_type)
    .bind(&snapshot.stream_id)
    .bind(to_i64(snapshot.version))
    .bind(snapshot.state.get())
    .bind(format_timestamp(&Utc::now()))
    .execute(&mut *connection)
    .await?;
    Ok(())
}
