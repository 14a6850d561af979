//! identity's behaviour over its secret store, run against both databases it runs on: SQLite
//! (the embedded setup's owner-only file) and PostgreSQL (a database of the test's own; skipped
//! without `DATABASE_URL`, failing instead with `MERCATO_REQUIRE_SERVICES=1`).

mod suite;
