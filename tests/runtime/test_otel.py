"""OpenTelemetry (CONTRACT §11): a span per workflow run and a child span
per step attempt, read with the SDK's in-memory exporter; the caller's trace
context carried into the steps, also after the app restarts; the counters
and histograms; and nothing at all when the API is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hephaestus import (
    Done,
    Hephaestus,
    Ok,
    Retry,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

#: The span current inside each step's code: (step name, trace id, span id).
SEEN: list[tuple[str, int, int]] = []
_lock = threading.Lock()


def seen_here(name: str) -> None:
    context = trace.get_current_span().get_span_context()
    with _lock:
        SEEN.append((name, context.trace_id, context.span_id))


class Begin(Step):
    events = ("begun",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        seen_here("Begin")
        return Ok("begun", {"n": 1})


class ThreadBranch(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        seen_here("ThreadBranch")
        # A span the step makes itself nests below the step's.
        with trace.get_tracer("user-code").start_as_current_span("charge the card"):
            return "done"


class AsyncBranch(Step):
    events = ("done",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        seen_here("AsyncBranch")
        return "done"


class Meet(Step):
    events = ("met",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        seen_here("Meet")
        return "met"


class Traced(Workflow, unique=Unique("traced")):
    start = Begin
    transitions = {
        Begin: {"begun": [ThreadBranch, AsyncBranch]},
        ThreadBranch: {"done": Meet},
        AsyncBranch: {"done": Meet},
        Meet: {"met": Done},
    }


class Flaky(Step):
    events = ("ok",)
    retry = Retry(max_attempts=2, base_delay=0.01)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        raise ValueError("out of stock")


class Failing(Workflow, unique=Unique("failing")):
    start = Flaky
    transitions = {Flaky: {"ok": Done}}


class Approve(WaitForEvent):
    events = ("approved",)


class Approval(Workflow, unique=Unique("approval")):
    start = Begin
    transitions = {Begin: {"begun": Approve}, Approve: {"approved": Meet}, Meet: {"met": Done}}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer and meter provider for one test (the API allows
    setting them once per process; the test puts the globals back)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _set_tracer_provider(provider)
    SEEN.clear()
    try:
        yield exporter
    finally:
        _set_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    _set_meter_provider(provider)
    try:
        yield reader
    finally:
        _set_meter_provider(None)
        provider.shutdown()


def _set_tracer_provider(provider: TracerProvider | None) -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    if provider is not None:
        trace.set_tracer_provider(provider)


def _set_meter_provider(provider: MeterProvider | None) -> None:
    internal = metrics._internal  # type: ignore[attr-defined]
    internal._METER_PROVIDER_SET_ONCE = Once()
    internal._METER_PROVIDER = None
    if provider is not None:
        metrics.set_meter_provider(provider)


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def test_a_run_is_a_span_below_the_callers_and_each_step_a_child(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    tracer = trace.get_tracer("caller")
    with Hephaestus(tmp_path / "h.db") as app:
        with tracer.start_as_current_span("handle request", kind=SpanKind.SERVER) as caller:
            iid = app.start_instance(Traced, {"x": 1}, id="traced::a1")
        assert app.wait(iid, timeout=60).status.value == "completed"
    found = by_name(spans)
    (run,) = found["workflow Traced"]
    caller_context = caller.get_span_context()
    assert run.context.trace_id == caller_context.trace_id
    assert run.parent is not None
    assert run.parent.span_id == caller_context.span_id
    assert run.attributes["hephaestus.instance.id"] == "traced::a1"
    assert run.attributes["hephaestus.workflow.name"].endswith(":Traced")
    assert run.attributes["hephaestus.workflow.version"] == 1
    assert run.attributes["hephaestus.instance.status"] == "completed"
    assert run.status.status_code is StatusCode.UNSET

    steps = {
        name: found[f"step {name}"] for name in ("Begin", "ThreadBranch", "AsyncBranch", "Meet")
    }
    for (span,) in steps.values():
        assert span.parent is not None
        assert span.parent.span_id == run.context.span_id
        assert span.context.trace_id == caller_context.trace_id
        assert span.attributes["hephaestus.instance.id"] == "traced::a1"
        assert span.attributes["hephaestus.step.attempt"] == 1
        assert span.attributes["hephaestus.step.outcome"] == "completed"
        assert span.start_time >= run.start_time
        assert span.end_time <= run.end_time
    assert steps["Begin"][0].attributes["hephaestus.step.key"] == "begin"
    assert steps["Begin"][0].attributes["hephaestus.step.event"] == "begun"
    # The step's code ran with its step span current, in a thread or a task.
    for name, trace_id, span_id in SEEN:
        (span,) = steps[name]
        assert (trace_id, span_id) == (span.context.trace_id, span.context.span_id)
    (own,) = found["charge the card"]
    assert own.parent is not None
    assert own.parent.span_id == steps["ThreadBranch"][0].context.span_id


def test_a_failed_attempt_records_the_error_and_a_failed_run_says_why(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with Hephaestus(tmp_path / "h.db") as app:
        iid = app.start_instance(Failing, id="failing::b1")
        assert app.wait(iid, timeout=60).status.value == "failed"
    found = by_name(spans)
    attempts = sorted(found["step Flaky"], key=lambda s: s.attributes["hephaestus.step.attempt"])
    assert [s.attributes["hephaestus.step.attempt"] for s in attempts] == [1, 2]
    for span in attempts:
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: out of stock"
        assert span.attributes["hephaestus.step.outcome"] == "failed"
        (event,) = [e for e in span.events if e.name == "exception"]
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "out of stock"
    failed = [
        s
        for s in found["workflow Failing"]
        if s.attributes["hephaestus.instance.status"] == "failed"
    ]
    (run,) = failed
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "out of stock"
    assert run.attributes["hephaestus.error.kind"] == "exception"
    assert run.attributes["hephaestus.error.step"] == "flaky"


def test_the_callers_trace_carries_across_an_app_restart(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    tracer = trace.get_tracer("caller")
    with tracer.start_as_current_span("signup") as caller, Hephaestus(tmp_path / "h.db") as app:
        iid = app.start_instance(Approval, id="approval::c1")
        assert app.wait(iid, timeout=60).status.value == "waiting"
    caller_context = caller.get_span_context()
    spans.clear()
    SEEN.clear()
    # A new app, outside any span, carries the run on after the resume.
    with Hephaestus(tmp_path / "h.db") as app:
        app.resume(iid, "approved")
        assert app.wait(iid, timeout=60).status.value == "completed"
    found = by_name(spans)
    (run,) = found["workflow Approval"]
    assert run.context.trace_id == caller_context.trace_id
    assert run.parent is not None
    assert run.parent.span_id == caller_context.span_id
    (meet,) = found["step Meet"]
    assert meet.parent is not None
    assert meet.parent.span_id == run.context.span_id
    assert [("Meet", caller_context.trace_id, meet.context.span_id)] == SEEN


def test_without_a_current_span_each_run_starts_its_own_trace(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with Hephaestus(tmp_path / "h.db") as app:
        iid = app.start_instance(Traced, id="traced::d1")
        app.wait(iid, timeout=60)
        assert app.storage.newest(iid).trace is None
    (run,) = by_name(spans)["workflow Traced"]
    assert run.parent is None


def test_counters_and_histograms_by_outcome(
    spans: InMemorySpanExporter, reader: InMemoryMetricReader, tmp_path: Path
) -> None:
    with Hephaestus(tmp_path / "h.db") as app:
        for iid in (
            app.start_instance(Traced, id="traced::e1"),
            app.start_instance(Failing, id="failing::e2"),
        ):
            app.wait(iid, timeout=60)
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "hephaestus"
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)

    def total(name: str, **labels: str) -> float:
        return sum(
            p.value if hasattr(p, "value") else p.count
            for p in points[name]
            if all(
                p.attributes.get(f"hephaestus.{k.replace('_', '.')}") == v
                for k, v in labels.items()
            )
        )

    # Begin, ThreadBranch, AsyncBranch, Meet and Done; Flaky twice.
    assert total("hephaestus.step.attempts", step_outcome="completed") == 5
    assert total("hephaestus.step.attempts", step_outcome="failed", step_key="flaky") == 2
    assert total("hephaestus.workflow.runs", instance_status="completed") == 1
    assert total("hephaestus.workflow.runs", instance_status="failed") == 1
    assert total("hephaestus.step.duration") == 7
    assert total("hephaestus.workflow.duration") == 2


def test_without_the_opentelemetry_api_runs_carry_no_trace(tmp_path: Path) -> None:
    """The extra is optional: with `opentelemetry` not importable, the
    runtime runs as before and stores no trace context."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        from hephaestus import Hephaestus
        from hephaestus.telemetry import otel
        assert not otel.ENABLED
        from hephaestus import Done, Step, Unique, Workflow

        class Hello(Step):
            events = ("said",)

            def execute(self, instance, config, context):
                return "said"

        class Traced(Workflow, unique=Unique("traced")):
            start = Hello
            transitions = {{Hello: {{"said": Done}}}}

        with Hephaestus({str(tmp_path / "h.db")!r}) as app:
            iid = app.start_instance(Traced, id="traced::f1")
            assert app.wait(iid, timeout=60).status.value == "completed"
            assert app.storage.newest(iid).trace is None
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
