//! The web console: pages a person opens in a browser, served by `mercato serve` itself at `/`.
//! The storefront (`shop.rs`), the account pages (`account.rs`), the back office (`office.rs`)
//! and the audit explorer (`audit.rs`) are rendered on the server
//! from MiniJinja templates compiled into the binary (`templates/`), with one stylesheet and no
//! script: nothing to build, nothing fetched from elsewhere.
//!
//! Every page reads and writes through mercato's HTTP API ([`api::Api`]) with the visitor's own
//! credentials (the tokens the API gave at login, kept in `HttpOnly` cookies: [`visitor`]), so
//! the API's permission table, limits and validation decide what a page may show or do, as for
//! any other client. Every form that writes carries a token bound to the visitor's cookie and is
//! refused from another site; every page is sent with a Content-Security-Policy that allows
//! only the console's own stylesheet and images.

mod account;
pub mod api;
mod audit;
mod office;
mod pages;
mod shop;
pub mod visitor;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_common::openapi::Method;

pub use api::Api;

/// The Content-Security-Policy of every console answer: the console's own stylesheet and
/// images, forms posted to itself, no script, no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest form the console takes.
const FORM_LIMIT: usize = 16 * 1024;

/// What the pages need.
#[derive(Clone, Debug)]
pub struct ConsoleState {
    pub api: Api,
    /// The shop's name, in every page's title.
    pub shop_name: String,
    /// The payment choices offered at checkout: a label and the token the gateway takes. The
    /// embedded setup's test gateway shows its test cards.
    pub payment_choices: Vec<(String, String)>,
    /// The API's permission table: who may call a route (method and path as the table names
    /// them). Menus, links and buttons are shown by it.
    pub rules: Rules,
    pages: Arc<pages::Pages>,
}

/// The permission table's lookup: the access rule of a method and route path.
pub type Rules = fn(Method, &str) -> Option<http_common::Access>;

impl ConsoleState {
    pub fn new(
        api: Api,
        shop_name: String,
        payment_choices: Vec<(String, String)>,
        rules: Rules,
    ) -> Self {
        ConsoleState {
            api,
            shop_name,
            payment_choices,
            rules,
            pages: Arc::new(pages::Pages::new()),
        }
    }

    /// Whether `visitor` may call the API's route `method` `path` (as the permission table names
    /// it): what decides which menus, links and buttons a page shows.
    pub fn may(&self, visitor: &visitor::Visitor, method: Method, path: &str) -> bool {
        (self.rules)(method, path).is_some_and(|access| {
            access.decide(&visitor.principal()) == http_common::access::Decision::Allow
        })
    }
}

/// The console's routes: `/`, `/shop/...`, `/account/...` and `/assets/...`, none of which the
/// API serves.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(shop::home))
        .route("/shop/search", get(shop::search))
        .route("/shop/products/{product_id}", get(shop::product))
        .route("/shop/cart", get(shop::cart))
        .route("/shop/cart/items", post(shop::add_to_cart))
        .route("/shop/cart/remove", post(shop::remove_from_cart))
        .route("/shop/checkout", post(shop::check_out))
        .route("/shop/orders", get(shop::my_orders))
        .route("/shop/orders/{order_id}", get(shop::order))
        .route(
            "/account/login",
            get(account::login_page).post(account::log_in),
        )
        .route("/account/logout", post(account::log_out))
        .route(
            "/account/register",
            get(account::register_page).post(account::register),
        )
        .route(
            "/reset-password",
            get(account::reset_page).post(account::reset),
        )
        .route("/account/reset", post(account::ask_reset))
        .route(
            "/verify-email",
            get(account::verify_email).post(account::confirm_email),
        )
        .route("/office", get(office::home))
        .route("/office/products", get(office::products))
        .route(
            "/office/products/new",
            get(office::new_product).post(office::create_product),
        )
        .route(
            "/office/products/{product_id}",
            get(office::product).post(office::update_product),
        )
        .route("/office/products/{product_id}/stock", post(office::restock))
        .route("/office/orders", get(office::find_order))
        .route("/office/orders/{order_id}", get(office::order))
        .route("/office/orders/{order_id}/ship", post(office::ship))
        .route("/office/orders/{order_id}/cancel", post(office::cancel))
        .route("/office/orders/{order_id}/refund", post(office::refund))
        .route("/office/sagas", get(office::sagas))
        .route("/office/sagas/{order_id}/retry", post(office::retry_saga))
        .route("/office/projections", get(office::projections))
        .route("/office/accounts", get(office::accounts))
        .route("/office/notifications", get(office::notifications))
        .route(
            "/office/notifications/{key}/{action}",
            post(office::notification_action),
        )
        .route("/office/webhooks", get(office::webhooks))
        .route("/office/dead-letters", get(office::dead_letters))
        .route(
            "/office/dead-letters/replay",
            post(office::replay_dead_letters),
        )
        .route(
            "/office/accounts/{user_id}/deactivate",
            post(office::deactivate),
        )
        .route(
            "/office/projections/{name}/retry",
            post(office::retry_projection),
        )
        .route("/audit", get(audit::home))
        .route(
            "/audit/streams/{stream_type}/{stream_id}",
            get(audit::stream),
        )
        .route(
            "/audit/streams/{stream_type}/{stream_id}/state",
            get(audit::stream_state),
        )
        .route(
            "/audit/streams/{stream_type}/{stream_id}/cloudevents",
            get(audit::stream_export),
        )
        .route(
            "/audit/correlations/{correlation_id}",
            get(audit::correlation),
        )
        .route(
            "/audit/correlations/{correlation_id}/cloudevents",
            get(audit::correlation_export),
        )
        .route("/audit/verification", get(audit::verify))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/icon.svg", get(icon))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(state)
}

/// Every answer: the Content-Security-Policy and its companions.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

const STYLESHEET: &str = include_str!("../assets/console.css");
const ICON: &str = include_str!("../assets/icon.svg");

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

async fn icon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        ICON,
    )
}
