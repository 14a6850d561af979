//! Tamper evidence on both adapters: stored hashes equal Rust's recomputation, and changes made
//! directly in SQL are found and named by `eventstore::audit::verify`.

use crate::common;

macro_rules! tamper_suite {
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
                    let test_name = concat!("tamper::postgres::", stringify!($case));
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

tamper_suite!(
    stored_hashes_equal_the_rust_recomputation_for_varied_events,
    an_untouched_store_verifies_clean_and_the_expected_head_is_compared,
    a_recorded_head_fails_once_an_event_before_it_changed,
    a_changed_payload_byte_is_named,
    a_deleted_middle_event_is_named,
    a_deleted_last_event_of_a_stream_in_a_sealed_block_is_named,
    swapped_payloads_are_named,
    swapped_versions_are_named,
    a_forged_event_with_a_garbage_hash_is_named,
    a_replaced_event_with_a_correct_hash_breaks_the_next_link,
    a_forged_event_inside_a_sealed_block_is_named,
    one_stream_is_verified_alone,
);

mod cases {
    use std::collections::HashMap;

    use eventstore::audit::{self, Scope, VerifyReport, ZERO_HASH};
    use eventstore::testing::TestStore;
    use eventstore::{AppendRequest, Backend, EventStore, ExpectedVersion, NewEvent};

    use crate::common::{new_event, read_everything, wait_until_readable};

    pub(super) fn event(label: &str) -> NewEvent {
        new_event("Numbered", &format!(r#"{{"label":"{label}"}}"#))
    }

    async fn append(store: &dyn EventStore, stream: &str, id: &str, labels: &[&str]) {
        let events = labels.iter().map(|label| event(label)).collect();
        let result = store
            .append(AppendRequest::new(stream, id, ExpectedVersion::Any, events))
            .await
            .unwrap();
        wait_until_readable(store, result.last_position().unwrap()).await;
    }

    /// cart/a 1..5, cart/b 1..3 and order/o 1..4 interleaved, sealed in two blocks of 6
    /// (cart/b ends in the first), then cart/c 1..2 unsealed.
    async fn fixture(store: &dyn EventStore) {
        append(store, "cart", "a", &["a1", "a2"]).await;
        append(store, "cart", "b", &["b1", "b2", "b3"]).await;
        append(store, "order", "o", &["o1"]).await;
        append(store, "order", "o", &["o2"]).await;
        append(store, "cart", "a", &["a3", "a4"]).await;
        append(store, "order", "o", &["o3"]).await;
        append(store, "cart", "a", &["a5"]).await;
        append(store, "order", "o", &["o4"]).await;
        assert_eq!(audit::seal(store, 6).await.unwrap(), 2);
        assert_eq!(audit::seal(store, 6).await.unwrap(), 0);
        append(store, "cart", "c", &["c1", "c2"]).await;
    }

    async fn position(store: &dyn EventStore, stream: &str, id: &str, version: u64) -> u64 {
        store.read_stream(stream, id, version - 1, 1).await.unwrap()[0].position
    }

    async fn sql(test_store: &TestStore, statement: &str) {
        match test_store.store.backend() {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&test_store.url).await.unwrap();
                sqlx::raw_sql(statement).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&test_store.url).await.unwrap();
                sqlx::raw_sql(statement).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// How many event rows the database holds, counted in SQL (not through the log's horizon).
    async fn stored_rows(test_store: &TestStore) -> usize {
        let count: i64 = match test_store.store.backend() {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&test_store.url).await.unwrap();
                let count = sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                count
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&test_store.url).await.unwrap();
                let count = sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                count
            }
        };
        usize::try_from(count).unwrap()
    }

    fn bytes_literal(backend: Backend, bytes: &[u8]) -> String {
        match backend {
            Backend::Sqlite => format!("X'{}'", audit::to_hex(bytes)),
            Backend::Postgres => format!("'\\x{}'::bytea", audit::to_hex(bytes)),
        }
    }

    async fn verify(store: &dyn EventStore) -> VerifyReport {
        audit::verify(store, Scope::All, None).await.unwrap()
    }

    fn assert_problem(
        report: &VerifyReport,
        position: u64,
        stream: &str,
        version: u64,
        reason: &str,
    ) {
        let Some(problem) = &report.first_problem else {
            panic!("no problem found: {report:?}");
        };
        assert_eq!(problem.position, position, "{problem}");
        assert_eq!(
            format!("{}/{}", problem.stream_type, problem.stream_id),
            stream,
            "{problem}"
        );
        assert_eq!(problem.stream_version, version, "{problem}");
        assert!(problem.reason.contains(reason), "{problem}");
    }

    pub async fn stored_hashes_equal_the_rust_recomputation_for_varied_events(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        let mut unicode = new_event(
            "Unicode",
            r#"{"name":"Grüße 🚀 ümlaut \"q\" \\ \u00e9","n":[1,2.50,-0]}"#,
        );
        unicode.metadata.saga_id = Some(String::new());
        unicode.metadata.actor = "åctor ✓".to_owned();
        let mut with_saga = event("saga");
        with_saga.metadata.saga_id = Some("saga-1".to_owned());
        let big = new_event("Big", &format!(r#"{{"blob":"{}"}}"#, "x".repeat(200_000)));
        store
            .append(AppendRequest::new(
                "product",
                "ü/1",
                ExpectedVersion::NoStream,
                vec![unicode, with_saga, event("no saga"), big],
            ))
            .await
            .unwrap();
        // More than one SQLite insert statement and more than the PostgreSQL VALUES form.
        let many = (0..620)
            .map(|index| event(&format!("many {index}")))
            .collect();
        store
            .append(AppendRequest::new(
                "cart",
                "many",
                ExpectedVersion::NoStream,
                many,
            ))
            .await
            .unwrap();
        store
            .append_atomic(vec![
                AppendRequest::new(
                    "cart",
                    "x",
                    ExpectedVersion::NoStream,
                    vec![event("x1"), event("x2")],
                ),
                AppendRequest::new("order", "x", ExpectedVersion::NoStream, vec![event("ox1")]),
                AppendRequest::new(
                    "product",
                    "ü/1",
                    ExpectedVersion::Exact(4),
                    vec![event("p5")],
                ),
            ])
            .await
            .unwrap();
        // Concurrent appends: group commits on both adapters.
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let store = test_store.store.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..5 {
                    store
                        .append(AppendRequest::new(
                            "cart",
                            format!("w{}", writer % 4),
                            ExpectedVersion::Any,
                            vec![event(&format!("w{writer} r{round}")), event("second")],
                        ))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        if store.backend() == Backend::Postgres {
            let pg = eventstore::PgEventStore::connect(&test_store.url)
                .await
                .unwrap();
            let mut transaction = pg.pool().begin().await.unwrap();
            pg.append_in_transaction(
                &mut transaction,
                AppendRequest::new(
                    "order",
                    "x",
                    ExpectedVersion::Exact(1),
                    vec![event("t1"), event("t2")],
                ),
            )
            .await
            .unwrap();
            pg.append_in_transaction(
                &mut transaction,
                AppendRequest::new("cart", "x", ExpectedVersion::Exact(2), vec![event("t3")]),
            )
            .await
            .unwrap();
            transaction.commit().await.unwrap();
        }
        // The log returns only what no transaction in flight anywhere in the cluster can still
        // precede (PostgreSQL's horizon is cluster-wide): read both until they hold every stored
        // row, which they do once other tests' transactions have moved on.
        let stored = stored_rows(test_store).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let (chain, events) = loop {
            let mut chain = Vec::new();
            let mut after = 0;
            loop {
                let rows = store.read_chain(after, 77).await.unwrap();
                let Some(last) = rows.last() else { break };
                after = last.position;
                chain.extend(rows);
            }
            wait_until_readable(store, after).await;
            let events = read_everything(store, 100).await;
            let complete = events.len() == stored && chain.len() == stored;
            if complete || tokio::time::Instant::now() > deadline {
                break (chain, events);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(events.len(), stored);
        assert_eq!(chain.len(), stored);
        let mut previous: HashMap<(String, String), [u8; 32]> = HashMap::new();
        for (event, row) in events.iter().zip(&chain) {
            assert_eq!(event.position, row.position);
            let key = (event.stream_type.clone(), event.stream_id.clone());
            let before = previous.get(&key).copied().unwrap_or(ZERO_HASH);
            let recomputed = audit::recorded_event_hash(&before, event);
            assert_eq!(
                Some(recomputed.to_vec()),
                row.hash,
                "{}/{} version {}",
                event.stream_type,
                event.stream_id,
                event.stream_version
            );
            // The raw columns give the same bytes as the decoded event.
            assert_eq!(audit::event_hash(&before, &row.canonical()), recomputed);
            previous.insert(key, recomputed);
        }
        let report = verify(store).await;
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.events, events.len() as u64);
    }

    pub async fn an_untouched_store_verifies_clean_and_the_expected_head_is_compared(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        let empty = verify(store).await;
        assert!(empty.is_clean());
        assert_eq!(empty.head.hash_hex, audit::to_hex(&ZERO_HASH));
        fixture(store).await;
        let report = verify(store).await;
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.events, 14);
        assert_eq!(report.streams, 4);
        assert_eq!(report.checkpoints, 2);
        let head = audit::head(store).await.unwrap();
        assert_eq!(report.head, head);
        assert_eq!(head.events, 14);
        let clean = audit::verify(store, Scope::All, Some(&head.hash_hex.to_uppercase()))
            .await
            .unwrap();
        assert!(clean.is_clean(), "{clean:?}");
        let sealed = audit::seal_head(store, 6).await.unwrap();
        assert_eq!(sealed, head);
        // A recorded head keeps verifying while later events extend the chain.
        append(store, "cart", "c", &["c3"]).await;
        let moved = audit::verify(store, Scope::All, Some(&head.hash_hex))
            .await
            .unwrap();
        assert!(moved.is_clean(), "{moved:?}");
        assert_eq!(moved.expected_head_at, Some((head.position, 14)));
        assert_eq!(moved.events, 15);
        // A hash the history never had fails, naming the head it has.
        let other = audit::to_hex(&[7; 32]);
        let unknown = audit::verify(store, Scope::All, Some(&other))
            .await
            .unwrap();
        let problem = unknown.first_problem.expect("a head the history never had");
        assert!(
            problem.reason.contains("never had the expected head"),
            "{problem}"
        );
        assert_eq!(unknown.expected_head_at, None);
        // The empty log's head verifies against any history.
        let empty_head = audit::to_hex(&ZERO_HASH);
        let from_empty = audit::verify(store, Scope::All, Some(&empty_head))
            .await
            .unwrap();
        assert_eq!(from_empty.expected_head_at, Some((0, 0)));
        // It needs the whole log.
        let scoped = Scope::Stream {
            stream_type: "cart".to_owned(),
            stream_id: "c".to_owned(),
        };
        assert!(
            audit::verify(store, scoped, Some(&head.hash_hex))
                .await
                .is_err()
        );
        assert!(verify(store).await.is_clean());
    }

    pub async fn a_recorded_head_fails_once_an_event_before_it_changed(test_store: &TestStore) {
        let store = &*test_store.store;
        fixture(store).await;
        let head = audit::head(store).await.unwrap();
        append(store, "cart", "c", &["c3"]).await;
        let target = position(store, "cart", "a", 2).await;
        sql(
            test_store,
            &format!(
                "UPDATE events SET payload = replace(payload, 'a2', 'a3') WHERE position = {target}"
            ),
        )
        .await;
        let report = audit::verify(store, Scope::All, Some(&head.hash_hex))
            .await
            .unwrap();
        // The rolling hash is folded from the stored hashes, which the change left alone; the
        // recomputation of the changed event is what fails, before the recorded head.
        let problem = report.first_problem.expect("tampered");
        assert_eq!(problem.position, target);
        assert!(problem.position <= head.position);
    }

    pub async fn a_changed_payload_byte_is_named(test_store: &TestStore) {
        let store = &*test_store.store;
        fixture(store).await;
        let target = position(store, "cart", "a", 2).await;
        sql(
            test_store,
            &format!(
                "UPDATE events SET payload = replace(payload, 'a2', 'a3') WHERE position = {target}"
            ),
        )
        .await;
        assert_problem(
            &verify(store).await,
            target,
            "cart/a",
            2,
            "payload or columns changed",
        );
    }

    pub async fn a_deleted_middle_event_is_named(test_store: &TestStore) {
        let store = &*test_store.store;
        fixture(store).await;
        let deleted = position(store, "cart", "a", 3).await;
        let next = position(store, "cart", "a", 4).await;
        sql(
            test_store,
            &format!("DELETE FROM events WHERE position = {deleted}"),
        )
        .await;
        assert_problem(&verify(store).await, next, "cart/a", 4, "version 3 missing");
    }

    pub async fn a_deleted_last_event_of_a_stream_in_a_sealed_block_is_named(
        test_store: &TestStore,
    ) {
        let store = &*test_store.store;
        fixture(store).await;
        let deleted = position(store, "cart", "b", 3).await;
        sql(
            test_store,
            &format!("DELETE FROM events WHERE position = {deleted}"),
        )
        .await;
        let report = verify(store).await;
        assert_problem(&report, deleted, "cart/b", 3, "version 3 missing");
    }

    pub async fn swapped_payloads_are_named(test_store: &TestStore) {
        let store = &*test_store.store;
        fixture(store).await;
        let first = position(store, "cart", "a", 1).await;
        let second = position(store, "order", "o", 2).await;
        sql(
            test_store,
            &format!(
                "UPDATE events SET payload = CASE position WHEN {first} THEN \
                 (SELECT payload FROM events WHERE position = {second}) ELSE \
                 (SELECT payload FROM events WHERE position = {first}) END \
                 WHERE position IN ({first}, {second})"
            ),
        )
        .await;
        assert_problem(
            &verify(store).await,
            first,
            "cart/a",
            1,
            "payload or columns changed",
        );
    }

    pub async fn swapped_versions_are_named(test_store: &TestStore) {
        let store = &*test_store.store;
        fixture(store).await;
        let second = position(store, "cart", "a", 2).await;
        let third = position(store, "cart", "a", 3).await;
        sql(
            test_store,
            &format!(
                "UPDATE events SET stream_version = 1000 WHERE position = {second}; \
                 UPDATE events SET stream_version = 2 WHERE position = {third}; \
                 UPDATE events SET stream_version = 3 WHERE position = {second};"
            ),
        )
        .await;
        assert_problem(&verify(store).await, second, "cart/a", 3, "swapped");
    }

    pub async fn a_forged_event_with_a_garbage_hash_is_named(test_store: &TestStore) {
        let store = &*test_store.store;
        fixture(store).await;
        let forged = store.head_position().await.unwrap() + 1;
        let backend = store.backend();
        sql(
            test_store,
            &format!(
                "INSERT INTO events (position, event_id, stream_type, stream_id, stream_version, \
                 event_type, schema_version, occurred_at, correlation_id, causation_id, saga_id, \
                 actor, source, payload) VALUES ({forged}, '{}', 'cart', 'a', 6, 'Numbered', 1, \
                 '2024-01-01T00:00:00.000000Z', 'c', 'c', NULL, 'forger', 'sql', '{{}}'); \
                 UPDATE events SET hash = {} WHERE position = {forged};",
                uuid::Uuid::new_v4(),
                bytes_literal(backend, &[0xab; 32])
            ),
        )
        .await;
        assert_problem(
            &verify(store).await,
            forged,
            "cart/a",
            6,
            "payload or columns changed",
        );
    }

    pub async fn a_replaced_event_with_a_correct_hash_breaks_the_next_link(test_store: &TestStore) {
        let store = &*test_store.store;
        fixture(store).await;
        let third = position(store, "cart", "a", 3).await;
        let fourth = position(store, "cart", "a", 4).await;
        let fifth = position(store, "cart", "a", 5).await;
        let previous = store.read_chain(third - 1, 1).await.unwrap().remove(0);
        let mut row = store.read_chain(fourth - 1, 1).await.unwrap().remove(0);
        assert_eq!(row.position, fourth);
        row.payload = r#"{"label":"forged"}"#.to_owned();
        let hash = audit::event_hash(&previous.stored_hash(), &row.canonical());
        sql(
            test_store,
            &format!(
                "UPDATE events SET payload = '{}', hash = {} WHERE position = {fourth}",
                row.payload,
                bytes_literal(store.backend(), &hash)
            ),
        )
        .await;
        assert_problem(
            &verify(store).await,
            fifth,
            "cart/a",
            5,
            "hash does not chain to version 4",
        );
    }

    pub async fn a_forged_event_inside_a_sealed_block_is_named(test_store: &TestStore) {
        let store = &*test_store.store;
        fixture(store).await;
        let backend = store.backend();
        // PostgreSQL positions leave room inside a transaction's range; SQLite's are dense, so
        // there the forger moves the sealed last event of cart/b to make room.
        let (forged, stream_version) = match backend {
            Backend::Postgres => (position(store, "cart", "a", 1).await + 7, 1),
            Backend::Sqlite => (position(store, "cart", "b", 3).await, 3),
        };
        if backend == Backend::Sqlite {
            sql(
                test_store,
                &format!("DELETE FROM events WHERE position = {forged}"),
            )
            .await;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let stream_id = if backend == Backend::Postgres {
            "forged"
        } else {
            "b"
        };
        let mut row = store.read_chain(0, 1).await.unwrap().remove(0);
        row.position = forged;
        row.event_id = id.clone();
        row.stream_id = stream_id.to_owned();
        row.stream_version = stream_version;
        row.payload = r#"{"label":"forged"}"#.to_owned();
        let previous = if stream_version == 1 {
            ZERO_HASH
        } else {
            let before = position(store, "cart", "b", 2).await;
            store
                .read_chain(before - 1, 1)
                .await
                .unwrap()
                .remove(0)
                .stored_hash()
        };
        let hash = audit::event_hash(&previous, &row.canonical());
        sql(
            test_store,
            &format!(
                "INSERT INTO events (position, event_id, stream_type, stream_id, stream_version, \
                 event_type, schema_version, occurred_at, correlation_id, causation_id, saga_id, \
                 actor, source, payload) VALUES ({forged}, '{id}', 'cart', '{stream_id}', \
                 {stream_version}, '{}', {}, '{}', '{}', '{}', NULL, '{}', '{}', '{}'); \
                 UPDATE events SET hash = {} WHERE position = {forged};",
                row.event_type,
                row.schema_version,
                row.occurred_at,
                row.correlation_id,
                row.causation_id,
                row.actor,
                row.source,
                row.payload,
                bytes_literal(backend, &hash)
            ),
        )
        .await;
        // The chain itself holds: only the seal tells.
        let stored = store
            .read_stream_chain("cart", stream_id, stream_version - 1, 1)
            .await
            .unwrap();
        assert_eq!(stored[0].hash, Some(hash.to_vec()));
        let report = verify(store).await;
        let reason = if backend == Backend::Postgres {
            "not in a sealed checkpoint"
        } else {
            "sealed in a checkpoint"
        };
        assert_problem(
            &report,
            forged,
            &format!("cart/{stream_id}"),
            stream_version,
            reason,
        );
    }

    pub async fn one_stream_is_verified_alone(test_store: &TestStore) {
        let store = &*test_store.store;
        fixture(store).await;
        let scope = |id: &str| Scope::Stream {
            stream_type: "cart".to_owned(),
            stream_id: id.to_owned(),
        };
        let report = audit::verify(store, scope("a"), None).await.unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.events, 5);
        let target = position(store, "cart", "a", 4).await;
        sql(
            test_store,
            &format!("UPDATE events SET actor = 'someone else' WHERE position = {target}"),
        )
        .await;
        assert_problem(
            &audit::verify(store, scope("a"), None).await.unwrap(),
            target,
            "cart/a",
            4,
            "payload or columns changed",
        );
        assert!(
            audit::verify(store, scope("b"), None)
                .await
                .unwrap()
                .is_clean()
        );
    }
}

/// Two processes' stores on one SQLite file take turns appending to the same streams. Each
/// store's writer remembers the heads it appended; the other's commits must make it read them
/// again, or it would chain a hash to a version that is no longer the stream's head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlite_stores_on_one_file_keep_the_chains_intact() {
    use eventstore::audit::{self, Scope};
    use eventstore::{AppendRequest, EventStore, ExpectedVersion, SqliteEventStore};

    let test_store = eventstore::testing::sqlite_store().await;
    let first = test_store.store.clone();
    let second = SqliteEventStore::open(&test_store.url).await.unwrap();
    for round in 0..6_u64 {
        let (this, other): (&dyn EventStore, &dyn EventStore) = if round % 2 == 0 {
            (&*first, &second)
        } else {
            (&second, &*first)
        };
        // An `Any` append after the other store's: it must land on the version after it.
        let appended = this
            .append(AppendRequest::new(
                "cart",
                "shared",
                ExpectedVersion::Any,
                vec![common::new_event(
                    "Numbered",
                    &format!(r#"{{"round":{round}}}"#),
                )],
            ))
            .await
            .unwrap();
        assert_eq!(appended.stream_version, round + 1);
        // An exact append with a version only the other store's commit makes true.
        let appended = other
            .append(AppendRequest::new(
                "order",
                "shared",
                ExpectedVersion::Exact(round),
                vec![common::new_event(
                    "Numbered",
                    &format!(r#"{{"order":{round}}}"#),
                )],
            ))
            .await
            .unwrap();
        assert_eq!(appended.stream_version, round + 1);
        // And a stale exact version is still refused.
        let refused = this
            .append(AppendRequest::new(
                "order",
                "shared",
                ExpectedVersion::Exact(round),
                vec![common::new_event("Numbered", r#"{"stale":true}"#)],
            ))
            .await;
        assert!(
            refused.as_ref().is_err_and(|error| error.is_conflict()),
            "{refused:?}"
        );
    }
    // A new stream the other store made: a retry of its append is a duplicate, another
    // append that expects no stream a conflict (the writer takes a new stream at its word and
    // lets the insert's guard check it).
    let created = AppendRequest::new(
        "cart",
        "created-by-the-second",
        ExpectedVersion::NoStream,
        vec![common::new_event("Numbered", r#"{"new":true}"#)],
    );
    let appended = second.append(created.clone()).await.unwrap();
    assert!(!appended.duplicate);
    let retried = first.append(created).await.unwrap();
    assert!(retried.duplicate, "{retried:?}");
    assert_eq!(retried.positions, appended.positions);
    let refused = first
        .append(AppendRequest::new(
            "cart",
            "created-by-the-second",
            ExpectedVersion::NoStream,
            vec![common::new_event("Numbered", r#"{"new":false}"#)],
        ))
        .await;
    assert!(
        refused.as_ref().is_err_and(|error| error.is_conflict()),
        "{refused:?}"
    );
    let report = audit::verify(&*first, Scope::All, None).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.events, 13);
}

/// On PostgreSQL the append statements hash their rows themselves (up to 32 events of an append
/// per stream); the trigger only fills rows that arrive without a hash. With the trigger
/// disabled, every row of lone, multi-event, grouped and in-transaction appends must still carry
/// its correct hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_append_statements_hash_their_rows_without_the_trigger() {
    use eventstore::audit::{self, Scope};
    use eventstore::{AppendRequest, ExpectedVersion};

    let Some(test_store) = eventstore::testing::postgres_store(
        "tamper::postgres_append_statements_hash_their_rows_without_the_trigger",
    )
    .await
    else {
        return;
    };
    let pool = sqlx::PgPool::connect(&test_store.url).await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_hash")
        .execute(&pool)
        .await
        .unwrap();
    let store = test_store.store.clone();
    // Lone statements: one event, then several (VALUES), then 32 (the most the chain covers).
    store
        .append(AppendRequest::new(
            "cart",
            "a",
            ExpectedVersion::NoStream,
            vec![cases::event("a1")],
        ))
        .await
        .unwrap();
    store
        .append(AppendRequest::new(
            "cart",
            "a",
            ExpectedVersion::Exact(1),
            (2..=6).map(|n| cases::event(&format!("a{n}"))).collect(),
        ))
        .await
        .unwrap();
    store
        .append(AppendRequest::new(
            "cart",
            "b",
            ExpectedVersion::NoStream,
            (1..=32).map(|n| cases::event(&format!("b{n}"))).collect(),
        ))
        .await
        .unwrap();
    // Several requests in one transaction (the in-transaction statement).
    store
        .append_atomic(vec![
            AppendRequest::new(
                "order",
                "o",
                ExpectedVersion::NoStream,
                (1..=3).map(|n| cases::event(&format!("o{n}"))).collect(),
            ),
            AppendRequest::new(
                "cart",
                "a",
                ExpectedVersion::Exact(6),
                (7..=9).map(|n| cases::event(&format!("a{n}"))).collect(),
            ),
        ])
        .await
        .unwrap();
    // Concurrent appends: group commits of single- and multi-event requests.
    let mut tasks = Vec::new();
    for writer in 0..8_usize {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..4_usize {
                let n_events = 1 + (writer + round) % 3;
                let events = (0..n_events)
                    .map(|n| {
                        common::new_event(
                            "Numbered",
                            &format!(r#"{{"w":{writer},"r":{round},"n":{n}}}"#),
                        )
                    })
                    .collect();
                store
                    .append(AppendRequest::new(
                        "cart",
                        format!("w{writer}"),
                        ExpectedVersion::Any,
                        events,
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let missing: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE hash IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        missing, 0,
        "rows stored without a hash while the trigger was disabled"
    );
    // The log is read below PostgreSQL's horizon, which other tests' transactions hold back.
    let last: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    common::wait_until_readable(&*store, u64::try_from(last).unwrap()).await;
    let report = audit::verify(&*store, Scope::All, None).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(report.events, u64::try_from(stored).unwrap());
    pool.close().await;
}
