//! A persistent sorted map: a B+ tree whose nodes are shared between
//! versions and copied on write.
//!
//! An instance update must cost the same however many steps the instance
//! has finished, and old versions must stay valid, since every change
//! returns a new instance. So a map is a tree of small sorted arrays: an
//! update copies the nodes on one root-to-leaf path (at most [`FANOUT`]
//! entries each, `O(log n)` in all) and shares the rest. A node that only
//! this map holds is changed in place instead of copied (`Arc::make_mut`),
//! so a driver that owns its instance (the run loop) pays no copying at
//! all. Lookups are a binary search per level; bulk building is a sort.
//!
//! Removal does not rebalance: an emptied node is dropped and a root with
//! one child is replaced by that child, but half-empty nodes stay. The
//! depth never exceeds that of the largest size the map has had, which is
//! all the cost bound needs.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The most entries a leaf, or children a branch, holds.
pub const FANOUT: usize = 32;
/// Bulk-built nodes are filled to this much, leaving room for inserts.
const FILL: usize = FANOUT * 3 / 4;

enum Node<K, V> {
    /// Sorted, unique entries.
    Leaf(Vec<(K, V)>),
    /// `keys[i]` separates `children[i]` (keys below it) from
    /// `children[i + 1]` (keys at or above it); one key fewer than children.
    Branch {
        keys: Vec<K>,
        children: Vec<Arc<Node<K, V>>>,
    },
}

impl<K: Clone, V: Clone> Clone for Node<K, V> {
    fn clone(&self) -> Self {
        match self {
            Node::Leaf(entries) => Node::Leaf(entries.clone()),
            Node::Branch { keys, children } => Node::Branch {
                keys: keys.clone(),
                children: children.clone(),
            },
        }
    }
}

/// The child of a branch that holds, or would hold, `key`.
fn child_for<K: Borrow<Q>, Q: Ord + ?Sized>(keys: &[K], key: &Q) -> usize {
    keys.partition_point(|k| k.borrow() <= key)
}

/// What an insert into a node did.
enum Grown<K, V> {
    /// The key replaced an existing entry.
    Replaced,
    /// The key was added and the node still fits.
    Added,
    /// The key was added and the node split: the new right sibling and the
    /// smallest key under it.
    Split(K, Arc<Node<K, V>>),
}

impl<K: Ord + Clone, V: Clone> Node<K, V> {
    fn insert(&mut self, key: K, value: V) -> Grown<K, V> {
        match self {
            Node::Leaf(entries) => {
                match entries.binary_search_by(|(k, _)| k.cmp(&key)) {
                    Ok(i) => {
                        entries[i].1 = value;
                        return Grown::Replaced;
                    }
                    Err(i) => entries.insert(i, (key, value)),
                }
                if entries.len() <= FANOUT {
                    return Grown::Added;
                }
                let right = entries.split_off(entries.len() / 2);
                let low = right[0].0.clone();
                Grown::Split(low, Arc::new(Node::Leaf(right)))
            }
            Node::Branch { keys, children } => {
                let i = child_for(keys, &key);
                let grown = Arc::make_mut(&mut children[i]).insert(key, value);
                let Grown::Split(low, node) = grown else {
                    return grown;
                };
                keys.insert(i, low);
                children.insert(i + 1, node);
                if children.len() <= FANOUT {
                    return Grown::Added;
                }
                let half = children.len() / 2;
                let right_children = children.split_off(half);
                let mut right_keys = keys.split_off(half - 1);
                let low = right_keys.remove(0);
                Grown::Split(
                    low,
                    Arc::new(Node::Branch {
                        keys: right_keys,
                        children: right_children,
                    }),
                )
            }
        }
    }

    /// Removes `key`, which must be present; returns whether the node is
    /// now empty.
    fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self {
            Node::Leaf(entries) => {
                if let Ok(i) = entries.binary_search_by(|(k, _)| k.borrow().cmp(key)) {
                    entries.remove(i);
                }
                entries.is_empty()
            }
            Node::Branch { keys, children } => {
                let i = child_for(keys, key);
                if Arc::make_mut(&mut children[i]).remove(key) {
                    children.remove(i);
                    if !keys.is_empty() {
                        keys.remove(i.saturating_sub(1));
                    }
                }
                children.is_empty()
            }
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let mut node = self;
        loop {
            match node {
                Node::Leaf(entries) => {
                    return entries
                        .binary_search_by(|(k, _)| k.borrow().cmp(key))
                        .ok()
                        .map(|i| &entries[i].1);
                }
                Node::Branch { keys, children } => node = &children[child_for(keys, key)],
            }
        }
    }
}

/// A persistent map ordered by key. Cloning is O(1); every update changes
/// only this map, sharing what it can with its clones. `K` and `V` should
/// be cheap to clone (`Copy` values, `Arc`s).
pub struct SortedMap<K, V> {
    root: Option<Arc<Node<K, V>>>,
    len: usize,
}

impl<K, V> Clone for SortedMap<K, V> {
    fn clone(&self) -> Self {
        SortedMap {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<K: Ord + Clone, V: Clone> SortedMap<K, V> {
    /// An empty map (no allocation).
    #[must_use]
    pub fn new() -> Self {
        SortedMap { root: None, len: 0 }
    }

    /// Builds a map from pairs in any order; for a repeated key the last
    /// pair wins.
    #[must_use]
    pub fn from_pairs(mut pairs: Vec<(K, V)>) -> Self {
        // A stable sort keeps equal keys in input order; keep the last one.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(K, V)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match unique.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => unique.push(pair),
            }
        }
        Self::from_sorted(&unique)
    }

    /// A map of sorted, unique entries, built bottom-up.
    fn from_sorted(entries: &[(K, V)]) -> Self {
        let len = entries.len();
        if len == 0 {
            return Self::new();
        }
        // (smallest key, node) for each node of the level being built.
        let mut level: Vec<(K, Arc<Node<K, V>>)> = entries
            .chunks(FILL)
            .map(|chunk| (chunk[0].0.clone(), Arc::new(Node::Leaf(chunk.to_vec()))))
            .collect();
        while level.len() > 1 {
            let mut parents = Vec::with_capacity(level.len() / FILL + 1);
            let mut rest = level.into_iter().peekable();
            while rest.peek().is_some() {
                let group: Vec<_> = rest.by_ref().take(FILL).collect();
                let low = group[0].0.clone();
                let mut keys = Vec::with_capacity(group.len() - 1);
                let mut children = Vec::with_capacity(group.len());
                for (i, (key, child)) in group.into_iter().enumerate() {
                    if i > 0 {
                        keys.push(key);
                    }
                    children.push(child);
                }
                parents.push((low, Arc::new(Node::Branch { keys, children })));
            }
            level = parents;
        }
        SortedMap {
            root: level.pop().map(|(_, node)| node),
            len,
        }
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
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.root.as_deref()?.get(key)
    }

    /// Sets `key` to `value`.
    pub fn insert_mut(&mut self, key: K, value: V) {
        let Some(root) = self.root.as_mut() else {
            self.root = Some(Arc::new(Node::Leaf(vec![(key, value)])));
            self.len = 1;
            return;
        };
        match Arc::make_mut(root).insert(key, value) {
            Grown::Replaced => {}
            Grown::Added => self.len += 1,
            Grown::Split(low, right) => {
                self.len += 1;
                if let Some(left) = self.root.take() {
                    self.root = Some(Arc::new(Node::Branch {
                        keys: vec![low],
                        children: vec![left, right],
                    }));
                }
            }
        }
    }

    /// Sets every `(key, value)` of `pairs` (later pairs win).
    pub fn insert_all(&mut self, pairs: impl IntoIterator<Item = (K, V)>) {
        for (key, value) in pairs {
            self.insert_mut(key, value);
        }
    }

    /// Removes `key` if present.
    pub fn remove_mut<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        // Look first, so that removing an absent key copies nothing.
        if self.get(key).is_none() {
            return;
        }
        let Some(root) = self.root.as_mut() else {
            return;
        };
        self.len -= 1;
        if Arc::make_mut(root).remove(key) {
            self.root = None;
            return;
        }
        // A root branch with a single child gives way to that child.
        while let Some(Node::Branch { children, .. }) = self.root.as_deref() {
            if children.len() != 1 {
                break;
            }
            let only = Arc::clone(&children[0]);
            self.root = Some(only);
        }
    }

    /// The entries in key order.
    #[must_use]
    pub fn iter(&self) -> Iter<'_, K, V> {
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

impl<K: Ord + Clone, V: Clone> Default for SortedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Iterator over a [`SortedMap`] in key order.
pub struct Iter<'a, K, V> {
    leaf: std::slice::Iter<'a, (K, V)>,
    /// The children still to visit at each branch level above the leaf.
    path: Vec<std::slice::Iter<'a, Arc<Node<K, V>>>>,
    left: usize,
}

impl<'a, K, V> Iter<'a, K, V> {
    /// Goes down to the leftmost leaf under `node`.
    fn descend(&mut self, mut node: &'a Node<K, V>) {
        loop {
            match node {
                Node::Leaf(entries) => {
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

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

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

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<'a, K: Ord + Clone, V: Clone> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for SortedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        let shared = match (&self.root, &other.root) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        shared || (self.len == other.len && self.iter().eq(other.iter()))
    }
}

impl<K: Ord + Clone + fmt::Debug, V: Clone + fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for SortedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_pairs(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn depth<K, V>(map: &SortedMap<K, V>) -> usize {
        let mut depth = 0;
        let mut node = map.root.as_deref();
        while let Some(n) = node {
            depth += 1;
            node = match n {
                Node::Leaf(_) => None,
                Node::Branch { children, .. } => children.first().map(|c| &**c),
            };
        }
        depth
    }

    /// Applies the same pseudo-random operations to a `SortedMap` and a
    /// `BTreeMap` across several tree heights, checking that they agree and
    /// that earlier versions never change.
    #[test]
    fn agrees_with_btreemap_and_keeps_old_versions() {
        for range in [40_u32, 300, 5_000] {
            let mut map: SortedMap<u32, u32> = SortedMap::new();
            let mut model = BTreeMap::new();
            let mut versions = Vec::new();
            let mut seed: u32 = 7;
            for step in 0..20_000 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let key = (seed >> 8) % range;
                if seed % 5 == 0 {
                    map.remove_mut(&key);
                    model.remove(&key);
                } else {
                    map.insert_mut(key, step);
                    model.insert(key, step);
                }
                assert_eq!(map.len(), model.len());
                assert_eq!(map.get(&key), model.get(&key));
                if step % 997 == 0 {
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
    }

    #[test]
    fn depth_grows_logarithmically_and_shrinks_when_emptied() {
        let mut map: SortedMap<u32, ()> = SortedMap::new();
        for i in 0..100_000 {
            map.insert_mut(i, ());
        }
        assert!(depth(&map) <= 4, "depth {}", depth(&map));
        let built: SortedMap<u32, ()> = (0..100_000).rev().map(|i| (i, ())).collect();
        assert!(depth(&built) <= 4);
        assert_eq!(built, map);
        for i in 0..100_000 {
            map.remove_mut(&i);
        }
        assert!(map.is_empty());
        assert_eq!(depth(&map), 0);
        map.insert_mut(1, ());
        assert_eq!(map.iter().count(), 1);
    }

    #[test]
    fn a_shared_map_is_copied_and_a_lone_one_changed_in_place() {
        let mut map: SortedMap<u32, u32> = (0..1_000).map(|i| (i, i)).collect();
        let before = map.clone();
        map.insert_mut(5, 0);
        assert_eq!(before.get(&5), Some(&5), "the clone is untouched");
        let root = map.root.as_ref().map(Arc::as_ptr);
        drop(before);
        map.insert_mut(6, 0);
        assert_eq!(map.root.as_ref().map(Arc::as_ptr), root, "changed in place");
    }

    #[test]
    fn insert_all_has_later_pairs_win() {
        let mut map: SortedMap<u32, &str> = SortedMap::from_pairs(vec![(1, "a"), (3, "c")]);
        map.insert_all([(2, "b"), (3, "x"), (2, "y")]);
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            [(&1, &"a"), (&2, &"y"), (&3, &"x")]
        );
    }

    #[test]
    fn from_pairs_keeps_the_last_value_of_a_repeated_key() {
        let map = SortedMap::from_pairs(vec![(2, "a"), (1, "b"), (2, "c")]);
        assert_eq!(map.iter().collect::<Vec<_>>(), [(&1, &"b"), (&2, &"c")]);
    }

    #[test]
    fn equality_ignores_shape() {
        let small: SortedMap<u32, u32> = (0..10).map(|i| (i, i)).collect();
        let mut large: SortedMap<u32, u32> = (0..2_000).map(|i| (i, i)).collect();
        for i in 10..2_000 {
            large.remove_mut(&i);
        }
        assert_eq!(small, large);
        assert_ne!(small, SortedMap::new());
    }
}
