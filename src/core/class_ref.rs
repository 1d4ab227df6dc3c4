//! Names of Python classes as the core stores them, and step keys.
//!
//! The core never holds Python objects: a step or workflow class is stored
//! as `"module:QualName"` (Elixir stores the module atom). The bindings map
//! names to live classes and back.

use std::fmt;
use std::sync::Arc;

use crate::core::error::{CoreError, CoreResult};

/// A class reference, `"module:QualName"`. Cheap to clone (shared string).
///
/// The bindings may add a `#N` suffix when two live classes share one
/// module and qualified name (classes made in a loop or a factory), so that
/// each keeps its own identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassRef(Arc<str>);

impl ClassRef {
    /// Checks the `"module:QualName"` shape: both parts non-empty, one colon.
    pub fn parse(name: &str) -> CoreResult<ClassRef> {
        match name.split_once(':') {
            Some((module, qualname))
                if !module.is_empty() && !qualname.is_empty() && !qualname.contains(':') =>
            {
                Ok(ClassRef(name.into()))
            }
            _ => Err(CoreError::invalid(
                "class",
                format!("{name:?} is not a class reference of the form \"module:QualName\""),
            )),
        }
    }

    /// The full reference.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ClassRef {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClassRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    fn class_refs_need_module_and_qualname() {
        assert!(ClassRef::parse("shop.steps:Pay").is_ok());
        assert!(ClassRef::parse("tests:f.<locals>.Pay#2").is_ok());
        for bad in ["", "Pay", ":Pay", "shop:", "a:b:c"] {
            assert!(ClassRef::parse(bad).is_err(), "{bad}");
        }
    }
}
