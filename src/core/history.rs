//! The execution history of an instance: a persistent list of
//! [`ExecutionEntry`] values, newest first.
//!
//! Appending allocates one node and shares every older entry, so it costs
//! the same at any length (the benchmark checks 10 against 100,000
//! entries). Dropping is iterative, so a long history cannot overflow the
//! stack.

use std::sync::Arc;

use crate::core::execution_entry::ExecutionEntry;

struct Node {
    entry: ExecutionEntry,
    older: Option<Arc<Node>>,
}

/// A persistent list of entries, newest first; clones share everything.
#[derive(Clone, Default)]
pub struct History {
    newest: Option<Arc<Node>>,
    len: usize,
}

impl History {
    /// A history of `entries`, given oldest first.
    #[must_use]
    pub fn from_oldest_first(entries: Vec<ExecutionEntry>) -> History {
        let mut history = History::default();
        for entry in entries {
            history.push(entry);
        }
        history
    }

    /// Appends `entry` as the newest.
    pub fn push(&mut self, entry: ExecutionEntry) {
        let older = self.newest.take();
        self.newest = Some(Arc::new(Node { entry, older }));
        self.len += 1;
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, newest first.
    #[must_use]
    pub fn newest_first(&self) -> impl ExactSizeIterator<Item = &ExecutionEntry> {
        NewestFirst {
            next: self.newest.as_deref(),
            left: self.len,
        }
    }

    /// The entries, oldest first (collects references; O(n)).
    #[must_use]
    pub fn oldest_first(&self) -> Vec<&ExecutionEntry> {
        let mut entries: Vec<_> = self.newest_first().collect();
        entries.reverse();
        entries
    }
}

struct NewestFirst<'a> {
    next: Option<&'a Node>,
    left: usize,
}

impl<'a> Iterator for NewestFirst<'a> {
    type Item = &'a ExecutionEntry;

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.next?;
        self.next = node.older.as_deref();
        self.left -= 1;
        Some(&node.entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for NewestFirst<'_> {}

impl Drop for History {
    fn drop(&mut self) {
        // Unlink nodes this history owns alone, one at a time; stop at the
        // first node another history still shares. `Arc::into_inner` (not
        // `try_unwrap`) so that when two histories sharing a node drop at
        // once, exactly one of them gets the node and goes on unlinking,
        // rather than both failing and the last `Arc` freeing the rest of
        // the chain recursively.
        let mut next = self.newest.take();
        while let Some(node) = next {
            next = Arc::into_inner(node).and_then(|mut node| node.older.take());
        }
    }
}

impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.newest_first().eq(other.newest_first())
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.oldest_first()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::class_ref::ClassRef;

    fn entry(i: i64) -> ExecutionEntry {
        ExecutionEntry::new(ClassRef::parse("m:S").unwrap(), "done", i, None).unwrap()
    }

    #[test]
    fn push_shares_and_orders() {
        let mut a = History::default();
        a.push(entry(1));
        let mut b = a.clone();
        b.push(entry(2));
        assert_eq!(a.len(), 1);
        assert_eq!(
            b.newest_first()
                .map(ExecutionEntry::timestamp)
                .collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(b.oldest_first().len(), 2);
        assert_eq!(History::from_oldest_first(vec![entry(1), entry(2)]), b);
        assert_ne!(a, b);
    }

    #[test]
    fn histories_sharing_a_long_tail_drop_concurrently_without_recursion() {
        // Many threads drop clones of one long history at once: whichever
        // drops the last reference must unlink iteratively, whatever the
        // interleaving (with `try_unwrap` two racing drops could both fail
        // and leave a recursive free to the last one).
        for _ in 0..4 {
            let mut history = History::default();
            for i in 0..300_000 {
                history.push(entry(i));
            }
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let mut mine = history.clone();
                    mine.push(entry(-1));
                    std::thread::Builder::new()
                        .stack_size(256 * 1024)
                        .spawn(move || drop(mine))
                        .unwrap()
                })
                .collect();
            drop(history);
            for thread in threads {
                thread.join().unwrap();
            }
        }
    }

    #[test]
    fn dropping_a_million_entries_does_not_overflow_the_stack() {
        let mut history = History::default();
        for i in 0..1_000_000 {
            history.push(entry(i));
        }
        let shared = history.clone();
        drop(history);
        assert_eq!(shared.len(), 1_000_000);
        drop(shared);
    }
}
