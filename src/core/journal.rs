//! The journal: each change the engine applied to an instance, as a record
//! of its inputs, so that replaying the records through the engine rebuilds
//! the instance exactly (the durable runtime stores them, append-only, and
//! folds them back on load).
//!
//! A record holds what the engine cannot recompute: what a step returned
//! (with its timestamp), which targets a dynamic route chose (the route is
//! user code and is not called again), which event resumed a step and
//! when, and why the runtime failed the instance. Steps are named by their
//! step keys, which are unique in a workflow and the same in every process.
//! The binary form is `MessagePack`, read with the same guards as instances.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::engine::{self, Effects, Outcome};
use crate::core::error::{CoreError, CoreResult};
use crate::core::format::{AnyMap, AnyValue};
use crate::core::graph::{Target, WorkflowGraph};
use crate::core::instance::{Completion, Instance};
use crate::core::value::{Map, Value};

/// One change the engine applied.
#[derive(Debug, Clone)]
pub enum Record {
    /// A pending instance was started ([`engine::advance`]).
    Advance,
    /// A step's outcome was applied ([`engine::apply_at`]).
    Outcome {
        /// The step's key.
        step: Arc<str>,
        /// Which run of a `ForEach` or `Repeat` step it was, if one.
        iteration: Option<u32>,
        /// What it produced.
        outcome: Outcome,
    },
    /// A `ForEach` step took its items, or could not
    /// ([`engine::expand_at`]).
    Items {
        /// The step's key.
        step: Arc<str>,
        /// The items, or why there are none.
        items: Result<Vec<Value>, String>,
    },
    /// A dynamic route chose targets, or failed ([`engine::route_at`]).
    Route {
        /// The routed step's key.
        step: Arc<str>,
        /// The event the route handles.
        event: Arc<str>,
        /// The targets chosen, or why the route failed.
        choice: Result<Vec<Target>, String>,
    },
    /// A waiting step was resumed ([`engine::resume_at`]); a step that no
    /// longer waits is left alone, so a resume recorded twice applies once.
    Resume {
        /// The step's key.
        step: Arc<str>,
        /// The event delivered.
        event: Arc<str>,
        /// When, in UTC microseconds since the epoch.
        timestamp: i64,
    },
    /// The instance failed with this `error` (retries ran out, a timeout,
    /// a cancel); a finished instance is left alone.
    Fail {
        /// The instance's `error`.
        error: Map,
    },
}

/// The wire form: an externally tagged enum (a one-key map), steps by key.
/// Fields added since the first version come last with a default, so
/// records written before them still read.
#[derive(Serialize, Deserialize)]
enum Wire {
    Advance,
    Completed {
        step: String,
        event: String,
        context_updates: Option<AnyMap>,
        metadata: Option<AnyMap>,
        timestamp: i64,
        #[serde(default)]
        iteration: Option<u32>,
    },
    Waiting {
        step: String,
        #[serde(default)]
        iteration: Option<u32>,
    },
    Error {
        step: String,
        reason: AnyValue,
        #[serde(default)]
        iteration: Option<u32>,
    },
    Exception {
        step: String,
        type_name: String,
        message: String,
        #[serde(default)]
        iteration: Option<u32>,
    },
    InvalidResult {
        step: String,
        message: String,
        #[serde(default)]
        iteration: Option<u32>,
    },
    Route {
        step: String,
        event: String,
        chosen: Option<Vec<(String, Option<AnyValue>)>>,
        problem: Option<String>,
    },
    Resume {
        step: String,
        event: String,
        timestamp: i64,
    },
    Fail {
        error: AnyMap,
    },
    Items {
        step: String,
        items: Option<Vec<AnyValue>>,
        problem: Option<String>,
    },
}

/// Encodes `record`.
pub fn encode(record: &Record) -> CoreResult<Vec<u8>> {
    let wire = match record {
        Record::Advance => Wire::Advance,
        Record::Outcome {
            step,
            iteration,
            outcome,
        } => {
            let (step, iteration) = (step.to_string(), *iteration);
            match outcome {
                Outcome::Completed(c) => Wire::Completed {
                    step,
                    event: c.event.to_string(),
                    context_updates: c.context_updates.clone().map(AnyMap),
                    metadata: c.metadata_updates.clone().map(AnyMap),
                    timestamp: c.timestamp,
                    iteration,
                },
                Outcome::Waiting => Wire::Waiting { step, iteration },
                Outcome::Error(reason) => Wire::Error {
                    step,
                    reason: AnyValue(reason.clone()),
                    iteration,
                },
                Outcome::Exception { type_name, message } => Wire::Exception {
                    step,
                    type_name: type_name.clone(),
                    message: message.clone(),
                    iteration,
                },
                Outcome::InvalidResult(message) => Wire::InvalidResult {
                    step,
                    message: message.clone(),
                    iteration,
                },
            }
        }
        Record::Items { step, items } => {
            let (items, problem) = match items {
                Ok(items) => (Some(items.iter().cloned().map(AnyValue).collect()), None),
                Err(problem) => (None, Some(problem.clone())),
            };
            Wire::Items {
                step: step.to_string(),
                items,
                problem,
            }
        }
        Record::Route {
            step,
            event,
            choice,
        } => {
            let (chosen, problem) = match choice {
                Ok(targets) => (
                    Some(
                        targets
                            .iter()
                            .map(|t| (t.step.to_string(), t.config.clone().map(AnyValue)))
                            .collect(),
                    ),
                    None,
                ),
                Err(problem) => (None, Some(problem.clone())),
            };
            Wire::Route {
                step: step.to_string(),
                event: event.to_string(),
                chosen,
                problem,
            }
        }
        Record::Resume {
            step,
            event,
            timestamp,
        } => Wire::Resume {
            step: step.to_string(),
            event: event.to_string(),
            timestamp: *timestamp,
        },
        Record::Fail { error } => Wire::Fail {
            error: AnyMap(error.clone()),
        },
    };
    rmp_serde::to_vec(&wire).map_err(|e| CoreError::serialization(format!("journal record: {e}")))
}

/// Decodes a record written by [`encode`]; target steps are resolved
/// against `graph` (a route's choice names them as `"module:QualName"`).
pub fn decode(bytes: &[u8], graph: &WorkflowGraph) -> CoreResult<Record> {
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(128);
    let wire = Wire::deserialize(&mut de)
        .map_err(|e| CoreError::serialization(format!("journal record: {e}")))?;
    if !rest.is_empty() {
        return Err(CoreError::serialization("journal record: trailing data"));
    }
    let outcome = |step: String, iteration: Option<u32>, outcome: Outcome| Record::Outcome {
        step: step.into(),
        iteration,
        outcome,
    };
    Ok(match wire {
        Wire::Advance => Record::Advance,
        Wire::Completed {
            step,
            event,
            context_updates,
            metadata,
            timestamp,
            iteration,
        } => outcome(
            step,
            iteration,
            Outcome::Completed(Completion {
                event: event.into(),
                context_updates: context_updates.map(|m| m.0),
                metadata_updates: metadata.map(|m| m.0),
                timestamp,
            }),
        ),
        Wire::Waiting { step, iteration } => outcome(step, iteration, Outcome::Waiting),
        Wire::Error {
            step,
            reason,
            iteration,
        } => outcome(step, iteration, Outcome::Error(reason.0)),
        Wire::Exception {
            step,
            type_name,
            message,
            iteration,
        } => outcome(step, iteration, Outcome::Exception { type_name, message }),
        Wire::InvalidResult {
            step,
            message,
            iteration,
        } => outcome(step, iteration, Outcome::InvalidResult(message)),
        Wire::Items {
            step,
            items,
            problem,
        } => Record::Items {
            step: step.into(),
            items: match items {
                Some(items) => Ok(items.into_iter().map(|v| v.0).collect()),
                None => Err(problem.unwrap_or_default()),
            },
        },
        Wire::Route {
            step,
            event,
            chosen,
            problem,
        } => {
            let choice = route_choice(chosen, problem, graph)?;
            Record::Route {
                step: step.into(),
                event: event.into(),
                choice,
            }
        }
        Wire::Resume {
            step,
            event,
            timestamp,
        } => Record::Resume {
            step: step.into(),
            event: event.into(),
            timestamp,
        },
        Wire::Fail { error } => Record::Fail { error: error.0 },
    })
}

/// A route record's choice: the targets, resolved against `graph`, or the
/// route's failure.
fn route_choice(
    chosen: Option<Vec<(String, Option<AnyValue>)>>,
    problem: Option<String>,
    graph: &WorkflowGraph,
) -> CoreResult<Result<Vec<Target>, String>> {
    Ok(match (chosen, problem) {
        (Some(chosen), _) => Ok(chosen
            .into_iter()
            .map(|(name, config)| {
                let step = graph
                    .steps()
                    .find(|s| s.name.as_str() == name)
                    .map(|s| s.name)
                    .ok_or_else(|| {
                        CoreError::serialization(format!(
                            "journal record: {name} is not a step of {}",
                            graph.workflow()
                        ))
                    })?;
                Ok(Target {
                    step,
                    config: config.map(|c| c.0),
                })
            })
            .collect::<CoreResult<Vec<_>>>()?),
        (None, problem) => Err(problem.unwrap_or_default()),
    })
}

fn position_of(graph: &WorkflowGraph, key: &str) -> CoreResult<usize> {
    graph.position_of_key(key).ok_or_else(|| {
        CoreError::serialization(format!(
            "journal record: no step of {} has the key {key:?}",
            graph.workflow()
        ))
    })
}

/// Applies `record` to `instance`, as the engine did when it was written.
pub fn replay_mut(
    instance: &mut Instance,
    graph: &WorkflowGraph,
    record: Record,
    effects: &mut Effects,
) -> CoreResult<()> {
    match record {
        Record::Advance => engine::advance_mut(instance, graph, effects),
        Record::Outcome {
            step,
            iteration,
            outcome,
        } => {
            if instance.status().is_terminal() {
                return Ok(());
            }
            let p = position_of(graph, &step)?;
            engine::apply_at(instance, graph, p, iteration, outcome, effects).map(|_| ())
        }
        Record::Items { step, items } => {
            if instance.status().is_terminal() {
                return Ok(());
            }
            let p = position_of(graph, &step)?;
            engine::expand_at(instance, graph, p, items, effects).map(|_| ())
        }
        Record::Route {
            step,
            event,
            choice,
        } => {
            if instance.status().is_terminal() {
                return Ok(());
            }
            let p = position_of(graph, &step)?;
            engine::route_at(instance, graph, p, &event, choice, effects).map(|_| ())
        }
        Record::Resume {
            step,
            event,
            timestamp,
        } => {
            let p = position_of(graph, &step)?;
            engine::resume_at(instance, graph, p, &event, timestamp, effects).map(|_| ())
        }
        Record::Fail { error } => {
            if instance.status().is_terminal() {
                return Ok(());
            }
            instance.fail_mut(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::class_ref::ClassRef;
    use crate::core::graph::{GraphSpec, StepSpec, Transition};
    use crate::core::instance::StepState;
    use crate::core::status::Status;
    use crate::core::value::Value;

    fn r(name: &str) -> ClassRef {
        ClassRef::parse(&format!("journal_test:{name}")).unwrap()
    }

    /// A -go-> [W (waits), R (routed to X or Y)] joined at J, then Done.
    fn graph() -> WorkflowGraph {
        let step = |name: &str, events: &[&str]| StepSpec {
            name: r(name),
            key: name.to_lowercase().into(),
            events: events.iter().map(|e| Arc::from(*e)).collect(),
            is_done: name == "Done" || name == "Terminate",
            terminates: name == "Terminate",
            join: if name.starts_with("First") {
                crate::core::graph::Join::First
            } else {
                crate::core::graph::Join::All
            },
            node: crate::core::graph::Node::Step,
        };
        let to = |names: &[&str]| {
            Transition::Static(
                names
                    .iter()
                    .map(|n| Target {
                        step: r(n),
                        config: None,
                    })
                    .collect(),
            )
        };
        WorkflowGraph::build(GraphSpec {
            workflow: "Flow".into(),
            start: r("A"),
            start_config: None,
            steps: vec![
                step("A", &["go"]),
                step("W", &["received"]),
                step("R", &["routed"]),
                step("X", &["ok"]),
                step("Y", &["ok"]),
                step("J", &["ok"]),
                step("Done", &["done"]),
            ],
            transitions: vec![
                (r("A"), "go".into(), to(&["W", "R"])),
                (r("W"), "received".into(), to(&["J"])),
                (
                    r("R"),
                    "routed".into(),
                    Transition::Dynamic {
                        targets: vec![r("X"), r("Y")],
                        many: false,
                    },
                ),
                (r("X"), "ok".into(), to(&["J"])),
                (r("Y"), "ok".into(), to(&["J"])),
                (r("J"), "ok".into(), to(&["Done"])),
            ],
        })
        .unwrap()
    }

    fn completed(step: &str, event: &str, tick: i64) -> Record {
        let mut updates = Map::default();
        if step == "a" {
            updates = Map::from_entries(vec![("n".into(), Value::Float(f64::NAN))]).unwrap();
        }
        Record::Outcome {
            iteration: None,
            step: step.into(),
            outcome: Outcome::Completed(Completion {
                event: event.into(),
                context_updates: Some(updates),
                metadata_updates: None,
                timestamp: tick,
            }),
        }
    }

    #[test]
    fn replaying_encoded_records_rebuilds_the_instance() {
        let g = graph();
        let records = vec![
            Record::Advance,
            completed("a", "go", 1),
            Record::Outcome {
                iteration: None,
                step: "w".into(),
                outcome: Outcome::Waiting,
            },
            completed("r", "routed", 2),
            Record::Route {
                step: "r".into(),
                event: "routed".into(),
                choice: Ok(vec![Target {
                    step: r("Y"),
                    config: Some(Value::Int(3)),
                }]),
            },
            completed("y", "ok", 3),
            Record::Resume {
                step: "w".into(),
                event: "received".into(),
                timestamp: 4,
            },
            Record::Resume {
                step: "w".into(),
                event: "received".into(),
                timestamp: 5,
            },
            completed("j", "ok", 6),
            completed("done", "done", 7),
        ];
        let fresh = Instance::new("i", r("Flow"), 1, Map::default()).unwrap();
        let mut direct = fresh.clone();
        let mut replayed = fresh;
        for record in records {
            let bytes = encode(&record).unwrap();
            replay_mut(&mut direct, &g, record, &mut Effects::default()).unwrap();
            let decoded = decode(&bytes, &g).unwrap();
            replay_mut(&mut replayed, &g, decoded, &mut Effects::default()).unwrap();
            assert_eq!(replayed, direct);
        }
        engine::check_completion_mut(&mut replayed).unwrap();
        assert_eq!(replayed.status(), Status::Completed);
        assert_eq!(
            replayed.history_len(),
            6,
            "the second resume applied nothing"
        );
        assert_eq!(replayed.step_state(&r("X")), Some(StepState::Skipped));
    }

    #[test]
    fn a_failed_instance_ignores_later_records() {
        let g = graph();
        let mut inst = Instance::new("i", r("Flow"), 1, Map::default()).unwrap();
        let error =
            Map::from_entries(vec![("kind".into(), Value::Str("cancelled".into()))]).unwrap();
        for record in [
            Record::Advance,
            Record::Fail {
                error: error.clone(),
            },
            completed("a", "go", 1),
            Record::Fail {
                error: Map::default(),
            },
        ] {
            replay_mut(&mut inst, &g, record, &mut Effects::default()).unwrap();
        }
        assert_eq!(inst.status(), Status::Failed);
        assert_eq!(inst.error(), Some(&error));
    }

    #[test]
    fn a_route_to_a_step_outside_the_graph_is_recorded_as_its_failure() {
        let g = graph();
        let mut inst = Instance::new("i", r("Flow"), 1, Map::default()).unwrap();
        for record in [
            Record::Advance,
            completed("a", "go", 1),
            completed("r", "routed", 2),
        ] {
            replay_mut(&mut inst, &g, record, &mut Effects::default()).unwrap();
        }
        let mut direct = inst.clone();
        let stray = vec![Target {
            step: r("Stray"),
            config: None,
        }];
        let p = g.position(&r("R")).unwrap();
        let failed = engine::route_at(
            &mut direct,
            &g,
            p,
            "routed",
            Ok(stray),
            &mut Effects::default(),
        )
        .unwrap()
        .expect("a choice the route does not declare fails the instance");
        assert_eq!(direct.status(), Status::Failed);
        // The failure, not the stray choice, is what the journal can hold.
        let record = Record::Route {
            step: "r".into(),
            event: "routed".into(),
            choice: Err(failed),
        };
        let decoded = decode(&encode(&record).unwrap(), &g).unwrap();
        replay_mut(&mut inst, &g, decoded, &mut Effects::default()).unwrap();
        assert_eq!(inst, direct);
    }

    #[test]
    fn garbage_and_foreign_steps_are_refused() {
        let g = graph();
        assert!(decode(b"\x01\x02", &g).is_err());
        let bytes = encode(&completed("nope", "go", 1)).unwrap();
        let record = decode(&bytes, &g).unwrap();
        let mut inst = Instance::new("i", r("Flow"), 1, Map::default()).unwrap();
        assert!(replay_mut(&mut inst, &g, record, &mut Effects::default()).is_err());
        let mut trailing = encode(&Record::Advance).unwrap();
        trailing.push(0);
        assert!(decode(&trailing, &g).is_err());
    }
}
