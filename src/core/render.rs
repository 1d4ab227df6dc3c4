//! Drawings of a workflow graph: Mermaid, Graphviz DOT and plain text,
//! each of the definition alone or of one instance's live state.
//!
//! Node shapes tell the constructs apart: the start step is a stadium
//! (DOT: an oval), `Done` a circle (a double circle), `Terminate` a double
//! circle (a double octagon), a first-wins join a hexagon, a `ForEach` step
//! a stacked box (a 3-D box), and a `Repeat` step has a loop arrow on its
//! `again` event (a drawing only: the graph has no such edge). Dynamic
//! routes are dotted (dashed) arrows.
//!
//! With an instance, every step is marked with where it stands: completed,
//! active, waiting, skipped, failed (the step the instance's `error` names)
//! or not reached; a `ForEach` step shows how many items are done and a
//! `Repeat` step which run it is on. A legend explains the marks.

use std::fmt::Write as _;

use crate::core::graph::{Join, Node, StepSpec, WorkflowGraph};
use crate::core::instance::{Instance, Loop, StepState};
use crate::core::status::Status;
use crate::core::value::Value;

/// Where a step stands in an instance, as a drawing marks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Finished.
    Completed,
    /// Runnable or running.
    Active,
    /// Waiting for an event or a timer, or a join for its predecessors.
    Waiting,
    /// On a path not taken, or withdrawn.
    Skipped,
    /// The step that failed the instance.
    Failed,
    /// Not reached (yet).
    NotReached,
}

impl Mark {
    /// Every mark, in legend order.
    pub const ALL: [Mark; 6] = [
        Mark::Completed,
        Mark::Active,
        Mark::Waiting,
        Mark::Skipped,
        Mark::Failed,
        Mark::NotReached,
    ];

    /// The mark's name (also its Mermaid class).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Mark::Completed => "completed",
            Mark::Active => "active",
            Mark::Waiting => "waiting",
            Mark::Skipped => "skipped",
            Mark::Failed => "failed",
            Mark::NotReached => "not reached",
        }
    }

    /// The mark's Mermaid class name (no spaces).
    fn class(self) -> &'static str {
        match self {
            Mark::NotReached => "not_reached",
            other => other.name(),
        }
    }

    /// A fill and a stroke colour.
    fn colours(self) -> (&'static str, &'static str) {
        match self {
            Mark::Completed => ("#d4edda", "#28a745"),
            Mark::Active => ("#cce5ff", "#0366d6"),
            Mark::Waiting => ("#fff3cd", "#d39e00"),
            Mark::Skipped => ("#eeeeee", "#999999"),
            Mark::Failed => ("#f8d7da", "#cb2431"),
            Mark::NotReached => ("#ffffff", "#cccccc"),
        }
    }

    /// The mark of the text rendering.
    fn symbol(self) -> &'static str {
        match self {
            Mark::Completed => "[x]",
            Mark::Active => "[>]",
            Mark::Waiting => "[~]",
            Mark::Skipped => "[-]",
            Mark::Failed => "[!]",
            Mark::NotReached => "[ ]",
        }
    }
}

/// Where the step at `position` stands in `instance`.
#[must_use]
pub fn mark(graph: &WorkflowGraph, instance: &Instance, position: usize) -> Mark {
    let spec = graph.step_at(position);
    match instance.step_state(&spec.name) {
        Some(StepState::Completed) => Mark::Completed,
        Some(StepState::Active { waiting: false }) => Mark::Active,
        Some(StepState::Active { waiting: true } | StepState::Reached) => Mark::Waiting,
        Some(StepState::Skipped) => Mark::Skipped,
        None if failed_here(instance, spec) => Mark::Failed,
        None => Mark::NotReached,
    }
}

fn failed_here(instance: &Instance, spec: &StepSpec) -> bool {
    instance.status() == Status::Failed
        && instance
            .error()
            .and_then(|e| e.get("step"))
            .is_some_and(|s| matches!(s, Value::Str(key) if **key == *spec.key))
}

/// What a loop step's label adds in a live drawing: `"3 of 10 items done"`
/// or `"run 4 of 144"`.
#[must_use]
pub fn progress(graph: &WorkflowGraph, instance: &Instance, position: usize) -> Option<String> {
    let spec = graph.step_at(position);
    match (&spec.node, instance.loop_of(&spec.name)) {
        (Node::ForEach { .. }, Some(Loop::ForEach { items, results })) => {
            Some(format!("{} of {} items done", results.len(), items.len()))
        }
        (Node::Repeat { max_iterations, .. }, state @ (Some(Loop::Repeat { .. }) | None))
            if instance.step_state(&spec.name) == Some(StepState::Active { waiting: false }) =>
        {
            let iteration = match state {
                Some(Loop::Repeat { iteration }) => *iteration,
                _ => 0,
            };
            Some(format!(
                "run {} of {max_iterations}",
                iteration.saturating_add(1)
            ))
        }
        _ => None,
    }
}

fn label(graph: &WorkflowGraph, instance: Option<&Instance>, position: usize) -> String {
    let name = graph.step_at(position).name.short_name();
    match instance.and_then(|i| progress(graph, i, position)) {
        Some(progress) => format!("{name} ({progress})"),
        None => name.to_string(),
    }
}

/// A Mermaid flowchart of `graph`, with `instance`'s live state when given.
#[must_use]
pub fn mermaid(graph: &WorkflowGraph, instance: Option<&Instance>) -> String {
    let mut out = String::from("flowchart TD\n");
    for (i, step) in graph.steps().enumerate() {
        let label = mermaid_label(&label(graph, instance, i));
        let _ = if matches!(step.node, Node::ForEach { .. }) {
            writeln!(out, "    s{i}@{{ shape: st-rect, label: \"{label}\" }}")
        } else if i == graph.start_position() {
            writeln!(out, "    s{i}([\"{label}\"])")
        } else if step.terminates {
            writeln!(out, "    s{i}(((\"{label}\")))")
        } else if step.is_done {
            writeln!(out, "    s{i}((\"{label}\"))")
        } else if step.join == Join::First {
            writeln!(out, "    s{i}{{{{\"{label}\"}}}}")
        } else {
            writeln!(out, "    s{i}[\"{label}\"]")
        };
    }
    for (from, event, to, dynamic) in graph.edges() {
        let arrow = if dynamic { "-.->" } else { "-->" };
        let (Some(from), Some(to)) = (graph.position(from), graph.position(to)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "    s{from} {arrow}|\"{}\"| s{to}",
            mermaid_label(event)
        );
    }
    for (i, again, max) in graph.repeats() {
        let _ = writeln!(
            out,
            "    s{i} -->|\"{} (again, at most {max} runs)\"| s{i}",
            mermaid_label(again)
        );
    }
    if let Some(instance) = instance {
        for m in Mark::ALL {
            let (fill, stroke) = m.colours();
            let _ = writeln!(
                out,
                "    classDef {} fill:{fill},stroke:{stroke}",
                m.class()
            );
        }
        for i in 0..graph.steps().len() {
            let _ = writeln!(out, "    class s{i} {}", mark(graph, instance, i).class());
        }
        out.push_str("    subgraph legend [\"Legend\"]\n");
        for m in Mark::ALL {
            let _ = writeln!(out, "        legend_{}[\"{}\"]", m.class(), m.name());
            let _ = writeln!(out, "        class legend_{} {}", m.class(), m.class());
        }
        out.push_str("    end\n");
    }
    out
}

/// A Graphviz DOT digraph of `graph`, with `instance`'s live state when
/// given.
#[must_use]
pub fn dot(graph: &WorkflowGraph, instance: Option<&Instance>) -> String {
    let mut out = format!("digraph {} {{\n", dot_string(graph.workflow()));
    out.push_str("    node [shape=box];\n");
    for (i, step) in graph.steps().enumerate() {
        let shape = if matches!(step.node, Node::ForEach { .. }) {
            ", shape=box3d"
        } else if i == graph.start_position() {
            ", shape=oval"
        } else if step.terminates {
            ", shape=doubleoctagon"
        } else if step.is_done {
            ", shape=doublecircle"
        } else if step.join == Join::First {
            ", shape=hexagon"
        } else {
            ""
        };
        let style =
            instance.map_or_else(String::new, |instance| dot_style(mark(graph, instance, i)));
        let _ = writeln!(
            out,
            "    s{i} [label={}{shape}{style}];",
            dot_string(&label(graph, instance, i))
        );
    }
    for (from, event, to, dynamic) in graph.edges() {
        let style = if dynamic { ", style=dashed" } else { "" };
        let (Some(from), Some(to)) = (graph.position(from), graph.position(to)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "    s{from} -> s{to} [label={}{style}];",
            dot_string(event)
        );
    }
    for (i, again, max) in graph.repeats() {
        let _ = writeln!(
            out,
            "    s{i} -> s{i} [label={}, style=bold];",
            dot_string(&format!("{again} (again, at most {max} runs)"))
        );
    }
    if instance.is_some() {
        out.push_str("    subgraph cluster_legend {\n        label=\"Legend\";\n");
        for m in Mark::ALL {
            let _ = writeln!(
                out,
                "        legend_{} [label={}{}];",
                m.class(),
                dot_string(m.name()),
                dot_style(m)
            );
        }
        out.push_str("    }\n");
    }
    out.push_str("}\n");
    out
}

fn dot_style(mark: Mark) -> String {
    let (fill, stroke) = mark.colours();
    format!(", style=filled, fillcolor=\"{fill}\", color=\"{stroke}\"")
}

/// A plain-text rendering for terminals: one line per step in definition
/// order with where its transitions lead, marked with `instance`'s live
/// state when given (and a legend); no newline at the end, so that it
/// prints as it is.
#[must_use]
pub fn text(graph: &WorkflowGraph, instance: Option<&Instance>) -> String {
    let mut out = format!("{}\n", graph.workflow());
    if let Some(instance) = instance {
        let _ = writeln!(out, "instance {} ({})", instance.id(), instance.status());
    }
    let width = (0..graph.steps().len())
        .map(|i| label(graph, instance, i).chars().count())
        .max()
        .unwrap_or(0);
    for (i, step) in graph.steps().enumerate() {
        let symbol = instance.map_or("", |instance| mark(graph, instance, i).symbol());
        let label = label(graph, instance, i);
        let kind = match (&step.node, step.join, step.terminates, step.is_done) {
            (Node::ForEach { .. }, ..) => "  for each item",
            (Node::Repeat { .. }, ..) => "  repeats",
            (_, Join::First, ..) => "  first wins",
            (_, _, true, _) => "  ends the workflow",
            _ => "",
        };
        let mut leads: Vec<String> = Vec::new();
        let mut last_event = None;
        for (from, event, to, dynamic) in graph.edges() {
            if graph.position(from) != Some(i) {
                continue;
            }
            let target = format!("{}{}", to.short_name(), if dynamic { "?" } else { "" });
            if last_event == Some(event) {
                if let Some(last) = leads.last_mut() {
                    let _ = write!(last, ", {target}");
                }
            } else {
                leads.push(format!("{event} -> {target}"));
                last_event = Some(event);
            }
        }
        if let Node::Repeat { again, .. } = &step.node {
            leads.push(format!("{again} -> again"));
        }
        let prefix = if symbol.is_empty() {
            "  ".to_string()
        } else {
            format!("  {symbol} ")
        };
        let line = format!(
            "{prefix}{label:<width$}{}{kind}",
            if leads.is_empty() {
                String::new()
            } else {
                format!("  {}", leads.join("; "))
            }
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if instance.is_some() {
        let legend: Vec<String> = Mark::ALL
            .iter()
            .map(|m| format!("{} {}", m.symbol(), m.name()))
            .collect();
        let _ = writeln!(out, "legend: {}", legend.join("  "));
    }
    if graph.edges().any(|(_, _, _, dynamic)| dynamic) {
        out.push_str("(? marks a target a route may choose)\n");
    }
    out.truncate(out.trim_end().len());
    out
}

/// Text for inside a quoted Mermaid label: quotes become `#quot;`.
fn mermaid_label(text: &str) -> String {
    text.replace('"', "#quot;")
}

/// A DOT string literal.
fn dot_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::class_ref::ClassRef;
    use crate::core::engine::{advance, apply_mut, Effects, Outcome};
    use crate::core::graph::{GraphSpec, Target, Transition};
    use crate::core::instance::Completion;
    use crate::core::value::Map;

    fn r(name: &str) -> ClassRef {
        ClassRef::parse(&format!("shop:{name}")).unwrap()
    }

    /// A -go-> [B, C]; B -ok-> J; C -ok-> J; J -ok-> Done.
    fn graph() -> WorkflowGraph {
        let step = |n: &str, events: &[&str]| StepSpec {
            name: r(n),
            key: crate::core::class_ref::underscore(n).into(),
            events: events.iter().map(|e| Arc::from(*e)).collect(),
            is_done: n == "Done",
            terminates: false,
            join: Join::All,
            node: Node::Step,
        };
        let to = |targets: &[&str]| {
            Transition::Static(
                targets
                    .iter()
                    .map(|t| Target {
                        step: r(t),
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
                step("B", &["ok"]),
                step("C", &["ok"]),
                step("J", &["ok"]),
                step("Done", &["done"]),
            ],
            transitions: vec![
                (r("A"), "go".into(), to(&["B", "C"])),
                (r("B"), "ok".into(), to(&["J"])),
                (r("C"), "ok".into(), to(&["J"])),
                (r("J"), "ok".into(), to(&["Done"])),
            ],
        })
        .unwrap()
    }

    #[test]
    fn a_live_drawing_marks_every_step() {
        let g = graph();
        let fresh = Instance::new("i", r("Flow"), 1, Map::default()).unwrap();
        let mut inst = advance(&fresh, &g).unwrap();
        let done = |event: &str| Outcome::Completed(Completion::event(event, 0));
        apply_mut(&mut inst, &g, &r("A"), done("go"), &mut Effects::default()).unwrap();
        apply_mut(
            &mut inst,
            &g,
            &r("C"),
            Outcome::Waiting,
            &mut Effects::default(),
        )
        .unwrap();
        let marks: Vec<Mark> = (0..5).map(|p| mark(&g, &inst, p)).collect();
        assert_eq!(
            marks,
            [
                Mark::Completed,
                Mark::Active,
                Mark::Waiting,
                Mark::NotReached,
                Mark::NotReached
            ]
        );
        apply_mut(&mut inst, &g, &r("B"), done("ok"), &mut Effects::default()).unwrap();
        assert_eq!(mark(&g, &inst, 3), Mark::Waiting, "a reached join waits");
        let text = text(&g, Some(&inst));
        assert!(text.contains("  [x] A     go -> B, C\n"), "{text}");
        assert!(text.contains("  [x] B     ok -> J\n"), "{text}");
        assert!(text.contains("  [~] J     ok -> Done\n"), "{text}");
        assert!(text.ends_with("[ ] not reached"), "{text}");
        let mermaid = mermaid(&g, Some(&inst));
        assert!(mermaid.contains("    class s2 waiting\n"), "{mermaid}");
        assert!(dot(&g, None).contains("s0 [label=\"A\", shape=oval];"));
        assert!(!dot(&g, None).contains("legend"));
    }
}
