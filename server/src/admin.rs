//! The operators' routes over what runs behind the API: the checkout sagas (how many in each
//! state, the parked ones, and running a parked one again), the projections (checkpoint, lag,
//! park and unfinished rebuild, and clearing a park) and Kafka's dead letters (listed, and sent
//! back once their cause is fixed). They do over HTTP what `mercato saga`, `mercato projections`
//! and `mercato dlq` do, for the console's back office and any other client the permission table
//! lets in. Served with the command routes, since some of them write.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use eventstore::EventStore;
use http_common::Problem;
use http_common::openapi::{ApiDoc, DocumentedRouter, Method, RouteDoc};
use http_common::params::{count_param, known_params, truncate};
use projections::ReadModelStores;
use projections::rebuild::status::LAG_COUNT_LIMIT;
use projections::runner::Park;
use serde_json::{Value, json};
use uuid::Uuid;

/// The projections that keep their checkpoint in the read-model database but are no read
/// model: the checkout saga's intake, which starts a saga for every order placed, and the
/// notifier's, which records the messages events call for.
pub const OTHER_PROJECTIONS: &[&str] = &[
    sagas::state::SagaIntake::NAME,
    notify::NotificationIntake::NAME,
];

/// The most parked sagas one answer lists.
const PARKED_LIST_MAX: usize = 500;

/// What the routes need.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub store: Arc<dyn EventStore>,
    pub read_models: ReadModelStores,
    /// The configuration, for Kafka's dead letters.
    pub config: Arc<crate::Config>,
}

fn routes() -> DocumentedRouter<AdminState> {
    DocumentedRouter::new()
        .route(
            RouteDoc {
                query: &[("limit", "how many parked sagas to list, 1 to 500, default 100")],
                ..RouteDoc::get(
                    "/sagas",
                    "The checkout sagas: how many are running, done and parked, and the parked ones (most recent first) with why they parked",
                    "Sagas",
                )
            },
            sagas_overview,
        )
        .route(
            RouteDoc {
                method: Method::Post,
                ..RouteDoc::get(
                    "/sagas/{order_id}/retry",
                    "Run a parked checkout saga again once its cause is fixed (409 if it is not parked)",
                    "SagaRetried",
                )
            },
            retry_saga,
        )
        .route(
            RouteDoc::get(
                "/projections",
                "Every projection with its checkpoint, lag, park and unfinished rebuild, and the log's head",
                "Projections",
            ),
            projections_overview,
        )
        .route(
            RouteDoc {
                method: Method::Post,
                ..RouteDoc::get(
                    "/projections/{name}/retry",
                    "Clear a projection's park once its cause is fixed: it applies the event it stopped at again within seconds (409 if it is not parked)",
                    "ProjectionRetried",
                )
            },
            retry_projection,
        )
        .route(
            RouteDoc {
                query: DLQ_QUERY,
                ..RouteDoc::get(
                    "/dead-letters",
                    "The messages Kafka consumers could not process: where each came from, why and how often it failed (kafka: false and none without Kafka)",
                    "DeadLetters",
                )
            },
            dead_letters,
        )
        .route(
            RouteDoc {
                method: Method::Post,
                query: DLQ_QUERY,
                ..RouteDoc::get(
                    "/dead-letters/replay",
                    "Send the dead letters not replayed yet back to their topics once their cause is fixed: the consumers that failed them apply them again (409 without Kafka)",
                    "DeadLettersReplayed",
                )
            },
            replay_dead_letters,
        )
}

const DLQ_QUERY: &[(&str, &str)] = &[(
    "topic",
    "one topic's dead letters (product.events or product.events.dlq); all without it",
)];

/// The routes with their state.
pub(crate) fn router(state: AdminState) -> Router {
    routes().into_router().with_state(state)
}

/// The routes' part of the OpenAPI document.
pub(crate) fn api_doc() -> ApiDoc {
    let park = json!({ "type": ["object", "null"], "properties": {
        "position": { "type": "integer", "description": "the event it cannot apply" },
        "event_type": { "type": "string" }, "stream": { "type": "string" },
        "reason": { "type": "string" }, "parked_at": { "type": "string" } } });
    routes().into_doc(http_common::openapi::schemas(json!({
        "Sagas": { "type": "object", "properties": {
            "running": { "type": "integer" }, "done": { "type": "integer" }, "parked": { "type": "integer" },
            "parked_sagas": { "type": "array", "items": { "type": "object", "properties": {
                "order_id": { "type": "string", "format": "uuid" }, "correlation_id": { "type": "string" },
                "attempts": { "type": "integer" }, "last_error": { "type": ["string", "null"] },
                "started_at": { "type": "string", "format": "date-time" },
                "parked_at": { "type": "string" } } } } } },
        "SagaRetried": { "type": "object", "properties": {
            "order_id": { "type": "string", "format": "uuid" }, "state": { "enum": ["running"] } } },
        "Projections": { "type": "object", "properties": {
            "head": { "type": "integer", "description": "the log's head position" },
            "projections": { "type": "array", "items": { "type": "object", "properties": {
                "name": { "type": "string" }, "checkpoint": { "type": "integer" },
                "lag": { "type": "integer", "description": "events after the checkpoint, counted up to lag_limit" },
                "lag_limit": { "type": "integer" },
                "state": { "type": "string", "description": "in words: not started, behind, caught up; parked; rebuild unfinished" },
                "parked": park.clone(),
                "rebuild": { "type": ["object", "null"], "properties": {
                    "started_at": { "type": "string" }, "position": { "type": ["integer", "null"] } } } } } } } },
        "ProjectionRetried": { "type": "object", "properties": {
            "name": { "type": "string" }, "cleared": park } },
        "DeadLetters": { "type": "object", "properties": {
            "kafka": { "type": "boolean", "description": "whether this deployment has Kafka" },
            "dead_letters": { "type": "array", "items": { "type": "object", "description": "as mercato dlq list --json prints it: dlq_topic, dlq_partition, dlq_offset, topic, partition, offset, key, event_type, stream, group, projections, attempts, failed_at, reason, replayed" } } } },
        "DeadLettersReplayed": { "type": "object", "properties": {
            "replayed": { "type": "integer" } } }
    })))
}

fn park_json(park: &Park) -> Value {
    json!({
        "position": park.position,
        "event_type": park.event_type,
        "stream": park.stream,
        "reason": park.reason,
        "parked_at": park.parked_at,
    })
}

fn saga_problem(error: &sagas::SagaError) -> Problem {
    Problem::unavailable_logged("the saga tables cannot be read right now", error)
}

async fn sagas_overview(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    known_params(&params, &["limit"])?;
    let limit = count_param(&params, "limit", 100, 1..=PARKED_LIST_MAX)?;
    let db = &state.read_models.db;
    let counts = sagas::state::count_by_state(db)
        .await
        .map_err(|error| saga_problem(&error))?;
    let count = |name: &str| {
        counts
            .iter()
            .find(|(state, _)| state == name)
            .map_or(0, |(_, count)| *count)
    };
    let parked = sagas::state::parked(db, limit)
        .await
        .map_err(|error| saga_problem(&error))?;
    let parked: Vec<Value> = parked
        .iter()
        .map(|saga| {
            json!({
                "order_id": saga.order_id,
                "correlation_id": saga.correlation_id,
                "attempts": saga.attempts,
                "last_error": saga.last_error,
                "started_at": chrono::DateTime::from_timestamp_millis(saga.started_at)
                    .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                "parked_at": saga.parked_at,
            })
        })
        .collect();
    Ok(Json(json!({
        "running": count(sagas::state::RUNNING),
        "done": count(sagas::state::DONE),
        "parked": count(sagas::state::FAILED),
        "parked_sagas": parked,
    }))
    .into_response())
}

fn order_id_of(text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text).map_err(|_| {
        Problem::not_found(format!(
            "no saga for order {:?}: an order id is a UUID",
            truncate(text, 60)
        ))
    })
}

async fn retry_saga(
    State(state): State<AdminState>,
    Path(order_id): Path<String>,
) -> Result<Response, Problem> {
    let order_id = order_id_of(&order_id)?;
    let db = &state.read_models.db;
    let restarted = sagas::state::retry_failed(db, Some(order_id))
        .await
        .map_err(|error| saga_problem(&error))?;
    if restarted > 0 {
        return Ok(Json(json!({ "order_id": order_id, "state": "running" })).into_response());
    }
    match sagas::state::saga_status(db, order_id)
        .await
        .map_err(|error| saga_problem(&error))?
    {
        None => Err(Problem::not_found(format!(
            "order {order_id} has no checkout saga: check the order id"
        ))),
        Some(status) => Err(Problem::conflict(format!(
            "the saga of order {order_id} is {}, not parked: only a parked saga is run again",
            status.state
        ))),
    }
}

async fn projections_overview(State(state): State<AdminState>) -> Result<Response, Problem> {
    let (statuses, head) =
        projections::rebuild::status(state.store.as_ref(), &state.read_models, OTHER_PROJECTIONS)
            .await
            .map_err(|error| {
                Problem::unavailable_logged(
                    "the projections' state cannot be read right now",
                    &error,
                )
            })?;
    let projections: Vec<Value> = statuses
        .iter()
        .map(|status| {
            json!({
                "name": status.name,
                "checkpoint": status.checkpoint,
                "lag": status.lag,
                "lag_limit": LAG_COUNT_LIMIT,
                "state": status.state(),
                "parked": status.parked.as_ref().map(park_json),
                "rebuild": status.rebuild.as_ref().map(|rebuild| json!({
                    "started_at": rebuild.started_at,
                    "position": rebuild.position,
                })),
            })
        })
        .collect();
    Ok(Json(json!({ "head": head, "projections": projections })).into_response())
}

/// Every projection's name.
pub fn projection_names() -> Vec<&'static str> {
    let mut names = projections::ReadModel::names();
    names.extend_from_slice(OTHER_PROJECTIONS);
    names
}

async fn retry_projection(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let names = projection_names();
    let Some(name) = names.iter().copied().find(|known| *known == name) else {
        return Err(Problem::not_found(format!(
            "there is no projection named {:?}; the projections are {}",
            truncate(&name, 40),
            names.join(", ")
        )));
    };
    let cleared = state.read_models.db.unpark(name).await.map_err(|error| {
        Problem::unavailable_logged("the projections' parks cannot be changed right now", &error)
    })?;
    match cleared {
        Some(park) => {
            Ok(Json(json!({ "name": name, "cleared": park_json(&park) })).into_response())
        }
        None => Err(Problem::conflict(format!(
            "{name} is not parked: there is nothing to retry"
        ))),
    }
}

/// One replay of the dead letters at a time, in this process.
static REPLAYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// How long a caller is asked to wait while another replay runs.
const REPLAY_RETRY_AFTER_SECONDS: u32 = 5;

/// The `topic` parameter of the dead-letter routes, the only one they take.
fn dlq_topic(params: &HashMap<String, String>) -> Result<Option<String>, Problem> {
    known_params(params, &["topic"])?;
    Ok(params
        .get("topic")
        .map(|topic| topic.trim().to_owned())
        .filter(|topic| !topic.is_empty()))
}

fn dlq_problem(error: &crate::Error) -> Problem {
    match error {
        crate::Error::Usage(message) => Problem::invalid("topic", message.clone()),
        other => Problem::unavailable_logged("Kafka cannot be read right now", other),
    }
}

async fn dead_letters(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let topic = dlq_topic(&params)?;
    if state.config.kafka_bootstrap.is_none() {
        return Ok(Json(json!({ "kafka": false, "dead_letters": [] })).into_response());
    }
    let letters = crate::bus::dead_letters(&state.config, topic.as_deref())
        .await
        .map_err(|error| dlq_problem(&error))?;
    Ok(Json(json!({ "kafka": true, "dead_letters": letters })).into_response())
}

async fn replay_dead_letters(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let topic = dlq_topic(&params)?;
    if state.config.kafka_bootstrap.is_none() {
        return Err(Problem::conflict(
            "this deployment has no Kafka (KAFKA_BOOTSTRAP is not set): nothing is dead-lettered",
        ));
    }
    // Two replays at once would both send what neither has marked replayed yet.
    let Ok(replaying) = REPLAYING.try_acquire() else {
        return Ok(Problem::busy(
            "another replay of the dead letters is running: ask again when it is done",
            REPLAY_RETRY_AFTER_SECONDS,
        ));
    };
    // A task of its own, holding the permit: a caller who goes away (or whose request runs out
    // of time) does not stop a replay halfway, between sending letters back and recording
    // where it got to.
    let config = state.config.clone();
    let replay = tokio::spawn(async move {
        let _replaying = replaying;
        crate::bus::replay_dead_letters(&config, topic.as_deref()).await
    });
    let replayed = replay
        .await
        .map_err(|error| Problem::internal(&error))?
        .map_err(|error| dlq_problem(&error))?;
    Ok(Json(json!({ "replayed": replayed })).into_response())
}
