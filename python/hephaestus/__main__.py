"""``python -m hephaestus``: the ``hephaestus`` command."""

from hephaestus.cli import run

if __name__ == "__main__":
    run()
