//! Copies values across the boundary: Python objects into core [`Value`]s
//! (checked, with errors that name the path of the offending value) and
//! back into fresh Python objects.

use std::fmt::Write as _;
use std::sync::Arc;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDateTime, PyDelta, PyDeltaAccess, PyDict, PyFloat, PyInt, PyList, PyMapping,
    PyString, PyTuple, PyType, PyTzInfo,
};

use crate::bindings::registry::describe;
use crate::core::datetime::{DateTime, Tz};
use crate::core::value::{Map, Value, MAX_DEPTH};

/// Where a value sits, for error messages: `context['order']['items'][2]`.
/// A linked list on the stack, so the happy path allocates nothing.
#[derive(Clone, Copy)]
pub enum Path<'a> {
    /// The argument's name.
    Root(&'a str),
    /// A dict entry.
    Key(&'a Path<'a>, &'a str),
    /// A list item.
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    /// The path as Python would spell it: `context['order']['items'][2]`.
    fn render(&self) -> String {
        let mut out = String::new();
        Python::attach(|py| self.write(py, &mut out));
        out
    }

    fn write(&self, py: Python<'_>, out: &mut String) {
        match self {
            Path::Root(name) => out.push_str(name),
            Path::Key(parent, key) => {
                parent.write(py, out);
                let quoted = PyString::new(py, key)
                    .repr()
                    .map_or_else(|_| format!("{key:?}"), |r| r.to_string());
                let _ = write!(out, "[{quoted}]");
            }
            Path::Index(parent, index) => {
                parent.write(py, out);
                let _ = write!(out, "[{index}]");
            }
        }
    }
}

/// Converts any supported Python object into a [`Value`]. Its nesting is
/// counted from `obj` itself, whatever the path says of where it sits, so
/// a value that is accepted in one place is accepted in every other.
pub fn to_value(obj: &Bound<'_, PyAny>, path: Path<'_>) -> PyResult<Value> {
    to_value_at(obj, path, 0)
}

/// Converts a top-level argument, any `collections.abc.Mapping` with `str`
/// keys, into a [`Map`]. (Nested values must be real dicts, see [`Value`].)
pub fn to_map(obj: &Bound<'_, PyAny>, path: Path<'_>) -> PyResult<Map> {
    if let Ok(dict) = obj.cast::<PyDict>() {
        return dict_to_map(dict, path, 0);
    }
    if let Ok(mapping) = obj.cast::<PyMapping>() {
        let dict = PyDict::new(obj.py());
        dict.update(mapping)?;
        return dict_to_map(&dict, path, 0);
    }
    Err(PyTypeError::new_err(format!(
        "{}: expected a mapping, got {}",
        path.render(),
        describe(obj)
    )))
}

/// [`to_map`] for an optional argument: `None` stays `None`.
pub fn to_optional_map(obj: Option<&Bound<'_, PyAny>>, path: Path<'_>) -> PyResult<Option<Map>> {
    match obj {
        Some(obj) if !obj.is_none() => to_map(obj, path).map(Some),
        _ => Ok(None),
    }
}

fn to_value_at(obj: &Bound<'_, PyAny>, path: Path<'_>, depth: usize) -> PyResult<Value> {
    // Exact types first: the common case costs one pointer comparison.
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if obj.is_exact_instance_of::<PyString>() {
        return text(obj.cast::<PyString>()?, path).map(|t| Value::Str(t.into()));
    }
    if obj.is_exact_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.is_truthy()?));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return int_value(obj, path);
    }
    if obj.is_exact_instance_of::<PyFloat>() {
        return Ok(Value::Float(obj.cast::<PyFloat>()?.value()));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        return dict_to_map(dict, path, depth).map(Value::Dict);
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return sequence_value(list.iter(), path, depth);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return sequence_value(tuple.iter(), path, depth);
    }
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(bytes.as_bytes().into()));
    }
    if obj.get_type().is(datetime_type(obj.py())?) {
        return datetime_value(obj.cast::<PyDateTime>()?, path)
            .map(|dt| Value::DateTime(Arc::new(dt)));
    }
    // Subclasses of str, int and float (enums, for instance) are stored as
    // their base type, as the json module does.
    if let Ok(string) = obj.cast::<PyString>() {
        return text(string, path).map(|t| Value::Str(t.into()));
    }
    if obj.is_instance_of::<PyInt>() {
        return int_value(obj, path);
    }
    if let Ok(float) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(float.value()));
    }
    Err(PyTypeError::new_err(format!(
        "{}: unsupported type {}",
        path.render(),
        type_name(obj)
    )))
}

/// A `str` as UTF-8; one with lone surrogates cannot be stored.
fn text<'a>(string: &'a Bound<'_, PyString>, path: Path<'_>) -> PyResult<&'a str> {
    string.to_str().map_err(|_| {
        PyValueError::new_err(format!(
            "{}: str {} contains a lone surrogate and is not valid Unicode",
            path.render(),
            string.repr().map_or_else(|_| "?".into(), |r| r.to_string())
        ))
    })
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .fully_qualified_name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string())
}

fn int_value(obj: &Bound<'_, PyAny>, path: Path<'_>) -> PyResult<Value> {
    obj.extract::<i64>().map(Value::Int).map_err(|_| {
        PyOverflowError::new_err(format!(
            "{}: int {} does not fit in signed 64 bits",
            path.render(),
            obj.str().map_or_else(|_| "?".into(), |s| s.to_string())
        ))
    })
}

/// A list or tuple, as a list value.
fn sequence_value<'py>(
    items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    path: Path<'_>,
    depth: usize,
) -> PyResult<Value> {
    check_depth(path, depth)?;
    let mut values = Vec::with_capacity(items.len());
    for (index, item) in items.enumerate() {
        values.push(to_value_at(&item, Path::Index(&path, index), depth + 1)?);
    }
    Ok(Value::List(Arc::from(values)))
}

fn check_depth(path: Path<'_>, depth: usize) -> PyResult<()> {
    if depth >= MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "{}: nested deeper than {MAX_DEPTH} levels (is there a reference cycle?)",
            path.render()
        )));
    }
    Ok(())
}

fn dict_to_map(dict: &Bound<'_, PyDict>, path: Path<'_>, depth: usize) -> PyResult<Map> {
    check_depth(path, depth)?;
    let mut entries = Vec::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "{}: dict keys must be str, got {} key {}",
                path.render(),
                describe(&key),
                key.repr().map_or_else(|_| "?".into(), |r| r.to_string())
            )));
        };
        let key = text(key, path)?;
        let value = to_value_at(&value, Path::Key(&path, key), depth + 1)?;
        entries.push((Box::from(key), value));
    }
    // Python dicts have unique keys, so this cannot fail; keep the check
    // rather than trust a subclass.
    Map::from_entries(entries).map_err(|e| PyValueError::new_err(format!("{}: {e}", path.render())))
}

fn datetime_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    TYPE.import(py, "datetime", "datetime")
}

fn timezone_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    TYPE.import(py, "datetime", "timezone")
}

fn zoneinfo_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    TYPE.import(py, "zoneinfo", "ZoneInfo")
}

fn delta_micros(delta: &Bound<'_, PyAny>) -> PyResult<i64> {
    let delta = delta.cast::<PyDelta>()?;
    Ok(
        (i64::from(delta.get_days()) * 86_400 + i64::from(delta.get_seconds())) * 1_000_000
            + i64::from(delta.get_microseconds()),
    )
}

/// Reads a `datetime.datetime` exactly: fields, fold and time zone.
///
/// The fields come from the pickle state (`__reduce_ex__(4)`, a stable
/// 10-byte format that includes `fold`): one call, where the limited API
/// would need an attribute read per field.
pub fn datetime_value(dt: &Bound<'_, PyDateTime>, path: Path<'_>) -> PyResult<DateTime> {
    static REDUCE_EX: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = dt.py();
    // The unbound method: calling it skips making a bound method per call.
    let reduce_ex = REDUCE_EX.get_or_try_init(py, || {
        datetime_type(py)?
            .getattr("__reduce_ex__")
            .map(Bound::unbind)
    })?;
    let reduced = reduce_ex.bind(py).call1((dt, 4))?;
    let args = reduced.cast::<PyTuple>()?.get_item(1)?;
    let args = args.cast::<PyTuple>()?;
    let state = args.get_item(0)?;
    let Ok(&[y1, y2, month, day, hour, minute, second, u1, u2, u3]) =
        <&[u8; 10]>::try_from(state.cast::<PyBytes>()?.as_bytes())
    else {
        return Err(PyValueError::new_err(format!(
            "{}: unexpected datetime state",
            path.render()
        )));
    };
    let tz = match args.get_item(1) {
        Ok(tzinfo) if !tzinfo.is_none() => Some(tz_value(dt, &tzinfo, path, py)?),
        _ => None,
    };
    let value = DateTime {
        year: u16::from_be_bytes([y1, y2]),
        month: month & 0x7f,
        day,
        hour,
        minute,
        second,
        microsecond: u32::from_be_bytes([0, u1, u2, u3]),
        fold: month & 0x80 != 0,
        tz,
    };
    value
        .validate()
        .map_err(|e| PyValueError::new_err(format!("{}: {e}", path.render())))?;
    Ok(value)
}

fn tz_value(
    dt: &Bound<'_, PyDateTime>,
    tzinfo: &Bound<'_, PyAny>,
    path: Path<'_>,
    py: Python<'_>,
) -> PyResult<Tz> {
    static UTC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let utc = UTC.get_or_try_init(py, || timezone_type(py)?.getattr("utc").map(Bound::unbind))?;
    if tzinfo.is(utc.bind(py)) {
        return Ok(Tz::Fixed {
            offset_micros: 0,
            name: None,
        });
    }
    let tz_type = tzinfo.get_type();
    if tz_type.is(timezone_type(py)?) {
        let args = tzinfo.call_method0(pyo3::intern!(py, "__getinitargs__"))?;
        let args = args.cast::<PyTuple>()?;
        let offset_micros = delta_micros(&args.get_item(0)?)?;
        let name = match args.get_item(1) {
            Ok(name) => Some(name.cast::<PyString>()?.to_str()?.into()),
            Err(_) => None,
        };
        return Ok(Tz::Fixed {
            offset_micros,
            name,
        });
    }
    if tz_type.is(zoneinfo_type(py)?) {
        let key = tzinfo.getattr(pyo3::intern!(py, "key"))?;
        if key.is_none() {
            return Err(PyTypeError::new_err(format!(
                "{}: a ZoneInfo made from a file has no key and cannot be stored",
                path.render()
            )));
        }
        let offset = dt.call_method0(pyo3::intern!(py, "utcoffset"))?;
        return Ok(Tz::Zone {
            key: key.cast::<PyString>()?.to_str()?.into(),
            offset_micros: delta_micros(&offset)?,
        });
    }
    Err(PyTypeError::new_err(format!(
        "{}: unsupported tzinfo type {}; use datetime.timezone or zoneinfo.ZoneInfo",
        path.render(),
        type_name(tzinfo)
    )))
}

/// Builds a fresh Python object from a [`Value`].
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items.iter() {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Dict(map) => map_to_py(py, map)?.into_any(),
        Value::DateTime(dt) => datetime_to_py(py, dt)?.into_any(),
    })
}

/// Builds a fresh `dict` from a [`Map`].
pub fn map_to_py<'py>(py: Python<'py>, map: &Map) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in map.iter() {
        dict.set_item(PyString::new(py, key), to_py(py, value)?)?;
    }
    Ok(dict)
}

/// Builds a `datetime.datetime` with the exact fields and zone of `dt`.
pub fn datetime_to_py<'py>(py: Python<'py>, dt: &DateTime) -> PyResult<Bound<'py, PyDateTime>> {
    let tzinfo = match &dt.tz {
        None => None,
        Some(Tz::Fixed {
            offset_micros,
            name,
        }) => {
            // |offset| < 24h, so both parts fit in i32.
            let seconds = i32::try_from(offset_micros.div_euclid(1_000_000)).unwrap_or_default();
            let micros = i32::try_from(offset_micros.rem_euclid(1_000_000)).unwrap_or_default();
            let delta = PyDelta::new(py, 0, seconds, micros, true)?;
            let timezone = match name {
                Some(name) => timezone_type(py)?.call1((delta, name.as_ref()))?,
                None => timezone_type(py)?.call1((delta,))?,
            };
            Some(timezone.cast_into::<PyTzInfo>()?)
        }
        Some(Tz::Zone { key, .. }) => Some(
            zoneinfo_type(py)?
                .call1((key.as_ref(),))
                .map_err(|e| {
                    PyValueError::new_err(format!(
                        "cannot load time zone {:?}: {}",
                        key.as_ref(),
                        e.value(py)
                    ))
                })?
                .cast_into::<PyTzInfo>()?,
        ),
    };
    PyDateTime::new_with_fold(
        py,
        i32::from(dt.year),
        dt.month,
        dt.day,
        dt.hour,
        dt.minute,
        dt.second,
        dt.microsecond,
        tzinfo.as_ref(),
        dt.fold,
    )
}

/// A UTC timestamp (microseconds since the epoch) as an aware `datetime`.
pub fn timestamp_to_py(py: Python<'_>, micros: i64) -> PyResult<Bound<'_, PyDateTime>> {
    datetime_to_py(py, &DateTime::from_timestamp(micros))
}

/// An aware `datetime` as a UTC timestamp; naive ones are rejected.
pub fn timestamp_from_py(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    let Ok(dt) = obj.cast::<PyDateTime>() else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a datetime, got {}",
            describe(obj)
        )));
    };
    let value = datetime_value(dt, Path::Root(what))?;
    value.timestamp().ok_or_else(|| {
        PyValueError::new_err(format!(
            "{what} must be timezone-aware (e.g. datetime.now(timezone.utc))"
        ))
    })
}
