//! A persistent map keyed by class: a 32-way radix trie over the classes'
//! intern numbers (see [`ClassRef`]).
//!
//! The engine looks a step's state up several times per step, in maps that
//! hold every step a workflow has touched. A search tree costs a binary
//! search per level; here a lookup is one indexed load per level, and the
//! levels are few (intern numbers are small and dense: three levels cover
//! 32,768 classes, four a million). Nodes are shared between versions and
//! copied on write; a node only this map holds is changed in place
//! (`Arc::make_mut`), so a driver that owns its instance pays no copying.
//! Iteration follows intern numbers, the order of [`ClassRef`]'s `Ord`.

use std::fmt;
use std::sync::Arc;

use crate::core::class_ref::ClassRef;

const BITS: u32 = 5;
const MASK: u32 = (1 << BITS) - 1;

enum Node<V> {
    /// Children for the 32 values of the next 5 bits, present where the
    /// bitmap says, in index order.
    Branch {
        bitmap: u32,
        children: Vec<Arc<Node<V>>>,
    },
    /// Entries for the 32 values of the lowest 5 bits, likewise.
    Leaf {
        bitmap: u32,
        entries: Vec<(ClassRef, V)>,
    },
}

impl<V: Clone> Clone for Node<V> {
    fn clone(&self) -> Self {
        match self {
            Node::Branch { bitmap, children } => Node::Branch {
                bitmap: *bitmap,
                children: children.clone(),
            },
            Node::Leaf { bitmap, entries } => Node::Leaf {
                bitmap: *bitmap,
                entries: entries.clone(),
            },
        }
    }
}

/// The slot of `index` in a node with `bitmap`, and whether it is taken.
fn slot(bitmap: u32, index: u32) -> (usize, bool) {
    let below = bitmap & ((1 << index) - 1);
    (below.count_ones() as usize, bitmap & (1 << index) != 0)
}

impl<V: Clone> Node<V> {
    /// A node at `shift` holding only `key`.
    fn single(shift: u32, number: u32, key: ClassRef, value: V) -> Node<V> {
        if shift == 0 {
            return Node::Leaf {
                bitmap: 1 << (number & MASK),
                entries: vec![(key, value)],
            };
        }
        Node::Branch {
            bitmap: 1 << ((number >> shift) & MASK),
            children: vec![Arc::new(Node::single(shift - BITS, number, key, value))],
        }
    }

    /// Sets `key`; returns whether it is new.
    fn insert(&mut self, shift: u32, number: u32, key: ClassRef, value: V) -> bool {
        let index = (number >> shift) & MASK;
        match self {
            Node::Leaf { bitmap, entries } => {
                let (at, taken) = slot(*bitmap, index);
                if taken {
                    entries[at].1 = value;
                    return false;
                }
                *bitmap |= 1 << index;
                entries.insert(at, (key, value));
                true
            }
            Node::Branch { bitmap, children } => {
                let (at, taken) = slot(*bitmap, index);
                if taken {
                    return Arc::make_mut(&mut children[at]).insert(
                        shift - BITS,
                        number,
                        key,
                        value,
                    );
                }
                *bitmap |= 1 << index;
                children.insert(at, Arc::new(Node::single(shift - BITS, number, key, value)));
                true
            }
        }
    }

    /// Removes `number`, which must be present; returns whether the node
    /// is now empty.
    fn remove(&mut self, shift: u32, number: u32) -> bool {
        let index = (number >> shift) & MASK;
        match self {
            Node::Leaf { bitmap, entries } => {
                let (at, taken) = slot(*bitmap, index);
                if taken {
                    *bitmap &= !(1 << index);
                    entries.remove(at);
                }
                *bitmap == 0
            }
            Node::Branch { bitmap, children } => {
                let (at, taken) = slot(*bitmap, index);
                if taken && Arc::make_mut(&mut children[at]).remove(shift - BITS, number) {
                    *bitmap &= !(1 << index);
                    children.remove(at);
                }
                *bitmap == 0
            }
        }
    }
}

/// A persistent map from classes to `V`. Cloning is O(1); every update
/// changes only this map, sharing what it can with its clones.
pub struct ClassMap<V> {
    root: Option<Arc<Node<V>>>,
    /// The shift of the root: it covers numbers below `2^(shift + 5)`.
    shift: u32,
    len: usize,
}

impl<V> Clone for ClassMap<V> {
    fn clone(&self) -> Self {
        ClassMap {
            root: self.root.clone(),
            shift: self.shift,
            len: self.len,
        }
    }
}

impl<V> Default for ClassMap<V> {
    fn default() -> Self {
        ClassMap {
            root: None,
            shift: 0,
            len: 0,
        }
    }
}

impl<V: Clone> ClassMap<V> {
    /// An empty map (no allocation).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value under `key`.
    #[must_use]
    pub fn get(&self, key: &ClassRef) -> Option<&V> {
        let number = key.number();
        if u64::from(number) >> (self.shift + BITS) != 0 {
            return None;
        }
        let mut node = self.root.as_deref()?;
        let mut shift = self.shift;
        loop {
            let index = (number >> shift) & MASK;
            match node {
                Node::Branch { bitmap, children } => {
                    let (at, taken) = slot(*bitmap, index);
                    if !taken {
                        return None;
                    }
                    node = &children[at];
                    shift -= BITS;
                }
                Node::Leaf { bitmap, entries } => {
                    let (at, taken) = slot(*bitmap, index);
                    return taken.then(|| &entries[at].1);
                }
            }
        }
    }

    /// Sets `key` to `value`.
    pub fn insert_mut(&mut self, key: ClassRef, value: V) {
        let number = key.number();
        let Some(root) = self.root.as_mut() else {
            self.shift = 0;
            while u64::from(number) >> (self.shift + BITS) != 0 {
                self.shift += BITS;
            }
            self.root = Some(Arc::new(Node::single(self.shift, number, key, value)));
            self.len = 1;
            return;
        };
        if u64::from(number) >> (self.shift + BITS) == 0 {
            if Arc::make_mut(root).insert(self.shift, number, key, value) {
                self.len += 1;
            }
            return;
        }
        // The key is beyond the root's range: grow the trie upwards.
        while u64::from(number) >> (self.shift + BITS) != 0 {
            if let Some(old) = self.root.take() {
                self.root = Some(Arc::new(Node::Branch {
                    bitmap: 1,
                    children: vec![old],
                }));
            }
            self.shift += BITS;
        }
        if let Some(root) = self.root.as_mut() {
            Arc::make_mut(root).insert(self.shift, number, key, value);
            self.len += 1;
        }
    }

    /// Removes `key` if present.
    pub fn remove_mut(&mut self, key: &ClassRef) {
        // Look first, so that removing an absent key copies nothing.
        if self.get(key).is_none() {
            return;
        }
        if let Some(root) = self.root.as_mut() {
            self.len -= 1;
            if Arc::make_mut(root).remove(self.shift, key.number()) {
                self.root = None;
            }
        }
    }

    /// The entries, in the order of the keys (intern numbers).
    #[must_use]
    pub fn iter(&self) -> Iter<'_, V> {
        let mut iter = Iter {
            leaf: [].iter(),
            path: Vec::new(),
            left: self.len,
        };
        if let Some(root) = self.root.as_deref() {
            iter.descend(root);
        }
        iter
    }
}

/// Iterator over a [`ClassMap`] in key order.
pub struct Iter<'a, V> {
    leaf: std::slice::Iter<'a, (ClassRef, V)>,
    /// The children still to visit at each branch level above the leaf.
    path: Vec<std::slice::Iter<'a, Arc<Node<V>>>>,
    left: usize,
}

impl<'a, V> Iter<'a, V> {
    /// Goes down to the leftmost leaf under `node`.
    fn descend(&mut self, mut node: &'a Node<V>) {
        loop {
            match node {
                Node::Leaf { entries, .. } => {
                    self.leaf = entries.iter();
                    return;
                }
                Node::Branch { children, .. } => {
                    let mut rest = children.iter();
                    let Some(first) = rest.next() else {
                        return;
                    };
                    self.path.push(rest);
                    node = first;
                }
            }
        }
    }
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a ClassRef, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.leaf.next() {
                self.left -= 1;
                return Some((k, v));
            }
            let next = loop {
                let rest = self.path.last_mut()?;
                match rest.next() {
                    Some(child) => break child,
                    None => {
                        self.path.pop();
                    }
                }
            };
            self.descend(next);
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<V> ExactSizeIterator for Iter<'_, V> {}

impl<'a, V: Clone> IntoIterator for &'a ClassMap<V> {
    type Item = (&'a ClassRef, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<V: Clone + PartialEq> PartialEq for ClassMap<V> {
    fn eq(&self, other: &Self) -> bool {
        let shared = match (&self.root, &other.root) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        shared || (self.len == other.len && self.iter().eq(other.iter()))
    }
}

impl<V: Clone + fmt::Debug> fmt::Debug for ClassMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: Clone> FromIterator<(ClassRef, V)> for ClassMap<V> {
    fn from_iter<I: IntoIterator<Item = (ClassRef, V)>>(iter: I) -> Self {
        let mut map = ClassMap::new();
        for (key, value) in iter {
            map.insert_mut(key, value);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn class(i: u32) -> ClassRef {
        ClassRef::parse(&format!("class_map_test:C{i}")).unwrap()
    }

    /// The same pseudo-random operations on a `ClassMap` and a `BTreeMap`
    /// (keyed by `ClassRef`, whose order is the intern number's) agree,
    /// and earlier versions never change.
    #[test]
    fn agrees_with_btreemap_and_keeps_old_versions() {
        let classes: Vec<ClassRef> = (0..3_000).map(class).collect();
        let mut map: ClassMap<u32> = ClassMap::new();
        let mut model: BTreeMap<ClassRef, u32> = BTreeMap::new();
        let mut versions = Vec::new();
        let mut seed: u32 = 11;
        for step in 0..30_000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let key = classes[((seed >> 8) % 3_000) as usize];
            if seed % 4 == 0 {
                map.remove_mut(&key);
                model.remove(&key);
            } else {
                map.insert_mut(key, step);
                model.insert(key, step);
            }
            assert_eq!(map.len(), model.len());
            assert_eq!(map.get(&key), model.get(&key));
            if step % 1_999 == 0 {
                assert!(map
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .eq(model.iter().map(|(k, v)| (*k, *v))));
                versions.push((map.clone(), model.clone()));
            }
        }
        for (map, model) in versions {
            assert_eq!(map.iter().len(), model.len());
            assert!(map.iter().map(|(k, v)| (*k, *v)).eq(model.into_iter()));
        }
    }

    #[test]
    fn a_shared_map_is_copied_and_a_lone_one_changed_in_place() {
        let mut map: ClassMap<u32> = (0..500).map(|i| (class(i), i)).collect();
        let before = map.clone();
        map.insert_mut(class(5), 0);
        assert_eq!(before.get(&class(5)), Some(&5), "the clone is untouched");
        let root = map.root.as_ref().map(Arc::as_ptr);
        drop(before);
        map.insert_mut(class(6), 0);
        assert_eq!(map.root.as_ref().map(Arc::as_ptr), root, "changed in place");
        for i in 0..500 {
            map.remove_mut(&class(i));
        }
        assert!(map.is_empty() && map.root.is_none());
        assert_eq!(map, ClassMap::new());
    }
}
