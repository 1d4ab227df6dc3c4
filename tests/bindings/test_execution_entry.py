"""`hephaestus.ExecutionEntry` (CONTRACT §4): one completed step in the
history."""

import copy
import datetime as dt
import pickle
import zoneinfo
from unittest import mock

import pytest
from hephaestus import ExecutionEntry
from samples import T0, Pay, ValidateOrder, running

UTC = dt.timezone.utc


def test_creates_an_entry_with_the_required_fields():
    now = dt.datetime.now(UTC)
    record = ExecutionEntry(ValidateOrder, "valid", now)
    assert record.step_ref is ValidateOrder
    assert record.event == "valid"
    assert record.timestamp == now
    assert record.context_updates is None


def test_creates_an_entry_with_context_updates():
    record = ExecutionEntry(ValidateOrder, "valid", T0, {"email_valid": True})
    assert record.context_updates == {"email_valid": True}


def test_accepts_keywords():
    record = ExecutionEntry(
        step_ref=ValidateOrder, event="valid", timestamp=T0, context_updates={"a": 1}
    )
    assert record == ExecutionEntry(ValidateOrder, "valid", T0, {"a": 1})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "valid", "timestamp": T0},
        {"step_ref": ValidateOrder, "timestamp": T0},
        {"step_ref": ValidateOrder, "event": "valid"},
        {},
    ],
    ids=["no step_ref", "no event", "no timestamp", "nothing"],
)
def test_missing_required_fields_raise_type_error(kwargs):
    with pytest.raises(TypeError):
        ExecutionEntry(**kwargs)


def test_unknown_keyword_raises_type_error():
    with pytest.raises(TypeError):
        ExecutionEntry(ValidateOrder, "valid", T0, colour="red")


@pytest.mark.parametrize("step_ref", ["ValidateOrder", ValidateOrder(), None, 1], ids=repr)
def test_step_ref_must_be_a_class(step_ref):
    with pytest.raises(TypeError, match="step_ref"):
        ExecutionEntry(step_ref, "valid", T0)


@pytest.mark.parametrize("event", [None, 1, b"valid"], ids=repr)
def test_event_must_be_a_str(event):
    with pytest.raises(TypeError):
        ExecutionEntry(ValidateOrder, event, T0)


def test_event_must_not_be_empty():
    with pytest.raises(ValueError, match="event"):
        ExecutionEntry(ValidateOrder, "", T0)


def test_naive_timestamp_raises_value_error():
    with pytest.raises(ValueError, match="timestamp"):
        ExecutionEntry(ValidateOrder, "valid", dt.datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "timestamp", [None, 0, 1.5, "2024-01-01T00:00:00Z", dt.date(2024, 1, 1)], ids=repr
)
def test_timestamp_that_is_not_a_datetime_raises_type_error(timestamp):
    with pytest.raises(TypeError, match="timestamp"):
        ExecutionEntry(ValidateOrder, "valid", timestamp)


def test_timestamp_outside_the_representable_range_raises_value_error():
    before_year_1 = dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    with pytest.raises(ValueError, match="timestamp"):
        ExecutionEntry(ValidateOrder, "valid", before_year_1)


@pytest.mark.parametrize(
    "timestamp",
    [
        T0,
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime.max.replace(tzinfo=UTC),
        dt.datetime(1970, 1, 1, tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=str,
)
def test_utc_timestamps_read_back_exactly(timestamp):
    back = ExecutionEntry(ValidateOrder, "valid", timestamp).timestamp
    assert back == timestamp
    assert back.replace(tzinfo=None) == timestamp.replace(tzinfo=None)
    assert back.tzinfo == UTC


@pytest.mark.parametrize(
    "tz",
    [
        dt.timezone(dt.timedelta(hours=-3), "BRT"),
        dt.timezone(dt.timedelta(hours=13, minutes=45)),
        dt.timezone(dt.timedelta(seconds=-30, microseconds=7)),
        zoneinfo.ZoneInfo("Asia/Kolkata"),
        zoneinfo.ZoneInfo("Europe/Berlin"),
    ],
    ids=str,
)
def test_aware_timestamps_are_read_back_as_the_same_instant_in_utc(tz):
    local = T0.astimezone(tz)
    back = ExecutionEntry(ValidateOrder, "valid", local).timestamp
    assert back == local
    assert back.tzinfo == UTC
    assert back.utcoffset() == dt.timedelta(0)
    assert back.replace(tzinfo=None) == local.astimezone(UTC).replace(tzinfo=None)


def test_context_updates_must_be_a_dict_or_none():
    for bad in ([1], "x", 1, {1: 1}):
        with pytest.raises(TypeError):
            ExecutionEntry(ValidateOrder, "valid", T0, bad)


def test_context_updates_are_copied_in_and_out():
    updates = {"a": [1]}
    record = ExecutionEntry(ValidateOrder, "valid", T0, updates)
    updates["a"].append(2)
    assert record.context_updates == {"a": [1]}
    assert record.context_updates is not record.context_updates
    record.context_updates["a"].append(3)
    assert record.context_updates == {"a": [1]}


@pytest.mark.parametrize(
    ("name", "value"),
    [("step_ref", Pay), ("event", "x"), ("timestamp", T0), ("context_updates", {})],
)
def test_is_immutable(name, value):
    record = ExecutionEntry(ValidateOrder, "valid", T0)
    with pytest.raises(AttributeError):
        setattr(record, name, value)
    with pytest.raises(AttributeError):
        delattr(record, name)


def test_new_attributes_cannot_be_added():
    record = ExecutionEntry(ValidateOrder, "valid", T0)
    with pytest.raises(AttributeError):
        record.extra = 1


# -- equality ----------------------------------------------------------------


def test_equality_is_by_value():
    a = ExecutionEntry(ValidateOrder, "valid", T0, {"n": 1, "l": [1, 2]})
    b = ExecutionEntry(ValidateOrder, "valid", T0, {"l": (1, 2), "n": 1.0})
    assert a == b
    assert (a != b) is False


def test_equal_instants_in_different_zones_are_equal():
    local = T0.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert ExecutionEntry(Pay, "paid", T0) == ExecutionEntry(Pay, "paid", local)


@pytest.mark.parametrize(
    "other",
    [
        ExecutionEntry(Pay, "valid", T0, {"n": 1}),
        ExecutionEntry(ValidateOrder, "invalid", T0, {"n": 1}),
        ExecutionEntry(ValidateOrder, "valid", T0 + dt.timedelta(microseconds=1), {"n": 1}),
        ExecutionEntry(ValidateOrder, "valid", T0, {"n": 2}),
        ExecutionEntry(ValidateOrder, "valid", T0),
        ExecutionEntry(ValidateOrder, "valid", T0, {}),
    ],
    ids=["step", "event", "timestamp", "updates", "no updates", "empty updates"],
)
def test_entries_that_differ_are_unequal(other):
    assert ExecutionEntry(ValidateOrder, "valid", T0, {"n": 1}) != other


def test_no_updates_and_empty_updates_differ():
    assert ExecutionEntry(Pay, "paid", T0) != ExecutionEntry(Pay, "paid", T0, {})


def test_equality_with_other_types_is_false():
    record = ExecutionEntry(Pay, "paid", T0)
    assert record != (Pay, "paid", T0, None)
    assert record != None  # noqa: E711


def test_equality_defers_to_the_other_operand_for_foreign_types():
    # `__eq__` should return NotImplemented for other types (see mock.ANY).
    record = ExecutionEntry(Pay, "paid", T0)
    assert record == mock.ANY
    assert [record] == [mock.ANY]


def test_history_entries_equal_hand_built_entries():
    inst = running().activate_step(Pay).complete_step(Pay, "paid", {"ok": 1}, timestamp=T0)
    assert inst.execution_history == [ExecutionEntry(Pay, "paid", T0, {"ok": 1})]


# -- repr and pickling -------------------------------------------------------


def test_repr_names_the_step_event_and_time():
    text = repr(ExecutionEntry(ValidateOrder, "valid", T0, {"ok": True}))
    assert text.startswith("ExecutionEntry(")
    assert "ValidateOrder" in text
    assert "valid" in text
    assert "2024-05-17" in text
    assert "{'ok': True}" in text


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("updates", [None, {}, {"a": [1, b"x"], "n": float("nan")}], ids=repr)
def test_pickle_round_trip(protocol, updates):
    record = ExecutionEntry(ValidateOrder, "valid", T0, updates)
    loaded = pickle.loads(pickle.dumps(record, protocol=protocol))
    assert loaded == record
    assert loaded.step_ref is ValidateOrder
    assert (loaded.context_updates is None) == (updates is None)


def test_copy_and_deepcopy():
    record = ExecutionEntry(ValidateOrder, "valid", T0, {"a": 1})
    assert copy.copy(record) == record
    assert copy.deepcopy(record) == record
