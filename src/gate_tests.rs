//! The engine's behaviour end to end on the native target: two "workers" (two gates over one
//! shared store, like two Envoy VMs) against a scripted IdP.

use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::credentials::{basic_header, Secret};
use crate::store::MemStore;

const ISSUER: &str = "http://127.0.0.1:9000/oauth2/default";
const T0: u64 = 1_800_000_000_000;

fn rsa(n: u8) -> RS256KeyPair {
    let pem = match n {
        1 => include_str!("../tests/fixtures/rsa-1.pem"),
        _ => include_str!("../tests/fixtures/rsa-2.pem"),
    };
    RS256KeyPair::from_pem(pem)
        .unwrap()
        .with_key_id(&format!("rsa-{n}"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwks(keys: &[u8]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|n| {
            let c = rsa(*n).public_key().to_components();
            json!({"kty":"RSA","kid":format!("rsa-{n}"),"alg":"RS256","use":"sig","n":b64(&c.n),"e":b64(&c.e)})
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// A token signed with fixture key `key`, claims merged over Okta-shaped defaults at T0.
fn token(key: u8, extra: Value) -> String {
    let mut claims = json!({
        "iss": ISSUER, "aud": "api://default", "cid": "svc", "sub": "svc",
        "scp": ["read"], "iat": T0 / 1000, "exp": T0 / 1000 + 3600,
    });
    if let (Some(base), Some(more)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    let claims: JWTClaims<serde_json::Map<String, Value>> = serde_json::from_value(claims).unwrap();
    rsa(key).sign(claims).unwrap()
}

/// The IdP as the tests script it.
struct Idp {
    keys: Vec<u8>,
    token_status: u32,
    token_key: u8,
    token_ttl_s: u64,
    up: bool,
    calls: Vec<String>,
    secrets: Vec<(String, String)>,
}

impl Idp {
    fn new() -> Idp {
        Idp {
            keys: vec![1],
            token_status: 200,
            token_key: 1,
            token_ttl_s: 3600,
            up: true,
            calls: vec![],
            secrets: vec![("svc".into(), "good".into())],
        }
    }

    fn answer(&mut self, fetch: &Fetch, now_ms: u64) -> (Option<u32>, Vec<u8>) {
        self.calls.push(fetch.resource.name().to_string());
        if !self.up {
            return (None, vec![]);
        }
        match fetch.resource {
            Resource::Discovery => (
                Some(200),
                json!({"issuer":ISSUER,"jwks_uri":format!("{ISSUER}/v1/keys"),"token_endpoint":format!("{ISSUER}/v1/token")})
                    .to_string()
                    .into_bytes(),
            ),
            Resource::Jwks => (Some(200), jwks(&self.keys).into_bytes()),
            Resource::Token(_) => {
                let auth = fetch.callout.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.clone());
                let ok = self.secrets.iter().any(|(id, s)| auth.as_deref() == Some(basic_header(id, s).as_str()));
                if !ok {
                    return (Some(401), br#"{"error":"invalid_client"}"#.to_vec());
                }
                if self.token_status != 200 {
                    return (Some(self.token_status), b"oops".to_vec());
                }
                let now_s = now_ms / 1000;
                let t = token(self.token_key, json!({"iat": now_s, "exp": now_s + self.token_ttl_s, "jti": self.calls.len().to_string()}));
                (Some(200), json!({"access_token":t,"expires_in":self.token_ttl_s,"token_type":"Bearer"}).to_string().into_bytes())
            }
        }
    }

    fn count(&self, name: &str) -> usize {
        self.calls.iter().filter(|c| *c == name).count()
    }
}

fn gate(extra: &str) -> Gate {
    let json = format!(
        r#"{{"issuer":"{ISSUER}","upstream_headers_claims":["iss","scp"],"upstream_headers_names":["Issuer_Header","X-Scopes"]{extra}}}"#
    );
    Gate::new(Config::parse(json.as_bytes()).unwrap())
}

fn client(id: &str, secret: &str) -> Credential {
    Credential::Client(ClientCredentials {
        id: id.into(),
        secret: Secret::new(secret),
    })
}

/// Runs a request to completion the way the adapter does: fetch, answer, ask again.
fn run(gate: &mut Gate, store: &mut MemStore, idp: &mut Idp, cred: &Credential, now: u64) -> Step {
    for _ in 0..10 {
        match gate.authenticate(store, cred, now, now) {
            Step::Fetch(f) => {
                let (status, body) = idp.answer(&f, now);
                gate.on_answer(store, &f.resource, status, &body, now);
            }
            other => return other,
        }
    }
    panic!("no decision after 10 rounds")
}

fn header<'a>(step: &'a Step, name: &str) -> Option<&'a str> {
    match step {
        Step::Allow(h) => h
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str()),
        _ => None,
    }
}

fn setup() -> (Gate, MemStore, Idp) {
    let g = gate("");
    let mut store = MemStore::default();
    g.init_shared(&mut store);
    (g, store, Idp::new())
}

#[test]
fn bearer_allowed_after_discovery_and_jwks_with_claim_headers() {
    let (mut g, mut store, mut idp) = setup();
    let t = token(1, json!({}));
    let step = run(
        &mut g,
        &mut store,
        &mut idp,
        &Credential::Bearer(t.clone().into()),
        T0,
    );
    assert_eq!(
        header(&step, "authorization"),
        Some(format!("Bearer {t}").as_str())
    );
    assert_eq!(header(&step, "Issuer_Header"), Some(ISSUER));
    assert_eq!(header(&step, "X-Scopes"), Some("WyJyZWFkIl0="));
    assert_eq!(idp.calls, vec!["discovery", "jwks"]);
    // Verified once; the second time is a cache hit and the IdP hears nothing.
    assert_eq!(
        run(
            &mut g,
            &mut store,
            &mut idp,
            &Credential::Bearer(t.into()),
            T0 + 1
        ),
        step
    );
    assert_eq!(idp.calls.len(), 2);
}

#[test]
fn a_second_worker_uses_the_shared_key_set() {
    let (mut a, mut store, mut idp) = setup();
    let mut b = gate("");
    run(
        &mut a,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
    );
    let step = run(
        &mut b,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({"jti":"x"})).into()),
        T0,
    );
    assert!(matches!(step, Step::Allow(_)));
    assert_eq!(idp.calls, vec!["discovery", "jwks"]);
}

#[test]
fn concurrent_first_requests_cause_one_fetch() {
    let (mut a, mut store, mut idp) = setup();
    let mut b = gate("");
    let cred = client("svc", "good");
    // Discovery and JWKS in place first, so the race is on the token.
    run(
        &mut a,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
    );
    let Step::Fetch(fetch) = a.authenticate(&mut store, &cred, T0, T0) else {
        panic!("a fetches")
    };
    assert_eq!(
        b.authenticate(&mut store, &cred, T0, T0),
        Step::Wait(fetch.resource.clone())
    );
    assert_eq!(
        a.authenticate(&mut store, &cred, T0, T0),
        Step::Wait(fetch.resource.clone())
    );
    let (status, body) = idp.answer(&fetch, T0);
    assert_eq!(
        a.on_answer(&mut store, &fetch.resource, status, &body, T0),
        Applied::Stored
    );
    // The waiter on the other worker finds the token on its next look.
    let step = b.authenticate(&mut store, &cred, T0, T0 + 5);
    assert!(header(&step, "authorization").is_some_and(|v| v.starts_with("Bearer ey")));
    assert_eq!(idp.count("token"), 1);
}

#[test]
fn time_checks_use_leeway_exactly() {
    let (mut g, mut store, mut idp) = setup();
    let now_s = T0 / 1000;
    let deny = |p| Step::Deny(Denial::InvalidToken(p));
    let cases = [
        (json!({"exp": now_s - 1}), deny(TokenProblem::Expired)),
        (json!({"nbf": now_s + 1}), deny(TokenProblem::NotYetValid)),
        (
            json!({"iat": now_s + 1}),
            deny(TokenProblem::IssuedInFuture),
        ),
        (json!({"exp": null}), deny(TokenProblem::MissingExpiry)),
    ];
    for (claims, want) in cases {
        assert_eq!(
            run(
                &mut g,
                &mut store,
                &mut idp,
                &Credential::Bearer(token(1, claims.clone()).into()),
                T0
            ),
            want,
            "{claims}"
        );
    }
    let mut lenient = gate(r#","leeway":5"#);
    for claims in [
        json!({"exp": now_s - 5}),
        json!({"nbf": now_s + 5}),
        json!({"iat": now_s + 5}),
    ] {
        let step = run(
            &mut lenient,
            &mut store,
            &mut idp,
            &Credential::Bearer(token(1, claims.clone()).into()),
            T0,
        );
        assert!(matches!(step, Step::Allow(_)), "{claims}: {step:?}");
    }
    for claims in [
        json!({"exp": now_s - 6}),
        json!({"nbf": now_s + 6}),
        json!({"iat": now_s + 6}),
    ] {
        let step = run(
            &mut lenient,
            &mut store,
            &mut idp,
            &Credential::Bearer(token(1, claims.clone()).into()),
            T0,
        );
        assert!(
            matches!(step, Step::Deny(Denial::InvalidToken(_))),
            "{claims}: {step:?}"
        );
    }
}

#[test]
fn a_cached_allow_ends_when_the_token_expires() {
    let (mut g, mut store, mut idp) = setup();
    let t = Credential::Bearer(token(1, json!({"exp": T0 / 1000 + 60})).into());
    assert!(matches!(
        run(&mut g, &mut store, &mut idp, &t, T0),
        Step::Allow(_)
    ));
    assert_eq!(
        run(&mut g, &mut store, &mut idp, &t, T0 + 61_000),
        Step::Deny(Denial::InvalidToken(TokenProblem::Expired))
    );
}

#[test]
fn issuer_audience_client_and_scope() {
    let mut g = gate(
        r#","audience_required":["api://default"],"client_id":["svc"],"scopes_required":["read"]"#,
    );
    let mut store = MemStore::default();
    g.init_shared(&mut store);
    let mut idp = Idp::new();
    let mut check = |claims: Value| {
        run(
            &mut g,
            &mut store,
            &mut idp,
            &Credential::Bearer(token(1, claims).into()),
            T0,
        )
    };
    assert!(matches!(check(json!({})), Step::Allow(_)));
    assert_eq!(
        check(json!({"iss":"http://evil"})),
        Step::Deny(Denial::InvalidToken(TokenProblem::WrongIssuer))
    );
    assert_eq!(
        check(json!({"aud":"api://other"})),
        Step::Deny(Denial::InvalidToken(TokenProblem::WrongAudience))
    );
    assert_eq!(
        check(json!({"cid":"intruder"})),
        Step::Deny(Denial::InvalidToken(TokenProblem::ClientNotAllowed))
    );
    assert_eq!(
        check(json!({"scp":["write"]})),
        Step::Deny(Denial::InsufficientScope)
    );
}

#[test]
fn forged_and_odd_tokens_are_rejected() {
    let (mut g, mut store, mut idp) = setup();
    let good = token(1, json!({}));
    let mut parts: Vec<&str> = good.split('.').collect();
    let claims_b64 =
        b64(br#"{"iss":"http://127.0.0.1:9000/oauth2/default","exp":9999999999,"scp":["admin"]}"#);
    parts[1] = &claims_b64;
    let tampered = parts.join(".");
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = good.split('.').nth(1).unwrap();
    let cases = [
        (tampered, TokenProblem::BadSignature),
        (
            format!("{header_none}.{payload}."),
            TokenProblem::DisallowedAlgorithm,
        ),
        (
            format!("{}.{payload}.", b64(br#"{"alg":"NONE"}"#)),
            TokenProblem::DisallowedAlgorithm,
        ),
        (
            format!(
                "{}.{payload}.c2ln",
                b64(br#"{"alg":"HS256","kid":"rsa-1"}"#)
            ),
            TokenProblem::DisallowedAlgorithm,
        ),
        (
            format!(
                "{}.{payload}.c2ln",
                b64(br#"{"alg":"ES256","kid":"rsa-1"}"#)
            ),
            TokenProblem::DisallowedAlgorithm,
        ),
        ("not-a-jwt".to_string(), TokenProblem::Malformed),
        ("a.b.c".to_string(), TokenProblem::Malformed),
        (format!("{good}."), TokenProblem::Malformed),
        ("x".repeat(MAX_TOKEN_BYTES + 1), TokenProblem::TooLarge),
    ];
    for (t, want) in cases {
        let step = run(
            &mut g,
            &mut store,
            &mut idp,
            &Credential::Bearer(t.clone().into()),
            T0,
        );
        assert_eq!(
            step,
            Step::Deny(Denial::InvalidToken(want)),
            "{}",
            &t[..t.len().min(80)]
        );
    }
    // None of those was cached: memory does not grow with bad tokens.
    assert_eq!(g.cached_decisions(), 0);
}

#[test]
fn unknown_kid_refetches_at_most_once_per_rediscovery_lifetime() {
    let (mut g, mut store, mut idp) = setup();
    run(
        &mut g,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
    );
    assert_eq!(idp.count("jwks"), 1);
    // rsa-2 is not published: within 30 s of the last fetch, no refetch at all.
    let rotated = Credential::Bearer(token(2, json!({})).into());
    assert_eq!(
        run(&mut g, &mut store, &mut idp, &rotated, T0 + 1000),
        Step::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))
    );
    assert_eq!(idp.count("jwks"), 1);
    // After it, one refetch; still unknown → denied, and no second refetch.
    assert_eq!(
        run(&mut g, &mut store, &mut idp, &rotated, T0 + 30_000),
        Step::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))
    );
    assert_eq!(
        run(&mut g, &mut store, &mut idp, &rotated, T0 + 31_000),
        Step::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))
    );
    assert_eq!(idp.count("jwks"), 2);
    // The IdP rotates: the next allowed refetch picks the new key up, for every worker.
    idp.keys = vec![2, 1];
    let step = run(&mut g, &mut store, &mut idp, &rotated, T0 + 61_000);
    assert!(matches!(step, Step::Allow(_)), "{step:?}");
    let mut other = gate("");
    let step = run(
        &mut other,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(2, json!({"jti":"o"})).into()),
        T0 + 61_000,
    );
    assert!(matches!(step, Step::Allow(_)));
    assert_eq!(idp.count("jwks"), 3);
}

#[test]
fn a_client_token_signed_with_a_key_not_yet_published_is_503_not_401() {
    let (mut g, mut store, mut idp) = setup();
    run(
        &mut g,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
    );
    // The IdP starts signing with rsa-2 before publishing it.
    idp.token_key = 2;
    let step = run(
        &mut g,
        &mut store,
        &mut idp,
        &client("svc", "good"),
        T0 + 1000,
    );
    assert!(
        matches!(step, Step::Deny(Denial::IdpUnavailable { retry_after_s }) if retry_after_s >= 1),
        "{step:?}"
    );
    // Once published (and the refetch allowance is back), the same client passes.
    idp.keys = vec![1, 2];
    let step = run(
        &mut g,
        &mut store,
        &mut idp,
        &client("svc", "good"),
        T0 + 61_000,
    );
    assert!(matches!(step, Step::Allow(_)), "{step:?}");
}

#[test]
fn churn_of_other_credentials_never_refuses_a_cached_client_while_the_idp_is_down() {
    let (mut g, mut store, mut idp) = setup();
    let good = client("svc", "good");
    assert!(matches!(
        run(&mut g, &mut store, &mut idp, &good, T0),
        Step::Allow(_)
    ));
    // Far more distinct wrong secrets than the shared buckets hold (256 × 8): the good
    // client's shared entry is evicted.
    for i in 0..6000 {
        let bad = client("svc", &format!("wrong-{i}"));
        run(&mut g, &mut store, &mut idp, &bad, T0 + 1);
    }
    // The per-credential hashes this VM remembers stay bounded too.
    assert!(g.client_keys.len() <= TOKEN_ENTRIES);
    let key = g.client_key(
        &ClientCredentials {
            id: "svc".into(),
            secret: Secret::new("good"),
        },
        T0 + 1,
    );
    assert!(!matches!(
        g.read_entry(&store, &key).value,
        Some(TokenValue::Issued { .. })
    ));
    // Past the refresh point, with the IdP down: this VM's copy still serves.
    idp.up = false;
    let later = T0 + 3_000_000;
    let step = run(&mut g, &mut store, &mut idp, &good, later);
    assert!(matches!(step, Step::Allow(_)), "{step:?}");
    // And the background refresh brings the shared entry back once the IdP is up.
    idp.up = true;
    for f in g.background(&mut store, later + 60_000) {
        let (status, body) = idp.answer(&f, later + 60_000);
        g.on_answer(&mut store, &f.resource, status, &body, later + 60_000);
    }
    let step = run(&mut g, &mut store, &mut idp, &good, later + 60_001);
    assert!(matches!(step, Step::Allow(_)), "{step:?}");
}

#[test]
fn client_credentials_exchange_cache_and_wrong_secret() {
    let (mut g, mut store, mut idp) = setup();
    let good = client("svc", "good");
    let step = run(&mut g, &mut store, &mut idp, &good, T0);
    let bearer = header(&step, "authorization").unwrap().to_string();
    assert!(bearer.starts_with("Bearer "));
    assert_eq!(header(&step, "Issuer_Header"), Some(ISSUER));
    assert_eq!(idp.count("token"), 1);
    // Cached: same token, no IdP call, on this worker and on another.
    assert_eq!(
        header(
            &run(&mut g, &mut store, &mut idp, &good, T0 + 1000),
            "authorization"
        ),
        Some(bearer.as_str())
    );
    let mut other = gate("");
    assert_eq!(
        header(
            &run(&mut other, &mut store, &mut idp, &good, T0 + 1000),
            "authorization"
        ),
        Some(bearer.as_str())
    );
    assert_eq!(idp.count("token"), 1);
    // A wrong secret right after is never answered from the cache.
    let wrong = client("svc", "bad");
    assert_eq!(
        run(&mut g, &mut store, &mut idp, &wrong, T0 + 2000),
        Step::Deny(Denial::InvalidClient)
    );
    assert_eq!(idp.count("token"), 2);
    // Negative cache: no IdP call for `cache_ttl_neg` (10 s), then asked again.
    assert_eq!(
        run(&mut other, &mut store, &mut idp, &wrong, T0 + 11_999),
        Step::Deny(Denial::InvalidClient)
    );
    assert_eq!(idp.count("token"), 2);
    assert_eq!(
        run(&mut g, &mut store, &mut idp, &wrong, T0 + 12_000),
        Step::Deny(Denial::InvalidClient)
    );
    assert_eq!(idp.count("token"), 3);
}

#[test]
fn token_request_carries_the_callers_credentials_not_others() {
    let (mut g, mut store, _) = setup();
    let mut idp = Idp::new();
    run(
        &mut g,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
    );
    let Step::Fetch(f) = g.authenticate(&mut store, &client("a:b", "c d"), T0, T0) else {
        panic!()
    };
    let auth = f
        .callout
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str());
    assert_eq!(auth, Some(basic_header("a:b", "c d").as_str()));
    assert_eq!(f.callout.upstream, "127.0.0.1:9000");
}

#[test]
fn idp_down_before_any_token_is_503_but_cached_credentials_pass() {
    let (mut g, mut store, mut idp) = setup();
    let good = client("svc", "good");
    assert!(matches!(
        run(&mut g, &mut store, &mut idp, &good, T0),
        Step::Allow(_)
    ));
    idp.up = false;
    idp.secrets.push(("new".into(), "s".into()));
    assert!(matches!(
        run(&mut g, &mut store, &mut idp, &good, T0 + 1000),
        Step::Allow(_)
    ));
    let step = run(&mut g, &mut store, &mut idp, &client("new", "s"), T0 + 1000);
    assert_eq!(
        step,
        Step::Deny(Denial::IdpUnavailable { retry_after_s: 1 })
    );
    // Backing off: no new call within the backoff.
    let calls = idp.calls.len();
    assert!(matches!(
        run(&mut g, &mut store, &mut idp, &client("new", "s"), T0 + 1500),
        Step::Deny(Denial::IdpUnavailable { .. })
    ));
    assert_eq!(idp.calls.len(), calls);
    // Back up: recovers by itself.
    idp.up = true;
    assert!(matches!(
        run(&mut g, &mut store, &mut idp, &client("new", "s"), T0 + 3000),
        Step::Allow(_)
    ));
}

#[test]
fn idp_5xx_and_garbage_are_503_never_401() {
    for (status, body) in [
        (Some(500), &b"oops"[..]),
        (Some(200), b"<html>"),
        (None, b""),
    ] {
        let (mut g, mut store, _) = setup();
        let Step::Fetch(f) = g.authenticate(
            &mut store,
            &Credential::Bearer(token(1, json!({})).into()),
            T0,
            T0,
        ) else {
            panic!()
        };
        assert!(matches!(
            g.on_answer(&mut store, &f.resource, status, body, T0),
            Applied::Failed(_)
        ));
        let step = g.authenticate(
            &mut store,
            &Credential::Bearer(token(1, json!({})).into()),
            T0,
            T0,
        );
        assert_eq!(
            step.clone(),
            Step::Deny(Denial::IdpUnavailable { retry_after_s: 1 }),
            "{status:?}"
        );
    }
}

#[test]
fn startup_with_the_idp_down_recovers_in_the_background() {
    let (mut g, mut store, mut idp) = setup();
    idp.up = false;
    let mut now = T0;
    for _ in 0..5 {
        for f in g.background(&mut store, now) {
            let (s, b) = idp.answer(&f, now);
            g.on_answer(&mut store, &f.resource, s, &b, now);
        }
        now += 1000;
    }
    // Backoff keeps attempts well below one per tick.
    assert!(idp.calls.len() <= 4, "{:?}", idp.calls);
    idp.up = true;
    for _ in 0..40 {
        for f in g.background(&mut store, now) {
            let (s, b) = idp.answer(&f, now);
            g.on_answer(&mut store, &f.resource, s, &b, now);
        }
        now += 1000;
    }
    let step = g.authenticate(
        &mut store,
        &Credential::Bearer(token(1, json!({})).into()),
        now,
        now,
    );
    assert!(matches!(step, Step::Allow(_)), "{step:?}");
}

#[test]
fn stale_keys_keep_serving_while_a_refresh_fails() {
    let (mut g, mut store, mut idp) = setup();
    run(
        &mut g,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
    );
    idp.up = false;
    let later = T0 + JWKS_MAX_AGE_MS;
    let fetches = g.background(&mut store, later);
    assert_eq!(fetches.len(), 1);
    for f in fetches {
        let (s, b) = idp.answer(&f, later);
        assert!(matches!(
            g.on_answer(&mut store, &f.resource, s, &b, later),
            Applied::Failed(_)
        ));
    }
    let mut fresh_worker = gate("");
    let step = run(
        &mut fresh_worker,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({"jti":"n"})).into()),
        later,
    );
    assert!(matches!(step, Step::Allow(_)));
}

#[test]
fn tokens_are_refreshed_ahead_of_expiry_without_making_requests_wait() {
    let (mut g, mut store, mut idp) = setup();
    idp.token_ttl_s = 400;
    let good = client("svc", "good");
    let first = header(
        &run(&mut g, &mut store, &mut idp, &good, T0),
        "authorization",
    )
    .unwrap()
    .to_string();
    // Refresh window: the last quarter of the lifetime (100 s).
    let later = T0 + 301_000;
    let step = g.authenticate(&mut store, &good, later, later);
    assert_eq!(
        header(&step, "authorization"),
        Some(first.as_str()),
        "served from cache"
    );
    let fetches = g.background(&mut store, later);
    assert_eq!(fetches.len(), 1);
    for f in fetches {
        let (s, b) = idp.answer(&f, later);
        g.on_answer(&mut store, &f.resource, s, &b, later);
    }
    let step = g.authenticate(&mut store, &good, later + 1, later + 1);
    let second = header(&step, "authorization").unwrap();
    assert_ne!(second, first);
    assert_eq!(idp.count("token"), 2);
    // Nothing more to refresh.
    assert!(g.background(&mut store, later + 2).is_empty());
}

#[test]
fn without_token_caching_each_request_exchanges_but_waiters_share_a_fetch() {
    let mut g = gate(r#","cache_tokens":false"#);
    let mut store = MemStore::default();
    g.init_shared(&mut store);
    let mut idp = Idp::new();
    let good = client("svc", "good");
    run(&mut g, &mut store, &mut idp, &good, T0);
    run(&mut g, &mut store, &mut idp, &good, T0 + 1);
    assert_eq!(idp.count("token"), 2);
    let Step::Fetch(f) = g.authenticate(&mut store, &good, T0 + 2, T0 + 2) else {
        panic!()
    };
    assert_eq!(
        g.authenticate(&mut store, &good, T0 + 2, T0 + 2),
        Step::Wait(f.resource.clone())
    );
    let (s, b) = idp.answer(&f, T0 + 3);
    g.on_answer(&mut store, &f.resource, s, &b, T0 + 3);
    assert!(matches!(
        g.authenticate(&mut store, &good, T0 + 2, T0 + 3),
        Step::Allow(_)
    ));
    assert_eq!(idp.count("token"), 3);
}

#[test]
fn abandoned_fetch_lets_the_next_request_fetch() {
    let (mut g, mut store, mut idp) = setup();
    run(
        &mut g,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
    );
    let good = client("svc", "good");
    let Step::Fetch(f) = g.authenticate(&mut store, &good, T0, T0) else {
        panic!()
    };
    g.abandon(&mut store, &f.resource, T0);
    assert!(matches!(
        g.authenticate(&mut store, &good, T0, T0),
        Step::Fetch(_)
    ));
}

#[test]
fn a_stalled_fetcher_is_taken_over_after_timeout() {
    let (mut g, mut store, mut idp) = setup();
    run(
        &mut g,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
    );
    let good = client("svc", "good");
    assert!(matches!(
        g.authenticate(&mut store, &good, T0, T0),
        Step::Fetch(_)
    ));
    assert!(matches!(
        g.authenticate(&mut store, &good, T0, T0 + 10_999),
        Step::Wait(_)
    ));
    assert!(matches!(
        g.authenticate(&mut store, &good, T0, T0 + 11_001),
        Step::Fetch(_)
    ));
}

#[test]
fn disallowed_client_id_is_refused_without_asking_the_idp() {
    let mut g = gate(r#","client_id":["svc"]"#);
    let mut store = MemStore::default();
    g.init_shared(&mut store);
    let mut idp = Idp::new();
    let step = run(&mut g, &mut store, &mut idp, &client("other", "x"), T0);
    assert_eq!(
        step,
        Step::Deny(Denial::InvalidToken(TokenProblem::ClientNotAllowed))
    );
    assert!(idp.calls.is_empty());
}

#[test]
fn shared_token_memory_is_bounded_by_buckets() {
    let (mut g, mut store, mut idp) = setup();
    run(
        &mut g,
        &mut store,
        &mut idp,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
    );
    for i in 0..3000 {
        run(
            &mut g,
            &mut store,
            &mut idp,
            &client(&format!("c{i}"), "x"),
            T0 + i,
        );
    }
    let total: usize = (0..BUCKETS)
        .map(|i| {
            store
                .get(&g.bucket_key_at(i))
                .map(|(v, _)| v.len())
                .unwrap_or(0)
        })
        .sum();
    // A rejected entry is ~200 bytes of JSON; 2048 of them at most.
    assert!(total < BUCKETS * BUCKET_ENTRIES * 300, "{total}");
    let max_entries = (0..BUCKETS)
        .map(|i| {
            store::read::<Bucket>(&store, &g.bucket_key_at(i))
                .entries
                .len()
        })
        .max();
    assert_eq!(max_entries, Some(BUCKET_ENTRIES));
}

#[test]
fn strip_list_covers_credentials_and_every_written_header() {
    let g = gate(r#","upstream_access_token_header":"x-access-token""#);
    assert_eq!(
        *g.strip_headers(),
        [
            "authorization",
            "issuer_header",
            "x-scopes",
            "x-access-token"
        ]
    );
}

#[test]
fn is_busy_tracks_an_in_flight_fetch_for_every_worker() {
    let (mut g, mut store, mut idp) = setup();
    let other = gate("");
    let Step::Fetch(f) = g.authenticate(
        &mut store,
        &Credential::Bearer(token(1, json!({})).into()),
        T0,
        T0,
    ) else {
        panic!()
    };
    assert!(g.is_busy(&store, &f.resource, T0) && other.is_busy(&store, &f.resource, T0));
    let (s, b) = idp.answer(&f, T0);
    g.on_answer(&mut store, &f.resource, s, &b, T0);
    assert!(!other.is_busy(&store, &f.resource, T0));
}

#[test]
fn a_verify_miss_is_one_verification_however_often_a_waiting_request_asks() {
    let (mut g, mut store, mut idp) = setup();
    let t: Credential = Credential::Bearer(token(1, json!({})).into());
    // No keys yet: the request fetches discovery and the JWKS, asked again after each.
    let Step::Fetch(f) = g.authenticate(&mut store, &t, T0, T0) else {
        panic!("fetches discovery")
    };
    assert_eq!(
        g.authenticate(&mut store, &t, T0, T0),
        Step::Wait(f.resource.clone())
    );
    assert_eq!(g.counters().decision_misses, 0);
    let (status, body) = idp.answer(&f, T0);
    g.on_answer(&mut store, &f.resource, status, &body, T0);
    assert!(matches!(
        run(&mut g, &mut store, &mut idp, &t, T0),
        Step::Allow(_)
    ));
    assert!(matches!(
        run(&mut g, &mut store, &mut idp, &t, T0 + 1),
        Step::Allow(_)
    ));
    assert!(matches!(
        run(&mut g, &mut store, &mut idp, &t, T0 + 2),
        Step::Allow(_)
    ));
    let c = g.counters();
    assert_eq!((c.decision_misses, c.decision_hits), (1, 2));
}
