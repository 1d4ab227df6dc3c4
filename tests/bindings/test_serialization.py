"""Serialization of instances (CONTRACT §5 "Serialization and identity"):
JSON, the binary form, pickle, the format version, class resolution on
load, and refusal of malformed input."""

import builtins
import copy
import datetime as dt
import gc
import json
import math
import pickle
import sys

import pytest
from hephaestus import FORMAT_VERSION, Instance, SerializationError, Status
from samples import (
    T0,
    ChargeCard,
    OrderFlow,
    Outer,
    Pay,
    RefundFlow,
    ReserveStock,
    Ship,
    ValidateOrder,
    make_local_step,
    new_instance,
    rich_instance,
    running,
)

FORMAT = "hephaestus.instance"


def doc_of(inst):
    return json.loads(inst.to_json())


def from_doc(doc):
    return Instance.from_json(json.dumps(doc))


def bytes_header(version=FORMAT_VERSION):
    """The binary form starts with the marker (a 19-byte MessagePack str)
    followed by the version (a positive fixint)."""
    return b"\xb3" + FORMAT.encode() + bytes([version])


def msgpack_str(text):
    encoded = text.encode()
    if len(encoded) < 32:
        return bytes([0xA0 | len(encoded)]) + encoded
    assert len(encoded) < 256
    return b"\xd9" + bytes([len(encoded)]) + encoded


# -- round trips -------------------------------------------------------------


def test_to_json_returns_str_and_to_bytes_returns_bytes():
    inst = rich_instance()
    assert type(inst.to_json()) is str
    assert type(inst.to_bytes()) is bytes


def test_json_is_standard_json_even_with_nan_and_bytes():
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    doc = json.loads(rich_instance().to_json(), parse_constant=no_constants)
    assert isinstance(doc, dict)


def test_format_marker_and_version_come_first():
    doc = doc_of(rich_instance())
    assert FORMAT_VERSION == 2
    assert list(doc)[:2] == ["format", "format_version"]
    assert doc["format"] == FORMAT
    assert doc["format_version"] == FORMAT_VERSION
    assert rich_instance().to_bytes().find(bytes_header()) in range(0, 8)


def test_classes_are_written_as_module_and_qualname():
    doc = doc_of(rich_instance().replace(current_step=Outer.Inner))
    assert doc["workflow"] == "samples:OrderFlow"
    assert doc["current_step"] == "samples:Outer.Inner"
    assert "samples:ValidateOrder" in doc["completed_steps"]
    assert "samples:Ship" in doc["waiting_steps"]
    assert "samples:RejectOrder" in doc["skipped_steps"]
    assert "samples:ReserveStock" in doc["step_configs"]
    assert doc["execution_history"][0]["step"] == "samples:ValidateOrder"


@pytest.mark.parametrize("how", ["json", "bytes"])
def test_round_trip_keeps_every_field(how):
    inst = rich_instance()
    loaded = (
        Instance.from_json(inst.to_json())
        if how == "json"
        else Instance.from_bytes(inst.to_bytes())
    )
    assert loaded == inst
    assert loaded.to_json() == inst.to_json()
    assert loaded.to_bytes() == inst.to_bytes()
    assert loaded.id == inst.id
    assert loaded.workflow is OrderFlow
    assert loaded.workflow_version == 2
    assert loaded.status is Status.RUNNING
    assert loaded.current_step is Ship
    assert loaded.active_steps == {ReserveStock, Ship}
    assert loaded.waiting_steps == {Ship}
    assert loaded.completed_steps == {ValidateOrder, ChargeCard}
    assert loaded.step_configs == {ReserveStock: [1, 2]}
    assert loaded.runtime_metadata == {"attempt": 2}
    assert loaded.telemetry_metadata == {"request_id": "abc-123"}
    assert loaded.telemetry_start_time == 123_456_789
    assert loaded.execution_history == inst.execution_history
    assert loaded.execution_history[1].context_updates is None
    assert loaded.context.steps == {"validate_order": {"item_count": 3}, "charge_card": {}}
    initial = loaded.context.initial
    assert math.isnan(initial["$price"])
    assert initial["items"][3] == b"\x00\xff"
    assert initial["when"] == dt.datetime(2024, 1, 2, 3, 4, 5, 6)
    assert initial["nested"]["t"] == [1, [2, 3]]


@pytest.mark.parametrize("how", ["json", "bytes"])
def test_round_trip_of_a_failed_instance_with_error(how):
    inst = running().replace(
        status=Status.FAILED, error={"kind": "cancelled", "reason": None, "at": T0}
    )
    text = inst.to_json() if how == "json" else inst.to_bytes()
    loaded = Instance.from_json(text) if how == "json" else Instance.from_bytes(text)
    assert loaded == inst
    assert loaded.error == {"kind": "cancelled", "reason": None, "at": T0}
    assert loaded.is_terminal


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.WAITING])
def test_round_trip_of_each_status(status):
    inst = new_instance().replace(status=status)
    assert Instance.from_json(inst.to_json()).status is status
    assert Instance.from_bytes(inst.to_bytes()).status is status


def test_a_loaded_instance_can_go_on():
    loaded = Instance.from_json(rich_instance().to_json())
    done = loaded.complete_step(ReserveStock, "reserved", {"ok": True}, timestamp=T0)
    expected = rich_instance().complete_step(ReserveStock, "reserved", {"ok": True}, timestamp=T0)
    assert done == expected
    assert done.context.steps["reserve_stock"] == {"ok": True}


def test_binary_form_is_smaller_than_json():
    inst = rich_instance()
    assert len(inst.to_bytes()) < len(inst.to_json().encode())


def test_equal_instances_serialize_identically_whatever_the_order_of_operations():
    a = running().activate_step(Pay, 1).activate_step(Ship, 2).activate_step(ChargeCard)
    b = running().activate_step(ChargeCard).activate_step(Ship, 2).activate_step(Pay, 1)
    a = a.replace(runtime_metadata={"x": 1, "y": 2}).skip_step(ValidateOrder).skip_step(OrderFlow)
    b = b.replace(runtime_metadata={"y": 2, "x": 1}).skip_step(OrderFlow).skip_step(ValidateOrder)
    assert a == b
    assert a.to_json() == b.to_json()
    assert a.to_bytes() == b.to_bytes()


def test_serialization_is_deterministic():
    assert rich_instance().to_json() == rich_instance().to_json()
    assert rich_instance().to_bytes() == rich_instance().to_bytes()


def test_user_keys_that_look_like_tags_stay_plain_data():
    context = {
        "$bytes": "AAAA",
        "$datetime": "2024-01-01T00:00:00.000000",
        "$float": "nan",
        "$$": 1,
        "$": 2,
        "nested": {"$bytes": "AAAA"},
        "list": [{"$float": "inf"}],
    }
    inst = new_instance(context)
    for loaded in (Instance.from_json(inst.to_json()), Instance.from_bytes(inst.to_bytes())):
        assert loaded.context.initial == context
        assert type(loaded.context.initial["nested"]["$bytes"]) is str


# -- pickle and copy ---------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(protocol):
    inst = rich_instance()
    loaded = pickle.loads(pickle.dumps(inst, protocol=protocol))
    assert type(loaded) is Instance
    assert loaded == inst
    assert loaded.workflow is OrderFlow
    assert loaded.active_steps == {ReserveStock, Ship}


def test_pickle_of_containers_holding_instances_contexts_and_entries():
    inst = rich_instance()
    payload = {"inst": inst, "ctx": inst.context, "history": inst.execution_history}
    loaded = pickle.loads(pickle.dumps(payload))
    assert loaded == payload


def test_copy_and_deepcopy():
    inst = rich_instance()
    assert copy.copy(inst) == inst
    assert copy.deepcopy(inst) == inst
    assert copy.deepcopy([inst])[0] == inst


# -- argument types ----------------------------------------------------------


@pytest.mark.parametrize("data", [b"{}", None, 1, {"format": FORMAT}, ["x"]], ids=repr)
def test_from_json_requires_a_str(data):
    with pytest.raises(TypeError):
        Instance.from_json(data)


@pytest.mark.parametrize("data", ["\x00", None, 1, ["x"], "{}"], ids=repr)
def test_from_bytes_requires_bytes(data):
    with pytest.raises(TypeError):
        Instance.from_bytes(data)


def test_from_json_and_from_bytes_are_static():
    text = rich_instance().to_json()
    assert rich_instance().from_json(text) == rich_instance()
    assert Instance.from_bytes(rich_instance().to_bytes()) == rich_instance()


# -- format version and marker -----------------------------------------------


@pytest.mark.parametrize("version", [0, 3, 999])
def test_other_format_version_in_json_is_not_supported(version):
    doc = doc_of(rich_instance())
    doc["format_version"] = version
    with pytest.raises(SerializationError, match="not supported") as excinfo:
        from_doc(doc)
    assert str(version) in str(excinfo.value)


def test_other_format_version_with_a_different_shape_is_reported_as_such():
    doc = {"format": FORMAT, "format_version": 3, "something": "new", "id": [1]}
    with pytest.raises(SerializationError, match="not supported"):
        from_doc(doc)


@pytest.mark.parametrize("version", [0, 3, 99])
def test_other_format_version_in_bytes_is_not_supported(version):
    data = rich_instance().to_bytes()
    assert data.count(bytes_header()) == 1
    changed = data.replace(bytes_header(), bytes_header(version))
    with pytest.raises(SerializationError, match="not supported"):
        Instance.from_bytes(changed)


def test_version_1_documents_still_load():
    """Version 1 (before ForEach and Repeat) had no ``loops`` field, no
    entry iterations and only dict results; this build reads it."""
    inst = rich_instance()
    doc = doc_of(inst)
    assert doc.pop("loops") == {}
    doc["format_version"] = 1
    assert from_doc(doc) == inst
    data = inst.to_bytes()
    # The binary document is an array of 20 fields ending in an empty map.
    assert data.startswith(b"\xdc\x00\x14")
    assert data.endswith(b"\x80")
    v1 = b"\xdc\x00\x13" + data[3:-1].replace(bytes_header(), bytes_header(1), 1)
    assert Instance.from_bytes(v1) == inst


@pytest.mark.parametrize("marker", ["hephaestus.other", "", "HEPHAESTUS.INSTANCE"])
def test_wrong_format_marker_is_refused(marker):
    doc = doc_of(rich_instance())
    doc["format"] = marker
    with pytest.raises(SerializationError):
        from_doc(doc)


def test_serialization_error_is_a_value_error():
    with pytest.raises(ValueError, match="cannot read instance"):
        Instance.from_json("garbage")


# -- malformed input ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "garbage",
        "{",
        "{}",
        "[]",
        "null",
        "1",
        '"hephaestus.instance"',
        '{"format": "hephaestus.instance"}',
        '{"format": "hephaestus.instance", "format_version": 1}',
        '{"format_version": 1}',
        "[" * 100_000,
        "{" * 100_000,
        '{"a":' * 100_000,
    ],
    ids=lambda t: repr(t[:30]),
)
def test_garbage_json_raises_serialization_error(text):
    with pytest.raises(SerializationError):
        Instance.from_json(text)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\xc1",  # never used
        b"\x90",  # empty array
        b"\x80",  # empty map
        b"\xdc\xff\xff",  # truncated array16
        b"\xdd\xff\xff\xff\xff",  # array32 claiming 4 billion items
        b"\xdf\xff\xff\xff\xff",  # map32 claiming 4 billion entries
        b"\xdb\xff\xff\xff\xff",  # str32 claiming 4 GiB
        b"\xc6\xff\xff\xff\xff",  # bin32 claiming 4 GiB
        b"\x91" * 100_000,  # deep nesting
        b"\x81\xa1a" * 100_000,  # deep map nesting
        rich_instance().to_json().encode(),
    ],
    ids=lambda d: repr(d[:12]),
)
def test_garbage_bytes_raise_serialization_error(data):
    with pytest.raises(SerializationError):
        Instance.from_bytes(data)


def test_truncated_json_raises_serialization_error():
    text = rich_instance().to_json()
    for cut in sorted({0, 1, 2, len(text) // 2, len(text) - 1, *range(0, len(text), 23)}):
        with pytest.raises(SerializationError):
            Instance.from_json(text[:cut])


def test_truncated_bytes_raise_serialization_error():
    data = rich_instance().to_bytes()
    for cut in sorted({0, 1, 2, len(data) // 2, len(data) - 1, *range(0, len(data), 7)}):
        with pytest.raises(SerializationError):
            Instance.from_bytes(data[:cut])


@pytest.mark.parametrize("extra", ["{}", "x", "]", "null", " 1"], ids=repr)
def test_trailing_data_after_the_json_document_is_refused(extra):
    with pytest.raises(SerializationError):
        Instance.from_json(rich_instance().to_json() + extra)


def test_trailing_whitespace_after_the_json_document_is_fine():
    assert Instance.from_json(rich_instance().to_json() + " \n\t") == rich_instance()


@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", b"\x90", b"\xff\xff"], ids=repr)
def test_trailing_data_after_the_binary_document_is_refused(extra):
    with pytest.raises(SerializationError):
        Instance.from_bytes(rich_instance().to_bytes() + extra)


def _set(path, value):
    def change(doc):
        *parents, last = path
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value

    return change


def _delete(path):
    def change(doc):
        *parents, last = path
        target = doc
        for key in parents:
            target = target[key]
        del target[last]

    return change


MALFORMED = {
    # wrong types and values
    "id int": _set(["id"], 1),
    "id null": _set(["id"], None),
    "id empty": _set(["id"], ""),
    "workflow int": _set(["workflow"], 1),
    "workflow without colon": _set(["workflow"], "OrderFlow"),
    "workflow empty qualname": _set(["workflow"], "samples:"),
    "workflow_version 0": _set(["workflow_version"], 0),
    "workflow_version -1": _set(["workflow_version"], -1),
    "workflow_version str": _set(["workflow_version"], "1"),
    "workflow_version float": _set(["workflow_version"], 1.5),
    "workflow_version bool": _set(["workflow_version"], True),
    "workflow_version 2**32": _set(["workflow_version"], 2**32),
    "current_step int": _set(["current_step"], 1),
    "status unknown": _set(["status"], "sleeping"),
    "status upper case": _set(["status"], "RUNNING"),
    "status int": _set(["status"], 1),
    "context list": _set(["context"], []),
    "context without steps": _delete(["context", "steps"]),
    "context extra key": _set(["context", "extra"], {}),
    "initial list": _set(["context", "initial"], []),
    "step result not a dict": _set(["context", "steps", "validate_order"], 1),
    "step_configs list": _set(["step_configs"], []),
    "step_configs bad class name": _set(["step_configs", "nocolon"], 1),
    "active_steps str": _set(["active_steps"], "samples:Pay"),
    "active_steps ints": _set(["active_steps"], [1]),
    "runtime_metadata list": _set(["runtime_metadata"], []),
    "telemetry_metadata null": _set(["telemetry_metadata"], None),
    "telemetry_metadata list": _set(["telemetry_metadata"], []),
    "telemetry_start_time str": _set(["telemetry_start_time"], "1"),
    "telemetry_start_time float": _set(["telemetry_start_time"], 1.5),
    "telemetry_start_time 2**64": _set(["telemetry_start_time"], 2**64),
    "history dict": _set(["execution_history"], {}),
    "history item int": _set(["execution_history", 0], 1),
    "history item missing event": _delete(["execution_history", 0, "event"]),
    "history item extra field": _set(["execution_history", 0, "extra"], 1),
    "history empty event": _set(["execution_history", 0, "event"], ""),
    "history bad timestamp": _set(["execution_history", 0, "timestamp"], "yesterday"),
    "history timestamp int": _set(["execution_history", 0, "timestamp"], 1),
    "history updates list": _set(["execution_history", 0, "context_updates"], []),
    "error str": _set(["error"], "boom"),
    "error list": _set(["error"], []),
    # bad value encodings
    "bad $float": _set(["context", "initial", "x"], {"$float": "bogus"}),
    "bad $bytes": _set(["context", "initial", "x"], {"$bytes": "!!!"}),
    "$bytes not str": _set(["context", "initial", "x"], {"$bytes": 1}),
    "bad $datetime": _set(["context", "initial", "x"], {"$datetime": "garbage"}),
    "$datetime bad month": _set(
        ["context", "initial", "x"], {"$datetime": "2024-13-01T00:00:00.000000"}
    ),
    "unknown tag": _set(["context", "initial", "x"], {"$other": 1}),
    "int beyond i64": _set(["context", "initial", "x"], 2**64 - 1),
    "value nested too deep": _set(["context", "initial", "x"], json.loads("[" * 101 + "]" * 101)),
    # missing and unknown fields
    "unknown field": _set(["extra"], 1),
    "missing id": _delete(["id"]),
    "missing execution_history": _delete(["execution_history"]),
    # broken invariants
    "active and completed": _set(["completed_steps"], ["samples:Ship", "samples:ValidateOrder"]),
    "active and skipped": _set(["skipped_steps"], ["samples:ReserveStock"]),
    "waiting not active": _set(["waiting_steps"], ["samples:Pay", "samples:Ship"]),
    "status waiting but a step runs": _set(["status"], "waiting"),
    "completed with active steps": _set(["status"], "completed"),
    "failed with active steps": _set(["status"], "failed"),
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_document_raises_serialization_error(change):
    doc = doc_of(rich_instance())
    change(doc)
    with pytest.raises(SerializationError):
        from_doc(doc)


@pytest.mark.parametrize(
    "path",
    [
        ["current_step"],
        ["telemetry_start_time"],
        ["error"],
        ["execution_history", 0, "context_updates"],
    ],
    ids=lambda p: "/".join(map(str, p)),
)
def test_missing_optional_field_raises_serialization_error(path):
    # The format is strict (unknown fields are refused); a document that lacks
    # a field this build always writes is malformed too, not silently None.
    doc = doc_of(rich_instance())
    _delete(path)(doc)
    with pytest.raises(SerializationError):
        from_doc(doc)


def test_running_status_when_every_active_step_waits_is_refused():
    doc = doc_of(running().activate_step(Pay).wait_step(Pay))
    assert doc["status"] == "waiting"
    doc["status"] = "running"
    with pytest.raises(SerializationError):
        from_doc(doc)


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("top level", '"id"'),
        ("initial", '"$$price"'),
        ("context steps", '"validate_order"'),
        ("step_configs", '"samples:ReserveStock"'),
        ("runtime_metadata", '"attempt"'),
        ("telemetry_metadata", '"request_id"'),
        ("error", '"kind"'),
    ],
)
def test_duplicate_keys_raise_serialization_error(where, key):
    inst = rich_instance().replace(
        error={"kind": "x"}, status=Status.FAILED, active_steps=[], waiting_steps=[]
    )
    text = inst.to_json()
    doc = json.loads(text)
    assert text.count(key + ":") == 1, where
    # Repeat the key with the same value right after itself.
    start = text.index(key + ":")
    decoder = json.JSONDecoder()
    _, end = decoder.raw_decode(text, start + len(key) + 1)
    pair = text[start:end]
    duplicated = text[:end] + "," + pair + text[end:]
    assert json.loads(duplicated) == doc  # still valid JSON to Python
    with pytest.raises(SerializationError, match="duplicate"):
        Instance.from_json(duplicated)


def test_lone_surrogate_in_json_text_raises_serialization_error():
    with pytest.raises(SerializationError):
        Instance.from_json('{"format": "\ud800"}')


# -- class resolution on load ------------------------------------------------

UNRESOLVABLE = {
    "module missing": "no_such_module_hx:OrderFlow",
    "attribute missing": "samples:NoSuchClass",
    "nested attribute missing": "samples:Outer.Missing",
    "defined in a function": "samples:make_local_step.<locals>.NeverMade",
    "not a class": "samples:not_a_class",
    "module attribute not a class": "samples:T0",
}

LOCATIONS = {
    "workflow": lambda doc, name: doc.update(workflow=name),
    "current_step": lambda doc, name: doc.update(current_step=name),
    "active step": lambda doc, name: doc["active_steps"].append(name),
    "completed step": lambda doc, name: doc["completed_steps"].append(name),
    "skipped step": lambda doc, name: doc["skipped_steps"].append(name),
    "step config": lambda doc, name: doc["step_configs"].update({name: 1}),
    "history step": lambda doc, name: doc["execution_history"][0].update(step=name),
}


@pytest.mark.parametrize("location", LOCATIONS.values(), ids=LOCATIONS.keys())
@pytest.mark.parametrize("name", UNRESOLVABLE.values(), ids=UNRESOLVABLE.keys())
def test_unresolvable_class_raises_serialization_error_naming_it(name, location):
    doc = doc_of(rich_instance())
    location(doc, name)
    with pytest.raises(SerializationError) as excinfo:
        from_doc(doc)
    assert name in str(excinfo.value)


@pytest.mark.parametrize("name", UNRESOLVABLE.values(), ids=UNRESOLVABLE.keys())
def test_unresolvable_class_in_bytes_raises_serialization_error_naming_it(name):
    # Swap the workflow's name in the binary form (MessagePack strings).
    data = rich_instance().to_bytes()
    old = msgpack_str("samples:OrderFlow")
    new = msgpack_str(name)
    assert data.count(old) == 1
    with pytest.raises(SerializationError) as excinfo:
        Instance.from_bytes(data.replace(old, new))
    assert name in str(excinfo.value)


def test_local_class_round_trips_while_alive_and_fails_clearly_once_gone():
    step = make_local_step("Ephemeral")
    text = running().activate_step(step, {"a": 1}).to_json()
    assert "samples:make_local_step.<locals>.Ephemeral" in text
    assert Instance.from_json(text).active_steps == {step}
    del step
    gc.collect()
    with pytest.raises(SerializationError, match="Ephemeral") as excinfo:
        Instance.from_json(text)
    assert "function" in str(excinfo.value) or "<locals>" in str(excinfo.value)


def test_classes_resolve_among_imported_modules_to_the_same_objects():
    doc = doc_of(new_instance())
    doc["workflow"] = "samples:RefundFlow"
    doc["skipped_steps"] = ["samples:Outer.Inner", "samples:Pay"]
    loaded = from_doc(doc)
    assert loaded.workflow is RefundFlow
    assert loaded.skipped_steps == {Outer.Inner, Pay}


# -- reading data never imports a module unless asked ---------------------------------

PROBE_MODULE = """
import pathlib
pathlib.Path(__file__).with_suffix(".imported").write_text("yes")
from hephaestus import Done, Step, Unique, Workflow

class Go(Step):
    events = ("go",)

class Flow(Workflow, unique=Unique("probe")):
    start = Go
    transitions = {Go: {"go": Done}}
"""


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """A module that records being imported, on ``sys.path`` but not imported."""
    name = f"heph_probe_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(PROBE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, tmp_path / f"{name}.imported"
    sys.modules.pop(name, None)


def doc_naming(module: str) -> dict:
    doc = doc_of(new_instance())
    doc["workflow"] = f"{module}:Flow"
    doc["active_steps"] = [f"{module}:Go"]
    return doc


def test_loading_does_not_import_the_modules_a_document_names(probe_module):
    name, marker = probe_module
    data = new_instance().to_bytes()
    data = data.replace(msgpack_str("samples:OrderFlow"), msgpack_str(f"{name}:Flow"))
    for load in (lambda: from_doc(doc_naming(name)), lambda: Instance.from_bytes(data)):
        with pytest.raises(SerializationError, match=r"not imported.*allow_import=True") as excinfo:
            load()
        assert f"{name}:Flow" in str(excinfo.value)
    assert name not in sys.modules
    assert not marker.exists(), "the module's code never ran"


def test_a_module_named_by_a_hostile_document_is_not_imported():
    doc = doc_of(new_instance())
    doc["workflow"] = "antigravity:X"
    had = "antigravity" in sys.modules
    with pytest.raises(SerializationError, match="antigravity"):
        from_doc(doc)
    assert ("antigravity" in sys.modules) == had


def test_allow_import_imports_the_modules_a_document_names(probe_module):
    name, marker = probe_module
    text = json.dumps(doc_naming(name))
    loaded = Instance.from_json(text, allow_import=True)
    assert marker.exists()
    module = sys.modules[name]
    assert loaded.workflow is module.Flow
    assert loaded.active_steps == {module.Go}
    again = Instance.from_bytes(loaded.to_bytes())  # now imported: no opt-in needed
    assert again == loaded


def test_pickle_imports_like_unpickling_any_class(probe_module):
    name, _ = probe_module
    loaded = Instance.from_json(json.dumps(doc_naming(name)), allow_import=True)
    data = pickle.dumps(loaded)
    del sys.modules[name]
    assert pickle.loads(data).workflow.__module__ == name


@pytest.mark.parametrize(
    ("location", "name", "expected"),
    [
        ("workflow", "samples:Ship", "not a Workflow subclass"),
        ("workflow", "json:JSONDecoder", "not a Workflow subclass"),
        ("step", "samples:OrderFlow", "not a Step subclass"),
        ("step", "collections:OrderedDict", "not a Step subclass"),
    ],
)
def test_only_workflows_load_as_workflows_and_steps_as_steps(location, name, expected):
    doc = doc_of(new_instance())
    if location == "workflow":
        doc["workflow"] = name
    else:
        doc["active_steps"] = [name]
    with pytest.raises(SerializationError, match=expected):
        from_doc(doc)


RAISING_MODULE = """
raise {error}("while importing")
"""


@pytest.mark.parametrize("error", ["KeyboardInterrupt", "SystemExit", "MemoryError"])
def test_a_base_exception_while_importing_is_not_turned_into_a_serialization_error(
    error, tmp_path, monkeypatch
):
    name = f"heph_raising_{error.lower()}"
    (tmp_path / f"{name}.py").write_text(RAISING_MODULE.format(error=error))
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = doc_of(new_instance())
    doc["workflow"] = f"{name}:Flow"
    with pytest.raises(getattr(builtins, error)):
        Instance.from_json(json.dumps(doc), allow_import=True)
    sys.modules.pop(name, None)


def test_an_exception_while_importing_is_a_serialization_error(tmp_path, monkeypatch):
    name = "heph_raising_valueerror"
    (tmp_path / f"{name}.py").write_text(RAISING_MODULE.format(error="ValueError"))
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = doc_of(new_instance())
    doc["workflow"] = f"{name}:Flow"
    with pytest.raises(SerializationError, match="importing its module failed"):
        Instance.from_json(json.dumps(doc), allow_import=True)


def test_text_that_is_not_json_says_so():
    with pytest.raises(SerializationError, match="the text is not JSON"):
        Instance.from_json("hello")
    with pytest.raises(SerializationError, match="not a serialized instance"):
        Instance.from_json("[1, 2]")


def test_bytes_that_are_not_an_instance_say_so():
    for data in (b"\x01", b"garbage", b"\x92\x01\x02"):
        with pytest.raises(SerializationError, match="not a hephaestus binary instance"):
            Instance.from_bytes(data)
