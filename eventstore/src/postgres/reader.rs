//! Batched stream reads: when many [`EventStore::read_stream`] calls run at once (every command
//! reads its aggregate's stream before it appends), they share one statement.
//!
//! A read runs its own statement while few reads are in flight, so a lone reader pays no extra
//! hop. Beyond [`DIRECT_READS`] concurrent reads, further reads are queued; reader tasks each take
//! whatever is queued (at most [`MAX_BATCH_READS`]) without waiting for more to arrive, and run
//! [`sql::READ_STREAMS`], which reads every requested stream in one round trip. Each read in a
//! batch sees the database as it was when the statement started, which is after the read was
//! queued: the same guarantee a read of its own gives.
//!
//! [`EventStore::read_stream`]: crate::EventStore::read_stream

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use schemas::RecordedEvent;
use sqlx::Row;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{PgInner, rows, sql};
use crate::error::StoreError;

/// How many reads run their own statement at once before further reads are batched.
pub(super) const DIRECT_READS: usize = 2;

/// The most reads one batch statement carries.
pub(super) const MAX_BATCH_READS: usize = 64;

/// How many reader tasks a store runs: how many batch statements can be in flight at once.
pub(super) const READERS: usize = 2;

/// One stream read: which events, and where the answer goes.
#[derive(Debug)]
pub(super) struct PendingRead {
    pub(super) stream_type: String,
    pub(super) stream_id: String,
    pub(super) after_version: u64,
    pub(super) limit: usize,
    pub(super) answer: oneshot::Sender<Result<Vec<RecordedEvent>, StoreError>>,
}

/// Counts the operations of one kind in flight (stream reads, or appends), and decides whether
/// a new one runs its own statement or joins a batch.
#[derive(Debug)]
pub(super) struct Gate {
    in_flight: AtomicUsize,
    /// How many may be in flight before the next one is batched (0: always batched).
    direct_below: usize,
    /// How many were answered by a batch statement so far.
    pub(super) n_batched: std::sync::atomic::AtomicU64,
}

/// An operation counted in flight until it is dropped.
pub(super) struct InFlight<'a> {
    gate: &'a Gate,
    /// Whether this operation runs its own statement (few in flight) or joins a batch.
    pub(super) direct: bool,
}

impl Gate {
    pub(super) fn new(direct_below: usize) -> Gate {
        Gate {
            in_flight: AtomicUsize::new(0),
            direct_below,
            n_batched: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(super) fn enter(&self) -> InFlight<'_> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            gate: self,
            direct: before < self.direct_below,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One reader: takes what is queued and reads it in one statement, until the store is dropped.
pub(super) async fn run_reader(
    store: Weak<PgInner>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<PendingRead>>>,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_READS {
                match queue.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            batch
        };
        // A reader that stopped waiting needs no answer.
        let batch: Vec<PendingRead> = batch
            .into_iter()
            .filter(|pending| !pending.answer.is_closed())
            .collect();
        if batch.is_empty() {
            continue;
        }
        let Some(inner) = store.upgrade() else {
            for pending in batch {
                let _ = pending.answer.send(Err(StoreError::Closed));
            }
            return;
        };
        match read_batch(&inner, &batch).await {
            Ok(mut results) => {
                inner
                    .read_gate
                    .n_batched
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (pending, result) in batch.into_iter().zip(results.drain(..)) {
                    let _ = pending.answer.send(Ok(result));
                }
            }
            Err(error) => {
                // Each read tries again alone, so that each gets its own error (or answer).
                for pending in batch {
                    let result = read_one(
                        &inner,
                        &pending.stream_type,
                        &pending.stream_id,
                        pending.after_version,
                        pending.limit,
                    )
                    .await;
                    let _ = pending.answer.send(result);
                }
                tracing::debug!(%error, "a batched stream read failed; read each stream alone");
            }
        }
    }
}

/// One stream's events after a version, in its own statement.
pub(super) async fn read_one(
    inner: &PgInner,
    stream_type: &str,
    stream_id: &str,
    after_version: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(sql::READ_STREAM)
        .bind(stream_type)
        .bind(stream_id)
        .bind(rows::to_i64(after_version))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&inner.pool)
        .await?;
    rows.iter().map(rows::recorded_event).collect()
}

/// Every read of a batch in one statement: the events of each, in batch order.
async fn read_batch(
    inner: &PgInner,
    batch: &[PendingRead],
) -> Result<Vec<Vec<RecordedEvent>>, StoreError> {
    let stream_types: Vec<&str> = batch.iter().map(|p| p.stream_type.as_str()).collect();
    let stream_ids: Vec<&str> = batch.iter().map(|p| p.stream_id.as_str()).collect();
    let after_versions: Vec<i64> = batch
        .iter()
        .map(|p| rows::to_i64(p.after_version))
        .collect();
    let limits: Vec<i64> = batch
        .iter()
        .map(|p| i64::try_from(p.limit).unwrap_or(i64::MAX))
        .collect();
    let rows = sqlx::query(sql::READ_STREAMS)
        .bind(&stream_types)
        .bind(&stream_ids)
        .bind(&after_versions)
        .bind(&limits)
        .fetch_all(&inner.pool)
        .await?;
    let mut results: Vec<Vec<RecordedEvent>> = batch.iter().map(|_| Vec::new()).collect();
    for row in &rows {
        let request_number: i64 = row.try_get(sql::READ_STREAMS_REQUEST_COLUMN)?;
        let slot = usize::try_from(request_number - 1)
            .ok()
            .and_then(|index| results.get_mut(index))
            .ok_or_else(|| {
                StoreError::CorruptRow(format!(
                    "the batched stream read returned request {request_number}, which it was not given"
                ))
            })?;
        slot.push(rows::recorded_event(row)?);
    }
    Ok(results)
}
