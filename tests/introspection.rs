//! Opaque tokens in a real Envoy: RFC 7662 introspection at the mock IdP, as the gateway's
//! own client; answers cached and shared across workers; unknown and revoked tokens 401;
//! an outage 503 unless an answer is cached; JWTs introspected with `introspect_jwt_tokens`;
//! client credentials whose token endpoint issues opaque tokens.

// A test asserts by panicking; the panic-path lints guard the filter, not its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::idp::{Endpoint, Fault, MintSpec, MockIdp};
use testkit::Stack;

/// The gateway's own client at the mock IdP, and what an Okta org-server setup configures.
fn config(extra: Value) -> Value {
    let mut c = json!({
        "client_id": "gateway",
        "client_secret": "gateway-secret",
        "auth_methods": ["bearer", "introspection"],
        "upstream_headers_claims": ["iss", "sub", "scope"],
        "upstream_headers_names": ["Issuer_Header", "X-Subject", "X-Scope"],
    });
    if let (Some(c), Value::Object(more)) = (c.as_object_mut(), extra) {
        c.extend(more);
    }
    c
}

async fn idp() -> MockIdp {
    let idp = MockIdp::start().await;
    idp.add_client("gateway", "gateway-secret", &[], &[]);
    idp
}

async fn stack(extra: Value, workers: u32) -> Stack {
    Stack::start(idp().await, config(extra), workers).await
}

fn opaque(s: &Stack, sub: &str) -> String {
    s.idp.issue_opaque(
        sub,
        &["read", "write"],
        Duration::from_secs(3600),
        json!({}),
    )
}

#[tokio::test]
async fn an_opaque_token_is_introspected_once_and_its_claims_go_upstream() {
    let s = stack(json!({}), 1).await;
    let token = opaque(&s, "svc-orders");
    assert!(!token.contains('.'), "opaque: {token}");
    for _ in 0..10 {
        let a = s.bearer(&token).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.upstream("Issuer_Header"), Some(s.idp.issuer().as_str()));
        assert_eq!(a.upstream("X-Subject"), Some("svc-orders"));
        assert_eq!(a.upstream("X-Scope"), Some("read write"));
        assert_eq!(
            a.upstream("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
    }
    assert_eq!(s.idp.counts().introspection, 1);
    // An opaque token never needs the key set: the timer's background fetch is the only
    // one, and it may come after these requests (on a loaded machine it did).
    s.envoy
        .stat_reaches("wasmcustom.oidcgate.idp.jwks.ok", 1)
        .await;
    assert_eq!(s.idp.counts().jwks, 1, "the background fetch only");
    assert_eq!(
        s.envoy
            .stat_reaches("wasmcustom.oidcgate.idp.introspection.ok", 1)
            .await,
        1
    );
    // The verdict is cached with the answer: the next nine never look further.
    assert!(
        s.envoy
            .stat_reaches("wasmcustom.oidcgate.cache.verify.hit", 9)
            .await
            >= 9
    );
    assert_eq!(
        s.envoy
            .stat("wasmcustom.oidcgate.cache.introspection.miss")
            .await,
        1
    );
    // Neither the gateway's secret nor the token is in the log.
    let log = s.envoy.log();
    assert!(!log.contains("gateway-secret") && !log.contains(&token));
}

#[tokio::test]
async fn claim_rules_apply_to_an_introspected_token_as_to_a_jwt() {
    let s = stack(json!({"scopes_required": ["admin"]}), 1).await;
    let a = s.bearer(&opaque(&s, "svc")).await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    assert_eq!(a.body["error"], "insufficient_scope");
    let admin = s
        .idp
        .issue_opaque("svc", &["admin"], Duration::from_secs(60), json!({}));
    assert_eq!(s.bearer(&admin).await.status, 200);
    let other_iss = s.idp.issue_opaque(
        "svc",
        &["admin"],
        Duration::from_secs(60),
        json!({"iss": "https://elsewhere.example"}),
    );
    let a = s.bearer(&other_iss).await;
    assert_eq!(a.status, 401);
    assert!(a.www_authenticate().contains("invalid_token"));
}

#[tokio::test]
async fn unknown_and_revoked_tokens_are_401_and_remembered_for_cache_ttl_neg() {
    let s = stack(json!({"cache_ttl_neg": 30, "cache_ttl_max": 1}), 1).await;
    for _ in 0..5 {
        let a = s.bearer("no-such-token-at-this-idp").await;
        assert_eq!(a.status, 401, "{:?}", a.body);
        assert!(a.www_authenticate().contains("error=\"invalid_token\""));
        assert_eq!(a.body["error_description"], "token is not active");
    }
    assert_eq!(s.idp.counts().introspection, 1);
    assert_eq!(
        s.envoy
            .stat_reaches("wasmcustom.oidcgate.denied.invalid_token.inactive", 5)
            .await,
        5
    );
    assert!(s
        .envoy
        .log()
        .contains("denied invalid_token (inactive) status=401"));

    // Revocation shows once the cached answer's trust (cache_ttl_max, 1 s) runs out.
    let token = opaque(&s, "svc");
    assert_eq!(s.bearer(&token).await.status, 200);
    s.idp.revoke(&token);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(s.bearer(&token).await.status, 401);
}

#[tokio::test]
async fn concurrent_requests_with_one_token_make_one_call_across_workers() {
    let s = Arc::new(stack(json!({}), 2).await);
    // Slow answers, so that every request arrives while the first call is in flight.
    s.idp.set_fault(
        Endpoint::Introspection,
        Fault::Delay(Duration::from_millis(300)),
    );
    let token = opaque(&s, "svc");
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let (s, token) = (s.clone(), token.clone());
        tasks.push(tokio::spawn(async move { s.bearer(&token).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(s.idp.counts().introspection, 1);
}

/// Distinct tokens, each sent many times by concurrent callers over 2 workers: one call per
/// token. `OIDCGATE_INTROSPECTION_REQUESTS` sets the requests per token (default 20; the
/// figure in the README's notes is 1,000).
#[tokio::test]
async fn many_tokens_under_load_cost_one_call_each() {
    let per_token: usize = std::env::var("OIDCGATE_INTROSPECTION_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let s = Arc::new(stack(json!({}), 2).await);
    let tokens: Vec<String> = (0..100).map(|i| opaque(&s, &format!("svc-{i}"))).collect();
    let tokens = Arc::new(tokens);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..16usize {
        let (s, tokens) = (s.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for n in 0..per_token * tokens.len() / 16 {
                let token = &tokens[(n * 16 + caller) % tokens.len()];
                if s.bearer(token).await.status == 200 {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    let requests = per_token * 100 / 16 * 16;
    assert_eq!(ok, requests);
    let calls = s.idp.counts().introspection;
    println!(
        "{requests} requests over 100 opaque tokens, 2 workers: {calls} introspection calls \
         ({:.2} per token) in {:.1} s",
        calls as f64 / 100.0,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(calls, 100);
}

#[tokio::test]
async fn an_outage_is_503_for_a_new_token_while_cached_answers_keep_serving() {
    let s = stack(json!({"timeout": 1000}), 1).await;
    let cached = opaque(&s, "svc");
    assert_eq!(s.bearer(&cached).await.status, 200);
    let fresh = opaque(&s, "svc-2");
    for fault in [Fault::Status(503), Fault::Garbage, Fault::Reset] {
        s.idp.set_fault(Endpoint::Introspection, fault.clone());
        let a = s.bearer(&fresh).await;
        assert_eq!(a.status, 503, "{fault:?}: {:?}", a.body);
        assert!(a.headers.get("retry-after").is_some(), "{fault:?}");
        assert_eq!(s.bearer(&cached).await.status, 200, "{fault:?}");
    }
    s.idp.down().await;
    assert_eq!(s.bearer(&cached).await.status, 200);
    s.idp.up().await;
    s.idp.clear_faults();
    // Back: the new token gets through once the backoff lets the next call out.
    let mut status = 0;
    for _ in 0..40 {
        status = s.bearer(&fresh).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200);
    assert!(
        s.envoy
            .stat("wasmcustom.oidcgate.idp.introspection.failed")
            .await
            >= 1
    );
    assert!(s.envoy.log().contains("introspection fetch from http://"));
}

#[tokio::test]
async fn a_wrong_gateway_secret_is_503_and_says_which_keys_to_check() {
    let s = stack(json!({"client_secret": "not-the-secret"}), 1).await;
    let a = s.bearer(&opaque(&s, "svc")).await;
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert!(
        s.envoy
            .log()
            .contains("refused the gateway's own client (401)"),
        "{}",
        s.envoy.log_tail(20)
    );
    assert!(!s.envoy.log().contains("not-the-secret"));
}

#[tokio::test]
async fn a_jwt_is_introspected_too_with_introspect_jwt_tokens() {
    let s = stack(json!({"introspect_jwt_tokens": true}), 1).await;
    let good = s.idp.mint(MintSpec::default());
    for _ in 0..3 {
        assert_eq!(s.bearer(&good).await.status, 200);
    }
    assert_eq!(s.idp.counts().introspection, 1);
    let revoked = s.idp.mint(MintSpec {
        claims: json!({"jti": "AT.revoked"}),
        ..MintSpec::default()
    });
    s.idp.revoke(&revoked);
    let a = s.bearer(&revoked).await;
    assert_eq!(a.status, 401, "{:?}", a.body);
    assert_eq!(a.body["error_description"], "token is not active");
    // Without it, the JWT is verified locally only.
    let plain = stack(json!({}), 1).await;
    assert_eq!(
        plain
            .bearer(&plain.idp.mint(MintSpec::default()))
            .await
            .status,
        200
    );
    assert_eq!(plain.idp.counts().introspection, 0);
}

#[tokio::test]
async fn client_credentials_with_an_opaque_token_are_introspected_once() {
    let idp = MockIdp::start().await;
    idp.issue_opaque_to("demo-client");
    // No gateway client: the caller's own client asks about its own token.
    let s = Stack::start(
        idp,
        json!({
            "upstream_headers_claims": ["sub", "client_id"],
            "upstream_headers_names": ["X-Subject", "X-Client"],
        }),
        1,
    )
    .await;
    for _ in 0..5 {
        let a = s.basic("demo-client", "demo-secret").await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.upstream("X-Client"), Some("demo-client"));
        let forwarded = a.upstream("authorization").unwrap();
        assert!(!forwarded.contains('.'), "an opaque token: {forwarded}");
    }
    let c = s.idp.counts();
    assert_eq!((c.token, c.introspection), (1, 1));
}

#[tokio::test]
async fn an_opaque_token_without_introspection_is_malformed_and_the_idp_is_not_asked() {
    let s = stack(json!({"auth_methods": ["bearer"]}), 1).await;
    let a = s.bearer(&opaque(&s, "svc")).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body["error_description"], "token is malformed");
    assert_eq!(s.idp.counts().introspection, 0);
}

#[tokio::test]
async fn a_configured_endpoint_post_authentication_and_no_caching_are_honoured() {
    let idp = idp().await;
    // Discovery names `127.0.0.1:<port>`; the configured URL names the host otherwise, so
    // the `Host` the IdP sees tells which one was used.
    let endpoint = idp
        .introspection_endpoint()
        .replace("127.0.0.1", "localhost");
    let s = Stack::start(
        idp,
        config(json!({
            "introspection_endpoint": endpoint,
            "introspection_endpoint_auth_method": "client_secret_post",
            "cache_introspection": false,
        })),
        1,
    )
    .await;
    let token = opaque(&s, "svc");
    for _ in 0..3 {
        assert_eq!(s.bearer(&token).await.status, 200);
        // An answer fetched in the millisecond a request arrives may serve it: space them.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Without caching, every request asks.
    assert_eq!(s.idp.counts().introspection, 3);
    let (method, id, host) = s.idp.last_introspection_auth().unwrap();
    assert_eq!((method, id.as_str()), ("client_secret_post", "gateway"));
    assert_eq!(host, format!("localhost:{}", s.idp.port()));
}
