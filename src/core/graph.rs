//! The workflow graph: steps, transitions and their validation (Elixir:
//! the transition table of `Hephaestus.Workflow` and the checks its
//! `__before_compile__` runs).
//!
//! A graph is built once, when a workflow class is created, from a
//! [`GraphSpec`] that the bindings read off the class. Building checks every
//! definition rule and returns *all* problems at once, so a user fixes a
//! workflow in one round. Steps are identified by their [`ClassRef`]; the
//! core never calls step code or routing functions (for a dynamic route the
//! caller picks the target and the graph checks it against the declared
//! ones).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use crate::core::class_ref::ClassRef;
use crate::core::error::{CoreError, CoreResult};
use crate::core::value::Value;

/// One step of a workflow, as the graph needs it.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// The step class.
    pub name: ClassRef,
    /// Its context key.
    pub key: Arc<str>,
    /// The events it declares.
    pub events: Vec<Arc<str>>,
    /// Whether it is a built-in leaf: `Done`, or `Terminate` (see
    /// `terminates`).
    pub is_done: bool,
    /// Whether it is the built-in `Terminate`: when it completes, every
    /// other unfinished step is withdrawn and the instance completes.
    pub terminates: bool,
    /// When it becomes active as the target of several predecessors.
    pub join: Join,
    /// How it runs: once, once per item, or again and again.
    pub node: Node,
}

/// How a step runs when it is active.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Node {
    /// Once (an ordinary step).
    #[default]
    Step,
    /// Once per item of a list, taken when the step activates
    /// (`ForEach(step, items, ...)`); it completes with its one event once
    /// every run has, and its result is the list of the runs' results.
    ForEach {
        /// Where the items come from.
        items: Items,
        /// At most this many runs at once (drivers that run steps
        /// concurrently honour it); `None`: no limit.
        concurrency: Option<u32>,
        /// More items than this fail the instance before any run.
        max_items: u32,
    },
    /// Again while it returns `again`, at most `max_iterations` times
    /// (`Repeat(step, again=..., max_iterations=...)`).
    Repeat {
        /// The event that runs the step again.
        again: Arc<str>,
        /// The most runs; one more `again` fails the instance.
        max_iterations: u32,
    },
}

/// Where a `ForEach` step's items come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Items {
    /// The list under this key of `context.initial`.
    Key(Arc<str>),
    /// A function of the context that the caller calls (the core never
    /// runs user code).
    Computed,
}

/// When a step with several predecessors becomes active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Join {
    /// Once each predecessor is completed or skipped and a taken transition
    /// reached it (the join rule).
    #[default]
    All,
    /// As soon as the first predecessor's transition reaches it; the other
    /// branches into it are withdrawn.
    First,
}

/// A target of a static transition, with the config it activates with.
#[derive(Debug, Clone)]
pub struct Target {
    /// The step to activate.
    pub step: ClassRef,
    /// Its config, if the transition gives one.
    pub config: Option<Value>,
}

/// Where an event leads.
#[derive(Debug, Clone)]
pub enum Transition {
    /// Fixed targets: one, or several for a fan-out.
    Static(Vec<Target>),
    /// A route chosen at run time among these declared targets.
    Dynamic {
        /// Every target the route may choose.
        targets: Vec<ClassRef>,
        /// Whether it may choose several at once (a multi-choice: the
        /// chosen branches run in parallel).
        many: bool,
    },
}

impl Transition {
    /// Every step this transition may lead to.
    pub fn steps(&self) -> impl Iterator<Item = &ClassRef> {
        let (fixed, routed): (&[Target], &[ClassRef]) = match self {
            Transition::Static(targets) => (targets, &[]),
            Transition::Dynamic { targets, .. } => (&[], targets),
        };
        fixed.iter().map(|t| &t.step).chain(routed)
    }
}

/// Everything needed to build a [`WorkflowGraph`].
#[derive(Debug, Clone)]
pub struct GraphSpec {
    /// The workflow's name, for messages.
    pub workflow: String,
    /// The start step.
    pub start: ClassRef,
    /// The start step's config.
    pub start_config: Option<Value>,
    /// Every step of the workflow (start, sources and targets).
    pub steps: Vec<StepSpec>,
    /// `(from, event, transition)` triples.
    pub transitions: Vec<(ClassRef, Arc<str>, Transition)>,
}

/// One thing wrong with a workflow definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphProblem {
    /// Steps that lead back to themselves, in order (first repeated last).
    Cycle(Vec<ClassRef>),
    /// A step no path from the start reaches.
    Unreachable(ClassRef),
    /// A step with no way out that is not `Done`.
    LeafNotDone(ClassRef),
    /// `Done` with transitions out of it.
    DoneNotLeaf(ClassRef),
    /// A static fan-out whose branches share no step before `Done`.
    FanOutDoesNotJoin {
        /// The step that fans out.
        from: ClassRef,
        /// The event that fans out.
        event: Arc<str>,
        /// The branches' first steps.
        branches: Vec<ClassRef>,
    },
    /// Two or more steps with one context key.
    DuplicateKey {
        /// The shared key.
        key: Arc<str>,
        /// The steps sharing it.
        steps: Vec<ClassRef>,
    },
    /// A declared event with no transition.
    EventWithoutTransition {
        /// The step.
        step: ClassRef,
        /// The event.
        event: Arc<str>,
    },
    /// A transition on an event the step does not declare.
    UndeclaredEvent {
        /// The step.
        step: ClassRef,
        /// The event.
        event: Arc<str>,
        /// What the step declares.
        declared: Vec<Arc<str>>,
    },
    /// A step listed twice in the spec, or a transition from or to a step
    /// missing from it (a bug in the caller, reported rather than panicked).
    UnknownStep(ClassRef),
    /// Two transitions for one (step, event).
    DuplicateTransition {
        /// The step.
        step: ClassRef,
        /// The event.
        event: Arc<str>,
    },
    /// A `ForEach` step that does not declare exactly one event.
    ForEachEvents {
        /// The step.
        step: ClassRef,
        /// What it declares.
        events: Vec<Arc<str>>,
    },
    /// A `Repeat` whose `again` is not one of the step's events.
    RepeatAgainUndeclared {
        /// The step.
        step: ClassRef,
        /// The `again` event.
        again: Arc<str>,
        /// What the step declares.
        declared: Vec<Arc<str>>,
    },
    /// A `Repeat` with a transition on its `again` event, which only loops.
    RepeatAgainHasTransition {
        /// The step.
        step: ClassRef,
        /// The `again` event.
        again: Arc<str>,
    },
    /// A `ForEach` or `Repeat` whose limit (`max_items`, `concurrency`,
    /// `max_iterations`) is below 1.
    LimitBelowOne {
        /// The step.
        step: ClassRef,
        /// The limit's name.
        limit: &'static str,
    },
    /// `Done` or `Terminate` wrapped in `ForEach` or `Repeat`.
    LeafInNode(ClassRef),
    /// A first-wins join (`join = "first"`) with fewer than two
    /// predecessors.
    FirstJoinWithoutRace {
        /// The join.
        step: ClassRef,
        /// Its predecessors.
        predecessors: Vec<ClassRef>,
    },
}

impl GraphProblem {
    /// The rule broken, as a short snake-case name (`"cycle"`,
    /// `"unreachable"`, ...), for code that handles problems as data.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            GraphProblem::Cycle(_) => "cycle",
            GraphProblem::Unreachable(_) => "unreachable",
            GraphProblem::LeafNotDone(_) => "leaf_not_done",
            GraphProblem::DoneNotLeaf(_) => "done_not_leaf",
            GraphProblem::FanOutDoesNotJoin { .. } => "fan_out_does_not_join",
            GraphProblem::DuplicateKey { .. } => "duplicate_key",
            GraphProblem::EventWithoutTransition { .. } => "event_without_transition",
            GraphProblem::UndeclaredEvent { .. } => "undeclared_event",
            GraphProblem::UnknownStep(_) => "unknown_step",
            GraphProblem::DuplicateTransition { .. } => "duplicate_transition",
            GraphProblem::FirstJoinWithoutRace { .. } => "first_join_without_race",
            GraphProblem::ForEachEvents { .. } => "for_each_events",
            GraphProblem::RepeatAgainUndeclared { .. } => "repeat_again_undeclared",
            GraphProblem::RepeatAgainHasTransition { .. } => "repeat_again_has_transition",
            GraphProblem::LimitBelowOne { .. } => "limit_below_one",
            GraphProblem::LeafInNode(_) => "leaf_in_node",
        }
    }

    /// The steps involved, in the order the message names them (a cycle
    /// ends where it started; a fan-out lists its source, then its
    /// branches).
    #[must_use]
    pub fn steps(&self) -> Vec<ClassRef> {
        match self {
            GraphProblem::Cycle(path) => path.clone(),
            GraphProblem::Unreachable(step)
            | GraphProblem::LeafInNode(step)
            | GraphProblem::LeafNotDone(step)
            | GraphProblem::DoneNotLeaf(step)
            | GraphProblem::UnknownStep(step)
            | GraphProblem::EventWithoutTransition { step, .. }
            | GraphProblem::UndeclaredEvent { step, .. }
            | GraphProblem::DuplicateTransition { step, .. }
            | GraphProblem::ForEachEvents { step, .. }
            | GraphProblem::RepeatAgainUndeclared { step, .. }
            | GraphProblem::RepeatAgainHasTransition { step, .. }
            | GraphProblem::LimitBelowOne { step, .. } => vec![*step],
            GraphProblem::FanOutDoesNotJoin { from, branches, .. } => std::iter::once(*from)
                .chain(branches.iter().copied())
                .collect(),
            GraphProblem::DuplicateKey { steps, .. } => steps.clone(),
            GraphProblem::FirstJoinWithoutRace { step, predecessors } => std::iter::once(*step)
                .chain(predecessors.iter().copied())
                .collect(),
        }
    }

    /// The message of a problem with a `ForEach` or `Repeat` node.
    fn fmt_node(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listed = |events: &[Arc<str>]| {
            if events.is_empty() {
                "none".to_string()
            } else {
                quoted(events)
            }
        };
        match self {
            GraphProblem::ForEachEvents { step, events } => write!(
                f,
                "ForEach({}) needs a step that declares exactly one event, but it declares {}",
                step.short_name(),
                listed(events)
            ),
            GraphProblem::RepeatAgainUndeclared {
                step,
                again,
                declared,
            } => write!(
                f,
                "Repeat({}) repeats on {again:?}, which the step does not declare (it declares {})",
                step.short_name(),
                listed(declared)
            ),
            GraphProblem::RepeatAgainHasTransition { step, again } => write!(
                f,
                "Repeat({}) runs the step again on {again:?}, so that event takes no transition",
                step.short_name()
            ),
            GraphProblem::LimitBelowOne { step, limit } => {
                write!(f, "{limit} of {} must be at least 1", step.short_name())
            }
            _ => Ok(()),
        }
    }

    /// The event involved, if the rule is about one.
    #[must_use]
    pub fn event(&self) -> Option<&str> {
        match self {
            GraphProblem::FanOutDoesNotJoin { event, .. }
            | GraphProblem::EventWithoutTransition { event, .. }
            | GraphProblem::UndeclaredEvent { event, .. }
            | GraphProblem::DuplicateTransition { event, .. } => Some(event),
            GraphProblem::RepeatAgainUndeclared { again, .. }
            | GraphProblem::RepeatAgainHasTransition { again, .. } => Some(again),
            _ => None,
        }
    }
}

/// Events as `"a", "b"`.
fn quoted(events: &[Arc<str>]) -> String {
    events
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_short(steps: &[ClassRef], sep: &str) -> String {
    steps
        .iter()
        .map(ClassRef::short_name)
        .collect::<Vec<_>>()
        .join(sep)
}

impl fmt::Display for GraphProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphProblem::Cycle(path) => write!(f, "cycle: {}", join_short(path, " -> ")),
            GraphProblem::Unreachable(step) => {
                write!(
                    f,
                    "{} is not reachable from the start step",
                    step.short_name()
                )
            }
            GraphProblem::LeafNotDone(step) => write!(
                f,
                "{} has no transitions out, but only Done may end a workflow",
                step.short_name()
            ),
            GraphProblem::DoneNotLeaf(step) => {
                write!(
                    f,
                    "{} ends the workflow and takes no transitions",
                    step.short_name()
                )
            }
            GraphProblem::FanOutDoesNotJoin {
                from,
                event,
                branches,
            } => write!(
                f,
                "the fan-out of {} on {event:?} to {} never joins before Done",
                from.short_name(),
                join_short(branches, ", ")
            ),
            GraphProblem::DuplicateKey { key, steps } => write!(
                f,
                "{} share the context key {key:?}",
                join_short(steps, " and ")
            ),
            GraphProblem::EventWithoutTransition { step, event } => write!(
                f,
                "{} declares the event {event:?} but no transition handles it",
                step.short_name()
            ),
            GraphProblem::UndeclaredEvent {
                step,
                event,
                declared,
            } => {
                let declared: Vec<String> = declared.iter().map(|e| format!("{e:?}")).collect();
                write!(
                    f,
                    "a transition from {} uses the event {event:?}, which it does not declare (it declares {})",
                    step.short_name(),
                    if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                )
            }
            GraphProblem::LeafInNode(step) => write!(
                f,
                "{} ends the workflow, so it cannot be run per item or repeated",
                step.short_name()
            ),
            GraphProblem::UnknownStep(step) => {
                write!(
                    f,
                    "{} is listed twice or missing from the steps",
                    step.short_name()
                )
            }
            GraphProblem::DuplicateTransition { step, event } => write!(
                f,
                "{} has more than one transition for {event:?}",
                step.short_name()
            ),
            GraphProblem::ForEachEvents { .. }
            | GraphProblem::RepeatAgainUndeclared { .. }
            | GraphProblem::RepeatAgainHasTransition { .. }
            | GraphProblem::LimitBelowOne { .. } => self.fmt_node(f),
            GraphProblem::FirstJoinWithoutRace { step, predecessors } => write!(
                f,
                "{} joins with join = \"first\" but has {} (a first-wins join needs at least two predecessors)",
                step.short_name(),
                match predecessors.as_slice() {
                    [] => "no predecessor".to_string(),
                    [only] => format!("one predecessor, {}", only.short_name()),
                    more => format!("the predecessors {}", join_short(more, ", ")),
                }
            ),
        }
    }
}

/// Where one event of a step leads.
#[derive(Debug, Clone)]
struct Edge {
    event: Arc<str>,
    transition: Transition,
    /// The positions of `transition.steps()`, in order.
    positions: Vec<usize>,
}

/// A validated workflow graph.
#[derive(Debug, Clone)]
pub struct WorkflowGraph {
    workflow: String,
    start: usize,
    start_config: Option<Value>,
    steps: Vec<StepSpec>,
    /// By step; foldhash because every engine step looks steps up here.
    index: HashMap<ClassRef, usize, foldhash::fast::RandomState>,
    /// By step key (unique in a valid graph), for journal records.
    keys: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    /// By source step: `(event, transition)` in definition order.
    outgoing: Vec<Vec<Edge>>,
    /// By step: the steps a transition leads to, in definition order.
    successors: Vec<Vec<usize>>,
    /// By step: the steps with a transition into it, in definition order
    /// (the engine's join cursor walks them in this order).
    predecessors: Vec<Vec<usize>>,
    /// By step: for a first-wins join, the steps its first arrival
    /// withdraws (see [`WorkflowGraph::withdrawn_by`]); empty otherwise.
    withdrawn: Vec<Vec<usize>>,
}

impl WorkflowGraph {
    /// Builds and validates a graph; fails with
    /// [`CoreError::Definition`] listing every problem found.
    pub fn build(spec: GraphSpec) -> CoreResult<WorkflowGraph> {
        let workflow = spec.workflow.clone();
        Self::check_spec(spec).map_err(|problems| CoreError::Definition { workflow, problems })
    }

    fn check_spec(spec: GraphSpec) -> Result<WorkflowGraph, Vec<GraphProblem>> {
        let mut problems = Vec::new();
        let mut index = HashMap::with_capacity_and_hasher(
            spec.steps.len(),
            foldhash::fast::RandomState::default(),
        );
        for (i, step) in spec.steps.iter().enumerate() {
            if index.insert(step.name, i).is_some() {
                problems.push(GraphProblem::UnknownStep(step.name));
            }
        }
        let n = spec.steps.len();
        let mut outgoing: Vec<Vec<Edge>> = vec![Vec::new(); n];
        let mut successors = vec![BTreeSet::new(); n];
        let mut predecessors = vec![BTreeSet::new(); n];
        for (from, event, transition) in spec.transitions {
            let Some(&f) = index.get(&from) else {
                problems.push(GraphProblem::UnknownStep(from));
                continue;
            };
            if outgoing[f].iter().any(|edge| edge.event == event) {
                problems.push(GraphProblem::DuplicateTransition { step: from, event });
                continue;
            }
            let mut positions = Vec::new();
            for target in transition.steps() {
                match index.get(target) {
                    Some(&t) => {
                        successors[f].insert(t);
                        predecessors[t].insert(f);
                        positions.push(t);
                    }
                    None => problems.push(GraphProblem::UnknownStep(*target)),
                }
            }
            outgoing[f].push(Edge {
                event,
                transition,
                positions,
            });
        }
        let Some(&start) = index.get(&spec.start) else {
            problems.push(GraphProblem::UnknownStep(spec.start));
            return Err(problems);
        };
        let flatten = |sets: Vec<BTreeSet<usize>>| -> Vec<Vec<usize>> {
            sets.into_iter()
                .map(|set| set.into_iter().collect())
                .collect()
        };
        let keys = spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| (Arc::clone(&step.key), i))
            .collect();
        let mut graph = WorkflowGraph {
            workflow: spec.workflow,
            keys,
            start,
            start_config: spec.start_config,
            steps: spec.steps,
            index,
            outgoing,
            successors: flatten(successors),
            predecessors: flatten(predecessors),
            withdrawn: vec![Vec::new(); n],
        };
        graph.check(&mut problems);
        if problems.is_empty() {
            graph.withdrawn = (0..n).map(|i| graph.withdraw_set(i)).collect();
        }
        if problems.is_empty() {
            Ok(graph)
        } else {
            Err(problems)
        }
    }

    fn check(&self, problems: &mut Vec<GraphProblem>) {
        problems.extend(self.cycles().into_iter().map(GraphProblem::Cycle));
        let reachable = self.reachable_from(self.start);
        for (i, step) in self.steps.iter().enumerate() {
            if !reachable.contains(&i) {
                problems.push(GraphProblem::Unreachable(step.name));
            }
            if step.is_done {
                if !self.outgoing[i].is_empty() {
                    problems.push(GraphProblem::DoneNotLeaf(step.name));
                }
                continue;
            }
            if self.outgoing[i].is_empty() {
                problems.push(GraphProblem::LeafNotDone(step.name));
            }
            let again = match &step.node {
                Node::Repeat { again, .. } => Some(again),
                _ => None,
            };
            for event in &step.events {
                if Some(event) == again {
                    if self.outgoing[i].iter().any(|edge| edge.event == *event) {
                        problems.push(GraphProblem::RepeatAgainHasTransition {
                            step: step.name,
                            again: event.clone(),
                        });
                    }
                    continue;
                }
                if !self.outgoing[i].iter().any(|edge| edge.event == *event) {
                    problems.push(GraphProblem::EventWithoutTransition {
                        step: step.name,
                        event: event.clone(),
                    });
                }
            }
            for Edge {
                event, transition, ..
            } in &self.outgoing[i]
            {
                if !step.events.contains(event) {
                    problems.push(GraphProblem::UndeclaredEvent {
                        step: step.name,
                        event: event.clone(),
                        declared: step.events.clone(),
                    });
                }
                match transition {
                    Transition::Static(targets) => {
                        let branches: Vec<ClassRef> = targets.iter().map(|t| t.step).collect();
                        self.check_fan_out(&step.name, event, &branches, problems);
                    }
                    Transition::Dynamic {
                        targets,
                        many: true,
                    } => self.check_fan_out(&step.name, event, targets, problems),
                    Transition::Dynamic { many: false, .. } => {}
                }
            }
        }
        for step in &self.steps {
            Self::check_node(step, problems);
        }
        for (i, step) in self.steps.iter().enumerate() {
            let preds = &self.predecessors[i];
            if step.join == Join::First && preds.len() < 2 {
                problems.push(GraphProblem::FirstJoinWithoutRace {
                    step: step.name,
                    predecessors: preds.iter().map(|&p| self.steps[p].name).collect(),
                });
            }
        }
        let mut by_key: HashMap<&str, Vec<ClassRef>> = HashMap::new();
        for step in &self.steps {
            by_key.entry(&step.key).or_default().push(step.name);
        }
        let mut shared: Vec<_> = by_key.into_iter().filter(|(_, s)| s.len() > 1).collect();
        shared.sort();
        for (key, steps) in shared {
            problems.push(GraphProblem::DuplicateKey {
                key: key.into(),
                steps,
            });
        }
    }

    /// The rules of `ForEach` and `Repeat` nodes.
    fn check_node(step: &StepSpec, problems: &mut Vec<GraphProblem>) {
        let below_one = |limit: &'static str| GraphProblem::LimitBelowOne {
            step: step.name,
            limit,
        };
        if step.is_done && step.node != Node::Step {
            problems.push(GraphProblem::LeafInNode(step.name));
        }
        match &step.node {
            Node::Step => {}
            Node::ForEach {
                concurrency,
                max_items,
                ..
            } => {
                if step.events.len() != 1 {
                    problems.push(GraphProblem::ForEachEvents {
                        step: step.name,
                        events: step.events.clone(),
                    });
                }
                if *concurrency == Some(0) {
                    problems.push(below_one("concurrency"));
                }
                if *max_items == 0 {
                    problems.push(below_one("max_items"));
                }
            }
            Node::Repeat {
                again,
                max_iterations,
            } => {
                if !step.events.contains(again) {
                    problems.push(GraphProblem::RepeatAgainUndeclared {
                        step: step.name,
                        again: again.clone(),
                        declared: step.events.clone(),
                    });
                }
                if *max_iterations == 0 {
                    problems.push(below_one("max_iterations"));
                }
            }
        }
    }

    /// Branches that run in parallel (a static fan-out, or a route that
    /// may choose several) must share a step other than a leaf. A branch
    /// that can reach `Terminate` is exempt: it may end the workflow early.
    fn check_fan_out(
        &self,
        from: &ClassRef,
        event: &Arc<str>,
        branches: &[ClassRef],
        problems: &mut Vec<GraphProblem>,
    ) {
        if branches.len() < 2 {
            return;
        }
        let mut common: Option<BTreeSet<usize>> = None;
        for branch in branches {
            let Some(&t) = self.index.get(branch) else {
                return;
            };
            let reachable = self.reachable_from(t);
            if reachable.iter().any(|&s| self.steps[s].terminates) {
                continue;
            }
            let reached: BTreeSet<usize> = reachable
                .into_iter()
                .filter(|&s| !self.steps[s].is_done)
                .collect();
            common = Some(match common {
                None => reached,
                Some(so_far) => so_far.intersection(&reached).copied().collect(),
            });
        }
        if common.is_some_and(|c| c.is_empty()) {
            problems.push(GraphProblem::FanOutDoesNotJoin {
                from: *from,
                event: event.clone(),
                branches: branches.to_vec(),
            });
        }
    }

    /// For a first-wins join at `join`, the steps its first arrival
    /// withdraws: those with a path into the join and none to a leaf that
    /// avoids it (the branches that exist only to race for it). Empty for
    /// other steps.
    fn withdraw_set(&self, join: usize) -> Vec<usize> {
        if self.steps[join].join != Join::First {
            return Vec::new();
        }
        // Steps that reach a leaf without passing through the join.
        let mut escapes = vec![false; self.steps.len()];
        let mut queue: VecDeque<usize> = (0..self.steps.len())
            .filter(|&s| s != join && self.successors[s].is_empty())
            .collect();
        for &leaf in &queue {
            escapes[leaf] = true;
        }
        while let Some(s) = queue.pop_front() {
            for &p in &self.predecessors[s] {
                if p != join && !escapes[p] {
                    escapes[p] = true;
                    queue.push_back(p);
                }
            }
        }
        // Steps with a path into the join.
        let mut feeds = vec![false; self.steps.len()];
        let mut queue = VecDeque::from([join]);
        while let Some(s) = queue.pop_front() {
            for &p in &self.predecessors[s] {
                if !feeds[p] {
                    feeds[p] = true;
                    queue.push_back(p);
                }
            }
        }
        (0..self.steps.len())
            .filter(|&s| s != join && feeds[s] && !escapes[s])
            .collect()
    }

    fn reachable_from(&self, from: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([from]);
        let mut queue = VecDeque::from([from]);
        while let Some(s) = queue.pop_front() {
            for &next in &self.successors[s] {
                if seen.insert(next) {
                    queue.push_back(next);
                }
            }
        }
        seen
    }

    /// One cycle per strongly connected group of steps, each as a path that
    /// ends where it started. Iterative, so deep graphs cannot overflow the
    /// stack.
    fn cycles(&self) -> Vec<Vec<ClassRef>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let n = self.steps.len();
        let mut mark = vec![Mark::New; n];
        let mut found = Vec::new();
        for root in 0..n {
            if mark[root] != Mark::New {
                continue;
            }
            // (step, its successors still to visit)
            let mut path: Vec<(usize, Vec<usize>)> = vec![(root, self.successors[root].clone())];
            mark[root] = Mark::OnPath;
            while let Some((step, pending)) = path.last_mut() {
                let step = *step;
                match pending.pop() {
                    Some(next) if mark[next] == Mark::New => {
                        mark[next] = Mark::OnPath;
                        path.push((next, self.successors[next].clone()));
                    }
                    Some(next) if mark[next] == Mark::OnPath => {
                        let from = path.iter().position(|(s, _)| *s == next).unwrap_or(0);
                        let mut cycle: Vec<ClassRef> = path[from..]
                            .iter()
                            .map(|(s, _)| self.steps[*s].name)
                            .collect();
                        cycle.push(self.steps[next].name);
                        found.push(cycle);
                    }
                    Some(_) => {}
                    None => {
                        mark[step] = Mark::Done;
                        path.pop();
                    }
                }
            }
        }
        found
    }

    // -- reading ----------------------------------------------------------

    /// The workflow's name.
    #[must_use]
    pub fn workflow(&self) -> &str {
        &self.workflow
    }

    /// The start step.
    #[must_use]
    pub fn start(&self) -> &ClassRef {
        &self.steps[self.start].name
    }

    /// The start step's config.
    #[must_use]
    pub fn start_config(&self) -> Option<&Value> {
        self.start_config.as_ref()
    }

    /// Every step, in definition order.
    #[must_use]
    pub fn steps(&self) -> impl ExactSizeIterator<Item = &StepSpec> {
        self.steps.iter()
    }

    /// The step's position in definition order, if it belongs to the workflow.
    #[must_use]
    pub fn position(&self, step: &ClassRef) -> Option<usize> {
        self.index.get(step).copied()
    }

    /// The step's spec, if it belongs to the workflow.
    #[must_use]
    pub fn step(&self, step: &ClassRef) -> Option<&StepSpec> {
        self.index.get(step).map(|&i| &self.steps[i])
    }

    /// The position of the step whose key is `key`.
    #[must_use]
    pub fn position_of_key(&self, key: &str) -> Option<usize> {
        self.keys.get(key).copied()
    }

    /// The spec of the step at `position` (from [`WorkflowGraph::position`]).
    ///
    /// # Panics
    /// When `position` is out of range; positions come from this graph.
    #[must_use]
    pub fn step_at(&self, position: usize) -> &StepSpec {
        &self.steps[position]
    }

    /// Where `event` from `step` leads, if anywhere.
    #[must_use]
    pub fn transition(&self, step: &ClassRef, event: &str) -> Option<&Transition> {
        self.transition_at(*self.index.get(step)?, event)
    }

    /// Where `event` from the step at `position` leads, if anywhere.
    #[must_use]
    pub fn transition_at(&self, position: usize, event: &str) -> Option<&Transition> {
        self.edge(position, event).map(|edge| &edge.transition)
    }

    /// Where `event` from the step at `position` leads, with the positions
    /// of the steps it may lead to (in the order of `Transition::steps`).
    #[must_use]
    pub fn targets_at(&self, position: usize, event: &str) -> Option<(&Transition, &[usize])> {
        self.edge(position, event)
            .map(|edge| (&edge.transition, edge.positions.as_slice()))
    }

    fn edge(&self, position: usize, event: &str) -> Option<&Edge> {
        let edges = self.outgoing.get(position)?;
        // The engine passes the graph's own copy of an event: try identity
        // before comparing text.
        edges
            .iter()
            .find(|edge| std::ptr::eq(edge.event.as_ref(), event))
            .or_else(|| edges.iter().find(|edge| &*edge.event == event))
    }

    /// The positions of the steps with a transition into the step at
    /// `position`, in definition order.
    #[must_use]
    pub fn predecessors_at(&self, position: usize) -> &[usize] {
        self.predecessors.get(position).map_or(&[], Vec::as_slice)
    }

    /// The positions of the steps that the first arrival at the first-wins
    /// join at `position` withdraws: every step with a path into the join
    /// and none to a leaf that avoids it. Empty for other steps.
    #[must_use]
    pub fn withdrawn_by(&self, position: usize) -> &[usize] {
        self.withdrawn.get(position).map_or(&[], Vec::as_slice)
    }

    /// The positions of the steps a transition from the step at `position`
    /// may lead to, in definition order.
    #[must_use]
    pub fn successors_at(&self, position: usize) -> &[usize] {
        self.successors.get(position).map_or(&[], Vec::as_slice)
    }

    /// Every edge `(from, event, to, dynamic)`, in definition order.
    pub fn edges(&self) -> impl Iterator<Item = (&ClassRef, &str, &ClassRef, bool)> {
        self.outgoing.iter().enumerate().flat_map(move |(i, out)| {
            out.iter().flat_map(
                move |Edge {
                          event, transition, ..
                      }| {
                    let dynamic = matches!(transition, Transition::Dynamic { .. });
                    transition
                        .steps()
                        .map(move |to| (&self.steps[i].name, &**event, to, dynamic))
                },
            )
        })
    }

    /// The steps with a transition into `step` (empty for an unknown step).
    pub fn predecessors(&self, step: &ClassRef) -> impl Iterator<Item = &ClassRef> {
        self.neighbours(&self.predecessors, step)
    }

    /// The steps a transition from `step` may lead to.
    pub fn successors(&self, step: &ClassRef) -> impl Iterator<Item = &ClassRef> {
        self.neighbours(&self.successors, step)
    }

    fn neighbours<'a>(
        &'a self,
        table: &'a [Vec<usize>],
        step: &ClassRef,
    ) -> impl Iterator<Item = &'a ClassRef> {
        let set = self.index.get(step).map(|&i| &table[i]);
        set.into_iter().flatten().map(|&s| &self.steps[s].name)
    }

    /// The index of the start step in [`WorkflowGraph::steps`].
    #[must_use]
    pub fn start_position(&self) -> usize {
        self.start
    }

    /// The `Repeat` steps as `(position, again, max_iterations)`.
    pub fn repeats(&self) -> impl Iterator<Item = (usize, &str, u32)> {
        self.steps
            .iter()
            .enumerate()
            .filter_map(|(i, step)| match &step.node {
                Node::Repeat {
                    again,
                    max_iterations,
                } => Some((i, &**again, *max_iterations)),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> ClassRef {
        ClassRef::parse(&format!("shop:{name}")).unwrap()
    }

    fn step(name: &str, events: &[&str]) -> StepSpec {
        StepSpec {
            name: r(name),
            key: crate::core::class_ref::underscore(name).into(),
            events: events.iter().map(|e| Arc::from(*e)).collect(),
            is_done: name == "Done" || name == "Terminate",
            terminates: name == "Terminate",
            join: Join::All,
            node: Node::Step,
        }
    }

    fn to(targets: &[&str]) -> Transition {
        Transition::Static(
            targets
                .iter()
                .map(|t| Target {
                    step: r(t),
                    config: None,
                })
                .collect(),
        )
    }

    fn spec(steps: Vec<StepSpec>, transitions: &[(&str, &str, Transition)]) -> GraphSpec {
        GraphSpec {
            workflow: "OrderFlow".into(),
            start: steps[0].name,
            start_config: None,
            steps,
            transitions: transitions
                .iter()
                .map(|(f, e, t)| (r(f), Arc::from(*e), t.clone()))
                .collect(),
        }
    }

    fn problems(spec: GraphSpec) -> Vec<String> {
        let Err(CoreError::Definition { problems, .. }) = WorkflowGraph::build(spec) else {
            panic!("the spec should not build");
        };
        problems.iter().map(ToString::to_string).collect()
    }

    fn order_flow() -> GraphSpec {
        spec(
            vec![
                step("Validate", &["valid", "invalid"]),
                step("Pay", &["paid"]),
                step("Charge", &["charged"]),
                step("Reserve", &["reserved"]),
                step("Ship", &["shipped"]),
                step("Reject", &["rejected"]),
                step("Done", &["done"]),
            ],
            &[
                ("Validate", "valid", to(&["Pay"])),
                ("Validate", "invalid", to(&["Reject"])),
                ("Pay", "paid", to(&["Charge", "Reserve"])),
                ("Charge", "charged", to(&["Ship"])),
                ("Reserve", "reserved", to(&["Ship"])),
                ("Ship", "shipped", to(&["Done"])),
                ("Reject", "rejected", to(&["Done"])),
            ],
        )
    }

    #[test]
    fn a_valid_graph_builds_with_its_structure() {
        let graph = WorkflowGraph::build(order_flow()).unwrap();
        assert_eq!(graph.start(), &r("Validate"));
        let preds: Vec<_> = graph
            .predecessors(&r("Ship"))
            .map(ClassRef::short_name)
            .collect();
        assert_eq!(preds, ["Charge", "Reserve"]);
        let succ: Vec<_> = graph
            .successors(&r("Validate"))
            .map(ClassRef::short_name)
            .collect();
        assert_eq!(succ, ["Pay", "Reject"]);
        assert_eq!(graph.edges().count(), 8);
        assert!(
            matches!(graph.transition(&r("Pay"), "paid"), Some(Transition::Static(t)) if t.len() == 2)
        );
        assert!(graph.transition(&r("Pay"), "nope").is_none());
        assert_eq!(graph.predecessors(&r("Nowhere")).count(), 0);
    }

    /// Table test: one broken workflow per rule, and the message each gives.
    #[test]
    fn every_rule_reports_the_steps_involved() {
        let cases: Vec<(GraphSpec, &str)> = vec![
            (
                spec(
                    vec![step("A", &["next"]), step("B", &["back"]), step("Done", &["done"])],
                    &[("A", "next", to(&["B"])), ("B", "back", to(&["A"]))],
                ),
                "cycle: A -> B -> A",
            ),
            (
                spec(
                    vec![step("A", &["next"]), step("Lost", &["next"]), step("Done", &["done"])],
                    &[("A", "next", to(&["Done"])), ("Lost", "next", to(&["Done"]))],
                ),
                "Lost is not reachable from the start step",
            ),
            (
                spec(
                    vec![step("A", &["next"]), step("B", &[])],
                    &[("A", "next", to(&["B"]))],
                ),
                "B has no transitions out, but only Done may end a workflow",
            ),
            (
                spec(
                    vec![step("A", &["go"]), step("X", &["x"]), step("Y", &["y"]), step("Done", &["done"])],
                    &[
                        ("A", "go", to(&["X", "Y"])),
                        ("X", "x", to(&["Done"])),
                        ("Y", "y", to(&["Done"])),
                    ],
                ),
                "the fan-out of A on \"go\" to X, Y never joins before Done",
            ),
            (
                spec(
                    vec![step("A", &["next", "extra"]), step("Done", &["done"])],
                    &[("A", "next", to(&["Done"]))],
                ),
                "A declares the event \"extra\" but no transition handles it",
            ),
            (
                spec(
                    vec![step("A", &["next"]), step("Done", &["done"])],
                    &[("A", "next", to(&["Done"])), ("A", "other", to(&["Done"]))],
                ),
                "a transition from A uses the event \"other\", which it does not declare (it declares \"next\")",
            ),
        ];
        for (spec, expected) in cases {
            let found = problems(spec);
            assert!(
                found.iter().any(|p| p == expected),
                "{expected:?} not in {found:?}"
            );
        }
    }

    #[test]
    fn duplicate_keys_and_done_with_transitions_are_reported() {
        let mut steps = vec![
            step("A", &["next"]),
            step("B", &["next"]),
            step("Done", &["done"]),
        ];
        steps[1].key = "a".into();
        let found = problems(spec(
            steps,
            &[
                ("A", "next", to(&["B"])),
                ("B", "next", to(&["Done"])),
                ("Done", "done", to(&["A"])),
            ],
        ));
        assert!(
            found.contains(&"A and B share the context key \"a\"".to_string()),
            "{found:?}"
        );
        assert!(found.contains(&"Done ends the workflow and takes no transitions".to_string()));
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let found = problems(spec(
            vec![
                step("A", &["next", "unused"]),
                step("B", &["loop"]),
                step("Lost", &[]),
                step("Done", &["done"]),
            ],
            &[("A", "next", to(&["B"])), ("B", "loop", to(&["B"]))],
        ));
        assert!(found.len() >= 4, "{found:?}");
        assert!(found.iter().any(|p| p == "cycle: B -> B"));
        assert!(found.iter().any(|p| p.starts_with("Lost is not reachable")));
        assert!(found
            .iter()
            .any(|p| p.starts_with("Lost has no transitions out")));
        assert!(found.iter().any(|p| p.contains("\"unused\"")));
    }

    #[test]
    fn a_fan_out_that_joins_later_is_accepted() {
        let graph = WorkflowGraph::build(spec(
            vec![
                step("A", &["go"]),
                step("X", &["x"]),
                step("X2", &["x"]),
                step("Y", &["y"]),
                step("Join", &["joined"]),
                step("Done", &["done"]),
            ],
            &[
                ("A", "go", to(&["X", "Y"])),
                ("X", "x", to(&["X2"])),
                ("X2", "x", to(&["Join"])),
                ("Y", "y", to(&["Join"])),
                ("Join", "joined", to(&["Done"])),
            ],
        ));
        assert!(graph.is_ok());
    }

    #[test]
    fn dynamic_routes_count_as_edges_but_not_as_fan_outs() {
        let graph = WorkflowGraph::build(spec(
            vec![
                step("Triage", &["routed"]),
                step("Fast", &["done"]),
                step("Slow", &["done"]),
                step("Done", &["done"]),
            ],
            &[
                (
                    "Triage",
                    "routed",
                    Transition::Dynamic {
                        targets: vec![r("Fast"), r("Slow")],
                        many: false,
                    },
                ),
                ("Fast", "done", to(&["Done"])),
                ("Slow", "done", to(&["Done"])),
            ],
        ))
        .unwrap();
        let dynamic: Vec<_> = graph
            .edges()
            .filter(|e| e.3)
            .map(|e| e.2.short_name())
            .collect();
        assert_eq!(dynamic, ["Fast", "Slow"]);
        assert!(crate::core::render::mermaid(&graph, None).contains("s0 -.->|\"routed\"| s1"));
        assert!(crate::core::render::dot(&graph, None)
            .contains("s0 -> s1 [label=\"routed\", style=dashed];"));
    }

    #[test]
    fn first_joins_terminate_and_multi_choice_routes_are_validated() {
        let mut first = step("J", &["ok"]);
        first.join = Join::First;
        let found = problems(spec(
            vec![step("A", &["go"]), first.clone(), step("Done", &["done"])],
            &[("A", "go", to(&["J"])), ("J", "ok", to(&["Done"]))],
        ));
        assert_eq!(
            found,
            ["J joins with join = \"first\" but has one predecessor, A (a first-wins join needs at least two predecessors)"]
        );
        // A branch that can end in Terminate need not join the others.
        let graph = WorkflowGraph::build(spec(
            vec![
                step("A", &["go"]),
                step("X", &["stop"]),
                step("Y", &["y"]),
                step("Terminate", &["done"]),
                step("Done", &["done"]),
            ],
            &[
                ("A", "go", to(&["X", "Y"])),
                ("X", "stop", to(&["Terminate"])),
                ("Y", "y", to(&["Done"])),
            ],
        ));
        assert!(graph.is_ok(), "{graph:?}");
        // A route that may choose several targets is a fan-out: rule 4.
        let many = |many: bool| {
            spec(
                vec![
                    step("A", &["go"]),
                    step("X", &["x"]),
                    step("Y", &["y"]),
                    step("Done", &["done"]),
                ],
                &[
                    (
                        "A",
                        "go",
                        Transition::Dynamic {
                            targets: vec![r("X"), r("Y")],
                            many,
                        },
                    ),
                    ("X", "x", to(&["Done"])),
                    ("Y", "y", to(&["Done"])),
                ],
            )
        };
        assert!(WorkflowGraph::build(many(false)).is_ok());
        assert_eq!(
            problems(many(true)),
            ["the fan-out of A on \"go\" to X, Y never joins before Done"]
        );
    }

    #[test]
    fn a_first_join_withdraws_only_steps_that_lead_nowhere_else() {
        let mut first = step("J", &["ok"]);
        first.join = Join::First;
        let graph = WorkflowGraph::build(spec(
            vec![
                step("A", &["go"]),
                step("B", &["ok"]),
                step("C", &["ok", "other"]),
                step("D", &["ok"]),
                first,
                step("E", &["ok"]),
                step("Done", &["done"]),
            ],
            &[
                ("A", "go", to(&["B", "C", "D"])),
                ("B", "ok", to(&["J"])),
                ("C", "ok", to(&["J"])),
                ("C", "other", to(&["E"])),
                ("D", "ok", to(&["J"])),
                ("J", "ok", to(&["E"])),
                ("E", "ok", to(&["Done"])),
            ],
        ))
        .unwrap();
        let withdrawn: Vec<_> = graph
            .withdrawn_by(graph.position(&r("J")).unwrap())
            .iter()
            .map(|&p| graph.step_at(p).name.short_name())
            .collect();
        assert_eq!(withdrawn, ["B", "D"], "A and C can still reach E without J");
        assert!(graph
            .withdrawn_by(graph.position(&r("E")).unwrap())
            .is_empty());
    }

    #[test]
    fn renderings_escape_names() {
        let mut flow = order_flow();
        flow.workflow = "Order \"Flow\"".into();
        let graph = WorkflowGraph::build(flow).unwrap();
        let dot = crate::core::render::dot(&graph, None);
        assert!(
            dot.starts_with("digraph \"Order \\\"Flow\\\"\" {\n"),
            "{dot}"
        );
        assert!(dot.contains("s0 [label=\"Validate\", shape=oval];"));
        let mermaid = crate::core::render::mermaid(&graph, None);
        assert!(
            mermaid.starts_with("flowchart TD\n    s0([\"Validate\"])\n"),
            "{mermaid}"
        );
        assert!(mermaid.contains("s6((\"Done\"))"));
    }

    #[test]
    fn a_long_chain_validates_without_recursion() {
        let n = 20_000;
        let mut steps: Vec<StepSpec> = (0..n).map(|i| step(&format!("S{i}"), &["next"])).collect();
        steps.push(step("Done", &["done"]));
        let mut transitions: Vec<(ClassRef, Arc<str>, Transition)> = (0..n - 1)
            .map(|i| {
                (
                    r(&format!("S{i}")),
                    Arc::from("next"),
                    to(&[&format!("S{}", i + 1)]),
                )
            })
            .collect();
        transitions.push((r(&format!("S{}", n - 1)), Arc::from("next"), to(&["Done"])));
        let spec = GraphSpec {
            workflow: "Long".into(),
            start: r("S0"),
            start_config: None,
            steps,
            transitions,
        };
        assert!(WorkflowGraph::build(spec).is_ok());
    }
}
