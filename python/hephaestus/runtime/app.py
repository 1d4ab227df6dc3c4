"""``Hephaestus``: the durable runtime around the pure engine.

An app runs steps, commits every change before anything that depends on it
starts, fires timers, retries failing steps and carries instances on after a
crash. See docs/runtime.md for the design; in short:

* **State** lives in a storage (``storage/``): per run, an append-only
  journal of what the engine applied (its records replay through the Rust
  core to rebuild the instance), a snapshot now and then, timers and failed
  attempts.
* **Execution** is an executor's (``executor.py``): threads for ``def``
  steps, the app's event loop for ``async def`` steps.
* **Scheduling** happens on the app's own event loop, in a thread of its
  own: it claims runnable runs (a lease per run), runs their steps, applies
  each outcome through the engine, commits, and only then starts what the
  outcome made runnable. It sleeps until the next timer or lease, or until
  something wakes it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import importlib
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from hephaestus import _core
from hephaestus._core import Instance, step_key
from hephaestus.engine import graph_of
from hephaestus.errors import (
    InstanceNotFoundError,
    InvalidTransitionError,
    SerializationError,
)
from hephaestus.runtime import events, explain
from hephaestus.runtime.clock import Clock, SystemClock, as_datetime
from hephaestus.runtime.explain import Explanation
from hephaestus.runtime.scheduler import _owner, _Scheduler, stale_timers
from hephaestus.runtime.storage.base import (
    Append,
    NewRun,
    RunRow,
    Storage,
    Stored,
)
from hephaestus.status import Status
from hephaestus.telemetry import otel

__all__ = ["Hephaestus", "current_app"]

log = logging.getLogger("hephaestus.runtime")

T = TypeVar("T")

_FINISHED = ("completed", "failed")
_SETTLED = ("completed", "failed", "waiting")
#: How long ``close()`` waits for running steps.
_GRACE = 5.0
#: Snapshots are rewritten once the journal since the last one is this big
#: (and as big as the snapshot), so loading replays a bounded tail while
#: writing stays proportional to what changed.
_SNAPSHOT_MIN_BYTES = 16 * 1024


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


# -- storage URLs ------------------------------------------------------------------------


def open_storage(storage: Storage | str | os.PathLike[str] | None) -> tuple[Storage, bool]:
    """The storage an app uses, and whether the app opened it (and so closes it).

    ``None`` means the URL in ``HEPHAESTUS_DATABASE_URL``, else
    ``./hephaestus.db``.
    """
    if storage is None:
        storage = os.environ.get("HEPHAESTUS_DATABASE_URL") or "hephaestus.db"
    if isinstance(storage, os.PathLike):
        storage = os.fspath(storage)
    if not isinstance(storage, str):
        if all(hasattr(storage, m) for m in ("open", "commit", "load", "claim")):
            storage.open()
            return storage, False
        raise TypeError(
            f"storage must be a storage object, a URL or a path, got {type(storage).__name__}"
        )
    from hephaestus.runtime.storage.memory import MemoryStorage
    from hephaestus.runtime.storage.sqlite import SQLiteStorage

    url = storage
    opened: Storage
    if url.startswith(("postgresql://", "postgres://")):
        from hephaestus.runtime.storage.postgres import PostgresStorage

        opened = PostgresStorage(url)
    elif url == "memory://" or url == "memory:":
        opened = MemoryStorage()
    elif url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ValueError(f"storage URL {url!r} names no file")
        opened = SQLiteStorage(path)
    elif "://" in url or url.startswith(("sqlite:", "memory:")):
        scheme = url.split(":", 1)[0]
        raise ValueError(
            f"unknown storage URL scheme {scheme!r} in {url!r}; supported: "
            "'sqlite:///relative.db', 'sqlite:////absolute.db', a file path, 'memory://', "
            "'postgresql://user@host/db'"
        )
    elif not url:
        raise ValueError("storage URL must not be empty")
    else:
        opened = SQLiteStorage(url)
    opened.open()
    return opened, True


# -- the current app ---------------------------------------------------------------------

_APPS: contextvars.ContextVar[tuple[Hephaestus, ...]] = contextvars.ContextVar(
    "hephaestus_apps", default=()
)
_default_lock = threading.Lock()
_default: Hephaestus | None = None


def current_app() -> Hephaestus:
    """The app the workflow facade uses: the innermost ``with Hephaestus(...)``
    block of the calling thread or task, else a process-wide default app
    made on first use with the default storage."""
    apps = _APPS.get()
    if apps:
        return apps[-1]
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Hephaestus()
        return _default


# -- the app -------------------------------------------------------------------------------


class Hephaestus:
    """The durable runtime: runs workflows, keeps every change, carries them on.

    ::

        with Hephaestus() as app:   # SQLite at $HEPHAESTUS_DATABASE_URL, else ./hephaestus.db
            iid = app.start_instance(OrderFlow, {"items": [1, 2]}, id="orderid::abc123")
            order = app.wait(iid, timeout=10)

    Args:
        storage: A storage object (``SQLiteStorage(path)``, ``MemoryStorage()``,
            ``PostgresStorage(url)``), or a URL: ``"sqlite:///relative.db"``,
            ``"sqlite:////absolute.db"``, a plain file path, ``"memory://"``, or
            ``"postgresql://user@host/db"`` (the ``[postgres]`` extra). ``None``: the URL in
            ``HEPHAESTUS_DATABASE_URL``, else ``./hephaestus.db``.
        concurrency: How many steps run at once.
        clock: Where timers, retries and leases get their time (default: the
            system's; ``hephaestus.testing.VirtualClock`` for tests).
        lease: Seconds after which a run whose app stopped renewing its lease
            (a dead process) is taken over by another app.
        import_workflows: Whether the app may import the module of a
            workflow it finds in the storage but was not given (as the
            ``hephaestus`` command does). Off by default: an app runs only
            workflows whose modules are already imported, so a database
            never makes it run code it was not told to.
        executor: ``"local"`` (the default): the app runs steps itself.
            ``"procrastinate"`` (a Postgres storage and the ``[distributed]``
            extra): each runnable step becomes a job of the procrastinate
            task queue in the same database, and the app is a client that
            starts, resumes, cancels and reads instances but runs nothing;
            ``hephaestus worker`` processes drive the runs and run the jobs
            (see docs/production.md).

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An unknown storage URL scheme, ``concurrency < 1``, a
            lease that is not a positive number, an unknown executor, or
            ``"procrastinate"`` without a Postgres storage.
        ImportError: ``"procrastinate"`` without the ``[distributed]`` extra.
        StorageError: The database is not ours or was written by a newer
            version (it is left unchanged).
    """

    def __init__(
        self,
        storage: Storage | str | os.PathLike[str] | None = None,
        *,
        concurrency: int = 8,
        clock: Clock | None = None,
        lease: float = 30.0,
        import_workflows: bool = False,
        executor: str = "local",
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise TypeError(f"concurrency must be an int, got {type(concurrency).__name__}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if isinstance(lease, bool) or not isinstance(lease, (int, float)):
            raise TypeError(f"lease must be a number of seconds, got {type(lease).__name__}")
        if not math.isfinite(lease) or lease <= 0:
            raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
        if executor not in ("local", "procrastinate"):
            raise ValueError(f"executor must be 'local' or 'procrastinate', got {executor!r}")
        self._storage, self._owns_storage = open_storage(storage)
        #: The task queue steps go to (``executor="procrastinate"``); the app
        #: is then a client until a worker makes it drive runs (`_serve`).
        self._queue: object | None = None
        self._client = False
        if executor == "procrastinate":
            try:
                from hephaestus.runtime import distributed

                self._queue = distributed.attach(self._storage)
            except BaseException:
                if self._owns_storage:
                    self._storage.close()
                raise
            self._client = True
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._concurrency = concurrency
        self._lease = float(lease)
        self._owner = _owner()
        self._lock = threading.Lock()
        self._closed = False
        self._scheduler: _Scheduler | None = None
        self._tokens: list[contextvars.Token[tuple[Hephaestus, ...]]] = []
        #: Workflow classes this app was given, by name (to load their runs).
        self._workflows: dict[str, type] = {}
        self._import_workflows = bool(import_workflows)
        #: Notified whenever this app commits a change, or the storage hears
        #: of another process's; `_changes` counts them.
        self._changed = threading.Condition()
        self._changes = 0
        subscribe = getattr(self._storage, "subscribe", None)
        if subscribe is not None:
            # `wait` sees runs driven elsewhere finish at once.
            subscribe(lambda payload: self._notify())

    # -- lifetime ----------------------------------------------------------------------

    def __enter__(self) -> Hephaestus:
        self.start()
        self._tokens.append(_APPS.set((*_APPS.get(), self)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tokens:
            _APPS.reset(self._tokens.pop())
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def storage(self) -> Storage:
        """The storage this app keeps its state in."""
        return self._storage

    @property
    def clock(self) -> Clock:
        """The clock of timers, retries and leases."""
        return self._clock

    def start(self) -> None:
        """Starts the workers (idempotent): runnable runs are claimed and run,
        timers fire, dead apps' runs are taken over. (A client of a task
        queue, ``executor="procrastinate"``, starts none.)"""
        with self._lock:
            self._check_open()
            if self._scheduler is None and not self._client:
                self._scheduler = _Scheduler(self)
                self._scheduler.start()

    def close(self) -> None:
        """Stops the workers: waits a short grace period for running steps,
        commits what they did, releases this app's leases. Work it did not
        finish is carried on by the next app on the same database."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.stop(_GRACE)
        with self._changed:
            self._changed.notify_all()
        if self._owns_storage:
            self._storage.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Hephaestus app is closed")

    def _serve(self) -> None:
        """Makes a task queue's client drive runs (a ``hephaestus worker``):
        it claims runs, fires timers and hands their steps to the queue."""
        with self._lock:
            self._client = False
        self.start()

    def _workers(self) -> _Scheduler | None:
        """The running scheduler (started now if need be); ``None`` for a
        task queue's client, whose work the workers do."""
        self.start()
        scheduler = self._scheduler
        if scheduler is None and not self._client:
            raise RuntimeError("this Hephaestus app is closed")
        return scheduler

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._scheduler else "idle"
        return f"<Hephaestus {type(self._storage).__name__} {state}>"

    # -- operations ----------------------------------------------------------------------

    def start_instance(
        self,
        workflow: type,
        context: Mapping[str, Any] | None = None,
        *,
        id: str,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Persists a new pending instance of ``workflow`` and runs it.

        For a dispatcher, ``version`` (or ``resolve_version()``) picks the
        version. Uniqueness (the workflow's ``unique`` scope) is checked by
        the storage as the instance is written.

        Returns:
            The instance id.

        Raises:
            TypeError: ``workflow`` is not a workflow class, ``id`` is not a
                str, or the context holds a value that cannot be stored (the
                message names its path); nothing is written then.
            ValueError: An empty id, or a version the workflow does not have.
            AlreadyRunningError: An unfinished instance holds the id.
        """
        self._check_open()
        run = self._new_run(workflow, context, id, version, telemetry_metadata)
        self._storage.create(run)
        scheduler = self._workers()
        if scheduler is not None:
            scheduler.wake()
        return run.id

    def _new_run(
        self,
        workflow: type,
        context: Mapping[str, Any] | None,
        id: str,
        version: int | None,
        telemetry_metadata: Mapping[str, Any] | None,
    ) -> NewRun:
        from hephaestus.workflow import Workflow

        if not (isinstance(workflow, type) and issubclass(workflow, Workflow)):
            raise TypeError(f"workflow must be a Workflow class, got {workflow!r}")
        if not isinstance(id, str):
            raise TypeError(f"id must be a str, got {type(id).__name__}")
        if not id:
            raise ValueError("id must not be empty")
        if context is None:
            context = {}
        chosen, _ = workflow.resolve_version(version)
        instance = Instance.new(workflow, chosen, context, id)
        # When telemetry started for it (time.monotonic_ns(), as the
        # original's telemetry_start_time; it means something only in the
        # process that started the instance).
        instance = instance.replace(
            telemetry_metadata=dict(telemetry_metadata or {}),
            telemetry_start_time=time.monotonic_ns(),
        )
        self.register(workflow)
        return NewRun(
            id=id,
            token=uuid.uuid4().hex,
            workflow=_name(workflow),
            version=chosen,
            unique_key=_unique_key(workflow, chosen, id),
            snapshot=instance.to_bytes(),
            created_at=self._clock.now(),
            trace=otel.capture(),
        )

    def register(self, *workflows: type) -> None:
        """Tells the app about workflow classes whose runs it may load (those
        it starts are known already); a run whose workflow class is not
        loaded in this process is left alone, for an app that has it."""
        for workflow in workflows:
            self._workflows[_name(workflow)] = workflow
            for member in (getattr(workflow, "versions", None) or {}).values():
                self._workflows[_name(member)] = member

    def run(
        self,
        workflow: type,
        context: Mapping[str, Any] | None = None,
        *,
        id: str,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Instance:
        """:meth:`start_instance`, then :meth:`wait`."""
        iid = self.start_instance(
            workflow, context, id=id, version=version, telemetry_metadata=telemetry_metadata
        )
        return self.wait(iid, timeout=timeout)

    def resume(self, id: str, event: str, *, step: type | None = None) -> None:
        """Delivers ``event`` to the waiting step of the newest run of ``id``
        that declares it, and runs what follows.

        Raises:
            InstanceNotFoundError: No instance has the id.
            InvalidTransitionError: Nothing waits for the event; or several
                waiting steps declare it and ``step`` does not pick one (the
                message lists them); or the step that waited was resumed
                already (a timer or another resume won).
        """
        self._resume(id, event, step, None)

    def _resume(self, id: str, event: str, step: type | None, workflow: type | None) -> None:
        self._check_open()
        _check_str(id, "id")
        _check_str(event, "event")
        if step is not None and not isinstance(step, type):
            raise TypeError(f"step must be a step class, got {step!r}")
        scheduler = self._workers()
        while True:
            row = self._newest(id, workflow)
            stored = self._storage.load(row.run_id)
            driver = self._rebuild(stored)
            chosen = _waiting_for(driver.instance, event, step, id)
            driver.resume(chosen, event, timestamp=as_datetime(self._clock.now()))
            instance = driver.instance
            change = Append(
                run_id=row.run_id,
                expected_seq=stored.row.seq,
                records=driver.take_records(),
                status=driver.status.value,
                runnable=bool(instance.active_steps - instance.waiting_steps),
                updated_at=self._clock.now(),
                # The resumed step's timer, and those of steps it withdrew.
                drop_timers=stale_timers(
                    instance, stored.timers, {step_key(s): s for s in graph_of(instance).steps}
                ),
                snapshot=instance.to_bytes() if instance.is_terminal else None,
            )
            (conflict,) = self._storage.commit([change])
            if conflict is None:
                break
        waited = self._clock.now() - stored.row.updated_at
        events.step_resumed(instance, chosen, event, "external", waited)
        self._notify()
        if scheduler is not None:
            scheduler.changed(row.run_id)

    def get(self, id: str) -> Instance:
        """The newest run of ``id``.

        Raises:
            InstanceNotFoundError: No instance has the id.
            SerializationError: Its workflow class is not loaded in this process.
        """
        return self._get(id, None)

    def _get(self, id: str, workflow: type | None) -> Instance:
        self._check_open()
        return self._instance(self._newest(id, workflow))

    def explain(self, id: str) -> Explanation:
        """Why the newest run of ``id`` is where it is: for an unfinished
        instance, everything it waits on (events, timers, retries, joins,
        the progress of its loops, which steps run and where), in plain
        words (``str()``) and as data (``.reasons``). A run whose workflow
        class is not loaded here is explained as such, not refused.

        Raises:
            InstanceNotFoundError: No instance has the id.
        """
        self._check_open()
        row = self._newest(id)
        stored = self._storage.load(row.run_id)
        try:
            instance = self._rebuild(stored).finish()
        except SerializationError as exc:
            return explain.unloadable(row, str(exc))
        running = self._scheduler.running_since(row.run_id) if self._scheduler else {}
        return explain.explain(stored, instance, self._clock.now(), self._owner, running)

    def list(
        self,
        *,
        workflow: type | None = None,
        status: str | Status | Iterable[str | Status] | None = None,
        version: int | None = None,
        id: str | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        """Instances, newest first, matching every filter given: a workflow
        (a dispatcher matches all its versions), one status or several, a
        version, an id (all its runs), at most ``limit``."""
        self._check_open()
        workflows = None
        if workflow is not None:
            if not isinstance(workflow, type):
                raise TypeError(f"workflow must be a workflow class, got {workflow!r}")
            self.register(workflow)
            workflows = _names(workflow)
        statuses = None if status is None else _statuses(status)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise TypeError(f"version must be an int, got {type(version).__name__}")
        if id is not None:
            _check_str(id, "id")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        rows = self._storage.find(
            workflows=workflows, statuses=statuses, version=version, id=id, limit=limit
        )
        return [self._instance(row) for row in rows]

    def cancel(self, id: str, *, reason: Any = None) -> Instance:
        """Fails the newest run of ``id`` with ``error == {"kind":
        "cancelled", "reason": reason}``: its timers and pending retries are
        dropped, the results of its running steps discarded, and it stays
        cancelled across restarts.

        Raises:
            InstanceNotFoundError: No instance has the id.
            InvalidTransitionError: The instance already finished.
        """
        return self._cancel(id, reason, None)

    def _cancel(self, id: str, reason: Any, workflow: type | None) -> Instance:
        self._check_open()
        _check_str(id, "id")
        while True:
            row = self._newest(id, workflow)
            stored = self._storage.load(row.run_id)
            driver = self._rebuild(stored)
            if not driver.fail_with(_cancelled(reason)):
                raise InvalidTransitionError(
                    f"{id} is {driver.status.value}: it cannot be cancelled"
                )
            change = Append(
                run_id=row.run_id,
                expected_seq=stored.row.seq,
                records=driver.take_records(),
                status="failed",
                runnable=False,
                updated_at=self._clock.now(),
                snapshot=driver.instance.to_bytes(),
            )
            (conflict,) = self._storage.commit([change])
            if conflict is None:
                break
        self._notify()
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.changed(row.run_id)
        return driver.instance

    def wait(self, id: str, *, timeout: float | None = None) -> Instance:
        """The newest run of ``id`` once it is completed, failed or waiting.

        Raises:
            InstanceNotFoundError: No instance has the id.
            TimeoutError: After ``timeout`` seconds (real time).
        """
        self._check_open()
        _check_str(id, "id")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float))
        ):
            raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
        deadline = None if timeout is None else time.monotonic() + timeout
        # This app's commits notify; other processes' show only in the
        # storage, which is read again at least every half second.
        pause = 0.01
        while True:
            with self._changed:
                seen = self._changes
            row = self._newest(id)
            if row.status in _SETTLED:
                instance = self._instance(row)
                if instance.status.value in _SETTLED:
                    return instance
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"{id} is still {row.status} after {timeout} s")
            with self._changed:
                if self._closed:
                    raise RuntimeError("this Hephaestus app is closed")
                if self._changes == seen:
                    self._changed.wait(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 2, 0.5)

    # -- async twins ---------------------------------------------------------------------

    async def start_instance_async(
        self,
        workflow: type,
        context: Mapping[str, Any] | None = None,
        *,
        id: str,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """:meth:`start_instance` without blocking the event loop."""
        return await asyncio.to_thread(
            self.start_instance,
            workflow,
            context,
            id=id,
            version=version,
            telemetry_metadata=telemetry_metadata,
        )

    async def run_async(
        self,
        workflow: type,
        context: Mapping[str, Any] | None = None,
        *,
        id: str,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Instance:
        """:meth:`run` without blocking the event loop."""
        iid = await self.start_instance_async(
            workflow, context, id=id, version=version, telemetry_metadata=telemetry_metadata
        )
        return await self.wait_async(iid, timeout=timeout)

    async def resume_async(self, id: str, event: str, *, step: type | None = None) -> None:
        """:meth:`resume` without blocking the event loop."""
        await asyncio.to_thread(self.resume, id, event, step=step)

    async def explain_async(self, id: str) -> Explanation:
        """:meth:`explain` without blocking the event loop."""
        return await asyncio.to_thread(self.explain, id)

    async def get_async(self, id: str) -> Instance:
        """:meth:`get` without blocking the event loop."""
        return await asyncio.to_thread(self.get, id)

    async def list_async(
        self,
        *,
        workflow: type | None = None,
        status: str | Status | Iterable[str | Status] | None = None,
        version: int | None = None,
        id: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Instance]:
        """:meth:`list` without blocking the event loop."""
        return await asyncio.to_thread(
            self.list, workflow=workflow, status=status, version=version, id=id, limit=limit
        )

    async def cancel_async(self, id: str, *, reason: Any = None) -> Instance:
        """:meth:`cancel` without blocking the event loop."""
        return await asyncio.to_thread(self.cancel, id, reason=reason)

    async def wait_async(self, id: str, *, timeout: float | None = None) -> Instance:
        """:meth:`wait` without blocking the event loop."""
        return await asyncio.to_thread(self.wait, id, timeout=timeout)

    # -- reading -------------------------------------------------------------------------

    def _newest(self, id: str, workflow: type | None = None) -> RunRow:
        """The newest run of ``id`` (of ``workflow``, when given)."""
        _check_str(id, "id")
        if workflow is None:
            row = self._storage.newest(id)
        else:
            rows = self._storage.find(workflows=_names(workflow), id=id, limit=1)
            row = rows[0] if rows else None
        if row is None:
            of = "" if workflow is None else f" of {workflow.__qualname__}"
            raise InstanceNotFoundError(f"no instance{of} has the id {id!r}")
        return row

    def _instance(self, row: RunRow) -> Instance:
        stored = self._storage.load(row.run_id)
        return self._rebuild(stored).finish()

    def _rebuild(self, stored: Stored) -> _core.Run:
        """A reader over ``stored``: its snapshot with its journal replayed
        (it runs nothing, not even a ForEach's items function)."""
        self._resolve(stored.row.workflow)
        instance = Instance.from_bytes(stored.snapshot)
        driver = _core.Run(graph_of(instance), instance, record=True, start=False, drive=False)
        driver.replay(stored.records)
        return driver

    def _resolve(self, name: str) -> type:
        """The workflow class ``name`` names, if loaded in this process (or,
        with ``import_workflows``, importable)."""
        known = self._workflows.get(name)
        if known is not None:
            return known
        module_name, _, qualname = name.partition(":")
        module = sys.modules.get(module_name)
        if module is None and self._import_workflows:
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:
                raise SerializationError(
                    f"cannot load runs of {name}: importing {module_name!r} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if not isinstance(obj, type):
            how = (
                f"{module_name!r} has no class {qualname!r}"
                if module is not None
                else f"its module {module_name!r} is not imported in this process (import it, "
                "or register the workflow with app.register())"
            )
            raise SerializationError(f"cannot load runs of {name}: {how}")
        self._workflows[name] = obj
        return obj

    def _notify(self) -> None:
        with self._changed:
            self._changes += 1
            self._changed.notify_all()


def _names(workflow: type) -> set[str]:
    """The names a workflow's runs are stored under: its own and, for a
    dispatcher, its versions'."""
    members = getattr(workflow, "versions", None) or {}
    return {_name(workflow), *(_name(m) for m in members.values())}


def _check_str(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")


def _statuses(status: str | Status | Iterable[str | Status]) -> list[str]:
    items = [status] if isinstance(status, str) else list(status)
    values = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"status must be a Status or str, got {type(item).__name__}")
        values.append(Status(str.__str__(item)).value)
    return values


def _unique_key(workflow: type, version: int, id: str) -> str | None:
    scope = workflow.unique.scope  # type: ignore[attr-defined]
    if scope == "none":
        return None
    if scope == "global":
        return f"global:{id}"
    if scope == "version":
        return f"version:{_name(workflow)}:{version}:{id}"
    return f"workflow:{_name(workflow)}:{id}"


def _cancelled(reason: Any) -> dict[str, Any]:
    return {"kind": "cancelled", "reason": reason}


def _waiting_for(instance: Instance, event: str, step: type | None, id: str) -> type:
    """The waiting step of ``instance`` to deliver ``event`` to."""
    waiting = [s for s in instance.waiting_steps if event in getattr(s, "events", ())]
    if step is not None:
        if step not in instance.waiting_steps:
            raise InvalidTransitionError(f"{step.__qualname__} of {id} is not waiting")
        if event not in step.events:  # type: ignore[attr-defined]
            declared = ", ".join(repr(e) for e in step.events)  # type: ignore[attr-defined]
            raise InvalidTransitionError(
                f"{step.__qualname__} does not declare the event {event!r}; it declares {declared}"
            )
        return step
    if not waiting:
        if instance.is_terminal:
            raise InvalidTransitionError(f"{id} is {instance.status.value}: nothing waits")
        raise InvalidTransitionError(f"nothing in {id} waits for the event {event!r}")
    if len(waiting) > 1:
        names = ", ".join(sorted(s.__qualname__ for s in waiting))
        raise InvalidTransitionError(
            f"several steps of {id} wait for {event!r}: {names}; pass step= to pick one"
        )
    return waiting[0]
