"""The demo that the README's first command runs."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_an_order_workflow_and_prints_its_graph_and_history() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hephaestus.demo"], capture_output=True, text=True, check=True
    )
    out = result.stdout
    assert out.startswith("flowchart TD\n")
    assert "<Instance 'orderid::demo1' OrderFlow v1 completed active=[] completed=5>" in out
    for line in ["ValidateOrder -> valid", "ChargeCard    -> charged", "Ship          -> shipped"]:
        assert line in out
    assert "skipped:   ['RejectOrder']" in out
    assert '"format":"hephaestus.instance","format_version":1' in out
