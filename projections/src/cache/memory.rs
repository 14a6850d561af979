//! The in-process cache: for one process that runs both the projections and the query API.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Cache, Lookup, generation_in};

/// The in-process cache: for one process that runs both the projections and the query API.
#[derive(Debug)]
pub struct MemoryCache {
    state: Mutex<MemoryState>,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct MemoryState {
    /// Moved on by [`Cache::invalidate_all`]; part of every generation.
    epoch: u64,
    generations: HashMap<String, u64>,
    /// `(scope, key)` to `(generation, value)`.
    entries: HashMap<(String, String), (u64, String)>,
    /// The text held by `entries` (scopes, keys and values), in bytes.
    bytes: usize,
}

impl MemoryState {
    fn generation(&self, scope: &str) -> u64 {
        generation_in(
            self.epoch,
            self.generations.get(scope).copied().unwrap_or(0),
        )
    }
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
        let generation = state.generation(scope);
        let value = state
            .entries
            .get(&(scope.to_owned(), key.to_owned()))
            .filter(|(stored_generation, _)| *stored_generation == generation)
            .map(|(_, value)| value.clone());
        Lookup { generation, value }
    }

    async fn store(&self, scope: &str, generation: u64, key: &str, value: &str) {
        let mut state = self.state();
        if state.generation(scope) != generation {
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

    async fn invalidate_all(&self) {
        let mut state = self.state();
        state.epoch += 1;
        state.entries.clear();
        state.entries.shrink_to(0);
        state.bytes = 0;
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
