-- The W3C trace context of the work that appended an event (traceparent, then tracestate after
-- a line break), when it was traced. Operational, like a log line's trace id: the hash chain
-- (`mercato_canonical`) does not cover it, and events stored before it have none.
ALTER TABLE events ADD COLUMN trace_context TEXT;
