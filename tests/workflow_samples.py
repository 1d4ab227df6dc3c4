"""Module-level steps and workflows shared by the workflow tests (importable by
name, as stored instances need)."""

from __future__ import annotations

from typing import Any

from hephaestus.steps import Done, Step
from hephaestus.unique import Unique
from hephaestus.workflow import Workflow, transit


class _Base(Step):
    def execute(self, instance: Any, config: Any, context: Any) -> str:
        return self.events[0]


class ValidateOrder(_Base):
    events = ("valid", "invalid")


class ProcessPayment(_Base):
    events = ("paid",)


class ChargeCard(_Base):
    events = ("charged",)


class ReserveStock(_Base):
    events = ("reserved",)


class Ship(_Base):
    events = ("shipped",)


class RejectOrder(_Base):
    events = ("rejected",)


class Triage(_Base):
    events = ("routed",)


class FastTrack(_Base):
    events = ("done",)
    step_key = "fast"


class Standard(_Base):
    events = ("done",)


class OrderFlow(
    Workflow, unique=Unique("orderid"), tags=("orders",), metadata={"team": "checkout"}
):
    start = (ValidateOrder, {"strict": True})
    transitions = {
        ValidateOrder: {"valid": ProcessPayment, "invalid": RejectOrder},
        ProcessPayment: {"paid": [ChargeCard, (ReserveStock, {"warehouse": "north"})]},
        ChargeCard: {"charged": Ship},
        ReserveStock: {"reserved": Ship},
        Ship: {"shipped": Done},
        RejectOrder: {"rejected": Done},
    }


class TriageFlow(Workflow, unique=Unique("ticket"), version=2):
    start = Triage
    transitions = {FastTrack: {"done": Done}, Standard: {"done": Done}}

    @transit(Triage, "routed", targets=[FastTrack, Standard])
    def route(context: Any) -> type:
        return FastTrack if context.initial.get("priority") == "high" else Standard


class TriageV1(Workflow, unique=Unique("ticket")):
    start = Triage
    transitions = {Triage: {"routed": Standard}, Standard: {"done": Done}}


class Tickets(Workflow, unique=Unique("ticket"), versions={1: TriageV1, 2: TriageFlow}, current=2):
    pass
