"""Races the runtime must settle (CONTRACT §10): starts of one business key
from threads and processes, a resume racing a timer or another resume of the
same step, a resume landing while the run's other steps commit, and a
cancel racing running steps. Each race is run many times at
once; whoever wins, the outcome must be one of the allowed ones, every
loser must be told, and the winner's effect must be the only one.

The workflows are in ``durable_flows.py``; the 'spawn' children's targets
in ``crash_child.py``.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from crash_child import race_resumes, race_starts
from durable_flows import (
    AfterPoke,
    AfterTimeout,
    BusyFlow,
    ChainFlow,
    Close,
    First,
    Gated,
    Hold,
    HoldFlow,
    Nap,
    NapFlow,
    Released,
    Second,
    Third,
    gate,
    log_counts,
)
from hephaestus import (
    AlreadyRunningError,
    Done,
    Hephaestus,
    HephaestusError,
    InvalidTransitionError,
    MemoryStorage,
    SQLiteStorage,
    step_key,
)
from hephaestus.testing import VirtualClock
from pg_server import fresh_postgres

#: A hang guard for anything the tests wait for; no test comes near it.
GUARD = 60.0
_UNFINISHED = ("pending", "running", "waiting")


# -- helpers ---------------------------------------------------------------------------------


def race(count: int, body: Callable[[int], Any]) -> list[tuple[str, Any]]:
    """Runs ``body(i)`` for ``i`` in ``range(count)`` in threads released at
    once; returns ``("returned", value)`` or ``("raised", exception)`` for
    each, in order of ``i``."""
    barrier = threading.Barrier(count)
    results: list[tuple[str, Any]] = [("missing", None)] * count

    def run(i: int) -> None:
        barrier.wait(GUARD)
        try:
            results[i] = ("returned", body(i))
        except Exception as error:
            results[i] = ("raised", error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
        assert not thread.is_alive(), "a racing thread hung"
    return results


def eventually(check: Callable[[], Any], what: str, timeout: float = GUARD) -> Any:
    """Polls ``check()`` until it returns something truthy; fails with
    ``what`` after ``timeout`` seconds (a hang guard)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def completed(app: Hephaestus, ids: list[str]) -> None:
    """Waits until every instance of ``ids`` completed (fails if one fails)."""

    def finished(iid: str) -> Any:
        try:
            instance = app.get(iid)
        except HephaestusError as error:
            pytest.fail(f"{iid} cannot be loaded any more: {error!r}")
        return instance if instance.status.value in ("completed", "failed") else None

    for iid in ids:
        instance = eventually(lambda iid=iid: finished(iid), f"{iid} to finish")
        assert instance.status.value == "completed", (iid, instance.error)


def history_counts(app: Hephaestus, iid: str) -> Counter[type]:
    """How many history entries each step of ``iid`` has."""
    return Counter(entry.step_ref for entry in app.get(iid).execution_history)


def make_storage(kind: str, tmp_path: Path) -> Any:
    """A fresh storage of ``kind`` (``"sqlite"`` or ``"memory"``)."""
    return MemoryStorage() if kind == "memory" else SQLiteStorage(tmp_path / "races.db")


@pytest.fixture
def gates() -> Iterator[list[str]]:
    """Names of gates a test uses; all are opened at the end, so that no
    step thread stays blocked."""
    names: list[str] = []
    yield names
    for name in names:
        gate(name).set()


def spawn_racers(
    target: Callable[..., None], db: str | Path, ids: list[str], processes: int, threads: int
) -> list[tuple[int, str, str]]:
    """Runs ``target(db, ids, threads, barrier, results)`` in ``processes``
    'spawn' children at once, all sharing one barrier; returns every
    ``(pid, id, outcome)`` they put."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes * threads)
    results = ctx.Queue()
    children = [
        ctx.Process(target=target, args=(str(db), ids, threads, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    outcomes = []
    try:
        for _ in range(processes * threads * len(ids)):
            outcomes.append(results.get(timeout=GUARD))
    finally:
        for child in children:
            child.join(GUARD)
            if child.is_alive():
                child.kill()
                child.join()
    assert [child.exitcode for child in children] == [0] * processes
    return outcomes


# -- starts of one business key --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_racing_starts_from_threads_leave_one_unfinished_instance(tmp_path, kind):
    """Twelve threads start the same id at once, for several ids: one start
    each wins, every other raises AlreadyRunningError naming the id, and
    the id has one run, unfinished. Once it finished, a new race again
    makes exactly one new run."""
    with Hephaestus(make_storage(kind, tmp_path)) as app:
        ids = [HoldFlow.unique.build_id(f"k{n}") for n in range(6)]
        for iid in ids:
            outcomes = race(12, lambda _, iid=iid: app.start_instance(HoldFlow, {}, id=iid))
            assert_one_start(app, iid, outcomes, runs=1)
        for iid in ids:
            app.wait(iid, timeout=GUARD)
            app.resume(iid, "received")
        completed(app, ids)
        for iid in ids:
            outcomes = race(12, lambda _, iid=iid: app.start_instance(HoldFlow, {}, id=iid))
            assert_one_start(app, iid, outcomes, runs=2)


def assert_one_start(app: Hephaestus, iid: str, outcomes: list[tuple[str, Any]], runs: int) -> None:
    """Exactly one of ``outcomes`` started ``iid``, the others raised
    AlreadyRunningError naming it, and ``iid`` has ``runs`` runs, only the
    newest unfinished."""
    started = [value for how, value in outcomes if how == "returned"]
    refused = [value for how, value in outcomes if how == "raised"]
    assert started == [iid], outcomes
    assert all(isinstance(error, AlreadyRunningError) for error in refused), refused
    assert all(iid in str(error) for error in refused), refused
    statuses = [instance.status.value for instance in app.list(id=iid)]
    assert len(statuses) == runs, statuses
    assert statuses[0] in _UNFINISHED
    assert all(status == "completed" for status in statuses[1:]), statuses


def shared_database(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    """A database processes can share: an SQLite file, or a Postgres database
    with an empty schema."""
    if kind == "postgres":
        fresh_postgres(request.getfixturevalue("postgres_url"))
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "races.db")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_racing_starts_from_processes_leave_one_unfinished_instance(request, tmp_path, kind):
    """Three processes with three threads each, every one with the same
    database, start the same id at once, for several ids: one start in all
    wins, every other raises AlreadyRunningError, one run is left, unfinished."""
    db = shared_database(request, kind, tmp_path)
    with Hephaestus(db):  # the schema, before the children race for it
        pass
    ids = [HoldFlow.unique.build_id(f"p{n}") for n in range(4)]
    outcomes = spawn_racers(race_starts, db, ids, processes=3, threads=3)
    by_id: dict[str, Counter[str]] = {}
    for _, iid, outcome in outcomes:
        by_id.setdefault(iid, Counter())[outcome] += 1
    assert by_id == {iid: Counter({"started": 1, "already running": 8}) for iid in ids}
    with Hephaestus(db) as app:
        for iid in ids:
            runs = app.list(id=iid)
            assert len(runs) == 1, runs
            instance = app.wait(iid, timeout=GUARD)
            assert instance.status.value == "waiting"
            assert instance.waiting_steps == {Hold}


# -- a resume racing a timer or another resume -----------------------------------------------


#: Rounds of the resume-versus-timer race, twelve instances each.
ROUNDS = 8


def test_resume_racing_a_timer_has_exactly_one_winner(tmp_path, gates):
    """Instances wait at Nap (a 60 s timer that a ``"poked"`` resume may
    end first); half of them also have a step running, so their run is held
    in memory when the timer fires. A thread per instance resumes it while
    another moves the clock past the timer, over several rounds. Each
    instance takes one path: a resume that returned means the history says
    ``poked`` and only AfterPoke ran; a resume that raised
    InvalidTransitionError means the timer won and only AfterTimeout ran."""
    clock = VirtualClock()
    rng = random.Random(7)
    log = tmp_path / "effects.log"
    wins: Counter[str] = Counter()
    with Hephaestus(tmp_path / "races.db", clock=clock, concurrency=16) as app:
        for round_ in range(ROUNDS):
            ids, held = [], []
            for n in range(12):
                context: dict[str, Any] = {"log": str(log)}
                if n % 2:
                    context["gate"] = f"{tmp_path.name}-timer-{round_}-{n}"
                    held.append(context["gate"])
                    gates.append(context["gate"])
                iid = NapFlow.unique.build_id(f"r{round_}n{n}")
                ids.append(app.start_instance(NapFlow, context, id=iid))
            for iid in ids:
                eventually(lambda iid=iid: Nap in app.get(iid).waiting_steps, f"{iid} to nap")
            for name in held:
                eventually(gate(f"{name}:entered").is_set, f"{name} to be entered")

            # Resumes start a little late at random, so the timer wins some.
            jitter = [rng.uniform(0, 0.004) for _ in ids]

            def contender(i: int, ids: list[str] = ids, jitter: list[float] = jitter) -> None:
                if i == len(ids):
                    clock.advance(60)
                else:
                    time.sleep(jitter[i])
                    app.resume(ids[i], "poked")

            outcomes = race(len(ids) + 1, contender)
            for name in held:
                gate(name).set()
            assert outcomes[-1] == ("returned", None)
            completed(app, ids)
            counts = log_counts(log)
            for iid, (how, value) in zip(ids, outcomes[:-1], strict=True):
                won = how == "returned"
                if not won:
                    assert isinstance(value, InvalidTransitionError), (iid, value)
                wins["resume" if won else "timer"] += 1
                history = app.get(iid).execution_history
                naps = [entry.event for entry in history if entry.step_ref is Nap]
                assert naps == (["poked"] if won else ["timeout"]), (iid, how, value, naps)
                assert set(history_counts(app, iid).values()) == {1}, history
                # No crash here: the path taken runs once, the other never.
                ran = {key: n for (of, key), n in counts.items() if of == iid}
                after = (AfterPoke, AfterTimeout) if won else (AfterTimeout, AfterPoke)
                assert ran.get(step_key(after[0])) == 1, (iid, how, ran)
                assert step_key(after[1]) not in ran, (iid, how, ran)
                assert ran.get(step_key(Close)) == 1, (iid, how, ran)
    assert sum(wins.values()) == 12 * ROUNDS, wins


def test_racing_resumes_from_threads_have_exactly_one_winner(tmp_path):
    """Six threads resume each of eight waiting instances at once (48 at a
    time): one resume per instance returns, the others raise
    InvalidTransitionError; the step after it runs once."""
    log = tmp_path / "effects.log"
    with Hephaestus(tmp_path / "races.db") as app:
        ids = [
            app.start_instance(HoldFlow, {"log": str(log)}, id=HoldFlow.unique.build_id(f"h{n}"))
            for n in range(8)
        ]
        for iid in ids:
            assert app.wait(iid, timeout=GUARD).status.value == "waiting"
        racers = [iid for iid in ids for _ in range(6)]
        outcomes = race(len(racers), lambda i: app.resume(racers[i], "received"))
        completed(app, ids)
        assert_one_resume_each(
            app,
            log,
            [
                (iid, "resumed" if how == "returned" else value)
                for iid, (how, value) in zip(racers, outcomes, strict=True)
            ],
        )


def assert_one_resume_each(app: Hephaestus, log: Path, outcomes: list[tuple[str, Any]]) -> None:
    """Each id of ``outcomes`` (``(id, "resumed" | exception | outcome
    name)``) was resumed exactly once, every other attempt lost with
    InvalidTransitionError, its history has one Hold and one Released
    entry, and Released ran once."""
    counts = log_counts(log)
    winners: Counter[str] = Counter()
    for iid, outcome in outcomes:
        if outcome == "resumed":
            winners[iid] += 1
        else:
            assert outcome == "invalid" or isinstance(outcome, InvalidTransitionError), outcome
    ids = {iid for iid, _ in outcomes}
    assert winners == Counter({iid: 1 for iid in ids}), winners
    for iid in ids:
        assert history_counts(app, iid) == Counter({Hold: 1, Released: 1, Done: 1})
        assert counts[iid, step_key(Released)] == 1, counts


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_racing_resumes_from_processes_have_exactly_one_winner(request, tmp_path, kind):
    """Three processes with two threads each resume the same waiting
    instances at once: one resume per instance wins, in whichever process;
    every other raises InvalidTransitionError."""
    db, log = shared_database(request, kind, tmp_path), tmp_path / "effects.log"
    with Hephaestus(db) as app:
        ids = [
            app.start_instance(HoldFlow, {"log": str(log)}, id=HoldFlow.unique.build_id(f"q{n}"))
            for n in range(4)
        ]
        for iid in ids:
            assert app.wait(iid, timeout=GUARD).status.value == "waiting"
    outcomes = spawn_racers(race_resumes, db, ids, processes=3, threads=2)
    with Hephaestus(db) as app:  # drives what the children left runnable
        completed(app, ids)
        assert_one_resume_each(app, log, [(iid, outcome) for _, iid, outcome in outcomes])


def test_resumes_while_other_branches_commit_run_each_step_once(tmp_path):
    """Instances wait at Hold while three chains of quick steps beside it
    keep completing and committing; each is resumed at a random moment of
    that. No process dies, so every step runs exactly once, every history
    has one entry per step, and every run can still be loaded."""
    rng = random.Random(3)
    log = tmp_path / "effects.log"
    steps = set(BusyFlow.graph.steps)
    with Hephaestus(tmp_path / "races.db", concurrency=8) as app:
        ids = []
        for round_ in range(10):
            context = {"log": str(log), "work": [0.0, 0.003]}
            batch = [
                app.start_instance(BusyFlow, context, id=BusyFlow.unique.build_id(f"r{round_}n{n}"))
                for n in range(8)
            ]
            delays = [rng.uniform(0, 0.01) for _ in batch]

            def resume(i: int, batch: list[str] = batch, delays: list[float] = delays) -> None:
                eventually(lambda: Hold in app.get(batch[i]).waiting_steps, f"{batch[i]} to hold")
                time.sleep(delays[i])
                app.resume(batch[i], "received")

            outcomes = race(len(batch), resume)
            assert all(how == "returned" for how, _ in outcomes), outcomes
            ids += batch
        completed(app, ids)
        for iid in ids:
            counts = history_counts(app, iid)
            assert set(counts) == steps, (iid, counts)
            assert set(counts.values()) == {1}, (iid, counts)
    ran_twice = sorted(key for key, n in log_counts(log).items() if n != 1)
    assert not ran_twice, f"steps ran more than once with no crash: {ran_twice}"


# -- a cancel racing running steps -----------------------------------------------------------


def test_cancel_of_a_running_step_sticks(tmp_path, gates):
    """An instance is cancelled while its Gated step runs. The cancel
    returns the failed instance; when the step then returns, its result is
    discarded, nothing after it runs, and the instance stays cancelled, with
    the same history, in this app and in the next one on the database."""
    db, log = tmp_path / "races.db", tmp_path / "effects.log"
    name = f"{tmp_path.name}-cancel"
    gates.append(name)
    iid = ChainFlow.unique.build_id("c1")
    with Hephaestus(db) as app:
        app.start_instance(ChainFlow, {"log": str(log), "gate": name}, id=iid)
        eventually(gate(f"{name}:entered").is_set, "Gated to run")
        cancelled = app.cancel(iid, reason="racing")
        assert cancelled.status.value == "failed"
        assert cancelled.error == {"kind": "cancelled", "reason": "racing"}
        assert [e.step_ref for e in cancelled.execution_history] == [First]
        gate(name).set()
        eventually(lambda: log_counts(log)[iid, step_key(Gated)] == 1, "Gated to return")
        time.sleep(0.3)  # the scheduler has the step's result by now
        assert app.get(iid) == cancelled
        with pytest.raises(InvalidTransitionError):
            app.cancel(iid)
    with Hephaestus(db) as app:
        time.sleep(0.3)
        assert app.get(iid) == cancelled
    counts = log_counts(log)
    assert counts[iid, step_key(Second)] == 0
    assert counts[iid, step_key(Third)] == 0


@pytest.mark.parametrize("seed", [5, 17])
def test_cancels_at_random_moments_stick(tmp_path, seed):
    """Twenty instances run a chain of 5-30 ms steps; a thread per instance
    cancels it at a random moment. A cancel either returns the failed
    instance (and then nothing after the step running at that moment ran,
    and the instance stays exactly as the cancel returned it, in this app
    and the next), or raises InvalidTransitionError because the instance had
    completed already."""
    rng = random.Random(seed)
    db, log = tmp_path / "races.db", tmp_path / "effects.log"
    chain = [First, Gated, Second, Third]
    delays = [rng.uniform(0.0, 0.12) for _ in range(20)]
    context = {"log": str(log), "work": [0.005, 0.03]}
    with Hephaestus(db, concurrency=8) as app:
        ids = [
            app.start_instance(ChainFlow, context, id=ChainFlow.unique.build_id(f"x{n}"))
            for n in range(20)
        ]

        def cancel(i: int) -> Any:
            time.sleep(delays[i])
            return app.cancel(ids[i], reason=f"cancel {i}")

        outcomes = race(len(ids), cancel)
        eventually(
            lambda: not app.list(workflow=ChainFlow, status=_UNFINISHED), "every instance to end"
        )
        time.sleep(0.2)  # results of steps that were running come in
        finals = {iid: app.get(iid) for iid in ids}
    with Hephaestus(db) as app:
        time.sleep(0.2)
        assert {iid: app.get(iid) for iid in ids} == finals
    counts = log_counts(log)
    for i, (iid, (how, value)) in enumerate(zip(ids, outcomes, strict=True)):
        final = finals[iid]
        if how == "raised":
            assert isinstance(value, InvalidTransitionError), value
            assert final.status.value == "completed", (iid, final)
            continue
        assert value == final, f"{iid} changed after its cancel returned"
        assert final.error == {"kind": "cancelled", "reason": f"cancel {i}"}
        done = [entry.step_ref for entry in final.execution_history]
        assert done == chain[: len(done)], done
        # The step running at the cancel may have run (its result is
        # discarded); nothing after it may have started.
        for step in chain[len(done) + 1 :]:
            assert counts[iid, step_key(step)] == 0, (iid, step_key(step), done)
