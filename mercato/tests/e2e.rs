//! End to end: the real `mercato serve` on port 0, embedded and on PostgreSQL with Redis.
//! Scenario A (product lifecycle) and B (orders feed recommendations) of the product documents,
//! hostile input, and a crash while writes are flowing.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Server, ServerData, Setup, cache_header, event_position, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A word no other test uses, so that searches only find this test's products.
fn unique_word() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let letters: String = id
        .chars()
        .map(|c| match c.to_digit(16) {
            Some(d) => (b'a' + d as u8) as char,
            None => c,
        })
        .take(12)
        .collect();
    format!("zq{letters}")
}

async fn scenario_a(setup: Setup, test_name: &str) {
    let Some(data) = ServerData::new(setup, test_name).await else {
        return;
    };
    let server = Server::start(&data).await;
    let word = unique_word();
    let (product_id, position) = server
        .create_product(
            &format!("Trail running shoes {word}"),
            "Grippy soles for muddy trails",
            89.90,
            25,
            "Shoes",
        )
        .await;
    // Searchable within 2 s, found by a stemmed, case-insensitive word of its description.
    let search_path = format!("/search?q={word}+SOLE&category=shoes");
    let found = eventually(Duration::from_secs(2), || async {
        let response = server.get(&search_path).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.ok()?;
        (body["total"] == 1).then_some(body)
    })
    .await;
    let (body, took) = found.expect("the product was not searchable within 2 s");
    assert_eq!(body["hits"][0]["product_id"], product_id.as_str());
    assert_eq!(body["hits"][0]["price"], json!(89.9));
    assert!(took < Duration::from_secs(2));
    // The second identical search is served from the cache.
    let again = server.get(&search_path).await;
    assert_eq!(cache_header(&again), "hit");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again, body);
    // A product read: a miss, then a hit.
    let first = server
        .get_at(&format!("/products/{product_id}"), position)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(cache_header(&first), "miss");
    let second = server.get(&format!("/products/{product_id}")).await;
    assert_eq!(cache_header(&second), "hit");
    // An update changes the search results and is not hidden by the cache.
    let updated = server
        .put(
            &format!("/products/{product_id}"),
            json!({"name": format!("Road running shoes {word}"), "description": "Light and fast", "price": 79.5}),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let update_position = event_position(&updated);
    assert!(update_position > position);
    let old_search = server
        .get_at(&search_path, update_position)
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(
        old_search["total"], 0,
        "the old description must no longer match: {old_search}"
    );
    let new_search = server
        .get_at(
            &format!("/search?q={word}+road&max_price=80"),
            update_position,
        )
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(new_search["total"], 1, "{new_search}");
    assert_eq!(new_search["hits"][0]["price"], json!(79.5));
    let product = server
        .get_at(&format!("/products/{product_id}"), update_position)
        .await;
    assert_eq!(
        cache_header(&product),
        "miss",
        "the update must invalidate the product"
    );
    let product: Value = product.json().await.expect("json");
    assert_eq!(product["name"], format!("Road running shoes {word}"));
    assert_eq!(product["category"], "Shoes");
    assert_eq!(product["stock_qty"], 25);
    server.terminate().await;
}

async fn scenario_b(setup: Setup, test_name: &str) {
    let Some(data) = ServerData::new(setup, test_name).await else {
        return;
    };
    // The saga's charge takes 10 s here, so the order is still PENDING when it is read back (a
    // fast saga confirmed it first once, on a loaded machine).
    let server = Server::start_with(&data, "all", &["--test-gateway-latency", "10"]).await;
    let word = unique_word();
    let (popular_id, _) = server
        .create_product(
            &format!("Espresso beans {word}"),
            "Dark roast",
            12.5,
            100,
            "Coffee",
        )
        .await;
    let (other_id, _) = server
        .create_product(&format!("Green tea {word}"), "Sencha", 7.0, 100, "Tea")
        .await;
    let order = server
        .post(
            "/orders",
            json!({
                "customer_id": "alice",
                "lines": [{"product_id": popular_id, "quantity": 3}],
                "payment_token": "tok_visa",
            }),
        )
        .await;
    assert_eq!(order.status(), StatusCode::ACCEPTED);
    let position = event_position(&order);
    let order: Value = order.json().await.expect("json");
    let order_id = order["order_id"].as_str().expect("order_id").to_owned();
    // The order raised the product's popularity.
    let product: Value = server
        .get_at(&format!("/products/{popular_id}"), position)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(product["popularity"], 30, "{product}");
    // Another customer is recommended the popular product first.
    let recommended: Value = server
        .get_at("/recommendations?customer_id=bob&limit=5", position)
        .await
        .json()
        .await
        .expect("json");
    let items = recommended["items"].as_array().expect("items");
    assert_eq!(
        items.first().map(|item| &item["product_id"]),
        Some(&json!(popular_id)),
        "{recommended}"
    );
    assert_eq!(items[0]["name"], format!("Espresso beans {word}"));
    // The customer who ordered it is not recommended it again.
    let for_alice: Value = server
        .get_at("/recommendations?customer_id=alice", position)
        .await
        .json()
        .await
        .expect("json");
    assert!(
        for_alice["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|item| item["product_id"] != json!(popular_id)),
        "{for_alice}"
    );
    // The order reads back by id and by customer.
    let read: Value = server
        .get_at(&format!("/orders/{order_id}"), position)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["status"], "PENDING");
    assert_eq!(read["customer_id"], "alice");
    assert_eq!(read["total"], json!(37.5));
    let by_customer: Value = server
        .get_at("/customers/alice/orders", position)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(by_customer["orders"][0]["order_id"], order_id.as_str());
    // A cart checkout makes an order too.
    let added = server
        .post(
            "/carts/cart-b/items",
            json!({"product_id": other_id, "quantity": 2}),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    let cart: Value = server
        .get_at("/carts/cart-b", event_position(&added))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(cart["total"], json!(14));
    let checkout = server
        .post(
            "/carts/cart-b/checkout",
            json!({"customer_id": "bob", "payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(checkout.status(), StatusCode::ACCEPTED);
    let again = server
        .post(
            "/carts/cart-b/checkout",
            json!({"customer_id": "bob", "payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "a cart is checked out once"
    );
    // Views by a known customer feed popularity too (1 point each, against 10 per unit ordered).
    for _ in 0..3 {
        let viewed = server
            .get(&format!("/products/{other_id}?customer_id=carol"))
            .await;
        assert_eq!(viewed.status(), StatusCode::OK);
    }
    let popularity = eventually(Duration::from_secs(3), || async {
        let product: Value = server
            .get(&format!("/products/{other_id}"))
            .await
            .json()
            .await
            .ok()?;
        (product["popularity"] == 23).then_some(())
    })
    .await;
    assert!(
        popularity.is_some(),
        "2 units ordered and 3 views make 23 points"
    );
    let recommended = eventually(Duration::from_secs(3), || async {
        let body: Value = server
            .get("/recommendations?customer_id=dave")
            .await
            .json()
            .await
            .ok()?;
        let scores: Vec<i64> = body["items"]
            .as_array()?
            .iter()
            .map(|item| item["score"].as_i64().unwrap_or(0))
            .collect();
        (scores.len() >= 2 && scores[..2] == [30, 23]).then_some(())
    })
    .await;
    assert!(
        recommended.is_some(),
        "recommendations follow popularity: 30, then 23"
    );
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_a_a_product_is_searchable_cached_and_updated_embedded() {
    scenario_a(Setup::Embedded, "scenario_a_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_a_a_product_is_searchable_cached_and_updated_on_postgres_and_redis() {
    scenario_a(Setup::PostgresRedis, "scenario_a_on_postgres_and_redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_b_an_order_feeds_popularity_and_recommendations_embedded() {
    scenario_b(Setup::Embedded, "scenario_b_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_b_an_order_feeds_popularity_and_recommendations_on_postgres_and_redis() {
    scenario_b(Setup::PostgresRedis, "scenario_b_on_postgres_and_redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_requests_are_answered_4xx_with_a_problem_body() {
    let Some(data) = ServerData::new(Setup::Embedded, "hostile_requests").await else {
        return;
    };
    let server = Server::start(&data).await;
    let (product_id, _) = server
        .create_product("Mug", "A mug", 9.99, 5, "Kitchen")
        .await;
    let long = "x".repeat(10_000);
    let unknown = uuid::Uuid::new_v4().to_string();
    let huge_body = format!(r#"{{"name":"{}"}}"#, "y".repeat(70_000));
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("POST", "/products".into(), Some("{".into())),
        ("POST", "/products".into(), Some("".into())),
        ("POST", "/products".into(), Some("[]".into())),
        ("POST", "/products".into(), Some(r#"{"name":"a"}"#.into())),
        (
            "POST",
            "/products".into(),
            Some(r#"{"name":1,"description":"d","price":1,"stock_qty":1}"#.into()),
        ),
        (
            "POST",
            "/products".into(),
            Some(r#"{"name":"a","description":"d","price":-1,"stock_qty":1}"#.into()),
        ),
        (
            "POST",
            "/products".into(),
            Some(r#"{"name":"a","description":"d","price":1.001,"stock_qty":1}"#.into()),
        ),
        (
            "POST",
            "/products".into(),
            Some(r#"{"name":"a","description":"d","price":1e308,"stock_qty":1}"#.into()),
        ),
        (
            "POST",
            "/products".into(),
            Some(r#"{"name":"a","description":"d","price":"1","stock_qty":1}"#.into()),
        ),
        (
            "POST",
            "/products".into(),
            Some(r#"{"name":"a","description":"d","price":1,"stock_qty":-5}"#.into()),
        ),
        (
            "POST",
            "/products".into(),
            Some(
                r#"{"name":"a","description":"d","price":1,"stock_qty":99999999999999999999}"#
                    .into(),
            ),
        ),
        (
            "POST",
            "/products".into(),
            Some(format!(
                r#"{{"name":"{long}","description":"d","price":1,"stock_qty":1}}"#
            )),
        ),
        (
            "POST",
            "/products".into(),
            Some(r#"{"name":"   ","description":"d","price":1,"stock_qty":1}"#.into()),
        ),
        (
            "POST",
            "/products".into(),
            Some(r#"{"name":"a","description":"d","price":1,"stock_qty":1,"admin":true}"#.into()),
        ),
        ("POST", "/products".into(), Some(huge_body)),
        ("PUT", format!("/products/{product_id}"), Some("{}".into())),
        (
            "PUT",
            format!("/products/{product_id}"),
            Some(r#"{"price":0}"#.into()),
        ),
        (
            "PUT",
            format!("/products/{unknown}"),
            Some(r#"{"name":"x"}"#.into()),
        ),
        (
            "PUT",
            "/products/not-a-uuid".into(),
            Some(r#"{"name":"x"}"#.into()),
        ),
        (
            "POST",
            format!("/products/{product_id}/stock"),
            Some(r#"{"delta":-100}"#.into()),
        ),
        (
            "POST",
            format!("/products/{product_id}/stock"),
            Some(r#"{"delta":"many"}"#.into()),
        ),
        (
            "POST",
            format!("/products/{product_id}/stock"),
            Some(r#"{"delta":2000000000}"#.into()),
        ),
        (
            "POST",
            "/carts/bad cart/items".into(),
            Some(format!(r#"{{"product_id":"{product_id}","quantity":1}}"#)),
        ),
        (
            "POST",
            format!("/carts/{long}/items"),
            Some(format!(r#"{{"product_id":"{product_id}","quantity":1}}"#)),
        ),
        (
            "POST",
            "/carts/c1/items".into(),
            Some(format!(r#"{{"product_id":"{unknown}","quantity":1}}"#)),
        ),
        (
            "POST",
            "/carts/c1/items".into(),
            Some(format!(r#"{{"product_id":"{product_id}","quantity":0}}"#)),
        ),
        (
            "POST",
            "/carts/c1/items".into(),
            Some(format!(
                r#"{{"product_id":"{product_id}","quantity":100000}}"#
            )),
        ),
        (
            "POST",
            "/carts/c1/items".into(),
            Some(r#"{"product_id":"nope","quantity":1}"#.into()),
        ),
        ("DELETE", format!("/carts/c1/items/{product_id}"), None),
        ("DELETE", "/carts/c1/items/not-a-uuid".into(), None),
        (
            "POST",
            "/carts/empty-cart/checkout".into(),
            Some(r#"{"customer_id":"c","payment_token":"tok_visa"}"#.into()),
        ),
        (
            "POST",
            "/carts/c1/checkout".into(),
            Some(r#"{"customer_id":"c","payment_token":"4242 4242 4242 4242"}"#.into()),
        ),
        (
            "POST",
            "/orders".into(),
            Some(r#"{"customer_id":"c","lines":[],"payment_token":"tok_visa"}"#.into()),
        ),
        (
            "POST",
            "/orders".into(),
            Some(format!(
                r#"{{"customer_id":"c","lines":[{{"product_id":"{unknown}","quantity":1}}],"payment_token":"tok_visa"}}"#
            )),
        ),
        (
            "POST",
            "/orders".into(),
            Some(format!(
                r#"{{"customer_id":"c","lines":[{{"product_id":"{product_id}","quantity":-1}}],"payment_token":"tok_visa"}}"#
            )),
        ),
        (
            "POST",
            "/orders".into(),
            Some(format!(
                r#"{{"customer_id":"c","lines":[{{"product_id":"{product_id}","quantity":1}},{{"product_id":"{product_id}","quantity":1}}],"payment_token":"tok_visa"}}"#
            )),
        ),
        (
            "POST",
            "/orders".into(),
            Some(format!(
                r#"{{"customer_id":"ü","lines":[{{"product_id":"{product_id}","quantity":1}}],"payment_token":"tok_visa"}}"#
            )),
        ),
        (
            "POST",
            "/orders".into(),
            Some(format!(
                r#"{{"customer_id":"c","lines":[{{"product_id":"{product_id}","quantity":1}}],"payment_token":""}}"#
            )),
        ),
        ("GET", format!("/products/{unknown}"), None),
        ("GET", "/products/🙂".into(), None),
        (
            "GET",
            format!("/products/{product_id}?customer_id=bad%20id"),
            None,
        ),
        (
            "GET",
            format!("/products/{product_id}?min_position=soon"),
            None,
        ),
        ("GET", format!("/search?q={long}"), None),
        ("GET", "/search?limit=0".into(), None),
        ("GET", "/search?limit=-1".into(), None),
        ("GET", "/search?offset=99999999999999999999".into(), None),
        ("GET", "/search?min_price=abc".into(), None),
        ("GET", "/search?min_price=10&max_price=1".into(), None),
        ("GET", "/carts/unknown-cart".into(), None),
        ("GET", "/carts/bad%20cart".into(), None),
        ("GET", format!("/orders/{unknown}"), None),
        ("GET", "/orders/123".into(), None),
        ("GET", "/customers/bad%20id/orders".into(), None),
        ("GET", "/recommendations".into(), None),
        (
            "GET",
            "/recommendations?customer_id=c&limit=1000".into(),
            None,
        ),
        ("GET", "/events?after=-1".into(), None),
        ("GET", "/events?limit=0".into(), None),
        ("GET", "/nowhere".into(), None),
        ("DELETE", "/products".into(), None),
    ];
    let mut failures = Vec::new();
    for (method, path, body) in &cases {
        let mut request = server
            .client
            .request(method.parse().expect("method"), server.url(path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let problem: Value = response.json().await.unwrap_or(Value::Null);
        let detail = problem["detail"].as_str().unwrap_or("");
        if !status.is_client_error()
            || content_type != "application/problem+json"
            || detail.is_empty()
            || problem["status"] != status.as_u16()
        {
            failures.push(format!(
                "{method} {} -> {status} {content_type} {problem}",
                path.chars().take(80).collect::<String>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not a 4xx problem:\n{}",
        failures.join("\n")
    );
    // Nothing above changed the product.
    let product: Value = server
        .get(&format!("/products/{product_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(product["stock_qty"], 5);
    assert_eq!(product["name"], "Mug");
    server.terminate().await;
}

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
    let client = server.client.clone();
    let base = server.base.clone();
    let writer = tokio::spawn(async move {
        let mut n_answered = 0;
        for write_idx in 0..10_000 {
            let result = if write_idx % 2 == 0 {
                client
                    .post(format!("{base}/products/{product_id}/stock"))
                    .json(&json!({"delta": 1}))
                    .send()
                    .await
            } else {
                client
                    .post(format!("{base}/products"))
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
async fn the_openapi_document_lists_every_route_and_every_listed_route_exists() {
    let Some(data) = ServerData::new(Setup::Embedded, "openapi").await else {
        return;
    };
    let server = Server::start(&data).await;
    let document: Value = server
        .get("/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    let mut n_operations = 0;
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().expect("methods") {
            n_operations += 1;
            assert!(
                operation["responses"]["4XX"]["content"]["application/problem+json"].is_object()
            );
            let concrete = path
                .replace("{product_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{order_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{cart_id}", "cart-1")
                .replace("{customer_id}", "customer-1")
                .replace("{stream_type}", "product")
                .replace("{stream_id}", "x");
            let response = server
                .client
                .request(
                    method.to_uppercase().parse().expect("method"),
                    server.url(&concrete),
                )
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert!(
                !body.contains("no route matches") && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not served: {status} {body}"
            );
            assert!(
                !status.is_server_error(),
                "{method} {path}: {status} {body}"
            );
        }
    }
    // Every route of CONTRACT.md is documented.
    for (method, path) in [
        ("post", "/products"),
        ("put", "/products/{product_id}"),
        ("post", "/products/{product_id}/stock"),
        ("post", "/carts/{cart_id}/items"),
        ("delete", "/carts/{cart_id}/items/{product_id}"),
        ("post", "/carts/{cart_id}/checkout"),
        ("post", "/orders"),
        ("get", "/products/{product_id}"),
        ("get", "/search"),
        ("get", "/carts/{cart_id}"),
        ("get", "/orders/{order_id}"),
        ("get", "/customers/{customer_id}/orders"),
        ("get", "/recommendations"),
        ("get", "/streams/{stream_type}/{stream_id}/events"),
        ("get", "/events"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(n_operations, 19);
    let metrics = server.get("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains("mercato_http_requests_total{route=\"/openapi.json\""),
        "{metrics}"
    );
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_runs_as_its_own_process_on_postgres_and_redis() {
    let Some(data) = ServerData::new(Setup::PostgresRedis, "roles_as_processes").await else {
        return;
    };
    let projector = Server::start_role(&data, "projector").await;
    let commands = Server::start_role(&data, "command-api").await;
    let queries = Server::start_role(&data, "query-api").await;
    // Each process serves only its own routes.
    assert_eq!(
        commands.get("/search?q=x").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        queries
            .post(
                "/products",
                json!({"name": "x", "description": "x", "price": 1, "stock_qty": 1})
            )
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let word = unique_word();
    let (product_id, position) = commands
        .create_product(&format!("Desk lamp {word}"), "Warm light", 25.0, 4, "Home")
        .await;
    // Read-your-writes across processes: the query process waits on the stored checkpoints.
    let found: Value = queries
        .get_at(&format!("/search?q={word}"), position)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(found["total"], 1, "{found}");
    let first = queries
        .get_at(&format!("/products/{product_id}"), position)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(cache_header(&first), "miss");
    assert_eq!(
        cache_header(&queries.get(&format!("/products/{product_id}")).await),
        "hit"
    );
    // The projector process invalidates the query process's cache through Redis.
    let updated = commands
        .put(
            &format!("/products/{product_id}"),
            json!({"name": format!("Floor lamp {word}")}),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let product: Value = queries
        .get_at(&format!("/products/{product_id}"), event_position(&updated))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(product["name"], format!("Floor lamp {word}"));
    let renamed: Value = queries
        .get_at(&format!("/search?q=floor+{word}"), event_position(&updated))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(renamed["total"], 1, "{renamed}");
    let order = commands
        .post(
            "/orders",
            json!({"customer_id": "erin", "lines": [{"product_id": product_id, "quantity": 1}], "payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(order.status(), StatusCode::ACCEPTED);
    let recommended: Value = queries
        .get_at("/recommendations?customer_id=frank", event_position(&order))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        recommended["items"][0]["product_id"],
        product_id.as_str(),
        "{recommended}"
    );
    for server in [queries, commands, projector] {
        let status = server.terminate().await;
        assert!(
            status.success(),
            "a role did not stop cleanly on SIGTERM: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_correlation_id_of_the_request_on_every_line() {
    let Some(data) = ServerData::new(Setup::Embedded, "json_logs").await else {
        return;
    };
    let server = Server::start_with(&data, "all", &["--log-format", "json"]).await;
    let response = server
        .client
        .post(server.url("/products"))
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
