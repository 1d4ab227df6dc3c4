//! The serialized form of an [`Instance`]: JSON and a compact binary form
//! ([MessagePack](https://msgpack.org)), both versioned. `docs/format.md` is the reference.
//!
//! Both carry the same document: a `format` marker, a `format_version`,
//! then every field of the instance. JSON writes it as an object with
//! named fields and text timestamps; the binary form writes it as an array
//! in the same field order with integer timestamps. Step sets and maps
//! keyed by class or step key are written in name order, and dicts in
//! their insertion order, so one instance always serializes the same way.
//!
//! Reading never trusts the input: nesting is bounded (values by
//! [`MAX_DEPTH`](crate::core::value::MAX_DEPTH), documents by the parsers'
//! own limits), preallocation is capped, and every invariant of
//! [`Instance`] is checked before an instance is returned.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::class_ref::ClassRef;
use crate::core::context::Context;
use crate::core::datetime::{format_timestamp, parse_timestamp};
use crate::core::error::{CoreError, CoreResult};
use crate::core::execution_entry::ExecutionEntry;
use crate::core::instance::{Instance, InstanceFields, Loop};
use crate::core::sorted_map::SortedMap;
use crate::core::status::Status;
use crate::core::value::{Map, MapSeed, Value, ValueSeed};

/// The marker every serialized instance starts with.
pub const FORMAT: &str = "hephaestus.instance";
/// The format version this build writes. It reads this one and every
/// earlier one (see [`READS_VERSIONS`]).
pub const FORMAT_VERSION: u32 = 2;
/// The format versions this build reads: 1 (before `ForEach` and `Repeat`)
/// and 2.
pub const READS_VERSIONS: [u32; 2] = [1, 2];
/// Nesting limit for whole documents (values nest at most
/// [`MAX_DEPTH`](crate::core::value::MAX_DEPTH) inside that).
const DOCUMENT_DEPTH: usize = 128;

/// Writes `instance` as JSON.
pub fn to_json(instance: &Instance) -> CoreResult<String> {
    // Sized for a typical document, so the buffer rarely grows and copies.
    let estimate = 512 + 160 * (instance.history_len() + instance.context().step_count());
    let mut out = Vec::with_capacity(estimate);
    serde_json::to_writer(&mut out, &Document(instance))
        .map_err(|e| CoreError::serialization(e.to_string()))?;
    // serde_json writes UTF-8 only.
    String::from_utf8(out).map_err(|e| CoreError::serialization(e.to_string()))
}

/// Where a class name sits in a document: the workflow, or a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClassKind {
    /// The `workflow` field.
    Workflow,
    /// Every other class field: the current step, step sets, configs and
    /// history entries.
    Step,
}

impl ClassKind {
    /// The Python base class such a name must derive from.
    #[must_use]
    pub fn base_name(self) -> &'static str {
        match self {
            ClassKind::Workflow => "Workflow",
            ClassKind::Step => "Step",
        }
    }

    /// What the document uses the class as.
    #[must_use]
    pub fn role(self) -> &'static str {
        match self {
            ClassKind::Workflow => "workflow",
            ClassKind::Step => "step",
        }
    }
}

/// Resolves a class name found in a document, used as a class of the given
/// kind, to the reference to store, or fails naming it. Names reach the
/// resolver only after their shape was checked ([`ClassRef::check`]);
/// [`ClassRef::parse`] keeps names as they are, and the bindings find the
/// live class and return its canonical name.
pub trait Resolve: FnMut(&str, ClassKind) -> CoreResult<ClassRef> {}
impl<F: FnMut(&str, ClassKind) -> CoreResult<ClassRef>> Resolve for F {}

/// Reads an instance from JSON, resolving class names with `resolve`.
pub fn from_json(text: &str, resolve: impl Resolve) -> CoreResult<Instance> {
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Err(err) => CoreError::serialization(format!("the text is not JSON ({err})")),
            Ok(_) => CoreError::serialization(
                "the JSON is not a serialized instance, which is a JSON object",
            ),
        });
    }
    let mut de = serde_json::Deserializer::from_str(text);
    // `end` rejects anything but whitespace after the document.
    let parsed = DocumentIn::deserialize(&mut de).and_then(|doc| de.end().map(|()| doc));
    match parsed {
        Ok(doc) => doc.into_instance(resolve).map_err(as_serialization),
        Err(err) => Err(explain(
            err.to_string(),
            Probe::deserialize(&mut serde_json::Deserializer::from_str(text)).ok(),
            "the JSON is not a serialized instance",
        )),
    }
}

/// Writes `instance` in the binary form.
pub fn to_bytes(instance: &Instance) -> CoreResult<Vec<u8>> {
    rmp_serde::to_vec(&Document(instance)).map_err(|e| CoreError::serialization(e.to_string()))
}

/// Reads an instance from the binary form, resolving class names with
/// `resolve`.
pub fn from_bytes(bytes: &[u8], resolve: impl Resolve) -> CoreResult<Instance> {
    // A reader over a shrinking slice: what is left after the document is
    // trailing data. (It also never preallocates from a length header.)
    let read = |mut rest: &[u8]| {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        de.set_max_depth(DOCUMENT_DEPTH);
        let parsed = DocumentIn::deserialize(&mut de);
        (parsed, rest.len())
    };
    match read(bytes) {
        (Ok(_), trailing) if trailing > 0 => Err(CoreError::serialization(format!(
            "{trailing} bytes of trailing data after the instance"
        ))),
        (Ok(doc), _) => doc.into_instance(resolve).map_err(as_serialization),
        (Err(err), _) => {
            let mut rest = bytes;
            let mut de = rmp_serde::Deserializer::new(&mut rest);
            de.set_max_depth(DOCUMENT_DEPTH);
            Err(explain(
                err.to_string(),
                Probe::deserialize(&mut de).ok(),
                "the data is not a hephaestus binary instance",
            ))
        }
    }
}

/// Reports any error found while reading as a serialization error.
fn as_serialization(error: CoreError) -> CoreError {
    match error {
        CoreError::Serialization { .. } | CoreError::UnresolvedClass { .. } => error,
        other => CoreError::serialization(other.to_string()),
    }
}

/// Turns a parse error into a message, saying so when the input is another
/// format, a version this build cannot read, or not an instance at all
/// (`foreign`, when it has no marker and version).
fn explain(error: String, probe: Option<Probe>, foreign: &str) -> CoreError {
    match probe {
        None => CoreError::serialization(format!("{foreign} ({error})")),
        Some(Probe { format, .. }) if format != FORMAT => CoreError::serialization(format!(
            "not a serialized instance (format is {format:?}, expected {FORMAT:?})"
        )),
        Some(Probe { version, .. }) if !READS_VERSIONS.contains(&version) => {
            CoreError::serialization(format!(
                "format version {version} is not supported (this build reads versions {})",
                READS_VERSIONS.map(|v| v.to_string()).join(" and ")
            ))
        }
        Some(_) => CoreError::serialization(error),
    }
}

// ---------------------------------------------------------------------------
// Writing

struct Document<'a>(&'a Instance);

/// Serializes whatever `F` yields as a map.
struct MapOf<F>(F);

impl<F, I, K, V> Serialize for MapOf<F>
where
    F: Fn() -> I,
    I: Iterator<Item = (K, V)>,
    K: Serialize,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map((self.0)())
    }
}

/// Serializes whatever `F` yields as a sequence.
struct SeqOf<F>(F);

impl<F, I, T> Serialize for SeqOf<F>
where
    F: Fn() -> I,
    I: Iterator<Item = T>,
    T: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq((self.0)())
    }
}

/// A timestamp: text in JSON, an integer in the binary form.
struct Timestamp(i64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let mut text = String::with_capacity(27);
            format_timestamp(self.0, &mut text);
            serializer.serialize_str(&text)
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl Serialize for ExecutionEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // `iteration` is written only when set: it is the last field, so
        // the binary form (an array) stays positional.
        let fields = 4 + usize::from(self.iteration().is_some());
        let mut s = serializer.serialize_struct("ExecutionEntry", fields)?;
        s.serialize_field("step", self.step().as_str())?;
        s.serialize_field("event", self.event())?;
        s.serialize_field("timestamp", &Timestamp(self.timestamp()))?;
        s.serialize_field("context_updates", &self.context_updates())?;
        if let Some(iteration) = self.iteration() {
            s.serialize_field("iteration", &iteration)?;
        }
        s.end()
    }
}

/// A loop's progress: `{"kind", "iteration", "items", "results"}`.
struct LoopOut<'a>(&'a Loop);

impl Serialize for LoopOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Loop", 4)?;
        match self.0 {
            Loop::Repeat { iteration } => {
                s.serialize_field("kind", "repeat")?;
                s.serialize_field("iteration", iteration)?;
                s.serialize_field("items", &None::<()>)?;
                s.serialize_field("results", &SeqOf(std::iter::empty::<()>))?;
            }
            Loop::ForEach { items, results } => {
                s.serialize_field("kind", "for_each")?;
                s.serialize_field("iteration", &0)?;
                s.serialize_field("items", &Some(&**items))?;
                s.serialize_field("results", &SeqOf(|| results.iter()))?;
            }
        }
        s.end()
    }
}

impl Serialize for Document<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let inst = self.0;
        let sets = inst.step_sets();
        let mut configs: Vec<(&ClassRef, &Value)> = inst.step_configs().collect();
        configs.sort_by(|a, b| a.0.cmp_names(b.0));
        let history: Vec<&ExecutionEntry> = {
            let mut entries: Vec<_> = inst.history_newest_first().collect();
            entries.reverse();
            entries
        };
        let mut loops: Vec<(&ClassRef, &Loop)> = inst.loops().collect();
        loops.sort_by(|a, b| a.0.cmp_names(b.0));
        let mut s = serializer.serialize_struct("Instance", 20)?;
        s.serialize_field("format", FORMAT)?;
        s.serialize_field("format_version", &FORMAT_VERSION)?;
        s.serialize_field("id", inst.id())?;
        s.serialize_field("workflow", inst.workflow().as_str())?;
        s.serialize_field("workflow_version", &inst.workflow_version())?;
        s.serialize_field("current_step", &inst.current_step().map(ClassRef::as_str))?;
        s.serialize_field("status", inst.status().as_str())?;
        s.serialize_field("context", &ContextOut(inst.context()))?;
        s.serialize_field(
            "step_configs",
            &MapOf(|| configs.iter().map(|(k, v)| (k.as_str(), *v))),
        )?;
        s.serialize_field(
            "active_steps",
            &SeqOf(|| sets.active.iter().map(ClassRef::as_str)),
        )?;
        s.serialize_field(
            "completed_steps",
            &SeqOf(|| sets.completed.iter().map(ClassRef::as_str)),
        )?;
        s.serialize_field(
            "waiting_steps",
            &SeqOf(|| sets.waiting.iter().map(ClassRef::as_str)),
        )?;
        s.serialize_field(
            "skipped_steps",
            &SeqOf(|| sets.skipped.iter().map(ClassRef::as_str)),
        )?;
        s.serialize_field(
            "reached_steps",
            &SeqOf(|| sets.reached.iter().map(ClassRef::as_str)),
        )?;
        s.serialize_field("runtime_metadata", &MapOf(|| inst.runtime_metadata()))?;
        s.serialize_field("telemetry_metadata", inst.telemetry_metadata())?;
        s.serialize_field("telemetry_start_time", &inst.telemetry_start_time())?;
        s.serialize_field("execution_history", &SeqOf(|| history.iter()))?;
        s.serialize_field("error", &inst.error())?;
        s.serialize_field(
            "loops",
            &MapOf(|| loops.iter().map(|(k, v)| (k.as_str(), LoopOut(v)))),
        )?;
        s.end()
    }
}

struct ContextOut<'a>(&'a Context);

impl Serialize for ContextOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Context", 2)?;
        s.serialize_field("initial", self.0.initial())?;
        s.serialize_field("steps", &MapOf(|| self.0.steps()))?;
        s.end()
    }
}

// ---------------------------------------------------------------------------
// Reading

/// A value read with the depth guard.
pub(crate) struct AnyValue(pub(crate) Value);

impl Serialize for AnyValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ValueSeed::ROOT.deserialize(deserializer).map(AnyValue)
    }
}

/// A dict read with the depth guard.
pub(crate) struct AnyMap(pub(crate) Map);

impl Serialize for AnyMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AnyMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        MapSeed.deserialize(deserializer).map(AnyMap)
    }
}

/// A map read as pairs in input order, rejecting duplicate keys.
struct Pairs<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut pairs: Vec<(String, V)> =
                    Vec::with_capacity(access.size_hint().unwrap_or(0).min(4096));
                while let Some(pair) = access.next_entry::<String, V>()? {
                    pairs.push(pair);
                }
                let mut keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                if let Some([key, _]) = keys.windows(2).find(|w| w[0] == w[1]) {
                    return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor(PhantomData))
    }
}

/// Reads a field that must be present but may be `null`: with
/// `deserialize_with`, serde reports a missing field instead of quietly
/// reading it as `None`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(deserializer)
}

/// A timestamp in either representation.
struct TimestampIn(i64);

impl<'de> Deserialize<'de> for TimestampIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
            parse_timestamp(&text)
                .map(TimestampIn)
                .map_err(de::Error::custom)
        } else {
            i64::deserialize(deserializer).map(TimestampIn)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    step: String,
    event: String,
    timestamp: TimestampIn,
    #[serde(deserialize_with = "nullable")]
    context_updates: Option<AnyMap>,
    #[serde(default)]
    iteration: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextIn {
    initial: AnyMap,
    steps: Pairs<AnyValue>,
}

impl ContextIn {
    /// The context, checking that each step result is a dict (or, since
    /// version 2, a `ForEach` step's list of dicts).
    fn into_context(self, v1: bool) -> CoreResult<Context> {
        let mut results = Vec::with_capacity(self.steps.0.len());
        for (key, value) in self.steps.0 {
            let ok = match &value.0 {
                Value::Dict(_) => true,
                Value::List(items) => !v1 && items.iter().all(|i| matches!(i, Value::Dict(_))),
                _ => false,
            };
            if !ok {
                return Err(CoreError::serialization(format!(
                    "context.steps[{key:?}] must be a dict{}",
                    if v1 { "" } else { " or a list of dicts" }
                )));
            }
            results.push((key.into(), value.0));
        }
        Ok(Context::with_results(self.initial.0, results))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoopIn {
    kind: String,
    iteration: u32,
    #[serde(deserialize_with = "nullable")]
    items: Option<Vec<AnyValue>>,
    results: Vec<(u32, AnyMap)>,
}

impl LoopIn {
    fn into_loop(self, step: &str) -> CoreResult<Loop> {
        match (self.kind.as_str(), self.items) {
            ("repeat", None) if self.results.is_empty() => Ok(Loop::Repeat {
                iteration: self.iteration,
            }),
            ("for_each", Some(items)) => {
                let items: Vec<Value> = items.into_iter().map(|v| v.0).collect();
                let mut results: Vec<(u32, Map)> =
                    self.results.into_iter().map(|(i, m)| (i, m.0)).collect();
                results.sort_by_key(|(i, _)| *i);
                if results.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(CoreError::serialization(format!(
                        "loops[{step:?}]: an item has two results"
                    )));
                }
                Ok(Loop::ForEach {
                    items: items.into(),
                    results: SortedMap::from_pairs(results),
                })
            }
            (kind, _) => Err(CoreError::serialization(format!(
                "loops[{step:?}]: not a loop of kind \"repeat\" (without items or results) or \"for_each\" (with items), got kind {kind:?}"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentIn {
    format: String,
    format_version: u32,
    id: String,
    workflow: String,
    workflow_version: u32,
    #[serde(deserialize_with = "nullable")]
    current_step: Option<String>,
    status: String,
    context: ContextIn,
    step_configs: Pairs<AnyValue>,
    active_steps: Vec<String>,
    completed_steps: Vec<String>,
    waiting_steps: Vec<String>,
    skipped_steps: Vec<String>,
    reached_steps: Vec<String>,
    runtime_metadata: Pairs<AnyValue>,
    telemetry_metadata: AnyMap,
    #[serde(deserialize_with = "nullable")]
    telemetry_start_time: Option<i64>,
    execution_history: Vec<EntryIn>,
    #[serde(deserialize_with = "nullable")]
    error: Option<AnyMap>,
    /// Since version 2, where it is required.
    #[serde(default)]
    loops: Option<Pairs<LoopIn>>,
}

/// Resolves each distinct step name once.
struct Resolver<R> {
    resolve: R,
    steps: HashMap<String, ClassRef, foldhash::fast::RandomState>,
}

impl<R: Resolve> Resolver<R> {
    fn workflow(&mut self, name: &str) -> CoreResult<ClassRef> {
        ClassRef::check(name)?;
        (self.resolve)(name, ClassKind::Workflow)
    }

    fn get(&mut self, name: &str) -> CoreResult<ClassRef> {
        if let Some(found) = self.steps.get(name) {
            return Ok(*found);
        }
        ClassRef::check(name)?;
        let resolved = (self.resolve)(name, ClassKind::Step)?;
        self.steps.insert(name.to_string(), resolved);
        Ok(resolved)
    }

    fn all(&mut self, names: &[String]) -> CoreResult<Vec<ClassRef>> {
        names.iter().map(|n| self.get(n)).collect()
    }
}

impl DocumentIn {
    fn into_instance(self, resolve: impl Resolve) -> CoreResult<Instance> {
        let mut names = Resolver {
            resolve,
            steps: HashMap::default(),
        };
        if self.format != FORMAT {
            return Err(explain(
                String::new(),
                Some(Probe {
                    format: self.format,
                    version: 0,
                }),
                "",
            ));
        }
        if !READS_VERSIONS.contains(&self.format_version) {
            return Err(explain(
                String::new(),
                Some(Probe {
                    format: self.format,
                    version: self.format_version,
                }),
                "",
            ));
        }
        let v1 = self.format_version == 1;
        if v1
            && (self.loops.is_some()
                || self.execution_history.iter().any(|e| e.iteration.is_some()))
        {
            return Err(CoreError::serialization(
                "a version 1 document has no loops and no iterations",
            ));
        }
        let Some(loops) = self.loops.or_else(|| v1.then(|| Pairs(Vec::new()))) else {
            return Err(CoreError::serialization("missing field `loops`"));
        };
        let workflow = names.workflow(&self.workflow)?;
        let context = self.context.into_context(v1)?;
        let mut execution_history = Vec::with_capacity(self.execution_history.len());
        for e in self.execution_history {
            execution_history.push(
                ExecutionEntry::new(
                    names.get(&e.step)?,
                    e.event.as_str(),
                    e.timestamp.0,
                    e.context_updates.map(|m| m.0),
                )?
                .with_iteration(e.iteration),
            );
        }
        let mut loop_states = Vec::with_capacity(loops.0.len());
        for (name, state) in loops.0 {
            let state = state.into_loop(&name)?;
            loop_states.push((names.get(&name)?, state));
        }
        let fields = InstanceFields {
            id: self.id.into(),
            workflow,
            workflow_version: self.workflow_version,
            current_step: self
                .current_step
                .as_deref()
                .map(|n| names.get(n))
                .transpose()?,
            status: self.status.parse::<Status>()?,
            context,
            step_configs: self
                .step_configs
                .0
                .into_iter()
                .map(|(k, v)| Ok((names.get(&k)?, v.0)))
                .collect::<CoreResult<_>>()?,
            active_steps: names.all(&self.active_steps)?,
            completed_steps: names.all(&self.completed_steps)?,
            waiting_steps: names.all(&self.waiting_steps)?,
            skipped_steps: names.all(&self.skipped_steps)?,
            reached_steps: names.all(&self.reached_steps)?,
            runtime_metadata: self
                .runtime_metadata
                .0
                .into_iter()
                .map(|(k, v)| (k.into(), v.0))
                .collect(),
            telemetry_metadata: self.telemetry_metadata.0,
            telemetry_start_time: self.telemetry_start_time,
            execution_history,
            error: self.error.map(|m| m.0),
            loops: loop_states,
        };
        Instance::from_fields(fields)
    }
}

/// Just the marker and the version, read from a document of any shape.
struct Probe {
    format: String,
    version: u32,
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProbeVisitor;
        impl<'de> Visitor<'de> for ProbeVisitor {
            type Value = Probe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a serialized instance")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Probe, A::Error> {
                let (mut format, mut version) = (None, None);
                while let Some(key) = access.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*key {
                        "format" => format = Some(access.next_value::<String>()?),
                        "format_version" => version = Some(access.next_value::<u32>()?),
                        _ => {
                            access.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Probe {
                    format: format.ok_or_else(|| de::Error::missing_field("format"))?,
                    version: version.ok_or_else(|| de::Error::missing_field("format_version"))?,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Probe, A::Error> {
                let format = seq
                    .next_element::<String>()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let version = seq
                    .next_element::<u32>()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Probe { format, version })
            }
        }
        deserializer.deserialize_any(ProbeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::instance::Completion;

    /// A resolver that keeps names as they are.
    fn parse(name: &str, _kind: ClassKind) -> CoreResult<ClassRef> {
        ClassRef::parse(name)
    }
    use crate::core::instance::FieldChanges;

    fn step(name: &str) -> ClassRef {
        ClassRef::parse(&format!("shop:{name}")).unwrap()
    }

    fn sample() -> Instance {
        let initial = Map::from_entries(vec![
            (
                "items".into(),
                Value::List(vec![Value::Int(1), Value::Bytes(vec![1, 2].into())].into()),
            ),
            ("$price".into(), Value::Float(f64::NAN)),
        ])
        .unwrap();
        let mut inst = Instance::new("orderid::abc", step("OrderFlow"), 2, initial)
            .unwrap()
            .with_fields(FieldChanges {
                status: Some(Status::Running),
                telemetry_start_time: Some(Some(123)),
                ..FieldChanges::default()
            })
            .unwrap();
        for (i, name) in ["A", "B", "C"].iter().enumerate() {
            let s = step(name);
            inst = inst.activate_step(&s, Some(Value::Int(7))).unwrap();
            let updates =
                Map::from_entries(vec![("n".into(), Value::Int(i64::try_from(i).unwrap()))])
                    .unwrap();
            inst = inst
                .complete_step(
                    &s,
                    &name.to_lowercase().into(),
                    Completion {
                        event: "done".into(),
                        context_updates: Some(updates),
                        metadata_updates: None,
                        timestamp: 1_700_000_000_000_000,
                    },
                )
                .unwrap();
        }
        inst.activate_step(&step("D"), Some(Value::Str("cfg".into())))
            .unwrap()
            .activate_step(&step("E"), None)
            .unwrap()
            .wait_step(&step("E"))
            .unwrap()
            .skip_step(&step("F"))
            .unwrap()
    }

    #[test]
    fn json_and_bytes_round_trip() {
        let inst = sample();
        let text = to_json(&inst).unwrap();
        assert!(text.starts_with(r#"{"format":"hephaestus.instance","format_version":2,"#));
        assert_eq!(from_json(&text, parse).unwrap(), inst);
        let bytes = to_bytes(&inst).unwrap();
        assert!(bytes.len() < text.len());
        assert_eq!(from_bytes(&bytes, parse).unwrap(), inst);
        assert_eq!(to_json(&from_bytes(&bytes, parse).unwrap()).unwrap(), text);
    }

    #[test]
    fn class_names_go_through_the_resolver() {
        let text = to_json(&sample()).unwrap();
        let mut calls = Vec::new();
        let renamed = from_json(&text, |name: &str, kind: ClassKind| {
            assert_eq!(kind == ClassKind::Workflow, name.ends_with(":OrderFlow"));
            calls.push(name.to_string());
            ClassRef::parse(&name.replace("shop:", "store:"))
        })
        .unwrap();
        assert_eq!(renamed.workflow().as_str(), "store:OrderFlow");
        assert!(renamed
            .steps()
            .all(|(s, _)| s.as_str().starts_with("store:")));
        let distinct: std::collections::HashSet<_> = calls.iter().collect();
        assert_eq!(distinct.len(), calls.len(), "each name is resolved once");
        let err = from_json(&text, |name: &str, _: ClassKind| {
            Err(CoreError::serialization(format!(
                "cannot resolve class {name:?}"
            )))
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot resolve class \"shop:"),
            "{err}"
        );
    }

    #[test]
    fn wrong_versions_and_formats_are_named() {
        let text = to_json(&sample()).unwrap();
        let future = text.replace(r#""format_version":2"#, r#""format_version":3"#);
        let err = from_json(&future, parse).unwrap_err().to_string();
        assert!(
            err.contains("format version 3 is not supported (this build reads versions 1 and 2)"),
            "{err}"
        );
        let future_shape = future.replace(r#""status""#, r#""phase""#);
        let err = from_json(&future_shape, parse).unwrap_err().to_string();
        assert!(err.contains("format version 3 is not supported"), "{err}");
        let other = r#"{"format":"x","format_version":1}"#;
        assert!(from_json(other, parse)
            .unwrap_err()
            .to_string()
            .contains("not a serialized instance"));
    }

    #[test]
    fn broken_invariants_in_input_are_rejected() {
        let text = to_json(&sample()).unwrap();
        for (from, to) in [
            (
                r#""skipped_steps":["shop:F"]"#,
                r#""skipped_steps":["shop:D"]"#,
            ),
            (r#""status":"running""#, r#""status":"waiting""#),
            (r#""status":"running""#, r#""status":"sleeping""#),
            (r#""id":"orderid::abc""#, r#""id":"""#),
            (
                r#""workflow":"shop:OrderFlow""#,
                r#""workflow":"OrderFlow""#,
            ),
            (r#""format_version":2,"#, r#""format_version":2,"extra":1,"#),
            (
                r#""loops":{}"#,
                r#""loops":{"shop:F":{"kind":"repeat","iteration":1,"items":null,"results":[]}}"#,
            ),
            (
                r#""loops":{}"#,
                r#""loops":{"shop:D":{"kind":"spin","iteration":1,"items":null,"results":[]}}"#,
            ),
            (
                r#""loops":{}"#,
                r#""loops":{"shop:D":{"kind":"for_each","iteration":0,"items":[1],"results":[[3,{}]]}}"#,
            ),
            (r#""steps":{"a":{"n":0}"#, r#""steps":{"a":[1]"#),
        ] {
            assert!(text.contains(from), "{from}");
            let broken = text.replace(from, to);
            assert!(
                matches!(
                    from_json(&broken, parse),
                    Err(CoreError::Serialization { .. })
                ),
                "{to}"
            );
        }
    }

    #[test]
    fn version_1_documents_still_read() {
        let text = to_json(&sample()).unwrap();
        let v1 = text
            .replace(r#""format_version":2"#, r#""format_version":1"#)
            .replace(r#","loops":{}"#, "");
        assert_eq!(from_json(&v1, parse).unwrap(), sample());
        // Version 1 had neither loops nor list results.
        let with_loops = text.replace(r#""format_version":2"#, r#""format_version":1"#);
        assert!(from_json(&with_loops, parse).is_err());
        let list = v1.replace(r#""steps":{"a":{"n":0}"#, r#""steps":{"a":[{"n":0}]"#);
        let err = from_json(&list, parse).unwrap_err().to_string();
        assert!(err.contains("context.steps[\"a\"] must be a dict"), "{err}");
    }

    #[test]
    fn loops_and_iterations_round_trip() {
        use crate::core::sorted_map::SortedMap;
        let mut inst = sample();
        inst.set_loop_mut(
            &step("D"),
            Loop::ForEach {
                items: vec![Value::Int(7), Value::Str("x".into())].into(),
                results: SortedMap::from_pairs(vec![(1, Map::default())]),
            },
        )
        .unwrap();
        inst.set_loop_mut(&step("E"), Loop::Repeat { iteration: 4 })
            .unwrap();
        let key: std::sync::Arc<str> = "d".into();
        inst.record_run_mut(&step("D"), &key, Completion::event("done", 5), 1, false)
            .unwrap();
        let text = to_json(&inst).unwrap();
        assert!(text.contains(r#""iteration":1}"#), "{text}");
        assert!(text.contains(
            r#""loops":{"shop:D":{"kind":"for_each","iteration":0,"items":[7,"x"],"results":[[1,{}]]},"shop:E":{"kind":"repeat","iteration":4,"items":null,"results":[]}}"#
        ), "{text}");
        assert_eq!(from_json(&text, parse).unwrap(), inst);
        let bytes = to_bytes(&inst).unwrap();
        assert_eq!(from_bytes(&bytes, parse).unwrap(), inst);
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error() {
        let bytes = to_bytes(&sample()).unwrap();
        for cut in 0..bytes.len() {
            assert!(from_bytes(&bytes[..cut], parse).is_err());
        }
        let text = to_json(&sample()).unwrap();
        for cut in (0..text.len()).filter(|c| text.is_char_boundary(*c)) {
            assert!(from_json(&text[..cut], parse).is_err());
        }
        assert!(from_bytes(&[0xdc, 0xff, 0xff], parse).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0xc0);
        assert!(from_bytes(&trailing, parse)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
        assert!(from_json(&format!("{text} {{}}"), parse).is_err());
        assert!(from_json(&format!("{text} \n"), parse).is_ok());
        let without_error = text.replace(r#","error":null"#, "");
        assert!(from_json(&without_error, parse)
            .unwrap_err()
            .to_string()
            .contains("missing field"));
        let deep = "[".repeat(100_000);
        assert!(from_json(&deep, parse).is_err());
    }
}
