"""Workflows for the control-flow tests (CONTRACT §14), at module level so
that instances of them can be saved and loaded. ``RAN`` records which steps
executed, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from hephaestus import (
    Async,
    Done,
    ForEach,
    Ok,
    Repeat,
    Step,
    Terminate,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
    transit,
)

#: The keys of the steps that executed, in order.
RAN: list[str] = []


def _ran(step: Step) -> None:
    RAN.append(type(step).__name__)


class Begin(Step):
    events = ("go",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "go"


class Check(Step):
    events = ("ok", "refused")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "refused" if context.initial.get("refuse") else "ok"


class Work(Step):
    events = ("worked",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return Ok("worked", {"by": "work"})


class Finish(Step):
    events = ("finished",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "finished"


# -- Terminate ----------------------------------------------------------------------------------


class StopFlow(Workflow, unique=Unique("stop")):
    """Two branches; the checking one may end the whole workflow."""

    start = Begin
    transitions = {
        Begin: {"go": [Check, Work]},
        Check: {"ok": Finish, "refused": Terminate},
        Work: {"worked": Finish},
        Finish: {"finished": Done},
    }


# -- first-wins joins -----------------------------------------------------------------------------


class Quick(Step):
    events = ("answered",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        await asyncio.sleep(context.initial.get("quick", 0.0))
        _ran(self)
        return Ok("answered", {"by": "quick"})


class Slow(Step):
    events = ("answered",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        await asyncio.sleep(context.initial.get("slow", 0.0))
        _ran(self)
        return Ok("answered", {"by": "slow"})


class SlowTail(Step):
    events = ("answered",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "answered"


class FirstAnswer(Step):
    events = ("chosen",)
    join = "first"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return Ok("chosen", {"steps": sorted(context.steps)})


class RaceFlow(Workflow, unique=Unique("race")):
    """A discriminator: Slow is first in graph order, Quick answers first."""

    start = Begin
    transitions = {
        Begin: {"go": [Slow, Quick]},
        Slow: {"answered": SlowTail},
        SlowTail: {"answered": FirstAnswer},
        Quick: {"answered": FirstAnswer},
        FirstAnswer: {"chosen": Done},
    }


class AwaitPayment(WaitForEvent):
    pass


class PaymentDeadline(Wait):
    pass


class Settle(Step):
    events = ("settled",)
    join = "first"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "settled"


class DeadlineFlow(Workflow, unique=Unique("deadline")):
    """A deferred choice: a payment event or a deadline, whichever comes first."""

    start = Begin
    transitions = {
        Begin: {"go": [AwaitPayment, (PaymentDeadline, {"duration": 2, "unit": "day"})]},
        AwaitPayment: {"received": Settle},
        PaymentDeadline: {"timeout": Settle},
        Settle: {"settled": Done},
    }


# -- multi-choice -------------------------------------------------------------------------------


class Notify(Step):
    events = ("routed",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "routed"


class Email(Step):
    events = ("sent",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return Ok("sent", {"config": config})


class Sms(Step):
    events = ("sent",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "sent"


class Push(Step):
    events = ("sent",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "sent"


class Gather(Step):
    events = ("gathered",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "gathered"


class NotifyFlow(Workflow, unique=Unique("notify")):
    """Sends on every channel the data asks for, then gathers."""

    start = Notify
    transitions = {
        Email: {"sent": Gather},
        Sms: {"sent": Gather},
        Push: {"sent": Gather},
        Gather: {"gathered": Done},
    }

    @transit(Notify, "routed", targets=[Email, Sms, Push], many=True)
    def channels(context: Any) -> Any:
        chosen = {"email": (Email, {"to": "a@b.c"}), "sms": Sms, "push": Push}
        wanted = context.initial["channels"]
        return [chosen[c] for c in wanted] if isinstance(wanted, list) else chosen[wanted]


class SingleNotifyFlow(Workflow, unique=Unique("single")):
    """The same route without many=True: a list of targets is refused."""

    start = Notify
    transitions = {
        Email: {"sent": Gather},
        Sms: {"sent": Gather},
        Gather: {"gathered": Done},
    }

    @transit(Notify, "routed", targets=[Email, Sms])
    def channels(context: Any) -> Any:
        return [Email, Sms]


# -- ForEach ------------------------------------------------------------------------------------


class Load(Step):
    events = ("loaded",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return Ok("loaded", {"extra": ["x", "y"]})


class Reserve(Step):
    events = ("reserved",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append(f"Reserve[{config['index']}]")
        if config["item"] == "broken":
            raise ValueError(f"cannot reserve {config['item']}")
        return Ok("reserved", {"sku": config["item"], "warehouse": config.get("warehouse")})


class LinesFlow(Workflow, unique=Unique("lines")):
    """Reserves each line of the order, with a node config."""

    start = Load
    transitions = {
        Load: {"loaded": (ForEach(Reserve, items="lines"), {"warehouse": "north"})},
        Reserve: {"reserved": Finish},
        Finish: {"finished": Done},
    }


def _extra_lines(context: Any) -> Any:
    return [*context.initial.get("lines", []), *context.steps["load"]["extra"]]


class ComputedFlow(Workflow, unique=Unique("computed")):
    """Items from a function of the context, as it is when the node activates."""

    start = Load
    transitions = {
        Load: {"loaded": ForEach(Reserve, items=_extra_lines, max_items=3)},
        Reserve: {"reserved": Done},
    }


class Pack(Step):
    events = ("packed",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        ACTIVE["now"] += 1
        ACTIVE["most"] = max(ACTIVE["most"], ACTIVE["now"])
        await asyncio.sleep(0.001 * (10 - config["index"] % 10))
        ACTIVE["now"] -= 1
        return Ok("packed", {"box": config["index"]})


#: Async runs of `Pack` going on now, and the most at once.
ACTIVE = {"now": 0, "most": 0}


class PackFlow(Workflow, unique=Unique("pack")):
    """Packs every item, at most three at once."""

    start = Load
    transitions = {
        Load: {"loaded": ForEach(Pack, items="items", concurrency=3)},
        Pack: {"packed": Done},
    }


# -- Repeat -------------------------------------------------------------------------------------


class Poll(Step):
    events = ("pending", "settled", "refused")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        answers = context.initial["answers"]
        previous = context.steps.get("poll", {}).get("run", -1)
        run = previous + 1
        RAN.append(f"Poll[{run}]")
        return Ok(answers[run] if run < len(answers) else "pending", {"run": run})


class PollFlow(Workflow, unique=Unique("poll")):
    """Polls until settled (at most four times); a refusal ends the workflow."""

    start = Begin
    transitions = {
        Begin: {"go": Repeat(Poll, again="pending", max_iterations=4)},
        Poll: {"settled": Finish, "refused": Terminate},
        Finish: {"finished": Done},
    }


# -- edge cases found in review ------------------------------------------------------------------


class Quiet(Step):
    events = ("ok",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "ok"


class Loud(Step):
    events = ("ok",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "ok"


class Either(Step):
    events = ("ok",)
    join = "first"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return "ok"


class EmptyRaceFlow(Workflow, unique=Unique("emptyrace")):
    """Two ForEach steps race into a first-wins join; the first has no items."""

    start = Begin
    transitions = {
        Begin: {"go": [ForEach(Quiet, items="none"), ForEach(Loud, items="some")]},
        Quiet: {"ok": Either},
        Loud: {"ok": Either},
        Either: {"ok": Done},
    }


class Approval(Step):
    events = ("approved", "cancelled")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        _ran(self)
        return Async()


class GuardedFlow(Workflow, unique=Unique("guarded")):
    """Two branches may each end the workflow: Terminate has two predecessors."""

    start = Begin
    transitions = {
        Begin: {"go": [Check, Approval]},
        Check: {"ok": Finish, "refused": Terminate},
        Approval: {"approved": Finish, "cancelled": Terminate},
        Finish: {"finished": Done},
    }


#: How often `counted_items` ran.
ITEM_CALLS = {"n": 0}


def counted_items(context: Any) -> Any:
    ITEM_CALLS["n"] += 1
    return ["x", "y"]


class CountedFlow(Workflow, unique=Unique("counted")):
    start = Load
    transitions = {
        Load: {"loaded": ForEach(Reserve, items=counted_items)},
        Reserve: {"reserved": Done},
    }
