//! Opening the platform: a dependency that does not answer is named within seconds.

use std::time::{Duration, Instant};

use server::testing::{Setup, TestData};
use server::{Access, Platform};

/// A Redis nobody listens on (a closed port) and one that never answers (a listener that
/// accepts and says nothing) both fail the opening within the connect timeout, naming the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_within_seconds_naming_it() {
    let Some(data) = TestData::new(Setup::Embedded, "redis_unreachable").await else {
        return;
    };
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_port = silent.local_addr().expect("address").port();
    let accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    for port in [closed, silent_port] {
        let url = format!("redis://127.0.0.1:{port}/0");
        let config = data.config("all", &["--redis-url", &url]);
        let started = Instant::now();
        let error = Platform::open(&config, Access::Reader)
            .await
            .expect_err("opened a platform on a Redis that does not answer");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(15), "{url}: took {took:?}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("Redis at {url}")),
            "{url}: {message}"
        );
    }
    accepted.abort();
}
