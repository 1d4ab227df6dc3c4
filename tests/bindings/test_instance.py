"""`hephaestus.Instance` (CONTRACT §5): construction, raw updates, step-set
bookkeeping, predicates, equality, repr and sharing between threads."""

import collections
import datetime as dt
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
from hephaestus import Context, ExecutionEntry, Instance, InvalidTransitionError, Status
from samples import (
    T0,
    ChargeCard,
    HTTPClient,
    Keyed,
    OrderFlow,
    Pay,
    ProcessPayment,
    RefundFlow,
    RejectOrder,
    ReserveStock,
    Ship,
    ValidateOrder,
    entry,
    new_instance,
    rich_instance,
    running,
)

UTC = dt.timezone.utc
UUID_ID = "blueprintid::550e8400-e29b-41d4-a716-446655440000"


# -- Instance.new ------------------------------------------------------------


def test_new_creates_a_pending_instance_with_defaults():
    inst = Instance.new(OrderFlow, 1, {"order_id": 123}, "orderid::abc123")
    assert inst.id == "orderid::abc123"
    assert inst.workflow is OrderFlow
    assert inst.workflow_version == 1
    assert inst.status is Status.PENDING
    assert inst.current_step is None
    assert inst.context == Context.new({"order_id": 123})
    assert inst.context.initial == {"order_id": 123}
    assert inst.context.steps == {}
    assert inst.step_configs == {}
    assert inst.active_steps == frozenset()
    assert inst.completed_steps == frozenset()
    assert inst.waiting_steps == frozenset()
    assert inst.skipped_steps == frozenset()
    assert inst.runtime_metadata == {}
    assert inst.telemetry_metadata == {}
    assert inst.telemetry_start_time is None
    assert inst.execution_history == []
    assert inst.error is None


def test_new_field_types():
    inst = new_instance()
    assert type(inst.id) is str
    assert type(inst.workflow_version) is int
    assert type(inst.active_steps) is frozenset
    assert type(inst.completed_steps) is frozenset
    assert type(inst.waiting_steps) is frozenset
    assert type(inst.skipped_steps) is frozenset
    assert type(inst.step_configs) is dict
    assert type(inst.runtime_metadata) is dict
    assert type(inst.telemetry_metadata) is dict
    assert type(inst.execution_history) is list
    assert isinstance(inst.context, Context)


@pytest.mark.parametrize("id", [UUID_ID, "orderid::abc123", "x", " spaced id ", "ünï::☃"])
def test_new_keeps_the_exact_id(id):
    assert Instance.new(OrderFlow, 1, {}, id).id == id


@pytest.mark.parametrize("version", [1, 2, 3, 2**31])
def test_new_sets_the_workflow_version(version):
    assert Instance.new(OrderFlow, version, {}, "i").workflow_version == version


def test_new_with_empty_context():
    inst = Instance.new(OrderFlow, 1, {}, "test::init")
    assert inst.context.initial == {}
    assert inst.context.steps == {}


def test_new_accepts_arguments_by_keyword():
    inst = Instance.new(workflow=OrderFlow, version=2, context={"a": 1}, id="k")
    assert (inst.workflow, inst.workflow_version, inst.context.initial, inst.id) == (
        OrderFlow,
        2,
        {"a": 1},
        "k",
    )


@pytest.mark.parametrize("workflow", ["NotAModule", OrderFlow(), None, 1, [OrderFlow]], ids=repr)
def test_new_rejects_a_workflow_that_is_not_a_class(workflow):
    with pytest.raises(TypeError, match="workflow"):
        Instance.new(workflow, 1, {}, "i")


@pytest.mark.parametrize("version", [True, False, 1.0, "1", None, [1]], ids=repr)
def test_new_rejects_a_version_that_is_not_an_int(version):
    with pytest.raises(TypeError, match="version"):
        Instance.new(OrderFlow, version, {}, "i")


@pytest.mark.parametrize("version", [0, -1, -(2**70)], ids=repr)
def test_new_rejects_a_version_below_one(version):
    with pytest.raises(ValueError, match="version"):
        Instance.new(OrderFlow, version, {}, "i")


@pytest.mark.parametrize("context", [None, [], [("a", 1)], "a", 1, Context.new({})], ids=repr)
def test_new_rejects_a_context_that_is_not_a_mapping(context):
    with pytest.raises(TypeError, match="context"):
        Instance.new(OrderFlow, 1, context, "i")


def test_new_accepts_any_mapping_as_context():
    # CONTRACT §5: "`context` a `Mapping`".
    inst = Instance.new(OrderFlow, 1, types.MappingProxyType({"a": 1}), "i")
    assert inst.context.initial == {"a": 1}


@pytest.mark.parametrize("id", [123, None, b"id", ["id"]], ids=repr)
def test_new_rejects_an_id_that_is_not_a_str(id):
    with pytest.raises(TypeError, match="id"):
        Instance.new(OrderFlow, 1, {}, id)


def test_new_rejects_an_empty_id():
    with pytest.raises(ValueError, match="id"):
        Instance.new(OrderFlow, 1, {}, "")


def test_new_requires_all_four_arguments():
    with pytest.raises(TypeError):
        Instance.new(OrderFlow, 1, {})


def test_new_accepts_a_dict_subclass_as_context():
    context = collections.OrderedDict([("b", 1), ("a", 2)])
    inst = Instance.new(OrderFlow, 1, context, "i")
    assert inst.context.initial == {"b": 1, "a": 2}
    assert type(inst.context.initial) is dict


def test_telemetry_start_time_takes_a_monotonic_ns_reading():
    reading = time.monotonic_ns()
    inst = new_instance().replace(telemetry_start_time=reading)
    assert inst.telemetry_start_time == reading
    assert Instance.from_bytes(inst.to_bytes()).telemetry_start_time == reading


def test_new_copies_the_context():
    context = {"items": [1]}
    inst = Instance.new(OrderFlow, 1, context, "i")
    context["items"].append(2)
    context["x"] = 1
    assert inst.context.initial == {"items": [1]}


# -- Instance(**fields) -----------------------------------------------------


def test_constructor_defaults_match_new():
    inst = Instance(id="test-id", workflow=OrderFlow)
    assert inst.workflow_version == 1
    assert inst.status is Status.PENDING
    assert inst == Instance.new(OrderFlow, 1, {}, "test-id")


def test_constructor_sets_every_field():
    history = [entry(ValidateOrder, "valid", T0, {"ok": True})]
    inst = Instance(
        id="i",
        workflow=RefundFlow,
        workflow_version=4,
        current_step=Ship,
        status=Status.WAITING,
        context=Context({"a": 1}, steps={"validate_order": {"ok": True}}),
        step_configs={Ship: {"timeout": 5}, ReserveStock: [1]},
        active_steps=[Ship],
        completed_steps={ValidateOrder},
        waiting_steps=(Ship,),
        skipped_steps=frozenset({RejectOrder}),
        runtime_metadata={"m": 1},
        telemetry_metadata={"t": "x"},
        telemetry_start_time=42,
        execution_history=history,
        error={"kind": "none"},
    )
    assert inst.id == "i"
    assert inst.workflow is RefundFlow
    assert inst.workflow_version == 4
    assert inst.current_step is Ship
    assert inst.status is Status.WAITING
    assert inst.context.initial == {"a": 1}
    assert inst.context.steps == {"validate_order": {"ok": True}}
    assert inst.step_configs == {Ship: {"timeout": 5}, ReserveStock: [1]}
    assert inst.active_steps == {Ship}
    assert inst.completed_steps == {ValidateOrder}
    assert inst.waiting_steps == {Ship}
    assert inst.skipped_steps == {RejectOrder}
    assert inst.runtime_metadata == {"m": 1}
    assert inst.telemetry_metadata == {"t": "x"}
    assert inst.telemetry_start_time == 42
    assert inst.execution_history == history
    assert inst.error == {"kind": "none"}


@pytest.mark.parametrize("missing", ["id", "workflow"])
def test_constructor_requires_id_and_workflow(missing):
    fields = {"id": "i", "workflow": OrderFlow}
    del fields[missing]
    with pytest.raises(TypeError, match=missing):
        Instance(**fields)


def test_constructor_with_no_arguments_raises_type_error():
    with pytest.raises(TypeError):
        Instance()


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        Instance("i", OrderFlow)


def test_constructor_rejects_an_unknown_field():
    with pytest.raises(TypeError, match="colour"):
        Instance(id="i", workflow=OrderFlow, colour="red")


def test_constructor_accepts_a_context_or_a_dict():
    from_context = Instance(id="i", workflow=OrderFlow, context=Context.new({"a": 1}))
    from_dict = Instance(id="i", workflow=OrderFlow, context={"a": 1})
    assert from_context == from_dict
    assert from_dict.context.initial == {"a": 1}


@pytest.mark.parametrize("context", [[("a", 1)], "a", 1], ids=repr)
def test_constructor_rejects_other_contexts(context):
    with pytest.raises(TypeError, match="context"):
        Instance(id="i", workflow=OrderFlow, context=context)


@pytest.mark.parametrize(
    "make_steps",
    [
        lambda: [Pay, Ship],
        lambda: (Pay, Ship),
        lambda: {Pay, Ship},
        lambda: frozenset({Pay, Ship}),
        lambda: iter([Pay, Ship]),
        lambda: (s for s in (Pay, Ship)),
        lambda: [Pay, Ship, Pay],
        lambda: {Pay: 1, Ship: 2}.keys(),
    ],
    ids=["list", "tuple", "set", "frozenset", "iterator", "generator", "duplicates", "keys"],
)
@pytest.mark.parametrize("field", ["active_steps", "completed_steps", "skipped_steps"])
def test_step_sets_accept_any_iterable_of_classes(field, make_steps):
    inst = Instance(id="i", workflow=OrderFlow, status=Status.RUNNING, **{field: make_steps()})
    assert getattr(inst, field) == frozenset({Pay, Ship})


@pytest.mark.parametrize("value", ["Pay", {Pay: 1}, Pay, 1, None, [Pay, "Ship"], [Pay()]])
@pytest.mark.parametrize(
    "field", ["active_steps", "completed_steps", "skipped_steps", "waiting_steps"]
)
def test_step_sets_reject_non_class_items_and_str_or_dict(field, value):
    with pytest.raises(TypeError, match=field):
        Instance(id="i", workflow=OrderFlow, **{field: value})


@pytest.mark.parametrize("status", list(Status))
def test_status_accepts_members_and_their_str_values(status):
    # A WAITING instance needs a waiting step; a terminal one, none active.
    extra = {"active_steps": [Pay], "waiting_steps": [Pay]} if status is Status.WAITING else {}
    by_member = Instance(id="i", workflow=OrderFlow, status=status, **extra)
    by_value = Instance(id="i", workflow=OrderFlow, status=status.value, **extra)
    assert by_member.status is status
    assert by_value.status is status
    assert by_member == by_value


@pytest.mark.parametrize("status", ["RUNNING", "Running", "sleeping", "", "cancelled"])
def test_status_rejects_an_unknown_str(status):
    with pytest.raises(ValueError, match=r"status|sleeping|RUNNING|Running|cancelled"):
        Instance(id="i", workflow=OrderFlow, status=status)


@pytest.mark.parametrize("status", [1, None, b"running", ["running"]], ids=repr)
def test_status_rejects_other_types(status):
    with pytest.raises(TypeError, match="status"):
        Instance(id="i", workflow=OrderFlow, status=status)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("id", "", ValueError),
        ("id", 1, TypeError),
        ("workflow", "OrderFlow", TypeError),
        ("workflow_version", 0, ValueError),
        ("workflow_version", True, TypeError),
        ("workflow_version", 1.5, TypeError),
        ("current_step", "Pay", TypeError),
        ("step_configs", [(Pay, 1)], TypeError),
        ("step_configs", {"Pay": 1}, TypeError),
        ("runtime_metadata", [("a", 1)], TypeError),
        ("runtime_metadata", None, TypeError),
        ("telemetry_metadata", None, TypeError),
        ("telemetry_metadata", {1: 2}, TypeError),
        ("telemetry_start_time", "0", TypeError),
        ("telemetry_start_time", True, TypeError),
        ("telemetry_start_time", 1.5, TypeError),
        ("telemetry_start_time", 2**64, OverflowError),
        ("execution_history", 1, TypeError),
        ("execution_history", ["entry"], TypeError),
        ("execution_history", "abc", TypeError),
        ("error", "boom", TypeError),
        ("error", ["boom"], TypeError),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_constructor_and_replace_validate_each_field(field, value, error):
    with pytest.raises(error):
        Instance(**{"id": "i", "workflow": OrderFlow, field: value})
    with pytest.raises(error):
        new_instance().replace(**{field: value})


def test_optional_fields_accept_none():
    inst = rich_instance().replace(current_step=None, error=None, telemetry_start_time=None)
    assert inst.current_step is None
    assert inst.error is None
    assert inst.telemetry_start_time is None


# -- replace -----------------------------------------------------------------


def test_replace_returns_a_new_instance_and_leaves_the_old_one():
    old = new_instance({"a": 1})
    new = old.replace(id="other", status=Status.RUNNING, runtime_metadata={"m": 1})
    assert (new.id, new.status, new.runtime_metadata) == ("other", Status.RUNNING, {"m": 1})
    assert (old.id, old.status, old.runtime_metadata) == ("orderid::abc", Status.PENDING, {})
    assert new is not old


def test_replace_without_changes_gives_an_equal_instance():
    inst = rich_instance()
    assert inst.replace() == inst


def test_replace_keeps_the_fields_it_is_not_given():
    inst = rich_instance()
    changed = inst.replace(telemetry_metadata={"x": 1})
    for name in (
        "id",
        "workflow",
        "workflow_version",
        "current_step",
        "status",
        "context",
        "step_configs",
        "active_steps",
        "completed_steps",
        "waiting_steps",
        "skipped_steps",
        "runtime_metadata",
        "telemetry_start_time",
        "execution_history",
        "error",
    ):
        assert getattr(changed, name) == getattr(inst, name), name


def test_replace_rejects_an_unknown_field():
    with pytest.raises(TypeError, match="nope"):
        new_instance().replace(nope=1)


def test_replace_rejects_positional_arguments():
    with pytest.raises(TypeError):
        new_instance().replace({"id": "x"})


@pytest.mark.parametrize(
    "changes",
    [
        {"active_steps": [Pay], "completed_steps": [Pay]},
        {"active_steps": [Pay], "skipped_steps": [Pay]},
        {"completed_steps": [Pay], "skipped_steps": [Pay]},
    ],
    ids=["active+completed", "active+skipped", "completed+skipped"],
)
def test_replace_rejects_a_step_in_two_states(changes):
    with pytest.raises(ValueError, match="Pay"):
        running().replace(**changes)


def test_replace_rejects_completing_a_step_that_is_still_active():
    inst = running().activate_step(Pay)
    with pytest.raises(ValueError, match="Pay"):
        inst.replace(completed_steps=[Pay])


def test_replace_rejects_a_waiting_step_that_is_not_active():
    with pytest.raises(ValueError, match="Pay"):
        running().replace(waiting_steps=[Pay])
    with pytest.raises(ValueError, match="Pay"):
        running().replace(waiting_steps=[Pay], completed_steps=[Pay])


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED])
def test_replace_rejects_a_terminal_status_with_active_steps(status):
    inst = running().activate_step(Pay)
    with pytest.raises(ValueError, match="active"):
        inst.replace(status=status)
    assert inst.replace(status=status, active_steps=[]).status is status


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING])
def test_replace_rejects_a_non_waiting_status_when_every_active_step_waits(status):
    inst = running().activate_step(Pay).wait_step(Pay)
    assert inst.status is Status.WAITING
    with pytest.raises(ValueError, match="status"):
        inst.replace(status=status)


def test_replace_rejects_waiting_without_waiting_steps():
    with pytest.raises(ValueError, match="status"):
        running().replace(status=Status.WAITING)
    with pytest.raises(ValueError, match="status"):
        running().activate_step(Pay).replace(status=Status.WAITING)
    partly = running().activate_step(Pay).activate_step(Ship).wait_step(Ship)
    assert partly.status is Status.RUNNING
    with pytest.raises(ValueError, match="status"):
        partly.replace(status=Status.WAITING)


def test_replace_waiting_steps_and_status_together():
    inst = running().activate_step(Pay)
    waiting = inst.replace(waiting_steps=[Pay], status=Status.WAITING)
    assert waiting.status is Status.WAITING
    assert waiting.waiting_steps == {Pay}
    assert waiting.is_waiting(Pay)
    with pytest.raises(ValueError, match="status"):
        inst.replace(waiting_steps=[Pay])  # status would stay RUNNING


def test_replace_checks_invariants_after_all_changes():
    # Each change alone is invalid; together they are fine.
    inst = running().activate_step(Pay).wait_step(Pay)
    moved = inst.replace(active_steps=[], waiting_steps=[], status=Status.RUNNING)
    assert moved.active_count == 0
    assert moved.status is Status.RUNNING


def test_replace_step_configs_and_current_step():
    inst = new_instance().replace(step_configs={Pay: {"a": 1}}, current_step=Pay)
    assert inst.step_configs == {Pay: {"a": 1}}
    assert inst.current_step is Pay
    assert inst.replace(step_configs={}).step_configs == {}


def test_replace_context_with_a_dict_or_a_context():
    inst = new_instance({"a": 1})
    ctx = Context({"b": 2}, steps={"pay": {"ok": 1}})
    assert inst.replace(context=ctx).context == ctx
    assert inst.replace(context={"c": 3}).context == Context.new({"c": 3})


def test_telemetry_metadata_can_be_set_after_creation():
    inst = new_instance({"order_id": 1})
    updated = inst.replace(telemetry_metadata={"request_id": "abc-123"})
    assert updated.telemetry_metadata == {"request_id": "abc-123"}
    assert inst.telemetry_metadata == {}


def test_step_configs_can_store_and_clear_configs_per_step():
    inst = new_instance()
    with_config = inst.replace(step_configs={Pay: {"timeout": 5000}, Ship: {"retries": 3}})
    assert with_config.step_configs == {Pay: {"timeout": 5000}, Ship: {"retries": 3}}
    configs = with_config.step_configs
    del configs[Pay]
    cleared = with_config.replace(step_configs=configs)
    assert cleared.step_configs == {Ship: {"retries": 3}}


def test_step_sets_store_classes():
    inst = new_instance()
    assert ValidateOrder in inst.replace(active_steps=[ValidateOrder]).active_steps
    assert ValidateOrder in inst.replace(completed_steps=[ValidateOrder]).completed_steps
    assert inst.replace(current_step=ValidateOrder).current_step is ValidateOrder


# -- activate_step -----------------------------------------------------------


def test_activate_step_adds_the_step():
    inst = running().activate_step(Pay)
    assert inst.active_steps == {Pay}
    assert inst.is_active(Pay)
    assert inst.step_configs == {}


def test_activate_step_is_idempotent():
    once = running().activate_step(Pay)
    assert once.activate_step(Pay) == once
    assert once.activate_step(Pay).active_steps == {Pay}


def test_activate_step_stores_the_config():
    inst = running().activate_step(Pay, {"timeout": 5})
    assert inst.step_configs == {Pay: {"timeout": 5}}
    assert inst.activate_step(Ship, config=[1, 2]).step_configs == {
        Pay: {"timeout": 5},
        Ship: [1, 2],
    }


@pytest.mark.parametrize("config", [0, False, "", [], {}, 1.5, "cfg"], ids=repr)
def test_activate_step_stores_falsy_and_scalar_configs(config):
    inst = running().activate_step(Pay, config)
    assert Pay in inst.step_configs
    assert inst.step_configs[Pay] == config
    assert type(inst.step_configs[Pay]) is type(config)


def test_activate_step_with_none_config_stores_nothing():
    assert running().activate_step(Pay, None).step_configs == {}


def test_activate_step_again_replaces_the_config_or_keeps_it_when_none():
    inst = running().activate_step(Pay, {"v": 1})
    assert inst.activate_step(Pay, {"v": 2}).step_configs == {Pay: {"v": 2}}
    assert inst.activate_step(Pay).step_configs == {Pay: {"v": 1}}


def test_activate_step_leaves_the_old_instance_unchanged():
    old = running()
    new = old.activate_step(Pay, {"a": 1})
    assert old.active_steps == frozenset()
    assert old.step_configs == {}
    assert new != old


def test_activate_step_keeps_pending_status():
    inst = new_instance().activate_step(Pay)
    assert inst.status is Status.PENDING
    assert inst.active_steps == {Pay}


def test_activate_step_keeps_running_status():
    assert running().activate_step(Pay).status is Status.RUNNING


def test_activate_step_on_a_waiting_instance_makes_it_running():
    inst = running().activate_step(Pay).wait_step(Pay)
    assert inst.status is Status.WAITING
    assert inst.activate_step(Ship).status is Status.RUNNING


def test_activate_step_of_a_completed_step_raises():
    inst = running().activate_step(Pay).complete_step(Pay, "paid")
    with pytest.raises(InvalidTransitionError, match="Pay"):
        inst.activate_step(Pay)


def test_activate_step_of_a_skipped_step_raises():
    inst = running().skip_step(Pay)
    with pytest.raises(InvalidTransitionError, match="Pay"):
        inst.activate_step(Pay)


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED])
def test_activate_step_on_a_terminal_instance_raises(status):
    inst = running().replace(status=status)
    with pytest.raises(InvalidTransitionError, match=status.value):
        inst.activate_step(Pay)


@pytest.mark.parametrize("step", ["Pay", Pay(), None, 1], ids=repr)
def test_activate_step_rejects_a_step_that_is_not_a_class(step):
    with pytest.raises(TypeError):
        running().activate_step(step)


def test_activate_step_rejects_an_unsupported_config():
    with pytest.raises(TypeError, match="config"):
        running().activate_step(Pay, {1, 2})


# -- complete_step -----------------------------------------------------------


def test_complete_step_moves_the_step_and_records_everything():
    inst = running().activate_step(Pay, {"timeout": 5})
    done = inst.complete_step(Pay, "paid", {"amount": 10}, {"attempt": 1}, timestamp=T0)
    assert done.active_steps == frozenset()
    assert done.completed_steps == {Pay}
    assert done.is_completed(Pay)
    assert not done.is_active(Pay)
    assert done.context.steps == {"pay": {"amount": 10}}
    assert done.runtime_metadata == {"attempt": 1}
    assert done.step_configs == {}
    assert done.execution_history == [ExecutionEntry(Pay, "paid", T0, {"amount": 10})]
    assert done.history_length == 1


def test_complete_step_leaves_the_old_instance_unchanged():
    inst = running().activate_step(Pay, {"timeout": 5})
    before = inst.to_json()
    inst.complete_step(Pay, "paid", {"amount": 10}, {"attempt": 1})
    assert inst.to_json() == before
    assert inst.is_active(Pay)


def test_complete_step_without_updates_stores_an_empty_result_and_none_in_history():
    done = running().activate_step(Pay).complete_step(Pay, "paid", timestamp=T0)
    assert done.context.steps == {"pay": {}}
    [record] = done.execution_history
    assert record.context_updates is None
    assert record == ExecutionEntry(Pay, "paid", T0)


def test_complete_step_with_explicit_empty_updates_keeps_them_in_history():
    done = running().activate_step(Pay).complete_step(Pay, "paid", {}, timestamp=T0)
    assert done.context.steps == {"pay": {}}
    assert done.execution_history[0].context_updates == {}


def test_complete_step_with_none_updates_is_like_none_given():
    a = running().activate_step(Pay).complete_step(Pay, "paid", None, None, timestamp=T0)
    b = running().activate_step(Pay).complete_step(Pay, "paid", timestamp=T0)
    assert a == b


def test_complete_step_stores_results_under_the_step_key():
    inst = running().activate_step(Keyed).activate_step(HTTPClient).activate_step(ValidateOrder)
    inst = inst.complete_step(Keyed, "ok", {"k": 1})
    inst = inst.complete_step(HTTPClient, "ok", {"h": 2})
    inst = inst.complete_step(ValidateOrder, "valid", {"v": 3})
    assert inst.context.steps == {
        "validate": {"k": 1},
        "http_client": {"h": 2},
        "validate_order": {"v": 3},
    }


def test_complete_step_results_are_namespaced_and_initial_is_untouched():
    inst = running({"order_id": 123, "pay": "initial value"})
    inst = inst.activate_step(Pay).activate_step(Ship)
    inst = inst.complete_step(Pay, "paid", {"order_id": 999})
    inst = inst.complete_step(Ship, "shipped", {"tracking": "x"})
    assert inst.context.initial == {"order_id": 123, "pay": "initial value"}
    assert inst.context.steps == {"pay": {"order_id": 999}, "ship": {"tracking": "x"}}


def test_complete_step_overwrites_an_existing_result_under_the_same_key():
    inst = running().replace(context=Context({}, steps={"pay": {"old": True}}))
    done = inst.activate_step(Pay).complete_step(Pay, "paid", {"new": True})
    assert done.context.steps == {"pay": {"new": True}}


def test_complete_step_merges_metadata_later_keys_win():
    inst = running().replace(runtime_metadata={"a": 1, "b": 1})
    inst = inst.activate_step(Pay).activate_step(Ship)
    inst = inst.complete_step(Pay, "paid", metadata_updates={"b": 2, "c": 2})
    assert inst.runtime_metadata == {"a": 1, "b": 2, "c": 2}
    inst = inst.complete_step(Ship, "shipped", None, {"c": 3, "d": None})
    assert inst.runtime_metadata == {"a": 1, "b": 2, "c": 3, "d": None}


def test_complete_step_drops_only_that_steps_config():
    inst = running().activate_step(Pay, {"p": 1}).activate_step(Ship, {"s": 1})
    done = inst.complete_step(Pay, "paid")
    assert done.step_configs == {Ship: {"s": 1}}


def test_complete_step_appends_history_oldest_first():
    inst = running()
    times = [T0 + dt.timedelta(seconds=i) for i in range(3)]
    for step, event, when in zip(
        (Pay, Ship, ChargeCard), ("paid", "shipped", "charged"), times, strict=True
    ):
        inst = inst.activate_step(step).complete_step(step, event, timestamp=when)
    assert [(e.step_ref, e.event, e.timestamp) for e in inst.execution_history] == [
        (Pay, "paid", times[0]),
        (Ship, "shipped", times[1]),
        (ChargeCard, "charged", times[2]),
    ]
    assert inst.history_length == 3
    assert inst.completed_count == 3


def test_complete_step_defaults_the_timestamp_to_now_in_utc():
    before = dt.datetime.now(UTC)
    done = running().activate_step(Pay).complete_step(Pay, "paid")
    after = dt.datetime.now(UTC)
    stamp = done.execution_history[0].timestamp
    assert stamp.tzinfo == UTC
    assert stamp.utcoffset() == dt.timedelta(0)
    # Generous bounds: this checks "now", not timing.
    assert before - dt.timedelta(minutes=1) <= stamp <= after + dt.timedelta(minutes=1)


@pytest.mark.parametrize(
    "tz",
    [
        dt.timezone(dt.timedelta(hours=5, minutes=30)),
        dt.timezone(dt.timedelta(hours=-8), "PST"),
        __import__("zoneinfo").ZoneInfo("America/New_York"),
    ],
    ids=str,
)
def test_complete_step_stores_an_aware_timestamp_as_the_same_instant_in_utc(tz):
    local = T0.astimezone(tz)
    done = running().activate_step(Pay).complete_step(Pay, "paid", timestamp=local)
    stamp = done.execution_history[0].timestamp
    assert stamp == local
    assert stamp == T0
    assert stamp.tzinfo == UTC
    assert stamp.replace(tzinfo=None) == T0.replace(tzinfo=None)


def test_complete_step_keeps_microseconds():
    when = dt.datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)
    done = running().activate_step(Pay).complete_step(Pay, "paid", timestamp=when)
    assert done.execution_history[0].timestamp.microsecond == 999999


def test_complete_step_rejects_a_naive_timestamp():
    with pytest.raises(ValueError, match="timestamp"):
        running().activate_step(Pay).complete_step(Pay, "paid", timestamp=dt.datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "timestamp", [0, 1.5, "2024-01-01T00:00:00Z", dt.date(2024, 1, 1)], ids=repr
)
def test_complete_step_rejects_a_timestamp_that_is_not_a_datetime(timestamp):
    with pytest.raises(TypeError, match="timestamp"):
        running().activate_step(Pay).complete_step(Pay, "paid", timestamp=timestamp)


def test_complete_step_timestamp_is_keyword_only():
    with pytest.raises(TypeError):
        running().activate_step(Pay).complete_step(Pay, "paid", None, None, T0)


def test_complete_step_rejects_an_empty_event():
    with pytest.raises(ValueError, match="event"):
        running().activate_step(Pay).complete_step(Pay, "")


@pytest.mark.parametrize("event", [None, 1, b"paid"], ids=repr)
def test_complete_step_rejects_an_event_that_is_not_a_str(event):
    with pytest.raises(TypeError, match="event"):
        running().activate_step(Pay).complete_step(Pay, event)


def test_complete_step_accepts_a_str_subclass_event_as_str():
    done = running().activate_step(Pay).complete_step(Pay, Status.COMPLETED)
    event = done.execution_history[0].event
    assert event == "completed"
    assert type(event) is str


@pytest.mark.parametrize(
    ("field", "value"),
    [("context_updates", [1]), ("context_updates", "x"), ("metadata_updates", [("a", 1)])],
)
def test_complete_step_rejects_updates_that_are_not_dicts(field, value):
    with pytest.raises(TypeError, match=field):
        running().activate_step(Pay).complete_step(Pay, "paid", **{field: value})


def test_complete_step_of_a_step_never_activated_raises():
    with pytest.raises(InvalidTransitionError, match="Pay"):
        running().complete_step(Pay, "paid")


def test_complete_step_of_a_completed_step_raises():
    inst = running().activate_step(Pay).complete_step(Pay, "paid")
    with pytest.raises(InvalidTransitionError, match="Pay"):
        inst.complete_step(Pay, "paid")


def test_complete_step_of_a_skipped_step_raises():
    with pytest.raises(InvalidTransitionError, match="Pay"):
        running().skip_step(Pay).complete_step(Pay, "paid")


def test_complete_step_on_a_terminal_instance_raises():
    inst = running().replace(status=Status.FAILED)
    with pytest.raises(InvalidTransitionError):
        inst.complete_step(Pay, "paid")


def test_complete_step_keeps_pending_and_running_status():
    assert new_instance().activate_step(Pay).complete_step(Pay, "p").status is Status.PENDING
    assert running().activate_step(Pay).complete_step(Pay, "p").status is Status.RUNNING


def test_complete_step_of_a_waiting_step_removes_it_from_waiting():
    inst = running().activate_step(Pay).wait_step(Pay)
    done = inst.complete_step(Pay, "paid")
    assert done.waiting_steps == frozenset()
    assert done.active_steps == frozenset()
    assert done.completed_steps == {Pay}
    assert done.status is Status.RUNNING


def test_complete_step_of_the_running_branch_makes_the_instance_waiting():
    inst = running().activate_step(Pay).activate_step(Ship).wait_step(Ship)
    assert inst.status is Status.RUNNING
    done = inst.complete_step(Pay, "paid")
    assert done.status is Status.WAITING
    assert done.active_steps == done.waiting_steps == {Ship}


def test_complete_step_of_one_of_two_waiting_steps_stays_waiting():
    inst = running().activate_step(Pay).activate_step(Ship).wait_step(Pay).wait_step(Ship)
    assert inst.status is Status.WAITING
    done = inst.complete_step(Pay, "paid")
    assert done.status is Status.WAITING
    assert done.waiting_steps == {Ship}


# -- wait_step ---------------------------------------------------------------


def test_wait_step_marks_the_step_waiting_and_current():
    inst = running().activate_step(Pay).wait_step(Pay)
    assert inst.waiting_steps == {Pay}
    assert inst.active_steps == {Pay}
    assert inst.current_step is Pay
    assert inst.is_waiting(Pay)
    assert inst.is_active(Pay)
    assert inst.status is Status.WAITING


def test_wait_step_is_waiting_only_when_every_active_step_waits():
    inst = running().activate_step(Pay).activate_step(Ship)
    one = inst.wait_step(Pay)
    assert one.status is Status.RUNNING
    assert one.waiting_steps == {Pay}
    both = one.wait_step(Ship)
    assert both.status is Status.WAITING
    assert both.current_step is Ship


def test_wait_step_on_a_pending_instance_with_all_steps_waiting_is_waiting():
    assert new_instance().activate_step(Pay).wait_step(Pay).status is Status.WAITING


def test_wait_step_is_idempotent():
    once = running().activate_step(Pay).wait_step(Pay)
    assert once.wait_step(Pay) == once


def test_wait_step_leaves_the_old_instance_unchanged():
    old = running().activate_step(Pay)
    old.wait_step(Pay)
    assert old.waiting_steps == frozenset()
    assert old.status is Status.RUNNING
    assert old.current_step is None


def test_wait_step_of_a_step_never_activated_raises():
    with pytest.raises(InvalidTransitionError, match="Pay"):
        running().wait_step(Pay)


def test_wait_step_of_a_completed_step_raises():
    inst = running().activate_step(Pay).complete_step(Pay, "paid")
    with pytest.raises(InvalidTransitionError, match="Pay"):
        inst.wait_step(Pay)


def test_wait_step_of_a_skipped_step_raises():
    with pytest.raises(InvalidTransitionError, match="Pay"):
        running().skip_step(Pay).wait_step(Pay)


def test_wait_step_on_a_terminal_instance_raises():
    with pytest.raises(InvalidTransitionError):
        running().replace(status=Status.COMPLETED).wait_step(Pay)


# -- skip_step ---------------------------------------------------------------


def test_skip_step_records_the_step():
    inst = running().skip_step(RejectOrder)
    assert inst.skipped_steps == {RejectOrder}
    assert inst.is_skipped(RejectOrder)
    assert not inst.is_active(RejectOrder)
    assert inst.status is Status.RUNNING


def test_skip_step_is_idempotent():
    once = running().skip_step(RejectOrder)
    assert once.skip_step(RejectOrder) == once


def test_skip_step_of_an_active_step_raises():
    with pytest.raises(InvalidTransitionError, match="Pay"):
        running().activate_step(Pay).skip_step(Pay)


def test_skip_step_of_a_waiting_step_raises():
    with pytest.raises(InvalidTransitionError, match="Pay"):
        running().activate_step(Pay).wait_step(Pay).skip_step(Pay)


def test_skip_step_of_a_completed_step_raises():
    inst = running().activate_step(Pay).complete_step(Pay, "paid")
    with pytest.raises(InvalidTransitionError, match="Pay"):
        inst.skip_step(Pay)


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED])
def test_skip_step_on_a_terminal_instance_raises(status):
    with pytest.raises(InvalidTransitionError):
        running().replace(status=status).skip_step(Pay)


# -- predicates and counts ---------------------------------------------------


def test_predicates_and_counts():
    inst = (
        running()
        .activate_step(Pay)
        .activate_step(Ship)
        .activate_step(ChargeCard)
        .wait_step(Ship)
        .complete_step(ChargeCard, "charged")
        .skip_step(RejectOrder)
    )
    table = {
        Pay: (True, False, False, False),
        Ship: (True, True, False, False),
        ChargeCard: (False, False, True, False),
        RejectOrder: (False, False, False, True),
        ReserveStock: (False, False, False, False),
    }
    for step, expected in table.items():
        got = (
            inst.is_active(step),
            inst.is_waiting(step),
            inst.is_completed(step),
            inst.is_skipped(step),
        )
        assert got == expected, step.__name__
    assert inst.active_count == 2
    assert inst.waiting_count == 1
    assert inst.completed_count == 1
    assert inst.history_length == 1
    assert inst.is_terminal is False


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (Status.PENDING, False),
        (Status.RUNNING, False),
        (Status.COMPLETED, True),
        (Status.FAILED, True),
    ],
)
def test_is_terminal_follows_the_status(status, terminal):
    assert new_instance().replace(status=status).is_terminal is terminal


def test_is_terminal_when_waiting():
    assert running().activate_step(Pay).wait_step(Pay).is_terminal is False


def test_counts_and_flags_are_properties_and_predicates_are_methods():
    inst = new_instance()
    for name in ("is_terminal", "active_count", "waiting_count", "completed_count"):
        assert not callable(getattr(inst, name)), name
    assert inst.history_length == 0
    for name in ("is_active", "is_waiting", "is_completed", "is_skipped"):
        assert getattr(inst, name)(Pay) is False, name


@pytest.mark.parametrize("method", ["is_active", "is_waiting", "is_completed", "is_skipped"])
def test_predicates_reject_non_classes(method):
    with pytest.raises(TypeError):
        getattr(new_instance(), method)("Pay")


# -- equality, hashing, immutability, repr -----------------------------------


def test_equal_when_built_the_same_way():
    assert rich_instance() == rich_instance()
    assert (rich_instance() != rich_instance()) is False


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "other"},
        {"workflow": RefundFlow},
        {"workflow_version": 9},
        {"current_step": Pay},
        {"context": {"different": True}},
        {"step_configs": {}},
        {"step_configs": {ReserveStock: [1, 3]}},
        {"completed_steps": [ValidateOrder]},
        {"skipped_steps": []},
        {"runtime_metadata": {}},
        {"telemetry_metadata": {}},
        {"telemetry_start_time": None},
        {"telemetry_start_time": 1},
        {"execution_history": []},
        {"error": {"kind": "x"}},
        {"active_steps": [Ship, ReserveStock, ProcessPayment]},
        {"waiting_steps": [], "status": Status.RUNNING},
        {"waiting_steps": [Ship, ReserveStock], "status": Status.WAITING},
    ],
    ids=lambda c: ",".join(c),
)
def test_unequal_when_any_field_differs(changes):
    base = rich_instance()
    assert base.replace(**changes) != base
    assert (base.replace(**changes) == base) is False


def test_equality_with_other_types_is_false_not_an_error():
    inst = new_instance()
    assert inst != "orderid::abc"
    assert inst != None  # noqa: E711
    assert inst != inst.context
    assert (inst == object()) is False


def test_equality_defers_to_the_other_operand_for_foreign_types():
    # `__eq__` should return NotImplemented for non-Instance operands, so that
    # helpers like mock.ANY compare equal from either side.
    inst = new_instance()
    assert inst == mock.ANY
    assert [inst] == [mock.ANY]


def test_instances_do_not_support_ordering():
    with pytest.raises(TypeError):
        _ = new_instance() < new_instance()


def test_fields_are_read_only():
    inst = rich_instance()
    for name in (
        "id",
        "workflow",
        "workflow_version",
        "current_step",
        "status",
        "context",
        "step_configs",
        "active_steps",
        "completed_steps",
        "waiting_steps",
        "skipped_steps",
        "runtime_metadata",
        "telemetry_metadata",
        "telemetry_start_time",
        "execution_history",
        "error",
    ):
        with pytest.raises(AttributeError):
            setattr(inst, name, None)
        with pytest.raises(AttributeError):
            delattr(inst, name)
    with pytest.raises(AttributeError):
        inst.new_attribute = 1


def test_repr_is_short_and_readable():
    inst = running(workflow=OrderFlow, id="orderid::abc")
    inst = inst.activate_step(ValidateOrder).complete_step(ValidateOrder, "valid")
    inst = inst.activate_step(ChargeCard).complete_step(ChargeCard, "charged")
    inst = inst.activate_step(Pay)
    assert repr(inst) == "<Instance 'orderid::abc' OrderFlow v1 running active=[Pay] completed=2>"


def test_repr_of_a_new_instance():
    inst = Instance.new(RefundFlow, 3, {"big": "x" * 10_000}, "refund::1")
    assert repr(inst) == "<Instance 'refund::1' RefundFlow v3 pending active=[] completed=0>"


def test_repr_lists_several_active_steps():
    inst = running().activate_step(Ship).activate_step(Pay).wait_step(Ship)
    text = repr(inst)
    assert text.startswith("<Instance 'orderid::abc' OrderFlow v1 running active=[")
    assert "Pay" in text
    assert "Ship" in text
    assert text.endswith(" completed=0>")
    assert len(text) < 120


def test_str_is_short():
    assert len(str(rich_instance())) < 200


# -- sharing between threads -------------------------------------------------


def test_one_instance_shared_between_threads_stays_consistent():
    base = rich_instance()
    base_json = base.to_json()
    workers = 8
    rounds = 60
    barrier = threading.Barrier(workers)
    steps = (Pay, ChargeCard, ProcessPayment, RejectOrder)

    def work(n):
        barrier.wait()
        results = []
        for i in range(rounds):
            step = steps[(n + i) % len(steps)]
            if step is ChargeCard:  # already completed in rich_instance
                with pytest.raises(InvalidTransitionError):
                    base.activate_step(step)
                continue
            if step is RejectOrder:  # skipped in rich_instance
                assert base.skip_step(step) == base
                continue
            key = "pay" if step is Pay else "process_payment"
            inst = base.activate_step(step, {"n": n, "i": i})
            inst = inst.complete_step(step, "done", {"n": n, "i": i}, {f"w{n}": i}, timestamp=T0)
            assert inst.context.steps[key] == {"n": n, "i": i}
            assert inst.runtime_metadata[f"w{n}"] == i
            assert inst.completed_count == base.completed_count + 1
            assert inst.history_length == base.history_length + 1
            assert base.is_active(ReserveStock)
            assert base.to_json() == base_json
            loaded = Instance.from_json(inst.to_json())
            assert loaded == inst
            assert Instance.from_bytes(inst.to_bytes()) == inst
            results.append(inst)
        return results

    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(work, range(workers)))
    assert base.to_json() == base_json
    assert all(outcomes)
    assert base == rich_instance()


def test_threads_registering_new_classes_concurrently_keep_identities():
    workers = 8
    barrier = threading.Barrier(workers)

    def work(n):
        barrier.wait()
        made = [type(f"Thread{n}Step{i}", (), {}) for i in range(20)]
        inst = running()
        for cls in made:
            inst = inst.activate_step(cls, n)
        assert inst.active_steps == frozenset(made)
        assert all(inst.step_configs[cls] == n for cls in made)
        return made, inst

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, range(workers)))
    for made, inst in results:
        assert inst.active_steps == frozenset(made)
