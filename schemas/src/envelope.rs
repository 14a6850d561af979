//! The event envelope of CONTRACT.md: what every stored, published or exported event carries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Why an event happened and who caused it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Shared by everything one request (or one saga run) caused, across streams.
    pub correlation_id: String,
    /// The id of the request or event that directly caused this event.
    pub causation_id: String,
    /// Set when the checkout saga caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga_id: Option<String>,
    /// Who asked: a user, a service account, or `anonymous`.
    pub actor: String,
    /// Which part of mercato wrote it: `command-api`, `saga`, `seed`, ...
    pub source: String,
    /// The W3C `traceparent` of the work that appended the event, when it was traced: what runs
    /// later because of the event (a projection batch, a saga step, a message, a consumer in
    /// another process) continues that trace. Events stored without one have none. It says how
    /// the event was observed, not what happened, and the hash chain does not cover it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that came with [`EventMetadata::traceparent`], if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl EventMetadata {
    /// The trace context as one stored value: the `traceparent`, then the `tracestate` after a
    /// line break (neither may hold one); `None` without a `traceparent`.
    pub fn stored_trace_context(&self) -> Option<String> {
        let traceparent = self.traceparent.as_deref()?;
        Some(match self.tracestate.as_deref() {
            Some(tracestate) if !tracestate.is_empty() => format!("{traceparent}\n{tracestate}"),
            _ => traceparent.to_owned(),
        })
    }

    /// Sets the trace context from its stored value ([`EventMetadata::stored_trace_context`]).
    pub fn with_stored_trace_context(mut self, stored: Option<&str>) -> Self {
        if let Some(stored) = stored.filter(|stored| !stored.is_empty()) {
            let (traceparent, tracestate) = split_trace_context(stored);
            self.traceparent = Some(traceparent.to_owned());
            self.tracestate = tracestate.map(str::to_owned);
        }
        self
    }
}

/// A stored trace context ([`EventMetadata::stored_trace_context`]) as its `traceparent` and
/// `tracestate`.
pub fn split_trace_context(stored: &str) -> (&str, Option<&str>) {
    match stored.split_once('\n') {
        Some((traceparent, tracestate)) => (traceparent, Some(tracestate)),
        None => (stored, None),
    }
}

/// An event about to be appended: the store assigns its stream version and global position.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Unique per event. Appending an event whose id is already stored stores nothing.
    pub event_id: Uuid,
    /// The event's type name, such as `ProductUpdated`.
    pub event_type: String,
    /// The version of the payload's shape; see [`crate::upcast`].
    pub schema_version: u32,
    /// When the event happened (UTC).
    pub occurred_at: DateTime<Utc>,
    /// The event's body as JSON text, exactly as it is stored.
    pub payload: Box<RawValue>,
    /// Why the event happened and who caused it.
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// An encoded event (`crate::encode`) with its id, the time it happened and its metadata.
    pub fn from_encoded(
        encoded: crate::EncodedEvent,
        event_id: Uuid,
        occurred_at: DateTime<Utc>,
        metadata: EventMetadata,
    ) -> NewEvent {
        NewEvent {
            event_id,
            event_type: encoded.event_type,
            schema_version: encoded.schema_version,
            occurred_at,
            payload: encoded.payload,
            metadata,
        }
    }
}

/// An event as the store holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique per event (UUID).
    pub event_id: Uuid,
    /// The event's type name, such as `ProductUpdated`.
    pub event_type: String,
    /// The version of the payload's shape, which may be older than the current one; decode with
    /// [`crate::decode`], which upcasts.
    pub schema_version: u32,
    /// The aggregate kind: `product`, `cart`, `order`, `payment`, `product_views` or `user`.
    pub stream_type: String,
    /// The aggregate instance: a product or order UUID, a cart id, ...
    pub stream_id: String,
    /// 1 for the first event of a stream, then 2, 3, ... without gaps.
    pub stream_version: u64,
    /// The event's place in the global log: strictly increasing in commit-visibility order.
    pub position: u64,
    /// When the event happened (UTC); serialised as RFC 3339.
    pub occurred_at: DateTime<Utc>,
    /// Why the event happened and who caused it.
    pub metadata: EventMetadata,
    /// The event's body as JSON text, at `schema_version`.
    pub payload: Box<RawValue>,
}

/// An event as the feeds show it (`GET /events`, `GET /streams/...`, `mercato events --format
/// json`): the envelope of CONTRACT.md, `occurred_at` in RFC 3339 with microseconds, UTC as `Z`.
///
/// The payload is shown at the current version of its type, as every reader reads it
/// ([`crate::upcast::to_current_version`]), so that what an upcaster drops (the payment token of
/// a v1 `OrderCreated` or `PaymentRequested`) is never shown again; `schema_version` is that
/// version. An event this build cannot upcast (a type it does not know, or a payload without the
/// shape of its stored version) is shown as stored.
pub fn feed_json(event: &RecordedEvent) -> serde_json::Value {
    let current = crate::upcast::to_current_version(event);
    let event: &RecordedEvent = match &current {
        Ok(current) => current,
        Err(_) => event,
    };
    serde_json::json!({
        "event_id": event.event_id,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "stream_type": event.stream_type,
        "stream_id": event.stream_id,
        "stream_version": event.stream_version,
        "position": event.position,
        "occurred_at": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "metadata": event.metadata,
        "payload": event.payload,
    })
}

/// An event as the tests of this crate's modules use it: `OrderConfirmed` of order `o-1`,
/// caused by a saga.
#[cfg(test)]
pub(crate) fn sample_event() -> RecordedEvent {
    serde_json::from_value(serde_json::json!({
        "event_id": "7f0c5a9e-2f7b-4c2e-9a39-0d0c1c7e5b11",
        "event_type": "OrderConfirmed",
        "schema_version": 1,
        "stream_type": "order",
        "stream_id": "o-1",
        "stream_version": 2,
        "position": 42,
        "occurred_at": "2026-11-22T10:00:00Z",
        "metadata": {
            "correlation_id": "c-1", "causation_id": "e-0", "saga_id": "s-1",
            "actor": "saga", "source": "saga"
        },
        "payload": {"order_id": "o-1"}
    }))
    .expect("a recorded event")
}
