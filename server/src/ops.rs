//! What every process serves about itself: `/health`, `/ready`, `/metrics` and `/openapi.json`,
//! the request metrics, the projections' lag, and the answers for unknown paths and methods.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use eventstore::EventStore;
use http_common::Problem;
use http_common::openapi::{ApiDoc, DocumentedRouter, RouteDoc};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use projections::cache::Cache;
use projections::readdb::ReadDb;
use projections::{Feed, Progress, Projection};
use serde_json::{Map, json};
use tokio_util::sync::CancellationToken;

use crate::health::Components;

/// What the operational routes read.
#[derive(Clone, Debug)]
pub(crate) struct OpsState {
    pub store: Arc<dyn EventStore>,
    pub db: ReadDb,
    pub cache: Option<Arc<dyn Cache>>,
    pub progress: Progress,
    pub components: Components,
    pub metrics: Option<PrometheusHandle>,
}

fn routes() -> DocumentedRouter<OpsState> {
    DocumentedRouter::new()
        .route(RouteDoc::get("/health", "Liveness", "Object"), health)
        .route(
            RouteDoc::get(
                "/ready",
                "Readiness: every configured dependency answers (503 otherwise)",
                "Object",
            ),
            ready,
        )
        .route(
            RouteDoc::get("/metrics", "Prometheus metrics", "Text"),
            metrics_text,
        )
        .route(
            RouteDoc::get("/openapi.json", "This document", "Object"),
            openapi_json,
        )
}

/// The operational routes.
pub(crate) fn router(state: OpsState) -> Router {
    routes().into_router().with_state(state)
}

/// The OpenAPI document of every route mercato serves, whichever roles this process runs.
pub fn openapi_document() -> serde_json::Value {
    http_common::openapi::document(
        "mercato",
        env!("CARGO_PKG_VERSION"),
        "An event-sourced commerce backend: commands in, every change kept as an event, read models out.",
        &[
            command_api::api_doc(),
            query_api::api_doc(),
            routes().into_doc(Map::new()),
        ],
    )
}

/// Every route the document lists.
pub fn documented_routes() -> Vec<RouteDoc> {
    [
        command_api::api_doc(),
        query_api::api_doc(),
        routes().into_doc(Map::new()),
    ]
    .into_iter()
    .flat_map(|doc: ApiDoc| doc.routes)
    .collect()
}

/// The Prometheus recorder of this process (installed once).
pub(crate) fn prometheus() -> Option<PrometheusHandle> {
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

async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi_document())
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<OpsState>) -> Response {
    let mut checks = Map::new();
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
    let projections: Map<String, serde_json::Value> = state
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

pub(crate) async fn not_found() -> Problem {
    Problem::not_found("no route matches this path; see GET /openapi.json")
}

pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this path does not accept this method; see GET /openapi.json",
    )
}

/// Counts every request and records its latency, by route pattern, method and status.
pub(crate) async fn record_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
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
pub(crate) async fn record_lag(
    store: Arc<dyn EventStore>,
    progress: Progress,
    shutdown: CancellationToken,
) {
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
                        (now_seconds() - oldest.occurred_at.timestamp_millis() as f64 / 1000.0)
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

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Copies each projection's stored checkpoint into `progress` every few milliseconds: how a
/// query-api process without projections of its own knows how far the read models got.
pub(crate) async fn poll_checkpoints(
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
            if let Ok(position) = projection.checkpoint(&Feed::Log).await {
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
