//! What exporting traces costs, embedded, in one run: cached `GET /products/{id}` (wrk, 8
//! connections) and checkouts confirmed per second (32 customers placing orders and waiting for
//! their confirmation), with export off, on at 10% sampling and on at 100%, each against the
//! same server with export off. The spans go over OTLP/HTTP to a collector in this process that
//! takes them and answers as a collector does (so what is measured is mercato's side of it).
//!
//! Run with `just bench` or `cargo bench -p mercato --bench traces`. BENCH_SECONDS (default 5)
//! sets each phase.

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Server, ServerData, Setup};
use support::shop::{ServerTarget, create_products, log_in_all, register, throughput};
use support::{phase_seconds, wrk};

/// A collector in this process: takes every POST of spans and counts their bytes.
async fn collector() -> (String, Arc<AtomicU64>) {
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(body.len() as u64, Ordering::Relaxed);
                // An empty ExportTraceServiceResponse: every span taken.
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, bytes)
}

/// Product reads per second and checkouts confirmed per second of one server.
async fn measure(label: &str, variables: &[(&str, &str)]) -> (f64, f64) {
    let data = ServerData::new(Setup::Embedded, &format!("bench_traces_{label}"))
        .await
        .expect("embedded");
    let server = Server::start_with_env(
        &data,
        "all",
        &["--payment-timeout", "30"],
        "warn",
        variables,
    )
    .await;
    let products = create_products(&server, "Traced item", 50, 100_000_000).await;
    let customers = register(&server, support::shop::CLIENTS).await;
    let tokens = log_in_all(&server, &customers).await;
    let product_url = format!("{}/products/{}", server.base, products[0]);
    // Once into the cache, then measured.
    let _ = reqwest::get(&product_url).await;
    let reads = wrk(&product_url, 8, None).await;
    let target = ServerTarget::new(&server.base);
    let checkouts = throughput(&target, &tokens, &products, true, phase_seconds()).await;
    server.terminate().await;
    eprintln!(
        "{label}: {:.0} product reads/s (p99 {}), {checkouts:.0} checkouts confirmed/s",
        reads.requests_per_second, reads.p99
    );
    (reads.requests_per_second, checkouts)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (endpoint, exported) = collector().await;
    let on = |ratio: &'static str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", ratio.to_owned()),
        ]
    };
    // Off, 10%, 100%, then off again: the two baselines bracket the drift of the machine.
    let mut rows = Vec::new();
    let off_first = measure("off", &[]).await;
    for (label, ratio) in [("10%", "0.1"), ("100%", "1.0")] {
        let variables = on(ratio);
        let pairs: Vec<(&str, &str)> = variables
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let before = exported.load(Ordering::Relaxed);
        let measured = measure(label, &pairs).await;
        let bytes = exported.load(Ordering::Relaxed) - before;
        rows.push((label, measured, bytes));
    }
    let off_last = measure("off again", &[]).await;
    let off = (
        (off_first.0 + off_last.0) / 2.0,
        (off_first.1 + off_last.1) / 2.0,
    );
    println!(
        "\n| figure | export off (mean of two runs) | export on | ratio | target |\n| --- | --- | --- | --- | --- |"
    );
    for (label, (reads, checkouts), bytes) in rows {
        let target = if label == "10%" { "at least 0.9x" } else { "" };
        println!(
            "| cached `GET /products/{{id}}`, sampling {label} | {:.0}/s | {reads:.0}/s | {:.2}x | {target} |",
            off.0,
            reads / off.0
        );
        println!(
            "| checkouts confirmed/s, sampling {label} ({:.1} MB of spans exported) | {:.0}/s | {checkouts:.0}/s | {:.2}x | {target} |",
            bytes as f64 / 1e6,
            off.1,
            checkouts / off.1
        );
    }
    println!(
        "\n(export off: {:.0} and {:.0} reads/s, {:.0} and {:.0} checkouts/s in its two runs)",
        off_first.0, off_last.0, off_first.1, off_last.1
    );
}
