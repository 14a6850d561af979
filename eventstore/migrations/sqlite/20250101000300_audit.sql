-- Tamper evidence (see eventstore/src/audit.rs). The writer computes `hash` in Rust; rows stored
-- before this migration get theirs when the store opens.
ALTER TABLE events ADD COLUMN hash BLOB;

-- The rolling global hash G over every event in position order, recorded every N events.
CREATE TABLE audit_checkpoints (
    position  INTEGER PRIMARY KEY,
    events    INTEGER NOT NULL CHECK (events > 0),
    hash      BLOB    NOT NULL,
    sealed_at TEXT    NOT NULL
);

-- The last version of each stream a checkpoint covers.
CREATE TABLE audit_stream_heads (
    stream_type    TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    hash           BLOB    NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
);
