"""A smoke run of the runtime benchmark script: it must run; it asserts no timings.

DBOS Transact is an optional peer: it takes part only where it is installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_runtime.py"


def test_runtime_benchmark_script_runs_in_quick_mode() -> None:
    engines = "hephaestus,floor" + (",dbos" if importlib.util.find_spec("dbos") else "")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--engines", engines],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "### Targets" in result.stdout
