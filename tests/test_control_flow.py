"""Control flow beyond the plain DAG (CONTRACT §14) in the pure engine:
``Terminate``, first-wins joins (``join = "first"``) and multi-choice routes
(``@transit(..., many=True)``), their validation and their drawings.
Samples live in ``control_flow_samples``."""

from __future__ import annotations

import asyncio
from typing import Any

import control_flow_samples as cf
import pytest
from hephaestus import (
    Done,
    Instance,
    Status,
    Step,
    Terminate,
    Unique,
    Workflow,
    WorkflowDefinitionError,
    engine,
    transit,
)


@pytest.fixture(autouse=True)
def _clear() -> None:
    cf.RAN.clear()


def new(workflow: type, context: dict[str, Any] | None = None) -> Instance:
    return Instance.new(workflow, 1, context or {}, "i::1")


def history(instance: Instance) -> list[str]:
    return [entry.step_ref.__name__ for entry in instance.execution_history]


# -- Terminate -----------------------------------------------------------------------------


def test_terminate_ends_the_workflow_at_once_and_withdraws_the_rest() -> None:
    done = engine.run(new(cf.StopFlow, {"refuse": True}))
    assert done.status is Status.COMPLETED
    assert done.current_step is None
    # Terminate ran before Work, which came before it in graph order.
    assert history(done) == ["Begin", "Check", "Terminate"]
    assert cf.RAN == ["Begin", "Check"]
    assert done.skipped_steps == {cf.Work}
    assert done.active_steps == frozenset()
    assert done.execution_history[-1].event == "done"


def test_a_branch_that_does_not_terminate_goes_on() -> None:
    done = engine.run(new(cf.StopFlow))
    assert done.status is Status.COMPLETED
    assert history(done) == ["Begin", "Check", "Work", "Finish", "Done"]
    assert done.skipped_steps == {Terminate}


def test_terminate_is_a_leaf_that_need_not_join() -> None:
    class Stopper(Step):
        events = ("stop",)

    class Walker(Step):
        events = ("walked",)

    class Split(Workflow, unique=Unique("split")):
        start = cf.Begin
        transitions = {
            cf.Begin: {"go": [Stopper, Walker]},
            Stopper: {"stop": Terminate},
            Walker: {"walked": Done},
        }

    assert Terminate in Split.graph.steps
    with pytest.raises(WorkflowDefinitionError, match="takes no transitions"):

        class Beyond(Workflow, unique=Unique("beyond")):
            start = cf.Begin
            transitions = {cf.Begin: {"go": Terminate}, Terminate: {"done": Done}}


def test_arun_terminates_too() -> None:
    done = asyncio.run(engine.arun(new(cf.StopFlow, {"refuse": True})))
    assert done.status is Status.COMPLETED
    assert done.execution_history[-1].step_ref is Terminate
    # Work ran alongside Check and finished, which activated Finish; the
    # Terminate that Check led to ran alone and withdrew Finish.
    assert cf.RAN == ["Begin", "Check", "Work"]
    assert done.skipped_steps == {cf.Finish}


# -- first-wins joins ----------------------------------------------------------------------


def test_a_first_wins_join_runs_once_for_the_first_branch() -> None:
    done = engine.run(new(cf.RaceFlow))
    assert done.status is Status.COMPLETED
    # run() goes in graph order (Begin, Slow, Quick, SlowTail, ...): Quick
    # reaches the join first, and SlowTail, not started, never runs.
    assert history(done) == ["Begin", "Slow", "Quick", "FirstAnswer", "Done"]
    assert done.skipped_steps == {cf.SlowTail}
    assert "SlowTail" not in cf.RAN


def test_under_arun_the_branch_that_finishes_first_wins() -> None:
    done = asyncio.run(engine.arun(new(cf.RaceFlow, {"slow": 5.0, "quick": 0.0})))
    assert done.status is Status.COMPLETED
    assert history(done) == ["Begin", "Quick", "FirstAnswer", "Done"]
    assert done.skipped_steps == {cf.Slow, cf.SlowTail}
    # Slow was cancelled, not awaited: it never finished.
    assert "Slow" not in cf.RAN
    assert done.context.steps["first_answer"] == {"steps": ["begin", "quick"]}


def test_a_deferred_choice_between_waiting_steps() -> None:
    waiting = engine.run(new(cf.DeadlineFlow))
    assert waiting.status is Status.WAITING
    assert waiting.waiting_steps == {cf.AwaitPayment, cf.PaymentDeadline}
    paid = engine.resume_step(waiting, cf.AwaitPayment, "received")
    assert paid.active_steps == {cf.Settle}
    assert paid.waiting_steps == frozenset(), "the deadline stopped waiting"
    assert paid.skipped_steps == {cf.PaymentDeadline}
    # The deadline's event comes too late and changes nothing.
    assert engine.resume_step(paid, cf.PaymentDeadline, "timeout") == paid
    done = engine.run(paid)
    assert done.status is Status.COMPLETED
    assert history(done) == ["Begin", "AwaitPayment", "Settle", "Done"]


def test_a_first_wins_join_needs_two_predecessors() -> None:
    class Lonely(Step):
        events = ("ok",)
        join = "first"

    with pytest.raises(WorkflowDefinitionError) as info:

        class OneWay(Workflow, unique=Unique("oneway")):
            start = cf.Begin
            transitions = {cf.Begin: {"go": Lonely}, Lonely: {"ok": Done}}

    (problem,) = info.value.problems
    assert problem.kind == "first_join_without_race"
    assert problem.steps == (Lonely, cf.Begin)
    assert 'Lonely joins with join = "first" but has one predecessor, Begin' in str(info.value)


@pytest.mark.parametrize(("join", "error"), [("any", ValueError), (1, TypeError)])
def test_a_bad_join_is_refused_when_the_step_is_created(join: Any, error: type) -> None:
    with pytest.raises(error, match=r"Bad\.join must be 'all' or 'first'"):
        type("Bad", (Step,), {"events": ("ok",), "join": join})


# -- multi-choice routes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "ran", "skipped"),
    [
        (["email", "push"], ["Email", "Push"], {cf.Sms}),
        (["sms"], ["Sms"], {cf.Email, cf.Push}),
        ("email", ["Email"], {cf.Sms, cf.Push}),
        (["email", "sms", "push"], ["Email", "Sms", "Push"], set()),
    ],
)
def test_a_multi_choice_route_runs_the_chosen_branches_and_joins_them(
    channels: Any, ran: list[str], skipped: set[type]
) -> None:
    done = engine.run(new(cf.NotifyFlow, {"channels": channels}))
    assert done.status is Status.COMPLETED
    assert ["Notify", *ran, "Gather"] == cf.RAN, "Gather ran once, after every chosen branch"
    assert done.skipped_steps == skipped
    if "Email" in ran:
        assert done.context.steps["email"] == {"config": {"to": "a@b.c"}}


def test_a_join_after_a_multi_choice_waits_for_each_chosen_branch() -> None:
    instance = engine.advance(new(cf.NotifyFlow, {"channels": ["email", "push"]}))
    instance = engine.complete_step(instance, cf.Notify, "routed")
    instance = engine.activate_transitions(instance, cf.Notify, "routed")
    assert instance.active_steps == {cf.Email, cf.Push}
    instance = engine.complete_step(instance, cf.Email, "sent")
    instance = engine.activate_transitions(instance, cf.Email, "sent")
    assert cf.Gather not in instance.active_steps
    instance = engine.complete_step(instance, cf.Push, "sent")
    instance = engine.activate_transitions(instance, cf.Push, "sent")
    assert instance.active_steps == {cf.Gather}


def test_a_route_without_many_that_chooses_several_fails_the_instance() -> None:
    failed = engine.run(new(cf.SingleNotifyFlow))
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert failed.error["kind"] == "route"
    assert "may choose only one target" in failed.error["message"]
    assert "many=True" in failed.error["message"]
    assert failed.completed_steps == {cf.Notify}


def test_a_multi_choice_route_must_join_like_a_fan_out() -> None:
    class Left(Step):
        events = ("ok",)

    class Right(Step):
        events = ("ok",)

    with pytest.raises(WorkflowDefinitionError, match="never joins before Done"):

        class Apart(Workflow, unique=Unique("apart")):
            start = cf.Notify
            transitions = {Left: {"ok": Done}, Right: {"ok": Done}}

            @transit(cf.Notify, "routed", targets=[Left, Right], many=True)
            def pick(context: Any) -> Any:
                return [Left, Right]

    class Either(Workflow, unique=Unique("either")):
        start = cf.Notify
        transitions = {Left: {"ok": Done}, Right: {"ok": Done}}

        @transit(cf.Notify, "routed", targets=[Left, Right])
        def pick(context: Any) -> Any:
            return Left

    assert Either.graph.successors(cf.Notify) == {Left, Right}


def test_transit_many_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="many must be a bool"):
        transit(cf.Notify, "routed", targets=[cf.Email], many="yes")(lambda c: cf.Email)  # type: ignore[arg-type]


# -- drawings ------------------------------------------------------------------------------


def test_drawings_show_terminate_and_first_wins_joins_distinctly() -> None:
    mermaid = cf.StopFlow.graph.to_mermaid()
    position = cf.StopFlow.graph.steps.index(Terminate)
    assert f'    s{position}((("Terminate")))' in mermaid
    dot = cf.StopFlow.graph.to_dot()
    assert f's{position} [label="Terminate", shape=doubleoctagon];' in dot
    race = cf.RaceFlow.graph
    position = race.steps.index(cf.FirstAnswer)
    assert f'    s{position}{{{{"FirstAnswer"}}}}' in race.to_mermaid()
    assert f's{position} [label="FirstAnswer", shape=hexagon];' in race.to_dot()
