//! `hephaestus.ExecutionEntry`: a wrapper around the core
//! [`ExecutionEntry`].

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDateTime, PyDict, PyInt, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::bindings::convert::{
    map_to_py, timestamp_from_py, timestamp_to_py, to_optional_map, Path,
};
use crate::bindings::errors::IntoPyResult;
use crate::bindings::registry::info;
use crate::core::execution_entry::ExecutionEntry;

/// One completed step in an instance's history; immutable. It holds its
/// step class, so it can always give it back.
#[pyclass(name = "ExecutionEntry", module = "hephaestus._core", frozen)]
pub struct PyExecutionEntry {
    pub inner: ExecutionEntry,
    step: Py<PyType>,
}

impl PyExecutionEntry {
    /// Wraps `inner`, whose step is `step`.
    pub fn new(inner: ExecutionEntry, step: Py<PyType>) -> Self {
        Self { inner, step }
    }
}

#[pymethods]
impl PyExecutionEntry {
    #[new]
    #[pyo3(signature = (step_ref, event, timestamp, context_updates=None, iteration=None))]
    fn py_new(
        step_ref: &Bound<'_, PyAny>,
        event: &Bound<'_, PyString>,
        timestamp: &Bound<'_, PyAny>,
        context_updates: Option<&Bound<'_, PyAny>>,
        iteration: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let step = info(step_ref, "step_ref")?.name;
        let timestamp = timestamp_from_py(timestamp, "timestamp")?;
        let updates = to_optional_map(context_updates, Path::Root("context_updates"))?;
        let iteration = match iteration {
            Some(value) if !value.is_none() => {
                if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
                    return Err(PyTypeError::new_err(format!(
                        "iteration must be an int or None, got {}",
                        value.get_type().name()?
                    )));
                }
                Some(value.extract::<u32>().map_err(|_| {
                    PyValueError::new_err(format!(
                        "iteration must be between 0 and {}, got {value}",
                        u32::MAX
                    ))
                })?)
            }
            _ => None,
        };
        let inner = ExecutionEntry::new(step, event.to_str()?, timestamp, updates)
            .py()?
            .with_iteration(iteration);
        // `info` accepted it, so it is a class.
        let class = step_ref.cast::<PyType>()?.clone().unbind();
        Ok(Self::new(inner, class))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.step)
    }

    /// The step class that completed.
    #[getter]
    fn step_ref<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        self.step.bind(py).clone()
    }

    /// The event it emitted.
    #[getter]
    fn event(&self) -> &str {
        self.inner.event()
    }

    /// When it completed (an aware UTC datetime).
    #[getter]
    fn timestamp<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDateTime>> {
        timestamp_to_py(py, self.inner.timestamp())
    }

    /// The result it stored, or `None` when it passed none.
    #[getter]
    fn context_updates<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner
            .context_updates()
            .map(|m| map_to_py(py, m))
            .transpose()
    }

    /// Which run of a `ForEach` step (the item's index) or a `Repeat` step
    /// (the repetition, from 0) this was; `None` for an ordinary step.
    #[getter]
    fn iteration(&self) -> Option<u32> {
        self.inner.iteration()
    }

    /// Equal by value; other types get `NotImplemented` (`PyO3` returns it
    /// when `other` is not a `Self`).
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        other.get().inner == self.inner
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let updates = match self.context_updates(py)? {
            Some(dict) => dict.repr()?.to_string(),
            None => "None".to_string(),
        };
        let iteration = self
            .inner
            .iteration()
            .map_or_else(String::new, |i| format!(", iteration={i}"));
        Ok(format!(
            "ExecutionEntry(step_ref={}, event={}, timestamp={}, context_updates={updates}{iteration})",
            self.inner.step().short_name(),
            PyString::new(py, self.inner.event()).repr()?,
            self.timestamp(py)?.str()?,
        ))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let this = slf.get();
        let args = PyTuple::new(
            py,
            [
                this.step_ref(py).into_any(),
                PyString::new(py, this.inner.event()).into_any(),
                this.timestamp(py)?.into_any(),
                this.context_updates(py)?
                    .map_or_else(|| py.None().into_bound(py), Bound::into_any),
                this.inner.iteration().into_pyobject(py)?.into_any(),
            ],
        )?;
        Ok((slf.get_type().into_any(), args))
    }
}
