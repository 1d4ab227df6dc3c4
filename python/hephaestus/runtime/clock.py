"""Where the runtime gets its time: timers, retries and leases ask a clock.

The default :class:`SystemClock` reads the system's time. Tests use
:class:`hephaestus.testing.VirtualClock`, whose time moves only when told to,
so a 30-day timer fires in milliseconds of real time.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """A source of time for the runtime."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""

    def sleep_for(self, deadline: float) -> float | None:
        """How many real seconds to sleep to reach ``deadline`` (clock time),
        or ``None`` to sleep until woken (a clock whose time does not pass on
        its own)."""

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` whenever the time jumps (a virtual clock moved)."""

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        """Stops calling ``callback``."""


def as_datetime(seconds: float) -> dt.datetime:
    """Clock seconds as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


class SystemClock:
    """The system's time (``time.time()``)."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()

    def sleep_for(self, deadline: float) -> float | None:
        """The real seconds until ``deadline``."""
        return max(0.0, deadline - time.time())

    def subscribe(self, callback: Callable[[], None]) -> None:
        """The system's time does not jump: nothing to call."""

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        """Nothing was subscribed."""

    def __repr__(self) -> str:
        return "SystemClock()"


class _Subscribers:
    """Callbacks to call when a clock's time jumps (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def remove(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def notify(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()
