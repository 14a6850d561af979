//! mercato's checkout process manager: order, stock, payment, with compensations.
//!
//! Not built yet: see ARCHITECTURE.md for what this crate will own.
