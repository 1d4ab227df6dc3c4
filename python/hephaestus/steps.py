"""Steps: the units of work a workflow connects, and the results they return.

A step is a subclass of :class:`Step` that declares the events it can emit and
defines ``execute(self, instance, config, context)``, either as ``def`` or as
``async def``::

    class ValidateOrder(Step):
        events = ("valid", "invalid")

        def execute(self, instance, config, context):
            if context.initial.get("items"):
                return Ok("valid", {"item_count": len(context.initial["items"])})
            return "invalid"  # a bare event string means Ok("invalid")

``execute`` returns one of :class:`Ok` (done, with an event), a bare event
``str`` (short for ``Ok(event)``), :class:`Async` (waiting for an event or a
timer) or :class:`Error` (failed); :func:`normalize_result` turns any of them
into an ``Ok``, ``Async`` or ``Error``.

The built-in steps are :class:`Done` (the usual leaf of a workflow),
:class:`Terminate` (a leaf that ends the whole workflow early), :class:`Wait`
(a timer), :class:`WaitForEvent` and :class:`Debug`.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import logging
import math
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias, TypeGuard

from hephaestus._frozen import sealed

if TYPE_CHECKING:
    from hephaestus._core import Context, Instance

__all__ = [
    "Async",
    "Backoff",
    "Debug",
    "Done",
    "Error",
    "Ok",
    "Retry",
    "Step",
    "StepResult",
    "StepReturn",
    "Terminate",
    "Wait",
    "WaitForEvent",
    "is_step_class",
    "normalize_result",
    "wait_duration",
]


# -- results -----------------------------------------------------------------


def _plain_dict(value: Mapping[str, Any] | None, owner: str, field: str) -> dict[str, Any] | None:
    """A shallow copy of ``value`` as a plain ``dict``, after checking its keys."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{owner}.{field} must be a mapping or None, got {type(value).__name__}")
    copy = dict(value)
    for key in copy:
        if not isinstance(key, str):
            raise TypeError(
                f"{owner}.{field} keys must be str, got {type(key).__name__} key {key!r}"
            )
    return copy


def _event_name(event: object, owner: str) -> str:
    """``event`` as a plain, non-empty ``str`` (a ``str`` enum member gives its value)."""
    if not isinstance(event, str):
        raise TypeError(f"{owner} event must be a str, got {type(event).__name__}")
    if not event:
        raise ValueError(f"{owner} event must not be empty")
    # str.__str__ ignores a subclass's __str__, so Enum members give their value.
    return str.__str__(event)


@sealed
@dataclasses.dataclass(init=False, frozen=True, slots=True)
class Ok:
    """A step finished and emits ``event``.

    ``context_updates`` is stored under the step's key in ``context.steps``;
    ``metadata`` is merged into the instance's ``runtime_metadata``. Both are
    copied into plain dicts when the result is made, so later changes to the
    caller's mappings do not show; the values inside them are copied by the
    core when the result is applied. ``None`` (the default) and ``{}`` are
    different results: the history records ``None`` when no updates were
    given.

    ``Ok`` values compare by value and are unhashable (they hold dicts).

    Args:
        event: The event the step emits; a non-empty ``str``. A ``str`` enum
            member is stored as its plain value.
        context_updates: Data for ``context.steps[step_key]``; a mapping with
            ``str`` keys, or ``None``.
        metadata: Updates for ``runtime_metadata``; a mapping with ``str``
            keys, or ``None``.

    Raises:
        TypeError: ``event`` is not a ``str``, or an update is not a mapping
            with ``str`` keys.
        ValueError: ``event`` is empty.
    """

    event: str
    context_updates: dict[str, Any] | None
    metadata: dict[str, Any] | None

    # Holds dicts, so no hash (an explicit None keeps dataclass from adding one).
    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self,
        event: str,
        context_updates: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        object.__setattr__(self, "event", _event_name(event, "Ok"))
        object.__setattr__(
            self, "context_updates", _plain_dict(context_updates, "Ok", "context_updates")
        )
        object.__setattr__(self, "metadata", _plain_dict(metadata, "Ok", "metadata"))

    def __repr__(self) -> str:
        parts = [repr(self.event)]
        if self.context_updates is not None:
            parts.append(f"context_updates={self.context_updates!r}")
        if self.metadata is not None:
            parts.append(f"metadata={self.metadata!r}")
        return f"Ok({', '.join(parts)})"


@sealed
@dataclasses.dataclass(frozen=True, slots=True)
class Async:
    """A step started something and waits for an event or a timer.

    The runtime marks the step as waiting; it completes when the instance is
    resumed with one of the step's events. Every ``Async()`` equals every other.
    """


@sealed
@dataclasses.dataclass(frozen=True, slots=True)
class Error:
    """A step failed; the instance fails with ``reason``.

    ``reason`` may be anything (a message, a dict, an exception) and is kept
    as given, not copied. ``Error`` values compare by value and hash like
    their reason (so ``hash()`` fails when the reason is unhashable).

    Args:
        reason: Why the step failed.
    """

    reason: Any


StepResult: TypeAlias = Ok | Async | Error
"""A normalized step result."""

StepReturn: TypeAlias = Ok | Async | Error | str
"""What ``execute`` may return (or, for ``async def``, resolve to)."""


def normalize_result(value: object, *, step: type) -> StepResult:
    """Turns what ``step``'s ``execute`` returned into an ``Ok``, ``Async`` or ``Error``.

    A bare ``str`` means ``Ok(value)``; ``Ok``, ``Async`` and ``Error`` pass
    through unchanged. Whether the event is one the step declares is checked
    when the result is applied, not here.

    Args:
        value: The return value of ``execute`` (already awaited for an
            ``async def`` step).
        step: The step class, for error messages.

    Returns:
        The normalized result.

    Raises:
        TypeError: ``value`` is of any other type; the message names the step
            and the type, e.g. ``ValidateOrder.execute returned int; expected
            Ok, Async, Error or an event str``.
        ValueError: ``value`` is an empty ``str``.
    """
    if isinstance(value, (Ok, Async, Error)):
        return value
    name = step.__qualname__
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{name}.execute returned an empty event str")
        return Ok(value)
    hint = " (an async def execute must be awaited)" if inspect.isawaitable(value) else ""
    raise TypeError(
        f"{name}.execute returned {type(value).__name__}; "
        f"expected Ok, Async, Error or an event str{hint}"
    )


# -- retry policy -------------------------------------------------------------

# Spelled as a union of Literals: stubtest expects a runtime Union for an
# alias that mypy sees as one, and Literal["a", "b"] is not one at runtime.
Backoff: TypeAlias = Literal["constant"] | Literal["linear"] | Literal["exponential"]
"""How the delay between retries grows."""

_BACKOFFS = ("constant", "linear", "exponential")


def _positive_delay(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Retry.{field} must be an int or float, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"Retry.{field} must be a positive finite number, got {value!r}")
    return number


@sealed
@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """A step's retry policy: how often and how soon the runtime re-runs a
    step whose ``execute`` raised.

    Set it as a class attribute of a step: ``retry = Retry(max_attempts=5)``.
    This class only declares the policy; the runtime applies it.

    Args:
        max_attempts: How many times the step runs at most, the first run
            included (``1`` means no retries); an ``int`` >= 1.
        backoff: How the delay grows between retries: ``"constant"``
            (``base_delay`` each time), ``"linear"`` (``base_delay * n``) or
            ``"exponential"`` (``base_delay * 2 ** (n - 1)``), for retry ``n``.
        base_delay: The first delay in seconds; positive and finite.
        max_backoff: The longest delay in seconds; finite and at least
            ``base_delay``.

    Raises:
        TypeError: A field has the wrong type (``bool`` is not a number here).
        ValueError: A field is out of range; the message names the field.
    """

    max_attempts: int = 3
    backoff: Backoff = "exponential"
    base_delay: float = 1.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        attempts: object = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"Retry.max_attempts must be an int, got {type(attempts).__name__}")
        if attempts < 1:
            raise ValueError(f"Retry.max_attempts must be >= 1, got {attempts}")
        backoff: object = self.backoff
        if not isinstance(backoff, str):
            raise TypeError(f"Retry.backoff must be a str, got {type(backoff).__name__}")
        if backoff not in _BACKOFFS:
            raise ValueError(
                f"Retry.backoff must be one of {', '.join(map(repr, _BACKOFFS))}, got {backoff!r}"
            )
        base = _positive_delay(self.base_delay, "base_delay")
        cap = _positive_delay(self.max_backoff, "max_backoff")
        if cap < base:
            raise ValueError(f"Retry.max_backoff must be >= base_delay ({base!r}), got {cap!r}")
        object.__setattr__(self, "base_delay", base)
        object.__setattr__(self, "max_backoff", cap)

    def delay(self, attempt: int) -> float:
        """The delay in seconds before retry number ``attempt``.

        Args:
            attempt: 1 for the first retry (the second run), 2 for the next,
                and so on. Numbers beyond ``max_attempts - 1`` are allowed.

        Returns:
            The delay for the policy's backoff, capped at ``max_backoff``.

        Raises:
            TypeError: ``attempt`` is not an ``int``.
            ValueError: ``attempt`` is less than 1.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int):
            raise TypeError(f"attempt must be an int, got {type(attempt).__name__}")
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        try:
            if self.backoff == "constant":
                delay = self.base_delay
            elif self.backoff == "linear":
                delay = self.base_delay * attempt
            else:
                delay = math.ldexp(self.base_delay, attempt - 1)
        except OverflowError:
            # Far beyond any cap.
            return self.max_backoff
        return min(delay, self.max_backoff)


# -- the step base class --------------------------------------------------------


def _check_events(cls: type, events: object) -> tuple[str, ...]:
    name = cls.__qualname__
    if isinstance(events, list):
        events = tuple(events)
    if not isinstance(events, tuple):
        raise TypeError(f"{name}.events must be a tuple of str, got {type(events).__name__}")
    seen: set[str] = set()
    for event in events:
        if not isinstance(event, str):
            raise TypeError(f"{name}.events must hold str, got {type(event).__name__} {event!r}")
        if not event:
            raise ValueError(f"{name}.events must not contain an empty str")
        if event in seen:
            raise ValueError(f"{name}.events declares {event!r} more than once")
        seen.add(event)
    return tuple(str.__str__(event) for event in events)


def _check_execute(cls: type) -> None:
    name = cls.__qualname__
    execute = cls.__dict__["execute"]
    if isinstance(execute, (staticmethod, classmethod)):
        raise TypeError(
            f"{name}.execute must be a plain method execute(self, instance, config, context), "
            f"not a {type(execute).__name__}"
        )
    if not callable(execute):
        raise TypeError(f"{name}.execute must be a method, got {type(execute).__name__}")
    try:
        signature = inspect.signature(execute)
    except (TypeError, ValueError):  # no signature to check (some builtins)
        return
    try:
        signature.bind(None, None, None, None)
    except TypeError:
        raise TypeError(
            f"{name}.execute{signature} must take (self, instance, config, context) "
            "positionally; any further parameters need defaults"
        ) from None


class Step:
    """The base class of workflow steps.

    Subclasses declare their events and define ``execute``; the runtime makes
    a fresh instance of the class for every run and calls
    ``execute(instance, config, context)`` positionally.

    Class attributes:
        events: The events ``execute`` may emit: unique, non-empty ``str``s
            (a list is turned into a tuple).
        step_key: The key of the step's results in ``context.steps``; ``None``
            (the default) derives it from the class name
            (``ValidateOrder`` -> ``validate_order``, see
            :func:`hephaestus.step_key`).
        retry: A :class:`Retry` policy, or ``None`` for no retries.
        timeout: Seconds one attempt may take under the runtime, or ``None``
            (the default) for no limit. An attempt that runs longer fails
            (an ``async`` step is cancelled; a ``def`` step's late result is
            discarded) and the retry policy applies.
        join: When a step with several predecessors becomes active:
            ``"all"`` (the default; the join rule of ``hephaestus.engine``)
            or ``"first"``: as soon as the first predecessor's transition
            reaches it, and the other branches into it are withdrawn (steps
            not started never run, waiting ones stop waiting, running ones'
            results are discarded). A first-wins join needs at least two
            predecessors.

    The attributes and the signature of ``execute`` are checked when a
    subclass is created; a violation raises ``TypeError`` (wrong type or
    signature) or ``ValueError`` (wrong value) naming the class.
    """

    events: ClassVar[tuple[str, ...]] = ()
    step_key: ClassVar[str | None] = None
    retry: ClassVar[Retry | None] = None
    timeout: ClassVar[float | None] = None
    join: ClassVar[Literal["all", "first"]] = "all"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__qualname__
        cls.events = _check_events(cls, cls.events)
        key: object = cls.step_key
        if key is not None:
            if not isinstance(key, str):
                raise TypeError(f"{name}.step_key must be a str or None, got {type(key).__name__}")
            if not key:
                raise ValueError(f"{name}.step_key must not be empty")
        retry: object = cls.retry
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"{name}.retry must be a Retry or None, got {type(retry).__name__}")
        timeout: object = cls.timeout
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"{name}.timeout must be a number of seconds or None, "
                    f"got {type(timeout).__name__}"
                )
            if not math.isfinite(timeout) or timeout <= 0:
                raise ValueError(
                    f"{name}.timeout must be a positive number of seconds, got {timeout!r}"
                )
            cls.timeout = float(timeout)
        join: object = cls.join
        if not isinstance(join, str):
            raise TypeError(f"{name}.join must be 'all' or 'first', got {type(join).__name__}")
        if join not in ("all", "first"):
            raise ValueError(f"{name}.join must be 'all' or 'first', got {join!r}")
        if "execute" in cls.__dict__:
            _check_execute(cls)

    def execute(
        self, instance: Instance, config: Any, context: Context
    ) -> StepReturn | Awaitable[StepReturn]:
        """Runs the step.

        Args:
            instance: The instance, as it is when the step starts.
            config: The step's config from the workflow's transitions, or
                ``None``.
            context: The instance's context (``instance.context``): the
                initial data and the results of completed steps.

        Returns:
            ``Ok``, an event ``str``, ``Async`` or ``Error`` (or, for an
            ``async def`` execute, an awaitable of one).

        Raises:
            NotImplementedError: Always, in the base class.
        """
        raise NotImplementedError(
            f"{type(self).__qualname__} must define execute(self, instance, config, context)"
        )


def is_step_class(obj: object) -> TypeGuard[type[Step]]:
    """Whether ``obj`` is a subclass of :class:`Step` (``Step`` itself is not)."""
    return isinstance(obj, type) and issubclass(obj, Step) and obj is not Step


# -- built-in steps -------------------------------------------------------------


class Done(Step):
    """The end of a path: every leaf of a workflow must be ``Done``."""

    events = ("done",)

    def execute(self, instance: Instance, config: Any, context: Context) -> str:
        """Emits ``"done"``."""
        return "done"


class Terminate(Step):
    """Ends the whole workflow early: a leaf like :class:`Done`, accepted
    wherever ``Done`` is. When a transition activates it, it runs, the
    instance completes, and every other active, waiting or reached step is
    withdrawn (it ends in ``skipped_steps`` and never runs). A branch that
    ends in ``Terminate`` need not join the others."""

    events = ("done",)

    def execute(self, instance: Instance, config: Any, context: Context) -> str:
        """Emits ``"done"``."""
        return "done"


_UNITS: dict[str, datetime.timedelta] = {
    "second": datetime.timedelta(seconds=1),
    "minute": datetime.timedelta(minutes=1),
    "hour": datetime.timedelta(hours=1),
    "day": datetime.timedelta(days=1),
}


def wait_duration(config: Mapping[str, Any]) -> datetime.timedelta:
    """How long a :class:`Wait` step with ``config`` waits.

    Args:
        config: ``{"duration": int, "unit": "second" | "minute" | "hour" |
            "day"}``; both keys are required, other keys are ignored.

    Returns:
        The duration.

    Raises:
        TypeError: ``config`` is not a mapping, ``duration`` is not an ``int``
            (``bool`` is not accepted) or ``unit`` is not a ``str``.
        ValueError: A key is missing, ``duration`` is not positive or
            ``unit`` is not one of the four.
        OverflowError: The duration is beyond what ``timedelta`` holds.
    """
    if not isinstance(config, Mapping):
        raise TypeError(
            'Wait config must be a mapping like {"duration": 5, "unit": "minute"}, '
            f"got {type(config).__name__}"
        )
    for key in ("duration", "unit"):
        if key not in config:
            raise ValueError(f"Wait config is missing {key!r}")
    duration, unit = config["duration"], config["unit"]
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise TypeError(f"Wait duration must be an int, got {type(duration).__name__}")
    if duration <= 0:
        raise ValueError(f"Wait duration must be > 0, got {duration}")
    if not isinstance(unit, str):
        raise TypeError(f"Wait unit must be a str, got {type(unit).__name__}")
    if unit not in _UNITS:
        raise ValueError(f"Wait unit must be one of {', '.join(map(repr, _UNITS))}, got {unit!r}")
    try:
        return duration * _UNITS[unit]
    except OverflowError:
        raise OverflowError(f"Wait duration {duration} {unit} is too long") from None


class Wait(Step):
    """Waits for a timer: ``{"duration": int, "unit": "second" | "minute" |
    "hour" | "day"}`` (see :func:`wait_duration`), then emits ``"timeout"``.

    ``execute`` checks the config and returns ``Async()``; the timer itself
    is the runtime's job, and it resumes the step with ``"timeout"``. To use
    two waits in one workflow, subclass ``Wait`` once per use, so each has
    its own step key.
    """

    events = ("timeout",)

    def execute(self, instance: Instance, config: Any, context: Context) -> Async:
        """Checks the config and waits.

        Raises:
            TypeError: See :func:`wait_duration`.
            ValueError: See :func:`wait_duration`.
        """
        wait_duration(config)
        return Async()


class WaitForEvent(Step):
    """Waits until the instance is resumed with ``"received"``."""

    events = ("received",)

    def execute(self, instance: Instance, config: Any, context: Context) -> Async:
        """Waits."""
        return Async()


_debug_logger = logging.getLogger("hephaestus.debug")


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class Debug(Step):
    """Logs the context and the execution history, then emits ``"done"``.

    One ``INFO`` record on the ``hephaestus.debug`` logger, for example::

        Debug orderid::abc (app:OrderFlow v1, running)
          initial: {'items': [1, 2]}
          steps: {'validate_order': {'item_count': 2}}
          history:
            2024-05-17T12:30:45+00:00 app:ValidateOrder -> valid {'item_count': 2}

    Put it anywhere in a workflow to look at the state while developing.
    """

    events = ("done",)

    def execute(self, instance: Instance, config: Any, context: Context) -> str:
        """Logs and emits ``"done"``."""
        if _debug_logger.isEnabledFor(logging.INFO):
            lines = [
                f"Debug {instance.id} ({_class_name(instance.workflow)} "
                f"v{instance.workflow_version}, {instance.status.value})",
                f"  initial: {context.initial!r}",
                f"  steps: {context.steps!r}",
            ]
            history = instance.execution_history
            if not history:
                lines.append("  history: (empty)")
            else:
                lines.append("  history:")
                for entry in history:
                    line = (
                        f"    {entry.timestamp.isoformat()} {_class_name(entry.step_ref)}"
                        f" -> {entry.event}"
                    )
                    if entry.context_updates is not None:
                        line += f" {entry.context_updates!r}"
                    lines.append(line)
            _debug_logger.info("%s", "\n".join(lines))
        return "done"
