"""How the command shows instances: tables, the ``show`` page, ``run``'s
live progress, and the same facts as JSON for scripts.

Rich draws them; when the output is not a terminal it is plain text (no
colour, no box drawing, no wrapping)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hephaestus._core import Instance, step_key
from hephaestus.engine import graph_of
from hephaestus.runtime.clock import as_datetime
from hephaestus.runtime.explain import Explanation
from hephaestus.runtime.storage.base import RunRow, Stored
from hephaestus.telemetry.log_handler import duration_text, event_text

__all__ = [
    "Progress",
    "console",
    "explanation_json",
    "print_json",
    "print_list",
    "print_show",
    "row_json",
    "show_json",
]

_STYLES = {
    "completed": "green",
    "failed": "red",
    "waiting": "yellow",
    "running": "cyan",
    "pending": "dim",
}


def console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr): rich on a terminal, plain otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(
        file=stream,
        force_terminal=terminal,
        no_color=not terminal,
        highlight=False,
        soft_wrap=not terminal,
        width=None if terminal else 10_000,
    )


def _print_table(out: Console, table: Table) -> None:
    """Prints ``table``: boxed on a terminal, plain columns otherwise."""
    if out.is_terminal:
        table.box = box.SIMPLE_HEAD
        out.print(table)
        return
    table.box = None
    with out.capture() as captured:
        out.print(table)
    for line in captured.get().splitlines():
        out.file.write(line.rstrip() + "\n")


def _status(status: str) -> str:
    return f"[{_STYLES.get(status, '')}]{status}[/]"


def _time(seconds: float) -> str:
    return as_datetime(seconds).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(seconds: float) -> str:
    return as_datetime(seconds).isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """``value`` with datetimes as ISO text and classes as step keys."""
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, type):
        return step_key(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Writes ``value`` as JSON on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def _short(workflow: str) -> str:
    return workflow.rpartition(":")[2]


# -- list -------------------------------------------------------------------------------


def row_json(row: RunRow) -> dict[str, Any]:
    """A run as ``list --json`` gives it."""
    return {
        "id": row.id,
        "workflow": row.workflow,
        "version": row.version,
        "status": row.status,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
    }


def print_list(out: Console, rows: list[RunRow]) -> None:
    """The ``list`` table, newest first."""
    if not rows:
        out.print("no instances")
        return
    table = Table(pad_edge=False)
    for column in ("ID", "WORKFLOW", "VERSION", "STATUS", "UPDATED"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            escape(row.id),
            escape(_short(row.workflow)),
            str(row.version),
            _status(row.status),
            _time(row.updated_at),
        )
    _print_table(out, table)


# -- show -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Entry:
    """A history entry with what the page shows of it."""

    index: int
    step: str
    iteration: int | None
    event: str
    finished: dt.datetime
    #: From the step becoming runnable to its result (waits included).
    took: float | None
    attempts: int
    context_updates: dict[str, Any] | None


def _entries(instance: Instance, row: RunRow, stored: Stored) -> list[_Entry]:
    """The history, each entry with its duration and attempts.

    A step's duration runs from when it became runnable (its latest
    predecessor's result, the previous run of a loop, or the start) to its
    result, so it includes retries' back-off and a ``Wait``'s wait."""
    graph = graph_of(instance)
    failed = Counter(attempt.step for attempt in stored.attempts)
    finished_at: dict[type, dt.datetime] = {}
    started = as_datetime(row.created_at)
    entries = []
    for index, entry in enumerate(instance.execution_history, 1):
        step = entry.step_ref
        key = step_key(step)
        unit = key if entry.iteration is None else f"{key}#{entry.iteration}"
        since = [finished_at[p] for p in graph.predecessors(step) if p in finished_at]
        if entry.iteration and step in finished_at:
            since.append(finished_at[step])
        began = max(since, default=started)
        took = (entry.timestamp - began).total_seconds()
        finished_at[step] = entry.timestamp
        entries.append(
            _Entry(
                index=index,
                step=key,
                iteration=entry.iteration,
                event=entry.event,
                finished=entry.timestamp,
                took=took if took >= 0 else None,
                attempts=failed[unit] + 1,
                context_updates=entry.context_updates,
            )
        )
    return entries


def show_json(instance: Instance, row: RunRow, stored: Stored) -> dict[str, Any]:
    """An instance as ``show --json`` gives it."""
    document = json.loads(instance.to_json())
    history = []
    for entry, raw in zip(
        _entries(instance, row, stored), document["execution_history"], strict=True
    ):
        raw["duration"] = entry.took
        raw["attempts"] = entry.attempts
        history.append(raw)
    return {
        **row_json(row),
        "current_step": document["current_step"],
        "active_steps": document["active_steps"],
        "waiting_steps": document["waiting_steps"],
        "completed_steps": document["completed_steps"],
        "skipped_steps": document["skipped_steps"],
        "context": document["context"],
        "history": history,
        "error": document["error"],
        "failed_attempts": [
            {
                "step": a.step,
                "attempt": a.attempt,
                "outcome": a.outcome,
                "type": a.error_type,
                "message": a.error_message,
                "finished": _iso(a.finished),
                "traceback": a.traceback,
            }
            for a in stored.attempts
        ],
        "timers": [{"step": t.step, "kind": t.kind, "due": _iso(t.due)} for t in stored.timers],
    }


def _names(steps: Iterable[type]) -> str:
    keys = sorted(step_key(s) for s in steps)
    return ", ".join(keys) if keys else "-"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def print_show(out: Console, instance: Instance, row: RunRow, stored: Stored) -> None:
    """The ``show`` page: status, step sets, context, history, error, graph."""
    status = instance.status.value
    out.print(
        f"[bold]{escape(instance.id)}[/]  {escape(_short(row.workflow))} "
        f"v{instance.workflow_version}  {_status(status)}"
    )
    out.print(f"started {_time(row.created_at)}, last change {_time(row.updated_at)}")
    out.print()
    out.print("[bold]Steps[/]")
    waiting = instance.waiting_steps
    for label, steps in (
        ("completed", instance.completed_steps),
        ("active", instance.active_steps - waiting),
        ("waiting", waiting),
        ("skipped", instance.skipped_steps),
    ):
        out.print(f"  {label:<10} {escape(_names(steps))}")
    out.print()
    out.print("[bold]Context[/]")
    out.print(f"  {'initial':<10} {escape(_compact(instance.context.initial))}")
    out.print()
    out.print("[bold]History[/]")
    entries = _entries(instance, row, stored)
    if entries:
        table = Table(pad_edge=False)
        for column in ("#", "FINISHED (UTC)", "STEP", "EVENT", "TOOK", "ATTEMPTS", "UPDATES"):
            table.add_column(column, no_wrap=column != "UPDATES")
        for e in entries:
            step = e.step if e.iteration is None else f"{e.step}[{e.iteration}]"
            table.add_row(
                str(e.index),
                e.finished.strftime("%H:%M:%S.%f")[:-3],
                escape(step),
                escape(e.event),
                "-" if e.took is None else duration_text(int(e.took * 1e9)),
                str(e.attempts),
                escape(_compact(e.context_updates)) if e.context_updates else "",
            )
        _print_table(out, table)
    else:
        out.print("  (no step has completed)")
    out.print()
    if stored.attempts:
        out.print("[bold]Failed attempts[/]")
        for a in stored.attempts:
            what = a.error_type or a.outcome
            out.print(
                f"  {_time(a.finished)}  {escape(a.step)} attempt {a.attempt}: "
                f"{escape(what)}: {escape(a.error_message or '')}"
            )
        out.print()
    if instance.error is not None:
        out.print("[bold red]Error[/]")
        for key, value in instance.error.items():
            out.print(f"  {key:<10} {escape(value if isinstance(value, str) else _compact(value))}")
        last = stored.attempts[-1] if stored.attempts else None
        if instance.error.get("kind") == "exception" and last is not None and last.traceback:
            out.print("  traceback (last frames of the last attempt):")
            for line in last.traceback.rstrip().splitlines():
                out.print(f"    {escape(line)}")
        out.print()
    out.print("[bold]Graph[/]")
    for line in graph_of(instance).to_text(instance).splitlines():
        out.print(f"  {escape(line)}")


# -- why --------------------------------------------------------------------------------


def explanation_json(explanation: Explanation) -> dict[str, Any]:
    """An explanation as ``why --json`` gives it."""
    return {
        "id": explanation.id,
        "workflow": explanation.workflow,
        "version": explanation.version,
        "status": explanation.status,
        "reasons": [
            {"kind": r.kind, "step": r.step, "text": r.text, "facts": _plain(r.facts)}
            for r in explanation.reasons
        ],
    }


# -- run's progress ------------------------------------------------------------------------

#: The events ``run`` shows, with each one's mark and colour.
_MARKS = {
    "workflow.start": ("▶", "bold"),
    "step.start": ("·", "dim"),
    "step.stop": ("✔", "green"),
    "step.async": ("⏸", "yellow"),
    "step.resume": ("↻", "cyan"),
    "step.exception": ("✘", "red"),
    "workflow.stop": ("■", "bold green"),
    "workflow.exception": ("■", "bold red"),
}


class Progress:
    """A telemetry handler that prints one line per event of one instance,
    as ``run`` and ``resume`` show them."""

    EVENTS = tuple(_MARKS)

    def __init__(self, out: Console) -> None:
        self.out = out
        self.id: str | None = None

    def __call__(self, event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        if self.id is None or metadata.get("instance_id") != self.id:
            return
        mark, style = _MARKS[event]
        text = event_text(event, measurements, metadata)
        if not self.out.is_terminal:
            mark = {"✔": "+", "✘": "x", "⏸": "=", "↻": "~", "▶": ">", "■": "#"}.get(mark, "-")
        self.out.print(f"[{style}]{mark}[/] {escape(text)}")
