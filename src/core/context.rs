//! The data an instance carries (Elixir: `Hephaestus.Core.Context`).
//!
//! `initial` is what the instance was started with and never changes;
//! `steps` holds each completed step's result under its step key: a dict,
//! or for a `ForEach` step the list of its runs' dicts, in item order.

use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::core::name::Name;
use crate::core::sorted_map::SortedMap;
use crate::core::value::{Map, Value};

/// A step's stored result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepResult<'a> {
    /// An ordinary step's context updates.
    Dict(&'a Map),
    /// A `ForEach` step's runs' context updates, in item order.
    List(&'a [Map]),
}

impl StepResult<'_> {
    /// The result as a value (a dict, or a list of dicts).
    #[must_use]
    pub fn to_value(self) -> Value {
        match self {
            StepResult::Dict(map) => Value::Dict(map.clone()),
            StepResult::List(maps) => Value::List(maps.iter().cloned().map(Value::Dict).collect()),
        }
    }
}

impl Serialize for StepResult<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StepResult::Dict(map) => map.serialize(serializer),
            StepResult::List(maps) => serializer.collect_seq(maps.iter()),
        }
    }
}

/// Initial data plus step results. Updates share structure with the
/// original, so storing a result costs O(log n) whatever the context's size.
///
/// Dict results and list results live in two maps (a key is in at most one
/// of them), so that an ordinary result costs no more than a dict.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Context {
    initial: Map,
    steps: SortedMap<Name, Map>,
    lists: SortedMap<Name, Arc<[Map]>>,
}

impl Context {
    /// A context with `initial` data and no step results.
    #[must_use]
    pub fn new(initial: Map) -> Context {
        Context {
            initial,
            steps: SortedMap::new(),
            lists: SortedMap::new(),
        }
    }

    /// A context with `initial` data and the given step results (a dict,
    /// or a list whose dicts are kept and other items dropped); for a
    /// repeated step key the last result wins.
    #[must_use]
    pub fn with_results(initial: Map, results: Vec<(Arc<str>, Value)>) -> Context {
        let mut context = Context::new(initial);
        for (key, value) in results {
            match value {
                Value::List(items) => {
                    let maps = items.iter().filter_map(Value::as_dict).cloned().collect();
                    context.put_step_list_mut(key, maps);
                }
                Value::Dict(map) => context.put_step_result_mut(key, map),
                _ => {}
            }
        }
        context
    }

    /// The data the instance started with.
    #[must_use]
    pub fn initial(&self) -> &Map {
        &self.initial
    }

    /// Step results by step key, in key order.
    pub fn steps(&self) -> impl Iterator<Item = (&str, StepResult<'_>)> {
        let mut dicts = self.steps.iter().peekable();
        let mut lists = self.lists.iter().peekable();
        std::iter::from_fn(move || {
            let take_dict = match (dicts.peek(), lists.peek()) {
                (Some((a, _)), Some((b, _))) => a.as_str() <= b.as_str(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            if take_dict {
                dicts.next().map(|(k, v)| (k.as_str(), StepResult::Dict(v)))
            } else {
                lists.next().map(|(k, v)| (k.as_str(), StepResult::List(v)))
            }
        })
    }

    /// The number of stored step results.
    #[must_use]
    pub fn step_count(&self) -> usize {
        self.steps.len() + self.lists.len()
    }

    /// The result stored under `step_key`.
    #[must_use]
    pub fn step_result(&self, step_key: &str) -> Option<StepResult<'_>> {
        self.steps
            .get(step_key)
            .map(StepResult::Dict)
            .or_else(|| self.lists.get(step_key).map(|l| StepResult::List(l)))
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
        if !self.lists.is_empty() {
            self.lists.remove_mut(&*step_key);
        }
        self.steps.insert_mut(Name::new(step_key), result);
    }

    /// Stores a `ForEach` step's list of results under `step_key`
    /// (overwriting any earlier result), in place.
    pub fn put_step_list_mut(&mut self, step_key: Arc<str>, results: Vec<Map>) {
        self.steps.remove_mut(&*step_key);
        self.lists.insert_mut(Name::new(step_key), results.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some(StepResult::Dict(&map(&[("ok", 1)])))
        );
        assert_eq!(
            two.step_result("validate"),
            Some(StepResult::Dict(&map(&[("ok", 2)])))
        );
        assert_eq!(two.step_count(), 1);
        assert_eq!(two.initial(), &map(&[("order", 1)]));
    }

    #[test]
    fn lists_and_dicts_share_one_key_space_in_key_order() {
        let mut ctx = Context::new(map(&[]));
        ctx.put_step_result_mut("b".into(), map(&[("n", 1)]));
        ctx.put_step_list_mut("a".into(), vec![map(&[("i", 0)]), map(&[("i", 1)])]);
        ctx.put_step_result_mut("c".into(), map(&[]));
        let keys: Vec<&str> = ctx.steps().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(matches!(ctx.step_result("a"), Some(StepResult::List(l)) if l.len() == 2));
        ctx.put_step_list_mut("b".into(), Vec::new());
        assert_eq!(ctx.step_result("b"), Some(StepResult::List(&[])));
        ctx.put_step_result_mut("a".into(), map(&[]));
        assert_eq!(ctx.step_count(), 3, "a key is in one map only");
        let value = ctx.step_result("b").map(StepResult::to_value);
        assert_eq!(value, Some(Value::List(Vec::new().into())));
    }

    #[test]
    fn equality_is_by_value() {
        let a = Context::new(map(&[("x", 1)])).put_step_result("s".into(), map(&[]));
        let b = Context::new(map(&[("x", 1)])).put_step_result("s".into(), map(&[]));
        assert_eq!(a, b);
        assert_ne!(a, Context::new(map(&[("x", 1)])));
    }
}
