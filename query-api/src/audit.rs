//! The auditors' routes beside the event feeds: `GET /streams/{stream_type}/{stream_id}/state`, an
//! aggregate as it stood at a time or position (rebuilt from its events, as `mercato audit state`
//! does), and `GET /audit/verify`, the hash chains recomputed with the first event that does not
//! match named (as `mercato audit verify` does). Both read the event store only.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::Aggregate;
use eventstore::aggregate::LoadError;
use eventstore::audit::{self, Scope};
use eventstore::{EventStore, RecordedEvent, StoreError};
use http_common::Problem;
use http_common::openapi::{DocumentedRouter, RouteDoc};
use http_common::params::{known_params, truncate};
use http_common::problem::store_problem;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::QueryState;

/// The stream types that hold an aggregate a state can be rebuilt of.
pub const AGGREGATES: &[&str] = domain::AGGREGATE_STREAM_TYPES;

/// A moment of the history: a global position or a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// Every event at or before this position.
    Position(u64),
    /// Every event that occurred at or before this time.
    Time(DateTime<Utc>),
    /// Every event stored.
    Now,
}

impl Moment {
    /// A global position (a whole number) or an RFC 3339 time; the error says which forms are
    /// taken.
    pub fn parse(text: &str) -> Result<Moment, String> {
        let text = text.trim();
        let usage = || {
            format!(
                "`{}` is neither a global position (a whole number such as 1234) nor an RFC 3339 time (such as 2026-01-31T12:00:00Z or 2026-01-31T13:00:00+01:00)",
                truncate(text, 60)
            )
        };
        if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
            return text.parse().map(Moment::Position).map_err(|_| usage());
        }
        DateTime::parse_from_rfc3339(text)
            .map(|time| Moment::Time(time.with_timezone(&Utc)))
            .map_err(|_| usage())
    }

    fn includes(self, event: &RecordedEvent) -> bool {
        match self {
            Moment::Position(position) => event.position <= position,
            Moment::Time(time) => event.occurred_at <= time,
            Moment::Now => true,
        }
    }

    /// How the moment is named in answers: `position 12`, an RFC 3339 time, or `now`.
    pub fn describe(self) -> String {
        match self {
            Moment::Position(position) => format!("position {position}"),
            Moment::Time(time) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            Moment::Now => "now".to_owned(),
        }
    }
}

/// Why a stream's state cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The stream type holds no aggregate.
    #[error(
        "{0} streams hold no aggregate: a state is rebuilt of product, cart, order, payment and user streams (read {0} events from their history)"
    )]
    NoAggregate(String),
    /// The stream has no events, or none yet at the moment.
    #[error("{0}")]
    NotFound(String),
    #[error("cannot read the stream: {0}")]
    Load(#[from] LoadError),
    #[error("cannot read the stream: {0}")]
    Store(#[from] StoreError),
}

/// The aggregate of `stream_id` folded from the events `moment` includes, and the last of them.
async fn fold<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    moment: Moment,
) -> Result<(Value, Option<RecordedEvent>), LoadError> {
    let (state, last) =
        eventstore::aggregate::state_at::<A>(store, stream_id, |event| moment.includes(event))
            .await?;
    // An aggregate is plain data: it always has a JSON form.
    Ok((serde_json::to_value(&state).unwrap_or(Value::Null), last))
}

/// The aggregate of stream `stream_type`/`stream_id` as it stood at `moment`: its state, the
/// version and position of the last event folded in, and the stream's current version.
pub async fn stream_state(
    store: &dyn EventStore,
    stream_type: &str,
    stream_id: &str,
    moment: Moment,
) -> Result<Value, StateError> {
    let (state, reached) = match stream_type {
        "product" => fold::<domain::Product>(store, stream_id, moment).await?,
        "cart" => fold::<domain::Cart>(store, stream_id, moment).await?,
        "order" => fold::<domain::Order>(store, stream_id, moment).await?,
        "user" => fold::<domain::User>(store, stream_id, moment).await?,
        "payment" => fold::<domain::Payment>(store, stream_id, moment).await?,
        other => return Err(StateError::NoAggregate(other.to_owned())),
    };
    let Some(reached) = reached else {
        let first = store.read_stream(stream_type, stream_id, 0, 1).await?;
        return Err(StateError::NotFound(match first.first() {
            None => {
                format!("stream {stream_type}/{stream_id} has no events: check the type and id")
            }
            Some(first) => format!(
                "{stream_type}/{stream_id} did not exist yet at {}: its first event is at position {} ({})",
                moment.describe(),
                first.position,
                first
                    .occurred_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true)
            ),
        }));
    };
    let current_version = store.stream_version(stream_type, stream_id).await?;
    Ok(json!({
        "stream_type": stream_type,
        "stream_id": stream_id,
        "at": moment.describe(),
        "version": reached.stream_version,
        "position": reached.position,
        "occurred_at": reached.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "event_type": reached.event_type,
        "current_version": current_version,
        "state": state,
    }))
}

/// The auditors' routes, added to the query routes.
pub(crate) fn routes(router: DocumentedRouter<QueryState>) -> DocumentedRouter<QueryState> {
    router
        .route(
            RouteDoc {
                query: &[(
                    "at",
                    "a global position (every event at or before it) or an RFC 3339 time (every event that occurred by then); leave out for the current state",
                )],
                ..RouteDoc::get(
                    "/streams/{stream_type}/{stream_id}/state",
                    "An aggregate as it stood at a time or position, rebuilt from its events; stream_type is product, cart, order, payment or user. 404 names the first event when the stream did not exist yet",
                    "StreamState",
                )
            },
            state_of_stream,
        )
        .route(
            RouteDoc {
                query: &[
                    (
                        "stream",
                        "TYPE/ID: check only this stream's chain; leave out to check the whole log, its checkpoints and head",
                    ),
                    (
                        "expect_head",
                        "a head hash recorded earlier (64 hex digits): the log up to its position must be unchanged",
                    ),
                ],
                ..RouteDoc::get(
                    "/audit/verify",
                    "Recompute the hash chains: verified, or the first event that does not match, named. One verification runs at a time (503 with Retry-After meanwhile)",
                    "Verification",
                )
            },
            verify,
        )
}

/// The schemas of the auditors' routes.
pub(crate) fn schemas() -> [(&'static str, Value); 2] {
    let problem = json!({ "type": ["object", "null"], "description": "the first thing found wrong, in position order; null when the history verifies", "properties": {
        "position": { "type": "integer" }, "event_id": { "type": ["string", "null"] },
        "stream_type": { "type": "string" }, "stream_id": { "type": "string" },
        "stream_version": { "type": "integer" }, "reason": { "type": "string" },
        "text": { "type": "string", "description": "the whole finding in one sentence" } } });
    [
        (
            "StreamState",
            json!({ "type": "object", "properties": {
                "stream_type": { "type": "string" }, "stream_id": { "type": "string" },
                "at": { "type": "string", "description": "the moment asked for: position N, a time, or now" },
                "version": { "type": "integer", "description": "the stream version of the last event folded in" },
                "position": { "type": "integer", "description": "its global position" },
                "occurred_at": { "type": "string", "format": "date-time" },
                "event_type": { "type": "string", "description": "its type" },
                "current_version": { "type": "integer", "description": "the stream's version now" },
                "state": { "type": "object", "description": "the aggregate as the events folded in make it" } } }),
        ),
        (
            "Verification",
            json!({ "type": "object", "properties": {
                "verified": { "type": "boolean" },
                "scope": { "type": "string", "description": "all, or the TYPE/ID checked" },
                "events": { "type": "integer" }, "streams": { "type": "integer" },
                "checkpoints": { "type": "integer" },
                "head": { "type": "object", "properties": { "position": { "type": "integer" },
                    "events": { "type": "integer" }, "hash": { "type": "string" } } },
                "expected_head_at": { "type": ["object", "null"], "properties": {
                    "position": { "type": "integer" }, "events": { "type": "integer" } } },
                "first_problem": problem,
                "elapsed_ms": { "type": "number" } } }),
        ),
    ]
}

async fn state_of_stream(
    State(state): State<QueryState>,
    Path((stream_type, stream_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    known_params(&params, &["at"])?;
    if !AGGREGATES.contains(&stream_type.as_str()) {
        let detail = if domain::stream_types().contains(&stream_type.as_str()) {
            StateError::NoAggregate(stream_type).to_string()
        } else {
            format!(
                "no stream type {:?}: a state is rebuilt of {} streams",
                truncate(&stream_type, 40),
                AGGREGATES.join(", ")
            )
        };
        return Err(Problem::not_found(detail));
    }
    if stream_id.is_empty() || stream_id.len() > 200 {
        return Err(Problem::not_found("no such stream"));
    }
    let moment = match params.get("at") {
        None => Moment::Now,
        Some(at) => Moment::parse(at).map_err(|usage| Problem::invalid("at", usage))?,
    };
    match stream_state(state.store.as_ref(), &stream_type, &stream_id, moment).await {
        Ok(answer) => Ok(Json(answer).into_response()),
        Err(StateError::NotFound(detail) | StateError::NoAggregate(detail)) => {
            Err(Problem::not_found(detail))
        }
        Err(StateError::Store(error)) => Err(store_problem(&error)),
        Err(StateError::Load(LoadError::Store(error))) => Err(store_problem(&error)),
        // An event the aggregate cannot read (changed in the store, or of a newer schema):
        // the answer names it.
        Err(StateError::Load(error)) => Err(Problem::conflict(format!(
            "the state cannot be rebuilt: {error}"
        ))),
    }
}

/// One verification at a time: it reads the whole log.
static VERIFYING: Semaphore = Semaphore::const_new(1);

/// How long a caller is asked to wait while another verification runs.
const VERIFY_RETRY_AFTER_SECONDS: u32 = 5;

async fn verify(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    known_params(&params, &["stream", "expect_head"])?;
    let scope = match params.get("stream").map(|stream| stream.trim()) {
        None | Some("") => Scope::All,
        Some(stream) => match stream.split_once('/') {
            Some((stream_type, stream_id))
                if domain::stream_types().contains(&stream_type)
                    && !stream_id.is_empty()
                    && stream_id.len() <= 200 =>
            {
                Scope::Stream {
                    stream_type: stream_type.to_owned(),
                    stream_id: stream_id.to_owned(),
                }
            }
            _ => {
                return Err(Problem::invalid(
                    "stream",
                    format!(
                        "{:?} is not TYPE/ID with TYPE one of {}: e.g. order/0b7e...",
                        truncate(stream, 60),
                        domain::stream_types().join(", ")
                    ),
                ));
            }
        },
    };
    let expect_head = params.get("expect_head").map(|head| head.trim());
    if let Some(head) = expect_head {
        if audit::parse_hash(head).is_none() {
            return Err(Problem::invalid(
                "expect_head",
                format!(
                    "{:?} is not a hash: give the 64 hex digits of a head recorded earlier",
                    truncate(head, 80)
                ),
            ));
        }
        if scope != Scope::All {
            return Err(Problem::invalid(
                "expect_head",
                "a head is the whole log's: leave out stream",
            ));
        }
    }
    let Ok(_permit) = VERIFYING.try_acquire() else {
        return Ok(Problem::busy(
            "another verification of the log is running: ask again when it is done",
            VERIFY_RETRY_AFTER_SECONDS,
        ));
    };
    let scope_name = match &scope {
        Scope::All => "all".to_owned(),
        Scope::Stream {
            stream_type,
            stream_id,
        } => format!("{stream_type}/{stream_id}"),
    };
    let one_stream = scope != Scope::All;
    let report = audit::verify(state.store.as_ref(), scope, expect_head)
        .await
        .map_err(|error| store_problem(&error))?;
    if one_stream && report.events == 0 {
        return Err(Problem::not_found(format!(
            "stream {scope_name} has no events: check the type and id"
        )));
    }
    let first_problem = report.first_problem.as_ref().map(|problem| {
        json!({
            "position": problem.position,
            "event_id": problem.event_id,
            "stream_type": problem.stream_type,
            "stream_id": problem.stream_id,
            "stream_version": problem.stream_version,
            "reason": problem.reason,
            "text": problem.to_string(),
        })
    });
    Ok(Json(json!({
        "verified": report.is_clean(),
        "scope": scope_name,
        "events": report.events,
        "streams": report.streams,
        "checkpoints": report.checkpoints,
        "head": {
            "position": report.head.position,
            "events": report.head.events,
            "hash": report.head.hash_hex,
        },
        "expected_head_at": report.expected_head_at.map(|(position, events)| json!({ "position": position, "events": events })),
        "first_problem": first_problem,
        "elapsed_ms": report.elapsed.as_secs_f64() * 1000.0,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_a_position_or_an_rfc3339_time() {
        assert_eq!(Moment::parse("42"), Ok(Moment::Position(42)));
        assert_eq!(
            Moment::parse("2026-01-31T13:00:00+01:00"),
            Ok(Moment::Time(
                DateTime::parse_from_rfc3339("2026-01-31T12:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            ))
        );
        for bad in [
            "",
            "yesterday",
            "-1",
            "2026-01-31",
            "99999999999999999999999",
        ] {
            let usage = Moment::parse(bad).expect_err(bad);
            assert!(usage.contains("RFC 3339"), "{usage}");
        }
    }
}
