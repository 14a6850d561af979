//! The event store's tests: the suite every adapter passes, the PostgreSQL global position and
//! statement plans, and tamper evidence.

mod common;
mod postgres_plans;
mod postgres_position;
mod store_suite;
mod tamper;
