"""The error hierarchy (CONTRACT §9) and the mapping of every core error
variant to its Python class."""

import pickle

import hephaestus
import hephaestus.errors
import pytest
from hephaestus import (
    AlreadyRunningError,
    DefinitionProblem,
    HephaestusError,
    InstanceNotFoundError,
    InvalidTransitionError,
    SerializationError,
    WorkflowDefinitionError,
)
from hephaestus._core import _core_error_variants, _raise_core_error
from samples import Pay, running

ERRORS = {
    "HephaestusError": (HephaestusError, (Exception,)),
    "WorkflowDefinitionError": (WorkflowDefinitionError, (HephaestusError,)),
    "InvalidTransitionError": (InvalidTransitionError, (HephaestusError, ValueError)),
    "SerializationError": (SerializationError, (HephaestusError, ValueError)),
    "AlreadyRunningError": (AlreadyRunningError, (HephaestusError,)),
    "InstanceNotFoundError": (InstanceNotFoundError, (HephaestusError, KeyError)),
}


@pytest.mark.parametrize(("cls", "bases"), ERRORS.values(), ids=ERRORS.keys())
def test_error_classes_have_the_contract_bases(cls, bases):
    assert cls.__bases__ == bases


@pytest.mark.parametrize("name", ERRORS)
def test_every_error_derives_from_hephaestus_error_and_exception(name):
    cls = ERRORS[name][0]
    assert issubclass(cls, HephaestusError)
    assert issubclass(cls, Exception)
    assert cls.__name__ == name


@pytest.mark.parametrize("name", ERRORS)
def test_errors_are_importable_from_both_modules_as_the_same_class(name):
    assert getattr(hephaestus, name) is getattr(hephaestus.errors, name)
    assert name in hephaestus.__all__
    assert name in hephaestus.errors.__all__


def test_errors_module_exports_exactly_the_six_classes():
    assert sorted(hephaestus.errors.__all__) == sorted(ERRORS)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InvalidTransitionError, ValueError),
        (SerializationError, ValueError),
        (InstanceNotFoundError, KeyError),
    ],
)
def test_errors_are_caught_by_the_matching_builtin(cls, builtin):
    with pytest.raises(builtin):
        raise cls("boom")


@pytest.mark.parametrize(("cls", "_"), ERRORS.values(), ids=ERRORS.keys())
def test_errors_pickle(cls, _):
    error = cls("something went wrong")
    loaded = pickle.loads(pickle.dumps(error))
    assert type(loaded) is cls
    assert loaded.args == ("something went wrong",)


# -- core error variants -----------------------------------------------------

VARIANTS = {
    "StepState": InvalidTransitionError,
    "Terminal": InvalidTransitionError,
    "UndeclaredEvent": InvalidTransitionError,
    "StepNotInWorkflow": InvalidTransitionError,
    "UndeclaredTarget": InvalidTransitionError,
    "TooManyTargets": InvalidTransitionError,
    "NoTarget": InvalidTransitionError,
    "InvalidField": ValueError,
    "Serialization": SerializationError,
    "UnresolvedClass": SerializationError,
    "Definition": WorkflowDefinitionError,
}


def test_the_table_covers_every_core_error_variant():
    # The core lists its variants in an exhaustive match, so a new variant
    # shows up here and must be given its class.
    assert sorted(_core_error_variants()) == sorted(VARIANTS)


@pytest.mark.parametrize(("variant", "cls"), VARIANTS.items(), ids=VARIANTS.keys())
def test_each_core_error_variant_raises_its_contract_class(variant, cls):
    with pytest.raises(cls) as excinfo:
        _raise_core_error(variant)
    assert type(excinfo.value) is cls
    assert str(excinfo.value)


def test_a_definition_error_keeps_its_problems_as_data():
    with pytest.raises(WorkflowDefinitionError) as excinfo:
        _raise_core_error("Definition")
    assert excinfo.value.problems == ()
    assert excinfo.value.workflow == "Flow"


def test_a_definition_error_pickles_with_its_problems():
    problem = DefinitionProblem("cycle", "cycle: A -> A", (Pay, Pay))
    error = WorkflowDefinitionError("Flow is not a valid workflow", [problem], "Flow")
    loaded = pickle.loads(pickle.dumps(error))
    assert (loaded.problems, loaded.workflow, str(loaded)) == (
        (problem,),
        "Flow",
        "Flow is not a valid workflow",
    )


def test_invalid_field_is_a_plain_value_error():
    with pytest.raises(ValueError, match="id") as excinfo:
        _raise_core_error("InvalidField")
    assert not isinstance(excinfo.value, HephaestusError)


def test_core_error_messages_are_readable():
    with pytest.raises(InvalidTransitionError) as excinfo:
        _raise_core_error("StepState")
    message = str(excinfo.value)
    assert "complete_step" in message
    assert "m:S" in message
    with pytest.raises(InvalidTransitionError, match="failed"):
        _raise_core_error("Terminal")
    with pytest.raises(SerializationError, match="truncated input"):
        _raise_core_error("Serialization")


def test_unknown_variant_name_raises_value_error():
    with pytest.raises(ValueError, match="NoSuchVariant"):
        _raise_core_error("NoSuchVariant")


# -- what real operations raise ----------------------------------------------


def test_a_step_state_error_from_a_real_operation():
    with pytest.raises(InvalidTransitionError) as excinfo:
        running().complete_step(Pay, "paid")
    assert type(excinfo.value) is InvalidTransitionError
    message = str(excinfo.value)
    assert "complete_step" in message
    assert "samples:Pay" in message


def test_a_terminal_error_from_a_real_operation():
    with pytest.raises(InvalidTransitionError) as excinfo:
        running().replace(status="completed").activate_step(Pay)
    assert "completed" in str(excinfo.value)


def test_type_errors_at_the_boundary_are_plain_type_errors():
    with pytest.raises(TypeError) as excinfo:
        running().activate_step("Pay")
    assert type(excinfo.value) is TypeError
    assert not isinstance(excinfo.value, HephaestusError)
