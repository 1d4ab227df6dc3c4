"""The pure engine (CONTRACT §8): ``hephaestus.engine``.

The original's engine tests (advance, execute_step, complete_step,
activate_transitions, check_completion, resume_step, the manual and runner
flows) through our API, plus the join rule, several waiting steps, failures
and ``arun``. Samples live in ``engine_samples``.
"""

from __future__ import annotations

import asyncio
import collections
import pickle
from collections.abc import Iterator
from typing import Any

import engine_samples as es
import pytest
from engine_samples import (
    END_STATE,
    AsyncDouble,
    AsyncFlow,
    AsyncLinearFlow,
    AsyncPauseFlow,
    BadRouteFlow,
    BranchFlow,
    Check,
    Choose,
    ConfigJoinFlow,
    Configured,
    Dispatch,
    EventFlow,
    ExclusiveJoinFlow,
    Explode,
    ExplodeFlow,
    Express,
    FailingBranchFlow,
    Finish,
    Fork,
    Gather,
    Hare,
    KeyFlow,
    Left,
    LiarFlow,
    LinearFlow,
    Merge,
    MetadataFlow,
    Middle,
    MixedWaitFlow,
    NestedFlow,
    NotAStep,
    OnInvalid,
    OnValid,
    Other,
    ParallelFlow,
    Pause,
    RaceFlow,
    Recorded,
    Refuse,
    RefuseFlow,
    Regular,
    Right,
    RouteConfigFlow,
    RouteJoinFlow,
    Split,
    StartConfigFlow,
    StepA,
    StepB,
    Tortoise,
    TransitionConfigFlow,
    TwoWaitsFlow,
    WaitLeft,
    WaitRight,
    assert_same_state,
    check_invariants,
    drive,
    history_steps,
    new,
    runnable,
)
from hephaestus import (
    Async,
    Done,
    Error,
    Instance,
    InvalidTransitionError,
    Ok,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
    engine,
    step_key,
    transit,
)
from workflow_samples import FastTrack, Standard, Tickets, Triage, TriageFlow, TriageV1


@pytest.fixture(autouse=True)
def _clear_records() -> Iterator[None]:
    es.RUNS.clear()
    es.LOG.clear()
    yield
    es.RUNS.clear()
    es.LOG.clear()


def run(instance: Instance) -> Instance:
    result = engine.run(instance)
    check_invariants(result)
    return result


def step(instance: Instance, step: type) -> Instance:
    """Executes ``step`` and applies an ``Ok`` result with the public calls."""
    assert step in runnable(instance), f"{step.__qualname__} is not runnable"
    result = engine.execute_step(instance, step)
    assert isinstance(result, Ok), result
    instance = engine.complete_step(
        instance, step, result.event, result.context_updates, result.metadata
    )
    check_invariants(instance)
    instance = engine.activate_transitions(instance, step, result.event)
    check_invariants(instance)
    return instance


def wait(instance: Instance, step: type) -> Instance:
    """Executes ``step``, which must answer ``Async``, and marks it waiting."""
    assert engine.execute_step(instance, step) == Async()
    instance = instance.wait_step(step)
    check_invariants(instance)
    return instance


def started(workflow: type, context: dict[str, Any] | None = None) -> Instance:
    instance = engine.advance(new(workflow, context))
    check_invariants(instance)
    return instance


def ran() -> list[str]:
    """The keys of the recorded steps that executed, in order."""
    return list(es.RUNS)


def logged() -> list[str]:
    return list(es.LOG)


def runs(key: str) -> int:
    return es.RUNS.count(key)


def assert_each_ran_once(instance: Instance) -> None:
    counts = collections.Counter(history_steps(instance))
    assert set(counts) == set(instance.completed_steps)
    assert set(counts.values()) == {1}, counts
    recorded = collections.Counter(es.RUNS)
    assert set(recorded.values()) <= {1}, recorded


# -- advance ---------------------------------------------------------------------


def test_advance_starts_a_pending_instance_without_executing() -> None:
    pending = new(LinearFlow, {"data": "test"})
    instance = engine.advance(pending)
    assert instance.status is Status.RUNNING
    assert instance.active_steps == frozenset({StepA})
    assert instance.current_step is StepA
    assert instance.completed_steps == frozenset()
    assert instance.execution_history == []
    assert instance.context.steps == {}
    assert ran() == []
    assert pending.status is Status.PENDING
    assert pending.active_steps == frozenset()


def test_advance_stores_the_start_config() -> None:
    instance = started(StartConfigFlow)
    assert instance.step_configs == {Configured: {"timeout": 5000}}
    assert instance.current_step is Configured


def test_advance_leaves_an_instance_with_active_steps_unchanged() -> None:
    instance = started(LinearFlow)
    assert engine.advance(instance) == instance
    later = step(instance, StepA)
    assert engine.advance(later) == later


def test_advance_leaves_a_waiting_instance_unchanged() -> None:
    waiting = run(new(AsyncFlow))
    assert waiting.status is Status.WAITING
    assert engine.advance(waiting) == waiting


def test_advance_completes_a_running_instance_with_nothing_active() -> None:
    instance = new(LinearFlow).replace(status=Status.RUNNING)
    assert engine.advance(instance).status is Status.COMPLETED


# -- execute_step ---------------------------------------------------------------------


class Introspect(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return Ok(
            "done",
            {
                "id": instance.id,
                "initial": context.initial,
                "is_the_instance_context": context == instance.context,
                "config": config,
            },
        )


class IntrospectFlow(Workflow, unique=Unique("flow")):
    start = Introspect
    transitions = {Introspect: {"done": Done}}


def test_execute_step_passes_instance_config_and_context() -> None:
    instance = new(IntrospectFlow, {"a": 1}).replace(step_configs={Introspect: {"k": "v"}})
    assert engine.execute_step(instance, Introspect) == Ok(
        "done",
        {
            "id": "flow::1",
            "initial": {"a": 1},
            "is_the_instance_context": True,
            "config": {"k": "v"},
        },
    )


def test_execute_step_uses_the_config_from_step_configs() -> None:
    instance = started(StartConfigFlow)
    assert engine.execute_step(instance, Configured) == Ok(
        "done", {"config_received": {"timeout": 5000}}
    )


def test_execute_step_passes_none_when_the_step_has_no_config() -> None:
    assert engine.execute_step(new(StartConfigFlow), Configured) == Ok(
        "done", {"config_received": None}
    )


def test_execute_step_normalizes_results() -> None:
    assert engine.execute_step(new(LinearFlow), StepA) == Ok("done")
    assert engine.execute_step(new(AsyncFlow), Pause) == Async()
    assert engine.execute_step(new(RefuseFlow), Refuse) == Error("out of stock")
    assert engine.execute_step(new(EventFlow), WaitForEvent) == Async()


def test_execute_step_does_not_change_the_instance() -> None:
    instance = started(LinearFlow)
    before = instance.to_json()
    engine.execute_step(instance, StepA)
    assert instance.to_json() == before


def test_execute_step_runs_an_async_step_outside_an_event_loop() -> None:
    instance = new(AsyncLinearFlow, {"n": 21})
    assert engine.execute_step(instance, AsyncDouble) == Ok("done", {"value": 42})


def test_execute_step_refuses_an_async_step_inside_a_running_loop() -> None:
    instance = new(AsyncLinearFlow, {"n": 21})

    async def inside() -> Any:
        return engine.execute_step(instance, AsyncDouble)

    with pytest.raises(RuntimeError, match="arun"):
        asyncio.run(inside())


def test_execute_step_runs_a_plain_step_inside_a_running_loop() -> None:
    async def inside() -> Any:
        return engine.execute_step(new(LinearFlow), StepA)

    assert asyncio.run(inside()) == Ok("done")


def test_execute_step_refuses_a_class_that_is_not_a_step() -> None:
    with pytest.raises(TypeError):
        engine.execute_step(new(LinearFlow), NotAStep)


# -- complete_step -----------------------------------------------------------------------


def test_complete_step_moves_the_step_and_stores_its_result() -> None:
    instance = started(LinearFlow)
    done = engine.complete_step(instance, StepA, "done", {"item_count": 3})
    check_invariants(done)
    assert StepA not in done.active_steps
    assert done.completed_steps == frozenset({StepA})
    assert done.context.steps == {"step_a": {"item_count": 3}}
    [entry] = done.execution_history
    assert (entry.step_ref, entry.event, entry.context_updates) == (
        StepA,
        "done",
        {"item_count": 3},
    )
    assert instance.completed_steps == frozenset()


def test_complete_step_is_instance_complete_step() -> None:
    instance = started(StartConfigFlow)
    ours = engine.complete_step(instance, Configured, "done", {"a": 1}, {"m": 2})
    theirs = instance.complete_step(Configured, "done", {"a": 1}, {"m": 2})
    for field in (
        "status",
        "active_steps",
        "completed_steps",
        "context",
        "step_configs",
        "runtime_metadata",
    ):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.step_configs == {}
    assert ours.runtime_metadata == {"m": 2}
    [mine], [other] = ours.execution_history, theirs.execution_history
    assert (mine.step_ref, mine.event, mine.context_updates) == (
        other.step_ref,
        other.event,
        other.context_updates,
    )


def test_complete_step_without_updates_stores_an_empty_result() -> None:
    done = engine.complete_step(started(LinearFlow), StepA, "done")
    assert done.context.steps == {"step_a": {}}
    assert done.execution_history[0].context_updates is None
    assert done.runtime_metadata == {}


def test_complete_step_refuses_a_step_that_is_not_active() -> None:
    with pytest.raises(InvalidTransitionError):
        engine.complete_step(started(LinearFlow), StepB, "done")


def test_runtime_metadata_accumulates_and_later_keys_win() -> None:
    instance = new(LinearFlow).replace(status=Status.RUNNING, active_steps=[StepA, StepB])
    instance = engine.complete_step(instance, StepA, "done", {}, {"order_id": 42})
    instance = engine.complete_step(instance, StepB, "done", {}, {"status": "paid"})
    assert instance.runtime_metadata == {"order_id": 42, "status": "paid"}
    instance = new(LinearFlow).replace(status=Status.RUNNING, active_steps=[StepA, StepB])
    instance = engine.complete_step(instance, StepA, "done", {}, {"status": "pending"})
    instance = engine.complete_step(instance, StepB, "done", {}, {"status": "paid"})
    assert instance.runtime_metadata == {"status": "paid"}


def test_run_merges_the_metadata_of_ok_results() -> None:
    done = run(new(MetadataFlow))
    assert done.status is Status.COMPLETED
    assert done.runtime_metadata == {"order_id": 42, "status": "paid"}
    assert done.context.steps == {"meta_first": {}, "meta_second": {"x": 1}, "done": {}}


def test_step_key_override_names_the_result() -> None:
    done = run(new(KeyFlow))
    assert done.status is Status.COMPLETED
    assert done.context.steps == {"custom_key": {"data": True}, "done": {}}


# -- activate_transitions --------------------------------------------------------------------


def test_activate_transitions_activates_the_next_step() -> None:
    instance = engine.complete_step(started(LinearFlow), StepA, "done")
    activated = engine.activate_transitions(instance, StepA, "done")
    check_invariants(activated)
    assert activated.active_steps == frozenset({StepB})
    assert activated.skipped_steps == frozenset()


def test_activate_transitions_fans_out() -> None:
    instance = step(started(ParallelFlow), Fork)
    assert instance.active_steps == frozenset({Left, Middle, Right})


def test_activate_transitions_stores_the_transition_config() -> None:
    instance = step(started(TransitionConfigFlow), StepA)
    assert instance.active_steps == frozenset({Configured})
    assert instance.step_configs == {Configured: {"timeout": 1000}}
    assert engine.execute_step(instance, Configured) == Ok(
        "done", {"config_received": {"timeout": 1000}}
    )
    after = step(instance, Configured)
    assert after.step_configs == {}


def test_transition_config_reaches_execute_in_run() -> None:
    done = run(new(TransitionConfigFlow))
    assert done.status is Status.COMPLETED
    assert done.context.steps["configured"] == {"config_received": {"timeout": 1000}}
    assert done.step_configs == {}


def test_start_config_reaches_execute_in_run() -> None:
    done = run(new(StartConfigFlow))
    assert done.context.steps["configured"] == {"config_received": {"timeout": 5000}}
    assert done.step_configs == {}


@pytest.mark.parametrize("express", [True, False])
def test_dynamic_route_follows_the_context(express: bool) -> None:
    instance = step(started(RouteJoinFlow, {"express": express}), Dispatch)
    chosen, other = (Express, Regular) if express else (Regular, Express)
    assert instance.active_steps == frozenset({chosen})
    assert instance.skipped_steps == frozenset({other})


def test_dynamic_route_may_return_a_config() -> None:
    instance = step(started(RouteConfigFlow, {"configured": True}), Dispatch)
    assert instance.active_steps == frozenset({Configured})
    assert instance.step_configs == {Configured: {"lane": "fast"}}
    done = run(instance)
    assert done.status is Status.COMPLETED
    assert done.context.steps["configured"] == {"config_received": {"lane": "fast"}}
    assert done.skipped_steps == frozenset({Regular})


@pytest.mark.parametrize("target", ["finish", "stray"])
def test_a_route_returning_an_undeclared_target_is_refused(target: str) -> None:
    instance = started(BadRouteFlow, {"target": target})
    instance = engine.complete_step(instance, Dispatch, "routed")
    with pytest.raises(InvalidTransitionError):
        engine.activate_transitions(instance, Dispatch, "routed")


def test_a_route_returning_a_declared_target_runs() -> None:
    done = run(new(BadRouteFlow, {"target": "express"}))
    assert done.status is Status.COMPLETED
    assert done.skipped_steps == frozenset({Regular})


# -- the join rule -----------------------------------------------------------------------


@pytest.mark.parametrize("valid", [True, False])
def test_a_join_after_exclusive_branches_runs_once(valid: bool) -> None:
    taken, other = (OnValid, OnInvalid) if valid else (OnInvalid, OnValid)
    done = run(new(ExclusiveJoinFlow, {"valid": valid}))
    assert done.status is Status.COMPLETED
    assert done.completed_steps == frozenset({Check, taken, Merge, Done})
    assert done.skipped_steps == frozenset({other})
    assert done.reached_steps == frozenset()
    assert history_steps(done) == [Check, taken, Merge, Done]
    assert ran() == ["check", step_key(taken), "merge"]
    assert done.context.steps["merge"] == {"seen": sorted(["check", step_key(taken)])}
    assert_each_ran_once(done)


@pytest.mark.parametrize("valid", [True, False])
def test_a_join_after_exclusive_branches_step_by_step(valid: bool) -> None:
    taken, other = (OnValid, OnInvalid) if valid else (OnInvalid, OnValid)
    instance = step(started(ExclusiveJoinFlow, {"valid": valid}), Check)
    assert instance.active_steps == frozenset({taken})
    assert instance.skipped_steps == frozenset({other})
    assert Merge not in instance.reached_steps
    instance = step(instance, taken)
    assert instance.active_steps == frozenset({Merge})
    assert instance.reached_steps == frozenset()
    instance = step(instance, Merge)
    assert instance.active_steps == frozenset({Done})
    instance = engine.check_completion(step(instance, Done))
    assert instance.status is Status.COMPLETED
    assert instance.skipped_steps == frozenset({other})


@pytest.mark.parametrize("express", [True, False])
def test_a_join_after_a_dynamic_route_runs_once(express: bool) -> None:
    chosen, other = (Express, Regular) if express else (Regular, Express)
    done = run(new(RouteJoinFlow, {"express": express}))
    assert done.status is Status.COMPLETED
    assert done.completed_steps == frozenset({Dispatch, chosen, Finish, Done})
    assert done.skipped_steps == frozenset({other})
    assert ran() == ["dispatch", step_key(chosen), "finish"]
    assert_each_ran_once(done)


def test_nested_fan_out_in_the_taken_branch() -> None:
    done = run(new(NestedFlow, {"choice": "x"}))
    assert done.status is Status.COMPLETED
    assert done.completed_steps == frozenset({Choose, Split, Left, Right, Gather, es.End, Done})
    assert done.skipped_steps == frozenset({Other})
    assert history_steps(done) == [Choose, Split, Left, Right, Gather, es.End, Done]
    assert sorted(es.RUNS) == sorted(["choose", "split", "left", "right", "gather", "end"])
    assert_each_ran_once(done)


def test_nested_fan_out_in_the_branch_not_taken() -> None:
    done = run(new(NestedFlow, {"choice": "y"}))
    assert done.status is Status.COMPLETED
    assert done.completed_steps == frozenset({Choose, Other, es.End, Done})
    assert done.skipped_steps == frozenset({Split, Left, Right, Gather})
    assert history_steps(done) == [Choose, Other, es.End, Done]
    assert ran() == ["choose", "other", "end"]
    assert_each_ran_once(done)


def test_nested_fan_out_step_by_step() -> None:
    instance = step(started(NestedFlow, {"choice": "x"}), Choose)
    assert instance.active_steps == frozenset({Split})
    assert instance.skipped_steps == frozenset({Other})
    instance = step(instance, Split)
    assert instance.active_steps == frozenset({Left, Right})
    instance = step(instance, Left)
    assert instance.active_steps == frozenset({Right})
    assert instance.reached_steps == frozenset({Gather})
    instance = step(instance, Right)
    assert instance.active_steps == frozenset({Gather})
    assert instance.reached_steps == frozenset()
    instance = step(instance, Gather)
    assert instance.active_steps == frozenset({es.End})


def test_skipping_propagates_down_the_branch_not_taken() -> None:
    instance = step(started(NestedFlow, {"choice": "y"}), Choose)
    assert instance.active_steps == frozenset({Other})
    assert instance.skipped_steps == frozenset({Split, Left, Right, Gather})
    assert instance.reached_steps == frozenset()
    instance = step(instance, Other)
    assert instance.active_steps == frozenset({es.End})


def test_a_parallel_join_waits_for_every_branch() -> None:
    instance = step(started(ParallelFlow), Fork)
    instance = step(instance, Left)
    assert Gather in instance.reached_steps
    assert Gather not in instance.active_steps
    instance = step(instance, Middle)
    assert instance.reached_steps == frozenset({Gather})
    assert instance.active_steps == frozenset({Right})
    instance = step(instance, Right)
    assert instance.active_steps == frozenset({Gather})
    assert instance.reached_steps == frozenset()
    assert instance.skipped_steps == frozenset()
    done = run(instance)
    assert done.status is Status.COMPLETED
    assert history_steps(done) == [Fork, Left, Middle, Right, Gather, Done]
    assert es.RUNS.count("gather") == 1


def test_a_parallel_join_in_any_completion_order() -> None:
    instance = step(started(ParallelFlow), Fork)
    for branch in (Right, Left):
        instance = step(instance, branch)
        assert instance.reached_steps == frozenset({Gather})
    instance = step(instance, Middle)
    assert instance.active_steps == frozenset({Gather})


def test_a_reached_join_keeps_its_config() -> None:
    instance = step(step(started(ConfigJoinFlow), Fork), Left)
    assert instance.reached_steps == frozenset({Configured})
    assert instance.step_configs == {Configured: {"from": "left"}}
    done = run(instance)
    assert done.status is Status.COMPLETED
    assert done.context.steps["configured"] == {"config_received": {"from": "left"}}


def test_run_executes_runnable_steps_in_definition_order() -> None:
    graph = ParallelFlow.graph
    order = {s: i for i, s in enumerate(graph.steps)}
    done = run(new(ParallelFlow))
    branches = history_steps(done)[1:4]
    assert branches == sorted(branches, key=order.__getitem__)
    assert history_steps(done)[-1] is Done


# -- the original's flows -------------------------------------------------------------------


def test_linear_flow_by_public_calls() -> None:
    instance = started(LinearFlow, {"order_id": 123})
    instance = step(instance, StepA)
    assert instance.active_steps == frozenset({StepB})
    instance = step(instance, StepB)
    assert instance.active_steps == frozenset({Done})
    instance = engine.check_completion(step(instance, Done))
    assert instance.status is Status.COMPLETED
    assert instance.context.initial == {"order_id": 123}
    assert instance.context.steps == {"step_a": {}, "step_b": {"processed": True}, "done": {}}
    assert history_steps(instance) == [StepA, StepB, Done]


def test_linear_flow_by_run() -> None:
    pending = new(LinearFlow, {"data": "test"})
    done = run(pending)
    assert done.status is Status.COMPLETED
    assert done.completed_steps == frozenset({StepA, StepB, Done})
    assert done.skipped_steps == frozenset()
    assert done.context.steps["step_b"] == {"processed": True}
    assert [(e.step_ref, e.event, e.context_updates) for e in done.execution_history] == [
        (StepA, "done", None),
        (StepB, "done", {"processed": True}),
        (Done, "done", None),
    ]
    assert done.error is None
    assert pending.status is Status.PENDING


@pytest.mark.parametrize("approve", [True, False])
def test_branch_flow(approve: bool) -> None:
    taken, other = (es.Approve, es.Reject) if approve else (es.Reject, es.Approve)
    done = run(new(BranchFlow, {"approve": approve}))
    assert done.status is Status.COMPLETED
    assert done.completed_steps == frozenset({es.Approval, taken, Done})
    assert done.skipped_steps == frozenset({other})


def test_a_completed_instance_is_returned_unchanged() -> None:
    done = run(new(LinearFlow))
    assert engine.run(done) == done
    assert engine.advance(done) == done
    assert engine.check_completion(done) == done


def test_check_completion() -> None:
    running = new(LinearFlow).replace(status=Status.RUNNING)
    assert engine.check_completion(running).status is Status.COMPLETED
    busy = started(LinearFlow)
    assert engine.check_completion(busy) == busy
    waiting = run(new(AsyncFlow))
    assert engine.check_completion(waiting) == waiting


@pytest.mark.parametrize(
    ("workflow", "context"),
    [
        (LinearFlow, {}),
        (ExclusiveJoinFlow, {"valid": True}),
        (ExclusiveJoinFlow, {"valid": False}),
        (RouteJoinFlow, {"express": True}),
        (NestedFlow, {"choice": "x"}),
        (NestedFlow, {"choice": "y"}),
        (ParallelFlow, {}),
        (ConfigJoinFlow, {}),
        (MetadataFlow, {}),
        (MixedWaitFlow, {}),
        (TwoWaitsFlow, {}),
        (FailingBranchFlow, {}),
        (AsyncLinearFlow, {"n": 2}),
    ],
)
def test_run_matches_the_public_calls(workflow: type, context: dict[str, Any]) -> None:
    manual = drive(new(workflow, context))
    ran = run(new(workflow, context))
    assert_same_state(ran, manual, END_STATE[:-1])
    assert history_steps(ran) == history_steps(manual)


# -- waiting and resuming ------------------------------------------------------------------


def test_run_stops_at_an_async_step() -> None:
    waiting = run(new(AsyncFlow))
    assert waiting.status is Status.WAITING
    assert waiting.current_step is Pause
    assert waiting.active_steps == frozenset({Pause})
    assert waiting.waiting_steps == frozenset({Pause})
    assert waiting.completed_steps == frozenset({StepA})
    assert ran() == ["step_a", "pause"]
    assert engine.run(waiting) == waiting


def test_resume_then_run_completes() -> None:
    waiting = run(new(AsyncFlow))
    resumed = engine.resume_step(waiting, Pause, "timeout")
    check_invariants(resumed)
    assert resumed.status is Status.RUNNING
    assert resumed.current_step is None
    assert resumed.waiting_steps == frozenset()
    assert resumed.completed_steps == frozenset({StepA, Pause})
    assert resumed.active_steps == frozenset({StepB})
    assert resumed.context.steps["pause"] == {}
    done = run(resumed)
    assert done.status is Status.COMPLETED
    assert history_steps(done) == [StepA, Pause, StepB, Done]
    assert ran() == ["step_a", "pause", "step_b"]
    assert_each_ran_once(done)


def test_wait_for_event_then_resume() -> None:
    waiting = run(new(EventFlow, {"order_id": 456}))
    assert waiting.status is Status.WAITING
    assert waiting.current_step is WaitForEvent
    done = run(engine.resume_step(waiting, WaitForEvent, "received"))
    assert done.status is Status.COMPLETED
    assert history_steps(done) == [StepA, WaitForEvent, StepB, Done]
    assert done.context.steps["step_b"] == {"processed": True}


def test_an_async_def_step_may_wait() -> None:
    waiting = run(new(AsyncPauseFlow))
    assert waiting.status is Status.WAITING
    done = run(engine.resume_step(waiting, es.AsyncPause, "timeout"))
    assert done.status is Status.COMPLETED


def test_resume_of_a_step_that_does_not_wait_changes_nothing() -> None:
    waiting = run(new(AsyncFlow))
    assert engine.resume_step(waiting, StepB, "done") == waiting
    assert engine.resume_step(waiting, StepA, "done") == waiting
    busy = started(LinearFlow)
    assert engine.resume_step(busy, StepA, "done") == busy


def test_resume_with_an_undeclared_event_names_the_declared_ones() -> None:
    waiting = run(new(AsyncFlow))
    with pytest.raises(InvalidTransitionError, match="timeout"):
        engine.resume_step(waiting, Pause, "received")
    with pytest.raises(InvalidTransitionError, match=r"ok.*fine"):
        engine.resume_step(started(LiarFlow), es.Liar, "bogus")


def test_resume_checks_the_event_before_anything_else() -> None:
    busy = started(LinearFlow)
    with pytest.raises(InvalidTransitionError, match="done"):
        engine.resume_step(busy, StepA, "nope")


def test_a_waiting_instance_survives_serialization() -> None:
    waiting = run(new(MixedWaitFlow))
    assert waiting.status is Status.WAITING
    assert waiting.completed_steps == frozenset({Fork, Left})
    assert waiting.reached_steps == frozenset({Gather})
    assert waiting.waiting_steps == frozenset({Pause})
    for loaded in (
        Instance.from_json(waiting.to_json()),
        Instance.from_bytes(waiting.to_bytes()),
        pickle.loads(pickle.dumps(waiting)),
    ):
        assert loaded == waiting
        assert loaded.reached_steps == frozenset({Gather})
        done = run(engine.resume_step(loaded, Pause, "timeout"))
        assert done.status is Status.COMPLETED
        assert history_steps(done) == [Fork, Left, Pause, Gather, Done]


def test_several_steps_wait_at_once() -> None:
    waiting = run(new(TwoWaitsFlow))
    assert waiting.status is Status.WAITING
    assert waiting.waiting_steps == frozenset({WaitLeft, WaitRight})
    assert waiting.active_steps == frozenset({WaitLeft, WaitRight})
    assert ran() == ["fork", "wait_left", "wait_right"]

    left = engine.resume_step(waiting, WaitLeft, "received")
    check_invariants(left)
    assert left.status is Status.WAITING
    assert left.current_step is None
    assert left.active_steps == frozenset({WaitRight})
    assert left.waiting_steps == frozenset({WaitRight})
    assert left.reached_steps == frozenset({Gather})
    assert engine.run(left) == left

    both = engine.resume_step(left, WaitRight, "received")
    check_invariants(both)
    assert both.status is Status.RUNNING
    assert both.active_steps == frozenset({Gather})
    assert both.reached_steps == frozenset()

    done = run(both)
    assert done.status is Status.COMPLETED
    assert history_steps(done) == [Fork, WaitLeft, WaitRight, Gather, Done]
    assert ran() == ["fork", "wait_left", "wait_right", "gather"]


def test_status_is_waiting_only_when_every_active_step_waits() -> None:
    instance = step(started(TwoWaitsFlow), Fork)
    instance = wait(instance, WaitLeft)
    assert instance.status is Status.RUNNING
    assert runnable(instance) == [WaitRight]
    instance = wait(instance, WaitRight)
    assert instance.status is Status.WAITING
    assert runnable(instance) == []


def test_resuming_in_the_other_order() -> None:
    waiting = run(new(TwoWaitsFlow))
    right = engine.resume_step(waiting, WaitRight, "received")
    assert right.status is Status.WAITING
    assert right.waiting_steps == frozenset({WaitLeft})
    done = run(engine.resume_step(right, WaitLeft, "received"))
    assert done.status is Status.COMPLETED
    assert history_steps(done) == [Fork, WaitRight, WaitLeft, Gather, Done]
    assert (runs("wait_left"), runs("wait_right"), runs("gather")) == (1, 1, 1)


def test_a_sync_branch_goes_on_while_the_other_waits() -> None:
    waiting = run(new(MixedWaitFlow))
    assert waiting.status is Status.WAITING
    assert waiting.context.steps == {"fork": {}, "left": {}}
    assert Gather not in waiting.active_steps
    assert ran() == ["fork", "left", "pause"]


# -- failures ----------------------------------------------------------------------------------


def test_a_raising_step_fails_the_instance() -> None:
    failed = run(new(ExplodeFlow))
    assert failed.status is Status.FAILED
    assert failed.error == {
        "kind": "exception",
        "step": "explode",
        "type": "engine_samples.Failures.Declined",
        "message": "card declined",
    }
    assert failed.completed_steps == frozenset({StepA})
    assert failed.context.steps == {"step_a": {}}
    assert history_steps(failed) == [StepA]
    assert failed.active_steps == frozenset()
    assert failed.waiting_steps == frozenset()
    assert failed.reached_steps == frozenset()


def test_a_raising_branch_keeps_the_other_branch_completed() -> None:
    failed = run(new(FailingBranchFlow))
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert failed.error["step"] == "explode"
    assert failed.completed_steps == frozenset({Fork, Left})
    assert failed.active_steps == frozenset()
    assert failed.reached_steps == frozenset()
    assert ran() == ["fork", "left", "explode"]


def test_an_error_result_fails_the_instance() -> None:
    failed = run(new(RefuseFlow))
    assert failed.status is Status.FAILED
    assert failed.error == {"kind": "error", "step": "refuse", "reason": "out of stock"}
    assert failed.completed_steps == frozenset({StepA})


def test_an_undeclared_event_fails_the_instance() -> None:
    failed = run(new(LiarFlow))
    assert failed.status is Status.FAILED
    assert failed.error == {
        "kind": "invalid_event",
        "step": "liar",
        "event": "bogus",
        "declared": ["ok", "fine"],
    }
    assert failed.completed_steps == frozenset({StepA})


def test_fail() -> None:
    instance = step(step(started(ParallelFlow), Fork), Left)
    assert instance.reached_steps == frozenset({Gather})
    failed = engine.fail(instance, Middle, "boom")
    check_invariants(failed)
    assert failed.status is Status.FAILED
    assert failed.error == {"kind": "error", "step": "middle", "reason": "boom"}
    assert failed.active_steps == frozenset()
    assert failed.reached_steps == frozenset()
    assert failed.completed_steps == frozenset({Fork, Left})
    assert instance.status is Status.RUNNING


def test_fail_without_a_step() -> None:
    failed = engine.fail(started(LinearFlow), None, {"why": "cancelled by test"})
    assert failed.status is Status.FAILED
    assert failed.error == {"kind": "error", "step": None, "reason": {"why": "cancelled by test"}}


def test_fail_clears_waiting_steps() -> None:
    failed = engine.fail(run(new(TwoWaitsFlow)), WaitLeft, "gave up")
    check_invariants(failed)
    assert failed.waiting_steps == frozenset()
    assert failed.active_steps == frozenset()


def test_a_failed_instance_stays_failed() -> None:
    failed = run(new(ExplodeFlow))
    assert engine.check_completion(failed) == failed
    assert engine.advance(failed) == failed
    assert engine.run(failed) == failed


# -- versions ---------------------------------------------------------------------------


def test_versioned_dispatch_runs_the_resolved_version() -> None:
    version, workflow = Tickets.resolve_version()
    assert (version, workflow) == (2, TriageFlow)
    done = run(Instance.new(workflow, version, {"priority": "high"}, "ticket::abc"))
    assert done.status is Status.COMPLETED
    assert done.workflow is TriageFlow
    assert done.workflow_version == 2
    assert done.completed_steps == frozenset({Triage, FastTrack, Done})
    assert done.skipped_steps == frozenset({Standard})
    assert done.context.steps == {"triage": {}, "fast": {}, "done": {}}


def test_versioned_dispatch_runs_an_older_version() -> None:
    version, workflow = Tickets.resolve_version(1)
    assert workflow is TriageV1
    done = run(Instance.new(workflow, version, {"priority": "high"}, "ticket::abc"))
    assert done.status is Status.COMPLETED
    assert done.completed_steps == frozenset({Triage, Standard, Done})
    assert done.skipped_steps == frozenset()


# -- arun --------------------------------------------------------------------------------------


def test_run_executes_async_branches_one_after_the_other() -> None:
    done = run(new(RaceFlow))
    assert done.status is Status.COMPLETED
    assert logged() == ["tortoise start", "tortoise end", "hare start", "hare end"]


def test_arun_runs_independent_async_branches_concurrently() -> None:
    done = asyncio.run(engine.arun(new(RaceFlow)))
    check_invariants(done)
    assert done.status is Status.COMPLETED
    starts = [es.LOG.index("tortoise start"), es.LOG.index("hare start")]
    ends = [es.LOG.index("tortoise end"), es.LOG.index("hare end")]
    assert max(starts) < min(ends), es.LOG
    assert history_steps(done) == [Fork, Tortoise, Hare, Gather, Done]
    assert done.context.steps["hare"] == {"runner": "hare"}


def test_arun_inside_a_running_loop() -> None:
    async def main() -> Instance:
        return await engine.arun(new(AsyncLinearFlow, {"n": 5}))

    done = asyncio.run(main())
    assert done.status is Status.COMPLETED
    assert done.context.steps["async_double"] == {"value": 10}


@pytest.mark.parametrize(
    ("workflow", "context"),
    [
        (LinearFlow, {}),
        (ExclusiveJoinFlow, {"valid": True}),
        (ExclusiveJoinFlow, {"valid": False}),
        (RouteJoinFlow, {"express": False}),
        (NestedFlow, {"choice": "x"}),
        (NestedFlow, {"choice": "y"}),
        (ParallelFlow, {}),
        (RaceFlow, {}),
        (AsyncLinearFlow, {"n": 3}),
        (MetadataFlow, {}),
        (TwoWaitsFlow, {}),
        (MixedWaitFlow, {}),
        (AsyncPauseFlow, {}),
        (ExplodeFlow, {}),
        (RefuseFlow, {}),
        (LiarFlow, {}),
        (FailingBranchFlow, {}),
    ],
)
def test_arun_ends_where_run_ends(workflow: type, context: dict[str, Any]) -> None:
    ran = engine.run(new(workflow, context))
    aran = asyncio.run(engine.arun(new(workflow, context)))
    check_invariants(aran)
    assert_same_state(aran, ran)
    assert history_steps(aran) == history_steps(ran)


def test_arun_resumes_like_run() -> None:
    async def main() -> Instance:
        waiting = await engine.arun(new(TwoWaitsFlow))
        assert waiting.status is Status.WAITING
        waiting = engine.resume_step(waiting, WaitRight, "received")
        waiting = engine.resume_step(waiting, WaitLeft, "received")
        return await engine.arun(waiting)

    done = asyncio.run(main())
    assert done.status is Status.COMPLETED
    assert done.completed_steps == frozenset({Fork, WaitLeft, WaitRight, Gather, Done})


def test_arun_reports_an_exception_in_an_async_branch() -> None:
    failed = asyncio.run(engine.arun(new(ExplodeFlow)))
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert failed.error["kind"] == "exception"
    assert failed.error["step"] == step_key(Explode)


# -- the engine fails safely (each test failed before its fix) -----------------------


class Unplanned(Recorded):
    """A step that belongs to no workflow here."""


def test_run_refuses_a_step_outside_the_workflow_before_any_step_runs() -> None:
    stray = started(LinearFlow).activate_step(Unplanned)
    with pytest.raises(InvalidTransitionError, match=r"Unplanned.*not a step of the workflow"):
        engine.run(stray)
    with pytest.raises(InvalidTransitionError, match="Unplanned"):
        asyncio.run(engine.arun(stray))
    with pytest.raises(InvalidTransitionError, match="Unplanned"):
        engine.execute_step(stray, Unplanned)
    assert ran() == [], "no step's code ran, not even the workflow's own start step"


def test_run_refuses_a_reached_step_outside_the_workflow() -> None:
    stray = started(LinearFlow).replace(reached_steps={Unplanned})
    with pytest.raises(InvalidTransitionError, match="Unplanned"):
        engine.run(stray)
    assert ran() == []


def test_fail_refuses_a_completed_instance() -> None:
    done = run(new(LinearFlow))
    assert done.status is Status.COMPLETED
    with pytest.raises(InvalidTransitionError, match="completed"):
        engine.fail(done, None, "too late")
    failed = run(new(ExplodeFlow))
    with pytest.raises(InvalidTransitionError, match="failed"):
        engine.fail(failed, None, "again")


def test_a_dispatcher_instance_runs_the_graph_of_its_own_version() -> None:
    old = run(Instance.new(Tickets, 1, {"priority": "high"}, "ticket::abc"))
    assert old.status is Status.COMPLETED
    assert old.completed_steps == frozenset({Triage, Standard, Done}), "version 1's graph"
    new_ = run(Instance.new(Tickets, 2, {"priority": "high"}, "ticket::abc"))
    assert new_.completed_steps == frozenset({Triage, FastTrack, Done}), "version 2's graph"
    assert old.workflow is Tickets
    assert old.workflow_version == 1


def test_a_version_the_dispatcher_lacks_is_refused_before_anything_runs() -> None:
    unknown = Instance.new(Tickets, 5, {"priority": "high"}, "ticket::abc")
    for call in (engine.run, engine.advance, lambda i: asyncio.run(engine.arun(i))):
        with pytest.raises(ValueError, match=r"no version 5.*\[1, 2\]"):
            call(unknown)
    plain = Instance.new(LinearFlow, 3, {}, "linear::1")
    with pytest.raises(ValueError, match=r"no version 3.*\[1\]"):
        engine.run(plain)
    assert ran() == []


class PriceStep(Step):
    events = ("priced",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        import decimal

        return Ok("priced", {"total": decimal.Decimal("9.99")})


class PriceFlow(Workflow, unique=Unique("price")):
    start = StepA
    transitions = {StepA: {"done": PriceStep}, PriceStep: {"priced": Done}}


class Bare(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        return 42


class BareFlow(Workflow, unique=Unique("bare")):
    start = StepA
    transitions = {StepA: {"done": Bare}, Bare: {"done": Done}}


@pytest.mark.parametrize("runner", ["run", "arun"])
def test_a_result_that_cannot_be_stored_fails_the_instance_naming_the_step(runner: str) -> None:
    drive = engine.run if runner == "run" else lambda i: asyncio.run(engine.arun(i))
    failed = drive(new(PriceFlow))
    check_invariants(failed)
    assert failed.status is Status.FAILED
    error = failed.error
    assert error is not None
    assert (error["kind"], error["step"]) == ("invalid_result", "price_step")
    assert "PriceStep" in error["message"]
    assert "decimal.Decimal" in error["message"]
    assert "context_updates['total']" in error["message"]
    assert failed.completed_steps == frozenset({StepA}), "earlier steps are kept"
    bare = drive(new(BareFlow))
    assert bare.error is not None
    assert bare.error["kind"] == "invalid_result"
    assert "Bare.execute returned int" in bare.error["message"]


def test_a_route_returning_an_undeclared_target_fails_the_run_with_kind_route() -> None:
    for target in ("finish", "stray"):
        failed = run(new(BadRouteFlow, {"target": target}))
        assert failed.status is Status.FAILED
        assert failed.error is not None
        assert (failed.error["kind"], failed.error["step"]) == ("route", "dispatch")
        assert failed.error["event"] == "routed"
        assert "does not declare" in failed.error["message"]
        assert failed.completed_steps == frozenset({Dispatch}), "the routed step completed"
        assert failed.context.steps == {"dispatch": {}}


class RaisingRouteFlow(Workflow, unique=Unique("raisingroute")):
    start = Dispatch
    transitions = {Express: {"next": Finish}, Regular: {"next": Finish}, Finish: {"finished": Done}}

    @transit(Dispatch, "routed", targets=[Express, Regular])
    def route(context: Any) -> Any:
        return {"a": Express}[context.initial["missing"]]


def test_a_route_that_raises_fails_the_run_with_kind_route() -> None:
    failed = run(new(RaisingRouteFlow, {}))
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert failed.error["kind"] == "route"
    assert "KeyError" in failed.error["message"]
    assert "missing" in failed.error["message"]
    assert failed.completed_steps == frozenset({Dispatch})
    # The pure function still raises the route's own exception.
    completed = engine.complete_step(started(RaisingRouteFlow, {}), Dispatch, "routed")
    with pytest.raises(KeyError):
        engine.activate_transitions(completed, Dispatch, "routed")


def test_completion_clears_the_current_step() -> None:
    done = run(new(LinearFlow))
    assert done.status is Status.COMPLETED
    assert done.current_step is None
    by_hand = engine.check_completion(
        started(LinearFlow).replace(active_steps=set(), completed_steps={StepA})
    )
    assert by_hand.status is Status.COMPLETED
    assert by_hand.current_step is None
