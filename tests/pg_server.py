"""A throwaway PostgreSQL server for tests: ``initdb`` and ``pg_ctl`` from
the machine's binaries, in a temporary directory, on 127.0.0.1 only.

PostgreSQL refuses to run as root, so under root (as in CI) the server runs
as the ``postgres`` user, in a directory it owns. Without the binaries the
tests that need a server skip with a message that says how to get them,
except under ``CI=true``, where they must run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PostgresServer", "fresh_postgres", "require_postgres"]

_HOW = (
    "PostgreSQL's initdb and pg_ctl are not on PATH: install Debian's `postgresql` "
    "package (CI does) to run the Postgres tests"
)


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(versions[0]) if versions else None


def require_postgres() -> tuple[str, str]:
    """``initdb`` and ``pg_ctl``; skips the test without them (fails under CI)."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        if os.environ.get("CI") == "true":
            pytest.fail(_HOW)
        pytest.skip(_HOW)
    return initdb, pg_ctl


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One server in its own temporary directory. Tests trade durability
    for speed (``fsync=off``); ``durable=True`` keeps Postgres's defaults,
    as a benchmark must."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.initdb, self.pg_ctl = require_postgres()
        self.root = Path(tempfile.mkdtemp(prefix="hephaestus-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        self.start()

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, check=False, cwd=self.root
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}")

    def _ctl(self, action: str) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
        options += "-c max_connections=200"
        # A connection that opened but never spoke (a client giving up
        # mid-connect while the server restarts) holds a restart up for
        # this long; Postgres's default is a minute.
        options += " -c authentication_timeout=3s"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run(
            self.pg_ctl, action, "-w", "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", options, "-m", "fast",
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """``pg_ctl restart``: every connection is dropped."""
        self._ctl("restart")

    def stop(self) -> None:
        self._run(self.pg_ctl, "stop", "-w", "-D", str(self.data), "-m", "immediate")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def fresh_postgres(url: str) -> Any:
    """A (not yet opened) PostgresStorage on ``url``, with no hephaestus
    schema left from an earlier test."""
    import psycopg
    from hephaestus.runtime.storage.postgres import PostgresStorage

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS hephaestus CASCADE")
    return PostgresStorage(url)
