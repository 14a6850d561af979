//! Card payments through Stripe, end to end: the saga charges a stand-in for Stripe's API (a
//! local server that holds each charge until the test lets it answer), and `POST
//! /webhooks/stripe` takes webhooks signed by Stripe's own Python package
//! (`scripts/stripe-sign.py`). A webhook before, during or after the charge's own answer leaves
//! one `PaymentSucceeded`; a success after the deadline is recorded and refunded; a webhook
//! whose signature does not hold changes nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Setup, TestApp, TestData, eventually};

const SECRET: &str = "whsec_mercatoTestSigningSecret0123456789";

/// One request the stand-in received: its path, idempotency key and form.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    idempotency_key: Option<String>,
    form: BTreeMap<String, String>,
}

/// The stand-in's state: what it saw, and the orders whose charge may answer.
#[derive(Debug, Default)]
struct Stand {
    seen: Mutex<Vec<Seen>>,
    released: Mutex<HashSet<String>>,
}

impl Stand {
    fn charges_of(&self, order_id: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|seen| {
                seen.path == "/v1/payment_intents"
                    && seen.form.get("metadata[order_id]").map(String::as_str) == Some(order_id)
            })
            .count()
    }

    fn refunds(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|seen| seen.path == "/v1/refunds")
            .cloned()
            .collect()
    }

    fn release(&self, order_id: &str) {
        self.released.lock().unwrap().insert(order_id.to_owned());
    }
}

/// The PaymentIntent id the stand-in gives an order.
fn intent_id(order_id: &str) -> String {
    format!("pi_{}", order_id.replace('-', ""))
}

async fn stand_in(
    State(stand): State<Arc<Stand>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (AxumStatus, axum::Json<Value>) {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    stand.seen.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        form: form.clone(),
    });
    let order_id = form.get("metadata[order_id]").cloned().unwrap_or_default();
    match uri.path() {
        "/v1/payment_intents" => {
            // Held until the test lets this order's charge answer (at most a minute).
            for _ in 0..3_000 {
                if stand.released.lock().unwrap().contains(&order_id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (
                AxumStatus::OK,
                axum::Json(intent(&order_id, "succeeded", &form["amount"])),
            )
        }
        "/v1/refunds" => (
            AxumStatus::OK,
            axum::Json(json!({
                "id": format!("re_{}", order_id.replace('-', "")), "object": "refund",
                "amount": form["amount"].parse::<i64>().unwrap_or(0), "currency": "usd",
                "payment_intent": form["payment_intent"], "status": "succeeded",
                "metadata": { "order_id": order_id }
            })),
        ),
        _ => (
            AxumStatus::NOT_FOUND,
            axum::Json(
                json!({ "error": { "message": "Unrecognized request URL", "type": "invalid_request_error" } }),
            ),
        ),
    }
}

/// A PaymentIntent of `order_id` (Stripe's object, trimmed to what webhooks and answers use).
fn intent(order_id: &str, status: &str, amount: &str) -> Value {
    json!({
        "id": intent_id(order_id), "object": "payment_intent",
        "amount": amount.parse::<i64>().unwrap_or(0), "currency": "usd",
        "capture_method": "automatic", "confirmation_method": "automatic",
        "latest_charge": format!("ch_{}", order_id.replace('-', "")),
        "livemode": false, "metadata": { "order_id": order_id },
        "payment_method": "pm_1MtwBwLkdIwHu7ixcnnFSsmx", "status": status,
        "last_payment_error": if status == "succeeded" { Value::Null } else {
            json!({ "code": "card_declined", "message": "Your card was declined.", "type": "card_error" })
        }
    })
}

/// A Stripe event of `event_type` about `order_id`'s PaymentIntent.
fn event(event_id: &str, event_type: &str, order_id: &str) -> String {
    let status = if event_type == "payment_intent.succeeded" {
        "succeeded"
    } else {
        "requires_payment_method"
    };
    json!({
        "id": event_id, "object": "event", "api_version": "2024-06-20", "created": now(),
        "type": event_type, "livemode": false, "pending_webhooks": 1,
        "data": { "object": intent(order_id, status, "2500") },
        "request": { "id": null, "idempotency_key": null }
    })
    .to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The `Stripe-Signature` Stripe's Python package makes for `payload` at `timestamp`; `None`
/// when the package is missing (the test is then skipped, or fails with
/// `MERCATO_REQUIRE_SERVICES=1`).
fn stripe_signature(
    test_name: &str,
    secret: &str,
    timestamp: i64,
    payload: &str,
) -> Option<String> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/stripe-sign.py");
    let mut child = std::process::Command::new("python3")
        .args([script, secret, &timestamp.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(payload.as_bytes())
        .expect("write the payload");
    let output = child.wait_with_output().expect("python3");
    match output.status.code() {
        Some(0) => Some(String::from_utf8_lossy(&output.stdout).trim().to_owned()),
        Some(2) => {
            eventstore::testing::skip_or_fail(
                test_name,
                &format!(
                    "Stripe's Python package is missing ({}); scripts/test-setup installs it",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            );
            None
        }
        _ => panic!(
            "stripe-sign.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Sends `payload` to the webhook with `signature`; answers the status and the body.
async fn deliver(server: &TestApp, payload: &str, signature: Option<&str>) -> (StatusCode, Value) {
    let api = server.anonymous();
    let mut request = api
        .request(reqwest::Method::POST, "/webhooks/stripe")
        .header("content-type", "application/json")
        .body(payload.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = api.send("/webhooks/stripe", request).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The event types of the order's payment stream, in order.
async fn payment_events(data: &TestData, order_id: &str) -> Vec<String> {
    data.store()
        .await
        .read_stream("payment", order_id, 0, 100)
        .await
        .expect("read the payment stream")
        .into_iter()
        .map(|event| event.event_type)
        .collect()
}

async fn order_status(server: &TestApp, order_id: &str) -> String {
    let body: Value = server
        .get(&format!("/orders/{order_id}"))
        .await
        .json()
        .await
        .unwrap_or(Value::Null);
    body["status"].as_str().unwrap_or_default().to_owned()
}

async fn wait_for(what: &str, check: impl AsyncFn() -> bool) {
    let check = &check;
    let waited = eventually(Duration::from_secs(20), move || async move {
        check().await.then_some(())
    })
    .await;
    assert!(waited.is_some(), "{what} did not happen within 20 s");
}

fn count(events: &[String], event_type: &str) -> usize {
    events.iter().filter(|name| *name == event_type).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_webhooks_record_each_payment_outcome_once_and_a_late_success_is_refunded() {
    let test_name = "stripe_webhooks";
    // Stripe's package must be there before anything starts.
    if stripe_signature(test_name, SECRET, now(), "{}").is_none() {
        return;
    }
    let Some(data) = TestData::new(Setup::Embedded, test_name).await else {
        return;
    };
    let stand = Arc::new(Stand::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_base = format!("http://{}", listener.local_addr().expect("address"));
    let app = Router::new().fallback(stand_in).with_state(stand.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = TestApp::start_with(
        &data,
        "all",
        &[
            "--payment-timeout",
            "8",
            "--stripe-api-key",
            "sk_test_mercatoStandIn",
            "--stripe-api-base",
            &api_base,
            "--stripe-webhook-secret",
            SECRET,
        ],
    )
    .await;
    let (product_id, _) = server
        .create_product("Stripe kettle", "Boils for Stripe", 25.0, 50, "Kitchen")
        .await;
    let lines = [(product_id.as_str(), 1_u32)];
    let place = || server.place_order("ada", &lines, "pm_card_visa");
    let signed = |payload: &str, timestamp: i64| {
        stripe_signature(test_name, SECRET, timestamp, payload).expect("signed")
    };

    // Before the charge's answer: the webhook records the success, the answer adds nothing.
    let before = place().await;
    wait_for("the charge request", async || {
        stand.charges_of(&before) == 1
    })
    .await;
    let payload = event("evt_before", "payment_intent.succeeded", &before);
    // A bad signature, a signature of another secret, an old timestamp and no signature at all
    // are 400 and change nothing.
    let good = signed(&payload, now());
    let tampered = good.replace("v1=", "v1=00");
    let other_secret =
        stripe_signature(test_name, "whsec_another", now(), &payload).expect("signed");
    let old = signed(&payload, now() - 600);
    for (signature, says) in [
        (Some(tampered.as_str()), "no v1 signature"),
        (Some(other_secret.as_str()), "no v1 signature"),
        (Some(old.as_str()), "300 s"),
        (None, "missing"),
    ] {
        let (status, body) = deliver(&server, &payload, signature).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{signature:?}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{signature:?}: {body}");
        assert_eq!(payment_events(&data, &before).await, ["PaymentRequested"]);
    }
    let (status, body) = deliver(&server, &payload, Some(&good)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], true, "{body}");
    assert_eq!(
        payment_events(&data, &before).await,
        ["PaymentRequested", "PaymentSucceeded"]
    );
    // Stripe delivers it again: nothing new.
    let (status, body) = deliver(&server, &payload, Some(&signed(&payload, now()))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    stand.release(&before);
    wait_for("the confirmation", async || {
        order_status(&server, &before).await == "CONFIRMED"
    })
    .await;

    // During: the answer and the webhook at once.
    let during = place().await;
    wait_for("the charge request", async || {
        stand.charges_of(&during) == 1
    })
    .await;
    let payload = event("evt_during", "payment_intent.succeeded", &during);
    let signature = signed(&payload, now());
    stand.release(&during);
    let (status, body) = deliver(&server, &payload, Some(&signature)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for("the confirmation", async || {
        order_status(&server, &during).await == "CONFIRMED"
    })
    .await;

    // After the answer: the order is confirmed already, the webhook adds nothing.
    let after = place().await;
    stand.release(&after);
    wait_for("the confirmation", async || {
        order_status(&server, &after).await == "CONFIRMED"
    })
    .await;
    let payload = event("evt_after", "payment_intent.succeeded", &after);
    let (status, body) = deliver(&server, &payload, Some(&signed(&payload, now()))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for order_id in [&before, &during, &after] {
        let events = payment_events(&data, order_id).await;
        assert_eq!(
            count(&events, "PaymentSucceeded"),
            1,
            "{order_id}: {events:?}"
        );
        assert_eq!(
            count(&events, "PaymentRefunded"),
            0,
            "{order_id}: {events:?}"
        );
        assert_eq!(stand.charges_of(order_id), 1, "one PaymentIntent per order");
    }

    // After the deadline: the order is cancelled; Stripe's success arrives later by webhook,
    // is recorded, and the saga refunds the whole amount under the saga's refund key.
    let late = place().await;
    wait_for("the timeout", async || {
        order_status(&server, &late).await == "CANCELLED"
    })
    .await;
    let payload = event("evt_late", "payment_intent.succeeded", &late);
    let (status, body) = deliver(&server, &payload, Some(&signed(&payload, now()))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], true, "{body}");
    wait_for("the refund", async || {
        count(&payment_events(&data, &late).await, "PaymentRefunded") == 1
    })
    .await;
    assert_eq!(
        payment_events(&data, &late).await,
        [
            "PaymentRequested",
            "PaymentTimedOut",
            "PaymentSucceeded",
            "PaymentRefunded"
        ]
    );
    let refunds = stand.refunds();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(
        refunds[0].idempotency_key.as_deref(),
        Some(format!("{late}/refund").as_str())
    );
    assert_eq!(refunds[0].form["payment_intent"], intent_id(&late));
    assert_eq!(refunds[0].form["amount"], "2500");

    // A failure for an order that already succeeded, and a type mercato ignores: 200, nothing.
    let payload = event("evt_failed", "payment_intent.payment_failed", &after);
    let (status, body) = deliver(&server, &payload, Some(&signed(&payload, now()))).await;
    assert_eq!(
        (status, &body["recorded"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    let payload = json!({ "id": "evt_other", "object": "event", "type": "charge.refunded",
        "data": { "object": {} } })
    .to_string();
    let (status, body) = deliver(&server, &payload, Some(&signed(&payload, now()))).await;
    assert_eq!(
        (status, &body["recorded"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    assert_eq!(
        count(&payment_events(&data, &after).await, "PaymentFailed"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_webhook_secret_the_stripe_webhook_says_it_is_not_configured() {
    let Some(data) = TestData::new(Setup::Embedded, "stripe_webhook_off").await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let (status, body) = deliver(&server, "{}", Some("t=1,v1=00")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("STRIPE_WEBHOOK_SECRET")),
        "{body}"
    );
}
