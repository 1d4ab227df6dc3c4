"""What a step is running as: ``hephaestus.current_execution()``."""

from __future__ import annotations

import contextvars
import dataclasses

__all__ = ["Execution", "current_execution"]


@dataclasses.dataclass(frozen=True)
class Execution:
    """The step attempt the calling code runs in.

    Attributes:
        instance_id: The instance's id.
        step: The step class.
        attempt: 1 for the first run of the step, 2 for its first retry, ...
        idempotency_key: The same for every attempt and every re-run of this
            step of this run of the instance (after a crash, say), and
            different for any other: pass it to services that deduplicate
            requests, so that a step that runs twice charges a card once.
            Each item of a ``ForEach`` step and each repetition of a
            ``Repeat`` step has its own.
        iteration: Which run of a ``ForEach`` step (the item's index) or a
            ``Repeat`` step (the repetition, from 0) this is; ``None`` for
            an ordinary step. The same as the run's history entry's.
    """

    instance_id: str
    step: type
    attempt: int
    idempotency_key: str
    iteration: int | None = None


_CURRENT: contextvars.ContextVar[Execution] = contextvars.ContextVar("hephaestus_execution")


def current_execution() -> Execution:
    """The :class:`Execution` of the step that calls it (under the runtime,
    ``Hephaestus``).

    Raises:
        RuntimeError: Not called from a step run by the runtime.
    """
    try:
        return _CURRENT.get()
    except LookupError:
        raise RuntimeError(
            "current_execution() is only available inside a step run by the runtime "
            "(Hephaestus); engine.run does not track executions"
        ) from None
