"""Children of the durability and race tests.

``race_starts`` and ``race_resumes`` are targets of ``multiprocessing``
'spawn' children (importable by name, as 'spawn' needs). Run as a script,
this is a child that drives :class:`~durable_flows.CrashFlow` instances, for
the durability tests to kill and restart.

Run as ``python crash_child.py DB --log LOG --count N ...`` (with
``--lines M``, :class:`~durable_flows.LinesFlow` instances of M items
instead). It opens
``Hephaestus(DB)`` (workers start at once), prints ``started``, starts
every instance ``<prefix>0`` ... ``<prefix>N-1`` that has no run yet
(another process may start it first: ``AlreadyRunningError`` is expected
then), prints ``created``, and drives them until every one is
finished; then it prints ``done`` and exits 0 (1 if one failed, 2 when the
``--guard`` runs out). Each line is flushed at once, so the parent can time
its kills from them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# Run as a script, this file's folder is on sys.path, so ``durable_flows``
# imports by the name the test process uses (pytest's ``pythonpath``
# includes tests/runtime) and stored class names resolve in both.
from durable_flows import CrashFlow, HoldFlow, LinesFlow
from hephaestus import AlreadyRunningError, Hephaestus, InvalidTransitionError

_FINISHED = ("completed", "failed")


def crash_ids(prefix: str, count: int) -> list[str]:
    """The instance ids a child with ``prefix`` and ``count`` drives."""
    return [CrashFlow.unique.build_id(f"{prefix}{i}") for i in range(count)]


def say(word: str) -> None:
    """Tells the parent where the child is (one flushed line on stdout)."""
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


# -- 'spawn' children of the race tests ---------------------------------------------------


def _racers(threads: int, body: Callable[[], None]) -> None:
    """Runs ``body`` in ``threads`` threads and waits for them."""
    workers = [threading.Thread(target=body) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def race_starts(db: str, ids: list[str], threads: int, barrier: Any, results: Any) -> None:
    """A 'spawn' child of the start races: ``threads`` threads, one app.
    For each id of ``ids`` in turn, every thread (of every racing process:
    ``barrier`` is shared) starts a :class:`HoldFlow` instance with that id at
    once, and puts ``(pid, id, outcome)`` on ``results``: ``"started"``,
    ``"already running"``, or the repr of any other exception."""
    with Hephaestus(db) as app:

        def body() -> None:
            for iid in ids:
                barrier.wait(60)
                try:
                    app.start_instance(HoldFlow, {}, id=iid)
                    outcome = "started"
                except AlreadyRunningError:
                    outcome = "already running"
                except Exception as error:
                    outcome = repr(error)
                results.put((os.getpid(), iid, outcome))

        _racers(threads, body)


def race_resumes(db: str, ids: list[str], threads: int, barrier: Any, results: Any) -> None:
    """A 'spawn' child of the resume races: like :func:`race_starts`, but
    every thread resumes the waiting :class:`HoldFlow` instance ``id`` with
    ``"received"``; outcomes ``"resumed"``, ``"invalid"`` (the
    ``InvalidTransitionError`` of a loser) or the repr of any other
    exception."""
    with Hephaestus(db) as app:
        app.register(HoldFlow)

        def body() -> None:
            for iid in ids:
                barrier.wait(60)
                try:
                    app.resume(iid, "received")
                    outcome = "resumed"
                except InvalidTransitionError:
                    outcome = "invalid"
                except Exception as error:
                    outcome = repr(error)
                results.put((os.getpid(), iid, outcome))

        _racers(threads, body)


# -- the crash child -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Drives the instances; see the module docs for the protocol."""
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--log", required=True)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--prefix", default="i")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--work", type=float, nargs=2, default=(0.005, 0.04))
    parser.add_argument("--hang", default=None)
    parser.add_argument("--guard", type=float, default=120.0)
    parser.add_argument("--lines", type=int, default=0, help="drive LinesFlow with this many items")
    args = parser.parse_args(argv)

    context: dict[str, Any] = {"log": args.log, "work": list(args.work)}
    if args.hang:
        context["hang"] = args.hang
    flow: type = CrashFlow
    if args.lines:
        flow = LinesFlow
        context["lines"] = list(range(args.lines))
    ids = [flow.unique.build_id(f"{args.prefix}{i}") for i in range(args.count)]
    deadline = time.monotonic() + args.guard
    with Hephaestus(args.db, lease=args.lease, concurrency=args.concurrency) as app:
        app.register(flow)
        say("started")
        for iid in ids:
            if app.list(id=iid, limit=1):
                continue  # started by an earlier child, or by a sibling
            # A sibling process may start it between the check and here.
            with contextlib.suppress(AlreadyRunningError):
                app.start_instance(flow, context, id=iid)
        say("created")
        while time.monotonic() < deadline:
            runs = reversed(app.list(workflow=flow))  # oldest first: the newest wins
            statuses = {run.id: run.status.value for run in runs}
            if all(statuses.get(iid) in _FINISHED for iid in ids):
                say("done")
                return 1 if "failed" in {statuses[iid] for iid in ids} else 0
            time.sleep(0.05)
    say("guard")
    return 2


if __name__ == "__main__":
    sys.exit(main())
