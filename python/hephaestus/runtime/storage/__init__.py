"""Where the durable runtime keeps its state.

:class:`Storage` is the protocol (see :mod:`.base`); :class:`MemoryStorage`
keeps runs in process memory, :class:`SQLiteStorage` in an SQLite file.
"""

from __future__ import annotations

from .base import (
    Append,
    Attempt,
    ConflictError,
    Firing,
    NewRun,
    RunRow,
    Storage,
    StorageError,
    Stored,
    Timer,
)
from .memory import MemoryStorage
from .sqlite import SQLiteStorage

__all__ = [
    "Append",
    "Attempt",
    "ConflictError",
    "Firing",
    "MemoryStorage",
    "NewRun",
    "RunRow",
    "SQLiteStorage",
    "Storage",
    "StorageError",
    "Stored",
    "Timer",
]
