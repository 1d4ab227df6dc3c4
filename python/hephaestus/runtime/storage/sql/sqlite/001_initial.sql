-- Schema version 1: runs, their journals, timers and failed attempts.
--
-- Applied inside one write transaction by SQLiteStorage.open(), which then
-- sets PRAGMA user_version = 1.

-- Marks the database as ours: open() refuses a database with tables but no
-- such row.
CREATE TABLE hephaestus_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO hephaestus_meta (key, value) VALUES ('schema', 'hephaestus');

-- One row per run. AUTOINCREMENT: run ids only ever grow, even after a
-- deleted newest row.
CREATE TABLE runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    token TEXT NOT NULL,
    id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    version INTEGER NOT NULL,
    -- Set while the run is unfinished; NULL once it completed or failed, so
    -- the key is free again.
    unique_key TEXT,
    status TEXT NOT NULL,
    -- The number of journal records.
    seq INTEGER NOT NULL DEFAULT 0,
    runnable INTEGER NOT NULL CHECK (runnable IN (0, 1)),
    lease_owner TEXT,
    lease_expires REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

-- Uniqueness: at most one unfinished run per key (never check-then-insert).
CREATE UNIQUE INDEX runs_unique_key ON runs (unique_key) WHERE unique_key IS NOT NULL;
-- Listing by status, by workflow, and the runs of one id (newest first).
CREATE INDEX runs_status ON runs (status, run_id);
CREATE INDEX runs_workflow ON runs (workflow, run_id);
CREATE INDEX runs_id ON runs (id, run_id);
-- Claimable runs, oldest first.
CREATE INDEX runs_runnable ON runs (run_id) WHERE runnable = 1;
-- The leases one owner holds (renew), and the earliest lease to expire
-- (next_wake).
CREATE INDEX runs_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_lease_expires ON runs (lease_expires)
    WHERE runnable = 1 AND lease_owner IS NOT NULL;

-- A run's snapshot, apart from its row: the row changes with every step,
-- and rewriting a large blob each time would make a step cost as much as
-- the instance is big.
CREATE TABLE snapshots (
    run_id INTEGER PRIMARY KEY REFERENCES runs (run_id),
    -- How many journal records the snapshot includes.
    seq INTEGER NOT NULL,
    data BLOB NOT NULL
);

-- The append-only journal: record `seq` of run `run_id` (1, 2, ...).
CREATE TABLE journal (
    run_id INTEGER NOT NULL REFERENCES runs (run_id),
    seq INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- At most one timer per step of a run.
CREATE TABLE timers (
    run_id INTEGER NOT NULL REFERENCES runs (run_id),
    step TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('wait', 'retry')),
    due REAL NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE INDEX timers_due ON timers (due, run_id, step);

-- Failed attempts, in the order they were stored.
CREATE TABLE attempts (
    attempt_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (run_id),
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    finished REAL NOT NULL,
    outcome TEXT NOT NULL,
    error_type TEXT,
    error_message TEXT,
    started REAL
);
CREATE INDEX attempts_run ON attempts (run_id, attempt_id);
