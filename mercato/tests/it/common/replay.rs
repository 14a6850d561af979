//! What the `mercato replay` tests share: the binary run beside a serving platform as an operator
//! runs it, the shop they rebuild (four lamps and their orders), and waiting for the read models
//! to catch up.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::task::JoinHandle;

use super::{Api, ServerData, eventually, mercato_on, place_order};

/// The binary on `data`'s store (and its Redis, when it has one), as an operator runs it beside
/// the server.
pub fn mercato(data: &ServerData, args: &[&str]) -> Command {
    mercato_on(data, args)
}

/// Runs `command` to its end: its exit code (-1 when a signal ended it), stdout and stderr.
pub async fn output(command: &mut Command) -> (i32, String, String) {
    let output = command.output().await.expect("mercato runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the binary on `data` to its end: its exit code, stdout and stderr.
pub async fn run(data: &ServerData, args: &[&str]) -> (i32, String, String) {
    output(&mut mercato(data, args)).await
}

/// Starts `mercato replay --all` on `data` and kills it half-way through: the debug build's
/// `MERCATO_TEST_REPLAY_STALL_AFTER` stops the rebuild after 1,000 events at a progress line,
/// before anything could be swapped in. Returns once the process is gone.
pub async fn interrupt_replay(data: &ServerData) {
    let mut child = mercato(data, &["replay", "--all"])
        .env("MERCATO_TEST_REPLAY_STALL_AFTER", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("a progress line");
    assert!(line.starts_with("replay: "), "{line}");
    assert!(
        !line.contains("(100%)"),
        "the rebuild was not stopped half-way: {line}"
    );
    // Kills it and waits for it to end.
    child.kill().await.unwrap();
}

/// The line of `mercato projections`' output (`stdout`) about the read model `name`.
pub fn projection_line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.starts_with(name))
        .unwrap_or_else(|| panic!("{name} missing from:\n{stdout}"))
}

/// The prefix of the deployment's Redis keys: a hash (FNV-1a) of the store's URL, as
/// `mercato serve` derives it.
pub fn prefix(data: &ServerData) -> String {
    let hash = data
        .store_url()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("mercato:{hash:016x}:")
}

pub async fn redis(data: &ServerData) -> redis::aio::MultiplexedConnection {
    redis::Client::open(data.redis_url.as_deref().expect("a Redis URL"))
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

/// The stored checkpoint of a read model in Redis.
pub async fn redis_checkpoint(data: &ServerData, name: &str) -> u64 {
    let mut connection = redis(data).await;
    let value: Option<String> = redis::cmd("GET")
        .arg(format!("{}checkpoint:{name}", prefix(data)))
        .query_async(&mut connection)
        .await
        .expect("GET");
    value.and_then(|value| value.parse().ok()).unwrap_or(0)
}

/// Waits until the checkpoints of the read models named in `in_sql` (in the read-model database)
/// and in `in_redis` (in the deployment's Redis) reached the head of the log.
pub async fn caught_up_to_head(data: &ServerData, in_sql: &[&str], in_redis: &[&str]) {
    let store = data.store().await;
    let db = data.read_db().await;
    let reached = eventually(Duration::from_secs(30), || {
        let (store, db) = (store.clone(), db.clone());
        async move {
            let head = store.head_position().await.ok()?;
            for name in in_sql {
                if db.checkpoint(name).await.ok()? < head {
                    return None;
                }
            }
            for name in in_redis {
                if redis_checkpoint(data, name).await < head {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    assert!(reached.is_some(), "the read models did not catch up");
}

/// Waits until the checkout sagas of `n_orders` orders all finished: a confirmed order's
/// popularity comes from its committed stock, which the saga appends after the confirmation.
pub async fn sagas_finished(data: &ServerData, n_orders: i64) {
    let db = data.read_db().await;
    let finished = eventually(Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let counts = sagas::state::count_by_state(&db).await.ok()?;
            let done: i64 = counts
                .iter()
                .filter(|(state, _)| state == sagas::state::DONE)
                .map(|(_, count)| count)
                .sum();
            (done == n_orders).then_some(())
        }
    })
    .await;
    assert!(
        finished.is_some(),
        "the sagas of {n_orders} orders did not finish"
    );
}

/// Creates four lamps (`Lamp0` to `Lamp3`) and answers their ids.
pub async fn create_lamps(server: &Api) -> Vec<String> {
    let mut products = Vec::new();
    for index in 0..4 {
        let (id, _) = server
            .create_product(
                &format!("Lamp{index}"),
                "a lamp",
                10.0 + f64::from(index),
                500,
                "lighting",
            )
            .await;
        products.push(id);
    }
    products
}

/// Six orders of three units (two of one lamp, one of the next) by three customers, paid with
/// `token`.
pub async fn order_lamps(server: &Api, products: &[String], token: &str) {
    for index in 0..6 {
        place_order(
            server,
            &format!("customer-{}", index % 3),
            &[(&products[index % 4], 2), (&products[(index + 1) % 4], 1)],
            token,
        )
        .await;
    }
}

/// The `index`th order of a load placed while a rebuild runs: one unit of a lamp, by one of five
/// late customers, paid with `token`.
pub async fn late_order(server: &Api, products: &[String], index: usize, token: &str) {
    let response = server
        .post(
            "/orders",
            json!({
                "customer_id": format!("late-{}", index % 5),
                "lines": [{"product_id": products[index % 4], "quantity": 1}],
                "payment_token": token,
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// Thirty late orders (see `late_order`), one every 15 ms, placed while the test goes on.
pub fn order_load(server: &Api, products: &[String], token: &'static str) -> JoinHandle<()> {
    let products = products.to_vec();
    let server = server.clone();
    tokio::spawn(async move {
        for index in 0..30 {
            late_order(&server, &products, index, token).await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}
