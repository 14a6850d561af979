//! Waiting for a position of the log: many waiters cost one follower's reads, an append wakes
//! them all, and a position nobody wrote ends the wait with the head. On SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::testing::{TestStore, postgres_store, sqlite_store};
use eventstore::{AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent};
use query_api::LogHead;
use serde_json::value::RawValue;
use uuid::Uuid;

fn event() -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Noted".to_owned(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: RawValue::from_string(r#"{"note":1}"#.to_owned()).expect("json"),
        metadata: EventMetadata {
            correlation_id: "test".to_owned(),
            causation_id: "test".to_owned(),
            saga_id: None,
            actor: "test".to_owned(),
            source: "test".to_owned(),
            traceparent: None,
            tracestate: None,
        },
    }
}

async fn append(store: &dyn EventStore) -> u64 {
    store
        .append(AppendRequest::new(
            "note",
            Uuid::new_v4().to_string(),
            ExpectedVersion::NoStream,
            vec![event()],
        ))
        .await
        .expect("append")
        .last_position()
        .expect("a position")
}

async fn waiters_share_one_follower_and_wake_on_an_append(test: TestStore) {
    let store: Arc<dyn EventStore> = test.store.clone();
    let head = LogHead::new(store.clone());
    let first = append(store.as_ref()).await;
    assert_eq!(
        head.wait_for(first, Duration::from_secs(1))
            .await
            .expect("wait"),
        Ok(()),
        "a position the log holds is there at once"
    );

    // 200 requests wait for the next position (positions need not be dense: any later one
    // counts), which nobody writes for 600 ms.
    let next = first + 1;
    let waits: Vec<_> = (0..200)
        .map(|_| {
            let head = head.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let reached = head.wait_for(next, Duration::from_secs(10)).await;
                (reached, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reads_while_waiting = head.follower_reads();
    // A poll per waiter every 50 ms would be 2,400 reads; one follower reads ~12 times.
    assert!(
        reads_while_waiting <= 40,
        "200 waiters cost {reads_while_waiting} reads of the head in 600 ms"
    );
    let appended_at = Instant::now();
    let second = append(store.as_ref()).await;
    for wait in waits {
        let (reached, _) = wait.await.expect("waiter");
        assert_eq!(reached.expect("wait"), Ok(()));
    }
    assert!(
        appended_at.elapsed() < Duration::from_secs(2),
        "the append woke the waiters after {:?}",
        appended_at.elapsed()
    );

    // A position nobody writes: the wait ends with the head it saw.
    let started = Instant::now();
    assert_eq!(
        head.wait_for(u64::MAX / 2, Duration::from_millis(300))
            .await
            .expect("wait"),
        Err(second)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_one_follower_and_wake_on_an_append_embedded() {
    waiters_share_one_follower_and_wake_on_an_append(sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_one_follower_and_wake_on_an_append_on_postgres() {
    let Some(test) =
        postgres_store("waiters_share_one_follower_and_wake_on_an_append_on_postgres").await
    else {
        return;
    };
    waiters_share_one_follower_and_wake_on_an_append(test).await;
}
