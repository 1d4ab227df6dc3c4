"""`hephaestus.steps` (CONTRACT §6): step results, retry policies, the `Step`
base class and the built-in steps."""

import asyncio
import copy
import dataclasses
import datetime as dt
import enum
import functools
import logging
import math
import pickle
import types

import hephaestus.steps
import pytest
from hephaestus import Instance, step_key
from hephaestus.steps import (
    Async,
    Debug,
    Done,
    Error,
    Ok,
    Retry,
    Step,
    StepResult,
    StepReturn,
    Wait,
    WaitForEvent,
    is_step_class,
    normalize_result,
    wait_duration,
)
from hypothesis import given
from hypothesis import strategies as st
from samples import T0, OrderFlow, running


class Event(str, enum.Enum):
    VALID = "valid"

    def __str__(self):
        return "Event.VALID"


class ValidateOrder(Step):
    events = ("valid", "invalid")

    def execute(self, instance, config, context):
        if context.initial.get("items"):
            return Ok("valid", {"item_count": len(context.initial["items"])})
        return "invalid"


class AsyncCharge(Step):
    events = ("charged",)
    step_key = "charge"
    retry = Retry(max_attempts=5, backoff="linear")

    async def execute(self, instance, config, context):
        await asyncio.sleep(0)
        return Ok("charged", {"amount": config["amount"]})


# -- Ok ----------------------------------------------------------------------


def test_ok_has_the_contract_attributes():
    ok = Ok("valid", {"item_count": 2}, {"attempt": 1})
    assert ok.event == "valid"
    assert ok.context_updates == {"item_count": 2}
    assert ok.metadata == {"attempt": 1}


def test_ok_updates_default_to_none():
    ok = Ok("valid")
    assert ok.context_updates is None
    assert ok.metadata is None


def test_ok_accepts_keywords():
    assert Ok(event="e", context_updates={"a": 1}, metadata={"m": 2}) == Ok("e", {"a": 1}, {"m": 2})


def test_ok_compares_by_value():
    assert Ok("valid", {"a": [1, 2]}) == Ok("valid", {"a": [1, 2]})
    assert Ok("valid") == Ok("valid", None, None)


@pytest.mark.parametrize(
    "other",
    [
        Ok("invalid"),
        Ok("valid", {}),
        Ok("valid", metadata={}),
        Ok("valid", {"a": 1}),
        Ok("valid", None, {"a": 1}),
        Async(),
        Error("valid"),
        "valid",
        ("valid",),
        None,
    ],
    ids=repr,
)
def test_ok_differs_from_other_results_and_values(other):
    assert Ok("valid") != other
    assert other != Ok("valid")


def test_ok_copies_the_callers_mappings_into_plain_dicts():
    updates = {"a": 1}
    metadata = types.MappingProxyType({"m": 1})
    ok = Ok("valid", updates, metadata)
    updates["a"] = 2
    updates["b"] = 3
    assert ok.context_updates == {"a": 1}
    assert type(ok.context_updates) is dict
    assert type(ok.metadata) is dict
    assert ok.context_updates is not updates


def test_ok_is_immutable_and_slotted():
    ok = Ok("valid")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok.event = "invalid"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok.context_updates = {}
    assert not hasattr(ok, "__dict__")


def test_ok_is_unhashable():
    with pytest.raises(TypeError, match="unhashable"):
        hash(Ok("valid"))


def test_a_str_enum_event_is_stored_as_its_plain_value():
    ok = Ok(Event.VALID)
    assert type(ok.event) is str
    assert ok.event == "valid"


@pytest.mark.parametrize(
    ("ok", "text"),
    [
        (Ok("valid"), "Ok('valid')"),
        (Ok("valid", {"n": 2}), "Ok('valid', context_updates={'n': 2})"),
        (Ok("valid", metadata={}), "Ok('valid', metadata={})"),
        (Ok("v", {"n": 1}, {"m": 2}), "Ok('v', context_updates={'n': 1}, metadata={'m': 2})"),
    ],
)
def test_ok_repr_is_short_and_evaluates_back(ok, text):
    assert repr(ok) == text
    assert eval(text) == ok


@pytest.mark.parametrize("event", [None, 1, b"valid", ["valid"], ("valid",)])
def test_ok_event_must_be_a_str(event):
    with pytest.raises(TypeError, match=f"Ok event must be a str, got {type(event).__name__}"):
        Ok(event)


def test_ok_event_must_not_be_empty():
    with pytest.raises(ValueError, match="Ok event must not be empty"):
        Ok("")


@pytest.mark.parametrize("field", ["context_updates", "metadata"])
@pytest.mark.parametrize("value", [[("a", 1)], "a", 1, {"a"}, Ok("x")])
def test_ok_updates_must_be_mappings(field, value):
    with pytest.raises(TypeError, match=rf"Ok\.{field} must be a mapping or None, got"):
        Ok("valid", **{field: value})


@pytest.mark.parametrize("field", ["context_updates", "metadata"])
@pytest.mark.parametrize("key", [1, None, b"k", ("a",)])
def test_ok_update_keys_must_be_str(field, key):
    with pytest.raises(TypeError, match=rf"Ok\.{field} keys must be str") as excinfo:
        Ok("valid", **{field: {"fine": 1, key: 2}})
    assert repr(key) in str(excinfo.value)


@pytest.mark.parametrize(
    "copier", [copy.copy, copy.deepcopy, lambda v: pickle.loads(pickle.dumps(v))]
)
@pytest.mark.parametrize(
    "result",
    [Ok("valid"), Ok("valid", {"a": [1]}, {"m": None}), Async(), Error("boom"), Error({"k": 1})],
    ids=repr,
)
def test_results_copy_and_pickle_by_value(copier, result):
    assert copier(result) == result
    assert type(copier(result)) is type(result)


def test_ok_works_with_dataclasses_replace_and_match():
    ok = dataclasses.replace(Ok("valid", {"a": 1}), event="invalid")
    assert ok == Ok("invalid", {"a": 1})
    match ok:
        case Ok(event, updates, metadata):
            assert (event, updates, metadata) == ("invalid", {"a": 1}, None)
        case _:  # pragma: no cover
            pytest.fail("Ok did not match its own pattern")


# -- Async and Error ---------------------------------------------------------


def test_all_asyncs_are_equal_and_hash_alike():
    assert Async() == Async()
    assert hash(Async()) == hash(Async())
    assert len({Async(), Async()}) == 1
    assert repr(Async()) == "Async()"
    assert Async() != Ok("valid")


def test_async_takes_no_arguments():
    with pytest.raises(TypeError):
        Async("x")


@pytest.mark.parametrize(
    "value",
    [Ok("valid"), Async(), Error("boom"), Retry()],
    ids=lambda v: type(v).__name__,
)
def test_values_refuse_any_assignment_or_deletion(value):
    name = type(value).__name__
    for attr in ("event", "reason", "max_attempts", "not_a_field"):
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"{name} is immutable"):
            setattr(value, attr, 1)
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"{name} is immutable"):
            delattr(value, attr)


def test_error_holds_its_reason_as_given():
    reason = ValueError("card declined")
    error = Error(reason)
    assert error.reason is reason
    assert Error(reason="timeout").reason == "timeout"


def test_error_compares_by_value():
    assert Error({"code": 402}) == Error({"code": 402})
    assert Error("a") != Error("b")
    assert Error(None) != Async()
    assert repr(Error("card declined")) == "Error(reason='card declined')"


def test_error_hashes_like_its_reason():
    assert hash(Error("x")) == hash(Error("x"))
    with pytest.raises(TypeError, match="unhashable"):
        hash(Error({"code": 402}))


def test_error_needs_a_reason_and_is_immutable():
    with pytest.raises(TypeError):
        Error()
    with pytest.raises(dataclasses.FrozenInstanceError):
        Error("x").reason = "y"


def test_step_result_aliases_cover_the_result_types():
    for result in (Ok("e"), Async(), Error("r")):
        assert isinstance(result, StepResult)
        assert isinstance(result, StepReturn)
    assert isinstance("event", StepReturn)
    assert not isinstance("event", StepResult)


# -- normalize_result --------------------------------------------------------


def test_a_bare_str_means_ok():
    assert normalize_result("valid", step=ValidateOrder) == Ok("valid")
    result = normalize_result(Event.VALID, step=ValidateOrder)
    assert result == Ok("valid")
    assert type(result.event) is str


@pytest.mark.parametrize("result", [Ok("valid", {"a": 1}), Async(), Error("boom")], ids=repr)
def test_results_pass_through_unchanged(result):
    assert normalize_result(result, step=ValidateOrder) is result


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (None, "NoneType"),
        (1, "int"),
        (True, "bool"),
        (1.5, "float"),
        (b"valid", "bytes"),
        (("valid",), "tuple"),
        ({"event": "valid"}, "dict"),
        (Ok, "type"),
    ],
)
def test_anything_else_is_a_type_error_naming_step_and_type(value, type_name):
    with pytest.raises(TypeError) as excinfo:
        normalize_result(value, step=ValidateOrder)
    assert str(excinfo.value) == (
        f"ValidateOrder.execute returned {type_name}; expected Ok, Async, Error or an event str"
    )


def test_an_unawaited_coroutine_gets_a_hint():
    coroutine = AsyncCharge().execute(None, {"amount": 1}, None)
    try:
        with pytest.raises(TypeError, match=r"returned coroutine; .*must be awaited"):
            normalize_result(coroutine, step=AsyncCharge)
    finally:
        coroutine.close()


def test_an_empty_event_str_is_a_value_error_naming_the_step():
    with pytest.raises(ValueError, match=r"ValidateOrder\.execute returned an empty event str"):
        normalize_result("", step=ValidateOrder)


def test_normalize_result_takes_the_step_by_keyword_only():
    with pytest.raises(TypeError):
        normalize_result("valid", ValidateOrder)


# -- Retry -------------------------------------------------------------------


def test_retry_defaults():
    retry = Retry()
    assert (retry.max_attempts, retry.backoff, retry.base_delay, retry.max_backoff) == (
        3,
        "exponential",
        1.0,
        30.0,
    )


def test_retry_accepts_positional_and_keyword_fields():
    assert Retry(5, "linear", 2, 10) == Retry(
        max_attempts=5, backoff="linear", base_delay=2.0, max_backoff=10.0
    )


def test_retry_stores_delays_as_floats():
    retry = Retry(base_delay=2, max_backoff=60)
    assert type(retry.base_delay) is float
    assert type(retry.max_backoff) is float
    assert (
        repr(retry)
        == "Retry(max_attempts=3, backoff='exponential', base_delay=2.0, max_backoff=60.0)"
    )


def test_retry_is_an_immutable_hashable_value():
    assert Retry() == Retry()
    assert hash(Retry()) == hash(Retry())
    assert Retry() != Retry(max_attempts=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Retry().max_attempts = 9
    for copier in (copy.copy, copy.deepcopy, lambda v: pickle.loads(pickle.dumps(v))):
        assert copier(Retry(7, "constant", 0.5, 0.5)) == Retry(7, "constant", 0.5, 0.5)


def test_retry_allows_max_backoff_equal_to_base_delay():
    assert Retry(base_delay=5, max_backoff=5).delay(10) == 5.0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, r"Retry\.max_attempts must be >= 1, got 0"),
        ({"max_attempts": -3}, ValueError, r"Retry\.max_attempts must be >= 1, got -3"),
        ({"max_attempts": True}, TypeError, r"Retry\.max_attempts must be an int, got bool"),
        ({"max_attempts": 3.0}, TypeError, r"Retry\.max_attempts must be an int, got float"),
        ({"max_attempts": "3"}, TypeError, r"Retry\.max_attempts must be an int, got str"),
        ({"max_attempts": None}, TypeError, r"Retry\.max_attempts must be an int, got NoneType"),
        ({"backoff": "fibonacci"}, ValueError, r"Retry\.backoff must be one of .*'fibonacci'"),
        ({"backoff": "Exponential"}, ValueError, r"Retry\.backoff must be one of"),
        ({"backoff": ""}, ValueError, r"Retry\.backoff must be one of"),
        ({"backoff": None}, TypeError, r"Retry\.backoff must be a str, got NoneType"),
        ({"base_delay": 0}, ValueError, r"Retry\.base_delay must be a positive finite number"),
        ({"base_delay": -1.0}, ValueError, r"Retry\.base_delay must be a positive finite"),
        ({"base_delay": math.inf}, ValueError, r"Retry\.base_delay must be a positive finite"),
        ({"base_delay": math.nan}, ValueError, r"Retry\.base_delay must be a positive finite"),
        ({"base_delay": True}, TypeError, r"Retry\.base_delay must be an int or float, got bool"),
        ({"base_delay": "1"}, TypeError, r"Retry\.base_delay must be an int or float, got str"),
        ({"max_backoff": 0.0}, ValueError, r"Retry\.max_backoff must be a positive finite"),
        ({"max_backoff": math.inf}, ValueError, r"Retry\.max_backoff must be a positive finite"),
        ({"max_backoff": None}, TypeError, r"Retry\.max_backoff must be an int or float"),
        ({"max_backoff": 10**400}, ValueError, r"Retry\.max_backoff must be a positive finite"),
        ({"base_delay": -(10**400)}, ValueError, r"Retry\.base_delay must be a positive finite"),
        (
            {"base_delay": 10, "max_backoff": 5},
            ValueError,
            r"Retry\.max_backoff must be >= base_delay \(10\.0\), got 5\.0",
        ),
    ],
)
def test_retry_rejects_bad_fields_naming_them(kwargs, error, message):
    with pytest.raises(error, match=message):
        Retry(**kwargs)


def test_retry_backoff_error_lists_the_choices():
    with pytest.raises(ValueError, match="'constant', 'linear', 'exponential'"):
        Retry(backoff="random")


@pytest.mark.parametrize(
    ("retry", "delays"),
    [
        (Retry(backoff="constant", base_delay=2), [2.0, 2.0, 2.0, 2.0, 2.0]),
        (Retry(backoff="linear", base_delay=2, max_backoff=7), [2.0, 4.0, 6.0, 7.0, 7.0]),
        (Retry(backoff="exponential"), [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),
        (Retry(backoff="exponential", base_delay=0.5, max_backoff=100), [0.5, 1.0, 2.0, 4.0]),
    ],
)
def test_retry_delay_sequences(retry, delays):
    assert [retry.delay(n) for n in range(1, len(delays) + 1)] == delays


@pytest.mark.parametrize("backoff", ["constant", "linear", "exponential"])
@pytest.mark.parametrize("attempt", [10**3, 10**6, 10**400])
def test_huge_attempt_numbers_are_capped_not_overflowing(backoff, attempt):
    retry = Retry(backoff=backoff, base_delay=1, max_backoff=60)
    expected = 1.0 if backoff == "constant" else 60.0
    assert retry.delay(attempt) == expected


@pytest.mark.parametrize(
    ("attempt", "error"), [(0, ValueError), (-1, ValueError), (1.0, TypeError), (True, TypeError)]
)
def test_retry_delay_needs_an_attempt_number_from_one(attempt, error):
    with pytest.raises(error, match="attempt must be"):
        Retry().delay(attempt)


@st.composite
def valid_retries(draw):
    base = draw(st.floats(min_value=1e-6, max_value=1e4, allow_nan=False))
    cap = draw(st.floats(min_value=base, max_value=1e7, allow_nan=False))
    backoff = draw(st.sampled_from(["constant", "linear", "exponential"]))
    return Retry(draw(st.integers(1, 20)), backoff, base, cap)


@given(valid_retries(), st.integers(1, 2000))
def test_retry_delay_is_monotone_and_capped(retry, attempt):
    delay = retry.delay(attempt)
    assert retry.base_delay <= delay <= retry.max_backoff
    assert delay <= retry.delay(attempt + 1)


# -- Step: class attributes --------------------------------------------------


def test_step_base_defaults():
    assert Step.events == ()
    assert Step.step_key is None
    assert Step.retry is None


def test_a_step_subclass_keeps_its_declarations():
    assert ValidateOrder.events == ("valid", "invalid")
    assert AsyncCharge.step_key == "charge"
    assert AsyncCharge.retry == Retry(5, "linear")
    assert step_key(AsyncCharge) == "charge"
    assert step_key(ValidateOrder) == "validate_order"


def test_events_given_as_a_list_become_a_tuple():
    class Listed(Step):
        events = ["a", "b"]

    assert Listed.events == ("a", "b")


def test_str_enum_events_become_plain_strs():
    class Enumerated(Step):
        events = (Event.VALID,)

    assert Enumerated.events == ("valid",)
    assert type(Enumerated.events[0]) is str


def test_a_step_may_declare_no_events():
    class Abstract(Step):
        pass

    assert Abstract.events == ()


def test_subclasses_inherit_declarations():
    class Stricter(ValidateOrder):
        pass

    assert Stricter.events == ValidateOrder.events
    assert step_key(Stricter) == "stricter"
    assert Stricter().execute is not None


@pytest.mark.parametrize(
    ("events", "error", "message"),
    [
        ("valid", TypeError, r"Bad\.events must be a tuple of str, got str"),
        ({"valid"}, TypeError, r"Bad\.events must be a tuple of str, got set"),
        (None, TypeError, r"Bad\.events must be a tuple of str, got NoneType"),
        (("valid", 1), TypeError, r"Bad\.events must hold str, got int 1"),
        ((b"valid",), TypeError, r"Bad\.events must hold str, got bytes b'valid'"),
        (("valid", ""), ValueError, r"Bad\.events must not contain an empty str"),
        (("valid", "valid"), ValueError, r"Bad\.events declares 'valid' more than once"),
        (["a", "b", "a"], ValueError, r"Bad\.events declares 'a' more than once"),
    ],
)
def test_bad_events_are_rejected_naming_the_class(events, error, message):
    with pytest.raises(error, match=message):
        type("Bad", (Step,), {"events": events})


def test_bad_events_fail_in_a_class_statement():
    with pytest.raises(ValueError, match=r"Twice\.events declares 'a' more than once"):

        class Twice(Step):
            events = ("a", "a")


@pytest.mark.parametrize(
    ("key", "error", "message"),
    [
        (1, TypeError, r"Bad\.step_key must be a str or None, got int"),
        (b"key", TypeError, r"Bad\.step_key must be a str or None, got bytes"),
        ("", ValueError, r"Bad\.step_key must not be empty"),
    ],
)
def test_bad_step_keys_are_rejected_naming_the_class(key, error, message):
    with pytest.raises(error, match=message):
        type("Bad", (Step,), {"step_key": key})


def test_any_non_empty_step_key_is_accepted():
    for key in ("validate", "Validate Order", "x.y-z"):
        assert step_key(type("Keyed", (Step,), {"step_key": key})) == key


@pytest.mark.parametrize("retry", [{"max_attempts": 3}, 3, Retry])
def test_retry_must_be_a_retry_or_none(retry):
    with pytest.raises(TypeError, match=r"Bad\.retry must be a Retry or None, got"):
        type("Bad", (Step,), {"retry": retry})


def test_unknown_class_keywords_are_still_rejected():
    with pytest.raises(TypeError):
        type("Bad", (Step,), {}, color="red")


# -- Step: execute -------------------------------------------------------------


def test_execute_may_name_its_parameters_freely_and_add_defaults():
    def decorator(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            return function(*args, **kwargs)

        return wrapper

    class Renamed(Step):
        def execute(self, _instance, cfg, ctx, extra=1, *more, flag=False):
            return "done"

    class Variadic(Step):
        def execute(self, *args):
            return "done"

    class Decorated(Step):
        @decorator
        def execute(self, instance, config, context):
            return "done"

    class AsyncStep(Step):
        async def execute(self, instance, config, context):
            return "done"

    for cls in (Renamed, Variadic, Decorated):
        assert cls().execute(None, None, None) == "done"
    assert asyncio.run(AsyncStep().execute(None, None, None)) == "done"


@pytest.mark.parametrize(
    "execute",
    [
        lambda self: None,
        lambda self, instance, config: None,
        lambda self, instance, config, context, extra: None,
        lambda self, instance, config, context, *, flag: None,
        lambda instance, config, context: None,
        lambda: None,
    ],
)
def test_execute_must_take_instance_config_and_context(execute):
    with pytest.raises(TypeError, match=r"Bad\.execute.* must take \(self, instance, config"):
        type("Bad", (Step,), {"execute": execute})


def test_the_signature_error_shows_the_signature_it_got():
    with pytest.raises(TypeError, match=r"Bad\.execute\(self, instance\) must take"):

        class Bad(Step):
            def execute(self, instance):
                pass  # pragma: no cover


@pytest.mark.parametrize("wrapper", [staticmethod, classmethod])
def test_execute_must_be_a_plain_method(wrapper):
    def execute(a, b, c, d=None):
        pass  # pragma: no cover

    with pytest.raises(
        TypeError, match=rf"Bad\.execute must be a plain method.*{wrapper.__name__}"
    ):
        type("Bad", (Step,), {"execute": wrapper(execute)})


def test_execute_must_be_callable():
    with pytest.raises(TypeError, match=r"Bad\.execute must be a method, got int"):
        type("Bad", (Step,), {"execute": 5})


@pytest.mark.parametrize("cls", [Step, type("NoExecute", (Step,), {"events": ("e",)})])
def test_the_base_execute_raises_naming_the_class(cls):
    message = f"{cls.__qualname__} must define execute(self, instance, config, context)"
    with pytest.raises(NotImplementedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls().execute(running(), None, running().context)


def test_a_sync_step_runs_and_normalizes():
    inst = Instance.new(OrderFlow, 1, {"items": [1, 2]}, "orderid::a")
    result = ValidateOrder().execute(inst, None, inst.context)
    assert normalize_result(result, step=ValidateOrder) == Ok("valid", {"item_count": 2})
    empty = Instance.new(OrderFlow, 1, {}, "orderid::b")
    result = ValidateOrder().execute(empty, None, empty.context)
    assert normalize_result(result, step=ValidateOrder) == Ok("invalid")


def test_an_async_step_runs_and_normalizes():
    inst = running()
    result = asyncio.run(AsyncCharge().execute(inst, {"amount": 5}, inst.context))
    assert normalize_result(result, step=AsyncCharge) == Ok("charged", {"amount": 5})


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (ValidateOrder, True),
        (AsyncCharge, True),
        (Done, True),
        (Wait, True),
        (WaitForEvent, True),
        (Debug, True),
        (Step, False),
        (ValidateOrder(), False),
        (OrderFlow, False),
        (object, False),
        ("ValidateOrder", False),
        (None, False),
    ],
)
def test_is_step_class(obj, expected):
    assert is_step_class(obj) is expected


# -- built-in steps ------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "events", "key"),
    [
        (Done, ("done",), "done"),
        (Wait, ("timeout",), "wait"),
        (WaitForEvent, ("received",), "wait_for_event"),
        (Debug, ("done",), "debug"),
    ],
)
def test_built_in_steps_declare_their_events(cls, events, key):
    assert issubclass(cls, Step)
    assert cls.events == events
    assert step_key(cls) == key
    assert cls.retry is None


def test_done_emits_done():
    inst = running()
    assert Done().execute(inst, None, inst.context) == "done"
    assert normalize_result(Done().execute(inst, None, inst.context), step=Done) == Ok("done")


def test_wait_checks_its_config_and_waits():
    inst = running()
    assert Wait().execute(inst, {"duration": 5, "unit": "minute"}, inst.context) == Async()
    with pytest.raises(ValueError, match="Wait unit must be one of"):
        Wait().execute(inst, {"duration": 5, "unit": "week"}, inst.context)
    with pytest.raises(TypeError, match="Wait config must be a mapping"):
        Wait().execute(inst, None, inst.context)


def test_a_wait_subclass_has_its_own_key():
    class WaitForShipping(Wait):
        pass

    assert WaitForShipping.events == ("timeout",)
    assert step_key(WaitForShipping) == "wait_for_shipping"


def test_wait_for_event_waits():
    inst = running()
    assert WaitForEvent().execute(inst, None, inst.context) == Async()


def debug_instance():
    inst = Instance.new(OrderFlow, 2, {"items": [1, 2]}, "orderid::dbg").replace(status="running")
    inst = inst.activate_step(ValidateOrder).complete_step(
        ValidateOrder, "valid", {"item_count": 2}, timestamp=T0
    )
    inst = inst.activate_step(AsyncCharge).complete_step(
        AsyncCharge, "charged", timestamp=T0 + dt.timedelta(seconds=1)
    )
    return inst.activate_step(Debug)


def test_debug_logs_context_and_history_at_info(caplog):
    caplog.set_level(logging.INFO, logger="hephaestus.debug")
    inst = debug_instance()
    assert Debug().execute(inst, None, inst.context) == "done"
    [record] = caplog.records
    here = __name__
    assert record.name == "hephaestus.debug"
    assert record.levelno == logging.INFO
    assert record.getMessage().splitlines() == [
        "Debug orderid::dbg (samples:OrderFlow v2, running)",
        "  initial: {'items': [1, 2]}",
        "  steps: {'charge': {}, 'validate_order': {'item_count': 2}}",
        "  history:",
        f"    2024-05-17T12:30:45.123456+00:00 {here}:ValidateOrder -> valid {{'item_count': 2}}",
        f"    2024-05-17T12:30:46.123456+00:00 {here}:AsyncCharge -> charged",
    ]


def test_debug_logs_the_context_it_is_given(caplog):
    caplog.set_level(logging.INFO, logger="hephaestus.debug")
    inst = running({"a": 1})
    assert Debug().execute(inst, None, inst.context.put_step_result("x", {"y": 1})) == "done"
    message = caplog.records[0].getMessage()
    assert "  initial: {'a': 1}" in message
    assert "  steps: {'x': {'y': 1}}" in message
    assert "  history: (empty)" in message


def test_debug_logs_nothing_when_info_is_off(caplog):
    caplog.set_level(logging.WARNING, logger="hephaestus.debug")
    inst = debug_instance()
    assert Debug().execute(inst, None, inst.context) == "done"
    assert caplog.records == []


# -- wait_duration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"duration": 1, "unit": "second"}, dt.timedelta(seconds=1)),
        ({"duration": 90, "unit": "second"}, dt.timedelta(minutes=1, seconds=30)),
        ({"duration": 5, "unit": "minute"}, dt.timedelta(minutes=5)),
        ({"duration": 2, "unit": "hour"}, dt.timedelta(hours=2)),
        ({"duration": 3, "unit": "day"}, dt.timedelta(days=3)),
        ({"duration": 1, "unit": "day", "note": "ignored"}, dt.timedelta(days=1)),
        (types.MappingProxyType({"duration": 7, "unit": "minute"}), dt.timedelta(minutes=7)),
    ],
)
def test_wait_duration(config, expected):
    assert wait_duration(config) == expected


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        (None, TypeError, r"Wait config must be a mapping .*got NoneType"),
        ([("duration", 1)], TypeError, r"Wait config must be a mapping .*got list"),
        ({"unit": "second"}, ValueError, r"Wait config is missing 'duration'"),
        ({"duration": 1}, ValueError, r"Wait config is missing 'unit'"),
        ({}, ValueError, r"Wait config is missing 'duration'"),
        (
            {"duration": True, "unit": "second"},
            TypeError,
            r"Wait duration must be an int, got bool",
        ),
        (
            {"duration": 1.5, "unit": "second"},
            TypeError,
            r"Wait duration must be an int, got float",
        ),
        ({"duration": "5", "unit": "second"}, TypeError, r"Wait duration must be an int, got str"),
        ({"duration": None, "unit": "second"}, TypeError, r"must be an int, got NoneType"),
        ({"duration": 0, "unit": "second"}, ValueError, r"Wait duration must be > 0, got 0"),
        ({"duration": -5, "unit": "hour"}, ValueError, r"Wait duration must be > 0, got -5"),
        ({"duration": 1, "unit": "seconds"}, ValueError, r"Wait unit must be one of .*'seconds'"),
        ({"duration": 1, "unit": "week"}, ValueError, r"Wait unit must be one of .*'week'"),
        ({"duration": 1, "unit": "Second"}, ValueError, r"Wait unit must be one of"),
        ({"duration": 1, "unit": ""}, ValueError, r"Wait unit must be one of"),
        ({"duration": 1, "unit": None}, TypeError, r"Wait unit must be a str, got NoneType"),
        ({"duration": 1, "unit": 60}, TypeError, r"Wait unit must be a str, got int"),
    ],
)
def test_wait_duration_rejects_bad_configs(config, error, message):
    with pytest.raises(error, match=message):
        wait_duration(config)


def test_wait_unit_error_lists_the_units():
    with pytest.raises(ValueError, match="'second', 'minute', 'hour', 'day'"):
        wait_duration({"duration": 1, "unit": "fortnight"})


@pytest.mark.parametrize("duration", [10**9, 10**30])
def test_a_too_long_wait_is_an_overflow_error(duration):
    with pytest.raises(OverflowError, match=f"Wait duration {duration} day is too long"):
        wait_duration({"duration": duration, "unit": "day"})


# -- the module ----------------------------------------------------------------


def test_every_public_name_is_in_all():
    assert sorted(hephaestus.steps.__all__) == sorted(
        [
            "Async",
            "Backoff",
            "Debug",
            "Done",
            "Error",
            "Ok",
            "Retry",
            "Step",
            "Terminate",
            "StepResult",
            "StepReturn",
            "Wait",
            "WaitForEvent",
            "is_step_class",
            "normalize_result",
            "wait_duration",
        ]
    )
    for name in hephaestus.steps.__all__:
        assert hasattr(hephaestus.steps, name)
