//! One step of a checkout saga: read where the order, its payment and its reservations stand,
//! and issue the next commands.
//!
//! The saga keeps no decision in memory. Everything it decided is an event (a reservation, a
//! payment request, a payment result, the order's end), so a run after a crash reads the same
//! state and continues; every command carries an id derived from the order's `OrderCreated`, so a
//! repeated command finds its events stored and changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tracing::Instrument;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::order::OrderLine;
use domain::product::ProductError;
use domain::{
    CancelReason, Order, OrderCommand, OrderError, OrderStatus, Payment, PaymentCommand,
    PaymentError, PaymentEvent, PaymentMethod, PaymentStatus, Product, ProductCommand,
};
use eventstore::aggregate::{CommandError, CommandOptions, execute, load};
use eventstore::{EventMetadata, EventStore};
use identity::PaymentVault;
use uuid::Uuid;

use crate::SagaError;
use crate::gateway::{ChargeOutcome, ChargeRequest, LateCharge, PaymentGateway, RefundRequest};
use crate::state::SagaRun;
use crate::steps::{self, SagaStep, out_of_stock_detail};

/// How a saga ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Confirmed,
    Cancelled(CancelReason),
}

impl Ending {
    pub fn outcome(self) -> &'static str {
        match self {
            Ending::Confirmed => "CONFIRMED",
            Ending::Cancelled(_) => "CANCELLED",
        }
    }
}

/// What a step leaves to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The order ended; nothing is left to do.
    Finished(Ending),
    /// Waiting for the gateway: run again at this time (ms), the payment deadline.
    WaitUntil(i64),
    /// The gateway is to be asked for the charge. The caller stores the timer (the deadline)
    /// first, then runs [`Checkout::charge`] apart from the saga's workers: a gateway that is slow
    /// to answer holds a timer, never one of the saga's places. Once the answer is recorded,
    /// the saga's next step follows.
    Charge(Charge),
}

/// A charge to ask the gateway for, and until when its answer counts.
#[derive(Clone, PartialEq, Eq)]
pub struct Charge {
    pub request: ChargeRequest,
    /// The payment deadline (ms): the saga's timer, and the end of the wait for an answer.
    pub deadline: i64,
}

impl std::fmt::Debug for Charge {
    // Without the payment token.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Charge")
            .field("order_id", &self.request.order_id)
            .field("amount", &self.request.amount)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// One lock per product, so that this process's sagas reserve a product one at a time instead
/// of losing optimistic-concurrency races to each other (a popular product under a sale).
#[derive(Debug, Default)]
struct ProductLocks {
    locks: Mutex<HashMap<Uuid, Weak<tokio::sync::Mutex<()>>>>,
}

impl ProductLocks {
    fn lock_of(&self, product_id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.locks.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(lock) = locks.get(&product_id).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() > 1_024 {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(product_id, Arc::downgrade(&lock));
        lock
    }
}

/// The checkout process: the store its commands go to, the gateway, and the payment timeout.
#[derive(Debug)]
pub struct Checkout {
    store: Arc<dyn EventStore>,
    gateway: Arc<dyn PaymentGateway>,
    vault: PaymentVault,
    payment_timeout: Duration,
    bank_transfer_timeout: Duration,
    locks: ProductLocks,
}

/// How long a bank-transfer order waits for its payment by default: seven days.
pub const DEFAULT_BANK_TRANSFER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a saga that waits for a bank transfer sleeps at most before it looks again (a
/// cancellation wakes it at once; this bounds a wake-up lost to a race with its timer).
const BANK_TRANSFER_RECHECK: Duration = Duration::from_secs(60);

/// How long the gateway is asked for a charge's outcome once the deadline has passed.
const RECONCILE_WAIT: Duration = Duration::from_millis(500);

pub use crate::steps::SOURCE;

impl Checkout {
    pub fn new(
        store: Arc<dyn EventStore>,
        gateway: Arc<dyn PaymentGateway>,
        vault: PaymentVault,
        payment_timeout: Duration,
    ) -> Self {
        Self {
            store,
            gateway,
            vault,
            payment_timeout,
            bank_transfer_timeout: DEFAULT_BANK_TRANSFER_TIMEOUT,
            locks: ProductLocks::default(),
        }
    }

    /// How long a bank-transfer order waits for staff to record its payment.
    pub fn with_bank_transfer_timeout(mut self, timeout: Duration) -> Self {
        self.bank_transfer_timeout = timeout;
        self
    }

    /// Runs the saga of `run` as far as it can go now. Once the order has ended, its payment
    /// token leaves the vault: the outcome is in the log, and no step charges again.
    pub async fn drive(&self, run: &SagaRun) -> Result<Step, SagaError> {
        let step = self.drive_steps(run).await?;
        if let Step::Finished(_) = step
            && run.payment_ref.starts_with(identity::vault::VAULT_PREFIX)
        {
            self.vault
                .forget(&run.payment_ref)
                .await
                .map_err(|error| SagaError::Transient(error.to_string()))?;
        }
        Ok(step)
    }

    /// The token to charge: from the vault, or the one a saga started before tokens left the
    /// log holds; `None` when it is not kept (any more).
    async fn payment_token(&self, run: &SagaRun) -> Result<Option<String>, SagaError> {
        if run.payment_ref.starts_with(identity::vault::VAULT_PREFIX) {
            return self
                .vault
                .token(&run.payment_ref)
                .await
                .map_err(|error| SagaError::Transient(error.to_string()));
        }
        Ok(Some(run.payment_ref.clone()).filter(|token| !token.is_empty()))
    }

    async fn drive_steps(&self, run: &SagaRun) -> Result<Step, SagaError> {
        let order_id = run.order_id.to_string();
        let order = load::<Order>(self.store.as_ref(), &order_id).await?.state;
        if order.order_id.is_none() {
            return Err(SagaError::Refused(format!(
                "order {order_id} does not exist"
            )));
        }
        let payment = self.payment(run).await?;
        match order.status {
            OrderStatus::Confirmed => {
                self.commit_lines(run, &order.lines).await?;
                self.settle(run, &order, &payment.state).await?;
                return Ok(Step::Finished(Ending::Confirmed));
            }
            OrderStatus::Cancelled => {
                let reason = order.cancel_reason.unwrap_or(CancelReason::PaymentTimeout);
                self.compensate(run, &order, &payment.state, usize::MAX)
                    .await?;
                return Ok(Step::Finished(Ending::Cancelled(reason)));
            }
            OrderStatus::Pending => {}
        }
        if payment.state.timed_out {
            return self
                .cancel(
                    run,
                    CancelReason::PaymentTimeout,
                    "the payment gateway did not answer in time".to_owned(),
                )
                .await;
        }
        let bank_transfer = order.payment_method == PaymentMethod::BankTransfer;
        match payment.state.status {
            PaymentStatus::NotRequested => {
                if let Some((refused, reason, detail)) =
                    self.reserve_lines(run, &order.lines).await?
                {
                    // Only the lines before the refused one hold a reservation of this order.
                    return self.cancel_reserved(run, refused, reason, detail).await;
                }
                self.payment_command(
                    run,
                    SagaStep::RequestPayment,
                    PaymentCommand::RequestPayment {
                        order_id: run.order_id,
                        amount: order.total,
                        payment_ref: run.event_payment_ref(),
                    },
                )
                .await?;
                if bank_transfer {
                    return Ok(self.bank_transfer_wait(Utc::now() + self.bank_transfer_timeout));
                }
                let deadline = Utc::now() + self.payment_timeout;
                self.charge_step(run, &order, deadline).await
            }
            PaymentStatus::Requested if bank_transfer => {
                let requested_at = payment.requested_at.unwrap_or_else(Utc::now);
                let deadline = requested_at + self.bank_transfer_timeout;
                if Utc::now() < deadline {
                    return Ok(self.bank_transfer_wait(deadline));
                }
                // A payment recorded between the read and this command refuses it; the next
                // run reads that payment.
                self.payment_command(run, SagaStep::PaymentTimeout, PaymentCommand::RecordTimeout)
                    .await
                    .map_err(|error| SagaError::Transient(error.to_string()))?;
                self.cancel(
                    run,
                    CancelReason::PaymentTimeout,
                    format!(
                        "no payment was received within {} s of the order",
                        self.bank_transfer_timeout.as_secs()
                    ),
                )
                .await
            }
            PaymentStatus::Requested => {
                let requested_at = payment.requested_at.unwrap_or_else(Utc::now);
                self.charge_step(run, &order, requested_at + self.payment_timeout)
                    .await
            }
            PaymentStatus::Succeeded => self.confirm(run, &order.lines).await,
            PaymentStatus::Failed => {
                self.cancel(
                    run,
                    CancelReason::PaymentDeclined,
                    payment
                        .failure
                        .unwrap_or_else(|| "the payment was declined".to_owned()),
                )
                .await
            }
            PaymentStatus::TimedOut | PaymentStatus::Refunded => {
                self.cancel(
                    run,
                    CancelReason::PaymentTimeout,
                    "the payment gateway did not answer in time".to_owned(),
                )
                .await
            }
        }
    }

    /// Waits for a bank transfer until `deadline`, looking again now and then.
    fn bank_transfer_wait(&self, deadline: DateTime<Utc>) -> Step {
        let recheck = Utc::now() + BANK_TRANSFER_RECHECK;
        Step::WaitUntil(deadline.min(recheck).timestamp_millis())
    }

    /// Before `deadline`: the charge to ask the gateway for, apart from this step
    /// ([`Step::Charge`]). After it: asks the gateway once, briefly, and records its answer or
    /// the timeout.
    async fn charge_step(
        &self,
        run: &SagaRun,
        order: &Order,
        deadline: DateTime<Utc>,
    ) -> Result<Step, SagaError> {
        let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let answer = match self.payment_token(run).await? {
            Some(payment_token) => {
                let request = ChargeRequest {
                    order_id: run.order_id,
                    amount: order.total,
                    payment_token,
                };
                if !left.is_zero() {
                    return Ok(Step::Charge(Charge {
                        request,
                        deadline: deadline.timestamp_millis(),
                    }));
                }
                // Past the deadline the gateway is still asked once, briefly: a run that crashed
                // after the gateway charged must learn of that charge (the order id is the
                // idempotency key, so asking again never charges twice) instead of cancelling a
                // charged order.
                tokio::time::timeout(
                    RECONCILE_WAIT,
                    self.gateway
                        .charge(&request)
                        .instrument(gateway_span("payment gateway charge")),
                )
                .await
                .ok()
            }
            // Nothing to charge with: declined, as a gateway declines a token it cannot use.
            None => Some(Ok(ChargeOutcome::Declined {
                reason: "the payment token is no longer kept; check out again".to_owned(),
            })),
        };
        match answer {
            Some(Ok(ChargeOutcome::Approved { charge_id })) => {
                self.payment_command(
                    run,
                    SagaStep::PaymentResult,
                    PaymentCommand::RecordSuccess { charge_id },
                )
                .await?;
                self.confirm(run, &order.lines).await
            }
            Some(Ok(ChargeOutcome::Declined { reason })) => {
                self.payment_command(
                    run,
                    SagaStep::PaymentResult,
                    PaymentCommand::RecordFailure {
                        reason: reason.clone(),
                    },
                )
                .await?;
                self.cancel(
                    run,
                    CancelReason::PaymentDeclined,
                    format!("the payment was declined: {reason}"),
                )
                .await
            }
            Some(Err(error)) => Err(error),
            None => {
                // The deadline passed without an answer. Recording the timeout first makes it
                // the decision: a success that arrives later is refunded, never kept.
                let payment = self.payment(run).await?;
                match payment.state.status {
                    // A late answer was recorded before the deadline after all.
                    PaymentStatus::Succeeded if !payment.state.timed_out => {
                        return self.confirm(run, &order.lines).await;
                    }
                    PaymentStatus::Failed => {
                        let detail = payment.failure.unwrap_or_default();
                        return self
                            .cancel(run, CancelReason::PaymentDeclined, detail)
                            .await;
                    }
                    _ => {}
                }
                // A success recorded between the read and this command refuses it; the next
                // run reads that success.
                self.payment_command(run, SagaStep::PaymentTimeout, PaymentCommand::RecordTimeout)
                    .await
                    .map_err(|error| SagaError::Transient(error.to_string()))?;
                self.cancel(
                    run,
                    CancelReason::PaymentTimeout,
                    format!(
                        "the payment gateway did not answer within {} s",
                        self.payment_timeout.as_secs_f64()
                    ),
                )
                .await
            }
        }
    }

    /// Asks the gateway for `charge`, waiting for its answer until the deadline, and records the
    /// answer (`PaymentSucceeded` or `PaymentFailed`), or at the deadline the timeout
    /// (`PaymentTimedOut`, the decision: a charge the gateway makes later is refunded). The
    /// saga's next step confirms or cancels. Answers whether the payment's state may have
    /// changed (the saga is then due at once); `false` when nothing was asked for or recorded.
    pub async fn charge(&self, run: &SagaRun, charge: &Charge) -> Result<bool, SagaError> {
        let left = Duration::from_millis(
            u64::try_from(charge.deadline - crate::state::now_ms()).unwrap_or(0),
        );
        let (step, command) = match tokio::time::timeout(
            left,
            self.gateway
                .charge(&charge.request)
                .instrument(gateway_span("payment gateway charge")),
        )
        .await
        {
            Ok(answer) => (
                SagaStep::PaymentResult,
                match answer? {
                    ChargeOutcome::Approved { charge_id } => {
                        PaymentCommand::RecordSuccess { charge_id }
                    }
                    ChargeOutcome::Declined { reason } => PaymentCommand::RecordFailure { reason },
                },
            ),
            Err(_elapsed) => (SagaStep::PaymentTimeout, PaymentCommand::RecordTimeout),
        };
        match self
            .command::<Payment>(run, step, &run.order_id.to_string(), command)
            .await
        {
            // Refused: another answer was recorded first (a late charge, the timer's timeout),
            // which the next step reads.
            Ok(()) | Err(CommandError::Domain(_)) => Ok(true),
            Err(error) => Err(command_error("payment", error)),
        }
    }

    /// Reserves every line, in order. On a line that cannot be reserved, answers its index and
    /// why (the lines before it are released by the cancellation). That line and the ones after
    /// it hold no reservation of the order: the line was refused without one, and a run reaches
    /// a line only after reserving the one before (a run that had reserved the refused line
    /// would have left its events, which the reserve then finds by its ids).
    async fn reserve_lines(
        &self,
        run: &SagaRun,
        lines: &[OrderLine],
    ) -> Result<Option<(usize, CancelReason, String)>, SagaError> {
        for (index, line) in lines.iter().enumerate() {
            match self.reserve(run, index, line).await {
                Ok(true) => {}
                Ok(false) => {
                    // Reserved and closed again by another run of this saga, which ended the
                    // order before closing it (a late or redelivered run): read the order again.
                    return Err(SagaError::Transient(format!(
                        "the reservation of product {} was closed by another run of this saga; the order is read again",
                        line.product_id
                    )));
                }
                Err(CommandError::Domain(ProductError::InsufficientStock {
                    name,
                    requested,
                    available,
                })) => {
                    return Ok(Some((
                        index,
                        CancelReason::OutOfStock,
                        out_of_stock_detail(line.product_id, &name, requested, available),
                    )));
                }
                Err(CommandError::Domain(ProductError::NotFound)) => {
                    return Ok(Some((
                        index,
                        CancelReason::OutOfStock,
                        format!("product {} does not exist", line.product_id),
                    )));
                }
                Err(error) => return Err(command_error("reserve stock", error)),
            }
        }
        Ok(None)
    }

    /// The payment succeeded: confirm the order, then turn its reservations into sales. An
    /// order its customer or staff cancelled meanwhile is compensated instead (its stock
    /// released, its charge refunded).
    async fn confirm(&self, run: &SagaRun, lines: &[OrderLine]) -> Result<Step, SagaError> {
        match self
            .command::<Order>(
                run,
                SagaStep::Confirm,
                &run.order_id.to_string(),
                OrderCommand::ConfirmOrder,
            )
            .await
        {
            Ok(()) => {}
            Err(CommandError::Domain(OrderError::InvalidTransition {
                from: OrderStatus::Cancelled,
                ..
            })) => return self.compensate_cancelled(run).await,
            Err(error) => return Err(command_error("order", error)),
        }
        self.commit_lines(run, lines).await?;
        Ok(Step::Finished(Ending::Confirmed))
    }

    /// Compensates an order that is cancelled, as it stands now.
    async fn compensate_cancelled(&self, run: &SagaRun) -> Result<Step, SagaError> {
        let order = load::<Order>(self.store.as_ref(), &run.order_id.to_string())
            .await?
            .state;
        let payment = self.payment(run).await?;
        let reason = order.cancel_reason.unwrap_or(CancelReason::PaymentTimeout);
        self.compensate(run, &order, &payment.state, usize::MAX)
            .await?;
        Ok(Step::Finished(Ending::Cancelled(reason)))
    }

    async fn commit_lines(&self, run: &SagaRun, lines: &[OrderLine]) -> Result<(), SagaError> {
        for (index, line) in lines.iter().enumerate() {
            let command = ProductCommand::CommitStock {
                order_id: run.order_id,
            };
            self.product_command(run, SagaStep::Commit(index), line.product_id, command)
                .await
                .map_err(|error| command_error("commit stock", error))?;
        }
        Ok(())
    }

    /// Cancels the order (the decision, stored first), then compensates. An order a person
    /// cancelled meanwhile keeps their reason.
    async fn cancel(
        &self,
        run: &SagaRun,
        reason: CancelReason,
        detail: String,
    ) -> Result<Step, SagaError> {
        self.cancel_reserved(run, usize::MAX, reason, detail).await
    }

    /// The same, for an order of which only the first `reserved` lines may hold a reservation
    /// (a line refused for want of stock holds none, nor do those after it).
    async fn cancel_reserved(
        &self,
        run: &SagaRun,
        reserved: usize,
        reason: CancelReason,
        detail: String,
    ) -> Result<Step, SagaError> {
        self.order_command(
            run,
            SagaStep::Cancel,
            OrderCommand::CancelOrder { reason, detail },
        )
        .await?;
        let order = load::<Order>(self.store.as_ref(), &run.order_id.to_string())
            .await?
            .state;
        let payment = self.payment(run).await?;
        let reason = order.cancel_reason.unwrap_or(CancelReason::PaymentTimeout);
        self.compensate(run, &order, &payment.state, reserved)
            .await?;
        Ok(Step::Finished(Ending::Cancelled(reason)))
    }

    /// For a cancelled order: gives its stock back and refunds what is left of its charge.
    /// Reservations of an order that was never confirmed are released; an order cancelled
    /// after its confirmation has its reservations committed (should a crash have left any
    /// open) and what did not ship put back in stock. Every step derives its events' ids from
    /// the order, so a second run changes nothing. Only the first `reserved` lines are released
    /// (the others hold no reservation of this order).
    async fn compensate(
        &self,
        run: &SagaRun,
        order: &Order,
        payment: &Payment,
        reserved: usize,
    ) -> Result<(), SagaError> {
        if order.confirmed {
            self.commit_lines(run, &order.lines).await?;
            for (index, line) in order.lines.iter().enumerate() {
                let shipped = order.shipped.get(&line.product_id).copied().unwrap_or(0);
                let unshipped = line.quantity.saturating_sub(shipped);
                if unshipped > 0 {
                    self.restock(run, SagaStep::Restock(index), line.product_id, unshipped)
                        .await?;
                }
            }
        } else {
            for (index, line) in order.lines.iter().enumerate().take(reserved) {
                let command = ProductCommand::ReleaseStock {
                    order_id: run.order_id,
                };
                match self
                    .product_command(run, SagaStep::Release(index), line.product_id, command)
                    .await
                {
                    Ok(()) | Err(CommandError::Domain(ProductError::NotFound)) => {}
                    Err(error) => return Err(command_error("release stock", error)),
                }
            }
        }
        self.settle(run, order, payment).await?;
        // What is left of the charge, once the refunds asked for are settled.
        let payment = self.payment(run).await?.state;
        let left = payment.refundable();
        if left.is_positive() {
            let charge_id = payment.charge_id.clone().unwrap_or_default();
            // What is left, under a key of this saga's step: a rerun asks for the same refund
            // and the gateway refunds once.
            let refund_id = self
                .refund(&RefundRequest {
                    order_id: run.order_id,
                    charge_id: charge_id.clone(),
                    amount: left,
                    key: refund_key(run.order_id),
                })
                .await?;
            self.payment_command(
                run,
                SagaStep::Refund,
                PaymentCommand::RecordRefund {
                    refund_id,
                    amount: left,
                },
            )
            .await?;
            metrics::counter!("mercato_saga_refunds_total").increment(1);
            tracing::info!(order_id = %run.order_id, %charge_id, amount = %left, "the charge of a cancelled order was refunded");
        }
        Ok(())
    }

    /// What staff asked for after checkout: the refunds not yet answered go to the gateway
    /// (its answer recorded), and returned units marked for restock go back to stock.
    async fn settle(
        &self,
        run: &SagaRun,
        order: &Order,
        payment: &Payment,
    ) -> Result<(), SagaError> {
        for (return_id, lines) in &order.restock_returns {
            for (index, line) in lines.iter().enumerate() {
                self.restock(
                    run,
                    SagaStep::ReturnRestock(*return_id, index),
                    line.product_id,
                    line.quantity,
                )
                .await?;
            }
        }
        let charge_id = payment.charge_id.clone().unwrap_or_default();
        for (refund_id, amount) in payment.pending_refunds() {
            let step = SagaStep::SettleRefund(steps::refund_key(refund_id));
            let answer = self
                .refund(&RefundRequest {
                    order_id: run.order_id,
                    charge_id: charge_id.clone(),
                    amount,
                    key: refund_id.clone(),
                })
                .await;
            let command = match answer {
                Ok(_gateway_refund_id) => PaymentCommand::RecordRefund {
                    refund_id: refund_id.clone(),
                    amount,
                },
                Err(SagaError::Refused(reason) | SagaError::GatewayRefused(reason)) => {
                    PaymentCommand::FailRefund {
                        refund_id: refund_id.clone(),
                        reason,
                    }
                }
                Err(error) => return Err(error),
            };
            self.payment_command(run, step, command).await?;
            metrics::counter!("mercato_refunds_total").increment(1);
        }
        Ok(())
    }

    /// Refunds through the gateway; a payment staff recorded by hand (a bank transfer) is
    /// refunded by hand too, so the refund's own key is its id.
    async fn refund(&self, request: &RefundRequest) -> Result<String, SagaError> {
        if request
            .charge_id
            .starts_with(domain::payment::RECEIVED_PREFIX)
        {
            return Ok(request.key.clone());
        }
        self.gateway
            .refund(request)
            .instrument(gateway_span("payment gateway refund"))
            .await
    }

    /// Puts `quantity` units of `product_id` back in stock, once for `step`.
    async fn restock(
        &self,
        run: &SagaRun,
        step: SagaStep,
        product_id: Uuid,
        quantity: u32,
    ) -> Result<(), SagaError> {
        let command = ProductCommand::AdjustStock {
            delta: i64::from(quantity),
        };
        match self.product_command(run, step, product_id, command).await {
            Ok(()) | Err(CommandError::Domain(ProductError::NotFound)) => Ok(()),
            Err(error) => Err(command_error("restock", error)),
        }
    }

    /// Where the payment stands, and when it was requested (the deadline counts from then).
    async fn payment(&self, run: &SagaRun) -> Result<PaymentView, SagaError> {
        let events = self
            .store
            .read_stream(Payment::TYPE, &run.order_id.to_string(), 0, 256)
            .await?;
        let mut view = PaymentView::default();
        for recorded in &events {
            let event: PaymentEvent = schemas::decode(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.payload,
            )?;
            match &event {
                PaymentEvent::PaymentRequested(_) => view.requested_at = Some(recorded.occurred_at),
                PaymentEvent::PaymentFailed(failed) => view.failure = Some(failed.reason.clone()),
                _ => {}
            }
            view.state.apply(event);
        }
        Ok(view)
    }

    fn metadata(&self, run: &SagaRun) -> EventMetadata {
        steps::metadata(run.order_event_id, &run.correlation_id)
    }

    /// The options of the saga's command `step`: its events' ids derive from the order's
    /// creation and the step, so the same step never stores new events twice.
    fn options(run: &SagaRun, step: SagaStep) -> CommandOptions {
        CommandOptions {
            // Every saga command is idempotent in its aggregate: a repeated one decides nothing
            // new, so the lookup of its earlier events would be a query for nothing.
            look_up_cause_first: false,
            ..CommandOptions::caused_by(step.cause(run.order_event_id))
        }
    }

    /// Reserves order line `index`. Answers whether the order's reservation is open after it:
    /// not when this step's reservation was stored before and has been released or committed
    /// since (the store recognises the repeat by its event ids and appends nothing).
    async fn reserve(
        &self,
        run: &SagaRun,
        index: usize,
        line: &OrderLine,
    ) -> Result<bool, CommandError<ProductError>> {
        let command = ProductCommand::ReserveStock {
            order_id: run.order_id,
            quantity: line.quantity,
        };
        let lock = self.locks.lock_of(line.product_id);
        let _turn = lock.lock().await;
        let executed = execute::<Product>(
            self.store.as_ref(),
            &line.product_id.to_string(),
            command,
            &(),
            &self.metadata(run),
            &Self::options(run, SagaStep::Reserve(index)),
        )
        .await?;
        Ok(executed.state.reservations.contains_key(&run.order_id))
    }

    async fn product_command(
        &self,
        run: &SagaRun,
        step: SagaStep,
        product_id: Uuid,
        command: ProductCommand,
    ) -> Result<(), CommandError<ProductError>> {
        let lock = self.locks.lock_of(product_id);
        let _turn = lock.lock().await;
        self.command::<Product>(run, step, &product_id.to_string(), command)
            .await
    }

    /// Runs the saga's command `step` on the aggregate `A` in `stream_id`.
    async fn command<A>(
        &self,
        run: &SagaRun,
        step: SagaStep,
        stream_id: &str,
        command: A::Command,
    ) -> Result<(), CommandError<A::Error>>
    where
        A: Aggregate<Services = ()>,
        A::Command: Clone,
    {
        execute::<A>(
            self.store.as_ref(),
            stream_id,
            command,
            &(),
            &self.metadata(run),
            &Self::options(run, step),
        )
        .await
        .map(|_| ())
    }

    async fn order_command(
        &self,
        run: &SagaRun,
        step: SagaStep,
        command: OrderCommand,
    ) -> Result<(), SagaError> {
        self.command::<Order>(run, step, &run.order_id.to_string(), command)
            .await
            .map_err(|error| command_error("order", error))
    }

    async fn payment_command(
        &self,
        run: &SagaRun,
        step: SagaStep,
        command: PaymentCommand,
    ) -> Result<(), SagaError> {
        self.command::<Payment>(run, step, &run.order_id.to_string(), command)
            .await
            .map_err(|error| command_error("payment", error))
    }

    /// Records a charge the gateway made after the saga stopped waiting. The saga of the order
    /// then refunds it (its `PaymentSucceeded` wakes the cancelled saga).
    pub async fn record_late_charge(&self, late: &LateCharge) -> Result<(), SagaError> {
        let answer = GatewayAnswer {
            order_id: late.order_id,
            outcome: ChargeOutcome::Approved {
                charge_id: late.charge_id.clone(),
            },
            cause: Uuid::new_v5(
                &late.order_id,
                format!("late-charge/{}", late.charge_id).as_bytes(),
            ),
            causation_id: late.charge_id.clone(),
            source: SOURCE.to_owned(),
        };
        if let Recorded::Refused(why) = record_gateway_answer(self.store.as_ref(), &answer).await? {
            tracing::warn!(order_id = %late.order_id, charge_id = %late.charge_id, why, "a late charge cannot be recorded; refund it at the gateway");
        }
        Ok(())
    }
}

/// The refund key of the saga's refund of `order_id` (its step's name after the order id).
pub fn refund_key(order_id: Uuid) -> String {
    format!("{order_id}/{}", SagaStep::Refund.name())
}

/// An answer of the gateway that arrives apart from the saga's charge call: a late charge, a
/// webhook. `cause` derives the ids of the events it records, so the same answer delivered
/// again records nothing new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayAnswer {
    pub order_id: Uuid,
    pub outcome: ChargeOutcome,
    pub cause: Uuid,
    /// What caused it, as the gateway names it (a charge id, a webhook event id).
    pub causation_id: String,
    /// The event metadata's `source`.
    pub source: String,
}

/// What recording a [`GatewayAnswer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A `PaymentSucceeded` or `PaymentFailed` was appended.
    New,
    /// The payment already says so (the same answer delivered again, or the saga's own call
    /// recorded it first): nothing was appended.
    AlreadyKnown,
    /// The payment cannot take it (never requested, or already ended otherwise): nothing was
    /// appended; the reason.
    Refused(&'static str),
}

/// Records `answer` on the order's Payment stream, durably and once: a success after the
/// deadline is recorded (the saga, which its `PaymentSucceeded` wakes, refunds it); a second
/// success is nothing new for the aggregate. A refusal of the aggregate is an answer
/// ([`Recorded::Refused`]), not an error; an error is the store's, and worth retrying.
pub async fn record_gateway_answer(
    store: &dyn EventStore,
    answer: &GatewayAnswer,
) -> Result<Recorded, SagaError> {
    let metadata = EventMetadata {
        correlation_id: answer.order_id.to_string(),
        causation_id: answer.causation_id.clone(),
        saga_id: None,
        actor: "payment-gateway".to_owned(),
        source: answer.source.clone(),
        traceparent: None,
        tracestate: None,
    };
    let command = match &answer.outcome {
        ChargeOutcome::Approved { charge_id } => PaymentCommand::RecordSuccess {
            charge_id: charge_id.clone(),
        },
        ChargeOutcome::Declined { reason } => PaymentCommand::RecordFailure {
            reason: reason.clone(),
        },
    };
    match execute::<Payment>(
        store,
        &answer.order_id.to_string(),
        command,
        &(),
        &metadata,
        &CommandOptions::caused_by(answer.cause),
    )
    .await
    {
        Ok(executed) if executed.duplicate || executed.events.is_empty() => {
            Ok(Recorded::AlreadyKnown)
        }
        Ok(_) => Ok(Recorded::New),
        Err(CommandError::Domain(PaymentError::NotRequested)) => {
            Ok(Recorded::Refused("no payment of this order was requested"))
        }
        Err(CommandError::Domain(_)) => Ok(Recorded::Refused(
            "the payment already ended with another outcome",
        )),
        Err(error) => Err(command_error("gateway answer", error)),
    }
}

/// A payment stream folded, with what the aggregate does not keep.
#[derive(Debug, Default)]
struct PaymentView {
    state: Payment,
    requested_at: Option<DateTime<Utc>>,
    failure: Option<String>,
}

/// A refused command is a fact that retrying does not change; a store failure may pass.
fn command_error<E: std::error::Error>(what: &str, error: CommandError<E>) -> SagaError {
    match error {
        CommandError::Domain(refusal) => SagaError::Refused(format!("{what}: {refusal}")),
        other => SagaError::Transient(format!("{what}: {other}")),
    }
}

/// The client span of a call to the payment gateway, when spans are exported.
fn gateway_span(name: &'static str) -> tracing::Span {
    if !telemetry::traced() {
        return tracing::Span::none();
    }
    tracing::info_span!("payment gateway", otel.name = name, otel.kind = "client")
}
