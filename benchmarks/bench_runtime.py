#!/usr/bin/env python3
"""Side-by-side benchmark of the durable runtime (``Hephaestus`` on SQLite) against
DBOS Transact and the floor of one durable SQLite commit.

One run measures, in separate processes run one after the other:

* ``floor``: Python's ``sqlite3`` inserting one 200-byte row and committing it per
  operation (``BEGIN IMMEDIATE`` ... ``COMMIT``) on a WAL file with ``synchronous=FULL``:
  the least a runtime that commits every step can pay per step;
* ``hephaestus``: ``Hephaestus(path)``, its default SQLite storage (WAL,
  ``synchronous=FULL``), running workflows of no-op ``def`` steps;
* ``dbos``: DBOS Transact with a SQLite system database switched to WAL, running a
  workflow of no-op ``@DBOS.step()`` calls.

The cases: a 20-step workflow run one instance at a time (time per step); 200 instances
of a 10-step workflow at once with a concurrency of 8 (steps per second); the cost of a
step late in a 1,000-step chain against an early one (hephaestus); the resident memory of
an app whose database holds 100,000 finished and 10,000 waiting instances, against an
empty database (hephaestus); 10,000 ``Wait`` timers falling due at once, and the CPU an
idle app with them uses (hephaestus). Every engine's work is checked before it is timed.
The engines' rounds alternate, so that a noisy machine slows all of them alike, and each
number is the best of its rounds. ``benchmarks/README.md`` explains each number; run
``python benchmarks/bench_runtime.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter, perf_counter_ns
from typing import Any

from hephaestus import Done, Hephaestus, Instance, Step, Unique, Wait, Workflow, step_key
from report import (
    add_common_arguments,
    add_engines_arguments,
    chosen_engines,
    factor,
    header,
    progress,
    publish,
    table,
)

ENGINES = ("hephaestus", "floor", "dbos")
EVENT = "next"
# DBOS's queue looks for work this often. Of 0.001, 0.01, 0.1 and 1.0 s (its default),
# 1 ms gave DBOS the most steps per second here, so it gets that.
DBOS_QUEUE_POLL_SEC = 0.001
# How long the waiting instances wait (their timers are an hour away until moved).
PAUSE = {"duration": 1, "unit": "hour"}
PAUSE_SECONDS = 3600
UNFINISHED = ("pending", "running", "waiting")

# --------------------------------------------------------------------------------------
# The workflows: no-op steps built programmatically, as in bench_engine.py
# --------------------------------------------------------------------------------------


def noop_execute(self: Step, instance: Any, config: Any, context: Any) -> str:
    """The ``execute`` of every benchmarked step: do nothing and emit ``"next"``."""
    return EVENT


#: ``time.perf_counter_ns()`` of each step of the history chain, as it starts.
STAMPS: list[int] = []
#: Counts the runs of ``AfterPause`` (``next`` of an ``itertools.count`` is atomic).
AFTER_PAUSE_RUNS = itertools.count()


def stamp_execute(self: Step, instance: Any, config: Any, context: Any) -> str:
    """The ``execute`` of the history chain's steps: note the time, emit ``"next"``."""
    STAMPS.append(perf_counter_ns())
    return EVENT


def after_pause_execute(self: Step, instance: Any, config: Any, context: Any) -> str:
    """The step after a timer: count the run, emit ``"next"``."""
    next(AFTER_PAUSE_RUNS)
    return EVENT


def make_step(name: str, execute: Callable[..., Any] = noop_execute) -> type[Step]:
    """Return a new step class called ``name`` with the single event ``"next"``."""
    return type(
        name,
        (Step,),
        {"events": (EVENT,), "execute": execute, "__module__": __name__, "__qualname__": name},
    )


def define_chain(name: str, steps: Sequence[type[Step]]) -> type[Workflow]:
    """Return the workflow ``name`` running ``steps`` one after the other, then ``Done``.

    The class is also set as a global of this module, so that an app in a fresh process
    (which finds a stored run's workflow class by ``module:name``) can load its runs.
    """
    targets: list[type] = [*steps[1:], Done]
    transitions = {step: {EVENT: target} for step, target in zip(steps, targets, strict=True)}
    flow = type(
        name,
        (Workflow,),
        {"start": steps[0], "transitions": transitions, "__module__": __name__},
        unique=Unique("bench"),
    )
    globals()[name] = flow
    return flow


SEQ_STEPS = tuple(make_step(f"Q{i}") for i in range(20))
Chain20 = define_chain("Chain20", SEQ_STEPS)
CONC_STEPS = tuple(make_step(f"C{i}") for i in range(10))
Chain10 = define_chain("Chain10", CONC_STEPS)


class Pause(Wait):
    """The timer of the waiting instances."""


AfterPause = make_step("AfterPause", after_pause_execute)


class Paused(Workflow, unique=Unique("bench")):
    """Waits an hour, runs one step, done: the waiting instances of the memory and
    timer cases."""

    start = (Pause, PAUSE)
    transitions = {Pause: {"timeout": AfterPause}, AfterPause: {EVENT: Done}}


def history_chain(size: int) -> type[Workflow]:
    """The history case's chain of ``size`` steps that note when they start."""
    return define_chain(f"History{size}", [make_step(f"H{i}", stamp_execute) for i in range(size)])


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How long and how large one run is."""

    quick: bool
    rounds: int  # alternating rounds of the floor, hephaestus and DBOS processes
    seq_batches: int  # timed batches of sequential instances per round
    seq_instances: int  # instances of the 20-step workflow per batch
    floor_batches: int
    floor_commits: int  # commits per floor batch
    conc_instances: int  # instances of the 10-step workflow started at once
    concurrency: int
    history_steps: int
    history_window: int  # steps per window of the history case
    history_start: int  # the first step of the early window
    memory_finished: int
    memory_waiting: int
    memory_idle: float  # seconds the app idles before its RSS is read
    timers: int
    idle_cpu: float  # seconds of idling whose CPU time is measured
    telemetry_rounds: int  # alternating rounds of the telemetry variants
    telemetry_instances: int  # instances of the 10-step workflow per telemetry round


FULL = Settings(
    quick=False,
    rounds=5,
    seq_batches=5,
    seq_instances=10,
    floor_batches=5,
    floor_commits=200,
    conc_instances=200,
    concurrency=8,
    history_steps=1_000,
    history_window=50,
    history_start=10,
    memory_finished=100_000,
    memory_waiting=10_000,
    memory_idle=2.0,
    timers=10_000,
    idle_cpu=3.0,
    telemetry_rounds=21,
    telemetry_instances=200,
)
QUICK = Settings(
    quick=True,
    rounds=1,
    seq_batches=2,
    seq_instances=2,
    floor_batches=2,
    floor_commits=20,
    conc_instances=20,
    concurrency=8,
    history_steps=60,
    history_window=5,
    history_start=10,
    memory_finished=1_000,
    memory_waiting=100,
    memory_idle=0.5,
    timers=100,
    idle_cpu=0.5,
    telemetry_rounds=1,
    telemetry_instances=10,
)


def check(condition: bool, message: str) -> None:
    """Raise ``AssertionError(message)`` unless ``condition`` (kept under ``python -O``)."""
    if not condition:
        raise AssertionError(message)


# --------------------------------------------------------------------------------------
# The floor: one 200-byte insert and a durable commit per operation
# --------------------------------------------------------------------------------------


def floor_round(settings: Settings, directory: Path, round_no: int) -> dict[str, Any]:
    """Time commits of one 200-byte row each on a WAL file with ``synchronous=FULL``."""
    path = directory / f"floor-{round_no}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = FULL")
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        check(mode == "wal" and sync == 2, f"floor: journal_mode {mode}, synchronous {sync}")
        conn.execute("CREATE TABLE ops (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        payload = os.urandom(200)

        def commit() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO ops (payload) VALUES (?)", (payload,))
            conn.execute("COMMIT")

        for _ in range(10):  # warm-up
            commit()
        best = float("inf")
        for _ in range(settings.floor_batches):
            start = perf_counter_ns()
            for _ in range(settings.floor_commits):
                commit()
            best = min(best, (perf_counter_ns() - start) / settings.floor_commits)
        (rows,) = conn.execute("SELECT count(*) FROM ops").fetchone()
        expected = 10 + settings.floor_batches * settings.floor_commits
        check(rows == expected, f"floor: {rows} rows, expected {expected}")
    finally:
        conn.close()
    progress(f"  floor      round {round_no + 1}: {best / 1e3:8.0f} µs per commit")
    return {"commit_ns": best}


# --------------------------------------------------------------------------------------
# hephaestus: sequential, concurrent and history cases
# --------------------------------------------------------------------------------------


def verify_hephaestus(app: Hephaestus, flow: type, steps: Sequence[type[Step]], id: str) -> None:
    """Run ``flow`` once with counting steps: every step once, completed, full history."""
    calls: dict[type, int] = {}

    def counted(self: Step, instance: Any, config: Any, context: Any) -> str:
        calls[type(self)] = calls.get(type(self), 0) + 1
        return EVENT

    for step in steps:
        step.execute = counted  # type: ignore[method-assign]
    try:
        instance = app.run(flow, {}, id=id, timeout=60)
    finally:
        for step in steps:
            step.execute = noop_execute  # type: ignore[method-assign]
    check(instance.status == "completed", f"hephaestus: {flow.__name__} ended {instance.status}")
    wrong = {s.__name__: calls.get(s, 0) for s in steps if calls.get(s, 0) != 1}
    check(not wrong, f"hephaestus: {flow.__name__} did not run each step once: {wrong}")
    ran = [e.step_ref for e in instance.execution_history if e.step_ref is not Done]
    check(
        ran == list(steps),
        f"hephaestus: {flow.__name__} history has {len(ran)} steps, expected {len(steps)}",
    )
    stored = app.get(id)
    check(stored.status == "completed", f"hephaestus: {id} is stored as {stored.status}")


def hephaestus_round(
    settings: Settings, directory: Path, round_no: int, storage: str | None = None
) -> dict[str, Any]:
    """One round of the sequential, concurrent and (on the default SQLite file) history
    cases in one app; ``storage`` is another database's URL."""
    url = storage or str(directory / f"hephaestus-{round_no}.db")
    result: dict[str, Any] = {}
    with Hephaestus(url, concurrency=settings.concurrency) as app:
        verify_hephaestus(app, Chain20, SEQ_STEPS, "bench::verify20")
        verify_hephaestus(app, Chain10, CONC_STEPS, "bench::verify10")
        app.run(Chain20, {}, id="bench::warm", timeout=60)
        best = float("inf")
        for batch in range(settings.seq_batches):
            start = perf_counter_ns()
            for k in range(settings.seq_instances):
                instance = app.run(Chain20, {}, id=f"bench::s{batch}x{k}", timeout=60)
                check(instance.status == "completed", f"hephaestus: ended {instance.status}")
            best = min(best, (perf_counter_ns() - start) / (settings.seq_instances * 20))
        result["seq_step_ns"] = best

        count = settings.conc_instances
        start = perf_counter_ns()
        ids = [app.start_instance(Chain10, {}, id=f"bench::c{k}") for k in range(count)]
        ends = [app.wait(iid, timeout=600) for iid in ids]
        elapsed = perf_counter_ns() - start
        done = sum(1 for instance in ends if instance.status == "completed")
        check(done == count, f"hephaestus: {done} of {count} concurrent instances completed")
        result["conc_ns"] = elapsed
        result["conc_steps_per_s"] = count * 10 * 1e9 / elapsed
    progress(
        f"  hephaestus round {round_no + 1}: {result['seq_step_ns'] / 1e3:8.0f} µs per step, "
        f"{result['conc_steps_per_s']:8,.0f} steps/s at {settings.concurrency} at once"
    )
    if storage is None:
        result["history"] = history_run(settings, directory / f"history-{round_no}.db")
    return result


def history_run(settings: Settings, path: Path) -> dict[str, Any]:
    """Run one long chain; return the median and mean time per step in two windows."""
    size, width = settings.history_steps, settings.history_window
    flow = history_chain(size)
    with Hephaestus(str(path), concurrency=settings.concurrency) as app:
        # A first run warms the database up: while a new WAL file grows, each commit
        # also extends the file, which makes early steps dearer than late ones.
        app.run(flow, {}, id="bench::warm", timeout=600)
        STAMPS.clear()
        start = perf_counter_ns()
        instance = app.run(flow, {}, id="bench::history", timeout=600)
        elapsed = perf_counter_ns() - start
    check(instance.status == "completed", f"hephaestus: the history chain ended {instance.status}")
    check(len(STAMPS) == size, f"hephaestus: the history chain ran {len(STAMPS)} of {size} steps")
    check(
        len(instance.execution_history) == size + 1,
        f"hephaestus: the history chain has {len(instance.execution_history)} entries",
    )
    # gaps[i]: from the start of step i to the start of step i + 1, i.e. the cost of step i.
    gaps = [b - a for a, b in itertools.pairwise(STAMPS)]
    first = settings.history_start
    late = len(gaps) - width
    early_window, late_window = gaps[first : first + width], gaps[late:]
    return {
        "early": (first + 1, first + width),
        "late": (late + 1, late + width),
        "early_median_ns": statistics.median(early_window),
        "late_median_ns": statistics.median(late_window),
        "early_mean_ns": statistics.fmean(early_window),
        "late_mean_ns": statistics.fmean(late_window),
        "run_ns": elapsed,
    }


# --------------------------------------------------------------------------------------
# DBOS Transact
# --------------------------------------------------------------------------------------


def dbos_round(
    settings: Settings, directory: Path, round_no: int, system_database: str | None = None
) -> dict[str, Any]:
    """One round of the sequential and concurrent cases on DBOS with a SQLite system
    database in WAL mode, or the Postgres one ``system_database`` names."""
    import sqlalchemy as sa
    from dbos import DBOS

    url = system_database
    if url is None:
        path = directory / f"dbos-{round_no}.sqlite"
        conn = sqlite3.connect(path)
        check(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal", "dbos: no WAL")
        conn.close()
        url = f"sqlite:///{path}"
    DBOS(
        config={
            "name": "hephaestus-bench",
            "system_database_url": url,
            "log_level": "WARNING",
            # start_workflow runs workflows on this many threads: the concurrency of 8.
            "max_executor_threads": settings.concurrency,
        }
    )
    runs = itertools.count()

    @DBOS.step()
    def noop_step(index: int) -> int:
        next(runs)
        return index

    @DBOS.workflow()
    def noop_flow(steps: int) -> int:
        for index in range(steps):
            noop_step(index)
        return steps

    result: dict[str, Any] = {}
    DBOS.launch()
    try:
        if system_database is None:
            # DBOS sets neither pragma; read them on its own engine (a private attribute).
            from dbos._dbos import _get_dbos_instance

            with _get_dbos_instance()._sys_db.engine.connect() as connection:
                mode = connection.execute(sa.text("PRAGMA journal_mode")).scalar()
                sync = connection.execute(sa.text("PRAGMA synchronous")).scalar()
            check(mode == "wal" and sync == 2, f"dbos: journal_mode {mode}, synchronous {sync}")
            result["pragmas"] = f"journal_mode={mode}, synchronous={sync}"

        # Verification: a 20-step workflow runs each step once and records all 20.
        before = next(runs)
        handle = DBOS.start_workflow(noop_flow, 20)
        check(handle.get_result() == 20, "dbos: the workflow returned the wrong value")
        check(next(runs) - before - 1 == 20, "dbos: the steps did not run exactly once each")
        check(handle.get_status().status == "SUCCESS", "dbos: the workflow did not succeed")
        recorded = len(DBOS.list_workflow_steps(handle.workflow_id))
        check(recorded == 20, f"dbos: {recorded} steps recorded, expected 20")
        noop_flow(20)  # warm-up

        def sequential(run: Callable[[], Any]) -> float:
            best = float("inf")
            for _ in range(settings.seq_batches):
                start = perf_counter_ns()
                for _ in range(settings.seq_instances):
                    check(run() == 20, "dbos: a sequential workflow returned the wrong value")
                best = min(best, (perf_counter_ns() - start) / (settings.seq_instances * 20))
            return best

        result["seq_direct_ns"] = sequential(lambda: noop_flow(20))
        result["seq_start_ns"] = sequential(lambda: DBOS.start_workflow(noop_flow, 20).get_result())

        count = settings.conc_instances
        queue = DBOS.register_queue(
            "bench",
            worker_concurrency=settings.concurrency,
            polling_interval_sec=DBOS_QUEUE_POLL_SEC,
        )
        start = perf_counter_ns()
        handles = [queue.enqueue(noop_flow, 10) for _ in range(count)]
        values = [h.get_result() for h in handles]
        elapsed = perf_counter_ns() - start
        check(values == [10] * count, "dbos: a queued workflow returned the wrong value")
        result["conc_queue_steps_per_s"] = count * 10 * 1e9 / elapsed

        start = perf_counter_ns()
        handles = [DBOS.start_workflow(noop_flow, 10) for _ in range(count)]
        values = [h.get_result() for h in handles]
        elapsed = perf_counter_ns() - start
        check(values == [10] * count, "dbos: a started workflow returned the wrong value")
        result["conc_start_steps_per_s"] = count * 10 * 1e9 / elapsed
    finally:
        DBOS.destroy(destroy_registry=True)
    progress(
        f"  dbos       round {round_no + 1}: {result['seq_direct_ns'] / 1e3:8.0f} µs per step "
        f"(direct call), {result['seq_start_ns'] / 1e3:6.0f} µs (start_workflow); "
        f"{result['conc_queue_steps_per_s']:6,.0f} steps/s (queue), "
        f"{result['conc_start_steps_per_s']:6,.0f} (start_workflow)"
    )
    return result


# --------------------------------------------------------------------------------------
# Stored instances: finished and waiting runs written through the storage API
# --------------------------------------------------------------------------------------


def driven(app: Hephaestus, flow: type, id: str) -> tuple[Any, list[bytes], str, Any, list[Any]]:
    """Run one instance of ``flow`` the way the app's scheduler does, without threads or
    commits: the ``NewRun`` that ``start_instance`` would store, then the journal records,
    final status, snapshot (when finished) and timers of its run, made by the Rust core."""
    from hephaestus import _core
    from hephaestus.engine import graph_of
    from hephaestus.runtime.storage import Timer

    run = app._new_run(flow, {}, id, None, None)
    instance = Instance.from_bytes(run.snapshot)
    driver = _core.Run(graph_of(instance), instance, record=True, start=False)
    now = app.clock.now()
    stamp = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc)
    driver.start()
    while units := driver.take_runnable():
        for step, iteration in units:
            current = driver.instance
            value = step().execute(current, driver.config(step, iteration), current.context)
            driver.complete(step, value, iteration=iteration, timestamp=stamp)
    instance = driver.finish()
    timers = [
        Timer(step_key(step), "wait", now + PAUSE_SECONDS)
        for step in instance.waiting_steps
        if issubclass(step, Wait)
    ]
    status = driver.status.value
    snapshot = instance.to_bytes() if status in ("completed", "failed") else None
    return run, driver.take_records(), status, snapshot, timers


def populate(path: Path, finished: int, waiting: int, batch: int = 1_000) -> float:
    """Store ``finished`` completed runs of ``Chain10`` and ``waiting`` runs of ``Paused``
    waiting for their timer, as the app would store them; return the seconds it took.

    The app is never started (only reads and this direct use of its storage): each run is
    created as ``start_instance`` creates it, then its records are committed in one change
    per run, many runs per transaction.
    """
    from hephaestus.runtime.storage import Append

    start = perf_counter()
    app = Hephaestus(str(path))
    try:
        work = [(Chain10, f"bench::f{k}") for k in range(finished)]
        work += [(Paused, f"bench::w{k}") for k in range(waiting)]
        with ThreadPoolExecutor(32) as pool:  # concurrent creates share transactions
            for first in range(0, len(work), batch):
                runs = [driven(app, flow, id) for flow, id in work[first : first + batch]]
                run_ids = list(pool.map(lambda r: app.storage.create(r[0]), runs))
                changes = [
                    Append(
                        run_id=run_id,
                        expected_seq=0,
                        records=records,
                        status=status,
                        runnable=False,
                        updated_at=run.created_at,
                        snapshot=snapshot,
                        set_timers=timers,
                    )
                    for run_id, (run, records, status, snapshot, timers) in zip(
                        run_ids, runs, strict=True
                    )
                ]
                conflicts = [c for c in app.storage.commit(changes) if c is not None]
                check(not conflicts, f"populate: {conflicts[:1]}")
    finally:
        app.close()
    return perf_counter() - start


def shape(app: Hephaestus, id: str) -> dict[str, Any]:
    """What a stored run looks like, without its ids and times."""
    row = app.storage.newest(id)
    check(row is not None, f"no run of {id}")
    assert row is not None
    stored = app.storage.load(row.run_id)
    instance = app.get(id)
    return {
        "workflow": row.workflow,
        "status": row.status,
        "runnable": row.runnable,
        "seq": row.seq,
        "snapshot_seq": stored.snapshot_seq,
        "records": len(stored.records),
        "timers": [(t.step, t.kind) for t in stored.timers],
        "instance_status": instance.status.value,
        "history": [step_key(e.step_ref) for e in instance.execution_history],
        "waiting": sorted(step_key(s) for s in instance.waiting_steps),
        "completed": sorted(step_key(s) for s in instance.completed_steps),
    }


def verify_populated(directory: Path, path: Path, finished: int, waiting: int) -> None:
    """Check that stored runs look exactly like runs the app made itself, and can be
    loaded by an app."""
    if not finished and not waiting:
        return
    reference = directory / f"reference-{path.stem}.db"
    with Hephaestus(str(reference)) as app:
        app.run(Chain10, {}, id="bench::f0", timeout=60)
        check(app.run(Paused, {}, id="bench::w0", timeout=60).status == "waiting", "not waiting")
        expected = {"bench::f0": shape(app, "bench::f0"), "bench::w0": shape(app, "bench::w0")}
    app = Hephaestus(str(path))  # reads only: the workers do not start
    try:
        for id, real in expected.items():
            if (id == "bench::f0" and finished) or (id == "bench::w0" and waiting):
                got = shape(app, id)
                check(got == real, f"populate: {id} is stored as {got}, the app stores {real}")
        for status, count in (("completed", finished), ("waiting", waiting)):
            rows = app.storage.find(statuses=[status])
            check(len(rows) == count, f"populate: {len(rows)} {status} runs, expected {count}")
    finally:
        app.close()


# --------------------------------------------------------------------------------------
# Memory and timers (each in a fresh process)
# --------------------------------------------------------------------------------------


def proc_status() -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of this process in MiB, from ``/proc``."""
    values: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0]) / 1024
    return values


def memory_child(settings: Settings, path: Path) -> dict[str, Any]:
    """Open the app on ``path``, start its workers, idle, and report the RSS."""
    before = proc_status()
    app = Hephaestus(str(path), concurrency=settings.concurrency)
    app.register(Chain10, Paused)
    app.start()
    time.sleep(settings.memory_idle)
    after = proc_status()
    app.close()
    return {"before_mib": before["VmRSS"], "rss_mib": after["VmRSS"], "peak_mib": after["VmHWM"]}


def timers_child(settings: Settings, directory: Path) -> dict[str, Any]:
    """Store waiting instances; measure the CPU of an idle app with them, then make all
    their timers due at once and time how fast they fire and complete."""
    from hephaestus.testing import VirtualClock

    count = settings.timers
    path = directory / "timers.db"
    populate(path, 0, count)
    verify_populated(directory, path, 0, count)

    # The system clock, timers an hour away: an idle app.
    app = Hephaestus(str(path), concurrency=settings.concurrency)
    app.register(Paused)
    app.start()
    time.sleep(1.0)  # let it settle after its first round
    cpu, wall = time.process_time(), perf_counter()
    time.sleep(settings.idle_cpu)
    idle_cpu, idle_wall = time.process_time() - cpu, perf_counter() - wall
    app.close()

    clock = VirtualClock()
    app = Hephaestus(str(path), concurrency=settings.concurrency, clock=clock)
    app.register(Paused)
    runs_before = next(AFTER_PAUSE_RUNS)
    try:
        app.start()
        time.sleep(0.2)
        check(not app.storage.find(statuses=["completed"], limit=1), "timers: fired early")
        start = perf_counter_ns()
        clock.advance(PAUSE_SECONDS + 600)
        deadline = time.monotonic() + 600
        while app.list(status=UNFINISHED, limit=1):
            check(time.monotonic() < deadline, "timers: not all fired within 600 s")
            time.sleep(0.005)
        elapsed = perf_counter_ns() - start
        done = len(app.storage.find(statuses=["completed"]))
        ran = next(AFTER_PAUSE_RUNS) - runs_before - 1
    finally:
        app.close()
    check(done == count, f"timers: {done} of {count} instances completed")
    check(ran == count, f"timers: the step after the timer ran {ran} times for {count}")
    return {
        "fire_ns": elapsed,
        "fired_per_s": count * 1e9 / elapsed,
        "idle_cpu_s": idle_cpu,
        "idle_wall_s": idle_wall,
    }


# --------------------------------------------------------------------------------------
# Telemetry's cost: as shipped, stubbed out, and with a handler that does nothing
# --------------------------------------------------------------------------------------

TELEMETRY_VARIANTS = ("shipped", "stubbed", "handler")


#: The telemetry hooks the runtime calls, by module: what stubbing out replaces.
TELEMETRY_HOOKS = {
    "hephaestus.runtime.events": (
        "listening",
        "runner_init",
        "workflow_changed",
        "step_start",
        "step_returned",
        "step_failed",
        "step_resumed",
        "advanced",
    ),
    "hephaestus.telemetry.otel": (
        "capture",
        "run_started",
        "run_ended",
        "step_started",
        "step_ended",
    ),
}
#: The hooks that build and emit events (a handler's cost is theirs).
EVENT_BUILDERS = ("step_start", "step_returned", "advanced", "workflow_changed")


def _replace_hooks(
    replacement: Callable[[str, Callable[..., Any]], Callable[..., Any]],
) -> Callable[[], None]:
    """Replace every telemetry hook ``h`` named ``name`` with ``replacement(name, h)``;
    return what puts them back."""
    import importlib

    saved = []
    for module_name, names in TELEMETRY_HOOKS.items():
        module = importlib.import_module(module_name)
        for name in names:
            real = getattr(module, name)
            saved.append((module, name, real))
            setattr(module, name, replacement(name, real))

    def restore() -> None:
        for module, name, real in saved:
            setattr(module, name, real)

    return restore


def _stub_telemetry() -> Callable[[], None]:
    """Replace every telemetry hook the runtime calls with a no-op (the baseline:
    telemetry compiled out); return what puts them back."""
    from contextlib import nullcontext

    stubs: dict[str, Callable[..., Any]] = {
        "listening": lambda *names: False,
        "step_started": lambda *args: (None, nullcontext()),
    }

    def nothing(*args: Any) -> None:
        return None

    return _replace_hooks(lambda name, real: stubs.get(name, nothing))


def _concurrent_cpu_ns(app: Hephaestus, prefix: str, count: int) -> int:
    """Start ``count`` instances of the 10-step chain at once; the process's CPU time
    (every thread's) until all completed."""
    start = time.process_time_ns()
    ids = [app.start_instance(Chain10, {}, id=f"bench::{prefix}{k}") for k in range(count)]
    ends = [app.wait(iid, timeout=600) for iid in ids]
    elapsed = time.process_time_ns() - start
    done = sum(1 for instance in ends if instance.status == "completed")
    check(done == count, f"telemetry: {done} of {count} instances completed")
    return elapsed


def _recorded_calls(
    app: Hephaestus, count: int, listened: bool
) -> list[tuple[str, Callable[..., Any], tuple[Any, ...]]]:
    """The runtime's calls of its telemetry hooks, with their real arguments, over
    ``count`` instances of the 10-step chain (with a handler that does nothing attached
    to every event when ``listened``)."""
    from hephaestus import telemetry

    calls: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []

    def recorder(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def record(*args: Any) -> Any:
            calls.append((name, real, args))
            return real(*args)

        return record

    restore = _replace_hooks(recorder)
    if listened:
        telemetry.attach("bench-record", telemetry.EVENTS, lambda *args: None)
    try:
        _concurrent_cpu_ns(app, "record", count)
    finally:
        telemetry.detach("bench-record")
        restore()
    return calls


def _replayed_ns(calls: list[tuple[str, Callable[..., Any], tuple[Any, ...]]], repeats: int) -> int:
    """The best time of replaying ``calls`` (as the telemetry now is)."""
    best = 2**63
    for _ in range(repeats):
        start = perf_counter_ns()
        for _, function, args in calls:
            function(*args)
        best = min(best, perf_counter_ns() - start)
    return best


def _event_ns(
    calls: list[tuple[str, Callable[..., Any], tuple[Any, ...]]], repeats: int
) -> tuple[float, int]:
    """Replays the event builders' calls with a handler that does nothing on every
    event: the best time per event delivered, and how many events the calls deliver."""
    from hephaestus import telemetry

    builders = [call for call in calls if call[0] in EVENT_BUILDERS]
    delivered = itertools.count()
    telemetry.attach("bench-count", telemetry.EVENTS, lambda *args: next(delivered))
    try:
        _replayed_ns(builders, 1)
    finally:
        telemetry.detach("bench-count")
    events_count = next(delivered)
    telemetry.attach("bench-noop", telemetry.EVENTS, lambda *args: None)
    try:
        best = _replayed_ns(builders, repeats)
    finally:
        telemetry.detach("bench-noop")
    return best / events_count, events_count


def telemetry_child(settings: Settings) -> dict[str, Any]:
    """The runtime's CPU time per step with telemetry as shipped (no handler attached,
    no OpenTelemetry), with every hook stubbed out, and with a handler that does nothing
    attached to every event. The storage is in memory, so that nothing but the runtime's
    own work is measured; the variants alternate, round by round, in one process, and
    each round's variants are compared with each other (the machine's drift cancels)."""
    from hephaestus import telemetry
    from hephaestus.telemetry import otel

    installed = otel.ENABLED
    otel.ENABLED = False  # as if the [otel] extra were not installed
    count = settings.telemetry_instances
    per_instance = 0
    counter = itertools.count()

    def counting(event: str, measurements: Any, metadata: Any) -> None:
        next(counter)

    def nothing(event: str, measurements: Any, metadata: Any) -> None:
        return None

    times: dict[str, list[float]] = {name: [] for name in TELEMETRY_VARIANTS}
    with Hephaestus("memory://", concurrency=settings.concurrency) as app:
        # How many events a run emits (the handler's cost is per event).
        telemetry.attach("bench-count", telemetry.EVENTS, counting)
        _concurrent_cpu_ns(app, "count", 10)
        telemetry.detach("bench-count")
        per_instance = (next(counter)) // 10
        _concurrent_cpu_ns(app, "warm", count)
        for round_no in range(settings.telemetry_rounds):
            for variant in TELEMETRY_VARIANTS:
                restore: Callable[[], None] | None = None
                if variant == "stubbed":
                    restore = _stub_telemetry()
                elif variant == "handler":
                    telemetry.attach("bench-noop", telemetry.EVENTS, nothing)
                try:
                    elapsed = _concurrent_cpu_ns(app, f"t{round_no}{variant}", count)
                finally:
                    if restore is not None:
                        restore()
                    telemetry.detach("bench-noop")
                check(not telemetry.handlers(), "telemetry: a handler stayed attached")
                times[variant].append(elapsed / (count * 10))
        listened = _recorded_calls(app, 20, listened=True)
        shipped_calls = _recorded_calls(app, 20, listened=False)
    handler_per_event, replayed = _event_ns(listened, settings.telemetry_rounds)
    # What the hooks cost per step as shipped (no handler, no OTel): their calls of 20
    # runs replayed, against the CPU time of a step with them stubbed out.
    hooks_per_step = _replayed_ns(shipped_calls, settings.telemetry_rounds) / (20 * 10)
    ratios = sorted(a / b for a, b in zip(times["shipped"], times["stubbed"], strict=True))
    shipped_over_stubbed = statistics.median(ratios)
    median = {variant: statistics.median(values) for variant, values in times.items()}
    progress(
        "  telemetry (CPU per step): "
        + ", ".join(f"{v} {median[v] / 1e3:.2f} µs" for v in TELEMETRY_VARIANTS)
        + f"; shipped/stubbed {shipped_over_stubbed:.3f}, "
        f"no-op handler {handler_per_event:.0f} ns per event"
    )
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {
        "step_ns": median,
        "rounds": times,
        "shipped_over_stubbed": shipped_over_stubbed,
        "ratio_quartiles": [quartiles[0], quartiles[2]],
        "handler_ns_per_event": handler_per_event,
        "events_replayed": replayed,
        "hooks_ns_per_step": hooks_per_step,
        "hook_calls_per_step": len(shipped_calls) / (20 * 10),
        "events_per_instance": per_instance,
        "otel_installed": installed,
    }


# --------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------


def child_main(kind: str, spec: dict[str, Any], out: Path) -> int:
    """Run one measurement in this (fresh) process and write its result as JSON."""
    settings = QUICK if spec["quick"] else FULL
    directory = Path(spec["dir"])
    result: Any
    if kind == "floor":
        result = floor_round(settings, directory, spec["round"])
    elif kind == "hephaestus":
        result = hephaestus_round(settings, directory, spec["round"], spec.get("storage"))
    elif kind == "dbos":
        result = dbos_round(settings, directory, spec["round"], spec.get("system_database"))
    elif kind == "populate":
        path = Path(spec["path"])
        seconds = populate(path, spec["finished"], spec["waiting"])
        verify_populated(directory, path, spec["finished"], spec["waiting"])
        result = {"seconds": seconds, "bytes": file_bytes(path)}
    elif kind == "memory":
        result = memory_child(settings, Path(spec["path"]))
    elif kind == "timers":
        result = timers_child(settings, directory)
    elif kind == "telemetry":
        result = telemetry_child(settings)
    else:
        raise ValueError(f"unknown child {kind!r}")
    out.write_text(json.dumps(result))
    return 0


def file_bytes(path: Path) -> int:
    """The size of an SQLite database with its WAL file."""
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def run_child(kind: str, script: str | None = None, **spec: Any) -> Any:
    """Run ``kind`` in a fresh Python process running this script (or ``script``, which
    has the same ``--child`` options); return its result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    try:
        command = [
            sys.executable,
            str(Path(script or __file__).resolve()),
            "--child",
            kind,
            "--child-spec",
            json.dumps(spec),
            "--child-out",
            str(out),
        ]
        # The child's stdout (DBOS may print) goes to our stderr, with its progress.
        done = subprocess.run(command, stdout=sys.stderr, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the {kind} process failed (exit status {done.returncode})")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything one run measured (the results of the child processes)."""

    engines: list[str]
    settings: Settings
    directory: str
    floor: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    hephaestus: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    dbos: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    populated: dict[str, Any] = dataclasses.field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    timers: dict[str, Any] = dataclasses.field(default_factory=dict)
    telemetry: dict[str, Any] = dataclasses.field(default_factory=dict)

    def has(self, name: str) -> bool:
        """Whether ``name`` took part."""
        return name in self.engines

    def best(self, rounds: list[dict[str, Any]], key: str, high: bool = False) -> float | None:
        """The best value of ``key`` over the rounds (lowest; highest with ``high``)."""
        values = [r[key] for r in rounds if key in r]
        if not values:
            return None
        return max(values) if high else min(values)

    def history(self, key: str) -> float | None:
        """The best (lowest) value of a history measurement over the rounds."""
        values = [r["history"][key] for r in self.hephaestus if "history" in r]
        return min(values) if values else None


def run_benchmarks(engines: list[str], settings: Settings, root: Path | None) -> Results:
    """Run every child process and collect their results."""
    with tempfile.TemporaryDirectory(prefix="bench_runtime-", dir=root) as tmp:
        directory = Path(tmp)
        results = Results(engines, settings, describe_directory(directory))
        common = {"quick": settings.quick, "dir": tmp}
        progress(f"databases in {results.directory}")
        for round_no in range(settings.rounds):
            progress(f"round {round_no + 1} of {settings.rounds}")
            for name in ("floor", "hephaestus", "dbos"):
                if results.has(name):
                    getattr(results, name).append(run_child(name, round=round_no, **common))
        if results.has("hephaestus"):
            measure_stored(results, directory, common)
            progress("telemetry's cost")
            results.telemetry = run_child("telemetry", **common)
    return results


def measure_stored(results: Results, directory: Path, common: dict[str, Any]) -> None:
    """The memory and timer cases (hephaestus only)."""
    settings = results.settings
    finished, waiting = settings.memory_finished, settings.memory_waiting
    progress(f"storing {finished:,} finished and {waiting:,} waiting instances")
    full, empty = directory / "memory.db", directory / "empty.db"
    results.populated = run_child(
        "populate", path=str(full), finished=finished, waiting=waiting, **common
    )
    progress(f"  stored in {results.populated['seconds']:.1f} s")
    run_child("populate", path=str(empty), finished=0, waiting=0, **common)
    for label, path in (("empty", empty), ("stored", full)):
        results.memory[label] = run_child("memory", path=str(path), **common)
        memory = results.memory[label]
        progress(
            f"  memory, {label} database: {memory['rss_mib']:.1f} MiB resident "
            f"(peak {memory['peak_mib']:.1f} MiB)"
        )
    progress(f"{settings.timers:,} timers due at once")
    results.timers = run_child("timers", **common)
    progress(
        f"  {results.timers['fired_per_s']:,.0f} fired/s; idle CPU "
        f"{results.timers['idle_cpu_s'] * 1e3:.1f} ms over {results.timers['idle_wall_s']:.1f} s"
    )


def describe_directory(directory: Path) -> str:
    """The directory with the filesystem and device it is on (from ``/proc/mounts``)."""
    best = ("", "?", "?")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mount, kind = line.split()[:3]
                resolved = str(directory.resolve())
                inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best[0]):
                    best = (mount, kind, device)
    except OSError:
        return str(directory)
    return f"{directory} ({best[1]} on {best[2]})"


# --------------------------------------------------------------------------------------
# Targets and the report
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One target of the issue and how this run did against it."""

    name: str
    requirement: str
    measured: str
    status: str


def judge(name: str, requirement: str, value: float | None, text: str, passed: bool) -> Target:
    """Return a target row; a missing measurement is ``n/a``."""
    if value is None:
        return Target(name, requirement, "n/a", "n/a")
    return Target(name, requirement, text, "PASS" if passed else "MISS")


@dataclass(frozen=True)
class Summary:
    """The best numbers of a run, as the tables and targets use them."""

    commit_ns: float | None
    seq_ns: float | None
    dbos_direct_ns: float | None
    dbos_start_ns: float | None
    conc: float | None
    dbos_queue: float | None
    dbos_start: float | None

    @property
    def dbos_seq_ns(self) -> float | None:
        """DBOS's faster way of running one instance at a time."""
        values = [v for v in (self.dbos_direct_ns, self.dbos_start_ns) if v is not None]
        return min(values) if values else None

    @property
    def dbos_conc(self) -> float | None:
        """DBOS's faster way of running instances concurrently."""
        values = [v for v in (self.dbos_queue, self.dbos_start) if v is not None]
        return max(values) if values else None

    @property
    def floor_per_s(self) -> float | None:
        """The floor's commits per second."""
        return None if self.commit_ns is None else 1e9 / self.commit_ns


def summarize(results: Results) -> Summary:
    """The best of the rounds for every number."""
    return Summary(
        commit_ns=results.best(results.floor, "commit_ns"),
        seq_ns=results.best(results.hephaestus, "seq_step_ns"),
        dbos_direct_ns=results.best(results.dbos, "seq_direct_ns"),
        dbos_start_ns=results.best(results.dbos, "seq_start_ns"),
        conc=results.best(results.hephaestus, "conc_steps_per_s", high=True),
        dbos_queue=results.best(results.dbos, "conc_queue_steps_per_s", high=True),
        dbos_start=results.best(results.dbos, "conc_start_steps_per_s", high=True),
    )


def history_ratio(results: Results) -> float | None:
    """The late window's median step over the early window's."""
    return factor(results.history("late_median_ns"), results.history("early_median_ns"))


def memory_ratio(results: Results) -> float | None:
    """Resident memory with the stored instances over that with an empty database."""
    stored, empty = results.memory.get("stored"), results.memory.get("empty")
    if not stored or not empty:
        return None
    return factor(stored["rss_mib"], empty["rss_mib"])


def telemetry_costs(results: Results) -> tuple[float, float] | None:
    """Telemetry as shipped over stubbed out (a factor: one plus the replayed hooks' time
    per step over a stubbed step's CPU time), and a no-op handler's cost per event in
    nanoseconds."""
    t = results.telemetry
    if not t:
        return None
    return 1 + t["hooks_ns_per_step"] / t["step_ns"]["stubbed"], t["handler_ns_per_event"]


def evaluate_targets(results: Results) -> list[Target]:
    """Return the issue's targets judged on these results."""
    s = summarize(results)
    seq_vs_dbos = factor(s.dbos_seq_ns, s.seq_ns)
    seq_vs_floor = factor(s.seq_ns, s.commit_ns)
    conc_vs_dbos = factor(s.conc, s.dbos_conc)
    conc_vs_floor = factor(s.conc, s.floor_per_s)
    growth = history_ratio(results)
    memory = memory_ratio(results)
    size = results.settings.history_steps
    early = results.settings.history_start + 1
    stored = results.settings.memory_finished + results.settings.memory_waiting
    costs = telemetry_costs(results)
    return [
        judge(
            "sequential: time per step vs DBOS",
            ">= 5x faster",
            seq_vs_dbos,
            f"{seq_vs_dbos or 0:.2f}x",
            seq_vs_dbos is not None and seq_vs_dbos >= 5,
        ),
        judge(
            "sequential: time per step vs one floor commit",
            "<= 2x",
            seq_vs_floor,
            f"{seq_vs_floor or 0:.2f}x",
            seq_vs_floor is not None and seq_vs_floor <= 2,
        ),
        judge(
            f"concurrent ({results.settings.concurrency} at once): steps/s vs DBOS",
            ">= 5x",
            conc_vs_dbos,
            f"{conc_vs_dbos or 0:.2f}x",
            conc_vs_dbos is not None and conc_vs_dbos >= 5,
        ),
        judge(
            "concurrent: steps/s vs the floor's commits/s",
            ">= 1x",
            conc_vs_floor,
            f"{conc_vs_floor or 0:.2f}x",
            conc_vs_floor is not None and conc_vs_floor >= 1,
        ),
        judge(
            f"history: step ~{size:,} / step ~{early:,} of a {size:,}-step chain (medians)",
            "<= 1.3x",
            growth,
            f"{growth or 0:.2f}x",
            growth is not None and growth <= 1.3,
        ),
        judge(
            f"memory: RSS with {stored:,} stored instances / with an empty database",
            "flat (<= 1.10x)",
            memory,
            f"{memory or 0:.2f}x",
            memory is not None and memory <= 1.10,
        ),
        judge(
            "telemetry, no handler, no OpenTelemetry: per step vs stubbed out",
            "<= 2% more",
            None if costs is None else costs[0],
            f"{((costs or (1, 0))[0] - 1) * 100:+.1f}%",
            costs is not None and costs[0] <= 1.02,
        ),
        judge(
            "telemetry: a handler that does nothing, per event",
            "< 1 µs",
            None if costs is None else costs[1],
            f"{(costs or (0, 0))[1] / 1e3:.2f} µs",
            costs is not None and costs[1] < 1000,
        ),
    ]


def micros(ns: float | None) -> str:
    """Format nanoseconds as microseconds."""
    if ns is None:
        return "n/a"
    us = ns / 1e3
    return f"{us:,.0f} µs" if us >= 100 else f"{us:,.1f} µs"


def rate(value: float | None) -> str:
    """Format a rate per second."""
    return "n/a" if value is None else f"{value:,.0f}"


def ratio(value: float | None) -> str:
    """Format a factor."""
    return "n/a" if value is None else f"{value:.2f}x"


def render_header(results: Results) -> list[str]:
    """Return the heading, the command, the machine and the software of a run."""
    packages = ["hephaestus-core"] if results.has("hephaestus") else []
    if results.has("dbos"):
        packages += ["dbos", "SQLAlchemy"]
    settings = results.settings
    lines = header(
        "## Runtime: hephaestus vs DBOS Transact and a bare SQLite commit",
        "bench_runtime.py",
        settings.quick,
        packages,
    )
    engines = ", ".join(results.engines)
    return [
        *lines,
        f"- SQLite {sqlite3.sqlite_version}; databases in {results.directory}",
        f"- Engines: {engines}. Each round runs the floor, hephaestus and DBOS one after the "
        f"other, each in a fresh process; every number is the best of {settings.rounds} "
        "round(s) (the machine is shared: the time of a disk sync varies over minutes).",
        "- Every engine commits each step durably: WAL with `synchronous=FULL` "
        "(hephaestus's default SQLite storage; DBOS's SQLite system database switched to "
        "WAL, SQLite's default `synchronous=FULL`, checked on its connections; the floor "
        "sets both).",
    ]


def render_sequential(results: Results, s: Summary) -> list[str]:
    """The table of the sequential case (rows of the engines that took part)."""
    settings = results.settings

    def row(label: str, ns: float | None) -> list[str]:
        per_s = None if ns is None else 1e9 / ns
        vs_floor = "-" if label.startswith("one ") else ratio(factor(ns, s.commit_ns))
        return [label, micros(ns), rate(per_s), vs_floor]

    rows = [
        ("floor", row("one 200-byte insert + commit (floor)", s.commit_ns)),
        ("hephaestus", row("hephaestus: `app.run(Chain20, ...)`", s.seq_ns)),
        ("dbos", row("DBOS: calling the workflow function", s.dbos_direct_ns)),
        ("dbos", row("DBOS: `DBOS.start_workflow(...).get_result()`", s.dbos_start_ns)),
    ]
    return [
        "### Sequential: one 20-step instance at a time",
        "",
        f"A linear workflow of 20 no-op steps, run to completion one instance after another; "
        f"the time of {settings.seq_instances} runs divided by their steps, best of "
        f"{settings.seq_batches} batches per round. Starting and finishing each instance is "
        "included. The floor's row is one commit.",
        "",
        table(
            ["engine", "time per step", "steps/s", "vs one floor commit"],
            [cells for engine, cells in rows if results.has(engine)],
        ),
    ]


def render_concurrent(results: Results, s: Summary) -> list[str]:
    """The table of the concurrent case (rows of the engines that took part)."""
    settings = results.settings
    n, c = settings.conc_instances, settings.concurrency
    poll = f"{DBOS_QUEUE_POLL_SEC * 1e3:g} ms"
    rows = [
        ("floor", ["floor: commits/s, one after another", rate(s.floor_per_s), "-"]),
        ("hephaestus", [f"hephaestus: `Hephaestus(path, concurrency={c})`", rate(s.conc), "-"]),
        (
            "dbos",
            [
                f"DBOS: a queue with `worker_concurrency={c}`, polled every {poll}",
                rate(s.dbos_queue),
                ratio(factor(s.conc, s.dbos_queue)),
            ],
        ),
        (
            "dbos",
            [
                f"DBOS: `DBOS.start_workflow`, {c} executor threads",
                rate(s.dbos_start),
                ratio(factor(s.conc, s.dbos_start)),
            ],
        ),
    ]
    rows = [(engine, cells) for engine, cells in rows if results.has(engine)]
    return [
        f"### Concurrent: {n} instances of 10 steps, {c} at once",
        "",
        f"{n} instances of a linear 10-step workflow started at once; steps per second from "
        "the first start until the last instance completed, best of the rounds.",
        "",
        table(["engine", "steps/s", "hephaestus is"], [cells for _, cells in rows]),
    ]


def render_history(results: Results) -> list[str]:
    """The table of the history case."""
    if not results.hephaestus:
        return []
    size = results.settings.history_steps
    first = results.hephaestus[0]["history"]
    early, late = first["early"], first["late"]
    rows = [
        [
            f"steps {early[0]:,}-{early[1]:,}",
            micros(results.history("early_median_ns")),
            micros(results.history("early_mean_ns")),
        ],
        [
            f"steps {late[0]:,}-{late[1]:,}",
            micros(results.history("late_median_ns")),
            micros(results.history("late_mean_ns")),
        ],
        [
            "late / early",
            ratio(history_ratio(results)),
            ratio(factor(results.history("late_mean_ns"), results.history("early_mean_ns"))),
        ],
    ]
    return [
        f"### History: a step late in a {size:,}-step chain",
        "",
        f"One instance of a linear {size:,}-step workflow; each step notes "
        "`time.perf_counter_ns()` as it starts, and a step's cost is the time until the next "
        "one starts. The median and mean over a window of steps near the start and near the "
        "end of the run (the mean includes the snapshot rewrites, which grow with the "
        "history but come ever less often); lowest of the rounds.",
        "",
        table(["window", "median per step", "mean per step"], rows),
    ]


def render_memory(results: Results) -> list[str]:
    """The table of the memory case."""
    if not results.memory:
        return []
    settings = results.settings
    empty, stored = results.memory["empty"], results.memory["stored"]
    size = results.populated.get("bytes", 0) / 2**20
    rows = [
        ["empty", "0", "0", f"{empty['rss_mib']:.1f} MiB", f"{empty['peak_mib']:.1f} MiB", "-"],
        [
            f"{size:,.0f} MiB",
            f"{settings.memory_finished:,}",
            f"{settings.memory_waiting:,}",
            f"{stored['rss_mib']:.1f} MiB",
            f"{stored['peak_mib']:.1f} MiB",
            f"+{stored['rss_mib'] - empty['rss_mib']:.1f} MiB ({ratio(memory_ratio(results))})",
        ],
    ]
    return [
        "### Memory: an app over many stored instances",
        "",
        "A fresh process opens `Hephaestus(path)`, starts its workers (`app.start()`) and idles "
        f"{settings.memory_idle:g} s; its resident set (`VmRSS`) and peak (`VmHWM`) from "
        "`/proc/self/status`. The finished instances are runs of the 10-step workflow, the "
        "waiting ones wait for a one-hour `Wait` timer; they were written through the storage "
        f"API as the app writes them ({results.populated.get('seconds', 0):.0f} s), and "
        "checked against runs the app made itself.",
        "",
        table(
            ["database", "finished", "waiting", "RSS after idling", "peak RSS", "vs empty"], rows
        ),
    ]


def render_timers(results: Results) -> list[str]:
    """The table of the timer case."""
    if not results.timers:
        return []
    t = results.timers
    count = results.settings.timers
    idle_share = t["idle_cpu_s"] / t["idle_wall_s"] * 100
    rows = [
        [
            f"{count:,} timers due at once, until all instances completed",
            f"{t['fire_ns'] / 1e9:.2f} s",
        ],
        ["fired and completed per second", f"{t['fired_per_s']:,.0f}"],
        [
            f"CPU time of the idle app over {t['idle_wall_s']:.1f} s",
            f"{t['idle_cpu_s'] * 1e3:.1f} ms ({idle_share:.2f}% of a core)",
        ],
    ]
    return [
        f"### Timers: {count:,} `Wait` timers due at once",
        "",
        f"{count:,} stored instances wait for a one-hour timer (then run one no-op step). Idle: "
        "a fresh app with the system clock starts, settles for 1 s, and its process CPU time "
        "(`time.process_time()`) is measured while it idles. Firing: an app with a "
        "`hephaestus.testing.VirtualClock` starts, the clock moves past the timers "
        "(`clock.advance(...)`), and the time runs until no instance is unfinished.",
        "",
        table(["measure", "value"], rows),
    ]


def render_telemetry(results: Results) -> list[str]:
    """The table of the telemetry case."""
    t = results.telemetry
    costs = telemetry_costs(results)
    if not t or costs is None:
        return []
    settings = results.settings
    step = t["step_ns"]
    low, high = t["ratio_quartiles"]
    events_per_step = t["events_per_instance"] / 10
    rows = [
        ["stubbed out (every hook a no-op)", micros(step["stubbed"]), "1.00x"],
        [
            "as shipped: no handler, no OpenTelemetry",
            micros(step["shipped"]),
            f"{ratio(t['shipped_over_stubbed'])} (quartiles {low:.3f}-{high:.3f})",
        ],
        [
            f"a no-op handler on all 11 events ({events_per_step:.1f} per step)",
            micros(step["handler"]),
            "",
        ],
    ]
    return [
        "### Telemetry's cost",
        "",
        f"{settings.telemetry_instances} instances of the 10-step chain at once (concurrency "
        f"{settings.concurrency}) on `memory://` storage, so that no disk time hides the "
        "runtime's own work; the process's CPU time (all threads) per step, which a shared "
        "machine disturbs less than wall time. The three variants alternate in one process, "
        f"round by round, for {settings.telemetry_rounds} rounds; the table gives each "
        "variant's median, and the ratio is the median of each round's own ratio. *Stubbed "
        "out* replaces every event and OpenTelemetry hook the runtime calls with a no-op "
        "(telemetry compiled out); *as shipped* has no handler attached and OpenTelemetry off "
        "(as without the `[otel]` extra).",
        "",
        table(["variant", "CPU per step", "vs stubbed"], rows),
        "",
        "Whole runs cannot resolve a difference of 2% on a shared machine (see the "
        "quartiles), so the hooks are also measured on their own: the "
        f"{t['hook_calls_per_step']:.1f} calls per step that the runtime makes to its "
        "telemetry hooks as shipped, recorded over 20 runs with their arguments and "
        f"replayed: **{t['hooks_ns_per_step']:,.0f} ns per step**, "
        f"{(costs[0] - 1) * 100:.2f}% of a stubbed step's CPU time (the target's measure).",
        "",
        "A handler's cost per event is below what whole runs can resolve, so it is measured "
        f"on its own: the {t['events_replayed']:,} events of 20 runs, each event builder "
        "called again with the arguments the runtime gave it, with a handler that does "
        f"nothing attached: **{costs[1]:,.0f} ns per event** (best of "
        f"{settings.telemetry_rounds}), building the metadata and delivering it included.",
    ]


def render_targets(results: Results) -> list[str]:
    """The table of the issue's targets with PASS or MISS."""
    rows = [[t.name, t.requirement, t.measured, t.status] for t in evaluate_targets(results)]
    notes = []
    if not results.has("dbos"):
        notes = ["", "DBOS did not take part in this run (`--engines`): its targets are n/a."]
    return [
        "### Targets",
        "",
        "Against DBOS, its faster variant of each case.",
        "",
        table(["target", "required", "measured", "result"], rows),
        *notes,
    ]


def render(results: Results) -> str:
    """Render the results as the Markdown section (without the markers)."""
    s = summarize(results)
    sections = [
        render_header(results),
        render_sequential(results, s),
        render_concurrent(results, s),
        render_history(results),
        render_memory(results),
        render_timers(results),
        render_telemetry(results),
        render_targets(results),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark the durable runtime against DBOS Transact and a bare SQLite commit."
    )
    add_common_arguments(
        parser, "a smoke run of a few seconds with tiny sizes; the numbers mean nothing"
    )
    add_engines_arguments(parser, ENGINES)
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the databases go (default: the system's temporary directory); the disk "
        "decides the cost of a commit",
    )
    args = parser.parse_args(argv)
    if args.child:
        return args
    args.engines = chosen_engines(parser, args.engines, ENGINES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one of its processes); return the exit
    status."""
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, json.loads(args.child_spec), args.child_out)
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    results = run_benchmarks(args.engines, settings, args.dir)
    section = render(results)
    publish(section, args.write, "bench_runtime", started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
