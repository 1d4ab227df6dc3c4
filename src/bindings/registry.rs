//! Class identity across the boundary: the core stores class names, users
//! see their classes.
//!
//! Each live class gets one canonical reference, `"module:QualName"`, and
//! its step key. Classes are held weakly here, so registering one never
//! keeps it alive (the values that refer to a class hold it instead). When
//! two live classes share a module and qualified name (made in a loop or a
//! factory), the later one is named `"module:QualName#2"` (then `#3`, ...),
//! so every instance gives back the very class it was given.
//!
//! Names read from documents resolve among registered classes and modules
//! already imported; a module is imported only when the caller allows it
//! (reading data must not run code), and only `Workflow` and `Step`
//! subclasses are accepted where a workflow or a step belongs.
//!
//! Locking: the registry's mutex is never held while Python code can run
//! (no attribute access, no decref of a registry object), so it cannot
//! deadlock with the GIL or re-enter itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::{PyException, PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType, PyWeakrefReference};

use crate::core::class_ref::{underscore, ClassRef};
use crate::core::error::CoreError;
use crate::core::format::ClassKind;

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
    by_name: HashMap<&'static str, Entry, foldhash::fast::RandomState>,
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
    ClassRef::check(&base).map_err(|_| {
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
            match registry.by_name.get(candidate.as_str()) {
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
        let name = ClassRef::parse(&name).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let info = ClassInfo {
            name,
            key: key.into(),
        };
        let named = Entry {
            class: weak.clone_ref(py),
            info: info.clone(),
        };
        if let Some(old) = registry.by_name.insert(name.as_str(), named) {
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
            let name = entry.info.name.as_str();
            let stale = registry
                .by_name
                .get(name)
                .is_some_and(|named| named.class.bind(py).upgrade().is_none());
            if stale {
                if let Some(named) = registry.by_name.remove(name) {
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

/// The live class registered under `name`, if it is still alive.
fn registered<'py>(py: Python<'py>, name: &str) -> Option<Bound<'py, PyType>> {
    let weak = lock()
        .as_ref()
        .and_then(|r| r.by_name.get(name).map(|e| e.class.clone_ref(py)))?;
    weak.bind(py).upgrade()?.cast_into::<PyType>().ok()
}

/// The live class a reference names. Every reference the core holds was
/// made by registering a live class, and the values holding a reference
/// keep its class alive, so this fails only for a reference put together
/// by hand (raw field changes naming a class that has since died).
pub fn resolve<'py>(py: Python<'py>, name: &ClassRef) -> PyResult<Bound<'py, PyType>> {
    if let Some(class) = registered(py, name.as_str()) {
        return Ok(class);
    }
    lookup(py, name.as_str(), None, false).map_err(|err| match err {
        Lookup::Python(err) => err,
        Lookup::Refused(reason) => {
            crate::bindings::errors::to_py_err(&CoreError::UnresolvedClass {
                name: name.to_string(),
                reason,
            })
        }
    })
}

/// Why a name did not resolve.
pub enum Lookup {
    /// A `BaseException` that is not an `Exception` (`KeyboardInterrupt`,
    /// `SystemExit`, ...), raised while importing: it must propagate as is.
    Python(PyErr),
    /// The name does not resolve; why, and how to make it loadable.
    Refused(String),
}

/// The canonical reference of the class `name` names in a document, which
/// must be a class of `kind`. Resolves among registered classes and modules
/// already imported; imports the class's module only when `import` is set.
pub fn canonical(
    py: Python<'_>,
    name: &str,
    kind: ClassKind,
    import: bool,
) -> Result<ClassRef, Lookup> {
    let class = match registered(py, name) {
        Some(class) => class,
        None => lookup(py, name, Some(kind), import)?,
    };
    check_kind(&class, name, kind)?;
    info(class.as_any(), "class")
        .map(|i| i.name)
        .map_err(|e| Lookup::Refused(e.value(py).to_string()))
}

/// The base classes a document's names must derive from.
fn base_class(py: Python<'_>, kind: ClassKind) -> PyResult<&Bound<'_, PyType>> {
    static WORKFLOW: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static STEP: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match kind {
        ClassKind::Workflow => WORKFLOW.import(py, "hephaestus.workflow", "Workflow"),
        ClassKind::Step => STEP.import(py, "hephaestus.steps", "Step"),
    }
}

fn check_kind(class: &Bound<'_, PyType>, name: &str, kind: ClassKind) -> Result<(), Lookup> {
    let py = class.py();
    let base = base_class(py, kind).map_err(Lookup::Python)?;
    match class.is_subclass(base) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Lookup::Refused(format!(
            "{name} is not a {} subclass, but the document names it as a {}",
            kind.base_name(),
            kind.role()
        ))),
        Err(err) => Err(Lookup::Python(err)),
    }
}

/// Finds the class `name` names by walking its module's attributes: the
/// module must already be imported unless `import` is set. Only exceptions
/// raised by an import are passed on as [`Lookup::Python`] (and only when
/// they are not `Exception`s); everything else becomes a reason.
fn lookup<'py>(
    py: Python<'py>,
    name: &str,
    kind: Option<ClassKind>,
    import: bool,
) -> Result<Bound<'py, PyType>, Lookup> {
    let text = name.split_once('#').map_or(name, |(base, _)| base);
    let (module, qualname) = text.split_once(':').unwrap_or((text, ""));
    if qualname.contains("<locals>") {
        return Err(Lookup::Refused(
            "it was defined inside a function, so it cannot be loaded in another process; \
             define it at module level"
                .into(),
        ));
    }
    let loaded = py
        .import("sys")
        .and_then(|sys| sys.getattr("modules"))
        .and_then(|modules| {
            modules
                .get_item(module)
                .ok()
                .map_or(Ok(None), |m| Ok(Some(m)))
        })
        .map_err(Lookup::Python)?;
    let mut object = match loaded {
        Some(module) if !module.is_none() => module,
        _ if import => py.import(module).map_err(only_exceptions)?.into_any(),
        _ => {
            let role = kind.map_or("class", ClassKind::role);
            return Err(Lookup::Refused(format!(
                "its module {module:?} is not imported; import it before loading (loading \
                 never imports a module unless asked to: pass allow_import=True to load \
                 the {role}'s module too)"
            )));
        }
    };
    for part in qualname.split('.') {
        object = object
            .getattr(part)
            .map_err(|err| match only_exceptions(err) {
                Lookup::Refused(_) => {
                    Lookup::Refused(format!("{module:?} has no attribute {qualname:?}"))
                }
                interrupted @ Lookup::Python(_) => interrupted,
            })?;
    }
    object.cast_into::<PyType>().map_err(|e| {
        Lookup::Refused(format!(
            "it is not a class but {}",
            describe(&e.into_inner())
        ))
    })
}

/// An error raised while finding a class: an ordinary `Exception` says the
/// class cannot be loaded; anything else (`KeyboardInterrupt`,
/// `SystemExit`, and `MemoryError`, which says nothing about the data) is
/// passed on as it is.
fn only_exceptions(err: PyErr) -> Lookup {
    Python::attach(|py| {
        if err.is_instance_of::<PyException>(py) && !err.is_instance_of::<PyMemoryError>(py) {
            Lookup::Refused(format!("importing its module failed: {}", err.value(py)))
        } else {
            Lookup::Python(err)
        }
    })
}

/// `'str'`-style description of an object's type for error messages.
pub fn describe(object: &Bound<'_, PyAny>) -> String {
    object
        .get_type()
        .fully_qualified_name()
        .map_or_else(|_| "an object".to_string(), |n| format!("'{n}'"))
}
