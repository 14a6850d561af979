//! Checkout benchmarks of the release build: time from `POST /orders` to the order read as
//! `CONFIRMED` (p50, p99), and checkouts confirmed per second with 32 concurrent clients, with
//! the test gateway at zero latency, embedded and on PostgreSQL. Baseline of the same run: the
//! same 32 clients placing orders without waiting for them to be confirmed (the command path
//! alone), so the ratio says what the saga and the read model cost on top of the write.
//!
//! Run with `just bench` or `cargo bench -p mercato --bench checkout`. BENCH_SECONDS (default
//! 5) sets the length of each throughput phase; DATABASE_URL names the PostgreSQL server.

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Server, ServerData, Setup};
use serde_json::{Value, json};
use support::{percentile, phase_seconds};

const CLIENTS: usize = 32;
/// Orders spread over a catalogue, as in a shop (one hot product is the overselling test's case).
const PRODUCTS: usize = 200;
const LATENCY_SAMPLES: usize = 300;

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// Places one order; answers its id.
async fn place(server: &ServerTarget, product_id: &str, customer: usize) -> Option<String> {
    let response = server
        .client
        .post(format!("{}/orders", server.base))
        .json(&json!({
            "customer_id": format!("bench-{customer}"),
            "lines": [{ "product_id": product_id, "quantity": 1 }],
            "payment_token": "tok_visa",
        }))
        .send()
        .await
        .ok()?;
    if response.status() != reqwest::StatusCode::ACCEPTED {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["order_id"].as_str().map(str::to_owned)
}

/// Polls the order every `interval` until it reads `CONFIRMED` (at most 30 s).
async fn until_confirmed(server: &ServerTarget, order_id: &str, interval: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(response) = server
            .client
            .get(format!("{}/orders/{order_id}", server.base))
            .send()
            .await
            && let Ok(order) = response.json::<Value>().await
        {
            match order["status"].as_str() {
                Some("CONFIRMED") => return true,
                Some("CANCELLED") => return false,
                _ => {}
            }
        }
        tokio::time::sleep(interval).await;
    }
    false
}

/// The saga's count of confirmed checkouts, from `/metrics`.
async fn confirmed_total(server: &ServerTarget) -> f64 {
    let Ok(response) = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
    else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("mercato_saga_confirmed_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[derive(Clone)]
struct ServerTarget {
    base: String,
    client: reqwest::Client,
}

/// `clients` loops for `seconds`; each places an order and, when `confirm`, waits for it to be
/// confirmed. Answers orders per second.
async fn throughput(
    server: &ServerTarget,
    products: &[String],
    confirm: bool,
    seconds: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (server, products) = (server.clone(), products.to_vec());
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = client;
            while Instant::now() < deadline {
                next = (next + 7) % products.len();
                let Some(order_id) = place(&server, &products[next], client).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                // 32 clients polling every millisecond would load the server more than the
                // checkouts do: they poll every 20 ms here (one client every 1 ms below).
                if !confirm || until_confirmed(&server, &order_id, Duration::from_millis(20)).await
                {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        println!("  ({failed} orders failed or were not confirmed)");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn run(setup: Setup, label: &str) {
    let Some(data) = ServerData::new(setup, &format!("bench_checkout_{label}")).await else {
        println!("{label}: skipped (PostgreSQL or Redis not reachable)");
        return;
    };
    let server = Server::start_with(&data, "all", &["--payment-timeout", "30"]).await;
    let target = ServerTarget {
        base: server.base.clone(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client"),
    };
    let mut products = Vec::with_capacity(PRODUCTS);
    for index in 0..PRODUCTS {
        let (product_id, _) = server
            .create_product(
                &format!("Bench item {index}"),
                "Plenty",
                20.0,
                100_000_000,
                "bench",
            )
            .await;
        products.push(product_id);
    }
    let product_id = products[0].clone();
    // Warm up.
    for _ in 0..20 {
        if let Some(order_id) = place(&target, &product_id, 0).await {
            until_confirmed(&target, &order_id, Duration::from_millis(1)).await;
        }
    }
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for sample in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let Some(order_id) = place(&target, &products[sample % PRODUCTS], sample).await else {
            continue;
        };
        if until_confirmed(&target, &order_id, Duration::from_millis(1)).await {
            latencies.push(started.elapsed());
        }
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "{label}: checkout to CONFIRMED, one client, {} orders: p50 {}, p99 {}",
        latencies.len(),
        millis(p50),
        millis(p99)
    );
    let seconds = phase_seconds();
    let waiting = throughput(&target, &products, true, seconds).await;
    println!(
        "{label}: {CLIENTS} clients, each waiting for its order to read CONFIRMED: {waiting:.0} checkouts/s"
    );
    // The saga's capacity: the clients place orders as fast as the command path takes them;
    // the rate is every order placed over the time until the saga confirmed the last of them.
    let confirmed_before = confirmed_total(&target).await;
    let started = Instant::now();
    let placed = throughput(&target, &products, false, seconds).await;
    let placed_count = (placed * started.elapsed().as_secs_f64()).round();
    let placed_for = started.elapsed();
    while confirmed_total(&target).await - confirmed_before < placed_count
        && started.elapsed() < Duration::from_secs(seconds * 10 + 30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let confirmed =
        (confirmed_total(&target).await - confirmed_before) / started.elapsed().as_secs_f64();
    println!(
        "{label}: {CLIENTS} clients placing orders for {:.0} s: {confirmed:.0} checkouts confirmed/s until the last was confirmed; baseline {placed:.0} orders placed/s (ratio {:.2})",
        placed_for.as_secs_f64(),
        confirmed / placed
    );
    server.terminate().await;
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    // BENCH_ONLY=embedded or BENCH_ONLY=postgres runs one of the two.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "embedded" {
        run(Setup::Embedded, "embedded").await;
    }
    if only.is_empty() || only == "postgres" {
        run(Setup::PostgresRedis, "postgres").await;
    }
}
