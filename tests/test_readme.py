"""The README's first screen: two set-up commands and a short example."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_a_short_example_of_the_runtime() -> None:
    # tests/test_docs.py runs it and compares what it prints.
    text = README.read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```\s*```text\n", text, re.DOTALL)
    assert match, "the README has a python example followed by its output"
    code = match.group(1)
    assert len(code.strip().splitlines()) <= 20, "the first-screen example stays short"
    assert "with Hephaestus(" in code


def test_readme_gives_exactly_two_setup_commands() -> None:
    first_block = README.read_text(encoding="utf-8").split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in first_block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "python -m hephaestus.demo" in commands[0]
    assert commands[1].startswith("make test")
