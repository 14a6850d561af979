//! mercato's read side: the query routes of CONTRACT.md over the read models, the search index
//! and the event log. Reads may wait for their read model to pass a position (`X-Min-Position`
//! or `?min_position=`, read-your-writes, at most 5 s). It never appends events except the
//! `ProductViewed` that a product read by a known customer records, off the request's path.

pub mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use command_api::input::{product_id_of, truncate};
use command_api::problem::Problem;
use command_api::store_problem;
use domain::{CustomerId, Money};
use eventstore::{EventStore, RecordedEvent};
use projections::Progress;
use projections::cache::{Cache, SEARCH_SCOPE};
use projections::readdb::ReadDb;
use projections::redis_models::RedisModels;
use projections::search::{ProductDoc, SearchIndex, SearchQuery};
use projections::sql_models::{
    OrdersProjection, ProductsProjection, SqlCartsProjection, SqlPopularityProjection,
    load_cart_row, product_scope,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::Row;

use crate::views::ViewRecorder;

/// How long a read waits for its read model to reach `X-Min-Position`.
pub const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);

/// What the query routes need.
#[derive(Clone, Debug)]
pub struct QueryState {
    pub store: Arc<dyn EventStore>,
    pub db: ReadDb,
    pub search: Arc<dyn SearchIndex>,
    pub cache: Option<Arc<dyn Cache>>,
    pub progress: Progress,
    pub views: Option<ViewRecorder>,
    /// Carts and popularity on Redis, when it is configured (else they are in SQL).
    pub redis_models: Option<RedisModels>,
}

/// The query routes of CONTRACT.md.
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/products/{product_id}", get(get_product))
        .route("/search", get(search))
        .route("/carts/{cart_id}", get(get_cart))
        .route("/orders/{order_id}", get(get_order))
        .route("/customers/{customer_id}/orders", get(customer_orders))
        .route("/recommendations", get(recommendations))
        .route(
            "/streams/{stream_type}/{stream_id}/events",
            get(stream_events),
        )
        .route("/events", get(global_events))
        .with_state(state)
}

/// A money amount as a JSON number in major units, written from its exact decimal text.
fn money_raw(minor: i64) -> Box<RawValue> {
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

/// The position a read must wait for: `X-Min-Position` or `?min_position=`.
fn min_position(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Option<u64>, Problem> {
    let text = match headers.get("x-min-position") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Problem::invalid("X-Min-Position", "must be a position number"))?
                .to_owned(),
        ),
        None => params.get("min_position").cloned(),
    };
    match text {
        None => Ok(None),
        Some(text) => text.trim().parse::<u64>().map(Some).map_err(|_| {
            Problem::invalid(
                "min_position",
                format!(
                    "must be a position as answered in X-Event-Position, got {:?}",
                    truncate(&text, 40)
                ),
            )
        }),
    }
}

/// Waits until projection `name` has applied `position` (read-your-writes), else 503.
async fn wait_for(
    state: &QueryState,
    name: &'static str,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(), Problem> {
    let Some(position) = min_position(headers, params)? else {
        return Ok(());
    };
    if state
        .progress
        .wait_for(name, position, MIN_POSITION_WAIT)
        .await
    {
        Ok(())
    } else {
        Err(Problem::unavailable(format!(
            "the {name} read model has not reached position {position} within {} s; retry later",
            MIN_POSITION_WAIT.as_secs()
        )))
    }
}

fn db_problem(error: &dyn std::fmt::Display) -> Problem {
    tracing::warn!(%error, "read model query failed");
    Problem::unavailable("the read model is unavailable; retry later")
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

async fn read_product(db: &ReadDb, product_id: &str) -> Result<Option<ProductDoc>, Problem> {
    let row = sqlx::query(
        "SELECT product_id, name, description, price_minor, stock_qty, category, popularity,
                updated_at, version
         FROM rm_products WHERE product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(db.pool())
    .await
    .map_err(|error| db_problem(&error))?;
    let Some(row) = row else { return Ok(None) };
    let product = (|| -> Result<ProductDoc, sqlx::Error> {
        Ok(ProductDoc {
            product_id: row.try_get(0)?,
            name: row.try_get(1)?,
            description: row.try_get(2)?,
            price_minor: row.try_get(3)?,
            stock_qty: row.try_get(4)?,
            category: row.try_get(5)?,
            popularity: row.try_get(6)?,
            updated_at: row.try_get(7)?,
            version: u64::try_from(row.try_get::<i64, _>(8)?).unwrap_or(0),
        })
    })()
    .map_err(|error| db_problem(&error))?;
    Ok(Some(product))
}

#[tracing::instrument(skip_all, fields(product_id = %product_id))]
async fn get_product(
    State(state): State<QueryState>,
    Path(product_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let product_uuid = product_id_of(&product_id)?;
    let customer_id = match params.get("customer_id") {
        Some(text) => Some(
            CustomerId::parse(text)
                .map_err(|error| Problem::invalid(error.field, &error.message))?,
        ),
        None => None,
    };
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
        let Some(product) = read_product(&state.db, &product_id).await? else {
            return Err(Problem::not_found(format!(
                "no product has id {product_id}"
            )));
        };
        let body = product_json(&product).to_string();
        if let (Some(cache), Some(lookup)) = (&state.cache, &lookup) {
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

fn count_param(
    params: &HashMap<String, String>,
    name: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, Problem> {
    let Some(text) = params.get(name) else {
        return Ok(default);
    };
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|value| range.contains(value))
        .ok_or_else(|| {
            Problem::invalid(
                name,
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// The longest search text accepted, in characters.
const QUERY_MAX_CHARS: usize = 200;

#[tracing::instrument(skip_all)]
async fn search(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let text = params.get("q").cloned().unwrap_or_default();
    if text.chars().count() > QUERY_MAX_CHARS {
        return Err(Problem::invalid(
            "q",
            format!("must be at most {QUERY_MAX_CHARS} characters"),
        ));
    }
    let category = params.get("category").cloned().filter(|c| !c.is_empty());
    if category
        .as_ref()
        .is_some_and(|category| category.chars().count() > domain::product::CATEGORY_MAX_CHARS)
    {
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
        offset: count_param(&params, "offset", 0, 0..=10_000)?,
    };
    if let (Some(min), Some(max)) = (query.min_price_minor, query.max_price_minor)
        && min > max
    {
        return Err(Problem::invalid("min_price", "must not be above max_price"));
    }
    wait_for(&state, state.search.projection_name(), &headers, &params).await?;
    let key = query.cache_key();
    let lookup = match &state.cache {
        Some(cache) => Some(cache.lookup(SEARCH_SCOPE, &key).await),
        None => None,
    };
    if let Some(body) = lookup.as_ref().and_then(|lookup| lookup.value.clone()) {
        return Ok(cached_answer(body, true, "search"));
    }
    let result = state.search.search(&query).await.map_err(|error| {
        tracing::warn!(%error, "search failed");
        Problem::unavailable("the search index is unavailable; retry later")
    })?;
    let hits: Vec<Value> = result.hits.iter().map(product_json).collect();
    let body = json!({ "total": result.total, "hits": hits }).to_string();
    if let (Some(cache), Some(lookup)) = (&state.cache, &lookup) {
        cache
            .store(SEARCH_SCOPE, lookup.generation, &key, &body)
            .await;
    }
    Ok(cached_answer(body, false, "search"))
}

#[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
async fn get_cart(
    State(state): State<QueryState>,
    Path(cart_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let cart_id = domain::CartId::parse(&cart_id)
        .map_err(|error| Problem::invalid(error.field, &error.message))?;
    wait_for(&state, SqlCartsProjection::NAME, &headers, &params).await?;
    let cart = match &state.redis_models {
        Some(models) => models
            .cart(cart_id.as_str())
            .await
            .map_err(|error| db_problem(&error))?,
        None => {
            let mut connection = state
                .db
                .pool()
                .acquire()
                .await
                .map_err(|error| db_problem(&error))?;
            load_cart_row(&mut connection, cart_id.as_str())
                .await
                .map_err(|error| db_problem(&error))?
        }
    };
    let Some(cart) = cart else {
        return Err(Problem::not_found(format!("no cart has id {cart_id}")));
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

fn order_json(row: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    let lines: String = row.try_get("lines")?;
    let lines: Vec<projections::sql_models::OrderLineRow> =
        serde_json::from_str(&lines).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    let lines: Vec<Value> = lines
        .iter()
        .map(|line| {
            json!({
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price": money_raw(line.unit_price_minor),
            })
        })
        .collect();
    let cancel_reason: Option<String> = row.try_get("cancel_reason")?;
    let mut order = json!({
        "order_id": row.try_get::<String, _>("order_id")?,
        "customer_id": row.try_get::<String, _>("customer_id")?,
        "status": row.try_get::<String, _>("status")?,
        "lines": lines,
        "total": money_raw(row.try_get::<i64, _>("total_minor")?),
        "payment_status": row.try_get::<String, _>("payment_status")?,
        "created_at": row.try_get::<String, _>("created_at")?,
        "updated_at": row.try_get::<String, _>("updated_at")?,
    });
    if let (Some(reason), Some(object)) = (cancel_reason, order.as_object_mut()) {
        object.insert("cancel_reason".to_owned(), Value::String(reason));
    }
    Ok(order)
}

const ORDER_COLUMNS: &str = "order_id, customer_id, status, lines, total_minor, payment_status, \
    cancel_reason, created_at, updated_at";

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn get_order(
    State(state): State<QueryState>,
    Path(order_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let order_id = uuid::Uuid::parse_str(&order_id).map_err(|_| {
        Problem::not_found(format!(
            "no order has id {:?}: order ids are UUIDs made by the server",
            truncate(&order_id, 80)
        ))
    })?;
    wait_for(&state, OrdersProjection::NAME, &headers, &params).await?;
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM rm_orders WHERE order_id = $1"
    ))
    .bind(order_id.to_string())
    .fetch_optional(state.db.pool())
    .await
    .map_err(|error| db_problem(&error))?;
    let Some(row) = row else {
        return Err(Problem::not_found(format!("no order has id {order_id}")));
    };
    let mut order = order_json(&row).map_err(|error| db_problem(&error))?;
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
    let saga = match sagas::state::saga_status(&state.db, order_id).await {
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
    Path(customer_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let customer_id = CustomerId::parse(&customer_id)
        .map_err(|error| Problem::invalid(error.field, &error.message))?;
    let limit = count_param(&params, "limit", 50, 1..=500)?;
    wait_for(&state, OrdersProjection::NAME, &headers, &params).await?;
    let rows = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM rm_orders WHERE customer_id = $1 \
         ORDER BY created_position DESC LIMIT $2"
    ))
    .bind(customer_id.as_str())
    .bind(limit as i64)
    .fetch_all(state.db.pool())
    .await
    .map_err(|error| db_problem(&error))?;
    let orders = rows
        .iter()
        .map(order_json)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| db_problem(&error))?;
    Ok(Json(json!({ "customer_id": customer_id.as_str(), "orders": orders })).into_response())
}

#[tracing::instrument(skip_all)]
async fn recommendations(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let Some(customer_id) = params.get("customer_id") else {
        return Err(Problem::invalid("customer_id", "is required"));
    };
    let customer_id = CustomerId::parse(customer_id)
        .map_err(|error| Problem::invalid(error.field, &error.message))?;
    let limit = count_param(&params, "limit", 10, 1..=100)?;
    wait_for(&state, SqlPopularityProjection::NAME, &headers, &params).await?;
    if let Some(models) = &state.redis_models {
        let items = redis_recommendations(&state.db, models, customer_id.as_str(), limit).await?;
        return Ok(
            Json(json!({ "customer_id": customer_id.as_str(), "items": items })).into_response(),
        );
    }
    // Popular products the customer has not ordered yet; only products the catalogue knows.
    let rows = sqlx::query(
        "SELECT p.product_id, p.name, pop.score
         FROM rm_popularity pop JOIN rm_products p ON p.product_id = pop.product_id
         WHERE pop.product_id NOT IN
             (SELECT product_id FROM rm_customer_products WHERE customer_id = $1)
         ORDER BY pop.score DESC, p.product_id
         LIMIT $2",
    )
    .bind(customer_id.as_str())
    .bind(limit as i64)
    .fetch_all(state.db.pool())
    .await
    .map_err(|error| db_problem(&error))?;
    let items = rows
        .iter()
        .map(|row| -> Result<Value, sqlx::Error> {
            Ok(json!({
                "product_id": row.try_get::<String, _>(0)?,
                "name": row.try_get::<String, _>(1)?,
                "score": row.try_get::<i64, _>(2)?,
            }))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| db_problem(&error))?;
    Ok(Json(json!({ "customer_id": customer_id.as_str(), "items": items })).into_response())
}

/// Recommendations from the Redis sorted set: the top products the customer has not ordered,
/// keeping only products the catalogue knows.
async fn redis_recommendations(
    db: &ReadDb,
    models: &RedisModels,
    customer_id: &str,
    limit: usize,
) -> Result<Vec<Value>, Problem> {
    let candidates = models
        .popular_not_ordered(customer_id, limit + 50)
        .await
        .map_err(|error| db_problem(&error))?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=candidates.len()).map(|n| format!("${n}")).collect();
    let statement = format!(
        "SELECT product_id, name FROM rm_products WHERE product_id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&statement);
    for (product_id, _) in &candidates {
        query = query.bind(product_id);
    }
    let rows = query
        .fetch_all(db.pool())
        .await
        .map_err(|error| db_problem(&error))?;
    let mut names = HashMap::new();
    for row in &rows {
        let product_id: String = row.try_get(0).map_err(|error| db_problem(&error))?;
        let name: String = row.try_get(1).map_err(|error| db_problem(&error))?;
        names.insert(product_id, name);
    }
    Ok(candidates
        .into_iter()
        .filter_map(|(product_id, score)| {
            let name = names.get(&product_id)?.clone();
            Some(json!({ "product_id": product_id, "name": name, "score": score }))
        })
        .take(limit)
        .collect())
}

/// An event as the feeds show it: the envelope of CONTRACT.md.
pub fn event_json(event: &RecordedEvent) -> Value {
    json!({
        "event_id": event.event_id,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "stream_type": event.stream_type,
        "stream_id": event.stream_id,
        "stream_version": event.stream_version,
        "position": event.position,
        "occurred_at": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "metadata": event.metadata,
        "payload": event.payload,
    })
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

/// 400 for a query parameter the route does not take, naming the ones it does.
fn known_params(params: &HashMap<String, String>, known: &[&str]) -> Result<(), Problem> {
    let mut unknown: Vec<&str> = params
        .keys()
        .map(String::as_str)
        .filter(|name| !known.contains(name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    Err(Problem::bad_request(format!(
        "unknown query parameter {}: this route takes {}",
        unknown
            .iter()
            .map(|name| format!("`{}`", truncate(name, 40)))
            .collect::<Vec<_>>()
            .join(", "),
        known
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
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
    let Some(position) = min_position(headers, params)? else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + MIN_POSITION_WAIT;
    loop {
        let head = state
            .store
            .head_position()
            .await
            .map_err(|error| store_problem(&error))?;
        if head >= position {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Problem::unavailable(format!(
                "the event log cannot return position {position} yet (it is at {head}) after {} s; retry later",
                MIN_POSITION_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stream types events are written to (a path naming another one is a 404).
fn stream_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = Vec::new();
    for (stream_type, _, _) in domain::EVENT_TYPES {
        if !types.contains(stream_type) {
            types.push(stream_type);
        }
    }
    types
}

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
    let known = stream_types();
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
    let limit = count_param(&params, "limit", 1_000, 1..=10_000)?;
    let correlation_id = correlation_param(&params)?;
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
                events.push(event_json(event));
            }
        }
        if !full || events.len() == limit || scanned >= STREAM_SCAN_MAX {
            break;
        }
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
    let limit = count_param(&params, "limit", 100, 1..=10_000)?;
    let correlation_id = correlation_param(&params)?;
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
    let events: Vec<Value> = events.iter().map(event_json).collect();
    Ok(Json(json!({ "events": events, "next_after": next_after })).into_response())
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
