//! The decision on one credential: given it, the shared state and the time, say what to do
//! next. It performs no I/O (quinn-proto's `Endpoint` is the model): the lifecycle carries
//! out `Step::Fetch`, hands the IdP's answer to [`Gate::on_answer`], and asks again.
//!
//! ```text
//!  credential ──► authenticate ──► Done(Allow(headers) | Deny(denial))
//!                      │  ▲
//!          Wait/Fetch  ▼  │ asked again when the resource changed
//!                  lifecycle ──callout──► IdP ──► on_answer ──► shared store
//! ```
//!
//! A bearer token is proven, against the key set (a JWT) or at the introspection endpoint
//! (an opaque token, or a JWT when `introspect_jwt_tokens` is on: `introspection`), and
//! judged by the policy; the outcome is cached per token. Client credentials are first
//! exchanged for a token (`client_tokens`), which is then judged the same way. Fetches are
//! coordinated across workers by `fetch`.

use std::rc::Rc;

use crate::cache::{BoundedCache, TokenHashing, TokenKey};
use crate::claims;
use crate::client_tokens::{ClientTokens, Exchange};
use crate::config::{Config, PolicyId};
use crate::credentials::{ClientCredentials, Credential};
use crate::fetch::{Applied, Ask, Fetch, Fetcher, Look, Resource, Step};
use crate::idp::{self, MAX_RESPONSE_BYTES};
use crate::introspection::{self, Answer, Introspections};
use crate::jwks::KeySet;
use crate::outcome::{Denial, Grant, TokenProblem, Verdict};
use crate::policy;
use crate::records::Layout;
use crate::store::{Fetched, SharedStore};
use crate::upstream;
use crate::verify::{self, MAX_TOKEN_BYTES};

/// Key sets are refreshed in the background this often (Envoy `jwt_authn`'s default).
pub const JWKS_MAX_AGE_MS: u64 = 600_000;

const DECISION_ENTRIES: usize = 4096;
const DECISION_BYTES: usize = 8 << 20;
/// Expired cache entries are swept this often, off the request path.
const PURGE_EVERY_MS: u64 = 1_000;

/// Cache effectiveness, for operators' metrics. Monotonic; the host reports deltas. A
/// decision miss is one signature verification; a token (or introspection) miss is one
/// request that found no usable copy in this VM, however often it is looked at again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub decision_hits: u64,
    pub decision_misses: u64,
    pub token_hits: u64,
    pub token_misses: u64,
    pub answer_hits: u64,
    pub answer_misses: u64,
}

/// Where a token's claims were proven.
enum Proven {
    Verified(Rc<verify::Verified>),
    Introspected(Rc<introspection::Active>),
}

impl Proven {
    fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        match self {
            Proven::Verified(v) => &v.claims,
            Proven::Introspected(a) => &a.claims,
        }
    }
}

pub struct Gate {
    config: Config,
    strip: Rc<[String]>,
    keys: Option<KeySet>,
    keys_version: u64,
    /// The shared key-set record's CAS when `keys` was last found up to date with it: while
    /// it stays the same, a verification does not parse the record again (~4 µs in V8 for
    /// a 3 KB set, on every cold request). `None` (or a host's CAS of 0) means look again.
    keys_cas: Option<u32>,
    /// Outcome per token and policy, for tokens whose signature verified.
    decisions: BoundedCache<(TokenKey, PolicyId), Verdict, TokenHashing>,
    /// With several policies: the claims of tokens whose signature verified, so that a
    /// token verified on one route is judged on another without verifying it again.
    verified: BoundedCache<TokenKey, Rc<verify::Verified>, TokenHashing>,
    decision_hits: u64,
    decision_misses: u64,
    clients: ClientTokens,
    answers: Introspections,
    fetcher: Fetcher,
    purged_ms: u64,
    /// Until then the shared key set is known to be fresh (fetched under `JWKS_MAX_AGE_MS`
    /// ago), so the timer does not read and parse its record (~4 µs for a 3 KB set) on
    /// every tick to find that out. A refetch by another worker only makes it fresher.
    keys_fresh_until_ms: u64,
    /// Why the last decision refused, in the token's own values, for its log line.
    detail: Option<String>,
}

impl Gate {
    pub fn new(config: Config) -> Gate {
        // Every spelling of every header the filter writes, so that no caller copy an
        // upstream would read as the filter's reaches it.
        // Every policy's claim headers: a caller must not set one on any route.
        let mut strip = vec!["authorization".to_string()];
        for name in config
            .all_policies()
            .flat_map(|p| p.claim_headers.iter())
            .map(|c| c.header.as_str())
            .chain(config.upstream.token_header.iter().map(|t| t.name.as_str()))
        {
            for spelled in upstream::spellings(name).unwrap_or_default() {
                if !strip.contains(&spelled) {
                    strip.push(spelled);
                }
            }
        }
        let fetcher = Fetcher::new(Layout::new(config.idp.identity()), &config.idp);
        let answers = Introspections::new(&config);
        // One policy: the verdict cache is all there is to hit.
        let verified_entries = if config.policies.is_empty() {
            0
        } else {
            DECISION_ENTRIES
        };
        Gate {
            config,
            strip: strip.into(),
            keys: None,
            keys_version: 0,
            keys_cas: None,
            decisions: BoundedCache::new(DECISION_ENTRIES, DECISION_BYTES),
            verified: BoundedCache::new(verified_entries, DECISION_BYTES),
            decision_hits: 0,
            decision_misses: 0,
            clients: ClientTokens::new(),
            answers,
            fetcher,
            purged_ms: 0,
            keys_fresh_until_ms: 0,
            detail: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counters(&self) -> Counters {
        Counters {
            decision_hits: self.decision_hits,
            decision_misses: self.decision_misses,
            token_hits: self.clients.hits,
            token_misses: self.clients.misses,
            answer_hits: self.answers.hits,
            answer_misses: self.answers.misses,
        }
    }

    /// How many token outcomes this VM holds (a gauge for operators).
    pub fn cached_decisions(&self) -> usize {
        self.decisions.len()
    }

    /// How many introspection answers this VM holds (a gauge for operators).
    pub fn cached_answers(&self) -> usize {
        self.answers.len()
    }

    /// Lower-case names of the headers removed from every request before it goes upstream:
    /// the caller's credential and every header the filter itself writes.
    pub fn strip_headers(&self) -> Rc<[String]> {
        self.strip.clone()
    }

    /// Says why the next refusal is made, for its log line.
    pub fn note_detail(&mut self, detail: String) {
        self.detail = Some(detail);
    }

    /// What the last refusal decided (not answered from the cache) found in the token.
    pub fn take_detail(&mut self) -> Option<String> {
        self.detail.take()
    }

    /// Where this configuration's shared records are.
    pub fn layout(&self) -> &Layout {
        self.fetcher.layout()
    }

    /// Takes this IdP's slot in shared data and creates its keys. Call at configure time.
    pub fn init_shared(&mut self, store: &mut dyn SharedStore, now_ms: u64) {
        self.fetcher.layout_mut().claim(store, now_ms);
    }

    /// Decides on a request under `policy` (it may be asked again later, after waiting).
    pub fn authenticate(
        &mut self,
        store: &mut dyn SharedStore,
        credential: &Credential,
        policy: PolicyId,
        look: Look,
        now_ms: u64,
    ) -> Step {
        let step = match credential {
            Credential::Bearer(token) => self.check_token(store, token, policy, None, look, now_ms),
            Credential::Client(client) => self.check_client(store, client, policy, look, now_ms),
        };
        // Whichever fetch found its endpoint missing from discovery, the refusal says so.
        if let Some(endpoint) = self.fetcher.take_missing() {
            self.detail = Some(format!(
                "the discovery document names no {endpoint}: configure `{endpoint}`"
            ));
        }
        step
    }

    /// Decides on `token` under `policy`. `issued_to` is the client whose credentials the
    /// token endpoint just exchanged for it (`None` for a caller's bearer token).
    fn check_token(
        &mut self,
        store: &mut dyn SharedStore,
        token: &Rc<str>,
        policy: PolicyId,
        issued_to: Option<&ClientCredentials>,
        look: Look,
        now_ms: u64,
    ) -> Step {
        if token.len() > MAX_TOKEN_BYTES {
            return Step::deny(Denial::InvalidToken(TokenProblem::TooLarge));
        }
        let key = (TokenKey(token.clone()), policy);
        if let Some(verdict) = self.decisions.get(&key, now_ms) {
            self.decision_hits += 1;
            return Step::Done(verdict.clone());
        }
        // RFC 6750's b64token has no space. Checked past the cache, which holds no such
        // token: the scan of a whole token cost a cached request more than its lookup.
        if token.contains(' ') {
            return Step::deny(Denial::InvalidToken(TokenProblem::Malformed));
        }
        let rules = self.config.policy(policy);
        let jwt = verify::is_jwt(token);
        // A JWT is verified locally where bearer tokens are accepted (and a token the
        // token endpoint issued always); everything else is asked of the IdP, where the
        // policy accepts introspection (or, again, the token endpoint issued it).
        let local = jwt && (rules.bearer || issued_to.is_some());
        let remote = if local {
            self.config.accept.introspect_jwt
        } else {
            rules.introspection || issued_to.is_some()
        };
        if !local && !remote {
            return Step::deny(Denial::InvalidToken(TokenProblem::Malformed));
        }
        let mut proven = None;
        let mut until_ms = u64::MAX;
        if local {
            let verified = match self.verified.get(&key.0, now_ms) {
                // Verified on another route: judged here by this one's policy.
                Some(v) => {
                    self.decision_hits += 1;
                    v.clone()
                }
                None => match self.verify_token(store, token, now_ms) {
                    Ok(v) => v,
                    Err(step) => return step,
                },
            };
            until_ms = verified
                .exp_s
                .saturating_add(self.config.accept.leeway_s)
                .saturating_mul(1000);
            proven = Some(Proven::Verified(verified));
        }
        if remote {
            match self.introspect(store, token, issued_to, look, now_ms) {
                Ok(active) => {
                    until_ms = until_ms.min(active.until_ms);
                    // A JWT keeps its signed claims; the answer only says it still counts.
                    if proven.is_none() {
                        let leeway_s = self.config.accept.leeway_s;
                        if let Err(problem) =
                            introspection::check_times(&active.claims, now_ms / 1000, leeway_s)
                        {
                            return Step::deny(Denial::InvalidToken(problem));
                        }
                        proven = Some(Proven::Introspected(active));
                    }
                }
                Err(step) => return step,
            }
        }
        let Some(proven) = proven else {
            return Step::unavailable();
        };
        let config = &self.config;
        let rules = config.policy(policy);
        let claims = proven.claims();
        let verdict = match policy::authorize(config, rules, claims) {
            Ok(()) => Verdict::Allow(self.grant(token, policy, claims)),
            Err(denial) => {
                self.detail = policy::explain(config, rules, claims, &denial);
                Verdict::Deny(denial)
            }
        };
        // Without caching, every request asks the IdP again.
        if remote && !config.accept.cache_introspection {
            return Step::Done(verdict);
        }
        let size = token.len()
            + 128
            + match &verdict {
                Verdict::Allow(g) => {
                    let removes = g.removes.iter().flat_map(|r| r.iter());
                    let names: usize = removes.map(|name| name.len() + 24).sum();
                    names
                        + g.headers
                            .iter()
                            .map(|(k, v)| k.len() + v.len() + 48)
                            .sum::<usize>()
                }
                Verdict::Deny(_) => 0,
            };
        self.decisions
            .insert(key, verdict.clone(), size, until_ms, now_ms);
        Step::Done(verdict)
    }

    /// The IdP's answer for `token`, asked as the gateway's own client (or, without one,
    /// as the client it was issued to); a step instead while it is asked, or when the
    /// token is not active.
    fn introspect(
        &mut self,
        store: &mut dyn SharedStore,
        token: &Rc<str>,
        issued_to: Option<&ClientCredentials>,
        look: Look,
        now_ms: u64,
    ) -> Result<Rc<introspection::Active>, Step> {
        let Some(asker) = self.config.idp.gateway_client.as_ref().or(issued_to) else {
            return Err(Step::unavailable());
        };
        let answer = self.answers.answer(
            store,
            &mut self.fetcher,
            &self.config,
            token,
            asker,
            look,
            now_ms,
        );
        match answer {
            Answer::Active(active) => Ok(active),
            Answer::Inactive => Err(Step::deny(Denial::InvalidToken(TokenProblem::Inactive))),
            Answer::Step(step) => Err(step),
        }
    }

    /// Verifies `token`'s signature and times; a step instead while the keys are fetched
    /// or when it is refused.
    fn verify_token(
        &mut self,
        store: &mut dyn SharedStore,
        token: &Rc<str>,
        now_ms: u64,
    ) -> Result<Rc<verify::Verified>, Step> {
        self.sync_keys(store, now_ms)?;
        let Some(keys) = &self.keys else {
            return Err(Step::unavailable());
        };
        // A miss is a verification: a request re-asked while the keys are fetched is not
        // counted again.
        self.decision_misses += 1;
        let leeway_s = self.config.accept.leeway_s;
        match verify::verify(token, keys, now_ms / 1000, leeway_s) {
            Ok(verified) => {
                let verified = Rc::new(verified);
                let until = verified.exp_s.saturating_add(leeway_s).saturating_mul(1000);
                let size = token.len() * 2 + 256;
                self.verified.insert(
                    TokenKey(token.clone()),
                    verified.clone(),
                    size,
                    until,
                    now_ms,
                );
                Ok(verified)
            }
            Err(TokenProblem::UnknownKey) => {
                let gap = self.config.idp.rediscovery_ms;
                match self
                    .fetcher
                    .rediscover(store, &self.config.idp, gap, now_ms)
                {
                    Some(step) => Err(step),
                    None => {
                        self.detail = Some(verify::explain_unknown_kid(token, keys));
                        Err(Step::deny(Denial::InvalidToken(TokenProblem::UnknownKey)))
                    }
                }
            }
            Err(problem) => Err(Step::deny(Denial::InvalidToken(problem))),
        }
    }

    fn grant(
        &self,
        token: &str,
        policy: PolicyId,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Grant {
        let rules = self.config.policy(policy);
        let mut headers = claims::headers(&rules.claim_headers, claims);
        if let Some(th) = &self.config.upstream.token_header {
            let value = match &th.scheme {
                Some(scheme) => format!("{scheme} {token}"),
                None => token.to_string(),
            };
            headers.push((th.name.clone(), value));
        }
        let removes = upstream::removals(&self.strip, &headers).cloned().collect();
        Grant {
            headers: headers.into(),
            client: policy::client_of(claims).map(Rc::from),
            removes: Some(removes),
        }
    }

    fn check_client(
        &mut self,
        store: &mut dyn SharedStore,
        client: &ClientCredentials,
        policy: PolicyId,
        look: Look,
        now_ms: u64,
    ) -> Step {
        if let Some(allowed) = &self.config.policy(policy).clients_allowed {
            if !allowed.contains(&client.id) {
                return Step::deny(Denial::InvalidToken(TokenProblem::ClientNotAllowed));
            }
        }
        let exchanged =
            self.clients
                .exchange(store, &mut self.fetcher, &self.config, client, look, now_ms);
        let token = match exchanged {
            Exchange::Token(token) => token,
            Exchange::Step(step) => return step,
        };
        match self.check_token(store, &token, policy, Some(client), look, now_ms) {
            // The IdP issued a token signed with a key it has not published to us yet (it
            // is rotating, and the refetch allowance is spent): not the client's fault, so
            // not 401. Retry after the allowance comes back.
            Step::Done(Verdict::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))) => {
                Step::deny(Denial::IdpUnavailable {
                    retry_after_s: self.config.idp.rediscovery_ms.div_ceil(1000).max(1),
                })
            }
            step => step,
        }
    }

    /// Brings this VM's key set up to the shared one; without any, says how to get one.
    fn sync_keys(&mut self, store: &mut dyn SharedStore, now_ms: u64) -> Result<(), Step> {
        let layout = self.fetcher.layout();
        let seen = self.keys.as_ref().and(self.keys_cas);
        let Some((record, cas)) =
            layout.read_if_changed::<Fetched<String>>(store, &layout.jwks(), seen)
        else {
            return Ok(());
        };
        if let Some(doc) = &record.value {
            if record.version != self.keys_version || self.keys.is_none() {
                if let Ok(set) = KeySet::parse(doc.as_bytes()) {
                    self.keys = Some(set);
                    self.keys_version = record.version;
                }
            }
        }
        // Up to date with this record only if it holds the keys this VM has.
        self.keys_cas =
            (self.keys.is_some() && record.version == self.keys_version && record.value.is_some())
                .then_some(cas);
        if self.keys.is_some() {
            return Ok(());
        }
        Err(self.fetcher.step(
            store,
            &self.config.idp,
            Resource::Jwks,
            Ask::Document,
            now_ms,
        ))
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
        if body.len() > MAX_RESPONSE_BYTES {
            self.fetcher.fail(store, resource, now_ms);
            return Applied::Failed(format!("{} answer too large", resource.name()));
        }
        match resource {
            Resource::Discovery => {
                self.fetcher
                    .on_discovery(store, &self.config.idp, status, body, now_ms)
            }
            Resource::Jwks => self.on_key_set(store, status, body, now_ms),
            Resource::Token(key) => self.clients.on_answer(
                store,
                &self.fetcher,
                &self.config.accept,
                key,
                (status, body),
                now_ms,
            ),
            Resource::Introspection(key) => self.answers.on_answer(
                store,
                &self.fetcher,
                &self.config,
                key,
                (status, body),
                now_ms,
            ),
        }
    }

    fn on_key_set(
        &mut self,
        store: &mut dyn SharedStore,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
    ) -> Applied {
        let parsed = idp::check_jwks_response(status)
            .and_then(|()| KeySet::parse(body).map_err(str::to_string))
            .and_then(|set| {
                String::from_utf8(body.to_vec())
                    .map(|doc| (set, doc))
                    .map_err(|_| "not UTF-8".to_string())
            });
        match parsed {
            Ok((set, doc)) => {
                let key = self.fetcher.layout().jwks();
                let version =
                    self.fetcher
                        .layout()
                        .update(store, &key, |r: &mut Fetched<String>| {
                            r.succeed(doc.clone(), now_ms);
                            r.version
                        });
                self.keys = Some(set);
                self.keys_version = version.unwrap_or(self.keys_version);
                self.keys_cas = None;
                Applied::Stored
            }
            Err(why) => {
                self.fetcher.fail(store, &Resource::Jwks, now_ms);
                Applied::Failed(why)
            }
        }
    }

    /// The fetch for `resource` will not be answered: let the next one in at once.
    pub fn abandon(&mut self, store: &mut dyn SharedStore, resource: &Resource, now_ms: u64) {
        self.fetcher.release(store, resource, now_ms);
    }

    /// Whether a fetch of `resource` is still in flight (somewhere among the workers).
    pub fn is_busy(&self, store: &dyn SharedStore, resource: &Resource, now_ms: u64) -> bool {
        self.fetcher.is_busy(store, resource, now_ms)
    }

    /// Work for the timer: fetch the key set at start-up (retrying with backoff), refresh
    /// it periodically, refresh client tokens ahead of expiry, and sweep expired entries.
    pub fn background(&mut self, store: &mut dyn SharedStore, now_ms: u64) -> Vec<Fetch> {
        let purge = now_ms.saturating_sub(self.purged_ms) >= PURGE_EVERY_MS;
        if purge {
            self.decisions.purge_expired(now_ms);
            self.answers.purge_expired(now_ms);
            self.purged_ms = now_ms;
        }
        self.fetcher.layout_mut().heartbeat(store, now_ms);
        let mut out = Vec::new();
        if now_ms >= self.keys_fresh_until_ms {
            let record: Fetched<String> = self
                .fetcher
                .layout()
                .read(store, &self.fetcher.layout().jwks());
            let s = record.state;
            let due =
                record.value.is_none() || now_ms.saturating_sub(s.completed_ms) >= JWKS_MAX_AGE_MS;
            if !due {
                self.keys_fresh_until_ms = s.completed_ms.saturating_add(JWKS_MAX_AGE_MS);
            } else if !s.is_busy(now_ms) && s.retry_at_ms <= now_ms {
                if let Step::Fetch(f) = self.fetcher.step(
                    store,
                    &self.config.idp,
                    Resource::Jwks,
                    Ask::Document,
                    now_ms,
                ) {
                    out.push(f);
                }
            }
        }
        out.extend(self.clients.background(
            store,
            &mut self.fetcher,
            &self.config.idp,
            purge,
            now_ms,
        ));
        out
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
