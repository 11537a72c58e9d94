-- W3C trace context: the task's (its work continues that trace in every
-- service) and each event's (published with it on Redis).
ALTER TABLE tasks ADD COLUMN traceparent TEXT;
ALTER TABLE events ADD COLUMN traceparent TEXT;
