//! The saga's steps against a real store (SQLite in a temporary directory): repeated and
//! concurrent runs store each event once, a step that keeps failing parks the saga, a
//! payment deadline survives a stopped worker, and late or repeated product commands and runs
//! after a crash change no stock twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::Aggregate;
use domain::order::OrderLine;
use domain::product::ProductError;
use domain::{
    CancelReason, CustomerId, Money, Order, OrderCommand, OrderStatus, Product, ProductCommand,
};
use eventstore::aggregate::{CommandError, CommandOptions, Executed, execute, load};
use eventstore::testing::{TestStore, sqlite_store};
use eventstore::{EventMetadata, EventStore};
use identity::{PaymentVault, SecretStore, identity_db_url};
use projections::Progress;
use projections::readdb::{ReadDb, read_db_url};
use sagas::gateway::{ChargeOutcome, ChargeRequest, PaymentGateway, RefundRequest};
use sagas::state::{SagaRun, saga_status};
use sagas::steps::SagaStep;
use sagas::{Checkout, Ending, SagaError, SagaOptions, Step, TestGateway, TestGatewayOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn metadata() -> EventMetadata {
    EventMetadata {
        correlation_id: "test".to_owned(),
        causation_id: "test".to_owned(),
        saga_id: None,
        actor: "test".to_owned(),
        source: "test".to_owned(),
        traceparent: None,
        tracestate: None,
    }
}

struct Shop {
    test: TestStore,
    db: ReadDb,
    vault: PaymentVault,
    product_id: Uuid,
}

impl Shop {
    async fn open(stock: i64) -> Shop {
        let test = sqlite_store().await;
        let db = ReadDb::open(&read_db_url(&test.url))
            .await
            .expect("read db");
        let vault = PaymentVault::new(
            SecretStore::open(&identity_db_url(&test.url))
                .await
                .expect("secret store"),
        );
        let product_id = Uuid::new_v4();
        execute::<Product>(
            test.store.as_ref(),
            &product_id.to_string(),
            ProductCommand::CreateProduct {
                product_id,
                name: "Kettle".to_owned(),
                description: "Steel".to_owned(),
                price: Money::from_minor(2_500),
                stock_qty: stock,
                category: None,
            },
            &(),
            &metadata(),
            &CommandOptions::default(),
        )
        .await
        .expect("create the product");
        Shop {
            test,
            db,
            vault,
            product_id,
        }
    }

    fn store(&self) -> &Arc<dyn EventStore> {
        &self.test.store
    }

    /// Places an order (its token in the vault, as checkout keeps it) and answers the saga run
    /// the intake would make of it.
    async fn order(&self, quantity: u32, token: &str) -> SagaRun {
        let order_id = Uuid::new_v4();
        let payment_ref = self.vault.keep(order_id, token).await.expect("vault");
        execute::<Order>(
            self.store().as_ref(),
            &order_id.to_string(),
            OrderCommand::CreateOrder {
                order_id,
                customer_id: CustomerId::parse("ada").expect("customer id"),
                lines: vec![OrderLine {
                    product_id: self.product_id,
                    quantity,
                    unit_price: Money::from_minor(2_500),
                }],
                payment_ref: Some(payment_ref.clone()),
                cart_id: None,
                shipping_address: None,
                billing_address: None,
                payment_method: domain::PaymentMethod::Card,
            },
            &(),
            &metadata(),
            &CommandOptions::default(),
        )
        .await
        .expect("create the order");
        let created = self
            .store()
            .read_stream("order", &order_id.to_string(), 0, 1)
            .await
            .expect("read the order");
        SagaRun {
            order_id,
            order_event_id: created[0].event_id,
            correlation_id: "test".to_owned(),
            payment_ref,
            attempts: 0,
            started_at: 0,
            outcome: None,
            wakes: 0,
            trace_context: None,
        }
    }

    async fn stream_len(&self, stream_type: &str, stream_id: Uuid) -> usize {
        self.store()
            .read_stream(stream_type, &stream_id.to_string(), 0, 1_000)
            .await
            .expect("read")
            .len()
    }

    async fn order_status(&self, order_id: Uuid) -> OrderStatus {
        load::<Order>(self.store().as_ref(), &order_id.to_string())
            .await
            .expect("load")
            .state
            .status
    }
}

/// Runs the saga's steps as a worker does, the charge included, until one leaves no charge.
async fn drive_to_end(checkout: &Checkout, run: &SagaRun) -> Step {
    loop {
        match checkout.drive(run).await.expect("step") {
            Step::Charge(charge) => {
                checkout.charge(run, &charge).await.expect("charge");
            }
            step => return step,
        }
    }
}

#[tokio::test]
async fn a_saga_run_again_or_twice_at_once_stores_every_event_once_and_charges_once() {
    let shop = Shop::open(5).await;
    let gateway = TestGateway::open(shop.db.clone(), TestGatewayOptions::default())
        .await
        .expect("gateway");
    let checkout = Arc::new(Checkout::new(
        shop.store().clone(),
        Arc::new(gateway.clone()),
        shop.vault.clone(),
        Duration::from_secs(5),
    ));
    let run = shop.order(2, "tok_visa").await;
    let (first, second) =
        tokio::join!(drive_to_end(&checkout, &run), drive_to_end(&checkout, &run));
    assert_eq!(first, Step::Finished(Ending::Confirmed));
    assert_eq!(second, Step::Finished(Ending::Confirmed));
    // Redelivered after the end: nothing new.
    assert_eq!(
        checkout.drive(&run).await.expect("third run"),
        Step::Finished(Ending::Confirmed)
    );
    assert_eq!(shop.stream_len("order", run.order_id).await, 2);
    assert_eq!(shop.stream_len("payment", run.order_id).await, 2);
    // Created, reserved, committed: each with its ProductUpdated.
    assert_eq!(shop.stream_len("product", shop.product_id).await, 6);
    let ledger = gateway.ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].outcome, "charged");
    let requests_after_two_runs = ledger[0].charge_requests;
    assert!(requests_after_two_runs <= 2, "{:?}", ledger[0]);
    checkout.drive(&run).await.expect("fourth run");
    assert_eq!(
        gateway.ledger().await.expect("ledger")[0].charge_requests,
        requests_after_two_runs,
        "a saga whose payment is recorded never asks the gateway again"
    );
    let stock = load::<Product>(shop.store().as_ref(), &shop.product_id.to_string())
        .await
        .expect("load")
        .state
        .stock_qty;
    assert_eq!(stock, 3);
}

/// A gateway that is down: every charge fails.
#[derive(Debug, Default)]
struct DownGateway {
    charges: AtomicU32,
}

#[async_trait]
impl PaymentGateway for DownGateway {
    async fn charge(&self, _request: &ChargeRequest) -> Result<ChargeOutcome, SagaError> {
        self.charges.fetch_add(1, Ordering::SeqCst);
        Err(SagaError::Gateway("connection refused".to_owned()))
    }

    async fn refund(&self, _request: &RefundRequest) -> Result<String, SagaError> {
        Err(SagaError::Gateway("connection refused".to_owned()))
    }
}

fn fast_options() -> SagaOptions {
    SagaOptions {
        max_attempts: 4,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        lease_ttl: Duration::from_millis(600),
        ..SagaOptions::default()
    }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} did not happen within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_step_that_keeps_failing_is_retried_then_parked_with_its_reason() {
    let shop = Shop::open(5).await;
    let gateway = Arc::new(DownGateway::default());
    let run = shop.order(1, "tok_visa").await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(sagas::run_saga(
        shop.store().clone(),
        shop.db.clone(),
        gateway.clone(),
        shop.vault.clone(),
        fast_options(),
        Progress::default(),
        shutdown.clone(),
    ));
    wait_for("parking", || async {
        saga_status(&shop.db, run.order_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|saga| saga.state == "failed")
    })
    .await;
    let saga = saga_status(&shop.db, run.order_id)
        .await
        .expect("status")
        .expect("saga");
    assert_eq!(saga.attempts, 4);
    assert!(
        saga.last_error
            .as_deref()
            .is_some_and(|error| error.contains("connection refused")),
        "{saga:?}"
    );
    assert_eq!(
        gateway.charges.load(Ordering::SeqCst),
        4,
        "one charge per attempt"
    );
    assert_eq!(shop.order_status(run.order_id).await, OrderStatus::Pending);
    // Parked means parked: no further attempt.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gateway.charges.load(Ordering::SeqCst), 4);
    // An operator restarts it: it runs again (and fails again, the gateway is still down).
    assert_eq!(
        sagas::state::retry_failed(&shop.db, Some(run.order_id))
            .await
            .expect("retry"),
        1
    );
    wait_for("another attempt", || async {
        gateway.charges.load(Ordering::SeqCst) > 4
    })
    .await;
    shutdown.cancel();
    worker.await.expect("worker").expect("worker result");
}

#[tokio::test]
async fn a_payment_deadline_survives_a_stopped_worker() {
    let shop = Shop::open(5).await;
    let gateway = TestGateway::open(shop.db.clone(), TestGatewayOptions::default())
        .await
        .expect("gateway");
    let options = SagaOptions {
        payment_timeout: Duration::from_millis(800),
        ..fast_options()
    };
    let run = shop.order(2, "tok_timeout").await;
    let start = |shutdown: CancellationToken| {
        tokio::spawn(sagas::run_saga(
            shop.store().clone(),
            shop.db.clone(),
            Arc::new(gateway.clone()),
            shop.vault.clone(),
            options.clone(),
            Progress::default(),
            shutdown,
        ))
    };
    let shutdown = CancellationToken::new();
    let worker = start(shutdown.clone());
    wait_for("the payment request", || async {
        shop.stream_len("payment", run.order_id).await == 1
    })
    .await;
    // The worker dies (as in a crash) while the gateway has not answered; nothing runs until
    // after the deadline, when a new worker must find the timer in the saga's row.
    worker.abort();
    let _ = worker.await;
    assert_eq!(shop.order_status(run.order_id).await, OrderStatus::Pending);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let shutdown = CancellationToken::new();
    let worker = start(shutdown.clone());
    wait_for("the timeout", || async {
        shop.order_status(run.order_id).await == OrderStatus::Cancelled
    })
    .await;
    let order = load::<Order>(shop.store().as_ref(), &run.order_id.to_string())
        .await
        .expect("load")
        .state;
    assert_eq!(
        order.cancel_reason,
        Some(domain::CancelReason::PaymentTimeout)
    );
    // The cancellation is stored first, the release right after it.
    let stock = || async {
        load::<Product>(shop.store().as_ref(), &shop.product_id.to_string())
            .await
            .expect("load")
            .state
            .stock_qty
    };
    wait_for("the release", || async { stock().await == 5 }).await;
    assert_eq!(stock().await, 5, "the reservation was released");
    shutdown.cancel();
    worker.await.expect("worker").expect("worker result");
}

#[tokio::test]
async fn charges_that_wait_for_the_gateway_hold_no_saga_place() {
    let shop = Shop::open(10).await;
    let gateway = TestGateway::open(shop.db.clone(), TestGatewayOptions::default())
        .await
        .expect("gateway");
    // Two places, and four orders whose gateway never answers within the 20 s deadline.
    let options = SagaOptions {
        concurrency: 2,
        payment_timeout: Duration::from_secs(20),
        ..fast_options()
    };
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(shop.order(1, "tok_timeout").await);
    }
    let honest = shop.order(1, "tok_visa").await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(sagas::run_saga(
        shop.store().clone(),
        shop.db.clone(),
        Arc::new(gateway.clone()),
        shop.vault.clone(),
        options,
        Progress::default(),
        shutdown.clone(),
    ));
    let started = std::time::Instant::now();
    wait_for("the honest order's confirmation", || async {
        shop.order_status(honest.order_id).await == OrderStatus::Confirmed
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the honest order waited {:?} behind charges that never answer",
        started.elapsed()
    );
    for run in &stalled {
        assert_eq!(shop.order_status(run.order_id).await, OrderStatus::Pending);
        assert_eq!(
            shop.stream_len("payment", run.order_id).await,
            1,
            "the stalled order's payment was requested"
        );
    }
    shutdown.cancel();
    worker.await.expect("worker").expect("worker result");
}

/// Runs `command` on the aggregate `A` in `stream_id` as the saga's `step` of `run` issues it:
/// with the saga's metadata and the step's derived ids, without the lookup first.
async fn as_the_saga<A>(
    shop: &Shop,
    run: &SagaRun,
    step: SagaStep,
    stream_id: Uuid,
    command: A::Command,
) -> Result<Executed<A>, CommandError<A::Error>>
where
    A: Aggregate<Services = ()>,
    A::Command: Clone,
{
    execute::<A>(
        shop.store().as_ref(),
        &stream_id.to_string(),
        command,
        &(),
        &sagas::steps::metadata(run.order_event_id, &run.correlation_id),
        &CommandOptions {
            look_up_cause_first: false,
            ..CommandOptions::caused_by(step.cause(run.order_event_id))
        },
    )
    .await
}

impl Shop {
    async fn stock(&self) -> u32 {
        load::<Product>(self.store().as_ref(), &self.product_id.to_string())
            .await
            .expect("load")
            .state
            .stock_qty
    }

    /// The saga's reserve of `run`'s only line.
    async fn reserve(&self, run: &SagaRun, quantity: u32) -> Executed<Product> {
        as_the_saga::<Product>(
            self,
            run,
            SagaStep::Reserve(0),
            self.product_id,
            ProductCommand::ReserveStock {
                order_id: run.order_id,
                quantity,
            },
        )
        .await
        .expect("reserve")
    }
}

fn checkout_of(shop: &Shop, gateway: Arc<TestGateway>) -> Checkout {
    Checkout::new(
        shop.store().clone(),
        Arc::new(gateway),
        shop.vault.clone(),
        Duration::from_secs(5),
    )
}

// The product keeps no closed reservations: what they guarded is kept by the saga's derived
// event ids and by the order's status, which the saga stores before it closes a reservation.

#[tokio::test]
async fn a_reserve_redelivered_after_the_release_takes_no_stock_and_the_saga_reads_the_order_again()
{
    let shop = Shop::open(5).await;
    let gateway = TestGateway::open(shop.db.clone(), TestGatewayOptions::default())
        .await
        .expect("gateway");
    let checkout = checkout_of(&shop, gateway);
    let declined = shop.order(2, "tok_chargeDeclined").await;
    assert_eq!(
        drive_to_end(&checkout, &declined).await,
        Step::Finished(Ending::Cancelled(CancelReason::PaymentDeclined))
    );
    assert_eq!(shop.stock().await, 5);
    let product_events = shop.stream_len("product", shop.product_id).await;
    // The saga's reserve, redelivered after the release: the store knows its ids.
    let late = shop.reserve(&declined, 2).await;
    assert!(late.duplicate);
    assert!(!late.state.reservations.contains_key(&declined.order_id));
    assert_eq!(shop.stock().await, 5);
    assert_eq!(
        checkout
            .drive(&declined)
            .await
            .expect("a run after the end"),
        Step::Finished(Ending::Cancelled(CancelReason::PaymentDeclined))
    );

    // A run that read the order while it was pending, and reserves after another run of the
    // same saga reserved, cancelled the order and released: it takes nothing and retries.
    let stale = shop.order(2, "tok_visa").await;
    shop.reserve(&stale, 2).await;
    as_the_saga::<Product>(
        &shop,
        &stale,
        SagaStep::Release(0),
        shop.product_id,
        ProductCommand::ReleaseStock {
            order_id: stale.order_id,
        },
    )
    .await
    .expect("release");
    let product_events_before = shop.stream_len("product", shop.product_id).await;
    assert_eq!(product_events_before, product_events + 4);
    let step = checkout
        .drive(&stale)
        .await
        .expect_err("a closed reservation");
    assert!(step.is_retryable(), "{step:?}");
    assert!(step.to_string().contains("closed by another run"), "{step}");
    // The same once every unit is sold to someone else: the reserve is refused as out of
    // stock, and answered from its stored events, so the order is not cancelled as out of
    // stock either.
    let buyer = shop.order(5, "tok_visa").await;
    assert_eq!(
        drive_to_end(&checkout, &buyer).await,
        Step::Finished(Ending::Confirmed)
    );
    assert_eq!(shop.stock().await, 0);
    let product_events_before = shop.stream_len("product", shop.product_id).await;
    let step = checkout
        .drive(&stale)
        .await
        .expect_err("a closed reservation");
    assert!(step.is_retryable(), "{step:?}");
    assert_eq!(
        shop.order_status(stale.order_id).await,
        OrderStatus::Pending
    );
    assert_eq!(
        shop.stream_len("product", shop.product_id).await,
        product_events_before
    );
    // The other run's cancellation (stored before its release) is what the retry reads.
    as_the_saga::<Order>(
        &shop,
        &stale,
        SagaStep::Cancel,
        stale.order_id,
        OrderCommand::CancelOrder {
            reason: CancelReason::PaymentDeclined,
            detail: "declined".to_owned(),
        },
    )
    .await
    .expect("cancel");
    assert_eq!(
        checkout.drive(&stale).await.expect("the retry"),
        Step::Finished(Ending::Cancelled(CancelReason::PaymentDeclined))
    );
    assert_eq!(shop.stock().await, 0);
    assert_eq!(
        shop.stream_len("product", shop.product_id).await,
        product_events_before
    );
}

#[tokio::test]
async fn a_commit_or_a_release_repeated_changes_nothing() {
    let shop = Shop::open(5).await;
    let gateway = TestGateway::open(shop.db.clone(), TestGatewayOptions::default())
        .await
        .expect("gateway");
    let checkout = checkout_of(&shop, gateway);
    let sold = shop.order(2, "tok_visa").await;
    assert_eq!(
        drive_to_end(&checkout, &sold).await,
        Step::Finished(Ending::Confirmed)
    );
    let declined = shop.order(1, "tok_chargeDeclined").await;
    assert_eq!(
        drive_to_end(&checkout, &declined).await,
        Step::Finished(Ending::Cancelled(CancelReason::PaymentDeclined))
    );
    assert_eq!(shop.stock().await, 3);
    let product_events = shop.stream_len("product", shop.product_id).await;
    // Created, then a reserve and a commit, a reserve and a release: each with its
    // ProductUpdated.
    assert_eq!(product_events, 10);
    let commit = |run: SagaRun| {
        let shop = &shop;
        async move {
            as_the_saga::<Product>(
                shop,
                &run,
                SagaStep::Commit(0),
                shop.product_id,
                ProductCommand::CommitStock {
                    order_id: run.order_id,
                },
            )
            .await
        }
    };
    // The product has nothing open to commit; the store answers the first commit.
    let again = commit(sold.clone()).await.expect("a repeated commit");
    assert!(again.duplicate);
    assert_eq!(again.events.len(), 2);
    // A released reservation is never committed.
    let refused = commit(declined.clone())
        .await
        .expect_err("nothing to commit");
    assert!(
        matches!(
            refused,
            CommandError::Domain(ProductError::NoReservation { .. })
        ),
        "{refused:?}"
    );
    let released_again = as_the_saga::<Product>(
        &shop,
        &declined,
        SagaStep::Release(0),
        shop.product_id,
        ProductCommand::ReleaseStock {
            order_id: declined.order_id,
        },
    )
    .await
    .expect("a repeated release");
    assert!(released_again.events.is_empty());
    // Both sagas run again, as after a redelivery.
    assert_eq!(
        checkout.drive(&sold).await.expect("again"),
        Step::Finished(Ending::Confirmed)
    );
    assert_eq!(
        checkout.drive(&declined).await.expect("again"),
        Step::Finished(Ending::Cancelled(CancelReason::PaymentDeclined))
    );
    assert_eq!(shop.stock().await, 3);
    assert_eq!(
        shop.stream_len("product", shop.product_id).await,
        product_events
    );
}

#[tokio::test]
async fn a_saga_run_after_a_crash_between_its_steps_ends_as_one_run_would() {
    let shop = Shop::open(10).await;
    let gateway = TestGateway::open(shop.db.clone(), TestGatewayOptions::default())
        .await
        .expect("gateway");
    let checkout = checkout_of(&shop, gateway);
    // Crashed after its reserve.
    let reserved = shop.order(2, "tok_visa").await;
    shop.reserve(&reserved, 2).await;
    // Crashed after confirming the order, before the commit.
    let confirmed = shop.order(3, "tok_visa").await;
    shop.reserve(&confirmed, 3).await;
    as_the_saga::<Order>(
        &shop,
        &confirmed,
        SagaStep::Confirm,
        confirmed.order_id,
        OrderCommand::ConfirmOrder,
    )
    .await
    .expect("confirm");
    // Crashed after cancelling the order, before the release.
    let cancelled = shop.order(4, "tok_visa").await;
    shop.reserve(&cancelled, 4).await;
    as_the_saga::<Order>(
        &shop,
        &cancelled,
        SagaStep::Cancel,
        cancelled.order_id,
        OrderCommand::CancelOrder {
            reason: CancelReason::PaymentTimeout,
            detail: "no answer".to_owned(),
        },
    )
    .await
    .expect("cancel");
    assert_eq!(shop.stock().await, 1);
    for (run, ending) in [
        (&reserved, Ending::Confirmed),
        (&confirmed, Ending::Confirmed),
        (&cancelled, Ending::Cancelled(CancelReason::PaymentTimeout)),
    ] {
        assert_eq!(drive_to_end(&checkout, run).await, Step::Finished(ending));
        // And once more, as a redelivery after the end.
        assert_eq!(
            checkout.drive(run).await.expect("again"),
            Step::Finished(ending)
        );
    }
    // 2 and 3 sold, 4 back on sale.
    assert_eq!(shop.stock().await, 5);
    let product = load::<Product>(shop.store().as_ref(), &shop.product_id.to_string())
        .await
        .expect("load");
    assert!(product.state.reservations.is_empty());
    // Created, three reserves, two commits and a release: each with its ProductUpdated.
    assert_eq!(product.version, 14);
}

#[tokio::test]
async fn an_order_refused_at_a_line_releases_the_lines_before_it_and_leaves_the_others_alone() {
    let shop = Shop::open(5).await;
    let gateway = TestGateway::open(shop.db.clone(), TestGatewayOptions::default())
        .await
        .expect("gateway");
    let checkout = checkout_of(&shop, gateway);
    let (sold_out, after) = (Uuid::new_v4(), Uuid::new_v4());
    for product_id in [sold_out, after] {
        execute::<Product>(
            shop.store().as_ref(),
            &product_id.to_string(),
            ProductCommand::CreateProduct {
                product_id,
                name: "Teapot".to_owned(),
                description: "Cast iron".to_owned(),
                price: Money::from_minor(4_500),
                stock_qty: if product_id == sold_out { 0 } else { 3 },
                category: None,
            },
            &(),
            &metadata(),
            &CommandOptions::default(),
        )
        .await
        .expect("create the product");
    }
    let mut run = shop.order(2, "tok_visa").await;
    // The same run, for an order of three lines: the shop's product, the sold-out one, another.
    let order_id = Uuid::new_v4();
    let line = |product_id: Uuid| OrderLine {
        product_id,
        quantity: 1,
        unit_price: Money::from_minor(2_500),
    };
    execute::<Order>(
        shop.store().as_ref(),
        &order_id.to_string(),
        OrderCommand::CreateOrder {
            order_id,
            customer_id: CustomerId::parse("ada").expect("customer id"),
            lines: vec![line(shop.product_id), line(sold_out), line(after)],
            payment_ref: Some(run.payment_ref.clone()),
            cart_id: None,
            shipping_address: None,
            billing_address: None,
            payment_method: domain::PaymentMethod::Card,
        },
        &(),
        &metadata(),
        &CommandOptions::default(),
    )
    .await
    .expect("create the order");
    run.order_id = order_id;
    run.order_event_id = shop
        .store()
        .read_stream("order", &order_id.to_string(), 0, 1)
        .await
        .expect("read the order")[0]
        .event_id;
    assert_eq!(
        drive_to_end(&checkout, &run).await,
        Step::Finished(Ending::Cancelled(CancelReason::OutOfStock))
    );
    assert_eq!(shop.stock().await, 5, "the first line was released");
    // Created, reserved, released.
    assert_eq!(shop.stream_len("product", shop.product_id).await, 6);
    for product_id in [sold_out, after] {
        assert_eq!(shop.stream_len("product", product_id).await, 2);
    }
    // A run after the end releases every line: nothing is held, nothing changes.
    assert_eq!(
        checkout.drive(&run).await.expect("again"),
        Step::Finished(Ending::Cancelled(CancelReason::OutOfStock))
    );
    assert_eq!(shop.stock().await, 5);
}
