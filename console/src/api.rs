//! How the console reaches mercato: through its HTTP API, as every other client does. In one
//! process (role `all`) the API's router is called in memory; in a process of its own (role
//! `console`) the API is called over HTTP at its address, with the visitor's address in
//! `X-Forwarded-For` (which the API believes from the proxies it trusts). Either way the request
//! passes the API's authentication, permission table, rate limits and validation, and the
//! console holds no key of its own.

use std::net::IpAddr;

use axum::Router;
use axum::body::Body;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_common::context::{CORRELATION_HEADER, ClientAddress};
use serde_json::Value;
use tower::ServiceExt;

/// The largest answer the console reads (a page of search hits is a few kB).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The API the pages call.
#[derive(Clone)]
pub struct Api {
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    /// The API's router of this process, called in memory.
    InProcess(Router),
    /// The API at `base` (`http://host:port`, no trailing slash), called over HTTP.
    Remote {
        base: String,
        client: reqwest::Client,
    },
}

/// How long a call over HTTP may take, connecting included.
const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl std::fmt::Debug for Api {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Api").finish_non_exhaustive()
    }
}

/// One call: who makes it (the page's visitor) and what it asks.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    /// The path and query, as a client would send them.
    pub target: String,
    pub body: Option<Value>,
    /// The visitor's access token.
    pub bearer: Option<String>,
    /// Further headers (`X-Cart-Token`, `X-Order-Token`, `Idempotency-Key`).
    pub headers: Vec<(HeaderName, String)>,
}

impl Call {
    pub fn get(target: impl Into<String>) -> Call {
        Call {
            method: Method::GET,
            target: target.into(),
            body: None,
            bearer: None,
            headers: Vec::new(),
        }
    }

    pub fn post(target: impl Into<String>, body: Value) -> Call {
        Call {
            method: Method::POST,
            body: Some(body),
            ..Call::get(target)
        }
    }

    pub fn delete(target: impl Into<String>) -> Call {
        Call {
            method: Method::DELETE,
            ..Call::get(target)
        }
    }

    pub fn bearer(mut self, token: Option<&str>) -> Call {
        self.bearer = token.map(str::to_owned);
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.headers
            .push((HeaderName::from_static(name), value.into()));
        self
    }
}

/// The API's answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// `Retry-After`, when the API asked to wait.
    pub retry_after: Option<String>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// What the API said went wrong (a problem's `detail`), for the visitor.
    pub fn problem(&self) -> String {
        let detail = self.body["detail"].as_str().or(self.body["title"].as_str());
        match (detail, &self.retry_after) {
            (Some(detail), Some(after)) => format!("{detail} (try again in {after} s)"),
            (Some(detail), None) => detail.to_owned(),
            (None, _) => format!("the shop answered {}", self.status),
        }
    }
}

/// Where the call comes from: the visitor's address and the page request's correlation id and
/// trace, so that the API's throttles count the visitor and its logs join the page's.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub client: Option<IpAddr>,
    pub correlation_id: Option<String>,
}

impl Api {
    /// The API served by this process: `router` with its middleware (authentication,
    /// permission table, limits).
    pub fn in_process(router: Router) -> Api {
        Api {
            transport: Transport::InProcess(router),
        }
    }

    /// The API served at `base` (`http://` or `https://`, host and port, no path), called over
    /// HTTP; the error says what is wrong with `base`.
    pub fn remote(base: &str) -> Result<Api, String> {
        let base = base.trim().trim_end_matches('/');
        let uri: http::Uri = base
            .parse()
            .map_err(|_| format!("{base:?} is not a URL such as http://command-api:8080"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "{base:?} is not an http:// or https:// URL with a host, such as http://command-api:8080"
            ));
        }
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(format!(
                "{base:?} has a path: give the API's address only, such as http://command-api:8080"
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(REMOTE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| format!("the HTTP client cannot be made: {error}"))?;
        Ok(Api {
            transport: Transport::Remote {
                base: base.to_owned(),
                client,
            },
        })
    }

    /// Makes `call` for the visitor at `origin`. A failure to reach the API is a 503 answer.
    pub async fn call(&self, call: Call, origin: &Origin) -> Answer {
        let mut builder = Request::builder()
            .method(call.method)
            .uri(&call.target)
            .header(http::header::HOST, "console");
        if let Some(token) = &call.bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(correlation_id) = &origin.correlation_id {
            builder = builder.header(CORRELATION_HEADER, correlation_id.as_str());
        }
        if let Some(context) = telemetry::TraceContext::current() {
            builder = builder.header("traceparent", context.traceparent);
            if let Some(state) = context.tracestate {
                builder = builder.header("tracestate", state);
            }
        }
        for (name, value) in &call.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                builder = builder.header(name, value);
            }
        }
        let body = match &call.body {
            Some(body) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let mut request = match builder.body(body) {
            Ok(request) => request,
            Err(error) => return unavailable(format!("the request could not be made: {error}")),
        };
        let router = match &self.transport {
            Transport::InProcess(router) => router,
            Transport::Remote { base, client } => {
                return remote_call(client, base, request, origin).await;
            }
        };
        if let Some(client) = origin.client {
            request.extensions_mut().insert(ClientAddress(client));
        }
        let response = match router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        answer_of(response).await
    }
}

/// The API's answer `response`, read up to [`MAX_ANSWER_BYTES`].
async fn answer_of(response: http::Response<Body>) -> Answer {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = match axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => return unavailable(format!("the answer could not be read: {error}")),
    };
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry_after,
    }
}

/// `request` sent to the API at `base` over HTTP, for the visitor at `origin`.
async fn remote_call(
    client: &reqwest::Client,
    base: &str,
    request: Request<Body>,
    origin: &Origin,
) -> Answer {
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let body = match axum::body::to_bytes(body, MAX_ANSWER_BYTES).await {
        Ok(body) => body,
        Err(error) => return unavailable(format!("the request could not be made: {error}")),
    };
    let mut headers = parts.headers;
    headers.remove(http::header::HOST);
    if let Some(client) = origin.client
        && let Ok(value) = HeaderValue::from_str(&client.to_string())
    {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    let sent = client
        .request(parts.method, format!("{base}{target}"))
        .headers(headers)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => answer_of(http::Response::from(response).map(Body::new)).await,
        Err(error) => unavailable(format!("the API cannot be reached: {error}")),
    }
}

fn unavailable(detail: String) -> Answer {
    tracing::warn!(%detail, "the console could not call the API");
    Answer {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: serde_json::json!({ "detail": detail }),
        retry_after: Some("1".to_owned()),
    }
}
