//! The shared-data layout: which key holds what, and the records every worker's VM reads
//! and writes there (proxy-wasm shared data, one store per VM group).
//!
//! Keys cannot be deleted from proxy-wasm shared data, so the layout is fixed at configure
//! time: one record for discovery, one for the key set, and a fixed set of buckets for
//! client tokens, each holding a few entries, so that shared memory stays bounded however
//! many distinct credentials callers send.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::cache::Key;
use crate::idp::Endpoints;
use crate::store::{self, FetchState, Fetched, SharedStore};

pub const BUCKETS: usize = 256;
pub const BUCKET_ENTRIES: usize = 8;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BucketEntry {
    id: String,
    state: Fetched<TokenValue>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Bucket {
    entries: Vec<BucketEntry>,
}

impl Bucket {
    /// The entry for `key`; an empty one if the bucket does not hold it.
    pub fn entry(self, key: &Key) -> Fetched<TokenValue> {
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
        f: impl FnOnce(&mut Fetched<TokenValue>) -> R,
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

/// The keys of one configuration's records.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(fingerprint: &str) -> Layout {
        Layout {
            prefix: format!("oidcgate/{fingerprint}"),
        }
    }

    pub fn discovery(&self) -> String {
        format!("{}/discovery", self.prefix)
    }

    pub fn jwks(&self) -> String {
        format!("{}/jwks", self.prefix)
    }

    /// The bucket that holds the token entry for `key`.
    pub fn bucket(&self, key: &Key) -> String {
        self.bucket_at(usize::from(key[0]) % BUCKETS)
    }

    pub fn bucket_at(&self, index: usize) -> String {
        format!("{}/tokens/{index}", self.prefix)
    }

    /// Creates every key (Envoy cannot create a key atomically). Call at configure time.
    pub fn init(&self, store: &mut dyn SharedStore) {
        store::ensure::<Fetched<Endpoints>>(store, &self.discovery());
        store::ensure::<Fetched<String>>(store, &self.jwks());
        for i in 0..BUCKETS {
            store::ensure::<Bucket>(store, &self.bucket_at(i));
        }
    }

    /// The fetch state of the token entry for `key`.
    pub fn token_entry(&self, store: &dyn SharedStore, key: &Key) -> Fetched<TokenValue> {
        store::read::<Bucket>(store, &self.bucket(key)).entry(key)
    }

    /// Runs `f` on the fetch state of a record holding one document, whatever its type.
    pub fn update_document_state<R>(
        &self,
        store: &mut dyn SharedStore,
        key: &str,
        mut f: impl FnMut(&mut FetchState) -> R,
    ) -> Option<R> {
        // The document is carried as the bytes it was stored as, not re-parsed.
        store::update(store, key, |r: &mut Fetched<Box<RawValue>>| f(&mut r.state))
    }
}
