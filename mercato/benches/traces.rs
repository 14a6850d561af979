//! What exporting traces costs, embedded, in one run: cached `GET /products/{id}` (wrk, 8
//! connections) and checkouts confirmed per second (32 customers placing orders and waiting for
//! their confirmation), with export off, on at 10% sampling and on at 100%: three servers side
//! by side, the reads measured in alternating rounds. The spans go over OTLP/HTTP to a collector
//! in this process that takes them and answers as a collector does (so what is measured is
//! mercato's side of it).
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

/// How many rounds of cached reads: each round measures export off, 10% and 100% one after the
/// other, so that the machine's drift (export off alone varies by up to 10% between two runs a
/// minute apart) weighs on all three alike; the ratio reported is the median of the rounds'.
const READ_ROUNDS: usize = 5;

/// One server of the comparison, with its products and logged-in customers.
struct Contender {
    label: &'static str,
    server: Server,
    _data: ServerData,
    product_url: String,
    products: Vec<String>,
    tokens: Vec<String>,
}

async fn start(label: &'static str, variables: &[(&str, &str)]) -> Contender {
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
    Contender {
        label,
        server,
        _data: data,
        product_url,
        products,
        tokens,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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
    let on = |ratio: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", ratio.to_owned()),
        ]
    };
    // The three servers run side by side, idle but for the one measured.
    let mut contenders = vec![start("off", &[]).await];
    for (label, ratio) in [("10%", "0.1"), ("100%", "1.0")] {
        let variables = on(ratio);
        let pairs: Vec<(&str, &str)> = variables
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        contenders.push(start(label, &pairs).await);
    }
    // Cached reads, in rounds of off, 10%, 100%.
    let mut reads: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for round in 1..=READ_ROUNDS {
        for (index, contender) in contenders.iter().enumerate() {
            let measured = wrk(&contender.product_url, 8, None).await;
            eprintln!(
                "round {round}, {}: {:.0} product reads/s (p99 {})",
                contender.label, measured.requests_per_second, measured.p99
            );
            reads[index].push(measured.requests_per_second);
        }
    }
    // Checkouts: off, 10%, 100%, then off again, which brackets the drift.
    let mut checkouts = Vec::new();
    let mut bytes = Vec::new();
    for contender in &contenders {
        let before = exported.load(Ordering::Relaxed);
        let target = ServerTarget::new(&contender.server.base);
        let confirmed = throughput(
            &target,
            &contender.tokens,
            &contender.products,
            true,
            phase_seconds(),
        )
        .await;
        eprintln!("{}: {confirmed:.0} checkouts confirmed/s", contender.label);
        checkouts.push(confirmed);
        bytes.push(exported.load(Ordering::Relaxed) - before);
    }
    let off = &contenders[0];
    let again = throughput(
        &ServerTarget::new(&off.server.base),
        &off.tokens,
        &off.products,
        true,
        phase_seconds(),
    )
    .await;
    eprintln!("off again: {again:.0} checkouts confirmed/s");
    let off_checkouts = (checkouts[0] + again) / 2.0;
    println!(
        "\n| figure | export off | export on | ratio | target |\n| --- | --- | --- | --- | --- |"
    );
    for index in 1..contenders.len() {
        let label = contenders[index].label;
        let target = if label == "10%" { "at least 0.9x" } else { "" };
        let mut ratios: Vec<f64> = reads[index]
            .iter()
            .zip(&reads[0])
            .map(|(on, off)| on / off)
            .collect();
        let shown: Vec<String> = ratios.iter().map(|ratio| format!("{ratio:.2}")).collect();
        let ratio = median(&mut ratios);
        println!(
            "| cached `GET /products/{{id}}`, sampling {label} (median of {READ_ROUNDS} rounds: {}) | {:.0}/s | {:.0}/s | {ratio:.2}x | {target} |",
            shown.join(", "),
            median(&mut reads[0].clone()),
            median(&mut reads[index].clone()),
        );
        println!(
            "| checkouts confirmed/s, sampling {label} ({:.1} MB of spans exported) | {off_checkouts:.0}/s (mean of two runs) | {:.0}/s | {:.2}x | {target} |",
            bytes[index] as f64 / 1e6,
            checkouts[index],
            checkouts[index] / off_checkouts
        );
    }
    println!(
        "\n(export off: {:.0} and {again:.0} checkouts/s in its two runs)",
        checkouts[0]
    );
    for contender in contenders {
        contender.server.terminate().await;
    }
}
