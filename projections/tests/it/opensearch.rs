//! The OpenSearch search adapter against a scripted HTTP server that checks every request it
//! gets (method, path, query string, content type, credentials, exact body) and answers with
//! bodies shaped as the OpenSearch documentation shows them; and, when `OPENSEARCH_URL` (or
//! `ELASTICSEARCH_URL`) names a cluster, against that cluster.

use axum::http::Method;
use domain::product::StockAdjusted;
use domain::views::ProductViewed;
use domain::{ProductEvent, ProductViewEvent};
use eventstore::RecordedEvent;
use projections::readdb::ReadDb;
use projections::search::opensearch::{
    DEFAULT_ALIAS, EmbeddingMapping, OpenSearchIndex, OpenSearchProjection, Refresh,
};
use projections::search::{ProductDoc, SearchIndex, SearchQuery, SearchResult};
use projections::{Feed, Projection};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::opensearch_script as script;

use script::{
    ACKNOWLEDGED, Exchange, LAMP, ROOT_ANSWER, SHOE, action, alias_answer, alias_missing,
    bulk_all_indexed, bulk_with_mapper_failure, bulk_with_version_conflict, error_answer,
    expected_definition, index_created, lamp, lamp_id, lamp_source, live_url, recorded,
    run_live_scenario, serve, shoe, shoe_id, shoe_source, view, with_popularity,
};

// ---------------------------------------------------------------------------------------------
// Events.
// ---------------------------------------------------------------------------------------------

/// Events that are not indexed: a product's stock change (its `ProductUpdated` follows) and a
/// view (popularity is not folded by this adapter).
fn ignored_events(position: u64) -> Vec<RecordedEvent> {
    let stock = ProductEvent::StockAdjusted(StockAdjusted {
        delta: 5,
        stock_qty: 17,
    });
    let view = ProductViewEvent::ProductViewed(ProductViewed {
        product_id: SHOE,
        customer_id: None,
    });
    vec![
        recorded(
            schemas::encode(&stock).unwrap(),
            "product",
            shoe_id(),
            9,
            position,
        ),
        recorded(
            schemas::encode(&view).unwrap(),
            "product_views",
            shoe_id(),
            1,
            position + 1,
        ),
    ]
}

const BULK: &str = "/_bulk?refresh=wait_for&require_alias=true";

// ---------------------------------------------------------------------------------------------
// Index and alias management.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ensure_index_creates_the_first_index_with_the_mapping_and_points_the_alias_at_it() {
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::GET,
                "/_alias/mercato-products",
                404,
                alias_missing("mercato-products"),
            ),
            Exchange::new(
                Method::PUT,
                "/mercato-products-000001",
                200,
                index_created("mercato-products-000001"),
            )
            .json(expected_definition()),
            Exchange::new(Method::POST, "/_aliases", 200, ACKNOWLEDGED).json(json!({
                "actions": [{ "add": { "index": "mercato-products-000001", "alias": "mercato-products" } }]
            })),
        ],
        // base64("elastic:s3cr@t"): the user and the percent-decoded password of the URL
        Some("Basic ZWxhc3RpYzpzM2NyQHQ="),
    )
    .await;
    let url = url.replace("http://", "http://elastic:s3cr%40t@") + "/";
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    assert_eq!(
        index.ensure_index().await.unwrap(),
        "mercato-products-000001"
    );
    script.finish();
}

#[tokio::test]
async fn ensure_index_keeps_an_index_created_by_an_earlier_attempt() {
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::GET,
                "/_alias/mercato-products",
                404,
                alias_missing("mercato-products"),
            ),
            Exchange::new(
                Method::PUT,
                "/mercato-products-000001",
                400,
                error_answer(
                    "resource_already_exists_exception",
                    "index [mercato-products-000001/abc] already exists",
                    400,
                ),
            )
            .json(expected_definition()),
            Exchange::new(Method::POST, "/_aliases", 200, ACKNOWLEDGED).json(json!({
                "actions": [{ "add": { "index": "mercato-products-000001", "alias": "mercato-products" } }]
            })),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    assert_eq!(
        index.ensure_index().await.unwrap(),
        "mercato-products-000001"
    );
    script.finish();
}

#[tokio::test]
async fn ensure_index_leaves_an_existing_alias_alone() {
    let (url, script) = serve(
        vec![Exchange::new(
            Method::GET,
            "/_alias/mercato-products",
            200,
            alias_answer(&[("mercato-products-000003", &["mercato-products"])]),
        )],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    assert_eq!(
        index.ensure_index().await.unwrap(),
        "mercato-products-000003"
    );
    script.finish();
    assert_eq!(script.requests(), 1);
}

#[tokio::test]
async fn embeddings_add_the_knn_vector_field_only_when_configured() {
    let mut expected = expected_definition();
    expected["settings"]["index.knn"] = json!(true);
    expected["mappings"]["properties"]["embedding"] = json!({
        "type": "knn_vector",
        "dimension": 384,
        "method": { "name": "hnsw", "engine": "nmslib", "space_type": "cosinesimil" }
    });
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::GET,
                "/_alias/products",
                404,
                alias_missing("products"),
            ),
            Exchange::new(
                Method::PUT,
                "/products-000001",
                200,
                index_created("products-000001"),
            )
            .json(expected),
            Exchange::new(Method::POST, "/_aliases", 200, ACKNOWLEDGED).json(json!({
                "actions": [{ "add": { "index": "products-000001", "alias": "products" } }]
            })),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, "products")
        .unwrap()
        .with_embeddings(EmbeddingMapping::seed());
    assert_eq!(index.ensure_index().await.unwrap(), "products-000001");
    script.finish();

    let plain = OpenSearchIndex::new(&url, "products").unwrap();
    assert!(
        plain.index_definition()["mappings"]["properties"]
            .get("embedding")
            .is_none()
    );
    assert!(
        plain.index_definition()["settings"]
            .get("index.knn")
            .is_none()
    );
}

#[tokio::test]
async fn rebuild_creates_the_next_index_and_swap_moves_the_alias_atomically() {
    let new_index = "mercato-products-000003";
    let (url, script) = serve(
        vec![
            // the existing indices of the alias: 1 (live), 2 (a failed rebuild's), and one of
            // another alias that merely shares the prefix
            Exchange::new(
                Method::GET,
                "/mercato-products-*/_alias",
                200,
                alias_answer(&[
                    ("mercato-products-000001", &["mercato-products"]),
                    ("mercato-products-000002", &[]),
                    ("mercato-products-eu-000009", &["mercato-products-eu"]),
                ]),
            ),
            Exchange::new(Method::PUT, "/mercato-products-000003", 200, index_created(new_index))
                .json(expected_definition()),
            // the rebuild fills the new index directly (no require_alias)
            Exchange::new(Method::POST, "/_bulk?refresh=wait_for", 200, bulk_all_indexed(&[(&shoe_id(), 201, "created")]))
                .ndjson(vec![
                    action(new_index, &shoe_id(), 4),
                    shoe_source(4, 8999, "89.99", 10),
                ]),
            Exchange::new(
                Method::GET,
                "/_alias/mercato-products",
                200,
                alias_answer(&[("mercato-products-000001", &["mercato-products"])]),
            ),
            Exchange::new(Method::POST, "/_aliases", 200, ACKNOWLEDGED).json(json!({
                "actions": [
                    { "remove": { "index": "mercato-products-000001", "alias": "mercato-products", "must_exist": true } },
                    { "add": { "index": new_index, "alias": "mercato-products" } }
                ]
            })),
            Exchange::new(
                Method::GET,
                "/_alias/mercato-products",
                200,
                alias_answer(&[(new_index, &["mercato-products"])]),
            ),
            Exchange::new(Method::DELETE, "/mercato-products-000001", 200, ACKNOWLEDGED),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let created = index.rebuild_into_new_index().await.unwrap();
    assert_eq!(created, new_index);
    index
        .apply_events_into(&created, &[shoe(4, 8999, 10)])
        .await
        .unwrap();
    let old = index.swap_alias(&created).await.unwrap();
    assert_eq!(old.as_deref(), Some("mercato-products-000001"));
    index.delete_index("mercato-products-000001").await.unwrap();
    script.finish();
}

#[tokio::test]
async fn a_rebuild_skips_an_index_number_taken_meanwhile() {
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::GET,
                "/mercato-products-*/_alias",
                200,
                alias_answer(&[("mercato-products-000001", &["mercato-products"])]),
            ),
            Exchange::new(
                Method::PUT,
                "/mercato-products-000002",
                400,
                error_answer(
                    "resource_already_exists_exception",
                    "index [mercato-products-000002/xyz] already exists",
                    400,
                ),
            )
            .json(expected_definition()),
            Exchange::new(
                Method::PUT,
                "/mercato-products-000003",
                200,
                index_created("mercato-products-000003"),
            )
            .json(expected_definition()),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    assert_eq!(
        index.rebuild_into_new_index().await.unwrap(),
        "mercato-products-000003"
    );
    script.finish();
}

#[tokio::test]
async fn the_live_index_and_foreign_indices_are_never_deleted() {
    let (url, script) = serve(
        vec![Exchange::new(
            Method::GET,
            "/_alias/mercato-products",
            200,
            alias_answer(&[("mercato-products-000002", &["mercato-products"])]),
        )],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let live = index
        .delete_index("mercato-products-000002")
        .await
        .unwrap_err()
        .to_string();
    assert!(live.contains("points at it"), "{live}");
    let foreign = index.delete_index("orders").await.unwrap_err().to_string();
    assert!(foreign.contains("not an index of the alias"), "{foreign}");
    script.finish();
    assert_eq!(script.requests(), 1, "no DELETE may be sent");
}

#[tokio::test]
async fn a_swap_that_finds_the_alias_already_moved_sends_nothing() {
    let (url, script) = serve(
        vec![Exchange::new(
            Method::GET,
            "/_alias/mercato-products",
            200,
            alias_answer(&[("mercato-products-000002", &["mercato-products"])]),
        )],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    assert_eq!(
        index.swap_alias("mercato-products-000002").await.unwrap(),
        None
    );
    script.finish();
}

#[tokio::test]
async fn a_refused_alias_swap_is_an_error() {
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::GET,
                "/_alias/mercato-products",
                200,
                alias_answer(&[("mercato-products-000001", &["mercato-products"])]),
            ),
            Exchange::new(
                Method::POST,
                "/_aliases",
                404,
                error_answer(
                    "aliases_not_found_exception",
                    "aliases [mercato-products] missing",
                    404,
                ),
            )
            .json(json!({
                "actions": [
                    { "remove": { "index": "mercato-products-000001", "alias": "mercato-products", "must_exist": true } },
                    { "add": { "index": "mercato-products-000002", "alias": "mercato-products" } }
                ]
            })),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let error = index
        .swap_alias("mercato-products-000002")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("aliases_not_found_exception"), "{error}");
    assert!(error.contains("404"), "{error}");
    script.finish();
}

// ---------------------------------------------------------------------------------------------
// Indexing.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_batch_is_one_bulk_request_of_versioned_index_actions() {
    let mut events = vec![shoe(1, 8999, 1)];
    events.extend(ignored_events(2));
    events.push(lamp(1, 4));
    events.push(shoe(2, 7990, 5));
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::POST,
                BULK,
                200,
                bulk_all_indexed(&[
                    (&shoe_id(), 201, "created"),
                    (&lamp_id(), 201, "created"),
                    (&shoe_id(), 200, "updated"),
                ]),
            )
            .ndjson(vec![
                action("mercato-products", &shoe_id(), 1),
                shoe_source(1, 8999, "89.99", 1),
                action("mercato-products", &lamp_id(), 1),
                lamp_source(1, 4),
                action("mercato-products", &shoe_id(), 2),
                shoe_source(2, 7990, "79.9", 5),
            ]),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    index.apply_events(&events).await.unwrap();
    script.finish();
}

#[tokio::test]
async fn background_refresh_sends_no_refresh_parameter() {
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::POST,
                "/_bulk?require_alias=true",
                200,
                bulk_all_indexed(&[(&lamp_id(), 201, "created")]),
            )
            .ndjson(vec![
                action("mercato-products", &lamp_id(), 3),
                lamp_source(3, 8),
            ]),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS)
        .unwrap()
        .with_refresh(Refresh::Background);
    index.apply_events(&[lamp(3, 8)]).await.unwrap();
    script.finish();
}

#[tokio::test]
async fn a_batch_without_product_changes_sends_nothing() {
    let (url, script) = serve(Vec::new(), None).await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    index.apply_events(&[]).await.unwrap();
    index.apply_events(&ignored_events(1)).await.unwrap();
    script.finish();
    assert_eq!(script.requests(), 0);
}

#[tokio::test]
async fn documents_refused_as_older_versions_count_as_indexed() {
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::POST,
                BULK,
                200,
                bulk_with_version_conflict(&shoe_id(), &lamp_id()),
            )
            .ndjson(vec![
                action("mercato-products", &shoe_id(), 2),
                shoe_source(2, 7990, "79.9", 5),
                action("mercato-products", &lamp_id(), 1),
                lamp_source(1, 6),
            ]),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    index
        .apply_events(&[shoe(2, 7990, 5), lamp(1, 6)])
        .await
        .unwrap();
    script.finish();
}

#[tokio::test]
async fn a_refused_document_fails_the_batch_and_is_named() {
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::POST,
                BULK,
                200,
                bulk_with_mapper_failure(&shoe_id(), &lamp_id()),
            )
            .ndjson(vec![
                action("mercato-products", &shoe_id(), 2),
                shoe_source(2, 7990, "79.9", 5),
                action("mercato-products", &lamp_id(), 1),
                lamp_source(1, 6),
            ]),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let error = index
        .apply_events(&[shoe(2, 7990, 5), lamp(1, 6)])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("document {}", lamp_id())),
        "{error}"
    );
    assert!(error.contains("status 400"), "{error}");
    assert!(error.contains("mapper_parsing_exception"), "{error}");
    assert!(
        error.contains("failed to parse field [stock_qty]"),
        "{error}"
    );
    assert!(error.contains("1 of 2 documents failed"), "{error}");
    assert!(
        !error.contains(&shoe_id()),
        "the indexed document is not a failure: {error}"
    );
    script.finish();
}

#[tokio::test]
async fn a_server_error_fails_the_batch() {
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::POST,
                BULK,
                503,
                error_answer(
                    "cluster_block_exception",
                    "blocked by: [SERVICE_UNAVAILABLE/2/no cluster-manager];",
                    503,
                ),
            )
            .ndjson(vec![
                action("mercato-products", &lamp_id(), 1),
                lamp_source(1, 6),
            ]),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let error = index
        .apply_events(&[lamp(1, 6)])
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("503"), "{error}");
    assert!(error.contains("cluster_block_exception"), "{error}");
    script.finish();
}

#[tokio::test]
async fn an_unreachable_cluster_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let index = OpenSearchIndex::new(&format!("http://{address}"), DEFAULT_ALIAS).unwrap();
    let error = index
        .apply_events(&[lamp(1, 6)])
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("POST /_bulk"), "{error}");
    assert!(index.ping().await.is_err());
}

// ---------------------------------------------------------------------------------------------
// Searching.
// ---------------------------------------------------------------------------------------------

fn shoe_doc() -> ProductDoc {
    ProductDoc {
        product_id: shoe_id(),
        name: "Trail Shoe".to_owned(),
        description: "Light \"trail\" running shoe".to_owned(),
        price_minor: 7990,
        stock_qty: 12,
        category: Some("Footwear".to_owned()),
        popularity: 0,
        updated_at: "2025-03-01T12:00:05.000000Z".to_owned(),
        version: 2,
    }
}

/// A search answer, as the "Response body fields" example of
/// https://docs.opensearch.org/latest/api-reference/search-apis/search/ (`hits.total.value`,
/// `_source`), sorted (so with `sort` values and no `max_score`).
fn search_answer(total: u64, sources: &[Value]) -> String {
    let hits: Vec<Value> = sources
        .iter()
        .map(|source| {
            json!({
                "_index": "mercato-products-000001",
                "_id": source["product_id"],
                "_score": 2.3,
                "_source": source,
                "sort": [2.3, 0.0, source["product_id"]]
            })
        })
        .collect();
    json!({
        "took": 3,
        "timed_out": false,
        "_shards": { "total": 1, "successful": 1, "skipped": 0, "failed": 0 },
        "hits": {
            "total": { "value": total, "relation": "eq" },
            "max_score": null,
            "hits": hits
        }
    })
    .to_string()
}

#[tokio::test]
async fn a_search_sends_the_query_dsl_and_maps_the_hits_back() {
    let mut shoe_source: Value = serde_json::to_value(shoe_doc()).unwrap();
    shoe_source["price"] = json!(79.9);
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::POST,
                "/mercato-products/_search",
                200,
                search_answer(7, &[shoe_source]),
            )
            .json(json!({
                "from": 4,
                "size": 2,
                "track_total_hits": true,
                "query": { "bool": {
                    "must": [{ "multi_match": {
                        "query": "trail shoes",
                        "fields": ["name^2", "description"],
                        "type": "cross_fields",
                        "operator": "and",
                        "zero_terms_query": "all"
                    }}],
                    "filter": [
                        { "term": { "category": "footwear" } },
                        { "range": { "price_minor": { "gte": 1000, "lte": 9000 } } }
                    ]
                }},
                "sort": [
                    { "_score": { "order": "desc" } },
                    { "popularity": { "order": "desc" } },
                    { "product_id": { "order": "asc" } }
                ]
            })),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let result = index
        .search(&SearchQuery {
            text: "  trail shoes ".to_owned(),
            category: Some("FootWear".to_owned()),
            min_price_minor: Some(1000),
            max_price_minor: Some(9000),
            limit: 2,
            offset: 4,
        })
        .await
        .unwrap();
    assert_eq!(
        result,
        SearchResult {
            total: 7,
            hits: vec![shoe_doc()]
        }
    );
    assert_eq!(index.kind(), "opensearch");
    assert_eq!(index.projection_name(), "search");
    script.finish();
}

#[tokio::test]
async fn a_search_without_criteria_matches_everything_and_a_one_sided_range_has_one_bound() {
    let sort = json!([
        { "_score": { "order": "desc" } },
        { "popularity": { "order": "desc" } },
        { "product_id": { "order": "asc" } }
    ]);
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::POST,
                "/mercato-products/_search",
                200,
                search_answer(0, &[]),
            )
            .json(json!({
                "from": 0,
                "size": 1,
                "track_total_hits": true,
                "query": { "match_all": {} },
                "sort": sort
            })),
            Exchange::new(
                Method::POST,
                "/mercato-products/_search",
                200,
                search_answer(0, &[]),
            )
            .json(json!({
                "from": 0,
                "size": 20,
                "track_total_hits": true,
                "query": { "bool": {
                    "must": [],
                    "filter": [{ "range": { "price_minor": { "lte": 500 } } }]
                }},
                "sort": sort
            })),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let everything = index
        .search(&SearchQuery {
            text: "   ".to_owned(),
            limit: 0,
            ..SearchQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(everything, SearchResult::default());
    let cheap = index
        .search(&SearchQuery {
            max_price_minor: Some(500),
            limit: 20,
            ..SearchQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(cheap.total, 0);
    script.finish();
}

#[tokio::test]
async fn a_search_before_the_index_exists_says_so() {
    let (url, script) = serve(
        vec![
            Exchange::new(
                Method::POST,
                "/mercato-products/_search",
                404,
                error_answer(
                    "index_not_found_exception",
                    "no such index [mercato-products]",
                    404,
                ),
            )
            .json(json!({
                "from": 0, "size": 10, "track_total_hits": true,
                "query": { "match_all": {} },
                "sort": [
                    { "_score": { "order": "desc" } },
                    { "popularity": { "order": "desc" } },
                    { "product_id": { "order": "asc" } }
                ]
            })),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let error = index
        .search(&SearchQuery {
            limit: 10,
            ..SearchQuery::default()
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not exist yet"), "{error}");
    script.finish();
}

// ---------------------------------------------------------------------------------------------
// Readiness and configuration.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ping_asks_the_root_and_reports_refusals() {
    let (url, script) = serve(
        vec![
            Exchange::new(Method::GET, "/", 200, ROOT_ANSWER),
            Exchange::new(Method::GET, "/", 401, "Unauthorized"),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    index.ping().await.unwrap();
    let error = index.ping().await.unwrap_err().to_string();
    assert!(error.contains("401"), "{error}");
    assert!(error.contains("Unauthorized"), "{error}");
    script.finish();
}

#[tokio::test]
async fn a_path_prefix_in_the_url_is_kept() {
    let (url, script) = serve(
        vec![Exchange::new(
            Method::GET,
            "/search/_alias/mercato-products",
            200,
            alias_answer(&[("mercato-products-000001", &["mercato-products"])]),
        )],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&format!("{url}/search"), DEFAULT_ALIAS).unwrap();
    assert_eq!(
        index.ensure_index().await.unwrap(),
        "mercato-products-000001"
    );
    script.finish();
}

#[test]
fn bad_urls_and_aliases_are_refused_and_passwords_never_shown() {
    assert!(OpenSearchIndex::new("not a url", DEFAULT_ALIAS).is_err());
    assert!(OpenSearchIndex::new("ftp://search.example:21", DEFAULT_ALIAS).is_err());
    assert!(OpenSearchIndex::new("http://localhost:9200", "Products").is_err());
    assert!(OpenSearchIndex::new("http://localhost:9200", "a*b").is_err());
    assert!(OpenSearchIndex::new("http://localhost:9200", "-products").is_err());
    assert!(OpenSearchIndex::new("http://localhost:9200", "").is_err());

    let index = OpenSearchIndex::new("http://admin:hunter2@localhost:9200", DEFAULT_ALIAS).unwrap();
    assert_eq!(index.base_url(), "http://localhost:9200/");
    assert_eq!(index.alias(), "mercato-products");
    assert_eq!(index.index_name(12), "mercato-products-000012");
    let shown = format!("{index:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("admin"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Against a real cluster, when one is configured.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn live_index_search_rebuild_and_swap() {
    let Some(url) = live_url() else {
        // No OpenSearch cluster runs on CI machines: this test runs where one is configured.
        eventstore::testing::skip(
            "live_index_search_rebuild_and_swap",
            "OPENSEARCH_URL is not set (the live OpenSearch/Elasticsearch test)",
        );
        return;
    };
    let alias = format!("mercato-test-{}", Uuid::new_v4().simple());
    let index = OpenSearchIndex::new(&url, &alias).unwrap();
    run_live_scenario(&url, &index, live_scenario(index.clone())).await;
}

async fn live_scenario(index: OpenSearchIndex) {
    index.ping().await.unwrap();
    let first = index.ensure_index().await.unwrap();
    assert_eq!(first, index.index_name(1));
    assert_eq!(
        index.ensure_index().await.unwrap(),
        first,
        "ensure_index is idempotent"
    );

    let history = vec![shoe(1, 8999, 1), lamp(1, 2), shoe(2, 7990, 3)];
    index.apply_events(&history).await.unwrap();
    // a redelivered older version is refused by the cluster, and that is not an error
    index.apply_events(&[shoe(1, 8999, 1)]).await.unwrap();

    let query = |text: &str| SearchQuery {
        text: text.to_owned(),
        limit: 10,
        ..SearchQuery::default()
    };
    let found = index.search(&query("trail shoes")).await.unwrap();
    assert_eq!(found.total, 1, "{found:?}");
    assert_eq!(found.hits[0].price_minor, 7990, "the newer version stays");
    assert_eq!(found.hits[0].version, 2);
    let footwear = index
        .search(&SearchQuery {
            category: Some("FOOTWEAR".to_owned()),
            max_price_minor: Some(8000),
            limit: 10,
            ..SearchQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(footwear.total, 1, "{footwear:?}");
    let everything = index.search(&query("")).await.unwrap();
    assert_eq!(everything.total, 2, "{everything:?}");
    let none = index.search(&query("lamp shoe")).await.unwrap();
    assert_eq!(none.total, 0, "every word must match: {none:?}");

    let second = index.rebuild_into_new_index().await.unwrap();
    assert_eq!(second, index.index_name(2));
    index
        .apply_events_into(&second, &history[..2])
        .await
        .unwrap();
    let old = index.swap_alias(&second).await.unwrap();
    assert_eq!(old.as_deref(), Some(first.as_str()));
    let rebuilt = index.search(&query("trail")).await.unwrap();
    assert_eq!(rebuilt.hits[0].version, 1, "searches read the new index");
    index.delete_index(&first).await.unwrap();
    assert!(
        index.delete_index(&second).await.is_err(),
        "the live index stays"
    );
}

#[tokio::test]
async fn the_projection_keeps_popularity_and_sends_it_as_absolute_values() {
    let directory = tempfile::tempdir().unwrap();
    let db = ReadDb::open(&format!(
        "sqlite://{}",
        directory.path().join("read.db").display()
    ))
    .await
    .unwrap();
    let update = |id: &str, popularity: i64| {
        vec![
            format!(
                r#"{{"update":{{"_index":"mercato-products-000001","_id":"{id}","retry_on_conflict":3}}}}"#
            ),
            format!(r#"{{"doc":{{"popularity":{popularity}}}}}"#),
        ]
    };
    let lamp_missing = json!({ "took": 3, "errors": true, "items": [{ "update": {
        "_index": "mercato-products-000001", "_id": lamp_id(), "status": 404,
        "error": { "type": "document_missing_exception",
                   "reason": format!("[{}]: document missing", lamp_id()),
                   "index": "mercato-products-000001" } } }] })
    .to_string();
    // The projection writes the concrete index in service (recorded from the alias by its first
    // batch), not through the alias.
    const INTO: &str = "/_bulk?refresh=wait_for";
    let (url, script) = serve(
        vec![
            // 0. The first batch records the index the alias points at.
            Exchange::new(
                Method::GET,
                "/_alias/mercato-products",
                200,
                alias_answer(&[("mercato-products-000001", &["mercato-products"])]),
            ),
            // 1. The shoe indexed with the two views of its batch.
            Exchange::new(
                Method::POST,
                INTO,
                200,
                bulk_all_indexed(&[(&shoe_id(), 201, "created")]),
            )
            .ndjson(vec![
                action("mercato-products-000001", &shoe_id(), 1),
                with_popularity(shoe_source(1, 8999, "89.99", 1), 2),
            ]),
            // 2. A view of a lamp not indexed yet; the cluster fails the request.
            Exchange::new(
                Method::POST,
                INTO,
                503,
                error_answer(
                    "cluster_block_exception",
                    "blocked by: [SERVICE_UNAVAILABLE]",
                    503,
                ),
            )
            .ndjson(update(&lamp_id(), 1)),
            // 3. The batch again: the same absolute value (not 2); "missing" is fine, as the
            //    lamp's document will carry it.
            Exchange::new(Method::POST, INTO, 200, lamp_missing).ndjson(update(&lamp_id(), 1)),
            // 4. The shoe changes: its document keeps its popularity.
            Exchange::new(
                Method::POST,
                INTO,
                200,
                bulk_all_indexed(&[(&shoe_id(), 200, "updated")]),
            )
            .ndjson(vec![
                action("mercato-products-000001", &shoe_id(), 2),
                with_popularity(shoe_source(2, 7990, "79.9", 6), 2),
            ]),
        ],
        None,
    )
    .await;
    let index = OpenSearchIndex::new(&url, DEFAULT_ALIAS).unwrap();
    let projection = OpenSearchProjection::new(index, db.clone(), None);
    projection
        .apply(
            &Feed::Log,
            &[shoe(1, 8999, 1), view(SHOE, 2), view(SHOE, 3)],
        )
        .await
        .unwrap();
    assert!(
        projection
            .apply(&Feed::Log, &[view(LAMP, 4)])
            .await
            .is_err()
    );
    assert_eq!(projection.checkpoint(&Feed::Log).await.unwrap(), 3);
    projection
        .apply(&Feed::Log, &[view(LAMP, 4)])
        .await
        .unwrap();
    projection
        .apply(&Feed::Log, &[shoe(2, 7990, 6)])
        .await
        .unwrap();
    script.finish();
    assert_eq!(projection.checkpoint(&Feed::Log).await.unwrap(), 6);
}
