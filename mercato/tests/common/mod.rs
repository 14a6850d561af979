//! Starts the real `mercato serve` binary on port 0 for end-to-end tests: embedded in a
//! temporary directory, or on a PostgreSQL database of its own with Redis.

#![allow(dead_code)]

pub mod broker;
pub mod replay;

use std::process::Stdio;
use std::time::{Duration, Instant};

use eventstore::testing::{TestDatabase, redis_url};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where a test server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// No configuration: SQLite, Tantivy and the in-process cache under a temporary directory.
    Embedded,
    /// `DATABASE_URL` (a database of the test's own) and `REDIS_URL`.
    PostgresRedis,
}

/// What a server is started with; kept to start it again on the same data.
#[derive(Debug)]
pub struct ServerData {
    pub data_dir: TempDir,
    pub database: Option<TestDatabase>,
    pub redis_url: Option<String>,
}

impl ServerData {
    /// Fresh data for `setup`, or `None` when the test must be skipped.
    pub async fn new(setup: Setup, test_name: &str) -> Option<ServerData> {
        let data_dir = TempDir::new().expect("temporary directory");
        match setup {
            Setup::Embedded => Some(ServerData {
                data_dir,
                database: None,
                redis_url: None,
            }),
            Setup::PostgresRedis => {
                let redis_url = redis_url(test_name).await?;
                let database = TestDatabase::create(test_name).await?;
                Some(ServerData {
                    data_dir,
                    database: Some(database),
                    redis_url: Some(redis_url),
                })
            }
        }
    }
}

impl ServerData {
    /// The event store's URL, as the server resolves it.
    pub fn store_url(&self) -> String {
        match &self.database {
            Some(database) => database.url().to_owned(),
            None => format!(
                "sqlite://{}",
                self.data_dir.path().join("mercato.db").display()
            ),
        }
    }

    /// The event store the server writes (opened beside it, as an auditor would).
    pub async fn store(&self) -> std::sync::Arc<dyn eventstore::EventStore> {
        eventstore::open(&self.store_url())
            .await
            .expect("open the store")
    }

    /// The read-model database the server writes (saga rows, test gateway ledger).
    pub async fn read_db(&self) -> projections::readdb::ReadDb {
        projections::readdb::ReadDb::open(&projections::readdb::read_db_url(&self.store_url()))
            .await
            .expect("open the read-model database")
    }
}

/// A running `mercato serve`.
#[derive(Debug)]
pub struct Server {
    pub base: String,
    pub client: Client,
    child: Child,
}

impl Server {
    /// Starts the binary on `data` and waits until it listens.
    pub async fn start(data: &ServerData) -> Server {
        Server::start_role(data, "all").await
    }

    /// Starts one role of the binary on `data` and waits until it listens.
    pub async fn start_role(data: &ServerData, role: &str) -> Server {
        Server::start_with(data, role, &[]).await
    }

    /// Starts the binary with extra arguments (after `serve`), its stderr written to a file.
    pub async fn start_with(data: &ServerData, role: &str, extra: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mercato"));
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--role",
                role,
                "--data-dir",
            ])
            .arg(data.data_dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("KAFKA_BOOTSTRAP")
            .env_remove("OPENSEARCH_URL")
            .env_remove("ELASTICSEARCH_URL")
            .env_remove("MERCATO_LISTEN")
            .env_remove("MERCATO_ROLE")
            .env_remove("MERCATO_DATA_DIR")
            .args(extra)
            .env("RUST_LOG", if extra.is_empty() { "warn" } else { "info" })
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if extra.is_empty() {
            command.stderr(Stdio::inherit());
        } else {
            let log =
                std::fs::File::create(data.data_dir.path().join("server.log")).expect("log file");
            command.stderr(Stdio::from(log));
        }
        if let Some(database) = &data.database {
            command.env("DATABASE_URL", database.url());
        }
        if let Some(redis_url) = &data.redis_url {
            command.env("REDIS_URL", redis_url);
        }
        let mut child = command.spawn().expect("start mercato serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("mercato serve did not start listening within 60 s")
            .expect("read stdout")
            .expect("mercato serve exited before listening");
        let base = line
            .strip_prefix("mercato listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            base,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            child,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.client
            .put(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// GET with `X-Min-Position`: the answer reflects at least that position.
    pub async fn get_at(&self, path: &str, position: u64) -> Response {
        self.client
            .get(self.url(path))
            .header("x-min-position", position.to_string())
            .send()
            .await
            .expect("request")
    }

    /// Creates a product and returns its id and the position of its last event.
    pub async fn create_product(
        &self,
        name: &str,
        description: &str,
        price: f64,
        stock: i64,
        category: &str,
    ) -> (String, u64) {
        let response = self
            .post(
                "/products",
                serde_json::json!({
                    "name": name, "description": description, "price": price,
                    "stock_qty": stock, "category": category,
                }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let position = event_position(&response);
        let body: Value = response.json().await.expect("json");
        (
            body["product_id"].as_str().expect("product_id").to_owned(),
            position,
        )
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks the process to stop (SIGTERM) and waits for it.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("mercato did not stop within 30 s of SIGTERM")
            .expect("wait")
    }
}

/// The `X-Event-Position` of a write's answer.
pub fn event_position(response: &Response) -> u64 {
    response
        .headers()
        .get("x-event-position")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("X-Event-Position")
}

/// The `x-cache` header of a read's answer.
pub fn cache_header(response: &Response) -> String {
    response
        .headers()
        .get("x-cache")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Polls `check` until it returns `Some`, at most `timeout`; returns the value and the time taken.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(value) = check().await {
            return Some((value, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Places an order through `POST /orders`; answers its id.
pub async fn place_order(
    server: &Server,
    customer: &str,
    lines: &[(&str, u32)],
    token: &str,
) -> String {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(product_id, quantity)| json!({ "product_id": product_id, "quantity": quantity }))
        .collect();
    let response = server
        .post(
            "/orders",
            json!({ "customer_id": customer, "lines": lines, "payment_token": token }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.expect("json");
    body["order_id"].as_str().expect("order_id").to_owned()
}
