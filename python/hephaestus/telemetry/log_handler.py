"""Telemetry events as log lines: one readable line per event, on the
``hephaestus`` logger hierarchy, with the event's data in ``extra=`` for
structured formatters::

    import logging
    from hephaestus.telemetry import log_handler

    logging.basicConfig(level=logging.INFO)
    log_handler.attach()
    # INFO hephaestus.step: [orderid::abc123] step ChargeCard completed in 12 ms -> "charged"

Loggers: ``hephaestus.workflow``, ``hephaestus.step``, ``hephaestus.engine``
and ``hephaestus.runner``. A failed step logs at ``ERROR`` (``WARNING`` when
it will be retried) with its traceback. Every record carries
``record.event``, ``record.instance_id`` (``None`` for ``runner.init``),
``record.measurements`` and ``record.metadata``.
"""

from __future__ import annotations

import logging
from typing import Any

from hephaestus import telemetry

__all__ = ["HANDLER_ID", "attach", "detach"]

#: The telemetry handler id the log handler attaches under.
HANDLER_ID = "hephaestus.log_handler"

#: Each event's logger (below ``hephaestus``) and level.
_ROUTES: dict[str, tuple[str, int]] = {
    "workflow.start": ("workflow", logging.INFO),
    "workflow.stop": ("workflow", logging.INFO),
    "workflow.exception": ("workflow", logging.ERROR),
    "workflow.transition": ("workflow", logging.DEBUG),
    "step.start": ("step", logging.DEBUG),
    "step.stop": ("step", logging.INFO),
    "step.exception": ("step", logging.ERROR),
    "step.async": ("step", logging.INFO),
    "step.resume": ("step", logging.INFO),
    "engine.advance": ("engine", logging.DEBUG),
    "runner.init": ("runner", logging.INFO),
}


def attach(level: int = logging.INFO) -> None:
    """Logs every event at ``level`` or above, one line each (see the module
    docs). Attaching again replaces the earlier level.

    Raises:
        TypeError: ``level`` is not an int logging level.
    """
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be a logging level (an int), got {level!r}")
    telemetry.detach(HANDLER_ID)
    events = [
        event for event, (_, at) in _ROUTES.items() if at >= level or event == "step.exception"
    ]
    telemetry.attach(HANDLER_ID, events, _handler(level))


def detach() -> bool:
    """Stops logging events; ``False`` if the log handler was not attached."""
    return telemetry.detach(HANDLER_ID)


def _handler(minimum: int) -> telemetry.Handler:
    def log_event(event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        area, level = _ROUTES[event]
        if event == "step.exception" and metadata.get("will_retry"):
            level = logging.WARNING
        if level < minimum:
            return
        logger = logging.getLogger(f"hephaestus.{area}")
        if not logger.isEnabledFor(level):
            return
        text = event_text(event, measurements, metadata)
        if event != "runner.init":
            text = f"[{metadata.get('instance_id')}] {text}"
        stacktrace = metadata.get("stacktrace")
        if stacktrace:
            text = f"{text}\n{str(stacktrace).rstrip()}"
        logger.log(
            level,
            text,
            extra={
                "event": event,
                "instance_id": metadata.get("instance_id"),
                "measurements": measurements,
                "metadata": metadata,
            },
        )

    return log_event


def duration_text(nanoseconds: Any) -> str:
    """A duration in nanoseconds for people: ``12 ms``, ``1.5 s``."""
    seconds = (nanoseconds or 0) / 1e9
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _name(value: Any) -> str:
    return getattr(value, "__name__", None) or str(value)


def event_text(event: str, m: dict[str, Any], md: dict[str, Any]) -> str:
    """An event in words (without the instance id), as the log lines and
    ``hephaestus run`` show it."""
    step = _name(md.get("step"))
    if event == "runner.init":
        return f"runner started: {md['storage']} in process {md['pid']} ({md['name']})"
    words = {
        "workflow.start": lambda: (
            f"workflow {_name(md['workflow'])} v{md['workflow_version']} started at "
            f"{_name(md['initial_step'])}"
        ),
        "workflow.stop": lambda: (
            f"workflow {_name(md['workflow'])} completed in {duration_text(m['duration'])} "
            f"({m['step_count']} steps)"
        ),
        "workflow.exception": lambda: (
            f"workflow {_name(md['workflow'])} failed at step {md['failed_step']}: "
            f"{md['kind']}: {md['reason']}"
        ),
        "workflow.transition": lambda: (
            f"{_name(md['from_step'])} --{md['event']!r}--> "
            f"{', '.join(_name(t) for t in md['targets'])}"
        ),
        "step.start": lambda: f"step {step} started (attempt {md['attempt']})",
        "step.stop": lambda: (
            f'step {step} completed in {duration_text(m["duration"])} -> "{md["event"]}"'
        ),
        "step.exception": lambda: (
            f"step {step} failed in {duration_text(m['duration'])} (attempt {md['attempt']}"
            f"{', will retry' if md['will_retry'] else ''}): {md['kind']}: {md['reason']}"
        ),
        "step.async": lambda: f"step {step} waits (instance {md['instance_status']})",
        "step.resume": lambda: (
            f'step {step} resumed with "{md["resume_event"]}" ({md["source"]}) after '
            f"{duration_text(m['wait_duration'])}"
        ),
        "engine.advance": lambda: (
            f"engine advanced {md['status_before']} -> {md['status_after']} "
            f"({m['completed_in_advance']} completed) in {duration_text(m['duration'])}"
        ),
    }
    return words[event]()
