//! One record of the execution history (Elixir:
//! `Hephaestus.Core.ExecutionEntry`, which the original documents but never
//! writes; here `complete_step` appends one every time).

use std::sync::Arc;

use crate::core::class_ref::ClassRef;
use crate::core::datetime::check_timestamp;
use crate::core::error::{CoreError, CoreResult};
use crate::core::value::Map;

/// A completed step (or one run of a `ForEach` or `Repeat` step): which,
/// with what event, when, what it stored, and which run it was.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionEntry {
    step: ClassRef,
    event: Arc<str>,
    timestamp: i64,
    context_updates: Option<Map>,
    iteration: Option<u32>,
}

impl ExecutionEntry {
    /// Builds an entry. `event` must be non-empty; `timestamp` is UTC
    /// microseconds since the Unix epoch within Python's `datetime` range.
    pub fn new(
        step: ClassRef,
        event: impl Into<Arc<str>>,
        timestamp: i64,
        context_updates: Option<Map>,
    ) -> CoreResult<ExecutionEntry> {
        let event: Arc<str> = event.into();
        if event.is_empty() {
            return Err(CoreError::invalid("event", "must be a non-empty string"));
        }
        Ok(ExecutionEntry {
            step,
            event,
            timestamp: check_timestamp(timestamp)?,
            context_updates,
            iteration: None,
        })
    }

    /// The entry of run `iteration` of a `ForEach` (the item's index) or
    /// `Repeat` (the repetition, from 0) step.
    #[must_use]
    pub fn with_iteration(mut self, iteration: Option<u32>) -> ExecutionEntry {
        self.iteration = iteration;
        self
    }

    /// Which run of a `ForEach` or `Repeat` step this was; `None` for an
    /// ordinary step.
    #[must_use]
    pub fn iteration(&self) -> Option<u32> {
        self.iteration
    }

    /// The completed step.
    #[must_use]
    pub fn step(&self) -> &ClassRef {
        &self.step
    }

    /// The event the step emitted.
    #[must_use]
    pub fn event(&self) -> &str {
        &self.event
    }

    /// When the step completed, in UTC microseconds since the epoch.
    #[must_use]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The result the step stored, or `None` when it passed none.
    #[must_use]
    pub fn context_updates(&self) -> Option<&Map> {
        self.context_updates.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_must_not_be_empty_and_time_in_range() {
        let step = ClassRef::parse("m:S").unwrap();
        assert!(ExecutionEntry::new(step, "", 0, None).is_err());
        assert!(ExecutionEntry::new(step, "done", i64::MAX, None).is_err());
        let entry = ExecutionEntry::new(step, "done", 5, None).unwrap();
        assert_eq!((entry.event(), entry.timestamp()), ("done", 5));
        assert!(entry.context_updates().is_none());
    }
}
