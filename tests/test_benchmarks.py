"""A smoke run of the benchmark script: it must run; it asserts no timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_instance.py"


def test_benchmark_script_runs_in_quick_mode() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "hephaestus" in result.stdout
