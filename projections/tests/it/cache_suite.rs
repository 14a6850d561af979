//! The cache port's behaviour suite: every case runs against the in-process cache and the Redis
//! cache (skipped loudly without `REDIS_URL`, a failure with `MERCATO_REQUIRE_SERVICES=1`).

use std::sync::Arc;

use projections::cache::{Cache, MemoryCache, RedisCache};

/// Declares each case once per adapter: `memory::<case>` and `redis::<case>`.
macro_rules! cache_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::cases::$case(super::memory_cache()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let test_name = concat!("cache_suite::redis::", stringify!($case));
                    let Some(cache) = super::redis_cache(test_name).await else {
                        return;
                    };
                    super::cases::$case(cache).await;
                }
            )*
        }
    };
}

cache_suite!(
    a_lookup_before_anything_is_stored_misses_at_the_scopes_generation,
    a_value_stored_under_the_current_generation_is_served,
    a_value_read_before_an_invalidation_is_never_served_after_it,
    an_invalidation_drops_only_the_scopes_it_names,
    invalidating_everything_drops_every_scope_and_what_was_read_before_it,
    keys_of_one_scope_are_kept_apart,
    the_cache_answers_its_ping_and_names_its_kind,
);

fn memory_cache() -> Arc<dyn Cache> {
    Arc::new(MemoryCache::new(1 << 20))
}

/// A Redis cache under a key prefix of the test's own, or `None` when the test must be skipped.
async fn redis_cache(test_name: &str) -> Option<Arc<dyn Cache>> {
    let url = eventstore::testing::redis_url(test_name).await?;
    let client = ::redis::Client::open(url).expect("a Redis URL");
    let connection = ::redis::aio::ConnectionManager::new(client)
        .await
        .expect("connect to Redis");
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    Some(Arc::new(RedisCache::new(connection, &prefix)))
}

mod cases {
    use std::sync::Arc;

    use projections::cache::Cache;

    pub async fn a_lookup_before_anything_is_stored_misses_at_the_scopes_generation(
        cache: Arc<dyn Cache>,
    ) {
        let lookup = cache.lookup("product:1", "p").await;
        assert_eq!(lookup.value, None);
        assert_eq!(
            cache.lookup("product:1", "p").await.generation,
            lookup.generation
        );
    }

    pub async fn a_value_stored_under_the_current_generation_is_served(cache: Arc<dyn Cache>) {
        let lookup = cache.lookup("search", "q=lamp").await;
        cache
            .store("search", lookup.generation, "q=lamp", r#"{"total":1}"#)
            .await;
        let again = cache.lookup("search", "q=lamp").await;
        assert_eq!(again.value.as_deref(), Some(r#"{"total":1}"#));
        assert_eq!(again.generation, lookup.generation);
    }

    pub async fn a_value_read_before_an_invalidation_is_never_served_after_it(
        cache: Arc<dyn Cache>,
    ) {
        let before = cache.lookup("product:1", "p").await;
        // The projection commits a change and invalidates while a reader still holds old data.
        cache.invalidate(&["product:1".to_owned()]).await;
        cache
            .store("product:1", before.generation, "p", "old")
            .await;
        assert_eq!(cache.lookup("product:1", "p").await.value, None);
        // A reader after the invalidation caches what it read.
        let after = cache.lookup("product:1", "p").await;
        assert_ne!(after.generation, before.generation);
        cache.store("product:1", after.generation, "p", "new").await;
        assert_eq!(
            cache.lookup("product:1", "p").await.value.as_deref(),
            Some("new")
        );
        cache.invalidate(&["product:1".to_owned()]).await;
        assert_eq!(cache.lookup("product:1", "p").await.value, None);
    }

    pub async fn an_invalidation_drops_only_the_scopes_it_names(cache: Arc<dyn Cache>) {
        for scope in ["product:1", "product:2", "search"] {
            let generation = cache.lookup(scope, "k").await.generation;
            cache.store(scope, generation, "k", scope).await;
        }
        cache
            .invalidate(&["product:1".to_owned(), "search".to_owned()])
            .await;
        assert_eq!(cache.lookup("product:1", "k").await.value, None);
        assert_eq!(cache.lookup("search", "k").await.value, None);
        assert_eq!(
            cache.lookup("product:2", "k").await.value.as_deref(),
            Some("product:2")
        );
    }

    pub async fn invalidating_everything_drops_every_scope_and_what_was_read_before_it(
        cache: Arc<dyn Cache>,
    ) {
        let mut before = Vec::new();
        for scope in ["product:1", "product:2", "search"] {
            let generation = cache.lookup(scope, "k").await.generation;
            cache.store(scope, generation, "k", scope).await;
            before.push((scope, generation));
        }
        // A read model swapped in as a whole, while a reader still holds what it read before.
        let stale = cache.lookup("product:3", "k").await;
        cache.invalidate_all().await;
        cache.store("product:3", stale.generation, "k", "old").await;
        for (scope, generation) in &before {
            let lookup = cache.lookup(scope, "k").await;
            assert_eq!(lookup.value, None, "{scope}");
            assert_ne!(lookup.generation, *generation, "{scope}");
            // Storing under the generation of before the swap is ignored.
            cache.store(scope, *generation, "k", "old").await;
            assert_eq!(cache.lookup(scope, "k").await.value, None, "{scope}");
        }
        assert_eq!(cache.lookup("product:3", "k").await.value, None);
        // After it, the cache works as before: per scope.
        let after = cache.lookup("search", "k").await;
        cache.store("search", after.generation, "k", "new").await;
        assert_eq!(
            cache.lookup("search", "k").await.value.as_deref(),
            Some("new")
        );
        cache.invalidate(&["product:1".to_owned()]).await;
        assert_eq!(
            cache.lookup("search", "k").await.value.as_deref(),
            Some("new")
        );
    }

    pub async fn keys_of_one_scope_are_kept_apart(cache: Arc<dyn Cache>) {
        let generation = cache.lookup("search", "q=a").await.generation;
        cache.store("search", generation, "q=a", "a").await;
        cache.store("search", generation, "q=b", "b").await;
        assert_eq!(
            cache.lookup("search", "q=a").await.value.as_deref(),
            Some("a")
        );
        assert_eq!(
            cache.lookup("search", "q=b").await.value.as_deref(),
            Some("b")
        );
        assert_eq!(cache.lookup("search", "q=c").await.value, None);
    }

    pub async fn the_cache_answers_its_ping_and_names_its_kind(cache: Arc<dyn Cache>) {
        assert_eq!(cache.ping().await, Ok(()));
        assert!(
            ["memory", "redis"].contains(&cache.kind()),
            "{}",
            cache.kind()
        );
    }
}
