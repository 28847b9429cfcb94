//! A per-VM cache bounded in entries and bytes, with per-entry expiry.
//!
//! Eviction is oldest-inserted first (after dropping expired entries). A hot entry may be
//! evicted and paid for once more, but nothing a caller sends can make memory grow past the
//! bounds, and the bookkeeping is two collections, no linked lists.

use std::collections::{HashMap, VecDeque};

/// Cache keys are SHA-256 digests: fixed size, and no token or secret kept as a key.
pub type Key = [u8; 32];

pub fn key_of(parts: &[&[u8]]) -> Key {
    let mut h = hmac_sha256::Hash::new();
    for part in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize()
}

/// A short, non-reversible tag for logs: the first 8 hex digits of the SHA-256.
pub fn log_tag(secret_or_token: &str) -> String {
    let digest = hmac_sha256::Hash::hash(secret_or_token.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

struct Slot<V> {
    value: V,
    expires_ms: u64,
    bytes: usize,
    seq: u64,
}

pub struct BoundedCache<V> {
    map: HashMap<Key, Slot<V>>,
    order: VecDeque<(Key, u64)>,
    seq: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<V> BoundedCache<V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        BoundedCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    pub fn get(&self, key: &Key, now_ms: u64) -> Option<&V> {
        self.map
            .get(key)
            .filter(|s| s.expires_ms > now_ms)
            .map(|s| &s.value)
    }

    /// Inserts `value`, accounted as `bytes` large, until `expires_ms`.
    pub fn insert(&mut self, key: Key, value: V, bytes: usize, expires_ms: u64, now_ms: u64) {
        if bytes > self.max_bytes || self.max_entries == 0 || expires_ms <= now_ms {
            return;
        }
        self.remove(&key);
        self.seq += 1;
        self.map.insert(
            key,
            Slot {
                value,
                expires_ms,
                bytes,
                seq: self.seq,
            },
        );
        self.order.push_back((key, self.seq));
        self.bytes += bytes;
        self.evict(now_ms);
    }

    pub fn remove(&mut self, key: &Key) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.bytes -= slot.bytes;
        Some(slot.value)
    }

    fn evict(&mut self, now_ms: u64) {
        if self.over() {
            let expired: Vec<Key> = self
                .map
                .iter()
                .filter(|(_, s)| s.expires_ms <= now_ms)
                .map(|(k, _)| *k)
                .collect();
            for k in expired {
                self.remove(&k);
            }
        }
        while self.over() {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            // Entries replaced since leave stale order records behind; skip those.
            if self.map.get(&key).is_some_and(|s| s.seq == seq) {
                self.remove(&key);
            }
        }
        // Keep the order queue from growing with stale records.
        if self.order.len() > self.map.len().saturating_mul(2) + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, seq)| map.get(k).is_some_and(|s| s.seq == *seq));
        }
    }

    fn over(&self) -> bool {
        self.map.len() > self.max_entries || self.bytes > self.max_bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u32) -> Key {
        key_of(&[&i.to_be_bytes()])
    }

    #[test]
    fn expires() {
        let mut c = BoundedCache::new(10, 1000);
        c.insert(k(1), "a", 1, 100, 0);
        assert_eq!(c.get(&k(1), 99), Some(&"a"));
        assert_eq!(c.get(&k(1), 100), None);
    }

    #[test]
    fn bounded_in_entries_and_bytes_whatever_is_inserted() {
        let mut c = BoundedCache::new(100, 10_000);
        for i in 0..100_000u32 {
            c.insert(k(i), i, 150, u64::MAX, 0);
            assert!(c.len() <= 100 && c.bytes() <= 10_000);
        }
        assert_eq!(c.len(), 66);
        // The newest survive.
        assert_eq!(c.get(&k(99_999), 0), Some(&99_999));
        assert_eq!(c.get(&k(0), 0), None);
        assert!(c.order.len() <= 2 * 66 + 16 + 1);
    }

    #[test]
    fn replacing_keeps_accounting_right() {
        let mut c = BoundedCache::new(2, 100);
        for _ in 0..1000 {
            c.insert(k(1), 1, 40, u64::MAX, 0);
        }
        c.insert(k(2), 2, 40, u64::MAX, 0);
        assert_eq!((c.len(), c.bytes()), (2, 80));
        assert_eq!(c.get(&k(1), 0), Some(&1));
    }

    #[test]
    fn expired_entries_go_first() {
        let mut c = BoundedCache::new(2, 1000);
        c.insert(k(1), 1, 1, u64::MAX, 0);
        c.insert(k(2), 2, 1, 10, 0);
        c.insert(k(3), 3, 1, u64::MAX, 20);
        assert_eq!(c.get(&k(1), 20), Some(&1));
        assert_eq!(c.get(&k(3), 20), Some(&3));
    }

    #[test]
    fn oversized_or_dead_values_are_not_stored() {
        let mut c = BoundedCache::new(2, 10);
        c.insert(k(1), 1, 11, u64::MAX, 0);
        c.insert(k(2), 2, 1, 5, 5);
        assert!(c.is_empty());
    }

    #[test]
    fn keys_are_length_prefixed() {
        assert_ne!(key_of(&[b"ab", b"c"]), key_of(&[b"a", b"bc"]));
        assert_eq!(log_tag("token").len(), 8);
    }
}
