//! The checkout saga end to end: every way an order can end, overselling and a parked saga with
//! the server in this process; crashes with SIGKILL and two saga workers (one killed) as processes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use cqrs_es::Aggregate;
use eventstore::aggregate::load;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Api, Server, ServerData, Setup, TestApp, eventually, mercato, place_order};

/// PostgreSQL allows 100 connections and every server holds pools of its own: the tests of
/// this file that run servers on PostgreSQL take turns.
static POSTGRES_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the PostgreSQL turn when `setup` needs it.
async fn turn(setup: Setup) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    match setup {
        Setup::PostgresRedis => Some(POSTGRES_TURN.lock().await),
        Setup::Embedded => None,
    }
}

/// A short payment timeout, so that timed-out orders end within the test.
const FAST_PAYMENTS: &[&str] = &["--payment-timeout", "1", "--test-gateway-late-after", "1.5"];

/// The order once it is no longer `PENDING` (and, when asked, once its payment reached
/// `payment_status`).
async fn ended_order(server: &Api, order_id: &str, payment_status: Option<&str>) -> Value {
    let found = eventually(Duration::from_secs(30), || async {
        let response = server.get(&format!("/orders/{order_id}")).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        let order: Value = response.json().await.ok()?;
        let ended = order["status"] != "PENDING";
        let paid = payment_status.is_none_or(|status| order["payment_status"] == status);
        (ended && paid).then_some(order)
    })
    .await;
    match found {
        Some((order, _)) => order,
        None => {
            let last: Value = server
                .get(&format!("/orders/{order_id}"))
                .await
                .json()
                .await
                .unwrap_or(Value::Null);
            panic!("order {order_id} did not end within 30 s: {last}")
        }
    }
}

/// What the test reads behind the server's back: its event store and its ledger, each opened
/// once (every open is a pool of connections).
struct Probe {
    store: std::sync::Arc<dyn eventstore::EventStore>,
    db: projections::readdb::ReadDb,
}

impl Probe {
    async fn open(data: &ServerData) -> Probe {
        Probe {
            store: data.store().await,
            db: data.read_db().await,
        }
    }

    /// Units that can still be sold, from the product's own stream (not a read model).
    async fn stock_of(&self, product_id: &str) -> u32 {
        load::<domain::Product>(self.store.as_ref(), product_id)
            .await
            .expect("load the product")
            .state
            .stock_qty
    }

    async fn ledger_by_order(&self) -> HashMap<String, sagas::gateway::LedgerEntry> {
        sagas::gateway::ledger(&self.db)
            .await
            .expect("read the ledger")
            .into_iter()
            .map(|entry| (entry.order_id.to_string(), entry))
            .collect()
    }
}

async fn stream_events(server: &Api, stream_type: &str, stream_id: &str) -> Vec<Value> {
    let body: Value = server
        .get(&format!("/streams/{stream_type}/{stream_id}/events"))
        .await
        .json()
        .await
        .expect("json");
    body["events"].as_array().cloned().unwrap_or_default()
}

async fn every_way_an_order_ends(setup: Setup, test_name: &str) {
    let _turn = turn(setup).await;
    let Some(data) = ServerData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start_with(&data, "all", FAST_PAYMENTS).await;
    let (kettle, _) = server
        .create_product("Kettle", "Steel kettle", 30.0, 10, "kitchen")
        .await;
    let (mug, _) = server
        .create_product("Mug", "Stoneware mug", 8.0, 5, "kitchen")
        .await;
    let (teapot, _) = server
        .create_product("Teapot", "Cast iron teapot", 45.0, 3, "kitchen")
        .await;

    let approved = place_order(&server, "ada", &[(&kettle, 2)], "tok_visa").await;
    let declined = place_order(&server, "ada", &[(&kettle, 1)], "tok_chargeDeclined").await;
    let timed_out = place_order(&server, "ada", &[(&kettle, 1)], "tok_timeout").await;
    let late = place_order(
        &server,
        "ada",
        &[(&kettle, 1), (&mug, 2)],
        "tok_lateSuccess",
    )
    .await;
    let out_of_stock = place_order(&server, "ada", &[(&mug, 1), (&teapot, 4)], "tok_visa").await;

    let order = ended_order(&server, &approved, None).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["payment_status"], "SUCCEEDED", "{order}");
    assert!(order.get("cancel_reason").is_none(), "{order}");

    let order = ended_order(&server, &declined, None).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancel_reason"], "payment_declined", "{order}");
    assert_eq!(order["payment_status"], "FAILED", "{order}");

    let order = ended_order(&server, &timed_out, None).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancel_reason"], "payment_timeout", "{order}");
    assert_eq!(order["payment_status"], "TIMED_OUT", "{order}");

    // The gateway charges after the timeout: the charge is recorded, then refunded.
    let order = ended_order(&server, &late, Some("REFUNDED")).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancel_reason"], "payment_timeout", "{order}");

    let order = ended_order(&server, &out_of_stock, None).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancel_reason"], "out_of_stock", "{order}");
    assert_eq!(order["payment_status"], "NOT_REQUESTED", "{order}");
    let events = stream_events(&server, "order", &out_of_stock).await;
    let cancelled = events
        .iter()
        .find(|event| event["event_type"] == "OrderCancelled")
        .expect("OrderCancelled");
    let detail = cancelled["payload"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&teapot),
        "the detail names the product: {detail}"
    );

    // Stock: only the confirmed order keeps its units; every other reservation came back.
    let probe = Probe::open(&data).await;
    assert_eq!(probe.stock_of(&kettle).await, 8);
    assert_eq!(probe.stock_of(&mug).await, 5);
    assert_eq!(probe.stock_of(&teapot).await, 3);

    // Popularity: only the confirmed order's units count, 10 points each; the declined, the
    // timed-out, the late and the out-of-stock orders add nothing, in the products read model,
    // popularity (SQL, or Redis) and the search index alike.
    // (The saga confirms the order, then commits its stock.)
    let committed = eventually(Duration::from_secs(30), || async {
        stream_events(&server, "product", &kettle)
            .await
            .iter()
            .any(|event| event["event_type"] == "StockCommitted")
            .then_some(())
    })
    .await;
    assert!(
        committed.is_some(),
        "the confirmed order's stock is committed"
    );
    let mut head = 0;
    for product in [&kettle, &mug, &teapot] {
        for event in stream_events(&server, "product", product).await {
            head = head.max(event["position"].as_u64().expect("position"));
        }
    }
    for (product, expected) in [(&kettle, 20), (&mug, 0), (&teapot, 0)] {
        let read: Value = server
            .get_at(&format!("/products/{product}"), head)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(read["popularity"], expected, "{read}");
    }
    let popular: Value = server
        .get_at("/recommendations?limit=10", head)
        .await
        .json()
        .await
        .expect("json");
    let scores: BTreeMap<String, i64> = popular["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            let id = item["product_id"].as_str().expect("product_id").to_owned();
            (id, item["score"].as_i64().expect("score"))
        })
        .collect();
    assert_eq!(
        scores,
        BTreeMap::from([(kettle.clone(), 20), (mug.clone(), 0), (teapot.clone(), 0)]),
        "{popular}"
    );
    let found: Value = server
        .get_at("/search?q=kettle", head)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(found["hits"][0]["product_id"], kettle.as_str(), "{found}");
    assert_eq!(found["hits"][0]["popularity"], 20, "{found}");

    // The gateway's ledger: one charge for the approved order, a refunded one for the late
    // charge, nothing charged otherwise; each order asked once.
    let ledger = probe.ledger_by_order().await;
    let entry = &ledger[&approved];
    assert_eq!(
        (entry.outcome.as_str(), entry.refund_id.is_none()),
        ("charged", true),
        "{entry:?}"
    );
    assert_eq!(entry.amount_minor, 6_000);
    assert_eq!(ledger[&declined].outcome, "declined");
    assert_eq!(ledger[&timed_out].outcome, "pending");
    let entry = &ledger[&late];
    assert_eq!(entry.outcome, "charged", "{entry:?}");
    assert!(
        entry.refund_id.is_some(),
        "the late charge is refunded: {entry:?}"
    );
    assert!(
        !ledger.contains_key(&out_of_stock),
        "an out-of-stock order is never charged"
    );
    for entry in ledger.values() {
        assert_eq!(entry.charge_requests, 1, "{entry:?}");
    }

    // Every event the saga caused says so.
    for stream in ["order", "payment"] {
        for event in stream_events(&server, stream, &approved).await {
            if event["event_type"] == "OrderCreated" {
                continue;
            }
            let metadata = &event["metadata"];
            assert_eq!(metadata["source"], "saga", "{event}");
            assert!(
                metadata["saga_id"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty()),
                "{event}"
            );
            assert!(
                metadata["causation_id"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty()),
                "{event}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_an_order_ends_embedded() {
    every_way_an_order_ends(Setup::Embedded, "saga_flows_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_an_order_ends_on_postgres() {
    every_way_an_order_ends(Setup::PostgresRedis, "saga_flows_pg").await;
}

async fn no_overselling(setup: Setup, test_name: &str) {
    let _turn = turn(setup).await;
    let Some(data) = ServerData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start_with(&data, "all", FAST_PAYMENTS).await;
    let (product, _) = server
        .create_product("Last units", "Ten left", 12.0, 10, "sale")
        .await;
    let mut clients = Vec::new();
    for customer in 0..100 {
        let (api, product) = (Api::clone(&server), product.clone());
        clients.push(tokio::spawn(async move {
            let response = api
                .post(
                    "/orders",
                    json!({
                        "customer_id": format!("buyer-{customer}"),
                        "lines": [{ "product_id": product, "quantity": 1 }],
                        "payment_token": "tok_visa",
                    }),
                )
                .await;
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            let body: Value = response.json().await.expect("json");
            body["order_id"].as_str().expect("order_id").to_owned()
        }));
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for client in clients {
        let order_id = client.await.expect("client");
        let order = ended_order(&server, &order_id, None).await;
        let outcome = format!(
            "{} {}",
            order["status"].as_str().unwrap_or_default(),
            order["cancel_reason"].as_str().unwrap_or_default()
        );
        *outcomes.entry(outcome.trim().to_owned()).or_default() += 1;
    }
    assert_eq!(
        outcomes,
        BTreeMap::from([
            ("CANCELLED out_of_stock".to_owned(), 90),
            ("CONFIRMED".to_owned(), 10)
        ])
    );
    assert_eq!(Probe::open(&data).await.stock_of(&product).await, 0);
    // The stock the product reported after every change never went below zero or above ten.
    for event in stream_events(&server, "product", &product).await {
        if event["event_type"] == "ProductUpdated" {
            let stock = event["payload"]["stock_qty"].as_i64().expect("stock_qty");
            assert!((0..=10).contains(&stock), "{event}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_checkouts_for_ten_units_confirm_exactly_ten_embedded() {
    no_overselling(Setup::Embedded, "saga_oversell_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_checkouts_for_ten_units_confirm_exactly_ten_on_postgres() {
    no_overselling(Setup::PostgresRedis, "saga_oversell_pg").await;
}

/// Every order in the store, with its lines, from the orders' own streams.
async fn stored_orders(probe: &Probe) -> Vec<(String, domain::Order)> {
    let store = &probe.store;
    let mut orders = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 1_000).await.expect("read the log");
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in &page {
            if event.stream_type == domain::Order::TYPE && event.event_type == "OrderCreated" {
                let order = load::<domain::Order>(store.as_ref(), &event.stream_id)
                    .await
                    .expect("load the order")
                    .state;
                orders.push((event.stream_id.clone(), order));
            }
        }
    }
    orders
}

/// The invariants of a checkout history: every order ended; stock adds up; an order is charged
/// at most once, a confirmed one exactly once, and a cancelled one never kept charged.
async fn assert_checkouts_add_up(probe: &Probe, initial_stock: &HashMap<String, u32>) {
    let orders = stored_orders(probe).await;
    let ledger = probe.ledger_by_order().await;
    let mut sold: HashMap<String, u32> = HashMap::new();
    for (order_id, order) in &orders {
        match order.status {
            domain::OrderStatus::Confirmed => {
                for line in &order.lines {
                    *sold.entry(line.product_id.to_string()).or_default() += line.quantity;
                }
                let entry = ledger.get(order_id).unwrap_or_else(|| {
                    panic!("confirmed order {order_id} has no charge in the ledger")
                });
                assert_eq!(entry.outcome, "charged", "{entry:?}");
                assert!(
                    entry.refund_id.is_none(),
                    "a confirmed order was refunded: {entry:?}"
                );
                assert_eq!(entry.amount_minor, order.total.minor(), "{entry:?}");
            }
            domain::OrderStatus::Cancelled => {
                if let Some(entry) = ledger.get(order_id) {
                    assert!(
                        entry.outcome != "charged" || entry.refund_id.is_some(),
                        "cancelled order {order_id} is still charged: {entry:?}"
                    );
                }
            }
            domain::OrderStatus::Pending => panic!("order {order_id} never ended"),
        }
    }
    for (product_id, initial) in initial_stock {
        let available = probe.stock_of(product_id).await;
        let sold = sold.get(product_id).copied().unwrap_or(0);
        assert_eq!(
            *initial,
            available + sold,
            "product {product_id}: {initial} at first, {available} available, {sold} sold"
        );
    }
    for entry in ledger.values() {
        assert!(
            orders
                .iter()
                .any(|(order_id, _)| *order_id == entry.order_id.to_string()),
            "the gateway charged an order the store does not know: {entry:?}"
        );
    }
}

/// Waits until every stored order has ended (the saga worked through the backlog).
async fn all_orders_end(probe: &Probe, within: Duration) {
    let started = std::time::Instant::now();
    loop {
        let pending: Vec<String> = stored_orders(probe)
            .await
            .into_iter()
            .filter(|(_, order)| order.status == domain::OrderStatus::Pending)
            .map(|(order_id, _)| order_id)
            .collect();
        // An order's end is stored before its compensation: wait for the sagas to finish too.
        let sagas_running = sagas::state::count_by_state(&probe.db)
            .await
            .expect("count sagas")
            .iter()
            .any(|(state, count)| state == sagas::state::RUNNING && *count > 0);
        if pending.is_empty() && !sagas_running {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{} orders never ended: {:?}",
            pending.len(),
            &pending[..pending.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_survive_sigkill_at_random_moments_on_postgres() {
    let _turn = turn(Setup::PostgresRedis).await;
    let Some(data) = ServerData::new(Setup::PostgresRedis, "saga_crash_pg").await else {
        return;
    };
    let mut server = Server::start_with(&data, "all", FAST_PAYMENTS).await;
    let mut initial_stock = HashMap::new();
    let mut products = Vec::new();
    for index in 0..5 {
        let (product_id, _) = server
            .create_product(
                &format!("Crash item {index}"),
                "Survives",
                9.5,
                100,
                "crash",
            )
            .await;
        initial_stock.insert(product_id.clone(), 100);
        products.push(product_id);
    }
    let tokens = ["tok_visa", "tok_visa", "tok_chargeDeclined", "tok_timeout"];
    let mut placed = 0;
    let mut kills = 0;
    let mut rng = rand::rng();
    let mut next_kill = rng.random_range(40..120);
    while placed < 500 {
        let batch: Vec<_> = (0..8)
            .map(|index| {
                let token = tokens[(placed + index) % tokens.len()];
                let first = &products[(placed + index) % products.len()];
                let second = &products[(placed + index + 2) % products.len()];
                let quantity = 1 + ((placed + index) % 3) as u32;
                let api = Api::clone(&server);
                let body = json!({
                    "customer_id": format!("crash-{}", (placed + index) % 20),
                    "lines": [
                        { "product_id": first, "quantity": quantity },
                        { "product_id": second, "quantity": 1 },
                    ],
                    "payment_token": token,
                });
                tokio::spawn(async move {
                    // The server may be down (killed): a failed request is not a failure here.
                    api.request(reqwest::Method::POST, "/orders")
                        .json(&body)
                        .send()
                        .await
                })
            })
            .collect();
        for request in batch {
            if let Ok(Ok(response)) = request.await
                && response.status() == StatusCode::ACCEPTED
            {
                placed += 1;
            }
        }
        if placed >= next_kill && kills < 5 {
            // Let the saga get into the middle of things, then crash.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
            server.kill().await;
            kills += 1;
            next_kill = placed + rng.random_range(40..120);
            server = Server::start_with(&data, "all", FAST_PAYMENTS).await;
        }
    }
    assert!(kills >= 3, "the test killed the server {kills} times");
    let probe = Probe::open(&data).await;
    all_orders_end(&probe, Duration::from_secs(90)).await;
    assert_checkouts_add_up(&probe, &initial_stock).await;
    let orders = stored_orders(&probe).await;
    assert!(orders.len() >= 500, "{} orders stored", orders.len());
    // The history covers every ending, so each path was crossed by a crash at some point.
    let mut endings: BTreeMap<String, usize> = BTreeMap::new();
    for (_, order) in &orders {
        let ending = match (order.status, order.cancel_reason) {
            (_, Some(reason)) => reason.as_str().to_owned(),
            (status, None) => status.as_str().to_owned(),
        };
        *endings.entry(ending).or_default() += 1;
    }
    for ending in [
        "CONFIRMED",
        "out_of_stock",
        "payment_declined",
        "payment_timeout",
    ] {
        assert!(
            endings.get(ending).is_some_and(|count| *count >= 10),
            "too few orders ended {ending}: {endings:?}"
        );
    }
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_survive_sigkill_at_random_moments_embedded() {
    let Some(data) = ServerData::new(Setup::Embedded, "saga_crash_embedded").await else {
        return;
    };
    let mut server = Server::start_with(&data, "all", FAST_PAYMENTS).await;
    let (product_id, _) = server
        .create_product("Crash item", "Survives", 9.5, 40, "crash")
        .await;
    let tokens = ["tok_visa", "tok_chargeDeclined", "tok_timeout"];
    for round in 0..3 {
        for index in 0..30 {
            let token = tokens[index % tokens.len()];
            let _ = server
                .request(reqwest::Method::POST, "/orders")
                .json(&json!({
                    "customer_id": "crash",
                    "lines": [{ "product_id": product_id, "quantity": 1 }],
                    "payment_token": token,
                }))
                .send()
                .await;
        }
        tokio::time::sleep(Duration::from_millis(50 * round)).await;
        server.kill().await;
        server = Server::start_with(&data, "all", FAST_PAYMENTS).await;
    }
    let probe = Probe::open(&data).await;
    all_orders_end(&probe, Duration::from_secs(60)).await;
    assert_checkouts_add_up(&probe, &HashMap::from([(product_id, 40)])).await;
    server.terminate().await;
}

/// Which process holds the saga lease (worker ids start with the process id).
async fn lease_holder(probe: &Probe) -> Option<u32> {
    let db = &probe.db;
    let row: Option<(String,)> =
        sqlx::query_as("SELECT owner FROM saga_leases WHERE name = 'checkout'")
            .fetch_optional(db.pool())
            .await
            .ok()?;
    row?.0.split('-').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_saga_workers_never_process_an_order_twice_and_a_standby_takes_over() {
    let _turn = turn(Setup::PostgresRedis).await;
    let Some(data) = ServerData::new(Setup::PostgresRedis, "saga_two_workers").await else {
        return;
    };
    let api = Server::start_with(&data, "command-api", FAST_PAYMENTS).await;
    let projector = Server::start_with(&data, "projector", FAST_PAYMENTS).await;
    let mut workers = vec![
        Server::start_with(&data, "saga", FAST_PAYMENTS).await,
        Server::start_with(&data, "saga", FAST_PAYMENTS).await,
    ];
    let (product_id, _) = api
        .create_product("Shared", "Two workers", 5.0, 1_000, "pairs")
        .await;
    let tokens = ["tok_visa", "tok_chargeDeclined"];
    let mut first_batch = Vec::new();
    for index in 0..80 {
        first_batch.push(place_order(&api, "pair", &[(&product_id, 1)], tokens[index % 2]).await);
    }
    let probe = Probe::open(&data).await;
    all_orders_end(&probe, Duration::from_secs(60)).await;
    let ledger = probe.ledger_by_order().await;
    for order_id in &first_batch {
        let entry = ledger
            .get(order_id)
            .expect("every order reached the gateway");
        assert_eq!(
            entry.charge_requests, 1,
            "an order was charged by two workers: {entry:?}"
        );
    }
    let store = &probe.store;
    for order_id in &first_batch {
        let events = store
            .read_stream("order", order_id, 0, 100)
            .await
            .expect("read");
        assert_eq!(
            events.len(),
            2,
            "order {order_id}: created, then ended once"
        );
        let events = store
            .read_stream("payment", order_id, 0, 100)
            .await
            .expect("read");
        assert_eq!(
            events.len(),
            2,
            "payment {order_id}: requested, then one result"
        );
    }

    // The holder crashes: the standby takes the lease when it expires and finishes the work.
    let holder = lease_holder(&probe)
        .await
        .expect("a worker holds the lease");
    let index = workers
        .iter()
        .position(|worker| worker.pid() == Some(holder))
        .expect("the holder is one of the two saga workers");
    workers.remove(index).kill().await;
    for index in 0..20 {
        place_order(&api, "pair", &[(&product_id, 1)], tokens[index % 2]).await;
    }
    all_orders_end(&probe, Duration::from_secs(60)).await;
    let standby = workers[0].pid();
    assert_eq!(
        lease_holder(&probe).await,
        standby,
        "the standby holds the lease"
    );
    assert_checkouts_add_up(&probe, &HashMap::from([(product_id, 1_000)])).await;
    drop(projector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_saga_shows_on_its_order_and_runs_again_after_saga_retry() {
    let _turn = turn(Setup::PostgresRedis).await;
    let Some(data) = ServerData::new(Setup::PostgresRedis, "saga_parked").await else {
        return;
    };
    // No saga process yet: the order stays PENDING.
    let commands = TestApp::start_with(&data, "command-api", FAST_PAYMENTS).await;
    let queries = TestApp::start_with(&data, "query-api", FAST_PAYMENTS).await;
    let projector = TestApp::start_with(&data, "projector", FAST_PAYMENTS).await;
    let (product_id, _) = commands
        .create_product("Parked", "Waits", 3.0, 5, "ops")
        .await;
    let order_id = place_order(&commands, "ops", &[(&product_id, 1)], "tok_visa").await;
    let pending = eventually(Duration::from_secs(10), || async {
        let response = queries.get(&format!("/orders/{order_id}")).await;
        (response.status() == StatusCode::OK).then_some(())?;
        response.json::<Value>().await.ok()
    })
    .await
    .expect("the order is readable")
    .0;
    assert_eq!(pending["status"], "PENDING");
    assert!(pending.get("pending_reason").is_none(), "{pending}");

    // The saga parked after its retries (as a worker records it).
    let probe = Probe::open(&data).await;
    let created = probe
        .store
        .read_stream("order", &order_id, 0, 1)
        .await
        .expect("read the order");
    sqlx::query(
        "INSERT INTO checkout_sagas (order_id, order_event_id, correlation_id, payment_token,
             state, outcome, next_run_at, attempts, last_error, started_at, finished_at, updated_at)
         VALUES ($1, $2, 'ops', 'tok_visa', 'failed', NULL, 9223372036854775807, 8,
             'payment gateway: connection refused', 0, NULL, 'now')",
    )
    .bind(&order_id)
    .bind(created[0].event_id.to_string())
    .execute(probe.db.pool())
    .await
    .expect("park the saga");
    let parked: Value = queries
        .get(&format!("/orders/{order_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(parked["status"], "PENDING");
    let reason = parked["pending_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("connection refused") && reason.contains("mercato saga retry"),
        "{parked}"
    );

    // A saga worker alone does not touch a parked saga ...
    let worker = TestApp::start_with(&data, "saga", FAST_PAYMENTS).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = sagas::state::saga_status(&probe.db, order_id.parse().expect("uuid"))
        .await
        .expect("status")
        .expect("saga");
    assert_eq!(status.state, "failed");
    // ... support staff see it parked, with why ...
    let sagas: Value = commands.get("/sagas").await.json().await.expect("json");
    assert_eq!(sagas["parked"], 1, "{sagas}");
    assert_eq!(
        sagas["parked_sagas"][0]["order_id"],
        order_id.as_str(),
        "{sagas}"
    );
    assert_eq!(
        sagas["parked_sagas"][0]["last_error"], "payment gateway: connection refused",
        "{sagas}"
    );
    // ... and run it again, over HTTP as `mercato saga retry` does.
    let retried = commands
        .post(&format!("/sagas/{order_id}/retry"), Value::Null)
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    // Only a parked saga runs again; the CLI finds none left.
    let again = commands
        .post(&format!("/sagas/{order_id}/retry"), Value::Null)
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let output = mercato()
        .args(["saga", "retry", &order_id])
        .env("DATABASE_URL", data.store_url())
        .output()
        .expect("run mercato saga retry");
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("0 parked saga"),
        "{output:?}"
    );
    let order = ended_order(&queries, &order_id, None).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert!(order.get("pending_reason").is_none(), "{order}");
    drop((commands, projector, worker));
}
