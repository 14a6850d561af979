-- `read_correlated`: the events of one correlation id in position order.
CREATE INDEX IF NOT EXISTS events_correlation_position_idx ON events (correlation_id, position);
