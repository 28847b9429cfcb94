//! The engine's behaviour end to end on the native target: two "workers" (two gates over one
//! shared store, like two Envoy VMs) against a scripted IdP.

use serde_json::json;

use super::*;
use crate::client_tokens::TOKEN_ENTRIES;
use crate::credentials::{basic_header, ClientCredentials, Secret};
use crate::fetch::{Applied, Look, Step};
use crate::outcome::{ClaimRule, Denial, TokenProblem, Verdict};
use crate::records::{Bucket, TokenValue, BUCKETS, BUCKET_ENTRIES};
use crate::store::SharedStore;
use testkit::keys;

use crate::testing::{bearer, client, done, header, token, World, ISSUER, T0};
use crate::verify::MAX_TOKEN_BYTES;

/// Claim headers as an operator would configure them.
const BASE: &str = r#","upstream_headers_claims":["iss","scp"],"upstream_headers_names":["Issuer_Header","X-Scopes"]"#;

#[test]
fn bearer_allowed_after_discovery_and_jwks_with_claim_headers() {
    let mut w = World::new(BASE);
    let t = token("rsa-1", json!({}));
    let step = w.run(&bearer(&t), T0);
    assert_eq!(
        header(&step, "authorization"),
        Some(format!("Bearer {t}").as_str())
    );
    assert_eq!(header(&step, "Issuer_Header"), Some(ISSUER));
    assert_eq!(header(&step, "X-Scopes"), Some("WyJyZWFkIl0="));
    assert_eq!(w.idp.calls, vec!["discovery", "jwks"]);
    // Verified once; the second time is a cache hit and the IdP hears nothing.
    assert_eq!(w.run(&bearer(&t), T0 + 1), step);
    assert_eq!(w.idp.calls.len(), 2);
}

#[test]
fn a_second_worker_uses_the_shared_key_set() {
    let mut w = World::new(BASE);
    let b = w.add_worker();
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    let step = w.run_on(b, &bearer(&token("rsa-1", json!({"jti":"x"}))), T0);
    assert!(matches!(step, Verdict::Allow(_)));
    assert_eq!(w.idp.calls, vec!["discovery", "jwks"]);
}

#[test]
fn concurrent_first_requests_cause_one_fetch() {
    let mut w = World::new(BASE);
    let b = w.add_worker();
    let cred = client("svc", "good");
    // Discovery and JWKS in place first, so the race is on the token.
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    let Step::Fetch(fetch) = w.ask(0, &cred, T0) else {
        panic!("a fetches")
    };
    assert_eq!(w.ask(b, &cred, T0), Step::Wait(fetch.resource.clone()));
    assert_eq!(w.ask(0, &cred, T0), Step::Wait(fetch.resource.clone()));
    assert_eq!(w.answer(0, &fetch, T0), Applied::Stored);
    // The waiter on the other worker finds the token on its next look.
    let step = w.run_on(b, &cred, T0 + 5);
    assert!(header(&step, "authorization").is_some_and(|v| v.starts_with("Bearer ey")));
    assert_eq!(w.idp.count("token"), 1);
}

#[test]
fn time_checks_use_leeway_exactly() {
    let mut w = World::new(BASE);
    let now_s = T0 / 1000;
    let deny = |p| Verdict::Deny(Denial::InvalidToken(p));
    let cases = [
        (json!({"exp": now_s - 1}), deny(TokenProblem::Expired)),
        // RFC 7519: expired on or after the second `exp` names.
        (json!({"exp": now_s}), deny(TokenProblem::Expired)),
        (json!({"nbf": now_s + 1}), deny(TokenProblem::NotYetValid)),
        (
            json!({"iat": now_s + 1}),
            deny(TokenProblem::IssuedInFuture),
        ),
        (json!({"exp": null}), deny(TokenProblem::MissingExpiry)),
    ];
    for (claims, want) in cases {
        assert_eq!(
            w.run(&bearer(&token("rsa-1", claims.clone())), T0),
            want,
            "{claims}"
        );
    }
    let mut lenient = World::new(r#","leeway":5"#);
    for claims in [
        json!({"exp": now_s - 4}),
        json!({"nbf": now_s + 5}),
        json!({"iat": now_s + 5}),
    ] {
        let step = lenient.run(&bearer(&token("rsa-1", claims.clone())), T0);
        assert!(matches!(step, Verdict::Allow(_)), "{claims}: {step:?}");
    }
    for claims in [
        json!({"exp": now_s - 5}),
        json!({"nbf": now_s + 6}),
        json!({"iat": now_s + 6}),
    ] {
        let step = lenient.run(&bearer(&token("rsa-1", claims.clone())), T0);
        assert!(
            matches!(step, Verdict::Deny(Denial::InvalidToken(_))),
            "{claims}: {step:?}"
        );
    }
}

#[test]
fn a_cached_allow_ends_when_the_token_expires() {
    let mut w = World::new(BASE);
    let t = bearer(&token("rsa-1", json!({"exp": T0 / 1000 + 60})));
    assert!(matches!(w.run(&t, T0), Verdict::Allow(_)));
    assert_eq!(
        w.run(&t, T0 + 61_000),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::Expired))
    );
}

#[test]
fn issuer_audience_client_and_scope() {
    let mut w = World::new(
        r#","audience_required":["api://default"],"clients_allowed":["svc"],"scopes_required":["read"]"#,
    );
    let mut check = |claims: serde_json::Value| w.run(&bearer(&token("rsa-1", claims)), T0);
    assert!(matches!(check(json!({})), Verdict::Allow(_)));
    assert_eq!(
        check(json!({"iss":"http://evil"})),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::WrongIssuer))
    );
    assert_eq!(
        check(json!({"aud":"api://other"})),
        Verdict::Deny(Denial::InsufficientScope(ClaimRule::Audience))
    );
    assert_eq!(
        check(json!({"cid":"intruder"})),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::ClientNotAllowed))
    );
    assert_eq!(
        check(json!({"scp":["write"]})),
        Verdict::Deny(Denial::InsufficientScope(ClaimRule::Scopes))
    );
}

#[test]
fn forged_and_odd_tokens_are_rejected() {
    let mut w = World::new(BASE);
    let good = token("rsa-1", json!({}));
    let mut parts: Vec<&str> = good.split('.').collect();
    let claims_b64 = keys::b64url(
        br#"{"iss":"http://127.0.0.1:9000/oauth2/default","exp":9999999999,"scp":["admin"]}"#,
    );
    parts[1] = &claims_b64;
    let tampered = parts.join(".");
    let header_none = keys::b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = good.split('.').nth(1).unwrap();
    let cases = [
        (tampered, TokenProblem::BadSignature),
        (
            format!("{header_none}.{payload}."),
            TokenProblem::DisallowedAlgorithm,
        ),
        (
            format!("{}.{payload}.", keys::b64url(br#"{"alg":"NONE"}"#)),
            TokenProblem::DisallowedAlgorithm,
        ),
        (
            format!(
                "{}.{payload}.c2ln",
                keys::b64url(br#"{"alg":"HS256","kid":"rsa-1"}"#)
            ),
            TokenProblem::DisallowedAlgorithm,
        ),
        (
            format!(
                "{}.{payload}.c2ln",
                keys::b64url(br#"{"alg":"ES256","kid":"rsa-1"}"#)
            ),
            TokenProblem::DisallowedAlgorithm,
        ),
        ("not-a-jwt".to_string(), TokenProblem::Malformed),
        ("a.b.c".to_string(), TokenProblem::Malformed),
        (format!("{good}."), TokenProblem::Malformed),
        // A valid token with more after a space (`Bearer <token> x`).
        (format!("{good} x"), TokenProblem::Malformed),
        ("x".repeat(MAX_TOKEN_BYTES + 1), TokenProblem::TooLarge),
    ];
    for (t, want) in cases {
        let step = w.run(&bearer(&t), T0);
        assert_eq!(
            step,
            Verdict::Deny(Denial::InvalidToken(want)),
            "{}",
            &t[..t.len().min(80)]
        );
    }
    // None of those was cached: memory does not grow with bad tokens.
    assert_eq!(w.gate().cached_decisions(), 0);
}

#[test]
fn unknown_kid_refetches_at_most_once_per_rediscovery_lifetime() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    assert_eq!(w.idp.count("jwks"), 1);
    // rsa-2 is not published: within 30 s of the last fetch, no refetch at all.
    let rotated = bearer(&token("rsa-2", json!({})));
    assert_eq!(
        w.run(&rotated, T0 + 1000),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))
    );
    assert_eq!(w.idp.count("jwks"), 1);
    // After it, one refetch; still unknown → denied, and no second refetch.
    assert_eq!(
        w.run(&rotated, T0 + 30_000),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))
    );
    assert_eq!(
        w.run(&rotated, T0 + 31_000),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))
    );
    assert_eq!(w.idp.count("jwks"), 2);
    // The IdP rotates: the next allowed refetch picks the new key up, for every worker.
    w.idp.keys = vec!["rsa-2", "rsa-1"];
    let step = w.run(&rotated, T0 + 61_000);
    assert!(matches!(step, Verdict::Allow(_)), "{step:?}");
    let other = w.add_worker();
    let step = w.run_on(
        other,
        &bearer(&token("rsa-2", json!({"jti":"o"}))),
        T0 + 61_000,
    );
    assert!(matches!(step, Verdict::Allow(_)));
    assert_eq!(w.idp.count("jwks"), 3);
}

#[test]
fn a_worker_whose_keys_were_current_takes_up_keys_another_worker_stored() {
    let mut w = World::new(BASE);
    let b = w.add_worker();
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    // b is up to date with the shared record, and verifies without parsing it again.
    for jti in ["1", "2"] {
        let step = w.run_on(b, &bearer(&token("rsa-1", json!({ "jti": jti }))), T0 + 1);
        assert!(matches!(step, Verdict::Allow(_)), "{step:?}");
    }
    // The IdP rotates and worker 0 stores the new set; b's next verification finds it.
    w.idp.keys = vec!["rsa-2", "rsa-1"];
    let step = w.run(&bearer(&token("rsa-2", json!({}))), T0 + 61_000);
    assert!(matches!(step, Verdict::Allow(_)), "{step:?}");
    let step = w.run_on(b, &bearer(&token("rsa-2", json!({"jti":"b"}))), T0 + 61_001);
    assert!(matches!(step, Verdict::Allow(_)), "{step:?}");
    assert_eq!(w.idp.count("jwks"), 2, "b fetched nothing itself");
}

#[test]
fn an_unknown_kid_refusal_says_which_kid_beside_the_key_set() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    assert_eq!(w.gate().take_detail(), None, "an allowed token leaves none");
    let rotated = bearer(&token("rsa-2", json!({})));
    assert_eq!(
        w.run(&rotated, T0 + 1000),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))
    );
    let published: Vec<String> = w.idp.keys.iter().map(|k| format!("`{k}`")).collect();
    assert_eq!(
        w.gate().take_detail().as_deref(),
        Some(format!("kid `rsa-2`, the key set has {}", published.join(", ")).as_str())
    );
    // The caller wrote the kid: escaped and cut short like all such text.
    let hostile_kid = format!("x\"\n{}", "k".repeat(500));
    let hostile = keys::mint_raw(
        &json!({"alg": "RS256", "kid": hostile_kid}),
        &crate::testing::claims(json!({})),
        keys::Sig::Key {
            kid: "rsa-1",
            alg: "RS256",
        },
    );
    assert_eq!(
        w.run(&bearer(&hostile), T0 + 2000),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::UnknownKey))
    );
    let detail = w.gate().take_detail().unwrap();
    assert!(detail.starts_with("kid `x\\\"\\nkkk"), "{detail}");
    assert!(!detail.contains('\n'), "{detail}");
    assert!(detail.len() < 200, "{detail}");
    // Taken once: the next refusal of another kind does not inherit it.
    assert_eq!(w.gate().take_detail(), None);
}

#[test]
fn a_client_token_signed_with_a_key_not_yet_published_is_503_not_401() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    // The IdP starts signing with rsa-2 before publishing it.
    w.idp.token_kid = "rsa-2";
    let step = w.run(&client("svc", "good"), T0 + 1000);
    assert!(
        matches!(step, Verdict::Deny(Denial::IdpUnavailable { retry_after_s }) if retry_after_s >= 1),
        "{step:?}"
    );
    // Once published (and the refetch allowance is back), the same client passes.
    w.idp.keys = vec!["rsa-1", "rsa-2"];
    let step = w.run(&client("svc", "good"), T0 + 61_000);
    assert!(matches!(step, Verdict::Allow(_)), "{step:?}");
}

#[test]
fn churn_of_other_credentials_never_refuses_a_cached_client_while_the_idp_is_down() {
    let mut w = World::new(BASE);
    let good = client("svc", "good");
    assert!(matches!(w.run(&good, T0), Verdict::Allow(_)));
    // Far more distinct wrong secrets than the shared buckets hold (256 × 8): the good
    // client's shared entry is evicted.
    for i in 0..6000 {
        let bad = client("svc", &format!("wrong-{i}"));
        w.run(&bad, T0 + 1);
    }
    // The per-credential hashes this VM remembers stay bounded too.
    let g = &mut w.gates[0];
    assert!(g.clients.remembered() <= TOKEN_ENTRIES);
    let good_client = ClientCredentials {
        id: "svc".into(),
        secret: Secret::new("good"),
    };
    let key = g.clients.key(&g.config.idp, &good_client, T0 + 1);
    assert!(!matches!(
        g.fetcher.layout().token_entry(&w.store, &key).value,
        Some(TokenValue::Issued { .. })
    ));
    // Past the refresh point, with the IdP down: this VM's copy still serves.
    w.idp.up = false;
    let later = T0 + 3_000_000;
    let step = w.run(&good, later);
    assert!(matches!(step, Verdict::Allow(_)), "{step:?}");
    // And the background refresh brings the shared entry back once the IdP is up.
    w.idp.up = true;
    w.tick(later + 60_000);
    let step = w.run(&good, later + 60_001);
    assert!(matches!(step, Verdict::Allow(_)), "{step:?}");
}

#[test]
fn client_credentials_exchange_cache_and_wrong_secret() {
    let mut w = World::new(BASE);
    let good = client("svc", "good");
    let step = w.run(&good, T0);
    let bearer = header(&step, "authorization").unwrap().to_string();
    assert!(bearer.starts_with("Bearer "));
    assert_eq!(header(&step, "Issuer_Header"), Some(ISSUER));
    assert_eq!(w.idp.count("token"), 1);
    // Looked at again within its first millisecond, the request is still one miss.
    assert_eq!(w.gate().counters().token_misses, 1);
    // Cached: same token, no IdP call, on this worker and on another.
    assert_eq!(
        header(&w.run(&good, T0 + 1000), "authorization"),
        Some(bearer.as_str())
    );
    let other = w.add_worker();
    assert_eq!(
        header(&w.run_on(other, &good, T0 + 1000), "authorization"),
        Some(bearer.as_str())
    );
    assert_eq!(w.idp.count("token"), 1);
    // A wrong secret right after is never answered from the cache.
    let wrong = client("svc", "bad");
    assert_eq!(
        w.run(&wrong, T0 + 2000),
        Verdict::Deny(Denial::InvalidClient)
    );
    assert_eq!(w.idp.count("token"), 2);
    // Negative cache: no IdP call for `cache_ttl_neg` (10 s), then asked again.
    assert_eq!(
        w.run_on(other, &wrong, T0 + 11_999),
        Verdict::Deny(Denial::InvalidClient)
    );
    assert_eq!(w.idp.count("token"), 2);
    assert_eq!(
        w.run(&wrong, T0 + 12_000),
        Verdict::Deny(Denial::InvalidClient)
    );
    assert_eq!(w.idp.count("token"), 3);
}

#[test]
fn token_request_carries_the_callers_credentials_not_others() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    let Step::Fetch(f) = w.ask(0, &client("a:b", "c d"), T0) else {
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
    let mut w = World::new(BASE);
    let good = client("svc", "good");
    assert!(matches!(w.run(&good, T0), Verdict::Allow(_)));
    w.idp.up = false;
    w.idp.secrets.push(("new".into(), "s".into()));
    assert!(matches!(w.run(&good, T0 + 1000), Verdict::Allow(_)));
    let step = w.run(&client("new", "s"), T0 + 1000);
    assert_eq!(
        step,
        Verdict::Deny(Denial::IdpUnavailable { retry_after_s: 1 })
    );
    // Backing off: no new call within the backoff.
    let calls = w.idp.calls.len();
    assert!(matches!(
        w.run(&client("new", "s"), T0 + 1500),
        Verdict::Deny(Denial::IdpUnavailable { .. })
    ));
    assert_eq!(w.idp.calls.len(), calls);
    // Back up: recovers by itself.
    w.idp.up = true;
    assert!(matches!(
        w.run(&client("new", "s"), T0 + 3000),
        Verdict::Allow(_)
    ));
}

#[test]
fn idp_5xx_and_garbage_are_503_never_401() {
    for (status, body) in [
        (Some(500), &b"oops"[..]),
        (Some(200), b"<html>"),
        (None, b""),
    ] {
        let mut w = World::new(BASE);
        let Step::Fetch(f) = w.ask(0, &bearer(&token("rsa-1", json!({}))), T0) else {
            panic!()
        };
        assert!(matches!(
            w.gates[0].on_answer(&mut w.store, &f.resource, status, body, T0),
            Applied::Failed(_)
        ));
        let step = w.ask(0, &bearer(&token("rsa-1", json!({}))), T0);
        assert_eq!(
            step,
            Step::deny(Denial::IdpUnavailable { retry_after_s: 1 }),
            "{status:?}"
        );
    }
}

#[test]
fn startup_with_the_idp_down_recovers_in_the_background() {
    let mut w = World::new(BASE);
    w.idp.up = false;
    let mut now = T0;
    for _ in 0..5 {
        w.tick(now);
        now += 1000;
    }
    // Backoff keeps attempts well below one per tick.
    assert!(w.idp.calls.len() <= 4, "{:?}", w.idp.calls);
    w.idp.up = true;
    for _ in 0..40 {
        w.tick(now);
        now += 1000;
    }
    let step = w.ask(0, &bearer(&token("rsa-1", json!({}))), now);
    assert!(matches!(step, Step::Done(Verdict::Allow(_))), "{step:?}");
}

#[test]
fn stale_keys_keep_serving_while_a_refresh_fails() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    w.idp.up = false;
    let later = T0 + JWKS_MAX_AGE_MS;
    let fetches = w.gates[0].background(&mut w.store, later);
    assert_eq!(fetches.len(), 1);
    for f in fetches {
        assert!(matches!(w.answer(0, &f, later), Applied::Failed(_)));
    }
    let fresh_worker = w.add_worker();
    let step = w.run_on(
        fresh_worker,
        &bearer(&token("rsa-1", json!({"jti":"n"}))),
        later,
    );
    assert!(matches!(step, Verdict::Allow(_)));
}

#[test]
fn tokens_are_refreshed_ahead_of_expiry_without_making_requests_wait() {
    let mut w = World::new(BASE);
    w.idp.token_ttl_s = 400;
    let good = client("svc", "good");
    let first = header(&w.run(&good, T0), "authorization")
        .unwrap()
        .to_string();
    // Refresh window: the last tenth of the lifetime (40 s).
    let later = T0 + 361_000;
    let before = done(w.ask(0, &good, later - 2_000));
    assert_eq!(header(&before, "authorization"), Some(first.as_str()));
    assert_eq!(w.tick(later - 2_000), 0, "not due yet");
    let step = done(w.ask(0, &good, later));
    assert_eq!(
        header(&step, "authorization"),
        Some(first.as_str()),
        "served from cache"
    );
    assert_eq!(w.tick(later), 1);
    let step = done(w.ask(0, &good, later + 1));
    let second = header(&step, "authorization").unwrap();
    assert_ne!(second, first);
    assert_eq!(w.idp.count("token"), 2);
    // Nothing more to refresh.
    assert!(w.gates[0].background(&mut w.store, later + 2).is_empty());
}

#[test]
fn without_token_caching_each_request_exchanges_but_waiters_share_a_fetch() {
    let mut w = World::new(&format!("{BASE}{}", r#","cache_tokens":false"#));
    let good = client("svc", "good");
    w.run(&good, T0);
    w.run(&good, T0 + 1);
    assert_eq!(w.idp.count("token"), 2);
    let Step::Fetch(f) = w.ask(0, &good, T0 + 2) else {
        panic!()
    };
    assert_eq!(w.ask(0, &good, T0 + 2), Step::Wait(f.resource.clone()));
    w.answer(0, &f, T0 + 3);
    assert!(matches!(
        w.ask_again(0, &good, T0 + 2, T0 + 3),
        Step::Done(Verdict::Allow(_))
    ));
    assert_eq!(w.idp.count("token"), 3);
}

#[test]
fn abandoned_fetch_lets_the_next_request_fetch() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    let good = client("svc", "good");
    let Step::Fetch(f) = w.ask(0, &good, T0) else {
        panic!()
    };
    let g = &mut w.gates[0];
    g.abandon(&mut w.store, &f.resource, T0);
    assert!(matches!(w.ask(0, &good, T0), Step::Fetch(_)));
}

#[test]
fn a_stalled_fetcher_is_taken_over_after_timeout() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    let good = client("svc", "good");
    assert!(matches!(w.ask(0, &good, T0), Step::Fetch(_)));
    assert!(matches!(
        w.ask_again(0, &good, T0, T0 + 10_999),
        Step::Wait(_)
    ));
    assert!(matches!(
        w.ask_again(0, &good, T0, T0 + 11_001),
        Step::Fetch(_)
    ));
}

#[test]
fn disallowed_client_id_is_refused_without_asking_the_idp() {
    let mut w = World::new(&format!("{BASE}{}", r#","clients_allowed":["svc"]"#));
    let step = w.run(&client("other", "x"), T0);
    assert_eq!(
        step,
        Verdict::Deny(Denial::InvalidToken(TokenProblem::ClientNotAllowed))
    );
    assert!(w.idp.calls.is_empty());
}

#[test]
fn shared_token_memory_is_bounded_by_buckets() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    for i in 0..3000 {
        w.run(&client(&format!("c{i}"), "x"), T0 + i);
    }
    let layout = w.gate().fetcher.layout().clone();
    let total: usize = (0..BUCKETS)
        .map(|i| {
            w.store
                .get(&layout.bucket_at(i))
                .map(|(v, _)| v.len())
                .unwrap_or(0)
        })
        .sum();
    // A rejected entry is ~200 bytes of JSON; 2048 of them at most.
    assert!(total < BUCKETS * BUCKET_ENTRIES * 300, "{total}");
    let max_entries = (0..BUCKETS)
        .map(|i| layout.read::<Bucket>(&w.store, &layout.bucket_at(i)).len())
        .max();
    assert_eq!(max_entries, Some(BUCKET_ENTRIES));
}

#[test]
fn strip_list_covers_credentials_and_every_written_header() {
    let mut w = World::new(&format!(
        "{BASE}{}",
        r#","upstream_access_token_header":"x-access-token""#
    ));
    assert_eq!(
        *w.gate().strip_headers(),
        [
            "authorization",
            "issuer_header",
            "issuer-header",
            "x-scopes",
            "x_scopes",
            "x-access-token",
            "x_access-token",
            "x-access_token",
            "x_access_token"
        ]
    );
}

#[test]
fn is_busy_tracks_an_in_flight_fetch_for_every_worker() {
    let mut w = World::new(BASE);
    let other = w.add_worker();
    let Step::Fetch(f) = w.ask(0, &bearer(&token("rsa-1", json!({}))), T0) else {
        panic!()
    };
    let busy = |w: &World, i: usize| w.gates[i].is_busy(&w.store, &f.resource, T0);
    assert!(busy(&w, 0) && busy(&w, other));
    w.answer(0, &f, T0);
    assert!(!busy(&w, other));
}

#[test]
fn a_verify_miss_is_one_verification_however_often_a_waiting_request_asks() {
    let mut w = World::new(BASE);
    let t: Credential = bearer(&token("rsa-1", json!({})));
    // No keys yet: the request fetches discovery and the JWKS, asked again after each.
    let Step::Fetch(f) = w.ask(0, &t, T0) else {
        panic!("fetches discovery")
    };
    assert_eq!(w.ask(0, &t, T0), Step::Wait(f.resource.clone()));
    assert_eq!(w.gate().counters().decision_misses, 0);
    w.answer(0, &f, T0);
    assert!(matches!(w.run(&t, T0), Verdict::Allow(_)));
    assert!(matches!(w.run(&t, T0 + 1), Verdict::Allow(_)));
    assert!(matches!(w.run(&t, T0 + 2), Verdict::Allow(_)));
    let c = w.gate().counters();
    assert_eq!((c.decision_misses, c.decision_hits), (1, 2));
}

#[test]
fn an_abandoned_key_set_refetch_does_not_use_up_the_allowance() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    w.idp.keys = vec!["rsa-2", "rsa-1"];
    let rotated = bearer(&token("rsa-2", json!({})));
    let later = T0 + 30_000;
    // The refetch is claimed, then its sender goes away without an answer.
    let Step::Fetch(f) = w.ask(0, &rotated, later) else {
        panic!("an unknown kid refetches")
    };
    let g = &mut w.gates[0];
    g.abandon(&mut w.store, &f.resource, later);
    // The next caller may refetch at once: only completed fetches count.
    assert!(matches!(w.ask(0, &rotated, later + 1), Step::Fetch(_)));
    // Nor does it delay the periodic refresh.
    let mut other = World::new(BASE);
    other.run(&bearer(&token("rsa-1", json!({}))), T0);
    let due = T0 + JWKS_MAX_AGE_MS;
    let fetches = other.gates[0].background(&mut other.store, due);
    assert_eq!(fetches.len(), 1);
    other.gates[0].abandon(&mut other.store, &fetches[0].resource, due);
    assert_eq!(other.tick(due + 20), 1);
}

#[test]
fn a_key_set_refetch_that_brings_the_same_keys_is_not_a_new_version() {
    let mut w = World::new(BASE);
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    let layout = w.gate().fetcher.layout().clone();
    let key = layout.jwks();
    let before: Fetched<String> = layout.read(&w.store, &key);
    assert_eq!(w.tick(T0 + JWKS_MAX_AGE_MS), 1);
    let after: Fetched<String> = layout.read(&w.store, &key);
    assert_eq!(after.version, before.version);
    assert_eq!(after.fetched_ms, T0 + JWKS_MAX_AGE_MS);
}

#[test]
fn a_token_is_expired_from_the_second_exp_names_on_for_every_algorithm() {
    let mut w = World::new(BASE);
    w.idp.keys = vec!["rsa-1", "ec-1", "ed-1"];
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let now_s = T0 / 1000;
        let at = |exp: u64| bearer(&token(kid, json!({"exp": exp, "jti": kid})));
        assert!(
            matches!(w.run(&at(now_s + 1), T0), Verdict::Allow(_)),
            "{kid}"
        );
        assert_eq!(
            w.run(&at(now_s), T0),
            Verdict::Deny(Denial::InvalidToken(TokenProblem::Expired)),
            "{kid}"
        );
        // And a cached allow ends at that second too.
        assert_eq!(
            w.run(&at(now_s + 1), T0 + 1000),
            Verdict::Deny(Denial::InvalidToken(TokenProblem::Expired)),
            "{kid}"
        );
    }
}

#[test]
fn a_new_policy_for_the_same_idp_uses_what_was_fetched_and_adds_no_shared_keys() {
    let mut w = World::new(BASE);
    let t = token("rsa-1", json!({}));
    w.run(&bearer(&t), T0);
    w.run(&client("svc", "good"), T0);
    let calls = w.idp.calls.clone();
    let keys = w.store.len();
    // The operator changes the claim headers: Envoy configures the filter anew.
    let json = format!(
        r#"{{"issuer":"{ISSUER}","upstream_headers_claims":["sub"],"upstream_headers_names":["X-Sub"]}}"#
    );
    let mut gate = Gate::new(crate::config::Config::parse(json.as_bytes()).unwrap());
    gate.init_shared(&mut w.store, T0 + 1);
    w.gates.push(gate);
    let again = w.run_on(1, &bearer(&t), T0 + 2);
    assert!(header(&again, "X-Sub").is_some(), "{again:?}");
    assert!(matches!(
        w.run_on(1, &client("svc", "good"), T0 + 2),
        Verdict::Allow(_)
    ));
    assert_eq!(w.idp.calls, calls, "the new configuration fetched again");
    assert_eq!(w.store.len(), keys);
}

/// A store that counts the reads of each key and the writes that landed on it.
struct Counting<'a> {
    inner: &'a mut crate::store::MemStore,
    reads: std::cell::RefCell<std::collections::HashMap<String, usize>>,
    writes: std::collections::HashMap<String, usize>,
}

impl<'a> Counting<'a> {
    fn new(inner: &'a mut crate::store::MemStore) -> Counting<'a> {
        Counting {
            inner,
            reads: Default::default(),
            writes: Default::default(),
        }
    }

    fn reads(&self, key: &str) -> usize {
        self.reads.borrow().get(key).copied().unwrap_or(0)
    }

    fn writes(&self, key: &str) -> usize {
        self.writes.get(key).copied().unwrap_or(0)
    }
}

impl SharedStore for Counting<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        *self.reads.borrow_mut().entry(key.to_string()).or_default() += 1;
        self.inner.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        let landed = self.inner.set(key, value, cas);
        if landed {
            *self.writes.entry(key.to_string()).or_default() += 1;
        }
        landed
    }
}

#[test]
fn the_timer_reads_a_fresh_key_set_once_and_refreshes_it_when_due_unless_another_worker_did() {
    let mut w = World::new(BASE);
    let other = w.add_worker();
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    let jwks = w.gate().fetcher.layout().jwks();
    let World {
        store, idp, gates, ..
    } = &mut w;
    let mut counting = Counting::new(store);
    // Ten minutes of 20 ms ticks on worker 0: the record is read once, to learn its age.
    let mut now = T0;
    while now < T0 + JWKS_MAX_AGE_MS {
        assert!(gates[0].background(&mut counting, now).is_empty());
        now += 20;
    }
    assert_eq!(counting.reads(&jwks), 1);
    // Due: the other worker refreshes it first; worker 0 reads it again and finds it fresh.
    let fetches = gates[other].background(&mut counting, now);
    assert_eq!(fetches.len(), 1);
    for f in &fetches {
        let (status, body) = idp.answer(f, now);
        gates[other].on_answer(&mut counting, &f.resource, status, &body, now);
    }
    let reads = counting.reads(&jwks);
    assert!(gates[0].background(&mut counting, now + 20).is_empty());
    assert_eq!(counting.reads(&jwks), reads + 1);
    // Due again ten minutes after that refresh, and then worker 0 fetches.
    let due = now + JWKS_MAX_AGE_MS;
    assert!(gates[0].background(&mut counting, due - 20).is_empty());
    assert_eq!(gates[0].background(&mut counting, due).len(), 1);
}

#[test]
fn an_unknown_kid_flood_from_every_worker_writes_the_key_set_record_once_per_refetch() {
    let mut w = World::new(BASE);
    let other = w.add_worker();
    w.run(&bearer(&token("rsa-1", json!({}))), T0);
    let jwks = w.gate().fetcher.layout().jwks();
    let World {
        store, idp, gates, ..
    } = &mut w;
    let mut counting = Counting::new(store);
    // Both workers take 500 requests each with a kid nobody publishes, over 95 s.
    for i in 0..1000u64 {
        let now = T0 + 1000 + i * 96;
        let gate = &mut gates[if i % 2 == 0 { 0 } else { other }];
        let cred = bearer(&token("rsa-2", json!({ "jti": i.to_string() })));
        if let Step::Fetch(f) = gate.authenticate(&mut counting, &cred, 0, Look::first(now), now) {
            let (status, body) = idp.answer(&f, now);
            gate.on_answer(&mut counting, &f.resource, status, &body, now);
        }
    }
    let refetches = idp.count("jwks") - 1;
    // One refetch per 30 s rediscovery lifetime, however many requests asked.
    assert!((3..=4).contains(&refetches), "{refetches} refetches");
    // A claim and a result per refetch: the flood itself writes nothing, so a worker's
    // compare-and-swap on the record cannot be starved by the others'.
    let writes = counting.writes(&jwks);
    assert!(
        writes <= 2 * refetches,
        "{writes} writes for {refetches} refetches"
    );
}

#[test]
fn a_token_verified_on_one_route_is_judged_on_another_without_verifying_again() {
    let mut w = World::new(
        r#","upstream_headers_claims":["sub"],"upstream_headers_names":["X-Subject"],
           "policies":{"admin":{"scopes_required":["admin"],"upstream_headers_claims":["cid"],
                                "upstream_headers_names":["X-Client"]}}"#,
    );
    let admin = w.gate().config().policy_named("admin").unwrap();
    let t = bearer(&token("rsa-1", json!({"scp": ["read"]})));
    let step = w.run(&t, T0);
    assert!(header(&step, "X-Subject").is_some(), "{step:?}");
    assert_eq!(w.gate().counters().decision_misses, 1);
    // The admin route: same token, its own rules and headers, no second verification.
    let Step::Done(on_admin) = w.ask(0, &t, T0) else {
        panic!("decided at once")
    };
    assert!(matches!(on_admin, Verdict::Allow(_)));
    let on_admin = w.gates[0].authenticate(&mut w.store, &t, admin, Look::first(T0), T0);
    assert_eq!(
        on_admin,
        Step::Done(Verdict::Deny(Denial::InsufficientScope(ClaimRule::Scopes)))
    );
    assert_eq!(w.gate().counters().decision_misses, 1);
    let admin_token = bearer(&token("rsa-1", json!({"scp": ["admin"], "jti": "a"})));
    let Step::Done(allowed) =
        w.gates[0].authenticate(&mut w.store, &admin_token, admin, Look::first(T0), T0)
    else {
        panic!("decided at once")
    };
    assert!(header(&allowed, "X-Client").is_some() && header(&allowed, "X-Subject").is_none());
    // Both policies' claim headers are stripped from every request.
    let strip = w.gate().strip_headers();
    assert!(strip.iter().any(|h| h == "x-client") && strip.iter().any(|h| h == "x-subject"));
}

#[test]
fn a_token_of_any_lifetime_is_fetched_about_once_per_lifetime_and_no_request_waits() {
    for lifetime_s in [5u64, 12, 60, 300, 3600, 86_400] {
        let mut w = World::new(BASE);
        w.idp.token_ttl_s = lifetime_s;
        let c = client("svc", "good");
        assert!(matches!(w.run(&c, T0), Verdict::Allow(_)), "{lifetime_s} s");
        let first = w.idp.count("token");
        assert_eq!(first, 1);
        // Sixteen requests a lifetime, at least one a minute, for three lifetimes, the timer
        // running before each (in a VM it runs every 20 ms). A refresh starts when a request
        // finds its token due, so a client idle through the whole refresh window would wait.
        let lifetime_ms = lifetime_s * 1000;
        let step = (lifetime_ms / 16).min(60_000);
        let mut now = T0;
        while now < T0 + 3 * lifetime_ms {
            now += step;
            w.tick(now);
            match w.ask(0, &c, now) {
                Step::Done(Verdict::Allow(_)) => {}
                other => panic!("{lifetime_s} s: at +{} ms: {other:?}", now - T0),
            }
        }
        let calls = w.idp.count("token");
        assert!(
            calls <= first + 3,
            "{lifetime_s} s tokens: {calls} token calls in three lifetimes"
        );
        assert!(
            calls >= first + 2,
            "{lifetime_s} s tokens: refreshed {calls} times"
        );
    }
}

#[test]
fn refresh_margins_grow_with_the_lifetime_within_their_bounds() {
    use crate::client_tokens::{expiry_margin_ms, refresh_lead_ms};
    for (lifetime_ms, margin, lead) in [
        (1_000, 250, 1_250),
        (5_000, 250, 1_250),
        (12_000, 600, 1_600),
        (60_000, 3_000, 6_000),
        (300_000, 10_000, 30_000),
        (86_400_000, 10_000, 300_000),
    ] {
        assert_eq!(expiry_margin_ms(lifetime_ms), margin, "{lifetime_ms}");
        assert_eq!(refresh_lead_ms(lifetime_ms), lead, "{lifetime_ms}");
    }
}
