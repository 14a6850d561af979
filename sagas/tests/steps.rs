//! The saga's steps against a real store (SQLite in a temporary directory): repeated and
//! concurrent runs store each event once, a step that keeps failing parks the saga, and a
//! payment deadline survives a stopped worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use domain::order::OrderLine;
use domain::{CustomerId, Money, Order, OrderCommand, OrderStatus, Product, ProductCommand};
use eventstore::aggregate::{CommandOptions, execute, load};
use eventstore::testing::{TestStore, sqlite_store};
use eventstore::{EventMetadata, EventStore};
use identity::{PaymentVault, SecretStore, identity_db_url};
use projections::Progress;
use projections::readdb::{ReadDb, read_db_url};
use sagas::gateway::{ChargeOutcome, ChargeRequest, PaymentGateway, RefundRequest};
use sagas::state::{SagaRun, saga_status};
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
                payment_ref: payment_ref.clone(),
                cart_id: None,
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
