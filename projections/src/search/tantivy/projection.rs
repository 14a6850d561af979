//! Applying a batch: one document per product, popularity added, the checkpoints in the
//! commit's payload.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use domain::ProductEvent;
use eventstore::RecordedEvent;
use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::{TantivyDocument, Term};

use super::generations::Fence;
use super::{Generation, TantivySearch, encode_checkpoints};
use crate::cache::SEARCH_SCOPE;
use crate::runner::{Feed, Projection};
use crate::search::ProductDoc;
use crate::{ProjectionError, decode, is_popularity_event, popularity_signals};

impl TantivySearch {
    /// The checkpoint of `feed` stored with the last commit of the generation in service.
    /// (A writer looks at `CURRENT` every time: its checkpoints are those of the generation its
    /// next batch goes to.)
    pub(super) fn committed_checkpoint_of(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.follow_current(self.writable)?;
        self.generation().committed_checkpoint_of(feed)
    }

    pub(super) fn stored_document(
        &self,
        generation: &Generation,
        product_id: &str,
    ) -> Result<Option<ProductDoc>, ProjectionError> {
        let searcher = generation.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.product_id, product_id),
            IndexRecordOption::Basic,
        );
        let top = searcher.search(&query, &TopDocs::with_limit(1).order_by_score())?;
        let Some((_, address)) = top.first() else {
            return Ok(None);
        };
        let document: TantivyDocument = searcher.doc(*address)?;
        Ok(Some(self.product_of(&document)?))
    }

    pub(super) fn product_of(
        &self,
        document: &TantivyDocument,
    ) -> Result<ProductDoc, ProjectionError> {
        use tantivy::schema::Value;
        let json = document
            .get_first(self.fields.document)
            .and_then(|value| value.as_str())
            .ok_or_else(|| ProjectionError::Storage("a search document has no body".to_owned()))?;
        Ok(serde_json::from_str(json)?)
    }

    pub(super) fn to_document(
        &self,
        product: &ProductDoc,
    ) -> Result<TantivyDocument, ProjectionError> {
        let mut document = TantivyDocument::default();
        document.add_text(self.fields.product_id, &product.product_id);
        document.add_text(self.fields.name, &product.name);
        document.add_text(self.fields.description, &product.description);
        if let Some(category) = &product.category {
            document.add_text(self.fields.category_key, category.to_lowercase());
        }
        document.add_i64(self.fields.price_minor, product.price_minor);
        document.add_i64(self.fields.popularity, product.popularity);
        document.add_text(self.fields.document, serde_json::to_string(product)?);
        Ok(document)
    }

    /// Applies a batch and commits it with its checkpoint; answers whether a product's
    /// document changed (only then can a search answer have changed).
    pub(super) fn apply_blocking(
        &self,
        feed: &Feed,
        events: &[RecordedEvent],
    ) -> Result<bool, ProjectionError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(false);
        };
        // Held until the batch is committed: a swap waits for it, and it sees a swap made before.
        let _fence = if self.writable && !self.pinned {
            Some(Fence::take(&self.root, false)?)
        } else {
            None
        };
        self.follow_current(true)?;
        let generation = self.generation();
        let switched = {
            let mut applied_to = match self.applied_to.lock() {
                Ok(applied_to) => applied_to,
                Err(poisoned) => poisoned.into_inner(),
            };
            let switched = *applied_to != generation.name;
            applied_to.clone_from(&generation.name);
            switched
        };
        if *feed != Feed::Replay {
            // A batch read before a rebuilt generation went into service is not applied to it:
            // the runner reads again from that generation's checkpoint.
            let stored = generation.committed_checkpoint_of(feed)?;
            if switched || stored >= first.position {
                return Err(ProjectionError::CheckpointMoved {
                    name: feed.checkpoint_name(Self::NAME).into_owned(),
                    stored,
                    first: first.position,
                });
            }
        }
        let generation = &*generation;
        let mut changed: HashMap<String, Option<ProductDoc>> = HashMap::new();
        for event in events {
            match event.event_type.as_str() {
                "ProductUpdated" => {
                    let ProductEvent::ProductUpdated(updated) = decode::<ProductEvent>(event)?
                    else {
                        continue;
                    };
                    let product_id = updated.product_id.to_string();
                    let current = self.current(generation, &mut changed, &product_id)?;
                    if current
                        .as_ref()
                        .is_some_and(|current| current.version >= updated.version)
                    {
                        continue; // an older or repeated change: keep the newer document
                    }
                    let popularity = current.map_or(0, |current| current.popularity);
                    changed.insert(
                        product_id.clone(),
                        Some(ProductDoc {
                            product_id,
                            name: updated.name,
                            description: updated.description,
                            price_minor: updated.price.minor(),
                            stock_qty: i64::from(updated.stock_qty),
                            category: updated.category,
                            popularity,
                            updated_at: event
                                .occurred_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                            version: updated.version,
                        }),
                    );
                }
                event_type if is_popularity_event(event_type) => {
                    for signal in popularity_signals(event)? {
                        self.add_popularity(
                            generation,
                            &mut changed,
                            &signal.product_id,
                            signal.points,
                        )?;
                    }
                }
                _ => {}
            }
        }
        let folded = std::time::Instant::now();
        let Some(writer) = &generation.writer else {
            return Err(ProjectionError::Storage(
                "the search index was opened to read only".to_owned(),
            ));
        };
        let mut writer = match writer.lock() {
            Ok(writer) => writer,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (product_id, product) in &changed {
            let Some(product) = product else { continue };
            writer.delete_term(Term::from_field_text(self.fields.product_id, product_id));
            writer.add_document(self.to_document(product)?)?;
        }
        let added = std::time::Instant::now();
        let mut prepared = writer.prepare_commit()?;
        let prepared_at = std::time::Instant::now();
        let mut checkpoints = generation.committed_checkpoints()?;
        checkpoints.insert(feed.checkpoint_name(Self::NAME).into_owned(), last.position);
        prepared.set_payload(&encode_checkpoints(&checkpoints)?);
        prepared.commit()?;
        let committed = std::time::Instant::now();
        drop(writer);
        generation.reader.reload()?;
        tracing::debug!(
            add_us = (added - folded).as_micros() as u64,
            prepare_us = (prepared_at - added).as_micros() as u64,
            commit_us = (committed - prepared_at).as_micros() as u64,
            reload_us = committed.elapsed().as_micros() as u64,
            "search index committed"
        );
        Ok(!changed.is_empty())
    }

    /// The product's document as this batch leaves it so far.
    pub(super) fn current(
        &self,
        generation: &Generation,
        changed: &mut HashMap<String, Option<ProductDoc>>,
        product_id: &str,
    ) -> Result<Option<ProductDoc>, ProjectionError> {
        if let Some(product) = changed.get(product_id) {
            return Ok(product.clone());
        }
        let stored = self.stored_document(generation, product_id)?;
        changed.insert(product_id.to_owned(), stored.clone());
        Ok(stored)
    }

    pub(super) fn add_popularity(
        &self,
        generation: &Generation,
        changed: &mut HashMap<String, Option<ProductDoc>>,
        product_id: &str,
        points: i64,
    ) -> Result<(), ProjectionError> {
        if let Some(mut product) = self.current(generation, changed, product_id)? {
            product.popularity = product.popularity.saturating_add(points);
            changed.insert(product_id.to_owned(), Some(product));
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for Arc<TantivySearch> {
    fn name(&self) -> &'static str {
        TantivySearch::NAME
    }

    async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.committed_checkpoint_of(feed)
    }

    async fn apply(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let search = self.clone();
        let events = events.to_vec();
        let feed = feed.clone();
        let changed = tokio::task::spawn_blocking(move || search.apply_blocking(&feed, &events))
            .await
            .map_err(|error| {
                ProjectionError::Storage(format!("indexing task failed: {error}"))
            })??;
        // A batch of no product (accounts, carts, logins) leaves every cached search right.
        if changed && let Some(cache) = &self.cache {
            cache.invalidate(&[SEARCH_SCOPE.to_owned()]).await;
        }
        Ok(())
    }
}
