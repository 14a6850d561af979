//! Writing documents: one `_bulk` request per batch, each product's document versioned with its
//! stream version (`version_type=external_gte`), popularity sent as absolute values.

use std::collections::BTreeMap;

use domain::ProductEvent;
use eventstore::RecordedEvent;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{
    Body, FAILURES_NAMED, OpenSearchIndex, describe_error, http_error, storage, validate_index_name,
};
use crate::search::ProductDoc;
use crate::{ProjectionError, decode};

impl OpenSearchIndex {
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

    pub(super) async fn bulk(
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
