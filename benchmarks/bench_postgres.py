#!/usr/bin/env python3
"""Side-by-side benchmark of the runtime on Postgres (``PostgresStorage``, one process)
against DBOS Transact with its system database on the same Postgres server, and the floor
of one durable Postgres commit.

The script starts a throwaway PostgreSQL server (``initdb`` + ``pg_ctl`` from the
machine's binaries, in a temporary directory, on 127.0.0.1) with Postgres's durable
defaults (``fsync=on``, ``synchronous_commit=on``). Each round runs, one after the other
and each in a fresh process with a fresh database:

* ``floor``: psycopg inserting one 200-byte row and committing it per operation: the least
  a runtime that commits every step pays per step;
* ``hephaestus``: ``Hephaestus("postgresql://...")`` running workflows of no-op steps;
* ``dbos``: DBOS Transact with ``system_database_url`` on the same server.

The cases are ``bench_runtime.py``'s: a 20-step workflow run one instance at a time (time
per step), and 200 instances of a 10-step workflow at once with a concurrency of 8 (steps
per second). Every engine's work is checked before it is timed; each number is the best of
its rounds. Run ``python benchmarks/bench_postgres.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import bench_runtime as runtime
from report import (
    add_common_arguments,
    add_engines_arguments,
    chosen_engines,
    factor,
    header,
    progress,
    publish,
    table,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg_server import PostgresServer

ENGINES = ("hephaestus", "floor", "dbos")


def floor_round(settings: runtime.Settings, url: str) -> dict[str, Any]:
    """Time commits of one 200-byte row each, through psycopg."""
    import psycopg

    payload = os.urandom(200)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE ops (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)")
        conn.commit()
        synchronous = conn.execute("SHOW synchronous_commit").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        runtime.check(synchronous == ("on",) and fsync == ("on",), f"floor: {synchronous}, {fsync}")

        def commit() -> None:
            conn.execute("INSERT INTO ops (payload) VALUES (%s)", (payload,))
            conn.commit()

        for _ in range(10):  # warm-up
            commit()
        best = float("inf")
        for _ in range(settings.floor_batches):
            start = perf_counter_ns()
            for _ in range(settings.floor_commits):
                commit()
            best = min(best, (perf_counter_ns() - start) / settings.floor_commits)
        (rows,) = conn.execute("SELECT count(*) FROM ops").fetchone() or (0,)
    expected = 10 + settings.floor_batches * settings.floor_commits
    runtime.check(rows == expected, f"floor: {rows} rows, expected {expected}")
    progress(f"  floor      : {best / 1e3:8.0f} µs per commit")
    return {"commit_ns": best}


def child_main(kind: str, spec: dict[str, Any], out: Path) -> int:
    """Run one engine's round in this (fresh) process and write its result as JSON."""
    settings = runtime.QUICK if spec["quick"] else runtime.FULL
    directory, url = Path(spec["dir"]), spec["url"]
    if kind == "floor":
        result = floor_round(settings, url)
    elif kind == "hephaestus":
        result = runtime.hephaestus_round(settings, directory, spec["round"], url)
    elif kind == "dbos":
        result = runtime.dbos_round(settings, directory, spec["round"], url)
    else:
        raise ValueError(f"unknown child {kind!r}")
    out.write_text(json.dumps(result))
    return 0


def run_benchmarks(engines: list[str], settings: runtime.Settings) -> dict[str, Any]:
    """Start the server, run the rounds, and collect the children's results."""
    server = PostgresServer(durable=True)
    results: dict[str, Any] = {name: [] for name in engines}
    try:
        import psycopg

        with psycopg.connect(server.url()) as conn:
            results["server"] = str((conn.execute("SHOW server_version").fetchone() or ("?",))[0])
        for round_no in range(settings.rounds):
            progress(f"round {round_no + 1} of {settings.rounds}")
            for name in ENGINES:
                if name in engines:
                    url = server.create_database(f"{name}_{round_no}")
                    spec = {"quick": settings.quick, "dir": str(server.root), "url": url}
                    results[name].append(
                        runtime.run_child(name, script=__file__, round=round_no, **spec)
                    )
    finally:
        server.close()
    return results


def best(rounds: list[dict[str, Any]], key: str, high: bool = False) -> float | None:
    """The best value of ``key`` over the rounds (lowest; highest with ``high``)."""
    values = [r[key] for r in rounds if key in r]
    if not values:
        return None
    return max(values) if high else min(values)


def render(results: dict[str, Any], engines: list[str], settings: runtime.Settings) -> str:
    """The Markdown section (without the markers)."""
    commit = best(results.get("floor", []), "commit_ns")
    seq = best(results.get("hephaestus", []), "seq_step_ns")
    conc = best(results.get("hephaestus", []), "conc_steps_per_s", high=True)
    dbos = results.get("dbos", [])
    dbos_seq = min(
        (v for v in (best(dbos, "seq_direct_ns"), best(dbos, "seq_start_ns")) if v), default=None
    )
    dbos_conc = max(
        (
            v
            for v in (
                best(dbos, "conc_queue_steps_per_s", high=True),
                best(dbos, "conc_start_steps_per_s", high=True),
            )
            if v
        ),
        default=None,
    )
    packages = ["hephaestus-core", "psycopg"] + (["dbos", "SQLAlchemy"] if dbos else [])
    lines = header(
        "## Runtime on Postgres: hephaestus vs DBOS Transact on the same server",
        "bench_postgres.py",
        settings.quick,
        packages,
    )
    lines += [
        f"- PostgreSQL {results.get('server', '?')}, started by the script on 127.0.0.1 "
        "with its durable defaults (fsync, synchronous_commit on); a fresh database per "
        f"engine and round. Engines: {', '.join(engines)}; every number is the best of "
        f"{settings.rounds} round(s), each engine in a fresh process.",
        "",
        f"### Sequential: one 20-step instance at a time ({settings.seq_instances} per batch)",
        "",
        table(
            ["engine", "time per step", "vs one commit"],
            [
                ["one durable commit (psycopg)", runtime.micros(commit), "1.00x"],
                [
                    "hephaestus (PostgresStorage)",
                    runtime.micros(seq),
                    runtime.ratio(factor(seq, commit)),
                ],
                [
                    "DBOS (its faster of a direct call and start_workflow)",
                    runtime.micros(dbos_seq),
                    runtime.ratio(factor(dbos_seq, commit)),
                ],
            ],
        ),
        "",
        f"### Concurrent: {settings.conc_instances} instances of 10 steps, "
        f"{settings.concurrency} at once",
        "",
        table(
            ["engine", "steps per second"],
            [
                ["hephaestus (PostgresStorage)", runtime.rate(conc)],
                ["DBOS (its faster of a queue and start_workflow)", runtime.rate(dbos_conc)],
            ],
        ),
        "",
        "### Targets",
        "",
    ]
    seq_vs = factor(dbos_seq, seq)
    conc_vs = factor(conc, dbos_conc)
    targets = [
        runtime.judge(
            "Postgres, sequential: time per step vs DBOS",
            ">= 3x faster",
            seq_vs,
            f"{seq_vs or 0:.2f}x",
            seq_vs is not None and seq_vs >= 3,
        ),
        runtime.judge(
            f"Postgres, concurrent ({settings.concurrency} at once): steps/s vs DBOS",
            ">= 3x",
            conc_vs,
            f"{conc_vs or 0:.2f}x",
            conc_vs is not None and conc_vs >= 3,
        ),
    ]
    lines.append(
        table(
            ["target", "required", "measured", "result"],
            [[t.name, t.requirement, t.measured, t.status] for t in targets],
        )
    )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the runtime on Postgres against DBOS Transact on the same server."
    )
    add_common_arguments(
        parser, "a smoke run of a few seconds with tiny sizes; the numbers mean nothing"
    )
    add_engines_arguments(parser, ENGINES)
    args = parser.parse_args(argv)
    if args.child:
        return args
    args.engines = chosen_engines(parser, args.engines, ENGINES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, json.loads(args.child_spec), args.child_out)
    settings = runtime.QUICK if args.quick else runtime.FULL
    started = time.perf_counter()
    results = run_benchmarks(args.engines, settings)
    publish(render(results, args.engines, settings), args.write, "bench_postgres", started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
