//! Introspection end to end on the native target: gates (workers) over one shared store
//! against the scripted IdP, which knows some opaque tokens and counts its calls.

use serde_json::json;

use crate::fetch::{Applied, Step};
use crate::outcome::{Denial, TokenProblem, Verdict};
use crate::testing::{bearer, claims, client, header, token, World, ISSUER, T0};

/// The gateway's own client is `svc`/`good`, which the scripted IdP knows.
const GATEWAY: &str = r#","client_id":"svc","client_secret":"good","auth_methods":["bearer","introspection"],"upstream_headers_claims":["iss","sub"],"upstream_headers_names":["Issuer_Header","X-Subject"]"#;

fn world(extra: &str) -> World {
    let mut w = World::new(&format!("{GATEWAY}{extra}"));
    w.idp.opaque.push((
        "opaque-good".into(),
        claims(json!({"sub": "alice", "client_id": "svc"})),
    ));
    w
}

fn inactive() -> Verdict {
    Verdict::Deny(Denial::InvalidToken(TokenProblem::Inactive))
}

#[test]
fn an_active_opaque_token_is_allowed_with_its_claims_and_asked_once() {
    let mut w = world("");
    let cred = bearer("opaque-good");
    let verdict = w.run(&cred, T0);
    assert_eq!(header(&verdict, "Issuer_Header"), Some(ISSUER));
    assert_eq!(header(&verdict, "X-Subject"), Some("alice"));
    assert_eq!(
        header(&verdict, "authorization"),
        Some("Bearer opaque-good")
    );
    assert_eq!(w.idp.calls, vec!["discovery", "introspection"]);
    // Looked at three times within its first millisecond, the request is still one miss.
    assert_eq!(w.gate().counters().answer_misses, 1);
    // The opaque token never needed the key set; the answer is cached.
    for i in 1..50 {
        assert_eq!(w.run(&cred, T0 + i * 1000), verdict);
    }
    assert_eq!(w.idp.count("introspection"), 1);
    w.idp.only_configured_urls();
}

#[test]
fn concurrent_first_requests_on_two_workers_make_one_call() {
    let mut w = world("");
    let b = w.add_worker();
    let cred = bearer("opaque-good");
    let Step::Fetch(discovery) = w.ask(0, &cred, T0) else {
        panic!("discovery first")
    };
    w.answer(0, &discovery, T0);
    let Step::Fetch(fetch) = w.ask(0, &cred, T0) else {
        panic!("worker 0 introspects")
    };
    assert_eq!(w.ask(b, &cred, T0), Step::Wait(fetch.resource.clone()));
    assert_eq!(w.answer(0, &fetch, T0), Applied::Stored);
    let on_b = w.run_on(b, &cred, T0 + 5);
    assert_eq!(header(&on_b, "X-Subject"), Some("alice"));
    assert_eq!(w.idp.count("introspection"), 1);
}

#[test]
fn an_unknown_token_is_inactive_and_remembered_for_cache_ttl_neg() {
    let mut w = world(r#","cache_ttl_neg":5"#);
    let cred = bearer("nobody-issued-this");
    assert_eq!(w.run(&cred, T0), inactive());
    assert_eq!(w.run(&cred, T0 + 4_000), inactive());
    assert_eq!(w.idp.count("introspection"), 1);
    // Past the negative TTL the IdP is asked again.
    assert_eq!(w.run(&cred, T0 + 5_001), inactive());
    assert_eq!(w.idp.count("introspection"), 2);
}

#[test]
fn an_answer_is_trusted_until_its_exp_and_never_past_cache_ttl_max() {
    let exp_s = T0 / 1000 + 120;
    let mut w = world("");
    w.idp
        .opaque
        .push(("short".into(), claims(json!({"exp": exp_s}))));
    let cred = bearer("short");
    assert!(matches!(w.run(&cred, T0), Verdict::Allow(_)));
    assert!(matches!(w.run(&cred, T0 + 119_000), Verdict::Allow(_)));
    assert_eq!(w.idp.count("introspection"), 1);
    // At `exp` the cached answer is gone, and an IdP still calling it active is overruled
    // by the token's own expiry.
    assert_eq!(
        w.run(&cred, T0 + 120_000),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::Expired))
    );
    assert_eq!(w.idp.count("introspection"), 2);

    let mut capped = world(r#","cache_ttl_max":30"#);
    let cred = bearer("opaque-good");
    capped.run(&cred, T0);
    capped.run(&cred, T0 + 29_000);
    assert_eq!(capped.idp.count("introspection"), 1);
    capped.run(&cred, T0 + 30_000);
    assert_eq!(capped.idp.count("introspection"), 2);
}

#[test]
fn revocation_shows_once_the_cached_answer_expires() {
    let mut w = world(r#","cache_ttl_max":10"#);
    let cred = bearer("opaque-good");
    assert!(matches!(w.run(&cred, T0), Verdict::Allow(_)));
    w.idp.revoked.push("opaque-good".into());
    assert!(matches!(w.run(&cred, T0 + 9_000), Verdict::Allow(_)));
    assert_eq!(w.run(&cred, T0 + 10_000), inactive());
}

#[test]
fn an_outage_is_503_for_a_new_token_while_a_cached_answer_keeps_serving() {
    let mut w = world("");
    let cached = bearer("opaque-good");
    assert!(matches!(w.run(&cached, T0), Verdict::Allow(_)));
    w.idp.up = false;
    w.idp.opaque.push(("new".into(), claims(json!({}))));
    assert!(matches!(
        w.run(&bearer("new"), T0 + 1_000),
        Verdict::Deny(Denial::IdpUnavailable { .. })
    ));
    assert!(matches!(w.run(&cached, T0 + 2_000), Verdict::Allow(_)));
    // A 5xx and garbage are outages too; the backoff answers before asking again.
    w.idp.up = true;
    w.idp.introspection_status = 500;
    let again = w.run(&bearer("new"), T0 + 60_000);
    assert!(
        matches!(again, Verdict::Deny(Denial::IdpUnavailable { retry_after_s }) if retry_after_s >= 1)
    );
    w.idp.introspection_status = 200;
    assert!(matches!(
        w.run(&bearer("new"), T0 + 120_000),
        Verdict::Allow(_)
    ));
}

#[test]
fn a_refused_gateway_client_is_an_outage_not_the_callers_fault() {
    let mut w = World::new(
        r#","client_id":"gateway","client_secret":"wrong","auth_methods":["introspection"]"#,
    );
    w.idp.opaque.push(("opaque-good".into(), claims(json!({}))));
    let verdict = w.run(&bearer("opaque-good"), T0);
    assert!(matches!(
        verdict,
        Verdict::Deny(Denial::IdpUnavailable { .. })
    ));
}

#[test]
fn an_opaque_token_where_the_policy_does_not_introspect_is_malformed_without_a_call() {
    let mut w = World::new(r#","client_id":"svc","client_secret":"good""#);
    assert_eq!(
        w.run(&bearer("opaque-good"), T0),
        Verdict::Deny(Denial::InvalidToken(TokenProblem::Malformed))
    );
    assert_eq!(w.idp.count("introspection"), 0);
}

#[test]
fn a_jwt_is_verified_locally_and_with_introspect_jwt_tokens_also_asked() {
    let t = token("rsa-1", json!({}));
    let mut plain = world("");
    assert!(matches!(plain.run(&bearer(&t), T0), Verdict::Allow(_)));
    assert_eq!(plain.idp.count("introspection"), 0);

    let mut w = world(r#","introspect_jwt_tokens":true"#);
    assert!(matches!(w.run(&bearer(&t), T0), Verdict::Allow(_)));
    assert!(matches!(w.run(&bearer(&t), T0 + 1_000), Verdict::Allow(_)));
    assert_eq!(w.idp.count("introspection"), 1);
    assert_eq!(w.idp.count("jwks"), 1);
    let revoked = token("rsa-1", json!({"jti": "revoked"}));
    w.idp.revoked.push(revoked.clone());
    assert_eq!(w.run(&bearer(&revoked), T0), inactive());
    // A tampered JWT is refused locally: the IdP is not asked about it.
    let calls = w.idp.count("introspection");
    let tampered = format!("{}x", &t[..t.len() - 1]);
    assert!(matches!(
        w.run(&bearer(&tampered), T0),
        Verdict::Deny(Denial::InvalidToken(_))
    ));
    assert_eq!(w.idp.count("introspection"), calls);
}

#[test]
fn a_jwt_on_an_introspection_only_policy_is_judged_by_the_idps_answer() {
    let mut w =
        World::new(r#","client_id":"svc","client_secret":"good","auth_methods":["introspection"]"#);
    let t = token("rsa-1", json!({}));
    assert!(matches!(w.run(&bearer(&t), T0), Verdict::Allow(_)));
    assert_eq!(w.idp.calls, vec!["discovery", "introspection"]);
}

#[test]
fn client_credentials_with_an_opaque_token_introspect_it_once() {
    let mut w =
        World::new(r#","upstream_headers_claims":["sub"],"upstream_headers_names":["X-Subject"]"#);
    w.idp.issues_opaque = true;
    let cred = client("svc", "good");
    let verdict = w.run(&cred, T0);
    assert_eq!(header(&verdict, "X-Subject"), Some("svc"));
    assert!(header(&verdict, "authorization").is_some_and(|v| v.starts_with("Bearer opaque-")));
    for i in 1..20 {
        assert_eq!(w.run(&cred, T0 + i * 1000), verdict);
    }
    // Without a client of its own, the gateway asked as the caller's client.
    assert_eq!(w.idp.calls, vec!["discovery", "token", "introspection"]);
}

#[test]
fn without_caching_every_request_asks() {
    let mut w = world(r#","cache_introspection":false"#);
    let cred = bearer("opaque-good");
    for i in 0..3 {
        assert!(matches!(w.run(&cred, T0 + i), Verdict::Allow(_)));
    }
    assert_eq!(w.idp.count("introspection"), 3);
}

#[test]
fn shared_data_never_holds_a_token_and_stays_bounded_under_a_flood() {
    let mut w = world("");
    w.run(&bearer("opaque-good"), T0);
    let keys_before = w.store.len();
    for i in 0..5_000u64 {
        let t = format!("flood-{i}-{}", "x".repeat(40));
        assert_eq!(w.run(&bearer(&t), T0 + i), inactive());
    }
    assert_eq!(w.store.len(), keys_before);
    assert!(w.gate().cached_answers() <= 4096);
    for (key, value) in w.store.entries() {
        let text = String::from_utf8_lossy(value);
        assert!(
            !text.contains("opaque-good") && !text.contains("flood-"),
            "{key}"
        );
    }
}

#[test]
fn introspection_answers() {
    use crate::idp::{parse_introspection, Introspected};
    let active = parse_introspection(Some(200), br#"{"active":true,"sub":"a","exp":5}"#);
    let Introspected::Active(claims) = active else {
        panic!("{active:?}")
    };
    assert_eq!(claims.get("sub"), Some(&json!("a")));
    assert!(!claims.contains_key("active"));
    for body in [
        &br#"{"active":false}"#[..],
        br#"{"sub":"a"}"#,
        br#"{"active":"true"}"#,
    ] {
        assert_eq!(parse_introspection(Some(200), body), Introspected::Inactive);
    }
    assert_eq!(
        parse_introspection(Some(401), b""),
        Introspected::ClientRefused(401)
    );
    for (status, body) in [
        (Some(200), b"<html>".to_vec()),
        (Some(200), br#"{"active":true,"active":true}"#.to_vec()),
        (Some(200), b"[true]".to_vec()),
        (Some(500), b"{}".to_vec()),
        (None, vec![]),
        (
            Some(200),
            format!(r#"{{"active":true,"pad":"{}"}}"#, "x".repeat(20_000)).into_bytes(),
        ),
    ] {
        assert!(
            matches!(
                parse_introspection(status, &body),
                Introspected::Unavailable(_)
            ),
            "{status:?}"
        );
    }
}
