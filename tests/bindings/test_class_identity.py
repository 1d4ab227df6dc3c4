"""Classes in, the same classes out (CONTRACT §5 "Serialization and
identity"), and `hephaestus.step_key`."""

import gc
import json
import weakref

import hephaestus
import pytest
from hephaestus import Instance, step_key
from samples import (
    T0,
    HTTPClient,
    Keyed,
    NoneKeyed,
    OrderFlow,
    Outer,
    Pay,
    RejectOrder,
    Ship,
    ValidateOrder,
    make_local_step,
    make_twin,
    new_instance,
    running,
)


def round_trips(inst):
    return [
        inst,
        Instance.from_json(inst.to_json()),
        Instance.from_bytes(inst.to_bytes()),
    ]


def test_every_field_gives_back_the_very_classes_passed_in():
    inst = (
        running(workflow=OrderFlow)
        .activate_step(Pay, {"c": 1})
        .activate_step(Ship)
        .wait_step(Ship)
        .activate_step(ValidateOrder)
        .complete_step(ValidateOrder, "valid", timestamp=T0)
        .skip_step(RejectOrder)
    )
    for loaded in round_trips(inst):
        assert loaded.workflow is OrderFlow
        assert loaded.current_step is Ship
        assert {id(c) for c in loaded.active_steps} == {id(Pay), id(Ship)}
        assert {id(c) for c in loaded.waiting_steps} == {id(Ship)}
        assert {id(c) for c in loaded.completed_steps} == {id(ValidateOrder)}
        assert {id(c) for c in loaded.skipped_steps} == {id(RejectOrder)}
        assert [id(c) for c in loaded.step_configs] == [id(Pay)]
        assert loaded.execution_history[0].step_ref is ValidateOrder


def test_nested_classes_keep_their_identity():
    inst = running().activate_step(Outer.Inner).skip_step(Ship)
    for loaded in round_trips(inst):
        assert loaded.active_steps == {Outer.Inner}
        assert loaded.skipped_steps == {Ship}


def test_any_class_works_in_memory_but_only_steps_load_where_a_step_belongs():
    inst = running().activate_step(dict).skip_step(json.JSONDecoder)
    assert inst.active_steps == {dict}
    assert inst.skipped_steps == {json.JSONDecoder}
    documents = ((Instance.from_json, inst.to_json()), (Instance.from_bytes, inst.to_bytes()))
    for load, data in documents:
        with pytest.raises(hephaestus.SerializationError, match=r"builtins:dict.*not a Step"):
            load(data)


def test_local_classes_keep_their_identity_while_alive():
    first = make_local_step("Alpha")
    second = make_local_step("Beta")
    inst = running().activate_step(first).activate_step(second, "cfg")
    for loaded in round_trips(inst):
        assert loaded.active_steps == {first, second}
        assert loaded.step_configs == {second: "cfg"}


def test_two_live_classes_with_the_same_name_stay_distinct():
    first = make_twin("TwinA")
    second = make_twin("TwinA")
    assert first is not second
    assert (first.__module__, first.__qualname__) == (second.__module__, second.__qualname__)
    inst = running().activate_step(first, "one").activate_step(second, "two")
    inst = inst.complete_step(first, "done", {"who": "first"}, timestamp=T0)
    for loaded in round_trips(inst):
        assert loaded.completed_steps == {first}
        assert loaded.active_steps == {second}
        assert loaded.is_completed(first)
        assert not loaded.is_completed(second)
        assert loaded.is_active(second)
        assert not loaded.is_active(first)
        assert loaded.step_configs == {second: "two"}
        assert loaded.execution_history[0].step_ref is first


def test_the_second_class_with_a_taken_name_is_stored_with_a_suffix():
    first = make_twin("TwinB")
    second = make_twin("TwinB")
    third = make_twin("TwinB")
    doc = json.loads(running().activate_step(first).to_json())
    assert doc["active_steps"] == ["samples:TwinB"]
    doc = json.loads(running().activate_step(second).activate_step(third).to_json())
    assert doc["active_steps"] == ["samples:TwinB#2", "samples:TwinB#3"]


def test_a_factory_made_class_does_not_shadow_the_module_level_one():
    assert step_key(Pay) == "pay"  # Pay is known first
    impostor = make_twin("Pay")
    inst = running().activate_step(Pay).activate_step(impostor, 1)
    doc = json.loads(inst.to_json())
    assert "samples:Pay" in doc["active_steps"]
    assert any(name.startswith("samples:Pay#") for name in doc["active_steps"])
    for loaded in round_trips(inst):
        assert loaded.active_steps == {Pay, impostor}
        assert loaded.step_configs == {impostor: 1}


def test_equal_names_do_not_make_equal_instances():
    first = make_twin("TwinC")
    second = make_twin("TwinC")
    assert running().activate_step(first) != running().activate_step(second)
    assert new_instance(workflow=first) != new_instance(workflow=second)


def test_classes_are_not_kept_alive_by_instances_or_the_registry():
    import weakref

    step = make_twin("Transient")
    ref = weakref.ref(step)
    text = running().activate_step(step).to_json()
    assert "samples:Transient" in text
    del step
    gc.collect()
    assert ref() is None


def test_a_new_class_reusing_a_dead_classes_name_and_address_is_seen_afresh():
    # The registry caches per class; a later class (possibly at the same
    # address) must get its own step key and resolve to itself.
    for i in range(30):
        cls = type("Reused", (hephaestus.Step,), {"__module__": "samples", "step_key": f"key{i}"})
        assert step_key(cls) == f"key{i}"
        inst = running().activate_step(cls).complete_step(cls, "done", {"i": i})
        assert inst.context.steps == {f"key{i}": {"i": i}}
        assert inst.completed_steps == {cls}
        assert Instance.from_json(inst.to_json()).completed_steps == {cls}
        del cls, inst
        gc.collect()


# -- step_key ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("ValidateOrder", "validate_order"),
        ("HTTPClient", "http_client"),
        ("Pay", "pay"),
        ("A", "a"),
        ("ABC", "abc"),
        ("FooBar", "foo_bar"),
        ("FooBAR", "foo_bar"),
        ("FOOBar", "foo_bar"),
        ("ABCd", "ab_cd"),
        ("Step1", "step1"),
        ("Step2Done", "step2_done"),
        ("V2Flow", "v2_flow"),
        ("HTTP2Client", "http2_client"),
        ("getHTTP", "get_http"),
        ("already_snake", "already_snake"),
        ("lower", "lower"),
    ],
)
def test_default_step_key_is_the_snake_cased_class_name(name, key):
    assert step_key(type(name, (), {})) == key


def test_step_key_of_sample_classes():
    assert step_key(ValidateOrder) == "validate_order"
    assert step_key(HTTPClient) == "http_client"
    assert step_key(Outer.Inner) == "inner"
    assert hephaestus.step_key is step_key


def test_step_key_attribute_wins():
    assert step_key(Keyed) == "validate"
    cls = type("Anything", (), {"step_key": "custom_key"})
    assert step_key(cls) == "custom_key"


def test_step_key_attribute_none_means_the_default():
    assert step_key(NoneKeyed) == "none_keyed"


@pytest.mark.parametrize(("value", "error"), [(5, TypeError), (b"k", TypeError), ("", ValueError)])
def test_invalid_step_key_attribute_raises(value, error):
    cls = type("BadKey", (), {"step_key": value})
    with pytest.raises(error, match="step_key"):
        step_key(cls)


def test_invalid_step_key_attribute_is_refused_when_the_step_is_used():
    cls = type("BadKeyUsed", (), {"step_key": 5})
    with pytest.raises(TypeError, match="step_key"):
        running().activate_step(cls)


@pytest.mark.parametrize("value", ["ValidateOrder", ValidateOrder(), None, 1], ids=repr)
def test_step_key_requires_a_class(value):
    with pytest.raises(TypeError):
        step_key(value)


def test_results_are_stored_under_the_step_key():
    inst = running().activate_step(Keyed).complete_step(Keyed, "ok", {"v": 1})
    assert inst.context.steps == {"validate": {"v": 1}}


# -- a value keeps its own classes alive -----------------------------------------------


def make_flow(tag: str = "w") -> type:
    """A workflow made in a function: nothing but its values refers to it."""

    class First(hephaestus.Step):
        events = ("next",)

        def execute(self, instance, config, context):
            return "next"

    class Flow(hephaestus.Workflow, unique=hephaestus.Unique(tag)):
        start = First
        transitions = {First: {"next": hephaestus.Done}}

    return Flow


def test_an_instance_keeps_its_workflow_and_steps_alive():
    inst = hephaestus.engine.run(Instance.new(make_flow(), 1, {}, "w::1"))
    gc.collect()
    assert inst.workflow.__qualname__ == "make_flow.<locals>.Flow"
    assert [e.step_ref.__name__ for e in inst.execution_history] == ["First", "Done"]
    assert {s.__name__ for s in inst.completed_steps} == {"First", "Done"}
    entries = inst.execution_history
    del inst
    gc.collect()
    assert entries[0].step_ref.__name__ == "First", "an entry keeps its step"


def test_factory_made_workflows_are_freed_with_their_instances():
    refs = []
    for i in range(200):
        flow = make_flow()
        inst = hephaestus.engine.run(Instance.new(flow, 1, {"i": i}, f"w::{i}"))
        refs.append(weakref.ref(flow))
        assert inst.status == "completed"
        del flow, inst
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0, "no class outlives its values"


def test_an_instance_and_its_workflow_in_a_cycle_are_collected():
    flow = make_flow()
    flow.example = Instance.new(flow, 1, {}, "w::cycle")  # class -> instance -> class
    ref = weakref.ref(flow)
    del flow
    gc.collect()
    assert ref() is None
