"""Property tests of the control-flow constructs (CONTRACT §14) on random
workflows.

Each example draws a chain of segments, each one of: a plain step, a
``ForEach`` over a random list, a ``Repeat`` that answers ``again`` a random
number of times under a random ``max_iterations``, a ``many=True`` route
choosing a random non-empty subset of its branches (joined after), a race of
branches into a ``join = "first"`` step, or a check that may go to
``Terminate``. Now and then one construct is drawn broken (a ``ForEach`` step
with two events, a ``Repeat`` whose ``again`` is not an event, a zero limit,
a first-wins join with one predecessor).

The properties: a broken workflow is refused with ``WorkflowDefinitionError``
and a sound one builds; ``engine.run`` (and ``engine.arun``) terminate with
the outcome the draw implies; every item and every repetition is in the
history exactly once; no step is both completed and skipped; and the
finished instance survives a JSON round trip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

import pytest
from hephaestus import (
    Done,
    ForEach,
    Instance,
    Ok,
    Repeat,
    Status,
    Step,
    Terminate,
    Unique,
    Workflow,
    WorkflowDefinitionError,
    engine,
    transit,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

KINDS = ("plain", "for_each", "repeat", "choice", "race", "stop")


@dataclasses.dataclass
class Segment:
    kind: str
    #: for_each: the items; choice: the branch count; race: branch lengths.
    items: list[int] = dataclasses.field(default_factory=list)
    concurrency: int | None = None
    #: repeat: how many runs answer ``again`` before ``next``.
    agains: int = 0
    max_iterations: int = 1
    #: choice: the branches chosen.
    chosen: list[int] = dataclasses.field(default_factory=list)
    #: stop: whether the check goes to Terminate.
    stop: bool = False
    broken: bool = False


@st.composite
def segments(draw: st.DrawFn) -> list[Segment]:
    chain = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(KINDS))
        breakable = kind in ("for_each", "repeat", "race")
        segment = Segment(kind, broken=breakable and draw(st.integers(0, 11)) == 0)
        if kind == "for_each":
            segment.items = draw(st.lists(st.integers(0, 99), max_size=6))
            segment.concurrency = draw(st.sampled_from([None, 1, 2]))
        elif kind == "repeat":
            segment.max_iterations = draw(st.integers(1, 4))
            segment.agains = draw(st.integers(0, 4))
        elif kind == "choice":
            width = draw(st.integers(2, 3))
            segment.items = [width]
            segment.chosen = sorted(
                draw(st.sets(st.integers(0, width - 1), min_size=1, max_size=width))
            )
        elif kind == "race":
            segment.items = draw(st.lists(st.integers(1, 2), min_size=2, max_size=3))
        elif kind == "stop":
            segment.stop = draw(st.booleans())
        chain.append(segment)
    return chain


_SERIAL = itertools.count()


def _step(name: str, events: tuple[str, ...], body: Any, **attrs: Any) -> type[Step]:
    def execute(self: Step, instance: Any, config: Any, context: Any) -> Any:
        return body(instance, config, context)

    return type(
        f"{name}_{next(_SERIAL)}",
        (Step,),
        {"events": events, "execute": execute, "step_key": f"{name.lower()}", **attrs},
    )


def _emit(event: str) -> Any:
    return lambda instance, config, context: Ok(event, {})


@dataclasses.dataclass
class Built:
    flow: type[Workflow]
    initial: dict[str, Any]
    #: Per segment: the step classes whose runs the properties check.
    loops: dict[int, type[Step]]


def build(chain: list[Segment]) -> Built:
    """The workflow of ``chain`` (may raise ``WorkflowDefinitionError``)."""
    transitions: dict[type, dict[str, Any]] = {}
    routes: dict[str, Any] = {}
    entries: list[Any] = []
    exits: list[type[Step]] = []
    initial: dict[str, Any] = {}
    loops: dict[int, type[Step]] = {}
    for i, seg in enumerate(chain):
        if seg.kind == "plain":
            step = _step(f"P{i}", ("next",), _emit("next"))
            entries.append(step)
            exits.append(step)
        elif seg.kind == "for_each":
            events = ("next", "extra") if seg.broken else ("next",)
            step = _step(f"F{i}", events, lambda inst, cfg, ctx: Ok("next", {"x": cfg["item"]}))
            initial[f"items{i}"] = seg.items
            entries.append(ForEach(step, items=f"items{i}", concurrency=seg.concurrency))
            exits.append(step)
            loops[i] = step
            if seg.broken:
                transitions[step] = {"extra": Done}
        elif seg.kind == "repeat":

            def poll_body(instance: Any, config: Any, context: Any, i: int = i) -> Any:
                done = context.steps.get(f"r{i}", {}).get("runs", 0)
                return Ok("again" if done < chain[i].agains else "next", {"runs": done + 1})

            step = _step(f"R{i}", ("again", "next"), poll_body)
            again = "nope" if seg.broken else "again"
            limit = 0 if seg.broken and seg.max_iterations == 1 else seg.max_iterations
            entries.append(Repeat(step, again=again, max_iterations=limit))
            exits.append(step)
            loops[i] = step
            if seg.broken and again == "nope":
                transitions[step] = {"again": Done}
        elif seg.kind == "choice":
            source = _step(f"C{i}", ("go",), _emit("go"))
            join = _step(f"J{i}", ("next",), _emit("next"))
            branches = [_step(f"B{i}x{k}", ("done",), _emit("done")) for k in range(seg.items[0])]
            for branch in branches:
                transitions[branch] = {"done": join}
            chosen = [branches[k] for k in seg.chosen]
            routes[f"route{i}"] = transit(source, "go", targets=branches, many=True)(
                lambda context, chosen=chosen: list(chosen)
            )
            entries.append(source)
            exits.append(join)
        elif seg.kind == "race":
            source = _step(f"A{i}", ("go",), _emit("go"))
            winner = _step(f"W{i}", ("next",), _emit("next"), join="first")
            heads = []
            lengths = seg.items[:1] if seg.broken else seg.items
            for k, length in enumerate(lengths):
                chain_steps = [
                    _step(f"L{i}x{k}x{j}", ("done",), _emit("done")) for j in range(length)
                ]
                for a, b in itertools.pairwise(chain_steps):
                    transitions[a] = {"done": b}
                transitions[chain_steps[-1]] = {"done": winner}
                heads.append(chain_steps[0])
            transitions[source] = {"go": heads}
            entries.append(source)
            exits.append(winner)
        else:  # stop
            event = "stop" if seg.stop else "ok"
            step = _step(f"T{i}", ("ok", "stop"), _emit(event))
            transitions[step] = {"stop": Terminate}
            entries.append(step)
            exits.append(step)
    for i, exit_step in enumerate(exits):
        target = entries[i + 1] if i + 1 < len(entries) else Done
        event = "ok" if chain[i].kind == "stop" else "next"
        transitions.setdefault(exit_step, {})[event] = target
    body = {"start": entries[0], "transitions": transitions, **routes, "__module__": __name__}
    flow = type(f"Flow{next(_SERIAL)}", (Workflow,), body, unique=Unique("flow"))
    return Built(flow, initial, loops)


def expected(chain: list[Segment]) -> tuple[Status, int]:
    """The final status, and how many segments run (the last one may fail
    or terminate)."""
    for i, seg in enumerate(chain):
        if seg.kind == "repeat" and seg.agains >= seg.max_iterations:
            return Status.FAILED, i + 1
        if seg.kind == "stop" and seg.stop:
            return Status.COMPLETED, i + 1
    return Status.COMPLETED, len(chain)


def check(chain: list[Segment], built: Built, done: Instance) -> None:
    status, ran = expected(chain)
    assert done.status is status, (done.status, done.error)
    if status is Status.FAILED:
        assert done.error is not None
        assert done.error["kind"] == "max_iterations"
    assert not done.completed_steps & done.skipped_steps
    for i, step in built.loops.items():
        runs = [e.iteration for e in done.execution_history if e.step_ref is step]
        if i >= ran:
            assert runs == []
            continue
        seg = chain[i]
        if seg.kind == "for_each":
            assert sorted(runs) == list(range(len(seg.items))), "each item once"
            assert done.context.steps[step.step_key] == [{"x": x} for x in seg.items]
        else:
            count = min(seg.agains + 1, seg.max_iterations)
            assert runs == list(range(count)), "each repetition once, in order"
    others = [e for e in done.execution_history if e.step_ref not in built.loops.values()]
    assert all(e.iteration is None for e in others)
    counted = [e.step_ref for e in others]
    assert len(counted) == len(set(counted)), "an ordinary step ran twice"
    for i, seg in enumerate(chain[:ran]):
        if seg.kind == "choice":
            names = {e.step_ref.__name__.split("_")[0] for e in others}
            assert {f"B{i}x{k}" for k in seg.chosen} <= names
            unchosen = {f"B{i}x{k}" for k in range(seg.items[0])} - {
                f"B{i}x{k}" for k in seg.chosen
            }
            assert not unchosen & names
        if seg.kind == "race":
            names = [e.step_ref.__name__.split("_")[0] for e in others]
            assert names.count(f"W{i}") == 1, "the first-wins join ran once"
    if status is Status.COMPLETED:
        last = done.execution_history[-1].step_ref
        assert last is (
            Terminate if chain[ran - 1].kind == "stop" and chain[ran - 1].stop else Done
        )
    assert Instance.from_json(done.to_json()) == done


@settings(max_examples=150, deadline=None)
@given(segments())
def test_random_control_flow_validates_runs_and_records_each_run_once(chain: list[Segment]) -> None:
    broken = any(seg.broken for seg in chain)
    if broken:
        event("broken")
        with pytest.raises(WorkflowDefinitionError):
            build(chain)
        return
    built = build(chain)
    event(f"status {expected(chain)[0].value}")
    for seg in chain:
        event(f"segment {seg.kind}")
    instance = Instance.new(built.flow, 1, built.initial, "flow::1")
    check(chain, built, engine.run(instance))
    check(chain, built, asyncio.run(engine.arun(instance)))
