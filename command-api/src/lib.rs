//! mercato's write side: HTTP command routes over the aggregates and the event store.
//!
//! Not built yet: see ARCHITECTURE.md for what this crate will own.
