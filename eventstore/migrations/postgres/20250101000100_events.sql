-- The event log. `position` is the global position: (transaction id << 20) + index within the
-- transaction, assigned by the append statement; readers only read below the horizon of
-- finished transactions (see eventstore/README.md). `payload` is TEXT, not jsonb: the stored
-- bytes are exactly the bytes that were appended, so a hash chain over them stays verifiable.
CREATE TABLE events (
    position        BIGINT      PRIMARY KEY,
    event_id        UUID        NOT NULL,
    stream_type     TEXT        NOT NULL,
    stream_id       TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL CHECK (stream_version > 0),
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version >= 0),
    occurred_at     TIMESTAMPTZ NOT NULL,
    correlation_id  TEXT        NOT NULL,
    causation_id    TEXT        NOT NULL,
    saga_id         TEXT,
    actor           TEXT        NOT NULL,
    source          TEXT        NOT NULL,
    payload         TEXT        NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- the optimistic-concurrency check: two appends cannot both write version N of a stream
    CONSTRAINT events_stream_version_key UNIQUE (stream_type, stream_id, stream_version)
);

-- The latest snapshot of each stream: a cache, never the source of truth.
CREATE TABLE snapshots (
    stream_type TEXT        NOT NULL,
    stream_id   TEXT        NOT NULL,
    version     BIGINT      NOT NULL CHECK (version >= 0),
    state       TEXT        NOT NULL,
    taken_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_type, stream_id)
);
