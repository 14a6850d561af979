//! The search port's behaviour suite: every case indexes products through the adapter's
//! projection (as the server does) and asks through `SearchIndex`, against the embedded Tantivy
//! index, the OpenSearch adapter talking to an in-memory stand-in of a cluster
//! (`support::fake_opensearch`), and, when `OPENSEARCH_URL` is set, a real cluster (under an
//! alias of the test's own; skipped otherwise).

use std::sync::Arc;

use eventstore::RecordedEvent;
use projections::readdb::ReadDb;
use projections::search::opensearch::{OpenSearchIndex, OpenSearchProjection};
use projections::search::{SearchIndex, TantivySearch};
use projections::{Feed, Projection, apply_new};
use tempfile::TempDir;

/// Declares each case once per adapter: `tantivy::<case>`, `opensearch::<case>` (the stand-in)
/// and `live_opensearch::<case>`.
macro_rules! search_suite {
    ($($case:ident),* $(,)?) => {
        mod tantivy {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(&super::Adapter::tantivy()).await;
                }
            )*
        }
        mod opensearch {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let url = crate::support::fake_opensearch::start().await;
                    super::cases::$case(&super::Adapter::opensearch(&url).await).await;
                }
            )*
        }
        mod live_opensearch {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(url) = crate::support::opensearch_script::live_url() else {
                        eventstore::testing::skip(
                            concat!("search_suite::live_opensearch::", stringify!($case)),
                            "OPENSEARCH_URL is not set (the live OpenSearch/Elasticsearch test)",
                        );
                        return;
                    };
                    let adapter = super::Adapter::opensearch(&url).await;
                    let index = adapter.opensearch.clone().expect("an OpenSearch adapter");
                    // The indices the case made are deleted whatever its outcome.
                    crate::support::opensearch_script::run_live_scenario(&url, &index, async move {
                        super::cases::$case(&adapter).await;
                    })
                    .await;
                }
            )*
        }
    };
}

search_suite!(
    every_word_must_match_the_name_or_the_description,
    words_match_whatever_their_case,
    the_category_filter_is_exact_and_ignores_case,
    the_price_range_includes_both_bounds,
    products_equally_relevant_are_ordered_by_popularity,
    pages_come_with_the_exact_total,
    a_hit_is_the_whole_product_at_its_newest_version,
);

/// A search adapter with its projection, on data of the test's own.
pub struct Adapter {
    projection: Arc<dyn Projection>,
    index: Arc<dyn SearchIndex>,
    /// The OpenSearch index, for the OpenSearch adapter.
    opensearch: Option<OpenSearchIndex>,
    _dir: TempDir,
}

impl Adapter {
    fn tantivy() -> Adapter {
        let dir = TempDir::new().expect("temporary directory");
        let search =
            Arc::new(TantivySearch::open(&dir.path().join("search"), None).expect("index"));
        Adapter {
            projection: Arc::new(search.clone()),
            index: Arc::new(search),
            opensearch: None,
            _dir: dir,
        }
    }

    /// The OpenSearch adapter on the cluster at `url`, under an alias of its own, its
    /// popularity and checkpoints in an SQLite read-model database.
    async fn opensearch(url: &str) -> Adapter {
        let dir = TempDir::new().expect("temporary directory");
        let db = ReadDb::open(&format!(
            "sqlite://{}",
            dir.path().join("read.db").display()
        ))
        .await
        .expect("read-model database");
        let alias = format!("mercato-suite-{}", uuid::Uuid::new_v4().simple());
        let index = OpenSearchIndex::new(url, &alias).expect("an OpenSearch URL");
        index.ensure_index().await.expect("create the index");
        Adapter {
            projection: Arc::new(OpenSearchProjection::new(index.clone(), db, None)),
            index: Arc::new(index.clone()),
            opensearch: Some(index),
            _dir: dir,
        }
    }

    /// Applies `events` as the projection's runner does.
    pub async fn apply(&self, events: &[RecordedEvent]) {
        apply_new(self.projection.as_ref(), &Feed::Log, events)
            .await
            .expect("apply");
    }
}

mod cases {
    use eventstore::RecordedEvent;
    use projections::search::{SearchQuery, SearchResult};
    use uuid::Uuid;

    use super::Adapter;
    use crate::support::events::{order_created, product_updated, stock_committed, stock_released};

    /// A product's creation at `position`: name, description, price (minor units), category.
    fn product(
        id: Uuid,
        name: &str,
        description: &str,
        price_minor: i64,
        category: Option<&str>,
        position: u64,
    ) -> RecordedEvent {
        product_updated(id, 1, name, description, price_minor, 7, category, position)
    }

    /// A sale of `quantity` units of `product_id` to a confirmed order (10 popularity points a
    /// unit).
    fn sold(product_id: Uuid, quantity: u32, position: u64) -> RecordedEvent {
        stock_committed(product_id, quantity, position)
    }

    fn query(text: &str) -> SearchQuery {
        SearchQuery {
            text: text.to_owned(),
            limit: 20,
            ..SearchQuery::default()
        }
    }

    async fn search(adapter: &Adapter, query: &SearchQuery) -> SearchResult {
        adapter.index.search(query).await.expect("search")
    }

    /// The ids of the hits, in order.
    fn ids(result: &SearchResult) -> Vec<String> {
        result
            .hits
            .iter()
            .map(|hit| hit.product_id.clone())
            .collect()
    }

    fn sorted(mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        ids
    }

    pub async fn every_word_must_match_the_name_or_the_description(adapter: &Adapter) {
        let (red_kettle, blue_kettle, red_mug) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        adapter
            .apply(&[
                product(red_kettle, "Red kettle", "Steel body", 3000, None, 1),
                product(blue_kettle, "Blue kettle", "Red lid", 3000, None, 2),
                product(red_mug, "Red mug", "Clay body", 900, None, 3),
            ])
            .await;
        let both = search(adapter, &query("red kettle")).await;
        assert_eq!(both.total, 2, "{both:?}");
        assert_eq!(
            sorted(ids(&both)),
            sorted(vec![red_kettle.to_string(), blue_kettle.to_string()])
        );
        let body = search(adapter, &query("body")).await;
        assert_eq!(
            sorted(ids(&body)),
            sorted(vec![red_kettle.to_string(), red_mug.to_string()])
        );
        let none = search(adapter, &query("kettle clay")).await;
        assert_eq!((none.total, none.hits.len()), (0, 0), "{none:?}");
    }

    pub async fn words_match_whatever_their_case(adapter: &Adapter) {
        let lamp = Uuid::new_v4();
        adapter
            .apply(&[product(lamp, "Desk Lamp", "Warm LIGHT", 2500, None, 1)])
            .await;
        for text in ["desk", "DESK", "light", "Lamp Light"] {
            assert_eq!(
                ids(&search(adapter, &query(text)).await),
                [lamp.to_string()],
                "{text}"
            );
        }
    }

    pub async fn the_category_filter_is_exact_and_ignores_case(adapter: &Adapter) {
        let (pan, pot, mug) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        adapter
            .apply(&[
                product(pan, "Pan", "Iron", 4000, Some("Kitchen"), 1),
                product(pot, "Pot", "Iron", 4000, Some("kitchen"), 2),
                product(mug, "Mug", "Clay", 900, Some("Kitchenware"), 3),
            ])
            .await;
        let kitchen = search(
            adapter,
            &SearchQuery {
                category: Some("KITCHEN".to_owned()),
                ..query("")
            },
        )
        .await;
        assert_eq!(
            sorted(ids(&kitchen)),
            sorted(vec![pan.to_string(), pot.to_string()])
        );
        assert_eq!(kitchen.total, 2);
        let iron_kitchenware = search(
            adapter,
            &SearchQuery {
                category: Some("kitchenware".to_owned()),
                ..query("iron")
            },
        )
        .await;
        assert_eq!(iron_kitchenware.total, 0, "{iron_kitchenware:?}");
    }

    pub async fn the_price_range_includes_both_bounds(adapter: &Adapter) {
        let (ten, twenty, thirty) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        adapter
            .apply(&[
                product(ten, "Cup", "Tin", 1000, None, 1),
                product(twenty, "Jug", "Tin", 2000, None, 2),
                product(thirty, "Urn", "Tin", 3000, None, 3),
            ])
            .await;
        let priced = |min: Option<i64>, max: Option<i64>| SearchQuery {
            min_price_minor: min,
            max_price_minor: max,
            ..query("tin")
        };
        let between = search(adapter, &priced(Some(2000), Some(3000))).await;
        assert_eq!(
            sorted(ids(&between)),
            sorted(vec![twenty.to_string(), thirty.to_string()])
        );
        let at_most = search(adapter, &priced(None, Some(1000))).await;
        assert_eq!(ids(&at_most), [ten.to_string()]);
        let at_least = search(adapter, &priced(Some(3000), None)).await;
        assert_eq!(ids(&at_least), [thirty.to_string()]);
        let empty = search(adapter, &priced(Some(1001), Some(1999))).await;
        assert_eq!(empty.total, 0);
    }

    pub async fn products_equally_relevant_are_ordered_by_popularity(adapter: &Adapter) {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        adapter
            .apply(&[
                product(a, "Alpha", "Plain", 100, None, 1),
                product(b, "Beta", "Plain", 100, None, 2),
                product(c, "Gamma", "Plain", 100, None, 3),
                sold(b, 3, 4),
                sold(c, 1, 5),
                sold(b, 1, 6),
                // Placed and never confirmed: its reservation comes back, and it adds nothing.
                order_created("ada", &[(a, 99)], 7),
                stock_released(a, 99, 8),
            ])
            .await;
        let everything = search(adapter, &query("")).await;
        assert_eq!(
            ids(&everything),
            [b.to_string(), c.to_string(), a.to_string()]
        );
        let popularity: Vec<i64> = everything.hits.iter().map(|hit| hit.popularity).collect();
        assert_eq!(popularity, [40, 10, 0]);
        let plain = search(adapter, &query("plain")).await;
        assert_eq!(
            ids(&plain),
            ids(&everything),
            "the same words, the same relevance"
        );
    }

    pub async fn pages_come_with_the_exact_total(adapter: &Adapter) {
        let products: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        let mut events: Vec<RecordedEvent> = products
            .iter()
            .enumerate()
            .map(|(index, id)| {
                product(
                    *id,
                    &format!("Item {index}"),
                    "Paged",
                    100,
                    None,
                    index as u64 + 1,
                )
            })
            .collect();
        // Popularity 5, 4, 3, 2, 1 units: the order of the pages.
        for (index, id) in products.iter().enumerate() {
            events.push(sold(*id, 5 - index as u32, 10 + index as u64));
        }
        adapter.apply(&events).await;
        let page = search(
            adapter,
            &SearchQuery {
                limit: 2,
                offset: 1,
                ..query("")
            },
        )
        .await;
        assert_eq!(page.total, 5);
        assert_eq!(
            ids(&page),
            [products[1].to_string(), products[2].to_string()]
        );
        let last = search(
            adapter,
            &SearchQuery {
                limit: 2,
                offset: 4,
                ..query("paged")
            },
        )
        .await;
        assert_eq!((last.total, ids(&last)), (5, vec![products[4].to_string()]));
        let beyond = search(
            adapter,
            &SearchQuery {
                limit: 2,
                offset: 5,
                ..query("")
            },
        )
        .await;
        assert_eq!((beyond.total, beyond.hits.len()), (5, 0));
    }

    pub async fn a_hit_is_the_whole_product_at_its_newest_version(adapter: &Adapter) {
        let shoe = Uuid::new_v4();
        adapter
            .apply(&[
                product_updated(shoe, 1, "Trail shoe", "Grippy", 8990, 12, Some("Shoes"), 1),
                product_updated(shoe, 2, "Road shoe", "Light", 7950, 11, Some("Shoes"), 2),
            ])
            .await;
        // An older version arriving late (a replay, a redelivery) changes nothing.
        adapter
            .apply(&[product_updated(
                shoe,
                1,
                "Trail shoe",
                "Grippy",
                8990,
                12,
                Some("Shoes"),
                3,
            )])
            .await;
        let found = search(adapter, &query("shoe")).await;
        assert_eq!(found.total, 1, "{found:?}");
        let hit = &found.hits[0];
        assert_eq!(hit.product_id, shoe.to_string());
        assert_eq!(
            (
                hit.name.as_str(),
                hit.description.as_str(),
                hit.price_minor,
                hit.stock_qty
            ),
            ("Road shoe", "Light", 7950, 11)
        );
        assert_eq!(hit.category.as_deref(), Some("Shoes"));
        assert_eq!((hit.version, hit.popularity), (2, 0));
        assert!(!hit.updated_at.is_empty());
        assert_eq!(search(adapter, &query("grippy")).await.total, 0);
    }
}
