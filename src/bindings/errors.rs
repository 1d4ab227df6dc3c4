//! The one place where core errors become Python exceptions.
//!
//! The exception classes live in `hephaestus/errors.py` (Python expresses
//! `InvalidTransitionError(HephaestusError, ValueError)` directly, and the
//! classes pickle and document like any Python class); this module looks
//! them up once and maps every `CoreError` variant to one of them.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple, PyType};

use crate::bindings::registry::resolve;
use crate::core::error::CoreError;
use crate::core::graph::GraphProblem;
use crate::core::status::Status;

/// A Python class from `hephaestus.errors`, looked up once.
struct ErrorClass {
    name: &'static str,
    cell: PyOnceLock<Py<PyType>>,
}

impl ErrorClass {
    const fn new(name: &'static str) -> Self {
        Self {
            name,
            cell: PyOnceLock::new(),
        }
    }

    fn class<'py>(&'static self, py: Python<'py>) -> PyResult<&'py Bound<'py, PyType>> {
        self.cell.import(py, "hephaestus.errors", self.name)
    }

    /// An exception of this class with `message`.
    fn err(&'static self, message: String) -> PyErr {
        Python::attach(|py| match self.class(py) {
            Ok(class) => PyErr::from_type(class.clone(), message),
            Err(import_error) => import_error,
        })
    }
}

static INVALID_TRANSITION: ErrorClass = ErrorClass::new("InvalidTransitionError");
static WORKFLOW_DEFINITION: ErrorClass = ErrorClass::new("WorkflowDefinitionError");
static DEFINITION_PROBLEM: ErrorClass = ErrorClass::new("DefinitionProblem");
static SERIALIZATION: ErrorClass = ErrorClass::new("SerializationError");

/// Maps a core error to the exception class the contract names for it.
pub fn to_py_err(error: &CoreError) -> PyErr {
    let message = error.to_string();
    match error {
        CoreError::StepState { .. }
        | CoreError::Terminal { .. }
        | CoreError::UndeclaredEvent { .. }
        | CoreError::StepNotInWorkflow { .. }
        | CoreError::UndeclaredTarget { .. }
        | CoreError::TooManyTargets { .. }
        | CoreError::NoTarget { .. } => INVALID_TRANSITION.err(message),
        CoreError::InvalidField { .. } => PyValueError::new_err(message),
        CoreError::Serialization { .. } | CoreError::UnresolvedClass { .. } => {
            SERIALIZATION.err(message)
        }
        CoreError::Definition { workflow, problems } => Python::attach(
            |py| match definition_error(py, workflow, problems, message) {
                Ok(err) | Err(err) => err,
            },
        ),
    }
}

/// `WorkflowDefinitionError(message, problems)`, each problem a
/// `DefinitionProblem(kind, message, steps, event)`.
fn definition_error(
    py: Python<'_>,
    workflow: &str,
    problems: &[GraphProblem],
    message: String,
) -> PyResult<PyErr> {
    let problem_class = DEFINITION_PROBLEM.class(py)?;
    let items = problems
        .iter()
        .map(|problem| {
            let steps = problem
                .steps()
                .iter()
                .map(|s| resolve(py, s))
                .collect::<PyResult<Vec<_>>>()?;
            problem_class.call1((
                problem.kind(),
                problem.to_string(),
                PyTuple::new(py, steps)?,
                problem.event(),
            ))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let class = WORKFLOW_DEFINITION.class(py)?;
    let error = class.call1((message, PyList::new(py, items)?, workflow))?;
    Ok(PyErr::from_value(error))
}

/// Lets `?` turn a `CoreResult` into a `PyResult`.
pub trait IntoPyResult<T> {
    /// Maps the error with [`to_py_err`].
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, CoreError> {
    fn py(self) -> PyResult<T> {
        self.map_err(|e| to_py_err(&e))
    }
}

/// One sample of every core error variant, by variant name, for the test
/// that walks them all. The match is exhaustive (no wildcard), so a new
/// variant does not compile until it has a sample here.
fn samples() -> Vec<(&'static str, CoreError)> {
    let sample = |name: &'static str| -> CoreError {
        match name {
            "StepState" => CoreError::StepState {
                operation: "complete_step",
                step: "m:S".into(),
                actual: "completed",
                allowed: "active",
            },
            "Terminal" => CoreError::Terminal {
                operation: "activate_step",
                status: Status::Failed,
            },
            "UndeclaredEvent" => CoreError::UndeclaredEvent {
                operation: "resume_step",
                step: "m:S".into(),
                event: "bogus".into(),
                declared: "\"done\"".into(),
            },
            "StepNotInWorkflow" => CoreError::StepNotInWorkflow {
                operation: "runnable",
                step: "m:Stray".into(),
                workflow: "Flow".into(),
            },
            "UndeclaredTarget" => CoreError::UndeclaredTarget {
                from: "m:S".into(),
                event: "routed".into(),
                target: "m:T".into(),
                declared: "A, B".into(),
            },
            "TooManyTargets" => CoreError::TooManyTargets {
                from: "m:S".into(),
                event: "routed".into(),
                chosen: "A, B".into(),
            },
            "NoTarget" => CoreError::NoTarget {
                from: "m:S".into(),
                event: "routed".into(),
            },
            "InvalidField" => CoreError::invalid("id", "must be a non-empty string"),
            "Serialization" => CoreError::serialization("truncated input"),
            "UnresolvedClass" => CoreError::UnresolvedClass {
                name: "m:Gone".into(),
                reason: "its module \"m\" is not imported".into(),
            },
            _ => CoreError::Definition {
                workflow: "Flow".into(),
                problems: Vec::new(),
            },
        }
    };
    let names = [
        "StepState",
        "Terminal",
        "UndeclaredEvent",
        "StepNotInWorkflow",
        "UndeclaredTarget",
        "TooManyTargets",
        "NoTarget",
        "InvalidField",
        "Serialization",
        "UnresolvedClass",
        "Definition",
    ];
    let all: Vec<(&'static str, CoreError)> = names.iter().map(|n| (*n, sample(n))).collect();
    for (name, error) in &all {
        // Fails to compile when a variant is added without a sample.
        let variant = match error {
            CoreError::StepState { .. } => "StepState",
            CoreError::Terminal { .. } => "Terminal",
            CoreError::UndeclaredEvent { .. } => "UndeclaredEvent",
            CoreError::StepNotInWorkflow { .. } => "StepNotInWorkflow",
            CoreError::UndeclaredTarget { .. } => "UndeclaredTarget",
            CoreError::TooManyTargets { .. } => "TooManyTargets",
            CoreError::NoTarget { .. } => "NoTarget",
            CoreError::InvalidField { .. } => "InvalidField",
            CoreError::Serialization { .. } => "Serialization",
            CoreError::UnresolvedClass { .. } => "UnresolvedClass",
            CoreError::Definition { .. } => "Definition",
        };
        debug_assert_eq!(*name, variant);
    }
    all
}

/// The names of every core error variant.
#[pyfunction]
pub fn _core_error_variants() -> Vec<&'static str> {
    samples().into_iter().map(|(name, _)| name).collect()
}

/// Raises a sample of the core error variant named `variant` through
/// [`to_py_err`], so the test suite can check each variant's class.
#[pyfunction]
pub fn _raise_core_error(variant: &str) -> PyResult<()> {
    match samples().into_iter().find(|(name, _)| *name == variant) {
        Some((_, error)) => Err(to_py_err(&error)),
        None => Err(PyValueError::new_err(format!(
            "no core error variant {variant:?}"
        ))),
    }
}
