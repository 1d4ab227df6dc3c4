//! `hephaestus.Instance`: a wrapper around the core [`Instance`]. Each
//! method converts its arguments, calls the core once, and wraps the result.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFrozenSet, PyList, PyMapping, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::bindings::context::PyContext;
use crate::bindings::convert::{
    map_to_py, timestamp_from_py, to_map, to_optional_map, to_py, to_value, Path,
};
use crate::bindings::errors::{to_py_err, IntoPyResult};
use crate::bindings::execution_entry::PyExecutionEntry;
use crate::bindings::registry::{canonical, describe, info, resolve, Lookup};
use crate::bindings::status;
use crate::core::class_ref::ClassRef;
use crate::core::context::Context;
use crate::core::error::CoreError;
use crate::core::format::{self, ClassKind};
use crate::core::instance::{Completion, FieldChanges, Instance, Loop, StepState};
use crate::core::value::Map;

/// A workflow instance; immutable, every change returns a new one.
///
/// It holds its workflow class (and so, through the class's graph, its
/// steps), so an instance never loses its own fields when the classes were
/// made in a function and nothing else refers to them.
#[pyclass(name = "Instance", module = "hephaestus._core", frozen)]
pub struct PyInstance {
    pub inner: Instance,
    workflow: Py<PyType>,
}

impl PyInstance {
    /// Wraps `inner`, whose workflow is `workflow`.
    pub fn wrap(inner: Instance, workflow: Py<PyType>) -> Self {
        Self { inner, workflow }
    }

    /// A new instance of the same workflow.
    pub fn derive(&self, py: Python<'_>, inner: Instance) -> Self {
        Self {
            inner,
            workflow: self.workflow.clone_ref(py),
        }
    }

    /// The workflow class.
    pub fn workflow_class<'py>(&self, py: Python<'py>) -> &Bound<'py, PyType> {
        self.workflow.bind(py)
    }
}

/// Now, in UTC microseconds since the epoch. The core reads no clock; the
/// bindings pass this in when the caller gives no timestamp.
pub fn now_micros() -> PyResult<i64> {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| PyValueError::new_err(format!("system clock is before 1970: {e}")))?;
    i64::try_from(elapsed.as_micros())
        .map_err(|_| PyValueError::new_err("system clock out of range"))
}

fn step_ref(step: &Bound<'_, PyAny>) -> PyResult<ClassRef> {
    info(step, "step").map(|i| i.name)
}

fn non_empty_str(value: &Bound<'_, PyAny>, field: &str) -> PyResult<Arc<str>> {
    let Ok(text) = value.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!(
            "{field} must be a str, got {}",
            describe(value)
        )));
    };
    let text = text.to_str()?;
    if text.is_empty() {
        return Err(PyValueError::new_err(format!(
            "{field} must be a non-empty string"
        )));
    }
    Ok(text.into())
}

fn version(value: &Bound<'_, PyAny>, field: &str) -> PyResult<u32> {
    if value.is_instance_of::<pyo3::types::PyBool>()
        || !value.is_instance_of::<pyo3::types::PyInt>()
    {
        return Err(PyTypeError::new_err(format!(
            "{field} must be an int, got {}",
            describe(value)
        )));
    }
    match value.extract::<i64>() {
        Ok(v) if v >= 1 => u32::try_from(v).map_err(|_| {
            PyValueError::new_err(format!("{field} must be at most {}, got {v}", u32::MAX))
        }),
        Ok(v) => Err(PyValueError::new_err(format!(
            "{field} must be at least 1, got {v}"
        ))),
        Err(_) => Err(PyValueError::new_err(format!("{field} is out of range"))),
    }
}

fn class_set(value: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<ClassRef>> {
    if value.is_instance_of::<PyString>() || value.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(format!(
            "{field} must be a set of classes, got {}",
            describe(value)
        )));
    }
    let items = value.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{field} must be a set of classes, got {}",
            describe(value)
        ))
    })?;
    items
        .map(|item| info(&item?, field).map(|i| i.name))
        .collect()
}

fn optional_class(value: &Bound<'_, PyAny>, field: &str) -> PyResult<Option<ClassRef>> {
    if value.is_none() {
        return Ok(None);
    }
    info(value, field).map(|i| Some(i.name))
}

/// Records one raw field change given from Python (constructor or
/// `replace`), checking its type.
fn set_field(changes: &mut FieldChanges, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    match name {
        "id" => changes.id = Some(non_empty_str(value, "id")?),
        "workflow" => changes.workflow = Some(info(value, "workflow")?.name),
        "workflow_version" => changes.workflow_version = Some(version(value, "workflow_version")?),
        "current_step" => changes.current_step = Some(optional_class(value, "current_step")?),
        "status" => changes.status = Some(status::from_py(value)?),
        "context" => {
            changes.context = Some(match value.cast::<PyContext>() {
                Ok(context) => context.get().inner.clone(),
                Err(_) if value.cast::<PyMapping>().is_ok() => {
                    Context::new(to_map(value, Path::Root("context"))?)
                }
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "context must be a Context or a mapping, got {}",
                        describe(value)
                    )))
                }
            });
        }
        "step_configs" => {
            let Ok(mapping) = value.cast::<PyMapping>() else {
                return Err(PyTypeError::new_err(format!(
                    "step_configs must be a mapping, got {}",
                    describe(value)
                )));
            };
            let configs = PyDict::new(value.py());
            configs.update(mapping)?;
            let mut entries = Vec::with_capacity(configs.len());
            for (step, config) in configs.iter() {
                let step = info(&step, "step_configs key")?.name;
                let config = to_value(
                    &config,
                    Path::Key(&Path::Root("step_configs"), step.as_str()),
                )?;
                entries.push((step, config));
            }
            changes.step_configs = Some(entries);
        }
        "active_steps" => changes.active_steps = Some(class_set(value, name)?),
        "completed_steps" => changes.completed_steps = Some(class_set(value, name)?),
        "waiting_steps" => changes.waiting_steps = Some(class_set(value, name)?),
        "skipped_steps" => changes.skipped_steps = Some(class_set(value, name)?),
        "reached_steps" => changes.reached_steps = Some(class_set(value, name)?),
        "runtime_metadata" => {
            let map = to_map(value, Path::Root("runtime_metadata"))?;
            changes.runtime_metadata =
                Some(map.iter().map(|(k, v)| (Arc::from(k), v.clone())).collect());
        }
        "telemetry_metadata" => {
            changes.telemetry_metadata = Some(to_map(value, Path::Root("telemetry_metadata"))?);
        }
        "telemetry_start_time" => {
            changes.telemetry_start_time = Some(if value.is_none() {
                None
            } else if value.is_instance_of::<pyo3::types::PyInt>()
                && !value.is_instance_of::<pyo3::types::PyBool>()
            {
                Some(value.extract::<i64>()?)
            } else {
                return Err(PyTypeError::new_err(format!(
                    "telemetry_start_time must be an int or None, got {}",
                    describe(value)
                )));
            });
        }
        "execution_history" => {
            let items = value.try_iter().map_err(|_| {
                PyTypeError::new_err(format!(
                    "execution_history must be a list of ExecutionEntry, got {}",
                    describe(value)
                ))
            })?;
            let mut entries = Vec::new();
            for item in items {
                let item = item?;
                let Ok(entry) = item.cast::<PyExecutionEntry>() else {
                    return Err(PyTypeError::new_err(format!(
                        "execution_history items must be ExecutionEntry, got {}",
                        describe(&item)
                    )));
                };
                entries.push(entry.get().inner.clone());
            }
            changes.execution_history = Some(entries);
        }
        "error" => {
            changes.error = Some(to_optional_map(Some(value), Path::Root("error"))?);
        }
        other => {
            return Err(PyTypeError::new_err(format!(
                "Instance has no field {other:?}"
            )))
        }
    }
    Ok(())
}

fn frozenset_of<'py>(
    py: Python<'py>,
    inst: &Instance,
    want: impl Fn(StepState) -> bool,
) -> PyResult<Bound<'py, PyFrozenSet>> {
    let classes = inst
        .steps()
        .filter(|(_, state)| want(*state))
        .map(|(step, _)| resolve(py, step))
        .collect::<PyResult<Vec<_>>>()?;
    PyFrozenSet::new(py, classes)
}

fn is_active(state: StepState) -> bool {
    matches!(state, StepState::Active { .. })
}

fn is_waiting(state: StepState) -> bool {
    state == StepState::Active { waiting: true }
}

#[pymethods]
impl PyInstance {
    #[new]
    #[pyo3(signature = (**fields))]
    fn py_new(fields: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let missing = |name: &str| {
            PyTypeError::new_err(format!(
                "Instance() missing required keyword argument {name:?}"
            ))
        };
        let fields = fields.ok_or_else(|| missing("id"))?;
        let id = fields.get_item("id")?.ok_or_else(|| missing("id"))?;
        let workflow = fields
            .get_item("workflow")?
            .ok_or_else(|| missing("workflow"))?;
        let base = Instance::new(
            &non_empty_str(&id, "id")?,
            info(&workflow, "workflow")?.name,
            1,
            Map::default(),
        )
        .py()?;
        apply(&base, fields, workflow.cast_into::<PyType>()?.unbind())
    }

    /// A new pending instance (Elixir: `Instance.new/4`).
    #[staticmethod]
    fn new(
        workflow: &Bound<'_, PyAny>,
        version: &Bound<'_, PyAny>,
        context: &Bound<'_, PyAny>,
        id: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let name = info(workflow, "workflow")?.name;
        let version = self::version(version, "version")?;
        let initial = to_map(context, Path::Root("context"))?;
        let id = non_empty_str(id, "id")?;
        let inner = Instance::new(&id, name, version, initial).py()?;
        Ok(Self::wrap(
            inner,
            workflow.cast::<PyType>()?.clone().unbind(),
        ))
    }

    /// A copy with the given fields replaced, checked like the constructor.
    #[pyo3(signature = (**changes))]
    fn replace(&self, py: Python<'_>, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        match changes {
            Some(changes) => {
                let workflow = match changes.get_item("workflow")? {
                    Some(class) => class.cast_into::<PyType>().map_err(|e| {
                        PyTypeError::new_err(format!(
                            "workflow must be a class, got {}",
                            describe(&e.into_inner())
                        ))
                    })?,
                    None => self.workflow.bind(py).clone(),
                };
                apply(&self.inner, changes, workflow.unbind())
            }
            None => Ok(self.derive(py, self.inner.clone())),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.workflow)
    }

    /// Makes `step` active and stores `config` when it is not `None`.
    #[pyo3(signature = (step, config=None))]
    fn activate_step(
        &self,
        step: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = step.py();
        let step = step_ref(step)?;
        let config = match config {
            Some(config) if !config.is_none() => Some(to_value(config, Path::Root("config"))?),
            _ => None,
        };
        Ok(self.derive(py, self.inner.activate_step(&step, config).py()?))
    }

    /// Completes the active `step` with `event`.
    #[pyo3(signature = (step, event, context_updates=None, metadata_updates=None, *, timestamp=None))]
    fn complete_step(
        &self,
        step: &Bound<'_, PyAny>,
        event: &Bound<'_, PyAny>,
        context_updates: Option<&Bound<'_, PyAny>>,
        metadata_updates: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = step.py();
        let step = info(step, "step")?;
        let Ok(event) = event.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "event must be a str, got {}",
                describe(event)
            )));
        };
        let updates = to_optional_map(context_updates, Path::Root("context_updates"))?;
        let metadata = to_optional_map(metadata_updates, Path::Root("metadata_updates"))?;
        let timestamp = match timestamp {
            Some(t) if !t.is_none() => timestamp_from_py(t, "timestamp")?,
            _ => now_micros()?,
        };
        let completion = Completion {
            event: event.to_str()?.into(),
            context_updates: updates,
            metadata_updates: metadata,
            timestamp,
        };
        let next = self
            .inner
            .complete_step(&step.name, &step.key, completion)
            .py()?;
        Ok(self.derive(py, next))
    }

    /// Marks the active `step` as waiting and makes it the current step.
    fn wait_step(&self, step: &Bound<'_, PyAny>) -> PyResult<Self> {
        let next = self.inner.wait_step(&step_ref(step)?).py()?;
        Ok(self.derive(step.py(), next))
    }

    /// Records that `step` will not run (a path not taken).
    fn skip_step(&self, step: &Bound<'_, PyAny>) -> PyResult<Self> {
        let next = self.inner.skip_step(&step_ref(step)?).py()?;
        Ok(self.derive(step.py(), next))
    }

    /// Whether `step` is active (waiting steps included).
    fn is_active(&self, step: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self
            .inner
            .step_state(&step_ref(step)?)
            .is_some_and(is_active))
    }

    /// Whether `step` waits for an event or a timer.
    fn is_waiting(&self, step: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self
            .inner
            .step_state(&step_ref(step)?)
            .is_some_and(is_waiting))
    }

    /// The progress of the active `ForEach` or `Repeat` step `step`, or
    /// `None`: `{"kind": "for_each", "items": n, "done": count}` or
    /// `{"kind": "repeat", "iteration": n}` (the run to come, from 0).
    fn loop_state<'py>(&self, step: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let py = step.py();
        let Some(state) = self.inner.loop_of(&step_ref(step)?) else {
            return Ok(None);
        };
        let dict = PyDict::new(py);
        match state {
            Loop::Repeat { iteration } => {
                dict.set_item("kind", "repeat")?;
                dict.set_item("iteration", iteration)?;
            }
            Loop::ForEach { items, results } => {
                dict.set_item("kind", "for_each")?;
                dict.set_item("items", items.len())?;
                dict.set_item("done", results.len())?;
            }
        }
        Ok(Some(dict))
    }

    /// Whether `step` completed.
    fn is_completed(&self, step: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.inner.step_state(&step_ref(step)?) == Some(StepState::Completed))
    }

    /// Whether `step` was skipped.
    fn is_skipped(&self, step: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.inner.step_state(&step_ref(step)?) == Some(StepState::Skipped))
    }

    /// Whether the instance is completed or failed.
    #[getter]
    fn is_terminal(&self) -> bool {
        self.inner.status().is_terminal()
    }

    /// How many steps are active (waiting ones included).
    #[getter]
    fn active_count(&self) -> usize {
        self.inner.active_count()
    }

    /// How many active steps wait.
    #[getter]
    fn waiting_count(&self) -> usize {
        self.inner.waiting_count()
    }

    /// How many steps completed.
    #[getter]
    fn completed_count(&self) -> usize {
        self.inner.completed_count()
    }

    /// How many entries the execution history has.
    #[getter]
    fn history_length(&self) -> usize {
        self.inner.history_len()
    }

    #[getter]
    fn id(&self) -> &str {
        self.inner.id()
    }

    #[getter]
    fn workflow<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        self.workflow.bind(py).clone()
    }

    #[getter]
    fn workflow_version(&self) -> u32 {
        self.inner.workflow_version()
    }

    #[getter]
    fn current_step<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyType>>> {
        self.inner
            .current_step()
            .map(|s| resolve(py, s))
            .transpose()
    }

    #[getter]
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        status::to_py(py, self.inner.status())
    }

    #[getter]
    fn context(&self) -> PyContext {
        self.inner.context().clone().into()
    }

    #[getter]
    fn step_configs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (step, config) in self.inner.step_configs() {
            dict.set_item(resolve(py, step)?, to_py(py, config)?)?;
        }
        Ok(dict)
    }

    #[getter]
    fn active_steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyFrozenSet>> {
        let classes = self
            .inner
            .active_steps()
            .map(|(step, _)| resolve(py, step))
            .collect::<PyResult<Vec<_>>>()?;
        PyFrozenSet::new(py, classes)
    }

    #[getter]
    fn waiting_steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyFrozenSet>> {
        let classes = self
            .inner
            .active_steps()
            .filter(|(_, waiting)| *waiting)
            .map(|(step, _)| resolve(py, step))
            .collect::<PyResult<Vec<_>>>()?;
        PyFrozenSet::new(py, classes)
    }

    #[getter]
    fn completed_steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyFrozenSet>> {
        frozenset_of(py, &self.inner, |s| s == StepState::Completed)
    }

    #[getter]
    fn skipped_steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyFrozenSet>> {
        frozenset_of(py, &self.inner, |s| s == StepState::Skipped)
    }

    /// Joins a taken transition reached that wait for other predecessors.
    #[getter]
    fn reached_steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyFrozenSet>> {
        frozenset_of(py, &self.inner, |s| s == StepState::Reached)
    }

    #[getter]
    fn runtime_metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, value) in self.inner.runtime_metadata() {
            dict.set_item(key, to_py(py, value)?)?;
        }
        Ok(dict)
    }

    #[getter]
    fn telemetry_metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, self.inner.telemetry_metadata())
    }

    #[getter]
    fn telemetry_start_time(&self) -> Option<i64> {
        self.inner.telemetry_start_time()
    }

    #[getter]
    fn execution_history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut entries: Vec<_> = self.inner.history_newest_first().collect();
        entries.reverse();
        let entries = entries
            .into_iter()
            .map(|e| {
                let step = resolve(py, e.step())?.unbind();
                Py::new(py, PyExecutionEntry::new(e.clone(), step))
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, entries)
    }

    #[getter]
    fn error<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner.error().map(|m| map_to_py(py, m)).transpose()
    }

    /// The instance as JSON text (see docs/format.md).
    fn to_json(&self) -> PyResult<String> {
        format::to_json(&self.inner).py()
    }

    /// Reads an instance from JSON text. Classes resolve among those already
    /// loaded; their modules are imported only with `allow_import=True`.
    #[staticmethod]
    #[pyo3(signature = (data, *, allow_import=false))]
    fn from_json(py: Python<'_>, data: &Bound<'_, PyAny>, allow_import: bool) -> PyResult<Self> {
        let Ok(text) = data.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "from_json expects a str, got {}",
                describe(data)
            )));
        };
        let Ok(text) = text.to_str() else {
            return Err(to_py_err(&CoreError::serialization(
                "the text is not valid Unicode",
            )));
        };
        load(py, allow_import, |resolve| format::from_json(text, resolve))
    }

    /// The instance in the compact binary form.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &format::to_bytes(&self.inner).py()?))
    }

    /// Reads an instance from the binary form; classes resolve as for
    /// [`from_json`](Self::from_json).
    #[staticmethod]
    #[pyo3(signature = (data, *, allow_import=false))]
    fn from_bytes(py: Python<'_>, data: &Bound<'_, PyAny>, allow_import: bool) -> PyResult<Self> {
        let Ok(bytes) = data.cast::<PyBytes>() else {
            return Err(PyTypeError::new_err(format!(
                "from_bytes expects bytes, got {}",
                describe(data)
            )));
        };
        let bytes = bytes.as_bytes();
        load(py, allow_import, |resolve| {
            format::from_bytes(bytes, resolve)
        })
    }

    /// Pickles as the binary form; unpickling may import the classes'
    /// modules, as unpickling any class does.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let loader = py
            .import("hephaestus._core")?
            .getattr("_unpickle_instance")?;
        let args = PyTuple::new(py, [slf.get().to_bytes(py)?])?;
        Ok((loader, args))
    }

    /// Equal by value; other types get `NotImplemented` (`PyO3` returns it
    /// when `other` is not a `Self`).
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        other.get().inner == self.inner
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let inst = &self.inner;
        let mut active: Vec<&str> = inst
            .active_steps()
            .map(|(step, _)| step.short_name())
            .collect();
        active.sort_unstable();
        let completed = inst
            .steps()
            .filter(|(_, s)| *s == StepState::Completed)
            .count();
        Ok(format!(
            "<Instance {} {} v{} {} active=[{}] completed={completed}>",
            PyString::new(py, inst.id()).repr()?,
            inst.workflow().short_name(),
            inst.workflow_version(),
            inst.status(),
            active.join(", "),
        ))
    }
}

/// Applies raw field changes given as keyword arguments; `workflow` is the
/// resulting workflow class.
fn apply(
    base: &Instance,
    fields: &Bound<'_, PyDict>,
    workflow: Py<PyType>,
) -> PyResult<PyInstance> {
    let mut changes = FieldChanges::default();
    for (name, value) in fields.iter() {
        let name = name.cast::<PyString>()?;
        set_field(&mut changes, name.to_str()?, &value)?;
    }
    Ok(PyInstance::wrap(base.with_fields(changes).py()?, workflow))
}

/// Reads an instance with `read`, resolving its class names through the
/// registry (importing modules only when `allow_import` is set). A
/// `BaseException` that is not an `Exception`, raised by an import, is
/// re-raised as it is rather than reported as unreadable data.
fn load(
    py: Python<'_>,
    allow_import: bool,
    read: impl FnOnce(
        &mut dyn FnMut(&str, ClassKind) -> Result<ClassRef, CoreError>,
    ) -> Result<Instance, CoreError>,
) -> PyResult<PyInstance> {
    let mut interrupted: Option<PyErr> = None;
    let mut resolve_name =
        |name: &str, kind: ClassKind| match canonical(py, name, kind, allow_import) {
            Ok(class) => Ok(class),
            Err(Lookup::Refused(reason)) => Err(CoreError::UnresolvedClass {
                name: name.to_string(),
                reason,
            }),
            Err(Lookup::Python(err)) => {
                let reason = err.value(py).to_string();
                interrupted = Some(err);
                Err(CoreError::UnresolvedClass {
                    name: name.to_string(),
                    reason,
                })
            }
        };
    let read = read(&mut resolve_name);
    if let Some(err) = interrupted {
        return Err(err);
    }
    let inner = read.py()?;
    let workflow = resolve(py, inner.workflow())?.unbind();
    Ok(PyInstance::wrap(inner, workflow))
}

/// `pickle`'s loader for instances: the binary form, importing the modules
/// of its classes as unpickling does for any class.
#[pyfunction]
pub fn _unpickle_instance(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<PyInstance> {
    PyInstance::from_bytes(py, data, true)
}
