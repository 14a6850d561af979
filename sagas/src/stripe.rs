//! The Stripe adapter of the payment gateway port, and what Stripe's webhooks tell mercato.
//!
//! A charge is one PaymentIntent per order, created and confirmed at once
//! (`POST /v1/payment_intents` with `confirm=true`), its `Idempotency-Key` derived from the order
//! id, so that asking again (a retry, a run after a crash) answers the first PaymentIntent and
//! never charges twice. A refund is `POST /v1/refunds` with the refund's own key. Every call has
//! a timeout, and the API key never leaves the `Authorization` header: not in `Debug`, not in an
//! error.
//!
//! Stripe's webhooks (`payment_intent.succeeded`, `payment_intent.payment_failed`) are verified
//! by their `Stripe-Signature` ([`verify_signature`]) and recorded on the order's Payment stream
//! like a late charge ([`StripeWebhook::receive`], [`crate::checkout::record_gateway_answer`]),
//! with event ids derived from Stripe's event id: a redelivered webhook records nothing new, and
//! a webhook racing the saga's own answer leaves one `PaymentSucceeded`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventstore::EventStore;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use crate::SagaError;
use crate::checkout::{GatewayAnswer, Recorded, record_gateway_answer};
use crate::gateway::{ChargeOutcome, ChargeRequest, PaymentGateway, RefundRequest};

/// The Stripe API version every request is made with, so that an upgrade of the account's
/// default version changes nothing here.
pub const STRIPE_VERSION: &str = "2024-06-20";
/// Stripe's API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
/// The currency charged when none is configured.
pub const DEFAULT_CURRENCY: &str = "usd";
/// How long one call to Stripe may take, connection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a PaymentIntent that is still `processing` is looked at again.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How far a webhook's signature timestamp may be from now (Stripe's libraries' default).
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);
/// The `source` of the events a Stripe webhook records.
pub const WEBHOOK_SOURCE: &str = "stripe-webhook";

/// How the adapter reaches Stripe.
#[derive(Clone)]
pub struct StripeConfig {
    /// The secret API key (`sk_live_...`, `sk_test_...`, or a restricted `rk_...`).
    pub api_key: String,
    /// `https://api.stripe.com`, or a stand-in's address in tests.
    pub api_base: String,
    /// ISO 4217 code, lower case, of every charge (`usd`).
    pub currency: String,
    /// How long one call may take.
    pub request_timeout: Duration,
}

impl StripeConfig {
    /// The configuration for `api_key` with Stripe's address, `usd` and the default timeout.
    pub fn new(api_key: impl Into<String>) -> StripeConfig {
        StripeConfig {
            api_key: api_key.into(),
            api_base: DEFAULT_API_BASE.to_owned(),
            currency: DEFAULT_CURRENCY.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl fmt::Debug for StripeConfig {
    // Without the API key.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("StripeConfig")
            .field("api_key", &"***")
            .field("api_base", &self.api_base)
            .field("currency", &self.currency)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The Stripe adapter of [`PaymentGateway`].
#[derive(Clone)]
pub struct StripeGateway {
    client: reqwest::Client,
    config: StripeConfig,
}

impl fmt::Debug for StripeGateway {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("StripeGateway")
            .field("config", &self.config)
            .finish()
    }
}

/// The `Idempotency-Key` of the charge of `order_id`: one PaymentIntent per order.
pub fn charge_key(order_id: Uuid) -> String {
    format!("mercato-charge-{order_id}")
}

/// What a Stripe answer means for a charge.
enum Intent {
    Answered(ChargeOutcome),
    /// `processing` or `requires_action`: not an answer yet (the PaymentIntent's id).
    Pending(String),
}

impl StripeGateway {
    /// The adapter of `config`; refused (naming the setting) when the key or the address
    /// cannot be used.
    pub fn new(config: StripeConfig) -> Result<StripeGateway, SagaError> {
        if config.api_key.trim().is_empty() || !config.api_key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(SagaError::Gateway(
                "STRIPE_API_KEY must be a Stripe secret key (sk_... or rk_...)".to_owned(),
            ));
        }
        let base = config.api_base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(SagaError::Gateway(format!(
                "STRIPE_API_BASE {base:?} must be an http:// or https:// address"
            )));
        }
        if config.currency.len() != 3 || !config.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(SagaError::Gateway(format!(
                "STRIPE_CURRENCY {:?} must be a three-letter ISO 4217 code such as usd",
                config.currency
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|error| SagaError::Gateway(format!("cannot make the HTTP client: {error}")))?;
        let api_base = base.to_owned();
        let currency = config.currency.to_ascii_lowercase();
        Ok(StripeGateway {
            client,
            config: StripeConfig {
                api_base,
                currency,
                ..config
            },
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_base)
    }

    /// Sends a request with the key, the pinned version and `idempotency_key`; answers the
    /// status and the JSON body, or a transient error when Stripe cannot be reached.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, Value), SagaError> {
        let mut request = request
            .bearer_auth(&self.config.api_key)
            .header("Stripe-Version", STRIPE_VERSION);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let answer = request.send().await.map_err(|error| {
            SagaError::Transient(format!(
                "Stripe cannot be reached: {}",
                self.scrubbed(&error.without_url().to_string())
            ))
        })?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|error| {
            SagaError::Transient(format!(
                "Stripe's answer did not arrive: {}",
                self.scrubbed(&error.without_url().to_string())
            ))
        })?;
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, json))
    }

    /// `text` without the API key, should it hold it.
    fn scrubbed(&self, text: &str) -> String {
        text.replace(&self.config.api_key, "***")
    }

    /// The error of an answer that is not a success: transient (429, 5xx) or a refusal that
    /// says what to fix.
    fn failure(&self, what: &str, status: StatusCode, body: &Value) -> SagaError {
        let error = &body["error"];
        let message = self.scrubbed(error["message"].as_str().unwrap_or("no message"));
        let kind = error["type"].as_str().unwrap_or("unknown");
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return SagaError::Transient(format!(
                "Stripe answered {what} with {status} ({kind}): {message}"
            ));
        }
        match status {
            StatusCode::UNAUTHORIZED => SagaError::GatewayRefused(format!(
                "Stripe refused the API key ({status}): set STRIPE_API_KEY to a valid secret key of the account"
            )),
            StatusCode::FORBIDDEN => SagaError::GatewayRefused(format!(
                "Stripe's API key may not {what} ({status}): give the restricted key write access to PaymentIntents and Refunds, or use the secret key"
            )),
            _ => {
                let parameter = error["param"]
                    .as_str()
                    .map(|param| format!(" (parameter {param})"))
                    .unwrap_or_default();
                SagaError::GatewayRefused(format!(
                    "Stripe refused to {what} ({status}, {kind}){parameter}: {message}"
                ))
            }
        }
    }

    /// What a PaymentIntent object says about the charge.
    fn intent(&self, intent: &Value) -> Result<Intent, SagaError> {
        let id = intent["id"].as_str().unwrap_or_default().to_owned();
        match intent["status"].as_str() {
            Some("succeeded") if !id.is_empty() => {
                Ok(Intent::Answered(ChargeOutcome::Approved { charge_id: id }))
            }
            Some("requires_payment_method" | "canceled") => {
                Ok(Intent::Answered(ChargeOutcome::Declined {
                    reason: decline_reason(intent),
                }))
            }
            Some(
                "processing" | "requires_action" | "requires_confirmation" | "requires_capture",
            ) if !id.is_empty() => Ok(Intent::Pending(id)),
            other => Err(SagaError::Transient(format!(
                "Stripe answered a PaymentIntent without a known status ({other:?})"
            ))),
        }
    }
}

/// Why Stripe declined a PaymentIntent, in Stripe's words.
fn decline_reason(intent: &Value) -> String {
    let error = &intent["last_payment_error"];
    error["message"]
        .as_str()
        .or_else(|| error["decline_code"].as_str())
        .or_else(|| error["code"].as_str())
        .or_else(|| intent["cancellation_reason"].as_str())
        .unwrap_or("the payment was declined")
        .to_owned()
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, SagaError> {
        let order_id = request.order_id.to_string();
        let form = [
            ("amount", request.amount.minor().to_string()),
            ("currency", self.config.currency.clone()),
            ("payment_method", request.payment_token.clone()),
            ("confirm", "true".to_owned()),
            ("automatic_payment_methods[enabled]", "true".to_owned()),
            (
                "automatic_payment_methods[allow_redirects]",
                "never".to_owned(),
            ),
            ("metadata[order_id]", order_id),
        ];
        let key = charge_key(request.order_id);
        let (status, body) = self
            .send(
                self.client
                    .post(self.url("/v1/payment_intents"))
                    .form(&form),
                Some(&key),
            )
            .await?;
        let pending = if status.is_success() {
            match self.intent(&body)? {
                Intent::Answered(outcome) => return Ok(outcome),
                Intent::Pending(id) => id,
            }
        } else {
            let error = &body["error"];
            let card_error = error["type"].as_str() == Some("card_error");
            // A payment method Stripe does not know is the customer's to fix, as a decline is.
            let unknown_method = status == StatusCode::BAD_REQUEST
                && error["param"].as_str() == Some("payment_method");
            if (status == StatusCode::PAYMENT_REQUIRED && card_error) || unknown_method {
                let reason = error["message"]
                    .as_str()
                    .or_else(|| error["code"].as_str())
                    .unwrap_or("the card was declined");
                return Ok(ChargeOutcome::Declined {
                    reason: self.scrubbed(reason),
                });
            }
            return Err(self.failure("create a PaymentIntent", status, &body));
        };
        // Not answered yet: the PaymentIntent is looked at until it is (the caller's deadline
        // ends the wait; a webhook records what Stripe decides later).
        tracing::info!(order_id = %request.order_id, payment_intent = %pending, "Stripe has not decided the payment yet");
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let (status, body) = self
                .send(
                    self.client
                        .get(self.url(&format!("/v1/payment_intents/{pending}"))),
                    None,
                )
                .await?;
            if !status.is_success() {
                return Err(self.failure("read a PaymentIntent", status, &body));
            }
            if let Intent::Answered(outcome) = self.intent(&body)? {
                return Ok(outcome);
            }
        }
    }

    async fn refund(&self, request: &RefundRequest) -> Result<String, SagaError> {
        let form = [
            ("payment_intent", request.charge_id.clone()),
            ("amount", request.amount.minor().to_string()),
            ("metadata[order_id]", request.order_id.to_string()),
        ];
        let (status, body) = self
            .send(
                self.client.post(self.url("/v1/refunds")).form(&form),
                Some(&request.key),
            )
            .await?;
        if !status.is_success() {
            return Err(self.failure("refund", status, &body));
        }
        match (body["id"].as_str(), body["status"].as_str()) {
            (Some(id), Some("failed" | "canceled")) => Err(SagaError::GatewayRefused(format!(
                "Stripe's refund {id} of order {} {}: {}",
                request.order_id,
                body["status"].as_str().unwrap_or_default(),
                body["failure_reason"].as_str().unwrap_or("no reason given")
            ))),
            (Some(id), _) => Ok(id.to_owned()),
            (None, _) => Err(SagaError::Transient(
                "Stripe answered a refund without its id".to_owned(),
            )),
        }
    }
}

/// Why a webhook's signature does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is not t=TIMESTAMP,v1=SIGNATURE: {0}")]
    Malformed(&'static str),
    #[error(
        "the Stripe-Signature timestamp is {0} s away from now, more than the 300 s allowed (a replayed or delayed request)"
    )]
    OutsideTolerance(i64),
    #[error(
        "no v1 signature of the Stripe-Signature header matches the body signed with the webhook secret (STRIPE_WEBHOOK_SECRET must be the endpoint's signing secret, and the body must arrive unchanged)"
    )]
    NoMatch,
}

/// Checks Stripe's `Stripe-Signature` header (`t=TIMESTAMP,v1=HEX[,v1=HEX...]`) of `payload`:
/// one `v1` must be the HMAC-SHA256 of `"{t}.{payload}"` under `secret` (compared in constant
/// time), and `t` within [`SIGNATURE_TOLERANCE`] of `now` (Unix seconds).
pub fn verify_signature(
    secret: &str,
    header: Option<&str>,
    payload: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header
        .map(str::trim)
        .filter(|header| !header.is_empty())
        .ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("a part without '='"));
        };
        match name {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t is not a whole number"))?,
                )
            }
            "v1" => signatures.push(value),
            // v0 (test-mode legacy) and schemes to come are not used.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t="))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1="));
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::NoMatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let matches = signatures.iter().any(|signature| {
        hex::decode(signature).is_ok_and(|bytes| mac.clone().verify_slice(&bytes).is_ok())
    });
    if !matches {
        return Err(SignatureError::NoMatch);
    }
    let age = now.saturating_sub(timestamp);
    if age.unsigned_abs() > SIGNATURE_TOLERANCE.as_secs() {
        return Err(SignatureError::OutsideTolerance(age));
    }
    Ok(())
}

/// The webhook secret (`whsec_...`); never printed.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> WebhookSecret {
        WebhookSecret(secret.into())
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("WebhookSecret(***)")
    }
}

/// Why a webhook was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The signature does not hold: nothing was read or recorded.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Signed, but not a Stripe event.
    #[error("the body is not a Stripe event: {0}")]
    Malformed(String),
    /// The store failed: Stripe delivers it again later.
    #[error("the payment cannot be recorded now: {0}")]
    Unavailable(String),
}

/// What a webhook did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookReceipt {
    /// Its outcome was recorded on the order's Payment stream, or was there already.
    Recorded {
        order_id: Uuid,
        event_type: String,
        /// False when the payment already said so (a redelivery, or the saga's answer first).
        new: bool,
    },
    /// A type mercato does not act on, or a payment it cannot take: answered 200 so that
    /// Stripe does not deliver it again.
    Ignored { event_type: String, why: String },
}

/// Receives Stripe's webhooks for an event store.
#[derive(Clone)]
pub struct StripeWebhook {
    store: Arc<dyn EventStore>,
    secret: WebhookSecret,
}

impl fmt::Debug for StripeWebhook {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("StripeWebhook")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl StripeWebhook {
    pub fn new(store: Arc<dyn EventStore>, secret: WebhookSecret) -> StripeWebhook {
        StripeWebhook { store, secret }
    }

    /// Verifies `payload` by its `Stripe-Signature` header and records what it says about a
    /// payment: `payment_intent.succeeded` as a success (its PaymentIntent's id the charge id),
    /// `payment_intent.payment_failed` as a failure, each on the Payment stream of the order
    /// its `metadata.order_id` names, with event ids derived from Stripe's event id.
    pub async fn receive(
        &self,
        signature: Option<&str>,
        payload: &[u8],
    ) -> Result<WebhookReceipt, WebhookError> {
        verify_signature(
            &self.secret.0,
            signature,
            payload,
            chrono::Utc::now().timestamp(),
        )?;
        let event: Value = serde_json::from_slice(payload)
            .map_err(|error| WebhookError::Malformed(error.to_string()))?;
        let (Some(event_id), Some(event_type)) = (event["id"].as_str(), event["type"].as_str())
        else {
            return Err(WebhookError::Malformed(
                "an event has an id and a type".to_owned(),
            ));
        };
        let ignored = |why: &str| -> Result<WebhookReceipt, WebhookError> {
            Ok(WebhookReceipt::Ignored {
                event_type: event_type.to_owned(),
                why: why.to_owned(),
            })
        };
        let intent = &event["data"]["object"];
        let outcome = match event_type {
            "payment_intent.succeeded" => match intent["id"].as_str() {
                Some(id) => ChargeOutcome::Approved {
                    charge_id: id.to_owned(),
                },
                None => return Err(WebhookError::Malformed("a PaymentIntent without id".into())),
            },
            "payment_intent.payment_failed" => ChargeOutcome::Declined {
                reason: decline_reason(intent),
            },
            _ => return ignored("mercato does not act on this event type"),
        };
        let Some(order_id) = intent["metadata"]["order_id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            return ignored("the PaymentIntent names no mercato order (metadata.order_id)");
        };
        let answer = GatewayAnswer {
            order_id,
            outcome,
            cause: Uuid::new_v5(&order_id, format!("stripe-event/{event_id}").as_bytes()),
            causation_id: event_id.to_owned(),
            source: WEBHOOK_SOURCE.to_owned(),
        };
        match record_gateway_answer(self.store.as_ref(), &answer).await {
            Ok(Recorded::Refused(why)) => ignored(why),
            Ok(recorded) => Ok(WebhookReceipt::Recorded {
                order_id,
                event_type: event_type.to_owned(),
                new: recorded == Recorded::New,
            }),
            Err(error) => Err(WebhookError::Unavailable(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(payload);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_signature_holds_only_for_its_secret_body_and_time() {
        let (secret, body, now) = ("whsec_test", br#"{"id":"evt_1"}"#.as_slice(), 1_700_000_000);
        let good = sign(secret, now, body);
        let header = format!("t={now},v1={good}");
        assert_eq!(verify_signature(secret, Some(&header), body, now), Ok(()));
        // One of several v1 signatures (a secret being rolled) is enough; v0 is not used.
        let several = format!("t={now},v0={good},v1={},v1={good}", "00".repeat(32));
        assert_eq!(
            verify_signature(secret, Some(&several), body, now + 10),
            Ok(())
        );
        assert_eq!(
            verify_signature("whsec_other", Some(&header), body, now),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_signature(secret, Some(&header), br#"{"id":"evt_2"}"#, now),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_signature(secret, Some(&header), body, now + 301),
            Err(SignatureError::OutsideTolerance(301))
        );
        assert_eq!(
            verify_signature(secret, None, body, now),
            Err(SignatureError::Missing)
        );
        for malformed in ["v1=abc", "t=x,v1=abc", &format!("t={now}"), "garbage"] {
            assert!(
                matches!(
                    verify_signature(secret, Some(malformed), body, now),
                    Err(SignatureError::Malformed(_))
                ),
                "{malformed}"
            );
        }
    }

    #[test]
    fn debug_never_prints_the_api_key_or_the_webhook_secret() {
        let gateway = StripeGateway::new(StripeConfig::new("sk_test_hunter2")).unwrap();
        let printed = format!("{gateway:?} {:?}", WebhookSecret::new("whsec_hunter2"));
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
