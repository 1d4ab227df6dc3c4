"""The demo that the README's first command runs."""

from __future__ import annotations

import subprocess
import sys


def test_demo_walks_an_order_through_and_prints_its_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hephaestus.demo"], capture_output=True, text=True, check=True
    )
    out = result.stdout
    assert (
        "resumed:   <Instance 'orderid::demo1' OrderFlow v1 running active=[] completed=3>" in out
    )
    assert "ValidateOrder  -> valid" in out
    assert "WaitForPayment -> received" in out
    assert '"format":"hephaestus.instance","format_version":1' in out
