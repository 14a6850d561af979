//! A projection that cannot apply an event parks on it: the park names the event and why, is
//! kept in the read-model database (a restart stays parked), nothing after the event is applied
//! (and nothing skipped) until the park is cleared, and then the event is applied again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventstore::testing::sqlite_store;
use eventstore::{AppendRequest, EventMetadata, ExpectedVersion, NewEvent, RecordedEvent};
use projections::readdb::{ReadDb, read_db_url};
use projections::runner::PARKED_POLL;
use projections::{
    Feed, PARK_AFTER_ATTEMPTS, Progress, Projection, ProjectionError, run_projection,
};
use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A read model that refuses every batch holding one of the `refused` positions, as a database
/// refuses a value (an error about the event, not about the database being down).
#[derive(Default)]
struct Fussy {
    refused: Mutex<BTreeSet<u64>>,
    applied: Mutex<Vec<u64>>,
    /// Batches offered, applied or not.
    attempts: Mutex<u32>,
    /// The stored checkpoint; a test moves it as a rebuild's swap would.
    checkpoint: Mutex<u64>,
}

#[async_trait]
impl Projection for Fussy {
    fn name(&self) -> &'static str {
        "fussy"
    }

    async fn checkpoint(&self, _feed: &Feed) -> Result<u64, ProjectionError> {
        Ok(*self.checkpoint.lock().unwrap())
    }

    async fn apply(&self, _feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        *self.attempts.lock().unwrap() += 1;
        let refused = self.refused.lock().unwrap();
        if let Some(event) = events
            .iter()
            .find(|event| refused.contains(&event.position))
        {
            return Err(ProjectionError::Json(
                serde_json::from_str::<u8>(&format!("\"refused {}\"", event.position)).unwrap_err(),
            ));
        }
        self.applied
            .lock()
            .unwrap()
            .extend(events.iter().map(|event| event.position));
        if let Some(last) = events.last() {
            *self.checkpoint.lock().unwrap() = last.position;
        }
        Ok(())
    }
}

fn views(stream: &str, n: usize) -> AppendRequest {
    let events = (0..n)
        .map(|index| NewEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: "ProductViewed".to_owned(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            payload: RawValue::from_string(format!("{{\"n\":{index}}}")).unwrap(),
            metadata: EventMetadata {
                correlation_id: "c".to_owned(),
                causation_id: "c".to_owned(),
                saga_id: None,
                actor: "test".to_owned(),
                source: "test".to_owned(),
                traceparent: None,
                tracestate: None,
            },
        })
        .collect();
    AppendRequest::new("product_views", stream, ExpectedVersion::Any, events)
}

fn start(
    store: &Arc<dyn eventstore::EventStore>,
    fussy: &Arc<Fussy>,
    parks: &ReadDb,
    progress: &Progress,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run_projection(
        store.clone(),
        fussy.clone(),
        parks.clone(),
        progress.clone(),
        shutdown.clone(),
        500,
    ))
}

async fn until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut done: F) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_poison_event_parks_the_projection_durably_until_it_is_retried() {
    let test = sqlite_store().await;
    let parks = ReadDb::open(&read_db_url(&test.url)).await.unwrap();
    test.store.append(views("a", 10)).await.unwrap();
    let fussy = Arc::new(Fussy::default());
    fussy.refused.lock().unwrap().insert(4);
    let progress = Progress::default();
    let shutdown = CancellationToken::new();
    let runner = start(&test.store, &fussy, &parks, &progress, &shutdown);

    // The batch of ten fails; one event at a time, 1 to 3 apply and 4 is tried alone until
    // the projection parks on it.
    let mut park = None;
    for _ in 0..1_000 {
        park = parks.parked("fussy").await.unwrap();
        if park.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let park = park.expect("the projection never parked");
    assert_eq!(park.position, 4);
    assert_eq!(park.event_type, "ProductViewed");
    assert_eq!(park.stream, "product_views/a");
    assert!(park.reason.contains("refused 4"), "{park}");
    assert_eq!(*fussy.applied.lock().unwrap(), [1, 2, 3]);
    until(
        "the progress shows the park",
        Duration::from_secs(5),
        || {
            progress
                .snapshot()
                .iter()
                .any(|(_, state)| state.parked_at == Some(4) && state.position == 3)
        },
    )
    .await;
    assert!(!progress.serving("fussy"));
    // One attempt of the batch, three events applied alone, and the poison's attempts.
    let attempts = *fussy.attempts.lock().unwrap();
    assert_eq!(attempts, 1 + 3 + PARK_AFTER_ATTEMPTS);

    // Parked, it tries nothing and skips nothing, also across a restart.
    test.store.append(views("b", 5)).await.unwrap();
    tokio::time::sleep(PARKED_POLL + Duration::from_millis(300)).await;
    shutdown.cancel();
    runner.await.unwrap();
    let progress = Progress::default();
    let shutdown = CancellationToken::new();
    let runner = start(&test.store, &fussy, &parks, &progress, &shutdown);
    until(
        "the restarted projection says it is parked",
        Duration::from_secs(5),
        || {
            progress
                .snapshot()
                .iter()
                .any(|(_, state)| state.parked_at == Some(4))
        },
    )
    .await;
    tokio::time::sleep(PARKED_POLL + Duration::from_millis(300)).await;
    assert_eq!(*fussy.attempts.lock().unwrap(), attempts);
    assert_eq!(*fussy.applied.lock().unwrap(), [1, 2, 3]);

    // Fixed and retried: the event is applied, and everything after it, once.
    fussy.refused.lock().unwrap().clear();
    assert_eq!(parks.unpark("fussy").await.unwrap(), Some(park));
    assert!(
        progress
            .wait_for("fussy", 15, Duration::from_secs(10))
            .await,
        "the retried projection did not catch up"
    );
    assert_eq!(
        *fussy.applied.lock().unwrap(),
        (1..=15).collect::<Vec<u64>>()
    );
    assert!(
        progress
            .snapshot()
            .iter()
            .all(|(_, state)| state.parked_at.is_none())
    );
    shutdown.cancel();
    runner.await.unwrap();
}

/// A rebuilt read model swapped in past the event (`mercato replay` with the cause fixed) ends
/// the park by itself; a retry of an event that still fails parks again.
#[tokio::test]
async fn a_rebuild_past_the_event_ends_the_park_and_a_retry_that_still_fails_parks_again() {
    let test = sqlite_store().await;
    let parks = ReadDb::open(&read_db_url(&test.url)).await.unwrap();
    test.store.append(views("a", 6)).await.unwrap();
    let fussy = Arc::new(Fussy::default());
    fussy.refused.lock().unwrap().insert(2);
    let progress = Progress::default();
    let shutdown = CancellationToken::new();
    let runner = start(&test.store, &fussy, &parks, &progress, &shutdown);
    let parked_at = |position| {
        let progress = progress.clone();
        move || {
            progress
                .snapshot()
                .iter()
                .any(|(_, state)| state.parked_at == Some(position))
        }
    };
    until("parked at 2", Duration::from_secs(10), parked_at(2)).await;

    // Retried without a fix: tried again, parked again.
    let before = *fussy.attempts.lock().unwrap();
    assert!(parks.unpark("fussy").await.unwrap().is_some());
    until("parked again", Duration::from_secs(10), || {
        *fussy.attempts.lock().unwrap() >= before + PARK_AFTER_ATTEMPTS
    })
    .await;
    let mut again = None;
    for _ in 0..500 {
        again = parks.parked("fussy").await.unwrap();
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(again.map(|park| park.position), Some(2));

    // A rebuild applied 2 to 4 and was swapped in: the projection follows on from 4.
    *fussy.checkpoint.lock().unwrap() = 4;
    assert!(
        progress.wait_for("fussy", 6, Duration::from_secs(10)).await,
        "the projection stayed parked behind a rebuild past its event"
    );
    assert_eq!(parks.parked("fussy").await.unwrap(), None);
    assert_eq!(*fussy.applied.lock().unwrap(), [1, 5, 6]);
    shutdown.cancel();
    runner.await.unwrap();
}
