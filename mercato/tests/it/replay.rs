//! `mercato replay` and `mercato projections` against a serving platform: a rebuild replaces
//! broken read models while the server keeps answering and writing, loses and doubles nothing,
//! and an interrupted rebuild leaves the read models in service untouched and resumes.

use eventstore::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Row;

use crate::common::replay::{
    caught_up_to_head, create_lamps, interrupt_replay, order_lamps, order_load, projection_line,
    run, sagas_finished,
};
use crate::common::{Api, ServerData, Setup, TestApp};

/// Every SQL read model, as sorted text rows: what must come out of a rebuild the same.
async fn dump(data: &ServerData) -> Vec<String> {
    let db = data.read_db().await;
    let queries = [
        "SELECT 'product', product_id, name, CAST(stock_qty AS TEXT), CAST(popularity AS TEXT), CAST(version AS TEXT) FROM rm_products",
        "SELECT 'order', order_id, status, payment_status, CAST(total_minor AS TEXT), lines FROM rm_orders",
        "SELECT 'cart', cart_id, lines, COALESCE(checked_out_as, '-'), CAST(version AS TEXT), '' FROM rm_carts",
        "SELECT 'popularity', product_id, CAST(score AS TEXT), '', '', '' FROM rm_popularity",
        "SELECT 'bought', customer_id, product_id, '', '', '' FROM rm_customer_products",
    ];
    let mut rows = Vec::new();
    for query in queries {
        for row in sqlx::query(query)
            .fetch_all(db.pool())
            .await
            .expect("read model")
        {
            let columns: Vec<String> = (0..6)
                .map(|index| row.try_get::<String, _>(index).expect("a text column"))
                .collect();
            rows.push(columns.join("|"));
        }
    }
    rows.sort();
    rows
}

/// Waits until every read model's checkpoint reached the head of the log.
async fn caught_up(data: &ServerData) {
    caught_up_to_head(data, &["products", "orders", "carts", "popularity"], &[]).await;
}

async fn search_total(server: &Api, text: &str) -> u64 {
    let response = server.get(&format!("/search?q={text}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["total"].as_u64().expect("total")
}

async fn rebuild_while_serving(data: ServerData) {
    let server = TestApp::start(&data).await;
    let products = create_lamps(&server).await;
    order_lamps(&server, &products, "tok_visa").await;
    sagas_finished(&data, 6).await;
    caught_up(&data).await;
    let before = dump(&data).await;
    assert!(before.iter().any(|row| row.starts_with("order|")));

    // A bug broke the read models: a wrong name and popularity, a lost order.
    let db = data.read_db().await;
    sqlx::query("UPDATE rm_products SET name = 'broken', popularity = popularity + 1000")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM rm_orders WHERE order_id = (SELECT MIN(order_id) FROM rm_orders)")
        .execute(db.pool())
        .await
        .unwrap();
    assert_ne!(dump(&data).await, before);

    // Rebuild while orders keep coming in.
    let load = order_load(&server, &products, "tok_visa");
    let (code, stdout, stderr) = run(&data, &["replay", "--all"]).await;
    assert_eq!(code, 0, "replay failed: {stderr}");
    for name in ["products", "orders", "carts", "popularity", "search"] {
        assert!(
            stdout.contains(&format!("{name}\trebuilt and in service")),
            "{name} missing from:\n{stdout}"
        );
    }
    assert!(stdout.contains("events/s"), "{stdout}");
    load.await.expect("load");
    sagas_finished(&data, 6 + 30).await;
    caught_up(&data).await;
    let rebuilt = dump(&data).await;
    assert!(
        !rebuilt.iter().any(|row| row.contains("broken")),
        "{rebuilt:?}"
    );
    for row in &before {
        if row.starts_with("order|") {
            let order_id = row.split('|').nth(1).unwrap();
            assert!(
                rebuilt
                    .iter()
                    .any(|rebuilt| rebuilt.starts_with(&format!("order|{order_id}|"))),
                "order {order_id} not rebuilt"
            );
        }
    }
    // Popularity is 10 points per unit of a confirmed order: 6 orders of 3 units, then 30 of 1.
    let total: i64 = rebuilt
        .iter()
        .filter(|row| row.starts_with("popularity|"))
        .map(|row| row.split('|').nth(2).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, (6 * 3 + 30) * 10, "{rebuilt:?}");

    // The serving process switched to the rebuilt search index and keeps indexing into it.
    assert_eq!(search_total(&server, "Lamp0").await, 1);
    let (fresh, position) = server
        .create_product("Zebra", "a striped lamp", 5.0, 3, "lighting")
        .await;
    let found = server.get_at("/search?q=Zebra", position).await;
    let body: Value = found.json().await.expect("json");
    assert_eq!(body["hits"][0]["product_id"], fresh.as_str(), "{body}");

    // A second rebuild on a quiet system gives the same read models: the first one, made while
    // orders were placed and applied, lost and doubled nothing.
    caught_up(&data).await;
    let settled = dump(&data).await;
    let (code, _, stderr) = run(&data, &["replay", "--all"]).await;
    assert_eq!(code, 0, "{stderr}");
    caught_up(&data).await;
    assert_eq!(dump(&data).await, settled);

    let (code, stdout, _) = run(&data, &["projections"]).await;
    assert_eq!(code, 0);
    // The read models, and the checkout saga's intake.
    for name in [
        "products",
        "orders",
        "carts",
        "popularity",
        "search",
        "checkout_saga",
    ] {
        let line = projection_line(&stdout, name);
        assert!(line.contains("caught up"), "{line}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_every_read_model_while_the_server_serves_and_writes_embedded() {
    let data = ServerData::new(Setup::Embedded, "replay_embedded")
        .await
        .unwrap();
    rebuild_while_serving(data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_every_read_model_while_the_server_serves_and_writes_on_postgres() {
    let Some(database) = TestDatabase::create("replay_postgres").await else {
        return;
    };
    let data = ServerData {
        data_dir: tempfile::TempDir::new().unwrap(),
        database: Some(database),
        redis_url: None,
    };
    rebuild_while_serving(data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_changes_nothing_in_service_and_resumes() {
    let data = ServerData::new(Setup::Embedded, "replay_interrupted")
        .await
        .unwrap();
    let (code, _, stderr) = run(&data, &["generate", "--events", "100000"]).await;
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, _) = run(&data, &["projections"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("not started"), "{stdout}");

    // Stop the rebuild at its first progress line: half-way through.
    interrupt_replay(&data).await;

    // Nothing half-built is in service: the read models are as they were (never built).
    assert!(dump(&data).await.is_empty());
    let (_, stdout, _) = run(&data, &["projections"]).await;
    assert!(stdout.contains("rebuild unfinished"), "{stdout}");

    let (code, stdout, stderr) = run(&data, &["replay", "--all"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming an interrupted rebuild"),
        "{stderr}"
    );
    assert!(
        stdout.contains("products\trebuilt and in service"),
        "{stdout}"
    );
    let resumed = dump(&data).await;
    assert!(resumed.iter().any(|row| row.starts_with("order|")));

    // The same as a rebuild from scratch.
    let (code, _, stderr) = run(&data, &["replay", "--all", "--restart"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(dump(&data).await, resumed);
    let (_, stdout, _) = run(&data, &["projections"]).await;
    assert!(!stdout.contains("unfinished"), "{stdout}");
    assert!(
        stdout.contains("search") && stdout.contains("caught up"),
        "{stdout}"
    );

    // Discarding with nothing unfinished says so.
    let (code, stdout, _) = run(&data, &["replay", "--discard"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("no unfinished rebuild"), "{stdout}");
}

/// Answers the server cached before a rebuild are not served after it: a rebuild that drops
/// history (`--from`), then a full one, each seen at once by the product and search answers
/// that were cached, in process and in Redis.
async fn cached_answers_do_not_outlive_a_rebuild(data: ServerData) {
    let server = TestApp::start(&data).await;
    let word = format!("zq{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut products = Vec::new();
    let mut positions = Vec::new();
    for n in 0..3 {
        let (product_id, position) = server
            .create_product(&format!("{word} lamp {n}"), "", 10.0, 5, "Lamps")
            .await;
        products.push(product_id);
        positions.push(position);
    }
    let last = positions[2];
    // (Carts and popularity may live in Redis: the SQL ones are what this test reads.)
    caught_up_to_head(&data, &["products", "orders"], &[]).await;
    let search = format!("/search?q={word}&limit=1");
    let first_product = format!("/products/{}", products[0]);
    for path in [&search, &first_product] {
        server.get_at(path, last).await;
        let again = server.get(path).await;
        assert_eq!(crate::common::cache_header(&again), "hit", "{path}");
    }
    let total = |body: Value| body["total"].as_u64().expect("total");
    assert_eq!(total(server.get(&search).await.json().await.unwrap()), 3);

    // Rebuilt from the events after the first product's: it is gone from the read models in
    // service.
    let (code, _, stderr) = run(
        &data,
        &[
            "replay",
            "--all",
            "--from",
            &positions[0].to_string(),
            "--drop-earlier-events",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("warning: --from"), "{stderr}");
    let dropped = crate::common::eventually(std::time::Duration::from_secs(2), || async {
        let searched: Value = server.get(&search).await.json().await.ok()?;
        let product = server.get(&first_product).await;
        (total(searched) < 3 && product.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    if dropped.is_none() {
        let searched: Value = server.get(&search).await.json().await.unwrap();
        let product = server.get(&first_product).await;
        let cache = crate::common::cache_header(&product);
        let (_, listing, _) = run(&data, &["projections"]).await;
        panic!(
            "cached answers outlived the rebuild: search {searched}, product {} ({cache}), {stderr}\n{listing}",
            product.status()
        );
    }

    // The whole log again: everything is back, at once.
    let (code, _, stderr) = run(&data, &["replay", "--all"]).await;
    assert_eq!(code, 0, "{stderr}");
    let restored = crate::common::eventually(std::time::Duration::from_secs(2), || async {
        let searched: Value = server.get(&search).await.json().await.ok()?;
        let product = server.get(&first_product).await;
        (total(searched) == 3 && product.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(
        restored.is_some(),
        "cached answers outlived the second rebuild"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_do_not_outlive_a_rebuild_embedded() {
    let data = ServerData::new(Setup::Embedded, "replay_cache_embedded")
        .await
        .unwrap();
    cached_answers_do_not_outlive_a_rebuild(data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_do_not_outlive_a_rebuild_on_postgres_with_redis() {
    let Some(data) = ServerData::new(Setup::PostgresRedis, "replay_cache_postgres").await else {
        return;
    };
    cached_answers_do_not_outlive_a_rebuild(data).await;
}
