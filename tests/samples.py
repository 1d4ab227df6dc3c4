"""Sample workflow and step classes shared by the tests.

They live at module level so that ``Instance.from_json`` and friends can
resolve them by import as ``"samples:QualName"`` (pytest puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import datetime as dt
import math

from hephaestus import Done, ExecutionEntry, Instance, Status, Step, Unique, Workflow

UTC = dt.timezone.utc
# A fixed, known instant for explicit timestamps.
T0 = dt.datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)


# -- steps -------------------------------------------------------------------
# Step subclasses (loading accepts only those where a step belongs); the
# bookkeeping tests never run them.


class ValidateOrder(Step):
    events = ("valid", "invalid")


class ProcessPayment(Step):
    events = ("paid",)


class Pay(Step):
    events = ("paid",)


class ChargeCard(Step):
    events = ("charged",)


class ReserveStock(Step):
    events = ("reserved",)


class Ship(Step):
    events = ("shipped",)


class RejectOrder(Step):
    events = ("rejected",)


class HTTPClient(Step):
    """Default step key ``http_client``."""


class Keyed(Step):
    """A step with an explicit key."""

    step_key = "validate"


class NoneKeyed(Step):
    """``step_key = None`` means: use the default."""

    step_key = None


class Outer:
    """Holds a nested step class, serialized as ``samples:Outer.Inner``."""

    class Inner(Step):
        pass


# -- workflows ---------------------------------------------------------------


class OrderFlow(Workflow, unique=Unique("orderid")):
    """A workflow; the bookkeeping tests also use steps outside its graph."""

    start = ValidateOrder
    transitions = {
        ValidateOrder: {"valid": ProcessPayment, "invalid": RejectOrder},
        ProcessPayment: {"paid": [ChargeCard, ReserveStock]},
        ChargeCard: {"charged": Ship},
        ReserveStock: {"reserved": Ship},
        Ship: {"shipped": Done},
        RejectOrder: {"rejected": Done},
    }


class RefundFlow(Workflow, unique=Unique("refundid")):
    """Another workflow."""

    start = Pay
    transitions = {Pay: {"paid": Done}}


STEPS = (ValidateOrder, ProcessPayment, Pay, ChargeCard, ReserveStock, Ship, RejectOrder)


def not_a_class():
    """A module attribute that is not a class (for resolution errors)."""


def make_local_step(name: str = "LocalStep") -> type:
    """A class defined inside a function: its qualname has ``<locals>``."""

    class LocalStep(Step):
        pass

    LocalStep.__name__ = name
    LocalStep.__qualname__ = f"make_local_step.<locals>.{name}"
    return LocalStep


def make_twin(qualname: str) -> type:
    """A new class claiming to be ``samples:<qualname>`` (as a factory or a
    loop makes them); each call gives a distinct class with the same name."""
    return type(
        qualname.rsplit(".", 1)[-1], (Step,), {"__module__": __name__, "__qualname__": qualname}
    )


# -- instances ---------------------------------------------------------------


def new_instance(context=None, *, workflow=OrderFlow, version=1, id="orderid::abc"):
    return Instance.new(workflow, version, {} if context is None else context, id)


def running(context=None, **kwargs) -> Instance:
    return new_instance(context, **kwargs).replace(status=Status.RUNNING)


def rich_instance() -> Instance:
    """An instance with every field set to something non-default."""
    inst = Instance.new(
        OrderFlow,
        2,
        {
            "items": [1, 2.5, "three", b"\x00\xff", None, True],
            "when": dt.datetime(2024, 1, 2, 3, 4, 5, 6),
            "$price": math.nan,
            "nested": {"inf": math.inf, "ninf": -math.inf, "t": (1, (2, 3))},
        },
        "orderid::abc",
    ).replace(
        status=Status.RUNNING,
        telemetry_metadata={"request_id": "abc-123"},
        telemetry_start_time=123_456_789,
    )
    inst = inst.activate_step(ValidateOrder, {"timeout": 5})
    inst = inst.complete_step(
        ValidateOrder, "valid", {"item_count": 3}, {"attempt": 1}, timestamp=T0
    )
    inst = inst.activate_step(ChargeCard, {"amount": 10.5})
    inst = inst.complete_step(
        ChargeCard, "charged", None, {"attempt": 2}, timestamp=T0 + dt.timedelta(seconds=1)
    )
    inst = inst.activate_step(ReserveStock, [1, 2])
    inst = inst.activate_step(Ship)
    inst = inst.wait_step(Ship)
    inst = inst.skip_step(RejectOrder)
    return inst


def entry(step=ValidateOrder, event="valid", timestamp=T0, context_updates=None):
    return ExecutionEntry(step, event, timestamp, context_updates)


__all__ = [
    "STEPS",
    "T0",
    "UTC",
    "ChargeCard",
    "HTTPClient",
    "Keyed",
    "NoneKeyed",
    "OrderFlow",
    "Outer",
    "Pay",
    "ProcessPayment",
    "RefundFlow",
    "RejectOrder",
    "ReserveStock",
    "Ship",
    "ValidateOrder",
    "entry",
    "make_local_step",
    "make_twin",
    "new_instance",
    "not_a_class",
    "rich_instance",
    "running",
]
