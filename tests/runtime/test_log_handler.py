"""The log handler (CONTRACT §11): one readable line per telemetry event,
with the event's data on the record."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import runtime_flows as rf
from hephaestus import Hephaestus, MemoryStorage, Status, telemetry
from hephaestus.telemetry import log_handler


@pytest.fixture(autouse=True)
def _attached() -> Iterator[None]:
    rf.CALLS.clear()
    yield
    log_handler.detach()


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage().splitlines()[0] for r in caplog.records if r.name.startswith("hephaestus.")
    ]


def test_each_event_is_one_line_prefixed_with_the_instance(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log_handler.attach()
    with caplog.at_level(logging.INFO, logger="hephaestus"), Hephaestus(MemoryStorage()) as app:
        iid = app.start_instance(rf.OrderFlow, {"items": [1, 2]}, id="orderid::log")
        app.wait(iid, timeout=10)
        app.resume(iid, "received")
        assert app.wait(iid, timeout=10).status is Status.COMPLETED
    seen = lines(caplog)
    assert any(line.startswith("runner started: MemoryStorage in process") for line in seen)
    assert "[orderid::log] workflow OrderFlow v1 started at Validate" in seen
    assert any(
        line.startswith("[orderid::log] step Charge completed in ")
        and line.endswith('-> "charged"')
        for line in seen
    )
    assert "[orderid::log] step AwaitPayment waits (instance waiting)" in seen
    assert any(
        line.startswith('[orderid::log] step AwaitPayment resumed with "received" (external)')
        for line in seen
    )
    assert any(
        line.startswith("[orderid::log] workflow OrderFlow completed in ") and "(6 steps)" in line
        for line in seen
    )
    assert not any("step Validate started" in line for line in seen), "DEBUG lines stay out"
    record = next(
        r for r in caplog.records if r.getMessage().startswith("[orderid::log] step Ship")
    )
    assert record.event == "step.stop"  # type: ignore[attr-defined]
    assert record.instance_id == "orderid::log"  # type: ignore[attr-defined]
    assert record.metadata["step_key"] == "ship"  # type: ignore[attr-defined]
    assert "duration" in record.measurements  # type: ignore[attr-defined]


def test_a_failing_step_logs_its_traceback_at_error(caplog: pytest.LogCaptureFixture) -> None:
    log_handler.attach(logging.DEBUG)
    with caplog.at_level(logging.DEBUG, logger="hephaestus"), Hephaestus(MemoryStorage()) as app:
        failed = app.run(rf.BrokenFlow, id="broken::log", timeout=10)
    assert failed.status is Status.FAILED
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name == "hephaestus.step"
    ]
    [record] = errors
    message = record.getMessage()
    assert message.startswith("[broken::log] step Broken failed in ")
    assert "(attempt 1): exception: card declined" in message
    assert "Traceback (most recent call last)" in message
    assert 'raise ValueError("card declined")' in message
    assert "[broken::log] workflow BrokenFlow failed at step broken: exception: card declined" in (
        lines(caplog)
    )
    assert any(line.startswith("[broken::log] step Broken started") for line in lines(caplog))


def test_attach_replaces_the_level_and_detach_stops_it(caplog: pytest.LogCaptureFixture) -> None:
    log_handler.attach(logging.DEBUG)
    log_handler.attach(logging.WARNING)
    assert [hid for hid, _ in telemetry.handlers()].count(log_handler.HANDLER_ID) == 1
    with caplog.at_level(logging.DEBUG, logger="hephaestus"), Hephaestus(MemoryStorage()) as app:
        app.run(rf.QuickFlow, id="quick::log", timeout=10)
    assert lines(caplog) == []
    assert log_handler.detach()
    assert not log_handler.detach()
    with pytest.raises(TypeError, match="logging level"):
        log_handler.attach("INFO")  # type: ignore[arg-type]
