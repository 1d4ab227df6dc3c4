"""A smoke run of the control-flow benchmark script: it must run; it asserts no timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_control_flow.py"


def test_control_flow_benchmark_script_runs_in_quick_mode() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "### Targets" in result.stdout
    assert "ForEach of 200 items" in result.stdout
