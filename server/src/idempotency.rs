//! `Idempotency-Key` (IETF draft-ietf-httpapi-idempotency-key-header) on every route that
//! creates something ([`crate::policy::Rule::creates`]): the same key and request from the same
//! caller within 24 hours gets the first answer again, marked `Idempotent-Replayed: true`; the
//! same key with another request (another route or body) is 422; while the first is still
//! running, 409 with `Retry-After`.
//!
//! The answers are kept in the secret store ([`identity::IdempotencyRecords`]). A request that
//! runs with a key gets a cause id derived from the caller, the key and the request
//! ([`http_common::RequestContext::cause_id`]): its events' ids and the ids of what it creates
//! are derived from it, so a retry that runs again (its first run's process died before the
//! answer was kept) finds the first run's events, and a retried checkout can never place a
//! second order or charge twice.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_common::problem::BODY_LIMIT;
use http_common::{Problem, RequestContext};
use identity::{Claim, IdempotencyRecords, Principal, StoredAnswer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The header of a replayed answer.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest key taken.
pub const KEY_MAX_CHARS: usize = 255;
/// The largest answer kept (every creating route's answer is far smaller).
const ANSWER_LIMIT: usize = 256 * 1024;
/// The namespace of cause ids derived from keys.
const CAUSE_NAMESPACE: Uuid = Uuid::from_u128(0x5b1f_7d0e_3c4a_4f6e_9a2b_8d1c_0e7f_6a35);
/// The headers of an answer that are kept and given again.
const KEPT_HEADERS: &[&str] = &["content-type", "location", "x-event-position"];

/// The key of a request, if it sent one: a structured-field string (`"abc"`, as the draft
/// writes it) or the bare token many clients send. Anything else is a 400 saying what to send.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        Problem::bad_request(format!(
            "Idempotency-Key must be one key of 1 to {KEY_MAX_CHARS} printable ASCII \
             characters but `\"` and `\\`, bare or as a quoted string, such as a UUID \
             (8e03978e-40d5-43e8-bc93-6894a57f9324)"
        ))
        .with_field("Idempotency-Key")
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let text = value.to_str().map_err(|_| invalid())?;
    // A key's characters: printable ASCII but `"` and `\` (what a structured-field string
    // holds unescaped); a bare key neither starts nor ends with a space.
    let allowed =
        |byte: u8| (byte == b' ' || byte.is_ascii_graphic()) && byte != b'"' && byte != b'\\';
    let key = match text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(quoted) => quoted,
        None if text.starts_with(' ') || text.ends_with(' ') => return Err(invalid()),
        None => text,
    };
    if key.is_empty() || key.len() > KEY_MAX_CHARS || !key.bytes().all(allowed) {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

/// Whose keys a request's key is among: the account's or API key's; an anonymous caller's
/// (a guest's) by its address, the one thing its first write and its retries share (the first
/// write of a cart has no token yet, its retry has one).
fn scope_of(context: &RequestContext) -> String {
    match &context.principal {
        Principal::Customer { user_id } | Principal::Staff { user_id, .. } => {
            format!("user:{user_id}")
        }
        Principal::Service { key_id, .. } => format!("service:{key_id}"),
        Principal::Anonymous => match context.peer {
            Some(address) => format!("address:{address}"),
            None => "anonymous".to_owned(),
        },
    }
}

/// Runs a creating request with key `key` at most once for its caller (see the module).
pub async fn run_once(
    records: &IdempotencyRecords,
    key: String,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("the request body must be at most {BODY_LIMIT} bytes"),
            )
            .into_response();
        }
    };
    let Some(context) = parts.extensions.get::<RequestContext>().cloned() else {
        return Problem::internal(&"a request without its context reached the key check")
            .into_response();
    };
    let scope = scope_of(&context);
    let mut digest = Sha256::new();
    digest.update(parts.method.as_str());
    digest.update(b"\n");
    digest.update(
        parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |path| path.as_str()),
    );
    digest.update(b"\n");
    digest.update(&body);
    let fingerprint = hex::encode(digest.finalize());
    let claim = match records.begin(&scope, &key, &fingerprint).await {
        Ok(claim) => claim,
        Err(error) => {
            return Problem::unavailable_logged(
                "idempotency keys cannot be checked right now",
                &error,
            )
            .into_response();
        }
    };
    match claim {
        Claim::Replay(answer) => replayed(answer),
        Claim::Mismatch => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was used for another request (another route or body) within \
             24 hours: send a new key with each new request, and the same key only to retry \
             the same request",
        )
        .with_field("Idempotency-Key")
        .into_response(),
        Claim::Running => {
            let mut response = Problem::new(
                StatusCode::CONFLICT,
                "idempotency-key-in-use",
                "a request with this Idempotency-Key is still running: retry after 1 s \
                 (Retry-After) to get its answer",
            )
            .with_field("Idempotency-Key")
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Claim::Run => {
            let cause = format!("{scope}\n{key}\n{fingerprint}");
            if let Some(context) = parts.extensions.get_mut::<RequestContext>() {
                context.cause_id = Some(Uuid::new_v5(&CAUSE_NAMESPACE, cause.as_bytes()));
            }
            let response = next.run(Request::from_parts(parts, Body::from(body))).await;
            keep(records, &scope, &key, response).await
        }
    }
}

/// Keeps the answer of a request that ran with a key, and gives it. A failure to retry (5xx,
/// 429, 408) is not kept: the key is given up, and a retry runs again.
async fn keep(
    records: &IdempotencyRecords,
    scope: &str,
    key: &str,
    response: Response,
) -> Response {
    let status = response.status();
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        if let Err(error) = records.abandon(scope, key).await {
            tracing::warn!(%error, "cannot give an idempotency key up; a retry waits until its claim is stale");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, ANSWER_LIMIT).await {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(%error, "an answer to a request with an idempotency key could not be read");
            let _ = records.abandon(scope, key).await;
            return Problem::internal(&error).into_response();
        }
    };
    let headers = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    match String::from_utf8(body.to_vec()) {
        Ok(text) => {
            let answer = StoredAnswer {
                status: status.as_u16(),
                headers,
                body: text,
            };
            if let Err(error) = records.finish(scope, key, &answer).await {
                // The claim stays until it is stale; a retry then runs again, and finds this
                // run's events by their derived ids.
                tracing::warn!(%error, "cannot keep the answer of a request with an idempotency key");
            }
        }
        Err(_) => {
            let _ = records.abandon(scope, key).await;
        }
    }
    Response::from_parts(parts, Body::from(body))
}

/// A kept answer, given again.
fn replayed(answer: StoredAnswer) -> Response {
    metrics::counter!("mercato_idempotency_replays_total").increment(1);
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(IDEMPOTENCY_KEY, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn keys_are_structured_strings_or_bare_tokens_and_nothing_else() {
        assert_eq!(key_of(&headers(&[])).unwrap(), None);
        assert_eq!(
            key_of(&headers(&["\"8e03978e-40d5\""])).unwrap().as_deref(),
            Some("8e03978e-40d5")
        );
        assert_eq!(
            key_of(&headers(&["abc-123"])).unwrap().as_deref(),
            Some("abc-123")
        );
        for bad in [
            &["\"\""][..],
            &[""],
            &["\"a\"b\""],
            &["a", "b"],
            &["a\\b"],
            &[" a"],
            &["a "],
        ] {
            let problem = key_of(&headers(bad)).unwrap_err();
            assert_eq!(problem.status, 400, "{bad:?}");
            assert!(problem.detail.contains("Idempotency-Key"), "{bad:?}");
        }
        let long = "k".repeat(KEY_MAX_CHARS + 1);
        assert!(key_of(&headers(&[&long])).is_err());
    }
}
