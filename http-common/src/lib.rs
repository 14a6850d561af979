//! What mercato's HTTP APIs share, so that the command API and the query API answer alike and
//! neither depends on the other:
//!
//! - [`problem`]: RFC 9457 problem answers, the JSON body extractor and the answer for a store
//!   failure.
//! - [`context`]: the request context (correlation id, principal, actor) and the time limit of
//!   a request.
//! - [`access`]: who may call a route (the rule of each entry of the server's permission table),
//!   the middleware that authenticates a request, and the 401 and 403 answers.
//! - [`params`]: path and text helpers every route uses.
//! - [`openapi`]: each route's documentation, and the builder that registers a route together
//!   with its documentation, so that the OpenAPI document cannot list a route that does not
//!   exist or miss one that does.

pub mod access;
pub mod context;
pub mod openapi;
pub mod params;
pub mod problem;

pub use access::{Access, GuestToken};
pub use context::RequestContext;
pub use openapi::{ApiDoc, DocumentedRouter, RouteDoc};
pub use problem::{JsonBody, Problem};
