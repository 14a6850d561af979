//! mercato's write side: the command routes of CONTRACT.md, with their documentation. Each
//! handler parses and checks its input, runs one command through the aggregate and the event
//! store (`eventstore::aggregate`) or one application function ([`orders::check_out`]), and
//! answers with the position of the last event it appended. It never reads a read model to
//! decide anything.
//!
//! - [`accounts`]: the account routes (registration, sessions, profile, passwords, erasure).
//! - [`input`]: the request bodies, money read from its decimal text.
//! - [`orders`]: a cart's checkout, the cart and its order appended together.
//! - [`problems`]: how a refused command is answered.
//! - [`seed`]: a catalogue loaded through the command path (`mercato seed`).
//! - [`webhooks`]: the payment gateway's webhook route (`POST /webhooks/stripe`).

mod accounts;
mod after;
pub mod caps;
mod handlers;
pub mod input;
pub mod orders;
pub mod problems;
pub mod seed;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use eventstore::EventStore;
use http_common::openapi::{
    ApiDoc, DocumentedRouter, Method, RouteDoc, client_id_schema, money_schema, schemas,
};
use identity::Identity;
use serde_json::json;

/// What the command routes need.
#[derive(Clone, Debug)]
pub struct CommandState {
    pub store: Arc<dyn EventStore>,
    /// Accounts, the guests' tokens and the payment vault.
    pub identity: Arc<Identity>,
    /// The bounds on what one customer may hold reserved.
    pub caps: caps::OrderCaps,
    /// Where a customer's orders waiting for payment are counted.
    pub open_orders: Arc<dyn caps::OpenOrders>,
    /// Stripe's webhooks, when a webhook secret is configured.
    pub payment_webhook: Option<Arc<dyn webhooks::PaymentWebhook>>,
}

/// A write route: a body (or none), answering `Written` with `status`.
const fn write(
    method: Method,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
    status: u16,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        body,
        success: (status, "Written"),
        query: &[],
        min_position: false,
    }
}

/// The command routes, each with its documentation.
fn routes() -> DocumentedRouter<CommandState> {
    use handlers::*;
    account_routes(DocumentedRouter::new())
        .route(
            write(
                Method::Post,
                "/products",
                "Create a product",
                Some("CreateProduct"),
                201,
            ),
            create_product,
        )
        .route(
            write(
                Method::Put,
                "/products/{product_id}",
                "Change a product's name, description, price or category (null clears the category)",
                Some("UpdateProduct"),
                200,
            ),
            update_product,
        )
        .route(
            write(
                Method::Post,
                "/products/{product_id}/stock",
                "Restock or correct the stock by a delta",
                Some("AdjustStock"),
                200,
            ),
            adjust_stock,
        )
        .route(
            write(
                Method::Post,
                "/carts/{cart_id}/items",
                "Add units of a product to a cart line",
                Some("AddCartItem"),
                200,
            ),
            add_cart_item,
        )
        .route(
            write(
                Method::Delete,
                "/carts/{cart_id}/items/{product_id}",
                "Remove a cart line",
                None,
                200,
            ),
            remove_cart_item,
        )
        .route(
            write(
                Method::Post,
                "/carts/{cart_id}/checkout",
                "Check a cart out: places its order",
                Some("Checkout"),
                202,
            ),
            checkout,
        )
        .route(
            write(
                Method::Post,
                "/orders",
                "Place an order",
                Some("PlaceOrder"),
                202,
            ),
            place_order,
        )
        .route(
            write(
                Method::Post,
                "/orders/{order_id}/cancel",
                "Cancel an order: its customer until the first shipment, support staff until delivery; its stock is released and its charge refunded",
                Some("CancelOrder"),
                202,
            ),
            after::cancel_order,
        )
        .route(
            write(
                Method::Post,
                "/orders/{order_id}/shipments",
                "Ship some or all of an order's lines (support); shipped never exceeds ordered",
                Some("Ship"),
                201,
            ),
            after::ship_order,
        )
        .route(
            write(
                Method::Post,
                "/orders/{order_id}/shipments/{shipment_id}/delivered",
                "Mark a shipment delivered (support)",
                None,
                200,
            ),
            after::mark_delivered,
        )
        .route(
            write(
                Method::Post,
                "/orders/{order_id}/refunds",
                "Refund an amount or lines (support); refunded never exceeds captured (409). The gateway is asked next and the refund shows once it confirms",
                Some("Refund"),
                202,
            ),
            after::refund_order,
        )
        .route(
            write(
                Method::Post,
                "/orders/{order_id}/returns",
                "Record returned units (support); returned never exceeds shipped, restock puts them back in stock",
                Some("Return"),
                202,
            ),
            after::receive_return,
        )
        .route(
            write(
                Method::Post,
                "/orders/{order_id}/payments",
                "Record a bank transfer received for the order's total (support)",
                Some("RecordPayment"),
                202,
            ),
            after::record_payment,
        )
        .route(
            RouteDoc {
                success: (200, "WebhookReceived"),
                ..write(
                    Method::Post,
                    "/webhooks/stripe",
                    "Stripe's webhook: a payment_intent.succeeded or payment_intent.payment_failed event, signed in the Stripe-Signature header (t=TIMESTAMP,v1=HMAC-SHA256), is recorded on its order's payment once; other event types are answered 200 and ignored; a missing, wrong or older than 300 s signature is 400 and changes nothing; 404 when STRIPE_WEBHOOK_SECRET is not set",
                    Some("StripeEvent"),
                    200,
                )
            },
            webhooks::stripe_webhook,
        )
}

/// The account routes that change something.
fn account_routes(router: DocumentedRouter<CommandState>) -> DocumentedRouter<CommandState> {
    use accounts::*;
    router
        .route(
            write(Method::Post, "/users", "Register a customer account; a verification email is sent", Some("Register"), 201),
            register,
        )
        .route(
            done(Method::Post, "/users/verify", "Confirm an email address with the token of the verification email", Some("TokenOnly")),
            verify_email,
        )
        .route(
            session(Method::Post, "/sessions", "Log in: an access token and a refresh token (a wrong email and a wrong password are the same 401; repeated failures 429)", "Login"),
            log_in,
        )
        .route(
            session(Method::Post, "/sessions/refresh", "A new token pair for a refresh token, which stops working (a rotated one used again ends the session)", "Refresh"),
            refresh,
        )
        .route(
            done(Method::Delete, "/sessions/current", "Log out: the session's refresh token is revoked", None),
            log_out,
        )
        .route(
            write(Method::Patch, "/users/me", "Change your name, phone, addresses or the language of your messages (null clears the phone or the addresses, or goes back to English)", Some("ChangeProfile"), 200),
            change_profile,
        )
        .route(
            done(Method::Post, "/users/me/password", "Change your password; every session of the account ends", Some("ChangePassword")),
            change_password,
        )
        .route(
            RouteDoc {
                success: (202, "Accepted"),
                ..write(Method::Post, "/password-resets", "Ask for a password reset: 202 whether or not an account has the email, which gets a one-time token", Some("RequestReset"), 202)
            },
            request_password_reset,
        )
        .route(
            done(Method::Post, "/password-resets/complete", "Set a new password with a reset token (it works once, for 30 minutes)", Some("CompleteReset")),
            complete_password_reset,
        )
        .route(
            write(Method::Delete, "/users/me", "Erase your account: your personal data is destroyed for good; your orders keep their lines and amounts", None, 202),
            erase_own_account,
        )
        .route(
            write(Method::Post, "/users/{user_id}/erase", "Erase an account (admin)", None, 202),
            erase_account,
        )
        .route(
            write(Method::Post, "/users/{user_id}/deactivate", "Deactivate an account: it cannot log in, its sessions end (admin)", None, 200),
            deactivate_account,
        )
}

/// A route answering 204 on success.
const fn done(
    method: Method,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
) -> RouteDoc {
    RouteDoc {
        success: (204, "Empty"),
        ..write(method, path, summary, body, 204)
    }
}

/// A route answering a session (`POST /sessions`, `/sessions/refresh`).
const fn session(
    method: Method,
    path: &'static str,
    summary: &'static str,
    body: &'static str,
) -> RouteDoc {
    RouteDoc {
        success: (200, "Session"),
        ..write(method, path, summary, Some(body), 200)
    }
}

/// The command routes of CONTRACT.md.
pub fn router(state: CommandState) -> Router {
    routes().into_router().with_state(state)
}

/// The command routes' part of the OpenAPI document.
pub fn api_doc() -> ApiDoc {
    let money = money_schema();
    let id = client_id_schema();
    // What the domain's text rules accept (`domain::text`): no control characters, and for a
    // required text at least one character that shows. Lengths count code points here and what
    // a person sees on the server, so a text the document allows is never too long.
    let line = |max: usize| {
        json!({ "type": "string", "minLength": 1, "maxLength": max,
            "pattern": format!("^{NOT_CONTROL}*{VISIBLE}{NOT_CONTROL}*$"),
            "description": "one line with at least one visible character; stored in Unicode normal form C" })
    };
    let lines = |max: usize, min: usize| {
        json!({ "type": "string", "minLength": min, "maxLength": max,
            "pattern": format!("^{NOT_CONTROL_BUT_LINES}*$"),
            "description": "text; line breaks and tabs allowed, other control characters not" })
    };
    let token = json!({ "type": "string", "minLength": 1, "maxLength": domain::payment::PAYMENT_TOKEN_MAX_CHARS,
        "pattern": "^[!-~]+$", "not": { "pattern": "^-*(?:[0-9]-*){12,19}$" },
        "description": "a gateway token such as tok_visa; never a card number (12 to 19 digits, with or without spaces and dashes, are refused)" });
    let stock = json!({ "type": "integer", "minimum": 0, "maximum": domain::product::STOCK_MAX });
    let quantity =
        json!({ "type": "integer", "minimum": 1, "maximum": domain::cart::LINE_QUANTITY_MAX });
    let name = line(domain::product::NAME_MAX_CHARS);
    let category = line(domain::product::CATEGORY_MAX_CHARS);
    let description = lines(domain::product::DESCRIPTION_MAX_CHARS, 0);
    let password = json!({ "type": "string", "minLength": identity::password::PASSWORD_MIN_CHARS,
        "maxLength": identity::password::PASSWORD_MAX_CHARS,
        "description": "12 to 128 characters, not a common password (nor one with digits added), not the email" });
    let email = json!({ "type": "string", "format": "email", "minLength": 3, "maxLength": domain::personal::EMAIL_MAX_CHARS });
    let person_name = line(domain::personal::PERSON_NAME_MAX_CHARS);
    let address_line = |max: usize| line(max);
    let address = json!({ "type": "object", "additionalProperties": false,
        "required": ["name", "line1", "city", "postal_code", "country"], "properties": {
        "name": address_line(200), "line1": address_line(200),
        "line2": { "anyOf": [address_line(200), { "type": "null" }] },
        "city": address_line(100), "postal_code": address_line(20),
        "country": { "type": "string", "pattern": "^[A-Za-z]{2}$", "description": "ISO 3166-1 alpha-2" },
        "phone": { "anyOf": [{ "type": "string", "pattern": "^[0-9+ ().-]{5,32}$" }, { "type": "null" }] } } });
    let phone = json!({ "type": "string", "pattern": "^[0-9+ ().-]{5,32}$",
        "description": "5 to 20 digits, with +, spaces, dots, dashes or parentheses" });
    let secret_text = json!({ "type": "string", "minLength": 1, "maxLength": 200 });
    let item_lines = json!({ "type": "array", "minItems": 1, "maxItems": domain::cart::LINES_MAX, "items": {
        "type": "object", "additionalProperties": false, "required": ["product_id", "quantity"], "properties": {
        "product_id": { "type": "string", "format": "uuid" }, "quantity": quantity.clone() } } });
    let order_address = json!({ "anyOf": [address.clone(), lines(input::SHIPPING_ADDRESS_MAX_CHARS, 1), { "type": "null" }],
        "description": "{name, line1, line2?, city, postal_code, country, phone?}, or (as before) lines of text; kept sealed under the person's key" });
    let payment_method = json!({ "type": "string", "enum": ["card", "bank_transfer"],
        "description": "card (the default, with payment_token) or bank_transfer (waits for staff to record the payment until a deadline, then cancels)" });
    let reason = line(500);
    let positive_money = json!({ "allOf": [money.clone()], "exclusiveMinimum": 0 });
    routes().into_doc(schemas(json!({
        "Register": { "type": "object", "additionalProperties": false, "required": ["email", "password", "name"], "properties": {
            "email": email.clone(), "password": password.clone(), "name": person_name.clone() } },
        "TokenOnly": { "type": "object", "additionalProperties": false, "required": ["token"], "properties": {
            "token": secret_text.clone() } },
        "Login": { "type": "object", "additionalProperties": false, "required": ["email", "password"], "properties": {
            "email": { "type": "string", "maxLength": domain::personal::EMAIL_MAX_CHARS }, "password": { "type": "string", "maxLength": 1000 } } },
        "Refresh": { "type": "object", "additionalProperties": false, "required": ["refresh_token"], "properties": {
            "refresh_token": secret_text.clone() } },
        "Session": { "type": "object", "required": ["access_token", "token_type", "expires_in", "refresh_token"], "properties": {
            "access_token": { "type": "string", "description": "a JWT signed with EdDSA; verify it with GET /.well-known/jwks.json" },
            "token_type": { "const": "Bearer" }, "expires_in": { "type": "integer", "description": "seconds" },
            "refresh_token": { "type": "string", "description": "opaque; POST /sessions/refresh rotates it" },
            "user_id": { "type": "string", "format": "uuid" } } },
        "ChangeProfile": { "type": "object", "additionalProperties": false, "minProperties": 1, "properties": {
            "name": person_name,
            "phone": { "anyOf": [phone, { "type": "null" }] },
            "addresses": { "anyOf": [{ "type": "array", "maxItems": domain::personal::ADDRESSES_MAX, "items": address }, { "type": "null" }] },
            "language": { "anyOf": [{ "type": "string", "enum": identity::accounts::PROFILE_LANGUAGES, "description": "the language of your messages (ISO 639-1)" }, { "type": "null" }] } } },
        "ChangePassword": { "type": "object", "additionalProperties": false, "required": ["current_password", "new_password"], "properties": {
            "current_password": { "type": "string", "maxLength": 1000 }, "new_password": password.clone() } },
        "RequestReset": { "type": "object", "additionalProperties": false, "required": ["email"], "properties": {
            "email": { "type": "string", "maxLength": domain::personal::EMAIL_MAX_CHARS } } },
        "CompleteReset": { "type": "object", "additionalProperties": false, "required": ["token", "new_password"], "properties": {
            "token": secret_text, "new_password": password } },
        "Accepted": { "type": "object", "properties": { "detail": { "type": "string" } } },
        "StripeEvent": { "type": "object", "required": ["id", "type"], "properties": {
            "id": { "type": "string", "description": "Stripe's event id (evt_...): a redelivery records nothing new" },
            "type": { "type": "string", "description": "payment_intent.succeeded and payment_intent.payment_failed are recorded; other types are ignored" },
            "data": { "type": "object", "description": "data.object: the PaymentIntent, whose metadata.order_id names the order" } },
            "description": "a Stripe event object, exactly as Stripe sent it (the signature covers the raw body)" },
        "WebhookReceived": { "type": "object", "required": ["received", "recorded", "detail"], "properties": {
            "received": { "const": true }, "recorded": { "type": "boolean" }, "detail": { "type": "string" } } },
        "Written": { "type": "object", "required": ["position"], "properties": {
                "product_id": { "type": "string", "format": "uuid" }, "cart_id": id.clone(),
                "order_id": { "type": "string", "format": "uuid" },
                "user_id": { "type": "string", "format": "uuid" },
                "cart_token": { "type": "string", "description": "a guest's cart token: send it as X-Cart-Token with every later request for the cart" },
                "order_token": { "type": "string", "description": "a guest's order token: send it as X-Order-Token to read the order" },
                "position": { "type": ["integer", "null"], "description": "null when the write changed nothing (no event was appended)" } },
            "description": "the id of what was written (product_id, cart_id or order_id) and the position of its last event (also X-Event-Position)" },
        "CreateProduct": { "type": "object", "additionalProperties": false, "required": ["name", "description", "price", "stock_qty"], "properties": {
            "name": name.clone(), "description": description.clone(),
            "price": money.clone(), "stock_qty": stock,
            "category": { "anyOf": [category.clone(), { "type": "null" }], "description": "null or absent: no category" } } },
        "UpdateProduct": { "type": "object", "additionalProperties": false, "minProperties": 1, "properties": {
            "name": name, "description": description, "price": money,
            "category": { "anyOf": [category, { "type": "null" }] } } },
        "AdjustStock": { "type": "object", "additionalProperties": false, "required": ["delta"], "properties": {
            "delta": { "type": "integer", "minimum": -i64::from(domain::product::STOCK_MAX), "maximum": domain::product::STOCK_MAX } } },
        "AddCartItem": { "type": "object", "additionalProperties": false, "required": ["product_id", "quantity"], "properties": {
            "product_id": { "type": "string", "format": "uuid" }, "quantity": quantity.clone() } },
        "Checkout": { "type": "object", "additionalProperties": false, "properties": {
            "customer_id": { "allOf": [id.clone()], "description": "your own customer id, or left out; a guest leaves it out (or gives \"guest\")" },
            "payment_token": { "allOf": [token.clone()], "description": "required with the card method (the default), refused with bank_transfer" },
            "payment_method": payment_method.clone(),
            "shipping_address": order_address.clone(),
            "billing_address": order_address.clone() } },
        "PlaceOrder": { "type": "object", "additionalProperties": false, "required": ["lines"], "properties": {
            "customer_id": { "allOf": [id], "description": "a customer's own id, or left out; required when support staff order for a customer" },
            "payment_token": { "allOf": [token], "description": "required with the card method (the default), refused with bank_transfer" },
            "payment_method": payment_method,
            "shipping_address": order_address.clone(),
            "billing_address": order_address,
            "lines": item_lines.clone() } },
        "CancelOrder": { "type": "object", "additionalProperties": false, "properties": {
            "reason": reason.clone() } },
        "Ship": { "type": "object", "additionalProperties": false, "required": ["lines", "carrier", "tracking_number"], "properties": {
            "lines": item_lines.clone(), "carrier": line(100), "tracking_number": line(100) } },
        "Refund": { "type": "object", "additionalProperties": false,
            "oneOf": [{ "required": ["amount"] }, { "required": ["lines"] }], "properties": {
            "amount": positive_money, "lines": item_lines.clone(), "reason": reason } },
        "Return": { "type": "object", "additionalProperties": false, "required": ["lines", "restock"], "properties": {
            "lines": item_lines, "restock": { "type": "boolean" } } },
        "RecordPayment": { "type": "object", "additionalProperties": false, "required": ["amount", "reference"], "properties": {
            "amount": money.clone(), "reference": line(200) } }
    })))
}

/// A character that is not a control character (regular-expression class).
const NOT_CONTROL: &str = "[^\\u0000-\\u001F\\u007F-\\u009F]";
/// The same, with line breaks and tabs allowed.
const NOT_CONTROL_BUT_LINES: &str =
    "[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]";
/// A character a person sees: not a control, not white space, not an invisible format character.
const VISIBLE: &str = "[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u034F\\u061C\\u115F\\u1160\\u17B4\\u17B5\\u180B-\\u180F\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\u3164\\uFE00-\\uFE0F\\uFEFF\\uFFA0]";
