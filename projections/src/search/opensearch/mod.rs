//! Product search on OpenSearch (or Elasticsearch): the networked adapter of the search port.
//!
//! Documents live in a concrete index `{alias}-000001`, `{alias}-000002`, ... that one alias
//! (`mercato-products` by default) points at: searches go through the alias, the projection writes
//! the index the read-model database records as in service (see below), and a rebuild fills the
//! next index and then moves the alias in one atomic request.
//!
//! Each `ProductUpdated` (the whole product, see [`domain::product::ProductUpdated`]) becomes
//! one `index` action of a `_bulk` request, versioned with the product stream's version and
//! `version_type=external_gte`: a replayed or redelivered older event is refused by OpenSearch
//! (409, counted as done), so retrying a whole batch, or replaying the log, never puts an older
//! product back over a newer one. The product stream has no delete event, so nothing is ever
//! deleted from the index.
//!
//! Searches ask what [`crate::search::TantivySearch`] answers: every word of the text in the name
//! (boosted twice) or the description, stemmed; an exact category (case-insensitive); a price
//! range in minor units, bounds included; ordered by relevance, then popularity; one page.
//!
//! Popularity (`StockCommitted`, `ProductViewed`) is kept by [`OpenSearchProjection`] in the
//! read-model database (`rm_search_popularity`), committed with its checkpoint, and sent to the
//! index as absolute values: in the document of a product the batch indexes, else as a partial
//! `update` of the document's `popularity`. Sending the same values again changes nothing, so a
//! batch retried after a failure between the bulk request and the commit counts each event once.
//!
//! # Which index the projection writes, and rebuilding it beside the one in service
//!
//! The projection does not write through the alias: it writes into the concrete index that the
//! read-model database records as in service (`rm_search_index`, one row per alias, taken from the
//! alias the first time). A rebuild (`mercato replay --projection search`) fills a new numbered
//! index from the log, with its popularity and checkpoint in the replay's shadow database; once
//! caught up, one transaction of the read-model database replaces `rm_search_index` and
//! `rm_search_popularity` with the shadow's rows and moves the checkpoints (refusing while the
//! live checkpoint is beyond the rebuilt one), and moves the alias with one `POST /_aliases`
//! (remove and add, atomic in the cluster) before it commits ([`swap_in_rebuilt`]). The alias,
//! the checkpoint, the popularity and the record thus change together: the alias moves inside the
//! transaction, and if the commit fails the alias is moved back.
//!
//! Why a serving projection cannot spoil the rebuilt index with a batch it read before the swap:
//!
//! - It reads the record and its checkpoint in one statement before it sends anything. A batch
//!   that reads them after the swap committed sees the new index and the rebuilt checkpoint; a
//!   batch at or below that checkpoint is refused there ([`ProjectionError::CheckpointMoved`])
//!   without a request, and the runner reads on from the new checkpoint.
//! - A batch that read them before the swap sends its documents to the *old* index, even if the
//!   alias has moved meanwhile (writing through the alias, a batch could straddle the alias move
//!   and put popularity computed from the replaced `rm_search_popularity` into the rebuilt index).
//!   Its commit then checks the record again, in the transaction that stores its popularity and
//!   checkpoint: on PostgreSQL under `LOCK TABLE rm_search_index IN SHARE MODE` (the swap takes
//!   `SHARE ROW EXCLUSIVE` first, so one waits for the other); on SQLite the transaction reads
//!   the record before it writes, and its first write fails if a swap committed after that read
//!   (a snapshot that saw the old record cannot write). Either way, finding another index in
//!   service, it rolls back, answers `CheckpointMoved`, and deletes the old index if the alias
//!   left it (its late bulk may have created it again after the rebuild deleted it). So nothing a
//!   batch computed before the swap reaches the index in service, and the batch is applied again
//!   from the rebuilt checkpoint.
//! - The lock is not held while the bulk request runs: a projection's transaction only starts
//!   after it, so no lock and no transaction id wait on the cluster.
//!
//! A process checks the alias against the record once, and again whenever the record changes, so
//! indices changed outside mercato are reported instead of written into unseen.
//!
//! Its files, by role: `mod.rs` is the client (the URL, credentials, requests and their
//! errors); `admin.rs` creates, lists and deletes indices and moves the alias; `bulk.rs` writes
//! documents; `query.rs` searches; `projection.rs` is the projection in service; `swap.rs`
//! records the index in service and swaps a rebuilt one in.

mod admin;
mod bulk;
mod projection;
mod query;
mod swap;

pub use projection::OpenSearchProjection;
pub use swap::{REBUILT_TABLES, index_in_service, record_in_service, swap_in_rebuilt};

use std::fmt;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::ProjectionError;

/// The alias searches and writes go through, unless configured otherwise.
pub const DEFAULT_ALIAS: &str = "mercato-products";

/// How many digits the number of a concrete index has: `{alias}-000001`.
const INDEX_NUMBER_DIGITS: usize = 6;

/// How long to wait for a TCP connection to the cluster.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request may take in all (a bulk waiting for a refresh included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many next numbers a rebuild tries when indices of those numbers exist already.
const NEXT_INDEX_ATTEMPTS: u64 = 5;

/// How many failed documents an error names (the rest are counted).
const FAILURES_NAMED: usize = 10;

/// The `refresh` parameter of each bulk request: when indexed documents become searchable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Refresh {
    /// `refresh=wait_for`: a batch returns once its documents are searchable, so a reader that
    /// waits for the projection's checkpoint sees them (read-your-writes), as with Tantivy.
    #[default]
    WaitFor,
    /// `refresh=true`: forces a refresh per batch (costly; for tests and tiny volumes).
    Immediate,
    /// No parameter: documents become searchable at the index's next refresh (1 s by default).
    Background,
}

impl Refresh {
    fn parameter(self) -> Option<&'static str> {
        match self {
            Refresh::WaitFor => Some("wait_for"),
            Refresh::Immediate => Some("true"),
            Refresh::Background => None,
        }
    }
}

/// The `knn_vector` field `embedding` of the mapping, for semantic search (OpenSearch k-NN
/// plugin only; off unless configured). Nothing writes embeddings yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingMapping {
    pub dimension: u32,
    /// `nmslib` in the seed; newer OpenSearch releases prefer `faiss` or `lucene`.
    pub engine: String,
    pub space_type: String,
}

impl EmbeddingMapping {
    /// The seed's field: 384 dimensions, `nmslib`, cosine similarity.
    pub fn seed() -> Self {
        EmbeddingMapping {
            dimension: 384,
            engine: "nmslib".to_owned(),
            space_type: "cosinesimil".to_owned(),
        }
    }
}

/// The product search index on an OpenSearch or Elasticsearch cluster.
#[derive(Clone)]
pub struct OpenSearchIndex {
    client: reqwest::Client,
    /// The cluster's URL without credentials; its path ends with `/`.
    base: Url,
    /// User and password taken out of the URL, sent as HTTP basic authentication.
    credentials: Option<(String, Option<String>)>,
    alias: String,
    embeddings: Option<EmbeddingMapping>,
    refresh: Refresh,
}

impl fmt::Debug for OpenSearchIndex {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OpenSearchIndex")
            .field("base_url", &self.base.as_str())
            .field(
                "user",
                &self.credentials.as_ref().map(|(user, _)| user.as_str()),
            )
            .field(
                "password",
                &self
                    .credentials
                    .as_ref()
                    .and_then(|(_, password)| password.as_ref().map(|_| "<redacted>")),
            )
            .field("alias", &self.alias)
            .field("embeddings", &self.embeddings)
            .field("refresh", &self.refresh)
            .finish()
    }
}

/// The body of a request.
enum Body {
    Empty,
    Json(Value),
    Ndjson(String),
}

impl OpenSearchIndex {
    /// The projection that feeds the index (its checkpoints and `replay --projection` name):
    /// the same as the embedded index's, since one of the two is configured.
    pub const NAME: &'static str = "search";

    /// An index reached at `base_url` (`http://host:9200`, with or without a trailing slash or a
    /// path prefix, `http://user:password@host:9200` for basic authentication; the user and
    /// password may be percent-encoded) under `alias` (usually [`DEFAULT_ALIAS`]). Nothing is
    /// sent until a method is called.
    pub fn new(base_url: &str, alias: &str) -> Result<Self, ProjectionError> {
        let mut base = Url::parse(base_url.trim()).map_err(|error| {
            storage(format!(
                "the OpenSearch URL is not a URL ({error}): expected http://[user:password@]host:9200"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(storage(format!(
                "the OpenSearch URL must start with http:// or https://, not {}:",
                base.scheme()
            )));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(storage(
                "the OpenSearch URL has no host: expected http://[user:password@]host:9200",
            ));
        }
        let user = percent_decode(base.username());
        let password = base.password().map(percent_decode);
        let credentials = (!user.is_empty() || password.is_some()).then_some((user, password));
        // Both only fail for URLs that cannot have credentials, excluded above.
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        validate_index_name(alias, "alias")?;
        if alias.len() > 255 - INDEX_NUMBER_DIGITS - 1 {
            return Err(storage(format!(
                "the search alias {alias:?} is too long: at most {} bytes",
                255 - INDEX_NUMBER_DIGITS - 1
            )));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| storage(format!("cannot build the OpenSearch client: {error}")))?;
        Ok(OpenSearchIndex {
            client,
            base,
            credentials,
            alias: alias.to_owned(),
            embeddings: None,
            refresh: Refresh::default(),
        })
    }

    /// Adds the `knn_vector` field `embedding` to the mapping of the indices created from now on.
    pub fn with_embeddings(mut self, embeddings: EmbeddingMapping) -> Self {
        self.embeddings = Some(embeddings);
        self
    }

    /// When indexed documents become searchable (default: [`Refresh::WaitFor`]).
    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = refresh;
        self
    }

    /// The alias searches and writes go through.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The cluster's URL, without credentials.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The name of concrete index number `number`: `{alias}-{number:06}`.
    pub fn index_name(&self, number: u64) -> String {
        format!(
            "{}-{number:0width$}",
            self.alias,
            width = INDEX_NUMBER_DIGITS
        )
    }

    /// The number of concrete index `name` of this alias, if it is one (`{alias}-{digits}`).
    fn index_number(&self, name: &str) -> Option<u64> {
        let digits = name.strip_prefix(&self.alias)?.strip_prefix('-')?;
        if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if !segments.is_empty()
            && let Ok(mut path) = url.path_segments_mut()
        {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one request; answers its status and body. Fails only when no answer came.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Body,
    ) -> Result<(StatusCode, Vec<u8>), ProjectionError> {
        let what = format!("{method} {}", url.path());
        let mut request = self.client.request(method, url);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, password.as_deref());
        }
        request = match body {
            Body::Empty => request,
            Body::Json(value) => request
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&value)?),
            Body::Ndjson(text) => request
                .header(CONTENT_TYPE, "application/x-ndjson")
                .body(text),
        };
        let response = request
            .send()
            .await
            .map_err(|error| storage(format!("OpenSearch {what}: {error}")))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| {
            storage(format!(
                "OpenSearch {what}: reading the answer failed: {error}"
            ))
        })?;
        Ok((status, body.to_vec()))
    }
}

fn storage(message: impl Into<String>) -> ProjectionError {
    ProjectionError::Storage(message.into())
}

/// An error for a request the cluster answered with `status`, with the cause it gave.
fn http_error(what: &str, status: StatusCode, body: &[u8]) -> ProjectionError {
    let detail = match serde_json::from_slice::<Value>(body) {
        Ok(value) => match value.get("error") {
            Some(error) => describe_error(error),
            None => truncate(&value.to_string()),
        },
        Err(_) => truncate(&String::from_utf8_lossy(body)),
    };
    if detail.is_empty() {
        storage(format!("OpenSearch {what} answered HTTP {status}"))
    } else {
        storage(format!(
            "OpenSearch {what} answered HTTP {status}: {detail}"
        ))
    }
}

/// `type: reason` of an OpenSearch error object (or the error text itself).
fn describe_error(error: &Value) -> String {
    match error {
        Value::String(text) => text.clone(),
        Value::Object(fields) => {
            let kind = fields
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("error");
            let reason = fields.get("reason").and_then(Value::as_str).unwrap_or("");
            let cause = fields
                .get("caused_by")
                .map(|cause| format!(" (caused by {})", describe_error(cause)))
                .unwrap_or_default();
            format!("{kind}: {reason}{cause}")
        }
        other => truncate(&other.to_string()),
    }
}

/// The `error.type` of an error answer.
fn error_type(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("error")?.get("type")?.as_str().map(str::to_owned)
}

fn truncate(text: &str) -> String {
    const LIMIT: usize = 300;
    let text = text.trim();
    match text.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Index and alias names: lowercase letters, digits, `-`, `_` and `.`, not starting with `-`,
/// `_` or `.` (OpenSearch's restrictions, a little stricter).
fn validate_index_name(name: &str, what: &str) -> Result<(), ProjectionError> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '_', '.'])
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'_' | b'.')
        });
    if valid {
        Ok(())
    } else {
        Err(storage(format!(
            "{name:?} is not a valid search {what} name: use lowercase letters, digits, '-', '_' \
             and '.', not first"
        )))
    }
}

/// Decodes `%XX` escapes (a URL's user and password); invalid escapes stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && let Some(hex) = bytes.get(at + 1..at + 3)
            && hex.iter().all(u8::is_ascii_hexdigit)
            && let Some(byte) = std::str::from_utf8(hex)
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            decoded.push(byte);
            at += 3;
            continue;
        }
        decoded.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
