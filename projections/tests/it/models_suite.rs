//! The behaviour suite of the read models that live in SQL or in Redis: carts and popularity
//! (with the recommendations read from it). Every case runs against the SQL read models (SQLite)
//! and the Redis ones (skipped loudly without `REDIS_URL`, a failure with
//! `MERCATO_REQUIRE_SERVICES=1`), opened through the read-model catalogue as the server opens
//! them and read through `projections::queries` as the query API reads them.

use std::sync::Arc;

use projections::ReadModelStores;
use projections::catalogue::SearchStore;
use projections::readdb::ReadDb;
use projections::redis_models::RedisModels;
use projections::search::TantivySearch;
use tempfile::TempDir;

/// Declares each case once per placement: `sql::<case>` and `redis::<case>`.
macro_rules! models_suite {
    ($($case:ident),* $(,)?) => {
        mod sql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let models = super::Models::open(None).await;
                    super::cases::$case(&models).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test_name = concat!("models_suite::redis::", stringify!($case));
                    let Some(url) = eventstore::testing::redis_url(test_name).await else {
                        return;
                    };
                    let models = super::Models::open(Some(&url)).await;
                    super::cases::$case(&models).await;
                }
            )*
        }
    };
}

models_suite!(
    a_cart_folds_its_added_and_removed_lines,
    a_checked_out_cart_names_its_order,
    an_event_applied_again_changes_nothing,
    confirmed_orders_and_views_make_popularity_and_recommendations,
    a_placed_order_adds_popularity_only_once_it_is_confirmed,
    recommendations_leave_out_what_the_customer_ordered_and_unknown_products,
);

/// The read models of one test: SQLite in a temporary directory, and Redis under a key prefix
/// of the test's own when given a URL.
pub struct Models {
    pub stores: ReadModelStores,
    _dir: TempDir,
}

impl Models {
    async fn open(redis_url: Option<&str>) -> Models {
        let dir = TempDir::new().expect("temporary directory");
        let db_url = format!("sqlite://{}", dir.path().join("read.db").display());
        let db = ReadDb::open(&db_url).await.expect("read-model database");
        let redis = match redis_url {
            Some(url) => {
                let client = ::redis::Client::open(url).expect("a Redis URL");
                let connection = ::redis::aio::ConnectionManager::new(client)
                    .await
                    .expect("connect to Redis");
                let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
                Some(RedisModels::new(connection, &prefix))
            }
            None => None,
        };
        let root = dir.path().join("search");
        let index = Arc::new(TantivySearch::open(&root, None).expect("search index"));
        Models {
            stores: ReadModelStores {
                db,
                db_url,
                redis,
                search: SearchStore::Tantivy { root, index },
                cache: None,
            },
            _dir: dir,
        }
    }
}

mod cases {
    use std::sync::Arc;

    use domain::cart::{CartCheckedOut, CartItemAdded, CartItemRemoved};
    use domain::{CartEvent, CustomerId, Money};
    use eventstore::RecordedEvent;
    use projections::catalogue::{Placement, ReadModel};
    use projections::queries::Queries;
    use projections::{Feed, Projection, apply_new};
    use uuid::Uuid;

    use super::Models;
    use crate::support::events::{
        order_created, product_updated, recorded, stock_committed, stock_released, view,
    };

    const CART: &str = "cart-1";

    fn customer(id: &str) -> CustomerId {
        CustomerId::parse(id).expect("a customer id")
    }

    fn cart_event(event: CartEvent, version: u64, position: u64) -> RecordedEvent {
        recorded(
            schemas::encode(&event).expect("encode"),
            "cart",
            CART.to_owned(),
            version,
            position,
        )
    }

    fn added(product_id: Uuid, quantity: u32, line_quantity: u32) -> CartEvent {
        CartEvent::CartItemAdded(CartItemAdded {
            product_id,
            quantity,
            line_quantity,
            unit_price: Money::from_minor(250),
        })
    }

    /// An order placed (not confirmed: no popularity, but its customer ordered its products).
    fn order(customer_id: &str, lines: &[(Uuid, u32)], position: u64) -> RecordedEvent {
        order_created(customer_id, lines, position)
    }

    /// `quantity` units of `product_id` sold to a confirmed order: 10 points a unit.
    fn sold(product_id: Uuid, quantity: u32, position: u64) -> RecordedEvent {
        stock_committed(product_id, quantity, position)
    }

    /// Applies `events` (in a batch of their own, as a projection's runner does) to every
    /// projection of `models`.
    async fn apply(models: &Models, model: ReadModel, events: &[RecordedEvent]) {
        let projection: Arc<dyn Projection> = model.open_live(&models.stores);
        apply_new(projection.as_ref(), &Feed::Log, events)
            .await
            .expect("apply");
    }

    fn queries(models: &Models) -> Queries {
        Queries::new(models.stores.db.clone(), models.stores.redis.clone())
    }

    fn expected_placement(models: &Models) -> Placement {
        if models.stores.redis.is_some() {
            Placement::Redis
        } else {
            Placement::Sql
        }
    }

    pub async fn a_cart_folds_its_added_and_removed_lines(models: &Models) {
        assert_eq!(
            ReadModel::Carts.placement(&models.stores),
            expected_placement(models)
        );
        let (kettle, mug) = (Uuid::new_v4(), Uuid::new_v4());
        apply(
            models,
            ReadModel::Carts,
            &[
                cart_event(added(kettle, 1, 1), 1, 1),
                cart_event(added(mug, 2, 2), 2, 2),
                cart_event(added(kettle, 2, 3), 3, 3),
                cart_event(
                    CartEvent::CartItemRemoved(CartItemRemoved { product_id: mug }),
                    4,
                    4,
                ),
            ],
        )
        .await;
        let cart = queries(models)
            .cart(CART)
            .await
            .expect("read")
            .expect("the cart");
        assert_eq!(cart.version, 4);
        assert_eq!(cart.checked_out_as, None);
        assert_eq!(cart.lines.len(), 1, "{cart:?}");
        let line = &cart.lines[&kettle.to_string()];
        assert_eq!((line.quantity, line.unit_price_minor), (3, 250));
        assert_eq!(queries(models).cart("cart-2").await.expect("read"), None);
    }

    pub async fn a_checked_out_cart_names_its_order(models: &Models) {
        let order_id = Uuid::new_v4();
        apply(
            models,
            ReadModel::Carts,
            &[
                cart_event(added(Uuid::new_v4(), 1, 1), 1, 1),
                cart_event(
                    CartEvent::CartCheckedOut(CartCheckedOut {
                        order_id,
                        customer_id: customer("ada"),
                    }),
                    2,
                    2,
                ),
            ],
        )
        .await;
        let cart = queries(models)
            .cart(CART)
            .await
            .expect("read")
            .expect("cart");
        assert_eq!(cart.checked_out_as, Some(order_id.to_string()));
    }

    pub async fn an_event_applied_again_changes_nothing(models: &Models) {
        let kettle = Uuid::new_v4();
        let first = vec![
            cart_event(added(kettle, 1, 1), 1, 1),
            order("bob", &[(kettle, 2)], 2),
            sold(kettle, 2, 3),
        ];
        apply(models, ReadModel::Carts, &first).await;
        apply(models, ReadModel::Popularity, &first).await;
        // A redelivery of the same events, then a newer one.
        let mut again = first.clone();
        again.push(cart_event(added(kettle, 1, 2), 2, 4));
        apply(models, ReadModel::Carts, &again).await;
        apply(models, ReadModel::Popularity, &again).await;
        apply(
            models,
            ReadModel::Products,
            &[product_updated(
                kettle, 1, "Kettle", "Steel", 100, 5, None, 5,
            )],
        )
        .await;
        let cart = queries(models)
            .cart(CART)
            .await
            .expect("read")
            .expect("cart");
        assert_eq!(cart.lines[&kettle.to_string()].quantity, 2);
        assert_eq!(cart.version, 2);
        let items = queries(models)
            .recommendations("carol", 10)
            .await
            .expect("read");
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(
            items[0].score,
            2 * projections::ORDER_UNIT_POINTS,
            "counted once"
        );
    }

    pub async fn confirmed_orders_and_views_make_popularity_and_recommendations(models: &Models) {
        assert_eq!(
            ReadModel::Popularity.placement(&models.stores),
            expected_placement(models)
        );
        let (kettle, mug, lamp) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        apply(
            models,
            ReadModel::Products,
            &[
                product_updated(kettle, 1, "Kettle", "Steel", 3000, 5, None, 1),
                product_updated(mug, 1, "Mug", "Clay", 900, 5, None, 2),
                product_updated(lamp, 1, "Lamp", "Warm", 2500, 5, None, 3),
            ],
        )
        .await;
        apply(
            models,
            ReadModel::Popularity,
            &[
                order("ada", &[(kettle, 1), (mug, 2)], 4),
                sold(kettle, 1, 5),
                sold(mug, 2, 6),
                view(lamp, 7),
                view(lamp, 8),
                view(mug, 9),
                // Placed, then declined: its reservation comes back and it adds nothing.
                order("eve", &[(lamp, 50)], 10),
                stock_released(lamp, 50, 11),
            ],
        )
        .await;
        let items = queries(models)
            .recommendations("dave", 10)
            .await
            .expect("read");
        let ranked: Vec<(String, String, i64)> = items
            .iter()
            .map(|item| (item.product_id.clone(), item.name.clone(), item.score))
            .collect();
        assert_eq!(
            ranked,
            [
                (mug.to_string(), "Mug".to_owned(), 21),
                (kettle.to_string(), "Kettle".to_owned(), 10),
                (lamp.to_string(), "Lamp".to_owned(), 2),
            ]
        );
        let top = queries(models)
            .recommendations("dave", 1)
            .await
            .expect("read");
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].product_id, mug.to_string());
    }

    /// What a placed order does before and after the saga confirms it, in every read model that
    /// keeps popularity here: the products read model and `popularity`.
    pub async fn a_placed_order_adds_popularity_only_once_it_is_confirmed(models: &Models) {
        let (kettle, mug) = (Uuid::new_v4(), Uuid::new_v4());
        let catalogue = [
            product_updated(kettle, 1, "Kettle", "Steel", 3000, 5, None, 1),
            product_updated(mug, 1, "Mug", "Clay", 900, 5, None, 2),
        ];
        apply(models, ReadModel::Products, &catalogue).await;
        // Placed: a declined order of 999 mugs and an order of 3 kettles still waiting.
        let placed = [
            order("mallory", &[(mug, 999)], 3),
            order("ada", &[(kettle, 3)], 4),
            stock_released(mug, 999, 5),
        ];
        apply(models, ReadModel::Products, &placed).await;
        apply(models, ReadModel::Popularity, &placed).await;
        let popularity = |product: Uuid| {
            let queries = queries(models);
            async move {
                queries
                    .product(&product.to_string())
                    .await
                    .expect("read")
                    .expect("the product")
                    .popularity
            }
        };
        let scores = |customer: &'static str| {
            let queries = queries(models);
            async move {
                queries
                    .recommendations(customer, 10)
                    .await
                    .expect("read")
                    .into_iter()
                    .map(|item| (item.product_id, item.score))
                    .collect::<std::collections::BTreeMap<String, i64>>()
            }
        };
        assert_eq!((popularity(kettle).await, popularity(mug).await), (0, 0));
        assert_eq!(
            scores("carol").await,
            [(kettle.to_string(), 0), (mug.to_string(), 0)].into(),
            "placed orders make nothing popular"
        );
        // The saga confirms ada's order: its units are sold.
        let confirmed = [sold(kettle, 3, 6)];
        apply(models, ReadModel::Products, &confirmed).await;
        apply(models, ReadModel::Popularity, &confirmed).await;
        assert_eq!(
            (popularity(kettle).await, popularity(mug).await),
            (3 * projections::ORDER_UNIT_POINTS, 0)
        );
        assert_eq!(
            scores("carol").await,
            [
                (kettle.to_string(), 3 * projections::ORDER_UNIT_POINTS),
                (mug.to_string(), 0)
            ]
            .into()
        );
        // What a customer ordered comes from the placed order (no confirmation names them): it
        // only leaves the product out of their own recommendations.
        assert_eq!(scores("ada").await, [(mug.to_string(), 0)].into());
        assert_eq!(
            scores("mallory").await,
            [(kettle.to_string(), 3 * projections::ORDER_UNIT_POINTS)].into()
        );
    }

    pub async fn recommendations_leave_out_what_the_customer_ordered_and_unknown_products(
        models: &Models,
    ) {
        let (kettle, mug, unknown) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        apply(
            models,
            ReadModel::Products,
            &[
                product_updated(kettle, 1, "Kettle", "Steel", 3000, 5, None, 1),
                product_updated(mug, 1, "Mug", "Clay", 900, 5, None, 2),
            ],
        )
        .await;
        apply(
            models,
            ReadModel::Popularity,
            &[
                order("ada", &[(kettle, 5)], 3),
                sold(kettle, 5, 4),
                order("bob", &[(mug, 1)], 5),
                sold(mug, 1, 6),
                // A product the catalogue does not know (yet) is never recommended.
                order("bob", &[(unknown, 9)], 7),
                sold(unknown, 9, 8),
            ],
        )
        .await;
        let for_ada: Vec<String> = queries(models)
            .recommendations("ada", 10)
            .await
            .expect("read")
            .into_iter()
            .map(|item| item.product_id)
            .collect();
        assert_eq!(for_ada, [mug.to_string()]);
        let for_bob: Vec<String> = queries(models)
            .recommendations("bob", 10)
            .await
            .expect("read")
            .into_iter()
            .map(|item| item.product_id)
            .collect();
        assert_eq!(for_bob, [kettle.to_string()]);
    }
}
