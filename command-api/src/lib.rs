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
    routes().into_doc(schemas(json!({
        "Written": { "type": "object", "properties": { "position": { "type": "integer" } },
            "description": "the id of what was written (product_id, cart_id or order_id) and the position of its last event (also X-Event-Position)" },
        "CreateProduct": { "type": "object", "additionalProperties": false, "required": ["name", "description", "price", "stock_qty"], "properties": {
            "name": { "type": "string", "maxLength": 200 }, "description": { "type": "string", "maxLength": 5000 },
            "price": money, "stock_qty": { "type": "integer", "minimum": 0 }, "category": { "type": "string", "maxLength": 100 } } },
        "UpdateProduct": { "type": "object", "additionalProperties": false, "properties": {
            "name": { "type": "string" }, "description": { "type": "string" }, "price": money,
            "category": { "type": ["string", "null"] } } },
        "AdjustStock": { "type": "object", "additionalProperties": false, "required": ["delta"], "properties": { "delta": { "type": "integer" } } },
        "AddCartItem": { "type": "object", "additionalProperties": false, "required": ["product_id", "quantity"], "properties": {
            "product_id": { "type": "string", "format": "uuid" }, "quantity": { "type": "integer", "minimum": 1, "maximum": 999 } } },
        "Checkout": { "type": "object", "additionalProperties": false, "required": ["customer_id", "payment_token"], "properties": {
            "customer_id": id, "payment_token": { "type": "string", "description": "a gateway token such as tok_visa; never a card number" },
            "shipping_address": { "type": "string" } } },
        "PlaceOrder": { "type": "object", "additionalProperties": false, "required": ["customer_id", "lines", "payment_token"], "properties": {
            "customer_id": id, "payment_token": { "type": "string" },
            "lines": { "type": "array", "items": { "type": "object", "required": ["product_id", "quantity"], "properties": {
                "product_id": { "type": "string", "format": "uuid" }, "quantity": { "type": "integer" } } } } } }
    })))
}
