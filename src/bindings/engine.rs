//! The engine's bindings, mirroring `core::engine`: the pure functions of
//! `hephaestus.engine`, and the driver that runs an instance's steps.
//!
//! Every decision (what runs, what an outcome does, joins, failures) is
//! the core's. This module only calls Python: step classes' `execute`
//! methods and dynamic routes, turning what they return (or raise) into a
//! core [`Outcome`] or route choice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use pyo3::exceptions::{PyBaseException, PyException};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::bindings::context::PyContext;
use crate::bindings::convert::{timestamp_from_py, to_map, to_optional_map, to_value, Path};
use crate::bindings::errors::{to_py_err, IntoPyResult};
use crate::bindings::graph::{config, PyWorkflowGraph};
use crate::bindings::instance::{now_micros, PyInstance};
use crate::bindings::registry::info;
use std::sync::Arc;

use crate::core::engine::{self, Applied, Effects, Outcome, Resumed};
use crate::core::error::CoreError;
use crate::core::graph::{Node, Target};
use crate::core::instance::{Completion, Instance, Loop, StepState};
use crate::core::journal::{self, Record};
use crate::core::value::Map;
use crate::core::value::Value;

// -- the pure functions ------------------------------------------------------------

/// Starts a pending instance (see `hephaestus.engine.advance`).
#[pyfunction]
pub fn advance(
    graph: &Bound<'_, PyWorkflowGraph>,
    instance: &Bound<'_, PyInstance>,
) -> PyResult<PyInstance> {
    let this = instance.get();
    let next = engine::advance(&this.inner, &graph.get().inner).py()?;
    Ok(this.derive(instance.py(), next))
}

/// Completes an instance with nothing left to run.
#[pyfunction]
pub fn check_completion(instance: &Bound<'_, PyInstance>) -> PyResult<PyInstance> {
    let this = instance.get();
    let next = engine::check_completion(&this.inner).py()?;
    Ok(this.derive(instance.py(), next))
}

/// Fails an instance with `error` (a dict); a finished instance refuses.
#[pyfunction]
pub fn fail(instance: &Bound<'_, PyInstance>, error: &Bound<'_, PyAny>) -> PyResult<PyInstance> {
    let this = instance.get();
    let error = to_map(error, Path::Root("error"))?;
    let next = engine::fail(&this.inner, error).py()?;
    Ok(this.derive(instance.py(), next))
}

/// The runnable steps (active, not waiting) in graph order; refuses an
/// instance with an active or reached step outside the workflow.
#[pyfunction]
pub fn runnable<'py>(
    graph: &Bound<'py, PyWorkflowGraph>,
    instance: &Bound<'py, PyInstance>,
) -> PyResult<Bound<'py, PyList>> {
    let py = graph.py();
    let graph = graph.get();
    let steps = engine::runnable(&instance.get().inner, &graph.inner).py()?;
    PyList::new(
        py,
        steps
            .iter()
            .filter_map(|s| graph.inner.position(s))
            .map(|p| graph.class_at(py, p)),
    )
}

/// Fails unless `step` is a step of the graph (before running its code).
#[pyfunction]
pub fn check_step(graph: &Bound<'_, PyWorkflowGraph>, step: &Bound<'_, PyAny>) -> PyResult<()> {
    let step = info(step, "step")?.name;
    engine::position(&graph.get().inner, &step, "execute_step").py()?;
    Ok(())
}

/// Activates what `event` from `from_step` leads to. A dynamic route is
/// called with the instance's context; its own exceptions propagate, and a
/// target it does not declare raises `InvalidTransitionError`.
#[pyfunction]
pub fn activate_transitions(
    graph: &Bound<'_, PyWorkflowGraph>,
    instance: &Bound<'_, PyInstance>,
    from_step: &Bound<'_, PyAny>,
    event: &str,
) -> PyResult<PyInstance> {
    let py = graph.py();
    let (g, this) = (graph.get(), instance.get());
    let from = info(from_step, "from_step")?.name;
    let position = engine::position(&g.inner, &from, "activate_transitions").py()?;
    let chosen = match g.route(position, event) {
        Some(route) => Some(choose(py, route.bind(py), &this.inner, g, position, event)?),
        None => None,
    };
    let next = engine::activate_transitions(&this.inner, &g.inner, &from, event, chosen).py()?;
    Ok(this.derive(py, next))
}

/// Resumes the waiting `step` with `event`; a dynamic route is called as
/// by [`activate_transitions`].
#[pyfunction]
#[pyo3(signature = (graph, instance, step, event, *, timestamp=None))]
pub fn resume_step(
    graph: &Bound<'_, PyWorkflowGraph>,
    instance: &Bound<'_, PyInstance>,
    step: &Bound<'_, PyAny>,
    event: &str,
    timestamp: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyInstance> {
    let py = graph.py();
    let (g, this) = (graph.get(), instance.get());
    let step = info(step, "step")?.name;
    let timestamp = match timestamp {
        Some(t) if !t.is_none() => timestamp_from_py(t, "timestamp")?,
        _ => now_micros()?,
    };
    let mut next = this.inner.clone();
    let resumed = engine::resume_mut(
        &mut next,
        &g.inner,
        &step,
        event,
        timestamp,
        &mut Effects::default(),
    )
    .py()?;
    if let Resumed::Applied(Applied::Route { event }) = resumed {
        let position = engine::position(&g.inner, &step, "resume_step").py()?;
        let route = g
            .route(position, &event)
            .ok_or_else(|| missing_route(&step.to_string(), &event))?;
        let chosen = choose(py, route.bind(py), &next, g, position, &event)?;
        engine::activate_transitions_mut(
            &mut next,
            &g.inner,
            position,
            &event,
            Some(chosen),
            &mut Effects::default(),
        )
        .py()?;
    }
    Ok(this.derive(py, next))
}

fn missing_route(step: &str, event: &str) -> PyErr {
    to_py_err(&CoreError::NoTarget {
        from: step.to_string(),
        event: event.to_string(),
    })
}

/// Calls a dynamic route with the instance's context and reads its answer:
/// a step class or a `(step_class, config)` pair, or a list of those (which
/// the core accepts only from a route declared with `many=True`).
/// Exceptions the route raises propagate; an answer that is not a class
/// raises `InvalidTransitionError`, like a class the route does not
/// declare.
fn choose(
    py: Python<'_>,
    route: &Bound<'_, PyAny>,
    instance: &Instance,
    graph: &PyWorkflowGraph,
    from: usize,
    event: &str,
) -> PyResult<Vec<Target>> {
    let context = Bound::new(py, PyContext::from(instance.context().clone()))?;
    let answer = route.call1((context,))?;
    match answer.cast::<PyList>() {
        Ok(list) => list
            .iter()
            .map(|item| chosen_target(&item, graph, from, event))
            .collect(),
        Err(_) => Ok(vec![chosen_target(&answer, graph, from, event)?]),
    }
}

/// One target a route chose: a step class or a `(step_class, config)` pair.
fn chosen_target(
    answer: &Bound<'_, PyAny>,
    graph: &PyWorkflowGraph,
    from: usize,
    event: &str,
) -> PyResult<Target> {
    let (class, config_value) = match answer.cast::<PyTuple>() {
        Ok(pair) if pair.len() == 2 => (pair.get_item(0)?, Some(pair.get_item(1)?)),
        _ => (answer.clone(), None),
    };
    if class.cast::<PyType>().is_err() {
        let from = graph.inner.step_at(from);
        return Err(to_py_err(&CoreError::UndeclaredTarget {
            from: from.name.to_string(),
            event: event.to_string(),
            target: answer.repr()?.to_string(),
            declared: declared_targets(graph, from.name, event),
        }));
    }
    let step = info(&class, "route target")?.name;
    let config = config(config_value.as_ref(), &step)?;
    Ok(Target { step, config })
}

fn declared_targets(
    graph: &PyWorkflowGraph,
    from: crate::core::class_ref::ClassRef,
    event: &str,
) -> String {
    graph
        .inner
        .transition(&from, event)
        .map(|t| {
            t.steps()
                .map(crate::core::class_ref::ClassRef::short_name)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

// -- the driver ------------------------------------------------------------------------

/// The Python result classes, looked up once.
struct ResultClasses {
    ok: Py<PyType>,
    asynchronous: Py<PyType>,
    error: Py<PyType>,
}

fn result_classes(py: Python<'_>) -> PyResult<&ResultClasses> {
    static CLASSES: PyOnceLock<ResultClasses> = PyOnceLock::new();
    CLASSES.get_or_try_init(py, || {
        let steps = py.import("hephaestus.steps")?;
        let class = |name: &str| -> PyResult<Py<PyType>> {
            Ok(steps.getattr(name)?.cast_into::<PyType>()?.unbind())
        };
        Ok(ResultClasses {
            ok: class("Ok")?,
            asynchronous: class("Async")?,
            error: class("Error")?,
        })
    })
}

/// One run to hand out: a step's graph position and, for a `ForEach` or
/// `Repeat` step, which run (the item's index, or the repetition).
pub type Unit = (usize, Option<u32>);

/// The runs of one `ForEach` step not handed out yet, and how many are out.
#[derive(Debug, Default)]
struct ItemQueue {
    pending: VecDeque<u32>,
    out: u32,
}

/// An instance being driven: the instance itself, owned (so the core
/// updates it in place), the runnable steps by graph position, lowest
/// first, the runs of its `ForEach` steps, and, when recording, the
/// journal records of what was applied.
struct Driver {
    graph: Py<PyWorkflowGraph>,
    workflow: Py<PyType>,
    instance: Instance,
    queue: BinaryHeap<Reverse<(bool, usize)>>,
    items: HashMap<usize, ItemQueue, foldhash::fast::RandomState>,
    effects: Effects,
    records: Option<Vec<Vec<u8>>>,
    /// Whether it hands out runs (a reader only replays and looks: it
    /// never queues anything, so it never calls an items function).
    drive: bool,
}

impl Driver {
    /// Takes over `instance`, refusing one with a step outside the
    /// workflow; `start` starts it (see [`Driver::start`]).
    fn new(
        graph: &Bound<'_, PyWorkflowGraph>,
        instance: &Bound<'_, PyInstance>,
        record: bool,
        start: bool,
        drive: bool,
    ) -> PyResult<Self> {
        let this = instance.get();
        let inner = this.inner.clone();
        engine::check_members(&inner, &graph.get().inner, "run").py()?;
        let mut driver = Driver {
            graph: graph.clone().unbind(),
            workflow: this.workflow_class(graph.py()).clone().unbind(),
            instance: inner,
            queue: BinaryHeap::new(),
            items: HashMap::default(),
            effects: Effects::default(),
            records: record.then(Vec::new),
            drive,
        };
        if start {
            driver.start(graph.py())?;
        }
        driver.requeue(graph.py())?;
        Ok(driver)
    }

    /// Starts a pending instance (and completes one with nothing left to
    /// do), recording it when that changed anything.
    fn start(&mut self, py: Python<'_>) -> PyResult<()> {
        let before = self.instance.status();
        let graph = self.graph.get();
        engine::advance_mut(&mut self.instance, &graph.inner, &mut self.effects).py()?;
        if self.instance.status() != before {
            self.record(&Record::Advance)?;
        }
        self.queue_activated(py)
    }

    /// Queues every runnable step afresh (after records were replayed);
    /// a reader queues nothing.
    fn requeue(&mut self, py: Python<'_>) -> PyResult<()> {
        let graph = &self.graph.get().inner;
        self.queue.clear();
        self.items.clear();
        self.effects.activated.clear();
        if !self.drive {
            return Ok(());
        }
        self.effects.activated = self
            .instance
            .active_steps()
            .filter(|(_, waiting)| !waiting)
            .filter_map(|(step, _)| graph.position(step))
            .collect();
        self.queue_activated(py)
    }

    /// Gives the `ForEach` steps the last operation activated their items
    /// (which may activate more steps), then queues every step it
    /// activated (a reader queues nothing).
    fn queue_activated(&mut self, py: Python<'_>) -> PyResult<()> {
        loop {
            let graph = &self.graph.get().inner;
            let unexpanded: Vec<usize> = engine::unexpanded(
                &self.instance,
                graph,
                self.effects.activated.iter().copied(),
            )
            .collect();
            if unexpanded.is_empty() || self.instance.status().is_terminal() {
                break;
            }
            for p in unexpanded {
                // An earlier expansion may have withdrawn it (an empty
                // ForEach that won a first-wins join, say).
                if engine::unexpanded(&self.instance, &self.graph.get().inner, [p])
                    .next()
                    .is_some()
                {
                    self.expand(py, p)?;
                }
            }
        }
        let graph = &self.graph.get().inner;
        let activated = self.effects.activated.drain(..);
        if self.drive {
            self.queue
                .extend(activated.map(|p| Reverse(queue_order(graph, p))));
        }
        Ok(())
    }

    /// Takes the items of the `ForEach` step at `p` (from `context.initial`
    /// or by calling its items function with the context) and gives them
    /// to the core, recording them.
    fn expand(&mut self, py: Python<'_>, p: usize) -> PyResult<()> {
        if self.instance.status().is_terminal() {
            return Ok(());
        }
        let graph = self.graph.get();
        let items = match engine::items_from_initial(&self.instance, &graph.inner, p) {
            Some(items) => items,
            None => match graph.items_fn(p) {
                Some(function) => call_items(py, function.bind(py), &self.instance)?,
                None => Err("the step has no items function".to_string()),
            },
        };
        let record = self.records.is_some().then(|| Record::Items {
            step: self.key(p),
            items: items.clone(),
        });
        let applied = engine::expand_at(
            &mut self.instance,
            &graph.inner,
            p,
            items,
            &mut self.effects,
        )
        .py()?;
        if let Some(record) = record {
            push_record(&mut self.records, &record)?;
        }
        if let Applied::Route { event } = applied {
            self.route(py, p, &event)?;
        }
        Ok(())
    }

    fn record(&mut self, record: &Record) -> PyResult<()> {
        push_record(&mut self.records, record)
    }

    fn key(&self, position: usize) -> Arc<str> {
        Arc::clone(&self.graph.get().inner.step_at(position).key)
    }

    /// The next run, lowest graph position first: an ordinary step, the
    /// current run of a `Repeat` step, or the next item of a `ForEach` step
    /// while fewer than its `concurrency` are out.
    fn pop(&mut self) -> Option<Unit> {
        if self.instance.status().is_terminal() {
            return None;
        }
        let graph = &self.graph.get().inner;
        while let Some(Reverse((_, position))) = self.queue.pop() {
            let spec = graph.step_at(position);
            if self.instance.step_state(&spec.name) != Some(StepState::Active { waiting: false }) {
                continue;
            }
            let concurrency = match &spec.node {
                Node::Step => return Some((position, None)),
                Node::Repeat { .. } => {
                    let n = match self.instance.loop_of(&spec.name) {
                        Some(Loop::Repeat { iteration }) => *iteration,
                        _ => 0,
                    };
                    return Some((position, Some(n)));
                }
                Node::ForEach { concurrency, .. } => *concurrency,
            };
            let Some(Loop::ForEach { items, results }) = self.instance.loop_of(&spec.name) else {
                continue;
            };
            let queue = self.items.entry(position).or_insert_with(|| ItemQueue {
                pending: (0..u32::try_from(items.len()).unwrap_or(u32::MAX))
                    .filter(|i| results.get(i).is_none())
                    .collect(),
                out: 0,
            });
            if concurrency.is_some_and(|limit| queue.out >= limit) {
                continue; // queued again when one of its runs ends
            }
            let Some(index) = queue.pending.pop_front() else {
                continue;
            };
            queue.out += 1;
            if !queue.pending.is_empty() {
                self.queue.push(Reverse(queue_order(graph, position)));
            }
            return Some((position, Some(index)));
        }
        None
    }

    /// Every runnable unit, in graph order, taken off the queue; a runnable
    /// `Terminate` alone (it withdraws the others once it has run).
    fn take_all(&mut self) -> Vec<Unit> {
        let mut batch = Vec::new();
        while let Some(unit) = self.pop() {
            batch.push(unit);
            if self.graph.get().inner.step_at(unit.0).terminates {
                break;
            }
        }
        batch.dedup();
        batch
    }

    /// The config a run gets: the step's config, and for a `ForEach` item
    /// its `"item"` and `"index"` merged over it (a config that is not a
    /// dict goes under `"config"`).
    fn config(&self, (position, iteration): Unit) -> PyResult<Option<Value>> {
        let graph = &self.graph.get().inner;
        let step = graph.step_at(position).name;
        let config = self.instance.step_config(&step).cloned();
        let (Some(index), Some(Loop::ForEach { items, .. })) =
            (iteration, self.instance.loop_of(&step))
        else {
            return Ok(config);
        };
        let mut entries: Vec<(Box<str>, Value)> = match config {
            Some(Value::Dict(map)) => map.iter().map(|(k, v)| (Box::from(k), v.clone())).collect(),
            Some(other) => vec![("config".into(), other)],
            None => Vec::new(),
        };
        entries.retain(|(k, _)| &**k != "item" && &**k != "index");
        let item = items.get(index as usize).cloned().unwrap_or(Value::Null);
        entries.push(("item".into(), item));
        entries.push(("index".into(), Value::Int(index.into())));
        Ok(Some(Value::Dict(Map::from_entries(entries).py()?)))
    }

    /// The instance as a new Python object, for a step to look at.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyInstance>> {
        Bound::new(
            py,
            PyInstance::wrap(self.instance.clone(), self.workflow.clone_ref(py)),
        )
    }

    /// Runs the step at `position`: `step().execute(instance, config,
    /// context)`. An `Exception` becomes the outcome; other
    /// `BaseException`s propagate.
    fn execute<'py>(
        &self,
        py: Python<'py>,
        unit: Unit,
    ) -> PyResult<Result<Bound<'py, PyAny>, PyErr>> {
        let class = self.graph.get().class_at(py, unit.0).clone();
        let config = match self.config(unit)? {
            Some(value) => crate::bindings::convert::to_py(py, &value)?,
            None => py.None().into_bound(py),
        };
        let snapshot = self.snapshot(py)?;
        let context = Bound::new(py, PyContext::from(self.instance.context().clone()))?;
        let outcome = class.call0().and_then(|obj| {
            obj.call_method1(pyo3::intern!(py, "execute"), (snapshot, config, context))
        });
        match outcome {
            Ok(result) => Ok(Ok(result)),
            Err(err) if err.is_instance_of::<PyException>(py) => Ok(Err(err)),
            Err(err) => Err(err),
        }
    }

    /// Applies what the step at `position` produced. Nothing happens when
    /// another branch already failed the instance.
    fn apply_outcome(&mut self, py: Python<'_>, unit: Unit, outcome: Outcome) -> PyResult<()> {
        let (position, iteration) = unit;
        if self.instance.status().is_terminal() {
            self.run_ended(unit);
            return Ok(());
        }
        let graph = self.graph.get();
        // Recorded once applied: a refused outcome leaves no record behind.
        let record = self.records.is_some().then(|| Record::Outcome {
            step: Arc::clone(&graph.inner.step_at(position).key),
            iteration,
            outcome: outcome.clone(),
        });
        let applied = engine::apply_at(
            &mut self.instance,
            &graph.inner,
            position,
            iteration,
            outcome,
            &mut self.effects,
        )
        .py()?;
        // Only an outcome the core took ends a handed-out run; a refused
        // one (a duplicate, say) leaves the queue as it was.
        self.run_ended(unit);
        if applied == Applied::Discarded {
            return Ok(());
        }
        if let Some(record) = record {
            push_record(&mut self.records, &record)?;
        }
        if let Applied::Route { event } = applied {
            self.route(py, position, &event)?;
        }
        self.queue_activated(py)
    }

    /// Notes that a handed-out run of a `ForEach` step ended, so that its
    /// next item may go out.
    fn run_ended(&mut self, (position, iteration): Unit) {
        if iteration.is_none() {
            return;
        }
        if let Some(queue) = self.items.get_mut(&position) {
            queue.out = queue.out.saturating_sub(1);
            if queue.pending.is_empty() && queue.out == 0 {
                self.items.remove(&position);
            } else {
                let graph = &self.graph.get().inner;
                self.queue.push(Reverse(queue_order(graph, position)));
            }
        }
    }

    /// Calls the dynamic route for `event` from the step at `position` and
    /// applies (and records) its choice; a route that fails fails the
    /// instance.
    fn route(&mut self, py: Python<'_>, position: usize, event: &Arc<str>) -> PyResult<()> {
        let graph = self.graph.get();
        let choice = match graph.route(position, event) {
            Some(route) => {
                match choose(py, route.bind(py), &self.instance, graph, position, event) {
                    Ok(chosen) => Ok(chosen),
                    Err(err) if err.is_instance_of::<PyException>(py) => {
                        Err(route_problem(py, &err))
                    }
                    Err(err) => return Err(err),
                }
            }
            None => Ok(Vec::new()),
        };
        let chosen = self.records.is_some().then(|| choice.clone());
        let failed = engine::route_at(
            &mut self.instance,
            &graph.inner,
            position,
            event,
            choice,
            &mut self.effects,
        )
        .py()?;
        if let Some(chosen) = chosen {
            // A failed route is recorded as its failure: a bad choice may
            // name a step the graph does not have.
            let record = Record::Route {
                step: Arc::clone(&graph.inner.step_at(position).key),
                event: Arc::clone(event),
                choice: failed.map_or(chosen, Err),
            };
            push_record(&mut self.records, &record)?;
        }
        Ok(())
    }

    /// Resumes the waiting step at `position` with `event`; `false` when it
    /// was not waiting (nothing changes then).
    fn resume(
        &mut self,
        py: Python<'_>,
        position: usize,
        event: &str,
        timestamp: i64,
    ) -> PyResult<bool> {
        let graph = self.graph.get();
        let mut next = self.instance.clone();
        let resumed = engine::resume_at(
            &mut next,
            &graph.inner,
            position,
            event,
            timestamp,
            &mut self.effects,
        )
        .py()?;
        let applied = match resumed {
            Resumed::NotWaiting => {
                self.effects.activated.clear();
                return Ok(false);
            }
            Resumed::Applied(applied) => applied,
        };
        self.instance = next;
        let record = Record::Resume {
            step: self.key(position),
            event: event.into(),
            timestamp,
        };
        self.record(&record)?;
        if let Applied::Route { event } = applied {
            self.route(py, position, &event)?;
        }
        self.queue_activated(py)?;
        Ok(true)
    }

    /// Fails the instance with `error` (a finished one is left alone).
    fn fail_with(&mut self, error: Map) -> PyResult<bool> {
        if self.instance.status().is_terminal() {
            return Ok(false);
        }
        self.instance.fail_mut(error.clone()).py()?;
        self.record(&Record::Fail { error })?;
        self.queue.clear();
        Ok(true)
    }

    /// Applies a journal record (written by a recording driver), without
    /// recording it again; [`Driver::requeue`] afterwards.
    fn replay(&mut self, bytes: &[u8]) -> PyResult<()> {
        let graph = &self.graph.get().inner;
        let record = journal::decode(bytes, graph).py()?;
        journal::replay_mut(&mut self.instance, graph, record, &mut self.effects).py()
    }

    /// What a step's return value means, completed at `timestamp`.
    fn outcome(
        &self,
        py: Python<'_>,
        position: usize,
        value: &Bound<'_, PyAny>,
        timestamp: i64,
    ) -> PyResult<Outcome> {
        match self.classify(py, position, value, timestamp)? {
            Classified::Outcome(outcome) => Ok(outcome),
            Classified::Awaitable => Ok(Outcome::InvalidResult(format!(
                "{}.execute returned {}; expected Ok, Async, Error or an event str \
                 (an async def execute must be awaited)",
                self.graph.get().class_at(py, position).qualname()?,
                value.get_type().name()?
            ))),
        }
    }

    /// Reads a step's return value. A plain `str` is the hot path: it is
    /// matched against the step's declared events without a copy.
    fn classify(
        &self,
        py: Python<'_>,
        position: usize,
        value: &Bound<'_, PyAny>,
        timestamp: i64,
    ) -> PyResult<Classified> {
        let graph = self.graph.get();
        let spec = graph.inner.step_at(position);
        let name = || {
            graph
                .class_at(py, position)
                .qualname()
                .map(|q| q.to_string())
                .unwrap_or_default()
        };
        if let Ok(text) = value.cast::<PyString>() {
            let event = if value.is_exact_instance_of::<PyString>() {
                text.to_str()?.to_owned()
            } else {
                // A `str` subclass (an enum member) gives its plain value.
                py.get_type::<PyString>()
                    .call_method1("__str__", (value,))?
                    .extract::<String>()?
            };
            if event.is_empty() {
                return Ok(Classified::Outcome(Outcome::InvalidResult(format!(
                    "{}.execute returned an empty event str",
                    name()
                ))));
            }
            let event = spec
                .events
                .iter()
                .find(|e| ***e == *event)
                .cloned()
                .unwrap_or_else(|| event.into());
            return Ok(Classified::Outcome(Outcome::Completed(Completion::event(
                event, timestamp,
            ))));
        }
        let classes = result_classes(py)?;
        if value.is_instance(classes.ok.bind(py))? {
            let event: String = value.getattr(pyo3::intern!(py, "event"))?.extract()?;
            let updates = value.getattr(pyo3::intern!(py, "context_updates"))?;
            let metadata = value.getattr(pyo3::intern!(py, "metadata"))?;
            let stored = to_optional_map(Some(&updates), Path::Root("context_updates"))
                .and_then(|u| Ok((u, to_optional_map(Some(&metadata), Path::Root("metadata"))?)));
            return Ok(Classified::Outcome(match stored {
                Ok((context_updates, metadata_updates)) => Outcome::Completed(Completion {
                    event: event.into(),
                    context_updates,
                    metadata_updates,
                    timestamp,
                }),
                Err(err) if err.is_instance_of::<PyException>(py) => {
                    Outcome::InvalidResult(format!(
                        "{}.execute returned a result that cannot be stored: {}",
                        name(),
                        err.value(py)
                    ))
                }
                Err(err) => return Err(err),
            }));
        }
        if value.is_instance(classes.asynchronous.bind(py))? {
            return Ok(Classified::Outcome(Outcome::Waiting));
        }
        if value.is_instance(classes.error.bind(py))? {
            let reason = value.getattr(pyo3::intern!(py, "reason"))?;
            // A reason that cannot be stored (an exception object, say) is
            // kept as its repr rather than lost.
            let reason = match to_value(&reason, Path::Root("reason")) {
                Ok(v) => v,
                Err(err) if err.is_instance_of::<PyException>(py) => {
                    Value::Str(reason.repr()?.to_string().into())
                }
                Err(err) => return Err(err),
            };
            return Ok(Classified::Outcome(Outcome::Error(reason)));
        }
        if value.hasattr(pyo3::intern!(py, "__await__"))? {
            return Ok(Classified::Awaitable);
        }
        Ok(Classified::Outcome(Outcome::InvalidResult(format!(
            "{}.execute returned {}; expected Ok, Async, Error or an event str",
            name(),
            value.get_type().name()?
        ))))
    }

    fn finish(&mut self, py: Python<'_>) -> PyResult<PyInstance> {
        let before = self.instance.status();
        engine::check_completion_mut(&mut self.instance).py()?;
        if self.instance.status() != before {
            // Replaying `Advance` completes an instance with nothing left,
            // as `check_completion` does.
            self.record(&Record::Advance)?;
        }
        Ok(PyInstance::wrap(
            self.instance.clone(),
            self.workflow.clone_ref(py),
        ))
    }
}

/// Where the step at `position` goes in a driver's queue: `Terminate`
/// first (it runs at once and withdraws everything else), then graph order.
fn queue_order(graph: &crate::core::graph::WorkflowGraph, position: usize) -> (bool, usize) {
    (!graph.step_at(position).terminates, position)
}

/// Appends `record` to `records` when recording.
fn push_record(records: &mut Option<Vec<Vec<u8>>>, record: &Record) -> PyResult<()> {
    if let Some(records) = records.as_mut() {
        records.push(journal::encode(record).py()?);
    }
    Ok(())
}

/// A step's return value, read.
enum Classified {
    /// What it means.
    Outcome(Outcome),
    /// An awaitable (what an `async def execute` returns), to settle first.
    Awaitable,
}

/// An exception a step raised, as an outcome.
fn exception_outcome(exc: &Bound<'_, PyBaseException>) -> Outcome {
    let class = exc.get_type();
    let module = class.module().map(|m| m.to_string()).unwrap_or_default();
    let qualname = class.qualname().map(|q| q.to_string()).unwrap_or_default();
    let message = exc
        .str()
        .map_or_else(|_| "<unprintable exception>".to_string(), |s| s.to_string());
    Outcome::Exception {
        type_name: format!("{module}.{qualname}"),
        message,
    }
}

/// Calls a `ForEach` step's items function with the instance's context:
/// `Ok` with the items (a list or tuple of values), or `Err` saying why
/// there are none (the function raised, returned something else, or an
/// item cannot be stored). A `BaseException` that is not an `Exception`
/// propagates.
fn call_items(
    py: Python<'_>,
    function: &Bound<'_, PyAny>,
    instance: &Instance,
) -> PyResult<Result<Vec<Value>, String>> {
    let context = Bound::new(py, PyContext::from(instance.context().clone()))?;
    let answer = match function.call1((context,)) {
        Ok(answer) => answer,
        Err(err) if err.is_instance_of::<PyException>(py) => {
            return Ok(Err(match exception_outcome(err.value(py)) {
                Outcome::Exception { type_name, message } => {
                    format!("the items function raised {type_name}: {message}")
                }
                _ => err.to_string(),
            }))
        }
        Err(err) => return Err(err),
    };
    if answer.cast::<PyList>().is_err() && answer.cast::<PyTuple>().is_err() {
        return Ok(Err(format!(
            "the items function returned {}, not a list",
            answer.get_type().name()?
        )));
    }
    match to_value(&answer, Path::Root("items")) {
        Ok(Value::List(items)) => Ok(Ok(items.to_vec())),
        Ok(_) => Ok(Err("the items function did not return a list".into())),
        Err(err) if err.is_instance_of::<PyException>(py) => Ok(Err(err.value(py).to_string())),
        Err(err) => Err(err),
    }
}

/// Why a route failed, for the instance's `error`.
fn route_problem(py: Python<'_>, err: &PyErr) -> String {
    let value = err.value(py);
    let is_ours = value
        .get_type()
        .module()
        .is_ok_and(|m| m.to_str().is_ok_and(|m| m == "hephaestus.errors"));
    if is_ours {
        value.to_string()
    } else {
        match exception_outcome(value) {
            Outcome::Exception { type_name, message } => {
                format!("the route raised {type_name}: {message}")
            }
            _ => value.to_string(),
        }
    }
}

/// `hephaestus.engine.run`'s loop: runs the runnable steps of `instance`
/// one at a time in graph order until it is completed, failed, or every
/// active step waits. `settle(result, step)` turns what an `async def`
/// step returned into its result (or raises).
#[pyfunction]
pub fn run(
    graph: &Bound<'_, PyWorkflowGraph>,
    instance: &Bound<'_, PyInstance>,
    settle: &Bound<'_, PyAny>,
) -> PyResult<PyInstance> {
    let py = graph.py();
    let mut driver = Driver::new(graph, instance, false, true, true)?;
    while let Some(unit) = driver.pop() {
        let position = unit.0;
        let outcome = match driver.execute(py, unit)? {
            Ok(value) => match driver.classify(py, position, &value, now_micros()?)? {
                Classified::Outcome(outcome) => outcome,
                Classified::Awaitable => {
                    let class = graph.get().class_at(py, position).clone();
                    match settle.call1((value, class)) {
                        Ok(settled) => driver.outcome(py, position, &settled, now_micros()?)?,
                        Err(err) if err.is_instance_of::<PyException>(py) => {
                            exception_outcome(err.value(py))
                        }
                        Err(err) => return Err(err),
                    }
                }
            },
            Err(err) => exception_outcome(err.value(py)),
        };
        driver.apply_outcome(py, unit, outcome)?;
    }
    driver.finish(py)
}

/// A driver for code that runs steps itself (`hephaestus.engine.arun`, the
/// runtime): it hands out the runnable steps and takes their results. Not
/// frozen: it owns its instance and changes it in place, and `PyO3`'s
/// borrow check refuses concurrent use instead of racing.
///
/// With `record=True` it keeps a journal record of every change it makes
/// (`take_records`); `replay` applies such records to another driver.
#[pyclass(name = "Run", module = "hephaestus._core")]
pub struct PyRun {
    driver: Driver,
}

#[pymethods]
impl PyRun {
    /// Takes over `instance`; with `start` (the default) starts it if it is
    /// pending. With `drive=False` it is a reader: it replays records and
    /// shows the instance, but hands out no runs (and so never takes a
    /// `ForEach` step's items, which may call user code).
    #[new]
    #[pyo3(signature = (graph, instance, *, record=false, start=true, drive=true))]
    fn py_new(
        graph: &Bound<'_, PyWorkflowGraph>,
        instance: &Bound<'_, PyInstance>,
        record: bool,
        start: bool,
        drive: bool,
    ) -> PyResult<Self> {
        Ok(Self {
            driver: Driver::new(graph, instance, record, start, drive)?,
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.driver.graph)?;
        visit.call(&self.driver.workflow)
    }

    /// The instance as it stands.
    #[getter]
    fn instance<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyInstance>> {
        self.driver.snapshot(py)
    }

    /// The instance's status.
    #[getter]
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::bindings::status::to_py(py, self.driver.instance.status())
    }

    /// Starts a pending instance (see `hephaestus.engine.advance`).
    fn start(&mut self, py: Python<'_>) -> PyResult<()> {
        self.driver.start(py)
    }

    /// Every runnable run as `(step, iteration)`, in graph order; each is
    /// handed out once. `iteration` is `None` for an ordinary step, the
    /// item's index for a `ForEach` step (at most its `concurrency` out at
    /// once) and the repetition for a `Repeat` step.
    fn take_runnable<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let units = self.driver.take_all();
        let graph = self.driver.graph.get();
        let pairs = units
            .into_iter()
            .map(|(p, iteration)| (graph.class_at(py, p).clone(), iteration))
            .collect::<Vec<_>>();
        PyList::new(py, pairs)
    }

    /// The config the run `(step, iteration)` gets: the step's config, and
    /// for a `ForEach` item its `"item"` and `"index"` merged over it.
    #[pyo3(signature = (step, iteration=None))]
    fn config<'py>(
        &self,
        step: &Bound<'py, PyAny>,
        iteration: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = step.py();
        match self.driver.config((self.position(step)?, iteration))? {
            Some(value) => crate::bindings::convert::to_py(py, &value),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// Applies what the run `(step, iteration)`'s `execute` returned
    /// (already awaited), as of `timestamp` (default: now).
    #[pyo3(signature = (step, result, *, iteration=None, timestamp=None))]
    fn complete(
        &mut self,
        step: &Bound<'_, PyAny>,
        result: &Bound<'_, PyAny>,
        iteration: Option<u32>,
        timestamp: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = step.py();
        let position = self.position(step)?;
        if self.driver.instance.status().is_terminal() {
            self.driver.run_ended((position, iteration));
            return Ok(());
        }
        let outcome = self
            .driver
            .outcome(py, position, result, timestamp_or_now(timestamp)?)?;
        self.driver
            .apply_outcome(py, (position, iteration), outcome)
    }

    /// What the run `(step, iteration)`'s `execute` returned (already
    /// awaited), read as of `timestamp` (default: now) and encoded as a
    /// journal record, without applying it: for a result made in one
    /// process (a queue worker) and applied by another
    /// (`complete_record`).
    #[pyo3(signature = (step, result, *, iteration=None, timestamp=None))]
    fn outcome_record<'py>(
        &self,
        step: &Bound<'py, PyAny>,
        result: &Bound<'py, PyAny>,
        iteration: Option<u32>,
        timestamp: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let py = step.py();
        let position = self.position(step)?;
        let outcome = self
            .driver
            .outcome(py, position, result, timestamp_or_now(timestamp)?)?;
        let record = Record::Outcome {
            step: Arc::clone(&self.driver.graph.get().inner.step_at(position).key),
            iteration,
            outcome,
        };
        Ok(PyBytes::new(py, &journal::encode(&record).py()?))
    }

    /// Applies a step's result made by `outcome_record` (`complete` with a
    /// result read elsewhere). A record that is not a step's outcome, or
    /// names a step this workflow lacks, raises `SerializationError`.
    fn complete_record(&mut self, py: Python<'_>, record: &[u8]) -> PyResult<()> {
        let graph = &self.driver.graph.get().inner;
        let Record::Outcome {
            step,
            iteration,
            outcome,
        } = journal::decode(record, graph).py()?
        else {
            return Err(to_py_err(&CoreError::serialization(
                "the record is not a step's outcome",
            )));
        };
        let position = graph.position_of_key(&step).ok_or_else(|| {
            to_py_err(&CoreError::serialization(format!(
                "the workflow has no step with the key {step:?}"
            )))
        })?;
        if self.driver.instance.status().is_terminal() {
            self.driver.run_ended((position, iteration));
            return Ok(());
        }
        self.driver
            .apply_outcome(py, (position, iteration), outcome)
    }

    /// Applies the exception the run `(step, iteration)`'s `execute`
    /// raised: the instance fails.
    #[pyo3(signature = (step, error, *, iteration=None))]
    fn fail(
        &mut self,
        step: &Bound<'_, PyAny>,
        error: &Bound<'_, PyBaseException>,
        iteration: Option<u32>,
    ) -> PyResult<()> {
        let position = self.position(step)?;
        self.driver
            .apply_outcome(step.py(), (position, iteration), exception_outcome(error))
    }

    /// Fails the instance with `error` (a dict); `False` when it had
    /// already finished.
    fn fail_with(&mut self, error: &Bound<'_, PyAny>) -> PyResult<bool> {
        let error = to_map(error, Path::Root("error"))?;
        self.driver.fail_with(error)
    }

    /// Resumes the waiting `step` with `event` as of `timestamp` (default:
    /// now); `False` when `step` does not wait. An event `step` does not
    /// declare raises `InvalidTransitionError`.
    #[pyo3(signature = (step, event, *, timestamp=None))]
    fn resume(
        &mut self,
        step: &Bound<'_, PyAny>,
        event: &str,
        timestamp: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let position = self.position(step)?;
        self.driver
            .resume(step.py(), position, event, timestamp_or_now(timestamp)?)
    }

    /// The journal records made since the last call (with `record=True`).
    fn take_records<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let records = self
            .driver
            .records
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        PyList::new(py, records.iter().map(|r| PyBytes::new(py, r)))
    }

    /// Applies journal `records` (an iterable of `bytes`, not recorded
    /// again) and queues the runnable steps afresh.
    fn replay(&mut self, records: &Bound<'_, PyAny>) -> PyResult<()> {
        for record in records.try_iter()? {
            let record = record?;
            let bytes = record
                .cast::<PyBytes>()
                .map_err(|_| pyo3::exceptions::PyTypeError::new_err("journal records are bytes"))?;
            self.driver.replay(bytes.as_bytes())?;
        }
        self.driver.requeue(records.py())
    }

    /// The instance once nothing more can run: completed when nothing is
    /// left.
    fn finish(&mut self, py: Python<'_>) -> PyResult<PyInstance> {
        self.driver.finish(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Run {} {}>",
            self.driver.instance.id(),
            self.driver.instance.status()
        )
    }
}

impl PyRun {
    fn position(&self, step: &Bound<'_, PyAny>) -> PyResult<usize> {
        let step = info(step, "step")?.name;
        engine::position(&self.driver.graph.get().inner, &step, "apply").py()
    }
}

/// A `datetime` as UTC microseconds, or now.
fn timestamp_or_now(timestamp: Option<&Bound<'_, PyAny>>) -> PyResult<i64> {
    match timestamp {
        Some(t) if !t.is_none() => timestamp_from_py(t, "timestamp"),
        _ => now_micros(),
    }
}

/// The journal record of resuming the step with key `step` with `event` at
/// `timestamp`, for a timer that fires without loading its instance.
#[pyfunction]
pub fn resume_record<'py>(
    py: Python<'py>,
    step: &str,
    event: &str,
    timestamp: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let record = Record::Resume {
        step: step.into(),
        event: event.into(),
        timestamp: timestamp_from_py(timestamp, "timestamp")?,
    };
    Ok(PyBytes::new(py, &journal::encode(&record).py()?))
}
