//! Searching: every word in the name (boosted) or the description, stemmed; category and price
//! filters; relevance, then popularity.

use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocId, Score, SegmentReader, TantivyDocument, Term};

use super::TantivySearch;
use crate::ProjectionError;
use crate::search::{SearchIndex, SearchQuery, SearchResult};

impl TantivySearch {
    pub(super) fn search_blocking(
        &self,
        query: &SearchQuery,
    ) -> Result<SearchResult, ProjectionError> {
        self.follow_current(false)?;
        match self.search_generation(query) {
            Ok(result) => Ok(result),
            // A swap in another process may have put a rebuilt generation in service and deleted
            // the files of the one this process still read: read the one in service. (A swap is
            // invisible to readers.)
            Err(error) => {
                if self.follow_current(true)? {
                    self.search_generation(query)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Searches the generation this process reads now.
    fn search_generation(&self, query: &SearchQuery) -> Result<SearchResult, ProjectionError> {
        let generation = self.generation();
        generation.catch_up_reader()?;
        let searcher = generation.reader.searcher();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut analyzer = generation.index.tokenizer_for_field(self.fields.name)?;
        let mut tokens = Vec::new();
        let mut stream = analyzer.token_stream(&query.text);
        while stream.advance() {
            tokens.push(stream.token().text.clone());
        }
        for token in tokens {
            let in_name: Box<dyn Query> = Box::new(BoostQuery::new(
                Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.name, &token),
                    IndexRecordOption::WithFreqs,
                )),
                2.0,
            ));
            let in_description: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(self.fields.description, &token),
                IndexRecordOption::WithFreqs,
            ));
            clauses.push((
                Occur::Must,
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, in_name),
                    (Occur::Should, in_description),
                ])),
            ));
        }
        if let Some(category) = &query.category {
            let term = Term::from_field_text(self.fields.category_key, &category.to_lowercase());
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                    0.0,
                )),
            ));
        }
        if query.min_price_minor.is_some() || query.max_price_minor.is_some() {
            let price = |minor: i64| Term::from_field_i64(self.fields.price_minor, minor);
            let lower = query
                .min_price_minor
                .map_or(Bound::Unbounded, |minor| Bound::Included(price(minor)));
            let upper = query
                .max_price_minor
                .map_or(Bound::Unbounded, |minor| Bound::Included(price(minor)));
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(RangeQuery::new(lower, upper)),
                    0.0,
                )),
            ));
        }
        let query_tree: Box<dyn Query> = if clauses.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(clauses))
        };
        let limit = query.limit.max(1);
        let top = TopDocs::with_limit(limit)
            .and_offset(query.offset)
            .tweak_score(move |segment_reader: &SegmentReader| {
                let popularity = segment_reader.fast_fields().i64("popularity").ok();
                move |doc: DocId, score: Score| {
                    let popularity = popularity
                        .as_ref()
                        .and_then(|column| column.first(doc))
                        .unwrap_or(0);
                    (score, popularity)
                }
            });
        let (top_docs, total) = searcher.search(&query_tree, &(top, Count))?;
        let mut hits = Vec::with_capacity(top_docs.len());
        for (_, address) in top_docs {
            let document: TantivyDocument = searcher.doc(address)?;
            hits.push(self.product_of(&document)?);
        }
        Ok(SearchResult {
            total: total as u64,
            hits,
        })
    }
}

#[async_trait]
impl SearchIndex for Arc<TantivySearch> {
    async fn search(&self, query: &SearchQuery) -> Result<SearchResult, ProjectionError> {
        let search = self.clone();
        let query = query.clone();
        tokio::task::spawn_blocking(move || search.search_blocking(&query))
            .await
            .map_err(|error| ProjectionError::Storage(format!("search task failed: {error}")))?
    }

    fn projection_name(&self) -> &'static str {
        TantivySearch::NAME
    }

    fn kind(&self) -> &'static str {
        "tantivy"
    }

    async fn follow_swaps(&self) -> Result<(), ProjectionError> {
        let search = self.clone();
        tokio::task::spawn_blocking(move || search.follow_current(true).map(|_| ()))
            .await
            .map_err(|error| ProjectionError::Storage(format!("follow task failed: {error}")))?
    }
}
