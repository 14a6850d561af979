//! Checkout benchmarks of the release build: time from `POST /orders` to the order read as
//! `CONFIRMED` (p50, p99), and checkouts confirmed per second with 32 concurrent clients, with
//! the test gateway at zero latency, embedded and on PostgreSQL. Baseline of the same run: the
//! same 32 clients placing orders without waiting for them to be confirmed (the command path
//! alone), so the ratio says what the saga and the read model cost on top of the write.
//!
//! The clients are registered customers, as a shop's are: each logs in (`POST /sessions`) and
//! places and reads its own orders with its access token, leaving `customer_id` out. An order
//! placed without credentials is refused now, so the same run has no unauthenticated figure to
//! compare with: the table also prints the figures BENCHMARKS.md recorded before authentication
//! ([`RECORDED`]), measured on another day, and says so.
//!
//! Run with `just bench` or `cargo bench -p mercato --bench checkout`. BENCH_SECONDS (default
//! 5) sets the length of each throughput phase; DATABASE_URL names the PostgreSQL server.

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::{Server, ServerData, Setup};
use support::shop::{
    CLIENTS, ServerTarget, create_products, log_in_all, place, register, saga_capacity, throughput,
    until_confirmed,
};
use support::{percentile, phase_seconds};

/// Orders spread over a catalogue, as in a shop (one hot product is the overselling test's case).
const PRODUCTS: usize = 200;
const LATENCY_SAMPLES: usize = 300;

/// BENCHMARKS.md's figures of this bench before authentication ("After the restructuring into a
/// server library", 2026-12-03, 2 cores AMD EPYC): checkout to `CONFIRMED` p99 in ms, and
/// checkouts confirmed per second with 32 clients; by setup label.
const RECORDED: &[(&str, f64, f64)] = &[("embedded", 44.2, 244.0), ("postgres", 37.5, 331.0)];
const RECORDED_WHEN: &str = "BENCHMARKS.md, 2026-12-03, before authentication; not this run";

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// The table rows of `label`'s run on `setup` (none when its services are not reachable).
async fn run(setup: Setup, label: &str) -> Vec<String> {
    let Some(data) = ServerData::new(setup, &format!("bench_checkout_{label}")).await else {
        println!("{label}: skipped (PostgreSQL or Redis not reachable)");
        return Vec::new();
    };
    let server = Server::start_with(&data, "all", &["--payment-timeout", "30"]).await;
    let target = ServerTarget::new(&server.base);
    let products = create_products(&server, "Bench item", PRODUCTS, 100_000_000).await;
    // One customer for the single client, one for each of the concurrent clients.
    let customers = register(&server, CLIENTS).await;
    let product_id = products[0].clone();
    let token = log_in_all(&server, &customers[..1]).await.remove(0);
    // Warm up.
    for _ in 0..20 {
        if let Some(order_id) = place(&target, &product_id, &token).await {
            until_confirmed(&target, &order_id, &token, Duration::from_millis(1)).await;
        }
    }
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for sample in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let Some(order_id) = place(&target, &products[sample % PRODUCTS], &token).await else {
            continue;
        };
        if until_confirmed(&target, &order_id, &token, Duration::from_millis(1)).await {
            latencies.push(started.elapsed());
        }
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    eprintln!(
        "{label}: checkout to CONFIRMED, one customer, {} orders: p50 {}, p99 {}",
        latencies.len(),
        millis(p50),
        millis(p99)
    );
    let seconds = phase_seconds();
    let tokens = log_in_all(&server, &customers).await;
    let waiting = throughput(&target, &tokens, &products, true, seconds).await;
    eprintln!(
        "{label}: {CLIENTS} customers, each waiting for its order to read CONFIRMED: {waiting:.0} checkouts/s"
    );
    // The saga's capacity: the clients place orders as fast as the command path takes them;
    // the rate is every order placed over the time until the saga confirmed the last of them.
    let tokens = log_in_all(&server, &customers).await;
    let (placed, confirmed, placed_for) =
        saga_capacity(&target, &target, &tokens, &products, seconds).await;
    eprintln!(
        "{label}: {CLIENTS} customers placing orders for {:.0} s: {confirmed:.0} checkouts confirmed/s until the last was confirmed; {placed:.0} orders placed/s",
        placed_for.as_secs_f64(),
    );
    server.terminate().await;

    let (_, recorded_p99, recorded_confirmed) = RECORDED
        .iter()
        .find(|(recorded, _, _)| *recorded == label)
        .copied()
        .unwrap_or((label, f64::NAN, f64::NAN));
    let p99_ms = p99.as_secs_f64() * 1000.0;
    vec![
        format!(
            "| {label}: checkout to CONFIRMED, one customer with its access token, {} orders, polled every 1 ms: p50 | {} | - | - | |",
            latencies.len(),
            millis(p50)
        ),
        format!(
            "| {label}: the same, p99 | {} | {recorded_p99:.1} ms ({RECORDED_WHEN}) | {:.2}x | within 10% of the recorded figure |",
            millis(p99),
            recorded_p99 / p99_ms
        ),
        format!(
            "| {label}: checkouts confirmed per second: {CLIENTS} customers place orders for {:.0} s, rate until the saga confirmed the last | {confirmed:.0}/s | {recorded_confirmed:.0}/s ({RECORDED_WHEN}) | {:.2}x | within 10% of the recorded figure |",
            placed_for.as_secs_f64(),
            confirmed / recorded_confirmed
        ),
        format!(
            "| {label}: the same against this run's orders placed per second (the command path, saga running beside it) | {confirmed:.0}/s | {placed:.0}/s placed | {:.2}x | |",
            confirmed / placed
        ),
        format!(
            "| {label}: {CLIENTS} customers, each waiting for its order to read CONFIRMED (polling every 20 ms) before the next | {waiting:.0}/s | - | - | |"
        ),
    ]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    // BENCH_ONLY=embedded or BENCH_ONLY=postgres runs one of the two.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    println!(
        "machine: {} cores; clients: registered customers, each ordering for itself with its own access token",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Vec::new();
    if only.is_empty() || only == "embedded" {
        rows.extend(run(Setup::Embedded, "embedded").await);
    }
    if only.is_empty() || only == "postgres" {
        rows.extend(run(Setup::PostgresRedis, "postgres").await);
    }
    println!("\n| figure | ours | baseline | ratio | target |\n| --- | --- | --- | --- | --- |");
    for row in rows {
        println!("{row}");
    }
}
