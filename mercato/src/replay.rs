//! `mercato replay` and `mercato projections`: rebuild read models from the store beside the
//! ones in service and swap them in, and list every projection with its checkpoint and lag.
//!
//! How a rebuild stays invisible until it is complete is in [`projections::replay`]; the
//! Tantivy index is rebuilt as a new generation of the index ([`TantivySearch::publish`]), carts
//! and popularity kept in Redis under a shadow key prefix ([`projections::redis_models`]), and an
//! OpenSearch index as a new numbered index behind the alias ([`projections::opensearch`]).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use projections::cache::SEARCH_SCOPE;
use projections::opensearch::{self, OpenSearchIndex, OpenSearchProjection};
use projections::readdb::{ReadDb, read_db_url, tables_of};
use projections::redis_models::{RedisCartsProjection, RedisModels, RedisPopularityProjection};
use projections::replay::{self as rebuild, ReplayRun, Swap};
use projections::search::{GenerationSwap, TantivySearch};
use projections::sql_models::{
    OrdersProjection, ProductsProjection, SqlCartsProjection, SqlPopularityProjection,
};
use projections::{Feed, Projection};

use crate::config::Config;
use crate::serve::open_platform;
use crate::{Failure, ReplayArgs};

/// How many events one read of the log brings (and each rebuilt read model applies at once):
/// larger pages mean fewer commits (the search index commits a segment per page), at about 40 MB
/// of memory per page in flight (BENCHMARKS.md: 10,000 replayed about 96,000 events/s, 25,000
/// about 135,000 in 210 MB, 50,000 about 150,000 in 360 MB).
const PAGE: usize = 25_000;
/// How often plain progress lines are printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(2);
/// How often a swap finds the live read model ahead and catches up again before giving up.
const SWAP_ATTEMPTS: usize = 20;

/// How the names of Tantivy index generations begin (an OpenSearch rebuild records an index name
/// in the same place).
const GENERATION_PREFIX: &str = "gen-";

/// The read models a replay can rebuild, in the order `--all` rebuilds them.
const REPLAYABLE: &[&str] = &["products", "orders", "carts", "popularity", "search"];

fn runtime(what: String) -> impl FnOnce(projections::ProjectionError) -> Failure {
    move |error| Failure::Runtime(anyhow::Error::new(error).context(what))
}

/// One read model being rebuilt: its fresh instance writing into the shadow, and how it is
/// swapped in.
struct Target {
    name: &'static str,
    projection: Arc<dyn Projection>,
    kind: Kind,
}

enum Kind {
    /// SQL tables of the read-model database.
    Tables(&'static [&'static str]),
    /// A generation of the Tantivy index under this directory.
    Generation {
        root: PathBuf,
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

/// Where the read models live that are neither SQL tables nor the embedded index, when the
/// configuration puts them elsewhere.
struct Elsewhere {
    /// Carts and popularity, with `REDIS_URL`.
    redis: Option<RedisModels>,
    /// The search index, with `OPENSEARCH_URL`.
    opensearch: Option<OpenSearchIndex>,
}

impl Elsewhere {
    fn of(platform: &crate::serve::Platform) -> Self {
        Self {
            redis: platform.redis_models.clone(),
            opensearch: platform.opensearch.clone(),
        }
    }
}

pub(crate) async fn replay(config: &Config, args: ReplayArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let platform = open_platform(config, false).await?;
    let live_url = read_db_url(config.database_url.expose());
    let search_root = config.data_dir.join("search");
    let elsewhere = Elsewhere::of(&platform);
    if args.target.discard {
        return discard(&platform.db, &live_url, &search_root, &elsewhere).await;
    }
    let names: Vec<&'static str> = if args.target.all {
        REPLAYABLE.to_vec()
    } else {
        let wanted = args.target.projection.as_deref().unwrap_or_default();
        let name = REPLAYABLE
            .iter()
            .find(|name| **name == wanted)
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "there is no read model named {wanted:?}; --projection takes one of {} (or use --all)",
                    REPLAYABLE.join(", ")
                ))
            })?;
        vec![*name]
    };
    let shadow = rebuild::open_shadow(&platform.db, &live_url)
        .await
        .map_err(runtime(
            "cannot create the database the read models are rebuilt in".to_owned(),
        ))?;
    let mut targets = Vec::with_capacity(names.len());
    let mut resumed = Vec::new();
    for name in &names {
        let (target, resumed_at) = prepare(name, &args, &shadow, &search_root, &elsewhere).await?;
        if let Some(position) = resumed_at {
            resumed.push(format!("{name} at position {position}"));
        }
        targets.push(target);
    }
    if !resumed.is_empty() {
        eprintln!(
            "resuming an interrupted rebuild: {} (--restart starts over)",
            resumed.join(", ")
        );
    }
    let head =
        platform.store.head_position().await.map_err(|error| {
            Failure::from(error).context("cannot read the log's head".to_owned())
        })?;
    let mut from = u64::MAX;
    for target in &targets {
        from = from.min(
            target
                .projection
                .checkpoint(&Feed::Log)
                .await
                .map_err(runtime(format!("cannot read {}'s checkpoint", target.name)))?,
        );
    }
    let mut meter = Meter::new(from, head);
    let projections: Vec<Arc<dyn Projection>> = targets
        .iter()
        .map(|target| target.projection.clone())
        .collect();
    let done = rebuild::catch_up(platform.store.clone(), &projections, PAGE, |done| {
        meter.update(done.read, done.position)
    })
    .await
    .map_err(runtime(
        "the rebuild failed; run the same command again to resume".to_owned(),
    ))?;
    meter.finish();
    drop(projections);
    let mut read = done.read;
    let mut summary = Vec::with_capacity(targets.len());
    for target in targets {
        let (position, caught_up) = swap_in(target, &platform, &shadow, &live_url).await?;
        read += caught_up;
        summary.push(position);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    for (name, position) in &summary {
        let _ = writeln!(
            stdout,
            "{name}\trebuilt and in service at position {position}"
        );
    }
    let _ = writeln!(
        stdout,
        "replayed {read} events into {} read model(s) in {elapsed:.1} s ({:.0} events/s)",
        summary.len(),
        read as f64 / elapsed.max(1e-9)
    );
    Ok(())
}

/// The fresh instance of read model `name` writing into the shadow, resuming its unfinished
/// rebuild unless told otherwise. Also says where it resumed.
async fn prepare(
    name: &'static str,
    args: &ReplayArgs,
    shadow: &ReadDb,
    search_root: &Path,
    elsewhere: &Elsewhere,
) -> Result<(Target, Option<u64>), Failure> {
    match (name, &elsewhere.redis, &elsewhere.opensearch) {
        ("carts" | "popularity", Some(models), _) => {
            return prepare_redis(name, args, models).await;
        }
        ("search", _, Some(index)) => return prepare_opensearch(args, shadow, index).await,
        _ => {}
    }
    let failed = |what: &str| runtime(format!("cannot {what} the rebuild of {name}"));
    let from = args.from.unwrap_or(0);
    let existing = rebuild::run_of(shadow, name)
        .await
        .map_err(failed("read"))?;
    let resume = existing.as_ref().filter(|run| resumable(run, args));
    let tables = if name == "search" {
        &[][..]
    } else {
        tables_of(name)
    };
    let generation = match (name, resume) {
        ("search", Some(run)) => run.generation.clone(),
        ("search", None) => Some(format!(
            "{GENERATION_PREFIX}{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")
        )),
        _ => None,
    };
    if resume.is_none() {
        if let Some(run) = &existing
            && let Some(old) = &run.generation
        {
            TantivySearch::remove_generation_if_unused(search_root, old);
        }
        rebuild::start_run(shadow, &new_run(name, args, generation.clone()), tables)
            .await
            .map_err(failed("start"))?;
    }
    let (projection, kind): (Arc<dyn Projection>, Kind) = match name {
        "search" => {
            let generation = generation.unwrap_or_default();
            if resume.is_none() {
                // A directory of that name left by an interrupted run is not trusted.
                let _ = std::fs::remove_dir_all(search_root.join(&generation));
            }
            let search = TantivySearch::open_generation(search_root, &generation)
                .map_err(failed("open the search index generation of"))?;
            if resume.is_none() && from > 0 {
                search.start_at(from).map_err(failed("start"))?;
            }
            let search = Arc::new(search);
            (
                Arc::new(search.clone()),
                Kind::Generation {
                    root: search_root.to_owned(),
                    search,
                },
            )
        }
        "products" => (
            Arc::new(ProductsProjection::new(shadow.clone(), None)),
            Kind::Tables(tables),
        ),
        "orders" => (
            Arc::new(OrdersProjection::new(shadow.clone())),
            Kind::Tables(tables),
        ),
        "carts" => (
            Arc::new(SqlCartsProjection::new(shadow.clone())),
            Kind::Tables(tables),
        ),
        _ => (
            Arc::new(SqlPopularityProjection::new(shadow.clone())),
            Kind::Tables(tables),
        ),
    };
    let resumed_at = resumed_at(&projection, resume.is_some())
        .await
        .map_err(failed("read"))?;
    Ok((
        Target {
            name,
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
) -> Result<Option<u64>, projections::ProjectionError> {
    Ok(if resume {
        Some(projection.checkpoint(&Feed::Log).await?)
    } else {
        None
    })
}

/// Whether a recorded replay run of `name` may be resumed with `args`.
fn resumable(run: &ReplayRun, args: &ReplayArgs) -> bool {
    !args.restart && args.from.is_none_or(|from| from == run.from_position)
}

/// A new record of a replay run of `name` starting now.
fn new_run(name: &str, args: &ReplayArgs, generation: Option<String>) -> ReplayRun {
    ReplayRun {
        projection: name.to_owned(),
        from_position: args.from.unwrap_or(0),
        generation,
        started_at: chrono::Utc::now().to_rfc3339(),
    }
}

/// As [`prepare`], for carts or popularity kept in Redis (`live` being the models in service):
/// rebuilt under the shadow prefix, where the run is recorded too.
async fn prepare_redis(
    name: &'static str,
    args: &ReplayArgs,
    live: &RedisModels,
) -> Result<(Target, Option<u64>), Failure> {
    let failed = |what: &str| {
        runtime(format!(
            "cannot {what} the rebuild of {name} in Redis (check REDIS_URL and that Redis is up)"
        ))
    };
    let existing = live.replay_run(name).await.map_err(failed("read"))?;
    let resume = existing.as_ref().is_some_and(|run| resumable(run, args));
    if !resume {
        live.start_replay(&new_run(name, args, None))
            .await
            .map_err(failed("start"))?;
    }
    let shadow = live.shadow();
    let projection: Arc<dyn Projection> = if name == RedisCartsProjection::NAME {
        Arc::new(RedisCartsProjection::new(shadow))
    } else {
        Arc::new(RedisPopularityProjection::new(shadow))
    };
    let resumed_at = resumed_at(&projection, resume)
        .await
        .map_err(failed("read"))?;
    Ok((
        Target {
            name,
            projection,
            kind: Kind::Redis(live.clone()),
        },
        resumed_at,
    ))
}

/// As [`prepare`], for the search index on OpenSearch: rebuilt into a new numbered index, its
/// popularity and checkpoint in the shadow database, where the run names the index.
async fn prepare_opensearch(
    args: &ReplayArgs,
    shadow: &ReadDb,
    index: &OpenSearchIndex,
) -> Result<(Target, Option<u64>), Failure> {
    let name = OpenSearchIndex::NAME;
    let failed = |what: &str| {
        runtime(format!(
            "cannot {what} the rebuild of {name} on OpenSearch (check OPENSEARCH_URL and that the cluster is up)"
        ))
    };
    let existing = rebuild::run_of(shadow, name)
        .await
        .map_err(failed("read"))?;
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
        .filter(|run| resumable(run, args) && unused(run));
    if let Some(run) = &existing
        && resume.is_none()
        && resumable(run, args)
    {
        eprintln!(
            "the index {} of the interrupted rebuild of {name} is gone or in service: starting over",
            run.generation.as_deref().unwrap_or("(none)")
        );
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
            rebuild::start_run(
                shadow,
                &new_run(name, args, Some(created.clone())),
                opensearch::REBUILT_TABLES,
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
    let projection: Arc<dyn Projection> = Arc::new(OpenSearchProjection::rebuilding(
        index.clone(),
        &rebuilt,
        shadow.clone(),
    ));
    let resumed_at = resumed_at(&projection, resume.is_some())
        .await
        .map_err(failed("read"))?;
    Ok((
        Target {
            name,
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
    platform: &crate::serve::Platform,
    shadow: &ReadDb,
    live_url: &str,
) -> Result<((&'static str, u64), u64), Failure> {
    let name = target.name;
    let failed = |what: &str| runtime(format!("cannot {what} the rebuilt read model {name}"));
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
                rebuild::swap_tables(&platform.db, live_url, shadow, name, tables, checkpoint)
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
                    &platform.db,
                    live_url,
                    shadow,
                    rebuilt,
                    checkpoint,
                )
                .await
                .map_err(failed("swap in"))?;
                if swap == Swap::Swapped {
                    retire_index(index, left.as_deref(), rebuilt, platform).await;
                }
                swap
            }
            Kind::Generation { root, search } => {
                let rebuilt = search.clone();
                let swap = tokio::task::spawn_blocking(move || rebuilt.swap_in())
                    .await
                    .map_err(|error| {
                        Failure::Runtime(anyhow::anyhow!(
                            "cannot swap in the rebuilt read model {name}: {error}"
                        ))
                    })?
                    .map_err(failed("swap in"))?;
                match swap {
                    GenerationSwap::Swapped { previous, .. } => {
                        rebuild::clear(shadow, name, &[])
                            .await
                            .map_err(failed("finish"))?;
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
            Swap::Swapped => return Ok(((name, checkpoint), read)),
            Swap::Contended => tokio::time::sleep(Duration::from_millis(50)).await,
            Swap::Behind(_) => {
                let more = rebuild::catch_up(
                    platform.store.clone(),
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
    Err(Failure::Runtime(anyhow::anyhow!(
        "the live read model {name} kept moving ahead of its rebuild; the rebuild is kept: run the same command again to resume"
    )))
}

/// After a rebuilt OpenSearch index went in service: deletes the index the alias `left` (a
/// serving projection whose batch still went there deletes it again, see
/// [`projections::opensearch`]) and drops the cached search answers.
async fn retire_index(
    index: &OpenSearchIndex,
    left: Option<&str>,
    rebuilt: &str,
    platform: &crate::serve::Platform,
) {
    if let Some(left) = left.filter(|left| *left != rebuilt)
        && let Err(error) = index.delete_index(left).await
    {
        eprintln!(
            "warning: the search index {left} is out of service but could not be deleted ({error}); `replay --discard` deletes it"
        );
    }
    if let Some(cache) = &platform.cache {
        cache.invalidate(&[SEARCH_SCOPE.to_owned()]).await;
    }
}

/// `replay --discard`: drops the shadow, any search index generation not in service, the shadow
/// keys in Redis and the OpenSearch indices of the alias not in service.
async fn discard(
    live: &ReadDb,
    live_url: &str,
    search_root: &Path,
    elsewhere: &Elsewhere,
) -> Result<(), Failure> {
    let mut had = if rebuild::shadow_exists(live, live_url)
        .await
        .map_err(runtime("cannot look for unfinished rebuilds".to_owned()))?
    {
        let shadow = rebuild::open_shadow(live, live_url)
            .await
            .map_err(runtime("cannot open the unfinished rebuilds".to_owned()))?;
        let runs = rebuild::runs(&shadow)
            .await
            .map_err(runtime("cannot read the unfinished rebuilds".to_owned()))?;
        shadow.pool().close().await;
        !runs.is_empty()
    } else {
        false
    };
    rebuild::discard(live, live_url)
        .await
        .map_err(runtime("cannot drop the unfinished rebuilds".to_owned()))?;
    let mut removed = 0;
    for generation in TantivySearch::stale_generations(search_root) {
        if TantivySearch::remove_generation_if_unused(search_root, &generation) {
            removed += 1;
        }
    }
    if let Some(models) = &elsewhere.redis {
        had |= models.discard_replays().await.map_err(runtime(
            "cannot drop the unfinished rebuilds kept in Redis".to_owned(),
        ))?;
    }
    if let Some(index) = &elsewhere.opensearch {
        removed += discard_indices(index, live).await?;
    }
    if had || removed > 0 {
        println!("unfinished rebuilds dropped; the read models in service are unchanged");
    } else {
        println!("no unfinished rebuild to drop");
    }
    Ok(())
}

/// Deletes the indices of the OpenSearch alias that are neither behind the alias nor recorded as
/// in service (an unfinished rebuild's, one a swap left, one a late batch re-created). Nothing is
/// deleted while no index is in service: the indices may then be the only copy the alias is about
/// to get back. Answers how many it deleted.
async fn discard_indices(index: &OpenSearchIndex, live: &ReadDb) -> Result<usize, Failure> {
    let failed = |what: &str| {
        runtime(format!(
            "cannot {what} (check OPENSEARCH_URL and that the cluster is up)"
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
            eprintln!(
                "the search alias {} points at no index: its indices are kept",
                index.alias()
            );
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

/// Progress of a rebuild on stderr: a bar redrawn in place on a terminal, a plain line every few
/// seconds otherwise.
struct Meter {
    from: u64,
    head: u64,
    started: Instant,
    last_line: Instant,
    terminal: bool,
    read: u64,
    position: u64,
}

impl Meter {
    fn new(from: u64, head: u64) -> Self {
        let now = Instant::now();
        Self {
            from,
            head,
            started: now,
            last_line: now,
            terminal: std::io::stderr().is_terminal(),
            read: 0,
            position: from,
        }
    }

    /// The share of the log done, from positions (PostgreSQL's are not dense, so this is an
    /// estimate there; SQLite's count events exactly).
    fn fraction(&self) -> f64 {
        if self.head <= self.from {
            return 1.0;
        }
        (self.position.saturating_sub(self.from) as f64 / (self.head - self.from) as f64).min(1.0)
    }

    fn update(&mut self, read: u64, position: u64) {
        self.read = read;
        self.position = position;
        if self.terminal {
            self.draw();
        } else if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    fn rate(&self) -> f64 {
        self.read as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn line(&self) -> String {
        let fraction = self.fraction();
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if fraction > 0.0 {
            elapsed / fraction - elapsed
        } else {
            0.0
        };
        format!(
            "replay: {} events, position {} of {} ({:.0}%), {:.0} events/s, {:.0} s left",
            self.read,
            self.position,
            self.head,
            fraction * 100.0,
            self.rate(),
            left.max(0.0)
        )
    }

    fn draw(&self) {
        const WIDTH: usize = 30;
        let fraction = self.fraction();
        let filled = ((fraction * WIDTH as f64) as usize).min(WIDTH);
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if fraction > 0.0 {
            (elapsed / fraction - elapsed).max(0.0)
        } else {
            0.0
        };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r[{}{}] {:>3.0}%  {} events  {:.0} events/s  {:.0} s left ",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            fraction * 100.0,
            self.read,
            self.rate(),
            left
        );
        let _ = stderr.flush();
    }

    fn finish(&mut self) {
        self.position = self.position.max(self.head);
        if self.terminal {
            self.draw();
            eprintln!();
        } else {
            eprintln!("{}", self.line());
        }
    }
}

/// `mercato projections`: every projection with its checkpoint, lag and state.
pub(crate) async fn list(config: &Config) -> Result<(), Failure> {
    let platform = open_platform(config, false).await?;
    let live_url = read_db_url(config.database_url.expose());
    let head =
        platform.store.head_position().await.map_err(|error| {
            Failure::from(error).context("cannot read the log's head".to_owned())
        })?;
    let mut runs = if rebuild::shadow_exists(&platform.db, &live_url)
        .await
        .map_err(runtime("cannot look for rebuilds".to_owned()))?
    {
        let shadow = rebuild::open_shadow(&platform.db, &live_url)
            .await
            .map_err(runtime("cannot open the rebuilds".to_owned()))?;
        let mut runs = Vec::new();
        for run in rebuild::runs(&shadow)
            .await
            .map_err(runtime("cannot read the rebuilds".to_owned()))?
        {
            // A Tantivy index generation keeps its checkpoint in the index, not in the shadow
            // (an OpenSearch rebuild keeps its checkpoint there).
            let at = match &run.generation {
                Some(generation) if generation.starts_with(GENERATION_PREFIX) => None,
                _ => Some(shadow.checkpoint(&run.projection).await.unwrap_or(0)),
            };
            runs.push((run, at));
        }
        runs
    } else {
        Vec::new()
    };
    if let Some(models) = &platform.redis_models {
        // Carts and popularity are the ones in Redis: a rebuild of their SQL tables is not theirs.
        runs.retain(|(run, _)| {
            !matches!(
                run.projection.as_str(),
                RedisCartsProjection::NAME | RedisPopularityProjection::NAME
            )
        });
        for (run, at) in models
            .replay_runs()
            .await
            .map_err(runtime("cannot read the rebuilds kept in Redis".to_owned()))?
        {
            runs.push((run, Some(at)));
        }
    }
    let mut checkpoints = Vec::with_capacity(platform.projections.len());
    for projection in &platform.projections {
        let name = projection.name();
        let checkpoint = projection
            .checkpoint(&Feed::Log)
            .await
            .map_err(runtime(format!("cannot read {name}'s checkpoint")))?;
        checkpoints.push((name, checkpoint));
    }
    let lags = lags(
        platform.store.as_ref(),
        &checkpoints
            .iter()
            .map(|(_, checkpoint)| *checkpoint)
            .collect::<Vec<_>>(),
    )
    .await?;
    let mut rows = Vec::new();
    for ((name, checkpoint), lag) in checkpoints.into_iter().zip(lags) {
        let mut state = match (checkpoint, lag) {
            (0, 0) => "caught up (empty log)".to_owned(),
            (0, _) => "not started".to_owned(),
            (_, 0) => "caught up".to_owned(),
            _ => "behind".to_owned(),
        };
        if let Some((run, at)) = runs.iter().find(|(run, _)| run.projection == name) {
            let at = at.map_or(String::new(), |at| format!(" at position {at}"));
            state.push_str(&format!(
                "; rebuild unfinished{at} (since {})",
                run.started_at
            ));
        }
        rows.push((name, checkpoint, lag, state));
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "{:<12} {:>20} {:>10}  STATE",
        "PROJECTION", "CHECKPOINT", "LAG"
    );
    for (name, checkpoint, lag, state) in rows {
        let lag = if lag >= LAG_COUNT_LIMIT {
            format!(">{}", LAG_COUNT_LIMIT - 1)
        } else {
            lag.to_string()
        };
        let _ = writeln!(stdout, "{name:<12} {checkpoint:>20} {lag:>10}  {state}");
    }
    let _ = writeln!(stdout, "head position: {head}");
    Ok(())
}

/// Lag is counted up to this many events.
const LAG_COUNT_LIMIT: u64 = 1_000_001;

/// How many events of the log come after each of `checkpoints` (each counted up to
/// [`LAG_COUNT_LIMIT`]), from one read of the log after the lowest of them.
async fn lags(
    store: &dyn eventstore::EventStore,
    checkpoints: &[u64],
) -> Result<Vec<u64>, Failure> {
    let mut counts = vec![0_u64; checkpoints.len()];
    let Some(mut after) = checkpoints.iter().min().copied() else {
        return Ok(counts);
    };
    while counts.iter().any(|count| *count < LAG_COUNT_LIMIT) {
        let events = store
            .read_all(after, PAGE)
            .await
            .map_err(|error| Failure::from(error).context("cannot read the log".to_owned()))?;
        let Some(last) = events.last() else { break };
        after = last.position;
        for (count, checkpoint) in counts.iter_mut().zip(checkpoints) {
            let newer = events
                .iter()
                .filter(|event| event.position > *checkpoint)
                .count();
            *count = (*count + newer as u64).min(LAG_COUNT_LIMIT);
        }
        if events.len() < PAGE {
            break;
        }
    }
    Ok(counts)
}
