"""The exceptions hephaestus raises.

Every one derives from :class:`HephaestusError`. Those about bad values also
derive from the matching builtin, so existing ``except ValueError`` or
``except KeyError`` clauses keep working. The native core raises these very
classes; nothing is mapped a second time in Python.
"""

from __future__ import annotations

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


class WorkflowDefinitionError(HephaestusError):
    """A workflow class breaks a definition rule (raised when it is created)."""


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
