//! The SQL read models: products, orders (by id and by customer), carts, popularity. Each batch
//! and its checkpoint commit in one transaction, so every event is applied exactly once.
//!
//! A batch is first folded in memory per key (a product's latest state and the points it gains,
//! an order's row and the changes to it, a cart's final state, summed popularity), then written
//! with a few multi-row statements (see [`execute_values`]). The fold keeps exactly what applying
//! the events one by one would give, in order, whatever the batch's length: events of one key
//! may repeat in a batch, a batch may start in the middle of a stream, and Kafka-fed batches
//! bring payments before their order and views before their product. Decisions that depend on
//! the stored state (does the row exist, is its version lower) are taken by the statements
//! themselves, so the fold needs no read of its own except for carts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use domain::{OrderEvent, PaymentEvent, ProductEvent};
use eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use crate::cache::Cache;
use crate::readdb::{ReadBackend, ReadDb};
use crate::runner::{Feed, Projection};
use crate::{
    PopularityBatch, ProjectionError, decode, is_popularity_event, popularity_of_batch,
    popularity_signals,
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

/// The most parameters one multi-row statement binds: well below SQLite's limit (32,766) and
/// PostgreSQL's (65,535), and small enough that a statement's text stays far below SQLite's
/// 1,000,000 bytes.
pub(crate) const MAX_PARAMETERS: usize = 12_000;

/// One bound value of a multi-row statement.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
}

/// Runs `head ROWS tail` for all of `params` (`columns` values per row, in row order), in as
/// few statements as [`MAX_PARAMETERS`] allows, ROWS being `row` once per row, joined by commas.
/// Each `?` of `row` is a parameter, bound in order (a value needed twice is bound twice): on
/// PostgreSQL it becomes `$n`; SQLite keeps the anonymous `?`, since it looks numbered and named
/// parameters up in a list, which makes parsing a statement of thousands of them quadratic.
/// Returns the rows affected.
pub(crate) async fn execute_values(
    connection: &mut AnyConnection,
    backend: ReadBackend,
    head: &str,
    row: &str,
    tail: &str,
    params: &[Param<'_>],
) -> Result<u64, ProjectionError> {
    let columns = row.matches('?').count();
    debug_assert!(columns > 0 && params.len().is_multiple_of(columns));
    let rows_per_statement = (MAX_PARAMETERS / columns).max(1);
    let mut affected = 0;
    for chunk in params.chunks(rows_per_statement * columns) {
        let rows = chunk.len() / columns;
        let mut sql = String::with_capacity(head.len() + tail.len() + rows * (row.len() + 32));
        sql.push_str(head);
        let mut parameter = 0;
        for index in 0..rows {
            if index > 0 {
                sql.push_str(", ");
            }
            push_placeholders(&mut sql, backend, row, &mut parameter);
        }
        sql.push_str(tail);
        // Full chunks repeat the same text and are worth a prepared statement; a last, partial
        // chunk's text is seldom seen again.
        let mut query = sqlx::query(&sql).persistent(rows == rows_per_statement);
        for param in chunk {
            query = match *param {
                Param::Text(text) => query.bind(text),
                Param::MaybeText(text) => query.bind(text),
                Param::Int(number) => query.bind(number),
            };
        }
        affected += query.execute(&mut *connection).await?.rows_affected();
    }
    Ok(affected)
}

/// Appends `template` to `sql`, its `?` numbered on from `parameter` for PostgreSQL.
pub(crate) fn push_placeholders(
    sql: &mut String,
    backend: ReadBackend,
    template: &str,
    parameter: &mut usize,
) {
    match backend {
        ReadBackend::Sqlite => {
            *parameter += template.matches('?').count();
            sql.push_str(template);
        }
        ReadBackend::Postgres => {
            let mut parts = template.split('?');
            if let Some(first) = parts.next() {
                sql.push_str(first);
            }
            for part in parts {
                *parameter += 1;
                sql.push('$');
                sql.push_str(&parameter.to_string());
                sql.push_str(part);
            }
        }
    }
}

/// Products by id, with their popularity (units sold and views).
#[derive(Debug)]
pub struct ProductsProjection {
    db: ReadDb,
    cache: Option<Arc<dyn Cache>>,
}

impl ProductsProjection {
    pub const NAME: &'static str = "products";

    /// Drops what the cache holds of every product in the read model, and of the catalogue.
    async fn invalidate_every_product(&self, cache: &dyn Cache) {
        cache
            .invalidate(&[
                crate::cache::CATALOGUE_SCOPE.to_owned(),
                crate::cache::POPULAR_SCOPE.to_owned(),
            ])
            .await;
        match sqlx::query_scalar::<_, String>("SELECT product_id FROM rm_products")
            .fetch_all(self.db.pool())
            .await
        {
            Ok(ids) => {
                let scopes: Vec<String> = ids.iter().map(|id| product_scope(id)).collect();
                for chunk in scopes.chunks(1_000) {
                    cache.invalidate(chunk).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot list the products to drop from the cache after a replay");
            }
        }
    }

    pub fn new(db: ReadDb, cache: Option<Arc<dyn Cache>>) -> Self {
        Self { db, cache }
    }
}

/// What a batch does to one product.
#[derive(Debug, Default)]
struct ProductFold {
    /// Popularity points of the batch before its first `ProductUpdated` of the product (all of
    /// them when it has none): they go to the row if it exists, else wait as early popularity.
    /// `None` without any such signal (a signal of 0 points still makes an early row).
    points_before: Option<i64>,
    /// Points after the first `ProductUpdated`: the row exists by then.
    points_after: i64,
    /// The first `ProductUpdated` with the highest version, and when it happened: what the row
    /// holds after the batch unless it held a version at least as high before.
    latest: Option<(domain::product::ProductUpdated, String)>,
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
        let mut products: BTreeMap<String, ProductFold> = BTreeMap::new();
        for event in events {
            match event.event_type.as_str() {
                "ProductUpdated" => {
                    let ProductEvent::ProductUpdated(updated) = decode::<ProductEvent>(event)?
                    else {
                        continue;
                    };
                    let fold = products.entry(updated.product_id.to_string()).or_default();
                    // Stored row-wise, a later update only wins with a higher version.
                    if fold
                        .latest
                        .as_ref()
                        .is_none_or(|(latest, _)| latest.version < updated.version)
                    {
                        fold.latest = Some((updated, rfc3339(event)));
                    }
                }
                event_type if is_popularity_event(event_type) => {
                    for signal in popularity_signals(event)? {
                        let fold = products.entry(signal.product_id).or_default();
                        if fold.latest.is_some() {
                            fold.points_after += signal.points;
                        } else {
                            *fold.points_before.get_or_insert(0) += signal.points;
                        }
                    }
                }
                _ => {}
            }
        }

        let backend = self.db.backend();
        let mut write = self.db.begin_write().await?;
        let connection = &mut *write.transaction;
        // 1. Rows that exist before the batch gain all of its points.
        let params: Vec<Param> = products
            .iter()
            .filter_map(|(product_id, fold)| {
                let points = fold.points_before.unwrap_or(0) + fold.points_after;
                (points != 0).then_some([Param::Text(product_id), Param::Int(points)])
            })
            .flatten()
            .collect();
        execute_values(
            connection,
            backend,
            "UPDATE rm_products SET popularity = rm_products.popularity + v.column2 FROM (VALUES ",
            "(?, ?)",
            ") AS v WHERE rm_products.product_id = v.column1",
            &params,
        )
        .await?;
        // 2. Fed from Kafka, a view can arrive before its product's first event (the views'
        //    stream, another partition): the points before the product's row exists wait for it.
        let params: Vec<Param> = products
            .iter()
            .filter_map(|(product_id, fold)| {
                Some([Param::Text(product_id), Param::Int(fold.points_before?)])
            })
            .flatten()
            .collect();
        execute_values(
            connection,
            backend,
            "INSERT INTO rm_products_early_popularity (product_id, points)
             SELECT v.column1, v.column2 FROM (VALUES ",
            "(?, ?)",
            ") AS v WHERE NOT EXISTS (SELECT 1 FROM rm_products
                 WHERE rm_products.product_id = v.column1)
             ON CONFLICT (product_id) DO UPDATE
             SET points = rm_products_early_popularity.points + excluded.points",
            &params,
        )
        .await?;
        // 3. The products' latest states: a new row starts with the early popularity (which
        //    holds the points before its first update by now) plus the points after it.
        let mut params: Vec<Param> = Vec::new();
        for (product_id, fold) in &products {
            if let Some((updated, updated_at)) = &fold.latest {
                params.extend([
                    Param::Text(product_id),
                    Param::Text(&updated.name),
                    Param::Text(&updated.description),
                    Param::Int(updated.price.minor()),
                    Param::Int(i64::from(updated.stock_qty)),
                    Param::MaybeText(updated.category.as_deref()),
                    Param::Text(product_id),
                    Param::Int(fold.points_after),
                    Param::Text(updated_at),
                    Param::Int(to_i64(updated.version)),
                ]);
            }
        }
        execute_values(
            connection,
            backend,
            "INSERT INTO rm_products (product_id, name, description, price_minor, stock_qty,
                 category, popularity, updated_at, version) VALUES ",
            "(?, ?, ?, ?, ?, ?, COALESCE((SELECT points FROM rm_products_early_popularity
                 WHERE product_id = ?), 0) + ?, ?, ?)",
            " ON CONFLICT (product_id) DO UPDATE SET name = excluded.name,
                 description = excluded.description, price_minor = excluded.price_minor,
                 stock_qty = excluded.stock_qty, category = excluded.category,
                 updated_at = excluded.updated_at, version = excluded.version
             WHERE rm_products.version < excluded.version",
            &params,
        )
        .await?;
        if let Err(error) = write.commit_batch(feed, Self::NAME, events).await {
            if let (ProjectionError::CheckpointMoved { .. }, Some(cache)) = (&error, &self.cache) {
                // A replay swapped in rebuilt rows: what was cached of any product may be gone.
                self.invalidate_every_product(cache.as_ref()).await;
            }
            return Err(error);
        }
        if let Some(cache) = &self.cache
            && !products.is_empty()
        {
            let scopes: Vec<String> = products
                .keys()
                .map(|id| product_scope(id))
                .chain([
                    crate::cache::CATALOGUE_SCOPE.to_owned(),
                    crate::cache::POPULAR_SCOPE.to_owned(),
                ])
                .collect();
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

/// Changes of an order row by a run of events (confirmations, cancellations, payments).
#[derive(Debug, Default)]
struct OrderChanges {
    /// The status of the last confirmation or cancellation.
    status: Option<&'static str>,
    /// The reason of the last cancellation (a confirmation keeps it).
    cancel_reason: Option<String>,
    /// When the last change happened.
    updated_at: Option<String>,
    /// Whether a payment event came: the row then takes the stored payment status.
    payment: bool,
}

impl OrderChanges {
    fn set_status(&mut self, status: &'static str, at: &str) {
        self.status = Some(status);
        self.updated_at = Some(at.to_owned());
    }
}

/// The row an `OrderCreated` makes.
#[derive(Debug)]
struct NewOrder {
    customer_id: String,
    lines: String,
    total_minor: i64,
    created_at: String,
    created_position: i64,
}

/// What a batch does to one order (and its payment).
#[derive(Debug, Default)]
struct OrderFold {
    /// The batch's first `OrderCreated`: the row, if the order has none yet (later ones change
    /// nothing).
    created: Option<NewOrder>,
    /// The changes of the whole batch, for a row that exists before it (an `OrderCreated` of an
    /// existing order changes nothing).
    all: OrderChanges,
    /// The changes after the first `OrderCreated`, for the row it makes (before it, there was
    /// no row to change).
    after_created: OrderChanges,
    /// The payment event with the highest payment version (the first of equals): status and
    /// version, stored unless a version at least as high is.
    payment: Option<(&'static str, u64)>,
}

impl OrderFold {
    fn change(&mut self, change: impl Fn(&mut OrderChanges)) {
        change(&mut self.all);
        if self.created.is_some() {
            change(&mut self.after_created);
        }
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
        let mut orders: BTreeMap<String, OrderFold> = BTreeMap::new();
        for event in events {
            match event.stream_type.as_str() {
                "order" => match decode::<OrderEvent>(event)? {
                    OrderEvent::OrderCreated(created) => {
                        let fold = orders.entry(created.order_id.to_string()).or_default();
                        if fold.created.is_some() {
                            continue;
                        }
                        let lines: Vec<OrderLineRow> = created
                            .lines
                            .iter()
                            .map(|line| OrderLineRow {
                                product_id: line.product_id.to_string(),
                                quantity: line.quantity,
                                unit_price_minor: line.unit_price.minor(),
                            })
                            .collect();
                        fold.created = Some(NewOrder {
                            customer_id: created.customer_id.as_str().to_owned(),
                            lines: serde_json::to_string(&lines)?,
                            total_minor: created.total.minor(),
                            created_at: rfc3339(event),
                            created_position: to_i64(event.position),
                        });
                    }
                    OrderEvent::OrderConfirmed(confirmed) => {
                        let at = rfc3339(event);
                        orders
                            .entry(confirmed.order_id.to_string())
                            .or_default()
                            .change(|changes| changes.set_status("CONFIRMED", &at));
                    }
                    OrderEvent::OrderCancelled(cancelled) => {
                        let at = rfc3339(event);
                        let reason = cancelled.reason.as_str();
                        orders
                            .entry(cancelled.order_id.to_string())
                            .or_default()
                            .change(|changes| {
                                changes.set_status("CANCELLED", &at);
                                changes.cancel_reason = Some(reason.to_owned());
                            });
                    }
                    // Shipments and returns show in `rm_order_details` (below).
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
                        // A partial refund is told apart in `rm_order_details` (below).
                        PaymentEvent::PaymentRefunded(_) => "REFUNDED",
                        // Asked, not yet refunded: the payment's status stays.
                        PaymentEvent::RefundRequested(_) | PaymentEvent::RefundFailed(_) => {
                            continue;
                        }
                    };
                    let at = rfc3339(event);
                    let fold = orders.entry(event.stream_id.clone()).or_default();
                    if fold
                        .payment
                        .is_none_or(|(_, version)| version < event.stream_version)
                    {
                        fold.payment = Some((status, event.stream_version));
                    }
                    fold.change(|changes| {
                        changes.payment = true;
                        changes.updated_at = Some(at.clone());
                    });
                }
                _ => {}
            }
        }

        let backend = self.db.backend();
        let mut write = self.db.begin_write().await?;
        let connection = &mut *write.transaction;
        // 1. Fed from Kafka, a payment can arrive before its order (another topic): the status
        //    is kept by payment version and read when the order row is made.
        let params: Vec<Param> = orders
            .iter()
            .filter_map(|(order_id, fold)| Some((order_id, fold.payment?)))
            .flat_map(|(order_id, (status, version))| {
                [
                    Param::Text(order_id),
                    Param::Text(status),
                    Param::Int(to_i64(version)),
                ]
            })
            .collect();
        execute_values(
            connection,
            backend,
            "INSERT INTO rm_order_payments (order_id, payment_status, version) VALUES ",
            "(?, ?, ?)",
            " ON CONFLICT (order_id) DO UPDATE
             SET payment_status = excluded.payment_status, version = excluded.version
             WHERE rm_order_payments.version < excluded.version",
            &params,
        )
        .await?;
        // 2. Rows that exist before the batch take all of its changes (before the new rows are
        //    made, which only take the changes after their creation).
        let params: Vec<Param> = orders
            .iter()
            .filter_map(|(order_id, fold)| {
                let changes = &fold.all;
                Some([
                    Param::Text(order_id),
                    Param::MaybeText(changes.status),
                    Param::MaybeText(changes.cancel_reason.as_deref()),
                    Param::Text(changes.updated_at.as_deref()?),
                    Param::Int(i64::from(changes.payment)),
                ])
            })
            .flatten()
            .collect();
        execute_values(
            connection,
            backend,
            "UPDATE rm_orders SET status = COALESCE(v.column2, rm_orders.status),
                 cancel_reason = COALESCE(v.column3, rm_orders.cancel_reason),
                 updated_at = v.column4,
                 payment_status = CASE WHEN v.column5 = 1
                     THEN (SELECT p.payment_status FROM rm_order_payments p
                           WHERE p.order_id = rm_orders.order_id)
                     ELSE rm_orders.payment_status END
             FROM (VALUES ",
            "(?, ?, ?, ?, ?)",
            ") AS v WHERE rm_orders.order_id = v.column1",
            &params,
        )
        .await?;
        // 3. New rows. Their payment status is the stored one: a payment event after the
        //    creation sets it, and without one it is what was stored when the order came.
        let mut params: Vec<Param> = Vec::new();
        for (order_id, fold) in &orders {
            if let Some(created) = &fold.created {
                let changes = &fold.after_created;
                params.extend([
                    Param::Text(order_id),
                    Param::Text(&created.customer_id),
                    Param::Text(changes.status.unwrap_or("PENDING")),
                    Param::Text(&created.lines),
                    Param::Int(created.total_minor),
                    Param::Text(order_id),
                    Param::MaybeText(changes.cancel_reason.as_deref()),
                    Param::Text(&created.created_at),
                    Param::Int(created.created_position),
                    Param::Text(changes.updated_at.as_deref().unwrap_or(&created.created_at)),
                ]);
            }
        }
        execute_values(
            connection,
            backend,
            "INSERT INTO rm_orders (order_id, customer_id, status, lines, total_minor,
                 payment_status, cancel_reason, created_at, created_position, updated_at) VALUES ",
            "(?, ?, ?, ?, ?, COALESCE((SELECT payment_status FROM rm_order_payments
                 WHERE order_id = ?), 'NOT_REQUESTED'), ?, ?, ?, ?)",
            " ON CONFLICT (order_id) DO NOTHING",
            &params,
        )
        .await?;
        // 4. What the order shows after checkout (addresses, shipments, payments, refunds).
        crate::order_details::apply_batch(connection, backend, events).await?;
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
    /// Who the cart belongs to (`CartOwner::key`); `None` for a cart written before carts had
    /// owners, until its next write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Reads the stored rows of `cart_ids` (those the read model has), a few statements for all.
async fn load_cart_rows(
    connection: &mut AnyConnection,
    backend: ReadBackend,
    cart_ids: &[&str],
) -> Result<HashMap<String, CartRow>, ProjectionError> {
    let mut carts = HashMap::new();
    for chunk in cart_ids.chunks(MAX_PARAMETERS) {
        let mut sql = String::from(
            "SELECT cart_id, lines, checked_out_as, version, owner FROM rm_carts WHERE cart_id IN (",
        );
        let mut parameter = 0;
        for index in 0..chunk.len() {
            if index > 0 {
                sql.push_str(", ");
            }
            push_placeholders(&mut sql, backend, "?", &mut parameter);
        }
        sql.push(')');
        let mut query = sqlx::query(&sql).persistent(chunk.len() == MAX_PARAMETERS);
        for cart_id in chunk {
            query = query.bind(*cart_id);
        }
        for row in query.fetch_all(&mut *connection).await? {
            let lines: String = row.try_get(1)?;
            carts.insert(
                row.try_get::<String, _>(0)?,
                CartRow {
                    lines: serde_json::from_str(&lines)?,
                    checked_out_as: row.try_get(2)?,
                    version: u64::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
                    owner: row.try_get(4)?,
                },
            );
        }
    }
    Ok(carts)
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
        let mut cart_events: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
        for event in events.iter().filter(|event| event.stream_type == "cart") {
            cart_events
                .entry(event.stream_id.as_str())
                .or_default()
                .push(event);
        }
        let backend = self.db.backend();
        let mut write = self.db.begin_write().await?;
        let connection = &mut *write.transaction;
        // A batch may start in the middle of a cart: fold on from its stored row.
        let cart_ids: Vec<&str> = cart_events.keys().copied().collect();
        let mut stored = load_cart_rows(connection, backend, &cart_ids).await?;
        let mut carts: Vec<(&str, CartRow, String)> = Vec::with_capacity(cart_events.len());
        for (cart_id, events) in &cart_events {
            let mut cart = stored.remove(*cart_id).unwrap_or_default();
            for event in events {
                cart.apply(event)?;
            }
            let lines = serde_json::to_string(&cart.lines)?;
            carts.push((*cart_id, cart, lines));
        }
        let now = chrono::Utc::now().to_rfc3339();
        let params: Vec<Param> = carts
            .iter()
            .flat_map(|(cart_id, cart, lines)| {
                [
                    Param::Text(cart_id),
                    Param::Text(lines),
                    Param::MaybeText(cart.checked_out_as.as_deref()),
                    Param::Int(to_i64(cart.version)),
                    Param::Text(&now),
                    Param::MaybeText(cart.owner.as_deref()),
                ]
            })
            .collect();
        execute_values(
            connection,
            backend,
            "INSERT INTO rm_carts (cart_id, lines, checked_out_as, version, updated_at, owner) VALUES ",
            "(?, ?, ?, ?, ?, ?)",
            " ON CONFLICT (cart_id) DO UPDATE SET lines = excluded.lines,
                 checked_out_as = excluded.checked_out_as, version = excluded.version,
                 updated_at = excluded.updated_at, owner = excluded.owner
             WHERE rm_carts.version < excluded.version",
            &params,
        )
        .await?;
        write.commit_batch(feed, Self::NAME, events).await?;
        Ok(())
    }
}

/// Popularity scores and which customer ordered what, for recommendations (the default without
/// Redis).
#[derive(Debug)]
pub struct SqlPopularityProjection {
    db: ReadDb,
    /// The query cache, whose most popular products each batch drops.
    cache: Option<Arc<dyn Cache>>,
}

impl SqlPopularityProjection {
    pub const NAME: &'static str = "popularity";

    pub fn new(db: ReadDb, cache: Option<Arc<dyn Cache>>) -> Self {
        Self { db, cache }
    }
}

/// Drops the cached most popular products after a batch that scored `scored` products.
pub(crate) async fn popular_changed(cache: Option<&Arc<dyn Cache>>, scored: usize) {
    if let Some(cache) = cache
        && scored > 0
    {
        cache
            .invalidate(&[crate::cache::POPULAR_SCOPE.to_owned()])
            .await;
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
        let scored = scores.len();
        let backend = self.db.backend();
        let mut write = self.db.begin_write().await?;
        let connection = &mut *write.transaction;
        let params: Vec<Param> = scores
            .iter()
            .flat_map(|(product_id, points)| [Param::Text(product_id), Param::Int(*points)])
            .collect();
        execute_values(
            connection,
            backend,
            "INSERT INTO rm_popularity (product_id, score) VALUES ",
            "(?, ?)",
            " ON CONFLICT (product_id) DO UPDATE SET score = rm_popularity.score + excluded.score",
            &params,
        )
        .await?;
        let params: Vec<Param> = ordered
            .iter()
            .flat_map(|(customer_id, product_id)| {
                [Param::Text(customer_id), Param::Text(product_id)]
            })
            .collect();
        execute_values(
            connection,
            backend,
            "INSERT INTO rm_customer_products (customer_id, product_id) VALUES ",
            "(?, ?)",
            " ON CONFLICT (customer_id, product_id) DO NOTHING",
            &params,
        )
        .await?;
        write.commit_batch(feed, Self::NAME, events).await?;
        popular_changed(self.cache.as_ref(), scored).await;
        Ok(())
    }
}
