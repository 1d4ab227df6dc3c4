"""Finishing touches for the frozen, slotted dataclasses of the public API."""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn, TypeVar

__all__ = ["sealed"]

_T = TypeVar("_T")


def sealed(cls: type[_T]) -> type[_T]:
    """Finishes a ``@dataclass(frozen=True, slots=True)`` class.

    ``slots=True`` builds a new class, and the frozen ``__setattr__`` that
    dataclasses generated still refers to the old one, so assigning an
    attribute that is not a field raises a puzzling ``TypeError`` about
    ``super()`` instead of ``FrozenInstanceError``; and not every supported
    Python unpickles frozen slotted instances. This replaces ``__setattr__``
    and ``__delattr__`` with ones that always raise ``FrozenInstanceError``,
    and adds a ``__reduce__`` that rebuilds the value from its fields (in
    order, positionally).
    """
    name = cls.__name__

    def __setattr__(self: object, attr: str, value: object) -> NoReturn:
        raise dataclasses.FrozenInstanceError(f"{name} is immutable: cannot assign to {attr!r}")

    def __delattr__(self: object, attr: str) -> NoReturn:
        raise dataclasses.FrozenInstanceError(f"{name} is immutable: cannot delete {attr!r}")

    def __reduce__(self: Any) -> tuple[Any, ...]:
        fields = dataclasses.fields(self)
        return (type(self), tuple(getattr(self, field.name) for field in fields))

    for method in (__setattr__, __delattr__, __reduce__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)
    return cls
