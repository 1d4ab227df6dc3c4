"""A smoke run of the scale-out benchmark script: it must run (it starts its
own server and worker processes); it asserts no timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pg_server import require_postgres

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scaleout.py"


def test_scaleout_benchmark_script_runs_in_quick_mode() -> None:
    require_postgres()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "### Target" in result.stdout
    assert "added by the queue" in result.stdout
