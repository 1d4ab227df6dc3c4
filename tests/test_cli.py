"""The `hephaestus` command end to end (CONTRACT §12): each subcommand in a
subprocess against a temporary database, its exit status, its `--json`
parsed, and a user's mistakes as one line on stderr with status 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).parent


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["HEPHAESTUS_DATABASE_URL"] = str(tmp_path / "cli.db")
    env.pop("COLUMNS", None)
    return env


def hep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs `python -m hephaestus ARGS` in `tmp_path` (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "hephaestus", *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def hep_json(tmp_path: Path, *args: str, status: int = 0) -> Any:
    done = hep(tmp_path, *args, "--json")
    assert done.returncode == status, done.stderr
    return json.loads(done.stdout)


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Asserts a user's mistake: status 2, one line on stderr, no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


# -- run ---------------------------------------------------------------------------------


def test_run_shows_each_step_and_exits_0_when_completed(tmp_path: Path) -> None:
    done = hep(tmp_path, "run", "cli_flows:Simple", "--id", "a1", "--context", '{"name": "ada"}')
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "workflow Simple v1 started at Greet" in out
    for step in ("Greet", "Left", "Right", "Join"):
        assert f"step {step} started (attempt 1)" in out
        assert f"step {step} completed in " in out
    assert "step Greet completed in" in out
    assert '-> "greeted"' in out
    assert "workflow Simple completed in" in out
    assert out.rstrip().endswith("simple::a1 completed (5 steps)")
    assert "\x1b[" not in out  # plain when not a terminal


def test_run_json_is_the_finished_instance(tmp_path: Path) -> None:
    shown = hep_json(tmp_path, "run", "cli_flows:Simple", "--id", "a2", "--context", '{"n": 1}')
    assert shown["id"] == "simple::a2"
    assert shown["workflow"] == "cli_flows:Simple"
    assert shown["version"] == 1
    assert shown["status"] == "completed"
    assert shown["context"]["initial"] == {"n": 1}
    assert shown["context"]["steps"]["greet"] == {"greeting": "hello world"}
    assert shown["history"][0]["step"] == "cli_flows:Greet"
    assert len(shown["history"]) == 5
    assert [e["attempts"] for e in shown["history"]] == [1] * 5
    assert all(e["duration"] >= 0 for e in shown["history"])
    assert shown["error"] is None


def test_run_context_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "ctx.json").write_text('{"name": "grace"}')
    shown = hep_json(tmp_path, "run", "cli_flows:Simple", "--id", "a3", "--context", "@ctx.json")
    assert shown["context"]["steps"]["greet"] == {"greeting": "hello grace"}


def test_run_exits_1_when_the_instance_fails(tmp_path: Path) -> None:
    done = hep(tmp_path, "run", "cli_flows:Broken", "--id", "b1")
    assert done.returncode == 1, done.stderr
    assert "step Boom failed in" in done.stdout
    assert "(attempt 1, will retry): exception: the card was declined" in done.stdout
    assert "(attempt 2): exception: the card was declined" in done.stdout
    assert "workflow Broken failed at step boom" in done.stdout
    assert "broken::b1 failed at boom: exception: the card was declined" in done.stdout

    shown = hep_json(tmp_path, "show", "broken::b1")
    assert shown["status"] == "failed"
    assert shown["error"]["kind"] == "exception"
    assert shown["error"]["type"] == "builtins.ValueError"
    assert shown["error"]["attempts"] == 2
    assert [a["attempt"] for a in shown["failed_attempts"]] == [1, 2]


def test_run_exits_3_when_the_instance_waits_and_resume_carries_it_on(tmp_path: Path) -> None:
    done = hep(tmp_path, "run", "cli_flows:Approval", "--id", "c1")
    assert done.returncode == 3, done.stderr
    assert "step Approve waits" in done.stdout
    assert "approval::c1 (Approval v1) is waiting:" in done.stdout
    assert "'approved', 'rejected'" in done.stdout

    why = hep(tmp_path, "why", "approval::c1")
    assert why.returncode == 0, why.stderr
    assert why.stdout.startswith("approval::c1 (Approval v1) is waiting:")
    assert "Approve waits for an event" in why.stdout
    facts = hep_json(tmp_path, "why", "approval::c1")
    assert facts["status"] == "waiting"
    assert [r["kind"] for r in facts["reasons"]] == ["event"]
    assert facts["reasons"][0]["step"] == "approve"

    resumed = hep(tmp_path, "resume", "approval::c1", "rejected", "--step", "approve")
    assert resumed.returncode == 0, resumed.stderr
    assert 'step Approve resumed with "rejected" (external)' in resumed.stdout
    assert "step Reject completed in" in resumed.stdout
    shown = hep_json(tmp_path, "show", "approval::c1")
    assert shown["status"] == "completed"
    assert [e["event"] for e in shown["history"]][-3:] == ["rejected", "closed", "done"]


def test_resume_exits_3_when_the_instance_waits_again(tmp_path: Path) -> None:
    assert hep(tmp_path, "run", "cli_flows:Approval", "--id", "c2").returncode == 3
    # Nothing waits for this event: a user's mistake, the instance unchanged.
    one_line_error(hep(tmp_path, "resume", "approval::c2", "paid"), "paid")
    one_line_error(
        hep(tmp_path, "resume", "approval::c2", "approved", "--step", "nope"),
        "no step 'nope'",
        "approve",
    )
    shown = hep_json(tmp_path, "resume", "approval::c2", "approved", "--step", "Approve")
    assert shown["status"] == "completed"


def test_a_second_run_of_an_unfinished_id_is_refused(tmp_path: Path) -> None:
    assert hep(tmp_path, "run", "cli_flows:Approval", "--id", "d1").returncode == 3
    one_line_error(hep(tmp_path, "run", "cli_flows:Approval", "--id", "d1"), "approval::d1")


# -- list, show, why ---------------------------------------------------------------------


def test_list_is_a_table_and_json_with_filters(tmp_path: Path) -> None:
    assert hep(tmp_path, "run", "cli_flows:Simple", "--id", "e1").returncode == 0
    assert hep(tmp_path, "run", "cli_flows:Approval", "--id", "e2").returncode == 3
    table = hep(tmp_path, "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "WORKFLOW", "VERSION", "STATUS", "UPDATED"]
    assert lines[1].split()[:4] == ["approval::e2", "Approval", "1", "waiting"]
    assert lines[2].split()[:4] == ["simple::e1", "Simple", "1", "completed"]
    assert all(line == line.rstrip() for line in lines)

    rows = hep_json(tmp_path, "list")
    assert [(r["id"], r["workflow"], r["version"], r["status"]) for r in rows] == [
        ("approval::e2", "cli_flows:Approval", 1, "waiting"),
        ("simple::e1", "cli_flows:Simple", 1, "completed"),
    ]
    assert [r["id"] for r in hep_json(tmp_path, "list", "--status", "completed")] == ["simple::e1"]
    both = hep_json(tmp_path, "list", "--status", "completed", "--status", "waiting")
    assert [r["id"] for r in both] == ["approval::e2", "simple::e1"]
    assert [r["id"] for r in hep_json(tmp_path, "list", "--workflow", "cli_flows:Approval")] == [
        "approval::e2"
    ]
    assert hep_json(tmp_path, "list", "--status", "failed") == []
    assert len(hep_json(tmp_path, "list", "--limit", "1")) == 1
    assert hep(tmp_path, "list", "--status", "failed").stdout.strip() == "no instances"


def test_show_prints_status_steps_context_history_error_and_graph(tmp_path: Path) -> None:
    assert hep(tmp_path, "run", "cli_flows:Approval", "--id", "f1").returncode == 3
    done = hep(tmp_path, "show", "approval::f1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[0] == "approval::f1  Approval v1  waiting"
    assert "  completed  greet" in out
    assert "  waiting    approve" in out
    assert "  initial    {}" in out
    history = out[out.index("History") : out.index("Graph")]
    assert history.splitlines()[1].split() == [
        "#",
        "FINISHED",
        "(UTC)",
        "STEP",
        "EVENT",
        "TOOK",
        "ATTEMPTS",
        "UPDATES",
    ]
    assert "greet" in history
    assert "greeted" in history
    assert '{"greeting": "hello world"}' in history
    graph = out[out.index("Graph") :]
    assert "[x] Greet" in graph
    assert "[~] Approve" in graph
    assert "legend:" in graph

    assert hep(tmp_path, "run", "cli_flows:Broken", "--id", "f2").returncode == 1
    failed = hep(tmp_path, "show", "broken::f2").stdout
    assert "Failed attempts" in failed
    assert "boom attempt 1: builtins.ValueError: the card was declined" in failed
    assert "Error" in failed
    assert "  kind       exception" in failed
    assert "  traceback (last frames of the last attempt):" in failed
    assert 'raise ValueError("the card was declined")' in failed
    shown = hep_json(tmp_path, "show", "broken::f2")
    assert (
        shown["failed_attempts"][-1]["traceback"]
        .rstrip()
        .endswith("ValueError: the card was declined")
    )
    assert "[!] Boom" in failed


def test_why_of_a_finished_instance_says_so(tmp_path: Path) -> None:
    assert hep(tmp_path, "run", "cli_flows:Simple", "--id", "g1").returncode == 0
    done = hep(tmp_path, "why", "simple::g1")
    assert done.returncode == 0
    assert "is completed" in done.stdout
    assert hep_json(tmp_path, "why", "simple::g1")["reasons"][0]["kind"] == "finished"


# -- cancel --------------------------------------------------------------------------------


def test_cancel_fails_the_instance_with_the_reason(tmp_path: Path) -> None:
    assert hep(tmp_path, "run", "cli_flows:Approval", "--id", "h1").returncode == 3
    done = hep(tmp_path, "cancel", "approval::h1", "--reason", "customer asked")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "approval::h1 cancelled"
    shown = hep_json(tmp_path, "show", "approval::h1")
    assert shown["status"] == "failed"
    assert shown["error"] == {"kind": "cancelled", "reason": "customer asked"}
    one_line_error(hep(tmp_path, "cancel", "approval::h1"), "cannot be cancelled")
    assert hep(tmp_path, "run", "cli_flows:Approval", "--id", "h2").returncode == 3
    cancelled = hep_json(tmp_path, "cancel", "approval::h2", "--reason", "as json")
    assert cancelled["id"] == "approval::h2"
    assert cancelled["status"] == "failed"
    assert cancelled["error"] == {"kind": "cancelled", "reason": "as json"}


# -- graph ---------------------------------------------------------------------------------


def test_graph_in_each_format(tmp_path: Path) -> None:
    mermaid = hep(tmp_path, "graph", "cli_flows:Simple")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.startswith("flowchart")
    assert "Greet" in mermaid.stdout
    assert "Join" in mermaid.stdout
    dot = hep(tmp_path, "graph", "cli_flows:Simple", "--format", "dot")
    assert dot.stdout.startswith("digraph")
    if shutil.which("dot"):
        subprocess.run(
            ["dot", "-Tsvg"], input=dot.stdout, text=True, check=True, capture_output=True
        )
    text = hep(tmp_path, "graph", "cli_flows:Simple", "--format", "text")
    assert text.stdout.splitlines()[0] == "Simple"
    assert "greeted -> Left, Right" in text.stdout


def test_graph_with_an_id_marks_the_live_state(tmp_path: Path) -> None:
    assert hep(tmp_path, "run", "cli_flows:Approval", "--id", "i1").returncode == 3
    text = hep(tmp_path, "graph", "cli_flows:Approval", "--format", "text", "--id", "approval::i1")
    assert text.returncode == 0, text.stderr
    assert "instance approval::i1 (waiting)" in text.stdout
    assert "[x] Greet" in text.stdout
    assert "[~] Approve" in text.stdout
    mermaid = hep(tmp_path, "graph", "cli_flows:Approval", "--id", "approval::i1").stdout
    assert "classDef waiting" in mermaid
    one_line_error(
        hep(tmp_path, "graph", "cli_flows:Simple", "--id", "approval::i1"), "not cli_flows:Simple"
    )


# -- worker --------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_worker_fires_timers_logs_events_and_stops_on_a_signal(
    tmp_path: Path, stop: signal.Signals
) -> None:
    # `run` leaves the instance waiting on its one-second timer; the worker fires it.
    assert hep(tmp_path, "run", "cli_flows:Napping", "--id", "j1").returncode == 3
    worker = subprocess.Popen(
        [sys.executable, "-m", "hephaestus", "worker", "--concurrency", "2"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while hep_json(tmp_path, "show", "napping::j1")["status"] != "completed":
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker did not fire the timer"
            time.sleep(0.2)
        worker.send_signal(stop)
        _, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    assert "runner started: SQLiteStorage" in err
    assert '[napping::j1] step Pause resumed with "timeout" (timeout)' in err
    assert "[napping::j1] step Greet completed in" in err
    assert "[napping::j1] workflow Napping completed in" in err
    assert "stopping" in err


# -- mistakes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("show", "simple::nope"), ("no instance", "simple::nope")),
        (("why", "simple::nope"), ("simple::nope",)),
        (("cancel", "simple::nope"), ("simple::nope",)),
        (("resume", "simple::nope", "go"), ("simple::nope",)),
        (("run", "cli_flows:Simple", "--id", "k1", "--context", "{bad"), ("not valid JSON",)),
        (("run", "cli_flows:Simple", "--id", "k1", "--context", "[1]"), ("JSON object",)),
        (
            ("run", "cli_flows:Simple", "--id", "k1", "--context", "@missing.json"),
            ("missing.json",),
        ),
        (("run", "no_such_module:Flow", "--id", "k1"), ("cannot import 'no_such_module'",)),
        (("run", "cli_flows:Nothing", "--id", "k1"), ("no 'Nothing'",)),
        (("run", "cli_flows:Greet", "--id", "k1"), ("not a Workflow class",)),
        (("run", "cli_flows", "--id", "k1"), ("MODULE:Workflow",)),
        (("run", "cli_flows:Simple", "--id", "NOT VALID"), ("--id", "NOT VALID")),
        (("run", "cli_flows:Simple"), ("--id",)),
        (("list", "--status", "stuck"), ("stuck",)),
        (("graph", "cli_flows:Simple", "--format", "png"), ("png",)),
        (("frobnicate",), ("frobnicate",)),
        (("worker", "--import", "no_such_module"), ("no_such_module",)),
    ],
)
def test_a_mistake_is_one_line_and_status_2(
    tmp_path: Path, args: tuple[str, ...], words: tuple[str, ...]
) -> None:
    assert hep(tmp_path, "run", "cli_flows:Simple", "--id", "seed").returncode == 0
    line = one_line_error(hep(tmp_path, *args), *words)
    assert line.startswith("hephaestus: error: ")


def test_a_module_that_raises_on_import_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_module.py").write_text("raise RuntimeError('half-written')\n")
    one_line_error(
        hep(tmp_path, "run", "broken_module:Flow", "--id", "x"), "RuntimeError: half-written"
    )


def test_a_missing_database_is_not_created_by_a_read(tmp_path: Path) -> None:
    one_line_error(hep(tmp_path, "list", "--db", "elsewhere.db"), "no database at elsewhere.db")
    assert not (tmp_path / "elsewhere.db").exists()
    one_line_error(hep(tmp_path, "show", "x", "--db", "sqlite:///gone.db"), "gone.db")


def test_db_option_overrides_the_environment(tmp_path: Path) -> None:
    assert (
        hep(tmp_path, "run", "cli_flows:Simple", "--id", "l1", "--db", "other.db").returncode == 0
    )
    assert (tmp_path / "other.db").exists()
    assert [r["id"] for r in hep_json(tmp_path, "list", "--db", "sqlite:///other.db")] == [
        "simple::l1"
    ]
    one_line_error(hep(tmp_path, "list"), "no database at")


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("just some text, not SQLite " * 100)
    one_line_error(hep(tmp_path, "list", "--db", "notes.db"))


def test_the_console_script_and_help(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "hephaestus"
    done = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for command in ("run", "list", "show", "why", "resume", "cancel", "graph", "worker"):
        assert command in done.stdout
    assert hep(tmp_path, "run", "--help").returncode == 0
    alone = hep(tmp_path)
    assert alone.returncode == 0
    assert alone.stdout.startswith("Usage: hephaestus")
    assert alone.stderr == ""
    assert "hephaestus, version" in hep(tmp_path, "--version").stdout


# -- in a real terminal ----------------------------------------------------------------------


def test_run_in_a_terminal_shows_live_progress(tmp_path: Path) -> None:
    """tmux gives `hephaestus run` a real terminal; the pane shows each step
    as it starts and completes, with its duration, in colour."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing under CI (scripts/test.sh installs it)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    session = f"hephaestus-test-{os.getpid()}"
    env = _env(tmp_path)
    script = tmp_path / "run.sh"
    script.write_text(
        f"cd {tmp_path}\n"
        f"export PYTHONPATH={env['PYTHONPATH']}\n"
        f"export HEPHAESTUS_DATABASE_URL={env['HEPHAESTUS_DATABASE_URL']}\n"
        f"{sys.executable} -m hephaestus run cli_flows:Leisurely --id t1\n"
        "echo EXIT=$?\n"
        "sleep 600\n"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", "bash", str(script)],
        check=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    try:
        deadline = time.monotonic() + 120
        pane = ""
        while "EXIT=" not in pane:
            assert time.monotonic() < deadline, pane
            time.sleep(0.2)
            pane = subprocess.run(
                ["tmux", "capture-pane", "-p", "-e", "-t", session],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    plain = _strip_ansi(pane)
    assert "EXIT=0" in plain
    assert "▶ workflow Leisurely v1 started at Slow" in plain
    assert "· step Slow started (attempt 1)" in plain
    assert "✔ step Slow completed in " in plain
    assert "✔ step Slower completed in " in plain
    assert "■ workflow Leisurely completed in" in plain
    assert "leisurely::t1 completed (3 steps)" in plain
    assert "\x1b[" in pane  # coloured: it knew it was a terminal


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_a_worker_on_an_unreachable_postgres_says_so_in_one_line(tmp_path: Path) -> None:
    done = hep(tmp_path, "worker", "--db", "postgresql://nobody@127.0.0.1:1/none")
    one_line_error(done, "cannot connect to Postgres at postgresql://nobody@127.0.0.1:1/none")


def test_the_procrastinate_executor_on_sqlite_is_refused_in_one_line(tmp_path: Path) -> None:
    done = hep(tmp_path, "worker", "--executor", "procrastinate", "--db", "x.db")
    one_line_error(done, "needs a Postgres storage")


# -- db migrate --------------------------------------------------------------------------------


def test_db_migrate_creates_and_reports_the_sqlite_schema(tmp_path: Path) -> None:
    from hephaestus.runtime.storage import sqlite

    done = hep(tmp_path, "db", "migrate", "--db", "fresh.db")
    assert done.returncode == 0, done.stderr
    version = sqlite.SCHEMA_VERSION
    assert done.stdout.strip() == f"fresh.db: schema version {version} (migrated from version 0)"
    again = hep(tmp_path, "db", "migrate", "--db", "fresh.db")
    assert again.stdout.strip() == f"fresh.db: schema version {version} (up to date)"


def test_a_workflow_in_the_working_directory_loads_for_every_command(tmp_path: Path) -> None:
    """A user's module beside them, not on PYTHONPATH: `run` imports it, and
    so do `show`, `why` and `resume`, which find its name in the database."""
    (tmp_path / "my_orders.py").write_text(
        "from hephaestus import Done, Step, Unique, WaitForEvent, Workflow\n"
        "class Pick(Step):\n"
        "    events = ('picked',)\n"
        "    def execute(self, instance, config, context):\n"
        "        return 'picked'\n"
        "class Approve(WaitForEvent):\n"
        "    events = ('approved',)\n"
        "class Order(Workflow, unique=Unique('order')):\n"
        "    start = Pick\n"
        "    transitions = {Pick: {'picked': Approve}, Approve: {'approved': Done}}\n"
    )
    assert hep(tmp_path, "run", "my_orders:Order", "--id", "w1").returncode == 3
    shown = hep(tmp_path, "show", "order::w1")
    assert shown.returncode == 0, shown.stderr
    assert "[~] Approve" in shown.stdout
    why = hep(tmp_path, "why", "order::w1")
    assert "Approve waits for an event" in why.stdout
    assert hep(tmp_path, "resume", "order::w1", "approved").returncode == 0


def test_db_migrate_refuses_what_it_cannot_migrate(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database " * 100)
    one_line_error(hep(tmp_path, "db", "migrate", "--db", "notes.txt"), "not an SQLite database")
    one_line_error(hep(tmp_path, "db", "migrate", "--db", "memory://"), "memory://")
