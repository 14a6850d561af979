-- The text keys that appends and reads look up by equality compare their bytes: an index on
-- them then needs no locale (a database created with an ICU or glibc locale such as
-- en_US.UTF-8 or C.UTF-8 would compare every key through it). Equality is the same in every
-- deterministic collation, so no lookup answers differently; only the indexes are rebuilt.
ALTER TABLE events
    ALTER COLUMN stream_type TYPE TEXT COLLATE "C",
    ALTER COLUMN stream_id TYPE TEXT COLLATE "C",
    ALTER COLUMN correlation_id TYPE TEXT COLLATE "C";
ALTER TABLE snapshots
    ALTER COLUMN stream_type TYPE TEXT COLLATE "C",
    ALTER COLUMN stream_id TYPE TEXT COLLATE "C";
ALTER TABLE audit_stream_heads
    ALTER COLUMN stream_type TYPE TEXT COLLATE "C",
    ALTER COLUMN stream_id TYPE TEXT COLLATE "C";
