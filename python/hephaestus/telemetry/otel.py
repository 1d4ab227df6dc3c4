"""OpenTelemetry for the runtime: traces and metrics of workflow runs, on
when ``opentelemetry-api`` is installed (``pip install
'hephaestus-core[otel]'``) and free when it is not.

Only the API is used: an application that configures an SDK (a tracer and a
meter provider with exporters) sees the spans and metrics; without one the
API's no-op providers drop them.

Traces:

* ``workflow <Workflow>``: a span for each stretch in which a process
  drives a run: from start to finish when nothing interrupts it; a wait, a
  restart or a takeover ends it, and the process that carries the run on
  opens the next one. Attributes ``hephaestus.instance.id``,
  ``hephaestus.workflow.name``, ``hephaestus.workflow.version`` and, when it
  ends, ``hephaestus.instance.status``; a failed run records its error.
* ``step <Step>``: a child span for each step attempt, current while the
  step's code runs (so the step's own spans nest below it), with
  ``hephaestus.step.key``, ``hephaestus.step.attempt``,
  ``hephaestus.step.iteration`` (a loop's run), ``hephaestus.step.event``
  (what it returned) and, for an attempt that raised or ran over its
  timeout, the exception and an error status.

The trace context current when ``start_instance`` is called (the caller's
span) is stored with the run, and each ``workflow`` span is its child, in
whichever process and after however many restarts.

Metrics (meter ``hephaestus``): the counters ``hephaestus.step.attempts``
(by ``hephaestus.step.outcome``: ``completed``, ``failed`` or
``timed_out``) and ``hephaestus.workflow.runs`` (by
``hephaestus.instance.status``: ``completed`` or ``failed``), and the
histograms ``hephaestus.step.duration`` and ``hephaestus.workflow.duration``
in seconds; all carry ``hephaestus.workflow.name`` (and the steps'
``hephaestus.step.key``).
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from hephaestus._core import Instance, step_key

if TYPE_CHECKING:
    from hephaestus.runtime.executor import Attempted
    from hephaestus.runtime.storage.base import RunRow

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import StatusCode
except ImportError:  # the extra is not installed: every function is a no-op
    ENABLED = False
else:
    ENABLED = True

__all__ = ["ENABLED", "Traced", "capture", "run_ended", "run_started", "step_ended", "step_started"]

_SCOPE = "hephaestus"


class Traced:
    """A span the runtime opened, with the attributes its metrics carry."""

    __slots__ = ("labels", "span", "started_ns")

    def __init__(self, span: Any, labels: dict[str, Any]) -> None:
        self.span = span
        self.labels = labels
        self.started_ns = time.monotonic_ns()


def capture() -> str | None:
    """The caller's trace context, to store with a new run: W3C
    ``traceparent`` (and ``tracestate``) as JSON, or ``None`` when there is
    no span to carry."""
    if not ENABLED or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, sort_keys=True) if carrier else None


def run_started(row: RunRow) -> Traced | None:
    """Opens the ``workflow`` span of a run this process now drives, as a
    child of the context it was started in; ``None`` without OTel."""
    if not ENABLED:
        return None
    parent = None
    if row.trace:
        try:
            carrier = json.loads(row.trace)
        except ValueError:
            carrier = None
        if isinstance(carrier, dict):
            parent = propagate.extract(carrier)
    span = trace.get_tracer(_SCOPE).start_span(
        f"workflow {row.workflow.rpartition(':')[2]}",
        context=parent,
        attributes={
            "hephaestus.instance.id": row.id,
            "hephaestus.workflow.name": row.workflow,
            "hephaestus.workflow.version": row.version,
        },
    )
    return Traced(span, {"hephaestus.workflow.name": row.workflow})


def run_ended(
    traced: Traced | None, instance: Instance | None, status: str, duration_s: float | None
) -> None:
    """Closes a run's span: it finished with ``status``, waits, or this
    process let it go. A finished run (``duration_s`` since it was created)
    counts in the workflow metrics."""
    if traced is None:
        return
    span = traced.span
    span.set_attribute("hephaestus.instance.status", status)
    error = instance.error if instance is not None else None
    if status == "failed" and error is not None:
        description = str(error.get("message", error.get("reason", error.get("kind"))))
        span.set_attribute("hephaestus.error.kind", str(error.get("kind")))
        if error.get("step") is not None:
            span.set_attribute("hephaestus.error.step", str(error["step"]))
        span.set_status(StatusCode.ERROR, description)
    span.end()
    if duration_s is not None and status in ("completed", "failed"):
        labels = {**traced.labels, "hephaestus.instance.status": status}
        instruments = _Instruments.get()
        instruments.runs.add(1, labels)
        instruments.run_duration.record(max(0.0, duration_s), labels)


def step_started(
    run: Traced | None,
    workflow: str,
    instance_id: str,
    step: type,
    attempt: int,
    iteration: int | None,
) -> tuple[Traced | None, AbstractContextManager[object]]:
    """Opens a step attempt's span below its run's, and a context manager
    under which new tasks and threads see it as the current span."""
    if run is None:
        return None, nullcontext()
    attributes: dict[str, Any] = {
        "hephaestus.instance.id": instance_id,
        "hephaestus.workflow.name": workflow,
        "hephaestus.step.key": step_key(step),
        "hephaestus.step.attempt": attempt,
    }
    if iteration is not None:
        attributes["hephaestus.step.iteration"] = iteration
    span = trace.get_tracer(_SCOPE).start_span(
        f"step {step.__name__}",
        context=trace.set_span_in_context(run.span),
        attributes=attributes,
    )
    labels = {key: attributes[key] for key in ("hephaestus.workflow.name", "hephaestus.step.key")}
    return Traced(span, labels), _current(span)


class _current(AbstractContextManager[object]):
    """Makes ``span`` current until exit (for tasks created meanwhile)."""

    def __init__(self, span: Any) -> None:
        self.span = span
        self.token: Any = None

    def __enter__(self) -> object:
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self.token)


def step_ended(traced: Traced | None, attempted: Attempted | None) -> None:
    """Closes a step attempt's span with how it ended (``None``: it was
    cancelled) and counts it."""
    if traced is None:
        return
    span = traced.span
    outcome = "cancelled"
    if attempted is not None:
        if attempted.kind == "returned":
            outcome = "completed"
            value = attempted.value
            event = value if isinstance(value, str) else getattr(value, "event", None)
            if isinstance(event, str):
                span.set_attribute("hephaestus.step.event", event)
        elif attempted.kind == "raised":
            outcome = "failed"
            if isinstance(attempted.value, BaseException):
                span.record_exception(attempted.value)
            span.set_status(
                StatusCode.ERROR, f"{type(attempted.value).__name__}: {attempted.value}"
            )
        else:
            outcome = "timed_out"
            span.set_status(StatusCode.ERROR, "the step ran over its timeout")
    span.set_attribute("hephaestus.step.outcome", outcome)
    span.end()
    instruments = _Instruments.get()
    instruments.steps.add(1, {**traced.labels, "hephaestus.step.outcome": outcome})
    instruments.step_duration.record((time.monotonic_ns() - traced.started_ns) / 1e9, traced.labels)


class _Instruments:
    """The meter's instruments, made again when the meter provider changes."""

    _made: _Instruments | None = None

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        meter = provider.get_meter(_SCOPE)
        self.steps = meter.create_counter(
            "hephaestus.step.attempts", unit="{attempt}", description="Step attempts, by outcome"
        )
        self.runs = meter.create_counter(
            "hephaestus.workflow.runs", unit="{run}", description="Finished workflow runs"
        )
        self.step_duration = meter.create_histogram(
            "hephaestus.step.duration", unit="s", description="How long step attempts took"
        )
        self.run_duration = meter.create_histogram(
            "hephaestus.workflow.duration",
            unit="s",
            description="How long workflow runs took, from start to finish",
        )

    @classmethod
    def get(cls) -> _Instruments:
        provider = metrics.get_meter_provider()
        made = cls._made
        if made is None or made.provider is not provider:
            made = cls._made = cls(provider)
        return made
