//! [`BoundedCache`]: values by key, bounded by the bytes each is said to take (the size of a
//! profile's JSON). `serve`'s hot profiles ([`super::Profiles`]) and `kafkabox handle`'s typed
//! profiles are kept in one.

use std::collections::HashMap;

/// Values by key with the bytes each takes, at most about `cap` bytes once
/// [`BoundedCache::evict`] has run: over `cap`, it drops some half of the values, down to
/// `cap / 2`.
#[derive(Debug)]
pub struct BoundedCache<V> {
    map: HashMap<String, (V, usize)>,
    bytes: usize,
    cap: usize,
}

impl<V> BoundedCache<V> {
    pub fn new(cap: usize) -> BoundedCache<V> {
        BoundedCache {
            map: HashMap::new(),
            bytes: 0,
            cap,
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    /// The value of `key`, to change; [`BoundedCache::set_size`] then says how big it is.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    /// Keeps `value` under `key`, taking `size` bytes (in place of any value there was).
    pub fn insert(&mut self, key: String, value: V, size: usize) {
        if let Some((_, old)) = self.map.insert(key, (value, size)) {
            self.bytes = self.bytes.saturating_sub(old);
        }
        self.bytes += size;
    }

    /// Sets the bytes the value of `key` takes (after it changed).
    pub fn set_size(&mut self, key: &str, size: usize) {
        if let Some((_, old)) = self.map.get_mut(key) {
            self.bytes = self.bytes + size - (*old).min(self.bytes);
            *old = size;
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let (v, size) = self.map.remove(key)?;
        self.bytes = self.bytes.saturating_sub(size);
        Some(v)
    }

    /// Keeps only the values for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.map.retain(|_, (v, _)| keep(v));
        self.bytes = self.map.values().map(|(_, s)| *s).sum();
    }

    /// When over the bound, drops values (not those whose key `keep` holds) until at most
    /// half of it is left, or some half of them are gone.
    pub fn evict(&mut self, keep: impl Fn(&str) -> bool) {
        if self.bytes <= self.cap {
            return;
        }
        let victims: Vec<String> = self
            .map
            .keys()
            .filter(|k| !keep(k.as_str()))
            .take(self.map.len() / 2 + 1)
            .cloned()
            .collect();
        for k in victims {
            self.remove(&k);
            if self.bytes <= self.cap / 2 {
                break;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bytes of every value kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::BoundedCache;

    #[test]
    fn stays_within_its_bound_and_keeps_what_it_is_told() {
        let mut c = BoundedCache::new(100);
        for i in 0..10 {
            c.insert(format!("k{i}"), i, 10);
        }
        assert_eq!(c.bytes(), 100);
        c.evict(|_| false);
        assert_eq!(c.len(), 10, "at the bound: nothing dropped");
        c.insert("k0".to_string(), 0, 30);
        assert_eq!(c.bytes(), 120, "a new size replaces the old");
        c.evict(|k| k == "k0");
        assert!(c.bytes() <= 60 || c.len() < 10);
        assert!(c.contains_key("k0"), "kept");
        c.set_size("k0", 5);
        assert_eq!(c.remove("k0"), Some(0));
        c.retain(|v| *v % 2 == 0);
        assert_eq!(c.bytes(), 10 * c.len());
    }
}
