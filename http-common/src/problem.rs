//! RFC 9457 problem answers, the JSON body extractor and the answers for failures every route
//! can meet (an invalid field, a store that conflicts or is down).

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::FieldError;
use eventstore::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest request body any route accepts.
pub const BODY_LIMIT: usize = 64 * 1024;

/// An error answer: `application/problem+json` with what the caller should fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The input field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://mercato.dev/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "malformed-request", detail)
    }

    pub fn invalid(field: &str, detail: impl Into<String>) -> Problem {
        let detail = detail.into();
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            format!("{field}: {detail}"),
        )
        .with_field(field)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// An infrastructure failure: logged in full here, answered without its details.
    pub fn internal(error: &dyn std::fmt::Display) -> Problem {
        tracing::error!(%error, "request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request; it was logged, try again later",
        )
    }
}

/// The answer for a field the domain refused: 422 naming the field.
pub fn field_problem(error: &FieldError) -> Problem {
    Problem::invalid(error.field, &error.message)
}

/// The answer for a store failure: conflict 409, unavailable 503, anything else 500 (logged).
pub fn store_problem(error: &StoreError) -> Problem {
    if error.is_conflict() {
        Problem::conflict(format!(
            "the resource was changed by another request at the same moment; retry: {error}"
        ))
    } else if error.is_unavailable() {
        Problem::unavailable(format!(
            "the event store is unavailable; retry later: {error}"
        ))
    } else {
        Problem::internal(error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// Parses a JSON body: malformed JSON is 400; a missing, unknown or mistyped field is 422 naming
/// the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request(
            "the request body is empty: send a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    let value = match parsed {
        Ok(value) => value,
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => {
                    let field = if path == "." { "body".to_owned() } else { path };
                    Problem::invalid(&field, strip_position(&inner.to_string()))
                }
                _ => Problem::bad_request(format!("the body is not valid JSON: {inner}")),
            });
        }
    };
    deserializer
        .end()
        .map_err(|error| Problem::bad_request(format!("the body is not valid JSON: {error}")))?;
    Ok(value)
}

/// serde's messages end with " at line 1 column 42"; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// A JSON request body, parsed by [`parse_json`]; an oversized body is 413.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        status,
                        "body-too-large",
                        format!("the body is larger than {BODY_LIMIT} bytes"),
                    )
                } else {
                    Problem::new(status, "malformed-request", rejection.body_text())
                }
            })?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        quantity: u32,
    }

    #[test]
    fn bad_bodies_are_told_apart_and_name_the_field() {
        let malformed = parse_json::<Sample>(b"{\"name\":").unwrap_err();
        assert_eq!(malformed.status, 400);
        let wrong_type = parse_json::<Sample>(br#"{"name":"a","quantity":"x"}"#).unwrap_err();
        assert_eq!(wrong_type.status, 422);
        assert_eq!(wrong_type.field.as_deref(), Some("quantity"));
        let negative = parse_json::<Sample>(br#"{"name":"a","quantity":-1}"#).unwrap_err();
        assert_eq!(negative.field.as_deref(), Some("quantity"));
        let unknown = parse_json::<Sample>(br#"{"name":"a","quantity":1,"x":2}"#).unwrap_err();
        assert_eq!(unknown.status, 422);
        assert!(
            unknown.detail.contains("unknown field"),
            "{}",
            unknown.detail
        );
        let missing = parse_json::<Sample>(br#"{"name":"a"}"#).unwrap_err();
        assert!(missing.detail.contains("quantity"), "{}", missing.detail);
        let trailing = parse_json::<Sample>(br#"{"name":"a","quantity":1} x"#).unwrap_err();
        assert_eq!(trailing.status, 400);
    }
}
