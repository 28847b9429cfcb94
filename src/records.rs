//! The shared-data layout: which key holds what, and the records every worker's VM reads
//! and writes there (proxy-wasm shared data, one store per VM group).
//!
//! Keys cannot be deleted from proxy-wasm shared data, so the layout is fixed: one record
//! for discovery, one for the key set, a fixed set of buckets for client tokens and another
//! for introspection answers (a token endpoint may issue opaque tokens), each bucket holding a few
//! entries, so that shared memory stays bounded however many distinct credentials and
//! tokens callers send.
//!
//! Those records live in one of [`SLOTS`] slots, named in an index record. A slot belongs to
//! an IdP identity (issuer, endpoints, token-request settings), not to a whole
//! configuration: a change of policy keeps its slot and what was fetched, and a change of
//! IdP takes the slot seen least recently. However often the configuration changes, the
//! store holds at most `1 + SLOTS * (2 + 2 * BUCKETS)` keys. Every record carries its owner, so
//! a configuration whose slot was taken reads nothing of the new owner's and takes the
//! slot back on its next write, rather than trusting another IdP's keys.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::cache::Key;
use crate::idp::Endpoints;
use crate::store::{self, FetchState, Fetched, SharedStore};

pub const BUCKETS: usize = 256;
pub const BUCKET_ENTRIES: usize = 8;
/// IdP identities whose records the store holds at once: live filter instances with
/// different IdPs, plus those a configuration change left behind.
pub const SLOTS: usize = 4;
const INDEX_KEY: &str = "oidcgate/slots";
/// How often a configuration says it is still alive, so its slot is not taken.
const HEARTBEAT_MS: u64 = 60_000;

/// What the token endpoint last said for one credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenValue {
    Issued {
        token: String,
        exp_ms: u64,
        refresh_at_ms: u64,
    },
    Rejected {
        until_ms: u64,
    },
}

/// What the introspection endpoint last said of one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnswerValue {
    /// Active, with its claims (a JSON object, parsed only by the VM that needs them), to
    /// be trusted until `until_ms`.
    Active {
        claims: String,
        until_ms: u64,
    },
    Inactive {
        until_ms: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BucketEntry<V> {
    id: String,
    state: Fetched<V>,
}

/// A few entries of one kind, by the hash of what they are for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "V: Deserialize<'de>"))]
pub struct Bucket<V = TokenValue> {
    owner: u64,
    entries: Vec<BucketEntry<V>>,
}

impl<V> Default for Bucket<V> {
    fn default() -> Self {
        Bucket {
            owner: 0,
            entries: Vec::new(),
        }
    }
}

/// A record stamped with the IdP identity it was written for.
pub trait Owned: Default {
    fn owner(&self) -> u64;
    /// Empties the record for `owner`.
    fn take_over(&mut self, owner: u64);
}

impl<V> Owned for Bucket<V> {
    fn owner(&self) -> u64 {
        self.owner
    }

    fn take_over(&mut self, owner: u64) {
        *self = Bucket {
            owner,
            entries: Vec::new(),
        };
    }
}

impl<T> Owned for Fetched<T> {
    fn owner(&self) -> u64 {
        self.owner
    }

    fn take_over(&mut self, owner: u64) {
        // The version keeps counting: a VM that parsed version n of the previous owner's
        // document must not take a new document numbered n for one it already has.
        *self = Fetched {
            owner,
            version: self.version.wrapping_add(1),
            ..Fetched::default()
        };
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SlotOwner {
    identity: u64,
    seen_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Index {
    slots: Vec<SlotOwner>,
}

impl<V> Bucket<V> {
    /// The entry for `key`; an empty one if the bucket does not hold it.
    pub fn entry(self, key: &Key) -> Fetched<V> {
        let id = entry_id(key);
        self.entries
            .into_iter()
            .find(|e| e.id == id)
            .map(|e| e.state)
            .unwrap_or_default()
    }

    /// Runs `f` on the entry for `key`, created if needed. A full bucket gives up the entry
    /// that matters least: one not being fetched, least recently fetched or tried.
    pub fn with_entry<R>(
        &mut self,
        key: &Key,
        now_ms: u64,
        f: impl FnOnce(&mut Fetched<V>) -> R,
    ) -> R {
        let id = entry_id(key);
        // In place when present, so that a run of `f` that changes nothing leaves the
        // bucket's bytes as they were (and unwritten).
        if let Some(entry) = self.entries.iter_mut().find(|e| e.id == id) {
            return f(&mut entry.state);
        }
        if self.entries.len() >= BUCKET_ENTRIES {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| {
                    (
                        e.state.state.is_busy(now_ms),
                        e.state.fetched_ms.max(e.state.state.attempt_ms),
                    )
                })
                .map(|(i, _)| i);
            if let Some(v) = victim {
                self.entries.swap_remove(v);
            }
        }
        let mut entry = BucketEntry {
            id,
            state: Fetched::default(),
        };
        let result = f(&mut entry.state);
        self.entries.push(entry);
        result
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn entry_id(key: &Key) -> String {
    key.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Where one IdP identity's records are.
#[derive(Debug, Clone)]
pub struct Layout {
    identity: u64,
    slot: usize,
    seen_ms: Option<u64>,
}

impl Layout {
    /// Until [`Layout::claim`] finds it a slot, the identity's records are looked for in
    /// the slot its hash points at.
    pub fn new(identity: u64) -> Layout {
        // 0 is the owner of records nobody stamped.
        let identity = identity.max(1);
        Layout {
            identity,
            slot: (identity % SLOTS as u64) as usize,
            seen_ms: None,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("oidcgate/{}/{name}", self.slot)
    }

    pub fn discovery(&self) -> String {
        self.key("discovery")
    }

    pub fn jwks(&self) -> String {
        self.key("jwks")
    }

    /// The bucket that holds the token entry for `key`.
    pub fn bucket(&self, key: &Key) -> String {
        self.bucket_at(usize::from(key[0]) % BUCKETS)
    }

    pub fn bucket_at(&self, index: usize) -> String {
        self.key(&format!("tokens/{index}"))
    }

    /// The bucket that holds the introspection answer for `key`.
    pub fn answer_bucket(&self, key: &Key) -> String {
        self.answer_bucket_at(usize::from(key[0]) % BUCKETS)
    }

    fn answer_bucket_at(&self, index: usize) -> String {
        self.key(&format!("introspection/{index}"))
    }

    /// Takes a slot for this identity (its own if it has one, else a free one, else the one
    /// seen least recently) and creates every key of it (Envoy cannot create a key
    /// atomically). Call at configure time.
    pub fn claim(&mut self, store: &mut dyn SharedStore, now_ms: u64) {
        store::ensure::<Index>(store, INDEX_KEY);
        let identity = self.identity;
        let slot = store::update(store, INDEX_KEY, |index: &mut Index| {
            index.slots.truncate(SLOTS);
            let slot = match index.slots.iter().position(|s| s.identity == identity) {
                Some(own) => own,
                None if index.slots.len() < SLOTS => {
                    index.slots.push(SlotOwner::default());
                    index.slots.len() - 1
                }
                None => index
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.seen_ms)
                    .map_or(0, |(i, _)| i),
            };
            if let Some(s) = index.slots.get_mut(slot) {
                *s = SlotOwner {
                    identity,
                    seen_ms: now_ms,
                };
            }
            slot
        });
        // A store that keeps refusing leaves the slot the hash points at; the owner stamps
        // still keep identities apart.
        let moved = slot.is_some_and(|slot| slot != self.slot);
        if let Some(slot) = slot {
            self.slot = slot;
        }
        let first = self.seen_ms.is_none();
        self.seen_ms = Some(now_ms);
        if !first && !moved {
            return;
        }
        store::ensure::<Fetched<Endpoints>>(store, &self.discovery());
        store::ensure::<Fetched<String>>(store, &self.jwks());
        for i in 0..BUCKETS {
            store::ensure::<Bucket>(store, &self.bucket_at(i));
            store::ensure::<Bucket<AnswerValue>>(store, &self.answer_bucket_at(i));
        }
    }

    /// Keeps this identity's slot from looking abandoned; takes one again if it was lost.
    pub fn heartbeat(&mut self, store: &mut dyn SharedStore, now_ms: u64) {
        if self
            .seen_ms
            .is_some_and(|seen| now_ms.saturating_sub(seen) < HEARTBEAT_MS)
        {
            return;
        }
        self.claim(store, now_ms);
    }

    /// Reads a record of this identity's; another identity's reads as empty.
    pub fn read<T: Owned + DeserializeOwned>(&self, store: &dyn SharedStore, key: &str) -> T {
        self.read_if_changed(store, key, None)
            .map(|(t, _)| t)
            .unwrap_or_default()
    }

    /// [`Layout::read`] and the record's CAS, or `None` (nothing parsed) while the CAS is
    /// `seen` ([`store::read_if_changed`]).
    pub fn read_if_changed<T: Owned + DeserializeOwned>(
        &self,
        store: &dyn SharedStore,
        key: &str,
        seen: Option<u32>,
    ) -> Option<(T, u32)> {
        let (record, cas): (T, u32) = store::read_if_changed(store, key, seen)?;
        if record.owner() == self.identity {
            Some((record, cas))
        } else {
            Some((T::default(), cas))
        }
    }

    /// Read-modify-write of a record of this identity's ([`store::update`]); another
    /// identity's record is emptied and taken over first.
    pub fn update<T, R>(
        &self,
        store: &mut dyn SharedStore,
        key: &str,
        mut f: impl FnMut(&mut T) -> R,
    ) -> Option<R>
    where
        T: Owned + Serialize + DeserializeOwned,
    {
        store::update(store, key, |record: &mut T| {
            if record.owner() != self.identity {
                record.take_over(self.identity);
            }
            f(record)
        })
    }

    /// The fetch state of the token entry for `key`.
    pub fn token_entry(&self, store: &dyn SharedStore, key: &Key) -> Fetched<TokenValue> {
        self.read::<Bucket>(store, &self.bucket(key)).entry(key)
    }

    /// The introspection answer for the token hashed to `key`, and its fetch state.
    pub fn answer_entry(&self, store: &dyn SharedStore, key: &Key) -> Fetched<AnswerValue> {
        self.read::<Bucket<AnswerValue>>(store, &self.answer_bucket(key))
            .entry(key)
    }

    /// Runs `f` on the fetch state of a record holding one document, whatever its type.
    pub fn update_document_state<R>(
        &self,
        store: &mut dyn SharedStore,
        key: &str,
        mut f: impl FnMut(&mut FetchState) -> R,
    ) -> Option<R> {
        // The document is carried as the bytes it was stored as, not re-parsed.
        self.update(store, key, |r: &mut Fetched<Box<RawValue>>| f(&mut r.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn claimed(store: &mut MemStore, identity: u64, now_ms: u64) -> Layout {
        let mut layout = Layout::new(identity);
        layout.claim(store, now_ms);
        layout
    }

    #[test]
    fn an_identity_keeps_its_slot_and_a_new_one_takes_the_least_recently_seen() {
        let mut store = MemStore::default();
        let slots: Vec<usize> = (1..=SLOTS as u64)
            .map(|id| claimed(&mut store, id, id).slot)
            .collect();
        assert_eq!(slots, (0..SLOTS).collect::<Vec<_>>());
        assert_eq!(claimed(&mut store, 3, 100).slot, 2);
        // Identity 2 stays alive (a heartbeat); identity 1 went quiet at 1: its slot goes.
        let mut two = claimed(&mut store, 2, 100);
        two.heartbeat(&mut store, 100 + HEARTBEAT_MS);
        assert_eq!(claimed(&mut store, 99, 200 + HEARTBEAT_MS).slot, 0);
        assert_eq!(claimed(&mut store, 100, 300 + HEARTBEAT_MS).slot, 3);
        // 1 comes back and takes the slot seen least recently (3's, seen at 100).
        assert_eq!(claimed(&mut store, 1, 400 + HEARTBEAT_MS).slot, 2);
    }

    #[test]
    fn an_identity_never_reads_what_another_wrote_in_its_slot() {
        let mut store = MemStore::default();
        let a = claimed(&mut store, 7, 0);
        let mut b = Layout::new(8);
        b.slot = a.slot;
        let key = a.jwks();
        b.update(&mut store, &key, |r: &mut Fetched<String>| {
            r.succeed("b's keys".into(), 1)
        });
        let seen: Fetched<String> = a.read(&store, &key);
        assert_eq!(seen.value, None);
        // a's next write takes the record back, with a version b never saw for it.
        let version = a.update(&mut store, &key, |r: &mut Fetched<String>| {
            r.succeed("a's keys".into(), 2);
            r.version
        });
        assert_eq!(version, Some(4));
        assert_eq!(b.read::<Fetched<String>>(&store, &key).value, None);
        assert_eq!(
            a.read::<Fetched<String>>(&store, &key).value.as_deref(),
            Some("a's keys")
        );
        let bucket = a.bucket_at(0);
        b.update(&mut store, &bucket, |r: &mut Bucket| {
            r.with_entry(&[0; 32], 1, |e| {
                e.succeed(TokenValue::Rejected { until_ms: 9 }, 1)
            })
        });
        assert!(a.read::<Bucket>(&store, &bucket).is_empty());
    }

    #[test]
    fn however_often_the_idp_changes_the_store_holds_a_fixed_set_of_keys() {
        let mut store = MemStore::default();
        for identity in 1..=50 {
            claimed(&mut store, identity, identity);
        }
        assert_eq!(store.len(), 1 + SLOTS * (2 + 2 * BUCKETS));
    }
}
