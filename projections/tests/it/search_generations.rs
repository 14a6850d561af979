//! Swapping a rebuilt generation of the embedded search index into service while a projection
//! fed from Kafka partitions keeps applying: the rebuilt generation takes over the partitions'
//! checkpoints, so a redelivered message is applied once, and a swap waits for a batch in flight.

use std::sync::Arc;
use std::time::Duration;

use domain::ProductViewEvent;
use domain::views::ProductViewed;
use eventstore::RecordedEvent;
use projections::search::{GenerationSwap, SearchIndex, SearchQuery, TantivySearch};
use projections::{Feed, Projection, ProjectionError, apply_new};

use crate::support::opensearch_script as script;

use script::{lamp, lamp_id, recorded};

fn viewed(position: u64) -> RecordedEvent {
    let event = ProductViewEvent::ProductViewed(ProductViewed {
        product_id: lamp_id().parse().unwrap(),
        customer_id: None,
    });
    recorded(
        schemas::encode(&event).unwrap(),
        domain::VIEWS_STREAM_TYPE,
        format!("view-{position}"),
        1,
        position,
    )
}

/// The lamp at position 1, then one view of it at each position 2 to 8.
fn history() -> Vec<RecordedEvent> {
    std::iter::once(lamp(1, 1))
        .chain((2..=8).map(viewed))
        .collect()
}

fn partition(topic: &str, partition: i32) -> Feed {
    Feed::Partition {
        topic: topic.to_owned(),
        partition,
    }
}

async fn lamp_popularity(search: &Arc<TantivySearch>) -> i64 {
    let found = search
        .search(&SearchQuery {
            text: "lamp".to_owned(),
            limit: 10,
            ..SearchQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(found.total, 1, "{found:?}");
    found.hits[0].popularity
}

#[tokio::test]
async fn a_rebuilt_generation_takes_over_the_kafka_partitions_checkpoints() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().join("search");
    let events = history();
    let products = partition("products.events", 0);
    let views = partition("product_views.events", 1);

    // In service, fed from Kafka: the lamp on one partition, its views on another.
    let live = Arc::new(TantivySearch::open(&root, None).unwrap());
    assert_eq!(apply_new(&live, &products, &events[..1]).await.unwrap(), 1);
    assert_eq!(apply_new(&live, &views, &events[1..5]).await.unwrap(), 4);

    // Rebuilt from the log up to position 5.
    let rebuilt = Arc::new(TantivySearch::open_generation(&root, "gen-rebuilt").unwrap());
    assert_eq!(
        apply_new(&rebuilt, &Feed::Log, &events[..5]).await.unwrap(),
        5
    );

    // The views' partition moved on to 6 in service: the rebuild must catch up first.
    assert_eq!(apply_new(&live, &views, &events[5..6]).await.unwrap(), 1);
    assert_eq!(rebuilt.swap_in().unwrap(), GenerationSwap::Behind(6));
    assert_eq!(
        TantivySearch::current_generation(&root),
        ".",
        "a refused swap changes nothing"
    );
    assert_eq!(
        apply_new(&rebuilt, &Feed::Log, &events[..6]).await.unwrap(),
        1
    );
    let GenerationSwap::Swapped { previous, position } = rebuilt.swap_in().unwrap() else {
        panic!("not swapped");
    };
    assert_eq!((previous.as_str(), position), (".", 6));
    assert_eq!(TantivySearch::current_generation(&root), "gen-rebuilt");

    // After a rebalance the views' partition is delivered again from 4: the batch read before
    // the swap is refused, then only position 7 is new.
    let redelivered = &events[3..7];
    let refused = apply_new(&live, &views, redelivered).await;
    assert!(
        matches!(refused, Err(ProjectionError::CheckpointMoved { .. })),
        "{refused:?}"
    );
    assert_eq!(apply_new(&live, &views, redelivered).await.unwrap(), 1);
    assert_eq!(apply_new(&live, &products, &events[..1]).await.unwrap(), 0);
    assert_eq!(live.checkpoint(&products).await.unwrap(), 6);
    assert_eq!(live.checkpoint(&views).await.unwrap(), 7);
    assert_eq!(live.checkpoint(&Feed::Log).await.unwrap(), 6);
    // Six views, each counted once.
    assert_eq!(lamp_popularity(&live).await, 6);
    assert_eq!(apply_new(&live, &views, &events[7..]).await.unwrap(), 1);
    assert_eq!(lamp_popularity(&live).await, 7);
    assert!(
        !root.join("meta.json").exists(),
        "the generation that left service is deleted by the writer that left it"
    );
}

#[tokio::test]
async fn a_log_fed_generation_in_service_ahead_of_the_rebuild_does_not_hold_the_swap_back() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().join("search");
    let events = history();
    let live = Arc::new(TantivySearch::open(&root, None).unwrap());
    assert_eq!(apply_new(&live, &Feed::Log, &events).await.unwrap(), 8);
    let rebuilt = Arc::new(TantivySearch::open_generation(&root, "gen-rebuilt").unwrap());
    assert_eq!(
        apply_new(&rebuilt, &Feed::Log, &events[..4]).await.unwrap(),
        4
    );
    assert!(matches!(
        rebuilt.swap_in().unwrap(),
        GenerationSwap::Swapped { position: 4, .. }
    ));
    // The projection in service reads on from the rebuilt generation's position.
    let refused = apply_new(&live, &Feed::Log, &events[4..]).await;
    assert!(
        matches!(refused, Err(ProjectionError::CheckpointMoved { .. })),
        "{refused:?}"
    );
    assert_eq!(live.checkpoint(&Feed::Log).await.unwrap(), 4);
    assert_eq!(apply_new(&live, &Feed::Log, &events[4..]).await.unwrap(), 4);
    assert_eq!(lamp_popularity(&live).await, 7);
}

#[test]
fn a_swap_waits_for_the_batch_in_flight() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().join("search");
    let rebuilt = TantivySearch::open_generation(&root, "gen-rebuilt").unwrap();
    rebuilt.start_at(3).unwrap();

    // A batch being applied holds the fence shared, as `TantivySearch` does while it applies.
    let fence = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("CURRENT.lock"))
        .unwrap();
    fs4::fs_std::FileExt::lock_shared(&fence).unwrap();
    let swap = std::thread::spawn(move || rebuilt.swap_in().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!swap.is_finished(), "the swap did not wait for the batch");
    assert_eq!(TantivySearch::current_generation(&root), ".");

    drop(fence);
    assert!(matches!(
        swap.join().unwrap(),
        GenerationSwap::Swapped { position: 3, .. }
    ));
    assert_eq!(TantivySearch::current_generation(&root), "gen-rebuilt");
}

/// A process that only reads the index (a query-api beside the projector) goes on answering when
/// a swap put a rebuilt generation in service and the writer deleted the one it read, before
/// its own periodic look at which generation is in service; what it cached from the old
/// generation is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_a_generation_deleted_by_a_swap_reads_the_one_in_service() {
    use projections::cache::{Cache, MemoryCache, SEARCH_SCOPE};

    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().join("search");
    let events = history();
    let live = Arc::new(TantivySearch::open(&root, None).unwrap());
    apply_new(&live, &Feed::Log, &events[..1]).await.unwrap();
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(1 << 20));
    let reader = Arc::new(TantivySearch::open_read_only(&root, Some(cache.clone())).unwrap());
    assert_eq!(lamp_popularity(&reader).await, 0);
    let before = cache.lookup(SEARCH_SCOPE, "k").await.generation;

    // The projector stops; a replay swaps a rebuilt generation in and deletes the one left.
    drop(live);
    let rebuilt = Arc::new(TantivySearch::open_generation(&root, "gen-rebuilt").unwrap());
    apply_new(&rebuilt, &Feed::Log, &events).await.unwrap();
    let GenerationSwap::Swapped { previous, .. } = rebuilt.swap_in().unwrap() else {
        panic!("not swapped");
    };
    drop(rebuilt);
    assert!(TantivySearch::remove_generation_if_unused(&root, &previous));
    assert!(!root.join("meta.json").exists());

    // At once, before the reader's own look at CURRENT is due.
    assert_eq!(lamp_popularity(&reader).await, 7);
    let mut moved = false;
    for _ in 0..100 {
        if cache.lookup(SEARCH_SCOPE, "k").await.generation != before {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        moved,
        "the answers cached from the old generation were not dropped"
    );
}

/// A process that only reads the index (a query-api beside a projector fed from Kafka) sees
/// each commit the projector makes, though the log's checkpoint stays 0 beside the partitions'.
#[tokio::test]
async fn a_reader_sees_the_commits_of_a_projector_fed_from_kafka() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().join("search");
    let events = history();
    let live = Arc::new(TantivySearch::open(&root, None).unwrap());
    let reader = Arc::new(TantivySearch::open_read_only(&root, None).unwrap());
    let empty = reader
        .search(&SearchQuery {
            text: "lamp".to_owned(),
            limit: 10,
            ..SearchQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(empty.total, 0);

    apply_new(&live, &partition("product.events", 0), &events[..1])
        .await
        .unwrap();
    assert_eq!(lamp_popularity(&reader).await, 0);
    apply_new(&live, &partition("product_views.events", 1), &events[1..4])
        .await
        .unwrap();
    assert_eq!(lamp_popularity(&reader).await, 3);
}

/// A batch that changes no product (an account's login, a cart) keeps every cached search: only
/// a batch that changes a product's document drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_no_product_keeps_the_cached_searches() {
    use projections::cache::{Cache, MemoryCache, SEARCH_SCOPE};

    let directory = tempfile::tempdir().unwrap();
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(1 << 20));
    let search = Arc::new(
        TantivySearch::open(&directory.path().join("search"), Some(cache.clone())).unwrap(),
    );
    apply_new(&search, &Feed::Log, &[lamp(1, 1)]).await.unwrap();
    let lookup = cache.lookup(SEARCH_SCOPE, "lamps").await;
    cache
        .store(SEARCH_SCOPE, lookup.generation, "lamps", "{\"total\":1}")
        .await;
    let login = domain::UserEvent::UserLoggedIn(domain::user::UserLoggedIn {
        user_id: uuid::Uuid::from_u128(1),
        method: "password".to_owned(),
    });
    let logged_in = recorded(
        schemas::encode(&login).unwrap(),
        domain::user::USER_STREAM_TYPE,
        uuid::Uuid::from_u128(1).to_string(),
        2,
        2,
    );
    apply_new(&search, &Feed::Log, &[logged_in]).await.unwrap();
    assert_eq!(
        cache.lookup(SEARCH_SCOPE, "lamps").await.value.as_deref(),
        Some("{\"total\":1}"),
        "a login dropped the cached searches"
    );
    apply_new(&search, &Feed::Log, &[viewed(3)]).await.unwrap();
    assert_eq!(
        cache.lookup(SEARCH_SCOPE, "lamps").await.value,
        None,
        "a change of a product's popularity keeps a stale answer"
    );
}
