//! mercato's read side: HTTP query routes over the read models.
//!
//! Not built yet: see ARCHITECTURE.md for what this crate will own.
