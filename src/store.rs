//! State shared by every worker's VM, kept in the host's shared data (proxy-wasm
//! `get/set_shared_data` with compare-and-swap).
//!
//! Each record says what was fetched last, whether a fetch is in flight and whether fetching
//! is backing off after failures. The CAS on a record is what makes "one fetch for all
//! workers" hold. Envoy cannot create a key atomically (a write to a missing key ignores the
//! CAS), so every key is created up front by [`ensure`] at configure time, before traffic.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The host's shared key-value store.
pub trait SharedStore {
    /// The value and its CAS token, or `None` when the key does not exist.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes when `cas` still matches (0: unconditionally). False on a CAS mismatch or any
    /// host error.
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool;
}

/// How often a read-modify-write is retried against concurrent writers.
const CAS_RETRIES: usize = 16;

/// Reads a record; a missing or unreadable one reads as the default (nothing fetched yet).
pub fn read<T: DeserializeOwned + Default>(store: &dyn SharedStore, key: &str) -> T {
    read_if_changed(store, key, None)
        .map(|(t, _)| t)
        .unwrap_or_default()
}

/// [`read`] with the record's CAS token (0 when the key does not exist), or `None` without
/// parsing when the CAS is `seen`: the record is the one the caller read last. A CAS of 0
/// (a host without CAS) never counts as seen.
pub fn read_if_changed<T: DeserializeOwned + Default>(
    store: &dyn SharedStore,
    key: &str,
    seen: Option<u32>,
) -> Option<(T, u32)> {
    match store.get(key) {
        Some((_, cas)) if cas != 0 && seen == Some(cas) => None,
        Some((bytes, cas)) => Some((serde_json::from_slice(&bytes).unwrap_or_default(), cas)),
        None => Some((T::default(), 0)),
    }
}

/// Read-modify-write with CAS. `f` may run several times; the result of the run whose write
/// landed is returned, or `None` when the store kept refusing. A record `f` left as it was
/// is not written back: every worker re-reads a record whose CAS moved.
pub fn update<T, R>(
    store: &mut dyn SharedStore,
    key: &str,
    mut f: impl FnMut(&mut T) -> R,
) -> Option<R>
where
    T: Serialize + DeserializeOwned + Default,
{
    for _ in 0..CAS_RETRIES {
        let (mut record, cas, before) = match store.get(key) {
            Some((bytes, cas)) => (
                serde_json::from_slice(&bytes).unwrap_or_default(),
                cas,
                bytes,
            ),
            None => (T::default(), 0, Vec::new()),
        };
        let result = f(&mut record);
        let bytes = serde_json::to_vec(&record).ok()?;
        if cas != 0 && bytes == before {
            return Some(result);
        }
        if store.set(key, &bytes, cas) {
            return Some(result);
        }
    }
    None
}

/// Creates `key` with an empty record if it does not exist yet.
pub fn ensure<T: Serialize + Default>(store: &mut dyn SharedStore, key: &str) {
    if store.get(key).is_none() {
        if let Ok(bytes) = serde_json::to_vec(&T::default()) {
            store.set(key, &bytes, 0);
        }
    }
}

/// A fetched document, and the state of fetching it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fetched<T> {
    /// The IdP identity the record was written for (see `records`); 0 inside a bucket.
    #[serde(skip_serializing_if = "is_zero")]
    pub owner: u64,
    pub value: Option<T>,
    /// Bumped when a fetch brings a different value, so a VM knows when to re-parse.
    pub version: u64,
    pub fetched_ms: u64,
    pub state: FetchState,
}

impl<T> Default for Fetched<T> {
    fn default() -> Self {
        Fetched {
            owner: 0,
            value: None,
            version: 0,
            fetched_ms: 0,
            state: FetchState::default(),
        }
    }
}

impl<T: PartialEq> Fetched<T> {
    pub fn succeed(&mut self, value: T, now_ms: u64) {
        if self.value.as_ref() != Some(&value) {
            self.value = Some(value);
            self.version += 1;
        }
        self.fetched_ms = now_ms;
        self.state.succeed(now_ms);
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whether a fetch is in flight, when the last one ended, and the backoff after failures:
/// the same for every kind of record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FetchState {
    /// When the last fetch of any outcome started.
    pub attempt_ms: u64,
    /// When the last fetch got an answer, good or bad. A fetch whose sender went away
    /// does not count: nobody can use up a refetch allowance by abandoning fetches.
    pub completed_ms: u64,
    /// A fetch is in flight until then; after that a stalled fetcher is presumed gone.
    pub busy_until_ms: u64,
    pub failures: u32,
    pub retry_at_ms: u64,
}

/// What a caller that needs a fetch should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the fetch now.
    Acquired,
    /// Another worker is fetching.
    Busy,
    /// Fetching failed recently; no new attempt before this time.
    BackingOff { retry_at_ms: u64 },
}

/// Backoff after `failures` consecutive failures: 1 s doubling to 30 s.
pub fn backoff_ms(failures: u32) -> u64 {
    let exp = failures.saturating_sub(1).min(5);
    (1000u64 << exp).min(30_000)
}

impl FetchState {
    pub fn is_busy(&self, now_ms: u64) -> bool {
        self.busy_until_ms > now_ms
    }

    /// Tries to become the fetcher. `lock_ms` bounds how long others wait for us.
    pub fn claim(&mut self, now_ms: u64, lock_ms: u64) -> Claim {
        if self.is_busy(now_ms) {
            return Claim::Busy;
        }
        if self.retry_at_ms > now_ms {
            return Claim::BackingOff {
                retry_at_ms: self.retry_at_ms,
            };
        }
        self.attempt_ms = now_ms;
        self.busy_until_ms = now_ms.saturating_add(lock_ms);
        Claim::Acquired
    }

    fn succeed(&mut self, now_ms: u64) {
        self.completed_ms = now_ms;
        self.busy_until_ms = 0;
        self.failures = 0;
        self.retry_at_ms = 0;
    }

    pub fn fail(&mut self, now_ms: u64) {
        self.completed_ms = now_ms;
        self.busy_until_ms = 0;
        self.failures = self.failures.saturating_add(1);
        self.retry_at_ms = now_ms.saturating_add(backoff_ms(self.failures));
    }

    /// The fetcher went away without an answer: let the next one in at once.
    pub fn release(&mut self) {
        self.busy_until_ms = 0;
    }
}

/// An in-memory store with Envoy's semantics (including the non-atomic create), for tests
/// and for running the core natively.
#[derive(Default)]
pub struct MemStore {
    map: std::collections::HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl MemStore {
    /// How many keys exist.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every key and its value.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.map
            .iter()
            .map(|(k, (v, _))| (k.as_str(), v.as_slice()))
    }
}

impl SharedStore for MemStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.map.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        if let Some((_, current)) = self.map.get(key) {
            if cas != 0 && cas != *current {
                return false;
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.map
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_read_at_the_cas_seen_is_not_read_again() {
        let mut store = MemStore::default();
        assert_eq!(
            read_if_changed::<Fetched<String>>(&store, "k", Some(0)).map(|r| r.1),
            Some(0)
        );
        ensure::<Fetched<String>>(&mut store, "k");
        let (_, cas) = read_if_changed::<Fetched<String>>(&store, "k", None).unwrap();
        assert!(read_if_changed::<Fetched<String>>(&store, "k", Some(cas)).is_none());
        update(&mut store, "k", |r: &mut Fetched<String>| {
            r.succeed("v".into(), 1)
        });
        let (record, next) = read_if_changed::<Fetched<String>>(&store, "k", Some(cas)).unwrap();
        assert_ne!(next, cas);
        assert_eq!(record.value.as_deref(), Some("v"));
    }

    #[test]
    fn only_one_claimant_while_busy() {
        let mut store = MemStore::default();
        ensure::<Fetched<String>>(&mut store, "k");
        let first = update(&mut store, "k", |r: &mut Fetched<String>| {
            r.state.claim(100, 50)
        });
        let second = update(&mut store, "k", |r: &mut Fetched<String>| {
            r.state.claim(120, 50)
        });
        assert_eq!((first, second), (Some(Claim::Acquired), Some(Claim::Busy)));
        // A stalled fetcher is taken over after its lock lapses.
        let third = update(&mut store, "k", |r: &mut Fetched<String>| {
            r.state.claim(151, 50)
        });
        assert_eq!(third, Some(Claim::Acquired));
    }

    #[test]
    fn failures_back_off_and_success_resets() {
        let mut r = Fetched::<u8>::default();
        assert_eq!(r.state.claim(0, 10), Claim::Acquired);
        r.state.fail(5);
        assert_eq!(
            r.state.claim(6, 10),
            Claim::BackingOff { retry_at_ms: 1005 }
        );
        assert_eq!(r.state.claim(1005, 10), Claim::Acquired);
        r.state.fail(1006);
        assert_eq!(r.state.retry_at_ms, 3006);
        assert_eq!(r.state.claim(3006, 10), Claim::Acquired);
        r.succeed(7, 3010);
        assert_eq!(
            (r.value, r.version, r.state.failures, r.state.retry_at_ms),
            (Some(7), 1, 0, 0)
        );
        // The same value again is not a new version: nobody re-parses it.
        r.succeed(7, 4000);
        assert_eq!(
            (r.version, r.fetched_ms, r.state.completed_ms),
            (1, 4000, 4000)
        );
        r.succeed(8, 5000);
        assert_eq!(r.version, 2);
        assert_eq!(backoff_ms(100), 30_000);
    }

    #[test]
    fn an_unchanged_record_is_not_written_back() {
        let mut store = MemStore::default();
        ensure::<Fetched<String>>(&mut store, "k");
        let (_, cas) = store.get("k").unwrap();
        let busy = update(&mut store, "k", |r: &mut Fetched<String>| {
            r.state.is_busy(0)
        });
        assert_eq!(busy, Some(false));
        assert_eq!(store.get("k").unwrap().1, cas);
        update(&mut store, "k", |r: &mut Fetched<String>| {
            r.state.claim(1, 1)
        });
        assert_ne!(store.get("k").unwrap().1, cas);
    }

    #[test]
    fn stale_cas_is_refused() {
        let mut store = MemStore::default();
        assert!(store.set("k", b"1", 0));
        let (_, cas) = store.get("k").unwrap();
        assert!(store.set("k", b"2", cas));
        assert!(!store.set("k", b"3", cas));
        assert_eq!(store.get("k").unwrap().0, b"2");
    }

    #[test]
    fn unreadable_records_read_as_empty() {
        let mut store = MemStore::default();
        store.set("k", b"not json", 0);
        let r: Fetched<String> = read(&store, "k");
        assert_eq!(r, Fetched::default());
        let claimed = update(&mut store, "k", |r: &mut Fetched<String>| {
            r.state.claim(1, 1)
        });
        assert_eq!(claimed, Some(Claim::Acquired));
    }
}
