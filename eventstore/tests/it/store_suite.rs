//! The shared suite: every case runs against both adapters, SQLite in a temporary directory and
//! PostgreSQL in a fresh database of its own (skipped loudly without `DATABASE_URL`).

/// Declares each case once per adapter: `sqlite::<case>` and `postgres::<case>`.
macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test_store = eventstore::testing::sqlite_store().await;
                    super::cases::$case(&test_store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test_name = concat!("postgres::", stringify!($case));
                    let Some(test_store) = eventstore::testing::postgres_store(test_name).await
                    else {
                        return;
                    };
                    super::cases::$case(&test_store).await;
                }
            )*
        }
    };
}

store_suite!(
    appended_events_are_read_back_by_stream_and_in_the_global_log,
    payloads_and_metadata_come_back_exactly_as_they_were_appended,
    expected_versions_no_stream_exact_and_any_are_enforced,
    a_conflict_is_a_typed_error_naming_the_stream_and_both_versions,
    appending_stored_event_ids_again_stores_nothing_and_returns_the_stored_positions,
    event_ids_reused_for_other_events_are_refused,
    an_atomic_append_to_several_streams_stores_all_or_nothing,
    snapshots_are_saved_loaded_and_never_replaced_by_older_ones,
    a_subscription_catches_up_in_pages_then_follows_live_appends,
    two_writers_with_the_same_expected_version_race_and_exactly_one_wins,
    a_subscriber_restarted_from_its_checkpoint_neither_repeats_nor_misses_an_event,
    concurrent_appends_to_many_streams_all_land_in_the_log,
    reopening_the_store_keeps_every_event_and_continues_the_positions,
    product_commands_run_through_the_aggregate_command_path,
    a_retried_command_with_the_same_cause_is_not_applied_twice,
    a_repeat_without_the_lookup_first_is_answered_from_its_stored_events_whatever_the_state_decides,
    concurrent_commands_on_one_product_all_apply_after_retrying_conflicts,
    decisions_on_two_aggregates_are_appended_together_or_not_at_all,
    the_aggregate_command_path_saves_snapshots_and_loads_from_them,
    a_cqrs_framework_runs_unchanged_on_the_store,
    a_cqrs_framework_with_snapshots_runs_unchanged_on_the_store,
    events_of_one_correlation_id_are_read_in_position_order_after_a_position,
);

mod cases {
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use cqrs_es::persist::PersistedEventStore;
    use cqrs_es::{AggregateError, CqrsFramework};
    use domain::{Money, Product, ProductCommand, ProductError};
    use eventstore::aggregate::{self, CommandError, CommandOptions};
    use eventstore::cqrs::CqrsEventRepository;
    use eventstore::testing::TestStore;
    use eventstore::{EventStore, ExpectedVersion, Snapshot, StoreError};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use uuid::Uuid;

    use crate::common::{
        assert_log_order, metadata, new_event, next_batch, numbered_events, raw, read_exactly,
        request, wait_until_readable,
    };

    fn create_product(product_id: Uuid, stock_qty: i64) -> ProductCommand {
        ProductCommand::CreateProduct {
            product_id,
            name: "Walnut desk".to_owned(),
            description: "Solid walnut, 140 cm".to_owned(),
            price: Money::from_minor(45_000),
            stock_qty,
            category: Some("furniture".to_owned()),
        }
    }

    pub async fn appended_events_are_read_back_by_stream_and_in_the_global_log(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        assert_eq!(store.head_position().await.unwrap(), 0);
        assert!(store.read_all(0, 10).await.unwrap().is_empty());

        let first = store
            .append(request(
                "cart",
                "a",
                ExpectedVersion::NoStream,
                numbered_events("a", 3),
            ))
            .await
            .unwrap();
        let second = store
            .append(request(
                "cart",
                "b",
                ExpectedVersion::NoStream,
                numbered_events("b", 2),
            ))
            .await
            .unwrap();
        let third = store
            .append(request(
                "cart",
                "a",
                ExpectedVersion::Exact(3),
                numbered_events("a-again", 1),
            ))
            .await
            .unwrap();
        assert_eq!(first.positions.len(), 3);
        assert_eq!(first.stream_version, 3);
        assert_eq!(second.stream_version, 2);
        assert_eq!(third.stream_version, 4);
        assert!(!first.duplicate && !second.duplicate && !third.duplicate);
        let all_positions: Vec<u64> = [&first, &second, &third]
            .iter()
            .flat_map(|result| result.positions.clone())
            .collect();
        assert!(all_positions.windows(2).all(|pair| pair[0] < pair[1]));

        let stream_a = store.read_stream("cart", "a", 0, 100).await.unwrap();
        assert_eq!(
            stream_a
                .iter()
                .map(|event| event.stream_version)
                .collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            stream_a
                .iter()
                .map(|event| event.position)
                .collect::<Vec<_>>(),
            [first.positions.clone(), third.positions.clone()].concat()
        );
        let after_two = store.read_stream("cart", "a", 2, 1).await.unwrap();
        assert_eq!(after_two.len(), 1);
        assert_eq!(after_two[0].stream_version, 3);
        assert!(
            store
                .read_stream("cart", "none", 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.stream_version("cart", "a").await.unwrap(), 4);
        assert_eq!(store.stream_version("cart", "b").await.unwrap(), 2);
        assert_eq!(store.stream_version("cart", "none").await.unwrap(), 0);
        assert_eq!(store.stream_version("order", "a").await.unwrap(), 0);

        let everything = read_exactly(store, 2, 6).await;
        assert_eq!(
            everything
                .iter()
                .map(|event| event.position)
                .collect::<Vec<_>>(),
            all_positions
        );
        assert_log_order(&everything);
        let after_first_two = store.read_all(all_positions[1], 3).await.unwrap();
        assert_eq!(
            after_first_two
                .iter()
                .map(|event| event.position)
                .collect::<Vec<_>>(),
            all_positions[2..5].to_vec()
        );
        assert_eq!(
            store.head_position().await.unwrap(),
            *all_positions.last().unwrap()
        );
        let found = store
            .find_events(&[
                everything[4].event_id,
                everything[0].event_id,
                Uuid::new_v4(),
            ])
            .await
            .unwrap();
        assert_eq!(
            found.iter().map(|event| event.position).collect::<Vec<_>>(),
            vec![everything[0].position, everything[4].position]
        );
        store.ping().await.unwrap();
    }

    pub async fn payloads_and_metadata_come_back_exactly_as_they_were_appended(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        // Key order, spacing and number spelling are kept byte for byte.
        let payload = r#"{"zeta": 1,  "alpha":[1.50, "é\u00e9"], "nested":{"b":null,"a":true}}"#;
        let mut event = new_event("ProductUpdated", payload);
        event.schema_version = 7;
        event.metadata.saga_id = Some("saga-9".to_owned());
        let mut plain = new_event("ProductUpdated", "{}");
        plain.metadata.saga_id = None;
        store
            .append(request(
                "product",
                "p-1",
                ExpectedVersion::Any,
                vec![event.clone(), plain.clone()],
            ))
            .await
            .unwrap();
        let stored = store.read_stream("product", "p-1", 0, 10).await.unwrap();
        assert_eq!(stored.len(), 2);
        let first = &stored[0];
        assert_eq!(first.payload.get(), payload);
        assert_eq!(first.event_id, event.event_id);
        assert_eq!(first.event_type, "ProductUpdated");
        assert_eq!(first.schema_version, 7);
        assert_eq!(first.stream_type, "product");
        assert_eq!(first.stream_id, "p-1");
        assert_eq!(first.occurred_at, event.occurred_at);
        assert_eq!(first.metadata, event.metadata);
        assert_eq!(stored[1].metadata, plain.metadata);
        assert_eq!(stored[1].payload.get(), "{}");
        let from_log = read_exactly(store, 10, 2).await;
        assert_eq!(from_log[0].payload.get(), payload);
    }

    pub async fn expected_versions_no_stream_exact_and_any_are_enforced(test_store: &TestStore) {
        let store = &*test_store.store;
        let append = |expected, label: &str| {
            store.append(request("order", "o-1", expected, numbered_events(label, 1)))
        };
        assert_eq!(
            append(ExpectedVersion::NoStream, "1")
                .await
                .unwrap()
                .stream_version,
            1
        );
        assert!(
            append(ExpectedVersion::NoStream, "x")
                .await
                .unwrap_err()
                .is_conflict()
        );
        assert!(
            append(ExpectedVersion::Exact(0), "x")
                .await
                .unwrap_err()
                .is_conflict()
        );
        assert_eq!(
            append(ExpectedVersion::Exact(1), "2")
                .await
                .unwrap()
                .stream_version,
            2
        );
        assert!(
            append(ExpectedVersion::Exact(1), "x")
                .await
                .unwrap_err()
                .is_conflict()
        );
        // Ahead of the stream is a conflict too: versions never have gaps.
        assert!(
            append(ExpectedVersion::Exact(5), "x")
                .await
                .unwrap_err()
                .is_conflict()
        );
        assert_eq!(
            append(ExpectedVersion::Any, "3")
                .await
                .unwrap()
                .stream_version,
            3
        );
        assert_eq!(
            store
                .append(request(
                    "order",
                    "o-2",
                    ExpectedVersion::Any,
                    numbered_events("new", 2)
                ))
                .await
                .unwrap()
                .stream_version,
            2
        );
        assert_eq!(
            store
                .append(request(
                    "order",
                    "o-3",
                    ExpectedVersion::Exact(0),
                    numbered_events("e", 1)
                ))
                .await
                .unwrap()
                .stream_version,
            1
        );
        // An empty append checks the version and writes nothing.
        let empty = store
            .append(request(
                "order",
                "o-1",
                ExpectedVersion::Exact(3),
                Vec::new(),
            ))
            .await
            .unwrap();
        assert_eq!(empty.stream_version, 3);
        assert!(empty.positions.is_empty());
        assert!(
            store
                .append(request(
                    "order",
                    "o-1",
                    ExpectedVersion::Exact(2),
                    Vec::new()
                ))
                .await
                .unwrap_err()
                .is_conflict()
        );
        let versions: Vec<u64> = store
            .read_stream("order", "o-1", 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|event| event.stream_version)
            .collect();
        assert_eq!(versions, vec![1, 2, 3]);
        read_exactly(store, 100, 6).await;
    }

    pub async fn a_conflict_is_a_typed_error_naming_the_stream_and_both_versions(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        store
            .append(request(
                "payment",
                "pay-7",
                ExpectedVersion::NoStream,
                numbered_events("p", 2),
            ))
            .await
            .unwrap();
        let error = store
            .append(request(
                "payment",
                "pay-7",
                ExpectedVersion::Exact(1),
                numbered_events("q", 1),
            ))
            .await
            .unwrap_err();
        match &error {
            StoreError::Conflict {
                stream_type,
                stream_id,
                expected,
                actual,
            } => {
                assert_eq!(stream_type, "payment");
                assert_eq!(stream_id, "pay-7");
                assert_eq!(*expected, ExpectedVersion::Exact(1));
                assert_eq!(*actual, 2);
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains("payment/pay-7"), "{message}");
        assert!(message.contains("expected version 1"), "{message}");
        assert!(message.contains("at 2"), "{message}");
        let no_stream = store
            .append(request(
                "payment",
                "pay-7",
                ExpectedVersion::NoStream,
                numbered_events("r", 1),
            ))
            .await
            .unwrap_err();
        assert!(no_stream.to_string().contains("no stream"), "{no_stream}");
    }

    pub async fn appending_stored_event_ids_again_stores_nothing_and_returns_the_stored_positions(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        let events = numbered_events("retried", 3);
        let original = store
            .append(request(
                "cart",
                "c-1",
                ExpectedVersion::NoStream,
                events.clone(),
            ))
            .await
            .unwrap();
        store
            .append(request(
                "cart",
                "c-1",
                ExpectedVersion::Exact(3),
                numbered_events("later", 2),
            ))
            .await
            .unwrap();

        // The same request again (its expected version is stale by now).
        let retried = store
            .append(request(
                "cart",
                "c-1",
                ExpectedVersion::NoStream,
                events.clone(),
            ))
            .await
            .unwrap();
        assert!(retried.duplicate);
        assert_eq!(retried.positions, original.positions);
        assert_eq!(retried.stream_version, 3);
        // With any expected version, and through an atomic append, it is still a duplicate.
        let retried_any = store
            .append(request("cart", "c-1", ExpectedVersion::Any, events.clone()))
            .await
            .unwrap();
        assert!(retried_any.duplicate);
        assert_eq!(retried_any.positions, original.positions);
        let retried_atomic = store
            .append_atomic(vec![request(
                "cart",
                "c-1",
                ExpectedVersion::Exact(0),
                events.clone(),
            )])
            .await
            .unwrap();
        assert!(retried_atomic[0].duplicate);
        assert_eq!(retried_atomic[0].positions, original.positions);

        read_exactly(store, 100, 5).await;
        assert_eq!(store.stream_version("cart", "c-1").await.unwrap(), 5);
    }

    pub async fn event_ids_reused_for_other_events_are_refused(test_store: &TestStore) {
        let store = &*test_store.store;
        let events = numbered_events("stored", 2);
        store
            .append(request(
                "cart",
                "c-1",
                ExpectedVersion::NoStream,
                events.clone(),
            ))
            .await
            .unwrap();
        // One stored id among new ones.
        let mut mixed = numbered_events("new", 2);
        mixed[1].event_id = events[0].event_id;
        let error = store
            .append(request("cart", "c-1", ExpectedVersion::Exact(2), mixed))
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::EventIdReused { event_id } if event_id == events[0].event_id),
            "{error:?}"
        );
        // The same ids in another stream.
        let error = store
            .append(request(
                "cart",
                "c-2",
                ExpectedVersion::NoStream,
                events.clone(),
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::EventIdReused { .. }),
            "{error:?}"
        );
        // One id twice in one append.
        let mut twice = numbered_events("twice", 2);
        twice[1].event_id = twice[0].event_id;
        let error = store
            .append(request("cart", "c-3", ExpectedVersion::NoStream, twice))
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::InvalidRequest(_)), "{error:?}");
        let error = store
            .append(request(
                "",
                "c-3",
                ExpectedVersion::NoStream,
                numbered_events("x", 1),
            ))
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::InvalidRequest(_)), "{error:?}");
        read_exactly(store, 100, 2).await;
    }

    pub async fn an_atomic_append_to_several_streams_stores_all_or_nothing(test_store: &TestStore) {
        let store = &*test_store.store;
        let checkout = vec![
            request(
                "cart",
                "cart-1",
                ExpectedVersion::NoStream,
                numbered_events("checked-out", 1),
            ),
            request(
                "order",
                "order-1",
                ExpectedVersion::NoStream,
                numbered_events("created", 2),
            ),
        ];
        let results = store.append_atomic(checkout.clone()).await.unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].stream_version, 1);
        assert_eq!(results[1].stream_version, 2);
        let positions: Vec<u64> = results
            .iter()
            .flat_map(|result| result.positions.clone())
            .collect();
        assert_eq!(positions.len(), 3);
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));

        // The second request conflicts: the first must not be stored either.
        let error = store
            .append_atomic(vec![
                request(
                    "cart",
                    "cart-2",
                    ExpectedVersion::NoStream,
                    numbered_events("a", 1),
                ),
                request(
                    "order",
                    "order-1",
                    ExpectedVersion::NoStream,
                    numbered_events("b", 1),
                ),
            ])
            .await
            .unwrap_err();
        assert!(error.is_conflict(), "{error:?}");
        assert_eq!(store.stream_version("cart", "cart-2").await.unwrap(), 0);

        // A stored id in the second request: nothing of the first is stored.
        let mut reused = numbered_events("c", 1);
        reused[0].event_id = checkout[1].events[0].event_id;
        let error = store
            .append_atomic(vec![
                request(
                    "cart",
                    "cart-3",
                    ExpectedVersion::NoStream,
                    numbered_events("d", 1),
                ),
                request("order", "order-3", ExpectedVersion::NoStream, reused),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::EventIdReused { .. }),
            "{error:?}"
        );
        assert_eq!(store.stream_version("cart", "cart-3").await.unwrap(), 0);

        // The whole checkout retried: a duplicate, answered with the stored positions.
        let retried = store.append_atomic(checkout).await.unwrap();
        assert!(retried.iter().all(|result| result.duplicate));
        assert_eq!(
            retried
                .iter()
                .flat_map(|result| result.positions.clone())
                .collect::<Vec<_>>(),
            positions
        );
        read_exactly(store, 100, 3).await;
        assert!(store.append_atomic(Vec::new()).await.unwrap().is_empty());
    }

    pub async fn snapshots_are_saved_loaded_and_never_replaced_by_older_ones(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        let snapshot = |version: u64, state: &str| Snapshot {
            stream_type: "product".to_owned(),
            stream_id: "p-1".to_owned(),
            version,
            state: raw(state),
        };
        assert!(
            store
                .load_snapshot("product", "p-1")
                .await
                .unwrap()
                .is_none()
        );
        store
            .save_snapshot(snapshot(5, r#"{"at":5}"#))
            .await
            .unwrap();
        let loaded = store
            .load_snapshot("product", "p-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((loaded.version, loaded.state.get()), (5, r#"{"at":5}"#));
        store
            .save_snapshot(snapshot(3, r#"{"at":3}"#))
            .await
            .unwrap();
        let loaded = store
            .load_snapshot("product", "p-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            loaded.version, 5,
            "an older snapshot must not replace a newer one"
        );
        store
            .save_snapshot(snapshot(8, r#"{"at":8}"#))
            .await
            .unwrap();
        let loaded = store
            .load_snapshot("product", "p-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((loaded.version, loaded.state.get()), (8, r#"{"at":8}"#));
        assert!(
            store
                .load_snapshot("product", "p-2")
                .await
                .unwrap()
                .is_none()
        );

        // Saved with an append, in the same transaction; not saved when the append is refused
        // or a duplicate.
        let events = numbered_events("with-snapshot", 2);
        let appended = store
            .append_with_snapshot(
                request("product", "p-3", ExpectedVersion::NoStream, events.clone()),
                Snapshot {
                    stream_type: "product".to_owned(),
                    stream_id: "p-3".to_owned(),
                    version: 2,
                    state: raw(r#"{"at":2}"#),
                },
            )
            .await
            .unwrap();
        assert_eq!(appended.stream_version, 2);
        let loaded = store
            .load_snapshot("product", "p-3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((loaded.version, loaded.state.get()), (2, r#"{"at":2}"#));
        let refused = store
            .append_with_snapshot(
                request(
                    "product",
                    "p-3",
                    ExpectedVersion::Exact(1),
                    numbered_events("x", 1),
                ),
                Snapshot {
                    stream_type: "product".to_owned(),
                    stream_id: "p-3".to_owned(),
                    version: 3,
                    state: raw(r#"{"at":"refused"}"#),
                },
            )
            .await
            .unwrap_err();
        assert!(refused.is_conflict());
        let duplicate = store
            .append_with_snapshot(
                request("product", "p-3", ExpectedVersion::NoStream, events),
                Snapshot {
                    stream_type: "product".to_owned(),
                    stream_id: "p-3".to_owned(),
                    version: 9,
                    state: raw(r#"{"at":"duplicate"}"#),
                },
            )
            .await
            .unwrap();
        assert!(duplicate.duplicate);
        let loaded = store
            .load_snapshot("product", "p-3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((loaded.version, loaded.state.get()), (2, r#"{"at":2}"#));
    }

    pub async fn a_subscription_catches_up_in_pages_then_follows_live_appends(
        test_store: &TestStore,
    ) {
        let store = test_store.store.clone();
        let mut last_position = 0;
        for stream_index in 0..5 {
            let appended = store
                .append(request(
                    "cart",
                    &format!("c-{stream_index}"),
                    ExpectedVersion::NoStream,
                    numbered_events("before", 5),
                ))
                .await
                .unwrap();
            last_position = appended.last_position().unwrap();
        }
        // On PostgreSQL a write transaction of another test (any database of the server) holds
        // the readers' horizon back for a moment: the pages below are counted once all 25
        // events are readable.
        wait_until_readable(&*store, last_position).await;
        let mut subscription = store.subscribe(0).await.unwrap().with_batch_size(10);
        assert_eq!(subscription.checkpoint(), 0);
        let mut seen = Vec::new();
        for expected_len in [10, 10, 5] {
            let batch = next_batch(&mut subscription).await;
            assert_eq!(batch.len(), expected_len);
            seen.extend(batch);
        }
        assert_eq!(subscription.checkpoint(), seen.last().unwrap().position);

        // Caught up: now it waits for live appends.
        let appender = {
            let store = store.clone();
            tokio::spawn(async move {
                for event_index in 0..30 {
                    store
                        .append(request(
                            "cart",
                            &format!("live-{}", event_index % 3),
                            ExpectedVersion::Any,
                            numbered_events("live", 1),
                        ))
                        .await
                        .unwrap();
                    if event_index % 5 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        };
        while seen.len() < 55 {
            seen.extend(next_batch(&mut subscription).await);
        }
        appender.await.unwrap();
        assert_eq!(seen.len(), 55);
        assert_log_order(&seen);
        let ids: HashSet<Uuid> = seen.iter().map(|event| event.event_id).collect();
        assert_eq!(ids.len(), 55);
        assert_eq!(
            seen.iter().map(|event| event.event_id).collect::<Vec<_>>(),
            read_exactly(&*store, 7, 55)
                .await
                .iter()
                .map(|event| event.event_id)
                .collect::<Vec<_>>()
        );

        // Subscribing from a checkpoint starts right after it.
        let mut from_middle = store.subscribe(seen[19].position).await.unwrap();
        let batch = next_batch(&mut from_middle).await;
        assert_eq!(batch.first().unwrap().event_id, seen[20].event_id);
        assert_eq!(batch.len(), 35);

        // A subscription at the head waits rather than returning empty batches.
        let mut at_head = store.subscribe(seen[54].position).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), at_head.next_batch()).await;
        assert!(
            waited.is_err(),
            "a caught-up subscription must wait, got {waited:?}"
        );
        store
            .append(request(
                "cart",
                "late",
                ExpectedVersion::Any,
                numbered_events("late", 1),
            ))
            .await
            .unwrap();
        let late = next_batch(&mut at_head).await;
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].stream_id, "late");
    }

    pub async fn two_writers_with_the_same_expected_version_race_and_exactly_one_wins(
        test_store: &TestStore,
    ) {
        let store = test_store.store.clone();
        for round in 0..20 {
            let stream_id = format!("race-{round}");
            store
                .append(request(
                    "order",
                    &stream_id,
                    ExpectedVersion::NoStream,
                    numbered_events("base", 1),
                ))
                .await
                .unwrap();
            let writers: Vec<_> = (0..2)
                .map(|writer| {
                    let store = store.clone();
                    let stream_id = stream_id.clone();
                    tokio::spawn(async move {
                        store
                            .append(request(
                                "order",
                                &stream_id,
                                ExpectedVersion::Exact(1),
                                numbered_events(&format!("writer-{writer}"), 2),
                            ))
                            .await
                    })
                })
                .collect();
            let mut n_won = 0;
            let mut n_conflicts = 0;
            for writer in writers {
                match writer.await.unwrap() {
                    Ok(result) => {
                        assert_eq!(result.stream_version, 3);
                        n_won += 1;
                    }
                    Err(StoreError::Conflict { actual, .. }) => {
                        assert_eq!(actual, 3);
                        n_conflicts += 1;
                    }
                    Err(other) => panic!("expected a conflict, got {other:?}"),
                }
            }
            assert_eq!((n_won, n_conflicts), (1, 1), "round {round}");
            assert_eq!(store.stream_version("order", &stream_id).await.unwrap(), 3);
        }
    }

    pub async fn a_subscriber_restarted_from_its_checkpoint_neither_repeats_nor_misses_an_event(
        test_store: &TestStore,
    ) {
        const N_EVENTS: usize = 2_000;
        let store = test_store.store.clone();
        let n_appended = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let appender = {
            let store = store.clone();
            let n_appended = n_appended.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(7);
                let mut appended = 0;
                while appended < N_EVENTS {
                    let n_events = rng.random_range(1..=20).min(N_EVENTS - appended);
                    let stream_id = format!("s-{}", rng.random_range(0..5));
                    store
                        .append(request(
                            "cart",
                            &stream_id,
                            ExpectedVersion::Any,
                            numbered_events("restart", n_events),
                        ))
                        .await
                        .unwrap();
                    appended += n_events;
                    n_appended.store(appended, Ordering::SeqCst);
                    if rng.random_bool(0.3) {
                        tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
                    }
                }
                done.store(true, Ordering::SeqCst);
            })
        };

        let mut rng = StdRng::seed_from_u64(11);
        let mut seen = Vec::new();
        let mut checkpoint = 0;
        let mut n_restarts = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !(done.load(Ordering::SeqCst) && seen.len() >= n_appended.load(Ordering::SeqCst)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the subscriber did not finish"
            );
            // A subscriber process: a few batches, then it stops (crash, deploy, ...).
            let mut subscription = store
                .subscribe(checkpoint)
                .await
                .unwrap()
                .with_batch_size(rng.random_range(1..=64));
            for _ in 0..rng.random_range(1..=6) {
                match tokio::time::timeout(Duration::from_millis(500), subscription.next_batch())
                    .await
                {
                    Ok(batch) => seen.extend(batch.unwrap()),
                    Err(_elapsed) => break, // nothing new for now; stopped while waiting
                }
            }
            checkpoint = subscription.checkpoint();
            drop(subscription);
            n_restarts += 1;
        }
        appender.await.unwrap();
        assert!(n_restarts > 5, "only {n_restarts} restarts");
        assert_eq!(seen.len(), N_EVENTS);
        let ids: HashSet<Uuid> = seen.iter().map(|event| event.event_id).collect();
        assert_eq!(ids.len(), N_EVENTS, "an event was delivered twice");
        assert_log_order(&seen);
        let log = read_exactly(&*store, 1_000, N_EVENTS).await;
        assert_eq!(
            log.iter().map(|event| event.event_id).collect::<Vec<_>>(),
            seen.iter().map(|event| event.event_id).collect::<Vec<_>>()
        );
    }

    pub async fn concurrent_appends_to_many_streams_all_land_in_the_log(test_store: &TestStore) {
        let store = test_store.store.clone();
        let writers: Vec<_> = (0..16)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut version = 0;
                    for command_index in 0..25 {
                        let n_events = 1 + command_index % 3;
                        let result = store
                            .append(request(
                                "product",
                                &format!("w-{writer}"),
                                ExpectedVersion::Exact(version),
                                numbered_events("concurrent", n_events),
                            ))
                            .await
                            .unwrap();
                        version = result.stream_version;
                    }
                    version
                })
            })
            .collect();
        let mut n_events = 0;
        for writer in writers {
            n_events += writer.await.unwrap();
        }
        let log = read_exactly(&*store, 100, n_events as usize).await;
        assert_log_order(&log);
    }

    pub async fn reopening_the_store_keeps_every_event_and_continues_the_positions(
        test_store: &TestStore,
    ) {
        let first = test_store
            .store
            .append(request(
                "cart",
                "c",
                ExpectedVersion::NoStream,
                numbered_events("before", 3),
            ))
            .await
            .unwrap();
        let reopened = eventstore::open(&test_store.url).await.unwrap();
        eventstore::migrate(&test_store.url).await.unwrap();
        assert_eq!(reopened.backend(), test_store.store.backend());
        let log = read_exactly(&*reopened, 10, 3).await;
        assert_eq!(
            log.iter().map(|event| event.position).collect::<Vec<_>>(),
            first.positions
        );
        let second = reopened
            .append(request(
                "cart",
                "c",
                ExpectedVersion::Exact(3),
                numbered_events("after", 1),
            ))
            .await
            .unwrap();
        assert!(second.positions[0] > *first.positions.last().unwrap());
        assert_eq!(second.stream_version, 4);
    }

    pub async fn product_commands_run_through_the_aggregate_command_path(test_store: &TestStore) {
        let store = &*test_store.store;
        let product_id = Uuid::new_v4();
        let stream_id = product_id.to_string();
        let options = CommandOptions::default();

        let created = aggregate::execute::<Product>(
            store,
            &stream_id,
            create_product(product_id, 10),
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap();
        assert_eq!(
            created.events.len(),
            2,
            "ProductCreated, then ProductUpdated"
        );
        assert_eq!(created.positions.len(), 2);
        assert_eq!(created.version, 2);
        assert_eq!(created.state.stock_qty, 10);
        assert!(!created.duplicate);

        let adjusted = aggregate::execute::<Product>(
            store,
            &stream_id,
            ProductCommand::AdjustStock { delta: -3 },
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap();
        assert_eq!(adjusted.version, 4);
        assert_eq!(adjusted.state.stock_qty, 7);
        assert!(adjusted.last_position() > created.last_position());

        // A rule broken is the domain's error, and nothing is appended.
        let refused = aggregate::execute::<Product>(
            store,
            &stream_id,
            ProductCommand::AdjustStock { delta: -100 },
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                refused,
                CommandError::Domain(ProductError::NegativeStock { .. })
            ),
            "{refused:?}"
        );
        let missing = aggregate::execute::<Product>(
            store,
            &Uuid::new_v4().to_string(),
            ProductCommand::AdjustStock { delta: 1 },
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap_err();
        assert!(matches!(
            missing,
            CommandError::Domain(ProductError::NotFound)
        ));
        // A command that changes nothing appends nothing.
        let unchanged = aggregate::execute::<Product>(
            store,
            &stream_id,
            ProductCommand::AdjustStock { delta: 0 },
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap();
        assert!(unchanged.events.is_empty());
        assert_eq!(unchanged.version, 4);

        let loaded = aggregate::load::<Product>(store, &stream_id).await.unwrap();
        assert_eq!(loaded.version, 4);
        assert_eq!(loaded.state, adjusted.state);
        let stored = store
            .read_stream("product", &stream_id, 0, 10)
            .await
            .unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|event| event.event_type.as_str())
                .collect::<Vec<_>>(),
            vec![
                "ProductCreated",
                "ProductUpdated",
                "StockAdjusted",
                "ProductUpdated"
            ]
        );
        assert_eq!(stored[1].schema_version, 2);
        assert_eq!(stored[0].metadata, metadata());
    }

    pub async fn a_retried_command_with_the_same_cause_is_not_applied_twice(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        let product_id = Uuid::new_v4();
        let stream_id = product_id.to_string();
        aggregate::execute::<Product>(
            store,
            &stream_id,
            create_product(product_id, 10),
            &(),
            &metadata(),
            &CommandOptions::default(),
        )
        .await
        .unwrap();
        let options = CommandOptions::caused_by(Uuid::new_v4());
        let first = aggregate::execute::<Product>(
            store,
            &stream_id,
            ProductCommand::AdjustStock { delta: 5 },
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap();
        assert!(!first.duplicate);
        assert_eq!(first.state.stock_qty, 15);
        let retried = aggregate::execute::<Product>(
            store,
            &stream_id,
            ProductCommand::AdjustStock { delta: 5 },
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap();
        assert!(retried.duplicate);
        assert_eq!(retried.positions, first.positions);
        assert_eq!(retried.events, first.events);
        assert_eq!(retried.state.stock_qty, 15, "the stock was adjusted once");
        assert_eq!(
            store.stream_version("product", &stream_id).await.unwrap(),
            4
        );
        let stored = store
            .read_stream("product", &stream_id, 2, 10)
            .await
            .unwrap();
        assert_eq!(
            stored[0].event_id,
            aggregate::derived_event_id(options.cause_id.unwrap(), "product", &stream_id, 0)
        );
    }

    /// The saga's commands skip the lookup of their cause before deciding. A repeat is then
    /// recognised by its derived ids however the aggregate decides it now: decided again (a
    /// reserve after its release) it appends nothing; refused (a commit with nothing left to
    /// commit) it answers the stored events. The product keeps no closed reservations to tell.
    pub async fn a_repeat_without_the_lookup_first_is_answered_from_its_stored_events_whatever_the_state_decides(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        let product_id = Uuid::new_v4();
        let stream_id = product_id.to_string();
        aggregate::execute::<Product>(
            store,
            &stream_id,
            create_product(product_id, 3),
            &(),
            &metadata(),
            &CommandOptions::default(),
        )
        .await
        .unwrap();
        let step = |cause: Uuid| CommandOptions {
            look_up_cause_first: false,
            ..CommandOptions::caused_by(cause)
        };
        let (reserve, release, commit) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (sold, given_back) = (Uuid::new_v4(), Uuid::new_v4());
        let run = |command: ProductCommand, cause: Uuid| {
            let (stream_id, options) = (stream_id.clone(), step(cause));
            async move {
                aggregate::execute::<Product>(
                    store,
                    &stream_id,
                    command,
                    &(),
                    &metadata(),
                    &options,
                )
                .await
            }
        };
        let reserve_of = |order_id: Uuid| ProductCommand::ReserveStock {
            order_id,
            quantity: 2,
        };
        // Order `given_back`: reserved, then released.
        run(reserve_of(given_back), reserve).await.unwrap();
        run(
            ProductCommand::ReleaseStock {
                order_id: given_back,
            },
            release,
        )
        .await
        .unwrap();
        let version = store.stream_version("product", &stream_id).await.unwrap();
        assert_eq!(version, 6);
        // Its reserve, redelivered after the release with stock to spare: decided again, stored
        // already, nothing appended; the reservation stays released.
        let redelivered = run(reserve_of(given_back), reserve).await.unwrap();
        assert!(redelivered.duplicate);
        assert!(!redelivered.state.reservations.contains_key(&given_back));
        assert_eq!(redelivered.state.stock_qty, 3);
        // A release repeated: nothing to release, nothing appended.
        let released_again = run(
            ProductCommand::ReleaseStock {
                order_id: given_back,
            },
            release,
        )
        .await
        .unwrap();
        assert!(released_again.events.is_empty());
        assert_eq!(
            store.stream_version("product", &stream_id).await.unwrap(),
            version
        );

        // Order `sold`: reserved and committed; the last unit goes to another order.
        let reserve_sold = Uuid::new_v4();
        run(reserve_of(sold), reserve_sold).await.unwrap();
        let first_commit = run(ProductCommand::CommitStock { order_id: sold }, commit)
            .await
            .unwrap();
        run(reserve_of(Uuid::new_v4()), Uuid::new_v4())
            .await
            .unwrap_err();
        run(
            ProductCommand::ReserveStock {
                order_id: Uuid::new_v4(),
                quantity: 1,
            },
            Uuid::new_v4(),
        )
        .await
        .unwrap();
        let version = store.stream_version("product", &stream_id).await.unwrap();
        // The commit repeated: the product refuses it (nothing open to commit), the store
        // answers the first commit's events.
        let committed_again = run(ProductCommand::CommitStock { order_id: sold }, commit)
            .await
            .unwrap();
        assert!(committed_again.duplicate);
        assert_eq!(committed_again.positions, first_commit.positions);
        assert_eq!(committed_again.events, first_commit.events);
        // The reserve of `given_back` redelivered once the stock is gone: refused as out of
        // stock, answered from the stored reservation, which stays released.
        let late = run(reserve_of(given_back), reserve).await.unwrap();
        assert!(late.duplicate);
        assert!(!late.state.reservations.contains_key(&given_back));
        assert_eq!(late.state.stock_qty, 0);
        assert_eq!(
            store.stream_version("product", &stream_id).await.unwrap(),
            version
        );
        // A commit that never happened is still refused, and a released reservation is never
        // committed.
        for order_id in [Uuid::new_v4(), given_back] {
            let refused = run(ProductCommand::CommitStock { order_id }, Uuid::new_v4())
                .await
                .unwrap_err();
            assert!(
                matches!(
                    refused,
                    CommandError::Domain(ProductError::NoReservation { .. })
                ),
                "{refused:?}"
            );
        }
        assert_eq!(
            store.stream_version("product", &stream_id).await.unwrap(),
            version
        );
    }

    pub async fn concurrent_commands_on_one_product_all_apply_after_retrying_conflicts(
        test_store: &TestStore,
    ) {
        let store = test_store.store.clone();
        let product_id = Uuid::new_v4();
        let stream_id = product_id.to_string();
        aggregate::execute::<Product>(
            &*store,
            &stream_id,
            create_product(product_id, 0),
            &(),
            &metadata(),
            &CommandOptions::default(),
        )
        .await
        .unwrap();
        let options = CommandOptions {
            max_attempts: 50,
            ..CommandOptions::default()
        };
        let commands: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let stream_id = stream_id.clone();
                let options = options.clone();
                tokio::spawn(async move {
                    aggregate::execute::<Product>(
                        &*store,
                        &stream_id,
                        ProductCommand::AdjustStock { delta: 1 },
                        &(),
                        &metadata(),
                        &options,
                    )
                    .await
                })
            })
            .collect();
        for command in commands {
            command.await.unwrap().unwrap();
        }
        let loaded = aggregate::load::<Product>(&*store, &stream_id)
            .await
            .unwrap();
        assert_eq!(loaded.state.stock_qty, 8);
        assert_eq!(loaded.version, 2 + 8 * 2);
    }

    pub async fn decisions_on_two_aggregates_are_appended_together_or_not_at_all(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        let options = CommandOptions::default();
        let desk = Uuid::new_v4();
        let chair = Uuid::new_v4();
        for product_id in [desk, chair] {
            aggregate::execute::<Product>(
                store,
                &product_id.to_string(),
                create_product(product_id, 5),
                &(),
                &metadata(),
                &options,
            )
            .await
            .unwrap();
        }
        let order_id = Uuid::new_v4();
        let mut decisions = Vec::new();
        for product_id in [desk, chair] {
            decisions.push(
                aggregate::decide::<Product>(
                    store,
                    &product_id.to_string(),
                    ProductCommand::ReserveStock {
                        order_id,
                        quantity: 2,
                    },
                    &(),
                    &metadata(),
                    &options,
                )
                .await
                .unwrap(),
            );
        }
        assert!(decisions.iter().all(|decided| decided.loaded_version == 2));
        assert_eq!(
            store
                .stream_version("product", &desk.to_string())
                .await
                .unwrap(),
            2
        );

        // The chair changes meanwhile: the pair is refused as a whole.
        aggregate::execute::<Product>(
            store,
            &chair.to_string(),
            ProductCommand::AdjustStock { delta: 1 },
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap();
        let requests: Vec<_> = decisions
            .iter()
            .map(|decided| decided.request.clone())
            .collect();
        let error = store.append_atomic(requests).await.unwrap_err();
        assert!(error.is_conflict(), "{error:?}");
        assert_eq!(
            store
                .stream_version("product", &desk.to_string())
                .await
                .unwrap(),
            2
        );

        // Decided again on the current state, both go through.
        let mut requests = Vec::new();
        for product_id in [desk, chair] {
            let decided = aggregate::decide::<Product>(
                store,
                &product_id.to_string(),
                ProductCommand::ReserveStock {
                    order_id,
                    quantity: 2,
                },
                &(),
                &metadata(),
                &options,
            )
            .await
            .unwrap();
            requests.push(decided.request);
        }
        let results = store.append_atomic(requests).await.unwrap();
        assert_eq!(results[0].stream_version, 4);
        assert_eq!(results[1].stream_version, 6);
        let desk_state = aggregate::load::<Product>(store, &desk.to_string())
            .await
            .unwrap();
        let chair_state = aggregate::load::<Product>(store, &chair.to_string())
            .await
            .unwrap();
        assert_eq!(desk_state.state.stock_qty, 3);
        assert_eq!(chair_state.state.stock_qty, 4);
        assert_eq!(desk_state.state.reservations.get(&order_id), Some(&2));
    }

    pub async fn the_aggregate_command_path_saves_snapshots_and_loads_from_them(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        let product_id = Uuid::new_v4();
        let stream_id = product_id.to_string();
        let options = CommandOptions {
            snapshot_interval: 5,
            ..CommandOptions::default()
        };
        aggregate::execute::<Product>(
            store,
            &stream_id,
            create_product(product_id, 1),
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap();
        assert!(
            store
                .load_snapshot("product", &stream_id)
                .await
                .unwrap()
                .is_none()
        );
        for _ in 0..4 {
            aggregate::execute::<Product>(
                store,
                &stream_id,
                ProductCommand::AdjustStock { delta: 2 },
                &(),
                &metadata(),
                &options,
            )
            .await
            .unwrap();
        }
        // Versions 2, 4, 6 (crossed 5), 8, 10 (crossed 10).
        let snapshot = store
            .load_snapshot("product", &stream_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snapshot.version, 10);
        let snapshot_state: Product = serde_json::from_str(snapshot.state.get()).unwrap();
        assert_eq!(snapshot_state.stock_qty, 9);

        // Loading starts from the snapshot: a snapshot that disagrees with the events proves it.
        let mut doctored = snapshot_state.clone();
        doctored.name = "from the snapshot".to_owned();
        store
            .save_snapshot(Snapshot {
                stream_type: "product".to_owned(),
                stream_id: stream_id.clone(),
                version: 10,
                state: raw(&serde_json::to_string(&doctored).unwrap()),
            })
            .await
            .unwrap();
        aggregate::execute::<Product>(
            store,
            &stream_id,
            ProductCommand::AdjustStock { delta: 1 },
            &(),
            &metadata(),
            &options,
        )
        .await
        .unwrap();
        let loaded = aggregate::load::<Product>(store, &stream_id).await.unwrap();
        assert_eq!(loaded.version, 12);
        assert_eq!(loaded.state.stock_qty, 10);
        assert_eq!(loaded.state.name, "from the snapshot");

        // A snapshot that no longer deserialises is ignored: the stream is replayed.
        store
            .save_snapshot(Snapshot {
                stream_type: "product".to_owned(),
                stream_id: stream_id.clone(),
                version: 12,
                state: raw(r#"{"an":"old shape"}"#),
            })
            .await
            .unwrap();
        let replayed = aggregate::load::<Product>(store, &stream_id).await.unwrap();
        assert_eq!(replayed.version, 12);
        // The events after version 10 were decided on the doctored state (ProductUpdated carries
        // the whole product), so the replay ends in the same state as the snapshot path.
        assert_eq!(replayed.state, loaded.state);
    }

    fn cqrs_metadata() -> HashMap<String, String> {
        HashMap::from([
            ("correlation_id".to_owned(), "corr-cqrs".to_owned()),
            ("causation_id".to_owned(), "cause-cqrs".to_owned()),
            ("actor".to_owned(), "alice".to_owned()),
            ("source".to_owned(), "cqrs-test".to_owned()),
        ])
    }

    /// Runs commands through `cqrs` and the command path alternately; returns the position of
    /// the last event.
    async fn run_product_commands_through<ES>(
        cqrs: &CqrsFramework<Product, ES>,
        store: &dyn EventStore,
    ) -> u64
    where
        ES: cqrs_es::EventStore<Product>,
    {
        let product_id = Uuid::new_v4();
        let stream_id = product_id.to_string();
        cqrs.execute_with_metadata(&stream_id, create_product(product_id, 4), cqrs_metadata())
            .await
            .unwrap();
        for _ in 0..3 {
            cqrs.execute_with_metadata(
                &stream_id,
                ProductCommand::AdjustStock { delta: 3 },
                cqrs_metadata(),
            )
            .await
            .unwrap();
        }
        let refused = cqrs
            .execute(&stream_id, ProductCommand::AdjustStock { delta: -100 })
            .await
            .unwrap_err();
        assert!(matches!(
            refused,
            AggregateError::UserError(ProductError::NegativeStock { .. })
        ));

        let stored = store
            .read_stream("product", &stream_id, 0, 100)
            .await
            .unwrap();
        assert_eq!(stored.len(), 8);
        assert_eq!(stored[0].event_type, "ProductCreated");
        assert_eq!(stored[0].metadata.actor, "alice");
        assert_eq!(stored[0].metadata.correlation_id, "corr-cqrs");
        // The store holds the inner object, the codec's format: the command path reads it.
        let loaded = aggregate::load::<Product>(store, &stream_id).await.unwrap();
        assert_eq!(loaded.version, 8);
        assert_eq!(loaded.state.stock_qty, 13);
        // And the command path's events are read back by cqrs-es.
        aggregate::execute::<Product>(
            store,
            &stream_id,
            ProductCommand::AdjustStock { delta: 1 },
            &(),
            &metadata(),
            &CommandOptions::default(),
        )
        .await
        .unwrap();
        cqrs.execute(&stream_id, ProductCommand::AdjustStock { delta: 1 })
            .await
            .unwrap();
        let loaded = aggregate::load::<Product>(store, &stream_id).await.unwrap();
        assert_eq!(loaded.version, 12);
        assert_eq!(loaded.state.stock_qty, 15);
        let stored = store
            .read_stream("product", &stream_id, 11, 10)
            .await
            .unwrap();
        stored.last().unwrap().position
    }

    pub async fn a_cqrs_framework_runs_unchanged_on_the_store(test_store: &TestStore) {
        let repository = CqrsEventRepository::new(test_store.store.clone());
        let cqrs_store = PersistedEventStore::<_, Product>::new_event_store(repository.clone());
        let cqrs = CqrsFramework::new(cqrs_store, vec![], ());
        let first_last_position = run_product_commands_through(&cqrs, &*test_store.store).await;

        // The aggregate-store mode saves a snapshot with every commit.
        let cqrs_store = PersistedEventStore::<_, Product>::new_aggregate_store(repository.clone());
        let cqrs = CqrsFramework::new(cqrs_store, vec![], ());
        let last_position = run_product_commands_through(&cqrs, &*test_store.store).await;

        // Replays through cqrs-es see every event.
        use cqrs_es::persist::PersistedEventRepository;
        wait_until_readable(&*test_store.store, first_last_position.max(last_position)).await;
        let mut replay = repository.stream_all_events::<Product>().await.unwrap();
        let mut n_replayed = 0;
        while let Some(event) = replay.next::<Product>(&[]).await {
            event.unwrap();
            n_replayed += 1;
        }
        assert_eq!(n_replayed, 24);
    }

    pub async fn a_cqrs_framework_with_snapshots_runs_unchanged_on_the_store(
        test_store: &TestStore,
    ) {
        let repository = CqrsEventRepository::for_snapshot_store(test_store.store.clone(), 3);
        let cqrs_store = PersistedEventStore::<_, Product>::new_snapshot_store(repository, 3);
        let cqrs = CqrsFramework::new(cqrs_store, vec![], ());
        run_product_commands_through(&cqrs, &*test_store.store).await;
    }

    pub async fn events_of_one_correlation_id_are_read_in_position_order_after_a_position(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        let correlated = |label: &str, correlation_id: &str| {
            let mut event = new_event("Numbered", &format!(r#"{{"label":"{label}"}}"#));
            event.metadata.correlation_id = correlation_id.to_owned();
            event
        };
        assert!(
            store
                .read_correlated("c-1", 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let first = store
            .append(request(
                "cart",
                "a",
                ExpectedVersion::NoStream,
                vec![correlated("a1", "c-1"), correlated("a2", "c-2")],
            ))
            .await
            .unwrap();
        let atomic = store
            .append_atomic(vec![
                request(
                    "order",
                    "o",
                    ExpectedVersion::NoStream,
                    vec![correlated("o1", "c-1")],
                ),
                request(
                    "cart",
                    "a",
                    ExpectedVersion::Exact(2),
                    vec![correlated("a3", "c-1"), correlated("a4", "c-10")],
                ),
            ])
            .await
            .unwrap();
        let expected = vec![
            first.positions[0],
            atomic[0].positions[0],
            atomic[1].positions[0],
        ];
        wait_until_readable(store, *expected.last().unwrap()).await;
        let all = store.read_correlated("c-1", 0, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|event| event.position).collect::<Vec<_>>(),
            expected
        );
        assert!(
            all.iter()
                .all(|event| event.metadata.correlation_id == "c-1")
        );
        assert_eq!(all[1].stream_type, "order");
        let after_first = store.read_correlated("c-1", expected[0], 1).await.unwrap();
        assert_eq!(
            after_first
                .iter()
                .map(|event| event.position)
                .collect::<Vec<_>>(),
            vec![expected[1]]
        );
        assert!(
            store
                .read_correlated("c-1", expected[2], 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.read_correlated("c-1", 0, 0).await.unwrap().is_empty());
        assert_eq!(store.read_correlated("c-10", 0, 10).await.unwrap().len(), 1);
        assert!(store.read_correlated("c", 0, 10).await.unwrap().is_empty());
    }
}
