"""Values crossing the boundary (CONTRACT §1): what is accepted, what comes
back, what is refused and how the error names the offending value."""

import collections
import datetime as dt
import decimal
import enum
import fractions
import math
import os
import uuid
import zoneinfo

import pytest
from hephaestus import Context, ExecutionEntry, Instance
from hephaestus._core import MAX_DEPTH
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import T0, Pay, ValidateOrder, new_instance, running

UTC = dt.timezone.utc
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


# -- helpers -----------------------------------------------------------------


def expected_back(value):
    """What `value` must read back as: base types for subclasses, lists for
    tuples (as the json module does)."""
    if value is None or type(value) in (bool, bytes, dt.datetime):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {str.__str__(k): expected_back(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [expected_back(v) for v in value]
    raise AssertionError(f"not a value: {value!r}")


def assert_same_datetime(expected, actual):
    assert type(actual) is dt.datetime
    assert actual.replace(tzinfo=None) == expected.replace(tzinfo=None)
    assert actual.fold == expected.fold
    if expected.tzinfo is None:
        assert actual.tzinfo is None
        return
    assert type(actual.tzinfo) is type(expected.tzinfo)
    assert actual.utcoffset() == expected.utcoffset()
    assert actual.tzname() == expected.tzname()
    if isinstance(expected.tzinfo, zoneinfo.ZoneInfo):
        assert actual.tzinfo.key == expected.tzinfo.key


def assert_same(expected, actual, path="value", *, ordered=True):
    """`actual` is `expected` exactly: same types all the way down, NaN for
    NaN, the sign of zero, datetimes field by field with their zones."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} is not {type(expected)}"
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), path
        else:
            assert actual == expected, path
            assert math.copysign(1, actual) == math.copysign(1, expected), path
    elif isinstance(expected, dt.datetime):
        assert_same_datetime(expected, actual)
    elif isinstance(expected, dict):
        if ordered:
            assert list(actual) == list(expected), f"{path}: keys (in order)"
        else:
            assert sorted(actual) == sorted(expected), f"{path}: keys"
        for key in expected:
            assert_same(expected[key], actual[key], f"{path}[{key!r}]")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{path}[{i}]")
    else:
        assert actual == expected, path


def py_path(root, *keys):
    """A path as the contract writes it: `context['order']['items'][2]`."""
    return root + "".join(f"[{k!r}]" for k in keys)


def unquoted(text):
    """`text` without quote characters: for checks of which path a message
    names that do not depend on the quoting style (tested on its own)."""
    return text.replace("'", "").replace('"', "")


def names_path(message, root, *keys):
    return unquoted(py_path(root, *keys)) in unquoted(message)


# -- every place a value can enter -------------------------------------------
# Each sink stores `{"v": value}` (or `value` under "v") and reads it back.


def _complete(**kwargs):
    return running().activate_step(Pay).complete_step(Pay, "paid", timestamp=T0, **kwargs)


SINKS = {
    "Instance.new context": (
        "context",
        lambda d: new_instance(d).context.initial,
    ),
    "Instance(context=dict)": (
        None,
        lambda d: Instance(id="i", workflow=Pay, context=d).context.initial,
    ),
    "Context.new": ("initial", lambda d: Context.new(d).initial),
    "Context steps": (None, lambda d: Context({}, steps={"k": d}).steps["k"]),
    "put_step_result": ("result", lambda d: Context.new({}).put_step_result("k", d).steps["k"]),
    "activate_step config": (
        "config",
        lambda d: running().activate_step(Pay, d).step_configs[Pay],
    ),
    "complete_step context_updates": (
        "context_updates",
        lambda d: _complete(context_updates=d).context.steps["pay"],
    ),
    "history context_updates": (
        "context_updates",
        lambda d: _complete(context_updates=d).execution_history[0].context_updates,
    ),
    "complete_step metadata_updates": (
        "metadata_updates",
        lambda d: _complete(metadata_updates=d).runtime_metadata,
    ),
    "replace runtime_metadata": (
        "runtime_metadata",
        lambda d: new_instance().replace(runtime_metadata=d).runtime_metadata,
    ),
    "replace telemetry_metadata": (
        "telemetry_metadata",
        lambda d: new_instance().replace(telemetry_metadata=d).telemetry_metadata,
    ),
    "replace error": ("error", lambda d: new_instance().replace(error=d).error),
    "replace step_configs": (
        None,
        lambda d: new_instance().replace(step_configs={Pay: d}).step_configs[Pay],
    ),
    "ExecutionEntry context_updates": (
        "context_updates",
        lambda d: ExecutionEntry(Pay, "paid", T0, d).context_updates,
    ),
}
SINK_IDS = list(SINKS)


def store(sink, value):
    """Stores `{"v": value}` through `sink` and reads the value back."""
    return SINKS[sink][1]({"v": value})["v"]


# -- accepted values ---------------------------------------------------------


class Color(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyDict(dict):
    pass


class MyList(list):
    pass


class MyTuple(tuple):
    __slots__ = ()


Point = collections.namedtuple("Point", "x y")

ACCEPTED = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int": -42,
    "i64 max": I64_MAX,
    "i64 min": I64_MIN,
    "float": 1.5,
    "negative zero": -0.0,
    "tiny float": 5e-324,
    "huge float": 1.7976931348623157e308,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "empty str": "",
    "unicode str": "héllo \u2603 \U0001f600 \x00 nul",
    "empty bytes": b"",
    "bytes": bytes(range(256)),
    "empty list": [],
    "list": [1, "a", None, [2.5, b"x"]],
    "tuple": (1, (2, 3), []),
    "empty dict": {},
    "dict": {"a": {"b": [1, {"c": None}]}, "": 0, "$bytes": "AAAA", "$$x": 1},
    "naive datetime": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    "datetime min": dt.datetime.min,
    "datetime max": dt.datetime.max,
    "utc datetime": dt.datetime(2024, 1, 1, tzinfo=UTC),
    "offset datetime": dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5.5))),
    "negative offset": dt.datetime(
        2024, 1, 1, tzinfo=dt.timezone(-dt.timedelta(hours=23, minutes=59))
    ),
    "named timezone": dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3), "BRT")),
    "sub-minute offset": dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=30))),
    "microsecond offset": dt.datetime(
        2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=-1, microseconds=5), "odd")
    ),
    "zoneinfo": dt.datetime(2024, 7, 1, 8, 0, tzinfo=BERLIN),
    "zoneinfo fold 0": dt.datetime(2021, 10, 31, 2, 30, fold=0, tzinfo=BERLIN),
    "zoneinfo fold 1": dt.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=BERLIN),
    "naive fold 1": dt.datetime(2021, 10, 31, 2, 30, fold=1),
    "year 1 with positive offset": dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    "str enum": Color.RED,
    "int enum": Level.HIGH,
    "str subclass": MyStr("s"),
    "int subclass": MyInt(7),
    "float subclass": MyFloat(2.5),
    "dict subclass": MyDict(a=MyList([MyTuple((1,))])),
    "OrderedDict": collections.OrderedDict([("b", 1), ("a", 2)]),
    "defaultdict": collections.defaultdict(list, {"a": [1]}),
    "namedtuple": Point(1, 2),
}


@pytest.mark.parametrize("sink", SINK_IDS)
@pytest.mark.parametrize("value", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_value_reads_back_exactly_at_every_entry_point(sink, value):
    assert_same(expected_back(value), store(sink, value))


@pytest.mark.parametrize("value", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_value_survives_json_and_bytes_round_trips(value):
    inst = new_instance({"v": value})
    for loaded in (Instance.from_json(inst.to_json()), Instance.from_bytes(inst.to_bytes())):
        assert loaded == inst
        assert_same(expected_back(value), loaded.context.initial["v"])


def test_tuple_comes_back_as_list_at_any_depth():
    inst = new_instance({"t": (1, (2, (3,)), {"u": ()})})
    assert inst.context.initial["t"] == [1, [2, [3]], {"u": []}]
    assert_same([1, [2, [3]], {"u": []}], inst.context.initial["t"])


def test_dict_keys_keep_insertion_order():
    keys = ["zeta", "alpha", "mid", "$x", ""]
    inst = new_instance({k: i for i, k in enumerate(keys)})
    assert list(inst.context.initial) == keys
    assert list(Instance.from_json(inst.to_json()).context.initial) == keys
    assert list(Instance.from_bytes(inst.to_bytes()).context.initial) == keys


def test_str_enum_value_is_stored_as_its_value():
    back = new_instance({"c": Color.RED}).context.initial["c"]
    assert back == "red"
    assert type(back) is str


def test_bool_is_not_turned_into_int():
    back = new_instance({"t": True, "f": False, "one": 1}).context.initial
    assert back["t"] is True
    assert back["f"] is False
    assert type(back["one"]) is int


# -- refused values ----------------------------------------------------------


class Opaque:
    pass


class LocalTz(dt.tzinfo):
    def utcoffset(self, _):
        return dt.timedelta(hours=1)

    def dst(self, _):
        return dt.timedelta(0)

    def tzname(self, _):
        return "LOCAL"


class MyDateTime(dt.datetime):
    pass


UNSUPPORTED = {
    "Decimal": (decimal.Decimal("1.5"), "decimal.Decimal"),
    "Fraction": (fractions.Fraction(1, 3), "fractions.Fraction"),
    "complex": (1j, "complex"),
    "set": ({1}, "set"),
    "frozenset": (frozenset(), "frozenset"),
    "bytearray": (bytearray(b"x"), "bytearray"),
    "memoryview": (memoryview(b"x"), "memoryview"),
    "object": (object(), "object"),
    "user object": (Opaque(), "Opaque"),
    "class": (Opaque, "type"),
    "function": (len, "builtin_function_or_method"),
    "date": (dt.date(2024, 1, 1), "datetime.date"),
    "time": (dt.time(1, 2), "datetime.time"),
    "timedelta": (dt.timedelta(1), "datetime.timedelta"),
    "datetime subclass": (MyDateTime(2024, 1, 1), "MyDateTime"),
    "uuid": (uuid.UUID(int=0), "uuid.UUID"),
    "range": (range(3), "range"),
    "generator": ((i for i in ()), "generator"),
    "Context": (Context.new({}), "Context"),
}


@pytest.mark.parametrize(("value", "type_name"), UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_type_raises_type_error_naming_the_type(value, type_name):
    with pytest.raises(TypeError, match="unsupported type") as excinfo:
        new_instance({"v": value})
    assert type_name in str(excinfo.value)
    assert names_path(str(excinfo.value), "context", "v")


def test_unsupported_type_message_names_the_full_path_as_in_the_contract():
    context = {"order": {"items": [1, 2, decimal.Decimal("9.99")]}}
    with pytest.raises(TypeError) as excinfo:
        new_instance(context)
    assert str(excinfo.value) == ("context['order']['items'][2]: unsupported type decimal.Decimal")


@pytest.mark.parametrize("sink", SINK_IDS)
def test_unsupported_type_is_refused_at_every_entry_point(sink):
    root, _ = SINKS[sink]
    with pytest.raises(TypeError, match=r"unsupported type decimal\.Decimal") as excinfo:
        store(sink, {"deep": [decimal.Decimal(1)]})
    message = unquoted(str(excinfo.value))
    assert "[v][deep][0]" in message
    if root is not None:
        assert message.startswith(unquoted(py_path(root, "v", "deep", 0)) + ":")


def test_path_quotes_keys_like_python_repr():
    with pytest.raises(TypeError) as excinfo:
        new_instance({"it's": {'say "hi"': [{1}]}})
    assert str(excinfo.value).startswith(py_path("context", "it's", 'say "hi"', 0) + ":")


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64, 10**100, -(10**100)], ids=str)
def test_int_out_of_signed_64_bit_range_raises_overflow_error_with_path(value):
    with pytest.raises(OverflowError) as excinfo:
        new_instance({"n": {"list": [0, value]}})
    assert names_path(str(excinfo.value), "context", "n", "list", 1)


@pytest.mark.parametrize("sink", SINK_IDS)
def test_overflow_is_refused_at_every_entry_point(sink):
    with pytest.raises(OverflowError) as excinfo:
        store(sink, 2**63)
    assert "[v]" in unquoted(str(excinfo.value))


def test_int_subclass_out_of_range_raises_overflow_error():
    with pytest.raises(OverflowError):
        new_instance({"n": MyInt(2**70)})


@pytest.mark.parametrize("key", [1, 1.5, None, True, b"k", ("a",)], ids=repr)
def test_non_str_dict_key_raises_type_error_naming_the_path(key):
    with pytest.raises(TypeError) as excinfo:
        new_instance({"outer": [{key: 1}]})
    assert names_path(str(excinfo.value), "context", "outer", 0)
    assert "key" in str(excinfo.value)


@pytest.mark.parametrize("sink", SINK_IDS)
def test_non_str_dict_key_is_refused_at_every_entry_point(sink):
    with pytest.raises(TypeError) as excinfo:
        store(sink, {1: "one"})
    assert "[v]" in unquoted(str(excinfo.value))


@pytest.mark.parametrize("where", ["value", "key"])
def test_lone_surrogate_str_raises_value_error_naming_the_path(where):
    # Such a str cannot be stored as text; it must be refused like any other
    # bad value, with the path (not a bare UnicodeEncodeError).
    bad = "\ud800"
    context = {"outer": {bad: 1}} if where == "key" else {"outer": [bad]}
    with pytest.raises(ValueError, match="outer"):
        new_instance(context)


def test_str_subclass_keys_are_accepted_as_str():
    back = new_instance({MyStr("k"): 1, Color.RED: 2}).context.initial
    assert back == {"k": 1, "red": 2}
    assert all(type(k) is str for k in back)


# -- datetimes ---------------------------------------------------------------


def test_custom_tzinfo_subclass_raises_type_error():
    with pytest.raises(TypeError, match=r"tzinfo") as excinfo:
        new_instance({"when": dt.datetime(2024, 1, 1, tzinfo=LocalTz())})
    assert names_path(str(excinfo.value), "context", "when")


def test_zoneinfo_without_key_raises_type_error():
    path = next((p for p in (f"{d}/UTC" for d in zoneinfo.TZPATH) if os.path.exists(p)), None)
    if path is None:
        pytest.skip("no zoneinfo files on this system")
    with open(path, "rb") as f:
        keyless = zoneinfo.ZoneInfo.from_file(f)
    with pytest.raises(TypeError):
        new_instance({"when": dt.datetime(2024, 1, 1, tzinfo=keyless)})


@pytest.mark.parametrize(
    "name",
    ["", "]", "a]b", "[x]", "x][fold=1", "tzname=CET", "fold=1", "\n\t", "ü\u2603", "+01:00"],
)
def test_timezone_name_with_any_characters_round_trips(name):
    value = dt.datetime(2024, 1, 1, 12, fold=1, tzinfo=dt.timezone(dt.timedelta(hours=1), name))
    inst = new_instance({"when": value})
    for loaded in (inst, Instance.from_json(inst.to_json()), Instance.from_bytes(inst.to_bytes())):
        assert_same_datetime(value, loaded.context.initial["when"])


def test_utc_comes_back_as_the_utc_singleton_zone():
    back = new_instance({"t": dt.datetime(2024, 1, 1, tzinfo=UTC)}).context.initial["t"]
    assert back.tzinfo == UTC
    assert back.utcoffset() == dt.timedelta(0)


def test_fold_is_preserved_and_selects_the_offset():
    first = dt.datetime(2021, 10, 31, 2, 30, fold=0, tzinfo=BERLIN)
    second = dt.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=BERLIN)
    inst = new_instance({"a": first, "b": second})
    for loaded in (inst, Instance.from_json(inst.to_json()), Instance.from_bytes(inst.to_bytes())):
        a, b = loaded.context.initial["a"], loaded.context.initial["b"]
        assert (a.fold, b.fold) == (0, 1)
        assert a.utcoffset() == dt.timedelta(hours=2)
        assert b.utcoffset() == dt.timedelta(hours=1)


# -- nesting limits ----------------------------------------------------------


def nested_lists(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_max_depth_constant_is_100():
    assert MAX_DEPTH == 100


def test_nesting_up_to_max_depth_is_accepted_and_round_trips():
    # The context dict itself is the first container.
    inst = new_instance({"v": nested_lists(MAX_DEPTH - 1)})
    assert inst == Instance.from_json(inst.to_json())
    assert inst == Instance.from_bytes(inst.to_bytes())
    assert inst.context.initial["v"] == nested_lists(MAX_DEPTH - 1)


@pytest.mark.parametrize("extra", [1, 2, 1000])
def test_nesting_deeper_than_max_depth_raises_value_error(extra):
    with pytest.raises(ValueError, match="nested deeper"):
        new_instance({"v": nested_lists(MAX_DEPTH - 1 + extra)})


def test_deeply_nested_dicts_are_refused_too():
    value = {}
    for _ in range(MAX_DEPTH + 5):
        value = {"k": value}
    with pytest.raises(ValueError, match="nested deeper"):
        new_instance(value)


@pytest.mark.parametrize("sink", SINK_IDS)
def test_nesting_limit_holds_at_every_entry_point(sink):
    with pytest.raises(ValueError, match="nested deeper"):
        store(sink, nested_lists(MAX_DEPTH + 1))


def test_self_referencing_dict_raises_value_error_not_recursion_error():
    d = {}
    d["self"] = d
    with pytest.raises(ValueError, match="nested deeper") as excinfo:
        new_instance(d)
    assert not isinstance(excinfo.value, RecursionError)


def test_self_referencing_list_raises_value_error():
    items = []
    items.append(items)
    with pytest.raises(ValueError, match="nested deeper"):
        new_instance({"items": items})


def test_mutually_referencing_containers_raise_value_error():
    a, b = {}, []
    a["b"] = b
    b.append(a)
    with pytest.raises(ValueError, match="nested deeper"):
        running().activate_step(Pay, a)


# -- copies at the boundary --------------------------------------------------


def test_reads_return_fresh_objects_each_time():
    inst = running({"items": [1, {"x": [2]}]}).activate_step(Pay, {"cfg": [1]})
    assert inst.context.initial is not inst.context.initial
    assert inst.context.initial["items"] is not inst.context.initial["items"]
    assert inst.step_configs is not inst.step_configs
    assert inst.step_configs[Pay] is not inst.step_configs[Pay]
    assert inst.runtime_metadata is not inst.runtime_metadata
    assert inst.telemetry_metadata is not inst.telemetry_metadata
    assert inst.execution_history is not inst.execution_history


def test_mutating_a_read_value_does_not_change_the_instance():
    inst = running({"items": [1, {"x": [2]}]}).activate_step(Pay, {"cfg": [1]})
    inst = inst.replace(
        runtime_metadata={"m": [1]}, telemetry_metadata={"t": {}}, error={"kind": ["x"]}
    )
    before = inst.to_json()
    initial = inst.context.initial
    initial["items"][1]["x"].append(3)
    initial["new"] = 1
    inst.step_configs[Pay]["cfg"].append(2)
    configs = inst.step_configs
    configs[Pay] = "other"
    inst.runtime_metadata["m"].append(2)
    inst.telemetry_metadata["t"]["u"] = 1
    inst.error["kind"].append("y")
    inst.execution_history.append("junk")
    assert inst.to_json() == before
    assert inst.context.initial == {"items": [1, {"x": [2]}]}


def test_mutating_an_input_after_the_call_does_not_change_the_instance():
    context = {"items": [1, 2], "nested": {"a": []}}
    config = {"retries": [1]}
    updates = {"result": {"ok": [True]}}
    metadata = {"m": {"n": 1}}
    inst = new_instance(context).replace(status="running").activate_step(Pay, config)
    with_config = inst
    inst = inst.complete_step(Pay, "paid", updates, metadata, timestamp=T0)
    context["items"].append(3)
    context["nested"]["a"].append(1)
    config["retries"].append(2)
    updates["result"]["ok"].append(False)
    metadata["m"]["n"] = 2
    assert inst.context.initial == {"items": [1, 2], "nested": {"a": []}}
    assert with_config.step_configs[Pay] == {"retries": [1]}
    assert inst.context.steps["pay"] == {"result": {"ok": [True]}}
    assert inst.execution_history[0].context_updates == {"result": {"ok": [True]}}
    assert inst.runtime_metadata == {"m": {"n": 1}}


# -- equality of values ------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (1, True),
        (0, False),
        (1.0, True),
        (0, -0.0),
        ([1, 2], (1, 2)),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        (math.nan, math.nan),
        ({"x": [math.nan]}, {"x": [math.nan]}),
        (I64_MAX, I64_MAX),
        (2**53, float(2**53)),
        (
            dt.datetime(2024, 1, 1, 12, tzinfo=UTC),
            dt.datetime(2024, 1, 1, 13, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        ),
        (
            dt.datetime(2024, 7, 1, 6, tzinfo=UTC),
            dt.datetime(2024, 7, 1, 8, tzinfo=BERLIN),
        ),
    ],
    ids=repr,
)
def test_values_equal_in_python_make_equal_instances(a, b):
    assert new_instance({"v": a}) == new_instance({"v": b})
    assert Context.new({"v": a}) == Context.new({"v": b})


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, "1"),
        (b"a", "a"),
        (None, 0),
        (None, False),
        ([], {}),
        (0, ""),
        (1, 2),
        (1.5, 1),
        (I64_MAX, float(I64_MAX)),
        (2**53 + 1, float(2**53 + 1)),
        (math.nan, 0.0),
        (math.inf, -math.inf),
        ([1, 2], [2, 1]),
        ({"a": 1}, {"a": 1, "b": 2}),
        (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=UTC)),
        (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)),
    ],
    ids=repr,
)
def test_values_unequal_in_python_make_unequal_instances(a, b):
    if not (isinstance(a, float) and math.isnan(a)):
        assert a != b  # the premise: Python says they differ
    assert new_instance({"v": a}) != new_instance({"v": b})
    assert Context.new({"v": a}) != Context.new({"v": b})


# -- property: any value survives every round trip ---------------------------

_max_offset = dt.timedelta(hours=24) - dt.timedelta(microseconds=1)
fixed_zones = st.builds(
    dt.timezone, st.timedeltas(min_value=-_max_offset, max_value=_max_offset)
) | st.builds(
    dt.timezone,
    st.timedeltas(min_value=-_max_offset, max_value=_max_offset),
    # "]" in a name is covered by its own test below
    st.text(st.characters(codec="utf-8", exclude_characters="]"), max_size=6),
)
datetimes = st.datetimes(
    timezones=st.none() | st.just(UTC) | fixed_zones | st.timezones(), allow_imaginary=True
)
keys = st.text(max_size=6) | st.sampled_from(["$bytes", "$datetime", "$float", "$$", "$"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=I64_MIN, max_value=I64_MAX)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | datetimes
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.dictionaries(keys, values, max_size=4), config=values)
def test_any_value_round_trips_through_instance_json_and_bytes(data, config):
    inst = (
        new_instance(data)
        .replace(status="running", runtime_metadata=data)
        .activate_step(Pay, config)
        .activate_step(ValidateOrder)
        .complete_step(ValidateOrder, "valid", data, data, timestamp=T0)
    )
    expected = expected_back(data)
    assert_same(expected, inst.context.initial)
    if config is not None:
        assert_same(expected_back(config), inst.step_configs[Pay])
    text = inst.to_json()
    for loaded in (Instance.from_json(text), Instance.from_bytes(inst.to_bytes())):
        assert loaded == inst
        assert loaded.to_json() == text
        assert_same(expected, loaded.context.initial)
        assert_same(expected, loaded.context.steps["validate_order"])
        # runtime_metadata is kept in key order, not insertion order
        assert_same(expected, loaded.runtime_metadata, ordered=False)
        assert_same(expected, loaded.execution_history[0].context_updates)
        if config is not None:
            assert_same(expected_back(config), loaded.step_configs[Pay])
