//! The command handlers: extract, call one command or application function, map the result.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cqrs_es::Aggregate;
use domain::order::OrderLine;
use domain::{Cart, CartCommand, CartId, CustomerId, Order, OrderCommand, Product, ProductCommand};
use eventstore::EventMetadata;
use eventstore::aggregate::{CommandOptions, Executed, execute, load};
use http_common::params::product_id_of;
use http_common::problem::{field_problem, store_problem};
use http_common::{JsonBody, Problem, RequestContext};
use serde_json::json;
use uuid::Uuid;

use crate::CommandState;
use crate::input::{AddCartItem, AdjustStock, Checkout, CreateProduct, PlaceOrder, UpdateProduct};
use crate::orders::{CheckOut, CheckoutError, check_out};
use crate::problems::{ToProblem, command_problem, load_problem};

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
) -> Result<Executed<A>, Problem>
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
pub(crate) async fn create_product(
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
pub(crate) async fn update_product(
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
pub(crate) async fn adjust_stock(
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
        .map_err(|error| load_problem(&error))?;
    if loaded.state.product_id.is_none() {
        return Err(
            Problem::not_found(format!("no product has id {product_id}")).with_field("product_id"),
        );
    }
    Ok(loaded.state)
}

#[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
pub(crate) async fn add_cart_item(
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
pub(crate) async fn remove_cart_item(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path((cart_id, product_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let cart_id = cart_id_of(&cart_id)?;
    let product_id = product_id_of(&product_id)?;
    let command = CartCommand::RemoveItem { product_id };
    cart_written(&state, &context, &cart_id, command).await
}

#[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
pub(crate) async fn checkout(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(cart_id): Path<String>,
    JsonBody(body): JsonBody<Checkout>,
) -> Result<Response, Problem> {
    let cart_id = cart_id_of(&cart_id)?;
    let customer_id =
        CustomerId::parse(&body.customer_id).map_err(|error| field_problem(&error))?;
    body.validate()?;
    let request = CheckOut {
        cart_id,
        customer_id,
        payment_token: body.payment_token,
    };
    let placed = check_out(state.store.as_ref(), &request, &metadata(&context))
        .await
        .map_err(|error| match &error {
            CheckoutError::Cart(error) => command_problem(error),
            CheckoutError::Order(error) => command_problem(error),
            CheckoutError::AlreadyCheckedOut => Problem::conflict(error.to_string()),
            CheckoutError::Store(error) => store_problem(error),
        })?;
    Ok(written(
        StatusCode::ACCEPTED,
        "order_id",
        &placed.order_id.to_string(),
        placed.position,
    ))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn place_order(
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
