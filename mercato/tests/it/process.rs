//! The binary as its own process, where the process is the subject: a SIGKILL while writes are
//! flowing, and the log lines it writes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Api, Server, ServerData, Setup, event_position};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_converge_after_a_crash_while_writes_are_flowing() {
    let Some(data) = ServerData::new(Setup::Embedded, "crash_while_writing").await else {
        return;
    };
    let server = Server::start(&data).await;
    let (product_id, _) = server
        .create_product("Crash test dummy", "Sturdy", 5.0, 1_000, "Toys")
        .await;
    // Writers: stock adjustments and new products, as fast as they go.
    let api = Api::clone(&server);
    let writer = tokio::spawn(async move {
        let mut n_answered = 0;
        for write_idx in 0..10_000 {
            // The server is killed meanwhile: a failed request ends the writer.
            let result = if write_idx % 2 == 0 {
                api.request(
                    reqwest::Method::POST,
                    &format!("/products/{product_id}/stock"),
                )
                .json(&json!({"delta": 1}))
                .send()
                .await
            } else {
                api.request(reqwest::Method::POST, "/products")
                    .json(&json!({"name": format!("Item {write_idx}"), "description": "d", "price": 1, "stock_qty": 1}))
                    .send()
                    .await
            };
            match result {
                Ok(response) if response.status().is_success() => n_answered += 1,
                _ => break,
            }
        }
        n_answered
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.kill().await;
    let n_answered = writer.await.expect("writer");
    assert!(
        n_answered > 10,
        "too few writes before the crash: {n_answered}"
    );
    // Start again on the same data: the read models catch up with exactly what the events say.
    let server = Server::start(&data).await;
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = server
            .get(&format!("/events?after={after}&limit=1000"))
            .await
            .json()
            .await
            .expect("json");
        let page = page["events"].as_array().expect("events").clone();
        let Some(last) = page.last() else { break };
        after = last["position"].as_u64().expect("position");
        events.extend(page);
    }
    let mut expected: HashMap<String, (u64, i64)> = HashMap::new();
    for event in &events {
        if event["event_type"] == "ProductUpdated" {
            let payload = &event["payload"];
            expected.insert(
                payload["product_id"].as_str().expect("id").to_owned(),
                (
                    payload["version"].as_u64().expect("version"),
                    payload["stock_qty"].as_i64().expect("stock"),
                ),
            );
        }
    }
    assert!(expected.len() > 1);
    for (product_id, (version, stock_qty)) in &expected {
        let product: Value = server
            .get_at(&format!("/products/{product_id}"), after)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(product["version"], *version, "{product_id}: {product}");
        assert_eq!(product["stock_qty"], *stock_qty, "{product_id}: {product}");
    }
    let all: Value = server
        .get_at("/search?limit=1", after)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        all["total"],
        expected.len(),
        "the search index holds every product once"
    );
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_correlation_id_of_the_request_on_every_line() {
    let Some(data) = ServerData::new(Setup::Embedded, "json_logs").await else {
        return;
    };
    let server = Server::start_with(&data, "all", &["--log-format", "json"]).await;
    let response = server
        .request(reqwest::Method::POST, "/products")
        .header("x-correlation-id", "order-flow-42")
        .json(&json!({"name": "Logged", "description": "d", "price": 1, "stock_qty": 1}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-correlation-id"], "order-flow-42");
    let position = event_position(&response);
    // The correlation id is in the event's metadata too.
    let feed: Value = server
        .get("/events?after=0&correlation_id=order-flow-42")
        .await
        .json()
        .await
        .expect("json");
    let events = feed["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "ProductCreated and ProductUpdated: {feed}");
    assert_eq!(events[1]["position"], position);
    server.terminate().await;
    let log = std::fs::read_to_string(data.data_dir.path().join("server.log")).expect("log");
    let request_lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "request finished")
        .collect();
    assert!(!request_lines.is_empty(), "no request line in:\n{log}");
    let line = request_lines
        .iter()
        .find(|line| line["span"]["path"] == "/products")
        .expect("the POST's line");
    assert_eq!(line["span"]["correlation_id"], "order-flow-42", "{line}");
    assert_eq!(line["fields"]["status"], 201);
}
