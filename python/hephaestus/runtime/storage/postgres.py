"""``PostgresStorage``: the storage protocol in a Postgres database, for
apps on many machines sharing one database (``pip install
'hephaestus-core[postgres]'``: psycopg 3 with its connection pool).

Its tables live in their own schema, ``hephaestus``, beside anything else
the database holds. The three rules of the protocol are the database's:

* uniqueness: a partial unique index over the unfinished runs' keys;
* single writer: a change is one ``UPDATE ... WHERE seq = expected AND
  lease_owner = owner``, which also locks the run's row until the
  transaction ends, so two writers of one run are serialized and the
  second finds the position moved;
* durability: a method returns after its transaction committed.

A write that may concern another app (a new run, a fired timer, a released
lease, a change from outside the lease holder, one that finishes a run or
moves its timers) sends ``NOTIFY hephaestus``; every storage keeps one
connection listening on that channel, and
:meth:`PostgresStorage.data_version` counts what it heard, so an idle app
notices work made on another machine at once, without querying. Claims use
``FOR UPDATE SKIP LOCKED``.

The schema version is in ``hephaestus.meta``; the numbered migrations in
``sql/postgres/`` bring a database up to date (``open()`` runs them under an
advisory lock, and so does ``hephaestus db migrate``). ``open()`` refuses,
without changing anything, a ``hephaestus`` schema that is not ours or one
written by a newer version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from typing import Any, Protocol, TypeVar

from hephaestus.errors import AlreadyRunningError

from .base import (
    Append,
    Attempt,
    ConflictError,
    Firing,
    NewRun,
    RunRow,
    StepJob,
    StepOutcome,
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

if find_spec("psycopg") is None or find_spec("psycopg_pool") is None:  # pragma: no cover
    raise ImportError(
        "PostgresStorage needs psycopg 3 and psycopg_pool: pip install 'hephaestus-core[postgres]'"
    )

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout, TooManyRequests

__all__ = ["SCHEMA_VERSION", "JobQueue", "PostgresStorage"]

_T = TypeVar("_T")
_Q, _MIGRATIONS = sql_files("postgres")
#: The schema version this code writes and reads.
SCHEMA_VERSION = len(_MIGRATIONS)
#: The channel every commit notifies.
CHANNEL = "hephaestus"
_NOTIFY = "SELECT pg_notify(%s, '')"
#: A notification about one run: ``r:<run_id>`` (a queued step's outcome was
#: recorded) or ``c:<run_id>`` (a change from outside its lease holder).
_NOTIFY_RUN = "SELECT pg_notify(%s, %s)"
#: The advisory lock (any fixed number) that serializes schema changes.
_SCHEMA_LOCK = 0x6865_7068  # "heph"
_MARKER = "hephaestus"
#: Seconds a pool keeps trying, in the background, to replace a connection.
_RECONNECT = 2.0
_FINISHED = ("completed", "failed")


class JobQueue(Protocol):
    """A task queue in the same database that runs steps as jobs
    (``executor="procrastinate"``): the storage calls it inside its own
    transactions, so a job exists exactly when the change that made its
    step runnable is committed."""

    def install(self, conn: psycopg.Connection[Any]) -> bool:
        """Creates the queue's schema on ``conn`` unless it exists; whether
        it did."""

    def defer(
        self, conn: psycopg.Connection[Any], units: Sequence[tuple[int, str, int]]
    ) -> list[int]:
        """Enqueues a job per ``(run_id, unit key, attempt)`` on ``conn``;
        returns their job ids, in order."""

    def abort(self, conn: psycopg.Connection[Any], job_ids: Sequence[int]) -> None:
        """On ``conn``: drops the jobs not started yet and asks the running
        ones to stop."""


class PostgresStorage:
    """Runs in a Postgres database (see the module docs).

    Args:
        url: A libpq connection string or URL, ``postgresql://user@host/db``.
        max_connections: The most connections the pool opens (one more
            listens for notifications).
        connect_timeout: Seconds to wait for a connection before a call
            fails with :class:`StorageError` (the runtime retries).
        migrate: Whether ``open()`` brings an older schema up to date. With
            ``False`` it refuses one, and only :meth:`migrate` (``hephaestus
            db migrate``) changes the schema: for fleets whose deploys
            migrate in one step of their own.
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 10,
        connect_timeout: float = 30.0,
        migrate: bool = True,
    ):
        if not isinstance(url, str) or not url:
            raise TypeError(f"url must be a non-empty str, got {url!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(f"max_connections must be an int, got {max_connections!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)):
            raise TypeError(f"connect_timeout must be a number of seconds, got {connect_timeout!r}")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout!r}")
        self.url = url
        self._max = max_connections
        self._timeout = connect_timeout
        self._auto_migrate = migrate
        self._pool: ConnectionPool[Any] | None = None
        self._state = "new"
        self._lock = threading.Lock()
        #: Notifications heard (and this storage's own writes).
        self._version = 0
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: JobQueue | None = None
        #: Runs that notifications named since `touched` was last called:
        #: queued steps' outcomes, and changes from outside the lease holder;
        #: and whether notifications may have been missed.
        self._heard_outcomes: set[int] = set()
        self._heard_changes: set[int] = set()
        self._heard_all = False
        self._touching = False
        #: Called (on the listening thread) for every notification heard,
        #: and after the listening connection was dropped and is back.
        self._listeners: list[Callable[[str], None]] = []
        self._reconnected: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"PostgresStorage({_redacted(self.url)!r})"

    # -- lifetime -------------------------------------------------------------

    def open(self) -> None:
        self._open(migrate=self._auto_migrate)

    def migrate(self) -> tuple[int, int]:
        """Opens the storage if needed and brings its schema up to date;
        returns the schema versions before and after."""
        return self._open(migrate=True)

    def _open(self, *, migrate: bool) -> tuple[int, int]:
        with self._lock:
            if self._state == "closed":
                raise StorageError("the storage is closed")
            if self._state == "open":
                return self._migrate(migrate) if migrate else (SCHEMA_VERSION, SCHEMA_VERSION)
            try:
                # A wrong URL or a server that is down fails here, at once
                # and with libpq's reason, rather than after the pool spent
                # `connect_timeout` retrying it.
                psycopg.connect(self.url, connect_timeout=max(1, int(self._timeout))).close()
            except psycopg.Error as error:
                raise StorageError(f"cannot connect to {_storage_error(error, self.url)}") from None
            pool: ConnectionPool[Any] = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self._max,
                timeout=self._timeout,
                open=False,
                # Single statements need no transaction; writes open one. (A
                # connection broken by a restart fails its call, which the
                # runtime retries, and the pool replaces it.)
                kwargs={"autocommit": True},
                name="hephaestus",
                # After a server restart the pool replaces dropped
                # connections with a backoff (1, 2, 4 ... 32 s) that can keep
                # every call waiting for a minute: instead, an attempt gives
                # up after a short while and a fresh one starts at once.
                reconnect_timeout=_RECONNECT,
                reconnect_failed=ConnectionPool.check,
            )
            try:
                pool.open(wait=True, timeout=self._timeout)
            except Exception as error:
                pool.close()
                raise StorageError(
                    f"cannot connect to Postgres at {_redacted(self.url)}: {error}"
                ) from None
            self._pool = pool
            try:
                versions = self._migrate(migrate)
            except BaseException:
                pool.close()
                self._pool = None
                raise
            self._state = "open"
            self._listener = threading.Thread(
                target=self._listen, name="hephaestus-listen", daemon=True
            )
            self._listener.start()
            return versions

    def close(self) -> None:
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
            self._stop.set()
            pool, self._pool = self._pool, None
        # (The listener sees the stop within a second and closes its connection.)
        if pool is not None:
            pool.close()

    def _migrate(self, apply: bool) -> tuple[int, int]:
        """Creates the schema, or checks it and (with ``apply``) migrates it."""

        def work(conn: psycopg.Connection[Any]) -> tuple[int, int]:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'hephaestus'"
                )
            }
            if tables and "meta" not in tables:
                raise StorageError(
                    f"the database at {_redacted(self.url)} has a 'hephaestus' schema that "
                    "hephaestus did not make; it is left unchanged"
                )
            if not tables:
                conn.execute("CREATE SCHEMA IF NOT EXISTS hephaestus")
                conn.execute(
                    "CREATE TABLE hephaestus.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                )
                conn.execute(
                    "INSERT INTO hephaestus.meta VALUES ('schema', %s), ('version', '0')",
                    (_MARKER,),
                )
            meta = dict(conn.execute("SELECT key, value FROM hephaestus.meta").fetchall())
            if meta.get("schema") != _MARKER or not str(meta.get("version", "")).isdigit():
                raise StorageError(
                    f"the 'hephaestus' schema at {_redacted(self.url)} is not a hephaestus "
                    "storage; it is left unchanged"
                )
            found = int(meta["version"])
            if found > SCHEMA_VERSION:
                raise StorageError(
                    f"the database at {_redacted(self.url)} has schema version {found}, newer "
                    f"than this hephaestus knows ({SCHEMA_VERSION}); upgrade hephaestus-core"
                )
            if found and found < SCHEMA_VERSION and not apply:
                raise StorageError(
                    f"the database at {_redacted(self.url)} has schema version {found}; this "
                    f"hephaestus needs {SCHEMA_VERSION}: run `hephaestus db migrate`"
                )
            for number, _, script in _MIGRATIONS[found:]:
                conn.execute(script)
                conn.execute(
                    "UPDATE hephaestus.meta SET value = %s WHERE key = 'version'", (str(number),)
                )
            return found, SCHEMA_VERSION

        return self._run(work)

    def _check_open(self) -> ConnectionPool[Any]:
        pool = self._pool
        if self._state != "open" and not (self._state == "new" and pool is not None):
            raise StorageError(f"the storage is {self._state}, not open")
        assert pool is not None
        return pool

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        pool = self._check_open()
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.Error as error:
            raise _storage_error(error, self.url) from error
        except (PoolTimeout, TooManyRequests) as error:
            raise StorageError(
                f"no connection to Postgres at {_redacted(self.url)}: {error}"
            ) from error

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T], *, notify: bool = False) -> _T:
        """Runs ``work`` in one transaction (committed when it returns)."""
        with self._connection() as conn:
            with conn.transaction():
                result = work(conn)
                if notify:
                    conn.execute(_NOTIFY, (CHANNEL,))
            if notify:
                self._version += 1
            return result

    def _read(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Runs ``work`` in a read-only transaction that sees one snapshot."""

        def read() -> _T:
            with self._connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return work(conn)

        return self._again_if_dropped(read)

    def _query(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one statement (which sees one snapshot on its own)."""

        def read() -> list[tuple[Any, ...]]:
            with self._connection() as conn:
                return conn.execute(query, params).fetchall()

        return self._again_if_dropped(read)

    def _again_if_dropped(self, read: Callable[[], _T]) -> _T:
        """Runs ``read`` again while its connection turns out dropped (the
        server restarted since the pool opened it; the pool discards it):
        a read is safe to repeat, and a caller should not see an error for a
        server that is back. At most once per pooled connection."""
        for _ in range(self._max):
            try:
                return read()
            except StorageError as error:
                if not isinstance(error.__cause__, psycopg.OperationalError):
                    raise
        return read()

    # -- listening --------------------------------------------------------------

    def _listen(self) -> None:
        """Counts the notifications of every storage's commits; reconnects
        with a growing pause when the connection drops."""
        pause = 0.1
        dropped = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.url, autocommit=True, connect_timeout=max(1, int(self._timeout))
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Anything may have changed while not listening.
                    self._version += 1
                    self._heard_all = True
                    pause = 0.1
                    if dropped:
                        dropped = False
                        for callback in self._reconnected:
                            callback()
                    while not self._stop.is_set():
                        # (Wakes at least every second to see whether to stop.)
                        for notice in conn.notifies(timeout=1.0):
                            self._version += 1
                            if notice.payload:
                                self._heard(notice.payload)
                            for listener in self._listeners:
                                listener(notice.payload)
            except psycopg.Error:
                if self._stop.is_set():
                    return
                dropped = True
            self._stop.wait(pause)
            pause = min(pause * 2, 5.0)

    def data_version(self) -> int:
        self._check_open()
        return self._version

    def _heard(self, payload: str) -> None:
        kind, _, run = payload.partition(":")
        # (Kept only for a caller of `touched`: a client would gather every
        # run id it hears of, forever.)
        if run.isdigit() and self._touching:
            with self._lock:
                (self._heard_outcomes if kind == "r" else self._heard_changes).add(int(run))

    def touched(self) -> tuple[set[int], set[int], bool]:
        """The runs notifications named since the last call: those with a
        queued step's outcome recorded, those changed from outside their
        lease holder; and whether some may have gone unheard (the listening
        connection dropped), so that everything should be looked at. Runs
        are gathered from the first call on."""
        with self._lock:
            self._touching = True
            heard = (self._heard_outcomes, self._heard_changes, self._heard_all)
            self._heard_outcomes, self._heard_changes, self._heard_all = set(), set(), False
        return heard

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
            "runnable": not finished,
            "created_at": run.created_at,
            "trace": run.trace,
        }
        snapshot = bytes(run.snapshot)

        def work(conn: psycopg.Connection[Any]) -> int:
            try:
                with conn.transaction():
                    row = conn.execute(_Q["create_run"], params).fetchone()
            except pg_errors.UniqueViolation:
                holder = conn.execute(_Q["unique_key_holder"], {"unique_key": key}).fetchone()
                if holder is None:
                    raise
                raise AlreadyRunningError(already_running(run, holder[0], holder[1])) from None
            assert row is not None
            run_id: int = row[0]
            conn.execute(_Q["create_snapshot"], {"run_id": run_id, "snapshot": snapshot})
            return run_id

        return self._run(work, notify=True)

    def commit(self, changes: Sequence[Append]) -> list[ConflictError | None]:
        prepared = [
            (change, [bytes(r) for r in change.records], opt_bytes(change.snapshot))
            for change in changes
        ]
        if not prepared:
            return []

        def work(conn: psycopg.Connection[Any]) -> list[ConflictError | None]:
            # Each change's position and lease are checked (and its row
            # locked) first; then every write of the changes that may apply,
            # and the notification, go to the server together. (A conflict
            # applies nothing and raises nothing; any error fails the whole
            # call, which the runtime retries.)
            conflicts = [
                _claim_position(conn, change, len(records)) for change, records, _ in prepared
            ]
            applied = [
                (change, records, snap)
                for (change, records, snap), conflict in zip(prepared, conflicts, strict=True)
                if conflict is None
            ]
            with conn.pipeline():
                for change, records, snap in applied:
                    _write(conn, change, records, snap)
                    if change.owner is None:
                        conn.execute(_NOTIFY_RUN, (CHANNEL, f"c:{change.run_id}"))
                if any(_concerns_others(change) for change in changes):
                    conn.execute(_NOTIFY, (CHANNEL,))
            self._queue_writes(conn, [change for change, _, _ in applied])
            return conflicts

        result = self._run(work)
        self._version += 1
        return result

    # -- steps run as queue jobs -------------------------------------------------

    def attach_queue(self, queue: JobQueue) -> None:
        """Lets changes hand runs of steps to ``queue`` (``Append.dispatch``)
        in their own transactions; creates the queue's schema if need be."""
        self._run(queue.install)
        self._queue = queue

    def subscribe(
        self,
        listener: Callable[[str], None] | None = None,
        *,
        reconnected: Callable[[], None] | None = None,
    ) -> None:
        """Calls ``listener`` with the payload (on the listening thread; it
        must be quick) whenever a notification is heard: ``""``, or
        ``"r:<run_id>"`` / ``"c:<run_id>"`` (see `touched`); and
        ``reconnected`` when the connection to the server was lost and is
        back (a restart)."""
        if listener is not None:
            self._listeners.append(listener)
        if reconnected is not None:
            self._reconnected.append(reconnected)

    def _queue_writes(self, conn: psycopg.Connection[Any], changes: Sequence[Append]) -> None:
        """The step jobs of committed changes: a finished run's rows go (its
        jobs are aborted); applied outcomes' rows go; dispatched runs get a
        job and a row, in the change's transaction."""
        queue = self._queue
        dispatch: list[tuple[int, str, int]] = []
        for change in changes:
            if change.finished:
                jobs = conn.execute(_Q["drop_step_jobs"], {"run_id": change.run_id}).fetchall()
                if jobs and queue is not None:
                    queue.abort(conn, [job_id for (job_id,) in jobs])
                continue
            if change.settle:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        _Q["settle_step"],
                        [{"run_id": change.run_id, "unit": unit} for unit in change.settle],
                    )
            dispatch.extend((change.run_id, unit, attempt) for unit, attempt in change.dispatch)
        if not dispatch:
            return
        if queue is None:
            raise RuntimeError("a change dispatches steps to a queue, but none is attached")
        job_ids = queue.defer(conn, dispatch)
        with conn.cursor() as cursor:
            cursor.executemany(
                _Q["dispatch_step"],
                [
                    {"run_id": run_id, "unit": unit, "attempt": attempt, "job_id": job_id}
                    for (run_id, unit, attempt), job_id in zip(dispatch, job_ids, strict=True)
                ],
            )

    def claim_step(
        self,
        run_id: int,
        unit: str,
        attempt: int,
        job_id: int,
        holder: str,
        now: float,
        until: float,
    ) -> bool:
        """Takes a queued run of a step over for an execution of its job
        (``holder``) until ``until``; ``False`` when there is nothing to run
        (its outcome was recorded, it was withdrawn, the run finished, or a
        newer job replaced this one)."""
        params = {
            "run_id": run_id,
            "unit": unit,
            "attempt": attempt,
            "job_id": job_id,
            "holder": holder,
            "until": until,
            "now": now,
        }
        return bool(self._query_write(_Q["claim_step"], params))

    def renew_steps(self, holders: Collection[str], until: float) -> None:
        """Extends the hold of the executions ``holders`` on their runs."""
        if holders:
            self._query_write(_Q["renew_steps"], {"holders": list(holders), "until": until})

    def record_step(self, run_id: int, holder: str, outcome: StepOutcome) -> bool:
        """Records how a queued run of a step ended, only while ``holder``
        still holds it and only once; notifies the run's driver. ``False``:
        not recorded (another execution took it over, or it went away)."""
        params = {
            "run_id": run_id,
            "unit": outcome.unit,
            "attempt": outcome.attempt,
            "holder": holder,
            "outcome": outcome.outcome,
            "record": opt_bytes(outcome.record),
            "error_type": outcome.error_type,
            "error_message": outcome.error_message,
            "traceback": outcome.traceback,
            "finished": outcome.finished,
        }

        def work(conn: psycopg.Connection[Any]) -> bool:
            recorded = conn.execute(_Q["record_step"], params).fetchone() is not None
            if recorded:
                conn.execute(_NOTIFY_RUN, (CHANNEL, f"r:{run_id}"))
            return recorded

        return self._run(work)

    def step_outcomes(self, run_ids: Collection[int]) -> list[StepOutcome]:
        """The recorded, not yet applied outcomes of queued steps of ``run_ids``."""
        if not run_ids:
            return []
        rows = self._query(_Q["step_outcomes"], {"run_ids": list(run_ids)})
        return [
            StepOutcome(
                run_id=run_id,
                unit=unit,
                attempt=attempt,
                outcome=outcome,
                record=opt_bytes(record),
                error_type=error_type,
                error_message=error_message,
                traceback=traceback,
                started=started,
                finished=finished,
            )
            for (
                run_id,
                unit,
                attempt,
                outcome,
                record,
                error_type,
                error_message,
                traceback,
                started,
                finished,
            ) in rows
        ]

    def load_instance(self, run_id: int) -> Stored:
        """A run's row, snapshot and journal tail in one statement, without
        its timers, attempts or step jobs (what a queued step needs);
        ``KeyError`` for an unknown run."""
        rows = self._query(_Q["load_instance"], {"run_id": run_id})
        if not rows:
            raise KeyError(run_id)
        values = rows[0]
        return Stored(
            row=row_from(values),
            snapshot=bytes(values[13]),
            snapshot_seq=values[14],
            records=[bytes(record) for record in values[15]],
            timers=[],
            attempts=[],
        )

    def stalled_steps(self, owner: str, now: float) -> list[tuple[int, str]]:
        """``(run_id, unit key)`` of queued steps of runs ``owner`` drives
        whose execution stopped renewing its hold before ``now``."""
        return [
            (run_id, unit)
            for run_id, unit in self._query(_Q["stalled_steps"], {"owner": owner, "now": now})
        ]

    def _query_write(self, query: str, params: dict[str, Any]) -> int:
        """Runs one writing statement; the number of rows it changed."""
        with self._connection() as conn:
            return conn.execute(query, params).rowcount

    def fire(self, firings: Sequence[Firing], now: float) -> list[bool]:
        prepared = [(f.run_id, f.step, opt_bytes(f.record)) for f in firings]

        def work(conn: psycopg.Connection[Any]) -> list[bool]:
            fired = []
            for run_id, step, record in prepared:
                dropped = conn.execute(_Q["drop_timer"], {"run_id": run_id, "step": step})
                if dropped.rowcount != 1:
                    fired.append(False)
                    continue
                appended = int(record is not None)
                row = conn.execute(
                    _Q["fire_wake_run"], {"run_id": run_id, "appended": appended, "now": now}
                ).fetchone()
                if record is not None and row is not None:
                    conn.execute(
                        _Q["append_record"], {"run_id": run_id, "seq": row[0], "record": record}
                    )
                fired.append(True)
            return fired

        return self._run(work, notify=True)

    def claim(
        self, owner: str, now: float, lease: float, limit: int, skip: Collection[str] = ()
    ) -> list[RunRow]:
        if limit <= 0:
            self._check_open()
            return []
        params = {
            "owner": owner,
            "now": now,
            "until": now + lease,
            "skip": list(skip),
            "limit": limit,
        }

        def work(conn: psycopg.Connection[Any]) -> list[RunRow]:
            rows = [row_from(values) for values in conn.execute(_Q["claim"], params)]
            return sorted(rows, key=lambda row: row.run_id)

        return self._run(work)

    def renew(self, owner: str, now: float, lease: float) -> None:
        self._run(lambda conn: conn.execute(_Q["renew"], {"owner": owner, "until": now + lease}))

    def release(self, owner: str, run_ids: Collection[int] | None) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            if run_ids is None:
                conn.execute(_Q["release_all"], {"owner": owner})
            else:
                conn.execute(_Q["release_some"], {"owner": owner, "run_ids": list(run_ids)})

        self._run(work, notify=True)

    def lease_owners(self) -> set[str]:
        return {owner for (owner,) in self._query(_Q["lease_owners"], {})}

    # -- reads ----------------------------------------------------------------

    def due(self, now: float, limit: int) -> list[tuple[int, Timer]]:
        if limit <= 0:
            self._check_open()
            return []
        rows = self._query(_Q["due"], {"now": now, "limit": limit})
        return [
            (run_id, Timer(step=step, kind=kind, due=due, attempt=attempt))
            for run_id, step, kind, due, attempt in rows
        ]

    def next_wake(self, owner: str) -> float | None:
        ((timer, lease),) = self._query(_Q["next_wake"], {"owner": owner})
        times: list[float] = [t for t in (timer, lease) if t is not None]
        return min(times, default=None)

    def load(self, run_id: int) -> Stored:
        def work(conn: psycopg.Connection[Any]) -> Stored:
            values = conn.execute(_Q["load_run"], {"run_id": run_id}).fetchone()
            if values is None:
                raise KeyError(run_id)
            snapshot, snapshot_seq = values[13], values[14]
            records = conn.execute(_Q["load_records"], {"run_id": run_id, "after": snapshot_seq})
            timers = conn.execute(_Q["load_timers"], {"run_id": run_id})
            attempts = conn.execute(_Q["load_attempts"], {"run_id": run_id})
            jobs = conn.execute(_Q["load_step_jobs"], {"run_id": run_id})
            return Stored(
                row=row_from(values),
                snapshot=bytes(snapshot),
                snapshot_seq=snapshot_seq,
                records=[bytes(record) for (record,) in records],
                timers=[Timer(*values) for values in timers],
                attempts=[Attempt(*values) for values in attempts],
                jobs=[StepJob(*values) for values in jobs],
            )

        return self._read(work)

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
        if limit is not None and limit <= 0:
            self._check_open()
            return []
        # Only the filters given, so that the planner sees which index serves.
        query = _Q["find"]
        params: dict[str, Any] = {
            "id": id,
            "workflows": None if workflows is None else list(workflows),
            "statuses": None if statuses is None else list(statuses),
            "version": version,
        }
        for column, test in (
            ("id", "id = %(id)s"),
            ("workflows", "workflow = ANY(%(workflows)s)"),
            ("statuses", "status = ANY(%(statuses)s)"),
            ("version", "version = %(version)s"),
        ):
            if params[column] is not None:
                query += f"\n  AND {test}"
        query += "\nORDER BY run_id DESC"
        if limit is not None:
            query += "\nLIMIT %(limit)s"
            params["limit"] = limit
        return [row_from(values) for values in self._query(query, params)]


def _concerns_others(change: Append) -> bool:
    """Whether another app may have to act on ``change`` (so the commit
    notifies): it comes from outside the run's lease holder (a cancel, a
    resume), gives the run up, finishes it, or moves its timers. A lease
    holder's plain progress concerns no one else, and a notification costs
    every commit that sends one a share of a global lock."""
    return (
        change.owner is None
        or change.release
        or change.finished
        or bool(change.set_timers)
        or bool(change.drop_timers)
    )


def _claim_position(
    conn: psycopg.Connection[Any], change: Append, count: int
) -> ConflictError | None:
    """Moves the run's row to where ``change`` (of ``count`` records) leads,
    locking it, or returns why the change conflicts."""
    run_id = change.run_id
    finished = change.finished
    updated = conn.execute(
        _Q["append_run"],
        {
            "run_id": run_id,
            "expected_seq": change.expected_seq,
            "owner": change.owner,
            "count": count,
            "status": change.status,
            "runnable": change.runnable and not finished,
            "updated_at": change.updated_at,
            "finished": finished,
            "release": finished or change.release,
        },
    ).fetchone()
    if updated is None:
        state = conn.execute(_Q["run_state"], {"run_id": run_id}).fetchone()
        if state is None:
            return ConflictError(f"run {run_id} does not exist")
        seq, lease_owner = state
        if seq != change.expected_seq:
            return ConflictError(
                f"run {run_id} has {seq} journal records, "
                f"the change was built on {change.expected_seq}"
            )
        held = "no one" if lease_owner is None else repr(lease_owner)
        return ConflictError(f"run {run_id} is leased to {held}, not to {change.owner!r}")
    return None


def _write(
    conn: psycopg.Connection[Any], change: Append, records: list[bytes], snapshot: bytes | None
) -> None:
    """The writes of a change whose position and lease were checked."""
    run_id, finished, seq = change.run_id, change.finished, change.expected_seq
    if records:
        with conn.cursor() as cursor:
            cursor.executemany(
                _Q["append_record"],
                [
                    {"run_id": run_id, "seq": seq + i, "record": record}
                    for i, record in enumerate(records, start=1)
                ],
            )
    seq += len(records)
    if snapshot is not None:
        conn.execute(_Q["replace_snapshot"], {"run_id": run_id, "snapshot": snapshot, "seq": seq})
    # (Most changes have no timers or attempts: no statement runs for them.)
    with conn.cursor() as cursor:
        if finished:
            cursor.execute(_Q["drop_all_timers"], {"run_id": run_id})
        else:
            if change.drop_timers:
                cursor.executemany(
                    _Q["drop_timer"], [{"run_id": run_id, "step": s} for s in change.drop_timers]
                )
            if change.set_timers:
                cursor.executemany(
                    _Q["set_timer"],
                    [timer_params(run_id, timer) for timer in change.set_timers],
                )
        if change.attempts:
            cursor.executemany(
                _Q["add_attempt"],
                [attempt_params(run_id, a) for a in change.attempts],
            )
    return None


def _storage_error(error: psycopg.Error, url: str) -> StorageError:
    """A psycopg error as a :class:`StorageError` that says what failed."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return StorageError(f"Postgres at {_redacted(url)}: {message}")


def _redacted(url: str) -> str:
    """``url`` without its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "<invalid connection string>"
    if "password" in info:
        info["password"] = "***"
    host = info.get("host", "localhost")
    port = info.get("port", "5432")
    return f"postgresql://{info.get('user', '')}@{host}:{port}/{info.get('dbname', '')}"
