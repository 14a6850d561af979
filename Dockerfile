# syntax=docker/dockerfile:1
# mercato's image: one binary for every role (`serve --role ...`; see compose.yaml).
# Build: docker build -t mercato:local .   (compose.yaml builds it with `just up`)
# The cache mounts below need BuildKit, the default builder of Docker 23+ and of `docker compose`.

FROM rust:1-bookworm AS builder
# The cargo features of the binary: `kafka` (the relay and the Kafka-fed roles) by default, which
# compose.yaml passes too; `--build-arg FEATURES=` builds the embedded-only binary.
ARG FEATURES=kafka
# cmake and a C/C++ toolchain build rdkafka's bundled librdkafka; zlib1g-dev is its compression
# library (the runtime image has libz.so.1 already); libssl-dev its TLS (DEVELOPERS.md says why
# the `ssl` feature is on; the runtime's libssl3 comes with ca-certificates).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake build-essential pkg-config zlib1g-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace (see .dockerignore): every member's manifest, and .cargo/config.toml, whose
# allocator settings are compiled into the binary.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p mercato --locked --features "$FEATURES" \
    && install -m 0755 target/release/mercato /usr/local/bin/mercato

FROM debian:bookworm-slim
# ca-certificates for TLS to managed services; curl for the health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 mercato \
    && useradd --system --uid 10001 --gid mercato --home-dir /var/lib/mercato --shell /usr/sbin/nologin mercato \
    && install -d -o mercato -g mercato -m 0750 /var/lib/mercato
COPY --from=builder /usr/local/bin/mercato /usr/local/bin/mercato
USER mercato:mercato
WORKDIR /var/lib/mercato
# In a container the server listens on every interface; data (embedded mode only) goes to the
# volume at /var/lib/mercato.
ENV MERCATO_DATA_DIR=/var/lib/mercato \
    MERCATO_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=5 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["mercato"]
CMD ["serve"]
