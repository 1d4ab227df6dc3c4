"""Helpers shared by the benchmark scripts: machine facts, Markdown tables,
and writing a script's section into BENCHMARKS.md."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

#: Where ``--write`` puts a script's section by default.
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def add_common_arguments(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """Adds ``--quick`` (a smoke run) and ``--write [PATH]`` to ``parser``."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--write",
        nargs="?",
        const=BENCHMARKS_MD,
        type=Path,
        metavar="PATH",
        help="write the Markdown section to PATH (default: BENCHMARKS.md at "
        "the repository root), replacing this script's earlier section",
    )


def add_engines_arguments(parser: argparse.ArgumentParser, engines: Sequence[str]) -> None:
    """Adds ``--engines`` (a subset of ``engines``) and the hidden options of a script's
    child processes (``--child``, ``--child-spec``, ``--child-out``)."""
    parser.add_argument(
        "--engines",
        default=",".join(engines),
        help=f"comma-separated subset of {','.join(engines)} (default: all)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-spec", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)


def chosen_engines(parser: argparse.ArgumentParser, text: str, engines: Sequence[str]) -> list[str]:
    """The engines ``--engines`` named; a parser error for an unknown one, or for DBOS
    when it cannot be imported."""
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    if set(chosen) - set(engines) or not chosen:
        parser.error(f"--engines takes names from {', '.join(engines)}; got {chosen}")
    if "dbos" in chosen and importlib.util.find_spec("dbos") is None:
        others = ",".join(e for e in engines if e != "dbos")
        parser.error(
            f"cannot import dbos; `pip install dbos` (DBOS Transact), or leave it out with "
            f"--engines {others}"
        )
    return chosen


def cpu_model() -> str:
    """Return the CPU model from ``/proc/cpuinfo``, or ``platform.processor()``."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for text in cpuinfo.read_text().splitlines():
            if text.startswith("model name"):
                return text.partition(":")[2].strip()
    return platform.processor() or "unknown"


def factor(numerator: float | None, denominator: float | None) -> float | None:
    """Return ``numerator / denominator`` or ``None`` when either is missing."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def package_version(name: str) -> str:
    """Return an installed distribution's version, or ``unknown``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def progress(message: str) -> None:
    """Report progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render an aligned Markdown table (first column left, the others right)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join([":" + "-" * (widths[0] + 1)] + ["-" * (w + 1) + ":" for w in widths[1:]])
        + "|"
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def publish(section: str, write: Path | None, name: str, started: float) -> None:
    """Prints ``section``; with ``write``, also stores it in that file
    under ``name`` (see :func:`write_section`); then reports the run's time
    since ``started`` (a ``time.perf_counter()`` reading)."""
    print(section)
    if write:
        write_section(write, section, name)
        progress(f"wrote {write}")
    progress(f"done in {time.perf_counter() - started:.1f} s")


def write_section(path: Path, section: str, name: str) -> None:
    """Put ``section`` between the ``<!-- name:start -->`` and ``<!-- name:end -->``
    markers in ``path``, replacing an earlier run's block (appended when missing)."""
    mark_start, mark_end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{mark_start}\n{section}{mark_end}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = text.find(mark_start), text.find(mark_end)
    if start != -1 and end > start:
        after = text[end + len(mark_end) :].lstrip("\n")
        text = text[:start] + block + (f"\n{after}" if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def header(title: str, script: str, quick: bool, packages: Sequence[str]) -> list[str]:
    """The heading of a section: the title, the command and time of the run,
    the machine, and the versions of Python and ``packages``."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = [f"Python {platform.python_version()}"]
    versions += [f"{name} {package_version(name)}" for name in packages]
    lines = [
        title,
        "",
        f"Output of `python benchmarks/{script}{' --quick' if quick else ''}`, {now}. "
        "What each row measures: [benchmarks/README.md](benchmarks/README.md).",
        "",
    ]
    if quick:
        lines += ["**Quick smoke run: the numbers are not representative.**", ""]
    return [
        *lines,
        f"- Machine: {platform.platform()}, {cpu_model()}, {os.cpu_count()} logical CPUs",
        f"- Software: {', '.join(versions)}",
    ]
