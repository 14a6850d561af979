//! End to end: the server in this process on port 0, embedded and on PostgreSQL with Redis.
//! Scenario A (product lifecycle) and B (orders feed recommendations) of the product documents,
//! hostile input, the OpenAPI document, and each role as a server of its own.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Setup, TestApp, TestData, cache_header, event_position, eventually};

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
    let Some(data) = TestData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start(&data).await;
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
    server.stop().await;
}

async fn scenario_b(setup: Setup, test_name: &str) {
    let Some(data) = TestData::new(setup, test_name).await else {
        return;
    };
    // The saga's charge takes 10 s here, so the order is still PENDING when it is read back (a
    // fast saga confirmed it first once, on a loaded machine).
    let server = TestApp::start_with(&data, "all", &["--test-gateway-latency", "10"]).await;
    // The shop's catalogue is kept by an integration with a catalog key; its customers log in.
    let catalog = server.service(&data, "catalog").await;
    let alice = server.register_customer("alice").await;
    let bob = server.register_customer("bob").await;
    let carol = server.register_customer("carol").await;
    let dave = server.register_customer("dave").await;
    let word = unique_word();
    let (popular_id, _) = catalog
        .create_product(
            &format!("Espresso beans {word}"),
            "Dark roast",
            12.5,
            100,
            "Coffee",
        )
        .await;
    let (other_id, _) = catalog
        .create_product(&format!("Green tea {word}"), "Sencha", 7.0, 100, "Tea")
        .await;
    let order = alice
        .post(
            "/orders",
            json!({
                "lines": [{"product_id": popular_id, "quantity": 3}],
                "payment_token": "tok_visa",
            }),
        )
        .await;
    assert_eq!(order.status(), StatusCode::ACCEPTED);
    let position = event_position(&order);
    let order: Value = order.json().await.expect("json");
    let order_id = order["order_id"].as_str().expect("order_id").to_owned();
    // A placed order adds no popularity: it counts once the saga confirmed it (the charge takes
    // 10 s here), so an order that is never paid makes nothing popular.
    let product: Value = alice
        .get_at(&format!("/products/{popular_id}"), position)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(product["popularity"], 0, "{product}");
    // The customer who ordered it is not recommended it again.
    let for_alice: Value = alice
        .get_at(
            &format!("/recommendations?customer_id={}", alice.user_id),
            position,
        )
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
    // The order reads back by id and by customer, for its customer only.
    let read: Value = alice
        .get_at(&format!("/orders/{order_id}"), position)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["status"], "PENDING");
    assert_eq!(read["customer_id"], alice.user_id.as_str());
    assert_eq!(read["total"], json!(37.5));
    let by_customer: Value = alice
        .get_at(&format!("/customers/{}/orders", alice.user_id), position)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(by_customer["orders"][0]["order_id"], order_id.as_str());
    let not_bobs = bob.get(&format!("/orders/{order_id}")).await;
    assert_eq!(
        not_bobs.status(),
        StatusCode::NOT_FOUND,
        "another's order is no order"
    );
    // A cart checkout makes an order too.
    let added = bob
        .post(
            "/carts/cart-b/items",
            json!({"product_id": other_id, "quantity": 2}),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    let cart: Value = bob
        .get_at("/carts/cart-b", event_position(&added))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(cart["total"], json!(14));
    let checkout = bob
        .post(
            "/carts/cart-b/checkout",
            json!({"payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(checkout.status(), StatusCode::ACCEPTED);
    let again = bob
        .post(
            "/carts/cart-b/checkout",
            json!({"payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "a cart is checked out once"
    );
    // Views by a known customer feed popularity too (1 point, against 10 per unit ordered),
    // once per product within the window however often they look.
    for _ in 0..3 {
        let viewed = carol
            .get(&format!(
                "/products/{other_id}?customer_id={}",
                carol.user_id
            ))
            .await;
        assert_eq!(viewed.status(), StatusCode::OK);
    }
    // Once the saga confirmed the orders, their units count: 10 points each.
    let confirmed = eventually(Duration::from_secs(30), || async {
        let product: Value = server
            .anonymous()
            .get(&format!("/products/{popular_id}"))
            .await
            .json()
            .await
            .ok()?;
        (product["popularity"] == 30).then_some(())
    })
    .await;
    assert!(
        confirmed.is_some(),
        "3 units of a confirmed order make 30 points"
    );
    let popularity = eventually(Duration::from_secs(30), || async {
        let product: Value = server
            .anonymous()
            .get(&format!("/products/{other_id}"))
            .await
            .json()
            .await
            .ok()?;
        (product["popularity"] == 21).then_some(())
    })
    .await;
    assert!(
        popularity.is_some(),
        "2 units of a confirmed order and 3 views of one customer make 21 points"
    );
    let recommended = eventually(Duration::from_secs(30), || async {
        let body: Value = dave
            .get(&format!("/recommendations?customer_id={}", dave.user_id))
            .await
            .json()
            .await
            .ok()?;
        let scores: Vec<i64> = body["items"]
            .as_array()?
            .iter()
            .map(|item| item["score"].as_i64().unwrap_or(0))
            .collect();
        (scores.len() >= 2 && scores[..2] == [30, 21]).then_some(())
    })
    .await;
    assert!(
        recommended.is_some(),
        "recommendations follow popularity: 30, then 21"
    );
    // Another customer is recommended the popular product first.
    let recommended: Value = bob
        .get(&format!(
            "/recommendations?customer_id={}&limit=5",
            bob.user_id
        ))
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

    // The most popular products, for no one in particular, are cached until a batch scores a
    // product or changes one.
    let popular = || async {
        let response = server.anonymous().get("/recommendations?limit=3").await;
        let hit = cache_header(&response);
        let body: Value = response.json().await.expect("json");
        (hit, body)
    };
    let (_, first) = popular().await;
    let (hit, again) = popular().await;
    assert_eq!(hit, "hit", "{again}");
    assert_eq!(again, first);
    let score_of = |body: &Value, id: &str| {
        body["items"]
            .as_array()
            .and_then(|items| items.iter().find(|item| item["product_id"] == id))
            .and_then(|item| item["score"].as_i64())
    };
    let before = score_of(&first, &other_id).expect("the other product is popular");
    // A view scores a product: the next answer counts it.
    let viewed = alice
        .get(&format!(
            "/products/{other_id}?customer_id={}",
            alice.user_id
        ))
        .await;
    assert_eq!(viewed.status(), StatusCode::OK);
    let scored = eventually(Duration::from_secs(30), || async {
        let (hit, body) = popular().await;
        (score_of(&body, &other_id) == Some(before + 1)).then_some(hit)
    })
    .await
    .expect("the view is counted in the most popular products");
    assert_eq!(scored.0, "miss");
    // A new name shows at once too.
    let renamed = catalog
        .put(
            &format!("/products/{popular_id}"),
            json!({ "name": format!("Roasted beans {word}"), "description": "Dark roast", "price": 12.5 }),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let named = eventually(Duration::from_secs(30), || async {
        let (_, body) = popular().await;
        (body["items"][0]["name"] == format!("Roasted beans {word}")).then_some(())
    })
    .await;
    assert!(
        named.is_some(),
        "a renamed product keeps its old name in the cached list"
    );
    server.stop().await;
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
    let Some(data) = TestData::new(Setup::Embedded, "hostile_requests").await else {
        return;
    };
    let server = TestApp::start(&data).await;
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
        ("GET", "/carts/unknown-cart".into(), None),
        ("GET", "/carts/bad%20cart".into(), None),
        ("GET", format!("/orders/{unknown}"), None),
        ("GET", "/orders/123".into(), None),
        ("GET", "/customers/bad%20id/orders".into(), None),
        ("GET", "/recommendations?customer_id=bad%20id".into(), None),
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
        let mut request = server.request(method.parse().expect("method"), path);
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
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_every_listed_route_exists() {
    let Some(data) = TestData::new(Setup::Embedded, "openapi").await else {
        return;
    };
    let server = TestApp::start(&data).await;
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
                .replace("{stream_id}", "x")
                .replace("{user_id}", &uuid::Uuid::new_v4().to_string());
            let response = server
                .request(method.to_uppercase().parse().expect("method"), &concrete)
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
        ("get", "/categories"),
        ("get", "/carts/{cart_id}"),
        ("get", "/orders/{order_id}"),
        ("get", "/customers/{customer_id}/orders"),
        ("get", "/recommendations"),
        ("get", "/streams/{stream_type}/{stream_id}/events"),
        ("get", "/events"),
        ("get", "/streams/{stream_type}/{stream_id}/state"),
        ("get", "/audit/verify"),
        ("get", "/orders"),
        ("get", "/users"),
        ("get", "/notifications"),
        ("post", "/notifications/{key}/retry"),
        ("post", "/notifications/{key}/resend"),
        ("get", "/sagas"),
        ("post", "/sagas/{order_id}/retry"),
        ("get", "/projections"),
        ("post", "/projections/{name}/retry"),
        ("get", "/dead-letters"),
        ("post", "/dead-letters/replay"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("post", "/users"),
        ("post", "/users/verify"),
        ("post", "/sessions"),
        ("post", "/sessions/refresh"),
        ("delete", "/sessions/current"),
        ("get", "/users/me"),
        ("patch", "/users/me"),
        ("post", "/users/me/password"),
        ("post", "/password-resets"),
        ("post", "/password-resets/complete"),
        ("delete", "/users/me"),
        ("post", "/users/{user_id}/erase"),
        ("get", "/.well-known/jwks.json"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(
        n_operations,
        server::policy::POLICY.len(),
        "every operation is one entry of the permission table"
    );
    let metrics = server.get("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains("mercato_http_requests_total{route=\"/openapi.json\""),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_runs_as_a_server_of_its_own_on_postgres_and_redis() {
    let Some(data) = TestData::new(Setup::PostgresRedis, "roles_as_processes").await else {
        return;
    };
    let projector = TestApp::start_role(&data, "projector").await;
    let commands = TestApp::start_role(&data, "command-api").await;
    let queries = TestApp::start_role(&data, "query-api").await;
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
    // Each stops cleanly, as on SIGTERM (`stop` fails the test otherwise).
    for server in [queries, commands, projector] {
        server.stop().await;
    }
}
