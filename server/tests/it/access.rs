//! The authorization matrix, generated from the permission table: every route of
//! `server::policy::POLICY` called by every kind of principal, against the real router,
//! embedded and on PostgreSQL with Redis.
//!
//! What each call must answer is computed, never written out per cell. Credentials that do not
//! hold (an expired access token, a token signed by another key, an `alg: none` token) are a
//! 401 with `WWW-Authenticate: Bearer` on every route, public ones included. Otherwise the
//! route's rule decides (`Access::decide` for the principal the caller stands for): 401 with
//! the challenge, 403, or the route's own answer, which depends on whose resource the call
//! names: its own gets the route's success, another's cart, order or customer listing a 404.
//!
//! Each route has a probe in [`probe`]: the request a caller sends and what the route answers
//! when it lets the caller through. A route of the table without a probe fails the test, so no
//! route can be added without extending the matrix. Every answer is also checked for what holds
//! everywhere: never a 5xx, and every 4xx is `application/problem+json`. All mismatches are
//! collected and reported together.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use domain::Role;
use http_common::access::Decision;
use http_common::openapi::Method::{self, Delete, Get, Patch, Post, Put};
use identity::Principal;
use identity::signing::{AccessClaims, TOKEN_AUDIENCE, TOKEN_ISSUER};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use server::policy::{POLICY, Rule};
use server::testing::{Api, Customer, Setup, TestApp, TestData, eventually};
use uuid::Uuid;

/// The route that erases its caller: called last, once every other probe has run.
const ERASES_THE_CALLER: (Method, &str) = (Delete, "/users/me");

/// A password no account of this test has.
const WRONG_PASSWORD: &str = "certainly not the password of this account";

/// A new password that passes the password rules.
const NEW_PASSWORD: &str = "a fresh passphrase of several unrelated words";

/// What kind of caller a [`Caller`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// No credentials and no guest tokens.
    Anonymous,
    /// No credentials, holding the tokens of its own guest cart and guest order.
    Guest,
    CustomerA,
    CustomerB,
    Staff,
    Service,
    /// Credentials that do not hold: refused on every route.
    Refused,
}

/// One principal of the matrix: a client sending its credentials (or none), and the principal
/// the server must take it for.
struct Caller {
    name: String,
    kind: Kind,
    principal: Principal,
    api: Api,
    /// An account's email and password, to open a session of its own.
    account: Option<(String, String)>,
}

/// Whose resource a probe names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    CustomerA,
    Guest,
}

impl Caller {
    /// Whose resource this caller names on a route: its own where it has one (customer A, the
    /// guest on a route that serves guests); an anonymous caller names the guest's (which it
    /// holds no token for) on such a route; everyone else names customer A's.
    fn target(&self, rule: &Rule) -> Owner {
        let serves_guests = rule.access.guests.is_some();
        match self.kind {
            Kind::Guest | Kind::Anonymous if serves_guests => Owner::Guest,
            _ => Owner::CustomerA,
        }
    }

    fn owns(&self, owner: Owner) -> bool {
        matches!(
            (self.kind, owner),
            (Kind::CustomerA, Owner::CustomerA) | (Kind::Guest, Owner::Guest)
        )
    }
}

/// What a route answers a caller its rule lets through.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// The same answer for everyone.
    Answers(StatusCode),
    /// A resource of `owner`: `own` for its owner (and for support staff and services with the
    /// support role, where `support_too`), `other` for everyone else.
    Owned {
        owner: Owner,
        own: StatusCode,
        other: StatusCode,
        support_too: bool,
    },
}

/// The request a caller sends to a route, and what the route answers when it lets it through.
struct Probe {
    path: String,
    body: Option<Value>,
    /// A read of a read model: sent with `X-Min-Position` at the fixture's last event, so that
    /// it sees everything the fixture wrote.
    reads_a_read_model: bool,
    /// Credentials of the probe's own instead of the caller's (a session made to be ended).
    credentials: Option<String>,
    outcome: Outcome,
}

impl Probe {
    fn new(path: impl Into<String>, outcome: Outcome) -> Probe {
        Probe {
            path: path.into(),
            body: None,
            reads_a_read_model: false,
            credentials: None,
            outcome,
        }
    }

    fn body(self, body: Value) -> Probe {
        Probe {
            body: Some(body),
            ..self
        }
    }

    fn reading(self) -> Probe {
        Probe {
            reads_a_read_model: true,
            ..self
        }
    }
}

/// A resource of `owner`, which others are answered 404 for (so ids cannot be probed).
fn owned(owner: Owner, own: StatusCode) -> Outcome {
    Outcome::Owned {
        owner,
        own,
        other: StatusCode::NOT_FOUND,
        support_too: false,
    }
}

/// The same, which support staff and services with the support role may read too.
fn owned_or_support(owner: Owner, own: StatusCode) -> Outcome {
    Outcome::Owned {
        owner,
        own,
        other: StatusCode::NOT_FOUND,
        support_too: true,
    }
}

/// What a call must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    /// 401 with `WWW-Authenticate: Bearer ...`.
    Unauthenticated,
    Status(StatusCode),
}

impl fmt::Display for Expected {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Unauthenticated => formatter.write_str("401 with WWW-Authenticate: Bearer"),
            Expected::Status(status) => write!(formatter, "{}", status.as_u16()),
        }
    }
}

/// The answer `caller` must get from `rule`'s route to `probe`: computed from the table.
fn expected(rule: &Rule, caller: &Caller, probe: &Probe) -> Expected {
    if caller.kind == Kind::Refused {
        return Expected::Unauthenticated;
    }
    match rule.access.decide(&caller.principal) {
        Decision::Unauthenticated => Expected::Unauthenticated,
        Decision::Forbidden => Expected::Status(StatusCode::FORBIDDEN),
        Decision::Allow => Expected::Status(match probe.outcome {
            Outcome::Answers(status) => status,
            Outcome::Owned {
                owner,
                own,
                other,
                support_too,
            } => {
                if caller.owns(owner) || (support_too && caller.principal.has_role(Role::Support)) {
                    own
                } else {
                    other
                }
            }
        }),
    }
}

/// What the test made before the matrix: one product, customers A and B, a cart and an order of
/// customer A and of the guest.
struct Fixture {
    /// The test's own client (an admin API key).
    admin: Api,
    product_id: String,
    customer_a: Customer,
    guest: Api,
    cart_of_a: String,
    order_of_a: String,
    guest_cart: String,
    guest_order: String,
    /// The position of the fixture's last event.
    head: u64,
}

fn new_cart_id() -> String {
    format!("acl-{}", Uuid::new_v4().simple())
}

fn method_name(method: Method) -> String {
    method.as_str().to_uppercase()
}

impl Fixture {
    /// The client that writes `owner`'s carts.
    fn writer(&self, owner: Owner) -> &Api {
        match owner {
            Owner::CustomerA => &self.customer_a.api,
            Owner::Guest => &self.guest,
        }
    }

    fn cart_of(&self, owner: Owner) -> &str {
        match owner {
            Owner::CustomerA => &self.cart_of_a,
            Owner::Guest => &self.guest_cart,
        }
    }

    fn order_of(&self, owner: Owner) -> &str {
        match owner {
            Owner::CustomerA => &self.order_of_a,
            Owner::Guest => &self.guest_order,
        }
    }

    /// A new cart of `owner` with one line, written by its owner (a guest keeps its token).
    async fn fresh_cart(&self, owner: Owner) -> String {
        let cart_id = new_cart_id();
        let path = format!("/carts/{cart_id}/items");
        let added = self
            .writer(owner)
            .post(
                &path,
                json!({ "product_id": self.product_id, "quantity": 1 }),
            )
            .await;
        assert_eq!(added.status(), StatusCode::OK, "a fresh cart of {owner:?}");
        cart_id
    }

    /// A customer made to be erased or deactivated by a probe: answers its user id.
    async fn throwaway_customer(&self) -> String {
        let registered = self
            .admin
            .anonymous()
            .post(
                "/users",
                json!({
                    "email": format!("throwaway-{}@example.com", Uuid::new_v4().simple()),
                    "password": NEW_PASSWORD,
                    "name": "Throwaway customer",
                }),
            )
            .await;
        assert_eq!(
            registered.status(),
            StatusCode::CREATED,
            "a throwaway customer"
        );
        let body: Value = registered.json().await.expect("json");
        body["user_id"].as_str().expect("user_id").to_owned()
    }
}

/// The probe of `rule`'s route for `caller`, or `None` when the route has none yet.
async fn probe(rule: &Rule, caller: &Caller, fixture: &Fixture) -> Option<Probe> {
    use Outcome::Answers;
    let owner = caller.target(rule);
    let product_id = &fixture.product_id;
    let customer_a = &fixture.customer_a;
    let probe = match (rule.method, rule.path) {
        // What every process serves about itself. (`/ready` is 200 once the read models caught
        // up, which the test waits for before the matrix.)
        (Get, "/health" | "/ready" | "/metrics" | "/openapi.json" | "/.well-known/jwks.json") => {
            Probe::new(rule.path, Answers(StatusCode::OK))
        }
        // The catalogue.
        (Get, "/products/{product_id}") => {
            Probe::new(format!("/products/{product_id}"), Answers(StatusCode::OK)).reading()
        }
        (Get, "/search") => Probe::new("/search?q=matrix", Answers(StatusCode::OK)).reading(),
        (Get, "/categories") => Probe::new("/categories", Answers(StatusCode::OK)).reading(),
        // With a customer_id: the caller's own, or any for support; another's is a 403.
        (Get, "/recommendations") => Probe::new(
            format!("/recommendations?customer_id={}", customer_a.user_id),
            Outcome::Owned {
                owner: Owner::CustomerA,
                own: StatusCode::OK,
                other: StatusCode::FORBIDDEN,
                support_too: true,
            },
        )
        .reading(),
        (Post, "/products") => Probe::new("/products", Answers(StatusCode::CREATED)).body(json!({
            "name": "Matrix mug", "description": "A mug made by the authorization matrix",
            "price": 4.5, "stock_qty": 3, "category": "Matrix",
        })),
        (Put, "/products/{product_id}") => {
            Probe::new(format!("/products/{product_id}"), Answers(StatusCode::OK))
                .body(json!({ "description": "Updated by the authorization matrix" }))
        }
        (Post, "/products/{product_id}/stock") => Probe::new(
            format!("/products/{product_id}/stock"),
            Answers(StatusCode::OK),
        )
        .body(json!({ "delta": 1 })),
        // Carts: each write goes to a fresh cart of the target with one line, so that no probe
        // depends on another.
        (Post, "/carts/{cart_id}/items") => {
            let cart_id = fixture.fresh_cart(owner).await;
            Probe::new(
                format!("/carts/{cart_id}/items"),
                owned(owner, StatusCode::OK),
            )
            .body(json!({ "product_id": product_id, "quantity": 1 }))
        }
        (Delete, "/carts/{cart_id}/items/{product_id}") => {
            let cart_id = fixture.fresh_cart(owner).await;
            Probe::new(
                format!("/carts/{cart_id}/items/{product_id}"),
                owned(owner, StatusCode::OK),
            )
        }
        (Post, "/carts/{cart_id}/checkout") => {
            let cart_id = fixture.fresh_cart(owner).await;
            Probe::new(
                format!("/carts/{cart_id}/checkout"),
                owned(owner, StatusCode::ACCEPTED),
            )
            .body(json!({ "payment_token": "tok_visa" }))
        }
        (Get, "/carts/{cart_id}") => Probe::new(
            format!("/carts/{}", fixture.cart_of(owner)),
            owned_or_support(owner, StatusCode::OK),
        )
        .reading(),
        // Orders. A customer_id in the body that is not the caller's own is a 403.
        (Post, "/orders") => Probe::new(
            "/orders",
            Outcome::Owned {
                owner: Owner::CustomerA,
                own: StatusCode::ACCEPTED,
                other: StatusCode::FORBIDDEN,
                support_too: true,
            },
        )
        .body(json!({
            "customer_id": customer_a.user_id,
            "lines": [{ "product_id": product_id, "quantity": 1 }],
            "payment_token": "tok_visa",
        })),
        (Get, "/orders/{order_id}") => Probe::new(
            format!("/orders/{}", fixture.order_of(owner)),
            owned_or_support(owner, StatusCode::OK),
        )
        .reading(),
        // After checkout: the order's owner or support cancel it; the rest is support's (an
        // order nobody has: the route is reached, and answers that it has no such order).
        (Post, "/orders/{order_id}/cancel") => Probe::new(
            format!("/orders/{}/cancel", fixture.order_of(owner)),
            owned_or_support(owner, StatusCode::ACCEPTED),
        )
        .body(json!({ "reason": "asked by the authorization matrix" })),
        (Get, "/orders/{order_id}/receipt") => Probe::new(
            format!("/orders/{}/receipt", fixture.order_of(owner)),
            owned_or_support(owner, StatusCode::OK),
        )
        .reading(),
        (Post, "/orders/{order_id}/shipments") => Probe::new(
            format!("/orders/{}/shipments", Uuid::new_v4()),
            Answers(StatusCode::NOT_FOUND),
        )
        .body(
            json!({ "lines": [{ "product_id": product_id, "quantity": 1 }],
            "carrier": "DHL", "tracking_number": "T1" }),
        ),
        (Post, "/orders/{order_id}/shipments/{shipment_id}/delivered") => Probe::new(
            format!(
                "/orders/{}/shipments/{}/delivered",
                Uuid::new_v4(),
                Uuid::new_v4()
            ),
            Answers(StatusCode::NOT_FOUND),
        ),
        (Post, "/orders/{order_id}/refunds") => Probe::new(
            format!("/orders/{}/refunds", Uuid::new_v4()),
            Answers(StatusCode::NOT_FOUND),
        )
        .body(json!({ "amount": 1 })),
        (Post, "/orders/{order_id}/returns") => Probe::new(
            format!("/orders/{}/returns", Uuid::new_v4()),
            Answers(StatusCode::NOT_FOUND),
        )
        .body(json!({ "lines": [{ "product_id": product_id, "quantity": 1 }], "restock": true })),
        (Post, "/orders/{order_id}/payments") => Probe::new(
            format!("/orders/{}/payments", Uuid::new_v4()),
            Answers(StatusCode::NOT_FOUND),
        )
        .body(json!({ "amount": 1, "reference": "BANK-1" })),
        (Get, "/customers/{customer_id}/orders") => Probe::new(
            format!("/customers/{}/orders", customer_a.user_id),
            owned_or_support(Owner::CustomerA, StatusCode::OK),
        )
        .reading(),
        // Accounts.
        (Post, "/users") => Probe::new("/users", Answers(StatusCode::CREATED)).body(json!({
            "email": format!("new-{}@example.com", Uuid::new_v4().simple()),
            "password": NEW_PASSWORD,
            "name": "New customer",
        })),
        (Post, "/users/verify") => {
            Probe::new("/users/verify", Answers(StatusCode::UNPROCESSABLE_ENTITY))
                .body(json!({ "token": "not-a-verification-token" }))
        }
        (Post, "/sessions") => Probe::new("/sessions", Answers(StatusCode::OK)).body(json!({
            "email": customer_a.email, "password": customer_a.password,
        })),
        (Post, "/sessions/refresh") => {
            let session = fixture
                .admin
                .log_in(&customer_a.email, &customer_a.password)
                .await;
            Probe::new("/sessions/refresh", Answers(StatusCode::OK))
                .body(json!({ "refresh_token": session.refresh_token }))
        }
        // An account ends a session of its own made for the probe, so that its other
        // credentials keep working whatever logging out does to them.
        (Delete, "/sessions/current") => {
            let mut probe = Probe::new("/sessions/current", Answers(StatusCode::NO_CONTENT));
            if let Some((email, password)) = &caller.account {
                probe.credentials = Some(fixture.admin.log_in(email, password).await.access_token);
            }
            probe
        }
        (Get, "/users/me") => Probe::new("/users/me", Answers(StatusCode::OK)).reading(),
        (Patch, "/users/me") => Probe::new("/users/me", Answers(StatusCode::OK))
            .body(json!({ "name": "Renamed by the matrix" })),
        // A wrong current password: no real password changes.
        (Post, "/users/me/password") => Probe::new(
            "/users/me/password",
            Answers(StatusCode::UNPROCESSABLE_ENTITY),
        )
        .body(json!({ "current_password": WRONG_PASSWORD, "new_password": NEW_PASSWORD })),
        // Run last (see ERASES_THE_CALLER).
        (Delete, "/users/me") => Probe::new("/users/me", Answers(StatusCode::ACCEPTED)),
        (Post, "/password-resets") => Probe::new("/password-resets", Answers(StatusCode::ACCEPTED))
            .body(json!({ "email": customer_a.email })),
        (Post, "/password-resets/complete") => Probe::new(
            "/password-resets/complete",
            Answers(StatusCode::UNPROCESSABLE_ENTITY),
        )
        .body(json!({ "token": "not-a-reset-token", "new_password": NEW_PASSWORD })),
        (Get, "/users/{user_id}") => Probe::new(
            format!("/users/{}", customer_a.user_id),
            Answers(StatusCode::OK),
        )
        .reading(),
        (Post, "/users/{user_id}/erase") => {
            let user_id = fixture.throwaway_customer().await;
            Probe::new(
                format!("/users/{user_id}/erase"),
                Answers(StatusCode::ACCEPTED),
            )
        }
        (Post, "/users/{user_id}/deactivate") => {
            let user_id = fixture.throwaway_customer().await;
            Probe::new(
                format!("/users/{user_id}/deactivate"),
                Answers(StatusCode::OK),
            )
        }
        // Stripe's webhook: open to anyone; the matrix's server has no webhook secret, so it
        // answers that it is not configured (its signature checks are server/tests/it/stripe.rs).
        (Post, "/webhooks/stripe") => {
            Probe::new("/webhooks/stripe", Answers(StatusCode::NOT_FOUND))
                .body(json!({ "id": "evt_matrix", "type": "payment_intent.succeeded" }))
        }
        // Outgoing webhooks: a private destination is refused at registration (422), and an
        // endpoint nobody registered is a 404 (server/tests/it/notifications.rs delivers).
        (Post, "/webhooks") => Probe::new("/webhooks", Answers(StatusCode::UNPROCESSABLE_ENTITY))
            .body(json!({ "url": "http://10.0.0.1/hook", "event_types": ["OrderConfirmed"] })),
        (Get, "/webhooks") => Probe::new("/webhooks", Answers(StatusCode::OK)).reading(),
        (Get, "/webhooks/{webhook_id}") => Probe::new(
            format!("/webhooks/{}", Uuid::new_v4()),
            Answers(StatusCode::NOT_FOUND),
        )
        .reading(),
        (Delete, "/webhooks/{webhook_id}") => Probe::new(
            format!("/webhooks/{}", Uuid::new_v4()),
            Answers(StatusCode::NOT_FOUND),
        ),
        (Get, "/webhooks/{webhook_id}/deliveries") => Probe::new(
            format!("/webhooks/{}/deliveries", Uuid::new_v4()),
            Answers(StatusCode::NOT_FOUND),
        )
        .reading(),
        (Post, "/webhooks/{webhook_id}/replay") => Probe::new(
            format!("/webhooks/{}/replay", Uuid::new_v4()),
            Answers(StatusCode::NOT_FOUND),
        )
        .body(json!({ "from_position": 1 })),
        (Get, "/orders/{order_id}/notifications") => Probe::new(
            format!("/orders/{}/notifications", fixture.order_of(owner)),
            Answers(StatusCode::OK),
        )
        .reading(),
        // The event history.
        (Get, "/streams/{stream_type}/{stream_id}/events") => Probe::new(
            format!("/streams/product/{product_id}/events"),
            Answers(StatusCode::OK),
        )
        .reading(),
        (Get, "/events") => Probe::new("/events?limit=5", Answers(StatusCode::OK)).reading(),
        (Get, "/streams/{stream_type}/{stream_id}/state") => Probe::new(
            format!("/streams/product/{product_id}/state"),
            Answers(StatusCode::OK),
        ),
        (Get, "/audit/verify") => Probe::new(
            format!("/audit/verify?stream=product/{product_id}"),
            Answers(StatusCode::OK),
        ),
        // What runs behind the API.
        (Get, "/sagas") => Probe::new("/sagas", Answers(StatusCode::OK)),
        (Get, "/notifications") => Probe::new("/notifications?limit=5", Answers(StatusCode::OK)),
        (Post, "/notifications/{key}/retry") => Probe::new(
            "/notifications/no-such-key/retry",
            Answers(StatusCode::NOT_FOUND),
        ),
        (Post, "/notifications/{key}/resend") => Probe::new(
            "/notifications/no-such-key/resend",
            Answers(StatusCode::NOT_FOUND),
        ),
        (Get, "/users") => Probe::new("/users?limit=5", Answers(StatusCode::OK)).reading(),
        (Get, "/orders") => Probe::new("/orders?limit=5", Answers(StatusCode::OK)).reading(),
        (Post, "/sagas/{order_id}/retry") => Probe::new(
            format!("/sagas/{}/retry", Uuid::new_v4()),
            Answers(StatusCode::NOT_FOUND),
        ),
        (Get, "/projections") => Probe::new("/projections", Answers(StatusCode::OK)),
        // Without Kafka: none listed, nothing to replay.
        (Get, "/dead-letters") => Probe::new("/dead-letters", Answers(StatusCode::OK)),
        (Post, "/dead-letters/replay") => {
            Probe::new("/dead-letters/replay", Answers(StatusCode::CONFLICT))
        }
        (Post, "/projections/{name}/retry") => {
            Probe::new("/projections/products/retry", Answers(StatusCode::CONFLICT))
        }
        _ => return None,
    };
    Some(probe)
}

/// What a call answered.
struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    content_type: String,
    body: String,
}

async fn call(caller: &Caller, rule: &Rule, probe: &Probe, head: u64) -> Answer {
    let api = match &probe.credentials {
        Some(credentials) => caller.api.with_credentials(credentials),
        None => caller.api.clone(),
    };
    let method = reqwest::Method::from_bytes(method_name(rule.method).as_bytes()).expect("method");
    let mut request = api.request(method, &probe.path);
    if let Some(body) = &probe.body {
        request = request.json(body);
    }
    if probe.reads_a_read_model {
        request = request.header("x-min-position", head.to_string());
    }
    let response = api.send(&probe.path, request).await;
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status();
    let challenge = header(WWW_AUTHENTICATE);
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let body = response.text().await.unwrap_or_default();
    Answer {
        status,
        challenge,
        content_type,
        body,
    }
}

/// What is wrong with `answer`, if anything.
fn faults(expected: Expected, answer: &Answer) -> Vec<String> {
    let mut faults = Vec::new();
    match expected {
        Expected::Unauthenticated => {
            let challenged = answer
                .challenge
                .as_deref()
                .is_some_and(|challenge| challenge.starts_with("Bearer"));
            if answer.status != StatusCode::UNAUTHORIZED || !challenged {
                faults.push(format!(
                    "expected {expected}, got {} (WWW-Authenticate: {})",
                    answer.status.as_u16(),
                    answer.challenge.as_deref().unwrap_or("none")
                ));
            }
        }
        Expected::Status(status) if answer.status != status => {
            faults.push(format!(
                "expected {expected}, got {}",
                answer.status.as_u16()
            ));
        }
        Expected::Status(_) => {}
    }
    if answer.status.is_server_error() {
        faults.push(format!("a {}, never allowed", answer.status.as_u16()));
    }
    if answer.status.is_client_error()
        && !answer.content_type.starts_with("application/problem+json")
    {
        faults.push(format!(
            "a {} that is not application/problem+json but {:?}",
            answer.status.as_u16(),
            answer.content_type
        ));
    }
    faults
}

fn shortened(text: &str) -> String {
    const MAX_CHARS: usize = 240;
    if text.chars().count() <= MAX_CHARS {
        return text.to_owned();
    }
    let kept: String = text.chars().take(MAX_CHARS).collect();
    format!("{kept}...")
}

/// Unpadded base64url, as JWTs are written.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0_u32, |bits, (byte_idx, byte)| {
                bits | (u32::from(*byte) << (16 - 8 * byte_idx))
            });
        for char_idx in 0..=chunk.len() {
            let sextet = (bits >> (18 - 6 * char_idx)) & 63;
            text.push(char::from(ALPHABET[sextet as usize]));
        }
    }
    text
}

fn now_seconds() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    i64::try_from(elapsed.as_secs()).expect("seconds")
}

/// Claims of an access token of customer A, valid from `iat` to `exp`.
fn claims_of(customer: &Customer, iat: i64, exp: i64) -> AccessClaims {
    AccessClaims {
        iss: TOKEN_ISSUER.to_owned(),
        aud: TOKEN_AUDIENCE.to_owned(),
        sub: customer.user_id.clone(),
        iat,
        exp,
        jti: Uuid::new_v4().to_string(),
        sid: Uuid::new_v4().to_string(),
        kind: "customer".to_owned(),
        roles: Vec::new(),
    }
}

/// The three kinds of credentials that do not hold, each naming customer A: a token of the
/// shop's own key that has expired, a token of a key the shop does not know, and an unsigned
/// (`alg: none`) token.
async fn refused_credentials(data: &TestData, customer_a: &Customer) -> Vec<(String, String)> {
    let now = now_seconds();
    let keys = server::platform::open_signing_keys(&data.config("all", &[]))
        .await
        .expect("the shop's signing keys");
    let expired = keys
        .sign(&claims_of(customer_a, now - 7200, now - 3600))
        .await
        .expect("sign an expired token");
    let elsewhere = tempfile::tempdir().expect("temporary directory");
    let other_secrets = identity::SecretStore::open(&format!(
        "sqlite://{}",
        elsewhere.path().join("identity.db").display()
    ))
    .await
    .expect("another secret store");
    let other_keys = identity::SigningKeys::open(other_secrets, None)
        .await
        .expect("another key");
    let foreign = other_keys
        .sign(&claims_of(customer_a, now, now + 600))
        .await
        .expect("sign with another key");
    let claims = serde_json::to_vec(&claims_of(customer_a, now, now + 600)).expect("claims");
    let unsigned = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(&claims)
    );
    vec![
        ("an expired token".to_owned(), expired),
        ("a token of another key".to_owned(), foreign),
        ("an alg none token".to_owned(), unsigned),
    ]
}

/// A staff account with `role`, created as `mercato users add` does and logged in over HTTP.
async fn staff_caller(server: &TestApp, data: &TestData, role: Role) -> Caller {
    let email = format!("{}-{}@example.com", role.as_str(), Uuid::new_v4().simple());
    let password = format!("the {} desk keeps a long passphrase", role.as_str());
    let roles: BTreeSet<Role> = [role].into_iter().collect();
    let user_id = server::platform::add_staff_account(
        &data.config("all", &[]),
        &email,
        &format!("Staff {}", role.as_str()),
        &roles,
        &password,
    )
    .await
    .expect("a staff account");
    let session = server.log_in(&email, &password).await;
    Caller {
        name: format!("staff {}", role.as_str()),
        kind: Kind::Staff,
        principal: Principal::Staff { user_id, roles },
        api: server.anonymous().with_credentials(&session.access_token),
        account: Some((email, password)),
    }
}

fn customer_caller(name: &str, kind: Kind, customer: &Customer) -> Caller {
    Caller {
        name: name.to_owned(),
        kind,
        principal: Principal::Customer {
            user_id: Uuid::parse_str(&customer.user_id).expect("a user id"),
        },
        api: customer.api.clone(),
        account: Some((customer.email.clone(), customer.password.clone())),
    }
}

/// Writes a cart of one line through `api` and checks it out: answers the cart's and the
/// order's ids.
async fn cart_checked_out(api: &Api, product_id: &str) -> (String, String) {
    let cart_id = new_cart_id();
    let added = api
        .post(
            &format!("/carts/{cart_id}/items"),
            json!({ "product_id": product_id, "quantity": 1 }),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK, "a cart line");
    let checkout = api
        .post(
            &format!("/carts/{cart_id}/checkout"),
            json!({ "payment_token": "tok_visa" }),
        )
        .await;
    assert_eq!(checkout.status(), StatusCode::ACCEPTED, "a checkout");
    let body: Value = checkout.json().await.expect("json");
    let order_id = body["order_id"].as_str().expect("order_id").to_owned();
    (cart_id, order_id)
}

async fn every_route_answers_every_principal_as_the_permission_table_says(
    setup: Setup,
    test_name: &str,
) {
    let Some(data) = TestData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let admin: Api = (*server).clone();
    let (product_id, _) = admin
        .create_product(
            "Matrix kettle",
            "A kettle for the authorization matrix",
            10.0,
            100_000,
            "Matrix",
        )
        .await;
    let customer_a = server.register_customer("customer-a").await;
    let customer_b = server.register_customer("customer-b").await;
    let (cart_of_a, order_of_a) = cart_checked_out(&customer_a.api, &product_id).await;
    let guest = server.anonymous();
    let (guest_cart, guest_order) = cart_checked_out(&guest, &product_id).await;
    assert!(
        guest.guest_token(&format!("/carts/{guest_cart}")).is_some()
            && guest
                .guest_token(&format!("/orders/{guest_order}"))
                .is_some(),
        "the guest holds the tokens of its cart and its order"
    );

    let mut callers = vec![
        Caller {
            name: "anonymous".to_owned(),
            kind: Kind::Anonymous,
            principal: Principal::Anonymous,
            api: server.anonymous(),
            account: None,
        },
        Caller {
            name: "guest".to_owned(),
            kind: Kind::Guest,
            principal: Principal::Anonymous,
            api: guest.clone(),
            account: None,
        },
        customer_caller("customer A", Kind::CustomerA, &customer_a),
        customer_caller("customer B", Kind::CustomerB, &customer_b),
    ];
    for role in Role::ALL {
        callers.push(staff_caller(&server, &data, role).await);
    }
    callers.push(Caller {
        name: "service key (support)".to_owned(),
        kind: Kind::Service,
        // The rule reads a service's roles only; its key id does not matter here.
        principal: Principal::Service {
            key_id: "tests".to_owned(),
            roles: [Role::Support].into_iter().collect(),
        },
        api: server.service(&data, "support").await,
        account: None,
    });
    for (name, token) in refused_credentials(&data, &customer_a).await {
        callers.push(Caller {
            name,
            kind: Kind::Refused,
            // Never consulted: refused credentials are a 401 before any rule.
            principal: Principal::Anonymous,
            api: server.anonymous().with_credentials(&token),
            account: None,
        });
    }

    let head = data
        .store()
        .await
        .head_position()
        .await
        .expect("the log's head");
    let fixture = Fixture {
        admin: admin.clone(),
        product_id,
        customer_a,
        guest,
        cart_of_a,
        order_of_a,
        guest_cart,
        guest_order,
        head,
    };
    let ready = eventually(Duration::from_secs(30), || async {
        (admin.get("/ready").await.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "/ready did not answer 200 within 30 s: {}",
        admin.get("/ready").await.text().await.unwrap_or_default()
    );

    // The route that erases its caller goes last.
    let mut rules: Vec<&Rule> = POLICY.iter().collect();
    rules.sort_by_key(|rule| (rule.method, rule.path) == ERASES_THE_CALLER);
    let mut failures = Vec::new();
    let mut n_calls = 0;
    for rule in rules {
        let route = format!("{} {}", method_name(rule.method), rule.path);
        for caller in &callers {
            let Some(probe) = probe(rule, caller, &fixture).await else {
                failures.push(format!(
                    "{route}: no probe; add one to `probe` in server/tests/it/access.rs"
                ));
                break;
            };
            let expected = expected(rule, caller, &probe);
            let answer = call(caller, rule, &probe, fixture.head).await;
            n_calls += 1;
            for fault in faults(expected, &answer) {
                failures.push(format!(
                    "{route} × {}: {fault} {} (sent {} {})",
                    caller.name,
                    shortened(&answer.body),
                    method_name(rule.method),
                    probe.path
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n_calls} calls of the authorization matrix answered wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(n_calls, POLICY.len() * callers.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_principal_as_the_permission_table_says_embedded() {
    every_route_answers_every_principal_as_the_permission_table_says(
        Setup::Embedded,
        "access_matrix_embedded",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_principal_as_the_permission_table_says_on_postgres_and_redis() {
    every_route_answers_every_principal_as_the_permission_table_says(
        Setup::PostgresRedis,
        "access_matrix_on_postgres_and_redis",
    )
    .await;
}
