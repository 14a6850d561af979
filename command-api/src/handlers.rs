//! The command handlers: extract, call one command or application function, map the result.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cqrs_es::Aggregate;
use domain::order::OrderLine;
use domain::{
    Cart, CartCommand, CartId, CartWriter, CustomerId, Order, OrderCommand, Product,
    ProductCommand, Role,
};
use eventstore::EventMetadata;
use eventstore::aggregate::{CommandError, Executed, execute, load};
use http_common::params::product_id_of;
use http_common::problem::{field_problem, store_problem};
use http_common::{JsonBody, Problem, RequestContext};
use identity::{GUEST_CUSTOMER_ID, PaymentVault, Principal, Resource};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::CommandState;
use crate::input::{AddCartItem, AdjustStock, Checkout, CreateProduct, PlaceOrder, UpdateProduct};
use crate::orders::{CheckOut, CheckoutError, check_out};
use crate::problems::{ToProblem, command_problem, load_problem};

/// The metadata of the events a request causes.
pub(crate) fn metadata(context: &RequestContext) -> EventMetadata {
    EventMetadata {
        correlation_id: context.correlation_id.clone(),
        causation_id: context.request_id.clone(),
        saga_id: None,
        actor: context.actor.clone(),
        source: "command-api".to_owned(),
        traceparent: None,
        tracestate: None,
    }
}

/// `{<id_field>: id, position}` with `X-Event-Position`.
pub(crate) fn written(
    status: StatusCode,
    id_field: &str,
    id: &str,
    position: Option<u64>,
) -> Response {
    written_with(status, id_field, id, position, &[])
}

/// The same, with more fields in the body (a guest's token).
pub(crate) fn written_with(
    status: StatusCode,
    id_field: &str,
    id: &str,
    position: Option<u64>,
    more: &[(&str, Value)],
) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(position) = position
        && let Ok(value) = HeaderValue::from_str(&position.to_string())
    {
        headers.insert("x-event-position", value);
    }
    let mut body = json!({ id_field: id, "position": position });
    if let Some(object) = body.as_object_mut() {
        for (name, value) in more {
            object.insert((*name).to_owned(), value.clone());
        }
    }
    (status, headers, Json(body)).into_response()
}

pub(crate) async fn run<A>(
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
        &context.command_options(),
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
    let product_id = context.new_id("product");
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

/// Who writes cart `cart_id`: the customer, or a guest, who holds the cart's token if the
/// request carries a valid `X-Cart-Token`. A token that does not fit the cart is answered as no
/// cart at all.
fn cart_writer(
    state: &CommandState,
    context: &RequestContext,
    headers: &HeaderMap,
    cart_id: &CartId,
) -> Result<(CartWriter, RequestContext), Problem> {
    match &context.principal {
        Principal::Customer { .. } => {
            let customer_id = context
                .principal
                .customer_id()
                .ok_or_else(|| Problem::internal(&"a customer without a customer id"))?;
            Ok((CartWriter::Customer(customer_id), context.clone()))
        }
        Principal::Anonymous => {
            let with_token = match headers.get(CART_TOKEN_HEADER) {
                None => false,
                Some(token) => {
                    let valid = token.to_str().is_ok_and(|token| {
                        state.identity.resource_tokens.verify(
                            Resource::Cart,
                            cart_id.as_str(),
                            token,
                        )
                    });
                    if !valid {
                        return Err(no_such_cart(cart_id));
                    }
                    true
                }
            };
            Ok((
                CartWriter::Guest { with_token },
                context.as_guest_of(cart_id.as_str()),
            ))
        }
        // The permission table admits only guests and customers to carts.
        _ => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "carts are for customers and guests",
        )),
    }
}

/// The header a guest proves a cart is theirs with.
pub(crate) const CART_TOKEN_HEADER: &str = "x-cart-token";

fn no_such_cart(cart_id: &CartId) -> Problem {
    Problem::not_found(format!(
        "no cart has id {cart_id} (or it is not yours: a guest sends the cart's X-Cart-Token)"
    ))
}

/// Runs `command` on cart `cart_id` and answers `{cart_id, position}`, with the cart's token
/// for a guest.
async fn cart_written(
    state: &CommandState,
    context: &RequestContext,
    cart_id: &CartId,
    command: CartCommand,
) -> Result<Response, Problem> {
    let guest = matches!(command.by(), CartWriter::Guest { .. });
    let executed = run::<Cart>(state, context, cart_id.as_str(), command).await?;
    let token = guest.then(|| {
        let token = state
            .identity
            .resource_tokens
            .token(Resource::Cart, cart_id.as_str());
        ("cart_token", Value::String(token))
    });
    Ok(written_with(
        StatusCode::OK,
        "cart_id",
        cart_id.as_str(),
        executed.last_position(),
        token.as_slice(),
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
    headers: HeaderMap,
    Path(cart_id): Path<String>,
    JsonBody(body): JsonBody<AddCartItem>,
) -> Result<Response, Problem> {
    let cart_id = cart_id_of(&cart_id)?;
    let (by, context) = cart_writer(&state, &context, &headers, &cart_id)?;
    state.caps.check_quantity("quantity", body.quantity)?;
    let product = existing_product(&state, &body.product_id).await?;
    let command = CartCommand::AddItem {
        product_id: body.product_id,
        quantity: body.quantity,
        unit_price: product.price,
        by,
    };
    cart_written(&state, &context, &cart_id, command).await
}

#[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
pub(crate) async fn remove_cart_item(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((cart_id, product_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let cart_id = cart_id_of(&cart_id)?;
    let product_id = product_id_of(&product_id)?;
    let (by, context) = cart_writer(&state, &context, &headers, &cart_id)?;
    let command = CartCommand::RemoveItem { product_id, by };
    cart_written(&state, &context, &cart_id, command).await
}

/// The customer an order is for: a customer's own id (a `customer_id` in the body must be it,
/// else 403); for support staff and services with the support role, the body's
/// `customer_id` (required: they order on a customer's behalf).
fn ordering_customer(context: &RequestContext, given: Option<&str>) -> Result<CustomerId, Problem> {
    let given = given
        .map(|text| CustomerId::parse(text).map_err(|error| field_problem(&error)))
        .transpose()?;
    if let Some(own) = context.principal.customer_id() {
        return match given {
            Some(given) if given != own => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "customer_id must be your own ({own}) or left out: a customer orders for themselves"
                ),
            )
            .with_field("customer_id")),
            _ => Ok(own),
        };
    }
    if context.principal.has_role(Role::Support) {
        // Staff have no orders of their own: they order for a customer, whom they must name.
        return given.ok_or_else(|| {
            Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "staff and services order for a customer: name them in customer_id",
            )
            .with_field("customer_id")
        });
    }
    Err(Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "orders are placed by customers, or for them by support staff",
    ))
}

#[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
pub(crate) async fn checkout(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(cart_id): Path<String>,
    JsonBody(body): JsonBody<Checkout>,
) -> Result<Response, Problem> {
    let cart_id = cart_id_of(&cart_id)?;
    let (payment_method, payment_token) =
        crate::input::payment_of(body.payment_method, body.payment_token.as_deref())?;
    let (by, context) = cart_writer(&state, &context, &headers, &cart_id)?;
    let guest = matches!(by, CartWriter::Guest { .. });
    let customer_id = if guest {
        match body.customer_id.as_deref() {
            None | Some(GUEST_CUSTOMER_ID) => {
                CustomerId::parse(GUEST_CUSTOMER_ID).map_err(|error| field_problem(&error))?
            }
            Some(_) => {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a guest has no customer id: leave customer_id out (or log in to order as a customer)",
                )
                .with_field("customer_id"));
            }
        }
    } else {
        ordering_customer(&context, body.customer_id.as_deref())?
    };
    let allowance = state
        .caps
        .allowance(state.open_orders.as_ref(), customer_id.as_str())
        .await?;
    let order_id = context.new_id("order");
    let (shipping_address, billing_address) = seal_addresses(
        &state,
        &customer_id,
        order_id,
        body.shipping_address,
        body.billing_address,
    )
    .await?;
    let payment_ref = match payment_token {
        Some(token) => Some(keep_payment_token(&state, order_id, token).await?),
        None => None,
    };
    let request = CheckOut {
        cart_id,
        customer_id,
        order_id,
        payment_ref,
        payment_method,
        shipping_address,
        billing_address,
        by,
        allowance,
    };
    let placed = match check_out(
        state.store.as_ref(),
        &request,
        &metadata(&context),
        &context.command_options(),
    )
    .await
    {
        Ok(placed) => placed,
        Err(error) => {
            let problem = match &error {
                CheckoutError::Cart(error) => command_problem(error),
                CheckoutError::Order(error) => command_problem(error),
                CheckoutError::Limit(problem) => (**problem).clone(),
                CheckoutError::Store(error) => store_problem(error),
            };
            // A refused checkout placed no order: its token has nothing to pay. After a store
            // failure the order may exist after all, and its token stays for the saga.
            if !matches!(error, CheckoutError::Store(_))
                && let Some(payment_ref) = &request.payment_ref
            {
                forget_payment_token(&state, payment_ref).await;
            }
            return Err(problem);
        }
    };
    let order_id = placed.order_id.to_string();
    let token = guest.then(|| {
        let token = state
            .identity
            .resource_tokens
            .token(Resource::Order, &order_id);
        ("order_token", Value::String(token))
    });
    Ok(written_with(
        StatusCode::ACCEPTED,
        "order_id",
        &order_id,
        placed.position,
        token.as_slice(),
    ))
}

/// Checks the order's addresses and seals each under the key of the order's person.
async fn seal_addresses(
    state: &CommandState,
    customer_id: &CustomerId,
    order_id: Uuid,
    shipping: Option<crate::input::AddressInput>,
    billing: Option<crate::input::AddressInput>,
) -> Result<(Option<domain::Sealed>, Option<domain::Sealed>), Problem> {
    let person = identity::person_keys::order_person(customer_id.as_str(), &order_id.to_string());
    let mut sealed = [None, None];
    for (slot, (field, address)) in sealed
        .iter_mut()
        .zip([("shipping_address", shipping), ("billing_address", billing)])
    {
        if let Some(address) = address {
            let text = address.sealed_text(field)?;
            *slot = Some(
                state
                    .identity
                    .person_keys
                    .seal(&person, field, &text)
                    .await
                    .map_err(|error| {
                        Problem::unavailable_logged("the key store is unavailable", &error)
                    })?,
            );
        }
    }
    let [shipping, billing] = sealed;
    Ok((shipping, billing))
}

/// Keeps the payment token in the vault and answers its reference (what the order's events
/// carry instead of the token).
async fn keep_payment_token(
    state: &CommandState,
    order_id: Uuid,
    payment_token: &str,
) -> Result<String, Problem> {
    state
        .identity
        .vault
        .keep(order_id, payment_token)
        .await
        .map_err(|error| Problem::unavailable_logged("the payment vault is unavailable", &error))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn place_order(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<PlaceOrder>,
) -> Result<Response, Problem> {
    let customer_id = ordering_customer(&context, body.customer_id.as_deref())?;
    let (payment_method, payment_token) =
        crate::input::payment_of(body.payment_method, body.payment_token.as_deref())?;
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
    state
        .caps
        .allowance(state.open_orders.as_ref(), customer_id.as_str())
        .await?
        .check(&lines)?;
    let order_id = context.new_id("order");
    let (shipping_address, billing_address) = seal_addresses(
        &state,
        &customer_id,
        order_id,
        body.shipping_address,
        body.billing_address,
    )
    .await?;
    let payment_ref = match payment_token {
        Some(token) => Some(keep_payment_token(&state, order_id, token).await?),
        None => None,
    };
    let command = OrderCommand::CreateOrder {
        order_id,
        customer_id,
        lines,
        payment_ref,
        cart_id: None,
        shipping_address,
        billing_address,
        payment_method,
    };
    let executed = match execute::<Order>(
        state.store.as_ref(),
        &order_id.to_string(),
        command,
        &(),
        &metadata(&context),
        &context.command_options(),
    )
    .await
    {
        Ok(executed) => executed,
        Err(error) => {
            // As for a checkout: a refused order's token goes, an ambiguous failure keeps it.
            if matches!(error, CommandError::Domain(_)) {
                forget_payment_token(&state, &PaymentVault::reference(order_id)).await;
            }
            return Err(command_problem(&error));
        }
    };
    Ok(written(
        StatusCode::ACCEPTED,
        "order_id",
        &order_id.to_string(),
        executed.last_position(),
    ))
}

/// Deletes the token of an order that was refused; a failure is only logged (the token then
/// waits in the vault, which keeps nothing a read could show).
async fn forget_payment_token(state: &CommandState, payment_ref: &str) {
    if let Err(error) = state.identity.vault.forget(payment_ref).await {
        tracing::warn!(%error, "cannot delete the payment token of a refused order");
    }
}
