"""Module-level steps and workflows for the engine tests (importable by name,
so that serialized instances resolve them), plus helpers that drive an
instance step by step and check the bookkeeping invariants on the way.

Recorded steps append their step key to :data:`RUNS` each time they execute,
so a test can count executions independently of the instance's history; the
async racers write to :data:`LOG`. The tests clear both before each test.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from hephaestus import (
    Async,
    Done,
    Error,
    Instance,
    Ok,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
    engine,
    step_key,
    transit,
)

RUNS: list[str] = []
"""Step keys, one per execution of a recorded step."""

LOG: list[str] = []
"""What the async racers did, in order."""


class Recorded(Step):
    """Records its run in ``RUNS`` and emits its first event (as a bare str)."""

    events = ("next",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RUNS.append(step_key(type(self)))
        return self.events[0]


# -- a join after exclusive branches ------------------------------------------


class Check(Recorded):
    events = ("valid", "invalid")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RUNS.append(step_key(type(self)))
        return "valid" if context.initial.get("valid") else "invalid"


class OnValid(Recorded):
    events = ("next",)


class OnInvalid(Recorded):
    events = ("next",)


class Merge(Recorded):
    """Records which step results it saw."""

    events = ("merged",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RUNS.append(step_key(type(self)))
        return Ok("merged", {"seen": sorted(context.steps)})


class ExclusiveJoinFlow(Workflow, unique=Unique("excl")):
    start = Check
    transitions = {
        Check: {"valid": OnValid, "invalid": OnInvalid},
        OnValid: {"next": Merge},
        OnInvalid: {"next": Merge},
        Merge: {"merged": Done},
    }


# -- a join after a dynamic route ---------------------------------------------


class Dispatch(Recorded):
    events = ("routed",)


class Express(Recorded):
    events = ("next",)


class Regular(Recorded):
    events = ("next",)


class Finish(Recorded):
    events = ("finished",)


class Stray(Recorded):
    """In no workflow's graph that routes to it."""

    events = ("next",)


class Configured(Step):
    """Reports the config it was given."""

    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RUNS.append(step_key(type(self)))
        return Ok("done", {"config_received": config})


class RouteJoinFlow(Workflow, unique=Unique("routejoin")):
    start = Dispatch
    transitions = {Express: {"next": Finish}, Regular: {"next": Finish}, Finish: {"finished": Done}}

    @transit(Dispatch, "routed", targets=[Express, Regular])
    def route(context: Any) -> Any:
        return Express if context.initial.get("express") else Regular


class RouteConfigFlow(Workflow, unique=Unique("routeconfig")):
    """The route returns ``(step, config)``."""

    start = Dispatch
    transitions = {Configured: {"done": Done}, Regular: {"next": Done}}

    @transit(Dispatch, "routed", targets=[Configured, Regular])
    def route(context: Any) -> Any:
        if context.initial.get("configured"):
            return (Configured, {"lane": "fast"})
        return Regular


class BadRouteFlow(Workflow, unique=Unique("badroute")):
    """The route may return a step it did not declare."""

    start = Dispatch
    transitions = {Express: {"next": Finish}, Regular: {"next": Finish}, Finish: {"finished": Done}}

    @transit(Dispatch, "routed", targets=[Express, Regular])
    def route(context: Any) -> Any:
        return {"express": Express, "finish": Finish, "stray": Stray}[context.initial["target"]]


# -- a fan-out inside one branch of an exclusive choice -----------------------


class Choose(Recorded):
    events = ("x", "y")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RUNS.append(step_key(type(self)))
        return context.initial["choice"]


class Split(Recorded):
    events = ("split",)


class Left(Recorded):
    events = ("left",)


class Middle(Recorded):
    events = ("middle",)


class Right(Recorded):
    events = ("right",)


class Gather(Recorded):
    events = ("gathered",)


class Other(Recorded):
    events = ("other",)


class End(Recorded):
    events = ("end",)


class NestedFlow(Workflow, unique=Unique("nested")):
    start = Choose
    transitions = {
        Choose: {"x": Split, "y": Other},
        Split: {"split": [Left, Right]},
        Left: {"left": Gather},
        Right: {"right": Gather},
        Gather: {"gathered": End},
        Other: {"other": End},
        End: {"end": Done},
    }


# -- a parallel fan-out ---------------------------------------------------------


class Fork(Recorded):
    events = ("fork",)


class ParallelFlow(Workflow, unique=Unique("parallel")):
    start = Fork
    transitions = {
        Fork: {"fork": [Left, Middle, Right]},
        Left: {"left": Gather},
        Middle: {"middle": Gather},
        Right: {"right": Gather},
        Gather: {"gathered": Done},
    }


class ConfigJoinFlow(Workflow, unique=Unique("configjoin")):
    """One branch's transition into the join carries a config."""

    start = Fork
    transitions = {
        Fork: {"fork": [Left, Right]},
        Left: {"left": (Configured, {"from": "left"})},
        Right: {"right": Configured},
        Configured: {"done": Done},
    }


# -- the original's workflows ----------------------------------------------------


class StepA(Recorded):
    events = ("done",)


class StepB(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RUNS.append(step_key(type(self)))
        return Ok("done", {"processed": True})


class LinearFlow(Workflow, unique=Unique("linear")):
    start = StepA
    transitions = {StepA: {"done": StepB}, StepB: {"done": Done}}


class Approval(Recorded):
    events = ("approved", "rejected")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RUNS.append(step_key(type(self)))
        return Ok("approved" if context.initial.get("approve") else "rejected")


class Approve(Recorded):
    events = ("done",)


class Reject(Recorded):
    events = ("done",)


class BranchFlow(Workflow, unique=Unique("branch")):
    start = Approval
    transitions = {
        Approval: {"approved": Approve, "rejected": Reject},
        Approve: {"done": Done},
        Reject: {"done": Done},
    }


class TransitionConfigFlow(Workflow, unique=Unique("transconfig")):
    start = StepA
    transitions = {StepA: {"done": (Configured, {"timeout": 1000})}, Configured: {"done": Done}}


class StartConfigFlow(Workflow, unique=Unique("startconfig")):
    start = (Configured, {"timeout": 5000})
    transitions = {Configured: {"done": Done}}


class Pause(Step):
    """Waits (like the original's AsyncWait)."""

    events = ("timeout",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RUNS.append(step_key(type(self)))
        return Async()


class AsyncFlow(Workflow, unique=Unique("asyncflow")):
    start = StepA
    transitions = {StepA: {"done": Pause}, Pause: {"timeout": StepB}, StepB: {"done": Done}}


class EventFlow(Workflow, unique=Unique("eventflow")):
    start = StepA
    transitions = {
        StepA: {"done": WaitForEvent},
        WaitForEvent: {"received": StepB},
        StepB: {"done": Done},
    }


class WaitLeft(Pause):
    events = ("received",)


class WaitRight(Pause):
    events = ("received",)


class TwoWaitsFlow(Workflow, unique=Unique("twowaits")):
    start = Fork
    transitions = {
        Fork: {"fork": [WaitLeft, WaitRight]},
        WaitLeft: {"received": Gather},
        WaitRight: {"received": Gather},
        Gather: {"gathered": Done},
    }


class MixedWaitFlow(Workflow, unique=Unique("mixedwait")):
    """One branch runs, the other waits."""

    start = Fork
    transitions = {
        Fork: {"fork": [Left, Pause]},
        Left: {"left": Gather},
        Pause: {"timeout": Gather},
        Gather: {"gathered": Done},
    }


class MetaFirst(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return Ok("done", None, {"order_id": 42, "status": "pending"})


class MetaSecond(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return Ok("done", {"x": 1}, {"status": "paid"})


class MetadataFlow(Workflow, unique=Unique("metadata")):
    start = MetaFirst
    transitions = {MetaFirst: {"done": MetaSecond}, MetaSecond: {"done": Done}}


class Keyed(Step):
    events = ("done",)
    step_key = "custom_key"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return Ok("done", {"data": True})


class KeyFlow(Workflow, unique=Unique("keyflow")):
    start = Keyed
    transitions = {Keyed: {"done": Done}}


# -- failures -----------------------------------------------------------------------


class Failures:
    class Declined(Exception):
        """Raised by :class:`Explode`; its type is ``engine_samples.Failures.Declined``."""


class Explode(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RUNS.append(step_key(type(self)))
        raise Failures.Declined("card declined")


class Refuse(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return Error("out of stock")


class Liar(Step):
    """Emits an event it does not declare."""

    events = ("ok", "fine")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return "bogus"


class ExplodeFlow(Workflow, unique=Unique("explode")):
    start = StepA
    transitions = {StepA: {"done": Explode}, Explode: {"done": Done}}


class RefuseFlow(Workflow, unique=Unique("refuse")):
    start = StepA
    transitions = {StepA: {"done": Refuse}, Refuse: {"done": Done}}


class LiarFlow(Workflow, unique=Unique("liar")):
    start = StepA
    transitions = {StepA: {"done": Liar}, Liar: {"ok": Done, "fine": Done}}


class FailingBranchFlow(Workflow, unique=Unique("failbranch")):
    """``Left`` completes and reaches ``Gather``; then ``Explode`` raises."""

    start = Fork
    transitions = {
        Fork: {"fork": [Left, Explode]},
        Left: {"left": Gather},
        Explode: {"done": Gather},
        Gather: {"gathered": Done},
    }


class NotAStep:
    """A class that is no Step."""


# -- async steps ----------------------------------------------------------------------


class AsyncDouble(Step):
    events = ("done",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        await asyncio.sleep(0)
        return Ok("done", {"value": context.initial["n"] * 2})


class AsyncLinearFlow(Workflow, unique=Unique("asynclinear")):
    start = AsyncDouble
    transitions = {AsyncDouble: {"done": StepB}, StepB: {"done": Done}}


class AsyncPause(Step):
    events = ("timeout",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        await asyncio.sleep(0)
        return Async()


class AsyncPauseFlow(Workflow, unique=Unique("asyncpause")):
    start = AsyncPause
    transitions = {AsyncPause: {"timeout": Done}}


class _Racer(Step):
    """Logs its start, yields to the loop a few times, then logs its end."""

    events = ("done",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        name = step_key(type(self))
        LOG.append(f"{name} start")
        for _ in range(3):
            await asyncio.sleep(0)
        LOG.append(f"{name} end")
        return Ok("done", {"runner": name})


class Tortoise(_Racer):
    pass


class Hare(_Racer):
    pass


class RaceFlow(Workflow, unique=Unique("race")):
    start = Fork
    transitions = {
        Fork: {"fork": [Tortoise, Hare]},
        Tortoise: {"done": Gather},
        Hare: {"done": Gather},
        Gather: {"gathered": Done},
    }


# -- helpers ---------------------------------------------------------------------------


def new(workflow: type, context: dict[str, Any] | None = None, version: int = 1) -> Instance:
    return Instance.new(workflow, version, context or {}, "flow::1")


def check_invariants(instance: Instance) -> None:
    """The bookkeeping invariants every instance the engine returns must keep."""
    active, completed = instance.active_steps, instance.completed_steps
    skipped, reached = instance.skipped_steps, instance.reached_steps
    waiting = instance.waiting_steps
    named = {"active": active, "completed": completed, "skipped": skipped, "reached": reached}
    for first, a in named.items():
        for second, b in named.items():
            if first < second:
                assert not (a & b), f"{first} and {second} overlap: {a & b}"
    assert waiting <= active, f"waiting steps that are not active: {waiting - active}"
    history = collections.Counter(entry.step_ref for entry in instance.execution_history)
    assert set(history) == set(completed), (history, completed)
    assert all(count == 1 for count in history.values()), history
    assert set(instance.context.steps) == {step_key(step) for step in completed}
    if instance.status is Status.WAITING:
        assert active, "WAITING with no active step"
        assert active == waiting, "WAITING while some active step can run"
    if instance.status in (Status.COMPLETED, Status.FAILED):
        assert not active, active
        assert not reached, reached
        assert not waiting, waiting
    if instance.status is not Status.PENDING:
        assert set(instance.step_configs) <= active | reached, instance.step_configs


def runnable(instance: Instance) -> list[type]:
    """The active, not waiting steps in the graph's definition order."""
    graph = instance.workflow.graph
    return [
        step
        for step in graph.steps
        if step in instance.active_steps and step not in instance.waiting_steps
    ]


def drive(instance: Instance, trail: list[Instance] | None = None) -> Instance:
    """What ``engine.run`` does, one public call at a time, checking the
    invariants after every call (and keeping every intermediate instance in
    ``trail``)."""

    def keep(value: Instance) -> Instance:
        check_invariants(value)
        if trail is not None:
            trail.append(value)
        return value

    instance = keep(engine.advance(instance))
    while instance.status is Status.RUNNING and (steps := runnable(instance)):
        step = steps[0]
        try:
            result = engine.execute_step(instance, step)
        except Exception as exc:  # the step failed; run records more detail
            instance = keep(engine.fail(instance, step, str(exc)))
            continue
        if isinstance(result, Ok) and result.event not in step.events:
            instance = keep(engine.fail(instance, step, result.event))
        elif isinstance(result, Ok):
            instance = keep(
                engine.complete_step(
                    instance, step, result.event, result.context_updates, result.metadata
                )
            )
            instance = keep(engine.activate_transitions(instance, step, result.event))
        elif isinstance(result, Async):
            instance = keep(instance.wait_step(step))
        else:
            instance = keep(engine.fail(instance, step, result.reason))
    return keep(engine.check_completion(instance))


def history_steps(instance: Instance) -> list[type]:
    return [entry.step_ref for entry in instance.execution_history]


#: The fields that say where an instance ended.
END_STATE = (
    "status",
    "active_steps",
    "waiting_steps",
    "completed_steps",
    "skipped_steps",
    "reached_steps",
    "context",
    "runtime_metadata",
    "step_configs",
    "error",
)


def assert_same_state(
    actual: Instance, expected: Instance, fields: tuple[str, ...] = END_STATE
) -> None:
    """Asserts that two instances agree on ``fields``, naming the first that differs."""
    for field in fields:
        assert getattr(actual, field) == getattr(expected, field), field
