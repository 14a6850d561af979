//! Helpers shared by the store's test files.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use eventstore::{
    AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, RecordedEvent,
    Subscription,
};
use serde_json::value::RawValue;
use uuid::Uuid;

/// How long a test waits for a subscription batch before it declares the subscription stuck.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(15);

pub fn metadata() -> EventMetadata {
    EventMetadata {
        correlation_id: "correlation-1".to_owned(),
        causation_id: "causation-1".to_owned(),
        saga_id: None,
        actor: "test-actor".to_owned(),
        source: "eventstore-tests".to_owned(),
        traceparent: None,
        tracestate: None,
    }
}

/// Now, at the microsecond precision both adapters keep.
pub fn now_in_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

pub fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("test payloads are valid JSON")
}

pub fn new_event(event_type: &str, payload: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        occurred_at: now_in_micros(),
        payload: raw(payload),
        metadata: metadata(),
    }
}

/// `n_events` events whose payloads say which they are: `{"label":"...","index":i}`.
pub fn numbered_events(label: &str, n_events: usize) -> Vec<NewEvent> {
    (0..n_events)
        .map(|event_index| {
            new_event(
                "Numbered",
                &format!(r#"{{"label":"{label}","index":{event_index}}}"#),
            )
        })
        .collect()
}

pub fn request(
    stream_type: &str,
    stream_id: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    AppendRequest::new(stream_type, stream_id, expected, events)
}

/// The whole global log, read in pages of `page_size`.
pub async fn read_everything(store: &dyn EventStore, page_size: usize) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut after_position = 0;
    loop {
        let page = store
            .read_all(after_position, page_size)
            .await
            .expect("read_all works");
        let Some(last) = page.last() else {
            return events;
        };
        after_position = last.position;
        events.extend(page);
    }
}

/// The next batch, failing the test if none comes within [`BATCH_TIMEOUT`].
pub async fn next_batch(subscription: &mut Subscription) -> Vec<RecordedEvent> {
    match tokio::time::timeout(BATCH_TIMEOUT, subscription.next_batch()).await {
        Ok(Ok(batch)) => batch,
        Ok(Err(error)) => panic!("the subscription failed: {error}"),
        Err(_elapsed) => panic!("no batch within {BATCH_TIMEOUT:?}"),
    }
}

/// Checks that positions strictly increase and that each stream's versions run 1, 2, 3, ...
/// in the order the events were read.
pub fn assert_log_order(events: &[RecordedEvent]) {
    let mut last_position = 0;
    let mut stream_versions = std::collections::HashMap::new();
    for event in events {
        assert!(
            event.position > last_position,
            "position {} after {last_position}",
            event.position
        );
        last_position = event.position;
        let version = stream_versions
            .entry((event.stream_type.clone(), event.stream_id.clone()))
            .or_insert(0u64);
        assert_eq!(
            event.stream_version,
            *version + 1,
            "stream {}/{} out of order at position {}",
            event.stream_type,
            event.stream_id,
            event.position
        );
        *version = event.stream_version;
    }
}

/// Waits until `read_all` can return the event at `position`.
///
/// On PostgreSQL a committed event becomes readable once every transaction that started before
/// it has ended, on the whole server: another test creating or dropping its database holds the
/// horizon back for a moment.
pub async fn wait_until_readable(store: &dyn EventStore, position: u64) {
    let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
    while store.head_position().await.expect("head_position works") < position {
        assert!(
            tokio::time::Instant::now() < deadline,
            "position {position} did not become readable within {BATCH_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The whole global log once it holds `n_events` (which it must not exceed).
pub async fn read_exactly(
    store: &dyn EventStore,
    page_size: usize,
    n_events: usize,
) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
    loop {
        let events = read_everything(store, page_size).await;
        if events.len() >= n_events {
            assert_eq!(
                events.len(),
                n_events,
                "the log holds more events than expected"
            );
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log holds {} events, expected {n_events}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
