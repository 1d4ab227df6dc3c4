"""Steps as jobs of procrastinate, a Postgres task queue
(``executor="procrastinate"``; ``pip install 'hephaestus-core[distributed]'``).

The adapter between hephaestus and the queue, and all of it: hephaestus'
tables stay the source of truth, and procrastinate carries the work.

* **Defer.** A commit that makes a step runnable also enqueues its job and
  writes a row in ``hephaestus.step_jobs`` (run, unit, attempt, job id), in
  the same transaction (procrastinate's ``connection=``): a job exists
  exactly when the change that made its step runnable is committed.
* **Run.** A worker's job claims the row (the last execution to claim it
  holds it), loads the instance, runs the step and records its outcome in
  the row, only while it still holds it: the fencing procrastinate's
  ``finish_job`` lacks. A step's result is recorded once.
* **Apply.** The run's driver (the app that holds its lease, in some
  worker) applies recorded outcomes through the engine and deletes the rows
  in that commit, which also enqueues what became runnable. State changes to
  one instance are serialized by its lease; its steps run on any worker.
* **Timers and retries** are rows of ``hephaestus.timers``, fired by every
  worker's sweep (no job holds an instance ``lock``); the commit that fires
  one enqueues the step it releases.
* **Dead workers.** procrastinate's heartbeats mark a dead worker's jobs as
  stalled and every worker's reaper retries them; a step whose execution
  stops renewing its hold is enqueued again by its run's driver; a dead
  driver's runs are taken over when their leases expire.
* **Cancel.** The commit that cancels a run deletes its rows and asks
  procrastinate to abort their jobs (an ``async`` step is cancelled; a
  ``def`` step's late result finds no row and is discarded).

Another queue fits the same way: a :class:`~hephaestus.runtime.storage.
postgres.JobQueue` for the storage, and a worker that runs
:meth:`StepRunner.run` for each job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from hephaestus._core import step_key
from hephaestus.engine import graph_of
from hephaestus.errors import SerializationError
from hephaestus.runtime.clock import as_datetime
from hephaestus.runtime.executor import LocalExecutor
from hephaestus.runtime.scheduler import described, step_call, unit_of
from hephaestus.runtime.storage.base import StepOutcome, Storage, StorageError

if find_spec("procrastinate") is None:  # pragma: no cover
    raise ImportError(
        "executor='procrastinate' needs procrastinate: pip install 'hephaestus-core[distributed]'"
    )

import procrastinate
import psycopg_pool
from procrastinate import jobs as procrastinate_jobs

from hephaestus.runtime.storage.postgres import PostgresStorage

if TYPE_CHECKING:
    import psycopg

    from hephaestus.runtime.app import Hephaestus

__all__ = ["QUEUE", "TASK", "ProcrastinateQueue", "StepRunner", "Worker", "attach"]

log = logging.getLogger("hephaestus.distributed")

#: The procrastinate queue hephaestus' jobs go to.
QUEUE = "hephaestus"
#: The task that runs one attempt of one step.
TASK = "hephaestus.run_step"
#: The advisory lock (the storage's) that serializes schema changes.
_SCHEMA_LOCK = 0x6865_7068


class ProcrastinateQueue:
    """The storage's side of the queue: enqueues and aborts jobs inside the
    storage's transactions, and creates procrastinate's schema on first use."""

    def __init__(self) -> None:
        # Never opened: every call passes the storage's own connection.
        self._app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector())

    def install(self, conn: psycopg.Connection[Any]) -> bool:
        """Creates procrastinate's tables unless the database has them;
        whether it did."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        (found,) = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() or (None,)
        if found is not None:
            return False
        conn.execute(self._app.schema_manager.get_schema())
        return True

    def defer(
        self, conn: psycopg.Connection[Any], units: Sequence[tuple[int, str, int]]
    ) -> list[int]:
        """One job per ``(run_id, unit, attempt)``, enqueued on ``conn``."""
        jobs = [
            procrastinate_jobs.Job(
                queue=QUEUE,
                lock=None,
                queueing_lock=None,
                task_name=TASK,
                task_kwargs={"run_id": run_id, "unit": unit, "attempt": attempt},
            )
            for run_id, unit, attempt in units
        ]
        with _as_storage_error():
            deferred = self._app.job_manager.batch_defer_jobs(jobs, connection=conn)
        return [job.id for job in deferred if job.id is not None]

    def abort(self, conn: psycopg.Connection[Any], job_ids: Sequence[int]) -> None:
        """Drops the jobs not started yet; asks running ones to stop."""
        with _as_storage_error():
            for job_id in job_ids:
                self._app.job_manager.cancel_job_by_id(job_id, abort=True, connection=conn)


@contextlib.contextmanager
def _as_storage_error() -> Iterator[None]:
    """procrastinate's database errors as the storage's (which the runtime
    knows to retry): its calls run inside the storage's transactions."""
    try:
        yield
    except procrastinate.exceptions.ConnectorException as error:
        raise StorageError(f"procrastinate: {error.__cause__ or error}") from error


def attach(storage: Storage) -> ProcrastinateQueue:
    """Makes ``storage`` (a :class:`PostgresStorage`) hand steps to
    procrastinate, creating procrastinate's schema if need be."""
    if not isinstance(storage, PostgresStorage):
        raise ValueError(
            "executor='procrastinate' needs a Postgres storage (a postgresql:// URL), "
            f"got {type(storage).__name__}"
        )
    queue = ProcrastinateQueue()
    storage.attach_queue(queue)
    return queue


class StepRunner:
    """Runs one attempt of one queued step, for a job: claims its row, runs
    the step as the local executor does, records the outcome while it
    still holds the row; renews its holds while steps run."""

    def __init__(self, app: Hephaestus, concurrency: int) -> None:
        self.app = app
        self.storage: PostgresStorage = app._storage  # type: ignore[assignment]
        self.executor = LocalExecutor(concurrency)
        #: The executions running now (their holds are renewed).
        self.holding: set[str] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Prepares to run steps on ``loop`` (the queue worker's)."""
        self.executor.start(loop)

    async def run(self, job_id: int, tries: int, run_id: int, unit: str, attempt: int) -> None:
        """Runs the attempt ``attempt`` of ``unit`` of run ``run_id`` for job
        ``job_id`` (its ``tries``-th execution)."""
        holder = f"{self.app._owner}/{job_id}/{tries}"
        clock, lease = self.app._clock, self.app._lease
        now = clock.now()
        claimed = await asyncio.to_thread(
            self.storage.claim_step, run_id, unit, attempt, job_id, holder, now, now + lease
        )
        if not claimed:
            log.debug("job %s: %s of run %s has nothing to run", job_id, unit, run_id)
            return
        self.holding.add(holder)
        try:
            outcome = await self._attempt(run_id, unit, attempt, now)
            if not await asyncio.to_thread(self.storage.record_step, run_id, holder, outcome):
                log.info("job %s: the outcome of %s was discarded (taken over)", job_id, unit)
        finally:
            self.holding.discard(holder)

    async def _attempt(self, run_id: int, unit: str, attempt: int, started: float) -> StepOutcome:
        def ended(kind: str, error: object = None, record: bytes | None = None) -> StepOutcome:
            type_name, message, trace = described(error) if error is not None else (None,) * 3
            return StepOutcome(
                run_id=run_id,
                unit=unit,
                attempt=attempt,
                outcome=kind,
                record=record,
                error_type=type_name,
                error_message=message,
                traceback=trace,
                started=started,
                finished=self.app._clock.now(),
            )

        try:
            stored = await asyncio.to_thread(self.storage.load_instance, run_id)
            driver = self.app._rebuild(stored)
            keys = {step_key(step): step for step in graph_of(driver.instance).steps}
            step, iteration = unit_of(keys, unit, stored.row.workflow)
        except SerializationError as exc:
            # This worker cannot run it (its code is not here, say): the
            # step's retry policy applies, as to any failure.
            return ended("raised", exc)
        attempted = await self.executor.run(
            step_call(driver, (step, iteration), attempt, stored.row.token)
        )
        if attempted.kind == "returned":
            stamp = as_datetime(self.app._clock.now())
            try:
                record = driver.outcome_record(
                    step, attempted.value, iteration=iteration, timestamp=stamp
                )
            except Exception as exc:
                return ended("raised", exc)
            return ended("returned", record=record)
        if attempted.kind == "timed_out":
            timeout = getattr(step, "timeout", None)
            return ended("timed_out", TimeoutError(f"ran over {timeout} s"))
        return ended("raised", attempted.value)

    async def renew(self) -> None:
        """Renews the holds of running executions, every third of a lease."""
        while True:
            await asyncio.sleep(self.app._lease / 3)
            if self.holding:
                try:
                    until = self.app._clock.now() + self.app._lease
                    await asyncio.to_thread(self.storage.renew_steps, set(self.holding), until)
                except StorageError:
                    log.exception("cannot renew the holds of running steps")

    def close(self, grace: float) -> None:
        """Lets running ``def`` steps finish for up to ``grace`` seconds."""
        self.executor.close(grace)


class Worker:
    """A ``hephaestus worker`` on a task queue: drives runs (claims them,
    fires timers, applies outcomes, enqueues steps) and runs step jobs with
    ``concurrency`` at once, until :meth:`stop`.

    ``app`` must be made with ``executor="procrastinate"``; ``concurrency``
    defaults to the app's. On :meth:`stop`, running steps get ``grace``
    seconds to finish.
    """

    def __init__(
        self, app: Hephaestus, *, concurrency: int | None = None, grace: float = 10.0
    ) -> None:
        if app._queue is None:
            raise ValueError("the app was not made with executor='procrastinate'")
        storage = app._storage
        assert isinstance(storage, PostgresStorage)
        self.app = app
        self.concurrency = concurrency or app._concurrency
        self.grace = grace
        self.runner = StepRunner(app, self.concurrency)
        self._url = storage.url
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    def start(self) -> None:
        """Starts driving runs and running jobs (returns once both run)."""
        self.app._serve()
        self._thread = threading.Thread(target=self._thread_main, name="hephaestus-queue")
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise self._failed

    def stop(self) -> None:
        """Takes no new jobs, lets running steps finish for up to ``grace``
        seconds (those still running are left to be run again elsewhere),
        then stops driving runs."""
        grace = self.grace
        loop, main = self._loop, self._main
        if loop is not None and main is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(main.cancel)
        if self._thread is not None:
            self._thread.join(grace + 30)
        self.runner.close(0)
        self.app.close()

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._main = loop.create_task(self._work())
            loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported by start(), or logged
            if not self._ready.is_set():
                self._failed = exc
            else:
                log.exception("the queue worker stopped")
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _work(self) -> None:
        lease = self.app._lease
        queue_app = procrastinate.App(
            # (Reconnecting as the storage's pool does; see `PostgresStorage`.)
            connector=procrastinate.PsycopgConnector(
                conninfo=self._url,
                reconnect_timeout=2.0,
                reconnect_failed=psycopg_pool.AsyncConnectionPool.check,
            ),
            worker_defaults={
                "queues": [QUEUE],
                "concurrency": self.concurrency,
                "install_signal_handlers": False,
                "update_heartbeat_interval": max(0.5, lease / 6),
                "stalled_worker_timeout": lease,
                "delete_jobs": "successful",
                "name": f"hephaestus-{self.app._owner}",
            },
        )
        runner = self.runner

        # A job fails only when the database does (its step's own failures
        # are outcomes): it is tried again a second later, as often as it
        # takes. (No queueing lock, so a retry cannot collide with one.)
        retry = procrastinate.RetryStrategy(wait=1, retry_exceptions=[StorageError])

        @queue_app.task(name=TASK, queue=QUEUE, pass_context=True, retry=retry)
        async def run_step(
            context: procrastinate.JobContext, run_id: int, unit: str, attempt: int
        ) -> None:
            job = context.job
            assert job.id is not None
            await runner.run(job.id, job.attempts, run_id, unit, attempt)

        runner.start(asyncio.get_running_loop())
        renew = asyncio.create_task(runner.renew())
        try:
            await self._serve(queue_app)
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)

    async def _serve(self, queue_app: procrastinate.App) -> None:
        """Runs procrastinate's worker (and the reaper) until stopped. When
        the database was lost and is back (a restart), or the worker failed,
        it starts afresh: procrastinate's worker can sit a minute on dead
        connections otherwise. Steps it was running are run again (their
        holds lapse)."""
        loop = asyncio.get_running_loop()
        lost = asyncio.Event()
        self.app._storage.subscribe(  # type: ignore[attr-defined]
            reconnected=lambda: loop.call_soon_threadsafe(lost.set)
        )
        pause = 0.5
        while True:
            lost.clear()
            try:
                async with queue_app.open_async():
                    reap = asyncio.create_task(_reap(queue_app, self.app._lease))
                    work = asyncio.create_task(
                        queue_app.run_worker_async(shutdown_graceful_timeout=self.grace)
                    )
                    self._ready.set()
                    pause = 0.5
                    restart = asyncio.create_task(lost.wait())
                    try:
                        await asyncio.wait({work, restart}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        # (Cancelling procrastinate's worker stops it gracefully.)
                        for task in (reap, work, restart):
                            task.cancel()
                        await asyncio.gather(reap, work, restart, return_exceptions=True)
                    if restart.done() and not restart.cancelled():
                        log.warning("the database connection was lost; restarting the queue worker")
                        continue
                    if not work.cancelled() and work.exception() is not None:
                        raise work.exception()  # type: ignore[misc]
                return
            except Exception as exc:
                if not self._ready.is_set():
                    raise  # the first start failed: start() reports it
                log.warning(
                    "the queue worker lost the database (%s); reconnecting in %.1f s", exc, pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)


async def _reap(queue_app: procrastinate.App, lease: float) -> None:
    """Every third of a lease, retries the jobs of workers whose heartbeat
    stopped for a lease (procrastinate's documented stalled-job retry; one
    per worker, no job ``lock``, so it never waits behind other jobs)."""
    manager = queue_app.job_manager
    while True:
        await asyncio.sleep(lease / 3)
        try:
            stalled = await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=lease)
            for job in stalled:
                with contextlib.suppress(Exception):  # another reaper got it first
                    await manager.retry_job(job)
                    log.info("retrying job %s of a worker that stopped", job.id)
        except Exception:
            log.exception("cannot look for stalled jobs")
