-- The append statements read the stream's head anyway, so they hash the first event they insert
-- into a stream themselves: a row that arrives with its hash skips the trigger, which costs a
-- PL/pgSQL call and a lookup of the previous row. The trigger still hashes every row that comes
-- without one (the later events of a multi-event append, and any other INSERT), so a row can
-- never be stored without a hash; `mercato audit verify` recomputes every hash either way.

-- The canonical bytes of an event from its columns (the layout of `mercato_event_canonical`,
-- which now calls this, so there is one definition).
CREATE FUNCTION mercato_canonical(
    p_position BIGINT, p_event_id UUID, p_stream_type TEXT, p_stream_id TEXT,
    p_stream_version BIGINT, p_event_type TEXT, p_schema_version INTEGER,
    p_occurred_at TIMESTAMPTZ, p_correlation_id TEXT, p_causation_id TEXT, p_saga_id TEXT,
    p_actor TEXT, p_source TEXT, p_payload TEXT
) RETURNS BYTEA
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT mercato_audit_field(int8send(p_position))
    || mercato_audit_field(convert_to(p_event_id::text, 'UTF8'))
    || mercato_audit_field(convert_to(p_stream_type, 'UTF8'))
    || mercato_audit_field(convert_to(p_stream_id, 'UTF8'))
    || mercato_audit_field(int8send(p_stream_version))
    || mercato_audit_field(convert_to(p_event_type, 'UTF8'))
    || mercato_audit_field(int8send(p_schema_version::bigint))
    || mercato_audit_field(convert_to(
           to_char(p_occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'UTF8'))
    || mercato_audit_field(convert_to(p_correlation_id, 'UTF8'))
    || mercato_audit_field(convert_to(p_causation_id, 'UTF8'))
    || COALESCE(mercato_audit_field(convert_to(p_saga_id, 'UTF8')), '\xffffffff'::bytea)
    || mercato_audit_field(convert_to(p_actor, 'UTF8'))
    || mercato_audit_field(convert_to(p_source, 'UTF8'))
    || mercato_audit_field(convert_to(p_payload, 'UTF8'))
$$;

CREATE OR REPLACE FUNCTION mercato_event_canonical(e events) RETURNS BYTEA
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT mercato_canonical(e.position, e.event_id, e.stream_type, e.stream_id, e.stream_version,
    e.event_type, e.schema_version, e.occurred_at, e.correlation_id, e.causation_id, e.saga_id,
    e.actor, e.source, e.payload)
$$;

DROP TRIGGER events_hash ON events;

CREATE TRIGGER events_hash BEFORE INSERT ON events
FOR EACH ROW WHEN (NEW.hash IS NULL) EXECUTE FUNCTION mercato_events_hash();

-- The trigger's lookup of the previous row is planned for each call: a plan cached while the
-- table was nearly empty (a sequential scan) would otherwise stay in use as the table grows for
-- as long as nothing analyzes it, making each lookup a scan of the whole table.
ALTER FUNCTION mercato_events_hash() SET plan_cache_mode = force_custom_plan;

-- How many of `ids` are stored already: the in-transaction append's duplicate check. A plan of
-- `event_id = ANY(...)` made while the table was nearly empty is a sequential scan, and a
-- prepared statement keeps it until something analyzes the table (autovacuum off: each append
-- then scanned the whole table). Planned here once per session with sequential scans disabled,
-- it is an index lookup whatever the table's statistics say. STABLE: it reads with the calling
-- statement's snapshot.
CREATE FUNCTION mercato_stored_event_ids(ids UUID[]) RETURNS BIGINT
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET enable_seqscan = off
AS $$
BEGIN
    RETURN (SELECT count(*) FROM events WHERE event_id = ANY(ids));
END
$$;
