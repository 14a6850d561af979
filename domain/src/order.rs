//! The Order aggregate: what was bought, for how much, and how it ended.
//!
//! `PENDING -> CONFIRMED` or `PENDING -> CANCELLED`, nothing else. Confirming or cancelling an
//! order that already ended that way is a no-op, so a retried saga step emits nothing new.

use std::collections::BTreeSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cart::{LINE_QUANTITY_MAX, LINES_MAX};
use crate::ids::{CartId, CustomerId, FieldError};
use crate::money::Money;
use crate::payment::validate_payment_ref;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: u32,
    #[serde(rename = "unit_price_minor")]
    pub unit_price: Money,
}

impl OrderLine {
    /// The lines of the order a cart becomes: one per cart line, at the price it was added at.
    pub fn of_cart(cart: &crate::Cart) -> Vec<OrderLine> {
        cart.lines
            .iter()
            .map(|(product_id, line)| OrderLine {
                product_id: *product_id,
                quantity: line.quantity,
                unit_price: line.unit_price,
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub customer_id: CustomerId,
    pub lines: Vec<OrderLine>,
    /// The sum over lines of quantity times unit price.
    #[serde(rename = "total_minor")]
    pub total: Money,
    /// Where the payment's secret is kept (the vault's reference, never the token itself);
    /// `None` for an order created before payment tokens left the log.
    pub payment_ref: Option<String>,
    /// The cart this order was checked out from, if any.
    pub cart_id: Option<CartId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    OutOfStock,
    PaymentDeclined,
    PaymentTimeout,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::OutOfStock => "out_of_stock",
            CancelReason::PaymentDeclined => "payment_declined",
            CancelReason::PaymentTimeout => "payment_timeout",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub reason: CancelReason,
    /// Human-readable detail, such as the product that was out of stock.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderCreated(OrderCreated),
    OrderConfirmed(OrderConfirmed),
    OrderCancelled(OrderCancelled),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderCommand {
    CreateOrder {
        order_id: Uuid,
        customer_id: CustomerId,
        lines: Vec<OrderLine>,
        /// The vault's reference to the payment token.
        payment_ref: String,
        cart_id: Option<CartId>,
    },
    ConfirmOrder,
    CancelOrder {
        reason: CancelReason,
        detail: String,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    #[default]
    Pending,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order does not exist")]
    NotFound,
    #[error("order already exists")]
    AlreadyExists,
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the order total is too large")]
    TotalTooLarge,
    #[error("an order that is {from} cannot become {to}", from = from.as_str(), to = to.as_str())]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: Option<Uuid>,
    pub customer_id: Option<CustomerId>,
    pub lines: Vec<OrderLine>,
    /// In minor units, as every money field a person or a script reads (`*_minor`); the old
    /// name is read from snapshots written before.
    #[serde(rename = "total_minor", alias = "total")]
    pub total: Money,
    pub status: OrderStatus,
    pub cancel_reason: Option<CancelReason>,
}

/// Checks an order's lines and returns their total.
pub fn order_total(lines: &[OrderLine]) -> Result<Money, OrderError> {
    if lines.is_empty() {
        return Err(FieldError::new("lines", "an order needs at least one line").into());
    }
    if lines.len() > LINES_MAX {
        return Err(
            FieldError::new("lines", format!("an order holds at most {LINES_MAX} lines")).into(),
        );
    }
    let mut seen = BTreeSet::new();
    let mut total = Money::ZERO;
    for line in lines {
        if !seen.insert(line.product_id) {
            return Err(FieldError::new(
                "lines",
                format!("product {} appears on more than one line", line.product_id),
            )
            .into());
        }
        if !(1..=LINE_QUANTITY_MAX).contains(&line.quantity) {
            return Err(FieldError::new(
                "quantity",
                format!("must be between 1 and {LINE_QUANTITY_MAX}"),
            )
            .into());
        }
        if !line.unit_price.is_positive() {
            return Err(FieldError::new("unit_price", "must be greater than 0").into());
        }
        let line_total = line
            .unit_price
            .checked_mul(line.quantity)
            .ok_or(OrderError::TotalTooLarge)?;
        total = total
            .checked_add(line_total)
            .ok_or(OrderError::TotalTooLarge)?;
    }
    Ok(total)
}

impl Order {
    fn decide(&self, command: OrderCommand) -> Result<Option<OrderEvent>, OrderError> {
        let Some(order_id) = self.order_id else {
            let OrderCommand::CreateOrder {
                order_id,
                customer_id,
                lines,
                payment_ref,
                cart_id,
            } = command
            else {
                return Err(OrderError::NotFound);
            };
            validate_payment_ref(&payment_ref)?;
            let total = order_total(&lines)?;
            return Ok(Some(OrderEvent::OrderCreated(OrderCreated {
                order_id,
                customer_id,
                lines,
                total,
                payment_ref: Some(payment_ref),
                cart_id,
            })));
        };
        let target = match &command {
            OrderCommand::CreateOrder { .. } => return Err(OrderError::AlreadyExists),
            OrderCommand::ConfirmOrder => OrderStatus::Confirmed,
            OrderCommand::CancelOrder { .. } => OrderStatus::Cancelled,
        };
        if self.status == target {
            return Ok(None);
        }
        if self.status != OrderStatus::Pending {
            return Err(OrderError::InvalidTransition {
                from: self.status,
                to: target,
            });
        }
        Ok(Some(match command {
            OrderCommand::CancelOrder { reason, detail } => {
                OrderEvent::OrderCancelled(OrderCancelled {
                    order_id,
                    reason,
                    detail,
                })
            }
            _ => OrderEvent::OrderConfirmed(OrderConfirmed { order_id }),
        }))
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderCreated(created) => {
                self.order_id = Some(created.order_id);
                self.customer_id = Some(created.customer_id);
                self.lines = created.lines;
                self.total = created.total;
                self.status = OrderStatus::Pending;
            }
            OrderEvent::OrderConfirmed(_) => self.status = OrderStatus::Confirmed,
            OrderEvent::OrderCancelled(cancelled) => {
                self.status = OrderStatus::Cancelled;
                self.cancel_reason = Some(cancelled.reason);
            }
        }
    }
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            OrderEvent::OrderCreated(_) => "OrderCreated",
            OrderEvent::OrderConfirmed(_) => "OrderConfirmed",
            OrderEvent::OrderCancelled(_) => "OrderCancelled",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::current_schema_version(&self.event_type()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::{AggregateTestExecutor, TestFramework};

    use super::*;

    fn order_id() -> Uuid {
        Uuid::from_u128(0x0a0d_0001)
    }

    fn product(number: u128) -> Uuid {
        Uuid::from_u128(0x0b0d_0000 + number)
    }

    fn alice() -> CustomerId {
        CustomerId::parse("alice").expect("a valid customer id")
    }

    fn line(product_number: u128, quantity: u32, unit_price_minor: i64) -> OrderLine {
        OrderLine {
            product_id: product(product_number),
            quantity,
            unit_price: Money::from_minor(unit_price_minor),
        }
    }

    fn create_with(lines: Vec<OrderLine>, payment_ref: &str) -> OrderCommand {
        OrderCommand::CreateOrder {
            order_id: order_id(),
            customer_id: alice(),
            lines,
            payment_ref: payment_ref.to_owned(),
            cart_id: Some(CartId::parse("cart-7").expect("a valid cart id")),
        }
    }

    fn create(lines: Vec<OrderLine>) -> OrderCommand {
        create_with(lines, "vault:order-1")
    }

    fn created(lines: Vec<OrderLine>, total_minor: i64) -> OrderEvent {
        OrderEvent::OrderCreated(OrderCreated {
            order_id: order_id(),
            customer_id: alice(),
            lines,
            total: Money::from_minor(total_minor),
            payment_ref: Some("vault:order-1".to_owned()),
            cart_id: Some(CartId::parse("cart-7").expect("a valid cart id")),
        })
    }

    fn pending_order() -> Vec<OrderEvent> {
        vec![created(vec![line(1, 2, 1_000)], 2_000)]
    }

    fn confirmed() -> OrderEvent {
        OrderEvent::OrderConfirmed(OrderConfirmed {
            order_id: order_id(),
        })
    }

    fn cancel(reason: CancelReason) -> OrderCommand {
        OrderCommand::CancelOrder {
            reason,
            detail: "product 2 is out of stock".to_owned(),
        }
    }

    fn cancelled(reason: CancelReason) -> OrderEvent {
        OrderEvent::OrderCancelled(OrderCancelled {
            order_id: order_id(),
            reason,
            detail: "product 2 is out of stock".to_owned(),
        })
    }

    fn given(events: Vec<OrderEvent>) -> AggregateTestExecutor<Order> {
        TestFramework::<Order>::with(()).given(events)
    }

    #[track_caller]
    fn assert_invalid(result: Result<Vec<OrderEvent>, OrderError>, expected_field: &str) {
        match result {
            Err(OrderError::Invalid(FieldError { field, .. })) => assert_eq!(field, expected_field),
            other => panic!("expected an invalid {expected_field}, got {other:?}"),
        }
    }

    // CreateOrder

    #[test]
    fn creating_an_order_emits_order_created_with_the_exact_total_of_its_lines() {
        // 3 x 0.10 + 1 x 0.20 + 2 x 19.99 = 40.48, with no binary rounding on the way.
        let lines = vec![line(1, 3, 10), line(2, 1, 20), line(3, 2, 1_999)];
        given(vec![])
            .when(create(lines.clone()))
            .then_expect_events(vec![created(lines, 4_048)]);
    }

    #[test]
    fn creating_an_order_twice_fails_with_already_exists() {
        given(pending_order())
            .when(create(vec![line(1, 2, 1_000)]))
            .then_expect_error(OrderError::AlreadyExists);
    }

    #[test]
    fn an_order_without_lines_fails_naming_the_lines_field() {
        assert_invalid(given(vec![]).when(create(vec![])).inspect_result(), "lines");
    }

    #[test]
    fn an_order_of_100_lines_is_accepted() {
        let lines: Vec<OrderLine> = (0..100).map(|line_idx| line(line_idx, 1, 1)).collect();
        given(vec![])
            .when(create(lines.clone()))
            .then_expect_events(vec![created(lines, 100)]);
    }

    #[test]
    fn an_order_of_101_lines_fails_naming_the_lines_field() {
        let lines: Vec<OrderLine> = (0..101).map(|line_idx| line(line_idx, 1, 1)).collect();
        assert_invalid(given(vec![]).when(create(lines)).inspect_result(), "lines");
    }

    #[test]
    fn a_product_on_two_lines_fails_naming_the_lines_field() {
        let lines = vec![line(1, 1, 100), line(2, 1, 100), line(1, 2, 100)];
        assert_invalid(given(vec![]).when(create(lines)).inspect_result(), "lines");
    }

    #[test]
    fn a_line_quantity_of_999_is_accepted() {
        given(vec![])
            .when(create(vec![line(1, 999, 1)]))
            .then_expect_events(vec![created(vec![line(1, 999, 1)], 999)]);
    }

    #[test]
    fn a_line_quantity_outside_1_to_999_fails_naming_the_quantity_field() {
        for quantity in [0, 1_000, u32::MAX] {
            let lines = vec![line(1, 1, 100), line(2, quantity, 100)];
            assert_invalid(
                given(vec![]).when(create(lines)).inspect_result(),
                "quantity",
            );
        }
    }

    #[test]
    fn a_unit_price_of_zero_or_less_fails_naming_the_unit_price_field() {
        for unit_price_minor in [0, -1] {
            let lines = vec![line(1, 1, 100), line(2, 1, unit_price_minor)];
            assert_invalid(
                given(vec![]).when(create(lines)).inspect_result(),
                "unit_price",
            );
        }
    }

    #[test]
    fn an_empty_or_non_ascii_payment_reference_fails_naming_the_payment_ref_field() {
        for payment_ref in ["", "vault ref", "vault:é"] {
            assert_invalid(
                given(vec![])
                    .when(create_with(vec![line(1, 1, 100)], payment_ref))
                    .inspect_result(),
                "payment_ref",
            );
        }
    }

    #[test]
    fn a_total_beyond_the_integer_range_fails_with_total_too_large() {
        // One line whose quantity times unit price overflows, and two lines whose sum does.
        let overflowing_line = vec![line(1, 3, i64::MAX / 2)];
        let overflowing_sum = vec![line(1, 1, i64::MAX / 2 + 1), line(2, 1, i64::MAX / 2 + 1)];
        for lines in [overflowing_line, overflowing_sum] {
            given(vec![])
                .when(create(lines))
                .then_expect_error(OrderError::TotalTooLarge);
        }
    }

    #[test]
    fn every_command_but_create_on_a_missing_order_fails_with_not_found() {
        for command in [OrderCommand::ConfirmOrder, cancel(CancelReason::OutOfStock)] {
            given(vec![])
                .when(command)
                .then_expect_error(OrderError::NotFound);
        }
    }

    // Status

    #[test]
    fn a_new_order_is_pending() {
        let mut order = Order::default();
        for event in pending_order() {
            order.apply(event);
        }
        assert_eq!(order.status, OrderStatus::Pending);
        assert_eq!(order.status.as_str(), "PENDING");
    }

    #[test]
    fn confirming_a_pending_order_emits_order_confirmed() {
        given(pending_order())
            .when(OrderCommand::ConfirmOrder)
            .then_expect_events(vec![confirmed()]);
    }

    #[test]
    fn cancelling_a_pending_order_emits_order_cancelled_with_its_reason_and_detail() {
        for reason in [
            CancelReason::OutOfStock,
            CancelReason::PaymentDeclined,
            CancelReason::PaymentTimeout,
        ] {
            given(pending_order())
                .when(cancel(reason))
                .then_expect_events(vec![cancelled(reason)]);
        }
    }

    #[test]
    fn cancel_reasons_are_written_as_out_of_stock_payment_declined_and_payment_timeout() {
        for (reason, text) in [
            (CancelReason::OutOfStock, "out_of_stock"),
            (CancelReason::PaymentDeclined, "payment_declined"),
            (CancelReason::PaymentTimeout, "payment_timeout"),
        ] {
            assert_eq!(reason.as_str(), text);
            assert_eq!(
                serde_json::to_value(reason).expect("a reason serializes"),
                serde_json::Value::from(text)
            );
        }
    }

    #[test]
    fn confirming_a_confirmed_order_emits_nothing() {
        let mut history = pending_order();
        history.push(confirmed());
        given(history)
            .when(OrderCommand::ConfirmOrder)
            .then_expect_events(vec![]);
    }

    #[test]
    fn cancelling_a_cancelled_order_emits_nothing() {
        let mut history = pending_order();
        history.push(cancelled(CancelReason::OutOfStock));
        for reason in [CancelReason::OutOfStock, CancelReason::PaymentDeclined] {
            given(history.clone())
                .when(cancel(reason))
                .then_expect_events(vec![]);
        }
    }

    #[test]
    fn confirming_a_cancelled_order_fails_with_invalid_transition() {
        let mut history = pending_order();
        history.push(cancelled(CancelReason::PaymentDeclined));
        given(history)
            .when(OrderCommand::ConfirmOrder)
            .then_expect_error(OrderError::InvalidTransition {
                from: OrderStatus::Cancelled,
                to: OrderStatus::Confirmed,
            });
    }

    #[test]
    fn cancelling_a_confirmed_order_fails_with_invalid_transition() {
        let mut history = pending_order();
        history.push(confirmed());
        given(history)
            .when(cancel(CancelReason::PaymentTimeout))
            .then_expect_error(OrderError::InvalidTransition {
                from: OrderStatus::Confirmed,
                to: OrderStatus::Cancelled,
            });
    }

    // Snapshots

    #[test]
    fn an_order_snapshot_round_trips_through_json() {
        let mut order = Order::default();
        for event in [
            created(vec![line(1, 2, 1_000), line(2, 1, 5)], 2_005),
            cancelled(CancelReason::PaymentDeclined),
        ] {
            order.apply(event);
        }
        assert_eq!(order.status, OrderStatus::Cancelled);
        let json = serde_json::to_string(&order).expect("an order serializes");
        let restored: Order = serde_json::from_str(&json).expect("a snapshot deserializes");
        assert_eq!(restored, order);
        // Money is named in minor units; a snapshot written under the old name still loads.
        assert!(json.contains(r#""total_minor":2005"#), "{json}");
        let old = json.replace(r#""total_minor""#, r#""total""#);
        let restored: Order = serde_json::from_str(&old).expect("an old snapshot deserializes");
        assert_eq!(restored, order);
    }
}
