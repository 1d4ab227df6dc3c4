"""Why is it stuck? ``Hephaestus.explain(id)`` says, in plain words and as
data, everything an unfinished instance waits on: the events its waiting
steps accept, the timers and retries and when they are due, the joins and
the predecessors they wait for, the progress of its ``ForEach`` and
``Repeat`` steps, which steps run and in which process, and whether its
workflow class can be loaded here at all."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from hephaestus._core import Instance, WorkflowGraph, step_key
from hephaestus.control import ForEach, Repeat
from hephaestus.engine import graph_of, version_class
from hephaestus.runtime.clock import as_datetime
from hephaestus.runtime.storage.base import RunRow, Stored, Timer

__all__ = ["Explanation", "Reason"]


@dataclasses.dataclass(frozen=True)
class Reason:
    """One thing an instance waits on (or why it does not).

    Attributes:
        kind: ``"event"`` (a step waits for an event), ``"timer"`` (a
            ``Wait`` step's timer), ``"retry"`` (a failed step's next
            attempt), ``"join"`` (a join waits for predecessors),
            ``"for_each"`` and ``"repeat"`` (a loop's progress),
            ``"running"`` (a step runs or is about to), ``"ready"`` (a step
            can run but no app holds the instance), ``"pending"`` (not
            started), ``"unloadable"`` (its workflow class is not loaded in
            this process) or ``"finished"``.
        step: The step's key, or ``None`` when the reason is the instance's.
        text: The reason in plain words.
        facts: The same as data (events, due times as aware UTC datetimes,
            errors, predecessors, items, leases...).
    """

    kind: str
    step: str | None
    text: str
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Explanation:
    """What an instance waits on; ``str()`` gives it in plain words."""

    id: str
    workflow: str
    version: int
    status: str
    reasons: tuple[Reason, ...]

    def __str__(self) -> str:
        name = self.workflow.rpartition(":")[2]
        lines = [f"{self.id} ({name} v{self.version}) is {self.status}:"]
        lines += [f"- {reason.text}" for reason in self.reasons]
        return "\n".join(lines)


def _when(seconds: float, now: float) -> str:
    """A due time in words: ``2030-01-01 10:40:00 UTC (in 10 min)``."""
    stamp = as_datetime(seconds).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = seconds - now
    if abs(delta) < 1:
        return f"{stamp} (now)"
    span = abs(delta)
    amount = (
        f"{span:.0f} s"
        if span < 90
        else f"{span / 60:.0f} min"
        if span < 5400
        else f"{span / 3600:.1f} h"
        if span < 172_800
        else f"{span / 86400:.1f} days"
    )
    return f"{stamp} ({'in ' + amount if delta > 0 else amount + ' ago'})"


def _names(steps: Sequence[type]) -> str:
    return ", ".join(step.__name__ for step in steps)


def unloadable(row: RunRow, problem: str) -> Explanation:
    """The explanation of a run whose workflow class cannot be loaded."""
    reason = Reason(
        "unloadable",
        None,
        f"its workflow class {row.workflow} cannot be loaded in this process ({problem}); "
        "an app that has the code drives it",
        {"workflow": row.workflow, "problem": problem, "lease_owner": row.lease_owner},
    )
    return Explanation(row.id, row.workflow, row.version, row.status, (reason,))


@dataclasses.dataclass
class _Context:
    """What the reasons are made from."""

    instance: Instance
    graph: WorkflowGraph
    stored: Stored
    now: float
    owner: str
    #: The runs this app has going now, with when they started.
    running: dict[tuple[type, int | None], float]

    def timer(self, key: str, kinds: Sequence[str]) -> Timer | None:
        return next((t for t in self.stored.timers if t.step == key and t.kind in kinds), None)

    def where(self) -> tuple[str, dict[str, Any]]:
        """Which process holds the run, in words and as facts."""
        row = self.stored.row
        facts: dict[str, Any] = {"lease_owner": row.lease_owner}
        if row.lease_owner is None or row.lease_expires is None:
            return "no app holds the instance now; an app on this database takes it up", facts
        facts["lease_expires"] = as_datetime(row.lease_expires)
        here = " (this app)" if row.lease_owner == self.owner else ""
        if row.lease_expires < self.now:
            return (
                f"its lease on process {row.lease_owner} ran out at "
                f"{_when(row.lease_expires, self.now)}; another app takes it over",
                facts,
            )
        return (
            f"on process {row.lease_owner}{here}, lease until {_when(row.lease_expires, self.now)}",
            facts,
        )


def explain(
    stored: Stored,
    instance: Instance,
    now: float,
    owner: str,
    running: dict[tuple[type, int | None], float],
) -> Explanation:
    """The explanation of ``instance``, loaded from ``stored`` at ``now``;
    ``owner`` is this app's lease owner and ``running`` its runs of this
    instance that are going on, with when each started."""
    row = stored.row
    context = _Context(instance, graph_of(instance), stored, now, owner, running)
    status = instance.status.value
    if instance.status.is_terminal:
        text = "it completed" if status == "completed" else f"it failed: {instance.error}"
        reasons: tuple[Reason, ...] = (Reason("finished", None, text, {"error": instance.error}),)
    elif status == "pending":
        where, facts = context.where()
        reasons = (Reason("pending", None, f"it has not started yet; {where}", facts),)
    else:
        reasons = tuple(_step_reasons(context))
    return Explanation(row.id, row.workflow, row.version, status, reasons)


def _step_reasons(context: _Context) -> list[Reason]:
    instance, graph = context.instance, context.graph
    nodes = version_class(instance)._nodes
    reasons = []
    for step in graph.steps:
        if instance.is_waiting(step):
            reasons.append(_waiting(context, step))
        elif step in instance.reached_steps:
            reasons.append(_join(context, step))
        elif instance.is_active(step):
            node = nodes.get(step)
            if isinstance(node, ForEach):
                reasons.append(_for_each(context, step))
            elif isinstance(node, Repeat):
                reasons.append(_repeat(context, step, node))
            else:
                reasons.append(_active(context, step, step_key(step)))
    return reasons


def _waiting(context: _Context, step: type) -> Reason:
    key = step_key(step)
    timer = context.timer(key, ("wait",))
    if timer is not None:
        return Reason(
            "timer",
            key,
            f"{step.__name__} waits for its timer, due at {_when(timer.due, context.now)}",
            {"due": as_datetime(timer.due)},
        )
    events = list(getattr(step, "events", ()))
    listed = ", ".join(repr(e) for e in events)
    how = (
        f" (deliver one with app.resume({context.instance.id!r}, {events[0]!r}))" if events else ""
    )
    return Reason(
        "event", key, f"{step.__name__} waits for an event: {listed}{how}", {"events": events}
    )


def _join(context: _Context, step: type) -> Reason:
    instance = context.instance
    predecessors = context.graph.predecessors(step)
    ordered = [p for p in context.graph.steps if p in predecessors]
    open_ = [p for p in ordered if not (instance.is_completed(p) or instance.is_skipped(p))]
    done = [p for p in ordered if p not in open_]
    return Reason(
        "join",
        step_key(step),
        f"join {step.__name__} waits for {_names(open_)} ({_names(done) or 'none'} done)",
        {"waiting_for": [step_key(p) for p in open_], "done": [step_key(p) for p in done]},
    )


def _retry(context: _Context, key: str) -> tuple[str, dict[str, Any]] | None:
    """A pending retry of the run ``key``, in words and as facts."""
    timer = context.timer(key, ("retry",))
    if timer is None:
        return None
    failed = [a for a in context.stored.attempts if a.step == key]
    last = failed[-1] if failed else None
    error = "" if last is None else f" after {last.error_type}: {last.error_message}"
    facts = {
        "due": as_datetime(timer.due),
        "attempt": timer.attempt,
        "error_type": last and last.error_type,
        "error_message": last and last.error_message,
    }
    return (
        f"attempt {timer.attempt} is due at {_when(timer.due, context.now)}{error}",
        facts,
    )


def _active(context: _Context, step: type, key: str) -> Reason:
    retry = _retry(context, key)
    if retry is not None:
        text, facts = retry
        return Reason("retry", key, f"{step.__name__} failed; its {text}", facts)
    started = context.running.get((step, None))
    where, facts = context.where()
    if started is not None:
        facts["since"] = as_datetime(started)
        return Reason(
            "running",
            key,
            f"{step.__name__} is running since {_when(started, context.now)} in this app",
            facts,
        )
    kind = "ready" if context.stored.row.lease_owner is None else "running"
    return Reason(kind, key, f"{step.__name__} is running or about to run: {where}", facts)


def _for_each(context: _Context, step: type) -> Reason:
    key = step_key(step)
    state = context.instance.loop_state(step) or {"items": 0, "done": 0}
    done, total = state["done"], state["items"]
    running = sorted(i for (s, i), _ in context.running.items() if s is step and i is not None)
    retries = []
    for index in range(total):
        retry = _retry(context, f"{key}#{index}")
        if retry is not None:
            retries.append((index, retry))
    text = f"ForEach {step.__name__}: {done} of {total} items done"
    if running:
        text += f"; items {', '.join(map(str, running))} running in this app"
    for index, (words, _) in retries:
        text += f"; item {index} failed, its {words}"
    if not running and not retries and done < total:
        where, _ = context.where()
        text += f"; the others run or are about to: {where}"
    return Reason(
        "for_each",
        key,
        text,
        {
            "done": done,
            "items": total,
            "running": running,
            "retries": {index: facts for index, (_, facts) in retries},
        },
    )


def _repeat(context: _Context, step: type, node: Repeat) -> Reason:
    key = step_key(step)
    state = context.instance.loop_state(step) or {"iteration": 0}
    iteration = state["iteration"]
    unit = f"{key}#{iteration}"
    text = f"Repeat {step.__name__}: run {iteration + 1} of {node.max_iterations}"
    facts: dict[str, Any] = {"iteration": iteration, "max_iterations": node.max_iterations}
    timer = context.timer(unit, ("repeat",))
    retry = _retry(context, unit)
    if timer is not None:
        text += f", next run at {_when(timer.due, context.now)}"
        facts["next_run"] = as_datetime(timer.due)
    elif retry is not None:
        text += f", which failed; its {retry[0]}"
        facts["retry"] = retry[1]
    else:
        started = context.running.get((step, iteration))
        if started is not None:
            text += f", running since {_when(started, context.now)} in this app"
            facts["since"] = as_datetime(started)
        else:
            where, more = context.where()
            text += f", running or about to run: {where}"
            facts.update(more)
    return Reason("repeat", key, text, facts)
