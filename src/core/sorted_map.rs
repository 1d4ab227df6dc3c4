//! A persistent sorted map tuned for the sizes workflow instances have.
//!
//! Instances hold a handful to a few dozen steps, configs and results, and
//! there may be many thousands of instances alive at once. A tree node per
//! entry (two allocations and ~100 bytes each in `rpds`) dominated both the
//! memory and the time of building an instance. So a map stays one shared,
//! sorted array while it is small: an update copies at most [`SMALL_LIMIT`]
//! cheap-to-clone entries, a lookup is a binary search, and bulk building is
//! a sort. Past that size it becomes a red-black tree, so updates stay
//! O(log n) however large it grows.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use rpds::RedBlackTreeMapSync;

/// The largest map kept as an array. Copying an array of this many
/// refcounted entries costs about what a tree update's path copy and
/// allocations do, so below it the array is as fast and far more compact.
pub const SMALL_LIMIT: usize = 128;

/// A persistent map ordered by key. Cloning is O(1); every update returns a
/// new map sharing what it can with the old one. `K` and `V` should be cheap
/// to clone (`Arc`s, small `Copy` values).
pub enum SortedMap<K: Ord, V> {
    /// Up to [`SMALL_LIMIT`] entries, sorted by key, shared.
    Small(Arc<[(K, V)]>),
    /// Larger maps.
    Large(RedBlackTreeMapSync<K, V>),
}

impl<K: Ord + Clone, V: Clone> SortedMap<K, V> {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        SortedMap::Small(Arc::from(Vec::new()))
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
        if unique.len() <= SMALL_LIMIT {
            SortedMap::Small(Arc::from(unique))
        } else {
            let mut tree = RedBlackTreeMapSync::new_sync();
            for (k, v) in unique {
                tree.insert_mut(k, v);
            }
            SortedMap::Large(tree)
        }
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            SortedMap::Small(entries) => entries.len(),
            SortedMap::Large(tree) => tree.size(),
        }
    }

    /// Whether the map is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value under `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self {
            SortedMap::Small(entries) => entries
                .binary_search_by(|(k, _)| k.borrow().cmp(key))
                .ok()
                .map(|i| &entries[i].1),
            SortedMap::Large(tree) => tree.get(key),
        }
    }

    /// Sets `key` to `value`.
    pub fn insert_mut(&mut self, key: K, value: V) {
        match self {
            SortedMap::Small(entries) => {
                let found = entries.binary_search_by(|(k, _)| k.cmp(&key));
                if found.is_err() && entries.len() == SMALL_LIMIT {
                    let mut tree: RedBlackTreeMapSync<K, V> = entries.iter().cloned().collect();
                    tree.insert_mut(key, value);
                    *self = SortedMap::Large(tree);
                    return;
                }
                let mut next: Vec<(K, V)> = Vec::with_capacity(entries.len() + 1);
                match found {
                    Ok(i) => {
                        next.extend_from_slice(&entries[..i]);
                        next.push((key, value));
                        next.extend_from_slice(&entries[i + 1..]);
                    }
                    Err(i) => {
                        next.extend_from_slice(&entries[..i]);
                        next.push((key, value));
                        next.extend_from_slice(&entries[i..]);
                    }
                }
                *entries = Arc::from(next);
            }
            SortedMap::Large(tree) => tree.insert_mut(key, value),
        }
    }

    /// Sets every `(key, value)` of `pairs` (later pairs win), copying the
    /// array at most once.
    pub fn insert_all(&mut self, pairs: impl IntoIterator<Item = (K, V)>) {
        let mut updates: Vec<(K, V)> = pairs.into_iter().collect();
        // A stable sort keeps repeated keys in input order; the last wins.
        updates.sort_by(|a, b| a.0.cmp(&b.0));
        updates.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        match self {
            SortedMap::Small(entries) if entries.len() + updates.len() <= SMALL_LIMIT => {
                // One merge of two sorted runs into a fresh array.
                let mut merged = Vec::with_capacity(entries.len() + updates.len());
                let mut old = entries.iter().peekable();
                for update in updates {
                    while let Some(entry) = old.next_if(|e| e.0 < update.0) {
                        merged.push(entry.clone());
                    }
                    old.next_if(|e| e.0 == update.0);
                    merged.push(update);
                }
                merged.extend(old.cloned());
                *entries = Arc::from(merged);
            }
            _ => {
                for (key, value) in updates {
                    self.insert_mut(key, value);
                }
            }
        }
    }

    /// Removes `key` if present.
    pub fn remove_mut<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self {
            SortedMap::Small(entries) => {
                if let Ok(i) = entries.binary_search_by(|(k, _)| k.borrow().cmp(key)) {
                    let mut next: Vec<(K, V)> = Vec::with_capacity(entries.len() - 1);
                    next.extend_from_slice(&entries[..i]);
                    next.extend_from_slice(&entries[i + 1..]);
                    *entries = Arc::from(next);
                }
            }
            SortedMap::Large(tree) => {
                tree.remove_mut(key);
            }
        }
    }

    /// The entries in key order.
    #[must_use]
    pub fn iter(&self) -> Iter<'_, K, V> {
        match self {
            SortedMap::Small(entries) => Iter::Small(entries.iter()),
            SortedMap::Large(tree) => Iter::Large(tree.iter()),
        }
    }
}

impl<K: Ord, V> Clone for SortedMap<K, V> {
    fn clone(&self) -> Self {
        match self {
            SortedMap::Small(entries) => SortedMap::Small(Arc::clone(entries)),
            SortedMap::Large(tree) => SortedMap::Large(tree.clone()),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Default for SortedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Iterator over a [`SortedMap`] in key order.
pub enum Iter<'a, K: Ord, V> {
    /// Over the array.
    Small(std::slice::Iter<'a, (K, V)>),
    /// Over the tree.
    Large(rpds::map::red_black_tree_map::Iter<'a, K, V, archery::ArcTK>),
}

impl<'a, K: Ord, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(it) => it.next().map(|(k, v)| (k, v)),
            Iter::Large(it) => it.next(),
        }
    }
}

impl<'a, K: Ord + Clone, V: Clone> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for SortedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
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

    /// Applies the same random-ish operations to a `SortedMap` and a
    /// `BTreeMap`, across the small/large boundary, checking they agree and
    /// that earlier versions never change.
    #[test]
    fn agrees_with_btreemap_across_the_size_limit() {
        let mut map: SortedMap<u32, u32> = SortedMap::new();
        let mut model = BTreeMap::new();
        let mut versions = Vec::new();
        let mut seed: u32 = 7;
        for step in 0..5_000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let key = (seed >> 16) % 300;
            if seed % 5 == 0 {
                map.remove_mut(&key);
                model.remove(&key);
            } else {
                map.insert_mut(key, step);
                model.insert(key, step);
            }
            assert_eq!(map.len(), model.len());
            assert!(map
                .iter()
                .map(|(k, v)| (*k, *v))
                .eq(model.iter().map(|(k, v)| (*k, *v))));
            assert_eq!(map.get(&key), model.get(&key));
            if step % 97 == 0 {
                versions.push((map.clone(), model.clone()));
            }
        }
        for (map, model) in versions {
            assert!(map.iter().map(|(k, v)| (*k, *v)).eq(model.into_iter()));
        }
    }

    #[test]
    fn small_maps_stay_arrays_and_large_ones_become_trees() {
        let small: SortedMap<u32, ()> = (0..128).map(|i| (i, ())).collect();
        assert!(matches!(small, SortedMap::Small(_)));
        let mut grown = small.clone();
        grown.insert_mut(999, ());
        assert!(matches!(grown, SortedMap::Large(_)));
        assert_eq!(small.len(), 128, "the original is untouched");
        let built: SortedMap<u32, ()> = (0..300).rev().map(|i| (i, ())).collect();
        assert!(matches!(built, SortedMap::Large(_)));
        assert_eq!(
            built.iter().map(|(k, ())| *k).collect::<Vec<_>>(),
            (0..300).collect::<Vec<_>>()
        );
    }

    #[test]
    fn insert_all_merges_with_later_pairs_winning() {
        let mut map: SortedMap<u32, &str> = SortedMap::from_pairs(vec![(1, "a"), (3, "c")]);
        map.insert_all([(2, "b"), (3, "x"), (2, "y")]);
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            [(&1, &"a"), (&2, &"y"), (&3, &"x")]
        );
        let mut large: SortedMap<u32, u32> = (0..200).map(|i| (i, i)).collect();
        large.insert_all([(5, 0), (500, 1)]);
        assert_eq!(
            (large.get(&5), large.get(&500), large.len()),
            (Some(&0), Some(&1), 201)
        );
    }

    #[test]
    fn from_pairs_keeps_the_last_value_of_a_repeated_key() {
        let map = SortedMap::from_pairs(vec![(2, "a"), (1, "b"), (2, "c")]);
        assert_eq!(map.iter().collect::<Vec<_>>(), [(&1, &"b"), (&2, &"c")]);
    }

    #[test]
    fn equality_ignores_representation() {
        let small: SortedMap<u32, u32> = (0..10).map(|i| (i, i)).collect();
        let mut large: SortedMap<u32, u32> = (0..200).map(|i| (i, i)).collect();
        for i in 10..200 {
            large.remove_mut(&i);
        }
        assert!(matches!(large, SortedMap::Large(_)));
        assert_eq!(small, large);
    }
}
