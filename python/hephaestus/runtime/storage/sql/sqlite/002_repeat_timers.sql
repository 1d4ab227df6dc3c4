-- Schema version 2: timers may also hold back the next run of a Repeat step
-- (kind 'repeat'), and a timer's step may name one run of a ForEach or
-- Repeat step ("key#iteration").
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt
-- with its rows, inside the migration's write transaction.

CREATE TABLE timers_v2 (
    run_id INTEGER NOT NULL REFERENCES runs (run_id),
    step TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('wait', 'retry', 'repeat')),
    due REAL NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
INSERT INTO timers_v2 (run_id, step, kind, due, attempt)
    SELECT run_id, step, kind, due, attempt FROM timers;
DROP TABLE timers;
ALTER TABLE timers_v2 RENAME TO timers;
CREATE INDEX timers_due ON timers (due, run_id, step);
