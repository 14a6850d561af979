//! The statements of the PostgreSQL adapter, in one place.

/// The channel appenders notify and subscribers listen on.
pub const CHANNEL: &str = "mercato_events";

/// Positions are `(transaction id << POSITION_SHIFT) + index within the transaction`.
pub(crate) const POSITION_SHIFT: u32 = 20;

/// How many events one transaction can hold: the index within a transaction has 20 bits.
pub const MAX_EVENTS_PER_TRANSACTION: usize = 1 << POSITION_SHIFT;

/// The hash the first event of a new stream chains to.
macro_rules! zero_hash {
    () => {
        "'\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea"
    };
}

/// The columns an append statement inserts, read from its row subquery `r`.
macro_rules! row_columns {
    () => {
        "r.position, r.event_id, r.stream_type, r.stream_id, r.stream_version, r.event_type, \
         r.schema_version, r.occurred_at, r.correlation_id, r.causation_id, r.saga_id, r.actor, \
         r.source, r.payload, r.trace_context"
    };
}

/// The canonical bytes of row `r` of an append statement (`mercato_canonical`, inlined by the
/// planner).
macro_rules! canonical_of_r {
    () => {
        "mercato_canonical(r.position, r.event_id, r.stream_type, r.stream_id, r.stream_version, \
         r.event_type, r.schema_version, r.occurred_at, r.correlation_id, r.causation_id, \
         r.saga_id, r.actor, r.source, r.payload)"
    };
}

/// The chain hash of row `r` of an append statement whose appends hold one event each: chained
/// to `r.previous_hash`, the hash of the stream's head the statement read (the zero hash for a
/// new stream). A stored head without a hash makes this NULL, and the trigger then refuses the
/// row (see the migration `20250101000400_hash_in_statement.sql`).
macro_rules! chain_hash {
    () => {
        concat!("sha256(r.previous_hash || ", canonical_of_r!(), ")")
    };
}

/// The chain hashes of the rows of CTE `r` of a multi-event append, as CTE `chain` of a `WITH
/// RECURSIVE`: each append's first row (`index_in_stream` 1 of its `chain_key`) chains to the
/// stream head's hash the statement read (`previous_hash`), each later one to the row before it.
/// Rows past the 32nd of an append are left to the trigger (the recursion joins the whole of `r`
/// once per step), which hashes them in order after the ones before them.
macro_rules! chain_cte {
    () => {
        concat!(
            "chain AS (SELECT r.chain_key, r.index_in_stream, sha256(r.previous_hash || ",
            canonical_of_r!(),
            ") AS hash FROM r WHERE r.index_in_stream = 1 \
             UNION ALL SELECT r.chain_key, r.index_in_stream, sha256(chain.hash || ",
            canonical_of_r!(),
            ") FROM chain JOIN r ON r.chain_key = chain.chain_key \
             AND r.index_in_stream = chain.index_in_stream + 1 WHERE r.index_in_stream <= 32)"
        )
    };
}

/// Inserts the rows of CTE `r` with their hashes from CTE `chain`, in `event_index` order (so
/// that the trigger, for the rows `chain` leaves out, finds the row before each).
macro_rules! chained_insert {
    () => {
        concat!(
            "INSERT INTO events (position, event_id, stream_type, stream_id, stream_version, \
             event_type, schema_version, occurred_at, correlation_id, causation_id, saga_id, \
             actor, source, payload, trace_context, hash) SELECT ",
            row_columns!(),
            ", chain.hash FROM r LEFT JOIN chain ON chain.chain_key = r.chain_key \
             AND chain.index_in_stream = r.index_in_stream ORDER BY r.event_index"
        )
    };
}

/// One stream's events after a version. A stream is always read as a prefix (version N+1 can
/// only be inserted once version N is committed), so no horizon is needed.
pub(crate) const READ_STREAM: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE stream_type = $1 AND stream_id = $2 AND stream_version > $3 \
     ORDER BY stream_version LIMIT $4"
);

/// Several streams' events in one statement (see `reader.rs`): $1 stream types, $2 stream ids,
/// $3 versions to read after, $4 row limits, one element per read. Each row is a stream's event
/// followed by the 1-based number of the read it answers, ordered by read, then version. The
/// first array goes through `mercato_unsized`, so that PostgreSQL keeps its generic plan rather
/// than planning every batch anew (see the migration `20250101000600_generic_batch_plans.sql`);
/// the batch appends do the same.
pub(crate) const READ_STREAMS: &str = concat!(
    "SELECT e.*, r.request_number \
     FROM unnest(mercato_unsized($1::text[]), $2::text[], $3::bigint[], $4::bigint[]) \
     WITH ORDINALITY AS r(stream_type, stream_id, after_version, max_rows, request_number) \
     CROSS JOIN LATERAL (SELECT ",
    event_columns!(),
    " FROM events WHERE events.stream_type = r.stream_type AND events.stream_id = r.stream_id \
     AND events.stream_version > r.after_version ORDER BY events.stream_version \
     LIMIT r.max_rows) e ORDER BY r.request_number, e.stream_version"
);

/// The index of the read number in a row of [`READ_STREAMS`] (after the 15 event columns).
pub(crate) const READ_STREAMS_REQUEST_COLUMN: usize = 15;

pub(crate) const FIND_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE event_id = ANY($1::uuid[]) ORDER BY position"
);

/// One correlation id's events after a position, below the horizon (as [`READ_PAGE`] reads the
/// log: nothing can appear below it later), through the `(correlation_id, position)` index.
pub(crate) const READ_CORRELATED: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE correlation_id = $1 AND position > $2 \
     AND position < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20) \
     ORDER BY position LIMIT $3"
);

/// Appends one request's events in one statement, or appends nothing and says why.
///
/// Parameters: $1 stream_type, $2 stream_id, $3 required version (-1 for any), then one array
/// per column: $4 event ids, $5 event types, $6 schema versions, $7 occurred_at,
/// $8 correlation ids, $9 causation ids, $10 saga ids, $11 actors, $12 sources, $13 payloads,
/// $14 trace contexts.
///
/// The statement inserts only when every guard holds:
/// - the stream is at the required version;
/// - none of the event ids is stored yet (a retried append is answered from the stored rows);
/// - the stream's last event has a lower position than the first new one. Only an append
///   inside a longer transaction that took its transaction id before a concurrent writer
///   committed to the same stream can fail this; without it that stream's versions would not
///   be in position order;
/// - the transaction still has room for the events in its 2^20 positions.
///
/// It always returns one row: what it saw, and how many rows it inserted.
pub(crate) const APPEND: &str = concat!(
    r#"
WITH RECURSIVE head AS (
    SELECT stream_version, position, hash
    FROM events
    WHERE stream_type = $1 AND stream_id = $2
    ORDER BY stream_version DESC
    LIMIT 1
), seen AS (
    SELECT
        COALESCE((SELECT stream_version FROM head), 0) AS current_version,
        COALESCE((SELECT position FROM head), -1) AS last_position,
        CASE WHEN EXISTS (SELECT FROM head) THEN (SELECT hash FROM head)
             ELSE '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
        END AS previous_hash,
        mercato_stored_event_ids($4::uuid[]) AS n_known,
        pg_current_xact_id()::text::bigint << 20 AS xact_base
), start AS (
    SELECT
        seen.*,
        COALESCE(
            (SELECT max(position) + 1 FROM events
             WHERE position >= seen.xact_base AND position < seen.xact_base + 1048576),
            seen.xact_base
        ) AS first_position
    FROM seen
), accepted AS (
    SELECT *
    FROM start
    WHERE ($3::bigint < 0 OR current_version = $3::bigint)
      AND n_known = 0
      AND last_position < first_position
      AND first_position + cardinality($4::uuid[]) <= xact_base + 1048576
), r AS (
    SELECT
        accepted.first_position + input.event_index - 1 AS position, input.event_id,
        $1::text AS stream_type, $2::text AS stream_id,
        accepted.current_version + input.event_index AS stream_version, input.event_type,
        input.schema_version, input.occurred_at, input.correlation_id, input.causation_id,
        input.saga_id, input.actor, input.source, input.payload, input.trace_context,
        1 AS chain_key, input.event_index AS index_in_stream, input.event_index,
        accepted.previous_hash
    FROM accepted,
        UNNEST($4::uuid[], $5::text[], $6::int4[], $7::timestamptz[], $8::text[], $9::text[],
               $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
        WITH ORDINALITY AS input(event_id, event_type, schema_version, occurred_at,
            correlation_id, causation_id, saga_id, actor, source, payload, trace_context,
            event_index)
), "#,
    chain_cte!(),
    ", inserted AS (",
    chained_insert!(),
    r#" RETURNING 1
)
SELECT
    start.current_version,
    start.last_position,
    start.n_known,
    start.first_position,
    start.xact_base,
    (SELECT count(*) FROM inserted) AS n_inserted
FROM start
"#
);

/// Appends up to this many events with one `VALUES` row each; more go through `UNNEST`.
pub(crate) const VALUES_MAX_ROWS: usize = 32;

const INSERT_COLUMNS: &str = "INSERT INTO events (position, event_id, stream_type, stream_id, \
    stream_version, event_type, schema_version, occurred_at, correlation_id, causation_id, \
    saga_id, actor, source, payload, trace_context, hash)";

/// The rows `r` of the lone statement, read from `input` (a `VALUES` list or an `UNNEST` of
/// arrays, with `event_index`), after the stream's head: nothing when the stream is not at the
/// required version ($3, -1 for any).
fn alone_rows(input: &str) -> String {
    format!(
        "SELECT (pg_current_xact_id()::text::bigint << 20) + input.event_index - 1 AS position, \
         input.event_id, $1::text AS stream_type, $2::text AS stream_id, \
         seen.current_version + input.event_index AS stream_version, input.event_type, \
         input.schema_version, input.occurred_at, input.correlation_id, input.causation_id, \
         input.saga_id, input.actor, input.source, input.payload, input.trace_context, \
         1 AS chain_key, \
         input.event_index AS index_in_stream, input.event_index, seen.previous_hash \
         FROM (SELECT COALESCE(head.stream_version, 0) AS current_version, \
         CASE WHEN head.stream_version IS NULL THEN {} ELSE head.hash END AS previous_hash \
         FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT stream_version, hash FROM events \
         WHERE stream_type = $1::text AND stream_id = $2::text \
         ORDER BY stream_version DESC LIMIT 1) AS head ON true) AS seen, {input} \
         WHERE $3::bigint < 0 OR seen.current_version = $3::bigint",
        zero_hash!()
    )
}

/// The append statement for a request that is its transaction's only statement (the common
/// case, run outside any explicit transaction): it inserts every event or none, and returns the
/// inserted rows. Parameters: $1 stream_type, $2 stream_id, $3 required version (-1 for any),
/// then 11 per event as in [`APPEND`] (bound row by row for up to [`VALUES_MAX_ROWS`] events,
/// as arrays beyond). One event is hashed directly ([`chain_hash!`]), more are chained in the
/// statement ([`chain_cte!`]).
///
/// It can be this lean because it runs alone in its transaction: its positions start at the
/// transaction's base; its transaction id is taken after its snapshot, so every event it sees
/// in the stream has a lower position; and a refused or conflicting insert is classified
/// afterwards on the same connection.
fn alone_statement(input: &str, n_events: usize) -> String {
    let rows = alone_rows(input);
    if n_events == 1 {
        format!(
            "{INSERT_COLUMNS} SELECT {}, {} FROM ({rows}) AS r RETURNING position, stream_version",
            row_columns!(),
            chain_hash!()
        )
    } else {
        format!(
            "WITH RECURSIVE r AS ({rows}), {} {} RETURNING position, stream_version",
            chain_cte!(),
            chained_insert!()
        )
    }
}

pub(crate) fn append_alone(n_events: usize) -> &'static str {
    static BY_ROW_COUNT: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let statements = BY_ROW_COUNT.get_or_init(|| {
        let mut statements = Vec::with_capacity(VALUES_MAX_ROWS + 2);
        statements.push(alone_statement(
            "UNNEST($4::uuid[], $5::text[], $6::int4[], $7::timestamptz[], $8::text[], \
             $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[]) \
             WITH ORDINALITY AS input(event_id, event_type, schema_version, occurred_at, \
             correlation_id, causation_id, saga_id, actor, source, payload, trace_context, \
             event_index)",
            VALUES_MAX_ROWS + 1,
        ));
        for n_rows in 1..=VALUES_MAX_ROWS {
            let rows: Vec<String> = (0..n_rows)
                .map(|row_index| {
                    let first = 4 + row_index * 11;
                    format!(
                        "({}, ${}::uuid, ${}::text, ${}::int4, ${}::timestamptz, ${}::text, \
                         ${}::text, ${}::text, ${}::text, ${}::text, ${}::text, ${}::text)",
                        row_index + 1,
                        first,
                        first + 1,
                        first + 2,
                        first + 3,
                        first + 4,
                        first + 5,
                        first + 6,
                        first + 7,
                        first + 8,
                        first + 9,
                        first + 10
                    )
                })
                .collect();
            let input = format!(
                "(VALUES {}) AS input(event_index, event_id, event_type, schema_version, \
                 occurred_at, correlation_id, causation_id, saga_id, actor, source, payload, \
                 trace_context)",
                rows.join(", ")
            );
            statements.push(alone_statement(&input, n_rows));
        }
        statements
    });
    // Index 0 is the UNNEST form.
    let index = if n_events <= VALUES_MAX_ROWS {
        n_events
    } else {
        0
    };
    statements[index].as_str()
}

/// The requests of a batch append with the version and hash of their streams' heads (one probe
/// of the stream's index each), as the CTE `request` ($1 stream types, $2 stream ids, $3
/// required versions).
macro_rules! batch_requests {
    () => {
        concat!(
            r#"request AS MATERIALIZED (
    SELECT
        request.request_number,
        request.stream_type,
        request.stream_id,
        request.required_version,
        COALESCE(head.stream_version, 0) AS current_version,
        CASE WHEN head.stream_version IS NULL THEN "#,
            zero_hash!(),
            r#" ELSE head.hash END AS previous_hash
    FROM UNNEST(mercato_unsized($1::text[]), $2::text[], $3::bigint[]) WITH ORDINALITY
        AS request(stream_type, stream_id, required_version, request_number)
    LEFT JOIN LATERAL (
        SELECT events.stream_version, events.hash FROM events
        WHERE events.stream_type = request.stream_type AND events.stream_id = request.stream_id
        ORDER BY events.stream_version DESC LIMIT 1
    ) AS head ON true
)"#
        )
    };
}

/// The rows `r` of a batch append: its events ($4 to $16) joined to their requests, for the
/// requests whose stream is at the required version.
macro_rules! batch_rows {
    () => {
        r#"SELECT
        (pg_current_xact_id()::text::bigint << 20) + input.event_index - 1 AS position,
        input.event_id, request.stream_type, request.stream_id,
        request.current_version + input.index_in_request AS stream_version, input.event_type,
        input.schema_version, input.occurred_at, input.correlation_id, input.causation_id,
        input.saga_id, input.actor, input.source, input.payload, input.trace_context,
        input.request_number AS chain_key, input.index_in_request AS index_in_stream,
        input.event_index, request.previous_hash
    FROM UNNEST(mercato_unsized($4::int4[]), $5::bigint[], $6::uuid[], $7::text[], $8::int4[],
                $9::timestamptz[], $10::text[], $11::text[], $12::text[], $13::text[],
                $14::text[], $15::text[], $16::text[])
        WITH ORDINALITY AS input(request_number, index_in_request, event_id, event_type,
            schema_version, occurred_at, correlation_id, causation_id, saga_id, actor, source,
            payload, trace_context, event_index)
    JOIN request ON request.request_number = input.request_number
    WHERE request.required_version < 0 OR request.current_version = request.required_version"#
    };
}

/// Appends several requests, each to its own stream, in one statement outside any explicit
/// transaction (a group commit of concurrent appends).
///
/// Parameters, one entry per request: $1 stream types, $2 stream ids, $3 required versions
/// (-1 for any); one entry per event, request by request and in each request's order:
/// $4 the request's number (1-based), $5 the event's number within its request (1-based), then
/// the columns as in [`APPEND`] from $6 (event ids) to $16 (trace contexts). No two requests name the
/// same stream.
///
/// Each request whose stream is at its required version has all its events inserted; the
/// others get none. The position index is the event's number within the whole statement, so
/// the low 20 bits of a returned position say which event it is. It is correct for the reason
/// the lone statement is: one statement alone in its transaction takes its transaction id after
/// its snapshot, so every event it saw in any of these streams has a lower position.
///
/// For requests of one event each; a batch with a longer request goes through
/// [`APPEND_BATCH_CHAINED`].
pub(crate) const APPEND_BATCH: &str = concat!(
    "WITH ",
    batch_requests!(),
    r#"
INSERT INTO events (position, event_id, stream_type, stream_id, stream_version, event_type,
    schema_version, occurred_at, correlation_id, causation_id, saga_id, actor, source, payload,
    trace_context, hash)
SELECT "#,
    row_columns!(),
    ", ",
    chain_hash!(),
    " FROM (",
    batch_rows!(),
    r#") AS r
-- In the batch's order (sorted by stream), so that concurrent batches insert in the same order.
ORDER BY r.event_index
RETURNING position, stream_version
"#
);

/// [`APPEND_BATCH`] for a batch where a request has more than one event: every event is hashed
/// in the statement ([`chain_cte!`]), not only each request's first.
pub(crate) const APPEND_BATCH_CHAINED: &str = concat!(
    "WITH RECURSIVE ",
    batch_requests!(),
    ", r AS (",
    batch_rows!(),
    "), ",
    chain_cte!(),
    " ",
    chained_insert!(),
    " RETURNING position, stream_version"
);

/// The stored events among a list of ids: what a rejected append is classified with.
pub(crate) const STORED_IDS: &str = "SELECT event_id, stream_type, stream_id, stream_version, \
    position FROM events WHERE event_id = ANY($1::uuid[])";

pub(crate) const STREAM_VERSION: &str = "SELECT COALESCE(max(stream_version), 0) FROM events \
    WHERE stream_type = $1 AND stream_id = $2";

/// One page of the global log below the horizon, plus whether committed events wait above it.
///
/// The horizon is `xmin << 20`, where xmin is the oldest transaction still running when this
/// statement's snapshot was taken: every transaction with a lower id has finished, so no event
/// can ever appear below the horizon later. The same snapshot decides which rows are visible,
/// so what this statement returns below the horizon is final.
///
/// The page is the first `$2` visible events after `$1`, cut at the horizon: the cut comes
/// after the LIMIT so that the planner walks the primary key in order (it cannot estimate the
/// horizon, and would otherwise sort the whole tail of the log).
///
/// Always returns at least one row; `position` is NULL when the page is empty. Rows come in no
/// promised order (an outer ORDER BY cost a sort of the page on the server); the reader puts them
/// in position order.
pub(crate) const READ_PAGE: &str = r#"
WITH bound AS MATERIALIZED (
    SELECT
        horizon,
        (SELECT position FROM events WHERE position >= horizon ORDER BY position LIMIT 1)
            IS NOT NULL AS pending
    FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20 AS horizon) AS now
), page AS (
    SELECT position, event_id, stream_type, stream_id, stream_version, event_type,
        schema_version, occurred_at, correlation_id, causation_id, saga_id, actor, source, payload,
        trace_context
    FROM events
    WHERE position > $1
    ORDER BY position
    LIMIT $2
)
SELECT page.*, bound.pending
FROM bound
LEFT JOIN page ON page.position < bound.horizon
"#;

/// The index of the `pending` flag in a row of [`READ_PAGE`] (after the 15 event columns).
pub(crate) const READ_PAGE_PENDING_COLUMN: usize = 15;

pub(crate) const HEAD_POSITION: &str = "SELECT COALESCE(max(position), 0) FROM events \
    WHERE position < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)";

pub(crate) const UPSERT_SNAPSHOT: &str = "INSERT INTO snapshots (stream_type, stream_id, version, \
    state, taken_at) VALUES ($1, $2, $3, $4, now()) \
    ON CONFLICT (stream_type, stream_id) DO UPDATE \
    SET version = excluded.version, state = excluded.state, taken_at = excluded.taken_at \
    WHERE snapshots.version <= excluded.version";

pub(crate) const LOAD_SNAPSHOT: &str =
    "SELECT version, state FROM snapshots WHERE stream_type = $1 AND stream_id = $2";

pub(crate) const NOTIFY: &str = "SELECT pg_notify($1, '')";
