//! A per-VM cache bounded in entries and bytes, with per-entry expiry.
//!
//! Eviction is oldest-inserted first; expired entries are dropped by a periodic
//! [`BoundedCache::purge_expired`], never by a scan on the request path. A hot entry may be
//! evicted and paid for once more, but nothing a caller sends can make memory grow past the
//! bounds, and the bookkeeping is two collections, no linked lists.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::rc::Rc;

/// A SHA-256 digest, for keys that hold a secret: fixed size, the secret not kept.
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

/// A token the IdP vouched for (its signature verified, or introspection called it active)
/// as a cache key. Hashed by its length and last 32 bytes only: those bytes are its
/// signature (or the IdP's choice), so they differ between tokens, and since only such
/// tokens are stored, no caller can pile entries onto one hash. Hashing a whole 1 KB token
/// (SHA-256 was used before) cost more in V8 than all the rest of a cache hit. Equality
/// compares the whole token, 32 bytes at a time: wasi-libc's `memcmp` goes byte by byte, a
/// microsecond for a 1 KB token in V8.
#[derive(Clone, Debug)]
pub struct TokenKey(pub Rc<str>);

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let bytes = self.0.as_bytes();
        state.write_usize(bytes.len());
        state.write(bytes.get(bytes.len().saturating_sub(32)..).unwrap_or(bytes));
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &TokenKey) -> bool {
        same_bytes(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for TokenKey {}

/// `a == b`, compared in 32-byte blocks the compiler turns into word compares.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (blocks_a, rest_a) = a.as_chunks::<32>();
    let (blocks_b, rest_b) = b.as_chunks::<32>();
    blocks_a.iter().zip(blocks_b).all(|(x, y)| x == y) && rest_a == rest_b
}

/// The hasher of maps keyed on [`TokenKey`]: a multiply-and-rotate fold of 8-byte words
/// (FxHash's, with rustc-hash 2's final rotation for hashbrown's low index bits), where
/// SipHash's keyed rounds cost a cached request ~270 instructions. Unkeyed is safe here for
/// the reason above: a caller can make lookups collide, but only the IdP's tokens are
/// inserted, so no chain grows.
#[derive(Clone, Copy, Default)]
pub struct TokenHashing;

impl BuildHasher for TokenHashing {
    type Hasher = Fold;
    fn build_hasher(&self) -> Fold {
        Fold(0)
    }
}

pub struct Fold(u64);

impl Fold {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

impl Hasher for Fold {
    fn write(&mut self, bytes: &[u8]) {
        let (words, rest) = bytes.as_chunks::<8>();
        for word in words {
            self.add(u64::from_le_bytes(*word));
        }
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            if let Some(head) = last.get_mut(..rest.len()) {
                head.copy_from_slice(rest);
            }
            self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

struct Slot<V> {
    value: V,
    expires_ms: u64,
    bytes: usize,
    seq: u64,
}

pub struct BoundedCache<K, V, S = RandomState> {
    map: HashMap<K, Slot<V>, S>,
    order: VecDeque<(K, u64)>,
    seq: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<K: Hash + Eq + Clone, V, S: BuildHasher + Default> BoundedCache<K, V, S> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        BoundedCache {
            map: HashMap::default(),
            order: VecDeque::new(),
            seq: 0,
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    pub fn get<Q>(&self, key: &Q, now_ms: u64) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .get(key)
            .filter(|s| s.expires_ms > now_ms)
            .map(|s| &s.value)
    }

    /// Inserts `value`, accounted as `bytes` large, until `expires_ms`.
    pub fn insert(&mut self, key: K, value: V, bytes: usize, expires_ms: u64, now_ms: u64) {
        if bytes > self.max_bytes || self.max_entries == 0 || expires_ms <= now_ms {
            return;
        }
        self.remove(&key);
        self.seq += 1;
        self.map.insert(
            key.clone(),
            Slot {
                value,
                expires_ms,
                bytes,
                seq: self.seq,
            },
        );
        self.order.push_back((key, self.seq));
        self.bytes += bytes;
        self.evict();
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.map.remove(key)?;
        self.bytes -= slot.bytes;
        Some(slot.value)
    }

    /// Drops every expired entry: a walk over all of them, for a timer, not a request.
    pub fn purge_expired(&mut self, now_ms: u64) {
        let before = self.map.len();
        let mut freed = 0;
        self.map.retain(|_, s| {
            let keep = s.expires_ms > now_ms;
            if !keep {
                freed += s.bytes;
            }
            keep
        });
        self.bytes -= freed;
        if self.map.len() != before {
            self.compact_order();
        }
    }

    fn evict(&mut self) {
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
            self.compact_order();
        }
    }

    fn compact_order(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(k, seq)| map.get(k).is_some_and(|s| s.seq == *seq));
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

    type Cache<V> = BoundedCache<Key, V>;

    fn token_hash(token: &str) -> u64 {
        TokenHashing.hash_one(TokenKey(token.into()))
    }

    #[test]
    fn token_hashes_spread_signature_tails_over_the_low_bits_hashbrown_indexes_by() {
        // Tokens that differ only in their signature, as a key set's tokens do.
        let tails: Vec<String> = (0u32..4096)
            .map(|i| {
                let sig = crate::cache::key_of(&[&i.to_be_bytes()]);
                let b64 = sig.iter().map(|b| format!("{b:02x}")).collect::<String>();
                format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.{b64}")
            })
            .collect();
        let mut low: Vec<u64> = tails.iter().map(|t| token_hash(t) & 0xfff).collect();
        low.sort_unstable();
        low.dedup();
        // 4096 random values in 4096 buckets fill ~63% of them.
        assert!(low.len() > 2400, "{} of 4096 buckets", low.len());
        // One byte apart, or one byte longer: different hashes.
        assert_ne!(token_hash("a.b.cdefgh"), token_hash("a.b.cdefgi"));
        assert_ne!(token_hash("a.b.cdefgh"), token_hash("a.b.cdefgh\0"));
    }

    #[test]
    fn expires() {
        let mut c = Cache::new(10, 1000);
        c.insert(k(1), "a", 1, 100, 0);
        assert_eq!(c.get(&k(1), 99), Some(&"a"));
        assert_eq!(c.get(&k(1), 100), None);
    }

    #[test]
    fn bounded_in_entries_and_bytes_whatever_is_inserted() {
        let mut c = Cache::new(100, 10_000);
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
        let mut c = Cache::new(2, 100);
        for _ in 0..1000 {
            c.insert(k(1), 1, 40, u64::MAX, 0);
        }
        c.insert(k(2), 2, 40, u64::MAX, 0);
        assert_eq!((c.len(), c.bytes()), (2, 80));
        assert_eq!(c.get(&k(1), 0), Some(&1));
    }

    #[test]
    fn purging_drops_the_expired_and_frees_their_room() {
        let mut c = Cache::new(2, 1000);
        c.insert(k(1), 1, 100, u64::MAX, 0);
        c.insert(k(2), 2, 200, 10, 0);
        c.purge_expired(20);
        assert_eq!((c.len(), c.bytes()), (1, 100));
        c.insert(k(3), 3, 1, u64::MAX, 20);
        assert_eq!(c.get(&k(1), 20), Some(&1));
        assert_eq!(c.get(&k(3), 20), Some(&3));
        assert!(c.order.len() <= 3);
    }

    #[test]
    fn token_keys_compare_whole_though_hashed_by_their_tail() {
        let mut c: BoundedCache<TokenKey, u32> = BoundedCache::new(10, 1000);
        let key = |s: &str| TokenKey(s.into());
        let tail = "x".repeat(40);
        let a = key(&format!("a.{tail}"));
        let b = key(&format!("b.{tail}"));
        c.insert(a.clone(), 1, 1, u64::MAX, 0);
        assert_eq!(c.get(&a, 0), Some(&1));
        assert_eq!(c.get(&b, 0), None);
        c.insert(b, 2, 1, u64::MAX, 0);
        assert_eq!(c.get(&key(&format!("b.{tail}")), 0), Some(&2));
        assert_eq!(c.get(&key("short"), 0), None);
    }

    #[test]
    fn token_keys_differ_in_any_byte_of_any_block() {
        let base: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
        let text = |b: &[u8]| TokenKey(String::from_utf8(b.to_vec()).unwrap().into());
        for i in 0..base.len() {
            let mut other = base.clone();
            other[i] = b'.';
            assert_ne!(text(&base), text(&other), "byte {i}");
        }
        assert_eq!(text(&base), text(&base.clone()));
        assert_ne!(text(&base), text(&base[..99]));
        assert_eq!(text(b""), text(b""));
    }

    #[test]
    fn oversized_or_dead_values_are_not_stored() {
        let mut c = Cache::new(2, 10);
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
