//! After checkout, end to end: addresses on the order, shipments and delivery, cancellations by
//! the customer and by staff with their compensation, partial refunds through the gateway,
//! returns that restock, receipts, and bank transfers paid by hand or cancelled at their
//! deadline; embedded and on PostgreSQL with Redis.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Api, Setup, TestApp, TestData, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// The order once `check` holds for it (read by `api`).
async fn order_when(
    api: &Api,
    order_id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let found = eventually(WAIT, || async {
        let response = api.get(&format!("/orders/{order_id}")).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        let order: Value = response.json().await.ok()?;
        check(&order).then_some(order)
    })
    .await;
    match found {
        Some((order, _)) => order,
        None => {
            let last: Value = api
                .get(&format!("/orders/{order_id}"))
                .await
                .json()
                .await
                .unwrap_or_default();
            panic!("order {order_id} did not become {what} within {WAIT:?}: {last}")
        }
    }
}

async fn stock_of(api: &Api, product_id: &str) -> i64 {
    let product: Value = api
        .get(&format!("/products/{product_id}"))
        .await
        .json()
        .await
        .expect("json");
    product["stock_qty"].as_i64().expect("stock_qty")
}

async fn stock_becomes(api: &Api, product_id: &str, expected: i64) {
    let reached = eventually(WAIT, || async {
        (stock_of(api, product_id).await == expected).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "the stock of {product_id} stayed {} instead of {expected}",
        stock_of(api, product_id).await
    );
}

async fn status_and_body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

fn address(name: &str) -> Value {
    json!({ "name": name, "line1": "Via Roma 1", "city": "Torino", "postal_code": "10121",
        "country": "it", "phone": "+39 011 123 4567" })
}

async fn ship_deliver_refund_return(setup: Setup, test_name: &str) {
    let Some(data) = TestData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let support = server.service(&data, "support").await;
    let (lamp, _) = server
        .create_product("Desk lamp", "brass", 10.0, 10, "lighting")
        .await;
    let (bulb, _) = server
        .create_product("Bulb", "warm white", 2.5, 5, "lighting")
        .await;
    let ann = server.register_customer("ann").await;
    let bob = server.register_customer("bob").await;
    let placed = ann
        .post(
            "/orders",
            json!({ "lines": [{ "product_id": lamp, "quantity": 3 }, { "product_id": bulb, "quantity": 2 }],
                "payment_token": "tok_visa", "shipping_address": address("Ann Rossi"),
                "billing_address": "Ann Rossi\nCorso Francia 5\nTorino" }),
        )
        .await;
    let (status, body) = status_and_body(placed).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order_id = body["order_id"].as_str().expect("order_id").to_owned();
    let order = order_when(&ann, &order_id, "CONFIRMED", |order| {
        order["status"] == "CONFIRMED"
    })
    .await;
    // The addresses come back as given (the country in upper case), opened with Ann's key.
    assert_eq!(order["shipping_address"]["name"], "Ann Rossi");
    assert_eq!(order["shipping_address"]["country"], "IT");
    assert_eq!(
        order["billing_address"],
        "Ann Rossi\nCorso Francia 5\nTorino"
    );
    assert_eq!(order["payment_method"], "card");
    assert_eq!(order["fulfilment_status"], "UNFULFILLED");
    assert_eq!(order["total"], json!(35));
    // Another customer sees no such order and cannot cancel it.
    assert_eq!(
        bob.get(&format!("/orders/{order_id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    let (status, _) = status_and_body(
        bob.post(&format!("/orders/{order_id}/cancel"), json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nor may a customer ship.
    let ship =
        |lines: Value| json!({ "lines": lines, "carrier": "DHL", "tracking_number": "JD0146" });
    let (status, _) = status_and_body(
        ann.post(
            &format!("/orders/{order_id}/shipments"),
            ship(json!([{ "product_id": lamp, "quantity": 1 }])),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Shipped in two parts; never more than was ordered.
    let (status, first) = status_and_body(
        support
            .post(
                &format!("/orders/{order_id}/shipments"),
                ship(json!([{ "product_id": lamp, "quantity": 2 }])),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, too_many) = status_and_body(
        support
            .post(
                &format!("/orders/{order_id}/shipments"),
                ship(json!([{ "product_id": lamp, "quantity": 2 }])),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{too_many}");
    assert!(
        too_many["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("3 ordered, 2 shipped"),
        "{too_many}"
    );
    order_when(&ann, &order_id, "PARTIALLY_SHIPPED", |order| {
        order["fulfilment_status"] == "PARTIALLY_SHIPPED"
    })
    .await;
    // Shipped: the customer can no longer cancel.
    let (status, refused) = status_and_body(
        ann.post(&format!("/orders/{order_id}/cancel"), json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let (status, second) = status_and_body(
        support
            .post(
                &format!("/orders/{order_id}/shipments"),
                ship(json!([{ "product_id": lamp, "quantity": 1 }, { "product_id": bulb, "quantity": 2 }])),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let order = order_when(&ann, &order_id, "SHIPPED", |order| {
        order["fulfilment_status"] == "SHIPPED"
    })
    .await;
    assert_eq!(order["shipments"].as_array().map(Vec::len), Some(2));
    for shipment in [&first, &second] {
        let shipment_id = shipment["shipment_id"].as_str().expect("shipment_id");
        let (status, body) = status_and_body(
            support
                .post(
                    &format!("/orders/{order_id}/shipments/{shipment_id}/delivered"),
                    json!({}),
                )
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    order_when(&ann, &order_id, "DELIVERED", |order| {
        order["fulfilment_status"] == "DELIVERED"
    })
    .await;
    let (status, _) = status_and_body(
        support
            .post(&format!("/orders/{order_id}/cancel"), json!({}))
            .await,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a delivered order is not cancelled"
    );

    // Refunds: partly, twice (an amount, then lines), then one beyond what is left is refused.
    let refunds_path = format!("/orders/{order_id}/refunds");
    let refund = |body: Value| support.post(&refunds_path, body);
    let (status, body) =
        status_and_body(refund(json!({ "amount": 10, "reason": "late" })).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) =
        status_and_body(refund(json!({ "lines": [{ "product_id": bulb, "quantity": 2 }] })).await)
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = status_and_body(refund(json!({ "amount": 20.01 })).await).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("20 left"),
        "{body}"
    );
    let order = order_when(&ann, &order_id, "refunded twice", |order| {
        order["refunds"].as_array().is_some_and(|refunds| {
            refunds.len() == 2 && refunds.iter().all(|refund| refund["status"] == "REFUNDED")
        })
    })
    .await;
    assert_eq!(order["refunded_total"], json!(15));
    assert_eq!(order["payment_status"], "PARTIALLY_REFUNDED");

    // A return of shipped units restocks them; never more than was shipped.
    let stock_before = stock_of(&server, &lamp).await;
    assert_eq!(stock_before, 7);
    let (status, body) = status_and_body(
        support
            .post(
                &format!("/orders/{order_id}/returns"),
                json!({ "lines": [{ "product_id": lamp, "quantity": 1 }], "restock": true }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    stock_becomes(&server, &lamp, 8).await;
    let (status, body) = status_and_body(
        support
            .post(
                &format!("/orders/{order_id}/returns"),
                json!({ "lines": [{ "product_id": lamp, "quantity": 3 }], "restock": true }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // The receipt: the owner's and support's, as JSON and as a page; nobody else's.
    let receipt: Value = ann
        .get(&format!("/orders/{order_id}/receipt"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(receipt["lines"][0]["name"], "Desk lamp");
    assert_eq!(receipt["lines"][0]["amount"], json!(30));
    assert_eq!(receipt["paid_total"], json!(35));
    assert_eq!(receipt["net_total"], json!(20));
    let page = support
        .send(
            "/receipt",
            support
                .request(reqwest::Method::GET, &format!("/orders/{order_id}/receipt"))
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let page = page.text().await.expect("text");
    assert!(
        page.contains("Desk lamp") && page.contains("Via Roma 1"),
        "{page}"
    );
    assert_eq!(
        bob.get(&format!("/orders/{order_id}/receipt"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

async fn cancel_and_bank_transfer(setup: Setup, test_name: &str) {
    let Some(data) = TestData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start_with(&data, "all", &["--bank-transfer-timeout", "3"]).await;
    let support = server.service(&data, "support").await;
    let (kettle, _) = server
        .create_product("Kettle", "steel", 20.0, 10, "kitchen")
        .await;
    let ann = server.register_customer("ann").await;

    // Cancelled by its customer before shipment: stock back, the charge refunded once.
    let placed: Value = ann
        .post(
            "/orders",
            json!({ "lines": [{ "product_id": kettle, "quantity": 2 }], "payment_token": "tok_visa" }),
        )
        .await
        .json()
        .await
        .expect("json");
    let order_id = placed["order_id"].as_str().expect("order_id").to_owned();
    order_when(&ann, &order_id, "CONFIRMED", |order| {
        order["status"] == "CONFIRMED"
    })
    .await;
    stock_becomes(&server, &kettle, 8).await;
    let (status, body) = status_and_body(
        ann.post(
            &format!("/orders/{order_id}/cancel"),
            json!({ "reason": "wrong colour" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order = order_when(&ann, &order_id, "refunded", |order| {
        order["status"] == "CANCELLED" && order["payment_status"] == "REFUNDED"
    })
    .await;
    assert_eq!(order["cancel_reason"], "customer_request");
    assert_eq!(order["refunded_total"], json!(40));
    assert_eq!(order["refunds"].as_array().map(Vec::len), Some(1));
    stock_becomes(&server, &kettle, 10).await;
    // Asked again: nothing more happens.
    let (status, _) = status_and_body(
        ann.post(&format!("/orders/{order_id}/cancel"), json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let order: Value = ann
        .get(&format!("/orders/{order_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        order["refunds"].as_array().map(Vec::len),
        Some(1),
        "{order}"
    );
    assert_eq!(stock_of(&server, &kettle).await, 10);

    // A bank transfer nobody pays is cancelled at its deadline, and its stock released.
    let unpaid: Value = ann
        .post(
            "/orders",
            json!({ "lines": [{ "product_id": kettle, "quantity": 3 }], "payment_method": "bank_transfer",
                "shipping_address": address("Ann Rossi") }),
        )
        .await
        .json()
        .await
        .expect("json");
    let unpaid = unpaid["order_id"].as_str().expect("order_id").to_owned();
    stock_becomes(&server, &kettle, 7).await;
    let order = order_when(&ann, &unpaid, "cancelled at its deadline", |order| {
        order["status"] == "CANCELLED"
    })
    .await;
    assert_eq!(order["cancel_reason"], "payment_timeout");
    assert_eq!(order["payment_method"], "bank_transfer");
    stock_becomes(&server, &kettle, 10).await;

    // One paid by hand in time is confirmed; the wrong amount is refused, saying the right one.
    let paid: Value = ann
        .post(
            "/orders",
            json!({ "lines": [{ "product_id": kettle, "quantity": 1 }], "payment_method": "bank_transfer" }),
        )
        .await
        .json()
        .await
        .expect("json");
    let paid = paid["order_id"].as_str().expect("order_id").to_owned();
    order_when(&ann, &paid, "waiting for the transfer", |order| {
        order["payment_status"] == "REQUESTED"
    })
    .await;
    let (status, body) = status_and_body(
        support
            .post(
                &format!("/orders/{paid}/payments"),
                json!({ "amount": 19, "reference": "BANK-1" }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or_default().contains("20"),
        "{body}"
    );
    let (status, body) = status_and_body(
        support
            .post(
                &format!("/orders/{paid}/payments"),
                json!({ "amount": 20, "reference": "BANK-1" }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order = order_when(&ann, &paid, "CONFIRMED", |order| {
        order["status"] == "CONFIRMED"
    })
    .await;
    assert_eq!(order["payments"][0]["charge_id"], "received:BANK-1");
    // A card payment takes no bank reference, and a bank transfer no token.
    let (status, body) = status_and_body(
        ann.post(
            "/orders",
            json!({ "lines": [{ "product_id": kettle, "quantity": 1 }], "payment_method": "bank_transfer",
                "payment_token": "tok_visa" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_ship_deliver_refund_and_return_embedded() {
    ship_deliver_refund_return(Setup::Embedded, "after_checkout_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_ship_deliver_refund_and_return_on_postgres_and_redis() {
    ship_deliver_refund_return(Setup::PostgresRedis, "after_checkout_on_postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellations_compensate_and_unpaid_bank_transfers_end_at_their_deadline_embedded() {
    cancel_and_bank_transfer(Setup::Embedded, "cancel_and_bank_transfer_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellations_compensate_and_unpaid_bank_transfers_end_at_their_deadline_on_postgres() {
    cancel_and_bank_transfer(Setup::PostgresRedis, "cancel_and_bank_transfer_on_postgres").await;
}
