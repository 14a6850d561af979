//! A projection added to the code later has no checkpoint: `run_projection` starts it from
//! position 0 by itself, and it catches up with a log that was written before it existed, then
//! follows new events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventstore::testing::sqlite_store;
use eventstore::{AppendRequest, EventMetadata, ExpectedVersion, NewEvent, RecordedEvent};
use projections::readdb::{ReadDb, read_db_url};
use projections::{Feed, Progress, Projection, ProjectionError, run_projection};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

/// A read model that did not exist when the events were written: it records what it applies.
#[derive(Default)]
struct Latecomer {
    applied: Mutex<Vec<u64>>,
}

#[async_trait]
impl Projection for Latecomer {
    fn name(&self) -> &'static str {
        "latecomer"
    }

    async fn checkpoint(&self, _feed: &Feed) -> Result<u64, ProjectionError> {
        Ok(self.applied.lock().unwrap().last().copied().unwrap_or(0))
    }

    async fn apply(&self, _feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        self.applied
            .lock()
            .unwrap()
            .extend(events.iter().map(|event| event.position));
        Ok(())
    }
}

fn events(stream: usize, n: usize) -> AppendRequest {
    let events = (0..n)
        .map(|index| NewEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: "ProductViewed".to_owned(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            payload: RawValue::from_string(format!("{{\"n\":{index}}}")).unwrap(),
            metadata: EventMetadata {
                correlation_id: format!("c{stream}"),
                causation_id: format!("c{stream}"),
                saga_id: None,
                actor: "test".to_owned(),
                source: "test".to_owned(),
                traceparent: None,
                tracestate: None,
            },
        })
        .collect();
    AppendRequest::new(
        "product_views",
        format!("s{stream}"),
        ExpectedVersion::Any,
        events,
    )
}

#[tokio::test]
async fn a_new_projection_starts_from_position_0_and_catches_up_then_follows() {
    let test = sqlite_store().await;
    for stream in 0..12 {
        test.store.append(events(stream, 100)).await.unwrap();
    }
    let head = test.store.head_position().await.unwrap();
    assert_eq!(head, 1_200);

    let latecomer = Arc::new(Latecomer::default());
    let progress = Progress::default();
    let shutdown = CancellationToken::new();
    let parks = ReadDb::open(&read_db_url(&test.url)).await.unwrap();
    let runner = tokio::spawn(run_projection(
        test.store.clone(),
        latecomer.clone(),
        parks,
        progress.clone(),
        shutdown.clone(),
        500,
    ));
    assert!(
        progress
            .wait_for("latecomer", head, Duration::from_secs(10))
            .await,
        "the new projection did not catch up"
    );
    let more = test.store.append(events(99, 5)).await.unwrap();
    let last = more.last_position().unwrap();
    assert!(
        progress
            .wait_for("latecomer", last, Duration::from_secs(10))
            .await,
        "the new projection did not follow"
    );
    shutdown.cancel();
    runner.await.unwrap();
    let applied = latecomer.applied.lock().unwrap().clone();
    assert_eq!(applied, (1..=1_205).collect::<Vec<u64>>());
}
