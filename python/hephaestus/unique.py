"""Business keys: how a workflow's instance ids are made and kept unique."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal, TypeAlias

from hephaestus._frozen import sealed

__all__ = ["Scope", "Unique"]

# Spelled as a union of Literals: stubtest expects a runtime Union for an
# alias that mypy sees as one, and Literal["a", "b"] is not one at runtime.
Scope: TypeAlias = Literal["workflow"] | Literal["version"] | Literal["global"] | Literal["none"]
"""Where a business key must be unique; see :class:`Unique`."""

_SCOPES = ("workflow", "version", "global", "none")
_KEY = re.compile(r"[a-z0-9]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SEPARATOR = "::"
#: The random suffix of a scope "none" id: 8 lowercase hex digits.
_SUFFIX = re.compile(r"[0-9a-f]{8}")
_VALUE_RULE = (
    "must match [a-z0-9]+ (lowercase letters and digits) or be a UUID in its "
    "36-character hyphenated form"
)


def _check_value(value: object) -> str:
    """``value`` as it appears in an id: ``[a-z0-9]+``, or a lowercased UUID."""
    if not isinstance(value, str):
        raise TypeError(f"unique id value must be a str, got {type(value).__name__}")
    if _KEY.fullmatch(value):
        return value
    if _UUID.fullmatch(value):
        return value.lower()
    raise ValueError(f"invalid unique id value {value!r}: {_VALUE_RULE}")


@sealed
@dataclasses.dataclass(frozen=True, slots=True)
class Unique:
    """A workflow's business key: instance ids are ``"key::value"``.

    Every workflow declares one, e.g. ``Unique("orderid")``: an order workflow
    started for business value ``"abc123"`` gets the id ``"orderid::abc123"``.
    While an instance with that id is pending, running or waiting, starting
    another one with the same id raises ``AlreadyRunningError``, within the
    scope:

    - ``"workflow"`` (the default): one live instance per id and workflow;
    - ``"version"``: one per id and workflow version, so a new version of the
      workflow may run next to an old one for the same value;
    - ``"global"``: one per id across all workflows;
    - ``"none"``: no uniqueness check.

    ``Unique`` values are immutable, compare by value and are hashable.

    Args:
        key: The id prefix; lowercase ASCII letters and digits (``[a-z0-9]+``).
        scope: One of ``"workflow"``, ``"version"``, ``"global"``, ``"none"``.

    Raises:
        TypeError: ``key`` or ``scope`` is not a ``str``.
        ValueError: ``key`` does not match ``[a-z0-9]+`` or ``scope`` is not
            one of the four; the message names the bad value.
    """

    key: str
    scope: Scope = "workflow"

    def __post_init__(self) -> None:
        key: object = self.key
        if not isinstance(key, str):
            raise TypeError(f"Unique key must be a str, got {type(key).__name__}")
        if not _KEY.fullmatch(key):
            raise ValueError(
                f"Unique key {key!r} must match [a-z0-9]+ (lowercase letters and digits only)"
            )
        scope: object = self.scope
        if not isinstance(scope, str):
            raise TypeError(f"Unique scope must be a str, got {type(scope).__name__}")
        if scope not in _SCOPES:
            raise ValueError(
                f"Unique scope must be one of {', '.join(map(repr, _SCOPES))}, got {scope!r}"
            )

    def build_id(self, value: str) -> str:
        """The instance id for business value ``value``: ``"key::value"``.

        Args:
            value: ``[a-z0-9]+``, or a UUID in its canonical 36-character
                hyphenated form. A UUID is lowercased, so that one UUID always
                gives one id.

        Returns:
            The instance id.

        Raises:
            TypeError: ``value`` is not a ``str``.
            ValueError: ``value`` is neither form.
        """
        return f"{self.key}{_SEPARATOR}{_check_value(value)}"

    def parse_id(self, instance_id: str) -> str:
        """The business value of an id that :meth:`build_id` made: the inverse.

        With scope ``"none"`` it also accepts the suffixed ids that the
        runtime facade makes: ``"key::value::1a2b3c4d"`` (8 lowercase hex
        digits) gives ``"value"``. Other scopes never make such ids, so they
        refuse them.

        Args:
            instance_id: An id ``"key::value"`` with this key (or
                ``"key::value::suffix"`` with scope ``"none"``).

        Returns:
            The value part.

        Raises:
            TypeError: ``instance_id`` is not a ``str``.
            ValueError: The id does not start with ``"key::"`` for this key,
                or its value is not one that ``build_id`` makes (``[a-z0-9]+``
                or a lowercase UUID).
        """
        if not isinstance(instance_id, str):
            raise TypeError(f"instance id must be a str, got {type(instance_id).__name__}")
        prefix = f"{self.key}{_SEPARATOR}"
        if not instance_id.startswith(prefix):
            raise ValueError(f"instance id {instance_id!r} does not start with {prefix!r}")
        value = instance_id[len(prefix) :]
        head, separator, suffix = value.rpartition(_SEPARATOR)
        if self.scope == "none" and separator and _SUFFIX.fullmatch(suffix):
            value = head
        try:
            canonical = _check_value(value)
        except ValueError:
            raise ValueError(f"instance id {instance_id!r}: the value {_VALUE_RULE}") from None
        if canonical != value:
            raise ValueError(
                f"instance id {instance_id!r}: the UUID must be lowercase, as build_id makes it"
            )
        return value
