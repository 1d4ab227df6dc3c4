#!/usr/bin/env python3
"""Scale-out of the distributed executor (``executor="procrastinate"``): steps that each
sleep 50 ms (I/O-bound work, so the machine's cores are not the limit), run by 1, 2 and 4
``hephaestus worker`` processes on one Postgres server; and the time per step the queue
adds over the local executor on the same server.

The script starts a throwaway PostgreSQL server (``initdb`` + ``pg_ctl`` from the
machine's binaries, in a temporary directory, on 127.0.0.1) with Postgres's durable
defaults. Each measurement gets a fresh database:

* ``scale-out``: N workers (each ``--concurrency`` steps at once) are started and
  registered; then a client (``executor="procrastinate"``) starts the instances of a
  5-step workflow whose steps sleep 50 ms, and the clock runs until every instance is
  completed. Steps per second = the steps run / that time. Best of the rounds.
* ``overhead``: one instance at a time of the same workflow with steps that do nothing,
  (a) with the local executor in one process, (b) through the queue with one worker
  process and a client; the difference of the times per step is what the queue adds.

Run ``python benchmarks/bench_scaleout.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import add_common_arguments, factor, header, progress, publish, table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from pg_server import PostgresServer  # noqa: E402


@dataclass(frozen=True)
class Settings:
    quick: bool
    rounds: int
    workers: tuple[int, ...]
    concurrency: int  # steps at once per worker
    instances: int  # instances per scale-out measurement
    nap: float  # seconds each step sleeps
    sequential: int  # instances run one at a time for the overhead


FULL = Settings(False, 2, (1, 2, 4), 4, 160, 0.05, 30)
QUICK = Settings(True, 1, (1, 2), 2, 6, 0.05, 3)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def start_workers(
    url: str, count: int, concurrency: int, logs: Path
) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes on ``url``, once all are registered with procrastinate."""
    import psycopg

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    processes = []
    for index in range(count):
        out = open(logs / f"worker{index}.log", "wb")  # noqa: SIM115
        command = [
            sys.executable, "-m", "hephaestus", "worker", "--db", url,
            "--import", "scale_flows", "--concurrency", str(concurrency),
            "--executor", "procrastinate", "--log-level", "WARNING",
        ]  # fmt: skip
        processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env))
        out.close()
    deadline = time.monotonic() + 120
    while True:
        try:
            with psycopg.connect(url) as conn:
                (ready,) = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
            if ready >= count:
                return processes
        except psycopg.Error:
            pass  # the schema is not there yet
        for process in processes:
            check(process.poll() is None, f"a worker exited; see {logs}")
        check(time.monotonic() < deadline, "the workers did not start")
        time.sleep(0.1)


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_completed(url: str, count: int, began: float) -> None:
    """Until ``count`` runs are completed, polling on one connection (a new
    connection per poll would cost the server more than the work measured)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM hephaestus.runs WHERE status = 'completed'")
            if int((row.fetchone() or (0,))[0]) >= count:
                return
            check(time.perf_counter() - began < 600, "the instances did not finish")
            time.sleep(0.02)


def scale_round(server: PostgresServer, settings: Settings, workers: int, tag: str) -> float:
    """Steps per second of ``workers`` workers on fresh database."""
    import scale_flows
    from hephaestus import Hephaestus

    url = server.create_database(f"scale_{tag}_{workers}")
    logs = server.root / f"logs_{tag}_{workers}"
    logs.mkdir()
    processes = start_workers(url, workers, settings.concurrency, logs)
    try:
        with Hephaestus(url, executor="procrastinate") as client:
            began = time.perf_counter()
            for index in range(settings.instances):
                client.start_instance(
                    scale_flows.NapFlow, {"nap": settings.nap}, id=f"nap::{index}"
                )
            wait_completed(url, settings.instances, began)
            took = time.perf_counter() - began
    finally:
        stop_workers(processes)
    steps = settings.instances * scale_flows.STEPS
    per_second = steps / took
    progress(f"  {workers} worker(s): {per_second:8.1f} steps/s ({steps} steps in {took:.2f} s)")
    return per_second


def sequential_round(server: PostgresServer, settings: Settings, queue: bool, tag: str) -> float:
    """Seconds per step, one no-op instance at a time, local or through the queue."""
    import scale_flows
    from hephaestus import Hephaestus, Status

    url = server.create_database(f"seq_{tag}_{'queue' if queue else 'local'}")
    processes = []
    if queue:
        logs = server.root / f"logs_seq_{tag}"
        logs.mkdir()
        processes = start_workers(url, 1, settings.concurrency, logs)
    try:
        app = Hephaestus(url, executor="procrastinate") if queue else Hephaestus(url)
        with app:
            app.run(scale_flows.NapFlow, {}, id="nap::warm", timeout=60)
            began = time.perf_counter()
            for index in range(settings.sequential):
                done = app.run(scale_flows.NapFlow, {}, id=f"nap::{index}", timeout=60)
                check(done.status is Status.COMPLETED, f"{done.id} is {done.status}")
            took = time.perf_counter() - began
    finally:
        stop_workers(processes)
    per_step = took / (settings.sequential * scale_flows.STEPS)
    progress(f"  {'queue' if queue else 'local'}: {per_step * 1e3:8.2f} ms per step")
    return per_step


def render(results: dict[str, Any], settings: Settings) -> str:
    rates: dict[int, float] = results["rates"]
    one = rates.get(1)
    rows = [
        [
            str(n),
            str(n * settings.concurrency),
            f"{rates[n]:,.0f}",
            f"{factor(rates[n], one) or 0:.2f}x",
            f"{rates[n] / (n * settings.concurrency / settings.nap):.0%}",
        ]
        for n in sorted(rates)
    ]
    local, queue = results["local"], results["queue"]
    lines = header(
        "## Scale-out: steps as procrastinate jobs on 1, 2 and 4 workers",
        "bench_scaleout.py",
        settings.quick,
        ["hephaestus-core", "procrastinate", "psycopg"],
    )
    lines += [
        f"- PostgreSQL {results['server']}, started by the script on 127.0.0.1 with its "
        "durable defaults; a fresh database per measurement; every number is the best of "
        f"{settings.rounds} round(s).",
        "",
        f"### Throughput: {settings.instances} instances of 5 steps (each sleeps "
        f"{settings.nap * 1e3:.0f} ms) and Done; {settings.concurrency} steps at once per worker",
        "",
        table(
            ["workers", "steps at once", "steps per second", "vs one worker", "of the ideal"],
            rows,
        ),
        "",
        "(The ideal is every slot busy sleeping all the time: workers x steps at once / "
        f"{settings.nap * 1e3:.0f} ms.)",
        "",
        "### What the queue adds per step: one no-op instance at a time",
        "",
        table(
            ["executor", "time per step"],
            [
                ["local (one process, PostgresStorage)", f"{local * 1e3:.2f} ms"],
                ["procrastinate (a client and one worker)", f"{queue * 1e3:.2f} ms"],
                ["added by the queue", f"{(queue - local) * 1e3:.2f} ms"],
            ],
        ),
        "",
        "### Target",
        "",
    ]
    top = max(rates)
    scale = factor(rates[top], one)
    passed = top == 4 and scale is not None and scale >= 3.5
    lines.append(
        table(
            ["target", "required", "measured", "result"],
            [
                [
                    f"{top} workers vs one: throughput",
                    ">= 3.5x (4 workers)",
                    f"{scale or 0:.2f}x",
                    "PASS" if passed else "MISS",
                ]
            ],
        )
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Scale-out of steps as procrastinate jobs on 1, 2 and 4 workers."
    )
    add_common_arguments(
        parser, "a smoke run of a few seconds with tiny sizes; the numbers mean nothing"
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    server = PostgresServer(durable=True)
    try:
        import psycopg

        with psycopg.connect(server.url()) as conn:
            version = str((conn.execute("SHOW server_version").fetchone() or ("?",))[0])
        rates: dict[int, float] = {}
        local = queue = float("inf")
        for round_no in range(settings.rounds):
            progress(f"round {round_no + 1} of {settings.rounds}")
            for workers in settings.workers:
                rate = scale_round(server, settings, workers, f"r{round_no}")
                rates[workers] = max(rates.get(workers, 0.0), rate)
            local = min(local, sequential_round(server, settings, False, f"r{round_no}"))
            queue = min(queue, sequential_round(server, settings, True, f"r{round_no}"))
    finally:
        server.close()
    results = {"server": version, "rates": rates, "local": local, "queue": queue}
    publish(render(results, settings), args.write, "bench_scaleout", started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
