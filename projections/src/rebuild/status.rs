//! Every projection's checkpoint, lag and state, with its park and its unfinished rebuild if
//! any (what `mercato projections` prints).

use eventstore::EventStore;

use super::{GENERATION_PREFIX, PAGE, RebuildError, failed, open_shadow, runs, shadow_exists};
use crate::catalogue::{Placement, ReadModel, ReadModelStores};
use crate::{Feed, Park, ProjectionError};

/// Lag is counted up to this many events.
pub const LAG_COUNT_LIMIT: u64 = 1_000_001;

/// An unfinished rebuild of a read model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildStatus {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How far it got, where that is kept in the shadow (a Tantivy generation keeps its
    /// checkpoint in the index).
    pub position: Option<u64>,
}

/// A projection's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionStatus {
    pub name: &'static str,
    /// The position of the last event it applied from the log.
    pub checkpoint: u64,
    /// How many events of the log come after the checkpoint, counted up to [`LAG_COUNT_LIMIT`].
    pub lag: u64,
    /// Its unfinished rebuild, if one was interrupted.
    pub rebuild: Option<RebuildStatus>,
    /// Where it is parked, at an event it cannot apply, if it is.
    pub parked: Option<Park>,
}

impl ProjectionStatus {
    /// The state in words: not started, behind, caught up; parked; and an unfinished rebuild.
    pub fn state(&self) -> String {
        let mut state = match (self.checkpoint, self.lag) {
            (0, 0) => "caught up (empty log)".to_owned(),
            (0, _) => "not started".to_owned(),
            (_, 0) => "caught up".to_owned(),
            _ => "behind".to_owned(),
        };
        if let Some(park) = &self.parked {
            state.push_str(&format!(
                "; {park} (`mercato projections retry {}` once the cause is fixed)",
                self.name
            ));
        }
        if let Some(rebuild) = &self.rebuild {
            let at = rebuild
                .position
                .map_or(String::new(), |at| format!(" at position {at}"));
            state.push_str(&format!(
                "; rebuild unfinished{at} (since {})",
                rebuild.started_at
            ));
        }
        state
    }
}

/// Every read model's projection status, in catalogue order, then those of `others` (projections
/// that keep their checkpoint in the read-model database but are no read model, such as the
/// checkout saga's intake), and the log's head position.
pub async fn status(
    store: &dyn EventStore,
    stores: &ReadModelStores,
    others: &[&'static str],
) -> Result<(Vec<ProjectionStatus>, u64), RebuildError> {
    let head = store
        .head_position()
        .await
        .map_err(|error| failed("cannot read the log's head")(error.into()))?;
    let mut unfinished: Vec<(String, RebuildStatus)> = Vec::new();
    if shadow_exists(&stores.db, &stores.db_url)
        .await
        .map_err(failed("cannot look for rebuilds"))?
    {
        let shadow = open_shadow(&stores.db, &stores.db_url)
            .await
            .map_err(failed("cannot open the rebuilds"))?;
        for run in runs(&shadow)
            .await
            .map_err(failed("cannot read the rebuilds"))?
        {
            // A Tantivy index generation keeps its checkpoint in the index, not in the shadow
            // (an OpenSearch rebuild keeps its checkpoint there).
            let position = match &run.generation {
                Some(generation) if generation.starts_with(GENERATION_PREFIX) => None,
                _ => Some(shadow.checkpoint(&run.projection).await.unwrap_or(0)),
            };
            unfinished.push((
                run.projection,
                RebuildStatus {
                    started_at: run.started_at,
                    position,
                },
            ));
        }
    }
    if let Some(models) = &stores.redis {
        // The read models kept in Redis: a rebuild of their SQL tables is not theirs.
        unfinished.retain(|(name, _)| {
            ReadModel::named(name).is_ok_and(|model| model.placement(stores) != Placement::Redis)
        });
        for (run, at) in models
            .replay_runs()
            .await
            .map_err(failed("cannot read the rebuilds kept in Redis"))?
        {
            unfinished.push((
                run.projection,
                RebuildStatus {
                    started_at: run.started_at,
                    position: Some(at),
                },
            ));
        }
    }
    let mut checkpoints = Vec::with_capacity(ReadModel::ALL.len());
    for model in ReadModel::ALL {
        let checkpoint = model
            .open_live(stores)
            .checkpoint(&Feed::Log)
            .await
            .map_err(failed(format!("cannot read {}'s checkpoint", model.name())))?;
        checkpoints.push((model.name(), checkpoint));
    }
    for name in others {
        let checkpoint = stores
            .db
            .checkpoint(&Feed::Log.checkpoint_name(name))
            .await
            .map_err(failed(format!("cannot read {name}'s checkpoint")))?;
        checkpoints.push((*name, checkpoint));
    }
    let mut parks = stores
        .db
        .parks()
        .await
        .map_err(failed("cannot read the parked projections"))?;
    let lags = lags(
        store,
        &checkpoints
            .iter()
            .map(|(_, checkpoint)| *checkpoint)
            .collect::<Vec<_>>(),
    )
    .await
    .map_err(failed("cannot read the log"))?;
    let statuses = checkpoints
        .into_iter()
        .zip(lags)
        .map(|((name, checkpoint), lag)| ProjectionStatus {
            name,
            checkpoint,
            lag,
            rebuild: unfinished
                .iter()
                .find(|(projection, _)| projection == name)
                .map(|(_, rebuild)| rebuild.clone()),
            parked: parks
                .iter()
                .position(|(parked, _)| parked == name)
                .map(|index| parks.swap_remove(index).1),
        })
        .collect();
    Ok((statuses, head))
}

/// How many events of the log come after each of `checkpoints` (each counted up to
/// [`LAG_COUNT_LIMIT`]), from one read of the log after the lowest of them.
async fn lags(store: &dyn EventStore, checkpoints: &[u64]) -> Result<Vec<u64>, ProjectionError> {
    let mut counts = vec![0_u64; checkpoints.len()];
    let Some(mut after) = checkpoints.iter().min().copied() else {
        return Ok(counts);
    };
    while counts.iter().any(|count| *count < LAG_COUNT_LIMIT) {
        let events = store.read_all(after, PAGE).await?;
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
