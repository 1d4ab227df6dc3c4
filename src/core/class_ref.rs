//! Names of Python classes as the core stores them, and step keys.
//!
//! The core never holds Python objects: a step or workflow class is stored
//! as `"module:QualName"` (Elixir stores the module atom). The bindings map
//! names to live classes and back.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, Mutex, PoisonError};

use crate::core::error::{CoreError, CoreResult};

/// A class reference, `"module:QualName"`: an interned name, so it is a
/// `Copy` pointer that compares, hashes and orders by its intern number.
/// The order is the order in which names were first seen, which is the
/// same for the life of the process but not across processes: whatever
/// must be reproducible (serialized documents, reprs) sorts by name.
///
/// The bindings may add a `#N` suffix when two live classes share one
/// module and qualified name (classes made in a loop or a factory), so that
/// each keeps its own identity.
///
/// Names are interned for the life of the process. Only names of classes
/// that exist are interned (the bindings intern a name when they register a
/// live class, and documents are checked with [`ClassRef::check`] before
/// their names resolve), and the registry reuses the name of a class that
/// was garbage-collected, so the table stays as small as the set of
/// classes a program defines.
#[derive(Clone, Copy)]
pub struct ClassRef(&'static Interned);

/// One interned name.
struct Interned {
    /// The intern number: the order in which names were first seen.
    number: u32,
    name: Box<str>,
}

/// Every name interned so far.
static INTERNED: LazyLock<Mutex<HashMap<&'static str, ClassRef, foldhash::fast::RandomState>>> =
    LazyLock::new(|| Mutex::new(HashMap::default()));

impl ClassRef {
    /// Checks the `"module:QualName"` shape (both parts non-empty, one
    /// colon) and interns the name.
    pub fn parse(name: &str) -> CoreResult<ClassRef> {
        Self::check(name)?;
        // A panic cannot leave a map half-updated, so a poisoned lock is
        // still usable.
        let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&existing) = interned.get(name) {
            return Ok(existing);
        }
        let number = u32::try_from(interned.len())
            .map_err(|_| CoreError::invalid("class", "more than 2^32 distinct class names"))?;
        let entry: &'static Interned = Box::leak(Box::new(Interned {
            number,
            name: Box::from(name),
        }));
        let class = ClassRef(entry);
        interned.insert(&entry.name, class);
        Ok(class)
    }

    /// Checks the `"module:QualName"` shape without interning the name.
    pub fn check(name: &str) -> CoreResult<()> {
        match name.split_once(':') {
            Some((module, qualname))
                if !module.is_empty() && !qualname.is_empty() && !qualname.contains(':') =>
            {
                Ok(())
            }
            _ => Err(CoreError::invalid(
                "class",
                format!("{name:?} is not a class reference of the form \"module:QualName\""),
            )),
        }
    }

    /// The full reference.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        &self.0.name
    }

    /// The qualified name, without the module or a `#N` suffix, for
    /// messages and drawings: `"shop.steps:Pay#2"` gives `"Pay"`.
    #[must_use]
    pub fn short_name(&self) -> &'static str {
        short_name(&self.0.name)
    }

    /// The intern number: the order in which names were first seen.
    #[must_use]
    pub(crate) fn number(&self) -> u32 {
        self.0.number
    }

    /// Orders references by name, for output that must be the same in
    /// every process.
    #[must_use]
    pub fn cmp_names(&self, other: &ClassRef) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// The qualified name part of a `"module:QualName#N"` reference.
#[must_use]
pub fn short_name(name: &str) -> &str {
    let name = name.split_once('#').map_or(name, |(base, _)| base);
    name.rsplit_once(':').map_or(name, |(_, q)| q)
}

impl PartialEq for ClassRef {
    fn eq(&self, other: &Self) -> bool {
        // Interned: equal names share one entry.
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for ClassRef {}

impl Hash for ClassRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u32(self.0.number);
    }
}

impl PartialOrd for ClassRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClassRef {
    /// By intern number (see the type's docs); [`ClassRef::cmp_names`]
    /// orders by name.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.number.cmp(&other.0.number)
    }
}

impl fmt::Debug for ClassRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClassRef({:?})", self.as_str())
    }
}

impl fmt::Display for ClassRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default step key of a class name, as Elixir's `Macro.underscore`
/// computes it: `ValidateOrder` → `validate_order`, `HTTPClient` →
/// `http_client`.
///
/// ```
/// use _core::core::class_ref::underscore;
/// assert_eq!(underscore("ValidateOrder"), "validate_order");
/// assert_eq!(underscore("HTTPClient"), "http_client");
/// assert_eq!(underscore("Step2Done"), "step2_done");
/// ```
#[must_use]
pub fn underscore(name: &str) -> String {
    // A byte-for-byte port of `Macro.underscore/1`; non-ASCII bytes pass
    // through unchanged, so the result stays valid UTF-8.
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 4);
    let Some((&first, _)) = bytes.split_first() else {
        return String::new();
    };
    out.push(first.to_ascii_lowercase());
    let mut prev = first;
    let mut i = 1;
    while i < bytes.len() {
        let h = bytes[i];
        let next = bytes.get(i + 1).copied();
        match next {
            Some(t)
                if h.is_ascii_uppercase()
                    && !t.is_ascii_uppercase()
                    && !t.is_ascii_digit()
                    && t != b'.'
                    && t != b'_' =>
            {
                out.extend([b'_', h.to_ascii_lowercase(), t]);
                prev = t;
                i += 2;
                continue;
            }
            _ => {}
        }
        if h.is_ascii_uppercase() && !prev.is_ascii_uppercase() && prev != b'_' {
            out.extend([b'_', h.to_ascii_lowercase()]);
        } else if h == b'.' {
            out.push(b'/');
            if let Some(&n) = bytes.get(i + 1) {
                out.push(n.to_ascii_lowercase());
                prev = n;
                i += 2;
                continue;
            }
        } else {
            out.push(h.to_ascii_lowercase());
        }
        prev = h;
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscore_matches_elixir() {
        let cases = [
            ("ValidateOrder", "validate_order"),
            ("HTTPClient", "http_client"),
            ("Foo", "foo"),
            ("FooBar", "foo_bar"),
            ("FooBAR", "foo_bar"),
            ("FOOBar", "foo_bar"),
            ("Step1", "step1"),
            ("V2Flow", "v2_flow"),
            ("already_snake", "already_snake"),
            ("Foo.Bar", "foo/bar"),
            ("ÉtapeUn", "Étape_un"),
            ("", ""),
            ("A", "a"),
        ];
        for (name, key) in cases {
            assert_eq!(underscore(name), key, "{name}");
        }
    }

    #[test]
    fn interned_refs_compare_by_identity_and_order_by_name() {
        let a = ClassRef::parse("shop:A").unwrap();
        let again = ClassRef::parse(&String::from("shop:A")).unwrap();
        let b = ClassRef::parse("shop:B").unwrap();
        assert_eq!(a, again);
        assert!(std::ptr::eq(a.as_str(), again.as_str()));
        assert_eq!(a.cmp_names(&b), std::cmp::Ordering::Less);
        assert_eq!(a.cmp(&again), std::cmp::Ordering::Equal);
        assert_eq!(
            ClassRef::parse("m:Outer.Inner#2").unwrap().short_name(),
            "Outer.Inner"
        );
    }

    #[test]
    fn class_refs_need_module_and_qualname() {
        assert!(ClassRef::parse("shop.steps:Pay").is_ok());
        assert!(ClassRef::parse("tests:f.<locals>.Pay#2").is_ok());
        for bad in ["", "Pay", ":Pay", "shop:", "a:b:c"] {
            assert!(ClassRef::parse(bad).is_err(), "{bad}");
        }
    }
}
