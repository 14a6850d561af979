//! What the query API reads from the read models this crate keeps: one product, one order, a
//! customer's orders, one cart, recommendations. The SQL lives here, beside the projections that
//! write those tables, and so does the choice between SQL and Redis for carts and popularity:
//! a reader asks [`Queries`] and never sees which one answers.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::ProjectionError;
use crate::readdb::ReadDb;
use crate::redis_models::RedisModels;
use crate::search::ProductDoc;
use crate::sql_models::{CartRow, OrderLineRow, load_cart_row};

/// An order as the orders read model keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRow {
    pub order_id: String,
    pub customer_id: String,
    pub status: String,
    pub lines: Vec<OrderLineRow>,
    pub total_minor: i64,
    pub payment_status: String,
    pub cancel_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The log position of the order's creation: the order of a listing, and its cursor.
    pub created_position: i64,
}

/// Which orders [`Queries::orders`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// `PENDING`, `CONFIRMED` or `CANCELLED`.
    pub status: Option<String>,
    pub customer_id: Option<String>,
    /// Only orders created before this log position (the cursor of the page before).
    pub before_position: Option<i64>,
}

/// A recommended product: one the customer has not ordered, by popularity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub product_id: String,
    pub name: String,
    pub score: i64,
}

/// A category of the catalogue and how many products it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryCount {
    pub name: String,
    pub products: i64,
}

/// The reads of the query API, over the read-model database and, when configured, Redis (where
/// carts and popularity then live).
#[derive(Clone, Debug)]
pub struct Queries {
    db: ReadDb,
    redis: Option<RedisModels>,
}

const ORDER_COLUMNS: &str = "order_id, customer_id, status, lines, total_minor, payment_status, \
    cancel_reason, created_at, updated_at, created_position";

/// How many more candidates than asked for a Redis recommendation reads, since products the
/// catalogue does not know (yet) are left out.
const RECOMMENDATION_SLACK: usize = 50;

impl Queries {
    pub fn new(db: ReadDb, redis: Option<RedisModels>) -> Self {
        Self { db, redis }
    }

    /// The read-model database these reads use.
    pub fn db(&self) -> &ReadDb {
        &self.db
    }

    /// One product of the products read model.
    pub async fn product(&self, product_id: &str) -> Result<Option<ProductDoc>, ProjectionError> {
        let row = sqlx::query(
            "SELECT product_id, name, description, price_minor, stock_qty, category, popularity,
                    updated_at, version
             FROM rm_products WHERE product_id = $1",
        )
        .bind(product_id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ProductDoc {
            product_id: row.try_get(0)?,
            name: row.try_get(1)?,
            description: row.try_get(2)?,
            price_minor: row.try_get(3)?,
            stock_qty: row.try_get(4)?,
            category: row.try_get(5)?,
            popularity: row.try_get(6)?,
            updated_at: row.try_get(7)?,
            version: u64::try_from(row.try_get::<i64, _>(8)?).unwrap_or(0),
        }))
    }

    /// One order of the orders read model.
    pub async fn order(&self, order_id: &str) -> Result<Option<OrderRow>, ProjectionError> {
        let row = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM rm_orders WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(order_row).transpose()
    }

    /// A customer's orders, newest first, at most `limit`.
    pub async fn customer_orders(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<OrderRow>, ProjectionError> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM rm_orders WHERE customer_id = $1 \
             ORDER BY created_position DESC LIMIT $2"
        ))
        .bind(customer_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(order_row).collect()
    }

    /// Up to `limit` orders that `filter` selects, newest first.
    pub async fn orders(
        &self,
        filter: &OrderFilter,
        limit: usize,
    ) -> Result<Vec<OrderRow>, ProjectionError> {
        let mut conditions = Vec::new();
        let mut next = 1;
        let mut condition = |column: &str, operator: &str| {
            conditions.push(format!("{column} {operator} ${next}"));
            next += 1;
        };
        if filter.status.is_some() {
            condition("status", "=");
        }
        if filter.customer_id.is_some() {
            condition("customer_id", "=");
        }
        if filter.before_position.is_some() {
            condition("created_position", "<");
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM rm_orders {clause} ORDER BY created_position DESC LIMIT ${next}"
        );
        let mut query = sqlx::query(&sql);
        if let Some(status) = &filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(customer_id) = &filter.customer_id {
            query = query.bind(customer_id.as_str());
        }
        if let Some(before) = filter.before_position {
            query = query.bind(before);
        }
        let rows = query
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(order_row).collect()
    }

    /// How many of `customer_id`'s orders wait for payment (`PENDING`), and the units they
    /// hold.
    pub async fn open_orders(&self, customer_id: &str) -> Result<(u32, u64), ProjectionError> {
        let rows = sqlx::query(
            "SELECT lines FROM rm_orders WHERE customer_id = $1 AND status = 'PENDING' LIMIT 10000",
        )
        .bind(customer_id)
        .fetch_all(self.db.pool())
        .await?;
        let mut units = 0u64;
        for row in &rows {
            let lines: String = row.try_get("lines")?;
            let lines: Vec<crate::sql_models::OrderLineRow> = serde_json::from_str(&lines)?;
            units += lines
                .iter()
                .map(|line| u64::from(line.quantity))
                .sum::<u64>();
        }
        Ok((u32::try_from(rows.len()).unwrap_or(u32::MAX), units))
    }

    /// One cart of the carts read model (on Redis when it is configured).
    pub async fn cart(&self, cart_id: &str) -> Result<Option<CartRow>, ProjectionError> {
        if let Some(models) = &self.redis {
            return models.cart(cart_id).await;
        }
        let mut connection = self.db.pool().acquire().await?;
        load_cart_row(&mut connection, cart_id).await
    }

    /// The most popular catalogue products customer `customer_id` has not ordered, at most
    /// `limit` (for a new customer, overall popularity). While too few products have any
    /// popularity (a new shop), the rest are products in stock, the most recently changed first,
    /// with a score of 0.
    pub async fn recommendations(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<Recommendation>, ProjectionError> {
        let mut picks = match &self.redis {
            Some(models) => {
                self.redis_recommendations(models, customer_id, limit)
                    .await?
            }
            None => self.sql_recommendations(customer_id, limit).await?,
        };
        if picks.len() < limit {
            // With Redis, what a customer ordered is kept there (the SQL table stays empty).
            let ordered = match &self.redis {
                Some(models) => models.ordered_by(customer_id).await?,
                None => Default::default(),
            };
            let more = self
                .in_stock_not_ordered(customer_id, limit + ordered.len())
                .await?;
            for pick in more {
                if picks.len() == limit {
                    break;
                }
                if !ordered.contains(&pick.product_id)
                    && !picks
                        .iter()
                        .any(|known| known.product_id == pick.product_id)
                {
                    picks.push(pick);
                }
            }
        }
        Ok(picks)
    }

    /// The catalogue's categories by name, with how many products each has (products without
    /// a category are in none).
    pub async fn categories(&self) -> Result<Vec<CategoryCount>, ProjectionError> {
        let rows = sqlx::query(
            "SELECT category, COUNT(*) FROM rm_products
             WHERE category IS NOT NULL AND category <> ''
             GROUP BY category ORDER BY category",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CategoryCount {
                    name: row.try_get(0)?,
                    products: row.try_get(1)?,
                })
            })
            .collect()
    }

    /// Products in stock that customer `customer_id` has not ordered, the most recently changed
    /// first, scored 0: what a new shop recommends before anything is popular.
    async fn in_stock_not_ordered(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<Recommendation>, ProjectionError> {
        self.recommendation_rows(
            "SELECT product_id, name, CAST(0 AS BIGINT) FROM rm_products
             WHERE stock_qty > 0 AND product_id NOT IN
                 (SELECT product_id FROM rm_customer_products WHERE customer_id = $1)
             ORDER BY updated_at DESC, product_id
             LIMIT $2",
            customer_id,
            limit,
        )
        .await
    }

    async fn sql_recommendations(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<Recommendation>, ProjectionError> {
        self.recommendation_rows(
            "SELECT p.product_id, p.name, pop.score
             FROM rm_popularity pop JOIN rm_products p ON p.product_id = pop.product_id
             WHERE pop.product_id NOT IN
                 (SELECT product_id FROM rm_customer_products WHERE customer_id = $1)
             ORDER BY pop.score DESC, p.product_id
             LIMIT $2",
            customer_id,
            limit,
        )
        .await
    }

    /// Runs a recommendation `statement` (product id, name and score, for customer `$1`, at
    /// most `$2` rows).
    async fn recommendation_rows(
        &self,
        statement: &str,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<Recommendation>, ProjectionError> {
        let rows = sqlx::query(statement)
            .bind(customer_id)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Recommendation {
                    product_id: row.try_get(0)?,
                    name: row.try_get(1)?,
                    score: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Recommendations from the Redis sorted set: the top products the customer has not
    /// ordered, keeping only products the catalogue knows.
    async fn redis_recommendations(
        &self,
        models: &RedisModels,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<Recommendation>, ProjectionError> {
        let candidates = models
            .popular_not_ordered(customer_id, limit + RECOMMENDATION_SLACK)
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=candidates.len()).map(|n| format!("${n}")).collect();
        let statement = format!(
            "SELECT product_id, name FROM rm_products WHERE product_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&statement);
        for (product_id, _) in &candidates {
            query = query.bind(product_id);
        }
        let mut names = HashMap::new();
        for row in &query.fetch_all(self.db.pool()).await? {
            names.insert(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
        }
        Ok(candidates
            .into_iter()
            .filter_map(|(product_id, score)| {
                let name = names.get(&product_id)?.clone();
                Some(Recommendation {
                    product_id,
                    name,
                    score,
                })
            })
            .take(limit)
            .collect())
    }
}

fn order_row(row: &AnyRow) -> Result<OrderRow, ProjectionError> {
    let lines: String = row.try_get("lines")?;
    Ok(OrderRow {
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        status: row.try_get("status")?,
        lines: serde_json::from_str(&lines)?,
        total_minor: row.try_get("total_minor")?,
        payment_status: row.try_get("payment_status")?,
        cancel_reason: row.try_get("cancel_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        created_position: row.try_get("created_position")?,
    })
}
