"""The storage protocol: where the runtime keeps its state.

A storage keeps *runs*. A run is one execution of one instance id: starting
an id again after its run finished makes a new run, and earlier runs are
kept. Each run has a row (id, workflow, status, lease, ...), an append-only
*journal* of opaque records (what the engine applied, in order: replaying
them through the core rebuilds the instance), a *snapshot* (the instance's
bytes after some prefix of the journal, so loading replays only the tail),
its *timers* (a ``Wait`` step's timeout, a step's next retry), and the
*attempts* that failed.

The runtime owns the logic; a storage only keeps data and enforces three
rules atomically:

* uniqueness: at most one unfinished run per ``unique_key``;
* single writer: a change applies only to the journal position it was built
  on (``Append.expected_seq``), and, when it names an ``owner``, only while
  that owner holds the run's lease;
* durability: when a write method returns, its changes are committed.

Every storage passes the same test suite (``tests/runtime/test_storage.py``).
Times are seconds on the runtime's clock (``Clock.now()``), passed in: a
storage never reads a clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any, Literal, Protocol

from hephaestus.errors import HephaestusError

__all__ = [
    "Append",
    "Attempt",
    "ConflictError",
    "Firing",
    "NewRun",
    "RunRow",
    "StepJob",
    "StepOutcome",
    "Storage",
    "StorageError",
    "Stored",
    "Timer",
]


class StorageError(HephaestusError):
    """The storage failed or cannot be used: a file that is not a hephaestus
    database, a schema written by a newer version, a read-only or full disk,
    an I/O error. Committed state is never changed by a failed write."""


class ConflictError(Exception):
    """A change was built on a journal position that is no longer the run's
    last (another writer appended first), or its owner lost the lease. The
    writer reloads the run and tries again."""


@dataclasses.dataclass(frozen=True)
class NewRun:
    """A run to create: a pending instance, not yet started."""

    id: str
    #: Random per run; the runtime derives idempotency keys from it.
    token: str
    #: ``"module:QualName"`` of the instance's workflow class.
    workflow: str
    version: int
    #: The uniqueness key (the scope is encoded in it), or ``None`` for no check.
    unique_key: str | None
    #: ``Instance.to_bytes()`` of the pending instance; its journal is empty.
    snapshot: bytes
    created_at: float
    status: str = "pending"
    #: The caller's trace context (W3C ``traceparent``/``tracestate`` as
    #: JSON) when OpenTelemetry is in use, carried into every step.
    trace: str | None = None


@dataclasses.dataclass(frozen=True)
class RunRow:
    """What a storage knows of a run without loading it."""

    run_id: int
    token: str
    id: str
    workflow: str
    version: int
    status: str
    #: The number of journal records.
    seq: int
    lease_owner: str | None
    lease_expires: float | None
    #: Whether the run has work to do now: pending, or steps to run that are
    #: not waiting and not in a retry's backoff.
    runnable: bool
    created_at: float
    updated_at: float
    #: The trace context the run was started in (see ``NewRun.trace``).
    trace: str | None = None


@dataclasses.dataclass(frozen=True)
class Timer:
    """A step's timer: a ``Wait`` step's timeout (``"wait"``), a run's next
    retry (``"retry"``), or the next run of a ``Repeat`` step with
    ``every`` (``"repeat"``)."""

    #: The step's key; for a run of a ForEach or Repeat step,
    #: ``key#iteration``.
    step: str
    kind: Literal["wait", "retry", "repeat"]
    due: float
    #: For a retry, the attempt that will run (2 for the first retry).
    attempt: int = 0


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A failed attempt of a step."""

    step: str
    attempt: int
    finished: float
    #: ``"exception"`` or ``"timeout"``.
    outcome: str
    error_type: str | None = None
    error_message: str | None = None
    started: float | None = None
    #: The last frames of the exception's traceback, as text.
    traceback: str | None = None


@dataclasses.dataclass(frozen=True)
class StepJob:
    """A run of a step handed to a task queue (``executor="procrastinate"``)
    whose outcome is not applied yet."""

    #: The unit key: the step key, with ``#iteration`` for a run of a
    #: ForEach or Repeat step.
    unit: str
    attempt: int
    #: The queue's id of the job that runs it.
    job_id: int


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    """How a queued run of a step ended, as its execution recorded it."""

    run_id: int
    unit: str
    attempt: int
    #: ``"returned"``, ``"raised"`` or ``"timed_out"``.
    outcome: str
    #: For ``"returned"``: the step's outcome as a journal record.
    record: bytes | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    started: float | None
    finished: float | None


@dataclasses.dataclass(frozen=True)
class Stored:
    """A run as loaded: its row, its snapshot and the journal after it."""

    row: RunRow
    snapshot: bytes
    #: How many journal records the snapshot includes.
    snapshot_seq: int
    #: The records after the snapshot, in order (``seq`` ``snapshot_seq + 1``...).
    records: list[bytes]
    timers: list[Timer]
    attempts: list[Attempt]
    #: Its runs of steps out on a task queue (only a storage with a queue).
    jobs: list[StepJob] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Append:
    """A change to one run: journal records and the row they lead to."""

    run_id: int
    #: The run's ``seq`` this change was built on; the records get
    #: ``expected_seq + 1``, ``+ 2``, ...
    expected_seq: int
    records: Sequence[bytes]
    status: str
    runnable: bool
    updated_at: float
    #: The instance after these records, to load from next time.
    snapshot: bytes | None = None
    set_timers: Sequence[Timer] = ()
    #: Step keys whose timers go away.
    drop_timers: Sequence[str] = ()
    attempts: Sequence[Attempt] = ()
    #: When set, the change applies only while this owner holds the lease.
    owner: str | None = None
    #: Give the lease up after this change.
    release: bool = False
    #: Runs of steps to hand to the task queue in the same transaction, as
    #: ``(unit key, attempt)`` (only a storage with a queue takes them).
    dispatch: Sequence[tuple[str, int]] = ()
    #: Unit keys of queued runs whose outcomes this change applies.
    settle: Sequence[str] = ()

    @property
    def finished(self) -> bool:
        """A completed or failed run: its unique key is freed, its timers go
        away and its lease is released."""
        return self.status in ("completed", "failed")


@dataclasses.dataclass(frozen=True)
class Firing:
    """A due timer, fired: ``record`` (for a wait, the resume the runtime
    built) is appended after whatever the journal holds (and the run's
    status becomes ``"running"``), and the run becomes runnable. Fires only
    if the timer still exists (exactly once)."""

    run_id: int
    step: str
    record: bytes | None


class Storage(Protocol):
    """Where the runtime keeps runs (see the module docs)."""

    def open(self) -> None:
        """Creates the schema on first use or checks it; raises
        :class:`StorageError` for a database that is not ours or was written
        by a newer schema, and changes nothing then."""

    def close(self) -> None:
        """Releases connections; the storage cannot be used afterwards."""

    def create(self, run: NewRun) -> int:
        """Stores a new run and returns its ``run_id`` (increasing: a later
        run has a larger one). Raises ``AlreadyRunningError`` naming the id
        when an unfinished run holds ``run.unique_key``."""

    def commit(self, changes: Sequence[Append]) -> list[ConflictError | None]:
        """Applies every change in one transaction (one disk sync for all),
        each atomically: a change whose ``expected_seq`` is not the run's
        ``seq``, or whose owner does not hold the lease, is left out and
        reported as a :class:`ConflictError` in its place; the others apply."""

    def fire(self, firings: Sequence[Firing], now: float) -> list[bool]:
        """Fires timers in one transaction; ``True`` for each that still
        existed (and so fired)."""

    def claim(
        self, owner: str, now: float, lease: float, limit: int, skip: Collection[str] = ()
    ) -> list[RunRow]:
        """Leases up to ``limit`` runnable runs to ``owner`` until ``now +
        lease``: runs no one holds, whose lease expired, or that ``owner``
        already holds, oldest first, leaving out workflows in ``skip``."""

    def renew(self, owner: str, now: float, lease: float) -> None:
        """Extends every lease ``owner`` holds to ``now + lease``."""

    def release(self, owner: str, run_ids: Collection[int] | None) -> None:
        """Gives up ``owner``'s leases on ``run_ids`` (``None``: all of them)."""

    def lease_owners(self) -> set[str]:
        """Everyone who holds a lease now (expired or not). Only runs with
        work in progress are leased, so this stays small however many runs
        are stored."""

    def due(self, now: float, limit: int) -> list[tuple[int, Timer]]:
        """Timers due at ``now``, earliest first."""

    def data_version(self) -> int:
        """A number that changes whenever the stored runs may have changed
        (anyone's commit, a new run, a fired timer, a release), and is cheap
        to read: an idle app glances at it to notice work that another
        process made without running its queries."""

    def next_wake(self, owner: str) -> float | None:
        """The earliest time something may need ``owner``: a timer falls due,
        or a runnable run's lease held by someone else expires."""

    def load(self, run_id: int) -> Stored:
        """A run with its snapshot, journal tail, timers and failed attempts;
        ``KeyError`` for an unknown run."""

    def newest(self, id: str) -> RunRow | None:
        """The newest run of ``id``, or ``None``."""

    def find(
        self,
        *,
        workflows: Collection[str] | None = None,
        statuses: Collection[str] | None = None,
        version: int | None = None,
        id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRow]:
        """Runs matching every filter given, newest first."""


def row_from(values: Sequence[Any]) -> RunRow:
    """A :class:`RunRow` from the first 13 columns of a query that selects
    them in its fields' order (the SQL storages' rows)."""
    (
        run_id,
        token,
        id,
        workflow,
        version,
        status,
        seq,
        lease_owner,
        lease_expires,
        runnable,
        created_at,
        updated_at,
        trace,
    ) = values[:13]
    return RunRow(
        run_id=run_id,
        token=token,
        id=id,
        workflow=workflow,
        version=version,
        status=status,
        seq=seq,
        lease_owner=lease_owner,
        lease_expires=lease_expires,
        runnable=bool(runnable),
        created_at=created_at,
        updated_at=updated_at,
        trace=trace,
    )


def timer_params(run_id: int, timer: Timer) -> dict[str, object]:
    """The parameters of the SQL storages' ``set_timer`` query."""
    return {
        "run_id": run_id,
        "step": timer.step,
        "kind": timer.kind,
        "due": timer.due,
        "attempt": timer.attempt,
    }


def attempt_params(run_id: int, attempt: Attempt) -> dict[str, object]:
    """The parameters of the SQL storages' ``add_attempt`` query."""
    return {"run_id": run_id, **dataclasses.asdict(attempt)}


def opt_bytes(value: bytes | None) -> bytes | None:
    """``value`` as ``bytes`` (a storage keeps no views of its callers' buffers)."""
    return None if value is None else bytes(value)


def already_running(run: NewRun, holder_run_id: int, holder_id: str) -> str:
    """The message of the :class:`AlreadyRunningError` that refuses ``run``
    because run ``holder_run_id`` (of ``holder_id``) holds its unique key."""
    if holder_id == run.id:
        return f"{run.id!r} is already running (run {holder_run_id})"
    return (
        f"{run.id!r} cannot start: {holder_id!r} (run {holder_run_id}) "
        f"holds its unique key {run.unique_key!r}"
    )
