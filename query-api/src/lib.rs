//! mercato's read side: the query routes of CONTRACT.md over the read models, the search index
//! and the event log. Reads may wait for their read model to pass a position (`X-Min-Position`
//! or `?min_position=`, read-your-writes, at most 5 s). It never appends events except the
//! `ProductViewed` that a product read by a known customer records, off the request's path.

pub mod audit;
pub mod head;
mod orders;
pub mod users;
pub mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use domain::{CustomerId, Money, Role};
use eventstore::EventStore;
use http_common::Problem;
use http_common::RequestContext;
use http_common::openapi::{
    ApiDoc, DocumentedRouter, RouteDoc, amount_schema, client_id_schema, money_schema, schema_ref,
    schemas,
};
use http_common::params::{count_param, known_params, product_id_of, truncate};
use http_common::problem::store_problem;
use identity::{GUEST_CUSTOMER_ID, Identity, Principal, Resource};
use projections::Progress;
use projections::cache::{CATALOGUE_SCOPE, Cache, POPULAR_SCOPE, SEARCH_SCOPE};
use projections::queries::{OrderRow, Queries};
use projections::search::{ProductDoc, SearchIndex, SearchQuery};
use projections::sql_models::{
    OrdersProjection, ProductsProjection, SqlCartsProjection, SqlPopularityProjection,
    product_scope,
};
use schemas::envelope::feed_json;
use serde_json::value::RawValue;
use serde_json::{Value, json};

pub use crate::head::LogHead;
use crate::views::ViewRecorder;

/// How long a read waits for its read model to reach `X-Min-Position`.
pub const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);
/// How deep a search may page: `offset + limit` at most this (the contract's limit, and
/// OpenSearch's `index.max_result_window`).
pub const SEARCH_WINDOW: usize = 10_000;

/// What the query routes need.
#[derive(Clone, Debug)]
pub struct QueryState {
    pub store: Arc<dyn EventStore>,
    /// The log's head, for reads that wait for a position of the log itself.
    pub head: LogHead,
    /// The read models' reads (SQL, and Redis for carts and popularity when configured).
    pub queries: Queries,
    pub search: Arc<dyn SearchIndex>,
    pub cache: Option<Arc<dyn Cache>>,
    pub progress: Progress,
    pub views: Option<ViewRecorder>,
    /// The guests' tokens and the person keys that open a profile.
    pub identity: Arc<Identity>,
}

/// A read route answering `schema`, with query parameters `query`, that waits for
/// `X-Min-Position`.
pub(crate) const fn read(
    path: &'static str,
    summary: &'static str,
    schema: &'static str,
    query: &'static [(&'static str, &'static str)],
) -> RouteDoc {
    RouteDoc {
        query,
        min_position: true,
        ..RouteDoc::get(path, summary, schema)
    }
}

/// The query routes, each with its documentation.
fn routes() -> DocumentedRouter<QueryState> {
    DocumentedRouter::new()
        .route(
            read(
                "/products/{product_id}",
                "A product (x-cache: hit or miss); with customer_id, records a view",
                "Product",
                &[(
                    "customer_id",
                    "the viewing customer, who must be the caller: records a ProductViewed",
                )],
            ),
            get_product,
        )
        .route(
            read(
                "/search",
                "Full-text product search with filters, by relevance then popularity (x-cache: hit or miss)",
                "SearchResult",
                &[
                    (
                        "q",
                        "words to find in name and description (stemmed, case-insensitive), at most 200 characters",
                    ),
                    ("category", "exact category, case-insensitive"),
                    ("min_price", "lowest price, major units (above max_price: nothing matches)"),
                    ("max_price", "highest price, major units"),
                    ("limit", "1 to 100, default 20"),
                    ("offset", "0 to 9999, default 0; offset + limit at most 10000"),
                ],
            ),
            search,
        )
        .route(
            read(
                "/carts/{cart_id}",
                "A cart with its lines and total",
                "Cart",
                &[],
            ),
            get_cart,
        )
        .route(
            read(
                "/orders/{order_id}",
                "An order with its status, payment status and cancel reason",
                "Order",
                &[],
            ),
            get_order,
        )
        .route(
            read(
                "/orders/{order_id}/receipt",
                "An order's receipt: lines with names and amounts, payments, refunds and the net paid; Accept: text/html gives a printable page",
                "Receipt",
                &[],
            ),
            orders::get_receipt,
        )
        .route(
            read(
                "/orders",
                "Orders, newest first, by status and customer (support staff). Any other query parameter is a 400 naming the accepted ones",
                "OrderList",
                &[
                    ("status", "PENDING, CONFIRMED or CANCELLED"),
                    ("customer_id", "only this customer's orders"),
                    (
                        "before",
                        "only orders created before this log position: the next_before of the page before",
                    ),
                    ("limit", "1 to 100, default 25"),
                ],
            ),
            orders::list_orders,
        )
        .route(
            read(
                "/customers/{customer_id}/orders",
                "A customer's orders, newest first",
                "CustomerOrders",
                &[("limit", "1 to 500, default 50")],
            ),
            customer_orders,
        )
        .route(
            read(
                "/categories",
                "The catalogue's categories by name, with how many products each has (x-cache: hit or miss)",
                "Categories",
                &[],
            ),
            categories,
        )
        .route(
            read(
                "/recommendations",
                "Popular products the customer has not ordered yet; without customer_id, the most popular products (x-cache: hit or miss)",
                "Recommendations",
                &[
                    (
                        "customer_id",
                        "the customer, who must be the caller (support staff may give any)",
                    ),
                    ("limit", "1 to 100, default 10"),
                ],
            ),
            recommendations,
        )
        .route(
            read(
                "/streams/{stream_type}/{stream_id}/events",
                "One stream's history in version order, with each event's metadata; stream_type is product, cart, order, payment or product_views (another is 404). Any other query parameter is a 400 naming the accepted ones. Accept: application/cloudevents-batch+json answers the events as a CloudEvents 1.0 JSON batch, with next_after_version in the x-next-after-version header",
                "StreamEvents",
                &[
                    (
                        "after_version",
                        "start after this stream version (continue from next_after_version)",
                    ),
                    ("limit", "1 to 1000, default 1000"),
                    (
                        "correlation_id",
                        "only the events one request or saga caused (its X-Correlation-Id); a page may then hold fewer than limit events: continue from next_after_version until it stops moving",
                    ),
                ],
            ),
            stream_events,
        )
        .route(
            read(
                "/events",
                "The global feed in position order. Any other query parameter is a 400 naming the accepted ones. Accept: application/cloudevents-batch+json answers the events as a CloudEvents 1.0 JSON batch, with next_after in the x-next-after header",
                "EventFeed",
                &[
                    (
                        "after",
                        "start after this position (continue from next_after)",
                    ),
                    ("limit", "1 to 1000, default 100"),
                    (
                        "correlation_id",
                        "only the events one request or saga caused (its X-Correlation-Id), across streams; paging with after works the same",
                    ),
                ],
            ),
            global_events,
        )
}

/// The query routes of CONTRACT.md.
pub fn router(state: QueryState) -> Router {
    audit::routes(users::routes(routes()))
        .into_router()
        .with_state(state)
}

/// The query routes' part of the OpenAPI document.
pub fn api_doc() -> ApiDoc {
    let money = money_schema();
    let id = client_id_schema();
    let product = json!({ "type": "object", "properties": {
        "product_id": { "type": "string", "format": "uuid" }, "name": { "type": "string" },
        "description": { "type": "string" }, "price": money, "stock_qty": { "type": "integer" },
        "category": { "type": ["string", "null"] }, "popularity": { "type": "integer" },
        "updated_at": { "type": "string", "format": "date-time" }, "version": { "type": "integer" } } });
    let line = json!({ "type": "object", "properties": {
        "product_id": { "type": "string", "format": "uuid" }, "quantity": { "type": "integer" },
        "unit_price": money } });
    let address = json!({ "description": "the address given at checkout ({name, line1, line2?, city, postal_code, country, phone?}, or the older free text), null if none, \"erased\" once the person is erased" });
    let counts = json!({ "type": "array", "items": { "type": "object", "properties": {
        "product_id": { "type": "string", "format": "uuid" }, "quantity": { "type": "integer" } } } });
    let order = json!({ "type": "object", "properties": {
        "order_id": { "type": "string", "format": "uuid" }, "customer_id": id,
        "status": { "enum": ["PENDING", "CONFIRMED", "CANCELLED"] }, "lines": { "type": "array", "items": line },
        "total": amount_schema(),
        "payment_status": { "enum": ["NOT_REQUESTED", "REQUESTED", "SUCCEEDED", "FAILED", "TIMED_OUT", "REFUNDED", "PARTIALLY_REFUNDED"] },
        "cancel_reason": { "enum": ["out_of_stock", "payment_declined", "payment_timeout", "customer_request", "staff_request"] },
        "pending_reason": { "type": "string", "description": "why a PENDING order's checkout is retrying or parked" },
        "shipping_address": address.clone(), "billing_address": address,
        "payment_method": { "enum": ["card", "bank_transfer"] },
        "fulfilment_status": { "enum": ["UNFULFILLED", "PARTIALLY_SHIPPED", "SHIPPED", "DELIVERED"] },
        "shipments": { "type": "array", "items": { "type": "object", "properties": {
            "shipment_id": { "type": "string", "format": "uuid" }, "lines": counts.clone(),
            "carrier": { "type": "string" }, "tracking_number": { "type": "string" },
            "shipped_at": { "type": "string" }, "delivered_at": { "type": ["string", "null"] } } } },
        "returns": { "type": "array", "items": { "type": "object", "properties": {
            "return_id": { "type": "string", "format": "uuid" }, "lines": counts,
            "restock": { "type": "boolean" }, "received_at": { "type": "string" } } } },
        "payments": { "type": "array", "items": { "type": "object", "properties": {
            "charge_id": { "type": "string" }, "amount": amount_schema(), "paid_at": { "type": "string" } } } },
        "refunds": { "type": "array", "items": { "type": "object", "properties": {
            "refund_id": { "type": "string" }, "amount": amount_schema(), "reason": { "type": ["string", "null"] },
            "status": { "enum": ["REQUESTED", "REFUNDED", "FAILED"] }, "failure": { "type": ["string", "null"] },
            "requested_at": { "type": "string" }, "refunded_at": { "type": ["string", "null"] } } } },
        "refunded_total": amount_schema() } });
    let event = json!({ "type": "object", "properties": {
        "event_id": { "type": "string", "format": "uuid" }, "event_type": { "type": "string" },
        "schema_version": { "type": "integer" }, "stream_type": { "type": "string" },
        "stream_id": { "type": "string" }, "stream_version": { "type": "integer" },
        "position": { "type": "integer" }, "occurred_at": { "type": "string", "format": "date-time" },
        "metadata": { "type": "object" }, "payload": { "type": "object" } } });
    let mut schemas = schemas(json!({
        "Profile": users::profile_schema(),
        "Accounts": { "type": "object", "properties": { "accounts": { "type": "array", "items": schema_ref("Profile") },
            "next_offset": { "type": ["integer", "null"], "description": "pass as offset for the next page; null on the last page" } } },
        "Product": product,
        "Categories": { "type": "object", "properties": { "categories": { "type": "array", "items": { "type": "object", "properties": {
            "name": { "type": "string" }, "products": { "type": "integer", "description": "how many products are in it" } } } } } },
        "SearchResult": { "type": "object", "properties": { "total": { "type": "integer" }, "hits": { "type": "array", "items": schema_ref("Product") } } },
        "Cart": { "type": "object", "properties": { "cart_id": id, "lines": { "type": "array", "items": line }, "total": amount_schema() } },
        "Receipt": { "allOf": [schema_ref("Order")], "properties": {
            "paid_total": amount_schema(), "net_total": { "type": "number" } } },
        "Order": order,
        "OrderList": { "type": "object", "properties": { "orders": { "type": "array", "items": schema_ref("Order") },
            "next_before": { "type": ["integer", "null"], "description": "pass as before for the next page; null on the last page" } } },
        "CustomerOrders": { "type": "object", "properties": { "customer_id": id, "orders": { "type": "array", "items": schema_ref("Order") } } },
        "Recommendations": { "type": "object", "properties": { "customer_id": { "anyOf": [id, { "type": "null" }], "description": "null: the most popular products, for no one in particular" }, "items": { "type": "array", "items": { "type": "object", "properties": {
            "product_id": { "type": "string", "format": "uuid" }, "name": { "type": "string" }, "score": { "type": "integer" } } } } } },
        "Event": event,
        "StreamEvents": { "type": "object", "properties": { "stream_type": { "type": "string" }, "stream_id": { "type": "string" },
            "events": { "type": "array", "items": schema_ref("Event") },
            "next_after_version": { "type": "integer", "description": "the last stream version this answer read: pass it as after_version for the next page" } } },
        "EventFeed": { "type": "object", "properties": { "events": { "type": "array", "items": schema_ref("Event") },
            "next_after": { "type": "integer", "description": "the position of the last event returned (or after): pass it as after for the next page" } } }
    }));
    schemas.extend(audit::schemas().map(|(name, schema)| (name.to_owned(), schema)));
    audit::routes(users::routes(routes())).into_doc(schemas)
}

/// A money amount as a JSON number in major units, written from its exact decimal text.
pub(crate) fn money_raw(minor: i64) -> Box<RawValue> {
    RawValue::from_string(Money::from_minor(minor).to_string())
        .unwrap_or_else(|_| RawValue::from_string("0".to_owned()).unwrap_or_default())
}

/// The product as the API shows it.
pub fn product_json(product: &ProductDoc) -> Value {
    json!({
        "product_id": product.product_id,
        "name": product.name,
        "description": product.description,
        "price": money_raw(product.price_minor),
        "stock_qty": product.stock_qty,
        "category": product.category,
        "popularity": product.popularity,
        "updated_at": product.updated_at,
        "version": product.version,
    })
}

/// The position a read must wait for: `X-Min-Position` or `?min_position=`. Both are checked
/// when both are given, and the later one counts.
fn min_position(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Option<u64>, Problem> {
    let header = match headers.get("x-min-position") {
        Some(value) => Some(parse_position(
            "X-Min-Position",
            value
                .to_str()
                .map_err(|_| Problem::invalid("X-Min-Position", "must be a position number"))?,
        )?),
        None => None,
    };
    let query = match params.get("min_position") {
        Some(text) => Some(parse_position("min_position", text)?),
        None => None,
    };
    // Both given: each must be a position, and the read waits for the later one.
    Ok(header.max(query))
}

fn parse_position(field: &str, text: &str) -> Result<u64, Problem> {
    text.trim().parse::<u64>().map_err(|_| {
        Problem::invalid(
            field,
            format!(
                "must be a position as answered in X-Event-Position, got {:?}",
                truncate(text, 40)
            ),
        )
    })
}

/// How many requests of a process may wait for a position at once; one more is answered 503
/// with `Retry-After` at once.
pub const MAX_WAITERS: usize = 256;
/// How long a position beyond the log's head is waited for: long enough for a write being
/// committed this very moment (on PostgreSQL an event is readable once older transactions
/// end), short enough that made-up positions cost nothing.
const BEYOND_HEAD_WAIT: Duration = Duration::from_secs(1);

static WAITERS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_WAITERS)));

/// Waits until the log can return `position` (a place among the [`MAX_WAITERS`], held while
/// the caller waits on), woken by the store's change signal through [`LogHead`]: a position
/// beyond the head after [`BEYOND_HEAD_WAIT`] is a 409, and no place free a 503.
async fn log_reached(
    state: &QueryState,
    position: u64,
) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
    let permit = WAITERS.clone().try_acquire_owned().map_err(|_| {
        Problem::unavailable(format!(
            "{MAX_WAITERS} requests are waiting for positions already; retry after 1 s (Retry-After)"
        ))
    })?;
    match state.head.wait_for(position, BEYOND_HEAD_WAIT).await {
        Ok(Ok(())) => Ok(permit),
        Ok(Err(head)) => Err(beyond_head_problem(position, head)),
        Err(error) => Err(store_problem(&error)),
    }
}

/// After a wait that did not reach `position`: a 409 when the log still holds no event that far
/// (no write answered that position yet: the request conflicts with the log's state, and the
/// same request succeeds once the log reaches it). While a write commits, the readable head
/// may trail a position already answered for a moment, so this is only asked once the wait is
/// over.
async fn beyond_head(state: &QueryState, position: u64) -> Option<Problem> {
    let head = state.store.head_position().await.ok()?;
    (position > head).then(|| beyond_head_problem(position, head))
}

fn beyond_head_problem(position: u64, head: u64) -> Problem {
    Problem::conflict(format!(
        "min_position: position {position} is beyond the log's head ({head}): give a position a write answered in X-Event-Position"
    ))
    .with_field("min_position")
}

/// `?customer_id=`, which must be the caller's own (403 otherwise); support staff and
/// services with the support role may name any customer where `staff_may` says so.
fn own_customer_param(
    context: &RequestContext,
    params: &HashMap<String, String>,
    staff_may: bool,
) -> Result<Option<CustomerId>, Problem> {
    let Some(text) = params.get("customer_id") else {
        return Ok(None);
    };
    let customer_id =
        CustomerId::parse(text).map_err(|error| Problem::invalid(error.field, &error.message))?;
    if context.principal.customer_id().as_ref() == Some(&customer_id)
        || (staff_may && context.principal.has_role(Role::Support))
    {
        return Ok(Some(customer_id));
    }
    Err(Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "customer_id must be your own: log in as that customer, or leave it out",
    )
    .with_field("customer_id"))
}

/// Whether the caller may read a cart of `owner` (a `CartOwner::key`, `None` for a cart from
/// before carts had owners): its customer, its guest (with the cart's token), or support.
fn may_read_cart(
    state: &QueryState,
    context: &RequestContext,
    headers: &HeaderMap,
    cart_id: &str,
    owner: Option<&str>,
) -> bool {
    if context.principal.has_role(Role::Support) {
        return true;
    }
    match (&context.principal, owner) {
        (Principal::Customer { .. }, Some(owner)) => context
            .principal
            .customer_id()
            .is_some_and(|customer_id| owner == domain::CartOwner::customer(customer_id).key()),
        (Principal::Anonymous, Some("guest")) => {
            guest_token(headers, "x-cart-token").is_some_and(|token| {
                state
                    .identity
                    .resource_tokens
                    .verify(Resource::Cart, cart_id, token)
            })
        }
        _ => false,
    }
}

/// Whether the caller may read order `order_id` of `customer_id`: its customer, its guest
/// (with the order's token), or support.
pub(crate) fn may_read_order(
    state: &QueryState,
    context: &RequestContext,
    headers: &HeaderMap,
    order_id: &str,
    customer_id: &str,
) -> bool {
    if context.principal.has_role(Role::Support) {
        return true;
    }
    match &context.principal {
        Principal::Customer { .. } => context
            .principal
            .customer_id()
            .is_some_and(|own| own.as_str() == customer_id),
        Principal::Anonymous => {
            customer_id == GUEST_CUSTOMER_ID
                && guest_token(headers, "x-order-token").is_some_and(|token| {
                    state
                        .identity
                        .resource_tokens
                        .verify(Resource::Order, order_id, token)
                })
        }
        _ => false,
    }
}

fn guest_token<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Waits until projection `name` has applied `position` (read-your-writes), else 503.
pub(crate) async fn wait_for(
    state: &QueryState,
    name: &'static str,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(), Problem> {
    let Some(position) = min_position(headers, params)? else {
        return Ok(());
    };
    // Reached already (the usual read-your-writes read): no wait, no place among the waiters.
    if state
        .progress
        .wait_for(name, position, Duration::ZERO)
        .await
    {
        return Ok(());
    }
    let _waiting = log_reached(state, position).await?;
    if state
        .progress
        .wait_for(name, position, MIN_POSITION_WAIT)
        .await
    {
        Ok(())
    } else if let Some(problem) = beyond_head(state, position).await {
        Err(problem)
    } else {
        Err(Problem::unavailable(format!(
            "the {name} read model has not reached position {position} within {} s; retry later",
            MIN_POSITION_WAIT.as_secs()
        )))
    }
}

pub(crate) fn db_problem(error: &dyn std::fmt::Display) -> Problem {
    Problem::unavailable_logged("the read model is unavailable", error)
}

fn cached_answer(body: String, hit: bool, kind: &'static str) -> Response {
    metrics::counter!(
        "mercato_cache_requests_total",
        "kind" => kind,
        "result" => if hit { "hit" } else { "miss" }
    )
    .increment(1);
    let mut response = (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    response.headers_mut().insert(
        "x-cache",
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    response
}

// At debug: a product read is the hottest route, and its server span (`GET /products/{product_id}`)
// already says everything this span would.
#[tracing::instrument(level = "debug", skip_all, fields(product_id = %product_id))]
async fn get_product(
    State(state): State<QueryState>,
    Extension(context): Extension<RequestContext>,
    Path(product_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let product_uuid = product_id_of(&product_id)?;
    let customer_id = own_customer_param(&context, &params, false)?;
    wait_for(&state, ProductsProjection::NAME, &headers, &params).await?;
    let product_id = product_uuid.to_string();
    let scope = product_scope(&product_id);
    let lookup = match &state.cache {
        Some(cache) => Some(cache.lookup(&scope, "product").await),
        None => None,
    };
    let answer = if let Some(body) = lookup.as_ref().and_then(|lookup| lookup.value.clone()) {
        cached_answer(body, true, "product")
    } else {
        let Some(product) = state
            .queries
            .product(&product_id)
            .await
            .map_err(|error| db_problem(&error))?
        else {
            return Err(Problem::not_found(format!(
                "no product has id {product_id}"
            )));
        };
        let body = product_json(&product).to_string();
        if let (Some(cache), Some(lookup)) = (&state.cache, &lookup)
            && state.progress.serving(ProductsProjection::NAME)
        {
            cache
                .store(&scope, lookup.generation, "product", &body)
                .await;
        }
        cached_answer(body, false, "product")
    };
    // A view is recorded when the reader says who they are (`?customer_id=`).
    if let (Some(views), Some(customer_id)) = (&state.views, customer_id) {
        views.record(product_uuid, Some(customer_id));
    }
    Ok(answer)
}

fn price_param(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, Problem> {
    let Some(text) = params.get(name) else {
        return Ok(None);
    };
    let money = Money::parse_decimal(text.trim())
        .map_err(|error| Problem::invalid(name, error.to_string()))?;
    if money.minor() < 0 {
        return Err(Problem::invalid(name, "must be 0 or more"));
    }
    Ok(Some(money.minor()))
}

/// The longest search text accepted, in characters.
const QUERY_MAX_CHARS: usize = 200;

#[tracing::instrument(skip_all)]
async fn search(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    // The catalogue's texts are in normal form C; so is what a search compares with them.
    let text = domain::text::nfc(params.get("q").cloned().unwrap_or_default());
    if text.chars().count() > QUERY_MAX_CHARS {
        return Err(Problem::invalid(
            "q",
            format!("must be at most {QUERY_MAX_CHARS} characters"),
        ));
    }
    let category = params
        .get("category")
        .filter(|c| !c.is_empty())
        .map(|category| domain::text::nfc(category.clone()));
    if category.as_ref().is_some_and(|category| {
        domain::text::visible_length(category) > domain::product::CATEGORY_MAX_CHARS
    }) {
        return Err(Problem::invalid(
            "category",
            format!(
                "must be at most {} characters",
                domain::product::CATEGORY_MAX_CHARS
            ),
        ));
    }
    let query = SearchQuery {
        text,
        category,
        min_price_minor: price_param(&params, "min_price")?,
        max_price_minor: price_param(&params, "max_price")?,
        limit: count_param(&params, "limit", 20, 1..=100)?,
        offset: count_param(&params, "offset", 0, 0..=SEARCH_WINDOW)?,
    };
    if query.offset + query.limit > SEARCH_WINDOW {
        return Err(Problem::invalid(
            "offset",
            format!(
                "offset + limit must be at most {SEARCH_WINDOW} (got {}): narrow the search instead of paging this deep",
                query.offset + query.limit
            ),
        ));
    }
    wait_for(&state, state.search.projection_name(), &headers, &params).await?;
    // A price range whose low end is above its high end holds no price: no product matches.
    if let (Some(min), Some(max)) = (query.min_price_minor, query.max_price_minor)
        && min > max
    {
        return Ok(axum::Json(json!({ "total": 0, "hits": [] })).into_response());
    }
    let key = query.cache_key();
    let lookup = match &state.cache {
        Some(cache) => Some(cache.lookup(SEARCH_SCOPE, &key).await),
        None => None,
    };
    if let Some(body) = lookup.as_ref().and_then(|lookup| lookup.value.clone()) {
        return Ok(cached_answer(body, true, "search"));
    }
    let result =
        state.search.search(&query).await.map_err(|error| {
            Problem::unavailable_logged("the search index is unavailable", &error)
        })?;
    let hits: Vec<Value> = result.hits.iter().map(product_json).collect();
    let body = json!({ "total": result.total, "hits": hits }).to_string();
    // A read model not caught up (a fresh or wrong data directory) answers for itself only.
    if let (Some(cache), Some(lookup)) = (&state.cache, &lookup)
        && state.progress.serving(state.search.projection_name())
    {
        cache
            .store(SEARCH_SCOPE, lookup.generation, &key, &body)
            .await;
    }
    Ok(cached_answer(body, false, "search"))
}

#[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
async fn get_cart(
    State(state): State<QueryState>,
    Extension(context): Extension<RequestContext>,
    Path(cart_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let cart_id = domain::CartId::parse(&cart_id)
        .map_err(|error| Problem::invalid(error.field, &error.message))?;
    wait_for(&state, SqlCartsProjection::NAME, &headers, &params).await?;
    let cart = state
        .queries
        .cart(cart_id.as_str())
        .await
        .map_err(|error| db_problem(&error))?;
    let Some(cart) = cart.filter(|cart| {
        may_read_cart(
            &state,
            &context,
            &headers,
            cart_id.as_str(),
            cart.owner.as_deref(),
        )
    }) else {
        // Someone else's cart is no cart, so ids cannot be probed.
        return Err(Problem::not_found(format!(
            "no cart has id {cart_id} (or it is not yours: a guest sends the cart's X-Cart-Token)"
        )));
    };
    let mut total: i64 = 0;
    let lines: Vec<Value> = cart
        .lines
        .iter()
        .map(|(product_id, line)| {
            total = total.saturating_add(
                line.unit_price_minor
                    .saturating_mul(i64::from(line.quantity)),
            );
            json!({
                "product_id": product_id,
                "quantity": line.quantity,
                "unit_price": money_raw(line.unit_price_minor),
            })
        })
        .collect();
    Ok(Json(json!({
        "cart_id": cart_id.as_str(),
        "lines": lines,
        "total": money_raw(total),
        "checked_out_as": cart.checked_out_as,
        "version": cart.version,
    }))
    .into_response())
}

/// An order as the API shows it.
pub(crate) fn order_json(order: &OrderRow) -> Value {
    let lines: Vec<Value> = order
        .lines
        .iter()
        .map(|line| {
            json!({
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price": money_raw(line.unit_price_minor),
            })
        })
        .collect();
    let mut answer = json!({
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "status": order.status,
        "lines": lines,
        "total": money_raw(order.total_minor),
        "payment_status": order.payment_status,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    });
    if let (Some(reason), Some(object)) = (&order.cancel_reason, answer.as_object_mut()) {
        object.insert("cancel_reason".to_owned(), Value::String(reason.clone()));
    }
    answer
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn get_order(
    State(state): State<QueryState>,
    Extension(context): Extension<RequestContext>,
    Path(order_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (order_id, row) =
        orders::readable_order(&state, &context, &headers, &params, &order_id).await?;
    let mut order = order_json(&row);
    orders::add_details(&state, &row, &mut order).await?;
    if order["status"] == "PENDING"
        && let Some(reason) = pending_reason(&state, order_id).await
        && let Some(object) = order.as_object_mut()
    {
        object.insert("pending_reason".to_owned(), Value::String(reason));
    }
    Ok(Json(order).into_response())
}

/// Why a pending order's checkout is not moving, when its saga is retrying or parked.
async fn pending_reason(state: &QueryState, order_id: uuid::Uuid) -> Option<String> {
    let saga = match sagas::state::saga_status(state.queries.db(), order_id).await {
        Ok(saga) => saga?,
        Err(error) => {
            tracing::warn!(%error, "cannot read the order's saga");
            return None;
        }
    };
    let error = saga.last_error?;
    Some(if saga.state == sagas::state::FAILED {
        format!(
            "checkout stopped after {} failed attempts and waits for an operator \
             (mercato saga retry): {error}",
            saga.attempts
        )
    } else {
        format!(
            "checkout is retrying after {} failed attempts: {error}",
            saga.attempts
        )
    })
}

#[tracing::instrument(skip_all, fields(customer_id = %customer_id))]
async fn customer_orders(
    State(state): State<QueryState>,
    Extension(context): Extension<RequestContext>,
    Path(customer_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let customer_id = CustomerId::parse(&customer_id)
        .map_err(|error| Problem::invalid(error.field, &error.message))?;
    if context.principal.customer_id().as_ref() != Some(&customer_id)
        && !context.principal.has_role(Role::Support)
    {
        return Err(Problem::not_found(format!(
            "no customer {customer_id} of yours: a customer reads their own orders"
        )));
    }
    let limit = count_param(&params, "limit", 50, 1..=500)?;
    wait_for(&state, OrdersProjection::NAME, &headers, &params).await?;
    let orders: Vec<Value> = state
        .queries
        .customer_orders(customer_id.as_str(), limit)
        .await
        .map_err(|error| db_problem(&error))?
        .iter()
        .map(order_json)
        .collect();
    Ok(Json(json!({ "customer_id": customer_id.as_str(), "orders": orders })).into_response())
}

#[tracing::instrument(skip_all)]
async fn categories(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    wait_for(&state, ProductsProjection::NAME, &headers, &params).await?;
    // Counted once per change of the catalogue, not per request.
    let lookup = match &state.cache {
        Some(cache) => Some(cache.lookup(CATALOGUE_SCOPE, "categories").await),
        None => None,
    };
    if let Some(body) = lookup.as_ref().and_then(|lookup| lookup.value.clone()) {
        return Ok(cached_answer(body, true, "categories"));
    }
    let categories: Vec<Value> = state
        .queries
        .categories()
        .await
        .map_err(|error| db_problem(&error))?
        .into_iter()
        .map(|category| json!({ "name": category.name, "products": category.products }))
        .collect();
    let body = json!({ "categories": categories }).to_string();
    if let (Some(cache), Some(lookup)) = (&state.cache, &lookup)
        && state.progress.serving(ProductsProjection::NAME)
    {
        cache
            .store(CATALOGUE_SCOPE, lookup.generation, "categories", &body)
            .await;
    }
    Ok(cached_answer(body, false, "categories"))
}

#[tracing::instrument(skip_all)]
async fn recommendations(
    State(state): State<QueryState>,
    Extension(context): Extension<RequestContext>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let customer_id = own_customer_param(&context, &params, true)?;
    let limit = count_param(&params, "limit", 10, 1..=100)?;
    wait_for(&state, SqlPopularityProjection::NAME, &headers, &params).await?;
    // Without a customer: the most popular products (no one has ordered them, for this list),
    // the same for everyone: cached until a batch scores or changes a product.
    let popular = match (&state.cache, &customer_id) {
        (Some(cache), None) => {
            let key = format!("popular:{limit}");
            let lookup = cache.lookup(POPULAR_SCOPE, &key).await;
            if let Some(body) = lookup.value {
                return Ok(cached_answer(body, true, "popular"));
            }
            Some((cache, key, lookup.generation))
        }
        _ => None,
    };
    let for_whom = customer_id
        .as_ref()
        .map_or("", |customer_id| customer_id.as_str());
    let items: Vec<Value> = state
        .queries
        .recommendations(for_whom, limit)
        .await
        .map_err(|error| db_problem(&error))?
        .into_iter()
        .map(
            |item| json!({ "product_id": item.product_id, "name": item.name, "score": item.score }),
        )
        .collect();
    let body = json!({ "customer_id": customer_id, "items": items });
    let Some((cache, key, generation)) = popular else {
        return Ok(Json(body).into_response());
    };
    let body = body.to_string();
    if state.progress.serving(SqlPopularityProjection::NAME)
        && state.progress.serving(ProductsProjection::NAME)
    {
        cache.store(POPULAR_SCOPE, generation, &key, &body).await;
    }
    Ok(cached_answer(body, false, "popular"))
}

fn position_param(params: &HashMap<String, String>, name: &str) -> Result<u64, Problem> {
    match params.get(name) {
        None => Ok(0),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| Problem::invalid(name, "must be a position (a whole number, 0 or more)")),
    }
}

/// The longest correlation id accepted (the request context's limit).
const CORRELATION_ID_MAX_CHARS: usize = 128;

/// `?correlation_id=`: 1 to 128 printable ASCII characters, like `X-Correlation-Id`.
fn correlation_param(params: &HashMap<String, String>) -> Result<Option<&str>, Problem> {
    let Some(text) = params.get("correlation_id") else {
        return Ok(None);
    };
    if text.is_empty()
        || text.len() > CORRELATION_ID_MAX_CHARS
        || !text
            .bytes()
            .all(|byte| byte.is_ascii_graphic() || byte == b' ')
    {
        return Err(Problem::invalid(
            "correlation_id",
            "must be 1 to 128 printable ASCII characters (an X-Correlation-Id)",
        ));
    }
    Ok(Some(text))
}

/// `X-Min-Position` / `?min_position=` on the event feeds: waits until the log can return that
/// position (on PostgreSQL a committed event becomes readable once older transactions end).
async fn wait_for_log(
    state: &QueryState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(), Problem> {
    match min_position(headers, params)? {
        Some(position) => log_reached(state, position).await.map(drop),
        None => Ok(()),
    }
}

/// The most events one feed page holds (the contract's limit).
pub const FEED_LIMIT_MAX: usize = 1_000;

/// How many stream events one filtered request reads at most before it answers with what it
/// found (the caller goes on from `next_after_version`).
const STREAM_SCAN_MAX: usize = 10_000;

#[tracing::instrument(skip_all, fields(stream_type = %stream_type, stream_id = %stream_id))]
async fn stream_events(
    State(state): State<QueryState>,
    Path((stream_type, stream_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let known = domain::stream_types();
    if !known.contains(&stream_type.as_str()) {
        return Err(Problem::not_found(format!(
            "no stream type {:?}: the stream types are {}",
            truncate(&stream_type, 40),
            known.join(", ")
        )));
    }
    if stream_id.is_empty() || stream_id.len() > 200 {
        return Err(Problem::not_found("no such stream"));
    }
    known_params(
        &params,
        &["after_version", "limit", "correlation_id", "min_position"],
    )?;
    let after_version = position_param(&params, "after_version")?;
    let limit = count_param(&params, "limit", 1_000, 1..=FEED_LIMIT_MAX)?;
    let correlation_id = correlation_param(&params)?;
    let form = FeedForm::asked(&headers);
    wait_for_log(&state, &headers, &params).await?;
    let mut events = Vec::new();
    let mut next_after_version = after_version;
    let mut scanned = 0;
    // Filtered, read in larger pages: most of a stream may belong to other correlations.
    let page_size = if correlation_id.is_some() {
        limit.max(500)
    } else {
        limit
    };
    loop {
        let page = state
            .store
            .read_stream(&stream_type, &stream_id, next_after_version, page_size)
            .await
            .map_err(|error| store_problem(&error))?;
        let full = page.len() == page_size;
        scanned += page.len();
        for event in &page {
            if events.len() == limit {
                break;
            }
            next_after_version = event.stream_version;
            if correlation_id.is_none_or(|id| event.metadata.correlation_id == id) {
                events.push(form.render(event));
            }
        }
        if !full || events.len() == limit || scanned >= STREAM_SCAN_MAX {
            break;
        }
    }
    if form == FeedForm::CloudEvents {
        return Ok(FeedForm::batch(
            events,
            "x-next-after-version",
            next_after_version,
        ));
    }
    Ok(Json(json!({
        "stream_type": stream_type,
        "stream_id": stream_id,
        "events": events,
        "next_after_version": next_after_version,
    }))
    .into_response())
}

#[tracing::instrument(skip_all)]
async fn global_events(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    known_params(
        &params,
        &["after", "limit", "correlation_id", "min_position"],
    )?;
    let after = position_param(&params, "after")?;
    let limit = count_param(&params, "limit", 100, 1..=FEED_LIMIT_MAX)?;
    let correlation_id = correlation_param(&params)?;
    let form = FeedForm::asked(&headers);
    wait_for_log(&state, &headers, &params).await?;
    let events = match correlation_id {
        Some(correlation_id) => {
            state
                .store
                .read_correlated(correlation_id, after, limit)
                .await
        }
        None => state.store.read_all(after, limit).await,
    }
    .map_err(|error| store_problem(&error))?;
    let next_after = events.last().map_or(after, |event| event.position);
    let events: Vec<Value> = events.iter().map(|event| form.render(event)).collect();
    if form == FeedForm::CloudEvents {
        return Ok(FeedForm::batch(events, "x-next-after", next_after));
    }
    Ok(Json(json!({ "events": events, "next_after": next_after })).into_response())
}

/// The CloudEvents 1.0 JSON batch media type.
pub const CLOUDEVENTS_BATCH: &str = "application/cloudevents-batch+json";

/// The form a feed answers in: mercato's own JSON, or CloudEvents when the caller's `Accept`
/// names the CloudEvents batch type (an export another system can read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FeedForm {
    Mercato,
    CloudEvents,
}

impl FeedForm {
    fn asked(headers: &HeaderMap) -> FeedForm {
        let accepts = headers
            .get_all(axum::http::header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|range| {
                range
                    .split(';')
                    .next()
                    .is_some_and(|media| media.trim().eq_ignore_ascii_case(CLOUDEVENTS_BATCH))
            });
        if accepts {
            FeedForm::CloudEvents
        } else {
            FeedForm::Mercato
        }
    }

    fn render(self, event: &eventstore::RecordedEvent) -> Value {
        match self {
            FeedForm::Mercato => feed_json(event),
            FeedForm::CloudEvents => schemas::cloudevents::cloud_event(event),
        }
    }

    /// A batch of CloudEvents, with where to continue in header `next`.
    fn batch(events: Vec<Value>, next: &'static str, after: u64) -> Response {
        let mut answer = Json(Value::Array(events)).into_response();
        let headers = answer.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(CLOUDEVENTS_BATCH),
        );
        headers.insert(next, HeaderValue::from(after));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn an_unknown_feed_parameter_is_a_400_naming_the_accepted_ones() {
        let known = ["after", "limit", "correlation_id", "min_position"];
        assert!(known_params(&params(&[("after", "1"), ("correlation_id", "c")]), &known).is_ok());
        let problem = known_params(&params(&[("correlation", "c"), ("after", "1")]), &known)
            .expect_err("unknown");
        assert_eq!(problem.status, 400);
        assert!(
            problem.detail.contains("`correlation`") && problem.detail.contains("`correlation_id`"),
            "{}",
            problem.detail
        );
    }

    #[test]
    fn a_correlation_id_is_1_to_128_printable_characters() {
        assert_eq!(correlation_param(&params(&[])).ok(), Some(None));
        assert_eq!(
            correlation_param(&params(&[("correlation_id", "order-flow-42")])).ok(),
            Some(Some("order-flow-42"))
        );
        for bad in [String::new(), "x".repeat(129), "tab\there".to_owned()] {
            let problem =
                correlation_param(&params(&[("correlation_id", &bad)])).expect_err("invalid");
            assert_eq!(problem.status, 422, "{bad:?}");
        }
    }
}
