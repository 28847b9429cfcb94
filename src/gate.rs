//! The decision engine: given a credential, the shared state and the time, say what to do
//! next. It performs no I/O (quinn-proto's `Endpoint` is the model): the host adapter
//! carries out `Step::Fetch`, hands the IdP's answer to [`Gate::on_answer`], and asks again.
//!
//! ```text
//!  credential ──► authenticate ──► Allow(headers) │ Deny(denial)
//!                      │  ▲
//!          Wait/Fetch  ▼  │ re-run when the resource changed (or deadline → 503)
//!                 host adapter ──callout──► IdP ──► on_answer ──► shared store
//! ```

use serde::{Deserialize, Serialize};

use std::rc::Rc;

use crate::cache::{key_of, BoundedCache, Key, TokenKey};
use crate::claims;
use crate::config::Config;
use crate::credentials::{ClientCredentials, Credential};
use crate::idp::{self, Callout, Endpoints, TokenAnswer};
use crate::jwks::KeySet;
use crate::outcome::{Denial, TokenProblem};
use crate::policy;
use crate::store::{self, Claim, Fetched, SharedStore};
use crate::url::HttpUrl;
use crate::verify::{self, MAX_TOKEN_BYTES};

/// Something the filter fetches from the IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Discovery,
    Jwks,
    /// The token for one `(client id, secret, scopes)`, by its hash.
    Token(Key),
}

impl Resource {
    pub fn name(&self) -> &'static str {
        match self {
            Resource::Discovery => "discovery",
            Resource::Jwks => "jwks",
            Resource::Token(_) => "token",
        }
    }
}

/// A callout the host must send; its answer goes to [`Gate::on_answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub resource: Resource,
    pub callout: Callout,
}

/// What to do with a request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Let it through with these headers set (after the strip list was removed).
    Allow(Headers),
    Deny(Denial),
    /// Park it: another worker is fetching what it needs. Ask again later.
    Wait(Resource),
    /// Park it and send this callout; ask again once it is answered.
    Fetch(Fetch),
}

/// What an IdP answer did, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Stored,
    /// The token endpoint refused the client (RFC 6749 error code).
    Rejected(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum TokenValue {
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

/// Client tokens live in a fixed set of shared buckets, each holding a few entries, so that
/// shared memory stays bounded however many distinct credentials callers send (keys cannot
/// be deleted from proxy-wasm shared data).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Bucket {
    entries: Vec<BucketEntry>,
}

const BUCKETS: usize = 256;
const BUCKET_ENTRIES: usize = 8;
/// A token is not handed out with less life than this left.
const EXPIRY_MARGIN_MS: u64 = 10_000;
/// How long others wait for a fetcher beyond the callout timeout before taking over.
const LOCK_GRACE_MS: u64 = 1_000;
/// Key sets are refreshed in the background this often (Envoy `jwt_authn`'s default).
const JWKS_MAX_AGE_MS: u64 = 600_000;

const DECISION_ENTRIES: usize = 4096;
const DECISION_BYTES: usize = 8 << 20;
const TOKEN_ENTRIES: usize = 1024;
const TOKEN_BYTES: usize = 4 << 20;
const MAX_REFRESH_QUEUE: usize = 64;
/// Expired cache entries are swept this often, off the request path.
const PURGE_EVERY_MS: u64 = 1_000;

/// Headers to write upstream, shared between the cache and the requests it answers.
pub type Headers = Rc<[(String, String)]>;

type Decision = Result<Headers, Denial>;

#[derive(Clone)]
struct LocalToken {
    token: Rc<str>,
    refresh_at_ms: u64,
}

/// Cache effectiveness, for operators' metrics. Monotonic; the host reports deltas. A
/// decision miss is one signature verification; a token miss is one look past this VM's
/// copy (a request waiting for the token endpoint counts each time it is re-asked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub decision_hits: u64,
    pub decision_misses: u64,
    pub token_hits: u64,
    pub token_misses: u64,
}

pub struct Gate {
    config: Config,
    counters: Counters,
    strip: Rc<[String]>,
    keys: Option<KeySet>,
    keys_version: u64,
    endpoints: Option<Endpoints>,
    /// Outcome per token, for tokens whose signature verified.
    decisions: BoundedCache<TokenKey, Decision>,
    /// Client-credential tokens per credential hash, this VM's copy of the shared bucket.
    tokens: BoundedCache<Key, LocalToken>,
    /// The credential hash per credential: a SHA-256 costs more in V8 than the rest of a
    /// cached client's request, so it is computed once per credential, not per request.
    client_keys: BoundedCache<ClientCredentials, Key>,
    purged_ms: u64,
    refresh: Vec<(Key, ClientCredentials)>,
    shared_prefix: String,
}

impl Gate {
    pub fn new(config: Config) -> Gate {
        let mut strip = vec!["authorization".to_string()];
        for name in config
            .claim_headers
            .iter()
            .map(|c| c.header.to_ascii_lowercase())
            .chain(config.token_header.iter().map(|t| t.name.clone()))
        {
            if !strip.contains(&name) {
                strip.push(name);
            }
        }
        let shared_prefix = format!("oidcgate/{}", config.fingerprint);
        Gate {
            config,
            counters: Counters::default(),
            strip: strip.into(),
            keys: None,
            keys_version: 0,
            endpoints: None,
            decisions: BoundedCache::new(DECISION_ENTRIES, DECISION_BYTES),
            tokens: BoundedCache::new(TOKEN_ENTRIES, TOKEN_BYTES),
            client_keys: BoundedCache::new(TOKEN_ENTRIES, TOKEN_BYTES),
            purged_ms: 0,
            refresh: Vec::new(),
            shared_prefix,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// How many token outcomes this VM holds (a gauge for operators).
    pub fn cached_decisions(&self) -> usize {
        self.decisions.len()
    }

    /// Lower-case names of the headers removed from every request before it goes upstream:
    /// the caller's credential and every header the filter itself writes.
    pub fn strip_headers(&self) -> Rc<[String]> {
        self.strip.clone()
    }

    /// Creates every shared key this configuration uses. Call at configure time.
    pub fn init_shared(&self, store: &mut dyn SharedStore) {
        store::ensure::<Fetched<Endpoints>>(store, &self.shared_key(&Resource::Discovery));
        store::ensure::<Fetched<String>>(store, &self.shared_key(&Resource::Jwks));
        for i in 0..BUCKETS {
            store::ensure::<Bucket>(store, &self.bucket_key_at(i));
        }
    }

    /// Decides on a request. `started_ms` is when the request arrived (it may be asked
    /// again later, after waiting).
    pub fn authenticate(
        &mut self,
        store: &mut dyn SharedStore,
        credential: &Credential,
        started_ms: u64,
        now_ms: u64,
    ) -> Step {
        match credential {
            Credential::Bearer(token) => self.check_token(store, token, now_ms),
            Credential::Client(client) => self.check_client(store, client, started_ms, now_ms),
        }
    }

    fn check_token(&mut self, store: &mut dyn SharedStore, token: &Rc<str>, now_ms: u64) -> Step {
        if token.len() > MAX_TOKEN_BYTES {
            return Step::Deny(Denial::InvalidToken(TokenProblem::TooLarge));
        }
        let key = TokenKey(token.clone());
        if let Some(decision) = self.decisions.get(&key, now_ms) {
            self.counters.decision_hits += 1;
            return to_step(decision.clone());
        }
        if let Err(step) = self.sync_keys(store, now_ms) {
            return step;
        }
        let Some(keys) = &self.keys else {
            return Step::Deny(Denial::IdpUnavailable { retry_after_s: 1 });
        };
        // A miss is a verification: a request re-asked while the keys are fetched is not
        // counted again.
        self.counters.decision_misses += 1;
        match verify::verify(token, keys, now_ms / 1000, self.config.leeway_s) {
            Ok(verified) => {
                let decision = policy::authorize(&self.config, &verified.claims)
                    .map(|()| self.allow_headers(token, &verified.claims));
                let size = token.len()
                    + 128
                    + decision
                        .as_ref()
                        .map(|h| h.iter().map(|(k, v)| k.len() + v.len() + 48).sum())
                        .unwrap_or(0);
                let until = verified
                    .exp_s
                    .saturating_add(self.config.leeway_s)
                    .saturating_mul(1000);
                self.decisions
                    .insert(key, decision.clone(), size, until, now_ms);
                to_step(decision)
            }
            Err(TokenProblem::UnknownKey) => self
                .rediscover(store, now_ms)
                .unwrap_or(Step::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))),
            Err(problem) => Step::Deny(Denial::InvalidToken(problem)),
        }
    }

    fn allow_headers(
        &self,
        token: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Headers {
        let mut headers = claims::headers(&self.config.claim_headers, claims);
        if let Some(th) = &self.config.token_header {
            let value = match &th.scheme {
                Some(scheme) => format!("{scheme} {token}"),
                None => token.to_string(),
            };
            headers.push((th.name.clone(), value));
        }
        headers.into()
    }

    fn check_client(
        &mut self,
        store: &mut dyn SharedStore,
        client: &ClientCredentials,
        started_ms: u64,
        now_ms: u64,
    ) -> Step {
        match self.client_step(store, client, started_ms, now_ms) {
            // The IdP issued a token signed with a key it has not published to us yet (it
            // is rotating, and the refetch allowance is spent): not the client's fault, so
            // not 401. Retry after the allowance comes back.
            Step::Deny(Denial::InvalidToken(TokenProblem::UnknownKey)) => {
                Step::Deny(Denial::IdpUnavailable {
                    retry_after_s: self.config.rediscovery_ms.div_ceil(1000).max(1),
                })
            }
            step => step,
        }
    }

    fn client_step(
        &mut self,
        store: &mut dyn SharedStore,
        client: &ClientCredentials,
        started_ms: u64,
        now_ms: u64,
    ) -> Step {
        if let Some(allowed) = &self.config.client_ids {
            if !allowed.contains(&client.id) {
                return Step::Deny(Denial::InvalidToken(TokenProblem::ClientNotAllowed));
            }
        }
        let key = self.client_key(client, now_ms);
        let cache = self.config.cache_tokens;
        // This VM's copy, still usable (the cache drops it EXPIRY_MARGIN_MS before `exp`).
        let mut local_token = None;
        if cache {
            if let Some(local) = self.tokens.get(&key, now_ms) {
                if now_ms < local.refresh_at_ms {
                    self.counters.token_hits += 1;
                    let token = local.token.clone();
                    return self.check_token(store, &token, now_ms);
                }
                // Due for refresh: another worker may have refreshed it already.
                local_token = Some(local.token.clone());
            }
        }
        self.counters.token_misses += 1;
        let entry = self.read_entry(store, &key);
        // Without caching, only a token fetched for (or while) this request may serve it.
        let fresh_enough = cache || entry.fetched_ms >= started_ms;
        match &entry.value {
            Some(TokenValue::Issued {
                token,
                exp_ms,
                refresh_at_ms,
            }) if fresh_enough && now_ms.saturating_add(EXPIRY_MARGIN_MS) < *exp_ms => {
                let token: Rc<str> = Rc::from(token.as_str());
                if cache {
                    let local = LocalToken {
                        token: token.clone(),
                        refresh_at_ms: *refresh_at_ms,
                    };
                    self.tokens.insert(
                        key,
                        local,
                        token.len() + 64,
                        exp_ms - EXPIRY_MARGIN_MS,
                        now_ms,
                    );
                    if now_ms >= *refresh_at_ms && !entry.is_busy(now_ms) {
                        self.queue_refresh(key, client);
                    }
                }
                self.check_token(store, &token, now_ms)
            }
            Some(TokenValue::Rejected { until_ms })
                if *until_ms > now_ms || entry.fetched_ms >= started_ms =>
            {
                Step::Deny(Denial::InvalidClient)
            }
            // The shared entry is gone (other credentials took its bucket slot) or being
            // refetched, but this VM's copy is still good: serve it and refresh in the
            // background, so neither churn nor an IdP outage refuses a cached client.
            _ => match local_token {
                Some(token) => {
                    self.queue_refresh(key, client);
                    self.check_token(store, &token, now_ms)
                }
                None => self.fetch_step(store, Resource::Token(key), Some(client), now_ms),
            },
        }
    }

    fn client_key(&mut self, client: &ClientCredentials, now_ms: u64) -> Key {
        if let Some(key) = self.client_keys.get(client, now_ms) {
            return *key;
        }
        let key = key_of(&[
            b"client",
            self.config.issuer.as_bytes(),
            client.id.as_bytes(),
            client.secret.expose().as_bytes(),
            self.config.scopes.join(" ").as_bytes(),
        ]);
        let bytes = client.id.len() + client.secret.expose().len() + 96;
        self.client_keys
            .insert(client.clone(), key, bytes, u64::MAX, now_ms);
        key
    }

    fn queue_refresh(&mut self, key: Key, client: &ClientCredentials) {
        if self.refresh.len() < MAX_REFRESH_QUEUE && !self.refresh.iter().any(|(k, _)| *k == key) {
            self.refresh.push((key, client.clone()));
        }
    }

    /// Brings this VM's key set up to the shared one; without any, says how to get one.
    fn sync_keys(&mut self, store: &mut dyn SharedStore, now_ms: u64) -> Result<(), Step> {
        let record: Fetched<String> = store::read(store, &self.shared_key(&Resource::Jwks));
        if let Some(doc) = &record.value {
            if record.version != self.keys_version || self.keys.is_none() {
                if let Ok(set) = KeySet::parse(doc.as_bytes()) {
                    self.keys = Some(set);
                    self.keys_version = record.version;
                }
            }
        }
        if self.keys.is_some() {
            return Ok(());
        }
        Err(self.fetch_step(store, Resource::Jwks, None, now_ms))
    }

    /// An unknown `kid`: refetch the key set unless one was fetched within
    /// `rediscovery_lifetime`. `None` means no refetch is allowed now.
    fn rediscover(&mut self, store: &mut dyn SharedStore, now_ms: u64) -> Option<Step> {
        let url = self.url_for(store, &Resource::Jwks)?;
        let gap = self.config.rediscovery_ms;
        let lock = self.lock_ms();
        let claim = store::update(
            store,
            &self.shared_key(&Resource::Jwks),
            |r: &mut Fetched<String>| {
                if r.is_busy(now_ms) {
                    Some(Claim::Busy)
                } else if now_ms.saturating_sub(r.attempt_ms) < gap {
                    None
                } else {
                    Some(r.claim(now_ms, lock))
                }
            },
        )
        .flatten()?;
        match claim {
            Claim::Acquired => Some(Step::Fetch(Fetch {
                resource: Resource::Jwks,
                callout: Callout::get(&self.config, &url),
            })),
            Claim::Busy => Some(Step::Wait(Resource::Jwks)),
            Claim::BackingOff { .. } => None,
        }
    }

    /// Claims the fetch of `resource` (or of discovery first, when its URL is not known yet).
    fn fetch_step(
        &mut self,
        store: &mut dyn SharedStore,
        resource: Resource,
        client: Option<&ClientCredentials>,
        now_ms: u64,
    ) -> Step {
        let Some(url) = self.url_for(store, &resource) else {
            if resource == Resource::Discovery {
                return Step::Deny(Denial::IdpUnavailable { retry_after_s: 1 });
            }
            return self.fetch_step(store, Resource::Discovery, None, now_ms);
        };
        let lock = self.lock_ms();
        let key = self.shared_key(&resource);
        let claim = match &resource {
            Resource::Discovery => store::update(store, &key, |r: &mut Fetched<Endpoints>| {
                r.claim(now_ms, lock)
            }),
            Resource::Jwks => {
                store::update(store, &key, |r: &mut Fetched<String>| r.claim(now_ms, lock))
            }
            Resource::Token(k) => {
                let id = entry_id(k);
                store::update(store, &key, |b: &mut Bucket| {
                    with_entry(b, &id, now_ms, |e| e.claim(now_ms, lock))
                })
            }
        };
        match claim {
            Some(Claim::Acquired) => {
                let callout = match (&resource, client) {
                    (Resource::Token(_), Some(c)) => Callout::token(&self.config, &url, c),
                    (Resource::Token(_), None) => {
                        return Step::Deny(Denial::IdpUnavailable { retry_after_s: 1 })
                    }
                    _ => Callout::get(&self.config, &url),
                };
                Step::Fetch(Fetch { resource, callout })
            }
            Some(Claim::Busy) => Step::Wait(resource),
            Some(Claim::BackingOff { retry_at_ms }) => Step::Deny(Denial::IdpUnavailable {
                retry_after_s: retry_at_ms.saturating_sub(now_ms).div_ceil(1000),
            }),
            None => Step::Deny(Denial::IdpUnavailable { retry_after_s: 1 }),
        }
    }

    fn lock_ms(&self) -> u64 {
        self.config.timeout_ms + LOCK_GRACE_MS
    }

    fn url_for(&mut self, store: &dyn SharedStore, resource: &Resource) -> Option<HttpUrl> {
        let configured = match resource {
            Resource::Discovery => return Some(self.config.discovery_url.clone()),
            Resource::Jwks => &self.config.jwks_uri,
            Resource::Token(_) => &self.config.token_endpoint,
        };
        if let Some(url) = configured {
            return Some(url.clone());
        }
        if self.endpoints.is_none() {
            let record: Fetched<Endpoints> =
                store::read(store, &self.shared_key(&Resource::Discovery));
            self.endpoints = record.value;
        }
        let endpoints = self.endpoints.as_ref()?;
        let raw = match resource {
            Resource::Jwks => Some(endpoints.jwks_uri.as_str()),
            _ => endpoints.token_endpoint.as_deref(),
        }?;
        HttpUrl::parse(raw).ok()
    }

    /// Applies the IdP's answer to a [`Step::Fetch`]. `status` is `None` when the callout
    /// failed or timed out.
    pub fn on_answer(
        &mut self,
        store: &mut dyn SharedStore,
        resource: &Resource,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
    ) -> Applied {
        let key = self.shared_key(resource);
        if body.len() > idp::MAX_RESPONSE_BYTES {
            self.fail(store, resource, now_ms);
            return Applied::Failed(format!("{} answer too large", resource.name()));
        }
        match resource {
            Resource::Discovery => match idp::parse_discovery(&self.config.issuer, status, body) {
                Ok(endpoints) => {
                    let stored = endpoints.clone();
                    store::update(store, &key, |r: &mut Fetched<Endpoints>| {
                        r.succeed(stored.clone(), now_ms)
                    });
                    self.endpoints = Some(endpoints);
                    Applied::Stored
                }
                Err(why) => {
                    self.fail(store, resource, now_ms);
                    Applied::Failed(format!("discovery {why}"))
                }
            },
            Resource::Jwks => {
                let parsed = idp::check_jwks_response(status)
                    .and_then(|()| KeySet::parse(body).map_err(str::to_string))
                    .and_then(|set| {
                        String::from_utf8(body.to_vec())
                            .map(|doc| (set, doc))
                            .map_err(|_| "not UTF-8".to_string())
                    });
                match parsed {
                    Ok((set, doc)) => {
                        let version = store::update(store, &key, |r: &mut Fetched<String>| {
                            r.succeed(doc.clone(), now_ms);
                            r.version
                        });
                        self.keys = Some(set);
                        self.keys_version = version.unwrap_or(self.keys_version);
                        Applied::Stored
                    }
                    Err(why) => {
                        self.fail(store, resource, now_ms);
                        Applied::Failed(format!("jwks {why}"))
                    }
                }
            }
            Resource::Token(k) => {
                let id = entry_id(k);
                let (value, applied) = match idp::parse_token_response(status, body) {
                    TokenAnswer::Issued {
                        access_token,
                        expires_in_s,
                    } => {
                        let exp_ms = token_expiry_ms(&access_token, expires_in_s, now_ms);
                        let lifetime = exp_ms.saturating_sub(now_ms);
                        let refresh_at_ms = exp_ms
                            .saturating_sub((lifetime / 4).max(3 * EXPIRY_MARGIN_MS))
                            .max(now_ms);
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
                            until_ms: now_ms.saturating_add(self.config.neg_ttl_ms),
                        },
                        Applied::Rejected(error),
                    ),
                    TokenAnswer::Unavailable(why) => {
                        self.fail(store, resource, now_ms);
                        return Applied::Failed(why);
                    }
                };
                // A refreshed token replaces the local copy of every VM on its next miss.
                self.tokens.remove(k);
                store::update(store, &key, |b: &mut Bucket| {
                    with_entry(b, &id, now_ms, |e| e.succeed(value.clone(), now_ms))
                });
                applied
            }
        }
    }

    fn fail(&mut self, store: &mut dyn SharedStore, resource: &Resource, now_ms: u64) {
        self.with_state(store, resource, now_ms, |s| s.fail(now_ms));
    }

    /// The fetch for `resource` will not be answered (the request that sent it went away):
    /// let the next one in without waiting for the lock to lapse.
    pub fn abandon(&mut self, store: &mut dyn SharedStore, resource: &Resource, now_ms: u64) {
        self.with_state(store, resource, now_ms, |s| s.release());
    }

    /// Runs `f` on the fetch state of `resource`, whatever its value type.
    fn with_state(
        &mut self,
        store: &mut dyn SharedStore,
        resource: &Resource,
        now_ms: u64,
        f: impl Fn(&mut dyn FetchState),
    ) {
        let key = self.shared_key(resource);
        match resource {
            Resource::Discovery => store::update(store, &key, |r: &mut Fetched<Endpoints>| f(r)),
            Resource::Jwks => store::update(store, &key, |r: &mut Fetched<String>| f(r)),
            Resource::Token(k) => {
                let id = entry_id(k);
                store::update(store, &key, |b: &mut Bucket| {
                    with_entry(b, &id, now_ms, |e| f(e))
                })
            }
        };
    }

    /// Work the root context does on its timer: fetch the key set at start-up (retrying with
    /// backoff), refresh it periodically, and refresh client tokens ahead of expiry.
    pub fn background(&mut self, store: &mut dyn SharedStore, now_ms: u64) -> Vec<Fetch> {
        if now_ms.saturating_sub(self.purged_ms) >= PURGE_EVERY_MS {
            self.decisions.purge_expired(now_ms);
            self.tokens.purge_expired(now_ms);
            self.purged_ms = now_ms;
        }
        let mut out = Vec::new();
        let record: Fetched<String> = store::read(store, &self.shared_key(&Resource::Jwks));
        let due = record.value.is_none()
            || now_ms.saturating_sub(record.fetched_ms.max(record.attempt_ms)) >= JWKS_MAX_AGE_MS;
        if due && !record.is_busy(now_ms) && record.retry_at_ms <= now_ms {
            if let Step::Fetch(f) = self.fetch_step(store, Resource::Jwks, None, now_ms) {
                out.push(f);
            }
        }
        for (key, client) in std::mem::take(&mut self.refresh) {
            let entry = self.read_entry(store, &key);
            let still_due = match &entry.value {
                Some(TokenValue::Issued { refresh_at_ms, .. }) => now_ms >= *refresh_at_ms,
                Some(TokenValue::Rejected { .. }) => false,
                // Evicted from its shared bucket while a VM still serves its copy.
                None => !entry.is_busy(now_ms) && entry.retry_at_ms <= now_ms,
            };
            if still_due {
                if let Step::Fetch(f) =
                    self.fetch_step(store, Resource::Token(key), Some(&client), now_ms)
                {
                    out.push(f);
                }
            }
        }
        out
    }

    /// Whether a fetch of `resource` is still in flight (somewhere among the workers).
    pub fn is_busy(&self, store: &dyn SharedStore, resource: &Resource, now_ms: u64) -> bool {
        let key = self.shared_key(resource);
        match resource {
            Resource::Discovery => store::read::<Fetched<Endpoints>>(store, &key).is_busy(now_ms),
            Resource::Jwks => store::read::<Fetched<String>>(store, &key).is_busy(now_ms),
            Resource::Token(k) => self.read_entry(store, k).is_busy(now_ms),
        }
    }

    fn read_entry(&self, store: &dyn SharedStore, key: &Key) -> Fetched<TokenValue> {
        let id = entry_id(key);
        let bucket: Bucket = store::read(store, &self.shared_key(&Resource::Token(*key)));
        bucket
            .entries
            .into_iter()
            .find(|e| e.id == id)
            .map(|e| e.state)
            .unwrap_or_default()
    }

    fn shared_key(&self, resource: &Resource) -> String {
        match resource {
            Resource::Discovery => format!("{}/discovery", self.shared_prefix),
            Resource::Jwks => format!("{}/jwks", self.shared_prefix),
            Resource::Token(k) => self.bucket_key_at(usize::from(k[0]) % BUCKETS),
        }
    }

    fn bucket_key_at(&self, index: usize) -> String {
        format!("{}/tokens/{index}", self.shared_prefix)
    }
}

/// The fetch-state operations, independent of the fetched value's type.
trait FetchState {
    fn fail(&mut self, now_ms: u64);
    fn release(&mut self);
}

impl<T> FetchState for Fetched<T> {
    fn fail(&mut self, now_ms: u64) {
        Fetched::fail(self, now_ms)
    }
    fn release(&mut self) {
        Fetched::release(self)
    }
}

fn to_step(decision: Decision) -> Step {
    match decision {
        Ok(headers) => Step::Allow(headers),
        Err(denial) => Step::Deny(denial),
    }
}

fn entry_id(key: &Key) -> String {
    key.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Runs `f` on the entry for `id`, created if needed. A full bucket gives up the entry that
/// matters least: one not being fetched, least recently fetched or tried.
fn with_entry<R>(
    bucket: &mut Bucket,
    id: &str,
    now_ms: u64,
    f: impl FnOnce(&mut Fetched<TokenValue>) -> R,
) -> R {
    let mut entry = match bucket.entries.iter().position(|e| e.id == id) {
        Some(p) => bucket.entries.swap_remove(p),
        None => {
            if bucket.entries.len() >= BUCKET_ENTRIES {
                let victim = bucket
                    .entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| {
                        (
                            e.state.is_busy(now_ms),
                            e.state.fetched_ms.max(e.state.attempt_ms),
                        )
                    })
                    .map(|(i, _)| i);
                if let Some(v) = victim {
                    bucket.entries.swap_remove(v);
                }
            }
            BucketEntry {
                id: id.to_string(),
                state: Fetched::default(),
            }
        }
    };
    let result = f(&mut entry.state);
    bucket.entries.push(entry);
    result
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

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
