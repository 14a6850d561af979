//! The PostgreSQL adapter: concurrent appenders, a global position no reader can skip.
//!
//! How the position works and why it is correct is written down in this crate's README.md
//! ("PostgreSQL: the global position"). In short: an event's position is
//! `(transaction id << 20) + index within the transaction`, and readers only read below
//! `xmin << 20`, where xmin is the oldest transaction still running; below that bound nothing
//! can appear any more.

mod chain;
mod committer;
mod reader;
mod rows;
mod sql;
mod subscription;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemas::RecordedEvent;
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{
    AppendRequest, AppendResult, Backend, DEFAULT_BATCH_SIZE, EventStore, Snapshot, Subscription,
    SubscriptionSource,
};
use crate::verdict::{self, Decision, StoredId, Verdict};
use rows::{EventColumns, to_i64, to_u64};
use sql::READ_PAGE_PENDING_COLUMN;
pub use sql::{CHANNEL, MAX_EVENTS_PER_TRANSACTION};
pub(crate) use subscription::PgSubscription;

/// How often an append that lost a race (or found its transaction id too old for the stream)
/// is tried again before the caller gets [`StoreError::Conflict`].
const MAX_APPEND_ATTEMPTS: usize = 16;

/// How long the notifier lets commits gather before it sends one NOTIFY for all of them
/// (other processes' subscribers learn of a commit this much later; this process's own
/// subscriptions are woken at once).
const NOTIFY_GATHER: Duration = Duration::from_millis(2);

/// How long the listener task waits before listening again after PostgreSQL refused it.
const LISTENER_RETRY: Duration = Duration::from_secs(1);

/// Connection settings of [`PgEventStore`].
#[derive(Clone, Debug)]
pub struct PgStoreOptions {
    /// The most connections the store opens (appends, reads, and one per store for LISTEN).
    pub max_connections: u32,
    /// How long an operation waits for a free connection before it fails.
    pub acquire_timeout: Duration,
    /// How many group commits of concurrent appends can be in flight at once (at least 1):
    /// each committer appends whatever single-stream appends are queued in one statement.
    pub committers: usize,
    /// Whether an append made while no other append of this store is in flight runs its own
    /// statement from the caller's task, sparing it the hop to a committer (nothing could be
    /// committed with it anyway). Off, every append goes through the committers.
    pub direct_appends: bool,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 32,
            acquire_timeout: Duration::from_secs(10),
            committers: committer::DEFAULT_COMMITTERS,
            direct_appends: true,
        }
    }
}

/// The event store on PostgreSQL. Cheap to clone: clones share one pool.
#[derive(Clone, Debug)]
pub struct PgEventStore {
    inner: Arc<PgInner>,
}

#[derive(Debug)]
struct PgInner {
    pool: PgPool,
    /// Bumped whenever new events may be readable: by this store's own commits and by the
    /// listener task on every notification. Subscriptions wait on it.
    wake: Arc<watch::Sender<u64>>,
    /// Bumped after each commit of this store; the notifier task then sends one NOTIFY for
    /// however many commits happened meanwhile.
    notify_request: watch::Sender<u64>,
    listener: tokio::sync::Mutex<Option<ListenerTask>>,
    /// Where [`EventStore::append`] queues its requests for the committer tasks. Dropped with
    /// the store, which stops them.
    appends: mpsc::UnboundedSender<committer::PendingAppend>,
    /// Counts stream reads in flight: beyond a few, reads are batched.
    read_gate: reader::Gate,
    /// Counts appends in flight: a lone one runs directly (see [`PgStoreOptions::direct_appends`]).
    append_gate: reader::Gate,
    /// Where [`EventStore::read_stream`] queues reads for the reader tasks when many run at once.
    reads: mpsc::UnboundedSender<reader::PendingRead>,
}

#[derive(Debug)]
struct ListenerTask {
    handle: JoinHandle<()>,
    /// Dropped with the store, which stops the task.
    _shutdown: oneshot::Sender<()>,
}

/// The migrations of the PostgreSQL adapter. Other crates may keep their own migrations in the
/// same database: versions this migrator does not know are ignored.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator
}

impl PgEventStore {
    /// Connects with default options and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PgStoreOptions::default()).await
    }

    /// Connects and applies the migrations.
    pub async fn connect_with(url: &str, options: PgStoreOptions) -> Result<Self, StoreError> {
        // One direct connection first: an unreachable server or a refused login is reported with
        // its own reason at once, not as a pool timeout after `acquire_timeout`.
        let probe = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        let _ = sqlx::Connection::close(probe).await;
        // No ping before each use of a pooled connection: it cost one round trip per
        // statement. A connection the server dropped fails the one statement that uses it (an
        // `unavailable` error callers retry) and is then discarded by the pool.
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect(url)
            .await?;
        let store = Self::start(pool, &options);
        store.migrate().await?;
        Ok(store)
    }

    /// Wraps an existing pool (migrations are not applied; see [`PgEventStore::migrate`]).
    /// Must be called inside a tokio runtime: it starts the task that notifies other processes
    /// of this store's commits and the tasks that group-commit appends.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::start(pool, &PgStoreOptions::default())
    }

    fn start(pool: PgPool, options: &PgStoreOptions) -> Self {
        let (notify_request, notify_requests) = watch::channel(0);
        tokio::spawn(run_notifier(pool.clone(), notify_requests));
        let (appends, incoming) = mpsc::unbounded_channel();
        let (reads, incoming_reads) = mpsc::unbounded_channel();
        let inner = Arc::new(PgInner {
            pool,
            wake: Arc::new(watch::channel(0).0),
            notify_request,
            listener: tokio::sync::Mutex::new(None),
            appends,
            read_gate: reader::Gate::new(reader::DIRECT_READS),
            append_gate: reader::Gate::new(usize::from(options.direct_appends)),
            reads,
        });
        let read_queue = Arc::new(tokio::sync::Mutex::new(incoming_reads));
        for _ in 0..reader::READERS {
            tokio::spawn(reader::run_reader(
                Arc::downgrade(&inner),
                read_queue.clone(),
            ));
        }
        let queue = Arc::new(tokio::sync::Mutex::new(committer::AppendQueue::new(
            incoming,
        )));
        for _ in 0..options.committers.max(1) {
            tokio::spawn(committer::run_committer(
                Arc::downgrade(&inner),
                queue.clone(),
            ));
        }
        Self { inner }
    }

    /// Applies the adapter's migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator().run(&self.inner.pool).await?;
        Ok(())
    }

    /// How many stream reads were answered by a statement shared with other reads so far (a
    /// measure of read concurrency; see `reader.rs`).
    pub fn batched_stream_reads(&self) -> u64 {
        self.inner
            .read_gate
            .n_batched
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The connection pool, for callers that append inside their own transaction.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Appends inside the caller's transaction: the events become visible when, and only if,
    /// the caller commits. Several appends in one transaction get consecutive positions.
    ///
    /// Notifies subscribers inside the transaction (delivered at commit). PostgreSQL serialises
    /// the commits of transactions that notify, so the store's own appends notify after their
    /// commit instead; use this for appends that must share a transaction with other writes.
    ///
    /// Refusals that the store detects before writing (stream at another version, ids already
    /// stored) leave the transaction usable. If a concurrent writer wins a race for the same
    /// stream version or event id, PostgreSQL aborts the transaction: the answer is then
    /// [`StoreError::Conflict`] and the caller must roll back.
    pub async fn append_in_transaction(
        &self,
        transaction: &mut Transaction<'_, Postgres>,
        request: AppendRequest,
    ) -> Result<AppendResult, StoreError> {
        request.validate()?;
        check_size(request.events.len())?;
        let columns = EventColumns::of(&request);
        let connection: &mut PgConnection = transaction;
        match insert(connection, &request, &columns).await {
            Ok(Inserted::Appended(result)) => {
                if !result.positions.is_empty() {
                    sqlx::query(sql::NOTIFY)
                        .bind(CHANNEL)
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(result)
            }
            Ok(Inserted::Refused(seen)) => {
                seen.check_room(request.events.len())?;
                match judge(connection, &request).await? {
                    Verdict::Duplicate(result) => Ok(result),
                    Verdict::Refused(error) => Err(error),
                    // The stream moved on after this transaction took its id (see sql::APPEND).
                    Verdict::Appendable => Err(request.conflict(seen.current_version)),
                }
            }
            Err(error) if is_unique_violation(&error) => {
                let mut connection = self.inner.pool.acquire().await?;
                match judge(&mut connection, &request).await? {
                    Verdict::Refused(error) => Err(error),
                    Verdict::Duplicate(_) | Verdict::Appendable => {
                        let actual = stream_version(
                            &mut connection,
                            &request.stream_type,
                            &request.stream_id,
                        )
                        .await?;
                        Err(request.conflict(actual))
                    }
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Appends one request in one statement, outside any explicit transaction.
    async fn append_alone(&self, request: &AppendRequest) -> Result<AppendResult, StoreError> {
        if request.events.is_empty() {
            let mut connection = self.inner.pool.acquire().await?;
            let current_version =
                stream_version(&mut connection, &request.stream_type, &request.stream_id).await?;
            if !request.expected.is_satisfied_by(current_version) {
                return Err(request.conflict(current_version));
            }
            return Ok(AppendResult {
                positions: Vec::new(),
                stream_version: current_version,
                duplicate: false,
            });
        }
        let mut connection = self.inner.pool.acquire().await?;
        self.append_alone_on(&mut connection, request, false).await
    }

    /// Finishes a request the batch statement did not append (its stream was at another
    /// version when the statement looked): judged like a refused lone append, then appended
    /// alone if nothing stands in the way any more.
    async fn settle_refused(
        &self,
        connection: &mut PgConnection,
        request: &AppendRequest,
    ) -> Result<AppendResult, StoreError> {
        self.append_alone_on(connection, request, true).await
    }

    /// The lone append statement on `connection`, tried again while a concurrent writer wins
    /// the race for the next version of an `Any` append. With `judge_first` it starts by
    /// judging why an earlier statement did not append the request.
    async fn append_alone_on(
        &self,
        connection: &mut PgConnection,
        request: &AppendRequest,
        mut judge_first: bool,
    ) -> Result<AppendResult, StoreError> {
        let columns = if request.events.len() > sql::VALUES_MAX_ROWS {
            Some(EventColumns::of(request))
        } else {
            None
        };
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            let inserted = if judge_first {
                judge_first = false;
                Ok(None)
            } else {
                insert_alone(&mut *connection, request, columns.as_ref()).await
            };
            let verdict = match inserted {
                Ok(Some(result)) => {
                    self.announce_commit();
                    return Ok(result);
                }
                Ok(None) => judge(&mut *connection, request).await?,
                Err(error) if is_unique_violation(&error) => {
                    judge(&mut *connection, request).await?
                }
                Err(error) => return Err(error.into()),
            };
            match verdict {
                Verdict::Duplicate(result) => return Ok(result),
                Verdict::Refused(error) => return Err(error),
                // A concurrent writer won the race for the next version (expected: any).
                Verdict::Appendable => back_off(attempt).await,
            }
        }
        let current_version =
            stream_version(&mut *connection, &request.stream_type, &request.stream_id).await?;
        Err(request.conflict(current_version))
    }

    /// Appends several requests (and maybe a snapshot) in one transaction.
    async fn append_in_new_transaction(
        &self,
        requests: &[AppendRequest],
        snapshot: Option<&Snapshot>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        for request in requests {
            request.validate()?;
        }
        check_size(requests.iter().map(|request| request.events.len()).sum())?;
        let columns = requests.iter().map(EventColumns::of).collect::<Vec<_>>();
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            let mut transaction = self.inner.pool.begin().await?;
            let mut results = Vec::with_capacity(requests.len());
            let mut refused = false;
            for (request, columns) in requests.iter().zip(&columns) {
                match insert(&mut transaction, request, columns).await {
                    Ok(Inserted::Appended(result)) => results.push(result),
                    Ok(Inserted::Refused(seen)) => {
                        seen.check_room(request.events.len())?;
                        refused = true;
                        break;
                    }
                    Err(error) if is_unique_violation(&error) => {
                        refused = true;
                        break;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            if !refused {
                if let Some(snapshot) = snapshot {
                    upsert_snapshot(&mut transaction, snapshot).await?;
                }
                transaction.commit().await?;
                if results.iter().any(|result| !result.positions.is_empty()) {
                    self.announce_commit();
                }
                return Ok(results);
            }
            transaction.rollback().await?;
            let mut connection = self.inner.pool.acquire().await?;
            let mut verdicts = Vec::with_capacity(requests.len());
            for request in requests {
                verdicts.push(judge(&mut connection, request).await?);
            }
            match verdict::decide(requests, verdicts) {
                Decision::Duplicates(results) => return Ok(results),
                Decision::Refused(error) => return Err(error),
                Decision::Retry => back_off(attempt).await,
            }
        }
        let mut connection = self.inner.pool.acquire().await?;
        match requests.first() {
            Some(request) => {
                let actual =
                    stream_version(&mut connection, &request.stream_type, &request.stream_id)
                        .await?;
                Err(request.conflict(actual))
            }
            None => Ok(Vec::new()),
        }
    }

    /// Wakes this process's subscriptions and asks the notifier to tell other processes.
    fn announce_commit(&self) {
        self.inner
            .wake
            .send_modify(|counter| *counter = counter.wrapping_add(1));
        self.inner
            .notify_request
            .send_modify(|counter| *counter = counter.wrapping_add(1));
    }

    /// One page of the global log below the horizon, and whether committed events wait above it.
    pub(crate) async fn read_page(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, bool), StoreError> {
        let rows = sqlx::query(sql::READ_PAGE)
            .bind(to_i64(after_position))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await?;
        let mut pending = false;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            pending = row.try_get(READ_PAGE_PENDING_COLUMN)?;
            let position: Option<i64> = row.try_get(0)?;
            if position.is_some() {
                events.push(rows::recorded_event(row)?);
            }
        }
        // The statement promises no order; the rows nearly always come in order already, for
        // which this sort is one linear pass.
        events.sort_by_key(|event| event.position);
        Ok((events, pending))
    }

    /// Makes sure the task that LISTENs for other processes' commits runs.
    async fn ensure_listener(&self) -> Result<(), StoreError> {
        let mut listener_task = self.inner.listener.lock().await;
        if listener_task
            .as_ref()
            .is_some_and(|task| !task.handle.is_finished())
        {
            return Ok(());
        }
        let mut listener = PgListener::connect_with(&self.inner.pool).await?;
        listener.listen(CHANNEL).await?;
        let (shutdown, shutdown_signal) = oneshot::channel();
        let handle = tokio::spawn(run_listener(
            listener,
            self.inner.wake.clone(),
            shutdown_signal,
        ));
        *listener_task = Some(ListenerTask {
            handle,
            _shutdown: shutdown,
        });
        Ok(())
    }
}

fn check_size(n_events: usize) -> Result<(), StoreError> {
    if n_events > MAX_EVENTS_PER_TRANSACTION {
        return Err(StoreError::TooManyEvents {
            n_events,
            max_events: MAX_EVENTS_PER_TRANSACTION,
        });
    }
    Ok(())
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error) if database_error.is_unique_violation())
}

/// What the append statement saw when it refused to insert.
#[derive(Debug)]
struct Seen {
    current_version: u64,
    first_position: i64,
    xact_base: i64,
}

impl Seen {
    fn check_room(&self, n_events: usize) -> Result<(), StoreError> {
        let used = self.first_position.saturating_sub(self.xact_base);
        let room = i64::try_from(MAX_EVENTS_PER_TRANSACTION).unwrap_or(i64::MAX) - used;
        if i64::try_from(n_events).unwrap_or(i64::MAX) > room {
            return Err(StoreError::TooManyEvents {
                n_events: n_events + usize::try_from(used).unwrap_or(0),
                max_events: MAX_EVENTS_PER_TRANSACTION,
            });
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Inserted {
    Appended(AppendResult),
    Refused(Seen),
}

/// Runs the append statement for one request on `connection` (in whatever transaction it is).
async fn insert(
    connection: &mut PgConnection,
    request: &AppendRequest,
    columns: &EventColumns<'_>,
) -> Result<Inserted, sqlx::Error> {
    let required_version = request.expected.required_version().map_or(-1, to_i64);
    let query = sqlx::query(sql::APPEND)
        .bind(&request.stream_type)
        .bind(&request.stream_id)
        .bind(required_version);
    let row = columns.bind(query).fetch_one(&mut *connection).await?;
    let current_version: i64 = row.try_get("current_version")?;
    let current_version = u64::try_from(current_version).unwrap_or(0);
    let first_position: i64 = row.try_get("first_position")?;
    let xact_base: i64 = row.try_get("xact_base")?;
    let n_inserted: i64 = row.try_get("n_inserted")?;
    let n_events = request.events.len();
    let appended = if n_events == 0 {
        request.expected.is_satisfied_by(current_version)
    } else {
        usize::try_from(n_inserted).is_ok_and(|n_inserted| n_inserted == n_events)
    };
    if !appended {
        return Ok(Inserted::Refused(Seen {
            current_version,
            first_position,
            xact_base,
        }));
    }
    let first_position = u64::try_from(first_position).unwrap_or(0);
    Ok(Inserted::Appended(AppendResult {
        positions: (0..n_events as u64)
            .map(|event_index| first_position + event_index)
            .collect(),
        stream_version: current_version + n_events as u64,
        duplicate: false,
    }))
}

/// Runs the lean append statement for a request alone in its transaction (autocommit).
/// `None` when it inserted nothing (the stream is at another version).
async fn insert_alone(
    connection: &mut PgConnection,
    request: &AppendRequest,
    columns: Option<&EventColumns<'_>>,
) -> Result<Option<AppendResult>, sqlx::Error> {
    let n_events = request.events.len();
    let required_version = request.expected.required_version().map_or(-1, to_i64);
    let mut query = sqlx::query(sql::append_alone(n_events))
        .bind(&request.stream_type)
        .bind(&request.stream_id)
        .bind(required_version);
    match columns {
        Some(columns) => {
            query = columns.bind(query);
        }
        None => {
            for event in &request.events {
                query = query
                    .bind(event.event_id)
                    .bind(event.event_type.as_str())
                    .bind(rows::schema_version(event.schema_version))
                    .bind(event.occurred_at)
                    .bind(event.metadata.correlation_id.as_str())
                    .bind(event.metadata.causation_id.as_str())
                    .bind(event.metadata.saga_id.as_deref())
                    .bind(event.metadata.actor.as_str())
                    .bind(event.metadata.source.as_str())
                    .bind(event.payload.get())
                    .bind(event.metadata.stored_trace_context());
            }
        }
    }
    let rows = query.fetch_all(&mut *connection).await?;
    if rows.len() != n_events {
        return Ok(None);
    }
    let inserted = rows
        .iter()
        .map(|row| Ok((row.try_get("stream_version")?, row.try_get("position")?)))
        .collect::<Result<Vec<(i64, i64)>, sqlx::Error>>()?;
    Ok(Some(AppendResult::from_inserted_rows(inserted)))
}

/// Decides what a refused request is, from what `connection` sees now.
/// The pause before an append that lost the race for a stream's next version is tried again:
/// up to 0.2 ms after the first loss, doubling with each loss to 6.4 ms, and spread over that
/// range by the clock's nanoseconds, so that writers racing for one stream (each expecting any
/// version) stop colliding instead of losing together until their attempts run out.
async fn back_off(attempt: usize) {
    let ceiling_micros = 200u64 << attempt.min(5);
    let spread = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::from(since.subsec_nanos()));
    tokio::time::sleep(Duration::from_micros(spread % ceiling_micros)).await;
}

async fn judge(
    connection: &mut PgConnection,
    request: &AppendRequest,
) -> Result<Verdict, StoreError> {
    let stored = stored_ids(connection, &request.event_ids()).await?;
    let current_version =
        stream_version(connection, &request.stream_type, &request.stream_id).await?;
    Ok(verdict::judge(request, &stored, current_version))
}

async fn stored_ids(
    connection: &mut PgConnection,
    event_ids: &[Uuid],
) -> Result<Vec<StoredId>, StoreError> {
    if event_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sql::STORED_IDS)
        .bind(event_ids)
        .fetch_all(&mut *connection)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredId {
                event_id: row.try_get("event_id")?,
                stream_type: row.try_get("stream_type")?,
                stream_id: row.try_get("stream_id")?,
                stream_version: to_u64(row.try_get("stream_version")?, "stream_version")?,
                position: to_u64(row.try_get("position")?, "position")?,
            })
        })
        .collect()
}

async fn stream_version(
    connection: &mut PgConnection,
    stream_type: &str,
    stream_id: &str,
) -> Result<u64, StoreError> {
    let version: i64 = sqlx::query_scalar(sql::STREAM_VERSION)
        .bind(stream_type)
        .bind(stream_id)
        .fetch_one(&mut *connection)
        .await?;
    to_u64(version, "stream_version")
}

async fn upsert_snapshot(
    connection: &mut PgConnection,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    sqlx::query(sql::UPSERT_SNAPSHOT)
        .bind(&snapshot.stream_type)
        .bind(&snapshot.stream_id)
        .bind(to_i64(snapshot.version))
        .bind(snapshot.state.get())
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Sends one NOTIFY after each burst of commits, outside any append transaction.
///
/// PostgreSQL serialises the commits of transactions that issued NOTIFY (a global lock held
/// from before the commit record until after it), which would cap append throughput at one
/// commit flush at a time; notifying afterwards, coalesced, keeps commits concurrent. If the
/// process dies between a commit and its NOTIFY, other processes' subscribers still find the
/// events at their next safety poll.
async fn run_notifier(pool: PgPool, mut notify_requests: watch::Receiver<u64>) {
    while notify_requests.changed().await.is_ok() {
        // Let the commits of a burst gather: one NOTIFY wakes every listener for all of them.
        tokio::time::sleep(NOTIFY_GATHER).await;
        notify_requests.borrow_and_update();
        if let Err(error) = sqlx::query(sql::NOTIFY).bind(CHANNEL).execute(&pool).await {
            tracing::warn!(%error, "event store could not notify subscribers of new events");
        }
    }
}

/// Turns notifications from any process into wake-ups of this store's subscriptions.
async fn run_listener(
    mut listener: PgListener,
    wake: Arc<watch::Sender<u64>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let bump = |counter: &mut u64| *counter = counter.wrapping_add(1);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            received = listener.try_recv() => match received {
                Ok(Some(_notification)) => {
                    while listener.next_buffered().is_some() {}
                    wake.send_modify(bump);
                }
                // The connection was lost and is being re-established: notifications may have
                // been lost with it, so let subscriptions read again.
                Ok(None) => wake.send_modify(bump),
                Err(error) => {
                    tracing::warn!(%error, "event store lost its LISTEN connection, retrying");
                    wake.send_modify(bump);
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(LISTENER_RETRY) => {}
                    }
                }
            }
        }
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        request.validate()?;
        check_size(request.events.len())?;
        if request.events.is_empty() {
            // Nothing to write: only the version check, which needs no commit.
            return self.append_alone(&request).await;
        }
        let in_flight = self.inner.append_gate.enter();
        if in_flight.direct {
            return self.append_alone(&request).await;
        }
        let (answer, answered) = oneshot::channel();
        let pending = committer::PendingAppend { request, answer };
        if let Err(mpsc::error::SendError(pending)) = self.inner.appends.send(pending) {
            // The committers are gone (the runtime that started them has shut down): append
            // from here.
            return self.append_alone(&pending.request).await;
        }
        answered.await.map_err(|_| StoreError::Closed)?
    }

    async fn append_atomic(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        if let [request] = requests.as_slice() {
            request.validate()?;
            check_size(request.events.len())?;
            return Ok(vec![self.append_alone(request).await?]);
        }
        self.append_in_new_transaction(&requests, None).await
    }

    async fn append_with_snapshot(
        &self,
        request: AppendRequest,
        snapshot: Snapshot,
    ) -> Result<AppendResult, StoreError> {
        let mut results = self
            .append_in_new_transaction(std::slice::from_ref(&request), Some(&snapshot))
            .await?;
        results.pop().ok_or(StoreError::CommitFailed(
            "the transaction returned no result".to_owned(),
        ))
    }

    async fn read_stream(
        &self,
        stream_type: &str,
        stream_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let in_flight = self.inner.read_gate.enter();
        if in_flight.direct {
            return reader::read_one(&self.inner, stream_type, stream_id, after_version, limit)
                .await;
        }
        let (answer, answered) = oneshot::channel();
        let pending = reader::PendingRead {
            stream_type: stream_type.to_owned(),
            stream_id: stream_id.to_owned(),
            after_version,
            limit,
            answer,
        };
        if self.inner.reads.send(pending).is_err() {
            return Err(StoreError::Closed);
        }
        answered.await.unwrap_or(Err(StoreError::Closed))
    }

    async fn stream_version(&self, stream_type: &str, stream_id: &str) -> Result<u64, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        stream_version(&mut connection, stream_type, stream_id).await
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self.read_page(after_position, limit).await?.0)
    }

    async fn read_correlated(
        &self,
        correlation_id: &str,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(sql::READ_CORRELATED)
            .bind(correlation_id)
            .bind(to_i64(after_position))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter().map(rows::recorded_event).collect()
    }

    async fn read_chain(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::ChainRow>, StoreError> {
        chain::read_chain(&self.inner.pool, after_position, limit).await
    }

    async fn read_stream_chain(
        &self,
        stream_type: &str,
        stream_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::ChainRow>, StoreError> {
        chain::read_stream_chain(
            &self.inner.pool,
            stream_type,
            stream_id,
            after_version,
            limit,
        )
        .await
    }

    async fn audit_checkpoints(&self) -> Result<Vec<crate::audit::Checkpoint>, StoreError> {
        chain::audit_checkpoints(&self.inner.pool).await
    }

    async fn last_audit_checkpoint(&self) -> Result<Option<crate::audit::Checkpoint>, StoreError> {
        chain::last_audit_checkpoint(&self.inner.pool).await
    }

    async fn sealed_heads(
        &self,
        stream: Option<(&str, &str)>,
    ) -> Result<Vec<crate::audit::SealedHead>, StoreError> {
        chain::sealed_heads(&self.inner.pool, stream).await
    }

    async fn write_audit_seal(
        &self,
        expected_last: Option<u64>,
        checkpoints: Vec<crate::audit::Checkpoint>,
        heads: Vec<crate::audit::SealedHead>,
    ) -> Result<bool, StoreError> {
        chain::write_audit_seal(&self.inner.pool, expected_last, checkpoints, heads).await
    }

    async fn find_events(&self, event_ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(sql::FIND_EVENTS)
            .bind(event_ids)
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter().map(rows::recorded_event).collect()
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar(sql::HEAD_POSITION)
            .fetch_one(&self.inner.pool)
            .await?;
        to_u64(head, "position")
    }

    async fn subscribe(&self, after_position: u64) -> Result<Subscription, StoreError> {
        // Subscribe to wake-ups before the first read, so that no commit falls in between.
        let wake = self.inner.wake.subscribe();
        self.ensure_listener().await?;
        Ok(Subscription {
            source: SubscriptionSource::Postgres(PgSubscription::new(
                self.clone(),
                wake,
                after_position,
                DEFAULT_BATCH_SIZE,
            )),
        })
    }

    async fn log_changes(&self) -> Result<watch::Receiver<u64>, StoreError> {
        let wake = self.inner.wake.subscribe();
        self.ensure_listener().await?;
        Ok(wake)
    }

    async fn load_snapshot(
        &self,
        stream_type: &str,
        stream_id: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(sql::LOAD_SNAPSHOT)
            .bind(stream_type)
            .bind(stream_id)
            .fetch_optional(&self.inner.pool)
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
        let mut connection = self.inner.pool.acquire().await?;
        upsert_snapshot(&mut connection, &snapshot).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
    }
}
