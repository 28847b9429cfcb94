//! Exchanging a caller's client credentials for a token: the token endpoint's answers are
//! shared by every worker (in the shared buckets of `records`), each VM keeps its own copy
//! of the tokens it serves, and tokens are refreshed in the background before they expire.

use std::rc::Rc;

use crate::cache::{key_of, BoundedCache, Key};
use crate::config::{Accept, Config, IdpSettings};
use crate::credentials::ClientCredentials;
use crate::fetch::{Applied, Ask, Fetch, Fetcher, Look, Resource, Step};
use crate::idp::{self, TokenAnswer};
use crate::outcome::Denial;
use crate::records::{Bucket, TokenValue};
use crate::store::SharedStore;

/// A token that lives less than this is not cached: each request exchanges anew.
const MIN_CACHED_LIFETIME_MS: u64 = 2_000;
pub(crate) const TOKEN_ENTRIES: usize = 1024;
const TOKEN_BYTES: usize = 4 << 20;
const MAX_REFRESH_QUEUE: usize = 64;

/// How long before `exp` a token stops being handed out, so that it does not expire on its
/// way to the upstream: a twentieth of its life, between 0.25 s and 10 s.
pub(crate) fn expiry_margin_ms(lifetime_ms: u64) -> u64 {
    (lifetime_ms / 20).clamp(250, 10_000)
}

/// How long before `exp` a token is refreshed: a tenth of its life, at most 5 minutes, and
/// at least the expiry margin plus a second, for the request that finds it due and the
/// token endpoint's answer to come before the copy in use is dropped. A token of any
/// lifetime is so fetched about once per lifetime, and no request waits for the refresh.
pub(crate) fn refresh_lead_ms(lifetime_ms: u64) -> u64 {
    (lifetime_ms / 10)
        .max(expiry_margin_ms(lifetime_ms) + 1_000)
        .min(300_000)
}

#[derive(Clone)]
struct LocalToken {
    token: Rc<str>,
    refresh_at_ms: u64,
}

/// What a client's credentials come to now.
#[derive(Debug)]
pub enum Exchange {
    /// A token to verify and serve.
    Token(Rc<str>),
    Step(Step),
}

pub struct ClientTokens {
    /// This VM's copy of the shared entries, per credential hash.
    local: BoundedCache<Key, LocalToken>,
    /// The credential hash per credential: a SHA-256 costs more in V8 than the rest of a
    /// cached client's request, so it is computed once per credential, not per request.
    keys: BoundedCache<ClientCredentials, Key>,
    refresh: Vec<(Key, ClientCredentials)>,
    /// Whether this VM said that the IdP's tokens live too briefly to cache.
    warned_short: bool,
    /// Monotonic. A miss is a request that found no usable copy in this VM when it arrived
    /// (re-asking a waiting request counts nothing more).
    pub hits: u64,
    pub misses: u64,
}

impl ClientTokens {
    pub fn new() -> ClientTokens {
        ClientTokens {
            local: BoundedCache::new(TOKEN_ENTRIES, TOKEN_BYTES),
            keys: BoundedCache::new(TOKEN_ENTRIES, TOKEN_BYTES),
            refresh: Vec::new(),
            warned_short: false,
            hits: 0,
            misses: 0,
        }
    }

    /// The token for `client`, or what to do to get one. Without caching, only a token
    /// fetched for (or while) the request may serve it.
    pub fn exchange(
        &mut self,
        store: &mut dyn SharedStore,
        fetcher: &mut Fetcher,
        config: &Config,
        client: &ClientCredentials,
        look: Look,
        now_ms: u64,
    ) -> Exchange {
        let idp = &config.idp;
        let key = self.key(idp, client, now_ms);
        let cache = config.accept.cache_tokens;
        // This VM's copy, still usable (the cache drops it its expiry margin before `exp`).
        let mut local_token = None;
        if cache {
            if let Some(local) = self.local.get(&key, now_ms) {
                if now_ms < local.refresh_at_ms {
                    self.hits += 1;
                    return Exchange::Token(local.token.clone());
                }
                // Due for refresh: another worker may have refreshed it already.
                local_token = Some(local.token.clone());
            }
        }
        // A request looked at again while it waits for the token endpoint is one miss.
        if !look.again {
            self.misses += 1;
        }
        let entry = fetcher.layout().token_entry(store, &key);
        let started_ms = look.started_ms;
        let fresh_enough = cache || entry.fetched_ms >= started_ms;
        match &entry.value {
            Some(TokenValue::Issued {
                token,
                exp_ms,
                refresh_at_ms,
            }) if fresh_enough
                && now_ms.saturating_add(margin_of(*exp_ms, entry.fetched_ms)) < *exp_ms =>
            {
                let token: Rc<str> = Rc::from(token.as_str());
                let lifetime = exp_ms.saturating_sub(entry.fetched_ms);
                if cache && lifetime >= MIN_CACHED_LIFETIME_MS {
                    let local = LocalToken {
                        token: token.clone(),
                        refresh_at_ms: *refresh_at_ms,
                    };
                    self.local.insert(
                        key,
                        local,
                        token.len() + 64,
                        exp_ms.saturating_sub(margin_of(*exp_ms, entry.fetched_ms)),
                        now_ms,
                    );
                    if now_ms >= *refresh_at_ms && !entry.state.is_busy(now_ms) {
                        self.queue_refresh(key, client);
                    }
                }
                Exchange::Token(token)
            }
            Some(TokenValue::Rejected { until_ms })
                if *until_ms > now_ms || entry.fetched_ms >= started_ms =>
            {
                Exchange::Step(Step::deny(Denial::InvalidClient))
            }
            // The shared entry is gone (other credentials took its bucket slot) or being
            // refetched, but this VM's copy is still good: serve it and refresh in the
            // background, so neither churn nor an IdP outage refuses a cached client.
            _ => match local_token {
                Some(token) => {
                    self.queue_refresh(key, client);
                    Exchange::Token(token)
                }
                None => Exchange::Step(fetcher.step(
                    store,
                    idp,
                    Resource::Token(key),
                    Ask::Token(client),
                    now_ms,
                )),
            },
        }
    }

    /// The shared-entry key of `client`'s token.
    pub fn key(&mut self, idp: &IdpSettings, client: &ClientCredentials, now_ms: u64) -> Key {
        if let Some(key) = self.keys.get(client, now_ms) {
            return *key;
        }
        let key = key_of(&[
            b"client",
            idp.issuer.as_bytes(),
            client.id.as_bytes(),
            client.secret.expose().as_bytes(),
            idp.scopes.join(" ").as_bytes(),
        ]);
        let bytes = client.id.len() + client.secret.expose().len() + 96;
        self.keys
            .insert(client.clone(), key, bytes, u64::MAX, now_ms);
        key
    }

    /// How many credential hashes this VM remembers.
    pub fn remembered(&self) -> usize {
        self.keys.len()
    }

    fn queue_refresh(&mut self, key: Key, client: &ClientCredentials) {
        if self.refresh.len() < MAX_REFRESH_QUEUE && !self.refresh.iter().any(|(k, _)| *k == key) {
            self.refresh.push((key, client.clone()));
        }
    }

    /// Applies the token endpoint's answer for the credential hashed to `key`.
    pub fn on_answer(
        &mut self,
        store: &mut dyn SharedStore,
        fetcher: &Fetcher,
        accept: &Accept,
        key: &Key,
        (status, body): (Option<u32>, &[u8]),
        now_ms: u64,
    ) -> Applied {
        let (value, applied) = match idp::parse_token_response(status, body) {
            TokenAnswer::Issued {
                access_token,
                expires_in_s,
            } => {
                // `cache_ttl_max` bounds how long a token is trusted: past it, it is
                // fetched anew (and refreshed ahead of that, as of its own expiry).
                let exp_ms = token_expiry_ms(&access_token, expires_in_s, now_ms).min(
                    accept
                        .ttl_max_ms
                        .map_or(u64::MAX, |max| now_ms.saturating_add(max)),
                );
                let lifetime = exp_ms.saturating_sub(now_ms);
                if lifetime < MIN_CACHED_LIFETIME_MS && !self.warned_short {
                    self.warned_short = true;
                    log::warn!(
                        "the token endpoint issues tokens that live {lifetime} ms: too short to \
                         cache, so every request exchanges its credentials (logged once)"
                    );
                }
                let refresh_at_ms = exp_ms.saturating_sub(refresh_lead_ms(lifetime)).max(now_ms);
                (
                    TokenValue::Issued {
                        token: access_token,
                        exp_ms,
                        refresh_at_ms,
                    },
                    Applied::Stored,
                )
            }
            TokenAnswer::Rejected { error } => (
                TokenValue::Rejected {
                    until_ms: now_ms.saturating_add(accept.neg_ttl_ms),
                },
                Applied::Rejected(error),
            ),
            TokenAnswer::Unavailable(why) => {
                fetcher.fail(store, &Resource::Token(*key), now_ms);
                return Applied::Failed(why);
            }
        };
        // A refreshed token replaces the local copy of every VM on its next miss.
        self.local.remove(key);
        fetcher
            .layout()
            .update(store, &fetcher.layout().bucket(key), |b: &mut Bucket| {
                b.with_entry(key, now_ms, |e| e.succeed(value.clone(), now_ms))
            });
        applied
    }

    /// Refreshes ahead of expiry the tokens requests found due; drops expired copies.
    pub fn background(
        &mut self,
        store: &mut dyn SharedStore,
        fetcher: &mut Fetcher,
        idp: &IdpSettings,
        purge: bool,
        now_ms: u64,
    ) -> Vec<Fetch> {
        if purge {
            self.local.purge_expired(now_ms);
        }
        let mut out = Vec::new();
        for (key, client) in std::mem::take(&mut self.refresh) {
            let entry = fetcher.layout().token_entry(store, &key);
            let still_due = match &entry.value {
                Some(TokenValue::Issued { refresh_at_ms, .. }) => now_ms >= *refresh_at_ms,
                Some(TokenValue::Rejected { .. }) => false,
                // Evicted from its shared bucket while a VM still serves its copy.
                None => !entry.state.is_busy(now_ms) && entry.state.retry_at_ms <= now_ms,
            };
            if still_due {
                if let Step::Fetch(f) = fetcher.step(
                    store,
                    idp,
                    Resource::Token(key),
                    Ask::Token(&client),
                    now_ms,
                ) {
                    out.push(f);
                }
            }
        }
        out
    }
}

impl Default for ClientTokens {
    fn default() -> Self {
        ClientTokens::new()
    }
}

/// The expiry margin of a token fetched at `fetched_ms` that expires at `exp_ms`.
fn margin_of(exp_ms: u64, fetched_ms: u64) -> u64 {
    expiry_margin_ms(exp_ms.saturating_sub(fetched_ms))
}

/// When a fetched token stops being usable: the earlier of `expires_in` and its `exp`.
fn token_expiry_ms(token: &str, expires_in_s: Option<u64>, now_ms: u64) -> u64 {
    let from_expires_in = expires_in_s.map(|s| now_ms.saturating_add(s.saturating_mul(1000)));
    let from_exp = idp::unverified_exp(token).map(|s| s.saturating_mul(1000));
    match (from_expires_in, from_exp) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        // Unknown: the token will fail verification for lack of `exp`; keep it briefly.
        (None, None) => now_ms.saturating_add(60_000),
    }
}
