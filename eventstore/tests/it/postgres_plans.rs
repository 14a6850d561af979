//! PostgreSQL only: the batch statements (several stream reads in one, several appends in one)
//! keep the generic plan PostgreSQL caches for them, instead of being planned anew for every
//! batch, which cost more than running them (see the migration
//! `20250101000600_generic_batch_plans.sql`).

use eventstore::testing::TestDatabase;
use eventstore::{EventStore, ExpectedVersion, PgEventStore};
use futures::future::join_all;
use sqlx::postgres::PgPoolOptions;

use crate::common::{numbered_events, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_reads_and_appends_keep_their_generic_plans() {
    let Some(database) =
        TestDatabase::create("postgres_plans::batched_reads_and_appends_keep_their_generic_plans")
            .await
    else {
        return;
    };
    // One connection: every statement is prepared on it, where this test can look at its plans.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database.url())
        .await
        .unwrap();
    let store = PgEventStore::from_pool(pool.clone());
    store.migrate().await.unwrap();
    for round in 0..20 {
        // Batches of every size from 2 to 7: a custom plan would know each size.
        let n_streams = 2 + round % 6;
        let stream = |index: usize| format!("r{round}-s{index}");
        let appends = (0..n_streams).map(|index| {
            let events = numbered_events(&stream(index), 1);
            store.append(request(
                "plan",
                &stream(index),
                ExpectedVersion::NoStream,
                events,
            ))
        });
        for appended in join_all(appends).await {
            appended.unwrap();
        }
        let reads = (0..n_streams).map(|index| {
            let store = store.clone();
            let stream_id = stream(index);
            async move { store.read_stream("plan", &stream_id, 0, 100).await }
        });
        for read in join_all(reads).await {
            assert_eq!(read.unwrap().len(), 1);
        }
    }
    let plans: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE '%request_number%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let find = |what: &str| {
        plans
            .iter()
            .find(|(statement, _, _)| statement.contains(what))
            .unwrap_or_else(|| panic!("no prepared statement with {what:?}: {plans:?}"))
    };
    for what in ["r.request_number FROM unnest", "INSERT INTO events"] {
        let (_, generic, custom) = find(what);
        assert!(
            *custom <= 5 && *generic >= 5,
            "{what}: {custom} custom plans, {generic} generic ones"
        );
    }
}
