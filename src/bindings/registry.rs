//! Class identity across the boundary: the core stores class names, users
//! see their classes.
//!
//! Each live class gets one canonical reference, `"module:QualName"`, and
//! its step key. Classes are held weakly, so registering one never keeps it
//! alive. When two live classes share a module and qualified name (made in
//! a loop or a factory), the later one is named `"module:QualName#2"` (then
//! `#3`, ...), so every instance gives back the very class it was given.
//! Names that are not registered are resolved by import.
//!
//! Locking: the registry's mutex is never held while Python code can run
//! (no attribute access, no decref of a registry object), so it cannot
//! deadlock with the GIL or re-enter itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType, PyWeakrefReference};

use crate::bindings::errors::SERIALIZATION;
use crate::core::class_ref::{underscore, ClassRef};
use crate::core::error::{CoreError, CoreResult};

/// What the registry knows of one live class.
#[derive(Clone)]
pub struct ClassInfo {
    /// The canonical reference the core stores.
    pub name: ClassRef,
    /// The step key (`step_key` attribute, else the snake-cased name).
    pub key: Arc<str>,
}

/// Hashes class addresses: they are not attacker-controlled, and `SipHash`
/// would double the cost of the lookup every bookkeeping call makes.
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, address: usize) {
        // Fibonacci hashing; the low bits of an address are mostly zero.
        self.0 = (address as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(32);
    }
}

type AddressMap<V> = HashMap<usize, V, std::hash::BuildHasherDefault<AddressHasher>>;

struct Entry {
    class: Py<PyWeakrefReference>,
    info: ClassInfo,
}

#[derive(Default)]
struct Registry {
    /// By the class object's address; the weak reference tells whether the
    /// address still holds that class.
    by_address: AddressMap<Entry>,
    /// By canonical name, with the class's info (so a name read from a
    /// document resolves to the shared canonical reference).
    by_name: HashMap<ClassRef, Entry>,
    /// Dead entries are swept when the table grows past this size.
    sweep_at: usize,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Registry>> {
    // A panic while holding the lock cannot leave the maps inconsistent
    // (each update is a single insert), so a poisoned lock is still usable.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_alive_as(weak: &Py<PyWeakrefReference>, py: Python<'_>, class: &Bound<'_, PyType>) -> bool {
    weak.bind(py).upgrade().is_some_and(|obj| obj.is(class))
}

/// The canonical reference and step key of `class`, registering it on first
/// use. Fails with `TypeError` when `class` is not a class or its
/// `step_key` attribute is not a non-empty string.
pub fn info(class: &Bound<'_, PyAny>, what: &str) -> PyResult<ClassInfo> {
    let py = class.py();
    let Ok(class) = class.cast::<PyType>() else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a class, got {}",
            describe(class)
        )));
    };
    let address = class.as_ptr() as usize;
    if let Some(registry) = lock().as_ref() {
        if let Some(entry) = registry.by_address.get(&address) {
            if is_alive_as(&entry.class, py, class) {
                return Ok(entry.info.clone());
            }
        }
    }
    register(class)
}

fn register(class: &Bound<'_, PyType>) -> PyResult<ClassInfo> {
    let py = class.py();
    let module: String = class.getattr(pyo3::intern!(py, "__module__"))?.extract()?;
    let qualname: String = class
        .getattr(pyo3::intern!(py, "__qualname__"))?
        .extract()?;
    let key = step_key_of(class)?;
    let weak: Py<PyWeakrefReference> = PyWeakrefReference::new(class)?.unbind();
    let base = format!("{module}:{qualname}");
    ClassRef::parse(&base).map_err(|_| {
        PyValueError::new_err(format!(
            "class {base:?} has no usable module and qualified name"
        ))
    })?;
    // Objects replaced in the maps are dropped after the lock is released.
    let mut released: Vec<Py<PyWeakrefReference>> = Vec::new();
    let info = {
        let mut guard = lock();
        let registry = guard.get_or_insert_with(Registry::default);
        let mut suffix = 1;
        let name = loop {
            let candidate = if suffix == 1 {
                base.clone()
            } else {
                format!("{base}#{suffix}")
            };
            let candidate =
                ClassRef::parse(&candidate).map_err(|e| PyValueError::new_err(e.to_string()))?;
            match registry.by_name.get(&candidate) {
                Some(existing)
                    if existing
                        .class
                        .bind(py)
                        .upgrade()
                        .is_some_and(|o| !o.is(class)) =>
                {
                    suffix += 1;
                }
                _ => break candidate,
            }
        };
        let info = ClassInfo {
            name: name.clone(),
            key: key.into(),
        };
        let named = Entry {
            class: weak.clone_ref(py),
            info: info.clone(),
        };
        if let Some(old) = registry.by_name.insert(name, named) {
            released.push(old.class);
        }
        let entry = Entry {
            class: weak,
            info: info.clone(),
        };
        if let Some(old) = registry.by_address.insert(class.as_ptr() as usize, entry) {
            released.push(old.class);
        }
        if registry.by_address.len() > registry.sweep_at {
            sweep(registry, py, &mut released);
        }
        info
    };
    drop(released);
    Ok(info)
}

/// Removes the entries of classes that no longer exist.
fn sweep(registry: &mut Registry, py: Python<'_>, released: &mut Vec<Py<PyWeakrefReference>>) {
    let dead: Vec<usize> = registry
        .by_address
        .iter()
        .filter(|(_, e)| e.class.bind(py).upgrade().is_none())
        .map(|(a, _)| *a)
        .collect();
    for address in dead {
        if let Some(entry) = registry.by_address.remove(&address) {
            // The name may belong to a live class by now (a later class with
            // the same name took it over): remove it only if it is dead too.
            let stale = registry
                .by_name
                .get(&entry.info.name)
                .is_some_and(|named| named.class.bind(py).upgrade().is_none());
            if stale {
                if let Some(named) = registry.by_name.remove(&entry.info.name) {
                    released.push(named.class);
                }
            }
            released.push(entry.class);
        }
    }
    registry.sweep_at = registry.by_address.len() * 2 + 64;
}

/// The step key of a class: its `step_key` attribute when that is set (not
/// `None`), else its `__name__` in snake case.
fn step_key_of(class: &Bound<'_, PyType>) -> PyResult<String> {
    let py = class.py();
    if let Some(attr) = class.getattr_opt(pyo3::intern!(py, "step_key"))? {
        if !attr.is_none() {
            let Ok(key) = attr.cast::<PyString>() else {
                return Err(PyTypeError::new_err(format!(
                    "{}.step_key must be a str, got {}",
                    class.name()?,
                    describe(&attr)
                )));
            };
            let key = key.to_str()?;
            if key.is_empty() {
                return Err(PyValueError::new_err(format!(
                    "{}.step_key must not be empty",
                    class.name()?
                )));
            }
            return Ok(key.to_string());
        }
    }
    Ok(underscore(class.name()?.to_str()?))
}

/// The live class a reference names: the registered one if it is alive,
/// else the one found by importing its module and walking its qualified
/// name.
pub fn resolve<'py>(py: Python<'py>, name: &ClassRef) -> PyResult<Bound<'py, PyType>> {
    let registered = lock()
        .as_ref()
        .and_then(|r| r.by_name.get(name).map(|e| e.class.clone_ref(py)));
    if let Some(weak) = registered {
        if let Some(class) = weak.bind(py).upgrade() {
            if let Ok(class) = class.cast_into::<PyType>() {
                return Ok(class);
            }
        }
    }
    let class = import_class(py, name).map_err(|err| {
        SERIALIZATION.err(format!("cannot resolve class {:?}: {err}", name.as_str()))
    })?;
    info(class.as_any(), "class")?;
    Ok(class)
}

fn import_class<'py>(py: Python<'py>, name: &ClassRef) -> PyResult<Bound<'py, PyType>> {
    let text = name.as_str();
    let text = text.split_once('#').map_or(text, |(base, _)| base);
    let (module, qualname) = text.split_once(':').unwrap_or((text, ""));
    if qualname.contains("<locals>") {
        return Err(PyValueError::new_err(
            "it was defined inside a function, so it cannot be imported; define it at module level",
        ));
    }
    let mut object = py.import(module)?.into_any();
    for part in qualname.split('.') {
        object = object.getattr(part)?;
    }
    object.cast_into::<PyType>().map_err(|e| {
        PyTypeError::new_err(format!(
            "it is not a class but {}",
            describe(&e.into_inner())
        ))
    })
}

/// The canonical reference of the class a serialized name resolves to; for
/// the core's readers. A live registered name answers from one lookup.
pub fn canonical(py: Python<'_>, name: &str) -> CoreResult<ClassRef> {
    if let Some(registry) = lock().as_ref() {
        if let Some(entry) = registry.by_name.get(name) {
            if entry.class.bind(py).upgrade().is_some() {
                return Ok(entry.info.name.clone());
            }
        }
    }
    let parsed = ClassRef::parse(name)?;
    let class =
        resolve(py, &parsed).map_err(|e| CoreError::serialization(e.value(py).to_string()))?;
    info(class.as_any(), "class")
        .map(|i| i.name)
        .map_err(|e| CoreError::serialization(e.value(py).to_string()))
}

/// `'str'`-style description of an object's type for error messages.
pub fn describe(object: &Bound<'_, PyAny>) -> String {
    object
        .get_type()
        .fully_qualified_name()
        .map_or_else(|_| "an object".to_string(), |n| format!("'{n}'"))
}
