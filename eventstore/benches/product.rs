//! Product command latency against the product's order history. Run with `just bench` or
//! `cargo bench -p eventstore --bench product`.
//!
//! Two products on the same store, measured in the same run, alternately: one without past
//! orders (the baseline) and one with `BENCH_PAST_ORDERS` (default 100,000) orders behind it,
//! each reserved and then committed (four in five) or released, as the checkout saga leaves
//! them. The history is appended straight to the store in large batches (what the saga would
//! have appended, with the folded product as the snapshot of its last batch), so that it takes
//! seconds, not the minutes 200,000 commands would. Then both products take the saga's commands,
//! a reserve and a commit per order through `eventstore::aggregate::execute` with derived event
//! ids, one at a time: the latency of each command, and the size of each product's snapshot.
//! The ratio is the latency with the history over the latency without (the target: at most
//! 1.2). Embedded SQLite, then PostgreSQL at DATABASE_URL (default
//! postgres://postgres@127.0.0.1:5432/postgres) in a database of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::Aggregate as _;
use domain::product::{ProductUpdated, StockCommitted, StockReleased, StockReserved};
use domain::{Money, Product, ProductCommand, ProductEvent};
use eventstore::aggregate::{CommandOptions, execute};
use eventstore::{AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, Snapshot};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Orders measured on each product (two commands each).
const SAMPLES: usize = 500;
const WARM_UP: usize = 25;
/// Events appended per request while the history is built.
const HISTORY_BATCH: usize = 1_000;

fn past_orders() -> u64 {
    std::env::var("BENCH_PAST_ORDERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000)
}

fn metadata() -> EventMetadata {
    EventMetadata {
        correlation_id: "bench".to_owned(),
        causation_id: "bench".to_owned(),
        saga_id: None,
        actor: "saga".to_owned(),
        source: "saga".to_owned(),
        traceparent: None,
        tracestate: None,
    }
}

/// Applies `change` to `product` and appends it to `events`, followed by the `ProductUpdated`
/// the aggregate writes after every change.
fn push(product: &mut Product, events: &mut Vec<ProductEvent>, change: ProductEvent) {
    product.apply(change.clone());
    events.push(change);
    let updated = ProductEvent::ProductUpdated(ProductUpdated {
        product_id: product.product_id.unwrap_or_default(),
        name: product.name.clone(),
        description: product.description.clone(),
        price: product.price,
        stock_qty: product.stock_qty,
        category: product.category.clone(),
        version: product.version + 1,
    });
    product.apply(updated.clone());
    events.push(updated);
}

fn create(product_id: Uuid) -> ProductCommand {
    ProductCommand::CreateProduct {
        product_id,
        name: "Best seller".to_owned(),
        description: "Sells every day".to_owned(),
        price: Money::from_minor(1_999),
        stock_qty: 100_000_000,
        category: Some("bench".to_owned()),
    }
}

/// Creates a product through the command path; answers its state.
async fn create_product(store: &dyn EventStore, product_id: Uuid) -> Product {
    execute::<Product>(
        store,
        &product_id.to_string(),
        create(product_id),
        &(),
        &metadata(),
        &CommandOptions::default(),
    )
    .await
    .expect("create the product")
    .state
}

/// Appends `n_orders` closed orders to the product's stream, the last batch with the folded
/// product as its snapshot. Answers the snapshot's size in bytes.
async fn build_history(
    store: &dyn EventStore,
    product_id: Uuid,
    mut product: Product,
    n_orders: u64,
) -> usize {
    let stream_id = product_id.to_string();
    let mut order = 0_u64;
    let mut snapshot_bytes = 0;
    while order < n_orders {
        let mut events = Vec::with_capacity(HISTORY_BATCH);
        let version = product.version;
        while events.len() < HISTORY_BATCH && order < n_orders {
            let order_id = Uuid::from_u128(0x6869_7374_6f72_7900_0000 + u128::from(order));
            push(
                &mut product,
                &mut events,
                ProductEvent::StockReserved(StockReserved {
                    order_id,
                    quantity: 1,
                }),
            );
            let close = if order % 5 == 4 {
                ProductEvent::StockReleased(StockReleased {
                    order_id,
                    quantity: 1,
                })
            } else {
                ProductEvent::StockCommitted(StockCommitted {
                    order_id,
                    quantity: 1,
                })
            };
            push(&mut product, &mut events, close);
            order += 1;
        }
        let now = chrono::Utc::now();
        let new_events = events
            .iter()
            .map(|event| {
                let encoded = schemas::encode(event).expect("encode");
                NewEvent::from_encoded(encoded, Uuid::new_v4(), now, metadata())
            })
            .collect();
        let request = AppendRequest::new(
            "product",
            &stream_id,
            ExpectedVersion::Exact(version),
            new_events,
        );
        if order < n_orders {
            store.append(request).await.expect("append the history");
        } else {
            let state = serde_json::to_string(&product).expect("snapshot");
            snapshot_bytes = state.len();
            let snapshot = Snapshot {
                stream_type: "product".to_owned(),
                stream_id: stream_id.clone(),
                version: product.version,
                state: RawValue::from_string(state).expect("json"),
            };
            store
                .append_with_snapshot(request, snapshot)
                .await
                .expect("append the history's last batch");
        }
    }
    snapshot_bytes
}

/// Runs one of the saga's product commands as the saga does; answers how long it took.
async fn saga_command(
    store: &dyn EventStore,
    product_id: Uuid,
    command: ProductCommand,
    cause: Uuid,
) -> Duration {
    let options = CommandOptions {
        look_up_cause_first: false,
        ..CommandOptions::caused_by(cause)
    };
    let started = Instant::now();
    let executed = execute::<Product>(
        store,
        &product_id.to_string(),
        command,
        &(),
        &metadata(),
        &options,
    )
    .await
    .expect("a saga command");
    let elapsed = started.elapsed();
    assert!(!executed.events.is_empty());
    elapsed
}

/// One order's reserve and commit on `product_id`; answers the two latencies.
async fn one_order(store: &dyn EventStore, product_id: Uuid) -> [Duration; 2] {
    let order_id = Uuid::new_v4();
    let reserve = saga_command(
        store,
        product_id,
        ProductCommand::ReserveStock {
            order_id,
            quantity: 1,
        },
        Uuid::new_v4(),
    )
    .await;
    let commit = saga_command(
        store,
        product_id,
        ProductCommand::CommitStock { order_id },
        Uuid::new_v4(),
    )
    .await;
    [reserve, commit]
}

async fn snapshot_size(store: &dyn EventStore, product_id: Uuid) -> Option<usize> {
    store
        .load_snapshot("product", &product_id.to_string())
        .await
        .expect("snapshot")
        .map(|snapshot| snapshot.state.get().len())
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn mean(values: &[Duration]) -> Duration {
    values.iter().sum::<Duration>() / values.len().max(1) as u32
}

fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

/// The table rows of one store.
async fn run(label: &str, store: Arc<dyn EventStore>, n_orders: u64) -> Vec<String> {
    let store = store.as_ref();
    let (fresh, best_seller) = (Uuid::new_v4(), Uuid::new_v4());
    create_product(store, fresh).await;
    let created = create_product(store, best_seller).await;
    let started = Instant::now();
    let history_snapshot = build_history(store, best_seller, created, n_orders).await;
    let built_in = started.elapsed();
    eprintln!(
        "{label}: {n_orders} past orders ({} events) appended in {:.1} s; their snapshot {history_snapshot} bytes",
        n_orders * 4,
        built_in.as_secs_f64()
    );
    for _ in 0..WARM_UP {
        one_order(store, fresh).await;
        one_order(store, best_seller).await;
    }
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        without.extend(one_order(store, fresh).await);
        with.extend(one_order(store, best_seller).await);
    }
    without.sort();
    with.sort();
    let sizes = (
        snapshot_size(store, fresh).await.unwrap_or(0),
        snapshot_size(store, best_seller).await.unwrap_or(0),
    );
    let mut rows = Vec::new();
    for (name, ours, baseline) in [
        ("p50", percentile(&with, 0.5), percentile(&without, 0.5)),
        ("mean", mean(&with), mean(&without)),
        ("p99", percentile(&with, 0.99), percentile(&without, 0.99)),
    ] {
        let ratio = ours.as_secs_f64() / baseline.as_secs_f64();
        eprintln!(
            "{label}: product command {name}: {} with {n_orders} past orders, {} without: {ratio:.2}x",
            millis(ours),
            millis(baseline)
        );
        rows.push(format!(
            "| {label}: product command (reserve, commit) {name}, {n_orders} past orders against none | {} | {} | {ratio:.2}x | at most 1.2x |",
            millis(ours),
            millis(baseline)
        ));
    }
    rows.push(format!(
        "| {label}: the product's snapshot after the run, {n_orders} past orders against none | {} bytes | {} bytes | {:.2}x | |",
        sizes.1,
        sizes.0,
        sizes.1 as f64 / sizes.0.max(1) as f64
    ));
    rows
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    let n_orders = past_orders();
    println!(
        "machine: {} cores; {SAMPLES} orders (a reserve and a commit each) per product, alternating, after {WARM_UP} to warm up",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = eventstore::open(&sqlite_url).await.expect("sqlite");
    rows.extend(run("embedded SQLite", sqlite, n_orders).await);
    match eventstore::testing::TestDatabase::create("bench_product").await {
        Some(database) => {
            let postgres = eventstore::open(database.url()).await.expect("postgres");
            rows.extend(run("PostgreSQL", postgres, n_orders).await);
        }
        None => eprintln!("PostgreSQL: skipped (not reachable at DATABASE_URL)"),
    }
    println!("\n| figure | ours | baseline | ratio | target |\n| --- | --- | --- | --- | --- |");
    for row in rows {
        println!("{row}");
    }
}
