"""The pure engine (Elixir: ``Hephaestus.Core.Engine``): functions that move an
immutable :class:`~hephaestus.Instance` through its workflow.

No I/O and no threads: each function takes an instance and returns a new one
(or a step's result). The graph work (which steps a completion activates,
joins, skipping the paths not taken) happens in the Rust core; this module
calls the step code and the dynamic routes.

Joins: a step becomes active when each of its predecessors has completed or
been skipped and a transition actually led to it; until then it is listed in
``instance.reached_steps``. So a join after exclusive branches runs once,
after whichever branch ran, and a join after a parallel fan-out waits for
every branch.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from hephaestus._core import Instance, WorkflowGraph, _check_completion, _fail, step_key
from hephaestus.errors import InvalidTransitionError
from hephaestus.status import Status
from hephaestus.steps import Async, Error, Ok, StepResult, is_step_class, normalize_result

__all__ = [
    "activate_transitions",
    "advance",
    "arun",
    "check_completion",
    "complete_step",
    "execute_step",
    "fail",
    "resume_step",
    "run",
]


def _graph(instance: Instance) -> WorkflowGraph:
    graph = getattr(instance.workflow, "graph", None)
    if not isinstance(graph, WorkflowGraph):
        raise TypeError(f"{instance.workflow.__qualname__} is not a Workflow class")
    return graph


def _chosen(instance: Instance, step: type, event: str) -> list[tuple[type, Any]] | None:
    """Calls the dynamic route for ``event`` from ``step``, if there is one."""
    route = getattr(instance.workflow, "routes", {}).get((step, event))
    if route is None:
        return None
    target = route(instance.context)
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], type):
        chosen, config = target
    else:
        chosen, config = target, None
    if not (isinstance(chosen, type) and chosen in route.targets):
        declared = ", ".join(t.__qualname__ for t in route.targets)
        raise InvalidTransitionError(
            f"the route for {event!r} from {step.__qualname__} returned {target!r}; "
            f"it must return one of its declared targets: {declared}"
        )
    return [(chosen, config)]


def advance(instance: Instance) -> Instance:
    """Starts a pending instance: ``RUNNING`` with the start step active (its
    config stored) and current. An instance that waits or has active steps
    is returned unchanged; any other goes to :func:`check_completion`."""
    return _graph(instance).advance(instance)


def _call_execute(instance: Instance, step: type) -> object:
    if not is_step_class(step):
        raise TypeError(f"execute_step needs a Step subclass, got {step!r}")
    config = instance.step_configs.get(step)
    return step().execute(instance, config, instance.context)


def execute_step(instance: Instance, step: type) -> StepResult:
    """Runs ``step().execute(instance, config, instance.context)`` and returns
    its normalized result (a bare event string becomes ``Ok(event)``).

    An ``async def execute`` is run to completion when no event loop is
    running; inside one, use :func:`arun`.
    """
    return normalize_result(_settle(_call_execute(instance, step), step), step=step)


def _settle(result: object, step: type) -> object:
    """Runs a coroutine returned by an ``async def execute`` to completion."""
    if not inspect.iscoroutine(result):
        return result
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(result)
    result.close()
    raise RuntimeError(
        f"{step.__qualname__}.execute is async and an event loop is running; "
        "use `await engine.arun(instance)`"
    )


async def _aexecute_step(instance: Instance, step: type) -> StepResult:
    result = _call_execute(instance, step)
    if inspect.isawaitable(result):
        result = await result
    return normalize_result(result, step=step)


def complete_step(
    instance: Instance,
    step: type,
    event: str,
    context_updates: dict[str, Any] | None = None,
    metadata_updates: dict[str, Any] | None = None,
) -> Instance:
    """Completes the active ``step`` with ``event`` (see
    :meth:`Instance.complete_step`)."""
    return instance.complete_step(step, event, context_updates, metadata_updates)


def activate_transitions(instance: Instance, from_step: type, event: str) -> Instance:
    """Activates what ``event`` from ``from_step`` leads to, applying the join
    rule, and skips the steps it can no longer reach. A dynamic route is
    called with the instance's context; a target it did not declare raises
    :class:`~hephaestus.InvalidTransitionError`."""
    chosen = _chosen(instance, from_step, event)
    return _graph(instance).activate_transitions(instance, from_step, event, chosen)


def resume_step(instance: Instance, step: type, event: str) -> Instance:
    """Resumes the waiting ``step`` with ``event``: completes it, activates its
    transitions, and clears the current step; the status is ``RUNNING``
    unless every remaining active step waits. A step that does not wait
    leaves the instance unchanged. An event the step does not declare raises
    :class:`~hephaestus.InvalidTransitionError` naming the declared ones."""
    graph = _graph(instance)
    chosen = _chosen(instance, step, event) if instance.is_waiting(step) else None
    return graph.resume_step(instance, step, event, chosen)


def check_completion(instance: Instance) -> Instance:
    """``COMPLETED`` when nothing is left to run (no active steps, no join
    still waiting); otherwise unchanged."""
    return _check_completion(instance)


def fail(instance: Instance, step: type | None, reason: Any) -> Instance:
    """``FAILED``: active steps cleared, ``error == {"kind": "error", "step":
    <step key or None>, "reason": reason}``."""
    return _fail_with(instance, {"kind": "error", "step": _key(step), "reason": reason})


def _key(step: type | None) -> str | None:
    return None if step is None else step_key(step)


def _fail_with(instance: Instance, error: dict[str, Any]) -> Instance:
    try:
        return _fail(instance, error)
    except (TypeError, ValueError, OverflowError):
        # A reason that cannot be stored (an exception object, say) is kept
        # as its repr rather than lost.
        storable = {k: (v if k != "reason" else repr(v)) for k, v in error.items()}
        return _fail(instance, storable)


def _exception_error(step: type, exc: Exception) -> dict[str, Any]:
    kind = type(exc)
    return {
        "kind": "exception",
        "step": step_key(step),
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(exc),
    }


_LIVE = (Status.RUNNING, Status.WAITING)


def _apply(
    instance: Instance,
    graph: WorkflowGraph,
    step: type,
    outcome: StepResult | Exception,
) -> Instance:
    """Records one step's outcome: completion, waiting or failure."""
    if isinstance(outcome, Exception):
        return _fail_with(instance, _exception_error(step, outcome))
    if isinstance(outcome, Async):
        return instance.wait_step(step)
    if isinstance(outcome, Error):
        return _fail_with(
            instance, {"kind": "error", "step": step_key(step), "reason": outcome.reason}
        )
    assert isinstance(outcome, Ok)
    declared: tuple[str, ...] = getattr(step, "events", ())
    event = outcome.event
    if event not in declared:
        return _fail_with(
            instance,
            {
                "kind": "invalid_event",
                "step": step_key(step),
                "event": event,
                "declared": list(declared),
            },
        )
    if (step, event) in getattr(instance.workflow, "routes", {}):
        # The route sees the context with this step's result in it.
        completed = instance.complete_step(step, event, outcome.context_updates, outcome.metadata)
        return activate_transitions(completed, step, event)
    return graph.complete_and_activate(
        instance, step, event, outcome.context_updates, outcome.metadata
    )


def run(instance: Instance) -> Instance:
    """Drives the instance in-process until it is completed, failed, or every
    active step waits.

    Runnable steps (active, not waiting) run one at a time in the order of
    ``Workflow.graph.steps``. A step returning ``Async()`` waits while the
    other branches go on; an exception in a step, an ``Error`` result or an
    undeclared event fails the instance with the reason in ``error``, keeping
    everything completed before it.
    """
    graph = _graph(instance)

    def slow(current: Instance, step: type, result: object) -> Instance:
        # Everything but a plain declared event, which the native loop
        # completes itself: results to normalize, coroutines, exceptions.
        if isinstance(result, Exception):
            return _apply(current, graph, step, result)
        try:
            outcome: StepResult | Exception = normalize_result(_settle(result, step), step=step)
        except Exception as exc:  # a malformed result fails the instance
            outcome = exc
        return _apply(current, graph, step, outcome)

    return graph.run(instance, getattr(instance.workflow, "routes", {}), slow)


async def arun(instance: Instance) -> Instance:
    """:func:`run` as a coroutine, for code inside an event loop. The steps
    runnable at the same time run concurrently; their outcomes are applied
    in graph order."""
    graph = _graph(instance)
    instance = graph.advance(instance)

    async def outcome_of(current: Instance, step: type) -> StepResult | Exception:
        try:
            return await _aexecute_step(current, step)
        except Exception as exc:  # a failing step fails the instance
            return exc

    while instance.status in _LIVE:
        runnable = graph.runnable(instance)
        if not runnable:
            break
        current = instance
        outcomes = await asyncio.gather(*(outcome_of(current, step) for step in runnable))
        for step, outcome in zip(runnable, outcomes, strict=True):
            instance = _apply(instance, graph, step, outcome)
            if instance.status.is_terminal:
                break
    return _check_completion(instance)
