//! Searching: the query the embedded index answers, as an OpenSearch query through the alias.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Body, OpenSearchIndex, error_type, http_error, storage};
use crate::ProjectionError;
use crate::search::{ProductDoc, SearchIndex, SearchQuery, SearchResult};

impl OpenSearchIndex {
    /// The query DSL of a search: what [`crate::search::TantivySearch`] matches and how it
    /// orders (relevance, then popularity; then the product id, for stable pages).
    pub(super) fn search_body(query: &SearchQuery) -> Value {
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
