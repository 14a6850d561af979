//! mercato's checkout process manager: for each `OrderCreated`, reserve the stock of every line,
//! charge the payment through the gateway port, then confirm the order (committing the
//! reservations) or cancel it (releasing them, refunding a late charge).
//!
//! - [`state`]: the durable saga rows (state, timer, retries) and the intake projection that
//!   starts them from the log; one worker runs at a time under a lease (`projections::lease`).
//! - [`checkout`]: one step of a saga, derived from the aggregates' current state.
//! - [`steps`]: the names of the steps and the event ids and metadata they derive.
//! - [`gateway`]: the payment gateway port and the built-in test gateway with its ledger.
//! - [`stripe`]: the Stripe adapter of the port, and Stripe's webhooks verified and recorded.
//! - [`run_saga`]: the worker: holds the lease, follows the log, runs due sagas concurrently,
//!   retries failing steps with exponential backoff and jitter, parks what keeps failing.

pub mod checkout;
pub mod gateway;
pub mod state;
pub mod steps;
pub mod stripe;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstore::{EventStore, StoreError};
use projections::lease::Lease;
use projections::readdb::ReadDb;
use projections::{Progress, ProjectionError, run_projection};
use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use checkout::{Charge, Checkout, Ending, Step};
pub use gateway::{PaymentGateway, RefundRequest, TestGateway, TestGatewayOptions};
pub use state::{SagaIntake, SagaRun, SagaStatus};
pub use stripe::{StripeConfig, StripeGateway, StripeWebhook};

/// Why a saga step did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// A command was refused by its aggregate: retrying will not change it.
    #[error("refused: {0}")]
    Refused(String),
    /// The store or another dependency failed; a retry may pass.
    #[error("{0}")]
    Transient(String),
    #[error("payment gateway: {0}")]
    Gateway(String),
    /// The gateway refused the request itself (a bad key, an invalid request): retrying the
    /// same request will not help; the message says what to fix.
    #[error("payment gateway: {0}")]
    GatewayRefused(String),
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("loading an aggregate: {0}")]
    Load(#[from] eventstore::aggregate::LoadError),
    #[error(transparent)]
    Codec(#[from] schemas::CodecError),
    #[error("saga database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("saga database: {0}")]
    Storage(String),
}

impl SagaError {
    /// Whether retrying the step can help.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SagaError::Refused(_) | SagaError::GatewayRefused(_))
    }
}

/// How the saga worker runs.
#[derive(Clone, Debug)]
pub struct SagaOptions {
    /// How long the gateway has to answer a charge before the order is cancelled.
    pub payment_timeout: Duration,
    /// How long a bank-transfer order waits for its payment before it is cancelled.
    pub bank_transfer_timeout: Duration,
    /// How many sagas run at once.
    pub concurrency: usize,
    /// How many times a failing step is tried before the saga is parked as failed.
    pub max_attempts: u32,
    /// The first retry's delay; each further retry doubles it (with jitter), up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a worker's lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// Names this worker in the lease table.
    pub worker_id: String,
    /// Set when the caller feeds the [`SagaIntake`] itself (from Kafka) and wakes this worker
    /// through it; `None` runs the intake from the store's log under the lease.
    pub external_intake: Option<Arc<Notify>>,
}

impl Default for SagaOptions {
    fn default() -> Self {
        Self {
            payment_timeout: Duration::from_secs(30),
            bank_transfer_timeout: checkout::DEFAULT_BANK_TRANSFER_TIMEOUT,
            concurrency: 256,
            max_attempts: 8,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(6),
            worker_id: projections::lease::process_owner(),
            external_intake: None,
        }
    }
}

/// The lease every checkout worker competes for.
const LEASE: &str = "checkout";
/// How many events the intake takes per batch.
const INTAKE_BATCH: usize = 500;
/// How long shutdown waits for running steps before abandoning them (they are idempotent).
const DRAIN: Duration = Duration::from_secs(5);
/// How many charges may wait for the gateway's answer at once. Each is a timer and a pending
/// call, not a saga place; past this many, a saga retries its charge after a backoff.
const MAX_CHARGES_WAITING: usize = 10_000;
/// When a saga whose charge still waits in this process is looked at again (ms), should the
/// charge's own wake-up not come first.
const CHARGE_RECHECK_MS: i64 = 1_000;

/// Runs the checkout saga until `shutdown`: waits for the lease, then follows the log from the
/// intake's checkpoint and runs due sagas, until the lease is lost or shutdown. Gives the lease
/// up on shutdown so that a standby worker takes over at once.
pub async fn run_saga(
    store: Arc<dyn EventStore>,
    db: ReadDb,
    gateway: Arc<dyn PaymentGateway>,
    vault: identity::PaymentVault,
    options: SagaOptions,
    progress: Progress,
    shutdown: CancellationToken,
) -> Result<(), SagaError> {
    state::ensure_schema(&db).await?;
    let checkout = Arc::new(
        Checkout::new(
            store.clone(),
            gateway.clone(),
            vault,
            options.payment_timeout,
        )
        .with_bank_transfer_timeout(options.bank_transfer_timeout),
    );
    // Late charges are recorded by any worker, lease or not: recording is idempotent.
    if let Some(mut late) = gateway.late_charges() {
        let checkout = checkout.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let charge = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    charge = late.recv() => match charge { Some(charge) => charge, None => return },
                };
                let mut backoff = Duration::from_millis(100);
                while let Err(error) = checkout.record_late_charge(&charge).await {
                    tracing::warn!(order_id = %charge.order_id, %error, "cannot record a late charge; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        });
    }
    let lease = Lease::new(
        db.clone(),
        LEASE,
        options.worker_id.clone(),
        options.lease_ttl,
    );
    lease
        .serve(&shutdown, |held| {
            let (checkout, db, options, store, progress) = (
                checkout.clone(),
                db.clone(),
                options.clone(),
                store.clone(),
                progress.clone(),
            );
            async move {
                metrics::gauge!("mercato_saga_lease_held").set(1.0);
                match &options.external_intake {
                    Some(wake) => {
                        run_due(Worker::new(&checkout, &db, &options, wake, &held)).await;
                    }
                    None => {
                        let wake = Arc::new(Notify::new());
                        let intake = Arc::new(SagaIntake::new(db.clone(), wake.clone()));
                        tokio::join!(
                            run_projection(
                                store.clone(),
                                intake,
                                db.clone(),
                                progress.clone(),
                                held.clone(),
                                INTAKE_BATCH
                            ),
                            run_due(Worker::new(&checkout, &db, &options, &wake, &held)),
                        );
                    }
                }
                metrics::gauge!("mercato_saga_lease_held").set(0.0);
            }
        })
        .await;
    Ok(())
}

/// What a worker's tasks share while it holds the lease.
#[derive(Debug)]
struct Worker {
    checkout: Arc<Checkout>,
    db: ReadDb,
    options: SagaOptions,
    /// Wakes [`run_due`]: an intake batch.
    wake: Arc<Notify>,
    /// Cancelled when the lease is lost or at shutdown.
    held: CancellationToken,
    /// The orders whose charge waits for the gateway now.
    charging: Mutex<HashSet<Uuid>>,
}

impl Worker {
    fn new(
        checkout: &Arc<Checkout>,
        db: &ReadDb,
        options: &SagaOptions,
        wake: &Arc<Notify>,
        held: &CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            checkout: checkout.clone(),
            db: db.clone(),
            options: options.clone(),
            wake: wake.clone(),
            held: held.clone(),
            charging: Mutex::new(HashSet::new()),
        })
    }

    fn charging(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        match self.charging.lock() {
            Ok(charging) => charging,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// How often the lease holder counts the sagas in each state (`mercato_sagas`).
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// Runs every due saga, at most `options.concurrency` at once, until `held` is cancelled.
async fn run_due(worker: Arc<Worker>) {
    let (db, options) = (&worker.db, &worker.options);
    let mut running: HashSet<Uuid> = HashSet::new();
    let mut tasks: JoinSet<Uuid> = JoinSet::new();
    let mut failures = 0_u32;
    let mut counted: Option<std::time::Instant> = None;
    loop {
        // How many sagas are in each state: every few seconds, not after every step.
        if counted.is_none_or(|at| at.elapsed() >= COUNT_EVERY) {
            if let Ok(counts) = state::count_by_state(db).await {
                for name in [state::RUNNING, state::DONE, state::FAILED] {
                    let count = counts
                        .iter()
                        .find(|(found, _)| found == name)
                        .map_or(0, |(_, count)| *count);
                    metrics::gauge!("mercato_sagas", "state" => name).set(count as f64);
                }
            }
            counted = Some(std::time::Instant::now());
        }
        // Wakes on a finished step, an intake batch, or the next timer; a second at most.
        let mut wait = Duration::from_secs(1);
        let free = options.concurrency.saturating_sub(running.len());
        if free > 0 {
            // Running sagas are still due in the table: ask for enough rows to see past them.
            let limit = free + running.len();
            match state::due(db, state::now_ms(), limit).await {
                Ok(runs) => {
                    failures = 0;
                    // A full page means more is due now: a finished step wakes this loop, and
                    // the next timer only matters once the due rows are all taken.
                    let all_due_taken = runs.len() < limit;
                    for run in runs {
                        if running.len() >= options.concurrency {
                            break;
                        }
                        if running.insert(run.order_id) {
                            tasks.spawn(run_one(worker.clone(), run));
                        }
                    }
                    if all_due_taken && let Ok(Some(next)) = state::next_due(db).await {
                        let until = next - state::now_ms();
                        if until > 0 {
                            wait = wait.min(Duration::from_millis(until as u64));
                        }
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "cannot read due sagas; retrying");
                    wait = Duration::from_millis(100 << failures.min(6));
                }
            }
        }
        tokio::select! {
            _ = worker.held.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(order_id) = done {
                    running.remove(&order_id);
                }
                // Collect every other finished step before reading the table again.
                while let Some(done) = tasks.try_join_next() {
                    if let Ok(order_id) = done {
                        running.remove(&order_id);
                    }
                }
            }
            _ = worker.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            running = tasks.len(),
            "saga steps still running at shutdown were abandoned; they resume on the next start"
        );
        tasks.abort_all();
    }
}

/// Runs one saga step and stores what it left: the end, a timer, or a retry. A charge starts
/// after its timer is stored, so that its answer's wake-up always comes after the timer.
async fn run_one(worker: Arc<Worker>, run: SagaRun) -> Uuid {
    let order_id = run.order_id;
    let work = run.work("saga step");
    let span = work.span();
    // This order's charge still waits for the gateway in this process: its answer, or its
    // timeout at the deadline, is recorded and wakes the saga; a step now would race it.
    if worker.charging().contains(&order_id) {
        let later = state::now_ms() + CHARGE_RECHECK_MS;
        if let Err(error) = state::set_charge_timer(&worker.db, order_id, later).await {
            tracing::warn!(parent: span, %error, "cannot store the saga's progress");
        }
        return order_id;
    }
    let step = work.run(worker.checkout.drive(&run)).await;
    store_step(&worker, &run, step, span).await;
    order_id
}

/// Stores what a step left: the end, a timer, a charge to ask for (its timer first, so that
/// the answer's wake-up always comes after it), or a retry.
async fn store_step(
    worker: &Arc<Worker>,
    run: &SagaRun,
    mut step: Result<Step, SagaError>,
    span: &tracing::Span,
) {
    let order_id = run.order_id;
    if let Ok(Step::Charge(_)) = &step {
        let charging = worker.charging();
        if !charging.contains(&order_id) && charging.len() >= MAX_CHARGES_WAITING {
            step = Err(SagaError::Transient(format!(
                "{MAX_CHARGES_WAITING} charges wait for the payment gateway already"
            )));
        }
    }
    let db = &worker.db;
    let stored = match &step {
        Ok(Step::Finished(ending)) => match state::finish(db, run, ending.outcome()).await {
            Ok(true) if run.outcome.is_none() => {
                let duration = (state::now_ms() - run.started_at).max(0) as f64 / 1000.0;
                metrics::histogram!("mercato_saga_duration_seconds").record(duration);
                match ending {
                    Ending::Confirmed => metrics::counter!("mercato_saga_confirmed_total").increment(1),
                    Ending::Cancelled(reason) => {
                        metrics::counter!("mercato_saga_cancelled_total", "reason" => reason.as_str())
                            .increment(1)
                    }
                }
                Ok(())
            }
            other => other.map(|_| ()),
        },
        Ok(Step::WaitUntil(at)) => state::wait_until(db, run, *at).await,
        Ok(Step::Charge(charge)) => {
            let stored = state::set_charge_timer(db, order_id, charge.deadline).await;
            if stored.is_ok() {
                start_charge(worker, run, charge.clone());
            }
            stored
        }
        Err(error) => schedule_retry(worker, run, error, span).await,
    };
    if let Err(error) = stored {
        // The row still says "due" (or its timer runs at the deadline): the step runs again,
        // and its commands are idempotent.
        tracing::warn!(parent: span, %error, "cannot store the saga's progress");
    }
}

/// Asks the gateway for `charge` in a task of its own, unless this order's charge waits already.
/// Once its answer (or the timeout at the deadline) is recorded, the saga's next step runs in
/// the same task; a gateway error retries the step after a backoff. Should the process die in
/// between, the intake wakes the saga when it reads the answer, or its timer at the deadline.
fn start_charge(worker: &Arc<Worker>, run: &SagaRun, charge: Charge) {
    if !worker.charging().insert(run.order_id) {
        return;
    }
    metrics::gauge!("mercato_saga_charges_waiting").increment(1.0);
    let (worker, run) = (worker.clone(), run.clone());
    tokio::spawn(async move {
        let work = run.work("saga charge");
        let answered = tokio::select! {
            // The lease is lost: the holder's timer asks again.
            _ = worker.held.cancelled() => Ok(false),
            answered = work.run(worker.checkout.charge(&run, &charge)) => answered,
        };
        let next = match answered {
            // The answer (or the timeout) is recorded: the saga's next step runs here at once,
            // while the order still counts as charging, so that no other step of it runs.
            Ok(true) => Some(work.run(worker.checkout.drive(&run)).await),
            // The lease was lost: the holder's timer runs the saga.
            Ok(false) => None,
            Err(error) => Some(Err(error)),
        };
        worker.charging().remove(&run.order_id);
        metrics::gauge!("mercato_saga_charges_waiting").decrement(1.0);
        if let Some(step) = next {
            store_step(&worker, &run, step, work.span()).await;
        }
    });
}

/// A step failed: schedules its retry after a backoff, or parks the saga once it failed
/// `max_attempts` times or cannot succeed.
async fn schedule_retry(
    worker: &Worker,
    run: &SagaRun,
    error: &SagaError,
    span: &tracing::Span,
) -> Result<(), SagaError> {
    let options = &worker.options;
    let attempts = run.attempts.saturating_add(1);
    let retry_at = (error.is_retryable() && attempts < options.max_attempts)
        .then(|| state::now_ms() + backoff_ms(options, attempts));
    if retry_at.is_some() {
        metrics::counter!("mercato_saga_retries_total").increment(1);
        tracing::warn!(parent: span, %error, attempts, "saga step failed; retrying");
    } else {
        metrics::counter!("mercato_saga_failed_total").increment(1);
        tracing::error!(parent: span, %error, attempts, "saga step keeps failing; the saga is parked and its order stays PENDING");
    }
    state::record_failure(
        &worker.db,
        run.order_id,
        attempts,
        &error.to_string(),
        retry_at,
    )
    .await
}

/// Exponential backoff with jitter: the `attempts`-th retry waits between half and all of
/// `base * 2^(attempts-1)`, at most `max_backoff`.
fn backoff_ms(options: &SagaOptions, attempts: u32) -> i64 {
    let exponential = options
        .base_backoff
        .saturating_mul(1_u32 << attempts.saturating_sub(1).min(20))
        .min(options.max_backoff);
    let full = exponential.as_millis().max(1) as i64;
    rand::rng().random_range(full / 2..=full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_ceiling() {
        let options = SagaOptions::default();
        for attempts in 1..=12 {
            let full = (100_i64 << (attempts - 1)).min(10_000);
            for _ in 0..50 {
                let wait = backoff_ms(&options, attempts);
                assert!(
                    (full / 2..=full).contains(&wait),
                    "attempt {attempts}: {wait} ms outside {}..={full}",
                    full / 2
                );
            }
        }
    }
}
