//! `mercato replay --projection search` with the search index on OpenSearch (`opensearch_url`):
//! the rebuilt index is filled beside the one in service, the alias moves to it and the old index
//! goes, while the server keeps answering and writing; an interrupted rebuild changes nothing in
//! service, shows in `mercato projections`, resumes, and can be dropped.
//!
//! No OpenSearch cluster runs on CI machines: the cluster here is a small stand-in that keeps
//! indices, aliases and versioned documents as OpenSearch does for the requests mercato sends
//! (their exact wire format is tested against recorded answers in
//! `projections/tests/opensearch*.rs`), and records every request.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode as HttpStatus, Uri};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::replay::{
    caught_up_to_head, create_lamps, mercato, order_lamps, order_load, output, projection_line,
    sagas_finished,
};
use crate::common::{ServerData, Setup, TestApp, eventually};

const ALIAS: &str = "mercato-products";

/// One index of the stand-in cluster: documents by id, with their external version.
#[derive(Clone, Debug, Default)]
struct Index {
    documents: BTreeMap<String, (u64, Value)>,
}

#[derive(Debug, Default)]
struct Cluster {
    indices: BTreeMap<String, Index>,
    /// Alias → the indices it points at.
    aliases: BTreeMap<String, BTreeSet<String>>,
    /// Every request, as `METHOD path`.
    requests: Vec<String>,
    /// Bulk requests into this index fail (503) once this many more went through.
    fail_bulks_into: Option<(String, usize)>,
}

type Shared = Arc<Mutex<Cluster>>;

fn answer(status: u16, body: Value) -> Response {
    (
        HttpStatus::from_u16(status).unwrap(),
        [("content-type", "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: u16, kind: &str, reason: &str) -> Response {
    answer(
        status,
        json!({
            "error": { "root_cause": [{ "type": kind, "reason": reason }], "type": kind, "reason": reason },
            "status": status
        }),
    )
}

impl Cluster {
    fn aliases_of(&self, index: &str) -> Value {
        let aliases: serde_json::Map<String, Value> = self
            .aliases
            .iter()
            .filter(|(_, indices)| indices.contains(index))
            .map(|(alias, _)| (alias.clone(), json!({})))
            .collect();
        json!({ "aliases": aliases })
    }

    /// The index a name stands for: itself, or the one index of an alias.
    fn resolve(&self, name: &str) -> Option<String> {
        match self.aliases.get(name) {
            Some(indices) => indices.iter().next().cloned(),
            None => Some(name.to_owned()),
        }
    }

    fn bulk(&mut self, query: &str, body: &str) -> Response {
        let require_alias = query.contains("require_alias=true");
        let lines: Vec<&str> = body.lines().filter(|line| !line.is_empty()).collect();
        let mut items = Vec::new();
        let mut errors = false;
        for pair in lines.chunks(2) {
            let action: Value = serde_json::from_str(pair[0]).unwrap();
            let source: Value = serde_json::from_str(pair[1]).unwrap();
            let (kind, meta) = action.as_object().unwrap().iter().next().unwrap();
            let target = meta["_index"].as_str().unwrap().to_owned();
            let id = meta["_id"].as_str().unwrap().to_owned();
            if require_alias && !self.aliases.contains_key(&target) {
                errors = true;
                items.push(json!({ kind.clone(): { "_index": target, "_id": id, "status": 404,
                    "error": { "type": "index_not_found_exception", "reason": "no such index and [require_alias] request flag is [true]" } } }));
                continue;
            }
            let index_name = self.resolve(&target).unwrap();
            // Writing into an index that does not exist creates it (as a cluster does).
            let index = self.indices.entry(index_name.clone()).or_default();
            match kind.as_str() {
                "index" => {
                    let version = meta["version"].as_u64().unwrap();
                    match index.documents.get(&id) {
                        Some((stored, _)) if *stored > version => {
                            errors = true;
                            items.push(json!({ "index": { "_index": index_name, "_id": id, "status": 409,
                                "error": { "type": "version_conflict_engine_exception", "reason": "version conflict" } } }));
                        }
                        _ => {
                            index.documents.insert(id.clone(), (version, source));
                            items.push(json!({ "index": { "_index": index_name, "_id": id, "status": 201, "result": "created" } }));
                        }
                    }
                }
                "update" => match index.documents.get_mut(&id) {
                    Some((_, document)) => {
                        for (field, value) in source["doc"].as_object().unwrap() {
                            document[field] = value.clone();
                        }
                        items.push(json!({ "update": { "_index": index_name, "_id": id, "status": 200, "result": "updated" } }));
                    }
                    None => {
                        errors = true;
                        items.push(json!({ "update": { "_index": index_name, "_id": id, "status": 404,
                            "error": { "type": "document_missing_exception", "reason": "document missing" } } }));
                    }
                },
                other => panic!("unexpected bulk action {other}"),
            }
        }
        answer(200, json!({ "took": 1, "errors": errors, "items": items }))
    }

    fn search(&self, alias: &str, body: &Value) -> Response {
        let Some(index) = self
            .aliases
            .get(alias)
            .and_then(|indices| indices.iter().next())
            .and_then(|index| self.indices.get(index))
        else {
            return error(404, "index_not_found_exception", "no such index");
        };
        // Every word of the text in the name or the description, ignoring case.
        let words: Vec<String> = body
            .pointer("/query/bool/must/0/multi_match/query")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let hits: Vec<Value> = index
            .documents
            .iter()
            .filter(|(_, (_, document))| {
                let text = format!(
                    "{} {}",
                    document["name"].as_str().unwrap_or(""),
                    document["description"].as_str().unwrap_or("")
                )
                .to_lowercase();
                words.iter().all(|word| text.contains(word.as_str()))
            })
            .map(|(id, (_, document))| json!({ "_id": id, "_source": document }))
            .collect();
        answer(
            200,
            json!({ "hits": { "total": { "value": hits.len(), "relation": "eq" }, "hits": hits } }),
        )
    }
}

async fn handle(State(cluster): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let mut cluster = cluster.lock().unwrap();
    let path = uri.path().trim_start_matches('/').to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    cluster.requests.push(format!("{method} /{path}"));
    let text = String::from_utf8_lossy(&body).into_owned();
    let segments: Vec<&str> = path.split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, [""]) => answer(
            200,
            json!({ "name": "stand-in", "version": { "number": "2.19.1" } }),
        ),
        (Method::GET, ["_alias", alias]) => match cluster.aliases.get(*alias) {
            Some(indices) if !indices.is_empty() => {
                let body: serde_json::Map<String, Value> = indices
                    .iter()
                    .map(|index| (index.clone(), cluster.aliases_of(index)))
                    .collect();
                answer(200, Value::Object(body))
            }
            _ => answer(
                404,
                json!({ "error": format!("alias [{alias}] missing"), "status": 404 }),
            ),
        },
        (Method::GET, [pattern, "_alias"]) => {
            let start = pattern.trim_end_matches('*');
            let body: serde_json::Map<String, Value> = cluster
                .indices
                .keys()
                .filter(|index| index.starts_with(start))
                .map(|index| (index.clone(), cluster.aliases_of(index)))
                .collect();
            answer(200, Value::Object(body))
        }
        (Method::PUT, [index]) => {
            if cluster.indices.contains_key(*index) {
                return error(
                    400,
                    "resource_already_exists_exception",
                    "index already exists",
                );
            }
            cluster
                .indices
                .insert((*index).to_owned(), Index::default());
            answer(
                200,
                json!({ "acknowledged": true, "shards_acknowledged": true, "index": index }),
            )
        }
        (Method::DELETE, [index]) => {
            if cluster.indices.remove(*index).is_none() {
                return error(404, "index_not_found_exception", "no such index");
            }
            for indices in cluster.aliases.values_mut() {
                indices.remove(*index);
            }
            answer(200, json!({ "acknowledged": true }))
        }
        (Method::POST, ["_aliases"]) => {
            let request: Value = serde_json::from_str(&text).unwrap();
            let mut aliases = cluster.aliases.clone();
            for action in request["actions"].as_array().unwrap() {
                if let Some(remove) = action.get("remove") {
                    let (index, alias) = (
                        remove["index"].as_str().unwrap(),
                        remove["alias"].as_str().unwrap(),
                    );
                    let indices = aliases.entry(alias.to_owned()).or_default();
                    if !indices.remove(index) && remove["must_exist"] == true {
                        return error(404, "aliases_not_found_exception", "aliases missing");
                    }
                }
                if let Some(add) = action.get("add") {
                    let (index, alias) = (
                        add["index"].as_str().unwrap(),
                        add["alias"].as_str().unwrap(),
                    );
                    if !cluster.indices.contains_key(index) {
                        return error(404, "index_not_found_exception", "no such index");
                    }
                    aliases
                        .entry(alias.to_owned())
                        .or_default()
                        .insert(index.to_owned());
                }
            }
            // All actions or none.
            cluster.aliases = aliases;
            answer(200, json!({ "acknowledged": true }))
        }
        (Method::POST, ["_bulk"]) => {
            let first: Value = text
                .lines()
                .next()
                .and_then(|line| serde_json::from_str(line).ok())
                .unwrap_or(Value::Null);
            let target = first
                .as_object()
                .and_then(|action| action.values().next())
                .and_then(|meta| meta["_index"].as_str())
                .unwrap_or("")
                .to_owned();
            if let Some((failing, left)) = &mut cluster.fail_bulks_into
                && *failing == target
            {
                if *left == 0 {
                    return error(
                        503,
                        "cluster_block_exception",
                        "blocked by: [SERVICE_UNAVAILABLE]",
                    );
                }
                *left -= 1;
            }
            cluster.bulk(&query, &text)
        }
        (Method::POST, [alias, "_search"]) => {
            let request: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            cluster.search(alias, &request)
        }
        _ => error(
            400,
            "illegal_argument_exception",
            &format!("unexpected {method} /{path}"),
        ),
    }
}

/// Starts the stand-in cluster; answers its URL and its state.
async fn cluster() -> (String, Shared) {
    let state: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().fallback(handle).with_state(state.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{address}"), state)
}

/// A config file naming the cluster (the test servers take no `OPENSEARCH_URL` from the
/// environment).
fn config_file(data: &ServerData, url: &str) -> String {
    let path = data.data_dir.path().join("mercato.toml");
    std::fs::write(&path, format!("opensearch_url = \"{url}\"\n")).unwrap();
    path.display().to_string()
}

/// The binary on `data`'s store with the config file `config`, run to its end: its exit code,
/// stdout and stderr.
async fn run(data: &ServerData, config: &str, args: &[&str]) -> (i32, String, String) {
    output(
        mercato(data, args)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null()),
    )
    .await
}

/// The alias's indices, and the documents of the one in service as (id, name, popularity).
fn in_service(cluster: &Shared) -> (Vec<String>, Vec<(String, String, i64)>) {
    let cluster = cluster.lock().unwrap();
    let behind: Vec<String> = cluster
        .aliases
        .get(ALIAS)
        .map(|indices| indices.iter().cloned().collect())
        .unwrap_or_default();
    let documents = behind
        .first()
        .and_then(|index| cluster.indices.get(index))
        .map(|index| {
            index
                .documents
                .iter()
                .map(|(id, (_, document))| {
                    (
                        id.clone(),
                        document["name"].as_str().unwrap_or("").to_owned(),
                        document["popularity"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (behind, documents)
}

fn index_names(cluster: &Shared) -> Vec<String> {
    cluster.lock().unwrap().indices.keys().cloned().collect()
}

/// Waits until the SQL read models and the search projection reached the head of the log.
async fn caught_up(data: &ServerData) {
    caught_up_to_head(data, &["products", "orders", "search"], &[]).await;
}

async fn search_popularity(data: &ServerData) -> i64 {
    let db = data.read_db().await;
    let row: (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) FROM rm_search_popularity")
            .fetch_one(db.pool())
            .await
            .unwrap();
    row.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_the_opensearch_index_while_the_server_serves_and_writes() {
    let data = ServerData::new(Setup::Embedded, "replay_opensearch_serving")
        .await
        .unwrap();
    let (url, cluster) = cluster().await;
    let config = config_file(&data, &url);
    let server = TestApp::start_with(&data, "all", &["--config", &config]).await;
    let products = create_lamps(&server).await;
    order_lamps(&server, &products, "tok_visa").await;
    sagas_finished(&data, 6).await;
    caught_up(&data).await;
    let (behind, documents) = in_service(&cluster);
    assert_eq!(behind, ["mercato-products-000001"]);
    assert_eq!(documents.len(), 4);
    assert_eq!(
        documents.iter().map(|(_, _, points)| points).sum::<i64>(),
        6 * 3 * 10
    );

    // A bug broke the index and the popularity it is fed from.
    {
        let mut cluster = cluster.lock().unwrap();
        let index = cluster.indices.get_mut("mercato-products-000001").unwrap();
        for (_, document) in index.documents.values_mut() {
            document["name"] = json!("broken");
        }
    }
    let db = data.read_db().await;
    sqlx::query("UPDATE rm_search_popularity SET points = points + 1000")
        .execute(db.pool())
        .await
        .unwrap();

    // Rebuild while orders keep coming in, the cluster named by ELASTICSEARCH_URL alone (the
    // alias of OPENSEARCH_URL every subcommand reads).
    let load = order_load(&server, &products, "tok_visa");
    let (code, stdout, stderr) = output(
        mercato(&data, &["replay", "--projection", "search"])
            .env("ELASTICSEARCH_URL", &url)
            .stdin(Stdio::null()),
    )
    .await;
    assert_eq!(code, 0, "replay failed: {stderr}");
    assert!(
        stdout.contains("search\trebuilt and in service"),
        "{stdout}"
    );
    load.await.expect("load");
    sagas_finished(&data, 6 + 30).await;
    caught_up(&data).await;

    // The alias moved to the rebuilt index and the old one is gone; documents and popularity
    // are exact: 6 confirmed orders of 3 units, then 30 of 1, 10 points a unit.
    let expected = (6 * 3 + 30) * 10;
    let settled = eventually(Duration::from_secs(10), || async {
        let (behind, documents) = in_service(&cluster);
        (documents.iter().map(|(_, _, points)| points).sum::<i64>() == expected)
            .then_some((behind, documents))
    })
    .await;
    let ((behind, documents), _) = settled.unwrap_or_else(|| {
        panic!(
            "the rebuilt index never held the popularity: {:?}",
            in_service(&cluster)
        )
    });
    assert_eq!(behind, ["mercato-products-000002"]);
    assert_eq!(index_names(&cluster), ["mercato-products-000002"]);
    assert_eq!(documents.len(), 4);
    assert!(
        documents
            .iter()
            .all(|(_, name, _)| name.starts_with("Lamp")),
        "{documents:?}"
    );
    assert_eq!(search_popularity(&data).await, expected);
    let requests = cluster.lock().unwrap().requests.clone();
    let moves: Vec<&String> = requests
        .iter()
        .filter(|request| *request == "POST /_aliases")
        .collect();
    assert_eq!(
        moves.len(),
        2,
        "one to create the alias, one to move it: {requests:#?}"
    );

    // The server searches the rebuilt index and writes there.
    let found = server.get("/search?q=Lamp0").await;
    assert_eq!(found.status(), StatusCode::OK);
    let body: Value = found.json().await.unwrap();
    assert_eq!(body["total"], 1, "{body}");
    let (fresh, position) = server
        .create_product("Zebra", "a striped lamp", 5.0, 3, "lighting")
        .await;
    let found: Value = server
        .get_at("/search?q=Zebra", position)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["hits"][0]["product_id"], fresh.as_str(), "{found}");

    let (code, stdout, _) = run(&data, &config, &["projections"]).await;
    assert_eq!(code, 0);
    let line = projection_line(&stdout, "search");
    assert!(line.contains("caught up"), "{line}");
    assert!(!line.contains("unfinished"), "{line}");
    let (code, stdout, _) = run(&data, &config, &["replay", "--discard"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("no unfinished rebuild"), "{stdout}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_opensearch_replay_changes_nothing_in_service_resumes_and_can_be_dropped() {
    let data = ServerData::new(Setup::Embedded, "replay_opensearch_interrupted")
        .await
        .unwrap();
    let (url, cluster) = cluster().await;
    let config = config_file(&data, &url);
    let (code, _, stderr) = run(&data, &config, &["generate", "--events", "30000"]).await;
    assert_eq!(code, 0, "{stderr}");

    // A first rebuild puts an index in service (no projector ever ran: there was none).
    let (code, _, stderr) = run(&data, &config, &["replay", "--projection", "search"]).await;
    assert_eq!(code, 0, "{stderr}");
    let (behind, in_service_before) = in_service(&cluster);
    assert_eq!(behind, ["mercato-products-000001"]);
    assert!(!in_service_before.is_empty());

    // The next rebuild fails after its first page: the cluster refuses further writes into it.
    cluster.lock().unwrap().fail_bulks_into = Some(("mercato-products-000002".to_owned(), 1));
    let (code, _, stderr) = run(&data, &config, &["replay", "--projection", "search"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    assert_eq!(
        in_service(&cluster),
        (behind.clone(), in_service_before.clone())
    );
    let (_, stdout, _) = run(&data, &config, &["projections"]).await;
    let line = projection_line(&stdout, "search");
    assert!(line.contains("rebuild unfinished at position"), "{line}");

    // Resumed where it stopped, into the same index.
    cluster.lock().unwrap().fail_bulks_into = None;
    let (code, stdout, stderr) = run(&data, &config, &["replay", "--projection", "search"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming an interrupted rebuild: search at position"),
        "{stderr}"
    );
    assert!(
        stdout.contains("search\trebuilt and in service"),
        "{stdout}"
    );
    let (behind, resumed) = in_service(&cluster);
    assert_eq!(behind, ["mercato-products-000002"]);
    assert_eq!(
        resumed, in_service_before,
        "the same documents as a whole rebuild"
    );
    assert_eq!(index_names(&cluster), ["mercato-products-000002"]);

    // An interrupted rebuild dropped: its index goes, the one in service stays.
    cluster.lock().unwrap().fail_bulks_into = Some(("mercato-products-000003".to_owned(), 1));
    let (code, _, _) = run(&data, &config, &["replay", "--projection", "search"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        index_names(&cluster),
        ["mercato-products-000002", "mercato-products-000003"]
    );
    let (code, stdout, _) = run(&data, &config, &["replay", "--discard"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("unfinished rebuilds dropped"), "{stdout}");
    assert_eq!(index_names(&cluster), ["mercato-products-000002"]);
    assert_eq!(in_service(&cluster).1, in_service_before);
    let (_, stdout, _) = run(&data, &config, &["projections"]).await;
    assert!(!stdout.contains("unfinished"), "{stdout}");
}
