//! Webhooks that payment gateways call: `POST /webhooks/stripe`. The route is open to anyone
//! (Stripe has no mercato credentials) and is only as powerful as its signature: the
//! [`PaymentWebhook`] behind it verifies the `Stripe-Signature` of the raw body before it reads
//! anything, and records what a verified event says about a payment (the `server` crate plugs
//! the Stripe adapter of `sagas` in). Without a webhook secret configured the route answers 404
//! saying so.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_common::Problem;
use serde_json::json;

use crate::CommandState;

/// What a verified webhook did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookAnswer {
    /// Whether the event's outcome is now recorded (false for a type that is ignored).
    pub recorded: bool,
    /// What happened, in words (no secret).
    pub detail: String,
}

/// Why a webhook was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookRefusal {
    /// The signature does not hold or the body is not an event (400): what is wrong.
    BadRequest(String),
    /// The outcome cannot be recorded now (503): the gateway delivers it again.
    Unavailable(String),
}

/// Where a gateway's webhook goes once its route received it.
#[async_trait::async_trait]
pub trait PaymentWebhook: Send + Sync + std::fmt::Debug {
    /// Verifies `payload` by `signature` (the `Stripe-Signature` header) and records it.
    async fn receive(
        &self,
        signature: Option<&str>,
        payload: &[u8],
    ) -> Result<WebhookAnswer, WebhookRefusal>;
}

/// `POST /webhooks/stripe`.
pub(crate) async fn stripe_webhook(
    State(state): State<CommandState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(webhook) = &state.payment_webhook else {
        return Problem::not_found(
            "the Stripe webhook is not configured on this server: set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret",
        )
        .into_response();
    };
    let signature = match headers.get("stripe-signature").map(|value| value.to_str()) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            return Problem::bad_request("the Stripe-Signature header is not ASCII text")
                .into_response();
        }
    };
    match webhook.receive(signature, &body).await {
        Ok(answer) => (
            StatusCode::OK,
            Json(json!({ "received": true, "recorded": answer.recorded, "detail": answer.detail })),
        )
            .into_response(),
        Err(WebhookRefusal::BadRequest(detail)) => {
            Problem::new(StatusCode::BAD_REQUEST, "webhook-signature", detail).into_response()
        }
        Err(WebhookRefusal::Unavailable(error)) => {
            Problem::unavailable_logged("the payment cannot be recorded now", &error)
                .into_response()
        }
    }
}
