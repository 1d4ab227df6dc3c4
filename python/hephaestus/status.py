"""The lifecycle status of an instance."""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(str, enum.Enum):
    """Where an instance is in its life.

    A ``str`` enum: ``Status.RUNNING == "running"``, and either form is accepted
    wherever a status is passed in. ``COMPLETED`` and ``FAILED`` are terminal; a
    cancelled instance is ``FAILED`` with ``error["kind"] == "cancelled"``.
    """

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """Whether an instance in this status can change no more."""
        return self in (Status.COMPLETED, Status.FAILED)

    def __str__(self) -> str:
        return self.value
