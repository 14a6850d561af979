//! Following the global log on SQLite: read after the checkpoint, wait for the writer's head.

use std::time::Duration;

use schemas::RecordedEvent;
use tokio::sync::watch;

use super::SqliteEventStore;
use crate::error::StoreError;
use crate::store::EventStore;

/// How long a caught-up subscription waits before reading anyway: another process (a `mercato
/// seed` next to a running server, say) may append to the same file without telling us.
const SAFETY_POLL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct SqliteSubscription {
    store: SqliteEventStore,
    head: watch::Receiver<u64>,
    pub(crate) checkpoint: u64,
    pub(crate) batch_size: usize,
}

impl SqliteSubscription {
    pub(crate) fn new(
        store: SqliteEventStore,
        head: watch::Receiver<u64>,
        checkpoint: u64,
        batch_size: usize,
    ) -> Self {
        Self {
            store,
            head,
            checkpoint,
            batch_size,
        }
    }

    pub(crate) async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        loop {
            // Positions commit in order on SQLite: whatever is committed after the checkpoint
            // can be read now, nothing can appear below it later.
            self.head.borrow_and_update();
            let events = self
                .store
                .read_all(self.checkpoint, self.batch_size)
                .await?;
            if let Some(last) = events.last() {
                self.checkpoint = last.position;
                return Ok(events);
            }
            match tokio::time::timeout(SAFETY_POLL, self.head.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                // The writer is gone: keep following by polling.
                Ok(Err(_closed)) => tokio::time::sleep(SAFETY_POLL).await,
            }
        }
    }
}
