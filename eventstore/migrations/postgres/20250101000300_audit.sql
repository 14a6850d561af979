-- Tamper evidence (see eventstore/src/audit.rs): every event's `hash` is
-- SHA-256(hash of the stream's previous version, 32 zero bytes for version 1 || canonical bytes).
-- `mercato_event_canonical` mirrors `eventstore::audit::canonical_bytes`: fourteen fields, each a
-- 4-byte big-endian length and its bytes; integers as 8-byte big-endian; texts as UTF-8;
-- occurred_at as UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ`; an absent saga_id is the length 0xFFFFFFFF.
ALTER TABLE events ADD COLUMN hash BYTEA;

CREATE FUNCTION mercato_audit_field(value BYTEA) RETURNS BYTEA
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT int4send(length(value)) || value $$;

CREATE FUNCTION mercato_event_canonical(e events) RETURNS BYTEA
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT mercato_audit_field(int8send(e.position))
    || mercato_audit_field(convert_to(e.event_id::text, 'UTF8'))
    || mercato_audit_field(convert_to(e.stream_type, 'UTF8'))
    || mercato_audit_field(convert_to(e.stream_id, 'UTF8'))
    || mercato_audit_field(int8send(e.stream_version))
    || mercato_audit_field(convert_to(e.event_type, 'UTF8'))
    || mercato_audit_field(int8send(e.schema_version::bigint))
    || mercato_audit_field(convert_to(
           to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'UTF8'))
    || mercato_audit_field(convert_to(e.correlation_id, 'UTF8'))
    || mercato_audit_field(convert_to(e.causation_id, 'UTF8'))
    || COALESCE(mercato_audit_field(convert_to(e.saga_id, 'UTF8')), '\xffffffff'::bytea)
    || mercato_audit_field(convert_to(e.actor, 'UTF8'))
    || mercato_audit_field(convert_to(e.source, 'UTF8'))
    || mercato_audit_field(convert_to(e.payload, 'UTF8'))
$$;

-- Existing rows, stream by stream in version order.
DO $$
DECLARE
    r events;
    previous BYTEA;
    last_type TEXT;
    last_id TEXT;
BEGIN
    FOR r IN SELECT * FROM events ORDER BY stream_type, stream_id, stream_version LOOP
        IF last_type IS DISTINCT FROM r.stream_type OR last_id IS DISTINCT FROM r.stream_id THEN
            previous := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
            last_type := r.stream_type;
            last_id := r.stream_id;
        END IF;
        previous := sha256(previous || mercato_event_canonical(r));
        UPDATE events SET hash = previous WHERE position = r.position;
    END LOOP;
END
$$;

-- VOLATILE: its query sees the rows the same statement inserted before this one (a multi-row
-- append inserts a stream's versions in order), and what committed since the statement began.
CREATE FUNCTION mercato_events_hash() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    previous BYTEA;
BEGIN
    IF NEW.stream_version = 1 THEN
        previous := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    ELSE
        SELECT hash INTO previous FROM events
        WHERE stream_type = NEW.stream_type AND stream_id = NEW.stream_id
          AND stream_version = NEW.stream_version - 1;
        IF previous IS NULL THEN
            RAISE EXCEPTION 'event hash chain: %/% version % has no stored hash before version %',
                NEW.stream_type, NEW.stream_id, NEW.stream_version - 1, NEW.stream_version;
        END IF;
    END IF;
    NEW.hash := sha256(previous || mercato_event_canonical(NEW));
    RETURN NEW;
END
$$;

CREATE TRIGGER events_hash BEFORE INSERT ON events
FOR EACH ROW EXECUTE FUNCTION mercato_events_hash();

-- The rolling global hash G over every event in position order, recorded every N events.
CREATE TABLE audit_checkpoints (
    position  BIGINT      PRIMARY KEY,
    events    BIGINT      NOT NULL CHECK (events > 0),
    hash      BYTEA       NOT NULL,
    sealed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The last version of each stream a checkpoint covers.
CREATE TABLE audit_stream_heads (
    stream_type    TEXT   NOT NULL,
    stream_id      TEXT   NOT NULL,
    stream_version BIGINT NOT NULL,
    position       BIGINT NOT NULL,
    hash           BYTEA  NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
);
