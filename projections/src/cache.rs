//! The query cache: product reads and search results, in process or in Redis.
//!
//! Entries are kept per *scope* (one product, or all searches) under the scope's current
//! *generation*. A projection that changed a scope's data bumps its generation after its commit,
//! so entries stored under the old generation are never read again. A reader takes the
//! generation **before** it reads the read model and stores what it read under that generation:
//! if the read model moved on meanwhile, the generation moved too and the entry is unreachable.
//! So an answer is never served stale after the read model passed the change. Failures of the
//! cache are logged and count as misses: the cache can slow answers down, never break them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

/// The scope of every search answer: any product change can change any search.
pub const SEARCH_SCOPE: &str = "search";

/// A scope's generation and, if cached, the value under it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lookup {
    pub generation: u64,
    pub value: Option<String>,
}

/// The cache port.
#[async_trait]
pub trait Cache: Send + Sync + fmt::Debug {
    /// The scope's generation and the value of `key` under it.
    async fn lookup(&self, scope: &str, key: &str) -> Lookup;
    /// Stores `value` for `key` under `generation` of `scope`.
    async fn store(&self, scope: &str, generation: u64, key: &str, value: &str);
    /// Bumps the generation of each scope: what was cached for them is gone.
    async fn invalidate(&self, scopes: &[String]);
    /// Which adapter this is (`memory` or `redis`).
    fn kind(&self) -> &'static str;
    /// Checks the cache answers (for readiness).
    async fn ping(&self) -> Result<(), String>;
}

/// The in-process cache: for one process that runs both the projections and the query API.
#[derive(Debug)]
pub struct MemoryCache {
    state: Mutex<MemoryState>,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct MemoryState {
    generations: HashMap<String, u64>,
    /// `(scope, key)` to `(generation, value)`.
    entries: HashMap<(String, String), (u64, String)>,
    /// The text held by `entries` (scopes, keys and values), in bytes.
    bytes: usize,
}

/// What one entry costs besides its text: the map's bucket and the three strings' headers.
const ENTRY_OVERHEAD: usize = 96;

impl MemoryCache {
    /// A cache holding at most about `max_bytes` of entries (all are dropped when it is full:
    /// entries are cheap to rebuild, and this bounds memory without bookkeeping per read).
    /// Bounded by bytes, not entries: search answers are kilobytes, product answers hundreds of
    /// bytes.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(MemoryState::default()),
            max_bytes: max_bytes.max(1),
        }
    }

    /// The bytes the entries hold now.
    pub fn used_bytes(&self) -> usize {
        self.state().bytes
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn lookup(&self, scope: &str, key: &str) -> Lookup {
        let state = self.state();
        let generation = state.generations.get(scope).copied().unwrap_or(0);
        let value = state
            .entries
            .get(&(scope.to_owned(), key.to_owned()))
            .filter(|(stored_generation, _)| *stored_generation == generation)
            .map(|(_, value)| value.clone());
        Lookup { generation, value }
    }

    async fn store(&self, scope: &str, generation: u64, key: &str, value: &str) {
        let mut state = self.state();
        if state.generations.get(scope).copied().unwrap_or(0) != generation {
            return; // the read model moved on while this value was read
        }
        let size = scope.len() + key.len() + value.len() + ENTRY_OVERHEAD;
        if state.bytes + size > self.max_bytes {
            state.entries.clear();
            state.entries.shrink_to(0);
            state.bytes = 0;
        }
        if let Some((_, replaced)) = state.entries.insert(
            (scope.to_owned(), key.to_owned()),
            (generation, value.to_owned()),
        ) {
            state.bytes -= scope.len() + key.len() + replaced.len() + ENTRY_OVERHEAD;
        }
        state.bytes += size;
    }

    async fn invalidate(&self, scopes: &[String]) {
        let mut state = self.state();
        for scope in scopes {
            *state.generations.entry(scope.clone()).or_insert(0) += 1;
        }
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
}

/// How long a Redis entry lives at most (entries of old generations expire by themselves).
const REDIS_TTL: Duration = Duration::from_secs(600);

/// Reads a scope's generation and the entry under it in one round trip.
const LOOKUP_SCRIPT: &str = r#"
local generation = redis.call('GET', KEYS[1]) or '0'
local value = redis.call('GET', ARGV[1] .. generation .. ':' .. ARGV[2])
return {generation, value}
"#;

/// The Redis cache: shared by every process of a scaled-out deployment.
#[derive(Clone)]
pub struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
    lookup: redis::Script,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// The cache on a Redis connection; keys start with `prefix` (so that tests and deployments
    /// can share a server).
    pub fn new(connection: ConnectionManager, prefix: &str) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            lookup: redis::Script::new(LOOKUP_SCRIPT),
        }
    }

    fn generation_key(&self, scope: &str) -> String {
        format!("{}gen:{scope}", self.prefix)
    }

    fn entry_prefix(&self, scope: &str) -> String {
        format!("{}cache:{scope}:", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn lookup(&self, scope: &str, key: &str) -> Lookup {
        let mut connection = self.connection.clone();
        let result: Result<(String, Option<String>), _> = self
            .lookup
            .key(self.generation_key(scope))
            .arg(self.entry_prefix(scope))
            .arg(key)
            .invoke_async(&mut connection)
            .await;
        match result {
            Ok((generation, value)) => Lookup {
                generation: generation.parse().unwrap_or(0),
                value,
            },
            Err(error) => {
                tracing::warn!(%error, scope, "cache lookup failed; answering from the read model");
                // A generation no reader stores under, so nothing is cached from this read.
                Lookup {
                    generation: u64::MAX,
                    value: None,
                }
            }
        }
    }

    async fn store(&self, scope: &str, generation: u64, key: &str, value: &str) {
        if generation == u64::MAX {
            return;
        }
        let mut connection = self.connection.clone();
        let entry = format!("{}{generation}:{key}", self.entry_prefix(scope));
        let result: Result<(), _> = redis::cmd("SET")
            .arg(&entry)
            .arg(value)
            .arg("EX")
            .arg(REDIS_TTL.as_secs())
            .query_async(&mut connection)
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, scope, "cache store failed");
        }
    }

    async fn invalidate(&self, scopes: &[String]) {
        if scopes.is_empty() {
            return;
        }
        let mut connection = self.connection.clone();
        let mut pipeline = redis::pipe();
        for scope in scopes {
            pipeline
                .cmd("INCR")
                .arg(self.generation_key(scope))
                .ignore();
        }
        // A lost invalidation would leave stale entries readable: retry until it goes through.
        let mut wait = Duration::from_millis(20);
        loop {
            match pipeline.query_async::<()>(&mut connection).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "cache invalidation failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_value_read_before_an_invalidation_is_never_served_after_it() {
        let cache = MemoryCache::new(1 << 20);
        let before = cache.lookup("product:1", "p").await;
        assert_eq!(before.value, None);
        // The projection commits a change and invalidates while a reader still holds old data.
        cache.invalidate(&["product:1".to_owned()]).await;
        cache
            .store("product:1", before.generation, "p", "old")
            .await;
        assert_eq!(cache.lookup("product:1", "p").await.value, None);
        // A reader after the invalidation caches what it read.
        let after = cache.lookup("product:1", "p").await;
        cache.store("product:1", after.generation, "p", "new").await;
        assert_eq!(
            cache.lookup("product:1", "p").await.value.as_deref(),
            Some("new")
        );
        cache.invalidate(&["product:1".to_owned()]).await;
        assert_eq!(cache.lookup("product:1", "p").await.value, None);
    }

    #[tokio::test]
    async fn the_memory_cache_holds_at_most_its_bytes() {
        let cache = MemoryCache::new(10_000);
        let value = "x".repeat(1_000);
        for key in 0..100 {
            let generation = cache.lookup("search", &key.to_string()).await.generation;
            cache
                .store("search", generation, &key.to_string(), &value)
                .await;
            assert!(
                cache.used_bytes() <= 10_000,
                "{} bytes held",
                cache.used_bytes()
            );
        }
        // The last value stored is served; storing a key again does not count it twice.
        assert_eq!(
            cache.lookup("search", "99").await.value.as_deref(),
            Some(value.as_str())
        );
        let before = cache.used_bytes();
        cache.store("search", 0, "99", &value).await;
        assert_eq!(cache.used_bytes(), before);
    }
}
