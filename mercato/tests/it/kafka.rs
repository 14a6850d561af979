//! The Kafka relay and the Kafka-fed roles, against a real Kafka-protocol broker: a tansu broker
//! of each test's own (`server::testing::broker`), reached through a TCP proxy that can cut it off, as
//! an outage would.
//!
//! What is published is read back with kafka-python (`pip install kafka-python`), a client
//! independent of the librdkafka that mercato uses, by `scripts/kafka-read.py`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventstore::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::broker::Broker;
use sqlx::Row;
use tempfile::TempDir;
use tokio::process::Command;

use crate::common::{Api, Server, ServerData, TestApp, eventually, mercato_async, place_order};

/// Every message of `topics`, read with kafka-python until `expect` messages or 5 s of silence.
async fn read_topics(bootstrap: &str, topics: &[&str], expect: Option<usize>) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka-read.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(bootstrap).args(topics);
    if let Some(expect) = expect {
        command.args(["--expect", &expect.to_string()]);
    }
    let output = command.output().await.expect("run kafka-read.py");
    assert!(
        output.status.success(),
        "kafka-read.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

const EVENT_TOPICS: [&str; 5] = [
    "product.events",
    "cart.events",
    "orders.events",
    "payments.events",
    "user.events",
];

/// The server's flags for Kafka.
fn kafka_args(broker: &Broker) -> Vec<String> {
    vec!["--kafka-bootstrap".to_owned(), broker.bootstrap()]
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Waits until the relay of `server` published everything up to the store's head.
async fn relay_caught_up(server: &Api, data: &ServerData) {
    let head = data.store().await.head_position().await.expect("head");
    let reached = eventually(Duration::from_secs(60), || async {
        let ready: Value = server.get("/ready").await.json().await.ok()?;
        let position = ready["projections"]["kafka_relay"]["position"].as_u64()?;
        (position >= head).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "the relay did not publish up to {head} within 60 s"
    );
}

/// The order once it is no longer `PENDING`.
async fn ended_order(server: &Api, order_id: &str) -> Value {
    let found = eventually(Duration::from_secs(60), || async {
        let response = server.get(&format!("/orders/{order_id}")).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        let order: Value = response.json().await.ok()?;
        (order["status"] != "PENDING" && order["payment_status"] != "REQUESTED").then_some(order)
    })
    .await;
    found
        .unwrap_or_else(|| panic!("order {order_id} did not end within 60 s"))
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_publishes_every_event_with_its_headers_and_kafka_fed_roles_serve_them() {
    let test_name =
        "the_relay_publishes_every_event_with_its_headers_and_kafka_fed_roles_serve_them";
    let Some(broker) = Broker::start(test_name).await else {
        return;
    };
    let data = ServerData::new(crate::common::Setup::Embedded, test_name)
        .await
        .expect("embedded");
    let mut args = kafka_args(&broker);
    args.extend(["--source".to_owned(), "kafka".to_owned()]);
    let server = TestApp::start_with(&data, "all", &as_strs(&args)).await;

    let mut products = Vec::new();
    for index in 0..6 {
        let (id, _) = server
            .create_product(
                &format!("Kafka lamp {index}"),
                "a lamp relayed through Kafka",
                12.5,
                20,
                "lighting",
            )
            .await;
        products.push(id);
    }
    // Read-your-writes through Kafka: each read waits for its write's position, in the
    // partition that carries it, and sees the write at once.
    for index in 0..5 {
        let (id, position) = server
            .create_product(
                &format!("Fresh lamp {index}"),
                "read at once",
                3.0,
                4,
                "lighting",
            )
            .await;
        let started = std::time::Instant::now();
        let response = server.get_at(&format!("/products/{id}"), position).await;
        assert_eq!(response.status(), StatusCode::OK, "product {index}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the read waited {:?}",
            started.elapsed()
        );
        let product: Value = response.json().await.expect("json");
        assert_eq!(product["name"], format!("Fresh lamp {index}"));
    }
    let added = server
        .anonymous()
        .post(
            "/carts/kafka-cart/items",
            json!({ "product_id": products[0], "quantity": 2 }),
        )
        .await;
    assert!(added.status().is_success(), "{}", added.status());
    let mut orders = Vec::new();
    for index in 0..5 {
        let token = if index == 4 {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        };
        orders.push(
            place_order(
                &server,
                &format!("customer-{index}"),
                &[(&products[index], 2), (&products[5], 1)],
                token,
            )
            .await,
        );
    }
    // The orders read model and the saga both take their events from Kafka here.
    for (index, order_id) in orders.iter().enumerate() {
        let order = ended_order(&server, order_id).await;
        let expected = if index == 4 { "CANCELLED" } else { "CONFIRMED" };
        assert_eq!(order["status"], expected, "{order}");
    }
    let found = eventually(Duration::from_secs(30), || async {
        let product: Value = server
            .get(&format!("/products/{}", products[5]))
            .await
            .json()
            .await
            .ok()?;
        (product["stock_qty"] == 16).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "the Kafka-fed products read model did not show the stock of 4 confirmed orders"
    );
    let searched = eventually(Duration::from_secs(30), || async {
        let result: Value = server.get("/search?q=kafka").await.json().await.ok()?;
        (result["total"] == 6).then_some(())
    })
    .await;
    assert!(
        searched.is_some(),
        "the Kafka-fed search index did not find the 6 lamps"
    );
    // Popularity in the search index: 10 points a unit of a confirmed order (the declined
    // order's units count nothing).
    let popularity = |result: &Value, id: &str| {
        result["hits"]
            .as_array()
            .and_then(|hits| hits.iter().find(|hit| hit["product_id"] == id))
            .and_then(|hit| hit["popularity"].as_i64())
    };
    let expected: Vec<(String, i64)> = vec![(products[0].clone(), 20), (products[5].clone(), 40)];
    let counted = |expected: Vec<(String, i64)>, total: u64| {
        let server = &server;
        async move {
            let result: Value = server.get("/search?q=kafka").await.json().await.ok()?;
            (result["total"] == total
                && expected
                    .iter()
                    .all(|(id, points)| popularity(&result, id) == Some(*points)))
            .then_some(())
        }
    };
    assert!(
        eventually(Duration::from_secs(30), || counted(expected.clone(), 6))
            .await
            .is_some(),
        "the Kafka-fed search index did not count the orders"
    );

    // A rebuilt search index swapped in under the Kafka-fed projector: it goes on from the
    // partitions' checkpoints, counting nothing twice.
    let (code, stdout, stderr) =
        crate::common::replay::run(&data, &["replay", "--projection", "search"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("search\trebuilt and in service"),
        "{stdout}"
    );
    place_order(&server, "customer-after", &[(&products[5], 2)], "tok_visa").await;
    server
        .create_product(
            "Kafka lamp 6",
            "indexed after the rebuild",
            8.0,
            1,
            "lighting",
        )
        .await;
    let expected = vec![(products[0].clone(), 20), (products[5].clone(), 60)];
    let after = eventually(Duration::from_secs(30), || counted(expected.clone(), 7)).await;
    let result: Value = server
        .get("/search?q=kafka")
        .await
        .json()
        .await
        .expect("json");
    assert!(after.is_some(), "after the rebuild: {result}");

    relay_caught_up(&server, &data).await;
    let stored = data
        .store()
        .await
        .read_all(0, 100_000)
        .await
        .expect("read the log");
    let messages = read_topics(&broker.bootstrap(), &EVENT_TOPICS, Some(stored.len())).await;
    assert_eq!(messages.len(), stored.len(), "one message per stored event");
    let by_id: HashMap<String, &Value> = messages
        .iter()
        .map(|message| {
            (
                message["value"]["event_id"]
                    .as_str()
                    .expect("event_id")
                    .to_owned(),
                message,
            )
        })
        .collect();
    let mut topics_seen = BTreeSet::new();
    for event in &stored {
        let message = by_id
            .get(&event.event_id.to_string())
            .unwrap_or_else(|| panic!("event {} is not in Kafka", event.event_id));
        let topic = schemas::topics::topic_for_stream_type(&event.stream_type).expect("topic");
        assert_eq!(message["topic"], topic);
        topics_seen.insert(topic);
        assert_eq!(message["key"], event.stream_id.as_str());
        let headers = &message["headers"];
        assert_eq!(
            headers["correlationId"],
            event.metadata.correlation_id.as_str()
        );
        assert_eq!(headers["causationId"], event.metadata.causation_id.as_str());
        assert_eq!(headers["eventType"], event.event_type.as_str());
        assert_eq!(headers["source"], event.metadata.source.as_str());
        assert_eq!(headers["timestamp"], message["value"]["occurred_at"]);
        match &event.metadata.saga_id {
            Some(saga_id) => assert_eq!(headers["sagaId"], saga_id.as_str()),
            None => assert!(headers.get("sagaId").is_none()),
        }
        assert_eq!(message["value"]["position"], event.position);
        assert_eq!(message["value"]["stream_version"], event.stream_version);
    }
    assert_eq!(
        topics_seen.len(),
        4,
        "every topic carries events: {topics_seen:?}"
    );
    // Per key, in order: each stream's versions rise along its partition.
    let mut last_version: HashMap<(String, String), (i64, u64)> = HashMap::new();
    let mut ordered = messages.clone();
    ordered.sort_by_key(|message| {
        (
            message["topic"].as_str().unwrap_or("").to_owned(),
            message["partition"].as_i64().unwrap_or(0),
            message["offset"].as_i64().unwrap_or(0),
        )
    });
    for message in &ordered {
        let key = (
            message["topic"].as_str().expect("topic").to_owned(),
            message["key"].as_str().expect("key").to_owned(),
        );
        let partition = message["partition"].as_i64().expect("partition");
        let version = message["value"]["stream_version"]
            .as_u64()
            .expect("version");
        if let Some((last_partition, last)) = last_version.get(&key) {
            assert_eq!(
                *last_partition, partition,
                "stream {key:?} changed partition"
            );
            assert!(
                version > *last,
                "stream {key:?}: version {version} after {last}"
            );
        }
        last_version.insert(key, (partition, version));
    }
    drop(server);
}

/// A read-model table of `db` as sorted rows of text, for comparing two databases.
async fn table(db: &projections::readdb::ReadDb, query: &str) -> Vec<Vec<String>> {
    let rows = sqlx::query(query)
        .fetch_all(db.pool())
        .await
        .unwrap_or_else(|error| panic!("{query}: {error}"));
    let mut rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|index| {
                    row.try_get::<String, _>(index)
                        .or_else(|_| row.try_get::<i64, _>(index).map(|n| n.to_string()))
                        .unwrap_or_else(|_| "NULL".to_owned())
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

const COMPARED: [&str; 5] = [
    "SELECT product_id, name, description, price_minor, stock_qty, category, popularity, version FROM rm_products",
    "SELECT order_id, customer_id, status, lines, total_minor, payment_status, cancel_reason, created_position FROM rm_orders",
    "SELECT cart_id, lines, checked_out_as, version, owner FROM rm_carts",
    "SELECT product_id, score FROM rm_popularity",
    "SELECT customer_id, product_id FROM rm_customer_products",
];

/// Every compared read model of `db`.
async fn read_models(db: &projections::readdb::ReadDb) -> Vec<Vec<Vec<String>>> {
    let mut all = Vec::new();
    for query in COMPARED {
        all.push(table(db, query).await);
    }
    all
}

/// Data on a PostgreSQL database of its own, without Redis (read models in SQL).
async fn postgres_data(test_name: &str) -> Option<ServerData> {
    let database = TestDatabase::create(test_name).await?;
    Some(ServerData {
        data_dir: TempDir::new().expect("temporary directory"),
        database: Some(database),
        redis_url: None,
    })
}

/// Creates `n_products` products and `n_orders` two-line orders on `server`, with cart lines.
async fn shop_load(server: &Api, tag: &str, n_products: usize, n_orders: usize) -> Vec<String> {
    let mut products = Vec::new();
    for index in 0..n_products {
        let (id, _) = server
            .create_product(&format!("{tag} item {index}"), "loaded", 3.0, 1_000, "load")
            .await;
        products.push(id);
    }
    let mut orders = Vec::new();
    for index in 0..n_orders {
        let first = &products[index % products.len()];
        let second = &products[(index * 7 + 3) % products.len()];
        let added = server
            .anonymous()
            .post(
                &format!("/carts/{tag}-cart-{index}/items"),
                json!({ "product_id": first, "quantity": 1 }),
            )
            .await;
        let status = added.status();
        assert!(
            status.is_success(),
            "{status}: {}",
            added.text().await.unwrap_or_default()
        );
        let token = if index % 5 == 4 {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        };
        orders.push(
            place_order(
                server,
                &format!("{tag}-c{}", index % 6),
                &[(first, 1), (second, 2)],
                token,
            )
            .await,
        );
    }
    orders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_loses_nothing_and_kafka_fed_read_models_equal_log_fed_ones() {
    let test_name = "a_broker_outage_loses_nothing_and_kafka_fed_read_models_equal_log_fed_ones";
    let Some(mut broker) = Broker::start(test_name).await else {
        return;
    };
    let Some(source) = postgres_data(&format!("{test_name}_source")).await else {
        return;
    };
    let Some(fed) = postgres_data(&format!("{test_name}_fed")).await else {
        return;
    };
    let args = kafka_args(&broker);
    // The platform with its log-fed read models, and the relay.
    let server = Arc::new(TestApp::start_with(&source, "all", &as_strs(&args)).await);
    // A projector of its own database, fed only from Kafka.
    let mut fed_args = args.clone();
    fed_args.extend(["--source".to_owned(), "kafka".to_owned()]);
    let projector = TestApp::start_with(&fed, "projector", &as_strs(&fed_args)).await;

    let load = {
        let server = server.clone();
        tokio::spawn(async move { shop_load(&server, "outage", 30, 40).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.proxy.down();
    // Events to publish while the broker is away, whether or not the load is still running.
    let (during_outage, _) = server
        .create_product("made during the outage", "relayed later", 9.0, 3, "load")
        .await;
    let unready = eventually(Duration::from_secs(30), || async {
        let response = server.get("/ready").await;
        let status = response.status();
        let ready: Value = response.json().await.ok()?;
        (status == StatusCode::SERVICE_UNAVAILABLE && ready["checks"]["kafka"].is_string())
            .then_some(ready)
    })
    .await;
    let (unready, _) =
        unready.expect("the relay did not report itself unready while the broker was down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.proxy.up();
    let orders = load.await.expect("load");
    for order_id in &orders {
        ended_order(&server, order_id).await;
    }
    relay_caught_up(&server, &source).await;
    let ready: Value = server.get("/ready").await.json().await.expect("json");
    assert_eq!(
        ready["checks"]["kafka"], "ok",
        "{ready} (while down: {unready})"
    );

    let stored = source
        .store()
        .await
        .read_all(0, 100_000)
        .await
        .expect("read the log");
    let messages = read_topics(&broker.bootstrap(), &EVENT_TOPICS, None).await;
    let in_kafka: BTreeSet<&str> = messages
        .iter()
        .filter_map(|message| message["value"]["event_id"].as_str())
        .collect();
    let in_store: BTreeSet<String> = stored
        .iter()
        .map(|event| event.event_id.to_string())
        .collect();
    let in_store: BTreeSet<&str> = in_store.iter().map(String::as_str).collect();
    assert_eq!(
        in_kafka, in_store,
        "every stored event, and only those, is in Kafka"
    );

    let source_db = source.read_db().await;
    let fed_db = fed.read_db().await;
    let expected = read_models(&source_db).await;
    assert_eq!(expected[0].len(), 31);
    assert!(expected[0].iter().any(|row| row[0] == during_outage));
    assert_eq!(expected[1].len(), 40);
    let equal = eventually(Duration::from_secs(60), || async {
        (read_models(&fed_db).await == expected).then_some(())
    })
    .await;
    if equal.is_none() {
        let got = read_models(&fed_db).await;
        for (index, query) in COMPARED.iter().enumerate() {
            assert_eq!(got[index], expected[index], "{query}");
        }
    }
    drop(projector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_goes_to_the_dlq_and_replays_once_fixed() {
    let test_name = "a_poison_message_goes_to_the_dlq_and_replays_once_fixed";
    let Some(broker) = Broker::start(test_name).await else {
        return;
    };
    let Some(fed) = postgres_data(test_name).await else {
        return;
    };
    let source = ServerData::new(crate::common::Setup::Embedded, test_name)
        .await
        .expect("embedded");
    // One partition: the poison message sits between others of the same partition.
    let mut args = kafka_args(&broker);
    args.extend(["--kafka-partitions".to_owned(), "1".to_owned()]);
    let server = TestApp::start_with(&source, "all", &as_strs(&args)).await;
    let mut fed_args = args.clone();
    fed_args.extend(["--source".to_owned(), "kafka".to_owned()]);
    let projector = TestApp::start_with(&fed, "projector", &as_strs(&fed_args)).await;
    let fed_db = fed.read_db().await;
    // The cause: the read-model database refuses one product (as a bad migration could).
    for statement in [
        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN
             IF NEW.name = 'Poison Pill' THEN RAISE EXCEPTION 'poison pill refused'; END IF;
             RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON rm_products
             FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ] {
        sqlx::query(statement)
            .execute(fed_db.pool())
            .await
            .expect(statement);
    }
    server
        .create_product("Good one", "fine", 1.0, 5, "ok")
        .await;
    relay_caught_up(&server, &source).await;
    // A message no consumer can decode, straight onto the topic.
    server::testing::broker::produce(
        &broker.bootstrap(),
        "product.events",
        "garbage",
        "this is not an event",
    )
    .await;
    let (poison_id, _) = server
        .create_product("Poison Pill", "refused", 1.0, 5, "ok")
        .await;
    server
        .create_product("Good two", "fine", 1.0, 5, "ok")
        .await;

    let names = || async {
        table(&fed_db, "SELECT name FROM rm_products")
            .await
            .into_iter()
            .map(|row| row[0].clone())
            .collect::<Vec<_>>()
    };
    let moved_on = eventually(Duration::from_secs(60), || async {
        (names().await == ["Good one", "Good two"]).then_some(())
    })
    .await;
    assert!(
        moved_on.is_some(),
        "the partition did not move on past the poison: {:?}",
        names().await
    );

    let bootstrap = broker.bootstrap();
    let dlq = |command: &'static str, extra: Vec<String>| {
        let bootstrap = bootstrap.clone();
        async move {
            let output = mercato_async()
                .args(["dlq", command, "--kafka-bootstrap", &bootstrap])
                .args(extra)
                .env("RUST_LOG", "warn")
                .output()
                .await
                .expect("run mercato dlq");
            assert!(
                output.status.success(),
                "mercato dlq {command}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).expect("utf-8")
        }
    };
    let dead_letters = || async {
        dlq("list", vec!["--json".to_owned()])
            .await
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("json"))
            .collect::<Vec<_>>()
    };
    let listed = eventually(Duration::from_secs(30), || async {
        let letters = dead_letters().await;
        (letters.len() == 2).then_some(letters)
    })
    .await;
    let (letters, _) = listed.expect("two dead letters");
    let refused = letters
        .iter()
        .find(|letter| letter["stream"] == format!("product/{poison_id}"))
        .unwrap_or_else(|| panic!("no dead letter for the poison product: {letters:?}"));
    assert_eq!(refused["dlq_topic"], "product.events.dlq");
    assert_eq!(refused["topic"], "product.events");
    assert_eq!(refused["partition"], 0);
    assert_eq!(refused["projections"], "products");
    assert_eq!(refused["group"], "mercato-projector");
    assert_eq!(refused["attempts"], 5);
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("poison pill refused")),
        "{refused}"
    );
    let garbage = letters
        .iter()
        .find(|letter| letter["key"] == "garbage")
        .unwrap_or_else(|| panic!("no dead letter for the garbage: {letters:?}"));
    assert!(
        garbage["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("not an event envelope")),
        "{garbage}"
    );
    // The table lists the same, and so does the admins' route.
    let listed_table = dlq("list", Vec::new()).await;
    assert!(
        listed_table.contains("poison pill refused"),
        "{listed_table}"
    );
    let over_http: Value = server
        .get("/dead-letters?topic=product.events")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(over_http["kafka"], true, "{over_http}");
    assert_eq!(
        over_http["dead_letters"].as_array().map(Vec::len),
        Some(2),
        "{over_http}"
    );

    // Fixed: the trigger goes; the replay (over HTTP, as `mercato dlq replay` does) sends both
    // back, and the product is applied.
    sqlx::query("DROP TRIGGER refuse_poison ON rm_products")
        .execute(fed_db.pool())
        .await
        .expect("drop the trigger");
    let replayed: Value = server
        .post("/dead-letters/replay", Value::Null)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(replayed["replayed"], 2, "{replayed}");
    let fixed = eventually(Duration::from_secs(60), || async {
        (names().await == ["Good one", "Good two", "Poison Pill"]).then_some(())
    })
    .await;
    assert!(
        fixed.is_some(),
        "the replayed dead letter was not applied: {:?}",
        names().await
    );
    // The garbage still cannot be decoded: it is dead again, and only it is replayed next time.
    let again = eventually(Duration::from_secs(30), || async {
        let letters = dead_letters().await;
        (letters.len() == 3).then_some(letters)
    })
    .await;
    let (letters, _) = again.expect("the garbage is dead-lettered again");
    assert_eq!(letters[2]["key"], "garbage", "{letters:?}");
    let replayed = dlq("replay", Vec::new()).await;
    assert!(replayed.contains("1 dead letter(s) replayed"), "{replayed}");
    drop(projector);
}

/// The value of counter `name` in a Prometheus text page (summed over its labels).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projector_consumers_split_the_partitions_and_apply_every_event_once() {
    let test_name = "two_projector_consumers_split_the_partitions_and_apply_every_event_once";
    let Some(broker) = Broker::start(test_name).await else {
        return;
    };
    let Some(source) = postgres_data(&format!("{test_name}_source")).await else {
        return;
    };
    let Some(fed) = postgres_data(&format!("{test_name}_fed")).await else {
        return;
    };
    let mut args = kafka_args(&broker);
    args.extend(["--kafka-partitions".to_owned(), "4".to_owned()]);
    // Separate processes: each member's own metrics show that it consumed its share.
    let server = Server::start_with(&source, "all", &as_strs(&args)).await;
    relay_caught_up(&server, &source).await; // the topics exist
    let fed_url = fed.store_url();
    let mut fed_args = args.clone();
    fed_args.extend(["--source".to_owned(), "kafka".to_owned()]);
    let first = Server::start_with(&fed, "projector", &as_strs(&fed_args)).await;
    // The second member: same database and group, a search index of its own.
    let second_data = ServerData {
        data_dir: TempDir::new().expect("temporary directory"),
        database: None,
        redis_url: None,
    };
    let mut second_args = fed_args.clone();
    second_args.extend(["--database-url".to_owned(), fed_url]);
    let second = Server::start_with(&second_data, "projector", &as_strs(&second_args)).await;
    for member in [&first, &second] {
        let joined = eventually(Duration::from_secs(60), || async {
            let ready: Value = member.get("/ready").await.json().await.ok()?;
            (ready["checks"]["kafka"] == "ok").then_some(())
        })
        .await;
        assert!(joined.is_some(), "a projector did not join the group");
    }
    // Both members in the group before the load (a rebalance takes a few seconds).
    tokio::time::sleep(Duration::from_secs(8)).await;

    let orders = shop_load(&server, "split", 24, 30).await;
    for order_id in &orders {
        ended_order(&server, order_id).await;
    }
    relay_caught_up(&server, &source).await;
    let source_db = source.read_db().await;
    let fed_db = fed.read_db().await;
    let expected = read_models(&source_db).await;
    let equal = eventually(Duration::from_secs(60), || async {
        (read_models(&fed_db).await == expected).then_some(())
    })
    .await;
    if equal.is_none() {
        let got = read_models(&fed_db).await;
        for (index, query) in COMPARED.iter().enumerate() {
            assert_eq!(got[index], expected[index], "{query}");
        }
    }
    // Popularity adds up: an event applied twice would count twice.
    let scores: i64 = table(&fed_db, "SELECT score FROM rm_popularity")
        .await
        .iter()
        .map(|row| row[0].parse::<i64>().expect("score"))
        .sum();
    // Every fifth order is declined: 24 confirmed orders of 3 units.
    assert_eq!(scores, 24 * 3 * projections::ORDER_UNIT_POINTS);
    // Each member took a share.
    let mut consumed = BTreeMap::new();
    for (name, member) in [("first", &first), ("second", &second)] {
        let metrics = member.get("/metrics").await.text().await.expect("metrics");
        consumed.insert(name, counter(&metrics, "mercato_kafka_consumed_total"));
    }
    assert!(
        consumed.values().all(|count| *count > 0.0),
        "both members consume: {consumed:?}"
    );
    drop((first, second));
}

/// The relay part of `server`'s `/ready`: its position and whether it holds the lease.
async fn relay_state(server: &Api) -> Option<(StatusCode, u64, String)> {
    let response = server.get("/ready").await;
    let status = response.status();
    let ready: Value = response.json().await.ok()?;
    let relay = &ready["projections"]["kafka_relay"];
    Some((
        status,
        relay["position"].as_u64()?,
        relay["lease"].as_str()?.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_relay_takes_over_from_a_killed_holder_and_kafka_misses_no_event() {
    let test_name = "a_standby_relay_takes_over_from_a_killed_holder_and_kafka_misses_no_event";
    let Some(broker) = Broker::start(test_name).await else {
        return;
    };
    let Some(source) = postgres_data(test_name).await else {
        return;
    };
    let writer = Arc::new(TestApp::start_with(&source, "command-api", &[]).await);
    // Two relay processes on the same database and broker, each with a log of its own.
    let mut args = kafka_args(&broker);
    args.extend(["--database-url".to_owned(), source.store_url()]);
    let relay_data: Vec<ServerData> = (0..2)
        .map(|_| ServerData {
            data_dir: TempDir::new().expect("temporary directory"),
            database: None,
            redis_url: None,
        })
        .collect();
    let mut relays = Vec::new();
    for data in &relay_data {
        relays.push(Server::start_with(data, "relay", &as_strs(&args)).await);
    }
    let read_db = source.read_db().await;
    let holder_pid = || async {
        let row = projections::lease::lease_row(&read_db, "kafka_relay")
            .await
            .ok()??;
        let pid: u32 = row.owner.split('-').next()?.parse().ok()?;
        Some((pid, row.fence))
    };
    let held = eventually(Duration::from_secs(30), || async {
        let (pid, fence) = holder_pid().await?;
        let index = relays.iter().position(|relay| relay.pid() == Some(pid))?;
        Some((index, fence))
    })
    .await;
    let ((holder, first_fence), _) = held.expect("one of the two relays takes the lease");
    let standby = 1 - holder;

    // Writes flow while the holder publishes; the standby is ready and publishes nothing.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (writer, stop) = (writer.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n_writes = 0_usize;
            while !stop.load(Ordering::Relaxed) {
                let (product, _) = writer
                    .create_product(
                        &format!("relayed {n_writes}"),
                        "under load",
                        2.0,
                        50,
                        "load",
                    )
                    .await;
                let added = writer
                    .anonymous()
                    .post(
                        &format!("/carts/relay-cart-{n_writes}/items"),
                        json!({ "product_id": product, "quantity": 1 }),
                    )
                    .await;
                assert!(added.status().is_success(), "{}", added.status());
                n_writes += 1;
            }
            n_writes
        })
    };
    let published = eventually(Duration::from_secs(30), || async {
        let (status, position, lease) = relay_state(&relays[holder]).await?;
        (status == StatusCode::OK && lease == "held" && position > 0).then_some(())
    })
    .await;
    assert!(published.is_some(), "the holder did not publish");
    let (status, _, lease) = relay_state(&relays[standby]).await.expect("/ready");
    assert_eq!(
        (status, lease.as_str()),
        (StatusCode::OK, "standby"),
        "a standby relay is ready"
    );
    let metrics = relays[standby]
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    assert_eq!(
        counter(&metrics, "mercato_relay_events_total"),
        0.0,
        "the standby published nothing while the other held the lease"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The holder dies mid-stream; the standby takes the lease over once it expires.
    relays.remove(holder).kill().await;
    let killed = std::time::Instant::now();
    let relay = relays.pop().expect("the standby");
    let took_over = eventually(Duration::from_secs(30), || async {
        let (_, _, lease) = relay_state(&relay).await?;
        (lease == "held").then_some(())
    })
    .await;
    assert!(
        took_over.is_some(),
        "the standby did not take the lease over"
    );
    let takeover = killed.elapsed();
    // The lease lasts 6 s without renewal; the standby tries every 2 s.
    assert!(
        takeover < Duration::from_secs(12),
        "the standby took {takeover:?} to take over"
    );
    let (pid, fence) = holder_pid().await.expect("the lease's holder");
    assert_eq!(Some(pid), relay.pid(), "the standby holds the lease");
    assert!(
        fence > first_fence,
        "a new holding: {fence} after {first_fence}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let n_writes = load.await.expect("load");
    assert!(n_writes > 0);
    relay_caught_up(&relay, &source).await;
    let metrics = relay.get("/metrics").await.text().await.expect("metrics");
    assert!(
        counter(&metrics, "mercato_relay_events_total") > 0.0,
        "the new holder publishes"
    );

    // Every event of the log is in Kafka, and each stream reads gap-free and in order once a
    // consumer skips the duplicates a takeover makes.
    let stored: Vec<_> = source
        .store()
        .await
        .read_all(0, 100_000)
        .await
        .expect("read the log")
        .into_iter()
        .filter(|event| schemas::topics::topic_for_stream_type(&event.stream_type).is_some())
        .collect();
    assert!(stored.len() >= 2 * n_writes, "{} events", stored.len());
    let messages = read_topics(&broker.bootstrap(), &EVENT_TOPICS, None).await;
    let in_kafka: BTreeSet<&str> = messages
        .iter()
        .filter_map(|message| message["value"]["event_id"].as_str())
        .collect();
    let missing: Vec<String> = stored
        .iter()
        .map(|event| event.event_id.to_string())
        .filter(|event_id| !in_kafka.contains(event_id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events are not in Kafka: {:?}",
        missing.len(),
        stored.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(
        in_kafka.len(),
        stored.len(),
        "only stored events are in Kafka"
    );
    let mut ordered = messages.clone();
    ordered.sort_by_key(|message| {
        (
            message["topic"].as_str().unwrap_or("").to_owned(),
            message["partition"].as_i64().unwrap_or(0),
            message["offset"].as_i64().unwrap_or(0),
        )
    });
    let mut last_version: HashMap<(String, String), u64> = HashMap::new();
    for message in &ordered {
        let key = (
            message["topic"].as_str().expect("topic").to_owned(),
            message["key"].as_str().expect("key").to_owned(),
        );
        let version = message["value"]["stream_version"]
            .as_u64()
            .expect("version");
        let last = last_version.entry(key.clone()).or_insert(0);
        if version <= *last {
            continue; // a duplicate
        }
        assert_eq!(
            version,
            *last + 1,
            "stream {key:?}: version {version} right after {last}"
        );
        *last = version;
    }
    println!(
        "relay takeover after SIGKILL: {takeover:?}; {} events, {} messages",
        stored.len(),
        messages.len()
    );
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_service_asks_for_a_message_on_notifications_commands_once() {
    let test_name = "another_service_asks_for_a_message_on_notifications_commands_once";
    let Some(broker) = Broker::start(test_name).await else {
        return;
    };
    let data = ServerData::new(crate::common::Setup::Embedded, test_name)
        .await
        .expect("embedded");
    let server = TestApp::start_with(&data, "all", &as_strs(&kafka_args(&broker))).await;
    let ann = server.register_customer("ann").await;
    let outbox = data.data_dir.path().join("mail");
    let mails = |count: usize| {
        let outbox = outbox.clone();
        async move {
            eventually(Duration::from_secs(60), || async {
                let mails = mail::testing::outbox_messages(&outbox);
                (mails.len() >= count).then_some(mails)
            })
            .await
            .map(|(mails, _)| mails)
            .unwrap_or_default()
        }
    };
    assert_eq!(mails(1).await.len(), 1, "the verification mail");
    let order_id = uuid::Uuid::new_v4();
    let request = json!({ "request_id": "erp-4711", "template": "order_shipped",
        "user_id": ann.user_id, "order_id": order_id,
        "variables": { "carrier": "Poste Italiane", "tracking_number": "RR123456789IT", "items": 1 } })
    .to_string();
    let bootstrap = broker.bootstrap();
    // The same request twice (a producer's retry), and one that is not a request.
    for payload in [request.as_str(), request.as_str(), "not a request"] {
        server::testing::broker::produce(&bootstrap, "notifications.commands", "erp", payload)
            .await;
    }
    let received = mails(2).await;
    assert_eq!(received.len(), 2);
    let shipped = String::from_utf8_lossy(&received[1]).into_owned();
    assert!(shipped.contains("RR123456789IT"), "{shipped}");
    let dead = read_topics(&bootstrap, &["notifications.commands.dlq"], Some(1)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["headers"]["dlq.reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not a notification request"),
        "{dead:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mail::testing::outbox_messages(&outbox).len(),
        2,
        "a request delivered twice became two messages"
    );
    server.stop().await;
}
