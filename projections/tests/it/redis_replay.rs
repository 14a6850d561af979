//! Rebuilding carts and popularity kept in Redis beside the ones in service
//! (`RedisModels::start_replay`, `swap_replay`, `discard_replays`): the swap puts exactly the
//! rebuilt keys in service, moves the checkpoint of every feed, refuses while the read model in
//! service is ahead, and an unfinished rebuild can be started over or dropped. Skipped without
//! Redis (failing instead with `MERCATO_REQUIRE_SERVICES=1`).

use std::collections::BTreeMap;

use eventstore::RecordedEvent;
use projections::Projection;
use projections::rebuild::{ReplayRun, Swap};
use projections::redis_models::{RedisCartsProjection, RedisModels, RedisPopularityProjection};
use projections::runner::{Feed, apply_new};
use redis::aio::ConnectionManager;

use crate::support::history;

use history::{Shape, shop_history};

/// Fresh read models under a prefix of their own (and the connection, to look at the keys).
async fn models(test_name: &str) -> Option<(RedisModels, ConnectionManager)> {
    let url = eventstore::testing::redis_url(test_name).await?;
    let client = redis::Client::open(url).unwrap();
    let connection = ConnectionManager::new(client).await.unwrap();
    let prefix = format!("mercato-test:{}:", uuid::Uuid::new_v4().simple());
    Some((RedisModels::new(connection.clone(), &prefix), connection))
}

async fn keys(connection: &mut ConnectionManager, start: &str) -> Vec<String> {
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
            .unwrap();
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

async fn drop_all(connection: &mut ConnectionManager, prefix: &str) {
    for chunk in keys(connection, prefix).await.chunks(500) {
        redis::cmd("UNLINK")
            .arg(chunk)
            .query_async::<()>(connection)
            .await
            .unwrap();
    }
}

/// The read models' keys under `prefix` (carts, popularity, what customers ordered; not the
/// bookkeeping), by name after the prefix, each value as text.
async fn dump(connection: &mut ConnectionManager, prefix: &str) -> BTreeMap<String, String> {
    let mut models = BTreeMap::new();
    for key in keys(connection, prefix).await {
        let name = key[prefix.len()..].to_owned();
        let value = if name.starts_with("cart:") {
            let json: String = redis::cmd("GET")
                .arg(&key)
                .query_async(connection)
                .await
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&json)
                .unwrap()
                .to_string()
        } else if name == "popularity" {
            let scores: Vec<(String, String)> = redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(connection)
                .await
                .unwrap();
            format!("{scores:?}")
        } else if name.starts_with("ordered:") {
            let mut members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(connection)
                .await
                .unwrap();
            members.sort();
            format!("{members:?}")
        } else {
            continue;
        };
        models.insert(name, value);
    }
    models
}

async fn get(connection: &mut ConnectionManager, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(connection)
        .await
        .unwrap()
}

async fn set(connection: &mut ConnectionManager, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(connection)
        .await
        .unwrap();
}

/// Feeds `events` to `projection` from the log in batches of `size`, as the runner would.
async fn feed(projection: &dyn Projection, events: &[RecordedEvent], size: usize) {
    for batch in events.chunks(size) {
        apply_new(projection, &Feed::Log, batch).await.unwrap();
    }
}

fn run(projection: &str, from: u64) -> ReplayRun {
    ReplayRun {
        projection: projection.to_owned(),
        from_position: from,
        generation: None,
        started_at: "2026-01-01T00:00:00Z".to_owned(),
    }
}

fn history() -> Vec<RecordedEvent> {
    shop_history(
        Shape {
            products: 8,
            customers: 30,
            concurrent_sessions: 6,
            seed: 11,
        },
        700,
    )
}

#[tokio::test]
async fn a_rebuild_replaces_broken_keys_and_moves_the_checkpoint_of_every_feed() {
    let Some((live, mut connection)) = models("redis_replay_swap").await else {
        return;
    };
    let prefix = live.prefix().to_owned();
    let history = history();
    let (early, rest) = history.split_at(400);
    let (late, after) = rest.split_at(200);
    let at = |events: &[RecordedEvent]| events.last().unwrap().position;

    // What the read models hold when built without a fault: under a prefix of their own.
    let reference = RedisModels::new(connection.clone(), &format!("{prefix}reference:"));
    let reference_prefix = reference.prefix().to_owned();
    feed(&RedisCartsProjection::new(reference.clone()), &history, 97).await;
    feed(
        &RedisPopularityProjection::new(reference.clone(), None),
        &history,
        97,
    )
    .await;

    // The read models in service follow the log, then a bug breaks them.
    let carts = RedisCartsProjection::new(live.clone());
    let popularity = RedisPopularityProjection::new(live.clone(), None);
    feed(&carts, early, 50).await;
    feed(&popularity, early, 50).await;
    let before = dump(&mut connection, &prefix).await;
    let (broken_cart, _) = before
        .iter()
        .find(|(name, _)| name.starts_with("cart:"))
        .expect("a cart");
    let broken_cart = broken_cart.clone();
    set(
        &mut connection,
        &format!("{prefix}{broken_cart}"),
        r#"{"lines":{},"checked_out_as":"nonsense","version":1}"#,
    )
    .await;
    set(
        &mut connection,
        &format!("{prefix}cart:ghost"),
        r#"{"lines":{},"checked_out_as":null,"version":1}"#,
    )
    .await;
    redis::pipe()
        .cmd("ZINCRBY")
        .arg(format!("{prefix}popularity"))
        .arg(1000)
        .arg("ghost-product")
        .ignore()
        .cmd("SADD")
        .arg(format!("{prefix}ordered:ghost-customer"))
        .arg("ghost-product")
        .ignore()
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    // Checkpoints of Kafka partitions written before the feeds were recorded, and of replayed
    // dead letters (not a feed a swap moves).
    set(
        &mut connection,
        &format!("{prefix}checkpoint:carts@cart.events/0"),
        "120",
    )
    .await;
    set(
        &mut connection,
        &format!("{prefix}checkpoint:carts@dlq"),
        "77",
    )
    .await;

    // The rebuild reads the log up to its head meanwhile, while the read models in service go
    // on (still behind it).
    for projection in ["carts", "popularity"] {
        live.start_replay(&run(projection, 0)).await.unwrap();
    }
    let shadow = live.shadow();
    feed(
        &RedisCartsProjection::new(shadow.clone()),
        &history[..600],
        1000,
    )
    .await;
    feed(
        &RedisPopularityProjection::new(shadow.clone(), None),
        &history[..600],
        1000,
    )
    .await;
    let runs = live.replay_runs().await.unwrap();
    assert_eq!(
        runs.iter()
            .map(|(run, at)| (run.projection.as_str(), *at))
            .collect::<Vec<_>>(),
        [("carts", at(late)), ("popularity", at(late))]
    );
    feed(&carts, &late[..100], 50).await;
    feed(&popularity, &late[..100], 50).await;
    assert_eq!(carts_checkpoint(&live).await, at(&late[..100]));

    for projection in ["carts", "popularity"] {
        assert_eq!(
            live.swap_replay(projection, at(late)).await.unwrap(),
            Swap::Swapped
        );
    }
    // The read models in service now hold what the log up to the rebuilt checkpoint makes, and
    // nothing a bug put there; the serving projections read on from there.
    for batch in [&late[100..], after] {
        apply_new(&carts, &Feed::Log, batch).await.unwrap();
        apply_new(&popularity, &Feed::Log, batch).await.unwrap();
    }
    let rebuilt = dump(&mut connection, &prefix).await;
    let expected = dump(&mut connection, &reference_prefix).await;
    assert_eq!(rebuilt, expected);
    assert!(!rebuilt.keys().any(|name| name.contains("ghost")));

    // Every feed's checkpoint moved with the swap (then the log's went on), but not the dead
    // letters'; the replacement is counted; nothing of the rebuild is left.
    let checkpoint = |name: &str| format!("{prefix}checkpoint:{name}");
    assert_eq!(
        get(&mut connection, &checkpoint("carts@cart.events/0")).await,
        Some(at(late).to_string())
    );
    assert_eq!(
        get(&mut connection, &checkpoint("carts@dlq"))
            .await
            .as_deref(),
        Some("77")
    );
    assert_eq!(
        get(&mut connection, &checkpoint("carts")).await,
        Some(at(after).to_string())
    );
    assert_eq!(
        get(&mut connection, &format!("{prefix}replaced:carts"))
            .await
            .as_deref(),
        Some("1")
    );
    assert!(
        keys(&mut connection, &format!("{prefix}replay:"))
            .await
            .is_empty()
    );
    assert!(live.replay_runs().await.unwrap().is_empty());
    drop_all(&mut connection, &prefix).await;
}

#[tokio::test]
async fn a_swap_waits_while_any_feed_of_the_read_model_in_service_is_ahead() {
    let Some((live, mut connection)) = models("redis_replay_behind").await else {
        return;
    };
    let prefix = live.prefix().to_owned();
    let history = history();
    let at = |events: &[RecordedEvent]| events.last().unwrap().position;
    let carts = RedisCartsProjection::new(live.clone());
    feed(&carts, &history[..400], 100).await;
    live.start_replay(&run("carts", 0)).await.unwrap();
    let shadow = RedisCartsProjection::new(live.shadow());
    feed(&shadow, &history[..300], 1000).await;
    let in_service = dump(&mut connection, &prefix).await;

    assert_eq!(
        live.swap_replay("carts", at(&history[..300]))
            .await
            .unwrap(),
        Swap::Behind(at(&history[..400]))
    );
    // Nothing changed, on either side.
    assert_eq!(dump(&mut connection, &prefix).await, in_service);
    assert_eq!(
        shadow.checkpoint(&Feed::Log).await.unwrap(),
        at(&history[..300])
    );
    assert!(live.replay_run("carts").await.unwrap().is_some());

    // A Kafka partition's checkpoint ahead holds the swap back too; positions are compared
    // exactly, beyond what a double holds (2^53 + 1 against 2^53).
    set(
        &mut connection,
        &format!("{prefix}replay:checkpoint:carts"),
        "9007199254740992",
    )
    .await;
    set(
        &mut connection,
        &format!("{prefix}checkpoint:carts@cart.events/3"),
        "9007199254740993",
    )
    .await;
    assert_eq!(
        live.swap_replay("carts", 9_007_199_254_740_992)
            .await
            .unwrap(),
        Swap::Behind(9_007_199_254_740_993)
    );
    // A rebuild that moved on since its checkpoint was read is not swapped in.
    let error = live
        .swap_replay("carts", at(&history[..300]))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("another replay"), "{error}");
    assert_eq!(dump(&mut connection, &prefix).await, in_service);
    drop_all(&mut connection, &prefix).await;
}

#[tokio::test]
async fn a_rebuild_started_over_or_dropped_leaves_nothing_behind() {
    let Some((live, mut connection)) = models("redis_replay_restart").await else {
        return;
    };
    let prefix = live.prefix().to_owned();
    let history = history();
    let popularity = RedisPopularityProjection::new(live.clone(), None);
    feed(&popularity, &history[..200], 100).await;
    let in_service = dump(&mut connection, &prefix).await;
    assert!(!in_service.is_empty());

    live.start_replay(&run("popularity", 0)).await.unwrap();
    let shadow = RedisPopularityProjection::new(live.shadow(), None);
    feed(&shadow, &history[..500], 1000).await;
    assert!(
        !dump(&mut connection, &format!("{prefix}replay:"))
            .await
            .is_empty()
    );

    // Started over from a position: the shadow is empty there.
    live.start_replay(&run("popularity", 250)).await.unwrap();
    assert!(
        dump(&mut connection, &format!("{prefix}replay:"))
            .await
            .is_empty()
    );
    assert_eq!(shadow.checkpoint(&Feed::Log).await.unwrap(), 250);
    let recorded = live.replay_run("popularity").await.unwrap().unwrap();
    assert_eq!(recorded.from_position, 250);
    assert_eq!(live.replay_run("carts").await.unwrap(), None);

    feed(&shadow, &history, 1000).await;
    assert!(live.discard_replays().await.unwrap());
    assert!(
        keys(&mut connection, &format!("{prefix}replay:"))
            .await
            .is_empty()
    );
    assert_eq!(live.replay_run("popularity").await.unwrap(), None);
    assert!(!live.discard_replays().await.unwrap());
    // The read model in service never changed.
    assert_eq!(dump(&mut connection, &prefix).await, in_service);
    assert!(live.start_replay(&run("orders", 0)).await.is_err());
    drop_all(&mut connection, &prefix).await;
}

/// The stored log checkpoint of carts in `models`.
async fn carts_checkpoint(models: &RedisModels) -> u64 {
    RedisCartsProjection::new(models.clone())
        .checkpoint(&Feed::Log)
        .await
        .unwrap()
}
