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
use crate::payment::validate_payment_token;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: u32,
    #[serde(rename = "unit_price_minor")]
    pub unit_price: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub customer_id: CustomerId,
    pub lines: Vec<OrderLine>,
    /// The sum over lines of quantity times unit price.
    #[serde(rename = "total_minor")]
    pub total: Money,
    pub payment_token: String,
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
        payment_token: String,
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
                payment_token,
                cart_id,
            } = command
            else {
                return Err(OrderError::NotFound);
            };
            validate_payment_token(&payment_token)?;
            let total = order_total(&lines)?;
            return Ok(Some(OrderEvent::OrderCreated(OrderCreated {
                order_id,
                customer_id,
                lines,
                total,
                payment_token,
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
