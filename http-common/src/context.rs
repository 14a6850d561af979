//! The request context every route gets (correlation id, principal, actor, peer address) and
//! the time limit of a request.

use std::time::Duration;

use std::net::IpAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use identity::Principal;
use uuid::Uuid;

use crate::problem::Problem;

pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The most headers a request may carry, and their most bytes (names and values together):
/// beyond either the request is answered 431 with a problem body. (The connection layer parses
/// twice as many headers before it gives up with an empty 431.)
pub const MAX_HEADER_COUNT: usize = 100;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The longest a request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest an operator's request whose work grows with the data may take (a whole log
/// verified, every dead letter sent back): [`Deadlines`] names them.
pub const LONG_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// How long each request may take: [`REQUEST_TIMEOUT`], or [`LONG_REQUEST_TIMEOUT`] for the
/// routes named (method and exact path, as the permission table marks them).
#[derive(Clone, Debug, Default)]
pub struct Deadlines {
    long: Vec<(axum::http::Method, &'static str)>,
}

impl Deadlines {
    /// Every request [`REQUEST_TIMEOUT`], but those to `long` (routes without path parameters).
    pub fn with_long(long: Vec<(axum::http::Method, &'static str)>) -> Deadlines {
        Deadlines { long }
    }

    /// The time a request to `method` `path` may take.
    pub fn of(&self, method: &axum::http::Method, path: &str) -> Duration {
        if self
            .long
            .iter()
            .any(|(long_method, long_path)| long_method == method && *long_path == path)
        {
            LONG_REQUEST_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        }
    }
}

/// The client's address as the connection layer resolved it (the peer, or the client a trusted
/// proxy names in `X-Forwarded-For`); without it the peer's address is the client's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// Who asked and which request this is: goes into every event's metadata and every log line.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// From `X-Correlation-Id` when it is 1 to 128 printable ASCII characters, else made here.
    pub correlation_id: String,
    /// Made here, one per request: the causation id of the events it appends.
    pub request_id: String,
    /// Who the request's credentials proved it comes from (set by [`crate::auth::authenticate`];
    /// anonymous until then).
    pub principal: Principal,
    /// The `actor` of the events the request causes: the principal's (`Principal::actor`), or
    /// `guest:<cart id>` where a guest's cart token was checked. `X-Actor` is ignored.
    pub actor: String,
    /// The session (refresh-token family) of an access token, for `DELETE /sessions/current`.
    pub session_id: Option<String>,
    /// The client's address ([`ClientAddress`], else the peer's), where the connection layer
    /// recorded it.
    pub peer: Option<IpAddr>,
    /// With an `Idempotency-Key`: what the request's event ids, and the ids of what it creates,
    /// are derived from; the same on every retry with that key from that caller, so that a
    /// retry that runs again finds the first run's events instead of deciding twice.
    pub cause_id: Option<Uuid>,
}

impl RequestContext {
    /// A new id for the `what` this request creates (`"order"`, `"product"`): derived from
    /// [`RequestContext::cause_id`] when there is one, else random.
    pub fn new_id(&self, what: &str) -> Uuid {
        match self.cause_id {
            Some(cause_id) => Uuid::new_v5(&cause_id, what.as_bytes()),
            None => Uuid::new_v4(),
        }
    }

    /// How the request's commands run: with event ids derived from the cause, when it has one.
    pub fn command_options(&self) -> eventstore::aggregate::CommandOptions {
        match self.cause_id {
            Some(cause_id) => eventstore::aggregate::CommandOptions {
                look_up_cause_first: true,
                ..eventstore::aggregate::CommandOptions::caused_by(cause_id)
            },
            None => eventstore::aggregate::CommandOptions::default(),
        }
    }

    /// The same request acting as the guest of cart `cart_id` (its token was checked).
    pub fn as_guest_of(&self, cart_id: &str) -> RequestContext {
        RequestContext {
            actor: identity::guest_actor(cart_id),
            ..self.clone()
        }
    }
}

fn header_text(request: &Request, name: &HeaderName) -> Option<String> {
    let value = request.headers().get(name)?.to_str().ok()?;
    let valid = (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| value.to_owned())
}

/// The request's work and span: a server span named by its route (`GET /products/{id}`) with
/// the HTTP semantic conventions' attributes, continuing the caller's trace when the request
/// carries a valid W3C `traceparent` (a malformed one is ignored), and carrying the correlation
/// id and, when traced, the trace and span ids that its log lines then show. Without export, or
/// when the trace is not sampled, a span with what the log lines need and nothing more
/// ([`telemetry::begin`]).
fn request_work(request: &Request, correlation_id: &str) -> telemetry::Work {
    use tracing::field::Empty;
    let method = request.method();
    let path = request.uri().path();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let traced = || {
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|route| route.as_str());
        tracing::info_span!(
            "request",
            otel.name = %match route {
                Some(route) => format!("{method} {route}"),
                None => method.to_string(),
            },
            otel.kind = "server",
            otel.status_code = Empty,
            method = %method,
            path = %path,
            http.request.method = %method,
            url.path = %path,
            http.route = route,
            http.response.status_code = Empty,
            network.protocol.version = protocol_version(request.version()),
            user_agent.original = header(axum::http::header::USER_AGENT.as_str()),
            correlation_id = %correlation_id,
            trace_id = Empty,
            span_id = Empty,
        )
    };
    let untraced = || {
        tracing::info_span!(
            "request",
            method = %method,
            path = %path,
            correlation_id = %correlation_id,
            trace_id = Empty,
        )
    };
    telemetry::begin(
        header("traceparent"),
        header("tracestate"),
        traced,
        untraced,
    )
}

/// HTTP's version as the semantic conventions write it.
fn protocol_version(version: axum::http::Version) -> &'static str {
    use axum::http::Version;
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Sets the request context, runs the request inside a span carrying the correlation id, answers
/// 503 when it takes longer than its deadline ([`Deadlines`]), and echoes `X-Correlation-Id`.
pub async fn request_context(
    axum::extract::State(deadlines): axum::extract::State<std::sync::Arc<Deadlines>>,
    mut request: Request,
    next: Next,
) -> Response {
    // HTTP/1.1 requires a Host header (RFC 9112, section 3.2); HTTP/2 carries :authority.
    if request.version() == axum::http::Version::HTTP_11
        && request.uri().authority().is_none()
        && !request.headers().contains_key(axum::http::header::HOST)
    {
        return Problem::bad_request(
            "an HTTP/1.1 request needs a Host header (RFC 9112, section 3.2)",
        )
        .into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADER_COUNT || header_bytes > MAX_HEADER_BYTES {
        return Problem::new(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "the request has {} headers of {header_bytes} bytes; at most {MAX_HEADER_COUNT} \
                 headers of {MAX_HEADER_BYTES} bytes in all are accepted",
                headers.len()
            ),
        )
        .into_response();
    }
    let context = RequestContext {
        correlation_id: header_text(&request, &CORRELATION_HEADER)
            .unwrap_or_else(|| Uuid::new_v4().to_string()),
        request_id: Uuid::new_v4().to_string(),
        principal: Principal::Anonymous,
        actor: Principal::Anonymous.actor(),
        session_id: None,
        cause_id: None,
        peer: request
            .extensions()
            .get::<ClientAddress>()
            .map(|ClientAddress(address)| *address)
            .or_else(|| {
                request
                    .extensions()
                    .get::<ConnectInfo<std::net::SocketAddr>>()
                    .map(|ConnectInfo(address)| address.ip())
            }),
    };
    let deadline = deadlines.of(request.method(), request.uri().path());
    let work = request_work(&request, &context.correlation_id);
    let correlation_id = context.correlation_id.clone();
    request.extensions_mut().insert(context);
    let started = std::time::Instant::now();
    let run = work.run(next.run(request));
    let mut response = match tokio::time::timeout(deadline, run).await {
        Ok(response) => response,
        Err(_elapsed) => Problem::unavailable(format!(
            "the request took longer than {} s; retry later",
            deadline.as_secs()
        ))
        .into_response(),
    };
    let span = work.span();
    if telemetry::enabled() && work.sampled() {
        span.record(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
        if response.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    work.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}
