#!/usr/bin/env python3
"""Side-by-side benchmark of ``hephaestus.Instance`` against pure-Python implementations.

One run measures the same step bookkeeping done four ways:

* ``hephaestus``: ``hephaestus.Instance``, the Rust core;
* ``frozen``: an idiomatic immutable pure-Python version, a frozen dataclass holding
  frozensets, dicts and a tuple history, updated with ``dataclasses.replace``;
* ``pyrsistent``: the same on pyrsistent's ``pmap``, ``pset`` and ``pvector``;
* ``mutable``: plain objects with sets, dicts and a list updated in place, the floor for
  pure Python.

It reports nanoseconds per operation, the cost of ``complete_step`` as the execution
history grows, and the resident memory of many instances, checks the targets of the
issue, and with ``--write`` stores a Markdown section in ``BENCHMARKS.md``.
``benchmarks/README.md`` explains each number. Run ``python benchmarks/bench_instance.py
--help`` for the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import importlib
import importlib.metadata
import json
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import hephaestus
from pyrsistent import PMap, PSet, PVector, freeze, pmap, pset, pvector, thaw
from report import add_common_arguments, factor, header, progress, publish, table

ALL_IMPLS = ("hephaestus", "frozen", "pyrsistent", "mutable")
MEMORY_WORKERS = 2

# --------------------------------------------------------------------------------------
# The workflow, the steps and the data every implementation is fed
# --------------------------------------------------------------------------------------


STEP_POOL = 1024
STEPS: tuple[type, ...] = tuple(
    type(f"Step{i}", (hephaestus.Step,), {"__module__": __name__, "events": ("done",)})
    for i in range(STEP_POOL)
)


class BenchFlow(hephaestus.Workflow, unique=hephaestus.Unique("bench")):
    """The workflow class of every benchmarked instance (the bookkeeping
    benchmarked here does not follow its graph)."""

    start = STEPS[0]
    transitions = {STEPS[0]: {"done": hephaestus.Done}}


# Module globals, so that ``module:QualName`` references (JSON) and pickle resolve them.
globals().update({step.__name__: step for step in STEPS})

CONTEXT = {
    "order_id": "order-1",
    "customer_id": 42,
    "currency": "EUR",
    "total": 99.5,
    "express": False,
}
CONFIG = {"timeout": 30}
RESULT = {"n": 7, "ok": True, "label": "done"}
METADATA = {"attempt": 1, "worker": "w1"}
EVENT = "done"
TIMESTAMP = datetime(2024, 5, 17, 12, 0, 0, 123456, tzinfo=timezone.utc)
TERMINAL = frozenset({"completed", "failed"})


class InvalidTransitionError(ValueError):
    """A step-set change that the bookkeeping does not allow (pure-Python versions)."""


_UNDERSCORE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@functools.cache
def step_key(step: type) -> str:
    """Return a step's context key: its class name in snake_case (``Step3`` -> ``step3``)."""
    return _UNDERSCORE.sub("_", step.__name__).lower()


@functools.cache
def class_ref(cls: type) -> str:
    """Return the ``module:QualName`` reference that the JSON form stores for a class."""
    return f"{cls.__module__}:{cls.__qualname__}"


@functools.cache
def resolve_class(ref: str) -> type:
    """Import the class named by a ``module:QualName`` reference."""
    module, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def check_new(workflow: type, version: int, context: Mapping[str, Any], instance_id: str) -> None:
    """Validate the arguments of ``new`` the way the contract asks (pure-Python versions)."""
    if not isinstance(workflow, type):
        raise TypeError(f"workflow must be a class, not {type(workflow).__name__}")
    if type(version) is not int:
        raise TypeError(f"version must be an int, not {type(version).__name__}")
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    if not isinstance(context, Mapping):
        raise TypeError(f"context must be a mapping, not {type(context).__name__}")
    if not isinstance(instance_id, str):
        raise TypeError(f"id must be a str, not {type(instance_id).__name__}")
    if not instance_id:
        raise ValueError("id must not be empty")


# --------------------------------------------------------------------------------------
# Baseline 1: idiomatic frozen dataclasses
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One execution-history entry of the frozen and the pyrsistent versions."""

    step_ref: type
    event: str
    timestamp: datetime
    context_updates: Any = None


def entry_to_dict(entry: Entry | MutableEntry) -> dict[str, Any]:
    """Return the JSON-ready form of a frozen or mutable history entry."""
    return {
        "step_ref": class_ref(entry.step_ref),
        "event": entry.event,
        "timestamp": entry.timestamp.isoformat(),
        "context_updates": entry.context_updates,
    }


def entry_args(data: Mapping[str, Any]) -> tuple[type, str, datetime, Any]:
    """Return the constructor arguments of an entry from ``entry_to_dict`` output."""
    return (
        resolve_class(data["step_ref"]),
        data["event"],
        datetime.fromisoformat(data["timestamp"]),
        data["context_updates"],
    )


@dataclass(frozen=True, slots=True)
class FrozenContext:
    """The initial context and the step results of a ``FrozenInstance``."""

    initial: dict[str, Any]
    steps: dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class FrozenInstance:
    """Immutable instance: every change returns a ``dataclasses.replace`` copy."""

    id: str
    workflow: type
    workflow_version: int
    status: str
    context: FrozenContext
    step_configs: dict[type, Any]
    active_steps: frozenset[type]
    completed_steps: frozenset[type]
    runtime_metadata: dict[str, Any]
    execution_history: tuple[Entry, ...]

    @classmethod
    def new(
        cls, workflow: type, version: int, context: Mapping[str, Any], instance_id: str
    ) -> FrozenInstance:
        """Create a pending instance with an empty bookkeeping."""
        check_new(workflow, version, context, instance_id)
        return cls(
            instance_id,
            workflow,
            version,
            "pending",
            FrozenContext(dict(context), {}),
            {},
            frozenset(),
            frozenset(),
            {},
            (),
        )

    def activate_step(self, step: type, config: Any = None) -> FrozenInstance:
        """Return a copy with ``step`` active and its config stored."""
        if step in self.completed_steps:
            raise InvalidTransitionError(f"{step.__name__} is already completed")
        if self.status in TERMINAL:
            raise InvalidTransitionError(f"instance is {self.status}")
        configs = self.step_configs if config is None else {**self.step_configs, step: config}
        return dataclasses.replace(
            self, active_steps=self.active_steps | {step}, step_configs=configs
        )

    def complete_step(
        self,
        step: type,
        event: str,
        context_updates: Mapping[str, Any] | None = None,
        metadata_updates: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | None = None,
    ) -> FrozenInstance:
        """Return a copy with ``step`` completed, its result stored and history appended."""
        if step not in self.active_steps:
            raise InvalidTransitionError(f"{step.__name__} is not active")
        updates = None if context_updates is None else dict(context_updates)
        configs = self.step_configs
        if step in configs:
            configs = dict(configs)
            del configs[step]
        metadata = self.runtime_metadata
        if metadata_updates:
            metadata = {**metadata, **metadata_updates}
        entry = Entry(step, event, timestamp or datetime.now(timezone.utc), updates)
        return dataclasses.replace(
            self,
            active_steps=self.active_steps - {step},
            completed_steps=self.completed_steps | {step},
            context=FrozenContext(
                self.context.initial, {**self.context.steps, step_key(step): updates or {}}
            ),
            runtime_metadata=metadata,
            step_configs=configs,
            # `+` copies the tuple with one memcpy; `(*history, entry)` is about 4x slower.
            execution_history=self.execution_history + (entry,),  # noqa: RUF005
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form."""
        return plain_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrozenInstance:
        """Rebuild an instance from ``to_dict`` output."""
        context = data["context"]
        return cls(
            data["id"],
            resolve_class(data["workflow"]),
            data["workflow_version"],
            data["status"],
            FrozenContext(context["initial"], context["steps"]),
            {resolve_class(ref): config for ref, config in data["step_configs"].items()},
            frozenset(map(resolve_class, data["active_steps"])),
            frozenset(map(resolve_class, data["completed_steps"])),
            data["runtime_metadata"],
            tuple(Entry(*entry_args(entry)) for entry in data["execution_history"]),
        )


def plain_to_dict(inst: FrozenInstance | MutableInstance) -> dict[str, Any]:
    """Return the JSON-ready form of a frozen or mutable instance (plain dict values)."""
    return {
        "format": 1,
        "id": inst.id,
        "workflow": class_ref(inst.workflow),
        "workflow_version": inst.workflow_version,
        "status": inst.status,
        "context": {"initial": inst.context.initial, "steps": inst.context.steps},
        "step_configs": {class_ref(step): config for step, config in inst.step_configs.items()},
        "active_steps": [class_ref(step) for step in inst.active_steps],
        "completed_steps": [class_ref(step) for step in inst.completed_steps],
        "runtime_metadata": inst.runtime_metadata,
        "execution_history": [entry_to_dict(entry) for entry in inst.execution_history],
    }


# --------------------------------------------------------------------------------------
# Baseline 2: pyrsistent
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PContext:
    """The initial context and the step results of a ``PyrsistentInstance`` (pmaps)."""

    initial: PMap
    steps: PMap


@dataclass(frozen=True, slots=True)
class PyrsistentInstance:
    """Immutable instance on pyrsistent's persistent maps, sets and vectors.

    Values (context, results, configs, metadata) are frozen deeply with ``freeze``; history
    entries are ``Entry`` records whose ``context_updates`` is a pmap. The record itself is a
    frozen dataclass: pyrsistent's ``PRecord`` checks every field in Python and costs about
    ten times more per update, which would make this column measure ``PRecord`` alone.
    """

    id: str
    workflow: type
    workflow_version: int
    status: str
    context: PContext
    step_configs: PMap
    active_steps: PSet
    completed_steps: PSet
    runtime_metadata: PMap
    execution_history: PVector

    @classmethod
    def new(
        cls, workflow: type, version: int, context: Mapping[str, Any], instance_id: str
    ) -> PyrsistentInstance:
        """Create a pending instance with an empty bookkeeping."""
        check_new(workflow, version, context, instance_id)
        return cls(
            instance_id,
            workflow,
            version,
            "pending",
            PContext(freeze(dict(context)), pmap()),
            pmap(),
            pset(),
            pset(),
            pmap(),
            pvector(),
        )

    def activate_step(self, step: type, config: Any = None) -> PyrsistentInstance:
        """Return a new version with ``step`` active and its config stored."""
        if step in self.completed_steps:
            raise InvalidTransitionError(f"{step.__name__} is already completed")
        if self.status in TERMINAL:
            raise InvalidTransitionError(f"instance is {self.status}")
        configs = self.step_configs
        if config is not None:
            configs = configs.set(step, freeze(config))
        return dataclasses.replace(
            self, active_steps=self.active_steps.add(step), step_configs=configs
        )

    def complete_step(
        self,
        step: type,
        event: str,
        context_updates: Mapping[str, Any] | None = None,
        metadata_updates: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | None = None,
    ) -> PyrsistentInstance:
        """Return a new version with ``step`` completed, its result stored, history appended."""
        if step not in self.active_steps:
            raise InvalidTransitionError(f"{step.__name__} is not active")
        updates = None if context_updates is None else freeze(context_updates)
        metadata = self.runtime_metadata
        if metadata_updates:
            metadata = metadata.update(freeze(metadata_updates))
        entry = Entry(step, event, timestamp or datetime.now(timezone.utc), updates)
        context = self.context
        return dataclasses.replace(
            self,
            active_steps=self.active_steps.remove(step),
            completed_steps=self.completed_steps.add(step),
            context=PContext(context.initial, context.steps.set(step_key(step), updates or pmap())),
            runtime_metadata=metadata,
            step_configs=self.step_configs.discard(step),
            execution_history=self.execution_history.append(entry),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form."""
        return {
            "format": 1,
            "id": self.id,
            "workflow": class_ref(self.workflow),
            "workflow_version": self.workflow_version,
            "status": self.status,
            "context": {"initial": thaw(self.context.initial), "steps": thaw(self.context.steps)},
            "step_configs": {
                class_ref(step): thaw(config) for step, config in self.step_configs.items()
            },
            "active_steps": [class_ref(step) for step in self.active_steps],
            "completed_steps": [class_ref(step) for step in self.completed_steps],
            "runtime_metadata": thaw(self.runtime_metadata),
            "execution_history": [
                {
                    "step_ref": class_ref(entry.step_ref),
                    "event": entry.event,
                    "timestamp": entry.timestamp.isoformat(),
                    "context_updates": thaw(entry.context_updates),
                }
                for entry in self.execution_history
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PyrsistentInstance:
        """Rebuild an instance from ``to_dict`` output."""
        context = data["context"]
        return cls(
            data["id"],
            resolve_class(data["workflow"]),
            data["workflow_version"],
            data["status"],
            PContext(freeze(context["initial"]), freeze(context["steps"])),
            pmap(
                {resolve_class(ref): freeze(config) for ref, config in data["step_configs"].items()}
            ),
            pset(map(resolve_class, data["active_steps"])),
            pset(map(resolve_class, data["completed_steps"])),
            freeze(data["runtime_metadata"]),
            pvector(
                Entry(
                    resolve_class(entry["step_ref"]),
                    entry["event"],
                    datetime.fromisoformat(entry["timestamp"]),
                    freeze(entry["context_updates"]),
                )
                for entry in data["execution_history"]
            ),
        )


# --------------------------------------------------------------------------------------
# Baseline 3: mutable objects updated in place
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class MutableEntry:
    """One execution-history entry of the mutable version (a plain slotted dataclass)."""

    step_ref: type
    event: str
    timestamp: datetime
    context_updates: dict[str, Any] | None = None


class MutableContext:
    """The initial context and the step results of a ``MutableInstance``."""

    __slots__ = ("initial", "steps")

    def __init__(self, initial: dict[str, Any], steps: dict[str, dict[str, Any]]) -> None:
        """Hold the two dicts."""
        self.initial = initial
        self.steps = steps


class MutableInstance:
    """Mutable instance: every change updates it in place and returns it."""

    __slots__ = (
        "active_steps",
        "completed_steps",
        "context",
        "execution_history",
        "id",
        "runtime_metadata",
        "status",
        "step_configs",
        "workflow",
        "workflow_version",
    )

    def __init__(
        self,
        instance_id: str,
        workflow: type,
        version: int,
        status: str,
        context: MutableContext,
        step_configs: dict[type, Any],
        active_steps: set[type],
        completed_steps: set[type],
        runtime_metadata: dict[str, Any],
        execution_history: list[MutableEntry],
    ) -> None:
        """Hold every field as given."""
        self.id = instance_id
        self.workflow = workflow
        self.workflow_version = version
        self.status = status
        self.context = context
        self.step_configs = step_configs
        self.active_steps = active_steps
        self.completed_steps = completed_steps
        self.runtime_metadata = runtime_metadata
        self.execution_history = execution_history

    @classmethod
    def new(
        cls, workflow: type, version: int, context: Mapping[str, Any], instance_id: str
    ) -> MutableInstance:
        """Create a pending instance with an empty bookkeeping."""
        check_new(workflow, version, context, instance_id)
        return cls(
            instance_id,
            workflow,
            version,
            "pending",
            MutableContext(dict(context), {}),
            {},
            set(),
            set(),
            {},
            [],
        )

    def activate_step(self, step: type, config: Any = None) -> MutableInstance:
        """Make ``step`` active and store its config; return ``self``."""
        if step in self.completed_steps:
            raise InvalidTransitionError(f"{step.__name__} is already completed")
        if self.status in TERMINAL:
            raise InvalidTransitionError(f"instance is {self.status}")
        self.active_steps.add(step)
        if config is not None:
            self.step_configs[step] = config
        return self

    def complete_step(
        self,
        step: type,
        event: str,
        context_updates: Mapping[str, Any] | None = None,
        metadata_updates: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | None = None,
    ) -> MutableInstance:
        """Complete ``step``, store its result, append to the history; return ``self``."""
        if step not in self.active_steps:
            raise InvalidTransitionError(f"{step.__name__} is not active")
        updates = None if context_updates is None else dict(context_updates)
        self.active_steps.remove(step)
        self.completed_steps.add(step)
        self.context.steps[step_key(step)] = updates or {}
        if metadata_updates:
            self.runtime_metadata.update(metadata_updates)
        self.step_configs.pop(step, None)
        self.execution_history.append(
            MutableEntry(step, event, timestamp or datetime.now(timezone.utc), updates)
        )
        return self

    def copy(self) -> MutableInstance:
        """Return an independent copy (fresh containers, shared values)."""
        return MutableInstance(
            self.id,
            self.workflow,
            self.workflow_version,
            self.status,
            MutableContext(dict(self.context.initial), dict(self.context.steps)),
            dict(self.step_configs),
            set(self.active_steps),
            set(self.completed_steps),
            dict(self.runtime_metadata),
            list(self.execution_history),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form."""
        return plain_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MutableInstance:
        """Rebuild an instance from ``to_dict`` output."""
        context = data["context"]
        return cls(
            data["id"],
            resolve_class(data["workflow"]),
            data["workflow_version"],
            data["status"],
            MutableContext(context["initial"], context["steps"]),
            {resolve_class(ref): config for ref, config in data["step_configs"].items()},
            set(map(resolve_class, data["active_steps"])),
            set(map(resolve_class, data["completed_steps"])),
            data["runtime_metadata"],
            [MutableEntry(*entry_args(entry)) for entry in data["execution_history"]],
        )


# --------------------------------------------------------------------------------------
# The four implementations behind one description
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Impl:
    """How the harness builds, copies, grows and serializes one implementation's instances.

    The timed loops call ``new``, ``activate_step`` and ``complete_step`` on the instances
    directly; only the round trips go through these callables.
    """

    name: str
    label: str
    cls: Any
    json_round_trip: Callable[[Any], Any]
    bytes_round_trip: Callable[[Any], Any]
    with_history: Callable[[Any, int], Any]
    fresh: Callable[[Any], Any]
    memory_share: float = 1.0  # the fraction of ``Settings.memory_count`` built for memory


def history_items(length: int) -> list[tuple[type, str, datetime, dict[str, Any]]]:
    """Return ``length`` (step, event, timestamp, context_updates) tuples for a history."""
    return [
        (STEPS[k % 100], EVENT, TIMESTAMP + timedelta(microseconds=k), {"n": k})
        for k in range(length)
    ]


def identity(inst: Any) -> Any:
    """Return ``inst``: an immutable value is its own fresh starting point."""
    return inst


def pickle_round_trip(inst: Any) -> Any:
    """Pickle and unpickle ``inst`` (the pure-Python versions' bytes form)."""
    return pickle.loads(pickle.dumps(inst, protocol=pickle.HIGHEST_PROTOCOL))


def ours_json_round_trip(inst: Any) -> Any:
    """``Instance.to_json`` then ``Instance.from_json``."""
    return hephaestus.Instance.from_json(inst.to_json())


def ours_bytes_round_trip(inst: Any) -> Any:
    """``Instance.to_bytes`` then ``Instance.from_bytes``."""
    return hephaestus.Instance.from_bytes(inst.to_bytes())


def ours_with_history(inst: Any, length: int) -> Any:
    """Return ``inst`` with a history of ``length`` entries, through ``replace``."""
    entry = hephaestus.ExecutionEntry
    return inst.replace(execution_history=[entry(*item) for item in history_items(length)])


def frozen_json_round_trip(inst: FrozenInstance) -> FrozenInstance:
    """``to_dict`` + ``json.dumps``, then ``json.loads`` + ``from_dict``."""
    return FrozenInstance.from_dict(json.loads(json.dumps(inst.to_dict())))


def frozen_with_history(inst: FrozenInstance, length: int) -> FrozenInstance:
    """Return ``inst`` with a history tuple of ``length`` entries."""
    history = tuple(Entry(*item) for item in history_items(length))
    return dataclasses.replace(inst, execution_history=history)


def pyrsistent_json_round_trip(inst: PyrsistentInstance) -> PyrsistentInstance:
    """``to_dict`` + ``json.dumps``, then ``json.loads`` + ``from_dict``."""
    return PyrsistentInstance.from_dict(json.loads(json.dumps(inst.to_dict())))


def pyrsistent_with_history(inst: PyrsistentInstance, length: int) -> PyrsistentInstance:
    """Return ``inst`` with a history vector of ``length`` entries."""
    history = pvector(
        Entry(step, event, stamp, freeze(updates))
        for step, event, stamp, updates in history_items(length)
    )
    return dataclasses.replace(inst, execution_history=history)


def mutable_json_round_trip(inst: MutableInstance) -> MutableInstance:
    """``to_dict`` + ``json.dumps``, then ``json.loads`` + ``from_dict``."""
    return MutableInstance.from_dict(json.loads(json.dumps(inst.to_dict())))


def mutable_with_history(inst: MutableInstance, length: int) -> MutableInstance:
    """Return a copy of ``inst`` with a history list of ``length`` entries."""
    grown = inst.copy()
    grown.execution_history = [MutableEntry(*item) for item in history_items(length)]
    return grown


def build_impls(names: Sequence[str]) -> list[Impl]:
    """Return the implementations named, in order; ``hephaestus`` must be importable."""
    table: dict[str, Callable[[], Impl]] = {
        "hephaestus": lambda: Impl(
            "hephaestus",
            "hephaestus",
            hephaestus.Instance,
            ours_json_round_trip,
            ours_bytes_round_trip,
            ours_with_history,
            identity,
        ),
        "frozen": lambda: Impl(
            "frozen",
            "frozen dataclass",
            FrozenInstance,
            frozen_json_round_trip,
            pickle_round_trip,
            frozen_with_history,
            identity,
        ),
        "pyrsistent": lambda: Impl(
            "pyrsistent",
            "pyrsistent",
            PyrsistentInstance,
            pyrsistent_json_round_trip,
            pickle_round_trip,
            pyrsistent_with_history,
            identity,
            # pyrsistent's pmap and pset are pure Python: 100,000 instances take over two
            # minutes to build, so its memory is measured on a fifth as many.
            memory_share=0.2,
        ),
        "mutable": lambda: Impl(
            "mutable",
            "mutable objects",
            MutableInstance,
            mutable_json_round_trip,
            pickle_round_trip,
            mutable_with_history,
            MutableInstance.copy,
        ),
    }
    return [table[name]() for name in names]


# --------------------------------------------------------------------------------------
# Building instances and checking that the implementations agree
# --------------------------------------------------------------------------------------


def new_base(impl: Impl) -> Any:
    """Return a fresh pending instance with the 5-key context."""
    return impl.cls.new(BenchFlow, 1, CONTEXT, "bench::base")


def build_completed(impl: Impl, steps: int) -> Any:
    """Return an instance with ``steps`` steps activated and completed, with timestamps."""
    inst = new_base(impl)
    for k in range(steps):
        step = STEPS[k]
        inst = inst.activate_step(step, CONFIG).complete_step(
            step,
            EVENT,
            {"n": k, "ok": True, "label": f"step-{k}"},
            METADATA,
            timestamp=TIMESTAMP + timedelta(milliseconds=k),
        )
    return inst


def plain(value: Any) -> Any:
    """Return ``value`` with every mapping turned into a dict and every sequence a list."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(item) for item in value]
    return value


def snapshot(inst: Any) -> dict[str, Any]:
    """Return an instance's state as plain Python values, read through its attributes."""
    return {
        "id": inst.id,
        "workflow": inst.workflow,
        "workflow_version": inst.workflow_version,
        "status": inst.status,
        "initial": plain(inst.context.initial),
        "steps": plain(inst.context.steps),
        "step_configs": {step: plain(config) for step, config in inst.step_configs.items()},
        "active_steps": set(inst.active_steps),
        "completed_steps": set(inst.completed_steps),
        "runtime_metadata": plain(inst.runtime_metadata),
        "execution_history": [
            (entry.step_ref, entry.event, entry.timestamp, plain(entry.context_updates))
            for entry in inst.execution_history
        ],
    }


def verify_agreement(impls: Sequence[Impl]) -> dict[str, Any]:
    """Check that every implementation builds the same state and round-trips it.

    Returns the 100-completed-step instance of each implementation, by name.
    """
    built = {impl.name: build_completed(impl, 100) for impl in impls}
    expected = snapshot(built[impls[0].name])
    for impl in impls:
        inst = built[impl.name]
        checks = {
            "built": inst,
            "JSON round trip": impl.json_round_trip(inst),
            "bytes round trip": impl.bytes_round_trip(inst),
        }
        for what, candidate in checks.items():
            if snapshot(candidate) != expected:
                raise AssertionError(f"{impl.label}: {what} disagrees with {impls[0].label}")
        step = STEPS[500]
        grown = impl.with_history(new_base(impl), 10)
        done = (
            impl.fresh(grown)
            .activate_step(step, CONFIG)
            .complete_step(step, EVENT, RESULT, METADATA, timestamp=TIMESTAMP)
        )
        if len(done.execution_history) != 11 or done.execution_history[-1].step_ref is not step:
            raise AssertionError(f"{impl.label}: complete_step after a 10-entry history is wrong")
    return built


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How long and how large one run is."""

    quick: bool
    budget_ns: int  # timed nanoseconds per measurement
    batch_ns: int  # target length of one timed batch
    min_rounds: int
    history_lengths: tuple[int, ...]
    memory_count: int
    memory_steps: int = 20


FULL = Settings(
    quick=False,
    budget_ns=800_000_000,
    batch_ns=5_000_000,
    min_rounds=5,
    history_lengths=(10, 1_000, 100_000),
    memory_count=100_000,
)
QUICK = Settings(
    quick=True,
    budget_ns=2_000_000,
    batch_ns=200_000,
    min_rounds=1,
    history_lengths=(10, 100, 1_000),
    memory_count=1_000,
)

Prepare = Callable[[int], Callable[[], int]]


def measure(prepare: Prepare, max_batch: int, settings: Settings) -> float:
    """Return the best nanoseconds per operation over timed batches.

    ``prepare(n)`` sets up a batch of ``n`` operations (untimed) and returns a callable that
    runs them and returns the elapsed nanoseconds. The batch size grows until a batch takes
    ``settings.batch_ns`` (or reaches ``max_batch``); then batches repeat until the timed
    total reaches the budget. The garbage collector is off while measuring, as in ``timeit``.
    """
    gc.collect()
    gc.disable()
    try:
        size = 1
        elapsed = prepare(size)()
        while elapsed < settings.batch_ns and size < max_batch:
            size = min(max_batch, max(2 * size, size * settings.batch_ns // max(elapsed, 1)))
            elapsed = prepare(size)()
        best, timed, rounds = elapsed / size, elapsed, 1
        deadline = time.monotonic_ns() + 3 * settings.budget_ns
        while rounds < settings.min_rounds or (
            timed < settings.budget_ns and time.monotonic_ns() < deadline
        ):
            elapsed = prepare(size)()
            best = min(best, elapsed / size)
            timed += elapsed
            rounds += 1
        return best
    finally:
        gc.enable()


def run_new(cls: Any, ids: list[str], context: dict[str, Any]) -> int:
    """Time ``cls.new`` once per id."""
    start = perf_counter_ns()
    for instance_id in ids:
        cls.new(BenchFlow, 1, context, instance_id)
    return perf_counter_ns() - start


def run_activate(pairs: list[tuple[Any, type]], config: Any) -> int:
    """Time ``activate_step`` once per (instance, step) pair."""
    start = perf_counter_ns()
    for inst, step in pairs:
        inst.activate_step(step, config)
    return perf_counter_ns() - start


def run_complete(
    pairs: list[tuple[Any, type]], result: dict[str, Any], metadata: dict[str, Any], stamp: datetime
) -> int:
    """Time ``complete_step`` with an explicit timestamp once per pair."""
    start = perf_counter_ns()
    for inst, step in pairs:
        inst.complete_step(step, EVENT, result, metadata, timestamp=stamp)
    return perf_counter_ns() - start


def run_complete_now(
    pairs: list[tuple[Any, type]], result: dict[str, Any], metadata: dict[str, Any]
) -> int:
    """Time ``complete_step`` without a timestamp (each takes the current time)."""
    start = perf_counter_ns()
    for inst, step in pairs:
        inst.complete_step(step, EVENT, result, metadata)
    return perf_counter_ns() - start


def run_lifecycle(
    pairs: list[tuple[Any, type]],
    config: Any,
    result: dict[str, Any],
    metadata: dict[str, Any],
    stamp: datetime,
) -> int:
    """Time ``activate_step`` followed by ``complete_step`` once per pair."""
    start = perf_counter_ns()
    for inst, step in pairs:
        inst.activate_step(step, config).complete_step(
            step, EVENT, result, metadata, timestamp=stamp
        )
    return perf_counter_ns() - start


def run_calls(function: Callable[[Any], Any], items: list[Any]) -> int:
    """Time ``function`` once per item."""
    start = perf_counter_ns()
    for item in items:
        function(item)
    return perf_counter_ns() - start


def same_start(impl: Impl, base: Any, size: int) -> list[tuple[Any, type]]:
    """Pair ``size`` fresh steps with one starting instance (one copy for a mutable one)."""
    start = impl.fresh(base)
    return [(start, step) for step in STEPS[:size]]


def activated(impl: Impl, base: Any, size: int) -> list[tuple[Any, type]]:
    """Pair ``size`` steps with an instance in which that step is active (config stored)."""
    start = impl.fresh(base)
    return [(start.activate_step(step, CONFIG), step) for step in STEPS[:size]]


OPERATIONS = (
    ("new", "Instance.new (5-key context)"),
    ("activate", "activate_step (with config)"),
    ("complete", "complete_step (3-key result, 2-key metadata)"),
    ("complete_now", "complete_step, no timestamp (takes the time)"),
    ("lifecycle", "lifecycle: activate_step + complete_step"),
    ("json", "JSON round trip, 100 completed steps"),
    ("bytes", "bytes round trip, 100 completed steps"),
)


def operation_cases(impl: Impl, completed: Any) -> dict[str, tuple[Prepare, int]]:
    """Return, per operation, its ``prepare`` function and largest batch."""
    base = new_base(impl)
    return {
        "new": (
            lambda n: functools.partial(
                run_new, impl.cls, [f"bench::{k}" for k in range(n)], CONTEXT
            ),
            10_000,
        ),
        "activate": (
            lambda n: functools.partial(run_activate, same_start(impl, base, n), CONFIG),
            STEP_POOL,
        ),
        "complete": (
            lambda n: functools.partial(
                run_complete, activated(impl, base, n), RESULT, METADATA, TIMESTAMP
            ),
            STEP_POOL,
        ),
        "complete_now": (
            lambda n: functools.partial(
                run_complete_now, activated(impl, base, n), RESULT, METADATA
            ),
            STEP_POOL,
        ),
        "lifecycle": (
            lambda n: functools.partial(
                run_lifecycle, same_start(impl, base, n), CONFIG, RESULT, METADATA, TIMESTAMP
            ),
            STEP_POOL,
        ),
        "json": (
            lambda n: functools.partial(run_calls, impl.json_round_trip, [completed] * n),
            10_000,
        ),
        "bytes": (
            lambda n: functools.partial(run_calls, impl.bytes_round_trip, [completed] * n),
            10_000,
        ),
    }


def history_case(impl: Impl, length: int) -> Prepare:
    """Return the ``prepare`` function timing ``complete_step`` after ``length`` entries."""
    grown = impl.with_history(new_base(impl), length)
    return lambda n: functools.partial(
        run_complete, activated(impl, grown, n), RESULT, METADATA, TIMESTAMP
    )


# --------------------------------------------------------------------------------------
# Memory (each implementation in its own process)
# --------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Return this process's resident memory (the peak where ``/proc`` is missing)."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def build_for_memory(impl: Impl, index: int, labels: Sequence[str]) -> Any:
    """Build one distinct instance with ``len(labels)`` completed steps, via its own API."""
    inst = impl.cls.new(
        BenchFlow,
        1,
        {
            "order_id": f"order-{index}",
            "customer_id": index,
            "currency": "EUR",
            "total": 99.5,
            "express": False,
        },
        f"bench::{index}",
    )
    for step, label in zip(STEPS[: len(labels)], labels, strict=True):
        inst = inst.activate_step(step, CONFIG).complete_step(
            step, EVENT, {"n": index, "ok": True, "label": label}, METADATA
        )
    return inst


def memory_child(impl: Impl, count: int, steps: int) -> dict[str, float]:
    """Build and keep ``count`` instances; return the resident memory growth and the time.

    The cyclic garbage collector is off while building: no implementation makes reference
    cycles, so it would only rescan the growing heap (reference counting frees the garbage).
    """
    labels = [f"step-{k}" for k in range(steps)]
    build_for_memory(impl, 0, labels)
    gc.collect()
    gc.disable()
    before = rss_bytes()
    start = time.perf_counter()
    kept = [build_for_memory(impl, index, labels) for index in range(count)]
    seconds = time.perf_counter() - start
    gc.enable()
    gc.collect()
    return {"count": len(kept), "rss_bytes": rss_bytes() - before, "seconds": seconds}


def measure_memory(impl: Impl, settings: Settings) -> dict[str, float]:
    """Run ``memory_child`` for ``impl`` in a fresh interpreter and return its report."""
    count = max(1, round(settings.memory_count * impl.memory_share))
    progress(f"  {impl.label:<18} memory: building {count:,} instances")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--impls",
        impl.name,
        "--memory-child",
        str(count),
        str(settings.memory_steps),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"the memory run of {impl.label} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# Results, targets and the report
# --------------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything one run measured."""

    impls: list[Impl]
    settings: Settings
    operations: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    history: dict[str, dict[int, float]] = dataclasses.field(default_factory=dict)
    memory: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


def run_benchmarks(impls: list[Impl], settings: Settings, *, with_memory: bool) -> Results:
    """Measure every operation, the history lengths and (optionally) memory."""
    results = Results(impls, settings)
    completed = verify_agreement(impls)
    progress("the implementations agree; timing")
    for impl in impls:
        cases = operation_cases(impl, completed[impl.name])
        for key, label in OPERATIONS:
            prepare, max_batch = cases[key]
            ns = measure(prepare, max_batch, settings)
            results.operations.setdefault(key, {})[impl.name] = ns
            progress(f"  {impl.label:<18} {label:<46} {ns:>12,.0f} ns")
    for impl in impls:
        for length in settings.history_lengths:
            ns = measure(history_case(impl, length), STEP_POOL, settings)
            results.history.setdefault(impl.name, {})[length] = ns
            progress(f"  {impl.label:<18} complete_step at history {length:<9,} {ns:>12,.0f} ns")
    if with_memory:
        # One process per implementation, two at a time: the timings are done by now.
        with ThreadPoolExecutor(max_workers=MEMORY_WORKERS) as pool:
            reports = pool.map(functools.partial(measure_memory, settings=settings), impls)
            for impl, report in zip(impls, reports, strict=True):
                results.memory[impl.name] = report
                progress(
                    f"  {impl.label:<18} memory {report['rss_bytes'] / 2**20:,.1f} MiB "
                    f"in {report['seconds']:.1f} s"
                )
    return results


@dataclass(frozen=True)
class Target:
    """One target of the issue and how this run did against it."""

    name: str
    requirement: str
    measured: str
    status: str


def bytes_per_instance(report: Mapping[str, float]) -> float:
    """Return the resident memory growth per instance of a memory report."""
    return report["rss_bytes"] / report["count"]


def target(
    name: str,
    requirement: str,
    value: float | None,
    passed: Callable[[float], bool],
) -> Target:
    """Judge one target; a missing measurement is ``n/a``."""
    if value is None:
        return Target(name, requirement, "n/a", "n/a")
    return Target(name, requirement, f"{value:.2f}x", "PASS" if passed(value) else "MISS")


def evaluate_targets(results: Results) -> list[Target]:
    """Return the issue's targets judged on these results."""
    ops = results.operations
    lifecycle = ops.get("lifecycle", {})
    json_rt = ops.get("json", {})
    ours_history = results.history.get("hephaestus", {})
    lengths = results.settings.history_lengths
    per_instance = {name: bytes_per_instance(report) for name, report in results.memory.items()}
    return [
        target(
            "lifecycle vs frozen dataclass",
            ">= 6x faster",
            factor(lifecycle.get("frozen"), lifecycle.get("hephaestus")),
            lambda value: value >= 6,
        ),
        target(
            "lifecycle vs mutable objects",
            "no slower (>= 1.00x)",
            factor(lifecycle.get("mutable"), lifecycle.get("hephaestus")),
            lambda value: value >= 1,
        ),
        target(
            f"complete_step at history {lengths[-1]:,} / at {lengths[0]:,}",
            "<= 1.5x",
            factor(ours_history.get(lengths[-1]), ours_history.get(lengths[0])),
            lambda value: value <= 1.5,
        ),
        target(
            "JSON round trip vs frozen dataclass",
            ">= 5x faster",
            factor(json_rt.get("frozen"), json_rt.get("hephaestus")),
            lambda value: value >= 5,
        ),
        target(
            f"memory of {results.settings.memory_count:,} instances vs frozen dataclass",
            "less (< 1.00x)",
            factor(per_instance.get("hephaestus"), per_instance.get("frozen")),
            lambda value: value < 1,
        ),
    ]


def cell(ns: float, ours: float | None) -> str:
    """Format nanoseconds, followed by the ratio to ``ours`` when that is given."""
    ratio = factor(ns, ours)
    return f"{ns:,.0f} ns" if ratio is None else f"{ns:,.0f} ns ({ratio:.1f}x)"


def render_header(results: Results) -> list[str]:
    """Return the heading, the command, the machine and the software of a run."""
    packages = ["hephaestus-core"] if any(i.name == "hephaestus" for i in results.impls) else []
    title = "## Instance: hephaestus vs pure Python"
    return header(title, "bench_instance.py", results.settings.quick, [*packages, "pyrsistent"])


def render_operations(results: Results) -> list[str]:
    """Return the table of nanoseconds per operation, with ratios to hephaestus."""
    has_ours = any(impl.name == "hephaestus" for impl in results.impls)
    rows = []
    for key, label in OPERATIONS:
        measured = results.operations[key]
        ours = measured.get("hephaestus")
        rows.append(
            [label]
            + [
                cell(measured[impl.name], None if impl.name == "hephaestus" else ours)
                for impl in results.impls
            ]
        )
    note = "; in parentheses the time relative to hephaestus (higher is slower)"
    return [
        "### Time per operation",
        "",
        f"Best of repeated batches, ns per operation{note if has_ours else ''}.",
        "",
        table(["operation", *(impl.label for impl in results.impls)], rows),
    ]


def render_history(results: Results) -> list[str]:
    """Return the table of ``complete_step`` cost by history length."""
    lengths = results.settings.history_lengths
    rows = []
    for impl in results.impls:
        measured = results.history[impl.name]
        growth = factor(measured[lengths[-1]], measured[lengths[0]])
        rows.append([impl.label, *(f"{measured[n]:,.0f} ns" for n in lengths), f"{growth:.2f}x"])
    header = ["implementation", *(f"N = {n:,}" for n in lengths)]
    return [
        "### complete_step by history length",
        "",
        "ns per `complete_step` on an instance whose history already holds N entries.",
        "",
        table([*header, f"{lengths[-1]:,} / {lengths[0]:,}"], rows),
    ]


def render_memory(results: Results) -> list[str]:
    """Return the table of resident memory per implementation."""
    settings = results.settings
    ours = results.memory.get("hephaestus")
    rows = []
    for impl in results.impls:
        report = results.memory[impl.name]
        per_instance = bytes_per_instance(report)
        ratio = (
            None
            if ours is None or impl.name == "hephaestus"
            else factor(per_instance, bytes_per_instance(ours))
        )
        rows.append(
            [
                impl.label,
                f"{report['count']:,}",
                f"{report['rss_bytes'] / 2**20:,.1f} MiB",
                f"{per_instance:,.0f}",
                "-" if ratio is None else f"{ratio:.2f}x",
                f"{report['seconds']:.1f} s",
            ]
        )
    header = [
        "implementation",
        "instances",
        "RSS growth",
        "bytes / instance",
        "vs hephaestus",
        "build time",
    ]
    return [
        "### Resident memory",
        "",
        f"Instances built through each implementation's own API ({settings.memory_steps} steps "
        "activated and completed with 3-key results, distinct per instance) and kept alive; "
        "growth of the resident set of a fresh process. pyrsistent builds a fifth as many "
        "(its pure-Python maps are slow to build); compare bytes per instance. Up to "
        f"{MEMORY_WORKERS} such processes run at once, so the build time is only indicative.",
        "",
        table(header, rows),
    ]


def render_targets(results: Results) -> list[str]:
    """Return the table of the issue's targets with PASS or MISS."""
    rows = [[t.name, t.requirement, t.measured, t.status] for t in evaluate_targets(results)]
    return ["### Targets", "", table(["target", "required", "measured", "result"], rows)]


def render(results: Results) -> str:
    """Render the results as the Markdown section (without the markers)."""
    sections = [render_header(results), render_operations(results), render_history(results)]
    if results.memory:
        sections.append(render_memory(results))
    sections.append(render_targets(results))
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark hephaestus.Instance against pure-Python implementations."
    )
    add_common_arguments(parser, "a smoke run of a few seconds; the numbers mean nothing")
    parser.add_argument(
        "--impls",
        default=",".join(ALL_IMPLS),
        help=f"comma-separated subset of {','.join(ALL_IMPLS)} (default: all)",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the resident-memory measurement"
    )
    parser.add_argument(
        "--memory-child", nargs=2, type=int, metavar=("COUNT", "STEPS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.impls = [name.strip() for name in args.impls.split(",") if name.strip()]
    unknown = sorted(set(args.impls) - set(ALL_IMPLS))
    if unknown or not args.impls:
        parser.error(f"--impls takes names from {', '.join(ALL_IMPLS)}; got {args.impls}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    if args.memory_child:
        [impl] = build_impls(args.impls[:1])
        print(json.dumps(memory_child(impl, *args.memory_child)))
        return 0
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    results = run_benchmarks(build_impls(args.impls), settings, with_memory=not args.no_memory)
    section = render(results)
    publish(section, args.write, "bench_instance", started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
