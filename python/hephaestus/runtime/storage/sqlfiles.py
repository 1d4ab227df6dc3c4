"""The SQL a storage runs, kept in ``sql/<dialect>/``: numbered migrations
(``001_initial.sql``, ``002_...``) and the named queries of
``queries.sql``, each after a ``-- name: <name>`` line."""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["sql_files"]


def sql_files(dialect: str) -> tuple[dict[str, str], list[tuple[int, str, str]]]:
    """The named queries and the numbered migrations ``(number, name,
    script)`` of ``dialect``."""
    folder = resources.files("hephaestus.runtime.storage") / "sql" / dialect
    queries = _parse_queries((folder / "queries.sql").read_text(encoding="utf-8"))
    migrations = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d+)_\w+\.sql", entry.name)
        if match:
            migrations.append((int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    migrations.sort()
    numbers = [number for number, _, _ in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"the {dialect} migrations are not numbered 1, 2, ...: {numbers}")
    return queries, migrations


def _parse_queries(text: str) -> dict[str, str]:
    """``-- name: foo`` starts query ``foo``; whole-line comments are dropped."""
    queries: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines():
        match = re.fullmatch(r"--\s*name:\s*(\w+)\s*", line)
        if match:
            name = match[1]
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice in queries.sql")
            queries[name] = ""
        elif name is not None and not line.lstrip().startswith("--"):
            queries[name] += line + "\n"
    return {name: sql.strip() for name, sql in queries.items()}
