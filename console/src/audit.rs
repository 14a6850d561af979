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
use crate::pages::{Visit, failure, page, percent_encode, redirect, refusal};

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
            &format!(
                "/audit/correlations/{}",
                percent_encode(text("correlation_id"))
            ),
        );
    }
    if !text("stream_type").is_empty() && !text("stream_id").is_empty() {
        return redirect(
            &visitor,
            &format!(
                "/audit/streams/{}/{}",
                percent_encode(text("stream_type")),
                percent_encode(text("stream_id"))
            ),
        );
    }
    page(&state, &visitor, StatusCode::OK, "audit.html", context! {})
}

/// `/audit/streams/{type}/{id}`: the stream's events, oldest first.
pub async fn stream(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Path((stream_type, stream_id)): Path<(String, String)>,
) -> Response {
    let (kind, id) = (percent_encode(&stream_type), percent_encode(&stream_id));
    let events = EventsPage {
        route: "/streams/{stream_type}/{stream_id}/events",
        here: format!("/audit/streams/{kind}/{id}"),
        target: format!("/streams/{kind}/{id}/events?limit={PAGE_EVENTS}"),
        title: format!("{stream_type} {stream_id}"),
        stream: true,
        failed: "This stream cannot be shown",
    };
    events.answer(&state, visitor).await
}

/// `/audit/correlations/{id}`: every event one request or saga caused, in log order.
pub async fn correlation(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Path(correlation_id): Path<String>,
) -> Response {
    let id = percent_encode(&correlation_id);
    let events = EventsPage {
        route: "/events",
        here: format!("/audit/correlations/{id}"),
        target: format!("/events?limit={PAGE_EVENTS}&correlation_id={id}"),
        title: format!("Everything correlation {correlation_id} caused"),
        stream: false,
        failed: "This timeline cannot be shown",
    };
    events.answer(&state, visitor).await
}

/// A page of events read from the API's event routes.
struct EventsPage {
    /// The permission table's route the page reads.
    route: &'static str,
    /// The page's own address (where to come back after logging in).
    here: String,
    /// What the page asks the API.
    target: String,
    title: String,
    /// Whether the events are one stream's (else each names its stream).
    stream: bool,
    failed: &'static str,
}

impl EventsPage {
    async fn answer(self, state: &ConsoleState, mut visitor: crate::visitor::Visitor) -> Response {
        if let Some(refused) = refusal(state, &visitor, Method::Get, self.route, &self.here) {
            return refused;
        }
        let answer = visitor.call(&state.api, Call::get(self.target)).await;
        if !answer.ok() {
            return failure(state, &visitor, &answer, self.failed);
        }
        page(
            state,
            &visitor,
            StatusCode::OK,
            "audit_events.html",
            context! {
                title => self.title,
                stream => self.stream,
                events => shown(&answer.body["events"]),
            },
        )
    }
}
