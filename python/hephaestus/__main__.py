"""``python -m hephaestus``: the ``hephaestus`` command."""

from hephaestus.cli import run

run()
