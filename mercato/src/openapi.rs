//! `GET /openapi.json`: the OpenAPI 3 document of every route, built from one table that an
//! end-to-end test checks against the running router.

use serde_json::{Map, Value, json};

/// One documented route.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// The request body's schema (a component name), if it takes one.
    pub body: Option<&'static str>,
    /// The success status and the answer's schema (a component name).
    pub success: (u16, &'static str),
    /// Query parameters: name and description.
    pub query: &'static [(&'static str, &'static str)],
    /// Whether `X-Min-Position` applies (read-your-writes).
    pub min_position: bool,
}

const MIN_POSITION: (&str, &str) = (
    "min_position",
    "wait (at most 5 s, else 503) until the read model has processed this position",
);

/// Every route mercato serves.
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "post",
        path: "/products",
        summary: "Create a product",
        body: Some("CreateProduct"),
        success: (201, "Written"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "put",
        path: "/products/{product_id}",
        summary: "Change a product's name, description, price or category (null clears the category)",
        body: Some("UpdateProduct"),
        success: (200, "Written"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "post",
        path: "/products/{product_id}/stock",
        summary: "Restock or correct the stock by a delta",
        body: Some("AdjustStock"),
        success: (200, "Written"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "post",
        path: "/carts/{cart_id}/items",
        summary: "Add units of a product to a cart line",
        body: Some("AddCartItem"),
        success: (200, "Written"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "delete",
        path: "/carts/{cart_id}/items/{product_id}",
        summary: "Remove a cart line",
        body: None,
        success: (200, "Written"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "post",
        path: "/carts/{cart_id}/checkout",
        summary: "Check a cart out: places its order",
        body: Some("Checkout"),
        success: (202, "Written"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "post",
        path: "/orders",
        summary: "Place an order",
        body: Some("PlaceOrder"),
        success: (202, "Written"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "get",
        path: "/products/{product_id}",
        summary: "A product (x-cache: hit or miss); with customer_id, records a view",
        body: None,
        success: (200, "Product"),
        query: &[(
            "customer_id",
            "the viewing customer: records a ProductViewed",
        )],
        min_position: true,
    },
    RouteDoc {
        method: "get",
        path: "/search",
        summary: "Full-text product search with filters, by relevance then popularity (x-cache: hit or miss)",
        body: None,
        success: (200, "SearchResult"),
        query: &[
            (
                "q",
                "words to find in name and description (stemmed, case-insensitive), at most 200 characters",
            ),
            ("category", "exact category, case-insensitive"),
            ("min_price", "lowest price, major units"),
            ("max_price", "highest price, major units"),
            ("limit", "1 to 100, default 20"),
            ("offset", "0 to 10000, default 0"),
        ],
        min_position: true,
    },
    RouteDoc {
        method: "get",
        path: "/carts/{cart_id}",
        summary: "A cart with its lines and total",
        body: None,
        success: (200, "Cart"),
        query: &[],
        min_position: true,
    },
    RouteDoc {
        method: "get",
        path: "/orders/{order_id}",
        summary: "An order with its status, payment status and cancel reason",
        body: None,
        success: (200, "Order"),
        query: &[],
        min_position: true,
    },
    RouteDoc {
        method: "get",
        path: "/customers/{customer_id}/orders",
        summary: "A customer's orders, newest first",
        body: None,
        success: (200, "CustomerOrders"),
        query: &[("limit", "1 to 500, default 50")],
        min_position: true,
    },
    RouteDoc {
        method: "get",
        path: "/recommendations",
        summary: "Popular products the customer has not ordered yet",
        body: None,
        success: (200, "Recommendations"),
        query: &[
            ("customer_id", "required"),
            ("limit", "1 to 100, default 10"),
        ],
        min_position: true,
    },
    RouteDoc {
        method: "get",
        path: "/streams/{stream_type}/{stream_id}/events",
        summary: "One stream's history in version order, with each event's metadata; stream_type is product, cart, order, payment or product_views (another is 404). Any other query parameter is a 400 naming the accepted ones",
        body: None,
        success: (200, "StreamEvents"),
        query: &[
            (
                "after_version",
                "start after this stream version (continue from next_after_version)",
            ),
            ("limit", "1 to 10000, default 1000"),
            (
                "correlation_id",
                "only the events one request or saga caused (its X-Correlation-Id); a page may then hold fewer than limit events: continue from next_after_version until it stops moving",
            ),
        ],
        min_position: true,
    },
    RouteDoc {
        method: "get",
        path: "/events",
        summary: "The global feed in position order. Any other query parameter is a 400 naming the accepted ones",
        body: None,
        success: (200, "EventFeed"),
        query: &[
            (
                "after",
                "start after this position (continue from next_after)",
            ),
            ("limit", "1 to 10000, default 100"),
            (
                "correlation_id",
                "only the events one request or saga caused (its X-Correlation-Id), across streams; paging with after works the same",
            ),
        ],
        min_position: true,
    },
    RouteDoc {
        method: "get",
        path: "/health",
        summary: "Liveness",
        body: None,
        success: (200, "Object"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "get",
        path: "/ready",
        summary: "Readiness: every configured dependency answers (503 otherwise)",
        body: None,
        success: (200, "Object"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics",
        body: None,
        success: (200, "Text"),
        query: &[],
        min_position: false,
    },
    RouteDoc {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        body: None,
        success: (200, "Object"),
        query: &[],
        min_position: false,
    },
];

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": schema_ref("Problem") } }
    })
}

fn components() -> Value {
    let money = json!({ "type": "number", "description": "major units, at most two decimals" });
    let id = json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" });
    let product = json!({ "type": "object", "properties": {
        "product_id": { "type": "string", "format": "uuid" }, "name": { "type": "string" },
        "description": { "type": "string" }, "price": money, "stock_qty": { "type": "integer" },
        "category": { "type": ["string", "null"] }, "popularity": { "type": "integer" },
        "updated_at": { "type": "string", "format": "date-time" }, "version": { "type": "integer" } } });
    let line = json!({ "type": "object", "properties": {
        "product_id": { "type": "string", "format": "uuid" }, "quantity": { "type": "integer" },
        "unit_price": money } });
    let order = json!({ "type": "object", "properties": {
        "order_id": { "type": "string", "format": "uuid" }, "customer_id": id,
        "status": { "enum": ["PENDING", "CONFIRMED", "CANCELLED"] }, "lines": { "type": "array", "items": line },
        "total": money,
        "payment_status": { "enum": ["NOT_REQUESTED", "REQUESTED", "SUCCEEDED", "FAILED", "TIMED_OUT", "REFUNDED"] },
        "cancel_reason": { "enum": ["out_of_stock", "payment_declined", "payment_timeout"] },
        "pending_reason": { "type": "string", "description": "why a PENDING order's checkout is retrying or parked" } } });
    let event = json!({ "type": "object", "properties": {
        "event_id": { "type": "string", "format": "uuid" }, "event_type": { "type": "string" },
        "schema_version": { "type": "integer" }, "stream_type": { "type": "string" },
        "stream_id": { "type": "string" }, "stream_version": { "type": "integer" },
        "position": { "type": "integer" }, "occurred_at": { "type": "string", "format": "date-time" },
        "metadata": { "type": "object" }, "payload": { "type": "object" } } });
    json!({ "schemas": {
        "Problem": { "type": "object", "required": ["type", "title", "status", "detail"], "properties": {
            "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
            "detail": { "type": "string", "description": "what to fix" },
            "field": { "type": "string", "description": "the input field at fault" } } },
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
                "product_id": { "type": "string", "format": "uuid" }, "quantity": { "type": "integer" } } } } } },
        "Product": product,
        "SearchResult": { "type": "object", "properties": { "total": { "type": "integer" }, "hits": { "type": "array", "items": schema_ref("Product") } } },
        "Cart": { "type": "object", "properties": { "cart_id": id, "lines": { "type": "array", "items": line }, "total": money } },
        "Order": order,
        "CustomerOrders": { "type": "object", "properties": { "customer_id": id, "orders": { "type": "array", "items": schema_ref("Order") } } },
        "Recommendations": { "type": "object", "properties": { "customer_id": id, "items": { "type": "array", "items": { "type": "object", "properties": {
            "product_id": { "type": "string", "format": "uuid" }, "name": { "type": "string" }, "score": { "type": "integer" } } } } } },
        "Event": event,
        "StreamEvents": { "type": "object", "properties": { "stream_type": { "type": "string" }, "stream_id": { "type": "string" },
            "events": { "type": "array", "items": schema_ref("Event") },
            "next_after_version": { "type": "integer", "description": "the last stream version this answer read: pass it as after_version for the next page" } } },
        "EventFeed": { "type": "object", "properties": { "events": { "type": "array", "items": schema_ref("Event") },
            "next_after": { "type": "integer", "description": "the position of the last event returned (or after): pass it as after for the next page" } } },
        "Object": { "type": "object" },
        "Text": { "type": "string" }
    } })
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        for (name, description) in route.query {
            parameters.push(json!({ "name": name, "in": "query", "description": description, "schema": { "type": "string" } }));
        }
        if route.min_position {
            parameters.push(json!({ "name": MIN_POSITION.0, "in": "query", "description": MIN_POSITION.1, "schema": { "type": "integer" } }));
            parameters.push(json!({ "name": "X-Min-Position", "in": "header", "description": MIN_POSITION.1, "schema": { "type": "integer" } }));
        }
        let (status, schema) = route.success;
        let content_type = if schema == "Text" {
            "text/plain"
        } else {
            "application/json"
        };
        let mut responses = Map::new();
        responses.insert(
            status.to_string(),
            json!({ "description": "success", "content": { content_type: { "schema": schema_ref(schema) } } }),
        );
        responses.insert("4XX".to_owned(), problem_response("what to fix in the request (400 malformed, 404 unknown, 409 conflict or broken rule, 413 too large, 422 invalid field)"));
        responses.insert(
            "503".to_owned(),
            problem_response(
                "a dependency is unavailable or a read model did not reach min_position in time",
            ),
        );
        let mut operation =
            json!({ "summary": route.summary, "parameters": parameters, "responses": responses });
        if let (Some(body), Some(object)) = (route.body, operation.as_object_mut()) {
            object.insert(
                "requestBody".to_owned(),
                json!({ "required": true, "content": { "application/json": { "schema": schema_ref(body) } } }),
            );
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(methods) = entry.as_object_mut() {
            methods.insert(route.method.to_owned(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "mercato", "version": env!("CARGO_PKG_VERSION"),
                  "description": "An event-sourced commerce backend: commands in, every change kept as an event, read models out." },
        "paths": paths,
        "components": components(),
    })
}
