//! mercato's projection workers: checkpointed read models fed from the event store.
//!
//! Not built yet: see ARCHITECTURE.md for what this crate will own.
