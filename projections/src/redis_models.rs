//! Carts and popularity on Redis (when `REDIS_URL` is set): carts as JSON values, popularity as a
//! sorted set, what each customer ordered as sets.
//!
//! Each projection keeps its checkpoint in Redis beside its data. A batch is applied by one Lua
//! script that first checks the checkpoint is still the one the batch was computed from, then
//! applies every change and moves the checkpoint: atomic, so each event counts exactly once even
//! with two projector processes (the loser's script changes nothing and its batch is read again
//! from the new checkpoint). Keys are not declared to the script: this needs a standalone Redis
//! (or one hash slot), not a cluster.
//!
//! # Rebuilding beside the read models in service
//!
//! `mercato replay` builds fresh carts or popularity under the *shadow* prefix
//! (`{prefix}replay:`, [`RedisModels::shadow`]): the same projection code, the same key names
//! after the prefix, its own checkpoint, and a record of the run (`{prefix}replay:run:{name}`)
//! so an interrupted rebuild resumes ([`RedisModels::start_replay`],
//! [`RedisModels::replay_run`]). Nothing reads the shadow but the rebuild.
//!
//! Once caught up, [`RedisModels::swap_replay`] puts it in service with one Lua script (atomic:
//! Redis runs nothing else meanwhile, and the script's writes replicate and persist as one
//! transaction). The script refuses when a live checkpoint (the log's or a Kafka partition's) is
//! beyond the rebuilt one; otherwise it `RENAME`s every shadow key over its live name, deletes the
//! live keys the shadow lacks, sets every live checkpoint to the rebuilt one and counts the
//! replacement in `{prefix}replaced:{name}`.
//!
//! The key names are gathered with `SCAN` before the script, so Redis keeps serving while they
//! are listed; they travel as the script's arguments (the part after the prefix: one request of a
//! few megabytes for 100,000 carts). The script itself is one `EXISTS` and one `RENAME` per key,
//! about 6 µs a key: swapping 100,000 carts kept Redis busy for 0.5 to 0.7 s on a loaded 2-core
//! machine, once per rebuild, and readers see the old read model or the new one, never a mix.
//! (Past about 800,000 keys the script would outlast Redis's `busy-reply-threshold` of 5 s, and
//! other clients would get `BUSY` answers until it ends. A generation pointer that readers follow
//! would make the swap O(1), but cost every read and every batch an extra lookup; a rebuild is
//! rare.)
//! Listing the keys outside the script is safe: only the rebuild writes the shadow, and a live
//! key the shadow lacks can only appear through an event the shadow lacks, that is with a live
//! checkpoint beyond the shadow's, which the script refuses.
//!
//! A serving projection's batch computed before the swap cannot be applied after it: the apply
//! script also checks `{prefix}replaced:{name}`, which every swap increments. The checkpoint
//! alone would not do: a swap at the checkpoint the live read model already had leaves it
//! unchanged, but a cart folded from the value read before the swap must not overwrite the
//! rebuilt one. The refused batch is [`ProjectionError::CheckpointMoved`]; the runner reads on
//! from the new checkpoint. The checkpoints of Kafka partitions are found through the set
//! `{prefix}checkpoints:{name}`, to which the apply script adds the checkpoint it moves, so the
//! swap script sees every feed's checkpoint, even one that appeared a moment before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use eventstore::RecordedEvent;
use redis::aio::ConnectionManager;

use crate::cache::Cache;
use crate::rebuild::shadow::{ReplayRun, Swap};
use crate::runner::{Feed, Projection};
use crate::sql_models::CartRow;
use crate::{PopularityBatch, ProjectionError, popularity_of_batch};

/// Applies `ARGV[4..]` (groups of op, key, a, b) if the checkpoint `KEYS[1]` still holds
/// `ARGV[1]` and the replacement count `KEYS[2]` still holds `ARGV[3]`, then sets the checkpoint
/// to `ARGV[2]` and, when `KEYS[3]` is given, adds the checkpoint's key to that set of the
/// projection's feeds. Ops: `Z` ZINCRBY key b a; `S` SADD key a; `V` SET key a. Answers
/// `{1, new checkpoint}`, or `{0, stored checkpoint}` when it changed nothing.
const APPLY_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1]) or '0'
local replaced = redis.call('GET', KEYS[2]) or '0'
if current ~= ARGV[1] or replaced ~= ARGV[3] then return {0, current} end
local i = 4
while i + 3 <= #ARGV do
  local op, key, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'Z' then redis.call('ZINCRBY', key, b, a)
  elseif op == 'S' then redis.call('SADD', key, a)
  elseif op == 'V' then redis.call('SET', key, a) end
  i = i + 4
end
redis.call('SET', KEYS[1], ARGV[2])
if #KEYS >= 3 then redis.call('SADD', KEYS[3], KEYS[1]) end
return {1, ARGV[2]}
"#;

/// Puts the rebuilt read model `ARGV[3]` of the shadow prefix `ARGV[2]` in service under the live
/// prefix `ARGV[1]`, if the shadow's checkpoint is still `ARGV[4]` and no live checkpoint is
/// beyond it. `ARGV[5]` keys (names after the prefix) follow from `ARGV[6]`: each is renamed from
/// the shadow over the live one; the names after them are live keys the shadow lacks, deleted.
/// Then every live checkpoint of the projection is set to the shadow's, the replacement count is
/// incremented and the shadow's bookkeeping of the run is deleted. Nothing is written before every
/// check passed, so a refusal changes nothing. Checkpoints are compared as decimal texts (Lua's
/// numbers are doubles, positions can exceed 2^53). Answers `{outcome, detail}`: `swapped` and the
/// checkpoint, `behind` and the live checkpoint beyond it, `changed` and the shadow's checkpoint,
/// or `missing` and the shadow key that vanished.
const SWAP_SCRIPT: &str = r#"
local live, shadow, name = ARGV[1], ARGV[2], ARGV[3]
local function beyond(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local rebuilt = redis.call('GET', shadow .. 'checkpoint:' .. name) or '0'
if rebuilt ~= ARGV[4] then return {'changed', rebuilt} end
local feeds = redis.call('SMEMBERS', live .. 'checkpoints:' .. name)
table.insert(feeds, live .. 'checkpoint:' .. name)
for _, key in ipairs(feeds) do
  local at = redis.call('GET', key) or '0'
  if beyond(at, rebuilt) then return {'behind', at} end
end
local renamed = tonumber(ARGV[5])
for i = 6, 5 + renamed do
  if redis.call('EXISTS', shadow .. ARGV[i]) == 0 then return {'missing', ARGV[i]} end
end
for i = 6, 5 + renamed do
  redis.call('RENAME', shadow .. ARGV[i], live .. ARGV[i])
end
for i = 6 + renamed, #ARGV do
  redis.call('UNLINK', live .. ARGV[i])
end
for _, key in ipairs(feeds) do
  redis.call('SET', key, rebuilt)
end
redis.call('INCR', live .. 'replaced:' .. name)
redis.call('DEL', shadow .. 'checkpoint:' .. name, shadow .. 'run:' .. name,
  shadow .. 'checkpoints:' .. name, shadow .. 'replaced:' .. name)
return {'swapped', rebuilt}
"#;

/// How many keys one `MGET` asks for.
const MGET_KEYS: usize = 1_000;
/// How many keys one `SCAN` step looks at, and one `UNLINK` deletes.
const SCAN_KEYS: usize = 1_000;
/// What follows the live prefix in the names of the shadow's keys.
const SHADOW_INFIX: &str = "replay:";
/// The read models a replay rebuilds on Redis.
const REBUILT_ON_REDIS: &[&str] = &[RedisCartsProjection::NAME, RedisPopularityProjection::NAME];

/// The keys of one read model, by their names after the prefix.
#[derive(Clone, Copy, Debug)]
enum Family {
    /// One key.
    Key(&'static str),
    /// Every key whose name starts with this.
    Prefix(&'static str),
}

/// The keys read model `projection` keeps (besides its checkpoints).
fn families(projection: &str) -> Result<&'static [Family], ProjectionError> {
    match projection {
        RedisCartsProjection::NAME => Ok(&[Family::Prefix("cart:")]),
        RedisPopularityProjection::NAME => {
            Ok(&[Family::Key("popularity"), Family::Prefix("ordered:")])
        }
        other => Err(ProjectionError::Storage(format!(
            "{other} is not a read model kept in Redis (those are {})",
            REBUILT_ON_REDIS.join(", ")
        ))),
    }
}

/// `text` with the characters special to `SCAN MATCH` patterns escaped.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// The Redis side of the read models: connection and key names.
#[derive(Clone)]
pub struct RedisModels {
    connection: ConnectionManager,
    prefix: String,
    apply: redis::Script,
    swap: redis::Script,
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
            swap: redis::Script::new(SWAP_SCRIPT),
        }
    }

    /// Where a replay rebuilds these read models: the same key names under `{prefix}replay:`.
    pub fn shadow(&self) -> RedisModels {
        RedisModels {
            connection: self.connection.clone(),
            prefix: format!("{}{SHADOW_INFIX}", self.prefix),
            apply: self.apply.clone(),
            swap: self.swap.clone(),
        }
    }

    /// The prefix of every key of these read models.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn checkpoint_key(&self, name: &str) -> String {
        format!("{}checkpoint:{name}", self.prefix)
    }

    /// How many times a replay replaced read model `projection` (see the module documentation).
    fn replaced_key(&self, projection: &str) -> String {
        format!("{}replaced:{projection}", self.prefix)
    }

    /// The set of the checkpoint keys of `projection`'s feeds (the log, Kafka partitions).
    fn feeds_key(&self, projection: &str) -> String {
        format!("{}checkpoints:{projection}", self.prefix)
    }

    /// The record of a replay of `projection` (in the shadow's models).
    fn run_key(&self, projection: &str) -> String {
        format!("{}run:{projection}", self.prefix)
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

    /// The stored checkpoint of `projection`'s `feed` (and its count of replacements by a
    /// replay) and the events of `events` after it (another projector process may have applied
    /// part of the batch already). Replayed dead letters are all applied (they are behind their
    /// partition's checkpoint).
    async fn unapplied<'a>(
        &self,
        projection: &'static str,
        feed: &Feed,
        events: &'a [RecordedEvent],
    ) -> Result<Unapplied<'a>, ProjectionError> {
        let name = feed.checkpoint_name(projection).into_owned();
        let mut connection = self.connection.clone();
        // Read together: a swap between the two reads would pass unnoticed otherwise.
        let (checkpoint, replaced): (Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(self.checkpoint_key(&name))
            .arg(self.replaced_key(projection))
            .query_async(&mut connection)
            .await?;
        let checkpoint = checkpoint.unwrap_or_else(|| "0".to_owned());
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
            first: events.first().map_or(applied_up_to, |first| first.position),
            checkpoint,
            replaced: replaced.unwrap_or_else(|| "0".to_owned()),
            projection,
            feeds: (*feed != Feed::Replay).then(|| self.feeds_key(projection)),
            name,
        })
    }

    /// Runs the ops if the checkpoint is still the one `batch` was read at and no replay replaced
    /// the read model since, and moves the checkpoint past the batch; otherwise
    /// [`ProjectionError::CheckpointMoved`] (another projector process, or a replay, moved it).
    async fn apply_ops(
        &self,
        batch: &Unapplied<'_>,
        ops: Vec<[String; 4]>,
    ) -> Result<(), ProjectionError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.apply.key(self.checkpoint_key(&batch.name));
        invocation.key(self.replaced_key(batch.projection));
        if let Some(feeds) = &batch.feeds {
            invocation.key(feeds);
        }
        invocation
            .arg(&batch.checkpoint)
            .arg(batch.new_checkpoint.to_string())
            .arg(&batch.replaced);
        for op in ops {
            for part in op {
                invocation.arg(part);
            }
        }
        let (applied, stored): (i64, String) = invocation.invoke_async(&mut connection).await?;
        if applied == 1 {
            Ok(())
        } else {
            Err(ProjectionError::CheckpointMoved {
                name: batch.name.clone(),
                stored: stored.parse().unwrap_or(0),
                first: batch.first,
            })
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
    /// The products customer `customer_id` has ordered.
    pub async fn ordered_by(&self, customer_id: &str) -> Result<BTreeSet<String>, ProjectionError> {
        let mut connection = self.connection.clone();
        Ok(redis::cmd("SMEMBERS")
            .arg(self.ordered_key(customer_id))
            .query_async(&mut connection)
            .await?)
    }

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

    /// Every key whose name starts with `prefix` (a key name, not a pattern), listed with `SCAN`
    /// (so Redis keeps serving meanwhile), each once.
    async fn keys_starting_with(&self, prefix: &str) -> Result<Vec<String>, ProjectionError> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}*", glob_escape(prefix));
        let mut keys = BTreeSet::new();
        let mut cursor = 0_u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .cursor_arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_KEYS)
                .query_async(&mut connection)
                .await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// Deletes `keys` (`UNLINK`, in chunks). Answers how many existed.
    async fn unlink(&self, keys: &[String]) -> Result<u64, ProjectionError> {
        let mut connection = self.connection.clone();
        let mut deleted = 0;
        for chunk in keys.chunks(SCAN_KEYS) {
            let count: u64 = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut connection)
                .await?;
            deleted += count;
        }
        Ok(deleted)
    }

    /// The names (after the prefix) of the keys of read model `projection` these models hold.
    async fn model_keys(&self, projection: &str) -> Result<BTreeSet<String>, ProjectionError> {
        let mut connection = self.connection.clone();
        let mut names = BTreeSet::new();
        for family in families(projection)? {
            match family {
                Family::Key(name) => {
                    let exists: bool = redis::cmd("EXISTS")
                        .arg(format!("{}{name}", self.prefix))
                        .query_async(&mut connection)
                        .await?;
                    if exists {
                        names.insert((*name).to_owned());
                    }
                }
                Family::Prefix(start) => {
                    for key in self
                        .keys_starting_with(&format!("{}{start}", self.prefix))
                        .await?
                    {
                        if let Some(name) = key.strip_prefix(&self.prefix) {
                            names.insert(name.to_owned());
                        }
                    }
                }
            }
        }
        Ok(names)
    }

    /// The unfinished replay of read model `projection` (these being the models in service), if
    /// one was started: its record in the shadow.
    pub async fn replay_run(&self, projection: &str) -> Result<Option<ReplayRun>, ProjectionError> {
        families(projection)?;
        let mut connection = self.connection.clone();
        let (from_position, started_at): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.shadow().run_key(projection))
            .arg("from_position")
            .arg("started_at")
            .query_async(&mut connection)
            .await?;
        let (Some(from_position), Some(started_at)) = (from_position, started_at) else {
            return Ok(None);
        };
        Ok(Some(ReplayRun {
            projection: projection.to_owned(),
            from_position: from_position.parse().unwrap_or(0),
            generation: None,
            started_at,
        }))
    }

    /// Every unfinished replay of the read models kept in Redis, with the checkpoint its rebuilt
    /// read model reached.
    pub async fn replay_runs(&self) -> Result<Vec<(ReplayRun, u64)>, ProjectionError> {
        let shadow = self.shadow();
        let mut runs = Vec::new();
        for projection in REBUILT_ON_REDIS {
            if let Some(run) = self.replay_run(projection).await? {
                let at = shadow.checkpoint(projection).await?;
                runs.push((run, at));
            }
        }
        Ok(runs)
    }

    /// Starts the replay `run` of one read model kept in Redis (these being the models in
    /// service): drops what the shadow held of it, then records the run with the shadow's
    /// checkpoint at `run.from_position`. The record goes first and comes back last, so a
    /// rebuild interrupted in between is not taken for one that can resume.
    pub async fn start_replay(&self, run: &ReplayRun) -> Result<(), ProjectionError> {
        let projection = run.projection.as_str();
        families(projection)?;
        let shadow = self.shadow();
        let mut connection = self.connection.clone();
        redis::cmd("DEL")
            .arg(shadow.run_key(projection))
            .arg(shadow.checkpoint_key(projection))
            .query_async::<()>(&mut connection)
            .await?;
        let mut stale: Vec<String> = shadow
            .model_keys(projection)
            .await?
            .into_iter()
            .map(|name| format!("{}{name}", shadow.prefix))
            .collect();
        stale.push(shadow.feeds_key(projection));
        stale.push(shadow.replaced_key(projection));
        stale.extend(
            shadow
                .keys_starting_with(&format!("{}@", shadow.checkpoint_key(projection)))
                .await?,
        );
        shadow.unlink(&stale).await?;
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(shadow.checkpoint_key(projection))
            .arg(run.from_position.to_string())
            .ignore()
            .cmd("HSET")
            .arg(shadow.run_key(projection))
            .arg("from_position")
            .arg(run.from_position.to_string())
            .arg("started_at")
            .arg(&run.started_at)
            .ignore()
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    /// Puts the rebuilt read model `projection` of the shadow in service (these being the models
    /// in service), if the shadow's checkpoint is still `checkpoint` and no live checkpoint is
    /// beyond it: one Lua script renames the shadow's keys over the live ones, deletes the live
    /// keys the shadow lacks and moves every live checkpoint (see the module documentation).
    /// [`Swap::Behind`] when the live read model is ahead: catch up and try again.
    pub async fn swap_replay(
        &self,
        projection: &str,
        checkpoint: u64,
    ) -> Result<Swap, ProjectionError> {
        families(projection)?;
        let shadow = self.shadow();
        let mut connection = self.connection.clone();
        // The checkpoints of Kafka partitions written before the apply script recorded them.
        let partitions: Vec<String> = self
            .keys_starting_with(&format!("{}@", self.checkpoint_key(projection)))
            .await?
            .into_iter()
            .filter(|key| *key != self.checkpoint_key(&Feed::Replay.checkpoint_name(projection)))
            .collect();
        if !partitions.is_empty() {
            redis::cmd("SADD")
                .arg(self.feeds_key(projection))
                .arg(&partitions)
                .query_async::<()>(&mut connection)
                .await?;
        }
        let rebuilt = shadow.model_keys(projection).await?;
        let obsolete: Vec<String> = self
            .model_keys(projection)
            .await?
            .into_iter()
            .filter(|name| !rebuilt.contains(name))
            .collect();
        let mut invocation = self.swap.arg(&self.prefix);
        invocation
            .arg(&shadow.prefix)
            .arg(projection)
            .arg(checkpoint.to_string())
            .arg(rebuilt.len());
        for name in rebuilt.iter().chain(&obsolete) {
            invocation.arg(name);
        }
        let (outcome, detail): (String, String) = invocation.invoke_async(&mut connection).await?;
        match outcome.as_str() {
            "swapped" => {
                tracing::info!(
                    projection,
                    checkpoint,
                    keys = rebuilt.len(),
                    deleted = obsolete.len(),
                    "rebuilt read model in service on Redis"
                );
                Ok(Swap::Swapped)
            }
            "behind" => Ok(Swap::Behind(detail.parse().unwrap_or(u64::MAX))),
            "changed" => Err(ProjectionError::Storage(format!(
                "the rebuild of {projection} in Redis moved to position {detail} while it was \
                 swapped in at {checkpoint}: is another replay running? Run the replay again \
                 once it ended"
            ))),
            _ => Err(ProjectionError::Storage(format!(
                "the rebuilt key {}{detail} vanished while {projection} was swapped in (was \
                 `replay --discard` run meanwhile?); nothing was changed: run the replay again",
                shadow.prefix
            ))),
        }
    }

    /// Drops every unfinished replay of the read models kept in Redis (these being the models in
    /// service): the run records first, then every key of the shadow. True when there was one.
    pub async fn discard_replays(&self) -> Result<bool, ProjectionError> {
        let shadow = self.shadow();
        let runs: Vec<String> = REBUILT_ON_REDIS
            .iter()
            .map(|projection| shadow.run_key(projection))
            .collect();
        let had = shadow.unlink(&runs).await? > 0;
        let keys = self.keys_starting_with(&shadow.prefix).await?;
        let deleted = shadow.unlink(&keys).await?;
        Ok(had || deleted > 0)
    }
}

/// A batch as far as it is not applied yet: see [`RedisModels::unapplied`].
struct Unapplied<'a> {
    /// The projection and the name of the feed's checkpoint.
    projection: &'static str,
    name: String,
    /// The stored checkpoint, as text, that the script checks is unchanged.
    checkpoint: String,
    /// The stored count of replacements by a replay, as text, that the script checks too.
    replaced: String,
    /// The set the feed's checkpoint key belongs to (none for replayed dead letters, which are
    /// not a feed a swap moves).
    feeds: Option<String>,
    /// The position of the batch's first event.
    first: u64,
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
        let (batch, ops) = self.prepare(feed, events).await?;
        self.models.apply_ops(&batch, ops).await
    }
}

impl RedisCartsProjection {
    /// Reads what the batch needs and computes its changes; [`RedisModels::apply_ops`] then
    /// applies them unless the read model changed meanwhile.
    async fn prepare<'a>(
        &self,
        feed: &Feed,
        events: &'a [RecordedEvent],
    ) -> Result<(Unapplied<'a>, Vec<[String; 4]>), ProjectionError> {
        let batch = self.models.unapplied(Self::NAME, feed, events).await?;
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
        Ok((batch, ops))
    }
}

/// Popularity and what each customer ordered, on Redis.
#[derive(Debug)]
pub struct RedisPopularityProjection {
    models: RedisModels,
    /// The query cache, whose most popular products each batch drops.
    cache: Option<Arc<dyn Cache>>,
}

impl RedisPopularityProjection {
    pub const NAME: &'static str = "popularity";

    pub fn new(models: RedisModels, cache: Option<Arc<dyn Cache>>) -> Self {
        Self { models, cache }
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
        let (batch, ops) = self.prepare(feed, events).await?;
        let scored = ops.iter().filter(|op| op[0] == "Z").count();
        self.models.apply_ops(&batch, ops).await?;
        crate::sql_models::popular_changed(self.cache.as_ref(), scored).await;
        Ok(())
    }
}

impl RedisPopularityProjection {
    /// Reads what the batch needs and computes its changes; [`RedisModels::apply_ops`] then
    /// applies them unless the read model changed meanwhile.
    async fn prepare<'a>(
        &self,
        feed: &Feed,
        events: &'a [RecordedEvent],
    ) -> Result<(Unapplied<'a>, Vec<[String; 4]>), ProjectionError> {
        let batch = self.models.unapplied(Self::NAME, feed, events).await?;
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
        Ok((batch, ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::cart::CartItemAdded;
    use domain::{CartEvent, Money};
    use eventstore::EventMetadata;

    /// The line quantity `line_quantity` of product `product` in cart `cart`, at stream version
    /// `version` and global position `position`.
    fn cart_added(cart: &str, version: u64, position: u64, line_quantity: u32) -> RecordedEvent {
        let encoded = schemas::encode(&CartEvent::CartItemAdded(CartItemAdded {
            product_id: uuid::Uuid::from_u128(7),
            quantity: 1,
            line_quantity,
            unit_price: Money::from_minor(250),
        }))
        .unwrap();
        RecordedEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: encoded.event_type,
            schema_version: encoded.schema_version,
            stream_type: "cart".to_owned(),
            stream_id: cart.to_owned(),
            stream_version: version,
            position,
            occurred_at: chrono::Utc::now(),
            metadata: EventMetadata {
                correlation_id: "test".to_owned(),
                causation_id: "test".to_owned(),
                saga_id: None,
                actor: "test".to_owned(),
                source: "test".to_owned(),
                traceparent: None,
                tracestate: None,
            },
            payload: encoded.payload,
        }
    }

    async fn models(test_name: &str) -> Option<RedisModels> {
        let url = eventstore::testing::redis_url(test_name).await?;
        let client = redis::Client::open(url).unwrap();
        let connection = ConnectionManager::new(client).await.unwrap();
        let prefix = format!("mercato-test:{}:", uuid::Uuid::new_v4().simple());
        Some(RedisModels::new(connection, &prefix))
    }

    async fn drop_keys(models: &RedisModels) {
        let keys = models.keys_starting_with(&models.prefix).await.unwrap();
        models.unlink(&keys).await.unwrap();
    }

    /// A batch whose cart was read before a swap, applied after it, at the very checkpoint the
    /// swap left (the rebuilt read model was at the live one's checkpoint): the checkpoint alone
    /// would let the batch overwrite the rebuilt cart with one folded from the replaced value.
    #[tokio::test]
    async fn a_batch_computed_before_a_swap_is_refused_even_at_the_same_checkpoint() {
        let Some(live) = models("redis_batch_before_swap").await else {
            return;
        };
        let carts = RedisCartsProjection::new(live.clone());
        let first = cart_added("c1", 1, 10, 1);
        let second = cart_added("c1", 2, 20, 2);
        carts
            .apply(&Feed::Log, std::slice::from_ref(&first))
            .await
            .unwrap();

        // A rebuild at the same checkpoint, 10.
        let run = ReplayRun {
            projection: RedisCartsProjection::NAME.to_owned(),
            from_position: 0,
            generation: None,
            started_at: "now".to_owned(),
        };
        live.start_replay(&run).await.unwrap();
        RedisCartsProjection::new(live.shadow())
            .apply(&Feed::Log, std::slice::from_ref(&first))
            .await
            .unwrap();

        // A bug broke the cart in service; a batch reads it, then the rebuild is swapped in.
        let mut connection = live.connection.clone();
        let mut broken = live.cart("c1").await.unwrap().unwrap();
        broken.lines.insert(
            "ghost".to_owned(),
            crate::sql_models::CartLineRow {
                quantity: 999,
                unit_price_minor: 1,
            },
        );
        redis::cmd("SET")
            .arg(live.cart_key("c1"))
            .arg(serde_json::to_string(&broken).unwrap())
            .query_async::<()>(&mut connection)
            .await
            .unwrap();
        let batch = [second.clone()];
        let (prepared, ops) = carts.prepare(&Feed::Log, &batch).await.unwrap();
        assert!(ops[0][2].contains("ghost"), "folded from the broken cart");
        assert_eq!(
            live.swap_replay(RedisCartsProjection::NAME, 10)
                .await
                .unwrap(),
            Swap::Swapped
        );
        assert_eq!(live.checkpoint("carts").await.unwrap(), 10);
        let refused = live.apply_ops(&prepared, ops).await.unwrap_err();
        assert!(
            matches!(
                refused,
                ProjectionError::CheckpointMoved {
                    stored: 10,
                    first: 20,
                    ..
                }
            ),
            "{refused:?}"
        );
        let rebuilt = live.cart("c1").await.unwrap().unwrap();
        assert_eq!(rebuilt.lines.len(), 1, "{rebuilt:?}");
        assert!(
            rebuilt.lines.values().all(|line| line.quantity == 1),
            "{rebuilt:?}"
        );

        // Read again from the checkpoint, the batch applies on the rebuilt cart.
        carts.apply(&Feed::Log, &batch).await.unwrap();
        let cart = live.cart("c1").await.unwrap().unwrap();
        assert_eq!(cart.lines.len(), 1, "{cart:?}");
        assert!(
            cart.lines.values().all(|line| line.quantity == 2),
            "{cart:?}"
        );
        assert_eq!(cart.version, 2);
        assert_eq!(live.checkpoint("carts").await.unwrap(), 20);
        drop_keys(&live).await;
    }

    #[test]
    fn scan_patterns_match_the_prefix_literally() {
        assert_eq!(glob_escape("mercato:0123:"), "mercato:0123:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
