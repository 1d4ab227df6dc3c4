"""The runtime's telemetry events (see :mod:`hephaestus.telemetry`): what
each one measures and says, built only when a handler listens."""

from __future__ import annotations

import os
import time
from typing import Any

from hephaestus import telemetry
from hephaestus._core import Instance, WorkflowGraph, step_key
from hephaestus.engine import graph_of
from hephaestus.status import Status

#: What the events name as their runner.
RUNNER = "hephaestus.runtime"

STEP_EVENTS = ("step.stop", "step.exception", "step.async", "workflow.transition")


def listening(*events: str) -> bool:
    """Whether a handler listens to any of ``events`` (one dict lookup when
    none is attached at all)."""
    return telemetry.attached_any(events)


#: Each status's value (quicker than ``Status.value``, an enum property).
_VALUES = {status: status.value for status in Status}

#: Each run's first and last metadata (id, workflow and version; its
#: ``telemetry_metadata``), by instance id and ``telemetry_start_time``,
#: which tell runs apart: they are read from the instance once per run.
_RUNS: dict[tuple[str, int | None], tuple[dict[str, Any], dict[str, Any]]] = {}
_RUNS_KEPT = 4096


def _metadata(instance: Instance, **fields: Any) -> dict[str, Any]:
    """``fields`` with the instance's id, workflow and version before them
    and its ``telemetry_metadata`` after."""
    run = (instance.id, instance.telemetry_start_time)
    known = _RUNS.get(run)
    if known is None:
        if len(_RUNS) >= _RUNS_KEPT:
            _RUNS.clear()
        known = _RUNS[run] = (
            {
                "instance_id": run[0],
                "workflow": instance.workflow,
                "workflow_version": instance.workflow_version,
            },
            instance.telemetry_metadata,
        )
    first, last = known
    return {**first, **fields, **last}


def runner_init(owner: str, storage: object) -> None:
    """``runner.init``: an app's workers started."""
    if telemetry.attached("runner.init"):
        telemetry.emit(
            "runner.init",
            {"system_time": time.time_ns()},
            {
                "name": owner,
                "runner": RUNNER,
                "storage": type(storage).__name__,
                "pid": os.getpid(),
            },
        )


def workflow_changed(
    before: str,
    instance: Instance,
    duration_ns: int,
    advances: int,
    stacktrace: str | None = None,
) -> None:
    """``workflow.start``, ``workflow.stop`` or ``workflow.exception`` when a
    committed change moved the status from ``before`` (``stacktrace``: the
    short traceback of the attempt that failed it)."""
    status = _VALUES[instance.status]
    if status == before:
        return
    if before == "pending" and telemetry.attached("workflow.start"):
        graph = graph_of(instance)
        telemetry.emit(
            "workflow.start",
            {"system_time": time.time_ns()},
            _metadata(
                instance,
                initial_step=graph.start,
                context_keys=sorted(instance.context.initial),
                runner=RUNNER,
            ),
        )
    if status == "completed" and telemetry.attached("workflow.stop"):
        telemetry.emit(
            "workflow.stop",
            {
                "duration": duration_ns,
                "step_count": instance.history_length,
                "advance_count": advances,
            },
            _metadata(
                instance,
                status=status,
                completed_steps=sorted(step_key(s) for s in instance.completed_steps),
                runner=RUNNER,
            ),
        )
    if status == "failed" and telemetry.attached("workflow.exception"):
        error = instance.error or {}
        telemetry.emit(
            "workflow.exception",
            {"duration": duration_ns},
            _metadata(
                instance,
                status=status,
                failed_step=error.get("step"),
                reason=error.get("message", error.get("reason")),
                kind=error.get("kind"),
                stacktrace=stacktrace,
                runner=RUNNER,
            ),
        )


def step_start(instance: Instance, step: type, attempt: int, running: int) -> None:
    """``step.start``: an attempt of ``step`` was handed to the executor;
    ``running`` counts the instance's runs going on, this one included."""
    if telemetry.attached("step.start"):
        telemetry.emit(
            "step.start",
            {"system_time": time.time_ns()},
            _metadata(
                instance,
                step=step,
                step_key=step_key(step),
                concurrent=running > 1,
                active_steps_count=instance.active_count,
                attempt=attempt,
            ),
        )


def step_returned(
    graph: WorkflowGraph,
    before: Instance,
    after: Instance,
    step: type,
    result: object,
    duration_ns: int,
) -> None:
    """``step.stop`` (with ``workflow.transition`` when it led somewhere),
    ``step.async`` or ``step.exception`` for an attempt that returned
    ``result``, applied to ``before`` giving ``after`` (on ``graph``)."""
    key = step_key(step)
    if after.is_waiting(step) and not before.is_waiting(step):
        if telemetry.attached("step.async"):
            telemetry.emit(
                "step.async",
                {"duration": duration_ns},
                _metadata(after, step=step, step_key=key, instance_status=_VALUES[after.status]),
            )
        return
    error = after.error  # (set only on a failed instance)
    if error is not None and error.get("step") == key:
        if telemetry.attached("step.exception"):
            telemetry.emit(
                "step.exception",
                {"duration": duration_ns},
                _metadata(
                    after,
                    step=step,
                    step_key=key,
                    kind=error.get("kind"),
                    reason=error.get("message", error.get("reason")),
                    stacktrace=None,
                    attempt=1,
                    will_retry=False,
                ),
            )
        return
    event: object
    updates: object
    metadata_updates: object
    if isinstance(result, str):
        event, updates, metadata_updates = result, None, None
    else:
        event = getattr(result, "event", None)
        updates = getattr(result, "context_updates", None)
        metadata_updates = getattr(result, "metadata", None)
    targets = [s for s in graph.successors(step) if after.is_active(s) and not before.is_active(s)]
    if after.reached_steps:
        reached = after.reached_steps - before.reached_steps
        targets.extend(s for s in graph.successors(step) if s in reached)
    if len(targets) > 1:
        targets.sort(key=graph.steps.index)
    if telemetry.attached("step.stop"):
        telemetry.emit(
            "step.stop",
            {"duration": duration_ns},
            _metadata(
                after,
                step=step,
                step_key=key,
                event=event,
                has_context_updates=bool(updates),
                has_metadata_updates=bool(metadata_updates),
                transitions_to=[step_key(t) for t in targets],
            ),
        )
    if targets and telemetry.attached("workflow.transition"):
        telemetry.emit(
            "workflow.transition",
            {"system_time": time.time_ns(), "targets_count": len(targets)},
            _metadata(
                after,
                from_step=step,
                event=event,
                targets=targets,
                fan_out=len(targets) > 1,
            ),
        )


def step_failed(
    instance: Instance,
    step: type,
    kind: str,
    stacktrace: str | None,
    message: str,
    duration_ns: int,
    attempt: int,
    will_retry: bool,
) -> None:
    """``step.exception``: an attempt raised (``kind`` ``"exception"``, with
    the short traceback the attempt keeps) or ran over its timeout
    (``"timeout"``)."""
    if telemetry.attached("step.exception"):
        telemetry.emit(
            "step.exception",
            {"duration": duration_ns},
            _metadata(
                instance,
                step=step,
                step_key=step_key(step),
                kind=kind,
                reason=message,
                stacktrace=stacktrace,
                attempt=attempt,
                will_retry=will_retry,
            ),
        )


def step_resumed(instance: Instance, step: type, event: str, source: str, waited_s: float) -> None:
    """``step.resume``: a waiting step was resumed by an event
    (``source`` ``"external"``) or its timer (``"timeout"``)."""
    if telemetry.attached("step.resume"):
        telemetry.emit(
            "step.resume",
            {"system_time": time.time_ns(), "wait_duration": max(0, int(waited_s * 1e9))},
            _metadata(
                instance, step=step, step_key=step_key(step), resume_event=event, source=source
            ),
        )


def advanced(before: Instance, after: Instance, duration_ns: int, iteration: int) -> None:
    """``engine.advance``: one round of the runtime's calls to the engine
    on an instance (its outcomes applied, what follows worked out)."""
    if telemetry.attached("engine.advance"):
        telemetry.emit(
            "engine.advance",
            {
                "duration": duration_ns,
                "active_steps_count": after.active_count,
                "completed_in_advance": after.history_length - before.history_length,
            },
            _metadata(
                after,
                status_before=_VALUES[before.status],
                status_after=_VALUES[after.status],
                iteration=iteration,
            ),
        )
