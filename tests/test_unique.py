"""`hephaestus.unique.Unique` (CONTRACT §7): business keys and instance ids."""

import copy
import dataclasses
import pickle
import uuid

import hephaestus.unique
import pytest
from hephaestus.unique import Unique
from hypothesis import given
from hypothesis import strategies as st

UUID = "550e8400-e29b-41d4-a716-446655440000"
SCOPES = ["workflow", "version", "global", "none"]


# -- construction ----------------------------------------------------------------


def test_scope_defaults_to_workflow():
    unique = Unique("orderid")
    assert unique.key == "orderid"
    assert unique.scope == "workflow"


@pytest.mark.parametrize("scope", SCOPES)
def test_every_scope_is_accepted(scope):
    assert Unique("orderid", scope).scope == scope
    assert Unique(key="orderid", scope=scope) == Unique("orderid", scope)


@pytest.mark.parametrize("key", ["orderid", "a", "0", "order2", "2024", "x" * 200])
def test_keys_of_lowercase_letters_and_digits_are_accepted(key):
    assert Unique(key).key == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "OrderId",
        "ORDERID",
        "order_id",
        "order-id",
        "order id",
        " orderid",
        "orderid\n",
        "order::id",
        "ordér",
        "order\u0661",  # an Arabic-Indic digit: not [0-9]
        "\uff4f\uff52\uff44\uff45\uff52",  # "order" in fullwidth letters
    ],
)
def test_bad_keys_are_value_errors_naming_the_key_and_the_rule(key):
    with pytest.raises(ValueError, match=r"must match \[a-z0-9\]\+") as excinfo:
        Unique(key)
    assert repr(key) in str(excinfo.value)


@pytest.mark.parametrize(("key", "type_name"), [(None, "NoneType"), (1, "int"), (b"id", "bytes")])
def test_non_str_keys_are_type_errors(key, type_name):
    with pytest.raises(TypeError, match=f"Unique key must be a str, got {type_name}"):
        Unique(key)


@pytest.mark.parametrize("scope", ["Workflow", "all", "versions", "", "None"])
def test_bad_scopes_are_value_errors_listing_the_scopes(scope):
    with pytest.raises(ValueError, match="'workflow', 'version', 'global', 'none'") as excinfo:
        Unique("orderid", scope)
    assert repr(scope) in str(excinfo.value)


@pytest.mark.parametrize(("scope", "type_name"), [(None, "NoneType"), (1, "int")])
def test_non_str_scopes_are_type_errors(scope, type_name):
    with pytest.raises(TypeError, match=f"Unique scope must be a str, got {type_name}"):
        Unique("orderid", scope)


def test_key_is_required():
    with pytest.raises(TypeError):
        Unique()


# -- value semantics ---------------------------------------------------------------


def test_unique_is_an_immutable_hashable_value():
    assert Unique("orderid") == Unique("orderid", "workflow")
    assert Unique("orderid") != Unique("orderid", "global")
    assert Unique("orderid") != Unique("refundid")
    assert hash(Unique("orderid")) == hash(Unique("orderid"))
    assert len({Unique("orderid"), Unique("orderid"), Unique("refundid")}) == 2
    assert repr(Unique("orderid")) == "Unique(key='orderid', scope='workflow')"
    assert not hasattr(Unique("orderid"), "__dict__")


@pytest.mark.parametrize("attr", ["key", "scope", "other"])
def test_unique_refuses_assignment(attr):
    unique = Unique("orderid")
    with pytest.raises(dataclasses.FrozenInstanceError, match="Unique is immutable"):
        setattr(unique, attr, "x")
    with pytest.raises(dataclasses.FrozenInstanceError, match="Unique is immutable"):
        delattr(unique, attr)


@pytest.mark.parametrize(
    "copier", [copy.copy, copy.deepcopy, lambda v: pickle.loads(pickle.dumps(v))]
)
def test_unique_copies_and_pickles(copier):
    unique = Unique("blueprintid", "version")
    assert copier(unique) == unique


def test_replace_validates_too():
    assert dataclasses.replace(Unique("orderid"), scope="global") == Unique("orderid", "global")
    with pytest.raises(ValueError, match="'Order'"):
        dataclasses.replace(Unique("orderid"), key="Order")


# -- build_id ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc123", "orderid::abc123"),
        ("1", "orderid::1"),
        ("z", "orderid::z"),
        (UUID, f"orderid::{UUID}"),
        (UUID.upper(), f"orderid::{UUID}"),
        ("550E8400-e29b-41D4-a716-446655440000", f"orderid::{UUID}"),
        (UUID.replace("-", ""), f"orderid::{UUID.replace('-', '')}"),
        ("00000000-0000-0000-0000-000000000000", "orderid::00000000-0000-0000-0000-000000000000"),
    ],
)
def test_build_id(value, expected):
    assert Unique("orderid").build_id(value) == expected


@pytest.mark.parametrize("scope", SCOPES)
def test_build_id_does_not_depend_on_the_scope(scope):
    assert Unique("orderid", scope).build_id("abc") == "orderid::abc"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ABC",
        "abc-123",
        "abc_123",
        "a b",
        "a::b",
        "abc\n",
        "é",
        UUID.upper().replace("-", ""),  # not hyphenated, and not lowercase
        f"{{{UUID}}}",
        f"urn:uuid:{UUID}",
        UUID[:-1],
        UUID + "0",
        UUID.replace("-", "", 1),
        "550e8400-e29b-41d4-a716-44665544000g",
        f" {UUID}",
        f"{UUID}\n",
    ],
)
def test_bad_values_are_value_errors_naming_value_and_rule(value):
    with pytest.raises(ValueError, match=r"\[a-z0-9\]\+.*UUID") as excinfo:
        Unique("orderid").build_id(value)
    assert repr(value) in str(excinfo.value)


@pytest.mark.parametrize("value", [None, 123, b"abc", uuid.UUID(UUID)])
def test_non_str_values_are_type_errors(value):
    with pytest.raises(TypeError, match=f"must be a str, got {type(value).__name__}"):
        Unique("orderid").build_id(value)


# -- parse_id ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_id", "value"),
    [
        ("orderid::abc123", "abc123"),
        (f"orderid::{UUID}", UUID),
        ("orderid::0", "0"),
    ],
)
def test_parse_id(instance_id, value):
    assert Unique("orderid").parse_id(instance_id) == value


@pytest.mark.parametrize(
    "instance_id",
    ["refundid::abc", "orderid:abc", "orderidabc", "order::abc", "orderid2::abc", "", "::abc"],
)
def test_parse_id_rejects_another_prefix(instance_id):
    with pytest.raises(ValueError, match="does not start with 'orderid::'") as excinfo:
        Unique("orderid").parse_id(instance_id)
    assert repr(instance_id) in str(excinfo.value)


@pytest.mark.parametrize(
    "instance_id",
    ["orderid::", "orderid::ABC", "orderid::a-b", "orderid::abc::1a2b3c4d", "orderid::::abc"],
)
def test_parse_id_rejects_values_build_id_would_not_make(instance_id):
    with pytest.raises(ValueError, match=r"the value must match \[a-z0-9\]\+") as excinfo:
        Unique("orderid").parse_id(instance_id)
    assert repr(instance_id) in str(excinfo.value)


def test_parse_id_rejects_an_uppercase_uuid():
    with pytest.raises(ValueError, match="the UUID must be lowercase"):
        Unique("orderid").parse_id(f"orderid::{UUID.upper()}")


@pytest.mark.parametrize("instance_id", [None, 1, b"orderid::abc"])
def test_parse_id_needs_a_str(instance_id):
    with pytest.raises(TypeError, match="instance id must be a str"):
        Unique("orderid").parse_id(instance_id)


# -- properties --------------------------------------------------------------------

keys = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True)
simple_values = st.from_regex(r"[a-z0-9]{1,40}", fullmatch=True)


@given(keys, simple_values)
def test_simple_values_round_trip(key, value):
    unique = Unique(key)
    instance_id = unique.build_id(value)
    assert instance_id == f"{key}::{value}"
    assert unique.parse_id(instance_id) == value
    assert unique.build_id(unique.parse_id(instance_id)) == instance_id


@given(keys, st.uuids(), st.booleans())
def test_uuids_round_trip_lowercased(key, value, upper):
    unique = Unique(key)
    text = str(value).upper() if upper else str(value)
    instance_id = unique.build_id(text)
    assert instance_id == f"{key}::{value}"
    assert uuid.UUID(unique.parse_id(instance_id)) == value
    assert unique.parse_id(instance_id) == str(value)


@given(keys, st.text(max_size=50))
def test_any_text_is_either_a_valid_value_or_a_value_error(key, text):
    unique = Unique(key)
    try:
        instance_id = unique.build_id(text)
    except ValueError as error:
        assert repr(text) in str(error)
    else:
        assert unique.parse_id(instance_id) == text.lower()
        assert instance_id.count("::") == 1


@given(st.text(max_size=30))
def test_any_text_is_either_a_valid_key_or_a_value_error(text):
    try:
        unique = Unique(text)
    except ValueError as error:
        assert repr(text) in str(error)
    else:
        assert unique.key == text
        assert text.isascii()
        assert text.isalnum()
        assert text == text.lower()


def test_the_module_exports():
    assert sorted(hephaestus.unique.__all__) == ["Scope", "Unique"]


def test_parse_id_of_scope_none_strips_the_random_suffix():
    loose = Unique("orderid", scope="none")
    assert loose.parse_id("orderid::abc::1a2b3c4d") == "abc"
    assert loose.parse_id("orderid::abc") == "abc"
    with pytest.raises(ValueError, match=r"the value must match"):
        loose.parse_id("orderid::abc::1A2B3C4D")
