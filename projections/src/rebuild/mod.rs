//! Rebuilding read models from the log beside the ones in service, and swapping them in
//! (`mercato replay`), and what each projection's state is (`mercato projections`).
//!
//! How a rebuild stays invisible until it is complete is in [`shadow`]: SQL read models are
//! rebuilt in a shadow database, the Tantivy index as a new generation
//! ([`TantivySearch::swap_in`]), carts and popularity kept in Redis under a shadow key prefix
//! ([`crate::redis_models`]), and an OpenSearch index as a new numbered index behind the alias
//! ([`crate::search::opensearch`]). [`rebuild`] prepares each read model's fresh instance (resuming an
//! interrupted rebuild), feeds them the log together, and swaps each in once it caught up.

pub mod shadow;
pub mod status;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventstore::EventStore;

pub use shadow::{
    CatchUp, ReplayRun, SHADOW_SCHEMA, Swap, catch_up, clear, open_shadow, run_of, runs,
    shadow_exists, shadow_url, start_run, swap_tables, swap_tables_with,
};
pub use status::{ProjectionStatus, RebuildStatus, status};

use crate::cache::SEARCH_SCOPE;
use crate::catalogue::{Placement, ReadModel, ReadModelStores, SearchStore, ShadowSearch};
use crate::readdb::ReadDb;
use crate::redis_models::RedisModels;
use crate::search::opensearch::{self, OpenSearchIndex};
use crate::search::{GenerationSwap, TantivySearch};
use crate::{Feed, Projection, ProjectionError};

/// How many events one read of the log brings (and each rebuilt read model applies at once):
/// larger pages mean fewer commits (the search index commits a segment per page), at about 40 MB
/// of memory per page in flight (BENCHMARKS.md: 10,000 replayed about 96,000 events/s, 25,000
/// about 135,000 in 210 MB, 50,000 about 150,000 in 360 MB).
pub const PAGE: usize = 25_000;
/// How often a swap finds the live read model ahead and catches up again before giving up.
const SWAP_ATTEMPTS: usize = 20;

/// How the names of Tantivy index generations begin (an OpenSearch rebuild records an index name
/// in the same place).
pub const GENERATION_PREFIX: &str = "gen-";

/// What to rebuild.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildRequest {
    /// The read models, in the order they are swapped in.
    pub models: Vec<ReadModel>,
    /// Rebuild from the events after this position only (the rebuilt read model starts empty
    /// there); `None` is the whole log, or where an interrupted rebuild stopped.
    pub from: Option<u64>,
    /// Start over instead of resuming an interrupted rebuild of the same read models.
    pub restart: bool,
}

/// What a rebuild did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Each read model rebuilt and in service, and the position it went in service at.
    pub models: Vec<(&'static str, u64)>,
    /// How many events were read from the log, catching up included.
    pub events_read: u64,
}

/// What a rebuild tells as it goes (the command line draws a progress bar from it).
pub trait Observer {
    /// Interrupted rebuilds that go on from where they stopped: each read model and position.
    fn resuming(&mut self, _resumed: &[(&'static str, u64)]) {}
    /// The rebuild reads the log after `from` up to `head`.
    fn started(&mut self, _from: u64, _head: u64) {}
    /// Every rebuilt read model has applied `read` events, up to `position`.
    fn progress(&mut self, _read: u64, _position: u64) {}
    /// The first catch-up reached the head; the swaps follow.
    fn caught_up(&mut self) {}
    /// Something the operator should know, which does not stop the rebuild.
    fn warning(&mut self, _message: &str) {}
}

/// An observer that tells nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Reading the log or writing a read model failed while doing `what`.
    #[error("{what}")]
    ReadModel {
        what: String,
        #[source]
        source: ProjectionError,
    },
    /// The read model in service kept moving ahead of the rebuilt one.
    #[error(
        "the live read model {name} kept moving ahead of its rebuild; the rebuild is kept: run the same command again to resume"
    )]
    KeptMovingAhead { name: &'static str },
}

fn failed(what: impl Into<String>) -> impl FnOnce(ProjectionError) -> RebuildError {
    let what = what.into();
    move |source| RebuildError::ReadModel { what, source }
}

/// One read model being rebuilt: its fresh instance writing into the shadow, and how it is
/// swapped in.
struct Target {
    model: ReadModel,
    projection: Arc<dyn Projection>,
    kind: Kind,
}

enum Kind {
    /// SQL tables of the read-model database.
    Tables(&'static [&'static str]),
    /// A generation of the Tantivy index under this directory.
    Generation {
        root: std::path::PathBuf,
        search: Arc<TantivySearch>,
    },
    /// Carts or popularity kept in Redis: built under the shadow prefix of these (live) models.
    Redis(RedisModels),
    /// The OpenSearch index: built into concrete index `name`, then put behind the alias.
    OpenSearch {
        index: OpenSearchIndex,
        name: String,
    },
}

/// Rebuilds `request.models` from `store`'s log beside the read models in service in `stores`,
/// and swaps each in once it caught up with the log.
pub async fn rebuild(
    store: Arc<dyn EventStore>,
    stores: &ReadModelStores,
    request: &RebuildRequest,
    observer: &mut dyn Observer,
) -> Result<Rebuilt, RebuildError> {
    let shadow = open_shadow(&stores.db, &stores.db_url)
        .await
        .map_err(failed(
            "cannot create the database the read models are rebuilt in",
        ))?;
    let mut targets = Vec::with_capacity(request.models.len());
    let mut resumed = Vec::new();
    for model in &request.models {
        let (target, resumed_at) = prepare(*model, request, stores, &shadow, observer).await?;
        if let Some(position) = resumed_at {
            resumed.push((model.name(), position));
        }
        targets.push(target);
    }
    if !resumed.is_empty() {
        observer.resuming(&resumed);
    }
    let head = store
        .head_position()
        .await
        .map_err(|error| failed("cannot read the log's head")(error.into()))?;
    let mut from = u64::MAX;
    for target in &targets {
        from = from.min(
            target
                .projection
                .checkpoint(&Feed::Log)
                .await
                .map_err(failed(format!(
                    "cannot read {}'s checkpoint",
                    target.model.name()
                )))?,
        );
    }
    observer.started(from, head);
    let projections: Vec<Arc<dyn Projection>> = targets
        .iter()
        .map(|target| target.projection.clone())
        .collect();
    let done = catch_up(store.clone(), &projections, PAGE, |done| {
        observer.progress(done.read, done.position)
    })
    .await
    .map_err(failed(
        "the rebuild failed; run the same command again to resume",
    ))?;
    observer.caught_up();
    drop(projections);
    let mut rebuilt = Rebuilt {
        models: Vec::with_capacity(targets.len()),
        events_read: done.read,
    };
    for target in targets {
        let (position, caught_up) =
            swap_in(target, store.clone(), stores, &shadow, observer).await?;
        rebuilt.events_read += caught_up;
        rebuilt.models.push(position);
    }
    Ok(rebuilt)
}

/// The fresh instance of `model` writing into the shadow, resuming its unfinished rebuild
/// unless told otherwise. Also says where it resumed.
async fn prepare(
    model: ReadModel,
    request: &RebuildRequest,
    stores: &ReadModelStores,
    shadow: &ReadDb,
    observer: &mut dyn Observer,
) -> Result<(Target, Option<u64>), RebuildError> {
    match (model.placement(stores), &stores.redis, &stores.search) {
        (Placement::Redis, Some(models), _) => {
            return prepare_redis(model, request, stores, shadow, models).await;
        }
        (Placement::OpenSearch, _, SearchStore::OpenSearch(index)) => {
            return prepare_opensearch(request, stores, shadow, index, observer).await;
        }
        _ => {}
    }
    let name = model.name();
    let failed = |what: &str| failed(format!("cannot {what} the rebuild of {name}"));
    let from = request.from.unwrap_or(0);
    let existing = run_of(shadow, name).await.map_err(failed("read"))?;
    let resume = existing.as_ref().filter(|run| resumable(run, request));
    let tables = model.tables(stores);
    let search_root = match &stores.search {
        SearchStore::Tantivy { root, .. } if model == ReadModel::Search => Some(root.as_path()),
        _ => None,
    };
    let generation = match (search_root, resume) {
        (Some(_), Some(run)) => run.generation.clone(),
        (Some(_), None) => Some(format!(
            "{GENERATION_PREFIX}{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")
        )),
        (None, _) => None,
    };
    if resume.is_none() {
        if let (Some(root), Some(run)) = (search_root, &existing)
            && let Some(old) = &run.generation
        {
            TantivySearch::remove_generation_if_unused(root, old);
        }
        start_run(shadow, &new_run(name, request, generation.clone()), tables)
            .await
            .map_err(failed("start"))?;
    }
    let (projection, kind) = match search_root {
        Some(root) => {
            let generation = generation.unwrap_or_default();
            if resume.is_none() {
                // A directory of that name left by an interrupted run is not trusted.
                let _ = std::fs::remove_dir_all(root.join(&generation));
            }
            let search = TantivySearch::open_generation(root, &generation)
                .map_err(failed("open the search index generation of"))?;
            if resume.is_none() && from > 0 {
                search.start_at(from).map_err(failed("start"))?;
            }
            let search = Arc::new(search);
            let projection = model
                .open_shadow(
                    stores,
                    shadow,
                    Some(ShadowSearch::Generation(search.clone())),
                )
                .map_err(failed("open"))?;
            (
                projection,
                Kind::Generation {
                    root: root.to_owned(),
                    search,
                },
            )
        }
        None => (
            model
                .open_shadow(stores, shadow, None)
                .map_err(failed("open"))?,
            Kind::Tables(tables),
        ),
    };
    let resumed_at = resumed_at(&projection, resume.is_some())
        .await
        .map_err(failed("read"))?;
    Ok((
        Target {
            model,
            projection,
            kind,
        },
        resumed_at,
    ))
}

/// Where a resumed rebuild goes on from (its checkpoint of the log); `None` for a new one.
async fn resumed_at(
    projection: &Arc<dyn Projection>,
    resume: bool,
) -> Result<Option<u64>, ProjectionError> {
    Ok(if resume {
        Some(projection.checkpoint(&Feed::Log).await?)
    } else {
        None
    })
}

/// Whether a recorded replay run may be resumed for `request`.
fn resumable(run: &ReplayRun, request: &RebuildRequest) -> bool {
    !request.restart && request.from.is_none_or(|from| from == run.from_position)
}

/// A new record of a replay run of `name` starting now.
fn new_run(name: &str, request: &RebuildRequest, generation: Option<String>) -> ReplayRun {
    ReplayRun {
        projection: name.to_owned(),
        from_position: request.from.unwrap_or(0),
        generation,
        started_at: chrono::Utc::now().to_rfc3339(),
    }
}

/// As [`prepare`], for carts or popularity kept in Redis (`live` being the models in service):
/// rebuilt under the shadow prefix, where the run is recorded too.
async fn prepare_redis(
    model: ReadModel,
    request: &RebuildRequest,
    stores: &ReadModelStores,
    shadow: &ReadDb,
    live: &RedisModels,
) -> Result<(Target, Option<u64>), RebuildError> {
    let name = model.name();
    let failed = |what: &str| {
        failed(format!(
            "cannot {what} the rebuild of {name} in Redis (check REDIS_URL and that Redis is up)"
        ))
    };
    let existing = live.replay_run(name).await.map_err(failed("read"))?;
    let resume = existing.as_ref().is_some_and(|run| resumable(run, request));
    if !resume {
        live.start_replay(&new_run(name, request, None))
            .await
            .map_err(failed("start"))?;
    }
    let projection = model
        .open_shadow(stores, shadow, None)
        .map_err(failed("open"))?;
    let resumed_at = resumed_at(&projection, resume)
        .await
        .map_err(failed("read"))?;
    Ok((
        Target {
            model,
            projection,
            kind: Kind::Redis(live.clone()),
        },
        resumed_at,
    ))
}

/// As [`prepare`], for the search index on OpenSearch: rebuilt into a new numbered index, its
/// popularity and checkpoint in the shadow database, where the run names the index.
async fn prepare_opensearch(
    request: &RebuildRequest,
    stores: &ReadModelStores,
    shadow: &ReadDb,
    index: &OpenSearchIndex,
    observer: &mut dyn Observer,
) -> Result<(Target, Option<u64>), RebuildError> {
    let model = ReadModel::Search;
    let name = model.name();
    let failed = |what: &str| {
        failed(format!(
            "cannot {what} the rebuild of {name} on OpenSearch at {} (check OPENSEARCH_URL and that the cluster is up)",
            index.base_url()
        ))
    };
    let existing = run_of(shadow, name).await.map_err(failed("read"))?;
    let indices = index
        .indices()
        .await
        .map_err(failed("list the indices for"))?;
    // The index a run fills must still exist and not be in service: a swap that committed
    // before its run was cleared left it in service, and an index deleted meanwhile is gone.
    let unused = |run: &ReplayRun| {
        run.generation
            .as_ref()
            .is_some_and(|generation| indices.get(generation) == Some(&false))
    };
    let resume = existing
        .as_ref()
        .filter(|run| resumable(run, request) && unused(run));
    if let Some(run) = &existing
        && resume.is_none()
        && resumable(run, request)
    {
        observer.warning(&format!(
            "the index {} of the interrupted rebuild of {name} is gone or in service: starting over",
            run.generation.as_deref().unwrap_or("(none)")
        ));
    }
    let rebuilt = match resume {
        Some(run) => run.generation.clone().unwrap_or_default(),
        None => {
            if let Some(run) = &existing
                && unused(run)
                && let Some(old) = &run.generation
            {
                index
                    .delete_index(old)
                    .await
                    .map_err(failed("drop the index of an earlier"))?;
            }
            let created = index
                .rebuild_into_new_index()
                .await
                .map_err(failed("create the index of"))?;
            start_run(
                shadow,
                &new_run(name, request, Some(created.clone())),
                model.tables(stores),
            )
            .await
            .map_err(failed("start"))?;
            created
        }
    };
    // What the swap puts in the read-model database: the rebuilt index is the one in service.
    opensearch::record_in_service(shadow, index.alias(), &rebuilt)
        .await
        .map_err(failed("start"))?;
    let projection = model
        .open_shadow(
            stores,
            shadow,
            Some(ShadowSearch::OpenSearch {
                index: index.clone(),
                into: rebuilt.clone(),
            }),
        )
        .map_err(failed("open"))?;
    let resumed_at = resumed_at(&projection, resume.is_some())
        .await
        .map_err(failed("read"))?;
    Ok((
        Target {
            model,
            projection,
            kind: Kind::OpenSearch {
                index: index.clone(),
                name: rebuilt,
            },
        },
        resumed_at,
    ))
}

/// Puts a caught-up rebuilt read model in service, catching up again while the live one is
/// ahead. Returns its name and checkpoint, and how many more events it read.
async fn swap_in(
    target: Target,
    store: Arc<dyn EventStore>,
    stores: &ReadModelStores,
    shadow: &ReadDb,
    observer: &mut dyn Observer,
) -> Result<((&'static str, u64), u64), RebuildError> {
    let name = target.model.name();
    let failed = |what: &str| failed(format!("cannot {what} the rebuilt read model {name}"));
    let mut read = 0;
    let kind = target.kind;
    for _ in 0..SWAP_ATTEMPTS {
        let checkpoint = target
            .projection
            .checkpoint(&Feed::Log)
            .await
            .map_err(failed("read the checkpoint of"))?;
        let swap = match &kind {
            Kind::Tables(tables) => {
                swap_tables(&stores.db, &stores.db_url, shadow, name, tables, checkpoint)
                    .await
                    .map_err(failed("swap in"))?
            }
            Kind::Redis(live) => live
                .swap_replay(name, checkpoint)
                .await
                .map_err(failed("swap in"))?,
            Kind::OpenSearch {
                index,
                name: rebuilt,
            } => {
                let (swap, left) = opensearch::swap_in_rebuilt(
                    index,
                    &stores.db,
                    &stores.db_url,
                    shadow,
                    rebuilt,
                    checkpoint,
                )
                .await
                .map_err(failed("swap in"))?;
                if swap == Swap::Swapped {
                    retire_index(index, left.as_deref(), rebuilt, stores, observer).await;
                }
                swap
            }
            Kind::Generation { root, search } => {
                let rebuilt = search.clone();
                let swap = tokio::task::spawn_blocking(move || rebuilt.swap_in())
                    .await
                    .map_err(|error| {
                        failed("swap in")(ProjectionError::Storage(format!(
                            "the swap task failed: {error}"
                        )))
                    })?
                    .map_err(failed("swap in"))?;
                match swap {
                    GenerationSwap::Swapped { previous, .. } => {
                        clear(shadow, name, &[]).await.map_err(failed("finish"))?;
                        // A serving process deletes the generation it leaves; with none
                        // running, it is deleted here.
                        TantivySearch::remove_generation_if_unused(root, &previous);
                        Swap::Swapped
                    }
                    GenerationSwap::Behind(at) => Swap::Behind(at),
                }
            }
        };
        match swap {
            Swap::Swapped => {
                cached_answers_replaced(&kind, name, stores).await?;
                return Ok(((name, checkpoint), read));
            }
            Swap::Contended => tokio::time::sleep(Duration::from_millis(50)).await,
            Swap::Behind(_) => {
                let more = catch_up(
                    store.clone(),
                    std::slice::from_ref(&target.projection),
                    PAGE,
                    |_| {},
                )
                .await
                .map_err(failed("catch up"))?;
                read += more.read;
            }
        }
    }
    Err(RebuildError::KeptMovingAhead { name })
}

/// After a rebuilt read model went in service: its swap is counted (a table swap counted itself,
/// in its transaction), which makes every serving process drop its cached answers, and a shared
/// cache drops them at once.
async fn cached_answers_replaced(
    kind: &Kind,
    name: &'static str,
    stores: &ReadModelStores,
) -> Result<(), RebuildError> {
    if matches!(kind, Kind::Redis(_) | Kind::Generation { .. }) {
        stores
            .db
            .record_swap(name)
            .await
            .map_err(failed(format!("cannot record the swap of {name}")))?;
    }
    if let Some(cache) = &stores.cache {
        cache.invalidate_all().await;
    }
    Ok(())
}

/// After a rebuilt OpenSearch index went in service: deletes the index the alias `left` (a
/// serving projection whose batch still went there deletes it again, see
/// [`crate::search::opensearch`]) and drops the cached search answers.
async fn retire_index(
    index: &OpenSearchIndex,
    left: Option<&str>,
    rebuilt: &str,
    stores: &ReadModelStores,
    observer: &mut dyn Observer,
) {
    if let Some(left) = left.filter(|left| *left != rebuilt)
        && let Err(error) = index.delete_index(left).await
    {
        observer.warning(&format!(
            "warning: the search index {left} is out of service but could not be deleted ({error}); `replay --discard` deletes it"
        ));
    }
    if let Some(cache) = &stores.cache {
        cache.invalidate(&[SEARCH_SCOPE.to_owned()]).await;
    }
}

/// Drops every unfinished rebuild: the shadow, any search index generation not in service, the
/// shadow keys in Redis and the OpenSearch indices of the alias not in service. Answers whether
/// there was anything to drop.
pub async fn discard(
    stores: &ReadModelStores,
    observer: &mut dyn Observer,
) -> Result<bool, RebuildError> {
    let live = &stores.db;
    let live_url = stores.db_url.as_str();
    let mut had = if shadow_exists(live, live_url)
        .await
        .map_err(failed("cannot look for unfinished rebuilds"))?
    {
        let shadow = open_shadow(live, live_url)
            .await
            .map_err(failed("cannot open the unfinished rebuilds"))?;
        let runs = runs(&shadow)
            .await
            .map_err(failed("cannot read the unfinished rebuilds"))?;
        shadow.pool().close().await;
        !runs.is_empty()
    } else {
        false
    };
    shadow::discard(live, live_url)
        .await
        .map_err(failed("cannot drop the unfinished rebuilds"))?;
    let mut removed = 0;
    if let SearchStore::Tantivy { root, .. } = &stores.search {
        removed += remove_stale_generations(root);
    }
    if let Some(models) = &stores.redis {
        had |= models
            .discard_replays()
            .await
            .map_err(failed("cannot drop the unfinished rebuilds kept in Redis"))?;
    }
    if let SearchStore::OpenSearch(index) = &stores.search {
        removed += discard_indices(index, live, observer).await?;
    }
    Ok(had || removed > 0)
}

/// Deletes every generation of the Tantivy index under `root` that no process holds and that
/// is not in service; answers how many.
fn remove_stale_generations(root: &Path) -> usize {
    TantivySearch::stale_generations(root)
        .into_iter()
        .filter(|generation| TantivySearch::remove_generation_if_unused(root, generation))
        .count()
}

/// Deletes the indices of the OpenSearch alias that are neither behind the alias nor recorded as
/// in service (an unfinished rebuild's, one a swap left, one a late batch re-created). Nothing is
/// deleted while no index is in service: the indices may then be the only copy the alias is about
/// to get back. Answers how many it deleted.
async fn discard_indices(
    index: &OpenSearchIndex,
    live: &ReadDb,
    observer: &mut dyn Observer,
) -> Result<usize, RebuildError> {
    let failed = |what: &str| {
        failed(format!(
            "cannot {what} on {} (check OPENSEARCH_URL and that the cluster is up)",
            index.base_url()
        ))
    };
    let indices = index
        .indices()
        .await
        .map_err(failed("list the search indices"))?;
    let recorded = opensearch::index_in_service(live, index.alias())
        .await
        .map_err(failed("read which search index is in service"))?;
    if !indices.values().any(|in_service| *in_service) {
        if !indices.is_empty() {
            observer.warning(&format!(
                "the search alias {} points at no index: its indices are kept",
                index.alias()
            ));
        }
        return Ok(0);
    }
    let mut removed = 0;
    for (name, in_service) in indices {
        if !in_service && recorded.as_deref() != Some(name.as_str()) {
            index
                .delete_index(&name)
                .await
                .map_err(failed(&format!("delete the search index {name}")))?;
            removed += 1;
        }
    }
    Ok(removed)
}
