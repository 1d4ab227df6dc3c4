//! The pure engine: moving an instance through its workflow graph (Elixir:
//! `Hephaestus.Core.Engine`).
//!
//! These functions never run step code. The caller executes steps and
//! reports completions; for a dynamic route it calls the route and passes
//! the chosen target, which is checked against the declared ones here.
//!
//! The join rule fixes the original's: a target becomes active when each of
//! its predecessors is completed or skipped and a taken transition reached
//! it. Successors that a completion did not lead to are skipped once every
//! one of their predecessors is resolved without reaching them, and
//! skipping propagates down the graph; a join reached earlier becomes active
//! when its last open predecessor is skipped. So a join after exclusive
//! branches runs once, after whichever branch ran, while a join after a
//! parallel fan-out waits for every branch.

use std::collections::VecDeque;

use crate::core::class_ref::ClassRef;
use crate::core::error::{CoreError, CoreResult};
use crate::core::graph::{Target, Transition, WorkflowGraph};
use crate::core::instance::{Instance, StepState};
use crate::core::status::Status;
use crate::core::value::Map;

/// Starts a pending instance: `Running`, with the start step active (its
/// config stored) and current. An instance with active steps, or waiting,
/// is returned unchanged; any other goes to [`check_completion`].
pub fn advance(instance: &Instance, graph: &WorkflowGraph) -> CoreResult<Instance> {
    if instance.status() == Status::Pending {
        let start = graph.start();
        let started = instance.activate_step(start, graph.start_config().cloned())?;
        return started.with_status(Status::Running, Some(Some(start.clone())));
    }
    if instance.status() == Status::Waiting || instance.active_count() > 0 {
        return Ok(instance.clone());
    }
    check_completion(instance)
}

/// `Completed` when nothing is left to run: no active steps and no join
/// still waiting. Terminal and pending instances are returned unchanged.
pub fn check_completion(instance: &Instance) -> CoreResult<Instance> {
    let status = instance.status();
    if status.is_terminal()
        || status == Status::Pending
        || instance.active_count() > 0
        || instance.reached_count() > 0
    {
        return Ok(instance.clone());
    }
    instance.with_status(Status::Completed, None)
}

fn resolved(instance: &Instance, step: &ClassRef) -> bool {
    matches!(
        instance.step_state(step),
        Some(StepState::Completed | StepState::Skipped)
    )
}

fn all_predecessors_resolved(instance: &Instance, graph: &WorkflowGraph, step: &ClassRef) -> bool {
    graph.predecessors(step).all(|p| resolved(instance, p))
}

/// Activates what `event` from the completed `from` leads to, applying the
/// join rule, and skips what it can no longer reach (see the module docs).
///
/// For a dynamic route, `chosen` holds the targets the route picked; each
/// must be one the route declares. For a static transition `chosen` is
/// ignored. An event without a transition (a `Done` step) changes nothing.
pub fn activate_transitions(
    instance: &Instance,
    graph: &WorkflowGraph,
    from: &ClassRef,
    event: &str,
    chosen: Option<Vec<Target>>,
) -> CoreResult<Instance> {
    check_declared(graph, from, event, "activate_transitions")?;
    let taken: Vec<Target> = match graph.transition(from, event) {
        None => Vec::new(),
        Some(Transition::Static(targets)) => targets.clone(),
        Some(Transition::Dynamic(declared)) => {
            let chosen = chosen.unwrap_or_default();
            if let Some(bad) = chosen.iter().find(|t| !declared.contains(&t.step)) {
                return Err(CoreError::StepState {
                    operation: "activate_transitions",
                    step: bad.step.to_string(),
                    actual: "not a declared target of the route",
                    allowed: "one of the route's declared targets",
                });
            }
            if chosen.is_empty() {
                return Err(CoreError::invalid(
                    "route",
                    format!("the route for {event:?} from {from} chose no target"),
                ));
            }
            chosen
        }
    };
    let mut next = instance.clone();
    for target in &taken {
        next = match next.step_state(&target.step) {
            None | Some(StepState::Reached) => {
                if all_predecessors_resolved(&next, graph, &target.step) {
                    next.activate_step(&target.step, target.config.clone())?
                } else {
                    next.reach_step(&target.step, target.config.clone())?
                }
            }
            // Already active (reached twice) or finished: nothing to do.
            Some(_) => next,
        };
    }
    // Successors this completion did not lead to lost an incoming path.
    let mut lost: VecDeque<ClassRef> = graph
        .successors(from)
        .filter(|s| !taken.iter().any(|t| &t.step == *s))
        .cloned()
        .collect();
    while let Some(step) = lost.pop_front() {
        match next.step_state(&step) {
            None if all_predecessors_resolved(&next, graph, &step) => {
                next = next.skip_step(&step)?;
                lost.extend(graph.successors(&step).cloned());
            }
            Some(StepState::Reached) if all_predecessors_resolved(&next, graph, &step) => {
                next = next.activate_step(&step, None)?;
            }
            _ => {}
        }
    }
    Ok(next)
}

/// Completes the active `step` with `event` (storing `context_updates`
/// under `step_key`, merging `metadata_updates`, stamped `timestamp`) and
/// activates what the event leads to; `chosen` as in
/// [`activate_transitions`].
#[allow(clippy::too_many_arguments)]
pub fn complete_and_activate(
    instance: &Instance,
    graph: &WorkflowGraph,
    step: &ClassRef,
    step_key: &std::sync::Arc<str>,
    event: &str,
    context_updates: Option<Map>,
    metadata_updates: Option<Map>,
    chosen: Option<Vec<Target>>,
    timestamp: i64,
) -> CoreResult<Instance> {
    let completed = instance.complete_step(
        step,
        step_key,
        event,
        context_updates,
        metadata_updates,
        timestamp,
    )?;
    activate_transitions(&completed, graph, step, event, chosen)
}

/// Resumes the waiting `step` with `event`: completes it (storing nothing
/// under its key, stamped `timestamp`), activates its transitions, and
/// clears the current step. The status goes back to `Running` unless every
/// remaining active step waits. A step that is not waiting leaves the
/// instance unchanged. An event the step does not declare is an error
/// naming the declared events.
#[allow(clippy::too_many_arguments)]
pub fn resume_step(
    instance: &Instance,
    graph: &WorkflowGraph,
    step: &ClassRef,
    step_key: &std::sync::Arc<str>,
    event: &str,
    chosen: Option<Vec<Target>>,
    timestamp: i64,
) -> CoreResult<Instance> {
    check_declared(graph, step, event, "resume_step")?;
    if instance.step_state(step) != Some(StepState::Active { waiting: true }) {
        return Ok(instance.clone());
    }
    let next = complete_and_activate(
        instance, graph, step, step_key, event, None, None, chosen, timestamp,
    )?;
    let status = if next.status() == Status::Waiting {
        Status::Waiting
    } else {
        Status::Running
    };
    next.with_status(status, Some(None))
}

/// Fails unless `step` declares `event`.
pub fn check_declared(
    graph: &WorkflowGraph,
    step: &ClassRef,
    event: &str,
    operation: &'static str,
) -> CoreResult<()> {
    let Some(spec) = graph.step(step) else {
        return Err(CoreError::invalid(
            "step",
            format!("{step} is not a step of {} ({operation})", graph.workflow()),
        ));
    };
    if spec.events.iter().any(|e| &**e == event) {
        return Ok(());
    }
    let declared: Vec<String> = spec.events.iter().map(|e| format!("{e:?}")).collect();
    Err(CoreError::UndeclaredEvent {
        operation,
        step: step.to_string(),
        event: event.to_string(),
        declared: declared.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::graph::{GraphSpec, StepSpec};

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
                    is_done: *name == "Done",
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

    /// Runs every active step with the event `choose` picks, like a runner.
    fn run(graph: &WorkflowGraph, choose: impl Fn(&str) -> &'static str) -> Instance {
        let mut inst = Instance::new("i", r("Flow"), 1, Map::default()).unwrap();
        inst = advance(&inst, graph).unwrap();
        for tick in 0..100 {
            let Some(step) = inst
                .steps()
                .find(|(_, s)| *s == StepState::Active { waiting: false })
                .map(|(s, _)| s.clone())
            else {
                break;
            };
            let name = step.as_str().trim_start_matches("shop:").to_string();
            let event = if name == "Done" {
                "done"
            } else {
                choose(&name)
            };
            let key: Arc<str> = crate::core::class_ref::underscore(&name).into();
            inst = inst
                .complete_step(&step, &key, event, None, None, tick)
                .unwrap();
            inst = activate_transitions(&inst, graph, &step, event, None).unwrap();
        }
        check_completion(&inst).unwrap()
    }

    fn names(inst: &Instance, state: StepState) -> Vec<String> {
        inst.steps()
            .filter(|(_, s)| *s == state)
            .map(|(k, _)| k.as_str().trim_start_matches("shop:").to_string())
            .collect()
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
            let mut expected = vec!["A", ran, "D", "Done"];
            expected.sort_unstable();
            assert_eq!(names(&done, StepState::Completed), expected);
            assert_eq!(names(&done, StepState::Skipped), [skipped]);
            assert_eq!(done.history_len(), 4, "each step ran once");
        }
    }

    #[test]
    fn a_parallel_join_waits_for_every_branch() {
        let g = graph(
            &[
                ("A", &["go"]),
                ("P", &["ok"]),
                ("Q", &["ok"]),
                ("J", &["ok"]),
                ("Done", &["done"]),
            ],
            &[
                ("A", "go", &["P", "Q"]),
                ("P", "ok", &["J"]),
                ("Q", "ok", &["J"]),
                ("J", "ok", &["Done"]),
            ],
        );
        let mut inst = advance(
            &Instance::new("i", r("Flow"), 1, Map::default()).unwrap(),
            &g,
        )
        .unwrap();
        let key = |k: &str| -> Arc<str> { k.into() };
        inst = inst
            .complete_step(&r("A"), &key("a"), "go", None, None, 0)
            .unwrap();
        inst = activate_transitions(&inst, &g, &r("A"), "go", None).unwrap();
        inst = inst
            .complete_step(&r("P"), &key("p"), "ok", None, None, 1)
            .unwrap();
        inst = activate_transitions(&inst, &g, &r("P"), "ok", None).unwrap();
        assert_eq!(inst.step_state(&r("J")), Some(StepState::Reached));
        assert_eq!(check_completion(&inst).unwrap().status(), Status::Running);
        inst = inst
            .complete_step(&r("Q"), &key("q"), "ok", None, None, 2)
            .unwrap();
        inst = activate_transitions(&inst, &g, &r("Q"), "ok", None).unwrap();
        assert_eq!(
            inst.step_state(&r("J")),
            Some(StepState::Active { waiting: false })
        );
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
        assert!(names(&done, StepState::Completed).contains(&"J".to_string()));
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
    fn an_undeclared_event_is_refused_not_taken_as_a_dead_end() {
        let g = exclusive();
        let inst = advance(
            &Instance::new("i", r("Flow"), 1, Map::default()).unwrap(),
            &g,
        )
        .unwrap();
        let err = activate_transitions(&inst, &g, &r("A"), "ok", None).unwrap_err();
        assert!(matches!(err, CoreError::UndeclaredEvent { .. }), "{err}");
    }

    #[test]
    fn advance_starts_a_pending_instance_only() {
        let g = exclusive();
        let pending = Instance::new("i", r("Flow"), 1, Map::default()).unwrap();
        let started = advance(&pending, &g).unwrap();
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
        let key: Arc<str> = "a".into();
        let started = advance(
            &Instance::new("i", r("Flow"), 1, Map::default()).unwrap(),
            &g,
        )
        .unwrap();
        let err = resume_step(&started, &g, &r("A"), &key, "bogus", None, 0).unwrap_err();
        assert!(err.to_string().contains("\"valid\", \"invalid\""), "{err}");
        assert_eq!(
            resume_step(&started, &g, &r("A"), &key, "valid", None, 0).unwrap(),
            started
        );
        let waiting = started.wait_step(&r("A")).unwrap();
        assert_eq!(waiting.status(), Status::Waiting);
        let resumed = resume_step(&waiting, &g, &r("A"), &key, "valid", None, 0).unwrap();
        assert_eq!(resumed.status(), Status::Running);
        assert_eq!(resumed.current_step(), None);
        assert_eq!(
            resumed.step_state(&r("B")),
            Some(StepState::Active { waiting: false })
        );
    }

    #[test]
    fn a_dynamic_route_must_choose_a_declared_target() {
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
                    is_done: *n == "Done",
                })
                .collect(),
            transitions: vec![
                (
                    r("T"),
                    "routed".into(),
                    Transition::Dynamic(vec![r("F"), r("S")]),
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
        let g = WorkflowGraph::build(spec).unwrap();
        let inst = advance(
            &Instance::new("i", r("Flow"), 1, Map::default()).unwrap(),
            &g,
        )
        .unwrap();
        let inst = inst
            .complete_step(&r("T"), &"t".into(), "routed", None, None, 0)
            .unwrap();
        let pick = |n: &str| {
            Some(vec![Target {
                step: r(n),
                config: None,
            }])
        };
        assert!(activate_transitions(&inst, &g, &r("T"), "routed", pick("Done")).is_err());
        let routed = activate_transitions(&inst, &g, &r("T"), "routed", pick("S")).unwrap();
        assert_eq!(
            routed.step_state(&r("S")),
            Some(StepState::Active { waiting: false })
        );
        assert_eq!(routed.step_state(&r("F")), Some(StepState::Skipped));
    }
}
