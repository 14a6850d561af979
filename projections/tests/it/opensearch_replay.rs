//! Rebuilding the OpenSearch index beside the one in service and swapping it in
//! (`OpenSearchProjection::rebuilding`, `opensearch::swap_in_rebuilt`), against a scripted HTTP
//! server that checks every request (method, path, query string, content type, exact body) and
//! answers with bodies shaped as the OpenSearch documentation shows them, as
//! `tests/opensearch.rs` does (both use `support/opensearch_script.rs`); the read-model database
//! is SQLite, and PostgreSQL when `DATABASE_URL` names one. When `OPENSEARCH_URL` (or
//! `ELASTICSEARCH_URL`) names a cluster, the same rebuild runs against it.
//!
//! The scripted server can act while a request is in flight: the swap runs while a serving
//! projection's bulk request of a batch it read before the swap is being answered, so that batch
//! meets the swap at its worst moment.

use std::sync::{Arc, Mutex};

use axum::http::Method;
use eventstore::testing::TestDatabase;
use futures::future::BoxFuture;
use projections::readdb::ReadDb;
use projections::rebuild::{self, ReplayRun, Swap};
use projections::search::opensearch::{
    self, DEFAULT_ALIAS, OpenSearchIndex, OpenSearchProjection, REBUILT_TABLES,
};
use projections::search::{SearchIndex, SearchQuery};
use projections::{Feed, Projection, ProjectionError};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use crate::support::opensearch_script as script;

use script::{
    ACKNOWLEDGED, Exchange, LAMP, SHOE, action, alias_answer, bulk_all_indexed, error_answer,
    expected_definition, index_created, lamp, lamp_id, lamp_source, live_url, run_live_scenario,
    serve, shoe, shoe_id, shoe_source, view, with_popularity,
};

// ---------------------------------------------------------------------------------------------
// Rebuilding and swapping in.
// ---------------------------------------------------------------------------------------------

const OLD: &str = "mercato-products-000001";
const NEW: &str = "mercato-products-000002";
/// A bulk request into a concrete index (no `require_alias`).
const BULK: &str = "/_bulk?refresh=wait_for";

/// `GET /_alias/mercato-products` answering that it points at `indices`.
fn get_alias(indices: &[&str]) -> Exchange {
    let pairs: Vec<(&str, &[&str])> = indices
        .iter()
        .map(|index| (*index, &[DEFAULT_ALIAS][..]))
        .collect();
    Exchange::new(
        Method::GET,
        "/_alias/mercato-products",
        200,
        alias_answer(&pairs),
    )
}

/// The one request that moves the alias from `from` to `to`.
fn move_alias(from: &str, to: &str, status: u16, answer: String) -> Exchange {
    Exchange::new(Method::POST, "/_aliases", status, answer).json(json!({
        "actions": [
            { "remove": { "index": from, "alias": DEFAULT_ALIAS, "must_exist": true } },
            { "add": { "index": to, "alias": DEFAULT_ALIAS } }
        ]
    }))
}

/// A bulk request of `lines` answered as all indexed.
fn bulk(lines: Vec<String>, ids: &[String]) -> Exchange {
    let items: Vec<(&str, u16, &str)> =
        ids.iter().map(|id| (id.as_str(), 201, "created")).collect();
    Exchange::new(Method::POST, BULK, 200, bulk_all_indexed(&items)).ndjson(lines)
}

/// The read-model database of a test: SQLite in a temporary directory, or a PostgreSQL
/// database of its own.
struct ReadModels {
    db: ReadDb,
    url: String,
    _directory: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

async fn sqlite() -> ReadModels {
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("read.db").display());
    ReadModels {
        db: ReadDb::open(&url).await.unwrap(),
        url,
        _directory: Some(directory),
        _database: None,
    }
}

async fn postgres(test_name: &str) -> Option<ReadModels> {
    let database = TestDatabase::create(test_name).await?;
    let url = database.url().to_owned();
    Some(ReadModels {
        db: ReadDb::open(&url).await.unwrap(),
        url,
        _directory: None,
        _database: Some(database),
    })
}

/// What `mercato replay` does before it reads the log: a new index, the run recorded in the
/// shadow, the shadow's record naming the new index; and the projection that fills it.
async fn start_rebuild(index: &OpenSearchIndex, shadow: &ReadDb) -> OpenSearchProjection {
    let created = index.rebuild_into_new_index().await.unwrap();
    let run = ReplayRun {
        projection: OpenSearchIndex::NAME.to_owned(),
        from_position: 0,
        generation: Some(created.clone()),
        started_at: "2026-01-01T00:00:00Z".to_owned(),
    };
    rebuild::start_run(shadow, &run, REBUILT_TABLES)
        .await
        .unwrap();
    opensearch::record_in_service(shadow, DEFAULT_ALIAS, &created)
        .await
        .unwrap();
    OpenSearchProjection::rebuilding(index.clone(), &created, shadow.clone())
}

async fn popularity(db: &ReadDb) -> Vec<(String, i64)> {
    sqlx::query("SELECT product_id, points FROM rm_search_popularity ORDER BY product_id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1)))
        .collect()
}

/// What `swap_in_rebuilt` answers: the outcome, and the index the alias left.
type SwapOutcome = (Swap, Option<String>);

/// A serving projection's batch, read before the swap, is in flight (its bulk request) while
/// the rebuilt index is swapped in: it went to the old index, is refused at its commit, deletes
/// the old index, and the next batch goes to the rebuilt index with the rebuilt popularity.
async fn a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index(read: ReadModels) {
    let live_db = read.db.clone();
    let shadow = rebuild::open_shadow(&live_db, &read.url).await.unwrap();
    let index_cell: Arc<std::sync::OnceLock<OpenSearchIndex>> = Arc::default();
    let swapped: Arc<Mutex<Option<SwapOutcome>>> = Arc::default();
    let swap = {
        let (index_cell, swapped) = (index_cell.clone(), swapped.clone());
        let (live_db, shadow, url) = (live_db.clone(), shadow.clone(), read.url.clone());
        move || -> BoxFuture<'static, ()> {
            Box::pin(async move {
                let index = index_cell.get().expect("the index").clone();
                let outcome =
                    opensearch::swap_in_rebuilt(&index, &live_db, &url, &shadow, NEW, 4).await;
                *swapped.lock().unwrap() = Some(outcome.expect("the swap"));
            })
        }
    };
    let (url, script) = serve(
        vec![
            // The first batch in service records the index the alias points at, and writes it.
            get_alias(&[OLD]),
            bulk(
                vec![
                    action(OLD, &shoe_id(), 1),
                    with_popularity(shoe_source(1, 8999, "89.99", 1), 1),
                ],
                &[shoe_id()],
            ),
            // The rebuild: the next index, filled from the log.
            Exchange::new(
                Method::GET,
                "/mercato-products-*/_alias",
                200,
                alias_answer(&[(OLD, &[DEFAULT_ALIAS])]),
            ),
            Exchange::new(Method::PUT, format!("/{NEW}"), 200, index_created(NEW))
                .json(expected_definition()),
            bulk(
                vec![
                    action(NEW, &shoe_id(), 1),
                    with_popularity(shoe_source(1, 8999, "89.99", 1), 1),
                    action(NEW, &lamp_id(), 1),
                    with_popularity(lamp_source(1, 3), 1),
                ],
                &[shoe_id(), lamp_id()],
            ),
            // A serving batch read before the swap goes to the index it read as in service;
            // the swap happens while it is in flight.
            bulk(
                vec![
                    action(OLD, &lamp_id(), 1),
                    with_popularity(lamp_source(1, 3), 1),
                ],
                &[lamp_id()],
            )
            .during(swap),
            get_alias(&[OLD]),
            move_alias(OLD, NEW, 200, ACKNOWLEDGED.to_owned()),
            // Refused at its commit, the batch deletes the index it wrote to, now out of service.
            get_alias(&[NEW]),
            Exchange::new(Method::DELETE, format!("/{OLD}"), 200, ACKNOWLEDGED),
            // The next batch checks the alias once and writes the rebuilt index, with the
            // rebuilt popularity (not the broken one).
            get_alias(&[NEW]),
            bulk(
                vec![
                    action(NEW, &shoe_id(), 2),
                    with_popularity(shoe_source(2, 7990, "79.9", 5), 2),
                ],
                &[shoe_id()],
            ),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    index_cell.set(index.clone()).unwrap();
    let live = OpenSearchProjection::new(index.clone(), live_db.clone(), None);

    live.apply(&Feed::Log, &[shoe(1, 8999, 1), view(SHOE, 2)])
        .await
        .unwrap();
    assert_eq!(live.checkpoint(&Feed::Log).await.unwrap(), 2);
    assert_eq!(
        opensearch::index_in_service(&live_db, DEFAULT_ALIAS)
            .await
            .unwrap()
            .as_deref(),
        Some(OLD)
    );
    // A bug broke the popularity in service.
    sqlx::query("UPDATE rm_search_popularity SET points = 1000")
        .execute(live_db.pool())
        .await
        .unwrap();

    let rebuilding = start_rebuild(&index, &shadow).await;
    rebuilding
        .apply(
            &Feed::Log,
            &[shoe(1, 8999, 1), view(SHOE, 2), lamp(1, 3), view(LAMP, 4)],
        )
        .await
        .unwrap();
    assert_eq!(rebuilding.checkpoint(&Feed::Log).await.unwrap(), 4);

    let refused = live
        .apply(&Feed::Log, &[lamp(1, 3), view(LAMP, 4)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ProjectionError::CheckpointMoved {
                stored: 4,
                first: 3,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(
        swapped.lock().unwrap().take(),
        Some((Swap::Swapped, Some(OLD.to_owned())))
    );
    // The runner reads on from the rebuilt checkpoint.
    live.apply(&Feed::Log, &[shoe(2, 7990, 5), view(SHOE, 6)])
        .await
        .unwrap();
    // A batch at or below the checkpoint sends nothing at all.
    let again = live
        .apply(&Feed::Log, &[lamp(1, 3), view(LAMP, 4)])
        .await
        .unwrap_err();
    assert!(
        matches!(again, ProjectionError::CheckpointMoved { stored: 6, .. }),
        "{again:?}"
    );
    script.finish();
    assert_eq!(script.requests(), 12);

    assert_eq!(live.checkpoint(&Feed::Log).await.unwrap(), 6);
    assert_eq!(popularity(&live_db).await, [(shoe_id(), 2), (lamp_id(), 1)]);
    assert_eq!(
        opensearch::index_in_service(&live_db, DEFAULT_ALIAS)
            .await
            .unwrap()
            .as_deref(),
        Some(NEW)
    );
    // Nothing of the rebuild is left in the shadow.
    assert_eq!(
        rebuild::run_of(&shadow, OpenSearchIndex::NAME)
            .await
            .unwrap(),
        None
    );
    assert!(popularity(&shadow).await.is_empty());
}

#[tokio::test]
async fn a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index_on_sqlite() {
    a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index(sqlite().await).await;
}

#[tokio::test]
async fn a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index_on_postgres() {
    let Some(read) = postgres("opensearch_replay_in_flight").await else {
        return;
    };
    a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index(read).await;
}

/// The swap waits while the index in service is ahead of the rebuilt one, and a cluster that
/// refuses to move the alias leaves the read-model database as it was (the rebuild resumes).
async fn a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing(read: ReadModels) {
    let live_db = read.db.clone();
    let shadow = rebuild::open_shadow(&live_db, &read.url).await.unwrap();
    let (url, script) = serve(
        vec![
            get_alias(&[OLD]),
            bulk(
                vec![
                    action(OLD, &shoe_id(), 1),
                    with_popularity(shoe_source(1, 8999, "89.99", 1), 1),
                    action(OLD, &lamp_id(), 1),
                    with_popularity(lamp_source(1, 3), 1),
                ],
                &[shoe_id(), lamp_id()],
            ),
            Exchange::new(
                Method::GET,
                "/mercato-products-*/_alias",
                200,
                alias_answer(&[(OLD, &[DEFAULT_ALIAS])]),
            ),
            Exchange::new(Method::PUT, format!("/{NEW}"), 200, index_created(NEW))
                .json(expected_definition()),
            bulk(
                vec![
                    action(NEW, &shoe_id(), 1),
                    with_popularity(shoe_source(1, 8999, "89.99", 1), 1),
                ],
                &[shoe_id()],
            ),
            // (the swap at position 2 finds the index in service at 4: no request)
            bulk(
                vec![
                    action(NEW, &lamp_id(), 1),
                    with_popularity(lamp_source(1, 3), 1),
                ],
                &[lamp_id()],
            ),
            get_alias(&[OLD]),
            move_alias(
                OLD,
                NEW,
                404,
                error_answer(
                    "aliases_not_found_exception",
                    "aliases [mercato-products] missing",
                    404,
                ),
            ),
            get_alias(&[OLD]),
            move_alias(OLD, NEW, 200, ACKNOWLEDGED.to_owned()),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let live = OpenSearchProjection::new(index.clone(), live_db.clone(), None);
    live.apply(
        &Feed::Log,
        &[shoe(1, 8999, 1), view(SHOE, 2), lamp(1, 3), view(LAMP, 4)],
    )
    .await
    .unwrap();
    let rebuilding = start_rebuild(&index, &shadow).await;
    rebuilding
        .apply(&Feed::Log, &[shoe(1, 8999, 1), view(SHOE, 2)])
        .await
        .unwrap();
    let swap = |checkpoint| {
        opensearch::swap_in_rebuilt(&index, &live_db, &read.url, &shadow, NEW, checkpoint)
    };
    assert_eq!(swap(2).await.unwrap(), (Swap::Behind(4), None));

    rebuilding
        .apply(&Feed::Log, &[lamp(1, 3), view(LAMP, 4)])
        .await
        .unwrap();
    let error = swap(4).await.unwrap_err().to_string();
    assert!(error.contains("aliases_not_found_exception"), "{error}");
    // Nothing changed: the index, checkpoint and popularity in service, the rebuild.
    assert_eq!(
        opensearch::index_in_service(&live_db, DEFAULT_ALIAS)
            .await
            .unwrap()
            .as_deref(),
        Some(OLD)
    );
    assert_eq!(live.checkpoint(&Feed::Log).await.unwrap(), 4);
    assert_eq!(popularity(&live_db).await, [(shoe_id(), 1), (lamp_id(), 1)]);
    assert!(
        rebuild::run_of(&shadow, OpenSearchIndex::NAME)
            .await
            .unwrap()
            .is_some()
    );

    assert_eq!(
        swap(4).await.unwrap(),
        (Swap::Swapped, Some(OLD.to_owned()))
    );
    assert_eq!(
        opensearch::index_in_service(&live_db, DEFAULT_ALIAS)
            .await
            .unwrap()
            .as_deref(),
        Some(NEW)
    );
    script.finish();
}

#[tokio::test]
async fn a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing_on_sqlite() {
    a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing(sqlite().await).await;
}

#[tokio::test]
async fn a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing_on_postgres() {
    let Some(read) = postgres("opensearch_replay_refused").await else {
        return;
    };
    a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing(read).await;
}

#[tokio::test]
async fn the_indices_of_the_alias_are_listed_with_the_one_in_service() {
    let (url, script) = serve(
        vec![Exchange::new(
            Method::GET,
            "/mercato-products-*/_alias",
            200,
            alias_answer(&[
                (OLD, &[]),
                (NEW, &[DEFAULT_ALIAS]),
                ("mercato-products-eu-000009", &["mercato-products-eu"]),
            ]),
        )],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let indices = index.indices().await.unwrap();
    assert_eq!(
        indices.into_iter().collect::<Vec<_>>(),
        [(OLD.to_owned(), false), (NEW.to_owned(), true)]
    );
    script.finish();
}

// ---------------------------------------------------------------------------------------------
// Against a real cluster, when one is configured.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn live_rebuild_is_swapped_in_and_a_batch_read_before_it_is_refused() {
    let Some(url) = live_url() else {
        // No OpenSearch cluster runs on CI machines: this test runs where one is configured.
        eventstore::testing::skip(
            "live_rebuild_is_swapped_in_and_a_batch_read_before_it_is_refused",
            "OPENSEARCH_URL is not set (the live OpenSearch/Elasticsearch test)",
        );
        return;
    };
    let alias = format!("mercato-test-{}", Uuid::new_v4().simple());
    let index = OpenSearchIndex::new(&url, &alias)
        .unwrap()
        .with_refresh(opensearch::Refresh::Immediate);
    run_live_scenario(&url, &index, live_scenario(index.clone())).await;
}

async fn live_scenario(index: OpenSearchIndex) {
    let read = sqlite().await;
    let live_db = read.db.clone();
    let shadow = rebuild::open_shadow(&live_db, &read.url).await.unwrap();
    let first = index.ensure_index().await.unwrap();
    let live = OpenSearchProjection::new(index.clone(), live_db.clone(), None);
    live.apply(&Feed::Log, &[shoe(1, 8999, 1), view(SHOE, 2)])
        .await
        .unwrap();
    sqlx::query("UPDATE rm_search_popularity SET points = 1000")
        .execute(live_db.pool())
        .await
        .unwrap();

    let rebuilding = start_rebuild(&index, &shadow).await;
    let history = [shoe(1, 8999, 1), view(SHOE, 2), lamp(1, 3), view(LAMP, 4)];
    rebuilding.apply(&Feed::Log, &history).await.unwrap();
    let rebuilt = index.index_name(2);
    let (swap, left) =
        opensearch::swap_in_rebuilt(&index, &live_db, &read.url, &shadow, &rebuilt, 4)
            .await
            .unwrap();
    assert_eq!(swap, Swap::Swapped);
    assert_eq!(left.as_deref(), Some(first.as_str()));
    index.delete_index(&first).await.unwrap();

    // A batch read before the swap sends nothing; the next one writes the rebuilt index.
    let refused = live
        .apply(&Feed::Log, &[lamp(1, 3), view(LAMP, 4)])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ProjectionError::CheckpointMoved { stored: 4, .. }),
        "{refused:?}"
    );
    live.apply(&Feed::Log, &[shoe(2, 7990, 5), view(SHOE, 6)])
        .await
        .unwrap();
    let everything = index
        .search(&SearchQuery {
            limit: 10,
            ..SearchQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(everything.total, 2, "{everything:?}");
    let shoe_hit = everything
        .hits
        .iter()
        .find(|hit| hit.product_id == shoe_id())
        .expect("the shoe");
    assert_eq!(shoe_hit.version, 2);
    assert_eq!(
        shoe_hit.popularity, 2,
        "the rebuilt popularity, not the broken one"
    );
    assert_eq!(index.current_indices().await.unwrap(), [rebuilt]);
}
