//! The steps of a checkout saga and the ids they derive: every command a saga issues carries
//! event ids derived (uuid v5) from the order's `OrderCreated` event id and the step's name, and
//! every event it causes carries the saga's id and that cause. Anything that writes what the
//! saga would write (`mercato generate`) takes the names and ids from here.

use std::borrow::Cow;

use eventstore::EventMetadata;
use uuid::Uuid;

/// The source (and actor) of every event the saga causes.
pub const SOURCE: &str = "saga";

/// Why an order was cancelled at a line whose product had too little stock: the product by name
/// and id, what was ordered and what was available.
pub fn out_of_stock_detail(product_id: Uuid, name: &str, requested: u32, available: u32) -> String {
    format!(
        "{name:?} (product {product_id}) is out of stock: {requested} ordered, {available} available"
    )
}

/// One step of a checkout saga.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SagaStep {
    /// Reserve the stock of order line `n`.
    Reserve(usize),
    /// Ask for the payment (`PaymentRequested`).
    RequestPayment,
    /// Record the gateway's answer: charged or declined.
    PaymentResult,
    /// Record that the gateway did not answer in time.
    PaymentTimeout,
    /// Confirm the order.
    Confirm,
    /// Commit the reservation of order line `n` (a sale).
    Commit(usize),
    /// Cancel the order.
    Cancel,
    /// Release the reservation of order line `n`.
    Release(usize),
    /// Refund what is left of the charge of a cancelled order.
    Refund,
    /// Put back in stock what order line `n` did not ship, once a confirmed order is cancelled.
    Restock(usize),
    /// Put back in stock line `n` of the return `return_id`.
    ReturnRestock(Uuid, usize),
    /// Record the gateway's answer to the refund staff asked for (by the refund's key).
    SettleRefund(Uuid),
}

impl SagaStep {
    /// The step's name, from which its events' ids derive.
    pub fn name(self) -> Cow<'static, str> {
        match self {
            SagaStep::Reserve(line) => Cow::Owned(format!("reserve/{line}")),
            SagaStep::RequestPayment => Cow::Borrowed("request-payment"),
            SagaStep::PaymentResult => Cow::Borrowed("payment-result"),
            SagaStep::PaymentTimeout => Cow::Borrowed("payment-timeout"),
            SagaStep::Confirm => Cow::Borrowed("confirm"),
            SagaStep::Commit(line) => Cow::Owned(format!("commit/{line}")),
            SagaStep::Cancel => Cow::Borrowed("cancel"),
            SagaStep::Release(line) => Cow::Owned(format!("release/{line}")),
            SagaStep::Refund => Cow::Borrowed("refund"),
            SagaStep::Restock(line) => Cow::Owned(format!("restock/{line}")),
            SagaStep::ReturnRestock(return_id, line) => {
                Cow::Owned(format!("return/{return_id}/{line}"))
            }
            SagaStep::SettleRefund(key) => Cow::Owned(format!("settle-refund/{key}")),
        }
    }

    /// The cause the events of this step of the saga of `order_event_id` derive their ids
    /// from (`eventstore::aggregate::derived_event_id`).
    pub fn cause(self, order_event_id: Uuid) -> Uuid {
        Uuid::new_v5(&order_event_id, self.name().as_bytes())
    }
}

/// The key a refund id is known by in step names: the id itself when it is a UUID (the
/// command API makes them), else one derived from it.
pub fn refund_key(refund_id: &str) -> Uuid {
    Uuid::parse_str(refund_id)
        .unwrap_or_else(|_| Uuid::new_v5(&Uuid::NAMESPACE_OID, refund_id.as_bytes()))
}

/// The id of the saga started by the `OrderCreated` event `order_event_id`: the same on every
/// run.
pub fn saga_id(order_event_id: Uuid) -> Uuid {
    Uuid::new_v5(&order_event_id, b"checkout-saga")
}

/// The metadata of every event the saga of `order_event_id` causes.
pub fn metadata(order_event_id: Uuid, correlation_id: &str) -> EventMetadata {
    EventMetadata {
        correlation_id: correlation_id.to_owned(),
        causation_id: order_event_id.to_string(),
        saga_id: Some(saga_id(order_event_id).to_string()),
        actor: SOURCE.to_owned(),
        source: SOURCE.to_owned(),
        traceparent: None,
        tracestate: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids_derive_from_the_order_creation_and_the_step_name() {
        let order_event_id = Uuid::from_u128(7);
        assert_eq!(
            SagaStep::Confirm.cause(order_event_id),
            Uuid::new_v5(&order_event_id, b"confirm")
        );
        assert_eq!(
            SagaStep::Reserve(2).cause(order_event_id),
            Uuid::new_v5(&order_event_id, b"reserve/2")
        );
        assert_ne!(
            SagaStep::Commit(0).cause(order_event_id),
            SagaStep::Release(0).cause(order_event_id)
        );
        let metadata = metadata(order_event_id, "c");
        assert_eq!(
            metadata.saga_id,
            Some(Uuid::new_v5(&order_event_id, b"checkout-saga").to_string())
        );
        assert_eq!(metadata.causation_id, order_event_id.to_string());
        assert_eq!(
            (metadata.actor.as_str(), metadata.source.as_str()),
            ("saga", "saga")
        );
    }
}
