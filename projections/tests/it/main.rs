//! The read side's tests: the behaviour suites every adapter of a port passes (search, cache,
//! carts and popularity, leases), batches against reference models, rebuilds, and the OpenSearch
//! adapter's requests against a scripted server.

mod batches;
mod cache_suite;
mod lease_suite;
mod models_suite;
mod new_projection;
mod opensearch;
mod opensearch_replay;
mod parking;
mod redis_replay;
mod search_generations;
mod search_suite;
mod support;
