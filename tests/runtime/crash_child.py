"""A child process that drives :class:`~runtime.durable_flows.CrashFlow`
instances, for the durability tests to kill and restart.

Run as ``python crash_child.py DB --log LOG --count N ...`` with ``tests/`` on
``PYTHONPATH``. It opens ``Hephaestus(DB)`` (workers start at once), prints
``started``, starts every instance ``<prefix>0`` ... ``<prefix>N-1`` that has
no run yet (another process may start it first: ``AlreadyRunningError`` is
expected then), prints ``created``, and drives them until every one is
finished; then it prints ``done`` and exits 0 (1 if one failed, 2 when the
``--guard`` runs out). Each line is flushed at once, so the parent can time
its kills from them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make ``runtime.durable_flows`` importable by the same
    # name the test process uses, so stored class names resolve.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hephaestus import AlreadyRunningError, Hephaestus

from runtime.durable_flows import CrashFlow

_FINISHED = ("completed", "failed")


def crash_ids(prefix: str, count: int) -> list[str]:
    """The instance ids a child with ``prefix`` and ``count`` drives."""
    return [CrashFlow.unique.build_id(f"{prefix}{i}") for i in range(count)]


def say(word: str) -> None:
    """Tells the parent where the child is (one flushed line on stdout)."""
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


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
    args = parser.parse_args(argv)

    context = {"log": args.log, "work": list(args.work)}
    if args.hang:
        context["hang"] = args.hang
    ids = crash_ids(args.prefix, args.count)
    deadline = time.monotonic() + args.guard
    with Hephaestus(args.db, lease=args.lease, concurrency=args.concurrency) as app:
        app.register(CrashFlow)
        say("started")
        for iid in ids:
            if app.list(id=iid, limit=1):
                continue  # started by an earlier child, or by a sibling
            try:
                app.start_instance(CrashFlow, context, id=iid)
            except AlreadyRunningError:
                pass  # a sibling process started it just now
        say("created")
        while time.monotonic() < deadline:
            runs = reversed(app.list(workflow=CrashFlow))  # oldest first: the newest wins
            statuses = {run.id: run.status.value for run in runs}
            if all(statuses.get(iid) in _FINISHED for iid in ids):
                say("done")
                return 1 if "failed" in {statuses[iid] for iid in ids} else 0
            time.sleep(0.05)
    say("guard")
    return 2


if __name__ == "__main__":
    sys.exit(main())
