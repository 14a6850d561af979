//! No secret anywhere (CONTRACT.md, "Identity and access"): payment tokens, password hashes,
//! refresh tokens and API keys never enter the event log, a read model, Kafka, a log line or an
//! answer; an event stored before the rule keeps its bytes (the hash chain covers them) and
//! every reader gets it through the upcaster that drops its token.
//!
//! The server runs as its own process with a debug log in JSON. Before it starts, a legacy
//! `OrderCreated` v1 carrying a payment token goes straight into the store. Customers then pay
//! with every token of the test gateway (approved, declined, never answering, answering after
//! the timeout), through `POST /orders` and through guest checkouts, and every order ends. Then
//! each token (and the customers' passwords, refresh tokens and password hashes, and the admin's
//! API key) is looked for in the global feed, the order and payment streams, `mercato events`,
//! the whole server log, every answer the test got, every table but the few whose job is to
//! hold a secret, and Redis; the legacy token is found in its stored bytes only. With the
//! `kafka` feature, every message the relay published is scanned too, together with the
//! personal data of a customer who is then erased.

use std::time::Duration;

use eventstore::{AppendRequest, EventMetadata, ExpectedVersion, NewEvent};
use reqwest::StatusCode;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{Api, Server, ServerData, Setup, eventually, mercato_on};
use crate::erasure::{
    Answers, Place, assert_nowhere, assert_somewhere, database_rows, feed, read_models_caught_up,
    redis_entries, stored_events, stream, turn,
};

/// Every token the test gateway knows.
const TOKENS: [&str; 4] = [
    "tok_visa",
    "tok_chargeDeclined",
    "tok_timeout",
    "tok_lateSuccess",
];

/// The token of the legacy `OrderCreated` v1, stored before tokens left the log.
const LEGACY_TOKEN: &str = "tok_legacy_secret";

/// JSON log lines, and payments that end within the test: a timeout of 1 s, and a late charge
/// 2 s after the call (after the timeout, so it is refunded).
const SERVE_ARGS: [&str; 6] = [
    "--log-format",
    "json",
    "--payment-timeout",
    "1",
    "--test-gateway-late-after",
    "2",
];

/// The tables whose job is to hold a secret, left out of the scan: the event log (the legacy
/// event keeps its bytes; it is scanned on its own), the secret store (credentials, keys, the
/// payment vault) and the test gateway's own ledger (the payment provider's records, outside
/// mercato).
fn holds_no_secret(table: &str) -> bool {
    ![
        "events",
        "test_gateway_ledger",
        "identity_settings",
        "credentials",
        "person_keys",
        "refresh_tokens",
        "one_time_tokens",
        "api_keys",
        "login_failures",
        "payment_secrets",
        "signing_keys",
    ]
    .contains(&table)
}

/// Appends a legacy `OrderCreated` v1 (the shape of `schemas/golden/OrderCreated.v1.json`)
/// carrying [`LEGACY_TOKEN`] straight to the store; answers the order's id.
async fn append_legacy_order(data: &ServerData) -> String {
    let store = eventstore::open(&data.store_url())
        .await
        .expect("open the store");
    let order_id = Uuid::new_v4().to_string();
    let payload = json!({
        "order_id": order_id,
        "customer_id": "alice-42",
        "lines": [
            { "product_id": Uuid::new_v4(), "quantity": 1, "unit_price_minor": 22_900 },
            { "product_id": Uuid::new_v4(), "quantity": 2, "unit_price_minor": 5_450 },
        ],
        "total_minor": 33_800,
        "payment_token": LEGACY_TOKEN,
        "cart_id": "cart-7f3a",
    });
    let event = NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "OrderCreated".to_owned(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: RawValue::from_string(payload.to_string()).expect("a payload"),
        metadata: EventMetadata {
            correlation_id: "legacy-order".to_owned(),
            causation_id: "legacy-order".to_owned(),
            saga_id: None,
            actor: "alice-42".to_owned(),
            source: "command-api".to_owned(),
            traceparent: None,
            tracestate: None,
        },
    };
    store
        .append(AppendRequest::new(
            "order",
            &order_id,
            ExpectedVersion::Any,
            vec![event],
        ))
        .await
        .expect("append the legacy event");
    order_id
}

/// The values of `query` (one text column) in the secret store.
async fn secret_store_values(data: &ServerData, query: &str) -> Vec<String> {
    match &data.database {
        Some(database) => {
            let pool = sqlx::PgPool::connect(database.url())
                .await
                .expect("connect to PostgreSQL");
            let values = sqlx::query_scalar(query)
                .fetch_all(&pool)
                .await
                .expect(query);
            pool.close().await;
            values
        }
        None => {
            let path = data.data_dir.path().join("mercato-identity.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("open the secret store");
            let values = sqlx::query_scalar(query)
                .fetch_all(&pool)
                .await
                .expect(query);
            pool.close().await;
            values
        }
    }
}

/// The shop after every token paid: the server, what it answered, and what to look for.
struct PaidShop {
    server: Server,
    answers: Answers,
    /// Every order but the legacy one, with the client that reads it.
    orders: Vec<(Api, String)>,
    legacy_order: String,
    /// The product every order bought.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    product_id: String,
    /// The other secrets: passwords, refresh tokens, password hashes, the admin's API key.
    other_secrets: Vec<String>,
}

/// The order once it ended: no longer `PENDING`, and for a late charge once it was refunded.
async fn ended(answers: &Answers, api: &Api, order_id: &str, token: &str) -> Value {
    let found = eventually(Duration::from_secs(60), || async {
        let (status, order) = answers.get(api, &format!("/orders/{order_id}")).await;
        let ended = status == StatusCode::OK
            && order["status"] != "PENDING"
            && (token != "tok_lateSuccess" || order["payment_status"] == "REFUNDED");
        ended.then_some(order)
    })
    .await;
    found
        .unwrap_or_else(|| panic!("order {order_id} ({token}) did not end within 60 s"))
        .0
}

/// Appends the legacy order, starts the server (debug log, `extra` after [`SERVE_ARGS`]) and
/// pays with every token, as customers (`POST /orders`) and as guests (cart checkout); waits
/// until every order ended and the read models caught up.
async fn pay_with_every_token(data: &ServerData, extra: &[&str]) -> PaidShop {
    let legacy_order = append_legacy_order(data).await;
    let mut args: Vec<&str> = SERVE_ARGS.to_vec();
    args.extend(extra);
    let server = Server::start_with_log_filter(data, "all", &args, "debug").await;
    let answers = Answers::default();
    let (product_id, _) = server
        .create_product("Vault lamp", "paid for in every way", 12.5, 100, "lighting")
        .await;
    let customers = [
        server.register_customer("Dee").await,
        server.register_customer("Eve").await,
    ];
    let mut orders = Vec::new();
    let mut guest_carts = Vec::new();
    for (index, token) in TOKENS.iter().enumerate() {
        let customer = &customers[index % customers.len()];
        let (status, placed) = answers
            .post(
                customer,
                "/orders",
                json!({
                    "lines": [{ "product_id": product_id, "quantity": 1 }],
                    "payment_token": token,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{token}: {placed}");
        let order_id = placed["order_id"].as_str().expect("order_id").to_owned();
        orders.push((customer.api.clone(), order_id, *token));

        let guest = server.anonymous();
        let cart_id = format!(
            "guest-{index}-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let (status, added) = answers
            .post(
                &guest,
                &format!("/carts/{cart_id}/items"),
                json!({ "product_id": product_id, "quantity": 1 }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{added}");
        let (status, checked_out) = answers
            .post(
                &guest,
                &format!("/carts/{cart_id}/checkout"),
                json!({ "payment_token": token }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{token}: {checked_out}");
        let order_id = checked_out["order_id"]
            .as_str()
            .expect("order_id")
            .to_owned();
        guest_carts.push((guest.clone(), cart_id));
        orders.push((guest, order_id, *token));
    }
    for (api, order_id, token) in &orders {
        let order = ended(&answers, api, order_id, token).await;
        let expected = if *token == "tok_visa" {
            "CONFIRMED"
        } else {
            "CANCELLED"
        };
        assert_eq!(order["status"], expected, "{token}: {order}");
    }
    // What guests, customers and operators read besides.
    for (guest, cart_id) in &guest_carts {
        let (status, cart) = answers.get(guest, &format!("/carts/{cart_id}")).await;
        assert_eq!(status, StatusCode::OK, "{cart}");
    }
    for customer in &customers {
        let (status, listed) = answers
            .get(customer, &format!("/customers/{}/orders", customer.user_id))
            .await;
        assert_eq!(status, StatusCode::OK, "{listed}");
    }
    for path in ["/metrics", "/ready"] {
        answers.get(&server, path).await;
    }
    // The legacy order as support and auditors read it.
    let (status, legacy) = answers
        .get(&server, &format!("/orders/{legacy_order}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{legacy}");
    read_models_caught_up(data).await;
    // Every token left the vault once its payment had an outcome.
    let emptied = eventually(Duration::from_secs(30), || async {
        secret_store_values(data, "SELECT reference FROM payment_secrets")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        emptied.is_some(),
        "the vault still holds tokens: {:?}",
        secret_store_values(data, "SELECT reference FROM payment_secrets").await
    );

    let mut other_secrets = Vec::new();
    for customer in &customers {
        other_secrets.push(customer.password.clone());
        other_secrets.push(customer.session.refresh_token.clone());
    }
    let hashes = secret_store_values(data, "SELECT password_hash FROM credentials").await;
    assert_eq!(hashes.len(), 2, "{hashes:?}");
    other_secrets.extend(hashes);
    let admin_key = std::fs::read_to_string(data.data_dir.path().join("test-admin-key"))
        .expect("the admin key");
    other_secrets.push(admin_key.trim().to_owned());
    PaidShop {
        server,
        answers,
        product_id,
        orders: orders
            .into_iter()
            .map(|(api, order_id, _)| (api, order_id))
            .collect(),
        legacy_order,
        other_secrets,
    }
}

/// `mercato events tail` on the data, in every format: each output is a place.
async fn events_command_output(data: &ServerData) -> Vec<Place> {
    let mut places = Vec::new();
    for format in ["json", "table", "cloudevents"] {
        let output = mercato_on(data, &["events", "tail", "--format", format])
            .env("RUST_LOG", "debug")
            .output()
            .await
            .expect("run mercato events tail");
        assert!(
            output.status.success(),
            "mercato events tail --format {format}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        places.push(Place::new(
            format!("mercato events tail --format {format}"),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    places
}

/// Looks for every secret of `shop` everywhere but Kafka; answers the places scanned, for
/// further checks.
async fn scan_for_secrets(data: &ServerData, shop: &PaidShop) -> Vec<Place> {
    let server = &shop.server;
    let answers = &shop.answers;
    let mut needles: Vec<String> = TOKENS.iter().map(|token| (*token).to_owned()).collect();
    needles.extend(shop.other_secrets.iter().cloned());

    // The stored bytes: the legacy event keeps its token (the hash chain covers it), and no
    // other event holds any secret.
    let stored = stored_events(data).await;
    let legacy: Vec<&Place> = stored
        .iter()
        .filter(|place| place.text.contains(LEGACY_TOKEN))
        .collect();
    assert_eq!(legacy.len(), 1, "the legacy token is in its own event only");
    assert!(
        legacy[0].name.contains("OrderCreated v1")
            && legacy[0]
                .name
                .ends_with(&format!("order/{})", shop.legacy_order)),
        "{}",
        legacy[0].name
    );
    assert_nowhere(&stored, &needles, "secrets in the stored events");
    let verified = mercato_on(data, &["audit", "verify"])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run mercato audit verify");
    assert_eq!(
        verified.status.code(),
        Some(0),
        "mercato audit verify: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    needles.push(LEGACY_TOKEN.to_owned());

    // The feeds: the global one, and every order's and payment's stream.
    let feed_events = feed(answers, server).await;
    assert!(
        feed_events.len() >= stored.len(),
        "the feed shows every event"
    );
    let legacy_event = feed_events
        .iter()
        .find(|event| event["stream_id"] == shop.legacy_order.as_str())
        .expect("the legacy event in the feed");
    assert_eq!(
        legacy_event["schema_version"],
        domain::current_schema_version("OrderCreated"),
        "{legacy_event}"
    );
    assert!(
        legacy_event["payload"].get("payment_token").is_none()
            && legacy_event["payload"]["payment_ref"].is_null(),
        "{legacy_event}"
    );
    let mut order_ids: Vec<&str> = shop
        .orders
        .iter()
        .map(|(_, order_id)| order_id.as_str())
        .collect();
    order_ids.push(&shop.legacy_order);
    for order_id in order_ids {
        assert!(!stream(answers, server, "order", order_id).await.is_empty());
        stream(answers, server, "payment", order_id).await;
    }
    // Every answer, the guests' orders read with their order tokens included.
    for (api, order_id) in &shop.orders {
        answers.get(api, &format!("/orders/{order_id}")).await;
    }
    let mut places = answers.places();
    places.extend(events_command_output(data).await);

    // Every table but the few whose job is a secret, and Redis.
    let rows = database_rows(data, holds_no_secret).await;
    for (_, order_id) in &shop.orders {
        assert_somewhere(&rows, order_id, "the read models");
    }
    assert_somewhere(&rows, &shop.legacy_order, "the read models");
    places.extend(rows);
    places.extend(redis_entries(data).await);

    // The whole log, at debug level.
    let log =
        std::fs::read_to_string(data.data_dir.path().join("server.log")).expect("the server's log");
    assert!(
        log.contains("\"level\":\"DEBUG\""),
        "the log has no debug lines"
    );
    places.push(Place::new("the server log", log));

    assert_nowhere(&places, &needles, "secrets outside the secret store");
    places
}

async fn no_secret_anywhere(setup: Setup, test_name: &str) {
    let _turn = turn(setup).await;
    let Some(data) = ServerData::new(setup, test_name).await else {
        return;
    };
    let shop = pay_with_every_token(&data, &[]).await;
    scan_for_secrets(&data, &shop).await;
    shop.server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_tokens_and_other_secrets_are_in_no_event_read_model_log_or_answer_embedded() {
    no_secret_anywhere(Setup::Embedded, "secrets_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_tokens_and_other_secrets_are_in_no_event_read_model_log_or_answer_on_postgres() {
    no_secret_anywhere(Setup::PostgresRedis, "secrets_postgres").await;
}

/// The Kafka relay's messages: no secret, and no personal data in the clear, before or after
/// the person's erasure.
#[cfg(feature = "kafka")]
mod kafka {
    use std::time::Duration;

    use reqwest::StatusCode;
    use serde_json::Value;
    use server::testing::broker::Broker;
    use tokio::process::Command;

    use super::{LEGACY_TOKEN, TOKENS, pay_with_every_token, scan_for_secrets};
    use crate::common::{Api, ServerData, Setup, eventually};
    use crate::erasure::{Place, assert_nowhere, register};

    const EVENT_TOPICS: [&str; 5] = [
        "product.events",
        "cart.events",
        "orders.events",
        "payments.events",
        "user.events",
    ];

    /// Every message of `topics`, read with kafka-python (`scripts/kafka-read.py`) until
    /// `expect` messages or 5 s of silence.
    async fn read_topics(bootstrap: &str, topics: &[&str], expect: usize) -> Vec<Value> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka-read.py");
        let output = Command::new("python3")
            .arg(script)
            .arg(bootstrap)
            .args(topics)
            .args(["--expect", &expect.to_string()])
            .output()
            .await
            .expect("run kafka-read.py");
        assert!(
            output.status.success(),
            "kafka-read.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    /// Waits until the relay published everything up to the store's head; answers how many
    /// events the store holds.
    async fn relay_caught_up(server: &Api, data: &ServerData) -> usize {
        let store = data.store().await;
        let head = store.head_position().await.expect("head");
        let reached = eventually(Duration::from_secs(60), || async {
            let ready: Value = server.get("/ready").await.json().await.ok()?;
            let position = ready["projections"]["kafka_relay"]["position"].as_u64()?;
            (position >= head).then_some(())
        })
        .await;
        assert!(
            reached.is_some(),
            "the relay did not publish up to {head} within 60 s"
        );
        store
            .read_all(0, 100_000)
            .await
            .expect("read the log")
            .len()
    }

    /// Every message, key, headers and value, as a place.
    fn message_places(messages: &[Value]) -> Vec<Place> {
        messages
            .iter()
            .map(|message| {
                Place::new(
                    format!(
                        "Kafka message {}/{}@{} ({})",
                        message["topic"].as_str().unwrap_or("?"),
                        message["partition"],
                        message["offset"],
                        message["headers"]["eventType"].as_str().unwrap_or("?")
                    ),
                    message.to_string(),
                )
            })
            .collect()
    }

    fn user_messages<'a>(messages: &'a [Value], user_id: &str) -> Vec<&'a Value> {
        messages
            .iter()
            .filter(|message| message["topic"] == "user.events" && message["key"] == user_id)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn kafka_messages_hold_no_secret_and_no_personal_data_in_the_clear() {
        let test_name = "kafka_messages_hold_no_secret_and_no_personal_data_in_the_clear";
        let Some(broker) = Broker::start(test_name).await else {
            return;
        };
        let data = ServerData::new(Setup::Embedded, test_name)
            .await
            .expect("embedded");
        let bootstrap = broker.bootstrap();
        let shop = pay_with_every_token(&data, &["--kafka-bootstrap", &bootstrap]).await;
        let server = &shop.server;
        let mut person = register(server, &shop.answers, "Fay").await;
        // An order and a cart's checkout with a shipping address: the order and cart messages
        // carry the person's address sealed too.
        // (Their answers show their address, as they should before the erasure: they are not
        // among the answers scanned after it.)
        let before_erasure = crate::erasure::Answers::default();
        crate::erasure::shop(&before_erasure, &mut person, &shop.product_id).await;
        // Their sagas end before the log is counted, so that nothing more is appended.
        for order_id in &person.orders {
            crate::erasure::ended_order(&before_erasure, &person.api, order_id).await;
        }
        let mut needles: Vec<String> = TOKENS.iter().map(|token| (*token).to_owned()).collect();
        needles.push(LEGACY_TOKEN.to_owned());
        needles.extend(shop.other_secrets.iter().cloned());
        needles.extend(person.needles());

        // Before the erasure: the person's messages carry sealed values only.
        let stored = relay_caught_up(server, &data).await;
        let before = read_topics(&bootstrap, &EVENT_TOPICS, stored).await;
        assert_eq!(before.len(), stored, "one message per stored event");
        let of_person = user_messages(&before, &person.user_id);
        for event_type in ["UserRegistered", "UserProfileChanged"] {
            let message = of_person
                .iter()
                .find(|message| message["headers"]["eventType"] == event_type)
                .unwrap_or_else(|| panic!("no {event_type} message for the person"));
            assert!(
                message["value"]["payload"].to_string().contains("\"pd1."),
                "{message}"
            );
        }
        assert_nowhere(
            &message_places(&before),
            &needles,
            "secrets or personal data in Kafka before the erasure",
        );

        let (status, erased) = shop
            .answers
            .keep("DELETE /users/me", person.api.delete("/users/me").await)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{erased}");
        let stored = relay_caught_up(server, &data).await;
        let after = read_topics(&bootstrap, &EVENT_TOPICS, stored).await;
        assert_eq!(after.len(), stored, "one message per stored event");
        let of_person = user_messages(&after, &person.user_id);
        assert!(
            of_person
                .iter()
                .any(|message| message["headers"]["eventType"] == "UserErased"),
            "no UserErased message: {of_person:?}"
        );
        // The legacy order went out upcast, without its token.
        let legacy = after
            .iter()
            .find(|message| message["key"] == shop.legacy_order.as_str())
            .expect("the legacy order's message");
        assert_eq!(
            legacy["value"]["schema_version"],
            domain::current_schema_version("OrderCreated"),
            "{legacy}"
        );
        assert!(
            legacy["value"]["payload"].get("payment_token").is_none(),
            "{legacy}"
        );
        assert_nowhere(
            &message_places(&after),
            &needles,
            "secrets or personal data in Kafka after the erasure",
        );

        // And everywhere else, the person's data included.
        let places = scan_for_secrets(&data, &shop).await;
        assert_nowhere(
            &places,
            &person.needles(),
            "the erased person's data outside Kafka",
        );
        shop.server.terminate().await;
    }
}
