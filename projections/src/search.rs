//! Product search: the port, and its embedded adapter on Tantivy.
//!
//! The Tantivy index is a projection of its own: it folds `ProductUpdated` (the whole product)
//! and the popularity signals (`OrderCreated`, `ProductViewed`) into one document per product,
//! and stores its checkpoint in the commit's payload, so a batch and its checkpoint become
//! visible together (exactly once, across crashes).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain::ProductEvent;
use eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader, TantivyDocument,
    Term,
};

use crate::cache::{Cache, SEARCH_SCOPE};
use crate::runner::{Feed, Projection};
use crate::{ProjectionError, decode, popularity_signals};

/// A product as search answers show it (and as the product read model does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDoc {
    pub product_id: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub stock_qty: i64,
    pub category: Option<String>,
    pub popularity: i64,
    pub updated_at: String,
    pub version: u64,
}

/// What to search for. Prices are minor units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SearchQuery {
    pub text: String,
    pub category: Option<String>,
    pub min_price_minor: Option<i64>,
    pub max_price_minor: Option<i64>,
    pub limit: usize,
    pub offset: usize,
}

impl SearchQuery {
    /// A stable cache key for this query.
    pub fn cache_key(&self) -> String {
        format!(
            "q={}|c={}|min={}|max={}|l={}|o={}",
            self.text.trim().to_lowercase(),
            self.category
                .as_deref()
                .map(str::to_lowercase)
                .unwrap_or_default(),
            self.min_price_minor
                .map(|v| v.to_string())
                .unwrap_or_default(),
            self.max_price_minor
                .map(|v| v.to_string())
                .unwrap_or_default(),
            self.limit,
            self.offset
        )
    }
}

/// The matching products: the exact number, and one page ordered by relevance, then popularity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    pub total: u64,
    pub hits: Vec<ProductDoc>,
}

/// The search port: Tantivy embedded, OpenSearch or Elasticsearch when configured.
#[async_trait]
pub trait SearchIndex: Send + Sync + fmt::Debug {
    async fn search(&self, query: &SearchQuery) -> Result<SearchResult, ProjectionError>;
    /// The name of the projection that feeds this index (for read-your-writes waits).
    fn projection_name(&self) -> &'static str;
    fn kind(&self) -> &'static str;
}

#[derive(Clone, Copy, Debug)]
struct Fields {
    product_id: Field,
    name: Field,
    description: Field,
    category_key: Field,
    price_minor: Field,
    popularity: Field,
    document: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let stemmed = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("en_stem")
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        product_id: builder.add_text_field("product_id", STRING),
        name: builder.add_text_field("name", stemmed.clone()),
        description: builder.add_text_field("description", stemmed),
        category_key: builder.add_text_field("category_key", STRING),
        price_minor: builder.add_i64_field("price_minor", INDEXED | FAST),
        popularity: builder.add_i64_field("popularity", FAST),
        document: builder.add_text_field("document", STORED),
    };
    (builder.build(), fields)
}

/// The embedded search index on Tantivy, under `{data-dir}/search`.
pub struct TantivySearch {
    index: Index,
    reader: IndexReader,
    /// `None` when opened to read only (a query-api process beside the projector's).
    writer: Option<Arc<Mutex<IndexWriter>>>,
    fields: Fields,
    cache: Option<Arc<dyn Cache>>,
    /// The checkpoint of the commit the reader was last reloaded at (read-only mode).
    reloaded_at: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for TantivySearch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TantivySearch")
            .finish_non_exhaustive()
    }
}

impl TantivySearch {
    pub const NAME: &'static str = "search";

    /// Opens the index in `directory` to write (the projection), creating it if needed.
    pub fn open(directory: &Path, cache: Option<Arc<dyn Cache>>) -> Result<Self, ProjectionError> {
        Self::open_with(directory, cache, true)
    }

    /// Opens the index in `directory` to read only, for a query-api process that shares the
    /// directory with a projector process: searches see each commit of the projector.
    pub fn open_read_only(directory: &Path) -> Result<Self, ProjectionError> {
        Self::open_with(directory, None, false)
    }

    fn open_with(
        directory: &Path,
        cache: Option<Arc<dyn Cache>>,
        writable: bool,
    ) -> Result<Self, ProjectionError> {
        std::fs::create_dir_all(directory).map_err(|error| {
            ProjectionError::Storage(format!(
                "cannot create the search index directory {}: {error}",
                directory.display()
            ))
        })?;
        let (schema, fields) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(directory)?;
        let index = Index::open_or_create(mmap, schema)?;
        let writer = if writable {
            Some(Arc::new(Mutex::new(
                index.writer_with_num_threads(1, 15_000_000)?,
            )))
        } else {
            None
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            writer,
            fields,
            cache,
            reloaded_at: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The checkpoints stored with the last commit, by checkpoint name (see [`Feed`]). The
    /// payload is the log's position alone while only the log feeds the index, else a JSON map.
    fn committed_checkpoints(&self) -> Result<BTreeMap<String, u64>, ProjectionError> {
        let metas = self.index.load_metas()?;
        let Some(payload) = metas.payload.as_deref() else {
            return Ok(BTreeMap::new());
        };
        if let Ok(position) = payload.parse::<u64>() {
            return Ok(BTreeMap::from([(Self::NAME.to_owned(), position)]));
        }
        Ok(serde_json::from_str(payload)?)
    }

    /// The checkpoint of `feed` stored with the last commit.
    fn committed_checkpoint_of(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        let name = feed.checkpoint_name(Self::NAME);
        Ok(self
            .committed_checkpoints()?
            .get(name.as_ref())
            .copied()
            .unwrap_or(0))
    }

    /// The log's checkpoint stored with the last commit.
    fn committed_checkpoint(&self) -> Result<u64, ProjectionError> {
        self.committed_checkpoint_of(&Feed::Log)
    }

    /// In read-only mode, reloads the reader when the projector committed since the last reload,
    /// so that a search never answers from before a checkpoint it reported.
    fn catch_up_reader(&self) -> Result<(), ProjectionError> {
        use std::sync::atomic::Ordering;
        if self.writer.is_some() {
            return Ok(()); // the writer reloads after each of its commits
        }
        let committed = self.committed_checkpoint()?;
        if committed > self.reloaded_at.load(Ordering::Acquire) {
            self.reader.reload()?;
            self.reloaded_at.fetch_max(committed, Ordering::AcqRel);
        }
        Ok(())
    }

    fn stored_document(&self, product_id: &str) -> Result<Option<ProductDoc>, ProjectionError> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.product_id, product_id),
            IndexRecordOption::Basic,
        );
        let top = searcher.search(&query, &TopDocs::with_limit(1))?;
        let Some((_, address)) = top.first() else {
            return Ok(None);
        };
        let document: TantivyDocument = searcher.doc(*address)?;
        Ok(Some(self.product_of(&document)?))
    }

    fn product_of(&self, document: &TantivyDocument) -> Result<ProductDoc, ProjectionError> {
        use tantivy::schema::Value;
        let json = document
            .get_first(self.fields.document)
            .and_then(|value| value.as_str())
            .ok_or_else(|| ProjectionError::Storage("a search document has no body".to_owned()))?;
        Ok(serde_json::from_str(json)?)
    }

    fn to_document(&self, product: &ProductDoc) -> Result<TantivyDocument, ProjectionError> {
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

    fn apply_blocking(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let mut changed: HashMap<String, Option<ProductDoc>> = HashMap::new();
        for event in events {
            match event.event_type.as_str() {
                "ProductUpdated" => {
                    let ProductEvent::ProductUpdated(updated) = decode::<ProductEvent>(event)?
                    else {
                        continue;
                    };
                    let product_id = updated.product_id.to_string();
                    let current = self.current(&mut changed, &product_id)?;
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
                "OrderCreated" | "ProductViewed" => {
                    for signal in popularity_signals(event)? {
                        self.add_popularity(&mut changed, &signal.product_id, signal.points)?;
                    }
                }
                _ => {}
            }
        }
        let folded = std::time::Instant::now();
        let Some(writer) = &self.writer else {
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
        let mut checkpoints = self.committed_checkpoints()?;
        checkpoints.insert(feed.checkpoint_name(Self::NAME).into_owned(), last.position);
        let payload = match checkpoints.len() {
            1 if *feed == Feed::Log => last.position.to_string(),
            _ => serde_json::to_string(&checkpoints)?,
        };
        prepared.set_payload(&payload);
        prepared.commit()?;
        let committed = std::time::Instant::now();
        drop(writer);
        self.reader.reload()?;
        tracing::debug!(
            add_us = (added - folded).as_micros() as u64,
            prepare_us = (prepared_at - added).as_micros() as u64,
            commit_us = (committed - prepared_at).as_micros() as u64,
            reload_us = committed.elapsed().as_micros() as u64,
            "search index committed"
        );
        Ok(())
    }

    /// The product's document as this batch leaves it so far.
    fn current(
        &self,
        changed: &mut HashMap<String, Option<ProductDoc>>,
        product_id: &str,
    ) -> Result<Option<ProductDoc>, ProjectionError> {
        if let Some(product) = changed.get(product_id) {
            return Ok(product.clone());
        }
        let stored = self.stored_document(product_id)?;
        changed.insert(product_id.to_owned(), stored.clone());
        Ok(stored)
    }

    fn add_popularity(
        &self,
        changed: &mut HashMap<String, Option<ProductDoc>>,
        product_id: &str,
        points: i64,
    ) -> Result<(), ProjectionError> {
        if let Some(mut product) = self.current(changed, product_id)? {
            product.popularity = product.popularity.saturating_add(points);
            changed.insert(product_id.to_owned(), Some(product));
        }
        Ok(())
    }

    fn search_blocking(&self, query: &SearchQuery) -> Result<SearchResult, ProjectionError> {
        self.catch_up_reader()?;
        let searcher = self.reader.searcher();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut analyzer = self.index.tokenizer_for_field(self.fields.name)?;
        let mut tokens = Vec::new();
        let mut stream = analyzer.token_stream(&query.text);
        while stream.advance() {
            tokens.push(stream.token().text.clone());
        }
        for token in tokens {
            let in_name: Box<dyn Query> = Box::new(BoostQuery::new(
                Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.name, &token),
                    IndexRecordOption::WithFreqs,
                )),
                2.0,
            ));
            let in_description: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(self.fields.description, &token),
                IndexRecordOption::WithFreqs,
            ));
            clauses.push((
                Occur::Must,
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, in_name),
                    (Occur::Should, in_description),
                ])),
            ));
        }
        if let Some(category) = &query.category {
            let term = Term::from_field_text(self.fields.category_key, &category.to_lowercase());
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                    0.0,
                )),
            ));
        }
        if query.min_price_minor.is_some() || query.max_price_minor.is_some() {
            let lower = query
                .min_price_minor
                .map_or(Bound::Unbounded, Bound::Included);
            let upper = query
                .max_price_minor
                .map_or(Bound::Unbounded, Bound::Included);
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(RangeQuery::new_i64_bounds(
                        "price_minor".to_owned(),
                        lower,
                        upper,
                    )),
                    0.0,
                )),
            ));
        }
        let query_tree: Box<dyn Query> = if clauses.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(clauses))
        };
        let limit = query.limit.max(1);
        let top = TopDocs::with_limit(limit)
            .and_offset(query.offset)
            .tweak_score(move |segment_reader: &SegmentReader| {
                let popularity = segment_reader.fast_fields().i64("popularity").ok();
                move |doc: DocId, score: Score| {
                    let popularity = popularity
                        .as_ref()
                        .and_then(|column| column.first(doc))
                        .unwrap_or(0);
                    (score, popularity)
                }
            });
        let (top_docs, total) = searcher.search(&query_tree, &(top, Count))?;
        let mut hits = Vec::with_capacity(top_docs.len());
        for (_, address) in top_docs {
            let document: TantivyDocument = searcher.doc(address)?;
            hits.push(self.product_of(&document)?);
        }
        Ok(SearchResult {
            total: total as u64,
            hits,
        })
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
        tokio::task::spawn_blocking(move || search.apply_blocking(&feed, &events))
            .await
            .map_err(|error| {
                ProjectionError::Storage(format!("indexing task failed: {error}"))
            })??;
        if let Some(cache) = &self.cache {
            cache.invalidate(&[SEARCH_SCOPE.to_owned()]).await;
        }
        Ok(())
    }
}

#[async_trait]
impl SearchIndex for Arc<TantivySearch> {
    async fn search(&self, query: &SearchQuery) -> Result<SearchResult, ProjectionError> {
        let search = self.clone();
        let query = query.clone();
        tokio::task::spawn_blocking(move || search.search_blocking(&query))
            .await
            .map_err(|error| ProjectionError::Storage(format!("search task failed: {error}")))?
    }

    fn projection_name(&self) -> &'static str {
        TantivySearch::NAME
    }

    fn kind(&self) -> &'static str {
        "tantivy"
    }
}
