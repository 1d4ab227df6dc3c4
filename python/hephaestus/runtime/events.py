"""The runtime's telemetry events (see :mod:`hephaestus.telemetry`): what
each one measures and says, built only when a handler listens."""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

from hephaestus import telemetry
from hephaestus._core import Instance, step_key
from hephaestus.engine import graph_of

#: What the events name as their runner.
RUNNER = "hephaestus.runtime"

STEP_EVENTS = ("step.stop", "step.exception", "step.async", "workflow.transition")


def listening(*events: str) -> bool:
    """Whether a handler listens to any of ``events``."""
    return any(telemetry.attached(event) for event in events)


def _metadata(instance: Instance, **fields: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "instance_id": instance.id,
        "workflow": instance.workflow,
        "workflow_version": instance.workflow_version,
    }
    metadata.update(fields)
    metadata.update(instance.telemetry_metadata)
    return metadata


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


def workflow_changed(before: str, instance: Instance, duration_ns: int, advances: int) -> None:
    """``workflow.start``, ``workflow.stop`` or ``workflow.exception`` when a
    committed change moved the status from ``before``."""
    status = instance.status.value
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
                "step_count": len(instance.execution_history),
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
                stacktrace=error.get("stacktrace"),
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
                active_steps_count=len(instance.active_steps),
                attempt=attempt,
            ),
        )


def step_returned(
    before: Instance, after: Instance, step: type, result: object, duration_ns: int
) -> None:
    """``step.stop`` (with ``workflow.transition`` when it led somewhere),
    ``step.async`` or ``step.exception`` for an attempt that returned
    ``result``, applied to ``before`` giving ``after``."""
    key = step_key(step)
    if after.is_waiting(step) and not before.is_waiting(step):
        if telemetry.attached("step.async"):
            telemetry.emit(
                "step.async",
                {"duration": duration_ns},
                _metadata(after, step=step, step_key=key, instance_status=after.status.value),
            )
        return
    error = after.error
    if after.status.value == "failed" and error is not None and error.get("step") == key:
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
    event = getattr(result, "event", result if isinstance(result, str) else None)
    updates = getattr(result, "context_updates", None)
    metadata_updates = getattr(result, "metadata", None)
    graph = graph_of(after)
    opened = (after.active_steps | after.reached_steps) - (
        before.active_steps | before.reached_steps
    )
    targets = [s for s in graph.successors(step) if s in opened]
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
    error: BaseException | None,
    message: str,
    duration_ns: int,
    attempt: int,
    will_retry: bool,
) -> None:
    """``step.exception``: an attempt raised (``kind`` ``"exception"``) or
    ran over its timeout (``"timeout"``)."""
    if telemetry.attached("step.exception"):
        stacktrace = (
            "".join(traceback.format_exception(type(error), error, error.__traceback__))
            if error is not None
            else None
        )
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
                "active_steps_count": len(after.active_steps),
                "completed_in_advance": len(after.execution_history)
                - len(before.execution_history),
            },
            _metadata(
                after,
                status_before=before.status.value,
                status_after=after.status.value,
                iteration=iteration,
            ),
        )
