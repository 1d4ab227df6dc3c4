"""Who executes steps: the runtime's second seam, beside the storage.

The app decides *what* runs and records what happened; an executor runs one
attempt of one step and reports how it ended. :class:`LocalExecutor` runs
``def`` steps on a pool of threads and ``async def`` steps on the app's own
event loop. An executor that hands steps to a distributed task queue fits
the same :class:`Executor` protocol.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import inspect
from typing import Any, Literal, Protocol

from hephaestus._core import Instance
from hephaestus.runtime.execution import _CURRENT, Execution

__all__ = ["Attempted", "Executor", "LocalExecutor", "StepCall"]


@dataclasses.dataclass(frozen=True)
class StepCall:
    """One attempt of one step to run."""

    step: type
    #: The instance as it was when the attempt was dispatched.
    instance: Instance
    config: Any
    execution: Execution
    #: Seconds of real time the attempt may take, or ``None``.
    timeout: float | None


@dataclasses.dataclass(frozen=True)
class Attempted:
    """How an attempt ended: it ``returned`` a value, ``raised`` an
    exception, or ``timed_out``."""

    kind: Literal["returned", "raised", "timed_out"]
    value: object = None


def _is_async(step: type) -> bool:
    return inspect.iscoroutinefunction(getattr(step, "execute", None))


def _call(call: StepCall) -> object:
    """Runs ``execute`` in the calling thread (inside the call's context)."""
    _CURRENT.set(call.execution)
    return call.step().execute(call.instance, call.config, call.instance.context)


class Executor(Protocol):
    """Runs step attempts for an app."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Prepares to run steps for an app whose event loop is ``loop``."""

    async def run(self, call: StepCall) -> Attempted:
        """Runs one attempt (on the app's loop) and reports how it ended."""

    def close(self, grace: float) -> None:
        """Waits up to ``grace`` seconds for running steps, then stops."""


class LocalExecutor:
    """Runs ``def`` steps on ``concurrency`` threads and ``async def`` steps
    on the app's event loop.

    A step's ``timeout`` is real time: an ``async`` step that runs longer is
    cancelled; a ``def`` step cannot be stopped, so its thread runs on and
    its late result is discarded.
    """

    def __init__(self, concurrency: int) -> None:
        self._concurrency = concurrency
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[concurrent.futures.Future[object]] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Makes the thread pool."""
        self._loop = loop
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._concurrency, thread_name_prefix="hephaestus-step"
        )

    async def run(self, call: StepCall) -> Attempted:
        """Runs one attempt; see the class docs for timeouts."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        try:
            if _is_async(call.step):
                # The task copies the context current when it is made.
                task = context.run(loop.create_task, self._run_async(call))
                value = await asyncio.wait_for(task, call.timeout)
            else:
                if self._pool is None:
                    raise RuntimeError("the executor was not started")
                future = self._pool.submit(context.run, _call, call)
                self._running.add(future)
                future.add_done_callback(self._running.discard)
                value = await asyncio.wait_for(asyncio.wrap_future(future), call.timeout)
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(_awaited(value), call.timeout)
        except asyncio.TimeoutError:
            return Attempted("timed_out")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            return Attempted("raised", exc)
        return Attempted("returned", value)

    async def _run_async(self, call: StepCall) -> object:
        _CURRENT.set(call.execution)
        result = call.step().execute(call.instance, call.config, call.instance.context)
        if inspect.isawaitable(result):
            result = await result
        return result

    def close(self, grace: float) -> None:
        """Waits up to ``grace`` seconds for running ``def`` steps, then lets
        the threads go (a step still running finishes on its own)."""
        if self._running:
            concurrent.futures.wait(list(self._running), timeout=grace)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


async def _awaited(value: Any) -> object:
    return await value
