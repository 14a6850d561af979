//! Following the global log on PostgreSQL: read below the horizon, wait on notifications.

use std::time::Duration;

use schemas::RecordedEvent;
use tokio::sync::watch;

use super::PgEventStore;
use crate::error::StoreError;

/// The first re-poll delay while committed events wait above the horizon.
const BACKOFF_START: Duration = Duration::from_millis(5);
/// The longest re-poll delay while committed events wait above the horizon.
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// How long a caught-up subscription waits without any notification before reading anyway
/// (a notification lost with a connection, or a NOTIFY that a crashed writer never sent).
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// How many quick re-polls follow a wake-up that found nothing to read.
const POLLS_AFTER_WAKE: u32 = 3;

#[derive(Debug)]
pub(crate) struct PgSubscription {
    store: PgEventStore,
    wake: watch::Receiver<u64>,
    pub(crate) checkpoint: u64,
    pub(crate) batch_size: usize,
    backoff: Duration,
    polls_after_wake: u32,
}

impl PgSubscription {
    pub(crate) fn new(
        store: PgEventStore,
        wake: watch::Receiver<u64>,
        checkpoint: u64,
        batch_size: usize,
    ) -> Self {
        Self {
            store,
            wake,
            checkpoint,
            batch_size,
            backoff: BACKOFF_START,
            polls_after_wake: 0,
        }
    }

    pub(crate) async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        loop {
            // Mark wake-ups as seen before reading: one that arrives during the read is kept.
            self.wake.borrow_and_update();
            let (events, pending) = self
                .store
                .read_page(self.checkpoint, self.batch_size)
                .await?;
            if let Some(last) = events.last() {
                self.checkpoint = last.position;
                self.backoff = BACKOFF_START;
                self.polls_after_wake = 0;
                return Ok(events);
            }
            if pending || self.polls_after_wake > 0 {
                // Committed events wait above the horizon: a transaction that started earlier
                // is still running. It ends (commit or rollback) without telling us, so poll,
                // backing off, until the horizon passes them.
                if !pending {
                    self.polls_after_wake -= 1;
                }
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            self.backoff = BACKOFF_START;
            match tokio::time::timeout(SAFETY_POLL, self.wake.changed()).await {
                Ok(Ok(())) => self.polls_after_wake = POLLS_AFTER_WAKE,
                // The store (and its listener) is gone: keep following by polling.
                Ok(Err(_closed)) => tokio::time::sleep(SAFETY_POLL).await,
                Err(_elapsed) => {}
            }
        }
    }
}
