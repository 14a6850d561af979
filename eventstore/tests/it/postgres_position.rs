//! PostgreSQL only: the global position under concurrent writers, slow and rolled-back
//! transactions. Each test runs in a database of its own (skipped loudly without
//! `DATABASE_URL`, failing instead with `MERCATO_REQUIRE_SERVICES=1`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::testing::postgres_event_store;
use eventstore::{EventStore, ExpectedVersion, PgEventStore, RecordedEvent, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::common::{
    BATCH_TIMEOUT, assert_log_order, next_batch, numbered_events, read_exactly, request,
};

/// What one writer did.
#[derive(Debug, Default)]
struct WriterReport {
    committed: Vec<Uuid>,
    rolled_back: Vec<Uuid>,
    n_commits: usize,
    n_rollbacks: usize,
    /// Transactions that lost a race on a shared stream and were rolled back.
    n_refused: usize,
}

/// Appends through `append_in_transaction` until `n_events` events are committed: 1 to 4
/// events to one of the writer's own streams, sometimes one more to a stream shared with other
/// writers, random short sleeps inside the transaction, and about 10% of transactions rolled
/// back on purpose.
async fn write_with_rollbacks(
    store: PgEventStore,
    writer_index: usize,
    n_events: usize,
) -> WriterReport {
    let mut rng = StdRng::seed_from_u64(1_000 + writer_index as u64);
    let mut versions = [0u64; 4];
    let mut report = WriterReport::default();
    while report.committed.len() < n_events {
        let mut transaction = store.pool().begin().await.unwrap();
        sleep_up_to(&mut rng, 1_000).await;
        let stream_index = rng.random_range(0..versions.len());
        let events = numbered_events(&format!("writer-{writer_index}"), rng.random_range(1..=4));
        let n_own_events = events.len() as u64;
        let mut event_ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
        store
            .append_in_transaction(
                &mut transaction,
                request(
                    "load",
                    &format!("w{writer_index}-s{stream_index}"),
                    ExpectedVersion::Exact(versions[stream_index]),
                    events,
                ),
            )
            .await
            .unwrap();
        if rng.random_bool(0.2) {
            let shared = numbered_events("shared", 1);
            let shared_id = shared[0].event_id;
            let appended = store
                .append_in_transaction(
                    &mut transaction,
                    request(
                        "load",
                        &format!("shared-{}", writer_index % 2),
                        ExpectedVersion::Any,
                        shared,
                    ),
                )
                .await;
            match appended {
                Ok(_) => event_ids.push(shared_id),
                Err(error) if error.is_conflict() => {
                    transaction.rollback().await.unwrap();
                    report.n_refused += 1;
                    report.rolled_back.extend(event_ids);
                    continue;
                }
                Err(error) => panic!("writer {writer_index}: {error}"),
            }
        }
        sleep_up_to(&mut rng, 2_000).await;
        if rng.random_bool(0.1) {
            transaction.rollback().await.unwrap();
            report.n_rollbacks += 1;
            report.rolled_back.extend(event_ids);
        } else {
            transaction.commit().await.unwrap();
            report.n_commits += 1;
            versions[stream_index] += n_own_events;
            report.committed.extend(event_ids);
        }
    }
    report
}

async fn sleep_up_to(rng: &mut StdRng, max_micros: u64) {
    let micros = rng.random_range(0..=max_micros);
    if micros > 0 {
        tokio::time::sleep(Duration::from_micros(micros)).await;
    }
}

/// Follows the log from 0 into a shared list until stopped.
fn follow(
    store: PgEventStore,
) -> (
    Arc<Mutex<Vec<RecordedEvent>>>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let handle = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut subscription = store.subscribe(0).await.unwrap();
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    batch = subscription.next_batch() => {
                        let batch = batch.unwrap();
                        seen.lock().unwrap().extend(batch);
                    }
                }
            }
        })
    };
    (seen, stop, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_writers_with_rollbacks_are_followed_live_exactly_once() {
    const N_WRITERS: usize = 16;
    const EVENTS_PER_WRITER: usize = 1_500;
    let Some((store, _database)) = postgres_event_store(
        "sixteen_concurrent_writers_with_rollbacks_are_followed_live_exactly_once",
    )
    .await
    else {
        return;
    };
    let started = Instant::now();
    let (seen, stop, follower) = follow(store.clone());

    let writers: Vec<_> = (0..N_WRITERS)
        .map(|writer_index| {
            tokio::spawn(write_with_rollbacks(
                store.clone(),
                writer_index,
                EVENTS_PER_WRITER,
            ))
        })
        .collect();
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    let (mut n_commits, mut n_rollbacks, mut n_refused) = (0, 0, 0);
    for writer in writers {
        let report = writer.await.unwrap();
        committed.extend(report.committed);
        rolled_back.extend(report.rolled_back);
        n_commits += report.n_commits;
        n_rollbacks += report.n_rollbacks;
        n_refused += report.n_refused;
    }
    let writing_took = started.elapsed();

    // The follower catches up with the last commits, then nothing more arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < committed.len() {
        assert!(
            Instant::now() < deadline,
            "the subscriber saw {} of {} committed events",
            seen.lock().unwrap().len(),
            committed.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    follower.await.unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());

    let seen_ids: HashSet<Uuid> = seen.iter().map(|event| event.event_id).collect();
    eprintln!(
        "{N_WRITERS} writers: {} events committed in {n_commits} transactions, {} events in \
         {n_rollbacks} rolled-back and {n_refused} refused transactions; the subscriber saw {} \
         events ({} distinct); writing took {writing_took:?}, all {:?}",
        committed.len(),
        rolled_back.len(),
        seen.len(),
        seen_ids.len(),
        started.elapsed()
    );
    assert!(committed.len() >= N_WRITERS * EVENTS_PER_WRITER);
    assert!(n_rollbacks > 0 && !rolled_back.is_empty());
    assert_eq!(seen.len(), committed.len(), "every committed event, once");
    assert_eq!(seen_ids.len(), seen.len(), "no event twice");
    assert_eq!(seen_ids, committed, "exactly the committed events");
    assert!(
        seen_ids.is_disjoint(&rolled_back),
        "a rolled-back event was seen"
    );
    assert_log_order(&seen);
    let log = read_exactly(&store, 1_000, committed.len()).await;
    assert_eq!(
        log.iter().map(|event| event.position).collect::<Vec<_>>(),
        seen.iter().map(|event| event.position).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_restarted_from_its_checkpoint_while_transactions_are_in_flight_misses_nothing()
 {
    const N_WRITERS: usize = 4;
    const EVENTS_PER_WRITER: usize = 500;
    let Some((store, _database)) = postgres_event_store(
        "a_subscriber_restarted_from_its_checkpoint_while_transactions_are_in_flight_misses_nothing",
    )
    .await
    else {
        return;
    };
    let writers: Vec<_> = (0..N_WRITERS)
        .map(|writer_index| {
            tokio::spawn(write_with_rollbacks(
                store.clone(),
                writer_index,
                EVENTS_PER_WRITER,
            ))
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(5);
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut checkpoint = 0;
    let mut n_restarts = 0;
    while writers.iter().any(|writer| !writer.is_finished()) {
        let mut subscription = store
            .subscribe(checkpoint)
            .await
            .unwrap()
            .with_batch_size(rng.random_range(1..=50));
        for _ in 0..rng.random_range(1..=5) {
            match tokio::time::timeout(Duration::from_millis(200), subscription.next_batch()).await
            {
                Ok(batch) => seen.extend(batch.unwrap()),
                Err(_elapsed) => break,
            }
        }
        checkpoint = subscription.checkpoint();
        n_restarts += 1;
    }
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    for writer in writers {
        let report = writer.await.unwrap();
        committed.extend(report.committed);
        rolled_back.extend(report.rolled_back);
    }
    // A last subscriber from the last checkpoint picks up the rest.
    let mut subscription = store.subscribe(checkpoint).await.unwrap();
    while seen.len() < committed.len() {
        seen.extend(next_batch(&mut subscription).await);
    }
    eprintln!(
        "{n_restarts} restarts, {} events seen, {} committed, {} rolled back",
        seen.len(),
        committed.len(),
        rolled_back.len()
    );
    assert!(n_restarts > 3, "only {n_restarts} restarts");
    let seen_ids: HashSet<Uuid> = seen.iter().map(|event| event.event_id).collect();
    assert_eq!(seen.len(), committed.len());
    assert_eq!(seen_ids, committed);
    assert!(seen_ids.is_disjoint(&rolled_back));
    assert_log_order(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_blocked_on_the_same_stream_version_gets_a_conflict_when_the_other_commits() {
    let Some((store, _database)) = postgres_event_store(
        "a_writer_blocked_on_the_same_stream_version_gets_a_conflict_when_the_other_commits",
    )
    .await
    else {
        return;
    };
    for commit_first in [true, false] {
        let stream_id = format!("order-{commit_first}");
        store
            .append(request(
                "order",
                &stream_id,
                ExpectedVersion::NoStream,
                numbered_events("base", 1),
            ))
            .await
            .unwrap();
        let mut first = store.pool().begin().await.unwrap();
        store
            .append_in_transaction(
                &mut first,
                request(
                    "order",
                    &stream_id,
                    ExpectedVersion::Exact(1),
                    numbered_events("first", 1),
                ),
            )
            .await
            .unwrap();
        // The second writer read version 1 too; its insert waits on the first one's row.
        let second = {
            let store = store.clone();
            let stream_id = stream_id.clone();
            tokio::spawn(async move {
                store
                    .append(request(
                        "order",
                        &stream_id,
                        ExpectedVersion::Exact(1),
                        numbered_events("second", 2),
                    ))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "the second writer must wait for the first"
        );
        if commit_first {
            first.commit().await.unwrap();
            match second.await.unwrap() {
                Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, 2),
                other => panic!("expected a conflict, got {other:?}"),
            }
            assert_eq!(store.stream_version("order", &stream_id).await.unwrap(), 2);
        } else {
            first.rollback().await.unwrap();
            let result = second.await.unwrap().unwrap();
            assert_eq!(result.stream_version, 3);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_transaction_holds_the_horizon_back_until_it_commits_or_rolls_back() {
    let Some((store, _database)) = postgres_event_store(
        "a_running_transaction_holds_the_horizon_back_until_it_commits_or_rolls_back",
    )
    .await
    else {
        return;
    };
    let mut subscription = store.subscribe(0).await.unwrap();

    // A slow transaction takes its position first, a quick one commits after it.
    let mut slow = store.pool().begin().await.unwrap();
    let slow_result = store
        .append_in_transaction(
            &mut slow,
            request(
                "cart",
                "slow",
                ExpectedVersion::NoStream,
                numbered_events("slow", 2),
            ),
        )
        .await
        .unwrap();
    let quick_result = store
        .append(request(
            "cart",
            "quick",
            ExpectedVersion::NoStream,
            numbered_events("quick", 1),
        ))
        .await
        .unwrap();
    assert!(quick_result.positions[0] > slow_result.positions[1]);

    // The quick event is committed, but a reader that returned it now would skip the slow
    // ones when they commit: it is held back until the slow transaction ends.
    assert!(store.read_all(0, 100).await.unwrap().is_empty());
    assert!(store.head_position().await.unwrap() < quick_result.positions[0]);
    let waited = tokio::time::timeout(Duration::from_millis(300), subscription.next_batch()).await;
    assert!(
        waited.is_err(),
        "nothing may be delivered yet, got {waited:?}"
    );

    slow.commit().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.extend(next_batch(&mut subscription).await);
    }
    assert_eq!(
        seen.iter().map(|event| event.position).collect::<Vec<_>>(),
        [
            slow_result.positions.clone(),
            quick_result.positions.clone()
        ]
        .concat()
    );

    // A rolled-back transaction leaves no gap anyone waits on.
    let mut doomed = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(
            &mut doomed,
            request(
                "cart",
                "doomed",
                ExpectedVersion::NoStream,
                numbered_events("doomed", 3),
            ),
        )
        .await
        .unwrap();
    let after = store
        .append(request(
            "cart",
            "after",
            ExpectedVersion::NoStream,
            numbered_events("after", 1),
        ))
        .await
        .unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    doomed.rollback().await.unwrap();
    let batch = next_batch(&mut subscription).await;
    assert_eq!(
        batch.iter().map(|event| event.position).collect::<Vec<_>>(),
        after.positions
    );
    assert!(
        started.elapsed() < BATCH_TIMEOUT,
        "the subscriber waited {:?}",
        started.elapsed()
    );
    assert_eq!(store.stream_version("cart", "doomed").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_one_transaction_get_consecutive_positions_and_commit_together() {
    let Some((store, _database)) = postgres_event_store(
        "appends_in_one_transaction_get_consecutive_positions_and_commit_together",
    )
    .await
    else {
        return;
    };
    let mut transaction = store.pool().begin().await.unwrap();
    let cart = store
        .append_in_transaction(
            &mut transaction,
            request(
                "cart",
                "c",
                ExpectedVersion::NoStream,
                numbered_events("cart", 2),
            ),
        )
        .await
        .unwrap();
    let order = store
        .append_in_transaction(
            &mut transaction,
            request(
                "order",
                "o",
                ExpectedVersion::NoStream,
                numbered_events("order", 3),
            ),
        )
        .await
        .unwrap();
    let positions = [cart.positions.clone(), order.positions.clone()].concat();
    assert!(positions.windows(2).all(|pair| pair[1] == pair[0] + 1));
    assert!(
        store
            .read_stream("cart", "c", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    transaction.commit().await.unwrap();
    let log = read_exactly(&store, 10, 5).await;
    assert_eq!(
        log.iter().map(|event| event.position).collect::<Vec<_>>(),
        positions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_a_transaction_older_than_the_streams_last_event_is_refused() {
    let Some((store, _database)) = postgres_event_store(
        "an_append_in_a_transaction_older_than_the_streams_last_event_is_refused",
    )
    .await
    else {
        return;
    };
    // The transaction takes its id (and so its positions) with a first append...
    let mut older = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(
            &mut older,
            request(
                "cart",
                "a",
                ExpectedVersion::NoStream,
                numbered_events("a", 1),
            ),
        )
        .await
        .unwrap();
    // ...then a younger transaction commits to stream b...
    let younger = store
        .append(request(
            "cart",
            "b",
            ExpectedVersion::NoStream,
            numbered_events("b", 1),
        ))
        .await
        .unwrap();
    // ...so b's next event from the older transaction would come before b's first one in the
    // log. It is refused, and the transaction stays usable.
    let refused = store
        .append_in_transaction(
            &mut older,
            request(
                "cart",
                "b",
                ExpectedVersion::Exact(1),
                numbered_events("b-late", 1),
            ),
        )
        .await
        .unwrap_err();
    assert!(refused.is_conflict(), "{refused:?}");
    older.commit().await.unwrap();
    let log = read_exactly(&store, 10, 2).await;
    assert_log_order(&log);
    assert_eq!(log[1].position, younger.positions[0]);
    // Retried in a new transaction, it goes through.
    let mut retry = store.pool().begin().await.unwrap();
    let retried = store
        .append_in_transaction(
            &mut retry,
            request(
                "cart",
                "b",
                ExpectedVersion::Exact(1),
                numbered_events("b-late", 1),
            ),
        )
        .await
        .unwrap();
    retry.commit().await.unwrap();
    assert!(retried.positions[0] > younger.positions[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_found_before_writing_leave_the_callers_transaction_usable() {
    let Some((store, _database)) =
        postgres_event_store("refusals_found_before_writing_leave_the_callers_transaction_usable")
            .await
    else {
        return;
    };
    let events = numbered_events("stored", 2);
    let stored = store
        .append(request(
            "cart",
            "c",
            ExpectedVersion::NoStream,
            events.clone(),
        ))
        .await
        .unwrap();
    let mut transaction = store.pool().begin().await.unwrap();
    let conflict = store
        .append_in_transaction(
            &mut transaction,
            request(
                "cart",
                "c",
                ExpectedVersion::Exact(7),
                numbered_events("x", 1),
            ),
        )
        .await
        .unwrap_err();
    assert!(conflict.is_conflict());
    let duplicate = store
        .append_in_transaction(
            &mut transaction,
            request("cart", "c", ExpectedVersion::NoStream, events),
        )
        .await
        .unwrap();
    assert!(duplicate.duplicate);
    assert_eq!(duplicate.positions, stored.positions);
    store
        .append_in_transaction(
            &mut transaction,
            request(
                "cart",
                "c",
                ExpectedVersion::Exact(2),
                numbered_events("y", 1),
            ),
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!(store.stream_version("cart", "c").await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_is_woken_by_appends_from_another_process() {
    let Some((store, database)) =
        postgres_event_store("a_subscriber_is_woken_by_appends_from_another_process").await
    else {
        return;
    };
    // A second store on the same database stands for another process.
    let other_process = PgEventStore::connect(database.url()).await.unwrap();
    let mut subscription = store.subscribe(0).await.unwrap();
    let mut delays = Vec::new();
    for round in 0..5 {
        // The subscriber is caught up and waiting; without a notification it would only read
        // again at its one-second safety poll, about 900 ms from now.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let appended = other_process
            .append(request(
                "cart",
                &format!("c-{round}"),
                ExpectedVersion::NoStream,
                numbered_events("elsewhere", 1),
            ))
            .await
            .unwrap();
        let started = Instant::now();
        let batch = next_batch(&mut subscription).await;
        delays.push(started.elapsed());
        assert_eq!(batch[0].position, appended.positions[0]);
    }
    delays.sort();
    let median = delays[delays.len() / 2];
    assert!(
        median < Duration::from_millis(500),
        "woken after {delays:?}: the NOTIFY did not wake the subscriber"
    );
}

/// The transaction a position was written by.
fn transaction_of(position: u64) -> u64 {
    position >> 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_event_appends_are_committed_together_and_followed_live_exactly_once() {
    const N_WRITERS: usize = 16;
    const APPENDS_PER_WRITER: usize = 300;
    const N_OWN_STREAMS: usize = 3;
    let Some((store, _database)) = postgres_event_store(
        "concurrent_single_event_appends_are_committed_together_and_followed_live_exactly_once",
    )
    .await
    else {
        return;
    };
    let (seen, stop, follower) = follow(store.clone());
    let writers: Vec<_> = (0..N_WRITERS)
        .map(|writer_index| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(2_000 + writer_index as u64);
                let mut versions = [0u64; N_OWN_STREAMS];
                // (event id, stream, position the caller got back)
                let mut appended = Vec::with_capacity(APPENDS_PER_WRITER);
                for _ in 0..APPENDS_PER_WRITER {
                    let events = numbered_events(&format!("writer-{writer_index}"), 1);
                    let event_id = events[0].event_id;
                    let (stream_id, expected, own_stream) = if rng.random_bool(0.2) {
                        let shared = format!("shared-{}", rng.random_range(0..3));
                        (shared, ExpectedVersion::Any, None)
                    } else {
                        let stream_index = rng.random_range(0..N_OWN_STREAMS);
                        (
                            format!("w{writer_index}-s{stream_index}"),
                            ExpectedVersion::Exact(versions[stream_index]),
                            Some(stream_index),
                        )
                    };
                    let result = store
                        .append(request("load", &stream_id, expected, events))
                        .await
                        .unwrap();
                    assert!(!result.duplicate);
                    assert_eq!(result.positions.len(), 1);
                    if let Some(stream_index) = own_stream {
                        versions[stream_index] += 1;
                        assert_eq!(result.stream_version, versions[stream_index]);
                    }
                    appended.push((event_id, stream_id, result.positions[0]));
                }
                appended
            })
        })
        .collect();
    let mut appended = Vec::new();
    for writer in writers {
        appended.extend(writer.await.unwrap());
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < appended.len() {
        assert!(
            Instant::now() < deadline,
            "the subscriber saw {} of {} appended events",
            seen.lock().unwrap().len(),
            appended.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    follower.await.unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());

    assert_eq!(
        seen.len(),
        N_WRITERS * APPENDS_PER_WRITER,
        "every event, once"
    );
    let seen_positions: std::collections::HashMap<Uuid, u64> = seen
        .iter()
        .map(|event| (event.event_id, event.position))
        .collect();
    assert_eq!(seen_positions.len(), seen.len(), "no event twice");
    for (event_id, stream_id, position) in &appended {
        assert_eq!(
            seen_positions.get(event_id),
            Some(position),
            "event {event_id} of stream {stream_id}: the position its caller got back"
        );
    }
    assert_log_order(&seen);

    // Group commit happened: some transactions wrote events of several streams.
    let mut streams_by_transaction: std::collections::HashMap<u64, HashSet<&str>> =
        std::collections::HashMap::new();
    for event in &seen {
        streams_by_transaction
            .entry(transaction_of(event.position))
            .or_default()
            .insert(event.stream_id.as_str());
    }
    let n_shared_commits = streams_by_transaction
        .values()
        .filter(|streams| streams.len() > 1)
        .count();
    eprintln!(
        "{} events in {} transactions, {n_shared_commits} of them carrying several streams",
        seen.len(),
        streams_by_transaction.len()
    );
    assert!(
        n_shared_commits > 0,
        "no two appends were committed together"
    );
}

/// A store whose single committer is busy with an append that waits on `gate`, an open
/// transaction holding version 1 of the stream `gate/gate`: every append made until the gate
/// is committed queues up and is then committed as one batch.
async fn store_with_a_blocked_committer(
    url: &str,
) -> (
    PgEventStore,
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<Result<eventstore::AppendResult, StoreError>>,
) {
    let store = PgEventStore::connect_with(
        url,
        eventstore::PgStoreOptions {
            committers: 1,
            direct_appends: false,
            ..eventstore::PgStoreOptions::default()
        },
    )
    .await
    .unwrap();
    let mut gate = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(
            &mut gate,
            request(
                "gate",
                "gate",
                ExpectedVersion::NoStream,
                numbered_events("gate", 1),
            ),
        )
        .await
        .unwrap();
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(request(
                    "gate",
                    "gate",
                    ExpectedVersion::Any,
                    numbered_events("behind the gate", 1),
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the committer must wait for the gate's transaction"
    );
    (store, gate, waiting)
}

/// Starts an append in its own task (it queues at once).
fn spawn_append(
    store: &PgEventStore,
    request: eventstore::AppendRequest,
) -> tokio::task::JoinHandle<Result<eventstore::AppendResult, StoreError>> {
    let store = store.clone();
    tokio::spawn(async move { store.append(request).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_one_batch_a_conflicting_and_a_duplicate_append_are_refused_while_the_others_commit() {
    let Some((_store, database)) = postgres_event_store(
        "in_one_batch_a_conflicting_and_a_duplicate_append_are_refused_while_the_others_commit",
    )
    .await
    else {
        return;
    };
    let (store, gate, waiting) = store_with_a_blocked_committer(database.url()).await;
    let stored_events = numbered_events("stored", 1);
    // Stored through append_in_transaction: the committer is busy.
    let mut setup = store.pool().begin().await.unwrap();
    let stored = store
        .append_in_transaction(
            &mut setup,
            request(
                "cart",
                "retried",
                ExpectedVersion::NoStream,
                stored_events.clone(),
            ),
        )
        .await
        .unwrap();
    for stream_id in ["existing", "moved-on"] {
        store
            .append_in_transaction(
                &mut setup,
                request(
                    "cart",
                    stream_id,
                    ExpectedVersion::NoStream,
                    numbered_events(stream_id, 2),
                ),
            )
            .await
            .unwrap();
    }
    setup.commit().await.unwrap();

    let fresh = spawn_append(
        &store,
        request(
            "cart",
            "fresh",
            ExpectedVersion::NoStream,
            numbered_events("fresh", 1),
        ),
    );
    let existing = spawn_append(
        &store,
        request(
            "cart",
            "existing",
            ExpectedVersion::Exact(2),
            numbered_events("existing", 3),
        ),
    );
    let conflicting = spawn_append(
        &store,
        request(
            "cart",
            "moved-on",
            ExpectedVersion::Exact(1),
            numbered_events("late", 1),
        ),
    );
    // A retry of the stored append, expecting the version it expected the first time.
    let duplicate = spawn_append(
        &store,
        request("cart", "retried", ExpectedVersion::NoStream, stored_events),
    );
    let shared_any = spawn_append(
        &store,
        request(
            "cart",
            "any",
            ExpectedVersion::Any,
            numbered_events("any", 2),
        ),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.commit().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap().stream_version, 2);

    let fresh = fresh.await.unwrap().unwrap();
    let existing = existing.await.unwrap().unwrap();
    let shared_any = shared_any.await.unwrap().unwrap();
    assert_eq!(fresh.stream_version, 1);
    assert_eq!(existing.stream_version, 5);
    assert_eq!(shared_any.stream_version, 2);
    assert!(!fresh.duplicate && !existing.duplicate && !shared_any.duplicate);
    let positions = [
        fresh.positions.clone(),
        existing.positions.clone(),
        shared_any.positions.clone(),
    ]
    .concat();
    assert!(
        positions
            .iter()
            .all(|position| transaction_of(*position) == transaction_of(positions[0])),
        "the accepted appends were committed in one transaction: {positions:?}"
    );
    match conflicting.await.unwrap() {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, ExpectedVersion::Exact(1));
            assert_eq!(actual, 2);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let duplicate = duplicate.await.unwrap().unwrap();
    assert!(duplicate.duplicate);
    assert_eq!(duplicate.positions, stored.positions);
    assert_eq!(duplicate.stream_version, 1);

    assert_eq!(store.stream_version("cart", "moved-on").await.unwrap(), 2);
    assert_eq!(store.stream_version("cart", "retried").await.unwrap(), 1);
    // gate 2, retried 1, existing 5, moved-on 2, fresh 1, any 2
    let log = read_exactly(&store, 100, 13).await;
    assert_log_order(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_loses_a_race_on_an_event_id_is_appended_request_by_request() {
    let Some((_store, database)) = postgres_event_store(
        "a_batch_that_loses_a_race_on_an_event_id_is_appended_request_by_request",
    )
    .await
    else {
        return;
    };
    let (store, gate, waiting) = store_with_a_blocked_committer(database.url()).await;
    let stored_events = numbered_events("stored", 2);
    let mut setup = store.pool().begin().await.unwrap();
    let stored = store
        .append_in_transaction(
            &mut setup,
            request(
                "cart",
                "retried",
                ExpectedVersion::NoStream,
                stored_events.clone(),
            ),
        )
        .await
        .unwrap();
    setup.commit().await.unwrap();
    let reused_id = stored_events[0].event_id;

    let appends: Vec<_> = (0..3)
        .map(|index| {
            spawn_append(
                &store,
                request(
                    "cart",
                    &format!("fine-{index}"),
                    ExpectedVersion::NoStream,
                    numbered_events("fine", 1),
                ),
            )
        })
        .collect();
    // Any version is accepted, so the batch statement inserts the stored ids again and fails.
    let duplicate = spawn_append(
        &store,
        request("cart", "retried", ExpectedVersion::Any, stored_events),
    );
    // An id stored as another stream's event.
    let mut reusing = numbered_events("reused", 1);
    reusing[0].event_id = reused_id;
    let reused = spawn_append(
        &store,
        request("cart", "other", ExpectedVersion::Any, reusing),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.commit().await.unwrap();
    waiting.await.unwrap().unwrap();

    let mut transactions = HashSet::new();
    for append in appends {
        let result = append.await.unwrap().unwrap();
        assert_eq!(result.stream_version, 1);
        assert!(!result.duplicate);
        transactions.insert(transaction_of(result.positions[0]));
    }
    assert_eq!(
        transactions.len(),
        3,
        "after the failed batch each request is appended alone"
    );
    let duplicate = duplicate.await.unwrap().unwrap();
    assert!(duplicate.duplicate);
    assert_eq!(duplicate.positions, stored.positions);
    assert_eq!(duplicate.stream_version, 2);
    match reused.await.unwrap() {
        Err(StoreError::EventIdReused { .. }) => {}
        other => panic!("expected a reused event id, got {other:?}"),
    }
    // gate 2, retried 2, three fine streams
    let log = read_exactly(&store, 100, 7).await;
    assert_log_order(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_stream_reads_are_answered_each_with_its_own_streams_events() {
    let Some((store, _database)) =
        postgres_event_store("many_concurrent_stream_reads_are_answered").await
    else {
        return;
    };
    // 40 streams, stream i holding i + 1 events.
    let n_streams = 40;
    for stream_index in 0..n_streams {
        store
            .append(request(
                "reading",
                &format!("s{stream_index}"),
                ExpectedVersion::NoStream,
                numbered_events(&format!("s{stream_index}"), stream_index + 1),
            ))
            .await
            .unwrap();
    }
    // 64 readers at once, each reading many streams with various offsets and limits, so that
    // reads queue up and are answered in shared statements.
    let mut readers = Vec::new();
    for reader_index in 0..64_usize {
        let store = store.clone();
        readers.push(tokio::spawn(async move {
            let mut n_checked = 0;
            for round in 0..25_usize {
                let stream_index = (reader_index * 7 + round * 3) % n_streams;
                let after_version = (round % 3) as u64;
                let limit = 1 + (reader_index + round) % 5;
                let events = store
                    .read_stream("reading", &format!("s{stream_index}"), after_version, limit)
                    .await
                    .unwrap();
                let n_in_stream = stream_index as u64 + 1;
                let expected: Vec<u64> = ((after_version + 1)..=n_in_stream).take(limit).collect();
                let versions: Vec<u64> = events.iter().map(|event| event.stream_version).collect();
                assert_eq!(
                    versions, expected,
                    "stream s{stream_index} after {after_version} limit {limit}"
                );
                assert!(
                    events
                        .iter()
                        .all(|event| event.stream_id == format!("s{stream_index}")),
                    "a read got another stream's events"
                );
                // An unknown stream reads as empty, even inside a batch.
                let none = store
                    .read_stream("reading", &format!("missing-{reader_index}"), 0, 10)
                    .await
                    .unwrap();
                assert!(none.is_empty());
                n_checked += 1;
            }
            n_checked
        }));
    }
    let mut n_checked = 0;
    for reader in readers {
        n_checked += reader.await.unwrap();
    }
    assert_eq!(n_checked, 64 * 25);
    assert!(
        store.batched_stream_reads() > 0,
        "64 concurrent readers never shared a statement"
    );
}
