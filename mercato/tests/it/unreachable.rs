//! A dependency that cannot be reached is one line on stderr naming it, and exit 1, within its
//! connect timeout: a refused port and a peer that accepts and never answers alike, for the
//! server and for the commands beside it.

use std::time::{Duration, Instant};

use crate::common::mercato_async;

/// Longer than Redis's 5 s connect timeout, far shorter than a hang.
const BOUND: Duration = Duration::from_secs(20);

async fn fails_naming_redis(args: &[&str], dir: &std::path::Path, redis_url: &str) {
    let started = Instant::now();
    let mut command = mercato_async();
    command
        .args(args)
        .args(["--data-dir", &dir.display().to_string()])
        .env("REDIS_URL", redis_url)
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BOOTSTRAP")
        .env_remove("OPENSEARCH_URL");
    let output = tokio::time::timeout(BOUND, command.output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} with {redis_url} still ran after {BOUND:?}"))
        .expect("the mercato binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.contains("cannot connect to Redis at") && stderr.contains("REDIS_URL"),
        "{args:?}: {stderr}"
    );
    assert!(started.elapsed() < BOUND, "{args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_named_and_ends_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let migrated = mercato_async()
        .args(["migrate", "--data-dir", &data.display().to_string()])
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .output()
        .await
        .expect("migrate runs");
    assert!(migrated.status.success(), "{migrated:?}");

    // A port nothing listens on.
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // A peer that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    for port in [refused, silent_port] {
        let url = format!("redis://127.0.0.1:{port}/0");
        fails_naming_redis(&["serve", "--listen", "127.0.0.1:0"], &data, &url).await;
        fails_naming_redis(&["projections"], &data, &url).await;
    }
    keep.abort();
}
