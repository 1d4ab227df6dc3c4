"""A short demo on the embedded defaults: ``python -m hephaestus.demo``.

An order workflow runs on the durable runtime, in an SQLite file:

1. this process starts the order: it validates, charges the card and
   reserves the stock in parallel (a fan-out), ships once both are done (a
   join), and then waits for the payment to be confirmed;
2. the process stops; a second process opens the same file, finds the order
   where the first left it, delivers the payment event, and waits out a
   short timer (a ``Wait`` step) before the order completes;
3. it prints the order's history, step by step.

``python -m hephaestus.demo --db PATH`` keeps the database at ``PATH``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hephaestus import (
    Done,
    Hephaestus,
    Instance,
    Ok,
    Step,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
)


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

    async def execute(self, instance: Instance, config: Any, context: Any) -> Ok:
        return Ok("reserved", {"warehouse": "north"})


class Ship(Step):
    """Ships once both branches are done (the join)."""

    events = ("shipped",)

    def execute(self, instance: Instance, config: Any, context: Any) -> str:
        return "shipped"


class AwaitPayment(WaitForEvent):
    """Waits until the payment provider confirms (an external event)."""

    events = ("payment_confirmed",)


class CoolingOff(Wait):
    """Waits out a short cooling-off period (a durable timer)."""


class RejectOrder(Step):
    """Rejects an empty order."""

    events = ("rejected",)

    def execute(self, instance: Instance, config: Any, context: Any) -> str:
        return "rejected"


class OrderFlow(Workflow, unique=Unique("orderid")):
    """Validate; charge and reserve in parallel; ship; wait for the payment;
    a cooling-off period; done."""

    start = ValidateOrder
    transitions = {
        ValidateOrder: {
            "valid": [(ChargeCard, {"unit_price": 2.5}), ReserveStock],
            "invalid": RejectOrder,
        },
        ChargeCard: {"charged": Ship},
        ReserveStock: {"reserved": Ship},
        Ship: {"shipped": AwaitPayment},
        AwaitPayment: {"payment_confirmed": (CoolingOff, {"duration": 1, "unit": "second"})},
        CoolingOff: {"timeout": Done},
        RejectOrder: {"rejected": Done},
    }


ORDER = "demo1"


def _names(steps: Any) -> str:
    return ", ".join(sorted(step.__name__ for step in steps)) or "-"


def first_process(db: str) -> None:
    """Starts the order and leaves it waiting for its payment."""
    print(OrderFlow.graph.to_mermaid())
    with Hephaestus(db) as app:
        iid = app.start_instance(OrderFlow, {"items": [3, 5]}, id=f"orderid::{ORDER}")
        print(f"[process 1] started {iid}")
        order = app.wait(iid, timeout=30)
        print(f"[process 1] {order.status.value}: completed {_names(order.completed_steps)}")
        print(f"[process 1] waiting for: {_names(order.waiting_steps)}")
    print("[process 1] stopped; the order is in", db)


def second_process(db: str) -> None:
    """Picks the order up, confirms its payment, and lets it finish."""
    with Hephaestus(db) as app:
        order = OrderFlow.get(ORDER)
        waiting = _names(order.waiting_steps)
        print(f"[process 2] found {order.id}: {order.status.value}, waiting for {waiting}")
        OrderFlow.resume(ORDER, "payment_confirmed")
        print("[process 2] payment confirmed; cooling off for a second")
        order = app.wait(order.id, timeout=30)
        while order.status == "waiting":  # the timer runs
            time.sleep(0.05)
            order = app.wait(order.id, timeout=30)
        print(f"[process 2] {order}")
        print("history:")
        start = order.execution_history[0].timestamp
        for entry in order.execution_history:
            offset = (entry.timestamp - start).total_seconds()
            print(f"  +{offset:5.2f}s  {entry.step_ref.__name__:<13} -> {entry.event}")
        print("results:  ", order.context.steps)
        print("metadata: ", order.runtime_metadata)


def main(argv: list[str] | None = None) -> None:
    """Runs the demo: both processes, one after the other."""
    parser = argparse.ArgumentParser(prog="python -m hephaestus.demo", description=__doc__)
    parser.add_argument("--db", help="the SQLite file (default: a new temporary one)")
    parser.add_argument("--second", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.second:
        second_process(args.db)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "orders.db")
        first_process(db)
        # A new process: nothing is shared but the database file.
        command = [sys.executable, "-m", "hephaestus.demo", "--second", "--db", db]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
