//! A flash sale on the release build, on PostgreSQL with Redis: 64 customers buy one product that
//! has 1,000 units, one unit an order, each waiting for a definite answer (the order no longer
//! `PENDING`) before its next, until 2,000 orders are placed. Figures: orders confirmed per
//! second, the time from `POST /orders` to the definite answer (p50, p99), that exactly 1,000
//! are confirmed and the rest cancelled out of stock, and how many product commands lost an
//! optimistic-concurrency race (the server's debug line for it, counted in its log). Baseline of
//! the same run: the same load spread over 200 products of 5 units each (1,000 units too).
//!
//! Run with `just bench` or `cargo bench -p mercato --bench flash_sale`. DATABASE_URL names the
//! PostgreSQL server, REDIS_URL the Redis one; `BENCH_ONLY=embedded` runs it embedded instead.

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, ServerData, Setup};
use serde_json::Value;
use support::percentile;
use support::shop::{ServerTarget, place};
use tokio::sync::Mutex;

const CLIENTS: usize = 64;
const UNITS: i64 = 1_000;
const ORDERS: usize = 2_000;
const SPREAD_PRODUCTS: usize = 200;
/// How often a customer asks whether its order has its answer.
const POLL: Duration = Duration::from_millis(20);
/// The server's debug line for a command decided again after losing a race.
const RACE_LOST: &str = "command lost an optimistic-concurrency race";

/// How one order ended, and how long its answer took.
#[derive(Clone, Debug)]
struct Answer {
    status: String,
    cancel_reason: String,
    after: Duration,
    at: Duration,
}

/// Polls the order until it is no longer `PENDING` (at most 60 s); answers its status and
/// cancel reason.
async fn definite_answer(target: &ServerTarget, order_id: &str, token: &str) -> (String, String) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(response) = target
            .client
            .get(format!("{}/orders/{order_id}", target.base))
            .bearer_auth(token)
            .send()
            .await
            && let Ok(order) = response.json::<Value>().await
        {
            let status = order["status"].as_str().unwrap_or_default();
            if status == "CONFIRMED" || status == "CANCELLED" {
                let reason = order["cancel_reason"].as_str().unwrap_or_default();
                return (status.to_owned(), reason.to_owned());
            }
        }
        tokio::time::sleep(POLL).await;
    }
    ("PENDING".to_owned(), String::new())
}

/// The sale: [`CLIENTS`] customers place [`ORDERS`] orders between them, order `n` for
/// `products[n % products.len()]`.
async fn sale(
    target: &ServerTarget,
    tokens: &[String],
    products: &[String],
) -> (Vec<Answer>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(Vec::with_capacity(ORDERS)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for token in tokens.iter().take(CLIENTS) {
        let (target, token, products) = (target.clone(), token.clone(), products.to_vec());
        let (next, answers) = (next.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let ticket = next.fetch_add(1, Ordering::Relaxed);
                if ticket >= ORDERS {
                    return;
                }
                let placed = Instant::now();
                let Some(order_id) =
                    place(&target, &products[ticket % products.len()], &token).await
                else {
                    continue;
                };
                let (status, cancel_reason) = definite_answer(&target, &order_id, &token).await;
                answers.lock().await.push(Answer {
                    status,
                    cancel_reason,
                    after: placed.elapsed(),
                    at: started.elapsed(),
                });
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let answers = answers.lock().await.clone();
    (answers, elapsed)
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// What one phase measured.
struct Phase {
    confirmed: usize,
    out_of_stock: usize,
    other: usize,
    confirmed_per_second: f64,
    answered_per_second: f64,
    p50: Duration,
    p99: Duration,
    p99_confirmed: Duration,
    p99_cancelled: Duration,
    races_lost: usize,
    stock_left: Vec<i64>,
}

fn sorted(answers: &[Answer], keep: impl Fn(&Answer) -> bool) -> Vec<Duration> {
    let mut latencies: Vec<Duration> = answers
        .iter()
        .filter(|answer| keep(answer))
        .map(|answer| answer.after)
        .collect();
    latencies.sort();
    if latencies.is_empty() {
        latencies.push(Duration::ZERO);
    }
    latencies
}

fn races_lost(data: &ServerData) -> usize {
    std::fs::read_to_string(data.data_dir.path().join("server.log"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(RACE_LOST))
        .count()
}

async fn phase(
    server: &Server,
    data: &ServerData,
    target: &ServerTarget,
    tokens: &[String],
    n_products: usize,
) -> Phase {
    let units = UNITS / n_products as i64;
    let mut products = Vec::with_capacity(n_products);
    for index in 0..n_products {
        let (product_id, _) = server
            .create_product(
                &format!("Sale item {index}"),
                "Limited",
                20.0,
                units,
                "sale",
            )
            .await;
        products.push(product_id);
    }
    let races_before = races_lost(data);
    let (answers, elapsed) = sale(target, tokens, &products).await;
    let confirmed: Vec<&Answer> = answers
        .iter()
        .filter(|answer| answer.status == "CONFIRMED")
        .collect();
    let out_of_stock = answers
        .iter()
        .filter(|answer| answer.status == "CANCELLED" && answer.cancel_reason.contains("stock"))
        .count();
    let last_confirmed = confirmed
        .iter()
        .map(|answer| answer.at)
        .max()
        .unwrap_or(elapsed);
    let all = sorted(&answers, |_| true);
    let mut stock_left = Vec::new();
    for product_id in products.iter().take(3) {
        let product = server.get(&format!("/products/{product_id}")).await;
        let body: Value = product.json().await.expect("json");
        stock_left.push(body["stock_qty"].as_i64().unwrap_or(-1));
    }
    Phase {
        confirmed: confirmed.len(),
        out_of_stock,
        other: answers.len() - confirmed.len() - out_of_stock,
        confirmed_per_second: confirmed.len() as f64 / last_confirmed.as_secs_f64(),
        answered_per_second: answers.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        p99_confirmed: percentile(&sorted(&answers, |a| a.status == "CONFIRMED"), 0.99),
        p99_cancelled: percentile(&sorted(&answers, |a| a.status == "CANCELLED"), 0.99),
        races_lost: races_lost(data) - races_before,
        stock_left,
    }
}

fn report(label: &str, phase: &Phase) {
    eprintln!(
        "{label}: {} confirmed, {} cancelled out of stock, {} other; {:.0} confirmed/s, {:.0} answered/s; definite answer p50 {}, p99 {} (confirmed p99 {}, cancelled p99 {}); {} product commands lost a race; stock left {:?}",
        phase.confirmed,
        phase.out_of_stock,
        phase.other,
        phase.confirmed_per_second,
        phase.answered_per_second,
        millis(phase.p50),
        millis(phase.p99),
        millis(phase.p99_confirmed),
        millis(phase.p99_cancelled),
        phase.races_lost,
        phase.stock_left,
    );
}

async fn run(setup: Setup, label: &str) -> Vec<String> {
    let Some(data) = ServerData::new(setup, &format!("bench_flash_sale_{label}")).await else {
        println!("{label}: skipped (PostgreSQL or Redis not reachable)");
        return Vec::new();
    };
    let server = Server::start_with_log_filter(
        &data,
        "all",
        &["--payment-timeout", "30"],
        "warn,eventstore::aggregate=debug",
    )
    .await;
    let target = ServerTarget {
        base: server.base.clone(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS * 2)
            .build()
            .expect("client"),
    };
    let mut registrations = Vec::with_capacity(CLIENTS);
    for index in 0..CLIENTS {
        let api = common::Api::clone(&server);
        registrations.push(tokio::spawn(async move {
            api.register_customer(&format!("buyer{index}")).await
        }));
    }
    let mut tokens = Vec::with_capacity(CLIENTS);
    for registration in registrations {
        let customer = registration.await.expect("registration");
        tokens.push(customer.session.access_token.clone());
    }
    // The baseline first, then the hot product, then the baseline again: the machine's drift
    // falls on both.
    let spread_before = phase(&server, &data, &target, &tokens, SPREAD_PRODUCTS).await;
    report(
        &format!("{label}, spread over {SPREAD_PRODUCTS} products"),
        &spread_before,
    );
    let hot = phase(&server, &data, &target, &tokens, 1).await;
    report(&format!("{label}, one product"), &hot);
    let spread_after = phase(&server, &data, &target, &tokens, SPREAD_PRODUCTS).await;
    report(
        &format!("{label}, spread over {SPREAD_PRODUCTS} products, again"),
        &spread_after,
    );
    server.terminate().await;

    let both = |figure: fn(&Phase) -> f64| (figure(&spread_before) + figure(&spread_after)) / 2.0;
    let confirmed_rate = both(|phase| phase.confirmed_per_second);
    let p50 = both(|phase| phase.p50.as_secs_f64() * 1000.0);
    let p99 = both(|phase| phase.p99.as_secs_f64() * 1000.0);
    let hot_p50 = hot.p50.as_secs_f64() * 1000.0;
    let hot_p99 = hot.p99.as_secs_f64() * 1000.0;
    vec![
        format!(
            "| {label}: orders confirmed / cancelled out of stock / other, of {ORDERS} | {} / {} / {} | {} / {} / {} and {} / {} / {} | - | exactly {UNITS} confirmed, the rest out of stock |",
            hot.confirmed,
            hot.out_of_stock,
            hot.other,
            spread_before.confirmed,
            spread_before.out_of_stock,
            spread_before.other,
            spread_after.confirmed,
            spread_after.out_of_stock,
            spread_after.other,
        ),
        format!(
            "| {label}: confirmed orders per second (until the last confirmation) | {:.0}/s | {confirmed_rate:.0}/s | {:.2}x | |",
            hot.confirmed_per_second,
            hot.confirmed_per_second / confirmed_rate
        ),
        format!(
            "| {label}: orders answered per second | {:.0}/s | {:.0}/s | {:.2}x | |",
            hot.answered_per_second,
            both(|phase| phase.answered_per_second),
            hot.answered_per_second / both(|phase| phase.answered_per_second)
        ),
        format!(
            "| {label}: time to a definite answer, p50 | {} | {p50:.1} ms | {:.2}x | |",
            millis(hot.p50),
            p50 / hot_p50
        ),
        format!(
            "| {label}: time to a definite answer, p99 (confirmed {}, cancelled {}) | {} | {p99:.1} ms | {:.2}x | |",
            millis(hot.p99_confirmed),
            millis(hot.p99_cancelled),
            millis(hot.p99),
            p99 / hot_p99
        ),
        format!(
            "| {label}: product commands that lost an optimistic-concurrency race | {} | {} and {} | - | |",
            hot.races_lost, spread_before.races_lost, spread_after.races_lost
        ),
    ]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "postgres".to_owned());
    println!(
        "machine: {} cores; {CLIENTS} registered customers, {ORDERS} orders of one unit, {UNITS} units; each customer polls its order every {} ms until it is answered, then places the next",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        POLL.as_millis()
    );
    let mut rows = Vec::new();
    if only == "embedded" {
        rows.extend(run(Setup::Embedded, "embedded").await);
    } else {
        rows.extend(run(Setup::PostgresRedis, "postgres").await);
    }
    println!(
        "\n| figure | one product | spread over {SPREAD_PRODUCTS} products (before, after) | ratio | target |\n| --- | --- | --- | --- | --- |"
    );
    for row in rows {
        println!("{row}");
    }
}
