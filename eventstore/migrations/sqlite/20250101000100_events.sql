-- The event log. `position` is the rowid: one writer at a time (the store's writer task holds
-- the write lock for each group commit), so positions are dense and commit in order.
-- `payload` is the exact JSON text that was appended.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY,
    event_id        TEXT    NOT NULL,
    stream_type     TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version > 0),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 0),
    occurred_at     TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    causation_id    TEXT    NOT NULL,
    saga_id         TEXT,
    actor           TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_type, stream_id, stream_version)
);

-- The latest snapshot of each stream: a cache, never the source of truth.
CREATE TABLE snapshots (
    stream_type TEXT    NOT NULL,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 0),
    state       TEXT    NOT NULL,
    taken_at    TEXT    NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
);
