//! Event store benchmarks (issue: the event store). Run with `just bench` or
//! `cargo bench -p eventstore --bench store`. Prints every figure and its ratio against the
//! baseline measured in the same run: postgres-es 0.5 through the same `CqrsFramework`, and plain
//! single-row INSERTs as the ceiling of the database itself.
//!
//! Needs PostgreSQL at DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres); each
//! run creates and drops its own databases. BENCH_SECONDS (default 5) sets each phase's length.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore};
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent, EventStore as _};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use uuid::Uuid;

/// The benchmark's aggregate: one command emits `n_events` events.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: i64, note: String },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        "Deposited".to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

struct Deposit {
    n_events: usize,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Deposit;
    type Event = AccountEvent;
    type Error = Never;
    type Services = ();

    async fn handle(
        &mut self,
        command: Deposit,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Never> {
        for _ in 0..command.n_events {
            let event = AccountEvent::Deposited {
                amount: 100,
                note: "a deposit of one unit".to_owned(),
            };
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        let AccountEvent::Deposited { amount, .. } = event;
        self.balance += amount;
    }
}

/// How many operations finished and how long each took.
struct Run {
    n_ops: u64,
    n_events: u64,
    elapsed: Duration,
}

impl Run {
    fn ops_per_second(&self) -> f64 {
        self.n_ops as f64 / self.elapsed.as_secs_f64()
    }
    fn events_per_second(&self) -> f64 {
        self.n_events as f64 / self.elapsed.as_secs_f64()
    }
}

fn phase_length() -> Duration {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(seconds)
}

/// Runs `operation` from `n_writers` tasks for the phase length; each call returns its event count.
async fn drive<F, Fut>(n_writers: usize, operation: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let operation = Arc::new(operation);
    let n_ops = Arc::new(AtomicU64::new(0));
    let n_events = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + phase_length();
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer_idx in 0..n_writers {
        let (operation, n_ops, n_events) = (operation.clone(), n_ops.clone(), n_events.clone());
        writers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let events = operation(writer_idx).await;
                n_ops.fetch_add(1, Ordering::Relaxed);
                n_events.fetch_add(events, Ordering::Relaxed);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task panicked");
    }
    Run {
        n_ops: n_ops.load(Ordering::Relaxed),
        n_events: n_events.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The ceiling: one single-row INSERT per transaction, same row shape as our events table.
async fn insert_ceiling(pool: PgPool, n_writers: usize) -> Run {
    pool.execute(
        "CREATE TABLE IF NOT EXISTS ceiling_events (
            position BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL UNIQUE,
            stream_type TEXT NOT NULL, stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL,
            event_type TEXT NOT NULL, schema_version INT NOT NULL, occurred_at TIMESTAMPTZ NOT NULL,
            correlation_id TEXT NOT NULL, causation_id TEXT NOT NULL, saga_id TEXT, actor TEXT NOT NULL,
            source TEXT NOT NULL, payload TEXT NOT NULL,
            UNIQUE (stream_type, stream_id, stream_version))",
    )
    .await
    .expect("create ceiling table");
    drive(n_writers, move |_| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO ceiling_events (event_id, stream_type, stream_id, stream_version, event_type,
                    schema_version, occurred_at, correlation_id, causation_id, actor, source, payload)
                 VALUES ($1, 'account', $2, 1, 'Deposited', 1, now(), $3, $3, 'bench', 'bench', $4)",
            )
            .bind(Uuid::new_v4())
            .bind(Uuid::new_v4().to_string())
            .bind(Uuid::new_v4().to_string())
            .bind(r#"{"amount":100,"note":"a deposit of one unit"}"#)
            .execute(&pool)
            .await
            .expect("insert");
            1
        }
    })
    .await
}

type Framework<R> = CqrsFramework<Account, PersistedEventStore<R, Account>>;

/// Single- or multi-event commands through `CqrsFramework`, each on a fresh aggregate.
async fn framework_appends<R>(
    framework: Arc<Framework<R>>,
    n_writers: usize,
    n_events: usize,
) -> Run
where
    R: PersistedEventRepository + 'static,
{
    drive(n_writers, move |_| {
        let framework = framework.clone();
        async move {
            let id = Uuid::new_v4().to_string();
            framework
                .execute(&id, Deposit { n_events })
                .await
                .expect("command");
            n_events as u64
        }
    })
    .await
}

/// Single-event appends straight through the store's port, each to a fresh stream.
async fn store_appends(store: Arc<dyn eventstore::EventStore>, n_writers: usize) -> Run {
    drive(n_writers, move |_| {
        let store = store.clone();
        async move {
            let event = eventstore::NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "Deposited".to_owned(),
                schema_version: 1,
                occurred_at: chrono::Utc::now(),
                payload: serde_json::value::RawValue::from_string(
                    r#"{"amount":100,"note":"a deposit of one unit"}"#.to_owned(),
                )
                .expect("json"),
                metadata: eventstore::EventMetadata {
                    correlation_id: Uuid::new_v4().to_string(),
                    causation_id: Uuid::new_v4().to_string(),
                    saga_id: None,
                    actor: "bench".to_owned(),
                    source: "bench".to_owned(),
                    traceparent: None,
                    tracestate: None,
                },
            };
            let request = eventstore::AppendRequest::new(
                "account",
                Uuid::new_v4().to_string(),
                eventstore::ExpectedVersion::NoStream,
                vec![event],
            );
            store.append(request).await.expect("append");
            1
        }
    })
    .await
}

/// Loads one aggregate of `n_events` events `n_loads` times; returns the sorted latencies.
async fn load_latencies<R>(
    store: &PersistedEventStore<R, Account>,
    id: &str,
    n_loads: usize,
) -> Vec<Duration>
where
    R: PersistedEventRepository,
{
    let mut latencies = Vec::with_capacity(n_loads);
    for _ in 0..n_loads {
        let started = Instant::now();
        let context = store.load_aggregate(id).await.expect("load");
        latencies.push(started.elapsed());
        std::hint::black_box(context);
    }
    latencies.sort();
    latencies
}

const POSTGRES_ES_TABLES: &str = "
CREATE TABLE events (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
    event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence));
CREATE TABLE snapshots (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));";

const POOL_SIZE: u32 = 32;
const SNAPSHOT_SIZE: usize = 100;
const N_LOADS: usize = 300;

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .test_before_acquire(false)
        .connect(url)
        .await
        .expect("connect")
}

/// One printed line and one markdown row per figure.
struct Report {
    rows: Vec<String>,
}

impl Report {
    fn figure(&mut self, what: &str, ours: String, baseline: String, ratio: String, target: &str) {
        println!("{what:<58} ours {ours:>16}   baseline {baseline:>16}   {ratio:>8}   {target}");
        self.rows.push(format!(
            "| {what} | {ours} | {baseline} | {ratio} | {target} |"
        ));
    }
}

fn per_second(value: f64) -> String {
    format!("{value:.0}/s")
}

fn ratio(ours: f64, baseline: f64) -> String {
    format!("{:.2}x", ours / baseline)
}

fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".to_owned());
    let n_cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{n_cores} cores, {model}")
}

#[tokio::main]
async fn main() {
    let Some(ours_db) = eventstore::testing::TestDatabase::create("bench_ours").await else {
        eprintln!("error: the benchmarks need PostgreSQL at DATABASE_URL");
        std::process::exit(1);
    };
    let pges_db = eventstore::testing::TestDatabase::create("bench_postgres_es")
        .await
        .expect("database");
    let ceiling_db = eventstore::testing::TestDatabase::create("bench_ceiling")
        .await
        .expect("database");
    let ours_pool = pool(ours_db.url()).await;
    let server: (String, String) =
        sqlx::query_as("SELECT version(), current_setting('synchronous_commit')")
            .fetch_one(&ours_pool)
            .await
            .expect("version");
    println!("machine: {}", machine());
    println!("postgresql: {} (synchronous_commit={})", server.0, server.1);
    println!(
        "each throughput phase runs {:?}; pools of {POOL_SIZE} connections\n",
        phase_length()
    );

    let ours_store = Arc::new(eventstore::PgEventStore::from_pool(ours_pool.clone()));
    ours_store.migrate().await.expect("migrate");
    let ours_store: Arc<dyn eventstore::EventStore> = ours_store;
    let ours = Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(eventstore::cqrs::CqrsEventRepository::new(
            ours_store.clone(),
        )),
        vec![],
        (),
    ));
    let pges_pool = pool(pges_db.url()).await;
    pges_pool
        .execute(POSTGRES_ES_TABLES)
        .await
        .expect("postgres-es tables");
    let pges = Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(postgres_es::PostgresEventRepository::new(
            pges_pool.clone(),
        )),
        vec![],
        (),
    ));
    let ceiling_pool = pool(ceiling_db.url()).await;

    let mut report = Report { rows: Vec::new() };
    // Single-event commands: ours versus postgres-es, and versus the plain INSERT ceiling.
    for n_writers in [1, 16] {
        let ours_run = framework_appends(ours.clone(), n_writers, 1).await;
        let pges_run = framework_appends(pges.clone(), n_writers, 1).await;
        let append_run = store_appends(ours_store.clone(), n_writers).await;
        let ceiling_run = insert_ceiling(ceiling_pool.clone(), n_writers).await;
        let target = if n_writers == 16 { ">= 1.5x" } else { "" };
        report.figure(
            &format!("single-event commands, {n_writers} writer(s), vs postgres-es"),
            per_second(ours_run.ops_per_second()),
            per_second(pges_run.ops_per_second()),
            ratio(ours_run.ops_per_second(), pges_run.ops_per_second()),
            target,
        );
        report.figure(
            &format!("store append (1 event), {n_writers} writer(s), vs plain INSERT"),
            per_second(append_run.ops_per_second()),
            per_second(ceiling_run.ops_per_second()),
            ratio(append_run.ops_per_second(), ceiling_run.ops_per_second()),
            ">= 0.70x",
        );
    }
    // Multi-event commands.
    for n_writers in [1, 16] {
        let ours_run = framework_appends(ours.clone(), n_writers, 10).await;
        let pges_run = framework_appends(pges.clone(), n_writers, 10).await;
        report.figure(
            &format!("10-event commands, {n_writers} writer(s), events"),
            per_second(ours_run.events_per_second()),
            per_second(pges_run.events_per_second()),
            ratio(ours_run.events_per_second(), pges_run.events_per_second()),
            "",
        );
    }
    // Loading a 1,000-event aggregate, without and with snapshots.
    let ours_snapshots = PersistedEventStore::<_, Account>::new_snapshot_store(
        eventstore::cqrs::CqrsEventRepository::for_snapshot_store(
            ours_store.clone(),
            SNAPSHOT_SIZE,
        ),
        SNAPSHOT_SIZE,
    );
    let pges_snapshots = PersistedEventStore::<_, Account>::new_snapshot_store(
        postgres_es::PostgresEventRepository::new(pges_pool.clone()),
        SNAPSHOT_SIZE,
    );
    let ours_snapshot_framework = CqrsFramework::new(ours_snapshots, vec![], ());
    let pges_snapshot_framework = CqrsFramework::new(pges_snapshots, vec![], ());
    let big_id = Uuid::new_v4().to_string();
    for _ in 0..100 {
        ours_snapshot_framework
            .execute(&big_id, Deposit { n_events: 10 })
            .await
            .expect("command");
        pges_snapshot_framework
            .execute(&big_id, Deposit { n_events: 10 })
            .await
            .expect("command");
    }
    let ours_plain = PersistedEventStore::<_, Account>::new_event_store(
        eventstore::cqrs::CqrsEventRepository::new(ours_store.clone()),
    );
    let pges_plain = PersistedEventStore::<_, Account>::new_event_store(
        postgres_es::PostgresEventRepository::new(pges_pool.clone()),
    );
    let ours_snapshots = PersistedEventStore::<_, Account>::new_snapshot_store(
        eventstore::cqrs::CqrsEventRepository::for_snapshot_store(
            ours_store.clone(),
            SNAPSHOT_SIZE,
        ),
        SNAPSHOT_SIZE,
    );
    let pges_snapshots = PersistedEventStore::<_, Account>::new_snapshot_store(
        postgres_es::PostgresEventRepository::new(pges_pool.clone()),
        SNAPSHOT_SIZE,
    );
    for (label, ours_latencies, pges_latencies, target) in [
        (
            "load 1,000-event aggregate, no snapshot",
            load_latencies(&ours_plain, &big_id, N_LOADS).await,
            load_latencies(&pges_plain, &big_id, N_LOADS).await,
            "",
        ),
        (
            "load 1,000-event aggregate, snapshots",
            load_latencies(&ours_snapshots, &big_id, N_LOADS).await,
            load_latencies(&pges_snapshots, &big_id, N_LOADS).await,
            "p99 < 2 ms",
        ),
    ] {
        for (quantile, name) in [(0.5, "p50"), (0.99, "p99")] {
            let (ours_value, pges_value) = (
                percentile(&ours_latencies, quantile),
                percentile(&pges_latencies, quantile),
            );
            report.figure(
                &format!("{label}, {name}"),
                millis(ours_value),
                millis(pges_value),
                format!(
                    "{:.2}x",
                    pges_value.as_secs_f64() / ours_value.as_secs_f64()
                ),
                if name == "p99" { target } else { "" },
            );
        }
    }
    // The store's own stream read of the same 1,000 events (what the command path uses).
    let mut read_latencies = Vec::with_capacity(N_LOADS);
    for _ in 0..N_LOADS {
        let started = Instant::now();
        let events = ours_store
            .read_stream("account", &big_id, 0, 1_000)
            .await
            .expect("read");
        read_latencies.push(started.elapsed());
        assert_eq!(events.len(), 1_000);
    }
    read_latencies.sort();
    for (quantile, name) in [(0.5, "p50"), (0.99, "p99")] {
        report.figure(
            &format!("store read_stream of those 1,000 events, {name}"),
            millis(percentile(&read_latencies, quantile)),
            "-".into(),
            "-".into(),
            "",
        );
    }
    // Reading the global log from the start, in pages of 1,000.
    let started = Instant::now();
    let (mut after, mut n_read) = (0, 0_u64);
    loop {
        let page = ours_store.read_all(after, 1_000).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        n_read += page.len() as u64;
    }
    let read_rate = n_read as f64 / started.elapsed().as_secs_f64();
    report.figure(
        &format!("read the global log ({n_read} events)"),
        per_second(read_rate),
        "-".into(),
        "-".into(),
        ">= 200000/s",
    );

    // The same read over a connection without TLS (the local server offers TLS, which sqlx
    // takes by default): how much of the read rate goes to encryption on both ends.
    if !ours_db.url().contains("sslmode") {
        let plain_url = format!("{}?sslmode=disable", ours_db.url());
        let plain_store = eventstore::PgEventStore::connect(&plain_url)
            .await
            .expect("connect without TLS");
        let started = Instant::now();
        let (mut after, mut n_plain) = (0, 0_u64);
        loop {
            let page = eventstore::EventStore::read_all(&plain_store, after, 1_000)
                .await
                .expect("read");
            let Some(last) = page.last() else { break };
            after = last.position;
            n_plain += page.len() as u64;
        }
        report.figure(
            &format!("read the global log without TLS ({n_plain} events)"),
            per_second(n_plain as f64 / started.elapsed().as_secs_f64()),
            "-".into(),
            "-".into(),
            "",
        );
    }

    // Embedded SQLite, durable commits.
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite_store = eventstore::open(&sqlite_url).await.expect("sqlite");
    let sqlite = Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(eventstore::cqrs::CqrsEventRepository::new(
            sqlite_store,
        )),
        vec![],
        (),
    ));
    for n_writers in [1, 16] {
        let run = framework_appends(sqlite.clone(), n_writers, 1).await;
        report.figure(
            &format!("embedded SQLite single-event commands, {n_writers} writer(s)"),
            per_second(run.ops_per_second()),
            "-".into(),
            "-".into(),
            if n_writers == 16 { ">= 5000/s" } else { "" },
        );
    }

    println!("\n| figure | ours | baseline | ratio | target |\n| --- | --- | --- | --- | --- |");
    for row in &report.rows {
        println!("{row}");
    }
    drop((ours, pges, ours_snapshot_framework, pges_snapshot_framework));
    ours_pool.close().await;
    pges_pool.close().await;
    ceiling_pool.close().await;
}
