"""Telemetry: the events the runtime emits as instances run (CONTRACT §11),
after Erlang's ``:telemetry``, which the original used.

A handler is a function ``handler(event, measurements, metadata)``::

    from hephaestus import telemetry

    def on_step(event, measurements, metadata):
        print(event, metadata["step_key"], measurements.get("duration"))

    telemetry.attach("my-app", ["step.stop", "step.exception"], on_step)

Handlers run synchronously in the runtime's thread, so they should be
quick. A handler that raises is detached and the error logged (on the
``hephaestus.telemetry`` logger); the workflow is not affected. With no
handler attached to an event, the runtime does not even build its data.
Durations are in nanoseconds, ``system_time`` is ``time.time_ns()``, and
every event's metadata but ``runner.init``'s holds ``instance_id``,
``workflow`` (the class), ``workflow_version`` and the instance's
``telemetry_metadata``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any

__all__ = [
    "EVENTS",
    "Handler",
    "attach",
    "attached",
    "attached_any",
    "detach",
    "emit",
    "handlers",
]

#: Every event the runtime emits.
EVENTS: tuple[str, ...] = (
    "workflow.start",
    "workflow.stop",
    "workflow.exception",
    "workflow.transition",
    "step.start",
    "step.stop",
    "step.exception",
    "step.async",
    "step.resume",
    "engine.advance",
    "runner.init",
)

#: ``handler(event, measurements, metadata)``.
Handler = Callable[[str, dict[str, Any], dict[str, Any]], object]

log = logging.getLogger("hephaestus.telemetry")

_lock = threading.Lock()
#: handler id -> (events, handler)
_attached: dict[Hashable, tuple[tuple[str, ...], Handler]] = {}
#: event -> handlers, rebuilt on every change (readers take no lock)
_by_event: dict[str, tuple[tuple[Hashable, Handler], ...]] = {}


def attach(handler_id: Hashable, events: Iterable[str], handler: Handler) -> None:
    """Calls ``handler(event, measurements, metadata)`` for each of
    ``events``, until :func:`detach` (``handler_id``).

    Raises:
        TypeError: ``events`` is a single ``str`` rather than a list, or
            ``handler`` is not callable.
        ValueError: An event is not one of :data:`EVENTS`, none is given,
            or ``handler_id`` is already attached.
    """
    if isinstance(events, str) or not isinstance(events, Iterable):
        raise TypeError(f"events must be a list of event names, got {events!r}")
    names = tuple(dict.fromkeys(events))
    unknown = [e for e in names if e not in EVENTS]
    if unknown:
        raise ValueError(
            f"unknown telemetry event(s) {', '.join(map(repr, unknown))}; "
            f"the events are {', '.join(EVENTS)}"
        )
    if not names:
        raise ValueError("attach needs at least one event")
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__}")
    hash(handler_id)  # a TypeError for an unhashable id, as a dict key would give
    with _lock:
        if handler_id in _attached:
            raise ValueError(f"a telemetry handler {handler_id!r} is already attached")
        _attached[handler_id] = (names, handler)
        _rebuild()


def detach(handler_id: Hashable) -> bool:
    """Detaches the handler ``handler_id``; ``False`` if none was attached."""
    with _lock:
        if _attached.pop(handler_id, None) is None:
            return False
        _rebuild()
        return True


def handlers() -> list[tuple[Hashable, tuple[str, ...]]]:
    """The attached handlers' ids and events."""
    with _lock:
        return [(hid, events) for hid, (events, _) in _attached.items()]


def attached(event: str) -> bool:
    """Whether any handler listens to ``event`` (cheap: callers check it
    before they build an event's data)."""
    return event in _by_event


def attached_any(events: Iterable[str]) -> bool:
    """Whether any handler listens to any of ``events`` (cheapest when no
    handler is attached at all)."""
    by_event = _by_event
    return bool(by_event) and any(event in by_event for event in events)


def emit(event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Calls every handler of ``event``; one that raises is detached and its
    error logged."""
    for handler_id, handler in _by_event.get(event, ()):
        try:
            handler(event, measurements, metadata)
        except Exception:
            detach(handler_id)
            log.exception("telemetry handler %r raised on %s and was detached", handler_id, event)


def _rebuild() -> None:
    """Recomputes the event index (the caller holds the lock)."""
    global _by_event
    index: dict[str, list[tuple[Hashable, Handler]]] = {}
    for handler_id, (events, handler) in _attached.items():
        for event in events:
            index.setdefault(event, []).append((handler_id, handler))
    _by_event = {event: tuple(found) for event, found in index.items()}
