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
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The input field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a failure whose details stay out of the answer: the id of the log line that holds
    /// them, to quote to the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://mercato.dev/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            error_id: None,
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

    /// An infrastructure failure: logged in full here with an error id, answered with the id
    /// and without its details.
    pub fn internal(error: &dyn std::fmt::Display) -> Problem {
        let error_id = new_error_id();
        tracing::error!(%error, %error_id, "request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!(
                "the server failed to handle the request; it was logged as {error_id}, try again later"
            ),
        )
        .with_error_id(error_id)
    }

    /// A backing service that cannot answer now: logged as a warning with an error id, answered
    /// 503 (retry) with `detail` and the id, never the service's own words.
    pub fn unavailable_logged(detail: &str, error: &dyn std::fmt::Display) -> Problem {
        let error_id = new_error_id();
        tracing::warn!(%error, %error_id, "{detail}");
        Problem::unavailable(format!("{detail}; retry later (logged as {error_id})"))
            .with_error_id(error_id)
    }

    /// 503 for work that runs one at a time and is running now: `detail`, and `Retry-After` in
    /// `retry_after_seconds`.
    pub fn busy(detail: impl Into<String>, retry_after_seconds: u32) -> Response {
        let mut response = Problem::unavailable(detail).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        response
    }

    pub fn with_error_id(mut self, error_id: String) -> Problem {
        self.error_id = Some(error_id);
        self
    }
}

/// A new error id: 16 hex digits, unique enough to find one log line.
pub fn new_error_id() -> String {
    let id = uuid::Uuid::new_v4().as_u128() as u64;
    format!("{id:016x}")
}

/// The answer for a field the domain refused: 422 naming the field.
pub fn field_problem(error: &FieldError) -> Problem {
    Problem::invalid(error.field, &error.message)
}

/// The answer for a store failure: conflict 409, unavailable 503, anything else 500 (logged).
pub fn store_problem(error: &StoreError) -> Problem {
    if error.is_conflict() {
        tracing::debug!(%error, "a write conflicted");
        Problem::conflict(
            "the resource was changed by another request at the same moment; read it again and retry",
        )
    } else if error.is_unavailable() {
        Problem::unavailable_logged("the event store is unavailable", error)
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
        // Every 503 is one to retry: say when.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
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
                    let message = strip_position(&inner.to_string());
                    let (missing, detail) = in_api_words(&message);
                    let field = match (missing, path.as_str()) {
                        (Some(missing), ".") => missing,
                        (Some(missing), parent) => format!("{parent}.{missing}"),
                        (None, ".") => "body".to_owned(),
                        (None, _) => path,
                    };
                    Problem::invalid(&field, detail)
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

/// A deserializer's message in the API's words: JSON types instead of Rust ones, no type names
/// of this code. Answers the field a "missing field" message names, and the detail.
fn in_api_words(message: &str) -> (Option<String>, String) {
    if let Some(field) = between(message, "missing field `", "`") {
        return (Some(field.to_owned()), "is required".to_owned());
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let accepted = rest.split_once("expected ").map(|(_, list)| {
            list.trim_start_matches("one of ")
                .replace('`', "")
                .replace(" or ", ", ")
        });
        return (
            None,
            match accepted {
                Some(list) => format!("unknown field {field:?}; the accepted fields are {list}"),
                None => format!("unknown field {field:?}; this object takes no fields"),
            },
        );
    }
    let (got, expected) = match message.split_once(", expected ") {
        Some((got, expected)) => (Some(got), expected),
        None => match message.strip_prefix("expected ") {
            Some(expected) => (None, expected),
            // A message of this code's own (a price's rules): it already says what to fix.
            None => return (None, message.to_owned()),
        },
    };
    let expected = json_type(expected);
    let got = got.map(|got| {
        let got = got
            .strip_prefix("invalid type: ")
            .or_else(|| got.strip_prefix("invalid value: "))
            .or_else(|| got.strip_prefix("invalid length "))
            .unwrap_or(got);
        match got.split_once(' ') {
            Some(("integer" | "floating", _)) => {
                format!("the number {}", between(got, "`", "`").unwrap_or("given"))
            }
            Some(("string", _)) => "a string".to_owned(),
            Some(("boolean", value)) => value.trim_matches('`').to_owned(),
            _ => match got {
                "map" => "an object".to_owned(),
                "sequence" => "an array".to_owned(),
                "null" | "unit value" => "null".to_owned(),
                other if other.chars().all(|c| c.is_ascii_digit()) => {
                    format!("{other} elements")
                }
                other => other.to_owned(),
            },
        }
    });
    let detail = match got {
        Some(got) => format!("must be {expected}, got {got}"),
        None => format!("must be {expected}"),
    };
    (None, detail)
}

/// A type a deserializer expected, in JSON's words.
fn json_type(expected: &str) -> String {
    let expected = expected.trim();
    let whole = |range: &str| format!("a whole number from {range}");
    match expected {
        "u8" => whole("0 to 255"),
        "u16" => whole("0 to 65535"),
        "u32" => whole("0 to 4294967295"),
        "u64" | "usize" => whole("0 to 18446744073709551615"),
        "i8" | "i16" | "i32" | "i64" | "isize" | "i128" | "u128" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a string" | "a borrowed string" | "a character" => "a string".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "an array".to_owned(),
        "UUID" | "a UUID" => "a UUID string".to_owned(),
        other if other.starts_with("struct ") || other.starts_with("a map") => {
            "a JSON object".to_owned()
        }
        other if other.starts_with("a sequence") || other.starts_with("tuple") => {
            "an array".to_owned()
        }
        other => other.to_owned(),
    }
}

/// What kind of JSON value `value` is, as a person says it.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "true or false",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The text between the first `start` and the next `end` in `text`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(start)?;
    rest.split_once(end).map(|(inside, _)| inside)
}

/// Parses a request body that must be a JSON object, as every body of the API is: anything else
/// is a 422 (serde would also read a struct from an array of its fields), then [`parse_json`].
pub fn parse_json_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first.is_some_and(|byte| *byte != b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(value) => Problem::invalid(
                "body",
                format!("must be a JSON object, got {}", json_kind(&value)),
            ),
            Err(error) => Problem::bad_request(format!("the body is not valid JSON: {error}")),
        });
    }
    parse_json(body)
}

/// serde's messages end with " at line 1 column 42"; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// Makes every error answer a problem body: an answer the framework gave below the handlers (a
/// path segment that is not UTF-8, a malformed query, ...) comes as plain text or empty; its
/// text becomes the problem's detail. (A middleware: `axum::middleware::map_response(as_problem)`.)
pub async fn as_problem(response: Response) -> Response {
    let status = response.status();
    // Plain text or nothing: what the framework answers. A JSON answer (a problem, `/ready`'s
    // report) is the application's own.
    let is_plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|value| value.as_bytes().starts_with(b"text/"));
    if !(status.is_client_error() || status.is_server_error()) || !is_plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let detail = if text.is_empty() {
        format!("{reason}: see GET /openapi.json for what this server accepts")
    } else {
        text
    };
    let kind = reason.replace(' ', "-");
    let mut answer = Problem::new(status, &kind, detail).into_response();
    // Keeps what the framework said besides the body (Allow, Retry-After, ...).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// How long a request body may take to arrive (408 after it).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A JSON request body, parsed by [`parse_json`]; an oversized body is 413, one that does not
/// arrive within [`BODY_TIMEOUT`] 408.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        Ok(JsonBody(parse_json_object(&bytes)?))
    }
}

/// An optional JSON body: an empty one is `None` (for routes whose body has only optional
/// fields, such as a cancellation's reason).
impl<S, T> axum::extract::OptionalFromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        Ok(Some(JsonBody(parse_json_object(&bytes)?)))
    }
}

/// Reads a request body whole, within [`BODY_TIMEOUT`] and [`BODY_LIMIT`].
async fn read_body<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<axum::body::Bytes, Problem> {
    let read = axum::body::Bytes::from_request(request, state);
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, read).await else {
        return Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            format!(
                "the request body did not arrive within {} s: send it whole, with a Content-Length that matches it",
                BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    read.map_err(|rejection| {
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
    })
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
        assert_eq!(missing.field.as_deref(), Some("quantity"));
        let trailing = parse_json::<Sample>(br#"{"name":"a","quantity":1} x"#).unwrap_err();
        assert_eq!(trailing.status, 400);
    }

    #[test]
    fn type_errors_speak_json_not_rust() {
        let cases: [(&[u8], &str, &str); 6] = [
            (
                br#"{"name":"a","quantity":"x"}"#,
                "quantity",
                "must be a whole number from 0 to 4294967295, got a string",
            ),
            (
                br#"{"name":"a","quantity":-1}"#,
                "quantity",
                "must be a whole number from 0 to 4294967295, got the number -1",
            ),
            (
                br#"{"name":"a","quantity":1.5}"#,
                "quantity",
                "must be a whole number from 0 to 4294967295, got the number 1.5",
            ),
            (
                br#"{"name":5,"quantity":1}"#,
                "name",
                "must be a string, got the number 5",
            ),
            (br#"["a",1]"#, "body", "must be a JSON object, got an array"),
            (br#"{"name":"a"}"#, "quantity", "is required"),
        ];
        for (body, field, detail) in cases {
            let problem = parse_json_object::<Sample>(body).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{problem:?}");
            assert_eq!(problem.detail, format!("{field}: {detail}"), "{problem:?}");
            for internal in ["u32", "i64", "struct", "Sample", "`"] {
                assert!(!problem.detail.contains(internal), "{problem:?}");
            }
        }
        let unknown = parse_json::<Sample>(br#"{"name":"a","quantity":1,"x":2}"#).unwrap_err();
        assert_eq!(
            unknown.detail,
            r#"x: unknown field "x"; the accepted fields are name, quantity"#
        );
    }
}
