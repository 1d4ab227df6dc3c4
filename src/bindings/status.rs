//! `Status` crosses the boundary as the members of the Python enum
//! `hephaestus.status.Status` (a `str` enum), looked up once.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};

use crate::bindings::errors::IntoPyResult;
use crate::bindings::registry::describe;
use crate::core::status::Status;

static MEMBERS: PyOnceLock<Vec<Py<PyAny>>> = PyOnceLock::new();

/// The enum member for `status`.
pub fn to_py(py: Python<'_>, status: Status) -> PyResult<Bound<'_, PyAny>> {
    let members = MEMBERS.get_or_try_init(py, || -> PyResult<_> {
        static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        let class = CLASS.import(py, "hephaestus.status", "Status")?;
        Status::ALL
            .iter()
            .map(|s| Ok(class.call1((s.as_str(),))?.unbind()))
            .collect()
    })?;
    // `Status::ALL` lists the variants in declaration order.
    Ok(members[status as usize].bind(py).clone())
}

/// A `Status` member or its value (`"running"`).
pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Status> {
    let Ok(text) = obj.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!(
            "status must be a Status or str, got {}",
            describe(obj)
        )));
    };
    text.to_str()?.parse::<Status>().py()
}

/// The status values, in order, for the test that both sides agree.
#[pyfunction]
pub fn _status_values() -> Vec<&'static str> {
    Status::ALL.iter().map(|s| s.as_str()).collect()
}
