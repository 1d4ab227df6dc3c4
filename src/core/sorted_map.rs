//! A persistent sorted map tuned for the sizes workflow instances have.
//!
//! Instances hold a handful to a few hundred steps, configs and results,
//! and there may be many thousands of instances alive at once. A tree node
//! per entry (two allocations and ~100 bytes each in a red-black tree)
//! dominated both the memory and the time of building an instance, and its
//! path copies made updates slower as maps grew. So a map is one shared,
//! sorted array of at most [`CHUNK`] entries while small, and beyond that a
//! shared root array of such chunks. An update copies one chunk and the
//! root: cheap-to-clone entries (reference counts), cost nearly flat up to a
//! few thousand entries (the root holds one pointer per [`CHUNK`] entries),
//! a lookup is two binary searches, and bulk building is a sort.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The most entries one array holds; a small map is one such array.
pub const CHUNK: usize = 32;
/// Bulk-built chunks are filled to this much, leaving room for inserts.
const FILL: usize = CHUNK * 3 / 4;

type Run<K, V> = Arc<[(K, V)]>;

/// A persistent map ordered by key. Cloning is O(1); every update returns a
/// new map sharing what it can with the old one. `K` and `V` should be cheap
/// to clone (`Arc`s, small `Copy` values).
pub enum SortedMap<K, V> {
    /// Up to [`CHUNK`] entries, sorted by key, shared.
    Small(Run<K, V>),
    /// Non-empty sorted chunks of at most [`CHUNK`] entries, in key order.
    Large {
        /// The chunks.
        chunks: Arc<[Run<K, V>]>,
        /// The number of entries.
        len: usize,
    },
}

impl<K, V> Clone for SortedMap<K, V> {
    fn clone(&self) -> Self {
        match self {
            SortedMap::Small(entries) => SortedMap::Small(Arc::clone(entries)),
            SortedMap::Large { chunks, len } => SortedMap::Large {
                chunks: Arc::clone(chunks),
                len: *len,
            },
        }
    }
}

/// `entries` with `key` set to `value` (inserted in order, or replaced).
fn with_entry<K: Ord + Clone, V: Clone>(entries: &[(K, V)], key: K, value: V) -> Vec<(K, V)> {
    let mut next = Vec::with_capacity(entries.len() + 1);
    match entries.binary_search_by(|(k, _)| k.cmp(&key)) {
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
    next
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
        Self::from_sorted(unique)
    }

    /// A map of sorted, unique entries.
    fn from_sorted(entries: Vec<(K, V)>) -> Self {
        if entries.len() <= CHUNK {
            return SortedMap::Small(Arc::from(entries));
        }
        let len = entries.len();
        let chunks: Vec<Run<K, V>> = entries.chunks(FILL).map(Arc::from).collect();
        SortedMap::Large {
            chunks: Arc::from(chunks),
            len,
        }
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            SortedMap::Small(entries) => entries.len(),
            SortedMap::Large { len, .. } => *len,
        }
    }

    /// Whether the map is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk that holds, or would hold, `key`.
    fn chunk_for<Q>(chunks: &[Run<K, V>], key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = chunks.partition_point(|c| c.last().is_some_and(|(k, _)| k.borrow() < key));
        i.min(chunks.len().saturating_sub(1))
    }

    /// The value under `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let entries: &[(K, V)] = match self {
            SortedMap::Small(entries) => entries,
            SortedMap::Large { chunks, .. } => chunks.get(Self::chunk_for(chunks, key))?,
        };
        entries
            .binary_search_by(|(k, _)| k.borrow().cmp(key))
            .ok()
            .map(|i| &entries[i].1)
    }

    /// Sets `key` to `value`.
    pub fn insert_mut(&mut self, key: K, value: V) {
        match self {
            SortedMap::Small(entries) => {
                let next = with_entry(entries, key, value);
                *self = Self::from_sorted(next);
            }
            SortedMap::Large { chunks, len } => {
                let i = Self::chunk_for(chunks, &key);
                let grew = chunks[i].binary_search_by(|(k, _)| k.cmp(&key)).is_err();
                let chunk = with_entry(&chunks[i], key, value);
                let mut root: Vec<Run<K, V>> = Vec::with_capacity(chunks.len() + 1);
                root.extend_from_slice(&chunks[..i]);
                if chunk.len() > CHUNK {
                    let (low, high) = chunk.split_at(chunk.len() / 2);
                    root.push(Arc::from(low));
                    root.push(Arc::from(high));
                } else {
                    root.push(Arc::from(chunk));
                }
                root.extend_from_slice(&chunks[i + 1..]);
                *chunks = Arc::from(root);
                *len += usize::from(grew);
            }
        }
    }

    /// Sets every `(key, value)` of `pairs` (later pairs win).
    pub fn insert_all(&mut self, pairs: impl IntoIterator<Item = (K, V)>) {
        let mut updates: Vec<(K, V)> = pairs.into_iter().collect();
        if updates.len() <= 1 {
            if let Some((key, value)) = updates.pop() {
                self.insert_mut(key, value);
            }
            return;
        }
        // A stable sort keeps repeated keys in input order; the last wins.
        updates.sort_by(|a, b| a.0.cmp(&b.0));
        updates.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        // One merge of two sorted runs into a fresh map.
        let mut merged = Vec::with_capacity(self.len() + updates.len());
        let mut old = self.iter().peekable();
        for update in updates {
            while let Some((k, v)) = old.next_if(|(k, _)| **k < update.0) {
                merged.push((k.clone(), v.clone()));
            }
            old.next_if(|(k, _)| **k == update.0);
            merged.push(update);
        }
        merged.extend(old.map(|(k, v)| (k.clone(), v.clone())));
        *self = Self::from_sorted(merged);
    }

    /// Removes `key` if present.
    pub fn remove_mut<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let without = |entries: &[(K, V)], i: usize| -> Vec<(K, V)> {
            let mut next = Vec::with_capacity(entries.len() - 1);
            next.extend_from_slice(&entries[..i]);
            next.extend_from_slice(&entries[i + 1..]);
            next
        };
        match self {
            SortedMap::Small(entries) => {
                if let Ok(i) = entries.binary_search_by(|(k, _)| k.borrow().cmp(key)) {
                    *entries = Arc::from(without(entries, i));
                }
            }
            SortedMap::Large { chunks, len } => {
                let c = Self::chunk_for(chunks, key);
                let Ok(i) = chunks[c].binary_search_by(|(k, _)| k.borrow().cmp(key)) else {
                    return;
                };
                let chunk = without(&chunks[c], i);
                let mut root: Vec<Run<K, V>> = Vec::with_capacity(chunks.len());
                root.extend_from_slice(&chunks[..c]);
                if !chunk.is_empty() {
                    root.push(Arc::from(chunk));
                }
                root.extend_from_slice(&chunks[c + 1..]);
                *len -= 1;
                if *len <= CHUNK / 2 {
                    let entries: Vec<(K, V)> =
                        root.iter().flat_map(|c| c.iter().cloned()).collect();
                    *self = SortedMap::Small(Arc::from(entries));
                } else {
                    *chunks = Arc::from(root);
                }
            }
        }
    }

    /// The entries in key order.
    #[must_use]
    pub fn iter(&self) -> Iter<'_, K, V> {
        match self {
            SortedMap::Small(entries) => Iter {
                current: entries.iter(),
                rest: [].iter(),
            },
            SortedMap::Large { chunks, .. } => Iter {
                current: [].iter(),
                rest: chunks.iter(),
            },
        }
    }
}

impl<K: Ord + Clone, V: Clone> Default for SortedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Iterator over a [`SortedMap`] in key order.
pub struct Iter<'a, K, V> {
    current: std::slice::Iter<'a, (K, V)>,
    rest: std::slice::Iter<'a, Run<K, V>>,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.current.next() {
                return Some((k, v));
            }
            self.current = self.rest.next()?.iter();
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
        let small: SortedMap<u32, ()> = (0..32).map(|i| (i, ())).collect();
        assert!(matches!(small, SortedMap::Small(_)));
        let mut grown = small.clone();
        grown.insert_mut(999, ());
        assert!(matches!(grown, SortedMap::Large { .. }));
        assert_eq!(small.len(), 32, "the original is untouched");
        let built: SortedMap<u32, ()> = (0..300).rev().map(|i| (i, ())).collect();
        assert!(matches!(built, SortedMap::Large { .. }));
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
        assert!(matches!(large, SortedMap::Large { .. }));
        for i in 10..200 {
            large.remove_mut(&i);
        }
        assert_eq!(small, large);
    }
}
