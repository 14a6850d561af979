//! The routes of notifications and webhooks: staff (admin) manage webhook endpoints and read
//! their delivery logs; support staff read the messages sent about an order.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use eventstore::EventStore;
use http_common::openapi::{ApiDoc, DocumentedRouter, Method, RouteDoc, schemas};
use http_common::params::known_params;
use http_common::{JsonBody, Problem, RequestContext};
use projections::readdb::ReadDb;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::guard::DestinationGuard;
use crate::outbox;
use crate::webhooks::{Endpoints, RegistrationError, Replayed};

/// What the routes need.
#[derive(Clone, Debug)]
pub struct NotifyState {
    pub store: Arc<dyn EventStore>,
    pub db: ReadDb,
    pub endpoints: Endpoints,
    pub guard: DestinationGuard,
}

/// `POST /webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub url: String,
    pub event_types: Vec<String>,
}

/// `POST /webhooks/{id}/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    pub from_position: u64,
}

const LIMIT_QUERY: &[(&str, &str)] = &[(
    "limit",
    "at most this many, newest first (1 to 1000, default 100)",
)];

fn routes() -> DocumentedRouter<NotifyState> {
    DocumentedRouter::new()
        .route(
            RouteDoc {
                method: Method::Post,
                body: Some("RegisterWebhook"),
                success: (201, "RegisteredWebhook"),
                ..RouteDoc::get("/webhooks", "Register a webhook endpoint: its URL (checked: no private, loopback or link-local destination unless allowlisted) and the event types it gets; the signing secret is shown this once", "RegisteredWebhook")
            },
            register,
        )
        .route(
            RouteDoc::get("/webhooks", "The webhook endpoints (never their secrets)", "Webhooks"),
            list,
        )
        .route(
            RouteDoc::get("/webhooks/{webhook_id}", "One webhook endpoint: its checkpoint, and whether it is failing or disabled", "Webhook"),
            get,
        )
        .route(
            RouteDoc {
                method: Method::Delete,
                success: (204, "Empty"),
                ..RouteDoc::get("/webhooks/{webhook_id}", "Delete a webhook endpoint: nothing more is delivered to it", "Empty")
            },
            delete,
        )
        .route(
            RouteDoc {
                query: LIMIT_QUERY,
                ..RouteDoc::get("/webhooks/{webhook_id}/deliveries", "The deliveries to an endpoint, each with its attempts and the answers they got", "WebhookDeliveries")
            },
            deliveries,
        )
        .route(
            RouteDoc {
                method: Method::Post,
                body: Some("ReplayWebhook"),
                success: (202, "Accepted"),
                ..RouteDoc::get("/webhooks/{webhook_id}/replay", "Deliver again from a position of the log on (and enable a disabled endpoint)", "Accepted")
            },
            replay,
        )
        .route(
            RouteDoc {
                query: LIMIT_QUERY,
                ..RouteDoc::get("/orders/{order_id}/notifications", "The messages recorded about an order: what, to whom (an account, or erased), and whether and when it was sent", "Notifications")
            },
            order_notifications,
        )
        .route(
            RouteDoc {
                query: &[
                    ("status", "only messages in this status: pending, sent, parked, skipped or erased"),
                    ("order_id", "only the messages about this order"),
                    ("limit", "at most this many, newest first (1 to 1000, default 100)"),
                ],
                ..RouteDoc::get("/notifications", "The recorded messages, newest first: what, to whom, whether and when sent, and why a parked one parked", "Notifications")
            },
            all_notifications,
        )
        .route(
            RouteDoc {
                method: Method::Post,
                ..RouteDoc::get("/notifications/{key}/retry", "Send a parked message again once its cause is fixed (409 if it is not parked)", "NotificationRetried")
            },
            retry_notification,
        )
        .route(
            RouteDoc {
                method: Method::Post,
                success: (201, "NotificationResent"),
                ..RouteDoc::get("/notifications/{key}/resend", "Send a message once more, as a new message (a customer lost it)", "NotificationResent")
            },
            resend_notification,
        )
}

/// The routes with their state.
pub fn router(state: NotifyState) -> Router {
    routes().into_router().with_state(state)
}

/// The routes' part of the OpenAPI document.
pub fn api_doc() -> ApiDoc {
    let endpoint = json!({ "type": "object", "properties": {
        "webhook_id": { "type": "string", "format": "uuid" },
        "url": { "type": "string", "format": "uri" },
        "event_types": { "type": "array", "items": { "type": "string" } },
        "status": { "enum": ["active", "disabled"] },
        "checkpoint": { "type": "integer", "description": "the position of the last event done with" },
        "attempts": { "type": "integer", "description": "failed attempts at the event after the checkpoint" },
        "next_attempt_at": { "type": ["integer", "null"], "description": "ms since the epoch" },
        "failing_since": { "type": ["integer", "null"] },
        "disabled_reason": { "type": ["string", "null"] },
        "created_at": { "type": "integer" },
        "created_by": { "type": "string" } } });
    let mut registered = endpoint.clone();
    registered["properties"]["secret"] = json!({ "type": "string", "pattern": "^whsec_", "description": "the signing secret (Standard Webhooks); shown only in this answer" });
    routes().into_doc(schemas(json!({
        "RegisterWebhook": { "type": "object", "additionalProperties": false, "required": ["url", "event_types"], "properties": {
            "url": { "type": "string", "minLength": 1, "maxLength": crate::webhooks::URL_MAX, "description": "http:// or https://, to a public address (or one MERCATO_WEBHOOK_ALLOWLIST names)" },
            "event_types": { "type": "array", "minItems": 1, "maxItems": crate::webhooks::TYPES_MAX,
                "items": { "type": "string", "description": "an event type such as OrderConfirmed, or * for all" } } } },
        "RegisteredWebhook": registered,
        "Webhook": endpoint.clone(),
        "Webhooks": { "type": "object", "properties": { "webhooks": { "type": "array", "items": endpoint } } },
        "ReplayWebhook": { "type": "object", "additionalProperties": false, "required": ["from_position"], "properties": {
            "from_position": { "type": "integer", "minimum": 0, "description": "the first position delivered again" } } },
        "WebhookDeliveries": { "type": "object", "properties": { "deliveries": { "type": "array", "items": { "type": "object", "properties": {
            "position": { "type": "integer" }, "event_id": { "type": "string" }, "event_type": { "type": "string" },
            "status": { "enum": ["delivered", "failing"] }, "delivered_at": { "type": ["integer", "null"] },
            "attempts": { "type": "array", "items": { "type": "object", "properties": {
                "attempt": { "type": "integer" }, "attempted_at": { "type": "integer" },
                "status_code": { "type": ["integer", "null"] }, "answer": { "type": "string" },
                "duration_ms": { "type": "integer" } } } } } } } } },
        "Notifications": { "type": "object", "properties": { "notifications": { "type": "array", "items": { "type": "object", "properties": {
            "key": { "type": "string" }, "template": { "type": "string" }, "channel": { "enum": ["email", "sms"] },
            "recipient": { "type": "string", "description": "user:<id>, or erased" },
            "status": { "enum": ["pending", "sent", "parked", "skipped", "erased"] },
            "attempts": { "type": "integer" }, "last_error": { "type": ["string", "null"] },
            "position": { "type": "integer" }, "created_at": { "type": "integer" },
            "sent_at": { "type": ["integer", "null"] } } } } } },
        "NotificationRetried": { "type": "object", "properties": {
            "key": { "type": "string" }, "status": { "enum": ["pending"] } } },
        "NotificationResent": { "type": "object", "properties": {
            "key": { "type": "string", "description": "the new message's key" },
            "resent": { "type": "string", "description": "the original's key" } } },
    })))
}

fn limit_of(query: &HashMap<String, String>) -> Result<usize, Problem> {
    match query.get("limit") {
        None => Ok(100),
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=1000).contains(&limit) => Ok(limit),
            _ => Err(Problem::invalid(
                "limit",
                format!("limit must be a whole number from 1 to 1000, not {text:?}"),
            )),
        },
    }
}

fn unavailable(error: &dyn std::fmt::Display) -> Problem {
    Problem::unavailable_logged("webhooks and notifications cannot be read right now", error)
}

fn no_such_webhook() -> Problem {
    Problem::not_found("no webhook endpoint has this id: GET /webhooks lists them")
}

async fn register(
    State(state): State<NotifyState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<Register>,
) -> Response {
    let head = match state.store.head_position().await {
        Ok(head) => head,
        Err(error) => return unavailable(&error).into_response(),
    };
    match state
        .endpoints
        .register(
            &state.guard,
            &body.url,
            &body.event_types,
            &context.actor,
            head,
        )
        .await
    {
        Ok((endpoint, secret)) => {
            let mut answer = json!(endpoint);
            answer["secret"] = json!(secret);
            (StatusCode::CREATED, Json(answer)).into_response()
        }
        Err(RegistrationError::Invalid(field, detail)) => {
            Problem::invalid(field, detail).into_response()
        }
        Err(RegistrationError::Destination(error)) => {
            Problem::invalid("url", error.to_string()).into_response()
        }
        Err(RegistrationError::Storage(error)) => unavailable(&error).into_response(),
    }
}

async fn list(State(state): State<NotifyState>) -> Response {
    match state.endpoints.list().await {
        Ok(endpoints) => Json(json!({ "webhooks": endpoints })).into_response(),
        Err(error) => unavailable(&error).into_response(),
    }
}

async fn get(State(state): State<NotifyState>, Path(webhook_id): Path<String>) -> Response {
    match state.endpoints.get(&webhook_id).await {
        Ok(Some(endpoint)) => Json(json!(endpoint)).into_response(),
        Ok(None) => no_such_webhook().into_response(),
        Err(error) => unavailable(&error).into_response(),
    }
}

async fn delete(State(state): State<NotifyState>, Path(webhook_id): Path<String>) -> Response {
    match state.endpoints.delete(&webhook_id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => no_such_webhook().into_response(),
        Err(error) => unavailable(&error).into_response(),
    }
}

async fn deliveries(
    State(state): State<NotifyState>,
    Path(webhook_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let limit = match limit_of(&query) {
        Ok(limit) => limit,
        Err(problem) => return problem.into_response(),
    };
    match state.endpoints.get(&webhook_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return no_such_webhook().into_response(),
        Err(error) => return unavailable(&error).into_response(),
    }
    match state.endpoints.deliveries(&webhook_id, limit).await {
        Ok(deliveries) => Json(json!({ "deliveries": deliveries })).into_response(),
        Err(error) => unavailable(&error).into_response(),
    }
}

async fn replay(
    State(state): State<NotifyState>,
    Path(webhook_id): Path<String>,
    JsonBody(body): JsonBody<Replay>,
) -> Response {
    match state.endpoints.replay(&webhook_id, body.from_position).await {
        Ok(Replayed::From(position)) => (
            StatusCode::ACCEPTED,
            Json(json!({ "detail": format!("deliveries start again from position {position}") })),
        )
            .into_response(),
        Ok(Replayed::Ahead { next }) => Problem::invalid(
            "from_position",
            format!(
                "a replay goes back, never ahead: this endpoint's next delivery is position {next}; give {next} or less"
            ),
        )
        .into_response(),
        Ok(Replayed::NoSuchEndpoint) => no_such_webhook().into_response(),
        Err(error) => unavailable(&error).into_response(),
    }
}

async fn order_notifications(
    State(state): State<NotifyState>,
    Path(order_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let limit = match limit_of(&query) {
        Ok(limit) => limit,
        Err(problem) => return problem.into_response(),
    };
    let Ok(order_id) = Uuid::parse_str(&order_id) else {
        return Problem::not_found("no order has this id (an order id is a UUID)").into_response();
    };
    let filter = outbox::Filter {
        order_id: Some(order_id.to_string()),
        limit,
        ..outbox::Filter::default()
    };
    listing(&state.db, &filter).await
}

/// The messages `filter` selects, as the listings answer them.
async fn listing(db: &ReadDb, filter: &outbox::Filter) -> Response {
    let messages = match outbox::list(db, filter).await {
        Ok(messages) => messages,
        Err(error) => return unavailable(&error).into_response(),
    };
    match views(db, &messages).await {
        Ok(shown) => Json(json!({ "notifications": shown })).into_response(),
        Err(error) => unavailable(&error).into_response(),
    }
}

/// The statuses a message can be in.
const STATUSES: &[&str] = &["pending", "sent", "parked", "skipped", "erased"];

async fn all_notifications(
    State(state): State<NotifyState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(problem) = known_params(&query, &["status", "order_id", "limit"]) {
        return problem.into_response();
    }
    let limit = match limit_of(&query) {
        Ok(limit) => limit,
        Err(problem) => return problem.into_response(),
    };
    let text = |name: &str| {
        query
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    let status = match text("status") {
        None => None,
        Some(status) if STATUSES.contains(&status) => Some(status.to_owned()),
        Some(other) => {
            return Problem::invalid(
                "status",
                format!(
                    "{:?} is none of {}",
                    http_common::params::truncate(other, 40),
                    STATUSES.join(", ")
                ),
            )
            .into_response();
        }
    };
    let order_id = match text("order_id") {
        None => None,
        Some(id) => match Uuid::parse_str(id) {
            Ok(id) => Some(id.to_string()),
            Err(_) => {
                return Problem::invalid("order_id", "an order id is a UUID").into_response();
            }
        },
    };
    let filter = outbox::Filter {
        status,
        order_id,
        limit,
        ..outbox::Filter::default()
    };
    listing(&state.db, &filter).await
}

fn no_such_message(key: &str) -> Problem {
    Problem::not_found(format!(
        "no message has key {:?}: GET /notifications lists them",
        http_common::params::truncate(key, 80)
    ))
}

async fn retry_notification(State(state): State<NotifyState>, Path(key): Path<String>) -> Response {
    match outbox::retry_parked(&state.db, Some(&key)).await {
        Ok(0) => {}
        Ok(_) => return Json(json!({ "key": key, "status": "pending" })).into_response(),
        Err(error) => return unavailable(&error).into_response(),
    }
    match outbox::get(&state.db, &key).await {
        Ok(None) => no_such_message(&key).into_response(),
        Ok(Some(message)) => Problem::conflict(format!(
            "message {key} is {}, not parked: only a parked message is sent again (POST /notifications/{{key}}/resend sends any once more)",
            message.status
        ))
        .into_response(),
        Err(error) => unavailable(&error).into_response(),
    }
}

async fn resend_notification(
    State(state): State<NotifyState>,
    Path(key): Path<String>,
) -> Response {
    match outbox::resend(&state.db, &key).await {
        Ok(Some(new_key)) => (
            axum::http::StatusCode::CREATED,
            Json(json!({ "key": new_key, "resent": key })),
        )
            .into_response(),
        Ok(None) => no_such_message(&key).into_response(),
        Err(crate::NotifyError::Invalid(reason)) => {
            Problem::conflict(format!("message {key} cannot be sent again: {reason}"))
                .into_response()
        }
        Err(error) => unavailable(&error).into_response(),
    }
}

/// `messages` as listings show them ([`view`]), each recipient's erasure read once.
pub async fn views(
    db: &ReadDb,
    messages: &[outbox::Message],
) -> Result<Vec<Value>, crate::NotifyError> {
    let mut erased_by_recipient: HashMap<&str, bool> = HashMap::new();
    let mut shown = Vec::with_capacity(messages.len());
    for message in messages {
        let recipient = message.recipient.as_str();
        let erased = match erased_by_recipient.get(recipient) {
            Some(erased) => *erased,
            None => {
                let erased = erased(db, recipient).await?;
                erased_by_recipient.insert(recipient, erased);
                erased
            }
        };
        shown.push(view(message, erased));
    }
    Ok(shown)
}

/// Whether `recipient` was erased (its account's read model says so).
pub async fn erased(db: &ReadDb, recipient: &str) -> Result<bool, crate::NotifyError> {
    let Some(user_id) = recipient.strip_prefix("user:") else {
        return Ok(false);
    };
    Ok(projections::users::load_user_row(db, user_id)
        .await?
        .is_some_and(|row| row.status == "erased"))
}

/// A message as listings show it: no variables (they are for the templates), and the
/// recipient shown as erased once the person is.
pub fn view(message: &outbox::Message, erased: bool) -> Value {
    json!({
        "key": message.key,
        "template": message.template,
        "channel": message.channel,
        "recipient": if erased { "erased" } else { message.recipient.as_str() },
        "status": message.status,
        "attempts": message.attempts,
        "last_error": message.last_error,
        "position": message.position,
        "created_at": message.created_at,
        "sent_at": message.sent_at,
    })
}
