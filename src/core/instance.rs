//! The workflow instance value and its step-set bookkeeping (Elixir:
//! `Hephaestus.Core.Instance`).
//!
//! An [`Instance`] is immutable: every operation returns a new one that
//! shares structure with the old, so an update costs O(log s) in the number
//! of steps `s` and O(1) in the length of the history.
//!
//! Each step the instance knows of has one [`StepState`], so the sets the
//! Python API shows (`active_steps`, `waiting_steps`, `completed_steps`,
//! `skipped_steps`, `reached_steps`) cannot overlap, and waiting ⊆ active
//! holds by construction. The remaining invariants are checked by [`Instance::validate`]
//! on every path that builds an instance from raw fields:
//! - the id is non-empty and the workflow version is at least 1;
//! - a terminal instance (completed or failed) has no active or reached
//!   steps;
//! - a non-terminal instance is `Waiting` exactly when it has active steps
//!   and every one of them waits.

use std::sync::Arc;

use crate::core::class_map::ClassMap;
use crate::core::class_ref::ClassRef;
use crate::core::context::Context;
use crate::core::error::{CoreError, CoreResult};
use crate::core::execution_entry::ExecutionEntry;
use crate::core::history::History;
use crate::core::name::Name;
use crate::core::sorted_map::SortedMap;
use crate::core::status::Status;
use crate::core::value::{Map, Value};

/// Where one step stands in an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Runnable, or (when `waiting`) paused until an event or a timer.
    Active {
        /// The step returned `Async` and waits.
        waiting: bool,
    },
    /// Finished; it never runs again.
    Completed,
    /// On a path the instance did not take; it never runs.
    Skipped,
    /// A join that a taken transition has reached and that waits for its
    /// other predecessors to complete or be skipped.
    Reached,
}

impl StepState {
    fn name(self) -> &'static str {
        match self {
            StepState::Active { waiting: false } => "active",
            StepState::Active { waiting: true } => "waiting",
            StepState::Completed => "completed",
            StepState::Skipped => "skipped",
            StepState::Reached => "reached",
        }
    }
}

/// The progress of a `ForEach` or `Repeat` step while it is active.
#[derive(Debug, Clone, PartialEq)]
pub enum Loop {
    /// A `Repeat` step: the number of the run to come (from 0), which is
    /// how many runs returned `again` so far.
    Repeat {
        /// The next run's number.
        iteration: u32,
    },
    /// A `ForEach` step: its items, taken when it activated, and the
    /// results of the runs that completed, by item index.
    ForEach {
        /// The items, in order.
        items: Arc<[Value]>,
        /// Each completed run's context updates (`{}` when none).
        results: SortedMap<u32, Map>,
    },
}

/// A workflow instance.
#[derive(Debug, Clone)]
pub struct Instance {
    id: Arc<str>,
    workflow: ClassRef,
    workflow_version: u32,
    current_step: Option<ClassRef>,
    status: Status,
    context: Context,
    step_configs: ClassMap<Value>,
    steps: ClassMap<StepState>,
    /// Index of the active steps (value: waiting), kept in step with
    /// `steps` by `set_state`, so finding what can run costs O(active)
    /// however many steps the instance has finished.
    active: ClassMap<bool>,
    waiting_count: usize,
    reached_count: usize,
    completed_count: usize,
    /// A cache for the engine's join rule, not part of the value: for a
    /// step with many predecessors, how many of them (in the graph's
    /// order) are known to be completed or skipped. Resolution never goes
    /// back, so the count only grows; raw field changes drop the cache.
    join_cursors: ClassMap<u32>,
    /// The progress of the active `ForEach` and `Repeat` steps.
    loops: ClassMap<Loop>,
    runtime_metadata: SortedMap<Name, Value>,
    telemetry_metadata: Map,
    telemetry_start_time: Option<i64>,
    history: History,
    error: Option<Map>,
}

impl PartialEq for Instance {
    /// Every field by value; the engine's cache is not a field.
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.workflow == other.workflow
            && self.workflow_version == other.workflow_version
            && self.current_step == other.current_step
            && self.status == other.status
            && self.steps == other.steps
            && self.loops == other.loops
            && self.context == other.context
            && self.step_configs == other.step_configs
            && self.runtime_metadata == other.runtime_metadata
            && self.telemetry_metadata == other.telemetry_metadata
            && self.telemetry_start_time == other.telemetry_start_time
            && self.error == other.error
            && self.history == other.history
    }
}

/// Every field of an instance in plain form, for building one from raw
/// parts (Python's `Instance(...)` and `replace`, and deserialization).
#[derive(Debug, Clone)]
pub struct InstanceFields {
    /// Non-empty instance id.
    pub id: Arc<str>,
    /// The workflow class.
    pub workflow: ClassRef,
    /// At least 1.
    pub workflow_version: u32,
    /// The step the instance last waited on or started with.
    pub current_step: Option<ClassRef>,
    /// Lifecycle status.
    pub status: Status,
    /// Initial data and step results.
    pub context: Context,
    /// Configs of steps, by step.
    pub step_configs: Vec<(ClassRef, Value)>,
    /// Steps that may run (including waiting ones).
    pub active_steps: Vec<ClassRef>,
    /// Finished steps.
    pub completed_steps: Vec<ClassRef>,
    /// Active steps that wait for an event or a timer.
    pub waiting_steps: Vec<ClassRef>,
    /// Steps on paths not taken.
    pub skipped_steps: Vec<ClassRef>,
    /// Joins reached by a taken transition, waiting for other predecessors.
    pub reached_steps: Vec<ClassRef>,
    /// Metadata accumulated from step results.
    pub runtime_metadata: Vec<(Arc<str>, Value)>,
    /// Metadata for telemetry handlers.
    pub telemetry_metadata: Map,
    /// A `time.monotonic_ns()` reading, if telemetry started.
    pub telemetry_start_time: Option<i64>,
    /// Oldest entry first.
    pub execution_history: Vec<ExecutionEntry>,
    /// Why the instance failed.
    pub error: Option<Map>,
    /// The progress of active `ForEach` and `Repeat` steps.
    pub loops: Vec<(ClassRef, Loop)>,
}

/// Which steps are in which set, in plain form.
#[derive(Debug, Clone, Default)]
pub struct StepSets {
    /// Steps that may run (including waiting ones).
    pub active: Vec<ClassRef>,
    /// Finished steps.
    pub completed: Vec<ClassRef>,
    /// Active steps that wait.
    pub waiting: Vec<ClassRef>,
    /// Steps on paths not taken.
    pub skipped: Vec<ClassRef>,
    /// Joins reached by a taken transition, waiting for other predecessors.
    pub reached: Vec<ClassRef>,
}

/// A step's completion, as [`Instance::complete_step`] records it.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The event the step emitted.
    pub event: Arc<str>,
    /// Stored under the step's key in the context (`{}` when `None`).
    pub context_updates: Option<Map>,
    /// Merged into the runtime metadata; later keys win.
    pub metadata_updates: Option<Map>,
    /// When the step completed, in UTC microseconds since the epoch.
    pub timestamp: i64,
}

impl Completion {
    /// A completion with `event` and no updates.
    #[must_use]
    pub fn event(event: impl Into<Arc<str>>, timestamp: i64) -> Completion {
        Completion {
            event: event.into(),
            context_updates: None,
            metadata_updates: None,
            timestamp,
        }
    }
}

impl Instance {
    /// A new pending instance with `initial` as its context
    /// (Elixir: `Instance.new/4`).
    pub fn new(
        id: &str,
        workflow: ClassRef,
        workflow_version: u32,
        initial: Map,
    ) -> CoreResult<Instance> {
        let instance = Instance {
            id: id.into(),
            workflow,
            workflow_version,
            current_step: None,
            status: Status::Pending,
            context: Context::new(initial),
            step_configs: ClassMap::new(),
            steps: ClassMap::new(),
            active: ClassMap::new(),
            waiting_count: 0,
            reached_count: 0,
            completed_count: 0,
            join_cursors: ClassMap::new(),
            loops: ClassMap::new(),
            runtime_metadata: SortedMap::new(),
            telemetry_metadata: Map::default(),
            telemetry_start_time: None,
            history: History::default(),
            error: None,
        };
        instance.validate()?;
        Ok(instance)
    }

    /// Builds an instance from raw fields, checking every invariant.
    pub fn from_fields(fields: InstanceFields) -> CoreResult<Instance> {
        let mut instance = Instance::new(
            &fields.id,
            fields.workflow,
            fields.workflow_version,
            Map::default(),
        )?;
        instance.set_step_sets(StepSets {
            active: fields.active_steps,
            completed: fields.completed_steps,
            waiting: fields.waiting_steps,
            skipped: fields.skipped_steps,
            reached: fields.reached_steps,
        })?;
        instance.id = fields.id;
        instance.current_step = fields.current_step;
        instance.status = fields.status;
        instance.context = fields.context;
        instance.step_configs = fields.step_configs.into_iter().collect();
        instance.runtime_metadata = fields
            .runtime_metadata
            .into_iter()
            .map(|(k, v)| (Name::new(k), v))
            .collect();
        instance.telemetry_metadata = fields.telemetry_metadata;
        instance.telemetry_start_time = fields.telemetry_start_time;
        instance.history = History::from_oldest_first(fields.execution_history);
        instance.error = fields.error;
        instance.loops = fields.loops.into_iter().collect();
        instance.validate()?;
        Ok(instance)
    }

    /// Checks the invariants that the representation does not already
    /// guarantee (see the module docs).
    pub fn validate(&self) -> CoreResult<()> {
        if self.id.is_empty() {
            return Err(CoreError::invalid("id", "must be a non-empty string"));
        }
        if self.workflow_version < 1 {
            return Err(CoreError::invalid("workflow_version", "must be at least 1"));
        }
        if self.status.is_terminal() {
            if !self.active.is_empty() {
                return Err(CoreError::invalid(
                    "active_steps",
                    format!("a {} instance has no active steps", self.status),
                ));
            }
            if self.reached_count > 0 {
                return Err(CoreError::invalid(
                    "reached_steps",
                    format!("a {} instance has no reached steps", self.status),
                ));
            }
        } else if (self.status == Status::Waiting) != self.all_active_waiting() {
            return Err(CoreError::invalid(
                "status",
                "must be 'waiting' exactly when there are active steps and every one of them waits",
            ));
        }
        for (step, state) in &self.loops {
            if !matches!(self.steps.get(step), Some(StepState::Active { .. })) {
                return Err(CoreError::invalid(
                    "loops",
                    format!("step {step} has loop progress but is not active"),
                ));
            }
            if let Loop::ForEach { items, results } = state {
                if results.iter().any(|(i, _)| *i as usize >= items.len()) {
                    return Err(CoreError::invalid(
                        "loops",
                        format!("step {step} has a result for an item it does not have"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn all_active_waiting(&self) -> bool {
        !self.active.is_empty() && self.waiting_count == self.active.len()
    }

    /// The status the step sets call for, keeping `Pending` until the
    /// instance is advanced.
    fn derived_status(&self) -> Status {
        if self.status.is_terminal() {
            self.status
        } else if self.all_active_waiting() {
            Status::Waiting
        } else if self.status == Status::Pending {
            Status::Pending
        } else {
            Status::Running
        }
    }

    fn check_not_terminal(&self, operation: &'static str) -> CoreResult<()> {
        if self.status.is_terminal() {
            return Err(CoreError::Terminal {
                operation,
                status: self.status,
            });
        }
        Ok(())
    }

    fn step_error(
        operation: &'static str,
        step: &ClassRef,
        actual: Option<StepState>,
        allowed: &'static str,
    ) -> CoreError {
        CoreError::StepState {
            operation,
            step: step.to_string(),
            actual: actual.map_or("not active", StepState::name),
            allowed,
        }
    }

    /// Sets `step`'s state from `old` (its current one) to `state`, keeping
    /// the index, the counters and the status in step. In place: the maps
    /// copy only what other instances share.
    fn set_state(&mut self, step: &ClassRef, old: Option<StepState>, state: StepState) {
        match old {
            Some(StepState::Active { waiting }) => {
                self.waiting_count -= usize::from(waiting);
                self.active.remove_mut(step);
            }
            Some(StepState::Reached) => self.reached_count -= 1,
            Some(StepState::Completed) => self.completed_count -= 1,
            Some(StepState::Skipped) | None => {}
        }
        match state {
            StepState::Active { waiting } => {
                self.active.insert_mut(*step, waiting);
                self.waiting_count += usize::from(waiting);
            }
            StepState::Reached => self.reached_count += 1,
            StepState::Completed => self.completed_count += 1,
            StepState::Skipped => {}
        }
        if state != StepState::Reached && !self.join_cursors.is_empty() {
            self.join_cursors.remove_mut(step);
        }
        if !matches!(state, StepState::Active { .. }) && !self.loops.is_empty() {
            self.loops.remove_mut(step);
        }
        self.steps.insert_mut(*step, state);
        self.status = self.derived_status();
    }

    /// Makes `step` active (idempotent) and stores `config` when given
    /// (Elixir: `Instance.activate_step/3`).
    ///
    /// Fails when the instance is terminal or the step is completed or
    /// skipped.
    pub fn activate_step(&self, step: &ClassRef, config: Option<Value>) -> CoreResult<Instance> {
        let mut next = self.clone();
        next.activate_step_mut(step, config)?;
        Ok(next)
    }

    /// [`Instance::activate_step`] in place; on error nothing changes.
    pub fn activate_step_mut(&mut self, step: &ClassRef, config: Option<Value>) -> CoreResult<()> {
        const OP: &str = "activate_step";
        self.check_not_terminal(OP)?;
        let current = self.steps.get(step).copied();
        match current {
            Some(StepState::Active { .. }) => {}
            None | Some(StepState::Reached) => {
                self.set_state(step, current, StepState::Active { waiting: false });
            }
            Some(_) => {
                return Err(Self::step_error(
                    OP,
                    step,
                    current,
                    "neither completed nor skipped",
                ))
            }
        }
        if let Some(config) = config {
            self.step_configs.insert_mut(*step, config);
        }
        Ok(())
    }

    /// Completes the active `step` (Elixir: `Instance.complete_step/4`):
    /// moves it to the completed set, stores the completion's context
    /// updates (or `{}`) under `step_key`, merges its metadata updates into
    /// the runtime metadata (later keys win), drops the step's config, and
    /// appends an [`ExecutionEntry`].
    pub fn complete_step(
        &self,
        step: &ClassRef,
        step_key: &Arc<str>,
        completion: Completion,
    ) -> CoreResult<Instance> {
        let mut next = self.clone();
        next.complete_step_mut(step, step_key, completion)?;
        Ok(next)
    }

    /// [`Instance::complete_step`] in place; on error nothing changes.
    pub fn complete_step_mut(
        &mut self,
        step: &ClassRef,
        step_key: &Arc<str>,
        completion: Completion,
    ) -> CoreResult<()> {
        const OP: &str = "complete_step";
        self.check_not_terminal(OP)?;
        let current = self.steps.get(step).copied();
        if !matches!(current, Some(StepState::Active { .. })) {
            return Err(Self::step_error(OP, step, current, "active"));
        }
        self.record(step, step_key, completion, None, true)?;
        self.set_state(step, current, StepState::Completed);
        if !self.step_configs.is_empty() {
            self.step_configs.remove_mut(step);
        }
        Ok(())
    }

    /// Records one run of the active `ForEach` or `Repeat` step `step`
    /// (run `iteration`), leaving the step active: appends its history
    /// entry and merges its metadata updates; with `store`, also stores its
    /// context updates (or `{}`) under `step_key`. Returns what the run
    /// stored (`{}` when it passed nothing).
    pub fn record_run_mut(
        &mut self,
        step: &ClassRef,
        step_key: &Arc<str>,
        completion: Completion,
        iteration: u32,
        store: bool,
    ) -> CoreResult<Map> {
        const OP: &str = "complete_step";
        self.check_not_terminal(OP)?;
        self.check_active(step, OP)?;
        self.record(step, step_key, completion, Some(iteration), store)
    }

    /// What a completion of `step` (checked active by the caller) records,
    /// whether it completes the step or one run of it: its history entry
    /// (with `iteration`), its metadata updates, and with `store` its
    /// context updates under `step_key`. Checks the entry first; on error
    /// nothing changes. Returns the context updates (`{}` when none).
    fn record(
        &mut self,
        step: &ClassRef,
        step_key: &Arc<str>,
        completion: Completion,
        iteration: Option<u32>,
        store: bool,
    ) -> CoreResult<Map> {
        let Completion {
            event,
            context_updates,
            metadata_updates,
            timestamp,
        } = completion;
        let stored = context_updates.clone().unwrap_or_default();
        let entry = ExecutionEntry::new(*step, event, timestamp, context_updates)?
            .with_iteration(iteration);
        if store {
            self.context
                .put_step_result_mut(Arc::clone(step_key), stored.clone());
        }
        if let Some(metadata) = metadata_updates {
            self.runtime_metadata
                .insert_all(metadata.iter().map(|(k, v)| (Name::from(k), v.clone())));
        }
        self.history.push(entry);
        Ok(stored)
    }

    /// Completes the active `ForEach` or `Repeat` step `step` without a
    /// history entry of its own (each run has one): stores `results` (a
    /// `ForEach` step's list) under `step_key` when given, drops its config
    /// and its loop progress.
    pub fn finish_loop_mut(
        &mut self,
        step: &ClassRef,
        step_key: &Arc<str>,
        results: Option<Vec<Map>>,
    ) -> CoreResult<()> {
        const OP: &str = "complete_step";
        self.check_not_terminal(OP)?;
        let current = self.steps.get(step).copied();
        if !matches!(current, Some(StepState::Active { .. })) {
            return Err(Self::step_error(OP, step, current, "active"));
        }
        self.set_state(step, current, StepState::Completed);
        if let Some(results) = results {
            self.context
                .put_step_list_mut(Arc::clone(step_key), results);
        }
        if !self.step_configs.is_empty() {
            self.step_configs.remove_mut(step);
        }
        Ok(())
    }

    /// Fails, naming the step's state, unless `step` is active (waiting or
    /// not).
    pub fn check_active(&self, step: &ClassRef, operation: &'static str) -> CoreResult<()> {
        let current = self.steps.get(step).copied();
        if matches!(current, Some(StepState::Active { .. })) {
            Ok(())
        } else {
            Err(Self::step_error(operation, step, current, "active"))
        }
    }

    /// The progress of the active `ForEach` or `Repeat` step `step`.
    #[must_use]
    pub fn loop_of(&self, step: &ClassRef) -> Option<&Loop> {
        self.loops.get(step)
    }

    /// Every active `ForEach` and `Repeat` step with its progress.
    pub fn loops(&self) -> impl Iterator<Item = (&ClassRef, &Loop)> {
        self.loops.iter()
    }

    /// Sets the progress of the active `step` (for the engine).
    pub fn set_loop_mut(&mut self, step: &ClassRef, state: Loop) -> CoreResult<()> {
        let current = self.steps.get(step).copied();
        if !matches!(current, Some(StepState::Active { .. })) {
            return Err(Self::step_error("loop", step, current, "active"));
        }
        self.loops.insert_mut(*step, state);
        Ok(())
    }

    /// Stores the result of run `index` of the active `ForEach` step
    /// `step`; returns how many runs have completed.
    pub fn put_item_result_mut(
        &mut self,
        step: &ClassRef,
        index: u32,
        result: Map,
    ) -> CoreResult<usize> {
        // Taken out and put back, so the results map is not shared while
        // it changes (no copy on write).
        match self.loops.get(step).cloned() {
            Some(Loop::ForEach { items, mut results }) if (index as usize) < items.len() => {
                self.loops.remove_mut(step);
                results.insert_mut(index, result);
                let done = results.len();
                self.loops
                    .insert_mut(*step, Loop::ForEach { items, results });
                Ok(done)
            }
            _ => Err(CoreError::invalid(
                "iteration",
                format!("step {step} has no item {index} to complete"),
            )),
        }
    }

    /// Marks the active `step` as waiting for an event or a timer and makes
    /// it the current step (idempotent).
    pub fn wait_step(&self, step: &ClassRef) -> CoreResult<Instance> {
        let mut next = self.clone();
        next.wait_step_mut(step)?;
        Ok(next)
    }

    /// [`Instance::wait_step`] in place; on error nothing changes.
    pub fn wait_step_mut(&mut self, step: &ClassRef) -> CoreResult<()> {
        const OP: &str = "wait_step";
        self.check_not_terminal(OP)?;
        let current = self.steps.get(step).copied();
        match current {
            Some(StepState::Active { waiting: true }) => {}
            Some(StepState::Active { waiting: false }) => {
                self.set_state(step, current, StepState::Active { waiting: true });
            }
            _ => return Err(Self::step_error(OP, step, current, "active")),
        }
        self.current_step = Some(*step);
        Ok(())
    }

    /// Records that `step` can no longer run (idempotent). Fails when the
    /// instance is terminal or the step is active or completed.
    pub fn skip_step(&self, step: &ClassRef) -> CoreResult<Instance> {
        let mut next = self.clone();
        next.skip_step_mut(step)?;
        Ok(next)
    }

    /// [`Instance::skip_step`] in place; on error nothing changes.
    pub fn skip_step_mut(&mut self, step: &ClassRef) -> CoreResult<()> {
        const OP: &str = "skip_step";
        self.check_not_terminal(OP)?;
        match self.steps.get(step).copied() {
            None => {
                self.set_state(step, None, StepState::Skipped);
                Ok(())
            }
            Some(StepState::Skipped) => Ok(()),
            current => Err(Self::step_error(
                OP,
                step,
                current,
                "neither active nor completed",
            )),
        }
    }

    /// Withdraws `step`, which can no longer run because another branch won
    /// a race or the workflow terminated: a step not yet started, active,
    /// waiting or reached becomes skipped and loses its config. A completed
    /// or skipped step is left as it is. Fails when the instance is
    /// terminal.
    pub fn withdraw_step_mut(&mut self, step: &ClassRef) -> CoreResult<()> {
        self.check_not_terminal("withdraw_step")?;
        let current = self.steps.get(step).copied();
        if matches!(current, Some(StepState::Completed | StepState::Skipped)) {
            return Ok(());
        }
        self.set_state(step, current, StepState::Skipped);
        if !self.step_configs.is_empty() {
            self.step_configs.remove_mut(step);
        }
        Ok(())
    }

    /// Records that a taken transition reached the join `step`, which waits
    /// for its other predecessors, storing `config` when given
    /// (idempotent). Fails when the instance is terminal or the step is
    /// active, completed or skipped.
    pub fn reach_step_mut(&mut self, step: &ClassRef, config: Option<Value>) -> CoreResult<()> {
        const OP: &str = "reach_step";
        self.check_not_terminal(OP)?;
        let current = self.steps.get(step).copied();
        match current {
            None => self.set_state(step, None, StepState::Reached),
            Some(StepState::Reached) => {}
            Some(_) => return Err(Self::step_error(OP, step, current, "not yet reached")),
        }
        if let Some(config) = config {
            self.step_configs.insert_mut(*step, config);
        }
        Ok(())
    }

    /// Moves the status where bookkeeping alone does not (starting,
    /// completing, resuming) and sets the current step when `current_step`
    /// is `Some`; for the engine. Checks every invariant; on error nothing
    /// changes.
    pub fn set_status_mut(
        &mut self,
        status: Status,
        current_step: Option<Option<ClassRef>>,
    ) -> CoreResult<()> {
        let (old_status, old_current) = (self.status, self.current_step);
        self.status = status;
        if let Some(current_step) = current_step {
            self.current_step = current_step;
        }
        self.status = self.derived_status();
        if let Err(err) = self.validate() {
            (self.status, self.current_step) = (old_status, old_current);
            return Err(err);
        }
        Ok(())
    }

    /// Fails the instance with `error`: status `Failed`, every active and
    /// reached step dropped (they will never run), their configs too.
    /// Fails when the instance is already completed or failed.
    pub fn fail_mut(&mut self, error: Map) -> CoreResult<()> {
        self.check_not_terminal("fail")?;
        let dropped: Vec<ClassRef> = self
            .steps
            .iter()
            .filter(|(_, s)| matches!(s, StepState::Active { .. } | StepState::Reached))
            .map(|(k, _)| *k)
            .collect();
        for step in &dropped {
            self.steps.remove_mut(step);
            self.step_configs.remove_mut(step);
        }
        self.active = ClassMap::new();
        self.join_cursors = ClassMap::new();
        self.loops = ClassMap::new();
        self.waiting_count = 0;
        self.reached_count = 0;
        self.status = Status::Failed;
        self.error = Some(error);
        Ok(())
    }

    /// How many joins wait for their other predecessors.
    #[must_use]
    pub fn reached_count(&self) -> usize {
        self.reached_count
    }

    /// How many steps completed.
    #[must_use]
    pub fn completed_count(&self) -> usize {
        self.completed_count
    }

    /// The engine's join cursor for `step` (see the field's docs).
    #[must_use]
    pub fn join_cursor(&self, step: &ClassRef) -> u32 {
        self.join_cursors.get(step).copied().unwrap_or(0)
    }

    /// Records the engine's join cursor for a step that is not active,
    /// completed or skipped.
    pub fn set_join_cursor(&mut self, step: &ClassRef, cursor: u32) {
        self.join_cursors.insert_mut(*step, cursor);
    }

    // -- raw updates ------------------------------------------------------

    /// The step sets in plain form, each in name order.
    #[must_use]
    pub fn step_sets(&self) -> StepSets {
        let pick = |want: fn(StepState) -> bool| -> Vec<ClassRef> {
            let mut steps: Vec<ClassRef> = self
                .steps
                .iter()
                .filter(|(_, s)| want(**s))
                .map(|(k, _)| *k)
                .collect();
            steps.sort_by(ClassRef::cmp_names);
            steps
        };
        StepSets {
            active: pick(|s| matches!(s, StepState::Active { .. })),
            completed: pick(|s| s == StepState::Completed),
            waiting: pick(|s| s == StepState::Active { waiting: true }),
            skipped: pick(|s| s == StepState::Skipped),
            reached: pick(|s| s == StepState::Reached),
        }
    }

    /// Replaces the step sets (checked), resetting the counters and the
    /// engine's cache.
    fn set_step_sets(&mut self, sets: StepSets) -> CoreResult<()> {
        let steps = build_steps(sets)?;
        self.steps = steps.iter().copied().collect();
        self.active = steps
            .iter()
            .filter_map(|(step, state)| match state {
                StepState::Active { waiting } => Some((*step, *waiting)),
                _ => None,
            })
            .collect();
        let count = |want: StepState| steps.iter().filter(|(_, s)| *s == want).count();
        self.waiting_count = count(StepState::Active { waiting: true });
        self.reached_count = count(StepState::Reached);
        self.completed_count = count(StepState::Completed);
        self.join_cursors = ClassMap::new();
        Ok(())
    }

    /// The same instance with the fields in `changes` replaced (`None`
    /// keeps a field), checking every invariant once all are applied.
    pub fn with_fields(&self, changes: FieldChanges) -> CoreResult<Instance> {
        let mut next = self.clone();
        if changes.active_steps.is_some()
            || changes.completed_steps.is_some()
            || changes.waiting_steps.is_some()
            || changes.skipped_steps.is_some()
            || changes.reached_steps.is_some()
        {
            let current = self.step_sets();
            next.set_step_sets(StepSets {
                active: changes.active_steps.unwrap_or(current.active),
                completed: changes.completed_steps.unwrap_or(current.completed),
                waiting: changes.waiting_steps.unwrap_or(current.waiting),
                skipped: changes.skipped_steps.unwrap_or(current.skipped),
                reached: changes.reached_steps.unwrap_or(current.reached),
            })?;
        }
        if let Some(id) = changes.id {
            next.id = id;
        }
        if let Some(workflow) = changes.workflow {
            next.workflow = workflow;
        }
        if let Some(version) = changes.workflow_version {
            next.workflow_version = version;
        }
        if let Some(current_step) = changes.current_step {
            next.current_step = current_step;
        }
        if let Some(status) = changes.status {
            next.status = status;
        }
        if let Some(context) = changes.context {
            next.context = context;
        }
        if let Some(configs) = changes.step_configs {
            next.step_configs = configs.into_iter().collect();
        }
        if let Some(metadata) = changes.runtime_metadata {
            next.runtime_metadata = metadata
                .into_iter()
                .map(|(k, v)| (Name::new(k), v))
                .collect();
        }
        if let Some(metadata) = changes.telemetry_metadata {
            next.telemetry_metadata = metadata;
        }
        if let Some(start) = changes.telemetry_start_time {
            next.telemetry_start_time = start;
        }
        if let Some(entries) = changes.execution_history {
            next.history = History::from_oldest_first(entries);
        }
        if let Some(error) = changes.error {
            next.error = error;
        }
        let stale: Vec<ClassRef> = next
            .loops
            .iter()
            .filter(|(step, _)| !matches!(next.steps.get(step), Some(StepState::Active { .. })))
            .map(|(step, _)| *step)
            .collect();
        for step in &stale {
            next.loops.remove_mut(step);
        }
        next.validate()?;
        Ok(next)
    }

    // -- reading ----------------------------------------------------------

    /// The instance id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The workflow class.
    #[must_use]
    pub fn workflow(&self) -> &ClassRef {
        &self.workflow
    }

    /// The workflow version, at least 1.
    #[must_use]
    pub fn workflow_version(&self) -> u32 {
        self.workflow_version
    }

    /// The step the instance last waited on or started with.
    #[must_use]
    pub fn current_step(&self) -> Option<&ClassRef> {
        self.current_step.as_ref()
    }

    /// The lifecycle status.
    #[must_use]
    pub fn status(&self) -> Status {
        self.status
    }

    /// Initial data and step results.
    #[must_use]
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Step configs, by step (in intern order, see [`ClassRef`]).
    pub fn step_configs(&self) -> impl Iterator<Item = (&ClassRef, &Value)> {
        self.step_configs.iter()
    }

    /// The config stored for `step`.
    #[must_use]
    pub fn step_config(&self, step: &ClassRef) -> Option<&Value> {
        self.step_configs.get(step)
    }

    /// Every step the instance knows of with its state (in intern order,
    /// see [`ClassRef`]).
    pub fn steps(&self) -> impl Iterator<Item = (&ClassRef, StepState)> {
        self.steps.iter().map(|(k, s)| (k, *s))
    }

    /// The state of `step`, or `None` if the instance never touched it.
    #[must_use]
    pub fn step_state(&self, step: &ClassRef) -> Option<StepState> {
        self.steps.get(step).copied()
    }

    /// How many steps are active (waiting ones included).
    #[must_use]
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// The active steps with whether each waits (in intern order);
    /// O(active).
    pub fn active_steps(&self) -> impl Iterator<Item = (&ClassRef, bool)> {
        self.active.iter().map(|(step, waiting)| (step, *waiting))
    }

    /// How many active steps wait.
    #[must_use]
    pub fn waiting_count(&self) -> usize {
        self.waiting_count
    }

    /// Runtime metadata in key order.
    pub fn runtime_metadata(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.runtime_metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Metadata for telemetry handlers.
    #[must_use]
    pub fn telemetry_metadata(&self) -> &Map {
        &self.telemetry_metadata
    }

    /// A `time.monotonic_ns()` reading, if telemetry started.
    #[must_use]
    pub fn telemetry_start_time(&self) -> Option<i64> {
        self.telemetry_start_time
    }

    /// The execution history, newest entry first (reverse it for the
    /// oldest-first order the Python API shows).
    #[must_use]
    pub fn history_newest_first(&self) -> impl ExactSizeIterator<Item = &ExecutionEntry> {
        self.history.newest_first()
    }

    /// The number of history entries.
    #[must_use]
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Why the instance failed.
    #[must_use]
    pub fn error(&self) -> Option<&Map> {
        self.error.as_ref()
    }
}

/// Raw changes for [`Instance::with_fields`]; `None` keeps a field.
/// Nested options set a nullable field (`Some(None)` clears it).
#[derive(Debug, Default)]
#[allow(clippy::option_option)]
pub struct FieldChanges {
    /// New id.
    pub id: Option<Arc<str>>,
    /// New workflow class.
    pub workflow: Option<ClassRef>,
    /// New workflow version.
    pub workflow_version: Option<u32>,
    /// New current step.
    pub current_step: Option<Option<ClassRef>>,
    /// New status.
    pub status: Option<Status>,
    /// New context.
    pub context: Option<Context>,
    /// New step configs.
    pub step_configs: Option<Vec<(ClassRef, Value)>>,
    /// New active steps (waiting ones included).
    pub active_steps: Option<Vec<ClassRef>>,
    /// New completed steps.
    pub completed_steps: Option<Vec<ClassRef>>,
    /// New waiting steps (a subset of the active ones).
    pub waiting_steps: Option<Vec<ClassRef>>,
    /// New skipped steps.
    pub skipped_steps: Option<Vec<ClassRef>>,
    /// New reached joins.
    pub reached_steps: Option<Vec<ClassRef>>,
    /// New runtime metadata.
    pub runtime_metadata: Option<Vec<(Arc<str>, Value)>>,
    /// New telemetry metadata.
    pub telemetry_metadata: Option<Map>,
    /// New telemetry start time.
    pub telemetry_start_time: Option<Option<i64>>,
    /// New history, oldest entry first.
    pub execution_history: Option<Vec<ExecutionEntry>>,
    /// New error.
    pub error: Option<Option<Map>>,
}

/// The step states of four plain sets, sorted by step, rejecting overlaps
/// and waiting steps that are not active.
fn build_steps(sets: StepSets) -> CoreResult<Vec<(ClassRef, StepState)>> {
    let waiting: Vec<ClassRef> = sets.waiting;
    let mut pairs: Vec<(ClassRef, StepState, &'static str)> = Vec::new();
    for (field, members, state) in [
        (
            "active_steps",
            sets.active,
            StepState::Active { waiting: false },
        ),
        ("completed_steps", sets.completed, StepState::Completed),
        ("skipped_steps", sets.skipped, StepState::Skipped),
        ("reached_steps", sets.reached, StepState::Reached),
    ] {
        pairs.extend(members.into_iter().map(|step| (step, state, field)));
    }
    pairs.sort_by_key(|a| a.0);
    pairs.dedup_by(|later, earlier| later.0 == earlier.0 && later.1 == earlier.1);
    if let Some([first, second]) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        let (field, other) = if first.2 > second.2 {
            (first.2, second.1)
        } else {
            (second.2, first.1)
        };
        return Err(CoreError::invalid(
            field,
            format!(
                "step {} is also {}; a step has one state",
                first.0,
                other.name()
            ),
        ));
    }
    let mut steps: Vec<(ClassRef, StepState)> =
        pairs.into_iter().map(|(s, st, _)| (s, st)).collect();
    for step in waiting {
        match steps.binary_search_by(|(s, _)| s.cmp(&step)) {
            Ok(i) if matches!(steps[i].1, StepState::Active { .. }) => {
                steps[i].1 = StepState::Active { waiting: true };
            }
            _ => {
                return Err(CoreError::invalid(
                    "waiting_steps",
                    format!("step {step} waits but is not active"),
                ))
            }
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::context::StepResult;

    fn step(name: &str) -> ClassRef {
        ClassRef::parse(&format!("shop:{name}")).unwrap()
    }

    fn map(entries: &[(&str, i64)]) -> Map {
        Map::from_entries(
            entries
                .iter()
                .map(|(k, v)| ((*k).into(), Value::Int(*v)))
                .collect(),
        )
        .unwrap()
    }

    fn key(text: &str) -> Arc<str> {
        text.into()
    }

    fn fresh() -> Instance {
        Instance::new("orderid::1", step("OrderFlow"), 1, map(&[("items", 2)])).unwrap()
    }

    fn running() -> Instance {
        fresh()
            .with_fields(FieldChanges {
                status: Some(Status::Running),
                ..FieldChanges::default()
            })
            .unwrap()
    }

    #[test]
    fn new_instance_is_pending_and_empty() {
        let inst = fresh();
        assert_eq!(inst.status(), Status::Pending);
        assert_eq!(inst.id(), "orderid::1");
        assert_eq!(inst.active_count(), 0);
        assert_eq!(inst.history_len(), 0);
        assert_eq!(inst.context().initial(), &map(&[("items", 2)]));
        assert!(inst.telemetry_start_time().is_none());
    }

    #[test]
    fn new_rejects_empty_id_and_version_zero() {
        assert!(Instance::new("", step("F"), 1, Map::default()).is_err());
        assert!(Instance::new("x", step("F"), 0, Map::default()).is_err());
    }

    #[test]
    fn activate_is_idempotent_and_stores_config() {
        let a = fresh()
            .activate_step(&step("Pay"), Some(Value::Int(5)))
            .unwrap();
        let b = a.activate_step(&step("Pay"), None).unwrap();
        assert_eq!(b.active_count(), 1);
        assert_eq!(b.step_configs().count(), 1);
        assert_eq!(
            b.status(),
            Status::Pending,
            "activation alone does not start the instance"
        );
        assert_eq!(fresh().active_count(), 0, "the original is untouched");
    }

    #[test]
    fn complete_moves_step_and_records_everything() {
        let pay = step("Pay");
        let inst = running().activate_step(&pay, Some(Value::Int(5))).unwrap();
        let done = inst
            .complete_step(
                &pay,
                &key("pay"),
                Completion {
                    event: "paid".into(),
                    context_updates: Some(map(&[("amount", 3)])),
                    metadata_updates: Some(map(&[("m", 1)])),
                    timestamp: 42,
                },
            )
            .unwrap();
        assert_eq!(done.step_state(&pay), Some(StepState::Completed));
        assert_eq!(
            done.context().step_result("pay"),
            Some(StepResult::Dict(&map(&[("amount", 3)])))
        );
        assert_eq!(done.runtime_metadata().count(), 1);
        assert_eq!(done.step_configs().count(), 0, "config dropped");
        let entry = done.history_newest_first().next().unwrap();
        assert_eq!(
            (entry.step(), entry.event(), entry.timestamp()),
            (&pay, "paid", 42)
        );
        assert_eq!(done.status(), Status::Running);
        assert_eq!(
            inst.step_state(&pay),
            Some(StepState::Active { waiting: false })
        );
    }

    #[test]
    fn complete_without_updates_stores_empty_result_and_none_in_history() {
        let pay = step("Pay");
        let done = running()
            .activate_step(&pay, None)
            .unwrap()
            .complete_step(
                &pay,
                &key("pay"),
                Completion {
                    event: "paid".into(),
                    context_updates: None,
                    metadata_updates: None,
                    timestamp: 0,
                },
            )
            .unwrap();
        assert_eq!(
            done.context().step_result("pay"),
            Some(StepResult::Dict(&Map::default()))
        );
        assert!(done
            .history_newest_first()
            .next()
            .unwrap()
            .context_updates()
            .is_none());
    }

    #[test]
    fn metadata_later_keys_win() {
        let (a, b) = (step("A"), step("B"));
        let inst = running()
            .activate_step(&a, None)
            .unwrap()
            .activate_step(&b, None)
            .unwrap();
        let inst = inst
            .complete_step(
                &a,
                &key("a"),
                Completion {
                    event: "ok".into(),
                    context_updates: None,
                    metadata_updates: Some(map(&[("k", 1), ("x", 0)])),
                    timestamp: 0,
                },
            )
            .unwrap();
        let inst = inst
            .complete_step(
                &b,
                &key("b"),
                Completion {
                    event: "ok".into(),
                    context_updates: None,
                    metadata_updates: Some(map(&[("k", 2)])),
                    timestamp: 0,
                },
            )
            .unwrap();
        let meta: Vec<_> = inst
            .runtime_metadata()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(
            meta,
            [
                ("k".to_string(), Value::Int(2)),
                ("x".to_string(), Value::Int(0))
            ]
        );
    }

    #[test]
    fn illegal_transitions_are_errors() {
        let pay = step("Pay");
        let inst = running();
        assert!(matches!(
            inst.complete_step(
                &pay,
                &key("pay"),
                Completion {
                    event: "paid".into(),
                    context_updates: None,
                    metadata_updates: None,
                    timestamp: 0
                }
            ),
            Err(CoreError::StepState { .. })
        ));
        assert!(inst.wait_step(&pay).is_err());
        let done = inst
            .activate_step(&pay, None)
            .unwrap()
            .complete_step(
                &pay,
                &key("pay"),
                Completion {
                    event: "paid".into(),
                    context_updates: None,
                    metadata_updates: None,
                    timestamp: 0,
                },
            )
            .unwrap();
        assert!(done.activate_step(&pay, None).is_err());
        assert!(done.skip_step(&pay).is_err());
        assert!(done
            .complete_step(
                &pay,
                &key("pay"),
                Completion {
                    event: "paid".into(),
                    context_updates: None,
                    metadata_updates: None,
                    timestamp: 0
                }
            )
            .is_err());
        let skipped = inst.skip_step(&step("Other")).unwrap();
        assert!(skipped.activate_step(&step("Other"), None).is_err());
        assert!(inst
            .activate_step(&pay, None)
            .unwrap()
            .skip_step(&pay)
            .is_err());
        let err = inst.activate_step(&pay, None).unwrap().complete_step(
            &pay,
            &key("pay"),
            Completion {
                event: "".into(),
                context_updates: None,
                metadata_updates: None,
                timestamp: 0,
            },
        );
        assert!(matches!(
            err,
            Err(CoreError::InvalidField { field: "event", .. })
        ));
    }

    #[test]
    fn terminal_instances_take_no_changes() {
        for status in [Status::Completed, Status::Failed] {
            let inst = fresh()
                .with_fields(FieldChanges {
                    status: Some(status),
                    ..FieldChanges::default()
                })
                .unwrap();
            let pay = step("Pay");
            assert!(matches!(
                inst.activate_step(&pay, None),
                Err(CoreError::Terminal { .. })
            ));
            assert!(matches!(
                inst.skip_step(&pay),
                Err(CoreError::Terminal { .. })
            ));
        }
    }

    #[test]
    fn waiting_status_follows_the_rule() {
        let (a, b) = (step("A"), step("B"));
        let inst = running()
            .activate_step(&a, None)
            .unwrap()
            .activate_step(&b, None)
            .unwrap();
        let one = inst.wait_step(&a).unwrap();
        assert_eq!(one.status(), Status::Running, "B can still run");
        assert_eq!(one.current_step(), Some(&a));
        let both = one.wait_step(&b).unwrap();
        assert_eq!(both.status(), Status::Waiting);
        assert_eq!(both.waiting_count(), 2);
        let resumed = both
            .complete_step(
                &a,
                &key("a"),
                Completion {
                    event: "received".into(),
                    context_updates: None,
                    metadata_updates: None,
                    timestamp: 0,
                },
            )
            .unwrap();
        assert_eq!(resumed.status(), Status::Waiting, "B still waits");
        assert_eq!(resumed.waiting_count(), 1);
        let last = resumed
            .complete_step(
                &b,
                &key("b"),
                Completion {
                    event: "received".into(),
                    context_updates: None,
                    metadata_updates: None,
                    timestamp: 0,
                },
            )
            .unwrap();
        assert_eq!(last.status(), Status::Running);
        assert_eq!(last.active_count(), 0);
    }

    #[test]
    fn pending_instance_whose_steps_all_wait_is_waiting() {
        let a = step("A");
        let inst = fresh()
            .activate_step(&a, None)
            .unwrap()
            .wait_step(&a)
            .unwrap();
        assert_eq!(inst.status(), Status::Waiting);
    }

    #[test]
    fn raw_step_sets_are_checked() {
        let (a, b) = (step("A"), step("B"));
        let sets =
            |active: &[&ClassRef], completed: &[&ClassRef], waiting: &[&ClassRef]| FieldChanges {
                active_steps: Some(active.iter().map(|s| *(*s)).collect()),
                completed_steps: Some(completed.iter().map(|s| *(*s)).collect()),
                waiting_steps: Some(waiting.iter().map(|s| *(*s)).collect()),
                ..FieldChanges::default()
            };
        let inst = running();
        assert!(
            inst.with_fields(sets(&[&a], &[&a], &[])).is_err(),
            "active and completed"
        );
        assert!(
            inst.with_fields(sets(&[&a], &[], &[&b])).is_err(),
            "waiting not active"
        );
        assert!(
            inst.with_fields(sets(&[&a], &[], &[&a])).is_err(),
            "status must become waiting"
        );
        let waiting = inst
            .with_fields(FieldChanges {
                status: Some(Status::Waiting),
                ..sets(&[&a], &[], &[&a])
            })
            .unwrap();
        assert_eq!(waiting.status(), Status::Waiting);
        let ok = inst.with_fields(sets(&[&a, &b], &[], &[&a])).unwrap();
        assert_eq!((ok.active_count(), ok.waiting_count()), (2, 1));
        let back = ok.step_sets();
        assert_eq!((back.active.len(), back.waiting.len()), (2, 1));
    }

    #[test]
    fn terminal_with_active_steps_is_rejected() {
        let inst = running().activate_step(&step("A"), None).unwrap();
        let err = inst.with_fields(FieldChanges {
            status: Some(Status::Completed),
            ..FieldChanges::default()
        });
        assert!(matches!(
            err,
            Err(CoreError::InvalidField {
                field: "active_steps",
                ..
            })
        ));
    }

    #[test]
    fn history_is_appended_in_constant_shape() {
        let mut inst = running();
        for i in 0..50 {
            let s = step(&format!("S{i}"));
            inst = inst.activate_step(&s, None).unwrap();
            inst = inst
                .complete_step(
                    &s,
                    &key(&format!("s{i}")),
                    Completion {
                        event: "done".into(),
                        context_updates: None,
                        metadata_updates: None,
                        timestamp: i,
                    },
                )
                .unwrap();
        }
        let stamps: Vec<i64> = inst
            .history_newest_first()
            .map(ExecutionEntry::timestamp)
            .collect();
        assert_eq!(stamps, (0..50).rev().collect::<Vec<_>>());
        let fields_history: Vec<_> = inst.history_newest_first().cloned().collect();
        let rebuilt = inst
            .with_fields(FieldChanges {
                execution_history: Some(fields_history.into_iter().rev().collect()),
                ..FieldChanges::default()
            })
            .unwrap();
        assert_eq!(rebuilt, inst);
    }
}
