//! Names as map keys: a shared string with its first eight bytes kept
//! inline, so comparing two names rarely has to follow either pointer.
//!
//! Step results and metadata are kept in sorted maps keyed by name. A
//! binary search compares the key it looks for with several stored keys;
//! with plain shared strings each comparison reads a string elsewhere in
//! memory, which for large instances is mostly a cache miss. With the
//! prefix inline, names that differ in their first eight bytes compare
//! without reading either string.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// A shared string that orders exactly as `str` does.
#[derive(Clone)]
pub struct Name {
    /// The first eight bytes, big-endian, zero-padded: comparing two
    /// prefixes orders them as their strings' first eight bytes.
    prefix: u64,
    text: Arc<str>,
}

impl Name {
    /// The name `text`.
    #[must_use]
    pub fn new(text: Arc<str>) -> Name {
        let mut head = [0u8; 8];
        let bytes = text.as_bytes();
        let n = bytes.len().min(8);
        head[..n].copy_from_slice(&bytes[..n]);
        Name {
            prefix: u64::from_be_bytes(head),
            text,
        }
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<Arc<str>> for Name {
    fn from(text: Arc<str>) -> Name {
        Name::new(text)
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name::new(Arc::from(text))
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix
            && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> Ordering {
        // Equal prefixes (or a zero byte within them) fall back to the
        // strings, so the order is always `str`'s.
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.text.as_ref().cmp(other.text.as_ref()))
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_order_exactly_as_strings() {
        let words = [
            "",
            "a",
            "ab",
            "ab\0",
            "ab\0c",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\0",
            "b",
            "b1234",
            "b1235",
            "\u{e9}t\u{e9}",
            "zzzzzzzzzz",
            "\0",
            "\0\0",
        ];
        for a in words {
            for b in words {
                assert_eq!(
                    Name::from(a).cmp(&Name::from(b)),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
                assert_eq!(Name::from(a) == Name::from(b), a == b);
            }
        }
    }
}
