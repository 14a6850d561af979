//! An in-memory stand-in of an OpenSearch cluster for the search port's behaviour suite: it
//! keeps indices, aliases and documents, and answers the requests the OpenSearch adapter makes
//! (`GET /_alias/{alias}`, `GET /{pattern}/_alias`, `PUT /{index}`, `POST /_aliases`,
//! `POST /_bulk`, `POST /{alias}/_search`, `GET /`) with the shapes of the OpenSearch
//! documentation, evaluating the subset of the query DSL the adapter sends: `match_all`; `bool`
//! with a `multi_match` over boosted fields (every word with `operator: and`, any word
//! otherwise; a word scores its fields' boosts), a `term` on `category` and a `range` on
//! `price_minor`; the request's `sort` (`_score` or a document field, `asc` or `desc`); `from`,
//! `size` and an exact total.
//!
//! Words are compared lower-cased and whole: no stemming, so the suite's cases use words whose
//! stems are themselves. Bulk writes honour `version_type=external_gte` (an older version is a
//! 409 `version_conflict_engine_exception`) and an update of a missing document is a 404
//! `document_missing_exception`, as OpenSearch answers them.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Default)]
struct Cluster {
    /// Documents by index, then id: (version, source).
    indices: BTreeMap<String, BTreeMap<String, (u64, Value)>>,
    /// The indices each alias points at.
    aliases: BTreeMap<String, BTreeSet<String>>,
}

type Shared = Arc<Mutex<Cluster>>;

/// Starts the stand-in on a free port; answers its URL.
pub async fn start() -> String {
    let cluster = Shared::default();
    let app = Router::new().fallback(answer).with_state(cluster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{address}")
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, kind: &str, reason: &str) -> Response {
    json_answer(
        status,
        json!({
            "error": { "root_cause": [{ "type": kind, "reason": reason }], "type": kind, "reason": reason },
            "status": status.as_u16()
        }),
    )
}

async fn answer(State(cluster): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let mut cluster = cluster.lock().expect("cluster");
    match (method.as_str(), segments.as_slice()) {
        ("GET", [""]) => json_answer(
            StatusCode::OK,
            json!({ "version": { "distribution": "opensearch", "number": "2.17.0" } }),
        ),
        ("GET", ["_alias", alias]) => aliases_of(&cluster, |_, aliases| aliases.contains(*alias))
            .map_or_else(
                || {
                    error(
                        StatusCode::NOT_FOUND,
                        "aliases_not_found_exception",
                        &format!("alias [{alias}] missing"),
                    )
                },
                |body| json_answer(StatusCode::OK, body),
            ),
        ("GET", [pattern, "_alias"]) => {
            let prefix = pattern.trim_end_matches('*');
            let body = aliases_of(&cluster, |index, _| index.starts_with(prefix))
                .unwrap_or_else(|| json!({}));
            json_answer(StatusCode::OK, body)
        }
        ("PUT", [index]) => {
            if cluster.indices.contains_key(*index) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "resource_already_exists_exception",
                    &format!("index [{index}] already exists"),
                );
            }
            cluster.indices.insert((*index).to_owned(), BTreeMap::new());
            json_answer(
                StatusCode::OK,
                json!({ "acknowledged": true, "shards_acknowledged": true, "index": index }),
            )
        }
        ("POST", ["_aliases"]) => {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            for action in request["actions"].as_array().into_iter().flatten() {
                if let Some(add) = action.get("add") {
                    let (index, alias) = (str_of(&add["index"]), str_of(&add["alias"]));
                    cluster.aliases.entry(alias).or_default().insert(index);
                }
                if let Some(remove) = action.get("remove") {
                    let (index, alias) = (str_of(&remove["index"]), str_of(&remove["alias"]));
                    if let Some(indices) = cluster.aliases.get_mut(&alias) {
                        indices.remove(&index);
                    }
                }
            }
            json_answer(StatusCode::OK, json!({ "acknowledged": true }))
        }
        ("POST", ["_bulk"]) => bulk(&mut cluster, &body),
        ("POST", [alias, "_search"]) => {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            search(&cluster, alias, &request)
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            &format!("the stand-in does not answer {method} {}", uri.path()),
        ),
    }
}

fn str_of(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// `{index: {"aliases": {alias: {}}}}` of the indices `keep` accepts, or `None` for none.
fn aliases_of(cluster: &Cluster, keep: impl Fn(&str, &BTreeSet<String>) -> bool) -> Option<Value> {
    let mut body = serde_json::Map::new();
    for index in cluster.indices.keys() {
        let aliases: BTreeSet<String> = cluster
            .aliases
            .iter()
            .filter(|(_, indices)| indices.contains(index))
            .map(|(alias, _)| alias.clone())
            .collect();
        if keep(index, &aliases) {
            let aliases: serde_json::Map<String, Value> = aliases
                .into_iter()
                .map(|alias| (alias, json!({})))
                .collect();
            body.insert(index.clone(), json!({ "aliases": aliases }));
        }
    }
    (!body.is_empty()).then_some(Value::Object(body))
}

fn bulk(cluster: &mut Cluster, body: &[u8]) -> Response {
    let text = String::from_utf8_lossy(body);
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let mut items = Vec::new();
    let mut errors = false;
    while let (Some(action), Some(source)) = (lines.next(), lines.next()) {
        let action: Value = serde_json::from_str(action).unwrap_or(Value::Null);
        let source: Value = serde_json::from_str(source).unwrap_or(Value::Null);
        let (kind, meta) = match (action.get("index"), action.get("update")) {
            (Some(meta), _) => ("index", meta),
            (_, Some(meta)) => ("update", meta),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "illegal_argument_exception",
                    "unknown action",
                );
            }
        };
        let index = str_of(&meta["_index"]);
        let id = str_of(&meta["_id"]);
        let Some(documents) = cluster.indices.get_mut(&index) else {
            errors = true;
            items.push(json!({ kind: { "_index": index, "_id": id, "status": 404,
                "error": { "type": "index_not_found_exception", "reason": "no such index" } } }));
            continue;
        };
        let item = if kind == "index" {
            let version = meta["version"].as_u64().unwrap_or(0);
            match documents.get(&id) {
                Some((stored, _)) if *stored > version => {
                    errors = true;
                    json!({ "_index": index, "_id": id, "status": 409, "error": {
                        "type": "version_conflict_engine_exception",
                        "reason": format!("[{id}]: version conflict, current version [{stored}] is higher than the provided version [{version}]") } })
                }
                previous => {
                    let status = if previous.is_some() { 200 } else { 201 };
                    documents.insert(id.clone(), (version, source));
                    json!({ "_index": index, "_id": id, "_version": version, "status": status,
                        "result": if status == 201 { "created" } else { "updated" } })
                }
            }
        } else {
            match documents.get_mut(&id) {
                Some((_, stored)) => {
                    if let (Some(stored), Some(changes)) =
                        (stored.as_object_mut(), source["doc"].as_object())
                    {
                        for (field, value) in changes {
                            stored.insert(field.clone(), value.clone());
                        }
                    }
                    json!({ "_index": index, "_id": id, "status": 200, "result": "updated" })
                }
                None => json!({ "_index": index, "_id": id, "status": 404, "error": {
                    "type": "document_missing_exception",
                    "reason": format!("[{id}]: document missing") } }),
            }
        };
        items.push(json!({ kind: item }));
    }
    json_answer(
        StatusCode::OK,
        json!({ "took": 1, "errors": errors, "items": items }),
    )
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The score of `source` for `query` (the DSL the adapter sends), or `None` when it does not
/// match.
fn score(source: &Value, query: &Value) -> Option<u64> {
    if query.get("match_all").is_some() {
        return Some(1);
    }
    let boolean = &query["bool"];
    let mut total = 1;
    for must in boolean["must"].as_array().into_iter().flatten() {
        let multi_match = &must["multi_match"];
        let text = multi_match["query"].as_str().unwrap_or_default();
        let every_word = multi_match["operator"] == "and";
        // Each field with its boost: `name^2`.
        let fields: Vec<(Vec<String>, u64)> = multi_match["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|field| {
                let (name, boost) = field.split_once('^').unwrap_or((field, "1"));
                (
                    words(source[name].as_str().unwrap_or_default()),
                    boost.parse().unwrap_or(1),
                )
            })
            .collect();
        let mut matched_any = false;
        for word in words(text) {
            let points: u64 = fields
                .iter()
                .filter(|(field_words, _)| field_words.contains(&word))
                .map(|(_, boost)| boost)
                .sum();
            if points == 0 && every_word {
                return None;
            }
            matched_any |= points > 0;
            total += points;
        }
        if !matched_any {
            return None;
        }
    }
    for filter in boolean["filter"].as_array().into_iter().flatten() {
        if let Some(category) = filter["term"]["category"].as_str() {
            let stored = source["category"].as_str().map(str::to_lowercase);
            if stored.as_deref() != Some(category) {
                return None;
            }
        }
        if let Some(bounds) = filter["range"]["price_minor"].as_object() {
            let price = source["price_minor"].as_i64().unwrap_or(0);
            if bounds
                .get("gte")
                .and_then(Value::as_i64)
                .is_some_and(|min| price < min)
                || bounds
                    .get("lte")
                    .and_then(Value::as_i64)
                    .is_some_and(|max| price > max)
            {
                return None;
            }
        }
    }
    Some(total)
}

fn search(cluster: &Cluster, alias: &str, request: &Value) -> Response {
    let Some(indices) = cluster
        .aliases
        .get(alias)
        .filter(|indices| !indices.is_empty())
    else {
        return error(
            StatusCode::NOT_FOUND,
            "index_not_found_exception",
            &format!("no such index [{alias}]"),
        );
    };
    let mut matches: Vec<(u64, String, Value)> = indices
        .iter()
        .filter_map(|index| cluster.indices.get(index))
        .flat_map(|documents| documents.iter())
        .filter_map(|(id, (_, source))| {
            let score = score(source, &request["query"])?;
            Some((score, id.clone(), source.clone()))
        })
        .collect();
    // The request's sort, field by field (`_score` or a document field, ascending or not).
    let sort: Vec<(String, bool)> = request["sort"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|clause| {
            clause
                .iter()
                .map(|(field, spec)| (field.clone(), spec["order"] == "desc"))
        })
        .collect();
    matches.sort_by(|a, b| {
        let mut ordering = std::cmp::Ordering::Equal;
        for (field, descending) in &sort {
            let compared = if field == "_score" {
                a.0.cmp(&b.0)
            } else {
                match (a.2[field.as_str()].as_i64(), b.2[field.as_str()].as_i64()) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    _ => a.2[field.as_str()]
                        .as_str()
                        .unwrap_or_default()
                        .cmp(b.2[field.as_str()].as_str().unwrap_or_default()),
                }
            };
            ordering = ordering.then(if *descending {
                compared.reverse()
            } else {
                compared
            });
        }
        ordering
    });
    let from = request["from"].as_u64().unwrap_or(0) as usize;
    let size = request["size"].as_u64().unwrap_or(10) as usize;
    let hits: Vec<Value> = matches
        .iter()
        .skip(from)
        .take(size)
        .map(|(score, id, source)| {
            json!({ "_index": alias, "_id": id, "_score": *score as f64, "_source": source })
        })
        .collect();
    json_answer(
        StatusCode::OK,
        json!({
            "took": 1,
            "timed_out": false,
            "hits": {
                "total": { "value": matches.len(), "relation": "eq" },
                "max_score": matches.first().map(|m| m.0 as f64),
                "hits": hits
            }
        }),
    )
}
