"""A short demo on the embedded defaults: ``python -m hephaestus.demo``.

It walks an order through its steps with the immutable ``Instance`` value
(activate, complete, wait, resume), then prints the instance, its history and
its JSON form.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hephaestus import Instance

START = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


class OrderFlow:
    """The workflow (the engine that runs workflows comes in the next release)."""


class ValidateOrder:
    pass


class ChargeCard:
    pass


class ReserveStock:
    pass


class WaitForPayment:
    pass


def main() -> None:
    """Runs the demo and prints each stage."""
    order = Instance.new(OrderFlow, 1, {"items": [3, 5], "customer": "ada"}, "orderid::demo1")
    print("new:      ", order)
    order = order.replace(status="running").activate_step(ValidateOrder, {"strict": True})
    order = order.complete_step(
        ValidateOrder, "valid", {"item_count": 2}, {"channel": "web"}, timestamp=START
    )
    # Fan-out: two steps active at once; one of them waits for an event.
    order = order.activate_step(ChargeCard).activate_step(WaitForPayment)
    order = order.wait_step(WaitForPayment)
    print("fan-out:  ", order)
    charged = order.complete_step(
        ChargeCard, "charged", {"amount": 42.5}, timestamp=START + timedelta(seconds=2)
    )
    resumed = charged.complete_step(
        WaitForPayment, "received", timestamp=START + timedelta(seconds=5)
    )
    print("resumed:  ", resumed)
    print("unchanged:", order, "(every update returns a new value)")
    print("history:")
    for entry in resumed.execution_history:
        print(f"  {entry.timestamp:%H:%M:%S}  {entry.step_ref.__name__:<14} -> {entry.event}")
    print("context:  ", resumed.context.steps)
    text = resumed.to_json()
    assert Instance.from_json(text) == resumed
    print(f"json ({len(text)} bytes; the binary form takes {len(resumed.to_bytes())}):")
    print(text)


if __name__ == "__main__":
    main()
