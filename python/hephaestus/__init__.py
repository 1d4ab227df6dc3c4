"""hephaestus: an embedded workflow engine whose state machine is written in Rust.

The public API lives here; ``hephaestus._core`` is the private native module.
"""

from __future__ import annotations

from hephaestus import engine, telemetry
from hephaestus._core import (
    FORMAT_VERSION,
    Context,
    ExecutionEntry,
    Instance,
    __version__,
    step_key,
)
from hephaestus.control import ForEach, Repeat
from hephaestus.errors import (
    AlreadyRunningError,
    DefinitionProblem,
    HephaestusError,
    InstanceNotFoundError,
    InvalidTransitionError,
    SerializationError,
    WorkflowDefinitionError,
)
from hephaestus.runtime import (
    Execution,
    Hephaestus,
    MemoryStorage,
    SQLiteStorage,
    StorageError,
    current_execution,
)
from hephaestus.status import Status
from hephaestus.steps import (
    Async,
    Debug,
    Done,
    Error,
    Ok,
    Retry,
    Step,
    Terminate,
    Wait,
    WaitForEvent,
    wait_duration,
)
from hephaestus.unique import Unique
from hephaestus.workflow import Workflow, transit

__all__ = [
    "FORMAT_VERSION",
    "AlreadyRunningError",
    "Async",
    "Context",
    "Debug",
    "DefinitionProblem",
    "Done",
    "Error",
    "Execution",
    "ExecutionEntry",
    "ForEach",
    "Hephaestus",
    "HephaestusError",
    "Instance",
    "InstanceNotFoundError",
    "InvalidTransitionError",
    "MemoryStorage",
    "Ok",
    "Repeat",
    "Retry",
    "SQLiteStorage",
    "SerializationError",
    "Status",
    "Step",
    "StorageError",
    "Terminate",
    "Unique",
    "Wait",
    "WaitForEvent",
    "Workflow",
    "WorkflowDefinitionError",
    "__version__",
    "current_execution",
    "engine",
    "step_key",
    "telemetry",
    "transit",
    "wait_duration",
]
