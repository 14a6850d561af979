//! After checkout: cancellations by the order's customer or by staff, shipments and their
//! delivery, refunds, returns, and payments received another way (a bank transfer).
//!
//! Each route appends to the order's or the payment's stream, where the aggregate decides what
//! the order's state allows (shipped never exceeds ordered, refunded never exceeds captured,
//! returned never exceeds shipped). What follows (stock released or put back, refunds asked of
//! the gateway) is the checkout saga's, which these events wake: nothing here calls the gateway.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use domain::order::{CARRIER_RULE, ItemCount};
use domain::text::TextRule;
use domain::{CancelReason, Money, Order, OrderCommand, Payment, PaymentCommand, Role};
use eventstore::aggregate::load;
use http_common::{JsonBody, Problem, RequestContext};
use identity::{GUEST_CUSTOMER_ID, Principal, Resource};
use serde_json::Value;
use uuid::Uuid;

use crate::CommandState;
use crate::handlers::{run, written, written_with};
use crate::input::{self, CancelOrder, RecordPayment, Refund, Return, Ship};
use crate::problems::load_problem;

/// A reason or a payment reference: one visible line.
const REASON_RULE: TextRule = TextRule {
    field: "reason",
    max: 500,
    multiline: false,
};
const REFERENCE_RULE: TextRule = TextRule {
    field: "reference",
    max: 200,
    multiline: false,
};

fn no_such_order() -> Problem {
    Problem::not_found("no order has this id (or it is not yours: a guest sends its X-Order-Token)")
}

fn order_id_of(text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text).map_err(|_| no_such_order())
}

/// The order as its stream has it now; 404 when there is none.
async fn existing_order(state: &CommandState, order_id: Uuid) -> Result<Order, Problem> {
    let order = load::<Order>(state.store.as_ref(), &order_id.to_string())
        .await
        .map_err(|error| load_problem(&error))?
        .state;
    if order.order_id.is_none() {
        return Err(no_such_order());
    }
    Ok(order)
}

/// Who cancels: support staff, or the order's own customer or guest (with its order token).
/// Anyone else is told there is no such order, so ids cannot be probed.
fn canceller(
    state: &CommandState,
    context: &RequestContext,
    headers: &HeaderMap,
    order_id: Uuid,
    order: &Order,
) -> Result<CancelReason, Problem> {
    if context.principal.has_role(Role::Support) {
        return Ok(CancelReason::StaffRequest);
    }
    let customer_id = order.customer_id.as_ref().map(|id| id.as_str());
    let own = match &context.principal {
        Principal::Customer { .. } => context
            .principal
            .customer_id()
            .is_some_and(|own| Some(own.as_str()) == customer_id),
        Principal::Anonymous => {
            customer_id == Some(GUEST_CUSTOMER_ID)
                && headers
                    .get("x-order-token")
                    .and_then(|value| value.to_str().ok())
                    .is_some_and(|token| {
                        state.identity.resource_tokens.verify(
                            Resource::Order,
                            &order_id.to_string(),
                            token,
                        )
                    })
        }
        _ => false,
    };
    if own {
        Ok(CancelReason::CustomerRequest)
    } else {
        Err(no_such_order())
    }
}

fn checked_line(rule: TextRule, text: Option<String>) -> Result<Option<String>, Problem> {
    let Some(text) = text else { return Ok(None) };
    let text = domain::text::nfc(text.trim().to_owned());
    rule.check_required(&text)
        .map_err(|error| Problem::invalid(error.field, &error.message))?;
    Ok(Some(text))
}

fn accepted(order_id: Uuid, position: Option<u64>, more: &[(&str, Value)]) -> Response {
    written_with(
        StatusCode::ACCEPTED,
        "order_id",
        &order_id.to_string(),
        position,
        more,
    )
}

/// `POST /orders/{id}/cancel`: the order's customer until its first shipment, support staff
/// until it is delivered. The saga then releases its stock and refunds its charge.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub(crate) async fn cancel_order(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
    body: Option<JsonBody<CancelOrder>>,
) -> Result<Response, Problem> {
    let order_id = order_id_of(&order_id)?;
    let order = existing_order(&state, order_id).await?;
    let reason = canceller(&state, &context, &headers, order_id, &order)?;
    let body = body.map(|JsonBody(body)| body).unwrap_or_default();
    let detail = checked_line(REASON_RULE, body.reason)?.unwrap_or_else(|| {
        match reason {
            CancelReason::StaffRequest => "cancelled by the shop",
            _ => "cancelled by the customer",
        }
        .to_owned()
    });
    let executed = run::<Order>(
        &state,
        &context,
        &order_id.to_string(),
        OrderCommand::CancelOrder { reason, detail },
    )
    .await?;
    Ok(accepted(order_id, executed.last_position(), &[]))
}

/// `POST /orders/{id}/shipments` (support): 201 `{shipment_id}`.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub(crate) async fn ship_order(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(order_id): Path<String>,
    JsonBody(body): JsonBody<Ship>,
) -> Result<Response, Problem> {
    let order_id = order_id_of(&order_id)?;
    existing_order(&state, order_id).await?;
    let lines = input::item_counts(&body.lines)?;
    let carrier = checked_line(CARRIER_RULE, Some(body.carrier))?.unwrap_or_default();
    let tracking_number = checked_line(
        domain::order::TRACKING_NUMBER_RULE,
        Some(body.tracking_number),
    )?
    .unwrap_or_default();
    let shipment_id = context.new_id("shipment");
    let executed = run::<Order>(
        &state,
        &context,
        &order_id.to_string(),
        OrderCommand::Ship {
            shipment_id,
            lines,
            carrier,
            tracking_number,
        },
    )
    .await?;
    Ok(written_with(
        StatusCode::CREATED,
        "shipment_id",
        &shipment_id.to_string(),
        executed.last_position(),
        &[("order_id", Value::String(order_id.to_string()))],
    ))
}

/// `POST /orders/{id}/shipments/{shipment_id}/delivered` (support).
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub(crate) async fn mark_delivered(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path((order_id, shipment_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let order_id = order_id_of(&order_id)?;
    let shipment_id = Uuid::parse_str(&shipment_id)
        .map_err(|_| Problem::not_found("no shipment has this id: shipment ids are UUIDs"))?;
    existing_order(&state, order_id).await?;
    let executed = run::<Order>(
        &state,
        &context,
        &order_id.to_string(),
        OrderCommand::MarkDelivered { shipment_id },
    )
    .await?;
    Ok(written(
        StatusCode::OK,
        "order_id",
        &order_id.to_string(),
        executed.last_position(),
    ))
}

/// The amount a refund of `lines` returns: their units at the price they were ordered at.
fn lines_amount(order: &Order, lines: &[ItemCount]) -> Result<Money, Problem> {
    let mut amount = Money::ZERO;
    for (index, line) in lines.iter().enumerate() {
        let Some(ordered) = order
            .lines
            .iter()
            .find(|ordered| ordered.product_id == line.product_id)
        else {
            return Err(Problem::invalid(
                &format!("lines[{index}].product_id"),
                format!("product {} is not on this order", line.product_id),
            ));
        };
        if line.quantity > ordered.quantity {
            return Err(Problem::invalid(
                &format!("lines[{index}].quantity"),
                format!("at most {} were ordered", ordered.quantity),
            ));
        }
        amount = ordered
            .unit_price
            .checked_mul(line.quantity)
            .and_then(|line_amount| amount.checked_add(line_amount))
            .ok_or_else(|| Problem::invalid("lines", "the amount is too large"))?;
    }
    Ok(amount)
}

/// `POST /orders/{id}/refunds` (support): `{amount}` or `{lines}`, with a `reason`. The refund
/// is asked for here (refunded never exceeds captured, counting the refunds not yet answered);
/// the saga asks the gateway and records its answer.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub(crate) async fn refund_order(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(order_id): Path<String>,
    JsonBody(body): JsonBody<Refund>,
) -> Result<Response, Problem> {
    let order_id = order_id_of(&order_id)?;
    let order = existing_order(&state, order_id).await?;
    if order.status == domain::OrderStatus::Pending {
        return Err(Problem::conflict(
            "the order's checkout has not ended yet: refund it once it is CONFIRMED (or cancel it)",
        ));
    }
    let amount = match (body.amount, &body.lines) {
        (Some(amount), None) => amount.0,
        (None, Some(lines)) => lines_amount(&order, &input::item_counts(lines)?)?,
        _ => {
            return Err(Problem::invalid(
                "amount",
                "give either an amount or the lines to refund, not both",
            ));
        }
    };
    let reason = checked_line(REASON_RULE, body.reason)?;
    let refund_id = context.new_id("refund");
    let executed = run::<Payment>(
        &state,
        &context,
        &order_id.to_string(),
        PaymentCommand::RequestRefund {
            refund_id: refund_id.to_string(),
            amount,
            reason,
        },
    )
    .await?;
    Ok(accepted(
        order_id,
        executed.last_position(),
        &[
            ("refund_id", Value::String(refund_id.to_string())),
            (
                "amount",
                serde_json::from_str(&amount.to_string()).unwrap_or(Value::Null),
            ),
        ],
    ))
}

/// `POST /orders/{id}/returns` (support): returned never exceeds shipped; with `restock`, the
/// saga puts the units back in stock.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub(crate) async fn receive_return(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(order_id): Path<String>,
    JsonBody(body): JsonBody<Return>,
) -> Result<Response, Problem> {
    let order_id = order_id_of(&order_id)?;
    existing_order(&state, order_id).await?;
    let lines = input::item_counts(&body.lines)?;
    let return_id = context.new_id("return");
    let executed = run::<Order>(
        &state,
        &context,
        &order_id.to_string(),
        OrderCommand::ReceiveReturn {
            return_id,
            lines,
            restock: body.restock,
        },
    )
    .await?;
    Ok(accepted(
        order_id,
        executed.last_position(),
        &[("return_id", Value::String(return_id.to_string()))],
    ))
}

/// `POST /orders/{id}/payments` (support): a bank transfer received, for the order's total,
/// before its deadline.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub(crate) async fn record_payment(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(order_id): Path<String>,
    JsonBody(body): JsonBody<RecordPayment>,
) -> Result<Response, Problem> {
    let order_id = order_id_of(&order_id)?;
    let order = existing_order(&state, order_id).await?;
    if order.payment_method != domain::PaymentMethod::BankTransfer {
        return Err(Problem::conflict(
            "the order is paid by card through the gateway: only a bank transfer is recorded by hand",
        ));
    }
    if order.status != domain::OrderStatus::Pending {
        return Err(Problem::conflict(format!(
            "the order is {} already: a payment is recorded only while it waits for one",
            order.status.as_str()
        )));
    }
    let reference = checked_line(REFERENCE_RULE, Some(body.reference))?.unwrap_or_default();
    let executed = run::<Payment>(
        &state,
        &context,
        &order_id.to_string(),
        PaymentCommand::RecordReceived {
            reference,
            amount: body.amount.0,
        },
    )
    .await?;
    Ok(accepted(order_id, executed.last_position(), &[]))
}
