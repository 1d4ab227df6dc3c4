"""The pure engine (Elixir: ``Hephaestus.Core.Engine``): functions that move an
immutable :class:`~hephaestus.Instance` through its workflow.

No I/O and no threads: each function takes an instance and returns a new one
(or a step's result). Every decision (which steps a completion activates,
joins, skipping the paths not taken, what a step's result does to the
instance) is made in the Rust core; this module finds the instance's graph
and calls the step code and the dynamic routes.

Joins: a step becomes active when each of its predecessors has completed or
been skipped and a transition actually led to it; until then it is listed in
``instance.reached_steps``. So a join after exclusive branches runs once,
after whichever branch ran, and a join after a parallel fan-out waits for
every branch.

Versions: an instance runs the graph of its own ``workflow_version``. For a
dispatcher (``versions=...``) that is the graph of that version; a version
the workflow does not have raises ``ValueError`` before anything runs.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from hephaestus import _core
from hephaestus._core import Instance, WorkflowGraph, step_key
from hephaestus.errors import InvalidTransitionError
from hephaestus.steps import StepResult, is_step_class, normalize_result

__all__ = [
    "activate_transitions",
    "advance",
    "arun",
    "check_completion",
    "complete_step",
    "execute_step",
    "fail",
    "graph_of",
    "resume_step",
    "run",
    "version_class",
]


def graph_of(instance: Instance) -> WorkflowGraph:
    """The graph ``instance`` runs: its workflow's, for its own version.

    Raises:
        TypeError: The instance's workflow is not a ``Workflow`` class.
        ValueError: The workflow has no such version; the message names the
            versions it has.
    """
    graph: WorkflowGraph = version_class(instance).graph
    return graph


def version_class(instance: Instance) -> Any:
    """The workflow class of ``instance``'s own version (for a dispatcher,
    the member class of that version); raises as :func:`graph_of`."""
    workflow = instance.workflow
    resolve = getattr(workflow, "resolve_version", None)
    if resolve is None or not isinstance(getattr(workflow, "graph", None), WorkflowGraph):
        raise TypeError(f"{workflow.__qualname__} is not a Workflow class")
    _, member = resolve(instance.workflow_version)
    return member


def advance(instance: Instance) -> Instance:
    """Starts a pending instance: ``RUNNING`` with the start step active (its
    config stored) and current. An instance that waits or has active steps
    is returned unchanged; any other goes to :func:`check_completion`."""
    return _core.advance(graph_of(instance), instance)


def execute_step(instance: Instance, step: type) -> StepResult:
    """Runs ``step().execute(instance, config, instance.context)`` and returns
    its normalized result (a bare event string becomes ``Ok(event)``).

    The step must be one of the instance's workflow (checked before any of
    its code runs). An ``async def execute`` is run to completion when no
    event loop is running; inside one, use :func:`arun`.
    """
    if not is_step_class(step):
        raise TypeError(f"execute_step needs a Step subclass, got {step!r}")
    _core.check_step(graph_of(instance), step)
    config = instance.step_configs.get(step)
    result = step().execute(instance, config, instance.context)
    return normalize_result(_settle(result, step), step=step)


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


def complete_step(
    instance: Instance,
    step: type,
    event: str,
    context_updates: dict[str, Any] | None = None,
    metadata_updates: dict[str, Any] | None = None,
) -> Instance:
    """Completes the active ``step`` with ``event`` (see
    :meth:`Instance.complete_step`).

    Raises:
        InvalidTransitionError: ``step`` is a ``ForEach`` or ``Repeat`` step,
            whose runs complete one by one through :func:`run`, :func:`arun`
            or the runtime (completing the node at once would lose its runs'
            results).
    """
    node = version_class(instance)._nodes.get(step)
    if node is not None:
        raise InvalidTransitionError(
            f"complete_step: {step.__qualname__} is a {type(node).__name__} step; its runs "
            "complete one by one through engine.run, engine.arun or the runtime"
        )
    return instance.complete_step(step, event, context_updates, metadata_updates)


def activate_transitions(instance: Instance, from_step: type, event: str) -> Instance:
    """Activates what ``event`` from ``from_step`` leads to, applying the join
    rule, and skips the steps it can no longer reach. A dynamic route is
    called with the instance's context; a target it did not declare raises
    :class:`~hephaestus.InvalidTransitionError`, and an exception it raises
    propagates."""
    return _core.activate_transitions(graph_of(instance), instance, from_step, event)


def resume_step(instance: Instance, step: type, event: str) -> Instance:
    """Resumes the waiting ``step`` with ``event``: completes it, activates its
    transitions, and clears the current step; the status is ``RUNNING``
    unless every remaining active step waits. A step that does not wait
    leaves the instance unchanged. An event the step does not declare raises
    :class:`~hephaestus.InvalidTransitionError` naming the declared ones."""
    return _core.resume_step(graph_of(instance), instance, step, event)


def check_completion(instance: Instance) -> Instance:
    """``COMPLETED``, with no current step, when nothing is left to run (no
    active steps, no join still waiting); otherwise unchanged."""
    return _core.check_completion(instance)


def fail(instance: Instance, step: type | None, reason: Any) -> Instance:
    """``FAILED``: active steps cleared, ``error == {"kind": "error", "step":
    <step key or None>, "reason": reason}``. A reason that cannot be stored
    is kept as its ``repr``. A completed or failed instance raises
    :class:`~hephaestus.InvalidTransitionError`."""
    key = None if step is None else step_key(step)
    error = {"kind": "error", "step": key, "reason": reason}
    try:
        return _core.fail(instance, error)
    except InvalidTransitionError:
        raise
    except (TypeError, ValueError, OverflowError):
        # The reason is not a value the instance can store.
        return _core.fail(instance, {**error, "reason": repr(reason)})


def run(instance: Instance) -> Instance:
    """Drives the instance in-process until it is completed, failed, or every
    active step waits.

    Runnable steps (active, not waiting) run one at a time, lowest position
    in ``Workflow.graph.steps`` first. A step returning ``Async()`` waits
    while the other branches go on. A step that raises, returns ``Error``,
    emits an undeclared event, returns something that is not a result or
    cannot be stored, or whose dynamic route fails, fails the instance with
    the reason in ``error`` (``kind`` ``"exception"``, ``"error"``,
    ``"invalid_event"``, ``"invalid_result"`` or ``"route"``, and the
    step's key), keeping everything completed before it. An active step
    that is not part of the workflow is refused with
    :class:`~hephaestus.InvalidTransitionError` before any step runs.
    """
    return _core.run(graph_of(instance), instance, _settle)


async def arun(instance: Instance) -> Instance:
    """:func:`run` as a coroutine, for code inside an event loop. Runnable
    steps run concurrently, and each outcome is applied as soon as its step
    finishes (outcomes that finish together in graph order), so what it
    activates starts at once. A step that can no longer matter (withdrawn
    by a first-wins join or ``Terminate``, or the instance failed) is
    cancelled, and its result, if any, discarded."""
    graph = graph_of(instance)
    order = {step: position for position, step in enumerate(graph.steps)}
    driver = _core.Run(graph, instance)

    async def outcome_of(current: Instance, step: type, config: Any) -> tuple[bool, Any]:
        try:
            result = step().execute(current, config, current.context)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # a failing step fails the instance
            return False, exc
        return True, result

    # Each running run, by task: (step, iteration).
    running: dict[asyncio.Task[tuple[bool, Any]], tuple[type, int | None]] = {}
    try:
        while True:
            runnable = driver.take_runnable()
            if runnable:
                current = driver.instance
                for step, iteration in runnable:
                    config = driver.config(step, iteration)
                    task = asyncio.create_task(outcome_of(current, step, config))
                    running[task] = (step, iteration)
            if not running:
                break
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(finished, key=lambda t: (order[running[t][0]], running[t][1] or 0)):
                step, iteration = running.pop(task)
                returned, value = task.result()
                if returned:
                    driver.complete(step, value, iteration=iteration)
                else:
                    driver.fail(step, value, iteration=iteration)
            current = driver.instance
            for task, (step, _) in list(running.items()):
                if current.status.is_terminal or not current.is_active(step):
                    task.cancel()
                    del running[task]
    finally:
        for task in running:
            task.cancel()
    return driver.finish()
