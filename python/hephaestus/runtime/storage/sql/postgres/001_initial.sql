-- Schema version 1 of the Postgres storage, in its own schema
-- ("hephaestus"), beside whatever else the database holds (procrastinate's
-- tables, the application's). Times are seconds on the runtime's clock.

CREATE TABLE hephaestus.runs (
    run_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token TEXT NOT NULL,
    id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    version INTEGER NOT NULL,
    -- Set while the run is unfinished and its workflow checks uniqueness.
    unique_key TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed')),
    -- How many journal records the run has.
    seq BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires DOUBLE PRECISION,
    runnable BOOLEAN NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    -- The trace context the run was started in (W3C traceparent, JSON).
    trace TEXT
);
-- Uniqueness: at most one unfinished run per key, enforced by the index.
CREATE UNIQUE INDEX runs_unique_key ON hephaestus.runs (unique_key)
    WHERE unique_key IS NOT NULL;
CREATE INDEX runs_id ON hephaestus.runs (id, run_id);
CREATE INDEX runs_status ON hephaestus.runs (status, run_id);
CREATE INDEX runs_workflow ON hephaestus.runs (workflow, run_id);
CREATE INDEX runs_runnable ON hephaestus.runs (run_id) WHERE runnable;
CREATE INDEX runs_leased ON hephaestus.runs (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE hephaestus.snapshots (
    run_id BIGINT PRIMARY KEY REFERENCES hephaestus.runs (run_id),
    -- How many journal records the snapshot includes.
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL
);

CREATE TABLE hephaestus.journal (
    run_id BIGINT NOT NULL REFERENCES hephaestus.runs (run_id),
    seq BIGINT NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE hephaestus.timers (
    run_id BIGINT NOT NULL REFERENCES hephaestus.runs (run_id),
    step TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('wait', 'retry', 'repeat')),
    due DOUBLE PRECISION NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE INDEX timers_due ON hephaestus.timers (due, run_id, step);

-- Failed attempts, in the order they were stored.
CREATE TABLE hephaestus.attempts (
    attempt_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES hephaestus.runs (run_id),
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    finished DOUBLE PRECISION NOT NULL,
    outcome TEXT NOT NULL,
    error_type TEXT,
    error_message TEXT,
    started DOUBLE PRECISION,
    traceback TEXT
);
CREATE INDEX attempts_run ON hephaestus.attempts (run_id, attempt_id);
