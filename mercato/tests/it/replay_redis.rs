//! `mercato replay` of carts and popularity kept in Redis (`REDIS_URL`): a rebuild replaces broken
//! Redis read models while the server keeps answering and writing, loses and doubles nothing, and
//! an interrupted rebuild leaves the read models in service untouched, resumes, and can be
//! discarded. Skipped without PostgreSQL or Redis (failing instead with
//! `MERCATO_REQUIRE_SERVICES=1`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::replay::{
    caught_up_to_head, create_lamps, interrupt_replay, late_order, order_lamps, prefix,
    projection_line, redis, redis_checkpoint, run, sagas_finished,
};
use crate::common::{Api, ServerData, Setup, TestApp, eventually};

/// Every key starting with `start`.
async fn keys(connection: &mut redis::aio::MultiplexedConnection, start: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .cursor_arg(cursor)
            .arg("MATCH")
            .arg(format!("{start}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The carts and popularity read models in Redis, as sorted text rows.
async fn dump(data: &ServerData) -> Vec<String> {
    let prefix = prefix(data);
    let mut connection = redis(data).await;
    let mut rows = Vec::new();
    for key in keys(&mut connection, &format!("{prefix}cart:")).await {
        let value: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("GET");
        // Compared as JSON values: the same cart is the same value, whatever the key order.
        let value: Value = serde_json::from_str(&value).expect("a cart is JSON");
        rows.push(format!("cart|{}|{value}", &key[prefix.len() + 5..]));
    }
    let popularity: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}popularity"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut connection)
        .await
        .expect("ZRANGE");
    for (product, score) in popularity {
        rows.push(format!("popularity|{product}|{score}"));
    }
    for key in keys(&mut connection, &format!("{prefix}ordered:")).await {
        let products: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("SMEMBERS");
        for product in products {
            rows.push(format!("ordered|{}|{product}", &key[prefix.len() + 8..]));
        }
    }
    rows.sort();
    rows
}

/// Waits until every read model's checkpoint (SQL and Redis) reached the head of the log.
async fn caught_up(data: &ServerData) {
    caught_up_to_head(data, &["products", "orders"], &["carts", "popularity"]).await;
}

/// The sum of every product's popularity.
fn total_popularity(rows: &[String]) -> i64 {
    rows.iter()
        .filter(|row| row.starts_with("popularity|"))
        .map(|row| row.rsplit('|').next().unwrap().parse::<i64>().unwrap())
        .sum()
}

/// A guest's cart write (the guest client keeps each cart's token).
async fn add_to_cart(guest: &Api, cart: &str, product: &str, quantity: u32) {
    let response = guest
        .post(
            &format!("/carts/{cart}/items"),
            json!({ "product_id": product, "quantity": quantity }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_the_redis_read_models_while_the_server_serves_and_writes() {
    let Some(data) = ServerData::new(Setup::PostgresRedis, "replay_redis_serving").await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let products = create_lamps(&server).await;
    let guest = server.anonymous();
    for index in 0..6 {
        let cart = format!("cart-{index}");
        add_to_cart(&guest, &cart, &products[index % 4], 1).await;
        add_to_cart(&guest, &cart, &products[(index + 1) % 4], 1).await;
    }
    for index in 0..2 {
        let response = guest
            .post(
                &format!("/carts/cart-{index}/checkout"),
                json!({ "payment_token": "tok_visa" }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    order_lamps(&server, &products, "tok_visa").await;
    let viewer = server.register_customer("viewer").await;
    for product in &products {
        let response = viewer
            .get(&format!(
                "/products/{product}?customer_id={}",
                viewer.user_id
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // 10 points per unit of a confirmed order (6 orders of 3 units, 2 checkouts of 2), 1 per
    // view.
    let expected_before = (6 * 3 + 2 * 2) * 10 + 4;
    let settled = eventually(Duration::from_secs(30), || async {
        caught_up(&data).await;
        let rows = dump(&data).await;
        (total_popularity(&rows) == expected_before).then_some(rows)
    })
    .await;
    let (before, _) = settled.expect("the views and orders reach the popularity read model");
    assert_eq!(
        before.iter().filter(|row| row.starts_with("cart|")).count(),
        6
    );

    // A bug broke the read models in Redis: a cart's quantity, a cart that never existed,
    // inflated and invented popularity, products a customer never ordered.
    let prefix = prefix(&data);
    let mut connection = redis(&data).await;
    let broken_cart = json!({
        "lines": { products[0].clone(): { "quantity": 999, "unit_price_minor": 1 } },
        "checked_out_as": null,
        "version": 99
    });
    redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}cart:cart-4"))
        .arg(broken_cart.to_string())
        .ignore()
        .cmd("SET")
        .arg(format!("{prefix}cart:ghost"))
        .arg(json!({"lines": {}, "checked_out_as": null, "version": 1}).to_string())
        .ignore()
        .cmd("ZINCRBY")
        .arg(format!("{prefix}popularity"))
        .arg(1000)
        .arg(&products[0])
        .ignore()
        .cmd("ZADD")
        .arg(format!("{prefix}popularity"))
        .arg(5)
        .arg("ghost-product")
        .ignore()
        .cmd("SADD")
        .arg(format!("{prefix}ordered:customer-0"))
        .arg("ghost-product")
        .ignore()
        .cmd("SADD")
        .arg(format!("{prefix}ordered:ghost-customer"))
        .arg(&products[1])
        .ignore()
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    assert_ne!(dump(&data).await, before);

    // Rebuild while orders and cart changes keep coming in.
    let load = {
        let products = products.clone();
        let (server, guest) = (Api::clone(&server), guest.clone());
        tokio::spawn(async move {
            for index in 0..30 {
                late_order(&server, &products, index, "tok_visa").await;
                if index % 3 == 0 {
                    add_to_cart(
                        &guest,
                        &format!("late-cart-{index}"),
                        &products[index % 4],
                        2,
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    let (code, stdout, stderr) = run(&data, &["replay", "--all"]).await;
    assert_eq!(code, 0, "replay failed: {stderr}");
    for name in ["products", "orders", "carts", "popularity", "search"] {
        assert!(
            stdout.contains(&format!("{name}\trebuilt and in service")),
            "{name} missing from:\n{stdout}"
        );
    }
    load.await.expect("load");
    sagas_finished(&data, 6 + 2 + 30).await;
    caught_up(&data).await;
    let rebuilt = dump(&data).await;
    assert!(
        !rebuilt.iter().any(|row| row.contains("ghost")),
        "{rebuilt:#?}"
    );
    // The carts that existed before are exactly as they were (the load touched none of them),
    // and the load's carts are there.
    for row in before.iter().filter(|row| row.starts_with("cart|")) {
        assert!(rebuilt.contains(row), "{row} not rebuilt: {rebuilt:#?}");
    }
    assert_eq!(
        rebuilt
            .iter()
            .filter(|row| row.starts_with("cart|late-cart-"))
            .count(),
        10
    );
    // Exactly: 30 more orders of one unit.
    assert_eq!(
        total_popularity(&rebuilt),
        expected_before + 30 * 10,
        "{rebuilt:#?}"
    );
    for customer in 0..3 {
        let ordered: Vec<&String> = rebuilt
            .iter()
            .filter(|row| row.starts_with(&format!("ordered|customer-{customer}|")))
            .collect();
        assert_eq!(ordered.len(), 3, "{ordered:?}");
    }
    assert!(rebuilt.iter().any(|row| row.starts_with("ordered|late-0|")));

    // The server answers from the rebuilt read models.
    let cart: Value = server.get("/carts/cart-4").await.json().await.unwrap();
    let lines = cart["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 2, "{cart}");
    assert!(lines.iter().all(|line| line["quantity"] == 1), "{cart}");
    assert_eq!(
        server.get("/carts/ghost").await.status(),
        StatusCode::NOT_FOUND
    );
    let recommended: Value = server
        .get("/recommendations?customer_id=newcomer&limit=10")
        .await
        .json()
        .await
        .unwrap();
    let items = recommended["items"].as_array().expect("items");
    assert_eq!(items.len(), 4, "{recommended}");
    let recommended_total: i64 = items
        .iter()
        .map(|item| item["score"].as_i64().expect("a score"))
        .sum();
    assert_eq!(recommended_total, total_popularity(&rebuilt));

    // Later writes land in the rebuilt read models: the live projections read on from the
    // rebuilt checkpoint.
    add_to_cart(&guest, "after-swap", &products[2], 3).await;
    let fresh = eventually(Duration::from_secs(10), || async {
        let response = server.get("/carts/after-swap").await;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(
        fresh.is_some(),
        "a cart written after the swap never showed"
    );

    // A second rebuild on a quiet system gives the same read models: the first one, made while
    // orders were placed and applied, lost and doubled nothing.
    caught_up(&data).await;
    let settled = dump(&data).await;
    let (code, _, stderr) = run(&data, &["replay", "--projection", "popularity"]).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(&data, &["replay", "--projection", "carts"]).await;
    assert_eq!(code, 0, "{stderr}");
    caught_up(&data).await;
    assert_eq!(dump(&data).await, settled);

    let (code, stdout, _) = run(&data, &["projections"]).await;
    assert_eq!(code, 0);
    for name in ["carts", "popularity"] {
        let line = projection_line(&stdout, name);
        assert!(line.contains("caught up"), "{line}");
        assert!(!line.contains("unfinished"), "{line}");
    }
    // Nothing of the rebuilds is left in Redis.
    assert!(
        keys(&mut connection, &format!("{prefix}replay:"))
            .await
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_redis_replay_changes_nothing_in_service_resumes_and_can_be_dropped() {
    // The embedded store with the read models in Redis: the rebuild reads the log fast enough to
    // be interrupted half-way through.
    let Some(redis_url) = eventstore::testing::redis_url("replay_redis_interrupted").await else {
        return;
    };
    let data = ServerData {
        data_dir: tempfile::TempDir::new().unwrap(),
        database: None,
        redis_url: Some(redis_url),
    };
    let (code, _, stderr) = run(&data, &["generate", "--events", "100000"]).await;
    assert_eq!(code, 0, "{stderr}");
    let prefix = prefix(&data);
    let mut connection = redis(&data).await;

    // Stop a rebuild at its first progress line: half-way through.
    interrupt_replay(&data).await;
    // Nothing half-built is in service: the Redis read models are as they were (never built).
    assert!(dump(&data).await.is_empty());
    assert_eq!(redis_checkpoint(&data, "carts").await, 0);
    assert_eq!(redis_checkpoint(&data, "popularity").await, 0);
    let (_, stdout, _) = run(&data, &["projections"]).await;
    for name in ["carts", "popularity"] {
        let line = projection_line(&stdout, name);
        assert!(line.contains("rebuild unfinished at position"), "{line}");
    }

    let (code, stdout, stderr) = run(&data, &["replay", "--all"]).await;
    assert_eq!(code, 0, "{stderr}");
    let resumed_line = stderr
        .lines()
        .find(|line| line.starts_with("resuming an interrupted rebuild"))
        .unwrap_or_else(|| panic!("no resume in:\n{stderr}"));
    for name in ["carts", "popularity"] {
        assert!(
            resumed_line.contains(&format!("{name} at position")),
            "{resumed_line}"
        );
        assert!(
            stdout.contains(&format!("{name}\trebuilt and in service")),
            "{stdout}"
        );
    }
    let resumed = dump(&data).await;
    assert!(resumed.iter().any(|row| row.starts_with("cart|")));
    assert!(resumed.iter().any(|row| row.starts_with("popularity|")));
    assert!(resumed.iter().any(|row| row.starts_with("ordered|")));
    let head = data.store().await.head_position().await.unwrap();
    assert_eq!(redis_checkpoint(&data, "carts").await, head);
    assert_eq!(redis_checkpoint(&data, "popularity").await, head);

    // The same as a rebuild from scratch.
    let (code, _, stderr) = run(&data, &["replay", "--all", "--restart"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(dump(&data).await, resumed);
    let (_, stdout, _) = run(&data, &["projections"]).await;
    assert!(!stdout.contains("unfinished"), "{stdout}");

    // An interrupted rebuild dropped: its keys go, the read models in service stay.
    interrupt_replay(&data).await;
    assert!(
        !keys(&mut connection, &format!("{prefix}replay:"))
            .await
            .is_empty()
    );
    let (code, stdout, _) = run(&data, &["replay", "--discard"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("unfinished rebuilds dropped"), "{stdout}");
    assert!(
        keys(&mut connection, &format!("{prefix}replay:"))
            .await
            .is_empty()
    );
    assert_eq!(dump(&data).await, resumed);
    let (_, stdout, _) = run(&data, &["projections"]).await;
    assert!(!stdout.contains("unfinished"), "{stdout}");
    let (code, stdout, _) = run(&data, &["replay", "--discard"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("no unfinished rebuild"), "{stdout}");
}
