//! What an order shows after checkout, beside its row of `rm_orders`: its addresses (sealed, as
//! its events carry them), payment method, shipments, returns and fulfilment status (the *order
//! part*, from the order's stream), and its payments and refunds (the *payment part*, from the
//! payment's stream), in `rm_order_details`.
//!
//! Each part is folded from its own stream and kept with that stream's version, and each is
//! written only by a batch that brings a newer version of its stream. Fed from Kafka, an order's
//! two streams come from two topics that two consumers may apply at once: each writes its own
//! column, so neither overwrites what the other folded.

use std::collections::{BTreeMap, HashMap};

use domain::order::fulfilment_status;
use domain::{OrderEvent, PaymentEvent, Sealed};
use eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use crate::ProjectionError;
use crate::decode;
use crate::readdb::ReadBackend;
use crate::sql_models::{MAX_PARAMETERS, Param, execute_values, push_placeholders};

/// Statements that create the table; part of the orders read model.
pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS rm_order_details (
        order_id TEXT PRIMARY KEY,
        order_part TEXT NOT NULL,
        order_version BIGINT NOT NULL,
        payment_part TEXT NOT NULL,
        payment_version BIGINT NOT NULL)"];

/// Units of one product, as a shipment or a return lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRow {
    pub product_id: String,
    pub quantity: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentRow {
    pub shipment_id: String,
    pub lines: Vec<CountRow>,
    pub carrier: String,
    pub tracking_number: String,
    pub shipped_at: String,
    pub delivered_at: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnRow {
    pub return_id: String,
    pub lines: Vec<CountRow>,
    pub restock: bool,
    pub received_at: String,
}

/// What the order's own stream says after checkout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPart {
    pub payment_method: String,
    pub shipping_address: Option<Sealed>,
    pub billing_address: Option<Sealed>,
    /// Units ordered by product, for the fulfilment status.
    pub ordered: BTreeMap<String, u32>,
    pub shipments: Vec<ShipmentRow>,
    pub returns: Vec<ReturnRow>,
    pub fulfilment_status: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRow {
    /// The gateway's charge id, or `received:<reference>` for a payment staff recorded.
    pub charge_id: String,
    pub amount_minor: i64,
    pub paid_at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRow {
    pub refund_id: String,
    pub amount_minor: i64,
    pub reason: Option<String>,
    /// `REQUESTED` (the gateway has not answered), `REFUNDED` or `FAILED`.
    pub status: String,
    /// Why the gateway refused it.
    pub failure: Option<String>,
    pub requested_at: String,
    pub refunded_at: Option<String>,
}

/// What the order's payment stream says: payments received and refunds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentPart {
    pub payments: Vec<PaymentRow>,
    pub refunds: Vec<RefundRow>,
    pub refunded_minor: i64,
}

impl OrderPart {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let at = event
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        match decode::<OrderEvent>(event)? {
            OrderEvent::OrderCreated(created) => {
                self.payment_method = created.payment_method.as_str().to_owned();
                self.shipping_address = created.shipping_address;
                self.billing_address = created.billing_address;
                self.ordered = created
                    .lines
                    .iter()
                    .map(|line| (line.product_id.to_string(), line.quantity))
                    .collect();
            }
            OrderEvent::ShipmentCreated(shipment) => self.shipments.push(ShipmentRow {
                shipment_id: shipment.shipment_id.to_string(),
                lines: counts(&shipment.lines),
                carrier: shipment.carrier,
                tracking_number: shipment.tracking_number,
                shipped_at: at,
                delivered_at: None,
            }),
            OrderEvent::ShipmentDelivered(delivered) => {
                let id = delivered.shipment_id.to_string();
                if let Some(shipment) = self.shipments.iter_mut().find(|s| s.shipment_id == id) {
                    shipment.delivered_at.get_or_insert(at);
                }
            }
            OrderEvent::ReturnReceived(received) => self.returns.push(ReturnRow {
                return_id: received.return_id.to_string(),
                lines: counts(&received.lines),
                restock: received.restock,
                received_at: at,
            }),
            OrderEvent::OrderConfirmed(_) | OrderEvent::OrderCancelled(_) => {}
        }
        self.fulfilment_status = self.fulfilment().as_str().to_owned();
        Ok(())
    }

    fn fulfilment(&self) -> domain::FulfilmentStatus {
        let lines: Vec<domain::order::OrderLine> = self
            .ordered
            .iter()
            .filter_map(|(product_id, quantity)| {
                Some(domain::order::OrderLine {
                    product_id: product_id.parse().ok()?,
                    quantity: *quantity,
                    unit_price: domain::Money::ZERO,
                })
            })
            .collect();
        let mut shipped = BTreeMap::new();
        for shipment in &self.shipments {
            for line in &shipment.lines {
                if let Ok(product_id) = line.product_id.parse() {
                    *shipped.entry(product_id).or_insert(0) += line.quantity;
                }
            }
        }
        fulfilment_status(
            &lines,
            &shipped,
            self.shipments.iter().map(|s| s.delivered_at.is_some()),
        )
    }
}

impl PaymentPart {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let at = event
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        match decode::<PaymentEvent>(event)? {
            PaymentEvent::PaymentSucceeded(succeeded) => {
                if !self
                    .payments
                    .iter()
                    .any(|payment| payment.charge_id == succeeded.charge_id)
                {
                    self.payments.push(PaymentRow {
                        charge_id: succeeded.charge_id,
                        amount_minor: succeeded.amount.minor(),
                        paid_at: at,
                    });
                }
            }
            PaymentEvent::RefundRequested(requested) => self.refunds.push(RefundRow {
                refund_id: requested.refund_id,
                amount_minor: requested.amount.minor(),
                reason: requested.reason,
                status: "REQUESTED".to_owned(),
                failure: None,
                requested_at: at,
                refunded_at: None,
            }),
            PaymentEvent::PaymentRefunded(refunded) => {
                self.refunded_minor += refunded.amount.minor();
                match self
                    .refunds
                    .iter_mut()
                    .find(|refund| refund.refund_id == refunded.refund_id)
                {
                    Some(refund) => {
                        refund.status = "REFUNDED".to_owned();
                        refund.refunded_at = Some(at);
                    }
                    // The refund of a cancelled order's charge: nobody asked for it by id.
                    None => self.refunds.push(RefundRow {
                        refund_id: refunded.refund_id,
                        amount_minor: refunded.amount.minor(),
                        reason: Some("the order was cancelled".to_owned()),
                        status: "REFUNDED".to_owned(),
                        failure: None,
                        requested_at: at.clone(),
                        refunded_at: Some(at),
                    }),
                }
            }
            PaymentEvent::RefundFailed(failed) => {
                if let Some(refund) = self
                    .refunds
                    .iter_mut()
                    .find(|refund| refund.refund_id == failed.refund_id)
                {
                    refund.status = "FAILED".to_owned();
                    refund.failure = Some(failed.reason);
                }
            }
            PaymentEvent::PaymentRequested(_)
            | PaymentEvent::PaymentFailed(_)
            | PaymentEvent::PaymentTimedOut(_) => {}
        }
        Ok(())
    }
}

fn counts(lines: &[domain::order::ItemCount]) -> Vec<CountRow> {
    lines
        .iter()
        .map(|line| CountRow {
            product_id: line.product_id.to_string(),
            quantity: line.quantity,
        })
        .collect()
}

/// Folds the order and payment events of a batch into `rm_order_details`, in the batch's
/// transaction: each part from its stored state (one read for all the batch's orders), then one
/// multi-row statement per part, each row kept only if its version is newer than the stored one.
pub async fn apply_batch(
    connection: &mut AnyConnection,
    backend: ReadBackend,
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    let mut order_events: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    let mut payment_events: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in events {
        match event.stream_type.as_str() {
            "order" => order_events.entry(&event.stream_id).or_default(),
            "payment" => payment_events.entry(&event.stream_id).or_default(),
            _ => continue,
        }
        .push(event);
    }
    if order_events.is_empty() && payment_events.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<&str> = order_events.keys().copied().collect();
    ids.extend(payment_events.keys().copied());
    ids.sort_unstable();
    ids.dedup();
    let stored = load_rows(connection, backend, &ids).await?;

    let mut order_rows = Vec::new();
    for (order_id, events) in &order_events {
        let stored = stored
            .get(*order_id)
            .map(|row| (row.order_part.as_str(), row.order_version));
        if let Some((part, version)) = fold::<OrderPart>(stored, events)? {
            order_rows.push((*order_id, serde_json::to_string(&part)?, version));
        }
    }
    write_parts(connection, backend, "order", "payment", &order_rows).await?;
    let mut payment_rows = Vec::new();
    let mut refunds = Vec::new();
    for (order_id, events) in &payment_events {
        let stored = stored
            .get(*order_id)
            .map(|row| (row.payment_part.as_str(), row.payment_version));
        if let Some((part, version)) = fold::<PaymentPart>(stored, events)? {
            if part.refunded_minor > 0 {
                refunds.push((*order_id, part.refunded_minor));
            }
            payment_rows.push((*order_id, serde_json::to_string(&part)?, version));
        }
    }
    write_parts(connection, backend, "payment", "order", &payment_rows).await?;
    // A refund of part of the total leaves the payment PARTIALLY_REFUNDED (`rm_orders` knows
    // only that a refund was made).
    for (order_id, refunded) in refunds {
        sqlx::query(
            "UPDATE rm_orders SET payment_status = CASE WHEN total_minor > $1
                 THEN 'PARTIALLY_REFUNDED' ELSE 'REFUNDED' END
             WHERE order_id = $2 AND payment_status IN ('REFUNDED', 'PARTIALLY_REFUNDED')",
        )
        .bind(refunded)
        .bind(order_id)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// One part of an order's details, folded from its own stream.
trait Part: Default + Serialize + serde::de::DeserializeOwned {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError>;
}

impl Part for OrderPart {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        OrderPart::apply(self, event)
    }
}

impl Part for PaymentPart {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        PaymentPart::apply(self, event)
    }
}

/// Folds `events` into the stored part (its JSON and version), skipping the events at or below
/// its version; `None` when none is newer.
fn fold<P: Part>(
    stored: Option<(&str, u64)>,
    events: &[&RecordedEvent],
) -> Result<Option<(P, i64)>, ProjectionError> {
    let (mut part, mut version) = match stored {
        Some((text, version)) => (serde_json::from_str::<P>(text).unwrap_or_default(), version),
        None => (P::default(), 0),
    };
    let first = version;
    for event in events {
        if event.stream_version > version {
            part.apply(event)?;
            version = event.stream_version;
        }
    }
    Ok((version > first).then(|| (part, to_i64(version))))
}

/// Writes the `{part}_part` column of `rows` (order id, JSON, version), each only over an older
/// version; a new row gets an empty `{other}_part`.
async fn write_parts(
    connection: &mut AnyConnection,
    backend: ReadBackend,
    part: &str,
    other: &str,
    rows: &[(&str, String, i64)],
) -> Result<(), ProjectionError> {
    let params: Vec<Param> = rows
        .iter()
        .flat_map(|(order_id, json, version)| {
            [
                Param::Text(order_id),
                Param::Text(json),
                Param::Int(*version),
            ]
        })
        .collect();
    execute_values(
        connection,
        backend,
        &format!(
            "INSERT INTO rm_order_details (order_id, {part}_part, {part}_version, {other}_part,
                 {other}_version) VALUES "
        ),
        "(?, ?, ?, '{}', 0)",
        &format!(
            " ON CONFLICT (order_id) DO UPDATE SET {part}_part = excluded.{part}_part,
                 {part}_version = excluded.{part}_version
             WHERE rm_order_details.{part}_version < excluded.{part}_version"
        ),
        &params,
    )
    .await?;
    Ok(())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored row of `rm_order_details`.
struct StoredRow {
    order_part: String,
    order_version: u64,
    payment_part: String,
    payment_version: u64,
}

/// The stored rows of `order_ids`, a few statements for all.
async fn load_rows(
    connection: &mut AnyConnection,
    backend: ReadBackend,
    order_ids: &[&str],
) -> Result<HashMap<String, StoredRow>, ProjectionError> {
    let mut rows = HashMap::new();
    for chunk in order_ids.chunks(MAX_PARAMETERS) {
        let mut sql = String::from(
            "SELECT order_id, order_part, order_version, payment_part, payment_version
             FROM rm_order_details WHERE order_id IN (",
        );
        let mut parameter = 0;
        for index in 0..chunk.len() {
            if index > 0 {
                sql.push_str(", ");
            }
            push_placeholders(&mut sql, backend, "?", &mut parameter);
        }
        sql.push(')');
        let mut query = sqlx::query(&sql);
        for order_id in chunk {
            query = query.bind(*order_id);
        }
        for row in query.fetch_all(&mut *connection).await? {
            rows.insert(
                row.try_get::<String, _>(0)?,
                StoredRow {
                    order_part: row.try_get(1)?,
                    order_version: u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
                    payment_part: row.try_get(3)?,
                    payment_version: u64::try_from(row.try_get::<i64, _>(4)?).unwrap_or(0),
                },
            );
        }
    }
    Ok(rows)
}

/// The details of one order, if the read model has them.
pub async fn load(
    pool: &sqlx::AnyPool,
    order_id: &str,
) -> Result<Option<(OrderPart, PaymentPart)>, ProjectionError> {
    let row =
        sqlx::query("SELECT order_part, payment_part FROM rm_order_details WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(pool)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let order: String = row.try_get(0)?;
    let payment: String = row.try_get(1)?;
    Ok(Some((
        serde_json::from_str(&order).unwrap_or_default(),
        serde_json::from_str(&payment).unwrap_or_default(),
    )))
}
