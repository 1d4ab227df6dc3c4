//! The one place where core errors become Python exceptions.
//!
//! The exception classes live in `hephaestus/errors.py` (Python expresses
//! `InvalidTransitionError(HephaestusError, ValueError)` directly, and the
//! classes pickle and document like any Python class); this module looks
//! them up once and maps every `CoreError` variant to one of them.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::core::error::CoreError;

/// A Python exception class from `hephaestus.errors`, looked up once.
pub struct ErrorClass {
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

    /// Builds an exception of this class with `message`.
    pub fn err(&'static self, message: impl Into<String>) -> PyErr {
        let message = message.into();
        Python::attach(
            |py| match self.cell.import(py, "hephaestus.errors", self.name) {
                Ok(class) => PyErr::from_type(class.clone(), message),
                Err(import_error) => import_error,
            },
        )
    }
}

/// `hephaestus.errors.InvalidTransitionError`.
pub static INVALID_TRANSITION: ErrorClass = ErrorClass::new("InvalidTransitionError");
/// `hephaestus.errors.WorkflowDefinitionError`.
pub static WORKFLOW_DEFINITION: ErrorClass = ErrorClass::new("WorkflowDefinitionError");
/// `hephaestus.errors.SerializationError`.
pub static SERIALIZATION: ErrorClass = ErrorClass::new("SerializationError");

/// Maps a core error to the exception class the contract names for it.
pub fn to_py_err(error: &CoreError) -> PyErr {
    let message = error.to_string();
    match error {
        CoreError::StepState { .. }
        | CoreError::Terminal { .. }
        | CoreError::UndeclaredEvent { .. } => INVALID_TRANSITION.err(message),
        CoreError::InvalidField { .. } => PyValueError::new_err(message),
        CoreError::Serialization { .. } => SERIALIZATION.err(message),
    }
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

/// Raises a sample of the core error variant named `variant` through
/// [`to_py_err`], so the test suite can check each variant's class.
#[pyfunction]
pub fn _raise_core_error(variant: &str) -> PyResult<()> {
    use crate::core::status::Status;
    let error = match variant {
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
        "InvalidField" => CoreError::invalid("id", "must be a non-empty string"),
        "Serialization" => CoreError::serialization("truncated input"),
        other => {
            return Err(PyValueError::new_err(format!(
                "no core error variant {other:?}"
            )))
        }
    };
    Err(to_py_err(&error))
}
