//! The data an instance carries (Elixir: `Hephaestus.Core.Context`).
//!
//! `initial` is what the instance was started with and never changes;
//! `steps` holds each completed step's result under its step key: a dict,
//! or for a `ForEach` step the list of its runs' dicts, in item order.

use std::sync::Arc;

use crate::core::name::Name;
use crate::core::sorted_map::SortedMap;
use crate::core::value::{Map, Value};

/// Initial data plus step results. Updates share structure with the
/// original, so storing a result costs O(log n) whatever the context's size.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Context {
    initial: Map,
    steps: SortedMap<Name, Value>,
}

impl Context {
    /// A context with `initial` data and no step results.
    #[must_use]
    pub fn new(initial: Map) -> Context {
        Context {
            initial,
            steps: SortedMap::new(),
        }
    }

    /// A context with `initial` data and the given step results; for a
    /// repeated step key the last result wins.
    #[must_use]
    pub fn with_results(initial: Map, results: Vec<(Arc<str>, Value)>) -> Context {
        Context {
            initial,
            steps: SortedMap::from_pairs(
                results
                    .into_iter()
                    .map(|(k, v)| (Name::new(k), v))
                    .collect(),
            ),
        }
    }

    /// The data the instance started with.
    #[must_use]
    pub fn initial(&self) -> &Map {
        &self.initial
    }

    /// Step results by step key, in key order.
    pub fn steps(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.steps.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of stored step results.
    #[must_use]
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// The result stored under `step_key`.
    #[must_use]
    pub fn step_result(&self, step_key: &str) -> Option<&Value> {
        self.steps.get(step_key)
    }

    /// A new context with `result` under `step_key` (overwriting any earlier
    /// one); `initial` is untouched.
    #[must_use]
    pub fn put_step_result(&self, step_key: Arc<str>, result: Map) -> Context {
        let mut next = self.clone();
        next.put_step_result_mut(step_key, result);
        next
    }

    /// [`Context::put_step_result`] in place.
    pub fn put_step_result_mut(&mut self, step_key: Arc<str>, result: Map) {
        self.put_step_value_mut(step_key, Value::Dict(result));
    }

    /// Stores any value under `step_key` (a `ForEach` step's list of
    /// results), in place.
    pub fn put_step_value_mut(&mut self, step_key: Arc<str>, result: Value) {
        self.steps.insert_mut(Name::new(step_key), result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::value::Value;

    fn map(entries: &[(&str, i64)]) -> Map {
        Map::from_entries(
            entries
                .iter()
                .map(|(k, v)| ((*k).into(), Value::Int(*v)))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn results_are_namespaced_and_overwritten() {
        let ctx = Context::new(map(&[("order", 1)]));
        let one = ctx.put_step_result("validate".into(), map(&[("ok", 1)]));
        let two = one.put_step_result("validate".into(), map(&[("ok", 2)]));
        assert_eq!(ctx.step_count(), 0);
        assert_eq!(
            one.step_result("validate"),
            Some(&Value::Dict(map(&[("ok", 1)])))
        );
        assert_eq!(
            two.step_result("validate"),
            Some(&Value::Dict(map(&[("ok", 2)])))
        );
        assert_eq!(two.step_count(), 1);
        assert_eq!(two.initial(), &map(&[("order", 1)]));
    }

    #[test]
    fn equality_is_by_value() {
        let a = Context::new(map(&[("x", 1)])).put_step_result("s".into(), map(&[]));
        let b = Context::new(map(&[("x", 1)])).put_step_result("s".into(), map(&[]));
        assert_eq!(a, b);
        assert_ne!(a, Context::new(map(&[("x", 1)])));
    }
}
