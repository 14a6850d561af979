//! The generations of the index under one directory: `CURRENT` names the one in service, a
//! rebuild fills a new one and swaps it in under the fence that orders batches and swaps.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tantivy::{Index, TantivyDocument};

use super::{
    CURRENT_FILE, FENCE_FILE, ROOT_GENERATION, TantivySearch, encode_checkpoints, generation_path,
    is_generation_name, open_generation, open_index, parse_checkpoints,
};
use crate::ProjectionError;
use crate::runner::Feed;

impl TantivySearch {
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
    pub(super) fn publish(directory: &Path, generation: &str) -> Result<String, ProjectionError> {
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
pub(super) struct Fence {
    _locked: std::fs::File,
}

impl Fence {
    pub(super) fn take(root: &Path, exclusive: bool) -> Result<Self, ProjectionError> {
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
            fs4::fs_std::FileExt::lock_exclusive(&file).map_err(io)?;
        } else {
            fs4::fs_std::FileExt::lock_shared(&file).map_err(io)?;
        }
        Ok(Fence { _locked: file })
    }
}

/// Deletes a generation's files: its directory, or for the root generation the index files in
/// the root (not `CURRENT` nor other generations).
pub(super) fn remove_generation_files(root: &Path, name: &str) {
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
