-- The queries PostgresStorage runs, each after a `-- name: <name>` line
-- (psycopg's %(name)s parameters). A run's row is always selected as the
-- columns of RunRow, in its order: run_id, token, id, workflow, version,
-- status, seq, lease_owner, lease_expires, runnable, created_at,
-- updated_at, trace.

-- name: create_run
INSERT INTO hephaestus.runs (
    token, id, workflow, version, unique_key, status, runnable, created_at, updated_at, trace
) VALUES (
    %(token)s, %(id)s, %(workflow)s, %(version)s, %(unique_key)s, %(status)s, %(runnable)s,
    %(created_at)s, %(created_at)s, %(trace)s
)
RETURNING run_id;

-- name: create_snapshot
INSERT INTO hephaestus.snapshots (run_id, seq, data) VALUES (%(run_id)s, 0, %(snapshot)s);

-- name: unique_key_holder
SELECT run_id, id FROM hephaestus.runs WHERE unique_key = %(unique_key)s;

-- name: append_run
-- Applies only at the journal position the change was built on and, when
-- it names an owner, while that owner holds the lease; the row stays
-- locked until the transaction ends.
UPDATE hephaestus.runs SET
    seq = seq + %(count)s,
    status = %(status)s,
    runnable = %(runnable)s,
    updated_at = %(updated_at)s,
    unique_key = CASE WHEN %(finished)s THEN NULL ELSE unique_key END,
    lease_owner = CASE WHEN %(release)s THEN NULL ELSE lease_owner END,
    lease_expires = CASE WHEN %(release)s THEN NULL ELSE lease_expires END
WHERE run_id = %(run_id)s
  AND seq = %(expected_seq)s
  AND (%(owner)s::text IS NULL OR lease_owner = %(owner)s::text)
RETURNING run_id;

-- name: run_state
SELECT seq, lease_owner FROM hephaestus.runs WHERE run_id = %(run_id)s;

-- name: append_record
INSERT INTO hephaestus.journal (run_id, seq, record) VALUES (%(run_id)s, %(seq)s, %(record)s);

-- name: replace_snapshot
UPDATE hephaestus.snapshots SET seq = %(seq)s, data = %(snapshot)s WHERE run_id = %(run_id)s;

-- name: drop_timer
DELETE FROM hephaestus.timers WHERE run_id = %(run_id)s AND step = %(step)s;

-- name: set_timer
INSERT INTO hephaestus.timers (run_id, step, kind, due, attempt)
VALUES (%(run_id)s, %(step)s, %(kind)s, %(due)s, %(attempt)s)
ON CONFLICT (run_id, step) DO UPDATE
SET kind = EXCLUDED.kind, due = EXCLUDED.due, attempt = EXCLUDED.attempt;

-- name: drop_all_timers
DELETE FROM hephaestus.timers WHERE run_id = %(run_id)s;

-- name: add_attempt
INSERT INTO hephaestus.attempts (
    run_id, step, attempt, finished, outcome, error_type, error_message, started, traceback
) VALUES (
    %(run_id)s, %(step)s, %(attempt)s, %(finished)s, %(outcome)s, %(error_type)s,
    %(error_message)s, %(started)s, %(traceback)s
);

-- name: fire_wake_run
-- A fired wait resumes its step: the run is running until its claimer
-- replays the record and stores the status it leads to. Returns the
-- journal position the record (if any) takes.
UPDATE hephaestus.runs SET
    seq = seq + %(appended)s,
    status = CASE WHEN %(appended)s > 0 THEN 'running' ELSE status END,
    runnable = TRUE,
    updated_at = %(now)s
WHERE run_id = %(run_id)s
RETURNING seq;

-- name: claim
UPDATE hephaestus.runs SET lease_owner = %(owner)s, lease_expires = %(until)s
WHERE run_id IN (
    SELECT run_id FROM hephaestus.runs
    WHERE runnable
      AND NOT (workflow = ANY(%(skip)s))
      AND (lease_owner IS NULL OR lease_owner = %(owner)s OR lease_expires <= %(now)s)
    ORDER BY run_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING run_id, token, id, workflow, version, status, seq, lease_owner, lease_expires,
          runnable, created_at, updated_at, trace;

-- name: renew
UPDATE hephaestus.runs SET lease_expires = %(until)s WHERE lease_owner = %(owner)s;

-- name: release_all
UPDATE hephaestus.runs SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = %(owner)s;

-- name: release_some
UPDATE hephaestus.runs SET lease_owner = NULL, lease_expires = NULL
WHERE lease_owner = %(owner)s AND run_id = ANY(%(run_ids)s);

-- name: lease_owners
SELECT DISTINCT lease_owner FROM hephaestus.runs WHERE lease_owner IS NOT NULL;

-- name: due
SELECT run_id, step, kind, due, attempt FROM hephaestus.timers
WHERE due <= %(now)s
ORDER BY due, run_id, step
LIMIT %(limit)s;

-- name: next_wake
-- The earliest timer, and the earliest lease of another owner on a runnable run.
SELECT
    (SELECT min(due) FROM hephaestus.timers),
    (SELECT min(lease_expires) FROM hephaestus.runs
     WHERE runnable AND lease_owner IS NOT NULL AND lease_owner != %(owner)s);

-- name: load_run
SELECT r.run_id, r.token, r.id, r.workflow, r.version, r.status, r.seq, r.lease_owner,
       r.lease_expires, r.runnable, r.created_at, r.updated_at, r.trace, s.data, s.seq
FROM hephaestus.runs AS r JOIN hephaestus.snapshots AS s ON s.run_id = r.run_id
WHERE r.run_id = %(run_id)s;

-- name: load_records
SELECT record FROM hephaestus.journal WHERE run_id = %(run_id)s AND seq > %(after)s ORDER BY seq;

-- name: load_timers
SELECT step, kind, due, attempt FROM hephaestus.timers WHERE run_id = %(run_id)s
ORDER BY due, step;

-- name: load_attempts
SELECT step, attempt, finished, outcome, error_type, error_message, started, traceback
FROM hephaestus.attempts
WHERE run_id = %(run_id)s
ORDER BY attempt_id;

-- name: find
-- The filters given are added, each with AND, then the order and limit.
SELECT run_id, token, id, workflow, version, status, seq, lease_owner, lease_expires,
       runnable, created_at, updated_at, trace
FROM hephaestus.runs
WHERE TRUE

-- name: dispatch_step
-- A run of a step handed to the queue (again, after a stalled execution).
INSERT INTO hephaestus.step_jobs (run_id, unit, attempt, job_id)
VALUES (%(run_id)s, %(unit)s, %(attempt)s, %(job_id)s)
ON CONFLICT (run_id, unit) DO UPDATE SET
    attempt = EXCLUDED.attempt, job_id = EXCLUDED.job_id, holder = NULL, held_until = NULL,
    started = NULL, outcome = NULL, record = NULL, error_type = NULL, error_message = NULL,
    traceback = NULL, finished = NULL;

-- name: settle_step
-- The outcome was applied: the row goes.
DELETE FROM hephaestus.step_jobs
WHERE run_id = %(run_id)s AND unit = %(unit)s AND outcome IS NOT NULL;

-- name: drop_step_jobs
-- The run finished: its rows go, and their jobs are aborted.
DELETE FROM hephaestus.step_jobs WHERE run_id = %(run_id)s RETURNING job_id;

-- name: claim_step
-- An execution of the job takes the row over (the last one to claim it is
-- the only one that may record the outcome).
UPDATE hephaestus.step_jobs
SET holder = %(holder)s, held_until = %(until)s, started = %(now)s
WHERE run_id = %(run_id)s AND unit = %(unit)s AND attempt = %(attempt)s
  AND job_id = %(job_id)s AND outcome IS NULL
RETURNING run_id;

-- name: renew_steps
UPDATE hephaestus.step_jobs SET held_until = %(until)s
WHERE holder = ANY(%(holders)s) AND outcome IS NULL;

-- name: record_step
-- Only while the execution still holds the row, and only once.
UPDATE hephaestus.step_jobs SET
    outcome = %(outcome)s, record = %(record)s, error_type = %(error_type)s,
    error_message = %(error_message)s, traceback = %(traceback)s, finished = %(finished)s
WHERE run_id = %(run_id)s AND unit = %(unit)s AND attempt = %(attempt)s
  AND holder = %(holder)s AND outcome IS NULL
RETURNING run_id;

-- name: step_outcomes
SELECT run_id, unit, attempt, outcome, record, error_type, error_message, traceback,
       started, finished
FROM hephaestus.step_jobs
WHERE run_id = ANY(%(run_ids)s) AND outcome IS NOT NULL
ORDER BY finished;

-- name: stalled_steps
-- Runs of steps whose execution stopped renewing its hold, of runs the
-- owner drives.
SELECT j.run_id, j.unit
FROM hephaestus.step_jobs AS j JOIN hephaestus.runs AS r ON r.run_id = j.run_id
WHERE j.outcome IS NULL AND j.held_until < %(now)s AND r.lease_owner = %(owner)s;

-- name: load_step_jobs
SELECT unit, attempt, job_id FROM hephaestus.step_jobs WHERE run_id = %(run_id)s ORDER BY unit;

-- name: load_instance
-- What a queued step needs of its run, in one statement (one snapshot): its
-- row, its snapshot, and the journal records after it.
SELECT r.run_id, r.token, r.id, r.workflow, r.version, r.status, r.seq, r.lease_owner,
       r.lease_expires, r.runnable, r.created_at, r.updated_at, r.trace, s.data, s.seq,
       ARRAY(SELECT j.record FROM hephaestus.journal AS j
             WHERE j.run_id = r.run_id AND j.seq > s.seq ORDER BY j.seq)
FROM hephaestus.runs AS r JOIN hephaestus.snapshots AS s ON s.run_id = r.run_id
WHERE r.run_id = %(run_id)s;
