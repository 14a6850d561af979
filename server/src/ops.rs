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
use projections::{Feed, Progress, Projection, READY_LAG, oldest_unapplied};
use serde_json::{Map, json};
use tokio_util::sync::CancellationToken;

use crate::config::Role;
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
    /// The keys that verify access tokens (the JWKS).
    pub signing: identity::SigningKeys,
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
        .route(
            RouteDoc::get(
                "/.well-known/jwks.json",
                "The public keys (JWKS) that verify mercato's access tokens: EdDSA (Ed25519), by kid",
                "Object",
            ),
            jwks,
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
        &parts(),
        &|method, path| {
            crate::policy::rule_of(method, path).map(|rule| http_common::openapi::RouteRule {
                access: rule.access,
                creates: rule.creates,
            })
        },
    )
}

/// Every route the document lists.
pub fn documented_routes() -> Vec<RouteDoc> {
    parts()
        .into_iter()
        .flat_map(|doc: ApiDoc| doc.routes)
        .collect()
}

/// Every part of the API, each with the roles whose processes serve it (read off the roles
/// table, [`crate::roles`]).
pub(crate) fn parts() -> [ApiDoc; 5] {
    let serving = |serves: fn(&crate::roles::Parts) -> bool| -> Vec<String> {
        <Role as clap::ValueEnum>::value_variants()
            .iter()
            .filter(|role| serves(&role.parts()))
            .filter_map(clap::ValueEnum::to_possible_value)
            .map(|value| value.get_name().to_owned())
            .collect()
    };
    let commands = serving(|parts| parts.command_api);
    [
        ApiDoc {
            served_by: commands.clone(),
            ..command_api::api_doc()
        },
        ApiDoc {
            served_by: serving(|parts| parts.query_api),
            ..query_api::api_doc()
        },
        ApiDoc {
            served_by: commands.clone(),
            ..notify::routes::api_doc()
        },
        ApiDoc {
            served_by: commands,
            ..crate::admin::api_doc()
        },
        ApiDoc {
            served_by: serving(|_| true),
            ..routes().into_doc(Map::new())
        },
    ]
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
                .inspect(|_| describe_metrics())
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

async fn jwks(State(state): State<OpsState>) -> Response {
    let mut response = Json(state.signing.jwks().await).into_response();
    // Verifiers may keep the keys a few minutes; a rotation keeps old keys published longer.
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `{ready, checks, projections}`: 503 while something this process needs is down or behind.
/// The checks and projections (which name the systems behind mercato and their state) are for
/// staff and services; anyone else reads `{ready}` alone.
async fn ready(
    State(state): State<OpsState>,
    axum::Extension(context): axum::Extension<http_common::context::RequestContext>,
) -> Response {
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
    // Each projection this process runs or answers from: not failing, and the oldest event it
    // has not applied at most READY_LAG old (a read model on a wrong or fresh data directory
    // is far behind, and must not take traffic).
    let mut projections = Map::new();
    let mut behind_of: std::collections::HashMap<u64, Option<Duration>> = Default::default();
    for (name, progress) in state.progress.snapshot() {
        let behind = match behind_of.get(&progress.position) {
            Some(behind) => Ok(*behind),
            None => oldest_unapplied(state.store.as_ref(), progress.position)
                .await
                .inspect(|behind| {
                    behind_of.insert(progress.position, *behind);
                }),
        };
        // A failure the next retry mends does not count; one that lasts READY_LAG does.
        let failing_since = progress
            .failing_since
            .filter(|since| chrono::Utc::now().timestamp() - since >= READY_LAG.as_secs() as i64);
        // Parked at an event it cannot apply: where and why, from the park's row.
        let park = match progress.parked_at {
            Some(position) => Some(state.db.parked(name).await.map_err(|error| {
                format!("parked at position {position} (why cannot be read: {error})")
            })),
            None => None,
        };
        // A standby (of the relay) publishes nothing: its holder's lag is the holder's to report.
        let standby = progress.lease == Some(projections::lease::LeaseStatus::Standby);
        let verdict = match (&behind, failing_since, &park) {
            _ if standby => Ok(()),
            (_, _, Some(park)) => Err(format!(
                "{}; it applies nothing until `mercato projections retry {name}` once the cause is fixed",
                match park {
                    Ok(Some(park)) => park.to_string(),
                    // Retried a moment ago: the runner resumes within a second.
                    Ok(None) => format!(
                        "parked at position {}, retried",
                        progress.parked_at.unwrap_or_default()
                    ),
                    Err(unreadable) => unreadable.clone(),
                }
            )),
            (_, Some(since), None) => Err(format!(
                "applying its events fails since {} (the log says why)",
                chrono::DateTime::from_timestamp(since, 0)
                    .map_or_else(|| since.to_string(), |at| at.to_rfc3339())
            )),
            (Err(error), None, None) => Err(format!("cannot read the log: {error}")),
            (Ok(Some(age)), None, None) if *age > READY_LAG => Err(format!(
                "behind: the oldest event it has not applied (after position {}) is {:.0} s old",
                progress.position,
                age.as_secs_f64()
            )),
            (Ok(_), None, None) => Ok(()),
        };
        all_ok &= verdict.is_ok();
        let mut entry = json!({
            "position": progress.position,
            "caught_up": progress.caught_up,
            "ready": verdict.as_ref().map_or_else(|error| json!(error), |_| json!("ok")),
        });
        if let Some(lease) = progress.lease {
            entry["lease"] = json!(lease.as_str());
        }
        if let Some(position) = progress.parked_at {
            entry["parked"] = match &park {
                Some(Ok(Some(park))) => json!({
                    "position": park.position,
                    "event_type": park.event_type,
                    "stream": park.stream,
                    "reason": park.reason,
                    "since": park.parked_at,
                }),
                _ => json!({ "position": position }),
            };
        }
        projections.insert(name.to_owned(), entry);
    }
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = match context.principal {
        identity::Principal::Staff { .. } | identity::Principal::Service { .. } => {
            json!({ "ready": all_ok, "checks": checks, "projections": projections })
        }
        _ => json!({ "ready": all_ok }),
    };
    (status, Json(body)).into_response()
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
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", status),
    ];
    metrics::counter!("mercato_http_requests_total", &labels).increment(1);
    metrics::histogram!("mercato_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A request's method as a metric label: one of the methods HTTP defines, or `other`, so that
/// made-up methods cannot grow the number of series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// What kind of metric a name is.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric mercato records, with its help text: `/metrics` shows a `# HELP` line for each.
const METRICS: &[(&str, Kind, &str)] = &[
    (
        "mercato_http_refused_total",
        Kind::Counter,
        "Requests and connections refused at the edge, by reason: rate_limited (429), overloaded (503, beyond the requests in flight) or connections (503, beyond the connection caps)",
    ),
    (
        "mercato_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by route template, method and status",
    ),
    (
        "mercato_http_request_duration_seconds",
        Kind::Histogram,
        "Time to answer an HTTP request, by route template, method and status",
    ),
    (
        "mercato_cache_requests_total",
        Kind::Counter,
        "Query cache lookups, by kind (product, search, categories, popular) and result (hit, miss)",
    ),
    (
        "mercato_projection_lag_events",
        Kind::Gauge,
        "Events in the log after a projection's checkpoint (counted up to 1000)",
    ),
    (
        "mercato_projection_lag_seconds",
        Kind::Gauge,
        "Age of the oldest event a projection has not applied yet",
    ),
    (
        "mercato_projection_events_total",
        Kind::Counter,
        "Events a projection applied",
    ),
    (
        "mercato_projection_batch_seconds",
        Kind::Histogram,
        "Time a projection took to apply one batch of events",
    ),
    (
        "mercato_projection_position",
        Kind::Gauge,
        "The global position a projection has applied up to",
    ),
    (
        "mercato_projection_failures_total",
        Kind::Counter,
        "Batches a projection failed to apply (it retries them)",
    ),
    (
        "mercato_projection_parked",
        Kind::Gauge,
        "1 while a projection is parked at an event it cannot apply (`mercato projections retry` runs it again), else 0",
    ),
    (
        "mercato_saga_started_total",
        Kind::Counter,
        "Checkout sagas started",
    ),
    (
        "mercato_saga_confirmed_total",
        Kind::Counter,
        "Checkout sagas that ended with a confirmed order",
    ),
    (
        "mercato_saga_cancelled_total",
        Kind::Counter,
        "Checkout sagas that ended with a cancelled order, by reason",
    ),
    (
        "mercato_saga_retries_total",
        Kind::Counter,
        "Saga steps retried after a transient failure",
    ),
    (
        "mercato_sagas",
        Kind::Gauge,
        "Checkout sagas by state (running: open, done, failed: parked), as the saga's lease holder counts them every 5 s",
    ),
    (
        "mercato_webhook_backlog_events",
        Kind::Gauge,
        "Events of the log after the checkpoints of the active webhook endpoints, summed (every 5 s)",
    ),
    (
        "mercato_idempotency_replays_total",
        Kind::Counter,
        "Requests answered with the kept answer of an earlier request with the same Idempotency-Key",
    ),
    (
        "mercato_saga_failed_total",
        Kind::Counter,
        "Saga steps that failed for good (the saga is parked)",
    ),
    (
        "mercato_saga_refunds_total",
        Kind::Counter,
        "Payments refunded because their order was cancelled",
    ),
    (
        "mercato_refunds_total",
        Kind::Counter,
        "Refunds staff asked for that the gateway answered (refunded or refused)",
    ),
    (
        "mercato_saga_duration_seconds",
        Kind::Histogram,
        "Time from an order's placement to the end of its saga",
    ),
    (
        "mercato_saga_lease_held",
        Kind::Gauge,
        "1 while this process holds the saga workers' lease, else 0",
    ),
    (
        "mercato_saga_charges_waiting",
        Kind::Gauge,
        "Charges waiting for the payment gateway's answer (timers, not saga places)",
    ),
    (
        "mercato_notifier_lease_held",
        Kind::Gauge,
        "1 while this process holds the notifier's lease (records and sends messages), else 0",
    ),
    (
        "mercato_notifications",
        Kind::Gauge,
        "Messages in the notification outbox by status (pending: waiting or retrying; parked: failed for good)",
    ),
    (
        "mercato_notifications_recorded_total",
        Kind::Counter,
        "Messages the notifier's intake recorded in the outbox",
    ),
    (
        "mercato_notifications_total",
        Kind::Counter,
        "Attempts at messages by template, channel and outcome (sent, retry, parked, skipped, erased; later: the recipient's account not read yet)",
    ),
    (
        "mercato_notification_latency_seconds",
        Kind::Histogram,
        "Time from a message's recording to the mail server or SMS provider taking it",
    ),
    (
        "mercato_kafka_requests_total",
        Kind::Counter,
        "Requests taken from a Kafka request topic (notifications.commands) by outcome (taken, invalid: sent to the dead-letter topic)",
    ),
    (
        "mercato_webhook_deliveries_total",
        Kind::Counter,
        "Webhook delivery attempts by outcome (delivered, failed)",
    ),
    (
        "mercato_webhook_endpoints_disabled_total",
        Kind::Counter,
        "Webhook endpoints disabled after failing for too long",
    ),
    (
        "mercato_relay_up",
        Kind::Gauge,
        "1 while this process's Kafka relay publishes, 0 after a failure or while it stands by",
    ),
    (
        "mercato_relay_lease_held",
        Kind::Gauge,
        "1 while this process holds the Kafka relay's lease (publishes), 0 while it stands by",
    ),
    (
        "mercato_relay_events_total",
        Kind::Counter,
        "Events the relay published to Kafka",
    ),
    (
        "mercato_relay_batch_seconds",
        Kind::Histogram,
        "Time the relay took to publish one batch",
    ),
    (
        "mercato_relay_position",
        Kind::Gauge,
        "The global position the relay has published up to",
    ),
    (
        "mercato_relay_unroutable_total",
        Kind::Counter,
        "Events the relay found no topic for",
    ),
    (
        "mercato_relay_failures_total",
        Kind::Counter,
        "Relay batches that failed (they are retried)",
    ),
    (
        "mercato_kafka_consumed_total",
        Kind::Counter,
        "Kafka messages a consumer group applied",
    ),
    (
        "mercato_kafka_dlq_total",
        Kind::Counter,
        "Kafka messages sent to a dead-letter topic, by topic",
    ),
];

/// Gives every metric in [`METRICS`] its help text.
fn describe_metrics() {
    for (name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
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

/// How often a serving process looks whether a rebuilt read model was swapped in.
const SWAP_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Drops every cached answer when a rebuilt read model was swapped in (by `mercato replay`, in
/// another process): the swap replaced the data the answers were derived from, behind the
/// projections that invalidate the cache change by change.
pub(crate) async fn drop_cache_on_swaps(
    db: ReadDb,
    search: Arc<dyn projections::search::SearchIndex>,
    cache: Arc<dyn Cache>,
    shutdown: CancellationToken,
) {
    let mut seen = db.swaps().await.ok();
    let mut interval = tokio::time::interval(SWAP_CHECK_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match db.swaps().await {
            Ok(swaps) if seen != Some(swaps) => {
                // (Also when the first look failed: a swap may have happened since.) The search
                // index switches first: a cached answer would never make it look.
                if let Err(error) = search.follow_swaps().await {
                    tracing::warn!(%error, "cannot open the search index generation in service");
                }
                tracing::info!(
                    swaps,
                    "a rebuilt read model was swapped in: the cached answers are dropped"
                );
                cache.invalidate_all().await;
                seen = Some(swaps);
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "cannot read the read models' swaps"),
        }
    }
}

/// Copies each projection's stored checkpoint into `progress` every few milliseconds: how a
/// query-api process without projections of its own knows how far the read models got. Every
/// [`CAUGHT_UP_CHECK_EVERY`] polls it also looks whether each is caught up (the oldest event it
/// has not applied at most [`READY_LAG`] old): until one has been, its answers are not shared
/// through the cache; and which are parked at an event they cannot apply (the projector
/// process's runner parked them), for `/ready`.
pub(crate) async fn poll_checkpoints(
    store: Arc<dyn EventStore>,
    db: ReadDb,
    projections: Vec<Arc<dyn Projection>>,
    progress: Progress,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    let mut polls: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let look = polls.is_multiple_of(CAUGHT_UP_CHECK_EVERY);
        polls += 1;
        let parks = if look { db.parks().await.ok() } else { None };
        for projection in &projections {
            if let Some(parks) = &parks {
                let parked_at = parks
                    .iter()
                    .find(|(name, _)| name == projection.name())
                    .map(|(_, park)| park.position);
                progress
                    .sender(projection.name())
                    .send_if_modified(|state| {
                        let changed = state.parked_at != parked_at;
                        state.parked_at = parked_at;
                        changed
                    });
            }
            let Ok(position) = projection.checkpoint(&Feed::Log).await else {
                continue;
            };
            let sender = progress.sender(projection.name());
            sender.send_if_modified(|state| {
                let moved = position > state.position;
                state.position = state.position.max(position);
                moved
            });
            if look && let Ok(behind) = oldest_unapplied(store.as_ref(), position).await {
                let caught_up = behind.is_none_or(|age| age <= READY_LAG);
                sender.send_if_modified(|state| {
                    let changed =
                        state.caught_up != caught_up || (caught_up && !state.reached_head);
                    state.caught_up = caught_up;
                    state.reached_head |= caught_up;
                    changed
                });
            }
        }
    }
}

/// How many checkpoint polls apart a query-api process looks whether the read models are
/// caught up.
const CAUGHT_UP_CHECK_EVERY: u64 = 10;
