//! Asking the IdP whether a token is active (RFC 7662): for opaque tokens, which cannot be
//! verified locally, and for JWTs when `introspect_jwt_tokens` asks for revocation checks.
//!
//! Answers are shared by every worker (in the answer buckets of `records`, keyed on a hash
//! of the token, never the token), so concurrent requests with one token make one call
//! across workers; each VM keeps its own copy of the answers it serves. An active answer is
//! kept until its `exp` (capped by `cache_ttl_max`), an inactive one for `cache_ttl_neg`:
//! Okta rate-limits its introspection endpoint, so caching is not optional.

use std::rc::Rc;

use serde_json::{Map, Value};

use crate::cache::{key_of, BoundedCache, Key};
use crate::config::{Accept, Config};
use crate::credentials::ClientCredentials;
use crate::fetch::{Applied, Ask, Fetcher, Look, Resource, Step};
use crate::idp::{self, Introspected};
use crate::outcome::TokenProblem;
use crate::records::{AnswerValue, Bucket};
use crate::store::SharedStore;

const ANSWER_ENTRIES: usize = 4096;
const ANSWER_BYTES: usize = 8 << 20;
/// How long an active answer without `exp` is trusted when `cache_ttl_max` is not set.
pub const NO_EXP_TTL_MS: u64 = 300_000;

/// An active answer: the token's claims, trusted until `until_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Active {
    pub claims: Map<String, Value>,
    pub until_ms: u64,
}

#[derive(Debug, Clone)]
enum Local {
    Active(Rc<Active>),
    Inactive,
}

/// What the IdP says of a token now.
#[derive(Debug)]
pub enum Answer {
    Active(Rc<Active>),
    Inactive,
    /// Not known yet (or not any more): what to do to find out.
    Step(Step),
}

pub struct Introspections {
    /// This VM's copy of the answers, per token. Keyed on the whole token: callers choose
    /// opaque tokens freely, so the signature-tail hash of `TokenKey` would let them pile
    /// entries onto one hash.
    local: BoundedCache<Rc<str>, Local>,
    /// What, besides the token, an answer's shared key depends on: the issuer and the
    /// configured endpoint, worked out once.
    scope: String,
    /// Monotonic. A miss is a request that found no answer in this VM when it arrived.
    pub hits: u64,
    pub misses: u64,
}

impl Introspections {
    pub fn new(config: &Config) -> Introspections {
        let endpoint = config
            .idp
            .introspection_endpoint
            .as_ref()
            .map(|u| format!("{}{}", u.authority, u.path))
            .unwrap_or_default();
        Introspections {
            local: BoundedCache::new(ANSWER_ENTRIES, ANSWER_BYTES),
            scope: format!("{} {endpoint}", config.idp.issuer),
            hits: 0,
            misses: 0,
        }
    }

    /// The IdP's answer for `token`, asked as `asker` when it must be asked. Without
    /// caching, only an answer fetched for (or while) the request may serve it.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        &mut self,
        store: &mut dyn SharedStore,
        fetcher: &mut Fetcher,
        config: &Config,
        token: &Rc<str>,
        asker: &ClientCredentials,
        look: Look,
        now_ms: u64,
    ) -> Answer {
        let cache = config.accept.cache_introspection;
        if cache {
            if let Some(local) = self.local.get(token, now_ms) {
                self.hits += 1;
                return match local {
                    Local::Active(a) => Answer::Active(a.clone()),
                    Local::Inactive => Answer::Inactive,
                };
            }
        }
        // A request looked at again while it waits is one miss, not one a look.
        if !look.again {
            self.misses += 1;
        }
        let key = key_of(&[b"introspection", self.scope.as_bytes(), token.as_bytes()]);
        let entry = fetcher.layout().answer_entry(store, &key);
        let started_ms = look.started_ms;
        let fresh_enough = cache || entry.fetched_ms >= started_ms;
        match entry.value {
            // An answer fetched for this request serves it even if already past trust (the
            // token's own times then refuse it).
            Some(AnswerValue::Active { claims, until_ms })
                if fresh_enough && (now_ms < until_ms || entry.fetched_ms >= started_ms) =>
            {
                // Written by a VM of this configuration; unreadable only if corrupted, and
                // then asked again.
                if let Some(claims) = crate::verify::unique_object(claims.as_bytes()) {
                    let size = token.len() + claims_size(&claims);
                    let active = Rc::new(Active { claims, until_ms });
                    if cache && now_ms < until_ms {
                        self.local.insert(
                            token.clone(),
                            Local::Active(active.clone()),
                            size,
                            until_ms,
                            now_ms,
                        );
                    }
                    return Answer::Active(active);
                }
            }
            Some(AnswerValue::Inactive { until_ms })
                if fresh_enough && (now_ms < until_ms || entry.fetched_ms >= started_ms) =>
            {
                if cache {
                    self.local.insert(
                        token.clone(),
                        Local::Inactive,
                        token.len() + 64,
                        until_ms,
                        now_ms,
                    );
                }
                return Answer::Inactive;
            }
            _ => {}
        }
        Answer::Step(fetcher.step(
            store,
            &config.idp,
            Resource::Introspection(key),
            Ask::Introspect {
                token,
                client: asker,
            },
            now_ms,
        ))
    }

    /// Applies the introspection endpoint's answer for the token hashed to `key`.
    pub fn on_answer(
        &mut self,
        store: &mut dyn SharedStore,
        fetcher: &Fetcher,
        config: &Config,
        key: &Key,
        (status, body): (Option<u32>, &[u8]),
        now_ms: u64,
    ) -> Applied {
        let (value, applied) = match idp::parse_introspection(status, body) {
            Introspected::Active(mut claims) => {
                // The answer came from the configured issuer's endpoint, asked as our own
                // client: an answer that leaves `iss` out (RFC 7662 allows it) is its.
                claims
                    .entry("iss")
                    .or_insert_with(|| Value::String(config.idp.issuer.clone()));
                let until_ms = trusted_until(&config.accept, &claims, now_ms);
                match serde_json::to_string(&claims) {
                    Ok(claims) => (AnswerValue::Active { claims, until_ms }, Applied::Stored),
                    Err(_) => {
                        fetcher.fail(store, &Resource::Introspection(*key), now_ms);
                        return Applied::Failed("the answer could not be kept".into());
                    }
                }
            }
            Introspected::Inactive => (
                AnswerValue::Inactive {
                    until_ms: now_ms.saturating_add(config.accept.neg_ttl_ms),
                },
                Applied::Inactive,
            ),
            Introspected::ClientRefused(code) => {
                fetcher.fail(store, &Resource::Introspection(*key), now_ms);
                return Applied::Failed(format!(
                    "the introspection endpoint refused the gateway's own client ({code}): \
                     check client_id, client_secret and introspection_endpoint_auth_method"
                ));
            }
            Introspected::Unavailable(why) => {
                fetcher.fail(store, &Resource::Introspection(*key), now_ms);
                return Applied::Failed(why);
            }
        };
        fetcher.layout().update(
            store,
            &fetcher.layout().answer_bucket(key),
            |b: &mut Bucket<AnswerValue>| {
                b.with_entry(key, now_ms, |e| e.succeed(value.clone(), now_ms))
            },
        );
        applied
    }

    /// Drops expired copies (the timer's sweep).
    pub fn purge_expired(&mut self, now_ms: u64) {
        self.local.purge_expired(now_ms);
    }

    /// How many answers this VM holds.
    pub fn len(&self) -> usize {
        self.local.len()
    }

    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
    }
}

/// How long an active answer is trusted: until its `exp` (with `leeway`), or
/// [`NO_EXP_TTL_MS`] without one, and never past `cache_ttl_max`.
fn trusted_until(accept: &Accept, claims: &Map<String, Value>, now_ms: u64) -> u64 {
    let until = match claims.get("exp").and_then(Value::as_u64) {
        Some(exp_s) => exp_s.saturating_add(accept.leeway_s).saturating_mul(1000),
        None => now_ms.saturating_add(accept.ttl_max_ms.unwrap_or(NO_EXP_TTL_MS)),
    };
    accept
        .ttl_max_ms
        .map_or(until, |max| until.min(now_ms.saturating_add(max)))
}

/// An active answer's own times, checked as a JWT's are (`leeway` exactly): the IdP may
/// call a token active that this gateway's clock says has expired.
pub fn check_times(
    claims: &Map<String, Value>,
    now_s: u64,
    leeway_s: u64,
) -> Result<(), TokenProblem> {
    // RFC 7662 §2.2: whole seconds. Anything else present is not a time anyone can check.
    let time = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(TokenProblem::Malformed),
    };
    if time("exp")?.is_some_and(|exp| now_s >= exp.saturating_add(leeway_s)) {
        return Err(TokenProblem::Expired);
    }
    if time("nbf")?.is_some_and(|nbf| now_s.saturating_add(leeway_s) < nbf) {
        return Err(TokenProblem::NotYetValid);
    }
    if time("iat")?.is_some_and(|iat| iat > now_s.saturating_add(leeway_s)) {
        return Err(TokenProblem::IssuedInFuture);
    }
    Ok(())
}

fn claims_size(claims: &Map<String, Value>) -> usize {
    serde_json::to_string(claims).map_or(1024, |s| s.len() * 2) + 128
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn times(v: Value) -> Result<(), TokenProblem> {
        check_times(v.as_object().unwrap(), 1_000, 5)
    }

    #[test]
    fn an_answers_times_are_checked_with_leeway_exactly_and_must_be_whole_seconds() {
        assert_eq!(times(json!({})), Ok(()));
        assert_eq!(times(json!({"exp": 996})), Ok(()));
        assert_eq!(times(json!({"exp": 995})), Err(TokenProblem::Expired));
        assert_eq!(times(json!({"nbf": 1_005})), Ok(()));
        assert_eq!(times(json!({"nbf": 1_006})), Err(TokenProblem::NotYetValid));
        assert_eq!(
            times(json!({"iat": 1_006})),
            Err(TokenProblem::IssuedInFuture)
        );
        for bad in [json!(1.5e9), json!("1800000000"), json!(-1), json!(null)] {
            assert_eq!(
                times(json!({"exp": bad})),
                Err(TokenProblem::Malformed),
                "{bad}"
            );
        }
    }
}
