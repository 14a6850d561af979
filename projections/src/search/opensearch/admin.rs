//! Administering the cluster: creating the concrete indices with the seed's mapping, listing
//! them, moving the alias, deleting what a rebuild left.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    Body, INDEX_NUMBER_DIGITS, NEXT_INDEX_ATTEMPTS, OpenSearchIndex, error_type, http_error,
    storage, validate_index_name,
};
use crate::ProjectionError;

impl OpenSearchIndex {
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

    /// Creates concrete index `index` with [`Self::index_definition`]. Answers `false` when an
    /// index of that name exists already (left as it is).
    pub(super) async fn create_index(&self, index: &str) -> Result<bool, ProjectionError> {
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

    pub(super) async fn update_aliases(&self, actions: Value) -> Result<(), ProjectionError> {
        let url = self.url(&["_aliases"], &[]);
        let (status, body) = self.call(Method::POST, url, Body::Json(actions)).await?;
        if !status.is_success() {
            return Err(http_error("POST /_aliases", status, &body));
        }
        Ok(())
    }
}
