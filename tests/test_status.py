"""`hephaestus.Status` (CONTRACT §2)."""

import enum
import pickle

import hephaestus.status
import pytest
from hephaestus import Instance, Status
from hephaestus._core import _status_values
from samples import Pay, running

EXPECTED = {
    "PENDING": "pending",
    "RUNNING": "running",
    "WAITING": "waiting",
    "COMPLETED": "completed",
    "FAILED": "failed",
}


def test_status_is_a_str_enum():
    assert issubclass(Status, str)
    assert issubclass(Status, enum.Enum)


def test_status_has_exactly_the_five_members():
    assert {m.name: m.value for m in Status} == EXPECTED
    assert [m.value for m in Status] == list(EXPECTED.values())


def test_rust_and_python_list_the_same_values_in_the_same_order():
    assert list(_status_values()) == [m.value for m in Status]


@pytest.mark.parametrize(("name", "value"), EXPECTED.items())
def test_members_compare_equal_to_their_values(name, value):
    member = Status[name]
    assert member == value
    assert Status(value) is member
    assert str(member) == value
    assert hash(member) == hash(value)


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (Status.PENDING, False),
        (Status.RUNNING, False),
        (Status.WAITING, False),
        (Status.COMPLETED, True),
        (Status.FAILED, True),
    ],
)
def test_only_completed_and_failed_are_terminal(status, terminal):
    assert status.is_terminal is terminal


@pytest.mark.parametrize("value", ["cancelled", "RUNNING", "", "done"])
def test_unknown_values_are_not_statuses(value):
    with pytest.raises(ValueError, match="not a valid Status"):
        Status(value)


def test_status_is_importable_from_both_modules():
    assert hephaestus.status.Status is Status
    assert "Status" in hephaestus.__all__


@pytest.mark.parametrize("status", list(Status))
def test_status_pickles_to_the_same_member(status):
    assert pickle.loads(pickle.dumps(status)) is status


def test_instances_report_enum_members_not_plain_strings():
    inst = running().activate_step(Pay)
    assert inst.status is Status.RUNNING
    assert type(inst.status) is Status
    assert inst.wait_step(Pay).status is Status.WAITING
    assert Instance.from_json(inst.to_json()).status is Status.RUNNING
