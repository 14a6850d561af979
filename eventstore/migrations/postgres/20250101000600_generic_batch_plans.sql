-- The batch statements (`READ_STREAMS`, `APPEND_BATCH`; eventstore/src/postgres/sql.rs) read
-- their requests from arrays. Given the arrays, PostgreSQL's custom plan knows how many requests
-- a batch holds, and its generic plan guesses 10; a batch of fewer then looks cheaper to plan
-- again than to run the generic plan, and every batch was planned anew, which cost more than
-- running it. An array passed through this function has no length the planner can see (it is
-- not inlined, and VOLATILE, so not evaluated while planning): both plans guess 10, and the
-- cached generic plan is kept.
CREATE FUNCTION mercato_unsized(items ANYARRAY) RETURNS ANYARRAY
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
AS $$ BEGIN RETURN items; END $$;
