"""The app's scheduler: its event loop, in a thread of its own, and
everything that runs there (see docs/runtime.md).

It claims runnable runs (a lease per run), runs their steps through the
executor, applies each outcome through the engine, commits (changes made in
the same turn of the loop commit together: group commit), and only then
starts what the outcome made runnable. It sleeps until the next timer or
lease, or until something wakes it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hephaestus import _core
from hephaestus._core import Instance, WorkflowGraph, step_key
from hephaestus.control import ForEach, Repeat
from hephaestus.engine import graph_of, version_class
from hephaestus.errors import SerializationError
from hephaestus.runtime import events
from hephaestus.runtime.clock import as_datetime
from hephaestus.runtime.execution import Execution
from hephaestus.runtime.executor import Attempted, Executor, LocalExecutor, StepCall
from hephaestus.runtime.storage.base import (
    Append,
    Attempt,
    ConflictError,
    Firing,
    RunRow,
    StepOutcome,
    StorageError,
    Stored,
    Timer,
)
from hephaestus.steps import Wait, wait_duration
from hephaestus.telemetry import otel

if TYPE_CHECKING:
    from hephaestus.runtime.app import Hephaestus

log = logging.getLogger("hephaestus.runtime")

T = TypeVar("T")

_FINISHED = ("completed", "failed")
#: Snapshots are rewritten once the journal since the last one is this big
#: (and as big as the snapshot), so loading replays a bounded tail while
#: writing stays proportional to what changed.
_SNAPSHOT_MIN_BYTES = 16 * 1024

#: Seconds between an idle app's glances at the storage's data version (one
#: cheap read): how soon it notices work another process made.
_GLANCE = 0.5
#: While another process on this host holds leases, how often (seconds) an
#: app checks whether it died, to take its runs over without waiting out
#: their leases.
_ORPHAN_CHECK = 1.0
#: How many runs an app that hands steps to a task queue drives at once:
#: driving a run whose steps run elsewhere costs only its commits.
_QUEUE_RUNS = 512
#: Such an app wakes for news of other apps' work at most this often (seconds).
_COALESCE = 0.05
#: How many runs such an app loads in one round.
_QUEUE_BATCH = 64


# -- the owner of leases ---------------------------------------------------------------


def _process_stat(pid: int) -> tuple[str, str]:
    """The state and start time of process ``pid`` (Linux): the start time
    tells a reused pid, the state a zombie; ``("?", "?")`` when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
            return fields[0], fields[19]
    except (OSError, IndexError):
        return "?", "?"


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` (Linux), to tell a reused pid."""
    return _process_stat(pid)[1]


def _owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}:{secrets.token_hex(4)}"


def _orphaned(owner: str) -> bool:
    """Whether ``owner`` was a process on this host that no longer runs."""
    try:
        host, pid_text, started, _ = owner.rsplit(":", 3)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    # A killed process that its parent has not reaped yet is a zombie: dead.
    state, start = _process_stat(pid)
    return state in ("Z", "X") or (started != "?" and start != started)


# -- one run this app drives -------------------------------------------------------------


#: A run to start: a step, and which run of a ForEach (the item's index) or
#: Repeat (the repetition) step it is.
Unit = tuple[type, int | None]

#: The timer kinds that hold a run back until they fire.
_DELAYS = ("retry", "repeat")

#: The `error` field that names a failed run, by node.
_ITERATION_FIELD = {"ForEach": "index", "Repeat": "iteration"}


def _unit_key(step: type, iteration: int | None) -> str:
    """A run's key in attempts, timers and idempotency keys: the step key,
    with ``#iteration`` for a run of a ForEach or Repeat step."""
    key = step_key(step)
    return key if iteration is None else f"{key}#{iteration}"


@dataclasses.dataclass(eq=False)
class _Live:
    """A run this app holds the lease of, with its driver in memory."""

    row: RunRow
    workflow: type
    graph: WorkflowGraph
    #: The ForEach and Repeat nodes of the graph, by step.
    nodes: dict[type, ForEach | Repeat]
    #: The graph's steps by step key.
    keys: dict[str, type]
    driver: _core.Run
    #: The journal records committed so far.
    seq: int
    snapshot_bytes: int
    journal_bytes: int = 0
    #: Failed attempts so far, by unit key (see `_unit_key`).
    attempts: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Runs waiting for a retry's backoff or a Repeat's interval, by unit
    #: key: when they are due.
    backoff: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Runs going on now.
    running: dict[Unit, asyncio.Task[None]] = dataclasses.field(default_factory=dict)
    #: Runs out on the task queue (with a queue executor): which attempt.
    remote: dict[Unit, int] = dataclasses.field(default_factory=dict)
    #: Unit keys of queued runs whose outcomes are pending: their rows go
    #: with the commit that applies them.
    settle: list[str] = dataclasses.field(default_factory=list)
    #: When each run going on now started: the clock's time (for
    #: `explain`) and ``time.monotonic_ns()`` (for telemetry's durations).
    started: dict[Unit, tuple[float, int]] = dataclasses.field(default_factory=dict)
    #: How long each finished run took (ns), until its outcome is applied.
    durations: dict[Unit, int] = dataclasses.field(default_factory=dict)
    #: Commit rounds so far in this process (``engine.advance`` events).
    advances: int = 0
    #: Outcomes waiting to be applied and committed, in order.
    pending: list[tuple[Unit, Attempted]] = dataclasses.field(default_factory=list)
    #: Runs whose attempt ended and whose outcome is not committed yet: they
    #: must not start again meanwhile (the instance still shows them active).
    settling: set[Unit] = dataclasses.field(default_factory=set)
    committing: bool = False
    #: Another writer changed the run: nothing more is applied to this copy;
    #: a reload takes over its running steps and pending outcomes.
    stale: bool = False
    #: Stored timers that hold nothing back any more (of steps a replayed
    #: record withdrew or resumed): the first commit after loading drops them.
    outdated: list[str] = dataclasses.field(default_factory=list)
    #: Set while no commit is in progress.
    idle: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def run_id(self) -> int:
        return self.row.run_id


# -- the scheduler -----------------------------------------------------------------------------


class _Scheduler:
    """The app's event loop and everything that runs on it."""

    def __init__(self, app: Hephaestus) -> None:
        self.app = app
        self.storage = app._storage
        self.clock = app._clock
        self.owner = app._owner
        self.lease = app._lease
        self.executor: Executor = LocalExecutor(app._concurrency)
        #: Steps go to a task queue (the app's ``_queue``): this app drives
        #: runs and applies the outcomes queue workers record.
        self.queued_steps = app._queue is not None
        #: Runs whose queued steps' outcomes to look for at the next round.
        self.look: set[int] = set()
        self._wake_pending = False
        #: When (``time.monotonic()``) to look at every queued step next.
        self._sweep_due = 0.0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._thread_main, name="hephaestus-scheduler", daemon=True
        )
        self.live: dict[int, _Live] = {}
        #: The OpenTelemetry span of each run this app drives (with OTel).
        self.traces: dict[int, otel.Traced] = {}
        #: Changes waiting for the next group commit, with their waiters.
        self.batch: list[tuple[Append, asyncio.Future[ConflictError | None]]] = []
        self.slots = app._concurrency
        #: Runs waiting for a free slot, in order, with a set for membership
        #: (a ForEach may queue thousands at once).
        self.ready: collections.deque[tuple[int, Unit]] = collections.deque()
        self.queued: set[tuple[int, Unit]] = set()
        self.running = 0
        self.stopping = False
        self.skip: set[str] = set()
        self.skip_logged: set[str] = set()
        self._wake_event: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._renewed_at = -math.inf
        #: When (``time.monotonic()``) to look for dead processes' leases
        #: next, while another process on this host holds some (else never).
        self._orphans_due: float | None = None
        self.grace = 5.0
        #: Backing off after a failed write (real seconds).
        self.pause = 0.0
        self.paused_until = 0.0

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        subscribe = getattr(self.storage, "subscribe", None)
        if self.queued_steps and subscribe is not None:
            subscribe(self._heard)
        self.thread.start()
        self._started.wait()
        self.clock.subscribe(self._clock_moved)
        events.runner_init(self.owner, self.storage)

    def _thread_main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._wake_event = asyncio.Event()
        self.executor.start(self.loop)
        self._main = self.loop.create_task(self._run())
        try:
            self.loop.run_until_complete(self._main)
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def wake(self) -> None:
        """Wakes the scheduler from any thread."""
        event = self._wake_event
        if event is None or self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self.loop.call_soon_threadsafe(event.set)

    def _heard(self, payload: str) -> None:
        """A notification (on the storage's listening thread): an outcome
        recorded for, or a change from outside to, a run this app drives
        wakes the loop at once; other news (a new run, a fired timer, a
        released lease) wakes it within ``_COALESCE`` seconds, once however
        much arrived meanwhile: a round per notification would cost every
        app several queries per step of every other app."""
        _, _, run = payload.partition(":")
        if run.isdigit() and int(run) in self.live:
            self.wake()
        elif not self._wake_pending and not self.loop.is_closed():
            self._wake_pending = True
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self._wake_soon)

    def _wake_soon(self) -> None:
        def wake() -> None:
            self._wake_pending = False
            if self._wake_event is not None:
                self._wake_event.set()

        self.loop.call_later(_COALESCE, wake)

    def _clock_moved(self) -> None:
        """The clock jumped (a virtual clock moved): fire what fell due before
        returning, so that the caller sees those timers fired."""
        if (
            threading.current_thread() is self.thread
            or self.stopping
            or self.loop.is_closed()
            or not self.thread.is_alive()
        ):
            self.wake()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._fire_all(), self.loop).result(timeout=60)
        except Exception:
            log.exception("cannot fire the timers that fell due")
        self.wake()

    async def _fire_all(self) -> None:
        while await self._fire(self.clock.now()):
            pass

    def changed(self, run_id: int) -> None:
        """Tells the scheduler another writer changed ``run_id`` (from any
        thread): a run it drives is reloaded, one it does not is claimed."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self.loop.call_soon_threadsafe(self._changed, run_id)

    def _changed(self, run_id: int) -> None:
        if run_id in self.live:
            self.loop.create_task(self.refresh(run_id))
        if self._wake_event is not None:
            self._wake_event.set()

    def stop(self, grace: float) -> None:
        """Stops the loop: running steps get ``grace`` seconds to finish (their
        outcomes are committed), the rest are abandoned for the next app."""
        if self.thread.is_alive():
            self.grace = grace
            self.stopping = True
            self.wake()
            self.thread.join(timeout=grace + 60)
        self.clock.unsubscribe(self._clock_moved)
        self.executor.close(0)

    async def _io_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs a storage call. Local storages answer in well under a
        millisecond, so the loop calls them directly: a hop to another
        thread would cost more than the call."""
        return fn(*args)

    async def _commit(self, change: Append) -> ConflictError | None:
        """Commits ``change`` together with every other change made in the
        same turn of the loop: group commit, one disk sync for all of them.
        Steps that end while the loop waits for the disk are taken in on the
        next turn, and their changes make the next batch."""
        future: asyncio.Future[ConflictError | None] = self.loop.create_future()
        self.batch.append((change, future))
        if len(self.batch) == 1:
            self.loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        try:
            results = self.storage.commit([change for change, _ in batch])
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    # -- the main loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        # Before start() returns: dead processes' leases are freed, and
        # timers that fell due while no app ran have fired.
        try:
            self._release_orphans()
            await self._fire_all()
        except Exception:
            log.exception("the scheduler's first round failed; retrying")
        finally:
            self._started.set()
        failures = 0
        try:
            await self._loop(failures)
        finally:
            await self._shutdown(self.grace)

    async def _loop(self, failures: int) -> None:
        while not self.stopping:
            try:
                await self._tick()
                failures = 0
            except Exception:
                failures += 1
                log.exception("the scheduler's round failed; retrying")
                await asyncio.sleep(min(0.05 * 2**failures, 5.0))
                continue
            await self._sleep()

    def _release_orphans(self) -> None:
        """Gives up the leases of this host's processes that died, so their
        runs need not wait out the lease; while live ones hold leases, looks
        again every ``_ORPHAN_CHECK`` seconds."""
        self._orphans_due = None
        try:
            owners = self.storage.lease_owners()
            for owner in sorted(owners - {self.owner}):
                if _orphaned(owner):
                    log.info("taking over the runs of %s, which is no longer running", owner)
                    self.storage.release(owner, None)
                elif owner.startswith(f"{socket.gethostname()}:"):
                    self._orphans_due = time.monotonic() + _ORPHAN_CHECK
        except StorageError:
            log.exception("cannot look for orphaned runs")

    async def _tick(self) -> None:
        if self._orphans_due is not None and time.monotonic() >= self._orphans_due:
            await self._io_call(self._release_orphans)
        now = self.clock.now()
        await self._renew()
        if self.queued_steps:
            await self._collect(now)
        await self._fire(now)
        await self._claim(now)
        self._dispatch_ready()

    async def _renew(self) -> None:
        """Extends this app's leases once a third of a lease has passed."""
        now = self.clock.now()
        if self.live and now - self._renewed_at >= self.lease / 3:
            await self._io_call(self.storage.renew, self.owner, now, self.lease)
            self._renewed_at = now

    async def _sleep(self) -> None:
        assert self._wake_event is not None
        event = self._wake_event
        if event.is_set():
            event.clear()
            return
        now = self.clock.now()
        deadlines = []
        try:
            wake_at = await self._io_call(self.storage.next_wake, self.owner)
        except StorageError:
            log.exception("cannot read the next timer; retrying")
            wake_at = now + 1.0
        if wake_at is not None:
            deadlines.append(wake_at)
        if self.live:
            deadlines.append(self._renewed_at + self.lease / 3)
        deadlines.extend(d for live in self.live.values() for d in live.backoff.values())
        timeout: float | None = None
        if deadlines:
            deadline = min(deadlines)
            if deadline <= now:
                return
            timeout = self.clock.sleep_for(deadline)
        # A whole round at least once a lease period, whatever happens.
        timeout = self.lease if timeout is None else min(timeout, self.lease)
        if self.paused_until > time.monotonic():
            timeout = min(timeout, self.paused_until - time.monotonic())
        if self._orphans_due is not None:
            timeout = max(0.0, min(timeout, self._orphans_due - time.monotonic()))
        await self._doze(event, timeout)
        event.clear()

    async def _doze(self, event: asyncio.Event, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for ``event``, glancing at the
        storage's data version every ``_GLANCE`` seconds: a commit by another
        process (a new run, a fired timer, a released lease) ends the wait
        too, so work made elsewhere is taken up at once."""
        end = time.monotonic() + timeout
        version = self._data_version()
        while (left := end - time.monotonic()) > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), min(left, _GLANCE))
                return
            if version is None or self._data_version() != version:
                # Another process is at work: see whether any has died since.
                self._orphans_due = time.monotonic()
                return

    def _data_version(self) -> int | None:
        """The storage's data version, or ``None`` when it cannot be read
        (the next round then runs, and reports the storage's error)."""
        try:
            return self.storage.data_version()
        except StorageError:
            return None

    # -- timers --------------------------------------------------------------------------------

    async def _fire(self, now: float) -> bool:
        """Fires the timers due at ``now`` (up to a batch); whether there may
        be more."""
        due = await self._io_call(self.storage.due, now, 256)
        firings: list[Firing] = []
        for run_id, timer in due:
            live = self.live.get(run_id)
            if live is not None:
                await self._fire_live(live, timer, now)
                continue
            record = None
            if timer.kind == "wait":
                record = _core.resume_record(timer.step, "timeout", as_datetime(now))
            firings.append(Firing(run_id, timer.step, record))
        if firings:
            waiting = []
            if events.listening("step.resume"):
                waiting = await self._io_call(self._waiting_steps, firings)
            fired = await self._io_call(self.storage.fire, firings, now)
            self.app._notify()
            for (instance, step), done in zip(waiting, fired, strict=False):
                if done and instance is not None and step is not None:
                    waited = _waited_for(instance, step)
                    events.step_resumed(instance, step, "timeout", "timeout", waited)
        return len(due) == 256

    def _waiting_steps(
        self, firings: Sequence[Firing]
    ) -> list[tuple[Instance | None, type | None]]:
        """The instance and the waiting step of each wait timer about to fire
        without its run being loaded, for ``step.resume`` (read only when a
        handler listens)."""
        found: list[tuple[Instance | None, type | None]] = []
        for firing in firings:
            instance, step = None, None
            if firing.record is not None:
                try:
                    instance = self.app._rebuild(self.storage.load(firing.run_id)).finish()
                    step = self._step_of(instance, firing.step)
                except (SerializationError, StorageError, LookupError):
                    pass
            found.append((instance, step))
        return found

    @staticmethod
    def _step_of(instance: Instance, key: str) -> type | None:
        return next((s for s in graph_of(instance).steps if step_key(s) == key), None)

    async def _fire_live(self, live: _Live, timer: Timer, now: float) -> None:
        unit = self._unit(live, timer.step)
        if timer.kind in _DELAYS:
            live.backoff.pop(timer.step, None)
            await self._apply(live, drop_timers=[timer.step], extra=lambda: [unit])
            return

        def resume() -> list[Unit]:
            if live.driver.resume(unit[0], "timeout", timestamp=as_datetime(now)):
                waited = now - (timer.due - _waited_for(live.driver.instance, unit[0]))
                events.step_resumed(live.driver.instance, unit[0], "timeout", "timeout", waited)
            return []

        await self._apply(live, drop_timers=[timer.step], extra=resume)

    def _unit(self, live: _Live, key: str) -> Unit:
        """The run a unit key names (see `_unit_key`)."""
        return unit_of(live.keys, key, live.row.workflow)

    # -- claiming and loading ----------------------------------------------------------------------

    def _storage_failed(self) -> None:
        """Backs off after a failed write: nothing is claimed again for a
        while (doubling up to 5 s), so a broken disk is not hammered and a
        step whose outcome could not be stored is not re-run at once."""
        self.pause = min(max(self.pause * 2, 0.05), 5.0)
        self.paused_until = time.monotonic() + self.pause

    async def _claim(self, now: float) -> None:
        if self.stopping or time.monotonic() < self.paused_until:
            return
        room = self.slots * 2 - len(self.live)
        if self.queued_steps:
            # (A round loads at most a batch, so that outcomes are not kept
            # waiting while hundreds of runs load.)
            room = min(_QUEUE_RUNS - len(self.live), _QUEUE_BATCH)
        if room <= 0:
            return
        rows = await self._io_call(
            self.storage.claim, self.owner, now, self.lease, room, frozenset(self.skip)
        )
        if rows and not self.live:
            self._renewed_at = now
        for row in rows:
            if row.run_id in self.live:
                continue
            # (Loading many runs takes a while: the leases must not lapse.)
            await self._renew()
            try:
                stored = await self._io_call(self.storage.load, row.run_id)
                workflow = self.app._resolve(row.workflow)
                live = _live(stored, workflow)
            except SerializationError as exc:
                # Another worker may have the code: leave the run alone.
                self.skip.add(row.workflow)
                if row.workflow not in self.skip_logged:
                    self.skip_logged.add(row.workflow)
                    log.warning("leaving runs of %s alone: %s", row.workflow, exc)
                await self._io_call(self.storage.release, self.owner, [row.run_id])
                continue
            self.live[row.run_id] = live
            self._adopt(live, stored)
            traced = otel.run_started(stored.row)
            if traced is not None:
                self.traces[row.run_id] = traced
            # Starting a pending run is a change committed before its first
            # step; timers that hold nothing back any more (of steps a
            # replayed record withdrew) go with it.
            await self._apply(live, drop_timers=live.outdated, extra=_starter(live))

    async def refresh(self, run_id: int, outcomes: Sequence[tuple[Unit, Attempted]] = ()) -> None:
        """Reloads a run this app drives after another writer changed it
        (a resume, a cancel, a timer), keeping its running steps and the
        ``outcomes`` not committed yet."""
        old = self.live.get(run_id)
        if old is None:
            return
        old.stale = True  # nothing more is applied to it
        while old.committing:
            await old.idle.wait()
        if self.live.get(run_id) is not old:
            return
        self._drop(old)
        try:
            stored = await self._io_call(self.storage.load, run_id)
        except StorageError:
            log.exception("cannot reload %s; it will be taken up again", old.row.id)
            self._end_trace(run_id, None, old.row.status)
            return
        if stored.row.lease_owner != self.owner or stored.row.status in _FINISHED:
            # Finished (cancelled, say) or taken over: running steps' results
            # are discarded, and async ones stop.
            self._end_trace(run_id, None, stored.row.status)
            for task in old.running.values():
                task.cancel()
            return
        live = _live(stored, old.workflow)
        live.attempts.update(old.attempts)
        live.running = old.running
        live.started = old.started
        # (Queued steps' outcomes are read again from their rows.)
        live.pending = [p for p in (*outcomes, *old.pending) if not _queued(p[1])]
        live.settling = old.settling
        live.durations = old.durations
        live.advances = old.advances
        self.live[run_id] = live
        self._adopt(live, stored)
        await self._apply(live, drop_timers=live.outdated, extra=_starter(live))

    # -- steps on a task queue ------------------------------------------------------------------

    def _adopt(self, live: _Live, stored: Stored) -> None:
        """Takes in a loaded run's steps that are out on the task queue: they
        are not handed out again, and their outcomes are looked for."""
        if not stored.jobs:
            return
        now = (self.clock.now(), time.monotonic_ns())
        for job in stored.jobs:
            try:
                unit = self._unit(live, job.unit)
            except SerializationError:
                continue  # of no step of the graph: its row goes with the run
            live.remote[unit] = job.attempt
            live.started.setdefault(unit, now)
        self.look.add(live.run_id)

    async def _collect(self, now: float) -> None:
        """Applies the outcomes queue workers recorded for the runs this app
        drives (those a notification named, else all of them now and then),
        reloads runs changed from outside, and hands out again the steps
        whose execution stopped renewing its hold (a worker that died)."""
        touched = getattr(self.storage, "touched", None)
        if touched is None:
            return
        outcomes, changes, everything = touched()
        for run_id in changes:
            if run_id in self.live:
                self.loop.create_task(self.refresh(run_id))
        look, self.look = self.look | outcomes, set()
        sweep = everything or time.monotonic() >= self._sweep_due
        if sweep:
            self._sweep_due = time.monotonic() + self.lease / 3
            look = set(self.live)
            stalled = await self._io_call(self.storage.stalled_steps, self.owner, now)  # type: ignore[attr-defined]
            for run_id, key in stalled:
                live = self.live.get(run_id)
                if live is not None:
                    self._hand_out_again(live, key)
        look = {run_id for run_id in look if run_id in self.live and self.live[run_id].remote}
        if not look:
            return
        found: list[StepOutcome] = await self._io_call(self.storage.step_outcomes, look)  # type: ignore[attr-defined]
        ready: dict[int, _Live] = {}
        for outcome in found:
            live = self.live.get(outcome.run_id)
            if live is None or live.stale:
                continue
            try:
                unit = self._unit(live, outcome.unit)
            except SerializationError:
                continue
            if live.remote.get(unit) != outcome.attempt:
                continue
            del live.remote[unit]
            began = live.started.pop(unit, None)
            if outcome.started is not None and outcome.finished is not None:
                live.durations[unit] = int(max(0.0, outcome.finished - outcome.started) * 1e9)
            elif began is not None:
                live.durations[unit] = time.monotonic_ns() - began[1]
            live.settle.append(outcome.unit)
            live.settling.add(unit)
            live.pending.append((unit, _attempted(outcome)))
            ready[live.run_id] = live
        for live in ready.values():
            self.loop.create_task(self._apply(live))

    def _hand_out_again(self, live: _Live, key: str) -> None:
        """Queues the run ``key`` of ``live`` again: its execution stopped
        renewing its hold (the worker died, or its job was lost)."""
        try:
            unit = self._unit(live, key)
        except SerializationError:
            return
        if live.remote.pop(unit, None) is None:
            return
        log.info("running %s of %s again: its worker stopped", key, live.row.id)
        self.loop.create_task(self._apply(live, extra=lambda: [unit]))

    def _sendable(self, live: _Live, units: Iterable[Unit]) -> list[tuple[Unit, int]]:
        """The runs among ``units`` to hand to the task queue now, each with
        its attempt."""
        return [
            (unit, live.attempts.get(_unit_key(*unit), 0) + 1)
            for unit in dict.fromkeys(units)
            if _can_start(live, unit)
        ]

    # -- running steps ---------------------------------------------------------------------------

    def _dispatch(self, live: _Live, units: Iterable[Unit]) -> None:
        assert not self.queued_steps, "steps go to the task queue in commits"
        for unit in units:
            if _can_start(live, unit) and (live.run_id, unit) not in self.queued:
                self.queued.add((live.run_id, unit))
                self.ready.append((live.run_id, unit))
        self._dispatch_ready()

    def _dispatch_ready(self) -> None:
        while self.ready and self.running < self.slots and not self.stopping:
            run_id, unit = self.ready.popleft()
            self.queued.discard((run_id, unit))
            live = self.live.get(run_id)
            if live is None or live.stale or not _can_start(live, unit):
                continue
            step, iteration = unit
            instance = live.driver.instance
            attempt = live.attempts.get(_unit_key(step, iteration), 0) + 1
            call = step_call(live.driver, unit, attempt, live.row.token)
            self.running += 1
            live.started[unit] = (self.clock.now(), time.monotonic_ns())
            if self.traces:  # OpenTelemetry is on
                traced, current = otel.step_started(
                    self.traces.get(run_id),
                    live.row.workflow,
                    instance.id,
                    step,
                    attempt,
                    iteration,
                )
                with current:  # the step's task (and its thread) see its span
                    task = self.loop.create_task(self._run_step(run_id, unit, call, traced))
            else:
                task = self.loop.create_task(self._run_step(run_id, unit, call, None))
            live.running[unit] = task
            events.step_start(instance, step, attempt, len(live.running))

    async def _run_step(
        self, run_id: int, unit: Unit, call: StepCall, traced: otel.Traced | None
    ) -> None:
        attempted = None
        try:
            attempted = await self.executor.run(call)
        finally:
            self.running -= 1
            if traced is not None:
                otel.step_ended(traced, attempted)
        live = self.live.get(run_id)
        if live is None:
            return  # dropped (cancelled, taken over): the result is discarded
        live.running.pop(unit, None)
        began = live.started.pop(unit, None)
        if began is not None:
            live.durations[unit] = time.monotonic_ns() - began[1]
        live.settling.add(unit)
        live.pending.append((unit, attempted))
        await self._apply(live)
        self._dispatch_ready()

    # -- applying and committing ----------------------------------------------------------------

    async def _apply(
        self,
        live: _Live,
        *,
        drop_timers: Sequence[str] = (),
        extra: Callable[[], list[Unit]] | None = None,
    ) -> None:
        """Applies ``extra`` (a change on the driver that returns runs to
        start) and the pending outcomes, commits them, and then starts what
        became runnable. One commit at a time per run: outcomes that arrive
        meanwhile go in the next round."""
        while live.committing and (extra is not None or drop_timers):
            await live.idle.wait()
        if live.committing or live.stale or self.live.get(live.run_id) is not live:
            return
        live.committing = True
        live.idle.clear()
        try:
            first = True
            while self.live.get(live.run_id) is live and not live.stale and (first or live.pending):
                first = False
                outcomes, live.pending = live.pending, []
                await self._commit_round(live, outcomes, drop_timers, extra)
                drop_timers, extra = (), None
        finally:
            live.committing = False
            live.idle.set()

    async def _commit_round(
        self,
        live: _Live,
        outcomes: list[tuple[Unit, Attempted]],
        drop_timers: Sequence[str],
        extra: Callable[[], list[Unit]] | None,
    ) -> None:
        now = self.clock.now()
        stamp = as_datetime(now)
        to_run: list[Unit] = []
        timers: list[Timer] = []
        attempts: list[Attempt] = []
        began = time.monotonic_ns()
        first = live.driver.instance
        waiting_before = first.waiting_steps
        if extra is not None:
            to_run.extend(extra())
        for unit, attempted in outcomes:
            self._outcome(live, unit, attempted, now, stamp, timers, attempts)
        # Nothing left to run completes the instance (a recorded change).
        instance = live.driver.finish()
        # Steps withdrawn (by a first-wins join or Terminate) or resumed
        # stop waiting, and withdrawn ones stop backing off: their timers go.
        gone = [step_key(step) for step in waiting_before - instance.waiting_steps]
        gone.extend(key for key in live.backoff if not instance.is_active(self._unit(live, key)[0]))
        if gone:
            for key in gone:
                live.backoff.pop(key, None)
            drop_timers = (*drop_timers, *(key for key in gone if key not in drop_timers))
        for step in instance.waiting_steps - waiting_before:
            if issubclass(step, Wait):
                try:
                    config = instance.step_configs.get(step) or {}
                    due = now + wait_duration(config).total_seconds()
                except (TypeError, ValueError, OverflowError):
                    continue  # its execute refused the config and failed already
                timers.append(Timer(step_key(step), "wait", due))
        records = live.driver.take_records()
        to_run.extend(live.driver.take_runnable())
        send = self._sendable(live, to_run) if self.queued_steps else []
        settle, live.settle = live.settle, []
        if records and events.listening("engine.advance"):
            live.advances += 1
            events.advanced(first, instance, time.monotonic_ns() - began, live.advances)
        status = live.driver.status.value
        finished = status in _FINISHED
        runnable = not finished and self._has_work(live, instance)
        nothing = not (records or timers or attempts or drop_timers or send or settle)
        if nothing and runnable:
            live.settling.difference_update(unit for unit, _ in outcomes)
            if not self.queued_steps:
                self._dispatch(live, to_run)
            return
        # (A run released with nothing new still commits: its row must say
        # it has no work now, or every app would claim it again at once.)
        size = sum(len(r) for r in records)
        snapshot = None
        if finished or live.journal_bytes + size >= max(live.snapshot_bytes, _SNAPSHOT_MIN_BYTES):
            snapshot = instance.to_bytes()
        change = Append(
            run_id=live.run_id,
            expected_seq=live.seq,
            records=records,
            status=status,
            runnable=runnable,
            updated_at=now,
            snapshot=snapshot,
            set_timers=timers,
            drop_timers=tuple(drop_timers),
            attempts=attempts,
            owner=self.owner,
            release=not runnable,
            dispatch=[(_unit_key(*unit), attempt) for unit, attempt in send],
            settle=settle,
        )
        try:
            conflict = await self._commit(change)
        except StorageError:
            # Nothing of this change is committed: drop the run from memory
            # (nothing it made runnable starts); it is loaded again from
            # what is committed once the storage works again.
            self._storage_failed()
            log.exception(
                "cannot commit a change of %s; retrying in %.2f s", live.row.id, self.pause
            )
            self._drop(live)
            self._end_trace(live.run_id, None, live.row.status)
            return
        if conflict is not None:
            # Another writer got there first: load what it did, then apply
            # these outcomes again.
            log.debug("reloading %s: %s", live.row.id, conflict)
            live.pending = [*outcomes, *live.pending]
            live.stale = True
            self.loop.create_task(self.refresh(live.run_id))
            return
        self.pause = 0.0
        live.settling.difference_update(unit for unit, _ in outcomes)
        live.seq += len(records)
        if snapshot is not None:
            live.snapshot_bytes, live.journal_bytes = len(snapshot), 0
        else:
            live.journal_bytes += size
        if status != live.row.status:
            before = live.row.status
            live.row = dataclasses.replace(live.row, status=status)
            # (The events first: whoever waits for the change sees them delivered.)
            duration_ns = int(max(0.0, now - live.row.created_at) * 1e9)
            stacktrace = next((a.traceback for a in reversed(attempts) if a.traceback), None)
            events.workflow_changed(before, instance, duration_ns, live.advances, stacktrace)
            self.app._notify()
        if not runnable:
            self._drop(live)
            took = now - live.row.created_at if finished else None
            self._end_trace(live.run_id, instance, status, took)
            return
        if self.queued_steps:
            self._sent(live, send)
        else:
            self._dispatch(live, to_run)

    def _sent(self, live: _Live, sent: list[tuple[Unit, int]]) -> None:
        """Notes the runs a commit handed to the task queue."""
        started = (self.clock.now(), time.monotonic_ns())
        for unit, attempt in sent:
            live.remote[unit] = attempt
            live.started[unit] = started
            events.step_start(live.driver.instance, unit[0], attempt, len(live.remote))

    def _outcome(
        self,
        live: _Live,
        unit: Unit,
        attempted: Attempted,
        now: float,
        stamp: dt.datetime,
        timers: list[Timer],
        attempts: list[Attempt],
    ) -> None:
        """Applies one attempt's end: its result, or a retry, or the failure."""
        step, iteration = unit
        key = _unit_key(step, iteration)
        duration_ns = live.durations.pop(unit, 0)
        if attempted.kind == "returned":
            # (A step withdrawn meanwhile has its result discarded.)
            before = live.driver.instance if events.listening(*events.STEP_EVENTS) else None
            if isinstance(attempted.value, _Recorded):
                live.driver.complete_record(attempted.value.record)
            else:
                live.driver.complete(step, attempted.value, iteration=iteration, timestamp=stamp)
            if before is not None and before.is_active(step):
                events.step_returned(
                    live.graph, before, live.driver.instance, step, attempted.value, duration_ns
                )
            self._delay_repeat(live, unit, now, timers)
            return
        if not live.driver.instance.is_active(step):
            return  # withdrawn meanwhile: the failed attempt does not count
        attempt = live.attempts.get(key, 0) + 1
        error: dict[str, Any]
        if attempted.kind == "raised":
            exc = attempted.value
            if isinstance(exc, _Raised):
                type_name, message, trace = exc.type_name, exc.message, exc.traceback
            else:
                type_name, message, trace = described(exc)
            attempts.append(
                Attempt(key, attempt, now, "exception", type_name, message, traceback=trace)
            )
            error = {
                "kind": "exception",
                "step": step_key(step),
                "type": type_name,
                "message": message,
                "attempts": attempt,
            }
        else:
            timeout = getattr(step, "timeout", None)
            attempts.append(
                Attempt(key, attempt, now, "timeout", "TimeoutError", f"ran over {timeout} s")
            )
            error = {
                "kind": "timeout",
                "step": step_key(step),
                "timeout": timeout,
                "attempts": attempt,
            }
        if iteration is not None:
            error[_ITERATION_FIELD[type(live.nodes.get(step)).__name__]] = iteration
        live.attempts[key] = attempt
        policy = getattr(step, "retry", None)
        will_retry = policy is not None and attempt < policy.max_attempts
        if events.listening("step.exception"):
            events.step_failed(
                live.driver.instance,
                step,
                error["kind"],
                attempts[-1].traceback,
                str(error.get("message", error.get("timeout"))),
                duration_ns,
                attempt,
                will_retry,
            )
        if policy is not None and will_retry:
            due = now + policy.delay(attempt)
            live.backoff[key] = due
            timers.append(Timer(key, "retry", due, attempt + 1))
        else:
            live.driver.fail_with(error)

    def _delay_repeat(self, live: _Live, unit: Unit, now: float, timers: list[Timer]) -> None:
        """After a run of a ``Repeat`` step with ``every`` that returned
        ``again``, holds the next run back by a durable timer."""
        step, iteration = unit
        node = live.nodes.get(step)
        if not isinstance(node, Repeat) or node.every is None or iteration is None:
            return
        if not live.driver.instance.is_active(step):
            return  # it left the loop, or the instance ended
        key = _unit_key(step, iteration + 1)
        due = now + wait_duration(node.every).total_seconds()
        live.backoff[key] = due
        timers.append(Timer(key, "repeat", due))

    def _has_work(self, live: _Live, instance: Instance) -> bool:
        """Whether some run of an active, not waiting step can go now: not
        held back by a retry's backoff or a Repeat's interval (a ForEach has
        work while it has more unfinished items than items in backoff)."""
        for step in instance.active_steps - instance.waiting_steps:
            key = step_key(step)
            node = live.nodes.get(step)
            if node is None:
                if key not in live.backoff:
                    return True
                continue
            state = instance.loop_state(step)
            if isinstance(node, Repeat):
                iteration = state["iteration"] if state is not None else 0
                if _unit_key(step, iteration) not in live.backoff:
                    return True
            elif isinstance(node, ForEach):
                if state is None:
                    return True  # its items are still to be taken
                held = sum(1 for k in live.backoff if k.rpartition("#")[0] == key)
                if state["items"] - state["done"] > held:
                    return True
        return False

    def running_since(self, run_id: int) -> dict[Unit, float]:
        """The runs of ``run_id`` this app has going on, with when each
        started (a copy, safe to read from any thread)."""
        live = self.live.get(run_id)
        if live is None:
            return {}
        # (dict.copy is atomic under the GIL, while the loop's thread changes it.)
        return {unit: at for unit, (at, _) in live.started.copy().items()}

    def _end_trace(
        self, run_id: int, instance: Instance | None, status: str, took: float | None = None
    ) -> None:
        """Closes the span of a run this app stops driving (``took``: the
        seconds a finished run took)."""
        if self.traces:
            otel.run_ended(self.traces.pop(run_id, None), instance, status, took)

    def _drop(self, live: _Live) -> None:
        if self.live.get(live.run_id) is live:
            del self.live[live.run_id]
            # Room for another run: claim again.
            if self._wake_event is not None:
                self._wake_event.set()

    # -- shutting down -------------------------------------------------------------------------

    async def _shutdown(self, grace: float) -> None:
        self.stopping = True
        self.ready.clear()
        self.queued.clear()
        deadline = time.monotonic() + grace
        while any(live.running for live in self.live.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        tasks = [task for live in self.live.values() for task in live.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for live in list(self.live.values()):
            await live.idle.wait()
            self._end_trace(live.run_id, None, live.row.status)
        self.live.clear()
        try:
            await self._io_call(self.storage.release, self.owner, None)
        except StorageError:
            log.exception("cannot release this app's leases; they will expire")
        # Whatever else is still scheduled (reloads, say) ends here.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)


def _live(stored: Stored, workflow: type) -> _Live:
    """A run loaded from ``stored``: its snapshot with its journal replayed."""
    instance = Instance.from_bytes(stored.snapshot)
    graph = graph_of(instance)
    driver = _core.Run(graph, instance, record=True, start=False)
    driver.replay(stored.records)
    live = _Live(
        row=stored.row,
        workflow=workflow,
        graph=graph,
        nodes=version_class(instance)._nodes,
        keys={step_key(step): step for step in graph.steps},
        driver=driver,
        seq=stored.row.seq,
        snapshot_bytes=len(stored.snapshot),
    )
    for attempt in stored.attempts:
        live.attempts[attempt.step] = max(live.attempts.get(attempt.step, 0), attempt.attempt)
    live.outdated = stale_timers(driver.instance, stored.timers, live.keys)
    live.backoff = {
        t.step: t.due for t in stored.timers if t.kind in _DELAYS and t.step not in live.outdated
    }
    return live


def stale_timers(instance: Instance, timers: Iterable[Timer], keys: dict[str, type]) -> list[str]:
    """The keys of the timers that hold nothing back in ``instance``: a wait
    timer of a step that no longer waits, a retry or repeat timer of a step
    that is no longer active (withdrawn, resumed, finished), or a timer of
    no step of the graph. ``keys`` maps step keys to steps."""
    stale = []
    for timer in timers:
        step = keys.get(timer.step)
        if step is None:
            base, _, iteration = timer.step.rpartition("#")
            step = keys.get(base) if iteration.isdigit() else None
        if step is None:
            stale.append(timer.step)
        elif timer.kind == "wait":
            if not instance.is_waiting(step):
                stale.append(timer.step)
        elif not instance.is_active(step):
            stale.append(timer.step)
    return stale


def _can_start(live: _Live, unit: Unit) -> bool:
    """Whether the run ``unit`` of ``live`` may start now: it is active and
    not waiting, not in a retry's backoff or a Repeat's interval, and not
    going on already (here, on the task queue, or ended and not yet
    committed)."""
    step, iteration = unit
    instance = live.driver.instance
    return not (
        unit in live.running
        or unit in live.remote
        or unit in live.settling
        or _unit_key(step, iteration) in live.backoff
        or not instance.is_active(step)
        or instance.is_waiting(step)
    )


def unit_of(keys: dict[str, type], key: str, workflow: str) -> Unit:
    """The run a unit key names (see `_unit_key`), given the graph's steps
    by key; ``SerializationError`` for a key of no step of ``workflow``."""
    if key in keys:
        return keys[key], None
    base, _, iteration = key.rpartition("#")
    if base in keys and iteration.isdigit():
        return keys[base], int(iteration)
    raise SerializationError(f"{workflow} has no step with the key {key!r}")


def step_call(driver: _core.Run, unit: Unit, attempt: int, token: str) -> StepCall:
    """The call of attempt ``attempt`` of the run ``unit`` of the instance
    ``driver`` holds (``token``: its run's, for the idempotency key)."""
    step, iteration = unit
    instance = driver.instance
    execution = Execution(
        instance_id=instance.id,
        step=step,
        attempt=attempt,
        idempotency_key=f"{token}:{_unit_key(step, iteration)}",
        iteration=iteration,
    )
    return StepCall(
        step=step,
        instance=instance,
        config=driver.config(step, iteration),
        execution=execution,
        timeout=getattr(step, "timeout", None),
    )


def described(exc: object) -> tuple[str, str, str | None]:
    """An exception's type (``module.QualName``), message and short traceback."""
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}", _message(exc), short_traceback(exc)


def _waited_for(instance: Instance, step: type) -> float:
    """How long a ``Wait`` step's config says it waits, in seconds (0 when
    it cannot tell)."""
    try:
        return float(wait_duration(instance.step_configs.get(step) or {}).total_seconds())
    except (TypeError, ValueError, OverflowError):
        return 0.0


def _starter(live: _Live) -> Callable[[], list[Unit]]:
    """Starts a pending run (a change, recorded); returns no runs: what it
    makes runnable comes from the driver."""

    def start() -> list[Unit]:
        live.driver.start()
        return []

    return start


#: How many frames, nearest the raise first, a failed attempt keeps.
_TRACEBACK_FRAMES = 8
#: And at most how much text.
_TRACEBACK_CHARS = 4000


def short_traceback(exc: object) -> str | None:
    """The last frames of ``exc``'s traceback, as text (at most a few KiB)."""
    if not isinstance(exc, BaseException):
        return None
    try:
        text = "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-_TRACEBACK_FRAMES)
        )
    except Exception:
        return None
    if len(text) > _TRACEBACK_CHARS:
        text = "...\n" + text[-_TRACEBACK_CHARS:]
    return text


def _message(exc: object) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


# -- outcomes recorded by queue workers ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Recorded:
    """A queued step's return value, read where it ran, as a journal record."""

    record: bytes


@dataclasses.dataclass(frozen=True)
class _Raised:
    """The exception a queued step raised where it ran, as text."""

    type_name: str
    message: str
    traceback: str | None


def _attempted(outcome: StepOutcome) -> Attempted:
    """How a queued attempt ended, from what its execution recorded."""
    if outcome.outcome == "returned" and outcome.record is not None:
        return Attempted("returned", _Recorded(outcome.record))
    raised = _Raised(
        outcome.error_type or "builtins.Exception", outcome.error_message or "", outcome.traceback
    )
    return Attempted("timed_out" if outcome.outcome == "timed_out" else "raised", raised)


def _queued(attempted: Attempted) -> bool:
    """Whether an outcome came from the task queue (it is read again from
    its row after a reload, not carried over)."""
    return isinstance(attempted.value, (_Recorded, _Raised))
