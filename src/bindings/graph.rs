//! `hephaestus._core.WorkflowGraph`: a wrapper around the core
//! [`WorkflowGraph`], built by `hephaestus.Workflow` when a workflow class is
//! created.

use std::sync::Arc;

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyFrozenSet, PyList, PyString, PyTuple, PyType};

use crate::bindings::context::PyContext;
use crate::bindings::convert::{timestamp_from_py, to_map, to_optional_map, to_py, to_value, Path};
use crate::bindings::errors::{IntoPyResult, WORKFLOW_DEFINITION};
use crate::bindings::instance::{now_micros, PyInstance};
use crate::bindings::registry::{describe, info, resolve};
use crate::core::class_ref::ClassRef;
use crate::core::engine;
use crate::core::graph::{GraphSpec, StepSpec, Target, Transition, WorkflowGraph};
use crate::core::status::Status;
use crate::core::value::Value;

/// A validated workflow graph; immutable.
#[pyclass(name = "WorkflowGraph", module = "hephaestus._core", frozen)]
pub struct PyWorkflowGraph {
    pub inner: WorkflowGraph,
}

/// `(step_class, config)` pairs as core targets.
fn target_pairs(targets: &Bound<'_, PyAny>) -> PyResult<Vec<Target>> {
    let mut pairs = Vec::new();
    for target in targets.try_iter()? {
        let target = target?;
        let Ok(pair) = target.cast::<PyTuple>() else {
            return Err(PyTypeError::new_err(format!(
                "transition targets must be (step, config) pairs, got {}",
                describe(&target)
            )));
        };
        let step = info(&pair.get_item(0)?, "transition target")?.name;
        let config = config(Some(&pair.get_item(1)?), &step)?;
        pairs.push(Target { step, config });
    }
    Ok(pairs)
}

fn config(value: Option<&Bound<'_, PyAny>>, step: &ClassRef) -> PyResult<Option<Value>> {
    match value {
        Some(v) if !v.is_none() => {
            let root = format!("config of {}", step.as_str());
            to_value(v, Path::Root(&root)).map(Some)
        }
        _ => Ok(None),
    }
}

#[pymethods]
impl PyWorkflowGraph {
    /// Builds and validates a graph.
    ///
    /// `steps` holds `(step_class, events, is_done)`; `transitions` holds
    /// `(from_class, event, targets, dynamic)` where `targets` is a list of
    /// `(step_class, config)` (a dynamic route's configs are ignored). Raises
    /// `WorkflowDefinitionError` listing every problem.
    #[new]
    #[pyo3(signature = (workflow, start, start_config, steps, transitions))]
    fn py_new(
        workflow: &str,
        start: &Bound<'_, PyAny>,
        start_config: Option<&Bound<'_, PyAny>>,
        steps: &Bound<'_, PyAny>,
        transitions: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let start = info(start, "start")?.name;
        let start_config = config(start_config, &start)?;
        let mut step_specs = Vec::new();
        for item in steps.try_iter()? {
            let (class, events, is_done): (Bound<'_, PyAny>, Vec<String>, bool) =
                item?.extract()?;
            let class = info(&class, "step")?;
            step_specs.push(StepSpec {
                name: class.name,
                key: class.key,
                events: events.iter().map(|e| Arc::from(e.as_str())).collect(),
                is_done,
            });
        }
        let mut edges = Vec::new();
        for item in transitions.try_iter()? {
            let (from, event, targets, dynamic): (
                Bound<'_, PyAny>,
                String,
                Bound<'_, PyAny>,
                bool,
            ) = item?.extract()?;
            let from = info(&from, "transition source")?.name;
            let pairs = target_pairs(&targets)?;
            let transition = if dynamic {
                Transition::Dynamic(pairs.into_iter().map(|t| t.step).collect())
            } else {
                Transition::Static(pairs)
            };
            edges.push((from, Arc::from(event.as_str()), transition));
        }
        let spec = GraphSpec {
            workflow: workflow.to_string(),
            start,
            start_config,
            steps: step_specs,
            transitions: edges,
        };
        match WorkflowGraph::build(spec) {
            Ok(inner) => Ok(Self { inner }),
            Err(problems) => {
                let mut message = format!("{workflow} is not a valid workflow:");
                for problem in problems {
                    message.push_str("\n  - ");
                    message.push_str(&problem.to_string());
                }
                Err(WORKFLOW_DEFINITION.err(message))
            }
        }
    }

    /// The workflow's name.
    #[getter]
    fn workflow(&self) -> &str {
        self.inner.workflow()
    }

    /// The start step.
    #[getter]
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        resolve(py, self.inner.start())
    }

    /// The start step's config, or `None`.
    #[getter]
    fn start_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.inner.start_config() {
            Some(value) => to_py(py, value),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// Every step, in definition order.
    #[getter]
    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let classes = self
            .inner
            .steps()
            .map(|s| resolve(py, &s.name))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, classes)
    }

    /// Every edge as `(from, event, to)`, in definition order.
    #[getter]
    fn edges<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let edges = self
            .inner
            .edges()
            .map(|(from, event, to, _)| {
                PyTuple::new(
                    py,
                    [
                        resolve(py, from)?.into_any(),
                        PyString::new(py, event).into_any(),
                        resolve(py, to)?.into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, edges)
    }

    /// The steps with a transition into `step`.
    fn predecessors<'py>(&self, step: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyFrozenSet>> {
        let py = step.py();
        let step = info(step, "step")?.name;
        let classes = self
            .inner
            .predecessors(&step)
            .map(|s| resolve(py, s))
            .collect::<PyResult<Vec<_>>>()?;
        PyFrozenSet::new(py, classes)
    }

    /// The steps a transition from `step` may lead to.
    fn successors<'py>(&self, step: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyFrozenSet>> {
        let py = step.py();
        let step = info(step, "step")?.name;
        let classes = self
            .inner
            .successors(&step)
            .map(|s| resolve(py, s))
            .collect::<PyResult<Vec<_>>>()?;
        PyFrozenSet::new(py, classes)
    }

    /// The graph as a Mermaid flowchart (dynamic routes dotted).
    fn to_mermaid(&self) -> String {
        self.inner.to_mermaid()
    }

    /// The graph as Graphviz DOT (dynamic routes dashed).
    fn to_dot(&self) -> String {
        self.inner.to_dot()
    }

    /// Engine: starts a pending instance (see `hephaestus.engine.advance`).
    fn advance(&self, instance: &Bound<'_, PyInstance>) -> PyResult<PyInstance> {
        Ok(engine::advance(&instance.get().inner, &self.inner)
            .py()?
            .into())
    }

    /// Engine: activates what `event` from `from_step` leads to, applying the
    /// join rule; `chosen` holds a dynamic route's `(step, config)` picks.
    #[pyo3(signature = (instance, from_step, event, chosen=None))]
    fn activate_transitions(
        &self,
        instance: &Bound<'_, PyInstance>,
        from_step: &Bound<'_, PyAny>,
        event: &str,
        chosen: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyInstance> {
        let from = info(from_step, "from_step")?.name;
        let chosen = chosen.map(target_pairs).transpose()?;
        let next =
            engine::activate_transitions(&instance.get().inner, &self.inner, &from, event, chosen);
        Ok(next.py()?.into())
    }

    /// Engine: the runnable steps (active, not waiting) of `instance`, in
    /// the graph's definition order.
    fn runnable<'py>(&self, instance: &Bound<'py, PyInstance>) -> PyResult<Bound<'py, PyList>> {
        let py = instance.py();
        let mut steps: Vec<(usize, &ClassRef)> = instance
            .get()
            .inner
            .active_steps()
            .filter(|(_, waiting)| !waiting)
            .map(|(step, _)| (self.inner.position(step).unwrap_or(usize::MAX), step))
            .collect();
        steps.sort_unstable();
        let classes = steps
            .into_iter()
            .map(|(_, step)| resolve(py, step))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, classes)
    }

    /// Engine: `hephaestus.engine.run`'s loop. Runs the runnable steps in
    /// graph order; a step that returns one of its declared events as a
    /// plain `str` (and has no dynamic route for it) is completed here, in
    /// one pass through the core. Every other outcome, including exceptions
    /// and coroutines, goes to `slow(instance, step, result)`, which returns
    /// the next instance.
    fn run(
        &self,
        instance: &Bound<'_, PyInstance>,
        routes: &Bound<'_, PyAny>,
        slow: &Bound<'_, PyAny>,
    ) -> PyResult<PyInstance> {
        let py = instance.py();
        let started = engine::advance(&instance.get().inner, &self.inner).py()?;
        let mut current: Bound<'_, PyInstance> = Bound::new(py, PyInstance::from(started))?;
        let execute = pyo3::intern!(py, "execute");
        loop {
            let inner = &current.get().inner;
            if !matches!(inner.status(), Status::Running | Status::Waiting) {
                break;
            }
            let next = inner
                .active_steps()
                .filter(|(_, waiting)| !waiting)
                .min_by_key(|(step, _)| self.inner.position(step).unwrap_or(usize::MAX));
            let Some((step, _)) = next else {
                break;
            };
            let step = step.clone();
            let class = resolve(py, &step)?;
            let config = match inner.step_config(&step) {
                Some(value) => to_py(py, value)?,
                None => py.None().into_bound(py),
            };
            let context = Bound::new(py, PyContext::from(inner.context().clone()))?;
            let outcome = class
                .call0()
                .and_then(|obj| obj.call_method1(execute, (&current, config, context)));
            let result = match outcome {
                Ok(result) => result,
                Err(err) if err.is_instance_of::<PyException>(py) => {
                    err.into_value(py).into_bound(py).into_any()
                }
                Err(err) => return Err(err),
            };
            // A plain `str` result (not a subclass) that the step declares.
            let event: Option<String> = if result.is_exact_instance_of::<PyString>() {
                result.cast::<PyString>()?.to_str().ok().map(str::to_owned)
            } else {
                None
            };
            let declared = event.as_deref().is_some_and(|ev| {
                self.inner
                    .step(&step)
                    .is_some_and(|spec| spec.events.iter().any(|e| &**e == ev))
            });
            let fast = declared && !routes.contains((&class, &result))?;
            current = if let (true, Some(event)) = (fast, event) {
                let key = info(class.as_any(), "step")?.key;
                let activated = engine::complete_and_activate(
                    inner,
                    &self.inner,
                    &step,
                    &key,
                    &event,
                    None,
                    None,
                    None,
                    now_micros()?,
                )
                .py()?;
                Bound::new(py, PyInstance::from(activated))?
            } else {
                slow.call1((&current, &class, result))?
                    .cast_into::<PyInstance>()?
            };
        }
        Ok(engine::check_completion(&current.get().inner).py()?.into())
    }

    /// Engine: completes the active `step` with `event` and activates what
    /// the event leads to, in one call (for transitions without a dynamic
    /// route).
    #[pyo3(signature = (instance, step, event, context_updates=None, metadata_updates=None))]
    fn complete_and_activate(
        &self,
        instance: &Bound<'_, PyInstance>,
        step: &Bound<'_, PyAny>,
        event: &str,
        context_updates: Option<&Bound<'_, PyAny>>,
        metadata_updates: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyInstance> {
        let step = info(step, "step")?;
        let updates = to_optional_map(context_updates, Path::Root("context_updates"))?;
        let metadata = to_optional_map(metadata_updates, Path::Root("metadata_updates"))?;
        let next = engine::complete_and_activate(
            &instance.get().inner,
            &self.inner,
            &step.name,
            &step.key,
            event,
            updates,
            metadata,
            None,
            now_micros()?,
        );
        Ok(next.py()?.into())
    }

    /// Engine: resumes the waiting `step` with `event`.
    #[pyo3(signature = (instance, step, event, chosen=None, *, timestamp=None))]
    fn resume_step(
        &self,
        instance: &Bound<'_, PyInstance>,
        step: &Bound<'_, PyAny>,
        event: &str,
        chosen: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyInstance> {
        let step = info(step, "step")?;
        let chosen = chosen.map(target_pairs).transpose()?;
        let timestamp = match timestamp {
            Some(t) if !t.is_none() => timestamp_from_py(t, "timestamp")?,
            _ => now_micros()?,
        };
        let next = engine::resume_step(
            &instance.get().inner,
            &self.inner,
            &step.name,
            &step.key,
            event,
            chosen,
            timestamp,
        );
        Ok(next.py()?.into())
    }

    fn __repr__(&self) -> String {
        format!(
            "<WorkflowGraph {} steps={} edges={}>",
            self.inner.workflow(),
            self.inner.steps().len(),
            self.inner.edges().count()
        )
    }
}

/// Engine: completes an instance with nothing left to run.
#[pyfunction]
pub fn _check_completion(instance: &Bound<'_, PyInstance>) -> PyResult<PyInstance> {
    Ok(engine::check_completion(&instance.get().inner).py()?.into())
}

/// Engine: fails an instance with `error` (a dict).
#[pyfunction]
pub fn _fail(instance: &Bound<'_, PyInstance>, error: &Bound<'_, PyAny>) -> PyResult<PyInstance> {
    let error = to_map(error, Path::Root("error"))?;
    Ok(instance.get().inner.failed(error).into())
}
