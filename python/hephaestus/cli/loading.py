"""What the command reads from its user: workflow references, JSON context,
database URLs. Each mistake raises :class:`UserError` with one line that
says what was wrong."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from hephaestus.workflow import Workflow

__all__ = [
    "UserError",
    "database",
    "import_modules",
    "importable_here",
    "load_workflow",
    "parse_context",
    "sqlite_path",
]


class UserError(Exception):
    """A mistake in the command's input: printed as one line, exit status 2."""


def importable_here() -> None:
    """Modules in the working directory import, as with ``python -m``: the
    workflows a command names and those its database names alike."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_modules(names: tuple[str, ...]) -> None:
    """Imports each module of ``--import``."""
    for name in names:
        _import(name)


def _import(name: str) -> Any:
    if not name or any(not part.isidentifier() for part in name.split(".")):
        raise UserError(f"{name!r} is not a module name")
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise UserError(f"cannot import {name!r}: {type(exc).__name__}: {exc}") from None


def load_workflow(reference: str) -> type[Workflow]:
    """The workflow class ``MODULE:Workflow`` names (a dotted path after the
    colon reaches a nested class)."""
    module_name, colon, qualname = reference.partition(":")
    if not colon or not module_name or not qualname:
        raise UserError(f"{reference!r} is not MODULE:Workflow (e.g. shop.flows:OrderFlow)")
    obj: Any = _import(module_name)
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise UserError(f"module {module_name!r} has no {qualname!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Workflow)):
        raise UserError(f"{reference} is not a Workflow class (it is {type(obj).__name__})")
    return obj


def parse_context(text: str | None) -> dict[str, Any]:
    """``--context``: a JSON object, or ``@file.json`` naming a file with one."""
    if text is None:
        return {}
    where = "--context"
    if text.startswith("@"):
        path = Path(text[1:])
        where = f"--context file {str(path)!r}"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{where} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {where}: {exc}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def database(url: str | None, *, must_exist: bool) -> str | None:
    """The ``--db`` URL (``None``: ``HEPHAESTUS_DATABASE_URL``, else
    ``./hephaestus.db``). A command that only reads or changes existing
    instances refuses a SQLite file that is not there rather than create an
    empty database."""
    chosen = url if url is not None else os.environ.get("HEPHAESTUS_DATABASE_URL")
    if must_exist:
        path = sqlite_path(chosen if chosen else "hephaestus.db")
        if path is not None and not Path(path).exists():
            raise UserError(f"no database at {path} (pass --db, or set HEPHAESTUS_DATABASE_URL)")
    return chosen or None


def sqlite_path(url: str) -> str | None:
    """The file an SQLite URL or path names; ``None`` for any other URL."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if "://" in url or url.startswith(("sqlite:", "memory:")):
        return None
    return url
