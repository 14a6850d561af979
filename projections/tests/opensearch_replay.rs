//! Rebuilding the OpenSearch index beside the one in service and swapping it in
//! (`OpenSearchProjection::rebuilding`, `opensearch::swap_in_rebuilt`), against a scripted HTTP
//! server that checks every request (method, path, query string, content type, exact body) and
//! answers with bodies shaped as the OpenSearch documentation shows them, as
//! `tests/opensearch.rs` does; the read-model database is SQLite, and PostgreSQL when
//! `DATABASE_URL` names one. When `OPENSEARCH_URL` (or `ELASTICSEARCH_URL`) names a cluster, the
//! same rebuild runs against it.
//!
//! The scripted server can act while a request is in flight: the swap runs while a serving
//! projection's bulk request of a batch it read before the swap is being answered, so that batch
//! meets the swap at its worst moment.

use std::collections::VecDeque;
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
use eventstore::testing::TestDatabase;
use eventstore::{EventMetadata, RecordedEvent};
use futures::future::BoxFuture;
use projections::opensearch::{
    self, DEFAULT_ALIAS, OpenSearchIndex, OpenSearchProjection, REBUILT_TABLES,
};
use projections::readdb::ReadDb;
use projections::replay::{self as rebuild, ReplayRun, Swap};
use projections::search::{SearchIndex, SearchQuery};
use projections::{Feed, Projection, ProjectionError};
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Canned answers, shaped as the OpenSearch documentation shows them (as in tests/opensearch.rs).
// ---------------------------------------------------------------------------------------------

/// Bulk, all documents indexed: the "Example response" of
/// https://docs.opensearch.org/latest/api-reference/document-apis/bulk/ (`took`, `errors`,
/// `items`, each item keyed by its action).
fn bulk_all_indexed(ids: &[(&str, u16, &str)]) -> String {
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

/// An error answer: the `error` object with `root_cause`, `type`, `reason`, and `status`, as
/// OpenSearch answers any failed request (e.g. the cluster-block and index-not-found errors of
/// https://docs.opensearch.org/latest/api-reference/).
fn error_answer(kind: &str, reason: &str, status: u16) -> String {
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
fn alias_answer(pairs: &[(&str, &[&str])]) -> String {
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

/// Manage aliases: the "Example response" of
/// https://docs.opensearch.org/latest/api-reference/alias/aliases-api/ (also Delete index's).
const ACKNOWLEDGED: &str = r#"{"acknowledged":true}"#;

/// Create index: the response of https://docs.opensearch.org/latest/api-reference/index-apis/create-index/.
fn index_created(index: &str) -> String {
    json!({ "acknowledged": true, "shards_acknowledged": true, "index": index }).to_string()
}

// ---------------------------------------------------------------------------------------------
// The scripted server.
// ---------------------------------------------------------------------------------------------

/// What the next request must be, and the answer to it.
struct Exchange {
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
    fn new(
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

    fn during(mut self, action: impl FnOnce() -> BoxFuture<'static, ()> + Send + 'static) -> Self {
        self.during = Some(Box::new(action));
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.content_type = Some("application/json");
        self.body = Expected::Json(body);
        self
    }

    fn ndjson(mut self, lines: Vec<String>) -> Self {
        self.content_type = Some("application/x-ndjson");
        self.body = Expected::Lines(lines);
        self
    }
}

struct Script {
    exchanges: Mutex<VecDeque<Exchange>>,
    /// The `Authorization` header every request must carry (or none).
    authorization: Option<String>,
    problems: Mutex<Vec<String>>,
    requests: Mutex<usize>,
}

impl Script {
    /// Fails the test if a request was not the expected one or an expected one never came.
    fn finish(&self) {
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

    fn requests(&self) -> usize {
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
async fn serve(exchanges: Vec<Exchange>, authorization: Option<&str>) -> (String, Arc<Script>) {
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

const SHOE: Uuid = Uuid::from_u128(0xa1);
const LAMP: Uuid = Uuid::from_u128(0xb2);

fn shoe_id() -> String {
    SHOE.to_string()
}

fn lamp_id() -> String {
    LAMP.to_string()
}

fn at(position: u64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(position as i64)
}

fn recorded(
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
        },
        payload: encoded.payload,
    }
}

#[allow(clippy::too_many_arguments)]
fn product_updated(
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

fn shoe(version: u64, price_minor: i64, position: u64) -> RecordedEvent {
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

fn lamp(version: u64, position: u64) -> RecordedEvent {
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
fn action(index: &str, id: &str, version: u64) -> String {
    format!(
        r#"{{"index":{{"_index":"{index}","_id":"{id}","version":{version},"version_type":"external_gte"}}}}"#
    )
}

fn shoe_source(version: u64, price_minor: i64, price: &str, position: u64) -> String {
    format!(
        r#"{{"product_id":"{id}","name":"Trail Shoe","description":"Light \"trail\" running shoe","price_minor":{price_minor},"stock_qty":12,"category":"Footwear","popularity":0,"updated_at":"{updated_at}","version":{version},"price":{price}}}"#,
        id = shoe_id(),
        updated_at = at(position).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

fn lamp_source(version: u64, position: u64) -> String {
    format!(
        r#"{{"product_id":"{id}","name":"Desk Lamp","description":"Warm LED lamp","price_minor":2500,"stock_qty":3,"category":null,"popularity":0,"updated_at":"{updated_at}","version":{version},"price":25}}"#,
        id = lamp_id(),
        updated_at = at(position).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

/// The index definition the seed's mapping becomes (no embeddings).
fn expected_definition() -> Value {
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
fn view(product_id: Uuid, position: u64) -> RecordedEvent {
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
fn with_popularity(source: String, popularity: i64) -> String {
    source.replace("\"popularity\":0", &format!("\"popularity\":{popularity}"))
}

// ---------------------------------------------------------------------------------------------
// Rebuilding and swapping in.
// ---------------------------------------------------------------------------------------------

const OLD: &str = "mercato-products-000001";
const NEW: &str = "mercato-products-000002";
/// A bulk request into a concrete index (no `require_alias`).
const BULK: &str = "/_bulk?refresh=wait_for";

/// `GET /_alias/mercato-products` answering that it points at `indices`.
fn get_alias(indices: &[&str]) -> Exchange {
    let pairs: Vec<(&str, &[&str])> = indices
        .iter()
        .map(|index| (*index, &[DEFAULT_ALIAS][..]))
        .collect();
    Exchange::new(
        Method::GET,
        "/_alias/mercato-products",
        200,
        alias_answer(&pairs),
    )
}

/// The one request that moves the alias from `from` to `to`.
fn move_alias(from: &str, to: &str, status: u16, answer: String) -> Exchange {
    Exchange::new(Method::POST, "/_aliases", status, answer).json(json!({
        "actions": [
            { "remove": { "index": from, "alias": DEFAULT_ALIAS, "must_exist": true } },
            { "add": { "index": to, "alias": DEFAULT_ALIAS } }
        ]
    }))
}

/// A bulk request of `lines` answered as all indexed.
fn bulk(lines: Vec<String>, ids: &[String]) -> Exchange {
    let items: Vec<(&str, u16, &str)> =
        ids.iter().map(|id| (id.as_str(), 201, "created")).collect();
    Exchange::new(Method::POST, BULK, 200, bulk_all_indexed(&items)).ndjson(lines)
}

/// The read-model database of a test: SQLite in a temporary directory, or a PostgreSQL
/// database of its own.
struct ReadModels {
    db: ReadDb,
    url: String,
    _directory: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

async fn sqlite() -> ReadModels {
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("read.db").display());
    ReadModels {
        db: ReadDb::open(&url).await.unwrap(),
        url,
        _directory: Some(directory),
        _database: None,
    }
}

async fn postgres(test_name: &str) -> Option<ReadModels> {
    let database = TestDatabase::create(test_name).await?;
    let url = database.url().to_owned();
    Some(ReadModels {
        db: ReadDb::open(&url).await.unwrap(),
        url,
        _directory: None,
        _database: Some(database),
    })
}

/// What `mercato replay` does before it reads the log: a new index, the run recorded in the
/// shadow, the shadow's record naming the new index; and the projection that fills it.
async fn start_rebuild(index: &OpenSearchIndex, shadow: &ReadDb) -> OpenSearchProjection {
    let created = index.rebuild_into_new_index().await.unwrap();
    opensearch::ensure_schema(shadow).await.unwrap();
    let run = ReplayRun {
        projection: OpenSearchIndex::NAME.to_owned(),
        from_position: 0,
        generation: Some(created.clone()),
        started_at: "2026-01-01T00:00:00Z".to_owned(),
    };
    rebuild::start_run(shadow, &run, REBUILT_TABLES)
        .await
        .unwrap();
    opensearch::record_in_service(shadow, DEFAULT_ALIAS, &created)
        .await
        .unwrap();
    OpenSearchProjection::rebuilding(index.clone(), &created, shadow.clone())
}

async fn popularity(db: &ReadDb) -> Vec<(String, i64)> {
    sqlx::query("SELECT product_id, points FROM rm_search_popularity ORDER BY product_id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1)))
        .collect()
}

/// What `swap_in_rebuilt` answers: the outcome, and the index the alias left.
type SwapOutcome = (Swap, Option<String>);

/// A serving projection's batch, read before the swap, is in flight (its bulk request) while
/// the rebuilt index is swapped in: it went to the old index, is refused at its commit, deletes
/// the old index, and the next batch goes to the rebuilt index with the rebuilt popularity.
async fn a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index(read: ReadModels) {
    let live_db = read.db.clone();
    let shadow = rebuild::open_shadow(&live_db, &read.url).await.unwrap();
    let index_cell: Arc<std::sync::OnceLock<OpenSearchIndex>> = Arc::default();
    let swapped: Arc<Mutex<Option<SwapOutcome>>> = Arc::default();
    let swap = {
        let (index_cell, swapped) = (index_cell.clone(), swapped.clone());
        let (live_db, shadow, url) = (live_db.clone(), shadow.clone(), read.url.clone());
        move || -> BoxFuture<'static, ()> {
            Box::pin(async move {
                let index = index_cell.get().expect("the index").clone();
                let outcome =
                    opensearch::swap_in_rebuilt(&index, &live_db, &url, &shadow, NEW, 4).await;
                *swapped.lock().unwrap() = Some(outcome.expect("the swap"));
            })
        }
    };
    let (url, script) = serve(
        vec![
            // The first batch in service records the index the alias points at, and writes it.
            get_alias(&[OLD]),
            bulk(
                vec![
                    action(OLD, &shoe_id(), 1),
                    with_popularity(shoe_source(1, 8999, "89.99", 1), 1),
                ],
                &[shoe_id()],
            ),
            // The rebuild: the next index, filled from the log.
            Exchange::new(
                Method::GET,
                "/mercato-products-*/_alias",
                200,
                alias_answer(&[(OLD, &[DEFAULT_ALIAS])]),
            ),
            Exchange::new(Method::PUT, format!("/{NEW}"), 200, index_created(NEW))
                .json(expected_definition()),
            bulk(
                vec![
                    action(NEW, &shoe_id(), 1),
                    with_popularity(shoe_source(1, 8999, "89.99", 1), 1),
                    action(NEW, &lamp_id(), 1),
                    with_popularity(lamp_source(1, 3), 1),
                ],
                &[shoe_id(), lamp_id()],
            ),
            // A serving batch read before the swap goes to the index it read as in service;
            // the swap happens while it is in flight.
            bulk(
                vec![
                    action(OLD, &lamp_id(), 1),
                    with_popularity(lamp_source(1, 3), 1),
                ],
                &[lamp_id()],
            )
            .during(swap),
            get_alias(&[OLD]),
            move_alias(OLD, NEW, 200, ACKNOWLEDGED.to_owned()),
            // Refused at its commit, the batch deletes the index it wrote to, now out of service.
            get_alias(&[NEW]),
            Exchange::new(Method::DELETE, format!("/{OLD}"), 200, ACKNOWLEDGED),
            // The next batch checks the alias once and writes the rebuilt index, with the
            // rebuilt popularity (not the broken one).
            get_alias(&[NEW]),
            bulk(
                vec![
                    action(NEW, &shoe_id(), 2),
                    with_popularity(shoe_source(2, 7990, "79.9", 5), 2),
                ],
                &[shoe_id()],
            ),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    index_cell.set(index.clone()).unwrap();
    let live = OpenSearchProjection::new(index.clone(), live_db.clone(), None);

    live.apply(&Feed::Log, &[shoe(1, 8999, 1), view(SHOE, 2)])
        .await
        .unwrap();
    assert_eq!(live.checkpoint(&Feed::Log).await.unwrap(), 2);
    assert_eq!(
        opensearch::index_in_service(&live_db, DEFAULT_ALIAS)
            .await
            .unwrap()
            .as_deref(),
        Some(OLD)
    );
    // A bug broke the popularity in service.
    sqlx::query("UPDATE rm_search_popularity SET points = 1000")
        .execute(live_db.pool())
        .await
        .unwrap();

    let rebuilding = start_rebuild(&index, &shadow).await;
    rebuilding
        .apply(
            &Feed::Log,
            &[shoe(1, 8999, 1), view(SHOE, 2), lamp(1, 3), view(LAMP, 4)],
        )
        .await
        .unwrap();
    assert_eq!(rebuilding.checkpoint(&Feed::Log).await.unwrap(), 4);

    let refused = live
        .apply(&Feed::Log, &[lamp(1, 3), view(LAMP, 4)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ProjectionError::CheckpointMoved {
                stored: 4,
                first: 3,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(
        swapped.lock().unwrap().take(),
        Some((Swap::Swapped, Some(OLD.to_owned())))
    );
    // The runner reads on from the rebuilt checkpoint.
    live.apply(&Feed::Log, &[shoe(2, 7990, 5), view(SHOE, 6)])
        .await
        .unwrap();
    // A batch at or below the checkpoint sends nothing at all.
    let again = live
        .apply(&Feed::Log, &[lamp(1, 3), view(LAMP, 4)])
        .await
        .unwrap_err();
    assert!(
        matches!(again, ProjectionError::CheckpointMoved { stored: 6, .. }),
        "{again:?}"
    );
    script.finish();
    assert_eq!(script.requests(), 12);

    assert_eq!(live.checkpoint(&Feed::Log).await.unwrap(), 6);
    assert_eq!(popularity(&live_db).await, [(shoe_id(), 2), (lamp_id(), 1)]);
    assert_eq!(
        opensearch::index_in_service(&live_db, DEFAULT_ALIAS)
            .await
            .unwrap()
            .as_deref(),
        Some(NEW)
    );
    // Nothing of the rebuild is left in the shadow.
    assert_eq!(
        rebuild::run_of(&shadow, OpenSearchIndex::NAME)
            .await
            .unwrap(),
        None
    );
    assert!(popularity(&shadow).await.is_empty());
}

#[tokio::test]
async fn a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index_on_sqlite() {
    a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index(sqlite().await).await;
}

#[tokio::test]
async fn a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index_on_postgres() {
    let Some(read) = postgres("opensearch_replay_in_flight").await else {
        return;
    };
    a_batch_in_flight_during_the_swap_never_reaches_the_rebuilt_index(read).await;
}

/// The swap waits while the index in service is ahead of the rebuilt one, and a cluster that
/// refuses to move the alias leaves the read-model database as it was (the rebuild resumes).
async fn a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing(read: ReadModels) {
    let live_db = read.db.clone();
    let shadow = rebuild::open_shadow(&live_db, &read.url).await.unwrap();
    let (url, script) = serve(
        vec![
            get_alias(&[OLD]),
            bulk(
                vec![
                    action(OLD, &shoe_id(), 1),
                    with_popularity(shoe_source(1, 8999, "89.99", 1), 1),
                    action(OLD, &lamp_id(), 1),
                    with_popularity(lamp_source(1, 3), 1),
                ],
                &[shoe_id(), lamp_id()],
            ),
            Exchange::new(
                Method::GET,
                "/mercato-products-*/_alias",
                200,
                alias_answer(&[(OLD, &[DEFAULT_ALIAS])]),
            ),
            Exchange::new(Method::PUT, format!("/{NEW}"), 200, index_created(NEW))
                .json(expected_definition()),
            bulk(
                vec![
                    action(NEW, &shoe_id(), 1),
                    with_popularity(shoe_source(1, 8999, "89.99", 1), 1),
                ],
                &[shoe_id()],
            ),
            // (the swap at position 2 finds the index in service at 4: no request)
            bulk(
                vec![
                    action(NEW, &lamp_id(), 1),
                    with_popularity(lamp_source(1, 3), 1),
                ],
                &[lamp_id()],
            ),
            get_alias(&[OLD]),
            move_alias(
                OLD,
                NEW,
                404,
                error_answer(
                    "aliases_not_found_exception",
                    "aliases [mercato-products] missing",
                    404,
                ),
            ),
            get_alias(&[OLD]),
            move_alias(OLD, NEW, 200, ACKNOWLEDGED.to_owned()),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let live = OpenSearchProjection::new(index.clone(), live_db.clone(), None);
    live.apply(
        &Feed::Log,
        &[shoe(1, 8999, 1), view(SHOE, 2), lamp(1, 3), view(LAMP, 4)],
    )
    .await
    .unwrap();
    let rebuilding = start_rebuild(&index, &shadow).await;
    rebuilding
        .apply(&Feed::Log, &[shoe(1, 8999, 1), view(SHOE, 2)])
        .await
        .unwrap();
    let swap = |checkpoint| {
        opensearch::swap_in_rebuilt(&index, &live_db, &read.url, &shadow, NEW, checkpoint)
    };
    assert_eq!(swap(2).await.unwrap(), (Swap::Behind(4), None));

    rebuilding
        .apply(&Feed::Log, &[lamp(1, 3), view(LAMP, 4)])
        .await
        .unwrap();
    let error = swap(4).await.unwrap_err().to_string();
    assert!(error.contains("aliases_not_found_exception"), "{error}");
    // Nothing changed: the index, checkpoint and popularity in service, the rebuild.
    assert_eq!(
        opensearch::index_in_service(&live_db, DEFAULT_ALIAS)
            .await
            .unwrap()
            .as_deref(),
        Some(OLD)
    );
    assert_eq!(live.checkpoint(&Feed::Log).await.unwrap(), 4);
    assert_eq!(popularity(&live_db).await, [(shoe_id(), 1), (lamp_id(), 1)]);
    assert!(
        rebuild::run_of(&shadow, OpenSearchIndex::NAME)
            .await
            .unwrap()
            .is_some()
    );

    assert_eq!(
        swap(4).await.unwrap(),
        (Swap::Swapped, Some(OLD.to_owned()))
    );
    assert_eq!(
        opensearch::index_in_service(&live_db, DEFAULT_ALIAS)
            .await
            .unwrap()
            .as_deref(),
        Some(NEW)
    );
    script.finish();
}

#[tokio::test]
async fn a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing_on_sqlite() {
    a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing(sqlite().await).await;
}

#[tokio::test]
async fn a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing_on_postgres() {
    let Some(read) = postgres("opensearch_replay_refused").await else {
        return;
    };
    a_swap_waits_for_its_rebuild_and_a_refused_alias_move_changes_nothing(read).await;
}

#[tokio::test]
async fn the_indices_of_the_alias_are_listed_with_the_one_in_service() {
    let (url, script) = serve(
        vec![Exchange::new(
            Method::GET,
            "/mercato-products-*/_alias",
            200,
            alias_answer(&[
                (OLD, &[]),
                (NEW, &[DEFAULT_ALIAS]),
                ("mercato-products-eu-000009", &["mercato-products-eu"]),
            ]),
        )],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let indices = index.indices().await.unwrap();
    assert_eq!(
        indices.into_iter().collect::<Vec<_>>(),
        [(OLD.to_owned(), false), (NEW.to_owned(), true)]
    );
    script.finish();
}

// ---------------------------------------------------------------------------------------------
// Against a real cluster, when one is configured.
// ---------------------------------------------------------------------------------------------

fn live_url() -> Option<String> {
    std::env::var("OPENSEARCH_URL")
        .or_else(|_| std::env::var("ELASTICSEARCH_URL"))
        .ok()
        .filter(|url| !url.trim().is_empty())
}

#[tokio::test]
async fn live_rebuild_is_swapped_in_and_a_batch_read_before_it_is_refused() {
    let Some(url) = live_url() else {
        // No OpenSearch cluster runs on CI machines: this test runs where one is configured.
        eventstore::testing::skip(
            "live_rebuild_is_swapped_in_and_a_batch_read_before_it_is_refused",
            "OPENSEARCH_URL is not set (the live OpenSearch/Elasticsearch test)",
        );
        return;
    };
    let alias = format!("mercato-test-{}", Uuid::new_v4().simple());
    let index = OpenSearchIndex::new(&url, &alias)
        .unwrap()
        .with_refresh(opensearch::Refresh::Immediate);
    let scenario = tokio::spawn(live_scenario(index.clone()));
    let outcome = scenario.await;
    // Clean up whatever the scenario left, then report its outcome.
    let credentials = reqwest::Url::parse(&url)
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

async fn live_scenario(index: OpenSearchIndex) {
    let read = sqlite().await;
    let live_db = read.db.clone();
    let shadow = rebuild::open_shadow(&live_db, &read.url).await.unwrap();
    let first = index.ensure_index().await.unwrap();
    let live = OpenSearchProjection::new(index.clone(), live_db.clone(), None);
    live.apply(&Feed::Log, &[shoe(1, 8999, 1), view(SHOE, 2)])
        .await
        .unwrap();
    sqlx::query("UPDATE rm_search_popularity SET points = 1000")
        .execute(live_db.pool())
        .await
        .unwrap();

    let rebuilding = start_rebuild(&index, &shadow).await;
    let history = [shoe(1, 8999, 1), view(SHOE, 2), lamp(1, 3), view(LAMP, 4)];
    rebuilding.apply(&Feed::Log, &history).await.unwrap();
    let rebuilt = index.index_name(2);
    let (swap, left) =
        opensearch::swap_in_rebuilt(&index, &live_db, &read.url, &shadow, &rebuilt, 4)
            .await
            .unwrap();
    assert_eq!(swap, Swap::Swapped);
    assert_eq!(left.as_deref(), Some(first.as_str()));
    index.delete_index(&first).await.unwrap();

    // A batch read before the swap sends nothing; the next one writes the rebuilt index.
    let refused = live
        .apply(&Feed::Log, &[lamp(1, 3), view(LAMP, 4)])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ProjectionError::CheckpointMoved { stored: 4, .. }),
        "{refused:?}"
    );
    live.apply(&Feed::Log, &[shoe(2, 7990, 5), view(SHOE, 6)])
        .await
        .unwrap();
    let everything = index
        .search(&SearchQuery {
            limit: 10,
            ..SearchQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(everything.total, 2, "{everything:?}");
    let shoe_hit = everything
        .hits
        .iter()
        .find(|hit| hit.product_id == shoe_id())
        .expect("the shoe");
    assert_eq!(shoe_hit.version, 2);
    assert_eq!(
        shoe_hit.popularity, 2,
        "the rebuilt popularity, not the broken one"
    );
    assert_eq!(index.current_indices().await.unwrap(), [rebuilt]);
}
