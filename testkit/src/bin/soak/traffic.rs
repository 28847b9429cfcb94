//! The request loops: each holds its credentials (tokens minted here, clients registered on
//! the IdP), sends a request of the kind it draws, judges the answer and tallies it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::idp::{access_token_claims, MockIdp};
use testkit::keys::{self, Sig};
use testkit::Stack;

use crate::chaos::{Chaos, TOKEN_TTL};
use crate::judge::{denial_well_formed, judge, leaked, Verdict};
use crate::mix::{Kind, Mix, Rng};
use crate::{Error, CLIENTS, TIMEOUT_MS};

/// A bearer token a loop holds is replaced after this many requests or this age, or when the
/// IdP signs with another key.
pub const BEARER_USES: u32 = 20;
pub const BEARER_MAX_AGE: Duration = Duration::from_secs(20);
/// Invalid tokens are re-minted this often (the filter caches the outcome of a token whose
/// signature verified, so reuse exercises that cache and fresh ones the full path).
pub const BAD_TOKEN_USES: u32 = 50;
/// A client registered during the run is used this many times, then a new one.
pub const NEW_CLIENT_USES: u32 = 5;

/// Answers per kind.
#[derive(Default, Clone)]
pub struct KindTally {
    /// By status code; `0` means no answer (timeout, connection error).
    pub statuses: BTreeMap<u16, u64>,
    pub expected: u64,
    pub tolerated_503: u64,
    pub tolerated_new_key: u64,
    pub unexpected: u64,
    pub wrong_allow: u64,
}

#[derive(Default)]
pub struct Tally {
    pub kinds: BTreeMap<Kind, KindTally>,
    /// A 200 whose upstream request still carried the caller's client secret.
    pub secret_leaks: u64,
    /// The first few unexpected answers, for the report.
    pub examples: Vec<String>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
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

    pub fn sum(&self, f: impl Fn(&KindTally) -> u64) -> u64 {
        self.kinds.values().map(f).sum()
    }
}

/// A token a loop keeps using for a while.
pub struct Held {
    pub token: String,
    pub kid: &'static str,
    pub uses: u32,
    pub minted: Instant,
}

impl Held {
    pub fn new((token, kid): (String, &'static str)) -> Held {
        Held {
            token,
            kid,
            uses: 0,
            minted: Instant::now(),
        }
    }

    pub fn use_once(&mut self) -> Credential {
        self.uses += 1;
        Credential::Bearer(self.token.clone(), Some(self.kid))
    }
}

/// How a token minted here differs from a valid one.
#[derive(Clone, Copy)]
pub enum Variant {
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
pub async fn mint(
    issuer: String,
    kid: &'static str,
    variant: Variant,
    jti: u64,
) -> Result<(String, &'static str), Error> {
    let job = move || {
        let now = keys::now();
        let jti = format!("AT.soak-{jti:016x}");
        let ttl = TOKEN_TTL.as_secs();
        let mut claims = access_token_claims(&issuer, "soak-bearer", &["read"], now, ttl, &jti);
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
pub fn tampered(token: &str) -> String {
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
pub struct Loop {
    pub id: usize,
    pub rng: Rng,
    pub issuer: String,
    pub bearer: Option<Held>,
    pub bad: BTreeMap<Kind, Held>,
    pub new_client: Option<(String, String, u32)>,
    pub clients_made: u64,
}

pub enum Credential {
    None,
    Basic(String, String),
    Bearer(String, Option<&'static str>),
}

impl Loop {
    /// The credential for a request of `kind`, and the kid of the token it carries.
    pub async fn credential(
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
pub struct Progress {
    pub requests: AtomicU64,
    pub unexpected: AtomicU64,
}

pub async fn request_loop(
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
