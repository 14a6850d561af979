//! Product search: the port, and its embedded adapter on Tantivy.
//!
//! The Tantivy index is a projection of its own: it folds `ProductUpdated` (the whole product)
//! and the popularity signals (`OrderCreated`, `ProductViewed`) into one document per product,
//! and stores its checkpoint in the commit's payload, so a batch and its checkpoint become
//! visible together (exactly once, across crashes).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
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
///
/// The directory holds generations of the index: the one in service is named by the file
/// `CURRENT` (the directory itself when there is none, as before generations existed). A replay
/// builds a new generation beside it and then replaces `CURRENT` atomically
/// ([`TantivySearch::swap_in`]); every process that has the index open notices at its next
/// search or batch and switches to it, and the writer that left a generation deletes it.
///
/// A batch is applied under a shared lock of `CURRENT.lock`, and a swap takes it exclusively: a
/// swap waits for the batch in flight, and a batch after it sees the new `CURRENT`. So the
/// checkpoints a swap reads from the generation in service are its last ones, which is what lets
/// it carry the Kafka partitions' checkpoints over (a Kafka offset, once committed, is not
/// delivered again).
pub struct TantivySearch {
    root: PathBuf,
    writable: bool,
    /// Pinned to one generation (a replay building it): `CURRENT` is not followed.
    pinned: bool,
    fields: Fields,
    cache: Option<Arc<dyn Cache>>,
    generation: std::sync::RwLock<Arc<Generation>>,
    /// When `CURRENT` was last looked at (milliseconds since `opened`).
    checked_at: std::sync::atomic::AtomicU64,
    /// The generation the last batch was applied to: a batch read before another generation
    /// went into service must not be applied to it.
    applied_to: Mutex<String>,
    opened: std::time::Instant,
}

/// One generation of the index, open.
struct Generation {
    /// `.` (the root directory itself) or the subdirectory's name.
    name: String,
    index: Index,
    reader: IndexReader,
    /// `None` when opened to read only (a query-api process beside the projector's).
    writer: Option<Arc<Mutex<IndexWriter>>>,
    /// The checkpoint of the commit the reader was last reloaded at (read-only mode).
    reloaded_at: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for TantivySearch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TantivySearch")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// The file naming the generation in service.
const CURRENT_FILE: &str = "CURRENT";
/// The file whose lock orders batches and swaps (see [`Fence`]).
const FENCE_FILE: &str = "CURRENT.lock";
/// The root directory itself as a generation.
const ROOT_GENERATION: &str = ".";
/// How often a search or a batch looks whether another generation went into service.
const GENERATION_CHECK_MS: u64 = 200;

impl TantivySearch {
    pub const NAME: &'static str = "search";

    /// Opens the index in service under `directory` to write (the projection), creating it if
    /// needed.
    pub fn open(directory: &Path, cache: Option<Arc<dyn Cache>>) -> Result<Self, ProjectionError> {
        Self::open_with(directory, cache, true, None)
    }

    /// Opens the index in service under `directory` to read only, for a query-api process that
    /// shares the directory with a projector process: searches see each commit of the projector.
    pub fn open_read_only(directory: &Path) -> Result<Self, ProjectionError> {
        Self::open_with(directory, None, false, None)
    }

    /// Opens generation `generation` under `directory` to write, creating it if needed, without
    /// following `CURRENT`: what a replay builds before [`TantivySearch::swap_in`] puts it in
    /// service.
    pub fn open_generation(directory: &Path, generation: &str) -> Result<Self, ProjectionError> {
        Self::open_with(directory, None, true, Some(generation))
    }

    /// The name of the generation in service under `directory`.
    pub fn current_generation(directory: &Path) -> String {
        std::fs::read_to_string(directory.join(CURRENT_FILE))
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| is_generation_name(name))
            .unwrap_or_else(|| ROOT_GENERATION.to_owned())
    }

    /// Sets the log's checkpoint of an empty generation (a replay that starts after
    /// `position`): an empty commit carrying it.
    pub fn start_at(&self, position: u64) -> Result<(), ProjectionError> {
        let generation = self.generation();
        let Some(writer) = &generation.writer else {
            return Err(ProjectionError::Storage(
                "the search index was opened to read only".to_owned(),
            ));
        };
        let mut writer = match writer.lock() {
            Ok(writer) => writer,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&position.to_string());
        prepared.commit()?;
        drop(writer);
        generation.reader.reload()?;
        Ok(())
    }

    /// The name of this index's generation.
    pub fn generation_name(&self) -> String {
        self.generation().name.clone()
    }

    /// Puts this rebuilt generation (opened with [`TantivySearch::open_generation`]) in service
    /// at the log position it was built to, unless a Kafka partition's checkpoint of the
    /// generation in service is beyond that position ([`GenerationSwap::Behind`]: catch up and
    /// try again). Blocking.
    ///
    /// Under the exclusive [`Fence`], it reads the checkpoints of the generation in service,
    /// commits to this one each Kafka partition's checkpoint that one has (not the dead-letter
    /// replays') set to its own log position, closes its writer and replaces `CURRENT`. An event
    /// beyond that position on a partition was not applied to the generation in service either,
    /// so its offset is not committed and the consumer applies it to this one. The log's
    /// checkpoint of the generation in service may be ahead: a projection fed from the log reads
    /// on from this one's. The generation it replaced is deleted by the writer that leaves it, or
    /// by [`TantivySearch::remove_generation_if_unused`] when no process holds it.
    pub fn swap_in(&self) -> Result<GenerationSwap, ProjectionError> {
        let generation = self.generation();
        if !self.pinned || generation.writer.is_none() {
            return Err(ProjectionError::Storage(format!(
                "the search index generation {} is not a rebuild open to write",
                generation.name
            )));
        }
        let _fence = Fence::take(&self.root, true)?;
        let live = Self::current_generation(&self.root);
        let live_checkpoints = {
            let path = generation_path(&self.root, &live);
            if path.join("meta.json").exists() {
                let directory = tantivy::directory::MmapDirectory::open(&path)?;
                parse_checkpoints(Index::open(directory)?.load_metas()?.payload.as_deref())?
            } else {
                BTreeMap::new() // no index was ever committed there
            }
        };
        let mut checkpoints = generation.committed_checkpoints()?;
        let position = checkpoints.get(Self::NAME).copied().unwrap_or(0);
        // The Kafka partitions' checkpoints. (The log's may be ahead: a serving projection fed
        // from the log reads on from this generation's position.)
        let carried: Vec<(&String, &u64)> = live_checkpoints
            .iter()
            .filter(|(name, _)| {
                **name != Self::NAME && **name != Feed::Replay.checkpoint_name(Self::NAME)
            })
            .collect();
        if let Some(ahead) = carried
            .iter()
            .map(|(_, at)| **at)
            .filter(|at| *at > position)
            .max()
        {
            return Ok(GenerationSwap::Behind(ahead));
        }
        let carries = !carried.is_empty();
        for (name, _) in carried {
            checkpoints.insert(name.clone(), position);
        }
        let closed = open_generation(&self.root, &generation.name, false)?;
        let writer = {
            let mut slot = match self.generation.write() {
                Ok(slot) => slot,
                Err(poisoned) => poisoned.into_inner(),
            };
            let open = std::mem::replace(&mut *slot, Arc::new(closed));
            drop(generation);
            Arc::try_unwrap(open)
                .ok()
                .and_then(|open| open.writer)
                .and_then(|writer| Arc::try_unwrap(writer).ok())
                .ok_or_else(|| {
                    ProjectionError::Storage(
                        "the rebuilt search index generation is still in use".to_owned(),
                    )
                })?
        };
        let mut writer = match writer.into_inner() {
            Ok(writer) => writer,
            Err(poisoned) => poisoned.into_inner(),
        };
        if carries {
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&encode_checkpoints(&checkpoints)?);
            prepared.commit()?;
        }
        // Merges finish and the writer's lock is let go before a serving process opens it.
        writer.wait_merging_threads()?;
        let previous = Self::publish(&self.root, &self.generation_name())?;
        Ok(GenerationSwap::Swapped { previous, position })
    }

    /// Puts generation `generation` under `directory` in service (an atomic replace of
    /// `CURRENT`), after its writer was closed, under the exclusive [`Fence`]. Returns the
    /// generation it replaced.
    fn publish(directory: &Path, generation: &str) -> Result<String, ProjectionError> {
        if !is_generation_name(generation) || generation == ROOT_GENERATION {
            return Err(ProjectionError::Storage(format!(
                "{generation:?} is not a search index generation"
            )));
        }
        let previous = Self::current_generation(directory);
        let temporary = directory.join(format!("{CURRENT_FILE}.tmp"));
        let io = |error: std::io::Error| {
            ProjectionError::Storage(format!(
                "cannot put search index generation {generation} in service under {}: {error}",
                directory.display()
            ))
        };
        std::fs::write(&temporary, generation).map_err(io)?;
        std::fs::File::open(&temporary)
            .and_then(|file| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&temporary, directory.join(CURRENT_FILE)).map_err(io)?;
        if let Ok(parent) = std::fs::File::open(directory) {
            let _ = parent.sync_all();
        }
        Ok(previous)
    }

    /// Deletes generation `generation` under `directory` unless it is in service or a process
    /// still writes it. True when it is gone.
    pub fn remove_generation_if_unused(directory: &Path, generation: &str) -> bool {
        if generation == Self::current_generation(directory) || !is_generation_name(generation) {
            return false;
        }
        let Ok(index) = open_index(&generation_path(directory, generation)) else {
            return false;
        };
        // Taking the writer's lock proves no process writes it any more.
        let Ok(writer) = index.writer_with_num_threads::<TantivyDocument>(1, 15_000_000) else {
            return false;
        };
        drop(writer);
        drop(index);
        remove_generation_files(directory, generation);
        true
    }

    /// Names of the generations under `directory` that are not in service (left by a replay
    /// that was interrupted, or by a switch no writer finished).
    pub fn stale_generations(directory: &Path) -> Vec<String> {
        let current = Self::current_generation(directory);
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| is_generation_name(name) && *name != current)
            .collect();
        if current != ROOT_GENERATION && directory.join("meta.json").exists() {
            names.push(ROOT_GENERATION.to_owned());
        }
        names.sort();
        names
    }

    fn open_with(
        directory: &Path,
        cache: Option<Arc<dyn Cache>>,
        writable: bool,
        pinned: Option<&str>,
    ) -> Result<Self, ProjectionError> {
        std::fs::create_dir_all(directory).map_err(|error| {
            ProjectionError::Storage(format!(
                "cannot create the search index directory {}: {error}",
                directory.display()
            ))
        })?;
        let name = match pinned {
            Some(name) => name.to_owned(),
            None => Self::current_generation(directory),
        };
        let generation = open_generation(directory, &name, writable)?;
        Ok(Self {
            root: directory.to_owned(),
            writable,
            pinned: pinned.is_some(),
            fields: schema().1,
            cache,
            applied_to: Mutex::new(generation.name.clone()),
            generation: std::sync::RwLock::new(Arc::new(generation)),
            checked_at: std::sync::atomic::AtomicU64::new(0),
            opened: std::time::Instant::now(),
        })
    }

    /// The generation this index reads and writes now.
    fn generation(&self) -> Arc<Generation> {
        match self.generation.read() {
            Ok(generation) => generation.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Switches to the generation in service if another one went into service since the last
    /// look (at most every [`GENERATION_CHECK_MS`], unless `now`). True when it switched.
    fn follow_current(&self, now: bool) -> Result<bool, ProjectionError> {
        use std::sync::atomic::Ordering;
        if self.pinned {
            return Ok(false);
        }
        let elapsed = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let checked_at = self.checked_at.load(Ordering::Acquire);
        if !now && elapsed.saturating_sub(checked_at) < GENERATION_CHECK_MS && checked_at != 0 {
            return Ok(false);
        }
        self.checked_at.store(elapsed.max(1), Ordering::Release);
        let current = Self::current_generation(&self.root);
        let old = self.generation();
        if current == old.name {
            return Ok(false);
        }
        // The writer of the old generation lets go of its lock before the new one is opened.
        let mut slot = match self.generation.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if slot.name == current {
            return Ok(false);
        }
        let left = slot.name.clone();
        let new = open_generation(&self.root, &current, self.writable)?;
        *slot = Arc::new(new);
        drop(slot);
        drop(old);
        tracing::info!(from = %left, to = %current, "search index switched to a rebuilt generation");
        if self.writable {
            remove_generation_files(&self.root, &left);
        }
        Ok(true)
    }

    /// The checkpoint of `feed` stored with the last commit of the generation in service.
    /// (A writer looks at `CURRENT` every time: its checkpoints are those of the generation its
    /// next batch goes to.)
    fn committed_checkpoint_of(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.follow_current(self.writable)?;
        self.generation().committed_checkpoint_of(feed)
    }

    fn stored_document(
        &self,
        generation: &Generation,
        product_id: &str,
    ) -> Result<Option<ProductDoc>, ProjectionError> {
        let searcher = generation.reader.searcher();
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
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
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
                "OrderCreated" | "ProductViewed" => {
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
        Ok(())
    }

    /// The product's document as this batch leaves it so far.
    fn current(
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

    fn add_popularity(
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

    fn search_blocking(&self, query: &SearchQuery) -> Result<SearchResult, ProjectionError> {
        self.follow_current(false)?;
        let generation = self.generation();
        generation.catch_up_reader()?;
        let searcher = generation.reader.searcher();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut analyzer = generation.index.tokenizer_for_field(self.fields.name)?;
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

impl Generation {
    /// The checkpoints stored with the last commit, by checkpoint name (see [`Feed`]). The
    /// payload is the log's position alone while only the log feeds the index, else a JSON map.
    fn committed_checkpoints(&self) -> Result<BTreeMap<String, u64>, ProjectionError> {
        parse_checkpoints(self.index.load_metas()?.payload.as_deref())
    }

    /// The checkpoint of `feed` stored with the last commit.
    fn committed_checkpoint_of(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        let name = feed.checkpoint_name(TantivySearch::NAME);
        Ok(self
            .committed_checkpoints()?
            .get(name.as_ref())
            .copied()
            .unwrap_or(0))
    }

    /// In read-only mode, reloads the reader when the projector committed since the last reload,
    /// so that a search never answers from before a checkpoint it reported.
    fn catch_up_reader(&self) -> Result<(), ProjectionError> {
        use std::sync::atomic::Ordering;
        if self.writer.is_some() {
            return Ok(()); // the writer reloads after each of its commits
        }
        let committed = self.committed_checkpoint_of(&Feed::Log)?;
        if committed > self.reloaded_at.load(Ordering::Acquire) {
            self.reader.reload()?;
            self.reloaded_at.fetch_max(committed, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// The checkpoints a commit's payload holds, by checkpoint name (see [`Feed`]): the log's
/// position alone while only the log feeds the index, else a JSON map.
fn parse_checkpoints(payload: Option<&str>) -> Result<BTreeMap<String, u64>, ProjectionError> {
    let Some(payload) = payload else {
        return Ok(BTreeMap::new());
    };
    if let Ok(position) = payload.parse::<u64>() {
        return Ok(BTreeMap::from([(TantivySearch::NAME.to_owned(), position)]));
    }
    Ok(serde_json::from_str(payload)?)
}

/// The payload [`parse_checkpoints`] reads back.
fn encode_checkpoints(checkpoints: &BTreeMap<String, u64>) -> Result<String, ProjectionError> {
    match checkpoints.iter().next() {
        Some((name, position)) if checkpoints.len() == 1 && name == TantivySearch::NAME => {
            Ok(position.to_string())
        }
        _ => Ok(serde_json::to_string(checkpoints)?),
    }
}

/// What [`TantivySearch::swap_in`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenerationSwap {
    /// The rebuilt generation is in service at this log position; `previous` left service.
    Swapped { previous: String, position: u64 },
    /// A checkpoint of the generation in service is at this position, beyond the rebuilt one's.
    Behind(u64),
}

/// A lock of `{root}/CURRENT.lock` (an OS file lock, let go when dropped or when the process
/// dies): shared while a batch is applied to the generation in service, exclusive while
/// [`TantivySearch::swap_in`] replaces it.
struct Fence {
    _locked: std::fs::File,
}

impl Fence {
    fn take(root: &Path, exclusive: bool) -> Result<Self, ProjectionError> {
        let path = root.join(FENCE_FILE);
        let io = |error: std::io::Error| {
            ProjectionError::Storage(format!("cannot lock {}: {error}", path.display()))
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        // Called through the trait: the standard library's own file locks are newer than the
        // Rust version this workspace supports.
        if exclusive {
            fs4::FileExt::lock_exclusive(&file).map_err(io)?;
        } else {
            fs4::FileExt::lock_shared(&file).map_err(io)?;
        }
        Ok(Fence { _locked: file })
    }
}

/// Whether `name` can name a generation: `.` or `gen-` and letters, digits, `-` and `_`.
fn is_generation_name(name: &str) -> bool {
    name == ROOT_GENERATION
        || (name.starts_with("gen-")
            && name.len() <= 64
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'))
}

fn generation_path(root: &Path, name: &str) -> PathBuf {
    if name == ROOT_GENERATION {
        root.to_owned()
    } else {
        root.join(name)
    }
}

fn open_index(path: &Path) -> Result<Index, ProjectionError> {
    std::fs::create_dir_all(path).map_err(|error| {
        ProjectionError::Storage(format!(
            "cannot create the search index directory {}: {error}",
            path.display()
        ))
    })?;
    let mmap = tantivy::directory::MmapDirectory::open(path)?;
    Ok(Index::open_or_create(mmap, schema().0)?)
}

fn open_generation(root: &Path, name: &str, writable: bool) -> Result<Generation, ProjectionError> {
    let index = open_index(&generation_path(root, name))?;
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
    Ok(Generation {
        name: name.to_owned(),
        index,
        reader,
        writer,
        reloaded_at: std::sync::atomic::AtomicU64::new(0),
    })
}

/// Deletes a generation's files: its directory, or for the root generation the index files in
/// the root (not `CURRENT` nor other generations).
fn remove_generation_files(root: &Path, name: &str) {
    let result = if name == ROOT_GENERATION {
        std::fs::read_dir(root).and_then(|entries| {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let file_name = file_name.to_string_lossy();
                if file_name.starts_with(CURRENT_FILE) || is_generation_name(&file_name) {
                    continue;
                }
                if entry.file_type()?.is_file() {
                    std::fs::remove_file(entry.path())?;
                }
            }
            Ok(())
        })
    } else {
        std::fs::remove_dir_all(root.join(name))
    };
    if let Err(error) = result {
        tracing::warn!(generation = name, %error, "cannot delete a search index generation that left service");
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
