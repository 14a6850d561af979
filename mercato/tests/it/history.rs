//! The event history for auditors: `mercato events stream|tail|correlated` in every format,
//! `mercato audit state`, and the correlation filter of the HTTP feeds, against a server whose
//! checkout saga ran (embedded, and on PostgreSQL with Redis).

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::common::{Api, ServerData, Setup, TestApp, event_position, eventually, mercato_async};

/// The binary on the server's data (its data directory, or its `DATABASE_URL`).
fn mercato(data: &ServerData, args: &[&str]) -> tokio::process::Command {
    let mut command = mercato_async();
    command
        .args(args)
        .arg("--data-dir")
        .arg(data.data_dir.path())
        .env("RUST_LOG", "warn");
    if let Some(database) = &data.database {
        command.env("DATABASE_URL", database.url());
    }
    command
}

async fn run(data: &ServerData, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(60), mercato(data, args).output())
        .await
        .unwrap_or_else(|_| panic!("mercato {args:?} did not finish within 60 s"))
        .expect("the mercato binary runs")
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed and answers its stdout.
async fn ok(data: &ServerData, args: &[&str]) -> String {
    let output = run(data, args).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "mercato {args:?}: {}",
        stderr_of(&output)
    );
    stdout_of(&output)
}

/// Each line of a JSON-lines output, parsed.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: not JSON: {line}"))
        })
        .collect()
}

/// Checks one structured-mode CloudEvents 1.0 JSON object against the specification's rules:
/// the required attributes, their types, attribute names, and mercato's extensions.
fn check_cloud_event(event: &Value) -> Result<(), String> {
    let object = event.as_object().ok_or("not a JSON object")?;
    let text = |name: &str| -> Result<&str, String> {
        object
            .get(name)
            .ok_or(format!("required attribute `{name}` missing"))?
            .as_str()
            .ok_or(format!("`{name}` is not a string"))
    };
    if text("specversion")? != "1.0" {
        return Err("specversion is not 1.0".into());
    }
    for required in ["id", "source", "type"] {
        if text(required)?.is_empty() {
            return Err(format!("`{required}` is empty"));
        }
    }
    // source is a URI-reference: no spaces or characters outside RFC 3986.
    let source = text("source")?;
    if !source
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&byte))
    {
        return Err(format!("source {source:?} is not a URI-reference"));
    }
    if let Some(time) = object.get("time") {
        let time = time.as_str().ok_or("time is not a string")?;
        chrono::DateTime::parse_from_rfc3339(time)
            .map_err(|error| format!("time {time:?} is not RFC 3339: {error}"))?;
    }
    if text("datacontenttype")? != "application/json" {
        return Err("datacontenttype is not application/json".into());
    }
    if !object.get("data").is_some_and(Value::is_object) {
        return Err("data is not the payload object".into());
    }
    if object.contains_key("data_base64") {
        return Err("data and data_base64 both present".into());
    }
    let context = [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
    ];
    for (name, value) in object {
        if name == "data" {
            continue;
        }
        if name.is_empty()
            || name.len() > 20
            || !name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        {
            return Err(format!("attribute name {name:?} is not ^[a-z0-9]{{1,20}}$"));
        }
        if !context.contains(&name.as_str()) && !value.is_string() {
            return Err(format!("extension `{name}` is not a string: {value}"));
        }
        if value.is_null() {
            return Err(format!("attribute `{name}` is null"));
        }
    }
    for extension in [
        "position",
        "streamtype",
        "streamid",
        "streamversion",
        "schemaversion",
        "correlationid",
        "causationid",
        "actor",
    ] {
        text(extension)?;
    }
    Ok(())
}

/// Places an order with a known correlation id; answers the order id.
async fn place_order(server: &Api, correlation_id: &str, product_id: &str, qty: u32) -> String {
    let response = server
        .request(reqwest::Method::POST, "/orders")
        .header("x-correlation-id", correlation_id)
        .json(&json!({
            "customer_id": "auditor-1",
            "lines": [{ "product_id": product_id, "quantity": qty }],
            "payment_token": "tok_visa",
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["x-correlation-id"], correlation_id);
    let body: Value = response.json().await.expect("json");
    body["order_id"].as_str().expect("order_id").to_owned()
}

async fn feed(server: &Api, path: &str) -> Value {
    let response = server.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.expect("json")
}

async fn history(setup: Setup, test_name: &str) {
    let Some(data) = ServerData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let (product_id, created_at) = server
        .create_product("Audit lamp", "Lights up ledgers", 12.5, 10, "Lamps")
        .await;
    let adjusted = server
        .post(
            &format!("/products/{product_id}/stock"),
            json!({ "delta": 5 }),
        )
        .await;
    assert_eq!(adjusted.status(), StatusCode::OK);
    let adjusted_at = event_position(&adjusted);
    assert!(adjusted_at > created_at);

    let correlation_id = format!("audit-{}", uuid::Uuid::new_v4().simple());
    let order_id = place_order(&server, &correlation_id, &product_id, 2).await;
    // The saga runs under the request's correlation id: wait for its last step (the sale of the
    // reserved stock, after the order's confirmation).
    let by_correlation = format!("/events?after=0&limit=1000&correlation_id={correlation_id}");
    let (http_events, _) = eventually(Duration::from_secs(30), || async {
        let body = feed(&server, &by_correlation).await;
        let events = body["events"].as_array()?.clone();
        events
            .iter()
            .any(|event| event["event_type"] == "StockCommitted")
            .then_some(events)
    })
    .await
    .expect("the checkout saga did not finish within 30 s");
    assert!(
        http_events
            .iter()
            .any(|event| event["event_type"] == "OrderConfirmed")
    );

    // HTTP: only that correlation's events, across the order, payment and product streams.
    let all = feed(&server, "/events?after=0&limit=1000").await;
    let all = all["events"].as_array().expect("events").clone();
    assert!(all.len() < 1000, "the whole log is on one page");
    let expected: Vec<&Value> = all
        .iter()
        .filter(|event| event["metadata"]["correlation_id"] == correlation_id.as_str())
        .collect();
    assert!(all.len() > expected.len(), "other events exist in the log");
    assert_eq!(
        http_events.iter().collect::<Vec<_>>(),
        expected,
        "the correlation filter answers exactly that correlation's events"
    );
    let streams: BTreeSet<String> = http_events
        .iter()
        .map(|event| format!("{}/{}", event["stream_type"], event["stream_id"]).replace('"', ""))
        .collect();
    for stream in [
        format!("order/{order_id}"),
        format!("payment/{order_id}"),
        format!("product/{product_id}"),
    ] {
        assert!(
            streams.contains(&stream),
            "{stream} missing from {streams:?}"
        );
    }
    // Paging with `after` walks the same events two at a time.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = feed(
            &server,
            &format!("/events?after={after}&limit=2&correlation_id={correlation_id}"),
        )
        .await;
        let events = page["events"].as_array().expect("events").clone();
        assert!(events.len() <= 2);
        after = page["next_after"].as_u64().expect("next_after");
        if events.is_empty() {
            break;
        }
        paged.extend(events);
    }
    assert_eq!(paged, http_events);
    // The stream route filters too: the product's saga events, not its creation.
    let product_stream = feed(
        &server,
        &format!("/streams/product/{product_id}/events?correlation_id={correlation_id}"),
    )
    .await;
    let product_events = product_stream["events"].as_array().expect("events");
    assert!(!product_events.is_empty(), "{product_stream}");
    assert!(
        product_events
            .iter()
            .all(
                |event| event["metadata"]["correlation_id"] == correlation_id.as_str()
                    && event["event_type"] != "ProductCreated"
            ),
        "{product_stream}"
    );
    let whole_stream = feed(&server, &format!("/streams/product/{product_id}/events")).await;
    assert!(whole_stream["events"].as_array().expect("events").len() > product_events.len());
    // Unknown or invalid parameters are 4xx problems that say what to fix.
    for (path, status) in [
        ("/events?after=0&correlation=x".to_owned(), 400),
        ("/events?correlation_id=".to_owned(), 422),
        (format!("/events?correlation_id={}", "x".repeat(200)), 422),
        (format!("/streams/product/{product_id}/events?after=1"), 400),
        ("/streams/widget/1/events".to_owned(), 404),
    ] {
        let response = server.get(&path).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        let problem: Value = response.json().await.expect("problem json");
        let detail = problem["detail"].as_str().unwrap_or("");
        assert!(!detail.is_empty(), "{path}: {problem}");
        if status == 400 {
            assert!(detail.contains("takes"), "{path}: {detail}");
        }
    }

    // `events correlated`: the same events, in every format.
    let json_out = ok(
        &data,
        &["events", "correlated", &correlation_id, "--format", "json"],
    )
    .await;
    let cli_events = json_lines(&json_out);
    assert_eq!(
        cli_events, http_events,
        "json lines are the feed's envelopes"
    );
    let cloud_out = ok(
        &data,
        &[
            "events",
            "correlated",
            &correlation_id,
            "--format",
            "cloudevents",
        ],
    )
    .await;
    let cloud_events = json_lines(&cloud_out);
    assert_eq!(cloud_events.len(), http_events.len());
    for (cloud, envelope) in cloud_events.iter().zip(&http_events) {
        check_cloud_event(cloud).unwrap_or_else(|error| panic!("{error}: {cloud}"));
        assert_eq!(cloud["id"], envelope["event_id"]);
        assert_eq!(cloud["data"], envelope["payload"]);
        assert_eq!(cloud["correlationid"], correlation_id.as_str());
        assert_eq!(
            cloud["position"],
            envelope["position"].as_u64().expect("position").to_string()
        );
        assert_eq!(
            cloud["subject"],
            format!("{}/{}", envelope["stream_type"], envelope["stream_id"]).replace('"', "")
        );
        assert!(
            cloud["type"]
                .as_str()
                .is_some_and(|kind| kind.ends_with(envelope["event_type"].as_str().unwrap())),
            "{cloud}"
        );
    }
    let table = ok(&data, &["events", "correlated", &correlation_id]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), http_events.len() + 1, "{table}");
    assert!(lines[0].contains("POSITION") && lines[0].contains("EVENT_TYPE"));
    let type_column = lines[0].find("EVENT_TYPE").expect("column");
    for (line, event) in lines[1..].iter().zip(&http_events) {
        let event_type = event["event_type"].as_str().unwrap();
        assert_eq!(
            line.get(type_column..type_column + event_type.len()),
            Some(event_type),
            "{table}"
        );
        assert!(line.ends_with(&correlation_id), "{line}");
        assert!(
            line.trim_start()
                .starts_with(&event["position"].as_u64().unwrap().to_string()),
            "{line}"
        );
    }
    let limited = ok(
        &data,
        &[
            "events",
            "correlated",
            &correlation_id,
            "--format",
            "json",
            "--limit",
            "2",
        ],
    )
    .await;
    assert_eq!(json_lines(&limited), http_events[..2].to_vec());

    // `events stream`: versions 1..n in order.
    let order_out = ok(
        &data,
        &[
            "events",
            "stream",
            &format!("order/{order_id}"),
            "--format",
            "json",
        ],
    )
    .await;
    let order_events = json_lines(&order_out);
    assert!(order_events.len() >= 2, "{order_out}");
    for (index, event) in order_events.iter().enumerate() {
        assert_eq!(event["stream_version"], json!(index + 1), "{order_out}");
        assert_eq!(event["stream_id"], order_id.as_str());
    }
    assert_eq!(order_events[0]["event_type"], "OrderCreated");
    assert_eq!(order_events.last().unwrap()["event_type"], "OrderConfirmed");

    // `events tail --from P` starts at P (included).
    let from = all[2]["position"].as_u64().expect("position");
    let tail = json_lines(
        &ok(
            &data,
            &[
                "events",
                "tail",
                "--from",
                &from.to_string(),
                "--format",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(tail.first(), Some(&all[2]), "tail --from {from}");
    assert!(tail.len() >= all.len() - 2);
    assert_eq!(tail[..all.len() - 2], all[2..]);
    let whole = json_lines(&ok(&data, &["events", "tail", "--format", "json"]).await);
    assert_eq!(whole.first(), all.first());
    assert!(whole.len() >= all.len());

    // Bad input is a usage error naming what to fix; an empty stream or correlation exits 1.
    for (args, needle) in [
        (vec!["events", "stream", "order"], "TYPE/ID"),
        (vec!["events", "stream", "widget/1"], "unknown stream type"),
        (vec!["events", "stream", "order/12"], "UUID"),
        (
            vec![
                "audit",
                "state",
                &format!("product/{product_id}"),
                "--at",
                "yesterday",
            ],
            "RFC 3339",
        ),
        (
            vec![
                "audit",
                "state",
                "product_views/0b9f8c1e-5d1a-4d8e-9a57-3f0f7c0e2a11",
                "--at",
                "1",
            ],
            "no aggregate",
        ),
    ] {
        let output = run(&data, &args).await;
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle) && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty());
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    for args in [
        vec!["events", "stream", &format!("order/{unknown}")],
        vec!["events", "correlated", "nobody-asked"],
    ] {
        let output = run(&data, &args).await;
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: no events") || stderr.contains("has no events"),
            "{stderr}"
        );
    }

    // `audit state`: the product before and after the adjustment, and before it existed.
    let product_stream = format!("product/{product_id}");
    let state_at = |at: String| {
        let data = &data;
        let product_stream = product_stream.clone();
        async move {
            let out = ok(data, &["audit", "state", &product_stream, "--at", &at]).await;
            serde_json::from_str::<Value>(&out).unwrap_or_else(|error| panic!("{error}: {out}"))
        }
    };
    let before = state_at(created_at.to_string()).await;
    assert_eq!(before["state"]["stock_qty"], 10, "{before}");
    // Money in minor units says so in its name, as in the stored events.
    assert!(before["state"]["price_minor"].is_u64(), "{before}");
    assert!(before["state"].get("price").is_none(), "{before}");
    assert_eq!(before["position"], created_at, "{before}");
    let after_adjustment = state_at(adjusted_at.to_string()).await;
    assert_eq!(
        after_adjustment["state"]["stock_qty"], 15,
        "{after_adjustment}"
    );
    assert_eq!(after_adjustment["position"], adjusted_at);
    assert!(after_adjustment["version"].as_u64() > before["version"].as_u64());
    let now = state_at(u64::MAX.to_string()).await;
    assert_eq!(now["state"]["stock_qty"], 13, "reserved 2 of 15: {now}");
    assert_eq!(now["version"], now["current_version"]);
    // By time: the creation event's own time shows the created product.
    let created_time = all
        .iter()
        .find(|event| event["position"] == created_at)
        .and_then(|event| event["occurred_at"].as_str())
        .expect("the creation's last event")
        .to_owned();
    let by_time = state_at(created_time).await;
    assert_eq!(by_time["state"]["stock_qty"], 10, "{by_time}");
    let order_state = ok(
        &data,
        &[
            "audit",
            "state",
            &format!("order/{order_id}"),
            "--at",
            &u64::MAX.to_string(),
        ],
    )
    .await;
    assert!(order_state.contains("\"state\""), "{order_state}");
    let first_product_position = all
        .iter()
        .find(|event| event["stream_id"] == product_id.as_str())
        .and_then(|event| event["position"].as_u64())
        .expect("the product's first event");
    let too_early = run(
        &data,
        &[
            "audit",
            "state",
            &product_stream,
            "--at",
            &(first_product_position - 1).to_string(),
        ],
    )
    .await;
    let stderr = stderr_of(&too_early);
    assert_eq!(too_early.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not exist yet"), "{stderr}");
    assert!(too_early.stdout.is_empty());

    // A reader that goes away is a normal end: exit 0, nothing on stderr.
    let mut follower = mercato(&data, &["events", "tail", "--follow", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = follower.stdout.take().expect("stdout");
    let mut stderr = follower.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the first line within 30 s")
        .expect("read")
        .expect("a line");
    assert_eq!(
        serde_json::from_str::<Value>(&first).ok().as_ref(),
        all.first()
    );
    drop(lines);
    // Something new for the follower to write into the closed pipe.
    server
        .create_product("Late lamp", "After the reader left", 1.0, 1, "Lamps")
        .await;
    let status = tokio::time::timeout(Duration::from_secs(30), follower.wait())
        .await
        .expect("the follower ends within 30 s once its reader is gone")
        .expect("wait");
    let mut errors = String::new();
    stderr.read_to_string(&mut errors).await.expect("stderr");
    assert_eq!(status.code(), Some(0), "{errors}");
    assert!(errors.is_empty(), "nothing on stderr: {errors}");

    // The same for a plain tail that has more to write than the pipe holds.
    for index in 0..60 {
        server
            .create_product(
                &format!("Filler {index}"),
                &"x".repeat(900),
                1.0,
                1,
                "Filler",
            )
            .await;
    }
    let mut tail = mercato(&data, &["events", "tail", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    let mut stderr = tail.stderr.take().expect("stderr");
    lines.next_line().await.expect("read").expect("a line");
    drop(lines);
    let status = tokio::time::timeout(Duration::from_secs(30), tail.wait())
        .await
        .expect("tail ends")
        .expect("wait");
    let mut errors = String::new();
    stderr.read_to_string(&mut errors).await.expect("stderr");
    assert_eq!(status.code(), Some(0), "{errors}");
    assert!(errors.is_empty(), "nothing on stderr: {errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_the_history_of_a_checkout_embedded() {
    history(Setup::Embedded, "history_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_the_history_of_a_checkout_on_postgres_and_redis() {
    history(Setup::PostgresRedis, "history_postgres").await;
}

#[test]
fn the_cloudevents_check_rejects_what_the_specification_forbids() {
    let good = json!({
        "specversion": "1.0", "id": "1", "source": "/mercato/command-api", "type": "mercato.order.OrderCreated",
        "subject": "order/1", "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
        "data": {}, "position": "1", "streamtype": "order", "streamid": "1", "streamversion": "1",
        "schemaversion": "1", "correlationid": "c", "causationid": "c", "actor": "a"
    });
    assert_eq!(check_cloud_event(&good), Ok(()));
    let broken = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut event = good.clone();
        change(event.as_object_mut().unwrap());
        check_cloud_event(&event)
    };
    assert!(
        broken(&|e| {
            e.remove("id");
        })
        .is_err()
    );
    assert!(
        broken(&|e| {
            e.insert("specversion".into(), json!("0.3"));
        })
        .is_err()
    );
    assert!(
        broken(&|e| {
            e.insert("source".into(), json!("has space"));
        })
        .is_err()
    );
    assert!(
        broken(&|e| {
            e.insert("time".into(), json!("yesterday"));
        })
        .is_err()
    );
    assert!(
        broken(&|e| {
            e.insert("stream_type".into(), json!("order"));
        })
        .is_err()
    );
    assert!(
        broken(&|e| {
            e.insert("position".into(), json!(1));
        })
        .is_err()
    );
    assert!(
        broken(&|e| {
            e.insert("averyveryverylongname1".into(), json!("x"));
        })
        .is_err()
    );
    assert!(
        broken(&|e| {
            e.remove("correlationid");
        })
        .is_err()
    );
}
