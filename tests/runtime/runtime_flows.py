"""Workflows for the runtime's tests, at module level so that every app (and
every process) can load their runs."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from hephaestus import (
    Async,
    Done,
    Error,
    ForEach,
    Ok,
    Repeat,
    Retry,
    Step,
    Terminate,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
    current_execution,
)

#: What steps did, in order: (step key, attempt, idempotency key).
CALLS: list[tuple[str, int, str]] = []
#: Set to let `Blocker` return.
RELEASE = threading.Event()
#: Set by `Blocker` once it runs.
STARTED = threading.Event()
#: How `Flaky` fails: it raises until this attempt.
FLAKY_SUCCEEDS_AT = {"attempt": 3}


def record() -> None:
    execution = current_execution()
    CALLS.append((execution.step.__name__, execution.attempt, execution.idempotency_key))


class Validate(Step):
    events = ("valid", "invalid")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        return "valid" if context.initial.get("items") else "invalid"


class Charge(Step):
    events = ("charged",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        return Ok("charged", {"amount": len(context.initial["items"])})


class Reserve(Step):
    events = ("reserved",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        await asyncio.sleep(0)
        return "reserved"


class Ship(Step):
    events = ("shipped",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        return "shipped"


class Reject(Step):
    events = ("rejected",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        return "rejected"


class AwaitPayment(WaitForEvent):
    pass


class OrderFlow(Workflow, unique=Unique("orderid")):
    """Validate, then charge and reserve in parallel, join at Ship, wait for
    payment."""

    start = Validate
    transitions = {
        Validate: {"valid": [Charge, Reserve], "invalid": Reject},
        Charge: {"charged": Ship},
        Reserve: {"reserved": Ship},
        Ship: {"shipped": AwaitPayment},
        AwaitPayment: {"received": Done},
        Reject: {"rejected": Done},
    }


class Quick(Step):
    events = ("ok",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        return "ok"


class QuickFlow(Workflow, unique=Unique("quick")):
    start = Quick
    transitions = {Quick: {"ok": Done}}


class VersionedQuick(Workflow, unique=Unique("quick", scope="version"), version=2):
    start = Quick
    transitions = {Quick: {"ok": Done}}


class GlobalA(Workflow, unique=Unique("shared", scope="global")):
    start = Quick
    transitions = {Quick: {"ok": Done}}


class GlobalB(Workflow, unique=Unique("shared", scope="global")):
    start = Quick
    transitions = {Quick: {"ok": Done}}


class Loose(Workflow, unique=Unique("loose", scope="none")):
    start = Quick
    transitions = {Quick: {"ok": Done}}


class Nap(Wait):
    pass


class NapFlow(Workflow, unique=Unique("nap")):
    """Waits 30 days, then finishes."""

    start = (Nap, {"duration": 30, "unit": "day"})
    transitions = {Nap: {"timeout": Quick}, Quick: {"ok": Done}}


class Flaky(Step):
    events = ("ok",)
    retry = Retry(max_attempts=4, backoff="exponential", base_delay=2.0, max_backoff=5.0)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        if current_execution().attempt < FLAKY_SUCCEEDS_AT["attempt"]:
            raise RuntimeError(f"attempt {current_execution().attempt} failed")
        return "ok"


class FlakyFlow(Workflow, unique=Unique("flaky")):
    start = Flaky
    transitions = {Flaky: {"ok": Done}}


class Broken(Step):
    events = ("ok",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        raise ValueError("card declined")


class BrokenFlow(Workflow, unique=Unique("broken")):
    start = Broken
    transitions = {Broken: {"ok": Done}}


class Refuse(Step):
    events = ("ok",)
    retry = Retry(max_attempts=5)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        return Error("out of stock")


class RefuseFlow(Workflow, unique=Unique("refuse")):
    start = Refuse
    transitions = {Refuse: {"ok": Done}}


class Slow(Step):
    events = ("ok",)
    timeout = 0.2

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        time.sleep(2.0)
        return "ok"


class SlowFlow(Workflow, unique=Unique("slow")):
    start = Slow
    transitions = {Slow: {"ok": Done}}


class SlowAsync(Step):
    events = ("ok",)
    timeout = 0.2
    retry = Retry(max_attempts=2, base_delay=1.0)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        await asyncio.sleep(30)
        return "ok"


class SlowAsyncFlow(Workflow, unique=Unique("slowasync")):
    start = SlowAsync
    transitions = {SlowAsync: {"ok": Done}}


class Blocker(Step):
    """Runs until RELEASE is set."""

    events = ("ok",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        STARTED.set()
        RELEASE.wait(30)
        return "ok"


class BlockerFlow(Workflow, unique=Unique("blocker")):
    start = Blocker
    transitions = {Blocker: {"ok": Done}}


class LeftWait(WaitForEvent):
    pass


class RightWait(WaitForEvent):
    pass


class TwoWaitsFlow(Workflow, unique=Unique("twowaits")):
    start = Quick
    transitions = {
        Quick: {"ok": [LeftWait, RightWait]},
        LeftWait: {"received": Ship},
        RightWait: {"received": Ship},
        Ship: {"shipped": Done},
    }


class PayDeadline(Wait):
    pass


class Settle(Step):
    """Joins the first of the payment event and the deadline."""

    events = ("settled",)
    join = "first"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        return "settled"


class DeadlineFlow(Workflow, unique=Unique("deadline")):
    """A deferred choice: the payment event or a one-day deadline."""

    start = Quick
    transitions = {
        Quick: {"ok": [AwaitPayment, (PayDeadline, {"duration": 1, "unit": "day"})]},
        AwaitPayment: {"received": Settle},
        PayDeadline: {"timeout": Settle},
        Settle: {"settled": Done},
    }


class AwaitShipping(WaitForEvent):
    pass


class DeadlineThenShipFlow(Workflow, unique=Unique("deadlineship")):
    """The payment race, then a wait for shipping."""

    start = Quick
    transitions = {
        Quick: {"ok": [AwaitPayment, (PayDeadline, {"duration": 1, "unit": "day"})]},
        AwaitPayment: {"received": Settle},
        PayDeadline: {"timeout": Settle},
        Settle: {"settled": AwaitShipping},
        AwaitShipping: {"received": Done},
    }


class Gatekeeper(Step):
    """Ends the workflow once Blocker has started."""

    events = ("stop",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        STARTED.wait(30)
        return "stop"


class StopFlow(Workflow, unique=Unique("stop")):
    """Terminate while another branch (Blocker) still runs."""

    start = Quick
    transitions = {
        Quick: {"ok": [Gatekeeper, Blocker]},
        Gatekeeper: {"stop": Terminate},
        Blocker: {"ok": Done},
    }


class Sprint(Step):
    """Answers once Blocker has started."""

    events = ("ok",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        STARTED.wait(30)
        return "ok"


class FirstBack(Step):
    events = ("ok",)
    join = "first"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        return "ok"


class SprintFlow(Workflow, unique=Unique("sprint")):
    """A race: Sprint answers while Blocker still runs."""

    start = Quick
    transitions = {
        Quick: {"ok": [Blocker, Sprint]},
        Blocker: {"ok": FirstBack},
        Sprint: {"ok": FirstBack},
        FirstBack: {"ok": Done},
    }


class FlakyRaceFlow(Workflow, unique=Unique("flakyrace")):
    """A race: Flaky (which backs off after a failure) against a payment."""

    start = Quick
    transitions = {
        Quick: {"ok": [Flaky, AwaitPayment]},
        Flaky: {"ok": FirstBack},
        AwaitPayment: {"received": FirstBack},
        FirstBack: {"ok": Done},
    }


#: Runs of `ReserveLine` going on now, and the most at once.
LINES = {"now": 0, "most": 0}
LINES_LOCK = threading.Lock()


class ReserveLine(Step):
    """One item of a ForEach; the item "flaky" fails its first attempt."""

    events = ("reserved",)
    retry = Retry(max_attempts=2, backoff="constant", base_delay=5.0)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        with LINES_LOCK:
            LINES["now"] += 1
            LINES["most"] = max(LINES["most"], LINES["now"])
        try:
            execution = current_execution()
            CALLS.append(("ReserveLine", execution.attempt, execution.idempotency_key))
            assert execution.iteration == config["index"]
            if config["item"] == "flaky" and execution.attempt == 1:
                raise RuntimeError("warehouse busy")
            time.sleep(0.001)
            return Ok("reserved", {"sku": config["item"]})
        finally:
            with LINES_LOCK:
                LINES["now"] -= 1


class LinesFlow(Workflow, unique=Unique("lines")):
    """Reserves every line, eight at once."""

    start = Quick
    transitions = {
        Quick: {"ok": ForEach(ReserveLine, items="lines", concurrency=8)},
        ReserveLine: {"reserved": Done},
    }


#: What `PollSettlement` answers, run by run ("pending" once it runs out).
SETTLEMENTS: list[str] = []


class PollSettlement(Step):
    events = ("pending", "settled")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        answer = SETTLEMENTS.pop(0) if SETTLEMENTS else "pending"
        return Ok(answer, {"run": current_execution().iteration})


class SettleFlow(Workflow, unique=Unique("settle")):
    """Polls every ten minutes, at most four times."""

    start = Quick
    transitions = {
        Quick: {
            "ok": Repeat(
                PollSettlement,
                again="pending",
                every={"duration": 10, "unit": "minute"},
                max_iterations=4,
            )
        },
        PollSettlement: {"settled": Done},
    }


class Chain(Step):
    events = ("next",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return Ok("next", {"payload": "x" * 200})


def make_chain(length: int) -> type[Workflow]:
    """A chain of ``length`` distinct steps (the classes live in this module)."""
    steps = [
        type(f"Chain{i}", (Chain,), {"__module__": __name__, "__qualname__": f"Chain{i}"})
        for i in range(length)
    ]
    for step in steps:
        globals()[step.__name__] = step
    transitions: dict[type, dict[str, Any]] = {
        step: {"next": target} for step, target in zip(steps, [*steps[1:], Done], strict=True)
    }
    flow = type(
        f"ChainFlow{length}",
        (Workflow,),
        {"start": steps[0], "transitions": transitions, "__module__": __name__},
        unique=Unique("chain"),
    )
    globals()[flow.__name__] = flow
    return flow


LongChain = make_chain(300)


class AsyncPause(Step):
    events = ("resumed",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        record()
        return Async()


class AsyncPauseFlow(Workflow, unique=Unique("asyncpause")):
    start = AsyncPause
    transitions = {AsyncPause: {"resumed": Done}}
