//! The read models mercato keeps, by name: the one list that serving (`mercato serve`),
//! rebuilding (`mercato replay`), listing (`mercato projections`) and migrating read.
//!
//! Each [`ReadModel`] knows its name, where the configuration puts it ([`Placement`]), the SQL
//! tables it owns there, and how to open it: live, writing the read model in service, or as a
//! fresh instance writing into a rebuild's shadow ([`crate::rebuild`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::ProjectionError;
use crate::cache::Cache;
use crate::readdb::ReadDb;
use crate::redis_models::{RedisCartsProjection, RedisModels, RedisPopularityProjection};
use crate::runner::Projection;
use crate::search::opensearch::{self, OpenSearchIndex, OpenSearchProjection};
use crate::search::{SearchIndex, TantivySearch};
use crate::sql_models::{
    OrdersProjection, ProductsProjection, SqlCartsProjection, SqlPopularityProjection,
};
use crate::users::UsersProjection;

/// A read model: what a projection folds the log into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReadModel {
    /// `rm_products`: each product with its popularity.
    Products,
    /// `rm_orders`: orders by id and by customer, with their payment status.
    Orders,
    /// Carts with their lines: SQL, or Redis when configured.
    Carts,
    /// Popularity and what each customer ordered (recommendations): SQL, or Redis.
    Popularity,
    /// The product search index: Tantivy embedded, or OpenSearch when configured.
    Search,
    /// `rm_users`: accounts, their personal values sealed.
    Users,
}

/// A name that is no read model's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("there is no read model named {name:?}; the read models are {}", ReadModel::names().join(", "))]
pub struct UnknownReadModel {
    pub name: String,
}

/// Where a read model lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Tables of the read-model database.
    Sql,
    /// Keys of the deployment's Redis.
    Redis,
    /// The Tantivy index under the data directory.
    Tantivy,
    /// An OpenSearch (or Elasticsearch) index behind the alias.
    OpenSearch,
}

impl ReadModel {
    /// Every read model, in the order `replay --all` rebuilds them and `projections` lists them.
    pub const ALL: [ReadModel; 6] = [
        ReadModel::Products,
        ReadModel::Orders,
        ReadModel::Carts,
        ReadModel::Popularity,
        ReadModel::Search,
        ReadModel::Users,
    ];

    /// The read model's name: its projection's name, its checkpoint's, the one `replay
    /// --projection` takes.
    pub fn name(self) -> &'static str {
        match self {
            ReadModel::Products => ProductsProjection::NAME,
            ReadModel::Orders => OrdersProjection::NAME,
            ReadModel::Carts => SqlCartsProjection::NAME,
            ReadModel::Popularity => SqlPopularityProjection::NAME,
            ReadModel::Search => TantivySearch::NAME,
            ReadModel::Users => UsersProjection::NAME,
        }
    }

    /// The names of every read model, in [`ReadModel::ALL`]'s order.
    pub fn names() -> Vec<&'static str> {
        ReadModel::ALL.iter().map(|model| model.name()).collect()
    }

    /// The read model named `name`.
    pub fn named(name: &str) -> Result<ReadModel, UnknownReadModel> {
        ReadModel::ALL
            .into_iter()
            .find(|model| model.name() == name)
            .ok_or_else(|| UnknownReadModel {
                name: name.to_owned(),
            })
    }

    /// Where `stores` puts this read model.
    pub fn placement(self, stores: &ReadModelStores) -> Placement {
        match (self, &stores.redis, &stores.search) {
            (ReadModel::Carts | ReadModel::Popularity, Some(_), _) => Placement::Redis,
            (ReadModel::Search, _, SearchStore::Tantivy { .. }) => Placement::Tantivy,
            (ReadModel::Search, _, SearchStore::OpenSearch(_)) => Placement::OpenSearch,
            _ => Placement::Sql,
        }
    }

    /// The tables of the read-model database this read model owns where `stores` puts it, in
    /// the order its projection's batches write them (a rebuild's swap locks them in this
    /// order): what a rebuild clears in its shadow and swaps in.
    pub fn tables(self, stores: &ReadModelStores) -> &'static [&'static str] {
        match (self, self.placement(stores)) {
            (_, Placement::Redis | Placement::Tantivy) => &[],
            (_, Placement::OpenSearch) => opensearch::REBUILT_TABLES,
            (ReadModel::Products, Placement::Sql) => {
                &["rm_products", "rm_products_early_popularity"]
            }
            (ReadModel::Orders, Placement::Sql) => {
                &["rm_order_payments", "rm_orders", "rm_order_details"]
            }
            (ReadModel::Carts, Placement::Sql) => &["rm_carts"],
            (ReadModel::Popularity, Placement::Sql) => &["rm_popularity", "rm_customer_products"],
            (ReadModel::Search, Placement::Sql) => &[],
            (ReadModel::Users, Placement::Sql) => &["rm_users"],
        }
    }

    /// The projection that keeps this read model in service, where `stores` puts it.
    pub fn open_live(self, stores: &ReadModelStores) -> Arc<dyn Projection> {
        let db = stores.db.clone();
        match (self, &stores.redis, &stores.search) {
            (ReadModel::Products, _, _) => {
                Arc::new(ProductsProjection::new(db, stores.cache.clone()))
            }
            (ReadModel::Orders, _, _) => Arc::new(OrdersProjection::new(db)),
            (ReadModel::Carts, Some(models), _) => {
                Arc::new(RedisCartsProjection::new(models.clone()))
            }
            (ReadModel::Carts, None, _) => Arc::new(SqlCartsProjection::new(db)),
            (ReadModel::Popularity, Some(models), _) => Arc::new(RedisPopularityProjection::new(
                models.clone(),
                stores.cache.clone(),
            )),
            (ReadModel::Popularity, None, _) => {
                Arc::new(SqlPopularityProjection::new(db, stores.cache.clone()))
            }
            (ReadModel::Search, _, SearchStore::Tantivy { index, .. }) => Arc::new(index.clone()),
            (ReadModel::Search, _, SearchStore::OpenSearch(index)) => Arc::new(
                OpenSearchProjection::new(index.clone(), db, stores.cache.clone()),
            ),
            (ReadModel::Users, _, _) => Arc::new(UsersProjection::new(db)),
        }
    }

    /// A fresh instance of this read model writing into a rebuild's shadow: the shadow
    /// database `shadow`, the shadow keys of Redis, or (for search, which needs it) `search`:
    /// a new index generation, or the concrete OpenSearch index being filled.
    pub fn open_shadow(
        self,
        stores: &ReadModelStores,
        shadow: &ReadDb,
        search: Option<ShadowSearch>,
    ) -> Result<Arc<dyn Projection>, ProjectionError> {
        Ok(match (self, &stores.redis, search) {
            (ReadModel::Products, _, _) => Arc::new(ProductsProjection::new(shadow.clone(), None)),
            (ReadModel::Orders, _, _) => Arc::new(OrdersProjection::new(shadow.clone())),
            (ReadModel::Carts, Some(models), _) => {
                Arc::new(RedisCartsProjection::new(models.shadow()))
            }
            (ReadModel::Carts, None, _) => Arc::new(SqlCartsProjection::new(shadow.clone())),
            (ReadModel::Popularity, Some(models), _) => {
                Arc::new(RedisPopularityProjection::new(models.shadow(), None))
            }
            (ReadModel::Popularity, None, _) => {
                Arc::new(SqlPopularityProjection::new(shadow.clone(), None))
            }
            (ReadModel::Search, _, Some(ShadowSearch::Generation(generation))) => {
                Arc::new(generation)
            }
            (ReadModel::Search, _, Some(ShadowSearch::OpenSearch { index, into })) => Arc::new(
                OpenSearchProjection::rebuilding(index, &into, shadow.clone()),
            ),
            (ReadModel::Users, _, _) => Arc::new(UsersProjection::new(shadow.clone())),
            (ReadModel::Search, _, None) => {
                return Err(ProjectionError::Storage(
                    "the search index is rebuilt into a new index generation or OpenSearch index, and none was given"
                        .to_owned(),
                ));
            }
        })
    }
}

/// Where a rebuilt search index is written.
#[derive(Debug)]
pub enum ShadowSearch {
    /// A new generation of the Tantivy index.
    Generation(Arc<TantivySearch>),
    /// A new concrete OpenSearch index, `into`, behind the same alias as `index`.
    OpenSearch {
        index: OpenSearchIndex,
        into: String,
    },
}

/// Where the search index lives.
#[derive(Clone, Debug)]
pub enum SearchStore {
    /// The embedded Tantivy index under `root`, open (to write in a projector, to read
    /// elsewhere).
    Tantivy {
        root: PathBuf,
        index: Arc<TantivySearch>,
    },
    /// An OpenSearch or Elasticsearch cluster, behind an alias.
    OpenSearch(OpenSearchIndex),
}

/// Where the configuration puts the read models, opened.
#[derive(Clone, Debug)]
pub struct ReadModelStores {
    /// The read-model database: the SQL read models, every checkpoint, the saga's tables.
    pub db: ReadDb,
    /// Its URL: a rebuild's shadow is made beside it.
    pub db_url: String,
    /// Carts and popularity, when they are on Redis.
    pub redis: Option<RedisModels>,
    /// The search index.
    pub search: SearchStore,
    /// The query cache the live projections invalidate, if this process keeps one.
    pub cache: Option<Arc<dyn Cache>>,
}

impl ReadModelStores {
    /// The search port over the search index.
    pub fn search_index(&self) -> Arc<dyn SearchIndex> {
        match &self.search {
            SearchStore::Tantivy { index, .. } => Arc::new(index.clone()),
            SearchStore::OpenSearch(index) => Arc::new(index.clone()),
        }
    }

    /// The projection of every read model, live.
    pub fn live_projections(&self) -> Vec<Arc<dyn Projection>> {
        ReadModel::ALL
            .into_iter()
            .map(|model| model.open_live(self))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_read_model_is_found_by_its_name_and_nothing_else_is() {
        for model in ReadModel::ALL {
            assert_eq!(ReadModel::named(model.name()), Ok(model));
        }
        assert_eq!(
            ReadModel::names(),
            [
                "products",
                "orders",
                "carts",
                "popularity",
                "search",
                "users"
            ]
        );
        let unknown = ReadModel::named("nope").unwrap_err().to_string();
        assert_eq!(
            unknown,
            "there is no read model named \"nope\"; the read models are products, orders, carts, popularity, search, users"
        );
        assert!(ReadModel::named("Products").is_err());
        assert!(ReadModel::named("").is_err());
    }
}
