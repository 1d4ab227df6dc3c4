"""The public API used as a typed application would use it.

`mypy --strict tests/test_typing.py` checks this file in CI (so the stubs must
describe the API truthfully); pytest runs it (so it must also work).
"""

from __future__ import annotations

import pickle
from datetime import datetime, timezone
from typing import Any

import hephaestus
import pytest
from hephaestus import (
    Context,
    Done,
    ExecutionEntry,
    HephaestusError,
    Instance,
    InvalidTransitionError,
    Ok,
    SerializationError,
    Status,
    Step,
    Unique,
    Workflow,
    step_key,
)
from hephaestus.steps import StepResult, StepReturn, normalize_result


class TypedStep(Step):
    step_key = "typed"
    events = ("done",)


class OtherStep(Step):
    pass


class TypedFlow(Workflow, unique=Unique("typed")):
    start = TypedStep
    transitions = {TypedStep: {"done": Done}}


def build() -> Instance:
    inst: Instance = Instance.new(TypedFlow, 1, {"n": 1}, "orderid::typed")
    inst = inst.replace(status=Status.RUNNING, telemetry_metadata={"trace": "t"})
    inst = inst.activate_step(TypedStep, {"limit": 3})
    when = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return inst.complete_step(TypedStep, "done", {"ok": True}, {"m": 1}, timestamp=when)


def test_typed_usage() -> None:
    inst = build()
    status: Status = inst.status
    active: frozenset[type] = inst.active_steps
    completed: frozenset[type] = inst.completed_steps
    history: list[ExecutionEntry] = inst.execution_history
    context: Context = inst.context
    steps: dict[str, dict[str, Any]] = context.steps
    configs: dict[type, Any] = inst.step_configs
    error: dict[str, Any] | None = inst.error
    start: int | None = inst.telemetry_start_time
    assert status is Status.RUNNING
    assert not status.is_terminal
    assert active == frozenset()
    assert completed == {TypedStep}
    assert history[0].step_ref is TypedStep
    assert history[0].event == "done"
    assert steps == {"typed": {"ok": True}}
    assert configs == {}
    assert error is None
    assert start is None
    assert step_key(TypedStep) == "typed"
    assert step_key(OtherStep) == "other_step"
    assert inst.is_completed(TypedStep)
    assert inst.completed_count == 1
    assert isinstance(hephaestus.__version__, str)
    assert hephaestus.FORMAT_VERSION == 2


def test_typed_construction_and_round_trips() -> None:
    inst = Instance(
        id="orderid::raw",
        workflow=TypedFlow,
        status="running",
        context=Context.new({"a": 1}).put_step_result("typed", {"ok": 1}),
        active_steps=[OtherStep],
        completed_steps={TypedStep},
        waiting_steps=(),
        execution_history=[
            ExecutionEntry(TypedStep, "done", datetime(2024, 1, 1, tzinfo=timezone.utc))
        ],
    )
    same: Instance = Instance.from_json(inst.to_json())
    also: Instance = Instance.from_bytes(inst.to_bytes())
    copied: Instance = pickle.loads(pickle.dumps(inst))
    assert same == inst == also == copied


def test_typed_errors() -> None:
    inst = build()
    with pytest.raises(InvalidTransitionError) as caught:
        inst.complete_step(OtherStep, "done")
    error: HephaestusError = caught.value
    assert isinstance(error, ValueError)
    with pytest.raises(SerializationError, match="cannot read instance"):
        Instance.from_json("{}")


class TypedCheck(Step):
    events = ("ok", "bad")

    def execute(self, instance: Instance, config: Any, context: Context) -> StepReturn:
        return Ok("ok", {"checked": True}) if context.initial else "bad"


class TypedFix(Step):
    events = ("fixed",)

    async def execute(self, instance: Instance, config: Any, context: Context) -> StepReturn:
        return "fixed"


class TypedFlowDefinition(Workflow, unique=Unique("typed"), tags=("t",), metadata={"k": 1}):
    start = (TypedCheck, {"strict": True})
    transitions = {TypedCheck: {"ok": Done, "bad": TypedFix}, TypedFix: {"fixed": Done}}


def test_typed_workflow_definition() -> None:
    graph = TypedFlowDefinition.graph
    start: type = graph.start
    edges: list[tuple[type, str, type]] = graph.edges
    before: frozenset[type] = graph.predecessors(Done)
    assert start is TypedCheck
    assert len(edges) == 3
    assert before == {TypedCheck, TypedFix}
    version: tuple[int, type[Workflow]] = TypedFlowDefinition.resolve_version()
    assert version == (1, TypedFlowDefinition)
    assert graph.to_mermaid().startswith("flowchart TD")
    result: StepResult = normalize_result("ok", step=TypedCheck)
    assert result == Ok("ok")
