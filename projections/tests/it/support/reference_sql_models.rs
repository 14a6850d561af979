//! The SQL read models as they were before batches were folded in memory: one or more statements
//! per event. The batch tests hold the folded projections to what these store, event by event.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use domain::{OrderEvent, PaymentEvent, ProductEvent};
use eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use projections::cache::Cache;
use projections::readdb::ReadDb;
use projections::runner::{Feed, Projection};
use projections::{
    PopularityBatch, ProjectionError, decode, popularity_of_batch, popularity_signals,
};

/// Scope names of the query cache that the read models invalidate.
pub fn product_scope(product_id: &str) -> String {
    format!("product:{product_id}")
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn rfc3339(event: &RecordedEvent) -> String {
    event
        .occurred_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Products by id, with their popularity (units sold and views).
#[derive(Debug)]
pub struct ProductsProjection {
    db: ReadDb,
    cache: Option<Arc<dyn Cache>>,
}

impl ProductsProjection {
    pub const NAME: &'static str = "products";

    pub fn new(db: ReadDb, cache: Option<Arc<dyn Cache>>) -> Self {
        Self { db, cache }
    }
}

#[async_trait]
impl Projection for ProductsProjection {
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
        let mut changed = BTreeSet::new();
        let mut write = self.db.begin_write().await?;
        let transaction = &mut write.transaction;
        for event in events {
            match event.event_type.as_str() {
                "ProductUpdated" => {
                    let ProductEvent::ProductUpdated(updated) = decode::<ProductEvent>(event)?
                    else {
                        continue;
                    };
                    let product_id = updated.product_id.to_string();
                    sqlx::query(
                        "INSERT INTO rm_products (product_id, name, description, price_minor,
                             stock_qty, category, popularity, updated_at, version)
                         VALUES ($1, $2, $3, $4, $5, $6,
                             COALESCE((SELECT points FROM rm_products_early_popularity
                                       WHERE product_id = $1), 0), $7, $8)
                         ON CONFLICT (product_id) DO UPDATE SET name = excluded.name,
                             description = excluded.description,
                             price_minor = excluded.price_minor,
                             stock_qty = excluded.stock_qty, category = excluded.category,
                             updated_at = excluded.updated_at, version = excluded.version
                         WHERE rm_products.version < excluded.version",
                    )
                    .bind(&product_id)
                    .bind(&updated.name)
                    .bind(&updated.description)
                    .bind(updated.price.minor())
                    .bind(i64::from(updated.stock_qty))
                    .bind(updated.category.as_deref())
                    .bind(rfc3339(event))
                    .bind(to_i64(updated.version))
                    .execute(&mut **transaction)
                    .await?;
                    changed.insert(product_id);
                }
                "StockCommitted" | "ProductViewed" => {
                    for signal in popularity_signals(event)? {
                        let updated = sqlx::query(
                            "UPDATE rm_products SET popularity = popularity + $1 \
                             WHERE product_id = $2",
                        )
                        .bind(signal.points)
                        .bind(&signal.product_id)
                        .execute(&mut **transaction)
                        .await?;
                        if updated.rows_affected() == 0 {
                            // Fed from Kafka, a view can arrive before its product's first
                            // event (another partition): keep the points for the product's row.
                            sqlx::query(
                                "INSERT INTO rm_products_early_popularity (product_id, points)
                                 VALUES ($1, $2) ON CONFLICT (product_id)
                                 DO UPDATE SET points = rm_products_early_popularity.points
                                     + excluded.points",
                            )
                            .bind(&signal.product_id)
                            .bind(signal.points)
                            .execute(&mut **transaction)
                            .await?;
                        }
                        changed.insert(signal.product_id);
                    }
                }
                _ => {}
            }
        }
        write.commit_batch(feed, Self::NAME, events).await?;
        if let Some(cache) = &self.cache
            && !changed.is_empty()
        {
            let scopes: Vec<String> = changed.iter().map(|id| product_scope(id)).collect();
            cache.invalidate(&scopes).await;
        }
        Ok(())
    }
}

/// One line of an order as the orders read model keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineRow {
    pub product_id: String,
    pub quantity: u32,
    pub unit_price_minor: i64,
}

/// Orders by id and by customer, with their payment status.
#[derive(Debug)]
pub struct OrdersProjection {
    db: ReadDb,
}

impl OrdersProjection {
    pub const NAME: &'static str = "orders";

    pub fn new(db: ReadDb) -> Self {
        Self { db }
    }
}

#[async_trait]
impl Projection for OrdersProjection {
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
        let transaction = &mut write.transaction;
        for event in events {
            match event.stream_type.as_str() {
                "order" => match decode::<OrderEvent>(event)? {
                    OrderEvent::OrderCreated(created) => {
                        let lines: Vec<OrderLineRow> = created
                            .lines
                            .iter()
                            .map(|line| OrderLineRow {
                                product_id: line.product_id.to_string(),
                                quantity: line.quantity,
                                unit_price_minor: line.unit_price.minor(),
                            })
                            .collect();
                        sqlx::query(
                            "INSERT INTO rm_orders (order_id, customer_id, status, lines,
                                 total_minor, payment_status, cancel_reason, created_at,
                                 created_position, updated_at)
                             VALUES ($1, $2, 'PENDING', $3, $4,
                                 COALESCE((SELECT payment_status FROM rm_order_payments
                                           WHERE order_id = $1), 'NOT_REQUESTED'),
                                 NULL, $5, $6, $5)
                             ON CONFLICT (order_id) DO NOTHING",
                        )
                        .bind(created.order_id.to_string())
                        .bind(created.customer_id.as_str())
                        .bind(serde_json::to_string(&lines)?)
                        .bind(created.total.minor())
                        .bind(rfc3339(event))
                        .bind(to_i64(event.position))
                        .execute(&mut **transaction)
                        .await?;
                    }
                    OrderEvent::OrderConfirmed(confirmed) => {
                        sqlx::query(
                            "UPDATE rm_orders SET status = 'CONFIRMED', updated_at = $1 \
                             WHERE order_id = $2",
                        )
                        .bind(rfc3339(event))
                        .bind(confirmed.order_id.to_string())
                        .execute(&mut **transaction)
                        .await?;
                    }
                    OrderEvent::OrderCancelled(cancelled) => {
                        sqlx::query(
                            "UPDATE rm_orders SET status = 'CANCELLED', cancel_reason = $1, \
                             updated_at = $2 WHERE order_id = $3",
                        )
                        .bind(cancelled.reason.as_str())
                        .bind(rfc3339(event))
                        .bind(cancelled.order_id.to_string())
                        .execute(&mut **transaction)
                        .await?;
                    }
                    OrderEvent::ShipmentCreated(_)
                    | OrderEvent::ShipmentDelivered(_)
                    | OrderEvent::ReturnReceived(_) => {}
                },
                "payment" => {
                    let status = match decode::<PaymentEvent>(event)? {
                        PaymentEvent::PaymentRequested(_) => "REQUESTED",
                        PaymentEvent::PaymentSucceeded(_) => "SUCCEEDED",
                        PaymentEvent::PaymentFailed(_) => "FAILED",
                        PaymentEvent::PaymentTimedOut(_) => "TIMED_OUT",
                        PaymentEvent::PaymentRefunded(_) => "REFUNDED",
                        PaymentEvent::RefundRequested(_) | PaymentEvent::RefundFailed(_) => {
                            projections::order_details::apply_batch(
                                transaction,
                                self.db.backend(),
                                std::slice::from_ref(event),
                            )
                            .await?;
                            continue;
                        }
                    };
                    // Fed from Kafka, a payment can arrive before its order (another topic): the
                    // status is kept by payment version and read when the order row is made.
                    sqlx::query(
                        "INSERT INTO rm_order_payments (order_id, payment_status, version)
                         VALUES ($1, $2, $3) ON CONFLICT (order_id) DO UPDATE
                         SET payment_status = excluded.payment_status, version = excluded.version
                         WHERE rm_order_payments.version < excluded.version",
                    )
                    .bind(&event.stream_id)
                    .bind(status)
                    .bind(to_i64(event.stream_version))
                    .execute(&mut **transaction)
                    .await?;
                    sqlx::query(
                        "UPDATE rm_orders SET payment_status = (SELECT payment_status
                             FROM rm_order_payments WHERE order_id = $2), updated_at = $1 \
                         WHERE order_id = $2",
                    )
                    .bind(rfc3339(event))
                    .bind(&event.stream_id)
                    .execute(&mut **transaction)
                    .await?;
                }
                _ => {}
            }
            // The order's details, one event at a time.
            projections::order_details::apply_batch(
                transaction,
                self.db.backend(),
                std::slice::from_ref(event),
            )
            .await?;
        }
        write.commit_batch(feed, Self::NAME, events).await?;
        Ok(())
    }
}

/// A cart line as the carts read model keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLineRow {
    pub quantity: u32,
    pub unit_price_minor: i64,
}

/// A cart as the carts read model keeps it: lines by product id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartRow {
    pub lines: BTreeMap<String, CartLineRow>,
    pub checked_out_as: Option<String>,
    pub version: u64,
    pub owner: Option<String>,
}

impl CartRow {
    /// Folds one cart event in; events at or below the row's version are ignored (versioned).
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.stream_version <= self.version {
            return Ok(());
        }
        match decode::<domain::CartEvent>(event)? {
            domain::CartEvent::CartOpened(opened) => self.owner = Some(opened.owner.key()),
            domain::CartEvent::CartItemAdded(added) => {
                self.lines.insert(
                    added.product_id.to_string(),
                    CartLineRow {
                        quantity: added.line_quantity,
                        unit_price_minor: added.unit_price.minor(),
                    },
                );
            }
            domain::CartEvent::CartItemRemoved(removed) => {
                self.lines.remove(&removed.product_id.to_string());
            }
            domain::CartEvent::CartCheckedOut(checked_out) => {
                self.checked_out_as = Some(checked_out.order_id.to_string());
            }
        }
        self.version = event.stream_version;
        Ok(())
    }
}

/// Carts in SQL (the default without Redis).
#[derive(Debug)]
pub struct SqlCartsProjection {
    db: ReadDb,
}

impl SqlCartsProjection {
    pub const NAME: &'static str = "carts";

    pub fn new(db: ReadDb) -> Self {
        Self { db }
    }
}

/// Reads one cart from the SQL read model.
pub async fn load_cart_row(
    connection: &mut AnyConnection,
    cart_id: &str,
) -> Result<Option<CartRow>, ProjectionError> {
    let row = sqlx::query(
        "SELECT lines, checked_out_as, version, owner FROM rm_carts WHERE cart_id = $1",
    )
    .bind(cart_id)
    .fetch_optional(connection)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let lines: String = row.try_get(0)?;
    Ok(Some(CartRow {
        lines: serde_json::from_str(&lines)?,
        checked_out_as: row.try_get(1)?,
        version: u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
        owner: row.try_get(3)?,
    }))
}

#[async_trait]
impl Projection for SqlCartsProjection {
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
        let transaction = &mut write.transaction;
        let mut carts: HashMap<String, CartRow> = HashMap::new();
        for event in events.iter().filter(|event| event.stream_type == "cart") {
            if !carts.contains_key(&event.stream_id) {
                let row = load_cart_row(transaction, &event.stream_id)
                    .await?
                    .unwrap_or_default();
                carts.insert(event.stream_id.clone(), row);
            }
            if let Some(cart) = carts.get_mut(&event.stream_id) {
                cart.apply(event)?;
            }
        }
        let now = chrono::Utc::now().to_rfc3339();
        for (cart_id, cart) in &carts {
            sqlx::query(
                "INSERT INTO rm_carts (cart_id, lines, checked_out_as, version, updated_at, owner)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (cart_id) DO UPDATE SET lines = excluded.lines,
                     checked_out_as = excluded.checked_out_as, version = excluded.version,
                     updated_at = excluded.updated_at, owner = excluded.owner
                 WHERE rm_carts.version < excluded.version",
            )
            .bind(cart_id)
            .bind(serde_json::to_string(&cart.lines)?)
            .bind(cart.checked_out_as.as_deref())
            .bind(to_i64(cart.version))
            .bind(&now)
            .bind(cart.owner.as_deref())
            .execute(&mut **transaction)
            .await?;
        }
        write.commit_batch(feed, Self::NAME, events).await?;
        Ok(())
    }
}

/// Popularity scores and which customer ordered what, for recommendations (the default without
/// Redis).
#[derive(Debug)]
pub struct SqlPopularityProjection {
    db: ReadDb,
}

impl SqlPopularityProjection {
    pub const NAME: &'static str = "popularity";

    pub fn new(db: ReadDb) -> Self {
        Self { db }
    }
}

#[async_trait]
impl Projection for SqlPopularityProjection {
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
        let PopularityBatch { scores, ordered } = popularity_of_batch(events)?;
        let mut write = self.db.begin_write().await?;
        let transaction = &mut write.transaction;
        for (product_id, points) in &scores {
            sqlx::query(
                "INSERT INTO rm_popularity (product_id, score) VALUES ($1, $2)
                 ON CONFLICT (product_id) DO UPDATE SET score = rm_popularity.score + excluded.score",
            )
            .bind(product_id)
            .bind(*points)
            .execute(&mut **transaction)
            .await?;
        }
        for (customer_id, product_id) in &ordered {
            sqlx::query(
                "INSERT INTO rm_customer_products (customer_id, product_id) VALUES ($1, $2)
                 ON CONFLICT (customer_id, product_id) DO NOTHING",
            )
            .bind(customer_id)
            .bind(product_id)
            .execute(&mut **transaction)
            .await?;
        }
        write.commit_batch(feed, Self::NAME, events).await?;
        Ok(())
    }
}
