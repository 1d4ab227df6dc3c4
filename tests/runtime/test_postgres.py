"""What only the Postgres storage has: its schema in a shared database,
notifications that wake other apps, and a server restart under it. (The
storage suite, the app's operations and the process races run on Postgres
in test_storage.py, test_app.py and test_races.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import runtime_flows as rf
from hephaestus import Hephaestus
from hephaestus.runtime.storage import StorageError
from hephaestus.runtime.storage import postgres as postgres_module
from hephaestus.runtime.storage.postgres import PostgresStorage
from pg_server import PostgresServer, fresh_postgres


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except StorageError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sql(url: str, statement: str) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


def test_the_schema_lives_in_its_own_schema_with_its_version(postgres_url: str) -> None:
    storage = fresh_postgres(postgres_url)
    storage.open()
    storage.close()
    tables = {
        name
        for (name,) in sql(
            postgres_url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'hephaestus'",
        )
    }
    assert tables == {"meta", "runs", "snapshots", "journal", "timers", "attempts", "step_jobs"}
    meta = dict(sql(postgres_url, "SELECT key, value FROM hephaestus.meta"))
    assert meta == {"schema": "hephaestus", "version": str(postgres_module.SCHEMA_VERSION)}
    indexes = {name for (name,) in sql(postgres_url, "SELECT indexname FROM pg_indexes")}
    assert {"runs_unique_key", "runs_runnable", "timers_due", "runs_id"} <= indexes


def test_a_hephaestus_schema_that_is_not_ours_is_refused_unchanged(postgres_url: str) -> None:
    fresh_postgres(postgres_url)
    sql(postgres_url, "CREATE SCHEMA hephaestus")
    sql(postgres_url, "CREATE TABLE hephaestus.orders (id int)")
    with pytest.raises(StorageError, match="did not make"):
        PostgresStorage(postgres_url).open()
    tables = sql(
        postgres_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'hephaestus'",
    )
    assert tables == [("orders",)]


def test_a_newer_schema_is_refused_unchanged(postgres_url: str) -> None:
    storage = fresh_postgres(postgres_url)
    storage.open()
    storage.close()
    newer = postgres_module.SCHEMA_VERSION + 1
    sql(postgres_url, f"UPDATE hephaestus.meta SET value = '{newer}' WHERE key = 'version'")
    with pytest.raises(StorageError, match=f"schema version {newer}, newer"):
        PostgresStorage(postgres_url).open()
    assert sql(postgres_url, "SELECT value FROM hephaestus.meta WHERE key = 'version'") == [
        (str(newer),)
    ]


def test_without_migrate_an_older_schema_waits_for_db_migrate(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database at the current schema version, and a hephaestus that knows
    # the next one.
    storage = fresh_postgres(postgres_url)
    storage.open()
    storage.close()
    now = postgres_module.SCHEMA_VERSION
    later = (now + 1, f"{now + 1:03}_later.sql", "CREATE TABLE hephaestus.later (x int);")
    monkeypatch.setattr(postgres_module, "_MIGRATIONS", [*postgres_module._MIGRATIONS, later])
    monkeypatch.setattr(postgres_module, "SCHEMA_VERSION", now + 1)
    with pytest.raises(StorageError, match="run `hephaestus db migrate`"):
        PostgresStorage(postgres_url, migrate=False).open()
    storage = PostgresStorage(postgres_url, migrate=False)
    try:
        assert storage.migrate() == (now, now + 1)
        assert storage.migrate() == (now + 1, now + 1)
        assert storage.find() == []
    finally:
        storage.close()
    assert sql(postgres_url, "SELECT count(*) FROM hephaestus.later") == [(0,)]


def test_a_version_1_database_gains_the_step_jobs_table_and_keeps_its_runs(
    postgres_url: str,
) -> None:
    with Hephaestus(fresh_postgres(postgres_url)) as app:
        app.start_instance(rf.NapFlow, id="nap::old")
        app.wait("nap::old", timeout=30)
    # What version 1 wrote: no step_jobs table.
    sql(postgres_url, "DROP TABLE hephaestus.step_jobs")
    sql(postgres_url, "UPDATE hephaestus.meta SET value = '1' WHERE key = 'version'")
    storage = PostgresStorage(postgres_url)
    try:
        assert storage.migrate() == (1, postgres_module.SCHEMA_VERSION)
        assert [row.id for row in storage.find()] == ["nap::old"]
    finally:
        storage.close()
    assert sql(postgres_url, "SELECT count(*) FROM hephaestus.step_jobs") == [(0,)]


def test_a_commit_wakes_every_other_storage_on_the_database(postgres_url: str) -> None:
    """NOTIFY: another app's data_version moves without it querying."""
    writer, reader = fresh_postgres(postgres_url), PostgresStorage(postgres_url)
    writer.open()
    reader.open()
    try:
        seen = reader.data_version()
        with Hephaestus(writer) as app:
            app.start_instance(rf.NapFlow, id="nap::n1")
            eventually(lambda: reader.data_version() > seen, "the notification")
    finally:
        reader.close()
        writer.close()


def test_a_database_restart_is_survived(postgres_server: PostgresServer) -> None:
    """`pg_ctl restart` under a running app: calls in between fail with
    StorageError (which the runtime retries), then work again, the
    listener reconnects, and nothing committed is lost."""
    url = postgres_server.create_database("restarted")
    storage = PostgresStorage(url)
    with Hephaestus(storage) as app:
        before = app.start_instance(rf.NapFlow, id="nap::before")
        assert app.wait(before, timeout=60).status.value == "waiting"
        postgres_server.restart()
        after = eventually(
            lambda: app.start_instance(rf.NapFlow, id="nap::after"), "a start after the restart"
        )
        assert app.wait(after, timeout=60).status.value == "waiting"
        assert {i.id for i in app.list()} == {"nap::before", "nap::after"}
        seen = storage.data_version()
        other = PostgresStorage(url)
        other.open()
        try:
            with Hephaestus(other) as elsewhere:
                elsewhere.cancel("nap::before", reason="restart test")
        finally:
            other.close()
        eventually(lambda: storage.data_version() > seen, "the listener to hear again")
        assert app.get("nap::before").error == {"kind": "cancelled", "reason": "restart test"}


def test_the_url_picks_postgres_and_the_password_is_not_shown(postgres_url: str) -> None:
    fresh_postgres(postgres_url)
    with Hephaestus(postgres_url) as app:
        assert isinstance(app.storage, PostgresStorage)
    storage = PostgresStorage("postgresql://ada:secret@127.0.0.1:1/nowhere", connect_timeout=1)
    assert "secret" not in repr(storage)
    with pytest.raises(StorageError) as refused:
        storage.open()
    assert "secret" not in str(refused.value)
    assert "cannot connect to Postgres at postgresql://ada@127.0.0.1:1/nowhere" in str(
        refused.value
    )


def test_the_command_migrates_and_runs_on_postgres(postgres_url: str, tmp_path: Any) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    fresh_postgres(postgres_url)
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests / "runtime")])}

    def hep(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hephaestus", *args, "--db", postgres_url],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    migrated = hep("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    version = postgres_module.SCHEMA_VERSION
    assert migrated.stdout.strip().endswith(f"schema version {version} (migrated from version 0)")
    assert hep("db", "migrate").stdout.strip().endswith("(up to date)")
    ran = hep("run", "cli_flows:Simple", "--id", "pg1")
    assert ran.returncode == 0, ran.stderr
    listed = json.loads(hep("list", "--json").stdout)
    assert [(r["id"], r["status"]) for r in listed] == [("simple::pg1", "completed")]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"url": ""}, TypeError),
        ({"url": 5}, TypeError),
        ({"max_connections": 0}, ValueError),
        ({"max_connections": "10"}, TypeError),
        ({"connect_timeout": 0}, ValueError),
        ({"connect_timeout": True}, TypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    arguments: dict[str, Any] = {"url": "postgresql://127.0.0.1/x", **kwargs}
    with pytest.raises(error):
        PostgresStorage(**arguments)
