//! `mercato generate`: a seeded synthetic history, checked through the event store and served by
//! the server started on it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use eventstore::RecordedEvent;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Api, ServerData, Setup, TestApp, eventually};

const EVENTS: u64 = 20_000;

fn generate(data_dir: &Path, args: &[&str]) -> Output {
    crate::common::mercato()
        .arg("generate")
        .args(args)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", data_dir.join("mercato.db").display()),
        )
        .output()
        .expect("the mercato binary runs")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn read_log(data: &ServerData) -> Vec<RecordedEvent> {
    let store = data.store().await;
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 10_000).await.expect("read the log");
        let Some(last) = page.last() else { break };
        after = last.position;
        events.extend(page);
    }
    events
}

fn payload(event: &RecordedEvent) -> Value {
    serde_json::from_str(event.payload.get()).expect("a JSON payload")
}

fn count(events: &[RecordedEvent], event_type: &str) -> usize {
    events
        .iter()
        .filter(|event| event.event_type == event_type)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_writes_a_valid_deterministic_shop_history_that_the_server_serves() {
    let data = ServerData::new(Setup::Embedded, "generate")
        .await
        .expect("embedded");
    let events_arg = EVENTS.to_string();
    let output = generate(
        data.data_dir.path(),
        &["--events", &events_arg, "--seed", "7"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(summary.starts_with("generated "), "{summary}");
    assert!(summary.contains("events/s"), "{summary}");

    let events = read_log(&data).await;
    let n = events.len() as u64;
    assert!(
        (EVENTS..EVENTS + 1_000).contains(&n),
        "{n} events for --events {EVENTS}"
    );

    // Versions are dense per stream, from 1, in log order; occurred_at never goes back.
    let mut versions: HashMap<(String, String), u64> = HashMap::new();
    let mut streams: BTreeMap<String, usize> = BTreeMap::new();
    for pair in events.windows(2) {
        assert!(
            pair[0].occurred_at <= pair[1].occurred_at,
            "time goes back at {}",
            pair[1].position
        );
    }
    for event in &events {
        let key = (event.stream_type.clone(), event.stream_id.clone());
        let last = versions.entry(key).or_insert(0);
        assert_eq!(
            event.stream_version,
            *last + 1,
            "{}/{} is not dense at {}",
            event.stream_type,
            event.stream_id,
            event.stream_version
        );
        if *last == 0 {
            *streams.entry(event.stream_type.clone()).or_default() += 1;
        }
        *last = event.stream_version;
    }

    // Proportions: a catalogue of events / 500 products, most carts abandoned, one payment per
    // order that got its stock, about 5% of payments failing, views, and Zipf-like popularity.
    let stream_count = |stream_type: &str| streams.get(stream_type).copied().unwrap_or(0);
    assert_eq!(stream_count("product"), 40, "{streams:?}");
    let (carts, orders, payments) = (
        stream_count("cart"),
        stream_count("order"),
        stream_count("payment"),
    );
    let checked_out = count(&events, "CartCheckedOut");
    assert!(carts > 500, "{streams:?}");
    let checkout_share = checked_out as f64 / carts as f64;
    assert!(
        (0.2..0.45).contains(&checkout_share),
        "{checked_out} of {carts} carts checked out"
    );
    assert!(orders > checked_out, "direct orders too: {streams:?}");
    assert!(
        payments as f64 >= orders as f64 * 0.7 && payments <= orders,
        "{payments} payments for {orders} orders"
    );
    assert!(stream_count("product_views") >= 1, "{streams:?}");
    assert!(count(&events, "ProductViewed") > 1_000);
    let failed = count(&events, "PaymentFailed") + count(&events, "PaymentTimedOut");
    let failure_share = failed as f64 / count(&events, "PaymentRequested") as f64;
    assert!(
        (0.01..0.12).contains(&failure_share),
        "{failed} failed payments: {failure_share}"
    );
    assert_eq!(
        count(&events, "ProductUpdated"),
        events
            .iter()
            .filter(|event| event.stream_type == "product")
            .count()
            / 2,
        "every product change is followed by its ProductUpdated"
    );
    let mut reserved_by_product: HashMap<&str, usize> = HashMap::new();
    for event in events.iter().filter(|e| e.event_type == "StockReserved") {
        *reserved_by_product.entry(&event.stream_id).or_default() += 1;
    }
    let mut reservations: Vec<usize> = reserved_by_product.values().copied().collect();
    reservations.sort_unstable();
    let top = *reservations.last().expect("reservations");
    let median = reservations[reservations.len() / 2];
    assert!(top >= 4 * median.max(1), "top {top}, median {median}");

    // Every order ends, and what the saga wrote carries the saga's metadata.
    let mut order_events: HashMap<&str, Vec<&RecordedEvent>> = HashMap::new();
    for event in events.iter().filter(|e| e.stream_type == "order") {
        order_events
            .entry(&event.stream_id)
            .or_default()
            .push(event);
    }
    let mut created_by_id = HashMap::new();
    for (order_id, history) in &order_events {
        assert_eq!(history[0].event_type, "OrderCreated", "{order_id}");
        assert_eq!(history.len(), 2, "{order_id}: {history:?}");
        let end = history[1];
        assert!(
            matches!(end.event_type.as_str(), "OrderConfirmed" | "OrderCancelled"),
            "{order_id} ends with {}",
            end.event_type
        );
        assert_eq!(end.metadata.source, "saga");
        assert_eq!(end.metadata.causation_id, history[0].event_id.to_string());
        assert_eq!(
            end.metadata.correlation_id,
            history[0].metadata.correlation_id
        );
        assert!(end.metadata.saga_id.is_some());
        created_by_id.insert(*order_id, history[0]);
    }
    // Every saga event but the product's full state that goes with each stock change names its
    // order.
    for event in events
        .iter()
        .filter(|e| e.metadata.source == "saga" && e.event_type != "ProductUpdated")
    {
        let order_id = payload(event)["order_id"]
            .as_str()
            .expect("saga events name their order")
            .to_owned();
        let created = created_by_id[order_id.as_str()];
        assert_eq!(
            event.metadata.correlation_id,
            created.metadata.correlation_id
        );
        assert_eq!(event.metadata.causation_id, created.event_id.to_string());
    }
    // A checkout's cart and order share the request's correlation id.
    for event in events.iter().filter(|e| e.event_type == "CartCheckedOut") {
        let order_id = payload(event)["order_id"]
            .as_str()
            .expect("order_id")
            .to_owned();
        assert_eq!(
            event.metadata.correlation_id,
            created_by_id[order_id.as_str()].metadata.correlation_id
        );
    }

    // The same seed writes the same events; another store refuses to be written twice.
    let again = ServerData::new(Setup::Embedded, "generate again")
        .await
        .expect("embedded");
    let output = generate(
        again.data_dir.path(),
        &["--events", &events_arg, "--seed", "7"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let replayed = read_log(&again).await;
    let identity = |events: &[RecordedEvent]| -> Vec<(String, String, String, String)> {
        events
            .iter()
            .map(|event| {
                (
                    event.event_type.clone(),
                    event.stream_id.clone(),
                    event.event_id.to_string(),
                    event.payload.get().to_owned(),
                )
            })
            .collect()
    };
    assert!(
        identity(&events) == identity(&replayed),
        "the same seed wrote another history"
    );
    let refused = generate(again.data_dir.path(), &["--events", "100"]);
    assert_eq!(refused.status.code(), Some(2));
    let message = stderr_of(&refused);
    assert!(
        message.starts_with("error: ") && message.contains("--append"),
        "{message}"
    );
    let appended = generate(
        again.data_dir.path(),
        &["--events", "500", "--seed", "7", "--append"],
    );
    assert_eq!(appended.status.code(), Some(0), "{}", stderr_of(&appended));
    assert!(read_log(&again).await.len() as u64 >= n + 500);

    // A server started on the store serves a product and orders as the events leave them.
    let product_id = events
        .iter()
        .filter(|e| e.event_type == "StockCommitted")
        .map(|e| e.stream_id.clone())
        .next()
        .expect("a product that sold");
    let last_update = events
        .iter()
        .rev()
        .find(|e| e.event_type == "ProductUpdated" && e.stream_id == product_id)
        .expect("the product's last ProductUpdated");
    let expected_product = payload(last_update);
    let confirmed = order_events
        .values()
        .find(|history| history[1].event_type == "OrderConfirmed")
        .expect("a confirmed order")[0];
    let cancelled = order_events
        .values()
        .find(|history| history[1].event_type == "OrderCancelled")
        .expect("a cancelled order");
    let head = events.last().expect("events").position;
    let server = TestApp::start(&data).await;
    let product = get_caught_up(&server, &format!("/products/{product_id}"), head).await;
    assert_eq!(product["name"], expected_product["name"]);
    assert_eq!(product["stock_qty"], expected_product["stock_qty"]);
    assert_eq!(product["version"], expected_product["version"]);
    assert_eq!(
        (product["price"].as_f64().expect("price") * 100.0).round() as i64,
        expected_product["price_minor"]
            .as_i64()
            .expect("price_minor")
    );
    let created = payload(confirmed);
    let order = get_caught_up(&server, &format!("/orders/{}", confirmed.stream_id), head).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["payment_status"], "SUCCEEDED", "{order}");
    assert_eq!(order["customer_id"], created["customer_id"]);
    assert_eq!(
        (order["total"].as_f64().expect("total") * 100.0).round() as i64,
        created["total_minor"].as_i64().expect("total_minor")
    );
    let reason = payload(cancelled[1])["reason"].clone();
    let order = get_caught_up(
        &server,
        &format!("/orders/{}", cancelled[0].stream_id),
        head,
    )
    .await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancel_reason"], reason, "{order}");

    // The sagas the server started on the generated orders find nothing left to do.
    let read_db = data.read_db().await;
    let n_orders = order_events.len() as i64;
    let settled = eventually(Duration::from_secs(120), || {
        let read_db = &read_db;
        async move {
            let counts = sagas::state::count_by_state(read_db).await.ok()?;
            let of = |state: &str| {
                counts
                    .iter()
                    .find(|(name, _)| name == state)
                    .map_or(0, |(_, n)| *n)
            };
            (of(sagas::state::DONE) + of(sagas::state::FAILED) == n_orders).then_some(counts)
        }
    })
    .await;
    let (counts, _) = settled.expect("every generated order's saga ran within 120 s");
    assert!(
        counts.iter().all(|(state, _)| state == sagas::state::DONE),
        "{counts:?}"
    );
    let store = data.store().await;
    let after = store.read_all(head, 1_000).await.expect("read");
    assert!(
        after
            .iter()
            .all(|event| event.stream_type == "product_views"),
        "the server wrote {:?}",
        after.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
}

/// GET `path` once the read models have processed `head`.
async fn get_caught_up(server: &Api, path: &str, head: u64) -> Value {
    let found = eventually(Duration::from_secs(120), || async {
        let response = server.get_at(path, head).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        response.json::<Value>().await.ok()
    })
    .await;
    found
        .unwrap_or_else(|| panic!("{path} was not served within 120 s"))
        .0
}
