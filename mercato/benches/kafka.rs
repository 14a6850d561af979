//! Kafka benchmarks of the release build, embedded store, against a tansu broker of the run's own:
//!
//! - relay throughput: events per second from the store to acknowledged by the broker (the relay
//!   role publishing a backlog), against a baseline of the same run: reading the same events
//!   from the store alone;
//! - end-to-end lag from append to a Kafka-fed read model (a product created, then read from the
//!   products read model), p50 and p99, against the same with the read model fed from the log.
//!
//! Run with `just bench` or `cargo bench -p mercato --bench kafka` (needs tansu; see
//! DEVELOPERS.md). BENCH_EVENTS sets the backlog size (default 20,000).

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, ServerData, Setup};
use serde_json::{Value, json};
use server::testing::broker::Broker;
use support::percentile;

const LAG_SAMPLES: usize = 300;
const WRITERS: usize = 16;

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// Creates `n` products with `WRITERS` concurrent clients.
async fn backlog(server: &Arc<Server>, n: usize) {
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let server = server.clone();
        writers.push(tokio::spawn(async move {
            for index in (writer..n).step_by(WRITERS) {
                let response = server
                    .post(
                        "/products",
                        json!({
                            "name": format!("backlog {index}"), "description": "relay bench",
                            "price": 2.5, "stock_qty": 10, "category": "bench",
                        }),
                    )
                    .await;
                assert!(response.status().is_success());
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
}

/// Append-to-read-model latencies: each product created, then read until the read model has it.
async fn lags(server: &Server, tag: &str) -> Vec<Duration> {
    let mut lags = Vec::with_capacity(LAG_SAMPLES);
    for index in 0..LAG_SAMPLES {
        let (product_id, _) = server
            .create_product(&format!("{tag} {index}"), "lag bench", 1.0, 5, "bench")
            .await;
        let appended = Instant::now();
        loop {
            // The read model itself (no cache: each read names a product not read before).
            let response = server.get(&format!("/products/{product_id}")).await;
            if response.status() == reqwest::StatusCode::OK {
                break;
            }
            assert!(
                appended.elapsed() < Duration::from_secs(30),
                "not visible within 30 s"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        lags.push(appended.elapsed());
    }
    lags.sort();
    lags
}

#[tokio::main]
async fn main() {
    let Some(broker) = Broker::start("kafka bench").await else {
        eprintln!("kafka bench: no tansu broker; skipped");
        return;
    };
    let n_events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20_000);
    let bootstrap = broker.bootstrap();

    // Relay throughput: a backlog written without Kafka, then published by the relay role.
    let data = ServerData::new(Setup::Embedded, "kafka bench")
        .await
        .expect("embedded");
    let writer =
        Arc::new(Server::start_with(&data, "command-api", &["--log-format", "text"]).await);
    backlog(&writer, n_events).await;
    drop(writer);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = data.store().await;
    let head = store.head_position().await.expect("head");
    let read_started = Instant::now();
    let (mut after, mut n_read) = (0, 0);
    loop {
        let page = store.read_all(after, 1_000).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        n_read += page.len();
    }
    let read_rate = n_read as f64 / read_started.elapsed().as_secs_f64();
    drop(store);

    let relay_started = Instant::now();
    let relay = Server::start_with(&data, "relay", &["--kafka-bootstrap", &bootstrap]).await;
    loop {
        let ready: Value = relay
            .get("/ready")
            .await
            .json()
            .await
            .unwrap_or(Value::Null);
        if ready["projections"]["kafka_relay"]["position"]
            .as_u64()
            .is_some_and(|position| position >= head)
        {
            break;
        }
        assert!(
            relay_started.elapsed() < Duration::from_secs(300),
            "the relay did not publish the backlog within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let relay_seconds = relay_started.elapsed().as_secs_f64();
    let relay_rate = n_read as f64 / relay_seconds;
    drop(relay);

    // End-to-end lag: Kafka-fed against log-fed products read models.
    let fed_data = ServerData::new(Setup::Embedded, "kafka bench fed")
        .await
        .expect("embedded");
    let fed = Server::start_with(
        &fed_data,
        "all",
        &[
            "--kafka-bootstrap",
            &bootstrap,
            "--kafka-prefix",
            "lag.",
            "--source",
            "kafka",
        ],
    )
    .await;
    let kafka_lags = lags(&fed, "kafka").await;
    drop(fed);
    let log_data = ServerData::new(Setup::Embedded, "kafka bench log")
        .await
        .expect("embedded");
    let log = Server::start_with(&log_data, "all", &["--log-format", "text"]).await;
    let log_lags = lags(&log, "log").await;
    drop(log);

    let (kafka_p50, kafka_p99) = (percentile(&kafka_lags, 0.50), percentile(&kafka_lags, 0.99));
    let (log_p50, log_p99) = (percentile(&log_lags, 0.50), percentile(&log_lags, 0.99));
    println!();
    println!("| figure | result | baseline (same run) | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| relay: {n_read} events from the store to acknowledged by the broker (includes the role's start) | {relay_rate:.0} events/s ({relay_seconds:.2} s) | reading them from the store alone: {read_rate:.0} events/s | {:.2}x |",
        relay_rate / read_rate
    );
    println!(
        "| append to Kafka-fed products read model, p50 ({LAG_SAMPLES} products, one at a time) | {} | log-fed: {} | {:.2}x |",
        millis(kafka_p50),
        millis(log_p50),
        kafka_p50.as_secs_f64() / log_p50.as_secs_f64()
    );
    println!(
        "| append to Kafka-fed products read model, p99 | {} | log-fed: {} | {:.2}x |",
        millis(kafka_p99),
        millis(log_p99),
        kafka_p99.as_secs_f64() / log_p99.as_secs_f64()
    );
}
