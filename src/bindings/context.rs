//! `hephaestus.Context`: a wrapper around the core [`Context`].

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyMapping, PyString, PyTuple};

use crate::bindings::convert::{map_to_py, to_map, to_value, Path};
use crate::bindings::registry::describe;
use crate::core::context::{Context, StepResult};
use crate::core::value::Value;

/// Initial data plus step results; immutable.
#[pyclass(name = "Context", module = "hephaestus._core", frozen)]
pub struct PyContext {
    pub inner: Context,
}

impl From<Context> for PyContext {
    fn from(inner: Context) -> Self {
        Self { inner }
    }
}

/// Builds a core context from an `initial` dict and an optional `steps` dict
/// of `step_key -> result` (a dict, or a `ForEach` step's list of dicts).
pub fn context_from_py(
    initial: &Bound<'_, PyAny>,
    steps: Option<&Bound<'_, PyAny>>,
) -> PyResult<Context> {
    let mut context = Context::new(to_map(initial, Path::Root("initial"))?);
    let Some(steps) = steps.filter(|s| !s.is_none()) else {
        return Ok(context);
    };
    let Ok(mapping) = steps.cast::<PyMapping>() else {
        return Err(PyTypeError::new_err(format!(
            "steps: expected a mapping, got {}",
            describe(steps)
        )));
    };
    let steps = PyDict::new(steps.py());
    steps.update(mapping)?;
    for (key, result) in steps.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "steps: keys must be str, got {}",
                describe(&key)
            )));
        };
        let key = key.to_str()?;
        let path = Path::Key(&Path::Root("steps"), key);
        if result.cast::<PyList>().is_ok() {
            // A ForEach step's result: the list of its runs' dicts.
            let Value::List(items) = to_value(&result, path)? else {
                unreachable!("a list converts to a list");
            };
            let maps = items
                .iter()
                .filter_map(Value::as_dict)
                .cloned()
                .collect::<Vec<_>>();
            if maps.len() != items.len() {
                return Err(PyTypeError::new_err(format!(
                    "steps[{key:?}]: a list result holds dicts (one per ForEach run)"
                )));
            }
            context.put_step_list_mut(key.into(), maps);
        } else {
            let result = to_map(&result, path)?;
            context.put_step_result_mut(key.into(), result);
        }
    }
    Ok(context)
}

#[pymethods]
impl PyContext {
    #[new]
    #[pyo3(signature = (initial, steps=None))]
    fn py_new(initial: &Bound<'_, PyAny>, steps: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        context_from_py(initial, steps).map(Self::from)
    }

    /// A context with `initial` data and no step results.
    #[staticmethod]
    fn new(initial: &Bound<'_, PyAny>) -> PyResult<Self> {
        context_from_py(initial, None).map(Self::from)
    }

    /// The data the instance started with (a fresh dict).
    #[getter]
    fn initial<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, self.inner.initial())
    }

    /// Step results by step key (a fresh dict).
    #[getter]
    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        steps_to_py(py, &self.inner)
    }

    /// A new context with `result` stored under `step_key`.
    fn put_step_result(
        &self,
        step_key: &Bound<'_, PyString>,
        result: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let key = step_key.to_str()?;
        let result = to_map(result, Path::Root("result"))?;
        Ok(self.inner.put_step_result(key.into(), result).into())
    }

    /// Equal by value; other types get `NotImplemented` (`PyO3` returns it
    /// when `other` is not a `Self`).
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        other.get().inner == self.inner
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Context(initial={}, steps={})",
            map_to_py(py, self.inner.initial())?.repr()?,
            steps_to_py(py, &self.inner)?.repr()?
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
                map_to_py(py, this.inner.initial())?,
                steps_to_py(py, &this.inner)?,
            ],
        )?;
        Ok((slf.get_type().into_any(), args))
    }
}

/// `context.steps` as a fresh dict.
pub fn steps_to_py<'py>(py: Python<'py>, context: &Context) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, result) in context.steps() {
        let value = match result {
            StepResult::Dict(map) => map_to_py(py, map)?.into_any(),
            StepResult::List(maps) => PyList::new(
                py,
                maps.iter()
                    .map(|m| map_to_py(py, m))
                    .collect::<PyResult<Vec<_>>>()?,
            )?
            .into_any(),
        };
        dict.set_item(key, value)?;
    }
    Ok(dict)
}
