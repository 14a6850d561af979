//! What tests of the server and of the command line share (the cargo feature `testing`):
//!
//! - [`TestData`]: the data of a test's platform, embedded in a temporary directory or on a
//!   PostgreSQL database of the test's own with Redis.
//! - [`TestApp`]: the server started in this process on `127.0.0.1:0`, with the typed helpers of
//!   [`Api`]; a test that needs the process itself (signals, SIGKILL, exit codes, log output)
//!   starts the binary instead and talks to it through the same [`Api`].
//! - [`broker`]: a Kafka-protocol broker of a test's own, behind a proxy that can cut it off.

pub mod broker;

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use eventstore::testing::{TestDatabase, redis_url};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::{Config, Role, Secret, Settings};
use crate::serve::{Server, bind};

/// The event store's pool of a test server on PostgreSQL (`db_pool`): tests run side by side on
/// one server, whose default is 100 connections. `mercato serve` processes that tests start get
/// it as `MERCATO_DB_POOL`.
pub const TEST_DB_POOL: i32 = 8;

/// Where a test's platform keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// No configuration: SQLite, Tantivy and the in-process cache under a temporary directory.
    Embedded,
    /// `DATABASE_URL` (a database of the test's own) and `REDIS_URL`.
    PostgresRedis,
}

/// The data a test's platform runs on; kept to start it again on the same data.
#[derive(Debug)]
pub struct TestData {
    pub data_dir: TempDir,
    pub database: Option<TestDatabase>,
    pub redis_url: Option<String>,
}

impl TestData {
    /// Fresh data for `setup`, or `None` when the test must be skipped (a service it needs is
    /// not reachable; with `MERCATO_REQUIRE_SERVICES=1` that fails the test instead).
    pub async fn new(setup: Setup, test_name: &str) -> Option<TestData> {
        let data_dir = TempDir::new().expect("temporary directory");
        match setup {
            Setup::Embedded => Some(TestData {
                data_dir,
                database: None,
                redis_url: None,
            }),
            Setup::PostgresRedis => {
                let redis_url = redis_url(test_name).await?;
                let database = TestDatabase::create(test_name).await?;
                Some(TestData {
                    data_dir,
                    database: Some(database),
                    redis_url: Some(redis_url),
                })
            }
        }
    }

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

    /// The configuration of role `role` on this data, with `args` as `mercato serve` takes
    /// them (`["--payment-timeout", "2"]`), listening on a free port. The environment is not
    /// read: a test's configuration is what it says, and the rate limits are off unless it
    /// sets them.
    pub fn config(&self, role: &str, args: &[&str]) -> Config {
        let command = TestFlags::command().mut_args(|arg| arg.env(None::<&'static str>));
        let arguments =
            std::iter::once(OsString::from("mercato")).chain(args.iter().map(OsString::from));
        let matches = command
            .try_get_matches_from(arguments)
            .unwrap_or_else(|error| panic!("test arguments {args:?}: {error}"));
        let flags = TestFlags::from_arg_matches(&matches).expect("test arguments");
        let mut settings = flags.settings;
        settings.listen = Some("127.0.0.1:0".parse().expect("address"));
        settings.role = Some(
            Role::from_str(role, false).unwrap_or_else(|error| panic!("role {role:?}: {error}")),
        );
        settings.data_dir = Some(self.data_dir.path().to_owned());
        if let Some(database) = &self.database {
            settings.database_url = Some(Secret::new(database.url()));
        }
        if let Some(redis_url) = &self.redis_url {
            settings.redis_url = Some(Secret::new(redis_url.clone()));
        }
        // Tests register and log in many customers and drive load from one address: the rate
        // limits are off unless the test sets them (the tests of the limits do).
        let off = Some(crate::config::Rate::new(0));
        settings.rate_limit = settings.rate_limit.or(off);
        settings.staff_rate_limit = settings.staff_rate_limit.or(off);
        settings.account_rate_limit = settings.account_rate_limit.or(off);
        // So are the caps on a customer's open orders: tests place many slow orders for one.
        settings.max_open_orders = settings.max_open_orders.or(off);
        settings.max_reserved_units = settings.max_reserved_units.or(off);
        settings.db_pool = settings
            .db_pool
            .or(Some(crate::config::PoolSize::new(TEST_DB_POOL)));
        Config::resolve(settings, flags.config.as_deref()).expect("test configuration")
    }
}

/// The flags a test gives its server: every setting, and a config file.
#[derive(Debug, Parser)]
struct TestFlags {
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

/// The environment variables the command line reads its configuration from: every setting's,
/// the config file's, and those of `serve`'s own flags and of the search alias. A test that
/// starts the binary removes them all, so that the machine's configuration (`DATABASE_URL` set
/// for the tests, say) cannot leak into it.
pub fn configuration_variables() -> Vec<String> {
    let command = TestFlags::command();
    let mut names: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    names.extend(
        [
            "MERCATO_CONFIG",
            "MERCATO_LISTEN",
            "MERCATO_ROLE",
            "ELASTICSEARCH_URL",
        ]
        .map(str::to_owned),
    );
    names
}

/// A client of a running server's HTTP API, with typed helpers. It sends its credentials (an
/// API key or an access token) with every request, if it has any, and keeps the tokens a guest
/// is given, as a browser would: the cart token of each cart it wrote, the order token of each
/// order it checked out, sent back with every later request for that cart or order.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub client: Client,
    credentials: Option<String>,
    /// Guest tokens by the path they open (`/carts/{id}`, `/orders/{id}`).
    guest_tokens: Arc<Mutex<HashMap<String, String>>>,
}

/// The resource path a request path belongs to (`/carts/c1/items` → `/carts/c1`).
fn resource_of(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or(path);
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next()) {
        (Some(kind @ ("carts" | "orders")), Some(id)) if !id.is_empty() => {
            Some(format!("/{kind}/{id}"))
        }
        _ => None,
    }
}

impl Api {
    /// An anonymous client of the server at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: String) -> Api {
        Api {
            base,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            credentials: None,
            guest_tokens: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A client of the same server sending `credentials` (`Bearer` token or API key), with
    /// guest tokens of its own.
    pub fn with_credentials(&self, credentials: &str) -> Api {
        Api {
            credentials: Some(credentials.to_owned()),
            guest_tokens: Arc::new(Mutex::new(HashMap::new())),
            ..self.clone()
        }
    }

    /// An anonymous client of the same server (a guest, once it writes a cart).
    pub fn anonymous(&self) -> Api {
        Api {
            credentials: None,
            guest_tokens: Arc::new(Mutex::new(HashMap::new())),
            ..self.clone()
        }
    }

    /// The credentials this client sends, if any.
    pub fn credentials(&self) -> Option<&str> {
        self.credentials.as_deref()
    }

    /// The guest token this client holds for `resource` (`/carts/{id}` or `/orders/{id}`).
    pub fn guest_token(&self, resource: &str) -> Option<String> {
        self.guest_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(resource)
            .cloned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request of this client: its credentials, and the guest token of the path's cart or
    /// order when it holds one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self.client.request(method, self.url(path));
        if let Some(credentials) = &self.credentials {
            builder = builder.bearer_auth(credentials);
        }
        if let Some(resource) = resource_of(path)
            && let Some(token) = self.guest_token(&resource)
        {
            let header = if resource.starts_with("/carts/") {
                "x-cart-token"
            } else {
                "x-order-token"
            };
            builder = builder.header(header, token);
        }
        builder
    }

    /// Sends `builder` and keeps the guest tokens its answer gives.
    pub async fn send(&self, path: &str, builder: reqwest::RequestBuilder) -> Response {
        let response = builder.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let version = response.version();
        let body = response.bytes().await.expect("response body");
        if let Ok(json) = serde_json::from_slice::<Value>(&body) {
            let mut tokens = self
                .guest_tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let (Some(token), Some(resource)) = (json["cart_token"].as_str(), resource_of(path))
            {
                tokens.insert(resource, token.to_owned());
            }
            if let (Some(token), Some(order_id)) =
                (json["order_token"].as_str(), json["order_id"].as_str())
            {
                tokens.insert(format!("/orders/{order_id}"), token.to_owned());
            }
        }
        let mut rebuilt = axum::http::Response::builder()
            .status(status)
            .version(version);
        if let Some(rebuilt_headers) = rebuilt.headers_mut() {
            *rebuilt_headers = headers;
        }
        Response::from(rebuilt.body(body).expect("response"))
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send(path, self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.send(path, self.request(reqwest::Method::PUT, path).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Response {
        self.send(path, self.request(reqwest::Method::PATCH, path).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send(path, self.request(reqwest::Method::DELETE, path))
            .await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(path, self.request(reqwest::Method::GET, path))
            .await
    }

    /// GET with `X-Min-Position`: the answer reflects at least that position.
    pub async fn get_at(&self, path: &str, position: u64) -> Response {
        self.send(
            path,
            self.request(reqwest::Method::GET, path)
                .header("x-min-position", position.to_string()),
        )
        .await
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
                json!({
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

    /// Places an order through `POST /orders` for `customer` (as support staff or a service
    /// with the support role does; a customer's own client leaves the id out); answers its id.
    pub async fn place_order(&self, customer: &str, lines: &[(&str, u32)], token: &str) -> String {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(product_id, quantity)| json!({ "product_id": product_id, "quantity": quantity }))
            .collect();
        let response = self
            .post(
                "/orders",
                json!({ "customer_id": customer, "lines": lines, "payment_token": token }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.expect("json");
        body["order_id"].as_str().expect("order_id").to_owned()
    }

    /// Registers a customer account (`POST /users`) with a password of its own, logs in and
    /// answers a client acting as that customer.
    pub async fn register_customer(&self, name: &str) -> Customer {
        let email = format!("{name}-{}@example.com", Uuid::new_v4().simple());
        let password = format!("{name} keeps a long passphrase {}", Uuid::new_v4().simple());
        let anonymous = self.anonymous();
        let registered = anonymous
            .post(
                "/users",
                json!({ "email": email, "password": password, "name": name }),
            )
            .await;
        assert_eq!(registered.status(), StatusCode::CREATED, "register {name}");
        let body: Value = registered.json().await.expect("json");
        let user_id = body["user_id"].as_str().expect("user_id").to_owned();
        let session = anonymous.log_in(&email, &password).await;
        Customer {
            api: anonymous.with_credentials(&session.access_token),
            user_id,
            email,
            password,
            session,
        }
    }

    /// `POST /sessions`: answers the session, which must be granted.
    pub async fn log_in(&self, email: &str, password: &str) -> SessionTokens {
        let response = self
            .anonymous()
            .post("/sessions", json!({ "email": email, "password": password }))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "log in {email}");
        let body: Value = response.json().await.expect("json");
        SessionTokens {
            access_token: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh_token: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }
}

/// A session's tokens.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
}

/// A registered customer and a client acting as them.
#[derive(Debug, Clone)]
pub struct Customer {
    pub api: Api,
    pub user_id: String,
    pub email: String,
    pub password: String,
    pub session: SessionTokens,
}

impl Deref for Customer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The server running in this process, on a free port of `127.0.0.1`.
#[derive(Debug)]
pub struct TestApp {
    api: Api,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<crate::Result<()>>>,
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestApp {
    /// Starts every role on `data`.
    pub async fn start(data: &TestData) -> TestApp {
        TestApp::start_with(data, "all", &[]).await
    }

    /// Starts role `role` on `data`.
    pub async fn start_role(data: &TestData, role: &str) -> TestApp {
        TestApp::start_with(data, role, &[]).await
    }

    /// Starts role `role` on `data` with `args` as `mercato serve` takes them.
    pub async fn start_with(data: &TestData, role: &str, args: &[&str]) -> TestApp {
        TestApp::start_config(&data.config(role, args)).await
    }

    /// Fresh data for `setup` and every role started on it, or `None` when the test must be
    /// skipped.
    pub async fn spawn(setup: Setup, test_name: &str) -> Option<(TestApp, TestData)> {
        let data = TestData::new(setup, test_name).await?;
        Some((TestApp::start(&data).await, data))
    }

    /// Starts the server of `config`; it listens once this returns.
    pub async fn start_config(config: &Config) -> TestApp {
        let listener = bind(config.listen).await.expect("bind a free port");
        let server = Server::build(config, listener)
            .await
            .unwrap_or_else(|error| panic!("the server did not start: {error:?}"));
        // The test's own client: an API key with the admin role, as an operator's script has.
        let (_, admin_key) = server
            .platform()
            .identity
            .api_keys
            .create("tests", &[domain::Role::Admin].into_iter().collect())
            .await
            .expect("an admin API key for the test");
        let api = Api::new(format!("http://{}", server.local_addr())).with_credentials(&admin_key);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async move {
            let _ = stopped.await;
        }));
        TestApp {
            api,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client with a new API key of `roles` (comma-separated, as `mercato api-keys create
    /// --role` takes them).
    pub async fn service(&self, data: &TestData, roles: &str) -> Api {
        let keys = crate::platform::open_api_keys(&data.config("all", &[]))
            .await
            .expect("the API keys");
        let roles = domain::user::parse_roles(roles).expect("roles");
        let (_, key) = keys.create("tests", &roles).await.expect("an API key");
        self.api.with_credentials(&key)
    }

    /// Stops the server as SIGTERM would: drains the requests in flight and stops the
    /// projections at a checkpoint; waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the server did not stop within 30 s");
            result
                .expect("the server task")
                .expect("the server stopped with an error");
        }
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
    Fut: Future<Output = Option<T>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_test_configuration_is_its_arguments_and_never_the_environment() {
        let data = TestData::new(Setup::Embedded, "a_test_configuration")
            .await
            .expect("embedded");
        let config = data.config(
            "saga",
            &["--payment-timeout", "2", "--kafka-partitions", "5"],
        );
        assert_eq!(config.role, Role::Saga);
        assert_eq!(config.payment_timeout(), Duration::from_secs(2));
        assert_eq!(config.kafka_partitions.get(), 5);
        assert_eq!(config.listen.port(), 0);
        assert!(config.database_url.expose().starts_with("sqlite://"));
        let variables = configuration_variables();
        for name in [
            "DATABASE_URL",
            "REDIS_URL",
            "KAFKA_BOOTSTRAP",
            "OPENSEARCH_URL",
            "MERCATO_DATA_DIR",
            "MERCATO_LISTEN",
        ] {
            assert!(variables.iter().any(|variable| variable == name), "{name}");
        }
    }
}
