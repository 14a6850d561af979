//! The mercato server as a library: opening the platform a configuration names, the table of
//! what each role runs, and running it, with the operational routes (`/health`, `/ready`,
//! `/metrics`, `/openapi.json`) every process serves.
//!
//! ```no_run
//! # async fn run() -> server::Result<()> {
//! let config = server::Config::default();
//! let listener = server::bind(config.listen).await?;
//! let server = server::Server::build(&config, listener).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.run_until(server::shutdown_signal()).await
//! # }
//! ```
//!
//! - [`config`]: the one typed configuration and its merge of flags, environment and file.
//! - [`roles`]: what each role runs.
//! - [`platform`]: the event store, the read models, the cache, the search index and identity
//!   (with the mailer), opened.
//! - [`policy`]: the permission table: every route and who may call it.
//! - [`Server`]: the background parts of a role and its HTTP application, run until shutdown.
//! - [`listen`]: the HTTP connection layer under the router (half-close, header timeout).
//! - [`idempotency`]: `Idempotency-Key` on the routes that create something.
//! - [`limits`]: limits at the edge: rate limits, load shedding, connection caps, trusted
//!   proxies.
//! - [`bus`]: Kafka, behind the cargo feature `kafka`.
//! - [`error`]: bad usage (exit 2) told apart from failures at run time (exit 1) by type.
//! - [`reference`]: the reference documents of the HTTP API and the configuration, generated.

pub mod admin;
pub mod bus;
pub mod config;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod limits;
pub mod listen;
mod ops;
pub mod platform;
pub mod policy;
pub mod priority;
pub mod reference;
pub mod roles;
mod serve;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Config, Role, Secret, Settings, Source};
pub use error::{Error, Result};
pub use ops::{documented_routes, openapi_document};
pub use platform::{
    Access, Platform, migrate, open_existing_store, open_read_db, open_store, require_store,
};
pub use serve::{SEAL_EVERY, Server, bind, shutdown_signal};
