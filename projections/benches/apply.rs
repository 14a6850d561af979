//! How fast the SQL read models apply big batches (as `mercato replay` feeds them): builds a
//! shop-like history in memory and applies it in batches to the four SQL projections on a fresh
//! SQLite read database, all four together (as a replay runs them) and each alone.
//!
//! It measures the projections as they are ("after") and as they were before batches were
//! folded in memory ("before", one or more statements per event, kept in
//! `tests/support/reference_sql_models.rs`).
//!
//! `cargo bench -p projections --bench apply` (release). `BENCH_EVENTS` (default 200000) and
//! `BENCH_BATCH` (default 10000) change the size of the run; `BENCH_ONLY=before|after` runs one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::RecordedEvent;
use projections::Projection;
use projections::readdb::ReadDb;
use projections::runner::Feed;
use projections::sql_models::{
    OrdersProjection, ProductsProjection, SqlCartsProjection, SqlPopularityProjection,
};

#[path = "../tests/it/support/history.rs"]
mod history;
#[path = "../tests/it/support/reference_sql_models.rs"]
mod reference;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The projections as they are, or (`former`) as they were before batches were folded: one or
/// more statements per event (`tests/support/reference_sql_models.rs`).
fn projections(db: &ReadDb, former: bool) -> Vec<Arc<dyn Projection>> {
    if former {
        return vec![
            Arc::new(reference::ProductsProjection::new(db.clone(), None)),
            Arc::new(reference::OrdersProjection::new(db.clone())),
            Arc::new(reference::SqlCartsProjection::new(db.clone())),
            Arc::new(reference::SqlPopularityProjection::new(db.clone())),
        ];
    }
    vec![
        Arc::new(ProductsProjection::new(db.clone(), None)),
        Arc::new(OrdersProjection::new(db.clone())),
        Arc::new(SqlCartsProjection::new(db.clone())),
        Arc::new(SqlPopularityProjection::new(db.clone(), None)),
    ]
}

async fn fresh_db(directory: &std::path::Path, name: &str) -> ReadDb {
    let url = format!(
        "sqlite://{}",
        directory.join(format!("{name}.db")).display()
    );
    ReadDb::open(&url).await.expect("open the read database")
}

/// Applies every batch to every projection, the projections of one batch concurrently.
async fn together(
    projections: &[Arc<dyn Projection>],
    events: &[RecordedEvent],
    batch: usize,
) -> Duration {
    let started = Instant::now();
    for chunk in events.chunks(batch) {
        let mut tasks = Vec::new();
        for projection in projections {
            let projection = projection.clone();
            let chunk = chunk.to_vec();
            tasks.push(tokio::spawn(async move {
                projection.apply(&Feed::Log, &chunk).await
            }));
        }
        for task in tasks {
            task.await.expect("join").expect("apply");
        }
    }
    started.elapsed()
}

async fn alone(projection: &dyn Projection, events: &[RecordedEvent], batch: usize) -> Duration {
    let started = Instant::now();
    for chunk in events.chunks(batch) {
        projection.apply(&Feed::Log, chunk).await.expect("apply");
    }
    started.elapsed()
}

fn rate(events: usize, elapsed: Duration) -> String {
    format!(
        "{:>9.0} events/s ({:.2} s)",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let n_events = env_number("BENCH_EVENTS", 200_000);
    let batch = env_number("BENCH_BATCH", 10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let events = history::shop_history(history::Shape::default(), n_events);
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for event in &events {
        *kinds.entry(event.event_type.as_str()).or_default() += 1;
    }
    println!(
        "history: {} events in {:.2} s: {kinds:?}",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    runtime.block_on(async {
        let directory = tempfile::tempdir().expect("temp dir");
        for (former, label) in [
            (true, "before (one statement per event)"),
            (false, "after (folded batches)"),
        ] {
            if (former && only == "after") || (!former && only == "before") {
                continue;
            }
            println!("{label}:");
            let prefix = if former { "before" } else { "after" };
            let db = fresh_db(directory.path(), &format!("{prefix}-together")).await;
            let all = projections(&db, former);
            let elapsed = together(&all, &events, batch).await;
            println!(
                "  all four SQL projections together, batches of {batch}: {}",
                rate(events.len(), elapsed)
            );
            for (index, name) in ["products", "orders", "carts", "popularity"]
                .iter()
                .enumerate()
            {
                let db = fresh_db(directory.path(), &format!("{prefix}-{name}")).await;
                let projection = projections(&db, former).swap_remove(index);
                let elapsed = alone(projection.as_ref(), &events, batch).await;
                println!("    {name:<10} alone: {}", rate(events.len(), elapsed));
            }
        }
    });
}
