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

# Validate compose.yaml, the Dockerfile, the Helm chart, infra/ and the CI workflow without a
# container engine, a cluster or a cloud account (deploy/README.md lists the checks).
check-deploy:
    scripts/check-deploy

# The scaled-out topology as processes on this machine: every role, the chart's gateway on
# http://127.0.0.1:8088, Kafka (tansu), a mail catcher, on the local PostgreSQL and Redis.
local-up:
    scripts/local up

# Load the sample catalogue into the local topology.
seed-data:
    scripts/local seed

# One line per service and role of the local topology, green or red.
local-health:
    scripts/local health

# A smoke test through the local gateway: catalogue, search, console, a checkout confirmed.
test-local:
    scripts/local test

# Stop the local topology (its data is kept; `scripts/local down --purge` drops it).
local-down:
    scripts/local down
