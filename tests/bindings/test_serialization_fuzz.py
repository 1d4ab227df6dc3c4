"""Fuzzing the parsers of external input: ``Instance.from_json``,
``Instance.from_bytes`` and the conversion of Python values.

Whatever the input, the outcome is an instance that round-trips, or one of the
documented exceptions; never a crash, a hang, a panic or another exception.
A longer, coverage-guided run lives in ``fuzz/fuzz_instance.py``.
"""

from __future__ import annotations

import decimal
import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hephaestus import Done, Instance, SerializationError, Step, Unique, Workflow
from hypothesis import given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=400, deadline=None)


class FuzzStep(Step):
    events = ("done",)


class OtherStep(Step):
    pass


class FuzzFlow(Workflow, unique=Unique("fuzz")):
    start = FuzzStep
    transitions = {FuzzStep: {"done": Done}}


def sample() -> Instance:
    at = datetime(2024, 5, 1, tzinfo=timezone.utc)
    inst = Instance.new(
        FuzzFlow,
        3,
        {"items": [1, 2.5, "x", b"\x00", None, True], "$tag": {"when": at}, "nan": math.nan},
        "orderid::fuzz",
    ).replace(status="running", telemetry_start_time=7)
    inst = inst.activate_step(FuzzStep, {"retries": 3})
    inst = inst.complete_step(FuzzStep, "done", {"n": 1}, {"m": "v"}, timestamp=at)
    return inst.activate_step(OtherStep).wait_step(OtherStep)


def check_outcome(load: Any, data: Any) -> None:
    try:
        inst = load(data)
    except SerializationError:
        return
    # Whatever is accepted is a valid instance that round-trips.
    assert Instance.from_json(inst.to_json()) == inst
    assert Instance.from_bytes(inst.to_bytes()) == inst


@FUZZ
@given(st.binary(max_size=300))
def test_from_bytes_accepts_or_rejects_random_bytes(data: bytes) -> None:
    check_outcome(Instance.from_bytes, data)


@FUZZ
@given(st.text(max_size=300))
def test_from_json_accepts_or_rejects_random_text(text: str) -> None:
    check_outcome(Instance.from_json, text)


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for position, delete, insert in edits:
        at = position % (len(out) + 1)
        out[at : at + delete] = insert
    return bytes(out)


edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 4), st.binary(max_size=4)),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(edits)
def test_from_bytes_survives_mutated_documents(changes: list[tuple[int, int, bytes]]) -> None:
    check_outcome(Instance.from_bytes, mutate(sample().to_bytes(), changes))


@FUZZ
@given(edits)
def test_from_json_survives_mutated_documents(changes: list[tuple[int, int, bytes]]) -> None:
    text = mutate(sample().to_json().encode(), changes).decode("utf-8", errors="replace")
    check_outcome(Instance.from_json, text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(st.sampled_from(sorted(json.loads(sample().to_json()))), json_values)
def test_from_json_survives_any_value_in_any_field(field: str, value: Any) -> None:
    document = json.loads(sample().to_json())
    document[field] = value
    check_outcome(Instance.from_json, json.dumps(document))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200_000,
        '{"format":' * 100_000,
        '{"format":"hephaestus.instance","format_version":1,"context":{"initial":'
        + '{"a":' * 50_000,
        "",
        "null",
        '"hephaestus.instance"',
    ],
)
def test_hostile_json_is_rejected_without_overflowing_the_stack(text: str) -> None:
    with pytest.raises(SerializationError):
        Instance.from_json(text)


@pytest.mark.parametrize(
    "data",
    [
        b"\x91" * 1_000_000,  # a million nested one-element arrays
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion elements
        b"\xdb\xff\xff\xff\xff",  # a string claiming 4 GiB
        b"\xdf\xff\xff\xff\xff",  # a map claiming 4 billion entries
        b"",
    ],
)
def test_hostile_bytes_are_rejected_without_allocating_or_recursing(data: bytes) -> None:
    with pytest.raises(SerializationError):
        Instance.from_bytes(data)


def test_huge_valid_input_is_read() -> None:
    inst = Instance.new(FuzzFlow, 1, {"big": list(range(200_000)), "s": "x" * 1_000_000}, "i")
    assert Instance.from_bytes(inst.to_bytes()) == inst
    assert Instance.from_json(inst.to_json()) == inst


class Opaque:
    pass


any_objects = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.sampled_from([decimal.Decimal(1), Opaque(), {1, 2}, 1j, timedelta(1), Opaque]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None)
@given(any_objects)
def test_value_conversion_accepts_or_rejects_with_a_clear_error(value: Any) -> None:
    try:
        inst = Instance.new(FuzzFlow, 1, {"v": value}, "i")
    except (TypeError, OverflowError) as error:
        assert str(error).startswith("context")
        return
    assert Instance.from_bytes(inst.to_bytes()) == inst
    assert Instance.from_json(inst.to_json()) == inst
