//! mercato's write side: the command routes of CONTRACT.md, with their documentation. Each
//! handler parses and checks its input, runs one command through the aggregate and the event
//! store (`eventstore::aggregate`) or one application function ([`orders::check_out`]), and
//! answers with the position of the last event it appended. It never reads a read model to
//! decide anything.
//!
//! - [`input`]: the request bodies, money read from its decimal text.
//! - [`orders`]: a cart's checkout, the cart and its order appended together.
//! - [`problems`]: how a refused command is answered.
//! - [`seed`]: a catalogue loaded through the command path (`mercato seed`).

mod handlers;
pub mod input;
pub mod orders;
pub mod problems;
pub mod seed;

use std::sync::Arc;

use axum::Router;
use eventstore::EventStore;
use http_common::openapi::{
    ApiDoc, DocumentedRouter, Method, RouteDoc, client_id_schema, money_schema, schemas,
};
use serde_json::json;

/// What the command routes need.
#[derive(Clone, Debug)]
pub struct CommandState {
    pub store: Arc<dyn EventStore>,
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
    DocumentedRouter::new()
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
    routes().into_doc(schemas(json!({
        "Written": { "type": "object", "required": ["position"], "properties": {
                "product_id": { "type": "string", "format": "uuid" }, "cart_id": id.clone(),
                "order_id": { "type": "string", "format": "uuid" },
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
        "Checkout": { "type": "object", "additionalProperties": false, "required": ["customer_id", "payment_token"], "properties": {
            "customer_id": id.clone(), "payment_token": token.clone(),
            "shipping_address": lines(input::SHIPPING_ADDRESS_MAX_CHARS, 1) } },
        "PlaceOrder": { "type": "object", "additionalProperties": false, "required": ["customer_id", "lines", "payment_token"], "properties": {
            "customer_id": id, "payment_token": token,
            "lines": { "type": "array", "minItems": 1, "maxItems": domain::cart::LINES_MAX, "items": {
                "type": "object", "additionalProperties": false, "required": ["product_id", "quantity"], "properties": {
                "product_id": { "type": "string", "format": "uuid" }, "quantity": quantity } } } } }
    })))
}

/// A character that is not a control character (regular-expression class).
const NOT_CONTROL: &str = "[^\\u0000-\\u001F\\u007F-\\u009F]";
/// The same, with line breaks and tabs allowed.
const NOT_CONTROL_BUT_LINES: &str =
    "[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]";
/// A character a person sees: not a control, not white space, not an invisible format character.
const VISIBLE: &str = "[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u034F\\u061C\\u115F\\u1160\\u17B4\\u17B5\\u180B-\\u180F\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\u3164\\uFE00-\\uFE0F\\uFEFF\\uFFA0]";
