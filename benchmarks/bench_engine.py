#!/usr/bin/env python3
"""Side-by-side benchmark of ``hephaestus.engine.run`` against SpiffWorkflow and a plain loop.

One run drives the same workflows of no-op steps to completion four ways:

* ``floor``: a plain Python loop that makes each step object and calls its ``execute``,
  the least any engine can do;
* ``hephaestus``: ``engine.run(Instance.new(Flow, 1, {}, "bench::1"))``;
* ``spiff-core``: SpiffWorkflow's core API, a ``WorkflowSpec`` of ``Simple`` and ``Join``
  task specs run with ``Workflow(spec).run_all()``;
* ``spiff-bpmn``: SpiffWorkflow's BPMN engine, a generated BPMN process of script tasks
  (parallel gateways for the fan-out) run with ``BpmnWorkflow(spec).do_engine_steps()``.

Every engine calls the very same ``execute`` methods (those of the hephaestus step classes)
once per step, which the script checks before timing. The workloads are linear chains of
N = 10, 100 and 1,000 steps and a fan-out of 10 branches joined. It reports the time per
run, steps per second, the per-step overhead over the floor and how that grows with N, the
time to define and validate a 1,000-step workflow, checks the targets of the issue, and
with ``--write`` stores a Markdown section in ``BENCHMARKS.md``. ``benchmarks/README.md``
explains each number. Run ``python benchmarks/bench_engine.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import importlib.metadata
import inspect
import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

from hephaestus import Done, Instance, Status, Step, Unique, Workflow
from report import add_common_arguments, factor, header, progress, publish, table

try:
    engine: Any = importlib.import_module("hephaestus.engine")
except ImportError as exc:  # reported when the hephaestus engine is requested
    engine = None
    ENGINE_IMPORT_ERROR: ImportError | None = exc
else:
    ENGINE_IMPORT_ERROR = None

try:
    from SpiffWorkflow.bpmn.parser.BpmnParser import BpmnParser, BpmnValidator
    from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment
    from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
    from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
    from SpiffWorkflow.specs import Join, Simple, WorkflowSpec
    from SpiffWorkflow.util.task import TaskIterator, TaskState
    from SpiffWorkflow.workflow import Workflow as SpiffCoreWorkflow
except ImportError as exc:  # reported when a SpiffWorkflow implementation is requested
    SPIFF_IMPORT_ERROR: ImportError | None = exc
else:
    SPIFF_IMPORT_ERROR = None

ENGINES = ("hephaestus", "spiff-core", "spiff-bpmn")
EVENT = "next"
# SpiffWorkflow walks its task tree recursively (about three frames per task when it
# predicts a chain), and its TaskIterator stops at depth 1,000 by default: a chain of
# 1,000 tasks would report completion with its last tasks never run. Both limits are
# lifted for the SpiffWorkflow runs (see ``lift_spiff_limits``).
SPIFF_RECURSION_LIMIT = 20_000
SPIFF_MAX_DEPTH = 1_000_000
BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
# The dummy arguments of the ``execute`` calls made outside hephaestus (the no-op ignores them).
NOTHING: Any = None

# --------------------------------------------------------------------------------------
# The workloads: hephaestus step classes and workflow classes, built programmatically
# --------------------------------------------------------------------------------------


def noop_execute(self: Step, instance: Any, config: Any, context: Any) -> str:
    """The ``execute`` of every benchmarked step: do nothing and emit ``"next"``."""
    return EVENT


def make_step(name: str) -> type[Step]:
    """Return a new no-op step class called ``name`` with the single event ``"next"``."""
    return type(
        name,
        (Step,),
        {
            "events": (EVENT,),
            "execute": noop_execute,
            "__module__": __name__,
            "__qualname__": name,
        },
    )


def make_linear_steps(count: int) -> tuple[type[Step], ...]:
    """Return ``count`` fresh step classes ``S0`` .. ``S{count-1}``."""
    return tuple(make_step(f"S{i}") for i in range(count))


def define_linear(steps: Sequence[type[Step]]) -> type[Workflow]:
    """Return a workflow class running ``steps`` one after the other, then ``Done``.

    Creating the class validates it (in the Rust core); this is what the define-and-validate
    measurement times.
    """
    targets: list[type[Step]] = [*steps[1:], Done]
    transitions = {step: {EVENT: target} for step, target in zip(steps, targets, strict=True)}
    return type(
        f"Linear{len(steps)}",
        (Workflow,),
        {"start": steps[0], "transitions": transitions, "__module__": __name__},
        unique=Unique("bench"),
    )


def define_fanout(start: type[Step], branches: Sequence[type[Step]], join: type[Step]) -> type:
    """Return a workflow class ``start -> [branches...] -> join -> Done``."""
    transitions: dict[type, dict[str, Any]] = {start: {EVENT: list(branches)}}
    transitions.update({branch: {EVENT: join} for branch in branches})
    transitions[join] = {EVENT: Done}
    return type(
        f"FanOut{len(branches)}",
        (Workflow,),
        {"start": start, "transitions": transitions, "__module__": __name__},
        unique=Unique("bench"),
    )


@dataclass(frozen=True)
class Workload:
    """One workflow, described once and run by every implementation.

    ``steps`` lists the step classes in an order the floor may call them; for a fan-out,
    ``steps[0]`` is the start, ``steps[1:-1]`` the branches and ``steps[-1]`` the join.
    """

    key: str
    label: str
    kind: str  # "linear" or "fanout"
    steps: tuple[type[Step], ...]
    flow: type | None = None  # the hephaestus workflow class

    @property
    def size(self) -> int:
        """The number of no-op steps one run executes."""
        return len(self.steps)


def linear_workload(count: int) -> Workload:
    """Return a linear chain of ``count`` steps."""
    steps = make_linear_steps(count)
    return Workload(
        f"linear-{count}", f"linear, N = {count:,}", "linear", steps, define_linear(steps)
    )


def fanout_workload(width: int) -> Workload:
    """Return a fan-out of ``width`` branches from one start step, joined by one step."""
    start = make_step("FanStart")
    branches = tuple(make_step(f"B{i}") for i in range(width))
    join = make_step("FanJoin")
    return Workload(
        f"fanout-{width}",
        f"fan-out of {width} joined",
        "fanout",
        (start, *branches, join),
        define_fanout(start, branches, join),
    )


# --------------------------------------------------------------------------------------
# The floor and hephaestus
# --------------------------------------------------------------------------------------

Run = Callable[[], Any]


def floor_runner(workload: Workload) -> Run:
    """Return one run of the floor: make each step object and call its ``execute``."""
    steps = workload.steps

    def run() -> int:
        for step in steps:
            step().execute(NOTHING, NOTHING, NOTHING)
        return len(steps)

    return run


def floor_check(workload: Workload, result: Any) -> None:
    """Check that the floor called every step."""
    if result != workload.size:
        raise AssertionError(f"floor: {result} calls for {workload.size} steps")


def hephaestus_runner(workload: Workload) -> Run:
    """Return one run of hephaestus: a new instance driven to completion by ``engine.run``."""
    flow, new = workload.flow, Instance.new
    run_instance: Callable[[Instance], Instance] = engine.run
    if flow is None:
        raise ValueError(f"{workload.label} has no hephaestus workflow class")

    def run() -> Instance:
        return run_instance(new(flow, 1, {}, "bench::1"))

    return run


def hephaestus_check(workload: Workload, result: Any) -> None:
    """Check that the instance completed with one history entry per step (and ``Done``)."""
    if result.status != Status.COMPLETED:
        raise AssertionError(f"hephaestus: {workload.label} ended {result.status}")
    ran = [entry.step_ref for entry in result.execution_history if entry.step_ref is not Done]
    if Counter(ran) != Counter(workload.steps):
        raise AssertionError(
            f"hephaestus: {workload.label} ran {len(ran)} steps, expected {workload.size}"
        )


# --------------------------------------------------------------------------------------
# SpiffWorkflow: the core API and the BPMN engine
# --------------------------------------------------------------------------------------


def lift_spiff_limits() -> None:
    """Let SpiffWorkflow run a 1,000-task chain to its end.

    Its workflow constructor predicts the task tree recursively, so the interpreter's
    recursion limit is raised. Its task iterators (``TaskIterator`` and the BPMN engine's
    ``BpmnTaskIterator``, behind ``get_tasks``, ``run_next``, ``do_engine_steps`` and
    ``is_completed``) stop descending at ``max_depth=1000`` by default, so the tasks of a
    deeper chain are never found ready and the workflow reports completion without running
    them. Their default is raised through ``__defaults__``, so the call path is unchanged.
    """
    sys.setrecursionlimit(max(sys.getrecursionlimit(), SPIFF_RECURSION_LIMIT))
    for iterator in (TaskIterator, BpmnTaskIterator):
        init = iterator.__init__
        defaults = [
            SPIFF_MAX_DEPTH if param.name == "max_depth" else param.default
            for param in inspect.signature(init).parameters.values()
            if param.default is not inspect.Parameter.empty
            and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        if len(defaults) != len(init.__defaults__ or ()):
            raise RuntimeError(f"unexpected {iterator.__name__} signature: cannot lift max_depth")
        init.__defaults__ = tuple(defaults)


if SPIFF_IMPORT_ERROR is None:

    class StepTaskSpec(Simple):  # type: ignore[misc]
        """A SpiffWorkflow core task spec that runs one hephaestus step's ``execute``."""

        def __init__(self, wf_spec: Any, name: str, step: type[Step]) -> None:
            """Name the task spec after the step and remember the step class."""
            super().__init__(wf_spec, name)
            self.step = step

        def _run_hook(self, my_task: Any) -> bool:
            self.step().execute(my_task, None, my_task.data)
            return bool(super()._run_hook(my_task))

    class StepJoinSpec(Join):  # type: ignore[misc]
        """A SpiffWorkflow core ``Join`` that runs one hephaestus step's ``execute``."""

        def __init__(self, wf_spec: Any, name: str, step: type[Step]) -> None:
            """Name the join after the step and remember the step class."""
            super().__init__(wf_spec, name)
            self.step = step

        def _run_hook(self, my_task: Any) -> bool:
            self.step().execute(my_task, None, my_task.data)
            return bool(super()._run_hook(my_task))


def spiff_core_spec(workload: Workload) -> Any:
    """Build the workload's ``WorkflowSpec``: one task spec per step, then ``End``."""
    spec = WorkflowSpec(workload.key, addstart=True)
    if workload.kind == "linear":
        previous = spec.start
        for step in workload.steps:
            task = StepTaskSpec(spec, step.__name__, step)
            previous.connect(task)
            previous = task
    else:
        first, *branches, last = workload.steps
        start = StepTaskSpec(spec, first.__name__, first)
        spec.start.connect(start)
        previous = StepJoinSpec(spec, last.__name__, last)
        for step in branches:
            branch = StepTaskSpec(spec, step.__name__, step)
            start.connect(branch)  # several outputs: an implicit parallel split
            branch.connect(previous)
    previous.connect(Simple(spec, "End"))
    return spec


def spiff_core_define(steps: Sequence[type[Step]]) -> Any:
    """Build and validate a linear core ``WorkflowSpec`` of ``steps`` (the define row)."""
    spec = spiff_core_spec(Workload("define", "define", "linear", tuple(steps)))
    errors = spec.validate()
    if errors:
        raise AssertionError(f"SpiffWorkflow core rejects the chain: {errors[:3]}")
    return spec


def spiff_core_runner(workload: Workload) -> Run:
    """Return one run of SpiffWorkflow core: ``Workflow(spec)`` and ``run_all()``."""
    spec = spiff_core_spec(workload)

    def run() -> Any:
        workflow = SpiffCoreWorkflow(spec)
        workflow.run_all()
        return workflow

    return run


def spiff_completed_steps(workflow: Any, workload: Workload) -> list[str]:
    """Return the names of the workload's steps among a workflow's completed tasks."""
    names = {step.__name__ for step in workload.steps}
    return [
        task.task_spec.name
        for task in workflow.get_tasks(state=TaskState.COMPLETED)
        if task.task_spec.name in names
    ]


def spiff_check(label: str) -> Callable[[Workload, Any], None]:
    """Return the check of a SpiffWorkflow run: completed, every step's task completed."""

    def check(workload: Workload, workflow: Any) -> None:
        if not workflow.is_completed():
            raise AssertionError(f"{label}: {workload.label} did not complete")
        done = sorted(spiff_completed_steps(workflow, workload))
        if done != sorted(step.__name__ for step in workload.steps):
            raise AssertionError(
                f"{label}: {workload.label} completed {len(done)} step tasks, "
                f"expected {workload.size}"
            )

    return check


def bpmn_script_task(index: int, step: type[Step]) -> str:
    """Return a script task whose script calls the ``execute`` of step number ``index``."""
    return (
        f'<bpmn:scriptTask id="{step.__name__}">'
        f"<bpmn:script>run_step({index})</bpmn:script></bpmn:scriptTask>"
    )


def bpmn_xml(workload: Workload) -> str:
    """Return a BPMN 2.0 document with one executable process for ``workload``.

    A linear workload is ``start -> S0 -> ... -> S{N-1} -> end``; a fan-out is ``start ->
    FanStart -> split -> B0..B9 -> join -> FanJoin -> end`` with parallel gateways.
    """
    steps = workload.steps
    nodes = ['<bpmn:startEvent id="start"/>', '<bpmn:endEvent id="end"/>']
    nodes += [bpmn_script_task(index, step) for index, step in enumerate(steps)]
    names = [step.__name__ for step in steps]
    if workload.kind == "linear":
        chain = ["start", *names, "end"]
        flows = list(itertools.pairwise(chain))
    else:
        nodes += ['<bpmn:parallelGateway id="split"/>', '<bpmn:parallelGateway id="join"/>']
        first, *branches, last = names
        flows = [("start", first), (first, "split"), ("join", last), (last, "end")]
        for branch in branches:
            flows += [("split", branch), (branch, "join")]
    nodes += [
        f'<bpmn:sequenceFlow id="flow{k}" sourceRef="{source}" targetRef="{target}"/>'
        for k, (source, target) in enumerate(flows)
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<bpmn:definitions xmlns:bpmn="{BPMN_NS}" id="bench_definitions" '
        'targetNamespace="http://example.com/bench">'
        f'<bpmn:process id="{process_id(workload)}" isExecutable="true">'
        f"{''.join(nodes)}</bpmn:process></bpmn:definitions>"
    )


def process_id(workload: Workload) -> str:
    """Return the BPMN process id of a workload (an XML name)."""
    return workload.key.replace("-", "_")


def bpmn_spec(workload: Workload, xml: str, validator: Any = None) -> Any:
    """Parse ``xml`` (XSD-validated when ``validator`` is given) and return its process spec."""
    parser = BpmnParser(validator=validator)
    parser.add_bpmn_str(xml.encode())
    return parser.get_spec(process_id(workload))


def spiff_bpmn_runner(workload: Workload) -> Run:
    """Return one run of the BPMN engine: ``BpmnWorkflow(spec)`` and ``do_engine_steps()``.

    The stock ``PythonScriptEngine`` runs each script task's ``run_step(i)``, which calls
    the ``execute`` of step ``i``.
    """
    spec = bpmn_spec(workload, bpmn_xml(workload))
    steps = workload.steps

    def run_step(index: int) -> None:
        steps[index]().execute(NOTHING, NOTHING, NOTHING)

    script_engine = PythonScriptEngine(environment=TaskDataEnvironment({"run_step": run_step}))

    def run() -> Any:
        workflow = BpmnWorkflow(spec, script_engine=script_engine)
        workflow.do_engine_steps()
        return workflow

    return run


# --------------------------------------------------------------------------------------
# The implementations behind one description
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Impl:
    """How one implementation runs a workload and checks the outcome of a run."""

    name: str
    label: str
    runner: Callable[[Workload], Run]
    check: Callable[[Workload, Any], None]


def build_impls(engines: Sequence[str]) -> list[Impl]:
    """Return the floor followed by the engines named, in order."""
    table: dict[str, Impl] = {
        "floor": Impl("floor", "plain loop (floor)", floor_runner, floor_check),
        "hephaestus": Impl("hephaestus", "hephaestus", hephaestus_runner, hephaestus_check),
        "spiff-core": Impl(
            "spiff-core",
            "SpiffWorkflow core",
            spiff_core_runner,
            spiff_check("SpiffWorkflow core"),
        ),
        "spiff-bpmn": Impl(
            "spiff-bpmn",
            "SpiffWorkflow BPMN",
            spiff_bpmn_runner,
            spiff_check("SpiffWorkflow BPMN"),
        ),
    }
    return [table["floor"], *(table[name] for name in engines)]


@contextlib.contextmanager
def counting_executes(steps: Sequence[type[Step]]) -> Iterator[Counter[type]]:
    """Within the block, count the ``execute`` calls of each of ``steps``."""
    calls: Counter[type] = Counter()

    def counted(self: Step, instance: Any, config: Any, context: Any) -> str:
        calls[type(self)] += 1
        return EVENT

    for step in steps:
        step.execute = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        for step in steps:
            step.execute = noop_execute  # type: ignore[method-assign]


def verify(impls: Sequence[Impl], workloads: Sequence[Workload]) -> dict[tuple[str, str], Run]:
    """Check that every implementation runs every workload fully, each step exactly once.

    Returns the run callables, by (implementation, workload) key.
    """
    runs: dict[tuple[str, str], Run] = {}
    for workload in workloads:
        for impl in impls:
            run = impl.runner(workload)
            with counting_executes(workload.steps) as calls:
                result = run()
            impl.check(workload, result)
            wrong = {s.__name__: calls[s] for s in workload.steps if calls[s] != 1}
            if wrong or sum(calls.values()) != workload.size:
                raise AssertionError(
                    f"{impl.label}: {workload.label} did not call each execute once: {wrong}"
                )
            impl.check(workload, run())
            runs[impl.name, workload.key] = run
    return runs


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How long and how large one run is."""

    quick: bool
    linear_sizes: tuple[int, ...]  # the first, middle and last are the targets' N
    fanout_width: int
    define_size: int
    scale_sizes: tuple[int, ...]  # N for the scale table; the first is the reference
    budget_ns: int  # timed nanoseconds per measurement
    batch_ns: int  # target length of one timed batch
    min_rounds: int


FULL = Settings(
    quick=False,
    linear_sizes=(10, 100, 1_000),
    fanout_width=10,
    define_size=1_000,
    scale_sizes=(100, 1_000, 10_000, 100_000),
    budget_ns=1_000_000_000,
    batch_ns=20_000_000,
    min_rounds=5,
)
QUICK = Settings(
    quick=True,
    linear_sizes=(5, 10, 20),
    fanout_width=10,
    define_size=20,
    scale_sizes=(5, 10, 20, 40),
    budget_ns=1_000_000,
    batch_ns=200_000,
    min_rounds=1,
)


def timed(function: Callable[[], Any], count: int) -> int:
    """Call ``function`` ``count`` times; return the elapsed nanoseconds."""
    start = perf_counter_ns()
    for _ in range(count):
        function()
    return perf_counter_ns() - start


def measure(function: Callable[[], Any], settings: Settings) -> float:
    """Return the best nanoseconds per call of ``function`` over timed batches.

    The batch size grows until a batch takes ``settings.batch_ns``; then batches repeat
    until the timed total reaches the budget (at least ``settings.min_rounds`` batches, at
    most three budgets of wall time past the minimum). The garbage collector is off while a
    batch runs, as in ``timeit``, and collects between batches.
    """
    gc.collect()
    gc.disable()
    try:
        size = 1
        elapsed = timed(function, size)
        while elapsed < settings.batch_ns:
            size = max(2 * size, size * settings.batch_ns // max(elapsed, 1))
            gc.collect()
            elapsed = timed(function, size)
        best, spent, rounds = elapsed / size, elapsed, 1
        deadline = time.monotonic_ns() + 3 * settings.budget_ns
        while rounds < settings.min_rounds or (
            spent < settings.budget_ns and time.monotonic_ns() < deadline
        ):
            gc.collect()
            elapsed = timed(function, size)
            best = min(best, elapsed / size)
            spent += elapsed
            rounds += 1
        return best
    finally:
        gc.enable()


@dataclass(frozen=True)
class DefineCase:
    """One way of defining and validating a ``define_size``-step linear workflow."""

    key: str
    label: str
    engine: str  # the implementation it belongs to
    function: Callable[[], Any]


def define_cases(engines: Sequence[str], size: int) -> list[DefineCase]:
    """Return the define-and-validate measurements of the engines named."""
    steps = make_linear_steps(size)
    cases = []
    if "hephaestus" in engines:
        cases += [
            DefineCase(
                "hephaestus-class",
                f"hephaestus: Workflow class over {size:,} existing step classes",
                "hephaestus",
                lambda: define_linear(steps),
            ),
            DefineCase(
                "hephaestus-all",
                f"hephaestus: {size:,} step classes and the Workflow class",
                "hephaestus",
                lambda: define_linear(make_linear_steps(size)),
            ),
        ]
    if "spiff-core" in engines:
        cases.append(
            DefineCase(
                "spiff-core",
                f"SpiffWorkflow core: WorkflowSpec of {size:,} task specs + validate()",
                "spiff-core",
                lambda: spiff_core_define(steps),
            )
        )
    if "spiff-bpmn" in engines:
        workload = Workload("define", "define", "linear", steps)
        xml = bpmn_xml(workload)
        validator = BpmnValidator()  # loads the BPMN XSD once, outside the timing
        cases.append(
            DefineCase(
                "spiff-bpmn",
                f"SpiffWorkflow BPMN: parse + XSD-validate {size:,} script tasks",
                "spiff-bpmn",
                lambda: bpmn_spec(workload, xml, validator),
            )
        )
    return cases


# --------------------------------------------------------------------------------------
# Results, targets and the report
# --------------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything one run measured."""

    impls: list[Impl]
    settings: Settings
    workloads: list[Workload]
    run_ns: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    define: list[tuple[DefineCase, float]] = dataclasses.field(default_factory=list)
    # (shape, N) -> {"hephaestus": ns per step, "floor": ns per step}
    scale: dict[tuple[str, int], dict[str, float]] = dataclasses.field(default_factory=dict)

    def scale_growth(self, shape: str, size: int) -> float | None:
        """hephaestus' time per step at ``size`` over that at the smallest scale N."""
        first = self.settings.scale_sizes[0]
        at = self.scale.get((shape, size), {}).get("hephaestus")
        base = self.scale.get((shape, first), {}).get("hephaestus")
        return factor(at, base)

    def has(self, name: str) -> bool:
        """Whether implementation ``name`` took part."""
        return any(impl.name == name for impl in self.impls)

    def linear(self, size: int) -> Workload:
        """Return the linear workload of ``size`` steps."""
        return next(w for w in self.workloads if w.kind == "linear" and w.size == size)

    def steps_per_second(self, impl: str, workload: Workload) -> float | None:
        """Return an implementation's steps per second on a workload."""
        ns = self.run_ns.get(workload.key, {}).get(impl)
        return None if ns is None else workload.size * 1e9 / ns

    def overhead_ns(self, impl: str, workload: Workload) -> float | None:
        """Return the per-step overhead over the floor in ns: (run - floor) / steps."""
        measured = self.run_ns.get(workload.key, {})
        if impl not in measured or "floor" not in measured:
            return None
        return (measured[impl] - measured["floor"]) / workload.size

    def growth(self, impl: str) -> float | None:
        """Return the per-step overhead at the largest linear N over that at the smallest."""
        sizes = self.settings.linear_sizes
        return factor(
            self.overhead_ns(impl, self.linear(sizes[-1])),
            self.overhead_ns(impl, self.linear(sizes[0])),
        )


def run_benchmarks(impls: list[Impl], settings: Settings) -> Results:
    """Verify the implementations, then time every workload and the definitions."""
    workloads = [linear_workload(size) for size in settings.linear_sizes]
    workloads.append(fanout_workload(settings.fanout_width))
    results = Results(impls, settings, workloads)
    progress("checking that every implementation runs every step once")
    runs = verify(impls, workloads)
    progress("timing")
    for workload in workloads:
        for impl in impls:
            ns = measure(runs[impl.name, workload.key], settings)
            results.run_ns.setdefault(workload.key, {})[impl.name] = ns
            per_step = ns / workload.size
            progress(
                f"  {impl.label:<20} {workload.label:<22} {ns / 1e3:>12,.1f} µs/run "
                f"{per_step:>10,.0f} ns/step"
            )
    engines = [impl.name for impl in impls]
    for case in define_cases(engines, settings.define_size):
        ns = measure(case.function, settings)
        results.define.append((case, ns))
        progress(f"  {case.label:<64} {ns / 1e6:>10,.2f} ms")
    if "hephaestus" in engines:
        measure_scale(results)
    return results


SCALE_SHAPES = (("linear", "chain, per step"), ("fanout", "fan-out joined, per branch"))


def measure_scale(results: Results) -> None:
    """Time hephaestus and the floor on chains and joined fan-outs of growing N.

    One workload is alive at a time (a 100,000-step workflow is 100,000 classes).
    """
    progress("timing the scale table")
    for shape, label in SCALE_SHAPES:
        for size in results.settings.scale_sizes:
            workload = linear_workload(size) if shape == "linear" else fanout_workload(size)
            runs = {"hephaestus": hephaestus_runner(workload), "floor": floor_runner(workload)}
            hephaestus_check(workload, runs["hephaestus"]())
            cell = results.scale.setdefault((shape, size), {})
            for name, run in runs.items():
                cell[name] = measure(run, results.settings) / workload.size
            progress(
                f"  {label:<28} N = {size:>7,}: hephaestus {cell['hephaestus']:>8,.0f} ns, "
                f"floor {cell['floor']:>6,.0f} ns"
            )
            del workload, runs
            gc.collect()


@dataclass(frozen=True)
class Target:
    """One target of the issue and how this run did against it."""

    name: str
    requirement: str
    measured: str
    status: str


def judge(name: str, requirement: str, value: float | None, text: str, passed: bool) -> Target:
    """Return a target row; a missing measurement is ``n/a``."""
    if value is None:
        return Target(name, requirement, "n/a", "n/a")
    return Target(name, requirement, text, "PASS" if passed else "MISS")


def evaluate_targets(results: Results) -> list[Target]:
    """Return the issue's targets judged on these results."""
    sizes = results.settings.linear_sizes
    first, middle, last = sizes[0], sizes[len(sizes) // 2], sizes[-1]
    overheads = [results.overhead_ns("hephaestus", results.linear(n)) for n in sizes]
    worst = None if None in overheads else max(o for o in overheads if o is not None)
    growth = results.growth("hephaestus")
    spiff_growth = results.growth("spiff-core")
    mid = results.linear(middle)
    ours = results.steps_per_second("hephaestus", mid)
    vs_core = factor(ours, results.steps_per_second("spiff-core", mid))
    vs_bpmn = factor(ours, results.steps_per_second("spiff-bpmn", mid))
    return [
        *scale_targets(results),
        judge(
            f"hephaestus per-step overhead over the floor, worst of N = {first:,}..{last:,}",
            "< 2 µs",
            worst,
            f"{(worst or 0) / 1e3:.2f} µs",
            worst is not None and worst < 2_000,
        ),
        judge(
            f"hephaestus per-step overhead, N = {last:,} / N = {first:,}",
            "<= 1.3x",
            growth,
            f"{growth or 0:.2f}x",
            growth is not None and growth <= 1.3,
        ),
        judge(
            f"SpiffWorkflow core per-step overhead, N = {last:,} / N = {first:,}",
            "grows (> 1.3x)",
            spiff_growth,
            f"{spiff_growth or 0:.2f}x",
            spiff_growth is not None and spiff_growth > 1.3,
        ),
        judge(
            f"steps/s vs SpiffWorkflow core, N = {middle:,}",
            ">= 30x",
            vs_core,
            f"{vs_core or 0:.1f}x",
            vs_core is not None and vs_core >= 30,
        ),
        judge(
            f"steps/s vs SpiffWorkflow BPMN, N = {middle:,}",
            ">= 30x and > vs core",
            vs_bpmn,
            f"{vs_bpmn or 0:.1f}x",
            vs_bpmn is not None and vs_bpmn >= 30 and (vs_core is None or vs_bpmn > vs_core),
        ),
    ]


def scale_targets(results: Results) -> list[Target]:
    """The scale table's targets: growth with N, and the overhead at the smallest N."""
    if not results.scale:
        return []
    sizes = results.settings.scale_sizes
    first = sizes[0]
    limits = {sizes[-2]: 1.5, sizes[-1]: 2.0}
    targets = []
    for shape, label in SCALE_SHAPES:
        for size, limit in limits.items():
            growth = results.scale_growth(shape, size)
            targets.append(
                judge(
                    f"{label}, N = {size:,} / N = {first:,}",
                    f"<= {limit}x",
                    growth,
                    f"{growth or 0:.2f}x",
                    growth is not None and growth <= limit,
                )
            )
    cell = results.scale.get(("linear", first), {})
    overhead = None if len(cell) < 2 else cell["hephaestus"] - cell["floor"]
    targets.append(
        judge(
            f"chain overhead over the floor, per step, N = {first:,}",
            "< 2 µs",
            overhead,
            f"{(overhead or 0) / 1e3:.2f} µs",
            overhead is not None and overhead < 2_000,
        )
    )
    return targets


def micros(ns: float) -> str:
    """Format nanoseconds as microseconds with a sensible number of digits."""
    us = ns / 1e3
    if us >= 100:
        return f"{us:,.0f} µs"
    return f"{us:,.1f} µs" if us >= 10 else f"{us:,.2f} µs"


def render_header(results: Results) -> list[str]:
    """Return the heading, the command, the machine and the software of a run."""
    packages = ["hephaestus-core"] if results.has("hephaestus") else []
    if results.has("spiff-core") or results.has("spiff-bpmn"):
        packages += ["SpiffWorkflow", "lxml"]
    title = "## Engine: hephaestus vs SpiffWorkflow"
    return [
        *header(title, "bench_engine.py", results.settings.quick, packages),
        "- Every engine calls the same no-op `execute` methods; each run creates the "
        "instance (`Instance.new`, `Workflow(spec)`, `BpmnWorkflow(spec)`) and runs it to "
        "completion. SpiffWorkflow's task-tree depth limit of 1,000 is lifted so that its "
        "1,000-step chain runs to the end.",
    ]


def ratio_cell(text: str, ratio: float | None) -> str:
    """Append a ratio in parentheses to ``text`` when there is one."""
    return text if ratio is None else f"{text} ({ratio:.1f}x)"


def render_runs(results: Results) -> list[str]:
    """Return the tables of time per run and steps per second."""
    has_ours = results.has("hephaestus")
    time_rows, speed_rows = [], []
    for workload in results.workloads:
        measured = results.run_ns[workload.key]
        ours_ns = measured.get("hephaestus")
        time_cells, speed_cells = [], []
        for impl in results.impls:
            ns = measured[impl.name]
            # The floor is the reference every engine is measured against: no ratio.
            ratio = None if impl.name in ("hephaestus", "floor") else factor(ns, ours_ns)
            time_cells.append(ratio_cell(micros(ns), ratio))
            speed_cells.append(ratio_cell(f"{workload.size * 1e9 / ns:,.0f}", ratio))
        time_rows.append([workload.label, f"{workload.size:,}", *time_cells])
        speed_rows.append([workload.label, f"{workload.size:,}", *speed_cells])
    header = ["workload", "steps", *(impl.label for impl in results.impls)]
    time_note = "; in parentheses the time relative to hephaestus (higher is slower)"
    speed_note = "; in parentheses how many times more steps per second hephaestus runs"
    return [
        "### Time per run",
        "",
        "Best of repeated runs: creating one instance and running it to completion"
        f"{time_note if has_ours else ''}.",
        "",
        table(header, time_rows),
        "",
        "### Steps per second",
        "",
        f"Steps of a run divided by the time per run{speed_note if has_ours else ''}.",
        "",
        table(header, speed_rows),
    ]


def render_overhead(results: Results) -> list[str]:
    """Return the table of per-step overhead over the floor, with its growth in N."""
    engines = [impl for impl in results.impls if impl.name != "floor"]
    rows = []
    for workload in results.workloads:
        cells = []
        for impl in engines:
            overhead = results.overhead_ns(impl.name, workload)
            cells.append("n/a" if overhead is None else micros(overhead))
        rows.append([workload.label, *cells])
    sizes = results.settings.linear_sizes
    growth = [results.growth(impl.name) for impl in engines]
    rows.append(
        [
            f"growth, linear N = {sizes[-1]:,} / N = {sizes[0]:,}",
            *("n/a" if g is None else f"{g:.2f}x" for g in growth),
        ]
    )
    return [
        "### Per-step overhead over the floor",
        "",
        "(time per run - the floor's time per run) / steps: what each engine adds to every "
        "step on top of calling its `execute`.",
        "",
        table(["workload", *(impl.label for impl in engines)], rows),
    ]


def render_define(results: Results) -> list[str]:
    """Return the table of define-and-validate times."""
    if not results.define:
        return []
    ours = next((ns for case, ns in results.define if case.key == "hephaestus-class"), None)
    rows = []
    for case, ns in results.define:
        ratio = None if case.engine == "hephaestus" else factor(ns, ours)
        rows.append([case.label, ratio_cell(f"{ns / 1e6:,.2f} ms", ratio)])
    size = results.settings.define_size
    note = "; in parentheses the time relative to the hephaestus Workflow class"
    return [
        f"### Define and validate a {size:,}-step workflow",
        "",
        f"Best of repeated definitions of a linear {size:,}-step workflow"
        f"{note if ours is not None else ''}.",
        "",
        table(["definition", "time"], rows),
    ]


def render_scale(results: Results) -> list[str]:
    """Return the table of the time per step as the workflow grows."""
    if not results.scale:
        return []
    sizes = results.settings.scale_sizes
    rows = []
    for shape, label in SCALE_SHAPES:
        cells = [results.scale.get((shape, n), {}) for n in sizes]
        rows.append(
            [f"hephaestus, {label}", *(micros(c["hephaestus"]) if c else "n/a" for c in cells)]
        )
        rows.append([f"floor, {label}", *(micros(c["floor"]) if c else "n/a" for c in cells)])
        growth = [results.scale_growth(shape, n) for n in sizes]
        rows.append(
            [f"hephaestus growth, {label}", *("n/a" if g is None else f"{g:.2f}x" for g in growth)]
        )
    return [
        "### Cost as the workflow grows",
        "",
        "`engine.run` of a chain of N no-op steps and of a fan-out of N branches joined at "
        "one step; time per step (per branch), best of repeated runs, with the floor (a plain "
        f"loop calling the same `execute` methods) beside it. Growth is against N = {sizes[0]:,}.",
        "",
        table(["", *(f"N = {n:,}" for n in sizes)], rows),
    ]


def render_targets(results: Results) -> list[str]:
    """Return the table of the issue's targets with PASS or MISS."""
    rows = [[t.name, t.requirement, t.measured, t.status] for t in evaluate_targets(results)]
    return ["### Targets", "", table(["target", "required", "measured", "result"], rows)]


def render(results: Results) -> str:
    """Render the results as the Markdown section (without the markers)."""
    sections = [
        render_header(results),
        render_runs(results),
        render_overhead(results),
        render_define(results),
        render_scale(results),
        render_targets(results),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark hephaestus.engine.run against SpiffWorkflow and a plain loop."
    )
    add_common_arguments(
        parser, "a smoke run of a few seconds with tiny workflows; the numbers mean nothing"
    )
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated subset of {','.join(ENGINES)} (default: all; "
        "the plain-loop floor always runs)",
    )
    args = parser.parse_args(argv)
    args.engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(args.engines) - set(ENGINES))
    if unknown:
        parser.error(f"--engines takes names from {', '.join(ENGINES)}; got {unknown}")
    if "hephaestus" in args.engines and engine is None:
        parser.error(
            f"cannot import hephaestus.engine ({ENGINE_IMPORT_ERROR}); build the package, "
            "or leave it out with --engines spiff-core,spiff-bpmn"
        )
    if {"spiff-core", "spiff-bpmn"} & set(args.engines) and SPIFF_IMPORT_ERROR is not None:
        parser.error(
            f"cannot import SpiffWorkflow ({SPIFF_IMPORT_ERROR}); `pip install SpiffWorkflow`, "
            "or leave it out with --engines hephaestus"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    if SPIFF_IMPORT_ERROR is None:
        lift_spiff_limits()
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    results = run_benchmarks(build_impls(args.engines), settings)
    section = render(results)
    publish(section, args.write, "bench_engine", started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
