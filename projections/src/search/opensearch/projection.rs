//! The projection that keeps the index in service: which concrete index it writes, the
//! popularity it keeps in the read-model database, and its commit beside the checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use domain::ProductEvent;
use eventstore::RecordedEvent;

use super::swap::index_in_service;
use super::{OpenSearchIndex, storage};
use crate::cache::{Cache, SEARCH_SCOPE};
use crate::readdb::{ReadBackend, ReadDb};
use crate::runner::{Feed, Projection};
use crate::{ProjectionError, decode, popularity_signals};

/// The OpenSearch index as a projection: each batch is one bulk request (versioned, so applying
/// it twice gives the same documents) into the index in service, then the feed's checkpoint is
/// stored in the read-model database, if that index is still the one in service (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct OpenSearchProjection {
    index: OpenSearchIndex,
    db: ReadDb,
    cache: Option<Arc<dyn Cache>>,
    writes: Writes,
    /// The index in service that this process last found the alias pointing at.
    verified: Arc<std::sync::Mutex<Option<String>>>,
}

/// Which concrete index a projection writes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Writes {
    /// The one the read-model database records as in service.
    InService,
    /// A rebuild's new index.
    Into(String),
}

impl OpenSearchProjection {
    /// The projection that keeps the index in service, with its popularity and checkpoints in the
    /// read-model database `db`.
    pub fn new(index: OpenSearchIndex, db: ReadDb, cache: Option<Arc<dyn Cache>>) -> Self {
        Self {
            index,
            db,
            cache,
            writes: Writes::InService,
            verified: Arc::default(),
        }
    }

    /// A rebuild of the index into concrete index `into` (made by
    /// [`OpenSearchIndex::rebuild_into_new_index`]), with its popularity and checkpoints in
    /// `shadow` (a replay's shadow database).
    pub fn rebuilding(index: OpenSearchIndex, into: &str, shadow: ReadDb) -> Self {
        Self {
            index,
            db: shadow,
            cache: None,
            writes: Writes::Into(into.to_owned()),
            verified: Arc::default(),
        }
    }

    /// The stored popularity of `products` (absent ones have none yet).
    pub(super) async fn stored_popularity(
        &self,
        products: &std::collections::BTreeSet<String>,
    ) -> Result<BTreeMap<String, i64>, ProjectionError> {
        let mut stored = BTreeMap::new();
        let ids: Vec<&String> = products.iter().collect();
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT product_id, points FROM rm_search_popularity WHERE product_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for row in query.fetch_all(self.db.pool()).await? {
                use sqlx::Row;
                stored.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
            }
        }
        Ok(stored)
    }

    /// The index in service and `feed`'s checkpoint, read in one statement. The first batch of a
    /// deployment records the index the alias points at; the first batch of a process (and the
    /// first after the record changed) checks the alias still points at the recorded index.
    pub(super) async fn in_service(&self, feed: &Feed) -> Result<(String, u64), ProjectionError> {
        let alias = self.index.alias();
        let name = feed.checkpoint_name(OpenSearchIndex::NAME);
        for _ in 0..3 {
            let row = sqlx::query(
                "SELECT (SELECT index_name FROM rm_search_index WHERE alias = $1),
                        (SELECT position FROM projection_checkpoints WHERE name = $2)",
            )
            .bind(alias)
            .bind(name.as_ref())
            .fetch_one(self.db.pool())
            .await?;
            use sqlx::Row;
            let recorded: Option<String> = row.try_get(0)?;
            let checkpoint = row
                .try_get::<Option<i64>, _>(1)?
                .map_or(0, |position| u64::try_from(position).unwrap_or(0));
            if let Some(index) = recorded {
                self.verify(&index).await?;
                return Ok((index, checkpoint));
            }
            let current = self.index.current_indices().await?;
            let [index] = current.as_slice() else {
                return Err(self.alias_problem(&current, None));
            };
            sqlx::query(
                "INSERT INTO rm_search_index (alias, index_name, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (alias) DO NOTHING",
            )
            .bind(alias)
            .bind(index)
            .bind(chrono::Utc::now().to_rfc3339())
            .execute(self.db.pool())
            .await?;
            if let Ok(mut verified) = self.verified.lock() {
                *verified = Some(index.clone());
            }
        }
        Err(storage(format!(
            "the index in service for the search alias {alias} could not be recorded in the \
             read-model database; retrying"
        )))
    }

    /// Checks once per process (and per change of the record) that the alias points at `index`.
    pub(super) async fn verify(&self, index: &str) -> Result<(), ProjectionError> {
        let known = self
            .verified
            .lock()
            .map(|verified| verified.as_deref() == Some(index))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let current = self.index.current_indices().await?;
        if current != [index] {
            return Err(self.alias_problem(&current, Some(index)));
        }
        if let Ok(mut verified) = self.verified.lock() {
            *verified = Some(index.to_owned());
        }
        Ok(())
    }

    pub(super) fn alias_problem(
        &self,
        current: &[String],
        recorded: Option<&str>,
    ) -> ProjectionError {
        let alias = self.index.alias();
        match (current, recorded) {
            ([], None) => storage(format!(
                "the search index {alias} does not exist yet: the projector creates it on start \
                 (OpenSearchIndex::ensure_index)"
            )),
            (_, None) => storage(format!(
                "the search alias {alias} points at several indices ({}): point it at one",
                current.join(", ")
            )),
            (_, Some(recorded)) => storage(format!(
                "the search alias {alias} points at [{}] but the read-model database records \
                 {recorded} as the index in service: a replay is swapping them (this passes in a \
                 moment), or the indices were changed outside mercato (run `mercato replay \
                 --projection search` to rebuild the index)",
                current.join(", ")
            )),
        }
    }

    /// After a batch went to `index` and found another index in service: deletes `index` unless
    /// the alias points at it (its bulk may have re-created it after the replay deleted it).
    pub(super) async fn leave(&self, index: &str) {
        match self.index.delete_index(index).await {
            Ok(()) => tracing::info!(%index, "search index replaced by a replay: deleted"),
            Err(error) => {
                tracing::warn!(%index, %error, "search index replaced by a replay: not deleted")
            }
        }
    }

    pub(super) async fn invalidate(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate(&[SEARCH_SCOPE.to_owned()]).await;
        }
    }
}

#[async_trait]
impl Projection for OpenSearchProjection {
    fn name(&self) -> &'static str {
        OpenSearchIndex::NAME
    }

    async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.db
            .checkpoint(&feed.checkpoint_name(OpenSearchIndex::NAME))
            .await
    }

    async fn apply(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(first) = events.first().map(|event| event.position) else {
            return Ok(());
        };
        let target = match &self.writes {
            Writes::Into(index) => index.clone(),
            Writes::InService => {
                let (index, checkpoint) = self.in_service(feed).await?;
                if *feed != Feed::Replay && checkpoint >= first {
                    // A replay swapped in a rebuilt index holding this batch: send nothing.
                    self.invalidate().await;
                    return Err(ProjectionError::CheckpointMoved {
                        name: feed.checkpoint_name(OpenSearchIndex::NAME).into_owned(),
                        stored: checkpoint,
                        first,
                    });
                }
                index
            }
        };
        // The products this batch indexes or scores, and what the batch adds to their scores.
        let mut added: BTreeMap<String, i64> = BTreeMap::new();
        let mut products = std::collections::BTreeSet::new();
        for event in events {
            if event.event_type == "ProductUpdated"
                && let ProductEvent::ProductUpdated(updated) = decode::<ProductEvent>(event)?
            {
                products.insert(updated.product_id.to_string());
            }
            for signal in popularity_signals(event)? {
                *added.entry(signal.product_id.clone()).or_default() += signal.points;
                products.insert(signal.product_id);
            }
        }
        let stored = self.stored_popularity(&products).await?;
        let popularity: BTreeMap<String, i64> = products
            .into_iter()
            .map(|id| {
                let total =
                    stored.get(&id).copied().unwrap_or(0) + added.get(&id).copied().unwrap_or(0);
                (id, total)
            })
            .collect();
        // A batch of no product (accounts, carts) changes no search answer.
        let touches_products = !popularity.is_empty();
        self.index
            .apply_events_with_popularity_into(&target, events, &popularity)
            .await?;
        let committed = self
            .commit(feed, events, &target, added.keys(), &popularity)
            .await;
        if committed.is_err()
            && self.writes == Writes::InService
            && let Ok(in_service) = index_in_service(&self.db, self.index.alias()).await
            && in_service.as_deref() != Some(target.as_str())
        {
            // A replay swapped in a rebuilt index after this batch read which index is in
            // service: what it sent went to the index it replaced.
            self.leave(&target).await;
            self.invalidate().await;
            return Err(ProjectionError::CheckpointMoved {
                name: feed.checkpoint_name(OpenSearchIndex::NAME).into_owned(),
                stored: self.checkpoint(feed).await.unwrap_or(0),
                first,
            });
        }
        if touches_products {
            self.invalidate().await;
        }
        committed
    }
}

impl OpenSearchProjection {
    /// Stores the popularity of `added` products and `feed`'s checkpoint after `events`, once the
    /// batch went to index `target`: if that is still the index in service (see the module
    /// documentation), else [`ProjectionError::CheckpointMoved`].
    pub(super) async fn commit(
        &self,
        feed: &Feed,
        events: &[RecordedEvent],
        target: &str,
        added: impl Iterator<Item = &String>,
        popularity: &BTreeMap<String, i64>,
    ) -> Result<(), ProjectionError> {
        let mut write = self.db.begin_write().await?;
        if self.writes == Writes::InService {
            // The index in service cannot change until this transaction ends: on PostgreSQL a
            // swap waits for this lock, on SQLite a swap committed after this read makes the
            // first write fail.
            if self.db.backend() == ReadBackend::Postgres {
                sqlx::query("LOCK TABLE rm_search_index IN SHARE MODE")
                    .execute(&mut *write.transaction)
                    .await?;
            }
            let row = sqlx::query(
                "SELECT (SELECT index_name FROM rm_search_index WHERE alias = $1),
                        (SELECT position FROM projection_checkpoints WHERE name = $2)",
            )
            .bind(self.index.alias())
            .bind(feed.checkpoint_name(OpenSearchIndex::NAME).as_ref())
            .fetch_one(&mut *write.transaction)
            .await?;
            use sqlx::Row;
            let in_service: Option<String> = row.try_get(0)?;
            if in_service.as_deref() != Some(target) {
                let stored = row
                    .try_get::<Option<i64>, _>(1)?
                    .map_or(0, |position| u64::try_from(position).unwrap_or(0));
                write.transaction.rollback().await?;
                return Err(ProjectionError::CheckpointMoved {
                    name: feed.checkpoint_name(OpenSearchIndex::NAME).into_owned(),
                    stored,
                    first: events.first().map_or(0, |event| event.position),
                });
            }
        }
        for product_id in added {
            sqlx::query(
                "INSERT INTO rm_search_popularity (product_id, points) VALUES ($1, $2)
                 ON CONFLICT (product_id) DO UPDATE SET points = excluded.points",
            )
            .bind(product_id)
            .bind(popularity.get(product_id).copied().unwrap_or(0))
            .execute(&mut *write.transaction)
            .await?;
        }
        write
            .commit_batch(feed, OpenSearchIndex::NAME, events)
            .await
    }
}
