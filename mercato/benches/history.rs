//! History benchmarks of the release build, on the embedded store and on PostgreSQL:
//!
//! - `mercato generate`: a realistic history of 1,000,000 events (BENCH_HISTORY_EVENTS), events
//!   per second of the whole process;
//! - baseline of the same run: reading the whole log through `read_all` in pages of 10,000;
//! - `mercato replay --all` (target >= 100,000 events/s embedded) and `mercato audit verify`
//!   (target >= 500,000 events/s), each process timed wall clock, with its ratio to the baseline.
//!
//! A command that exits 2 ("not available") is reported as such and the bench goes on.
//! Run with `just bench` or `cargo bench -p mercato --bench history`. PostgreSQL comes from
//! DATABASE_URL (a database of the bench's own, created and dropped); without it that half is
//! skipped.

use std::path::Path;
use std::time::{Duration, Instant};

use eventstore::testing::TestDatabase;

#[path = "../tests/it/common/mod.rs"]
mod common;

/// How long one command may run before the bench gives up on it.
const COMMAND_LIMIT: Duration = Duration::from_secs(1_800);

/// What one timed process did.
#[derive(Debug)]
enum Outcome {
    Done { seconds: f64, stdout: String },
    NotAvailable,
    Failed { code: Option<i32>, stderr: String },
}

async fn run_mercato(args: &[&str], store_url: &str, data_dir: &Path) -> Outcome {
    let mut command = common::mercato_async();
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("DATABASE_URL", store_url)
        .env("RUST_LOG", "warn");
    let started = Instant::now();
    let output = match tokio::time::timeout(COMMAND_LIMIT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => {
            return Outcome::Failed {
                code: None,
                stderr: format!("cannot run mercato: {error}"),
            };
        }
        Err(_) => {
            return Outcome::Failed {
                code: None,
                stderr: format!("still running after {} s", COMMAND_LIMIT.as_secs()),
            };
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Outcome::Done {
            seconds,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        },
        Some(2) if stderr.contains("not available") => Outcome::NotAvailable,
        code => Outcome::Failed {
            code,
            stderr: stderr.lines().last().unwrap_or("").to_owned(),
        },
    }
}

/// Reads the whole log in pages of 10,000: the number of events and the seconds it took.
async fn read_baseline(store_url: &str) -> (u64, f64) {
    let store = eventstore::open(store_url).await.expect("open the store");
    let started = Instant::now();
    let (mut after, mut n_read) = (0, 0_u64);
    loop {
        let page = store.read_all(after, 10_000).await.expect("read the log");
        let Some(last) = page.last() else { break };
        after = last.position;
        n_read += page.len() as u64;
    }
    (n_read, started.elapsed().as_secs_f64())
}

/// One row of the table: a command's rate against the read baseline and its target.
fn figure(name: &str, outcome: &Outcome, n_events: u64, read_rate: f64, target: Option<f64>) {
    match outcome {
        Outcome::Done { seconds, .. } => {
            let rate = n_events as f64 / seconds;
            let verdict = match target {
                Some(target) if rate >= target => format!(" (target >= {target:.0}: met)"),
                Some(target) => format!(" (target >= {target:.0}: NOT met)"),
                None => String::new(),
            };
            println!(
                "| {name} | {rate:.0} events/s ({seconds:.2} s, whole process){verdict} | read_all: {read_rate:.0} events/s | {:.2}x |",
                rate / read_rate
            );
        }
        Outcome::NotAvailable => {
            println!("| {name} | not available (exit 2) | read_all: {read_rate:.0} events/s | - |");
        }
        Outcome::Failed { code, stderr } => {
            let code = code.map_or("killed".to_owned(), |code| code.to_string());
            println!(
                "| {name} | failed (exit {code}): {stderr} | read_all: {read_rate:.0} events/s | - |"
            );
        }
    }
}

async fn run(label: &str, store_url: &str, data_dir: &Path, n_events: u64, replay_target: f64) {
    let events = n_events.to_string();
    let generated = run_mercato(
        &["generate", "--events", &events, "--seed", "1"],
        store_url,
        data_dir,
    )
    .await;
    let (n_stored, read_seconds) = read_baseline(store_url).await;
    let read_rate = n_stored as f64 / read_seconds;
    let replayed = run_mercato(&["replay", "--all"], store_url, data_dir).await;
    let verified = run_mercato(&["audit", "verify"], store_url, data_dir).await;

    println!();
    println!("### {label}: {n_stored} events");
    println!();
    if let Outcome::Done { stdout, .. } = &generated {
        for line in stdout.lines() {
            eprintln!("generate: {line}");
        }
    }
    println!("| figure | result | baseline (same run) | ratio |");
    println!("| --- | --- | --- | --- |");
    figure(
        &format!("generate {n_events} events"),
        &generated,
        n_stored,
        read_rate,
        None,
    );
    println!(
        "| read the whole log, pages of 10,000 | {read_rate:.0} events/s ({read_seconds:.2} s) | (the baseline) | 1.00x |"
    );
    figure(
        "mercato replay --all",
        &replayed,
        n_stored,
        read_rate,
        (replay_target > 0.0).then_some(replay_target),
    );
    figure(
        "mercato audit verify",
        &verified,
        n_stored,
        read_rate,
        Some(500_000.0),
    );
}

#[tokio::main]
async fn main() {
    let n_events: u64 = std::env::var("BENCH_HISTORY_EVENTS")
        .ok()
        .and_then(|text| text.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);

    let embedded = tempfile::TempDir::new().expect("temporary directory");
    let store_url = format!("sqlite://{}", embedded.path().join("mercato.db").display());
    run(
        "embedded (SQLite)",
        &store_url,
        embedded.path(),
        n_events,
        100_000.0,
    )
    .await;
    drop(embedded);

    let Some(database) = TestDatabase::create("history bench").await else {
        eprintln!("history bench: no PostgreSQL at DATABASE_URL; the PostgreSQL half is skipped");
        return;
    };
    let data_dir = tempfile::TempDir::new().expect("temporary directory");
    run("PostgreSQL", database.url(), data_dir.path(), n_events, 0.0).await;
}
