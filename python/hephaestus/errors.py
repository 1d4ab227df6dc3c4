"""The exceptions hephaestus raises.

Every one derives from :class:`HephaestusError`. Those about bad values also
derive from the matching builtin, so existing ``except ValueError`` or
``except KeyError`` clauses keep working. The native core raises these very
classes; nothing is mapped a second time in Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

# The exception classes; `DefinitionProblem` (the data an invalid workflow
# reports) is exported from `hephaestus` itself.
__all__ = [
    "AlreadyRunningError",
    "HephaestusError",
    "InstanceNotFoundError",
    "InvalidTransitionError",
    "SerializationError",
    "WorkflowDefinitionError",
]


class HephaestusError(Exception):
    """Base class of every hephaestus error."""


@dataclasses.dataclass(frozen=True)
class DefinitionProblem:
    """One broken rule of a workflow definition, as data.

    Attributes:
        kind: Which rule, e.g. ``"cycle"``, ``"unreachable"``,
            ``"leaf_not_done"``, ``"fan_out_does_not_join"``,
            ``"duplicate_key"``, ``"event_without_transition"``,
            ``"undeclared_event"``, ``"not_a_step"`` or ``"option"`` (a class
            option such as ``unique`` or ``versions``).
        message: The problem in words, as the error's text shows it.
        steps: The step classes involved, in the order the message names
            them (a cycle ends where it started).
        event: The event involved, if the rule is about one.
    """

    kind: str
    message: str
    steps: tuple[type, ...] = ()
    event: str | None = None


class WorkflowDefinitionError(HephaestusError):
    """A workflow class breaks a definition rule (raised when it is created).

    Every problem is reported at once: ``str(error)`` lists them, and
    ``error.problems`` holds them as :class:`DefinitionProblem` values.

    Attributes:
        problems: What is wrong, one entry per problem.
        workflow: The name of the workflow class, when known.
    """

    def __init__(
        self,
        message: str,
        problems: Iterable[DefinitionProblem] = (),
        workflow: str | None = None,
    ) -> None:
        super().__init__(message)
        self.problems: tuple[DefinitionProblem, ...] = tuple(problems)
        self.workflow = workflow

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.problems, self.workflow))


class InvalidTransitionError(HephaestusError, ValueError):
    """A bookkeeping operation does not fit the instance's state.

    For example: completing a step that is not active, activating a step that
    already completed, or changing a completed or failed instance.
    """


class SerializationError(HephaestusError, ValueError):
    """Serialized instance data is malformed, of another format version, or names
    a class that cannot be imported."""


class AlreadyRunningError(HephaestusError):
    """An instance with the same business key is already running."""


class InstanceNotFoundError(HephaestusError, KeyError):
    """No instance has the given id."""
