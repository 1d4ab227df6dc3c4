"""Control flow beyond the plain DAG (CONTRACT §14) in the pure engine:
``Terminate``, first-wins joins (``join = "first"``) and multi-choice routes
(``@transit(..., many=True)``), their validation and their drawings.
Samples live in ``control_flow_samples``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import control_flow_samples as cf
import pytest
from hephaestus import (
    Done,
    ForEach,
    Instance,
    InvalidTransitionError,
    Ok,
    Repeat,
    Status,
    Step,
    Terminate,
    Unique,
    Workflow,
    WorkflowDefinitionError,
    _core,
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


# -- ForEach ----------------------------------------------------------------------------------


def runs_of(instance: Instance, step: type) -> list[tuple[int | None, dict[str, Any] | None]]:
    return [
        (entry.iteration, entry.context_updates)
        for entry in instance.execution_history
        if entry.step_ref is step
    ]


def test_for_each_runs_the_step_once_per_item_in_order() -> None:
    done = engine.run(new(cf.LinesFlow, {"lines": ["a", "b", "c"]}))
    assert done.status is Status.COMPLETED
    expected = [{"sku": sku, "warehouse": "north"} for sku in "abc"]
    assert done.context.steps["reserve"] == expected
    assert runs_of(done, cf.Reserve) == list(enumerate(expected))
    assert [e.iteration for e in done.execution_history] == [None, 0, 1, 2, None, None]
    assert cf.RAN == ["Load", "Reserve[0]", "Reserve[1]", "Reserve[2]", "Finish"]
    assert Instance.from_json(done.to_json()) == done
    assert Instance.from_bytes(done.to_bytes()) == done


def test_for_each_over_no_items_completes_at_once_with_an_empty_list() -> None:
    done = engine.run(new(cf.LinesFlow, {"lines": []}))
    assert done.status is Status.COMPLETED
    assert done.context.steps["reserve"] == []
    assert runs_of(done, cf.Reserve) == []
    assert cf.Reserve in done.completed_steps


def test_a_failing_item_fails_the_instance_with_its_index() -> None:
    failed = engine.run(new(cf.LinesFlow, {"lines": ["a", "broken", "c"]}))
    assert failed.status is Status.FAILED
    assert failed.error == {
        "kind": "exception",
        "step": "reserve",
        "type": "builtins.ValueError",
        "message": "cannot reserve broken",
        "index": 1,
    }
    assert runs_of(failed, cf.Reserve) == [(0, {"sku": "a", "warehouse": "north"})]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("abc", 'context.initial["lines"] is a str, not a list'),
        (None, 'context.initial["lines"] is a None, not a list'),
        (list(range(10_001)), "10001 items, more than max_items=10000"),
    ],
)
def test_bad_items_fail_the_instance_before_any_item_runs(lines: Any, message: str) -> None:
    failed = engine.run(new(cf.LinesFlow, {"lines": lines}))
    assert failed.status is Status.FAILED
    assert failed.error == {"kind": "items", "step": "reserve", "message": message}
    assert cf.RAN == ["Load"]


def test_missing_items_are_named() -> None:
    failed = engine.run(new(cf.LinesFlow))
    assert failed.error == {
        "kind": "items",
        "step": "reserve",
        "message": 'context.initial has no key "lines"',
    }


def test_items_can_come_from_the_context_when_the_node_activates() -> None:
    done = engine.run(new(cf.ComputedFlow, {"lines": ["a"]}))
    assert [r["sku"] for r in done.context.steps["reserve"]] == ["a", "x", "y"]
    too_many = engine.run(new(cf.ComputedFlow, {"lines": ["a", "b"]}))
    assert too_many.error == {
        "kind": "items",
        "step": "reserve",
        "message": "4 items, more than max_items=3",
    }


def test_for_each_under_arun_honours_its_concurrency() -> None:
    cf.ACTIVE.update(now=0, most=0)
    done = asyncio.run(engine.arun(new(cf.PackFlow, {"items": list(range(20))})))
    assert done.status is Status.COMPLETED
    assert done.context.steps["pack"] == [{"box": i} for i in range(20)]
    assert cf.ACTIVE["most"] == 3
    assert sorted(i for i, _ in runs_of(done, cf.Pack)) == list(range(20))


# -- Repeat ----------------------------------------------------------------------------------


def test_repeat_runs_again_until_another_event_and_counts_its_runs() -> None:
    done = engine.run(new(cf.PollFlow, {"answers": ["pending", "pending", "settled"]}))
    assert done.status is Status.COMPLETED
    assert runs_of(done, cf.Poll) == [(0, {"run": 0}), (1, {"run": 1}), (2, {"run": 2})]
    assert [e.event for e in done.execution_history if e.step_ref is cf.Poll] == [
        "pending",
        "pending",
        "settled",
    ]
    assert done.context.steps["poll"] == {"run": 2}, "the last run's updates"
    assert history(done) == ["Begin", "Poll", "Poll", "Poll", "Finish", "Done"]


def test_repeat_fails_after_max_iterations() -> None:
    failed = engine.run(new(cf.PollFlow, {"answers": []}))
    assert failed.status is Status.FAILED
    assert failed.error == {
        "kind": "max_iterations",
        "step": "poll",
        "max_iterations": 4,
        "iteration": 3,
    }
    assert len(runs_of(failed, cf.Poll)) == 4


def test_repeat_can_leave_by_terminate() -> None:
    done = engine.run(new(cf.PollFlow, {"answers": ["pending", "refused"]}))
    assert done.status is Status.COMPLETED
    assert history(done)[-1] == "Terminate"
    assert cf.Finish not in done.completed_steps


def test_an_instance_stopped_in_the_middle_of_a_for_each_goes_on_where_it_was() -> None:
    instance = new(cf.LinesFlow, {"lines": ["a", "b", "c"]})
    driver = _core.Run(engine.graph_of(instance), instance)
    [(load, none)] = driver.take_runnable()
    assert (load, none) == (cf.Load, None)
    driver.complete(load, "loaded")
    units = driver.take_runnable()
    assert units == [(cf.Reserve, 0), (cf.Reserve, 1), (cf.Reserve, 2)]
    config = driver.config(cf.Reserve, 1)
    assert config == {"warehouse": "north", "item": "b", "index": 1}
    driver.complete(cf.Reserve, cf.Reserve().execute(instance, config, None), iteration=1)
    middle = driver.instance
    assert middle.active_steps == {cf.Reserve}
    assert Instance.from_json(middle.to_json()) == middle
    assert Instance.from_bytes(middle.to_bytes()) == middle
    cf.RAN.clear()
    done = engine.run(Instance.from_json(middle.to_json()))
    assert cf.RAN == ["Reserve[0]", "Reserve[2]", "Finish"], "item 1 does not run again"
    assert [i for i, _ in runs_of(done, cf.Reserve)] == [1, 0, 2]
    assert [r["sku"] for r in done.context.steps["reserve"]] == ["a", "b", "c"]
    with pytest.raises(InvalidTransitionError):
        driver.complete(cf.Reserve, "reserved", iteration=1)


# -- validation ------------------------------------------------------------------------------


def problems_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(WorkflowDefinitionError) as info:
        type("Bad", (Workflow,), body, unique=Unique("bad"))
    return [(p.kind, p.message) for p in info.value.problems]


def test_a_for_each_step_declares_exactly_one_event() -> None:
    found = problems_of(
        {
            "start": cf.Begin,
            "transitions": {
                cf.Begin: {"go": ForEach(cf.Check, items="lines")},
                cf.Check: {"ok": Done, "refused": Done},
            },
        }
    )
    assert found == [
        (
            "for_each_events",
            'ForEach(Check) needs a step that declares exactly one event, but it declares "ok", '
            '"refused"',
        )
    ]


def test_repeat_again_must_be_an_event_of_the_step_and_take_no_transition() -> None:
    found = problems_of(
        {
            "start": cf.Begin,
            "transitions": {
                cf.Begin: {"go": Repeat(cf.Work, again="pending", max_iterations=0)},
                cf.Work: {"worked": Done},
            },
        }
    )
    assert ("limit_below_one", "max_iterations of Work must be at least 1") in found
    assert any(kind == "repeat_again_undeclared" and '"pending"' in m for kind, m in found)
    found = problems_of(
        {
            "start": cf.Begin,
            "transitions": {
                cf.Begin: {"go": Repeat(cf.Check, again="refused", max_iterations=3)},
                cf.Check: {"ok": Done, "refused": Done},
            },
        }
    )
    assert found == [
        (
            "repeat_again_has_transition",
            'Repeat(Check) runs the step again on "refused", so that event takes no transition',
        )
    ]


def test_a_step_is_one_node() -> None:
    found = problems_of(
        {
            "start": cf.Begin,
            "transitions": {
                cf.Begin: {"go": [ForEach(cf.Work, items="a"), cf.Check]},
                cf.Check: {"ok": cf.Work, "refused": Done},
                cf.Work: {"worked": Done},
            },
        }
    )
    assert [kind for kind, _ in found] == ["node_conflict"]
    assert "Work is used as" in found[0][1]


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: ForEach(int, items="a"), TypeError, "wraps a Step subclass"),
        (lambda: ForEach(cf.Work, items=3), TypeError, "items must be a key"),
        (lambda: ForEach(cf.Work, items=""), ValueError, "non-empty key"),
        (lambda: ForEach(cf.Work, items="a", concurrency=1.5), TypeError, "concurrency"),
        (lambda: Repeat(cf.Work, again=None, max_iterations=1), TypeError, "again"),
        (
            lambda: Repeat(cf.Work, again="x", every={"duration": 1}, max_iterations=1),
            ValueError,
            "Repeat: every: Wait config is missing 'unit'",
        ),
        (lambda: Repeat(cf.Work, again="x", max_iterations="3"), TypeError, "max_iterations"),
    ],
)
def test_bad_node_arguments_are_refused_at_once(make: Any, error: Any, match: str) -> None:
    with pytest.raises(error, match=match):
        make()


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


def test_drawings_show_for_each_as_a_stack_and_repeat_as_a_loop() -> None:
    lines = cf.LinesFlow.graph
    position = lines.steps.index(cf.Reserve)
    assert f'    s{position}@{{ shape: st-rect, label: "Reserve" }}' in lines.to_mermaid()
    assert f's{position} [label="Reserve", shape=box3d];' in lines.to_dot()
    poll = cf.PollFlow.graph
    position = poll.steps.index(cf.Poll)
    loop = f's{position} -->|"pending (again, at most 4 runs)"| s{position}'
    assert loop in poll.to_mermaid()
    assert (
        f's{position} -> s{position} [label="pending (again, at most 4 runs)", style=bold];'
        in poll.to_dot()
    )
    # The loop arrow is a drawing, not an edge: the graph stays acyclic.
    assert (cf.Poll, "pending", cf.Poll) not in poll.edges


def test_complete_step_refuses_a_loop_node_whose_runs_complete_one_by_one() -> None:
    instance = engine.advance(new(cf.LinesFlow, {"lines": ["a"]}))
    instance = engine.complete_step(instance, cf.Load, "loaded")
    instance = engine.activate_transitions(instance, cf.Load, "loaded")
    with pytest.raises(InvalidTransitionError, match="Reserve is a ForEach step"):
        engine.complete_step(instance, cf.Reserve, "reserved")
    done = engine.run(instance)
    assert done.context.steps["reserve"] == [{"sku": "a", "warehouse": "north"}]


# -- live drawings ------------------------------------------------------------------------------


def _half_done_lines() -> Instance:
    instance = new(cf.LinesFlow, {"lines": ["a", "b", "c"]})
    driver = _core.Run(engine.graph_of(instance), instance)
    [(load, _)] = driver.take_runnable()
    driver.complete(load, "loaded")
    driver.take_runnable()
    driver.complete(cf.Reserve, Ok("reserved", {}), iteration=1)
    return driver.instance


def test_live_drawings_mark_each_step_and_show_loop_progress() -> None:
    graph = cf.LinesFlow.graph
    middle = _half_done_lines()
    text = graph.to_text(instance=middle)
    assert "instance i::1 (running)" in text
    assert "[x] Load" in text
    assert "[>] Reserve (1 of 3 items done)" in text
    assert "[ ] Finish" in text
    assert text.rstrip().endswith("[ ] not reached")
    mermaid = graph.to_mermaid(instance=middle)
    reserve = graph.steps.index(cf.Reserve)
    assert f'    s{reserve}@{{ shape: st-rect, label: "Reserve (1 of 3 items done)" }}' in mermaid
    assert f"    class s{reserve} active" in mermaid
    assert 'subgraph legend ["Legend"]' in mermaid
    dot = graph.to_dot(instance=middle)
    assert 'label="Reserve (1 of 3 items done)", shape=box3d, style=filled' in dot
    assert "subgraph cluster_legend" in dot
    assert graph.to_mermaid() == graph.to_mermaid(instance=None)
    assert "classDef" not in graph.to_mermaid()


def test_live_drawings_mark_the_failed_step_and_the_skipped_ones() -> None:
    failed = engine.run(new(cf.LinesFlow, {"lines": ["broken"]}))
    assert "[!] Reserve" in cf.LinesFlow.graph.to_text(instance=failed)
    sent = engine.run(new(cf.NotifyFlow, {"channels": ["sms"]}))
    text = cf.NotifyFlow.graph.to_text(instance=sent)
    assert "[-] Email" in text
    assert "[x] Sms" in text
    assert "routed -> Email?, Sms?, Push?" in text
    polling = engine.advance(new(cf.PollFlow, {"answers": ["pending", "settled"]}))
    polling = engine.complete_step(polling, cf.Begin, "go")
    polling = engine.activate_transitions(polling, cf.Begin, "go")
    assert "[>] Poll (run 1 of 4)" in cf.PollFlow.graph.to_text(instance=polling)


def test_a_live_drawing_refuses_an_instance_of_another_workflow() -> None:
    other = engine.run(new(cf.StopFlow))
    with pytest.raises(ValueError, match="cannot be drawn on LinesFlow"):
        cf.LinesFlow.graph.to_text(instance=other)


GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.mark.parametrize(
    ("render", "suffix"), [("to_mermaid", "mmd"), ("to_dot", "dot"), ("to_text", "txt")]
)
def test_live_drawings_match_their_golden_files(render: str, suffix: str) -> None:
    """The live drawing of a ForEach half done. To accept a deliberate change,
    run with HEPHAESTUS_UPDATE_GOLDEN=1 and review the diff."""
    drawn = getattr(cf.LinesFlow.graph, render)(instance=_half_done_lines())
    golden = GOLDEN / f"lines_half_done.{suffix}"
    if os.environ.get("HEPHAESTUS_UPDATE_GOLDEN"):
        golden.write_text(drawn, encoding="utf-8")
    assert drawn == golden.read_text(encoding="utf-8")


@pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz is not installed (make test installs it when it can)",
)
@pytest.mark.parametrize(
    "flow", [cf.LinesFlow, cf.PollFlow, cf.RaceFlow, cf.StopFlow, cf.NotifyFlow]
)
def test_graphviz_accepts_every_drawing_of_the_new_nodes(flow: type[Workflow]) -> None:
    instance = engine.run(new(flow, {"lines": ["a"], "answers": ["settled"], "channels": "sms"}))
    for dot in (flow.graph.to_dot(), flow.graph.to_dot(instance=instance)):
        result = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "<svg" in result.stdout


# -- edge cases ----------------------------------------------------------------------------------


def test_an_empty_for_each_that_wins_a_race_withdraws_its_sibling_before_it_expands() -> None:
    for runner in (engine.run, lambda i: asyncio.run(engine.arun(i))):
        done = runner(new(cf.EmptyRaceFlow, {"none": [], "some": ["a", "b"]}))
        assert done.status is Status.COMPLETED
        assert history(done) == ["Begin", "Either", "Done"]
        assert done.skipped_steps == {cf.Loud}
        assert done.context.steps["quiet"] == []


def test_terminate_runs_on_its_first_arrival_even_with_other_predecessors() -> None:
    done = engine.run(new(cf.GuardedFlow, {"refuse": True}))
    assert done.status is Status.COMPLETED, "Approval was waiting, and is withdrawn"
    assert history(done) == ["Begin", "Check", "Terminate"]
    assert done.skipped_steps == {cf.Approval}
    assert done.waiting_steps == frozenset()


def test_a_leaf_cannot_be_run_per_item_or_repeated() -> None:
    found = problems_of(
        {"start": cf.Begin, "transitions": {cf.Begin: {"go": ForEach(Terminate, items="a")}}}
    )
    assert (
        "leaf_in_node",
        "Terminate ends the workflow, so it cannot be run per item or repeated",
    ) in found


def test_loop_progress_that_does_not_fit_the_workflow_is_refused() -> None:
    started = engine.advance(new(cf.PollFlow, {"answers": []}))
    started = engine.activate_transitions(
        engine.complete_step(started, cf.Begin, "go"), cf.Begin, "go"
    )
    doc = json.loads(started.to_json())
    key = next(iter(doc["active_steps"]))
    doc["loops"] = {key: {"kind": "repeat", "iteration": 2**32 - 1, "items": None, "results": []}}
    broken = Instance.from_json(json.dumps(doc))
    with pytest.raises(ValueError, match="does not fit the workflow PollFlow"):
        engine.run(broken)
    with pytest.raises(ValueError, match="cannot be drawn on PollFlow"):
        cf.PollFlow.graph.to_text(instance=broken)


def test_a_refused_completion_of_an_item_loses_no_item() -> None:
    instance = new(cf.LinesFlow, {"lines": ["a", "b", "c"]})
    driver = _core.Run(engine.graph_of(instance), instance)
    [(load, _)] = driver.take_runnable()
    driver.complete(load, "loaded")
    units = driver.take_runnable()
    driver.complete(cf.Reserve, "reserved", iteration=1)
    with pytest.raises(InvalidTransitionError):
        driver.complete(cf.Reserve, "reserved", iteration=1)
    for step, index in units:
        if index != 1:
            driver.complete(step, "reserved", iteration=index)
    [(finish, _)] = driver.take_runnable()
    assert finish is cf.Finish


def test_a_reader_takes_no_items_and_hands_out_nothing() -> None:
    cf.ITEM_CALLS["n"] = 0
    instance = engine.advance(new(cf.CountedFlow))
    instance = engine.complete_step(instance, cf.Load, "loaded")
    instance = engine.activate_transitions(instance, cf.Load, "loaded")
    reader = _core.Run(engine.graph_of(instance), instance, start=False, drive=False)
    assert reader.take_runnable() == []
    assert reader.instance == instance
    assert cf.ITEM_CALLS["n"] == 0, "reading ran the items function"
    done = engine.run(instance)
    assert cf.ITEM_CALLS["n"] == 1
    assert len(done.context.steps["reserve"]) == 2
