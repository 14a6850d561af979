//! The SQL read models store the same whatever the size of the batches they get: one history
//! (a few hundred events over a few products, carts, orders and payments, with what a Kafka feed
//! brings: popularity before its product, payments and confirmations before their order, events
//! delivered again, older versions after newer ones) applied as one batch, event by event, and in
//! small batches that start in the middle of streams, on SQLite and on PostgreSQL. The tables
//! must also be what the former one-statement-per-event projections
//! (`support/reference_sql_models.rs`) store, event by event.

use std::sync::Arc;

use eventstore::RecordedEvent;
use eventstore::testing::TestDatabase;
use projections::Projection;
use projections::readdb::ReadDb;
use projections::runner::Feed;
use projections::sql_models::{
    OrdersProjection, ProductsProjection, SqlCartsProjection, SqlPopularityProjection,
};

use crate::support::history;
use crate::support::reference_sql_models as reference;

use history::{Generator, Rng, Shape};

/// The history: a small shop, then reordered and repeated as a Kafka feed may deliver it.
fn kafka_like_history() -> Vec<RecordedEvent> {
    let mut generator = Generator::new(Shape {
        products: 6,
        customers: 5,
        concurrent_sessions: 6,
        seed: 11,
    });
    generator.run_until(420);
    let mut events = generator.into_events();
    let mut rng = Rng::new(5);

    // Two products' streams come late (their topic lags): orders and views of them come first.
    let late: Vec<String> = events
        .iter()
        .filter(|event| event.event_type == "ProductCreated")
        .skip(2)
        .take(2)
        .map(|event| event.stream_id.clone())
        .collect();
    let (late_events, rest): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|event| event.stream_type == "product" && late.contains(&event.stream_id));
    events = rest;
    let middle = events.len() / 2;
    events.splice(middle..middle, late_events);

    // Some orders' payments, and one order's confirmation, come before the order.
    let orders: Vec<String> = events
        .iter()
        .filter(|event| event.event_type == "OrderCreated")
        .map(|event| event.stream_id.clone())
        .collect();
    for (n, order) in orders.iter().take(4).enumerate() {
        let Some(created) = events
            .iter()
            .position(|event| event.event_type == "OrderCreated" && &event.stream_id == order)
        else {
            continue;
        };
        let moved_type = if n == 3 { "order" } else { "payment" };
        let (moved, rest): (Vec<_>, Vec<_>) =
            events.into_iter().enumerate().partition(|(index, event)| {
                *index > created
                    && event.stream_type == moved_type
                    && &event.stream_id == order
                    && event.event_type != "OrderCreated"
            });
        events = rest.into_iter().map(|(_, event)| event).collect();
        let at = created.saturating_sub(1 + n);
        events.splice(at..at, moved.into_iter().map(|(_, event)| event));
    }
    // One order's creation never comes (its payments and end do).
    if let Some(missing) = orders.get(5) {
        events.retain(|event| !(event.event_type == "OrderCreated" && &event.stream_id == missing));
    }

    // Redeliveries: events seen again later, so older versions come after newer ones.
    for _ in 0..40 {
        let from = rng.below(events.len() as u64) as usize;
        let to = from + 1 + rng.below((events.len() - from) as u64) as usize;
        let mut again = events[from].clone();
        again.event_id = uuid::Uuid::new_v4();
        events.insert(to.min(events.len()), again);
    }
    // A product update repeated with its version but other content: the first one stays.
    if let Some(index) = events
        .iter()
        .rposition(|event| event.event_type == "ProductUpdated")
    {
        let mut twin = events[index].clone();
        let payload = twin
            .payload
            .get()
            .replace("\"name\":\"", "\"name\":\"Twin of ");
        twin.payload = serde_json::value::RawValue::from_string(payload).unwrap();
        events.insert(index + 1, twin);
    }

    for (index, event) in events.iter_mut().enumerate() {
        event.position = index as u64 + 1;
    }
    events
}

/// The folded projections, or the former ones.
fn projections(db: &ReadDb, former: bool) -> Vec<Arc<dyn Projection>> {
    if former {
        vec![
            Arc::new(reference::ProductsProjection::new(db.clone(), None)),
            Arc::new(reference::OrdersProjection::new(db.clone())),
            Arc::new(reference::SqlCartsProjection::new(db.clone())),
            Arc::new(reference::SqlPopularityProjection::new(db.clone())),
        ]
    } else {
        vec![
            Arc::new(ProductsProjection::new(db.clone(), None)),
            Arc::new(OrdersProjection::new(db.clone())),
            Arc::new(SqlCartsProjection::new(db.clone())),
            Arc::new(SqlPopularityProjection::new(db.clone(), None)),
        ]
    }
}

/// Every rm_* table of the read models, each row's columns as text, in key order. (A cart's
/// `updated_at` is when it was written, not an event's time: left out.)
const TABLES: &[(&str, &[&str], &str)] = &[
    (
        "rm_products",
        &[
            "product_id",
            "name",
            "description",
            "price_minor",
            "stock_qty",
            "category",
            "popularity",
            "updated_at",
            "version",
        ],
        "product_id",
    ),
    (
        "rm_orders",
        &[
            "order_id",
            "customer_id",
            "status",
            "lines",
            "total_minor",
            "payment_status",
            "cancel_reason",
            "created_at",
            "created_position",
            "updated_at",
        ],
        "order_id",
    ),
    (
        "rm_carts",
        &["cart_id", "lines", "checked_out_as", "version"],
        "cart_id",
    ),
    ("rm_popularity", &["product_id", "score"], "product_id"),
    (
        "rm_order_payments",
        &["order_id", "payment_status", "version"],
        "order_id",
    ),
    (
        "rm_search_popularity",
        &["product_id", "points"],
        "product_id",
    ),
    (
        "rm_products_early_popularity",
        &["product_id", "points"],
        "product_id",
    ),
    (
        "rm_customer_products",
        &["customer_id", "product_id"],
        "customer_id, product_id",
    ),
];

type Dump = Vec<(&'static str, Vec<Vec<Option<String>>>)>;

async fn dump(db: &ReadDb) -> Dump {
    use sqlx::Row;
    let mut tables = Vec::new();
    for (table, columns, key) in TABLES {
        let select: Vec<String> = columns
            .iter()
            .map(|column| format!("CAST({column} AS TEXT)"))
            .collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY {key}", select.join(", "));
        let rows = sqlx::query(&sql).fetch_all(db.pool()).await.unwrap();
        let rows = rows
            .iter()
            .map(|row| {
                (0..columns.len())
                    .map(|index| row.try_get::<Option<String>, _>(index).unwrap())
                    .collect()
            })
            .collect();
        tables.push((*table, rows));
    }
    tables
}

/// How a run hands the history to the projections.
#[derive(Clone, Copy, Debug)]
enum Run {
    OneBatch,
    EventByEvent,
    BatchesOf(usize),
}

async fn run(db: &ReadDb, events: &[RecordedEvent], how: Run, former: bool) -> Dump {
    let size = match how {
        Run::OneBatch => events.len(),
        Run::EventByEvent => 1,
        Run::BatchesOf(size) => size,
    };
    for projection in projections(db, former) {
        for batch in events.chunks(size) {
            projection.apply(&Feed::Log, batch).await.unwrap();
        }
        assert_eq!(
            projection.checkpoint(&Feed::Log).await.unwrap(),
            events.last().unwrap().position
        );
    }
    dump(db).await
}

fn assert_same(expected: &Dump, actual: &Dump, what: &str) {
    for ((table, expected), (_, actual)) in expected.iter().zip(actual) {
        assert_eq!(
            expected.len(),
            actual.len(),
            "{what}: {table} has another number of rows"
        );
        for (expected, actual) in expected.iter().zip(actual) {
            assert_eq!(expected, actual, "{what}: a row of {table} differs");
        }
    }
}

/// The history exercises what it is meant to.
fn assert_covers(dump: &Dump) {
    let rows = |name: &str| {
        dump.iter()
            .find(|(table, _)| *table == name)
            .map_or(0, |(_, rows)| rows.len())
    };
    assert!(rows("rm_products") >= 6, "{dump:?}");
    assert!(
        rows("rm_products_early_popularity") >= 1,
        "popularity before its product"
    );
    assert!(rows("rm_order_payments") >= 3 && rows("rm_orders") >= 3);
    assert!(rows("rm_carts") >= 5 && rows("rm_customer_products") >= 3);
    let statuses: std::collections::BTreeSet<&str> = dump
        .iter()
        .find(|(table, _)| *table == "rm_orders")
        .map(|(_, rows)| rows.iter().filter_map(|row| row[2].as_deref()).collect())
        .unwrap_or_default();
    assert!(
        statuses.contains("CONFIRMED") && statuses.contains("CANCELLED"),
        "{statuses:?}"
    );
}

/// Opens a fresh read database for each run: `open(n)` gives the n-th.
async fn compare_runs<F, Fut>(open: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ReadDb>,
{
    let events = kafka_like_history();
    assert!(events.len() >= 400);
    let expected = run(&open(0).await, &events, Run::EventByEvent, true).await;
    assert_covers(&expected);
    let runs = [
        Run::OneBatch,
        Run::EventByEvent,
        Run::BatchesOf(7),
        Run::BatchesOf(64),
    ];
    for (n, how) in runs.into_iter().enumerate() {
        let actual = run(&open(n + 1).await, &events, how, false).await;
        assert_same(&expected, &actual, &format!("{how:?}"));
    }
}

#[tokio::test]
async fn one_batch_or_event_by_event_store_the_same_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().to_owned();
    compare_runs(|n| {
        let url = format!("sqlite://{}", path.join(format!("read-{n}.db")).display());
        async move { ReadDb::open(&url).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn one_batch_or_event_by_event_store_the_same_on_postgres() {
    let name = "one_batch_or_event_by_event_store_the_same_on_postgres";
    let mut databases = Vec::new();
    for _ in 0..5 {
        let Some(database) = TestDatabase::create(name).await else {
            return;
        };
        databases.push(database);
    }
    let urls: Vec<String> = databases.iter().map(|db| db.url().to_owned()).collect();
    compare_runs(|n| {
        let url = urls[n].clone();
        async move { ReadDb::open(&url).await.unwrap() }
    })
    .await;
}
