//! Limits at the edge: a caller over its rate gets 429 with `Retry-After` and others are served;
//! the account routes' stricter limit counts per address, and `X-Forwarded-For` names the
//! address only from a trusted proxy; requests beyond the in-flight bound are shed with 503 while
//! probes are answered; connections beyond the per-address cap are told to come back; deep
//! pages and long feeds are refused with 422; waits for made-up positions end in a second.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Setup, TestApp, TestData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(test_name: &str, args: &[&str]) -> Option<(TestApp, TestData)> {
    let data = TestData::new(Setup::Embedded, test_name).await?;
    let server = TestApp::start_with(&data, "all", args).await;
    Some((server, data))
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_gets_429_with_retry_after_and_others_are_served() {
    let Some((server, _data)) = start("rate_limit", &["--rate-limit", "5"]).await else {
        return;
    };
    let anonymous = server.anonymous();
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..30 {
        let response = anonymous
            .get("/products/00000000-0000-0000-0000-000000000001")
            .await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS && refused.is_none() {
            let wait = retry_after(&response);
            let body: Value = response.json().await.expect("problem");
            refused = Some((wait, body));
        }
    }
    // A burst of two seconds' worth (10) is served, then the caller is refused.
    let served = statuses
        .iter()
        .filter(|status| **status == StatusCode::NOT_FOUND)
        .count();
    assert!((10..20).contains(&served), "{statuses:?}");
    let (wait, body) = refused.expect("a 429");
    assert!(matches!(wait, Some(1..=2)), "Retry-After {wait:?}");
    assert_eq!(body["status"], 429, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("Retry-After"),
        "{body}"
    );
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::NOT_FOUND
                || *status == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // A customer has a bucket of their own; the admin's key has staff's; probes have none.
    let customer = server.register_customer("ada").await;
    assert_eq!(customer.get("/users/me").await.status(), StatusCode::OK);
    assert_eq!(
        server
            .get("/products/00000000-0000-0000-0000-000000000001")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    for _ in 0..20 {
        assert_eq!(anonymous.get("/health").await.status(), StatusCode::OK);
    }
    // After the wait, the anonymous caller is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        anonymous
            .get("/products/00000000-0000-0000-0000-000000000001")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

/// A password reset (an account route) from a caller claiming to be `forwarded`.
async fn reset(server: &TestApp, forwarded: &str) -> StatusCode {
    let anonymous = server.anonymous();
    anonymous
        .send(
            "/password-resets",
            anonymous
                .request(reqwest::Method::POST, "/password-resets")
                .header("x-forwarded-for", forwarded)
                .json(&json!({ "email": "nobody@example.com" })),
        )
        .await
        .status()
}

/// The account routes allow 3 a minute per address here; `X-Forwarded-For` from a stranger is
/// not believed (its requests count against the peer), from a trusted proxy it names the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_routes_limit_counts_per_address_and_believes_trusted_proxies_only() {
    let Some((server, _data)) = start("account_limit", &["--account-rate-limit", "3"]).await else {
        return;
    };
    let mut statuses = Vec::new();
    for index in 0..5 {
        // Each request claims another client: not believed from an untrusted peer.
        statuses.push(reset(&server, &format!("203.0.113.{index}")).await);
    }
    assert_eq!(&statuses[..3], &[StatusCode::ACCEPTED; 3], "{statuses:?}");
    assert_eq!(
        &statuses[3..],
        &[StatusCode::TOO_MANY_REQUESTS; 2],
        "{statuses:?}"
    );
    server.stop().await;

    let Some((server, _data)) = start(
        "account_limit_proxy",
        &[
            "--account-rate-limit",
            "3",
            "--trusted-proxies",
            "127.0.0.0/8",
        ],
    )
    .await
    else {
        return;
    };
    for _ in 0..3 {
        assert_eq!(reset(&server, "203.0.113.1").await, StatusCode::ACCEPTED);
    }
    assert_eq!(
        reset(&server, "203.0.113.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy has its own bucket; a forged entry to the left of
    // the proxy's own does not move the client.
    assert_eq!(reset(&server, "203.0.113.2").await, StatusCode::ACCEPTED);
    assert_eq!(
        reset(&server, "198.51.100.7, 203.0.113.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    server.stop().await;
}

/// With room for two requests at once, a third is shed at once with 503 and `Retry-After`;
/// `/health` is answered all along; once the two end, requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_bound_are_shed_and_probes_still_answer() {
    let Some((server, _data)) = start("shed", &["--max-in-flight", "2"]).await else {
        return;
    };
    // Two requests that wait for a position the log never reaches (a second each).
    let waits: Vec<_> = (0..2)
        .map(|_| {
            let api = server
                .anonymous()
                .with_credentials(server.credentials().unwrap());
            tokio::spawn(async move { api.get("/events?min_position=1000000").await.status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = server
        .get("/products/00000000-0000-0000-0000-000000000001")
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&response), Some(1));
    let body: Value = response.json().await.expect("problem");
    assert!(
        body["type"].as_str().unwrap().ends_with("/overloaded"),
        "{body}"
    );
    assert_eq!(server.get("/health").await.status(), StatusCode::OK);
    for wait in waits {
        assert_eq!(wait.await.unwrap(), StatusCode::CONFLICT);
    }
    assert_eq!(
        server
            .get("/products/00000000-0000-0000-0000-000000000001")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

/// Opens a connection to `address` and sends nothing.
async fn idle_connection(address: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(address)
        .await
        .expect("connect")
}

/// What the server sends on `stream` within two seconds, until it closes.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_cap_are_told_to_retry_and_closed() {
    let Some((server, _data)) = start("connections", &["--max-connections-per-address", "3"]).await
    else {
        return;
    };
    let address = server.url("").trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(idle_connection(&address).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = idle_connection(&address).await;
    let answer = read_answer(&mut fourth).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("too-many-connections"), "{answer}");
    // One held connection still serves a request.
    let mut first = held.remove(0);
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut first).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(first);
    // Its place is given back: a new connection is served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = idle_connection(&address).await;
    again
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut again).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_pages_and_long_feeds_are_422_and_made_up_positions_end_within_a_second() {
    let Some((server, _data)) = start("pages", &[]).await else {
        return;
    };
    for path in [
        "/search?q=mug&offset=9950&limit=100",
        "/search?offset=10000",
        "/events?limit=1001",
        "/streams/product/x/events?limit=5000",
    ] {
        let response = server.get(path).await;
        let status = response.status();
        let body: Value = response.json().await.expect("problem");
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert!(body["field"].is_string(), "{path}: {body}");
    }
    assert_eq!(
        server
            .get("/search?q=mug&offset=9900&limit=100")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        server.get("/events?limit=1000").await.status(),
        StatusCode::OK
    );
    // A position far beyond the log's head: 409 within about a second, not five.
    for path in [
        "/events?min_position=99999999",
        "/search?q=mug&min_position=99999999",
    ] {
        let started = Instant::now();
        let response = server.get(path).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    server.stop().await;
}

/// `/ready`'s details name the systems behind mercato: staff and services read them, anyone
/// else reads `{ready}` alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_details_are_for_staff_and_services() {
    let Some((server, _data)) = start("ready_details", &[]).await else {
        return;
    };
    let staff: Value = server.get("/ready").await.json().await.unwrap();
    assert!(staff["checks"].is_object(), "{staff}");
    let anonymous: Value = server.anonymous().get("/ready").await.json().await.unwrap();
    assert_eq!(
        anonymous.as_object().map(|o| o.len()),
        Some(1),
        "{anonymous}"
    );
    assert!(anonymous["ready"].is_boolean(), "{anonymous}");
    let customer = server.register_customer("grace").await;
    let answer: Value = customer.get("/ready").await.json().await.unwrap();
    assert!(answer.get("checks").is_none(), "{answer}");
    server.stop().await;
}

/// Places an order of `quantity` units of `product_id` as `customer`, paid with a token the test
/// gateway never answers (so it waits for payment); answers the status and the body.
async fn slow_order(
    customer: &server::testing::Api,
    product_id: &str,
    quantity: u32,
) -> (StatusCode, Value) {
    let response = customer
        .post(
            "/orders",
            json!({
                "lines": [{ "product_id": product_id, "quantity": quantity }],
                "payment_token": "tok_timeout",
            }),
        )
        .await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until `customer`'s orders read model holds `count` orders.
async fn orders_reach(server: &TestApp, customer_id: &str, count: usize) {
    let reached = server::testing::eventually(Duration::from_secs(10), || async {
        let body: Value = server
            .get(&format!("/customers/{customer_id}/orders"))
            .await
            .json()
            .await
            .ok()?;
        (body["orders"].as_array()?.len() == count).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "{customer_id} did not reach {count} orders"
    );
}

/// A customer's orders waiting for payment are bounded in number and in units, and a line in
/// units: each is a 422 naming the limit; another customer is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_open_orders_are_bounded_in_number_units_and_line_size() {
    let Some((server, _data)) = start(
        "order_caps",
        &[
            "--max-open-orders",
            "3",
            "--max-reserved-units",
            "10",
            "--max-line-quantity",
            "5",
            "--payment-timeout",
            "120",
        ],
    )
    .await
    else {
        return;
    };
    let (product_id, _) = server.create_product("Mug", "", 4.5, 500, "Kitchen").await;
    let ada = server.register_customer("ada").await;
    // A line beyond 5 units, in a cart and in an order.
    let response = ada
        .post(
            "/carts/c-caps/items",
            json!({ "product_id": product_id, "quantity": 6 }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["field"], "quantity", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("at most 5"),
        "{body}"
    );
    let (status, body) = slow_order(&ada, &product_id, 6).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "lines[0].quantity", "{body}");
    // Three open orders (4 + 4 + 1 units), then the fourth is refused for their number.
    for (placed, quantity) in [4, 4, 1].into_iter().enumerate() {
        let (status, body) = slow_order(&ada, &product_id, quantity).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        orders_reach(&server, &ada.user_id, placed + 1).await;
    }
    let (status, body) = slow_order(&ada, &product_id, 1).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("at most 3 orders"),
        "{body}"
    );
    // Another customer: 5 + 5 units, then one more unit is beyond the 10 reserved.
    let grace = server.register_customer("grace").await;
    for (placed, quantity) in [5, 5].into_iter().enumerate() {
        let (status, body) = slow_order(&grace, &product_id, quantity).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        orders_reach(&server, &grace.user_id, placed + 1).await;
    }
    let (status, body) = slow_order(&grace, &product_id, 1).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "lines", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("at most 10 units"),
        "{body}"
    );
    // A checkout of a cart is bounded alike.
    let added = grace
        .post(
            "/carts/c-caps-2/items",
            json!({ "product_id": product_id, "quantity": 2 }),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    let response = grace
        .post(
            "/carts/c-caps-2/checkout",
            json!({ "payment_token": "tok_visa" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}
