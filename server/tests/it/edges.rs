//! The edges where hostile or careless input met defects: text a store cannot hold, Unicode
//! spellings of one word, query and header that disagree, and what `/metrics` lets a client
//! grow.

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Setup, TestApp, event_position};

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn product(name: &str, description: &str, category: &str) -> Value {
    json!({
        "name": name, "description": description, "price": 4.5,
        "stock_qty": 3, "category": category,
    })
}

/// A NUL (which PostgreSQL's text cannot hold) or another control character in any text field
/// is refused at the edge, naming the field, on both stores; the products read model keeps
/// going.
async fn control_characters_are_refused_naming_the_field(setup: Setup, test_name: &str) {
    let Some((server, _data)) = TestApp::spawn(setup, test_name).await else {
        return;
    };
    let cases = [
        ("name", product("Mug\u{0}", "", "Kitchen")),
        ("description", product("Mug", "A mug\u{0}", "Kitchen")),
        ("category", product("Mug", "", "Kit\u{0}chen")),
        ("name", product("Mug\u{1b}[31m", "", "Kitchen")),
    ];
    for (field, body) in &cases {
        let (status, body) = problem(server.post("/products", body.clone()).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        assert_eq!(body["field"], *field, "{body}");
        assert!(
            body["detail"].as_str().unwrap_or("").contains("control"),
            "{body}"
        );
    }
    let (product_id, _) = server
        .create_product("Mug", "Two lines\nof text", 4.5, 3, "Kitchen")
        .await;
    let (status, body) = problem(
        server
            .put(
                &format!("/products/{product_id}"),
                json!({ "name": "Mug\u{0}" }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "name");
    // A later change is still seen: nothing stopped the products read model.
    let response = server
        .put(
            &format!("/products/{product_id}"),
            json!({ "name": "Big mug" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let position = event_position(&response);
    let read: Value = server
        .get_at(&format!("/products/{product_id}"), position)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["name"], "Big mug");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_embedded() {
    control_characters_are_refused_naming_the_field(Setup::Embedded, "nul_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_on_postgres() {
    control_characters_are_refused_naming_the_field(Setup::PostgresRedis, "nul_postgres").await;
}

/// NFD and NFC spellings of a name are one product name to search and to the category filter;
/// a name of invisible characters only is refused like a blank one; lengths count what a person
/// sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_spellings_of_one_word_are_one_word() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "unicode").await else {
        return;
    };
    let nfd = "Cafe\u{301} crème";
    let (product_id, position) = server.create_product(nfd, "", 3.0, 1, "Cafe\u{301}s").await;
    let read: Value = server
        .get_at(&format!("/products/{product_id}"), position)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["name"], "Café crème", "stored in normal form C");
    assert_eq!(read["category"], "Cafés");
    for path in [
        "/search?q=caf%C3%A9&category=caf%C3%A9s".to_owned(),
        "/search?q=cafe%CC%81&category=cafe%CC%81s".to_owned(),
    ] {
        let body: Value = server
            .get_at(&path, position)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(body["total"], 1, "{path}: {body}");
    }
    for blank in ["\u{200B}", "\u{FEFF}\u{2060}", " \u{3000} "] {
        let (status, body) = problem(server.post("/products", product(blank, "", "c")).await).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{blank:?}: {body}"
        );
        assert_eq!(body["field"], "name");
    }
    // 200 visible characters, each of two code points, is a name of 200 characters.
    let long = "e\u{301}".repeat(200);
    let response = server.post("/products", product(&long, "", "c")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let (status, body) = problem(
        server
            .post("/products", product(&format!("{long}e"), "", "c"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("got 201"),
        "{body}"
    );
    server.stop().await;
}

/// `?min_position=` and `X-Min-Position` are both checked; the later one counts, and one beyond
/// the log's head is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_position_in_query_and_header_are_both_checked() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "min_position").await else {
        return;
    };
    let (product_id, position) = server.create_product("Mug", "", 4.5, 3, "Kitchen").await;
    let path = format!("/products/{product_id}");
    let ask = |query: String, header: Option<String>| {
        let mut request = server.client.get(server.url(&format!("{path}{query}")));
        if let Some(header) = header {
            request = request.header("x-min-position", header);
        }
        request.send()
    };
    let response = ask("?min_position=soon".into(), Some(position.to_string()))
        .await
        .expect("request");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "min_position");
    // A position beyond the log's head conflicts with the log, said once the wait is over.
    let response = ask(
        format!("?min_position={position}"),
        Some((position + 1_000_000).to_string()),
    )
    .await
    .expect("request");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "min_position");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("beyond the log's head"),
        "{body}"
    );
    let agreeing = ask(
        format!("?min_position={position}"),
        Some(position.to_string()),
    )
    .await
    .expect("request");
    assert_eq!(agreeing.status(), StatusCode::OK);
    server.stop().await;
}

/// Made-up methods do not grow `/metrics`, and every metric has its help text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_come_from_a_closed_set_and_every_metric_has_help() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "metrics").await else {
        return;
    };
    for n in 0..50 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{n}").as_bytes()).expect("method");
        server
            .client
            .request(method, server.url("/products"))
            .send()
            .await
            .expect("request");
    }
    server.get("/health").await;
    let text = server.get("/metrics").await.text().await.expect("metrics");
    assert!(!text.contains("MADEUP"), "a made-up method became a label");
    assert!(
        text.contains(r#"method="other""#),
        "made-up methods count as other:\n{text}"
    );
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(typed.contains(&"mercato_http_requests_total"), "{text}");
    for name in typed {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line"
        );
    }
    server.stop().await;
}

/// An order cancelled for want of stock says which product (by name) and how many were left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_stock_cancellation_names_the_product_and_what_was_available() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "out_of_stock").await else {
        return;
    };
    let (product_id, _) = server
        .create_product("Copper kettle", "", 30.0, 2, "Kitchen")
        .await;
    let order_id = server
        .place_order("ada", &[(product_id.as_str(), 5)], "tok_visa")
        .await;
    let cancelled = server::testing::eventually(std::time::Duration::from_secs(10), || async {
        let events: Value = server
            .get(&format!("/streams/order/{order_id}/events"))
            .await
            .json()
            .await
            .ok()?;
        events["events"]
            .as_array()?
            .iter()
            .find(|event| event["event_type"] == "OrderCancelled")
            .cloned()
    })
    .await;
    let (event, _) = cancelled.expect("the order was not cancelled");
    let detail = event["payload"]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("\"Copper kettle\"")
            && detail.contains(&product_id)
            && detail.contains("5 ordered, 2 available"),
        "{event}"
    );
    server.stop().await;
}

/// Answers the framework gives below the handlers are problem bodies too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_below_the_handlers_are_problem_bodies() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "below_handlers").await else {
        return;
    };
    for path in ["/products/%ff", "/orders/%c3%28", "/carts/%80/items"] {
        let response = server.get(path).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_client_error(), "{path}: {status}");
        assert_eq!(content_type, "application/problem+json", "{path}: {body}");
        assert_eq!(body["status"], status.as_u16(), "{path}: {body}");
        assert!(
            !body["detail"].as_str().unwrap_or("").is_empty(),
            "{path}: {body}"
        );
    }
    server.stop().await;
}

/// A new shop, where nothing is popular yet, recommends products in stock; once something is
/// popular it comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shop_recommends_products_in_stock() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "new_shop").await else {
        return;
    };
    let (kettle, _) = server
        .create_product("Kettle", "", 30.0, 4, "Kitchen")
        .await;
    let (_, _) = server
        .create_product("Sold out mug", "", 5.0, 0, "Kitchen")
        .await;
    let (teapot, position) = server
        .create_product("Teapot", "", 20.0, 2, "Kitchen")
        .await;
    // (The fallback reads the products read model, which may trail popularity's.)
    let expected = [teapot.clone(), kettle.clone()];
    let found = server::testing::eventually(std::time::Duration::from_secs(3), || async {
        let body: Value = server
            .get_at("/recommendations?customer_id=newcomer", position)
            .await
            .json()
            .await
            .ok()?;
        let ids: Vec<String> = body["items"]
            .as_array()?
            .iter()
            .filter_map(|item| item["product_id"].as_str().map(str::to_owned))
            .collect();
        (ids == expected).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "a new shop recommends its products in stock, newest first"
    );
    server.stop().await;
}

/// Sends `request` as raw bytes and answers what the server sent back until it closed the
/// connection (or `wait` passed).
async fn raw(server: &TestApp, request: &[u8], wait: std::time::Duration) -> String {
    exchange(server, request, wait, false).await
}

/// [`raw`], with the client's side shut down (half-closed) once the request is sent.
async fn raw_half_closed(server: &TestApp, request: &[u8], wait: std::time::Duration) -> String {
    exchange(server, request, wait, true).await
}

async fn exchange(
    server: &TestApp,
    request: &[u8],
    wait: std::time::Duration,
    half_close: bool,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    if half_close {
        stream.shutdown().await.expect("half-close");
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The JSON body of a raw answer, if it has one.
fn answer_json(answer: &str) -> Option<Value> {
    answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
}

/// HTTP at the edge of the protocol: an HTTP/1.1 request without Host is a 400, a body that
/// never arrives a 408 (not a 503 after the request timeout), and HTTP/2 without TLS (prior
/// knowledge) is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_edges_are_answered_as_the_rfcs_say() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "protocol_edges").await else {
        return;
    };
    let no_host = raw(
        &server,
        b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    assert!(no_host.contains("application/problem+json"), "{no_host}");
    assert!(no_host.contains("Host header"), "{no_host}");

    let started = std::time::Instant::now();
    let slow_request = format!(
        "POST /products HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na",
        server.credentials().expect("the test's key")
    );
    let slow = raw(
        &server,
        slow_request.as_bytes(),
        std::time::Duration::from_secs(9),
    )
    .await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(slow.contains("application/problem+json"), "{slow}");
    assert!(started.elapsed() < std::time::Duration::from_secs(9));

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2
        .get(server.url("/health"))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

/// A client that half-closes its side right after its request (as `curl`, `nc -N` and some
/// proxies do) still gets its answer, and its write runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_request_is_answered_and_runs() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "half_close").await else {
        return;
    };
    let body = r#"{"name":"Half-closed kettle","description":"","price":12.5,"stock_qty":3,"category":"Kitchen"}"#;
    let request = format!(
        "POST /products HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.credentials().expect("the test's key"),
        body.len()
    );
    for attempt in 0..20 {
        let answer = raw_half_closed(
            &server,
            request.as_bytes(),
            std::time::Duration::from_secs(5),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 201"),
            "attempt {attempt}: {answer:?}"
        );
        let written = answer_json(&answer)
            .unwrap_or_else(|| panic!("attempt {attempt}: no JSON answer in {answer:?}"));
        let id = written["product_id"]
            .as_str()
            .expect("the new product's id");
        let position = written["position"].as_u64().expect("its position");
        let product = server.get_at(&format!("/products/{id}"), position).await;
        assert_eq!(product.status(), StatusCode::OK, "attempt {attempt}");
    }
    server.stop().await;
}

/// Too many headers, or too many header bytes, get a 431 problem body that says the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_a_problem_body() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "big_headers").await else {
        return;
    };
    let many: String = (0..150).map(|i| format!("X-Filler-{i}: x\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(40 * 1024));
    for extra in [many, big] {
        let request =
            format!("GET /health HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n{extra}\r\n");
        let answer = raw(
            &server,
            request.as_bytes(),
            std::time::Duration::from_secs(5),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("at most 100 headers"), "{answer}");
    }
    server.stop().await;
}

/// A connection that never finishes its request head is closed after the header timeout
/// instead of staying open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_request_head_is_closed() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "slow_head").await else {
        return;
    };
    let started = std::time::Instant::now();
    let answer = raw(
        &server,
        b"GET /health HTTP/1.1\r\nHost: sh",
        server::listen::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(5),
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited < server::listen::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(4),
        "the connection stayed open {waited:?}: {answer:?}"
    );
    server.stop().await;
}

/// A price range whose low end is above its high end is not an error the document could
/// describe: it holds no price, so nothing matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inverted_price_range_matches_nothing() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "inverted_range").await else {
        return;
    };
    let (_, position) = server.create_product("Pan", "", 5.0, 3, "Kitchen").await;
    let body: Value = server
        .get_at("/search?min_price=1&max_price=10", position)
        .await
        .json()
        .await
        .expect("search");
    assert_eq!(body["total"], 1, "{body}");
    let response = server
        .get_at("/search?min_price=10&max_price=1", position)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("search");
    assert_eq!(body["total"], 0, "{body}");
    assert_eq!(body["hits"], serde_json::json!([]), "{body}");
    server.stop().await;
}

/// A request head the connection layer cannot read at all (a request line that is not one, a
/// Content-Length that is not a number, more headers than it parses) is answered with a problem
/// body too, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_request_heads_get_a_problem_body() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "unreadable_heads").await else {
        return;
    };
    let too_many: String = (0..300).map(|i| format!("X-Filler-{i}: x\r\n")).collect();
    let cases = [
        ("GARBAGE\r\n\r\n".to_owned(), "400", "request line"),
        (
            "POST /products HTTP/1.1\r\nHost: shop\r\nContent-Length: abc\r\n\r\n".to_owned(),
            "400",
            "Content-Length",
        ),
        (
            format!("GET /health HTTP/1.1\r\nHost: shop\r\n{too_many}\r\n"),
            "431",
            "at most 100 headers",
        ),
    ];
    for (request, status, needle) in cases {
        let answer = raw(
            &server,
            request.as_bytes(),
            std::time::Duration::from_secs(5),
        )
        .await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains("application/problem+json"), "{answer}");
        let body = answer_json(&answer).unwrap_or_else(|| panic!("no problem body in {answer:?}"));
        assert!(
            body["detail"].as_str().unwrap_or("").contains(needle),
            "{answer}"
        );
    }
    server.stop().await;
}

/// A checkout or an order that is refused placed nothing, so the payment token it brought is not
/// kept either: the vault holds the tokens of placed orders only, until their saga ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_checkout_keeps_no_payment_token() {
    let Some((server, data)) = TestApp::spawn(Setup::Embedded, "refused_checkout_vault").await
    else {
        return;
    };
    let guest = server.anonymous();
    let (product_id, _) = server.create_product("Mug", "", 4.5, 3, "Kitchen").await;
    assert_eq!(
        guest
            .post(
                "/carts/vault-cart/items",
                json!({"product_id": product_id, "quantity": 1})
            )
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        guest
            .delete(&format!("/carts/vault-cart/items/{product_id}"))
            .await
            .status(),
        StatusCode::OK
    );
    let refused = guest
        .post(
            "/carts/vault-cart/checkout",
            json!({"payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT, "an empty cart");
    let stranger = server.anonymous();
    let refused = stranger
        .post(
            "/carts/vault-cart/checkout",
            json!({"payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::NOT_FOUND,
        "another guest's cart"
    );
    let secrets = identity::SecretStore::open(&identity::identity_db_url(&data.store_url()))
        .await
        .expect("the secret store");
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_secrets")
        .fetch_one(secrets.pool())
        .await
        .expect("count");
    assert_eq!(kept, 0, "a refused checkout left its token in the vault");
    server.stop().await;
}

/// HEAD, which proxies and monitors send, is a GET without the body: it is admitted by the GET's
/// rule (not a 500 for a missing one), and refused as the GET would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_as_get_would_be() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "head_is_answered").await else {
        return;
    };
    let client = reqwest::Client::new();
    for path in [
        "/search?q=mug",
        "/health",
        "/orders/0b6c7a7e-4d2a-4c39-9f3e-2f1c1d0e5a11",
        "/events",
        "/sagas",
    ] {
        let get = client.get(server.url(path)).send().await.unwrap().status();
        let head = client.head(server.url(path)).send().await.unwrap();
        assert_eq!(head.status(), get, "HEAD {path}");
        assert!(!get.is_server_error(), "GET {path}: {get}");
    }
    assert_eq!(
        client
            .head(server.url("/events"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}
