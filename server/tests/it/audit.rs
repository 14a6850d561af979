//! The auditors' routes: an aggregate as it stood at a position or a time
//! (`GET /streams/{stream_type}/{stream_id}/state`), the hash chains verified with the first bad
//! event named (`GET /audit/verify`, clean and after tampering in SQL), and the feeds exported
//! as CloudEvents (`Accept: application/cloudevents-batch+json`).

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Setup, TestApp};

const CLOUDEVENTS_BATCH: &str = "application/cloudevents-batch+json";

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_sees_a_stream_at_any_moment_verifies_the_log_and_exports_cloudevents() {
    let Some((server, data)) = TestApp::spawn(Setup::Embedded, "audit_routes").await else {
        return;
    };
    let (product_id, created_at) = server
        .create_product("Audit lamp", "first words", 10.0, 3, "Lighting")
        .await;
    let updated = server
        .put(
            &format!("/products/{product_id}"),
            json!({ "name": "Audit lamp II", "description": "second words", "price": 12.5 }),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::OK);

    // Now, and as it stood after its creation.
    let (status, now) = json_of(
        server
            .get(&format!("/streams/product/{product_id}/state"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!(now["state"]["name"], "Audit lamp II", "{now}");
    assert_eq!(now["at"], "now");
    assert_eq!(now["version"], now["current_version"], "{now}");
    let (status, then) = json_of(
        server
            .get(&format!(
                "/streams/product/{product_id}/state?at={created_at}"
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(then["state"]["name"], "Audit lamp", "{then}");
    assert_eq!(then["position"], created_at, "{then}");
    let versions = now["current_version"].as_u64().expect("current_version");
    assert!(then["version"].as_u64() < Some(versions), "{then}");
    // Before the first event: its type is the creation's.
    let (_, first) = json_of(
        server
            .get(&format!("/streams/product/{product_id}/events?limit=1"))
            .await,
    )
    .await;
    let first = first["events"][0].clone();
    assert_eq!(first["event_type"], "ProductCreated", "{first}");
    let (_, at_first) = json_of(
        server
            .get(&format!(
                "/streams/product/{product_id}/state?at={}",
                first["position"]
            ))
            .await,
    )
    .await;
    assert_eq!(at_first["version"], 1, "{at_first}");
    assert_eq!(at_first["event_type"], "ProductCreated", "{at_first}");
    // A time works as a position does.
    let occurred = then["occurred_at"]
        .as_str()
        .expect("occurred_at")
        .to_owned();
    let (status, by_time) = json_of(
        server
            .get(&format!(
                "/streams/product/{product_id}/state?at={}",
                occurred.replace('+', "%2B")
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_time}");
    assert_eq!(by_time["version"], then["version"], "{by_time}");

    // What cannot be answered says why.
    let cases = [
        (
            format!("/streams/product/{product_id}/state?at=yesterday"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "RFC 3339",
        ),
        (
            format!("/streams/product/{product_id}/state?at=0"),
            StatusCode::NOT_FOUND,
            "did not exist yet at position 0",
        ),
        (
            format!("/streams/product/{product_id}/state?when=1"),
            StatusCode::BAD_REQUEST,
            "at",
        ),
        (
            "/streams/product/no-such-product/state".to_owned(),
            StatusCode::NOT_FOUND,
            "has no events",
        ),
        (
            "/streams/product_views/x/state".to_owned(),
            StatusCode::NOT_FOUND,
            "hold no aggregate",
        ),
        (
            "/streams/planet/x/state".to_owned(),
            StatusCode::NOT_FOUND,
            "a state is rebuilt of",
        ),
        (
            "/audit/verify?stream=no-slash".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "TYPE/ID",
        ),
        (
            "/audit/verify?stream=product/no-such-product".to_owned(),
            StatusCode::NOT_FOUND,
            "has no events",
        ),
        (
            "/audit/verify?expect_head=xyz".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "64 hex digits",
        ),
    ];
    for (path, expected, words) in cases {
        let (status, problem) = json_of(server.get(&path).await).await;
        assert_eq!(status, expected, "{path}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains(words),
            "{path}: {problem}"
        );
    }

    // The log verifies, whole and one stream at a time; a recorded head is found.
    let (status, clean) = json_of(server.get("/audit/verify").await).await;
    assert_eq!(status, StatusCode::OK, "{clean}");
    assert_eq!(clean["verified"], true, "{clean}");
    assert_eq!(clean["first_problem"], Value::Null, "{clean}");
    assert!(clean["events"].as_u64() >= Some(2), "{clean}");
    let head = clean["head"]["hash"]
        .as_str()
        .expect("head hash")
        .to_owned();
    let (_, expected) = json_of(
        server
            .get(&format!("/audit/verify?expect_head={head}"))
            .await,
    )
    .await;
    assert_eq!(expected["verified"], true, "{expected}");
    assert!(expected["expected_head_at"].is_object(), "{expected}");
    let (_, one) = json_of(
        server
            .get(&format!("/audit/verify?stream=product/{product_id}"))
            .await,
    )
    .await;
    assert_eq!(one["verified"], true, "{one}");
    assert_eq!(one["scope"], format!("product/{product_id}"));
    assert_eq!(one["events"], versions, "{one}");

    // The feeds as CloudEvents: one stream, and one correlation across streams.
    let exported = server
        .send(
            "",
            server
                .request(
                    reqwest::Method::GET,
                    &format!("/streams/product/{product_id}/events"),
                )
                .header("accept", CLOUDEVENTS_BATCH),
        )
        .await;
    assert_eq!(exported.status(), StatusCode::OK);
    assert_eq!(exported.headers()["content-type"], CLOUDEVENTS_BATCH);
    assert_eq!(
        exported.headers()["x-next-after-version"],
        versions.to_string().as_str()
    );
    let batch: Value = exported.json().await.expect("json");
    let batch = batch.as_array().expect("a batch is an array");
    assert_eq!(batch.len() as u64, versions);
    assert!(batch.iter().all(|event| event["specversion"] == "1.0"));
    assert_eq!(batch[0]["type"], "mercato.product.ProductCreated");
    assert_eq!(batch[0]["subject"], format!("product/{product_id}"));
    let renamed = batch
        .iter()
        .find(|event| event["data"]["name"] == "Audit lamp II")
        .expect("the update is exported");
    let correlation = renamed["correlationid"]
        .as_str()
        .expect("correlationid")
        .to_owned();
    let caused = server
        .send(
            "",
            server
                .request(
                    reqwest::Method::GET,
                    &format!("/events?correlation_id={correlation}"),
                )
                .header(
                    "accept",
                    format!("application/json, {CLOUDEVENTS_BATCH};q=0.9"),
                ),
        )
        .await;
    assert_eq!(caused.headers()["content-type"], CLOUDEVENTS_BATCH);
    let caused: Value = caused.json().await.expect("json");
    let caused = caused.as_array().expect("a batch is an array");
    assert!(
        caused.iter().any(|event| event["id"] == renamed["id"]),
        "{caused:?}"
    );
    assert!(
        caused
            .iter()
            .all(|event| event["correlationid"] == correlation.as_str()),
        "{caused:?}"
    );
    // Without asking, the feed keeps its own form.
    let (_, plain) = json_of(
        server
            .get(&format!("/streams/product/{product_id}/events"))
            .await,
    )
    .await;
    assert_eq!(plain["next_after_version"], versions, "{plain}");

    // Tampered in SQL: the verification names the changed event.
    let pool = sqlx::SqlitePool::connect(&data.store_url())
        .await
        .expect("open the store");
    sqlx::raw_sql(&format!(
        "UPDATE events SET payload = replace(payload, 'first words', 'other words') WHERE position = {created_at}"
    ))
    .execute(&pool)
    .await
    .expect("tamper");
    pool.close().await;
    let (status, tampered) = json_of(server.get("/audit/verify").await).await;
    assert_eq!(status, StatusCode::OK, "{tampered}");
    assert_eq!(tampered["verified"], false, "{tampered}");
    assert_eq!(
        tampered["first_problem"]["position"], created_at,
        "{tampered}"
    );
    assert_eq!(
        tampered["first_problem"]["stream_id"],
        product_id.as_str(),
        "{tampered}"
    );
    assert!(
        tampered["first_problem"]["text"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("position {created_at}")),
        "{tampered}"
    );
    server.stop().await;
}
