"""Workflows for the durability and race tests of the runtime.

They live at module level of an importable module (``durable_flows``, with
``tests/runtime`` on ``sys.path`` as pytest's ``pythonpath`` sets) because a
run's workflow class must load by import in every process that drives it:
the test process, the crash children (``crash_child.py``) and
``multiprocessing`` 'spawn' children.

Steps that do "work" append a line to a *side-effect log* before they
return: ``"<instance id> <step key> <pid> <idempotency key>\\n"``, written
with ``open(..., "a")``, flushed and ``os.fsync``-ed, so a line survives the
process being killed right after. The log's path is ``context.initial["log"]``.

Knobs in ``context.initial`` (all optional):

* ``"work": [lo, hi]`` -- each logged step sleeps a random time in that
  range (seconds) before logging, so that kills land in the middle of steps;
* ``"hang": path`` -- :class:`Begin` keeps running (polling every 20 ms)
  while that file exists, so a test can hold runs leased in a process;
* ``"gate": name`` -- :class:`Gated` blocks until :func:`gate` ``(name)`` is
  set (in-process tests only).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import Any

from hephaestus import (
    Done,
    ForEach,
    Retry,
    Step,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
    current_execution,
    step_key,
)

#: In-process gates for :class:`Gated`, by name.
_GATES: dict[str, threading.Event] = {}
_GATES_LOCK = threading.Lock()


def gate(name: str) -> threading.Event:
    """The in-process event that :class:`Gated` steps with ``"gate": name``
    wait for (made on first use)."""
    with _GATES_LOCK:
        return _GATES.setdefault(name, threading.Event())


def log_line(path: str, instance_id: str, key: str) -> None:
    """Appends one side-effect line for ``key`` of ``instance_id`` to the log
    at ``path`` and syncs it to disk before returning."""
    try:
        idempotency_key = current_execution().idempotency_key
    except RuntimeError:
        idempotency_key = "-"
    line = f"{instance_id} {key} {os.getpid()} {idempotency_key}\n"
    with open(path, "a", encoding="utf-8") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())


def read_log(path: str | os.PathLike[str]) -> list[tuple[str, str, int, str]]:
    """The side-effect log's lines as ``(instance id, step key, pid,
    idempotency key)``; a torn last line (a kill mid-write) is left out."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2].isdigit():
            entries.append((fields[0], fields[1], int(fields[2]), fields[3]))
    return entries


def log_counts(path: str | os.PathLike[str]) -> Counter[tuple[str, str]]:
    """How many times each ``(instance id, step key)`` appears in the log."""
    return Counter((iid, key) for iid, key, _, _ in read_log(path))


def _work(instance: Any, context: Any) -> None:
    """Sleeps the random ``work`` time of the context, if any."""
    span = context.initial.get("work")
    if span:
        time.sleep(random.uniform(span[0], span[1]))


class Logged(Step):
    """A step that works a little, logs its side effect, and emits its first event."""

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        _work(instance, context)
        path = context.initial.get("log")
        if path:
            log_line(path, instance.id, step_key(type(self)))
        return self.events[0]


# -- the crash workflow: a fan-out, a join and a timer ------------------------------------


class Begin(Logged):
    events = ("go",)

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        hang = context.initial.get("hang")
        result = super().execute(instance, config, context)
        while hang and os.path.exists(hang):
            time.sleep(0.02)
        return result


class Left(Logged):
    events = ("left",)


class Right(Logged):
    events = ("right",)


class Join(Logged):
    events = ("joined",)


class Pause(Wait):
    """A short real timer; logs its side effect when it starts waiting."""

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        result = super().execute(instance, config, context)
        path = context.initial.get("log")
        if path:
            log_line(path, instance.id, step_key(type(self)))
        return result


class Finish(Logged):
    events = ("finished",)


class CrashFlow(Workflow, unique=Unique("crash")):
    """Begin, then Left and Right at once, Join, a one-second Pause, Finish."""

    start = Begin
    transitions = {
        Begin: {"go": [Left, Right]},
        Left: {"left": Join},
        Right: {"right": Join},
        Join: {"joined": (Pause, {"duration": 1, "unit": "second"})},
        Pause: {"timeout": Finish},
        Finish: {"finished": Done},
    }


#: The steps of a completed :class:`CrashFlow` instance.
CRASH_STEPS = frozenset({Begin, Left, Right, Join, Pause, Finish, Done})
#: The steps of :class:`CrashFlow` that write the side-effect log.
CRASH_LOGGED = frozenset(CRASH_STEPS - {Done})


# -- a ForEach killed in the middle ---------------------------------------------------------


class Line(Step):
    """One item of :class:`LinesFlow`: works, then logs ``line#<index>``."""

    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        _work(instance, context)
        path = context.initial.get("log")
        if path:
            log_line(path, instance.id, f"line#{config['index']}")
        return "done"


class LinesFlow(Workflow, unique=Unique("lines")):
    """Begin, then Line once per item of ``context.initial["lines"]`` (four
    at once), then Finish."""

    start = Begin
    transitions = {
        Begin: {"go": ForEach(Line, items="lines", concurrency=4)},
        Line: {"done": Finish},
        Finish: {"finished": Done},
    }


# -- waiting for an event: start and resume races ---------------------------------------


class Hold(WaitForEvent):
    """Waits for ``"received"``."""


class Released(Logged):
    events = ("released",)


class HoldFlow(Workflow, unique=Unique("hold")):
    """Waits at Hold until resumed, then runs Released."""

    start = Hold
    transitions = {Hold: {"received": Released}, Released: {"released": Done}}


# -- a timer that an event may beat ------------------------------------------------------


class Nap(Wait):
    """A timer (``"timeout"``) that a resume with ``"poked"`` may end first."""

    events = ("timeout", "poked")


class Gated(Logged):
    """Blocks until the in-process gate named ``context.initial["gate"]`` is
    set (when the context names one), then logs. While it blocks, the gate
    ``"<name>:entered"`` is set."""

    events = ("busy",)

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        name = context.initial.get("gate")
        if name is not None:
            gate(f"{name}:entered").set()
            if not gate(name).wait(60):
                raise TimeoutError(f"gate {name!r} was never opened")
        return super().execute(instance, config, context)


class AfterTimeout(Logged):
    events = ("after_timeout",)


class AfterPoke(Logged):
    events = ("after_poke",)


class Close(Logged):
    events = ("closed",)


class NapFlow(Workflow, unique=Unique("nap")):
    """Opens, then Nap (60 s, or a poke) beside Gated; they join at Close."""

    start = Begin
    transitions = {
        Begin: {"go": [(Nap, {"duration": 60, "unit": "second"}), Gated]},
        Nap: {"timeout": AfterTimeout, "poked": AfterPoke},
        AfterTimeout: {"after_timeout": Close},
        AfterPoke: {"after_poke": Close},
        Gated: {"busy": Close},
        Close: {"closed": Done},
    }


# -- a chain of steps to cancel while they run ---------------------------------------------


class First(Logged):
    events = ("first",)


class Second(Logged):
    events = ("second",)


class Third(Logged):
    events = ("third",)


class ChainFlow(Workflow, unique=Unique("chain")):
    """First, Gated, Second, Third: a step that may block, and steps after it."""

    start = First
    transitions = {
        First: {"first": Gated},
        Gated: {"busy": Second},
        Second: {"second": Third},
        Third: {"third": Done},
    }


# -- a resume while other branches keep committing ---------------------------------------


def _chain_step(name: str, event: str) -> type:
    """A :class:`Logged` step class named ``name`` (at module level, so that
    it loads by name) that emits ``event``."""
    cls = type(name, (Logged,), {"events": (event,), "__module__": __name__})
    cls.__qualname__ = name
    globals()[name] = cls
    return cls


#: Three chains of four quick steps each: ``CHAINS[c][i]`` emits ``"c<c>s<i>"``.
CHAINS = [[_chain_step(f"Chain{c}Step{i}", f"c{c}s{i}") for i in range(4)] for c in range(3)]


class Gather(Logged):
    events = ("gathered",)


def _busy_transitions() -> dict[type, dict[str, Any]]:
    """:class:`BusyFlow`'s transition table: the chains fan out from Begin
    beside Hold and all end at Gather."""
    table: dict[type, dict[str, Any]] = {
        Begin: {"go": [Hold, *(chain[0] for chain in CHAINS)]},
        Hold: {"received": Released},
        Released: {"released": Gather},
        Gather: {"gathered": Done},
    }
    for chain in CHAINS:
        for step, after in zip(chain, [*chain[1:], Gather], strict=True):
            table[step] = {step.events[0]: after}
    return table


class BusyFlow(Workflow, unique=Unique("busy")):
    """Begin, then Hold (waiting for ``"received"``) beside three chains of
    quick steps, all gathered at Gather: a resume lands while the run's other
    steps keep completing and committing."""

    start = Begin
    transitions = _busy_transitions()


# -- the fleet workflow: a fan-out, a join, a retry and a timer, on many workers ----------


class Shaky(Logged):
    """Fails its first attempt (logging ``shaky#1``), succeeds on the second."""

    events = ("steady",)
    retry = Retry(max_attempts=3, backoff="constant", base_delay=0.2, max_backoff=0.2)

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        attempt = current_execution().attempt
        path = context.initial.get("log")
        if attempt == 1:
            if path:
                log_line(path, instance.id, "shaky#1")
            raise RuntimeError("the first attempt fails")
        return super().execute(instance, config, context)


class FleetFlow(Workflow, unique=Unique("fleet")):
    """Begin, then Left and Right at once, Join, Shaky (one retry), a
    one-second Pause, Finish."""

    start = Begin
    transitions = {
        Begin: {"go": [Left, Right]},
        Left: {"left": Join},
        Right: {"right": Join},
        Join: {"joined": Shaky},
        Shaky: {"steady": (Pause, {"duration": 1, "unit": "second"})},
        Pause: {"timeout": Finish},
        Finish: {"finished": Done},
    }


#: The steps of a completed :class:`FleetFlow` instance.
FLEET_STEPS = frozenset({Begin, Left, Right, Join, Shaky, Pause, Finish, Done})
