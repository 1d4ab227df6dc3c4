//! The pure engine: moving an instance through its workflow graph (Elixir:
//! `Hephaestus.Core.Engine`). Every decision of the engine is made here;
//! the bindings only run step code and report what it returned.
//!
//! These functions never run step code. The caller executes steps and
//! reports each one's [`Outcome`]; for a dynamic route it calls the route
//! and passes the chosen targets, which are checked against the declared
//! ones here.
//!
//! The join rule fixes the original's: a target becomes active when each of
//! its predecessors is completed or skipped and a taken transition reached
//! it. Successors that a completion did not lead to are skipped once every
//! one of their predecessors is resolved without reaching them, and
//! skipping propagates down the graph; a join reached earlier becomes active
//! when its last open predecessor is skipped. So a join after exclusive
//! branches runs once, after whichever branch ran, while a join after a
//! parallel fan-out waits for every branch.
//!
//! Cost: a completion costs `O(targets · log n)` whatever the size of the
//! workflow. A join with many predecessors keeps a cursor in the instance
//! (how many of its predecessors, in graph order, are known to be
//! resolved), so checking it again costs only what resolved since.
//!
//! Every operation has an in-place form (`*_mut`) for a driver that owns
//! its instance, such as the run loop, and a form that returns a new
//! instance. An in-place operation that fails leaves the instance as it
//! was: each checks everything before it changes anything.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::core::class_ref::ClassRef;
use crate::core::error::{CoreError, CoreResult};
use crate::core::graph::{Items, Join, Node, Target, Transition, WorkflowGraph};
use crate::core::instance::{Completion, Instance, Loop, StepState};
use crate::core::sorted_map::SortedMap;
use crate::core::status::Status;
use crate::core::value::{Map, Value};

/// What running a step produced, as the caller reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `Ok(event, context_updates, metadata)` (or a bare event string).
    Completed(Completion),
    /// `Async()`: the step waits for an event or a timer.
    Waiting,
    /// `Error(reason)`: the step failed; the instance fails at once.
    Error(Value),
    /// The step raised an exception.
    Exception {
        /// The exception's class, `module.QualName`.
        type_name: String,
        /// `str()` of the exception.
        message: String,
    },
    /// The step returned something that is not a result, or a result that
    /// cannot be stored; the message says what and where.
    InvalidResult(String),
}

/// What is left to do after an outcome was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing: the instance holds the outcome.
    Done,
    /// The `Repeat` step's run returned `again`: the step stays active
    /// for its next run (a driver may delay it by the step's interval).
    Again,
    /// Nothing: the step had been withdrawn (another branch won a
    /// first-wins join, or the workflow terminated), so its late outcome
    /// is discarded and the instance is unchanged.
    Discarded,
    /// The step completed with `event`, whose targets a dynamic route
    /// chooses: call the route with the instance's context (which now holds
    /// the step's result), then [`route_mut`].
    Route {
        /// The event the step completed with.
        event: Arc<str>,
    },
}

/// What an operation did that a driver needs to know.
#[derive(Debug, Default)]
pub struct Effects {
    /// Graph positions of the steps that became runnable, in the order they
    /// were activated.
    pub activated: Vec<usize>,
}

/// Joins with at most this many predecessors are checked by a plain scan;
/// larger ones keep a cursor in the instance.
const SCAN_LIMIT: usize = 8;

// -- checks --------------------------------------------------------------------

/// The position of `step` in `graph`, or an error naming both.
pub fn position(
    graph: &WorkflowGraph,
    step: &ClassRef,
    operation: &'static str,
) -> CoreResult<usize> {
    graph
        .position(step)
        .ok_or_else(|| CoreError::StepNotInWorkflow {
            operation,
            step: step.to_string(),
            workflow: graph.workflow().to_string(),
        })
}

/// Fails unless every active or reached step of `instance` belongs to
/// `graph`, so that no step from outside the workflow (put there by raw
/// field changes or a foreign document) is ever run or waited for, and
/// unless its loop progress fits the graph's `ForEach` and `Repeat` steps.
pub fn check_members(
    instance: &Instance,
    graph: &WorkflowGraph,
    operation: &'static str,
) -> CoreResult<()> {
    for (step, _) in instance.active_steps() {
        position(graph, step, operation)?;
    }
    if instance.reached_count() > 0 {
        for (step, state) in instance.steps() {
            if state == StepState::Reached {
                position(graph, step, operation)?;
            }
        }
    }
    for (step, state) in instance.loops() {
        let spec = graph.step_at(position(graph, step, operation)?);
        let fits = match (&spec.node, state) {
            (Node::ForEach { .. }, Loop::ForEach { .. }) => true,
            (Node::Repeat { max_iterations, .. }, Loop::Repeat { iteration }) => {
                iteration < max_iterations
            }
            _ => false,
        };
        if !fits {
            return Err(CoreError::invalid(
                "loops",
                format!(
                    "{operation}: the loop progress of {step} does not fit the workflow {} \
                     (a ForEach's items on a ForEach step, a Repeat's run below its max_iterations)",
                    graph.workflow()
                ),
            ));
        }
    }
    Ok(())
}

/// Fails unless the step at `position` declares `event`.
fn check_declared(
    graph: &WorkflowGraph,
    position: usize,
    event: &str,
    operation: &'static str,
) -> CoreResult<()> {
    let spec = graph.step_at(position);
    if spec.events.iter().any(|e| &**e == event) {
        return Ok(());
    }
    Err(CoreError::UndeclaredEvent {
        operation,
        step: spec.name.to_string(),
        event: event.to_string(),
        declared: quoted(&spec.events),
    })
}

fn quoted(events: &[Arc<str>]) -> String {
    let declared: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    declared.join(", ")
}

// -- reading -------------------------------------------------------------------

/// The runnable steps (active, not waiting) in graph order. Fails when an
/// active or reached step does not belong to the workflow.
pub fn runnable(instance: &Instance, graph: &WorkflowGraph) -> CoreResult<Vec<ClassRef>> {
    check_members(instance, graph, "runnable")?;
    let mut positions: Vec<usize> = instance
        .active_steps()
        .filter(|(_, waiting)| !waiting)
        .filter_map(|(step, _)| graph.position(step))
        .collect();
    positions.sort_unstable();
    Ok(positions
        .into_iter()
        .map(|p| graph.step_at(p).name)
        .collect())
}

fn resolved(instance: &Instance, step: &ClassRef) -> bool {
    matches!(
        instance.step_state(step),
        Some(StepState::Completed | StepState::Skipped)
    )
}

/// Whether every predecessor of the step at `position` is completed or
/// skipped, advancing the step's join cursor past those that are.
fn predecessors_resolved(instance: &mut Instance, graph: &WorkflowGraph, position: usize) -> bool {
    let preds = graph.predecessors_at(position);
    if preds.len() <= SCAN_LIMIT {
        return preds
            .iter()
            .all(|&p| resolved(instance, &graph.step_at(p).name));
    }
    let step = graph.step_at(position).name;
    let start = instance.join_cursor(&step) as usize;
    let mut cursor = start;
    while cursor < preds.len() && resolved(instance, &graph.step_at(preds[cursor]).name) {
        cursor += 1;
    }
    if cursor == preds.len() {
        return true;
    }
    if cursor > start {
        // A graph has far fewer than 2^32 steps.
        instance.set_join_cursor(&step, u32::try_from(cursor).unwrap_or(u32::MAX));
    }
    false
}

// -- the engine ------------------------------------------------------------------

/// Starts a pending instance: `Running`, with the start step active (its
/// config stored) and current. An instance with active steps, or waiting,
/// is returned unchanged; any other goes to [`check_completion`].
pub fn advance(instance: &Instance, graph: &WorkflowGraph) -> CoreResult<Instance> {
    let mut next = instance.clone();
    advance_mut(&mut next, graph, &mut Effects::default())?;
    Ok(next)
}

/// [`advance`] in place.
pub fn advance_mut(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    effects: &mut Effects,
) -> CoreResult<()> {
    if instance.status() == Status::Pending {
        let start = *graph.start();
        instance.activate_step_mut(&start, graph.start_config().cloned())?;
        instance.set_status_mut(Status::Running, Some(Some(start)))?;
        effects.activated.extend(graph.position(&start));
        return Ok(());
    }
    if instance.status() == Status::Waiting || instance.active_count() > 0 {
        return Ok(());
    }
    check_completion_mut(instance)
}

/// `Completed`, with no current step, when nothing is left to run: no
/// active steps and no join still waiting. Terminal and pending instances
/// are returned unchanged.
pub fn check_completion(instance: &Instance) -> CoreResult<Instance> {
    let mut next = instance.clone();
    check_completion_mut(&mut next)?;
    Ok(next)
}

/// [`check_completion`] in place.
pub fn check_completion_mut(instance: &mut Instance) -> CoreResult<()> {
    let status = instance.status();
    if status.is_terminal()
        || status == Status::Pending
        || instance.active_count() > 0
        || instance.reached_count() > 0
    {
        return Ok(());
    }
    instance.set_status_mut(Status::Completed, Some(None))
}

/// Activates what `event` from the completed `from` leads to, applying the
/// join rule, and skips what it can no longer reach (see the module docs).
///
/// For a dynamic route, `chosen` holds the targets the route picked; each
/// must be one the route declares, and there must be at least one. For a
/// static transition `chosen` is ignored. An event without a transition (a
/// `Done` step) changes nothing.
pub fn activate_transitions(
    instance: &Instance,
    graph: &WorkflowGraph,
    from: &ClassRef,
    event: &str,
    chosen: Option<Vec<Target>>,
) -> CoreResult<Instance> {
    let mut next = instance.clone();
    let from = position(graph, from, "activate_transitions")?;
    activate_transitions_mut(
        &mut next,
        graph,
        from,
        event,
        chosen,
        &mut Effects::default(),
    )?;
    Ok(next)
}

/// [`activate_transitions`] in place, for the step at `from`.
pub fn activate_transitions_mut(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    from: usize,
    event: &str,
    chosen: Option<Vec<Target>>,
    effects: &mut Effects,
) -> CoreResult<()> {
    const OP: &str = "activate_transitions";
    check_declared(graph, from, event, OP)?;
    if instance.status().is_terminal() {
        return Err(CoreError::Terminal {
            operation: OP,
            status: instance.status(),
        });
    }
    match graph.targets_at(from, event) {
        None => follow(instance, graph, from, &[], &[], effects),
        Some((Transition::Static(targets), positions)) => {
            follow(instance, graph, from, targets, positions, effects)
        }
        Some((Transition::Dynamic { targets, many }, _)) => {
            let chosen = chosen.unwrap_or_default();
            check_chosen(graph, from, event, targets, *many, &chosen)?;
            let positions: Vec<usize> = chosen
                .iter()
                .filter_map(|t| graph.position(&t.step))
                .collect();
            follow(instance, graph, from, &chosen, &positions, effects)
        }
    }
}

/// Activates the `taken` targets of a completion of the step at `from`
/// (at `positions` in the graph), applying the join rule, and skips what
/// the completion can no longer reach.
fn follow(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    from: usize,
    taken: &[Target],
    positions: &[usize],
    effects: &mut Effects,
) -> CoreResult<()> {
    for (target, &p) in taken.iter().zip(positions) {
        match instance.step_state(&target.step) {
            None | Some(StepState::Reached)
                if graph.step_at(p).join == Join::First || graph.step_at(p).terminates =>
            {
                // The first arrival wins: a first-wins join withdraws the
                // other branches into it; `Terminate` runs at once (and
                // withdraws everything when it does).
                instance.activate_step_mut(&target.step, target.config.clone())?;
                effects.activated.push(p);
                for &w in graph.withdrawn_by(p) {
                    instance.withdraw_step_mut(&graph.step_at(w).name)?;
                }
            }
            None | Some(StepState::Reached) => {
                if predecessors_resolved(instance, graph, p) {
                    instance.activate_step_mut(&target.step, target.config.clone())?;
                    effects.activated.push(p);
                } else {
                    instance.reach_step_mut(&target.step, target.config.clone())?;
                }
            }
            // Already active (reached twice) or finished: nothing to do.
            Some(_) => {}
        }
    }
    let mut taken_positions = positions.to_vec();
    taken_positions.sort_unstable();
    taken_positions.dedup();
    let successors = graph.successors_at(from);
    if successors.len() == taken_positions.len() {
        // Every successor was taken (each target is a successor): nothing
        // was lost.
        return Ok(());
    }
    // Successors this completion did not lead to lost an incoming path.
    let mut lost: VecDeque<usize> = successors
        .iter()
        .copied()
        .filter(|p| taken_positions.binary_search(p).is_err())
        .collect();
    let mut queued: HashSet<usize, foldhash::fast::RandomState> = lost.iter().copied().collect();
    while let Some(p) = lost.pop_front() {
        queued.remove(&p);
        let step = graph.step_at(p).name;
        match instance.step_state(&step) {
            None if predecessors_resolved(instance, graph, p) => {
                instance.skip_step_mut(&step)?;
                for &next in graph.successors_at(p) {
                    if queued.insert(next) {
                        lost.push_back(next);
                    }
                }
            }
            Some(StepState::Reached) if predecessors_resolved(instance, graph, p) => {
                instance.activate_step_mut(&step, None)?;
                effects.activated.push(p);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Fails unless a route's choice is non-empty and declared, and holds one
/// target unless the route may choose `many`.
fn check_chosen(
    graph: &WorkflowGraph,
    from: usize,
    event: &str,
    declared: &[ClassRef],
    many: bool,
    chosen: &[Target],
) -> CoreResult<()> {
    let from = graph.step_at(from).name;
    if !many && chosen.len() > 1 {
        return Err(CoreError::TooManyTargets {
            from: from.to_string(),
            event: event.to_string(),
            chosen: chosen
                .iter()
                .map(|t| t.step.short_name())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if let Some(bad) = chosen.iter().find(|t| !declared.contains(&t.step)) {
        return Err(CoreError::UndeclaredTarget {
            from: from.to_string(),
            event: event.to_string(),
            target: bad.step.to_string(),
            declared: declared
                .iter()
                .map(super::class_ref::ClassRef::short_name)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if chosen.is_empty() {
        return Err(CoreError::NoTarget {
            from: from.to_string(),
            event: event.to_string(),
        });
    }
    Ok(())
}

/// Applies what running `step` produced: completes it and activates what
/// its event leads to, marks it waiting, or fails the instance with an
/// `error` that names the step and the cause (`kind` `"error"`,
/// `"exception"`, `"invalid_result"` or `"invalid_event"`). A completion
/// whose event a dynamic route handles stops after the completion and
/// returns [`Applied::Route`]. For a `Repeat` step this applies its current
/// run (see [`apply_at`]).
///
/// Fails (changing nothing) when the instance is terminal, or the step is
/// not an active step of the workflow.
pub fn apply_mut(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    step: &ClassRef,
    outcome: Outcome,
    effects: &mut Effects,
) -> CoreResult<Applied> {
    let p = position(graph, step, "apply")?;
    apply_at(instance, graph, p, None, outcome, effects)
}

/// [`apply_mut`] for the step at graph position `p`, and for one run of a
/// `ForEach` or `Repeat` step: `iteration` is the item's index (required
/// for a `ForEach` step) or the repetition (optional for a `Repeat` step,
/// whose current run it must be). Each run gets its own history entry
/// (with its iteration) and the step itself none:
/// - a `ForEach` step completes with its event once every item's run has,
///   its result the list of the runs' results in item order;
/// - a `Repeat` step whose run returns `again` stays active for the next
///   run ([`Applied::Again`]), and fails the instance with `kind`
///   `"max_iterations"` after `max_iterations` such runs; any other event
///   completes it.
///
/// A failed run's `error` carries `"index"` (`ForEach`) or `"iteration"`
/// (`Repeat`). The runs of these steps cannot wait: `Async` fails the
/// instance (`kind` `"invalid_result"`).
pub fn apply_at(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    p: usize,
    iteration: Option<u32>,
    outcome: Outcome,
    effects: &mut Effects,
) -> CoreResult<Applied> {
    const OP: &str = "apply";
    let spec = graph.step_at(p);
    let step = &spec.name;
    if instance.status().is_terminal() {
        return Err(CoreError::Terminal {
            operation: OP,
            status: instance.status(),
        });
    }
    match instance.step_state(step) {
        Some(StepState::Active { .. }) => {}
        Some(StepState::Skipped) => return Ok(Applied::Discarded),
        _ => instance.check_active(step, OP)?,
    }
    let run = run_of(instance, spec, iteration)?;
    if let Some(Run::Item(index)) = run {
        check_item(instance, step, index)?;
    }
    let key = &spec.key;
    let fail = |instance: &mut Instance, kind: &str, fields: Vec<(&str, Value)>| {
        let error = failure(kind, key, [])?;
        let error = with_fields(&error, fields.into_iter().chain(run.map(Run::field)))?;
        instance.fail_mut(error).map(|()| Applied::Done)
    };
    match outcome {
        Outcome::Completed(mut completion) => {
            let Some(declared) = spec.events.iter().find(|e| **e == completion.event) else {
                let declared = spec
                    .events
                    .iter()
                    .map(|e| Value::Str(e.as_ref().into()))
                    .collect();
                return fail(
                    instance,
                    "invalid_event",
                    vec![
                        ("event", Value::Str(completion.event.as_ref().into())),
                        ("declared", Value::List(declared)),
                    ],
                );
            };
            // The history shares the graph's copy of the event name.
            completion.event = Arc::clone(declared);
            complete_run(instance, graph, p, run, completion, effects)
        }
        Outcome::Waiting if run.is_some() => fail(
            instance,
            "invalid_result",
            vec![(
                "message",
                Value::Str(
                    format!(
                        "{} returned Async, but the runs of a ForEach or Repeat step cannot wait",
                        step.short_name()
                    )
                    .into(),
                ),
            )],
        ),
        Outcome::Waiting => instance.wait_step_mut(step).map(|()| Applied::Done),
        Outcome::Error(reason) => fail(instance, "error", vec![("reason", reason)]),
        Outcome::Exception { type_name, message } => fail(
            instance,
            "exception",
            vec![
                ("type", Value::Str(type_name.into())),
                ("message", Value::Str(message.into())),
            ],
        ),
        Outcome::InvalidResult(message) => fail(
            instance,
            "invalid_result",
            vec![("message", Value::Str(message.into()))],
        ),
    }
}

/// Applies a completion with a declared event: of an ordinary step (which
/// completes; a `Terminate` then withdraws every open step), of a
/// `ForEach` item (the step completes with its last item), or of a
/// `Repeat` run (`again` runs it again, up to `max_iterations`).
fn complete_run(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    p: usize,
    run: Option<Run>,
    completion: Completion,
    effects: &mut Effects,
) -> CoreResult<Applied> {
    let spec = graph.step_at(p);
    let (step, key) = (&spec.name, &spec.key);
    let event = Arc::clone(&completion.event);
    match run {
        None => {
            instance.complete_step_mut(step, key, completion)?;
            if spec.terminates {
                terminate(instance)?;
            }
        }
        Some(Run::Item(index)) => {
            let stored = instance.record_run_mut(step, key, completion, index, false)?;
            let done = instance.put_item_result_mut(step, index, stored)?;
            let Some(Loop::ForEach { items, results }) = instance.loop_of(step) else {
                unreachable!("put_item_result_mut checked the loop");
            };
            if done < items.len() {
                return Ok(Applied::Done);
            }
            let list: Vec<Map> = results.iter().map(|(_, m)| m.clone()).collect();
            instance.finish_loop_mut(step, key, Some(list))?;
        }
        Some(Run::Repetition(n)) => {
            let Node::Repeat {
                again,
                max_iterations,
            } = &spec.node
            else {
                unreachable!("a repetition is of a Repeat step");
            };
            instance.record_run_mut(step, key, completion, n, true)?;
            if event == *again {
                if n.saturating_add(1) >= *max_iterations {
                    let error = failure(
                        "max_iterations",
                        key,
                        [
                            ("max_iterations", Value::Int((*max_iterations).into())),
                            ("iteration", Value::Int(n.into())),
                        ],
                    )?;
                    instance.fail_mut(error)?;
                    return Ok(Applied::Done);
                }
                instance.set_loop_mut(
                    step,
                    Loop::Repeat {
                        iteration: n.saturating_add(1),
                    },
                )?;
                effects.activated.push(p);
                return Ok(Applied::Again);
            }
            instance.finish_loop_mut(step, key, None)?;
        }
    }
    follow_event(instance, graph, p, event, effects)
}

/// Which run an outcome for `spec` with `iteration` is for: none for an
/// ordinary step, the item for a `ForEach` step (which needs one), the
/// current repetition for a `Repeat` step (which `iteration`, if given,
/// must be).
fn run_of(
    instance: &Instance,
    spec: &crate::core::graph::StepSpec,
    iteration: Option<u32>,
) -> CoreResult<Option<Run>> {
    let step = &spec.name;
    Ok(match (&spec.node, iteration) {
        (Node::Step, None) => None,
        (Node::ForEach { .. }, Some(index)) => Some(Run::Item(index)),
        (Node::Repeat { .. }, requested) => {
            let current = match instance.loop_of(step) {
                Some(Loop::Repeat { iteration }) => *iteration,
                _ => 0,
            };
            if requested.is_some_and(|r| r != current) {
                return Err(CoreError::invalid(
                    "iteration",
                    format!("{step} is at run {current}, not {}", requested.unwrap_or(0)),
                ));
            }
            Some(Run::Repetition(current))
        }
        (Node::Step, Some(_)) | (Node::ForEach { .. }, None) => {
            return Err(CoreError::invalid(
                "iteration",
                format!(
                    "{step} is {}",
                    if iteration.is_some() {
                        "an ordinary step: its outcome has no iteration"
                    } else {
                        "a ForEach step: each outcome names its item's index"
                    }
                ),
            ));
        }
    })
}

/// Fails unless item `index` of the active `ForEach` step `step` exists
/// and has no result yet.
fn check_item(instance: &Instance, step: &ClassRef, index: u32) -> CoreResult<()> {
    match instance.loop_of(step) {
        Some(Loop::ForEach { items, results }) if (index as usize) < items.len() => {
            if results.get(&index).is_some() {
                return Err(CoreError::StepState {
                    operation: "apply",
                    step: format!("{step}[{index}]"),
                    actual: "completed",
                    allowed: "active",
                });
            }
            Ok(())
        }
        Some(Loop::ForEach { items, .. }) => Err(CoreError::invalid(
            "iteration",
            format!("{step} has {} items, not an item {index}", items.len()),
        )),
        _ => Err(CoreError::invalid(
            "iteration",
            format!("{step} has no items yet"),
        )),
    }
}

/// Which run of a `ForEach` or `Repeat` step an outcome is for.
#[derive(Debug, Clone, Copy)]
enum Run {
    /// A `ForEach` item's run, by index.
    Item(u32),
    /// A `Repeat` step's run, counted from 0.
    Repetition(u32),
}

impl Run {
    /// The field a failed run adds to the instance's `error`.
    fn field(self) -> (&'static str, Value) {
        match self {
            Run::Item(index) => ("index", Value::Int(index.into())),
            Run::Repetition(n) => ("iteration", Value::Int(n.into())),
        }
    }
}

/// Activates what `event` from the completed step at `p` leads to: its
/// static targets, or (for a dynamic route) nothing yet but
/// [`Applied::Route`].
fn follow_event(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    p: usize,
    event: Arc<str>,
    effects: &mut Effects,
) -> CoreResult<Applied> {
    match graph.targets_at(p, &event) {
        None => {}
        Some((Transition::Static(targets), positions)) => {
            follow(instance, graph, p, targets, positions, effects)?;
        }
        Some((Transition::Dynamic { .. }, _)) => return Ok(Applied::Route { event }),
    }
    Ok(Applied::Done)
}

/// The `ForEach` steps at `positions` that are active but have no items
/// yet: each needs [`expand_at`] before any of its runs.
pub fn unexpanded<'a>(
    instance: &'a Instance,
    graph: &'a WorkflowGraph,
    positions: impl IntoIterator<Item = usize> + 'a,
) -> impl Iterator<Item = usize> + 'a {
    positions.into_iter().filter(move |&p| {
        let spec = graph.step_at(p);
        matches!(spec.node, Node::ForEach { .. })
            && matches!(
                instance.step_state(&spec.name),
                Some(StepState::Active { .. })
            )
            && instance.loop_of(&spec.name).is_none()
    })
}

/// The items of the `ForEach` step at `p` when they come from a key of
/// `context.initial`: the list there, or why there is none. `None` when
/// its items are computed by the caller.
#[must_use]
pub fn items_from_initial(
    instance: &Instance,
    graph: &WorkflowGraph,
    p: usize,
) -> Option<Result<Vec<Value>, String>> {
    let Node::ForEach {
        items: Items::Key(key),
        ..
    } = &graph.step_at(p).node
    else {
        return None;
    };
    Some(match instance.context().initial().get(key) {
        Some(Value::List(items)) => Ok(items.to_vec()),
        Some(other) => Err(format!(
            "context.initial[{key:?}] is a {}, not a list",
            other.type_name()
        )),
        None => Err(format!("context.initial has no key {key:?}")),
    })
}

/// Gives the active `ForEach` step at `p` its items, as they were taken
/// when it activated (or why they could not be: `Err(message)`). Too many
/// items (more than its `max_items`) or none to be had fail the instance
/// with `kind` `"items"` before any run. No items complete the step at
/// once with `[]` and follow its event.
pub fn expand_at(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    p: usize,
    items: Result<Vec<Value>, String>,
    effects: &mut Effects,
) -> CoreResult<Applied> {
    let spec = graph.step_at(p);
    let Node::ForEach { max_items, .. } = &spec.node else {
        return Err(CoreError::invalid(
            "items",
            format!("{} is not a ForEach step", spec.name),
        ));
    };
    if unexpanded(instance, graph, [p]).next().is_none() {
        return Err(CoreError::invalid(
            "items",
            format!(
                "{} is not an active ForEach step waiting for its items",
                spec.name
            ),
        ));
    }
    let problem = match items {
        Ok(items) if items.len() > *max_items as usize => Some(format!(
            "{} items, more than max_items={max_items}",
            items.len()
        )),
        Ok(items) if items.is_empty() => {
            instance.finish_loop_mut(&spec.name, &spec.key, Some(Vec::new()))?;
            return follow_event(instance, graph, p, Arc::clone(&spec.events[0]), effects);
        }
        Ok(items) => {
            instance.set_loop_mut(
                &spec.name,
                Loop::ForEach {
                    items: items.into(),
                    results: SortedMap::new(),
                },
            )?;
            effects.activated.push(p);
            return Ok(Applied::Done);
        }
        Err(message) => Some(message),
    };
    let error = failure(
        "items",
        &spec.key,
        [("message", Value::Str(problem.unwrap_or_default().into()))],
    )?;
    instance.fail_mut(error)?;
    Ok(Applied::Done)
}

/// `error` with `fields` added (later keys win).
fn with_fields<'a>(
    error: &Map,
    fields: impl IntoIterator<Item = (&'a str, Value)>,
) -> CoreResult<Map> {
    let mut entries: Vec<(Box<str>, Value)> = error
        .iter()
        .map(|(k, v)| (Box::from(k), v.clone()))
        .collect();
    for (key, value) in fields {
        entries.retain(|(k, _)| &**k != key);
        entries.push((Box::from(key), value));
    }
    Map::from_entries(entries)
}

/// Finishes a completion that a dynamic route handles: activates the
/// targets the route chose, or, when the route failed (`Err` with its
/// message) or chose badly, fails the instance with `kind` `"route"`,
/// keeping the step's completion.
pub fn route_mut(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    step: &ClassRef,
    event: &str,
    choice: Result<Vec<Target>, String>,
    effects: &mut Effects,
) -> CoreResult<()> {
    let p = position(graph, step, "route")?;
    route_at(instance, graph, p, event, choice, effects).map(|_| ())
}

/// [`route_mut`] for the step at graph position `p`. Returns the message
/// of the route's failure when it failed the instance (also when it chose
/// a target it does not declare), so that a journal can record the failure
/// rather than a choice that names no step of the graph.
pub fn route_at(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    p: usize,
    event: &str,
    choice: Result<Vec<Target>, String>,
    effects: &mut Effects,
) -> CoreResult<Option<String>> {
    let problem = match choice {
        Ok(chosen) => {
            match activate_transitions_mut(instance, graph, p, event, Some(chosen), effects) {
                Ok(()) => return Ok(None),
                Err(
                    err @ (CoreError::UndeclaredTarget { .. }
                    | CoreError::TooManyTargets { .. }
                    | CoreError::NoTarget { .. }),
                ) => err.to_string(),
                Err(err) => return Err(err),
            }
        }
        Err(message) => message,
    };
    let key = &graph.step_at(p).key;
    instance.fail_mut(failure(
        "route",
        key,
        [
            ("event", Value::Str(event.into())),
            ("message", Value::Str(problem.as_str().into())),
        ],
    )?)?;
    Ok(Some(problem))
}

/// The outcome of [`resume_mut`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// The step was not waiting; nothing changed.
    NotWaiting,
    /// The step completed; as for [`apply_mut`].
    Applied(Applied),
}

/// Resumes the waiting `step` with `event`: completes it (storing nothing
/// under its key), activates its transitions, and clears the current step.
/// The status goes back to `Running` unless every remaining active step
/// waits. A step that is not waiting leaves the instance unchanged. An
/// event the step does not declare is an error naming the declared events.
pub fn resume_mut(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    step: &ClassRef,
    event: &str,
    timestamp: i64,
    effects: &mut Effects,
) -> CoreResult<Resumed> {
    let p = position(graph, step, "resume_step")?;
    resume_at(instance, graph, p, event, timestamp, effects)
}

/// [`resume_mut`] for the step at graph position `p`.
pub fn resume_at(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    p: usize,
    event: &str,
    timestamp: i64,
    effects: &mut Effects,
) -> CoreResult<Resumed> {
    const OP: &str = "resume_step";
    check_declared(graph, p, event, OP)?;
    let spec = graph.step_at(p);
    let step = &spec.name;
    if instance.step_state(step) != Some(StepState::Active { waiting: true }) {
        return Ok(Resumed::NotWaiting);
    }
    let event = spec
        .events
        .iter()
        .find(|e| &***e == event)
        .map_or_else(|| Arc::from(event), Arc::clone);
    instance.complete_step_mut(
        step,
        &spec.key,
        Completion::event(Arc::clone(&event), timestamp),
    )?;
    instance.set_status_mut(Status::Running, Some(None))?;
    if matches!(
        graph.transition_at(p, &event),
        Some(Transition::Dynamic { .. })
    ) {
        return Ok(Resumed::Applied(Applied::Route { event }));
    }
    activate_transitions_mut(instance, graph, p, &event, None, effects)?;
    Ok(Resumed::Applied(Applied::Done))
}

/// Ends the workflow early (a completed `Terminate`): every active,
/// waiting or reached step is withdrawn, so nothing more runs and the
/// instance completes.
fn terminate(instance: &mut Instance) -> CoreResult<()> {
    let open: Vec<ClassRef> = instance
        .steps()
        .filter(|(_, state)| matches!(state, StepState::Active { .. } | StepState::Reached))
        .map(|(step, _)| *step)
        .collect();
    for step in &open {
        instance.withdraw_step_mut(step)?;
    }
    Ok(())
}

/// Fails the instance with `error`: status `Failed`, active steps cleared.
/// A completed or failed instance refuses.
pub fn fail(instance: &Instance, error: Map) -> CoreResult<Instance> {
    let mut next = instance.clone();
    next.fail_mut(error)?;
    Ok(next)
}

/// The `error` of a failed step: `{"kind": kind, "step": step_key, ...}`.
fn failure<const N: usize>(
    kind: &str,
    step_key: &str,
    fields: [(&str, Value); N],
) -> CoreResult<Map> {
    let mut entries: Vec<(Box<str>, Value)> = Vec::with_capacity(N + 2);
    entries.push(("kind".into(), Value::Str(kind.into())));
    entries.push(("step".into(), Value::Str(step_key.into())));
    entries.extend(fields.into_iter().map(|(k, v)| (Box::from(k), v)));
    Map::from_entries(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::context::StepResult;
    use crate::core::execution_entry::ExecutionEntry;
    use crate::core::graph::{GraphSpec, Join, StepSpec};

    fn r(name: &str) -> ClassRef {
        ClassRef::parse(&format!("shop:{name}")).unwrap()
    }

    fn graph(steps: &[(&str, &[&str])], transitions: &[(&str, &str, &[&str])]) -> WorkflowGraph {
        let spec = GraphSpec {
            workflow: "Flow".into(),
            start: r(steps[0].0),
            start_config: None,
            steps: steps
                .iter()
                .map(|(name, events)| StepSpec {
                    name: r(name),
                    key: crate::core::class_ref::underscore(name).into(),
                    events: events.iter().map(|e| Arc::from(*e)).collect(),
                    is_done: *name == "Done" || *name == "Terminate",
                    terminates: *name == "Terminate",
                    join: if name.starts_with("First") {
                        crate::core::graph::Join::First
                    } else {
                        crate::core::graph::Join::All
                    },
                    node: crate::core::graph::Node::Step,
                })
                .collect(),
            transitions: transitions
                .iter()
                .map(|(from, event, to)| {
                    let targets = to
                        .iter()
                        .map(|t| Target {
                            step: r(t),
                            config: None,
                        })
                        .collect();
                    (r(from), Arc::from(*event), Transition::Static(targets))
                })
                .collect(),
        };
        WorkflowGraph::build(spec).unwrap()
    }

    fn new() -> Instance {
        Instance::new("i", r("Flow"), 1, Map::default()).unwrap()
    }

    fn done(event: &str, tick: i64) -> Outcome {
        Outcome::Completed(Completion::event(event, tick))
    }

    /// Runs every runnable step with the event `choose` picks, like a
    /// driver: in graph order, by [`apply_mut`].
    fn run(graph: &WorkflowGraph, choose: impl Fn(&str) -> &'static str) -> Instance {
        let mut inst = new();
        let mut effects = Effects::default();
        advance_mut(&mut inst, graph, &mut effects).unwrap();
        for tick in 0..100 {
            let Some(step) = runnable(&inst, graph).unwrap().first().copied() else {
                break;
            };
            let name = step.short_name();
            let event = if name == "Done" { "done" } else { choose(name) };
            let applied =
                apply_mut(&mut inst, graph, &step, done(event, tick), &mut effects).unwrap();
            assert_eq!(applied, Applied::Done);
        }
        check_completion(&inst).unwrap()
    }

    fn names(inst: &Instance, state: StepState) -> Vec<&'static str> {
        let mut names: Vec<_> = inst
            .steps()
            .filter(|(_, s)| *s == state)
            .map(|(k, _)| k.short_name())
            .collect();
        names.sort_unstable();
        names
    }

    fn exclusive() -> WorkflowGraph {
        graph(
            &[
                ("A", &["valid", "invalid"]),
                ("B", &["ok"]),
                ("C", &["ok"]),
                ("D", &["ok"]),
                ("Done", &["done"]),
            ],
            &[
                ("A", "valid", &["B"]),
                ("A", "invalid", &["C"]),
                ("B", "ok", &["D"]),
                ("C", "ok", &["D"]),
                ("D", "ok", &["Done"]),
            ],
        )
    }

    #[test]
    fn a_join_after_exclusive_branches_runs_once_either_way() {
        for (event, ran, skipped) in [("valid", "B", "C"), ("invalid", "C", "B")] {
            let done = run(&exclusive(), |name| if name == "A" { event } else { "ok" });
            assert_eq!(done.status(), Status::Completed);
            assert_eq!(
                done.current_step(),
                None,
                "completion clears the current step"
            );
            let mut expected = vec!["A", ran, "D", "Done"];
            expected.sort_unstable();
            assert_eq!(names(&done, StepState::Completed), expected);
            assert_eq!(names(&done, StepState::Skipped), [skipped]);
            assert_eq!(done.history_len(), 4, "each step ran once");
        }
    }

    fn fan_in(width: usize) -> WorkflowGraph {
        let branches: Vec<String> = (0..width).map(|i| format!("B{i}")).collect();
        let mut steps: Vec<(&str, &[&str])> = vec![("A", &["go"])];
        steps.extend(branches.iter().map(|b| (b.as_str(), &["ok"][..])));
        steps.extend([("J", &["ok"][..]), ("Done", &["done"][..])]);
        let targets: Vec<&str> = branches.iter().map(String::as_str).collect();
        let mut transitions: Vec<(&str, &str, &[&str])> = vec![("A", "go", &targets)];
        transitions.extend(branches.iter().map(|b| (b.as_str(), "ok", &["J"][..])));
        transitions.push(("J", "ok", &["Done"]));
        graph(&steps, &transitions)
    }

    #[test]
    fn a_parallel_join_waits_for_every_branch_in_any_order() {
        for width in [2, 3, SCAN_LIMIT + 5, 40] {
            let g = fan_in(width);
            let mut inst = new();
            let mut effects = Effects::default();
            advance_mut(&mut inst, &g, &mut effects).unwrap();
            apply_mut(&mut inst, &g, &r("A"), done("go", 0), &mut effects).unwrap();
            // Complete the branches from both ends towards the middle.
            let mut order: Vec<usize> = Vec::new();
            let (mut lo, mut hi) = (0, width - 1);
            while lo <= hi {
                order.push(hi);
                if lo != hi {
                    order.push(lo);
                }
                lo += 1;
                hi = hi.saturating_sub(1);
                if hi < lo {
                    break;
                }
            }
            for (n, i) in order.iter().enumerate() {
                let j = inst.step_state(&r("J"));
                assert!(
                    matches!(j, None | Some(StepState::Reached)),
                    "{width}: J is {j:?}"
                );
                apply_mut(
                    &mut inst,
                    &g,
                    &r(&format!("B{i}")),
                    done("ok", 1),
                    &mut effects,
                )
                .unwrap();
                let expect_active = n == order.len() - 1;
                assert_eq!(
                    inst.step_state(&r("J")) == Some(StepState::Active { waiting: false }),
                    expect_active,
                    "width {width}, after {n} branches"
                );
            }
        }
    }

    #[test]
    fn a_reached_join_runs_when_its_last_open_predecessor_is_skipped() {
        // A fans out to X and Y; X reaches J; Y may go to J or straight to K.
        let g = graph(
            &[
                ("A", &["go"]),
                ("X", &["ok"]),
                ("Y", &["join", "leave"]),
                ("J", &["ok"]),
                ("K", &["ok"]),
                ("Done", &["done"]),
            ],
            &[
                ("A", "go", &["X", "Y"]),
                ("X", "ok", &["J"]),
                ("Y", "join", &["J"]),
                ("Y", "leave", &["K"]),
                ("J", "ok", &["K"]),
                ("K", "ok", &["Done"]),
            ],
        );
        let done = run(&g, |name| match name {
            "A" => "go",
            "Y" => "leave",
            _ => "ok",
        });
        assert_eq!(done.status(), Status::Completed);
        assert!(names(&done, StepState::Completed).contains(&"J"));
        assert_eq!(done.history_len(), 6);
    }

    #[test]
    fn skipping_propagates_down_a_path_not_taken() {
        let g = graph(
            &[
                ("A", &["left", "right"]),
                ("L1", &["ok"]),
                ("L2", &["ok"]),
                ("R", &["ok"]),
                ("Done", &["done"]),
            ],
            &[
                ("A", "left", &["L1"]),
                ("A", "right", &["R"]),
                ("L1", "ok", &["L2"]),
                ("L2", "ok", &["Done"]),
                ("R", "ok", &["Done"]),
            ],
        );
        let done = run(&g, |name| if name == "A" { "right" } else { "ok" });
        assert_eq!(names(&done, StepState::Skipped), ["L1", "L2"]);
        assert_eq!(done.status(), Status::Completed);
    }

    #[test]
    fn an_undeclared_event_is_refused_by_activate_and_fails_an_applied_outcome() {
        let g = exclusive();
        let inst = advance(&new(), &g).unwrap();
        let err = activate_transitions(&inst, &g, &r("A"), "ok", None).unwrap_err();
        assert!(matches!(err, CoreError::UndeclaredEvent { .. }), "{err}");
        let mut applied = inst.clone();
        apply_mut(
            &mut applied,
            &g,
            &r("A"),
            done("bogus", 0),
            &mut Effects::default(),
        )
        .unwrap();
        assert_eq!(applied.status(), Status::Failed);
        let kind = applied.error().and_then(|e| e.get("kind")).cloned();
        assert_eq!(kind, Some(Value::Str("invalid_event".into())));
    }

    #[test]
    fn a_step_outside_the_workflow_is_refused_before_anything_changes() {
        let g = exclusive();
        let inst = advance(&new(), &g).unwrap();
        let stray = inst.activate_step(&r("Stray"), None).unwrap();
        assert!(matches!(
            runnable(&stray, &g),
            Err(CoreError::StepNotInWorkflow { .. })
        ));
        let mut applied = stray.clone();
        let err = apply_mut(
            &mut applied,
            &g,
            &r("Stray"),
            done("ok", 0),
            &mut Effects::default(),
        );
        assert!(matches!(err, Err(CoreError::StepNotInWorkflow { .. })));
        assert_eq!(applied, stray, "unchanged");
    }

    #[test]
    fn failures_name_the_step_and_the_cause() {
        let g = exclusive();
        let started = advance(&new(), &g).unwrap();
        let cases = [
            (Outcome::Error(Value::Str("no".into())), "error"),
            (
                Outcome::Exception {
                    type_name: "builtins.KeyError".into(),
                    message: "'x'".into(),
                },
                "exception",
            ),
            (
                Outcome::InvalidResult("A.execute returned int".into()),
                "invalid_result",
            ),
        ];
        for (outcome, kind) in cases {
            let mut inst = started.clone();
            apply_mut(&mut inst, &g, &r("A"), outcome, &mut Effects::default()).unwrap();
            assert_eq!(inst.status(), Status::Failed);
            let error = inst.error().unwrap();
            assert_eq!(error.get("kind"), Some(&Value::Str(kind.into())));
            assert_eq!(error.get("step"), Some(&Value::Str("a".into())));
            assert_eq!(inst.active_count(), 0);
            assert!(matches!(
                apply_mut(
                    &mut inst,
                    &g,
                    &r("A"),
                    done("valid", 0),
                    &mut Effects::default()
                ),
                Err(CoreError::Terminal { .. })
            ));
        }
    }

    #[test]
    fn fail_refuses_a_finished_instance() {
        let completed = run(&exclusive(), |n| if n == "A" { "valid" } else { "ok" });
        assert_eq!(completed.status(), Status::Completed);
        assert!(matches!(
            fail(&completed, Map::default()),
            Err(CoreError::Terminal { .. })
        ));
    }

    #[test]
    fn advance_starts_a_pending_instance_only() {
        let g = exclusive();
        let started = advance(&new(), &g).unwrap();
        assert_eq!(started.status(), Status::Running);
        assert_eq!(started.current_step(), Some(&r("A")));
        assert_eq!(
            advance(&started, &g).unwrap(),
            started,
            "active steps: unchanged"
        );
    }

    #[test]
    fn resume_checks_the_event_and_ignores_steps_that_do_not_wait() {
        let g = exclusive();
        let started = advance(&new(), &g).unwrap();
        let mut inst = started.clone();
        let mut fx = Effects::default();
        let err = resume_mut(&mut inst, &g, &r("A"), "bogus", 0, &mut fx).unwrap_err();
        assert!(err.to_string().contains("\"valid\", \"invalid\""), "{err}");
        assert_eq!(
            resume_mut(&mut inst, &g, &r("A"), "valid", 0, &mut fx).unwrap(),
            Resumed::NotWaiting
        );
        assert_eq!(inst, started);
        let mut waiting = started.wait_step(&r("A")).unwrap();
        assert_eq!(waiting.status(), Status::Waiting);
        let resumed = resume_mut(&mut waiting, &g, &r("A"), "valid", 0, &mut fx).unwrap();
        assert_eq!(resumed, Resumed::Applied(Applied::Done));
        assert_eq!(waiting.status(), Status::Running);
        assert_eq!(waiting.current_step(), None);
        assert_eq!(
            waiting.step_state(&r("B")),
            Some(StepState::Active { waiting: false })
        );
    }

    fn routed() -> WorkflowGraph {
        let spec = GraphSpec {
            workflow: "Flow".into(),
            start: r("T"),
            start_config: None,
            steps: ["T", "F", "S", "Done"]
                .iter()
                .map(|n| StepSpec {
                    name: r(n),
                    key: n.to_lowercase().into(),
                    events: vec![Arc::from(if *n == "T" { "routed" } else { "done" })],
                    is_done: *n == "Done" || *n == "Terminate",
                    terminates: *n == "Terminate",
                    join: if n.starts_with("First") {
                        crate::core::graph::Join::First
                    } else {
                        crate::core::graph::Join::All
                    },
                    node: crate::core::graph::Node::Step,
                })
                .collect(),
            transitions: vec![
                (
                    r("T"),
                    "routed".into(),
                    Transition::Dynamic {
                        targets: vec![r("F"), r("S")],
                        many: false,
                    },
                ),
                (
                    r("F"),
                    "done".into(),
                    Transition::Static(vec![Target {
                        step: r("Done"),
                        config: None,
                    }]),
                ),
                (
                    r("S"),
                    "done".into(),
                    Transition::Static(vec![Target {
                        step: r("Done"),
                        config: None,
                    }]),
                ),
            ],
        };
        WorkflowGraph::build(spec).unwrap()
    }

    #[test]
    fn a_dynamic_route_must_choose_a_declared_target() {
        let g = routed();
        let mut inst = advance(&new(), &g).unwrap();
        let mut fx = Effects::default();
        let applied = apply_mut(&mut inst, &g, &r("T"), done("routed", 0), &mut fx).unwrap();
        assert_eq!(
            applied,
            Applied::Route {
                event: "routed".into()
            }
        );
        let pick = |n: &str| {
            Some(vec![Target {
                step: r(n),
                config: None,
            }])
        };
        let err = activate_transitions(&inst, &g, &r("T"), "routed", pick("Done")).unwrap_err();
        assert!(matches!(err, CoreError::UndeclaredTarget { .. }), "{err}");
        let err = activate_transitions(&inst, &g, &r("T"), "routed", Some(vec![])).unwrap_err();
        assert!(matches!(err, CoreError::NoTarget { .. }), "{err}");
        let chosen = activate_transitions(&inst, &g, &r("T"), "routed", pick("S")).unwrap();
        assert_eq!(
            chosen.step_state(&r("S")),
            Some(StepState::Active { waiting: false })
        );
        assert_eq!(chosen.step_state(&r("F")), Some(StepState::Skipped));
        // In a run, a bad choice fails the instance and keeps the completion.
        let mut failed = inst.clone();
        route_mut(
            &mut failed,
            &g,
            &r("T"),
            "routed",
            Ok(vec![Target {
                step: r("Done"),
                config: None,
            }]),
            &mut fx,
        )
        .unwrap();
        assert_eq!(failed.status(), Status::Failed);
        assert_eq!(failed.step_state(&r("T")), Some(StepState::Completed));
        assert_eq!(
            failed.error().and_then(|e| e.get("kind")),
            Some(&Value::Str("route".into()))
        );
        let mut raised = inst;
        route_mut(
            &mut raised,
            &g,
            &r("T"),
            "routed",
            Err("boom".into()),
            &mut fx,
        )
        .unwrap();
        assert_eq!(
            raised.error().and_then(|e| e.get("message")),
            Some(&Value::Str("boom".into()))
        );
    }

    /// Applies `event` as the outcome of the step `name`.
    fn step(inst: &mut Instance, g: &WorkflowGraph, name: &str, event: &str) -> Applied {
        apply_mut(inst, g, &r(name), done(event, 0), &mut Effects::default()).unwrap()
    }

    fn race() -> WorkflowGraph {
        graph(
            &[
                ("A", &["go"]),
                ("B", &["ok"]),
                ("C", &["ok"]),
                ("C2", &["ok"]),
                ("FirstJ", &["ok"]),
                ("Done", &["done"]),
            ],
            &[
                ("A", "go", &["B", "C"]),
                ("B", "ok", &["FirstJ"]),
                ("C", "ok", &["C2"]),
                ("C2", "ok", &["FirstJ"]),
                ("FirstJ", "ok", &["Done"]),
            ],
        )
    }

    #[test]
    fn a_first_wins_join_runs_once_and_withdraws_the_other_branches() {
        let g = race();
        let withdrawn: Vec<_> = g
            .withdrawn_by(g.position(&r("FirstJ")).unwrap())
            .iter()
            .map(|&p| g.step_at(p).name.short_name())
            .collect();
        assert_eq!(
            withdrawn,
            ["A", "B", "C", "C2"],
            "every step that only feeds it"
        );
        let mut inst = advance(&new(), &g).unwrap();
        step(&mut inst, &g, "A", "go");
        step(&mut inst, &g, "B", "ok");
        assert_eq!(
            inst.step_state(&r("FirstJ")),
            Some(StepState::Active { waiting: false })
        );
        assert_eq!(names(&inst, StepState::Skipped), ["C", "C2"]);
        assert_eq!(names(&inst, StepState::Completed), ["A", "B"]);
        // C was running: its late result is discarded, and changes nothing.
        let before = inst.clone();
        assert_eq!(step(&mut inst, &g, "C", "ok"), Applied::Discarded);
        assert_eq!(inst, before);
        step(&mut inst, &g, "FirstJ", "ok");
        step(&mut inst, &g, "Done", "done");
        let inst = check_completion(&inst).unwrap();
        assert_eq!(inst.status(), Status::Completed);
        assert_eq!(inst.history_len(), 4);
    }

    #[test]
    fn a_first_wins_join_withdraws_a_waiting_branch() {
        let g = race();
        let mut inst = advance(&new(), &g).unwrap();
        step(&mut inst, &g, "A", "go");
        apply_mut(
            &mut inst,
            &g,
            &r("C"),
            Outcome::Waiting,
            &mut Effects::default(),
        )
        .unwrap();
        assert_eq!(inst.waiting_count(), 1);
        step(&mut inst, &g, "B", "ok");
        assert_eq!(
            inst.waiting_count(),
            0,
            "the waiting branch stopped waiting"
        );
        assert_eq!(inst.status(), Status::Running);
        assert_eq!(names(&inst, StepState::Skipped), ["C", "C2"]);
        let resumed = resume_mut(&mut inst, &g, &r("C"), "ok", 0, &mut Effects::default());
        assert_eq!(resumed.unwrap(), Resumed::NotWaiting);
    }

    #[test]
    fn terminate_withdraws_every_open_step_and_completes() {
        let g = graph(
            &[
                ("A", &["go"]),
                ("B", &["ok", "stop"]),
                ("C", &["ok"]),
                ("J", &["ok"]),
                ("Terminate", &["done"]),
                ("Done", &["done"]),
            ],
            &[
                ("A", "go", &["B", "C"]),
                ("B", "ok", &["J"]),
                ("B", "stop", &["Terminate"]),
                ("C", "ok", &["J"]),
                ("J", "ok", &["Done"]),
            ],
        );
        let mut inst = advance(&new(), &g).unwrap();
        step(&mut inst, &g, "A", "go");
        step(&mut inst, &g, "B", "stop");
        assert!(
            names(&inst, StepState::Skipped).is_empty(),
            "J still waits for C"
        );
        step(&mut inst, &g, "Terminate", "done");
        assert_eq!(names(&inst, StepState::Skipped), ["C"]);
        assert_eq!(inst.active_count(), 0);
        let inst = check_completion(&inst).unwrap();
        assert_eq!(inst.status(), Status::Completed);
        assert_eq!(names(&inst, StepState::Completed), ["A", "B", "Terminate"]);
    }

    #[test]
    fn a_route_chooses_several_targets_only_when_declared_many() {
        let build = |many: bool| {
            let mut spec = GraphSpec {
                workflow: "Flow".into(),
                start: r("T"),
                start_config: None,
                steps: ["T", "F", "S", "X", "J", "Done"]
                    .iter()
                    .map(|n| StepSpec {
                        name: r(n),
                        key: crate::core::class_ref::underscore(n).into(),
                        events: vec![Arc::from(if *n == "T" { "routed" } else { "ok" })],
                        is_done: *n == "Done",
                        terminates: false,
                        join: Join::All,
                        node: crate::core::graph::Node::Step,
                    })
                    .collect(),
                transitions: Vec::new(),
            };
            spec.steps[5].events = vec![Arc::from("done")];
            let to = |t: &str| {
                Transition::Static(vec![Target {
                    step: r(t),
                    config: None,
                }])
            };
            spec.transitions = vec![
                (
                    r("T"),
                    Arc::from("routed"),
                    Transition::Dynamic {
                        targets: vec![r("F"), r("S"), r("X")],
                        many,
                    },
                ),
                (r("F"), Arc::from("ok"), to("J")),
                (r("S"), Arc::from("ok"), to("J")),
                (r("X"), Arc::from("ok"), to("J")),
                (r("J"), Arc::from("ok"), to("Done")),
            ];
            WorkflowGraph::build(spec).unwrap()
        };
        let two = || {
            Some(
                ["F", "S"]
                    .iter()
                    .map(|n| Target {
                        step: r(n),
                        config: None,
                    })
                    .collect(),
            )
        };
        let single = build(false);
        let mut inst = advance(&new(), &single).unwrap();
        step(&mut inst, &single, "T", "routed");
        let err = activate_transitions(&inst, &single, &r("T"), "routed", two()).unwrap_err();
        assert!(matches!(err, CoreError::TooManyTargets { .. }), "{err}");
        assert!(err.to_string().contains("many=True"), "{err}");

        let g = build(true);
        let mut inst = advance(&new(), &g).unwrap();
        step(&mut inst, &g, "T", "routed");
        let mut inst = activate_transitions(&inst, &g, &r("T"), "routed", two()).unwrap();
        assert_eq!(names(&inst, StepState::Skipped), ["X"]);
        step(&mut inst, &g, "F", "ok");
        assert_eq!(
            inst.step_state(&r("J")),
            Some(StepState::Reached),
            "J waits for S"
        );
        step(&mut inst, &g, "S", "ok");
        assert_eq!(
            inst.step_state(&r("J")),
            Some(StepState::Active { waiting: false })
        );
    }

    /// A -go-> ForEach(Item over "items", max 3) -done-> Repeat(Poll,
    /// again "more", max 3) -settled-> Done.
    fn loops() -> WorkflowGraph {
        let mut spec = GraphSpec {
            workflow: "Flow".into(),
            start: r("A"),
            start_config: None,
            steps: [
                ("A", vec!["go"]),
                ("Item", vec!["done"]),
                ("Poll", vec!["more", "settled"]),
                ("Done", vec!["done"]),
            ]
            .into_iter()
            .map(|(n, events)| StepSpec {
                name: r(n),
                key: crate::core::class_ref::underscore(n).into(),
                events: events.into_iter().map(Arc::from).collect(),
                is_done: n == "Done",
                terminates: false,
                join: Join::All,
                node: Node::Step,
            })
            .collect(),
            transitions: Vec::new(),
        };
        spec.steps[1].node = Node::ForEach {
            items: Items::Key("items".into()),
            concurrency: None,
            max_items: 3,
        };
        spec.steps[2].node = Node::Repeat {
            again: "more".into(),
            max_iterations: 3,
        };
        let to = |t: &str| {
            Transition::Static(vec![Target {
                step: r(t),
                config: None,
            }])
        };
        spec.transitions = vec![
            (r("A"), "go".into(), to("Item")),
            (r("Item"), "done".into(), to("Poll")),
            (r("Poll"), "settled".into(), to("Done")),
        ];
        WorkflowGraph::build(spec).unwrap()
    }

    fn with_items(items: Vec<Value>) -> Instance {
        let initial = Map::from_entries(vec![("items".into(), Value::List(items.into()))]).unwrap();
        Instance::new("i", r("Flow"), 1, initial).unwrap()
    }

    fn expand(inst: &mut Instance, g: &WorkflowGraph) -> Applied {
        let p = g.position(&r("Item")).unwrap();
        assert_eq!(unexpanded(inst, g, [p]).collect::<Vec<_>>(), [p]);
        let items = items_from_initial(inst, g, p).unwrap();
        expand_at(inst, g, p, items, &mut Effects::default()).unwrap()
    }

    fn item(inst: &mut Instance, g: &WorkflowGraph, index: u32, n: i64) -> CoreResult<Applied> {
        let updates = Map::from_entries(vec![("n".into(), Value::Int(n))]).unwrap();
        let outcome = Outcome::Completed(Completion {
            event: "done".into(),
            context_updates: Some(updates),
            metadata_updates: None,
            timestamp: 0,
        });
        let p = g.position(&r("Item")).unwrap();
        apply_at(inst, g, p, Some(index), outcome, &mut Effects::default())
    }

    #[test]
    fn a_for_each_completes_with_its_results_in_item_order() {
        let g = loops();
        let mut inst = advance(&with_items(vec![Value::Int(7), Value::Int(8)]), &g).unwrap();
        step(&mut inst, &g, "A", "go");
        assert_eq!(expand(&mut inst, &g), Applied::Done);
        assert!(
            matches!(inst.loop_of(&r("Item")), Some(Loop::ForEach { items, .. }) if items.len() == 2)
        );
        item(&mut inst, &g, 1, 10).unwrap();
        assert_eq!(
            inst.step_state(&r("Item")),
            Some(StepState::Active { waiting: false })
        );
        let before = inst.clone();
        assert!(matches!(
            item(&mut inst, &g, 1, 99),
            Err(CoreError::StepState { .. })
        ));
        assert!(matches!(
            item(&mut inst, &g, 5, 0),
            Err(CoreError::InvalidField { .. })
        ));
        assert_eq!(inst, before, "refused outcomes change nothing");
        item(&mut inst, &g, 0, 20).unwrap();
        assert_eq!(inst.step_state(&r("Item")), Some(StepState::Completed));
        assert!(inst.loop_of(&r("Item")).is_none());
        let expected: Vec<Value> = [20, 10]
            .iter()
            .map(|n| Value::Dict(Map::from_entries(vec![("n".into(), Value::Int(*n))]).unwrap()))
            .collect();
        assert_eq!(
            inst.context().step_result("item").map(StepResult::to_value),
            Some(Value::List(expected.into()))
        );
        let iterations: Vec<Option<u32>> = inst
            .history_newest_first()
            .map(ExecutionEntry::iteration)
            .collect();
        assert_eq!(
            iterations,
            [Some(0), Some(1), None],
            "one entry per run, none of its own"
        );
        assert_eq!(
            inst.step_state(&r("Poll")),
            Some(StepState::Active { waiting: false })
        );
    }

    #[test]
    fn a_for_each_over_nothing_or_too_much_never_runs_an_item() {
        let g = loops();
        let mut empty = advance(&with_items(vec![]), &g).unwrap();
        step(&mut empty, &g, "A", "go");
        expand(&mut empty, &g);
        assert_eq!(empty.step_state(&r("Item")), Some(StepState::Completed));
        assert_eq!(
            empty.context().step_result("item"),
            Some(StepResult::List(&[]))
        );
        assert_eq!(empty.history_len(), 1);
        let mut many = advance(&with_items(vec![Value::Null; 4]), &g).unwrap();
        step(&mut many, &g, "A", "go");
        expand(&mut many, &g);
        assert_eq!(many.status(), Status::Failed);
        assert_eq!(
            many.error().and_then(|e| e.get("message")),
            Some(&Value::Str("4 items, more than max_items=3".into()))
        );
    }

    #[test]
    fn a_repeat_runs_again_on_again_and_fails_past_max_iterations() {
        let g = loops();
        let poll = |inst: &mut Instance, event: &str| step(inst, &g, "Poll", event);
        let mut inst = advance(&with_items(vec![]), &g).unwrap();
        step(&mut inst, &g, "A", "go");
        expand(&mut inst, &g);
        assert_eq!(poll(&mut inst, "more"), Applied::Again);
        assert_eq!(poll(&mut inst, "more"), Applied::Again);
        let mut settled = inst.clone();
        assert_eq!(poll(&mut settled, "settled"), Applied::Done);
        assert_eq!(settled.step_state(&r("Poll")), Some(StepState::Completed));
        assert_eq!(
            settled.step_state(&r("Done")),
            Some(StepState::Active { waiting: false })
        );
        let runs: Vec<Option<u32>> = settled
            .history_newest_first()
            .take(3)
            .map(ExecutionEntry::iteration)
            .collect();
        assert_eq!(runs, [Some(2), Some(1), Some(0)]);
        poll(&mut inst, "more");
        assert_eq!(inst.status(), Status::Failed);
        assert_eq!(
            inst.error().and_then(|e| e.get("kind")),
            Some(&Value::Str("max_iterations".into()))
        );
    }

    #[test]
    fn a_wide_fan_out_and_join_cost_linear_work() {
        // 20,000 branches: with a re-scan of the join's predecessors per
        // completion this would take 2·10^8 state lookups.
        let g = fan_in(20_000);
        let done = run_all(&g);
        assert_eq!(done.status(), Status::Completed);
        assert_eq!(done.history_len(), 20_003);
    }

    fn run_all(graph: &WorkflowGraph) -> Instance {
        let mut inst = new();
        let mut fx = Effects::default();
        advance_mut(&mut inst, graph, &mut fx).unwrap();
        let mut queue: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
            fx.activated.drain(..).map(std::cmp::Reverse).collect();
        while let Some(std::cmp::Reverse(p)) = queue.pop() {
            let spec = graph.step_at(p);
            let event = spec.events[0].clone();
            apply_mut(
                &mut inst,
                graph,
                &spec.name,
                Outcome::Completed(Completion::event(event, 0)),
                &mut fx,
            )
            .unwrap();
            queue.extend(fx.activated.drain(..).map(std::cmp::Reverse));
        }
        check_completion(&inst).unwrap()
    }
}
