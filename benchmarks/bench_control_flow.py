#!/usr/bin/env python3
"""What a ``ForEach`` item costs, next to the plain step it replaces.

Two comparisons, each run side by side in one process, best of several rounds:

* **Pure engine.** ``engine.run`` over ``ForEach(Item, items="items")`` with 100 and
  10,000 items, against a static fan-out of 100 branches joined (the plain way to run
  one step per item when the items are known when the workflow is written). The unit is
  the time per item (per branch), the whole run divided by the item count. Target: an
  item of the 10,000-item ``ForEach`` costs at most 1.5x a branch of the 100-wide fan-out.
* **Runtime.** ``Hephaestus(path).run(...)`` on SQLite, every run committed durably:
  a ``ForEach`` of 200 items run one at a time (``concurrency=1``) against a 20-step chain
  (time per item vs time per step), and a ``ForEach`` of 1,000 items eight at once
  against 100 instances of a 10-step chain eight at once (items/s vs steps/s). Target: an
  item costs what an ordinary step costs (within 1.25x).

Every item and step is a no-op that returns its event. ``--write`` stores the Markdown
section in ``BENCHMARKS.md``; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hephaestus import Done, ForEach, Hephaestus, Instance, Status, Step, Unique, Workflow, engine
from report import add_common_arguments, factor, header, progress, publish, table


class Begin(Step):
    events = ("go",)

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        return "go"


class Item(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        return "done"


class Gather(Step):
    events = ("gathered",)

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        return "gathered"


class Items(Workflow, unique=Unique("items")):
    """Begin, then Item once per item of ``context.initial["items"]``."""

    start = Begin
    transitions = {
        Begin: {"go": ForEach(Item, items="items", max_items=100_000)},
        Item: {"done": Done},
    }


class SequentialItems(Workflow, unique=Unique("seqitems")):
    """The same, one item at a time."""

    start = Begin
    transitions = {
        Begin: {"go": ForEach(Item, items="items", concurrency=1)},
        Item: {"done": Done},
    }


class ParallelItems(Workflow, unique=Unique("paritems")):
    """The same, eight items at once."""

    start = Begin
    transitions = {
        Begin: {"go": ForEach(Item, items="items", concurrency=8)},
        Item: {"done": Done},
    }


def _step(name: str, event: str) -> type[Step]:
    def execute(self: Step, instance: Any, config: Any, context: Any) -> str:
        return event

    return type(name, (Step,), {"events": (event,), "execute": execute, "__module__": __name__})


BRANCHES = [_step(f"Branch{i}", "done") for i in range(100)]
for _branch in BRANCHES:
    globals()[_branch.__name__] = _branch


class FanOut(Workflow, unique=Unique("fanout")):
    """Begin, then 100 branches at once, joined by Gather."""

    start = Begin
    transitions = {
        Begin: {"go": list(BRANCHES)},
        **{branch: {"done": Gather} for branch in BRANCHES},
        Gather: {"gathered": Done},
    }


CHAIN = [_step(f"Link{i}", "next") for i in range(20)]
for _link in CHAIN:
    globals()[_link.__name__] = _link


def _chain(name: str, length: int) -> type[Workflow]:
    links = CHAIN[:length]
    body: dict[str, Any] = {
        "start": links[0],
        "transitions": {
            **{a: {"next": b} for a, b in itertools.pairwise(links)},
            links[-1]: {"next": Done},
        },
        "__module__": __name__,
    }
    flow = type(name, (Workflow,), body, unique=Unique(name.lower()))
    globals()[name] = flow
    return flow


Chain20 = _chain("Chain20", 20)
Chain10 = _chain("Chain10", 10)


@dataclass(frozen=True)
class Settings:
    rounds: int
    small: int
    large: int
    sequential: int
    parallel: int
    instances: int


FULL = Settings(rounds=5, small=100, large=10_000, sequential=200, parallel=1_000, instances=100)
QUICK = Settings(rounds=1, small=20, large=200, sequential=20, parallel=40, instances=8)


def best_ns(run: Callable[[], Any], rounds: int) -> int:
    """The fastest of ``rounds`` runs, in ns (the collector off while timing)."""
    best = None
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            run()
            took = time.perf_counter_ns() - start
        finally:
            gc.enable()
        best = took if best is None else min(best, took)
    assert best is not None
    return best


def pure(settings: Settings) -> dict[str, float]:
    """ns per item (per branch) under ``engine.run``."""

    def for_each(count: int) -> Callable[[], Any]:
        def run() -> Instance:
            done = engine.run(Instance.new(Items, 1, {"items": list(range(count))}, "items::1"))
            assert done.status is Status.COMPLETED
            assert len(done.context.steps["item"]) == count
            return done

        return run

    def fan_out() -> Instance:
        done = engine.run(Instance.new(FanOut, 1, {}, "fanout::1"))
        assert done.status is Status.COMPLETED
        assert len(done.execution_history) == len(BRANCHES) + 3
        return done

    return {
        "fan-out": best_ns(fan_out, settings.rounds * 4) / len(BRANCHES),
        "small": best_ns(for_each(settings.small), settings.rounds * 4) / settings.small,
        "large": best_ns(for_each(settings.large), settings.rounds) / settings.large,
    }


def durable(settings: Settings, folder: Path) -> dict[str, float]:
    """ns per item and per step under the runtime, and items/steps per second."""
    results: dict[str, float] = {}
    for round_ in range(settings.rounds):
        with Hephaestus(folder / f"r{round_}.db", concurrency=8) as app:
            app.run(Chain20, {}, id=f"chain20::warm{round_}", timeout=120)
            start = time.perf_counter_ns()
            app.run(Chain20, {}, id=f"chain20::a{round_}", timeout=120)
            app.run(Chain20, {}, id=f"chain20::b{round_}", timeout=120)
            step = (time.perf_counter_ns() - start) / 40
            items = {"items": list(range(settings.sequential))}
            start = time.perf_counter_ns()
            done = app.run(SequentialItems, items, id=f"seqitems::a{round_}", timeout=300)
            item = (time.perf_counter_ns() - start) / settings.sequential
            assert done.status is Status.COMPLETED
            start = time.perf_counter_ns()
            ids = [
                app.start_instance(Chain10, {}, id=f"chain10::r{round_}x{k}")
                for k in range(settings.instances)
            ]
            for iid in ids:
                assert app.wait(iid, timeout=300).status is Status.COMPLETED
            steps_per_s = settings.instances * 10 / ((time.perf_counter_ns() - start) / 1e9)
            items = {"items": list(range(settings.parallel))}
            start = time.perf_counter_ns()
            done = app.run(ParallelItems, items, id=f"paritems::a{round_}", timeout=300)
            items_per_s = settings.parallel / ((time.perf_counter_ns() - start) / 1e9)
            assert done.status is Status.COMPLETED
        progress(
            f"  runtime round {round_ + 1}: step {step / 1e3:.0f} µs, item {item / 1e3:.0f} µs; "
            f"{steps_per_s:,.0f} steps/s, {items_per_s:,.0f} items/s at 8 at once"
        )
        for key, value, better in (
            ("step", step, min),
            ("item", item, min),
            ("steps/s", steps_per_s, max),
            ("items/s", items_per_s, max),
        ):
            results[key] = better(results.get(key, value), value)
    return results


def render(settings: Settings, quick: bool, p: dict[str, float], d: dict[str, float]) -> str:
    lines = header(
        "## Control flow: what a ForEach item costs",
        "bench_control_flow.py",
        quick,
        ["hephaestus-core"],
    )
    lines += [f"- Best of {settings.rounds} round(s); the machine is shared.", ""]
    lines += ["### Pure engine: `engine.run`", ""]
    lines.append(
        table(
            ["workflow", "per item (branch)", "vs a fan-out branch"],
            [
                [f"fan-out of {len(BRANCHES)} branches, joined", f"{p['fan-out']:,.0f} ns", "-"],
                [
                    f"ForEach of {settings.small:,} items",
                    f"{p['small']:,.0f} ns",
                    f"{factor(p['small'], p['fan-out']) or 0:.2f}x",
                ],
                [
                    f"ForEach of {settings.large:,} items",
                    f"{p['large']:,.0f} ns",
                    f"{factor(p['large'], p['fan-out']) or 0:.2f}x",
                ],
            ],
        )
    )
    lines += ["", "### Runtime: SQLite, each item and step committed", ""]
    lines.append(
        table(
            ["measure", "ordinary steps", "ForEach items", "items vs steps"],
            [
                [
                    "one at a time: time per step / item",
                    f"{d['step'] / 1e3:,.0f} µs",
                    f"{d['item'] / 1e3:,.0f} µs",
                    f"{factor(d['item'], d['step']) or 0:.2f}x",
                ],
                [
                    "eight at once: per second",
                    f"{d['steps/s']:,.0f}",
                    f"{d['items/s']:,.0f}",
                    f"{factor(d['items/s'], d['steps/s']) or 0:.2f}x",
                ],
            ],
        )
    )
    pure_factor = factor(p["large"], p["fan-out"]) or 0
    item_factor = factor(d["item"], d["step"]) or 0
    rate_factor = factor(d["steps/s"], d["items/s"]) or 0
    lines += ["", "### Targets", ""]
    lines.append(
        table(
            ["target", "required", "measured", "result"],
            [
                [
                    f"pure: ForEach item ({settings.large:,}) vs fan-out branch (100)",
                    "<= 1.5x",
                    f"{pure_factor:.2f}x",
                    "PASS" if pure_factor <= 1.5 else "MISS",
                ],
                [
                    "runtime, one at a time: item vs step",
                    "<= 1.25x",
                    f"{item_factor:.2f}x",
                    "PASS" if item_factor <= 1.25 else "MISS",
                ],
                [
                    "runtime, eight at once: steps/s vs items/s",
                    "<= 1.25x",
                    f"{rate_factor:.2f}x",
                    "PASS" if rate_factor <= 1.25 else "MISS",
                ],
            ],
        )
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "a smoke run with small sizes and one round")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    progress("pure engine")
    p = pure(settings)
    progress("runtime")
    with tempfile.TemporaryDirectory(prefix="bench_control_flow-") as folder:
        d = durable(settings, Path(folder))
    section = render(settings, args.quick, p, d)
    publish(section, args.write, "bench_control_flow", started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
