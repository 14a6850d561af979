# mercato's everyday commands. Each recipe wraps a plain command that also works without `just`.

# Run the platform, embedded (SQLite, Tantivy, in-process cache) in ./data.
run *ARGS:
    cargo run --release -- serve {{ARGS}}

# Run every test (PostgreSQL and Redis tests use the local services; see scripts/test).
test *ARGS:
    scripts/test {{ARGS}}

# Benchmarks: print every figure with its ratio to a baseline of the same run (see BENCHMARKS.md).
bench *ARGS:
    scripts/bench {{ARGS}}

# Format the code.
fmt:
    cargo fmt --all

# Lints as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --all-features -- -D warnings

# Start local PostgreSQL and Redis if they are not running.
services:
    scripts/services
