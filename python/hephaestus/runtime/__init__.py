"""The durable runtime: ``Hephaestus`` runs workflows, keeps every change in a
storage, fires timers, retries steps and carries instances on after a crash.

See docs/runtime.md. The pieces: :mod:`~hephaestus.runtime.app` (the app and
its scheduler), :mod:`~hephaestus.runtime.storage` (where state lives),
:mod:`~hephaestus.runtime.executor` (who runs steps),
:mod:`~hephaestus.runtime.clock` and :mod:`~hephaestus.runtime.execution`.
"""

from __future__ import annotations

from hephaestus.runtime.app import Hephaestus, current_app
from hephaestus.runtime.clock import Clock, SystemClock
from hephaestus.runtime.execution import Execution, current_execution
from hephaestus.runtime.executor import Executor, LocalExecutor
from hephaestus.runtime.storage import MemoryStorage, SQLiteStorage, Storage, StorageError

__all__ = [
    "Clock",
    "Execution",
    "Executor",
    "Hephaestus",
    "LocalExecutor",
    "MemoryStorage",
    "SQLiteStorage",
    "Storage",
    "StorageError",
    "SystemClock",
    "current_app",
    "current_execution",
]
