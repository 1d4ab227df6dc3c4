"""The durable runtime, ``Hephaestus`` (CONTRACT §10): every operation and
guarantee, against both storages where it applies."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runtime_flows as rf
from hephaestus import (
    AlreadyRunningError,
    Hephaestus,
    Instance,
    InstanceNotFoundError,
    InvalidTransitionError,
    MemoryStorage,
    SQLiteStorage,
    Status,
    StorageError,
    Unique,
    current_execution,
    engine,
    step_key,
)
from hephaestus.runtime import app as app_module
from hephaestus.runtime.app import current_app
from hephaestus.runtime.scheduler import stale_timers
from hephaestus.runtime.storage import NewRun, Timer
from hephaestus.testing import VirtualClock
from pg_server import fresh_postgres

STORAGES = ["memory", "sqlite", "postgres"]


@pytest.fixture(autouse=True)
def _reset_flows() -> Iterator[None]:
    rf.CALLS.clear()
    rf.RELEASE.clear()
    rf.STARTED.clear()
    rf.FLAKY_SUCCEEDS_AT["attempt"] = 3
    rf.LINES.update(now=0, most=0)
    rf.SETTLEMENTS.clear()
    yield
    rf.RELEASE.set()


def make_storage(kind: str, tmp_path: Path) -> Any:
    return MemoryStorage() if kind == "memory" else SQLiteStorage(tmp_path / "h.db")


@pytest.fixture(params=STORAGES)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "postgres":
        return fresh_postgres(request.getfixturevalue("postgres_url"))
    return make_storage(request.param, tmp_path)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))


@pytest.fixture
def app(storage: Any, clock: VirtualClock) -> Iterator[Hephaestus]:
    with Hephaestus(storage, clock=clock) as app:
        yield app


def steps_of(instance: Any) -> list[str]:
    return [entry.step_ref.__name__ for entry in instance.execution_history]


def eventually(check: Any, timeout: float = 10.0) -> Any:
    """Polls ``check()`` until it returns something truthy (a hang guard, not
    a speed limit)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; last value {value!r}")
        time.sleep(0.005)


# -- construction and storage URLs ------------------------------------------------------------


def test_urls_and_paths_pick_the_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEPHAESTUS_DATABASE_URL", raising=False)
    cases = {
        "memory://": MemoryStorage,
        "sqlite:///relative.db": SQLiteStorage,
        f"sqlite:///{tmp_path}/absolute.db": SQLiteStorage,
        str(tmp_path / "plain.db"): SQLiteStorage,
    }
    for url, kind in cases.items():
        with Hephaestus(url) as app:
            assert isinstance(app.storage, kind)
    assert (tmp_path / "relative.db").exists()
    assert (tmp_path / "absolute.db").exists()
    assert (tmp_path / "plain.db").exists()
    with Hephaestus() as app:
        assert isinstance(app.storage, SQLiteStorage)
    assert (tmp_path / "hephaestus.db").exists(), "the default is ./hephaestus.db"
    monkeypatch.setenv("HEPHAESTUS_DATABASE_URL", "sqlite:///from-env.db")
    with Hephaestus():
        pass
    assert (tmp_path / "from-env.db").exists()


def test_an_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"'mysql'.*sqlite:///.*memory://.*postgresql://"):
        Hephaestus("mysql://db/orders")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"concurrency": 0}, ValueError),
        ({"concurrency": "8"}, TypeError),
        ({"concurrency": True}, TypeError),
        ({"lease": 0}, ValueError),
        ({"lease": float("nan")}, ValueError),
        ({"lease": "30"}, TypeError),
        ({"storage": 42}, TypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    kwargs.setdefault("storage", "memory://")
    with pytest.raises(error):
        Hephaestus(**kwargs)


def test_a_database_of_a_newer_schema_is_refused_and_not_modified(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with Hephaestus(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(StorageError, match="newer"):
        Hephaestus(path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_ours_is_refused_and_not_modified(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a database\n" * 10)
    before = path.read_bytes()
    with pytest.raises(StorageError, match="not an SQLite database"):
        Hephaestus(path)
    assert path.read_bytes() == before


# -- running workflows ------------------------------------------------------------------------


def test_an_instance_runs_to_its_wait_then_to_completion(app: Hephaestus) -> None:
    iid = app.start_instance(rf.OrderFlow, {"items": [1, 2]}, id="orderid::abc")
    assert iid == "orderid::abc"
    waiting = app.wait(iid, timeout=10)
    assert waiting.status is Status.WAITING
    assert waiting.waiting_steps == {rf.AwaitPayment}
    assert waiting.context.steps["charge"] == {"amount": 2}
    app.resume(iid, "received")
    done = app.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    assert steps_of(done)[0] == "Validate"
    assert sorted(steps_of(done)[1:3]) == ["Charge", "Reserve"]
    assert steps_of(done)[3:] == ["Ship", "AwaitPayment", "Done"]
    assert app.get(iid) == done


def test_run_starts_and_waits(app: Hephaestus) -> None:
    done = app.run(rf.OrderFlow, {"items": []}, id="orderid::empty", timeout=10)
    assert done.status is Status.COMPLETED
    assert steps_of(done) == ["Validate", "Reject", "Done"]


def test_a_context_that_cannot_be_stored_writes_nothing(app: Hephaestus) -> None:
    import decimal

    with pytest.raises(TypeError, match=r"context\['price'\].*decimal.Decimal"):
        app.start_instance(rf.QuickFlow, {"price": decimal.Decimal("1")}, id="quick::a")
    assert app.list() == []


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((int,), {"id": "quick::a"}, TypeError),
        ((rf.QuickFlow,), {"id": 42}, TypeError),
        ((rf.QuickFlow,), {"id": ""}, ValueError),
        ((rf.QuickFlow, [1]), {"id": "quick::a"}, TypeError),
        ((rf.QuickFlow,), {"id": "quick::a", "version": 7}, ValueError),
    ],
)
def test_bad_starts_are_refused(
    app: Hephaestus, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        app.start_instance(*args, **kwargs)
    assert app.list() == []


def test_unknown_ids_raise_instance_not_found(app: Hephaestus) -> None:
    for call in (
        lambda: app.get("quick::nope"),
        lambda: app.wait("quick::nope", timeout=1),
        lambda: app.resume("quick::nope", "received"),
        lambda: app.cancel("quick::nope"),
    ):
        with pytest.raises(InstanceNotFoundError, match="quick::nope"):
            call()


def test_telemetry_metadata_is_kept(app: Hephaestus) -> None:
    done = app.run(rf.QuickFlow, id="quick::t", telemetry_metadata={"trace": "abc"}, timeout=10)
    assert done.telemetry_metadata == {"trace": "abc"}


# -- resume ------------------------------------------------------------------------------------


def test_resume_needs_a_step_when_several_wait_for_the_event(app: Hephaestus) -> None:
    iid = app.start_instance(rf.TwoWaitsFlow, id="twowaits::a")
    assert app.wait(iid, timeout=10).waiting_steps == {rf.LeftWait, rf.RightWait}
    with pytest.raises(InvalidTransitionError, match=r"LeftWait, RightWait.*step="):
        app.resume(iid, "received")
    app.resume(iid, "received", step=rf.LeftWait)
    assert eventually(lambda: app.get(iid).waiting_steps == {rf.RightWait})
    app.resume(iid, "received")
    assert app.wait(iid, timeout=10).status is Status.COMPLETED


def test_resume_with_nothing_waiting_for_the_event_is_refused(app: Hephaestus) -> None:
    iid = app.start_instance(rf.OrderFlow, {"items": [1]}, id="orderid::r")
    app.wait(iid, timeout=10)
    with pytest.raises(InvalidTransitionError, match="'paid'"):
        app.resume(iid, "paid")
    with pytest.raises(InvalidTransitionError, match="not waiting"):
        app.resume(iid, "received", step=rf.Ship)
    app.resume(iid, "received")
    app.wait(iid, timeout=10)
    with pytest.raises(InvalidTransitionError, match="completed"):
        app.resume(iid, "received")


def test_an_async_step_may_wait_and_be_resumed(app: Hephaestus) -> None:
    iid = app.start_instance(rf.AsyncPauseFlow, id="asyncpause::a")
    assert app.wait(iid, timeout=10).waiting_steps == {rf.AsyncPause}
    app.resume(iid, "resumed")
    assert app.wait(iid, timeout=10).status is Status.COMPLETED


# -- uniqueness and runs -----------------------------------------------------------------------


def test_one_unfinished_instance_per_id_and_runs_kept(app: Hephaestus) -> None:
    iid = app.start_instance(rf.OrderFlow, {"items": [1]}, id="orderid::k")
    with pytest.raises(AlreadyRunningError, match="orderid::k"):
        app.start_instance(rf.OrderFlow, {"items": [1]}, id="orderid::k")
    app.wait(iid, timeout=10)
    app.resume(iid, "received")
    first = app.wait(iid, timeout=10)
    assert first.status is Status.COMPLETED
    app.start_instance(rf.OrderFlow, {"items": []}, id="orderid::k")
    second = app.wait(iid, timeout=10)
    assert steps_of(second) == ["Validate", "Reject", "Done"]
    runs = app.list(id=iid)
    assert [steps_of(r)[-2] for r in runs] == ["Reject", "AwaitPayment"], "newest first"
    assert app.get(iid) == second


def test_scope_version_allows_one_per_version(app: Hephaestus) -> None:
    app.start_instance(rf.VersionedQuick, id="quick::v")
    with pytest.raises(AlreadyRunningError):
        app.start_instance(rf.VersionedQuick, id="quick::v")


def test_scope_global_spans_workflows(app: Hephaestus) -> None:
    rf.RELEASE.clear()
    app.start_instance(rf.GlobalA, id="shared::one")
    with pytest.raises(AlreadyRunningError):
        app.start_instance(rf.GlobalB, id="shared::one")


def test_scope_workflow_is_per_workflow(app: Hephaestus) -> None:
    app.start_instance(rf.BlockerFlow, id="blocker::x")
    app.start_instance(rf.QuickFlow, id="blocker::x")  # another workflow, same id: allowed
    rf.RELEASE.set()


def test_scope_none_ids_get_a_random_suffix(app: Hephaestus) -> None:
    first = rf.Loose.start("abc")
    second = rf.Loose.start("abc")
    assert first != second
    for iid in (first, second):
        assert iid.startswith("loose::abc::")
        assert Unique("loose", scope="none").parse_id(iid) == "abc"
        assert app.wait(iid, timeout=10).status is Status.COMPLETED
    assert len(rf.Loose.list()) == 2
    with pytest.raises(TypeError, match="scope 'none'"):
        rf.Loose.get("abc")


# -- the facade and the current app ------------------------------------------------------------


def test_the_facade_acts_on_its_own_workflow_in_the_current_app(app: Hephaestus) -> None:
    assert current_app() is app
    iid = rf.OrderFlow.start("abc123", {"items": [1, 2]})
    assert iid == "orderid::abc123"
    assert app.wait(iid, timeout=10).status is Status.WAITING
    rf.OrderFlow.resume("abc123", "received")
    assert app.wait(iid, timeout=10).status is Status.COMPLETED
    assert rf.OrderFlow.get("abc123").status is Status.COMPLETED
    assert [i.id for i in rf.OrderFlow.list(status="completed")] == [iid]
    rf.OrderFlow.start("def456", {"items": [1]})
    app.wait("orderid::def456", timeout=10)
    cancelled = rf.OrderFlow.cancel("def456", reason="customer asked")
    assert cancelled.error == {"kind": "cancelled", "reason": "customer asked"}
    with pytest.raises(InstanceNotFoundError):
        rf.QuickFlow.get("abc123")


def test_apps_nest_and_the_innermost_is_current(tmp_path: Path) -> None:
    with Hephaestus("memory://") as outer:
        with Hephaestus("memory://") as inner:
            assert current_app() is inner
        assert current_app() is outer


# -- execution, retries, timeouts ----------------------------------------------------------------


def test_current_execution_outside_a_step_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="inside a step"):
        current_execution()


def test_retries_follow_the_policy_durably(app: Hephaestus, clock: VirtualClock) -> None:
    iid = app.start_instance(rf.FlakyFlow, id="flaky::a")
    storage = app.storage
    run_id = storage.newest(iid).run_id
    due_times = []
    for attempt in (1, 2):
        stored = eventually(
            lambda a=attempt: (s := storage.load(run_id)) and len(s.attempts) == a and s
        )
        (timer,) = stored.timers
        assert timer.kind == "retry"
        assert timer.attempt == attempt + 1
        due_times.append(timer.due - stored.attempts[-1].finished)
        clock.advance(timer.due - clock.now())
    assert due_times == [rf.Flaky.retry.delay(1), rf.Flaky.retry.delay(2)] == [2.0, 4.0]
    done = app.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    attempts = [a for (step, a, _) in rf.CALLS if step == "Flaky"]
    assert attempts == [1, 2, 3]
    keys = {key for (step, _, key) in rf.CALLS if step == "Flaky"}
    assert len(keys) == 1, "one idempotency key for every attempt"
    failed = storage.load(run_id).attempts
    assert [(a.attempt, a.error_type, a.error_message) for a in failed] == [
        (1, "builtins.RuntimeError", "attempt 1 failed"),
        (2, "builtins.RuntimeError", "attempt 2 failed"),
    ]


def test_retries_that_run_out_fail_the_instance(app: Hephaestus, clock: VirtualClock) -> None:
    rf.FLAKY_SUCCEEDS_AT["attempt"] = 99
    iid = app.start_instance(rf.FlakyFlow, id="flaky::b")
    run_id = app.storage.newest(iid).run_id
    for attempt in (1, 2, 3):
        stored = eventually(lambda a=attempt: len(app.storage.load(run_id).attempts) == a)
        del stored
        clock.advance(10)
    failed = app.wait(iid, timeout=10)
    assert failed.error == {
        "kind": "exception",
        "step": "flaky",
        "type": "builtins.RuntimeError",
        "message": "attempt 4 failed",
        "attempts": 4,
    }


def test_a_step_without_a_retry_policy_fails_at_once(app: Hephaestus) -> None:
    failed = app.run(rf.BrokenFlow, id="broken::a", timeout=10)
    assert failed.error == {
        "kind": "exception",
        "step": "broken",
        "type": "builtins.ValueError",
        "message": "card declined",
        "attempts": 1,
    }


def test_an_error_result_fails_without_retries(app: Hephaestus) -> None:
    failed = app.run(rf.RefuseFlow, id="refuse::a", timeout=10)
    assert failed.error == {"kind": "error", "step": "refuse", "reason": "out of stock"}
    assert [c[0] for c in rf.CALLS] == ["Refuse"]


def test_a_def_step_that_runs_over_its_timeout_fails(app: Hephaestus) -> None:
    failed = app.run(rf.SlowFlow, id="slow::a", timeout=10)
    assert failed.error == {"kind": "timeout", "step": "slow", "timeout": 0.2, "attempts": 1}


def test_an_async_step_that_runs_over_is_cancelled_and_retried(
    app: Hephaestus, clock: VirtualClock
) -> None:
    iid = app.start_instance(rf.SlowAsyncFlow, id="slowasync::a")
    run_id = app.storage.newest(iid).run_id
    eventually(lambda: app.storage.load(run_id).timers)
    clock.advance(1)
    failed = app.wait(iid, timeout=10)
    assert failed.error == {"kind": "timeout", "step": "slow_async", "timeout": 0.2, "attempts": 2}


# -- timers ------------------------------------------------------------------------------------


def test_a_thirty_day_wait_fires_when_the_clock_says(app: Hephaestus, clock: VirtualClock) -> None:
    iid = app.start_instance(rf.NapFlow, id="nap::a")
    waiting = app.wait(iid, timeout=10)
    assert waiting.waiting_steps == {rf.Nap}
    clock.advance(29 * 86400)
    time.sleep(0.05)
    assert app.get(iid).status is Status.WAITING
    clock.advance(86400)
    done = app.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    nap = done.execution_history[0]
    assert (nap.step_ref, nap.event) == (rf.Nap, "timeout")
    assert nap.timestamp == clock.datetime()


def test_a_deferred_choice_takes_the_event_and_drops_the_deadline(
    app: Hephaestus, clock: VirtualClock
) -> None:
    iid = app.start_instance(rf.DeadlineFlow, id="deadline::paid")
    waiting = app.wait(iid, timeout=10)
    assert waiting.waiting_steps == {rf.AwaitPayment, rf.PayDeadline}
    run_id = app.storage.newest(iid).run_id
    assert [t.step for t in app.storage.load(run_id).timers] == ["pay_deadline"]
    app.resume(iid, "received", step=rf.AwaitPayment)
    done = app.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    assert steps_of(done) == ["Quick", "AwaitPayment", "Settle", "Done"]
    assert done.skipped_steps == {rf.PayDeadline}
    assert app.storage.load(run_id).timers == []
    clock.advance(2 * 86400)
    assert app.get(iid) == done, "the dropped deadline never fires"


def test_a_deferred_choice_takes_the_deadline_when_no_event_comes(
    app: Hephaestus, clock: VirtualClock
) -> None:
    iid = app.start_instance(rf.DeadlineFlow, id="deadline::late")
    app.wait(iid, timeout=10)
    clock.advance(86400)
    done = app.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    assert steps_of(done) == ["Quick", "PayDeadline", "Settle", "Done"]
    assert done.skipped_steps == {rf.AwaitPayment}
    assert [c[0] for c in rf.CALLS].count("Settle") == 1
    with pytest.raises(InvalidTransitionError):
        app.resume(iid, "received", step=rf.AwaitPayment)


def test_a_first_wins_join_discards_the_result_of_a_branch_still_running(
    app: Hephaestus,
) -> None:
    iid = app.start_instance(rf.SprintFlow, id="sprint::a")
    done = app.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    assert steps_of(done) == ["Quick", "Sprint", "FirstBack", "Done"]
    assert done.skipped_steps == {rf.Blocker}
    rf.RELEASE.set()  # Blocker returns now; its result must change nothing
    eventually(lambda: app._scheduler is None or app._scheduler.running == 0)
    assert app.get(iid) == done


def test_a_resume_that_withdraws_a_timer_drops_it_and_the_run_rests(
    app: Hephaestus, clock: VirtualClock
) -> None:
    iid = app.start_instance(rf.DeadlineThenShipFlow, id="deadlineship::a")
    app.wait(iid, timeout=10)
    app.resume(iid, "received", step=rf.AwaitPayment)
    waiting = eventually(lambda: (i := app.get(iid)).waiting_steps == {rf.AwaitShipping} and i)
    assert waiting.skipped_steps == {rf.PayDeadline}
    run_id = app.storage.newest(iid).run_id
    assert app.storage.load(run_id).timers == [], "the withdrawn deadline's timer is gone"
    clock.advance(2 * 86400)
    row = eventually(lambda: (r := app.storage.newest(iid)).status == "waiting" and r)
    assert not row.runnable, "a waiting run is not claimed again and again"
    assert [i.id for i in app.list(status="waiting")] == [iid]
    assert app.get(iid) == waiting


def test_stale_timers_are_the_ones_that_hold_nothing_back() -> None:
    instance = engine.advance(Instance.new(rf.DeadlineFlow, 1, {}, "deadline::s"))
    instance = engine.complete_step(instance, rf.Quick, "ok")
    instance = engine.activate_transitions(instance, rf.Quick, "ok")
    instance = instance.wait_step(rf.AwaitPayment).wait_step(rf.PayDeadline)
    keys = {step_key(s): s for s in engine.graph_of(instance).steps}
    timers = [
        Timer("pay_deadline", "wait", 1.0),
        Timer("quick", "retry", 1.0, 2),
        Timer("gone", "wait", 1.0),
    ]
    assert stale_timers(instance, timers, keys) == ["quick", "gone"]
    paid = engine.resume_step(instance, rf.AwaitPayment, "received")
    assert stale_timers(paid, timers, keys) == ["pay_deadline", "quick", "gone"]


def test_a_repeat_between_runs_does_not_hold_a_worker_slot(tmp_path: Path) -> None:
    clock = VirtualClock(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    with Hephaestus(SQLiteStorage(tmp_path / "h.db"), clock=clock, concurrency=1) as app:
        for k in range(3):
            app.start_instance(rf.SettleFlow, id=f"settle::p{k}")
        eventually(lambda: [c[0] for c in rf.CALLS].count("PollSettlement") == 3)
        quick = app.run(rf.QuickFlow, id="quick::after", timeout=10)
        assert quick.status is Status.COMPLETED, "the polling runs let it through"


def test_a_withdrawn_step_loses_its_pending_retry(app: Hephaestus, clock: VirtualClock) -> None:
    iid = app.start_instance(rf.FlakyRaceFlow, id="flakyrace::a")
    run_id = app.storage.newest(iid).run_id
    timers = eventually(lambda: app.storage.load(run_id).timers)
    assert sorted(t.kind for t in timers) == ["retry"]
    # (The other branch's wait may be committed in a later round.)
    eventually(lambda: rf.AwaitPayment in app.get(iid).waiting_steps)
    app.resume(iid, "received", step=rf.AwaitPayment)
    done = app.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    assert done.skipped_steps == {rf.Flaky}
    assert app.storage.load(run_id).timers == [], "the retry of the withdrawn step is gone"
    clock.advance(60)
    assert [c[0] for c in rf.CALLS].count("Flaky") == 1, "it never ran again"


def test_terminate_discards_the_result_of_a_step_still_running(app: Hephaestus) -> None:
    iid = app.start_instance(rf.StopFlow, id="stop::a")
    done = app.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    assert steps_of(done) == ["Quick", "Gatekeeper", "Terminate"]
    assert done.skipped_steps == {rf.Blocker}
    rf.RELEASE.set()  # Blocker returns now; its result must change nothing
    time.sleep(0.1)
    assert app.get(iid) == done
    assert len(app.get(iid).execution_history) == 3


def test_a_for_each_of_a_thousand_items_runs_eight_at_once(
    app: Hephaestus, clock: VirtualClock
) -> None:
    lines = [f"sku{i}" for i in range(1000)]
    lines[500] = "flaky"
    iid = app.start_instance(rf.LinesFlow, {"lines": lines}, id="lines::big")
    # The flaky item waits for its retry's backoff (5 s on the virtual clock).
    eventually(lambda: ("ReserveLine", 1, "") and len(rf.CALLS) >= 1000, timeout=60)
    clock.advance(5)
    done = app.wait(iid, timeout=60)
    assert done.status is Status.COMPLETED, done.error
    runs = [e for e in done.execution_history if e.step_ref is rf.ReserveLine]
    assert sorted(e.iteration for e in runs) == list(range(1000)), "each item once"
    assert done.context.steps["reserve_line"] == [{"sku": sku} for sku in lines]
    assert 1 < rf.LINES["most"] <= 8
    keys = [key for name, _, key in rf.CALLS if name == "ReserveLine"]
    assert len(keys) == 1001, "each item once, the flaky one twice"
    assert len(set(keys)) == 1000, "one key per item, kept by its retry"
    flaky = [(attempt, key) for name, attempt, key in rf.CALLS if key.endswith("#500")]
    assert [attempt for attempt, _ in flaky] == [1, 2]


def test_a_repeat_with_every_polls_on_a_durable_timer(app: Hephaestus, clock: VirtualClock) -> None:
    rf.SETTLEMENTS.extend(["pending", "pending", "settled"])
    iid = app.start_instance(rf.SettleFlow, id="settle::a")
    run_id = app.storage.newest(iid).run_id
    for run in (1, 2):
        eventually(lambda run=run: [c[0] for c in rf.CALLS].count("PollSettlement") == run)
        timers = eventually(lambda: app.storage.load(run_id).timers)
        assert [(t.step, t.kind) for t in timers] == [(f"poll_settlement#{run}", "repeat")]
        assert timers[0].due == clock.now() + 600
        clock.advance(599)
        time.sleep(0.05)
        assert [c[0] for c in rf.CALLS].count("PollSettlement") == run, "not before it is due"
        clock.advance(1)
    done = app.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    polls = [e for e in done.execution_history if e.step_ref is rf.PollSettlement]
    assert [(e.event, e.iteration) for e in polls] == [
        ("pending", 0),
        ("pending", 1),
        ("settled", 2),
    ]
    assert done.context.steps["poll_settlement"] == {"run": 2}


def test_a_repeat_that_never_settles_fails_after_max_iterations(
    app: Hephaestus, clock: VirtualClock
) -> None:
    iid = app.start_instance(rf.SettleFlow, id="settle::never")
    for _ in range(3):
        eventually(lambda: app.storage.load(app.storage.newest(iid).run_id).timers)
        clock.advance(600)
    failed = app.wait(iid, timeout=10)
    assert failed.status is Status.FAILED
    assert failed.error == {
        "kind": "max_iterations",
        "step": "poll_settlement",
        "max_iterations": 4,
        "iteration": 3,
    }


# -- explain --------------------------------------------------------------------------------


def reasons(app: Hephaestus, iid: str) -> list[tuple[str, str | None]]:
    return [(r.kind, r.step) for r in app.explain(iid).reasons]


def test_explain_names_the_events_and_timers_an_instance_waits_for(
    app: Hephaestus, clock: VirtualClock
) -> None:
    iid = app.start_instance(rf.DeadlineFlow, id="deadline::why")
    app.wait(iid, timeout=10)
    why = app.explain(iid)
    assert why.status == "waiting"
    assert reasons(app, iid) == [("event", "await_payment"), ("timer", "pay_deadline")]
    event, timer = why.reasons
    assert event.facts == {"events": ["received"]}
    assert "app.resume('deadline::why', 'received')" in event.text
    assert timer.facts["due"] == clock.datetime() + dt.timedelta(days=1)
    assert "2030-01-02 00:00:00 UTC (in 24.0 h)" in timer.text
    text = str(why)
    assert text.startswith("deadline::why (DeadlineFlow v1) is waiting:\n- AwaitPayment waits")
    app.resume(iid, "received", step=rf.AwaitPayment)
    app.wait(iid, timeout=10)
    assert reasons(app, iid) == [("finished", None)]
    assert str(app.explain(iid)).endswith("- it completed")


def test_explain_names_a_join_and_what_it_waits_for(app: Hephaestus) -> None:
    iid = app.start_instance(rf.TwoWaitsFlow, id="twowaits::why")
    app.wait(iid, timeout=10)
    app.resume(iid, "received", step=rf.LeftWait)
    eventually(lambda: ("join", "ship") in reasons(app, iid))
    join = next(r for r in app.explain(iid).reasons if r.kind == "join")
    assert join.facts == {"waiting_for": ["right_wait"], "done": ["left_wait"]}
    assert join.text == "join Ship waits for RightWait (LeftWait done)"


def test_explain_names_a_pending_retry_and_its_error(app: Hephaestus, clock: VirtualClock) -> None:
    iid = app.start_instance(rf.FlakyFlow, id="flaky::why")
    eventually(lambda: ("retry", "flaky") in reasons(app, iid))
    retry = app.explain(iid).reasons[0]
    assert retry.facts["attempt"] == 2
    assert retry.facts["error_type"] == "builtins.RuntimeError"
    assert "Flaky failed; its attempt 2 is due at" in retry.text


def test_explain_shows_the_progress_of_loops(app: Hephaestus, clock: VirtualClock) -> None:
    lines = [f"sku{i}" for i in range(20)]
    lines[7] = "flaky"
    iid = app.start_instance(rf.LinesFlow, {"lines": lines}, id="lines::why")
    eventually(lambda: "19 of 20 items done" in str(app.explain(iid)))
    why = app.explain(iid).reasons[0]
    assert why.kind == "for_each"
    assert why.facts["done"] == 19
    assert why.facts["retries"][7]["attempt"] == 2
    assert "item 7 failed, its attempt 2 is due at" in why.text
    clock.advance(5)
    app.wait(iid, timeout=10)

    rf.SETTLEMENTS.extend(["pending", "settled"])
    iid = app.start_instance(rf.SettleFlow, id="settle::why")
    eventually(lambda: "next run at" in str(app.explain(iid)))
    repeat = app.explain(iid).reasons[0]
    assert repeat.kind == "repeat"
    assert repeat.facts["iteration"] == 1
    assert repeat.facts["next_run"] == clock.datetime() + dt.timedelta(minutes=10)
    assert repeat.text.startswith("Repeat PollSettlement: run 2 of 4, next run at")


def test_explain_says_a_run_is_running_and_where(app: Hephaestus) -> None:
    iid = app.start_instance(rf.BlockerFlow, id="blocker::why")
    assert rf.STARTED.wait(10)
    running = app.explain(iid).reasons[0]
    assert (running.kind, running.step) == ("running", "blocker")
    assert "Blocker is running since" in running.text
    assert "in this app" in running.text
    rf.RELEASE.set()
    app.wait(iid, timeout=10)


def test_explain_refuses_an_unknown_id(app: Hephaestus) -> None:
    with pytest.raises(InstanceNotFoundError):
        app.explain("quick::nope")


def test_a_timer_that_fell_due_while_no_app_ran_fires_at_start(
    tmp_path: Path, clock: VirtualClock
) -> None:
    path = tmp_path / "h.db"
    with Hephaestus(path, clock=clock) as app:
        iid = app.start_instance(rf.NapFlow, id="nap::b")
        app.wait(iid, timeout=10)
    clock.advance(31 * 86400)
    with Hephaestus(path, clock=clock) as app:
        assert app.wait(iid, timeout=10).status is Status.COMPLETED


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_fails_the_instance_drops_its_timers_and_sticks(
    tmp_path: Path, clock: VirtualClock
) -> None:
    path = tmp_path / "h.db"
    with Hephaestus(path, clock=clock) as app:
        iid = app.start_instance(rf.NapFlow, id="nap::c")
        app.wait(iid, timeout=10)
        cancelled = app.cancel(iid, reason="customer asked")
        assert cancelled.status is Status.FAILED
        assert cancelled.error == {"kind": "cancelled", "reason": "customer asked"}
        assert app.storage.load(app.storage.newest(iid).run_id).timers == []
        with pytest.raises(InvalidTransitionError, match="failed"):
            app.cancel(iid)
    clock.advance(40 * 86400)
    with Hephaestus(path, clock=clock) as app:
        time.sleep(0.1)
        assert app.get(iid).error == {"kind": "cancelled", "reason": "customer asked"}


def test_cancelling_a_running_step_discards_its_result(app: Hephaestus) -> None:
    iid = app.start_instance(rf.BlockerFlow, id="blocker::c")
    assert rf.STARTED.wait(10)
    cancelled = app.cancel(iid, reason=None)
    rf.RELEASE.set()
    time.sleep(0.1)
    final = app.wait(iid, timeout=10)
    assert final.status is Status.FAILED
    assert final.error == {"kind": "cancelled", "reason": None}
    assert final == cancelled
    assert steps_of(final) == []


def test_cancel_works_without_starting_workers(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with Hephaestus(path) as app:
        iid = app.start_instance(rf.OrderFlow, {"items": [1]}, id="orderid::w")
        app.wait(iid, timeout=10)
    reader = Hephaestus(path)
    try:
        assert reader.get(iid).status is Status.WAITING
        assert reader.cancel(iid).status is Status.FAILED
        assert reader._scheduler is None, "cancel and reads start no workers"
    finally:
        reader.close()


# -- lifetime ----------------------------------------------------------------------------------


def test_reads_never_start_workers(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with Hephaestus(path) as app:
        iid = app.start_instance(rf.QuickFlow, id="quick::r")
        app.wait(iid, timeout=10)
    reader = Hephaestus(path)
    try:
        reader.get(iid)
        reader.list()
        reader.wait(iid, timeout=1)
        assert reader._scheduler is None
    finally:
        reader.close()


def test_close_waits_for_running_steps_and_the_next_app_carries_on(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    app = Hephaestus(path)
    iid = app.start_instance(rf.BlockerFlow, id="blocker::g")
    assert rf.STARTED.wait(10)
    started = time.monotonic()
    app.close()  # the step blocks: close waits its grace period, then lets go
    assert time.monotonic() - started >= 1.0
    with pytest.raises(RuntimeError, match="closed"):
        app.get(iid)
    rf.RELEASE.set()
    with Hephaestus(path) as next_app:
        assert next_app.wait(iid, timeout=10).status is Status.COMPLETED


def test_a_closed_app_refuses_operations() -> None:
    app = Hephaestus("memory://")
    app.close()
    app.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        app.start_instance(rf.QuickFlow, id="quick::x")


def test_a_run_whose_workflow_is_not_loaded_is_left_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = MemoryStorage()
    storage.open()
    with Hephaestus(storage) as app:
        good = app.start_instance(rf.QuickFlow, id="quick::g")
        snapshot = app.get(good).to_bytes() if app.wait(good, timeout=10) else b""
        del snapshot
    foreign = NewRun(
        id="ghost::1",
        token="t",
        workflow="not_imported_anywhere:GhostFlow",
        version=1,
        unique_key=None,
        snapshot=b"\x00",
        created_at=0.0,
    )
    run_id = storage.create(foreign)
    with caplog.at_level(logging.WARNING, logger="hephaestus.runtime"), Hephaestus(storage):
        time.sleep(0.2)
        row = storage.newest("ghost::1")
    assert row is not None
    assert row.run_id == run_id
    assert row.status == "pending", "left untouched, not failed"
    assert row.lease_owner is None
    assert any("GhostFlow" in r.getMessage() for r in caplog.records)
    with Hephaestus(storage) as app:
        why = app.explain("ghost::1")
    assert [(r.kind, r.step) for r in why.reasons] == [("unloadable", None)]
    assert why.reasons[0].facts["workflow"] == "not_imported_anywhere:GhostFlow"
    assert "cannot be loaded in this process" in str(why)


# -- storage of long runs ------------------------------------------------------------------------


def test_a_long_run_is_stored_as_snapshot_and_journal(app: Hephaestus) -> None:
    done = app.run(rf.LongChain, id="chain::long", timeout=60)
    assert done.status is Status.COMPLETED
    assert len(done.execution_history) == 301
    stored = app.storage.load(app.storage.newest("chain::long").run_id)
    assert stored.snapshot_seq == stored.row.seq, "a finished run keeps a whole snapshot"
    assert app.get("chain::long") == done


# -- the async API --------------------------------------------------------------------------------


def test_the_async_api_inside_a_running_loop(storage: Any, clock: VirtualClock) -> None:
    async def main() -> None:
        with Hephaestus(storage, clock=clock) as app:
            iid = await app.start_instance_async(rf.OrderFlow, {"items": [1]}, id="orderid::as")
            assert (await app.wait_async(iid, timeout=10)).status is Status.WAITING
            await app.resume_async(iid, "received")
            done = await app.wait_async(iid, timeout=10)
            assert done.status is Status.COMPLETED
            assert (await app.get_async(iid)) == done
            assert [i.id for i in await app.list_async(status=Status.COMPLETED)] == [iid]
            other = await app.run_async(rf.QuickFlow, id="quick::as", timeout=10)
            assert other.status is Status.COMPLETED
            waiting = await app.start_instance_async(rf.OrderFlow, {"items": [1]}, id="orderid::c")
            await app.wait_async(waiting, timeout=10)
            assert (await app.cancel_async(waiting)).status is Status.FAILED

    asyncio.run(main())


def test_list_filters(app: Hephaestus) -> None:
    app.run(rf.QuickFlow, id="quick::1", timeout=10)
    app.start_instance(rf.OrderFlow, {"items": [1]}, id="orderid::1")
    app.wait("orderid::1", timeout=10)
    assert {i.id for i in app.list()} == {"quick::1", "orderid::1"}
    assert [i.id for i in app.list(workflow=rf.QuickFlow)] == ["quick::1"]
    assert [i.id for i in app.list(status="waiting")] == ["orderid::1"]
    assert [i.id for i in app.list(status=["waiting", Status.COMPLETED], limit=1)] == ["orderid::1"]
    assert [i.id for i in app.list(id="quick::1", version=1)] == ["quick::1"]
    with pytest.raises(ValueError, match="bogus"):
        app.list(status="bogus")
    with pytest.raises(ValueError, match="limit"):
        app.list(limit=-1)


def test_default_database_path_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEPHAESTUS_DATABASE_URL", raising=False)
    with Hephaestus() as app:
        app.run(rf.QuickFlow, id="quick::d", timeout=10)
    assert os.path.exists(tmp_path / "hephaestus.db")


# -- storage failures -----------------------------------------------------------------------------


class FailingStorage(MemoryStorage):
    """A memory storage whose commits of the change built on journal
    position ``at`` fail, ``failures`` times (a full disk)."""

    def __init__(self, at: int, failures: int) -> None:
        super().__init__()
        self.at = at
        self.failures = failures

    def commit(self, changes: Any) -> Any:
        if self.failures > 0 and any(c.expected_seq == self.at for c in changes):
            self.failures -= 1
            raise StorageError("database or disk is full")
        return super().commit(changes)


def test_a_failed_commit_starts_no_successor_and_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Journal position 1 is after the start: the change carrying Validate's
    # outcome fails twice.
    storage = FailingStorage(at=1, failures=2)
    storage.open()
    with Hephaestus(storage) as app:
        iid = app.start_instance(rf.OrderFlow, {"items": [1]}, id="orderid::f")
        waiting = app.wait(iid, timeout=30)
    assert waiting.status is Status.WAITING
    history = steps_of(waiting)
    assert sorted(history) == sorted(["Validate", "Charge", "Reserve", "Ship"])
    assert len(history) == len(set(history)), "one history entry per step"
    calls = [c[0] for c in rf.CALLS]
    assert calls.count("Validate") == 3, "run again until its outcome was stored"
    assert calls.index("Charge") > max(i for i, c in enumerate(calls) if c == "Validate"), (
        "no successor started before its predecessor's outcome was committed"
    )
    assert sum("cannot commit" in r.getMessage() for r in caplog.records) == 2


def test_an_idle_app_takes_up_at_once_a_run_another_app_gave_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process's commits reach an idle app through the storage's data
    # version, not after a lease period (an hour here).
    monkeypatch.setattr(app_module, "_GRACE", 0.1)
    path = tmp_path / "h.db"
    with Hephaestus(path, lease=3600) as idle:
        giver = Hephaestus(path, lease=3600)
        iid = giver.start_instance(rf.BlockerFlow, id="blocker::b1")
        assert rf.STARTED.wait(10)
        giver.close()  # a step that did not finish is given back
        rf.RELEASE.set()
        done = idle.wait(iid, timeout=10)
    # Whichever app claimed it first, the idle one finished it.
    assert done.status == "completed"


def test_a_failed_attempt_keeps_the_last_frames_of_its_traceback(tmp_path):
    """The instance's `error` stays as CONTRACT §10 gives it; each failed
    attempt, stored with the run, keeps a short traceback (what `hephaestus
    show` prints and `workflow.exception` carries)."""
    with Hephaestus(tmp_path / "h.db") as app:
        iid = app.start_instance(rf.BrokenFlow, id="broken::tb")
        failed = app.wait(iid, timeout=60)
        stored = app.storage.load(app.storage.newest(iid).run_id)
    assert failed.error == {
        "kind": "exception",
        "step": "broken",
        "type": "builtins.ValueError",
        "message": "card declined",
        "attempts": 1,
    }
    (attempt,) = stored.attempts
    assert attempt.traceback.startswith("Traceback (most recent call last):")
    assert "runtime_flows.py" in attempt.traceback
    assert attempt.traceback.rstrip().endswith("ValueError: card declined")
    assert len(attempt.traceback) <= 4100
