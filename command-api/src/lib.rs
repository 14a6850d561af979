//! mercato's write side: the command routes of CONTRACT.md. Each handler parses and checks its
//! input, runs one command through the aggregate and the event store
//! (`eventstore::aggregate`), and answers with the position of the last event it appended.
//! It never reads a read model to decide anything.

pub mod http;
pub mod input;
pub mod problem;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post, put};
use axum::{Extension, Json, Router};
use cqrs_es::Aggregate;
use domain::order::OrderLine;
use domain::{
    Cart, CartCommand, CartError, CartId, CustomerId, FieldError, Order, OrderCommand, OrderError,
    Product, ProductCommand, ProductError,
};
use eventstore::aggregate::{CommandError, CommandOptions, decide, execute, load};
use eventstore::{EventMetadata, EventStore, StoreError};
use serde_json::json;
use uuid::Uuid;

use crate::http::RequestContext;
use crate::input::{
    AddCartItem, AdjustStock, Checkout, CreateProduct, PlaceOrder, UpdateProduct, product_id_of,
};
use crate::problem::{JsonBody, Problem};

/// What the command routes need.
#[derive(Clone, Debug)]
pub struct CommandState {
    pub store: Arc<dyn EventStore>,
}

/// The command routes of CONTRACT.md.
pub fn router(state: CommandState) -> Router {
    Router::new()
        .route("/products", post(create_product))
        .route("/products/{product_id}", put(update_product))
        .route("/products/{product_id}/stock", post(adjust_stock))
        .route("/carts/{cart_id}/items", post(add_cart_item))
        .route(
            "/carts/{cart_id}/items/{product_id}",
            delete(remove_cart_item),
        )
        .route("/carts/{cart_id}/checkout", post(checkout))
        .route("/orders", post(place_order))
        .with_state(state)
}

/// How a broken business rule or a store failure is answered.
pub trait ToProblem {
    fn to_problem(&self) -> Problem;
}

fn field_problem(error: &FieldError) -> Problem {
    Problem::invalid(error.field, &error.message)
}

impl ToProblem for ProductError {
    fn to_problem(&self) -> Problem {
        match self {
            ProductError::NotFound => Problem::not_found("no product has this id"),
            ProductError::AlreadyExists => Problem::conflict(self.to_string()),
            ProductError::Invalid(field) => field_problem(field),
            ProductError::InsufficientStock { .. }
            | ProductError::NegativeStock { .. }
            | ProductError::StockTooLarge { .. }
            | ProductError::ReservationClosed { .. }
            | ProductError::NoReservation { .. }
            | ProductError::ReservationReleased { .. } => Problem::conflict(self.to_string()),
        }
    }
}

impl ToProblem for CartError {
    fn to_problem(&self) -> Problem {
        match self {
            CartError::Invalid(field) => field_problem(field),
            CartError::CheckedOut => Problem::conflict(self.to_string()),
            CartError::NoSuchLine { .. } => Problem::not_found(self.to_string()),
            CartError::TooManyLines | CartError::LineTooLarge { .. } | CartError::Empty => {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "business-rule",
                    self.to_string(),
                )
            }
        }
    }
}

impl ToProblem for OrderError {
    fn to_problem(&self) -> Problem {
        match self {
            OrderError::NotFound => Problem::not_found("no order has this id"),
            OrderError::AlreadyExists | OrderError::InvalidTransition { .. } => {
                Problem::conflict(self.to_string())
            }
            OrderError::Invalid(field) => field_problem(field),
            OrderError::TotalTooLarge => Problem::invalid("lines", "the order total is too large"),
        }
    }
}

/// The answer for a store failure: conflict 409, unavailable 503, anything else 500 (logged).
pub fn store_problem(error: &StoreError) -> Problem {
    if error.is_conflict() {
        Problem::conflict(format!(
            "the resource was changed by another request at the same moment; retry: {error}"
        ))
    } else if error.is_unavailable() {
        Problem::unavailable(format!(
            "the event store is unavailable; retry later: {error}"
        ))
    } else {
        Problem::internal(error)
    }
}

fn command_problem<E: std::error::Error + ToProblem>(error: &CommandError<E>) -> Problem {
    match error {
        CommandError::Domain(error) => error.to_problem(),
        CommandError::Store(error) => store_problem(error),
        CommandError::Load(eventstore::aggregate::LoadError::Store(error)) => store_problem(error),
        other => Problem::internal(other),
    }
}

/// The metadata of the events a request causes.
fn metadata(context: &RequestContext) -> EventMetadata {
    EventMetadata {
        correlation_id: context.correlation_id.clone(),
        causation_id: context.request_id.clone(),
        saga_id: None,
        actor: context.actor.clone(),
        source: "command-api".to_owned(),
    }
}

/// `{<id_field>: id, position}` with `X-Event-Position`.
fn written(status: StatusCode, id_field: &str, id: &str, position: Option<u64>) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(position) = position
        && let Ok(value) = HeaderValue::from_str(&position.to_string())
    {
        headers.insert("x-event-position", value);
    }
    let body = json!({ id_field: id, "position": position });
    (status, headers, Json(body)).into_response()
}

async fn run<A>(
    state: &CommandState,
    context: &RequestContext,
    stream_id: &str,
    command: A::Command,
) -> Result<eventstore::aggregate::Executed<A>, Problem>
where
    A: Aggregate<Services = ()>,
    A::Command: Clone,
    A::Error: ToProblem,
{
    execute::<A>(
        state.store.as_ref(),
        stream_id,
        command,
        &(),
        &metadata(context),
        &CommandOptions::default(),
    )
    .await
    .map_err(|error| command_problem(&error))
}

/// Runs `command` on product `product_id` and answers `{product_id, position}`.
async fn product_written(
    state: &CommandState,
    context: &RequestContext,
    status: StatusCode,
    product_id: Uuid,
    command: ProductCommand,
) -> Result<Response, Problem> {
    let product_id = product_id.to_string();
    let executed = run::<Product>(state, context, &product_id, command).await?;
    Ok(written(
        status,
        "product_id",
        &product_id,
        executed.last_position(),
    ))
}

#[tracing::instrument(skip_all)]
async fn create_product(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<CreateProduct>,
) -> Result<Response, Problem> {
    let product_id = Uuid::new_v4();
    let command = ProductCommand::CreateProduct {
        product_id,
        name: body.name,
        description: body.description,
        price: body.price.0,
        stock_qty: body.stock_qty,
        category: body.category,
    };
    product_written(&state, &context, StatusCode::CREATED, product_id, command).await
}

#[tracing::instrument(skip_all, fields(product_id = %product_id))]
async fn update_product(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(product_id): Path<String>,
    JsonBody(body): JsonBody<UpdateProduct>,
) -> Result<Response, Problem> {
    let product_id = product_id_of(&product_id)?;
    if body.is_empty() {
        return Err(Problem::invalid(
            "body",
            "give at least one of name, description, price, category",
        ));
    }
    let command = ProductCommand::UpdateProduct {
        name: body.name,
        description: body.description,
        price: body.price.map(|price| price.0),
        category: body.category,
    };
    product_written(&state, &context, StatusCode::OK, product_id, command).await
}

#[tracing::instrument(skip_all, fields(product_id = %product_id))]
async fn adjust_stock(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(product_id): Path<String>,
    JsonBody(body): JsonBody<AdjustStock>,
) -> Result<Response, Problem> {
    let product_id = product_id_of(&product_id)?;
    let command = ProductCommand::AdjustStock { delta: body.delta };
    product_written(&state, &context, StatusCode::OK, product_id, command).await
}

/// Runs `command` on cart `cart_id` and answers `{cart_id, position}`.
async fn cart_written(
    state: &CommandState,
    context: &RequestContext,
    cart_id: &CartId,
    command: CartCommand,
) -> Result<Response, Problem> {
    let executed = run::<Cart>(state, context, cart_id.as_str(), command).await?;
    Ok(written(
        StatusCode::OK,
        "cart_id",
        cart_id.as_str(),
        executed.last_position(),
    ))
}

fn cart_id_of(cart_id: &str) -> Result<CartId, Problem> {
    CartId::parse(cart_id).map_err(|error| field_problem(&error))
}

/// The product's current state, or 404 naming it.
async fn existing_product(state: &CommandState, product_id: &Uuid) -> Result<Product, Problem> {
    let loaded = load::<Product>(state.store.as_ref(), &product_id.to_string())
        .await
        .map_err(|error| match error {
            eventstore::aggregate::LoadError::Store(error) => store_problem(&error),
            other => Problem::internal(&other),
        })?;
    if loaded.state.product_id.is_none() {
        return Err(
            Problem::not_found(format!("no product has id {product_id}")).with_field("product_id"),
        );
    }
    Ok(loaded.state)
}

#[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
async fn add_cart_item(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(cart_id): Path<String>,
    JsonBody(body): JsonBody<AddCartItem>,
) -> Result<Response, Problem> {
    let cart_id = cart_id_of(&cart_id)?;
    let product = existing_product(&state, &body.product_id).await?;
    let command = CartCommand::AddItem {
        product_id: body.product_id,
        quantity: body.quantity,
        unit_price: product.price,
    };
    cart_written(&state, &context, &cart_id, command).await
}

#[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
async fn remove_cart_item(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path((cart_id, product_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let cart_id = cart_id_of(&cart_id)?;
    let product_id = product_id_of(&product_id)?;
    let command = CartCommand::RemoveItem { product_id };
    cart_written(&state, &context, &cart_id, command).await
}

/// How many times a checkout decides again after losing a race on its cart or order.
const CHECKOUT_ATTEMPTS: u32 = 5;

#[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
async fn checkout(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(cart_id): Path<String>,
    JsonBody(body): JsonBody<Checkout>,
) -> Result<Response, Problem> {
    let cart_id = cart_id_of(&cart_id)?;
    let customer_id =
        CustomerId::parse(&body.customer_id).map_err(|error| field_problem(&error))?;
    body.validate()?;
    let order_id = Uuid::new_v4();
    let metadata = metadata(&context);
    let options = CommandOptions::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let cart = decide::<Cart>(
            state.store.as_ref(),
            cart_id.as_str(),
            CartCommand::CheckOut {
                order_id,
                customer_id: customer_id.clone(),
            },
            &(),
            &metadata,
            &options,
        )
        .await
        .map_err(|error| command_problem(&error))?;
        if cart.events.is_empty() {
            return Err(Problem::conflict("the cart was checked out already"));
        }
        let lines: Vec<OrderLine> = cart
            .state
            .lines
            .iter()
            .map(|(product_id, line)| OrderLine {
                product_id: *product_id,
                quantity: line.quantity,
                unit_price: line.unit_price,
            })
            .collect();
        let order = decide::<Order>(
            state.store.as_ref(),
            &order_id.to_string(),
            OrderCommand::CreateOrder {
                order_id,
                customer_id: customer_id.clone(),
                lines,
                payment_token: body.payment_token.clone(),
                cart_id: Some(cart_id.clone()),
            },
            &(),
            &metadata,
            &options,
        )
        .await
        .map_err(|error| command_problem(&error))?;
        match state
            .store
            .append_atomic(vec![cart.request, order.request])
            .await
        {
            Ok(results) => {
                let position = results.last().and_then(|result| result.last_position());
                return Ok(written(
                    StatusCode::ACCEPTED,
                    "order_id",
                    &order_id.to_string(),
                    position,
                ));
            }
            Err(error) if error.is_conflict() && attempt < CHECKOUT_ATTEMPTS => continue,
            Err(error) => return Err(store_problem(&error)),
        }
    }
}

#[tracing::instrument(skip_all)]
async fn place_order(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<PlaceOrder>,
) -> Result<Response, Problem> {
    let customer_id =
        CustomerId::parse(&body.customer_id).map_err(|error| field_problem(&error))?;
    if body.lines.is_empty() {
        return Err(Problem::invalid(
            "lines",
            "an order needs at least one line",
        ));
    }
    if body.lines.len() > domain::cart::LINES_MAX {
        return Err(Problem::invalid(
            "lines",
            format!("an order holds at most {} lines", domain::cart::LINES_MAX),
        ));
    }
    let mut lines = Vec::with_capacity(body.lines.len());
    for (line_index, line) in body.lines.iter().enumerate() {
        if !(1..=i64::from(domain::cart::LINE_QUANTITY_MAX)).contains(&line.quantity) {
            return Err(Problem::invalid(
                &format!("lines[{line_index}].quantity"),
                format!("must be between 1 and {}", domain::cart::LINE_QUANTITY_MAX),
            ));
        }
        let product = existing_product(&state, &line.product_id)
            .await
            .map_err(|problem| problem.with_field(format!("lines[{line_index}].product_id")))?;
        lines.push(OrderLine {
            product_id: line.product_id,
            quantity: line.quantity as u32,
            unit_price: product.price,
        });
    }
    let order_id = Uuid::new_v4();
    let command = OrderCommand::CreateOrder {
        order_id,
        customer_id,
        lines,
        payment_token: body.payment_token,
        cart_id: None,
    };
    let executed = run::<Order>(&state, &context, &order_id.to_string(), command).await?;
    Ok(written(
        StatusCode::ACCEPTED,
        "order_id",
        &order_id.to_string(),
        executed.last_position(),
    ))
}
