//! Honest checkouts under abuse: eight registered customers browse, fill carts and check out
//! for `BENCH_SECONDS` x 3 alone (the baseline), then as long again while attackers from other
//! loopback addresses send slowloris connections, a burst of 5,000 requests, 1,000 waits for
//! made-up positions, maximal pages, login guesses and orders the gateway never answers
//! (`common::abuse`). Prints the honest checkout p50 and p99 of both phases, the ratio (target:
//! at most 3x), what the attackers were answered, and the server's peak resident memory
//! (target: under 200 MB).

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use common::abuse::{self, SERVER_ARGS};
use common::{Server, ServerData, Setup};
use support::phase_seconds;

#[tokio::main]
async fn main() {
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    let seconds = (phase_seconds() * 3).max(10);
    let data = ServerData::new(Setup::Embedded, "bench_abuse")
        .await
        .expect("data for the server");
    let server = Server::start_with(&data, "all", SERVER_ARGS).await;
    let pid = server.pid().expect("pid");
    let shop = abuse::open_shop(&server, 8).await;
    println!(
        "machine: {} cores; release build, embedded; 8 honest customers, {seconds} s per phase",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let alone = abuse::honest_load(&server, &shop, seconds).await;
    let memory_alone = common::peak_memory_mb(pid);
    let (loaded, attack) = tokio::join!(
        abuse::honest_load(&server, &shop, seconds),
        abuse::attack(&server, &shop, seconds)
    );
    let memory = common::peak_memory_mb(pid);
    let unconfirmed = abuse::unconfirmed(
        &server,
        &[alone.orders.clone(), loaded.orders.clone()].concat(),
        std::time::Duration::from_secs(30),
    )
    .await;
    let p = |values: &[f64], q: f64| abuse::percentile(values, q);
    let (p50_alone, p99_alone) = (p(&alone.checkout_ms, 50.0), p(&alone.checkout_ms, 99.0));
    let (p50_loaded, p99_loaded) = (p(&loaded.checkout_ms, 50.0), p(&loaded.checkout_ms, 99.0));
    println!(
        "honest alone: {} checkouts, p50 {p50_alone:.1} ms, p99 {p99_alone:.1} ms, {} failed",
        alone.checkout_ms.len(),
        alone.failed.len()
    );
    println!(
        "honest under abuse: {} checkouts, p50 {p50_loaded:.1} ms, p99 {p99_loaded:.1} ms, {} failed; {} orders of both phases not confirmed after 30 s",
        loaded.checkout_ms.len(),
        loaded.failed.len(),
        unconfirmed.len()
    );
    println!(
        "attackers' answers by status (0: connection refused or closed): {:?}; 5xx other than 503: {}; slowloris connections closed: {} of {}",
        attack.statuses,
        attack.server_errors(),
        attack.slowloris_closed,
        attack.slowloris_opened
    );
    println!(
        "\n| figure | under abuse | alone | ratio | target |\n| --- | --- | --- | --- | --- |"
    );
    println!(
        "| honest checkout p99 | {p99_loaded:.1} ms | {p99_alone:.1} ms | {:.2}x | at most 3x |",
        p99_loaded / p99_alone.max(0.001)
    );
    println!(
        "| honest checkout p50 | {p50_loaded:.1} ms | {p50_alone:.1} ms | {:.2}x | |",
        p50_loaded / p50_alone.max(0.001)
    );
    println!(
        "| honest checkouts | {} | {} | {:.2}x | all confirmed |",
        loaded.checkout_ms.len(),
        alone.checkout_ms.len(),
        loaded.checkout_ms.len() as f64 / (alone.checkout_ms.len().max(1)) as f64
    );
    println!(
        "| server peak resident memory | {memory:.0} MB | {memory_alone:.0} MB | {:.2}x | under 200 MB |",
        memory / memory_alone.max(1.0)
    );
    server.kill().await;
}
