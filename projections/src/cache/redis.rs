//! The Redis cache: shared by every process of a scaled-out deployment.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::{Cache, Lookup, generation_in};

/// How long a Redis entry lives at most (entries of old generations expire by themselves).
const REDIS_TTL: Duration = Duration::from_secs(600);

/// Reads the epoch, a scope's generation and the entry under both in one round trip.
const LOOKUP_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[2]) or '0'
local generation = redis.call('GET', KEYS[1]) or '0'
local value = redis.call('GET', ARGV[1] .. epoch .. '.' .. generation .. ':' .. ARGV[2])
return {epoch, generation, value}
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
    /// Runs an invalidation: a lost one would leave stale entries readable, so it is retried
    /// until it goes through.
    async fn run_until_done(&self, pipeline: &redis::Pipeline) {
        let mut connection = self.connection.clone();
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

    /// The cache on a Redis connection; keys start with `prefix` (so that tests and deployments
    /// can share a server).
    pub fn new(connection: ConnectionManager, prefix: &str) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            lookup: redis::Script::new(LOOKUP_SCRIPT),
        }
    }

    fn epoch_key(&self) -> String {
        format!("{}epoch", self.prefix)
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
        let result: Result<(String, String, Option<String>), _> = self
            .lookup
            .key(self.generation_key(scope))
            .key(self.epoch_key())
            .arg(self.entry_prefix(scope))
            .arg(key)
            .invoke_async(&mut connection)
            .await;
        match result {
            Ok((epoch, generation, value)) => Lookup {
                generation: generation_in(
                    epoch.parse().unwrap_or(0),
                    generation.parse().unwrap_or(0),
                ),
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
        let (epoch, scope_generation) = (generation >> 40, generation & ((1 << 40) - 1));
        let entry = format!(
            "{}{epoch}.{scope_generation}:{key}",
            self.entry_prefix(scope)
        );
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
        let mut pipeline = redis::pipe();
        for scope in scopes {
            pipeline
                .cmd("INCR")
                .arg(self.generation_key(scope))
                .ignore();
        }
        self.run_until_done(&pipeline).await;
    }

    async fn invalidate_all(&self) {
        let mut pipeline = redis::pipe();
        pipeline.cmd("INCR").arg(self.epoch_key()).ignore();
        self.run_until_done(&pipeline).await;
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
