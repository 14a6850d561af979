//! The audit explorer, for auditors: a stream's history with each event's metadata; everything
//! one correlation id caused, as a timeline across streams; an aggregate's state before or after
//! any of its events, or at a time; the verification of the hash chains; and either history
//! exported as CloudEvents.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_common::openapi::Method;
use minijinja::{Value, context};

use crate::ConsoleState;
use crate::api::Call;
use crate::pages::{
    Visit, failure, message, page, param, percent_encode, redirect, refusal, with_cookies,
};
use crate::visitor::Visitor;

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
    let text = |name: &str| param(&params, name);
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
        stream: Some((stream_type.clone(), stream_id.clone())),
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
        stream: None,
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
    /// The stream (type and id) whose events these are; `None` when each names its own.
    stream: Option<(String, String)>,
    failed: &'static str,
}

impl EventsPage {
    async fn answer(self, state: &ConsoleState, mut visitor: Visitor) -> Response {
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
                stream => self.stream.is_some(),
                stream_type => self.stream.as_ref().map(|(kind, _)| kind.clone()),
                stream_id => self.stream.as_ref().map(|(_, id)| id.clone()),
                aggregates => domain::AGGREGATE_STREAM_TYPES,
                export => format!("{}/cloudevents", self.here),
                may_verify => state.may(&visitor, Method::Get, "/audit/verify"),
                events => shown(&answer.body["events"]),
            },
        )
    }
}

/// `/audit/streams/{type}/{id}/state?at=`: the aggregate as it stood at a position or time
/// (now, without `at`).
pub async fn stream_state(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path((stream_type, stream_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (kind, id) = (percent_encode(&stream_type), percent_encode(&stream_id));
    let here = format!("/audit/streams/{kind}/{id}/state");
    if let Some(refused) = refusal(
        &state,
        &visitor,
        Method::Get,
        "/streams/{stream_type}/{stream_id}/state",
        &here,
    ) {
        return refused;
    }
    let at = param(&params, "at").to_owned();
    let mut target = format!("/streams/{kind}/{id}/state");
    if !at.is_empty() {
        target.push_str(&format!("?at={}", percent_encode(&at)));
    }
    let answer = visitor.call(&state.api, Call::get(target)).await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "This state cannot be shown");
    }
    let state_text = serde_json::to_string_pretty(&answer.body["state"]).unwrap_or_default();
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "audit_state.html",
        context! {
            stream_type => stream_type,
            stream_id => stream_id,
            at => at,
            reached => Value::from_serialize(&answer.body),
            state_text => state_text,
        },
    )
}

/// `/audit/verification`: the form, and with `run`, the hash chains recomputed (the whole log, or one
/// stream's) with the first event that does not match named.
pub async fn verify(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(
        &state,
        &visitor,
        Method::Get,
        "/audit/verify",
        "/audit/verification",
    ) {
        return refused;
    }
    let stream = param(&params, "stream").to_owned();
    if !params.contains_key("run") {
        return page(
            &state,
            &visitor,
            StatusCode::OK,
            "audit_verify.html",
            context! { stream => stream },
        );
    }
    let mut target = "/audit/verify".to_owned();
    if !stream.is_empty() {
        target.push_str(&format!("?stream={}", percent_encode(&stream)));
    }
    let answer = visitor.call(&state.api, Call::get(target)).await;
    if !answer.ok() {
        return failure(
            &state,
            &visitor,
            &answer,
            "The history could not be verified",
        );
    }
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "audit_verify.html",
        context! { stream => stream, report => Value::from_serialize(&answer.body) },
    )
}

/// The CloudEvents JSON batch media type, which the API's feeds answer in when asked.
const CLOUDEVENTS_BATCH: &str = "application/cloudevents-batch+json";

/// The most events one export holds: a longer history is refused, not cut short (`mercato events
/// --format cloudevents` exports any length).
const EXPORT_MAX_EVENTS: usize = 20_000;

/// `/audit/streams/{type}/{id}/cloudevents`: the stream's history as a CloudEvents JSON batch,
/// to download.
pub async fn stream_export(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Path((stream_type, stream_id)): Path<(String, String)>,
) -> Response {
    let (kind, id) = (percent_encode(&stream_type), percent_encode(&stream_id));
    let export = Export {
        route: "/streams/{stream_type}/{stream_id}/events",
        here: format!("/audit/streams/{kind}/{id}/cloudevents"),
        target: format!("/streams/{kind}/{id}/events?limit={PAGE_EVENTS}"),
        cursor: ("after_version", "streamversion"),
        file: format!("{stream_type}-{stream_id}"),
    };
    export.answer(&state, visitor).await
}

/// `/audit/correlations/{id}/cloudevents`: what one correlation id caused, as a CloudEvents
/// JSON batch, to download.
pub async fn correlation_export(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Path(correlation_id): Path<String>,
) -> Response {
    let id = percent_encode(&correlation_id);
    let export = Export {
        route: "/events",
        here: format!("/audit/correlations/{id}/cloudevents"),
        target: format!("/events?limit={PAGE_EVENTS}&correlation_id={id}"),
        cursor: ("after", "position"),
        file: format!("correlation-{correlation_id}"),
    };
    export.answer(&state, visitor).await
}

/// An export of a feed's events, read a page at a time in the CloudEvents form.
struct Export {
    route: &'static str,
    here: String,
    /// The first page's request.
    target: String,
    /// The feed's paging parameter, and the CloudEvents attribute that gives its value.
    cursor: (&'static str, &'static str),
    /// The download's file name, before `.json`.
    file: String,
}

impl Export {
    async fn answer(self, state: &ConsoleState, mut visitor: Visitor) -> Response {
        if let Some(refused) = refusal(state, &visitor, Method::Get, self.route, &self.here) {
            return refused;
        }
        let (parameter, attribute) = self.cursor;
        let mut events: Vec<serde_json::Value> = Vec::new();
        let mut target = self.target.clone();
        loop {
            let call = Call::get(target).header("accept", CLOUDEVENTS_BATCH);
            let answer = visitor.call(&state.api, call).await;
            if !answer.ok() {
                return failure(state, &visitor, &answer, "The export could not be made");
            }
            let page = answer.body.as_array().cloned().unwrap_or_default();
            let next = page
                .last()
                .and_then(|event| event[attribute].as_str())
                .map(str::to_owned);
            let full = page.len() == PAGE_EVENTS as usize;
            events.extend(page);
            if full && events.len() >= EXPORT_MAX_EVENTS {
                return message(
                    state,
                    &visitor,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "This history is too long to download here",
                    &format!(
                        "The console exports at most {EXPORT_MAX_EVENTS} events. Export it with `mercato events --format cloudevents`, which takes any length."
                    ),
                );
            }
            match next {
                Some(next) if full => {
                    target = format!("{}&{parameter}={next}", self.target);
                }
                _ => break,
            }
        }
        if events.is_empty() {
            return message(
                state,
                &visitor,
                StatusCode::NOT_FOUND,
                "Nothing to export",
                "No event matches: check the stream or correlation id.",
            );
        }
        let file: String = self
            .file
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(120)
            .collect();
        let body = serde_json::to_vec(&events).unwrap_or_default();
        drop(events);
        let download = (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, CLOUDEVENTS_BATCH.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{file}.cloudevents.json\""),
                ),
            ],
            body,
        )
            .into_response();
        // A session refreshed on the way keeps its new cookies.
        with_cookies(&visitor, download)
    }
}
