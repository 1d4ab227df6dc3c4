"""The distributed executor (``executor="procrastinate"``) on a real
PostgreSQL server with real procrastinate workers: ``hephaestus worker``
processes share the steps of every run; one killed with SIGKILL loses
nothing, a cancel aborts a step running on another worker, a timer that
fell due while no worker ran fires when one comes back, and a Postgres
restart costs nothing but time.

Every test starts its own database on the session's server (or, to restart
it, a server of its own). Without PostgreSQL's binaries they skip with a
message that says how to get them; under ``CI=true`` they must run.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import durable_flows as flows
import pytest
from hephaestus import Hephaestus, Instance, Status, step_key
from hephaestus.runtime.storage.base import Append, NewRun, StepOutcome
from pg_server import PostgresServer, fresh_postgres

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("procrastinate")

from hephaestus.runtime import distributed  # noqa: E402

HERE = Path(__file__).resolve().parent
#: Seconds after which a dead worker's runs and steps are taken over.
LEASE = 3.0
#: A hang guard for waits; no test comes near it.
GUARD = 300.0


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def queue_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's server."""
    return postgres_server.create_database(f"q_{uuid.uuid4().hex[:12]}")


class Workers:
    """``hephaestus worker`` processes on one database, their output in files."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 8) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
        out = open(self.tmp_path / f"worker{len(self.processes)}.log", "wb")  # noqa: SIM115
        command = [
            sys.executable,
            "-m",
            "hephaestus",
            "worker",
            "--db",
            self.url,
            "--import",
            "durable_flows",
            "--concurrency",
            str(concurrency),
            "--lease",
            str(LEASE),
            "--log-level",
            "WARNING",
        ]  # fmt: skip  (procrastinate is the default executor on Postgres)
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()
        self.processes.append(process)
        return process

    def output(self) -> str:
        return "".join(
            f"\n--- worker {i} ---\n" + (self.tmp_path / f"worker{i}.log").read_text()[-3000:]
            for i in range(len(self.processes))
        )

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def workers(queue_url: str, tmp_path: Path) -> Iterator[Workers]:
    fleet = Workers(queue_url, tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def settled(app: Hephaestus, iid: str, workers: Workers | None = None) -> Instance:
    """The instance once it completed or failed (a wait on a timer goes on)."""
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        try:
            instance = app.wait(iid, timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            break
        if instance.status in (Status.COMPLETED, Status.FAILED):
            return instance
        time.sleep(0.1)
    pytest.fail(f"{iid} did not finish{workers.output() if workers else ''}")


def until(condition: Any, what: str, workers: Workers | None = None) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never {what}{workers.output() if workers else ''}")
        time.sleep(0.05)


def jobs(url: str) -> Counter[str]:
    """procrastinate's jobs by status."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1")
        return Counter(dict(rows.fetchall()))


def history_counts(instance: Instance) -> Counter[type]:
    return Counter(entry.step_ref for entry in instance.execution_history)


# -- the app as a client, and the storage's fencing --------------------------------------------


def test_the_executor_needs_postgres_and_a_known_name(queue_url: str) -> None:
    with pytest.raises(ValueError, match="needs a Postgres storage"):
        Hephaestus("memory://", executor="procrastinate")
    with pytest.raises(ValueError, match="'local' or 'procrastinate'"):
        Hephaestus(queue_url, executor="celery")


def test_db_migrate_creates_procrastinates_schema_beside_ours(queue_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hephaestus", "db", "migrate", "--db", queue_url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "procrastinate's tables are there" in done.stdout
    with psycopg.connect(queue_url) as conn:
        found = conn.execute(
            "SELECT to_regclass('procrastinate_jobs'), to_regclass('hephaestus.step_jobs')"
        ).fetchone()
    assert found == ("procrastinate_jobs", "hephaestus.step_jobs")


def test_a_client_runs_nothing_and_defers_nothing_itself(queue_url: str) -> None:
    # The client writes the pending run; only a worker drives it (and
    # enqueues its first step in the commit that starts it).
    with Hephaestus(queue_url, executor="procrastinate") as client:
        iid = client.start_instance(flows.CrashFlow, {}, id="crash::client")
        time.sleep(0.5)  # (a client that drove runs would have started it by now)
        assert client.get(iid).status is Status.PENDING
        assert "idle" in repr(client)
        assert sum(jobs(queue_url).values()) == 0


def test_an_outcome_is_recorded_only_by_the_execution_holding_the_step(queue_url: str) -> None:
    storage = fresh_postgres(queue_url)
    storage.open()
    try:
        distributed.attach(storage)
        instance = Instance.new(flows.CrashFlow, 1, {}, "crash::fence")
        run_id = storage.create(
            NewRun(
                id="crash::fence",
                token="t",
                workflow="durable_flows:CrashFlow",
                version=1,
                unique_key=None,
                snapshot=instance.to_bytes(),
                created_at=0.0,
            )
        )
        change = Append(
            run_id=run_id,
            expected_seq=0,
            records=(),
            status="running",
            runnable=True,
            updated_at=1.0,
            dispatch=[("begin", 1)],
        )
        # A change that conflicts enqueues nothing: the job and the change
        # are one transaction.
        stale = dataclasses.replace(change, expected_seq=5)
        assert storage.commit([stale])[0] is not None
        assert sum(jobs(queue_url).values()) == 0
        assert storage.commit([change]) == [None]
        assert jobs(queue_url) == Counter({"todo": 1})
        [job] = storage.load(run_id).jobs
        assert (job.unit, job.attempt) == ("begin", 1)

        assert storage.claim_step(run_id, "begin", 1, job.job_id, "a", 1.0, 4.0)
        # A second execution (the reaper retried a stalled job) takes over.
        assert storage.claim_step(run_id, "begin", 1, job.job_id, "b", 2.0, 5.0)
        assert not storage.claim_step(run_id, "begin", 1, job.job_id + 1, "c", 2.0, 5.0)
        outcome = StepOutcome(
            run_id, "begin", 1, "raised", None, "builtins.ValueError", "no", None, 2.0, 3.0
        )
        assert not storage.record_step(run_id, "a", outcome)  # fenced out
        assert storage.record_step(run_id, "b", outcome)
        assert not storage.record_step(run_id, "b", outcome)  # once
        assert storage.step_outcomes([run_id]) == [outcome]
        settle = dataclasses.replace(change, updated_at=3.0, dispatch=(), settle=["begin"])
        assert storage.commit([settle]) == [None]
        assert storage.step_outcomes([run_id]) == []
        assert storage.load(run_id).jobs == []
    finally:
        storage.close()


# -- in one process ------------------------------------------------------------------------------


def test_a_worker_runs_fan_outs_joins_retries_timers_and_for_each(queue_url: str) -> None:
    app = Hephaestus(queue_url, executor="procrastinate", lease=LEASE, concurrency=4)
    app.register(flows.FleetFlow, flows.LinesFlow)
    with distributed.Worker(app), Hephaestus(queue_url, executor="procrastinate") as client:
        fleet = [client.start_instance(flows.FleetFlow, {}, id=f"fleet::{i}") for i in range(4)]
        lines = client.start_instance(flows.LinesFlow, {"lines": list(range(7))}, id="lines::one")
        for iid in fleet:
            instance = settled(client, iid)
            assert instance.status is Status.COMPLETED, instance.error
            assert set(history_counts(instance).values()) == {1}
            assert set(history_counts(instance)) == flows.FLEET_STEPS
        instance = settled(client, lines)
        assert instance.status is Status.COMPLETED, instance.error
        stored = app.storage.load(app.storage.newest(fleet[0]).run_id)
        [failed] = stored.attempts
        assert (failed.step, failed.attempt, failed.error_type) == (
            "shaky",
            1,
            "builtins.RuntimeError",
        )
        assert failed.traceback is not None
        assert "the first attempt fails" in failed.traceback
    assert jobs(queue_url)["todo"] == jobs(queue_url)["doing"] == 0


# -- many processes ------------------------------------------------------------------------------


def test_three_workers_and_a_sigkill_lose_nothing_and_apply_no_result_twice(
    queue_url: str, workers: Workers, tmp_path: Path
) -> None:
    rnd = random.Random(int(os.environ.get("HEPHAESTUS_TEST_SEED", "10")))
    count = 500
    log = tmp_path / "side-effects.log"
    for _ in range(3):
        workers.start()
    with Hephaestus(queue_url, executor="procrastinate") as client:
        context = {"log": str(log), "work": [0.0, 0.02]}
        ids = [
            client.start_instance(flows.FleetFlow, context, id=f"fleet::{i}") for i in range(count)
        ]
        # Kill a worker mid-run: once some instances are done, at a seeded moment.
        until(lambda: len(flows.read_log(log)) > 300, "started working", workers)
        time.sleep(rnd.uniform(0.0, 2.0))
        victim = workers.processes[rnd.randrange(3)]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        finished = [settled(client, iid, workers) for iid in ids]

    logged = flows.log_counts(log)
    for instance in finished:
        assert instance.status is Status.COMPLETED, (instance.id, instance.error, workers.output())
        # One history entry per step: no result was applied twice.
        assert history_counts(instance) == Counter(dict.fromkeys(flows.FLEET_STEPS, 1))
        # Every step with a side effect ran at least once.
        for step in flows.FLEET_STEPS - {flows.Done}:
            assert logged[(instance.id, step_key(step))] >= 1, (instance.id, step)
        assert logged[(instance.id, "shaky#1")] >= 1
    # The killed worker's steps ran again elsewhere; nothing is left queued.
    assert jobs(queue_url)["todo"] == jobs(queue_url)["doing"] == 0
    with psycopg.connect(queue_url) as conn:
        assert conn.execute("SELECT count(*) FROM hephaestus.step_jobs").fetchone() == (0,)


def test_cancel_aborts_a_step_running_on_another_worker(
    queue_url: str, workers: Workers, tmp_path: Path
) -> None:
    log, hang = tmp_path / "side-effects.log", tmp_path / "hang"
    hang.touch()
    workers.start()
    with Hephaestus(queue_url, executor="procrastinate") as client:
        iid = client.start_instance(
            flows.CrashFlow, {"log": str(log), "hang": str(hang)}, id="crash::cancel"
        )
        until(lambda: (iid, "begin") in flows.log_counts(log), "began", workers)
        cancelled = client.cancel(iid, reason="stop")
        assert cancelled.error == {"kind": "cancelled", "reason": "stop"}
        until(lambda: jobs(queue_url)["aborted"] == 1, "aborted the job", workers)
        hang.unlink()  # the def step's thread ends; its late result has no row
        time.sleep(1.0)
        instance = client.get(iid)
    assert instance.status is Status.FAILED
    assert instance.error == {"kind": "cancelled", "reason": "stop"}
    assert instance.execution_history == []
    assert {key for _, key in flows.log_counts(log)} == {"begin"}
    assert workers.processes[0].poll() is None, workers.output()


def test_a_timer_due_while_every_worker_was_down_fires_when_one_comes_back(
    queue_url: str, workers: Workers, tmp_path: Path
) -> None:
    workers.start()
    with Hephaestus(queue_url, executor="procrastinate") as client:
        iid = client.start_instance(flows.CrashFlow, {}, id="crash::timer")
        waiting = client.wait(iid, timeout=GUARD)
        assert waiting.status is Status.WAITING
        first = workers.processes[0]
        first.send_signal(signal.SIGTERM)
        assert first.wait(GUARD) == 0, workers.output()
        time.sleep(1.5)  # the one-second Pause falls due with no worker
        assert client.get(iid).status is Status.WAITING
        workers.start()
        instance = settled(client, iid, workers)
    assert instance.status is Status.COMPLETED, workers.output()
    pause = [e for e in instance.execution_history if e.step_ref is flows.Pause]
    assert [e.event for e in pause] == ["timeout"]


def test_a_postgres_restart_mid_run_costs_only_time(tmp_path: Path) -> None:
    server = PostgresServer()
    fleet = None
    try:
        url = server.create_database("restart")
        fleet = Workers(url, tmp_path)
        fleet.start()
        fleet.start()
        log = tmp_path / "side-effects.log"
        with Hephaestus(url, executor="procrastinate") as client:
            context = {"log": str(log), "work": [0.0, 0.02]}
            ids = [
                client.start_instance(flows.FleetFlow, context, id=f"fleet::{i}") for i in range(60)
            ]
            until(lambda: len(flows.read_log(log)) > 40, "started working", fleet)
            server.restart()
            finished = [settled(client, iid, fleet) for iid in ids]
        for instance in finished:
            assert instance.status is Status.COMPLETED, (instance.error, fleet.output())
            assert history_counts(instance) == Counter(dict.fromkeys(flows.FLEET_STEPS, 1))
        assert all(p.poll() is None for p in fleet.processes), fleet.output()
    finally:
        if fleet is not None:
            fleet.stop_all()
        server.close()
