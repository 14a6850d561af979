//! `/ready` tells the truth about the read models a process answers from, and a process whose
//! read model is not caught up does not share its answers through the cache.

use std::time::Duration;

use eventstore::{AppendRequest, EventMetadata, ExpectedVersion, NewEvent};
use reqwest::StatusCode;
use serde_json::Value;
use server::testing::{Setup, TestApp, TestData, eventually};

async fn ready(server: &TestApp) -> (StatusCode, Value) {
    let response = server.get("/ready").await;
    let status = response.status();
    (status, response.json().await.expect("json"))
}

/// A query-api on a data directory whose search index never saw the log (a wrong
/// `--data-dir`): `/ready` says search is behind, and its empty answers do not reach the shared
/// Redis cache, from which a healthy process would serve them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_api_behind_the_log_is_not_ready_and_does_not_poison_the_shared_cache() {
    let Some(data) = TestData::new(Setup::PostgresRedis, "ready_wrong_dir").await else {
        return;
    };
    let healthy = TestApp::start(&data).await;
    let word = format!("zq{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut last = 0;
    for n in 0..3 {
        last = healthy
            .create_product(&format!("{word} lamp {n}"), "", 10.0, 5, "Lamps")
            .await
            .1;
    }
    let search = format!("/search?q={word}");
    let total = |body: Value| body["total"].as_u64().expect("total");
    let body: Value = healthy.get_at(&search, last).await.json().await.unwrap();
    assert_eq!(total(body), 3);
    let (status, body) = ready(&healthy).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The events become older than the readiness bound.
    tokio::time::sleep(projections::READY_LAG + Duration::from_secs(1)).await;
    let wrong = tempfile::tempdir().unwrap();
    projections::search::TantivySearch::open(&wrong.path().join("search"), None)
        .expect("an empty search index");
    let mut config = data.config("query-api", &[]);
    config.data_dir = wrong.path().to_owned();
    let stray = TestApp::start_config(&config).await;
    // Another read model may be the first to report itself behind while the process starts:
    // wait for the search index's own verdict.
    let not_ready = eventually(Duration::from_secs(10), || async {
        let (status, body) = ready(&stray).await;
        let search_behind = body["projections"]["search"]["ready"]
            .as_str()
            .is_some_and(|verdict| verdict.contains("behind"));
        (status == StatusCode::SERVICE_UNAVAILABLE && search_behind).then_some(body)
    })
    .await;
    let Some((body, _)) = not_ready else {
        let (_, body) = ready(&stray).await;
        panic!("a query-api far behind the log did not say its search index is behind: {body}");
    };
    assert_eq!(body["ready"], false);

    // A change invalidates the cached searches; the stray process answers first, from its
    // empty index, and the healthy one must not serve that answer.
    let (_, position) = healthy
        .create_product(&format!("{word} lamp 3"), "", 10.0, 5, "Lamps")
        .await;
    // (Until the healthy process applied the change, the stray one may still be served the
    // shared cache's answer of before: that one is right.)
    let own = eventually(Duration::from_secs(5), || async {
        let body: Value = stray.get(&search).await.json().await.ok()?;
        (total(body) == 0).then_some(())
    })
    .await;
    assert!(
        own.is_some(),
        "the stray process never answered from its empty index"
    );
    let body: Value = healthy
        .get_at(&search, position)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        total(body),
        4,
        "the healthy process served the stray answer"
    );
    stray.stop().await;
    healthy.stop().await;
}

/// An event the products projection cannot apply (here a NUL in a name, which PostgreSQL's text
/// cannot hold, appended below the API that now refuses it) parks it: `/ready` says so, with the
/// event and the database's words, instead of calling the stuck projection caught up. (Parking,
/// the other read models and the retry: `parking.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_that_cannot_apply_an_event_parks_and_makes_the_process_not_ready() {
    let Some(data) = TestData::new(Setup::PostgresRedis, "ready_failing").await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let (status, body) = ready(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let product_id = uuid::Uuid::new_v4();
    let payload = serde_json::json!({
        "product_id": product_id, "name": "Mug\u{0}", "description": "", "price_minor": 450,
        "stock_qty": 3, "category": null, "version": 1,
    });
    let store = data.store().await;
    let appended = store
        .append(AppendRequest::new(
            "product",
            product_id.to_string(),
            ExpectedVersion::NoStream,
            vec![NewEvent {
                event_id: uuid::Uuid::new_v4(),
                event_type: "ProductUpdated".to_owned(),
                schema_version: 2,
                occurred_at: chrono::Utc::now(),
                payload: serde_json::value::RawValue::from_string(payload.to_string()).unwrap(),
                metadata: EventMetadata {
                    correlation_id: "ready-test".to_owned(),
                    causation_id: String::new(),
                    saga_id: None,
                    actor: "test".to_owned(),
                    source: "mercato-tests".to_owned(),
                    traceparent: None,
                    tracestate: None,
                },
            }],
        ))
        .await
        .expect("append");
    let failing = eventually(Duration::from_secs(20), || async {
        let (status, body) = ready(&server).await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await;
    let (body, _) = failing.expect("a stuck projection left the process ready");
    let verdict = body["projections"]["products"]["ready"]
        .as_str()
        .unwrap_or("");
    let position = appended.last_position().expect("a position");
    // PostgreSQL: `invalid byte sequence for encoding "UTF8": 0x00` (SQLSTATE 22021). The
    // search index holds the name, and carries on.
    assert!(
        verdict.contains(&format!("parked at position {position}")) && verdict.contains("0x00"),
        "{body}"
    );
    assert_eq!(body["projections"]["search"]["ready"], "ok", "{body}");
    server.stop().await;
}
