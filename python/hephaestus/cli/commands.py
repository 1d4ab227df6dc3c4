"""The ``hephaestus`` command (CONTRACT §12): run, list, show, why, resume,
cancel, graph and worker, each on the database ``--db`` names."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from typing import Any, TypeVar

import click

from hephaestus import telemetry
from hephaestus._core import Instance, step_key
from hephaestus.cli import output
from hephaestus.cli.loading import (
    UserError,
    database,
    import_modules,
    importable_here,
    load_workflow,
    parse_context,
    sqlite_path,
)
from hephaestus.engine import graph_of
from hephaestus.runtime.app import Hephaestus, _names, open_storage
from hephaestus.runtime.storage.base import RunRow, Stored
from hephaestus.status import Status
from hephaestus.telemetry import log_handler

__all__ = ["cli"]

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status of ``run`` and ``resume`` by how the instance ended up.
EXIT = {"completed": 0, "failed": 1, "waiting": 3}


def _db(command: F) -> F:
    return click.option(
        "--db",
        metavar="URL",
        help="Database URL or SQLite file (default: $HEPHAESTUS_DATABASE_URL, "
        "else ./hephaestus.db).",
    )(command)


def _json(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hephaestus-core", prog_name="hephaestus")
def cli() -> None:
    """Run and inspect hephaestus workflows."""
    importable_here()


@contextlib.contextmanager
def _app(db: str | None, *, must_exist: bool = True) -> Iterator[Hephaestus]:
    """An app on ``db`` that may import the workflows it finds there. Its
    workers start only when a command starts or resumes an instance."""
    app = Hephaestus(database(db, must_exist=must_exist), import_workflows=True)
    try:
        yield app
    finally:
        app.close()


def _load(app: Hephaestus, id: str) -> tuple[RunRow, Stored, Instance]:
    """The newest run of ``id``: its row, what is stored and the instance."""
    row = app._newest(id)
    stored = app.storage.load(row.run_id)
    return row, stored, app._rebuild(stored).finish()


@contextlib.contextmanager
def _progress(as_json: bool) -> Iterator[output.Progress | None]:
    """Prints the events of the instance the caller names, unless ``as_json``."""
    if as_json:
        yield None
        return
    progress = output.Progress(output.console())
    handler_id = f"hephaestus.cli.progress.{id(progress)}"
    telemetry.attach(handler_id, output.Progress.EVENTS, progress)
    try:
        yield progress
    finally:
        telemetry.detach(handler_id)


def _settle(app: Hephaestus, id: str, as_json: bool) -> Callable[[], int]:
    """Waits until ``id`` completes, fails or waits, and returns what says
    how it ended and gives the exit status (called once the app closed, so
    that every progress line came first)."""
    status = app.wait(id).status.value
    row, stored, instance = _load(app, id)
    explanation = app.explain(id) if status == "waiting" else None

    def report() -> int:
        if as_json:
            output.print_json(output.show_json(instance, row, stored))
            return EXIT[status]
        out = output.console()
        if status == "completed":
            out.print(f"{id} completed ({len(instance.execution_history)} steps)", markup=False)
        elif status == "failed":
            error = instance.error or {}
            what = error.get("message", error.get("reason", ""))
            out.print(
                f"{id} failed at {error.get('step')}: {error.get('kind')}: {what}", markup=False
            )
        else:
            out.print(str(explanation), markup=False)
        return EXIT[status]

    return report


@cli.command()
@click.argument("workflow", metavar="MODULE:WORKFLOW")
@click.option("--id", "value", required=True, help="The business value the id is built from.")
@click.option("--context", help="The initial context: JSON, or @file.json.")
@_db
@_json
@click.pass_context
def run(
    ctx: click.Context,
    workflow: str,
    value: str,
    context: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Start a workflow and show its progress until it finishes or waits.

    Exit status: 0 completed, 1 failed, 3 waiting."""
    cls = load_workflow(workflow)
    initial = parse_context(context)
    try:
        iid = cls._new_id(value)
    except ValueError as exc:
        raise UserError(f"--id: {exc}") from None
    with _progress(as_json) as progress, _app(db, must_exist=False) as app:
        if progress is not None:
            progress.id = iid
        app.start_instance(cls, initial, id=iid)
        report = _settle(app, iid, as_json)
    ctx.exit(report())


@cli.command(name="list")
@click.option("--workflow", metavar="MODULE:WORKFLOW", help="Only this workflow's instances.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in Status]),
    multiple=True,
    help="Only instances with this status (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=0), help="At most this many.")
@_db
@_json
def list_(
    workflow: str | None, status: tuple[str, ...], limit: int | None, db: str | None, as_json: bool
) -> None:
    """List instances, newest first."""
    workflows = None if workflow is None else _names(load_workflow(workflow))
    with _app(db) as app:
        rows = app.storage.find(workflows=workflows, statuses=status or None, limit=limit)
    if as_json:
        output.print_json([output.row_json(row) for row in rows])
    else:
        output.print_list(output.console(), rows)


@cli.command()
@click.argument("id")
@_db
@_json
def show(id: str, db: str | None, as_json: bool) -> None:
    """Show an instance: status, steps, context, history, error and graph."""
    with _app(db) as app:
        row, stored, instance = _load(app, id)
    if as_json:
        output.print_json(output.show_json(instance, row, stored))
    else:
        output.print_show(output.console(), instance, row, stored)


@cli.command()
@click.argument("id")
@_db
@_json
def why(id: str, db: str | None, as_json: bool) -> None:
    """Say what an unfinished instance waits on."""
    with _app(db) as app:
        explanation = app.explain(id)
    if as_json:
        output.print_json(output.explanation_json(explanation))
    else:
        output.console().print(str(explanation), markup=False)


@cli.command()
@click.argument("id")
@click.argument("event")
@click.option("--step", help="The waiting step to resume (its key or class name).")
@_db
@_json
@click.pass_context
def resume(
    ctx: click.Context, id: str, event: str, step: str | None, db: str | None, as_json: bool
) -> None:
    """Deliver EVENT to the instance's waiting step, then drive it as run does."""
    with _progress(as_json) as progress, _app(db) as app:
        chosen = None if step is None else _step(_load(app, id)[2], step)
        if progress is not None:
            progress.id = id
        app.resume(id, event, step=chosen)
        report = _settle(app, id, as_json)
    ctx.exit(report())


def _step(instance: Instance, name: str) -> type:
    """The step of ``instance``'s workflow that ``name`` (a key or a class
    name) names."""
    steps = graph_of(instance).steps
    found = [s for s in steps if name in (step_key(s), s.__name__, s.__qualname__)]
    if not found:
        keys = ", ".join(step_key(s) for s in steps)
        raise UserError(f"{instance.workflow.__qualname__} has no step {name!r}; its steps: {keys}")
    return found[0]


@cli.command()
@click.argument("id")
@click.option("--reason", help="Why (kept in the instance's error).")
@_db
@_json
def cancel(id: str, reason: str | None, db: str | None, as_json: bool) -> None:
    """Cancel an unfinished instance."""
    with _app(db) as app:
        app.cancel(id, reason=reason)
        if as_json:
            row, stored, instance = _load(app, id)
            output.print_json(output.show_json(instance, row, stored))
            return
    output.console().print(f"{id} cancelled", markup=False)


@cli.command()
@click.argument("workflow", metavar="MODULE:WORKFLOW")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "text"]),
    default="mermaid",
    show_default=True,
)
@click.option("--id", "id", help="Mark the live state of this instance.")
@_db
def graph(workflow: str, fmt: str, id: str | None, db: str | None) -> None:
    """Print a workflow's graph, or with --id an instance's live state."""
    cls = load_workflow(workflow)
    instance = None
    if id is not None:
        with _app(db) as app:
            instance = _load(app, id)[2]
        if not issubclass(instance.workflow, cls) and instance.workflow not in _members(cls):
            raise UserError(
                f"{id} is an instance of {instance.workflow.__qualname__}, not {workflow}"
            )
    shown = cls.graph if instance is None else graph_of(instance)
    render = {"mermaid": shown.to_mermaid, "dot": shown.to_dot, "text": shown.to_text}[fmt]
    click.echo(render(instance).rstrip("\n"))


def _members(workflow: type) -> list[type]:
    return list((getattr(workflow, "versions", None) or {}).values())


@cli.command()
@click.option(
    "--import",
    "modules",
    metavar="MODULE",
    multiple=True,
    help="Import this module first, for its workflows (repeatable).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="How many steps run at once.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "procrastinate"]),
    default=None,
    help="Where steps run: 'procrastinate' (the default on Postgres when the "
    "[distributed] extra is installed) runs them as jobs that every worker on "
    "the database shares; 'local' runs each run's steps in the worker driving it.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds after which the runs and steps of a worker that stopped "
    "renewing them (a dead one) are taken over.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds running step jobs get to finish on SIGTERM (the procrastinate "
    "executor; a local worker gives its steps 5 s).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@_db
def worker(
    modules: tuple[str, ...],
    concurrency: int,
    executor: str | None,
    lease: float,
    grace: float,
    log_level: str,
    db: str | None,
) -> None:
    """Drive unfinished instances, fire timers and retries, take over those of
    dead processes, until SIGINT or SIGTERM."""
    import_modules(modules)
    level = getattr(logging, log_level.upper())
    logging.getLogger("hephaestus").setLevel(level)
    log_handler.attach(level)
    url = database(db, must_exist=False)
    chosen = executor or _default_executor(url)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    runner = logging.getLogger("hephaestus.runner")
    try:
        app = Hephaestus(
            url, concurrency=concurrency, lease=lease, import_workflows=True, executor=chosen
        )
        with contextlib.closing(app):
            queue_worker = None
            if chosen == "procrastinate":
                from hephaestus.runtime.distributed import Worker

                queue_worker = Worker(app, grace=grace)
                queue_worker.start()
            else:
                app.start()
            where = getattr(app.storage, "path", None) or app.storage
            runner.info(
                "worker ready on %s (steps run %s); stop with Ctrl-C or SIGTERM",
                where,
                "as procrastinate jobs" if queue_worker else "here",
            )
            stop.wait()
            runner.info("stopping")
            if queue_worker is not None:
                queue_worker.stop()
    finally:
        log_handler.detach()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _default_executor(url: str | None) -> str:
    """``procrastinate`` on Postgres when it is installed, else ``local``."""
    postgres = url is not None and url.startswith(("postgresql://", "postgres://"))
    return "procrastinate" if postgres and find_spec("procrastinate") is not None else "local"


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@cli.group()
def db() -> None:
    """The database's schema."""


@db.command()
@_db
def migrate(db: str | None) -> None:
    """Create the schema, or bring it up to date (SQLite migrates on open
    too; Postgres apps made with migrate=False need this)."""
    url = database(db, must_exist=False) or "hephaestus.db"
    queue = ""
    if url.startswith(("postgresql://", "postgres://")):
        from hephaestus.runtime.storage.postgres import PostgresStorage

        storage = PostgresStorage(url)
        try:
            before, after = storage.migrate()
            if find_spec("procrastinate") is not None:
                from hephaestus.runtime.distributed import attach

                attach(storage)  # procrastinate's tables, unless there
                queue = f"{url}: procrastinate's tables are there"
        finally:
            storage.close()
    else:
        from hephaestus.runtime.storage import sqlite

        path = sqlite_path(url)
        if path is None:
            raise UserError(f"{url} is neither an SQLite file nor a Postgres database")
        before = 0
        if os.path.exists(path):
            try:
                with contextlib.closing(sqlite3.connect(path)) as conn:
                    before = int(conn.execute("PRAGMA user_version").fetchone()[0])
            except sqlite3.DatabaseError as error:
                raise UserError(f"{path} is not an SQLite database ({error})") from None
        opened, owned = open_storage(url)  # opening migrates an SQLite file
        if owned:
            opened.close()
        after = sqlite.SCHEMA_VERSION
    what = "up to date" if before == after else f"migrated from version {before}"
    if queue:
        output.console().print(queue, markup=False)
    output.console().print(f"{url}: schema version {after} ({what})", markup=False)
