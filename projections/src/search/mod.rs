//! Product search: the port ([`SearchIndex`], with what it answers) and its two adapters, each
//! in a folder of its own split by role:
//!
//! - [`tantivy`]: the embedded index, under `{data-dir}/search`, a projection of its own.
//! - [`opensearch`]: OpenSearch or Elasticsearch, when `OPENSEARCH_URL` is set.

pub mod opensearch;
pub mod tantivy;

pub use tantivy::{GenerationSwap, TantivySearch};

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ProjectionError;

/// A product as search answers show it (and as the product read model does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDoc {
    pub product_id: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub stock_qty: i64,
    pub category: Option<String>,
    pub popularity: i64,
    pub updated_at: String,
    pub version: u64,
}

/// What to search for. Prices are minor units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SearchQuery {
    pub text: String,
    pub category: Option<String>,
    pub min_price_minor: Option<i64>,
    pub max_price_minor: Option<i64>,
    pub limit: usize,
    pub offset: usize,
}

impl SearchQuery {
    /// A stable cache key for this query.
    pub fn cache_key(&self) -> String {
        format!(
            "q={}|c={}|min={}|max={}|l={}|o={}",
            self.text.trim().to_lowercase(),
            self.category
                .as_deref()
                .map(str::to_lowercase)
                .unwrap_or_default(),
            self.min_price_minor
                .map(|v| v.to_string())
                .unwrap_or_default(),
            self.max_price_minor
                .map(|v| v.to_string())
                .unwrap_or_default(),
            self.limit,
            self.offset
        )
    }
}

/// The matching products: the exact number, and one page ordered by relevance, then popularity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    pub total: u64,
    pub hits: Vec<ProductDoc>,
}

/// The search port: Tantivy embedded, OpenSearch or Elasticsearch when configured.
#[async_trait]
pub trait SearchIndex: Send + Sync + fmt::Debug {
    async fn search(&self, query: &SearchQuery) -> Result<SearchResult, ProjectionError>;
    /// The name of the projection that feeds this index (for read-your-writes waits).
    fn projection_name(&self) -> &'static str;
    fn kind(&self) -> &'static str;
    /// Reads the index in service now: after a rebuild was swapped in by another process (an
    /// index behind an alias follows by itself).
    async fn follow_swaps(&self) -> Result<(), ProjectionError> {
        Ok(())
    }
}
