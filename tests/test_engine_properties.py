"""Property tests of the engine on random acyclic workflows.

Each example draws a DAG of 2..12 steps (1-2 events each, edges only to later
steps, static fan-outs, exclusive choices, dynamic routes; events without a
target go to ``Done``) and a choice table: the event each step emits and the
target each route picks. Either the workflow class is refused with a
``WorkflowDefinitionError`` (exactly when a static fan-out never joins), or
running it takes exactly the paths the choice table says: every step on them
completes once, every other step is skipped, and the history agrees with the
graph.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import itertools
from typing import Any

from engine_samples import assert_same_state, check_invariants, drive, history_steps
from hephaestus import (
    Async,
    Done,
    Instance,
    Ok,
    Status,
    Step,
    Unique,
    Workflow,
    WorkflowDefinitionError,
    engine,
    transit,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

DONE = -1
"""The index that stands for ``Done`` in a spec."""

SYNC, ASYNC_DEF, WAITS = "sync", "async def", "waits"


@dataclasses.dataclass
class Spec:
    """A random workflow and how its steps behave."""

    events: list[int]
    """How many events each step declares."""
    targets: list[list[list[int]]]
    """``targets[i][e]``: the later steps event ``e`` of step ``i`` leads to (``[]``: Done)."""
    routes: dict[tuple[int, int], list[int]]
    """Dynamic routes: ``(step, event) -> declared targets`` (may hold ``DONE``)."""
    route_choice: dict[tuple[int, int], int]
    """The target each route returns."""
    choice: list[int]
    """The event index each step emits."""
    modes: list[str]
    """How each step runs: ``SYNC``, ``ASYNC_DEF`` or ``WAITS`` (resumed with its event)."""

    @property
    def size(self) -> int:
        return len(self.events)

    def next_of(self, i: int, e: int) -> list[int]:
        """Where event ``e`` of step ``i`` leads, given the choice table."""
        if (i, e) in self.routes:
            return [self.route_choice[(i, e)]]
        return self.targets[i][e] or [DONE]

    def successors(self, i: int) -> set[int]:
        found: set[int] = set()
        for e in range(self.events[i]):
            found.update(self.routes.get((i, e)) or self.targets[i][e] or [DONE])
        return found

    def reachable(self, i: int) -> set[int]:
        seen, todo = {i}, [i]
        while todo:
            for nxt in self.successors(todo.pop()):
                if nxt != DONE and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def bad_fan_outs(self) -> list[tuple[int, int]]:
        """Static fan-outs whose branches share no step before Done."""
        bad = []
        for i in range(self.size):
            for e in range(self.events[i]):
                branches = self.targets[i][e]
                if (i, e) in self.routes or len(branches) < 2:
                    continue
                if not set.intersection(*(self.reachable(b) for b in branches)):
                    bad.append((i, e))
        return bad

    def taken(self) -> set[int]:
        """The steps the choice table leads to from the start."""
        seen, todo = {0}, [0]
        while todo:
            i = todo.pop()
            for nxt in self.next_of(i, self.choice[i]):
                if nxt != DONE and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    n = draw(st.integers(2, 12))
    events = [draw(st.integers(1, 2)) for _ in range(n)]
    targets: list[list[list[int]]] = [[[] for _ in range(events[i])] for i in range(n)]
    # Every step after the first hangs off an earlier one, so all are reachable.
    for j in range(1, n):
        parent = draw(st.integers(0, j - 1))
        targets[parent][draw(st.integers(0, events[parent] - 1))].append(j)
    # More edges make fan-outs (several targets) and joins (several predecessors).
    extra = st.tuples(st.integers(0, n - 1), st.integers(0, 1), st.integers(0, n - 1))
    for a, e, b in draw(st.lists(extra, max_size=n)):
        low, high = min(a, b), max(a, b)
        if low != high and high not in targets[low][e % events[low]]:
            targets[low][e % events[low]].append(high)
    # A funnel: every event that would end at Done goes through the last step
    # first, so that every fan-out joins there.
    if draw(st.booleans()):
        for i in range(n - 1):
            for e in range(events[i]):
                if not targets[i][e]:
                    targets[i][e].append(n - 1)
    routes: dict[tuple[int, int], list[int]] = {}
    route_choice: dict[tuple[int, int], int] = {}
    for i in range(n):
        for e in range(events[i]):
            if len(targets[i][e]) >= 2 and draw(st.integers(0, 3)) == 0:
                declared = list(targets[i][e]) + ([DONE] if draw(st.booleans()) else [])
                routes[(i, e)] = declared
                route_choice[(i, e)] = draw(st.sampled_from(declared))
    choice = [draw(st.integers(0, events[i] - 1)) for i in range(n)]
    modes = [draw(st.sampled_from([SYNC, SYNC, SYNC, ASYNC_DEF, WAITS])) for _ in range(n)]
    return Spec(events, targets, routes, route_choice, choice, modes)


# -- building the classes -----------------------------------------------------------


class _Generated(Step):
    """The base of generated steps: class attributes say what ``execute`` does."""

    index: int = 0
    chosen: str = ""
    executed: list[int]

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        type(self).executed.append(self.index)
        return Ok(self.chosen, {"index": self.index})


class _GeneratedAsync(_Generated):
    async def execute(self, instance: Any, config: Any, context: Any) -> Any:  # type: ignore[override]
        await asyncio.sleep(0)
        type(self).executed.append(self.index)
        return Ok(self.chosen, {"index": self.index})


class _GeneratedWait(_Generated):
    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        type(self).executed.append(self.index)
        return Async()


_SERIAL = itertools.count()
"""Numbers the generated classes."""

_BASES = {SYNC: _Generated, ASYNC_DEF: _GeneratedAsync, WAITS: _GeneratedWait}


@dataclasses.dataclass
class Built:
    flow: type[Workflow]
    steps: list[type[_Generated]]
    executed: list[int]

    def cls(self, index: int) -> type:
        return Done if index == DONE else self.steps[index]


def build(spec: Spec) -> Built:
    """The workflow class for ``spec`` (may raise ``WorkflowDefinitionError``)."""
    executed: list[int] = []
    steps: list[type[_Generated]] = []
    for i in range(spec.size):
        names = tuple(f"e{k}" for k in range(spec.events[i]))
        attrs = {"events": names, "index": i, "chosen": names[spec.choice[i]]}
        # A name of its own (the key stays "s<i>"): the registry test below
        # is where classes that share a name are looked at.
        name = f"S{i}_{next(_SERIAL)}"
        attrs.update(step_key=f"s{i}", executed=executed)
        steps.append(type(name, (_BASES[spec.modes[i]],), attrs))

    def cls(index: int) -> type:
        return Done if index == DONE else steps[index]

    transitions: dict[type, dict[str, Any]] = {}
    namespace: dict[str, Any] = {"start": steps[0], "transitions": transitions}
    for i in range(spec.size):
        for e in range(spec.events[i]):
            name = f"e{e}"
            if (i, e) in spec.routes:
                chosen = cls(spec.route_choice[(i, e)])
                declared = [cls(t) for t in spec.routes[(i, e)]]
                route = transit(steps[i], name, targets=declared)(
                    lambda context, chosen=chosen: chosen
                )
                namespace[f"route_{i}_{e}"] = route
                continue
            targets = [cls(t) for t in spec.targets[i][e]] or [Done]
            transitions.setdefault(steps[i], {})[name] = (
                targets[0] if len(targets) == 1 else targets
            )
    flow = type(f"PropFlow{next(_SERIAL)}", (Workflow,), namespace, unique=Unique("prop"))
    return Built(flow, steps, executed)


def finish(instance: Instance, spec: Spec, built: Built) -> Instance:
    """Runs ``instance`` to the end, resuming each waiting step with its chosen event."""
    instance = engine.run(instance)
    check_invariants(instance)
    while instance.status is Status.WAITING:
        waiting = [s for s in built.flow.graph.steps if s in instance.waiting_steps]
        target = waiting[0]
        instance = engine.resume_step(instance, target, target.chosen)
        check_invariants(instance)
        instance = engine.run(instance)
        check_invariants(instance)
    return instance


def finish_by_hand(instance: Instance, spec: Spec, built: Built) -> Instance:
    """As :func:`finish`, one public call at a time."""
    instance = drive(instance)
    while instance.status is Status.WAITING:
        waiting = [s for s in built.flow.graph.steps if s in instance.waiting_steps]
        target = waiting[0]
        instance = engine.resume_step(instance, target, target.chosen)
        check_invariants(instance)
        instance = drive(instance)
    return instance


def built_or_refused(spec: Spec) -> Built | None:
    bad = spec.bad_fan_outs()
    try:
        built = build(spec)
    except WorkflowDefinitionError as error:
        assert bad, f"refused a valid workflow: {error}"
        assert "never joins before Done" in str(error)
        event("refused")
        return None
    assert not bad, f"accepted fan-outs that never join: {bad}"
    event("accepted")
    return built


# -- the properties ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_run_takes_exactly_the_chosen_paths(spec: Spec) -> None:
    built = built_or_refused(spec)
    if built is None:
        return
    graph = built.flow.graph
    event(f"fan-outs: {any(len(t) > 1 for ts in spec.targets for t in ts)}")
    event(f"routes: {bool(spec.routes)}")

    done = finish(Instance.new(built.flow, 1, {}, "prop::1"), spec, built)

    taken = spec.taken()
    expected = {built.steps[i] for i in taken} | {Done}
    assert done.status is Status.COMPLETED, (done.status, done.error)
    assert done.error is None
    assert done.completed_steps == expected
    assert done.skipped_steps == set(graph.steps) - expected
    assert not done.completed_steps & done.skipped_steps
    assert done.reached_steps == frozenset()
    assert done.active_steps == frozenset()
    assert done.waiting_steps == frozenset()
    # Each taken step executed once (a waiting step is resumed, never re-run),
    # and each completed step appears once in the history, Done last.
    assert sorted(built.executed) == sorted(taken)
    history = history_steps(done)
    assert collections.Counter(history) == collections.Counter(expected)
    assert history[-1] is Done
    assert set(done.context.steps) == {f"s{i}" for i in taken} | {"done"}
    for i in taken:
        # A resumed step has no result of its own.
        result = {} if spec.modes[i] == WAITS else {"index": i}
        assert done.context.steps[f"s{i}"] == result
    # The history agrees with the graph: every completed step but the start
    # was led to by a completed predecessor's recorded event, and ran after
    # every completed predecessor (a join waits for all of them).
    position = {entry.step_ref: n for n, entry in enumerate(done.execution_history)}
    recorded = {entry.step_ref: entry.event for entry in done.execution_history}
    for entry in done.execution_history:
        target = entry.step_ref
        assert entry.event in target.events
        if target is graph.start:
            continue
        completed_predecessors = graph.predecessors(target) & done.completed_steps
        assert completed_predecessors, target
        assert all(position[p] < position[target] for p in completed_predecessors)
        leading = [
            p
            for p in completed_predecessors
            if (p, recorded[p], target) in graph.edges
            and target in {built.cls(t) for t in spec.next_of(p.index, p.events.index(recorded[p]))}
        ]
        assert leading, f"nothing led to {target.__qualname__}"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_run_matches_the_public_calls_and_arun(spec: Spec) -> None:
    built = built_or_refused(spec)
    if built is None:
        return
    ran = finish(Instance.new(built.flow, 1, {}, "prop::1"), spec, built)
    del built.executed[:]
    by_hand = finish_by_hand(Instance.new(built.flow, 1, {}, "prop::1"), spec, built)
    del built.executed[:]

    async def main() -> Instance:
        instance = await engine.arun(Instance.new(built.flow, 1, {}, "prop::1"))
        while instance.status is Status.WAITING:
            waiting = [s for s in built.flow.graph.steps if s in instance.waiting_steps]
            instance = engine.resume_step(instance, waiting[0], waiting[0].chosen)
            instance = await engine.arun(instance)
        return instance

    aran = asyncio.run(main())
    check_invariants(aran)
    fields = (
        "status",
        "completed_steps",
        "skipped_steps",
        "reached_steps",
        "context",
        "runtime_metadata",
        "step_configs",
    )
    for other in (by_hand, aran):
        assert_same_state(other, ran, fields)
    assert history_steps(by_hand) == history_steps(ran)
    assert collections.Counter(history_steps(aran)) == collections.Counter(history_steps(ran))


# -- classes made at run time -----------------------------------------------------------


def test_workflows_made_in_a_loop_keep_their_own_classes() -> None:
    """Step and workflow classes made in a loop share their names; the core
    tells them apart (``module:Looped#2``, ...). Every workflow that stays
    alive must keep resolving its own step class while the others are
    collected and the core's class table is swept. (Whether a broken sweep
    shows depends on where the allocator puts the classes, so this loop is a
    probe, not a guarantee; the property tests above meet the same problem.)"""

    def make() -> tuple[type, type[Workflow]]:
        step = type("Looped", (_Generated,), {"events": ("e",), "chosen": "e", "executed": []})
        flow = type(
            "LoopFlow",
            (Workflow,),
            {"start": step, "transitions": {step: {"e": Done}}},
            unique=Unique("loop"),
        )
        return step, flow

    kept: list[tuple[type, type[Workflow]]] = []
    for index in range(600):
        step, flow = make()
        if index % 3 == 0:
            kept.append((step, flow))
        del step, flow
        gc.collect(0)
        for step, flow in kept[-3:]:
            assert flow.graph.start is step, index
    for step, flow in kept:
        done = engine.run(Instance.new(flow, 1, {}, "loop::1"))
        assert done.completed_steps == {step, Done}
