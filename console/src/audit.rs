//! The audit explorer, for auditors: a stream's history with each event's metadata, and
//! everything one correlation id caused, as a timeline across streams.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use http_common::openapi::Method;
use minijinja::{Value, context};

use crate::ConsoleState;
use crate::api::Call;
use crate::pages::{Visit, page, query_text, redirect, refusal};
use crate::shop::failure;

/// The most events a page shows.
const PAGE_EVENTS: u32 = 1000;

/// Events as the pages show them: the payload and metadata as indented JSON.
fn shown(events: &serde_json::Value) -> Value {
    let events: Vec<serde_json::Value> = events
        .as_array()
        .into_iter()
        .flatten()
        .map(|event| {
            let mut event = event.clone();
            event["payload_text"] = serde_json::Value::String(
                serde_json::to_string_pretty(&event["payload"]).unwrap_or_default(),
            );
            event["metadata_text"] = serde_json::Value::String(
                serde_json::to_string_pretty(&event["metadata"]).unwrap_or_default(),
            );
            event
        })
        .collect();
    Value::from_serialize(events)
}

/// `/audit`: open a stream or a correlation id.
pub async fn home(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&state, &visitor, Method::Get, "/events", "/audit") {
        return refused;
    }
    let text = |name: &str| params.get(name).map_or("", |value| value.trim());
    if !text("correlation_id").is_empty() {
        return redirect(
            &visitor,
            &format!("/audit/correlations/{}", query_text(text("correlation_id"))),
        );
    }
    if !text("stream_type").is_empty() && !text("stream_id").is_empty() {
        return redirect(
            &visitor,
            &format!(
                "/audit/streams/{}/{}",
                query_text(text("stream_type")),
                query_text(text("stream_id"))
            ),
        );
    }
    page(&state, &visitor, StatusCode::OK, "audit.html", context! {})
}

/// `/audit/streams/{type}/{id}`: the stream's events, oldest first.
pub async fn stream(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path((stream_type, stream_id)): Path<(String, String)>,
) -> Response {
    let here = format!(
        "/audit/streams/{}/{}",
        query_text(&stream_type),
        query_text(&stream_id)
    );
    let route = "/streams/{stream_type}/{stream_id}/events";
    if let Some(refused) = refusal(&state, &visitor, Method::Get, route, &here) {
        return refused;
    }
    let answer = visitor
        .call(
            &state.api,
            Call::get(format!(
                "/streams/{}/{}/events?limit={PAGE_EVENTS}",
                query_text(&stream_type),
                query_text(&stream_id)
            )),
        )
        .await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "This stream cannot be shown");
    }
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "audit_events.html",
        context! {
            title => format!("{stream_type} {stream_id}"),
            stream => true,
            events => shown(&answer.body["events"]),
        },
    )
}

/// `/audit/correlations/{id}`: every event one request or saga caused, in log order.
pub async fn correlation(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(correlation_id): Path<String>,
) -> Response {
    let here = format!("/audit/correlations/{}", query_text(&correlation_id));
    if let Some(refused) = refusal(&state, &visitor, Method::Get, "/events", &here) {
        return refused;
    }
    let answer = visitor
        .call(
            &state.api,
            Call::get(format!(
                "/events?limit={PAGE_EVENTS}&correlation_id={}",
                query_text(&correlation_id)
            )),
        )
        .await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "This timeline cannot be shown");
    }
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "audit_events.html",
        context! {
            title => format!("Everything correlation {correlation_id} caused"),
            stream => false,
            events => shown(&answer.body["events"]),
        },
    )
}
