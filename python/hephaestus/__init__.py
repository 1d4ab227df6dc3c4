"""hephaestus: an embedded workflow engine whose state machine is written in Rust.

The public API lives here; ``hephaestus._core`` is the private native module.
"""

from __future__ import annotations

from hephaestus._core import (
    FORMAT_VERSION,
    Context,
    ExecutionEntry,
    Instance,
    __version__,
    step_key,
)
from hephaestus.errors import (
    AlreadyRunningError,
    HephaestusError,
    InstanceNotFoundError,
    InvalidTransitionError,
    SerializationError,
    WorkflowDefinitionError,
)
from hephaestus.status import Status

__all__ = [
    "FORMAT_VERSION",
    "AlreadyRunningError",
    "Context",
    "ExecutionEntry",
    "HephaestusError",
    "Instance",
    "InstanceNotFoundError",
    "InvalidTransitionError",
    "SerializationError",
    "Status",
    "WorkflowDefinitionError",
    "__version__",
    "step_key",
]
