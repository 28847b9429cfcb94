//! `soak` (issue 6; run by `scripts/soak`, not part of CI): minutes of mixed load against a real
//! Envoy (two workers, so two VMs sharing state) running the built filter, while the mock IdP
//! rotates its signing key, goes down and misbehaves. Every answer is judged against what its
//! request deserves; Envoy's memory is sampled all along.
//!
//! Settings (environment): SOAK_SECONDS (default 300), SOAK_TASKS concurrent request loops
//! (default 16), SOAK_SEED (default 1; each loop draws its request kinds from its own seeded
//! generator, so the mix is reproducible, the timing is not), SOAK_WEIGHTS (`Kind=weight,…`
//! over [`Kind::MIX`]), SOAK_OUT (default docs/soak.md), SOAK_NOTE (a line added to the
//! report).
//!
//! Exits 0 when every answer was expected or inside the documented tolerance (see
//! [`judge`]), 1 otherwise — and always 1 when an invalid credential got a 200, a client
//! secret reached the upstream, or the upstream saw more requests than were answered 200.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::idp::{Counts, Endpoint, Fault, MockIdp, AUDIENCE};
use testkit::keys::{self, Sig};
use testkit::load::{self, EnvoyMemory, Provenance};
use testkit::Stack;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Fixture keys in the order the IdP signs with them; after the last, the first again.
const KEY_CYCLE: [&str; 4] = ["rsa-1", "ec-1", "rsa-2", "ed-1"];
const ROTATE_EVERY: Duration = Duration::from_secs(30);
/// Lifetime of every valid token, issued by the IdP or minted here. A key that stopped
/// signing stays published this long, so no unexpired token outlives its key (Okta keeps
/// the previous key published the same way).
const TOKEN_TTL: Duration = Duration::from_secs(45);
const OUTAGE_FIRST: Duration = Duration::from_secs(20);
const OUTAGE_EVERY: Duration = Duration::from_secs(45);
const OUTAGE_FOR: Duration = Duration::from_secs(5);
/// The one fault window of a full-length run: token endpoint 500, JWKS slower than the
/// filter's timeout. Shorter runs put it at the same fraction of the run.
const FAULT_AT: Duration = Duration::from_secs(130);
const FAULT_FOR: Duration = Duration::from_secs(15);
const FAULT_JWKS_DELAY: Duration = Duration::from_secs(3);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The report's memory table shows every third sample (and the last); the summary line
/// under it covers all of them.
const SHOW_EVERY_NTH: usize = 3;

/// The filter's `timeout` (ms) and `rediscovery_lifetime` (s) in this run.
const TIMEOUT_MS: u64 = 2000;
const REDISCOVERY_S: u64 = 5;
/// 503s are tolerated for a disturbance's length after it ends (the filter's backoff, doubling
/// from 1 s, can push its first retry that far past the end) plus this: one callout timeout.
const GRACE_EXTRA: Duration = Duration::from_millis(TIMEOUT_MS);
/// After a rotation, a token signed with the new key may be refused until the filter refetches
/// the key set, which it does at most once per `rediscovery_lifetime` (unknown-kid tokens in
/// the mix spend that allowance too), plus a callout's time.
const NEW_KEY_WINDOW: Duration = Duration::from_millis(REDISCOVERY_S * 1000 + TIMEOUT_MS);

/// A bearer token a loop holds is replaced after this many requests or this age, or when the
/// IdP signs with another key.
const BEARER_USES: u32 = 20;
const BEARER_MAX_AGE: Duration = Duration::from_secs(20);
/// Invalid tokens are re-minted this often (the filter caches the outcome of a token whose
/// signature verified, so reuse exercises that cache and fresh ones the full path).
const BAD_TOKEN_USES: u32 = 50;
/// A client registered during the run is used this many times, then a new one.
const NEW_CLIENT_USES: u32 = 5;

/// Clients registered before the run, whose tokens the filter caches.
const CLIENTS: [(&str, &str); 4] = [
    ("soak-a", "soak-a-secret"),
    ("soak-b", "soak-b-secret"),
    ("soak-c", "soak-c-secret"),
    ("soak-d", "soak-d-secret"),
];

/// What a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    CcValid,
    CcNew,
    CcWrongSecret,
    CcNewWrongSecret,
    BearerValid,
    BearerNoScope,
    BearerTampered,
    BearerExpired,
    BearerWrongAudience,
    BearerUnknownKid,
    BearerAlgNone,
    NoCredential,
}

impl Kind {
    /// Each kind with its default weight in the mix (they add up to 100).
    const MIX: Mix = [
        (Kind::CcValid, 30),
        (Kind::CcNew, 3),
        (Kind::CcWrongSecret, 5),
        (Kind::CcNewWrongSecret, 2),
        (Kind::BearerValid, 30),
        (Kind::BearerNoScope, 4),
        (Kind::BearerTampered, 5),
        (Kind::BearerExpired, 5),
        (Kind::BearerWrongAudience, 4),
        (Kind::BearerUnknownKid, 2),
        (Kind::BearerAlgNone, 2),
        (Kind::NoCredential, 8),
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::CcValid => "client credentials, registered client",
            Kind::CcNew => "client credentials, client registered during the run",
            Kind::CcWrongSecret => "client credentials, wrong secret (the same one)",
            Kind::CcNewWrongSecret => "client credentials, a new wrong secret each time",
            Kind::BearerValid => "bearer, valid (fresh every 20 requests)",
            Kind::BearerNoScope => "bearer, valid but without the required scope",
            Kind::BearerTampered => "bearer, payload changed after signing",
            Kind::BearerExpired => "bearer, expired",
            Kind::BearerWrongAudience => "bearer, wrong audience",
            Kind::BearerUnknownKid => "bearer, unknown kid",
            Kind::BearerAlgNone => "bearer, alg none",
            Kind::NoCredential => "no credential",
        }
    }

    /// The status this request deserves when the IdP behaves.
    fn expected(self) -> u16 {
        match self {
            Kind::CcValid | Kind::CcNew | Kind::BearerValid => 200,
            Kind::BearerNoScope => 403,
            _ => 401,
        }
    }

    /// Whether the credential is good: a 200 for anything else is a hard failure.
    fn valid(self) -> bool {
        self.expected() == 200
    }

    /// Whether answering it may need the IdP (a token fetch or a key-set refetch), so 503
    /// is tolerated while the IdP is disturbed.
    fn may_need_idp(self) -> bool {
        self != Kind::NoCredential
    }

    /// The status tolerated right after a rotation, for kinds whose token is signed with the
    /// key that just started signing, before the filter could fetch it: 503 for client
    /// credentials (the IdP issued the token; not the client's fault), 401 for a bearer token
    /// (an unknown `kid` is `invalid_token`).
    fn new_key_status(self) -> Option<u16> {
        match self {
            Kind::CcValid | Kind::CcNew => Some(503),
            Kind::BearerValid | Kind::BearerNoScope => Some(401),
            _ => None,
        }
    }

    fn path(self) -> String {
        format!("/soak/{self:?}")
    }
}

/// Request kinds with their weights.
type Mix = [(Kind, u64); 12];

/// The default mix with the weights of SOAK_WEIGHTS (`Kind=weight,…`, e.g.
/// `BearerUnknownKid=0`) put over it.
fn mix_from_env() -> Result<Mix, Error> {
    let mut mix = Kind::MIX;
    let spec = std::env::var("SOAK_WEIGHTS").unwrap_or_default();
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = item
            .split_once('=')
            .and_then(|(name, w)| Some((name.trim(), w.trim().parse::<u64>().ok()?)));
        let slot = parsed.and_then(|(name, w)| {
            let slot = mix.iter_mut().find(|(k, _)| format!("{k:?}") == name)?;
            Some((slot, w))
        });
        let Some((slot, weight)) = slot else {
            let names: Vec<String> = Kind::MIX.iter().map(|(k, _)| format!("{k:?}")).collect();
            return Err(format!(
                "SOAK_WEIGHTS: {item:?} is not Kind=weight; kinds: {}",
                names.join(" ")
            )
            .into());
        };
        slot.1 = weight;
    }
    if mix.iter().all(|(_, w)| *w == 0) {
        return Err("SOAK_WEIGHTS leaves no request kind".into());
    }
    Ok(mix)
}

/// What chaos did, in order, and what the judge needs from it.
#[derive(Default)]
struct ChaosState {
    active_kid: &'static str,
    published: Vec<&'static str>,
    /// IdP outages and fault windows: (from, to, grace after `to`); `to` is `None` while on.
    disturbances: Vec<(Instant, Option<Instant>, Duration)>,
    /// When each key started signing.
    activations: Vec<(&'static str, Instant)>,
    /// For the report: offset from the start and what happened.
    log: Vec<(Duration, String)>,
}

struct Chaos {
    start: Instant,
    state: Mutex<ChaosState>,
}

impl Chaos {
    fn state(&self) -> MutexGuard<'_, ChaosState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active_kid(&self) -> &'static str {
        self.state().active_kid
    }

    fn note(&self, state: &mut ChaosState, what: String) {
        state.log.push((self.start.elapsed(), what));
    }
}

/// One scheduled chaos action.
#[derive(Clone, Debug)]
enum Action {
    Rotate(&'static str),
    Retire(&'static str),
    Down,
    Up,
    FaultOn,
    FaultOff,
}

/// The chaos schedule of a run of `run` length, by offset from the start.
fn schedule(run: Duration) -> Vec<(Duration, Action)> {
    let mut plan = Vec::new();
    let mut at = ROTATE_EVERY;
    let mut n = 1;
    while at < run {
        let previous = KEY_CYCLE[(n - 1) % KEY_CYCLE.len()];
        plan.push((at, Action::Rotate(KEY_CYCLE[n % KEY_CYCLE.len()])));
        if at + TOKEN_TTL < run {
            plan.push((at + TOKEN_TTL, Action::Retire(previous)));
        }
        at += ROTATE_EVERY;
        n += 1;
    }
    let mut at = OUTAGE_FIRST;
    while at + OUTAGE_FOR < run {
        plan.push((at, Action::Down));
        plan.push((at + OUTAGE_FOR, Action::Up));
        at += OUTAGE_EVERY;
    }
    let full = Duration::from_secs(300);
    let (fault_at, fault_for) = if run >= full {
        (FAULT_AT, FAULT_FOR)
    } else {
        (
            FAULT_AT.mul_f64(run.as_secs_f64() / full.as_secs_f64()),
            FAULT_FOR.mul_f64(run.as_secs_f64() / full.as_secs_f64()),
        )
    };
    if fault_at + fault_for < run {
        plan.push((fault_at, Action::FaultOn));
        plan.push((fault_at + fault_for, Action::FaultOff));
    }
    plan.sort_by_key(|(at, _)| *at);
    plan
}

async fn run_chaos(
    chaos: Arc<Chaos>,
    stack: Arc<Stack>,
    plan: Vec<(Duration, Action)>,
) -> Result<(), Error> {
    let idp = &stack.idp;
    for (at, action) in plan {
        tokio::time::sleep_until((chaos.start + at).into()).await;
        match action {
            Action::Rotate(kid) => {
                let published = {
                    let mut s = chaos.state();
                    if !s.published.contains(&kid) {
                        s.published.push(kid);
                    }
                    // Recorded before the IdP signs with it, so every answer it affects
                    // finds the activation.
                    s.activations.push((kid, Instant::now()));
                    let published = s.published.clone();
                    chaos.note(
                        &mut s,
                        format!("rotate: sign with `{kid}`; publish {published:?}"),
                    );
                    published
                };
                idp.publish(&published);
                idp.rotate_to(kid);
                chaos.state().active_kid = kid;
            }
            Action::Retire(kid) => {
                let published = {
                    let mut s = chaos.state();
                    s.published.retain(|k| *k != kid);
                    let published = s.published.clone();
                    chaos.note(&mut s, format!("retire `{kid}`: publish {published:?}"));
                    published
                };
                idp.publish(&published);
            }
            Action::Down => {
                {
                    let mut s = chaos.state();
                    s.disturbances
                        .push((Instant::now(), None, OUTAGE_FOR + GRACE_EXTRA));
                    chaos.note(&mut s, "IdP down (connections refused)".into());
                }
                idp.down().await;
            }
            Action::FaultOn => {
                {
                    let mut s = chaos.state();
                    s.disturbances
                        .push((Instant::now(), None, FAULT_FOR + GRACE_EXTRA));
                    chaos.note(
                        &mut s,
                        format!(
                            "faults on: token endpoint 500, JWKS delayed {} s (filter timeout {} s)",
                            FAULT_JWKS_DELAY.as_secs(),
                            TIMEOUT_MS / 1000
                        ),
                    );
                }
                idp.set_fault(Endpoint::Token, Fault::Status(500));
                idp.set_fault(Endpoint::Jwks, Fault::Delay(FAULT_JWKS_DELAY));
            }
            Action::Up | Action::FaultOff => {
                if matches!(action, Action::Up) {
                    idp.up().await;
                } else {
                    idp.clear_faults();
                }
                let mut s = chaos.state();
                let now = Instant::now();
                if let Some(open) = s.disturbances.iter_mut().rev().find(|d| d.1.is_none()) {
                    open.1 = Some(now);
                }
                let what = match action {
                    Action::Up => "IdP up",
                    _ => "faults off",
                };
                chaos.note(&mut s, what.into());
            }
        }
    }
    Ok(())
}

/// How an answer was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Expected,
    /// 503 while the IdP was down or faulty (or within its grace after).
    Tolerated503,
    /// 401 (bearer) or 503 (client credentials) for a token signed with a key activated
    /// within the new-key window.
    ToleratedNewKey,
    Unexpected,
    /// A 200 for an invalid credential.
    WrongAllow,
}

/// The tolerance rules of the report, in code.
///
/// - An invalid credential answered 200 is a hard failure, always.
/// - The expected status ([`Kind::expected`]) is fine, always.
/// - 503 is tolerated for a request that may need the IdP if it was in flight during an
///   outage or fault window, or within that window's length plus one callout timeout after
///   it (the filter's backoff doubles from 1 s).
/// - [`Kind::new_key_status`] is tolerated for a request involving a token signed with a key
///   that started signing less than `rediscovery_lifetime` plus one timeout before the request
///   ended; a disturbance overlapping that window extends it past the disturbance's grace.
/// - Anything else (other statuses, no answer) is unexpected.
fn judge(
    chaos: &ChaosState,
    kind: Kind,
    status: Option<u16>,
    kid: Option<&str>,
    sent: Instant,
    done: Instant,
) -> Verdict {
    let Some(status) = status else {
        return Verdict::Unexpected;
    };
    if status == 200 && !kind.valid() {
        return Verdict::WrongAllow;
    }
    if status == kind.expected() {
        return Verdict::Expected;
    }
    let overlaps = |from: Instant, to: Instant| sent <= to && done >= from;
    let disturbance_end = |to: Option<Instant>, grace: Duration| match to {
        Some(to) => to + grace,
        None => done + Duration::from_secs(3600),
    };
    if status == 503
        && kind.may_need_idp()
        && chaos
            .disturbances
            .iter()
            .any(|&(from, to, grace)| overlaps(from, disturbance_end(to, grace)))
    {
        return Verdict::Tolerated503;
    }
    if kind.new_key_status() == Some(status) {
        let fresh_key = chaos.activations.iter().any(|&(activated, at)| {
            if kid.is_some_and(|k| k != activated) {
                return false;
            }
            let mut end = at + NEW_KEY_WINDOW;
            for &(from, to, grace) in &chaos.disturbances {
                let until = disturbance_end(to, grace);
                if from <= end && until >= at {
                    end = end.max(until + NEW_KEY_WINDOW);
                }
            }
            overlaps(at, end)
        });
        if fresh_key {
            return Verdict::ToleratedNewKey;
        }
    }
    Verdict::Unexpected
}

/// Whether a denial carries what the contract says it must: `WWW-Authenticate: Bearer` on 401
/// and 403, `Retry-After` on 503. Other statuses have nothing to check.
fn denial_well_formed(status: u16, headers: &reqwest::header::HeaderMap) -> bool {
    let has = |name: &str, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(prefix))
    };
    match status {
        401 | 403 => has("www-authenticate", "Bearer realm="),
        503 => has("retry-after", ""),
        _ => true,
    }
}

/// Whether the echo upstream's account of what it received (`body`) shows the caller's client
/// secret: in clear anywhere, or because the `Authorization` it got is not the filter's
/// `Bearer` (the caller's `Basic` carries the secret in base64).
fn leaked(body: &[u8], secret: &str) -> bool {
    if body.windows(secret.len()).any(|w| w == secret.as_bytes()) {
        return true;
    }
    let echoed: Value = serde_json::from_slice(body).unwrap_or_default();
    !echoed["headers"]["authorization"]
        .as_str()
        .is_some_and(|a| a.starts_with("Bearer "))
}

/// Answers per kind.
#[derive(Default, Clone)]
struct KindTally {
    /// By status code; `0` means no answer (timeout, connection error).
    statuses: BTreeMap<u16, u64>,
    expected: u64,
    tolerated_503: u64,
    tolerated_new_key: u64,
    unexpected: u64,
    wrong_allow: u64,
}

#[derive(Default)]
struct Tally {
    kinds: BTreeMap<Kind, KindTally>,
    /// A 200 whose upstream request still carried the caller's client secret.
    secret_leaks: u64,
    /// The first few unexpected answers, for the report.
    examples: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (kind, t) in other.kinds {
            let mine = self.kinds.entry(kind).or_default();
            for (status, n) in t.statuses {
                *mine.statuses.entry(status).or_default() += n;
            }
            mine.expected += t.expected;
            mine.tolerated_503 += t.tolerated_503;
            mine.tolerated_new_key += t.tolerated_new_key;
            mine.unexpected += t.unexpected;
            mine.wrong_allow += t.wrong_allow;
        }
        self.secret_leaks += other.secret_leaks;
        for e in other.examples {
            if self.examples.len() < 20 {
                self.examples.push(e);
            }
        }
    }

    fn sum(&self, f: impl Fn(&KindTally) -> u64) -> u64 {
        self.kinds.values().map(f).sum()
    }
}

/// SplitMix64: a tiny seeded generator, so each loop's sequence of kinds is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn kind(&mut self, mix: &Mix) -> Kind {
        let total: u64 = mix.iter().map(|(_, w)| w).sum();
        let mut pick = self.below(total.max(1));
        for &(kind, weight) in mix {
            if pick < weight {
                return kind;
            }
            pick -= weight;
        }
        Kind::NoCredential
    }
}

/// A token a loop keeps using for a while.
struct Held {
    token: String,
    kid: &'static str,
    uses: u32,
    minted: Instant,
}

impl Held {
    fn new((token, kid): (String, &'static str)) -> Held {
        Held {
            token,
            kid,
            uses: 0,
            minted: Instant::now(),
        }
    }

    fn use_once(&mut self) -> Credential {
        self.uses += 1;
        Credential::Bearer(self.token.clone(), Some(self.kid))
    }
}

/// How a token minted here differs from a valid one.
#[derive(Clone, Copy)]
enum Variant {
    Valid,
    NoScope,
    Expired,
    WrongAudience,
    /// Signed by a real key, under a `kid` the IdP never published.
    UnknownKid,
    /// `alg: none`, no signature.
    AlgNone,
}

/// Signs a token for the IdP's issuer with fixture key `kid`, off the async threads (RSA
/// signing in pure Rust takes a couple of milliseconds). Returns it with the `kid` its header
/// names.
async fn mint(
    issuer: String,
    kid: &'static str,
    variant: Variant,
    jti: u64,
) -> Result<(String, &'static str), Error> {
    let job = move || {
        let now = keys::now();
        let mut claims = json!({
            "ver": 1,
            "jti": format!("AT.soak-{jti:016x}"),
            "iss": issuer,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + TOKEN_TTL.as_secs(),
            "cid": "soak-bearer",
            "sub": "soak-bearer",
            "scp": ["read"],
        });
        let alg = keys::default_alg(kid);
        match variant {
            Variant::Valid => {}
            Variant::NoScope => claims["scp"] = json!(["write"]),
            Variant::Expired => {
                claims["iat"] = json!(now - 600);
                claims["exp"] = json!(now - 300);
            }
            Variant::WrongAudience => claims["aud"] = json!("api://someone-else"),
            Variant::UnknownKid => {
                let (kid, alg) = ("ed-1", "EdDSA");
                let header = json!({"alg": alg, "kid": "soak-unknown"});
                let token = keys::mint_raw(&header, &claims, Sig::Key { kid, alg });
                return (token, "soak-unknown");
            }
            Variant::AlgNone => {
                let header = json!({"alg": "none", "kid": kid});
                return (keys::unsigned_token(&header, &claims), kid);
            }
        }
        let header = json!({"alg": alg, "kid": kid});
        (keys::mint_raw(&header, &claims, Sig::Key { kid, alg }), kid)
    };
    Ok(tokio::task::spawn_blocking(job).await?)
}

/// The same token with `sub` changed in its payload and the signature kept.
fn tampered(token: &str) -> String {
    let mut parts = token.splitn(3, '.');
    let (Some(header), Some(_), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return format!("{token}x");
    };
    let mut claims = keys::decode_claims(token);
    claims["sub"] = json!("admin");
    format!(
        "{header}.{}.{signature}",
        keys::b64url(claims.to_string().as_bytes())
    )
}

/// One request loop's state.
struct Loop {
    id: usize,
    rng: Rng,
    issuer: String,
    bearer: Option<Held>,
    bad: BTreeMap<Kind, Held>,
    new_client: Option<(String, String, u32)>,
    clients_made: u64,
}

enum Credential {
    None,
    Basic(String, String),
    Bearer(String, Option<&'static str>),
}

impl Loop {
    /// The credential for a request of `kind`, and the kid of the token it carries.
    async fn credential(
        &mut self,
        kind: Kind,
        chaos: &Chaos,
        idp: &MockIdp,
    ) -> Result<Credential, Error> {
        let active = chaos.active_kid();
        Ok(match kind {
            Kind::NoCredential => Credential::None,
            Kind::CcValid => {
                let (id, secret) = CLIENTS[self.rng.below(CLIENTS.len() as u64) as usize];
                Credential::Basic(id.into(), secret.into())
            }
            Kind::CcWrongSecret => Credential::Basic(CLIENTS[0].0.into(), "not-the-secret".into()),
            Kind::CcNewWrongSecret => Credential::Basic(
                CLIENTS[1].0.into(),
                format!("wrong-{:016x}", self.rng.next()),
            ),
            Kind::CcNew => {
                let stale = self
                    .new_client
                    .as_ref()
                    .is_none_or(|c| c.2 >= NEW_CLIENT_USES);
                if stale {
                    self.clients_made += 1;
                    let id = format!("soak-new-{}-{}", self.id, self.clients_made);
                    let secret = format!("{:016x}", self.rng.next());
                    idp.add_client(&id, &secret, &["read"], &["read"]);
                    self.new_client = Some((id, secret, 0));
                }
                match self.new_client.as_mut() {
                    Some((id, secret, uses)) => {
                        *uses += 1;
                        Credential::Basic(id.clone(), secret.clone())
                    }
                    None => Credential::None,
                }
            }
            Kind::BearerValid | Kind::BearerTampered => {
                let stale = self.bearer.as_ref().is_none_or(|h| {
                    h.uses >= BEARER_USES || h.kid != active || h.minted.elapsed() > BEARER_MAX_AGE
                });
                if stale {
                    let jti = self.rng.next();
                    let minted = mint(self.issuer.clone(), active, Variant::Valid, jti).await?;
                    self.bearer = Some(Held::new(minted));
                }
                match self.bearer.as_mut() {
                    Some(held) if kind == Kind::BearerValid => held.use_once(),
                    Some(held) => Credential::Bearer(tampered(&held.token), Some(held.kid)),
                    None => Credential::None,
                }
            }
            Kind::BearerNoScope
            | Kind::BearerExpired
            | Kind::BearerWrongAudience
            | Kind::BearerUnknownKid
            | Kind::BearerAlgNone => {
                let stale = self.bad.get(&kind).is_none_or(|h| {
                    h.uses >= BAD_TOKEN_USES
                        || (kind != Kind::BearerUnknownKid && h.kid != active)
                        || h.minted.elapsed() > BEARER_MAX_AGE
                });
                if stale {
                    let variant = match kind {
                        Kind::BearerNoScope => Variant::NoScope,
                        Kind::BearerExpired => Variant::Expired,
                        Kind::BearerWrongAudience => Variant::WrongAudience,
                        Kind::BearerUnknownKid => Variant::UnknownKid,
                        _ => Variant::AlgNone,
                    };
                    let jti = self.rng.next();
                    let minted = mint(self.issuer.clone(), active, variant, jti).await?;
                    self.bad.insert(kind, Held::new(minted));
                }
                self.bad
                    .get_mut(&kind)
                    .map_or(Credential::None, Held::use_once)
            }
        })
    }
}

/// Totals the sampler reads while the loops run.
#[derive(Default)]
struct Progress {
    requests: AtomicU64,
    unexpected: AtomicU64,
}

async fn request_loop(
    id: usize,
    seed: u64,
    stack: Arc<Stack>,
    chaos: Arc<Chaos>,
    progress: Arc<Progress>,
    mix: Mix,
    until: Instant,
) -> Result<Tally, Error> {
    // A client of its own, so each loop keeps its own keep-alive connection.
    let http = testkit::http_client_with_timeout(Duration::from_millis(TIMEOUT_MS * 5));
    let mut state = Loop {
        id,
        rng: Rng(seed.wrapping_mul(0x1000_0000_01B3).wrapping_add(id as u64)),
        issuer: stack.idp.issuer(),
        bearer: None,
        bad: BTreeMap::new(),
        new_client: None,
        clients_made: 0,
    };
    let mut tally = Tally::default();
    while Instant::now() < until {
        let kind = state.rng.kind(&mix);
        let credential = state.credential(kind, &chaos, &stack.idp).await?;
        let mut request = http.get(stack.envoy.url(&kind.path()));
        let mut kid = None;
        let mut secret = None;
        match credential {
            Credential::None => {}
            Credential::Basic(id, s) => {
                request = request.basic_auth(id, Some(&s));
                secret = Some(s);
            }
            Credential::Bearer(token, k) => {
                request = request.bearer_auth(token);
                kid = k;
            }
        }
        let sent = Instant::now();
        let (status, well_formed, body) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let well_formed = denial_well_formed(status, response.headers());
                // Read the whole body, so the connection is reused.
                let body = response.bytes().await.unwrap_or_default();
                (Some(status), well_formed, body)
            }
            Err(_) => (None, true, Default::default()),
        };
        let done = Instant::now();
        let verdict = match judge(&chaos.state(), kind, status, kid, sent, done) {
            Verdict::Expected | Verdict::Tolerated503 | Verdict::ToleratedNewKey
                if !well_formed =>
            {
                Verdict::Unexpected
            }
            verdict => verdict,
        };
        if status == Some(200) && secret.as_deref().is_some_and(|s| leaked(&body, s)) {
            tally.secret_leaks += 1;
        }
        let t = tally.kinds.entry(kind).or_default();
        *t.statuses.entry(status.unwrap_or(0)).or_default() += 1;
        match verdict {
            Verdict::Expected => t.expected += 1,
            Verdict::Tolerated503 => t.tolerated_503 += 1,
            Verdict::ToleratedNewKey => t.tolerated_new_key += 1,
            Verdict::Unexpected => t.unexpected += 1,
            Verdict::WrongAllow => t.wrong_allow += 1,
        }
        progress.requests.fetch_add(1, Ordering::Relaxed);
        if matches!(verdict, Verdict::Unexpected | Verdict::WrongAllow) {
            progress.unexpected.fetch_add(1, Ordering::Relaxed);
            if tally.examples.len() < 20 {
                tally.examples.push(format!(
                    "t={:.2}–{:.2} s {kind:?} kid={} → {}{} {}",
                    (sent - chaos.start).as_secs_f64(),
                    (done - chaos.start).as_secs_f64(),
                    kid.unwrap_or("-"),
                    status.map_or_else(|| "no answer".into(), |s| s.to_string()),
                    if well_formed {
                        ""
                    } else {
                        " (without WWW-Authenticate / Retry-After)"
                    },
                    String::from_utf8_lossy(&body[..body.len().min(160)])
                ));
            }
        }
    }
    Ok(tally)
}

/// One row of the memory table.
struct Sample {
    at: Duration,
    requests: u64,
    unexpected: u64,
    memory: EnvoyMemory,
    idp: Counts,
}

async fn sample(stack: &Stack, chaos: &Chaos, progress: &Progress) -> Result<Sample, Error> {
    Ok(Sample {
        at: chaos.start.elapsed(),
        requests: progress.requests.load(Ordering::Relaxed),
        unexpected: progress.unexpected.load(Ordering::Relaxed),
        memory: load::envoy_memory(&stack.http, &stack.envoy).await?,
        idp: stack.idp.counts(),
    })
}

struct Settings {
    seconds: u64,
    tasks: u64,
    seed: u64,
    mix: Mix,
    out: std::path::PathBuf,
    note: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    load::run_main("soak", run()).await
}

fn filter_config() -> Value {
    json!({
        "timeout": TIMEOUT_MS,
        "rediscovery_lifetime": REDISCOVERY_S,
        "audience_required": [AUDIENCE],
        "scopes_required": ["read"],
        "upstream_headers_claims": ["iss", "sub"],
        "upstream_headers_names": ["Issuer_Header", "X-Subject"],
    })
}

/// `Ok(false)`: the run completed but failed its checks.
async fn run() -> Result<bool, Error> {
    let settings = Settings {
        seconds: load::env_number("SOAK_SECONDS", 300)?,
        tasks: load::env_number("SOAK_TASKS", 16)?,
        seed: load::env_number("SOAK_SEED", 1)?,
        mix: mix_from_env()?,
        out: load::env_path("SOAK_OUT", "docs/soak.md"),
        note: std::env::var("SOAK_NOTE").unwrap_or_default(),
    };
    if settings.seconds < 10 || settings.tasks == 0 {
        return Err("SOAK_SECONDS must be at least 10 and SOAK_TASKS at least 1".into());
    }
    let provenance = Provenance::collect();

    let idp = MockIdp::start().await;
    idp.publish(&[KEY_CYCLE[0]]);
    idp.rotate_to(KEY_CYCLE[0]);
    idp.set_token_ttl(TOKEN_TTL);
    for (id, secret) in CLIENTS {
        idp.add_client(id, secret, &["read"], &["read"]);
    }
    let stack = Arc::new(Stack::start(idp, filter_config(), 2).await);
    eprintln!(
        "soak: Envoy --concurrency 2 at {}, {} loops for {} s",
        stack.envoy.url("/"),
        settings.tasks,
        settings.seconds
    );
    let idle = load::envoy_memory(&stack.http, &stack.envoy).await?;

    warm_up(&stack).await?;
    stack.idp.reset_counts();
    let upstream_before = stack.echo.requests();

    let run_for = Duration::from_secs(settings.seconds);
    let chaos = Arc::new(Chaos {
        start: Instant::now(),
        state: Mutex::new(ChaosState {
            active_kid: KEY_CYCLE[0],
            published: vec![KEY_CYCLE[0]],
            ..ChaosState::default()
        }),
    });
    let until = chaos.start + run_for;
    let progress = Arc::new(Progress::default());
    let plan = schedule(run_for);
    let chaos_task = tokio::spawn(run_chaos(chaos.clone(), stack.clone(), plan.clone()));
    let mut loops = tokio::task::JoinSet::new();
    for id in 0..settings.tasks as usize {
        loops.spawn(request_loop(
            id,
            settings.seed,
            stack.clone(),
            chaos.clone(),
            progress.clone(),
            settings.mix,
            until,
        ));
    }

    let mut samples = vec![sample(&stack, &chaos, &progress).await?];
    loop {
        let next = chaos.start + SAMPLE_EVERY * samples.len() as u32;
        if next >= until {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        let s = sample(&stack, &chaos, &progress).await?;
        eprintln!(
            "soak: {:>4.0} s  {:>8} requests  {} unexpected  allocated {} MiB  heap {} MiB  RSS {} MiB  IdP calls {}/{}/{}",
            s.at.as_secs_f64(),
            s.requests,
            s.unexpected,
            load::mib(s.memory.allocated),
            load::mib(s.memory.heap_size),
            load::mib_or_dash(s.memory.rss),
            s.idp.discovery,
            s.idp.jwks,
            s.idp.token
        );
        samples.push(s);
    }
    let mut tally = Tally::default();
    while let Some(joined) = loops.join_next().await {
        tally.merge(joined??);
    }
    let elapsed = chaos.start.elapsed();
    // The schedule only holds actions inside the run; whatever is left is not waited for.
    chaos_task.abort();
    // The filter moves its counters to Envoy on a 20 ms tick.
    tokio::time::sleep(Duration::from_millis(200)).await;
    samples.push(sample(&stack, &chaos, &progress).await?);
    let counters = load::oidcgate_counters(&stack.http, &stack.envoy).await?;
    let upstream = stack.echo.requests() - upstream_before;
    let load_after = load::load_average();
    save_envoy_log(&stack);
    let chaos_log = std::mem::take(&mut chaos.state().log);

    let report = Report {
        settings: &settings,
        provenance: &provenance,
        load_after,
        idle,
        samples: &samples,
        tally: &tally,
        counters: &counters,
        chaos_log: &chaos_log,
        elapsed,
        upstream,
    };
    let passed = report.passed();
    let text = report.render();
    load::write_report(&settings.out, &text)?;
    eprintln!(
        "soak: {} requests, {} unexpected, {} invalid let through; {} ({})",
        tally.sum(|t| t.statuses.values().sum()),
        tally.sum(|t| t.unexpected),
        tally.sum(|t| t.wrong_allow),
        if passed { "PASS" } else { "FAIL" },
        settings.out.display()
    );
    for e in &tally.examples {
        eprintln!("soak:   {e}");
    }
    Ok(passed)
}

/// One answered request per registered client and a valid bearer token, so the run starts
/// with discovery, keys and client tokens in place.
async fn warm_up(stack: &Stack) -> Result<(), Error> {
    let (token, _) = mint(stack.idp.issuer(), KEY_CYCLE[0], Variant::Valid, 0).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let get = || {
        stack
            .http
            .get(stack.envoy.url("/warm-up"))
            .timeout(Duration::from_secs(10))
    };
    let mut requests = vec![get().bearer_auth(&token)];
    for (id, secret) in CLIENTS {
        requests.push(get().basic_auth(id, Some(secret)));
    }
    for request in requests {
        loop {
            let Some(attempt) = request.try_clone() else {
                return Err("warm-up request cannot be repeated".into());
            };
            let status = attempt.send().await.map(|r| r.status().as_u16()).ok();
            if status == Some(200) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "warm-up: a valid credential answered {status:?}, not 200, for 20 s"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Keeps Envoy's log in `.run/soak/envoy.log` (the test kit removes its own copy).
fn save_envoy_log(stack: &Stack) {
    let dir = testkit::repo_root().join(".run/soak");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("envoy.log"), stack.envoy.log());
    }
}

struct Report<'a> {
    settings: &'a Settings,
    provenance: &'a Provenance,
    load_after: String,
    idle: EnvoyMemory,
    samples: &'a [Sample],
    tally: &'a Tally,
    counters: &'a BTreeMap<String, u64>,
    chaos_log: &'a [(Duration, String)],
    elapsed: Duration,
    upstream: u64,
}

impl Report<'_> {
    fn ok_200(&self) -> u64 {
        self.tally
            .sum(|t| t.statuses.get(&200).copied().unwrap_or(0))
    }

    /// Whether the upstream saw a request that was not answered 200: only a request that got
    /// through and then lost its answer on the way back could explain it.
    fn upstream_excess(&self) -> u64 {
        let unanswered = self.tally.sum(|t| t.statuses.get(&0).copied().unwrap_or(0));
        self.upstream.saturating_sub(self.ok_200() + unanswered)
    }

    fn passed(&self) -> bool {
        self.tally.sum(|t| t.unexpected) == 0
            && self.tally.sum(|t| t.wrong_allow) == 0
            && self.tally.secret_leaks == 0
            && self.upstream_excess() == 0
    }

    fn render(&self) -> String {
        let mut r = String::new();
        let (s, p, t) = (self.settings, self.provenance, self.tally);
        let total = t.sum(|k| k.statuses.values().sum());
        let _ = writeln!(r, "# Soak\n");
        let _ = writeln!(
            r,
            "Written by `scripts/soak` (issue 6). A real Envoy with two workers (`--concurrency 2`, \
             two wasm VMs sharing the filter's fetched state) runs the built filter in front of the \
             test kit's echo upstream and mock IdP; {} request loops send a weighted mix of good, \
             bad and brand-new credentials for {} s while the IdP rotates its signing key, goes \
             down and misbehaves on a schedule. Every answer is judged against what its request \
             deserves. Reproduce with `scripts/soak` (settings: see its header).\n",
            s.tasks, s.seconds
        );
        let _ = writeln!(r, "- **Date**: {}", p.date);
        let _ = writeln!(
            r,
            "- **Machine**: {} CPUs, {}; load average {} before, {} after",
            p.cpus, p.cpu_model, p.load_before, self.load_after
        );
        let _ = writeln!(
            r,
            "- **Envoy**: {}, `--concurrency 2`; the driver, the mock IdP and the echo upstream share the machine with it",
            p.envoy_version
        );
        let _ = writeln!(
            r,
            "- **Filter**: oidcgate.wasm {} bytes, commit {}",
            p.wasm_bytes.map_or_else(|| "?".into(), |b| b.to_string()),
            p.commit
        );
        let _ = writeln!(
            r,
            "- **Run**: {} s ({:.1} s measured), {} loops, seed {}; the filter configuration (plus `issuer` and `idp_cluster`): `{}`",
            s.seconds,
            self.elapsed.as_secs_f64(),
            s.tasks,
            s.seed,
            filter_config()
        );
        let _ = writeln!(
            r,
            "- **IdP**: issues tokens valid {} s (so client tokens are refreshed ahead of expiry during the run); clients {} registered before the start",
            TOKEN_TTL.as_secs(),
            CLIENTS.iter().map(|(id, _)| format!("`{id}`")).collect::<Vec<_>>().join(", ")
        );
        if let Some(load) = p
            .load_before
            .split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
        {
            if load > 0.5 {
                let _ = writeln!(
                    r,
                    "\n> The machine was not idle (1-minute load {load} before the run): request rates carry that noise."
                );
            }
        }
        if !s.note.is_empty() {
            let _ = writeln!(r, "\n> {}", s.note);
        }

        let _ = writeln!(r, "\n## Verdict\n");
        let unexpected = t.sum(|k| k.unexpected);
        let wrong = t.sum(|k| k.wrong_allow);
        let _ = writeln!(
            r,
            "**{}**: {} requests in {:.0} s ({:.0}/s); {} unexpected answers; {} invalid credentials let through; {} client secrets seen upstream; the upstream received {} requests for {} answers 200{}.",
            if self.passed() { "PASS" } else { "FAIL" },
            total,
            self.elapsed.as_secs_f64(),
            total as f64 / self.elapsed.as_secs_f64(),
            unexpected,
            wrong,
            t.secret_leaks,
            self.upstream,
            self.ok_200(),
            if self.upstream_excess() > 0 { format!(" ({} more than answered: something got through)", self.upstream_excess()) } else { String::new() }
        );
        let _ = writeln!(
            r,
            "Within the tolerance below: {} answers 503 while the IdP was disturbed and {} answers right after a key rotation, for a token signed with the new key before the filter had it (401 for a bearer token, 503 for client credentials).",
            t.sum(|k| k.tolerated_503),
            t.sum(|k| k.tolerated_new_key)
        );

        let _ = writeln!(r, "\n## Requests\n");
        let statuses: std::collections::BTreeSet<u16> = t
            .kinds
            .values()
            .flat_map(|k| k.statuses.keys().copied())
            .collect();
        let _ = write!(r, "| request | weight | expected |");
        for status in &statuses {
            let _ = write!(
                r,
                " {} |",
                if *status == 0 {
                    "no answer".to_string()
                } else {
                    status.to_string()
                }
            );
        }
        let _ = writeln!(
            r,
            " tolerated: IdP disturbed | tolerated: new key | unexpected | invalid let through |"
        );
        let _ = write!(r, "|---|---:|---:|");
        for _ in &statuses {
            let _ = write!(r, "---:|");
        }
        let _ = writeln!(r, "---:|---:|---:|---:|");
        let total_weight: u64 = s.mix.iter().map(|(_, w)| w).sum();
        for (kind, weight) in s.mix {
            let k = t.kinds.get(&kind).cloned().unwrap_or_default();
            let _ = write!(
                r,
                "| {} | {:.0}% | {} |",
                kind.name(),
                weight as f64 * 100.0 / total_weight as f64,
                kind.expected()
            );
            for status in &statuses {
                let _ = write!(r, " {} |", k.statuses.get(status).copied().unwrap_or(0));
            }
            let _ = writeln!(
                r,
                " {} | {} | {} | {} |",
                k.tolerated_503, k.tolerated_new_key, k.unexpected, k.wrong_allow
            );
        }
        let _ = write!(r, "| **all** | 100% | |");
        for status in &statuses {
            let _ = write!(
                r,
                " **{}** |",
                t.sum(|k| k.statuses.get(status).copied().unwrap_or(0))
            );
        }
        let _ = writeln!(
            r,
            " **{}** | **{}** | **{}** | **{}** |",
            t.sum(|k| k.tolerated_503),
            t.sum(|k| k.tolerated_new_key),
            unexpected,
            wrong
        );
        if !t.examples.is_empty() {
            let _ = writeln!(r, "\nFirst unexpected answers (time since the start):\n");
            for e in &t.examples {
                let _ = writeln!(r, "- `{}`", e.replace('`', "'"));
            }
        }

        let _ = writeln!(r, "\n### Tolerance\n");
        let _ = writeln!(
            r,
            "- An invalid credential answered 200 is a failure, always; so is a client secret in \
             what the upstream received, or the upstream receiving more requests than were answered 200.\n\
             - A 401 or 403 without `WWW-Authenticate: Bearer realm=…`, or a 503 without \
             `Retry-After`, is unexpected whatever its status.\n\
             - Each request kind has one expected status (the table's *expected*).\n\
             - **503** is tolerated for a request that may need the IdP (all but *no credential*) \
             if it was in flight during an outage or fault window, or within that window's length \
             plus {} s after it: the filter backs off failed fetches (1 s doubling), so its first \
             retry can come that late.\n\
             - **New key**: a valid token signed with a key that started signing less than {} s \
             before (`rediscovery_lifetime` {} s plus one `timeout`) may be answered **401** if it \
             is a bearer token (its `kid` is unknown to the filter until it refetches the key set) \
             and **503** if it is client credentials after any key change in that window (the IdP \
             issued the token; not the client's fault). The filter refetches the key set for an \
             unknown `kid` at most once per `rediscovery_lifetime`, and the unknown-kid tokens in \
             the mix spend that allowance too. A disturbance overlapping the window extends it \
             past its grace.\n\
             - Anything else, a request that got no answer included, is unexpected and fails the run.",
            GRACE_EXTRA.as_secs(),
            NEW_KEY_WINDOW.as_secs(),
            REDISCOVERY_S
        );

        let _ = writeln!(r, "\n## Chaos schedule\n");
        let _ = writeln!(
            r,
            "Planned: the IdP rotates its signing key every {} s through {} (the new key is published \
             as it starts signing; the previous one stays published {} s, the tokens' lifetime, then \
             is dropped); it goes down (connections refused, open ones cut) for {} s every {} s from \
             {} s on; once, faults: the token endpoint answers 500 and the JWKS answers after {} s \
             (the filter's timeout is {} s). What happened, in seconds since the start:\n",
            ROTATE_EVERY.as_secs(),
            KEY_CYCLE.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" → "),
            TOKEN_TTL.as_secs(),
            OUTAGE_FOR.as_secs(),
            OUTAGE_EVERY.as_secs(),
            OUTAGE_FIRST.as_secs(),
            FAULT_JWKS_DELAY.as_secs(),
            TIMEOUT_MS / 1000
        );
        let _ = writeln!(r, "| t (s) | event |");
        let _ = writeln!(r, "|---:|---|");
        for (at, what) in self.chaos_log {
            let _ = writeln!(
                r,
                "| {:.1} | {} |",
                at.as_secs_f64(),
                what.replace('"', "`")
            );
        }

        let _ = writeln!(r, "\n## IdP calls\n");
        let last = self.samples.last().map(|s| s.idp).unwrap_or_default();
        let c = |name: &str| self.counters.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            r,
            "Requests the mock IdP received during the run (after the warm-up), failed and faulted ones \
             included, and the filter's own view (`wasmcustom.oidcgate.idp.*`, whole life of Envoy):\n"
        );
        let _ = writeln!(
            r,
            "| endpoint | IdP received | filter: ok | filter: failed | filter: rejected |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|");
        let _ = writeln!(
            r,
            "| discovery | {} | {} | {} | |",
            last.discovery,
            c("oidcgate.idp.discovery.ok"),
            c("oidcgate.idp.discovery.failed")
        );
        let _ = writeln!(
            r,
            "| JWKS | {} | {} | {} | |",
            last.jwks,
            c("oidcgate.idp.jwks.ok"),
            c("oidcgate.idp.jwks.failed")
        );
        let _ = writeln!(
            r,
            "| token | {} | {} | {} | {} |",
            last.token,
            c("oidcgate.idp.token.ok"),
            c("oidcgate.idp.token.failed"),
            c("oidcgate.idp.token.rejected")
        );

        let _ = writeln!(r, "\n## Envoy memory\n");
        let _ = writeln!(
            r,
            "Admin `/memory` (`allocated`: in use through tcmalloc; `heap_size`: reserved by it) and \
             the process's `VmRSS` (which also holds V8's wasm memory). Idle, before the first \
             request: {} MiB allocated, {} MiB heap, {} MiB resident. Sampled every {} s; shown \
             every {} s and at the end:\n",
            load::mib(self.idle.allocated),
            load::mib(self.idle.heap_size),
            load::mib_or_dash(self.idle.rss),
            SAMPLE_EVERY.as_secs(),
            SAMPLE_EVERY.as_secs() * SHOW_EVERY_NTH as u64
        );
        let _ = writeln!(r, "| t (s) | requests | allocated (MiB) | heap (MiB) | RSS (MiB) | IdP calls (discovery/JWKS/token) |");
        let _ = writeln!(r, "|---:|---:|---:|---:|---:|---|");
        let shown = self
            .samples
            .iter()
            .enumerate()
            .filter(|(i, _)| i % SHOW_EVERY_NTH == 0 || i + 1 == self.samples.len());
        for (_, sample) in shown {
            let _ = writeln!(
                r,
                "| {:.0} | {} | {} | {} | {} | {}/{}/{} |",
                sample.at.as_secs_f64(),
                sample.requests,
                load::mib(sample.memory.allocated),
                load::mib(sample.memory.heap_size),
                load::mib_or_dash(sample.memory.rss),
                sample.idp.discovery,
                sample.idp.jwks,
                sample.idp.token
            );
        }
        if let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) {
            let range = |f: fn(&Sample) -> Option<u64>| {
                let values = self.samples.iter().filter_map(f);
                match (values.clone().min(), values.max()) {
                    (Some(lo), Some(hi)) => format!("{}–{}", load::mib(lo), load::mib(hi)),
                    _ => "–".into(),
                }
            };
            let _ = writeln!(
                r,
                "\nFrom start to end: allocated {} → {} MiB, RSS {} → {} MiB. Over all {} samples: \
                 allocated {} MiB, heap {} MiB, RSS {} MiB.",
                load::mib(first.memory.allocated),
                load::mib(last.memory.allocated),
                load::mib_or_dash(first.memory.rss),
                load::mib_or_dash(last.memory.rss),
                self.samples.len(),
                range(|s| Some(s.memory.allocated)),
                range(|s| Some(s.memory.heap_size)),
                range(|s| s.memory.rss)
            );
        }

        let _ = writeln!(r, "\n## Filter counters at the end\n");
        let _ = writeln!(
            r,
            "`wasmcustom.oidcgate.*`, summed over both workers, warm-up included:\n"
        );
        let _ = writeln!(r, "| counter | value |");
        let _ = writeln!(r, "|---|---:|");
        for (name, value) in self.counters {
            let _ = writeln!(r, "| `{name}` | {value} |");
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_secret_upstream_is_seen_in_clear_or_behind_basic() {
        let bearer = br#"{"headers":{"authorization":"Bearer abc"}}"#;
        let basic = br#"{"headers":{"authorization":"Basic c29hay1hOnMzY3JldA=="}}"#;
        assert!(!leaked(bearer, "s3cret"));
        assert!(leaked(basic, "s3cret"));
        assert!(leaked(br#"{"headers":{"x":"s3cret"}}"#, "s3cret"));
    }

    #[test]
    fn judging() {
        let start = Instant::now();
        let chaos = ChaosState {
            disturbances: vec![(at(start, 20), Some(at(start, 25)), Duration::from_secs(7))],
            activations: vec![("ec-1", at(start, 60))],
            ..ChaosState::default()
        };
        let judge_at = |kind, status, kid, secs| {
            judge(
                &chaos,
                kind,
                Some(status),
                kid,
                at(start, secs),
                at(start, secs),
            )
        };
        assert_eq!(
            judge_at(Kind::CcWrongSecret, 200, None, 22),
            Verdict::WrongAllow
        );
        assert_eq!(judge_at(Kind::CcValid, 200, None, 22), Verdict::Expected);
        assert_eq!(
            judge_at(Kind::CcValid, 503, None, 31),
            Verdict::Tolerated503
        );
        assert_eq!(judge_at(Kind::CcValid, 503, None, 33), Verdict::Unexpected);
        assert_eq!(
            judge_at(Kind::NoCredential, 503, None, 22),
            Verdict::Unexpected
        );
        // A new key: 401 for a bearer token with that kid, 503 for client credentials.
        assert_eq!(
            judge_at(Kind::BearerValid, 401, Some("ec-1"), 63),
            Verdict::ToleratedNewKey
        );
        assert_eq!(
            judge_at(Kind::BearerValid, 401, Some("rsa-1"), 63),
            Verdict::Unexpected
        );
        assert_eq!(
            judge_at(Kind::CcValid, 503, None, 63),
            Verdict::ToleratedNewKey
        );
        assert_eq!(judge_at(Kind::CcValid, 401, None, 63), Verdict::Unexpected);
        assert_eq!(
            judge_at(Kind::BearerValid, 401, Some("ec-1"), 68),
            Verdict::Unexpected
        );
    }

    #[test]
    fn a_full_run_has_every_kind_of_chaos() {
        let plan = schedule(Duration::from_secs(300));
        let count = |f: fn(&Action) -> bool| plan.iter().filter(|(_, a)| f(a)).count();
        assert_eq!(count(|a| matches!(a, Action::Rotate(_))), 9);
        assert_eq!(count(|a| matches!(a, Action::Down)), 7);
        assert_eq!(count(|a| matches!(a, Action::FaultOn)), 1);
        assert!(plan.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
