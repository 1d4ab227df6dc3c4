//! Values: the data of contexts, step results, configs and metadata
//! (Elixir: any term stored in `Hephaestus.Core.Context` and friends).
//!
//! A [`Value`] is owned by the core and copied at the Python boundary, so
//! nothing a caller mutates afterwards can change an instance. Nesting is
//! limited to [`MAX_DEPTH`] containers, which bounds every recursive walk
//! (conversion, comparison, serialization, drop).
//!
//! Serialization (see `docs/format.md`): plain JSON where JSON can say it;
//! `{"$bytes": base64}`, `{"$datetime": text}` and `{"$float": "nan"|"inf"|"-inf"}`
//! where it cannot. Dictionary keys that start with `$` are written with one
//! more `$`, so a user's data can never be mistaken for a tag. The binary
//! form ([MessagePack](https://msgpack.org)) writes bytes and floats natively.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserializer, Serialize, Serializer};

use crate::core::datetime::DateTime;
use crate::core::error::{CoreError, CoreResult};

/// How many containers may nest inside one another in a value.
pub const MAX_DEPTH: usize = 100;

const TAG_BYTES: &str = "$bytes";
const TAG_DATETIME: &str = "$datetime";
const TAG_FLOAT: &str = "$float";

/// One piece of data: 24 bytes. Containers and date-times are shared, so
/// cloning one is a reference count; strings and bytes are owned, which
/// keeps the many short keys and strings of a context compact.
#[derive(Debug, Clone)]
pub enum Value {
    /// Python `None`.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int` within signed 64 bits.
    Int(i64),
    /// `float`, including NaN and the infinities.
    Float(f64),
    /// `str`.
    Str(Box<str>),
    /// `bytes`.
    Bytes(Box<[u8]>),
    /// `list` (and `tuple`, which comes back as `list`).
    List(Arc<[Value]>),
    /// `dict` with `str` keys, in insertion order.
    Dict(Map),
    /// `datetime.datetime`.
    DateTime(Arc<DateTime>),
}

/// A dictionary with unique `str` keys, kept in insertion order.
///
/// A shared slice of pairs: compact, free of hashing on the hot path of
/// converting small dicts, and cheap to clone, so one step result can sit in
/// the context and in the history at once. Equality ignores order, as in
/// Python.
#[derive(Debug, Clone)]
pub struct Map(Arc<[(Box<str>, Value)]>);

impl Default for Map {
    /// The empty map (one shared allocation for the whole process).
    fn default() -> Self {
        static EMPTY: LazyLock<Map> = LazyLock::new(|| Map(Arc::from(Vec::new())));
        EMPTY.clone()
    }
}

impl Map {
    /// Builds a map, rejecting duplicate keys.
    pub fn from_entries(entries: Vec<(Box<str>, Value)>) -> CoreResult<Map> {
        if let Some(key) = first_duplicate(&entries) {
            return Err(CoreError::invalid("dict", format!("duplicate key {key:?}")));
        }
        if entries.is_empty() {
            return Ok(Map::default());
        }
        Ok(Map(Arc::from(entries)))
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in insertion order.
    #[must_use]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    /// The value stored under `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
    }
}

fn first_duplicate(entries: &[(Box<str>, Value)]) -> Option<&str> {
    if entries.len() <= 16 {
        return entries
            .iter()
            .enumerate()
            .find(|(i, (key, _))| entries[..*i].iter().any(|(k, _)| k == key))
            .map(|(_, (key, _))| &**key);
    }
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    entries.iter().map(|(k, _)| &**k).find(|k| !seen.insert(*k))
}

impl PartialEq for Map {
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() {
            return false;
        }
        // Same order is the common case; otherwise look keys up.
        if self
            .0
            .iter()
            .zip(other.0.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
        {
            return true;
        }
        if self.len() <= 16 {
            return self.iter().all(|(k, v)| other.get(k) == Some(v));
        }
        let index: HashMap<&str, &Value> = other.iter().collect();
        self.iter().all(|(k, v)| index.get(k) == Some(&v))
    }
}

impl PartialEq for Value {
    /// Python's `==`: `True == 1 == 1.0`, dicts ignore order, aware
    /// date-times compare instants. One deliberate difference: NaN equals
    /// NaN, so that every value equals its own serialized round trip.
    fn eq(&self, other: &Self) -> bool {
        use Value::{Bool, Bytes, DateTime, Dict, Float, Int, List, Null, Str};
        match (self, other) {
            (Null, Null) => true,
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (List(a), List(b)) => a == b,
            (Dict(a), Dict(b)) => a == b,
            (DateTime(a), DateTime(b)) => a == b,
            (Float(a), Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Bool(_) | Int(_), Bool(_) | Int(_)) => self.as_int() == other.as_int(),
            (Bool(_) | Int(_), Float(f)) | (Float(f), Bool(_) | Int(_)) => {
                let i = self.as_int().or(other.as_int()).unwrap_or_default();
                int_equals_float(i, *f)
            }
            _ => false,
        }
    }
}

/// Exact comparison of an `i64` with an `f64`, as Python does it.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
fn int_equals_float(i: i64, f: f64) -> bool {
    // 2^63 is exactly representable; anything at or beyond it is out of range.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) && f as i64 == i
}

impl Value {
    fn as_int(&self) -> Option<i64> {
        match self {
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The Python type's name, for messages.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::DateTime(_) => "datetime",
        }
    }

    /// The map, if this value is a dict.
    #[must_use]
    pub fn as_dict(&self) -> Option<&Map> {
        match self {
            Value::Dict(map) => Some(map),
            _ => None,
        }
    }

    /// An empty dict.
    #[must_use]
    pub fn empty_dict() -> Value {
        Value::Dict(Map::default())
    }
}

// ---------------------------------------------------------------------------
// Serialization

/// Escapes a dict key so that no user key can look like a tag.
fn escaped_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.starts_with('$') {
        std::borrow::Cow::Owned(format!("${key}"))
    } else {
        std::borrow::Cow::Borrowed(key)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let readable = serializer.is_human_readable();
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(f) if readable && !f.is_finite() => {
                let name = if f.is_nan() {
                    "nan"
                } else if *f > 0.0 {
                    "inf"
                } else {
                    "-inf"
                };
                tagged(serializer, TAG_FLOAT, name)
            }
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::Str(s) => serializer.serialize_str(s),
            Value::Bytes(b) if readable => tagged(
                serializer,
                TAG_BYTES,
                &base64::engine::general_purpose::STANDARD.encode(b),
            ),
            Value::Bytes(b) => serializer.serialize_bytes(b),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Dict(map) => map.serialize(serializer),
            Value::DateTime(dt) => tagged(serializer, TAG_DATETIME, &dt.to_string()),
        }
    }
}

impl Serialize for Map {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(Some(self.len()))?;
        for (key, value) in self.iter() {
            out.serialize_entry(&escaped_key(key), value)?;
        }
        out.end()
    }
}

fn tagged<S: Serializer>(serializer: S, tag: &str, payload: &str) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(1))?;
    map.serialize_entry(tag, payload)?;
    map.end()
}

/// Deserializes a [`Value`] that sits `depth` containers deep, refusing to
/// go past [`MAX_DEPTH`] (so hostile input cannot overflow the stack).
#[derive(Clone, Copy)]
pub struct ValueSeed {
    /// Containers around this value.
    pub depth: usize,
}

impl ValueSeed {
    /// The seed for a top-level value.
    pub const ROOT: ValueSeed = ValueSeed { depth: 0 };

    fn child<E: de::Error>(self) -> Result<ValueSeed, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(ValueSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Deserializes a value that must be a dict (context data, step results,
/// metadata).
pub struct MapSeed;

impl<'de> DeserializeSeed<'de> for MapSeed {
    type Value = Map;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Map, D::Error> {
        match ValueSeed::ROOT.deserialize(deserializer)? {
            Value::Dict(map) => Ok(map),
            _ => Err(de::Error::custom("expected a dict")),
        }
    }
}

/// Caps preallocation by an untrusted size hint.
fn cautious(hint: Option<usize>) -> usize {
    hint.unwrap_or(0).min(4096)
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format_args!("integer {v} out of signed 64-bit range")))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.into()))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut items = Vec::with_capacity(cautious(seq.size_hint()));
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Value::List(Arc::from(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut entries: Vec<(Box<str>, Value)> = Vec::with_capacity(cautious(access.size_hint()));
        while let Some(key) = access.next_key::<std::borrow::Cow<'de, str>>()? {
            let key = match key.strip_prefix('$') {
                None => Box::from(&*key),
                Some(rest) if rest.starts_with('$') => rest.into(),
                Some(_) if entries.is_empty() => {
                    let value = read_tagged(&key, &mut access)?;
                    if access.next_key::<de::IgnoredAny>()?.is_some() {
                        return Err(de::Error::custom(format_args!(
                            "a {key} object must have exactly one key"
                        )));
                    }
                    return Ok(value);
                }
                Some(_) => {
                    return Err(de::Error::custom(format_args!(
                        "unescaped key {key:?} (keys starting with '$' are written as '$$...')"
                    )))
                }
            };
            let value = access.next_value_seed(child)?;
            entries.push((key, value));
        }
        Map::from_entries(entries)
            .map(Value::Dict)
            .map_err(de::Error::custom)
    }
}

fn read_tagged<'de, A: MapAccess<'de>>(tag: &str, access: &mut A) -> Result<Value, A::Error> {
    match tag {
        TAG_BYTES => {
            let text = access.next_value::<std::borrow::Cow<'de, str>>()?;
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(|b| Value::Bytes(b.into_boxed_slice()))
                .map_err(|e| de::Error::custom(format_args!("invalid $bytes: {e}")))
        }
        TAG_DATETIME => {
            let text = access.next_value::<std::borrow::Cow<'de, str>>()?;
            DateTime::parse(&text)
                .map(|dt| Value::DateTime(Arc::new(dt)))
                .map_err(de::Error::custom)
        }
        TAG_FLOAT => match &*access.next_value::<std::borrow::Cow<'de, str>>()? {
            "nan" => Ok(Value::Float(f64::NAN)),
            "inf" => Ok(Value::Float(f64::INFINITY)),
            "-inf" => Ok(Value::Float(f64::NEG_INFINITY)),
            other => Err(de::Error::custom(format_args!("invalid $float {other:?}"))),
        },
        _ => Err(de::Error::custom(format_args!("unknown tag {tag:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::datetime::Tz;

    fn dict(entries: &[(&str, Value)]) -> Value {
        Value::Dict(
            Map::from_entries(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).into(), v.clone()))
                    .collect(),
            )
            .unwrap(),
        )
    }

    fn sample() -> Value {
        let dt = DateTime::parse("2024-10-27T02:30:00.000000+01:00[Europe/Paris][fold=1]").unwrap();
        dict(&[
            ("null", Value::Null),
            ("flag", Value::Bool(true)),
            ("n", Value::Int(i64::MIN)),
            ("x", Value::Float(1.5)),
            // Needs serde_json's correctly rounded float parser.
            ("big", Value::Float(1.811_226_153_726_341_4e24)),
            ("nan", Value::Float(f64::NAN)),
            ("inf", Value::Float(f64::NEG_INFINITY)),
            ("s", Value::Str("héllo".into())),
            ("b", Value::Bytes(vec![0, 255, 10].into())),
            ("$bytes", Value::Str("not a tag".into())),
            ("$$x", Value::Int(1)),
            ("list", Value::List(vec![Value::Int(1), dict(&[])].into())),
            ("when", Value::DateTime(Arc::new(dt))),
        ])
    }

    fn from_json(text: &str) -> Result<Value, serde_json::Error> {
        ValueSeed::ROOT.deserialize(&mut serde_json::Deserializer::from_str(text))
    }

    fn from_msgpack(bytes: &[u8]) -> Result<Value, rmp_serde::decode::Error> {
        ValueSeed::ROOT.deserialize(&mut rmp_serde::Deserializer::from_read_ref(bytes))
    }

    #[test]
    fn json_round_trip_keeps_every_kind() {
        let value = sample();
        let text = serde_json::to_string(&value).unwrap();
        assert!(text.contains(r#""$$bytes":"not a tag""#), "{text}");
        assert!(text.contains(r#""$$$x":1"#), "{text}");
        assert!(text.contains(r#""b":{"$bytes":"AP8K"}"#), "{text}");
        assert_eq!(from_json(&text).unwrap(), value);
    }

    #[test]
    fn msgpack_round_trip_keeps_every_kind() {
        let value = sample();
        let bytes = rmp_serde::to_vec(&value).unwrap();
        assert_eq!(from_msgpack(&bytes).unwrap(), value);
    }

    #[test]
    fn malformed_tags_are_rejected() {
        for text in [
            r#"{"$bytes": "!!"}"#,
            r#"{"$bytes": "AA==", "x": 1}"#,
            r#"{"$float": "NaN"}"#,
            r#"{"$nope": 1}"#,
            r#"{"a": 1, "$x": 2}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"$datetime": "yesterday"}"#,
            "18446744073709551615",
        ] {
            assert!(from_json(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn nesting_is_limited() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(from_json(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(from_json(&deep)
            .unwrap_err()
            .to_string()
            .contains("nested deeper"));
        // Far deeper than the stack could take without the limit.
        let hostile = vec![0x91u8; 1_000_000];
        assert!(from_msgpack(&hostile).is_err());
    }

    #[test]
    fn equality_follows_python() {
        assert_eq!(Value::Int(1), Value::Float(1.0));
        assert_eq!(Value::Bool(true), Value::Int(1));
        assert_ne!(
            Value::Int(i64::MAX),
            Value::Float(9_223_372_036_854_775_808.0)
        );
        assert_ne!(Value::Int(1), Value::Str("1".into()));
        assert_eq!(
            dict(&[("a", Value::Int(1)), ("b", Value::Int(2))]),
            dict(&[("b", Value::Int(2)), ("a", Value::Int(1))])
        );
        assert_ne!(dict(&[("a", Value::Int(1))]), dict(&[("b", Value::Int(1))]));
        let utc = DateTime {
            year: 2024,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            microsecond: 0,
            fold: false,
            tz: Some(Tz::Fixed {
                offset_micros: 0,
                name: None,
            }),
        };
        assert_eq!(
            Value::DateTime(Arc::new(utc.clone())),
            Value::DateTime(Arc::new(utc))
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_at_any_size() {
        let mut entries: Vec<(Box<str>, Value)> = (0..40)
            .map(|i| (i.to_string().into(), Value::Null))
            .collect();
        assert!(Map::from_entries(entries.clone()).is_ok());
        entries.push(("7".into(), Value::Null));
        assert!(Map::from_entries(entries).is_err());
    }

    #[test]
    fn values_stay_small() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
    }
}
