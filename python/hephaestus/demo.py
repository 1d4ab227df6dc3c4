"""A short demo on the embedded defaults: ``python -m hephaestus.demo``.

It defines an order workflow with a fan-out and a join, prints its graph as
Mermaid, runs one order through it in-process with ``engine.run``, and
prints the history, the results and the instance's JSON.
"""

from __future__ import annotations

from typing import Any

from hephaestus import Done, Instance, Ok, Step, Unique, Workflow, engine


class ValidateOrder(Step):
    """Checks that the order has items."""

    events = ("valid", "invalid")

    def execute(self, instance: Instance, config: Any, context: Any) -> Ok | str:
        items = context.initial.get("items", [])
        return Ok("valid", {"item_count": len(items)}) if items else "invalid"


class ChargeCard(Step):
    """Charges the total (one branch of the fan-out)."""

    events = ("charged",)

    def execute(self, instance: Instance, config: Any, context: Any) -> Ok:
        total = sum(context.initial["items"]) * config["unit_price"]
        return Ok("charged", {"amount": total}, metadata={"payment": "card"})


class ReserveStock(Step):
    """Reserves the items (the other branch)."""

    events = ("reserved",)

    def execute(self, instance: Instance, config: Any, context: Any) -> Ok:
        return Ok("reserved", {"warehouse": "north"})


class Ship(Step):
    """Ships once both branches are done (the join)."""

    events = ("shipped",)

    def execute(self, instance: Instance, config: Any, context: Any) -> str:
        return "shipped"


class RejectOrder(Step):
    """Rejects an empty order."""

    events = ("rejected",)

    def execute(self, instance: Instance, config: Any, context: Any) -> str:
        return "rejected"


class OrderFlow(Workflow, unique=Unique("orderid")):
    """Validate, then charge and reserve in parallel, then ship."""

    start = ValidateOrder
    transitions = {
        ValidateOrder: {
            "valid": [(ChargeCard, {"unit_price": 2.5}), ReserveStock],
            "invalid": RejectOrder,
        },
        ChargeCard: {"charged": Ship},
        ReserveStock: {"reserved": Ship},
        Ship: {"shipped": Done},
        RejectOrder: {"rejected": Done},
    }


def main() -> None:
    """Runs the demo and prints each stage."""
    print(OrderFlow.graph.to_mermaid())
    order = engine.run(
        Instance.new(OrderFlow, 1, {"items": [3, 5]}, OrderFlow.unique.build_id("demo1"))
    )
    print(order)
    print("history:")
    for entry in order.execution_history:
        print(f"  {entry.step_ref.__name__:<13} -> {entry.event}")
    print("skipped:  ", sorted(step.__name__ for step in order.skipped_steps))
    print("results:  ", order.context.steps)
    print("metadata: ", order.runtime_metadata)
    text = order.to_json()
    assert Instance.from_json(text) == order
    print(f"json ({len(text)} bytes; the binary form takes {len(order.to_bytes())}):")
    print(text)


if __name__ == "__main__":
    main()
