"""Workflows (CONTRACT §7): definition, validation when the class is created,
introspection and versioned dispatch."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
from hephaestus import Context, WorkflowDefinitionError
from hephaestus.steps import Done, Step
from hephaestus.unique import Unique
from hephaestus.workflow import Route, Workflow, transit
from workflow_samples import (
    ChargeCard,
    FastTrack,
    OrderFlow,
    ProcessPayment,
    RejectOrder,
    ReserveStock,
    Ship,
    Standard,
    Tickets,
    Triage,
    TriageFlow,
    TriageV1,
    ValidateOrder,
)


def make_step(name: str, events: tuple[str, ...], **attrs: Any) -> type[Step]:
    def execute(self: Any, instance: Any, config: Any, context: Any) -> str:
        return events[0]

    return type(name, (Step,), {"events": events, "execute": execute, **attrs})


def define(start: Any, transitions: dict[Any, Any], **options: Any) -> type[Workflow]:
    options.setdefault("unique", Unique("test"))
    return type("Flow", (Workflow,), {"start": start, "transitions": transitions}, **options)


def definition_error(start: Any, transitions: dict[Any, Any], **options: Any) -> str:
    with pytest.raises(WorkflowDefinitionError) as caught:
        define(start, transitions, **options)
    return str(caught.value)


# -- a valid workflow and its introspection ----------------------------------


def test_graph_holds_the_definition() -> None:
    graph = OrderFlow.graph
    assert graph.start is ValidateOrder
    assert graph.start_config == {"strict": True}
    assert graph.steps == (
        ValidateOrder,
        ProcessPayment,
        RejectOrder,
        ChargeCard,
        ReserveStock,
        Ship,
        Done,
    )
    assert (ProcessPayment, "paid", ReserveStock) in graph.edges
    assert len(graph.edges) == 8
    assert graph.predecessors(Ship) == frozenset({ChargeCard, ReserveStock})
    assert graph.successors(ValidateOrder) == frozenset({ProcessPayment, RejectOrder})
    assert graph.predecessors(ValidateOrder) == frozenset()
    assert graph.workflow == "OrderFlow"


def test_class_options_are_recorded() -> None:
    assert OrderFlow.version == 1
    assert OrderFlow.unique == Unique("orderid")
    assert OrderFlow.tags == ("orders",)
    assert OrderFlow.metadata == {"team": "checkout"}
    assert OrderFlow.versions is None
    assert TriageFlow.version == 2


def test_dynamic_routes_are_edges_and_callable() -> None:
    assert isinstance(TriageFlow.route, Route)
    assert TriageFlow.graph.successors(Triage) == frozenset({FastTrack, Standard})
    assert TriageFlow.route(Context.new({"priority": "high"})) is FastTrack
    assert TriageFlow.route(Context.new({})) is Standard


def test_mermaid_output() -> None:
    assert TriageFlow.graph.to_mermaid() == (
        "flowchart TD\n"
        '    s0(["Triage"])\n'
        '    s1["FastTrack"]\n'
        '    s2(("Done"))\n'
        '    s3["Standard"]\n'
        '    s0 -.->|"routed"| s1\n'
        '    s0 -.->|"routed"| s3\n'
        '    s1 -->|"done"| s2\n'
        '    s3 -->|"done"| s2\n'
    )


MERMAID_LINE = re.compile(
    r'^(flowchart TD|    s\d+(\(\["[^"]*"\]\)|\["[^"]*"\]|\(\("[^"]*"\)\))'
    r'|    s\d+ (-->|-\.->)\|"[^"]*"\| s\d+)$'
)


@pytest.mark.parametrize("workflow", [OrderFlow, TriageFlow, TriageV1])
def test_mermaid_follows_the_flowchart_grammar(workflow: type[Workflow]) -> None:
    for line in workflow.graph.to_mermaid().splitlines():
        assert MERMAID_LINE.match(line), line


@pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz is not installed (make test installs it when it can)",
)
@pytest.mark.parametrize("workflow", [OrderFlow, TriageFlow, TriageV1])
def test_graphviz_accepts_the_dot_output(workflow: type[Workflow]) -> None:
    result = subprocess.run(
        ["dot", "-Tsvg"], input=workflow.graph.to_dot(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "<svg" in result.stdout


# -- validation rules -----------------------------------------------------------


def test_cycle_names_its_path() -> None:
    a, b = make_step("Alpha", ("next",)), make_step("Beta", ("back", "fin"))
    message = definition_error(a, {a: {"next": b}, b: {"back": a, "fin": Done}})
    assert "Flow is not a valid workflow" in message
    assert "cycle: Alpha -> Beta -> Alpha" in message


def test_unreachable_step_is_named() -> None:
    a, lost = make_step("Alpha", ("next",)), make_step("Lost", ("next",))
    message = definition_error(a, {a: {"next": Done}, lost: {"next": Done}})
    assert "Lost is not reachable from the start step" in message


def test_a_leaf_must_be_done() -> None:
    a, b = make_step("Alpha", ("next",)), make_step("Beta", ())
    message = definition_error(a, {a: {"next": b}})
    assert "Beta has no transitions out, but only Done may end a workflow" in message


def test_static_fan_out_must_join_before_done() -> None:
    a, x, y = make_step("Alpha", ("go",)), make_step("Xray", ("x",)), make_step("Yank", ("y",))
    message = definition_error(a, {a: {"go": [x, y]}, x: {"x": Done}, y: {"y": Done}})
    assert 'the fan-out of Alpha on "go" to Xray, Yank never joins before Done' in message


def test_two_steps_may_not_share_a_context_key() -> None:
    a = make_step("Alpha", ("next",), step_key="shared")
    b = make_step("Beta", ("next",), step_key="shared")
    message = definition_error(a, {a: {"next": b}, b: {"next": Done}})
    assert 'Alpha and Beta share the context key "shared"' in message


def test_declared_events_need_transitions_and_transitions_declared_events() -> None:
    a = make_step("Alpha", ("next", "spare"))
    message = definition_error(a, {a: {"next": Done, "other": Done}})
    assert 'Alpha declares the event "spare" but no transition handles it' in message
    assert 'uses the event "other", which it does not declare' in message


def test_every_problem_is_reported_at_once() -> None:
    a, b = make_step("Alpha", ("next", "spare")), make_step("Beta", ())
    message = definition_error(a, {a: {"next": b}})
    assert message.count("\n  - ") == 2


def test_start_and_targets_must_be_steps() -> None:
    class NotAStep:
        pass

    a = make_step("Alpha", ("next",))
    assert "NotAStep is not a Step subclass" in definition_error(NotAStep, {})
    assert "NotAStep is not a Step subclass" in definition_error(a, {a: {"next": NotAStep}})
    assert "a target is a step class" in definition_error(a, {a: {"next": "Done"}})
    with pytest.raises(WorkflowDefinitionError, match="needs a start step"):
        type("Flow", (Workflow,), {}, unique=Unique("a"))


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"unique": None}, "unique=Unique(...) is required"),
        ({"unique": "orderid"}, "unique must be a Unique"),
        ({"version": 0}, "version must be a positive int"),
        ({"version": True}, "version must be a positive int"),
        ({"version": "1"}, "version must be a positive int"),
        ({"tags": "orders"}, "tags must be strings"),
        ({"tags": ("a", 1)}, "tags must be strings"),
        ({"metadata": {"a": object()}}, "is not JSON-safe"),
        ({"metadata": {1: "a"}}, "keys must be str"),
        ({"metadata": {"x": float("nan")}}, "is not JSON-safe"),
        ({"metadata": ["a"]}, "metadata must be a dict"),
        ({"current": 1}, "current is only for versions"),
    ],
)
def test_class_options_are_checked(options: dict[str, Any], fragment: str) -> None:
    a = make_step("Alpha", ("next",))
    assert fragment in definition_error(a, {a: {"next": Done}}, **options)


def test_unique_key_rules_come_from_unique() -> None:
    with pytest.raises(ValueError, match="Order-ID"):
        Unique("Order-ID")


# -- versioned dispatch -------------------------------------------------------


def test_dispatcher_resolves_versions() -> None:
    assert Tickets.versions == {1: TriageV1, 2: TriageFlow}
    assert Tickets.version == 2
    assert Tickets.graph is TriageFlow.graph
    assert Tickets.resolve_version() == (2, TriageFlow)
    assert Tickets.resolve_version(1) == (1, TriageV1)
    with pytest.raises(ValueError, match="has no version 3"):
        Tickets.resolve_version(3)
    assert OrderFlow.resolve_version() == (1, OrderFlow)


def test_version_for_can_be_overridden() -> None:
    class Routed(
        Workflow, unique=Unique("ticket"), versions={1: TriageV1, 2: TriageFlow}, current=2
    ):
        @classmethod
        def version_for(cls, versions: Any, options: Any) -> int:
            return 1 if options.get("legacy") else 2

    assert Routed.resolve_version(legacy=True) == (1, TriageV1)
    assert Routed.resolve_version() == (2, TriageFlow)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"versions": {1: TriageV1}, "current": 1, "version": 1}, "either version or versions"),
        ({"versions": {0: TriageV1}, "current": 0}, "version 0 is not a positive int"),
        ({"versions": {1: TriageV1}, "current": 2}, "current=2 is not one of the versions [1]"),
        ({"versions": {1: TriageV1}}, "current is required"),
        ({"versions": {1: object}, "current": 1}, "is <class 'object'>, not a Workflow"),
        ({"versions": {3: TriageV1}, "current": 3}, "version 3 is TriageV1, whose version is 1"),
        ({"versions": {2: Tickets}, "current": 2}, "is itself a dispatcher"),
        ({"versions": {}, "current": 1}, "versions must be a non-empty dict"),
    ],
)
def test_dispatcher_rules(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as caught:
        type("Dispatch", (Workflow,), {}, unique=Unique("ticket"), **options)
    assert fragment in str(caught.value)


def test_transit_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="non-empty str"):
        transit(Triage, "", targets=[Standard])(lambda context: Standard)
    with pytest.raises(TypeError, match="list of step classes"):
        transit(Triage, "routed", targets=Standard)(lambda context: Standard)  # type: ignore[arg-type]


# -- problems as data, version_for None ---------------------------------------------------


def test_a_definition_error_carries_its_problems_as_data() -> None:
    a = make_step("Alpha", ("next", "spare"))
    b = make_step("Beta", ("back",))
    with pytest.raises(WorkflowDefinitionError) as caught:
        define(a, {a: {"next": b}, b: {"back": a}})
    error = caught.value
    assert error.workflow == "Flow"
    by_kind = {p.kind: p for p in error.problems}
    assert set(by_kind) == {"cycle", "event_without_transition"}
    assert by_kind["cycle"].steps == (a, b, a)
    assert by_kind["event_without_transition"].steps == (a,)
    assert by_kind["event_without_transition"].event == "spare"
    for problem in error.problems:
        assert f"\n  - {problem.message}" in str(error)


def test_python_side_problems_are_data_too() -> None:
    class NotAStep:
        pass

    a = make_step("Alpha", ("next",))
    with pytest.raises(WorkflowDefinitionError) as caught:
        define(a, {a: {"next": NotAStep}})
    assert [(p.kind, p.steps) for p in caught.value.problems] == [("not_a_step", (NotAStep,))]
    with pytest.raises(WorkflowDefinitionError) as caught:
        define(a, {a: {"next": Done}}, version=0)
    assert [p.kind for p in caught.value.problems] == ["option"]


def test_version_for_returning_none_means_the_current_version() -> None:
    class Defaulted(
        Workflow, unique=Unique("ticket"), versions={1: TriageV1, 2: TriageFlow}, current=2
    ):
        @classmethod
        def version_for(cls, versions: Any, options: Any) -> int | None:
            return 1 if options.get("legacy") else None

    assert Defaulted.resolve_version() == (2, TriageFlow)
    assert Defaulted.resolve_version(legacy=True) == (1, TriageV1)
    assert Defaulted.resolve_version(1) == (1, TriageV1)


def test_a_route_target_with_a_config_is_refused() -> None:
    """A route picks its target at run time and passes no config: a
    ``(Step, config)`` among its targets is a definition error, not dropped."""
    from hephaestus import Done, Step, Unique, Workflow, transit
    from hephaestus.errors import WorkflowDefinitionError

    class Choose(Step):
        events = ("chosen",)

        def execute(self, instance, config, context):
            return "chosen"

    class Next(Step):
        events = ("done",)

        def execute(self, instance, config, context):
            return "done"

    with pytest.raises(WorkflowDefinitionError, match="take no config"):

        class Routed(Workflow, unique=Unique("routed")):
            start = Choose
            transitions = {Next: {"done": Done}}

            @transit(Choose, "chosen", targets=[(Next, {"a": 1})])
            def route(context):
                return Next
