//! The core's test harness: gates over one shared store (two gates are two Envoy workers'
//! VMs) against a scripted IdP, run the way the lifecycle runs them.

use serde_json::{json, Value};
use testkit::keys::{self, Sig};

use crate::config::Config;
use crate::credentials::{basic_header, ClientCredentials, Credential, Secret};
use crate::fetch::{Applied, Fetch, Look, Resource, Step};
use crate::gate::Gate;
use crate::outcome::Verdict;
use crate::store::MemStore;

pub const ISSUER: &str = "http://127.0.0.1:9000/oauth2/default";
pub const DISCOVERY_URL: &str =
    "http://127.0.0.1:9000/oauth2/default/.well-known/openid-configuration";
pub const JWKS_URL: &str = "http://127.0.0.1:9000/oauth2/default/v1/keys";
pub const INTROSPECTION_URL: &str = "http://127.0.0.1:9000/oauth2/default/v1/introspect";
pub const T0: u64 = 1_800_000_000_000;
pub const NOW_S: u64 = T0 / 1000;

/// Okta-shaped claims at T0, `extra` merged over them (`null` removes a claim).
pub fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": ISSUER, "aud": "api://default", "cid": "svc", "sub": "svc",
        "scp": ["read"], "iat": NOW_S, "exp": NOW_S + 3600, "jti": "AT.1",
    });
    if let (Some(base), Some(more)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

/// A token signed by fixture key `kid` with its default algorithm, claims as [`claims`].
pub fn token(kid: &str, extra: Value) -> String {
    let alg = keys::default_alg(kid);
    keys::mint_raw(
        &json!({"alg": alg, "kid": kid, "typ": "JWT"}),
        &claims(extra),
        Sig::Key { kid, alg },
    )
}

pub fn bearer(token: &str) -> Credential {
    Credential::Bearer(token.into())
}

pub fn client(id: &str, secret: &str) -> Credential {
    Credential::Client(ClientCredentials {
        id: id.into(),
        secret: Secret::new(secret),
    })
}

/// The verdict of a step that must be one.
#[track_caller]
pub fn done(step: Step) -> Verdict {
    match step {
        Step::Done(verdict) => verdict,
        other => panic!("expected a verdict, got {other:?}"),
    }
}

/// The value of header `name` an allowed request goes upstream with.
pub fn header<'a>(verdict: &'a Verdict, name: &str) -> Option<&'a str> {
    match verdict {
        Verdict::Allow(g) => g
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str()),
        Verdict::Deny(_) => None,
    }
}

/// The IdP as the tests script it. It records every resource and URL asked for.
pub struct Idp {
    /// The kids the JWKS publishes.
    pub keys: Vec<&'static str>,
    pub token_status: u32,
    /// The key the token endpoint signs with.
    pub token_kid: &'static str,
    pub token_ttl_s: u64,
    pub up: bool,
    pub calls: Vec<String>,
    pub urls: Vec<String>,
    pub secrets: Vec<(String, String)>,
    /// Opaque tokens the introspection endpoint calls active, with their claims.
    pub opaque: Vec<(String, Value)>,
    /// Tokens (opaque or JWT) the introspection endpoint calls inactive although known.
    pub revoked: Vec<String>,
    /// Whether the token endpoint issues opaque tokens (then also known to introspection).
    pub issues_opaque: bool,
    /// The introspection endpoint's status when not 200.
    pub introspection_status: u32,
}

impl Idp {
    pub fn new() -> Idp {
        Idp {
            keys: vec!["rsa-1"],
            token_status: 200,
            token_kid: "rsa-1",
            token_ttl_s: 3600,
            up: true,
            calls: vec![],
            urls: vec![],
            secrets: vec![("svc".into(), "good".into())],
            opaque: vec![],
            revoked: vec![],
            issues_opaque: false,
            introspection_status: 200,
        }
    }

    pub fn answer(&mut self, fetch: &Fetch, now_ms: u64) -> (Option<u32>, Vec<u8>) {
        let h = |name: &str| {
            fetch
                .callout
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        self.calls.push(fetch.resource.name().to_string());
        self.urls.push(format!(
            "{}://{}{}",
            h(":scheme").unwrap_or_default(),
            h(":authority").unwrap_or_default(),
            h(":path").unwrap_or_default()
        ));
        if !self.up {
            return (None, vec![]);
        }
        let known = |auth: Option<String>, secrets: &[(String, String)]| {
            secrets
                .iter()
                .any(|(id, s)| auth.as_deref() == Some(basic_header(id, s).as_str()))
        };
        let body = match fetch.resource {
            Resource::Discovery => json!({
                "issuer": ISSUER, "jwks_uri": JWKS_URL, "token_endpoint": format!("{ISSUER}/v1/token"),
                "introspection_endpoint": INTROSPECTION_URL,
            }),
            Resource::Introspection(_) => {
                if !known(h("authorization"), &self.secrets) {
                    return (Some(401), br#"{"error":"invalid_client"}"#.to_vec());
                }
                if self.introspection_status != 200 {
                    return (Some(self.introspection_status), b"oops".to_vec());
                }
                let body = fetch.callout.body.clone().unwrap_or_default();
                let token = form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let opaque = self.opaque.iter().find(|(t, _)| *t == token);
                let jwt_claims = crate::idp::unverified_claims(&token);
                match (opaque, jwt_claims) {
                    _ if self.revoked.contains(&token) => json!({"active": false}),
                    (Some((_, c)), _) => {
                        let mut c = c.clone();
                        c["active"] = json!(true);
                        c
                    }
                    (None, Some(mut c)) => {
                        c["active"] = json!(true);
                        c
                    }
                    (None, None) => json!({"active": false}),
                }
            }
            Resource::Jwks => keys::jwks(&self.keys),
            Resource::Token(_) => {
                if !known(h("authorization"), &self.secrets) {
                    return (Some(401), br#"{"error":"invalid_client"}"#.to_vec());
                }
                if self.token_status != 200 {
                    return (Some(self.token_status), b"oops".to_vec());
                }
                let now_s = now_ms / 1000;
                if self.issues_opaque {
                    let t = format!("opaque-{}", self.calls.len());
                    let c = claims(json!({"iat": now_s, "exp": now_s + self.token_ttl_s}));
                    self.opaque.push((t.clone(), c));
                    return (
                        Some(200),
                        json!({"access_token": t, "expires_in": self.token_ttl_s})
                            .to_string()
                            .into_bytes(),
                    );
                }
                let t = token(
                    self.token_kid,
                    json!({"iat": now_s, "exp": now_s + self.token_ttl_s, "jti": self.calls.len().to_string()}),
                );
                json!({"access_token": t, "expires_in": self.token_ttl_s, "token_type": "Bearer"})
            }
        };
        (Some(200), body.to_string().into_bytes())
    }

    pub fn count(&self, name: &str) -> usize {
        self.calls.iter().filter(|c| *c == name).count()
    }

    /// Every URL asked for is the configured discovery document or JWKS.
    pub fn only_configured_urls(&self) {
        for url in &self.urls {
            assert!(
                url == DISCOVERY_URL || url == JWKS_URL || url == INTROSPECTION_URL,
                "fetched {url}"
            );
        }
    }
}

/// Workers (gates) over one shared store, and the IdP they ask.
pub struct World {
    pub store: MemStore,
    pub idp: Idp,
    pub gates: Vec<Gate>,
    config: Config,
}

impl World {
    /// One worker configured with `{"issuer": ISSUER <extra>}`.
    pub fn new(extra: &str) -> World {
        let json = format!(r#"{{"issuer":"{ISSUER}"{extra}}}"#);
        let config = Config::parse(json.as_bytes()).unwrap();
        let mut gate = Gate::new(config.clone());
        let mut store = MemStore::default();
        gate.init_shared(&mut store, T0);
        World {
            store,
            idp: Idp::new(),
            gates: vec![gate],
            config,
        }
    }

    /// Another worker with the same configuration; its index.
    pub fn add_worker(&mut self) -> usize {
        let mut gate = Gate::new(self.config.clone());
        gate.init_shared(&mut self.store, T0);
        self.gates.push(gate);
        self.gates.len() - 1
    }

    pub fn gate(&mut self) -> &mut Gate {
        &mut self.gates[0]
    }

    /// The first look at a request arriving on `worker`.
    pub fn ask(&mut self, worker: usize, cred: &Credential, now_ms: u64) -> Step {
        self.gates[worker].authenticate(&mut self.store, cred, 0, Look::first(now_ms), now_ms)
    }

    /// Another look at a request that arrived at `started_ms` and was parked.
    pub fn ask_again(
        &mut self,
        worker: usize,
        cred: &Credential,
        started_ms: u64,
        now_ms: u64,
    ) -> Step {
        let look = Look::again(started_ms);
        self.gates[worker].authenticate(&mut self.store, cred, 0, look, now_ms)
    }

    /// Has the IdP answer `fetch`, and hands the answer to `worker`.
    pub fn answer(&mut self, worker: usize, fetch: &Fetch, now_ms: u64) -> Applied {
        let (status, body) = self.idp.answer(fetch, now_ms);
        self.gates[worker].on_answer(&mut self.store, &fetch.resource, status, &body, now_ms)
    }

    /// Runs a request on worker 0 to its verdict.
    pub fn run(&mut self, cred: &Credential, now_ms: u64) -> Verdict {
        self.run_on(0, cred, now_ms)
    }

    /// Runs a request on `worker` to its verdict: fetch, answer, ask again.
    pub fn run_on(&mut self, worker: usize, cred: &Credential, now_ms: u64) -> Verdict {
        for round in 0..10 {
            let step = if round == 0 {
                self.ask(worker, cred, now_ms)
            } else {
                self.ask_again(worker, cred, now_ms, now_ms)
            };
            match step {
                Step::Fetch(f) => {
                    self.answer(worker, &f, now_ms);
                }
                Step::Done(verdict) => return verdict,
                Step::Wait(r) => panic!("waits for {r:?} that nobody fetches"),
            }
        }
        panic!("no decision after 10 rounds")
    }

    /// Runs worker 0's timer work, answering what it fetches; how many fetches it made.
    pub fn tick(&mut self, now_ms: u64) -> usize {
        let fetches = self.gates[0].background(&mut self.store, now_ms);
        for f in &fetches {
            self.answer(0, f, now_ms);
        }
        fetches.len()
    }
}

/// Little deterministic generator, so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for b in &mut out {
            *b = self.next() as u8;
        }
        out
    }
}
