"""The ``hephaestus`` command (also ``python -m hephaestus``); see
``hephaestus --help`` and docs/operating.md.

A user's mistake (an unknown id, bad JSON, a missing file, a module that
does not import, an invalid value) prints one line to stderr and exits
with status 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from hephaestus.cli.commands import cli
from hephaestus.cli.loading import UserError
from hephaestus.errors import HephaestusError

__all__ = ["cli", "main"]

#: Exit status of a user's mistake.
USAGE = 2
#: What click (8.2 and later) raises for a group called with no arguments.
_NO_ARGUMENTS: type[click.UsageError] | tuple[()] = getattr(
    click.exceptions, "NoArgsIsHelpError", ()
)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command with ``argv`` (default: the process's arguments) and
    returns its exit status."""
    _log_warnings()
    try:
        status = cli.main(args=argv, prog_name="hephaestus", standalone_mode=False)
    except click.exceptions.Abort:
        _say("interrupted")
        return 130
    except _NO_ARGUMENTS as exc:  # `hephaestus` alone: the help, not an error
        sys.stdout.write(exc.format_message() + "\n")
        return 0
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "hephaestus"
        _say(f"{exc.format_message()} (see {where} --help)")
        return USAGE
    except click.ClickException as exc:
        _say(exc.format_message())
        return USAGE
    except (UserError, HephaestusError, ValueError, TypeError, ImportError) as exc:
        _say(_message(exc))
        return USAGE
    return status if isinstance(status, int) else 0


def _message(exc: BaseException) -> str:
    # A KeyError (InstanceNotFoundError is one) quotes its message in str().
    text = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else str(exc)
    return " ".join(text.split())


def _say(message: str) -> None:
    sys.stderr.write(f"hephaestus: error: {message}\n")


def _log_warnings() -> None:
    """The runtime's warnings go to stderr as one line each (the worker
    logs more)."""
    logger = logging.getLogger("hephaestus")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def run() -> None:
    """The console script: exits with :func:`main`'s status."""
    sys.exit(main())
