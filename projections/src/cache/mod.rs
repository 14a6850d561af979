//! The query cache: product reads and search results, in process or in Redis.
//!
//! Entries are kept per *scope* (one product, or all searches) under the scope's current
//! *generation*. A projection that changed a scope's data bumps its generation after its commit,
//! so entries stored under the old generation are never read again. A reader takes the
//! generation **before** it reads the read model and stores what it read under that generation:
//! if the read model moved on meanwhile, the generation moved too and the entry is unreachable.
//! So an answer is never served stale after the read model passed the change. A read model
//! replaced as a whole (a rebuild swapped in) changes every scope at once: the cache's *epoch*
//! is part of every generation, and [`Cache::invalidate_all`] moves it on. Failures of the
//! cache are logged and count as misses: the cache can slow answers down, never break them.

mod memory;
mod redis;

use std::fmt;

use async_trait::async_trait;

pub use memory::MemoryCache;
pub use redis::RedisCache;

/// The scope of every search answer: any product change can change any search.
pub const SEARCH_SCOPE: &str = "search";

/// The scope of answers about the catalogue as a whole (its categories and their counts): the
/// products projection drops it with every batch that changes a product.
pub const CATALOGUE_SCOPE: &str = "catalogue";

/// The scope of the most popular products (recommendations for no one in particular): the
/// popularity projection drops it with every batch that scores a product, the products
/// projection with every batch that changes one (a name).
pub const POPULAR_SCOPE: &str = "popular";

/// A scope's generation within an epoch, as one number: the epoch in the high bits. A scope is
/// invalidated far fewer than 2^40 times in an epoch.
fn generation_in(epoch: u64, scope_generation: u64) -> u64 {
    (epoch << 40) | (scope_generation & ((1 << 40) - 1))
}

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
    /// Moves the epoch on: everything cached, in every scope, is gone (a read model was
    /// replaced as a whole).
    async fn invalidate_all(&self);
    /// Which adapter this is (`memory` or `redis`).
    fn kind(&self) -> &'static str;
    /// Checks the cache answers (for readiness).
    async fn ping(&self) -> Result<(), String>;
}
