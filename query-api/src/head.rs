//! The log's head as this process sees it, shared by every request that waits for a position.
//!
//! A read that waits for a position beyond the head (`X-Min-Position` on the log's own routes,
//! or a position a write is committing this very moment) waits on a [`watch`] channel, not on
//! the store: one follower task reads the head once per change signal of the store
//! ([`EventStore::log_changes`]), however many requests wait, and nothing at all while none
//! does. So a thousand made-up positions cost a thousand parked futures, not a thousand
//! polling loops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use eventstore::{EventStore, StoreError};
use tokio::sync::watch;

/// How often the follower reads the head while requests wait and no change was signalled: on
/// PostgreSQL an event becomes readable when older transactions end, which is not signalled.
const UNSIGNALLED_READ: Duration = Duration::from_millis(50);

/// See the module documentation. Cheap to clone; the follower stops once every clone is gone.
#[derive(Clone, Debug)]
pub struct LogHead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn EventStore>,
    /// The highest head read so far; waiters hold its receivers.
    head: watch::Sender<u64>,
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How many times the follower read the head.
    reads: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut follower) = self.follower.lock()
            && let Some(follower) = follower.take()
        {
            follower.abort();
        }
    }
}

impl LogHead {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                head: watch::channel(0).0,
                follower: Mutex::new(None),
                reads: AtomicU64::new(0),
            }),
        }
    }

    /// Waits at most `within` until the log can return `position`. Answers `Ok(())` once it
    /// can, or the head last read when the time is up.
    pub async fn wait_for(
        &self,
        position: u64,
        within: Duration,
    ) -> Result<Result<(), u64>, StoreError> {
        // Subscribed before the first read: a change in between is not missed.
        let mut heads = self.inner.head.subscribe();
        let head = self.inner.store.head_position().await?;
        self.raise(head);
        if head >= position {
            return Ok(Ok(()));
        }
        self.ensure_follower();
        match tokio::time::timeout(within, heads.wait_for(|head| *head >= position)).await {
            Ok(Ok(_)) => Ok(Ok(())),
            // The follower is gone only with the server.
            Ok(Err(_)) | Err(_) => Ok(Err(*self.inner.head.borrow())),
        }
    }

    /// How many times the follower read the head, whatever the number of waiters.
    pub fn follower_reads(&self) -> u64 {
        self.inner.reads.load(Ordering::Relaxed)
    }

    fn raise(&self, head: u64) {
        self.inner.head.send_if_modified(|known| {
            let higher = head > *known;
            if higher {
                *known = head;
            }
            higher
        });
    }

    fn ensure_follower(&self) {
        let mut follower = match self.inner.follower.lock() {
            Ok(follower) => follower,
            Err(poisoned) => poisoned.into_inner(),
        };
        if follower.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        *follower = Some(tokio::spawn(follow(Arc::downgrade(&self.inner))));
    }
}

/// Reads the head after each change signal (and every [`UNSIGNALLED_READ`]) while requests
/// wait; ends when the [`LogHead`] is dropped.
async fn follow(inner: Weak<Inner>) {
    let mut changes = None;
    loop {
        let Some(head) = inner.upgrade().map(|inner| LogHead { inner }) else {
            return;
        };
        if changes.is_none() {
            match head.inner.store.log_changes().await {
                Ok(receiver) => changes = Some(receiver),
                Err(error) => {
                    tracing::warn!(%error, "cannot follow the log's changes; reading the head on a timer")
                }
            }
        }
        if head.inner.head.receiver_count() > 0 {
            if let Some(changes) = changes.as_mut() {
                changes.borrow_and_update();
            }
            head.inner.reads.fetch_add(1, Ordering::Relaxed);
            match head.inner.store.head_position().await {
                Ok(position) => head.raise(position),
                Err(error) => tracing::debug!(%error, "cannot read the log's head"),
            }
        }
        drop(head);
        match changes.as_mut() {
            Some(receiver) => {
                if let Ok(Err(_closed)) =
                    tokio::time::timeout(UNSIGNALLED_READ, receiver.changed()).await
                {
                    changes = None;
                    tokio::time::sleep(UNSIGNALLED_READ).await;
                }
            }
            None => tokio::time::sleep(UNSIGNALLED_READ).await,
        }
    }
}
