//! The intake: the projection that turns events into recorded messages.
//!
//! It follows the log from its checkpoint like every projection; each batch's messages and the
//! checkpoint commit in one transaction, and a message's key makes a replayed event record
//! nothing new. It keeps, per order, who the order's messages go to and what every later message
//! of the order shows (`notification_orders`), so that a shipment's message needs nothing but
//! the log. A guest's order has no account to write to and gets no messages.

use async_trait::async_trait;
use domain::{OrderEvent, PaymentEvent, UserEvent};
use eventstore::RecordedEvent;
use projections::readdb::ReadDb;
use projections::{Feed, Projection, ProjectionError, decode};
use serde_json::json;
use sqlx::Row;
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::outbox::{self, Channel, NewMessage};

/// Statements that create the intake's own table; idempotent.
pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS notification_orders (
        order_id TEXT PRIMARY KEY,
        recipient TEXT NOT NULL,
        total TEXT NOT NULL,
        paid BIGINT NOT NULL DEFAULT 0)"];

/// The projection that records messages.
#[derive(Debug)]
pub struct NotificationIntake {
    db: ReadDb,
    wake: Arc<Notify>,
}

impl NotificationIntake {
    pub const NAME: &'static str = "notifications";

    pub fn new(db: ReadDb, wake: Arc<Notify>) -> Self {
        Self { db, wake }
    }
}

/// The recipient reference of an account.
pub fn user_recipient(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The first eight hex digits of an order id, upper case: what a person reads as the order's
/// number.
pub fn order_number(order_id: &str) -> String {
    order_id
        .chars()
        .filter(|c| *c != '-')
        .take(8)
        .collect::<String>()
        .to_uppercase()
}

fn order_variables(order_id: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut variables = serde_json::Map::new();
    variables.insert("order_id".to_owned(), json!(order_id));
    variables.insert("order_number".to_owned(), json!(order_number(order_id)));
    variables
}

struct Batch<'a> {
    event: &'a RecordedEvent,
    messages: Vec<NewMessage>,
}

impl Batch<'_> {
    fn message(
        &mut self,
        template: &'static str,
        channel: Channel,
        recipient: &str,
        order_id: Option<&str>,
        own: serde_json::Value,
    ) {
        let mut variables = order_id.map(order_variables).unwrap_or_default();
        if let Some(own) = own.as_object() {
            variables.extend(own.clone());
        }
        self.messages.push(NewMessage {
            event_id: self.event.event_id.to_string(),
            position: self.event.position,
            template,
            channel,
            recipient: recipient.to_owned(),
            order_id: order_id.map(str::to_owned),
            correlation_id: self.event.metadata.correlation_id.clone(),
            variables: serde_json::Value::Object(variables),
            trace_context: self.event.metadata.stored_trace_context(),
        });
    }
}

#[async_trait]
impl Projection for NotificationIntake {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.db.checkpoint(&feed.checkpoint_name(Self::NAME)).await
    }

    async fn apply(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut write = self.db.begin_write().await?;
        let mut recorded = 0_u64;
        for event in events {
            let mut batch = Batch {
                event,
                messages: Vec::new(),
            };
            match event.stream_type.as_str() {
                "user" => match decode::<UserEvent>(event)? {
                    UserEvent::UserRegistered(registered)
                        if !registered.email_verified
                            && registered.kind == domain::AccountKind::Customer =>
                    {
                        let recipient = user_recipient(&registered.user_id.to_string());
                        batch.message("verify_email", Channel::Email, &recipient, None, json!({}));
                    }
                    UserEvent::UserPasswordResetRequested(requested) => {
                        let recipient = user_recipient(&requested.user_id.to_string());
                        batch.message(
                            "password_reset",
                            Channel::Email,
                            &recipient,
                            None,
                            json!({}),
                        );
                    }
                    UserEvent::UserErased(erased) => {
                        let recipient = user_recipient(&erased.user_id.to_string());
                        outbox::erase_recipient(&mut *write.transaction, &recipient)
                            .await
                            .map_err(storage)?;
                    }
                    _ => {}
                },
                "order" => {
                    let order_id = event.stream_id.as_str();
                    match decode::<OrderEvent>(event)? {
                        OrderEvent::OrderCreated(created) => {
                            // A registered customer's id is their account's; a guest has none.
                            if Uuid::parse_str(created.customer_id.as_str()).is_err() {
                                continue;
                            }
                            let recipient = user_recipient(created.customer_id.as_str());
                            sqlx::query(
                                "INSERT INTO notification_orders (order_id, recipient, total, paid)
                                 VALUES ($1, $2, $3, 0) ON CONFLICT (order_id) DO NOTHING",
                            )
                            .bind(order_id)
                            .bind(&recipient)
                            .bind(created.total.to_string())
                            .execute(&mut *write.transaction)
                            .await?;
                            let lines: Vec<serde_json::Value> = created
                                .lines
                                .iter()
                                .map(|line| {
                                    json!({
                                        "product_id": line.product_id.to_string(),
                                        "quantity": line.quantity,
                                        "unit_price": line.unit_price.to_string(),
                                        "line_total": line.unit_price.checked_mul(line.quantity).map(|total| total.to_string()).unwrap_or_default(),
                                    })
                                })
                                .collect();
                            batch.message(
                                "order_received",
                                Channel::Email,
                                &recipient,
                                Some(order_id),
                                json!({
                                    "lines": lines,
                                    "total": created.total.to_string(),
                                    "payment_method": created.payment_method.as_str(),
                                }),
                            );
                        }
                        other => {
                            let Some(order) = order_of(&mut write.transaction, order_id).await?
                            else {
                                continue;
                            };
                            match other {
                                OrderEvent::OrderConfirmed(_) => batch.message(
                                    "order_confirmed",
                                    Channel::Email,
                                    &order.recipient,
                                    Some(order_id),
                                    json!({ "total": order.total }),
                                ),
                                OrderEvent::OrderCancelled(cancelled) => batch.message(
                                    "order_cancelled",
                                    Channel::Email,
                                    &order.recipient,
                                    Some(order_id),
                                    json!({ "reason": cancelled.reason.as_str(), "refunded": order.paid }),
                                ),
                                OrderEvent::ShipmentCreated(shipment) => {
                                    let items: u64 =
                                        shipment.lines.iter().map(|line| u64::from(line.quantity)).sum();
                                    let own = json!({
                                        "carrier": shipment.carrier,
                                        "tracking_number": shipment.tracking_number,
                                        "items": items,
                                    });
                                    batch.message("order_shipped", Channel::Email, &order.recipient, Some(order_id), own.clone());
                                    batch.message("order_shipped", Channel::Sms, &order.recipient, Some(order_id), own);
                                }
                                OrderEvent::ShipmentDelivered(delivered) => {
                                    let own = json!({ "shipment_id": delivered.shipment_id.to_string() });
                                    batch.message("order_delivered", Channel::Email, &order.recipient, Some(order_id), own.clone());
                                    batch.message("order_delivered", Channel::Sms, &order.recipient, Some(order_id), own);
                                }
                                _ => {}
                            }
                        }
                    }
                }
                "payment" => {
                    let order_id = event.stream_id.as_str();
                    let payment = decode::<PaymentEvent>(event)?;
                    let Some(order) = order_of(&mut write.transaction, order_id).await? else {
                        continue;
                    };
                    match payment {
                        PaymentEvent::PaymentSucceeded(succeeded) => {
                            sqlx::query(
                                "UPDATE notification_orders SET paid = 1 WHERE order_id = $1",
                            )
                            .bind(order_id)
                            .execute(&mut *write.transaction)
                            .await?;
                            batch.message(
                                "payment_receipt",
                                Channel::Email,
                                &order.recipient,
                                Some(order_id),
                                json!({
                                    "amount": succeeded.amount.to_string(),
                                    "charge_id": succeeded.charge_id,
                                }),
                            );
                        }
                        PaymentEvent::PaymentRefunded(refunded) => batch.message(
                            "refund_issued",
                            Channel::Email,
                            &order.recipient,
                            Some(order_id),
                            json!({
                                "amount": refunded.amount.to_string(),
                                "refund_id": refunded.refund_id,
                            }),
                        ),
                        _ => {}
                    }
                }
                _ => {}
            }
            for message in &batch.messages {
                if outbox::insert(&mut *write.transaction, message)
                    .await
                    .map_err(storage)?
                {
                    recorded += 1;
                }
            }
        }
        write.commit_batch(feed, Self::NAME, events).await?;
        if recorded > 0 {
            metrics::counter!("mercato_notifications_recorded_total").increment(recorded);
            self.wake.notify_one();
        }
        Ok(())
    }
}

struct OrderRecipient {
    recipient: String,
    total: String,
    paid: bool,
}

async fn order_of(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    order_id: &str,
) -> Result<Option<OrderRecipient>, ProjectionError> {
    let row =
        sqlx::query("SELECT recipient, total, paid FROM notification_orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut **transaction)
            .await?;
    row.map(|row| {
        Ok(OrderRecipient {
            recipient: row.try_get(0)?,
            total: row.try_get(1)?,
            paid: row.try_get::<i64, _>(2)? != 0,
        })
    })
    .transpose()
}

fn storage(error: crate::NotifyError) -> ProjectionError {
    ProjectionError::Storage(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_number_is_the_first_eight_hex_digits() {
        assert_eq!(
            order_number("0193b8f0-7c1e-7a8e-9f00-000000000001"),
            "0193B8F0"
        );
    }
}
