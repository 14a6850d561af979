//! The embedded search index on Tantivy: the search port's adapter of `mercato serve` with no
//! configuration.
//!
//! The Tantivy index is a projection of its own: it folds `ProductUpdated` (the whole product)
//! and the popularity signals (`StockCommitted`, `ProductViewed`) into one document per product,
//! and stores its checkpoint in the commit's payload, so a batch and its checkpoint become
//! visible together (exactly once, across crashes).
//!
//! Its files: `mod.rs` opens the index and follows the generation in service; `generations.rs`
//! names the generations (`CURRENT`), fences batches against a swap and swaps a rebuilt one in;
//! `projection.rs` applies batches; `query.rs` searches.

mod generations;
mod projection;
mod query;

pub use generations::GenerationSwap;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy};

use crate::ProjectionError;
use crate::cache::{Cache, SEARCH_SCOPE};
use crate::runner::Feed;
use generations::remove_generation_files;

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
    /// The opstamp of the commit the reader was last reloaded at (read-only mode).
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
    pub fn open_read_only(
        directory: &Path,
        cache: Option<Arc<dyn Cache>>,
    ) -> Result<Self, ProjectionError> {
        Self::open_with(directory, cache, false, None)
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
        // Answers cached from the generation left behind are gone (searches from now on read the
        // new one).
        if let (Some(cache), Ok(runtime)) = (&self.cache, tokio::runtime::Handle::try_current()) {
            let cache = cache.clone();
            runtime.spawn(async move { cache.invalidate(&[SEARCH_SCOPE.to_owned()]).await });
        }
        Ok(true)
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
    /// so that a search never answers from before a checkpoint it reported. A commit is told by
    /// its opstamp, which every commit raises whatever feeds the index (the log, or Kafka
    /// partitions, whose checkpoints the log's stays 0 beside).
    fn catch_up_reader(&self) -> Result<(), ProjectionError> {
        use std::sync::atomic::Ordering;
        if self.writer.is_some() {
            return Ok(()); // the writer reloads after each of its commits
        }
        let committed = self.index.load_metas()?.opstamp;
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
