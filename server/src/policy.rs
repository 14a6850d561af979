//! The permission table: every route mercato serves, and who may call it. The router checks it
//! on every request ([`authorize`]), the OpenAPI document shows it on every operation (its
//! security requirements and `x-mercato-access`), and the authorization tests are generated
//! from it. A route that is not in the table, or an entry without a route, stops the server
//! from starting ([`check_coverage`]).
//!
//! The table says which callers get past the router; the handlers then keep each caller to
//! what is theirs (their own carts, orders and profile; another's answers 404).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::Role::{Admin, Auditor, Catalog, Support};
use http_common::access::{Access, GuestToken, refusal};
use http_common::openapi::{Method, RouteDoc};
use http_common::{Problem, RequestContext};

/// One entry of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// Which rate limit its requests count against.
    pub bucket: Bucket,
    /// Whether it creates something, so that `Idempotency-Key` makes a retry safe.
    pub creates: bool,
    /// Whether its work grows with the data (an operator's verification or replay), so that it
    /// may take [`http_common::context::LONG_REQUEST_TIMEOUT`] instead of the usual limit.
    pub long: bool,
}

/// The rate limit a route's requests count against ([`crate::limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// The caller's own: per account or API key, else per address.
    Caller,
    /// The account routes' stricter one, per address: registration, login, refresh,
    /// verification and password resets (guessing and sign-up floods).
    Accounts,
    /// None, and never shed: what orchestrators and monitoring poll.
    Probe,
}

const fn rule(method: Method, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
        bucket: Bucket::Caller,
        creates: false,
        long: false,
    }
}

impl Rule {
    /// The same, counted against the account routes' limit.
    const fn accounts(self) -> Rule {
        Rule {
            bucket: Bucket::Accounts,
            ..self
        }
    }

    /// The same, for a probe.
    const fn probe(self) -> Rule {
        Rule {
            bucket: Bucket::Probe,
            ..self
        }
    }

    /// The same, for a route whose work grows with the data.
    const fn long(self) -> Rule {
        Rule { long: true, ..self }
    }

    /// The same, for a route that creates something.
    const fn creates(self) -> Rule {
        Rule {
            creates: true,
            ..self
        }
    }
}

/// Guests with the cart's token (or none yet, on a cart's first write) and customers.
const CART_HOLDERS: Access = Access::NOBODY.and_guests(GuestToken::Cart).and_customers();
/// Every account, for its own profile and sessions.
const ACCOUNTS: Access = Access::NOBODY.and_accounts();
/// Staff with the catalog role.
const CATALOG: Access = Access::roles(&[Catalog]);
/// Support staff.
const SUPPORT: Access = Access::roles(&[Support]);
/// Admins only.
const ADMINS: Access = Access::roles(&[Admin]);
/// Auditors (and admins).
const AUDITORS: Access = Access::roles(&[Auditor]);

use Method::{Delete, Get, Patch, Post, Put};

/// Every route, and who may call it.
pub const POLICY: &[Rule] = &[
    // What every process serves about itself.
    rule(Get, "/health", Access::ANYONE).probe(),
    rule(Get, "/ready", Access::ANYONE).probe(),
    rule(Get, "/metrics", Access::ANYONE).probe(),
    rule(Get, "/openapi.json", Access::ANYONE),
    rule(Get, "/.well-known/jwks.json", Access::ANYONE),
    // The catalogue.
    rule(Get, "/products/{product_id}", Access::ANYONE),
    rule(Get, "/search", Access::ANYONE),
    rule(Get, "/categories", Access::ANYONE),
    rule(Get, "/recommendations", Access::ANYONE),
    rule(Post, "/products", CATALOG).creates(),
    rule(Put, "/products/{product_id}", CATALOG),
    rule(Post, "/products/{product_id}/stock", CATALOG).creates(),
    // Carts: their guest or customer; support staff may read them.
    rule(Post, "/carts/{cart_id}/items", CART_HOLDERS).creates(),
    rule(Delete, "/carts/{cart_id}/items/{product_id}", CART_HOLDERS),
    rule(Post, "/carts/{cart_id}/checkout", CART_HOLDERS).creates(),
    rule(
        Get,
        "/carts/{cart_id}",
        Access::roles(&[Support])
            .and_guests(GuestToken::Cart)
            .and_customers(),
    ),
    // Orders: their customer or guest, and support staff.
    rule(Post, "/orders", Access::roles(&[Support]).and_customers()).creates(),
    rule(Get, "/orders", SUPPORT),
    rule(
        Get,
        "/orders/{order_id}",
        Access::roles(&[Support])
            .and_guests(GuestToken::Order)
            .and_customers(),
    ),
    rule(
        Post,
        "/orders/{order_id}/cancel",
        Access::roles(&[Support])
            .and_guests(GuestToken::Order)
            .and_customers(),
    ),
    rule(Post, "/orders/{order_id}/shipments", SUPPORT).creates(),
    rule(
        Post,
        "/orders/{order_id}/shipments/{shipment_id}/delivered",
        SUPPORT,
    ),
    rule(Post, "/orders/{order_id}/refunds", SUPPORT).creates(),
    rule(Post, "/orders/{order_id}/returns", SUPPORT).creates(),
    rule(Post, "/orders/{order_id}/payments", SUPPORT).creates(),
    rule(
        Get,
        "/orders/{order_id}/receipt",
        Access::roles(&[Support])
            .and_guests(GuestToken::Order)
            .and_customers(),
    ),
    rule(
        Get,
        "/customers/{customer_id}/orders",
        Access::roles(&[Support]).and_customers(),
    ),
    // Accounts. Every account, an auditor's included, keeps its own profile and password (an
    // auditor never writes the shop's data); support staff read a customer's profile to serve
    // their orders; accounts are erased and deactivated by admins.
    rule(Post, "/users", Access::ANYONE).accounts().creates(),
    rule(Post, "/users/verify", Access::ANYONE).accounts(),
    rule(Post, "/sessions", Access::ANYONE).accounts(),
    rule(Post, "/sessions/refresh", Access::ANYONE).accounts(),
    rule(Delete, "/sessions/current", ACCOUNTS),
    rule(Get, "/users/me", ACCOUNTS),
    rule(Patch, "/users/me", ACCOUNTS),
    rule(Post, "/users/me/password", ACCOUNTS),
    rule(Delete, "/users/me", ACCOUNTS),
    rule(Post, "/password-resets", Access::ANYONE).accounts(),
    rule(Post, "/password-resets/complete", Access::ANYONE).accounts(),
    rule(Get, "/users", ADMINS),
    rule(Get, "/users/{user_id}", Access::roles(&[Support])),
    rule(Post, "/users/{user_id}/erase", ADMINS),
    rule(Post, "/users/{user_id}/deactivate", ADMINS),
    // Stripe calls it without mercato credentials: the webhook's signature (STRIPE_WEBHOOK_SECRET)
    // is what lets an event through, checked before anything is read.
    rule(Post, "/webhooks/stripe", Access::ANYONE),
    // Outgoing webhooks: admins only (a URL mercato calls, and a secret shown once).
    rule(Post, "/webhooks", ADMINS).creates(),
    rule(Get, "/webhooks", ADMINS),
    rule(Get, "/webhooks/{webhook_id}", ADMINS),
    rule(Delete, "/webhooks/{webhook_id}", ADMINS),
    rule(Get, "/webhooks/{webhook_id}/deliveries", ADMINS),
    rule(Post, "/webhooks/{webhook_id}/replay", ADMINS),
    // The messages sent about an order: support staff.
    rule(Get, "/orders/{order_id}/notifications", SUPPORT),
    rule(Get, "/notifications", SUPPORT),
    rule(Post, "/notifications/{key}/retry", SUPPORT),
    rule(Post, "/notifications/{key}/resend", SUPPORT).creates(),
    // The event history, for auditors.
    rule(Get, "/streams/{stream_type}/{stream_id}/events", AUDITORS),
    rule(Get, "/streams/{stream_type}/{stream_id}/state", AUDITORS),
    rule(Get, "/events", AUDITORS),
    rule(Get, "/audit/verify", AUDITORS).long(),
    // What runs behind the API.
    rule(Get, "/sagas", SUPPORT),
    rule(Post, "/sagas/{order_id}/retry", SUPPORT),
    rule(Get, "/projections", ADMINS),
    rule(Post, "/projections/{name}/retry", ADMINS),
    rule(Get, "/dead-letters", ADMINS),
    rule(Post, "/dead-letters/replay", ADMINS).long(),
];

/// The table by method and path, made once: every request looks its route up here.
static RULES: LazyLock<HashMap<(Method, &'static str), Rule>> = LazyLock::new(|| {
    POLICY
        .iter()
        .map(|rule| ((rule.method, rule.path), *rule))
        .collect()
});

/// The rule of `method` `path`, if the table has one.
pub fn rule_of(method: Method, path: &str) -> Option<Rule> {
    RULES.get(&(method, path)).copied()
}

/// How long each request may take: the routes marked long get the long limit.
pub fn deadlines() -> http_common::context::Deadlines {
    http_common::context::Deadlines::with_long(
        POLICY
            .iter()
            .filter(|rule| rule.long)
            .map(|rule| (rule.method.http(), rule.path))
            .collect(),
    )
}

/// Who may call `method` `path`, if the table has a rule for it.
pub fn access_of(method: Method, path: &str) -> Option<Access> {
    rule_of(method, path).map(|rule| rule.access)
}

/// Fails naming every route without an entry, and every entry without a route.
pub fn check_coverage(routes: &[RouteDoc]) -> Result<(), String> {
    let mut faults = Vec::new();
    for route in routes {
        if access_of(route.method, route.path).is_none() {
            faults.push(format!(
                "route {} {} has no entry in the permission table (server::policy::POLICY)",
                route.method.as_str().to_uppercase(),
                route.path
            ));
        }
    }
    for rule in POLICY {
        let served = routes
            .iter()
            .any(|route| route.method == rule.method && route.path == rule.path);
        if !served {
            faults.push(format!(
                "the permission table names {} {}, which no API serves",
                rule.method.as_str().to_uppercase(),
                rule.path
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for rule in POLICY {
        if !seen.insert((rule.method, rule.path)) {
            faults.push(format!(
                "the permission table names {} {} twice",
                rule.method.as_str().to_uppercase(),
                rule.path
            ));
        }
    }
    if faults.is_empty() {
        Ok(())
    } else {
        Err(faults.join("; "))
    }
}

/// The method of a request as the table names it: HEAD is a GET without the body (axum answers
/// it with the GET route), so the GET's rule admits it.
fn method_of(method: &axum::http::Method) -> Option<Method> {
    if method == axum::http::Method::HEAD {
        return Some(Get);
    }
    [Get, Post, Put, Patch, Delete]
        .into_iter()
        .find(|known| known.http() == method)
}

/// What every request passes on its way to its route ([`guard`]).
#[derive(Debug)]
pub struct Guard {
    pub limits: Arc<crate::limits::Limits>,
    /// The answers kept for `Idempotency-Key`.
    pub idempotency: identity::IdempotencyRecords,
}

/// Lets a request through to its route only if its caller is within its rate limit (429 with
/// `Retry-After`), the process has room for it (503 with `Retry-After`), and the table's rule
/// admits its principal: 401 (with `WWW-Authenticate: Bearer`) without credentials, 403 with
/// credentials that do not admit it. A creating route's request with an `Idempotency-Key` then
/// runs at most once ([`crate::idempotency`]). A route layer: it runs after routing, so the
/// route's path is known.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let rule = request
        .extensions()
        .get::<MatchedPath>()
        .zip(method_of(request.method()))
        .and_then(|(path, method)| rule_of(method, path.as_str()));
    let Some(rule) = rule else {
        // The start-up check makes this unreachable: every served route has an entry.
        return Problem::internal(&format_args!(
            "{} {} has no entry in the permission table",
            request.method(),
            request.uri().path()
        ))
        .into_response();
    };
    let (principal, address) = request
        .extensions()
        .get::<RequestContext>()
        .map(|context| (context.principal.clone(), context.peer))
        .unwrap_or((identity::Principal::Anonymous, None));
    let _permit = match guard.limits.admit(rule.bucket, &principal, address) {
        Ok(permit) => permit,
        Err(refusal) => return refusal.answer(guard.limits.max_in_flight()),
    };
    if let Some(refused) = refusal(&rule.access, &principal) {
        return refused;
    }
    if rule.creates {
        match crate::idempotency::key_of(request.headers()) {
            Ok(Some(key)) => {
                return crate::idempotency::run_once(&guard.idempotency, key, request, next).await;
            }
            Ok(None) => {}
            Err(problem) => return problem.into_response(),
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_long_routes_get_the_long_deadline_and_no_other() {
        use axum::http::Method as Http;
        use http_common::context::{LONG_REQUEST_TIMEOUT, REQUEST_TIMEOUT};
        let deadlines = deadlines();
        assert_eq!(
            deadlines.of(&Http::GET, "/audit/verify"),
            LONG_REQUEST_TIMEOUT
        );
        assert_eq!(
            deadlines.of(&Http::POST, "/dead-letters/replay"),
            LONG_REQUEST_TIMEOUT
        );
        for (method, path) in [
            (Http::GET, "/dead-letters"),
            (Http::POST, "/audit/verify"),
            (Http::GET, "/audit/verify/x"),
            (Http::GET, "/search"),
        ] {
            assert_eq!(
                deadlines.of(&method, path),
                REQUEST_TIMEOUT,
                "{method} {path}"
            );
        }
        // A long route is matched by its exact path: it can have no path parameter.
        assert!(
            POLICY
                .iter()
                .filter(|rule| rule.long)
                .all(|rule| !rule.path.contains('{'))
        );
    }

    #[test]
    fn every_served_route_has_one_entry_and_every_entry_a_route() {
        check_coverage(&crate::ops::documented_routes()).expect("the table covers the routes");
    }

    #[test]
    fn a_route_missing_from_the_table_or_an_entry_without_a_route_is_named() {
        let mut routes = crate::ops::documented_routes();
        routes.push(RouteDoc::get(
            "/unlisted",
            "a route nobody listed",
            "Object",
        ));
        let fault = check_coverage(&routes).unwrap_err();
        assert!(fault.contains("GET /unlisted has no entry"), "{fault}");
        routes.retain(|route| route.path != "/search" && route.path != "/unlisted");
        let fault = check_coverage(&routes).unwrap_err();
        assert!(
            fault.contains("names GET /search, which no API serves"),
            "{fault}"
        );
    }
}
