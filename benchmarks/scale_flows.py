"""The workflows of ``bench_scaleout.py``, importable by its worker processes
(``hephaestus worker --import scale_flows``)."""

from __future__ import annotations

import time
from typing import Any

from hephaestus import Done, Step, Unique, Workflow


class Nap(Step):
    """I/O-bound work: sleeps ``context.initial["nap"]`` seconds."""

    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        time.sleep(context.initial.get("nap", 0.0))
        return "done"


class Nap2(Nap):
    pass


class Nap3(Nap):
    pass


class Nap4(Nap):
    pass


class Nap5(Nap):
    pass


class NapFlow(Workflow, unique=Unique("nap")):
    """Five steps in a row, each sleeping ``nap`` seconds."""

    start = Nap
    transitions = {
        Nap: {"done": Nap2},
        Nap2: {"done": Nap3},
        Nap3: {"done": Nap4},
        Nap4: {"done": Nap5},
        Nap5: {"done": Done},
    }


#: Steps per NapFlow instance (Done included: it runs as a step too).
STEPS = 6
