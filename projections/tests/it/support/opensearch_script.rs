//! The scripted OpenSearch stand-in of `tests/opensearch.rs` and `tests/opensearch_replay.rs`:
//! canned answers shaped as the OpenSearch documentation shows them, an HTTP server that checks
//! every request it gets (method, path, query string, content type, credentials, exact body)
//! against a script, the events those tests index, and what their live tests share.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use domain::product::ProductUpdated;
use domain::views::ProductViewed;
use domain::{Money, ProductEvent, ProductViewEvent};
use eventstore::{EventMetadata, RecordedEvent};
use futures::future::BoxFuture;
use projections::search::opensearch::OpenSearchIndex;
use serde_json::{Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Canned answers, shaped as the OpenSearch documentation shows them.
// ---------------------------------------------------------------------------------------------

/// Bulk, all documents indexed: the "Example response" of
/// https://docs.opensearch.org/latest/api-reference/document-apis/bulk/ (`took`, `errors`,
/// `items`, each item keyed by its action).
pub fn bulk_all_indexed(ids: &[(&str, u16, &str)]) -> String {
    let items: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(seq_no, (id, status, result))| {
            json!({ "index": {
                "_index": "mercato-products-000001",
                "_id": id,
                "_version": 1,
                "result": result,
                "_shards": { "total": 1, "successful": 1, "failed": 0 },
                "_seq_no": seq_no,
                "_primary_term": 1,
                "status": status
            }})
        })
        .collect();
    json!({ "took": 35, "errors": false, "items": items }).to_string()
}

/// Bulk with a failed operation: the error item of the same page ("When operations fail, the
/// response includes an `error` object"), here a document the mapping refused (400).
pub fn bulk_with_mapper_failure(ok_id: &str, failed_id: &str) -> String {
    json!({
        "took": 9,
        "errors": true,
        "items": [
            { "index": {
                "_index": "mercato-products-000001", "_id": ok_id, "_version": 2,
                "result": "updated",
                "_shards": { "total": 1, "successful": 1, "failed": 0 },
                "_seq_no": 7, "_primary_term": 1, "status": 200
            }},
            { "index": {
                "_index": "mercato-products-000001", "_id": failed_id, "status": 400,
                "error": {
                    "type": "mapper_parsing_exception",
                    "reason": "failed to parse field [stock_qty] of type [integer] in document with id '0000'",
                    "index": "mercato-products-000001",
                    "shard": "0",
                    "index_uuid": "UZdzhOjDQvGihxfS-m_UFA"
                }
            }}
        ]
    })
    .to_string()
}

/// Bulk with a version conflict: the same error item shape, `version_conflict_engine_exception`
/// (409) as the "Version conflicts" section of the bulk page describes for external versions.
pub fn bulk_with_version_conflict(stale_id: &str, ok_id: &str) -> String {
    json!({
        "took": 4,
        "errors": true,
        "items": [
            { "index": {
                "_index": "mercato-products-000001", "_id": stale_id, "status": 409,
                "error": {
                    "type": "version_conflict_engine_exception",
                    "reason": format!("[{stale_id}]: version conflict, current version [5] is higher than the provided version [2]"),
                    "index": "mercato-products-000001",
                    "shard": "0",
                    "index_uuid": "UZdzhOjDQvGihxfS-m_UFA"
                }
            }},
            { "index": {
                "_index": "mercato-products-000001", "_id": ok_id, "_version": 1,
                "result": "created",
                "_shards": { "total": 1, "successful": 1, "failed": 0 },
                "_seq_no": 8, "_primary_term": 1, "status": 201
            }}
        ]
    })
    .to_string()
}

/// An error answer: the `error` object with `root_cause`, `type`, `reason`, and `status`, as
/// OpenSearch answers any failed request (e.g. the cluster-block and index-not-found errors of
/// https://docs.opensearch.org/latest/api-reference/).
pub fn error_answer(kind: &str, reason: &str, status: u16) -> String {
    json!({
        "error": {
            "root_cause": [{ "type": kind, "reason": reason }],
            "type": kind,
            "reason": reason
        },
        "status": status
    })
    .to_string()
}

/// Get alias: the "Example response" of
/// https://docs.opensearch.org/latest/api-reference/alias/get-alias/ (index → aliases).
pub fn alias_answer(pairs: &[(&str, &[&str])]) -> String {
    let mut body = serde_json::Map::new();
    for (index, aliases) in pairs {
        let aliases: serde_json::Map<String, Value> = aliases
            .iter()
            .map(|alias| ((*alias).to_owned(), json!({})))
            .collect();
        body.insert((*index).to_owned(), json!({ "aliases": aliases }));
    }
    Value::Object(body).to_string()
}

/// A missing alias: `GET /_alias/{name}` answers 404 with this body.
pub fn alias_missing(alias: &str) -> String {
    json!({ "error": format!("alias [{alias}] missing"), "status": 404 }).to_string()
}

/// Manage aliases: the "Example response" of
/// https://docs.opensearch.org/latest/api-reference/alias/aliases-api/ (also Delete index's).
pub const ACKNOWLEDGED: &str = r#"{"acknowledged":true}"#;

/// Create index: the response of https://docs.opensearch.org/latest/api-reference/index-apis/create-index/.
pub fn index_created(index: &str) -> String {
    json!({ "acknowledged": true, "shards_acknowledged": true, "index": index }).to_string()
}

/// The cluster's banner (`GET /`), as https://docs.opensearch.org/latest/getting-started/quickstart/
/// shows it.
pub const ROOT_ANSWER: &str = r#"{
  "name" : "opensearch-node1",
  "cluster_name" : "opensearch-cluster",
  "cluster_uuid" : "W0B8gPotTAajhMPbC9D4ww",
  "version" : {
    "distribution" : "opensearch",
    "number" : "2.19.1",
    "build_type" : "tar",
    "build_snapshot" : false,
    "lucene_version" : "9.12.1",
    "minimum_wire_compatibility_version" : "7.10.0",
    "minimum_index_compatibility_version" : "7.0.0"
  },
  "tagline" : "The OpenSearch Project: https://opensearch.org/"
}"#;

// ---------------------------------------------------------------------------------------------
// The scripted server.
// ---------------------------------------------------------------------------------------------

/// What the next request must be, and the answer to it.
pub struct Exchange {
    method: Method,
    /// Path and query string, exactly.
    target: String,
    content_type: Option<&'static str>,
    body: Expected,
    status: u16,
    answer: String,
    /// Runs once the request matched, before the answer goes out: what happens elsewhere while
    /// this request is in flight.
    during: Option<During>,
}

type During = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

enum Expected {
    Empty,
    /// The body parses as this JSON value (key order aside).
    Json(Value),
    /// The body is exactly these lines, each ending with `\n`.
    Lines(Vec<String>),
}

impl Exchange {
    pub fn new(
        method: Method,
        target: impl Into<String>,
        status: u16,
        answer: impl Into<String>,
    ) -> Self {
        Exchange {
            method,
            target: target.into(),
            content_type: None,
            body: Expected::Empty,
            status,
            answer: answer.into(),
            during: None,
        }
    }

    pub fn during(
        mut self,
        action: impl FnOnce() -> BoxFuture<'static, ()> + Send + 'static,
    ) -> Self {
        self.during = Some(Box::new(action));
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.content_type = Some("application/json");
        self.body = Expected::Json(body);
        self
    }

    pub fn ndjson(mut self, lines: Vec<String>) -> Self {
        self.content_type = Some("application/x-ndjson");
        self.body = Expected::Lines(lines);
        self
    }
}

pub struct Script {
    exchanges: Mutex<VecDeque<Exchange>>,
    /// The `Authorization` header every request must carry (or none).
    authorization: Option<String>,
    problems: Mutex<Vec<String>>,
    requests: Mutex<usize>,
}

impl Script {
    /// Fails the test if a request was not the expected one or an expected one never came.
    pub fn finish(&self) {
        let problems = self.problems.lock().unwrap().clone();
        assert!(problems.is_empty(), "requests did not match: {problems:#?}");
        let left: Vec<String> = self
            .exchanges
            .lock()
            .unwrap()
            .iter()
            .map(|exchange| format!("{} {}", exchange.method, exchange.target))
            .collect();
        assert!(left.is_empty(), "expected requests never came: {left:?}");
    }

    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

async fn answer(
    State(script): State<Arc<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    *script.requests.lock().unwrap() += 1;
    let target = uri
        .path_and_query()
        .map(|target| target.as_str().to_owned())
        .unwrap_or_default();
    let request = format!("{method} {target}");
    let Some(mut exchange) = script.exchanges.lock().unwrap().pop_front() else {
        let problem = format!("unexpected request {request}");
        script.problems.lock().unwrap().push(problem.clone());
        return (StatusCode::INTERNAL_SERVER_ERROR, problem).into_response();
    };
    let mut problems = Vec::new();
    if method != exchange.method || target != exchange.target {
        problems.push(format!(
            "expected {} {}, got {request}",
            exchange.method, exchange.target
        ));
    }
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap_or("<not text>").to_owned())
    };
    if header("content-type").as_deref() != exchange.content_type {
        problems.push(format!(
            "{request}: content type {:?}, expected {:?}",
            header("content-type"),
            exchange.content_type
        ));
    }
    if header("authorization") != script.authorization {
        problems.push(format!(
            "{request}: authorization {:?}, expected {:?}",
            header("authorization"),
            script.authorization
        ));
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    match &exchange.body {
        Expected::Empty => {
            if !body.is_empty() {
                problems.push(format!("{request}: expected no body, got {text}"));
            }
        }
        Expected::Json(expected) => match serde_json::from_slice::<Value>(&body) {
            Ok(actual) if actual == *expected => {}
            Ok(actual) => problems.push(format!(
                "{request}: body\n{}\nexpected\n{}",
                serde_json::to_string_pretty(&actual).unwrap(),
                serde_json::to_string_pretty(expected).unwrap()
            )),
            Err(error) => problems.push(format!("{request}: body is not JSON ({error}): {text}")),
        },
        Expected::Lines(lines) => {
            let expected: String = lines.iter().map(|line| format!("{line}\n")).collect();
            if text != expected {
                problems.push(format!("{request}: body\n{text}\nexpected\n{expected}"));
            }
        }
    }
    if !problems.is_empty() {
        script
            .problems
            .lock()
            .unwrap()
            .extend(problems.iter().cloned());
        return (StatusCode::IM_A_TEAPOT, problems.join("; ")).into_response();
    }
    if let Some(during) = exchange.during.take() {
        during().await;
    }
    let status = StatusCode::from_u16(exchange.status).unwrap();
    (
        status,
        [("content-type", "application/json; charset=UTF-8")],
        exchange.answer,
    )
        .into_response()
}

/// Starts a server on 127.0.0.1 that expects `exchanges` in order. Returns its URL.
pub async fn serve(exchanges: Vec<Exchange>, authorization: Option<&str>) -> (String, Arc<Script>) {
    let script = Arc::new(Script {
        exchanges: Mutex::new(exchanges.into()),
        authorization: authorization.map(str::to_owned),
        problems: Mutex::new(Vec::new()),
        requests: Mutex::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().fallback(answer).with_state(script.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{address}"), script)
}

// ---------------------------------------------------------------------------------------------
// Events.
// ---------------------------------------------------------------------------------------------

pub const SHOE: Uuid = Uuid::from_u128(0xa1);
pub const LAMP: Uuid = Uuid::from_u128(0xb2);

pub fn shoe_id() -> String {
    SHOE.to_string()
}

pub fn lamp_id() -> String {
    LAMP.to_string()
}

pub fn at(position: u64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(position as i64)
}

pub fn recorded(
    encoded: schemas::EncodedEvent,
    stream_type: &str,
    stream_id: String,
    stream_version: u64,
    position: u64,
) -> RecordedEvent {
    RecordedEvent {
        event_id: Uuid::new_v4(),
        event_type: encoded.event_type,
        schema_version: encoded.schema_version,
        stream_type: stream_type.to_owned(),
        stream_id,
        stream_version,
        position,
        occurred_at: at(position),
        metadata: EventMetadata {
            correlation_id: "test".to_owned(),
            causation_id: "test".to_owned(),
            saga_id: None,
            actor: "test".to_owned(),
            source: "test".to_owned(),
            traceparent: None,
            tracestate: None,
        },
        payload: encoded.payload,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn product_updated(
    product_id: Uuid,
    version: u64,
    name: &str,
    description: &str,
    price_minor: i64,
    stock_qty: u32,
    category: Option<&str>,
    position: u64,
) -> RecordedEvent {
    let event = ProductEvent::ProductUpdated(ProductUpdated {
        product_id,
        name: name.to_owned(),
        description: description.to_owned(),
        price: Money::from_minor(price_minor),
        stock_qty,
        category: category.map(str::to_owned),
        version,
    });
    recorded(
        schemas::encode(&event).unwrap(),
        "product",
        product_id.to_string(),
        version,
        position,
    )
}

pub fn shoe(version: u64, price_minor: i64, position: u64) -> RecordedEvent {
    product_updated(
        SHOE,
        version,
        "Trail Shoe",
        "Light \"trail\" running shoe",
        price_minor,
        12,
        Some("Footwear"),
        position,
    )
}

pub fn lamp(version: u64, position: u64) -> RecordedEvent {
    product_updated(
        LAMP,
        version,
        "Desk Lamp",
        "Warm LED lamp",
        2500,
        3,
        None,
        position,
    )
}

/// The bulk action line of an `index` into `index` at external version `version`.
pub fn action(index: &str, id: &str, version: u64) -> String {
    format!(
        r#"{{"index":{{"_index":"{index}","_id":"{id}","version":{version},"version_type":"external_gte"}}}}"#
    )
}

pub fn shoe_source(version: u64, price_minor: i64, price: &str, position: u64) -> String {
    format!(
        r#"{{"product_id":"{id}","name":"Trail Shoe","description":"Light \"trail\" running shoe","price_minor":{price_minor},"stock_qty":12,"category":"Footwear","popularity":0,"updated_at":"{updated_at}","version":{version},"price":{price}}}"#,
        id = shoe_id(),
        updated_at = at(position).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

pub fn lamp_source(version: u64, position: u64) -> String {
    format!(
        r#"{{"product_id":"{id}","name":"Desk Lamp","description":"Warm LED lamp","price_minor":2500,"stock_qty":3,"category":null,"popularity":0,"updated_at":"{updated_at}","version":{version},"price":25}}"#,
        id = lamp_id(),
        updated_at = at(position).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

/// The index definition the seed's mapping becomes (no embeddings).
pub fn expected_definition() -> Value {
    json!({
        "settings": {
            "number_of_shards": 1,
            "number_of_replicas": 0,
            "analysis": {
                "analyzer": {
                    "product_text": {
                        "type": "custom",
                        "tokenizer": "standard",
                        "filter": ["lowercase", "product_stemmer"]
                    }
                },
                "filter": { "product_stemmer": { "type": "snowball", "language": "English" } },
                "normalizer": { "product_keyword": { "type": "custom", "filter": ["lowercase"] } }
            }
        },
        "mappings": {
            "dynamic": false,
            "properties": {
                "product_id": { "type": "keyword" },
                "name": { "type": "text", "analyzer": "product_text" },
                "description": { "type": "text", "analyzer": "product_text" },
                "price": { "type": "double" },
                "price_minor": { "type": "long" },
                "stock_qty": { "type": "integer" },
                "category": { "type": "keyword", "normalizer": "product_keyword" },
                "popularity": { "type": "double" },
                "updated_at": { "type": "date" },
                "version": { "type": "long" }
            }
        }
    })
}

/// A view of `product_id` at `position` (one popularity point).
pub fn view(product_id: Uuid, position: u64) -> RecordedEvent {
    let view = ProductViewEvent::ProductViewed(ProductViewed {
        product_id,
        customer_id: None,
    });
    recorded(
        schemas::encode(&view).unwrap(),
        "product_views",
        format!("views-{position}"),
        1,
        position,
    )
}

/// The source of `shoe_source` with another popularity.
pub fn with_popularity(source: String, popularity: i64) -> String {
    source.replace("\"popularity\":0", &format!("\"popularity\":{popularity}"))
}

// ---------------------------------------------------------------------------------------------
// Against a real cluster, when one is configured.
// ---------------------------------------------------------------------------------------------

pub fn live_url() -> Option<String> {
    std::env::var("OPENSEARCH_URL")
        .or_else(|_| std::env::var("ELASTICSEARCH_URL"))
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Runs `scenario` on the cluster at `url`, then deletes the first two indices of `index`'s
/// alias, whatever the scenario left, and reports the scenario's outcome.
pub async fn run_live_scenario(
    url: &str,
    index: &OpenSearchIndex,
    scenario: impl Future<Output = ()> + Send + 'static,
) {
    let scenario = tokio::spawn(scenario);
    let outcome = scenario.await;
    // Clean up whatever the scenario left, then report its outcome.
    let credentials = reqwest::Url::parse(url)
        .map(|parsed| {
            (
                parsed.username().to_owned(),
                parsed.password().map(str::to_owned),
            )
        })
        .unwrap_or_default();
    for number in 1..=2 {
        let target = format!("{}{}", index.base_url(), index.index_name(number));
        let mut request = reqwest::Client::new().delete(target);
        if !credentials.0.is_empty() {
            request = request.basic_auth(&credentials.0, credentials.1.as_deref());
        }
        let _ = request.send().await;
    }
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}
