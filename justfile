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

# Build the image, start the production stack (compose.yaml) and wait until it is healthy; ports in deploy/README.md.
up:
    docker compose up -d --build --wait

# Stop the stack; its volumes (data) are kept: `docker compose down -v` deletes them too.
down:
    docker compose down

# Validate compose.yaml, the Dockerfile and deploy/ without a container engine.
check-deploy:
    scripts/check-deploy
