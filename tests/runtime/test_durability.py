"""Durability of the runtime across processes (CONTRACT §10, "What the
runtime guarantees"): processes killed at random moments lose nothing
committed, two processes drive one database at once, a stalled app's runs
are taken over once its lease runs out, a restart takes over the runs of a
dead process on this host at once instead of waiting out their lease, and a
cancel from another process sticks.

The children are ``crash_child.py`` processes driving
:class:`durable_flows.CrashFlow` (a fan-out, a join and a one-second
timer), each step of which appends to a side-effect log. The test process
reads the database with an app of its own that only reads (reads never start
workers), or drives it with an app when a test says so.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from crash_child import crash_ids
from durable_flows import CRASH_LOGGED, CRASH_STEPS, Begin, read_log
from hephaestus import ExecutionEntry, Hephaestus, InstanceNotFoundError, step_key
from pg_server import fresh_postgres

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="POSIX signals and /proc"
)

HERE = Path(__file__).resolve().parent
CHILD = HERE / "crash_child.py"
#: Instances per crash test.
COUNT = 20
#: A hang guard for a child to finish its work; no test comes near it.
GUARD = 60.0

#: ``(status, history)`` of an instance as committed.
Seen = dict[str, tuple[str, list[ExecutionEntry]]]


# -- children ------------------------------------------------------------------------------


class Child:
    """A ``crash_child.py`` process: its stdout is read line by line (to
    time kills from), its stderr goes to a file for failure messages."""

    def __init__(self, tmp_path: Path, name: str, db: Path | str, log: Path, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
        self.name = name
        self.stderr_path = tmp_path / f"{name}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(CHILD), str(db), "--log", str(log), *args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        self.said: list[str] = []
        self._buffer = b""

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def expect(self, word: str, timeout: float) -> None:
        """Waits until the child prints ``word``; fails the test, with the
        child's stderr, if it exits or ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while word not in self.said:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{self.name} did not say {word!r} in {timeout} s{self._stderr()}")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                code = self.process.wait()
                pytest.fail(
                    f"{self.name} exited ({code}) before saying {word!r}, "
                    f"after {self.said}{self._stderr()}"
                )
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            self.said.extend(line.decode().strip() for line in lines)

    def finish(self, timeout: float) -> int:
        """Waits for the child to exit by itself; its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not exit in {timeout} s{self._stderr()}")

    def kill(self) -> None:
        """SIGKILLs the child and reaps it (a zombie would still look alive)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def pause(self) -> None:
        """SIGSTOPs the child and waits until every thread of it stopped: it
        stays alive but renews no lease."""
        self.process.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + GUARD
        while not all(state in "Tt" for state in _thread_states(self.pid)):
            assert time.monotonic() < deadline, f"{self.name} did not stop"
            time.sleep(0.001)

    def carry_on(self) -> None:
        """SIGCONTs a paused child."""
        self.process.send_signal(signal.SIGCONT)

    def _stderr(self) -> str:
        text = self.stderr_path.read_text(errors="replace")[-4000:]
        return f"\n--- {self.name} stderr ---\n{text}" if text.strip() else ""


def _thread_states(pid: int) -> list[str]:
    """The state letter (``/proc/<pid>/task/*/stat``) of each thread of ``pid``."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            states.append(task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0])
    return states


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    """``spawn(name, db, log, *args)`` starts a :class:`Child`; every child
    still running at the end of the test is killed."""
    children: list[Child] = []

    def start(name: str, db: Path, log: Path, *args: str) -> Child:
        child = Child(tmp_path, name, db, log, *args)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()


@contextlib.contextmanager
def reader(db: Path | str) -> Iterator[Hephaestus]:
    """An app on ``db`` used only to read: it never starts workers."""
    app = Hephaestus(db)
    try:
        yield app
    finally:
        app.close()


# -- reading what is committed --------------------------------------------------------------


def committed(app: Hephaestus, ids: list[str]) -> Seen:
    """The status and history of every instance of ``ids`` that exists."""
    seen: Seen = {}
    for iid in ids:
        try:
            instance = app.get(iid)
        except InstanceNotFoundError:
            continue
        seen[iid] = (instance.status.value, list(instance.execution_history))
    return seen


def assert_extends(before: Seen, after: Seen, when: str) -> None:
    """Every instance of ``before`` is in ``after``, its history starts with
    the history it had, and a completed one is unchanged."""
    for iid, (status, history) in before.items():
        assert iid in after, f"{when}: {iid} ({status}, {len(history)} entries) is gone"
        now_status, now_history = after[iid]
        assert now_history[: len(history)] == history, (
            f"{when}: {iid} lost committed history:\nbefore ({status}): "
            f"{_steps(history)}\nafter ({now_status}): {_steps(now_history)}"
        )
        if status == "completed":
            assert (now_status, now_history) == (status, history), (
                f"{when}: completed {iid} changed to {now_status}: {_steps(now_history)}"
            )
        assert now_status != "failed", f"{when}: {iid} failed"


def _steps(history: list[ExecutionEntry]) -> list[str]:
    return [f"{step_key(e.step_ref)}:{e.event}" for e in history]


def describe(app: Hephaestus, ids: list[str]) -> str:
    """The unfinished instances of ``ids``, with their state and lease, for a
    failure message."""
    lines = []
    for iid in ids:
        try:
            instance = app.get(iid)
        except InstanceNotFoundError:
            lines.append(f"  {iid}: never started")
            continue
        if instance.status.value == "completed":
            continue
        row = app.storage.newest(iid)
        lines.append(
            f"  {iid}: {instance.status.value} active={_names(instance.active_steps)} "
            f"waiting={_names(instance.waiting_steps)} "
            f"history={_steps(instance.execution_history)} "
            f"error={instance.error} lease={row and (row.lease_owner, row.lease_expires)} "
            f"runnable={row and row.runnable} {instance!r}"
        )
    return "\n".join(lines) or "  (none)"


def _names(steps: frozenset[type]) -> list[str]:
    return sorted(step_key(s) for s in steps)


def wait_completed(app: Hephaestus, ids: list[str], timeout: float) -> None:
    """Waits until every instance of ``ids`` completed; fails the test with
    the stuck ones after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = {iid: committed(app, [iid]).get(iid, ("missing", []))[0] for iid in ids}
        if all(status == "completed" for status in statuses.values()):
            return
        if "failed" in statuses.values() or time.monotonic() > deadline:
            pytest.fail(f"not every instance completed in {timeout} s:\n{describe(app, ids)}")
        time.sleep(0.05)


def wait_logged(log: Path, key: str, count: int, timeout: float) -> None:
    """Waits until ``count`` lines of step ``key`` are in the side-effect log."""
    deadline = time.monotonic() + timeout
    while sum(1 for _, k, _, _ in read_log(log) if k == key) < count:
        assert time.monotonic() < deadline, f"{count} {key} lines not logged in {timeout} s"
        time.sleep(0.02)


def assert_all_done_once(app: Hephaestus, ids: list[str], log: Path) -> Counter[tuple[str, str]]:
    """Every instance completed with exactly one history entry per step it
    completed (every step of the workflow), every logged step ran at least
    once, and every re-run of a step had the same idempotency key.

    Returns how many times each ``(id, step key)`` was logged."""
    lines = read_log(log)
    runs: Counter[tuple[str, str]] = Counter((iid, key) for iid, key, _, _ in lines)
    keys: dict[tuple[str, str], set[str]] = {}
    for iid, key, _, idempotency_key in lines:
        keys.setdefault((iid, key), set()).add(idempotency_key)
    for iid in ids:
        instance = app.get(iid)
        assert instance.status.value == "completed", describe(app, [iid])
        per_step = Counter(entry.step_ref for entry in instance.execution_history)
        assert all(n == 1 for n in per_step.values()), (
            f"{iid} has a step twice in its history: {_steps(instance.execution_history)}"
        )
        assert set(per_step) == set(instance.completed_steps) == CRASH_STEPS, (
            f"{iid}: history {_steps(instance.execution_history)}, "
            f"completed {_names(instance.completed_steps)}"
        )
        for step in CRASH_LOGGED:
            key = step_key(step)
            assert runs[iid, key] >= 1, f"{iid}: {key} is in the history but never ran"
            assert len(keys[iid, key]) == 1, (
                f"{iid}: re-runs of {key} had different idempotency keys {keys[iid, key]}"
            )
    return runs


# -- crash rounds ---------------------------------------------------------------------------

SEEDS = [11, 23, 37]
#: Steps of 20-80 ms on two threads: the work spans most rounds, so kills
#: land before, in and after steps, timers and commits.
CRASH_ARGS = ("--count", str(COUNT), "--concurrency", "2", "--work", "0.02", "0.08")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("seed", SEEDS)
def test_children_killed_at_random_moments_lose_nothing_committed(
    request, tmp_path, spawn, seed, kind
):
    """Round after round, a child drives 20 instances and is SIGKILLed
    20-400 ms after it started; what was committed before each kill is
    still there after it and after the next child ran. A last child then
    runs until every instance completes: each with one history entry per
    step, each logged step having run at least once. On an SQLite file and
    on a Postgres server."""
    rng = random.Random(seed)
    db: Path | str = tmp_path / "crash.db"
    if kind == "postgres":
        db = request.getfixturevalue("postgres_url")
        fresh_postgres(db)
    log = tmp_path / "effects.log"
    ids = crash_ids("i", COUNT)
    with reader(db) as app:
        seen: Seen = {}
        for round_ in range(rng.randint(8, 12)):
            child = spawn(f"round {round_}", db, log, *CRASH_ARGS)
            child.expect("started", GUARD)
            time.sleep(rng.uniform(0.02, 0.4))
            before = committed(app, ids)
            child.kill()
            assert_extends(seen, before, f"round {round_}, while the child ran")
            after = committed(app, ids)
            assert_extends(before, after, f"round {round_}, across the kill")
            seen = after

        last = spawn("last", db, log, *CRASH_ARGS, "--guard", str(GUARD))
        try:
            last.expect("done", GUARD)
        except pytest.fail.Exception as failure:
            pytest.fail(f"{failure}\nunfinished instances:\n{describe(app, ids)}")
        assert last.finish(GUARD) == 0
        final = committed(app, ids)
        assert_extends(seen, final, "the last child")
        assert_all_done_once(app, ids, log)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_for_each_killed_in_the_middle_reruns_only_unfinished_items(tmp_path, spawn, seed):
    """A child drives one ForEach of 60 items (four at once) and is
    SIGKILLed at a random moment while items run. The next child finishes
    it: the items committed before the kill do not run again, every item
    ran, and each is in the history once."""
    rng = random.Random(seed)
    db, log = tmp_path / "lines.db", tmp_path / "effects.log"
    args = ("--count", "1", "--lines", "60", "--concurrency", "4", "--work", "0.01", "0.04")
    iid = "lines::i0"
    with reader(db) as app:
        child = spawn("first", db, log, *args)
        child.expect("created", GUARD)
        wait_logged_prefix(log, "line#", rng.randint(5, 40), GUARD)
        time.sleep(rng.uniform(0, 0.05))
        child.kill()
        killed = committed(app, [iid])[iid][1]
        done_before = {e.iteration for e in killed if e.step_ref.__name__ == "Line"}
        logged_before = Counter(key for _, key, _, _ in read_log(log))
        assert 0 < len(done_before) < 60, "the kill should land in the middle of the items"

        last = spawn("last", db, log, *args, "--guard", str(GUARD))
        last.expect("done", GUARD)
        assert last.finish(GUARD) == 0
        instance = app.get(iid)
    assert instance.status.value == "completed", instance.error
    runs = [e.iteration for e in instance.execution_history if e.step_ref.__name__ == "Line"]
    assert sorted(runs) == list(range(60)), "each item once in the history"
    assert instance.context.steps["line"] == [{}] * 60
    logged = Counter(key for _, key, _, _ in read_log(log))
    for index in range(60):
        assert logged[f"line#{index}"] >= 1, f"item {index} never ran"
    for index in done_before:
        assert logged[f"line#{index}"] == logged_before[f"line#{index}"], (
            f"item {index} was committed before the kill but ran again"
        )


def wait_logged_prefix(log: Path, prefix: str, count: int, timeout: float) -> None:
    """Waits until ``count`` lines whose step key starts with ``prefix`` are
    in the side-effect log."""
    deadline = time.monotonic() + timeout
    while sum(1 for _, k, _, _ in read_log(log) if k.startswith(prefix)) < count:
        assert time.monotonic() < deadline, f"{count} {prefix} lines not logged in {timeout} s"
        time.sleep(0.005)


# -- two processes at once ------------------------------------------------------------------


def test_two_processes_drive_one_database_at_once(tmp_path, spawn):
    """Two children start the same 20 ids at once (one start of each wins)
    and drive them together: every instance completes, and, with no crash,
    every step ran exactly once, in one process or the other."""
    db, log = tmp_path / "two.db", tmp_path / "effects.log"
    ids = crash_ids("t", COUNT)
    with reader(db):  # makes the schema before the children race for it
        pass
    args = ("--count", str(COUNT), "--prefix", "t", "--concurrency", "2")
    first = spawn("first", db, log, *args)
    second = spawn("second", db, log, *args)
    for child in (first, second):
        child.expect("done", GUARD)
    assert first.finish(GUARD) == 0
    assert second.finish(GUARD) == 0
    with reader(db) as app:
        runs = assert_all_done_once(app, ids, log)
        assert {n for n in runs.values()} == {1}, (
            f"steps ran more than once: {sorted(k for k, n in runs.items() if n > 1)}"
        )
        assert {len(app.list(id=iid)) for iid in ids} == {1}
    pids = {pid for _, _, pid, _ in read_log(log)}
    assert pids == {first.pid, second.pid}, "both processes should have run steps"


# -- leases ----------------------------------------------------------------------------------


def hung_child(
    spawn, tmp_path: Path, lease: float, count: int = 4, database: str | None = None
) -> tuple[Child, Path | str, Path, Path]:
    """A child (lease ``lease`` s) whose ``count`` instances all run
    :class:`Begin`, which keeps running until the returned hang file is
    removed: the child holds every run's lease. Returns the child, the
    database (an SQLite file, or ``database``), the side-effect log and the
    hang file."""
    db: Path | str = database or tmp_path / "lease.db"
    log, hang = tmp_path / "effects.log", tmp_path / "hang"
    hang.touch()
    child = spawn(
        "holder",
        db,
        log,
        *("--count", str(count), "--prefix", "h", "--lease", str(lease)),
        *("--concurrency", str(count), "--work", "0", "0", "--hang", str(hang)),
    )
    child.expect("created", GUARD)
    wait_logged(log, step_key(Begin), count, GUARD)
    return child, db, log, hang


def pause_outside_a_transaction(child: Child, db: Path) -> None:
    """SIGSTOPs ``child`` at a moment it holds no write lock on ``db``.

    A process stopped inside a write transaction keeps SQLite's write lock
    until it runs again or dies, which blocks every other process on the
    file: no lease can help with that, so the lease tests stop the child
    between its transactions (resuming it briefly until they catch one)."""
    for _ in range(1000):
        child.pause()
        conn = sqlite3.connect(db, timeout=0.05, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            child.carry_on()
            time.sleep(0.002)
        finally:
            conn.close()
    pytest.fail("the child held the write lock every time it was stopped")


def assert_leased_to(app: Hephaestus, ids: list[str], pid: int, beyond: float) -> None:
    """Every run of ``ids`` is running and leased to process ``pid`` until
    after ``beyond`` (clock seconds)."""
    for iid in ids:
        row = app.storage.newest(iid)
        assert row is not None
        assert row.status == "running", describe(app, [iid])
        assert row.lease_owner is not None
        assert f":{pid}:" in row.lease_owner, (row.lease_owner, pid)
        assert row.lease_expires is not None
        assert row.lease_expires > beyond, describe(app, [iid])


def test_stalled_app_is_taken_over_once_its_lease_runs_out(tmp_path, spawn):
    """A child (lease 2 s) holds four runs in a step and stalls (SIGSTOP:
    alive, but it renews nothing). Another app takes them over once the lease
    runs out and completes them; when the child carries on, its late results
    are discarded: every history still has one entry per step."""
    child, db, log, hang = hung_child(spawn, tmp_path, lease=2.0)
    pause_outside_a_transaction(child, db)
    hang.unlink()  # the child's steps notice once it carries on
    ids = crash_ids("h", 4)
    with reader(db) as app:
        assert_leased_to(app, ids, child.pid, beyond=0)
    with Hephaestus(db, lease=2.0) as app:
        wait_completed(app, ids, GUARD)
    child.carry_on()
    child.expect("done", GUARD)
    assert child.finish(GUARD) == 0
    with reader(db) as app:
        runs = assert_all_done_once(app, ids, log)
    # Begin ran once in the stalled child and once in this process; no other
    # step ran twice (there was no crash).
    by_pid = Counter((key, pid) for _, key, pid, _ in read_log(log))
    begin = step_key(Begin)
    assert by_pid[begin, child.pid] == 4, by_pid
    assert by_pid[begin, os.getpid()] == 4, by_pid
    assert {n for (iid, key), n in runs.items() if key != begin} == {1}, runs


def shared_database(request, kind: str) -> str | None:
    """``None`` (an SQLite file of the test's own), or a Postgres database
    with an empty schema."""
    if kind == "sqlite":
        return None
    url = str(request.getfixturevalue("postgres_url"))
    fresh_postgres(url)
    return url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_restart_takes_over_runs_of_a_dead_process_without_waiting_out_the_lease(
    request, tmp_path, spawn, kind
):
    """A child holding four runs with an hour-long lease is SIGKILLed; an app
    started afterwards on the same database proves them orphaned (same host,
    dead pid) and completes them at once."""
    child, db, log, hang = hung_child(
        spawn, tmp_path, lease=3600.0, database=shared_database(request, kind)
    )
    child.kill()
    hang.unlink()
    ids = crash_ids("h", 4)
    with reader(db) as app:
        assert_leased_to(app, ids, child.pid, beyond=time.time() + 3000)
    with Hephaestus(db, lease=3600.0) as app:
        wait_completed(app, ids, GUARD)
    with reader(db) as app:
        assert_all_done_once(app, ids, log)


def test_restart_leaves_the_runs_of_a_live_process_alone(tmp_path, spawn):
    """A child holding four runs with an hour-long lease stalls (SIGSTOP):
    it is alive, so a new app must not take its runs. Once it is dead, the
    next app takes them over at once."""
    child, db, log, hang = hung_child(spawn, tmp_path, lease=3600.0)
    pause_outside_a_transaction(child, db)
    hang.unlink()
    ids = crash_ids("h", 4)
    with reader(db) as app:
        assert_leased_to(app, ids, child.pid, beyond=time.time() + 3000)
    with Hephaestus(db, lease=3600.0) as app:
        time.sleep(2.0)
        assert_leased_to(app, ids, child.pid, beyond=time.time() + 3000)
        assert Counter(key for _, key, _, _ in read_log(log)) == {step_key(Begin): 4}
    child.kill()
    with Hephaestus(db, lease=3600.0) as app:
        wait_completed(app, ids, GUARD)
    with reader(db) as app:
        assert_all_done_once(app, ids, log)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_cancel_from_another_process_sticks(request, tmp_path, spawn, kind):
    """A child drives four runs, each in a running step; this process
    cancels them (an app that only reads and cancels starts no workers).
    When the child's steps return, their results are discarded: the
    instances stay exactly as the cancels left them and nothing after the
    running step runs."""
    child, db, log, hang = hung_child(
        spawn, tmp_path, lease=30.0, database=shared_database(request, kind)
    )
    ids = crash_ids("h", 4)
    with reader(db) as app:
        cancelled = {iid: app.cancel(iid, reason="from afar") for iid in ids}
        hang.unlink()
        child.expect("done", GUARD)
        assert child.finish(GUARD) == 1  # its instances failed (cancelled)
        for iid in ids:
            instance = app.get(iid)
            assert instance == cancelled[iid]
            assert instance.error == {"kind": "cancelled", "reason": "from afar"}
            assert instance.execution_history == []
    assert Counter(key for _, key, _, _ in read_log(log)) == {step_key(Begin): 4}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_running_app_takes_over_the_runs_of_a_process_that_dies_beside_it(
    request, tmp_path, spawn, kind
):
    """An app is already running when a child holding four runs (an
    hour-long lease) is SIGKILLed and left unreaped, a zombie, as happens when
    its parent is slow to wait: the app sees it dead within seconds and
    completes its runs, without waiting out the lease."""
    child, db, log, hang = hung_child(
        spawn, tmp_path, lease=3600.0, database=shared_database(request, kind)
    )
    ids = crash_ids("h", 4)
    with Hephaestus(db, lease=3600.0) as app:
        time.sleep(0.5)  # the app has started and seen the child's leases
        child.process.send_signal(signal.SIGKILL)  # not reaped: a zombie for now
        hang.unlink()
        wait_completed(app, ids, GUARD)
    child.kill()
    with reader(db) as app:
        assert_all_done_once(app, ids, log)
