"""A smoke run of the Postgres benchmark script: it must run (it starts its
own server); it asserts no timings. DBOS takes part only where installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from pg_server import require_postgres

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_postgres.py"


def test_postgres_benchmark_script_runs_in_quick_mode() -> None:
    require_postgres()
    engines = "hephaestus,floor" + (",dbos" if importlib.util.find_spec("dbos") else "")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--engines", engines],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "### Targets" in result.stdout
    assert "hephaestus (PostgresStorage)" in result.stdout
