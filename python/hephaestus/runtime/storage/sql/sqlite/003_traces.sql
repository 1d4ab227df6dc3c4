-- Schema version 3: a run keeps the trace context it was started in
-- (OpenTelemetry's W3C traceparent and tracestate, as JSON), so that its
-- steps join the caller's trace in whichever process runs them; a failed
-- attempt keeps the last frames of its exception's traceback.

ALTER TABLE runs ADD COLUMN trace TEXT;
ALTER TABLE attempts ADD COLUMN traceback TEXT;
