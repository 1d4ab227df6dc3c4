"""``SQLiteStorage``: the storage protocol in one SQLite file.

Durability and concurrency:

* The file is in WAL mode, and every connection uses ``synchronous=FULL``,
  so a committed transaction survives a power loss.
* Every write transaction starts with ``BEGIN IMMEDIATE`` and waits up to
  ``busy_timeout`` seconds for another writer, so several processes can share
  one file (on one host: WAL does not work over network filesystems).
* One process has one writer connection per file: every ``SQLiteStorage``
  on the same (resolved) path shares it. A writer thread owns it and *group
  commits*: it takes every queued write request, runs them all in one
  transaction, each inside its own ``SAVEPOINT`` (so a failing request rolls
  back alone), commits once (one disk sync) and only then answers each
  caller. N threads writing at once cost about one sync, not N.
* Reads run on a read connection per thread and storage, beside the writer.

The schema version is ``PRAGMA user_version``; the numbered migrations in
``sql/sqlite/`` bring a database up to date, and the queries are the named
ones in ``sql/sqlite/queries.sql``. ``open()`` refuses, without changing a
byte, a file that is not SQLite, an SQLite database that is not ours, or one
written by a newer schema.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar

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
    attempt_params,
    opt_bytes,
    row_from,
    timer_params,
)
from .sqlfiles import sql_files

__all__ = ["SQLiteStorage"]

_T = TypeVar("_T")
_FINISHED = ("completed", "failed")
_HEADER = b"SQLite format 3\x00"
_MARKER = "hephaestus"


_Q, _MIGRATIONS = sql_files("sqlite")
#: The schema version this code writes and reads.
SCHEMA_VERSION = len(_MIGRATIONS)


def _statements(script: str) -> Iterable[str]:
    """The statements of a migration script, one at a time."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""
    if any(line.strip() and not line.lstrip().startswith("--") for line in statement.splitlines()):
        raise RuntimeError(f"a migration ends with an incomplete statement: {statement!r}")


# -- errors -------------------------------------------------------------------

# Primary result codes (https://sqlite.org/rescode.html): what each means
# here, and the message text that identifies it where Python does not give
# the code (before 3.11).
_LOCKED = "the database stayed locked by another connection for longer than the busy timeout"
_ERRORS: dict[int, tuple[str, str]] = {
    5: ("database is locked", _LOCKED),
    6: ("database table is locked", _LOCKED),
    8: ("readonly database", "the database is read-only"),
    10: ("disk I/O error", "an I/O error"),
    11: ("malformed", "the database file is corrupt"),
    13: ("database or disk is full", "the disk is full"),
    14: ("unable to open database file", "the database file cannot be opened"),
    26: ("file is not a database", "the file is not an SQLite database"),
}


def _storage_error(error: BaseException, path: str) -> StorageError:
    """``error`` (an ``sqlite3`` one) as a :class:`StorageError` that says what failed."""
    code = getattr(error, "sqlite_errorcode", None)
    meaning = None
    if isinstance(code, int) and (code & 0xFF) in _ERRORS:
        meaning = _ERRORS[code & 0xFF][1]
    else:
        for text, what in _ERRORS.values():
            if text in str(error):
                meaning = what
                break
    what = meaning or "SQLite failed"
    result = StorageError(f"SQLite database {path}: {what} ({error})")
    result.__cause__ = error
    return result


# -- connections --------------------------------------------------------------


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (``BEGIN`` is always explicit)."""
    return sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )


def _configure(conn: sqlite3.Connection) -> None:
    """Per-connection settings; none writes the file."""
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


def _check_header(path: str) -> None:
    """Refuses a non-empty file that is not SQLite, before SQLite touches it."""
    try:
        with open(path, "rb") as file:
            header = file.read(len(_HEADER))
    except FileNotFoundError:
        return
    except OSError as error:
        raise StorageError(f"SQLite database {path}: cannot be read ({error})") from error
    if header and header != _HEADER:
        raise StorageError(f"SQLite database {path}: the file is not an SQLite database")


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    """The database's schema version (0 for an empty database); raises
    :class:`StorageError` for a database that is not ours or is newer. Only
    reads, in one read transaction: another process may be creating the
    schema meanwhile, and each read must see the same state."""
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        objects = int(conn.execute(_Q["schema_objects"]).fetchone()[0])
        ours = int(conn.execute(_Q["schema_has_marker"]).fetchone()[0]) == 1 and [
            value for (value,) in conn.execute(_Q["schema_marker"])
        ] == [_MARKER]
    finally:
        if own_transaction:
            conn.execute("ROLLBACK")
    if version == 0 and objects == 0:
        return 0
    if not ours or version == 0:
        raise StorageError(
            f"SQLite database {path}: not a hephaestus database "
            f"(it has other tables; user_version {version})"
        )
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"SQLite database {path}: written by a newer hephaestus (schema version "
            f"{version}; this version knows up to {SCHEMA_VERSION}); upgrade hephaestus"
        )
    return version


def _prepare(conn: sqlite3.Connection, path: str, busy_timeout: float) -> None:
    """Checks the schema and creates or migrates it. Nothing is written to a
    database that :func:`_schema_version` refuses."""
    if _schema_version(conn, path) == SCHEMA_VERSION:
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            _set_wal(conn, path, busy_timeout)
        return
    _set_wal(conn, path, busy_timeout)
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have created or migrated it meanwhile.
        version = _schema_version(conn, path)
        for number, _, script in _MIGRATIONS[version:]:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _set_wal(conn: sqlite3.Connection, path: str, busy_timeout: float) -> None:
    """Switches the file to WAL. SQLite answers this pragma "locked" at once,
    without waiting, while another process reads or switches the same new
    file, so it is tried again for up to ``busy_timeout`` seconds."""
    deadline = time.monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    if mode != "wal":
        raise StorageError(f"SQLite database {path}: cannot switch to WAL mode (mode {mode!r})")


# -- the writer ---------------------------------------------------------------


@dataclasses.dataclass
class _Request:
    work: Callable[[sqlite3.Connection], Any]
    future: concurrent.futures.Future[Any]


class _Writer:
    """The process's writer connection to one file, with group commit.

    There is no writer thread: a caller whose request finds no transaction
    in progress runs the transaction itself, in its own thread (no handoff,
    so a lone writer pays only SQLite's own cost). Requests that arrive while
    a transaction runs wait; the next transaction, run by one of their
    callers, takes all of them at once and commits them with one disk sync.
    """

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.path = path
        self.refs = 0
        self.transactions = 0
        self.pid = os.getpid()
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._leading = False
        self._closed = False
        self._submitted = 0
        self._conn = _connect(path, busy_timeout)
        try:
            _configure(self._conn)
            _prepare(self._conn, path, busy_timeout)
        except BaseException:
            self._conn.close()
            raise

    def submit(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Runs ``work`` in the next group transaction; returns once it
        committed (raising what it raised, or a :class:`StorageError`)."""
        request = _Request(work, concurrent.futures.Future())
        with self._cond:
            if self._closed:
                raise StorageError(f"SQLite database {self.path}: the storage is closed")
            self._submitted += 1
            self._queue.append(request)
            while not request.future.done():
                if not self._leading:
                    self._leading = True
                    break
                self._cond.wait()
        if not request.future.done():
            self._lead()
        result: _T = request.future.result()
        return result

    def _lead(self) -> None:
        """Runs transactions until no request is left, then steps down."""
        try:
            while True:
                with self._cond:
                    batch, self._queue = self._queue, []
                    if not batch:
                        return
                self._transaction(batch)
                with self._cond:
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._leading:
                self._cond.wait()
        if os.getpid() == self.pid:
            self._conn.close()
        # else: a forked child must not touch the parent's connection.

    def _transaction(self, requests: list[_Request]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Request, BaseException | None, Any]] = []
        failure: BaseException | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in requests:
                conn.execute("SAVEPOINT request")
                try:
                    value = request.work(conn)
                except Exception as error:
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back (a full disk,
                        # an I/O error): every request of it failed.
                        raise
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                    if isinstance(error, sqlite3.Error):
                        error = _storage_error(error, self.path)
                    outcomes.append((request, error, None))
                else:
                    conn.execute("RELEASE request")
                    outcomes.append((request, None, value))
            conn.execute("COMMIT")
            self.transactions += 1
        except Exception as error:
            failure = error
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        if failure is not None:
            for request in requests:
                request.future.set_exception(self._batch_error(failure))
            return
        for request, exception, value in outcomes:
            if exception is not None:
                request.future.set_exception(exception)
            else:
                request.future.set_result(value)

    def _batch_error(self, failure: BaseException) -> StorageError:
        """What each caller of a failed batch gets (a new exception for each)."""
        if isinstance(failure, sqlite3.Error):
            return _storage_error(failure, self.path)
        error = StorageError(f"SQLite database {self.path}: the write failed ({failure!r})")
        error.__cause__ = failure
        return error

    def submitted(self) -> int:
        """How many requests were ever submitted (for tests)."""
        return self._submitted


_writers: dict[str, _Writer] = {}
_writers_lock = threading.Lock()


def _forget_writers() -> None:
    # A forked child has no writer threads: its storages must not use the parent's.
    global _writers_lock
    _writers.clear()
    _writers_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers)


def _acquire_writer(path: str, busy_timeout: float) -> _Writer:
    with _writers_lock:
        writer = _writers.get(path)
        if writer is None:
            writer = _writers[path] = _Writer(path, busy_timeout)
        writer.refs += 1
        return writer


def _release_writer(writer: _Writer) -> None:
    with _writers_lock:
        writer.refs -= 1
        if writer.refs > 0:
            return
        if _writers.get(writer.path) is writer:
            del _writers[writer.path]
    writer.stop()


# -- the storage --------------------------------------------------------------


def _json(values: Iterable[Any]) -> str:
    return json.dumps(list(values))


def _limit(limit: int | None) -> int:
    return -1 if limit is None else max(limit, 0)


class SQLiteStorage:
    """Runs in the SQLite database at ``path`` (created on first ``open()``).

    Args:
        path: The database file. Storages on the same file in one process
            share one writer connection, and their writes commit in groups.
        busy_timeout: Seconds a write waits for another process's write
            transaction (and a read for a lock) before failing with
            :class:`StorageError`. The first storage opened on a file in a
            process sets it for the shared writer.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self._path = os.fspath(path)
        if self._path in ("", ":memory:") or self._path.startswith("file:"):
            raise ValueError(
                f"SQLiteStorage needs a file path, got {self._path!r} (use MemoryStorage "
                "for a storage in memory)"
            )
        self._busy_timeout = busy_timeout
        self._resolved = ""
        self._writer: _Writer | None = None
        self._closed = False
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    @property
    def path(self) -> str:
        """The database file, as given."""
        return self._path

    @property
    def transactions(self) -> int:
        """How many write transactions this process's writer for the file has
        committed (shared by every storage open on the file). With group
        commit this grows by one for a whole batch of concurrent writes."""
        return self._require_writer().transactions

    # -- lifecycle ------------------------------------------------------------

    def open(self) -> None:
        if self._closed:
            raise StorageError(f"SQLite database {self._path}: the storage is closed")
        if self._writer is not None:
            return
        self._resolved = os.path.realpath(self._path)
        _check_header(self._resolved)
        try:
            self._writer = _acquire_writer(self._resolved, self._busy_timeout)
        except sqlite3.Error as error:
            raise _storage_error(error, self._path) from error

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            readers, self._readers = self._readers, []
        forked = self._writer is not None and self._writer.pid != os.getpid()
        if not forked:
            for conn in readers:
                conn.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            _release_writer(writer)

    def _require_writer(self) -> _Writer:
        if self._writer is None:
            state = "closed" if self._closed else "not open"
            raise StorageError(f"SQLite database {self._path}: the storage is {state}")
        if self._writer.pid != os.getpid():
            raise StorageError(
                f"SQLite database {self._path}: a storage opened before os.fork() cannot be "
                "used in the child; open a new one there"
            )
        return self._writer

    def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        return self._require_writer().submit(work)

    def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Runs ``work`` in one read transaction on this thread's connection."""
        self._require_writer()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = _connect(self._resolved, self._busy_timeout)
                _configure(conn)
                conn.execute("PRAGMA query_only = ON")
                with self._readers_lock:
                    if self._closed:
                        conn.close()
                        raise StorageError(f"SQLite database {self._path}: the storage is closed")
                    self._readers.append(conn)
                self._local.conn = conn
            conn.execute("BEGIN")
            try:
                return work(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except sqlite3.Error as error:
            raise _storage_error(error, self._path) from error

    # -- writes ---------------------------------------------------------------

    def create(self, run: NewRun) -> int:
        finished = run.status in _FINISHED
        key = None if finished else run.unique_key
        params = {
            "token": run.token,
            "id": run.id,
            "workflow": run.workflow,
            "version": run.version,
            "unique_key": key,
            "status": run.status,
            "runnable": int(not finished),
            "created_at": run.created_at,
            "trace": run.trace,
        }

        snapshot = bytes(run.snapshot)

        def work(conn: sqlite3.Connection) -> int:
            try:
                cursor = conn.execute(_Q["create_run"], params)
            except sqlite3.IntegrityError:
                holder = conn.execute(_Q["unique_key_holder"], {"unique_key": key}).fetchone()
                if holder is None:
                    raise
                raise AlreadyRunningError(already_running(run, holder[0], holder[1])) from None
            run_id = cursor.lastrowid
            assert run_id is not None
            conn.execute(_Q["create_snapshot"], {"run_id": run_id, "snapshot": snapshot})
            return run_id

        return self._write(work)

    def commit(self, changes: Sequence[Append]) -> list[ConflictError | None]:
        prepared = [
            (change, [bytes(r) for r in change.records], opt_bytes(change.snapshot))
            for change in changes
        ]

        def work(conn: sqlite3.Connection) -> list[ConflictError | None]:
            return [_apply(conn, change, records, snap) for change, records, snap in prepared]

        return self._write(work)

    def fire(self, firings: Sequence[Firing], now: float) -> list[bool]:
        prepared = [(f.run_id, f.step, opt_bytes(f.record)) for f in firings]

        def work(conn: sqlite3.Connection) -> list[bool]:
            fired = []
            for run_id, step, record in prepared:
                dropped = conn.execute(_Q["drop_timer"], {"run_id": run_id, "step": step})
                if dropped.rowcount != 1:
                    fired.append(False)
                    continue
                if record is not None:
                    conn.execute(_Q["fire_append_record"], {"run_id": run_id, "record": record})
                conn.execute(
                    _Q["fire_wake_run"],
                    {"run_id": run_id, "appended": int(record is not None), "now": now},
                )
                fired.append(True)
            return fired

        return self._write(work)

    def claim(
        self, owner: str, now: float, lease: float, limit: int, skip: Collection[str] = ()
    ) -> list[RunRow]:
        if limit <= 0:
            self._require_writer()
            return []
        skip_json = _json(skip)

        def work(conn: sqlite3.Connection) -> list[RunRow]:
            params = {"owner": owner, "now": now, "skip": skip_json, "limit": limit}
            run_ids = _json(run_id for (run_id,) in conn.execute(_Q["claimable"], params))
            conn.execute(_Q["lease"], {"owner": owner, "expires": now + lease, "run_ids": run_ids})
            return [row_from(r) for r in conn.execute(_Q["runs_by_ids"], {"run_ids": run_ids})]

        return self._write(work)

    def renew(self, owner: str, now: float, lease: float) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(_Q["renew"], {"owner": owner, "expires": now + lease})

        self._write(work)

    def release(self, owner: str, run_ids: Collection[int] | None) -> None:
        ids = None if run_ids is None else _json(run_ids)

        def work(conn: sqlite3.Connection) -> None:
            if ids is None:
                conn.execute(_Q["release_all"], {"owner": owner})
            else:
                conn.execute(_Q["release"], {"owner": owner, "run_ids": ids})

        self._write(work)

    def lease_owners(self) -> set[str]:
        def work(conn: sqlite3.Connection) -> set[str]:
            return {owner for (owner,) in conn.execute(_Q["lease_owners"])}

        return self._read(work)

    # -- reads ----------------------------------------------------------------

    def due(self, now: float, limit: int) -> list[tuple[int, Timer]]:
        def work(conn: sqlite3.Connection) -> list[tuple[int, Timer]]:
            rows = conn.execute(_Q["due"], {"now": now, "limit": _limit(limit)})
            return [
                (run_id, Timer(step=step, kind=kind, due=due, attempt=attempt))
                for run_id, step, kind, due, attempt in rows
            ]

        return self._read(work)

    def data_version(self) -> int:
        # SQLite's own counter of commits by other connections, read on this
        # thread's connection: from the WAL index, no disk I/O.
        def work(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

        return self._read(work)

    def next_wake(self, owner: str) -> float | None:
        def work(conn: sqlite3.Connection) -> float | None:
            (timer,) = conn.execute(_Q["next_timer"]).fetchone()
            (lease,) = conn.execute(_Q["next_foreign_lease_expiry"], {"owner": owner}).fetchone()
            times: list[float] = [t for t in (timer, lease) if t is not None]
            return min(times, default=None)

        return self._read(work)

    def load(self, run_id: int) -> Stored:
        def work(conn: sqlite3.Connection) -> Stored:
            values = conn.execute(_Q["load_run"], {"run_id": run_id}).fetchone()
            if values is None:
                raise KeyError(run_id)
            snapshot, snapshot_seq = values[13], values[14]
            records = conn.execute(_Q["load_records"], {"run_id": run_id, "after": snapshot_seq})
            timers = conn.execute(_Q["load_timers"], {"run_id": run_id})
            attempts = conn.execute(_Q["load_attempts"], {"run_id": run_id})
            return Stored(
                row=row_from(values),
                snapshot=snapshot,
                snapshot_seq=snapshot_seq,
                records=[record for (record,) in records],
                timers=[
                    Timer(step=step, kind=kind, due=due, attempt=attempt)
                    for step, kind, due, attempt in timers
                ],
                attempts=[Attempt(*values) for values in attempts],
            )

        return self._read(work)

    def newest(self, id: str) -> RunRow | None:
        def work(conn: sqlite3.Connection) -> RunRow | None:
            values = conn.execute(_Q["newest"], {"id": id}).fetchone()
            return None if values is None else row_from(values)

        return self._read(work)

    def find(
        self,
        *,
        workflows: Collection[str] | None = None,
        statuses: Collection[str] | None = None,
        version: int | None = None,
        id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRow]:
        params = {
            "workflows": None if workflows is None else _json(workflows),
            "statuses": None if statuses is None else _json(statuses),
            "version": version,
            "id": id,
            "limit": _limit(limit),
        }
        # The most selective filter given leads, so that its index is used.
        if id is not None:
            query = _Q["find_by_id"]
        elif workflows is not None:
            query = _Q["find_by_workflow"]
        elif statuses is not None:
            query = _Q["find_by_status"]
        else:
            query = _Q["find_all"]

        def work(conn: sqlite3.Connection) -> list[RunRow]:
            return [row_from(values) for values in conn.execute(query, params)]

        return self._read(work)


def _apply(
    conn: sqlite3.Connection, change: Append, records: list[bytes], snapshot: bytes | None
) -> ConflictError | None:
    """Applies one change of a ``commit``, or returns why it conflicts."""
    state = conn.execute(_Q["run_state"], {"run_id": change.run_id}).fetchone()
    if state is None:
        return ConflictError(f"run {change.run_id} does not exist")
    seq, lease_owner, status, runnable = state
    if seq != change.expected_seq:
        return ConflictError(
            f"run {change.run_id} has {seq} journal records, "
            f"the change was built on {change.expected_seq}"
        )
    if change.owner is not None and lease_owner != change.owner:
        held = "no one" if lease_owner is None else repr(lease_owner)
        return ConflictError(f"run {change.run_id} is leased to {held}, not to {change.owner!r}")
    run_id = change.run_id
    conn.executemany(
        _Q["append_record"],
        [
            {"run_id": run_id, "seq": seq + i, "record": record}
            for i, record in enumerate(records, start=1)
        ],
    )
    seq += len(records)
    finished = change.finished
    runnable_now = int(change.runnable and not finished)
    if status == change.status and runnable == runnable_now and not (finished or change.release):
        conn.execute(
            _Q["advance_run"], {"run_id": run_id, "seq": seq, "updated_at": change.updated_at}
        )
    else:
        conn.execute(
            _Q["update_run"],
            {
                "run_id": run_id,
                "seq": seq,
                "status": change.status,
                "runnable": runnable_now,
                "updated_at": change.updated_at,
                "finished": int(finished),
                "release": int(finished or change.release),
            },
        )
    if snapshot is not None:
        conn.execute(_Q["set_snapshot"], {"run_id": run_id, "snapshot": snapshot, "seq": seq})
    # (Most changes have no timers or attempts: no statement runs for them.)
    if finished:
        conn.execute(_Q["drop_all_timers"], {"run_id": run_id})
    elif change.drop_timers or change.set_timers:
        conn.executemany(
            _Q["drop_timer"], [{"run_id": run_id, "step": step} for step in change.drop_timers]
        )
        conn.executemany(
            _Q["set_timer"],
            [timer_params(run_id, timer) for timer in change.set_timers],
        )
    if not change.attempts:
        return None
    conn.executemany(
        _Q["add_attempt"],
        [attempt_params(run_id, a) for a in change.attempts],
    )
    return None
