//! The abuse suite: while attackers from other loopback addresses send slowloris connections, a
//! burst of 5,000 requests, 1,000 concurrent waits for made-up positions, maximal pages, login
//! guesses and 200 orders the gateway never answers, every honest customer's checkout completes
//! and is confirmed; the attackers get 2xx, 4xx (429 among them) and 503 with `Retry-After`,
//! never another 5xx. It prints the honest p99 and the server's peak memory (the bench
//! `abuse` measures them against the same honest load without attackers).
//!
//! A test binary of its own (the crate's other tests are modules of `tests/it`): it loads both
//! cores for its 15 s, so it runs alone, after the others, instead of starving them.

#[path = "it/common/mod.rs"]
mod common;

use std::time::Duration;

use common::Server;
use common::abuse::{self, SERVER_ARGS};
use server::testing::{Setup, TestData};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn honest_customers_are_served_while_hostile_clients_are_refused() {
    let Some(data) = TestData::new(Setup::Embedded, "abuse").await else {
        return;
    };
    let server = Server::start_with(&data, "all", SERVER_ARGS).await;
    let pid = server.pid().expect("pid");
    let shop = abuse::open_shop(&server, 8).await;
    let (honest, attack) = tokio::join!(
        abuse::honest_load(&server, &shop, 15),
        abuse::attack(&server, &shop, 15)
    );
    println!(
        "honest checkouts: {} (p50 {:.1} ms, p99 {:.1} ms); attackers' answers {:?}; slowloris {} of {} closed; server peak memory {:.0} MB",
        honest.checkout_ms.len(),
        abuse::percentile(&honest.checkout_ms, 50.0),
        abuse::percentile(&honest.checkout_ms, 99.0),
        attack.statuses,
        attack.slowloris_closed,
        attack.slowloris_opened,
        common::peak_memory_mb(pid),
    );
    if !honest.failed.is_empty() {
        // What the server logged about it (a panic's message, an error's id).
        let log =
            std::fs::read_to_string(data.data_dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("panicked") || line.contains("ERROR"))
            .take(20)
            .collect();
        panic!(
            "honest requests failed: {:?}\nthe server logged:\n{}",
            honest.failed,
            lines.join("\n")
        );
    }
    assert!(honest.checkout_ms.len() >= 8, "{:?}", honest.checkout_ms);
    let unconfirmed = abuse::unconfirmed(&server, &honest.orders, Duration::from_secs(30)).await;
    assert!(
        unconfirmed.is_empty(),
        "honest orders not confirmed: {unconfirmed:?}"
    );
    assert_eq!(attack.server_errors(), 0, "{:?}", attack.statuses);
    assert_eq!(attack.unavailable_without_retry_after, 0);
    assert!(
        attack
            .statuses
            .get(&429)
            .is_some_and(|count| *count > 1_000),
        "{:?}",
        attack.statuses
    );
    assert!(
        attack.statuses.contains_key(&422),
        "the slow orders hit their cap: {:?}",
        attack.statuses
    );
    assert_eq!(
        attack.slowloris_closed, attack.slowloris_opened,
        "every slow connection was refused or closed"
    );
    server.kill().await;
}
