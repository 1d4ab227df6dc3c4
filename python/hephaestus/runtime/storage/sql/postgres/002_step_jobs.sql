-- Schema version 2: steps run as jobs of a task queue (executor="procrastinate").
-- One row per run of a step that was handed to the queue and whose outcome
-- the run's driver has not applied yet. The queue's job only carries the
-- row's key; the row is the truth: only the execution that holds it (the
-- last to claim it) may record the outcome, and the driver deletes it in the
-- transaction that applies the outcome, so an outcome is applied once.
CREATE TABLE hephaestus.step_jobs (
    run_id BIGINT NOT NULL REFERENCES hephaestus.runs (run_id),
    -- The step key, with "#iteration" for a run of a ForEach or Repeat step.
    unit TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    -- The queue's id of the job that runs it.
    job_id BIGINT NOT NULL,
    -- The execution running it now, and until when (it renews while it runs).
    holder TEXT,
    held_until DOUBLE PRECISION,
    started DOUBLE PRECISION,
    -- How the attempt ended ('returned', 'raised', 'timed_out'); NULL while
    -- it has not.
    outcome TEXT CHECK (outcome IN ('returned', 'raised', 'timed_out')),
    -- For 'returned': the step's outcome as a journal record.
    record BYTEA,
    error_type TEXT,
    error_message TEXT,
    traceback TEXT,
    finished DOUBLE PRECISION,
    PRIMARY KEY (run_id, unit)
);
CREATE INDEX step_jobs_ended ON hephaestus.step_jobs (run_id) WHERE outcome IS NOT NULL;
CREATE INDEX step_jobs_held ON hephaestus.step_jobs (held_until) WHERE outcome IS NULL;
