"""The storage contract (``hephaestus.runtime.storage.base``): one suite that
every storage passes, then what only ``SQLiteStorage`` promises (its file,
its schema, its failures, group commit, several processes on one file).

A new storage joins by adding itself to ``STORAGES`` and ``storage()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hephaestus.errors import AlreadyRunningError
from hephaestus.runtime.storage import (
    Append,
    Attempt,
    ConflictError,
    Firing,
    MemoryStorage,
    NewRun,
    SQLiteStorage,
    StorageError,
    Timer,
)
from hephaestus.runtime.storage import sqlite as sqlite_module
from pg_server import fresh_postgres

STORAGES = ["memory", "sqlite", "postgres"]
WORKFLOW = "shop:Order"


@pytest.fixture(params=STORAGES)
def storage(request, tmp_path):
    if request.param == "memory":
        opened = MemoryStorage()
    elif request.param == "sqlite":
        opened = SQLiteStorage(tmp_path / "h.db")
    else:
        opened = fresh_postgres(request.getfixturevalue("postgres_url"))
    opened.open()
    yield opened
    opened.close()


def new_run(id="order::1", *, unique_key="order::1", workflow=WORKFLOW, version=1, at=1.0):
    return NewRun(
        id=id,
        token=f"token-{id}",
        workflow=workflow,
        version=version,
        unique_key=unique_key,
        snapshot=b"pending " + id.encode(),
        created_at=at,
    )


def change(run_id, expected_seq, *records, status="running", runnable=True, at=2.0, **fields):
    return Append(
        run_id=run_id,
        expected_seq=expected_seq,
        records=list(records),
        status=status,
        runnable=runnable,
        updated_at=at,
        **fields,
    )


def create_many(storage, count, **fields):
    return [storage.create(new_run(f"order::{i}", unique_key=None, **fields)) for i in range(count)]


def start_threads(count, target):
    """Starts ``target(i)`` in ``count`` threads at once; ``join()`` returns
    what each returned or raised."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def body(i):
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()

    def join():
        for thread in threads:
            thread.join()
        return results

    return join


def run_threads(count, target):
    return start_threads(count, target)()


# -- create -------------------------------------------------------------------


def test_create_returns_increasing_run_ids(storage):
    first = storage.create(new_run("order::1"))
    second = storage.create(new_run("order::2", unique_key="order::2"))
    third = storage.create(new_run("order::3", unique_key=None))
    assert first < second < third


def test_a_created_run_is_pending_and_runnable_with_its_snapshot_and_no_journal(storage):
    run_id = storage.create(new_run("order::1", version=3, at=5.0))
    stored = storage.load(run_id)
    row = stored.row
    assert (row.run_id, row.id, row.token, row.workflow, row.version) == (
        run_id,
        "order::1",
        "token-order::1",
        WORKFLOW,
        3,
    )
    assert (row.status, row.seq, row.runnable) == ("pending", 0, True)
    assert (row.lease_owner, row.lease_expires) == (None, None)
    assert (row.created_at, row.updated_at) == (5.0, 5.0)
    assert (stored.snapshot, stored.snapshot_seq) == (b"pending order::1", 0)
    assert (stored.records, stored.timers, stored.attempts) == ([], [], [])


def test_a_run_keeps_the_trace_context_it_was_started_in(storage):
    traced = dataclasses.replace(new_run(), trace='{"traceparent": "00-ab-cd-01"}')
    run_id = storage.create(traced)
    storage.commit([change(run_id, 0, b"r1")])
    assert storage.load(run_id).row.trace == '{"traceparent": "00-ab-cd-01"}'
    assert storage.newest("order::1").trace == '{"traceparent": "00-ab-cd-01"}'
    assert storage.find(id="order::1")[0].trace == '{"traceparent": "00-ab-cd-01"}'
    other = storage.create(new_run("order::2", unique_key=None))
    assert storage.load(other).row.trace is None


def test_create_with_a_unique_key_an_unfinished_run_holds_raises_already_running(storage):
    first = storage.create(new_run("order::1"))
    storage.commit([change(first, 0, b"r1", status="waiting", runnable=False)])
    with pytest.raises(AlreadyRunningError, match="order::1"):
        storage.create(new_run("order::1"))
    with pytest.raises(AlreadyRunningError, match="order::1"):
        storage.create(new_run("order::2", unique_key="order::1"))
    assert [row.run_id for row in storage.find()] == [first]


def test_runs_without_a_unique_key_never_clash(storage):
    first = storage.create(new_run("order::1", unique_key=None))
    second = storage.create(new_run("order::1", unique_key=None))
    assert [row.run_id for row in storage.find(id="order::1")] == [second, first]


@pytest.mark.parametrize("end", ["completed", "failed"])
def test_a_finished_run_frees_its_unique_key_and_is_kept(storage, end):
    first = storage.create(new_run("order::1"))
    storage.commit([change(first, 0, b"done", status=end, runnable=False)])
    second = storage.create(new_run("order::1", at=3.0))
    assert second > first
    assert storage.newest("order::1").run_id == second
    assert [row.run_id for row in storage.find(id="order::1")] == [second, first]
    assert storage.load(first).row.status == end
    with pytest.raises(AlreadyRunningError):
        storage.create(new_run("order::1"))


def test_racing_creates_of_one_unique_key_make_exactly_one_run(storage):
    results = run_threads(8, lambda i: storage.create(new_run("order::1", at=float(i))))
    run_ids = [r for r in results if isinstance(r, int)]
    assert len(run_ids) == 1
    assert all(isinstance(r, AlreadyRunningError) for r in results if r not in run_ids)
    assert [row.run_id for row in storage.find()] == run_ids


# -- commit -------------------------------------------------------------------


def test_commit_appends_records_in_order_and_updates_the_row(storage):
    run_id = storage.create(new_run())
    assert storage.commit([change(run_id, 0, b"r1", b"r2", status="running", at=2.0)]) == [None]
    assert storage.commit([change(run_id, 2, b"r3", status="waiting", runnable=False, at=3.0)]) == [
        None
    ]
    stored = storage.load(run_id)
    assert stored.records == [b"r1", b"r2", b"r3"]
    assert (stored.row.seq, stored.row.status, stored.row.runnable) == (3, "waiting", False)
    assert (stored.row.created_at, stored.row.updated_at) == (1.0, 3.0)
    assert (stored.snapshot, stored.snapshot_seq) == (b"pending order::1", 0)


def test_commit_of_no_changes_returns_no_results(storage):
    assert storage.commit([]) == []


def test_a_snapshot_replaces_the_journal_before_it(storage):
    run_id = storage.create(new_run())
    storage.commit([change(run_id, 0, b"r1", b"r2", snapshot=b"after 2")])
    stored = storage.load(run_id)
    assert (stored.snapshot, stored.snapshot_seq, stored.records) == (b"after 2", 2, [])
    storage.commit([change(run_id, 2, b"r3")])
    storage.commit([change(run_id, 3, b"r4")])
    stored = storage.load(run_id)
    assert (stored.snapshot, stored.snapshot_seq, stored.records) == (b"after 2", 2, [b"r3", b"r4"])
    assert stored.row.seq == 4


def test_changes_to_one_run_in_one_commit_apply_in_order(storage):
    run_id = storage.create(new_run())
    results = storage.commit([change(run_id, 0, b"r1"), change(run_id, 1, b"r2", b"r3")])
    assert results == [None, None]
    assert storage.load(run_id).records == [b"r1", b"r2", b"r3"]


def test_a_stale_change_is_reported_in_place_while_the_others_apply(storage):
    a, b, c = create_many(storage, 3)
    storage.commit([change(b, 0, b"b1")])
    results = storage.commit(
        [
            change(a, 0, b"a1"),
            change(b, 0, b"b-stale", set_timers=[Timer("s", "retry", 9.0, 2)]),
            change(c, 0, b"c1"),
        ]
    )
    assert results[0] is None
    assert isinstance(results[1], ConflictError)
    assert results[2] is None
    assert storage.load(a).records == [b"a1"]
    assert storage.load(b).records == [b"b1"]
    assert storage.load(b).timers == []
    assert storage.load(c).records == [b"c1"]


def test_a_conflicting_change_leaves_no_trace(storage):
    run_id = storage.create(new_run())
    storage.commit([change(run_id, 0, b"r1")])
    before = storage.load(run_id)
    [conflict] = storage.commit(
        [
            change(
                run_id,
                0,
                b"stale",
                status="failed",
                runnable=False,
                at=9.0,
                snapshot=b"stale snapshot",
                set_timers=[Timer("s", "wait", 5.0)],
                attempts=[Attempt("s", 1, 4.0, "exception")],
                release=True,
            )
        ]
    )
    assert isinstance(conflict, ConflictError)
    assert storage.load(run_id) == before
    with pytest.raises(AlreadyRunningError):
        storage.create(new_run())


def test_a_change_to_an_unknown_run_conflicts(storage):
    [conflict] = storage.commit([change(12345, 0, b"r1")])
    assert isinstance(conflict, ConflictError)


def test_a_change_with_an_owner_applies_only_while_that_owner_holds_the_lease(storage):
    run_id = storage.create(new_run())
    [unleased] = storage.commit([change(run_id, 0, b"r1", owner="w1")])
    assert isinstance(unleased, ConflictError)
    storage.claim("w2", now=1.0, lease=10.0, limit=10)
    [foreign] = storage.commit([change(run_id, 0, b"r1", owner="w1")])
    assert isinstance(foreign, ConflictError)
    assert storage.commit([change(run_id, 0, b"r1", owner="w2")]) == [None]
    assert storage.commit([change(run_id, 1, b"r2")]) == [None]
    assert storage.load(run_id).records == [b"r1", b"r2"]
    assert storage.load(run_id).row.lease_owner == "w2"


def test_an_owner_whose_expired_lease_was_taken_over_is_fenced_off(storage):
    run_id = storage.create(new_run())
    storage.claim("w1", now=1.0, lease=10.0, limit=10)
    storage.claim("w2", now=11.0, lease=10.0, limit=10)
    [conflict] = storage.commit([change(run_id, 0, b"late", owner="w1")])
    assert isinstance(conflict, ConflictError)
    assert storage.commit([change(run_id, 0, b"r1", owner="w2")]) == [None]


@pytest.mark.parametrize("end", ["completed", "failed"])
def test_finishing_frees_the_key_drops_the_timers_and_releases_the_lease(storage, end):
    run_id = storage.create(new_run())
    storage.claim("w1", now=1.0, lease=10.0, limit=10)
    storage.commit([change(run_id, 0, b"r1", set_timers=[Timer("s", "wait", 5.0)], owner="w1")])
    storage.commit([change(run_id, 1, b"end", status=end, runnable=False, owner="w1")])
    stored = storage.load(run_id)
    assert (stored.row.status, stored.row.runnable) == (end, False)
    assert (stored.row.lease_owner, stored.row.lease_expires) == (None, None)
    assert stored.timers == []
    assert storage.due(now=100.0, limit=10) == []
    assert storage.next_wake("w2") is None
    assert storage.create(new_run()) > run_id


def test_release_gives_the_lease_up_after_the_change(storage):
    run_id = storage.create(new_run())
    storage.claim("w1", now=1.0, lease=10.0, limit=10)
    storage.commit([change(run_id, 0, b"r1", status="waiting", owner="w1", release=True)])
    row = storage.load(run_id).row
    assert (row.seq, row.status, row.lease_owner, row.lease_expires) == (1, "waiting", None, None)
    assert [r.run_id for r in storage.claim("w2", now=2.0, lease=10.0, limit=10)] == [run_id]


def test_attempts_are_kept_in_order_and_loaded(storage):
    run_id = storage.create(new_run())
    first = Attempt("charge", 1, finished=3.0, outcome="exception", error_type="ValueError",
                    error_message="no card", started=2.5,
                    traceback='Traceback...\nValueError: no card\n')  # fmt: skip
    second = Attempt("charge", 2, finished=6.0, outcome="timeout")
    storage.commit([change(run_id, 0, b"r1", attempts=[first])])
    storage.commit([change(run_id, 1, b"r2", snapshot=b"s2", attempts=[second])])
    assert storage.load(run_id).attempts == [first, second]


# -- timers -------------------------------------------------------------------


def test_timers_are_set_per_step_replaced_and_dropped(storage):
    run_id = storage.create(new_run())
    storage.commit(
        [change(run_id, 0, set_timers=[Timer("b", "wait", 9.0), Timer("a", "retry", 5.0, 2)])]
    )
    assert storage.load(run_id).timers == [Timer("a", "retry", 5.0, 2), Timer("b", "wait", 9.0)]
    storage.commit([change(run_id, 0, set_timers=[Timer("a", "retry", 12.0, 3)])])
    assert storage.load(run_id).timers == [Timer("b", "wait", 9.0), Timer("a", "retry", 12.0, 3)]
    storage.commit([change(run_id, 0, drop_timers=["b", "unknown"])])
    assert storage.load(run_id).timers == [Timer("a", "retry", 12.0, 3)]
    # Dropped first, then set: a step's new timer replaces its old one.
    retry = Timer("a", "retry", 20.0, 4)
    storage.commit([change(run_id, 0, drop_timers=["a"], set_timers=[retry])])
    assert storage.load(run_id).timers == [retry]


def test_due_lists_the_due_timers_earliest_first_up_to_the_limit(storage):
    a, b = create_many(storage, 2)
    storage.commit(
        [
            change(a, 0, set_timers=[Timer("late", "wait", 30.0), Timer("t", "wait", 10.0)]),
            change(b, 0, set_timers=[Timer("t", "retry", 5.0, 2), Timer("u", "wait", 10.0)]),
        ]
    )
    assert storage.due(now=4.0, limit=10) == []
    assert storage.due(now=10.0, limit=10) == [
        (b, Timer("t", "retry", 5.0, 2)),
        (a, Timer("t", "wait", 10.0)),
        (b, Timer("u", "wait", 10.0)),
    ]
    assert storage.due(now=100.0, limit=2) == [
        (b, Timer("t", "retry", 5.0, 2)),
        (a, Timer("t", "wait", 10.0)),
    ]
    assert storage.due(now=100.0, limit=0) == []


def test_a_timer_fires_exactly_once(storage):
    run_id = storage.create(new_run())
    storage.commit([change(run_id, 0, runnable=False, set_timers=[Timer("t", "wait", 5.0)])])
    firing = Firing(run_id, "t", b"resume")
    assert storage.fire([firing, firing], now=6.0) == [True, False]
    assert storage.fire([firing], now=7.0) == [False]
    assert storage.load(run_id).records == [b"resume"]


def test_racing_firings_of_one_timer_fire_it_once(storage):
    run_id = storage.create(new_run())
    storage.commit([change(run_id, 0, runnable=False, set_timers=[Timer("t", "wait", 5.0)])])
    results = run_threads(8, lambda i: storage.fire([Firing(run_id, "t", b"resume")], now=6.0))
    assert sorted(results) == [[False]] * 7 + [[True]]
    assert storage.load(run_id).records == [b"resume"]


def test_firing_a_wait_appends_its_record_after_the_journal_and_makes_the_run_runnable(storage):
    run_id = storage.create(new_run())
    storage.commit(
        [
            change(
                run_id,
                0,
                b"r1",
                b"r2",
                status="waiting",
                runnable=False,
                snapshot=b"s1",
                set_timers=[Timer("t", "wait", 5.0), Timer("other", "retry", 50.0, 2)],
            )
        ]
    )
    storage.commit([change(run_id, 2, b"r3", status="waiting", runnable=False)])
    assert storage.fire([Firing(run_id, "t", b"timeout")], now=6.0) == [True]
    stored = storage.load(run_id)
    assert stored.records == [b"r3", b"timeout"]
    assert (stored.row.seq, stored.row.runnable, stored.row.updated_at) == (4, True, 6.0)
    assert stored.row.status == "running", "a fired wait resumes its step"
    assert stored.timers == [Timer("other", "retry", 50.0, 2)]
    [stale] = storage.commit([change(run_id, 3, b"built on 3")])
    assert isinstance(stale, ConflictError)


def test_firing_a_retry_makes_the_run_runnable_without_a_record(storage):
    run_id = storage.create(new_run())
    retry = Timer("s", "retry", 5.0, 2)
    storage.commit([change(run_id, 0, b"r1", runnable=False, set_timers=[retry])])
    assert storage.fire([Firing(run_id, "s", None)], now=6.0) == [True]
    stored = storage.load(run_id)
    assert (stored.records, stored.row.seq, stored.row.runnable) == ([b"r1"], 1, True)
    assert stored.timers == []


def test_firing_a_dropped_or_unknown_timer_does_nothing(storage):
    run_id = storage.create(new_run())
    storage.commit([change(run_id, 0, runnable=False, set_timers=[Timer("t", "wait", 5.0)])])
    storage.commit([change(run_id, 0, runnable=False, drop_timers=["t"])])
    before = storage.load(run_id)
    firings = [Firing(run_id, "t", b"x"), Firing(run_id, "nope", b"x"), Firing(999, "t", b"x")]
    assert storage.fire(firings, now=6.0) == [False, False, False]
    assert storage.load(run_id) == before


# -- claim, renew, release ----------------------------------------------------


def test_claim_leases_runnable_runs_oldest_first_up_to_the_limit(storage):
    run_ids = create_many(storage, 4)
    claimed = storage.claim("w1", now=1.0, lease=10.0, limit=3)
    assert [row.run_id for row in claimed] == run_ids[:3]
    assert all((r.lease_owner, r.lease_expires) == ("w1", 11.0) for r in claimed)
    assert storage.load(run_ids[0]).row.lease_owner == "w1"
    assert storage.load(run_ids[3]).row.lease_owner is None
    assert storage.claim("w1", now=1.0, lease=10.0, limit=0) == []


def test_claim_leaves_out_runs_that_are_not_runnable_or_finished(storage):
    waiting, done, ready = create_many(storage, 3)
    storage.commit(
        [
            change(waiting, 0, status="waiting", runnable=False),
            change(done, 0, status="completed", runnable=False),
        ]
    )
    assert [row.run_id for row in storage.claim("w1", now=1.0, lease=10.0, limit=10)] == [ready]


def test_claim_takes_a_run_held_by_another_owner_only_once_its_lease_expired(storage):
    [run_id] = create_many(storage, 1)
    storage.claim("w1", now=1.0, lease=10.0, limit=10)
    assert storage.claim("w2", now=10.9, lease=10.0, limit=10) == []
    [row] = storage.claim("w2", now=11.0, lease=10.0, limit=10)
    assert (row.run_id, row.lease_owner, row.lease_expires) == (run_id, "w2", 21.0)


def test_claim_takes_the_owners_own_leases_again_and_extends_them(storage):
    [run_id] = create_many(storage, 1)
    storage.claim("w1", now=1.0, lease=10.0, limit=10)
    [row] = storage.claim("w1", now=5.0, lease=10.0, limit=10)
    assert (row.run_id, row.lease_owner, row.lease_expires) == (run_id, "w1", 15.0)


def test_claim_leaves_out_the_skipped_workflows(storage):
    a = storage.create(new_run("a::1", unique_key=None, workflow="shop:A"))
    storage.create(new_run("b::1", unique_key=None, workflow="shop:B"))
    c = storage.create(new_run("c::1", unique_key=None, workflow="shop:C"))
    claimed = storage.claim("w1", now=1.0, lease=10.0, limit=10, skip={"shop:B"})
    assert [row.run_id for row in claimed] == [a, c]


def test_two_owners_never_hold_one_run(storage):
    run_ids = create_many(storage, 40)
    results = run_threads(8, lambda i: storage.claim(f"w{i}", now=1.0, lease=10.0, limit=7))
    claimed = [row.run_id for rows in results for row in rows]
    assert sorted(claimed) == sorted(set(claimed))
    assert set(claimed) == set(run_ids)
    for i, rows in enumerate(results):
        for row in rows:
            assert storage.load(row.run_id).row.lease_owner == f"w{i}"


def test_renew_extends_every_lease_of_the_owner_and_no_other(storage):
    a, b, c = create_many(storage, 3)
    storage.claim("w1", now=1.0, lease=10.0, limit=2)
    storage.claim("w2", now=1.0, lease=10.0, limit=10)
    storage.renew("w1", now=8.0, lease=10.0)
    expires = {r: storage.load(r).row.lease_expires for r in (a, b, c)}
    assert expires == {a: 18.0, b: 18.0, c: 11.0}


def test_release_gives_up_only_the_owners_leases_on_the_given_runs(storage):
    a, b, c = create_many(storage, 3)
    storage.claim("w1", now=1.0, lease=10.0, limit=2)
    storage.claim("w2", now=1.0, lease=10.0, limit=10)
    storage.release("w1", [a, c])
    owners = {r: storage.load(r).row.lease_owner for r in (a, b, c)}
    assert owners == {a: None, b: "w1", c: "w2"}
    assert storage.load(a).row.lease_expires is None
    storage.release("w1", [])


def test_release_of_none_gives_up_every_lease_of_the_owner(storage):
    a, b, c = create_many(storage, 3)
    storage.claim("w1", now=1.0, lease=10.0, limit=2)
    storage.claim("w2", now=1.0, lease=10.0, limit=10)
    storage.release("w1", None)
    owners = {r: storage.load(r).row.lease_owner for r in (a, b, c)}
    assert owners == {a: None, b: None, c: "w2"}


def test_the_data_version_moves_with_commits_and_stays_put_otherwise(storage):
    version = storage.data_version()
    assert storage.data_version() == version
    run_id = storage.create(new_run())
    after_create = storage.data_version()
    assert after_create != version
    storage.commit([change(run_id, 0, b"r1")])
    assert storage.data_version() != after_create
    assert storage.data_version() == storage.data_version()


def test_lease_owners_are_the_holders_of_leases(storage):
    assert storage.lease_owners() == set()
    a, b, _ = create_many(storage, 3)
    storage.claim("w1", now=1.0, lease=10.0, limit=1)
    storage.claim("w2", now=1.0, lease=10.0, limit=1)
    assert storage.lease_owners() == {"w1", "w2"}
    storage.release("w1", [a])
    # A finished run gives its lease up.
    storage.commit(
        [change(b, 0, b"r1", status="completed", runnable=False, owner="w2", release=True)]
    )
    assert storage.lease_owners() == set()


# -- next_wake ----------------------------------------------------------------


def test_next_wake_is_none_when_nothing_will_need_the_owner(storage):
    assert storage.next_wake("w1") is None
    run_id = storage.create(new_run())
    storage.commit([change(run_id, 0, status="waiting", runnable=False)])
    assert storage.next_wake("w1") is None


def test_next_wake_is_the_earliest_timer(storage):
    a, b = create_many(storage, 2)
    storage.commit(
        [
            change(a, 0, runnable=False, set_timers=[Timer("t", "wait", 30.0)]),
            change(b, 0, runnable=False, set_timers=[Timer("t", "retry", 20.0, 2)]),
        ]
    )
    assert storage.next_wake("w1") == 20.0


def test_next_wake_counts_the_leases_others_hold_on_runnable_runs(storage):
    mine, theirs, idle = create_many(storage, 3)
    storage.claim("w1", now=1.0, lease=5.0, limit=1)
    storage.claim("w2", now=2.0, lease=10.0, limit=10)
    assert storage.next_wake("w1") == 12.0
    assert storage.next_wake("w2") == 6.0
    storage.commit([change(theirs, 0, status="waiting", runnable=False)])
    storage.commit([change(idle, 0, status="waiting", runnable=False)])
    assert storage.next_wake("w1") is None
    storage.commit([change(mine, 0, runnable=False, set_timers=[Timer("t", "wait", 40.0)])])
    assert storage.next_wake("w1") == 40.0


# -- find, newest, load -------------------------------------------------------


def test_find_returns_the_runs_matching_every_filter_newest_first(storage):
    a1 = storage.create(new_run("a::1", unique_key=None, workflow="shop:A", version=1))
    a2 = storage.create(new_run("a::2", unique_key=None, workflow="shop:A", version=2))
    b1 = storage.create(new_run("b::1", unique_key=None, workflow="shop:B", version=1))
    a1_again = storage.create(new_run("a::1", unique_key=None, workflow="shop:A", version=2))
    storage.commit([change(a2, 0, status="completed", runnable=False)])
    storage.commit([change(b1, 0, status="waiting", runnable=False)])

    def ids(**filters):
        return [row.run_id for row in storage.find(**filters)]

    assert ids() == [a1_again, b1, a2, a1]
    assert ids(limit=2) == [a1_again, b1]
    assert ids(limit=0) == []
    assert ids(workflows=["shop:A"]) == [a1_again, a2, a1]
    assert ids(workflows={"shop:A", "shop:B"}, version=1) == [b1, a1]
    assert ids(statuses=["pending", "waiting"]) == [a1_again, b1, a1]
    assert ids(statuses=("completed",), workflows=["shop:A"]) == [a2]
    assert ids(version=2) == [a1_again, a2]
    assert ids(id="a::1") == [a1_again, a1]
    assert ids(id="a::1", version=1, statuses=["pending"], workflows=["shop:A"]) == [a1]
    assert ids(id="a::1", limit=1) == [a1_again]
    assert ids(workflows=[]) == []
    assert ids(statuses=[]) == []
    assert ids(id="nope") == []


def test_newest_is_the_latest_run_of_an_id_or_none(storage):
    first = storage.create(new_run("order::1", unique_key=None))
    storage.create(new_run("order::2", unique_key=None))
    second = storage.create(new_run("order::1", unique_key=None))
    assert storage.newest("order::1") == storage.load(second).row
    assert storage.newest("order::1").run_id != first
    assert storage.newest("order::3") is None


def test_load_of_an_unknown_run_raises_key_error(storage):
    with pytest.raises(KeyError):
        storage.load(4242)


def test_a_closed_storage_cannot_be_used(storage):
    run_id = storage.create(new_run())
    storage.close()
    with pytest.raises(StorageError):
        storage.load(run_id)
    with pytest.raises(StorageError):
        storage.create(new_run("order::2", unique_key=None))
    storage.close()


# -- SQLite: the file and its schema ------------------------------------------


def open_sqlite(path, **options):
    opened = SQLiteStorage(path, **options)
    opened.open()
    return opened


@contextlib.contextmanager
def raw(path):
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def test_sqlite_creates_its_schema_in_wal_mode(tmp_path):
    path = tmp_path / "h.db"
    open_sqlite(path).close()
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_module.SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {"hephaestus_meta", "runs", "journal", "timers", "attempts"} <= tables
    assert {"runs_unique_key", "runs_status", "runs_workflow", "runs_id", "timers_due"} <= tables


def test_sqlite_reopening_a_database_keeps_its_runs(tmp_path):
    path = tmp_path / "h.db"
    storage = open_sqlite(path)
    run_id = storage.create(new_run())
    storage.commit([change(run_id, 0, b"r1", set_timers=[Timer("t", "wait", 5.0)])])
    before = storage.load(run_id)
    storage.close()
    storage = open_sqlite(path)
    try:
        assert storage.load(run_id) == before
        with pytest.raises(AlreadyRunningError):
            storage.create(new_run())
    finally:
        storage.close()


def test_sqlite_migrates_an_older_schema(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    storage = open_sqlite(path)
    run_id = storage.create(new_run())
    storage.close()
    later = (len(sqlite_module._MIGRATIONS) + 1, "later.sql", "CREATE TABLE later (x);\n")
    monkeypatch.setattr(sqlite_module, "_MIGRATIONS", [*sqlite_module._MIGRATIONS, later])
    monkeypatch.setattr(sqlite_module, "SCHEMA_VERSION", later[0])
    storage = open_sqlite(path)
    try:
        assert storage.load(run_id).row.id == "order::1"
    finally:
        storage.close()
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == later[0]
        assert conn.execute("SELECT count(*) FROM later").fetchone()[0] == 0


def test_sqlite_migration_2_keeps_timers_and_takes_repeat_timers(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_module, "_MIGRATIONS", sqlite_module._MIGRATIONS[:1])
        patch.setattr(sqlite_module, "SCHEMA_VERSION", 1)
        open_sqlite(path).close()
    with raw(path) as conn:
        # A run as schema 1 wrote it.
        run_id = conn.execute(
            "INSERT INTO runs (token, id, workflow, version, status, seq, runnable, "
            "created_at, updated_at) VALUES ('t', 'order::1', 'm:W', 1, 'running', 0, 1, 0, 0)"
        ).lastrowid
        conn.execute("INSERT INTO snapshots (run_id, seq, data) VALUES (?, 0, x'00')", (run_id,))
        conn.execute(
            "INSERT INTO timers (run_id, step, kind, due, attempt) "
            "VALUES (?, 'pay', 'retry', 5, 2)",
            (run_id,),
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO timers (run_id, step, kind, due, attempt) "
                "VALUES (?, 'poll#1', 'repeat', 6, 0)",
                (run_id,),
            )
    storage = open_sqlite(path)
    try:
        assert storage.load(run_id).timers == [Timer("pay", "retry", 5.0, 2)]
    finally:
        storage.close()
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_module.SCHEMA_VERSION
        conn.execute(
            "INSERT INTO timers (run_id, step, kind, due, attempt) "
            "VALUES (?, 'poll#1', 'repeat', 6, 0)",
            (run_id,),
        )
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(timers)")}
        assert "timers_due" in indexes


def refused_unchanged(path, match):
    """Opening ``path`` raises StorageError matching ``match`` and changes no byte."""
    before = path.read_bytes()
    names = sorted(p.name for p in path.parent.iterdir())
    storage = SQLiteStorage(path)
    with pytest.raises(StorageError, match=match):
        storage.open()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == names
    with pytest.raises(StorageError):
        storage.load(1)
    storage.close()


def test_sqlite_refuses_a_newer_schema_and_leaves_the_file_unchanged(tmp_path):
    path = tmp_path / "h.db"
    open_sqlite(path).close()
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite_module.SCHEMA_VERSION + 1}")
    refused_unchanged(path, "newer")


def test_sqlite_refuses_a_file_that_is_not_sqlite_and_leaves_it_unchanged(tmp_path):
    path = tmp_path / "h.db"
    path.write_bytes(b"name,amount\nwidget,3\n" * 100)
    refused_unchanged(path, "not an SQLite database")


def test_sqlite_refuses_an_sqlite_database_that_is_not_ours_and_leaves_it_unchanged(tmp_path):
    path = tmp_path / "h.db"
    with raw(path) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO runs (name) VALUES ('theirs')")
    refused_unchanged(path, "not a hephaestus database")
    with raw(path) as conn:
        conn.execute("PRAGMA user_version = 1")
    refused_unchanged(path, "not a hephaestus database")


def test_sqlite_rejects_a_path_that_is_not_a_file():
    with pytest.raises(ValueError, match="MemoryStorage"):
        SQLiteStorage(":memory:")


# -- SQLite: failures ---------------------------------------------------------


def _check_read_only(path, run_id):
    """Reads work and a write fails with a clear error on a read-only file."""
    storage = open_sqlite(path)
    try:
        assert [row.run_id for row in storage.find()] == [run_id]
        with pytest.raises(StorageError, match="read-only"):
            storage.create(new_run("order::2", unique_key=None))
    finally:
        storage.close()


def _check_read_only_as_nobody(path, run_id, results):
    """In a child process: drops root (which may write any file), then checks."""
    try:
        os.setgid(65534)
        os.setuid(65534)
        _check_read_only(path, run_id)
        results.put("ok")
    except BaseException as error:
        results.put(repr(error))


def test_sqlite_write_to_a_read_only_file_fails_and_keeps_the_data(tmp_path, spawn):
    # A directory anyone may write (SQLite makes its -wal and -shm files
    # beside the database), holding a database file no one may write.
    home = Path(tempfile.mkdtemp(prefix="hephaestus-ro-"))
    home.chmod(0o777)
    path = home / "h.db"
    try:
        storage = open_sqlite(path)
        run_id = storage.create(new_run())
        storage.close()
        path.chmod(0o444)
        if os.geteuid() == 0:
            results = spawn.Queue()
            child = spawn.Process(target=_check_read_only_as_nobody, args=(path, run_id, results))
            child.start()
            outcome = results.get(timeout=60)
            child.join(timeout=60)
            assert outcome == "ok"
        else:
            _check_read_only(path, run_id)
        path.chmod(0o644)
        storage = open_sqlite(path)
        try:
            assert [row.run_id for row in storage.find()] == [run_id]
        finally:
            storage.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def write_locked(path):
    """Another connection holds the database's write lock."""
    with raw(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")


def test_sqlite_write_fails_when_locked_past_the_busy_timeout(tmp_path):
    path = tmp_path / "h.db"
    storage = open_sqlite(path, busy_timeout=0.05)
    try:
        run_id = storage.create(new_run())
        with write_locked(path):
            with pytest.raises(StorageError, match="locked"):
                storage.commit([change(run_id, 0, b"r1")])
            assert storage.load(run_id).row.seq == 0
        assert storage.commit([change(run_id, 0, b"r1")]) == [None]
        assert storage.load(run_id).records == [b"r1"]
    finally:
        storage.close()


def _fill_the_disk(path, results):
    """In a child process: a write past the file size limit fails, the next
    small one works."""
    import resource
    import signal

    storage = open_sqlite(path)
    try:
        run_id = storage.newest("order::1").run_id
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
        try:
            storage.commit([change(run_id, 1, b"x" * (4 << 20))])
            results.put("the big write committed")
        except StorageError as error:
            results.put(str(error))
        results.put(storage.commit([change(run_id, 1, b"small")]))
    except BaseException as error:
        results.put(repr(error))
    finally:
        storage.close()


@pytest.fixture
def spawn(monkeypatch):
    """A 'spawn' multiprocessing context whose children can import this module
    (pickled workers are found by module name; under pytest's importlib mode
    that name is relative to the directory above ``tests``)."""
    root = Path(__file__).parents[__name__.count(".")]
    monkeypatch.syspath_prepend(str(root))
    return multiprocessing.get_context("spawn")


@pytest.mark.skipif(os.name != "posix", reason="needs RLIMIT_FSIZE")
def test_sqlite_write_past_a_full_disk_fails_and_keeps_the_data(tmp_path, spawn):
    path = tmp_path / "h.db"
    storage = open_sqlite(path)
    run_id = storage.create(new_run())
    storage.commit([change(run_id, 0, b"r1")])
    storage.close()
    results = spawn.Queue()
    child = spawn.Process(target=_fill_the_disk, args=(path, results))
    child.start()
    big, small = results.get(timeout=60), results.get(timeout=60)
    child.join(timeout=60)
    assert "disk is full" in big or "I/O error" in big
    assert small == [None]
    storage = open_sqlite(path)
    try:
        assert storage.load(run_id).records == [b"r1", b"small"]
    finally:
        storage.close()


# -- SQLite: one writer, group commit, several processes ----------------------


def wait_until(condition):
    """Waits for ``condition()``; a hang guard, not a speed assertion."""
    deadline = time.monotonic() + 30.0
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def submitted(storage):
    return storage._writer.submitted()


def test_sqlite_group_commit_writes_concurrent_commits_in_few_transactions(tmp_path):
    path = tmp_path / "h.db"
    storage = open_sqlite(path)
    try:
        run_ids = create_many(storage, 16)
        before, queued = storage.transactions, submitted(storage)
        # The writer's first transaction waits for the lock while the other
        # commits queue up behind it.
        with write_locked(path):
            join = start_threads(16, lambda i: storage.commit([change(run_ids[i], 0, b"r%d" % i)]))
            wait_until(lambda: submitted(storage) == queued + 16)
        results = join()
        assert results == [[None]] * 16
        assert [storage.load(r).records for r in run_ids] == [[b"r%d" % i] for i in range(16)]
        assert storage.transactions - before <= 2
    finally:
        storage.close()


def test_sqlite_a_failing_request_rolls_back_alone_in_its_group(tmp_path):
    path = tmp_path / "h.db"
    storage = open_sqlite(path)
    try:
        run_ids = create_many(storage, 4)
        queued = submitted(storage)

        def request(i):
            if i % 2:
                return storage.commit([change(run_ids[i // 2], 0, b"r")])
            return storage.create(new_run("order::x", unique_key="order::x", at=float(i)))

        with write_locked(path):
            join = start_threads(8, request)
            wait_until(lambda: submitted(storage) == queued + 8)
        results = join()
        assert results.count([None]) == 4
        created = [r for r in results if isinstance(r, int)]
        assert len(created) == 1
        assert sum(isinstance(r, AlreadyRunningError) for r in results) == 3
        assert storage.find(id="order::x")[0].run_id == created[0]
    finally:
        storage.close()


def test_sqlite_storages_on_one_file_in_one_process_share_one_writer(tmp_path):
    (tmp_path / "sub").mkdir()
    first = open_sqlite(tmp_path / "h.db")
    second = open_sqlite(tmp_path / "sub" / ".." / "h.db")
    try:
        before = second.transactions
        run_id = first.create(new_run())
        assert second.transactions == before + 1
        assert second.load(run_id).row.id == "order::1"
        first.close()
        assert second.commit([change(run_id, 0, b"r1")]) == [None]
        assert second.load(run_id).records == [b"r1"]
    finally:
        first.close()
        second.close()


class _SchemaMadeMeanwhile(sqlite3.Connection):
    """A connection after whose first read of ``user_version`` another
    connection creates the whole schema: the moment a racing process picks."""

    def execute(self, sql, *args):
        cursor = super().execute(sql, *args)
        if sql == "PRAGMA user_version" and not getattr(self, "raced", False):
            self.raced = True
            other = sqlite3.connect(self.path, isolation_level=None)
            try:
                sqlite_module._prepare(other, self.path, 5.0)
            finally:
                other.close()
        return cursor


def test_sqlite_schema_check_sees_one_state_while_another_process_makes_it(tmp_path):
    path = str(tmp_path / "h.db")
    with contextlib.closing(sqlite3.connect(path)) as empty:
        empty.execute("PRAGMA journal_mode = WAL")  # readers do not block the maker
    conn = sqlite3.connect(path, isolation_level=None, factory=_SchemaMadeMeanwhile)
    conn.path = path
    try:
        # Read before the other connection committed: an empty database, not
        # a foreign one; then preparing finds the schema made and keeps it.
        assert sqlite_module._schema_version(conn, path) == 0
        sqlite_module._prepare(conn, path, 5.0)
        assert sqlite_module._schema_version(conn, path) == sqlite_module.SCHEMA_VERSION
    finally:
        conn.close()


def test_sqlite_switch_to_wal_waits_for_a_writer_of_the_new_file(tmp_path):
    # While another connection holds the write lock of a new (rollback-mode)
    # file, SQLite answers the switch "locked" at once, without its busy
    # handler: processes racing to open one new file meet this.
    path = str(tmp_path / "h.db")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA user_version").fetchone()
        writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        writer.execute("BEGIN IMMEDIATE")
        ends = threading.Timer(0.2, writer.execute, ["ROLLBACK"])
        ends.start()
        try:
            sqlite_module._set_wal(conn, path, busy_timeout=30.0)
        finally:
            ends.join()
            writer.close()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _create_in_a_process(path, barrier, results):
    """In a child process: opens its own storage on ``path`` and races the
    others to create one unique run."""
    storage = SQLiteStorage(path)
    try:
        barrier.wait(timeout=60)
        storage.open()
        barrier.wait(timeout=60)
        try:
            results.put(("created", storage.create(new_run("order::1"))))
        except AlreadyRunningError as error:
            results.put(("already running", str(error)))
    except BaseException as error:
        results.put(("error", repr(error)))
    finally:
        storage.close()


def test_sqlite_racing_creates_from_processes_make_exactly_one_run(tmp_path, spawn):
    path = tmp_path / "h.db"
    barrier, results = spawn.Barrier(4), spawn.Queue()
    children = [
        spawn.Process(target=_create_in_a_process, args=(path, barrier, results)) for _ in range(4)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert sorted(kind for kind, _ in outcomes) == ["already running"] * 3 + ["created"]
    storage = open_sqlite(path)
    try:
        [row] = storage.find()
        assert ("created", row.run_id) in outcomes
    finally:
        storage.close()
