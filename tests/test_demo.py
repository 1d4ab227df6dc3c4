"""The demo that the README's first command runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_an_order_across_two_processes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hephaestus.demo", "--db", str(tmp_path / "orders.db")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    out = result.stdout
    assert out.startswith("flowchart TD\n")
    assert "[process 1] waiting: completed ChargeCard, ReserveStock, Ship, ValidateOrder" in out
    assert "[process 1] waiting for: AwaitPayment" in out
    assert "[process 2] found orderid::demo1: waiting, waiting for AwaitPayment" in out
    assert "<Instance 'orderid::demo1' OrderFlow v1 completed active=[] completed=7>" in out
    for line in ["ValidateOrder -> valid", "Ship          -> shipped", "CoolingOff    -> timeout"]:
        assert line in out
    assert (tmp_path / "orders.db").exists()
    assert result.stderr == ""
