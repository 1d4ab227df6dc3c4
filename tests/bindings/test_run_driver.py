"""The recording driver (``_core.Run``) the durable runtime stores runs with.

Its journal records, replayed through the core from the instance the run
started from, must rebuild the driver's instance exactly, whatever order
the steps finish in; and a change the core refuses must leave no record
behind (a stored record of a change that never applied would make the run
unloadable).
"""

from __future__ import annotations

import datetime as dt
import random

import engine_samples as samples
import pytest
from hephaestus import Instance, InvalidTransitionError, SerializationError, Status
from hephaestus._core import Run, resume_record, step_key
from hephaestus.engine import graph_of
from hypothesis import given, settings
from hypothesis import strategies as st

FLOWS = [
    samples.ExclusiveJoinFlow,
    samples.RouteJoinFlow,
    samples.RouteConfigFlow,
    samples.BadRouteFlow,
    samples.NestedFlow,
    samples.ParallelFlow,
    samples.ConfigJoinFlow,
    samples.LinearFlow,
    samples.BranchFlow,
    samples.AsyncFlow,
    samples.EventFlow,
    samples.TwoWaitsFlow,
    samples.MixedWaitFlow,
    samples.ExplodeFlow,
    samples.RefuseFlow,
    samples.LiarFlow,
    samples.FailingBranchFlow,
]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _execute(step: type, instance: Instance, config: object) -> object:
    return step().execute(instance, config, instance.context)


def drive(flow: type, rnd: random.Random, context: dict) -> tuple[Instance, Run, list[bytes]]:
    """Runs ``flow`` as the runtime does, finishing runnable steps in a random
    order and resuming waiting ones; now and then repeats a completion the
    core must refuse. Returns the first instance, the driver and its records."""
    first = Instance.new(flow, 1, context, f"{flow.unique.key}::x")
    driver = Run(graph_of(first), first, record=True, start=False)
    driver.start()
    records = driver.take_records()
    ready = driver.take_runnable()
    for tick in range(200):
        stamp = T0 + dt.timedelta(seconds=tick)
        if driver.status in (Status.COMPLETED, Status.FAILED):
            break
        if ready:
            step, iteration = ready.pop(rnd.randrange(len(ready)))
            try:
                value = _execute(step, driver.instance, driver.config(step, iteration))
            except Exception as error:
                driver.fail_with(
                    {"kind": "exception", "step": step_key(step), "message": str(error)}
                )
            else:
                driver.complete(step, value, iteration=iteration, timestamp=stamp)
                if driver.instance.is_completed(step) and rnd.random() < 0.5:
                    records += driver.take_records()
                    if not driver.instance.is_terminal:
                        with pytest.raises(InvalidTransitionError):
                            driver.complete(step, value, iteration=iteration, timestamp=stamp)
                    assert driver.take_records() == [], "a refused change left a record"
        else:
            waiting = sorted(driver.instance.waiting_steps, key=step_key)
            if not waiting:
                break
            step = rnd.choice(waiting)
            assert driver.resume(step, step.events[0], timestamp=stamp)
        driver.finish()
        records += driver.take_records()
        ready += [unit for unit in driver.take_runnable() if unit not in ready]
    return first, driver, records


@settings(max_examples=150, deadline=None)
@given(
    flow=st.sampled_from(FLOWS),
    seed=st.integers(0, 2**32 - 1),
    context=st.fixed_dictionaries(
        {
            "valid": st.booleans(),
            "express": st.booleans(),
            "configured": st.booleans(),
            "approve": st.booleans(),
            "target": st.sampled_from(["express", "finish", "stray"]),
            "choice": st.sampled_from(["x", "y"]),
        }
    ),
)
def test_replaying_the_records_rebuilds_the_instance(flow, seed, context):
    first, driver, records = drive(flow, random.Random(seed), context)
    replayed = Run(graph_of(first), first, record=False, start=False)
    replayed.replay(records)
    assert replayed.instance == driver.instance
    assert replayed.instance.to_json() == driver.instance.to_json()


def test_a_refused_completion_leaves_no_record():
    first = Instance.new(samples.LinearFlow, 1, {}, "linear::x")
    driver = Run(graph_of(first), first, record=True, start=False)
    driver.start()
    driver.take_records()
    [(step, iteration)] = driver.take_runnable()
    assert iteration is None
    value = _execute(step, driver.instance, driver.config(step))
    driver.complete(step, value, timestamp=T0)
    assert len(driver.take_records()) == 1
    with pytest.raises(InvalidTransitionError):
        driver.complete(step, value, timestamp=T0)
    assert driver.take_records() == []


def test_a_resume_record_replays_like_a_resume():
    first = Instance.new(samples.EventFlow, 1, {}, "eventflow::x")
    driver = Run(graph_of(first), first, record=True, start=False)
    driver.start()
    while ready := driver.take_runnable():
        for step, _ in ready:
            driver.complete(step, _execute(step, driver.instance, None), timestamp=T0)
    records = driver.take_records()
    [waiting] = driver.instance.waiting_steps
    replayed = Run(graph_of(first), first, record=False, start=False)
    replayed.replay([*records, resume_record(step_key(waiting), "received", T0)])
    driver.resume(waiting, "received", timestamp=T0)
    assert replayed.instance == driver.instance


def test_a_record_that_is_not_one_is_refused():
    first = Instance.new(samples.LinearFlow, 1, {}, "linear::x")
    driver = Run(graph_of(first), first, record=False, start=False)
    with pytest.raises(SerializationError):
        driver.replay([b"\x00not a record"])


@settings(max_examples=100, deadline=None)
@given(
    flow=st.sampled_from(FLOWS),
    seed=st.integers(0, 2**32 - 1),
    valid=st.booleans(),
    target=st.sampled_from(["express", "finish", "stray"]),
)
def test_a_result_recorded_elsewhere_completes_like_the_result(flow, seed, valid, target):
    # A queue worker reads a step's result on its own copy of the instance
    # (`outcome_record`); the run's driver applies the record
    # (`complete_record`): the instance and the journal must be exactly those
    # of completing with the result itself.
    rnd = random.Random(seed)
    context = {"valid": valid, "target": target, "express": False, "choice": "x"}
    first = Instance.new(flow, 1, context, f"{flow.unique.key}::x")
    direct = Run(graph_of(first), first, record=True, start=False)
    remote = Run(graph_of(first), first, record=True, start=False)
    for driver in (direct, remote):
        driver.start()
    ready: list = []
    for tick in range(50):
        handed = direct.take_runnable()
        assert handed == remote.take_runnable()
        ready += handed
        if not ready or direct.instance.is_terminal:
            break
        stamp = T0 + dt.timedelta(seconds=tick)
        step, iteration = ready.pop(rnd.randrange(len(ready)))
        worker = Run(graph_of(direct.instance), direct.instance, start=False, drive=False)
        try:
            value = _execute(step, worker.instance, worker.config(step, iteration))
        except Exception:
            break
        record = worker.outcome_record(step, value, iteration=iteration, timestamp=stamp)
        direct.complete(step, value, iteration=iteration, timestamp=stamp)
        remote.complete_record(record)
        assert direct.take_records() == remote.take_records()
        assert remote.instance == direct.instance
        for driver in (direct, remote):
            driver.finish()


def test_complete_record_refuses_what_is_not_an_outcome():
    first = Instance.new(samples.EventFlow, 1, {}, "eventflow::x")
    driver = Run(graph_of(first), first, record=True, start=False)
    driver.start()
    with pytest.raises(SerializationError, match="not a step's outcome"):
        driver.complete_record(resume_record("event_step", "go", T0))
    with pytest.raises(SerializationError):
        driver.complete_record(b"\x00garbage")
