"""`hephaestus.Context` (CONTRACT §3): initial data plus step results."""

import copy
import pickle
import types
from unittest import mock

import pytest
from hephaestus import Context, Instance
from samples import Pay, running


def test_new_creates_a_context_with_initial_data():
    ctx = Context.new({"order_id": 123, "items": ["a", "b"]})
    assert ctx.initial == {"order_id": 123, "items": ["a", "b"]}
    assert ctx.steps == {}


def test_new_with_empty_initial_data():
    ctx = Context.new({})
    assert ctx.initial == {}
    assert ctx.steps == {}


def test_constructor_with_initial_only():
    assert Context({"a": 1}) == Context.new({"a": 1})
    assert Context({"a": 1}, steps=None) == Context.new({"a": 1})
    assert Context({"a": 1}, None) == Context.new({"a": 1})


def test_constructor_with_steps():
    ctx = Context({"a": 1}, steps={"validate": {"valid": True}, "pay": {}})
    assert ctx.initial == {"a": 1}
    assert ctx.steps == {"validate": {"valid": True}, "pay": {}}


def test_constructor_accepts_keywords():
    ctx = Context(initial={"a": 1}, steps={"s": {"r": 1}})
    assert ctx == Context({"a": 1}, {"s": {"r": 1}})


def test_constructor_requires_initial():
    with pytest.raises(TypeError):
        Context()
    with pytest.raises(TypeError):
        Context.new()


@pytest.mark.parametrize("initial", [None, [], [("a", 1)], "a", 1, {1: "a"}], ids=repr)
def test_initial_must_be_a_dict_with_str_keys(initial):
    with pytest.raises(TypeError):
        Context.new(initial)
    with pytest.raises(TypeError):
        Context(initial)


@pytest.mark.parametrize(
    "steps", [[], "steps", {1: {}}, {"s": 1}, {"s": [1]}, {"s": None}], ids=repr
)
def test_steps_must_map_str_keys_to_dicts(steps):
    with pytest.raises(TypeError):
        Context({}, steps=steps)


def test_new_accepts_any_mapping():
    # CONTRACT §3: `Context.new(initial: Mapping[str, Any])`.
    assert Context.new(types.MappingProxyType({"a": 1})).initial == {"a": 1}


def test_initial_and_steps_are_fresh_dicts_each_read():
    ctx = Context({"a": [1]}, steps={"s": {"r": [2]}})
    assert ctx.initial is not ctx.initial
    assert ctx.steps is not ctx.steps
    assert ctx.steps["s"] is not ctx.steps["s"]
    ctx.initial["a"].append(9)
    ctx.initial["b"] = 2
    ctx.steps["s"]["r"].append(9)
    ctx.steps["t"] = {}
    assert ctx == Context({"a": [1]}, steps={"s": {"r": [2]}})
    assert type(ctx.initial) is dict
    assert type(ctx.steps) is dict


def test_inputs_are_copied():
    initial = {"a": [1]}
    steps = {"s": {"r": [2]}}
    ctx = Context(initial, steps)
    initial["a"].append(9)
    steps["s"]["r"].append(9)
    steps["t"] = {}
    assert ctx.initial == {"a": [1]}
    assert ctx.steps == {"s": {"r": [2]}}


# -- put_step_result ---------------------------------------------------------


def test_put_step_result_namespaces_the_result_by_step_key():
    ctx = Context.new({"order_id": 123}).put_step_result("validate", {"valid": True})
    assert ctx.steps == {"validate": {"valid": True}}


def test_put_step_result_returns_a_new_context_and_leaves_the_old_one():
    old = Context.new({"order_id": 123})
    new = old.put_step_result("validate", {"valid": True})
    assert old.steps == {}
    assert old == Context.new({"order_id": 123})
    assert new != old
    assert new is not old


def test_put_step_result_preserves_existing_results():
    ctx = Context.new({}).put_step_result("step_a", {"result": "a"})
    ctx = ctx.put_step_result("step_b", {"result": "b"})
    assert ctx.steps == {"step_a": {"result": "a"}, "step_b": {"result": "b"}}


def test_put_step_result_overwrites_an_existing_key():
    first = Context.new({}).put_step_result("step_a", {"result": "old", "extra": 1})
    second = first.put_step_result("step_a", {"result": "new"})
    assert second.steps == {"step_a": {"result": "new"}}
    assert first.steps == {"step_a": {"result": "old", "extra": 1}}


def test_put_step_result_does_not_modify_initial_data():
    ctx = Context.new({"order_id": 123, "validate": "initial"})
    ctx = ctx.put_step_result("validate", {"valid": True})
    assert ctx.initial == {"order_id": 123, "validate": "initial"}


def test_put_step_result_copies_the_result():
    result = {"items": [1]}
    ctx = Context.new({}).put_step_result("s", result)
    result["items"].append(2)
    assert ctx.steps == {"s": {"items": [1]}}


def test_put_step_result_accepts_an_empty_result():
    assert Context.new({}).put_step_result("s", {}).steps == {"s": {}}


@pytest.mark.parametrize("key", [1, None, b"s", ("s",)], ids=repr)
def test_put_step_result_rejects_a_non_str_key(key):
    with pytest.raises(TypeError):
        Context.new({}).put_step_result(key, {})


@pytest.mark.parametrize("result", [None, [], 1, "r", [("a", 1)], {1: 1}], ids=repr)
def test_put_step_result_rejects_a_result_that_is_not_a_str_keyed_dict(result):
    with pytest.raises(TypeError):
        Context.new({}).put_step_result("s", result)


def test_put_step_result_accepts_any_mapping():
    # CONTRACT §3: `.put_step_result(step_key: str, result: Mapping)`.
    ctx = Context.new({}).put_step_result("s", types.MappingProxyType({"a": 1}))
    assert ctx.steps == {"s": {"a": 1}}


# -- equality, repr, immutability, pickling ----------------------------------


def test_equality_is_by_value():
    a = Context({"x": 1, "y": [1, 2]}, steps={"s": {"r": 1}})
    b = Context({"y": (1, 2), "x": 1.0}, steps={"s": {"r": True}})
    assert a == b
    assert (a != b) is False


@pytest.mark.parametrize(
    "other",
    [
        Context({"x": 2}, steps={"s": {"r": 1}}),
        Context({"x": 1}, steps={"s": {"r": 2}}),
        Context({"x": 1}, steps={"t": {"r": 1}}),
        Context({"x": 1}),
        Context({"x": 1}, steps={"s": {"r": 1}, "t": {}}),
    ],
    ids=repr,
)
def test_contexts_that_differ_are_unequal(other):
    assert Context({"x": 1}, steps={"s": {"r": 1}}) != other


def test_initial_data_and_step_results_are_not_interchangeable():
    assert Context({"s": {"r": 1}}) != Context({}, steps={"s": {"r": 1}})


def test_equality_with_other_types_is_false():
    ctx = Context.new({"a": 1})
    assert ctx != {"a": 1}
    assert ctx != {"initial": {"a": 1}, "steps": {}}
    assert ctx != None  # noqa: E711


def test_equality_defers_to_the_other_operand_for_foreign_types():
    # `__eq__` should return NotImplemented for other types (see mock.ANY).
    ctx = Context.new({"a": 1})
    assert ctx == mock.ANY
    assert [ctx] == [mock.ANY]


def test_repr_shows_both_parts():
    ctx = Context({"a": 1}, steps={"validate": {"ok": True}})
    assert repr(ctx) == "Context(initial={'a': 1}, steps={'validate': {'ok': True}})"
    assert repr(Context.new({})) == "Context(initial={}, steps={})"


def test_is_immutable():
    ctx = Context.new({"a": 1})
    with pytest.raises(AttributeError):
        ctx.initial = {}
    with pytest.raises(AttributeError):
        ctx.steps = {}
    with pytest.raises(AttributeError):
        ctx.other = 1


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(protocol):
    ctx = Context({"a": [1, b"x", None], "n": float("nan")}, steps={"s": {"r": {"d": 1}}})
    loaded = pickle.loads(pickle.dumps(ctx, protocol=protocol))
    assert loaded == ctx
    assert type(loaded) is Context


def test_copy_and_deepcopy():
    ctx = Context({"a": [1]}, steps={"s": {"r": 1}})
    assert copy.copy(ctx) == ctx
    assert copy.deepcopy(ctx) == ctx


# -- nesting is counted from each value, wherever it sits -------------------------------


def nest(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def deepest(accepts) -> int:
    """The deepest list nesting ``accepts`` takes without raising ``ValueError``."""
    depth = 0
    while True:
        try:
            accepts(nest(depth + 1))
        except ValueError:
            return depth
        depth += 1


def test_step_results_nest_as_deep_as_initial_data():
    assert deepest(lambda v: Context({"v": v})) == deepest(
        lambda v: Context({}, steps={"k": {"v": v}})
    )
    assert deepest(lambda v: Context({"v": v})) == deepest(
        lambda v: Context.new({}).put_step_result("k", {"v": v})
    )


def test_step_configs_nest_as_deep_as_an_activated_config():
    limit = deepest(lambda v: running().activate_step(Pay, v))
    assert deepest(lambda v: running().replace(step_configs={Pay: v})) == limit


def test_a_loaded_instance_goes_back_through_context_and_replace():
    config_limit = deepest(lambda v: running().activate_step(Pay, v))
    result_limit = deepest(lambda v: Context({}, steps={"k": {"v": v}}))
    inst = running(context={}).activate_step(Pay, nest(config_limit))
    inst = inst.replace(context=Context({}, steps={"k": {"v": nest(result_limit)}}))
    loaded = Instance.from_json(inst.to_json())
    assert loaded == inst
    assert loaded.replace(step_configs=loaded.step_configs) == loaded
    rebuilt = Context(loaded.context.initial, steps=loaded.context.steps)
    assert rebuilt == loaded.context


def test_steps_and_step_configs_accept_any_mapping():
    steps = types.MappingProxyType({"pay": {"ok": True}})
    assert Context({}, steps=steps).steps == {"pay": {"ok": True}}
    configs = types.MappingProxyType({Pay: {"limit": 3}})
    assert running().replace(step_configs=configs).step_configs == {Pay: {"limit": 3}}
    with pytest.raises(TypeError, match="steps"):
        Context({}, steps=[("pay", {})])
    with pytest.raises(TypeError, match="step_configs"):
        running().replace(step_configs=[(Pay, 1)])
