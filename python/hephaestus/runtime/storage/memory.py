"""``MemoryStorage``: the storage protocol in process memory.

A model of :class:`~hephaestus.runtime.storage.sqlite.SQLiteStorage` with the
same rules (it passes the same test suite), for tests and ``memory://``:
nothing survives the process. Every method holds one lock, so each call is
atomic, as a transaction is.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Sequence

from hephaestus.errors import AlreadyRunningError

from .base import (
    Append,
    Attempt,
    ConflictError,
    Firing,
    NewRun,
    RunRow,
    StorageError,
    Stored,
    Timer,
    already_running,
    opt_bytes,
)

__all__ = ["MemoryStorage"]

_FINISHED = ("completed", "failed")


@dataclasses.dataclass
class _Run:
    """A run's mutable state; ``row()`` is the frozen view handed out."""

    run_id: int
    token: str
    id: str
    workflow: str
    version: int
    unique_key: str | None
    status: str
    runnable: bool
    snapshot: bytes
    created_at: float
    updated_at: float
    trace: str | None = None
    snapshot_seq: int = 0
    lease_owner: str | None = None
    lease_expires: float | None = None
    journal: list[bytes] = dataclasses.field(default_factory=list)
    timers: dict[str, Timer] = dataclasses.field(default_factory=dict)
    attempts: list[Attempt] = dataclasses.field(default_factory=list)

    def row(self) -> RunRow:
        return RunRow(
            run_id=self.run_id,
            token=self.token,
            id=self.id,
            workflow=self.workflow,
            version=self.version,
            status=self.status,
            seq=len(self.journal),
            lease_owner=self.lease_owner,
            lease_expires=self.lease_expires,
            runnable=self.runnable,
            created_at=self.created_at,
            updated_at=self.updated_at,
            trace=self.trace,
        )


class MemoryStorage:
    """Runs kept in dictionaries under one ``threading.Lock``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}
        #: ``unique_key`` -> ``run_id`` of the unfinished run holding it.
        self._unique: dict[str, int] = {}
        # Indexes, so that no operation but a listing walks every run:
        #: ``id`` -> its runs' ``run_id``s, oldest first.
        self._by_id: dict[str, list[int]] = {}
        #: Runs with work to do, runs with timers, and runs with a lease holder.
        self._runnable: set[int] = set()
        self._timed: set[int] = set()
        self._leased: set[int] = set()
        self._last_run_id = 0
        self._state: str = "new"
        #: Counts the writes that may make work (see ``data_version``).
        self._version = 0

    def open(self) -> None:
        with self._lock:
            if self._state == "closed":
                raise StorageError("the storage is closed")
            self._state = "open"

    def close(self) -> None:
        with self._lock:
            self._state = "closed"

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageError(f"the storage is {self._state}, not open")

    # -- writes ---------------------------------------------------------------

    def create(self, run: NewRun) -> int:
        finished = run.status in _FINISHED
        snapshot = bytes(run.snapshot)
        with self._lock:
            self._check_open()
            key = None if finished else run.unique_key
            if key is not None and key in self._unique:
                holder = self._runs[self._unique[key]]
                raise AlreadyRunningError(already_running(run, holder.run_id, holder.id))
            self._last_run_id += 1
            run_id = self._last_run_id
            self._runs[run_id] = _Run(
                run_id=run_id,
                token=run.token,
                id=run.id,
                workflow=run.workflow,
                version=run.version,
                unique_key=key,
                status=run.status,
                runnable=not finished,
                snapshot=snapshot,
                created_at=run.created_at,
                updated_at=run.created_at,
                trace=run.trace,
            )
            if key is not None:
                self._unique[key] = run_id
            self._by_id.setdefault(run.id, []).append(run_id)
            if not finished:
                self._runnable.add(run_id)
            self._version += 1
            return run_id

    def commit(self, changes: Sequence[Append]) -> list[ConflictError | None]:
        # Copied before the lock: a bad value fails the call before anything applies.
        copies = [
            (change, [bytes(r) for r in change.records], opt_bytes(change.snapshot))
            for change in changes
        ]
        with self._lock:
            self._check_open()
            self._version += 1
            return [self._apply(change, records, snap) for change, records, snap in copies]

    def _apply(
        self, change: Append, records: list[bytes], snapshot: bytes | None
    ) -> ConflictError | None:
        run = self._runs.get(change.run_id)
        if run is None:
            return ConflictError(f"run {change.run_id} does not exist")
        if len(run.journal) != change.expected_seq:
            return ConflictError(_seq_conflict(change, len(run.journal)))
        if change.owner is not None and run.lease_owner != change.owner:
            return ConflictError(_owner_conflict(change, run.lease_owner))
        run.journal.extend(records)
        run.status = change.status
        run.updated_at = change.updated_at
        if snapshot is not None:
            run.snapshot = snapshot
            run.snapshot_seq = len(run.journal)
        for step in change.drop_timers:
            run.timers.pop(step, None)
        for timer in change.set_timers:
            run.timers[timer.step] = timer
        run.attempts.extend(change.attempts)
        run.runnable = change.runnable
        if change.finished:
            run.runnable = False
            run.timers.clear()
            if run.unique_key is not None:
                del self._unique[run.unique_key]
                run.unique_key = None
        if change.finished or change.release:
            run.lease_owner = run.lease_expires = None
        self._index(run)
        return None

    def _index(self, run: _Run) -> None:
        """Brings the indexes up to date with ``run``."""
        for index, member in (
            (self._runnable, run.runnable),
            (self._timed, bool(run.timers)),
            (self._leased, run.lease_owner is not None),
        ):
            if member:
                index.add(run.run_id)
            else:
                index.discard(run.run_id)

    def fire(self, firings: Sequence[Firing], now: float) -> list[bool]:
        with self._lock:
            self._check_open()
            self._version += 1
            fired = []
            for firing in firings:
                run = self._runs.get(firing.run_id)
                if run is None or run.timers.pop(firing.step, None) is None:
                    fired.append(False)
                    continue
                if firing.record is not None:
                    run.journal.append(bytes(firing.record))
                    run.status = "running"
                run.runnable = True
                run.updated_at = now
                self._index(run)
                fired.append(True)
            return fired

    def claim(
        self, owner: str, now: float, lease: float, limit: int, skip: Collection[str] = ()
    ) -> list[RunRow]:
        with self._lock:
            self._check_open()
            claimed: list[RunRow] = []
            for run_id in sorted(self._runnable):
                if len(claimed) >= limit:
                    break
                run = self._runs[run_id]
                if run.workflow in skip:
                    continue
                free = run.lease_owner is None or run.lease_owner == owner
                if free or (run.lease_expires is not None and run.lease_expires <= now):
                    run.lease_owner, run.lease_expires = owner, now + lease
                    self._leased.add(run_id)
                    claimed.append(run.row())
            return claimed

    def renew(self, owner: str, now: float, lease: float) -> None:
        with self._lock:
            self._check_open()
            for run_id in self._leased:
                run = self._runs[run_id]
                if run.lease_owner == owner:
                    run.lease_expires = now + lease

    def release(self, owner: str, run_ids: Collection[int] | None) -> None:
        with self._lock:
            self._check_open()
            self._version += 1
            chosen = list(self._leased) if run_ids is None else run_ids
            for run_id in chosen:
                run = self._runs.get(run_id)
                if run is not None and run.lease_owner == owner:
                    run.lease_owner = run.lease_expires = None
                    self._leased.discard(run_id)

    def data_version(self) -> int:
        with self._lock:
            self._check_open()
            return self._version

    def lease_owners(self) -> set[str]:
        with self._lock:
            self._check_open()
            return {
                owner
                for owner in (self._runs[run_id].lease_owner for run_id in self._leased)
                if owner is not None
            }

    # -- reads ----------------------------------------------------------------

    def due(self, now: float, limit: int) -> list[tuple[int, Timer]]:
        with self._lock:
            self._check_open()
            timers = [
                (run_id, timer)
                for run_id in self._timed
                for timer in self._runs[run_id].timers.values()
                if timer.due <= now
            ]
        timers.sort(key=lambda item: (item[1].due, item[0], item[1].step))
        return timers[: max(limit, 0)]

    def next_wake(self, owner: str) -> float | None:
        with self._lock:
            self._check_open()
            times = [
                timer.due for run_id in self._timed for timer in self._runs[run_id].timers.values()
            ]
            times.extend(
                run.lease_expires
                for run in map(self._runs.__getitem__, self._runnable & self._leased)
                if run.lease_expires is not None
                and run.lease_owner is not None
                and run.lease_owner != owner
            )
        return min(times, default=None)

    def load(self, run_id: int) -> Stored:
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is None:
                raise KeyError(run_id)
            return Stored(
                row=run.row(),
                snapshot=run.snapshot,
                snapshot_seq=run.snapshot_seq,
                records=run.journal[run.snapshot_seq :],
                timers=sorted(run.timers.values(), key=lambda t: (t.due, t.step)),
                attempts=list(run.attempts),
            )

    def newest(self, id: str) -> RunRow | None:
        found = self.find(id=id, limit=1)
        return found[0] if found else None

    def find(
        self,
        *,
        workflows: Collection[str] | None = None,
        statuses: Collection[str] | None = None,
        version: int | None = None,
        id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRow]:
        with self._lock:
            self._check_open()
            newest_first = (
                reversed(self._runs.values())  # created in run_id order
                if id is None
                else map(self._runs.__getitem__, reversed(self._by_id.get(id, ())))
            )
            rows: list[RunRow] = []
            for run in newest_first:
                if limit is not None and len(rows) >= limit:
                    break
                if (
                    (workflows is None or run.workflow in workflows)
                    and (statuses is None or run.status in statuses)
                    and (version is None or run.version == version)
                ):
                    rows.append(run.row())
        return rows


def _seq_conflict(change: Append, seq: int) -> str:
    return (
        f"run {change.run_id} has {seq} journal records, "
        f"the change was built on {change.expected_seq}"
    )


def _owner_conflict(change: Append, holder: str | None) -> str:
    held = "no one" if holder is None else repr(holder)
    return f"run {change.run_id} is leased to {held}, not to {change.owner!r}"
