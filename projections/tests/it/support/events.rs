//! Recorded events the read side's tests fold: products, views, orders and what the checkout
//! saga does to a product's stock.

#![allow(dead_code)]

use domain::order::{OrderCreated, OrderLine};
use domain::product::{StockCommitted, StockReleased};
use domain::{CustomerId, Money, OrderEvent, ProductEvent};
use eventstore::RecordedEvent;
use uuid::Uuid;

pub use super::opensearch_script::{product_updated, recorded, view};

/// An order by `customer_id` of each product of `lines` (id, units), at 1.00 a unit, at
/// `position`: placed, not confirmed, so it adds no popularity points.
pub fn order_created(customer_id: &str, lines: &[(Uuid, u32)], position: u64) -> RecordedEvent {
    let order_id = Uuid::new_v4();
    let lines: Vec<OrderLine> = lines
        .iter()
        .map(|(product_id, quantity)| OrderLine {
            product_id: *product_id,
            quantity: *quantity,
            unit_price: Money::from_minor(100),
        })
        .collect();
    let total = Money::from_minor(
        lines
            .iter()
            .map(|line| 100 * i64::from(line.quantity))
            .sum(),
    );
    let event = OrderEvent::OrderCreated(OrderCreated {
        order_id,
        customer_id: CustomerId::parse(customer_id).expect("a customer id"),
        lines,
        total,
        payment_ref: Some("vault:order".to_owned()),
        cart_id: None,
        shipping_address: None,
        billing_address: None,
        payment_method: domain::PaymentMethod::Card,
    });
    recorded(
        schemas::encode(&event).expect("encode"),
        "order",
        order_id.to_string(),
        1,
        position,
    )
}

/// The sale of `quantity` units of `product_id` to a confirmed order, at `position` (the
/// product's stream, at version `position`): 10 popularity points a unit.
pub fn stock_committed(product_id: Uuid, quantity: u32, position: u64) -> RecordedEvent {
    let event = ProductEvent::StockCommitted(StockCommitted {
        order_id: Uuid::new_v4(),
        quantity,
    });
    product_event(&event, product_id, position)
}

/// The reservation of `quantity` units of `product_id` given back (its order was cancelled), at
/// `position`: no popularity.
pub fn stock_released(product_id: Uuid, quantity: u32, position: u64) -> RecordedEvent {
    let event = ProductEvent::StockReleased(StockReleased {
        order_id: Uuid::new_v4(),
        quantity,
    });
    product_event(&event, product_id, position)
}

/// `event` of `product_id`'s stream, at version and position `position`.
fn product_event(event: &ProductEvent, product_id: Uuid, position: u64) -> RecordedEvent {
    recorded(
        schemas::encode(event).expect("encode"),
        "product",
        product_id.to_string(),
        position,
        position,
    )
}
