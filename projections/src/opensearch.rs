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
//! Popularity (`OrderCreated`, `ProductViewed`) is kept by [`OpenSearchProjection`] in the
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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::ProductEvent;
use eventstore::RecordedEvent;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::cache::{Cache, SEARCH_SCOPE};
use crate::readdb::{ReadBackend, ReadDb};
use crate::replay::{self as rebuild, Swap};
use crate::runner::{Feed, Projection};
use crate::search::{ProductDoc, SearchIndex, SearchQuery, SearchResult};
use crate::{ProjectionError, decode, popularity_signals};

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

/// The tables of the read-model database that a rebuilt index brings with it and that are swapped
/// in with it, in the order the projection's batches lock them.
pub const REBUILT_TABLES: &[&str] = &["rm_search_index", "rm_search_popularity"];

/// The concrete index `db` records as the one of `alias` in service, if any.
pub async fn index_in_service(db: &ReadDb, alias: &str) -> Result<Option<String>, ProjectionError> {
    let row = sqlx::query("SELECT index_name FROM rm_search_index WHERE alias = $1")
        .bind(alias)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(row) => Some(sqlx::Row::try_get(&row, 0)?),
        None => None,
    })
}

/// Records `index` as the concrete index of `alias` in `db`: in a replay's shadow, the rebuilt
/// index, which the swap then puts in the read-model database together with the alias.
pub async fn record_in_service(
    db: &ReadDb,
    alias: &str,
    index: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO rm_search_index (alias, index_name, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (alias) DO UPDATE SET index_name = excluded.index_name,
             updated_at = excluded.updated_at",
    )
    .bind(alias)
    .bind(index)
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Puts the rebuilt index `rebuilt` in service: in one transaction of the live read-model database
/// `live` (at `live_url`), unless a live checkpoint of the search projection is beyond
/// `checkpoint` ([`Swap::Behind`]), replaces [`REBUILT_TABLES`] with the shadow's rows (the record
/// names `rebuilt`, the popularity is the rebuild's), sets every live checkpoint to `checkpoint`,
/// and moves `index`'s alias to `rebuilt` before committing. If the swap does not end in a commit
/// after the alias moved, the alias is moved back, unless the database records `rebuilt` after
/// all; when that record cannot be read, the error says so and nothing is undone. Answers the
/// outcome and, once swapped, the index the alias left (for the caller to delete).
pub async fn swap_in_rebuilt(
    index: &OpenSearchIndex,
    live: &ReadDb,
    live_url: &str,
    shadow: &ReadDb,
    rebuilt: &str,
    checkpoint: u64,
) -> Result<(Swap, Option<String>), ProjectionError> {
    let mut left = None;
    let swapped = rebuild::swap_tables_with(
        live,
        live_url,
        shadow,
        OpenSearchIndex::NAME,
        REBUILT_TABLES,
        checkpoint,
        || async {
            left = index.swap_alias(rebuilt).await?;
            Ok(())
        },
    )
    .await;
    let (Some(old), false) = (&left, matches!(swapped, Ok(Swap::Swapped))) else {
        return swapped.map(|swap| (swap, left));
    };
    // The alias moved and the swap did not end in its commit (or the commit failed): what the
    // read-model database records says whether the transaction landed.
    let alias = index.alias();
    let failure = |what: String| match &swapped {
        Err(error) => storage(format!("{error}; {what}")),
        Ok(_) => storage(what),
    };
    match index_in_service(live, alias).await {
        // It committed after all: the alias stays on the rebuilt index.
        Ok(recorded) if recorded.as_deref() == Some(rebuilt) => {
            swapped.map(|swap| (swap, left.clone()))
        }
        Ok(_) => {
            // Not committed: serve the old index again.
            if let Err(undo) = index.swap_alias(old).await {
                return Err(failure(format!(
                    "the alias {alias} was moved to {rebuilt} but the read-model database was \
                     not, and moving it back to {old} failed too ({undo}): move it back with \
                     POST /_aliases, then run the replay again"
                )));
            }
            swapped.map(|swap| (swap, None))
        }
        Err(lookup) => Err(failure(format!(
            "the alias {alias} was moved to {rebuilt}, and whether the read-model database \
             records that could not be read ({lookup}): point the alias at the index \
             `rm_search_index` names"
        ))),
    }
}

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

    /// The body that creates a concrete index: the seed's settings and mapping, with the fields
    /// the search answers need (`price_minor`, `category`, `version`) and a stemming analyzer
    /// like Tantivy's `en_stem` on `name` and `description`.
    pub fn index_definition(&self) -> Value {
        let mut settings = json!({
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
                "filter": {
                    "product_stemmer": { "type": "snowball", "language": "English" }
                },
                "normalizer": {
                    "product_keyword": { "type": "custom", "filter": ["lowercase"] }
                }
            }
        });
        let mut properties = json!({
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
        });
        if let Some(embeddings) = &self.embeddings {
            settings["index.knn"] = json!(true);
            properties["embedding"] = json!({
                "type": "knn_vector",
                "dimension": embeddings.dimension,
                "method": {
                    "name": "hnsw",
                    "engine": embeddings.engine,
                    "space_type": embeddings.space_type
                }
            });
        }
        json!({
            "settings": settings,
            "mappings": { "dynamic": false, "properties": properties }
        })
    }

    /// Checks that the cluster answers (`GET /`), for readiness.
    pub async fn ping(&self) -> Result<(), ProjectionError> {
        let (status, body) = self
            .call(Method::GET, self.base.clone(), Body::Empty)
            .await?;
        if !status.is_success() {
            return Err(http_error("GET /", status, &body));
        }
        Ok(())
    }

    /// The concrete indices the alias points at (none when it does not exist), by name.
    pub async fn current_indices(&self) -> Result<Vec<String>, ProjectionError> {
        let url = self.url(&["_alias", &self.alias], &[]);
        let (status, body) = self.call(Method::GET, url, Body::Empty).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(http_error(
                &format!("GET /_alias/{}", self.alias),
                status,
                &body,
            ));
        }
        let indices: BTreeMap<String, Value> = serde_json::from_slice(&body).map_err(|error| {
            storage(format!(
                "OpenSearch GET /_alias/{} answered an unexpected body: {error}",
                self.alias
            ))
        })?;
        Ok(indices.into_keys().collect())
    }

    /// Makes sure the alias exists: when it does not, creates `{alias}-000001` with
    /// [`Self::index_definition`] (or keeps it if it exists already, from an earlier attempt or a
    /// concurrent process) and points the alias at it. Returns the index the alias points at.
    pub async fn ensure_index(&self) -> Result<String, ProjectionError> {
        if let Some(current) = self.current_indices().await?.into_iter().next() {
            return Ok(current);
        }
        let index = self.index_name(1);
        if !self.create_index(&index).await? {
            tracing::info!(%index, "search index exists already: keeping it");
        }
        self.update_aliases(json!({
            "actions": [{ "add": { "index": index, "alias": self.alias } }]
        }))
        .await?;
        tracing::info!(alias = %self.alias, %index, "search index created");
        Ok(index)
    }

    /// Creates the next concrete index (`{alias}-{n+1}`, after the highest existing one) with
    /// [`Self::index_definition`], for a rebuild: fill it with [`Self::apply_events_into`] from
    /// the start of the log, then [`Self::swap_alias`] to it. Returns its name.
    pub async fn rebuild_into_new_index(&self) -> Result<String, ProjectionError> {
        let highest = self
            .indices()
            .await?
            .keys()
            .filter_map(|name| self.index_number(name))
            .max()
            .unwrap_or(0);
        // An index the listing missed (created meanwhile) is skipped, a few times over.
        for number in highest + 1..=highest + NEXT_INDEX_ATTEMPTS {
            let index = self.index_name(number);
            if self.create_index(&index).await? {
                tracing::info!(alias = %self.alias, %index, "search index created for a rebuild");
                return Ok(index);
            }
        }
        Err(storage(format!(
            "cannot create a new index for the alias {}: {}-{:0width$} to {} exist already",
            self.alias,
            self.alias,
            highest + 1,
            self.index_name(highest + NEXT_INDEX_ATTEMPTS),
            width = INDEX_NUMBER_DIGITS
        )))
    }

    /// The concrete indices of this alias (`{alias}-NNNNNN`), by name, each with whether the
    /// alias points at it (one `GET /{alias}-*/_alias`).
    pub async fn indices(&self) -> Result<BTreeMap<String, bool>, ProjectionError> {
        let pattern = format!("{}-*", self.alias);
        let url = self.url(&[&pattern, "_alias"], &[]);
        let (status, body) = self.call(Method::GET, url, Body::Empty).await?;
        let existing: BTreeMap<String, Value> = match status {
            StatusCode::NOT_FOUND => BTreeMap::new(),
            status if status.is_success() => serde_json::from_slice(&body).map_err(|error| {
                storage(format!(
                    "OpenSearch GET /{pattern}/_alias answered an unexpected body: {error}"
                ))
            })?,
            status => {
                return Err(http_error(&format!("GET /{pattern}/_alias"), status, &body));
            }
        };
        Ok(existing
            .into_iter()
            .filter(|(name, _)| self.index_number(name).is_some())
            .map(|(name, aliases)| {
                let in_service = aliases
                    .get("aliases")
                    .and_then(|aliases| aliases.get(&self.alias))
                    .is_some();
                (name, in_service)
            })
            .collect())
    }

    /// Moves the alias to `new_index` in one atomic `POST /_aliases` (remove from the old index,
    /// which must still hold it, and add to the new one). Returns the index it left, `None` when
    /// the alias did not exist or already pointed at `new_index` alone.
    pub async fn swap_alias(&self, new_index: &str) -> Result<Option<String>, ProjectionError> {
        validate_index_name(new_index, "index")?;
        if new_index == self.alias {
            return Err(storage(format!(
                "cannot point the alias {} at itself",
                self.alias
            )));
        }
        let current = self.current_indices().await?;
        if current == [new_index] {
            return Ok(None);
        }
        let old: Vec<&String> = current
            .iter()
            .filter(|index| index.as_str() != new_index)
            .collect();
        let mut actions: Vec<Value> = old
            .iter()
            .map(|index| {
                json!({ "remove": { "index": index, "alias": self.alias, "must_exist": true } })
            })
            .collect();
        actions.push(json!({ "add": { "index": new_index, "alias": self.alias } }));
        self.update_aliases(json!({ "actions": actions })).await?;
        if old.len() > 1 {
            tracing::warn!(alias = %self.alias, ?old, "the alias pointed at several indices");
        }
        tracing::info!(alias = %self.alias, new_index, ?old, "search alias moved");
        Ok(old.first().map(|index| (*index).clone()))
    }

    /// Deletes concrete index `index` of this alias (`{alias}-{digits}`), refusing the one the
    /// alias points at. An index that does not exist is not an error.
    pub async fn delete_index(&self, index: &str) -> Result<(), ProjectionError> {
        if self.index_number(index).is_none() {
            return Err(storage(format!(
                "refusing to delete {index:?}: not an index of the alias {} ({}-NNNNNN)",
                self.alias, self.alias
            )));
        }
        if self
            .current_indices()
            .await?
            .iter()
            .any(|live| live == index)
        {
            return Err(storage(format!(
                "refusing to delete {index}: the alias {} points at it",
                self.alias
            )));
        }
        let (status, body) = self
            .call(Method::DELETE, self.url(&[index], &[]), Body::Empty)
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(http_error(&format!("DELETE /{index}"), status, &body))
    }

    /// Indexes the product events of `events` through the alias: one `POST /_bulk` with a
    /// versioned `index` action per `ProductUpdated`. Other events are ignored. Documents refused
    /// for being older than the stored one (409) count as done; any other refused document fails
    /// the batch (retrying it all is safe).
    pub async fn apply_events(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        self.bulk(&self.alias, true, events, &BTreeMap::new()).await
    }

    /// As [`Self::apply_events`], with the popularity of products by id (absolute values): the
    /// documents indexed carry theirs, and every other product of `popularity` gets a partial
    /// `update` of its `popularity` (a product not indexed yet is skipped: its document will
    /// carry it).
    pub async fn apply_events_with_popularity(
        &self,
        events: &[RecordedEvent],
        popularity: &BTreeMap<String, i64>,
    ) -> Result<(), ProjectionError> {
        self.bulk(&self.alias, true, events, popularity).await
    }

    /// As [`Self::apply_events_with_popularity`], into concrete index `index` (not through the
    /// alias).
    pub async fn apply_events_with_popularity_into(
        &self,
        index: &str,
        events: &[RecordedEvent],
        popularity: &BTreeMap<String, i64>,
    ) -> Result<(), ProjectionError> {
        validate_index_name(index, "index")?;
        self.bulk(index, index == self.alias, events, popularity)
            .await
    }

    /// As [`Self::apply_events`], into concrete index `index` (a rebuild's new index).
    pub async fn apply_events_into(
        &self,
        index: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        validate_index_name(index, "index")?;
        self.bulk(index, index == self.alias, events, &BTreeMap::new())
            .await
    }

    async fn bulk(
        &self,
        target: &str,
        through_alias: bool,
        events: &[RecordedEvent],
        popularity: &BTreeMap<String, i64>,
    ) -> Result<(), ProjectionError> {
        let mut body = String::new();
        let mut ids = Vec::new();
        let mut indexed = std::collections::BTreeSet::new();
        for event in events {
            if event.event_type != "ProductUpdated" {
                continue;
            }
            let ProductEvent::ProductUpdated(updated) = decode::<ProductEvent>(event)? else {
                continue;
            };
            let product = ProductDoc {
                product_id: updated.product_id.to_string(),
                name: updated.name,
                description: updated.description,
                price_minor: updated.price.minor(),
                stock_qty: i64::from(updated.stock_qty),
                category: updated.category,
                popularity: popularity
                    .get(&updated.product_id.to_string())
                    .copied()
                    .unwrap_or(0),
                updated_at: event
                    .occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                version: updated.version,
            };
            let action = BulkAction {
                index: BulkIndexMeta {
                    index: target,
                    id: &product.product_id,
                    version: event.stream_version,
                    version_type: "external_gte",
                },
            };
            let source = SourceDocument {
                // Exact decimal text of the price in major units (no floating point).
                price: RawValue::from_string(updated.price.to_string())?,
                product: &product,
            };
            body.push_str(&serde_json::to_string(&action)?);
            body.push('\n');
            body.push_str(&serde_json::to_string(&source)?);
            body.push('\n');
            indexed.insert(product.product_id.clone());
            ids.push(product.product_id);
        }
        let n_indexed = ids.len();
        for (product_id, points) in popularity {
            if indexed.contains(product_id) {
                continue;
            }
            let action = BulkUpdate {
                update: BulkUpdateMeta {
                    index: target,
                    id: product_id,
                    retry_on_conflict: 3,
                },
            };
            body.push_str(&serde_json::to_string(&action)?);
            body.push('\n');
            body.push_str(&serde_json::to_string(
                &json!({ "doc": { "popularity": points } }),
            )?);
            body.push('\n');
            ids.push(product_id.clone());
        }
        if ids.is_empty() {
            return Ok(());
        }
        let mut query = Vec::new();
        if let Some(refresh) = self.refresh.parameter() {
            query.push(("refresh", refresh));
        }
        if through_alias {
            // Never let a write auto-create an index named like the alias.
            query.push(("require_alias", "true"));
        }
        let url = self.url(&["_bulk"], &query);
        let (status, response) = self.call(Method::POST, url, Body::Ndjson(body)).await?;
        if !status.is_success() {
            return Err(http_error("POST /_bulk", status, &response));
        }
        let response: BulkResponse = serde_json::from_slice(&response).map_err(|error| {
            storage(format!(
                "OpenSearch POST /_bulk answered an unexpected body: {error}"
            ))
        })?;
        if response.items.len() != ids.len() {
            return Err(storage(format!(
                "OpenSearch POST /_bulk answered {} items for {} documents",
                response.items.len(),
                ids.len()
            )));
        }
        let mut failures = Vec::new();
        let mut stale = 0usize;
        for (position, (item, sent_id)) in response.items.iter().zip(&ids).enumerate() {
            let Some(result) = item.values().next() else {
                failures.push(format!("document {sent_id}: an empty item"));
                continue;
            };
            let id = result.id.as_deref().unwrap_or(sent_id);
            let error_type = result
                .error
                .as_ref()
                .and_then(|error| error.get("type"))
                .and_then(Value::as_str);
            if result.status == 409 && error_type == Some("version_conflict_engine_exception") {
                stale += 1; // the index holds this product at a newer (or the same) version
                continue;
            }
            if (200..300).contains(&result.status) && result.error.is_none() {
                continue;
            }
            if position >= n_indexed
                && result.status == 404
                && error_type == Some("document_missing_exception")
            {
                continue; // popularity of a product not indexed yet: its document will carry it
            }
            failures.push(format!(
                "document {id}: status {}: {}",
                result.status,
                result
                    .error
                    .as_ref()
                    .map_or_else(|| "no error detail".to_owned(), describe_error)
            ));
        }
        if !failures.is_empty() {
            let count = failures.len();
            let mut named: Vec<String> = failures.into_iter().take(FAILURES_NAMED).collect();
            if count > FAILURES_NAMED {
                named.push(format!("and {} more", count - FAILURES_NAMED));
            }
            return Err(storage(format!(
                "OpenSearch bulk indexing into {target}: {count} of {} documents failed: {}",
                ids.len(),
                named.join("; ")
            )));
        }
        tracing::debug!(
            target_index = target,
            documents = ids.len(),
            stale,
            took_ms = response.took,
            "search documents indexed"
        );
        Ok(())
    }

    /// The query DSL of a search: what [`crate::search::TantivySearch`] matches and how it
    /// orders (relevance, then popularity; then the product id, for stable pages).
    fn search_body(query: &SearchQuery) -> Value {
        let mut must = Vec::new();
        let mut filter = Vec::new();
        let text = query.text.trim();
        if !text.is_empty() {
            must.push(json!({
                "multi_match": {
                    "query": text,
                    "fields": ["name^2", "description"],
                    // every word in one of the fields, as Tantivy's per-word clauses
                    "type": "cross_fields",
                    "operator": "and",
                    // words the analyzer drops entirely (punctuation) constrain nothing
                    "zero_terms_query": "all"
                }
            }));
        }
        if let Some(category) = &query.category {
            filter.push(json!({ "term": { "category": category.to_lowercase() } }));
        }
        if query.min_price_minor.is_some() || query.max_price_minor.is_some() {
            let mut bounds = serde_json::Map::new();
            if let Some(min) = query.min_price_minor {
                bounds.insert("gte".to_owned(), json!(min));
            }
            if let Some(max) = query.max_price_minor {
                bounds.insert("lte".to_owned(), json!(max));
            }
            filter.push(json!({ "range": { "price_minor": bounds } }));
        }
        let query_dsl = if must.is_empty() && filter.is_empty() {
            json!({ "match_all": {} })
        } else {
            json!({ "bool": { "must": must, "filter": filter } })
        };
        json!({
            "from": query.offset,
            "size": query.limit.max(1),
            "track_total_hits": true,
            "query": query_dsl,
            "sort": [
                { "_score": { "order": "desc" } },
                { "popularity": { "order": "desc" } },
                { "product_id": { "order": "asc" } }
            ]
        })
    }

    /// Creates concrete index `index` with [`Self::index_definition`]. Answers `false` when an
    /// index of that name exists already (left as it is).
    async fn create_index(&self, index: &str) -> Result<bool, ProjectionError> {
        let url = self.url(&[index], &[]);
        let (status, body) = self
            .call(Method::PUT, url, Body::Json(self.index_definition()))
            .await?;
        if status.is_success() {
            return Ok(true);
        }
        if status == StatusCode::BAD_REQUEST
            && error_type(&body).as_deref() == Some("resource_already_exists_exception")
        {
            return Ok(false);
        }
        Err(http_error(&format!("PUT /{index}"), status, &body))
    }

    async fn update_aliases(&self, actions: Value) -> Result<(), ProjectionError> {
        let url = self.url(&["_aliases"], &[]);
        let (status, body) = self.call(Method::POST, url, Body::Json(actions)).await?;
        if !status.is_success() {
            return Err(http_error("POST /_aliases", status, &body));
        }
        Ok(())
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

#[async_trait]
impl SearchIndex for OpenSearchIndex {
    async fn search(&self, query: &SearchQuery) -> Result<SearchResult, ProjectionError> {
        let url = self.url(&[&self.alias, "_search"], &[]);
        let (status, body) = self
            .call(Method::POST, url, Body::Json(Self::search_body(query)))
            .await?;
        if status == StatusCode::NOT_FOUND
            && error_type(&body).as_deref() == Some("index_not_found_exception")
        {
            return Err(storage(format!(
                "the search index {} does not exist yet: the projector creates it on start \
                 (OpenSearchIndex::ensure_index)",
                self.alias
            )));
        }
        if !status.is_success() {
            return Err(http_error(
                &format!("POST /{}/_search", self.alias),
                status,
                &body,
            ));
        }
        let response: SearchResponse = serde_json::from_slice(&body).map_err(|error| {
            storage(format!(
                "OpenSearch POST /{}/_search answered an unexpected body: {error}",
                self.alias
            ))
        })?;
        let mut hits = Vec::with_capacity(response.hits.hits.len());
        for hit in response.hits.hits {
            let source = hit.source.unwrap_or(Value::Null);
            let product: ProductDoc = serde_json::from_value(source).map_err(|error| {
                storage(format!(
                    "search hit {} is not a product document: {error}",
                    hit.id
                ))
            })?;
            hits.push(product);
        }
        let total = match response.hits.total {
            Some(Total::Counted { value }) | Some(Total::Number(value)) => value,
            None => hits.len() as u64,
        };
        Ok(SearchResult { total, hits })
    }

    fn projection_name(&self) -> &'static str {
        Self::NAME
    }

    fn kind(&self) -> &'static str {
        "opensearch"
    }
}

/// The action line of a bulk `index`.
#[derive(Serialize)]
struct BulkAction<'a> {
    index: BulkIndexMeta<'a>,
}

#[derive(Serialize)]
struct BulkUpdate<'a> {
    update: BulkUpdateMeta<'a>,
}

#[derive(Serialize)]
struct BulkUpdateMeta<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
    retry_on_conflict: u32,
}

#[derive(Serialize)]
struct BulkIndexMeta<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
    version: u64,
    version_type: &'static str,
}

/// The stored document: the product as searches answer it, and its price in major units.
#[derive(Serialize)]
struct SourceDocument<'a> {
    #[serde(flatten)]
    product: &'a ProductDoc,
    price: Box<RawValue>,
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    took: u64,
    items: Vec<BTreeMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    #[serde(rename = "_id")]
    id: Option<String>,
    status: u16,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct SearchResponse {
    hits: SearchHits,
}

#[derive(Deserialize)]
struct SearchHits {
    total: Option<Total>,
    hits: Vec<SearchHit>,
}

/// `hits.total`: `{"value": n, "relation": "eq"}`, or a bare number (Elasticsearch 6).
#[derive(Deserialize)]
#[serde(untagged)]
enum Total {
    Counted { value: u64 },
    Number(u64),
}

#[derive(Deserialize)]
struct SearchHit {
    #[serde(rename = "_id", default)]
    id: String,
    #[serde(rename = "_source")]
    source: Option<Value>,
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

/// The OpenSearch index as a projection: each batch is one bulk request (versioned, so applying
/// it twice gives the same documents) into the index in service, then the feed's checkpoint is
/// stored in the read-model database, if that index is still the one in service (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct OpenSearchProjection {
    index: OpenSearchIndex,
    db: ReadDb,
    cache: Option<Arc<dyn Cache>>,
    writes: Writes,
    /// The index in service that this process last found the alias pointing at.
    verified: Arc<std::sync::Mutex<Option<String>>>,
}

/// Which concrete index a projection writes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Writes {
    /// The one the read-model database records as in service.
    InService,
    /// A rebuild's new index.
    Into(String),
}

impl OpenSearchProjection {
    /// The projection that keeps the index in service, with its popularity and checkpoints in the
    /// read-model database `db`.
    pub fn new(index: OpenSearchIndex, db: ReadDb, cache: Option<Arc<dyn Cache>>) -> Self {
        Self {
            index,
            db,
            cache,
            writes: Writes::InService,
            verified: Arc::default(),
        }
    }

    /// A rebuild of the index into concrete index `into` (made by
    /// [`OpenSearchIndex::rebuild_into_new_index`]), with its popularity and checkpoints in
    /// `shadow` (a replay's shadow database).
    pub fn rebuilding(index: OpenSearchIndex, into: &str, shadow: ReadDb) -> Self {
        Self {
            index,
            db: shadow,
            cache: None,
            writes: Writes::Into(into.to_owned()),
            verified: Arc::default(),
        }
    }

    /// The stored popularity of `products` (absent ones have none yet).
    async fn stored_popularity(
        &self,
        products: &std::collections::BTreeSet<String>,
    ) -> Result<BTreeMap<String, i64>, ProjectionError> {
        let mut stored = BTreeMap::new();
        let ids: Vec<&String> = products.iter().collect();
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT product_id, points FROM rm_search_popularity WHERE product_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for row in query.fetch_all(self.db.pool()).await? {
                use sqlx::Row;
                stored.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
            }
        }
        Ok(stored)
    }

    /// The index in service and `feed`'s checkpoint, read in one statement. The first batch of a
    /// deployment records the index the alias points at; the first batch of a process (and the
    /// first after the record changed) checks the alias still points at the recorded index.
    async fn in_service(&self, feed: &Feed) -> Result<(String, u64), ProjectionError> {
        let alias = self.index.alias();
        let name = feed.checkpoint_name(OpenSearchIndex::NAME);
        for _ in 0..3 {
            let row = sqlx::query(
                "SELECT (SELECT index_name FROM rm_search_index WHERE alias = $1),
                        (SELECT position FROM projection_checkpoints WHERE name = $2)",
            )
            .bind(alias)
            .bind(name.as_ref())
            .fetch_one(self.db.pool())
            .await?;
            use sqlx::Row;
            let recorded: Option<String> = row.try_get(0)?;
            let checkpoint = row
                .try_get::<Option<i64>, _>(1)?
                .map_or(0, |position| u64::try_from(position).unwrap_or(0));
            if let Some(index) = recorded {
                self.verify(&index).await?;
                return Ok((index, checkpoint));
            }
            let current = self.index.current_indices().await?;
            let [index] = current.as_slice() else {
                return Err(self.alias_problem(&current, None));
            };
            sqlx::query(
                "INSERT INTO rm_search_index (alias, index_name, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (alias) DO NOTHING",
            )
            .bind(alias)
            .bind(index)
            .bind(chrono::Utc::now().to_rfc3339())
            .execute(self.db.pool())
            .await?;
            if let Ok(mut verified) = self.verified.lock() {
                *verified = Some(index.clone());
            }
        }
        Err(storage(format!(
            "the index in service for the search alias {alias} could not be recorded in the \
             read-model database; retrying"
        )))
    }

    /// Checks once per process (and per change of the record) that the alias points at `index`.
    async fn verify(&self, index: &str) -> Result<(), ProjectionError> {
        let known = self
            .verified
            .lock()
            .map(|verified| verified.as_deref() == Some(index))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let current = self.index.current_indices().await?;
        if current != [index] {
            return Err(self.alias_problem(&current, Some(index)));
        }
        if let Ok(mut verified) = self.verified.lock() {
            *verified = Some(index.to_owned());
        }
        Ok(())
    }

    fn alias_problem(&self, current: &[String], recorded: Option<&str>) -> ProjectionError {
        let alias = self.index.alias();
        match (current, recorded) {
            ([], None) => storage(format!(
                "the search index {alias} does not exist yet: the projector creates it on start \
                 (OpenSearchIndex::ensure_index)"
            )),
            (_, None) => storage(format!(
                "the search alias {alias} points at several indices ({}): point it at one",
                current.join(", ")
            )),
            (_, Some(recorded)) => storage(format!(
                "the search alias {alias} points at [{}] but the read-model database records \
                 {recorded} as the index in service: a replay is swapping them (this passes in a \
                 moment), or the indices were changed outside mercato (run `mercato replay \
                 --projection search` to rebuild the index)",
                current.join(", ")
            )),
        }
    }

    /// After a batch went to `index` and found another index in service: deletes `index` unless
    /// the alias points at it (its bulk may have re-created it after the replay deleted it).
    async fn leave(&self, index: &str) {
        match self.index.delete_index(index).await {
            Ok(()) => tracing::info!(%index, "search index replaced by a replay: deleted"),
            Err(error) => {
                tracing::warn!(%index, %error, "search index replaced by a replay: not deleted")
            }
        }
    }

    async fn invalidate(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate(&[SEARCH_SCOPE.to_owned()]).await;
        }
    }
}

#[async_trait]
impl Projection for OpenSearchProjection {
    fn name(&self) -> &'static str {
        OpenSearchIndex::NAME
    }

    async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.db
            .checkpoint(&feed.checkpoint_name(OpenSearchIndex::NAME))
            .await
    }

    async fn apply(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(first) = events.first().map(|event| event.position) else {
            return Ok(());
        };
        let target = match &self.writes {
            Writes::Into(index) => index.clone(),
            Writes::InService => {
                let (index, checkpoint) = self.in_service(feed).await?;
                if *feed != Feed::Replay && checkpoint >= first {
                    // A replay swapped in a rebuilt index holding this batch: send nothing.
                    self.invalidate().await;
                    return Err(ProjectionError::CheckpointMoved {
                        name: feed.checkpoint_name(OpenSearchIndex::NAME).into_owned(),
                        stored: checkpoint,
                        first,
                    });
                }
                index
            }
        };
        // The products this batch indexes or scores, and what the batch adds to their scores.
        let mut added: BTreeMap<String, i64> = BTreeMap::new();
        let mut products = std::collections::BTreeSet::new();
        for event in events {
            if event.event_type == "ProductUpdated"
                && let ProductEvent::ProductUpdated(updated) = decode::<ProductEvent>(event)?
            {
                products.insert(updated.product_id.to_string());
            }
            for signal in popularity_signals(event)? {
                *added.entry(signal.product_id.clone()).or_default() += signal.points;
                products.insert(signal.product_id);
            }
        }
        let stored = self.stored_popularity(&products).await?;
        let popularity: BTreeMap<String, i64> = products
            .into_iter()
            .map(|id| {
                let total =
                    stored.get(&id).copied().unwrap_or(0) + added.get(&id).copied().unwrap_or(0);
                (id, total)
            })
            .collect();
        self.index
            .apply_events_with_popularity_into(&target, events, &popularity)
            .await?;
        let committed = self
            .commit(feed, events, &target, added.keys(), &popularity)
            .await;
        if committed.is_err()
            && self.writes == Writes::InService
            && let Ok(in_service) = index_in_service(&self.db, self.index.alias()).await
            && in_service.as_deref() != Some(target.as_str())
        {
            // A replay swapped in a rebuilt index after this batch read which index is in
            // service: what it sent went to the index it replaced.
            self.leave(&target).await;
            self.invalidate().await;
            return Err(ProjectionError::CheckpointMoved {
                name: feed.checkpoint_name(OpenSearchIndex::NAME).into_owned(),
                stored: self.checkpoint(feed).await.unwrap_or(0),
                first,
            });
        }
        self.invalidate().await;
        committed
    }
}

impl OpenSearchProjection {
    /// Stores the popularity of `added` products and `feed`'s checkpoint after `events`, once the
    /// batch went to index `target`: if that is still the index in service (see the module
    /// documentation), else [`ProjectionError::CheckpointMoved`].
    async fn commit(
        &self,
        feed: &Feed,
        events: &[RecordedEvent],
        target: &str,
        added: impl Iterator<Item = &String>,
        popularity: &BTreeMap<String, i64>,
    ) -> Result<(), ProjectionError> {
        let mut write = self.db.begin_write().await?;
        if self.writes == Writes::InService {
            // The index in service cannot change until this transaction ends: on PostgreSQL a
            // swap waits for this lock, on SQLite a swap committed after this read makes the
            // first write fail.
            if self.db.backend() == ReadBackend::Postgres {
                sqlx::query("LOCK TABLE rm_search_index IN SHARE MODE")
                    .execute(&mut *write.transaction)
                    .await?;
            }
            let row = sqlx::query(
                "SELECT (SELECT index_name FROM rm_search_index WHERE alias = $1),
                        (SELECT position FROM projection_checkpoints WHERE name = $2)",
            )
            .bind(self.index.alias())
            .bind(feed.checkpoint_name(OpenSearchIndex::NAME).as_ref())
            .fetch_one(&mut *write.transaction)
            .await?;
            use sqlx::Row;
            let in_service: Option<String> = row.try_get(0)?;
            if in_service.as_deref() != Some(target) {
                let stored = row
                    .try_get::<Option<i64>, _>(1)?
                    .map_or(0, |position| u64::try_from(position).unwrap_or(0));
                write.transaction.rollback().await?;
                return Err(ProjectionError::CheckpointMoved {
                    name: feed.checkpoint_name(OpenSearchIndex::NAME).into_owned(),
                    stored,
                    first: events.first().map_or(0, |event| event.position),
                });
            }
        }
        for product_id in added {
            sqlx::query(
                "INSERT INTO rm_search_popularity (product_id, points) VALUES ($1, $2)
                 ON CONFLICT (product_id) DO UPDATE SET points = excluded.points",
            )
            .bind(product_id)
            .bind(popularity.get(product_id).copied().unwrap_or(0))
            .execute(&mut *write.transaction)
            .await?;
        }
        write
            .commit_batch(feed, OpenSearchIndex::NAME, events)
            .await
    }
}
