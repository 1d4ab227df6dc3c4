"""Control flow beyond the plain DAG: run a step for every item, or again and
again (CONTRACT §14).

:class:`ForEach` and :class:`Repeat` wrap a step where a transition (or
``start``) names it; the step stays one node of the graph, so the graph is
still acyclic and validated when the workflow class is created::

    class OrderFlow(Workflow, unique=Unique("orderid")):
        start = LoadOrder
        transitions = {
            LoadOrder: {"loaded": ForEach(ReserveLine, items="lines", concurrency=8)},
            ReserveLine: {"reserved": Charge},
            Charge: {"charged": Repeat(PollSettlement, again="pending",
                                       every={"duration": 10, "unit": "minute"},
                                       max_iterations=144)},
            PollSettlement: {"settled": Ship, "refused": Terminate},
            Ship: {"shipped": Done},
        }

Each run has its own history entry, whose ``iteration`` is the item's index
or the repetition (from 0), and its own retries and idempotency key under
the runtime. The runs of these steps cannot return ``Async``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from hephaestus._core import Context
from hephaestus.steps import is_step_class, wait_duration

__all__ = ["ForEach", "Repeat"]


def _step(step: object, owner: str) -> None:
    if not is_step_class(step):
        raise TypeError(f"{owner} wraps a Step subclass, got {step!r}")


def _limit(value: object, name: str, owner: str, *, optional: bool = False) -> None:
    """Checks an int limit; values below 1 are left to the workflow's
    validation, which names the step."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__}")


@dataclass(frozen=True)
class ForEach:
    """Runs ``step`` once per item, the items taken when the node activates.

    Args:
        step: The step to run; it must declare exactly one event.
        items: A key of ``context.initial`` holding a list, or a function
            ``(context) -> list`` called with the context as it is when the
            node activates (earlier steps' results included).
        concurrency: At most this many runs at once under ``engine.arun``
            and the runtime; ``None`` (the default) for no limit.
        max_items: More items than this fail the instance (``error["kind"]
            == "items"``) before any item runs.

    Each run gets ``config["item"]`` and ``config["index"]`` merged over the
    node's config (a config that is not a dict goes under ``"config"``).
    When every run has completed with the step's event, the node completes
    with that event and ``context.steps[step_key]`` is the list of the runs'
    context updates, in item order; an empty list completes at once with
    ``[]``. A run that fails (after its retries) fails the instance with
    ``error["index"]`` set.
    """

    step: type
    items: str | Callable[[Context], Any]
    _: KW_ONLY
    concurrency: int | None = None
    max_items: int = 10_000

    def __post_init__(self) -> None:
        owner = "ForEach"
        _step(self.step, owner)
        if isinstance(self.items, str):
            if not self.items:
                raise ValueError("ForEach: items must be a non-empty key or a function")
        elif not callable(self.items):
            raise TypeError(
                "ForEach: items must be a key of context.initial (str) or a function "
                f"(context) -> list, got {type(self.items).__name__}"
            )
        _limit(self.concurrency, "concurrency", owner, optional=True)
        _limit(self.max_items, "max_items", owner)

    def spec(self) -> tuple[Any, ...]:
        """The node as the graph builder takes it."""
        return ("for_each", self.items, self.concurrency, self.max_items)


@dataclass(frozen=True)
class Repeat:
    """Runs ``step`` again while it returns ``again``.

    Args:
        step: The step to run.
        again: One of the step's events; it runs the step again and needs
            no transition. Any other event leaves the loop along its
            transition.
        every: A :class:`~hephaestus.Wait` config (``{"duration": 10,
            "unit": "minute"}``): under the runtime, the next run starts that
            long after the last one ended (a durable timer). The pure
            ``engine.run`` has no clock and runs them at once.
        max_iterations: The most runs; when that many all returned
            ``again``, the instance fails with ``error["kind"] ==
            "max_iterations"``. At least 1.

    ``context.steps[step_key]`` holds the last run's updates.
    """

    step: type
    _: KW_ONLY
    again: str
    every: dict[str, Any] | None = field(default=None, hash=False)
    max_iterations: int

    def __post_init__(self) -> None:
        owner = "Repeat"
        _step(self.step, owner)
        if not isinstance(self.again, str) or not self.again:
            raise TypeError(f"Repeat: again must be a non-empty event str, got {self.again!r}")
        object.__setattr__(self, "again", str.__str__(self.again))
        if self.every is not None:
            if not isinstance(self.every, Mapping):
                raise TypeError(
                    f"Repeat: every must be a Wait config dict, got {type(self.every).__name__}"
                )
            every = dict(self.every)
            try:
                wait_duration(every)
            except (TypeError, ValueError, OverflowError) as exc:
                raise type(exc)(f"Repeat: every: {exc}") from None
            object.__setattr__(self, "every", every)
        _limit(self.max_iterations, "max_iterations", "Repeat")

    def spec(self) -> tuple[Any, ...]:
        """The node as the graph builder takes it."""
        return ("repeat", self.again, self.max_iterations)
