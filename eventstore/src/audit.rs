//! Tamper evidence of the stored history: a hash chain per stream, a rolling global hash sealed
//! in periodic checkpoints, and the verification of both.
//!
//! # The stream chains
//!
//! Every stored event carries `hash = SHA-256(previous || canonical_bytes(event))`, where
//! `previous` is the hash of the same stream's previous version (32 zero bytes for version 1).
//! PostgreSQL computes it in a `BEFORE INSERT` trigger (the migration `..._audit.sql` mirrors
//! [`canonical_bytes`]); the SQLite writer computes it with [`event_hash`].
//!
//! # Canonical bytes
//!
//! [`canonical_bytes`] concatenates fourteen fields, in this order. Each field is a 4-byte
//! big-endian unsigned length followed by that many bytes; integers are 8-byte big-endian two's
//! complement (so their length is always 8); texts are their UTF-8 bytes:
//!
//! | # | field            | bytes                                                        |
//! |---|------------------|--------------------------------------------------------------|
//! | 1 | `position`       | i64                                                          |
//! | 2 | `event_id`       | lowercase hyphenated UUID text (36 bytes)                    |
//! | 3 | `stream_type`    | text                                                         |
//! | 4 | `stream_id`      | text                                                         |
//! | 5 | `stream_version` | i64                                                          |
//! | 6 | `event_type`     | text                                                         |
//! | 7 | `schema_version` | i64                                                          |
//! | 8 | `occurred_at`    | UTC text `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds)        |
//! | 9 | `correlation_id` | text                                                         |
//! |10 | `causation_id`   | text                                                         |
//! |11 | `saga_id`        | text; absent (NULL) is the length `0xFFFFFFFF` and no bytes  |
//! |12 | `actor`          | text                                                         |
//! |13 | `source`         | text                                                         |
//! |14 | `payload`        | the exact stored JSON text                                   |
//!
//! # Checkpoints
//!
//! The rolling global hash over every event in position order is
//! `G_n = SHA-256(G_{n-1} || hash_n)`, `G_0` = 32 zero bytes. [`seal`] records `(position,
//! events, G)` every `every` events in `audit_checkpoints`, and with it the last sealed version
//! of every stream it covered (`audit_stream_heads`): an event deleted from, or inserted into,
//! a sealed block changes the block's count and hash, and the stream heads name the event.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use schemas::RecordedEvent;
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::store::EventStore;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash before the first event of a stream, and `G_0`.
pub const ZERO_HASH: Hash = [0; 32];

/// How many rows one read of the chain asks for.
pub const CHAIN_PAGE: usize = 20_000;

/// The stored columns of one event, as [`canonical_bytes`] encodes them.
#[derive(Clone, Copy, Debug)]
pub struct CanonicalEvent<'a> {
    pub position: u64,
    /// Lowercase hyphenated.
    pub event_id: &'a str,
    pub stream_type: &'a str,
    pub stream_id: &'a str,
    pub stream_version: u64,
    pub event_type: &'a str,
    pub schema_version: i64,
    /// UTC, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (see [`canonical_timestamp`]).
    pub occurred_at: &'a str,
    pub correlation_id: &'a str,
    pub causation_id: &'a str,
    pub saga_id: Option<&'a str>,
    pub actor: &'a str,
    pub source: &'a str,
    /// The exact stored text.
    pub payload: &'a str,
}

/// `occurred_at` as the canonical bytes spell it: UTC with microseconds, `Z`.
pub fn canonical_timestamp(timestamp: &DateTime<Utc>) -> String {
    timestamp.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX - 1);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn push_integer(out: &mut Vec<u8>, value: i64) {
    push_field(out, &value.to_be_bytes());
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Appends the canonical bytes of `event` to `out` (the layout is in the module documentation).
pub fn write_canonical(event: &CanonicalEvent<'_>, out: &mut Vec<u8>) {
    push_integer(out, to_i64(event.position));
    push_field(out, event.event_id.as_bytes());
    push_field(out, event.stream_type.as_bytes());
    push_field(out, event.stream_id.as_bytes());
    push_integer(out, to_i64(event.stream_version));
    push_field(out, event.event_type.as_bytes());
    push_integer(out, event.schema_version);
    push_field(out, event.occurred_at.as_bytes());
    push_field(out, event.correlation_id.as_bytes());
    push_field(out, event.causation_id.as_bytes());
    match event.saga_id {
        Some(saga_id) => push_field(out, saga_id.as_bytes()),
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
    push_field(out, event.actor.as_bytes());
    push_field(out, event.source.as_bytes());
    push_field(out, event.payload.as_bytes());
}

/// The canonical bytes of `event` (the layout is in the module documentation).
pub fn canonical_bytes(event: &CanonicalEvent<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + event.payload.len());
    write_canonical(event, &mut out);
    out
}

/// `SHA-256(previous || canonical_bytes(event))`, using `buffer` as scratch space.
pub fn event_hash_with(previous: &Hash, event: &CanonicalEvent<'_>, buffer: &mut Vec<u8>) -> Hash {
    buffer.clear();
    buffer.extend_from_slice(previous);
    write_canonical(event, buffer);
    Sha256::digest(buffer.as_slice()).into()
}

/// `SHA-256(previous || canonical_bytes(event))`: an event's stored hash.
pub fn event_hash(previous: &Hash, event: &CanonicalEvent<'_>) -> Hash {
    event_hash_with(previous, event, &mut Vec::new())
}

/// The hash of a read event given its stream predecessor's hash (for tests and tools; the
/// verification reads raw columns instead).
pub fn recorded_event_hash(previous: &Hash, event: &RecordedEvent) -> Hash {
    let event_id = event.event_id.hyphenated().to_string();
    let occurred_at = canonical_timestamp(&event.occurred_at);
    event_hash(
        previous,
        &CanonicalEvent {
            position: event.position,
            event_id: &event_id,
            stream_type: &event.stream_type,
            stream_id: &event.stream_id,
            stream_version: event.stream_version,
            event_type: &event.event_type,
            schema_version: i64::from(event.schema_version),
            occurred_at: &occurred_at,
            correlation_id: &event.metadata.correlation_id,
            causation_id: &event.metadata.causation_id,
            saga_id: event.metadata.saga_id.as_deref(),
            actor: &event.metadata.actor,
            source: &event.metadata.source,
            payload: event.payload.get(),
        },
    )
}

/// The next rolling global hash: `SHA-256(global || event_hash)`.
pub fn global_step(global: &Hash, event_hash: &Hash) -> Hash {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(global);
    block[32..].copy_from_slice(event_hash);
    Sha256::digest(block).into()
}

/// A stored event as the chain sees it: its raw columns and its stored hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainRow {
    pub position: u64,
    pub event_id: String,
    pub stream_type: String,
    pub stream_id: String,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: i64,
    pub occurred_at: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub saga_id: Option<String>,
    pub actor: String,
    pub source: String,
    pub payload: String,
    /// The stored hash (`None` when the column is NULL).
    pub hash: Option<Vec<u8>>,
}

impl ChainRow {
    pub fn canonical(&self) -> CanonicalEvent<'_> {
        CanonicalEvent {
            position: self.position,
            event_id: &self.event_id,
            stream_type: &self.stream_type,
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            occurred_at: &self.occurred_at,
            correlation_id: &self.correlation_id,
            causation_id: &self.causation_id,
            saga_id: self.saga_id.as_deref(),
            actor: &self.actor,
            source: &self.source,
            payload: &self.payload,
        }
    }

    /// The stored hash as 32 bytes (zeros when missing or malformed).
    pub fn stored_hash(&self) -> Hash {
        self.hash
            .as_deref()
            .and_then(|hash| Hash::try_from(hash).ok())
            .unwrap_or(ZERO_HASH)
    }

    fn has_valid_hash(&self) -> bool {
        self.hash.as_ref().is_some_and(|hash| hash.len() == 32)
    }
}

/// A recorded value of the rolling global hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The position of the last event it covers.
    pub position: u64,
    /// How many events it covers, from the start of the log.
    pub events: u64,
    /// `G_events`.
    pub hash: Hash,
    pub sealed_at: DateTime<Utc>,
}

/// The last version of a stream covered by a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedHead {
    pub stream_type: String,
    pub stream_id: String,
    pub stream_version: u64,
    pub position: u64,
    pub hash: Hash,
}

/// The rolling global hash at the head of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The position of the last event (0 when the log is empty).
    pub position: u64,
    /// How many events the log holds.
    pub events: u64,
    /// `G_events` in lowercase hex.
    pub hash_hex: String,
}

/// What [`verify`] checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every stream, every checkpoint, and the head.
    All,
    /// One stream's chain (and its sealed head).
    Stream {
        stream_type: String,
        stream_id: String,
    },
}

/// The first thing [`verify`] found wrong, in position order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The position of the event (or of the end of the checkpoint block) concerned.
    pub position: u64,
    /// The event concerned, when there is one stored.
    pub event_id: Option<String>,
    pub stream_type: String,
    pub stream_id: String,
    pub stream_version: u64,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stream_type.is_empty() {
            write!(formatter, "at position {}: {}", self.position, self.reason)
        } else {
            write!(
                formatter,
                "event {} at position {} ({}/{} version {}): {}",
                self.event_id.as_deref().unwrap_or("(none stored)"),
                self.position,
                self.stream_type,
                self.stream_id,
                self.stream_version,
                self.reason
            )
        }
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// Streams checked.
    pub streams: u64,
    /// Checkpoints compared.
    pub checkpoints: u64,
    /// The rolling hash at the head (recomputed for [`Scope::All`]).
    pub head: Head,
    /// Where the history had the expected head (`expect_head`): its position and event count.
    pub expected_head_at: Option<(u64, u64)>,
    pub first_problem: Option<Problem>,
    /// How long the verification took.
    pub elapsed: Duration,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.first_problem.is_none()
    }

    /// Events checked per second.
    pub fn events_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.events as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Lowercase hex of a hash.
pub fn to_hex(hash: &[u8]) -> String {
    hex::encode(hash)
}

/// Parses a 64-digit hex hash (either case).
pub fn parse_hash(text: &str) -> Option<Hash> {
    let bytes = hex::decode(text.trim()).ok()?;
    Hash::try_from(bytes.as_slice()).ok()
}

/// Records a checkpoint for every full block of `every` events after the last one. Only events
/// [`EventStore::read_all`] can return are sealed. Returns how many checkpoints were written
/// (0 when another sealer wrote them first).
pub async fn seal(store: &dyn EventStore, every: u64) -> Result<u64, StoreError> {
    seal_blocks(store, every, false).await
}

/// Seals like [`seal`], then records a checkpoint at the current head too (unless one is
/// there already), so that everything stored now is covered; returns the head.
pub async fn seal_head(store: &dyn EventStore, every: u64) -> Result<Head, StoreError> {
    seal_blocks(store, every, true).await?;
    head(store).await
}

async fn seal_blocks(
    store: &dyn EventStore,
    every: u64,
    through_head: bool,
) -> Result<u64, StoreError> {
    let every = every.max(1);
    let mut last = store.last_audit_checkpoint().await?;
    let mut written = 0;
    loop {
        let (mut after, mut events, mut global) = match &last {
            Some(checkpoint) => (checkpoint.position, checkpoint.events, checkpoint.hash),
            None => (0, 0, ZERO_HASH),
        };
        let expected_last = last.as_ref().map(|checkpoint| checkpoint.position);
        let mut checkpoints = Vec::new();
        let mut block_heads: HashMap<(String, String), SealedHead> = HashMap::new();
        let mut heads: HashMap<(String, String), SealedHead> = HashMap::new();
        'pages: loop {
            let rows = store.read_chain(after, CHAIN_PAGE).await?;
            if rows.is_empty() {
                if through_head && !block_heads.is_empty() {
                    checkpoints.push(Checkpoint {
                        position: after,
                        events,
                        hash: global,
                        sealed_at: Utc::now(),
                    });
                    heads.extend(block_heads.drain());
                }
                break;
            }
            for row in rows {
                after = row.position;
                events += 1;
                let hash = row.stored_hash();
                global = global_step(&global, &hash);
                block_heads.insert(
                    (row.stream_type.clone(), row.stream_id.clone()),
                    SealedHead {
                        stream_type: row.stream_type,
                        stream_id: row.stream_id,
                        stream_version: row.stream_version,
                        position: row.position,
                        hash,
                    },
                );
                if events % every == 0 {
                    checkpoints.push(Checkpoint {
                        position: row.position,
                        events,
                        hash: global,
                        sealed_at: Utc::now(),
                    });
                    heads.extend(block_heads.drain());
                    if checkpoints.len() >= 100 {
                        break 'pages;
                    }
                }
            }
        }
        if checkpoints.is_empty() {
            return Ok(written);
        }
        let new_last = checkpoints.last().cloned();
        let n_checkpoints = checkpoints.len() as u64;
        let heads = heads.into_values().collect();
        if !store
            .write_audit_seal(expected_last, checkpoints, heads)
            .await?
        {
            // Another sealer moved the checkpoints on: its blocks are the same ones.
            return Ok(written);
        }
        written += n_checkpoints;
        last = new_last;
    }
}

/// Seals every `interval` until `shutdown` completes (the server's background task).
pub async fn run_sealer(
    store: Arc<dyn EventStore>,
    every: u64,
    interval: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        match seal(&*store, every).await {
            Ok(0) => {}
            Ok(written) => tracing::debug!(written, "sealed audit checkpoints"),
            Err(error) => tracing::warn!(%error, "sealing audit checkpoints failed"),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// The rolling hash at the current head: the last checkpoint's, then every later event's.
pub async fn head(store: &dyn EventStore) -> Result<Head, StoreError> {
    let last = store.last_audit_checkpoint().await?;
    let (mut position, mut events, mut global) = match &last {
        Some(checkpoint) => (checkpoint.position, checkpoint.events, checkpoint.hash),
        None => (0, 0, ZERO_HASH),
    };
    loop {
        let rows = store.read_chain(position, CHAIN_PAGE).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            position = row.position;
            events += 1;
            global = global_step(&global, &row.stored_hash());
        }
    }
    Ok(Head {
        position,
        events,
        hash_hex: to_hex(&global),
    })
}

/// What the walk knows of one stream.
#[derive(Debug)]
struct StreamState {
    version: u64,
    hash: Hash,
    /// The last version a checkpoint covers: (version, position, hash).
    sealed: Option<(u64, u64, Hash)>,
    /// Whether the sealed version was seen.
    sealed_seen: bool,
}

/// Folds rows in position order: chains, checkpoints, the global hash.
struct Walker {
    streams: HashMap<String, StreamState>,
    key: String,
    buffer: Vec<u8>,
    global: Hash,
    events: u64,
    last_position: u64,
    checkpoints: Vec<Checkpoint>,
    next_checkpoint: usize,
    block_start: (u64, u64),
    last_sealed_position: u64,
    problem: Option<Problem>,
    /// A version reported missing, and the key of its stream: if it shows up later the reason
    /// says it was moved.
    missing: Option<(String, u64)>,
    /// A head recorded earlier (`--expect-head`), and the first position and event count at
    /// which the rolling hash equalled it.
    expected_head: Option<Hash>,
    expected_found: Option<(u64, u64)>,
}

fn stream_key(key: &mut String, stream_type: &str, stream_id: &str) {
    key.clear();
    key.push_str(stream_type);
    key.push('\u{1f}');
    key.push_str(stream_id);
}

impl Walker {
    fn new(checkpoints: Vec<Checkpoint>, heads: Vec<SealedHead>) -> Walker {
        let mut streams = HashMap::with_capacity(heads.len());
        let mut key = String::new();
        for head in heads {
            stream_key(&mut key, &head.stream_type, &head.stream_id);
            streams.insert(
                key.clone(),
                StreamState {
                    version: 0,
                    hash: ZERO_HASH,
                    sealed: Some((head.stream_version, head.position, head.hash)),
                    sealed_seen: false,
                },
            );
        }
        let last_sealed_position = checkpoints
            .last()
            .map_or(0, |checkpoint| checkpoint.position);
        Walker {
            streams,
            key,
            buffer: Vec::with_capacity(4096),
            global: ZERO_HASH,
            events: 0,
            last_position: 0,
            checkpoints,
            next_checkpoint: 0,
            block_start: (0, 0),
            last_sealed_position,
            problem: None,
            missing: None,
            expected_head: None,
            expected_found: None,
        }
    }

    /// Looks for `expected` among the rolling hashes of the walk (the empty log's included).
    fn expect_head(&mut self, expected: Hash) {
        if expected == ZERO_HASH {
            self.expected_found = Some((0, 0));
        }
        self.expected_head = Some(expected);
    }

    fn report(&mut self, problem: Problem) {
        if self
            .problem
            .as_ref()
            .is_none_or(|first| problem.position < first.position)
        {
            self.problem = Some(problem);
        }
    }

    fn row_problem(row: &ChainRow, reason: String) -> Problem {
        Problem {
            position: row.position,
            event_id: Some(row.event_id.clone()),
            stream_type: row.stream_type.clone(),
            stream_id: row.stream_id.clone(),
            stream_version: row.stream_version,
            reason,
        }
    }

    /// Compares every checkpoint at or below `position` with the walk so far.
    fn close_checkpoints_before(&mut self, position: u64) {
        while let Some(checkpoint) = self.checkpoints.get(self.next_checkpoint) {
            if checkpoint.position >= position {
                break;
            }
            let checkpoint = checkpoint.clone();
            self.next_checkpoint += 1;
            self.compare_checkpoint(&checkpoint);
        }
    }

    fn compare_checkpoint(&mut self, checkpoint: &Checkpoint) {
        let (start_position, start_events) = self.block_start;
        let sealed_in_block = checkpoint.events.saturating_sub(start_events);
        let found_in_block = self.events.saturating_sub(start_events);
        let reason = if found_in_block != sealed_in_block {
            let difference = found_in_block as i64 - sealed_in_block as i64;
            Some(format!(
                "sealed checkpoint of positions {}..={} counted {sealed_in_block} events, {found_in_block} are stored now ({difference:+}: {})",
                start_position + 1,
                checkpoint.position,
                if difference > 0 {
                    "events inserted"
                } else {
                    "events deleted"
                }
            ))
        } else if self.global != checkpoint.hash {
            Some(format!(
                "sealed checkpoint of positions {}..={} does not match: its {sealed_in_block} events were changed, replaced or reordered",
                start_position + 1,
                checkpoint.position
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            self.report(Problem {
                position: checkpoint.position,
                event_id: None,
                stream_type: String::new(),
                stream_id: String::new(),
                stream_version: 0,
                reason,
            });
            // Later blocks are compared on their own.
            self.events = checkpoint.events;
            self.global = checkpoint.hash;
        }
        self.block_start = (checkpoint.position, checkpoint.events);
    }

    fn walk(&mut self, row: &ChainRow) {
        self.close_checkpoints_before(row.position);
        self.events += 1;
        self.last_position = row.position;
        let stored = row.stored_hash();
        self.global = global_step(&self.global, &stored);
        if self.expected_found.is_none() && self.expected_head == Some(self.global) {
            self.expected_found = Some((row.position, self.events));
        }
        stream_key(&mut self.key, &row.stream_type, &row.stream_id);
        let mut problems = Vec::new();
        if !self.streams.contains_key(self.key.as_str()) {
            self.streams.insert(
                self.key.clone(),
                StreamState {
                    version: 0,
                    hash: ZERO_HASH,
                    sealed: None,
                    sealed_seen: false,
                },
            );
        }
        let Some(state) = self.streams.get_mut(self.key.as_str()) else {
            return;
        };
        let expected_version = state.version + 1;
        if row.stream_version > expected_version {
            let reason = format!("version {expected_version} missing (deleted?)");
            problems.push(Self::row_problem(row, reason));
            if self.missing.is_none() {
                self.missing = Some((self.key.clone(), expected_version));
            }
        } else if row.stream_version < expected_version {
            let reason = format!(
                "version {} stored again after version {} (out of order or inserted)",
                row.stream_version, state.version
            );
            problems.push(Self::row_problem(row, reason));
        }
        if row.stream_version == expected_version {
            if !row.has_valid_hash() {
                problems.push(Self::row_problem(row, "no hash stored".to_owned()));
            } else {
                let recomputed = event_hash_with(&state.hash, &row.canonical(), &mut self.buffer);
                if recomputed != stored {
                    let reason = if row.stream_version == 1 {
                        "payload or columns changed (the stored hash is not the recomputation)"
                            .to_owned()
                    } else {
                        format!(
                            "payload or columns changed, or the hash does not chain to version {}",
                            row.stream_version - 1
                        )
                    };
                    problems.push(Self::row_problem(row, reason));
                }
            }
        }
        match state.sealed {
            Some((version, position, hash)) if row.stream_version == version => {
                state.sealed_seen = true;
                if row.position != position {
                    problems.push(Self::row_problem(
                        row,
                        format!(
                            "sealed at position {position}, stored at another position (moved?)"
                        ),
                    ));
                } else if stored != hash {
                    problems.push(Self::row_problem(
                        row,
                        "hash differs from the one sealed in a checkpoint (rewritten?)".to_owned(),
                    ));
                }
            }
            Some((version, _, _)) if row.stream_version > version => {
                if row.position <= self.last_sealed_position {
                    problems.push(Self::row_problem(
                        row,
                        "not in a sealed checkpoint (inserted after sealing?)".to_owned(),
                    ));
                }
            }
            Some(_) => {}
            None => {
                if row.position <= self.last_sealed_position {
                    problems.push(Self::row_problem(
                        row,
                        "not in a sealed checkpoint (inserted after sealing?)".to_owned(),
                    ));
                }
            }
        }
        state.version = row.stream_version.max(state.version);
        state.hash = stored;
        if let Some((missing_key, missing_version)) = &self.missing
            && *missing_key == self.key
            && row.stream_version == *missing_version
            && let Some(problem) = self.problem.as_mut()
            && problem
                .reason
                .starts_with(&format!("version {missing_version} missing"))
            && problem.stream_type == row.stream_type
            && problem.stream_id == row.stream_id
        {
            problem.reason = format!(
                "version {missing_version} stored after version {} (versions swapped or moved)",
                problem.stream_version
            );
        }
        for problem in problems {
            self.report(problem);
        }
    }

    /// After the last row: the remaining checkpoints, and sealed versions never seen.
    fn finish(&mut self, whole_log: bool) {
        if whole_log {
            self.close_checkpoints_before(u64::MAX);
        }
        let mut unseen = Vec::new();
        for (key, state) in &self.streams {
            if let Some((version, position, _)) = state.sealed
                && !state.sealed_seen
                && (whole_log || key == &self.key)
            {
                let (stream_type, stream_id) = key.split_once('\u{1f}').unwrap_or((key, ""));
                unseen.push(Problem {
                    position,
                    event_id: None,
                    stream_type: stream_type.to_owned(),
                    stream_id: stream_id.to_owned(),
                    stream_version: version,
                    reason: format!(
                        "version {version} missing (deleted?): a checkpoint sealed it at position {position}"
                    ),
                });
            }
        }
        for problem in unseen {
            self.report(problem);
        }
    }
}

/// Recomputes the stream chains (and for [`Scope::All`] the rolling hash and every checkpoint).
/// With `expect_head` (hex, a head recorded earlier), the history must have had that rolling
/// hash at some position: a recorded head verifies as long as the events up to its position are
/// unchanged, however many came after. It needs [`Scope::All`]. The first problem in position
/// order is the one reported.
pub async fn verify(
    store: &dyn EventStore,
    scope: Scope,
    expect_head: Option<&str>,
) -> Result<VerifyReport, StoreError> {
    let started = Instant::now();
    let expected = match expect_head {
        None => None,
        Some(_) if scope != Scope::All => {
            return Err(StoreError::InvalidRequest(
                "an expected head is a hash of the whole log: verify it without a stream scope"
                    .to_owned(),
            ));
        }
        Some(text) => Some(parse_hash(text).ok_or_else(|| {
            StoreError::InvalidRequest(format!("the expected head {text:?} is not 64 hex digits"))
        })?),
    };
    let (mut walker, whole_log) = match &scope {
        Scope::All => {
            let checkpoints = store.audit_checkpoints().await?;
            let heads = store.sealed_heads(None).await?;
            let mut walker = Walker::new(checkpoints, heads);
            if let Some(expected) = expected {
                walker.expect_head(expected);
            }
            (walker, true)
        }
        Scope::Stream {
            stream_type,
            stream_id,
        } => {
            let checkpoints = store
                .last_audit_checkpoint()
                .await?
                .into_iter()
                .collect::<Vec<_>>();
            let heads = store
                .sealed_heads(Some((stream_type.as_str(), stream_id.as_str())))
                .await?;
            let mut walker = Walker::new(Vec::new(), heads);
            walker.last_sealed_position = checkpoints
                .last()
                .map_or(0, |checkpoint| checkpoint.position);
            stream_key(&mut walker.key, stream_type, stream_id);
            (walker, false)
        }
    };
    // The reader fetches the next pages while this task hashes the last one.
    let (pages, mut incoming) = tokio::sync::mpsc::channel::<Result<Vec<ChainRow>, StoreError>>(4);
    // Pages the hasher is done with go back to the reader, which reads the next ones into them.
    let (recycle, mut recycled) = tokio::sync::mpsc::channel::<Vec<ChainRow>>(4);
    let reader = {
        let scope = scope.clone();
        async move {
            let mut after = 0;
            loop {
                let spare = recycled.try_recv().unwrap_or_default();
                let page = match &scope {
                    Scope::All => store.read_chain_reusing(after, CHAIN_PAGE, spare).await,
                    Scope::Stream {
                        stream_type,
                        stream_id,
                    } => {
                        store
                            .read_stream_chain(stream_type, stream_id, after, CHAIN_PAGE)
                            .await
                    }
                };
                let last = match &page {
                    Ok(rows) => match rows.last() {
                        Some(row) => match scope {
                            Scope::All => row.position,
                            Scope::Stream { .. } => row.stream_version,
                        },
                        None => return,
                    },
                    Err(_) => 0,
                };
                let failed = page.is_err();
                if pages.send(page).await.is_err() || failed {
                    return;
                }
                after = last;
            }
        }
    };
    let hasher = async {
        let mut walker_slot = Some(walker);
        while let Some(page) = incoming.recv().await {
            let rows = page?;
            let mut walker = walker_slot
                .take()
                .unwrap_or_else(|| Walker::new(Vec::new(), Vec::new()));
            // Hash on a blocking thread so the reader keeps the runtime's workers.
            let (walked, done) = tokio::task::spawn_blocking(move || {
                for row in &rows {
                    walker.walk(row);
                }
                (walker, rows)
            })
            .await
            .map_err(|error| StoreError::CommitFailed(format!("the verifier panicked: {error}")))?;
            walker_slot = Some(walked);
            let _ = recycle.try_send(done);
        }
        Ok::<Walker, StoreError>(walker_slot.unwrap_or_else(|| Walker::new(Vec::new(), Vec::new())))
    };
    let ((), walked) = tokio::join!(reader, hasher);
    walker = walked?;
    walker.finish(whole_log);
    let head = if whole_log {
        Head {
            position: walker.last_position,
            events: walker.events,
            hash_hex: to_hex(&walker.global),
        }
    } else {
        head(store).await?
    };
    if let Some(expected) = expected
        && walker.expected_found.is_none()
    {
        let problem = Problem {
            position: head.position,
            event_id: None,
            stream_type: String::new(),
            stream_id: String::new(),
            stream_version: 0,
            reason: format!(
                "the history never had the expected head {}: the events up to the position where it was recorded were changed, deleted or reordered, or it is the head of another store (the head is {} at position {}, {} events)",
                to_hex(&expected),
                head.hash_hex,
                head.position,
                head.events
            ),
        };
        if walker.problem.is_none() {
            walker.problem = Some(problem);
        }
    }
    let checkpoints = if whole_log {
        walker.next_checkpoint as u64
    } else {
        0
    };
    Ok(VerifyReport {
        events: walker.events,
        streams: if whole_log {
            walker
                .streams
                .values()
                .filter(|state| state.version > 0 || state.sealed.is_some())
                .count() as u64
        } else {
            1
        },
        checkpoints,
        head,
        expected_head_at: walker.expected_found,
        first_problem: walker.problem,
        elapsed: started.elapsed(),
    })
}
