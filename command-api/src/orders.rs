//! Placing an order from a cart: the cart's checkout and the order it creates are decided from
//! the same loaded state and appended together, atomically, so a cart is never checked out
//! without its order nor ordered twice.

use domain::order::OrderLine;
use domain::{
    Cart, CartCommand, CartError, CartId, CartWriter, CustomerId, Order, OrderCommand, OrderError,
};
use eventstore::aggregate::{CommandError, CommandOptions, decide};
use eventstore::{EventMetadata, EventStore, StoreError};
use uuid::Uuid;

/// How many times a checkout decides again after losing a race on its cart or order.
const CHECKOUT_ATTEMPTS: u32 = 5;

/// A checkout: which cart, by whom, for which customer, into which order, paid with the token
/// the vault keeps under `payment_ref`.
#[derive(Clone, Debug)]
pub struct CheckOut {
    pub cart_id: CartId,
    pub customer_id: CustomerId,
    pub order_id: Uuid,
    /// `None` for a bank transfer.
    pub payment_ref: Option<String>,
    pub payment_method: domain::PaymentMethod,
    pub shipping_address: Option<domain::Sealed>,
    pub billing_address: Option<domain::Sealed>,
    pub by: CartWriter,
    /// What the order may hold (the line bound and the customer's units left).
    pub allowance: crate::caps::Allowance,
}

/// The order a checkout placed, and the position of its last event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub order_id: Uuid,
    pub position: Option<u64>,
}

/// Why a checkout placed no order.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The cart refused the checkout (empty, unknown) or could not be loaded.
    #[error(transparent)]
    Cart(CommandError<CartError>),
    /// The order refused its creation (a line or total out of range).
    #[error(transparent)]
    Order(CommandError<OrderError>),
    /// The order is beyond one of the customer's bounds ([`crate::caps`]).
    #[error("{}", .0.detail)]
    Limit(Box<http_common::Problem>),
    /// The append failed, or kept losing races after its retries.
    #[error(transparent)]
    Store(StoreError),
}

/// Checks cart `request.cart_id` out into a new order, retrying when another request changed
/// the cart or the order between the decision and the append.
///
/// The same checkout again (the same order id: a retry with the same `Idempotency-Key`, whose
/// order id is derived from it) places nothing new and answers the order it placed.
pub async fn check_out(
    store: &dyn EventStore,
    request: &CheckOut,
    metadata: &EventMetadata,
    options: &CommandOptions,
) -> Result<Placed, CheckoutError> {
    let run = check_out_untraced(store, request, metadata, options);
    if !telemetry::traced() {
        return run.await;
    }
    let span = tracing::info_span!(
        "command",
        otel.name = "checkout command",
        aggregate = "cart,order",
        stream_id = %request.cart_id,
        order_id = %request.order_id,
    );
    tracing::Instrument::instrument(run, span).await
}

/// [`check_out`], in the caller's span.
async fn check_out_untraced(
    store: &dyn EventStore,
    request: &CheckOut,
    metadata: &EventMetadata,
    options: &CommandOptions,
) -> Result<Placed, CheckoutError> {
    let order_id = request.order_id;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let cart = decide::<Cart>(
            store,
            request.cart_id.as_str(),
            CartCommand::CheckOut {
                order_id,
                customer_id: request.customer_id.clone(),
                by: request.by.clone(),
            },
            &(),
            metadata,
            options,
        )
        .await
        .map_err(CheckoutError::Cart)?;
        if cart.events.is_empty() {
            // Checked out into this very order already (another order id is refused above).
            return Ok(Placed {
                order_id,
                position: None,
            });
        }
        let lines = OrderLine::of_cart(&cart.state);
        request
            .allowance
            .check(&lines)
            .map_err(|problem| CheckoutError::Limit(Box::new(problem)))?;
        let order = decide::<Order>(
            store,
            &order_id.to_string(),
            OrderCommand::CreateOrder {
                order_id,
                customer_id: request.customer_id.clone(),
                lines,
                payment_ref: request.payment_ref.clone(),
                cart_id: Some(request.cart_id.clone()),
                shipping_address: request.shipping_address.clone(),
                billing_address: request.billing_address.clone(),
                payment_method: request.payment_method,
            },
            &(),
            metadata,
            options,
        )
        .await
        .map_err(CheckoutError::Order)?;
        let append =
            eventstore::aggregate::store_span("store append", "order", &order_id.to_string());
        let appended = tracing::Instrument::instrument(
            store.append_atomic(vec![cart.request, order.request]),
            append,
        )
        .await;
        match appended {
            Ok(results) => {
                let position = results.last().and_then(|result| result.last_position());
                return Ok(Placed { order_id, position });
            }
            Err(error) if error.is_conflict() && attempt < CHECKOUT_ATTEMPTS => continue,
            Err(error) => return Err(CheckoutError::Store(error)),
        }
    }
}
