//! HTTP benchmarks of the release build, embedded: write-to-searchable latency, and load from a
//! second process (wrk, from Debian's `wrk` package) on product reads, searches over 10,000
//! products and product writes, with the server's peak resident memory. Baselines of the same
//! run: `GET /health` (the HTTP layer alone) for reads, and the same product commands run
//! straight on an embedded store (no HTTP) for writes.
//!
//! Callers authenticate as real clients do: the catalogue writes carry the admin API key the
//! harness made with `mercato api-keys create`; the catalogue reads are anonymous, as a shopper
//! browsing, and are also measured with a registered customer's access token, alternated with
//! the same reads without one (with, without, with, without), so the cost of a token shows
//! beside the noise. Those runs start once the projections have settled (a login appends
//! events, and the search projection drops every cached search after each batch it applies),
//! the searches after one unmeasured run that fills the cache again. Logins (`POST /sessions`,
//! a customer's right password) run on a server of their own, one client at a time for latency
//! and 8 wrk connections for throughput, against argon2id checks with the same parameters
//! computed in this process.
//!
//! Run with `just bench` or `cargo bench -p mercato --bench http`. BENCH_SECONDS (default 5)
//! sets the length of each load phase.

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Api, Server, ServerData, Setup, peak_memory_mb, status_mb};
use identity::password::{ARGON2_ITERATIONS, ARGON2_MEMORY_KIB, ARGON2_PARALLELISM};
use serde_json::{Value, json};
use support::{WrkResult, percentile, phase_seconds, wrk};

/// Registered customers logging in concurrently in the throughput phase: each wrk thread takes
/// its turn through half of them, so no account has two logins in flight at once.
const LOGIN_ACCOUNTS: usize = 32;
/// Logins one at a time, for their latency.
const LOGIN_SAMPLES: usize = 300;

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// A word unique per call that no stemmer shortens (digits inside, a consonant at the end).
fn token(n: u64) -> String {
    format!("w{n}q")
}

/// `script` with every request carrying `Authorization: Bearer {credential}`.
fn with_bearer(credential: &str, script: &str) -> String {
    format!("wrk.headers[\"Authorization\"] = [==[Bearer {credential}]==]\n{script}")
}

/// A Lua long string holding `text` (JSON without `]==]`).
fn lua_string(text: &str) -> String {
    assert!(!text.contains("]==]"), "{text}");
    format!("[==[{text}]==]")
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

/// The current resident memory split into heap and other anonymous memory (`RssAnon`) and
/// mapped files such as the search index (`RssFile`), in MB.
fn rss_split_mb(pid: u32) -> (f64, f64) {
    (status_mb(pid, "RssAnon:"), status_mb(pid, "RssFile:"))
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

/// argon2id password checks in this process, with the parameters a login uses
/// (`identity::password::verify_password`, one hash each), `threads` at once for a phase: checks
/// per second and the sorted durations of each.
async fn argon2_verifies(threads: usize) -> (f64, Vec<Duration>) {
    let password = "a bench passphrase of ordinary length".to_owned();
    let hash = identity::password::hash_password(password.clone())
        .await
        .expect("hash");
    let deadline = Instant::now() + Duration::from_secs(phase_seconds());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..threads {
        let (password, hash) = (password.clone(), hash.clone());
        tasks.push(tokio::spawn(async move {
            let mut durations = Vec::new();
            while Instant::now() < deadline {
                let one = Instant::now();
                let matches = identity::password::verify_password(password.clone(), hash.clone())
                    .await
                    .expect("verify");
                assert!(matches, "the password matches its hash");
                durations.push(one.elapsed());
            }
            durations
        }));
    }
    let mut durations = Vec::new();
    for task in tasks {
        durations.extend(task.await.expect("verifier"));
    }
    let rate = durations.len() as f64 / started.elapsed().as_secs_f64();
    durations.sort();
    (rate, durations)
}

/// What the login phases measured.
struct Logins {
    /// One client, one login at a time: sorted latencies.
    latencies: Vec<Duration>,
    /// 8 wrk connections.
    saturated: WrkResult,
    /// The login server's peak resident memory.
    peak_mb: f64,
}

/// Logins on a server of their own: [`LOGIN_ACCOUNTS`] customers registered, then
/// [`LOGIN_SAMPLES`] logins one at a time, then 8 wrk connections logging them in in turn.
async fn logins() -> Logins {
    let data = ServerData::new(Setup::Embedded, "bench logins")
        .await
        .expect("embedded data");
    let server = Server::start(&data).await;
    let pid = server.pid().expect("pid");
    let mut registrations = Vec::new();
    for index in 0..LOGIN_ACCOUNTS {
        let api = Api::clone(&server);
        registrations.push(tokio::spawn(async move {
            api.register_customer(&format!("shopper{index}")).await
        }));
    }
    let mut customers = Vec::new();
    for registration in registrations {
        customers.push(registration.await.expect("registration"));
    }
    let anonymous = server.anonymous();
    let mut latencies = Vec::with_capacity(LOGIN_SAMPLES);
    for sample in 0..LOGIN_SAMPLES {
        let customer = &customers[sample % LOGIN_ACCOUNTS];
        let started = Instant::now();
        let response = anonymous
            .request(reqwest::Method::POST, "/sessions")
            .json(&json!({"email": customer.email, "password": customer.password}))
            .send()
            .await
            .expect("log in");
        assert_eq!(response.status(), 200, "log in {}", customer.email);
        response.bytes().await.expect("session");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    // wrk's two threads each take their turn through their half of the accounts (`offset` 0
    // or 1), 16 accounts for at most 4 connections each, so no account has two logins in flight.
    let bodies: Vec<String> = customers
        .iter()
        .map(|customer| {
            lua_string(&json!({"email": customer.email, "password": customer.password}).to_string())
        })
        .collect();
    let login_script = format!(
        r#"
        wrk.method = "POST"
        wrk.headers["Content-Type"] = "application/json"
        local bodies = {{ {} }}
        local threads = 0
        function setup(thread)
            thread:set("offset", threads)
            threads = threads + 1
        end
        local n = 0
        function request()
            n = n + 1
            return wrk.format(nil, nil, nil, bodies[((n * 2 + offset) % #bodies) + 1])
        end
    "#,
        bodies.join(", ")
    );
    let saturated = wrk(&format!("{}/sessions", server.base), 8, Some(&login_script)).await;
    let peak_mb = peak_memory_mb(pid);
    server.kill().await;
    Logins {
        latencies,
        saturated,
        peak_mb,
    }
}

/// A wrk run with a customer's access token and the same without one, right after it.
struct TokenPair {
    with: WrkResult,
    without: WrkResult,
}

/// A registered customer and its access token, with when it was issued.
struct Shopper {
    email: String,
    password: String,
    token: String,
    issued: Instant,
}

/// Waits until every projection is caught up, at positions unchanged for a quarter of a
/// second: nothing is left to apply, so no projection drops cached answers during the next run
/// (the search projection drops every cached search after each batch it applies, whatever its
/// events). `/ready` shows the projections to staff and services only: `credential` is the
/// admin key. At most 60 s.
async fn quiesce(client: &reqwest::Client, base: &str, credential: &str) {
    let started = Instant::now();
    let mut last: Option<Vec<u64>> = None;
    while started.elapsed() < Duration::from_secs(60) {
        let ready: Value = client
            .get(format!("{base}/ready"))
            .bearer_auth(credential)
            .send()
            .await
            .expect("get /ready")
            .json()
            .await
            .expect("json");
        let projections: Vec<&Value> = ready["projections"]
            .as_object()
            .map(|projections| projections.values().collect())
            .unwrap_or_default();
        let caught_up = !projections.is_empty()
            && projections
                .iter()
                .all(|projection| projection["caught_up"] == true);
        let positions: Vec<u64> = projections
            .iter()
            .filter_map(|projection| projection["position"].as_u64())
            .collect();
        if caught_up && last.as_ref() == Some(&positions) {
            return;
        }
        last = caught_up.then_some(positions);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("the projections did not settle within 60 s");
}

/// Alternates `url` with the shopper's access token and without one, `rounds` times, 8
/// connections each; `script` is the requests' own Lua (or none). First the projections settle
/// and, when `warm_up`, an unmeasured run without a token fills the cache, so that the first
/// run with a token starts from the cache the others start from.
async fn token_pairs(
    server: &Server,
    shopper: &mut Shopper,
    url: &str,
    script: &str,
    rounds: usize,
    warm_up: bool,
) -> Vec<TokenPair> {
    let client = reqwest::Client::new();
    let admin_key = server.credentials().expect("the admin API key").to_owned();
    let without_script = (!script.is_empty()).then_some(script);
    let settle = async || {
        quiesce(&client, &server.base, &admin_key).await;
        if warm_up {
            wrk(url, 8, without_script).await;
        }
    };
    settle().await;
    let mut pairs = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // The token must outlive the pair. A new one means a login, whose events make the
        // projections drop cached answers: they settle again before the next measured run.
        let pair_time = Duration::from_secs(2 * phase_seconds() + 60);
        if shopper.issued.elapsed() + pair_time > identity::signing::ACCESS_TOKEN_TTL {
            shopper.token = server
                .log_in(&shopper.email, &shopper.password)
                .await
                .access_token;
            shopper.issued = Instant::now();
            settle().await;
        }
        let with = wrk(url, 8, Some(&with_bearer(&shopper.token, script))).await;
        let without = wrk(url, 8, without_script).await;
        pairs.push(TokenPair { with, without });
    }
    pairs
}

/// The table rows of `pairs`: each run with its ratio, and the runs together.
fn print_token_rows(figure: &str, pairs: &[TokenPair]) {
    for (index, pair) in pairs.iter().enumerate() {
        println!(
            "| {figure}, customer's access token, run {} of {} | {:.0}/s, p50 {}, p99 {} ({} non-2xx) | without a token, run right after: {:.0}/s, p50 {}, p99 {} ({} non-2xx) | {:.2}x | >= 0.9x |",
            index + 1,
            pairs.len(),
            pair.with.requests_per_second,
            pair.with.p50,
            pair.with.p99,
            pair.with.non_2xx,
            pair.without.requests_per_second,
            pair.without.p50,
            pair.without.p99,
            pair.without.non_2xx,
            pair.with.requests_per_second / pair.without.requests_per_second,
        );
    }
    let with: f64 = pairs.iter().map(|pair| pair.with.requests_per_second).sum();
    let without: f64 = pairs
        .iter()
        .map(|pair| pair.without.requests_per_second)
        .sum();
    println!(
        "| {figure}, customer's access token, the {} runs together | {:.0}/s a run | without a token: {:.0}/s a run | {:.2}x | >= 0.9x |",
        pairs.len(),
        with / pairs.len() as f64,
        without / pairs.len() as f64,
        with / without,
    );
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
    // Reads as a shopper browsing the catalogue: anonymous.
    let client = reqwest::Client::new();
    // Catalogue writes with the harness's admin API key.
    let admin_key = server.credentials().expect("the admin API key").to_owned();
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Write to searchable: 1,000 products, each searched for until found.
    let mut latencies = Vec::with_capacity(1_000);
    eprintln!("peak memory at start: {:.0} MB", peak_memory_mb(pid));
    for product_idx in 0..1_000_u64 {
        let word = token(product_idx);
        let response = server
            .request(reqwest::Method::POST, "/products")
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
        peak_memory_mb(pid)
    );
    // Fill the catalogue to 10,000 products for the search load.
    let mut fillers = Vec::new();
    for writer_idx in 0..8_u64 {
        let api = Api::clone(&server);
        fillers.push(tokio::spawn(async move {
            let words = ["trail", "espresso", "kettle", "lamp", "atlas", "tent", "keyboard", "tea"];
            for product_idx in 0..1_125_u64 {
                let word = words[((writer_idx + product_idx) % 8) as usize];
                let response = api
                    .request(reqwest::Method::POST, "/products")
                    .json(&json!({"name": format!("{word} model {writer_idx}-{product_idx}"), "description": format!("a {word} for every day"), "price": 5 + (product_idx % 300), "stock_qty": 10, "category": "Bench"}))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(response.status(), 201);
            }
        }));
    }
    for filler in fillers {
        filler.await.expect("filler");
    }
    let last = server
        .request(reqwest::Method::POST, "/products")
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
        peak_memory_mb(pid)
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
        peak_memory_mb(pid)
    );
    let search = wrk(&format!("{base}/search"), 8, Some(search_script)).await;
    eprintln!(
        "peak memory after the searches: {:.0} MB",
        peak_memory_mb(pid)
    );
    // The same reads as a logged-in customer's client sends them, alternated with the same
    // without a token: with, without, with, without.
    let registered = server.register_customer("shopper").await;
    let mut shopper = Shopper {
        email: registered.email.clone(),
        password: registered.password.clone(),
        token: registered.session.access_token.clone(),
        issued: Instant::now(),
    };
    let with_token = client
        .get(format!("{base}/products/{product_id}"))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .expect("get");
    assert_eq!(
        with_token.status(),
        200,
        "a customer's token reads the catalogue"
    );
    let search_token_pairs = token_pairs(
        &server,
        &mut shopper,
        &format!("{base}/search"),
        search_script,
        2,
        true,
    )
    .await;
    let product_token_pairs = token_pairs(
        &server,
        &mut shopper,
        &format!("{base}/products/{product_id}"),
        "",
        2,
        false,
    )
    .await;
    eprintln!(
        "peak memory after the reads with a token: {:.0} MB",
        peak_memory_mb(pid)
    );
    let write_body = r#"
        wrk.method = "POST"
        wrk.headers["Content-Type"] = "application/json"
        wrk.body = '{"name":"Load product","description":"written under load","price":12.5,"stock_qty":3,"category":"Bench"}'
    "#;
    let write_script = with_bearer(&admin_key, write_body);
    let writes = wrk(&format!("{base}/products"), 16, Some(&write_script)).await;
    let rss = peak_memory_mb(pid);
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
    let writer_script = with_bearer(writer.credentials().expect("admin API key"), write_body);
    let writes_alone = wrk(&format!("{writer_base}/products"), 16, Some(&writer_script)).await;
    writer.kill().await;
    let direct = direct_writes(16).await;
    // Password checks in this process with no server running: one at a time, then two at once
    // (the machine's two cores).
    let (verifies_one, verify_durations) = argon2_verifies(1).await;
    let (verifies_two, _) = argon2_verifies(2).await;
    let logins = logins().await;

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
    print_token_rows(
        "GET /products/{id} cached, 8 connections",
        &product_token_pairs,
    );
    print_token_rows(
        "GET /search, random words and price floors, 8 connections, after a warm-up run",
        &search_token_pairs,
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
    let argon2 = format!(
        "argon2id m={ARGON2_MEMORY_KIB} KiB, t={ARGON2_ITERATIONS}, p={ARGON2_PARALLELISM}"
    );
    let (login_p50, login_p99) = (
        percentile(&logins.latencies, 0.5),
        percentile(&logins.latencies, 0.99),
    );
    let (verify_p50, verify_p99) = (
        percentile(&verify_durations, 0.5),
        percentile(&verify_durations, 0.99),
    );
    println!(
        "| POST /sessions, a customer's right password ({argon2}), one client, {} logins: p50 | {} | one argon2id check in the bench process, one at a time: p50 {} | {:.2}x | |",
        logins.latencies.len(),
        millis(login_p50),
        millis(verify_p50),
        verify_p50.as_secs_f64() / login_p50.as_secs_f64(),
    );
    println!(
        "| POST /sessions, the same, p99 | {} | the same check, p99 {} | {:.2}x | |",
        millis(login_p99),
        millis(verify_p99),
        verify_p99.as_secs_f64() / login_p99.as_secs_f64(),
    );
    println!(
        "| POST /sessions ({argon2}), 8 connections over {LOGIN_ACCOUNTS} customers | {:.0} logins/s, p50 {}, p99 {} ({} non-2xx) | argon2id checks in the bench process, two at once: {verifies_two:.0}/s (one at a time: {verifies_one:.0}/s) | {:.2}x | |",
        logins.saturated.requests_per_second,
        logins.saturated.p50,
        logins.saturated.p99,
        logins.saturated.non_2xx,
        logins.saturated.requests_per_second / verifies_two,
    );
    println!(
        "| login server peak resident memory (role all, registrations and logins only) | {:.0} MB | - | - | |",
        logins.peak_mb
    );
}
