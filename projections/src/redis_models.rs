//! Carts and popularity on Redis (when `REDIS_URL` is set): carts as JSON values, popularity as a
//! sorted set, what each customer ordered as sets.
//!
//! Each projection keeps its checkpoint in Redis beside its data. A batch is applied by one Lua
//! script that first checks the checkpoint is still the one the batch was computed from, then
//! applies every change and moves the checkpoint: atomic, so each event counts exactly once even
//! with two projector processes (the loser's script changes nothing and its batch is retried from
//! the new checkpoint). Keys are not declared to the script: this needs a standalone Redis (or one
//! hash slot), not a cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use async_trait::async_trait;
use eventstore::RecordedEvent;
use redis::aio::ConnectionManager;

use crate::runner::{Feed, Projection};
use crate::sql_models::CartRow;
use crate::{PopularityBatch, ProjectionError, popularity_of_batch};

/// Applies `ARGV[3..]` (groups of op, key, a, b) if `KEYS[1]` still holds `ARGV[1]`, then sets it
/// to `ARGV[2]`. Ops: `Z` ZINCRBY key b a; `S` SADD key a; `V` SET key a.
const APPLY_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then return 0 end
local i = 3
while i + 3 <= #ARGV do
  local op, key, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'Z' then redis.call('ZINCRBY', key, b, a)
  elseif op == 'S' then redis.call('SADD', key, a)
  elseif op == 'V' then redis.call('SET', key, a) end
  i = i + 4
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// How many keys one `MGET` asks for.
const MGET_KEYS: usize = 1_000;

/// The Redis side of the read models: connection and key names.
#[derive(Clone)]
pub struct RedisModels {
    connection: ConnectionManager,
    prefix: String,
    apply: redis::Script,
}

impl fmt::Debug for RedisModels {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RedisModels")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisModels {
    /// The read models on a Redis connection (shared with the cache); keys start with `prefix`.
    pub fn new(connection: ConnectionManager, prefix: &str) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            apply: redis::Script::new(APPLY_SCRIPT),
        }
    }

    fn checkpoint_key(&self, name: &str) -> String {
        format!("{}checkpoint:{name}", self.prefix)
    }

    fn cart_key(&self, cart_id: &str) -> String {
        format!("{}cart:{cart_id}", self.prefix)
    }

    fn popularity_key(&self) -> String {
        format!("{}popularity", self.prefix)
    }

    fn ordered_key(&self, customer_id: &str) -> String {
        format!("{}ordered:{customer_id}", self.prefix)
    }

    async fn checkpoint_text(&self, name: &str) -> Result<String, ProjectionError> {
        let mut connection = self.connection.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(self.checkpoint_key(name))
            .query_async(&mut connection)
            .await?;
        Ok(value.unwrap_or_else(|| "0".to_owned()))
    }

    async fn checkpoint(&self, name: &str) -> Result<u64, ProjectionError> {
        Ok(self.checkpoint_text(name).await?.parse().unwrap_or(0))
    }

    /// The stored checkpoint of projection `name` and the events of `events` after it (another
    /// projector process may have applied part of the batch already).
    /// Replayed dead letters are all applied (they are behind their partition's checkpoint).
    async fn unapplied<'a>(
        &self,
        name: &str,
        feed: &Feed,
        events: &'a [RecordedEvent],
    ) -> Result<Unapplied<'a>, ProjectionError> {
        let checkpoint = self.checkpoint_text(name).await?;
        let applied_up_to: u64 = match feed {
            Feed::Replay => 0,
            _ => checkpoint.parse().unwrap_or(0),
        };
        Ok(Unapplied {
            new_checkpoint: events
                .last()
                .map_or(applied_up_to, |last| last.position.max(applied_up_to)),
            events: events
                .iter()
                .filter(|event| event.position > applied_up_to)
                .collect(),
            checkpoint,
        })
    }

    /// Runs the ops if the checkpoint is still the one `batch` was read at, and moves it past the
    /// batch; an error if another process moved it meanwhile.
    async fn apply_ops(
        &self,
        name: &str,
        batch: &Unapplied<'_>,
        ops: Vec<[String; 4]>,
    ) -> Result<(), ProjectionError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.apply.key(self.checkpoint_key(name));
        invocation
            .arg(&batch.checkpoint)
            .arg(batch.new_checkpoint.to_string());
        for op in ops {
            for part in op {
                invocation.arg(part);
            }
        }
        let applied: i64 = invocation.invoke_async(&mut connection).await?;
        if applied == 1 {
            Ok(())
        } else {
            Err(ProjectionError::Storage(format!(
                "the {name} checkpoint moved while a batch was applied (another projector?); retrying"
            )))
        }
    }

    /// One cart, if the read model has it.
    pub async fn cart(&self, cart_id: &str) -> Result<Option<CartRow>, ProjectionError> {
        let mut connection = self.connection.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(self.cart_key(cart_id))
            .query_async(&mut connection)
            .await?;
        Ok(match value {
            Some(json) => Some(serde_json::from_str(&json)?),
            None => None,
        })
    }

    /// The stored carts among `cart_ids`, by id (`MGET` in chunks: a few round trips for a
    /// whole batch).
    async fn carts(&self, cart_ids: &[&str]) -> Result<HashMap<String, CartRow>, ProjectionError> {
        let mut connection = self.connection.clone();
        let mut carts = HashMap::new();
        for chunk in cart_ids.chunks(MGET_KEYS) {
            let mut mget = redis::cmd("MGET");
            for cart_id in chunk {
                mget.arg(self.cart_key(cart_id));
            }
            let values: Vec<Option<String>> = mget.query_async(&mut connection).await?;
            for (cart_id, value) in chunk.iter().zip(values) {
                if let Some(json) = value {
                    carts.insert((*cart_id).to_owned(), serde_json::from_str(&json)?);
                }
            }
        }
        Ok(carts)
    }

    /// The most popular products (id and score) that `customer_id` has not ordered, at most
    /// `limit`, looking at no more than `window` of the top products.
    pub async fn popular_not_ordered(
        &self,
        customer_id: &str,
        window: usize,
    ) -> Result<Vec<(String, i64)>, ProjectionError> {
        let mut connection = self.connection.clone();
        let ordered: BTreeSet<String> = redis::cmd("SMEMBERS")
            .arg(self.ordered_key(customer_id))
            .query_async(&mut connection)
            .await?;
        let stop = (window + ordered.len()).saturating_sub(1);
        let top: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.popularity_key())
            .arg(0)
            .arg(stop)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await?;
        Ok(top
            .into_iter()
            .filter(|(product_id, _)| !ordered.contains(product_id))
            .map(|(product_id, score)| (product_id, score as i64))
            .collect())
    }

    pub async fn ping(&self) -> Result<(), ProjectionError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await?;
        Ok(())
    }
}

/// A batch as far as it is not applied yet: see [`RedisModels::unapplied`].
struct Unapplied<'a> {
    /// The stored checkpoint, as text, that the script checks is unchanged.
    checkpoint: String,
    /// Where the checkpoint moves to.
    new_checkpoint: u64,
    events: Vec<&'a RecordedEvent>,
}

/// Carts on Redis.
#[derive(Debug)]
pub struct RedisCartsProjection {
    models: RedisModels,
}

impl RedisCartsProjection {
    pub const NAME: &'static str = "carts";

    pub fn new(models: RedisModels) -> Self {
        Self { models }
    }
}

#[async_trait]
impl Projection for RedisCartsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.models
            .checkpoint(&feed.checkpoint_name(Self::NAME))
            .await
    }

    async fn apply(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let name = feed.checkpoint_name(Self::NAME);
        let batch = self.models.unapplied(&name, feed, events).await?;
        // The batch's events per cart, in order; a cart is folded on from its stored value (a
        // batch may start in the middle of a cart), all of them read in a few round trips.
        let mut cart_events: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
        for event in batch
            .events
            .iter()
            .copied()
            .filter(|event| event.stream_type == "cart")
        {
            cart_events
                .entry(event.stream_id.as_str())
                .or_default()
                .push(event);
        }
        let cart_ids: Vec<&str> = cart_events.keys().copied().collect();
        let mut stored = self.models.carts(&cart_ids).await?;
        let mut carts: Vec<(&str, CartRow)> = Vec::with_capacity(cart_events.len());
        for (cart_id, events) in cart_events {
            let mut cart = stored.remove(cart_id).unwrap_or_default();
            for event in events {
                cart.apply(event)?;
            }
            carts.push((cart_id, cart));
        }
        let mut ops = Vec::with_capacity(carts.len());
        for (cart_id, cart) in &carts {
            ops.push([
                "V".to_owned(),
                self.models.cart_key(cart_id),
                serde_json::to_string(cart)?,
                String::new(),
            ]);
        }
        self.models.apply_ops(&name, &batch, ops).await
    }
}

/// Popularity and what each customer ordered, on Redis.
#[derive(Debug)]
pub struct RedisPopularityProjection {
    models: RedisModels,
}

impl RedisPopularityProjection {
    pub const NAME: &'static str = "popularity";

    pub fn new(models: RedisModels) -> Self {
        Self { models }
    }
}

#[async_trait]
impl Projection for RedisPopularityProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.models
            .checkpoint(&feed.checkpoint_name(Self::NAME))
            .await
    }

    async fn apply(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let name = feed.checkpoint_name(Self::NAME);
        let batch = self.models.unapplied(&name, feed, events).await?;
        let PopularityBatch { scores, ordered } =
            popularity_of_batch(batch.events.iter().copied())?;
        let mut ops = Vec::with_capacity(scores.len() + ordered.len());
        for (product_id, points) in scores {
            ops.push([
                "Z".to_owned(),
                self.models.popularity_key(),
                product_id,
                points.to_string(),
            ]);
        }
        for (customer_id, product_id) in ordered {
            ops.push([
                "S".to_owned(),
                self.models.ordered_key(&customer_id),
                product_id,
                String::new(),
            ]);
        }
        self.models.apply_ops(&name, &batch, ops).await
    }
}
