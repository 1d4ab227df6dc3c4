-- The queries SQLiteStorage runs, each after a `-- name: <name>` line.
-- Parsed once when hephaestus.runtime.storage.sqlite is imported.
--
-- A run's row is always selected as the columns of RunRow, in its order:
-- run_id, token, id, workflow, version, status, seq, lease_owner,
-- lease_expires, runnable, created_at, updated_at, trace.

-- name: schema_objects
-- How many tables, indexes, views and triggers the database has.
SELECT count(*) FROM sqlite_master;

-- name: schema_has_marker
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'hephaestus_meta';

-- name: schema_marker
SELECT value FROM hephaestus_meta WHERE key = 'schema';

-- name: create_run
INSERT INTO runs (
    token, id, workflow, version, unique_key, status, seq, runnable, created_at, updated_at,
    trace
) VALUES (
    :token, :id, :workflow, :version, :unique_key, :status, 0, :runnable,
    :created_at, :created_at, :trace
);

-- name: create_snapshot
INSERT INTO snapshots (run_id, seq, data) VALUES (:run_id, 0, :snapshot);

-- name: unique_key_holder
SELECT run_id, id FROM runs WHERE unique_key = :unique_key;

-- name: run_state
-- What commit checks before applying a change (and what it may leave alone).
SELECT seq, lease_owner, status, runnable FROM runs WHERE run_id = :run_id;

-- name: append_record
INSERT INTO journal (run_id, seq, record) VALUES (:run_id, :seq, :record);

-- name: update_run
UPDATE runs SET
    seq = :seq,
    status = :status,
    runnable = :runnable,
    updated_at = :updated_at,
    unique_key = CASE WHEN :finished THEN NULL ELSE unique_key END,
    lease_owner = CASE WHEN :release THEN NULL ELSE lease_owner END,
    lease_expires = CASE WHEN :release THEN NULL ELSE lease_expires END
WHERE run_id = :run_id;

-- name: advance_run
-- The common step: status, runnable state and lease unchanged, so that no
-- index of `runs` changes.
UPDATE runs SET seq = :seq, updated_at = :updated_at WHERE run_id = :run_id;

-- name: set_snapshot
UPDATE snapshots SET data = :snapshot, seq = :seq WHERE run_id = :run_id;

-- name: set_timer
INSERT OR REPLACE INTO timers (run_id, step, kind, due, attempt)
VALUES (:run_id, :step, :kind, :due, :attempt);

-- name: drop_timer
-- Also fires a timer: a firing applies only when this deletes a row.
DELETE FROM timers WHERE run_id = :run_id AND step = :step;

-- name: drop_all_timers
DELETE FROM timers WHERE run_id = :run_id;

-- name: add_attempt
INSERT INTO attempts (
    run_id, step, attempt, finished, outcome, error_type, error_message, started, traceback
) VALUES (
    :run_id, :step, :attempt, :finished, :outcome, :error_type, :error_message, :started,
    :traceback
);

-- name: fire_append_record
INSERT INTO journal (run_id, seq, record)
SELECT run_id, seq + 1, :record FROM runs WHERE run_id = :run_id;

-- name: fire_wake_run
-- A fired wait resumes its step: the run is running until its claimer
-- replays the record and stores the status it leads to.
UPDATE runs SET
    seq = seq + :appended,
    status = CASE WHEN :appended THEN 'running' ELSE status END,
    runnable = 1,
    updated_at = :now
WHERE run_id = :run_id;

-- name: claimable
-- Runnable runs that no one else holds, oldest first.
SELECT run_id FROM runs
WHERE runnable = 1
  AND (lease_owner IS NULL OR lease_expires <= :now OR lease_owner = :owner)
  AND workflow NOT IN (SELECT value FROM json_each(:skip))
ORDER BY run_id
LIMIT :limit;

-- name: lease
UPDATE runs SET lease_owner = :owner, lease_expires = :expires
WHERE run_id IN (SELECT value FROM json_each(:run_ids));

-- name: runs_by_ids
SELECT run_id, token, id, workflow, version, status, seq, lease_owner,
       lease_expires, runnable, created_at, updated_at, trace
FROM runs
WHERE run_id IN (SELECT value FROM json_each(:run_ids))
ORDER BY run_id;

-- name: renew
UPDATE runs SET lease_expires = :expires WHERE lease_owner = :owner;

-- name: release
UPDATE runs SET lease_owner = NULL, lease_expires = NULL
WHERE lease_owner = :owner AND run_id IN (SELECT value FROM json_each(:run_ids));

-- name: release_all
UPDATE runs SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = :owner;

-- name: lease_owners
SELECT DISTINCT lease_owner FROM runs WHERE lease_owner IS NOT NULL;

-- name: due
SELECT run_id, step, kind, due, attempt FROM timers
WHERE due <= :now
ORDER BY due, run_id, step
LIMIT :limit;

-- name: next_timer
SELECT min(due) FROM timers;

-- name: next_foreign_lease_expiry
SELECT min(lease_expires) FROM runs
WHERE runnable = 1 AND lease_owner IS NOT NULL AND lease_owner != :owner;

-- name: load_run
SELECT r.run_id, r.token, r.id, r.workflow, r.version, r.status, r.seq, r.lease_owner,
       r.lease_expires, r.runnable, r.created_at, r.updated_at, r.trace, s.data, s.seq
FROM runs AS r JOIN snapshots AS s ON s.run_id = r.run_id
WHERE r.run_id = :run_id;

-- name: load_records
SELECT record FROM journal WHERE run_id = :run_id AND seq > :after ORDER BY seq;

-- name: load_timers
SELECT step, kind, due, attempt FROM timers WHERE run_id = :run_id ORDER BY due, step;

-- name: load_attempts
SELECT step, attempt, finished, outcome, error_type, error_message, started, traceback
FROM attempts
WHERE run_id = :run_id
ORDER BY attempt_id;

-- name: newest
SELECT run_id, token, id, workflow, version, status, seq, lease_owner,
       lease_expires, runnable, created_at, updated_at, trace
FROM runs
WHERE id = :id
ORDER BY run_id DESC
LIMIT 1;

-- The four `find_*` queries apply the same filters (a NULL parameter means
-- no filter; `workflows` and `statuses` are JSON arrays) and differ only in
-- which one leads, so that its index is used.

-- name: find_by_id
SELECT run_id, token, id, workflow, version, status, seq, lease_owner,
       lease_expires, runnable, created_at, updated_at, trace
FROM runs
WHERE id = :id
  AND (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:version IS NULL OR version = :version)
ORDER BY run_id DESC
LIMIT :limit;

-- name: find_by_workflow
SELECT run_id, token, id, workflow, version, status, seq, lease_owner,
       lease_expires, runnable, created_at, updated_at, trace
FROM runs
WHERE workflow IN (SELECT value FROM json_each(:workflows))
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:version IS NULL OR version = :version)
ORDER BY run_id DESC
LIMIT :limit;

-- name: find_by_status
SELECT run_id, token, id, workflow, version, status, seq, lease_owner,
       lease_expires, runnable, created_at, updated_at, trace
FROM runs
WHERE status IN (SELECT value FROM json_each(:statuses))
  AND (:version IS NULL OR version = :version)
ORDER BY run_id DESC
LIMIT :limit;

-- name: find_all
SELECT run_id, token, id, workflow, version, status, seq, lease_owner,
       lease_expires, runnable, created_at, updated_at, trace
FROM runs
WHERE (:version IS NULL OR version = :version)
ORDER BY run_id DESC
LIMIT :limit;
