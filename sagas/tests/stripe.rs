//! The Stripe adapter on the wire: a local HTTP server plays Stripe, checks every request the
//! adapter makes (method, path, headers, form fields) and answers with the bodies of Stripe's
//! API reference. And, when `STRIPE_TEST_API_KEY` is set, the same against Stripe's test mode.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use domain::Money;
use sagas::gateway::{ChargeOutcome, ChargeRequest, PaymentGateway, RefundRequest};
use sagas::stripe::{STRIPE_VERSION, charge_key};
use sagas::{SagaError, StripeConfig, StripeGateway};
use serde_json::{Value, json};
use uuid::Uuid;

const API_KEY: &str = "sk_test_wire_4eC39HqLyjWDarjtT1zdp7dc";

/// One request the stand-in received.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: Method,
    path: String,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    stripe_version: Option<String>,
    content_type: Option<String>,
    form: BTreeMap<String, String>,
}

#[derive(Default)]
struct Script {
    answers: VecDeque<(StatusCode, Value)>,
    seen: Vec<Seen>,
}

/// A stand-in for Stripe that answers its scripted answers in order.
#[derive(Clone)]
struct ScriptedStripe {
    script: Arc<Mutex<Script>>,
    base: String,
}

impl ScriptedStripe {
    async fn start(answers: Vec<(StatusCode, Value)>) -> ScriptedStripe {
        let script = Arc::new(Mutex::new(Script {
            answers: answers.into(),
            seen: Vec::new(),
        }));
        let app = Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        ScriptedStripe { script, base }
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    fn gateway(&self) -> StripeGateway {
        StripeGateway::new(StripeConfig {
            api_base: self.base.clone(),
            request_timeout: Duration::from_secs(5),
            ..StripeConfig::new(API_KEY)
        })
        .expect("gateway")
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII header").to_owned())
    };
    let form = url::form_urlencoded::parse(&body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let mut script = script.lock().unwrap();
    script.seen.push(Seen {
        method,
        path: uri.path().to_owned(),
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        stripe_version: header("stripe-version"),
        content_type: header("content-type"),
        form,
    });
    let (status, body) = script.answers.pop_front().unwrap_or((
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({ "error": { "message": "the script has no more answers", "type": "api_error" } }),
    ));
    (status, axum::Json(body))
}

/// A PaymentIntent object as Stripe's API reference shows it.
fn payment_intent(id: &str, status: &str, order_id: Uuid, amount: i64) -> Value {
    json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": if status == "succeeded" { amount } else { 0 },
        "automatic_payment_methods": { "allow_redirects": "never", "enabled": true },
        "capture_method": "automatic",
        "client_secret": format!("{id}_secret_YrKJUKribcBjcG8HVhfZluoGH"),
        "confirmation_method": "automatic",
        "created": 1_680_800_504,
        "currency": "usd",
        "last_payment_error": null,
        "latest_charge": "ch_3MtwBwLkdIwHu7ix28a3tqPa",
        "livemode": false,
        "metadata": { "order_id": order_id.to_string() },
        "payment_method": "pm_1MtwBwLkdIwHu7ixcnnFSsmx",
        "payment_method_types": ["card"],
        "status": status
    })
}

/// The `card_declined` error Stripe answers with HTTP 402.
fn card_declined(order_id: Uuid) -> Value {
    let mut intent = payment_intent(
        "pi_3NdeclinedLkdIwHu7ix0",
        "requires_payment_method",
        order_id,
        2_500,
    );
    intent["last_payment_error"] = json!({
        "code": "card_declined", "decline_code": "generic_decline",
        "message": "Your card was declined.", "type": "card_error"
    });
    json!({
        "error": {
            "code": "card_declined",
            "decline_code": "generic_decline",
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": "Your card was declined.",
            "payment_intent": intent,
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_wdUTs5r8ffSv1d",
            "type": "card_error"
        }
    })
}

/// A Refund object as Stripe's API reference shows it.
fn refund_object(id: &str, payment_intent: &str, amount: i64) -> Value {
    json!({
        "id": id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": "txn_1Mt0z2LkdIwHu7ixbyMAFK3h",
        "charge": "ch_3MtwBwLkdIwHu7ix28a3tqPa",
        "created": 1_680_651_763,
        "currency": "usd",
        "destination_details": { "card": { "type": "refund" }, "type": "card" },
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": null,
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": "succeeded",
        "transfer_reversal": null
    })
}

fn api_error() -> Value {
    json!({ "error": { "message": "An unknown error occurred", "type": "api_error" } })
}

fn charge_request(order_id: Uuid, token: &str) -> ChargeRequest {
    ChargeRequest {
        order_id,
        amount: Money::from_minor(2_500),
        payment_token: token.to_owned(),
    }
}

/// The request a charge of `order_id` must be, on the wire.
fn expected_charge(order_id: Uuid, token: &str) -> Seen {
    Seen {
        method: Method::POST,
        path: "/v1/payment_intents".to_owned(),
        authorization: Some(format!("Bearer {API_KEY}")),
        idempotency_key: Some(format!("mercato-charge-{order_id}")),
        stripe_version: Some(STRIPE_VERSION.to_owned()),
        content_type: Some("application/x-www-form-urlencoded".to_owned()),
        form: [
            ("amount", "2500"),
            ("currency", "usd"),
            ("payment_method", token),
            ("confirm", "true"),
            ("automatic_payment_methods[enabled]", "true"),
            ("automatic_payment_methods[allow_redirects]", "never"),
            ("metadata[order_id]", &order_id.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect(),
    }
}

#[tokio::test]
async fn a_charge_is_one_confirmed_payment_intent_per_order_even_when_retried() {
    let order_id = Uuid::new_v4();
    let stripe = ScriptedStripe::start(vec![
        (StatusCode::INTERNAL_SERVER_ERROR, api_error()),
        (
            StatusCode::OK,
            payment_intent("pi_3MtwBwLkdIwHu7ix28a3tqPa", "succeeded", order_id, 2_500),
        ),
    ])
    .await;
    let gateway = stripe.gateway();
    let request = charge_request(order_id, "pm_card_visa");
    // Stripe's 500 is worth retrying; the retry carries the same idempotency key, so Stripe
    // makes one PaymentIntent of the two requests.
    let first = gateway.charge(&request).await;
    assert!(
        matches!(&first, Err(error @ SagaError::Transient(_)) if error.is_retryable()),
        "{first:?}"
    );
    assert_eq!(
        gateway.charge(&request).await.expect("the retry"),
        ChargeOutcome::Approved {
            charge_id: "pi_3MtwBwLkdIwHu7ix28a3tqPa".to_owned()
        }
    );
    let expected = expected_charge(order_id, "pm_card_visa");
    assert_eq!(stripe.seen(), vec![expected.clone(), expected]);
    assert_eq!(charge_key(order_id), format!("mercato-charge-{order_id}"));
}

#[tokio::test]
async fn a_declined_card_is_a_decline_with_stripes_message() {
    let order_id = Uuid::new_v4();
    let stripe = ScriptedStripe::start(vec![
        (StatusCode::PAYMENT_REQUIRED, card_declined(order_id)),
        (
            StatusCode::OK,
            payment_intent("pi_3Ncanceled", "canceled", order_id, 2_500),
        ),
    ])
    .await;
    let gateway = stripe.gateway();
    assert_eq!(
        gateway
            .charge(&charge_request(order_id, "pm_card_chargeDeclined"))
            .await
            .expect("an answer"),
        ChargeOutcome::Declined {
            reason: "Your card was declined.".to_owned()
        }
    );
    // A PaymentIntent answered as canceled is declined too.
    assert!(matches!(
        gateway
            .charge(&charge_request(order_id, "pm_card_chargeDeclined"))
            .await,
        Ok(ChargeOutcome::Declined { .. })
    ));
    assert_eq!(
        stripe.seen(),
        vec![expected_charge(order_id, "pm_card_chargeDeclined"); 2]
    );
}

#[tokio::test]
async fn rate_limits_are_retried_and_a_refused_key_says_what_to_fix_without_the_key() {
    let order_id = Uuid::new_v4();
    let stripe = ScriptedStripe::start(vec![
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "error": { "message": "Too many requests", "type": "invalid_request_error", "code": "rate_limit" } }),
        ),
        (
            StatusCode::UNAUTHORIZED,
            json!({ "error": { "message": format!("Invalid API Key provided: {API_KEY}"), "type": "invalid_request_error" } }),
        ),
        (
            StatusCode::BAD_REQUEST,
            json!({ "error": { "message": format!("Invalid currency: usx (key {API_KEY})"), "param": "currency", "type": "invalid_request_error" } }),
        ),
    ])
    .await;
    let gateway = stripe.gateway();
    let request = charge_request(order_id, "pm_card_visa");
    let limited = gateway.charge(&request).await.expect_err("429");
    assert!(matches!(limited, SagaError::Transient(_)), "{limited:?}");
    for expected in ["STRIPE_API_KEY", "parameter currency"] {
        let refused = gateway.charge(&request).await.expect_err("refused");
        let text = refused.to_string();
        assert!(
            matches!(refused, SagaError::GatewayRefused(_)) && !refused.is_retryable(),
            "{refused:?}"
        );
        assert!(text.contains(expected), "{text}");
        assert!(!text.contains("4eC39HqLyjWDarjtT1zdp7dc"), "{text}");
    }
    assert_eq!(stripe.seen().len(), 3);
}

#[tokio::test]
async fn a_payment_intent_still_processing_is_looked_at_until_stripe_decides() {
    let order_id = Uuid::new_v4();
    let stripe = ScriptedStripe::start(vec![
        (
            StatusCode::OK,
            payment_intent("pi_3Nprocessing", "processing", order_id, 2_500),
        ),
        (
            StatusCode::OK,
            payment_intent("pi_3Nprocessing", "processing", order_id, 2_500),
        ),
        (
            StatusCode::OK,
            payment_intent("pi_3Nprocessing", "succeeded", order_id, 2_500),
        ),
    ])
    .await;
    let gateway = stripe.gateway();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        gateway.charge(&charge_request(order_id, "pm_card_visa")),
    )
    .await
    .expect("answered within 10 s")
    .expect("an answer");
    assert_eq!(
        outcome,
        ChargeOutcome::Approved {
            charge_id: "pi_3Nprocessing".to_owned()
        }
    );
    let seen = stripe.seen();
    assert_eq!(seen[0], expected_charge(order_id, "pm_card_visa"));
    for poll in &seen[1..] {
        assert_eq!(
            (
                poll.method.clone(),
                poll.path.as_str(),
                poll.idempotency_key.as_deref()
            ),
            (Method::GET, "/v1/payment_intents/pi_3Nprocessing", None)
        );
        assert_eq!(poll.authorization, Some(format!("Bearer {API_KEY}")));
    }
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn refunds_carry_their_own_keys_and_amounts() {
    let order_id = Uuid::new_v4();
    let pi = "pi_3MtwBwLkdIwHu7ix28a3tqPa";
    let stripe = ScriptedStripe::start(vec![
        (
            StatusCode::OK,
            refund_object("re_3MtwBwLkdIwHu7ix0bbCvPUc", pi, 1_000),
        ),
        (
            StatusCode::OK,
            refund_object("re_3MtwBwLkdIwHu7ix0bbCvPUc", pi, 1_000),
        ),
        (
            StatusCode::OK,
            refund_object("re_3NsecondLkdIwHu7ix0b", pi, 1_500),
        ),
    ])
    .await;
    let gateway = stripe.gateway();
    let refund = |amount: i64, key: &str| RefundRequest {
        order_id,
        charge_id: pi.to_owned(),
        amount: Money::from_minor(amount),
        key: key.to_owned(),
    };
    let first_key = format!("{order_id}/refund/1");
    let second_key = format!("{order_id}/refund/2");
    assert_eq!(
        gateway
            .refund(&refund(1_000, &first_key))
            .await
            .expect("refund"),
        "re_3MtwBwLkdIwHu7ix0bbCvPUc"
    );
    // Asked again (a rerun): the same key, and Stripe answers the first refund.
    assert_eq!(
        gateway
            .refund(&refund(1_000, &first_key))
            .await
            .expect("again"),
        "re_3MtwBwLkdIwHu7ix0bbCvPUc"
    );
    assert_eq!(
        gateway
            .refund(&refund(1_500, &second_key))
            .await
            .expect("second"),
        "re_3NsecondLkdIwHu7ix0b"
    );
    let expected = |amount: &str, key: &str| Seen {
        method: Method::POST,
        path: "/v1/refunds".to_owned(),
        authorization: Some(format!("Bearer {API_KEY}")),
        idempotency_key: Some(key.to_owned()),
        stripe_version: Some(STRIPE_VERSION.to_owned()),
        content_type: Some("application/x-www-form-urlencoded".to_owned()),
        form: [
            ("payment_intent", pi),
            ("amount", amount),
            ("metadata[order_id]", &order_id.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect(),
    };
    assert_eq!(
        stripe.seen(),
        vec![
            expected("1000", &first_key),
            expected("1000", &first_key),
            expected("1500", &second_key)
        ]
    );
}

/// Against Stripe's test mode, only where `STRIPE_TEST_API_KEY` holds a test key (`sk_test_...`);
/// without it the test passes at once (it is optional: no service the suite requires).
#[tokio::test]
async fn stripe_test_mode_charges_a_test_card_and_refunds_it_once() {
    let Ok(api_key) = std::env::var("STRIPE_TEST_API_KEY") else {
        return;
    };
    assert!(
        api_key.starts_with("sk_test_") || api_key.starts_with("rk_test_"),
        "STRIPE_TEST_API_KEY must be a test-mode key"
    );
    let gateway = StripeGateway::new(StripeConfig::new(api_key)).expect("gateway");
    let order_id = Uuid::new_v4();
    let request = ChargeRequest {
        order_id,
        amount: Money::from_minor(1_234),
        payment_token: "pm_card_visa".to_owned(),
    };
    let ChargeOutcome::Approved { charge_id } = gateway.charge(&request).await.expect("charge")
    else {
        panic!("pm_card_visa was not approved");
    };
    assert!(charge_id.starts_with("pi_"), "{charge_id}");
    // The same order again: the same PaymentIntent.
    assert_eq!(
        gateway.charge(&request).await.expect("charge again"),
        ChargeOutcome::Approved {
            charge_id: charge_id.clone()
        }
    );
    let declined = gateway
        .charge(&ChargeRequest {
            order_id: Uuid::new_v4(),
            payment_token: "pm_card_chargeDeclined".to_owned(),
            ..request.clone()
        })
        .await
        .expect("an answer");
    assert!(
        matches!(declined, ChargeOutcome::Declined { .. }),
        "{declined:?}"
    );
    let refund = RefundRequest {
        order_id,
        charge_id,
        amount: Money::from_minor(1_234),
        key: format!("{order_id}/refund"),
    };
    let refund_id = gateway.refund(&refund).await.expect("refund");
    assert!(refund_id.starts_with("re_"), "{refund_id}");
    assert_eq!(gateway.refund(&refund).await.expect("again"), refund_id);
}
