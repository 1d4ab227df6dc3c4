"""Random sequences of bookkeeping operations, applied to an ``Instance`` and to a
tiny pure-Python reference model side by side.

After every operation the two must agree on every field, the invariants must
hold, every earlier instance must be unchanged, and every serialization round
trip must give back an equal instance.
"""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hephaestus import (
    Done,
    Instance,
    InvalidTransitionError,
    Status,
    Step,
    Unique,
    Workflow,
    step_key,
)
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule


class Validate(Step):
    events = ("ok",)


class Charge(Step):
    pass


class Reserve(Step):
    pass


class Ship(Step):
    step_key = "shipping"


class Notify(Step):
    pass


class Flow(Workflow, unique=Unique("flow")):
    """The workflow class of every instance in this test (the bookkeeping it
    tests does not follow the graph)."""

    start = Validate
    transitions = {Validate: {"ok": Done}}


STEPS = (Validate, Charge, Reserve, Ship, Notify)
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.datetimes(timezones=st.none() | st.just(timezone.utc) | st.timezones()),
)
keys = st.text(max_size=4)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)
dicts = st.dictionaries(keys, values, max_size=3)


@dataclass
class Model:
    """What the instance should hold, in the plainest Python."""

    status: Status = Status.PENDING
    states: dict[type, str] = field(default_factory=dict)  # active|waiting|completed|skipped
    configs: dict[type, Any] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[type, str, datetime, dict[str, Any] | None]] = field(default_factory=list)
    current_step: type | None = None

    def members(self, *states: str) -> frozenset[type]:
        return frozenset(s for s, st_ in self.states.items() if st_ in states)

    def settle_status(self) -> None:
        if self.status.is_terminal:
            return
        active = self.members("active", "waiting")
        if active and active == self.members("waiting"):
            self.status = Status.WAITING
        elif self.status is not Status.PENDING:
            self.status = Status.RUNNING


def same(a: Any, b: Any) -> bool:
    """Deep equality that treats NaN as equal to itself, as the core does."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


class InstanceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.instance = Instance.new(Flow, 1, {"order": 1}, "orderid::abc")
        self.model = Model()
        self.clock = 0
        # Every earlier instance with its JSON at the time: values never change.
        self.earlier: list[tuple[Instance, str]] = []

    def _move(self, new: Instance) -> None:
        self.earlier.append((self.instance, self.instance.to_json()))
        self.instance = new

    def _expect_error(self, call: Any) -> None:
        before = self.instance.to_json()
        try:
            call()
        except InvalidTransitionError:
            pass
        else:
            raise AssertionError("expected InvalidTransitionError")
        assert self.instance.to_json() == before

    @rule(step=st.sampled_from(STEPS), config=st.none() | values)
    def activate(self, step: type, config: Any) -> None:
        state = self.model.states.get(step)
        if self.model.status.is_terminal or state in ("completed", "skipped"):
            self._expect_error(lambda: self.instance.activate_step(step, config))
            return
        self._move(self.instance.activate_step(step, config))
        if state is None:
            self.model.states[step] = "active"
        if config is not None:
            self.model.configs[step] = copy.deepcopy(config)
        self.model.settle_status()

    @rule(
        step=st.sampled_from(STEPS),
        event=st.sampled_from(["done", "valid", "paid"]),
        updates=st.none() | dicts,
        metadata=st.none() | dicts,
    )
    def complete(self, step: type, event: str, updates: Any, metadata: Any) -> None:
        self.clock += 1
        when = EPOCH + timedelta(seconds=self.clock)
        call = lambda: self.instance.complete_step(  # noqa: E731
            step, event, updates, metadata, timestamp=when
        )
        if self.model.status.is_terminal or self.model.states.get(step) not in (
            "active",
            "waiting",
        ):
            self._expect_error(call)
            return
        self._move(call())
        self.model.states[step] = "completed"
        self.model.results[step_key(step)] = copy.deepcopy(updates) if updates else {}
        self.model.metadata.update(copy.deepcopy(metadata or {}))
        self.model.configs.pop(step, None)
        self.model.history.append((step, event, when, copy.deepcopy(updates)))
        self.model.settle_status()

    @rule(step=st.sampled_from(STEPS))
    def wait(self, step: type) -> None:
        if self.model.status.is_terminal or self.model.states.get(step) not in (
            "active",
            "waiting",
        ):
            self._expect_error(lambda: self.instance.wait_step(step))
            return
        self._move(self.instance.wait_step(step))
        self.model.states[step] = "waiting"
        self.model.current_step = step
        self.model.settle_status()

    @rule(step=st.sampled_from(STEPS))
    def skip(self, step: type) -> None:
        state = self.model.states.get(step)
        if self.model.status.is_terminal or state in ("active", "waiting", "completed"):
            self._expect_error(lambda: self.instance.skip_step(step))
            return
        self._move(self.instance.skip_step(step))
        self.model.states[step] = "skipped"
        self.model.settle_status()

    @rule()
    def start(self) -> None:
        """What the engine's ``advance`` does to the status of a pending instance."""
        if self.model.status is not Status.PENDING:
            return
        self.model.status = Status.RUNNING
        self.model.settle_status()
        self._move(self.instance.replace(status=self.model.status))

    @rule(status=st.sampled_from([Status.COMPLETED, Status.FAILED]))
    def finish(self, status: Status) -> None:
        """A terminal status takes the active steps away, as ``fail`` does."""
        for step in self.model.members("active", "waiting"):
            del self.model.states[step]
        self.model.status = status
        self._move(
            self.instance.replace(
                status=status,
                active_steps=self.model.members("active"),
                waiting_steps=(),
                error={"kind": "cancelled"} if status is Status.FAILED else None,
            )
        )

    @invariant()
    def agrees_with_the_model(self) -> None:
        inst, model = self.instance, self.model
        assert inst.status is model.status
        assert inst.active_steps == model.members("active", "waiting")
        assert inst.waiting_steps == model.members("waiting")
        assert inst.completed_steps == model.members("completed")
        assert inst.skipped_steps == model.members("skipped")
        assert same(inst.step_configs, model.configs)
        assert same(inst.context.steps, model.results)
        assert inst.context.initial == {"order": 1}
        assert same(inst.runtime_metadata, model.metadata)
        assert inst.current_step is model.current_step
        history = [
            (e.step_ref, e.event, e.timestamp, e.context_updates) for e in inst.execution_history
        ]
        assert same(history, model.history)
        assert inst.history_length == len(model.history)

    @invariant()
    def invariants_hold(self) -> None:
        inst = self.instance
        active, waiting = inst.active_steps, inst.waiting_steps
        assert not active & inst.completed_steps
        assert not active & inst.skipped_steps
        assert not inst.completed_steps & inst.skipped_steps
        assert waiting <= active
        if inst.status.is_terminal:
            assert not active
        else:
            assert (inst.status is Status.WAITING) == (bool(active) and waiting == active)
        assert inst.active_count == len(active)
        assert inst.waiting_count == len(waiting)

    @invariant()
    def earlier_values_are_unchanged(self) -> None:
        for instance, text in self.earlier[-5:]:
            assert instance.to_json() == text

    @invariant()
    def round_trips_are_equal(self) -> None:
        inst = self.instance
        assert Instance.from_json(inst.to_json()) == inst
        assert Instance.from_bytes(inst.to_bytes()) == inst
        assert pickle.loads(pickle.dumps(inst)) == inst
        assert Instance.from_json(inst.to_json()).to_json() == inst.to_json()


InstanceMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)
test_instance_bookkeeping = InstanceMachine.TestCase
