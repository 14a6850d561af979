//! Erasure (CONTRACT.md, "Identity and access"): personal data is stored sealed under a key per
//! person, and erasing the person destroys the key.
//!
//! Three customers register with a marker word of their own in their email, name and address
//! (and phone numbers of their own), change their profiles, place an order and check out a cart
//! with a shipping address. One erases herself, an admin erases the second, the third stays.
//! Before the erasure the markers are readable where they legitimately are (the profile answer,
//! opened with the person's key; the mail outbox) and in the clear nowhere else: the events hold
//! sealed `pd1.` values. After it the markers of the erased are nowhere: not in any stored event
//! (payload or metadata), table row, Redis entry, file of the data directory, answer or search
//! result; their profiles read as erased, and their orders keep lines and totals. `mercato audit
//! verify` still passes, and `mercato replay --all` rebuilds the same erased read models.
//!
//! The scanning helpers here (places the shop keeps data, as text) serve `secrets.rs` as well.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::replay::{caught_up_to_head, prefix, redis, run};
use crate::common::{Api, Server, ServerData, Setup, eventually, mercato_on};

/// PostgreSQL allows 100 connections and every server holds pools of its own: the tests of
/// this file and of `secrets.rs` that run servers on PostgreSQL take turns.
pub(crate) static POSTGRES_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the PostgreSQL turn when `setup` needs it.
pub(crate) async fn turn(setup: Setup) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    match setup {
        Setup::PostgresRedis => Some(POSTGRES_TURN.lock().await),
        Setup::Embedded => None,
    }
}

/// One place the shop keeps data, as text: where it is, and what it holds.
#[derive(Clone, Debug)]
pub(crate) struct Place {
    pub(crate) name: String,
    pub(crate) text: String,
}

impl Place {
    pub(crate) fn new(name: impl Into<String>, text: impl Into<String>) -> Place {
        Place {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// The largest index at or below `index` that is a character boundary of `text`.
fn boundary_at_or_below(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// Every place holding one of `needles` (compared without case), one line each: the needle,
/// the place and the text around it.
pub(crate) fn findings(places: &[Place], needles: &[String]) -> Vec<String> {
    let needles: Vec<(String, String)> = needles
        .iter()
        .map(|needle| (needle.clone(), needle.to_lowercase()))
        .collect();
    let mut found = Vec::new();
    for place in places {
        let haystack = place.text.to_lowercase();
        for (needle, lowered) in &needles {
            if let Some(at) = haystack.find(lowered.as_str()) {
                let start = boundary_at_or_below(&haystack, at.saturating_sub(80));
                let end = boundary_at_or_below(&haystack, at + lowered.len() + 80);
                let context: String = haystack[start..end]
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                found.push(format!("{needle:?} in {}: ...{context}...", place.name));
            }
        }
    }
    found
}

/// Fails, naming every finding, if any place holds one of `needles`.
pub(crate) fn assert_nowhere(places: &[Place], needles: &[String], what: &str) {
    let found = findings(places, needles);
    assert!(
        found.is_empty(),
        "{what}: {} finding(s) in {} place(s) scanned:\n{}",
        found.len(),
        places.len(),
        found
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Fails unless some place holds `needle`: proves that a scan sees what it should.
pub(crate) fn assert_somewhere(places: &[Place], needle: &str, what: &str) {
    assert!(
        !findings(places, &[needle.to_owned()]).is_empty(),
        "{what}: {needle:?} not found in {} place(s): the scan is blind",
        places.len()
    );
}

/// Every stored event as the store holds it (`read_all` gives the stored payload, not the
/// upcast one), with its metadata: one place per event.
pub(crate) async fn stored_events(data: &ServerData) -> Vec<Place> {
    let store = data.store().await;
    let mut places = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 1_000).await.expect("read the log");
        let Some(last) = page.last() else {
            break;
        };
        after = last.position;
        for event in &page {
            places.push(Place::new(
                format!(
                    "stored event {} ({} v{} of {}/{})",
                    event.position,
                    event.event_type,
                    event.schema_version,
                    event.stream_type,
                    event.stream_id
                ),
                format!(
                    "{} {}",
                    event.payload.get(),
                    serde_json::to_string(&event.metadata).expect("metadata")
                ),
            ));
        }
    }
    places
}

/// Every row of every table whose name `wanted` accepts, as text, one place per row: on
/// PostgreSQL every schema of the test's database (the live read models and the replay's
/// shadow, the event store, the secret store), embedded every SQLite file of the data
/// directory (the event store, the read models, their replay shadow, the secret store).
pub(crate) async fn database_rows(data: &ServerData, wanted: impl Fn(&str) -> bool) -> Vec<Place> {
    match &data.database {
        Some(database) => postgres_rows(database.url(), &wanted).await,
        None => {
            let mut files: Vec<_> = std::fs::read_dir(data.data_dir.path())
                .expect("the data directory")
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.extension().is_some_and(|extension| extension == "db"))
                .collect();
            files.sort();
            let mut places = Vec::new();
            for file in files {
                places.extend(sqlite_rows(&file, &wanted).await);
            }
            places
        }
    }
}

async fn postgres_rows(url: &str, wanted: &dyn Fn(&str) -> bool) -> Vec<Place> {
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("connect to PostgreSQL");
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_tables
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .expect("list the tables");
    let mut places = Vec::new();
    for (schema, table) in tables {
        if !wanted(&table) {
            continue;
        }
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT CAST(t AS TEXT) FROM \"{schema}\".\"{table}\" t"
        ))
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|error| panic!("read {schema}.{table}: {error}"));
        places.extend(
            rows.into_iter()
                .map(|row| Place::new(format!("row of {schema}.{table}"), row)),
        );
    }
    pool.close().await;
    places
}

async fn sqlite_rows(file: &Path, wanted: &dyn Fn(&str) -> bool) -> Vec<Place> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap_or_else(|error| panic!("open {}: {error}", file.display()));
    let file_name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
         ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .expect("list the tables");
    let mut places = Vec::new();
    for table in tables {
        if !wanted(&table) {
            continue;
        }
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
            .bind(&table)
            .fetch_all(&pool)
            .await
            .expect("list the columns");
        if columns.is_empty() {
            continue;
        }
        let row_text = columns
            .iter()
            .map(|column| format!("quote(\"{column}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {row_text} FROM \"{table}\""))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|error| panic!("read {file_name}:{table}: {error}"));
        places.extend(
            rows.into_iter()
                .map(|row| Place::new(format!("row of {file_name}:{table}"), row)),
        );
    }
    pool.close().await;
    places
}

/// A Redis value as text.
fn redis_text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(text) => text.clone(),
        redis::Value::Array(values) | redis::Value::Set(values) => {
            values.iter().map(redis_text).collect::<Vec<_>>().join(" ")
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(key, value)| format!("{} {}", redis_text(key), redis_text(value)))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}

/// Every key of the deployment's Redis (under its prefix) with its value, one place per key;
/// nothing when the data has no Redis.
pub(crate) async fn redis_entries(data: &ServerData) -> Vec<Place> {
    if data.redis_url.is_none() {
        return Vec::new();
    }
    let mut connection = redis(data).await;
    let pattern = format!("{}*", prefix(data));
    let mut keys = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut connection)
            .await
            .expect("SCAN");
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    let mut places = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("TYPE");
        let mut command = match kind.as_str() {
            "string" => redis::cmd("GET"),
            "hash" => redis::cmd("HGETALL"),
            "set" => redis::cmd("SMEMBERS"),
            "zset" => redis::cmd("ZRANGE"),
            "list" => redis::cmd("LRANGE"),
            "stream" => redis::cmd("XRANGE"),
            // Expired since the scan.
            "none" => continue,
            other => panic!("Redis key {key} has a type this scan does not read: {other}"),
        };
        command.arg(&key);
        match kind.as_str() {
            "zset" => {
                command.arg(0).arg(-1).arg("WITHSCORES");
            }
            "list" => {
                command.arg(0).arg(-1);
            }
            "stream" => {
                command.arg("-").arg("+");
            }
            _ => {}
        }
        let value: redis::Value = command
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("read Redis key {key}: {error}"));
        places.push(Place::new(
            format!("Redis {kind} {key}"),
            format!("{key} {}", redis_text(&value)),
        ));
    }
    places
}

/// Every file under `root` (but not under its subdirectories named in `skipped`), its bytes
/// as text, one place per file.
pub(crate) fn files_under(root: &Path, skipped: &[&str]) -> Vec<Place> {
    let mut places = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            if path.is_dir() {
                if !skipped.contains(&relative.as_str()) {
                    pending.push(path);
                }
            } else if let Ok(bytes) = std::fs::read(&path) {
                // A file may vanish between the listing and the read (a journal, say).
                places.push(Place::new(
                    format!("file {relative}"),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    places
}

/// Every answer a test got (headers and body), kept to be scanned.
#[derive(Clone, Debug, Default)]
pub(crate) struct Answers(Arc<Mutex<Vec<Place>>>);

impl Answers {
    /// Keeps the answer to `request` and returns its status and body (JSON, or `null`).
    pub(crate) async fn keep(&self, request: &str, response: Response) -> (StatusCode, Value) {
        let status = response.status();
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.expect("an answer's body");
        let value = serde_json::from_str(&body).unwrap_or(Value::Null);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Place::new(
                format!("answer to {request} ({status})"),
                format!("{headers}\n{body}"),
            ));
        (status, value)
    }

    /// Every answer kept so far.
    pub(crate) fn places(&self) -> Vec<Place> {
        self.places_since(0)
    }

    /// How many answers were kept so far.
    pub(crate) fn count(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The answers kept after the first `start`.
    pub(crate) fn places_since(&self, start: usize) -> Vec<Place> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .skip(start)
            .cloned()
            .collect()
    }

    /// `GET path` by `api`, kept.
    pub(crate) async fn get(&self, api: &Api, path: &str) -> (StatusCode, Value) {
        self.keep(&format!("GET {path}"), api.get(path).await).await
    }

    /// `GET path` by `api` with `X-Min-Position: position`, kept.
    pub(crate) async fn get_at(&self, api: &Api, path: &str, position: u64) -> (StatusCode, Value) {
        self.keep(&format!("GET {path}"), api.get_at(path, position).await)
            .await
    }

    /// `POST path` by `api`, kept.
    pub(crate) async fn post(&self, api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
        self.keep(&format!("POST {path}"), api.post(path, body).await)
            .await
    }
}

/// Every event of the global feed (`GET /events`, paged) as `api` reads it, each page kept.
pub(crate) async fn feed(answers: &Answers, api: &Api) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = answers
            .get(api, &format!("/events?after={after}&limit=1000"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page_events = page["events"].as_array().cloned().unwrap_or_default();
        if page_events.is_empty() {
            break;
        }
        after = page["next_after"].as_u64().expect("next_after");
        events.extend(page_events);
    }
    events
}

/// Every event of one stream (`GET /streams/{stream_type}/{stream_id}/events`, paged) as `api`
/// reads it, each page kept.
pub(crate) async fn stream(
    answers: &Answers,
    api: &Api,
    stream_type: &str,
    stream_id: &str,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after_version = 0;
    loop {
        let (status, page) = answers
            .get(
                api,
                &format!(
                    "/streams/{stream_type}/{stream_id}/events?after_version={after_version}&limit=1000"
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page_events = page["events"].as_array().cloned().unwrap_or_default();
        if page_events.is_empty() {
            break;
        }
        after_version = page["next_after_version"]
            .as_u64()
            .expect("next_after_version");
        events.extend(page_events);
    }
    events
}

/// Waits until every read model reached the head of the log (in SQL, and in Redis where the
/// deployment keeps carts and popularity there).
pub(crate) async fn read_models_caught_up(data: &ServerData) {
    if data.redis_url.is_some() {
        caught_up_to_head(
            data,
            &["products", "orders", "users"],
            &["carts", "popularity"],
        )
        .await;
    } else {
        caught_up_to_head(
            data,
            &["products", "orders", "carts", "popularity", "users"],
            &[],
        )
        .await;
    }
}

/// The order once it is no longer `PENDING`, read by `api` (and kept).
pub(crate) async fn ended_order(answers: &Answers, api: &Api, order_id: &str) -> Value {
    let found = eventually(Duration::from_secs(60), || async {
        let (status, order) = answers.get(api, &format!("/orders/{order_id}")).await;
        (status == StatusCode::OK && order["status"] != "PENDING").then_some(order)
    })
    .await;
    found
        .unwrap_or_else(|| panic!("order {order_id} did not end within 60 s"))
        .0
}

/// A customer of the test, with the values of their profile.
#[derive(Debug)]
pub(crate) struct Person {
    label: &'static str,
    /// In every text value of the person (email, names, address lines, shipping address).
    marker: String,
    email: String,
    renamed: String,
    phone: String,
    address_phone: String,
    pub(crate) user_id: String,
    /// A client acting as the person.
    pub(crate) api: Api,
    /// Their order of `POST /orders`, then their cart's.
    pub(crate) orders: Vec<String>,
    /// The position of their last write.
    position: u64,
}

impl Person {
    /// What must never be found in the clear: the marker and both phone numbers.
    pub(crate) fn needles(&self) -> Vec<String> {
        vec![
            self.marker.clone(),
            self.phone.clone(),
            self.address_phone.clone(),
        ]
    }
}

/// A phone number no other test uses.
fn unique_phone() -> String {
    let digits = Uuid::new_v4().as_u128() % 100_000_000;
    format!("+39 06 {:04} {:04}", digits / 10_000, digits % 10_000)
}

fn position_of(body: &Value) -> u64 {
    body["position"].as_u64().expect("position")
}

/// Registers `label` with their marker in every text value, logs them in, gives them a phone
/// and an address, then another name.
pub(crate) async fn register(server: &Server, answers: &Answers, label: &'static str) -> Person {
    let marker = format!("zq{}", &Uuid::new_v4().simple().to_string()[..10]);
    let email = format!("{marker}mail@example.com");
    let password = format!(
        "{label} keeps a long passphrase {}",
        Uuid::new_v4().simple()
    );
    let anonymous = server.anonymous();
    let (status, registered) = answers
        .post(
            &anonymous,
            "/users",
            json!({ "email": email, "password": password, "name": format!("{label} {marker}name") }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let user_id = registered["user_id"].as_str().expect("user_id").to_owned();
    let session = anonymous.log_in(&email, &password).await;
    let api = anonymous.with_credentials(&session.access_token);
    let phone = unique_phone();
    let address_phone = unique_phone();
    let (status, changed) = answers
        .keep(
            "PATCH /users/me",
            api.patch(
                "/users/me",
                json!({
                    "phone": phone,
                    "addresses": [{
                        "name": format!("{label} {marker}recipient"),
                        "line1": format!("1 Via {marker}street"),
                        "line2": format!("flat {marker}flat"),
                        "city": format!("{marker}city"),
                        "postal_code": "00184",
                        "country": "it",
                        "phone": address_phone,
                    }],
                }),
            )
            .await,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let renamed = format!("{label} {marker}renamed");
    let (status, changed) = answers
        .keep(
            "PATCH /users/me",
            api.patch("/users/me", json!({ "name": renamed })).await,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    Person {
        label,
        marker,
        email,
        renamed,
        phone,
        address_phone,
        user_id,
        api,
        orders: Vec::new(),
        position: position_of(&changed),
    }
}

/// `person` places an order (`POST /orders`) and checks out a cart of their own with a
/// shipping address.
pub(crate) async fn shop(answers: &Answers, person: &mut Person, product_id: &str) {
    let (status, placed) = answers
        .post(
            &person.api,
            "/orders",
            json!({
                "lines": [{ "product_id": product_id, "quantity": 2 }],
                "payment_token": "tok_visa",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{placed}");
    person
        .orders
        .push(placed["order_id"].as_str().expect("order_id").to_owned());
    let cart_id = format!(
        "cart-{}-{}",
        person.label.to_lowercase(),
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let (status, added) = answers
        .post(
            &person.api,
            &format!("/carts/{cart_id}/items"),
            json!({ "product_id": product_id, "quantity": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    let marker = &person.marker;
    let (status, checked_out) = answers
        .post(
            &person.api,
            &format!("/carts/{cart_id}/checkout"),
            json!({
                "payment_token": "tok_visa",
                "shipping_address": format!(
                    "{} {marker}shipto\n2 Via {marker}lane\n00184 Rome",
                    person.label
                ),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{checked_out}");
    person.orders.push(
        checked_out["order_id"]
            .as_str()
            .expect("order_id")
            .to_owned(),
    );
    person.position = position_of(&checked_out);
}

/// The tables of the data: every one (the event store's, the read models' and their replay
/// shadow's, the saga's and the secret store's).
fn every_table(_table: &str) -> bool {
    true
}

/// Everything the shop stores, as places: stored events, every table row, Redis, and every
/// file of the data directory but the mail outbox.
async fn stored_everywhere(data: &ServerData) -> Vec<Place> {
    let mut places = stored_events(data).await;
    places.extend(database_rows(data, every_table).await);
    places.extend(redis_entries(data).await);
    // The mail and text-message outboxes hold what was sent in the clear: messages already
    // sent, outside mercato (as a mailbox is), which an erasure cannot reach.
    places.extend(files_under(data.data_dir.path(), &["mail", "sms"]));
    places
}

/// The live rows of `table` (not its replay shadow's) that mention one of `ids`, sorted.
async fn rows_of(data: &ServerData, table: &str, ids: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = database_rows(data, |name| name == table)
        .await
        .into_iter()
        .filter(|place| !place.name.contains("mercato_replay") && !place.name.contains(".replay."))
        .map(|place| place.text)
        .filter(|row| ids.iter().any(|id| row.contains(id)))
        .collect();
    rows.sort();
    rows
}

/// A profile as an admin reads it once the users read model reached `position`.
async fn profile(answers: &Answers, server: &Server, user_id: &str, position: u64) -> Value {
    let (status, profile) = answers
        .get_at(server, &format!("/users/{user_id}"), position)
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    profile
}

fn assert_erased(profile: &Value) {
    for field in ["email", "name", "phone", "addresses"] {
        assert!(profile[field].is_null(), "{field} is not erased: {profile}");
    }
    assert_eq!(profile["erased"], true, "{profile}");
    assert_eq!(profile["status"], "erased", "{profile}");
}

fn assert_opens(profile: &Value, person: &Person) {
    assert_eq!(profile["email"], person.email.as_str(), "{profile}");
    assert_eq!(profile["name"], person.renamed.as_str(), "{profile}");
    assert_eq!(profile["phone"], person.phone.as_str(), "{profile}");
    assert_eq!(
        profile["addresses"][0]["city"],
        format!("{}city", person.marker),
        "{profile}"
    );
    assert_eq!(
        profile["addresses"][0]["phone"],
        person.address_phone.as_str(),
        "{profile}"
    );
    assert_eq!(profile["erased"], false, "{profile}");
}

/// `mercato audit verify` beside the data.
async fn audit_verifies(data: &ServerData) {
    let output = mercato_on(data, &["audit", "verify"])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run mercato audit verify");
    assert_eq!(
        output.status.code(),
        Some(0),
        "mercato audit verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn erased_people_leave_no_trace(setup: Setup, test_name: &str) {
    let _turn = turn(setup).await;
    let Some(data) = ServerData::new(setup, test_name).await else {
        return;
    };
    let server = Server::start_with(&data, "all", &["--log-format", "json"]).await;
    let answers = Answers::default();
    let (product_id, _) = server
        .create_product(
            "Erasure lamp",
            "a lamp for the records",
            10.0,
            100,
            "lighting",
        )
        .await;

    let mut ann = register(&server, &answers, "Ann").await;
    let mut bob = register(&server, &answers, "Bob").await;
    let mut cy = register(&server, &answers, "Cy").await;
    for person in [&mut ann, &mut bob, &mut cy] {
        shop(&answers, person, &product_id).await;
    }
    let mut orders_before = Vec::new();
    for person in [&ann, &bob, &cy] {
        for order_id in &person.orders {
            let order = ended_order(&answers, &server, order_id).await;
            assert_eq!(order["status"], "CONFIRMED", "{order}");
            assert_eq!(order["customer_id"], person.user_id.as_str(), "{order}");
            orders_before.push(order);
        }
    }
    read_models_caught_up(&data).await;

    // Before the erasure: the values are readable where they legitimately are, so the scans
    // below look for what exists.
    for person in [&ann, &bob, &cy] {
        let (status, own) = answers
            .get_at(&person.api, "/users/me", person.position)
            .await;
        assert_eq!(status, StatusCode::OK, "{own}");
        assert_opens(&own, person);
        // The verification mail is sent off the request's path: it may take a moment.
        let outbox = data.data_dir.path().join("mail");
        let needle = [person.email.clone()];
        eventually(Duration::from_secs(10), || async {
            (!findings(&files_under(&outbox, &[]), &needle).is_empty()).then_some(())
        })
        .await;
        let mail = files_under(&outbox, &[]);
        assert_somewhere(&mail, &person.email, "the verification mail in the outbox");
    }
    // Sealed in the log from the start: the person's events carry `pd1.` values only.
    let events = stored_events(&data).await;
    for person in [&ann, &bob, &cy] {
        let of_person: Vec<&Place> = events
            .iter()
            .filter(|place| place.name.ends_with(&format!("user/{})", person.user_id)))
            .collect();
        for event_type in ["UserRegistered", "UserProfileChanged"] {
            let sealed = of_person
                .iter()
                .filter(|place| place.name.contains(event_type))
                .all(|place| place.text.contains("\"pd1."));
            assert!(sealed, "{event_type} of {} is not sealed", person.label);
        }
        assert!(
            of_person
                .iter()
                .filter(|place| place.text.contains("\"pd1."))
                .count()
                >= 3,
            "{} has a registration and two profile changes, sealed",
            person.label
        );
    }
    let before = stored_everywhere(&data).await;
    for person in [&ann, &bob, &cy] {
        // The scans see the person's records: their id is in events, rows and files.
        assert_somewhere(&before, &person.user_id, "the stores before the erasure");
        assert_nowhere(
            &before,
            &person.needles(),
            &format!(
                "{}'s personal data in the clear before the erasure",
                person.label
            ),
        );
    }
    let users_before = rows_of(&data, "rm_users", &[&cy.user_id]).await;
    assert!(
        users_before.iter().all(|row| row.contains("pd1.")),
        "{users_before:?}"
    );
    if data.redis_url.is_some() {
        let in_redis = redis_entries(&data).await;
        assert_somewhere(&in_redis, "checkpoint:", "Redis");
    }

    // Ann erases herself; an admin erases Bob.
    let answers_before_erasure = answers.count();
    let (status, erased) = answers
        .keep("DELETE /users/me", ann.api.delete("/users/me").await)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{erased}");
    let ann_erased_at = position_of(&erased);
    let (status, erased) = answers
        .post(&server, &format!("/users/{}/erase", bob.user_id), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{erased}");
    let erased_at = position_of(&erased).max(ann_erased_at);

    for person in [&ann, &bob] {
        assert_erased(&profile(&answers, &server, &person.user_id, erased_at).await);
        // Their own client, whatever it may still read.
        let (_, own) = answers.get(&person.api, "/users/me").await;
        for field in ["email", "name", "phone", "addresses"] {
            assert!(own[field].is_null(), "{field}: {own}");
        }
    }
    assert_opens(
        &profile(&answers, &server, &cy.user_id, erased_at).await,
        &cy,
    );
    // Orders keep their lines and totals.
    for before in &orders_before {
        let order_id = before["order_id"].as_str().expect("order_id");
        let (status, after) = answers.get(&server, &format!("/orders/{order_id}")).await;
        assert_eq!(status, StatusCode::OK, "{after}");
        for field in ["customer_id", "status", "lines", "total"] {
            assert_eq!(after[field], before[field], "{field} of {after}");
        }
        assert!(
            !after["lines"].as_array().expect("lines").is_empty(),
            "{after}"
        );
    }
    for person in [&ann, &bob] {
        let (status, listed) = answers
            .get(&server, &format!("/customers/{}/orders", person.user_id))
            .await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        stream(&answers, &server, "user", &person.user_id).await;
    }
    let feed_events = feed(&answers, &server).await;
    assert!(
        feed_events
            .iter()
            .any(|event| event["event_type"] == "UserErased"
                && event["stream_id"] == ann.user_id.as_str()),
        "no UserErased for Ann in the feed"
    );
    read_models_caught_up(&data).await;

    let erased_needles: Vec<String> = [&ann, &bob]
        .iter()
        .flat_map(|person| person.needles())
        .collect();
    let after = stored_everywhere(&data).await;
    assert_nowhere(
        &after,
        &erased_needles,
        "erased personal data in the stores",
    );
    assert_nowhere(&after, &cy.needles(), "Cy's personal data in the clear");
    let answers_after = answers.places_since(answers_before_erasure);
    assert_nowhere(
        &answers_after,
        &erased_needles,
        "erased personal data in the answers after the erasure",
    );
    // The answers scanned are not blind: Cy's profile, read after the erasure, shows her.
    assert_somewhere(&answers_after, &cy.marker, "the answers after the erasure");

    // The log still verifies: the events of the erased kept their bytes.
    audit_verifies(&data).await;

    // A full rebuild gives the same erased read models.
    let ids: Vec<&str> = [&ann, &bob, &cy]
        .iter()
        .map(|person| person.user_id.as_str())
        .collect();
    let users_before = rows_of(&data, "rm_users", &ids).await;
    let orders_before_replay = rows_of(&data, "rm_orders", &ids).await;
    assert_eq!(users_before.len(), 3, "{users_before:?}");
    assert_eq!(orders_before_replay.len(), 6, "{orders_before_replay:?}");
    let (code, stdout, stderr) = run(&data, &["replay", "--all"]).await;
    assert_eq!(code, 0, "mercato replay --all: {stderr}");
    assert!(stdout.contains("users\trebuilt and in service"), "{stdout}");
    read_models_caught_up(&data).await;
    assert_eq!(rows_of(&data, "rm_users", &ids).await, users_before);
    assert_eq!(
        rows_of(&data, "rm_orders", &ids).await,
        orders_before_replay
    );
    let head = data.store().await.head_position().await.expect("head");
    for person in [&ann, &bob] {
        assert_erased(&profile(&answers, &server, &person.user_id, head).await);
    }
    assert_opens(&profile(&answers, &server, &cy.user_id, head).await, &cy);
    let rebuilt = stored_everywhere(&data).await;
    assert_nowhere(
        &rebuilt,
        &erased_needles,
        "erased personal data in the stores after the replay",
    );
    assert_nowhere(
        &rebuilt,
        &cy.needles(),
        "Cy's personal data in the clear after the replay",
    );
    audit_verifies(&data).await;

    // Product search never held a person's data: the catalogue is found, the markers are not.
    // (Searched last: the query itself, marker and all, becomes a key of the search cache.)
    let (status, found) = answers.get(&server, "/search?q=erasure").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["total"], 1, "{found}");
    for person in [&ann, &bob, &cy] {
        for word in ["name", "renamed", "city", "street", "shipto"] {
            let (status, found) = answers
                .get(&server, &format!("/search?q={}{word}", person.marker))
                .await;
            assert_eq!(status, StatusCode::OK, "{found}");
            assert_eq!(found["total"], 0, "{found}");
        }
    }
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_customers_leave_no_personal_data_in_events_read_models_files_or_answers_embedded() {
    erased_people_leave_no_trace(Setup::Embedded, "erasure_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_customers_leave_no_personal_data_in_events_read_models_redis_or_answers_on_postgres()
 {
    erased_people_leave_no_trace(Setup::PostgresRedis, "erasure_postgres").await;
}
