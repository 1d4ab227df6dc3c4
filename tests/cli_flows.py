"""Workflows the `hephaestus` command runs in tests/test_cli.py (in
subprocesses, so they live at module level)."""

from __future__ import annotations

import time
from typing import Any

from hephaestus import Done, Ok, Retry, Step, Unique, Wait, WaitForEvent, Workflow


class Greet(Step):
    events = ("greeted",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return Ok("greeted", {"greeting": f"hello {context.initial.get('name', 'world')}"})


class Left(Step):
    events = ("left",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return "left"


class Right(Step):
    events = ("right",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return "right"


class Join(Step):
    events = ("joined",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return "joined"


class Simple(Workflow, unique=Unique("simple")):
    """A fan-out and a join."""

    start = Greet
    transitions = {
        Greet: {"greeted": [Left, Right]},
        Left: {"left": Join},
        Right: {"right": Join},
        Join: {"joined": Done},
    }


class Approve(WaitForEvent):
    events = ("approved", "rejected")


class Reject(Step):
    events = ("closed",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return "closed"


class Approval(Workflow, unique=Unique("approval")):
    """Waits for a person's decision."""

    start = Greet
    transitions = {
        Greet: {"greeted": Approve},
        Approve: {"approved": Done, "rejected": Reject},
        Reject: {"closed": Done},
    }


class Pause(Wait):
    pass


class Napping(Workflow, unique=Unique("napping")):
    """Waits a second, then greets."""

    start = (Pause, {"duration": 1, "unit": "second"})
    transitions = {Pause: {"timeout": Greet}, Greet: {"greeted": Done}}


class Boom(Step):
    events = ("ok",)
    retry = Retry(max_attempts=2, base_delay=0.05)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        raise ValueError("the card was declined")


class Broken(Workflow, unique=Unique("broken")):
    """Fails after one retry."""

    start = Boom
    transitions = {Boom: {"ok": Done}}


class Slow(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        time.sleep(0.3)
        return "done"


class Slower(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        time.sleep(0.3)
        return "done"


class Leisurely(Workflow, unique=Unique("leisurely")):
    """Two steps that take a moment each, for the interactive check."""

    start = Slow
    transitions = {Slow: {"done": Slower}, Slower: {"done": Done}}
