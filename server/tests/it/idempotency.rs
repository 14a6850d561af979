//! `Idempotency-Key` on both stores: a retried order after a dropped connection is one order and
//! one charge; the same key with another body is 422; concurrent duplicates run once (the others
//! 409 or the replay); a guest's retried checkout gets the same order and token again; and a
//! retry whose first answer was never kept (its process died) runs again on the derived ids and
//! still places one order.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Api, Setup, TestApp, TestData, eventually};

/// POST `body` to `path` as `api` with `key`.
async fn post_with_key(api: &Api, path: &str, key: &str, body: &Value) -> reqwest::Response {
    api.send(
        path,
        api.request(reqwest::Method::POST, path)
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

fn replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true")
}

/// The customer's orders, as support staff reads them.
async fn orders_of(server: &TestApp, customer_id: &str) -> Vec<Value> {
    let response = server
        .get(&format!("/customers/{customer_id}/orders"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["orders"]
        .as_array()
        .or_else(|| body.as_array())
        .cloned()
        .unwrap_or_default()
}

async fn retried_orders_are_placed_once(setup: Setup, test_name: &str) {
    let Some(data) = TestData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let (product_id, _) = server.create_product("Mug", "", 4.5, 50, "Kitchen").await;
    let customer = server.register_customer("ada").await;
    let order = json!({ "lines": [{ "product_id": product_id, "quantity": 1 }], "payment_token": "tok_visa" });

    // The first attempt's connection drops before the answer (the client gives up at once);
    // the retry with the same key answers the one order.
    let dropped = customer
        .request(reqwest::Method::POST, "/orders")
        .header("idempotency-key", "order-1")
        .timeout(Duration::from_millis(1))
        .json(&order)
        .send()
        .await;
    assert!(dropped.is_err(), "the first attempt was meant to time out");
    let (first, _) = eventually(Duration::from_secs(10), || async {
        let response = post_with_key(&customer, "/orders", "order-1", &order).await;
        (response.status() != StatusCode::CONFLICT).then_some(response)
    })
    .await
    .expect("the retry answers once the first attempt ends");
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first_body: Value = first.json().await.unwrap();
    let order_id = first_body["order_id"].as_str().unwrap().to_owned();
    let again = post_with_key(&customer, "/orders", "order-1", &order).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert!(replayed(&again), "the retry is marked as a replay");
    let again_body: Value = again.json().await.unwrap();
    assert_eq!(again_body["order_id"], order_id.as_str());

    // The same key with another body: 422 naming the header.
    let other = json!({ "lines": [{ "product_id": product_id, "quantity": 2 }], "payment_token": "tok_visa" });
    let response = post_with_key(&customer, "/orders", "order-1", &other).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "Idempotency-Key", "{problem}");

    // Another caller's same key is another request.
    let grace = server.register_customer("grace").await;
    let response = post_with_key(&grace, "/orders", "order-1", &order).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(!replayed(&response));

    // Ten at once with one key: one order; the others wait their turn (409) or replay it.
    let concurrent: Vec<_> = (0..10)
        .map(|_| {
            let (customer, order) = (customer.api.clone(), order.clone());
            tokio::spawn(async move {
                let response = post_with_key(&customer, "/orders", "order-2", &order).await;
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, body)
            })
        })
        .collect();
    let mut second_ids = std::collections::HashSet::new();
    for task in concurrent {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::ACCEPTED => {
                second_ids.insert(body["order_id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert!(
                    body["type"]
                        .as_str()
                        .unwrap()
                        .ends_with("idempotency-key-in-use"),
                    "{body}"
                );
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(second_ids.len(), 1, "{second_ids:?}");

    // The customer has exactly the two orders, and the gateway charged each once.
    let orders = eventually(Duration::from_secs(10), || async {
        let orders = orders_of(&server, &customer.user_id).await;
        (orders.len() >= 2).then_some(orders)
    })
    .await
    .expect("the customer's orders")
    .0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        orders_of(&server, &customer.user_id).await.len(),
        2,
        "{orders:?}"
    );
    let db = data.read_db().await;
    let charged = eventually(Duration::from_secs(20), || async {
        let ledger = sagas::gateway::ledger(&db).await.ok()?;
        let mine: Vec<_> = ledger
            .iter()
            .filter(|entry| {
                let id = entry.order_id.to_string();
                id == order_id || second_ids.contains(&id)
            })
            .cloned()
            .collect();
        (mine.len() == 2 && mine.iter().all(|entry| entry.outcome == "charged")).then_some(mine)
    })
    .await
    .expect("both orders charged")
    .0;
    assert!(
        charged.iter().all(|entry| entry.charge_requests == 1),
        "{charged:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_orders_are_placed_once_embedded() {
    retried_orders_are_placed_once(Setup::Embedded, "idem_orders_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_orders_are_placed_once_on_postgres() {
    retried_orders_are_placed_once(Setup::PostgresRedis, "idem_orders_postgres").await;
}

/// A guest's checkout retried with its key gets the same order and order token again; when the
/// first answer was never kept (as if its process died before keeping it), the retry runs again
/// and the derived ids make it the same order, not a second one.
async fn retried_checkouts_place_one_order(setup: Setup, test_name: &str) {
    let Some(data) = TestData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let (product_id, _) = server.create_product("Cup", "", 3.0, 50, "Kitchen").await;
    let guest = server.anonymous();
    let cart = "/carts/c-idem-1";
    let added = post_with_key(
        &guest,
        &format!("{cart}/items"),
        "line-1",
        &json!({ "product_id": product_id, "quantity": 2 }),
    )
    .await;
    assert_eq!(added.status(), StatusCode::OK, "{:?}", added.text().await);
    // The same line again with its key: replayed, not added twice.
    let again = post_with_key(
        &guest,
        &format!("{cart}/items"),
        "line-1",
        &json!({ "product_id": product_id, "quantity": 2 }),
    )
    .await;
    assert!(replayed(&again));
    let checkout = json!({ "payment_token": "tok_visa" });
    let first = post_with_key(&guest, &format!("{cart}/checkout"), "pay-1", &checkout).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let second = post_with_key(&guest, &format!("{cart}/checkout"), "pay-1", &checkout).await;
    assert!(replayed(&second));
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["order_id"], second["order_id"]);
    assert_eq!(first["order_token"], second["order_token"]);

    // The kept answers are lost (the process died before keeping them): the retry runs again.
    let secrets = identity::SecretStore::open(&identity::identity_db_url(&data.store_url()))
        .await
        .expect("the secret store");
    sqlx::query("DELETE FROM idempotency_keys")
        .execute(secrets.pool())
        .await
        .expect("forget the kept answers");
    let third = post_with_key(&guest, &format!("{cart}/checkout"), "pay-1", &checkout).await;
    assert_eq!(third.status(), StatusCode::ACCEPTED);
    assert!(!replayed(&third));
    let third: Value = third.json().await.unwrap();
    assert_eq!(
        third["order_id"], first["order_id"],
        "the same order, not a second"
    );
    let line_again = post_with_key(
        &guest,
        &format!("{cart}/items"),
        "line-1",
        &json!({ "product_id": product_id, "quantity": 2 }),
    )
    .await;
    // The line's retry finds the first run's events (their ids derive from the key): it
    // answers them and adds nothing, though the cart is checked out since.
    assert_eq!(line_again.status(), StatusCode::OK);
    assert!(!replayed(&line_again));
    let order_id = first["order_id"].as_str().unwrap();
    let order: Value = guest
        .get(&format!("/orders/{order_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(order["lines"][0]["quantity"], 2, "{order}");
    // One order in the log for the cart.
    let store = data.store().await;
    let events = store.read_all(0, 10_000).await.unwrap();
    let created = events
        .iter()
        .filter(|event| event.event_type == "OrderCreated")
        .count();
    assert_eq!(created, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_checkouts_place_one_order_embedded() {
    retried_checkouts_place_one_order(Setup::Embedded, "idem_checkout_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_checkouts_place_one_order_on_postgres() {
    retried_checkouts_place_one_order(Setup::PostgresRedis, "idem_checkout_postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_key_is_400_saying_what_to_send() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "idem_malformed").await else {
        return;
    };
    let response = post_with_key(
        &server,
        "/products",
        "\"\"",
        &json!({ "name": "Mug", "description": "", "price": 4.5, "stock_qty": 1, "category": "Kitchen" }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{problem}"
    );
    // A created product replayed with its key: the same product, created once.
    let body = json!({ "name": "Mug", "description": "", "price": 4.5, "stock_qty": 1, "category": "Kitchen" });
    let first = post_with_key(&server, "/products", "\"p-1\"", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!replayed(&first));
    let first: Value = first.json().await.unwrap();
    let second = post_with_key(&server, "/products", "p-1", &body).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert!(replayed(&second));
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["product_id"], second["product_id"]);
    server.stop().await;
}
