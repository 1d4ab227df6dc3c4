"""Helpers for testing workflows: a clock you move by hand.

::

    clock = VirtualClock()
    with Hephaestus("memory://", clock=clock) as app:
        iid = app.start_instance(Reminder, {}, id="reminder::1")  # waits 30 days
        clock.advance(30 * 24 * 3600)                             # the timer fires now
        assert app.wait(iid, timeout=5).status == "completed"
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable

from hephaestus.runtime.clock import _Subscribers

__all__ = ["VirtualClock"]


class VirtualClock:
    """A clock whose time moves only when told to.

    Timers, retries' backoff and leases of a ``Hephaestus`` app made with
    ``clock=VirtualClock()`` follow this clock; step ``timeout``\\ s still
    measure real time. Time never goes back.

    Args:
        start: The starting time, an aware ``datetime`` (default: now, UTC).

    Raises:
        TypeError: ``start`` is not a ``datetime``.
        ValueError: ``start`` is naive.
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        if start is None:
            start = dt.datetime.now(dt.timezone.utc)
        if not isinstance(start, dt.datetime):
            raise TypeError(f"start must be a datetime, got {type(start).__name__}")
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be an aware datetime (with a tzinfo)")
        self._lock = threading.Lock()
        self._now = start.timestamp()
        self._subscribers = _Subscribers()

    def now(self) -> float:
        """The clock's time, in seconds since the Unix epoch."""
        with self._lock:
            return self._now

    def datetime(self) -> dt.datetime:
        """The clock's time as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.now(), tz=dt.timezone.utc)

    def advance(self, seconds: float) -> None:
        """Moves the time forward by ``seconds``; due timers fire.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is negative or not finite.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(
                f"seconds must be finite and >= 0 (time never goes back), got {seconds}"
            )
        with self._lock:
            self._now += float(seconds)
        self._subscribers.notify()

    def sleep_for(self, deadline: float) -> float | None:
        """Virtual time does not pass on its own: sleep until woken."""
        return None

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` after every :meth:`advance`."""
        self._subscribers.add(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        """Stops calling ``callback``."""
        self._subscribers.remove(callback)

    def __repr__(self) -> str:
        return f"VirtualClock({self.datetime().isoformat()})"
