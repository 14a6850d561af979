//! What every page shares: the templates, the visitor of a request, forms and their token, and
//! the answers (a page, a redirect, a refusal) with the cookies the request changed.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_common::context::{ClientAddress, RequestContext};
use minijinja::{Environment, UndefinedBehavior, Value, context};

use crate::ConsoleState;
use crate::api::Origin;
use crate::visitor::Visitor;
use http_common::openapi::Method;

/// The templates, compiled in: `(name, source)`.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("home.html", include_str!("../templates/home.html")),
    ("search.html", include_str!("../templates/search.html")),
    ("product.html", include_str!("../templates/product.html")),
    ("cart.html", include_str!("../templates/cart.html")),
    ("order.html", include_str!("../templates/order.html")),
    ("orders.html", include_str!("../templates/orders.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("register.html", include_str!("../templates/register.html")),
    ("reset.html", include_str!("../templates/reset.html")),
    ("message.html", include_str!("../templates/message.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("office.html", include_str!("../templates/office.html")),
    (
        "office_products.html",
        include_str!("../templates/office_products.html"),
    ),
    (
        "office_product.html",
        include_str!("../templates/office_product.html"),
    ),
    (
        "office_order.html",
        include_str!("../templates/office_order.html"),
    ),
    ("audit.html", include_str!("../templates/audit.html")),
    (
        "audit_events.html",
        include_str!("../templates/audit_events.html"),
    ),
    (
        "audit_state.html",
        include_str!("../templates/audit_state.html"),
    ),
    (
        "audit_verify.html",
        include_str!("../templates/audit_verify.html"),
    ),
    (
        "office_orders.html",
        include_str!("../templates/office_orders.html"),
    ),
    (
        "office_accounts.html",
        include_str!("../templates/office_accounts.html"),
    ),
    (
        "office_notifications.html",
        include_str!("../templates/office_notifications.html"),
    ),
    (
        "office_webhooks.html",
        include_str!("../templates/office_webhooks.html"),
    ),
    (
        "office_dead_letters.html",
        include_str!("../templates/office_dead_letters.html"),
    ),
    (
        "office_sagas.html",
        include_str!("../templates/office_sagas.html"),
    ),
    (
        "office_projections.html",
        include_str!("../templates/office_projections.html"),
    ),
];

/// The page templates.
#[derive(Debug)]
pub struct Pages {
    environment: Environment<'static>,
}

impl Pages {
    pub fn new() -> Pages {
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Chainable);
        environment.add_filter("money", money);
        environment.add_filter("urlencode", percent_encode);
        for (name, source) in TEMPLATES {
            if let Err(error) = environment.add_template(name, source) {
                // The template tests render every page: this cannot pass them.
                tracing::error!(%error, template = name, "a console template does not parse");
            }
        }
        Pages { environment }
    }

    /// Renders `template` for `visitor` with `values` (beside what every page has).
    pub fn render(
        &self,
        state: &ConsoleState,
        visitor: &Visitor,
        template: &str,
        values: Value,
    ) -> Result<String, minijinja::Error> {
        let office_products = state.may(visitor, Method::Post, "/products");
        let office_orders = state.may(visitor, Method::Post, "/orders/{order_id}/refunds");
        let office_sagas = state.may(visitor, Method::Get, "/sagas");
        let office_projections = state.may(visitor, Method::Get, "/projections");
        let office_accounts = state.may(visitor, Method::Get, "/users");
        let office_notifications = state.may(visitor, Method::Get, "/notifications");
        let office_webhooks = state.may(visitor, Method::Get, "/webhooks");
        let office_dead_letters = state.may(visitor, Method::Get, "/dead-letters");
        let common = context! {
            shop_name => &state.shop_name,
            me => visitor.me.as_ref().map(Value::from_serialize),
            office_products => office_products,
            office_orders => office_orders,
            office_sagas => office_sagas,
            office_projections => office_projections,
            office_accounts => office_accounts,
            office_notifications => office_notifications,
            office_webhooks => office_webhooks,
            office_dead_letters => office_dead_letters,
            may_replay_dead_letters => state.may(visitor, Method::Post, "/dead-letters/replay"),
            may_retry_saga => state.may(visitor, Method::Post, "/sagas/{order_id}/retry"),
            may_retry_projection => state.may(visitor, Method::Post, "/projections/{name}/retry"),
            office => office_products
                || office_orders
                || office_sagas
                || office_projections
                || office_accounts
                || office_notifications
                || office_webhooks
                || office_dead_letters,
            audit => state.may(visitor, Method::Get, "/events"),
            csrf => &visitor.form_token,
            has_cart => visitor.own_cart().is_some(),
        };
        self.environment
            .get_template(template)?
            .render(context! { ..values, ..common })
    }
}

/// A price (a JSON number in major units) with two decimals.
fn money(value: Value) -> String {
    match f64::try_from(value.clone()) {
        Ok(amount) => format!("{amount:.2}"),
        Err(_) => value.to_string(),
    }
}

/// `text` with everything but RFC 3986's unreserved characters (`.` aside) percent-encoded:
/// safe in a path segment and in a query value alike.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        // `.` too: a segment of dots would be a relative step in the API's path.
        if byte.is_ascii_alphanumeric() || b"-_~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Query parameter `name` of a page's address, trimmed; empty when it is not given.
pub fn param<'p>(params: &'p HashMap<String, String>, name: &str) -> &'p str {
    params.get(name).map_or("", |value| value.trim())
}

/// A request's visitor, with the account of its session ([`Visitor::identify`]).
pub struct Visit(pub Visitor);

impl FromRequestParts<ConsoleState> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let client = parts
            .extensions
            .get::<ClientAddress>()
            .map(|ClientAddress(address)| *address)
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(address)| address.ip())
            });
        let correlation_id = parts
            .extensions
            .get::<RequestContext>()
            .map(|context| context.correlation_id.clone());
        let mut visitor = Visitor::from_headers(
            &parts.headers,
            Origin {
                client,
                correlation_id,
            },
        );
        visitor.identify(&state.api).await;
        Ok(Visit(visitor))
    }
}

/// A form's fields (`application/x-www-form-urlencoded`); a field given twice keeps its first.
pub struct Form {
    fields: HashMap<String, String>,
    headers: HeaderMap,
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        let bytes = Bytes::from_request(request, state).await.map_err(|_| {
            message_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is too large",
                "Shorten what you typed and send it again.",
            )
        })?;
        let mut fields = HashMap::new();
        for (name, value) in form_urlencoded::parse(&bytes) {
            fields
                .entry(name.into_owned())
                .or_insert_with(|| value.into_owned());
        }
        Ok(Form { fields, headers })
    }
}

impl Form {
    /// A field, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", |value| value.trim())
    }

    /// A field as given (passwords are not trimmed).
    pub fn raw(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    /// `call` with the form's `attempt` (a UUID the page put in it) as its `Idempotency-Key`,
    /// so that a form sent twice does its work once.
    pub fn idempotent(&self, call: crate::api::Call) -> crate::api::Call {
        match uuid::Uuid::parse_str(self.text("attempt")) {
            Ok(attempt) => call.header("idempotency-key", attempt.to_string()),
            Err(_) => call,
        }
    }

    /// The refusal of a form that did not come from the visitor's own page: its `csrf` field
    /// must be the token of the visitor's cookie, and a browser that says where it comes from
    /// must say this site.
    pub fn refusal(&self, visitor: &Visitor) -> Option<Response> {
        let fetched_from = self
            .headers
            .get("sec-fetch-site")
            .and_then(|value| value.to_str().ok());
        let cross_site =
            matches!(fetched_from, Some(site) if site != "same-origin" && site != "none");
        let origin_elsewhere = match (
            self.headers
                .get(header::ORIGIN)
                .and_then(|value| value.to_str().ok()),
            self.headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok()),
        ) {
            (Some(origin), Some(host)) => {
                origin != "null" && origin.split_once("://").map(|(_, rest)| rest) != Some(host)
            }
            _ => false,
        };
        (cross_site || origin_elsewhere || !visitor.form_token_matches(self.text("csrf"))).then(
            || {
                message_response(
                    StatusCode::FORBIDDEN,
                    "This form could not be accepted",
                    "It expired or was sent from another site. Go back, reload the page and send it again.",
                )
            },
        )
    }
}

/// A page for `visitor`, with the cookies its request changed.
pub fn page(
    state: &ConsoleState,
    visitor: &Visitor,
    status: StatusCode,
    template: &str,
    values: Value,
) -> Response {
    match state.pages.render(state, visitor, template, values) {
        Ok(html) => with_cookies(
            visitor,
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
        ),
        Err(error) => {
            tracing::error!(%error, template, "a console page failed to render");
            message_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "This page could not be shown",
                "It was logged; try again later.",
            )
        }
    }
}

/// A page that only says something (`title`, then `text`), for `visitor`.
pub fn message(
    state: &ConsoleState,
    visitor: &Visitor,
    status: StatusCode,
    title: &str,
    text: &str,
) -> Response {
    page(
        state,
        visitor,
        status,
        "message.html",
        context! { title => title, text => text },
    )
}

/// A bare message page, for answers made before a visitor is known.
fn message_response(status: StatusCode, title: &str, text: &str) -> Response {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
             <link rel=\"stylesheet\" href=\"/assets/console.css\"></head><body><main>\
             <h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the shop</a></p></main></body></html>",
            escape(title),
            escape(title),
            escape(text)
        ),
    )
        .into_response()
}

/// A redirect to `to` after a form (303: the browser follows it with a GET).
pub fn redirect(visitor: &Visitor, to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    with_cookies(visitor, response)
}

/// `response` with the cookies `visitor`'s request changed (a refreshed session's among them).
pub fn with_cookies(visitor: &Visitor, mut response: Response) -> Response {
    for cookie in visitor.cookies() {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// A page saying the API refused or failed `what`, with its reason: a refusal keeps its status,
/// anything else that failed is the shop being unavailable (503 with `Retry-After`).
pub fn failure(
    state: &ConsoleState,
    visitor: &Visitor,
    answer: &crate::api::Answer,
    what: &str,
) -> Response {
    if answer.status.is_client_error() {
        return message(state, visitor, answer.status, what, &answer.problem());
    }
    let mut response = message(
        state,
        visitor,
        StatusCode::SERVICE_UNAVAILABLE,
        what,
        &answer.problem(),
    );
    let after = answer.retry_after.as_deref().unwrap_or("1");
    if let Ok(value) = HeaderValue::from_str(after) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The redirect after a form whose write the API answered with `answer`: to `to`, which then
/// reads what was written (`at=`, the write's log position; [`read_at`]).
pub fn after_write(visitor: &Visitor, answer: &crate::api::Answer, to: &str) -> Response {
    let at = answer.body["position"].as_u64().unwrap_or(0);
    let separator = if to.contains('?') { '&' } else { '?' };
    redirect(visitor, &format!("{to}{separator}at={at}"))
}

/// `target` (an API read), waiting for the position a page's `at=` names ([`after_write`]), so
/// that the page shows what the form before it wrote.
pub fn read_at(target: String, params: &HashMap<String, String>) -> String {
    match params.get("at").and_then(|at| at.parse::<u64>().ok()) {
        Some(at) if target.contains('?') => format!("{target}&min_position={at}"),
        Some(at) => format!("{target}?min_position={at}"),
        None => target,
    }
}

/// The refusal of a page (`here`) whose work is the API's route `method` `path`, when the
/// permission table does not let `visitor` call it: a visitor who is not logged in is sent to
/// log in, anyone else is told the account may not.
pub fn refusal(
    state: &ConsoleState,
    visitor: &Visitor,
    method: Method,
    path: &str,
    here: &str,
) -> Option<Response> {
    if state.may(visitor, method, path) {
        return None;
    }
    if visitor.me.is_none() {
        return Some(redirect(
            visitor,
            &format!("/account/login?next={}", percent_encode(here)),
        ));
    }
    Some(message(
        state,
        visitor,
        StatusCode::FORBIDDEN,
        "Your account may not open this page",
        "Ask an administrator for the role it needs.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ConsoleState {
        ConsoleState::new(
            crate::Api::in_process(axum::Router::new()),
            "Test shop".to_owned(),
            vec![("Card, approved (test)".to_owned(), "tok_visa".to_owned())],
            |_, _| None,
        )
    }

    /// Every template parses and renders with what its handler gives it (and with nothing, as
    /// undefined values are empty), and what a page shows is escaped.
    #[test]
    fn every_page_renders_and_escapes() {
        let state = state();
        let visitor = Visitor::from_headers(&HeaderMap::new(), Origin::default());
        let product = serde_json::json!({
            "product_id": "00000000-0000-4000-8000-000000000001", "name": "<b>Lamp</b>",
            "description": "bright", "price": 12.5, "stock_qty": 3, "category": "Lighting",
        });
        let order = serde_json::json!({
            "order_id": "00000000-0000-4000-8000-000000000002", "status": "PENDING",
            "lines": [{ "product_id": "p", "quantity": 1, "unit_price": 12.5, "name": "Lamp", "unshipped": 1 }],
            "total": 12.5, "shipments": [], "refunds": [],
        });
        for (template, _) in TEMPLATES {
            if *template == "base.html" || *template == "macros.html" {
                continue;
            }
            let values = context! {
                product => Value::from_serialize(&product),
                order => Value::from_serialize(&order),
                hits => Value::from_serialize([&product]),
                orders => Value::from_serialize([&order]),
                accounts => Value::from_serialize([serde_json::json!({
                    "user_id": "u", "email": "<b>Lamp</b>", "name": "<b>Lamp</b>", "kind": "staff",
                    "roles": ["admin"], "status": "active",
                })]),
                may_deactivate => true, may_retry => true, may_resend => true,
                notifications => Value::from_serialize([serde_json::json!({
                    "key": "k", "template": "<b>Lamp</b>", "channel": "email", "recipient": "user:u",
                    "status": "parked", "attempts": 2, "last_error": "<b>Lamp</b>", "created_at": 1,
                })]),
                webhooks => Value::from_serialize([serde_json::json!({
                    "webhook_id": "w", "url": "https://<b>Lamp</b>", "event_types": ["*"],
                    "status": "disabled", "checkpoint": 3, "disabled_reason": "<b>Lamp</b>",
                })]),
                popular => Value::from_serialize([&product]),
                cart => Value::from_serialize(serde_json::json!({ "lines": [
                    { "product_id": "p", "quantity": 2, "unit_price": 12.5, "name": "<b>Lamp</b>" }
                ], "total": 25 })),
                payment_choices => Value::from_serialize(&state.payment_choices),
                entered => Value::from_serialize(serde_json::json!({})),
                events => Value::from_serialize(serde_json::json!([{
                    "event_type": "<b>Lamp</b>", "stream_type": "order", "stream_id": "o",
                    "stream_version": 2, "position": 7, "metadata": { "actor": "a" },
                }])),
                aggregates => Value::from_serialize(["order"]),
                stream => true, stream_type => "order", stream_id => "<b>Lamp</b>",
                may_verify => true, export => "/audit/streams/order/o/cloudevents",
                reached => Value::from_serialize(serde_json::json!({
                    "at": "position 7", "event_type": "OrderCreated", "version": 1,
                    "current_version": 3, "position": 7, "occurred_at": "2026-01-01T00:00:00Z",
                })),
                report => Value::from_serialize(serde_json::json!({
                    "verified": false, "scope": "all", "events": 3,
                    "first_problem": { "text": "<b>Lamp</b>", "stream_type": "order", "stream_id": "o" },
                })),
                overview => Value::from_serialize(serde_json::json!({
                    "running": 1, "done": 2, "parked": 1, "head": 9,
                    "parked_sagas": [{ "order_id": "o", "last_error": "<b>Lamp</b>", "attempts": 3 }],
                    "kafka": true,
                    "dead_letters": [{ "dlq_topic": "product.events.dlq", "topic": "product.events",
                        "event_type": "ProductCreated", "stream": "product/p", "reason": "<b>Lamp</b>",
                        "attempts": 5, "group": "mercato-projector" }],
                    "projections": [{ "name": "products", "checkpoint": 9, "lag": 0,
                        "state": "<b>Lamp</b>", "parked": { "position": 3, "reason": "r" } }],
                })),
                title => "A title", text => "A text", total => 1, page => 1, pages => 1,
            };
            let html = state
                .pages
                .render(&state, &visitor, template, values)
                .unwrap_or_else(|error| panic!("{template}: {error:#}"));
            assert!(
                !html.contains("<b>Lamp</b>"),
                "{template} does not escape:\n{html}"
            );
            assert!(html.contains("Test shop"), "{template}");
        }
        assert_eq!(money(Value::from(12.5)), "12.50");
        assert_eq!(percent_encode("a b/ü?&=+"), "a%20b%2F%C3%BC%3F%26%3D%2B");
        assert_eq!(percent_encode(".."), "%2E%2E");
    }
}
