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
    let batch_statements = ["r.request_number FROM unnest", "INSERT INTO events"];
    // Rounds until each batch statement ran at least ten times: how many appends the committer
    // puts in one INSERT depends on timing (under load a round may become one batch), so a fixed
    // number of rounds could run the INSERT fewer times than PostgreSQL's five custom plans
    // plus five generic ones.
    let mut plans = Vec::new();
    for round in 0..200 {
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
        plans = prepared_plans(&pool).await;
        let runs = |what: &str| {
            plans
                .iter()
                .filter(|(statement, _, _)| statement.contains(what))
                .map(|(_, generic, custom)| generic + custom)
                .sum::<i64>()
        };
        if batch_statements.iter().all(|what| runs(what) >= 10) {
            break;
        }
    }
    let find = |what: &str| {
        plans
            .iter()
            .find(|(statement, _, _)| statement.contains(what))
            .unwrap_or_else(|| panic!("no prepared statement with {what:?}: {plans:?}"))
    };
    for what in batch_statements {
        let (_, generic, custom) = find(what);
        assert!(
            *custom <= 5 && *generic >= 5,
            "{what}: {custom} custom plans, {generic} generic ones"
        );
    }
}

/// The statements prepared on the test's one connection that name `request_number` (the batch
/// reads and appends), with how many generic and custom plans each was executed with.
async fn prepared_plans(pool: &sqlx::PgPool) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE '%request_number%'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}
