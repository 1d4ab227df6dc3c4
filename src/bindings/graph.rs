//! `hephaestus._core.WorkflowGraph`: a wrapper around the core
//! [`WorkflowGraph`], built by `hephaestus.Workflow` when a workflow class is
//! created. Besides the core graph it keeps, by graph position, the step
//! classes and the dynamic routes, so the engine's driver reaches them
//! without a lookup.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFrozenSet, PyList, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::bindings::convert::{to_py, to_value, Path};
use crate::bindings::errors::IntoPyResult;
use crate::bindings::instance::PyInstance;
use crate::bindings::registry::{describe, info, resolve};
use crate::core::class_ref::ClassRef;
use crate::core::engine;
use crate::core::graph::{
    GraphSpec, Items, Join, Node, StepSpec, Target, Transition, WorkflowGraph,
};
use crate::core::instance::Instance;
use crate::core::render;
use crate::core::value::Value;

/// A validated workflow graph; immutable.
#[pyclass(name = "WorkflowGraph", module = "hephaestus._core", frozen)]
pub struct PyWorkflowGraph {
    pub inner: WorkflowGraph,
    /// The step classes, by graph position (held strongly: a workflow keeps
    /// its steps alive, so its instances can always show them).
    classes: Vec<Py<PyType>>,
    /// The dynamic routes (`route(context) -> target`), by source position,
    /// then event.
    routes: HashMap<usize, Vec<Route>, foldhash::fast::RandomState>,
    /// The items functions (`items(context) -> list`) of `ForEach` steps
    /// whose items are computed, by position.
    items: HashMap<usize, Py<PyAny>, foldhash::fast::RandomState>,
}

/// A dynamic route: the event it handles and the function that chooses.
type Route = (Arc<str>, Py<PyAny>);

/// `(step_class, config)` pairs as core targets.
pub fn target_pairs(targets: &Bound<'_, PyAny>) -> PyResult<Vec<Target>> {
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

/// A step's config as a core value; `None` stays `None`.
pub fn config(value: Option<&Bound<'_, PyAny>>, step: &ClassRef) -> PyResult<Option<Value>> {
    match value {
        Some(v) if !v.is_none() => {
            let root = format!("config of {}", step.short_name());
            to_value(v, Path::Root(&root)).map(Some)
        }
        _ => Ok(None),
    }
}

/// A step's node as the core needs it, and the items function of a
/// `ForEach` whose items are computed: `None`, `("for_each", items,
/// concurrency, max_items)` with `items` a key or a callable, or
/// `("repeat", again, max_iterations)`. Limits below 1 reach the core as 0,
/// which reports them.
fn node_spec(node: &Bound<'_, PyAny>) -> PyResult<(Node, Option<Py<PyAny>>)> {
    let limit = |value: i64| u32::try_from(value.max(0)).unwrap_or(u32::MAX);
    if node.is_none() {
        return Ok((Node::Step, None));
    }
    let kind: String = node.get_item(0)?.extract()?;
    match kind.as_str() {
        "for_each" => {
            let (_, items, concurrency, max_items): (String, Bound<'_, PyAny>, Option<i64>, i64) =
                node.extract()?;
            let (items, items_fn) = match items.cast::<PyString>() {
                Ok(key) => (Items::Key(Arc::from(key.to_str()?)), None),
                Err(_) => (Items::Computed, Some(items.unbind())),
            };
            Ok((
                Node::ForEach {
                    items,
                    concurrency: concurrency.map(limit),
                    max_items: limit(max_items),
                },
                items_fn,
            ))
        }
        "repeat" => {
            let (_, again, max_iterations): (String, String, i64) = node.extract()?;
            Ok((
                Node::Repeat {
                    again: Arc::from(again.as_str()),
                    max_iterations: limit(max_iterations),
                },
                None,
            ))
        }
        other => Err(PyValueError::new_err(format!(
            "a node is None, ('for_each', ...) or ('repeat', ...), not {other:?}"
        ))),
    }
}

impl PyWorkflowGraph {
    /// The step class at `position`.
    pub fn class_at<'py>(&self, py: Python<'py>, position: usize) -> &Bound<'py, PyType> {
        self.classes[position].bind(py)
    }

    /// The route for `event` from the step at `position`, if it has one.
    pub fn route(&self, position: usize, event: &str) -> Option<&Py<PyAny>> {
        let routes = self.routes.get(&position)?;
        routes.iter().find(|(e, _)| &**e == event).map(|(_, r)| r)
    }

    /// The instance to draw, refused with `ValueError` when it is not an
    /// instance of this graph's workflow.
    fn live(&self, instance: Option<&Bound<'_, PyInstance>>) -> PyResult<Option<Instance>> {
        let Some(instance) = instance else {
            return Ok(None);
        };
        let inner = instance.get().inner.clone();
        let problem = match engine::check_members(&inner, &self.inner, "draw") {
            Err(err) => Some(err.to_string()),
            Ok(())
                if inner
                    .steps()
                    .any(|(step, _)| self.inner.position(step).is_none()) =>
            {
                Some("it has steps the graph does not".to_string())
            }
            Ok(()) => None,
        };
        match problem {
            Some(problem) => Err(PyValueError::new_err(format!(
                "the instance {:?} cannot be drawn on {}: {problem}",
                inner.id(),
                self.inner.workflow()
            ))),
            None => Ok(Some(inner)),
        }
    }

    /// The items function of the `ForEach` step at `position`, if its
    /// items are computed.
    pub fn items_fn(&self, position: usize) -> Option<&Py<PyAny>> {
        self.items.get(&position)
    }

    /// The live class of a step of this graph (by position), else by the
    /// registry.
    fn class_of<'py>(&self, py: Python<'py>, step: &ClassRef) -> PyResult<Bound<'py, PyType>> {
        match self.inner.position(step) {
            Some(position) => Ok(self.class_at(py, position).clone()),
            None => resolve(py, step),
        }
    }
}

#[pymethods]
impl PyWorkflowGraph {
    /// Builds and validates a graph.
    ///
    /// `steps` holds `(step_class, events, leaf, join, node)`, where `leaf`
    /// is `"done"`, `"terminate"` or `None`, `join` is `"all"` or
    /// `"first"`, and `node` says how the step runs (see [`node_spec`]); `transitions` holds `(from_class, event, targets, route,
    /// many)` where `targets` is a list of `(step_class, config)`, `route`
    /// is `None` or the dynamic route that picks among them (its configs
    /// are ignored), and `many` says whether the route may pick several.
    /// Raises
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
        let mut classes = Vec::new();
        let mut item_fns = Vec::new();
        for item in steps.try_iter()? {
            let (class, events, leaf, join, node): (
                Bound<'_, PyType>,
                Vec<String>,
                Option<String>,
                String,
                Bound<'_, PyAny>,
            ) = item?.extract()?;
            let class_info = info(class.as_any(), "step")?;
            let (node, items_fn) = node_spec(&node)?;
            if let Some(items_fn) = items_fn {
                item_fns.push((class_info.name, items_fn));
            }
            let join = match join.as_str() {
                "all" => Join::All,
                "first" => Join::First,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "{}.join must be \"all\" or \"first\", got {other:?}",
                        class_info.name.short_name()
                    )))
                }
            };
            step_specs.push(StepSpec {
                name: class_info.name,
                key: class_info.key,
                events: events.iter().map(|e| Arc::from(e.as_str())).collect(),
                is_done: leaf.is_some(),
                terminates: leaf.as_deref() == Some("terminate"),
                join,
                node,
            });
            classes.push(class.unbind());
        }
        let mut edges = Vec::new();
        let mut route_fns = Vec::new();
        for item in transitions.try_iter()? {
            let (from, event, targets, route, many): (
                Bound<'_, PyAny>,
                String,
                Bound<'_, PyAny>,
                Bound<'_, PyAny>,
                bool,
            ) = item?.extract()?;
            let from = info(&from, "transition source")?.name;
            let pairs = target_pairs(&targets)?;
            let event: Arc<str> = Arc::from(event.as_str());
            let transition = if route.is_none() {
                Transition::Static(pairs)
            } else {
                route_fns.push((from, Arc::clone(&event), route.unbind()));
                Transition::Dynamic {
                    targets: pairs.into_iter().map(|t| t.step).collect(),
                    many,
                }
            };
            edges.push((from, event, transition));
        }
        let spec = GraphSpec {
            workflow: workflow.to_string(),
            start,
            start_config,
            steps: step_specs,
            transitions: edges,
        };
        let inner = WorkflowGraph::build(spec).py()?;
        let mut routes: HashMap<usize, Vec<_>, _> = HashMap::default();
        for (from, event, route) in route_fns {
            if let Some(position) = inner.position(&from) {
                routes.entry(position).or_default().push((event, route));
            }
        }
        let items = item_fns
            .into_iter()
            .filter_map(|(step, f)| Some((inner.position(&step)?, f)))
            .collect();
        Ok(Self {
            inner,
            classes,
            routes,
            items,
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for class in &self.classes {
            visit.call(class)?;
        }
        for (_, route) in self.routes.values().flatten() {
            visit.call(route)?;
        }
        for items in self.items.values() {
            visit.call(items)?;
        }
        Ok(())
    }

    /// The workflow's name.
    #[getter]
    fn workflow(&self) -> &str {
        self.inner.workflow()
    }

    /// The start step.
    #[getter]
    fn start<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        self.class_at(py, self.inner.position(self.inner.start()).unwrap_or(0))
            .clone()
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
        PyTuple::new(py, self.classes.iter().map(|c| c.bind(py)))
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
                        self.class_of(py, from)?.into_any(),
                        PyString::new(py, event).into_any(),
                        self.class_of(py, to)?.into_any(),
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
            .map(|s| self.class_of(py, s))
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
            .map(|s| self.class_of(py, s))
            .collect::<PyResult<Vec<_>>>()?;
        PyFrozenSet::new(py, classes)
    }

    /// Whether `step` is a step of this workflow.
    fn __contains__(&self, step: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(step.cast::<PyType>().is_ok()
            && self.inner.position(&info(step, "step")?.name).is_some())
    }

    /// The graph as a Mermaid flowchart; with `instance`, marked with its
    /// live state (see `hephaestus._core` docs of `render`).
    #[pyo3(signature = (instance=None))]
    fn to_mermaid(&self, instance: Option<&Bound<'_, PyInstance>>) -> PyResult<String> {
        let instance = self.live(instance)?;
        Ok(render::mermaid(&self.inner, instance.as_ref()))
    }

    /// The graph as Graphviz DOT; with `instance`, marked with its live
    /// state.
    #[pyo3(signature = (instance=None))]
    fn to_dot(&self, instance: Option<&Bound<'_, PyInstance>>) -> PyResult<String> {
        let instance = self.live(instance)?;
        Ok(render::dot(&self.inner, instance.as_ref()))
    }

    /// The graph as plain text for terminals; with `instance`, marked with
    /// its live state.
    #[pyo3(signature = (instance=None))]
    fn to_text(&self, instance: Option<&Bound<'_, PyInstance>>) -> PyResult<String> {
        let instance = self.live(instance)?;
        Ok(render::text(&self.inner, instance.as_ref()))
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
