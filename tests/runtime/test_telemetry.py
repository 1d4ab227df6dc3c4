"""Telemetry (CONTRACT §11): attaching handlers, and every event the
runtime emits with its measurements and metadata, over runs with a fan-out,
a wait, a resume, a timer, a retry and a failure."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import runtime_flows as rf
from hephaestus import Hephaestus, MemoryStorage, Status, telemetry
from hephaestus.testing import VirtualClock

#: Per event: the measurement keys and the metadata keys it must carry.
TABLE: dict[str, tuple[set[str], set[str]]] = {
    "workflow.start": ({"system_time"}, {"initial_step", "context_keys", "runner"}),
    "workflow.stop": (
        {"duration", "step_count", "advance_count"},
        {"status", "completed_steps", "runner"},
    ),
    "workflow.exception": (
        {"duration"},
        {"status", "failed_step", "reason", "kind", "stacktrace", "runner"},
    ),
    "workflow.transition": (
        {"system_time", "targets_count"},
        {"from_step", "event", "targets", "fan_out"},
    ),
    "step.start": (
        {"system_time"},
        {"step", "step_key", "concurrent", "active_steps_count", "attempt"},
    ),
    "step.stop": (
        {"duration"},
        {
            "step",
            "step_key",
            "event",
            "has_context_updates",
            "has_metadata_updates",
            "transitions_to",
        },
    ),
    "step.exception": (
        {"duration"},
        {"step", "step_key", "kind", "reason", "stacktrace", "attempt", "will_retry"},
    ),
    "step.async": ({"duration"}, {"step", "step_key", "instance_status"}),
    "step.resume": (
        {"system_time", "wait_duration"},
        {"step", "step_key", "resume_event", "source"},
    ),
    "engine.advance": (
        {"duration", "active_steps_count", "completed_in_advance"},
        {"status_before", "status_after", "iteration"},
    ),
    "runner.init": ({"system_time"}, {"name", "runner", "storage", "pid"}),
}
INSTANCE_KEYS = {"instance_id", "workflow", "workflow_version"}
TAGS = {"tenant": "acme"}


@pytest.fixture
def seen() -> Iterator[list[tuple[str, dict[str, Any], dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    lock = threading.Lock()

    def handler(event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        with lock:
            events.append((event, dict(measurements), dict(metadata)))

    telemetry.attach("test-all", telemetry.EVENTS, handler)
    rf.CALLS.clear()
    rf.FLAKY_SUCCEEDS_AT["attempt"] = 2
    yield events
    telemetry.detach("test-all")


def eventually(check: Any, timeout: float = 10.0) -> Any:
    """Polls ``check()`` until it returns something truthy (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.005)
    return value


def of(seen: list[tuple[str, dict[str, Any], dict[str, Any]]], name: str) -> list[Any]:
    return [(m, md) for e, m, md in seen if e == name]


def test_every_event_carries_its_measurements_and_metadata(seen: list[Any]) -> None:
    clock = VirtualClock(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    with Hephaestus(MemoryStorage(), clock=clock) as app:
        order = app.start_instance(
            rf.OrderFlow, {"items": [1, 2]}, id="orderid::t", telemetry_metadata=TAGS
        )
        assert app.wait(order, timeout=10).status is Status.WAITING
        app.resume(order, "received")
        assert app.wait(order, timeout=10).status is Status.COMPLETED
        started = app.get(order).telemetry_start_time
        flaky = app.start_instance(rf.FlakyFlow, id="flaky::t", telemetry_metadata=TAGS)
        eventually(lambda: app.storage.load(app.storage.newest(flaky).run_id).timers)
        clock.advance(10)
        assert app.wait(flaky, timeout=10).status is Status.COMPLETED
        broken = app.run(rf.BrokenFlow, id="broken::t", timeout=10, telemetry_metadata=TAGS)
        assert broken.status is Status.FAILED
        nap = app.start_instance(rf.NapFlow, id="nap::t", telemetry_metadata=TAGS)
        app.wait(nap, timeout=10)
        clock.advance(31 * 86400)
        assert app.wait(nap, timeout=10).status is Status.COMPLETED
    names = {event for event, _, _ in seen}
    assert names == set(telemetry.EVENTS), set(telemetry.EVENTS) - names
    for event, measurements, metadata in seen:
        needed, described = TABLE[event]
        assert needed <= set(measurements), (event, measurements)
        assert described <= set(metadata), (event, metadata)
        if event != "runner.init":
            assert set(metadata) >= INSTANCE_KEYS, (event, metadata)
            assert metadata["tenant"] == "acme", (event, metadata)
    # A few values, event by event.
    [(_, start_meta)] = [
        (m, md) for m, md in of(seen, "workflow.start") if md["instance_id"] == "orderid::t"
    ]
    assert start_meta["initial_step"] is rf.Validate
    assert start_meta["context_keys"] == ["items"]
    fan_out = [md for _, md in of(seen, "workflow.transition") if md["fan_out"]]
    assert [(md["from_step"], md["targets"]) for md in fan_out] == [
        (rf.Validate, [rf.Charge, rf.Reserve])
    ]
    [(_, waited)] = of(seen, "step.async")[:1]
    assert waited["step"] is rf.AwaitPayment
    resumes = {md["source"]: md for _, md in of(seen, "step.resume")}
    assert resumes["external"]["resume_event"] == "received"
    assert resumes["timeout"]["step"] is rf.Nap
    # A timer's wait is its own duration (NapFlow waits 30 days).
    [nap_waited] = [m["wait_duration"] for m, md in of(seen, "step.resume") if md["step"] is rf.Nap]
    assert nap_waited == 30 * 86_400 * 10**9
    failures = [md for _, md in of(seen, "step.exception")]
    assert [(md["step_key"], md["attempt"], md["will_retry"]) for md in failures] == [
        ("flaky", 1, True),
        ("broken", 1, False),
    ]
    assert "RuntimeError: attempt 1 failed" in failures[0]["stacktrace"]
    [(_, crashed)] = of(seen, "workflow.exception")
    assert (crashed["failed_step"], crashed["kind"]) == ("broken", "exception")
    # The short traceback of the attempt that failed the instance.
    assert crashed["stacktrace"].startswith("Traceback (most recent call last):")
    assert 'raise ValueError("card declined")' in crashed["stacktrace"]
    assert crashed["stacktrace"].rstrip().endswith("ValueError: card declined")
    assert isinstance(started, int)
    assert 0 < started <= time.monotonic_ns()
    stops = {md["instance_id"]: (m, md) for m, md in of(seen, "workflow.stop")}
    measurements, metadata = stops["orderid::t"]
    assert measurements["step_count"] == 6
    assert metadata["completed_steps"] == sorted(
        ["validate", "charge", "reserve", "ship", "await_payment", "done"]
    )


def test_a_raising_handler_is_detached_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def broken(event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        calls.append(event)
        raise RuntimeError("handler bug")

    telemetry.attach("broken-handler", ["step.start"], broken)
    try:
        with (
            caplog.at_level(logging.ERROR, logger="hephaestus.telemetry"),
            Hephaestus(MemoryStorage()) as app,
        ):
            done = app.run(rf.OrderFlow, {"items": [1]}, id="orderid::h", timeout=10)
            assert done.status is Status.WAITING, "the workflow is not affected"
    finally:
        assert not telemetry.detach("broken-handler"), "it was detached already"
    assert calls == ["step.start"]
    assert any("'broken-handler' raised on step.start" in r.getMessage() for r in caplog.records)


def test_attach_checks_its_arguments() -> None:
    def handler(*args: Any) -> None:
        pass

    with pytest.raises(ValueError, match=r"unknown telemetry event.*'step\.begin'"):
        telemetry.attach("x", ["step.begin"], handler)
    with pytest.raises(TypeError, match="a list of event names"):
        telemetry.attach("x", "step.start", handler)
    with pytest.raises(TypeError, match="callable"):
        telemetry.attach("x", ["step.start"], "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one event"):
        telemetry.attach("x", [], handler)
    telemetry.attach("x", ["step.start"], handler)
    try:
        with pytest.raises(ValueError, match="already attached"):
            telemetry.attach("x", ["step.stop"], handler)
        assert ("x", ("step.start",)) in telemetry.handlers()
        assert telemetry.attached("step.start")
    finally:
        assert telemetry.detach("x")
    assert not telemetry.detach("x")
    assert not telemetry.attached("step.start")
