//! HTTP benchmarks of the release build, embedded: write-to-searchable latency, and load from a
//! second process (wrk, from Debian's `wrk` package) on product reads, searches over 10,000
//! products and product writes, with the server's peak resident memory. Baselines of the same
//! run: `GET /health` (the HTTP layer alone) for reads, and the same product commands run
//! straight on an embedded store (no HTTP) for writes.
//!
//! Run with `just bench` or `cargo bench -p mercato --bench http`. BENCH_SECONDS (default 5)
//! sets the length of each load phase.

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Server, ServerData, Setup};
use serde_json::{Value, json};
use support::{percentile, phase_seconds};
use tokio::process::Command;

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// A word unique per call that no stemmer shortens (digits inside, a consonant at the end).
fn token(n: u64) -> String {
    format!("w{n}q")
}

struct WrkResult {
    requests_per_second: f64,
    p50: String,
    p99: String,
    non_2xx: u64,
}

/// Runs wrk against `url` with an optional Lua script; parses its summary.
async fn wrk(url: &str, connections: u32, script: Option<&str>) -> WrkResult {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{}s", phase_seconds()),
        "--latency",
    ]);
    let script_file = script.map(|script| {
        let file = tempfile::NamedTempFile::new().expect("script file");
        std::fs::write(file.path(), script).expect("write script");
        file
    });
    if let Some(file) = &script_file {
        command.arg("-s").arg(file.path());
    }
    command.arg(url);
    let output = command.output().await.unwrap_or_else(|error| {
        eprintln!("error: cannot run wrk ({error}); install it: apt-get install wrk");
        std::process::exit(1);
    });
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix(prefix)
                    .map(|rest| rest.trim().to_owned())
            })
            .unwrap_or_else(|| "?".to_owned())
    };
    let requests_per_second = find("Requests/sec:").parse().unwrap_or(0.0);
    let non_2xx = find("Non-2xx or 3xx responses:").parse().unwrap_or(0);
    WrkResult {
        requests_per_second,
        p50: find("50%"),
        p99: find("99%"),
        non_2xx,
    }
}

/// The JSON answer of a GET.
async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// A `kB` field of the server's `/proc/PID/status`, in MB (0 when unreadable).
fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The current resident memory split into heap and other anonymous memory (`RssAnon`) and
/// mapped files such as the search index (`RssFile`), in MB.
fn rss_split_mb(pid: u32) -> (f64, f64) {
    (status_mb(pid, "RssAnon:"), status_mb(pid, "RssFile:"))
}

/// The peak resident memory so far (`VmHWM`), in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmHWM:")
}

/// Product commands straight on an embedded store, `n_writers` at once: the write baseline.
async fn direct_writes(n_writers: usize) -> f64 {
    let directory = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", directory.path().join("direct.db").display());
    let store = eventstore::open(&url).await.expect("store");
    let n_done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(phase_seconds());
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..n_writers {
        let (store, n_done) = (store.clone(), n_done.clone());
        writers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let product_id = uuid::Uuid::new_v4();
                let command = domain::ProductCommand::CreateProduct {
                    product_id,
                    name: "Bench product".to_owned(),
                    description: "Written straight to the store".to_owned(),
                    price: domain::Money::from_minor(999),
                    stock_qty: 10,
                    category: Some("Bench".to_owned()),
                };
                eventstore::aggregate::execute::<domain::Product>(
                    store.as_ref(),
                    &product_id.to_string(),
                    command,
                    &(),
                    &eventstore::EventMetadata::default(),
                    &eventstore::aggregate::CommandOptions::default(),
                )
                .await
                .expect("command");
                n_done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    n_done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    // Before the server starts: a failing run must not leave it running.
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("error: cannot run wrk; install it: apt-get install wrk");
        std::process::exit(1);
    }
    let data = ServerData::new(Setup::Embedded, "bench")
        .await
        .expect("embedded data");
    let server = Server::start(&data).await;
    let pid = server.pid().expect("pid");
    let base = server.base.clone();
    let client = reqwest::Client::new();
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Write to searchable: 1,000 products, each searched for until found.
    let mut latencies = Vec::with_capacity(1_000);
    eprintln!("peak memory at start: {:.0} MB", peak_rss_mb(pid));
    for product_idx in 0..1_000_u64 {
        let word = token(product_idx);
        let response = client
            .post(format!("{base}/products"))
            .json(&json!({"name": format!("Searchable {word}"), "description": "bench", "price": 10, "stock_qty": 1, "category": "Bench"}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.expect("json");
        let product_id = created["product_id"].clone();
        let answered = Instant::now();
        loop {
            let body = get_json(&client, &format!("{base}/search?q={word}")).await;
            let found = body["hits"]
                .as_array()
                .is_some_and(|hits| hits.iter().any(|hit| hit["product_id"] == product_id));
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(answered.elapsed());
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));

    eprintln!(
        "peak memory after write to searchable: {:.0} MB",
        peak_rss_mb(pid)
    );
    // Fill the catalogue to 10,000 products for the search load.
    let mut fillers = Vec::new();
    for writer_idx in 0..8_u64 {
        let (client, base) = (client.clone(), base.clone());
        fillers.push(tokio::spawn(async move {
            let words = ["trail", "espresso", "kettle", "lamp", "atlas", "tent", "keyboard", "tea"];
            for product_idx in 0..1_125_u64 {
                let word = words[((writer_idx + product_idx) % 8) as usize];
                client
                    .post(format!("{base}/products"))
                    .json(&json!({"name": format!("{word} model {writer_idx}-{product_idx}"), "description": format!("a {word} for every day"), "price": 5 + (product_idx % 300), "stock_qty": 10, "category": "Bench"}))
                    .send()
                    .await
                    .expect("post");
            }
        }));
    }
    for filler in fillers {
        filler.await.expect("filler");
    }
    let last = client
        .post(format!("{base}/products"))
        .json(&json!({"name": "Cached product", "description": "read under load", "price": 20, "stock_qty": 1}))
        .send()
        .await
        .expect("post");
    let position: u64 = last.headers()["x-event-position"]
        .to_str()
        .expect("header")
        .parse()
        .expect("position");
    let product: Value = last.json().await.expect("json");
    let product_id = product["product_id"].as_str().expect("id").to_owned();
    let caught_up = client
        .get(format!("{base}/search?q=cached&min_position={position}"))
        .send()
        .await
        .expect("search");
    assert_eq!(caught_up.status(), 200);
    let searched = get_json(&client, &format!("{base}/search?limit=1")).await;
    let n_products = searched["total"].as_u64().unwrap_or(0);

    eprintln!(
        "peak memory after loading the catalogue: {:.0} MB",
        peak_rss_mb(pid)
    );
    let health = wrk(&format!("{base}/health"), 8, None).await;
    let product_read = wrk(&format!("{base}/products/{product_id}"), 8, None).await;
    // The target's rate: 4 connections, each pausing 2 ms before every request (wrk's `delay`),
    // about 2,000 requests a second; the latency wrk reports excludes the pause.
    let paced_script = "delay = function() return 2 end";
    let product_paced = wrk(
        &format!("{base}/products/{product_id}"),
        4,
        Some(paced_script),
    )
    .await;
    let search_script = r#"
        local words = {"trail", "espresso", "kettle", "lamp", "atlas", "tent", "keyboard", "tea", "model", "day"}
        request = function()
            local path = "/search?q=" .. words[math.random(#words)] .. "&min_price=" .. math.random(0, 300)
            return wrk.format("GET", path)
        end
    "#;
    eprintln!(
        "peak memory after the product reads: {:.0} MB",
        peak_rss_mb(pid)
    );
    let search = wrk(&format!("{base}/search"), 8, Some(search_script)).await;
    eprintln!("peak memory after the searches: {:.0} MB", peak_rss_mb(pid));
    let write_script = r#"
        wrk.method = "POST"
        wrk.headers["Content-Type"] = "application/json"
        wrk.body = '{"name":"Load product","description":"written under load","price":12.5,"stock_qty":3,"category":"Bench"}'
    "#;
    let writes = wrk(&format!("{base}/products"), 16, Some(write_script)).await;
    let rss = peak_rss_mb(pid);
    let (anon, file) = rss_split_mb(pid);
    eprintln!("resident now: {anon:.0} MB anonymous (heap), {file:.0} MB mapped files");
    server.kill().await;
    // The same writes to a process that only runs the command API: HTTP and store, without the
    // projections competing for the two cores.
    let writes_data = ServerData::new(Setup::Embedded, "bench")
        .await
        .expect("embedded data");
    let writer = Server::start_role(&writes_data, "command-api").await;
    let writer_base = writer.base.clone();
    let writes_alone = wrk(&format!("{writer_base}/products"), 16, Some(write_script)).await;
    writer.kill().await;
    let direct = direct_writes(16).await;

    println!("\n| figure | ours | baseline | ratio | target |\n| --- | --- | --- | --- | --- |");
    println!(
        "| write to searchable, p50 (1,000 products) | {} | - | - | |",
        millis(p50)
    );
    println!(
        "| write to searchable, p99 (1,000 products) | {} | - | - | < 50 ms |",
        millis(p99)
    );
    println!(
        "| GET /products/{{id}} cached, 4 connections paced to about 2,000/s | {:.0}/s, p50 {}, p99 {} | - | - | p99 < 2 ms at 2,000/s |",
        product_paced.requests_per_second, product_paced.p50, product_paced.p99,
    );
    println!(
        "| GET /products/{{id}} cached, 8 connections, as fast as it goes | {:.0}/s, p50 {}, p99 {} | GET /health {:.0}/s, p99 {} | {:.2}x | |",
        product_read.requests_per_second,
        product_read.p50,
        product_read.p99,
        health.requests_per_second,
        health.p99,
        product_read.requests_per_second / health.requests_per_second
    );
    println!(
        "| GET /search over {n_products} products, random words and price floors, 8 connections | {:.0}/s, p50 {}, p99 {} | GET /health {:.0}/s | {:.2}x | p99 < 10 ms |",
        search.requests_per_second,
        search.p50,
        search.p99,
        health.requests_per_second,
        search.requests_per_second / health.requests_per_second
    );
    println!(
        "| POST /products, 16 connections, role all (projections running) | {:.0}/s, p50 {}, p99 {} ({} non-2xx) | same commands on the store, no HTTP, 16 writers: {direct:.0}/s | {:.2}x | limited by the store |",
        writes.requests_per_second,
        writes.p50,
        writes.p99,
        writes.non_2xx,
        writes.requests_per_second / direct
    );
    println!(
        "| POST /products, 16 connections, command-api role alone | {:.0}/s, p50 {}, p99 {} ({} non-2xx) | same commands on the store, no HTTP: {direct:.0}/s | {:.2}x | limited by the store |",
        writes_alone.requests_per_second,
        writes_alone.p50,
        writes_alone.p99,
        writes_alone.non_2xx,
        writes_alone.requests_per_second / direct
    );
    println!(
        "| server peak resident memory (role all, through every phase above) | {rss:.0} MB | - | - | < 150 MB |"
    );
}
