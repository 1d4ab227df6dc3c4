"""Every Python example in the README and in docs/ runs.

The examples of one file run top to bottom in one namespace (a later example
may use what an earlier one defined), in a temporary working directory. An
example followed directly by a ``text`` block must print exactly that.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```(?:\s*```text\n(.*?)```)?", re.DOTALL)


def examples(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, expected output or None)`` for each example in ``path``."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in BLOCK.finditer(text)
    ]


def test_the_docs_have_examples() -> None:
    assert sum(len(examples(path)) for path in FILES) >= 8


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_example_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem.lower()}"}
    for line, code, expected in examples(path):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        if expected is not None:
            assert out.getvalue() == expected, f"{path.name}:{line} printed something else"
