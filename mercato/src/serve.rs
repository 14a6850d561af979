//! `mercato serve`: opens the configured systems, starts the roles asked for, and serves HTTP
//! until SIGTERM or Ctrl-C, then drains requests and stops the projections at a checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use command_api::http::request_context;
use command_api::problem::{BODY_LIMIT, Problem};
use eventstore::EventStore;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use projections::cache::{Cache, MemoryCache, RedisCache};
use projections::opensearch::{self, OpenSearchIndex, OpenSearchProjection};
use projections::readdb::{ReadDb, read_db_url};
use projections::redis_models::{RedisCartsProjection, RedisModels, RedisPopularityProjection};
use projections::search::{SearchIndex, TantivySearch};
use projections::sql_models::{
    OrdersProjection, ProductsProjection, SqlCartsProjection, SqlPopularityProjection,
};
use projections::{Progress, Projection, run_projection};
use serde_json::json;
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

use crate::Failure;
use crate::config::{Config, Role, Source};
use crate::kafka::consumer::{ConsumerOptions, run_consumer};

/// How much the in-process cache holds at most: a bound on memory, not on entries.
const MEMORY_CACHE_BYTES: usize = 16 << 20;
/// How many events a projection takes per batch.
const PROJECTION_BATCH: usize = 500;
/// The consumer group of Kafka-fed projector processes.
const PROJECTOR_GROUP: &str = "mercato-projector";
/// The consumer group of Kafka-fed saga processes.
const SAGA_GROUP: &str = "mercato-saga";
/// How long shutdown waits for projections to reach a checkpoint.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Everything a running platform holds.
pub struct Platform {
    pub store: Arc<dyn EventStore>,
    pub redis_models: Option<RedisModels>,
    pub db: ReadDb,
    pub cache: Option<Arc<dyn Cache>>,
    pub search: Arc<dyn SearchIndex>,
    /// The OpenSearch index behind `search`, with `OPENSEARCH_URL`.
    pub opensearch: Option<OpenSearchIndex>,
    pub projections: Vec<Arc<dyn Projection>>,
}

fn runtime_failure(what: String) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure::Runtime(error.context(what))
}

/// Opens the store, the read models, the cache and the search index the configuration names.
pub async fn open_platform(config: &Config, run_projector: bool) -> Result<Platform, Failure> {
    std::fs::create_dir_all(&config.data_dir).map_err(|error| {
        Failure::Runtime(anyhow::Error::new(error).context(format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )))
    })?;
    let database_url = config.database_url.expose();
    let store = eventstore::open(database_url).await.map_err(|error| {
        Failure::from(error).context(format!(
            "cannot open the event store at {} (check DATABASE_URL and that the database is running)",
            config.database_url.redacted()
        ))
    })?;
    let db = ReadDb::open(&read_db_url(database_url))
        .await
        .map_err(anyhow::Error::new)
        .map_err(runtime_failure(
            "cannot open the read-model database".to_owned(),
        ))?;
    // The query API shows a parked saga's reason, so its table exists whichever roles run.
    sagas::state::ensure_schema(&db)
        .await
        .map_err(anyhow::Error::new)
        .map_err(runtime_failure("cannot create the saga tables".to_owned()))?;
    // One Redis connection (multiplexed) serves the cache and the Redis read models.
    let redis = match &config.redis_url {
        Some(url) => {
            let connect = async {
                let client = redis::Client::open(url.expose())?;
                redis::aio::ConnectionManager::new(client).await
            };
            Some(
                connect
                    .await
                    .map_err(anyhow::Error::new)
                    .map_err(runtime_failure(format!(
                        "cannot connect to Redis at {} (check REDIS_URL)",
                        url.redacted()
                    )))?,
            )
        }
        None => None,
    };
    let prefix = cache_prefix(database_url);
    let cache: Option<Arc<dyn Cache>> = match &redis {
        Some(connection) => Some(Arc::new(RedisCache::new(connection.clone(), &prefix))),
        // In process, the cache is only right if this process's projections invalidate it.
        None if run_projector => Some(Arc::new(MemoryCache::new(MEMORY_CACHE_BYTES))),
        None => None,
    };
    let mut opensearch_index = None;
    let (search, search_projection): (Arc<dyn SearchIndex>, Arc<dyn Projection>) = match &config
        .opensearch_url
    {
        Some(url) => {
            let index =
                OpenSearchIndex::new(url.expose(), opensearch::DEFAULT_ALIAS).map_err(|error| {
                    Failure::Usage(format!(
                        "OPENSEARCH_URL {} is not usable: {error}",
                        url.redacted()
                    ))
                })?;
            if run_projector {
                index
                        .ensure_index()
                        .await
                        .map_err(anyhow::Error::new)
                        .map_err(runtime_failure(format!(
                            "cannot create the search index on {} (check OPENSEARCH_URL and that the cluster is up)",
                            url.redacted()
                        )))?;
            }
            opensearch_index = Some(index.clone());
            (
                Arc::new(index.clone()),
                Arc::new(OpenSearchProjection::new(index, db.clone(), cache.clone())),
            )
        }
        None => {
            let search_directory = config.data_dir.join("search");
            let search = if run_projector {
                TantivySearch::open(&search_directory, cache.clone())
            } else {
                // The projector process (same data directory) writes the index; this one reads it.
                TantivySearch::open_read_only(&search_directory)
            };
            let search = Arc::new(
                search
                    .map_err(anyhow::Error::new)
                    .map_err(runtime_failure("cannot open the search index".to_owned()))?,
            );
            (Arc::new(search.clone()), Arc::new(search))
        }
    };
    let redis_models = redis.map(|connection| RedisModels::new(connection, &prefix));
    let (carts, popularity): (Arc<dyn Projection>, Arc<dyn Projection>) = match &redis_models {
        Some(models) => (
            Arc::new(RedisCartsProjection::new(models.clone())),
            Arc::new(RedisPopularityProjection::new(models.clone())),
        ),
        None => (
            Arc::new(SqlCartsProjection::new(db.clone())),
            Arc::new(SqlPopularityProjection::new(db.clone())),
        ),
    };
    let projections: Vec<Arc<dyn Projection>> = vec![
        Arc::new(ProductsProjection::new(db.clone(), cache.clone())),
        Arc::new(OrdersProjection::new(db.clone())),
        carts,
        popularity,
        search_projection,
    ];
    Ok(Platform {
        store,
        redis_models,
        db,
        cache,
        search,
        opensearch: opensearch_index,
        projections,
    })
}

/// The prefix of this deployment's Redis keys: derived from the event store's URL, so every
/// process of one deployment shares it and two deployments (or test runs) on one Redis do not.
fn cache_prefix(database_url: &str) -> String {
    let hash = crate::stable_hash(database_url);
    format!("mercato:{hash:016x}:")
}

/// The health of the parts of a process that run in the background (the Kafka clients): what
/// `/ready` reports besides the stores it checks itself. Several workers may report on one part
/// (the relay and two consumers on `kafka`): the part is ready when every one of them is.
#[derive(Clone, Debug, Default)]
pub struct Components {
    states: Arc<std::sync::RwLock<ReportedStates>>,
}

/// What each reporter found of each component: by (component, reporter).
type ReportedStates = BTreeMap<(&'static str, String), Result<(), String>>;

impl Components {
    /// Records what `reporter` finds of component `name`: `Ok` when it works, else why not.
    pub fn set(&self, name: &'static str, reporter: &str, state: Result<(), String>) {
        let mut states = match self.states.write() {
            Ok(states) => states,
            Err(poisoned) => poisoned.into_inner(),
        };
        states.insert((name, reporter.to_owned()), state);
    }

    /// Every component's state, by name: the failures of its reporters, if any.
    pub fn snapshot(&self) -> Vec<(&'static str, Result<(), String>)> {
        let states = match self.states.read() {
            Ok(states) => states,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut merged: BTreeMap<&'static str, Result<(), String>> = BTreeMap::new();
        for ((name, reporter), state) in states.iter() {
            let entry = merged.entry(name).or_insert(Ok(()));
            if let Err(error) = state {
                let failure = format!("{reporter}: {error}");
                *entry = match entry {
                    Err(earlier) => Err(format!("{earlier}; {failure}")),
                    Ok(()) => Err(failure),
                };
            }
        }
        merged.into_iter().collect()
    }
}

#[derive(Clone)]
struct OpsState {
    store: Arc<dyn EventStore>,
    db: ReadDb,
    cache: Option<Arc<dyn Cache>>,
    progress: Progress,
    components: Components,
    metrics: Option<PrometheusHandle>,
}

/// The Prometheus recorder of this process (installed once).
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .ok()?
                .install_recorder()
                .map_err(|error| tracing::warn!(%error, "metrics are not recorded"))
                .ok()
        })
        .clone()
}

async fn metrics_text(State(state): State<OpsState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => Problem::unavailable("metrics are not recorded in this process").into_response(),
    }
}

/// Counts every request and records its latency, by route pattern, method and status.
async fn record_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("mercato_http_requests_total", &labels).increment(1);
    metrics::histogram!("mercato_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// How many events behind the head a projection is counted up to (a larger lag shows as this).
const LAG_COUNT_CAP: usize = 1_000;

/// Publishes each projection's lag, in events and seconds, every two seconds.
async fn record_lag(store: Arc<dyn EventStore>, progress: Progress, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        // Projections at the same checkpoint (the usual case) share one read of the log.
        let mut lag_at: std::collections::HashMap<u64, (usize, f64)> = Default::default();
        for (name, state) in progress.snapshot() {
            let lag = match lag_at.get(&state.position) {
                Some(lag) => *lag,
                None => {
                    let Ok(behind) = store.read_all(state.position, LAG_COUNT_CAP).await else {
                        continue;
                    };
                    let lag_seconds = behind.first().map_or(0.0, |oldest| {
                        (chrono_now_seconds()
                            - oldest.occurred_at.timestamp_millis() as f64 / 1000.0)
                            .max(0.0)
                    });
                    *lag_at
                        .entry(state.position)
                        .or_insert((behind.len(), lag_seconds))
                }
            };
            metrics::gauge!("mercato_projection_lag_events", "projection" => name)
                .set(lag.0 as f64);
            metrics::gauge!("mercato_projection_lag_seconds", "projection" => name).set(lag.1);
        }
    }
}

fn chrono_now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<OpsState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut all_ok = true;
    let mut check = |name: &str, result: Result<(), String>| {
        all_ok &= result.is_ok();
        checks.insert(
            name.to_owned(),
            match result {
                Ok(()) => json!("ok"),
                Err(error) => json!(error),
            },
        );
    };
    check(
        "event_store",
        state.store.ping().await.map_err(|e| e.to_string()),
    );
    check(
        "read_models",
        state.db.ping().await.map_err(|e| e.to_string()),
    );
    if let Some(cache) = &state.cache {
        check(&format!("cache_{}", cache.kind()), cache.ping().await);
    }
    for (name, component) in state.components.snapshot() {
        check(name, component);
    }
    let projections: serde_json::Map<String, serde_json::Value> = state
        .progress
        .snapshot()
        .into_iter()
        .map(|(name, progress)| {
            (
                name.to_owned(),
                json!({ "position": progress.position, "caught_up": progress.caught_up }),
            )
        })
        .collect();
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": all_ok, "checks": checks, "projections": projections })),
    )
        .into_response()
}

async fn not_found() -> Problem {
    Problem::not_found("no route matches this path; see GET /openapi.json")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this path does not accept this method; see GET /openapi.json",
    )
}

/// The HTTP application of a role.
pub fn app(
    platform: &Platform,
    role: Role,
    progress: Progress,
    components: Components,
    views: Option<query_api::views::ViewRecorder>,
) -> Router {
    let ops = OpsState {
        store: platform.store.clone(),
        db: platform.db.clone(),
        cache: platform.cache.clone(),
        progress: progress.clone(),
        components,
        metrics: prometheus(),
    };
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .with_state(ops);
    if matches!(role, Role::All | Role::CommandApi) {
        router = router.merge(command_api::router(command_api::CommandState {
            store: platform.store.clone(),
        }));
    }
    if matches!(role, Role::All | Role::QueryApi) {
        let search = platform.search.clone();
        router = router.merge(query_api::router(query_api::QueryState {
            store: platform.store.clone(),
            db: platform.db.clone(),
            search,
            cache: platform.cache.clone(),
            progress,
            views,
            redis_models: platform.redis_models.clone(),
        }));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(request_context))
        .layer(axum::middleware::from_fn(record_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed to handle the request; it was logged, try again later",
                )
                .into_response()
            },
        ))
}

/// Copies each projection's stored checkpoint into `progress` every few milliseconds: how a
/// query-api process without projections of its own knows how far the read models got.
async fn poll_checkpoints(
    projections: Vec<Arc<dyn Projection>>,
    progress: Progress,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        for projection in &projections {
            if let Ok(position) = projection.checkpoint(&projections::Feed::Log).await {
                progress
                    .sender(projection.name())
                    .send_if_modified(|state| {
                        let moved = position > state.position;
                        state.position = state.position.max(position);
                        moved
                    });
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Runs the roles of `config` until a shutdown signal.
pub async fn serve(config: Config) -> Result<(), Failure> {
    let kafka = config.kafka();
    if config.role == Role::Relay && kafka.is_none() {
        return Err(Failure::Usage(
            "the relay role publishes to Kafka: set KAFKA_BOOTSTRAP (or --kafka-bootstrap) to the brokers"
                .to_owned(),
        ));
    }
    let from_kafka = config.source == Source::Kafka;
    if from_kafka && kafka.is_none() {
        return Err(Failure::Usage(
            "--source kafka reads events from Kafka: set KAFKA_BOOTSTRAP (or --kafka-bootstrap) to the brokers"
                .to_owned(),
        ));
    }
    let run_projector = matches!(config.role, Role::All | Role::Projector);
    let run_saga = matches!(config.role, Role::All | Role::Saga);
    let run_relay = config.role == Role::Relay || (config.role == Role::All && kafka.is_some());
    let follows_kafka =
        from_kafka && matches!(config.role, Role::All | Role::Projector | Role::QueryApi);
    let platform = open_platform(&config, run_projector).await?;
    let progress = Progress::default();
    let components = Components::default();
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    if follows_kafka && let Some(settings) = &kafka {
        // Read-your-writes waits for the partition that carries the event.
        let locator =
            crate::kafka::locator::KafkaLocator::new(platform.store.clone(), settings.clone())
                .map_err(|error| Failure::Runtime(anyhow::anyhow!(error)))?;
        progress.follow_partitions(Arc::new(locator), &platform.projections);
    }
    if run_relay && let Some(settings) = &kafka {
        workers.push(tokio::spawn(crate::kafka::relay::run_relay(
            platform.store.clone(),
            platform.db.clone(),
            settings.clone(),
            progress.clone(),
            components.clone(),
            shutdown.clone(),
        )));
    }
    if run_projector {
        match (&kafka, from_kafka) {
            (Some(settings), true) => {
                let options = ConsumerOptions::new(
                    settings.clone(),
                    PROJECTOR_GROUP,
                    schemas::topics::TOPICS.to_vec(),
                );
                workers.push(tokio::spawn(run_consumer(
                    platform.projections.clone(),
                    options,
                    components.clone(),
                    shutdown.clone(),
                )));
            }
            _ => {
                for projection in &platform.projections {
                    workers.push(tokio::spawn(run_projection(
                        platform.store.clone(),
                        projection.clone(),
                        progress.clone(),
                        shutdown.clone(),
                        PROJECTION_BATCH,
                    )));
                }
            }
        }
    } else if config.role == Role::QueryApi {
        workers.push(tokio::spawn(poll_checkpoints(
            platform.projections.clone(),
            progress.clone(),
            shutdown.clone(),
        )));
    }
    if run_saga {
        let gateway = sagas::TestGateway::open(
            platform.db.clone(),
            sagas::TestGatewayOptions {
                latency: config.test_gateway_latency,
                late_after: config.test_gateway_late_after,
            },
        )
        .await
        .map_err(anyhow::Error::new)
        .map_err(runtime_failure(
            "cannot open the test payment gateway's ledger".to_owned(),
        ))?;
        let mut options = sagas::SagaOptions {
            payment_timeout: config.payment_timeout,
            ..sagas::SagaOptions::default()
        };
        if let (Some(settings), true) = (&kafka, from_kafka) {
            // Every saga process takes its share of the partitions; the lease holder runs the steps.
            let wake = Arc::new(tokio::sync::Notify::new());
            let intake: Arc<dyn Projection> = Arc::new(sagas::state::SagaIntake::new(
                platform.db.clone(),
                wake.clone(),
            ));
            options.external_intake = Some(wake);
            let consumer = ConsumerOptions::new(
                settings.clone(),
                SAGA_GROUP,
                vec![
                    schemas::topics::ORDERS_EVENTS,
                    schemas::topics::PAYMENTS_EVENTS,
                ],
            );
            workers.push(tokio::spawn(run_consumer(
                vec![intake],
                consumer,
                components.clone(),
                shutdown.clone(),
            )));
        }
        let (store, db, progress, shutdown) = (
            platform.store.clone(),
            platform.db.clone(),
            progress.clone(),
            shutdown.clone(),
        );
        workers.push(tokio::spawn(async move {
            if let Err(error) =
                sagas::run_saga(store, db, Arc::new(gateway), options, progress, shutdown).await
            {
                tracing::error!(%error, "the checkout saga stopped");
            }
        }));
    }
    if matches!(config.role, Role::All | Role::CommandApi) {
        workers.push(tokio::spawn(eventstore::audit::run_sealer(
            platform.store.clone(),
            crate::audit::SEAL_EVERY,
            Duration::from_secs(5),
            shutdown.clone().cancelled_owned(),
        )));
    }
    workers.push(tokio::spawn(record_lag(
        platform.store.clone(),
        progress.clone(),
        shutdown.clone(),
    )));
    let (views, views_task) = if matches!(config.role, Role::All | Role::QueryApi) {
        let (recorder, task) = query_api::views::ViewRecorder::start(platform.store.clone());
        (Some(recorder), Some(task))
    } else {
        (None, None)
    };
    let router = app(&platform, config.role, progress, components, views);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(anyhow::Error::new)
        .map_err(runtime_failure(format!(
            "cannot listen on {} (is another process using it? set --listen)",
            config.listen
        )))?;
    let address = listener
        .local_addr()
        .map_err(anyhow::Error::new)
        .map_err(runtime_failure(
            "cannot read the listening address".to_owned(),
        ))?;
    tracing::info!(
        %address,
        role = ?config.role,
        store = %platform.store.backend(),
        cache = platform.cache.as_ref().map_or("none", |cache| cache.kind()),
        "mercato listening"
    );
    println!("mercato listening on http://{address}");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(anyhow::Error::new)
        .map_err(runtime_failure("the HTTP server failed".to_owned()))?;
    tracing::info!("shutting down: stopping the projections at a checkpoint");
    shutdown.cancel();
    let stopped = tokio::time::timeout(STOP_WAIT, futures_join(workers)).await;
    if stopped.is_err() {
        tracing::warn!("projections did not stop within {STOP_WAIT:?}");
    }
    drop(platform);
    if let Some(task) = views_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    Ok(())
}

async fn futures_join(workers: Vec<tokio::task::JoinHandle<()>>) {
    for worker in workers {
        let _ = worker.await;
    }
}

#[cfg(test)]
mod tests {
    use super::Components;

    #[test]
    fn a_component_is_ready_only_when_every_reporter_finds_it_working() {
        let components = Components::default();
        components.set("kafka", "kafka_relay", Err("broker unreachable".to_owned()));
        components.set("kafka", "mercato-projector", Ok(()));
        assert_eq!(
            components.snapshot(),
            [("kafka", Err("kafka_relay: broker unreachable".to_owned()))]
        );
        components.set("kafka", "kafka_relay", Ok(()));
        assert_eq!(components.snapshot(), [("kafka", Ok(()))]);
    }
}
